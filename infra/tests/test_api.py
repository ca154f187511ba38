import json
import re

import pytest
from cfn_refs import resolve_imports
from firepipe_infra.api import INITIAL_KEY_FIELD, STAGE, WAF_WINDOW_S
from firepipe_infra.api_backends import SERVICES
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.env_names import AWS_ENV_MODULE

FIREPIPE = AWS_ENV_MODULE.parents[1]
ENVS = ("dev", "prod")


@pytest.fixture(scope="module")
def templates(synthesised):
    """dev's and prod's API stacks and the stacks they take references from."""
    return {
        name: synthesised.template(name)
        for env in ENVS
        for name in (f"firepipe-{env}-api", f"firepipe-{env}-security")
    } | {"firepipe-dev-orchestration": synthesised.template("firepipe-dev-orchestration")}


@pytest.fixture(scope="module")
def template(templates):
    return templates["firepipe-dev-api"]


def _one(template, kind, props=None):
    [(logical_id, resource)] = template.find_resources(kind, props or {}).items()
    return logical_id, resource["Properties"]


def _ids(template, kind):
    return list(template.find_resources(kind))


def _actions(statement):
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def _containers(template):
    return {
        c["Name"]: c
        for t in template.find_resources("AWS::ECS::TaskDefinition").values()
        for c in t["Properties"]["ContainerDefinitions"]
    }


def _pairs(container, key):
    return {e["Name"]: e.get("Value", e.get("ValueFrom")) for e in container.get(key, [])}


