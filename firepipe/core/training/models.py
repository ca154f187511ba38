"""Fire detectors: a LightGBM model, or a logistic-regression reference, behind one small class
that scores gold feature rows (nulls allowed: a device lacks channels), saves as text (no
pickle) and loads back to bit-identical scores. A detector carries the feature spec its inputs
were computed with (`feature_spec.json` beside its model), so whoever replays it computes the
same features; one saved before detectors carried it loads with none.

Both algorithms train with balanced class weights, so a score means the same for both: fires are
a minority of readings and an unweighted model would learn to say "no fire" cheaply. On top of
that, a fire's first two minutes weigh three times (`early_fire_weights`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.metrics import average_precision_score  # type: ignore[import-untyped]

from firepipe.core.features.spec import FeatureSpec
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.training.dataset import LABEL, SECONDS_SINCE_IGNITION, parse_profile

Params = dict[str, float | int | str]
Matrix = npt.NDArray[np.float64]

ALGORITHMS: tuple[str, ...] = ("lightgbm", "logistic")
MONOTONE_ALGORITHMS: tuple[str, ...] = ("lightgbm",)  # those that take monotone constraints
DETECTOR_FILE = "detector.json"
LIGHTGBM_MODEL_FILE = "model.txt"
FEATURE_SPEC_FILE = "feature_spec.json"  # FeatureSpec.to_json(), beside detector.json
FORMAT_VERSION = 2  # bumped when detector.json's layout changes
# 1: one operating point; 2 adds one per channel profile (a format-1 file loads with none).
READABLE_FORMATS = (1, 2)
# Below this many rows LightGBM predicts on one thread (0.07 ms against 0.38 ms for one row
# with its default threads, measured here).
SINGLE_THREAD_ROWS = 1_000

# LightGBM: the library's defaults (Parameters page: learning_rate 0.1, num_leaves 31,
# min_data_in_leaf 20, feature_fraction 1, lambda_l2 0) changed where 1 Hz sensor data needs it.
# Neighbouring seconds are near copies, so a leaf needs ~100 s of readings to stand for more
# than one moment of one device; row and feature subsampling (0.8, the LightGBM tuning guide's
# "deal with over-fitting" advice) and a slower rate with more rounds for the same reason.
# num_threads is fixed: LightGBM's histogram sums, hence the trees, depend on the thread count,
# and its `deterministic` flag promises the same model only for the same parameters.
# Weighting, for both algorithms. A detector is worth its first minutes: the label weighs every
# burning second alike, so a fire's obvious later minutes outweigh the faint start that decides
# whether it beats a smoke alarm. Fire readings in the first `early_fire_s` seconds after
# ignition weigh `early_fire_weight` times (1: no extra weight). Measured on make run's training
# set (README, "The detector"): 2-5 times over 60-300 s all moved the NIST figures up by 7-14
# points at the median alarm; 3 times over 120 s, the middle of that grid, is the default.
_WEIGHTING_DEFAULTS: Params = {"early_fire_weight": 3.0, "early_fire_s": 120.0}
_LIGHTGBM_DEFAULTS: Params = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_boost_round": 300,
    "early_stopping_rounds": 30,  # 0: no early stopping; needs a validation frame
    "num_threads": 4,
    **_WEIGHTING_DEFAULTS,
}
# Logistic regression: scikit-learn's C (inverse L2 strength, its default 1.0); lbfgs stops at
# 100 iterations by default, too few for ~60 standardised features plus indicators.
_LOGISTIC_DEFAULTS: Params = {"C": 1.0, "max_iter": 1000, **_WEIGHTING_DEFAULTS}
_DEFAULTS: dict[str, Params] = {"lightgbm": _LIGHTGBM_DEFAULTS, "logistic": _LOGISTIC_DEFAULTS}


def _require_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def default_params(algorithm: str) -> Params:
    _require_algorithm(algorithm)
    return dict(_DEFAULTS[algorithm])


def resolve_params(algorithm: str, params: dict[str, Any] | None) -> Params:
    """The defaults overridden by `params`, each value of its default's type (an int where the
    default is an int; a float accepts an int). Unknown names are refused."""
    merged = default_params(algorithm)
    unknown = sorted(set(params or {}) - set(merged))
    if unknown:
        raise ValueError(f"{algorithm} has no parameter(s) {unknown}; known: {sorted(merged)}")
    for name, value in (params or {}).items():
        default = merged[name]
        integral = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(default, int) and integral:
            merged[name] = value
        elif isinstance(default, float) and (integral or isinstance(value, float)):
            merged[name] = float(value)
        else:
            raise ValueError(f"{algorithm} parameter {name} must be {type(default).__name__}")
    return merged


@dataclass(frozen=True)
class Detector:
    algorithm: str
    feature_names: tuple[str, ...]
    feature_spec_hash: str
    params: Params
    threshold: float = 0.5  # on the score; an alarm needs persistence_s of scores >= threshold
    persistence_s: int = 0
    payload: str = ""  # lightgbm: Booster.model_to_string(); logistic: _Linear as JSON
    # A device whose channels make one of these profiles (dataset.profile_name) alarms at its
    # profile's (threshold, persistence_s); any other device at the one point above.
    profile_points: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    # The spec of the features it reads (its hash is feature_spec_hash); None: saved before
    # detectors carried their spec.
    feature_spec: FeatureSpec | None = None
    _booster: lgb.Booster | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require_algorithm(self.algorithm)
        if not self.feature_names:
            raise ValueError("a detector needs at least one feature")
        _check_point(self.threshold, self.persistence_s, "")
        for name, (threshold, persistence_s) in self.profile_points.items():
            if parse_profile(name) != name:
                raise ValueError(f"{name!r} is not a channel profile's name: {parse_profile(name)}")
            _check_point(threshold, persistence_s, f" of profile {name}")
        if self.feature_spec is not None:
            _check_spec(self.feature_spec, self.feature_spec_hash, self.feature_names)

    def require_feature_spec(self) -> FeatureSpec:
        """The spec of the features this detector reads; a clear error for a detector saved
        before detectors carried it (its features cannot be computed for it)."""
        if self.feature_spec is None:
            raise ValueError(
                f"this detector (feature spec {self.feature_spec_hash}) was saved without its "
                f"feature spec ({FEATURE_SPEC_FILE}): train it again to replay or evaluate it"
            )
        return self.feature_spec

    def with_feature_spec(self, spec: FeatureSpec) -> Detector:
        """This detector carrying `spec`, which must be the one it was trained on."""
        return dataclasses.replace(self, feature_spec=spec)

    def operating_point(self, profile: str | None = None) -> tuple[float, int]:
        """(threshold, persistence_s) for a device of channel profile `profile` (its name, as
        `dataset.profile_name` spells it): the profile's own point, else the one point."""
        if profile is not None and profile in self.profile_points:
            return self.profile_points[profile]
        return self.threshold, self.persistence_s

    def scores(self, features: pl.DataFrame) -> npt.NDArray[np.float64]:
        """P(fire) per row; a null (or NaN) feature is a missing value, not an error."""
        x = feature_matrix(features, self.feature_names)
        if self.algorithm == "logistic":
            return _Linear.from_json(self.payload).scores(x)
        if self._booster is None:
            object.__setattr__(self, "_booster", lgb.Booster(model_str=self.payload))
        assert self._booster is not None
        # Threads pay off only on batches: a thread pool start costs more than a few rows.
        if x.shape[0] < SINGLE_THREAD_ROWS:
            return np.asarray(self._booster.predict(x, num_threads=1), dtype=np.float64)
        return np.asarray(self._booster.predict(x), dtype=np.float64)

    def with_operating_point(
        self,
        threshold: float,
        persistence_s: int,
        profile_points: Mapping[str, tuple[float, int]] | None = None,
    ) -> Detector:
        """This detector at the one point given and the profiles' points given (none: none)."""
        return dataclasses.replace(
            self,
            threshold=threshold,
            persistence_s=persistence_s,
            profile_points=dict(profile_points or {}),
        )

    def save(self, directory: Path) -> list[Path]:
        """detector.json, plus LightGBM's own text model (model.txt) for lightgbm and the
        feature spec (feature_spec.json) when it has one."""
        directory.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "algorithm": self.algorithm,
            "feature_names": list(self.feature_names),
            "feature_spec_hash": self.feature_spec_hash,
            "params": self.params,
            "threshold": self.threshold,
            "persistence_s": self.persistence_s,
            "profile_points": {
                name: {"threshold": threshold, "persistence_s": persistence_s}
                for name, (threshold, persistence_s) in sorted(self.profile_points.items())
            },
        }
        written = [directory / DETECTOR_FILE]
        if self.algorithm == "lightgbm":
            (directory / LIGHTGBM_MODEL_FILE).write_bytes(self.payload.encode())
            written.append(directory / LIGHTGBM_MODEL_FILE)
        else:
            document["model"] = json.loads(self.payload)
        written[0].write_text(json.dumps(document, indent=1))
        spec_path = directory / FEATURE_SPEC_FILE
        if self.feature_spec is None:
            spec_path.unlink(missing_ok=True)  # a spec left by an earlier save is not this one's
        else:
            spec_path.write_text(self.feature_spec.to_json())
            written.append(spec_path)
        return written

    @classmethod
    def load(cls, directory: Path) -> Detector:
        path = directory / DETECTOR_FILE
        if not path.is_file():
            raise ValueError(f"{directory} holds no {DETECTOR_FILE}: not a saved detector")
        document = json.loads(path.read_text())
        if document.get("format_version") not in READABLE_FORMATS:
            raise ValueError(
                f"{path} has format {document.get('format_version')!r}, "
                f"this code reads {', '.join(map(str, READABLE_FORMATS))}"
            )
        if document["algorithm"] == "lightgbm":
            model = directory / LIGHTGBM_MODEL_FILE
            if not model.is_file():
                raise ValueError(f"{directory} lacks {LIGHTGBM_MODEL_FILE} for its lightgbm model")
            payload = model.read_bytes().decode()
        elif "model" in document:
            payload = _Linear.from_json(json.dumps(document["model"])).to_json()
        else:
            raise ValueError(f"{path} holds no model for its {document['algorithm']!r} detector")
        spec_path = directory / FEATURE_SPEC_FILE
        spec = FeatureSpec.from_json(spec_path.read_text()) if spec_path.is_file() else None
        return cls(
            algorithm=document["algorithm"],
            feature_names=tuple(document["feature_names"]),
            feature_spec_hash=document["feature_spec_hash"],
            params=document["params"],
            threshold=float(document["threshold"]),
            persistence_s=int(document["persistence_s"]),
            payload=payload,
            profile_points={
                name: (float(point["threshold"]), int(point["persistence_s"]))
                for name, point in document.get("profile_points", {}).items()
            },
            feature_spec=spec,
        )


