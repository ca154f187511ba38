import ast
import hashlib
import json

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template
from cfn_refs import resolve_imports
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.env_names import AWS_ENV_MODULE
from firepipe_infra.genai import (
    ACTION_HANDLER,
    AGENT_FOUNDATION_MODEL,
    AGENT_MODEL,
    OPENAPI_DOCUMENT,
    GenerativeAi,
)
from firepipe_infra.knowledge_base import EMBEDDING_MODEL, KB_MARKER, KB_PREFIX, KnowledgeBase
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security
from firepipe_infra.stacks import _EnvironmentStack, cdk_context
from firepipe_infra.vector_store import EMBEDDING_DIMENSIONS

FIREPIPE = AWS_ENV_MODULE.parents[1]
AGENTS = "arn:aws:bedrock:eu-west-1:111111111111:agent/*"
# CloudFormation's execution role from the CDK bootstrap (qualifier hnb659fds), creating the index.
DEPLOYER = (
    "arn:${AWS::Partition}:iam::111111111111:role/"
    "cdk-hnb659fds-cfn-exec-role-111111111111-eu-west-1"
)
SECRETS_MANAGER = {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}}


@pytest.fixture(scope="module")
def template(synthesised):
    """The Bedrock agent and its action function."""
    return synthesised.template("firepipe-dev-bedrock-agent")


@pytest.fixture(scope="module")
def kb_template(synthesised):
    """The knowledge base the agent searches, a stack of its own."""
    return synthesised.template("firepipe-dev-knowledge-base")


@pytest.fixture(scope="module")
def kb_prod_template(synthesised):
    return synthesised.template("firepipe-prod-knowledge-base")


@pytest.fixture(scope="module")
def dagster_template(synthesised):
    return synthesised.template("firepipe-dev-orchestration")


@pytest.fixture(scope="module")
def granted(tmp_path_factory):
    """The policy grant_use writes for a role beside the construct, in a small app of one
    stack with what it builds on (no cdk-nag: the grantee's own stack acknowledges what its
    policy holds), so every reference is the stack's own."""
    app = App(outdir=str(tmp_path_factory.mktemp("grants")), context=cdk_context())
    config = ENVIRONMENTS["dev"]
    stack = _EnvironmentStack(app, "grants", config)
    security = Security(stack, "Security", config=config)
    genai = GenerativeAi(
        stack,
        "GenerativeAi",
        config=config,
        security=security,
        network=Network(stack, "Network", config=config, logs_key=security.logs_key),
        registry=Registry(stack, "Registry", config=config),
        knowledge_base=KnowledgeBase(stack, "KnowledgeBase", config=config, security=security),
    )
    role = iam.Role(stack, "Grantee", assumed_by=iam.AccountRootPrincipal())
    genai.grant_use(role)
    template = Template.from_stack(stack)
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for k, p in template.find_resources("AWS::IAM::Policy").items()
        if k.startswith("GranteeDefaultPolicy")
    ]
    return template, policy


def _one(template, kind, props=None):
    [(logical_id, resource)] = template.find_resources(kind, props or {}).items()
    return logical_id, resource["Properties"]


