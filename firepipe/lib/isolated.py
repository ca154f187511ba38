"""Calling an untrusted parse in a child process, so that what the parse does to its process (a
Rust panic, an abort, a runaway allocation, a hang) costs that one call, not the caller's run.

`IsolatedFunction("package.module:function", memory_limit_mb, timeout_s)` starts one child
(`python -m firepipe.lib.isolated`) at its first call and reuses it for the calls after, so a
run pays an interpreter's start once (0.2 s for landing's parser, which imports polars), not
once per file. Arguments and results travel by pickle over a socket pair. A call that did not
return raises `IsolatedCallError`, whose `kind` says why:

- "raised": the function raised; `error` is the exception where it survives pickling (a pyo3
  PanicException does not), and `detail` names it in any case;
- "out_of_memory": the child went past its memory limit: a MemoryError, or a Rust allocation
  that failed and aborted the child;
- "crashed": the child died: the signal or exit code, and the last line it wrote to stderr;
- "timed_out": no answer within timeout_s; the child is killed.

After anything but a return or an ordinary Exception the child is replaced: a panic can leave
locks poisoned and a MemoryError half-built state. A failure to start the child or to import the
function is the caller's fault, not the input's: it raises RuntimeError.

The memory limit is RLIMIT_AS (address space) set by the child once it has imported the
function, at what it then holds plus `memory_limit_mb`. Threads a library starts later reserve
address space too (polars' pool: ~5 MB a thread), and glibc up to 64 MB for each thread's
malloc arena, so the child runs with MALLOC_ARENA_MAX=2 (polars allocates through
jemalloc; the Python side is single-threaded). Linux only: other systems get no limit.
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import IO, Any, Literal

FailureKind = Literal["raised", "out_of_memory", "crashed", "timed_out"]
# What Rust's allocator writes to stderr before it aborts on a failed allocation.
_ALLOCATION_FAILED = "memory allocation of"
_TAIL_BYTES = 8192
# Lines of a Rust backtrace or a Python traceback that do not say what went wrong.
_NOISE = (" ", "\t", "note:", "stack backtrace:", "Traceback (most recent call last):")
_DETAIL_CHARS = 300
# A child whose socket closed is dead or dying; longer than this, it is killed.
_EXIT_WAIT_S = 10.0
# Starting an interpreter and importing polars takes ~0.2 s; a loaded machine may take far
# longer, and that is not the input's fault, so it is not counted in a call's timeout_s.
_START_TIMEOUT_S = 120.0


class IsolatedCallError(Exception):
    """The function did not return in the child; `kind` says why, `detail` says it for people."""

    def __init__(self, kind: FailureKind, detail: str, error: BaseException | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind: FailureKind = kind
        self.detail = detail
        self.error = error


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    connection: Connection
    stderr: IO[bytes]
    ready: bool = False
    stderr_mark: int = 0  # where the current call's stderr starts

    def last_words(self) -> str:
        """The telling line of what the child wrote to stderr during the last call ('' if
        nothing): a failed allocation wherever it is, else the last line that is not a
        backtrace's frame or note."""
        self.stderr.seek(max(self.stderr_mark, self.stderr.seek(0, os.SEEK_END) - _TAIL_BYTES))
        lines = [line.rstrip() for line in self.stderr.read().decode(errors="replace").splitlines()]
        failed = [line for line in lines if _ALLOCATION_FAILED in line]
        telling = failed or [line for line in lines if line and not line.startswith(_NOISE)]
        return telling[-1].strip()[:_DETAIL_CHARS] if telling else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.connection.close()
        self.stderr.close()


class IsolatedFunction:
    """`target` ("package.module:function") called in a reused child process; a context
    manager that stops the child on exit."""

    def __init__(self, target: str, memory_limit_mb: int, timeout_s: float) -> None:
        module, _, name = target.partition(":")
        if not module or not name:
            raise ValueError(f"target must be 'package.module:function', got {target!r}")
        if memory_limit_mb <= 0:
            raise ValueError(f"memory_limit_mb must be > 0, got {memory_limit_mb}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.target = target
        self.memory_limit_mb = memory_limit_mb
        self.timeout_s = timeout_s
        self._child: _Child | None = None

    def __enter__(self) -> IsolatedFunction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child, if one runs; the next call starts another."""
        child, self._child = self._child, None
        if child is not None:
            child.close()

    def __call__(self, *args: Any) -> Any:
        child = self._child
        if child is None or child.process.poll() is not None:
            self.close()
            child = self._child = self._start()
        child.stderr_mark = child.stderr.seek(0, os.SEEK_END)
        try:
            child.connection.send(args)
            if not child.ready:
                self._await_ready(child)
            if not child.connection.poll(self.timeout_s):
                self.close()
                raise IsolatedCallError("timed_out", f"gave no answer within {self.timeout_s:g} s")
            status, *reply = child.connection.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise self._death() from None
        if status == "ok":
            return reply[0]
        kind, detail, error, retire = reply
        if retire:
            self.close()
        if kind == "out_of_memory":
            raise IsolatedCallError(kind, f"{self._over_limit()}: {detail}", error)
        raise IsolatedCallError(kind, f"raised {detail}", error)

    def _start(self) -> _Child:
        ours, theirs = socket.socketpair()
        # The child appends to its own descriptor of the file, so where the parent reads from
        # never moves where the child writes.
        fd, path = tempfile.mkstemp(prefix="isolated-", suffix=".stderr")
        stderr = os.fdopen(fd, "rb")
        writer = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.unlink(path)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=writer,
                stderr=writer,
                env={**os.environ, "MALLOC_ARENA_MAX": "2"},
            )
        except BaseException:
            ours.close()
            stderr.close()
            raise
        finally:
            theirs.close()
            os.close(writer)
        connection = Connection(ours.detach())
        setup = {"path": sys.path, "target": self.target, "memory_limit_mb": self.memory_limit_mb}
        connection.send(setup)
        return _Child(process, connection, stderr)

    def _await_ready(self, child: _Child) -> None:
        if not child.connection.poll(_START_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"the child for {self.target} did not start in {_START_TIMEOUT_S} s")
        status, detail = child.connection.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(f"the child could not load {self.target}:\n{detail}")
        child.ready = True

    def _over_limit(self) -> str:
        return f"exceeded the memory limit of {self.memory_limit_mb} MiB"

    def _death(self) -> Exception:
        """Why the child stopped answering (it is then discarded)."""
        child, self._child = self._child, None
        assert child is not None
        try:
            code = child.process.wait(_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            code = child.process.wait()
        last_words = child.last_words()
        ready = child.ready
        child.close()
        if not ready:
            return RuntimeError(f"the child for {self.target} died on start: {last_words}")
        how = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit code {code}"
        if _ALLOCATION_FAILED in last_words or last_words.startswith("MemoryError"):
            detail = f"{self._over_limit()}: {last_words} ({how})"
            return IsolatedCallError("out_of_memory", detail)
        said = f": {last_words}" if last_words else ""
        return IsolatedCallError("crashed", f"crashed: {how}{said}")


def _failure(error: BaseException) -> tuple[bytes, bool]:
    """The reply for a call that raised, and whether the child retires after sending it (after
    a MemoryError or a BaseException that is not an Exception)."""
    kind = "out_of_memory" if isinstance(error, MemoryError) else "raised"
    retire = isinstance(error, MemoryError) or not isinstance(error, Exception)
    message = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    detail = detail[:_DETAIL_CHARS]
    try:
        pickle.loads(pickle.dumps(error))  # sent only if it can be rebuilt on the other side
        return pickle.dumps(("failed", kind, detail, error, retire)), retire
    except Exception:
        return pickle.dumps(("failed", kind, detail, None, retire)), retire


def _limit_memory(budget_mb: int) -> None:
    _, core_hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, core_hard))  # a crash writes no core file
    try:
        with open("/proc/self/statm") as statm:
            held_bytes = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return
    limit = held_bytes + budget_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _serve(fd: int) -> None:
    """The child: load the function, then answer calls until the parent closes the socket."""
    # Ctrl-C reaches the whole process group; the parent decides what it interrupts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(fd)
    setup = connection.recv()
    try:
        sys.path[:] = setup["path"]
        module, _, name = setup["target"].partition(":")
        function = getattr(importlib.import_module(module), name)
    except BaseException:
        connection.send(("broken", traceback.format_exc()))
        return
    _limit_memory(setup["memory_limit_mb"])
    connection.send(("ready", None))
    while True:
        try:
            args = connection.recv()
        except EOFError:
            return
        try:
            reply, retire = pickle.dumps(("ok", function(*args)), pickle.HIGHEST_PROTOCOL), False
        except BaseException as error:
            reply, retire = _failure(error)
        connection.send_bytes(reply)
        if retire:
            return


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