def _role_statements(template, role_prefix):
    return [
        statement
        for key, policy in template.find_resources("AWS::IAM::Policy").items()
        if key.startswith(role_prefix)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


@pytest.mark.parametrize("env", ENVS)
def test_usage_plan_throttles_and_caps_each_key_per_environment(templates, env):
    config = ENVIRONMENTS[env]
    template = templates[f"firepipe-{env}-api"]
    _, plan = _one(template, "AWS::ApiGateway::UsagePlan")
    assert plan["UsagePlanName"] == config.prefix
    assert plan["Throttle"] == {
        "RateLimit": config.api_rate_limit,
        "BurstLimit": config.api_burst_limit,
    }
    assert plan["Quota"] == {"Limit": config.api_daily_quota, "Period": "DAY"}
    [stage] = plan["ApiStages"]
    assert stage["ApiId"] == {"Ref": _ids(template, "AWS::ApiGateway::RestApi")[0]}
    assert stage["Stage"] == {"Ref": _ids(template, "AWS::ApiGateway::Stage")[0]}


def test_the_api_key_is_the_secrets_initial_key_and_belongs_to_the_plan(templates, template):
    key_id, key = _one(template, "AWS::ApiGateway::ApiKey")
    start, secret, end = key["Value"]["Fn::Join"][1]
    assert (start, end) == (
        "{{resolve:secretsmanager:",
        f":SecretString:{INITIAL_KEY_FIELD}::" + "}}",
    )
    assert re.fullmatch(
        r"firepipe-dev-security:ExportsOutputRefSecurityApiKeysSecret.*", secret["Fn::ImportValue"]
    )
    # The field the security stack generates the first key under.
    _, secret = _one(
        templates["firepipe-dev-security"],
        "AWS::SecretsManager::Secret",
        {"Properties": {"Name": "firepipe-dev/api-keys"}},
    )
    assert secret["GenerateSecretString"]["GenerateStringKey"] == INITIAL_KEY_FIELD
    _, plan_key = _one(template, "AWS::ApiGateway::UsagePlanKey")
    assert plan_key["KeyId"] == {"Ref": key_id}
    assert plan_key["UsagePlanId"] == {"Ref": _ids(template, "AWS::ApiGateway::UsagePlan")[0]}


def test_every_method_needs_an_api_key_and_proxies_to_its_service_through_the_vpc_link(template):
    resources = template.find_resources("AWS::ApiGateway::Resource")
    path_of = {k: r["Properties"]["PathPart"] for k, r in resources.items()}
    parent_of = {k: r["Properties"]["ParentId"].get("Ref") for k, r in resources.items()}
    [(link_id, link)] = template.find_resources("AWS::ApiGateway::VpcLink").items()
    [lb_id] = _ids(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert link["Properties"]["TargetArns"] == [{"Ref": lb_id}]
    [validator] = _ids(template, "AWS::ApiGateway::RequestValidator")
    routes = {}
    for method in template.find_resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        assert props["ApiKeyRequired"] is True
        assert props["HttpMethod"] == "ANY"
        assert props["RequestValidatorId"] == {"Ref": validator}
        assert props["RequestParameters"] == {"method.request.path.proxy": True}
        integration = props["Integration"]
        assert (integration["Type"], integration["ConnectionType"]) == ("HTTP_PROXY", "VPC_LINK")
        assert integration["ConnectionId"] == {"Ref": link_id}
        scheme, dns, rest = integration["Uri"]["Fn::Join"][1]
        assert (scheme, dns) == ("http://", {"Fn::GetAtt": [lb_id, "DNSName"]})
        resource = props["ResourceId"]["Ref"]
        routes[f"/{path_of[parent_of[resource]]}/{path_of[resource]}"] = rest
    assert routes == {
        "/inference/{proxy+}": ":8080/{proxy}",
        "/actions/{proxy+}": ":8090/{proxy}",
    }


def test_the_load_balancer_is_internal_with_a_listener_and_health_check_per_service(template):
    _, lb = _one(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert (lb["Type"], lb["Scheme"], lb["Name"]) == ("network", "internal", "firepipe-dev-api")
    listeners = template.find_resources("AWS::ElasticLoadBalancingV2::Listener").values()
    assert sorted((ls["Properties"]["Port"], ls["Properties"]["Protocol"]) for ls in listeners) == [
        (8080, "TCP"),
        (8090, "TCP"),
    ]
    groups = template.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert {
        g["Properties"]["Port"]: (g["Properties"]["TargetType"], g["Properties"]["HealthCheckPath"])
        for g in groups
    } == {8080: ("ip", "/openapi.json"), 8090: ("ip", "/openapi.json")}
    # The listeners take the VPC's clients; API Gateway's PrivateLink traffic is not filtered.
    _, group = _one(
        template,
        "AWS::EC2::SecurityGroup",
        {
            "Properties": {
                "GroupDescription": "The APIs load balancer: the service ports from the VPC"
            }
        },
    )
    assert sorted((r["CidrIp"], r["FromPort"]) for r in group["SecurityGroupIngress"]) == [
        ("10.10.0.0/16", 8080),
        ("10.10.0.0/16", 8090),
    ]
    assert lb["EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic"] == "off"


def test_services_run_their_commands_from_their_images_with_the_keys_secret(template):
    tasks = {
        t["Properties"]["Family"]: t["Properties"]["ContainerDefinitions"]
        for t in template.find_resources("AWS::ECS::TaskDefinition").values()
    }
    assert set(tasks) == {"firepipe-dev-inference", "firepipe-dev-actions"}
    # Both run the platform image (the aws extra); the slim inference image is SageMaker's.
    images = {"inference": "RegistryDagster", "actions": "RegistryDagster"}
    for spec in SERVICES:
        [container] = tasks[f"firepipe-dev-{spec.name}"]
        assert container["Command"] == list(spec.command)
        port = container["Command"].index("--port")
        assert container["Command"][port - 2 : port + 2] == [
            "--host",
            "0.0.0.0",
            "--port",
            str(spec.port),
        ]
        assert container["PortMappings"] == [{"ContainerPort": spec.port, "Protocol": "tcp"}]
        image = json.dumps(container["Image"])
        assert images[spec.name] in image
        assert image.endswith(':unpublished"]]}')
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["FIREPIPE_ENV"] == "aws"
        assert env["AWS_REGION"] == "eu-west-1"
        assert "ApiKeysSecret" in env["FIREPIPE_API_KEYS_SECRET"]["Fn::ImportValue"]
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_the_commands_are_firepipes_own():
    """Every option the services are started with is one their command declares (the CLI is
    read as text: this app has no firepipe to import)."""
    sources = {
        "inference": (FIREPIPE / "cli" / "serve.py").read_text(),
        "actions": (FIREPIPE / "cli" / "actions.py").read_text(),
    }
    for spec in SERVICES:
        source = sources[spec.name]
        for word in spec.command:
            if word in ("--host", "--port"):
                assert "@listen_options(" in source  # firepipe.cli.serve.listen_options
            elif word.startswith("--"):
                assert f'"{word}"' in source, (spec.name, word)


def test_the_inference_service_runs_one_task_and_the_action_api_two(template):
    services = {
        s["Properties"]["ServiceName"]: s["Properties"]
        for s in template.find_resources("AWS::ECS::Service").values()
    }
    assert {name: s["DesiredCount"] for name, s in services.items()} == {
        "firepipe-dev-inference": 1,
        "firepipe-dev-actions": 2,
    }
    for service in services.values():
        assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
            "Enable": True,
            "Rollback": True,
        }
        assert (
            service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        )


def test_each_service_admits_the_load_balancer_on_its_port_only(template):
    [lb_group] = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {
            "Properties": {
                "GroupDescription": "The APIs load balancer: the service ports from the VPC"
            }
        },
    )
    rules = template.find_resources("AWS::EC2::SecurityGroupIngress").values()
    assert sorted(
        (r["Properties"]["FromPort"], r["Properties"]["ToPort"])
        for r in rules
        if r["Properties"]["SourceSecurityGroupId"] == {"Fn::GetAtt": [lb_group, "GroupId"]}
    ) == [(8080, 8080), (8090, 8090)]


def test_task_roles_read_the_api_keys_secret_only_through_secrets_manager(template):
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for k, p in template.find_resources("AWS::IAM::Policy").items()
        if "TaskRole" in k
    ]
    assert len(policies) == 2
    for statements in policies:
        # Other concerns grant the same roles more (the lake, the models): these are the keys'.
        [read] = [s for s in statements if "secretsmanager:GetSecretValue" in _actions(s)]
        assert sorted(read["Action"]) == [
            "secretsmanager:DescribeSecret",
            "secretsmanager:GetSecretValue",
        ]
        assert "ApiKeysSecret" in read["Resource"]["Fn::ImportValue"]
        keys = [s for s in statements if any(a.startswith("kms:") for a in _actions(s))]
        [decrypt] = [
            s
            for s in keys
            if s.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
            == "secretsmanager.eu-west-1.amazonaws.com"
        ]
        assert decrypt["Action"] == "kms:Decrypt"
        assert "SecurityDataKey" in decrypt["Resource"]["Fn::ImportValue"]
        assert all("kms:ViaService" in s["Condition"]["StringEquals"] for s in keys)


