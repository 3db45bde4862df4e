"""NetCDF3 record variables: as many records as the header says.

With one record variable whose record is not a multiple of 4 bytes, the format does not
pad records; kerchunk's translator then counted extra records, and every later file was
served shifted along the record dimension.
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr
from oracle import open_each_format

from fsspec_virtual import VirtualZarrFileSystem


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET"])
@pytest.mark.parametrize("dtype", ["i1", "i2", "S1"])
def test_single_unpadded_record_variable(tmp_path, fmt, dtype):
    paths = []
    for i in range(2):
        path = tmp_path / f"f{i}.nc"
        with netCDF4.Dataset(path, "w", format=fmt) as ds:
            ds.createDimension("time", None)
            ds.createDimension("x", 3)
            v = ds.createVariable("v", dtype, ("time", "x"))
            values = (np.arange(12) + 20 * i).reshape(4, 3)
            v[...] = values.astype("S1") if dtype == "S1" else values.astype(dtype)
        paths.append(path)
    fs = VirtualZarrFileSystem(str(tmp_path), concat_dim="time", cache=False, max_workers=1)
    with (
        open_each_format(fs) as ours,
        xr.open_mfdataset(paths, combine="nested", concat_dim="time") as truth,
    ):
        assert ours.sizes["time"] == truth.sizes["time"] == 8
        np.testing.assert_array_equal(ours["v"].values, truth["v"].values)


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET"])
def test_text_attributes_that_are_not_utf8_read_as_netcdf_reads_them(tmp_path, fmt):
    """netCDF-C stores any bytes in a text attribute (latin-1 from older software): the
    file is served, its attributes as xarray's netCDF4 engine shows them."""
    path = tmp_path / "latin.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("n", 2)
        v = nc.createVariable("v", "f4", ("n",))
        v[:] = [1, 2]
        v.setncattr("note", b"\xff\xfeok")
        nc.setncattr("title", b"caf\xe9")
        nc.setncattr("plain", "ascii")
    fs = VirtualZarrFileSystem(str(path), cache=False, skip_instance_cache=True)
    actual = open_each_format(fs, consolidated=True)
    with xr.open_dataset(path, engine="netcdf4") as truth:
        assert actual.attrs == truth.attrs
        assert actual["v"].attrs == truth["v"].attrs
        np.testing.assert_array_equal(actual["v"].values, truth["v"].values)
