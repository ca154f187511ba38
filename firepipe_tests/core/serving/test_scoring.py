"""The compiled scoring backend: parity with LightGBM (missing values included), the export's
refusals and every reason the service falls back to LightGBM native (`scoring` and
`export`)."""

import dataclasses
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from firepipe.core.serving import export, scoring
from firepipe.core.training.models import Detector, feature_matrix
from firepipe_tests.services.detector_sample import FEATURES, feature_frame, saved_detector


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LightGBM detector saved and compiled once; tests that spoil it take a copy."""
    directory = tmp_path_factory.mktemp("exported") / "detector"
    detector = saved_detector(directory)
    outcome = export.export_compiled(detector, directory, feature_frame(seed=1))
    assert outcome.backend == "tl2cgen", outcome.reason
    return directory


@pytest.fixture
def spoilt(exported: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "detector"
    shutil.copytree(exported, copy)
    return copy


def rows_with_gaps(rows: int, seed: int = 2) -> np.ndarray:
    """Features from the detector's training distribution, a tenth of values missing, plus an
    all-missing row (a device that sent nothing the detector reads)."""
    x = feature_matrix(feature_frame(rows, seed), FEATURES)
    x[np.random.default_rng(seed).random(x.shape) < 0.1] = np.nan
    x[0] = np.nan
    return np.ascontiguousarray(x)


def test_export_records_parity_and_the_platform(exported: Path) -> None:
    document = json.loads((exported / "compiled" / "compiled.json").read_text())
    assert document["backend"] == "tl2cgen"
    assert document["platform"] == scoring.platform_tag()
    assert document["num_feature"] == len(FEATURES)
    assert document["check_rows"] == 400
    assert document["max_abs_diff"] <= 1e-6
    # The generated sources stay, for a rebuild elsewhere; the build's objects do not.
    sources = exported / "compiled" / "src"
    assert (sources / "recipe.json").is_file()
    assert (sources / "main.c").is_file()
    assert not list(sources.glob("*.o"))
    # The detector itself loads as before, the extra folder ignored.
    assert Detector.load(exported).algorithm == "lightgbm"


@pytest.mark.parametrize("rows", [1, 2, scoring.PREDICTOR_MIN_ROWS - 1, 300])
def test_compiled_scores_equal_lightgbm_with_missing_values(exported: Path, rows: int) -> None:
    model = scoring.load_serving_model(exported, "firepipe-fire-detector/3")
    assert model.scorer.backend == "tl2cgen"
    assert model.fallback_reason is None
    assert model.version == "firepipe-fire-detector/3"
    x = rows_with_gaps(max(rows, 2))[:rows]
    native = scoring.NativeScorer(model.detector).scores(x)
    compiled = model.scorer.scores(x)
    assert compiled.dtype == np.float64
    assert compiled.shape == (rows,)
    np.testing.assert_allclose(compiled, native, rtol=0, atol=1e-12)
    frame = pl.DataFrame(x, schema=list(FEATURES), orient="row")
    np.testing.assert_allclose(compiled, model.detector.scores(frame), rtol=0, atol=1e-12)


def test_a_missing_value_is_not_scored_as_present(exported: Path) -> None:
    """NaN sent as a double would be compared against the thresholds: the all-missing row must
    take LightGBM's missing-value branches, so the scores of a row and of its NaN version
    differ exactly where LightGBM's do."""
    scorer = scoring.load_serving_model(exported, "v").scorer
    native = scoring.NativeScorer(Detector.load(exported))
    x = rows_with_gaps(50)
    for row in x[:10]:
        one = np.ascontiguousarray(row[None, :])
        assert scorer.scores(one)[0] == pytest.approx(native.scores(one)[0], abs=1e-12)


def test_single_rows_from_many_threads_agree(exported: Path) -> None:
    scorer = scoring.load_serving_model(exported, "v").scorer
    x = rows_with_gaps(200)
    expected = scorer.scores(x)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: scorer.scores(x[i : i + 1])[0], range(len(x))))
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_scores_refuse_a_matrix_of_other_width(exported: Path) -> None:
    scorer = scoring.load_serving_model(exported, "v").scorer
    with pytest.raises(ValueError, match="rows of 3 features"):
        scorer.scores(np.zeros((1, 4)))


