"""Commands about the fire detector: evaluate-real, promote, and calibrate (the simulator's
fit to the NIST fires)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from firepipe import names, settings
from firepipe.cli.context import model_registry

# The folder of the NIST tests: calibrate, evaluate-real.
NIST_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of NIST_Smoke_Alarms_*.csv tests and Activation_Times.csv "
    "[default: $FIREPIPE_NIST_DATA_DIR, else the NIST tests packaged with firepipe].",
)


@click.command()
@NIST_DATA_DIR
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the ranges [default: the committed calibrated_flaming.json].",
)
def calibrate(data_dir: Path | None, out: Path | None) -> None:
    """Refit the flaming-fire physics to the NIST fires and write the calibrated ranges."""
    from firepipe.core.realdata.nist import NistDataError
    from firepipe.core.simulation import calibrated, calibration

    try:
        folder = data_dir or settings.nist_data_dir()
        result = calibration.calibrate(folder)
    except (settings.SettingsError, NistDataError) as e:
        raise click.ClickException(str(e)) from e
    target = out or calibrated.CALIBRATED_RANGES_PATH
    calibrated.write_calibrated_ranges(result.ranges, target)
    click.echo(result.ranges.to_json(), nl=False)
    for name, value in result.summary().items():
        click.echo(f"{name:<46}{'n/a' if value is None else f'{value:.3f}'}")
    click.echo(f"wrote {target}")


@click.command("evaluate-real")
@NIST_DATA_DIR
@click.option(
    "--model",
    "model_uri",
    default=None,
    help="models:/NAME@ALIAS, models:/NAME/VERSION or a saved detector folder "
    "[default: the current champion].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--baseline", is_flag=True, help="Also replay the fixed-threshold reference (smoke, heat)."
)
@click.option(
    "--warm-up-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds of each station's quiet start (the median of its first 10 s) replayed before "
    "ignition; 0: the records as they are [default: 300].",
)
def evaluate_real(
    data_dir: Path | None,
    model_uri: str | None,
    as_json: bool,
    baseline: bool,
    warm_up_s: float | None,
) -> None:
    """Replay every NIST test station by station through the model, causally, and compare its
    alarm with the real smoke alarms' (Activation_Times.csv). The model's own feature spec
    says which features to compute."""
    from firepipe.core.realdata.nist import NistDataError
    from firepipe.core.training import real_fires
    from firepipe.resources.registry import CHAMPION_ALIAS

    warm_up = real_fires.WARM_UP_S if warm_up_s is None else warm_up_s
    if not 0 <= warm_up <= real_fires.MAX_WARM_UP_S:  # click's FloatRange lets NaN through
        raise click.BadParameter(
            f"must be in [0, {real_fires.MAX_WARM_UP_S:g}] seconds", param_hint="--warm-up-s"
        )
    try:
        folder = data_dir or settings.nist_data_dir()
    except settings.SettingsError as e:
        raise click.ClickException(str(e)) from e
    registry = model_registry()
    uri = model_uri or f"models:/{names.MODEL_NAME}@{CHAMPION_ALIAS}"
    try:
        detector = registry.load_detector(uri)
    except Exception as e:
        hint = "" if model_uri else " (no champion yet? `make run` trains and promotes one)"
        raise click.ClickException(f"cannot load the model {uri}{hint}: {e}") from e
    try:  # the replay of ml/evaluation
        replay = real_fires.replay_nist(folder, detector, warm_up)
    except NistDataError as e:
        raise click.ClickException(str(e)) from e
    except ValueError as e:  # a model saved without its feature spec
        raise click.ClickException(f"model {uri}: {e}") from e
    report, reference = replay.model, replay.baseline if baseline else None
    if as_json:
        out = {"model": uri, **report.as_json()}
        if reference is not None:
            out["fixed_threshold_baseline"] = reference.summary
        click.echo(json.dumps(out, default=str))
        return
    click.echo(f"model: {uri}")
    click.echo(report.table())
    if reference is not None:
        click.echo("\nfixed-threshold reference (smoke OD +0.02 /m or temperature +5 degC):")
        click.echo("\n".join(f"{k}: {v}" for k, v in reference.summary.items()))


@click.command()
@click.argument("version", type=int)
@click.option("--reason", required=True, help="Why, recorded on the version.")
def promote(version: int, reason: str) -> None:
    """Make VERSION of the fire detector the champion by hand. For when ml/champion cannot
    compare a candidate with the champion (their NIST replays or feature specs differ)."""
    from firepipe.core.training.promotion import ApprovalError

    registry = model_registry()
    try:
        registry.promote(names.MODEL_NAME, version, f"by hand: {reason}")
    except (ApprovalError, KeyError) as e:
        # A KeyError's str() quotes its message; its argument is the message itself.
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise click.ClickException(str(message)) from e
    click.echo(f"{names.MODEL_NAME} version {version} is the champion")
