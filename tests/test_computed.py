"""Computed chunks (issue 4): every variable of every readable file, where no byte range will do.

Files whose lengths along the concat dimension straddle the chunk grid, files that differ in
codecs, chunk shapes, fill values, packing or integer width, and HDF5 features that kerchunk
cannot reference. Truth is always a direct read of the source files (``xr.open_mfdataset`` /
``xr.open_dataset`` with netCDF4, or h5py), compared value by value (NaN-aware, dtype-exact)
through ``xr.open_zarr`` and raw ``zarr.open_group``, attributes included.
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fsspec
import h5py
import numpy as np
import pytest
import xarray as xr
import zarr
from oracle import (
    array_dims,
    assert_attrs_equal,
    assert_formats_share_chunks,
    assert_same_variable,
    assert_store_matches,
    declared_fill,
    faces,
    open_truth,
)
from writers_computed import (
    H5_COLLECTION_FEATURES,
    H5_FEATURES,
    MONTH_DAYS_2001,
    h5_feature_kwargs,
    h5_feature_values,
    source_chunk_count,
    szip_writable,
    write_char_arrays,
    write_h5_feature,
    write_h5_series,
    write_h5_special,
    write_months,
)

import fsspec_virtual.codecs
from fsspec_virtual import IncompatibleSourcesError, UnsupportedVariableWarning

#: Attributes that an unpacked variable no longer carries.
PACKING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value")


# -- helpers -------------------------------------------------------------------------------------


def virtual(path: Any, concat_dim: str | None = "time", **kwargs: Any) -> Any:
    if isinstance(path, Path):
        path = str(path)
    if isinstance(path, list):
        path = [str(p) for p in path]
    if concat_dim is not None:
        kwargs["concat_dim"] = concat_dim
    return fsspec.filesystem("virtualzarr", path=path, **kwargs)


def check(fs: Any, paths: Sequence[Path], *, unpacked: Sequence[str] = ()) -> xr.Dataset:
    """The store equals the truth of ``paths``: decoded through ``xr.open_zarr`` (consolidated
    and not), raw through ``zarr.open_group`` (the ``unpacked`` variables hold the decoded
    values instead: see :func:`assert_served_unpacked`). Returns the decoded truth."""
    expected = open_truth(paths)
    expected_raw = open_truth(paths, decode_cf=False)
    assert_store_matches(fs, expected, expected_raw, raw_skip=unpacked)
    if unpacked:
        assert_served_unpacked(fs, expected, unpacked)
    return expected


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in ("_ARRAY_DIMENSIONS", "_FillValue")}


def _assert_nan_fill(value: Any, where: str) -> None:
    assert (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (np.asarray(value).dtype.kind == "f" and bool(np.isnan(value)))
    ), f"{where}: an unpacked variable marks masked values with NaN, but its fill is {value!r}"


def assert_served_unpacked(fs: Any, expected: xr.Dataset, names: Sequence[str]) -> None:
    """Each of ``names`` is served unpacked, as Zarr format 2 and 3: the raw zarr array and
    ``xr.open_zarr(..., decode_cf=False)`` hold the decoded floating-point values of
    ``expected`` (the decoded truth, NaN where masked, same dtype), without packing
    attributes."""
    for face in faces(fs):
        group = face.open_group()
        with face.open_dataset(consolidated=True, decode_cf=False) as raw:
            raw = raw.load()
        for name in names:
            truth = expected[name].variable
            assert truth.dtype.kind == "f", f"{name}: the truth is not unpacked ({truth.dtype})"
            array = group[name]
            assert isinstance(array, zarr.Array)
            attrs = array.attrs.asdict()
            where = f"zarr.open_group({face.label}):{name} (unpacked)"
            for key in PACKING_ATTRS[:2] + PACKING_ATTRS[3:]:
                assert key not in attrs, f"{where}: packing attribute {key!r} still served"
            if "_FillValue" in attrs:
                _assert_nan_fill(declared_fill(array), where)
            _assert_nan_fill(array.fill_value, where)
            dims = array_dims(array) or ()
            served = xr.Variable(dims, np.asarray(array[...]), _plain(attrs))
            assert_same_variable(served, truth, where)

            where = f"xr.open_zarr({face.label}, decode_cf=False):{name} (unpacked)"
            variable = raw[name].variable
            for key in PACKING_ATTRS[:2] + PACKING_ATTRS[3:]:
                assert key not in variable.attrs, f"{where}: packing attribute {key!r} still served"
            if "_FillValue" in variable.attrs:
                _assert_nan_fill(variable.attrs["_FillValue"], where)
            served = xr.Variable(variable.dims, variable.values, _plain(variable.attrs))
            assert_same_variable(served, truth, where)


def _zarr_group(fs: Any) -> zarr.Group:
    return zarr.open_group(fs.get_mapper(""), mode="r")


def _zarr_arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    return {
        name: node for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)
    }


def _entries(fs: Any) -> dict[str, Any]:
    """``fs.report()``'s entries by variable path."""
    return {v.path: v for v in fs.report().variables}


