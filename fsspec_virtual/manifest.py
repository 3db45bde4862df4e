"""Numpy-backed manifests: what a set of files holds, and where each chunk's bytes are.

A :class:`ChunkGrid` holds one variable's chunk locations as three arrays shaped like the
chunk grid: ``file_id`` (an index into the manifest's URL table, or a negative sentinel),
``offset`` and ``length``. Inline chunks (bytes held in memory) have ``file_id == INLINE``
and ``offset`` indexes the grid's ``inline`` table. A chunk never written in the source has
``file_id == MISSING``: the store reports it as a missing key, and zarr fills it. A chunk
with ``file_id == COMPUTED`` has no bytes anywhere: it is assembled on request from the
source pieces its array's :class:`ComputePlan` lists (see :mod:`fsspec_virtual.compute`).

A :class:`Manifest` is the set of arrays and groups of one file (after scanning) or of a
whole collection (after combining); both have the same shape, only the URL table differs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .access import FileVersion

__all__ = [
    "MISSING",
    "INLINE",
    "COMPUTED",
    "ArrayMeta",
    "ChunkGrid",
    "SourcePart",
    "ComputePlan",
    "VirtualArray",
    "Manifest",
]

MISSING = -1
INLINE = -2
COMPUTED = -3


def numpy_dtype(spelled: str) -> np.dtype:
    """A v2 dtype spelling as numpy's dtype; structured types are a JSON field list."""
    if spelled.startswith("["):
        return np.dtype([tuple(field) for field in json.loads(spelled)])
    return np.dtype(spelled)


def dtype_spelling(dtype: np.dtype) -> str:
    """How :class:`ArrayMeta` spells ``dtype`` (the inverse of :func:`numpy_dtype`)."""
    return json.dumps(dtype.descr) if dtype.names is not None else dtype.str


