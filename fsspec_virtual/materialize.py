"""Read a (small) array's values through its manifest: used for concat coordinates."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from fsspec import AbstractFileSystem

from .access import FileVersion
from .bridges import run_blocking
from .codecs import decode_chunk
from .compute import DecodedChunkCache, read_region
from .manifest import ComputePlan, Manifest, SourcePart, VirtualArray

__all__ = [
    "read_array",
    "FileObjectSource",
    "readable_through_file",
    "byte_ranges_only",
    "read_byte_ranges",
]


class FileObjectSource:
    """One open file object standing in for its filesystem, for :func:`read_array`: a
    scan reads its file's coordinate values from the blocks it already fetched."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self._lock = threading.Lock()

    def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the file (``path`` is the file's own)."""
        with self._lock:
            self._f.seek(start or 0)
            return bytes(self._f.read(-1 if end is None else end - (start or 0)))

    def invalidate_cache(self, path: str | None = None) -> None:
        """Nothing to invalidate."""


def readable_through_file(manifest: Manifest, path: str) -> bool:
    """Whether the array's values come from byte ranges only (no h5py read), so that a
    :class:`FileObjectSource` can serve them."""
    plan = manifest.arrays[path].plan
    return plan is None or all(part.grid is not None for part in plan.parts)


def byte_ranges_only(array: VirtualArray) -> bool:
    """Whether ``array`` is 1-D and every chunk of it is a byte range (none inline, none
    unwritten, no plan): its values are its chunks, decoded and joined."""
    file_id = array.grid.file_id
    return (
        array.plan is None
        and len(array.meta.shape) == 1
        and file_id.ndim == 1
        and file_id.size > 0
        and bool(np.all(file_id >= 0))
    )


def read_byte_ranges(f: FileObjectSource, array: VirtualArray) -> np.ndarray:
    """The raw values of an array of :func:`byte_ranges_only` whose byte ranges all lie in
    the file ``f`` is open on: what :func:`read_array` reads, without an event loop (a
    scan reads a file's coordinates so, once per file)."""
    grid, meta = array.grid, array.meta
    chunks = [
        decode_chunk(f.cat_file("", int(offset), int(offset) + int(length)), meta)
        for offset, length in zip(grid.offset, grid.length)
    ]
    return np.concatenate(chunks)[: meta.shape[0]]


def read_array(
    fs: AbstractFileSystem | FileObjectSource,
    manifest: Manifest,
    path: str,
    versions: Mapping[str, FileVersion] | None = None,
) -> np.ndarray:
    """The full, raw (not CF-decoded) values of one array of ``manifest``.

    Parameters
    ----------
    fs
        The source filesystem, to read chunks from.
    manifest
        The manifest holding the array.
    path
        The array's path.
    versions
        The file versions the reads must find (see :func:`~fsspec_virtual.compute.read_region`).
    """
    array = manifest.arrays[path]
    if array.plan is None:  # its own chunks are the one source of the whole array
        plan = ComputePlan((SourcePart(0, array.meta, array.grid),), None, "")
        array = VirtualArray(array.meta, array.grid, plan)
    whole = tuple((0, n) for n in array.meta.shape)
    source = cast(AbstractFileSystem, fs)  # a FileObjectSource serves cat_file: all it needs
    return run_blocking(
        read_region(source, manifest.urls, array, whole, DecodedChunkCache(0), versions)
    )
