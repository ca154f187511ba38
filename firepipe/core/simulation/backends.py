"""Array backends the simulator runs on: numpy by default, CuPy or PyTorch on a GPU.

The simulator is written against the Python array API standard, so a backend is an array
namespace plus the three things the standard leaves out: moving host arrays in, drawing standard
normals, and moving results out. Per-device parameters are drawn on the host with numpy for every
backend, so backends differ only in the noise stream (each library has its own generator) and in
floating-point rounding; the parity tests hold them to that.

`array_api_strict` is the standard's reference implementation on the CPU: running the simulator
on it proves that the GPU code path uses nothing outside the standard.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ArrayBackend:
    name: str
    xp: Any
    asarray: Callable[[NDArray[Any]], Any]
    standard_normal: Callable[[np.random.SeedSequence, tuple[int, ...]], Any]
    to_numpy: Callable[[Any], NDArray[Any]]


def _numpy() -> ArrayBackend:
    def normal(seed: np.random.SeedSequence, shape: tuple[int, ...]) -> NDArray[np.float32]:
        return np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)

    return ArrayBackend("numpy", np, np.asarray, normal, np.asarray)


def _array_api_strict() -> ArrayBackend:
    xp = _require("array_api_strict", "pip install array-api-strict")

    def normal(seed: np.random.SeedSequence, shape: tuple[int, ...]) -> Any:
        return xp.asarray(_numpy().standard_normal(seed, shape))

    return ArrayBackend("array_api_strict", xp, xp.asarray, normal, np.from_dlpack)


def _cupy() -> ArrayBackend:
    cupy = _require("cupy", "install firepipe with the gpu extra on a CUDA 12 machine")
    from array_api_compat import cupy as xp

    def normal(seed: np.random.SeedSequence, shape: tuple[int, ...]) -> Any:
        state = int(seed.generate_state(1, np.uint64)[0])
        return cupy.random.default_rng(state).standard_normal(shape, dtype=cupy.float32)

    return ArrayBackend("cupy", xp, cupy.asarray, normal, cupy.asnumpy)


def _torch() -> ArrayBackend:
    torch = _require("torch", "pip install torch (a CUDA build for the GPU)")
    from array_api_compat import torch as xp

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def asarray(a: NDArray[Any]) -> Any:
        return torch.as_tensor(a, device=device)

    def normal(seed: np.random.SeedSequence, shape: tuple[int, ...]) -> Any:
        state = int(seed.generate_state(1, np.uint32)[0])
        generator = torch.Generator(device=device).manual_seed(state)
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=device)

    def to_numpy(a: Any) -> NDArray[Any]:
        return np.asarray(a.cpu().numpy())

    return ArrayBackend(f"torch-{device}", xp, asarray, normal, to_numpy)


def _require(module: str, how: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"the {module} backend needs {module}: {how}") from exc


class BackendUnavailableError(RuntimeError):
    """The backend's array library is not installed here (or has no device)."""


BACKENDS: dict[str, Callable[[], ArrayBackend]] = {
    "numpy": _numpy,
    "cupy": _cupy,
    "torch": _torch,
    "array_api_strict": _array_api_strict,
}


def get_backend(name: str) -> ArrayBackend:
    try:
        make = BACKENDS[name]
    except KeyError:
        known = ", ".join(BACKENDS)
        raise ValueError(f"unknown array backend {name!r}; choose one of {known}") from None
    return make()
