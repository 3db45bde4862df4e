"""Computed chunks: a target chunk assembled from source pieces, decoded, converted, encoded.

A computed chunk's region is covered by the parts of its array's
:class:`~fsspec_virtual.manifest.ComputePlan`. Each part's overlap is read from its
source chunks (fetched as byte ranges and decoded with numcodecs, through a bounded cache
of decoded chunks) or, where no codec exists, through h5py on the source filesystem's
file object; unpacked with xarray's own CF coders where the plan says so; cast to the
target dtype; and encoded with the codec the target's ``.zarray`` declares.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

import numpy as np
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from .access import adapter_for
from .codecs import decode_chunk, encode_chunk, filled
from .errors import SourceReadError, StaleSourceError
from .manifest import COMPUTED, INLINE, MISSING, ArrayMeta, SourcePart, VirtualArray
from .packing import unpack
from .reader import (
    DEFAULT_READ_OPTIONS,
    ReadOptions,
    Request,
    Version,
    fetch_ranges,
    open_as_scanned,
    read_one,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DecodedChunkCache",
    "compute_chunk",
    "read_region",
]

#: Default bound of the decoded-chunk cache, in bytes.
DEFAULT_CACHE_BYTES = 256 * 2**20
#: Encoded chunks larger than this are decoded in a worker thread, not on the event loop.
_DECODE_IN_THREAD_BYTES = 64 * 1024

Region = tuple[tuple[int, int], ...]
#: Source URL -> its size and identity when scanned (see :mod:`fsspec_virtual.reader`).
Versions = Mapping[str, Version]


class DecodedChunkCache:
    """A bounded LRU of decoded source chunks, shared by the threads of one process.

    Concurrent requests for one chunk on one event loop share a single fetch and decode.

    Parameters
    ----------
    capacity
        Bytes of decoded data kept; 0 keeps nothing (each request decodes).
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_BYTES) -> None:
        self.capacity = capacity
        self.loads = 0
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, Hashable], asyncio.Future[np.ndarray]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached chunk, or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Keep ``value``, evicting the least recently used chunks beyond the capacity."""
        if value.nbytes > self.capacity:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            self._entries[key] = value
            self._nbytes += value.nbytes
            while self._nbytes > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes

    def clear(self) -> None:
        """Drop every chunk."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    async def get_or_load(
        self, key: Hashable, load: Callable[[], Awaitable[np.ndarray]]
    ) -> np.ndarray:
        """The chunk for ``key``, loading it once however many ask at the same time."""
        value = self.get(key)
        if value is not None:
            return value
        pending_key = (id(asyncio.get_running_loop()), key)
        pending = self._pending.get(pending_key)
        if pending is None:
            # the load runs in a task of its own, not in the first caller's: a caller that is
            # cancelled (a client that went away) stops waiting, and the others still get it
            pending = asyncio.ensure_future(self._load(key, load))
            self._pending[pending_key] = pending
            pending.add_done_callback(lambda done: self._loaded(pending_key, done))
        return await asyncio.shield(pending)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[np.ndarray]]) -> np.ndarray:
        value = await load()
        self.loads += 1
        self.put(key, value)
        return value

    def _loaded(self, pending_key: tuple[int, Hashable], done: asyncio.Future[np.ndarray]) -> None:
        if self._pending.get(pending_key) is done:
            del self._pending[pending_key]
        if not done.cancelled():
            done.exception()  # retrieved: no "never retrieved" warning if nobody waits


# -- reading parts ------------------------------------------------------------------------


