"""The CDK Pipelines stack: its stages in order with their approvals, the source connection, the
synth command, the images built once and promoted after each registry stack, and cdk-nag on the
pipeline stack."""

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template
from fake_registry import FakeRegistry, pushed_digest
from firepipe_infra import delivery as delivery_module
from firepipe_infra import pipeline as pipeline_module
from firepipe_infra import stacks as stacks_module
from firepipe_infra.config import ENVIRONMENTS, ConfigError
from firepipe_infra.delivery import CDK_CLI_VERSION, DELIVERY, image_builds
from firepipe_infra.pipeline import PROMOTE_SCRIPT, DeliveryPipeline
from firepipe_infra.registry import IMAGES, ecr_registry
from firepipe_infra.stacks import cdk_context, new_app

CONCERNS = ("security", "network", "lake", "registry")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("pipeline.out")
    app = new_app(outdir)
    stack = DeliveryPipeline(app, delivery=DELIVERY, environments=ENVIRONMENTS)
    assembly = app.synth()  # raises on a cdk-nag error
    return SimpleNamespace(
        outdir=outdir,
        stack=stack,
        template=Template.from_json(assembly.get_stack_by_name("firepipe-delivery").template),
    )


@pytest.fixture(scope="module")
def template(built):
    return built.template


def _stages(template):
    (pipeline,) = template.find_resources("AWS::CodePipeline::Pipeline").values()
    return {s["Name"]: s["Actions"] for s in pipeline["Properties"]["Stages"]}


def _project(template, action):
    """The CodeBuild project a pipeline action runs."""
    return template.to_json()["Resources"][action["Configuration"]["ProjectName"]["Ref"]]


def _env(template, action):
    """The variables a CodeBuild action sees: its project's, and the action's own (those that
    hold pipeline variables such as the commit)."""
    project = _project(template, action)["Properties"]["Environment"]
    action_vars = json.loads(action["Configuration"].get("EnvironmentVariables", "[]"))
    return {
        **{v["Name"]: v["Value"] for v in project.get("EnvironmentVariables", [])},
        **{v["name"]: v["value"] for v in action_vars},
    }


def _action(actions, name):
    (action,) = [a for a in actions if a["Name"] == name]
    return action


def test_stages_run_source_synth_self_mutation_then_each_environment_in_order(template):
    names = list(_stages(template))
    assert names[:3] == ["Source", "Build", "UpdatePipeline"]
    assert [n for n in names if n in ENVIRONMENTS] == ["dev", "staging", "prod"]
    assert names.index("dev") > names.index("UpdatePipeline")


def test_staging_and_prod_wait_for_a_manual_approval_and_dev_does_not(template):
    stages = _stages(template)
    assert not [a for a in stages["dev"] if a["ActionTypeId"]["Category"] == "Approval"]
    for env in ("staging", "prod"):
        first = [a for a in stages[env] if a["RunOrder"] == 1]
        assert [(a["Name"], a["ActionTypeId"]["Provider"]) for a in first] == [
            (f"Approve-{env}", "Manual")
        ]
        assert all(a["RunOrder"] > 1 for a in stages[env] if a is not first[0])


def test_source_is_the_github_repository_through_the_connection(template):
    (source,) = _stages(template)["Source"]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert source["Configuration"] == {
        "ConnectionArn": DELIVERY.connection_arn,
        "FullRepositoryId": "firepipe/firepipe",
        "BranchName": "main",
    }


def test_synth_runs_the_app_with_the_pipeline_and_the_commits_image_tag(template):
    (source,) = _stages(template)["Source"]
    (synth,) = _stages(template)["Build"]
    spec = json.loads(_project(template, synth)["Properties"]["Source"]["BuildSpec"])
    assert spec["phases"]["build"]["commands"] == [
        "make infra/.venv/.synced",
        "cd infra",
        f"npx --yes aws-cdk@{CDK_CLI_VERSION} synth --quiet"
        ' -c pipeline=true -c imageTag="$IMAGE_TAG"',
    ]
    assert spec["artifacts"]["base-directory"] == "infra/cdk.out"
    assert spec["phases"]["install"]["runtime-versions"] == {"python": "3.11", "nodejs": "20"}
    assert _env(template, synth)["IMAGE_TAG"] == f"#{{{source['Namespace']}.CommitId}}"


def test_the_pipeline_updates_itself_with_the_pinned_cli(template):
    (mutate,) = _stages(template)["UpdatePipeline"]
    spec = json.loads(_project(template, mutate)["Properties"]["Source"]["BuildSpec"])
    assert f"npm install -g aws-cdk@{CDK_CLI_VERSION}" in spec["phases"]["install"]["commands"]
    assert any(
        "deploy" in c and "firepipe-delivery" in c for c in spec["phases"]["build"]["commands"]
    )


