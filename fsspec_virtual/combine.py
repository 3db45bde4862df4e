"""Combine per-file manifests into one, as ``xr.open_mfdataset`` combines datasets.

Files are grouped by their set of data variables; each group is placed on an N-D
hypercube by its coordinates (:mod:`fsspec_virtual.hypercube`) and joined one dimension
at a time; the groups are then merged (their shared coordinates equal), or, where they
cover different stretches of one dimension, joined along it with the variables a group
lacks served missing there (``join="outer"``). Along each dimension the rules follow
``xr.open_mfdataset(..., data_vars="minimal", coords="minimal", compat="override")``:
files are ordered by their concat coordinate; variables with the concat dimension are
concatenated; the others, and all attributes, come from the first file.

A dimension coordinate other than the concat one (``lat``, ``lon``) labels every
file's data, so it must hold the same values in every file (xarray refuses to align
other labels with ``join="exact"``, or re-aligns the data): one that differs is refused,
never served under the first file's labels. Data variables without the concat dimension
are not compared (``compat="override"``: the first file's are served). Concatenated
variables are joined by :mod:`fsspec_virtual.concat` (passthrough where chunks line up,
computed where they do not); what no conversion can reconcile is refused with
:class:`IncompatibleSourcesError` naming the variable, the files and the difference:
nothing is ever served wrong.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import cast

import numpy as np

from .concat import CrossAxisPlanError, coarsened, concatenate_variable, serve_alone, url_shifts
from .coords import (
    Labels,
    check_calendars,
    decode_many,
    decode_values,
    encode_times,
    is_cf_time,
    labels_difference,
)
from .errors import IncompatibleSourcesError
from .hypercube import (
    CombineOptions,
    data_variables,
    direction,
    group_by_variables,
    infer_concat_dims,
    natural_key,
    place,
    sortable,
    value_from_path,
)
from .manifest import ArrayMeta, ChunkGrid, ComputePlan, Manifest, VirtualArray, dtype_spelling
from .packing import PACKING_ATTRS, is_packed, unpack

__all__ = [
    "ScannedFile",
    "CombineOptions",
    "combine",
    "concat_coordinate_paths",
    "dimension_coordinate_paths",
    "compared_paths",
]


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """One file's scan result, with the raw values of its dimension coordinates.

    Attributes
    ----------
    path
        The file's path, for ordering and messages.
    manifest
        Its manifest.
    coords
        Array path of each dimension coordinate (see :func:`dimension_coordinate_paths`)
        to its raw values in this file; variable-length strings as fixed-width ones.
    """

    path: str
    manifest: Manifest
    coords: dict[str, np.ndarray]


def concat_coordinate_paths(manifest: Manifest, concat_dim: str) -> list[str]:
    """Paths of the coordinate variables of ``concat_dim`` (in any group)."""
    return [
        path
        for path, array in manifest.arrays.items()
        if path.rpartition("/")[2] == concat_dim and array.meta.dimensions == (concat_dim,)
    ]


#: Coordinate and bounds variables at most this large are read at scan time, so that the
#: combine compares them between files (larger ones are taken from the first file).
SMALL_COORDINATE = 10_000


def compared_paths(manifest: Manifest) -> list[str]:
    """Arrays whose values a scan reads for the combine: dimension coordinates, and the
    small variables a ``coordinates`` or ``bounds`` attribute names (a scalar ``height``,
    ``lat_bnds``), which label data too."""
    out = dict.fromkeys(dimension_coordinate_paths(manifest))
    for path, array in manifest.arrays.items():
        group = path.rpartition("/")[0]
        for key in ("coordinates", "bounds", "grid_mapping"):
            named = array.meta.attrs.get(key)
            if not isinstance(named, str):
                continue
            words = named.split()
            if key == "grid_mapping" and ":" in named:  # "crs: lat lon crs2: x y"
                words = [w[:-1] for w in words if w.endswith(":")]
            for name in words:
                full = f"{group}/{name}" if group else name
                other = manifest.arrays.get(full)
                if other is not None and int(np.prod(other.meta.shape)) <= SMALL_COORDINATE:
                    out[full] = None
    return list(out)


def dimension_coordinate_paths(manifest: Manifest) -> list[str]:
    """Paths of the dimension coordinates: 1-D variables named like their only dimension,
    in any group (the concat dimension's among them)."""
    return [
        path
        for path, array in manifest.arrays.items()
        if array.meta.dimensions == (path.rpartition("/")[2],)
    ]


def _order(files: list[ScannedFile], concat_dim: str) -> list[ScannedFile]:
    """Files in concat-coordinate order, refusing overlaps and duplicates."""
    key_path = concat_dim if concat_dim in files[0].manifest.arrays else None
    has_coord = [key_path is not None and key_path in f.coords for f in files]
    if not any(has_coord):
        return sorted(files, key=lambda f: natural_key(f.path))
    if not all(has_coord):
        with_c = files[has_coord.index(True)]
        without = files[has_coord.index(False)]
        raise IncompatibleSourcesError(
            f"coordinate {concat_dim!r} is in {with_c.path} but not in {without.path}"
        )
    assert key_path is not None
    check_calendars(
        key_path, [f.path for f in files], [f.manifest.arrays[key_path].meta.attrs for f in files]
    )
    all_values = decode_many(
        [f.coords[key_path] for f in files], [f.manifest.arrays[key_path].meta.attrs for f in files]
    )
    sign = direction(files, concat_dim, all_values)
    decoded = {f.path: values for f, values in zip(files, all_values)}
    nonempty = [f for f in files if decoded[f.path].size]
    empty = [f for f in files if not decoded[f.path].size]
    ordered = sorted(nonempty, key=lambda f: sortable(decoded[f.path][0]), reverse=sign < 0)
    for before, after in itertools.pairwise(ordered):
        last, next_first = decoded[before.path][-1], decoded[after.path][0]
        a, b = sortable(last), sortable(next_first)
        if not (a < b if sign > 0 else a > b):
            raise IncompatibleSourcesError(
                f"coordinate {concat_dim!r}: values of {before.path} (up to "
                f"{last}) overlap or duplicate those of {after.path} (from {next_first})"
            )
    return ordered + empty


def _check_same(path: str, first: ScannedFile, other: ScannedFile) -> None:
    """A variable without the concat dimension is taken from the first file (xarray's
    ``compat="override"``); only a different dimension or shape is refused."""
    a, b = first.manifest.arrays[path].meta, other.manifest.arrays[path].meta
    if a.dimensions != b.dimensions or a.shape != b.shape:
        raise IncompatibleSourcesError(
            f"variable {path!r} differs between {first.path} and {other.path}: "
            f"dimensions {a.dimensions} vs {b.dimensions}, shape {a.shape} vs {b.shape}"
        )


def _check_values(path: str, first: ScannedFile, other: ScannedFile) -> None:
    """A coordinate or bounds variable served from one file only must hold the same
    values in the other (xarray would refuse the conflict, or give it a new dimension)."""
    a, b = first.manifest.arrays[path].meta, other.manifest.arrays[path].meta
    mine, theirs = np.asarray(first.coords[path]), np.asarray(other.coords[path])
    attrs_a, attrs_b = a.attrs, b.attrs
    if is_packed(a) or is_packed(b):  # compared as xarray decodes them
        mine, theirs = np.asarray(unpack(mine, a)), np.asarray(unpack(theirs, b))
        attrs_a = {k: v for k, v in a.attrs.items() if k not in PACKING_ATTRS}
        attrs_b = {k: v for k, v in b.attrs.items() if k not in PACKING_ATTRS}
    difference = labels_difference(
        path, Labels(first.path, mine, attrs_a), Labels(other.path, theirs, attrs_b)
    )
    if difference is not None:
        raise IncompatibleSourcesError(
            difference.replace("coordinate", "variable", 1)
            + " (a coordinate or bounds variable served from one file only)"
        )


def _check_labels(path: str, first: ScannedFile, other: ScannedFile) -> None:
    """A dimension coordinate other than the concat one must be the same in every file:
    it is served from the first file only, and labels every file's data."""
    for f in (first, other):
        if path not in f.coords:  # never assume agreement: refuse what cannot be checked
            raise IncompatibleSourcesError(
                f"the values of coordinate {path!r} of {f.path} were not read: cannot "
                f"check that {first.path} and {other.path} agree on it"
            )
    a, b = first.manifest.arrays[path].meta, other.manifest.arrays[path].meta
    mine, theirs = first.coords[path], other.coords[path]
    if (
        mine.dtype == theirs.dtype
        and mine.dtype.kind in "iu"
        and a.attrs == b.attrs
        and np.array_equal(mine, theirs)
    ) or (mine is theirs and a.attrs == b.attrs):
        return  # the same encoding and the same integers: the same labels
    if mine.dtype == theirs.dtype and mine.dtype.kind == "f" and a.attrs == b.attrs:
        if np.array_equal(mine, theirs, equal_nan=True):
            return
    difference = labels_difference(
        path,
        Labels(first.path, first.coords[path], a.attrs),
        Labels(other.path, other.coords[path], b.attrs),
    )
    if difference is not None:
        raise IncompatibleSourcesError(difference)


def _combined_coordinate(
    path: str, files: list[ScannedFile], concat_dim: str
) -> tuple[VirtualArray, np.ndarray]:
    """The concat coordinate of every file, decoded per file and re-encoded as one; and
    its raw values."""
    first = files[0].manifest.arrays[path].meta
    for other in files[1:]:
        meta = other.manifest.arrays[path].meta
        if not is_cf_time(first.attrs) and (meta.numpy_dtype.kind, meta.attrs.get("units")) != (
            first.numpy_dtype.kind,
            first.attrs.get("units"),
        ):
            raise IncompatibleSourcesError(
                f"coordinate {path!r} differs between {files[0].path} and {other.path}: "
                f"dtype/units {first.dtype}/{first.attrs.get('units')!r} vs "
                f"{meta.dtype}/{meta.attrs.get('units')!r}"
            )
    attrs = dict(first.attrs)
    dtype = first.numpy_dtype
    parts = _check_monotonic(path, files)
    if is_cf_time(first.attrs):
        values, attrs["units"] = encode_times(
            np.concatenate(parts), first.attrs["units"], first.attrs.get("calendar"), dtype
        )
    else:
        raw = [f.coords[path] for f in files]
        if dtype.kind == "O":  # text read as objects: served as fixed-width text
            dtype = np.result_type(*(r.dtype for r in raw))
            if dtype.kind not in "US":
                raise NotImplementedError(
                    f"coordinate {path!r} of {files[0].path} holds objects ({dtype}): "
                    "joining it is not served"
                )
        elif dtype.kind in "US" or any(r.dtype != dtype for r in raw):
            dtype = np.result_type(dtype, *(r.dtype for r in raw))
        values = np.concatenate(raw).astype(dtype)
    values = _little_endian(values)
    meta = replace(
        first,
        shape=values.shape,
        chunks=values.shape if values.size else (1,),
        dtype=dtype_spelling(values.dtype),
        compressor=None,
        filters=None,
        attrs=attrs,
    )
    if not values.size:
        return VirtualArray(meta, ChunkGrid.empty(meta.grid_shape)), values
    return VirtualArray(meta, ChunkGrid.single_inline(values.tobytes(), 1)), values


def _little_endian(values: np.ndarray) -> np.ndarray:
    """Numbers held in memory as Zarr's ``<`` dtypes spell them (NetCDF3 is big-endian)."""
    if values.dtype.kind in "iuf":
        return values.astype(values.dtype.newbyteorder("<"))
    return values


def _check_monotonic(path: str, files: list[ScannedFile]) -> list[np.ndarray]:
    """A concat coordinate joined in the files' order must be strictly monotonic: the
    files are ordered by the root group's coordinate, and a group's own one (``g/time``)
    must agree with that order (never unsorted or duplicate labels). Returns each file's
    decoded values (the joined coordinate is built from them)."""
    check_calendars(
        path, [f.path for f in files], [f.manifest.arrays[path].meta.attrs for f in files]
    )
    parts = decode_many(
        [f.coords[path] for f in files], [f.manifest.arrays[path].meta.attrs for f in files]
    )
    values = np.concatenate([np.asarray(p).reshape(-1) for p in parts])
    if values.size < 2:
        return parts
    keys = [sortable(v) for v in values] if values.dtype.kind in "USO" else None
    try:
        if keys is not None:  # text in natural order, as files are placed
            up = all(a < b for a, b in itertools.pairwise(keys))
            down = all(a > b for a, b in itertools.pairwise(keys))
        else:
            up = bool(np.all(values[1:] > values[:-1]))
            down = bool(np.all(values[1:] < values[:-1]))
    except TypeError:
        up = down = False
    if not (up or down):
        raise IncompatibleSourcesError(
            f"coordinate {path!r} is not monotonic once its files ({files[0].path}, "
            f"{files[1].path}, ...) are joined in the order of their concat coordinate: "
            "its values overlap, repeat or run in another order than the files'"
        )
    return parts


def _as_options(options: CombineOptions | str | None) -> CombineOptions:
    if isinstance(options, CombineOptions):
        return options
    return CombineOptions.from_arguments(options)


def _length(block: ScannedFile, dim: str) -> int | None:
    """A block's length along ``dim``: its coordinate's, else any variable's."""
    if dim in block.coords:
        return len(block.coords[dim])
    for array in block.manifest.arrays.values():
        if dim in array.meta.dimensions:
            return array.meta.shape[array.meta.dimensions.index(dim)]
    return None


def _placeholder(path: str, template: VirtualArray, block: ScannedFile, dim: str) -> VirtualArray:
    """A variable ``block`` lacks, along ``dim``: every chunk missing (read as its fill)."""
    meta = template.meta
    length = _length(block, dim)
    if length is None:
        raise IncompatibleSourcesError(
            f"variable {path!r} is not in {block.path}, whose length along {dim!r} is unknown"
        )
    axis = meta.dimensions.index(dim)
    shape = tuple(length if i == axis else n for i, n in enumerate(meta.shape))
    placed = replace(meta, shape=shape)
    return VirtualArray(placed, ChunkGrid.empty(placed.grid_shape))


def _fillable(path: str, arrays: list[VirtualArray], placed: list[bool]) -> list[VirtualArray]:
    """The arrays of a variable missing from some files (``placed``: a placeholder), so
    that the gaps read as xarray's outer join gives them: the fill value where there is
    one (xarray masks it; not for booleans, which it never masks); else NaN, a float
    without one declaring it, an integer or boolean one promoted to float64 (its real
    parts converted: computed chunks), as xarray promotes it."""
    meta = arrays[0].meta
    kind = meta.numpy_dtype.kind
    if meta.fill_value is not None and kind in "iuf":  # xarray masks it: NaN
        return arrays
    if kind == "f":
        return [replace(a, meta=replace(a.meta, fill_value="NaN")) for a in arrays]
    if kind not in "iub":
        raise NotImplementedError(
            f"variable {path!r} ({meta.dtype}, no fill value) is missing from some files: "
            "its gaps cannot be served as xarray fills them; pass join='exact' to refuse "
            "such collections"
        )
    return [
        replace(a, meta=replace(a.meta, dtype="<f8", fill_value="NaN")) if hole else a
        for a, hole in zip(arrays, placed)
    ]


def _concat(blocks: list[ScannedFile], dim: str, join: str) -> ScannedFile:
    """Blocks (files, or files joined before) joined along one dimension."""
    blocks = _order(blocks, dim)
    first = blocks[0]
    skipped = {p: r for b in blocks for p, r in b.manifest.skipped.items()}
    coord_paths = set(concat_coordinate_paths(first.manifest, dim))
    label_paths = set(dimension_coordinate_paths(first.manifest)) - coord_paths
    kept = (a for b in blocks for p, a in b.manifest.arrays.items() if p not in skipped)
    if not any(dim in a.meta.dimensions for a in kept):
        raise IncompatibleSourcesError(
            f"no variable of {first.path} has the concat dimension {dim!r}"
        )
    arrays: dict[str, VirtualArray] = {}
    coords = dict(first.coords)
    for path in dict.fromkeys(p for b in blocks for p in b.manifest.arrays):
        if path in skipped:
            continue
        having = [b for b in blocks if path in b.manifest.arrays]
        template = having[0].manifest.arrays[path]
        dims = template.meta.dimensions
        lacking = [b for b in blocks if path not in b.manifest.arrays]
        if lacking and (dim not in dims or join == "exact"):
            raise IncompatibleSourcesError(
                f"variable {path!r} is in {having[0].path} but not in {lacking[0].path}"
                + (" (join='exact')" if dim in dims else "")
            )
        if path in coord_paths:
            arrays[path], coords[path] = _combined_coordinate(path, blocks, dim)
            continue
        if dim not in dims:
            for other in blocks[1:]:
                _check_same(path, first, other)
                if path in label_paths:
                    _check_labels(path, first, other)
                elif path in first.coords and path in other.coords:
                    _check_values(path, first, other)
                elif (path in first.coords) != (path in other.coords):
                    raise IncompatibleSourcesError(
                        f"variable {path!r} is a coordinate or bounds variable in "
                        f"{(first if path in first.coords else other).path} but not in "
                        f"{(other if path in first.coords else first).path}: its values "
                        "cannot be checked to agree (xarray would refuse to merge it)"
                    )
            arrays[path] = template
            continue
        members = blocks
        if lacking:
            filled = _fillable(
                path,
                [
                    b.manifest.arrays[path]
                    if path in b.manifest.arrays
                    else _placeholder(path, template, b, dim)
                    for b in blocks
                ],
                [path not in b.manifest.arrays for b in blocks],
            )
            members = [
                replace(b, manifest=replace(b.manifest, arrays={**b.manifest.arrays, path: a}))
                for b, a in zip(blocks, filled)
            ]
        joined = concatenate_variable(path, members, dims.index(dim))
        if all(path in b.coords for b in blocks):  # its values, joined too (time_bnds)
            axis = dims.index(dim)
            coords[path] = np.concatenate([b.coords[path] for b in blocks], axis=axis)
        else:
            coords.pop(path, None)
        if lacking and joined.meta.numpy_dtype != template.meta.numpy_dtype:
            # promoted for the gaps: NaN is what they read as (and all xarray masks)
            attrs = dict(joined.meta.attrs)
            if attrs.get("dtype") == "bool":  # netCDF's boolean marker: xarray would cast NaN
                del attrs["dtype"]
            joined = replace(joined, meta=replace(joined.meta, fill_value="NaN", attrs=attrs))
        arrays[path] = joined
    for path in coord_paths & set(arrays):
        _rebased_bounds(path, blocks, arrays, coords)
    groups = {p: g for b in reversed(blocks) for p, g in b.manifest.groups.items()}
    groups.update(first.manifest.groups)
    urls = tuple(u for b in blocks for u in b.manifest.urls)
    return ScannedFile(first.path, Manifest(urls, groups, arrays, skipped), coords)


def _rebased_bounds(
    path: str,
    blocks: list[ScannedFile],
    arrays: dict[str, VirtualArray],
    coords: dict[str, np.ndarray],
) -> None:
    """A CF time coordinate's bounds variable (``time_bnds``, which has no units of its
    own: xarray decodes it with the coordinate's) re-encoded in the joined coordinate's
    units, where a file's units were others: its raw values would mean other dates."""
    joined = arrays[path].meta.attrs
    if not is_cf_time(joined):
        return
    named = blocks[0].manifest.arrays[path].meta.attrs.get("bounds")
    group = path.rpartition("/")[0]
    bounds = f"{group}/{named}" if group and named else named
    if not isinstance(bounds, str) or bounds not in arrays:
        return
    encoding = (joined.get("units"), joined.get("calendar"))
    own = [b.manifest.arrays[path].meta.attrs for b in blocks]
    if all((a.get("units"), a.get("calendar")) == encoding for a in own):
        return
    meta = arrays[bounds].meta
    if "units" in meta.attrs:
        return  # bounds with units of their own: their files' units must agree (checked)
    if not all(bounds in b.coords for b in blocks):
        raise IncompatibleSourcesError(
            f"{bounds!r} (the bounds of {path!r}) must be re-encoded in the joined units "
            f"{encoding[0]!r}, but its values were not read at scan (too large)"
        )
    dates = np.concatenate(
        [np.asarray(decode_values(b.coords[bounds], a)) for b, a in zip(blocks, own)], axis=0
    )
    flat, units = encode_times(dates.reshape(-1), str(encoding[0]), encoding[1], meta.numpy_dtype)
    if units != encoding[0]:
        raise NotImplementedError(
            f"{bounds!r} cannot be encoded exactly in {path!r}'s joined units {encoding[0]!r}"
        )
    values = flat.reshape(dates.shape)
    values = _little_endian(values)
    rebased = replace(
        meta, dtype=dtype_spelling(values.dtype), chunks=values.shape, compressor=None, filters=None
    )
    arrays[bounds] = VirtualArray(rebased, ChunkGrid.single_inline(values.tobytes(), values.ndim))
    coords[bounds] = values


def _fold(
    files: list[ScannedFile],
    positions: list[tuple[int, ...]],
    dims: list[str],
    order: tuple[str, ...],
    join: str,
    last_may_compute: bool,
) -> ScannedFile:
    """The files joined one dimension at a time, in ``order``; every join but the last
    must pass through (a computed chunk's parts are placed along one axis only)."""
    live = list(dims)
    blocks = dict(zip(positions, files))
    for step, dim in enumerate(order):
        i = live.index(dim)
        rows: dict[tuple[int, ...], list[tuple[int, ScannedFile]]] = {}
        for position, block in blocks.items():
            rows.setdefault(position[:i] + position[i + 1 :], []).append((position[i], block))
        blocks = {}
        for rest, members in rows.items():
            row = [b for _, b in sorted(members, key=lambda m: m[0])]
            joined = _concat(row, dim, join) if len(row) > 1 else row[0]
            if step < len(order) - 1 or not last_may_compute:
                planned = [p for p, a in joined.manifest.arrays.items() if a.plan is not None]
                if len(row) > 1 and planned:
                    raise CrossAxisPlanError(f"{planned[0]!r} computed along {dim!r}")
            blocks[rest] = joined
        live.pop(i)
    (only,) = blocks.values()
    return only


def _join_group(files: list[ScannedFile], options: CombineOptions) -> ScannedFile:
    """One group's files (one variable set) joined on their hypercube."""
    from_path = {d: [f.coords[d][0] for f in files] for d, _ in options.coords_from_path}
    if options.concat_dims is not None:
        dims = list(options.concat_dims)
    else:
        dims = infer_concat_dims(files)
        dims += [d for d in from_path if d not in dims]
    if len(files) == 1:
        return files[0]
    if not dims:
        raise IncompatibleSourcesError(
            f"{len(files)} files with the same variables ({files[0].path}, {files[1].path}, "
            "...) and the same coordinate values: nothing tells how to combine them; pass "
            "concat_dim= (and combine='nested' to order them by file name)"
        )
    positions = place(files, dims, options.combine == "nested", from_path)
    errors = []
    for order in dict.fromkeys([tuple(reversed(dims)), *itertools.permutations(dims)]):
        try:
            return _fold(files, positions, dims, order, options.join, True)
        except CrossAxisPlanError as e:
            errors.append(str(e))
    raise NotImplementedError(
        f"files of {files[0].path}, ... need computed chunks along more than one of "
        f"{dims} ({errors[0]}): chunks straddle files along two dimensions, which is not "
        "served yet"
    )


def _join_all(files: list[ScannedFile], options: CombineOptions) -> ScannedFile:
    """All files joined: as one hypercube where each file has a place of its own (variables
    a file lacks served missing there: nested collections, variables that appear or vanish
    along the way); else grouped by variable set (CMIP-style series, several files at
    each place), each group joined, and the groups merged."""
    groups = group_by_variables(files)
    if len(groups) == 1 or options.combine == "nested":
        return _join_group(files, options)
    try:
        return _join_group(files, options)
    except IncompatibleSourcesError as e:  # files of several variable sets at one place?
        as_one = e
    try:
        joined = [_join_group(cast(list[ScannedFile], group), options) for group in groups]
        return _merge(joined, options)
    except IncompatibleSourcesError as e:
        raise e from as_one  # both ways refused: the first reason travels with the last


def _shifted(array: VirtualArray, shift: int) -> VirtualArray:
    grid = array.grid.with_file_ids_shifted(shift)
    if array.plan is None:
        return VirtualArray(array.meta, grid)
    parts = tuple(part.shifted(shift, 0) for part in array.plan.parts)
    return VirtualArray(array.meta, grid, ComputePlan(parts, array.plan.axis, array.plan.reason))


def _differing_dims(blocks: list[ScannedFile]) -> list[str]:
    first = blocks[0]
    out = []
    for path in dimension_coordinate_paths(first.manifest):
        for other in blocks[1:]:
            if path not in other.coords or path not in first.coords:
                continue
            a, b = first.manifest.arrays[path].meta, other.manifest.arrays[path].meta
            labels = Labels(first.path, first.coords[path], a.attrs)
            if labels_difference(path, labels, Labels(other.path, other.coords[path], b.attrs)):
                out.append(path)
                break
    return out


def _check_lengths(blocks: list[ScannedFile]) -> None:
    """Merged groups must agree on every dimension's length (a group without a coordinate
    for a dimension is not compared by value: its length at least must be the same)."""
    seen: dict[str, tuple[int, str]] = {}
    for block in blocks:
        for array in block.manifest.arrays.values():
            for dim, n in zip(array.meta.dimensions, array.meta.shape):
                known = seen.setdefault(dim, (n, block.path))
                if known[0] != n:
                    raise IncompatibleSourcesError(
                        f"dimension {dim!r} has length {known[0]} in {known[1]} and {n} in "
                        f"{block.path}, whose variables are merged"
                    )


def _merge(blocks: list[ScannedFile], options: CombineOptions) -> ScannedFile:
    """Groups of files (different variable sets) merged: their shared coordinates equal,
    or they cover different stretches of one dimension (an outer join along it)."""
    if len(blocks) == 1:
        return blocks[0]
    differ = _differing_dims(blocks)
    if differ:
        if options.join == "exact":
            raise IncompatibleSourcesError(
                f"variables of {blocks[0].path} and {blocks[1].path} have different "
                f"coordinates {differ} (join='exact')"
            )
        if len(differ) > 1 or "/" in differ[0]:
            raise NotImplementedError(
                f"variable groups that differ along {differ} are not merged yet "
                f"({blocks[0].path}, {blocks[1].path})"
            )
        return _concat(blocks, differ[0], options.join)
    first = blocks[0]
    arrays: dict[str, VirtualArray] = {}
    owner: dict[str, ScannedFile] = {}
    _check_lengths(blocks)
    labels = {p for b in blocks for p in dimension_coordinate_paths(b.manifest)}
    for block, shift in zip(blocks, url_shifts(blocks)):
        for path, array in block.manifest.arrays.items():
            if path in arrays:
                _check_same(path, owner[path], block)
                if path in labels:
                    _check_labels(path, owner[path], block)  # refuses unread values too
                elif path in owner[path].coords and path in block.coords:
                    _check_values(path, owner[path], block)
                else:
                    raise IncompatibleSourcesError(
                        f"variable {path!r} is in both {owner[path].path} and {block.path}, "
                        "whose variables are merged: its values were not read at scan (not "
                        "a small coordinate or bounds variable), so they cannot be checked "
                        "to agree, and xarray would refuse them where they differ"
                    )
                continue
            arrays[path], owner[path] = _shifted(array, shift), block
    coords = {k: v for b in reversed(blocks) for k, v in b.coords.items()}
    groups = {p: g for b in reversed(blocks) for p, g in b.manifest.groups.items()}
    urls = tuple(u for b in blocks for u in b.manifest.urls)
    skipped = {p: r for b in blocks for p, r in b.manifest.skipped.items()}
    return ScannedFile(first.path, Manifest(urls, groups, arrays, skipped), coords)


def _with_new_dimension(f: ScannedFile, dim: str, value: np.ndarray | None) -> ScannedFile:
    """A file whose data variables gain a leading dimension ``dim`` of length 1, with
    ``value`` as its coordinate (none if None)."""
    manifest, coords = f.manifest, dict(f.coords)
    arrays = dict(manifest.arrays)
    for path in data_variables(manifest):
        array = arrays[path]
        if array.plan is not None:
            raise NotImplementedError(
                f"variable {path!r} of {f.path} is computed (read through h5py or "
                f"converted): adding the dimension {dim!r} to it is not served yet"
            )
        grid = array.grid
        arrays[path] = VirtualArray(
            replace(
                array.meta,
                shape=(1, *array.meta.shape),
                chunks=(1, *array.meta.chunks),
                dimensions=(dim, *array.meta.dimensions),
            ),
            ChunkGrid(grid.file_id[None], grid.offset[None], grid.length[None], grid.inline),
        )
    if value is not None:
        values = _little_endian(value)
        meta = ArrayMeta(
            (1,), (1,), dtype_spelling(values.dtype), None, None, None, (dim,), {}, "C", {}
        )
        arrays[dim] = VirtualArray(meta, ChunkGrid.single_inline(values.tobytes(), 1))
        coords[dim] = values
    return ScannedFile(f.path, replace(manifest, arrays=arrays), coords)


def _with_coordinate(f: ScannedFile, dim: str, value: np.ndarray) -> ScannedFile:
    """A file with a coordinate for its length-1 dimension ``dim``, held in memory."""
    values = _little_endian(value)
    meta = ArrayMeta(
        (1,), (1,), dtype_spelling(values.dtype), None, None, None, (dim,), {}, "C", {}
    )
    arrays = {
        **f.manifest.arrays,
        dim: VirtualArray(meta, ChunkGrid.single_inline(values.tobytes(), 1)),
    }
    return ScannedFile(f.path, replace(f.manifest, arrays=arrays), {**f.coords, dim: values})


def _with_path_coordinates(f: ScannedFile, options: CombineOptions) -> ScannedFile:
    """A file with its coordinates from its path: a new dimension (length 1) before its
    data variables' own where the file lacks it."""
    for dim, where in options.coords_from_path:
        value = np.asarray([value_from_path(f.path, dim, where)])
        if dim in f.manifest.arrays:
            if dim not in f.coords:
                f = replace(f, coords={**f.coords, dim: value})
            continue
        length = _length(f, dim)
        if length is None:
            f = _with_new_dimension(f, dim, value)
        elif length == 1:  # the file has the dimension, without a coordinate: label it
            f = _with_coordinate(f, dim, value)
        else:
            raise IncompatibleSourcesError(
                f"dimension {dim!r} has length {length} in {f.path}: one value from its "
                f"path (coords_from_path) cannot label it"
            )
    return f


def _with_named_dimensions(files: list[ScannedFile], options: CombineOptions) -> list[ScannedFile]:
    """Concat dimensions no file has: new ones for ``combine="nested"`` (files stacked in
    file-name order, no coordinate, as xarray does); an error otherwise."""
    given = [d for d in options.concat_dims or () if d not in dict(options.coords_from_path)]
    for dim in given:
        if any(dim in a.meta.dimensions for f in files for a in f.manifest.arrays.values()):
            continue
        if options.combine != "nested":
            raise IncompatibleSourcesError(
                f"no file has a dimension {dim!r} (nor a coordinate for it): give each "
                f"file's value with coords_from_path={{{dim!r}: r'...'}} (a regex on the "
                "file name), or pass combine='nested' to stack the files along a new "
                f"{dim!r} in file-name order"
            )
        files = [_with_new_dimension(f, dim, None) for f in files]
    return files


def _with_decoded_labels(f: ScannedFile) -> ScannedFile:
    """A file whose packed dimension coordinates (``scale_factor``, ``add_offset``, a fill
    or missing value) are served decoded, as xarray decodes them, from memory: files may
    pack their labels differently, and labels are compared, ordered and joined by value."""
    arrays, coords = dict(f.manifest.arrays), dict(f.coords)
    for path in dimension_coordinate_paths(f.manifest):
        meta = arrays[path].meta
        if is_cf_time(meta.attrs) and any(k in meta.attrs for k in ("scale_factor", "add_offset")):
            raise NotImplementedError(
                f"coordinate {path!r} of {f.path} holds CF times packed with scale_factor/"
                "add_offset: combining such files is not served yet"
            )
        if not is_packed(meta) or path not in coords or is_cf_time(meta.attrs):
            continue
        values = np.asarray(unpack(np.asarray(coords[path]), meta))
        values = _little_endian(values)
        attrs = {k: v for k, v in meta.attrs.items() if k not in PACKING_ATTRS}
        types = {k: v for k, v in meta.attr_dtypes.items() if k not in PACKING_ATTRS}
        decoded = replace(
            meta,
            dtype=dtype_spelling(values.dtype),
            chunks=values.shape or (1,),
            compressor=None,
            filters=None,
            fill_value=None,
            attrs=attrs,
            attr_dtypes=types,
        )
        grid = ChunkGrid.single_inline(values.tobytes(), 1)
        arrays[path] = VirtualArray(decoded, grid if values.size else ChunkGrid.empty((0,)))
        coords[path] = values
    if arrays == f.manifest.arrays:
        return f
    return ScannedFile(f.path, replace(f.manifest, arrays=arrays), coords)


def _finished(manifest: Manifest, concat_dims: list[str]) -> Manifest:
    """Every array as it is served: lossy packing unpacked, tiny chunks merged."""
    arrays = {}
    for path, array in manifest.arrays.items():
        dims = array.meta.dimensions
        keep = next((dims.index(d) for d in concat_dims if d in dims), None)
        arrays[path] = coarsened(serve_alone(array), keep)
    return replace(manifest, arrays=arrays)


def combine(files: list[ScannedFile], options: CombineOptions | str | None = None) -> Manifest:
    """Combine the scanned files of a collection into one manifest.

    Parameters
    ----------
    files
        The scanned files, in listing order.
    options
        How to combine them (:class:`CombineOptions`); a dimension name is short for
        ``CombineOptions(concat_dims=(name,))``; None: by coordinates, dimensions inferred.

    Raises
    ------
    IncompatibleSourcesError
        If the files cannot be combined without serving wrong data.
    NotImplementedError
        For layouts open_mfdataset combines that are not served yet (said which).
    """
    if not files:
        raise ValueError("no files to combine")
    options = _as_options(options)
    if len(files) > 1:
        files = [_with_decoded_labels(f) for f in files]
    if options.coords_from_path:
        files = [_with_path_coordinates(f, options) for f in files]
    files = _with_named_dimensions(files, options)
    if len(files) == 1:
        return _finished(files[0].manifest, [])
    merged = _join_all(files, options)
    dims = list(options.concat_dims or infer_concat_dims(files) or [])
    return _finished(merged.manifest, dims)
