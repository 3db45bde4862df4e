"""Reading byte ranges of source files: slice rules, coalescing, concurrent fetches.

Planning is pure (:func:`plan_reads`); :func:`fetch_ranges` executes a plan on the source
filesystem, asynchronously where it is async and in a worker thread where it is not.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import weakref
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from .errors import (
    RangeNotSupportedError,
    SourceReadError,
    StaleSourceError,
    VirtualZarrError,
)
from .source import ETAG_PREFIX, http_headers, speaks, speaks_http, strong_etag

__all__ = [
    "ReadOptions",
    "open_as_scanned",
    "absolute_range",
    "Request",
    "MergedRead",
    "plan_reads",
    "fetch_ranges",
    "read_one",
]

T = TypeVar("T")

#: Ranges of one file closer than this are fetched in one request.
DEFAULT_MAX_GAP = 64 * 1024
#: A merged request never grows beyond this.
DEFAULT_MAX_BLOCK = 32 * 1024 * 1024
#: Merged requests in flight at once.
DEFAULT_CONCURRENCY = 16
#: Reads done by one worker-thread call, for blocking filesystems.
_READS_PER_THREAD_CALL = 8
#: Local reads this small are done on the event loop itself.
_INLINE_LOCAL_BYTES = 256 * 1024


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


#: What a source file was when scanned: its size and identity (mtime or ETag).
Version = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Request:
    """Bytes ``[start, end)`` of the source file ``url``, as scanned at ``version``."""

    url: str
    start: int
    end: int
    version: Version | None = None


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
    version: Version | None = None


def plan_reads(
    requests: list[Request],
    max_gap: int = DEFAULT_MAX_GAP,
    max_block: int = DEFAULT_MAX_BLOCK,
) -> list[MergedRead]:
    """Group requests by file and merge overlapping, adjacent and nearby ranges."""
    by_url: dict[str, list[int]] = defaultdict(list)
    for i, req in enumerate(requests):
        by_url[req.url].append(i)
    plan: list[MergedRead] = []
    for url, indices in by_url.items():
        version = requests[indices[0]].version
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


def check_version(path: str, stat: os.stat_result, version: Version) -> None:
    """Raise :class:`StaleSourceError` unless a local file is as it was scanned."""
    size, identity = version
    if stat.st_size != size or (identity and str(stat.st_mtime) != identity):
        raise StaleSourceError(
            path,
            f"size {stat.st_size}, mtime {stat.st_mtime}; scanned: size {size}, mtime {identity}",
        )


def _read_local(path: str, start: int, end: int, version: Version | None = None) -> bytes:
    # os.pread: no Python file object, no seek, safe from any thread; the fstat of the
    # descriptor read from costs about a microsecond and proves the bytes are the scanned ones
    fd = os.open(path, os.O_RDONLY)
    try:
        if version is not None:
            check_version(path, os.fstat(fd), version)
        return os.pread(fd, end - start, start)
    finally:
        os.close(fd)


def _precondition_failed(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is a server's "412 Precondition Failed"."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if getattr(seen, "status", None) == 412:  # aiohttp.ClientResponseError
            return True
        response = getattr(seen, "response", None)  # botocore ClientError
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def described_error(url: str, error: BaseException) -> BaseException:
    """The error a failed read of ``url`` raises: never a bare ``FileNotFoundError`` (zarr
    would fill the chunk and serve it as data), always naming the file.

    A vanished file, or one whose ETag no longer matches, is stale; other failures (after
    the retries the source filesystem makes) are :class:`SourceReadError` s.
    """
    if isinstance(error, VirtualZarrError):
        return error
    if isinstance(error, FileNotFoundError):
        return StaleSourceError(url, f"it no longer exists: {error}")
    if _precondition_failed(error):
        return StaleSourceError(url, "its ETag changed (the server refused If-Match)")
    if isinstance(error, Exception):
        return SourceReadError(url, f"{type(error).__name__}: {error}")
    return error


def _read_sync(fs: AbstractFileSystem, read: MergedRead) -> bytes | BaseException:
    if read.start == read.end:
        return b""
    try:
        if isinstance(fs, LocalFileSystem):
            return _read_local(read.url, read.start, read.end, read.version)
        return fs.cat_file(read.url, start=read.start, end=read.end)
    except Exception as e:
        return described_error(read.url, e)


def _read_many_sync(fs: AbstractFileSystem, reads: list[MergedRead]) -> list[bytes | BaseException]:
    return [_read_sync(fs, read) for read in reads]


async def on_own_loop(fs: AsyncFileSystem, coroutine: Coroutine[Any, Any, T]) -> T:
    """Await ``coroutine`` of ``fs`` on the event loop ``fs`` belongs to.

    A filesystem made in blocking mode (``asynchronous=False``, as fsspec makes them) owns
    sessions bound to fsspec's I/O loop (aiohttp's for HTTP): awaiting its coroutines on
    another loop (zarr's) fails, so they run there and we await the result.
    """
    own = getattr(fs, "_loop", None)
    if fs.asynchronous or own is None or own is asyncio.get_running_loop():
        return await coroutine
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, own))


def etag_of(version: Version | None) -> str | None:
    """The ETag a file was scanned at, if its identity is one."""
    if version is None or not version[1].startswith(ETAG_PREFIX):
        return None
    return version[1][len(ETAG_PREFIX) :]


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def same_etag(a: str, b: str) -> bool:
    """ETags equal by the weak comparison (``W/"x"`` equals ``"x"``)."""
    return a.removeprefix("W/") == b.removeprefix("W/")


async def _read_http(fs: AsyncFileSystem, read: MergedRead) -> bytes:
    """One range of an HTTP file, its answer checked against the version scanned.

    ``If-Match`` goes with strong ETags (a weak one never matches it); whatever the server
    does with it, an answer whose ``ETag`` or ``Content-Range`` total differs from the
    scanned file's is refused as stale, and an answer that is not the range asked for
    (status 200 to a range request: the server ignores ``Range``) is refused too.
    """
    etag = etag_of(read.version)
    extra = {"Range": f"bytes={read.start}-{read.end - 1}"}
    if read.version is not None and (strong := strong_etag(read.version[1])):
        extra["If-Match"] = strong
    kwargs = {**fs.kwargs, "headers": http_headers(fs, **extra)}  # type: ignore[attr-defined]
    session = await fs.set_session()  # type: ignore[attr-defined]
    async with session.get(fs.encode_url(read.url), **kwargs) as response:  # type: ignore[attr-defined]
        if response.status == 404:
            raise FileNotFoundError(read.url)
        if response.status == 412:
            raise StaleSourceError(read.url, "its ETag changed (the server refused If-Match)")
        response.raise_for_status()
        answered = response.headers.get("ETag")
        if etag and answered and not same_etag(answered, etag):
            raise StaleSourceError(read.url, f"its ETag is {answered}, scanned: {etag}")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if read.version is not None and match and match.group(3) != "*":
            if int(match.group(3)) != read.version[0]:
                raise StaleSourceError(
                    read.url, f"its size is {match.group(3)}, scanned: {read.version[0]}"
                )
        data = await response.read()
    if response.status != 206 and not (read.start == 0 and len(data) == read.end):
        raise RangeNotSupportedError(read.url)
    return data


def open_as_scanned(
    fs: AbstractFileSystem, url: str, version: Version | None, **options: Any
) -> Any:
    """``fs.open(url, "rb", **options)``, whose reads fail if the file is no longer the
    version scanned: HTTP requests carry ``If-Match``; s3fs sends the ETag it finds at open
    (checked here against the scanned one) with each of its requests."""
    etag = strong_etag(version[1]) if version is not None else None
    try:
        if etag and speaks_http(fs):
            options["headers"] = http_headers(fs, **{"If-Match": etag})
        handle = fs.open(url, mode="rb", **options)
    except Exception as e:
        raise described_error(url, e) from e
    details = getattr(handle, "details", None)
    if etag and speaks(fs, "s3", "s3a") and isinstance(details, dict):
        if details.get("ETag") != etag:
            handle.close()
            raise StaleSourceError(url, f"its ETag is {details.get('ETag')}, scanned: {etag}")
    return handle


async def read_remote(fs: AsyncFileSystem, read: MergedRead) -> bytes:
    """Bytes ``[start, end)`` of a file on an async filesystem, as it was scanned.

    Where the file was scanned with an ETag and the filesystem speaks HTTP or S3, the
    request carries it as ``If-Match``: a file rewritten since is refused by the server
    (and becomes a :class:`StaleSourceError`) in the same request that reads it. HTTP
    answers are checked too (see :func:`_read_http`). An answer longer than asked for means
    the server ignored ``Range``.
    """
    etag = etag_of(read.version)
    if speaks_http(fs) and hasattr(fs, "set_session"):
        data = await _read_http(fs, read)
    elif etag and speaks(fs, "s3", "s3a") and hasattr(fs, "_call_s3"):
        bucket, key, version_id = fs.split_path(read.url)  # type: ignore[attr-defined]
        extra = {"VersionId": version_id} if version_id else {}
        response = await fs._call_s3(  # type: ignore[attr-defined]
            "get_object",
            Bucket=bucket,
            Key=key,
            Range=f"bytes={read.start}-{read.end - 1}",
            IfMatch=etag,
            **extra,
        )
        try:
            answered = response.get("ETag")
            if answered and not same_etag(answered, etag):  # a server ignoring IfMatch
                raise StaleSourceError(read.url, f"its ETag is {answered}, scanned: {etag}")
            data = await response["Body"].read()
        finally:
            response["Body"].close()
    else:
        data = await fs._cat_file(read.url, start=read.start, end=read.end)
    if len(data) > read.end - read.start:
        raise RangeNotSupportedError(read.url)
    return data


async def _execute(
    fs: AbstractFileSystem, plan: list[MergedRead], concurrency: int
) -> list[bytes | BaseException]:
    """The bytes of each merged read (or its exception), in plan order."""
    if isinstance(fs, AsyncFileSystem) and fs.async_impl:

        async def read_all() -> list[bytes | BaseException]:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(read: MergedRead) -> bytes | BaseException:
                if read.start == read.end:
                    return b""
                async with semaphore:
                    try:
                        return await read_remote(fs, read)
                    except Exception as e:
                        return described_error(read.url, e)

            return list(await asyncio.gather(*(one(read) for read in plan)))

        return await on_own_loop(fs, read_all())
    if (
        isinstance(fs, LocalFileSystem)
        and sum(r.end - r.start for r in plan) <= _INLINE_LOCAL_BYTES
    ):
        # a thread hand-off costs more than pread-ing a few small ranges of local files
        return _read_many_sync(fs, plan)
    # A blocking filesystem: a few worker-thread calls each doing several reads, rather
    # than one thread hand-off per chunk (which costs more than reading a small chunk).
    n_calls = max(1, min(concurrency, math.ceil(len(plan) / _READS_PER_THREAD_CALL)))
    slices = [plan[i::n_calls] for i in range(n_calls)]
    done = await asyncio.gather(*(asyncio.to_thread(_read_many_sync, fs, s) for s in slices))
    out: list[bytes | BaseException] = [b""] * len(plan)
    for i, results in enumerate(done):
        out[i::n_calls] = results
    return out


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
                results[i] = OSError(
                    f"{req.url}: asked for bytes {req.start}-{req.end}, the file ends at "
                    f"{read.start + len(data)} (it is shorter than when it was scanned)"
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


_Pending = tuple[AbstractFileSystem, Request, ReadOptions, "asyncio.Future[bytes]"]


class ReadBatcher:
    """Gathers the single reads issued in one event-loop turn into one :func:`fetch_ranges`.

    zarr asks for every chunk with its own ``_cat_file`` call, concurrently. Batching them
    lets nearby chunks of one file be merged into one request, and makes one worker-thread
    hand-off serve many chunks.
    """

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    async def read(self, fs: AbstractFileSystem, request: Request, options: ReadOptions) -> bytes:
        """The bytes of one request, fetched together with the others of this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((fs, request, options, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        groups: dict[tuple[int, ReadOptions], list[_Pending]] = {}
        for item in batch:
            groups.setdefault((id(item[0]), item[2]), []).append(item)
        for items in groups.values():
            task = asyncio.ensure_future(self._run(items))
            _background.add(task)
            task.add_done_callback(_background.discard)

    @staticmethod
    async def _run(items: list[_Pending]) -> None:
        fs, _, options, _ = items[0]
        try:
            results = await fetch_ranges(fs, [request for _, request, _, _ in items], options)
        except BaseException as e:
            results = [e] * len(items)
        for (_, _, _, future), result in zip(items, results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


_background: set[asyncio.Task[None]] = set()
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadBatcher] = (
    weakref.WeakKeyDictionary()
)


async def read_one(
    fs: AbstractFileSystem, request: Request, options: ReadOptions = DEFAULT_READ_OPTIONS
) -> bytes:
    """The bytes of one request, batched with the other reads of this event-loop turn."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = ReadBatcher()
    return await batcher.read(fs, request, options)