@dataclass(frozen=True, slots=True)
class ArrayMeta:
    """The Zarr (v2) description of one array, plus its dimension names and attributes.

    Attributes
    ----------
    shape, chunks
        Array and chunk shape.
    dtype
        Numpy dtype string as written in a v2 ``.zarray`` (``"<f4"``, ``"|O"``); for a
        structured type, the JSON of its field list (``'[["a", "<i4"], ["b", "<f8"]]'``).
    compressor, filters
        numcodecs configurations, as in ``.zarray``.
    fill_value
        The JSON form of the ``.zarray`` fill value: what xarray treats as ``_FillValue``.
    dimensions
        One name per axis (``_ARRAY_DIMENSIONS``).
    attrs
        User attributes, without ``_ARRAY_DIMENSIONS``.
    attr_dtypes
        The source's numpy dtype of numeric attributes (JSON keeps only the value);
        xarray's unpacking picks its float type from ``scale_factor``'s.
    """

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    compressor: dict[str, Any] | None
    filters: tuple[dict[str, Any], ...] | None
    fill_value: Any
    dimensions: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    order: str = "C"
    attr_dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(math.ceil(s / c) if c else 0 for s, c in zip(self.shape, self.chunks))

    @property
    def numpy_dtype(self) -> np.dtype:
        """:attr:`dtype` as a numpy dtype (structured types included)."""
        return numpy_dtype(self.dtype)

    def to_zarray(self) -> dict[str, Any]:
        """The ``.zarray`` document."""
        return {
            "zarr_format": 2,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": json.loads(self.dtype) if self.dtype.startswith("[") else self.dtype,
            "compressor": self.compressor,
            "filters": list(self.filters) if self.filters is not None else None,
            "fill_value": self.fill_value,
            "order": self.order,
            "dimension_separator": ".",
        }

    def to_zattrs(self) -> dict[str, Any]:
        """The ``.zattrs`` document (attributes plus ``_ARRAY_DIMENSIONS``)."""
        return {**self.attrs, "_ARRAY_DIMENSIONS": list(self.dimensions)}


@dataclass(frozen=True, slots=True)
class ChunkGrid:
    """Where each chunk of one array lives.

    Attributes
    ----------
    file_id
        ``int32`` array shaped like the chunk grid: index into the manifest's URL table,
        or :data:`MISSING` / :data:`INLINE`.
    offset, length
        ``uint64`` arrays of the same shape: the byte range in the file, or for inline
        chunks ``offset`` is the index into ``inline``.
    inline
        Bytes of inline chunks.
    """

    file_id: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    inline: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not (self.file_id.shape == self.offset.shape == self.length.shape):
            raise ValueError(
                f"chunk grid arrays differ in shape: {self.file_id.shape}, "
                f"{self.offset.shape}, {self.length.shape}"
            )
        for arr in (self.file_id, self.offset, self.length):
            arr.flags.writeable = False

    @classmethod
    def empty(cls, grid_shape: tuple[int, ...]) -> ChunkGrid:
        """A grid whose chunks are all missing."""
        return cls(
            np.full(grid_shape, MISSING, dtype=np.int32),
            np.zeros(grid_shape, dtype=np.uint64),
            np.zeros(grid_shape, dtype=np.uint64),
        )

    @classmethod
    def single_inline(cls, data: bytes, ndim: int) -> ChunkGrid:
        """A grid of one chunk held in memory."""
        shape = (1,) * ndim
        return cls(
            np.full(shape, INLINE, dtype=np.int32),
            np.zeros(shape, dtype=np.uint64),
            np.full(shape, len(data), dtype=np.uint64),
            (data,),
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """The chunk grid's shape."""
        return self.file_id.shape

    @property
    def nbytes(self) -> int:
        """Memory held by the grid's arrays and inline bytes."""
        arrays = self.file_id.nbytes + self.offset.nbytes + self.length.nbytes
        return arrays + sum(len(b) for b in self.inline)

    def with_missing_filled(self, chunk: bytes) -> ChunkGrid:
        """The same grid with every missing chunk served as ``chunk`` (held once, inline)."""
        missing = self.file_id == MISSING
        if not missing.any():
            return self
        return ChunkGrid(
            np.where(missing, np.int32(INLINE), self.file_id).astype(np.int32),
            np.where(missing, np.uint64(len(self.inline)), self.offset).astype(np.uint64),
            np.where(missing, np.uint64(len(chunk)), self.length).astype(np.uint64),
            (*self.inline, chunk),
        )

    @classmethod
    def computed(cls, grid_shape: tuple[int, ...]) -> ChunkGrid:
        """A grid whose chunks are all computed on request."""
        return cls(
            np.full(grid_shape, COMPUTED, dtype=np.int32),
            np.zeros(grid_shape, dtype=np.uint64),
            np.zeros(grid_shape, dtype=np.uint64),
        )

    def with_file_ids_shifted(self, shift: int) -> ChunkGrid:
        """The same grid with every real file id increased by ``shift``."""
        fid = self.file_id
        shifted = np.where(fid >= 0, fid + np.int32(shift), fid).astype(np.int32)
        return replace(self, file_id=shifted)

    @staticmethod
    def concatenate(
        grids: list[ChunkGrid], axis: int, shifts: list[int] | None = None
    ) -> ChunkGrid:
        """Join grids along one axis, re-indexing their inline tables, and moving each
        grid's real file ids by its ``shifts`` entry (where its files begin in the joined
        URL table), in one vectorised step."""
        offsets = []
        inline: list[bytes] = []
        for grid in grids:
            if grid.inline:
                is_inline = grid.file_id == INLINE
                offsets.append(
                    np.where(is_inline, grid.offset + np.uint64(len(inline)), grid.offset)
                )
                inline.extend(grid.inline)
            else:
                offsets.append(grid.offset)
        file_id = np.concatenate([g.file_id for g in grids], axis=axis)
        if shifts is not None and any(shifts):
            lengths = [g.file_id.shape[axis] for g in grids]
            along = np.repeat(np.asarray(shifts, dtype=np.int32), lengths)
            shape = [1] * file_id.ndim
            shape[axis] = len(along)
            file_id = np.where(file_id >= 0, file_id + along.reshape(shape), file_id)
        return ChunkGrid(
            file_id.astype(np.int32),
            np.concatenate(offsets, axis=axis).astype(np.uint64),
            np.concatenate([g.length for g in grids], axis=axis),
            tuple(inline),
        )


@dataclass(frozen=True, slots=True)
class SourcePart:
    """One source's contribution to a computed array.

    Attributes
    ----------
    start
        Where the part begins along the plan's axis (0 when there is no axis).
    meta
        The source array as its file holds it (shape, chunks, dtype, codecs, fill).
    grid
        Its chunks' byte ranges (file ids index the manifest's URL table), or None when
        the source is read through h5py (no numcodecs codec can decode it).
    file_id
        The source file (URL table index), for h5py reads.
    h5path
        The dataset's path in the HDF5 file, for h5py reads.
    unpack
        Apply xarray's CF mask and scale/offset decoding (with ``meta.attrs`` typed by
        ``meta.attr_dtypes``) before the values enter the target.
    """

    start: int
    meta: ArrayMeta
    grid: ChunkGrid | None
    file_id: int = 0
    h5path: str | None = None
    unpack: bool = False

    def shifted(self, file_shift: int, start_shift: int) -> SourcePart:
        """The part with its file ids and start moved (when files are concatenated)."""
        grid = self.grid.with_file_ids_shifted(file_shift) if self.grid is not None else None
        return replace(
            self, start=self.start + start_shift, grid=grid, file_id=self.file_id + file_shift
        )


@dataclass(frozen=True, slots=True)
class ComputePlan:
    """How the computed chunks of an array are assembled.

    Attributes
    ----------
    parts
        The sources, in order along ``axis``; together they cover the array.
    axis
        The axis the parts are laid out along, or None for a single part.
    reason
        Why the array is computed, for reports.
    """

    parts: tuple[SourcePart, ...]
    axis: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class VirtualArray:
    """One array of a manifest: its metadata and its chunk locations.

    Attributes
    ----------
    meta
        The array's Zarr description.
    grid
        Where its chunks live.
    plan
        How its :data:`COMPUTED` chunks are assembled, if it has any.
    """

    meta: ArrayMeta
    grid: ChunkGrid
    plan: ComputePlan | None = None

    def __post_init__(self) -> None:
        if self.grid.shape != self.meta.grid_shape:
            raise ValueError(
                f"chunk grid of shape {self.grid.shape} does not fit an array of shape "
                f"{self.meta.shape} with chunks {self.meta.chunks}"
            )


@dataclass(frozen=True, slots=True)
class Manifest:
    """Groups and arrays of one file, or of a combined collection.

    Attributes
    ----------
    urls
        The URL table that chunk grids' file ids index.
    groups
        Group path (``""`` for the root) to its attributes.
    arrays
        Array path (``"t2m"``, ``"grp/sub/v"``) to the array.
    skipped
        Array path to the reason it is left out of the store.
    linked
        Files of :attr:`urls` that were not listed but are read all the same (the targets
        of HDF5 external links), each at the version its metadata was read: reads of them
        are checked against it, and a snapshot depends on it.
    link_targets
        Every file that HDF5 external links of the scan named, whether they were followed
        or not (a target missing, or not HDF5 yet, left its variable out): the scan
        depends on those files' state, so it is neither kept in a cache nor reused.
    """

    urls: tuple[str, ...]
    groups: dict[str, dict[str, Any]]
    arrays: dict[str, VirtualArray]
    skipped: dict[str, str] = field(default_factory=dict)
    linked: dict[str, FileVersion] = field(default_factory=dict)
    link_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for path in self.arrays:
            parent = path.rpartition("/")[0]
            if parent not in self.groups:
                raise ValueError(f"array {path!r} lies in group {parent!r}, which is not listed")

    @property
    def n_chunks(self) -> int:
        """Number of chunks that hold data (neither missing nor filled)."""
        return sum(int((a.grid.file_id != MISSING).sum()) for a in self.arrays.values())

    @property
    def n_bytes_referenced(self) -> int:
        """Bytes of the source files that chunks point at."""
        total = 0
        for a in self.arrays.values():
            total += int(a.grid.length[a.grid.file_id >= 0].sum())
        return total