def test_no_compiler_no_export_and_native_scoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = saved_detector(tmp_path)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(export.shutil, "which", lambda name: None)
    outcome = export.export_compiled(detector, tmp_path, feature_frame())
    assert outcome.backend == "lightgbm"
    assert "no C compiler" in (outcome.reason or "")
    assert outcome.tags()["serving_fallback_reason"] == outcome.reason
    assert not (tmp_path / "compiled").exists()
    model = scoring.load_serving_model(tmp_path, "v")
    assert model.scorer.backend == "lightgbm"
    assert "no compiled model" in (model.fallback_reason or "")


def test_a_failing_compiler_refuses_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = saved_detector(tmp_path)
    monkeypatch.setenv("CC", "false")  # found on the PATH, fails whatever it is asked
    outcome = export.export_compiled(detector, tmp_path, feature_frame())
    assert outcome.backend == "lightgbm"
    assert "compiling with false failed" in (outcome.reason or "")
    assert not (tmp_path / "compiled").exists()
    assert scoring.load_serving_model(tmp_path, "v").scorer.backend == "lightgbm"


def test_parity_beyond_the_limit_refuses_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = saved_detector(tmp_path)
    monkeypatch.setattr(export, "MAX_ABS_DIFF", -1.0)  # no difference can pass
    outcome = export.export_compiled(detector, tmp_path, feature_frame())
    assert outcome.backend == "lightgbm"
    assert outcome.max_abs_diff == 0.0
    assert "differ from LightGBM" in (outcome.reason or "")
    assert not (tmp_path / "compiled").exists()


def test_logistic_detectors_score_natively(tmp_path: Path) -> None:
    detector = saved_detector(tmp_path, algorithm="logistic")
    outcome = export.export_compiled(detector, tmp_path, feature_frame())
    assert outcome.backend == "logistic"
    assert outcome.tags() == {
        "serving_backend": "logistic",
        "serving_fallback_reason": "a logistic detector is not compiled",
    }
    model = scoring.load_serving_model(tmp_path, "v")
    assert model.scorer.backend == "logistic"
    assert model.fallback_reason is None
    x = rows_with_gaps(20)
    frame = pl.DataFrame(x, schema=list(FEATURES), orient="row")
    np.testing.assert_allclose(model.scorer.scores(x), detector.scores(frame), atol=1e-12)


def _edit_document(directory: Path, **changes: object) -> None:
    path = directory / "compiled" / "compiled.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"platform": "macosx-14.0-arm64"}, "compiled for 'macosx-14.0-arm64'"),
        ({"num_feature": 4}, "compiled for 4 features, the detector reads 3"),
        ({"backend": "onnx"}, "backend 'onnx'"),
    ],
)
def test_a_library_built_for_something_else_falls_back(
    spoilt: Path, changes: dict[str, object], reason: str
) -> None:
    _edit_document(spoilt, **changes)
    model = scoring.load_serving_model(spoilt, "v")
    assert model.scorer.backend == "lightgbm"
    assert reason in (model.fallback_reason or "")


def test_a_corrupt_library_falls_back(spoilt: Path) -> None:
    (spoilt / "compiled" / "model.so").write_bytes(b"not an ELF file")
    model = scoring.load_serving_model(spoilt, "v")
    assert model.scorer.backend == "lightgbm"
    assert "does not load" in (model.fallback_reason or "")


def test_a_missing_library_falls_back(spoilt: Path) -> None:
    (spoilt / "compiled" / "model.so").unlink()
    assert "is missing" in (scoring.load_serving_model(spoilt, "v").fallback_reason or "")


def test_a_library_of_an_older_model_falls_back(spoilt: Path) -> None:
    """A detector saved again over the folder (another model.txt) must not be served by the
    library compiled from the one before."""
    retrained = Detector.load(spoilt)
    retrained = dataclasses.replace(retrained, payload=retrained.payload + "\n")
    retrained.save(spoilt)
    model = scoring.load_serving_model(spoilt, "v")
    assert "another model.txt" in (model.fallback_reason or "")


def test_a_rebuilt_library_loads_from_the_kept_sources(spoilt: Path) -> None:
    (spoilt / "compiled" / "model.so").unlink()
    compiler = export.find_compiler()
    assert compiler is not None
    export.build_library(spoilt / "compiled", compiler)
    model = scoring.load_serving_model(spoilt, "v")
    assert model.scorer.backend == "tl2cgen"
    x = rows_with_gaps(30)
    np.testing.assert_allclose(
        model.scorer.scores(x), scoring.NativeScorer(model.detector).scores(x), atol=1e-12
    )
