"""Read-ahead for remote sources: the chunks after the ones a reader asks for, in its order.

zarr keeps about ten chunk requests in flight and Dask's threads one each, so over a
network with a round trip of tens of milliseconds a whole-variable read is bound by round
trips, not bandwidth. Once a reader has asked for three consecutive chunks of an array (in
C order of its chunk grid, forwards as zarr does or backwards as Dask does), the store
starts reading the next ones in that direction, each file's neighbouring ranges in one
request of at most :data:`MAX_REQUEST_BYTES`, and hands them over when they are asked for.
How far ahead grows with the run of consecutive chunks asked (as far as the run is long,
up to :data:`WINDOW_CHUNKS`): a reader of one tiled time step reads at most about one more
step than it needed.

What is read ahead belongs to one snapshot (the :class:`~fsspec_virtual.state.CollectionState`
object, not its identity: a file rewritten without a new version would otherwise hand one
snapshot's bytes to another) and is a byte range at the version that snapshot scanned,
read with the same checks as any other read, and used once. The bytes held are bounded per
event loop (``budget``); ranges not asked for within :data:`MAX_AGE` seconds of arriving are
let go. Local files are not read ahead (a read costs less than the bookkeeping).
"""

from __future__ import annotations

import asyncio
import numbers
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from fsspec import AbstractFileSystem

from .access import adapter_for
from .access.adapters import SourceAdapter, reads_async
from .access.http import HTTPAdapter
from .access.s3 import S3Adapter
from .keys import ChunkSource, RangeSource, ZarrFormat, chunk_index, split_chunk_key
from .manifest import VirtualArray
from .reader import ReadOptions, Request, fetch_ranges

if TYPE_CHECKING:
    from .state import CollectionState

__all__ = [
    "DEFAULT_READ_AHEAD",
    "MAX_AGE",
    "ReadAhead",
    "check_read_ahead",
    "read_ahead_for",
    "note_chunk_read",
    "reads_ahead",
    "taken_ahead",
]

#: Bytes read ahead and not yet asked for, at most, per event loop (all stores together).
DEFAULT_READ_AHEAD = 64 * 1024 * 1024
#: Seconds a range read ahead is kept, once it has arrived, for a reader to ask for it.
MAX_AGE = 30.0
#: Chunks read ahead past the one asked for, at most.
WINDOW_CHUNKS = 64
#: Chunks of the window not yet read ahead before more are read (fewer for a short run).
BATCH_CHUNKS = 16
#: One read-ahead request never asks for more (a slow link then hands over its first
#: chunks early, instead of after a whole file's worth).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: A chunk counts as asked for lately if asked among the last this many of its array: more
#: than a client keeps in flight (zarr: 10), fewer than a second pass over a small array.
_LATELY = WINDOW_CHUNKS
#: Arrays whose reading is followed (the ones read last).
_ARRAYS_REMEMBERED = 256


