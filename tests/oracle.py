"""The truth and the comparison: what the virtual store must equal, and a strict check of it.

The truth is always a direct read of the source files: ``xr.open_mfdataset`` (netCDF4 engine)
for a collection, ``xr.open_dataset`` for one file, ``h5py`` for plain HDF5. Every comparison
here is strict: the same variables, coordinates, dimensions, dtypes, values (NaN-aware) and
attributes, or an ``AssertionError`` that says where they differ.

A store is checked through both Zarr formats it serves: the store as given and its twin, the
same arguments with the other ``zarr_format``, pinned to the same snapshot (the scan is
shared, so the twin costs only its reads). :func:`faces` gives both, for tests that compare
through routes of their own. ``FSSPEC_VIRTUAL_TEST_ZARR_FORMATS=2`` (or ``3``) checks one
format only: for debugging, never set in CI.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import xarray as xr
import zarr
from numcodecs.compat import ensure_bytes
from xarray.backends.zarr import FillValueCoder
from zarr.core.dtype.common import UnstableSpecificationWarning
from zarr.errors import ZarrUserWarning
from zarr.storage import FsspecStore

from fsspec_virtual import ZarrFormatNotServedError

__all__ = [
    "MFDATASET_KWARGS",
    "ZARR_FORMATS",
    "Face",
    "array_dims",
    "assert_attrs_equal",
    "assert_formats_share_chunks",
    "assert_same_chunk_bytes",
    "assert_same_dataset",
    "assert_same_variable",
    "assert_store_matches",
    "assert_zarr_matches_raw",
    "declared_fill",
    "faces",
    "checked_group",
    "open_each_format",
    "read_each_format",
    "open_truth",
    "zarr_twin",
]


def _formats_checked() -> tuple[int, ...]:
    spelled = os.environ.get("FSSPEC_VIRTUAL_TEST_ZARR_FORMATS", "2,3")
    formats = tuple(sorted({int(f) for f in spelled.split(",") if f.strip()}))
    if not formats or not set(formats) <= {2, 3}:
        raise ValueError(f"FSSPEC_VIRTUAL_TEST_ZARR_FORMATS={spelled!r}: 2, 3 or 2,3")
    return formats


#: The Zarr formats every store-vs-truth check reads through (both, unless narrowed by
#: ``FSSPEC_VIRTUAL_TEST_ZARR_FORMATS`` for debugging)
ZARR_FORMATS: tuple[int, ...] = _formats_checked()

MFDATASET_KWARGS: dict[str, Any] = {
    "data_vars": "minimal",
    "coords": "minimal",
    "compat": "override",
    "engine": "netcdf4",
    "join": "exact",
}


def open_truth(
    files: Sequence[str | Path],
    concat_dim: str | None = "time",
    *,
    combine: str = "by_coords",
    decode_cf: bool = True,
    group: str | None = None,
) -> xr.Dataset:
    """Read ``files`` directly, loaded into memory (files in the order they should combine).

    Undecoded (``decode_cf=False``) collections are combined ``nested`` in the given order.
    """
    paths = [str(f) for f in files]
    if decode_cf is False and concat_dim is not None:
        # raw values cannot be ordered by coordinate (units may differ): the caller's order
        combine = "nested"
    if len(paths) == 1:
        with xr.open_dataset(paths[0], engine="netcdf4", decode_cf=decode_cf, group=group) as ds:
            return ds.load()
    kwargs: dict[str, Any] = dict(MFDATASET_KWARGS, combine=combine, decode_cf=decode_cf)
    if combine == "nested":
        kwargs["concat_dim"] = concat_dim
    with xr.open_mfdataset(paths, group=group, **kwargs) as ds:
        return ds.load()


# -- attributes -------------------------------------------------------------------------------


def _items(value: Any) -> tuple[tuple[int, ...], list[Any]]:
    """An attribute value as (shape, list of Python scalars), without lossy conversion."""
    if isinstance(value, np.ndarray):
        return value.shape, value.ravel().tolist()
    if isinstance(value, (list, tuple)):
        return (len(value),), [v.item() if isinstance(v, np.generic) else v for v in value]
    if isinstance(value, np.generic):
        return (), [value.item()]
    return (), [value]


def _kind(item: Any) -> str:
    if isinstance(item, bool):
        return "bool"
    if isinstance(item, int):
        return "integer"
    if isinstance(item, float):
        return "float"
    return type(item).__name__


def _attr_equal(actual: Any, expected: Any) -> bool:
    """Attribute values are equal: same kind (text / integer / float), same shape, same values.

    The integer width is not compared (attributes travel through JSON in Zarr v2), nor is the
    difference between a scalar and a one-element array (netCDF has no scalar attributes).
    """
    a_shape, a_items = _items(actual)
    e_shape, e_items = _items(expected)
    if len(a_items) != len(e_items):
        return False
    if not (len(a_items) == 1) and a_shape != e_shape:
        return False
    for a, e in zip(a_items, e_items):
        if _kind(a) != _kind(e):
            return False
        if isinstance(e, float) and math.isnan(e):
            if not math.isnan(a):
                return False
        elif a != e:
            return False
    return True


def assert_attrs_equal(
    actual: Mapping[str, Any],
    expected: Mapping[str, Any],
    where: str,
    *,
    ignore: Iterable[str] = (),
) -> None:
    """The two attribute mappings hold the same keys with equal values."""
    skip = set(ignore)
    a_keys = set(actual) - skip
    e_keys = set(expected) - skip
    assert a_keys == e_keys, (
        f"{where}: attribute names differ: missing {sorted(e_keys - a_keys)}, "
        f"unexpected {sorted(a_keys - e_keys)}"
    )
    for key in sorted(e_keys):
        assert _attr_equal(actual[key], expected[key]), (
            f"{where}: attribute {key!r} is {actual[key]!r}, expected {expected[key]!r}"
        )


# -- values -----------------------------------------------------------------------------------


def _is_text(dtype: np.dtype) -> bool:
    """Unicode text: ``<U``, numpy's StringDType (kind ``T``) or object."""
    return dtype.kind in "UTO"