def test_the_action_api_loads_the_dagster_instance_as_dagsters_own_tasks_do(synthesised, templates):
    """Orchestration.connect_task: the instance's variables and the password secret, the same
    values as on Dagster's webserver, named through the orchestration stack's exports."""
    dagster = templates["firepipe-dev-orchestration"]
    webserver = _containers(dagster)["webserver"]
    containers = _containers(templates["firepipe-dev-api"])
    actions, inference = containers["actions"], containers["inference"]
    instance = synthesised.stacks["dev"].orchestration.orchestration.instance_environment
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB"} <= set(
        instance
    )
    environment, expected = _pairs(actions, "Environment"), _pairs(webserver, "Environment")
    for name in instance:
        assert resolve_imports(environment[name], dagster) == expected[name], name
    [database] = _ids(dagster, "AWS::RDS::DBInstance")
    assert resolve_imports(environment["DAGSTER_PG_HOST"], dagster) == {
        "Fn::GetAtt": [database, "Endpoint.Address"]
    }
    [attachment] = _ids(dagster, "AWS::SecretsManager::SecretTargetAttachment")
    password = {"Fn::Join": ["", [{"Ref": attachment}, ":password::"]]}
    assert resolve_imports(_pairs(actions, "Secrets"), dagster) == {"DAGSTER_PG_PASSWORD": password}
    assert _pairs(webserver, "Secrets")["DAGSTER_PG_PASSWORD"] == password
    # The inference service queues no runs.
    dagster_only = set(instance) - {"FIREPIPE_ENV", "AWS_REGION"}
    assert not dagster_only & set(_pairs(inference, "Environment"))
    assert "Secrets" not in inference
    # ECS injects the password with the action API's execution role, through Secrets Manager.
    api = templates["firepipe-dev-api"]
    execution = _role_statements(api, "ApisBackendsActionsTaskExecutionRole")
    [read] = [s for s in execution if "secretsmanager:GetSecretValue" in _actions(s)]
    assert resolve_imports(read["Resource"], dagster) == {"Ref": attachment}
    [decrypt] = [s for s in execution if "kms:Decrypt" in _actions(s)]
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
    }
    assert not [
        s
        for s in _role_statements(api, "ApisBackendsInferenceTaskExecutionRole")
        if "secretsmanager:GetSecretValue" in _actions(s)
    ]