def _squash(text: str) -> str:
    """Lower case without separators: "Scale-Offset" and "scaleoffset" read the same."""
    return "".join(c for c in text.lower() if c.isalnum())


def assert_reported(fs: Any, path: str, how: str, *, because: str | None = None) -> None:
    """``fs.report()`` says ``path`` is served ``how``, and (``because``) why."""
    entries = _entries(fs)
    assert path in entries, f"{path!r} is not in the report: {sorted(entries)}"
    entry = entries[path]
    assert entry.how == how, f"{path!r} is reported {entry.how!r} ({entry.reason!r}), not {how!r}"
    if because is not None:
        assert _squash(because) in _squash(entry.reason), (
            f"{path!r}: the reason {entry.reason!r} does not mention {because!r}"
        )


def _record_first_access(fn: Callable[[], Any]) -> tuple[Any, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, caught


# -- h5py truth ----------------------------------------------------------------------------------


def _h5_datasets(path: Path) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Every dataset of a plain HDF5 file: values as h5py reads them (variable-length
    strings as ``str``) and attributes."""
    out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.dtype.kind == "O" and h5py.check_string_dtype(obj.dtype) is not None:
                values = np.asarray(obj.asstr()[()], dtype=object)
            else:
                values = np.asarray(obj[()])
            out[name] = (values, dict(obj.attrs))

        f.visititems(visit)
    return out


def _native(values: np.ndarray) -> np.ndarray:
    if values.dtype.names is None and values.dtype.byteorder in "=|":
        return values
    return values.astype(values.dtype.newbyteorder("="))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def assert_equals_h5py(actual: Any, expected: np.ndarray, where: str) -> None:
    """Values equal h5py's: text as text (variable-length strings as ``str``), structured
    arrays field by field, numbers NaN-aware with the same dtype in native byte order."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape}, {expected.shape}"
    if expected.dtype.kind in "OS":
        if expected.dtype.kind == "O":  # variable-length utf-8: strings, not bytes
            bad = [v for v in actual.ravel() if not isinstance(v, str)]
            assert not bad, f"{where}: variable-length strings served as {type(bad[0])}"
        assert actual.dtype.kind in "OSUT", f"{where}: text served as {actual.dtype}"
        a_text = [_text(v) for v in actual.ravel()]
        e_text = [_text(v) for v in expected.ravel()]
        assert a_text == e_text, f"{where}: text {a_text}, expected {e_text}"
        return
    if expected.dtype.names is not None:
        assert actual.dtype.names == expected.dtype.names, (
            f"{where}: fields {actual.dtype.names}, expected {expected.dtype.names}"
        )
        for field in expected.dtype.names:
            np.testing.assert_array_equal(
                _native(actual[field]), _native(expected[field]), f"{where}.{field}", strict=True
            )
        return
    assert _native(actual).dtype == _native(expected).dtype, (
        f"{where}: dtype {actual.dtype}, expected {expected.dtype}"
    )
    np.testing.assert_array_equal(_native(actual), _native(expected), where, strict=True)


def assert_store_matches_h5py(
    fs: Any, path: Path, *, xarray: bool = True, attr_ignore: Sequence[str] = ()
) -> None:
    """Every dataset of the plain HDF5 file at ``path`` is served equal to h5py's read, as
    Zarr format 2 and 3: through raw ``zarr.open_group`` (values and attributes) and, with
    ``xarray``, through ``xr.open_zarr`` (values: no masking of zeros or HDF5 fill
    values); both formats serve the same chunk bytes."""
    expected = _h5_datasets(path)
    with h5py.File(path, "r") as f:
        root_attrs = dict(f.attrs)
    both = faces(fs)
    for face in both:
        group = face.open_group()
        arrays = _zarr_arrays(group)
        assert set(arrays) == set(expected), (
            f"{face.label}: arrays {sorted(arrays)}, expected the datasets {sorted(expected)}"
        )
        for name, (values, attrs) in expected.items():
            where = f"zarr.open_group({face.label}):{name}"
            assert_equals_h5py(arrays[name][...], values, where)
            ignore = {"_ARRAY_DIMENSIONS", *attr_ignore}
            assert_attrs_equal(arrays[name].attrs.asdict(), attrs, where, ignore=ignore)
        assert_attrs_equal(group.attrs.asdict(), root_attrs, f"{face.label}: root attributes")
        if xarray:
            for consolidated in (True, False):
                with face.open_dataset(consolidated=consolidated) as ds:
                    assert set(map(str, ds.variables)) == set(expected)
                    for name, (values, _) in expected.items():
                        where = f"xr.open_zarr({face.label}, consolidated={consolidated}):{name}"
                        assert_equals_h5py(ds[name].values, values, where)
    assert_formats_share_chunks(fs)


# -- the collections -----------------------------------------------------------------------------

GZIP = {"compression": "zlib", "shuffle": True}
NONE: dict[str, Any] = {"compression": None}


def _packed(scale: float, offset: float, *, dtype: str = "f8", **extra: Any) -> dict[str, Any]:
    """An int16 variable packed with ``scale_factor`` / ``add_offset`` of ``dtype``."""
    attrs = {
        "scale_factor": np.dtype(dtype).type(scale),
        "add_offset": np.dtype(dtype).type(offset),
    }
    if "missing_value" in extra:
        attrs["missing_value"] = np.int16(extra.pop("missing_value"))
    return {"dtype": "i2", "fill_value": np.int16(-32767), "attrs": attrs, **GZIP, **extra}


def write_year(directory: Path) -> list[Path]:
    """The acceptance collection: 2001 in 12 monthly files of daily steps (28-31 days),
    chunk (10, 3, 4); even months gzip, odd months uncompressed; June packed differently.

    ``tas`` (float32, no fill), ``sst`` (float32, the same ``_FillValue`` everywhere),
    ``pr`` (int16 packed, float64 packing; June's differs), ``orog(lat, lon)`` identical
    in every file.
    """

    def variables(i: int) -> dict[str, Any]:
        codec = GZIP if i % 2 == 0 else NONE
        scale, offset = (0.02, 5.0) if i == 5 else (0.01, 0.0)
        return {
            "tas": {"dtype": "f4", **codec},
            "sst": {"dtype": "f4", "fill_value": np.float32(1e20), **codec},
            "pr": {**_packed(scale, offset), **codec},
        }

    names = [f"2001-{m:02d}.nc" for m in range(1, 13)]
    return write_months(directory, MONTH_DAYS_2001, variables=variables, names=names)


# -- 1. unequal lengths along the concat dimension -----------------------------------------------

UNEQUAL = {
    "months-31-28-31-30": {"lengths": [31, 28, 31, 30], "chunk_time": 10},
    "years-365-366": {
        "lengths": [365, 366],
        "chunk_time": 30,
        "ny": 2,
        "nx": 3,
        "units": "days since 2003-01-01",
    },
    "short-last-file": {"lengths": [10, 10, 3], "chunk_time": 4},
    "chunk-divides-nothing": {"lengths": [7, 5, 9], "chunk_time": 3},
    "unlimited-31-29": {"lengths": [31, 29], "chunk_time": 10, "unlimited": True},
}

STRADDLING_VARIABLES = {
    "tas": {"dtype": "f4", **GZIP},
    "n_obs": {"dtype": "i2", "compression": None},
}


class TestUnequalLengths:
    """Files of 31/28/31/30 days, 365/366, a short last file, chunks that divide nothing."""

    @pytest.mark.parametrize("case", list(UNEQUAL))
    def test_matches_open_mfdataset(self, tmp_path, case):
        kwargs = dict(UNEQUAL[case])
        paths = write_months(tmp_path / "m", variables=STRADDLING_VARIABLES, **kwargs)
        fs = virtual(tmp_path / "m")
        check(fs, paths)
        group = _zarr_group(fs)
        for name in STRADDLING_VARIABLES:
            assert group[name].chunks[0] == kwargs["chunk_time"], (
                f"{name}: chunks {group[name].chunks}: along time, the first file's chunk "
                f"length {kwargs['chunk_time']} was expected"
            )

    def test_slices_across_file_boundaries(self, tmp_path):
        # partial reads that begin and end inside straddling chunks
        paths = write_months(tmp_path / "m", [31, 28, 31, 30], variables=STRADDLING_VARIABLES)
        expected = open_truth(paths)
        expected_raw = open_truth(paths, decode_cf=False)
        fs = virtual(tmp_path / "m")
        for face in faces(fs):
            group = face.open_group()
            with face.open_dataset(consolidated=True) as ds:
                for window in (slice(25, 45), slice(29, 32), slice(58, 60), slice(57, 91)):
                    for name in STRADDLING_VARIABLES:
                        assert_same_variable(
                            ds[name].isel(time=window).variable,
                            expected[name].isel(time=window).variable,
                            f"xr.open_zarr({face.label}):{name}[{window}]",
                        )
                        np.testing.assert_array_equal(
                            group[name][window, 1:, ::2],
                            expected_raw[name].values[window, 1:, ::2],
                            f"zarr({face.label}):{name}[{window}]",
                            strict=True,
                        )


# -- 2. differences between files ----------------------------------------------------------------


class TestDifferencesBetweenFiles:
    """Differences that used to raise IncompatibleSourcesError and can be served correctly."""

    def test_codecs_differ(self, tmp_path):
        codecs = [{"compression": "zlib", "shuffle": False}, NONE, GZIP]
        paths = write_months(
            tmp_path / "c",
            [6, 6, 6],
            chunk_time=3,
            variables=lambda i: {"tas": {"dtype": "f4", **codecs[i]}},
        )
        with h5py.File(paths[1]) as f:  # the premise: one file is not compressed
            assert f["tas"].compression is None
        fs = virtual(tmp_path / "c")
        check(fs, paths)
        assert_reported(fs, "tas", "computed")

    def test_chunk_shapes_differ(self, tmp_path):
        chunks = [(4, 3, 4), (3, 2, 4), (8, 1, 2)]
        paths = write_months(
            tmp_path / "c",
            [8, 8, 8],
            variables=lambda i: {"tas": {"dtype": "f4", "chunks": chunks[i], **GZIP}},
        )
        fs = virtual(tmp_path / "c")
        check(fs, paths)
        assert_reported(fs, "tas", "computed")

    @pytest.mark.parametrize(
        ("dtype", "fills"),
        [
            ("f4", [np.float32(-999.0), np.float32(1e20), None]),
            ("f8", [None, -1.0, -2.0]),
            ("i2", [np.int16(-1), np.int16(-2), np.int16(-1)]),
        ],
        ids=["f4", "f8", "i2"],
    )
    def test_fill_values_differ(self, tmp_path, dtype, fills):
        # served unpacked: decoded values, NaN where each file masks, no _FillValue
        paths = write_months(
            tmp_path / "f",
            [6, 6, 6],
            chunk_time=3,
            variables=lambda i: {"v": {"dtype": dtype, "fill_value": fills[i], **GZIP}},
        )
        fs = virtual(tmp_path / "f")
        expected = check(fs, paths, unpacked=["v"])
        assert np.isnan(expected["v"].values).any(), "the premise: some values are masked"
        assert_reported(fs, "v", "computed")

    @pytest.mark.parametrize(
        "dtypes", [("i2", "i4", "i2"), ("f4", "f8"), ("u1", "i2")], ids="+".join
    )
    def test_dtype_widths_differ(self, tmp_path, dtypes):
        # promoted as xr.concat promotes (int16 + int32 -> int32)
        paths = write_months(
            tmp_path / "w",
            [5] * len(dtypes),
            chunk_time=5,
            variables=lambda i: {"v": {"dtype": dtypes[i], **GZIP}},
        )
        fs = virtual(tmp_path / "w")
        expected = check(fs, paths)
        assert expected["v"].dtype == np.result_type(*dtypes), "the premise: promoted"

    @pytest.mark.parametrize("packing_dtype", ["f8", "f4"])
    @pytest.mark.parametrize("difference", ["scale_factor", "add_offset", "missing_value"])
    def test_packing_differs(self, tmp_path, packing_dtype, difference):
        def variables(i: int) -> dict[str, Any]:
            scale, offset, extra = 0.01, 273.15, {"missing_value": -32768}
            if i == 1 and difference == "scale_factor":
                scale = 0.02
            if i == 1 and difference == "add_offset":
                offset = 250.0
            if i == 1 and difference == "missing_value":
                extra = {"missing_value": -32000}
            return {"t2m": _packed(scale, offset, dtype=packing_dtype, **extra)}

        paths = write_months(tmp_path / "p", [6, 6], chunk_time=3, variables=variables)
        fs = virtual(tmp_path / "p")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "variable 't2m' has multiple fill values")
            expected = check(fs, paths, unpacked=["t2m"])
        assert expected["t2m"].dtype == {"f8": np.float64, "f4": np.float32}[packing_dtype]
        assert_reported(fs, "t2m", "computed", because="packing")

    @pytest.mark.parametrize("n_files", [1, 2])
    def test_float32_packing_served_unpacked(self, tmp_path, n_files):
        # float32 scale_factor/add_offset would become float64 in JSON and xarray would
        # unpack to float64 where open_mfdataset gives float32: served unpacked instead
        paths = write_months(
            tmp_path / "p",
            [6] * n_files,
            chunk_time=3,
            variables={"t2m": _packed(0.01, 273.15, dtype="f4")},
        )
        fs = virtual(tmp_path / "p", concat_dim="time" if n_files > 1 else None)
        expected = check(fs, paths, unpacked=["t2m"])
        assert expected["t2m"].dtype == np.float32
        assert_reported(fs, "t2m", "computed")


