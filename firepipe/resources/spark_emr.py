"""Spark features as a step on a transient EMR-on-EC2 cluster (dagster-aws's `PipesEMRClient`),
chosen with `FIREPIPE_SPARK_ENGINE=emr`.

Each run starts its own cluster with RunJobFlow, the feature step in the request and
`KeepJobFlowAliveWhenNoSteps=False`, so the cluster ends with its step and none stands between
runs. The step spark-submits firepipe/services/spark_features.py from S3 in YARN cluster mode:
the driver runs in YARN's application master, whose environment the Pipes client sets
(`spark.yarn.appMasterEnv.DAGSTER_PIPES_*` in spark-defaults) and where `--archives` are
unpacked as for the executors. EMR 7.x runs Amazon Linux 2023 with Python 3.9, so a bootstrap
action (or a venv archive) must give the nodes Python 3.11 with firepipe.
"""

import re
import time
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.resources.spark import SparkComputeError, SparkSubmitCompute, metadata_text

STEP_NAME = "firepipe-spark-features"
# EMR 7.x releases ship Spark 3.5 (EMR release guide, 7.x application versions), the oldest
# Spark the entry point is written for (see firepipe/services/spark_features.py).
_EMR_7 = re.compile(r"^emr-7\.\d+\.\d+$")
_CLUSTER_ENDED = {"TERMINATED", "TERMINATED_WITH_ERRORS"}


class EmrStepsSparkCompute(SparkSubmitCompute):
    """The entry point as the one step of a transient EMR-on-EC2 cluster; Pipes through S3."""

    release_label: str = Field(default="emr-7.5.0", description="an EMR 7.x release (Spark 3.5)")
    primary_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = Field(default=2, ge=0, description="0: a single-node cluster")
    service_role: str = Field(description="EMR's service role (name or ARN)")
    job_flow_role: str = Field(description="the instance profile of the cluster's EC2 nodes")
    subnet_id: str | None = Field(default=None, description="None: the default VPC's")
    security_configuration: str | None = Field(
        default=None, description="name of an EMR security configuration (encryption, auth)"
    )
    bootstrap_script: str | None = Field(
        default=None,
        description="s3:// script every node runs before Spark starts, e.g. one that installs "
        "Python 3.11 and the firepipe wheel",
    )
    bootstrap_args: list[str] = Field(default_factory=list)
    emr_endpoint_url: str | None = None

    def _clients(self) -> tuple[Any, Any]:
        import boto3

        emr = boto3.client("emr", region_name=self.region, endpoint_url=self.emr_endpoint_url)
        return emr, self._s3()

    def step_args(self) -> list[str]:
        """The step's spark-submit command line (command-runner.jar runs it)."""
        conf = {
            # The Pipes S3 client in the driver: the bucket's region said explicitly.
            "spark.yarn.appMasterEnv.AWS_REGION": self.region,
        }
        if self.python:
            conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = self.python
            conf["spark.executorEnv.PYSPARK_PYTHON"] = self.python
        conf.update(self.spark_conf)
        # On the command line, not in Configurations: dagster-aws merges its Pipes variables
        # into a spark-defaults classification that is already there by dropping one side's
        # properties (add_emr_configuration in dagster_aws/pipes/clients/utils.py).
        options = [token for k, v in conf.items() for token in ("--conf", f"{k}={v}")]
        packaging = [token for pair in self.packaging_options() for token in pair]
        return ["spark-submit", "--deploy-mode", "cluster", *options, *packaging, self.entry_point]

    def run_job_flow_params(self, context: dg.AssetExecutionContext) -> dict[str, Any]:
        """The RunJobFlow request: the cluster, its one step, and nothing left running."""
        if not _EMR_7.match(self.release_label):
            raise ValueError(
                f"release_label {self.release_label!r} is not an EMR 7.x release (emr-7.N.N), "
                f"whose Spark 3.5 the features entry point is written for"
            )
        groups = [_group("primary", "MASTER", self.primary_instance_type, 1)]
        if self.core_instance_count:
            groups.append(_group("core", "CORE", self.core_instance_type, self.core_instance_count))
        instances: dict[str, Any] = {
            "InstanceGroups": groups,
            "KeepJobFlowAliveWhenNoSteps": False,
            "TerminationProtected": False,
        }
        if self.subnet_id:
            instances["Ec2SubnetId"] = self.subnet_id
        params: dict[str, Any] = {
            "Name": f"{STEP_NAME}-{context.run.run_id[:8]}",
            "ReleaseLabel": self.release_label,
            "Applications": [{"Name": "Spark"}],
            "Instances": instances,
            "Steps": [
                {
                    "Name": STEP_NAME,
                    "ActionOnFailure": "TERMINATE_CLUSTER",
                    "HadoopJarStep": {"Jar": "command-runner.jar", "Args": self.step_args()},
                }
            ],
            "ServiceRole": self.service_role,
            "JobFlowRole": self.job_flow_role,
            "VisibleToAllUsers": True,
        }
        if self.log_uri:
            params["LogUri"] = self.log_uri
        if self.security_configuration:
            params["SecurityConfiguration"] = self.security_configuration
        if self.bootstrap_script:
            action = {"Path": self.bootstrap_script, "Args": list(self.bootstrap_args)}
            params["BootstrapActions"] = [{"Name": "firepipe", "ScriptBootstrapAction": action}]
        return params

    def _run(
        self, context: dg.AssetExecutionContext, extras: dict[str, Any]
    ) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
        emr, s3 = self._clients()
        client = _emr_client(emr, self._pipes_channels(s3), self.poll_interval_s)
        invocation = client.run(
            context=context, run_job_flow_params=self.run_job_flow_params(context), extras=extras
        )
        cluster_id = metadata_text(invocation.metadata.get("AWS EMR Cluster ID"))
        return invocation, {"engine": "spark-emr", "emr_cluster_id": cluster_id}