TOOLING_REGISTRY = f"{DELIVERY.account}.dkr.ecr.{DELIVERY.region}.amazonaws.com"
DOCKER_BUILDS = {
    "dagster": "-f docker/dagster.Dockerfile",
    "generator": "-f docker/generator.Dockerfile",
    "generator-cuda": "-f docker/generator-cuda.Dockerfile",
    "training": "-f docker/training.Dockerfile",
    "inference": "-f docker/inference.Dockerfile",
    "agents": "-f docker/agents.Dockerfile",
    "agents-lambda": "-f docker/agents.Dockerfile --target lambda",
    "emr-serverless": "-f docker/emr-serverless.Dockerfile",
}


def _build_spec(template, action):
    return json.loads(_project(template, action)["Properties"]["Source"]["BuildSpec"])


def _policy(template, action):
    role = _project(template, action)["Properties"]["ServiceRole"]["Fn::GetAtt"][0]
    (policy,) = [
        p
        for p in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
    ]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _tooling_repositories(template):
    """Logical id -> name of the tooling account's image repositories."""
    return {
        k: r["Properties"]["RepositoryName"]
        for k, r in template.find_resources("AWS::ECR::Repository").items()
    }


def test_the_tooling_account_keeps_one_immutable_repository_per_image(template):
    repositories = template.find_resources("AWS::ECR::Repository")
    assert sorted(r["Properties"]["RepositoryName"] for r in repositories.values()) == sorted(
        f"firepipe-delivery/{image}" for image in IMAGES
    )
    for repository in repositories.values():
        assert repository["Properties"]["ImageTagMutability"] == "IMMUTABLE"
        assert repository["Properties"]["ImageScanningConfiguration"] == {"ScanOnPush": True}
        assert repository["DeletionPolicy"] == "Retain"


def test_images_are_built_once_before_the_first_environment(template):
    stages = _stages(template)
    builds = [s for s, actions in stages.items() for a in actions if a["Name"] == "BuildImages"]
    assert builds == ["dev"]
    dev = stages["dev"]
    build = _action(dev, "BuildImages")
    assert build["RunOrder"] < _action(dev, "firepipe-dev-registry.Deploy")["RunOrder"]
    (source,) = stages["Source"]
    assert _env(template, build)["REGISTRY"] == TOOLING_REGISTRY
    assert _env(template, build)["IMAGE_TAG"] == f"#{{{source['Namespace']}.CommitId}}"
    assert _project(template, build)["Properties"]["Environment"]["PrivilegedMode"] is True

    spec = _build_spec(template, build)
    assert spec["artifacts"]["base-directory"] == "images"
    commands = spec["phases"]["build"]["commands"]
    assert commands[:2] == [
        f"aws ecr get-login-password --region {DELIVERY.region}"
        ' | docker login --username AWS --password-stdin "$REGISTRY"',
        "mkdir -p images",
    ]
    assert set(DOCKER_BUILDS) == set(IMAGES)
    pairs = commands[2:]
    assert len(pairs) == 2 * len(IMAGES)
    for image, built, recorded in zip(IMAGES, pairs[::2], pairs[1::2], strict=True):
        repository = f"firepipe-delivery/{image}"
        uri = f"$REGISTRY/{repository}:$IMAGE_TAG"
        describe = (
            f"aws ecr describe-images --region {DELIVERY.region} --repository-name {repository}"
            ' --image-ids imageTag="$IMAGE_TAG"'
        )
        # An image already built under the tag (a retried execution) is not built again.
        assert built == (
            f"{describe} > /dev/null 2>&1"
            f' || {{ docker build {DOCKER_BUILDS[image]} -t "{uri}" . && docker push "{uri}"; }}'
        )
        # The reference the promotions copy: the digest ECR holds for the tag.
        assert recorded == (
            f"digest=$({describe} --query 'imageDetails[0].imageDigest' --output text)"
            f' && echo "$REGISTRY/{repository}@$digest" > images/{image}'
        )


def test_the_build_may_push_the_tooling_repositories_only(template):
    build = _action(_stages(template)["dev"], "BuildImages")
    statements = _policy(template, build)
    (push,) = [s for s in statements if "ecr:PutImage" in s["Action"]]
    assert sorted(r["Fn::GetAtt"][0] for r in push["Resource"]) == sorted(
        _tooling_repositories(template)
    )


