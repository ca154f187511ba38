import json
import re
from pathlib import Path

import pytest
from aws_cdk import Stack
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.security import SNOWFLAKE_FIELDS, SNOWFLAKE_PASSWORD_FIELD

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SNOWFLAKE = (*SNOWFLAKE_FIELDS, SNOWFLAKE_PASSWORD_FIELD)


@pytest.fixture(scope="module")
def template(synthesised):
    return synthesised.template("firepipe-dev-orchestration")


@pytest.fixture(scope="module")
def prod_template(synthesised):
    return synthesised.template("firepipe-prod-orchestration")


@pytest.fixture(scope="module")
def orchestration(synthesised):
    return synthesised.stacks["dev"].orchestration.orchestration


@pytest.fixture(scope="module")
def added(synthesised):
    """The variables the orchestration stack hands on from the concerns before it."""
    s = synthesised.stacks["dev"]
    return {
        **s.lake.lake.environment,
        **s.compute.compute.environment,
        **s.ml.ml.environment,
        **s.agents.agents.environment,
        **s.knowledge_base.knowledge_base.environment,
        # The Snowflake table of field readings and how to sign in: the configuration's.
        "FIREPIPE_FIELD_TABLE": ENVIRONMENTS["dev"].field_table,
        "FIREPIPE_SNOWFLAKE_AUTH": ENVIRONMENTS["dev"].snowflake_auth,
    }


def _one(template, kind, props=None):
    [(key, resource)] = template.find_resources(kind, props or {}).items()
    return key, resource["Properties"]


def _logical_id(template, kind, prefix):
    [key] = [k for k in template.find_resources(kind) if k.startswith(prefix)]
    return key


def _import(value, pattern):
    return re.fullmatch(pattern, value["Fn::ImportValue"]) is not None


def _text(value):
    """A template value as text, each CloudFormation reference as "<ref>" (enough to parse the
    JSON the container context is, whose references sit inside its strings)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(_text(p) for p in parts)
    return "<ref>"


def _containers(template):
    """{container name: container definition} of the three task definitions."""
    return {
        c["Name"]: c
        for r in template.find_resources("AWS::ECS::TaskDefinition").values()
        for c in r["Properties"]["ContainerDefinitions"]
    }


def _environment(container):
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def _secrets(container):
    return {s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])}


def _dagster_yaml_variables():
    """The variables docker/dagster.yaml reads (`env: NAME`) or hands to runs by name
    (`env_vars:` items), read line by line: infra's environment has no PyYAML."""
    names, in_env_vars = set(), False
    for line in (DOCKER / "dagster.yaml").read_text().splitlines():
        if match := re.fullmatch(r"\s*(?:- )?env: ([A-Z0-9_]+)\s*", line):
            names.add(match.group(1))
        if re.fullmatch(r"\s*env_vars:\s*", line):
            in_env_vars = True
        elif in_env_vars and (item := re.fullmatch(r"\s*- ([A-Z0-9_]+)\s*", line)):
            names.add(item.group(1))
        elif in_env_vars:
            in_env_vars = False
    return names