class TestStillIncompatible:
    """Differences no on-the-fly conversion reconciles still raise, naming variable and files."""

    @pytest.mark.parametrize("access", ["ls", "xr.open_zarr"])
    @pytest.mark.parametrize("case", ["string-vs-float", "non-concat-shape"])
    def test_raises(self, tmp_path, case, access):
        root = tmp_path / "x"
        if case == "string-vs-float":
            name = "label"
            a = write_months(
                root, [4], names=["alpha.nc"], variables={name: {"dtype": str, "dims": ("time",)}}
            )
            b = write_months(
                root,
                [4],
                start=4,
                names=["beta.nc"],
                variables={name: {"dtype": "f4", "dims": ("time",)}},
            )
        else:
            name = "tas"
            kwargs: dict[str, Any] = {"coords": False, "static": False, "chunk_time": 2}
            a = write_months(root, [4], nx=4, names=["alpha.nc"], **kwargs)
            b = write_months(root, [4], start=4, nx=5, names=["beta.nc"], **kwargs)
        fs = virtual(root)
        with pytest.raises(IncompatibleSourcesError) as info:
            if access == "ls":
                fs.ls("")
            else:
                xr.open_zarr(fs.get_mapper(""), consolidated=True).load()
        message = str(info.value)
        assert name in message, message
        assert a[0].name in message and b[0].name in message, message