@pytest.mark.parametrize(("group", "port"), [("Database", 5432), ("OrchestrationCode", 4000)])
def test_the_action_api_reaches_the_dagster_database_by_a_rule_of_this_stack(
    templates, group, port
):
    """The database's group admits each of the action API's groups on PostgreSQL's port, the
    code location's on its gRPC port (runs are created from it); the rules sit in this stack
    (the orchestration stack never names the API's groups)."""
    dagster, api = templates["firepipe-dev-orchestration"], templates["firepipe-dev-api"]
    [target_group] = [
        k
        for k in dagster.find_resources("AWS::EC2::SecurityGroup")
        if k.startswith(group) or (group == "Database" and "Database" in k)
    ]
    rules = [
        r["Properties"]
        for r in api.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if resolve_imports(r["Properties"]["GroupId"], dagster)
        == {"Fn::GetAtt": [target_group, "GroupId"]}
    ]
    services = {
        s["Properties"]["ServiceName"]: s["Properties"]["NetworkConfiguration"][
            "AwsvpcConfiguration"
        ]["SecurityGroups"]
        for s in api.find_resources("AWS::ECS::Service").values()
    }
    actions_groups = services["firepipe-dev-actions"]
    assert actions_groups
    assert sorted(json.dumps(r["SourceSecurityGroupId"]) for r in rules) == sorted(
        json.dumps(g) for g in actions_groups
    )
    assert {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules} == {("tcp", port, port)}
    assert not set(map(json.dumps, services["firepipe-dev-inference"])) & {
        json.dumps(r["SourceSecurityGroupId"]) for r in rules
    }


def test_the_stage_traces_and_logs_every_method_into_encrypted_groups(template):
    stage_id, stage = _one(template, "AWS::ApiGateway::Stage")
    assert stage["StageName"] == STAGE
    assert stage["TracingEnabled"] is True
    assert stage["MethodSettings"] == [
        {
            "DataTraceEnabled": False,
            "HttpMethod": "*",
            "LoggingLevel": "INFO",
            "MetricsEnabled": True,
            "ResourcePath": "/*",
        }
    ]
    groups = template.find_resources("AWS::Logs::LogGroup")
    access = next(k for k in groups if k.startswith("ApisAccessLogs"))
    assert stage["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1][1] == {"Ref": access}
    assert '"status":"$context.status"' in stage["AccessLogSetting"]["Format"]
    # The execution log group API Gateway writes into is made first, encrypted, with retention.
    execution = next(k for k in groups if k.startswith("ApisExecutionLogs"))
    [rest_api] = _ids(template, "AWS::ApiGateway::RestApi")
    assert groups[execution]["Properties"]["LogGroupName"] == {
        "Fn::Join": ["", ["API-Gateway-Execution-Logs_", {"Ref": rest_api}, f"/{STAGE}"]]
    }
    assert execution in template.to_json()["Resources"][stage_id]["DependsOn"]
    assert len(groups) == 4  # inference, actions, access, execution
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == 14
        assert "SecurityLogsKey" in group["Properties"]["KmsKeyId"]["Fn::ImportValue"]


def test_the_api_is_regional_with_tls_1_2_and_keys_from_the_header(template):
    _, api = _one(template, "AWS::ApiGateway::RestApi")
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert api["SecurityPolicy"] == "TLS_1_2"
    assert api["ApiKeySourceType"] == "HEADER"
    _, validator = _one(template, "AWS::ApiGateway::RequestValidator")
    assert validator["ValidateRequestParameters"] is validator["ValidateRequestBody"] is True


@pytest.mark.parametrize("env", ENVS)
def test_the_stage_is_behind_a_web_acl_with_common_rules_and_a_rate_limit(templates, env):
    template = templates[f"firepipe-{env}-api"]
    acl_id, acl = _one(template, "AWS::WAFv2::WebACL")
    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    common, rate = sorted(acl["Rules"], key=lambda r: r["Priority"])
    group = common["Statement"]["ManagedRuleGroupStatement"]
    assert (group["VendorName"], group["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    # Batches of readings pass the 8 KB body rule (counted, not blocked).
    assert group["RuleActionOverrides"] == [
        {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}
    ]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "EvaluationWindowSec": WAF_WINDOW_S,
        "Limit": 2 * ENVIRONMENTS[env].api_rate_limit * WAF_WINDOW_S,
    }
    _, association = _one(template, "AWS::WAFv2::WebACLAssociation")
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    [rest_api], [stage] = (
        _ids(template, "AWS::ApiGateway::RestApi"),
        _ids(template, "AWS::ApiGateway::Stage"),
    )
    assert association["ResourceArn"]["Fn::Join"][1] == [
        "arn:aws:apigateway:eu-west-1::/restapis/",
        {"Ref": rest_api},
        "/stages/",
        {"Ref": stage},
    ]
