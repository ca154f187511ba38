"""Array backends: the array-API code path gives numpy's numbers; unknown ones fail clearly."""

import importlib.util

import numpy as np
import polars as pl
import pytest

from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.backends import BackendUnavailableError, get_backend
from firepipe.core.simulation.simulator import QUANTUM, GenerationSpec, simulate

SPEC = GenerationSpec(devices=16, duration_s=700, seed=21, fault_share=0.25)

# array_api_strict is the standard's reference implementation: it refuses anything outside the
# standard, so passing on it means the CuPy and PyTorch code path is the same code. PyTorch's
# CPU build runs here when it is installed.
CPU_BACKENDS = ["array_api_strict"] + (["torch"] if importlib.util.find_spec("torch") else [])


@pytest.fixture(scope="module")
def reference() -> dict[bool, pl.DataFrame]:
    return {noise: simulate(SPEC, noise=noise) for noise in (False, True)}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_noise_free_readings_match_numpy(reference, backend):
    other = simulate(SPEC, backend=backend, noise=False)
    expected = reference[False]
    assert other.drop(CHANNEL_NAMES).equals(expected.drop(CHANNEL_NAMES))
    for name in CHANNEL_NAMES:
        a, b = expected[name].to_numpy(), other[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        # Rounding may land one resolution step apart where float math differs in the last bit.
        assert np.nanmax(np.abs(a - b)) <= QUANTUM[name] * 1.0001, name


def test_noisy_readings_match_numpy_where_the_generator_is_numpys(reference):
    # array_api_strict draws its noise from numpy's generator on the host: same bytes.
    assert simulate(SPEC, backend="array_api_strict").equals(reference[True])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_torch_noise_agrees_in_distribution(reference):
    expected, other = reference[True], simulate(SPEC, backend="torch", noise=True)
    for name in CHANNEL_NAMES:
        # The same signal under independent noise: the mean differs by noise / sqrt(rows) only.
        difference = (other[name] - expected[name]).drop_nulls().drop_nans()
        assert difference.std() > 0, name
        assert abs(difference.mean()) < 0.1 * difference.std(), name


def test_array_api_strict_is_deterministic_per_seed():
    first = simulate(SPEC, backend="array_api_strict")
    assert first.equals(simulate(SPEC, backend="array_api_strict"))


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown array backend 'jax'; choose one of numpy"):
        get_backend("jax")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_missing_gpu_library_says_how_to_get_it():
    with pytest.raises(BackendUnavailableError, match="gpu extra"):
        get_backend("cupy")
