"""Scan a CDF-5 ("64-bit data", magic ``CDF\\x05``) NetCDF file by reading its header.

kerchunk and scipy read only the classic and 64-bit offset variants. CDF-5 is the same
layout with 64-bit counts, dimension lengths, sizes and offsets, and five more types
(unsigned and 64-bit integers). Data are big-endian; fixed-size variables are contiguous
at their ``begin``; record variables are interleaved, one record of each per record of the
file, ``recsize`` bytes apart (the sum of their sizes padded to 4 bytes, except that a lone
record variable is not padded).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..manifest import ArrayMeta, ChunkGrid, Manifest, VirtualArray
from .attributes import (
    attribute_dtypes,
    json_attributes,
    left_out_messages,
    numeric_fill_problem,
    zarr_fill_value,
)

__all__ = ["scan_cdf5", "HEADER_READ"]

#: Bytes of the first read: most headers fit; a longer one is read on in doubling steps.
HEADER_READ = 64 * 1024

_MAGIC = b"CDF\x05"
_STREAMING = 0xFFFFFFFFFFFFFFFF
_NC_DIMENSION, _NC_VARIABLE, _NC_ATTRIBUTE = 10, 11, 12
_NC_CHAR = 2

#: nc_type -> numpy dtype of the data as stored (big-endian)
_TYPES: dict[int, str] = {
    1: "i1",
    2: "S1",
    3: ">i2",
    4: ">i4",
    5: ">f4",
    6: ">f8",
    7: "u1",
    8: ">u2",
    9: ">u4",
    10: ">i8",
    11: ">u8",
}


class _Cursor:
    """Reads the header's big-endian fields, fetching more of the file when it runs out."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int | None) -> None:
        self._fetch = fetch
        self._size = size
        self._buffer = b""
        self.position = 0
        self.requests = 0
        self.bytes = 0

    def _ensure(self, end: int) -> None:
        while end > len(self._buffer):
            start = len(self._buffer)
            stop = max(end, 2 * start, HEADER_READ)
            if self._size is not None:
                stop = min(stop, self._size)
            data = self._fetch(start, stop) if stop > start else b""
            self.requests += 1
            self.bytes += len(data)
            if not data:
                raise ValueError(f"the header ends past the end of the file ({start} bytes)")
            self._buffer += data

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        self._ensure(self.position + n)
        out = self._buffer[self.position : self.position + n]
        self.position += n
        return out

    def int32(self) -> int:
        """The next signed 32-bit integer."""
        return int(struct.unpack(">i", self.take(4))[0])

    def uint64(self) -> int:
        """The next unsigned 64-bit integer."""
        return int(struct.unpack(">Q", self.take(8))[0])

    def count(self) -> int:
        """The next count or length (a non-negative 64-bit integer)."""
        value = self.uint64()
        if value >= 2**63:
            raise ValueError(f"negative count in the header at byte {self.position - 8}")
        return value

    def padded(self, n: int) -> bytes:
        """The next ``n`` bytes, skipping the padding to a 4-byte boundary after them."""
        data = self.take(n)
        self.take(-n % 4)
        return data

    def name(self) -> str:
        """The next name (length, UTF-8 bytes, padding)."""
        return self.padded(self.count()).decode("utf-8")


@dataclass(slots=True)
class _Variable:
    name: str
    dimids: list[int]
    attributes: dict[str, Any]
    nc_type: int
    vsize: int
    begin: int


@dataclass(slots=True)
class _Header:
    numrecs: int
    dimensions: list[tuple[str, int]]
    attributes: dict[str, Any]
    variables: list[_Variable] = field(default_factory=list)


def _list_header(cursor: _Cursor, tag: int) -> int:
    """The number of elements of a list whose tag should be ``tag`` (0 if absent)."""
    found = cursor.int32()
    count = cursor.count()
    if found == 0 and count == 0:
        return 0
    if found != tag:
        raise ValueError(f"expected list tag {tag} at byte {cursor.position - 12}, got {found}")
    return count


def _attribute_value(cursor: _Cursor) -> Any:
    nc_type = cursor.int32()
    if nc_type not in _TYPES:
        raise ValueError(f"unknown attribute type {nc_type}")
    dtype = np.dtype(_TYPES[nc_type])
    n = cursor.count()
    raw = cursor.padded(n * dtype.itemsize)
    if nc_type == _NC_CHAR:
        return raw.rstrip(b"\x00")
    # native byte order, as netCDF readers return attributes
    return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))


def _attributes(cursor: _Cursor) -> dict[str, Any]:
    out = {}
    for _ in range(_list_header(cursor, _NC_ATTRIBUTE)):
        name = cursor.name()
        out[name] = _attribute_value(cursor)
    return out


def _variable(cursor: _Cursor, n_dims: int) -> _Variable:
    name = cursor.name()
    dimids = [cursor.count() for _ in range(cursor.count())]
    if any(d >= n_dims for d in dimids):
        raise ValueError(f"variable {name!r} refers to a dimension the header does not define")
    attributes = _attributes(cursor)
    nc_type = cursor.int32()
    if nc_type not in _TYPES:
        raise ValueError(f"variable {name!r} has unknown type {nc_type}")
    vsize = cursor.count()
    begin = cursor.count()
    return _Variable(name, dimids, attributes, nc_type, vsize, begin)


