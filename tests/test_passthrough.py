"""Passthrough wherever it can be: in a collection whose files differ in layout, only the
odd files' chunks are computed; the others are their files' own bytes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from oracle import assert_formats_share_chunks, open_each_format

from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual.manifest import COMPUTED


def _series(directory, odd: dict[int, dict]) -> list:
    """Seven daily files of v(time, x), one chunk per step; files in ``odd`` written
    with other options (format, encoding)."""
    paths = []
    for i in range(7):
        ds = xr.Dataset(
            {"v": (("time", "x"), np.arange(8.0, dtype="f4").reshape(2, 4) + 10 * i)},
            coords={"time": ("time", [2.0 * i, 2.0 * i + 1], {"units": "days since 2000-01-01"})},
        )
        options = odd.get(i, {"encoding": {"v": {"zlib": True, "chunksizes": (1, 4)}}})
        path = directory / f"f{i}.nc"
        ds.to_netcdf(path, **options)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    "odd",
    [
        {3: {"format": "NETCDF3_CLASSIC"}},  # big-endian, uncompressed, records
        {3: {"encoding": {"v": {"chunksizes": (1, 4)}}}},  # not compressed
        {
            0: {
                "encoding": {
                    "v": {"zlib": True, "complevel": 9, "shuffle": False, "chunksizes": (1, 4)}
                }
            }
        },  # the first file is the odd one
    ],
    ids=["netcdf3", "uncompressed", "first-file"],
)
def test_only_the_odd_files_chunks_are_computed(tmp_path, odd):
    paths = _series(tmp_path, odd)
    fs = VirtualZarrFileSystem(str(tmp_path), concat_dim="time", cache=False, max_workers=1)
    grid = fs.collection().manifest.arrays["v"].grid
    computed = int((grid.file_id == COMPUTED).sum())
    assert computed == 2, f"{computed} computed chunks: only the odd file's 2 should be"
    # both Zarr formats: the same values, and the passthrough chunks the same bytes
    assert_formats_share_chunks(fs)
    with open_each_format(fs) as ours, xr.open_mfdataset(paths) as truth:
        np.testing.assert_array_equal(ours["v"].values, truth["v"].values)
        assert ours["v"].dtype == truth["v"].dtype
