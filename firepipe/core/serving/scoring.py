"""Scoring feature rows fast: a detector's trees compiled to C by tl2cgen, LightGBM native where
the compiled model cannot be used.

Measured on make run's champion (191 trees, 20 features, two cores; docs/serving-research.md):
the tl2cgen library called directly through ctypes scores a row in about 6 us (1.6 us when the
same row repeats: the CPU's branch predictor learns its paths), LightGBM's `Booster.predict`
one row in 25 us, with no difference at all between the two. tl2cgen's own `Predictor` spends
most of a single row building its `DMatrix` (17 us a row for two rows), so a few rows go
straight to the library's `predict`; from `PREDICTOR_MIN_ROWS` rows on the `Predictor`'s
threaded C loop wins (3-4 us a row from 50 rows).

The compiled model is exported with the detector at registration (`export.export_compiled`)
into `<detector_dir>/compiled/`; `load_serving_model` uses it when it was built for this
platform from this very model, and says why not otherwise.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from firepipe.core.training.models import (
    LIGHTGBM_MODEL_FILE,
    SINGLE_THREAD_ROWS,
    Detector,
)

Matrix = npt.NDArray[np.float64]

COMPILED_DIR = "compiled"  # inside the saved detector's folder
COMPILED_FILE = "compiled.json"
SOURCES_DIR = "src"  # tl2cgen's generated C, header and recipe.json
LIBRARY_FILE = "model.so"
BACKEND = "tl2cgen"
# From this many rows tl2cgen's Predictor (a C loop over rows, on every core) beats one ctypes
# call per row: 6.9 against 8.2 us a row at 10 rows, 3.9 against 7.4 at 50 (two cores).
PREDICTOR_MIN_ROWS = 16
# tl2cgen's `union Entry {int missing; double fvalue; int qvalue;}`: a missing value is the int
# -1 in the entry's first four bytes, not a NaN double (a NaN would be taken as present and
# compared against every threshold as false). tl2cgen's own DMatrix encodes it so too; a
# present double whose first four bytes read -1 would pass for missing, which no value widened
# from float32 (gold's features) can be.
_MISSING = -1


class Scorer(Protocol):
    """P(fire) for rows of features: `x` C-contiguous float64, rows x the detector's
    feature_names, NaN where a value is missing."""

    backend: str  # "tl2cgen" | "lightgbm" | "logistic"

    def scores(self, x: Matrix) -> Matrix: ...


@dataclass(frozen=True)
class ServingModel:
    detector: Detector
    scorer: Scorer
    version: str  # "firepipe-fire-detector/7", or the folder for a plain folder
    fallback_reason: str | None = None  # why the compiled model is not used; None: it is


def _check_matrix(x: Matrix, n_features: int) -> None:
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"scores need rows of {n_features} features, got shape {x.shape}")
    if x.dtype != np.float64 or not x.flags.c_contiguous:
        raise ValueError("scores need a C-contiguous float64 matrix")


class NativeScorer:
    """The detector's own model: LightGBM's Booster on the matrix (one thread for small
    batches, as `Detector.scores` does), or the logistic reference through the detector."""

    def __init__(self, detector: Detector) -> None:
        self.backend = detector.algorithm
        self._detector = detector
        self._booster = (
            lgb.Booster(model_str=detector.payload) if self.backend == "lightgbm" else None
        )

    def scores(self, x: Matrix) -> Matrix:
        _check_matrix(x, len(self._detector.feature_names))
        if self._booster is None:
            frame = pl.DataFrame(x, schema=list(self._detector.feature_names), orient="row")
            return self._detector.scores(frame)
        if x.shape[0] < SINGLE_THREAD_ROWS:
            return np.asarray(self._booster.predict(x, num_threads=1), dtype=np.float64)
        return np.asarray(self._booster.predict(x), dtype=np.float64)


class _RowBuffers:
    """One row's entries (as doubles and as the union's leading ints), its missing mask and
    the result, with their addresses taken once."""

    def __init__(self, n_features: int) -> None:
        self.entries = np.zeros(n_features, dtype=np.float64)
        self.ints = self.entries.view(np.int32)[0::2]  # each entry's first four bytes
        self.missing = np.zeros(n_features, dtype=bool)
        self.result = np.zeros(1, dtype=np.float64)
        self.entries_pointer = self.entries.ctypes.data
        self.result_pointer = self.result.ctypes.data


class CompiledScorer:
    """The tl2cgen library: one ctypes call per row below PREDICTOR_MIN_ROWS rows, its
    Predictor above."""

    backend = BACKEND

    def __init__(self, library: Path, n_features: int) -> None:
        # dlopen finds an already loaded library by its path name: a new model written where
        # an old one was loaded would silently score with the old one. A private copy has a
        # fresh name; it is deleted once loaded (the mapping stays).
        with tempfile.TemporaryDirectory(prefix="firepipe-scorer-") as private:
            copy = Path(private) / LIBRARY_FILE
            shutil.copyfile(library, copy)
            self._lib = ctypes.CDLL(str(copy))
            import tl2cgen

            self._predictor = tl2cgen.Predictor(copy, nthread=os.cpu_count() or 1)
        self._predict = self._lib.predict
        self._predict.restype = None
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self._lib.get_num_feature.restype = ctypes.c_int32
        self.n_features = int(self._lib.get_num_feature())
        if self.n_features != n_features:
            raise ValueError(
                f"the compiled model reads {self.n_features} features, the detector {n_features}"
            )
        self._predictor_lock = threading.Lock()  # Predictor.predict: one thread at a time
        self._local = threading.local()  # one row's buffers, per thread

    def _row_buffers(self) -> _RowBuffers:
        buffers: _RowBuffers | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = _RowBuffers(self.n_features)
            self._local.buffers = buffers
        return buffers

    def scores(self, x: Matrix) -> Matrix:
        _check_matrix(x, self.n_features)
        rows = x.shape[0]
        if rows >= PREDICTOR_MIN_ROWS:
            return self._predictor_scores(x)
        if rows == 1:  # the service's common case: no allocation but the answer
            b = self._row_buffers()
            np.copyto(b.entries, x[0])
            np.isnan(x[0], out=b.missing)
            np.copyto(b.ints, _MISSING, where=b.missing)
            b.result[0] = 0.0  # predict adds the trees' outputs to it
            self._predict(b.entries_pointer, 0, b.result_pointer)
            return b.result.copy()
        out = np.zeros(rows, dtype=np.float64)
        entries_all = x.copy()
        entries_all.view(np.int32)[:, 0::2][np.isnan(x)] = _MISSING
        base, stride, result = entries_all.ctypes.data, entries_all.strides[0], out.ctypes.data
        for i in range(rows):
            self._predict(base + i * stride, 0, result + 8 * i)
        return out

    def _predictor_scores(self, x: Matrix) -> Matrix:
        import tl2cgen

        matrix = tl2cgen.DMatrix(x, missing=np.nan)
        with self._predictor_lock:
            out = self._predictor.predict(matrix)
        return np.ascontiguousarray(np.asarray(out, dtype=np.float64).reshape(x.shape[0]))


def platform_tag() -> str:
    """Where a compiled library runs: the OS and CPU (e.g. linux-x86_64); the library calls
    no Python, so the Python version is not part of it."""
    return sysconfig.get_platform()


def model_hash(detector_dir: Path) -> str:
    return hashlib.sha256((detector_dir / LIGHTGBM_MODEL_FILE).read_bytes()).hexdigest()


def compiled_scorer(detector: Detector, detector_dir: Path) -> CompiledScorer:
    """The exported compiled model of `detector`; a ValueError says why it cannot be used."""
    compiled_dir = detector_dir / COMPILED_DIR
    path = compiled_dir / COMPILED_FILE
    if not path.is_file():
        raise ValueError(f"no compiled model ({COMPILED_DIR}/{COMPILED_FILE}) in {detector_dir}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from e
    if document.get("backend") != BACKEND:
        raise ValueError(f"{path} is for backend {document.get('backend')!r}, not {BACKEND}")
    if document.get("platform") != platform_tag():
        raise ValueError(
            f"compiled for {document.get('platform')!r}, this machine is {platform_tag()!r}"
        )
    if document.get("num_feature") != len(detector.feature_names):
        raise ValueError(
            f"compiled for {document.get('num_feature')} features, the detector reads "
            f"{len(detector.feature_names)}"
        )
    if document.get("model_sha256") != model_hash(detector_dir):
        raise ValueError(f"compiled from another {LIGHTGBM_MODEL_FILE} than the detector's")
    library = compiled_dir / str(document.get("library", LIBRARY_FILE))
    if not library.is_file():
        raise ValueError(f"the compiled library {library.name} is missing from {compiled_dir}")
    try:
        return CompiledScorer(library, len(detector.feature_names))
    except Exception as e:  # dlopen's OSError, tl2cgen's own errors: any is a reason to fall back
        raise ValueError(f"the compiled library does not load: {e}") from e


def load_serving_model(detector_dir: Path, version: str) -> ServingModel:
    """The detector saved in `detector_dir`, scored by its compiled model when it has one
    usable here, else natively with the reason in `fallback_reason`."""
    detector = Detector.load(detector_dir)
    if detector.algorithm != "lightgbm":
        return ServingModel(detector, NativeScorer(detector), version)
    try:
        scorer: Scorer = compiled_scorer(detector, detector_dir)
    except ValueError as e:
        return ServingModel(detector, NativeScorer(detector), version, fallback_reason=str(e))
    return ServingModel(detector, scorer, version)
