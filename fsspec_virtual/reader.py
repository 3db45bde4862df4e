"""Reading byte ranges of source files: slice rules, coalescing, batching.

Planning is pure (:func:`plan_reads`); :func:`fetch_ranges` hands a plan to the source's
adapter (:mod:`fsspec_virtual.access`), which reads each range checked against the version
of the file that was scanned.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem

from .access import FileVersion, Read, adapter_for
from .errors import StaleSourceError

__all__ = [
    "ReadOptions",
    "open_as_scanned",
    "absolute_range",
    "Request",
    "MergedRead",
    "plan_reads",
    "fetch_ranges",
    "read_one",
    "Transform",
    "transformed",
]

#: Ranges of one file closer than this are fetched in one request.
DEFAULT_MAX_GAP = 64 * 1024
#: A merged request never grows beyond this.
DEFAULT_MAX_BLOCK = 32 * 1024 * 1024
#: Merged requests in flight at once.
DEFAULT_CONCURRENCY = 16
#: Transforms (decoding) of more input bytes than this run in worker threads.
_TRANSFORM_IN_THREAD_BYTES = 64 * 1024

#: What a read's bytes become before they are handed back (a chunk decoded, say).
Transform = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How chunk reads become requests to the source.

    Attributes
    ----------
    max_gap
        Ranges of one file at most this many bytes apart are fetched in one request
        (the gap is read and dropped).
    max_block
        A merged request never grows beyond this many bytes.
    concurrency
        Requests in flight at once (async filesystems), or worker-thread calls
        (blocking ones).
    """

    max_gap: int = DEFAULT_MAX_GAP
    max_block: int = DEFAULT_MAX_BLOCK
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        for name in ("max_gap", "max_block", "concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "concurrency" else 0):
                raise ValueError(
                    f"{name} must be a non-negative integer (concurrency >= 1), not {value!r}"
                )


DEFAULT_READ_OPTIONS = ReadOptions()


def absolute_range(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """``[start, end)`` within a block of ``size`` bytes, with Python slice semantics.

    ``None`` means the block's start or end; negative values count from its end, as in
    fsspec's ``ReferenceFileSystem``.
    """
    begin, stop, _ = slice(start, end).indices(size)
    return begin, max(begin, stop)


#: A file's version when scanned (reads are checked against it).
Version = FileVersion

#: Bytes ``[start, end)`` of the source file ``url``, as scanned at ``version``.
Request = Read


@dataclass(frozen=True, slots=True)
class MergedRead:
    """One request to the source, serving several :class:`Request` s.

    Attributes
    ----------
    url, start, end
        The range fetched.
    members
        Indices (into the request list) of the requests it serves.
    """

    url: str
    start: int
    end: int
    members: tuple[int, ...]
    version: FileVersion | None = None


def plan_reads(
    requests: list[Request],
    max_gap: int = DEFAULT_MAX_GAP,
    max_block: int = DEFAULT_MAX_BLOCK,
) -> list[MergedRead]:
    """Group requests by file *version* and merge overlapping, adjacent and nearby ranges.

    Requests for one URL at two versions (two snapshots of a rewritten file, read in one
    batch) are never merged: each read is checked against its own version.
    """
    by_file: dict[tuple[str, FileVersion | None], list[int]] = defaultdict(list)
    for i, req in enumerate(requests):
        by_file[(req.url, req.version)].append(i)
    plan: list[MergedRead] = []
    for (url, version), indices in by_file.items():
        indices.sort(key=lambda i: (requests[i].start, requests[i].end))
        current: list[int] = []
        start = end = 0
        for i in indices:
            req = requests[i]
            if current and req.start - end <= max_gap and max(end, req.end) - start <= max_block:
                end = max(end, req.end)
                current.append(i)
                continue
            if current:
                plan.append(MergedRead(url, start, end, tuple(current), version))
            current, start, end = [i], req.start, req.end
        if current:
            plan.append(MergedRead(url, start, end, tuple(current), version))
    return plan


def open_as_scanned(
    fs: AbstractFileSystem, url: str, version: FileVersion | None, **options: Any
) -> Any:
    """``fs.open(url, "rb", **options)``, whose reads fail where the protocol can tell that
    the file is no longer ``version`` (see ``SourceAdapter.open_for_scan``)."""
    return adapter_for(fs).open_for_scan(url, version, **options)


def _reads(plan: list[MergedRead]) -> list[Read]:
    return [Read(m.url, m.start, m.end, m.version) for m in plan]


async def _execute(
    fs: AbstractFileSystem, plan: list[MergedRead], concurrency: int
) -> list[bytes | BaseException]:
    """The bytes of each merged read (or its exception), in plan order."""
    return await adapter_for(fs).read_ranges(_reads(plan), concurrency)


def _scatter(
    requests: list[Request], plan: list[MergedRead], fetched: list[bytes | BaseException]
) -> list[bytes | BaseException]:
    results: list[bytes | BaseException] = [b""] * len(requests)
    for read, data in zip(plan, fetched):
        if isinstance(data, BaseException):
            for i in read.members:
                results[i] = data
            continue
        if len(read.members) == 1 and len(data) == read.end - read.start:
            results[read.members[0]] = data  # the common case: no copy
            continue
        view = memoryview(data)
        for i in read.members:
            req = requests[i]
            if req.end - read.start > len(data):
                results[i] = StaleSourceError(
                    req.url,
                    f"asked for bytes {req.start}-{req.end}, the file ends at "
                    f"{read.start + len(data)}: it is shorter than when it was scanned",
                )
            else:
                results[i] = bytes(view[req.start - read.start : req.end - read.start])
    return results


async def fetch_ranges(
    fs: AbstractFileSystem,
    requests: list[Request],
    options: ReadOptions = DEFAULT_READ_OPTIONS,
) -> list[bytes | BaseException]:
    """The bytes of each request, or the exception that its read raised.

    Parameters
    ----------
    fs
        The source filesystem.
    requests
        What to read.
    options
        Coalescing limits and concurrency.
    """
    plan = plan_reads(requests, options.max_gap, options.max_block)
    return _scatter(requests, plan, await _execute(fs, plan, options.concurrency))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _settle(future: asyncio.Future[bytes], result: bytes | BaseException) -> None:
    if future.done():  # cancelled meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _applied(transform: Transform, data: bytes) -> bytes | BaseException:
    try:
        return transform(data)
    except Exception as e:
        return e


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[bytes]", Transform, bytes]


class _TransformThreads:
    """Threads, one per core, that put bytes through their transforms (decoding releases
    the GIL), each result handed to its future's loop as soon as it is ready.

    One chunk per job, taken by whichever thread is free: the loop copies a decoded chunk
    out while the threads decode the next ones, and its reader asks for more meanwhile.
    (A worker-thread call per core and batch left the cores idle while the loop handled
    the batch's results, and waited for the slower call.) The threads are started on first
    use and again in a forked child, whose parent's threads do not exist there.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._started = False

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[bytes],
        transform: Transform,
        data: bytes,
    ) -> None:
        """Put ``data`` through ``transform`` in a thread; its result (or error) settles
        ``future`` on ``loop``."""
        if not self._started:
            self._start()
        self._jobs.put((loop, future, transform, data))

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for k in range(_cores()):
                thread = threading.Thread(
                    target=self._work, args=(self._jobs,), name=f"vz-decode_{k}", daemon=True
                )
                thread.start()
            self._started = True

    @staticmethod
    def _work(jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            loop, future, transform, data = jobs.get()
            result: bytes | BaseException
            try:
                result = transform(data)
            except BaseException as e:  # handed over: a dead thread would strand the reader
                result = e
            del data
            try:
                loop.call_soon_threadsafe(_settle, future, result)
            except RuntimeError:  # the loop was closed meanwhile: nobody waits
                pass
            del loop, future, transform, result


_transform_threads = _TransformThreads()


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    items: Sequence[tuple[bytes | BaseException, Transform | None, asyncio.Future[bytes]]],
) -> None:
    """Settle each future with its data put through its transform: small amounts here (a
    thread hand-off costs more than decoding a few small chunks), the rest in threads."""
    todo = [
        (data, transform, future)
        for data, transform, future in items
        if transform is not None and isinstance(data, bytes) and not future.done()
    ]
    inline = sum(len(data) for data, _, _ in todo) <= _TRANSFORM_IN_THREAD_BYTES  # type: ignore[arg-type]
    for data, transform, future in items:
        if future.done():
            continue
        if transform is None or not isinstance(data, bytes):
            _settle(future, data)
        elif inline:
            _settle(future, _applied(transform, data))
        else:
            _transform_threads.submit(loop, future, transform, data)


async def transformed(
    results: Sequence[bytes | BaseException], transforms: Sequence[Transform | None]
) -> list[bytes | BaseException]:
    """Each result put through its transform (errors kept, a transform's own error in its
    place), in threads when there is enough to do (decoding releases the GIL)."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[bytes]] = [loop.create_future() for _ in results]
    _hand_over(loop, list(zip(results, transforms, futures)))
    done = await asyncio.gather(*futures, return_exceptions=True)
    return list(done)


_Pending = tuple[
    AbstractFileSystem, Request, ReadOptions, "Transform | None", "asyncio.Future[bytes]"
]


class ReadBatcher:
    """Gathers the single reads issued in one event-loop turn into one :func:`fetch_ranges`.

    zarr asks for every chunk with its own ``_cat_file`` call, concurrently. Batching them
    lets nearby chunks of one file be merged into one request, and makes one worker-thread
    hand-off serve many chunks.
    """

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    async def read(
        self,
        fs: AbstractFileSystem,
        request: Request,
        options: ReadOptions,
        transform: Transform | None = None,
    ) -> bytes:
        """The bytes of one request (put through ``transform``), fetched together with the
        others of this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((fs, request, options, transform, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        groups: dict[tuple[int, ReadOptions], list[_Pending]] = {}
        for item in batch:
            groups.setdefault((id(item[0]), item[2]), []).append(item)
        loop = asyncio.get_running_loop()
        for items in groups.values():
            fs, _, options, _, _ = items[0]
            requests = [item[1] for item in items]
            try:
                plan = plan_reads(requests, options.max_gap, options.max_block)
                # a few small local reads: done now, not in a task one loop turn later
                fetched = adapter_for(fs).read_ranges_at_once(_reads(plan))
                if fetched is not None:
                    results = _scatter(requests, plan, fetched)
                    _hand_over(loop, [(d, i[3], i[4]) for i, d in zip(items, results)])
                    continue
            except BaseException as e:
                _hand_over(loop, [(e, None, item[4]) for item in items])
                continue
            task = asyncio.ensure_future(self._run(items, requests, plan))
            _background.add(task)
            task.add_done_callback(_background.discard)

    @staticmethod
    async def _run(items: list[_Pending], requests: list[Request], plan: list[MergedRead]) -> None:
        fs, _, options, _, _ = items[0]
        fetched: list[bytes | BaseException]
        try:
            fetched = _scatter(requests, plan, await _execute(fs, plan, options.concurrency))
        except BaseException as e:
            fetched = [e] * len(items)
        loop = asyncio.get_running_loop()
        _hand_over(loop, [(data, item[3], item[4]) for item, data in zip(items, fetched)])


_background: set[asyncio.Task[None]] = set()
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadBatcher] = (
    weakref.WeakKeyDictionary()
)


async def read_one(
    fs: AbstractFileSystem,
    request: Request,
    options: ReadOptions = DEFAULT_READ_OPTIONS,
    transform: Transform | None = None,
) -> bytes:
    """The bytes of one request, batched with the other reads of this event-loop turn;
    put through ``transform`` (with the others' transforms: see :func:`transformed`)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = ReadBatcher()
    return await batcher.read(fs, request, options, transform)
