"""refresh() and listing_ttl: the store follows its directory, rescanning only what changed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_steps
from oracle import open_each_format

from fsspec_virtual import StaleSourceError, VirtualZarrFileSystem

_write = write_steps


@pytest.fixture
def scans(scan_calls):
    return scan_calls


def _names(paths: list[str]) -> list[str]:
    return [Path(p).name for p in paths]


def _store(directory: Path, **kwargs) -> VirtualZarrFileSystem:
    return VirtualZarrFileSystem(
        str(directory),
        concat_dim="time",
        cache=False,
        max_workers=1,
        skip_instance_cache=True,
        **kwargs,
    )


def _assert_equals_mfdataset(fs: VirtualZarrFileSystem, directory: Path) -> None:
    paths = sorted(directory.glob("*.nc"))
    # Zarr format 3 (the twin on the refreshed snapshot) must give the same dataset
    with open_each_format(fs) as ds, xr.open_mfdataset(paths) as truth:
        xr.testing.assert_identical(ds, truth.load())


def test_new_file_extends_the_axis_where_it_falls(tmp_path, scans):
    _write(tmp_path / "a.nc", 0, 1.0)
    _write(tmp_path / "c.nc", 6, 3.0)
    fs = _store(tmp_path)
    assert zarr.open_group(fs.get_mapper(""), mode="r")["v"].shape == (6, 4)
    _write(tmp_path / "b.nc", 3, 2.0)  # falls between the two in time
    state = fs.refresh()
    assert len(state.files) == 3
    assert sorted(_names(scans)) == ["a.nc", "b.nc", "c.nc"], "only the new file is scanned again"
    assert zarr.open_group(fs.get_mapper(""), mode="r")["v"].shape == (9, 4)
    _assert_equals_mfdataset(fs, tmp_path)


def test_changed_and_deleted_files(tmp_path, scans):
    for i in range(3):
        _write(tmp_path / f"f{i}.nc", 3 * i, float(i))
    fs = _store(tmp_path)
    fs.ls("")
    time.sleep(0.01)
    _write(tmp_path / "f1.nc", 3, 9.0, steps=2)  # rewritten: other values, shorter
    (tmp_path / "f2.nc").unlink()
    fs.refresh()
    assert _names(scans).count("f1.nc") == 2 and _names(scans).count("f0.nc") == 1
    _assert_equals_mfdataset(fs, tmp_path)


def test_listing_ttl_refreshes_on_access(tmp_path, scans):
    _write(tmp_path / "a.nc", 0, 1.0)
    fs = _store(tmp_path, listing_ttl=0.0)
    assert zarr.open_group(fs.get_mapper(""), mode="r")["v"].shape == (3, 4)
    _write(tmp_path / "b.nc", 3, 2.0)
    time.sleep(0.01)
    assert zarr.open_group(fs.get_mapper(""), mode="r")["v"].shape == (6, 4)
    _assert_equals_mfdataset(fs, tmp_path)


def test_without_ttl_the_listing_is_kept(tmp_path, scans):
    _write(tmp_path / "a.nc", 0, 1.0)
    fs = _store(tmp_path)
    fs.ls("")
    _write(tmp_path / "b.nc", 3, 2.0)
    assert zarr.open_group(fs.get_mapper(""), mode="r")["v"].shape == (3, 4)
    assert _names(scans) == ["a.nc"]


class TestStaleReads:
    """A file rewritten or deleted after its scan is never read at its old offsets."""

    def test_rewritten_file_raises_then_refresh_serves_new_values(self, tmp_path, scans):
        from fsspec_virtual import StaleSourceError

        _write(tmp_path / "a.nc", 0, 1.0)
        _write(tmp_path / "b.nc", 3, 2.0)
        fs = _store(tmp_path)
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        before = group["v"][...]
        time.sleep(0.01)
        # other values and another layout (contiguous, compressed): old offsets are garbage
        ds = xr.open_dataset(tmp_path / "b.nc").load()
        ds["v"] = ds["v"] * 0 + 42
        (tmp_path / "b.nc").unlink()
        ds.to_netcdf(tmp_path / "b.nc", encoding={"v": {"zlib": True, "contiguous": False}})
        with pytest.raises(StaleSourceError, match=r"b\.nc"):
            group["v"][...]
        np.testing.assert_array_equal(group["v"][:3], before[:3])  # a.nc is unchanged
        fs.refresh()
        _assert_equals_mfdataset(fs, tmp_path)

    def test_deleted_file_is_an_error_not_fill_values(self, tmp_path, scans):
        from fsspec_virtual import StaleSourceError

        _write(tmp_path / "a.nc", 0, 1.0)
        _write(tmp_path / "b.nc", 3, 2.0)
        fs = _store(tmp_path)
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        (tmp_path / "b.nc").unlink()
        with pytest.raises(StaleSourceError, match="no longer exists"):
            group["v"][...]

    def test_rewritten_file_read_through_h5py(self, tmp_path, scans):
        import h5py

        from fsspec_virtual import StaleSourceError

        path = tmp_path / "lzf.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("v", data=np.arange(20.0), chunks=(5,), compression="lzf")
        fs = VirtualZarrFileSystem(str(path), cache=False, skip_instance_cache=True)
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        np.testing.assert_array_equal(group["v"][...], np.arange(20.0))
        time.sleep(0.01)
        with h5py.File(path, "w") as f:
            f.create_dataset("v", data=-np.arange(30.0), chunks=(7,), compression="lzf")
        with pytest.raises(StaleSourceError, match=r"lzf\.h5"):
            group["v"][...]


def test_a_client_opened_before_a_refresh_reads_its_snapshot_or_raises(tmp_path, scans):
    """A rewritten file with another chunking and values: an array opened before the
    refresh never reads the new bytes under its old layout. It reads its own snapshot: the
    unchanged file as before, the rewritten one raises StaleSourceError (never fill values);
    a store opened after the refresh reads the new values."""
    _write(tmp_path / "a.nc", 0, 1.0)
    _write(tmp_path / "b.nc", 3, 2.0)
    fs = _store(tmp_path)
    opened_before = zarr.open_group(fs.get_mapper(""), mode="r")["v"]
    before = opened_before[...]
    assert opened_before.chunks == (1, 4)
    time.sleep(0.01)
    ds = xr.open_dataset(tmp_path / "a.nc").load()
    ds["v"] = ds["v"] + 40
    (tmp_path / "a.nc").unlink()
    ds.to_netcdf(tmp_path / "a.nc", encoding={"v": {"chunksizes": (3, 2), "zlib": True}})
    fs.refresh()
    np.testing.assert_array_equal(opened_before[3:], before[3:])  # b.nc: unchanged
    with pytest.raises(StaleSourceError, match=r"a\.nc"):
        opened_before[:3]
    _assert_equals_mfdataset(fs, tmp_path)


def test_a_refresh_that_cannot_combine_keeps_the_last_good_snapshot(tmp_path, scans):
    from fsspec_virtual import IncompatibleSourcesError

    a, b = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "b.nc", 3, 2.0)
    fs = _store(tmp_path)
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    before = group["v"][...]
    bad = xr.open_dataset(a).load()
    bad = bad.assign_coords(time=bad.time + np.timedelta64(30, "D"), x=np.arange(4.0) + 0.5)
    bad.to_netcdf(tmp_path / "c.nc")  # another x: cannot share the store's labels
    with pytest.raises(IncompatibleSourcesError, match="'x'"):
        fs.refresh()
    np.testing.assert_array_equal(zarr.open_group(fs.get_mapper(""), mode="r")["v"][...], before)
    np.testing.assert_array_equal(group["v"][...], before)
    (tmp_path / "c.nc").unlink()
    assert not fs.refresh()  # at rest again: the same files as the last good snapshot
    with xr.open_mfdataset([a, b]) as truth:
        np.testing.assert_array_equal(before, truth["v"].values)
