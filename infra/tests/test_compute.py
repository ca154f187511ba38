import ast
import json
import re

import pytest
from aws_cdk import Stack
from cfn_refs import imported
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.env_names import AWS_ENV_MODULE, env_names
from firepipe_infra.spark_code import firepipe_wheel

RESOURCES_INIT = AWS_ENV_MODULE.parents[1] / "resources" / "__init__.py"
# The factories of firepipe/resources/__init__.py that build the compute concern's resources.
ADAPTER_FACTORIES = ("_batch_compute", "_emr_spark", "_emr_steps_spark", "_glue_spark")
_SECURITY = "firepipe-dev-security:ExportsOutputFnGetAttSecurity"
DATA_KEY = {"Fn::ImportValue": f"{_SECURITY}DataKeyA8BBAEFFArnA6346D5A"}
LOGS_KEY = {"Fn::ImportValue": f"{_SECURITY}LogsKey0DA07669Arn63943A59"}
LAKE_ARN = {
    "Fn::ImportValue": "firepipe-dev-lake:ExportsOutputFnGetAttLakeLakeBucket24430E3DArnB19AD76C"
}
LAKE_NAME = {"Fn::ImportValue": "firepipe-dev-lake:ExportsOutputRefLakeLakeBucket24430E3D56A8127A"}


@pytest.fixture(scope="module")
def template(synthesised):
    return synthesised.template("firepipe-dev-compute")


@pytest.fixture(scope="module")
def prod_template(synthesised):
    return synthesised.template("firepipe-prod-compute")


@pytest.fixture(scope="module")
def compute(synthesised):
    return synthesised.stacks["dev"].compute.compute


@pytest.fixture(scope="module")
def run_role(synthesised):
    """The statements of Dagster's run role, which the orchestration stack grants
    `Compute.grant_use` (with every other concern's grants, across its default and overflow
    policies), as _statements gives them."""
    template = synthesised.template("firepipe-dev-orchestration")
    role_id = _id(synthesised.stacks["dev"].orchestration.orchestration.run_role)
    return [
        (tuple(sorted(_list(s["Action"]))), json.dumps(s["Resource"], sort_keys=True), s)
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for p in template.find_resources(kind).values()
        if {"Ref": role_id} in p["Properties"].get("Roles", [])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def _one(template, type_, **properties):
    found = [
        r["Properties"]
        for r in template.find_resources(type_).values()
        if all(r["Properties"].get(k) == v for k, v in properties.items())
    ]
    assert len(found) == 1, (type_, properties, len(found))
    return found[0]


def _logical_id(template, type_, **properties):
    [key] = [
        k
        for k, r in template.find_resources(type_).items()
        if all(r["Properties"].get(k2) == v for k2, v in properties.items())
    ]
    return key


def _role_id(template, prefix):
    [key] = [k for k in template.find_resources("AWS::IAM::Role") if k.startswith(prefix)]
    return key


def _statements(template, role_id):
    """The statements of the role's default policy, as (sorted actions, resource as JSON,
    the statement)."""
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in template.find_resources("AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    return [
        (tuple(sorted(_list(s["Action"]))), json.dumps(s["Resource"], sort_keys=True), s)
        for s in policy
    ]


def _id(construct):
    """The logical id of an L1 construct, or of an L2's resource."""
    resource = construct.node.default_child or construct
    return Stack.of(resource).resolve(resource.logical_id)


def _list(value):
    return value if isinstance(value, list) else [value]


def _objects(prefix):
    return json.dumps({"Fn::Join": ["", [LAKE_ARN, f"/{prefix}*"]]}, sort_keys=True)


def _actions_on(statements, resource):
    """The actions of every statement that names `resource` (alone or in its list)."""
    return {
        a
        for (actions, _, s) in statements
        if resource in (json.dumps(r, sort_keys=True) for r in _list(s["Resource"]))
        for a in actions
    }


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_spot_environments_scale_to_the_configured_vcpus(synthesised, env):
    template = synthesised.template(f"firepipe-{env}-compute")
    config = ENVIRONMENTS[env]
    expected = {
        "cpu": (
            config.batch_cpu_max_vcpus,
            "ECS_AL2023",
            ["m6i", "m7i", "m6a", "c6i", "c7i", "c6a"],
        ),
        "gpu": (config.batch_gpu_max_vcpus, "ECS_AL2023_NVIDIA", ["g5", "g6"]),
    }
    for kind, (max_vcpus, image, instances) in expected.items():
        environment = _one(
            template,
            "AWS::Batch::ComputeEnvironment",
            ComputeEnvironmentName=f"firepipe-{env}-{kind}",
        )
        resources = environment["ComputeResources"]
        assert resources["Type"] == "SPOT"
        assert resources["AllocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
        assert (resources["MinvCpus"], resources["MaxvCpus"]) == (0, max_vcpus)
        assert resources["Ec2Configuration"] == [{"ImageType": image}]
        assert resources["InstanceTypes"] == instances
        assert all("privateSubnet" in s["Fn::ImportValue"] for s in resources["Subnets"])
        assert len(resources["Subnets"]) == len(config.availability_zones)
    assert ENVIRONMENTS["dev"].batch_gpu_max_vcpus != ENVIRONMENTS["prod"].batch_gpu_max_vcpus


def test_batch_instances_are_egress_only_and_require_imdsv2(template):
    [group_id] = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": "firepipe-dev Batch instances: egress only"}},
    )
    group = template.find_resources("AWS::EC2::SecurityGroup")[group_id]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert group["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "Allow all outbound traffic by default",
            "IpProtocol": "-1",
        }
    ]
    template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)
    template_id = _logical_id(
        template, "AWS::EC2::LaunchTemplate", LaunchTemplateName="firepipe-dev-batch"
    )
    launch = template.find_resources("AWS::EC2::LaunchTemplate")[template_id]["Properties"]
    assert launch["LaunchTemplateData"]["MetadataOptions"] == {
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
    }
    for environment in template.find_resources("AWS::Batch::ComputeEnvironment").values():
        resources = environment["Properties"]["ComputeResources"]
        assert resources["SecurityGroupIds"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]
        assert resources["LaunchTemplate"] == {"LaunchTemplateId": {"Ref": template_id}}


def test_a_queue_per_environment(template):
    for kind in ("cpu", "gpu"):
        environment = _logical_id(
            template,
            "AWS::Batch::ComputeEnvironment",
            ComputeEnvironmentName=f"firepipe-dev-{kind}",
        )
        queue = _one(template, "AWS::Batch::JobQueue", JobQueueName=f"firepipe-dev-{kind}")
        assert queue["ComputeEnvironmentOrder"] == [
            {
                "ComputeEnvironment": {"Fn::GetAtt": [environment, "ComputeEnvironmentArn"]},
                "Order": 1,
            }
        ]


@pytest.mark.parametrize(
    ("name", "image", "gpu"),
    [
        ("firepipe-dev-generator", "Generator", False),
        ("firepipe-dev-generator-cuda", "GeneratorCuda", True),
    ],
)
def test_job_definitions_run_the_generator_image_and_retry_reclaimed_spot(
    template, name, image, gpu
):
    definition = _one(template, "AWS::Batch::JobDefinition", JobDefinitionName=name)
    container = definition["ContainerProperties"]
    assert container["Command"] == ["python", "-m", "firepipe.services.generate"]
    # The image is the registry's repository of this image, at the deployed tag.
    image_parts = container["Image"]["Fn::Join"][1]
    assert image_parts[-1] == ":unpublished"
    assert re.fullmatch(
        rf"firepipe-dev-registry:ExportsOutputRefRegistry{image}[0-9A-F]{{8}}.*",
        image_parts[-2]["Fn::ImportValue"],
    )
    requirements = {r["Type"]: r["Value"] for r in container["ResourceRequirements"]}
    assert requirements == {"VCPU": "4", "MEMORY": "14336", **({"GPU": "1"} if gpu else {})}
    assert container["Environment"] == [{"Name": "AWS_REGION", "Value": "eu-west-1"}]
    assert container["JobRoleArn"] == {
        "Fn::GetAtt": [_role_id(template, "ComputeGeneratorJobRole"), "Arn"]
    }
    log_group = _logical_id(
        template, "AWS::Logs::LogGroup", LogGroupName="firepipe-dev/batch/generator"
    )
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": log_group}
    assert definition["RetryStrategy"] == {
        "Attempts": 3,
        "EvaluateOnExit": [
            {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
            {"Action": "EXIT", "OnReason": "*"},
        ],
    }


def test_the_job_role_writes_staging_files_and_pipes_messages_only(template):
    statements = _statements(template, _role_id(template, "ComputeGeneratorJobRole"))
    assert _actions_on(statements, _objects("pipes/")) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    # Write only: the generator reads nothing of the warehouse and deletes nothing.
    assert _actions_on(statements, _objects("warehouse/")) == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    [listing] = [s for (a, _, s) in statements if a == ("s3:ListBucket",)]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["pipes/*"]}}
    [key] = [s for (a, _, s) in statements if "kms:Decrypt" in a]
    assert key["Resource"] == DATA_KEY
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    assert len(statements) == 4


