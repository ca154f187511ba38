import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import aws_cdk
import firepipe_infra
import pytest
from aws_cdk import Validations
from aws_cdk import aws_s3 as s3
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.stacks import CDK_JSON, build_app

CONCERNS = (
    "security",
    "network",
    "lake",
    "registry",
    "compute",
    "ml",
    "agents",
    "knowledge-base",
    "orchestration",
    "api",
    "bedrock-agent",
    "observability",
    "backup",
)


def test_every_environment_synthesises_with_no_nag_error(synthesised):
    report = json.loads((synthesised.outdir / "validation-report.json").read_text())
    assert {p["conclusion"] for p in report["pluginReports"]} == {"success"}
    assert all(not p["violations"] for p in report["pluginReports"])


def test_each_template_file_names_its_environment(synthesised):
    templates = sorted(p.name for p in synthesised.outdir.glob("*.template.json"))
    assert templates == sorted(
        f"firepipe-{env}-{concern}.template.json" for env in ENVIRONMENTS for concern in CONCERNS
    )


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_stacks_deploy_to_their_environments_account_and_region(synthesised, env):
    config = ENVIRONMENTS[env]
    for concern in CONCERNS:
        stack = synthesised.assembly.get_stack_by_name(f"firepipe-{env}-{concern}")
        assert (stack.environment.account, stack.environment.region) == (
            config.account,
            config.region,
        )
        assert bool(stack.termination_protection) is config.deletion_protection


def test_an_unacknowledged_nag_error_fails_the_apps_synthesis(tmp_path):
    """build_app's own app runs cdk-nag: a careless bucket in one of its stacks fails the
    synthesis, naming the AwsSolutions rules it breaks, and nothing else does."""
    app, stacks = build_app(tmp_path)
    bucket = s3.Bucket(
        stacks["dev"].lake,
        "Careless",
        encryption=s3.BucketEncryption.UNENCRYPTED,
        enforce_ssl=False,  # and no server access logs
    )
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    violations = [v for p in report["pluginReports"] for v in p["violations"]]
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= {v["ruleName"] for v in violations}
    assert {c["constructPath"] for v in violations for c in v["violatingConstructs"]} == {
        bucket.node.default_child.node.path
    }


class _Unacknowledged:
    """Validations.of(...) whose acknowledge() records the acknowledgement instead of making it
    (everything else, adding the plugins, is Validations' own)."""

    made: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, scope):
        self._validations = Validations.of(scope)
        self._path = scope.node.path

    @classmethod
    def of(cls, scope):
        return cls(scope)

    def acknowledge(self, *acknowledgements):
        self.made.extend((self._path, a.id) for a in acknowledgements)

    def __getattr__(self, name):
        return getattr(self._validations, name)


def test_each_acknowledgement_is_needed_where_it_sits(tmp_path, monkeypatch):
    """Without its acknowledgements the app fails cdk-nag with exactly the rules they name, on
    the constructs they sit on: none is stale, none covers more than its construct."""
    monkeypatch.setattr(_Unacknowledged, "made", [])
    for module in vars(firepipe_infra).values():
        if isinstance(module, ModuleType) and hasattr(module, "Validations"):
            monkeypatch.setattr(module, "Validations", _Unacknowledged)
    app, _ = build_app(tmp_path)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    violations = {
        (c["constructPath"].removesuffix("/Resource"), v["ruleName"])
        for p in report["pluginReports"]
        for v in p["violations"]
        for c in v["violatingConstructs"]
    }
    assert violations == set(_Unacknowledged.made)
    # The kinds of finding acknowledged, each with its reason where it sits: secrets rotated by
    # an operator (SMG4), AWS's own service policies (IAM4), wildcards of prefixes, run-time
    # names and calls without resources (IAM5), task variables that are names, not secrets
    # (ECS2), dev's single-AZ database without deletion protection and the default port
    # (RDS3, RDS10, RDS11), the NLB's access logs (ELB2), API-key callers (APIG4, COG4).
    rules = {rule.split("[")[0] for _, rule in violations}
    assert rules == ACKNOWLEDGED_RULES, rules
    # prod keeps its database multi-AZ and protected: nothing acknowledges that there.
    prod = {rule for path, rule in violations if path.startswith("firepipe-prod-")}
    assert not prod & {"AwsSolutions-RDS3", "AwsSolutions-RDS10"}


ACKNOWLEDGED_RULES = {
    "AwsSolutions-SMG4",
    "AwsSolutions-IAM4",
    "AwsSolutions-IAM5",
    "AwsSolutions-ECS2",
    "AwsSolutions-RDS3",
    "AwsSolutions-RDS10",
    "AwsSolutions-RDS11",
    "AwsSolutions-ELB2",
    "AwsSolutions-APIG4",
    "AwsSolutions-COG4",
    "AwsSolutions-L1",
}


def test_cdk_json_holds_the_recommended_feature_flags_of_the_installed_aws_cdk_lib():
    config = json.loads(CDK_JSON.read_text())
    assert config["app"] == ".venv/bin/python app.py"
    assert {**recommended_flags(), **DEVIATIONS} == config["context"]


def test_app_py_synthesises_with_cdk_jsons_flags(tmp_path):
    """app.py builds the App itself (the CLI is not involved): the flags reach it all the same.
    Without serverAccessLogsUseBucketPolicy the access-log bucket (ACLs disabled) could not
    take S3's log delivery and the synthesis would fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDK_")}
    subprocess.run(
        [sys.executable, "app.py"],
        cwd=CDK_JSON.parent,
        env={**env, "CDK_OUTDIR": str(tmp_path)},
        check=True,
        capture_output=True,
    )
    tree = json.loads((tmp_path / "firepipe-dev-lake.template.json").read_text())
    [access_logs] = [
        r
        for k, r in tree["Resources"].items()
        if k.startswith("LakeAccessLogs") and r["Type"] == "AWS::S3::Bucket"
    ]
    assert access_logs["Properties"]["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
    }
    app, _ = build_app(tmp_path / "unused")
    for flag, value in json.loads(CDK_JSON.read_text())["context"].items():
        assert app.node.try_get_context(flag) == value, flag


# Where cdk.json departs from aws-cdk-lib's recommendation, and why.
DEVIATIONS = {
    # "weak" replaces the stacks' exports (Fn::ImportValue) with Fn::GetStackOutput, which
    # lets the security stack's keys be deleted or replaced while the lake still uses them;
    # the data stacks rely on CloudFormation refusing that (README, "A stack per concern").
    "@aws-cdk/core:defaultCrossStackReferences": "strong",
}


def recommended_flags():
    """aws-cdk-lib's recommended-feature-flags.json, from the installed package's jsii bundle
    (what `cdk init` writes into a new project's cdk.json for this version)."""
    [bundle] = (Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        return json.load(member)
