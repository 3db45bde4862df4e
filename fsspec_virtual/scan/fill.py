"""What an HDF5 / NetCDF4 variable reads as where no data was written.

Two places hold no data: chunks never written (inside the dataset's extent), which HDF5
reads as the dataset's fill value, and, in NetCDF4 files, records beyond a variable's
own extent along an unlimited dimension that other variables made longer, which netCDF
reads as the variable's ``_FillValue`` or netCDF's default fill value.

The Zarr ``fill_value`` we declare is the source's ``_FillValue`` only (xarray masks
whatever ``fill_value`` says; declaring HDF5's default 0 would mask real zeros). Where
that differs from what the source reads as, the missing chunks are served as an inline
chunk of the right fill.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import h5py
import numpy as np

from ..codecs import encode_chunk
from ..manifest import COMPUTED, INLINE, MISSING, ChunkGrid, VirtualArray
from .attributes import zarr_fill_value

__all__ = ["UnservableError", "apply_fill_semantics", "netcdf_default_fill"]

#: A chunk added beyond the dataset's extent (a transient marker, below every sentinel the
#: manifest uses)
_EXTENDED = min(MISSING, INLINE, COMPUTED) - 1

#: netCDF-C's default fill values (netcdf.h NC_FILL_*), by numpy dtype kind and size.
_NETCDF_DEFAULT_FILLS: dict[str, Any] = {
    "i1": -127,
    "u1": 255,
    "i2": -32767,
    "u2": 65535,
    "i4": -2147483647,
    "u4": 4294967295,
    "i8": -9223372036854775806,
    "u8": 18446744073709551614,
    "f4": 9.9692099683868690e36,
    "f8": 9.9692099683868690e36,
}


class UnservableError(Exception):
    """A variable cannot be served correctly by byte ranges (the message says why)."""


def netcdf_default_fill(dtype: np.dtype) -> Any:
    """netCDF's default fill value for a numeric dtype (0 where netCDF defines none; a
    null byte, NC_FILL_CHAR, for text)."""
    if dtype.kind == "S":
        return b""
    return _NETCDF_DEFAULT_FILLS.get(f"{dtype.kind}{dtype.itemsize}", 0)


def _json_fill_to_value(value: Any, dtype: np.dtype) -> Any:
    """What zarr fills missing chunks with, given the ``.zarray`` ``fill_value``."""
    if dtype.kind == "S":  # Zarr v2 spells a bytes fill value in base64
        return b"" if value is None else base64.standard_b64decode(value)
    if value is None:
        return 0
    if isinstance(value, str) and dtype.kind in "fc":
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}[value]
    return value


def _same(a: Any, b: Any, dtype: np.dtype) -> bool:
    return np.array(a, dtype=dtype).tobytes() == np.array(b, dtype=dtype).tobytes()


def _padded(grid: ChunkGrid, grid_shape: tuple[int, ...]) -> ChunkGrid:
    pad = [(0, new - old) for new, old in zip(grid_shape, grid.shape)]
    return ChunkGrid(
        np.pad(grid.file_id, pad, constant_values=_EXTENDED),
        np.pad(grid.offset, pad),
        np.pad(grid.length, pad),
        grid.inline,
    )


def _straddling_chunks_exist(grid: ChunkGrid, extent: tuple[int, ...], chunks: tuple[int, ...]):
    for axis, (n, c) in enumerate(zip(extent, chunks)):
        if n % c:
            index = [slice(None)] * len(extent)
            index[axis] = slice(n // c, n // c + 1)
            if (grid.file_id[tuple(index)] >= 0).any():
                return True
    return False


def apply_fill_semantics(
    dset: h5py.Dataset, array: VirtualArray, shape: tuple[int, ...], netcdf: bool
) -> VirtualArray:
    """Declare the right ``fill_value``, grow to ``shape``, and fill unwritten chunks.

    Parameters
    ----------
    dset
        The source dataset.
    array
        Its array as translated from kerchunk.
    shape
        Its netCDF shape (its dimensions' lengths); at least its HDF5 extent.
    netcdf
        Whether the file follows netCDF-4 conventions (fills beyond a variable's extent).

    Raises
    ------
    UnservableError
        If a chunk straddling the variable's extent may hold bytes that are not the fill.
    """
    meta = array.meta
    if "_FillValue" not in dset.attrs and "_FillValue" not in meta.attrs:
        meta = replace(meta, fill_value=None)
    elif "_FillValue" in dset.attrs and meta.numpy_dtype.kind == "S":
        # kerchunk encodes a bytes fill value twice (base64 of its base64)
        fill = zarr_fill_value(dset.attrs["_FillValue"], meta.numpy_dtype)
        meta = replace(meta, fill_value=fill)
    dtype = meta.numpy_dtype
    extent = meta.shape
    grown = shape != extent
    if grown:
        meta = replace(meta, shape=shape)
    grid = _padded(array.grid, meta.grid_shape) if grown else array.grid
    if dtype.kind not in "biufcS":
        if grown:
            raise UnservableError("a non-numeric variable shorter than its dimensions")
        return VirtualArray(meta, grid)
    zarr_fill = _json_fill_to_value(meta.fill_value, dtype)
    inside_fill = dset.fillvalue
    beyond_fill = dset.attrs["_FillValue"] if "_FillValue" in dset.attrs else None
    if beyond_fill is None:
        beyond_fill = netcdf_default_fill(dtype) if netcdf else inside_fill
    if grown and _straddling_chunks_exist(array.grid, extent, meta.chunks):
        fill_time = dset.id.get_create_plist().get_fill_time()
        if fill_time == h5py.h5d.FILL_TIME_NEVER or not _same(inside_fill, beyond_fill, dtype):
            raise UnservableError(
                f"its extent {extent} is shorter than its dimensions {shape} and a chunk "
                "straddles the end of its data (served by a later version)"
            )
    file_id, offset, length = (np.array(a) for a in (grid.file_id, grid.offset, grid.length))
    inline = list(grid.inline)
    for marker, fill in ((MISSING, inside_fill), (_EXTENDED, beyond_fill)):
        where = file_id == marker
        if not where.any():
            continue
        if _same(fill, zarr_fill, dtype):
            file_id[where] = MISSING
            continue
        chunk = encode_chunk(np.full(meta.chunks, fill, dtype=dtype), meta)
        file_id[where] = INLINE
        offset[where] = len(inline)
        length[where] = len(chunk)
        inline.append(chunk)
    return VirtualArray(meta, ChunkGrid(file_id, offset, length, tuple(inline)))