# -- 3. HDF5 features kerchunk cannot reference ---------------------------------------------------


class TestHDF5Features:
    """Plain HDF5 files written with h5py (single file, concat_dim=None); truth: h5py."""

    @pytest.mark.parametrize("feature", H5_FEATURES)
    def test_filter(self, tmp_path, feature):
        path = write_h5_feature(tmp_path / "odd.h5", feature)
        assert_store_matches_h5py(virtual(path, concat_dim=None), path)

    @pytest.mark.parametrize("feature", ["compact", "vlen_str", "fixed_str", "big_endian", "bool"])
    def test_type_or_layout(self, tmp_path, feature):
        path = write_h5_special(tmp_path / "odd.h5", feature)
        assert_store_matches_h5py(virtual(path, concat_dim=None), path)

    def test_enum(self, tmp_path):
        # served as the base integer type, the mapping as CF flag_values / flag_meanings
        path = write_h5_special(tmp_path / "odd.h5", "enum")
        with h5py.File(path, "r") as f:
            mapping = h5py.check_enum_dtype(f["odd"].dtype)
        fs = virtual(path, concat_dim=None)
        assert_store_matches_h5py(fs, path, attr_ignore=("flag_values", "flag_meanings"))
        array = _zarr_group(fs)["odd"]
        assert np.dtype(array.dtype) == np.dtype("u1")
        with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
            for where, attrs in (("zarr", array.attrs.asdict()), ("xarray", ds["odd"].attrs)):
                assert {"flag_values", "flag_meanings"} <= set(attrs), f"{where}: {attrs}"
                values = np.asarray(attrs["flag_values"]).reshape(-1).tolist()
                meanings = attrs["flag_meanings"]
                assert all(isinstance(v, int) and not isinstance(v, bool) for v in values), (
                    f"{where}: flag_values {attrs['flag_values']!r} are not integers"
                )
                assert isinstance(meanings, str), f"{where}: flag_meanings {meanings!r}"
                assert len(values) == len(meanings.split()), f"{where}: {values} / {meanings!r}"
                assert dict(zip(meanings.split(), values)) == mapping, f"{where}: {attrs}"

    def test_compound_served_or_left_out_with_a_warning(self, tmp_path):
        path = write_h5_special(tmp_path / "odd.h5", "compound")
        expected = _h5_datasets(path)
        fs = virtual(path, concat_dim=None)
        _, caught = _record_first_access(fs.collection)
        arrays = _zarr_arrays(_zarr_group(fs))
        assert_equals_h5py(arrays["ok"][...], expected["ok"][0], "ok")
        if "odd" in arrays:
            assert_equals_h5py(arrays["odd"][...], expected["odd"][0], "odd (structured)")
        else:
            messages = [
                str(w.message) for w in caught if issubclass(w.category, UnsupportedVariableWarning)
            ]
            assert any("odd" in m and path.name in m for m in messages), (
                f"the compound 'odd' is neither served nor left out with an "
                f"UnsupportedVariableWarning naming it and {path.name}: {messages}"
            )

    def test_netcdf_char_arrays(self, tmp_path):
        # S1 along a string dimension: xarray decodes them the same as open_dataset does
        path = write_char_arrays(tmp_path / "chars.nc")
        fs = virtual(path, concat_dim=None)
        expected = open_truth([path])
        assert expected["code"].dtype.kind == "S" and expected["code"].dims == ("station",)
        assert_store_matches(fs, expected, open_truth([path], decode_cf=False))

    @pytest.mark.parametrize("feature", H5_COLLECTION_FEATURES)
    def test_filter_across_files(self, tmp_path, feature):
        # three files of 5/7/4 steps, chunk 3: straddling chunks decoded from the filter
        paths = write_h5_series(tmp_path / "s", [5, 7, 4], feature, chunk_time=3)
        truth: dict[str, list[np.ndarray]] = {"time": [], "v": [], "x": []}
        for path in paths:
            with h5py.File(path, "r") as f:
                for name in truth:
                    truth[name].append(f[name][()])
        expected = {
            "time": np.concatenate(truth["time"]),
            "v": np.concatenate(truth["v"]),
            "x": truth["x"][0],
        }
        fs = virtual(tmp_path / "s")
        both = faces(fs)
        for face in both:
            arrays = _zarr_arrays(face.open_group())
            assert set(arrays) == set(expected)
            for name, values in expected.items():
                assert_equals_h5py(arrays[name][...], values, f"zarr({face.label}):{name}")
            assert arrays["v"].chunks[0] == 3
            assert arrays["v"].attrs["feature"] == feature
            with face.open_dataset(consolidated=True) as ds:
                assert ds["v"].dims == ("time", "x")
                for name, values in expected.items():
                    assert_equals_h5py(
                        ds[name].values, values, f"xr.open_zarr({face.label}):{name}"
                    )
        assert_formats_share_chunks(fs)
        assert_reported(fs, "v", "computed")


