"""Variables of many tiny chunks are served merged into larger computed chunks."""

from __future__ import annotations

import h5py
import netCDF4
import numpy as np
import xarray as xr
import zarr
from oracle import open_each_format, read_each_format

from fsspec_virtual import VirtualZarrFileSystem


def _write(path, start, steps=16, ny=64, nx=64, chunks=(1, 8, 8)):
    rng = np.random.default_rng(start)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("y", ny)
        nc.createDimension("x", nx)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(start, start + steps)
        v = nc.createVariable(
            "v",
            "f4",
            ("time", "y", "x"),
            zlib=True,
            shuffle=True,
            chunksizes=chunks,
            fill_value=-9.0,
        )
        values = rng.random((steps, ny, nx), dtype="f4")
        values[0, :3, :5] = -9.0  # masked by _FillValue
        v[:] = values
    return path


def test_tiny_chunks_are_merged_and_read_equal(tmp_path):
    paths = [_write(tmp_path / f"d{i}.nc", 16 * i) for i in range(2)]
    fs = VirtualZarrFileSystem(str(tmp_path), concat_dim="time", skip_instance_cache=True)
    entry = {v.path: v for v in fs.report().variables}["v"]
    assert entry.how == "computed" and "merged" in entry.reason, entry
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    assert group["v"].chunks == (1, 64, 64)  # the concat axis keeps its chunking
    truth = []
    for path in paths:
        with h5py.File(path, "r") as f:
            truth.append(f["v"][...])
    whole = read_each_format(fs, "v")  # Zarr format 3 reads the same
    np.testing.assert_array_equal(whole, np.concatenate(truth), strict=True)
    part = read_each_format(fs, "v", (slice(3, 20), slice(5, 40), 7))
    np.testing.assert_array_equal(part, np.concatenate(truth)[3:20, 5:40, 7], strict=True)
    with open_each_format(fs) as ds, xr.open_mfdataset(paths) as expected:
        xr.testing.assert_identical(ds.load(), expected.load())
    # every source chunk decoded once by a full read
    state = fs.collection()
    state.cache.clear()
    state.cache.loads = 0
    group["v"][...]
    assert state.cache.loads == 2 * 16 * 8 * 8


def test_few_tiny_chunks_pass_through(tmp_path):
    path = _write(tmp_path / "small.nc", 0, steps=2)  # 128 chunks: not worth merging
    fs = VirtualZarrFileSystem(str(path), skip_instance_cache=True)
    assert {v.path: v for v in fs.report().variables}["v"].how == "passthrough"
