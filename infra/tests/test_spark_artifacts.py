"""The Spark engines' code, as infra/artifacts/upload-spark-artifacts.sh lays it out: at the
keys the compute stack hands the engines (run with an output folder, it uploads nothing)."""

import json
import subprocess
from pathlib import Path

import pytest
from aws_cdk import Stack
from firepipe_infra.spark import SPARK_PYTHON, firepipe_wheel

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ROOT = ARTIFACTS.parents[1]


@pytest.fixture(scope="module")
def laid_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    subprocess.run(
        [str(ARTIFACTS / "upload-spark-artifacts.sh"), "dev", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def _key(value) -> str:
    """The object key of an s3://<bucket>/<key> URI the stack builds (a Fn::Join)."""
    joined = "".join(p if isinstance(p, str) else "<bucket>" for p in value["Fn::Join"][1])
    assert joined.startswith("s3://<bucket>/"), joined
    return joined.removeprefix("s3://<bucket>/")


def test_every_key_the_engines_are_given_is_laid_out(synthesised, laid_out):
    compute = synthesised.stacks["dev"].compute.compute
    stack = Stack.of(compute)
    environment = {k: stack.resolve(v) for k, v in compute.environment.items()}
    keys = {
        _key(environment["FIREPIPE_EMR_ENTRY_POINT"]),
        _key(environment["FIREPIPE_EMR_BOOTSTRAP_SCRIPT"]),
        _key(stack.resolve(compute.spark.wheel)),
    }
    assert keys == {
        "artifacts/spark/spark_features.py",
        "artifacts/emr/bootstrap.sh",
        f"artifacts/spark/{firepipe_wheel()}",
    }
    for key in keys:
        assert (laid_out / key.removeprefix("artifacts/")).is_file(), key
    entry = laid_out / "spark" / "spark_features.py"
    assert entry.read_bytes() == (ROOT / "firepipe/services/spark_features.py").read_bytes()


def test_the_bootstrap_action_installs_the_wheel_where_the_steps_run_python(laid_out):
    script = (laid_out / "emr" / "bootstrap.sh").read_text()
    assert "@ARTIFACTS@" not in script
    assert 'aws s3 cp "s3://firepipe-dev-lake-bucket/artifacts/spark/"' in script
    assert f"ln -sf /usr/bin/python3.11 {SPARK_PYTHON}" in script
    assert f"sudo {SPARK_PYTHON} -m pip install" in script
    subprocess.run(["bash", "-n", str(laid_out / "emr" / "bootstrap.sh")], check=True)


def test_the_deploy_workflow_uploads_them_after_the_stacks():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    steps = workflow["jobs"]["deploy-dev"]["steps"]
    runs = [json.dumps(s.get("run", "")) for s in steps]
    [deploy] = [i for i, r in enumerate(runs) if 'deploy \\"firepipe-$DEPLOY_ENV-*\\"' in r]
    [upload] = [i for i, r in enumerate(runs) if "upload-spark-artifacts.sh" in r]
    assert upload > deploy
    assert "$DEPLOY_ENV" in runs[upload]