def test_every_log_group_is_encrypted_with_the_logs_key_and_kept_as_configured(
    template, prod_template
):
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert sorted(g["Properties"]["LogGroupName"] for g in groups.values()) == [
        "firepipe-dev/batch/generator",
        "firepipe-dev/emr-serverless",
        "firepipe-dev/glue/spark-features/error",
        "firepipe-dev/glue/spark-features/output",
        "firepipe-dev/spark-code-deployment",
    ]
    for group in groups.values():
        assert group["Properties"]["KmsKeyId"] == LOGS_KEY
        assert group["Properties"]["RetentionInDays"] == 14
        assert group["DeletionPolicy"] == "Delete"
    prod = prod_template.find_resources("AWS::Logs::LogGroup").values()
    assert {(g["Properties"]["RetentionInDays"], g["DeletionPolicy"]) for g in prod} == {
        (365, "Retain")
    }


def test_the_emr_serverless_application_runs_in_the_private_subnets(template):
    application = _one(template, "AWS::EMRServerless::Application", Name="firepipe-dev-spark")
    assert re.fullmatch(r"emr-7\.\d+\.\d+", application["ReleaseLabel"])
    assert application["Type"] == "SPARK"
    assert application["AutoStartConfiguration"] == {"Enabled": True}
    assert application["AutoStopConfiguration"] == {"Enabled": True, "IdleTimeoutMinutes": 15}
    assert application["MaximumCapacity"] == {
        "Cpu": "64 vCPU",
        "Memory": "256 GB",
        "Disk": "1000 GB",
    }
    network = application["NetworkConfiguration"]
    assert len(network["SubnetIds"]) == 2
    assert all("privateSubnet" in s["Fn::ImportValue"] for s in network["SubnetIds"])
    group_id = _logical_id(
        template,
        "AWS::EC2::SecurityGroup",
        GroupDescription="firepipe-dev EMR Serverless workers: egress only",
    )
    assert network["SecurityGroupIds"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]
    log_group = _logical_id(
        template, "AWS::Logs::LogGroup", LogGroupName="firepipe-dev/emr-serverless"
    )
    assert application["MonitoringConfiguration"] == {
        "CloudWatchLoggingConfiguration": {"Enabled": True, "LogGroupName": {"Ref": log_group}}
    }


@pytest.mark.parametrize(
    "role",
    ["ComputeSparkEmrServerlessRole", "ComputeSparkEmrStepsInstanceRole", "ComputeSparkGlueRole"],
)
def test_spark_roles_use_the_warehouse_pipes_and_artifacts_and_no_catalog(template, role):
    statements = _statements(template, _role_id(template, role))
    assert _actions_on(statements, _objects("warehouse/")) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
    }
    assert _actions_on(statements, _objects("pipes/")) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert _actions_on(statements, _objects("artifacts/")) == {"s3:GetObject"}
    listed = {
        p
        for (a, _, s) in statements
        if a == ("s3:ListBucket",)
        for p in s["Condition"]["StringLike"]["s3:prefix"]
    }
    assert listed == {"warehouse/*", "pipes/*", "artifacts/*"}
    actions = {a for (acts, _, _) in statements for a in acts}
    assert not any(a.startswith("glue:") for a in actions)
    assert not any("*" in a for a in actions)