def check_read_ahead(value: object) -> int:
    """``value`` as a number of bytes, or a ``ValueError`` saying what is expected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(
            f"read_ahead must be a whole number of bytes >= 0 (0: no read-ahead), not {value!r}"
        )
    return int(value)


def reads_ahead(fs: AbstractFileSystem) -> bool:
    """Whether reads from ``fs`` are worth reading ahead: a remote filesystem (HTTP, S3 or
    another asynchronous one other than ``memory``), where a request costs a round trip."""
    adapter = adapter_for(fs)
    if isinstance(adapter, (HTTPAdapter, S3Adapter)):
        return True
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return type(adapter) is SourceAdapter and reads_async(fs) and "memory" not in protocols


class _Reader:
    """How one array is being read.

    Attributes
    ----------
    asked
        Chunk positions asked for lately: position -> (the array's count of asks then,
        the length of the run of consecutive positions it ended).
    count
        Asks of the array so far.
    ahead
        Positions read ahead lately (the last ``2 * WINDOW_CHUNKS``).
    """

    __slots__ = ("ahead", "asked", "count")

    def __init__(self) -> None:
        self.asked: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.count = 0
        self.ahead: OrderedDict[int, None] = OrderedDict()

    def asks(self, position: int) -> tuple[int, int]:
        """Note an ask for ``position``. Returns the direction the reader goes in (1 if
        the two positions before it were asked lately, -1 if the two after it were, else
        0: not a sequential reader) and the length of its run of consecutive positions."""
        if position in self.asked:  # asked again: a new pass, the old one's asks are done
            self.asked.clear()
            self.ahead.clear()
        self.count += 1
        step, run = 0, 1
        for direction in (1, -1):
            before = self._lately(position - direction)
            if before is not None and self._lately(position - 2 * direction) is not None:
                step, run = direction, before[1] + 1
                break
        self.asked[position] = (self.count, run)
        if len(self.asked) > _LATELY:
            self.asked.popitem(last=False)
        return step, run

    def _lately(self, position: int) -> tuple[int, int] | None:
        seen = self.asked.get(position)
        return seen if seen is not None and self.count - seen[0] < _LATELY else None

    def covered(self, position: int) -> bool:
        """Whether ``position`` was asked for or read ahead lately."""
        return position in self.ahead or self._lately(position) is not None

    def note_ahead(self, position: int) -> None:
        """Note that ``position`` is being read ahead."""
        self.ahead[position] = None
        if len(self.ahead) > 2 * WINDOW_CHUNKS:
            self.ahead.popitem(last=False)


@dataclass(slots=True)
class _Ahead:
    """One range read ahead: a future while it is on its way, then its bytes (None: its
    read failed, so the reader reads it again and gets its own error); its size; and when
    it arrived."""

    future: asyncio.Future[bytes | None] | None
    data: bytes | None
    size: int
    arrived: float | None = None


#: What identifies a range read ahead: the snapshot it was read for, and the read.
_Key = tuple["CollectionState", Request]


class ReadAhead:
    """The ranges read ahead on one event loop, and how the arrays are being read."""

    def __init__(self) -> None:
        self._ahead: dict[_Key, _Ahead] = {}
        self._held = 0
        self._readers: OrderedDict[tuple[str, str], _Reader] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: dict[int, asyncio.Semaphore] = {}

    @property
    def held(self) -> int:
        """Bytes read ahead (or being read) and not yet taken."""
        return self._held

    def take(self, state: CollectionState, request: Request) -> _Ahead | None:
        """The read ahead of exactly ``request`` for ``state`` (removed: it serves one
        reader), or None."""
        entry = self._ahead.pop((state, request), None)
        if entry is None:
            return None
        self._held -= entry.size
        if entry.arrived is not None and time.monotonic() - entry.arrived > MAX_AGE:
            return None
        return entry

    def follow(
        self,
        state: CollectionState,
        path: str,
        array: VirtualArray,
        index: tuple[int, ...],
        options: ReadOptions,
        budget: int = DEFAULT_READ_AHEAD,
    ) -> None:
        """Note that chunk ``index`` of the array at ``path`` of snapshot ``state`` was
        asked for; if the reader is sequential, read ahead the next chunks not read ahead
        yet, while this loop holds at most ``budget`` bytes read ahead."""
        grid = array.grid
        shape = grid.shape
        if not shape:
            return
        position = int(np.ravel_multi_index(index, shape))
        reader = self._reader_of(state.id, path)
        step, run = reader.asks(position)
        if not step:
            return
        last = grid.file_id.size - 1
        far = min(max(position + step * min(run, WINDOW_CHUNKS), 0), last)
        # the positions up to ``far`` not covered yet: as the run goes on, only the last
        # few, so an ask costs a few steps, not a window's
        new: list[int] = []
        p = far
        while p != position and not reader.covered(p):
            new.append(p)
            p -= step
        if not new or (len(new) < min(BATCH_CHUNKS, run) and far not in (0, last)):
            return
        self._drop_old()
        new.reverse()
        where = np.unravel_index(np.array(new), shape)
        file_ids, offsets, lengths = grid.file_id[where], grid.offset[where], grid.length[where]
        urls, versions = state.manifest.urls, state.versions
        requests: list[Request] = []
        for p, file_id, offset, length in zip(
            new, file_ids.tolist(), offsets.tolist(), lengths.tolist()
        ):
            if file_id >= 0:  # a file's range (not missing, inline or computed)
                url = urls[file_id]
                request = Request(url, offset, offset + length, versions.get(url))
                if (state, request) not in self._ahead:  # two positions of one range: once
                    if self._held + length > budget:
                        break
                    requests.append(request)
                    self._hold(state, request)
            reader.note_ahead(p)
        for group in _grouped(requests):
            self._start(state, group, options)

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

    def _hold(self, state: CollectionState, request: Request) -> None:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        size = request.end - request.start
        self._ahead[(state, request)] = _Ahead(future, None, size)
        self._held += size

    def _start(self, state: CollectionState, group: list[Request], options: ReadOptions) -> None:
        entries = [self._ahead[(state, r)] for r in group]
        task = asyncio.ensure_future(self._read_into(state.fs, group, entries, options))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_into(
        self,
        fs: AbstractFileSystem,
        requests: list[Request],
        entries: list[_Ahead],
        options: ReadOptions,
    ) -> None:
        """Read ``requests`` into their entries, with at most ``options.concurrency``
        read-ahead requests of this loop in flight (a reader's own reads come first)."""
        results: Sequence[bytes | BaseException | None] = [None] * len(requests)
        slots = self._slots.get(options.concurrency)
        if slots is None:
            slots = self._slots[options.concurrency] = asyncio.Semaphore(options.concurrency)
        try:
            async with slots:
                results = await fetch_ranges(fs, requests, options)
        except Exception:  # the readers read again, and each sees the error itself
            pass
        finally:
            now = time.monotonic()
            for entry, result in zip(entries, results):
                entry.data = result if isinstance(result, bytes) else None
                entry.arrived = now
                future, entry.future = entry.future, None  # holds the loop: not kept
                if future is not None and not future.done():
                    future.set_result(entry.data)
            asyncio.get_running_loop().call_later(MAX_AGE + 0.1, self._drop_old)

    def _drop_old(self) -> None:
        """Let go of ranges read ahead that nobody asked for in time."""
        now = time.monotonic()
        old = [
            key
            for key, entry in self._ahead.items()
            if entry.arrived is not None and now - entry.arrived > MAX_AGE
        ]
        for key in old:
            self._held -= self._ahead.pop(key).size


def _grouped(requests: list[Request]) -> list[list[Request]]:
    """Consecutive requests of one file together (one call merges their ranges), at most
    :data:`MAX_REQUEST_BYTES` a group."""
    groups: list[list[Request]] = []
    size = 0
    for request in requests:
        length = request.end - request.start
        if groups and groups[-1][-1].url == request.url and size + length <= MAX_REQUEST_BYTES:
            groups[-1].append(request)
            size += length
        else:
            groups.append([request])
            size = length
    return groups


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadAhead] = (
    weakref.WeakKeyDictionary()
)