# -- 4. the scan report ---------------------------------------------------------------------------


class TestReport:
    def test_straddling_computed_aligned_passthrough(self, tmp_path):
        variables = {
            "aligned": {"dtype": "f4", "chunks": (10, 3, 4), **GZIP},
            "straddling": {"dtype": "f4", "chunks": (8, 3, 4), **GZIP},
        }
        paths = write_months(tmp_path / "r", [20, 20, 15], variables=variables)
        fs = virtual(tmp_path / "r")
        check(fs, paths)
        assert_reported(fs, "aligned", "passthrough")
        assert_reported(fs, "orog", "passthrough")
        assert_reported(fs, "straddling", "computed", because="straddle")
        lines = [line.strip() for line in str(fs.report()).splitlines()]
        line = next((s for s in lines if s.split()[:1] == ["straddling"]), None)
        assert line is not None and "computed" in line and "straddle" in line, lines
        line = next((s for s in lines if s.split()[:1] == ["aligned"]), None)
        assert line is not None and "passthrough" in line, lines

    def test_packing_differs(self, tmp_path):
        paths = write_months(
            tmp_path / "r",
            [4, 4],
            chunk_time=2,
            variables=lambda i: {"t2m": _packed(0.01 * (i + 1), 273.15)},
        )
        fs = virtual(tmp_path / "r")
        check(fs, paths, unpacked=["t2m"])
        assert_reported(fs, "t2m", "computed", because="packing")
        line = next(s for s in str(fs.report()).splitlines() if s.strip().startswith("t2m"))
        assert "computed" in line and "packing" in line.lower(), line

    def test_filters_named(self, tmp_path):
        features = {"lzf": "lzf", "scaleoffset_int": "scaleoffset"}
        if szip_writable():
            features["szip"] = "szip"
        path = tmp_path / "filters.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("gzip", data=np.arange(20.0), chunks=(8,), compression="gzip")
            for feature in features:
                data = h5_feature_values(feature, (20,), seed=1)
                f.create_dataset(feature, data=data, chunks=(8,), **h5_feature_kwargs(feature))
        fs = virtual(path, concat_dim=None)
        assert_store_matches_h5py(fs, path)
        assert_reported(fs, "gzip", "passthrough")
        text = str(fs.report())
        for name, filter_name in features.items():
            assert_reported(fs, name, "computed", because=filter_name)
            line = next(s for s in text.splitlines() if s.strip().split()[:1] == [name])
            assert "computed" in line and _squash(filter_name) in _squash(line), line


