"""SparkCompute on a transient EMR-on-EC2 cluster and on AWS Glue: dagster-aws's Pipes clients
with the Pipes context and messages on a moto S3 server. EMR is stubbed by botocore's Stubber
for runs (moto's clusters never finish their steps) and moto checks the RunJobFlow request;
Glue runs on moto's server (its job runs succeed at once) and is stubbed for a failure.

A job is simulated by what the engine does with its request: run the entry point's `main` with
the Pipes parameters where that engine puts them (EMR: the driver's environment, from the
request's spark-defaults; Glue: the script's command line, from the job arguments), in a local
Spark session that stands for the one spark-submit makes, shared by this module's jobs (one
Spark start)."""

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pytest
from botocore.stub import Stubber
from dagster._core.pipes import utils as pipes_utils
from dagster_pipes import PipesContext, decode_param

from firepipe.core.features.spec import ID_COLUMNS, Difference, FeatureSpec, Rolling
from firepipe.core.features.spec import compute_features as polars_features
from firepipe.resources import spark_emr, spark_glue
from firepipe.resources.spark import SparkCompute, SparkComputeError
from firepipe.resources.spark_emr import STEP_NAME, EmrStepsSparkCompute
from firepipe.resources.spark_glue import GlueSparkCompute
from firepipe.services import spark_features
from firepipe_tests.core.features.feature_sample import assert_same_features, silver_sample
from firepipe_tests.local_spark import local_spark
from firepipe_tests.resources.conftest import REGION, InterruptingClock
from firepipe_tests.resources.one_off_asset import call_in_asset

ACCOUNT = "123456789012"
CLUSTER = "j-2AXXXXXXGAPLF"
STEP = "s-3BXXXXXXL0GGD"
JOB = "firepipe-spark-features"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/firepipe-glue-job"
APP_MASTER_ENV = "spark.yarn.appMasterEnv."
SPEC = FeatureSpec(
    (Rolling("co_ppm", "mean", 30), Rolling("temperature_c", "max", 60), Difference("co_ppm", 10))
)


def compute(resource: SparkCompute, **request: Any) -> dict[str, Any]:
    return call_in_asset(
        resource, lambda context, spark: spark.compute_features(context, **request)
    )


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    yield from local_spark("firepipe-spark-engines")


@pytest.fixture(autouse=True)
def no_wait_for_late_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    # A failed job sends no Pipes messages; dagster's reader then waits 10 s for late ones.
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)


@pytest.fixture
def silver_file(tmp_path: Path) -> tuple[pl.DataFrame, str]:
    silver = silver_sample(devices=2, seconds=240)
    silver.write_parquet(tmp_path / "silver.parquet")
    return silver, str(tmp_path / "silver.parquet")