def read_ahead_for() -> ReadAhead:
    """The running event loop's :class:`ReadAhead` (made on first use). Made for a new
    loop, it lets go of those of closed loops (``asyncio.run`` makes a loop per call)."""
    loop = asyncio.get_running_loop()
    ahead = _per_loop.get(loop)
    if ahead is None:
        for other in [other for other in _per_loop if other.is_closed()]:
            del _per_loop[other]
        ahead = _per_loop[loop] = ReadAhead()
    return ahead


async def taken_ahead(state: CollectionState, request: Request) -> bytes | None:
    """The bytes of ``request`` if they were read ahead for ``state`` on this loop
    (waiting for them if they are on their way), else None: the caller reads them."""
    ahead = _per_loop.get(asyncio.get_running_loop())
    if ahead is None:
        return None
    entry = ahead.take(state, request)
    if entry is None:
        return None
    if entry.future is None:
        return entry.data
    # shielded: a reader that gives up must not cancel the future the read will settle
    return await asyncio.shield(entry.future)


def note_chunk_read(
    state: CollectionState,
    key: str,
    source: ChunkSource,
    options: ReadOptions,
    budget: int,
    zarr_format: ZarrFormat = 2,
) -> None:
    """Tell the loop's :class:`ReadAhead` that ``key`` (served from ``source``, a chunk key
    of Zarr format ``zarr_format``) is being read from ``state``: it may start reading the
    chunks after it (remote sources only)."""
    if budget <= 0 or not isinstance(source, RangeSource) or source.array is None:
        return
    split = split_chunk_key(state.manifest, str(key), zarr_format)
    if split is None:
        return
    path, leaf = split
    if state.manifest.arrays.get(path) is not source.array or not reads_ahead(state.fs):
        return
    index = chunk_index(source.array, leaf, zarr_format)
    if index is None:
        return
    read_ahead_for().follow(state, path, source.array, index, options, budget)