def _group(name: str, role: str, instance_type: str, count: int) -> dict[str, Any]:
    return {
        "Name": name,
        "InstanceRole": role,
        "InstanceType": instance_type,
        "InstanceCount": count,
        "Market": "ON_DEMAND",
    }


def step_failure(cluster: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    """Why the run failed, in EMR's words: the cluster's end and each unfinished step's."""
    status = cluster["Status"]
    reason = status.get("StateChangeReason") or {}
    said = ": ".join(str(reason[k]) for k in ("Code", "Message") if reason.get(k))
    text = f"EMR cluster {cluster['Id']} ended {status['State']}" + (f" ({said})" if said else "")
    if not steps:
        return f"{text}; it ran no step"
    for step in steps:
        step_status = step["Status"]
        if step_status["State"] == "COMPLETED":
            continue
        details = step_status.get("FailureDetails") or {}
        why = ": ".join(str(details[k]) for k in ("Reason", "Message") if details.get(k))
        text += f"; step {step['Id']} ({step.get('Name')}) {step_status['State']}"
        text += f": {why}" if why else ""
        text += f" (log {details['LogFile']})" if details.get("LogFile") else ""
    return text


def _emr_client(
    emr: Any,
    channels: tuple[dg.PipesContextInjector, dg.PipesMessageReader],
    poll_interval_s: float,
) -> dg.PipesClient:
    """dagster-aws's EMR client with the Pipes context and messages in S3, waiting its own way.

    The stock wait uses botocore's waiters: `cluster_running` fails when a short cluster is
    already TERMINATING at its first look, `cluster_terminated` gives up after 30 minutes, and
    the outcome is judged by the cluster alone. This one polls until the cluster has ended and
    then requires every step COMPLETED, naming the cluster, the step and EMR's reasons if not.
    Step logs reach S3 only in EMR's periodic uploads, after the step: the stock readers of
    them are left out, since the entry point's own logs arrive as Pipes messages meanwhile.
    """
    from dagster_aws.pipes import PipesEMRClient

    class PipesEMRStepsClient(PipesEMRClient):
        def _add_log_readers(self, context: Any, response: Any) -> None:
            return None

        def _read_application_logs(self, context: Any, session: Any, response: Any) -> None:
            return None

        def _wait_for_completion(self, context: Any, response: Any) -> Any:
            cluster_id = response["JobFlowId"]
            state = None
            while True:
                cluster = self.client.describe_cluster(ClusterId=cluster_id)["Cluster"]
                if cluster["Status"]["State"] != state:
                    state = cluster["Status"]["State"]
                    context.log.info(f"[pipes] EMR cluster {cluster_id} is {state}")
                if state in _CLUSTER_ENDED:
                    break
                time.sleep(poll_interval_s)
            steps = self.client.list_steps(ClusterId=cluster_id)["Steps"]
            if not steps or any(s["Status"]["State"] != "COMPLETED" for s in steps):
                raise SparkComputeError(step_failure(cluster, steps))
            return {"Cluster": cluster}

    injector, reader = channels
    return PipesEMRStepsClient(client=emr, context_injector=injector, message_reader=reader)