def _statements(template, role_prefix):
    """Every statement of the role's policies: the other concerns' grants fill the run role's
    default policy, and CDK moves what does not fit into managed overflow policies."""
    role = _logical_id(template, "AWS::IAM::Role", role_prefix)
    return [
        statement
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for policy in template.find_resources(kind).values()
        if {"Ref": role} in policy["Properties"].get("Roles", [])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _resources(statement):
    resources = statement["Resource"]
    return resources if isinstance(resources, list) else [resources]


def _actions(statement):
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_database_is_postgres_17_encrypted_private_and_sized_per_environment(
    template, prod_template
):
    _, dev = _one(template, "AWS::RDS::DBInstance")
    _, prod = _one(prod_template, "AWS::RDS::DBInstance")
    assert (dev["Engine"], dev["EngineVersion"]) == ("postgres", "17")
    assert dev["DBInstanceIdentifier"] == "firepipe-dev-dagster"
    assert dev["StorageEncrypted"] is True
    assert _import(dev["KmsKeyId"], r"firepipe-dev-security:.*DataKey.*Arn.*")
    assert _import(dev["PerformanceInsightsKMSKeyId"], r"firepipe-dev-security:.*DataKey.*Arn.*")
    assert dev["EnableIAMDatabaseAuthentication"] is True
    assert dev["PubliclyAccessible"] is False
    assert dev["EnableCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    assert dev["Port"] == "5432"
    assert (dev["DBInstanceClass"], dev["MultiAZ"], dev["BackupRetentionPeriod"]) == (
        "db.t4g.micro",
        False,
        1,
    )
    assert (prod["DBInstanceClass"], prod["MultiAZ"], prod["BackupRetentionPeriod"]) == (
        "db.m7g.large",
        True,
        35,
    )
    assert (dev["DeletionProtection"], prod["DeletionProtection"]) == (False, True)
    [dev_db] = template.find_resources("AWS::RDS::DBInstance").values()
    [prod_db] = prod_template.find_resources("AWS::RDS::DBInstance").values()
    assert (dev_db["DeletionPolicy"], prod_db["DeletionPolicy"]) == ("Delete", "Retain")
    _, subnets = _one(template, "AWS::RDS::DBSubnetGroup")
    assert all(_import(s, r".*privateSubnet.*") for s in subnets["SubnetIds"])


def test_database_credentials_are_generated_in_a_secret_under_the_data_key(template):
    _, secret = _one(template, "AWS::SecretsManager::Secret")
    assert secret["Name"] == "firepipe-dev/dagster-database"
    assert _import(secret["KmsKeyId"], r"firepipe-dev-security:.*DataKey.*Arn.*")
    generated = secret["GenerateSecretString"]
    assert (generated["GenerateStringKey"], json.loads(generated["SecretStringTemplate"])) == (
        "password",
        {"username": "dagster"},
    )


def test_database_admits_postgres_from_the_dagster_task_groups_only(template):
    group = _logical_id(template, "AWS::EC2::SecurityGroup", "OrchestrationDatabaseSecurityGroup")
    rules = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group, "GroupId"]}
    ]
    sources = {r["SourceSecurityGroupId"]["Fn::GetAtt"][0] for r in rules}
    assert sources == {
        _logical_id(template, "AWS::EC2::SecurityGroup", "OrchestrationTasksSecurityGroup"),
        _logical_id(template, "AWS::EC2::SecurityGroup", "OrchestrationWebserverSecurityGroup"),
    }
    assert {(r["FromPort"], r["ToPort"]) for r in rules} == {(5432, 5432)}
    assert all("CidrIp" not in r for r in rules)


def test_three_services_run_the_images_commands_on_private_fargate(template):
    commands = {name: c.get("Command") for name, c in _containers(template).items()}
    assert commands == {
        "webserver": ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"],
        "daemon": ["dagster-daemon", "run", "-w", "workspace.yaml"],
        "code": None,  # the image's CMD: dagster code-server start ... -p 4000
    }
    header = (DOCKER / "dagster.Dockerfile").read_text()
    for name in ("webserver", "daemon"):  # as docker/dagster.Dockerfile's header says
        assert re.search(rf"#\s+{name}:\s+{re.escape(' '.join(commands[name]))}$", header, re.M)
    services = {
        s["Properties"]["ServiceName"]: s["Properties"]
        for s in template.find_resources("AWS::ECS::Service").values()
    }
    assert set(services) == {f"firepipe-dev-dagster-{n}" for n in ("webserver", "daemon", "code")}
    for service in services.values():
        assert service["EnableExecuteCommand"] is False
        assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
            "Enable": True,
            "Rollback": True,
        }
        assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == (
            "DISABLED"
        )
        assert _import(service["Cluster"], r"firepipe-dev-network:.*Cluster.*")
    # Two daemons would launch each queued run twice: the old one stops before the new starts.
    daemon = services["firepipe-dev-dagster-daemon"]["DeploymentConfiguration"]
    assert (daemon["MinimumHealthyPercent"], daemon["MaximumPercent"]) == (0, 100)
    health = {n: c.get("HealthCheck", {}).get("Command") for n, c in _containers(template).items()}
    assert health["code"] == ["CMD", "dagster", "api", "grpc-health-check", "-p", "4000"]
    assert health["daemon"] == ["CMD", "dagster-daemon", "liveness-check"]


