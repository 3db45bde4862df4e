"""Read-ahead for remote sources: the chunks after the ones a reader asks for, in its order.

zarr keeps about ten chunk requests in flight and Dask's threads one each, so over a
network with a round trip of tens of milliseconds a whole-variable read is bound by round
trips, not bandwidth. Once a reader has asked for two consecutive chunks of an array (in
C order of its chunk grid, forwards as zarr does or backwards as Dask does), the store
starts reading the next ones in that direction, each file's ranges merged as usual, and
hands them over when they are asked for.

What is read ahead is a source byte range at the version the snapshot scanned, read with
the same version check as any other read: a buffered range is exactly what a read asked
for at that moment would have returned, and it is used once. The buffer is bounded in
bytes per event loop; ranges not asked for within :data:`MAX_AGE` seconds are dropped.
Local files are not read ahead (a read costs less than the bookkeeping).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from fsspec import AbstractFileSystem

from .access import FileVersion, adapter_for
from .access.adapters import SourceAdapter, reads_async
from .keys import ChunkSource, RangeSource, chunk_index
from .manifest import VirtualArray
from .reader import ReadOptions, Request, fetch_ranges

if TYPE_CHECKING:
    from .state import CollectionState

__all__ = [
    "DEFAULT_READ_AHEAD",
    "MAX_AGE",
    "ReadAhead",
    "read_ahead_for",
    "note_chunk_read",
    "reads_ahead",
    "taken_ahead",
]

#: Bytes read ahead and not yet asked for, at most, per event loop (all stores together).
DEFAULT_READ_AHEAD = 64 * 1024 * 1024
#: Seconds a range read ahead is kept for a reader to ask for it.
MAX_AGE = 5.0
#: Chunks read ahead past the one asked for, at most.
WINDOW_CHUNKS = 64
#: Chunks of the window not yet read ahead before more are read.
BATCH_CHUNKS = 16
#: A chunk counts as asked for lately if asked among the last this many of its array: more
#: than a client keeps in flight (zarr: 10), fewer than a second pass over a small array.
_LATELY = WINDOW_CHUNKS
#: Arrays whose reading is followed (the ones read last).
_ARRAYS_REMEMBERED = 256


def reads_ahead(fs: AbstractFileSystem) -> bool:
    """Whether reads from ``fs`` are worth reading ahead: a remote filesystem (HTTP, S3 or
    another asynchronous one other than ``memory``), where a request costs a round trip."""
    from .access.http import HTTPAdapter
    from .access.s3 import S3Adapter

    adapter = adapter_for(fs)
    if isinstance(adapter, (HTTPAdapter, S3Adapter)):
        return True
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return type(adapter) is SourceAdapter and reads_async(fs) and "memory" not in protocols


class _Reader:
    """How one array is being read: the chunk positions asked for lately (position -> the
    count of asks of the array when it was last asked)."""

    __slots__ = ("asked", "count")

    def __init__(self) -> None:
        self.asked: OrderedDict[int, int] = OrderedDict()
        self.count = 0

    def asks(self, position: int) -> int:
        """Note an ask for ``position``; the direction the reader goes in: 1 if the two
        positions before it were asked lately, -1 if the two after it were (Dask asks for
        a variable's chunks from the last to the first), else 0 (not a sequential reader:
        one neighbour asked is common enough among random reads of a small array)."""
        self.count += 1
        if position in self.asked:  # asked again: a new pass, the old one's asks are done
            self.asked.clear()
        self.asked[position] = self.count
        self.asked.move_to_end(position)
        if len(self.asked) > _LATELY:
            self.asked.popitem(last=False)
        for step in (1, -1):
            if self.lately(position - step) and self.lately(position - 2 * step):
                return step
        return 0

    def lately(self, position: int) -> bool:
        """Whether ``position`` was asked for among the last :data:`_LATELY` asks."""
        when = self.asked.get(position)
        return when is not None and self.count - when < _LATELY


@dataclass(slots=True)
class _Ahead:
    """One range read ahead: its bytes once read (None: its read failed, so the reader
    reads it again and gets its own error), its size, and when it was asked for."""

    future: asyncio.Future[bytes | None]
    size: int
    made: float


class ReadAhead:
    """The ranges read ahead on one event loop, and the chunk positions readers asked for."""

    def __init__(self) -> None:
        self._ahead: dict[tuple[AbstractFileSystem, Request], _Ahead] = {}
        self._held = 0
        self._readers: OrderedDict[tuple[str, str], _Reader] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> int:
        """Bytes read ahead (or being read) and not yet taken."""
        return self._held

    def take(self, fs: AbstractFileSystem, request: Request) -> asyncio.Future[bytes | None] | None:
        """The read ahead of exactly ``request`` (removed: it serves one reader), or None."""
        key = (fs, request)
        entry = self._ahead.pop(key, None)
        if entry is None:
            return None
        self._held -= entry.size
        if time.monotonic() - entry.made > MAX_AGE:
            return None
        return entry.future

    def follow(
        self,
        fs: AbstractFileSystem,
        snapshot: str,
        path: str,
        array: VirtualArray,
        index: tuple[int, ...],
        urls: Sequence[str],
        versions: Mapping[str, FileVersion],
        options: ReadOptions,
        budget: int = DEFAULT_READ_AHEAD,
    ) -> None:
        """Note that chunk ``index`` of the array at ``path`` (of snapshot ``snapshot``) was
        asked for, and if the chunk before it was too, lately, start reading the next ones
        not read ahead yet, while this loop holds at most ``budget`` bytes read ahead."""
        grid = array.grid
        shape = grid.shape
        if not shape:
            return
        position = int(np.ravel_multi_index(index, shape))
        reader = self._reader_of(snapshot, path)
        step = reader.asks(position)
        if not step:
            return
        self._drop_old()
        n = grid.file_id.size
        if step > 0:
            positions = np.arange(position + 1, min(position + WINDOW_CHUNKS, n - 1) + 1)
            clipped = position + WINDOW_CHUNKS >= n - 1
        else:
            positions = np.arange(position - 1, max(position - WINDOW_CHUNKS, 0) - 1, -1)
            clipped = position - WINDOW_CHUNKS <= 0
        if not positions.size:
            return
        where = np.unravel_index(positions, shape)
        file_ids = grid.file_id[where]
        offsets = grid.offset[where]
        lengths = grid.length[where]
        wanted: list[Request] = []
        for p, file_id, offset, length in zip(positions, file_ids, offsets, lengths):
            # not a file's range (missing, inline, computed), or the reader has it already
            if file_id < 0 or reader.lately(int(p)):
                continue
            url = urls[int(file_id)]
            request = Request(url, int(offset), int(offset) + int(length), versions.get(url))
            if (fs, request) not in self._ahead:
                wanted.append(request)
        # a few at a time, not one per ask: a file's neighbouring chunks then travel in
        # one request
        if len(wanted) < BATCH_CHUNKS and not clipped:
            return
        requests: list[Request] = []
        for request in wanted:
            if self._held + request.end - request.start > budget:
                break
            requests.append(request)
            self._hold(fs, request)
        for group in _by_file(requests):
            self._start(fs, group, options)

    def _reader_of(self, snapshot: str, path: str) -> _Reader:
        """How one array of one snapshot is being read (kept for the arrays read last)."""
        reader = self._readers.get((snapshot, path))
        if reader is None:
            reader = self._readers[(snapshot, path)] = _Reader()
            if len(self._readers) > _ARRAYS_REMEMBERED:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end((snapshot, path))
        return reader

    def _hold(self, fs: AbstractFileSystem, request: Request) -> None:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        size = request.end - request.start
        self._ahead[(fs, request)] = _Ahead(future, size, time.monotonic())
        self._held += size

    def _start(self, fs: AbstractFileSystem, group: list[Request], options: ReadOptions) -> None:
        futures = [self._ahead[(fs, r)].future for r in group]
        task = asyncio.ensure_future(_read_into(fs, group, futures, options))
        self._tasks.add(task)
        task.add_done_callback(self._read)

    def _read(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # what nobody asks for is let go even if no reader comes back to this loop
        asyncio.get_running_loop().call_later(MAX_AGE + 0.1, self._drop_old)

    def _drop_old(self) -> None:
        """Forget ranges read ahead that nobody asked for in time."""
        now = time.monotonic()
        old = [k for k, e in self._ahead.items() if now - e.made > MAX_AGE and e.future.done()]
        for key in old:
            self._held -= self._ahead.pop(key).size


def _by_file(requests: list[Request]) -> list[list[Request]]:
    """Consecutive requests of one file together (one call merges their ranges)."""
    groups: list[list[Request]] = []
    for request in requests:
        if groups and groups[-1][-1].url == request.url:
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups


async def _read_into(
    fs: AbstractFileSystem,
    requests: list[Request],
    futures: list[asyncio.Future[bytes | None]],
    options: ReadOptions,
) -> None:
    try:
        results: Sequence[bytes | BaseException | None] = await fetch_ranges(fs, requests, options)
    except BaseException as e:  # the reader reads again and sees the error itself
        results = [None] * len(requests)
        if not isinstance(e, Exception):
            _settle(futures, results)
            raise
    _settle(futures, results)


def _settle(
    futures: list[asyncio.Future[bytes | None]], results: Sequence[bytes | BaseException | None]
) -> None:
    for future, result in zip(futures, results):
        if not future.done():
            future.set_result(result if isinstance(result, bytes) else None)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadAhead] = (
    weakref.WeakKeyDictionary()
)


def read_ahead_for() -> ReadAhead:
    """The running event loop's :class:`ReadAhead` (made on first use)."""
    loop = asyncio.get_running_loop()
    ahead = _per_loop.get(loop)
    if ahead is None:
        ahead = _per_loop[loop] = ReadAhead()
    return ahead


async def taken_ahead(fs: AbstractFileSystem, request: Request) -> bytes | None:
    """The bytes of ``request`` if they were read ahead on this loop (waiting for them if
    they are on their way), else None: the caller reads them."""
    ahead = _per_loop.get(asyncio.get_running_loop())
    if ahead is None:
        return None
    future = ahead.take(fs, request)
    if future is None:
        return None
    # shielded: a reader that gives up must not cancel the future the read will settle
    return await asyncio.shield(future)


def note_chunk_read(
    state: CollectionState,
    key: str,
    source: ChunkSource,
    options: ReadOptions,
    budget: int,
) -> None:
    """Tell the loop's :class:`ReadAhead` that ``key`` (served from ``source``) is being
    read from ``state``: it may start reading the chunks after it (remote sources only)."""
    if budget <= 0 or not isinstance(source, RangeSource) or source.array is None:
        return
    path, _, leaf = str(key).rpartition("/")
    if state.manifest.arrays.get(path) is not source.array or not reads_ahead(state.fs):
        return
    index = chunk_index(source.array, leaf)
    if index is None:
        return
    read_ahead_for().follow(
        state.fs,
        state.id,
        path,
        source.array,
        index,
        state.manifest.urls,
        state.versions,
        options,
        budget,
    )
