"""firepipe's CDK app: every environment's stacks, synthesised offline into infra/cdk.out/
(`make synth`), with cdk-nag's AwsSolutions checks failing the synthesis on an error."""

from pathlib import Path

from firepipe_infra.stacks import build_app

app, _ = build_app(Path(__file__).resolve().parent / "cdk.out")
app.synth()