def run_entry_point(env: dict[str, str], argv: list[str], moto_endpoint: str) -> None:
    """The entry point's `main` as the engine starts it: this environment, this command line."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # the job's S3 is the moto server
        patch.setattr(sys, "argv", argv)
        patch.setattr(PipesContext, "_instance", None)  # one Pipes session per process
        spark_features.main()


def assert_matches_polars(report: dict[str, Any], silver: pl.DataFrame) -> None:
    """The files the job reported hold what the polars engine computes from the same silver."""
    assert report["feature_spec_hash"] == SPEC.hash()
    assert report["files"]
    written = pl.concat([pl.read_parquet(f.removeprefix("file://")) for f in report["files"]])
    written = written.sort("device_id", "ts")
    expected = polars_features(silver, SPEC)
    assert written.height == report["rows"] == expected.height
    assert written.columns == [*ID_COLUMNS, *SPEC.names]
    assert_same_features(written, expected, SPEC.names)


class FakeRun:
    run_id = "1234abcd-rest"


class FakeContext:
    run = FakeRun()


# --- EMR steps on a transient EMR-on-EC2 cluster ---


def emr_compute(bucket: str, **overrides: Any) -> EmrStepsSparkCompute:
    settings: dict[str, Any] = {
        "region": REGION,
        "service_role": "EMR_DefaultRole_V2",
        "job_flow_role": "firepipe-emr-nodes",
        "entry_point": f"s3://{bucket}/code/spark_features.py",
        "pipes_bucket": bucket,
        "poll_interval_s": 0.01,
        "message_interval_s": 0.2,
    }
    return EmrStepsSparkCompute(**{**settings, **overrides})


@pytest.fixture
def emr(monkeypatch: pytest.MonkeyPatch, s3: Any) -> Iterator[Stubber]:
    """A stubbed EMR client (and the moto S3 client) behind every EMR steps resource."""
    client = boto3.client("emr", region_name=REGION)
    monkeypatch.setattr(EmrStepsSparkCompute, "_clients", lambda self: (client, s3))
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def cluster(state: str, code: str = "", message: str = "") -> dict[str, Any]:
    reason = {k: v for k, v in {"Code": code, "Message": message}.items() if v}
    return {
        "Cluster": {
            "Id": CLUSTER,
            "Name": "firepipe-spark-features-1234abcd",
            "Status": {"State": state, "StateChangeReason": reason},
            "LogUri": "s3n://logs/emr/",
            "ReleaseLabel": "emr-7.5.0",
        }
    }


def step(state: str, **failure: str) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if failure:
        status["FailureDetails"] = failure
    return {"Steps": [{"Id": STEP, "Name": STEP_NAME, "Status": status}]}


def expect_emr_run(emr: Stubber, *ends: dict[str, Any], steps: dict[str, Any]) -> None:
    emr.add_response("run_job_flow", {"JobFlowId": CLUSTER})
    for state in ends:
        emr.add_response("describe_cluster", state, {"ClusterId": CLUSTER})
    emr.add_response("list_steps", steps, {"ClusterId": CLUSTER})


def driver_env(params: dict[str, Any]) -> dict[str, str]:
    """The YARN application master's environment (where the driver runs in cluster mode) that
    the request sets: spark-defaults from Configurations, overridden by the step's --conf."""
    (defaults,) = [c for c in params["Configurations"] if c["Classification"] == "spark-defaults"]
    settings = dict(defaults["Properties"])
    args = params["Steps"][0]["HadoopJarStep"]["Args"]
    settings.update(a.split("=", 1) for p, a in itertools.pairwise(args) if p == "--conf")
    return {k.removeprefix(APP_MASTER_ENV): v for k, v in settings.items() if APP_MASTER_ENV in k}