def _text(value):
    """A Fn::Join of JSON text, its tokens written as <reference>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(_text(part) for part in value["Fn::Join"][1])
    if "Fn::ImportValue" in value:
        return f"<{value['Fn::ImportValue']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Sub" in value:
        return value["Fn::Sub"]
    return f"<{value['Ref']}>"


def _policy(template, name):
    _, props = _one(
        template,
        "AWS::OpenSearchServerless::SecurityPolicy",
        {"Properties": {"Type": name}},
    )
    return props["Name"], json.loads(_text(props["Policy"]))


def _statements(template, role_prefix):
    [statements] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for k, p in template.find_resources("AWS::IAM::Policy").items()
        if k.startswith(role_prefix)
    ]
    return statements


def _actions(statement):
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def _allows(statements, action):
    return [s for s in statements if action in _actions(s)]


def _action_function(template):
    return _one(
        template, "AWS::Lambda::Function", {"Properties": {"FunctionName": "firepipe-dev-actions"}}
    )


def test_the_collection_is_a_vector_search_encrypted_with_the_data_key(kb_template):
    collection_id, collection = _one(kb_template, "AWS::OpenSearchServerless::Collection")
    assert (collection["Name"], collection["Type"]) == ("firepipe-dev-kb", "VECTORSEARCH")
    assert collection["StandbyReplicas"] == "DISABLED"
    name, encryption = _policy(kb_template, "encryption")
    assert name == "firepipe-dev-kb"
    assert encryption["Rules"] == [
        {"ResourceType": "collection", "Resource": ["collection/firepipe-dev-kb"]}
    ]
    assert encryption["AWSOwnedKey"] is False
    assert encryption["KmsARN"].startswith(
        "<firepipe-dev-security:ExportsOutputFnGetAttSecurityDataKey"
    )
    depends = kb_template.to_json()["Resources"][collection_id]["DependsOn"]
    assert len(depends) == 2
    assert all(d.startswith("KnowledgeBaseVectorStore") for d in depends)


def test_the_collection_api_is_open_to_signed_requests_and_dashboards_to_none(kb_template):
    _, network = _policy(kb_template, "network")
    assert network == [
        {
            "Rules": [{"ResourceType": "collection", "Resource": ["collection/firepipe-dev-kb"]}],
            "AllowFromPublic": True,
        }
    ]


def test_data_access_admits_the_knowledge_bases_role_and_the_deployment_only(kb_template):
    _, props = _one(kb_template, "AWS::OpenSearchServerless::AccessPolicy")
    assert props["Type"] == "data"
    grants = {g["Principal"][0]: g["Rules"] for g in json.loads(_text(props["Policy"]))}
    [role] = kb_template.find_resources(
        "AWS::IAM::Role",
        {"Properties": {"Description": "firepipe-dev: the knowledge base embeds the documents"}},
    )
    assert set(grants) == {f"<{role}.Arn>", DEPLOYER}

    def permissions(rules, kind):
        [rule] = [r for r in rules if r["ResourceType"] == kind]
        resource = {"collection": "collection/firepipe-dev-kb", "index": "index/firepipe-dev-kb/*"}
        assert rule["Resource"] == [resource[kind]]
        return set(rule["Permission"])

    kb, deployer = grants[f"<{role}.Arn>"], grants[DEPLOYER]
    assert {"aoss:ReadDocument", "aoss:WriteDocument"} <= permissions(kb, "index")
    assert "aoss:CreateIndex" not in permissions(kb, "index")
    assert {"aoss:CreateIndex", "aoss:DeleteIndex"} <= permissions(deployer, "index")
    assert not {"aoss:ReadDocument", "aoss:WriteDocument"} & permissions(deployer, "index")


def test_the_index_holds_the_knowledge_bases_vectors_and_fields(kb_template):
    index_id, index = _one(kb_template, "AWS::OpenSearchServerless::Index")
    collection_id, _ = _one(kb_template, "AWS::OpenSearchServerless::Collection")
    assert index["CollectionEndpoint"] == {"Fn::GetAtt": [collection_id, "CollectionEndpoint"]}
    kb_id, kb = _one(kb_template, "AWS::Bedrock::KnowledgeBase")
    vectors = kb["KnowledgeBaseConfiguration"]["VectorKnowledgeBaseConfiguration"]
    dimensions = vectors["EmbeddingModelConfiguration"]["BedrockEmbeddingModelConfiguration"]
    assert dimensions == {"Dimensions": EMBEDDING_DIMENSIONS, "EmbeddingDataType": "FLOAT32"}
    assert vectors["EmbeddingModelArn"] == (
        f"arn:aws:bedrock:eu-west-1::foundation-model/{EMBEDDING_MODEL}"
    )
    storage = kb["StorageConfiguration"]["OpensearchServerlessConfiguration"]
    assert storage["CollectionArn"] == {"Fn::GetAtt": [collection_id, "Arn"]}
    assert storage["VectorIndexName"] == index["IndexName"]
    fields = index["Mappings"]["Properties"]
    mapping = storage["FieldMapping"]
    vector = fields[mapping["VectorField"]]
    assert (vector["Type"], vector["Dimension"]) == ("knn_vector", dimensions["Dimensions"])
    assert vector["Method"] == {"Name": "hnsw", "Engine": "faiss", "SpaceType": "l2"}
    assert fields[mapping["TextField"]] == {"Type": "text", "Index": True}
    assert fields[mapping["MetadataField"]] == {"Type": "text", "Index": False}
    assert index["Settings"]["Index"]["Knn"] is True
    assert index_id in kb_template.to_json()["Resources"][kb_id]["DependsOn"]


def test_the_data_source_reads_the_prefix_firepipes_sync_writes(kb_template):
    _, source = _one(kb_template, "AWS::Bedrock::DataSource")
    kb_id, _ = _one(kb_template, "AWS::Bedrock::KnowledgeBase")
    assert source["KnowledgeBaseId"] == {"Fn::GetAtt": [kb_id, "KnowledgeBaseId"]}
    s3 = source["DataSourceConfiguration"]["S3Configuration"]
    [documents] = [
        k
        for k in kb_template.find_resources("AWS::S3::Bucket")
        if k.startswith("KnowledgeBaseDocuments") and "AccessLogs" not in k
    ]
    assert s3 == {
        "BucketArn": {"Fn::GetAtt": [documents, "Arn"]},
        "BucketOwnerAccountId": "111111111111",
        "InclusionPrefixes": [KB_PREFIX],
    }
    assert source["DataDeletionPolicy"] == "DELETE"
    assert (
        "SecurityDataKey"
        in source["ServerSideEncryptionConfiguration"]["KmsKeyArn"]["Fn::ImportValue"]
    )
    # sync's marker sits beside the folder, outside the prefix the data source reads.
    ingested = _module_constant(FIREPIPE / "resources" / "knowledge_base.py", "_INGESTED")
    assert KB_PREFIX.rstrip("/") + ingested == KB_MARKER
    assert not KB_MARKER.startswith(KB_PREFIX)


def test_the_documents_bucket_is_encrypted_versioned_and_logged(kb_template):
    buckets = kb_template.find_resources("AWS::S3::Bucket")
    documents = next(
        v["Properties"]
        for k, v in buckets.items()
        if k.startswith("KnowledgeBaseDocuments") and "AccessLogs" not in k
    )
    logs = next(k for k in buckets if k.startswith("KnowledgeBaseDocumentsAccessLogs"))
    [encryption] = documents["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert (
        "SecurityDataKey"
        in encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::ImportValue"]
    )
    assert documents["VersioningConfiguration"] == {"Status": "Enabled"}
    assert documents["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logs},
        "LogFilePrefix": "documents/",
    }
    for policy in kb_template.find_resources("AWS::S3::BucketPolicy").values():
        deny = policy["Properties"]["PolicyDocument"]["Statement"][0]
        assert deny["Effect"] == "Deny"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_agents_action_group_is_the_committed_openapi_document(template, kb_template):
    agent_id, agent = _one(template, "AWS::Bedrock::Agent")
    [group] = agent["ActionGroups"]
    committed = OPENAPI_DOCUMENT.read_text()
    assert group["ApiSchema"] == {"Payload": committed}
    document = json.loads(committed)
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert document["openapi"] == "3.0.0"
    assert len(operations) <= 11
    function_id, _ = _action_function(template)
    assert group["ActionGroupExecutor"] == {"Lambda": {"Fn::GetAtt": [function_id, "Arn"]}}
    assert agent["FoundationModel"] == AGENT_MODEL
    assert len(agent["Instruction"]) >= 40
    assert "SecurityDataKey" in agent["CustomerEncryptionKeyArn"]["Fn::ImportValue"]
    kb_id, _ = _one(kb_template, "AWS::Bedrock::KnowledgeBase")
    [kb] = agent["KnowledgeBases"]
    assert resolve_imports(kb["KnowledgeBaseId"], kb_template) == {
        "Fn::GetAtt": [kb_id, "KnowledgeBaseId"]
    }
    _, alias = _one(template, "AWS::Bedrock::AgentAlias")
    assert alias["AgentId"] == {"Fn::GetAtt": [agent_id, "AgentId"]}
    # The alias's description changes with the model, the instruction or the document.
    definition = "\n".join((agent["FoundationModel"], agent["Instruction"], committed))
    digest = hashlib.sha256(definition.encode()).hexdigest()[:12]
    assert alias["Description"] == f"firepipe dev, agent {digest}"


def test_the_action_function_runs_the_bedrock_handler_from_the_lambda_image(synthesised, template):
    function_id, function = _action_function(template)
    assert function["PackageType"] == "Image"
    assert function["ImageConfig"] == {"Command": [ACTION_HANDLER]}
    image = json.dumps(function["Code"]["ImageUri"])
    assert "RegistryAgentsLambda" in image
    assert image.endswith(':unpublished"]]}')
    module, name = ACTION_HANDLER.rsplit(".", 1)
    source = (FIREPIPE.parent / (module.replace(".", "/") + ".py")).read_text()
    assert f"\ndef {name}(" in source
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert len(function["VpcConfig"]["SubnetIds"]) == 2
    group = function["LoggingConfig"]["LogGroup"]["Ref"]
    assert (
        "SecurityLogsKey"
        in template.to_json()["Resources"][group]["Properties"]["KmsKeyId"]["Fn::ImportValue"]
    )
    env = function["Environment"]["Variables"]
    assert env["FIREPIPE_ENV"] == "aws"
    assert env["FIREPIPE_KB_PREFIX"] == KB_PREFIX
    # Its own, and what the stack hands on: the lake and the generation history (measuring
    # generations), Dagster's instance (queueing fire runs; Lambda sets AWS_REGION itself).
    s = synthesised.stacks["dev"]
    assert set(env) == {
        "FIREPIPE_ENV",
        "FIREPIPE_KB_ID",
        "FIREPIPE_KB_DATA_SOURCE_ID",
        "FIREPIPE_KB_BUCKET",
        "FIREPIPE_KB_PREFIX",
        "FIREPIPE_GENERATION_HISTORY_TABLE",
        *s.lake.lake.environment,
        *s.orchestration.orchestration.instance_environment,
        # The deployed code location, which the queued runs are created from.
        "DAGSTER_CODE_LOCATION_HOST",
    } - {"AWS_REGION"}
    assert env["DAGSTER_CODE_LOCATION_HOST"] == "code.firepipe-dev.local"
    _, permission = _one(template, "AWS::Lambda::Permission")
    agent_id, _ = _one(template, "AWS::Bedrock::Agent")
    assert permission == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": [function_id, "Arn"]},
        "Principal": "bedrock.amazonaws.com",
        "SourceAccount": "111111111111",
        "SourceArn": {"Fn::GetAtt": [agent_id, "AgentArn"]},
    }


def test_the_action_function_loads_the_dagster_instance_and_reads_its_password_itself(
    synthesised, template, dagster_template
):
    """Orchestration.connect_function: the instance's variables, the same values as on
    Dagster's webserver; no password in the environment (Lambda injects no secrets): the
    function's role reads the database's secret, which DAGSTER_PG_PASSWORD_SECRET_ARN names."""
    _, function = _action_function(template)
    env = function["Environment"]["Variables"]
    [webserver] = [
        c
        for t in dagster_template.find_resources("AWS::ECS::TaskDefinition").values()
        for c in t["Properties"]["ContainerDefinitions"]
        if c["Name"] == "webserver"
    ]
    expected = {e["Name"]: e["Value"] for e in webserver["Environment"]}
    instance = synthesised.stacks["dev"].orchestration.orchestration.instance_environment
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB"} <= set(
        instance
    )
    for name in set(instance) - {"AWS_REGION"}:
        assert resolve_imports(env[name], dagster_template) == expected[name], name
    [database] = dagster_template.find_resources("AWS::RDS::DBInstance")
    assert resolve_imports(env["DAGSTER_PG_HOST"], dagster_template) == {
        "Fn::GetAtt": [database, "Endpoint.Address"]
    }
    assert "DAGSTER_PG_PASSWORD" not in env
    [attachment] = dagster_template.find_resources("AWS::SecretsManager::SecretTargetAttachment")
    assert resolve_imports(env["DAGSTER_PG_PASSWORD_SECRET_ARN"], dagster_template) == {
        "Fn::Join": ["", [{"Ref": attachment}, ":password::"]]
    }
    statements = _statements(template, "GenerativeAiActionFunctionRoleDefaultPolicy")
    [read] = _allows(statements, "secretsmanager:GetSecretValue")
    assert read["Action"] == "secretsmanager:GetSecretValue"
    assert resolve_imports(read["Resource"], dagster_template) == {"Ref": attachment}
    [decrypt] = [s for s in _allows(statements, "kms:Decrypt") if s["Condition"] == SECRETS_MANAGER]
    assert "SecurityDataKey" in decrypt["Resource"]["Fn::ImportValue"]


def test_the_action_function_reaches_the_dagster_database_by_a_rule_of_this_stack(
    template, dagster_template
):
    """The database's group admits the function's groups on PostgreSQL's port; the rule sits
    in this stack (the orchestration stack never names the function's groups)."""
    _, function = _action_function(template)
    groups = function["VpcConfig"]["SecurityGroupIds"]
    [database_group] = [
        k for k in dagster_template.find_resources("AWS::EC2::SecurityGroup") if "Database" in k
    ]
    rules = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if resolve_imports(r["Properties"]["GroupId"], dagster_template)
        == {"Fn::GetAtt": [database_group, "GroupId"]}
    ]
    assert groups
    assert sorted(json.dumps(r["SourceSecurityGroupId"]) for r in rules) == sorted(
        json.dumps(g) for g in groups
    )
    assert {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules} == {("tcp", 5432, 5432)}