def test_every_variable_docker_dagster_yaml_reads_is_set_on_each_task(template):
    variables = _dagster_yaml_variables()
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_COMPUTE_LOGS_BUCKET"} <= variables
    database_secret = _logical_id(template, "AWS::SecretsManager::SecretTargetAttachment", "")
    password = {"Fn::Join": ["", [{"Ref": database_secret}, ":password::"]]}
    for name, container in _containers(template).items():
        environment, secrets = _environment(container), _secrets(container)
        assert variables <= set(environment) | set(secrets), name
        assert secrets["DAGSTER_PG_PASSWORD"] == password, name
        assert environment["DAGSTER_PG_PASSWORD_SECRET_ARN"] == password, name
        assert environment["DAGSTER_PG_PORT"] == {
            "Fn::GetAtt": [_logical_id(template, "AWS::RDS::DBInstance", ""), "Endpoint.Port"]
        }
        assert environment["DAGSTER_RUN_TASK_ROLE_ARN"] == {
            "Fn::GetAtt": [_logical_id(template, "AWS::IAM::Role", "OrchestrationRunRole"), "Arn"]
        }
        assert (environment["FIREPIPE_ENV"], environment["AWS_REGION"]) == ("aws", "eu-west-1")
        # The name the certificate covers, not the load balancer's own DNS name.
        assert environment["FIREPIPE_DAGSTER_UI_URL"] == "https://dagster.dev.firepipe.example.com"


def test_the_code_location_is_found_where_the_workspace_file_looks(template):
    workspace = (DOCKER / "workspace.yaml").read_text()
    host_variable = re.search(r"host:\s*\n\s*env: (\w+)", workspace).group(1)
    port = int(re.search(r"port: (\d+)", workspace).group(1))
    containers = _containers(template)
    for name in ("webserver", "daemon"):
        assert _environment(containers[name])[host_variable] == "code.firepipe-dev.local"
    _, namespace = _one(template, "AWS::ServiceDiscovery::PrivateDnsNamespace")
    _, discovery = _one(template, "AWS::ServiceDiscovery::Service")
    assert (discovery["Name"], namespace["Name"]) == ("code", "firepipe-dev.local")
    assert discovery["DnsConfig"]["DnsRecords"] == [{"TTL": 10, "Type": "A"}]
    assert containers["code"]["PortMappings"][0]["ContainerPort"] == port
    code_group = _logical_id(template, "AWS::EC2::SecurityGroup", "OrchestrationCodeSecurityGroup")
    ingress = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [code_group, "GroupId"]}
    ]
    assert {(r["FromPort"], r["SourceSecurityGroupId"]["Fn::GetAtt"][0]) for r in ingress} == {
        (port, _logical_id(template, "AWS::EC2::SecurityGroup", f"Orchestration{g}SecurityGroup"))
        for g in ("Tasks", "Webserver")
    }


def test_runs_get_the_other_concerns_variables_and_secrets_through_the_container_context(
    template, orchestration, added
):
    stack = Stack.of(orchestration)
    code = _containers(template)["code"]
    environment = _environment(code)
    context = json.loads(_text(environment["DAGSTER_CONTAINER_CONTEXT"]))
    assert set(context) == {"ecs"}
    firepipe = {
        "AWS_REGION": "eu-west-1",
        "FIREPIPE_ENV": "aws",
        "FIREPIPE_DAGSTER_UI_URL": orchestration.ui_url,
        **added,
    }
    assert {"FIREPIPE_LANDING_BUCKET", "FIREPIPE_BATCH_JOB_DEFINITION", "FIREPIPE_KB_ID"} <= set(
        added
    )
    assert set(context["ecs"]["env_vars"]) == {
        f"{name}={_text(stack.resolve(value))}" for name, value in firepipe.items()
    }
    assert {s["name"]: s["valueFrom"] for s in context["ecs"]["secrets"]} == {
        field: f"<ref>:{field}::" for field in SNOWFLAKE
    }
    # The code location's own sensors see them too; the other tasks do not need them.
    for name, value in added.items():
        assert _text(environment[name]) == _text(stack.resolve(value)), name
    for field in SNOWFLAKE:
        secret, suffix = _secrets(code)[field]["Fn::Join"][1]
        assert _import(secret, r"firepipe-dev-security:.*SnowflakeSecret.*"), field
        assert suffix == f":{field}::"
    for name in ("daemon", "webserver"):
        assert not set(added) & set(_environment(_containers(template)[name])), name
        assert set(_secrets(_containers(template)[name])) == {"DAGSTER_PG_PASSWORD"}, name
    assert _text(environment["DAGSTER_CURRENT_IMAGE"]).endswith(":unpublished")


def test_the_run_execution_role_reads_the_secrets_ecs_injects_into_runs(template):
    [read] = [
        s
        for s in _statements(template, "OrchestrationRunExecutionRole")
        if "secretsmanager:GetSecretValue" in _actions(s)
    ]
    database = _logical_id(template, "AWS::SecretsManager::SecretTargetAttachment", "")
    resources = _resources(read)
    assert {"Ref": database} in resources
    assert len(resources) == 2
    [snowflake] = [r for r in resources if r != {"Ref": database}]
    assert _import(snowflake, r"firepipe-dev-security:.*SnowflakeSecret.*")