# -- 5. the mixed acceptance collection -----------------------------------------------------------


class TestMixedCollection:
    def test_writer_makes_the_differences_it_claims(self, tmp_path):
        # the acceptance test proves what it says only if the files really differ so
        paths = write_year(tmp_path / "y")
        lengths, compressions, scales = [], [], []
        for path in paths:
            with h5py.File(path, "r") as f:
                lengths.append(f["tas"].shape[0])
                assert f["tas"].chunks == (10, 3, 4)
                compressions.append(f["tas"].compression)
                scales.append(float(f["pr"].attrs["scale_factor"][0]))
                assert f["pr"].dtype == np.int16
        assert lengths == list(MONTH_DAYS_2001)
        assert compressions == ["gzip", None] * 6
        assert scales == [0.01] * 5 + [0.02] + [0.01] * 6

    def test_twelve_months(self, tmp_path):
        paths = write_year(tmp_path / "y")
        fs = virtual(tmp_path / "y")
        expected = check(fs, paths, unpacked=["pr"])
        assert expected["pr"].dtype == np.float64
        assert expected.sizes["time"] == 365
        group = _zarr_group(fs)
        for name in ("tas", "sst", "pr"):
            assert group[name].chunks[0] == 10, f"{name}: chunks {group[name].chunks}"
        # orog has no time dimension: it comes, untouched, from the first file
        assert group["orog"].attrs["_ARRAY_DIMENSIONS"] == ["lat", "lon"]
        assert_reported(fs, "orog", "passthrough")
        assert_reported(fs, "tas", "computed")
        assert_reported(fs, "pr", "computed", because="packing")