def test_the_agents_role_invokes_its_model_through_the_profile_and_retrieves(template, kb_template):
    statements = _statements(template, "GenerativeAiAgentRoleDefaultPolicy")
    profile = f"arn:aws:bedrock:eu-west-1:111111111111:inference-profile/{AGENT_MODEL}"
    [direct] = [s for s in _allows(statements, "bedrock:InvokeModel") if s["Resource"] == profile]
    [routed] = [s for s in _allows(statements, "bedrock:InvokeModel") if s["Resource"] != profile]
    assert routed["Resource"] == f"arn:aws:bedrock:*::foundation-model/{AGENT_FOUNDATION_MODEL}"
    assert routed["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": profile}}
    assert "bedrock:GetInferenceProfile" in direct["Action"]
    kb_id, _ = _one(kb_template, "AWS::Bedrock::KnowledgeBase")
    [retrieve] = _allows(statements, "bedrock:Retrieve")
    assert resolve_imports(retrieve["Resource"], kb_template) == {
        "Fn::GetAtt": [kb_id, "KnowledgeBaseArn"]
    }
    [key] = _allows(statements, "kms:GenerateDataKey")
    assert key["Condition"] == {"StringLike": {"kms:EncryptionContext:aws:bedrock:arn": AGENTS}}
    [trust] = template.find_resources(
        "AWS::IAM::Role",
        {
            "Properties": {
                "Description": "firepipe-dev: the agent calls its model and the knowledge base"
            }
        },
    ).values()
    [assume] = trust["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert assume["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert assume["Condition"]["ArnLike"] == {
        "aws:SourceArn": "arn:aws:bedrock:eu-west-1:111111111111:agent/*"
    }


def test_the_knowledge_bases_role_embeds_reads_the_prefix_and_reaches_the_collection(kb_template):
    statements = _statements(kb_template, "KnowledgeBaseRoleDefaultPolicy")
    collection_id, _ = _one(kb_template, "AWS::OpenSearchServerless::Collection")
    [aoss] = _allows(statements, "aoss:APIAccessAll")
    assert aoss["Resource"] == {"Fn::GetAtt": [collection_id, "Arn"]}
    [embed] = _allows(statements, "bedrock:InvokeModel")
    assert embed["Resource"] == f"arn:aws:bedrock:eu-west-1::foundation-model/{EMBEDDING_MODEL}"
    [read] = _allows(statements, "s3:GetObject")
    assert _text(read["Resource"]).endswith(f".Arn>/{KB_PREFIX}*")
    assert not _allows(statements, "s3:PutObject")
    services = {
        s["Condition"]["StringEquals"]["kms:ViaService"]
        for s in statements
        if _actions(s)[0].startswith("kms:")
    }
    assert services == {f"{svc}.eu-west-1.amazonaws.com" for svc in ("s3", "bedrock", "aoss")}


def test_environment_names_the_knowledge_base_and_the_agent(synthesised):
    genai = synthesised.stacks["dev"].agent.genai
    kb = synthesised.stacks["dev"].knowledge_base.knowledge_base
    assert genai.knowledge_base is kb
    kb_stack, stack = Stack.of(kb), Stack.of(genai)
    # Each value resolved in the stack of the resource it names.
    resolved = {
        k: (kb_stack if k.startswith("FIREPIPE_KB_") else stack).resolve(v)
        for k, v in genai.environment.items()
    }
    ids = {
        "kb": kb_stack.get_logical_id(kb.knowledge_base),
        "source": kb_stack.get_logical_id(kb.data_source),
        "bucket": kb_stack.get_logical_id(kb.documents_bucket.node.default_child),
        "agent": stack.get_logical_id(genai.agent),
        "alias": stack.get_logical_id(genai.agent_alias),
    }
    assert resolved == {
        "FIREPIPE_KB_ID": {"Fn::GetAtt": [ids["kb"], "KnowledgeBaseId"]},
        "FIREPIPE_KB_DATA_SOURCE_ID": {"Fn::GetAtt": [ids["source"], "DataSourceId"]},
        "FIREPIPE_KB_BUCKET": {"Ref": ids["bucket"]},
        "FIREPIPE_KB_PREFIX": KB_PREFIX,
        "FIREPIPE_AGENT_ID": {"Fn::GetAtt": [ids["agent"], "AgentId"]},
        "FIREPIPE_AGENT_ALIAS_ID": {"Fn::GetAtt": [ids["alias"], "AgentAliasId"]},
    }


def test_grant_use_allows_firepipes_calls_and_nothing_of_other_agents(granted):
    template, statements = granted
    kb_id, _ = _one(template, "AWS::Bedrock::KnowledgeBase")
    kb_arn = {"Fn::GetAtt": [kb_id, "KnowledgeBaseArn"]}
    for action in ("bedrock:Retrieve", "bedrock:StartIngestionJob", "bedrock:GetIngestionJob"):
        [statement] = _allows(statements, action)
        assert statement["Resource"] == kb_arn
    alias_id, _ = _one(template, "AWS::Bedrock::AgentAlias")
    [invoke] = _allows(statements, "bedrock:InvokeAgent")
    assert invoke["Resource"] == {"Fn::GetAtt": [alias_id, "AgentAliasArn"]}
    agent_id, _ = _one(template, "AWS::Bedrock::Agent")
    [key] = [s for s in statements if s.get("Condition", {}).get("StringLike")]
    assert key["Condition"]["StringLike"] == {
        "kms:EncryptionContext:aws:bedrock:arn": {"Fn::GetAtt": [agent_id, "AgentArn"]}
    }

    def objects(action):
        return sorted(
            _text(r).split(">/", 1)[1]
            for s in _allows(statements, action)
            for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
            if ">/" in _text(r)
        )

    assert objects("s3:PutObject") == sorted([f"{KB_PREFIX}*", KB_MARKER])
    assert objects("s3:DeleteObject") == [f"{KB_PREFIX}*"]
    assert not [a for s in statements for a in _actions(s) if a.endswith("*")]


def test_prod_keeps_its_vectors_with_standby_replicas(kb_prod_template):
    collection = next(
        iter(kb_prod_template.find_resources("AWS::OpenSearchServerless::Collection").values())
    )
    assert collection["Properties"]["StandbyReplicas"] == "ENABLED"
    assert collection["DeletionPolicy"] == "Retain"
    _, source = _one(kb_prod_template, "AWS::Bedrock::DataSource")
    assert source["DataDeletionPolicy"] == "RETAIN"


def _module_constant(path, name):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [
            t.id for t in node.targets if isinstance(t, ast.Name)
        ] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} assigns no {name}")
