"""Concatenating one variable across files: passthrough where chunks line up, else computed.

A variable whose files agree in dtype, codecs, chunk shape and fill value, and whose
per-file lengths line up with the chunk grid, is served as byte ranges of its files.
Otherwise it gets a regular chunk grid (the first file's chunk shape) whose chunks pass
through where one file's chunk covers them exactly with the declared codec, and are
computed (:mod:`fsspec_virtual.compute`) where they straddle files or need converting.
Files whose CF packing differs (or is float32, which Zarr's JSON attributes cannot
carry) are served unpacked: the decoded floating-point values, packing attributes removed.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from .errors import IncompatibleSourcesError
from .manifest import (
    COMPUTED,
    ArrayMeta,
    ChunkGrid,
    ComputePlan,
    Manifest,
    SourcePart,
    VirtualArray,
    dtype_spelling,
)
from .packing import PACKING_ATTRS, unpacked_dtype

__all__ = [
    "concatenate_variable",
    "serve_alone",
    "coarsened",
    "url_shifts",
    "CrossAxisPlanError",
    "PACKING_ATTRS",
]

#: Source chunks smaller than this (decoded) are served merged into larger chunks...
SMALL_CHUNK_BYTES = 64 * 1024
#: ... of about this size ...
MERGED_CHUNK_BYTES = 1024 * 1024
#: ... when the variable has at least this many of them: zarr's cost per chunk, not
#: decoding, then bounds reads (6 MB/s on a ReferenceFileSystem for 3.6 KB chunks).
MANY_CHUNKS = 1024


class CrossAxisPlanError(NotImplementedError):
    """An array already computed along one axis cannot be concatenated along another
    (a computed chunk's parts are placed along one axis only)."""


def url_shifts(files: Sequence[_File]) -> list[int]:
    """Where each file's URLs begin in the joined URL table (a file here may itself be
    several files joined before)."""
    return [0, *itertools.accumulate(len(f.manifest.urls) for f in files)][:-1]


class _File(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def manifest(self) -> Manifest: ...


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _hard_differences(a: ArrayMeta, b: ArrayMeta, axis: int) -> list[str]:
    """Differences no conversion can reconcile."""
    found = []
    if a.dimensions != b.dimensions:
        found.append(f"dimensions {a.dimensions} vs {b.dimensions}")
    shape_a = [s for i, s in enumerate(a.shape) if i != axis]
    shape_b = [s for i, s in enumerate(b.shape) if i != axis]
    if shape_a != shape_b or len(a.shape) != len(b.shape):
        found.append(f"shape {a.shape} vs {b.shape}")
    kind_a, kind_b = a.numpy_dtype.kind, b.numpy_dtype.kind
    numeric = "biuf"
    if kind_a != kind_b and not (kind_a in numeric and kind_b in numeric):
        found.append(f"dtype {a.dtype} vs {b.dtype} (no common type)")
    elif a.numpy_dtype.names != b.numpy_dtype.names:
        found.append(
            f"compound fields {a.numpy_dtype.names} vs {b.numpy_dtype.names} (no common type)"
        )
    if a.attrs.get("units") != b.attrs.get("units"):
        found.append(f"attribute units {a.attrs.get('units')!r} vs {b.attrs.get('units')!r}")
    return found


def _packing(meta: ArrayMeta) -> tuple[object, ...]:
    return (meta.fill_value, *(meta.attrs.get(n) for n in PACKING_ATTRS))


def _is_packed(meta: ArrayMeta) -> bool:
    return "scale_factor" in meta.attrs or "add_offset" in meta.attrs


def _lossy_packing(meta: ArrayMeta) -> bool:
    """Packing attributes narrower than float64: their type is lost in Zarr's JSON."""
    return any(
        np.dtype(meta.attr_dtypes.get(n, "<f8")).kind == "f"
        and np.dtype(meta.attr_dtypes.get(n, "<f8")).itemsize < 8
        for n in ("scale_factor", "add_offset")
        if n in meta.attrs
    )


def _codec(meta: ArrayMeta) -> tuple[object, ...]:
    return (meta.dtype, meta.compressor, meta.filters, meta.order, meta.chunks, meta.fill_value)


def _parts(
    arrays: list[VirtualArray],
    starts: list[int],
    unpack: bool,
    shifts: list[int],
    axis: int | None,
) -> tuple[SourcePart, ...]:
    parts: list[SourcePart] = []
    for array, start, shift in zip(arrays, starts, shifts):
        if array.plan is not None:
            if array.plan.axis is not None and array.plan.axis != axis:
                raise CrossAxisPlanError(
                    f"computed along axis {array.plan.axis}, to be joined along axis {axis}"
                )
            for part in array.plan.parts:
                moved = part.shifted(shift, start)
                parts.append(replace(moved, unpack=moved.unpack or unpack))
        else:
            grid = array.grid.with_file_ids_shifted(shift)
            parts.append(SourcePart(start, array.meta, grid, shift, None, unpack))
    return tuple(parts)


def _hybrid_grid(
    target: ArrayMeta,
    arrays: list[VirtualArray],
    starts: list[int],
    axis: int,
    shifts: list[int],
) -> ChunkGrid:
    """Target chunks copied from a file where one file chunk is exactly the target chunk."""
    c = target.chunks[axis]
    total = target.shape[axis]
    grids = []
    positions = []  # where each file's grid begins in the concatenated grid
    position = 0
    eligible = [a.plan is None and _codec(a.meta) == _codec(target) for a in arrays]
    for index, (array, usable) in enumerate(zip(arrays, eligible)):
        if usable:
            grids.append(array.grid.with_file_ids_shifted(shifts[index]))
        else:
            placeholder = list(target.grid_shape)
            placeholder[axis] = array.grid.shape[axis]
            grids.append(ChunkGrid.computed(tuple(placeholder)))
        positions.append(position)
        position += array.grid.shape[axis]
    joined = ChunkGrid.concatenate(grids, axis)
    n_target = -(-total // c)
    take = np.full(n_target, -1, dtype=np.int64)
    for i in range(n_target):
        lo, hi = i * c, min((i + 1) * c, total)
        f = int(np.searchsorted(starts, lo, side="right")) - 1
        extent = arrays[f].meta.shape[axis]
        if eligible[f] and (lo - starts[f]) % c == 0 and hi <= starts[f] + extent:
            take[i] = positions[f] + (lo - starts[f]) // c
    safe = np.maximum(take, 0)
    shape = [1] * joined.file_id.ndim
    shape[axis] = n_target
    computed = (take < 0).reshape(shape)
    file_id = np.where(computed, np.int32(COMPUTED), np.take(joined.file_id, safe, axis=axis))
    offset = np.where(computed, np.uint64(0), np.take(joined.offset, safe, axis=axis))
    length = np.where(computed, np.uint64(0), np.take(joined.length, safe, axis=axis))
    return ChunkGrid(
        file_id.astype(np.int32), offset.astype(np.uint64), length.astype(np.uint64), joined.inline
    )


_LOSSY_REASON = "float32 packing (its type is lost in Zarr attributes): served unpacked"


def _unpacked(
    arrays: list[VirtualArray],
    starts: list[int],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    axis: int | None,
    why: str,
    shifts: list[int] | None = None,
) -> VirtualArray:
    """The decoded values of the arrays laid end to end, packing attributes removed."""
    metas = [a.meta for a in arrays]
    first = metas[0]
    dtype = np.result_type(*(unpacked_dtype(m) for m in metas))
    dropped = {*PACKING_ATTRS, "_FillValue"}
    target = replace(
        first,
        shape=shape,
        chunks=chunks,
        dtype=dtype_spelling(dtype),
        compressor=None,
        filters=None,
        fill_value="NaN" if dtype.kind == "f" else None,
        attrs={k: v for k, v in first.attrs.items() if k not in dropped},
        attr_dtypes={k: v for k, v in first.attr_dtypes.items() if k not in dropped},
    )
    shifts = shifts if shifts is not None else list(range(len(arrays)))
    plan = ComputePlan(_parts(arrays, starts, True, shifts, axis), axis, why)
    return VirtualArray(target, ChunkGrid.computed(target.grid_shape), plan)


def serve_alone(array: VirtualArray) -> VirtualArray:
    """A variable served from one file: unpacked if its packing cannot pass through."""
    meta = array.meta
    if not (_is_packed(meta) and _lossy_packing(meta)) or not meta.shape:
        return array
    chunks = tuple(max(c, 1) for c in meta.chunks)
    return _unpacked([array], [0], meta.shape, chunks, None, _LOSSY_REASON, [0])


def _first_difference(files: Sequence[_File], metas: list[ArrayMeta], key) -> str | None:
    for (fa, a), (fb, b) in itertools.pairwise(zip(files, metas)):
        if key(a) != key(b):
            return f"{_name(fa.path)} and {_name(fb.path)}"
    return None


def _straddle(files: Sequence[_File], lengths: list[int], chunk: int) -> str | None:
    for i, n in enumerate(lengths[:-1]):
        if n % chunk:
            return f"{_name(files[i].path)}/{_name(files[i + 1].path)}"
    return None


def _signature(meta: ArrayMeta, axis: int) -> tuple[object, ...]:
    """Everything that must be equal for files to be joined as they are (byte ranges
    passed through): all of ``.zarray`` and the decoding attributes, but the length
    along ``axis`` (compared with ``==``: it holds dicts)."""
    attrs, types = meta.attrs, meta.attr_dtypes
    return (
        meta.dimensions,
        meta.shape[:axis] + meta.shape[axis + 1 :],
        meta.dtype,
        meta.chunks,
        meta.order,
        meta.compressor,
        meta.filters,
        str(meta.fill_value),
        attrs.get("units"),
        attrs.get("scale_factor"),
        attrs.get("add_offset"),
        attrs.get("missing_value"),
        attrs.get("_Unsigned"),
        types.get("scale_factor"),
        types.get("add_offset"),
    )


def _passthrough(arrays: list[VirtualArray], axis: int, shifts: list[int]) -> VirtualArray | None:
    """The common case, decided in one pass: every file's array alike (see
    :func:`_signature`), none computed, none lossily packed, every file but the last a
    whole number of chunks long: the files' chunk grids joined. None otherwise."""
    first = arrays[0].meta
    if _is_packed(first) and _lossy_packing(first):
        return None
    signature = _signature(first, axis)
    chunk = max(first.chunks[axis], 1)
    for array in arrays:
        if array.plan is not None or _signature(array.meta, axis) != signature:
            return None
    if any(a.meta.shape[axis] % chunk for a in arrays[:-1]):
        return None
    total = sum(a.meta.shape[axis] for a in arrays)
    shape = tuple(total if i == axis else n for i, n in enumerate(first.shape))
    target = replace(first, shape=shape, chunks=tuple(max(c, 1) for c in first.chunks))
    grid = ChunkGrid.concatenate([a.grid for a in arrays], axis, shifts)
    return VirtualArray(target, grid)


def _declared(metas: list[ArrayMeta], plain: list[bool]) -> ArrayMeta:
    """The layout a joined variable is served in: that of most of its files (dtype,
    chunks, codecs), so that their chunks pass through and only the others' are computed
    (one NetCDF3 file among NetCDF4 ones, one file compressed otherwise); the first
    file's attributes. Where the files' dtypes differ, the layout of those holding the
    common dtype, else the common dtype uncompressed."""
    first = metas[0]
    dtype = np.result_type(*(m.numpy_dtype for m in metas))
    if all(m.dtype == first.dtype for m in metas):
        dtype = first.numpy_dtype  # exactly, byte order included (NetCDF3 is big-endian)
    eligible = [m for m, ok in zip(metas, plain) if ok and m.numpy_dtype == dtype]
    eligible = [m for m in eligible if m.dtype == dtype_spelling(dtype)] or eligible
    if not eligible:
        return replace(first, dtype=dtype_spelling(dtype), compressor=None, filters=None)
    layouts = [repr(_codec(m)) for m in eligible]
    tally = collections.Counter(layouts)
    # the most common layout; among equals, the earliest file's
    base = eligible[max(range(len(eligible)), key=lambda i: (tally[layouts[i]], -i))]
    return replace(base, attrs=first.attrs, attr_dtypes=first.attr_dtypes)


def concatenate_variable(path: str, files: Sequence[_File], axis: int) -> VirtualArray:
    """One variable of every file, joined along ``axis``.

    Parameters
    ----------
    path
        The variable's path.
    files
        The scanned files, in concat order; each holds ``path``.
    axis
        The concat dimension's axis in the variable.

    Raises
    ------
    IncompatibleSourcesError
        If the files' versions differ in a way no conversion reconciles (dimensions,
        non-concat shape, text vs numbers, units).
    """
    arrays = [f.manifest.arrays[path] for f in files]
    shifts = url_shifts(files)
    metas = [a.meta for a in arrays]
    first = metas[0]
    fast = _passthrough(arrays, axis, shifts)
    if fast is not None:
        return fast
    for other_file, other in zip(files[1:], metas[1:]):
        hard = _hard_differences(first, other, axis)
        if hard:
            raise IncompatibleSourcesError(
                f"variable {path!r} differs between {files[0].path} and {other_file.path}: "
                + "; ".join(hard)
            )
    lengths = [m.shape[axis] for m in metas]
    starts = [0, *itertools.accumulate(lengths)][:-1]
    shape = tuple(sum(lengths) if i == axis else s for i, s in enumerate(first.shape))
    chunks = tuple(max(c, 1) for c in first.chunks)
    planned = [a.plan.reason for a in arrays if a.plan is not None]

    packing_between = _first_difference(files, metas, _packing)
    lossy = any(_is_packed(m) and _lossy_packing(m) for m in metas)
    if packing_between or lossy:
        why = (
            f"packing differs between {packing_between}: served unpacked"
            if packing_between
            else _LOSSY_REASON
        )
        return _unpacked(arrays, starts, shape, chunks, axis, why, shifts)

    declared = _declared(metas, [a.plan is None for a in arrays])
    chunks = tuple(max(c, 1) for c in declared.chunks)
    target = replace(declared, shape=shape, chunks=chunks)
    straddle = _straddle(files, lengths, chunks[axis])
    codecs_between = _first_difference(files, metas, _codec)
    if not planned and not straddle and not codecs_between:
        grids = [a.grid.with_file_ids_shifted(shift) for a, shift in zip(arrays, shifts)]
        return VirtualArray(target, ChunkGrid.concatenate(grids, axis))
    reasons = []
    if straddle:
        reasons.append(f"chunks straddle files {straddle}")
    if codecs_between:
        reasons.append(f"dtype, codecs, chunks or fill value differ between {codecs_between}")
    reasons.extend(planned[:1])
    plan = ComputePlan(_parts(arrays, starts, False, shifts, axis), axis, "; ".join(reasons))
    return VirtualArray(target, _hybrid_grid(target, arrays, starts, axis, shifts), plan)


def coarsened(array: VirtualArray, keep_axis: int | None) -> VirtualArray:
    """A variable of many tiny chunks served as computed chunks that merge whole runs of
    them (along every axis but ``keep_axis``, trailing axes first); else ``array``.

    Each merged chunk covers whole source chunks, so every source chunk is fetched (in
    one merged request with its neighbours) and decoded exactly once per read; merged
    chunks are stored uncompressed, so zarr only copies them.
    """
    meta = array.meta
    dtype = meta.numpy_dtype
    if array.plan is not None or not meta.shape or dtype.kind in "OUS" or dtype.names:
        return array
    n_chunks = int(np.prod(array.grid.shape))
    chunk_bytes = int(np.prod(meta.chunks)) * dtype.itemsize
    if chunk_bytes >= SMALL_CHUNK_BYTES or n_chunks < MANY_CHUNKS or chunk_bytes == 0:
        return array
    chunks = list(meta.chunks)
    for axis in reversed(range(len(chunks))):
        if axis == keep_axis:
            continue
        size = int(np.prod(chunks)) * dtype.itemsize
        room = MERGED_CHUNK_BYTES // size
        runs = -(-meta.shape[axis] // chunks[axis])
        factor = max(1, min(room, runs))
        chunks[axis] = (
            min(chunks[axis] * factor, meta.shape[axis])
            if factor == runs
            else (chunks[axis] * factor)
        )
    if tuple(chunks) == meta.chunks:
        return array
    target = replace(meta, chunks=tuple(chunks), compressor=None, filters=None)
    reason = (
        f"{n_chunks} source chunks of {chunk_bytes} B served merged into chunks of {tuple(chunks)}"
    )
    plan = ComputePlan((SourcePart(0, meta, array.grid),), None, reason)
    return VirtualArray(target, ChunkGrid.computed(target.grid_shape), plan)


def _layout(meta: ArrayMeta) -> tuple[object, ...]:
    """What gives a chunk key its meaning: everything of ``.zarray`` but the shape."""
    return (meta.chunks, meta.dtype, meta.compressor, meta.filters, meta.fill_value, meta.order)
