"""Combine per-file manifests into one, along one concat dimension.

The rules follow ``xr.open_mfdataset(..., data_vars="minimal", coords="minimal",
compat="override")``: files are ordered by their concat coordinate; variables with the
concat dimension are concatenated; the others, and all attributes, come from the first
file. A dimension coordinate other than the concat one (``lat``, ``lon``) labels every
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
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .concat import coarsened, concatenate_variable, serve_alone
from .coords import Labels, decode_many, encode_times, is_cf_time, labels_difference
from .errors import IncompatibleSourcesError
from .manifest import ChunkGrid, Manifest, VirtualArray

__all__ = ["ScannedFile", "combine", "concat_coordinate_paths", "dimension_coordinate_paths"]


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


def dimension_coordinate_paths(manifest: Manifest) -> list[str]:
    """Paths of the dimension coordinates: 1-D variables named like their only dimension,
    in any group (the concat dimension's among them)."""
    return [
        path
        for path, array in manifest.arrays.items()
        if array.meta.dimensions == (path.rpartition("/")[2],)
    ]


def _natural_key(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def _order(files: list[ScannedFile], concat_dim: str) -> list[ScannedFile]:
    """Files in concat-coordinate order, refusing overlaps and duplicates."""
    key_path = concat_dim if concat_dim in files[0].manifest.arrays else None
    has_coord = [key_path is not None and key_path in f.coords for f in files]
    if not any(has_coord):
        return sorted(files, key=lambda f: _natural_key(f.path))
    if not all(has_coord):
        with_c = files[has_coord.index(True)]
        without = files[has_coord.index(False)]
        raise IncompatibleSourcesError(
            f"coordinate {concat_dim!r} is in {with_c.path} but not in {without.path}"
        )
    assert key_path is not None
    decoded = {}
    all_values = decode_many(
        [f.coords[key_path] for f in files], [f.manifest.arrays[key_path].meta.attrs for f in files]
    )
    for f, values in zip(files, all_values):
        if values.size and not bool(np.all(values[1:] > values[:-1])):
            raise IncompatibleSourcesError(
                f"coordinate {concat_dim!r} of {f.path} is not strictly increasing"
            )
        decoded[f.path] = values
    nonempty = [f for f in files if decoded[f.path].size]
    empty = [f for f in files if not decoded[f.path].size]
    ordered = sorted(nonempty, key=lambda f: decoded[f.path][0])
    for before, after in itertools.pairwise(ordered):
        if not decoded[before.path][-1] < decoded[after.path][0]:
            raise IncompatibleSourcesError(
                f"coordinate {concat_dim!r}: values of {before.path} (up to "
                f"{decoded[before.path][-1]}) overlap or duplicate those of {after.path} "
                f"(from {decoded[after.path][0]})"
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
    difference = labels_difference(
        path,
        Labels(first.path, first.coords[path], a.attrs),
        Labels(other.path, other.coords[path], b.attrs),
    )
    if difference is not None:
        raise IncompatibleSourcesError(difference)


def _combined_coordinate(path: str, files: list[ScannedFile], concat_dim: str) -> VirtualArray:
    """The concat coordinate of every file, decoded per file and re-encoded as one."""
    first = files[0].manifest.arrays[path].meta
    for other in files[1:]:
        meta = other.manifest.arrays[path].meta
        if not is_cf_time(first.attrs) and (meta.dtype, meta.attrs.get("units")) != (
            first.dtype,
            first.attrs.get("units"),
        ):
            raise IncompatibleSourcesError(
                f"coordinate {path!r} differs between {files[0].path} and {other.path}: "
                f"dtype/units {first.dtype}/{first.attrs.get('units')!r} vs "
                f"{meta.dtype}/{meta.attrs.get('units')!r}"
            )
    attrs = dict(first.attrs)
    dtype = first.numpy_dtype
    if is_cf_time(first.attrs):
        parts = decode_many(
            [f.coords[path] for f in files], [f.manifest.arrays[path].meta.attrs for f in files]
        )
        values, attrs["units"] = encode_times(
            np.concatenate(parts), first.attrs["units"], first.attrs.get("calendar"), dtype
        )
    else:
        values = np.concatenate([f.coords[path] for f in files]).astype(dtype)
    values = values.astype(values.dtype.newbyteorder("<")) if values.dtype.kind in "iuf" else values
    meta = replace(
        first,
        shape=values.shape,
        chunks=values.shape if values.size else (1,),
        dtype=values.dtype.str,
        compressor=None,
        filters=None,
        attrs=attrs,
    )
    if not values.size:
        return VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))
    return VirtualArray(meta, ChunkGrid.single_inline(values.tobytes(), 1))


def combine(files: list[ScannedFile], concat_dim: str | None) -> Manifest:
    """Combine the scanned files of a collection into one manifest.

    Parameters
    ----------
    files
        The scanned files, in listing order.
    concat_dim
        The dimension to concatenate along; ``None`` only for a single file.

    Raises
    ------
    IncompatibleSourcesError
        If the files cannot be combined without serving wrong data.
    """
    if not files:
        raise ValueError("no files to combine")
    if len(files) == 1:
        only = files[0].manifest
        return replace(
            only, arrays={p: coarsened(serve_alone(a), None) for p, a in only.arrays.items()}
        )
    if concat_dim is None:
        raise IncompatibleSourcesError(
            f"{len(files)} files found ({files[0].path}, {files[1].path}, ...): "
            "pass concat_dim= to combine them along a dimension"
        )
    files = _order(files, concat_dim)
    first = files[0]
    skipped = {p: r for f in files for p, r in f.manifest.skipped.items()}
    coord_paths = set(concat_coordinate_paths(first.manifest, concat_dim))
    label_paths = set(dimension_coordinate_paths(first.manifest)) - coord_paths
    # before any other check: a wrong concat_dim makes every other coordinate "differ"
    kept = [a for p, a in first.manifest.arrays.items() if p not in skipped]
    if not any(concat_dim in a.meta.dimensions for a in kept):
        raise IncompatibleSourcesError(
            f"no variable of {first.path} has the concat dimension {concat_dim!r}"
        )
    arrays: dict[str, VirtualArray] = {}
    all_paths = dict.fromkeys(p for f in files for p in f.manifest.arrays)
    for path in all_paths:
        if path in skipped:
            continue
        lacking = [f for f in files if path not in f.manifest.arrays]
        if lacking:
            having = next(f for f in files if path in f.manifest.arrays)
            raise IncompatibleSourcesError(
                f"variable {path!r} is in {having.path} but not in {lacking[0].path}"
            )
        dims = first.manifest.arrays[path].meta.dimensions
        axis = dims.index(concat_dim) if concat_dim in dims else None
        if path in coord_paths:
            arrays[path] = _combined_coordinate(path, files, concat_dim)
            continue
        if axis is None:
            for other in files[1:]:
                _check_same(path, first, other)
                if path in label_paths:
                    _check_labels(path, first, other)
            arrays[path] = coarsened(serve_alone(first.manifest.arrays[path]), None)
        else:
            arrays[path] = coarsened(concatenate_variable(path, files, axis), axis)
    groups = {p: a for f in reversed(files) for p, a in f.manifest.groups.items()}
    groups.update(first.manifest.groups)
    return Manifest(
        urls=tuple(f.path for f in files), groups=groups, arrays=arrays, skipped=skipped
    )