def _run_build_spec(spec, fake, cwd, env):
    """A build spec's commands as CodeBuild runs them: in one shell, in order, stopping at the
    first whose exit status is not 0 (`set -e` would not stop inside an `&&` list)."""
    script = "\n".join(f"{{ {c}\n}} || exit $?" for c in spec["phases"]["build"]["commands"])
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env={**fake.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_build_and_a_promotion_run_end_to_end_on_stand_ins(template, tmp_path):
    """The generated commands themselves, against fake_registry's aws, docker and skopeo: the
    build leaves one reference per image, a rerun builds nothing and leaves the same ones, and
    the promotion puts those digests under the commit's tag in the environment."""
    fake = FakeRegistry(tmp_path / "fake", account=DELIVERY.account)
    build = _action(_stages(template)["dev"], "BuildImages")
    workdir = tmp_path / "source"
    workdir.mkdir()
    variables = {"IMAGE_TAG": "abc123", "REGISTRY": TOOLING_REGISTRY}
    done = _run_build_spec(_build_spec(template, build), fake, workdir, variables)
    assert done.returncode == 0, done.stderr
    references = {p.name: p.read_text().strip() for p in (workdir / "images").iterdir()}
    expected = {}
    for image in IMAGES:
        uri = f"{TOOLING_REGISTRY}/firepipe-delivery/{image}:abc123"
        expected[image] = f"{TOOLING_REGISTRY}/firepipe-delivery/{image}@{pushed_digest(uri)}"
    assert references == expected
    builds = fake.calls("docker build")
    assert [c.split(" -t ")[0].removeprefix("docker build ") for c in builds] == [
        DOCKER_BUILDS[image] for image in IMAGES
    ]

    (workdir / "images" / "dagster").unlink()
    again = _run_build_spec(_build_spec(template, build), fake, workdir, variables)
    assert again.returncode == 0, again.stderr
    assert len(fake.calls("docker build")) == len(IMAGES)  # nothing rebuilt
    assert {p.name: p.read_text().strip() for p in (workdir / "images").iterdir()} == expected

    # A digest that cannot be read after the push fails the build, leaving no reference.
    (workdir / "images" / "dagster").unlink()
    failed = _run_build_spec(
        _build_spec(template, build), fake, workdir, {**variables, "FAIL_DIGEST_QUERY": "1"}
    )
    assert failed.returncode == 254
    assert "ThrottlingException" in failed.stderr
    assert not (workdir / "images" / "dagster").exists()
    again = _run_build_spec(_build_spec(template, build), fake, workdir, variables)
    assert again.returncode == 0, again.stderr

    config = ENVIRONMENTS["staging"]
    promote = _action(
        _stages(template)["staging"], "firepipe-staging-registry.PromoteImages-staging"
    )
    (workdir / "infra").symlink_to(ROOT / "infra")
    registry = ecr_registry(config.account, config.region)
    done = _run_build_spec(
        _build_spec(template, promote),
        fake,
        workdir,
        {"IMAGE_TAG": "abc123", "REGISTRY": registry, "SOURCE_REGISTRY": TOOLING_REGISTRY},
    )
    assert done.returncode == 0, done.stderr
    for image, reference in expected.items():
        promoted = fake.tagged(config.account, config.region, f"firepipe-staging/{image}", "abc123")
        assert promoted == reference.split("@")[1]


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_each_environment_promotes_the_built_images_after_its_registry_stack(template, env):
    config = ENVIRONMENTS[env]
    actions = _stages(template)[env]
    (source,) = _stages(template)["Source"]
    build = _action(_stages(template)["dev"], "BuildImages")
    registry = _action(actions, f"firepipe-{env}-registry.Deploy")
    promote = _action(actions, f"firepipe-{env}-registry.PromoteImages-{env}")
    assert promote["RunOrder"] > registry["RunOrder"]
    # It reads the build's references, not a build of its own.
    inputs = {a["Name"] for a in promote["InputArtifacts"]}
    assert {o["Name"] for o in build["OutputArtifacts"]} <= inputs
    variables = _env(template, promote)
    assert variables["REGISTRY"] == f"{config.account}.dkr.ecr.{config.region}.amazonaws.com"
    assert variables["SOURCE_REGISTRY"] == TOOLING_REGISTRY
    assert variables["IMAGE_TAG"] == f"#{{{source['Namespace']}.CommitId}}"

    spec = _build_spec(template, promote)
    assert "docker build" not in json.dumps(spec)
    assert spec["phases"]["install"]["commands"][-1] == (
        "apt-get install -y -q --no-install-recommends skopeo"
    )
    assert spec["phases"]["build"]["commands"] == [
        f"aws ecr get-login-password --region {DELIVERY.region}"
        ' | skopeo login --username AWS --password-stdin "$SOURCE_REGISTRY"',
        f"aws ecr get-login-password --region {config.region}"
        ' | skopeo login --username AWS --password-stdin "$REGISTRY"',
        f'bash {PROMOTE_SCRIPT} images "$REGISTRY" firepipe-{env} "$IMAGE_TAG" ' + " ".join(IMAGES),
    ]
    assert (ROOT / PROMOTE_SCRIPT).is_file()


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_a_promotion_pulls_the_built_images_and_pushes_its_environments_only(built, template, env):
    config = ENVIRONMENTS[env]
    promote = _action(_stages(template)[env], f"firepipe-{env}-registry.PromoteImages-{env}")
    statements = _policy(template, promote)
    (login,) = [s for s in statements if s["Action"] == "ecr:GetAuthorizationToken"]
    assert login["Resource"] == "*"
    (pull,) = [s for s in statements if "ecr:GetDownloadUrlForLayer" in s["Action"]]
    assert "ecr:PutImage" not in pull["Action"]
    assert sorted(r["Fn::GetAtt"][0] for r in pull["Resource"]) == sorted(
        _tooling_repositories(template)
    )
    (push,) = [s for s in statements if "ecr:PutImage" in s["Action"]]
    # The registry stack of the stage names the same repositories.
    stage = next(s for s in built.stack.stages if s.config.name == env)
    registry = Template.from_stack(stage.stacks.registry)
    names = sorted(
        r["Properties"]["RepositoryName"]
        for r in registry.find_resources("AWS::ECR::Repository").values()
    )
    assert names == sorted(f"firepipe-{env}/{image}" for image in IMAGES)
    assert sorted(push["Resource"]) == sorted(
        f"arn:aws:ecr:{config.region}:{config.account}:repository/{name}" for name in names
    )
    assert not [s for s in statements if "ecr:BatchDeleteImage" in s["Action"]]


def test_each_stage_deploys_the_same_cloudformation_stacks_as_the_github_workflow(built):
    """The workflow deploys `firepipe-<env>-*` from the bare app: the pipeline's stages must name
    their stacks the same, or the two ways would deploy two copies of each environment."""
    for stage in built.stack.stages:
        env = stage.config.name
        stacks = [c for c in stage.node.children if isinstance(c, Stack)]
        assert {f"firepipe-{env}-{c}" for c in CONCERNS} <= {s.node.id for s in stacks}
        assert [s.stack_name for s in stacks] == [s.node.id for s in stacks]


def test_stacks_that_use_the_registry_deploy_after_the_promotion(monkeypatch):
    """A stack that runs an image depends on the registry stack: CDK Pipelines orders it after
    the registry's post step, so it never deploys a tag that is not promoted yet."""
    build_environment = stacks_module.build_environment

    def with_a_service(scope, config):
        stacks = build_environment(scope, config)
        service = Stack(
            scope,
            f"{config.prefix}-service",
            env=Environment(account=config.account, region=config.region),
        )
        s3.CfnBucket(
            service,
            "UsesAnImage",
            tags=[{"key": "image", "value": stacks.registry.registry.image_uri("dagster")}],
        )
        return stacks

    monkeypatch.setattr(pipeline_module, "build_environment", with_a_service)
    app = App(context=cdk_context())  # no cdk-nag: the bucket above is not the point
    stack = DeliveryPipeline(app, delivery=DELIVERY, environments={"dev": ENVIRONMENTS["dev"]})
    actions = _stages(Template.from_stack(stack))["dev"]
    promote = _action(actions, "firepipe-dev-registry.PromoteImages-dev")
    service = next(a for a in actions if a["Name"].endswith("-service.Prepare"))
    assert service["RunOrder"] > promote["RunOrder"]


def test_artifacts_are_encrypted_with_a_rotating_key_and_access_logged(template):
    (key_id, key) = next(iter(template.find_resources("AWS::KMS::Key").items()))
    assert key["Properties"]["EnableKeyRotation"] is True
    buckets = template.find_resources("AWS::S3::Bucket")
    (artifacts,) = [
        b
        for b in buckets.values()
        if "KMSMasterKeyID" in json.dumps(b["Properties"].get("BucketEncryption", {}))
    ]
    (rule,) = artifacts["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {
        "Fn::GetAtt": [key_id, "Arn"]
    }
    logs_bucket = artifacts["Properties"]["LoggingConfiguration"]["DestinationBucketName"]["Ref"]
    assert logs_bucket in buckets
    assert buckets[logs_bucket] is not artifacts
    (pipeline,) = template.find_resources("AWS::CodePipeline::Pipeline").values()
    store = pipeline["Properties"]["ArtifactStore"]
    assert store["EncryptionKey"]["Id"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_build_logs_are_kept_a_year_and_encrypted(template):
    (group,) = template.find_resources("AWS::Logs::LogGroup").values()
    assert group["Properties"]["LogGroupName"] == "/firepipe/delivery/codebuild"
    assert group["Properties"]["RetentionInDays"] == 365
    assert "KmsKeyId" in group["Properties"]


def test_the_pipeline_stack_passes_cdk_nag(built):
    report = json.loads((built.outdir / "validation-report.json").read_text())
    assert all(not p["violations"] for p in report["pluginReports"])


class _Unacknowledged:
    """Validations.of(...) whose acknowledge() records the acknowledgement instead of making it."""

    made: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, scope):
        self._path = scope.node.path

    @classmethod
    def of(cls, scope):
        return cls(scope)

    def acknowledge(self, *acknowledgements):
        self.made.extend((self._path, a.id) for a in acknowledgements)


def test_each_acknowledgement_is_needed_and_covers_only_the_pipelines_roles(tmp_path, monkeypatch):
    """Without its acknowledgements the pipeline stack fails cdk-nag with IAM5 findings only,
    each on a role the construct generates, under an acknowledgement of that finding; and
    every acknowledgement matches at least one finding."""
    monkeypatch.setattr(_Unacknowledged, "made", [])
    monkeypatch.setattr(pipeline_module, "Validations", _Unacknowledged)
    app = new_app(tmp_path)
    DeliveryPipeline(app, delivery=DELIVERY, environments=ENVIRONMENTS)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    violations = {
        (c["constructPath"], v["ruleName"])
        for p in report["pluginReports"]
        for v in p["violations"]
        for c in v["violatingConstructs"]
    }
    assert {rule.split("[")[0] for _, rule in violations} == {"AwsSolutions-IAM5"}
    assert all(p.endswith("Role/DefaultPolicy/Resource") for p, _ in violations)

    def covers(ack, violation):
        (ack_path, ack_rule), (path, rule) = ack, violation
        return rule == ack_rule and path.startswith(ack_path + "/")

    made = set(_Unacknowledged.made)
    assert [v for v in violations if not any(covers(a, v) for a in made)] == []
    assert [a for a in made if not any(covers(a, v) for v in violations)] == []
    assert all(path.startswith("firepipe-delivery/Pipeline") for path, _ in made)


def test_delivery_config_refuses_every_bad_value_at_once():
    with pytest.raises(ConfigError) as e:
        replace(
            DELIVERY,
            account="4444",
            connection_arn="arn:aws:codeconnections:us-east-1:555555555555:connection/x",
            repository="firepipe",
            branch="a..b",
        )
    message = str(e.value)
    assert message.startswith("delivery: ")
    for problem in ("account '4444'", "connection_arn", "repository 'firepipe'", "branch 'a..b'"):
        assert problem in message


def test_a_connection_of_another_account_is_refused():
    other = DELIVERY.connection_arn.replace(DELIVERY.account, "555555555555")
    with pytest.raises(ConfigError, match="is not a connection of account 444444444444"):
        replace(DELIVERY, connection_arn=other)
    legacy = DELIVERY.connection_arn.replace("codeconnections", "codestar-connections")
    assert replace(DELIVERY, connection_arn=legacy).connection_arn == legacy


def test_an_image_without_its_dockerfile_or_stage_fails_before_any_deploy(tmp_path, monkeypatch):
    builds = {b.image: (b.dockerfile, b.target) for b in image_builds()}
    assert builds["agents"] == ("docker/agents.Dockerfile", None)
    assert builds["agents-lambda"] == ("docker/agents.Dockerfile", "lambda")
    assert builds["emr-serverless"] == ("docker/emr-serverless.Dockerfile", None)
    monkeypatch.setattr(delivery_module, "REPO_ROOT", tmp_path)
    with pytest.raises(ConfigError, match=r"image 'dagster': docker/dagster.Dockerfile"):
        image_builds()
    (tmp_path / "docker").mkdir()
    for image in IMAGES:
        (tmp_path / "docker" / f"{image}.Dockerfile").write_text("FROM scratch AS worker\n")
    with pytest.raises(ConfigError, match=r"docker/agents.Dockerfile has no stage 'lambda'"):
        image_builds()
