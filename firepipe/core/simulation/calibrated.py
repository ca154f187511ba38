"""The fitted flaming-fire ranges as the scenario catalog reads them: a small JSON file written by
`firepipe calibrate` (calibration.py). Kept apart from the fit so that reading the catalog does
not import scipy and the NIST adapter (about a second at every generator start).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

CALIBRATED_RANGES_PATH = Path(__file__).with_name("calibrated_flaming.json")


@dataclass(frozen=True)
class CalibratedRanges:
    """Ranges of the fitted flaming parameters over the NIST tests, for the scenario catalog.

    Each range is (low, high). Field names are a contract with the scenario catalog.
    """

    alpha_kw_per_s2: tuple[float, float]
    peak_hrr_kw: tuple[float, float]
    soot_yield_g_per_g: tuple[float, float]
    co_yield_g_per_g: tuple[float, float]
    co2_yield_g_per_g: tuple[float, float]
    heat_of_combustion_kj_per_g: float
    data_folder: str
    tests: tuple[str, ...]
    fitted_on: str  # ISO date

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CalibratedRanges:
        raw = json.loads(text)
        names = {f.name for f in fields(cls)}
        if set(raw) != names:
            raise ValueError(f"calibrated ranges need exactly {sorted(names)}, got {sorted(raw)}")
        ranges = {k: _range(k, raw[k]) for k in RANGE_FIELDS}
        return cls(
            **ranges,
            heat_of_combustion_kj_per_g=float(raw["heat_of_combustion_kj_per_g"]),
            data_folder=str(raw["data_folder"]),
            tests=tuple(str(t) for t in raw["tests"]),
            fitted_on=str(raw["fitted_on"]),
        )


RANGE_FIELDS = (
    "alpha_kw_per_s2",
    "peak_hrr_kw",
    "soot_yield_g_per_g",
    "co_yield_g_per_g",
    "co2_yield_g_per_g",
)


def _range(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{name} must be a [low, high] pair, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not low <= high:
        raise ValueError(f"{name}: low {low} is above high {high}")
    return (low, high)


def load_calibrated_ranges(path: Path = CALIBRATED_RANGES_PATH) -> CalibratedRanges:
    """The committed calibration (or another file written by `firepipe calibrate`)."""
    if not path.is_file():
        raise FileNotFoundError(f"no calibrated ranges at {path}: run `firepipe calibrate`")
    return CalibratedRanges.from_json(path.read_text())


def write_calibrated_ranges(ranges: CalibratedRanges, path: Path = CALIBRATED_RANGES_PATH) -> None:
    path.write_text(ranges.to_json())