def test_added_names_may_not_shadow_dagster_or_firepipe_variables(orchestration, synthesised):
    secret = synthesised.stacks["dev"].security.security.snowflake_secret
    for name in ("DAGSTER_PG_HOST", "FIREPIPE_ENV", "FIREPIPE_LANDING_BUCKET", SNOWFLAKE[0]):
        with pytest.raises(ValueError, match=name):
            orchestration.add_environment({name: "x"})
        with pytest.raises(ValueError, match=name):
            orchestration.add_secret(name, secret, SNOWFLAKE[0])


def test_the_launcher_holds_exactly_its_calls_and_passes_the_run_roles_only(template):
    daemon = _statements(template, "OrchestrationDaemonRole")
    ecs_actions = {a for s in daemon for a in _actions(s) if a.split(":")[0] in ("ecs", "ec2")}
    assert ecs_actions == {
        "ecs:RunTask",
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "ecs:TagResource",
        "ecs:RegisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ec2:DescribeNetworkInterfaces",
    }
    [run_task] = [s for s in daemon if "ecs:RunTask" in _actions(s)]
    assert (
        run_task["Resource"] == "arn:aws:ecs:eu-west-1:111111111111:task-definition/firepipe-run_*"
    )
    assert _import(run_task["Condition"]["ArnEquals"]["ecs:cluster"], r".*network:.*Cluster.*")
    [stop] = [s for s in daemon if "ecs:StopTask" in _actions(s)]
    assert "ecs:cluster" in stop["Condition"]["ArnEquals"]
    pass_role = [s for s in daemon if "iam:PassRole" in _actions(s)]
    assert [s["Resource"] for s in pass_role] == [
        [
            {"Fn::GetAtt": [_logical_id(template, "AWS::IAM::Role", prefix), "Arn"]}
            for prefix in ("OrchestrationRunExecutionRole", "OrchestrationRunRole")
        ]
    ]
    assert pass_role[0]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    # No other role may pass a role of Dagster's; the runs pass only the roles other concerns
    # grant them (their job and model roles, imported), and the webserver only stops
    # (cancels) and reads runs.
    for prefix in ("OrchestrationWebserverRole", "OrchestrationRunExecution"):
        assert not any("iam:PassRole" in _actions(s) for s in _statements(template, prefix))
    run_passes = [
        r
        for s in _statements(template, "OrchestrationRunRole")
        if "iam:PassRole" in _actions(s)
        for r in _resources(s)
    ]
    assert run_passes
    assert all(set(r) == {"Fn::ImportValue"} for r in run_passes), run_passes
    webserver = {
        a for s in _statements(template, "OrchestrationWebserverRole") for a in _actions(s)
    }
    assert webserver == {
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "s3:GetObject",
        "s3:ListBucket",
        "kms:Decrypt",
    }


def test_step_logs_live_in_an_encrypted_expiring_bucket_the_runs_write(template):
    key, bucket = _one(template, "AWS::S3::Bucket")
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert _import(
        encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"], r".*security:.*DataKey.*"
    )
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 14
    assert bucket["LoggingConfiguration"]["LogFilePrefix"] == "dagster-compute-logs/"
    assert _import(
        bucket["LoggingConfiguration"]["DestinationBucketName"], r".*lake:.*AccessLogs.*"
    )
    objects = {"Fn::Join": ["", [{"Fn::GetAtt": [key, "Arn"]}, "/compute-logs/*"]]}
    for role in ("OrchestrationRunRole", "OrchestrationDaemonRole"):
        # Other concerns grant the run role writes elsewhere: the one into this bucket.
        [write] = [
            s
            for s in _statements(template, role)
            if "s3:PutObject" in _actions(s) and any(key in json.dumps(r) for r in _resources(s))
        ]
        assert [r for r in _resources(write) if key in json.dumps(r)] == [objects]
    assert not any(
        "s3:PutObject" in _actions(s) for s in _statements(template, "OrchestrationWebserverRole")
    )
    code = _environment(_containers(template)["code"])
    assert code["DAGSTER_COMPUTE_LOGS_BUCKET"] == {"Ref": key}
    assert code["DAGSTER_COMPUTE_LOGS_PREFIX"] == "compute-logs"


