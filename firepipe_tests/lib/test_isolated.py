"""The child-process call behind landing's parsing: reuse, replacement, limits, and which
failures are the input's (IsolatedCallError) and which the caller's."""

import os
import resource
import signal
import time
from pathlib import Path

import pytest

from firepipe.core.ingestion.landing import QuarantineError
from firepipe.lib.isolated import IsolatedCallError, IsolatedFunction


def test_one_child_serves_every_call_until_it_dies() -> None:
    with IsolatedFunction("os:getpid", memory_limit_mb=256, timeout_s=30) as getpid:
        first = getpid()
        assert first != os.getpid()
        assert getpid() == first
        os.kill(first, signal.SIGKILL)
        _wait_until_dead(first)
        assert getpid() not in (first, os.getpid())


def _wait_until_dead(pid: int) -> None:
    """Until the kernel has the process as a zombie (its parent, the Popen, reaps it)."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, f"{pid} still alive"
        time.sleep(0.01)


def test_a_crash_is_reported_with_its_signal_and_the_next_call_gets_a_new_child() -> None:
    with IsolatedFunction("os:abort", memory_limit_mb=256, timeout_s=30) as abort:
        for _ in range(2):
            with pytest.raises(IsolatedCallError) as failed:
                abort()
            assert failed.value.kind == "crashed"
            assert failed.value.detail == "crashed: signal 6 (SIGABRT)"
            assert failed.value.error is None


def test_the_childs_exception_comes_back_whole() -> None:
    parse = "firepipe.core.ingestion.landing:parse_landed_file"
    child = IsolatedFunction(parse, memory_limit_mb=512, timeout_s=30)
    with child, pytest.raises(IsolatedCallError) as failed:
        child("incoming/x.xlsx", b"x", None)
    assert failed.value.kind == "raised"
    assert isinstance(failed.value.error, QuarantineError)
    assert failed.value.error.rule == "unsupported_format"
    assert failed.value.detail.startswith("raised QuarantineError: unsupported_format: ")


def test_the_memory_limit_is_the_childs_address_space_plus_the_budget() -> None:
    with IsolatedFunction("resource:getrlimit", memory_limit_mb=300, timeout_s=30) as getrlimit:
        soft, _ = getrlimit(resource.RLIMIT_AS)
    # The child holds ~25 MB of address space when it sets the limit.
    assert 300 * 2**20 < soft < 1000 * 2**20


def test_a_function_that_cannot_be_loaded_is_the_callers_error() -> None:
    with pytest.raises(ValueError, match=r"'package\.module:function', got 'os\.getpid'"):
        IsolatedFunction("os.getpid", memory_limit_mb=256, timeout_s=30)
    with pytest.raises(ValueError, match="memory_limit_mb must be > 0"):
        IsolatedFunction("os:getpid", memory_limit_mb=0, timeout_s=30)
    missing = IsolatedFunction("os:no_such_function", memory_limit_mb=256, timeout_s=30)
    with missing, pytest.raises(RuntimeError, match="could not load os:no_such_function"):
        missing()