def _assert_values_equal(actual: np.ndarray, expected: np.ndarray, where: str) -> None:
    assert actual.shape == expected.shape, (
        f"{where}: shape {actual.shape}, expected {expected.shape}"
    )
    if (
        _is_text(actual.dtype)
        and _is_text(expected.dtype)
        and "O" not in (actual.dtype.kind + expected.dtype.kind)
    ):
        # fixed-width vs variable-width unicode is a container choice (zarr 3 reads strings
        # as StringDType); the text itself must be equal
        assert actual.tolist() == expected.tolist(), f"{where}: text values differ"
        return
    if actual.dtype.kind == "O" and expected.dtype.kind in "UT":
        assert all(isinstance(v, str) for v in actual.ravel()), f"{where}: not text"
        assert actual.tolist() == expected.tolist(), f"{where}: text values differ"
        return
    if expected.dtype.kind == "O" and actual.dtype.kind in "UTO":
        assert actual.tolist() == expected.tolist(), f"{where}: object values differ"
        assert [type(v) for v in actual.ravel()] == [type(v) for v in expected.ravel()], (
            f"{where}: element types differ"
        )
        return
    assert actual.dtype == expected.dtype, (
        f"{where}: dtype {actual.dtype}, expected {expected.dtype}"
    )
    # assert_array_equal treats NaN == NaN and NaT == NaT, and compares datetimes exactly.
    np.testing.assert_array_equal(actual, expected, err_msg=f"{where}: values differ", strict=True)


def _native(values: np.ndarray) -> np.ndarray:
    """The same values in native byte order (NetCDF3 and some HDF5 data are big-endian)."""
    if values.dtype.byteorder in "=|":
        return values
    return values.astype(values.dtype.newbyteorder("="))


