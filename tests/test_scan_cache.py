"""The persistent scan cache: reopen without rescanning, never reuse a stale or torn entry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import fsspec_virtual.state as state_module
from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual.scan_cache import CorruptCacheEntryWarning, decode_entry, encode_entry


def _write(path: Path, start: int, value: float = 0.0, steps: int = 3) -> Path:
    times = np.arange(start, start + steps, dtype="f8")
    ds = xr.Dataset(
        {"v": (("time", "x"), np.full((steps, 5), value, dtype="f4") + np.arange(5, dtype="f4"))},
        coords={"time": ("time", times, {"units": "days since 2000-01-01"})},
    )
    ds.to_netcdf(path, encoding={"v": {"zlib": True, "chunksizes": (1, 5)}})
    return path


@pytest.fixture
def scans(scan_calls):
    return scan_calls


def _open(directory: Path, cache_dir: Path, **kwargs) -> VirtualZarrFileSystem:
    return VirtualZarrFileSystem(
        str(directory),
        concat_dim="time",
        cache_dir=str(cache_dir),
        skip_instance_cache=True,
        max_workers=1,
        **kwargs,
    )


def _values(fs: VirtualZarrFileSystem) -> np.ndarray:
    with xr.open_zarr(fs.get_mapper("")) as ds:
        return ds["v"].values


def test_reopen_scans_nothing(tmp_path, scans):
    data = tmp_path / "data"
    data.mkdir()
    paths = [_write(data / f"f{i}.nc", 3 * i, value=i) for i in range(3)]
    first = _values(_open(data, tmp_path / "cache"))
    assert len(scans) == 3
    state_module.clear_states()  # as a new process would start
    again = _values(_open(data, tmp_path / "cache"))
    assert len(scans) == 3, "the second open scanned again"
    np.testing.assert_array_equal(again, first)
    with xr.open_mfdataset(paths) as truth:
        np.testing.assert_array_equal(again, truth["v"].values)


def test_reopened_snapshot_holds_each_path_once(tmp_path, scans):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        _write(data / f"f{i}.nc", 3 * i, value=i)
    built = _open(data, tmp_path / "cache").collection()
    state_module.clear_states()
    reopened = _open(data, tmp_path / "cache").collection()
    assert len(scans) == 3
    assert reopened.id == built.id
    assert reopened.manifest.urls == built.manifest.urls
    paths = {f.path: f.path for f in reopened.files}
    # the URL table shares the files' strings: memory per file counts at 10,000 files
    assert all(url is paths[url] for url in reopened.manifest.urls)


def test_changed_file_is_rescanned(tmp_path, scans):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "a.nc", 0, value=1)
    _write(data / "b.nc", 3, value=2)
    _values(_open(data, tmp_path / "cache"))
    time.sleep(0.01)
    _write(data / "b.nc", 3, value=7, steps=4)  # other values, other size and mtime
    state_module.clear_states()
    served = _values(_open(data, tmp_path / "cache"))
    assert scans.count(str(data / "b.nc")) == 2 and scans.count(str(data / "a.nc")) == 1
    with xr.open_mfdataset([data / "a.nc", data / "b.nc"]) as truth:
        np.testing.assert_array_equal(served, truth["v"].values)


def test_corrupt_entry_is_discarded_and_rebuilt(tmp_path, scans):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "a.nc", 0, value=1)
    expected = _values(_open(data, tmp_path / "cache"))
    entries = list((tmp_path / "cache").rglob("*.scan"))
    assert len(entries) == 2  # the file's scan, and the combined collection
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:-40])  # torn
    state_module.clear_states()
    with pytest.warns(CorruptCacheEntryWarning, match="unusable"):
        served = _values(_open(data, tmp_path / "cache"))
    np.testing.assert_array_equal(served, expected)
    assert len(scans) == 2
    for entry in entries:
        decode_entry(entry.read_bytes())  # rebuilt intact


def test_cache_false_writes_nothing(tmp_path, scans):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "a.nc", 0)
    _values(_open(data, tmp_path / "cache", cache=False))
    assert not (tmp_path / "cache").exists()


def test_entries_round_trip_computed_and_inline_arrays(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "lzf", data=np.arange(40.0).reshape(8, 5), chunks=(2, 5), compression="lzf"
        )
        f["text"] = np.array(["a", "bb"], dtype=h5py.string_dtype())
        f["scalar"] = np.float64(2.5)  # 0-d grids once came back 1-d (a corrupt entry)
    fs = VirtualZarrFileSystem(str(path), cache=False, skip_instance_cache=True)
    manifest = fs.collection().manifest
    coords = {"lzf": np.arange(3), "scalar": np.float64(1.0)}
    back, back_coords, messages, _, _ = decode_entry(encode_entry(manifest, coords, ["m"]))
    assert messages == ["m"] and np.array_equal(back_coords["lzf"], coords["lzf"])
    assert back_coords["scalar"].shape == ()
    assert back.urls == manifest.urls and back.groups == manifest.groups
    for name, array in manifest.arrays.items():
        other = back.arrays[name]
        assert other.meta == array.meta, name
        for field in ("file_id", "offset", "length"):
            assert np.array_equal(getattr(other.grid, field), getattr(array.grid, field))
        assert other.grid.inline == array.grid.inline
        assert (other.plan is None) == (array.plan is None)
        if array.plan is not None:
            assert other.plan.reason == array.plan.reason
            assert [p.h5path for p in other.plan.parts] == [p.h5path for p in array.plan.parts]


def test_two_processes_fill_one_cache(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    paths = [_write(data / f"f{i:02d}.nc", 3 * i, value=i) for i in range(12)]
    cache = tmp_path / "shared-cache"
    code = (
        "import sys, xarray as xr, fsspec_virtual\n"
        "fs = fsspec_virtual.VirtualZarrFileSystem(sys.argv[1], concat_dim='time', "
        "cache_dir=sys.argv[2], max_workers=1)\n"
        "print(float(xr.open_zarr(fs.get_mapper(''))['v'].sum()))\n"
    )
    env = {**os.environ}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(data), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    with xr.open_mfdataset(paths) as truth:
        expected = float(truth["v"].sum())
    assert [float(out) for out, _ in outputs] == [expected, expected]
    entries = list(cache.rglob("*.scan"))
    # one entry per file, and one for the combined collection
    assert len(entries) == 13 and not list(cache.rglob("*.tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for entry in entries:
            decode_entry(entry.read_bytes())