def _check_spec(spec: FeatureSpec, spec_hash: str, feature_names: tuple[str, ...]) -> None:
    if spec.hash() != spec_hash:
        raise ValueError(
            f"the detector was trained on feature spec {spec_hash}, not on the spec given "
            f"({spec.hash()})"
        )
    unknown = [name for name in feature_names if name not in spec.names]
    if unknown:
        raise ValueError(f"the feature spec {spec_hash} computes no feature(s) {unknown}")


def _check_point(threshold: float, persistence_s: int, what: str) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold{what} must be in [0, 1], got {threshold}")
    if isinstance(persistence_s, bool) or not isinstance(persistence_s, int):
        raise ValueError(f"persistence_s{what} must be whole seconds, got {persistence_s!r}")
    if persistence_s < 0:
        raise ValueError(f"persistence_s{what} must be >= 0, got {persistence_s}")


def feature_matrix(frame: pl.DataFrame, feature_names: tuple[str, ...]) -> Matrix:
    """The named columns as float64, nulls as NaN, in the detector's order."""
    missing = [n for n in feature_names if n not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks feature column(s) {missing}")
    wrong = [n for n in feature_names if not frame.schema[n].is_numeric()]
    if wrong:
        raise ValueError(f"feature column(s) {wrong} are not numeric")
    # One conversion of the selected columns (nulls become NaN): an expression per column cost
    # ~5 ms a call, which dominated scoring a single row.
    return np.ascontiguousarray(frame.select(feature_names).to_numpy(), dtype=np.float64)


def labels(frame: pl.DataFrame) -> npt.NDArray[np.int8]:
    if LABEL not in frame.columns:
        raise ValueError(f"frame lacks the label column {LABEL!r}")
    label = frame[LABEL]
    if label.null_count():
        raise ValueError(f"label column {LABEL!r} has {label.null_count()} null(s)")
    return label.cast(pl.Int8).to_numpy()


def average_precision(frame: pl.DataFrame, scores: npt.ArrayLike) -> float:
    """PR-AUC of `scores` against the frame's labels: the tuning objective and a logged metric."""
    y = labels(frame)
    if y.min() == y.max():
        raise ValueError("average precision needs both fire and non-fire rows")
    return float(average_precision_score(y, scores))


def early_fire_weights(frame: pl.DataFrame, params: Params) -> Matrix:
    """Per row: `early_fire_weight` for a fire reading (LABEL) at most `early_fire_s` seconds
    after ignition, else 1 (module defaults above)."""
    weight, seconds = float(params["early_fire_weight"]), float(params["early_fire_s"])
    if not (math.isfinite(weight) and weight > 0 and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(
            f"early_fire_weight must be > 0 and early_fire_s >= 0, got {weight} and {seconds}"
        )
    if weight == 1.0:
        return np.ones(frame.height)
    if SECONDS_SINCE_IGNITION not in frame.columns:
        raise ValueError(
            f"early_fire_weight {weight:g} needs the frame's {SECONDS_SINCE_IGNITION!r} column "
            "(ml/training_set has it); without it, pass early_fire_weight 1"
        )
    since = frame[SECONDS_SINCE_IGNITION].cast(pl.Float64).fill_null(float("inf")).to_numpy()
    early = (labels(frame) == 1) & (since <= seconds)
    return np.where(early, weight, 1.0)


def balanced_weights(y: npt.NDArray[np.int8]) -> Matrix:
    """scikit-learn's "balanced": n / (2 n_class) per row, so each class weighs half."""
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError("the training frame needs both fire and non-fire rows")
    weight = np.where(y == 1, len(y) / (2.0 * positives), len(y) / (2.0 * (len(y) - positives)))
    return weight.astype(np.float64)


def train_detector(
    train: pl.DataFrame,
    validation: pl.DataFrame | None,
    feature_names: tuple[str, ...] | list[str],
    feature_spec_hash: str,
    algorithm: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    increasing: tuple[str, ...] | list[str] = (),
) -> Detector:
    """Fit on `train` (label column dataset.LABEL); LightGBM stops early on `validation`'s
    average precision when given one. The same data, params and seed give the same detector.
    The score never falls as a feature named in `increasing` rises, the others held (LightGBM
    only: its monotone constraints, firepipe.core.training.inputs)."""
    _require_algorithm(algorithm)
    names = tuple(feature_names)
    if not names or len(set(names)) != len(names):
        raise ValueError("feature_names must be non-empty and free of repeats")
    check_increasing(algorithm, names, increasing)
    resolved = resolve_params(algorithm, params)
    x, y = feature_matrix(train, names), labels(train)
    weights = balanced_weights(y) * early_fire_weights(train, resolved)
    if algorithm == "logistic":
        payload = _Linear.fit(x, y, weights, names, resolved, seed).to_json()
    else:
        rising = set(increasing)
        monotone = [1 if n in rising else 0 for n in names]
        payload = _fit_lightgbm(x, y, weights, names, resolved, validation, seed, monotone)
    return Detector(
        algorithm, names, feature_spec_hash, {**resolved, "seed": seed}, payload=payload
    )


def check_increasing(
    algorithm: str, feature_names: tuple[str, ...], increasing: tuple[str, ...] | list[str]
) -> None:
    """Monotone constraints name features the detector reads, and only LightGBM takes them."""
    stray = sorted(set(increasing) - set(feature_names))
    if stray:
        raise ValueError(f"increasing names {stray}, which are not among the feature names")
    if increasing and algorithm not in MONOTONE_ALGORITHMS:
        raise ValueError(f"{algorithm} takes no monotone constraints: pass no increasing names")


def _fit_lightgbm(
    x: Matrix,
    y: npt.NDArray[np.int8],
    weights: Matrix,
    names: tuple[str, ...],
    params: Params,
    validation: pl.DataFrame | None,
    seed: int,
    monotone: list[int],
) -> str:
    booster_params: dict[str, Any] = {k: v for k, v in params.items() if k not in _NOT_BOOSTER}
    if any(monotone):
        # "advanced" constrains each split by the leaves it can reach, not by the whole
        # subtree ("basic"): less over-constrained, the same guarantee (Parameters page).
        booster_params |= {
            "monotone_constraints": monotone,
            "monotone_constraints_method": "advanced",
        }
    booster_params |= {
        "objective": "binary",
        "metric": "average_precision",
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,  # with deterministic: no row/col-wise choice timed per run
        "verbosity": -1,
    }
    train_set = lgb.Dataset(x, label=y, weight=weights, feature_name=list(names))
    valid_sets: list[lgb.Dataset] = []
    callbacks: list[Callable[..., Any]] = []
    stopping_rounds = int(params["early_stopping_rounds"])
    if validation is not None:
        valid = lgb.Dataset(
            feature_matrix(validation, names), label=labels(validation), reference=train_set
        )
        valid_sets.append(valid)
        if stopping_rounds > 0:
            callbacks.append(lgb.early_stopping(stopping_rounds, verbose=False))
    booster = lgb.train(
        booster_params,
        train_set,
        num_boost_round=int(params["num_boost_round"]),
        valid_sets=valid_sets,
        valid_names=["validation"][: len(valid_sets)],
        callbacks=callbacks,
    )
    return booster.model_to_string()


_NOT_BOOSTER = ("num_boost_round", "early_stopping_rounds", *_WEIGHTING_DEFAULTS)


def channel_groups(feature_names: tuple[str, ...]) -> list[list[int]]:
    """Feature indices grouped by the channel their name starts with (`<channel>__...`); a
    feature named for no channel (the smoke-heat lag) is a group of its own."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(feature_names):
        channel = next((c for c in CHANNEL_NAMES if name.startswith(f"{c}__")), name)
        groups.setdefault(channel, []).append(i)
    return list(groups.values())


@dataclass(frozen=True)
class _Linear:
    """Standardise, put the training mean (0 after standardising) in for a missing value, add
    one indicator per channel that is 1 when all of its features are missing, then a logistic
    regression. Scoring is numpy here, the same before and after a save."""

    means: tuple[float, ...]
    scales: tuple[float, ...]
    groups: tuple[tuple[int, ...], ...]
    coefficients: tuple[float, ...]
    intercept: float

    @classmethod
    def fit(
        cls,
        x: Matrix,
        y: npt.NDArray[np.int8],
        weights: Matrix,
        names: tuple[str, ...],
        params: Params,
        seed: int,
    ) -> _Linear:
        present = ~np.isnan(x)
        counts = present.sum(axis=0)
        means = np.where(counts > 0, np.nansum(x, axis=0) / np.maximum(counts, 1), 0.0)
        spread = np.sqrt(
            np.nansum(np.where(present, (x - means) ** 2, 0.0), axis=0) / np.maximum(counts, 1)
        )
        scales = np.where(spread > 0, spread, 1.0)  # a constant feature: leave it unscaled
        groups = tuple(tuple(g) for g in channel_groups(names))
        stub = cls(tuple(means.tolist()), tuple(scales.tolist()), groups, (), 0.0)
        model = LogisticRegression(
            C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=seed
        )
        model.fit(stub.design(x), y, sample_weight=weights)
        return dataclasses.replace(
            stub,
            coefficients=tuple(float(c) for c in model.coef_[0]),
            intercept=float(model.intercept_[0]),
        )

    def design(self, x: Matrix) -> Matrix:
        z = np.nan_to_num((x - np.asarray(self.means)) / np.asarray(self.scales), nan=0.0)
        missing = np.isnan(x)
        indicators = [missing[:, list(g)].all(axis=1) for g in self.groups]
        return np.column_stack([z, *indicators]).astype(np.float64)

    def scores(self, x: Matrix) -> Matrix:
        logit = self.design(x) @ np.asarray(self.coefficients) + self.intercept
        probability = 0.5 * (1.0 + np.tanh(0.5 * logit))  # logistic, no exp overflow
        return np.asarray(probability, dtype=np.float64)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> _Linear:
        d = json.loads(text)
        return cls(
            tuple(d["means"]),
            tuple(d["scales"]),
            tuple(tuple(g) for g in d["groups"]),
            tuple(d["coefficients"]),
            float(d["intercept"]),
        )