def assert_same_variable(actual: xr.Variable, expected: xr.Variable, where: str) -> None:
    """Same dimensions, shape, dtype, values and attributes."""
    assert actual.dims == expected.dims, f"{where}: dims {actual.dims}, expected {expected.dims}"
    _assert_values_equal(np.asarray(actual.values), np.asarray(expected.values), where)
    assert_attrs_equal(actual.attrs, expected.attrs, where)


def assert_same_dataset(actual: xr.Dataset, expected: xr.Dataset, where: str = "dataset") -> None:
    """Same variables, coordinates, dimension sizes, values, dtypes and attributes.

    Values are compared before attributes, so that a wrong array is reported first.
    """
    a_vars, e_vars = set(actual.variables), set(expected.variables)
    assert a_vars == e_vars, (
        f"{where}: variables differ: missing {sorted(map(str, e_vars - a_vars))}, "
        f"unexpected {sorted(map(str, a_vars - e_vars))}"
    )
    assert set(actual.coords) == set(expected.coords), (
        f"{where}: coordinates {sorted(map(str, actual.coords))}, "
        f"expected {sorted(map(str, expected.coords))}"
    )
    assert dict(actual.sizes) == dict(expected.sizes), (
        f"{where}: sizes {dict(actual.sizes)}, expected {dict(expected.sizes)}"
    )
    names = sorted(map(str, e_vars))
    for name in names:
        a, e = actual.variables[name], expected.variables[name]
        assert a.dims == e.dims, f"{where}:{name}: dims {a.dims}, expected {e.dims}"
        _assert_values_equal(np.asarray(a.values), np.asarray(e.values), f"{where}:{name}")
    assert_attrs_equal(actual.attrs, expected.attrs, f"{where} (global attributes)")
    for name in names:
        a, e = actual.variables[name], expected.variables[name]
        assert_attrs_equal(a.attrs, e.attrs, f"{where}:{name}")


# -- the two faces of a store --------------------------------------------------------------


def zarr_format_of(fs: Any) -> int:
    """The Zarr format a store serves (2 unless it was given ``zarr_format``)."""
    return int(fs.storage_options.get("zarr_format") or 2)


def zarr_twin(fs: Any, zarr_format: int) -> Any:
    """The same store serving ``zarr_format``: the same arguments, pinned to the snapshot
    ``fs`` serves (pinning it first if it was not yet), so both read the same files."""
    if zarr_format_of(fs) == zarr_format:
        return fs
    options = dict(fs.storage_options)
    options["snapshot"] = fs.collection().id
    options["zarr_format"] = zarr_format
    return type(fs)(*fs.storage_args, **options)


