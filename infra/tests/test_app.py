import json

import pytest
from aws_cdk import Stack
from aws_cdk import aws_s3 as s3
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.stacks import new_app

CONCERNS = ("security", "network", "lake")


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


def test_an_unacknowledged_nag_error_fails_synthesis(tmp_path):
    app = new_app(tmp_path)
    s3.Bucket(Stack(app, "careless"), "Bucket")  # no access logs, plain HTTP allowed
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules
