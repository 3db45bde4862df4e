"""A small pool of worker processes for scanning, started as ``python -m fsspec_virtual.worker``.

Why not :mod:`multiprocessing`: h5py holds a global lock, so scanning needs processes, but
``fork`` from a process that runs event-loop threads (zarr's, fsspec's) can deadlock, and
``spawn``/``forkserver`` re-import the user's ``__main__`` script, which re-runs any
unguarded script that opened a store. Workers started as their own module import
nothing of the caller's. They also let a scan that hangs (kerchunk#588) be killed on a
timeout, which a thread cannot be.

Tasks are ``(function, args)`` pairs of module-level functions, pickled over the
worker's stdin; replies are ``(ok, result_or_exception)`` over its stdout.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["WorkerPool", "WorkerTimeout", "shared_pool", "default_workers"]

_HEADER = struct.Struct("<Q")


class WorkerTimeout(TimeoutError):
    """A task ran longer than its timeout; its worker was killed."""


def default_workers() -> int:
    """Number of scan processes used by default: the usable cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def send_message(stream: Any, obj: Any) -> None:
    """Write one length-prefixed pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    import time

    chunks = []
    while n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise WorkerTimeout("no reply in time")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("worker process ended")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive_message(fd: int, timeout: float | None = None) -> Any:
    """Read one length-prefixed pickle from a file descriptor."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exactly(fd, size, deadline))


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fsspec_virtual.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def run(self, message: bytes, timeout: float | None) -> Any:
        """Send one pickled ``(function, args)`` task; the reply, unpickled."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(_HEADER.pack(len(message)))
        self.process.stdin.write(message)
        self.process.stdin.flush()
        return receive_message(self.process.stdout.fileno(), timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


class WorkerPool:
    """Worker processes that run module-level functions on pickled arguments.

    Parameters
    ----------
    size
        Number of processes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        for _ in range(size):
            self._add_worker()

    def _add_worker(self) -> None:
        worker = _Worker()
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)

    def _run_one(
        self, function: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        worker = self._idle.get()
        try:
            message = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # nothing was sent: the worker is still idle
            self._idle.put(worker)
            return TypeError(f"cannot send this task to a worker process: {e}")
        try:
            ok, value = worker.run(message, timeout)
        except (WorkerTimeout, EOFError, OSError) as e:
            worker.kill()
            with self._lock:
                self._all.remove(worker)
            self._add_worker()
            if isinstance(e, WorkerTimeout):
                return WorkerTimeout(f"timed out after {timeout} s; the worker was killed")
            return RuntimeError(f"the worker process died: {e}")
        self._idle.put(worker)
        return value if ok else _as_exception(value)

    def map(
        self,
        function: Callable[..., Any],
        arguments: Sequence[tuple[Any, ...]],
        timeout: float | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """``function(*args)`` for each args, in order; a failure is returned as its exception.

        Parameters
        ----------
        function
            A module-level function (pickled by reference).
        arguments
            One tuple of arguments per call.
        timeout
            Seconds one call may take before its worker is killed.
        on_done
            Called (from a pool thread) with the index of each call as it completes.
        """
        results: list[Any] = [None] * len(arguments)
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(arguments)):
            pending.put(i)

        def drain() -> None:
            while True:
                try:
                    i = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[i] = self._run_one(function, arguments[i], timeout)
                except Exception as e:  # every call gets a result: callers zip them
                    results[i] = e
                if on_done is not None:
                    on_done(i)

        threads = [threading.Thread(target=drain) for _ in range(min(self.size, len(arguments)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()


def _as_exception(value: Any) -> BaseException:
    return value if isinstance(value, BaseException) else RuntimeError(str(value))


_shared: dict[int, WorkerPool] = {}
_shared_lock = threading.Lock()


def shared_pool(size: int) -> WorkerPool:
    """The process-wide pool of ``size`` workers, started on first use, stopped at exit."""
    with _shared_lock:
        pool = _shared.get(size)
        if pool is None:
            pool = _shared[size] = WorkerPool(size)
        return pool


def pool_running(size: int) -> bool:
    """Whether the shared pool of ``size`` workers is already started."""
    return size in _shared


@atexit.register
def _close_shared() -> None:
    for pool in _shared.values():
        pool.close()
