"""Read a (small) array's values through its manifest: used for concat coordinates."""

from __future__ import annotations

import numpy as np
from fsspec import AbstractFileSystem

from .codecs import decode_chunk
from .manifest import INLINE, MISSING, Manifest

__all__ = ["read_array"]


def _decode_fill(value: object, dtype: np.dtype) -> object:
    if value is None:
        return "" if dtype.kind in "OSU" else 0
    if isinstance(value, str) and dtype.kind in "fc":
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(value, value)
    return value


def read_array(fs: AbstractFileSystem, manifest: Manifest, path: str) -> np.ndarray:
    """The full, raw (not CF-decoded) values of one array of ``manifest``.

    Parameters
    ----------
    fs
        The source filesystem, to read chunks from.
    manifest
        The manifest holding the array.
    path
        The array's path.
    """
    array = manifest.arrays[path]
    if array.plan is not None:
        import asyncio

        from .compute import DecodedChunkCache, read_region

        whole = tuple((0, n) for n in array.meta.shape)
        reading = read_region(fs, manifest.urls, array, whole, DecodedChunkCache(0))
        return asyncio.run(reading)
    meta, grid = array.meta, array.grid
    dtype = meta.numpy_dtype
    out = np.full(meta.shape, _decode_fill(meta.fill_value, dtype), dtype=dtype)
    indices = list(np.ndindex(grid.shape))
    remote = [i for i in indices if grid.file_id[i] >= 0]
    fetched = fs.cat_ranges(
        [manifest.urls[grid.file_id[i]] for i in remote],
        [int(grid.offset[i]) for i in remote],
        [int(grid.offset[i] + grid.length[i]) for i in remote],
    )
    raw_by_index = dict(zip(remote, fetched))
    for index in indices:
        fid = grid.file_id[index]
        if fid == MISSING:
            continue
        raw = grid.inline[int(grid.offset[index])] if fid == INLINE else raw_by_index[index]
        chunk = decode_chunk(raw, meta)
        region = tuple(
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, meta.chunks, meta.shape)
        )
        out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
    return out