# -- 6. the cache of decoded source chunks --------------------------------------------------------


class _CountingDecode:
    """Wraps ``fsspec_virtual.codecs.decode_chunk``: counts calls, by the encoded bytes."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.calls = 0
        self.by_bytes: Counter[str] = Counter()
        self.unkeyed = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raw = [
            a for a in (*args, *kwargs.values()) if isinstance(a, bytes | bytearray | memoryview)
        ]
        with self._lock:
            self.calls += 1
            if raw:
                self.by_bytes[hashlib.sha256(bytes(raw[0])).hexdigest()] += 1
            else:
                self.unkeyed += 1
        return self.original(*args, **kwargs)


def _read_sequentially(array: zarr.Array) -> np.ndarray:
    """The whole array, read one chunk along the first axis at a time, in order."""
    step = array.chunks[0]
    return np.concatenate([array[i : i + step] for i in range(0, array.shape[0], step)])


class TestChunkCache:
    LENGTHS = (31, 28, 31, 30)

    def test_sequential_read_decodes_each_source_chunk_once(self, tmp_path, monkeypatch):
        paths = write_months(
            tmp_path / "m", self.LENGTHS, variables={"tas": {"dtype": "f4", **GZIP}}
        )
        expected_raw = open_truth(paths, decode_cf=False)
        fs = virtual(tmp_path / "m")
        group = _zarr_group(fs)  # scanned and opened before counting: reads only below
        array = group["tas"]
        original = fsspec_virtual.codecs.decode_chunk
        counter = _CountingDecode(original)
        # the function itself, wherever a module of the package bound it by name
        for module in [m for n, m in sys.modules.items() if n.startswith("fsspec_virtual")]:
            if getattr(module, "decode_chunk", None) is original:
                monkeypatch.setattr(module, "decode_chunk", counter)
        values = _read_sequentially(array)
        monkeypatch.undo()
        np.testing.assert_array_equal(values, expected_raw["tas"].values, strict=True)
        n_source = source_chunk_count(paths, "tas")
        assert counter.calls > 0, (
            "no call reached fsspec_virtual.codecs.decode_chunk: computed chunks must decode "
            "their source chunks through it"
        )
        assert counter.calls <= n_source, (
            f"{counter.calls} decodes for {n_source} source chunks in a sequential full read"
        )
        repeated = {k: n for k, n in counter.by_bytes.items() if n > 1}
        assert not repeated, f"source chunks decoded more than once: {sorted(repeated.values())}"

    def test_no_cache_still_correct(self, tmp_path):
        paths = write_months(tmp_path / "m", self.LENGTHS, variables=STRADDLING_VARIABLES)
        fs = virtual(tmp_path / "m", chunk_cache_size=0)
        check(fs, paths)
        expected_raw = open_truth(paths, decode_cf=False)
        array = _zarr_group(fs)["tas"]
        np.testing.assert_array_equal(
            _read_sequentially(array), expected_raw["tas"].values, strict=True
        )

    def test_small_cache_still_correct(self, tmp_path):
        # a cache smaller than one decoded source chunk (10 x 3 x 4 float32 = 480 bytes)
        paths = write_months(tmp_path / "m", self.LENGTHS, variables=STRADDLING_VARIABLES)
        fs = virtual(tmp_path / "m", chunk_cache_size=100)
        check(fs, paths)


# -- 7. remote sources ----------------------------------------------------------------------------


@pytest.fixture
def memory_root() -> Any:
    """A fresh directory on fsspec's memory filesystem, removed afterwards."""
    root = f"/vz-computed-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    try:
        yield memory, root
    finally:
        if memory.exists(root):
            memory.rm(root, recursive=True)


class TestRemote:
    def test_straddling_months_from_memory(self, tmp_path, memory_root):
        memory, root = memory_root
        paths = write_months(tmp_path / "m", [31, 28, 31], variables=STRADDLING_VARIABLES)
        for path in paths:
            memory.pipe_file(f"{root}/{path.name}", path.read_bytes())
        fs = virtual(f"{root}/*.nc", target_protocol="memory")
        check(fs, paths)
        assert_reported(fs, "tas", "computed", because="straddle")

    def test_hdf5_filter_from_memory(self, tmp_path, memory_root):
        # decoded without a numcodecs codec: through the source filesystem's file object
        memory, root = memory_root
        path = write_h5_feature(tmp_path / "odd.h5", "lzf")
        memory.pipe_file(f"{root}/odd.h5", path.read_bytes())
        fs = virtual(f"{root}/odd.h5", concat_dim=None, target_protocol="memory")
        assert_store_matches_h5py(fs, path)
