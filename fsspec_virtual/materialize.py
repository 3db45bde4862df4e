"""Read a (small) array's values through its manifest: used for concat coordinates."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
from fsspec import AbstractFileSystem

from .compute import DecodedChunkCache, read_region
from .manifest import ComputePlan, Manifest, SourcePart, VirtualArray

__all__ = ["read_array"]


def read_array(
    fs: AbstractFileSystem,
    manifest: Manifest,
    path: str,
    versions: dict[str, tuple[int, str]] | None = None,
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
    reading = read_region(fs, manifest.urls, array, whole, DecodedChunkCache(0), versions)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(reading)
    # called from a thread running an event loop (a notebook): run on a thread of its own
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, reading).result()
