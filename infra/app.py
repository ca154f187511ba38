"""firepipe's CDK app: every environment's stacks (or, with `-c pipeline=true`, the delivery
pipeline that deploys them), synthesised offline into infra/cdk.out/
(`make synth`, or `cdk synth` from infra/ through cdk.json), with cdk-nag's AwsSolutions checks
failing the synthesis on an error. The feature flags are cdk.json's either way (new_app)."""

import os
from pathlib import Path

from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.delivery import DELIVERY, PIPELINE_CONTEXT
from firepipe_infra.pipeline import DeliveryPipeline
from firepipe_infra.stacks import build_environments, new_app

# The CDK CLI names its output folder (`cdk synth -o`) in CDK_OUTDIR and reads it from there.
outdir = Path(os.environ.get("CDK_OUTDIR") or Path(__file__).resolve().parent / "cdk.out")
app = new_app(outdir)
if app.node.try_get_context(PIPELINE_CONTEXT) == "true":
    # `-c pipeline=true`: the delivery pipeline's stack, whose stages hold every environment.
    DeliveryPipeline(app, delivery=DELIVERY, environments=ENVIRONMENTS)
else:
    build_environments(app)
app.synth()
