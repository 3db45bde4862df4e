"""Reading byte ranges of source files: slice rules, coalescing, concurrent fetches.

Planning is pure (:func:`plan_reads`); :func:`fetch_ranges` executes a plan on the source
filesystem, asynchronously where it is async and in a worker thread where it is not.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem

__all__ = ["absolute_range", "Request", "MergedRead", "plan_reads", "fetch_ranges"]

#: Ranges of one file closer than this are fetched in one request.
DEFAULT_MAX_GAP = 64 * 1024
#: A merged request never grows beyond this.
DEFAULT_MAX_BLOCK = 32 * 1024 * 1024
#: Merged requests in flight at once.
DEFAULT_CONCURRENCY = 16


def absolute_range(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """``[start, end)`` within a block of ``size`` bytes, with Python slice semantics.

    ``None`` means the block's start or end; negative values count from its end, as in
    fsspec's ``ReferenceFileSystem``.
    """
    begin, stop, _ = slice(start, end).indices(size)
    return begin, max(begin, stop)


@dataclass(frozen=True, slots=True)
class Request:
    """Bytes ``[start, end)`` of the source file ``url``."""

    url: str
    start: int
    end: int


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
                plan.append(MergedRead(url, start, end, tuple(current)))
            current, start, end = [i], req.start, req.end
        if current:
            plan.append(MergedRead(url, start, end, tuple(current)))
    return plan


async def _fetch_one(fs: AbstractFileSystem, url: str, start: int, end: int) -> bytes:
    if start == end:
        return b""
    if isinstance(fs, AsyncFileSystem) and fs.async_impl:
        return await fs._cat_file(url, start=start, end=end)
    return await asyncio.to_thread(fs.cat_file, url, start=start, end=end)


async def fetch_ranges(
    fs: AbstractFileSystem,
    requests: list[Request],
    max_gap: int = DEFAULT_MAX_GAP,
    max_block: int = DEFAULT_MAX_BLOCK,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[bytes | BaseException]:
    """The bytes of each request, or the exception that its read raised.

    Parameters
    ----------
    fs
        The source filesystem.
    requests
        What to read.
    max_gap, max_block
        Coalescing limits (see :func:`plan_reads`).
    concurrency
        Merged requests in flight at once.
    """
    plan = plan_reads(requests, max_gap, max_block)
    semaphore = asyncio.Semaphore(concurrency)
    results: list[bytes | BaseException] = [b""] * len(requests)

    async def run(read: MergedRead) -> None:
        async with semaphore:
            try:
                data = await _fetch_one(fs, read.url, read.start, read.end)
            except Exception as e:
                for i in read.members:
                    results[i] = e
                return
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

    await asyncio.gather(*(run(read) for read in plan))
    return results
