"""A ``_FillValue`` attribute that is not one value of its numeric variable's type (two
values, text, an empty array, a number the type changes) leaves that variable out with a
warning naming the file, the variable and the value; the rest of the file is served.

Such a value used to be written into ``.zarray`` as ``[1, 2]``, ``"text"`` or ``[]``, and
zarr then refused the whole store (a TypeError naming neither file nor variable); one the
type changes (``1e20`` as ``float32``) would mask values a direct read does not mask.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import scanned_store
from oracle import assert_same_dataset, open_each_format, open_truth

#: Each odd ``_FillValue``: the variable's dtype, the value, and how the warning shows it.
ODD = {
    "two-values": ("i4", np.array([1, 2], "i4"), "[1, 2]"),
    "text": ("f4", "text", "'text'"),
    "empty": ("f4", np.array([], "f4"), "[]"),
    "changed-by-float32": ("f4", np.float64(1e20), "1e+20"),
    "fraction-of-int": ("i4", np.float64(1.5), "1.5"),
    "out-of-int8": ("i1", np.int16(200), "200"),
}

#: ``_FillValue`` attributes of another type that the variable's type holds exactly.
EXACT = {
    "f4-with-f8": ("f4", np.float64(-1.5)),
    "f4-with-f4-1e20": ("f4", np.float32(1e20)),
    "i1-with-i2": ("i1", np.int16(-5)),
    "i4-with-array-of-one-i2": ("i4", np.array([3], "i2")),
    "f8-with-f4-nan": ("f8", np.float32(np.nan)),
}


def _write_hdf5(path: Path, dtype: str, fill: Any, chunked: bool) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("ok", data=np.arange(4.0))
        layout: dict[str, Any] = {"chunks": (2,), "compression": "gzip"} if chunked else {}
        v = f.create_dataset("v", data=np.arange(4).astype(dtype), **layout)
        v.attrs["_FillValue"] = fill
    return path


def _write_netcdf3(path: Path, dtype: str, fill: Any, fmt: str) -> Path:
    """netCDF-C refuses such a ``_FillValue``: write it under another name of the same
    length, then rename it in the header's bytes."""
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension("x", 4)
        ds.createVariable("ok", "f8", ("x",))[:] = np.arange(4.0)
        v = ds.createVariable("v", dtype, ("x",))
        v[:] = np.arange(4)
        v.setncattr("_FillXalue", fill)
    data = path.read_bytes()
    assert data.count(b"_FillXalue") == 1
    path.write_bytes(data.replace(b"_FillXalue", b"_FillValue"))
    return path


WRITERS = {
    "hdf5-chunked": lambda p, d, f: _write_hdf5(p, d, f, chunked=True),
    "hdf5-contiguous": lambda p, d, f: _write_hdf5(p, d, f, chunked=False),
    "netcdf3": lambda p, d, f: _write_netcdf3(p, d, f, "NETCDF3_CLASSIC"),
    "cdf5": lambda p, d, f: _write_netcdf3(p, d, f, "NETCDF3_64BIT_DATA"),
}


def _served(path: Path, decode: str) -> xr.Dataset:
    fs = fsspec.filesystem(
        "virtualzarr", path=str(path), decode=decode, cache=False, skip_instance_cache=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_each_format(fs, consolidated=True)


def _truth(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xarray's "multiple fill values" warning
        return open_truth([path], concat_dim=None)


def _assert_left_out(path: Path, writer: str, shown: str, why: str) -> None:
    """``v`` left out with one warning naming the file, the value and ``why``; the rest
    of the file served as a direct read gives it."""
    fs = scanned_store(path)
    messages = [m for m in fs.caught if "'v'" in m]
    assert len(messages) == 1, fs.caught
    assert all(part in messages[0] for part in (str(path), "_FillValue", shown, why))
    for decode in ("client", "store"):
        served = _served(path, decode)
        assert "v" not in served.variables
        assert_same_dataset(served, _truth(path).drop_vars("v"), f"{writer}/{decode}")


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("odd", list(ODD))
def test_an_odd_fill_value_leaves_the_variable_out(tmp_path, writer, odd):
    dtype, fill, shown = ODD[odd]
    _assert_left_out(WRITERS[writer](tmp_path / "f.nc", dtype, fill), writer, shown, "")


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("exact", list(EXACT))
def test_a_fill_value_of_another_type_held_exactly_is_served(tmp_path, writer, exact):
    dtype, fill = EXACT[exact]
    path = WRITERS[writer](tmp_path / "f.nc", dtype, fill)
    fs = scanned_store(path)
    assert fs.caught == []
    for decode in ("client", "store"):
        assert_same_dataset(_served(path, decode), _truth(path), f"{writer}/{decode}")


#: Fills of another kind of number (HDF5 only: NetCDF has no such attribute types), on
#: which readers disagree: netCDF4 ignores them, h5netcdf masks with them.
OTHER_KIND = {
    "complex-on-float32": ("f4", np.complex128(1 + 0j), "(1+0j)"),
    "bool-on-int32": ("i4", np.bool_(True), "True"),
}


@pytest.mark.parametrize("writer", ["hdf5-chunked", "hdf5-contiguous"])
@pytest.mark.parametrize("kind", list(OTHER_KIND))
def test_a_fill_value_of_another_kind_of_number_leaves_the_variable_out(tmp_path, writer, kind):
    dtype, fill, shown = OTHER_KIND[kind]
    path = WRITERS[writer](tmp_path / "f.nc", dtype, fill)
    _assert_left_out(path, writer, shown, "kind of number")