def test_the_ui_is_internal_https_from_the_allowed_networks_only(orchestration, template):
    _, balancer = _one(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert balancer["Scheme"] == "internal"
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    assert attributes["deletion_protection.enabled"] == "false"
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.prefix"] == "dagster-ui"
    assert _import(attributes["access_logs.s3.bucket"], r"firepipe-dev-lake:.*AccessLogs.*")
    _, listener = _one(template, "AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Protocol"], listener["Port"]) == ("HTTPS", 443)
    assert listener["Certificates"] == [{"CertificateArn": ENVIRONMENTS["dev"].ui_certificate_arn}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-2")
    group = _logical_id(template, "AWS::EC2::SecurityGroup", "OrchestrationLoadBalancerSecurity")
    ingress = template.find_resources("AWS::EC2::SecurityGroup")[group]["Properties"]
    assert [(r["CidrIp"], r["FromPort"]) for r in ingress["SecurityGroupIngress"]] == [
        (cidr, 443) for cidr in ENVIRONMENTS["dev"].ui_allowed_cidrs
    ]
    _, target = _one(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert (target["HealthCheckPath"], target["Port"], target["TargetType"]) == (
        "/server_info",
        3000,
        "ip",
    )
    assert orchestration.environment == {
        "FIREPIPE_DAGSTER_UI_URL": f"https://{ENVIRONMENTS['dev'].ui_domain_name}"
    }


def test_prod_protects_its_load_balancer_from_deletion(prod_template):
    _, balancer = _one(prod_template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    assert attributes["deletion_protection.enabled"] == "true"


def test_log_groups_one_per_process_and_runs_encrypted_with_the_logs_key(orchestration, template):
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert {g["Properties"]["LogGroupName"] for g in groups.values()} == {
        "firepipe-dev/dagster/webserver",
        "firepipe-dev/dagster/daemon",
        "firepipe-dev/dagster/code",
        "firepipe-dev/dagster/runs",
        "/aws/rds/instance/firepipe-dev-dagster/postgresql",
        "/aws/rds/instance/firepipe-dev-dagster/upgrade",
    }
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == 14
        assert _import(group["Properties"]["KmsKeyId"], r"firepipe-dev-security:.*LogsKey.*Arn.*")
    assert set(orchestration.log_groups) == {"webserver", "daemon", "code", "runs", "database"}
    runs = _environment(_containers(template)["daemon"])["DAGSTER_RUN_LOG_GROUP"]
    assert runs == {"Ref": _logical_id(template, "AWS::Logs::LogGroup", "OrchestrationRunsLogs")}


def test_the_stack_passes_cdk_nag(synthesised):
    report = json.loads((synthesised.outdir / "validation-report.json").read_text())
    assert not [
        c["constructPath"]
        for p in report["pluginReports"]
        for v in p["violations"]
        for c in v["violatingConstructs"]
        if "-orchestration/" in c["constructPath"]
    ]


def _acknowledged(synthesised, env):
    """The rules acknowledged in the stack, from its metadata file ({path: [entries]})."""
    path = synthesised.outdir / f"firepipe-{env}-orchestration.metadata.json"
    return {
        rule.removeprefix("Annotation::").split("[")[0]
        for entries in json.loads(path.read_text()).values()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule in entry["data"]
    }


def test_the_acknowledged_findings_are_those_of_dagster_on_ecs_and_rds(synthesised):
    """test_app.py checks that each acknowledgement is needed; these are the kinds expected."""
    assert _acknowledged(synthesised, "dev") == {
        "AwsSolutions-ECS2",  # the three task definitions' plain variables
        "AwsSolutions-IAM5",  # the launcher, the step logs' prefix, the ECR token, the grants
        "AwsSolutions-SMG4",  # the database password: injected at task start
        "AwsSolutions-RDS11",  # the default port
        "AwsSolutions-RDS3",  # dev only: single-AZ
        "AwsSolutions-RDS10",  # dev only: no deletion protection
    }
    assert _acknowledged(synthesised, "prod") == {
        "AwsSolutions-ECS2",
        "AwsSolutions-IAM5",
        "AwsSolutions-SMG4",
        "AwsSolutions-RDS11",
    }


def test_the_field_extractions_configuration_is_an_output_as_on_the_tasks(template):
    """A shell outside AWS reads FIREPIPE_FIELD_TABLE and FIREPIPE_SNOWFLAKE_AUTH from the
    stack, as it reads every other variable (docs/aws.md)."""
    outputs = template.find_outputs("*")
    dev = ENVIRONMENTS["dev"]
    assert outputs["FIREPIPEFIELDTABLE"]["Value"] == dev.field_table
    assert outputs["FIREPIPESNOWFLAKEAUTH"]["Value"] == dev.snowflake_auth
    assert outputs["FIREPIPESNOWFLAKEAUTH"]["Description"].startswith("FIREPIPE_SNOWFLAKE_AUTH:")
