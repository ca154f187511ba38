"""Gold: how far the calibrated flaming-fire physics is from the real NIST fires."""

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from firepipe import names, settings
from firepipe.core import plots
from firepipe.core.simulation import calibration
from firepipe.core.simulation.calibration import Calibration
from firepipe.defs.metadata import markdown_table, png_markdown

ASSET_KEY = dg.AssetKey(names.GENERATOR_VALIDATION)


class GeneratorValidationConfig(dg.Config):
    """Where the NIST tests are; empty means FIREPIPE_NIST_DATA_DIR, else the NIST tests
    packaged with firepipe."""

    data_dir: str = ""


def _metadata(result: Calibration, png: bytes) -> dict[str, Any]:
    columns = ["test", "station", "channel", "nrmse", "time_to_4_3_error_s"]
    metadata: dict[str, Any] = {
        "errors": markdown_table(result.errors.select(columns)),
        "fitted_parameters": markdown_table(calibration.parameter_frame(result.fits)),
        "plot": png_markdown(png, "simulated (dashed) vs measured (solid)"),
        "tests": ", ".join(result.ranges.tests),
        "channels_left_out": markdown_table(
            result.screening.filter(~pl.col("usable")).drop("usable")
        ),
    }
    for name, value in result.summary().items():
        if value is not None:
            metadata[name] = dg.MetadataValue.float(value)
    return metadata


@dg.asset(
    key=ASSET_KEY,
    group_name=names.group_name(names.GENERATOR_VALIDATION),
    kinds={"polars", "iceberg"},
)
def generator_validation(
    context: dg.AssetExecutionContext, config: GeneratorValidationConfig
) -> dg.Output[pl.DataFrame]:
    """Error of the simulated flaming-fire curves against the real NIST home fires.

    Fits the fire physics (t-squared growth, peak, yields, station distances and delays) to
    every NIST test, then reports per test, station and channel the normalised RMSE of the
    simulated curve and, for obscuration, the error in the time to reach 4.3 %/m.
    """
    folder = settings.nist_data_dir() if not config.data_dir else Path(config.data_dir)
    result = calibration.calibrate(folder)
    png = plots.simulated_vs_measured_png(result.curves)
    context.log.info(
        f"NIST validation: {len(result.fits)} tests, "
        f"{result.screening.filter(~pl.col('usable')).height} measured channels left out"
    )
    return dg.Output(result.errors, metadata=_metadata(result, png))