@contextmanager
def _quiet_v3() -> Iterator[None]:
    """Without zarr's warnings about what Zarr v3 serves: codecs outside the v3 core set
    (HDF5's zlib, shuffle) and data types without a v3 specification (fixed-width bytes)
    are warned about by zarr at every open, whoever serves them. Tests that fail on any
    warning are about other warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ZarrUserWarning, message="Numcodecs codecs")
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        yield


@dataclass(frozen=True)
class Face:
    """A store as one Zarr format: ``fs`` serves ``zarr_format``."""

    fs: Any
    zarr_format: int

    @property
    def label(self) -> str:
        return f"zarr_format={self.zarr_format}"

    def store(self, group: str | None = None) -> Any:
        """What zarr and xarray open: the mapper, or (zarr 3 refuses a group path with an
        FSMap) a read-only FsspecStore over it."""
        mapper = self.fs.get_mapper("")
        return mapper if group is None else FsspecStore.from_mapper(mapper, read_only=True)

    def open_dataset(
        self,
        *,
        group: str | None = None,
        consolidated: bool | None = True,
        detect_format: bool = False,
        **kwargs: Any,
    ) -> xr.Dataset:
        """``xr.open_zarr`` of this face (a context manager, as ``xr.open_zarr``'s is),
        asking for its format, or (``detect_format``) leaving zarr to find it, as most
        users do."""
        with _quiet_v3():
            return xr.open_zarr(
                self.store(group),
                group=group,
                consolidated=consolidated,
                zarr_format=None if detect_format else self.zarr_format,
                **kwargs,
            )

    def open_group(self, group: str | None = None) -> zarr.Group:
        """The raw zarr group (the root, or ``group`` below it)."""
        with _quiet_v3():
            root = zarr.open_group(self.fs.get_mapper(""), mode="r", zarr_format=self.zarr_format)
        node = root[group] if group else root
        assert isinstance(node, zarr.Group), f"{self.label}: {group!r} is not a group"
        return node


def faces(fs: Any) -> list[Face]:
    """``fs`` and its twin of the other Zarr format (those of :data:`ZARR_FORMATS`),
    ``fs``'s own format first; without a format 3 twin that refuses the collection as
    documented (:func:`refused_as_format_3`)."""
    own = zarr_format_of(fs)
    order = [own] + [f for f in (2, 3) if f != own]
    out = []
    for zarr_format in order:
        if zarr_format not in ZARR_FORMATS:
            continue
        twin = zarr_twin(fs, zarr_format)
        if zarr_format == 3 and zarr_format != own and refused_as_format_3(twin):
            continue
        out.append(Face(twin, zarr_format))
    return out


def refused_as_format_3(fs: Any) -> bool:
    """Whether the format 3 store ``fs`` refuses its collection, as it must exactly when a
    text variable has a fill value (xarray's v3 reader cannot mask text: it decodes
    numeric ``_FillValue`` attributes only), naming such a variable. Any other refusal
    fails the test."""
    texts = [
        path
        for path, array in fs.collection().manifest.arrays.items()
        if array.meta.numpy_dtype.kind in "OSU" and array.meta.fill_value is not None
    ]
    try:
        fs.cat_file("zarr.json")
    except ZarrFormatNotServedError as e:
        named = [path for path in texts if repr(path) in str(e)]
        assert named and "_FillValue" in str(e), f"format 3 refused this collection: {e}"
        return True
    return False


def open_each_format(
    fs: Any, *, group: str | None = None, consolidated: bool | None = None, **kwargs: Any
) -> xr.Dataset:
    """``xr.open_zarr`` of the store, loaded, through each face (see :func:`faces`): the
    formats must give the same dataset (values, dtypes, attributes). Returns the store's
    own format's; for tests that compare only some of it with the truth."""
    loaded = []
    for face in faces(fs):
        with face.open_dataset(group=group, consolidated=consolidated, **kwargs) as ds:
            loaded.append((face.label, ds.load()))
    (label, first), *others = loaded
    for other_label, other in others:
        assert_same_dataset(other, first, f"{other_label} against {label}")
    return first


def read_each_format(fs: Any, name: str, selection: Any = Ellipsis) -> np.ndarray:
    """``name[selection]`` read through raw zarr from each face (see :func:`faces`): the
    formats must give the same values (in native byte order: v3 declares the byte order
    in its ``bytes`` codec, and zarr reads it natively). Returns the store's own format's."""
    read = [(face.label, np.asarray(face.open_group()[name][selection])) for face in faces(fs)]
    (label, first), *others = read
    for other_label, other in others:
        _assert_values_equal(
            _native(other), _native(first), f"{name} ({other_label} against {label})"
        )
    return first


class _CheckedArray:
    """A raw zarr array of the store's own format whose reads (``array[selection]``) are
    read in every format and must agree (see :func:`read_each_format`); anything else is
    the array's."""

    def __init__(self, fs: Any, path: str, array: Any) -> None:
        self._fs, self._path, self._array = fs, path, array

    def __getitem__(self, selection: Any) -> np.ndarray:
        return read_each_format(self._fs, self._path, selection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)


class _CheckedGroup:
    """See :func:`checked_group`."""

    def __init__(self, fs: Any, path: str = "") -> None:
        self._fs, self._path = fs, path
        self._group = faces(fs)[0].open_group(path or None)

    def __getitem__(self, name: str) -> Any:
        node = self._group[name]
        path = f"{self._path}/{name}" if self._path else name
        if isinstance(node, zarr.Group):
            return _CheckedGroup(self._fs, path)
        return _CheckedArray(self._fs, path, node)

    def __contains__(self, name: str) -> bool:
        found = {
            face.label: name in face.open_group(self._path or None) for face in faces(self._fs)
        }
        assert len(set(found.values())) == 1, f"{name!r} in the formats: {found}"
        return next(iter(found.values()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)


def checked_group(fs: Any) -> Any:
    """The store's root as raw zarr (its own format) for tests that read arrays of it:
    ``group[name][selection]`` is read in every format (see :func:`faces`) and the reads
    must agree; ``name in group`` must be the same answer in every format."""
    return _CheckedGroup(fs)


def array_dims(array: zarr.Array) -> tuple[str, ...] | None:
    """An array's dimension names: v3 ``dimension_names``, v2 ``_ARRAY_DIMENSIONS``."""
    if array.metadata.zarr_format == 3:
        names = array.metadata.dimension_names
        return None if names is None else tuple(str(n) for n in names)
    dims = array.attrs.asdict().get("_ARRAY_DIMENSIONS")
    return None if dims is None else tuple(dims)


_NO_FILL = object()


def declared_fill(array: zarr.Array) -> Any:
    """The ``_FillValue`` an array declares as xarray reads it: the attribute (in v3 as
    xarray's ``FillValueCoder`` spells it), else (v2 only) zarr's ``fill_value``; or
    ``None`` if it declares none."""
    attrs = array.attrs.asdict()
    if array.metadata.zarr_format == 3:
        if "_FillValue" not in attrs:
            return None
        return FillValueCoder.decode(attrs["_FillValue"], array.dtype)
    value = attrs.get("_FillValue", _NO_FILL)
    return array.fill_value if value is _NO_FILL else value


def _plain_serving(array: zarr.Array) -> bool:
    """The chunks are the array's bytes, nothing encoded (v3: ``bytes`` and perhaps
    ``transpose``; v2: no compressor, no filter)."""
    if array.compressors:
        return False
    if array.metadata.zarr_format == 2:
        return not array.filters
    from zarr.codecs import BytesCodec, TransposeCodec

    return isinstance(array.serializer, BytesCodec) and all(
        isinstance(f, TransposeCodec) for f in array.filters
    )


def _v2_decoded(fs: Any, path: str, data: bytes) -> bytes:
    """A v2 chunk decoded by the pipeline its ``.zarray`` declares."""
    meta = json.loads(fs.cat_file(f"{path}/.zarray" if path else ".zarray"))
    pipeline = [numcodecs.get_codec(c) for c in meta.get("filters") or ()]
    if meta.get("compressor"):
        pipeline.append(numcodecs.get_codec(meta["compressor"]))
    out: Any = data
    for codec in reversed(pipeline):
        out = codec.decode(out)
    return ensure_bytes(np.ascontiguousarray(out).view("u1"))


#: Chunks compared per array by :func:`assert_same_chunk_bytes` (spread over the grid)
CHUNK_SAMPLE = 6


def _sampled(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    n = int(np.prod(grid)) if grid else 1
    flat = sorted({int(i) for i in np.linspace(0, n - 1, min(n, CHUNK_SAMPLE))})
    if not grid:
        return [()]
    return [tuple(int(i) for i in np.unravel_index(f, grid)) for f in flat]


def assert_same_chunk_bytes(v2: Face, v3: Face, group: str | None = None) -> None:
    """Every array of the two faces has the same chunks, of the same bytes: a chunk served
    as the source's bytes in one face is the same bytes in the other (one file range),
    and an array the v3 face serves decoded (no faithful v3 spelling of its codecs) holds
    the v2 chunk decoded. Checked on :data:`CHUNK_SAMPLE` chunks per array; a chunk
    missing in one face is missing in the other."""
    arrays2 = {n: a for n, a in v2.open_group(group).members(max_depth=None)}
    arrays3 = {n: a for n, a in v3.open_group(group).members(max_depth=None)}
    assert set(arrays2) == set(arrays3), (
        f"nodes differ between the faces: v2 only {sorted(set(arrays2) - set(arrays3))}, "
        f"v3 only {sorted(set(arrays3) - set(arrays2))}"
    )
    prefix = f"{group.strip('/')}/" if group else ""
    wanted: list[tuple[str, str, str, bool]] = []
    for name in sorted(arrays2):
        a2, a3 = arrays2[name], arrays3[name]
        if not isinstance(a2, zarr.Array):
            assert isinstance(a3, zarr.Group), f"{name}: a group in v2, an array in v3"
            continue
        assert isinstance(a3, zarr.Array), f"{name}: an array in v2, a group in v3"
        assert (a2.shape, a2.chunks) == (a3.shape, a3.chunks), (
            f"{name}: shape/chunks {a2.shape}/{a2.chunks} in v2, {a3.shape}/{a3.chunks} in v3"
        )
        decoded = _plain_serving(a3) and not _plain_serving(a2)
        for index in _sampled(a2.cdata_shape):
            path = prefix + name
            wanted.append(
                (
                    path,
                    f"{path}/{a2.metadata.encode_chunk_key(index)}",
                    f"{path}/{a3.metadata.encode_chunk_key(index)}",
                    decoded,
                )
            )
    if not wanted:
        return
    got2 = v2.fs.cat([w[1] for w in wanted], on_error="return")
    got3 = v3.fs.cat([w[2] for w in wanted], on_error="return")
    for path, key2, key3, decoded in wanted:
        b2, b3 = got2[key2], got3[key3]
        if isinstance(b2, BaseException) or isinstance(b3, BaseException):
            assert isinstance(b2, FileNotFoundError) and isinstance(b3, FileNotFoundError), (
                f"{key2} (v2) / {key3} (v3): {b2!r} / {b3!r}"[:500]
            )
            continue
        if decoded:
            b2 = _v2_decoded(v2.fs, path, b2)
        assert bytes(b2) == bytes(b3), (
            f"{key2} (v2) and {key3} (v3) differ: {len(b2)} / {len(b3)} bytes"
            + (" (v2 decoded by its codecs)" if decoded else "")
        )


def assert_formats_share_chunks(fs: Any, group: str | None = None) -> None:
    """The store's Zarr format 2 and 3 faces serve the same chunk bytes (see
    :func:`assert_same_chunk_bytes`; nothing to compare when one format is checked)."""
    both = sorted(faces(fs), key=lambda face: face.zarr_format)
    if len(both) == 2:
        assert_same_chunk_bytes(*both, group)


def _same_fill(actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind == "f" or e.dtype.kind == "f":
        a_f, e_f = float(a), float(e)
        return (math.isnan(a_f) and math.isnan(e_f)) or a_f == e_f
    return bool(a == e)


def assert_zarr_matches_raw(
    group: zarr.Group,
    expected_raw: xr.Dataset,
    where: str = "zarr",
    *,
    skip: Iterable[str] = (),
) -> None:
    """A raw zarr group holds the undecoded variables of ``expected_raw`` exactly.

    ``expected_raw`` is the truth opened with ``decode_cf=False``. Arrays must match in
    name set, dims (v2: ``_ARRAY_DIMENSIONS``; v3: ``dimension_names``, and no such
    attribute), dtype, shape and values; attributes must match. In v2 a declared
    ``_FillValue`` may live in the array's ``fill_value`` instead of its attributes (and
    both must equal it); in v3 it is an attribute as xarray spells it (zarr's
    ``fill_value`` is only what unwritten chunks read as, compared with the values).
    """
    skipped = set(skip)
    arrays = set(group.array_keys())
    expected = {str(n) for n in expected_raw.variables}
    assert arrays == expected, (
        f"{where}: arrays differ: missing {sorted(expected - arrays)}, "
        f"unexpected {sorted(arrays - expected)}"
    )
    for name in sorted(expected - skipped):
        array = group[name]
        assert isinstance(array, zarr.Array), f"{where}:{name} is not an array"
        variable = expected_raw.variables[name]
        attrs = array.attrs.asdict()
        v3 = array.metadata.zarr_format == 3
        dims_key = "dimension_names" if v3 else "_ARRAY_DIMENSIONS"
        assert array_dims(array) == tuple(variable.dims), (
            f"{where}:{name}: {dims_key} {array_dims(array)}, expected {variable.dims}"
        )
        if v3:
            assert "_ARRAY_DIMENSIONS" not in attrs, f"{where}:{name}: _ARRAY_DIMENSIONS in v3"
        # raw zarr may declare the source's byte order (">f4" for NetCDF3): compare natively
        _assert_values_equal(
            _native(np.asarray(array[...])), np.asarray(variable.values), f"{where}:{name}"
        )
        ignore = {"_ARRAY_DIMENSIONS", "_FillValue"}
        assert_attrs_equal(attrs, variable.attrs, f"{where}:{name}", ignore=ignore)
        if "_FillValue" in variable.attrs and v3:
            declared = variable.attrs["_FillValue"]
            assert "_FillValue" in attrs, f"{where}:{name}: _FillValue {declared!r} not served"
            assert _same_fill(declared_fill(array), declared), (
                f"{where}:{name}: _FillValue {attrs['_FillValue']!r} reads as "
                f"{declared_fill(array)!r}, expected {declared!r}"
            )
        elif "_FillValue" in variable.attrs:
            declared = variable.attrs["_FillValue"]
            served = attrs.get("_FillValue", array.fill_value)
            assert _same_fill(served, declared) and _same_fill(array.fill_value, declared), (
                f"{where}:{name}: fill value {array.fill_value!r} / _FillValue "
                f"{attrs.get('_FillValue')!r}, expected {declared!r}"
            )
        else:
            assert "_FillValue" not in attrs, f"{where}:{name}: _FillValue not declared in source"


def assert_store_matches(
    fs: Any,
    expected: xr.Dataset,
    expected_raw: xr.Dataset | None = None,
    *,
    group: str | None = None,
    raw_skip: Iterable[str] = (),
) -> None:
    """The virtual store equals the truth through xarray (consolidated or not) and raw zarr,
    as Zarr format 2 and as format 3 (its twin, see :func:`faces`), and the two formats
    serve the same chunk bytes (:func:`assert_same_chunk_bytes`). The consolidated open
    asks for the format, the other leaves zarr to find it."""
    both = faces(fs)
    for face in both:
        where = f"xr.open_zarr({face.label}, consolidated=True)"
        with face.open_dataset(group=group, consolidated=True) as ds:
            assert_same_dataset(ds.load(), expected, where)
        where = f"xr.open_zarr(consolidated=False) of the {face.label} store"
        with face.open_dataset(
            group=group, consolidated=False, detect_format=True, chunks=None
        ) as ds:
            assert_same_dataset(ds.load(), expected, where)
        if expected_raw is not None:
            node = face.open_group(group)
            assert_zarr_matches_raw(
                node, expected_raw, f"zarr.open_group({face.label})", skip=raw_skip
            )
    assert_formats_share_chunks(fs, group)
