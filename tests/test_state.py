"""Laziness and sharing: construction does no I/O; one scan serves every instance."""

from __future__ import annotations

import pickle

import fsspec
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import fsspec_virtual.scheduling as scheduling
import fsspec_virtual.state as state_module
from fsspec_virtual import NoSourceFilesError, VirtualZarrFileSystem


@pytest.fixture
def collection(tmp_path):
    for day in range(3):
        times = pd.date_range(f"2001-01-0{day + 1}", periods=4, freq="6h")
        ds = xr.Dataset(
            {"t2m": (("time", "x"), np.random.default_rng(day).random((4, 50), dtype="f4"))},
            coords={"time": times},
        )
        ds.to_netcdf(tmp_path / f"day{day}.nc", encoding={"t2m": {"chunksizes": (2, 10)}})
    return tmp_path


@pytest.fixture
def scan_counter(scan_calls):
    return scan_calls


class TestLaziness:
    def test_construction_does_no_io(self, tmp_path, scan_counter):
        fs = VirtualZarrFileSystem(str(tmp_path / "does-not-exist"), concat_dim="time")
        assert scan_counter == []
        with pytest.raises(NoSourceFilesError, match="does-not-exist"):
            fs.ls("")

    def test_one_scan_serves_every_instance(self, collection, scan_counter):
        kwargs = {"path": str(collection), "concat_dim": "time"}
        fs1 = fsspec.filesystem("virtualzarr", **kwargs)
        xr.open_zarr(fs1.get_mapper("")).load()
        assert len(scan_counter) == 3
        fs2 = fsspec.filesystem("virtualzarr", skip_instance_cache=True, **kwargs)
        assert fs2 is not fs1
        zarr.open_group(fs2.get_mapper(""), mode="r")["t2m"][...]
        xr.open_zarr(
            f"virtualzarr::{collection}", storage_options={"virtualzarr": {"concat_dim": "time"}}
        ).load()
        assert len(scan_counter) == 3

    def test_pickle_holds_arguments_not_the_manifest(self, collection, scan_counter):
        fs = VirtualZarrFileSystem(str(collection), concat_dim="time", skip_instance_cache=True)
        fs.ls("")
        blob = pickle.dumps(fs)
        assert len(blob) < 2000
        clone = pickle.loads(blob)
        assert clone.cat_file("t2m/0.0") == fs.cat_file("t2m/0.0")
        assert len(scan_counter) == 3

    def test_none_arguments_survive_zarrs_json_round_trip(self, collection, scan_counter):
        fs = VirtualZarrFileSystem(
            str(collection),
            concat_dim="time",
            target_options=None,
            target_protocol=None,
            skip_instance_cache=True,
        )
        assert "t2m" in zarr.open_group(fs.get_mapper(""), mode="r")

    def test_json_round_trip(self, collection, scan_counter):
        fs = VirtualZarrFileSystem(str(collection), concat_dim="time", skip_instance_cache=True)
        clone = fsspec.AbstractFileSystem.from_json(fs.to_json())
        assert isinstance(clone, VirtualZarrFileSystem)
        assert clone.cat_file("t2m/.zarray") == fs.cat_file("t2m/.zarray")


class TestParallelScan:
    def test_process_pool_gives_the_same_store(self, collection, scan_counter, monkeypatch):
        serial = VirtualZarrFileSystem(str(collection), concat_dim="time", max_workers=1)
        expected = {k: serial.cat_file(k) for k in serial.find("")}
        state_module.clear_states()
        monkeypatch.setattr(scheduling, "POOL_MIN_FILES", 2)
        parallel = VirtualZarrFileSystem(
            str(collection), concat_dim="time", max_workers=2, skip_instance_cache=True
        )
        assert {k: parallel.cat_file(k) for k in parallel.find("")} == expected
        # the workers scanned: this process's scan_file ran only for the serial store
        assert len(scan_counter) == 3


def test_report_from_a_thread_running_an_event_loop(collection, scan_counter):
    """As in a notebook: a loop runs in the calling thread while the store scans."""
    import asyncio

    async def cell():
        fs = VirtualZarrFileSystem(str(collection), concat_dim="time", skip_instance_cache=True)
        return fs.report()

    report = asyncio.run(cell())
    assert {v.path: v.how for v in report.variables}["t2m"] == "passthrough"
    assert len(scan_counter) == 3