def test_emr_security_configuration_encrypts_at_rest_with_the_data_key(template):
    configuration = _one(template, "AWS::EMR::SecurityConfiguration", Name="firepipe-dev-emr")
    document = configuration["SecurityConfiguration"]
    at_rest = document["EncryptionConfiguration"]["AtRestEncryptionConfiguration"]
    assert document["EncryptionConfiguration"]["EnableAtRestEncryption"] is True
    assert document["EncryptionConfiguration"]["EnableInTransitEncryption"] is False
    assert at_rest["S3EncryptionConfiguration"] == {
        "EncryptionMode": "SSE-KMS",
        "AwsKmsKey": DATA_KEY,
    }
    assert at_rest["LocalDiskEncryptionConfiguration"] == {
        "EncryptionKeyProviderType": "AwsKms",
        "AwsKmsKey": DATA_KEY,
        "EnableEbsEncryption": True,
    }
    assert document["InstanceMetadataServiceConfiguration"] == {
        "MinimumInstanceMetadataServiceVersion": 2,
        "HttpPutResponseHopLimit": 1,
    }


def test_emr_roles_instance_profile_and_the_tags_emrs_service_policy_needs(synthesised, template):
    instance_role = _role_id(template, "ComputeSparkEmrStepsInstanceRole")
    roles = template.find_resources("AWS::IAM::Role")
    assert roles[instance_role]["Properties"]["RoleName"] == "firepipe-dev-emr-nodes"
    # EMR refuses an instance profile named otherwise than its role.
    profile = _one(
        template, "AWS::IAM::InstanceProfile", InstanceProfileName="firepipe-dev-emr-nodes"
    )
    assert profile["Roles"] == [{"Ref": instance_role}]
    service_role = roles[_role_id(template, "ComputeSparkEmrStepsServiceRole")]["Properties"]
    assert service_role["RoleName"] == "firepipe-dev-emr-service"
    assert service_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "elasticmapreduce.amazonaws.com"
    }
    assert service_role["ManagedPolicyArns"] == [
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":iam::aws:policy/service-role/AmazonEMRServicePolicy_v2",
                ],
            ]
        }
    ]
    statements = _statements(template, _role_id(template, "ComputeSparkEmrStepsServiceRole"))
    passes = [s for (a, _, s) in statements if a == ("iam:PassRole",)]
    assert [p["Resource"] for p in passes] == [{"Fn::GetAtt": [instance_role, "Arn"]}]
    network = synthesised.template("firepipe-dev-network")
    tagged = {
        k
        for k, r in {
            **network.find_resources("AWS::EC2::Subnet"),
            **network.find_resources("AWS::EC2::VPC"),
        }.items()
        if {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
        in r["Properties"].get("Tags", [])
    }
    assert {k for k in tagged if "public" in k} == set()
    assert sum("privateSubnet" in k for k in tagged) == 2
    assert sum(k.startswith("NetworkVpc") and "Subnet" not in k for k in tagged) == 1


def test_the_glue_job_is_glue_5_with_its_role_and_security_configuration(template):
    job = _one(template, "AWS::Glue::Job", Name="firepipe-dev-spark-features")
    assert job["GlueVersion"] == "5.0"
    assert job["Command"]["Name"] == "glueetl"
    assert job["Command"]["ScriptLocation"] == {
        "Fn::Join": ["", ["s3://", LAKE_NAME, "/artifacts/spark/spark_features.py"]]
    }
    assert job["Role"] == {"Fn::GetAtt": [_role_id(template, "ComputeSparkGlueRole"), "Arn"]}
    arguments = job["DefaultArguments"]
    assert arguments["--job-bookmark-option"] == "job-bookmark-disable"
    # A wheel's file name must be valid for pip to install it: name-version-tags.
    assert re.fullmatch(r"firepipe-\d+\.\d+\.\d+-py3-none-any\.whl", firepipe_wheel())
    assert arguments["--additional-python-modules"] == {
        "Fn::Join": ["", ["s3://", LAKE_NAME, f"/artifacts/spark/{firepipe_wheel()}"]]
    }
    # Glue 5.0 logs into <prefix>/output and <prefix>/error: the groups this stack made.
    assert arguments["--custom-logGroup-prefix"] == "firepipe-dev/glue/spark-features"
    configuration_id = _logical_id(
        template, "AWS::Glue::SecurityConfiguration", Name="firepipe-dev-glue"
    )
    assert job["SecurityConfiguration"] == {"Ref": configuration_id}
    encryption = template.find_resources("AWS::Glue::SecurityConfiguration")[configuration_id][
        "Properties"
    ]["EncryptionConfiguration"]
    assert encryption == {
        "S3Encryptions": [{"S3EncryptionMode": "SSE-KMS", "KmsKeyArn": DATA_KEY}],
        "CloudWatchEncryption": {"CloudWatchEncryptionMode": "SSE-KMS", "KmsKeyArn": LOGS_KEY},
        "JobBookmarksEncryption": {"JobBookmarksEncryptionMode": "CSE-KMS", "KmsKeyArn": DATA_KEY},
    }


def _adapter_variables():
    """The aws_env.py constants the compute concern's resource factories read (AWS_REGION
    aside: the orchestration sets it for every task)."""
    tree = ast.parse(RESOURCES_INIT.read_text())
    factories = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ADAPTER_FACTORIES
    ]
    assert sorted(f.name for f in factories) == sorted(ADAPTER_FACTORIES)
    return {
        node.attr
        for factory in factories
        for node in ast.walk(factory)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "var"
    } - {"AWS_REGION_VAR"}