@pytest.mark.aws
@pytest.mark.slow
def test_an_emr_step_computes_what_polars_computes_with_pipes_through_s3(
    spark: Any,
    emr: Stubber,
    s3: Any,
    pipes_bucket: str,
    moto_endpoint: str,
    silver_file: tuple[pl.DataFrame, str],
    tmp_path: Path,
) -> None:
    silver, path = silver_file
    requests: list[dict[str, Any]] = []

    def run_the_step(params: dict[str, Any], **_: Any) -> None:
        """What the cluster would do: its one step spark-submits the entry point."""
        requests.append(params)
        args = params["Steps"][0]["HadoopJarStep"]["Args"]
        run_entry_point(driver_env(params), [args[-1]], moto_endpoint)

    emr.client.meta.events.register("before-parameter-build.emr.RunJobFlow", run_the_step)
    expect_emr_run(
        emr,
        cluster("RUNNING"),
        cluster("TERMINATED", "ALL_STEPS_COMPLETED", "Steps completed"),
        steps=step("COMPLETED"),
    )
    resource = emr_compute(pipes_bucket, python=sys.executable)
    report = compute(
        resource, input_files=[path], spec=SPEC, output_dir=(tmp_path / "staged").as_uri()
    )

    assert_matches_polars(report, silver)
    assert report["engine"] == "spark-emr"
    assert report["emr_cluster_id"] == CLUSTER
    # What the Pipes client added to firepipe's request: its parameters in the environment of
    # every Spark process (the driver's among them), and the run's Dagster tags.
    (params,) = requests
    env = driver_env(params)
    assert set(env) == {
        "DAGSTER_PIPES_CONTEXT",
        "DAGSTER_PIPES_MESSAGES",
        "AWS_REGION",
        "PYSPARK_PYTHON",
    }
    assert (env["AWS_REGION"], env["PYSPARK_PYTHON"]) == (REGION, sys.executable)
    assert decode_param(env["DAGSTER_PIPES_CONTEXT"])["bucket"] == pipes_bucket
    assert decode_param(env["DAGSTER_PIPES_MESSAGES"])["key_prefix"].startswith("pipes/")
    exports = {
        c["Classification"]: c["Configurations"][0]["Properties"]
        for c in params["Configurations"]
        if c.get("Configurations")
    }
    assert set(exports) >= {"spark-env", "yarn-env"}
    assert exports["spark-env"]["DAGSTER_PIPES_CONTEXT"] == env["DAGSTER_PIPES_CONTEXT"]
    assert {t["Key"]: t["Value"] for t in params["Tags"]}["dagster/job"] == (
        "__ephemeral_asset_job__"
    )


@pytest.mark.aws
@pytest.mark.parametrize(
    ("ends", "steps", "reason"),
    [
        (
            cluster("TERMINATED_WITH_ERRORS", "STEP_FAILURE", "Shut down as step failed"),
            step(
                "FAILED",
                Reason="Unknown Error.",
                Message="Exception in thread main: SparkException",
                LogFile="s3://logs/emr/j-2AXXXXXXGAPLF/steps/s-3BXXXXXXL0GGD/",
            ),
            f"EMR cluster {CLUSTER} ended TERMINATED_WITH_ERRORS (STEP_FAILURE: Shut down as "
            f"step failed); step {STEP} ({STEP_NAME}) FAILED: Unknown Error.: Exception in "
            f"thread main: SparkException (log s3://logs/emr/{CLUSTER}/steps/{STEP}/)",
        ),
        (
            cluster("TERMINATED_WITH_ERRORS", "BOOTSTRAP_FAILURE", "On the master instance "),
            step("CANCELLED"),
            f"ended TERMINATED_WITH_ERRORS (BOOTSTRAP_FAILURE: On the master instance ); "
            f"step {STEP} ({STEP_NAME}) CANCELLED",
        ),
        # A step that failed with ActionOnFailure CONTINUE leaves a cluster that ended well.
        (
            cluster("TERMINATED", "ALL_STEPS_COMPLETED", "Steps completed"),
            step("FAILED", Reason="Step exited with code 1"),
            f"ended TERMINATED (ALL_STEPS_COMPLETED: Steps completed); step {STEP} "
            f"({STEP_NAME}) FAILED: Step exited with code 1",
        ),
    ],
    ids=["step-failure", "bootstrap-failure", "failed-step-of-a-finished-cluster"],
)
def test_a_failed_emr_step_raises_an_error_with_emrs_reasons(
    emr: Stubber, pipes_bucket: str, ends: dict[str, Any], steps: dict[str, Any], reason: str
) -> None:
    expect_emr_run(emr, ends, steps=steps)
    with pytest.raises(SparkComputeError) as raised:
        compute(
            emr_compute(pipes_bucket),
            input_files=["s3://lake/silver/a.parquet"],
            spec=SPEC,
            output_dir="s3://lake/gold/staged/run",
        )
    assert reason in str(raised.value)