def read_header(cursor: _Cursor) -> _Header:
    """Parse a CDF-5 header from the start of the file.

    Parameters
    ----------
    cursor
        Positioned at byte 0.

    Raises
    ------
    ValueError
        If the bytes are not a CDF-5 header, or the record count is not recorded
        (a file still being written in streaming mode).
    """
    if cursor.take(4) != _MAGIC:
        raise ValueError("not a CDF-5 file (magic bytes differ)")
    numrecs = cursor.uint64()
    if numrecs == _STREAMING:
        raise ValueError("the header does not record the number of records (streaming mode)")
    dimensions = []
    for _ in range(_list_header(cursor, _NC_DIMENSION)):
        name = cursor.name()
        dimensions.append((name, cursor.count()))
    header = _Header(numrecs, dimensions, _attributes(cursor))
    for _ in range(_list_header(cursor, _NC_VARIABLE)):
        header.variables.append(_variable(cursor, len(dimensions)))
    return header


def _is_record(header: _Header, variable: _Variable) -> bool:
    return bool(variable.dimids) and header.dimensions[variable.dimids[0]][1] == 0


def _record_size(header: _Header) -> int:
    """The bytes between one record and the next."""
    sizes = [_unpadded_size(header, v) for v in header.variables if _is_record(header, v)]
    if len(sizes) == 1:
        return sizes[0]
    return sum(s + (-s % 4) for s in sizes)


def _unpadded_size(header: _Header, variable: _Variable) -> int:
    """The bytes of the variable (of one record of it, for a record variable)."""
    dims = variable.dimids[1:] if _is_record(header, variable) else variable.dimids
    n = math.prod(header.dimensions[d][1] for d in dims)
    return n * np.dtype(_TYPES[variable.nc_type]).itemsize


def _array(header: _Header, variable: _Variable, recsize: int) -> tuple[VirtualArray, int]:
    """The variable as a virtual array, and the byte its data end at."""
    dtype = np.dtype(_TYPES[variable.nc_type])
    names = tuple(header.dimensions[d][0] for d in variable.dimids)
    lengths = [header.dimensions[d][1] for d in variable.dimids]
    nbytes = _unpadded_size(header, variable)
    if _is_record(header, variable):
        records = header.numrecs
        shape = (records, *lengths[1:])
        chunks = (1, *(max(n, 1) for n in lengths[1:]))
        grid_shape = (records, *(1,) * (len(shape) - 1))
        offsets = variable.begin + recsize * np.arange(records, dtype=np.uint64)
        offset = offsets.reshape(grid_shape)
        end = variable.begin + recsize * (records - 1) + nbytes if records else 0
    else:
        shape = tuple(lengths)
        chunks = tuple(max(n, 1) for n in lengths)
        grid_shape = tuple(1 if n else 0 for n in lengths)
        offset = np.full(grid_shape, variable.begin, dtype=np.uint64)
        end = variable.begin + nbytes if nbytes else 0
    grid = ChunkGrid(
        np.zeros(grid_shape, dtype=np.int32),
        offset.astype(np.uint64),
        np.full(grid_shape, nbytes, dtype=np.uint64),
    )
    raw = variable.attributes
    fill = zarr_fill_value(raw["_FillValue"], dtype) if "_FillValue" in raw else None
    meta = ArrayMeta(
        shape=shape,
        chunks=chunks,
        dtype=dtype.str,
        compressor=None,
        filters=None,
        fill_value=fill,
        dimensions=names,
        attrs=json_attributes({k: v for k, v in raw.items() if k != "_FillValue"}),
        attr_dtypes=attribute_dtypes(raw, raw),
    )
    return VirtualArray(meta, grid), end


def manifest_from_header(header: _Header, url: str, size: int | None = None) -> Manifest:
    """The manifest of a CDF-5 file from its parsed header.

    Parameters
    ----------
    header
        What :func:`read_header` returned.
    url
        The file's path; it becomes file id 0.
    size
        The file's size, if known: a file too short for the data its header declares is
        refused rather than served with missing bytes.

    Raises
    ------
    ValueError
        If the file is shorter than its data.
    """
    recsize = _record_size(header)
    arrays = {}
    skipped = {}
    for variable in header.variables:
        array, end = _array(header, variable, recsize)
        if size is not None and end > size:
            raise ValueError(
                f"variable {variable.name!r} ends at byte {end}, past the end of the file "
                f"({size} bytes): truncated?"
            )
        odd_fill = numeric_fill_problem(variable.attributes, array.meta.numpy_dtype)
        if odd_fill is not None:
            skipped[variable.name] = odd_fill
            continue
        arrays[variable.name] = array
    groups = {"": json_attributes(header.attributes)}
    return Manifest(urls=(url,), groups=groups, arrays=arrays, skipped=skipped)


def scan_cdf5(
    fs: Any, url: str, size: int | None = None
) -> tuple[Manifest, list[str], tuple[int, int]]:
    """Scan one CDF-5 file: its header, read from the start of the file in as few
    ranged reads as its length allows (one for headers up to :data:`HEADER_READ`).

    Parameters
    ----------
    fs
        The source filesystem.
    url
        The file's path on ``fs``.
    size
        The file's size if known (spares reading past the end, and checks the file
        holds all the data its header declares).

    Returns
    -------
    manifest, warnings, (requests, bytes)
        The file's manifest (variables that cannot be served are in ``skipped``), a
        message for each of those, and the reads the scan made.
    """
    cursor = _Cursor(lambda start, end: fs.cat_file(url, start=start, end=end), size or None)
    header = read_header(cursor)
    manifest = manifest_from_header(header, url, size or None)
    return manifest, left_out_messages(manifest), (cursor.requests, cursor.bytes)