def test_the_environment_holds_every_variable_the_adapters_read(compute, template):
    constants = _adapter_variables()
    assert "BATCH_GPU_JOB_DEFINITION_VAR" in constants
    assert set(compute.environment) == {env_names()[c] for c in constants}
    stack = compute.node.scope
    values = {k: stack.resolve(v) for k, v in compute.environment.items()}
    assert values["FIREPIPE_PIPES_BUCKET"] == LAKE_NAME
    assert values["FIREPIPE_EMR_PYTHON"] == "/usr/local/bin/python3.11"
    assert values["FIREPIPE_EMR_ENTRY_POINT"] == {
        "Fn::Join": ["", ["s3://", LAKE_NAME, "/artifacts/spark/spark_features.py"]]
    }
    assert values["FIREPIPE_EMR_LOG_URI"] == {"Fn::Join": ["", ["s3://", LAKE_NAME, "/logs/emr/"]]}
    assert values["FIREPIPE_EMR_BOOTSTRAP_SCRIPT"] == {
        "Fn::Join": ["", ["s3://", LAKE_NAME, "/artifacts/emr/bootstrap.sh"]]
    }
    assert "privateSubnet1" in values["FIREPIPE_EMR_SUBNET_ID"]["Fn::ImportValue"]
    # RunJobFlow takes the service role and the instance profile by name (Ref).
    assert values["FIREPIPE_EMR_SERVICE_ROLE"] == {"Ref": _id(compute.emr_steps.service_role)}
    assert values["FIREPIPE_EMR_INSTANCE_PROFILE"] == {
        "Ref": _id(compute.emr_steps.instance_profile)
    }
    assert values["FIREPIPE_GLUE_JOB_NAME"] == {"Ref": _id(compute.glue_job)}
    # The job definitions by their literal names (the latest revision): a Ref is one
    # revision's ARN, which a new image replaces under the orchestration stack's import.
    assert values["FIREPIPE_BATCH_JOB_DEFINITION"] == "firepipe-dev-generator"
    # GPU runs go to the CUDA image's definition.
    assert values["FIREPIPE_BATCH_GPU_JOB_DEFINITION"] == "firepipe-dev-generator-cuda"
    for definition, name in (
        (compute.job_definition, "firepipe-dev-generator"),
        (compute.gpu_job_definition, "firepipe-dev-generator-cuda"),
    ):
        [resource] = [
            r
            for k, r in template.find_resources("AWS::Batch::JobDefinition").items()
            if k == _id(definition)
        ]
        assert resource["Properties"]["JobDefinitionName"] == name


def test_dagster_imports_no_job_definition_revision(synthesised):
    """Nothing outside the compute stack holds a job definition's Ref (one revision's ARN)."""
    compute = synthesised.template("firepipe-dev-compute").to_json()
    exported = [o["Value"] for o in compute["Outputs"].values() if "Export" in o]
    definitions = set(compute["Resources"]) & {
        k for k, r in compute["Resources"].items() if r["Type"] == "AWS::Batch::JobDefinition"
    }
    assert definitions
    assert not [
        v
        for v in exported
        if json.dumps(v).count('"Ref"') and any(d in json.dumps(v) for d in definitions)
    ]


def test_grant_use_submits_follows_and_stops_work_passing_exactly_its_roles(
    compute, template, run_role
):
    statements = run_role

    def granted(action):
        """The resources of every statement of the run role that allows `action`."""
        return [json.loads(r) for (actions, r, _) in statements if action in actions]

    def exported(construct, attribute):
        return imported(template, {"Fn::GetAtt": [_id(construct), attribute]})

    [submit] = granted("batch:SubmitJob")
    queues = {json.dumps(r, sort_keys=True) for r in submit if isinstance(r, dict)}
    assert queues == {
        json.dumps(exported(q, "JobQueueArn"), sort_keys=True)
        for q in (compute.cpu_queue, compute.gpu_queue)
    }
    batch = "arn:aws:batch:eu-west-1:111111111111"
    assert {r for r in submit if isinstance(r, str)} == {
        f"{batch}:job-definition/firepipe-dev-{d}{revision}"
        for d in ("generator", "generator-cuda")
        for revision in ("", ":*")
    }
    assert granted("batch:TerminateJob") == [f"{batch}:job/*"]
    assert granted("batch:DescribeJobs") == ["*"]
    assert granted("elasticmapreduce:RunJobFlow") == ["*"]
    assert granted("elasticmapreduce:TerminateJobFlows") == [
        "arn:aws:elasticmapreduce:eu-west-1:111111111111:cluster/*"
    ]
    application = exported(compute.emr_application, "Arn")
    assert granted("emr-serverless:StartJobRun") == [application]
    assert granted("emr-serverless:CancelJobRun") == [
        {"Fn::Join": ["", [application, "/jobruns/*"]]}
    ]
    assert granted("glue:BatchStopJobRun") == [
        {
            "Fn::Join": [
                "",
                [
                    "arn:aws:glue:eu-west-1:111111111111:job/",
                    imported(template, {"Ref": _id(compute.glue_job)}),
                ],
            ]
        }
    ]
    # Compute's PassRole is unconditioned; the ML concern's (to SageMaker only) is its own.
    [passed] = [
        json.loads(r) for (a, r, s) in statements if a == ("iam:PassRole",) and "Condition" not in s
    ]
    assert sorted(map(json.dumps, _list(passed))) == sorted(
        json.dumps(imported(template, {"Fn::GetAtt": [_role_id(template, p), "Arn"]}))
        for p in (
            "ComputeSparkEmrServerlessRole",
            "ComputeSparkEmrStepsServiceRole",
            "ComputeSparkEmrStepsInstanceRole",
        )
    )
    assert _actions_on(statements, _objects("pipes/")) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
    }


def test_nag_passes(synthesised):
    report = json.loads((synthesised.outdir / "validation-report.json").read_text())
    assert {p["conclusion"] for p in report["pluginReports"]} == {"success"}
    assert all(not p["violations"] for p in report["pluginReports"])