@pytest.mark.aws
def test_an_interrupted_emr_run_terminates_its_cluster(
    emr: Stubber, pipes_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wait is firepipe's; dagster-aws's run() catches the interrupt and terminates the
    # cluster (PipesEMRClient, forward_termination on by default).
    emr.add_response("run_job_flow", {"JobFlowId": CLUSTER})
    emr.add_response("describe_cluster", cluster("STARTING"), {"ClusterId": CLUSTER})
    emr.add_response("terminate_job_flows", {}, {"JobFlowIds": [CLUSTER]})
    monkeypatch.setattr(spark_emr, "time", InterruptingClock())
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        compute(
            emr_compute(pipes_bucket),
            input_files=["s3://lake/silver/a.parquet"],
            spec=SPEC,
            output_dir="s3://lake/gold/staged/run",
        )
    # The emr fixture then requires every stubbed call made, TerminateJobFlows among them.


@pytest.mark.aws
def test_the_emr_request_starts_a_transient_cluster_with_the_feature_step(
    moto_endpoint: str, aws_credentials: None
) -> None:
    resource = emr_compute(
        "pipes",
        python="./environment/bin/python",
        archives="s3://code/firepipe-venv.tar.gz#environment",
        py_files="s3://code/firepipe.zip",
        spark_conf={"spark.driver.extraJavaOptions": "-Xss4m -Dx=1"},  # spaces pass in Args
        core_instance_count=3,
        subnet_id="subnet-0abc",
        log_uri="s3://logs/emr/",
        bootstrap_script="s3://code/install-firepipe.sh",
        bootstrap_args=["firepipe-1.0-py3-none-any.whl"],
    )
    params = resource.run_job_flow_params(FakeContext())  # type: ignore[arg-type]
    assert params["Steps"][0]["HadoopJarStep"]["Args"] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--conf",
        f"spark.yarn.appMasterEnv.AWS_REGION={REGION}",
        "--conf",
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python",
        "--conf",
        "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
        "--conf",
        "spark.driver.extraJavaOptions=-Xss4m -Dx=1",
        "--py-files",
        "s3://code/firepipe.zip",
        "--archives",
        "s3://code/firepipe-venv.tar.gz#environment",
        "s3://pipes/code/spark_features.py",
    ]
    assert "Configurations" not in params  # the Pipes client's alone (see step_args)

    # EMR (moto) takes the request as it is and keeps what was asked.
    emr = boto3.client("emr", endpoint_url=moto_endpoint, region_name=REGION)
    cluster_id = emr.run_job_flow(**params)["JobFlowId"]
    described = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert described["Name"] == "firepipe-spark-features-1234abcd"
    assert described["ReleaseLabel"] == "emr-7.5.0"
    assert described["AutoTerminate"] is True  # KeepJobFlowAliveWhenNoSteps=False
    assert described["TerminationProtected"] is False
    assert described["ServiceRole"] == "EMR_DefaultRole_V2"
    assert described["Ec2InstanceAttributes"]["IamInstanceProfile"] == "firepipe-emr-nodes"
    assert described["Ec2InstanceAttributes"]["Ec2SubnetId"] == "subnet-0abc"
    assert described["LogUri"] == "s3://logs/emr/"
    assert [a["Name"] for a in described["Applications"]] == ["Spark"]
    groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    assert sorted((g["InstanceGroupType"], g["RequestedInstanceCount"]) for g in groups) == [
        ("CORE", 3),
        ("MASTER", 1),
    ]
    (listed,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert listed["Name"] == STEP_NAME
    assert listed["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert listed["Config"]["Jar"] == "command-runner.jar"
    assert listed["Config"]["Args"] == params["Steps"][0]["HadoopJarStep"]["Args"]
    (action,) = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert action["ScriptPath"] == "s3://code/install-firepipe.sh"
    assert action["Args"] == ["firepipe-1.0-py3-none-any.whl"]


def test_an_emr_release_without_spark_3_5_is_refused_before_any_cluster() -> None:
    with pytest.raises(ValueError, match=r"'emr-6\.15\.0' is not an EMR 7\.x release"):
        emr_compute("pipes", release_label="emr-6.15.0").run_job_flow_params(
            FakeContext()  # type: ignore[arg-type]
        )
    single = emr_compute("pipes", core_instance_count=0).run_job_flow_params(
        FakeContext()  # type: ignore[arg-type]
    )
    assert [g["InstanceRole"] for g in single["Instances"]["InstanceGroups"]] == ["MASTER"]
    assert "BootstrapActions" not in single
    assert "Ec2SubnetId" not in single["Instances"]


# --- AWS Glue 5 job runs ---


def glue_compute(bucket: str, **overrides: Any) -> GlueSparkCompute:
    settings: dict[str, Any] = {
        "region": REGION,
        "job_name": JOB,
        "pipes_bucket": bucket,
        "poll_interval_s": 0.01,
        "message_interval_s": 0.2,
    }
    return GlueSparkCompute(**{**settings, **overrides})


def use_glue(monkeypatch: pytest.MonkeyPatch, glue: Any, s3: Any) -> None:
    monkeypatch.setattr(GlueSparkCompute, "_clients", lambda self: (glue, s3))


@pytest.mark.aws
@pytest.mark.slow
def test_a_glue_job_run_computes_what_polars_computes_with_pipes_through_s3(
    spark: Any,
    s3: Any,
    pipes_bucket: str,
    moto_endpoint: str,
    silver_file: tuple[pl.DataFrame, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silver, path = silver_file
    glue = boto3.client("glue", endpoint_url=moto_endpoint, region_name=REGION)
    # The job as the CDK app defines it: Glue 5.0 running the entry point's file.
    glue.create_job(
        Name=JOB,
        Role=ROLE,
        GlueVersion="5.0",
        Command={
            "Name": "glueetl",
            "ScriptLocation": f"s3://{pipes_bucket}/code/spark_features.py",
            "PythonVersion": "3",
        },
        DefaultArguments={"--additional-python-modules": "s3://code/firepipe-1.0.whl"},
        WorkerType="G.1X",
        NumberOfWorkers=2,
    )
    use_glue(monkeypatch, glue, s3)

    def run_the_job(params: dict[str, Any], **_: Any) -> None:
        """What Glue would do: run the job's script with its arguments on the command line
        (Glue adds its own, such as --JOB_ID, around them)."""
        arguments = [token for pair in params["Arguments"].items() for token in pair]
        argv = ["spark_features.py", "--JOB_ID", "j_0123", *arguments, "--TempDir", "s3://t/"]
        run_entry_point({}, argv, moto_endpoint)

    glue.meta.events.register("before-parameter-build.glue.StartJobRun", run_the_job)
    resource = glue_compute(
        pipes_bucket,
        worker_type="G.2X",
        number_of_workers=4,
        extra_py_files=["s3://code/extra.zip"],
        timeout_minutes=60,
    )
    report = compute(
        resource, input_files=[path], spec=SPEC, output_dir=(tmp_path / "staged").as_uri()
    )

    assert_matches_polars(report, silver)
    assert report["engine"] == "spark-glue"
    assert report["glue_job_name"] == JOB
    # The run as Glue (moto) recorded it: the run's worker settings, and its arguments (Pipes'
    # among them) over the job's default arguments.
    run = glue.get_job_run(JobName=JOB, RunId=report["glue_job_run_id"])["JobRun"]
    assert run["JobRunState"] == "SUCCEEDED"
    assert (run["WorkerType"], run["NumberOfWorkers"], run["Timeout"]) == ("G.2X", 4, 60)
    arguments = run["Arguments"]
    assert set(arguments) == {
        "--additional-python-modules",
        "--extra-py-files",
        "--dagster-pipes-context",
        "--dagster-pipes-messages",
    }
    assert arguments["--additional-python-modules"] == "s3://code/firepipe-1.0.whl"
    assert arguments["--extra-py-files"] == "s3://code/extra.zip"
    assert decode_param(arguments["--dagster-pipes-context"])["bucket"] == pipes_bucket
    assert decode_param(arguments["--dagster-pipes-messages"])["key_prefix"].startswith("pipes/")


@pytest.mark.aws
@pytest.mark.parametrize("state", ["FAILED", "EXPIRED"])
def test_a_failed_glue_job_run_raises_an_error_with_glues_reason(
    s3: Any, pipes_bucket: str, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    glue = boto3.client("glue", region_name=REGION)
    use_glue(monkeypatch, glue, s3)
    reason = "An error occurred while calling o104.parquet. Path does not exist: s3://lake/a"
    ids = {"JobName": JOB, "RunId": "jr_0123"}
    with Stubber(glue) as stubbed:
        stubbed.add_response("start_job_run", {"JobRunId": "jr_0123"})
        stubbed.add_response(
            "get_job_run", {"JobRun": {"Id": "jr_0123", "JobRunState": "RUNNING"}}, ids
        )
        stubbed.add_response(
            "get_job_run", {"JobRun": {"Id": "jr_0123", "JobRunState": "RUNNING"}}, ids
        )
        ended = {"Id": "jr_0123", "JobName": JOB, "JobRunState": state, "ErrorMessage": reason}
        stubbed.add_response("get_job_run", {"JobRun": ended}, ids)
        with pytest.raises(
            SparkComputeError, match=f"Glue job {JOB} run jr_0123 ended {state}: An error occurred"
        ):
            compute(
                glue_compute(pipes_bucket),
                input_files=["s3://lake/silver/a.parquet"],
                spec=SPEC,
                output_dir="s3://lake/gold/staged/run",
            )
        stubbed.assert_no_pending_responses()


@pytest.mark.aws
def test_an_interrupted_glue_run_is_stopped(
    s3: Any, pipes_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    glue = boto3.client("glue", region_name=REGION)
    use_glue(monkeypatch, glue, s3)
    monkeypatch.setattr(spark_glue, "time", InterruptingClock())
    ids = {"JobName": JOB, "RunId": "jr_0123"}
    running = {"JobRun": {"Id": "jr_0123", "JobName": JOB, "JobRunState": "RUNNING"}}
    with Stubber(glue) as stubbed:
        stubbed.add_response("start_job_run", {"JobRunId": "jr_0123"})
        stubbed.add_response("get_job_run", running, ids)  # dagster-aws's look after starting
        stubbed.add_response("get_job_run", running, ids)  # the first poll of firepipe's wait
        stubbed.add_response(
            "batch_stop_job_run",
            {"SuccessfulSubmissions": [{"JobName": JOB, "JobRunId": "jr_0123"}], "Errors": []},
            {"JobName": JOB, "JobRunIds": ["jr_0123"]},
        )
        with pytest.raises(dg.DagsterExecutionInterruptedError):
            compute(
                glue_compute(pipes_bucket),
                input_files=["s3://lake/silver/a.parquet"],
                spec=SPEC,
                output_dir="s3://lake/gold/staged/run",
            )
        stubbed.assert_no_pending_responses()  # BatchStopJobRun was called, for this run


def test_the_glue_request_carries_the_runs_settings_over_the_jobs() -> None:
    params = glue_compute(
        "pipes",
        additional_python_modules=["s3://code/firepipe-1.0.whl", "pyyaml==6.0.2"],
        extra_py_files=["s3://code/a.zip", "s3://code/b.py"],
    ).start_job_run_params()
    assert params == {
        "JobName": JOB,
        "Arguments": {
            "--extra-py-files": "s3://code/a.zip,s3://code/b.py",
            "--additional-python-modules": "s3://code/firepipe-1.0.whl,pyyaml==6.0.2",
        },
    }
    with pytest.raises(ValueError, match="worker type and a number of workers together"):
        glue_compute("pipes", worker_type="G.1X").start_job_run_params()
