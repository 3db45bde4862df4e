"""The truth and the comparison: what the virtual store must equal, and a strict check of it.

The truth is always a direct read of the source files: ``xr.open_mfdataset`` (netCDF4 engine)
for a collection, ``xr.open_dataset`` for one file, ``h5py`` for plain HDF5. Every comparison
here is strict: the same variables, coordinates, dimensions, dtypes, values (NaN-aware) and
attributes, or an ``AssertionError`` that says where they differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import FsspecStore

__all__ = [
    "MFDATASET_KWARGS",
    "assert_attrs_equal",
    "assert_same_dataset",
    "assert_same_variable",
    "assert_store_matches",
    "assert_zarr_matches_raw",
    "open_truth",
]

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
    name set, dims (``_ARRAY_DIMENSIONS``), dtype, shape and values; attributes must match,
    where a declared ``_FillValue`` may live in the array's ``fill_value`` instead of its
    attributes.
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
        assert attrs.get("_ARRAY_DIMENSIONS") == list(variable.dims), (
            f"{where}:{name}: _ARRAY_DIMENSIONS {attrs.get('_ARRAY_DIMENSIONS')}, "
            f"expected {list(variable.dims)}"
        )
        # raw zarr may declare the source's byte order (">f4" for NetCDF3): compare natively
        _assert_values_equal(
            _native(np.asarray(array[...])), np.asarray(variable.values), f"{where}:{name}"
        )
        ignore = {"_ARRAY_DIMENSIONS", "_FillValue"}
        assert_attrs_equal(attrs, variable.attrs, f"{where}:{name}", ignore=ignore)
        if "_FillValue" in variable.attrs:
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
    """The virtual store equals the truth through xarray (consolidated or not) and raw zarr."""
    mapper = fs.get_mapper("")
    # xr.open_zarr(mapper, group=...) is refused by zarr 3 for an FSMap: use a store then
    store: Any = mapper if group is None else FsspecStore.from_mapper(mapper, read_only=True)
    with xr.open_zarr(store, consolidated=True, group=group) as ds:
        assert_same_dataset(ds.load(), expected, "xr.open_zarr(consolidated=True)")
    with xr.open_zarr(store, consolidated=False, group=group, chunks=None) as ds:
        assert_same_dataset(ds.load(), expected, "xr.open_zarr(consolidated=False)")
    if expected_raw is not None:
        root = zarr.open_group(mapper, mode="r")
        node = root[group] if group else root
        assert isinstance(node, zarr.Group)
        assert_zarr_matches_raw(node, expected_raw, "zarr.open_group", skip=raw_skip)
