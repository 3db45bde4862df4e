"""An opened store is a snapshot: it never changes meaning, and no read crosses versions.

Each test here was a way to be served wrong data silently: an open dataset after a refresh,
two stores batched over one rewritten file, a 206 for another range, a server without
ETags, a local file rewritten with its mtime restored, scan-cache entries copied or edited.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import shutil
import time
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import local_dask_cluster, write_steps
from servers import serve_directory

import fsspec_virtual.state as state_module
from fsspec_virtual import (
    SourceReadError,
    StaleSourceError,
    UnversionedSourceWarning,
    VirtualZarrFileSystem,
)
from fsspec_virtual.scan_cache import (
    CorruptCacheEntryWarning,
    ScanCache,
    decode_entry,
    encode_entry,
)

_write = write_steps


def _store(source: str | Path, **kwargs) -> VirtualZarrFileSystem:
    options = {"concat_dim": "time", "cache": False, "max_workers": 1, **kwargs}
    return VirtualZarrFileSystem(str(source), **options)


def _truth(*paths: Path) -> np.ndarray:
    with xr.open_mfdataset(sorted(paths)) as ds:
        return ds["v"].values


def _rewrite_keeping_stat(path: Path, value: float) -> None:
    """Other values at the same size, with atime and mtime put back as they were."""
    before = path.stat()
    start = int(xr.open_dataset(path).time.values[0].astype("datetime64[D]").astype(int) - 10957)
    tmp = path.with_suffix(".tmp")
    _write(tmp, start, value)
    assert tmp.stat().st_size == before.st_size
    path.write_bytes(tmp.read_bytes())  # in place: same inode
    tmp.unlink()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.fixture(autouse=True)
def _fresh_states():
    state_module.clear_states()
    yield
    state_module.clear_states()


class TestOpenObjectsKeepTheirSnapshot:
    @pytest.mark.parametrize("zarr_format", [2, 3])
    def test_refresh_inserting_a_file_mid_axis(self, tmp_path, zarr_format):
        a, c = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "c.nc", 6, 3.0)
        fs = _store(tmp_path, zarr_format=zarr_format)
        ds = xr.open_zarr(fs.get_mapper(""), zarr_format=zarr_format)
        group = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=zarr_format)
        b = _write(tmp_path / "b.nc", 3, 2.0)
        fs.refresh()
        before = _truth(a, c)
        np.testing.assert_array_equal(ds["v"].values, before)  # not day 3 under day 6's label
        np.testing.assert_array_equal(group["v"][...], before)
        with xr.open_zarr(fs.get_mapper(""), zarr_format=zarr_format) as now:
            np.testing.assert_array_equal(now["v"].values, _truth(a, b, c))

    def test_listing_ttl_moves_the_store_not_the_datasets_opened_on_it(self, tmp_path):
        a, c = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "c.nc", 6, 3.0)
        fs = _store(tmp_path, listing_ttl=0.0)
        ds = xr.open_zarr(fs.get_mapper(""))
        assert ds.sizes["time"] == 6
        b = _write(tmp_path / "b.nc", 3, 2.0)
        time.sleep(0.01)
        assert fs.info("v/.zarray")["size"] > 0  # an access past the TTL lists again
        assert len(fs.collection().files) == 3
        np.testing.assert_array_equal(ds["v"].values, _truth(a, c))
        with xr.open_zarr(fs.get_mapper("")) as now:
            np.testing.assert_array_equal(now["v"].values, _truth(a, b, c))

    @pytest.mark.parametrize("zarr_format", [2, 3])
    def test_deleted_file_raises_never_fill_values(self, tmp_path, zarr_format):
        a, c = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "c.nc", 6, 3.0)
        fs = _store(tmp_path, zarr_format=zarr_format)
        group = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=zarr_format)
        c.unlink()
        fs.refresh()
        np.testing.assert_array_equal(group["v"][:3], _truth(a))
        with pytest.raises(StaleSourceError, match=r"c\.nc"):
            group["v"][3:]

    def test_json_and_pickle_carry_the_snapshot(self, tmp_path):
        a, c = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "c.nc", 6, 3.0)
        fs = _store(tmp_path)
        fs.ls("")
        as_json, pickled = fs.to_json(), pickle.dumps(fs)
        other = _store(tmp_path)
        _write(tmp_path / "b.nc", 3, 2.0)
        other.refresh()  # the collection's current snapshot moves on
        for copy in (fsspec.AbstractFileSystem.from_json(as_json), pickle.loads(pickled)):
            assert copy.collection().id == fs.collection().id
            group = zarr.open_group(copy.get_mapper(""), mode="r")
            np.testing.assert_array_equal(group["v"][...], _truth(a, c))
        assert _store(tmp_path).collection().id == other.collection().id

    def test_unknown_snapshot_is_stale_not_another_one(self, tmp_path):
        _write(tmp_path / "a.nc", 0, 1.0)
        fs = _store(tmp_path, snapshot="s" + "0" * 40)
        with pytest.raises(StaleSourceError, match="snapshot"):
            fs.ls("")

    @pytest.mark.parametrize("cache", [True, False])
    def test_dask_worker_in_another_process_reads_the_opened_snapshot(self, tmp_path, cache):
        a, _c = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "c.nc", 6, 3.0)
        options = {"cache": cache, "cache_dir": str(tmp_path / "cache")}
        fs = _store(tmp_path / "*.nc", **options)
        ds = xr.open_zarr(fs.get_mapper(""), chunks={"time": 1})
        _write(tmp_path / "b.nc", 3, 2.0)
        (tmp_path / "c.nc").unlink()
        _write(tmp_path / "c.nc", 6, 3.0)  # rewritten: the old snapshot cannot be read whole
        fs.refresh()
        with local_dask_cluster(1):  # a worker with none of this process's snapshots
            if cache:  # the worker finds the snapshot in the scan cache
                np.testing.assert_array_equal(ds["v"][:3].compute().values, _truth(a))
            else:  # it cannot rebuild it: the listing has changed since
                with pytest.raises(StaleSourceError, match="snapshot"):
                    ds["v"][:3].compute()
            with pytest.raises(StaleSourceError):
                ds["v"][3:].compute()

    def test_dask_worker_reads_an_unchanged_old_snapshot_from_the_cache(self, tmp_path):
        a, c = _write(tmp_path / "a.nc", 0, 1.0), _write(tmp_path / "c.nc", 6, 3.0)
        fs = _store(tmp_path / "*.nc", cache=True, cache_dir=str(tmp_path / "cache"))
        ds = xr.open_zarr(fs.get_mapper(""), chunks={"time": 1})
        _write(tmp_path / "b.nc", 3, 2.0)
        fs.refresh()
        with local_dask_cluster(1):  # a worker with none of this process's snapshots
            np.testing.assert_array_equal(ds["v"].compute().values, _truth(a, c))

    def test_dask_worker_reads_a_collection_numbered_by_callables(self, tmp_path):
        """A lambda or a partial pickled to another process has other code bytes: the
        snapshot is known there by what the callables return, not by their code."""
        import functools
        import re

        paths = [_write(tmp_path / f"m_r{member}i1.nc", 0, float(member)) for member in (1, 2)]

        def number(pattern, path):
            return int(re.search(pattern, path)[1])

        for member_of in (
            lambda path: int(re.search(r"_r(\d+)i", path)[1]),
            functools.partial(number, r"_r(\d+)i"),
        ):
            state_module.clear_states()
            fs = fsspec.filesystem(
                "virtualzarr",
                path=str(tmp_path / "*.nc"),
                combine="nested",
                concat_dim="member",
                coords_from_path={"member": member_of},
                cache=False,
            )
            ds = xr.open_zarr(fs.get_mapper(""), chunks={"member": 1})
            with local_dask_cluster(1):  # a worker with none of this process's snapshots
                served = ds["v"].compute().values
            np.testing.assert_array_equal(served, np.stack([_truth(p) for p in paths]))
            assert list(ds["member"].values) == [1, 2]


class TestVersionsAreChecked:
    def test_two_stores_batched_over_one_rewritten_file(self, tmp_path):
        a = _write(tmp_path / "a.nc", 0, 1.0)
        old = _store(a)
        old_id = old.collection().id
        time.sleep(0.01)
        (tmp_path / "a.nc").unlink()
        _write(a, 0, 5.0)
        new = _store(a)
        new_id = new.refresh().snapshot.id
        assert new_id != old_id

        async def both() -> list:
            first = _store(a, snapshot=new_id, asynchronous=True)
            second = _store(a, snapshot=old_id, asynchronous=True)
            return await asyncio.gather(
                first._cat_file("v/0.0"), second._cat_file("v/0.0"), return_exceptions=True
            )

        fresh, stale = asyncio.run(both())
        assert isinstance(stale, StaleSourceError), stale
        np.testing.assert_array_equal(np.frombuffer(fresh, "<f4"), _truth(a)[0])

    def test_local_rewrite_with_restored_mtime(self, tmp_path):
        a = _write(tmp_path / "a.nc", 0, 1.0)
        fs = _store(a, cache=True, cache_dir=str(tmp_path / "cache"))
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        np.testing.assert_array_equal(group["v"][...], _truth(a))
        _rewrite_keeping_stat(a, 7.0)
        with pytest.raises(StaleSourceError, match=r"a\.nc"):
            group["v"][...]
        state_module.clear_states()  # as a new process: the scan cache must not answer
        again = _store(a, cache=True, cache_dir=str(tmp_path / "cache"))
        np.testing.assert_array_equal(
            zarr.open_group(again.get_mapper(""), mode="r")["v"][...], _truth(a)
        )
        assert _truth(a)[0, 0] == 7.0


class TestLocalReadsAreCheckedAfterwardsToo:
    def test_a_write_during_the_read_is_refused(self, tmp_path, monkeypatch):
        """A rewrite landing between the check before a read and its end: the fstat after
        the read sees it (a write changes ctime before its bytes show)."""
        import fsspec_virtual.access.adapters as adapters

        a = _write(tmp_path / "a.nc", 0, 1.0)
        array = zarr.open_group(_store(a).get_mapper(""), mode="r")["v"]
        real_pread = os.pread

        def pread_then_overwrite(fd: int, n: int, offset: int) -> bytes:
            data = real_pread(fd, n, offset)
            with open(a, "r+b") as f:  # another process writing, in place
                f.seek(offset)
                f.write(bytes(n))
            return data

        monkeypatch.setattr(adapters.os, "pread", pread_then_overwrite)
        with pytest.raises(StaleSourceError, match=r"a\.nc"):
            array[0]


class TestHTTPAnswersAreChecked:
    def _open(self, server, name: str) -> zarr.Array:
        fs = _store(f"{server.url}/{name}")
        return zarr.open_group(fs.get_mapper(""), mode="r")["v"]

    def _assert_rewrite_refused(self, tmp_path: Path, **server_options: object) -> None:
        """Open a.nc on a server behaving as ``server_options`` say, rewrite it at the same
        size with its mtime moved on (whole seconds: Last-Modified's resolution): reading
        the array opened before must raise, never serve the new bytes."""
        a = _write(tmp_path / "a.nc", 0, 1.0)
        with serve_directory(tmp_path) as server:
            for name, value in server_options.items():
                setattr(server, name, value)
            array = self._open(server, "a.nc")
            np.testing.assert_array_equal(array[...], _truth(a))
            stat = a.stat()
            _rewrite_keeping_stat(a, 9.0)
            os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
            with pytest.raises(StaleSourceError, match=r"a\.nc"):
                array[...]

    def test_206_for_another_range(self, tmp_path):
        a = _write(tmp_path / "a.nc", 0, 1.0)
        with serve_directory(tmp_path) as server:
            array = self._open(server, "a.nc")
            server.shift_ranges = 16
            with pytest.raises(SourceReadError, match="answered bytes"):
                array[...]
            server.shift_ranges = 0
            np.testing.assert_array_equal(array[...], _truth(a))

    @pytest.mark.parametrize("honoured", [True, False])
    def test_no_etag_rewrite_at_same_size(self, tmp_path, honoured):
        self._assert_rewrite_refused(tmp_path, etags=False, honour_if_unmodified_since=honoured)

    def test_etag_left_off_range_answers_by_a_server_ignoring_if_match(self, tmp_path):
        self._assert_rewrite_refused(tmp_path, etags_on_get=False, honour_if_match=False)

    def test_a_weak_etag_only_on_head_answers_is_looked_up_after_the_reads(self, tmp_path):
        """A weak ETag (no If-Match can use it) that GET answers leave off, and no
        Last-Modified: nothing in an answer tells a rewrite, so the file is looked up after
        each batch of reads."""
        self._assert_rewrite_refused(
            tmp_path, weak_etags=True, etags_on_get=False, last_modified=False
        )

    def test_a_server_without_any_version_is_said_to_be_blind(self, tmp_path):
        _write(tmp_path / "a.nc", 0, 1.0)
        with serve_directory(tmp_path) as server:
            server.etags = server.last_modified = False
            with pytest.warns(UnversionedSourceWarning, match="a.nc"):
                self._open(server, "a.nc")


class TestScanCacheEntriesAreBound:
    def _entries(self, root: Path) -> dict[str, Path]:
        return {p.stem: p for p in root.rglob("*.scan")}

    def _open(self, directory: Path, cache_dir: Path, **kwargs) -> VirtualZarrFileSystem:
        return _store(directory / "*.nc", cache=True, cache_dir=str(cache_dir), **kwargs)

    def _per_file_keys(self, fs: VirtualZarrFileSystem) -> list[str]:
        from fsspec_virtual.scan import SCANNER_VERSION
        from fsspec_virtual.state import SCAN_READS

        cache = fs._scan_cache
        assert cache is not None
        spec = fs._spec
        return [
            cache.key(spec.source_identity, f, SCAN_READS, SCANNER_VERSION)
            for f in fs.collection().files
        ]

    def _drop_snapshot_entries(self, cache_dir: Path) -> None:
        for path in cache_dir.rglob("s*.scan"):
            path.unlink()

    def test_entry_copied_over_another_files_key(self, tmp_path):
        data, cache_dir = tmp_path / "data", tmp_path / "cache"
        data.mkdir()
        a, b = _write(data / "a.nc", 0, 1.0), _write(data / "b.nc", 3, 2.0)
        key_a, key_b = self._per_file_keys(self._open(data, cache_dir))
        entries = self._entries(cache_dir)
        shutil.copyfile(entries[key_a], entries[key_b])
        self._drop_snapshot_entries(cache_dir)
        state_module.clear_states()
        with pytest.warns(CorruptCacheEntryWarning, match="another key"):
            fs = self._open(data, cache_dir)
            values = zarr.open_group(fs.get_mapper(""), mode="r")["v"][...]
        np.testing.assert_array_equal(values, _truth(a, b))

    def test_entry_edited_to_name_a_file_outside_the_collection(self, tmp_path):
        data, cache_dir = tmp_path / "data", tmp_path / "cache"
        data.mkdir()
        a = _write(data / "a.nc", 0, 1.0)
        secret = tmp_path / "secret.bin"
        secret.write_bytes(b"PRIVATE!" * 1000)
        (key,) = self._per_file_keys(self._open(data, cache_dir))
        path = self._entries(cache_dir)[key]
        manifest, coords, messages, own_key, files = decode_entry(path.read_bytes())
        from dataclasses import replace

        forged = replace(manifest, urls=(str(secret),))
        path.write_bytes(encode_entry(forged, coords, messages, own_key, files))
        self._drop_snapshot_entries(cache_dir)
        state_module.clear_states()
        with pytest.warns(CorruptCacheEntryWarning, match="not made from"):
            fs = self._open(data, cache_dir)
            raw = fs.cat_file("v/0.0")
        assert b"PRIVATE" not in raw
        np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), _truth(a)[0])

    def _snapshot_entry(self, cache_dir: Path) -> Path:
        (path,) = cache_dir.rglob("s*.scan")
        return path

    def test_snapshot_entry_copied_over_another_collections_key(self, tmp_path):
        cache_dir = tmp_path / "cache"
        runs = []
        for run, start in (("x", 0), ("y", 100)):
            (tmp_path / run).mkdir()
            runs.append(
                [_write(tmp_path / run / f"{i}.nc", start + 3 * i, start + i) for i in (0, 1)]
            )
            state_module.clear_states()
            self._open(tmp_path / run, tmp_path / run / "cache").collection()
        x_entry = self._snapshot_entry(tmp_path / "x" / "cache")
        y_entry = self._snapshot_entry(tmp_path / "y" / "cache")
        shutil.copytree(tmp_path / "y" / "cache", cache_dir)
        shutil.copyfile(x_entry, cache_dir / y_entry.relative_to(tmp_path / "y" / "cache"))
        state_module.clear_states()
        with pytest.warns(CorruptCacheEntryWarning, match="another key"):
            fs = self._open(tmp_path / "y", cache_dir)
            values = zarr.open_group(fs.get_mapper(""), mode="r")["v"][...]
        np.testing.assert_array_equal(values, _truth(*runs[1]))

    def test_snapshot_entry_bound_to_other_versions_is_not_used(self, tmp_path):
        data, cache_dir = tmp_path / "data", tmp_path / "cache"
        data.mkdir()
        a, b = _write(data / "a.nc", 0, 1.0), _write(data / "b.nc", 3, 2.0)
        self._open(data, cache_dir).collection()
        path = self._snapshot_entry(cache_dir)
        manifest, coords, messages, own_key, files = decode_entry(path.read_bytes())
        from dataclasses import replace

        # each file's chunks read from the other, under a binding one nanosecond off: a
        # consistent entry (its checksum is right) of a listing that is not this one
        swapped = replace(manifest, urls=manifest.urls[::-1])
        files[0][1][1] += 1
        path.write_bytes(encode_entry(swapped, coords, messages, own_key, files))
        state_module.clear_states()
        fs = self._open(data, cache_dir)
        values = zarr.open_group(fs.get_mapper(""), mode="r")["v"][...]
        np.testing.assert_array_equal(values, _truth(a, b))

    def test_cache_secret_refuses_unsigned_entries(self, tmp_path):
        data, cache_dir = tmp_path / "data", tmp_path / "cache"
        data.mkdir()
        a = _write(data / "a.nc", 0, 1.0)
        self._open(data, cache_dir).ls("")  # written without a secret (or by someone else)
        state_module.clear_states()
        with pytest.warns(CorruptCacheEntryWarning, match="signature"):
            fs = self._open(data, cache_dir, cache_secret="team-secret")
            fs.ls("")
        np.testing.assert_array_equal(
            zarr.open_group(fs.get_mapper(""), mode="r")["v"][...], _truth(a)
        )
        state_module.clear_states()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # signed entries are read back as they are
            signed = self._open(data, cache_dir, cache_secret="team-secret")
            assert len(signed.collection().files) == 1

    def test_secret_is_not_an_argument_of_the_cache_key(self, tmp_path):
        cache = ScanCache(str(tmp_path), secret="x")
        assert cache._secret == b"x"


class TestSourcesAreToldApart:
    def _runs(self, tmp_path: Path) -> list[Path]:
        """Two directories of files alike in name, size and mtime, unlike in content."""
        runs = []
        for run, start in (("runA", 0), ("runB", 100)):
            directory = tmp_path / run
            directory.mkdir()
            for i in range(2):
                path = _write(directory / f"f{i}.nc", start + 3 * i, float(start + i))
                os.utime(path, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
            runs.append(directory)
        return runs

    def test_dir_roots_share_no_cache_entries(self, tmp_path):
        """target_protocol="dir": the root lives in target_options, and a file's version
        is only its size and mtime there."""
        cache_dir = str(tmp_path / "cache")
        for run in self._runs(tmp_path):
            state_module.clear_states()  # each as a new process
            fs = _store(
                "",
                target_protocol="dir",
                target_options={"path": str(run)},
                cache=True,
                cache_dir=cache_dir,
            )
            with xr.open_zarr(fs.get_mapper("")) as ours:
                np.testing.assert_array_equal(ours["v"].values, _truth(*run.glob("*.nc")))


class TestRegistryIsBounded:
    def test_many_collections_keep_few_snapshots(self, tmp_path):
        for i in range(3 * state_module.MAX_SNAPSHOTS):
            directory = tmp_path / f"d{i}"
            directory.mkdir()
            _write(directory / "a.nc", 0, float(i))
            fs = _store(directory)
            assert fs.cat_file("v/0.0")
            del fs
        gc.collect()
        registry = state_module._registry
        assert len(registry._recent) <= state_module.MAX_SNAPSHOTS
        assert len(registry._current) <= state_module.MAX_SNAPSHOTS
        assert len(registry._alive) <= state_module.MAX_SNAPSHOTS
