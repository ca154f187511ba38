"""firepipe's CDK app: every environment's stacks, synthesised offline into infra/cdk.out/
(`make synth`, or `cdk synth` from infra/ through cdk.json), with cdk-nag's AwsSolutions checks
failing the synthesis on an error. The feature flags are cdk.json's either way (new_app)."""

import os
from pathlib import Path

from firepipe_infra.stacks import build_app

# The CDK CLI names its output folder (`cdk synth -o`) in CDK_OUTDIR and reads it from there.
outdir = os.environ.get("CDK_OUTDIR") or Path(__file__).resolve().parent / "cdk.out"
app, _ = build_app(Path(outdir))
app.synth()