class _OpenH5Files:
    """A few open h5py files, for sources no numcodecs codec can decode."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        # keyed by version too: a handle opened on one version never serves another
        self._files: OrderedDict[tuple[int, str, Version | None], tuple[Any, Any, threading.Lock]]
        self._files = OrderedDict()
        self._lock = threading.Lock()

    def read(
        self,
        fs: AbstractFileSystem,
        url: str,
        h5path: str,
        where: tuple[slice, ...],
        version: Version | None = None,
    ) -> Any:
        import h5py

        from .scan.hdf5 import load_filter_plugins

        load_filter_plugins()  # a worker process scanned; this one may not have them yet
        key = (id(fs), url, version)
        local = isinstance(fs, LocalFileSystem)
        adapter = adapter_for(fs)
        # where the handle's own reads carry no precondition (local files, filesystems
        # without ETags): the file is looked at before and after the read
        checked = version is not None and not adapter.guards(version)
        if checked:
            self._check_current(adapter, key, url, version)
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                handle = open_as_scanned(fs, url, version)
                entry = (handle, h5py.File(handle, mode="r"), threading.Lock())
                self._files[key] = entry
                while len(self._files) > self._size:
                    _, (old_handle, old_file, _) = self._files.popitem(last=False)
                    old_file.close()
                    old_handle.close()
            self._files.move_to_end(key)
        _, h5file, file_lock = entry
        try:
            with file_lock:
                dataset = h5file[h5path]
                # an HDF5 array type's axes are served after the dataset's own
                ndim = dataset.ndim
                values = dataset[where[:ndim]] if ndim else dataset[()]
                if len(where) > ndim:
                    values = np.asarray(values)[(slice(None),) * ndim + where[ndim:]]
        except Exception as e:
            if local:
                raise
            # h5py hides why its file object failed: ask the source whether it changed
            self.forget(key)
            if version is not None:
                adapter.check_current(url, version)
            raise SourceReadError(url, f"{type(e).__name__}: {e}") from e
        if checked:
            self._check_current(adapter, key, url, version)  # rewritten while being read?
        return values

    def _check_current(
        self, adapter: Any, key: tuple[int, str, Version | None], url: str, version: Any
    ) -> None:
        try:
            adapter.check_current(url, version)
        except StaleSourceError:
            self.forget(key)
            raise

    def forget(self, key: tuple[int, str, Version | None]) -> None:
        with self._lock:
            entry = self._files.pop(key, None)
        if entry is not None:
            entry[1].close()
            entry[0].close()

    def clear(self) -> None:
        with self._lock:
            for handle, h5file, _ in self._files.values():
                h5file.close()
                handle.close()
            self._files.clear()


_h5_files = _OpenH5Files()
# h5py files over Python file objects can crash the interpreter if left to its shutdown
atexit.register(_h5_files.clear)


def _overlap(region: Region, chunks: tuple[int, ...]) -> list[range]:
    """Per axis, the source chunk indices that ``region`` touches."""
    return [
        range(lo // c, (hi - 1) // c + 1) if hi > lo else range(0)
        for (lo, hi), c in zip(region, chunks)
    ]


async def _source_chunk(
    fs: AbstractFileSystem,
    urls: tuple[str, ...],
    part: SourcePart,
    index: tuple[int, ...],
    cache: DecodedChunkCache,
    versions: Versions,
    reading: ReadOptions = DEFAULT_READ_OPTIONS,
) -> np.ndarray:
    grid = part.grid
    assert grid is not None
    meta = part.meta
    fid = int(grid.file_id[index])
    if fid == MISSING:
        return filled(meta.chunks, meta)
    if fid == INLINE:
        return decode_chunk(grid.inline[int(grid.offset[index])], meta)
    if fid == COMPUTED:
        raise AssertionError("a source part cannot itself hold computed chunks")
    url, offset, length = urls[fid], int(grid.offset[index]), int(grid.length[index])

    async def load() -> np.ndarray:
        request = Request(url, offset, offset + length, versions.get(url))
        raw = await read_one(fs, request, reading)
        if length > _DECODE_IN_THREAD_BYTES:
            return await asyncio.to_thread(decode_chunk, raw, meta)
        return decode_chunk(raw, meta)

    # the version is part of the key: a refreshed state shares this cache with the old one
    return await cache.get_or_load((url, versions.get(url), offset, length), load)


def _within(index: tuple[int, ...], meta: ArrayMeta, region: Region) -> bool:
    return all(
        lo <= i * c and min((i + 1) * c, n) <= hi
        for i, c, n, (lo, hi) in zip(index, meta.chunks, meta.shape, region)
    )


async def _decode_batch(
    fs: AbstractFileSystem,
    urls: tuple[str, ...],
    part: SourcePart,
    indices: list[tuple[int, ...]],
    versions: Versions,
    reading: ReadOptions = DEFAULT_READ_OPTIONS,
) -> list[np.ndarray]:
    """Source chunks fetched together (nearby ranges merged) and decoded, uncached."""
    if not indices:
        return []
    grid = part.grid
    assert grid is not None
    requests = []
    for index in indices:
        offset, length = int(grid.offset[index]), int(grid.length[index])
        url = urls[int(grid.file_id[index])]
        requests.append(Request(url, offset, offset + length, versions.get(url)))
    raws = await fetch_ranges(fs, requests, reading)
    for raw in raws:
        if isinstance(raw, BaseException):
            raise raw
    meta = part.meta

    def decode_all() -> list[np.ndarray]:
        return [decode_chunk(raw, meta) for raw in raws]  # type: ignore[arg-type]

    if sum(r.end - r.start for r in requests) > _DECODE_IN_THREAD_BYTES:
        return await asyncio.to_thread(decode_all)
    return decode_all()


async def _read_part(
    fs: AbstractFileSystem,
    urls: tuple[str, ...],
    part: SourcePart,
    region: Region,
    cache: DecodedChunkCache,
    versions: Versions,
    reading: ReadOptions = DEFAULT_READ_OPTIONS,
) -> np.ndarray:
    """The raw values of ``region`` (in the part's own coordinates) of one part."""
    meta = part.meta
    where = tuple(slice(lo, hi) for lo, hi in region)
    if part.grid is None:
        assert part.h5path is not None
        url = urls[part.file_id]
        values = await asyncio.to_thread(
            _h5_files.read, fs, url, part.h5path, where, versions.get(url)
        )
        return np.asarray(values)
    if not meta.shape:
        return await _source_chunk(fs, urls, part, (), cache, versions, reading)
    indices = list(np.ndindex(*(len(r) for r in _overlap(region, meta.chunks))))
    ranges = _overlap(region, meta.chunks)
    chunk_indices = [tuple(r[i] for r, i in zip(ranges, idx)) for idx in indices]
    # Source chunks wholly inside the region serve no other target chunk: fetched in one
    # merged batch, decoded, used once. Those on its edge go through the shared cache.
    inside = [_within(index, meta, region) for index in chunk_indices]
    grid = part.grid
    batch = [
        i for i, index in enumerate(chunk_indices) if inside[i] and int(grid.file_id[index]) >= 0
    ]
    in_batch = set(batch)
    others = [i for i in range(len(chunk_indices)) if i not in in_batch]
    chunks: list[np.ndarray | None] = [None] * len(chunk_indices)
    shared, batched = await asyncio.gather(
        asyncio.gather(
            *(
                _source_chunk(fs, urls, part, chunk_indices[i], cache, versions, reading)
                for i in others
            )
        ),
        _decode_batch(fs, urls, part, [chunk_indices[i] for i in batch], versions, reading),
    )
    for i, chunk in zip(others, shared):
        chunks[i] = chunk
    for i, chunk in zip(batch, batched):
        chunks[i] = chunk
    cache.loads += len(batch)
    out = np.empty(tuple(hi - lo for lo, hi in region), dtype=meta.numpy_dtype)
    for index, maybe in zip(chunk_indices, chunks):
        assert maybe is not None
        chunk = maybe
        src, dst = [], []
        for i, c, (lo, hi) in zip(index, meta.chunks, region):
            a, b = max(lo, i * c), min(hi, (i + 1) * c)
            src.append(slice(a - i * c, b - i * c))
            dst.append(slice(a - lo, b - lo))
        out[tuple(dst)] = chunk[tuple(src)]
    return out


async def read_region(
    fs: AbstractFileSystem,
    urls: tuple[str, ...],
    array: VirtualArray,
    region: Region,
    cache: DecodedChunkCache,
    versions: Versions | None = None,
    reading: ReadOptions = DEFAULT_READ_OPTIONS,
) -> np.ndarray:
    """The values of ``region`` of a computed array, in its target dtype.

    Parameters
    ----------
    fs
        The source filesystem.
    urls
        The manifest's URL table.
    array
        An array with a :class:`~fsspec_virtual.manifest.ComputePlan`.
    region
        ``(start, stop)`` per axis, within the array.
    cache
        Decoded source chunks.
    versions
        Each source file's size and identity when scanned: a changed file raises
        :class:`~fsspec_virtual.StaleSourceError` instead of being read.
    reading
        How source chunks are fetched (request merging and concurrency).
    """
    versions = versions or {}
    plan = array.plan
    if plan is None:
        raise ValueError("read_region needs an array with a compute plan")
    meta = array.meta
    dtype = meta.numpy_dtype
    out = filled(tuple(hi - lo for lo, hi in region), meta, dtype)
    jobs = []
    for part in plan.parts:
        local = []
        into = []
        for axis, (lo, hi) in enumerate(region):
            size = part.meta.shape[axis]
            start = part.start if axis == plan.axis else 0
            a, b = max(lo, start), min(hi, start + size)
            if a >= b:
                break
            local.append((a - start, b - start))
            into.append(slice(a - lo, b - lo))
        else:
            jobs.append((part, tuple(local), tuple(into)))
    pieces = await asyncio.gather(
        *(_read_part(fs, urls, part, local, cache, versions, reading) for part, local, _ in jobs)
    )
    for (part, _, target), values in zip(jobs, pieces):
        if part.unpack:
            values = unpack(values, part.meta)
        out[target] = values
    return out


def chunk_region(meta: ArrayMeta, index: tuple[int, ...]) -> Region:
    """The region of the array that chunk ``index`` covers (clipped at the array's edge)."""
    return tuple((i * c, min((i + 1) * c, s)) for i, c, s in zip(index, meta.chunks, meta.shape))


async def compute_chunk(
    fs: AbstractFileSystem,
    urls: tuple[str, ...],
    array: VirtualArray,
    index: tuple[int, ...],
    cache: DecodedChunkCache,
    versions: Versions | None = None,
    reading: ReadOptions = DEFAULT_READ_OPTIONS,
    *,
    encoded: bool = True,
) -> bytes:
    """The encoded bytes of computed chunk ``index`` of ``array`` (its values' bytes, as a
    codec-less ``.zarray`` reads them, with ``encoded`` False).

    Parameters
    ----------
    fs
        The source filesystem.
    urls
        The manifest's URL table.
    array
        The array; ``array.plan`` says where its values come from.
    index
        The chunk's grid index.
    cache
        Decoded source chunks.
    versions
        Each source file's size and identity when scanned (see :func:`read_region`).
    reading
        How source chunks are fetched (request merging and concurrency).
    encoded
        Encode with the array's declared codecs (else the values' bytes are returned).
    """
    meta = array.meta
    region = chunk_region(meta, index)
    values = await read_region(fs, urls, array, region, cache, versions, reading)
    if values.shape != meta.chunks:  # an edge chunk: pad to the full chunk shape
        full = filled(meta.chunks, meta, values.dtype)
        full[tuple(slice(0, n) for n in values.shape)] = values
        values = full
    if not encoded:
        return np.ascontiguousarray(values, dtype=meta.numpy_dtype).tobytes()
    if values.nbytes > _DECODE_IN_THREAD_BYTES and meta.compressor is not None:
        return await asyncio.to_thread(encode_chunk, values, meta, fastest=True)
    return encode_chunk(values, meta, fastest=True)
