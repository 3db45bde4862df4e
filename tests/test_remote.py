"""Remote sources, against real servers on 127.0.0.1: HTTP (aiohttp) and S3 (moto).

The truth is always the same files read locally with netCDF4 / ``xr.open_mfdataset``;
request counts are taken on the server side.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import local_dask_cluster, write_series, write_simple, write_truncated
from oracle import ZARR_FORMATS, assert_store_matches, open_truth
from servers import HTTPServer, S3Server, serve_directory, serve_s3

import fsspec_virtual.state as state_module
from fsspec_virtual import (
    NoSourceFilesError,
    RangeNotSupportedError,
    ScanError,
    SkippedFileWarning,
    SourceReadError,
    StaleSourceError,
)

TIMES = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def virtual(path: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("concat_dim", "time")
    kwargs.setdefault("skip_instance_cache", True)
    return fsspec.filesystem("virtualzarr", path=path, **kwargs)


def check(fs: Any, paths: list[Path]) -> None:
    expected = open_truth(paths)
    expected_raw = open_truth(paths, decode_cf=False)
    assert_store_matches(fs, expected, expected_raw)


def refused_then_skipped(url: str, error: type[Exception], name: str, why: str = "") -> Any:
    """A store over ``url`` fails with ``error`` naming the file ``name`` (and ``why``);
    with ``on_error="skip"`` the file is left out with a warning naming it. Returns the
    skipping store."""
    pattern = re.escape(name) + (".*" + re.escape(why) if why else "")
    with pytest.raises(error, match=pattern):
        virtual(url, cache=False).cat_file(".zmetadata")
    state_module.clear_states()
    with pytest.warns(SkippedFileWarning, match=re.escape(name)):
        fs = virtual(url, cache=False, on_error="skip")
        fs.cat_file(".zmetadata")
    return fs


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[HTTPServer, list[Path]]]:
    """Three NetCDF4 files (every dtype, gzip + shuffle) served over HTTP with Range."""
    paths = write_series(tmp_path / "www", TIMES)
    state_module.clear_states()
    with serve_directory(tmp_path / "www") as server:
        yield server, paths
    state_module.clear_states()


def _contiguous_chunks_file(path: Path, n_chunks: int = 200) -> Path:
    """One variable of ``n_chunks`` small uncompressed chunks, written in order (so the
    chunks lie back to back in the file)."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", n_chunks)
        nc.createDimension("x", 100)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(n_chunks, dtype="f8")
        v = nc.createVariable("v", "f8", ("time", "x"), chunksizes=(1, 100))
        v[:] = np.arange(n_chunks * 100, dtype="f8").reshape(n_chunks, 100)
    return path


class TestHTTP:
    def test_directory_url(self, served):
        server, paths = served
        check(virtual(f"{server.url}/"), paths)

    def test_glob(self, served):
        server, paths = served
        check(virtual(f"{server.url}/*.nc"), paths)

    def test_list_of_urls(self, served):
        server, paths = served
        check(virtual([f"{server.url}/{p.name}" for p in paths]), paths)
        # no file is ever fetched whole (fsspec's HTTP isdir() would GET it to parse links)
        assert all(h.range for h in server.gets() if h.path.endswith(".nc")), server.hits

    def test_netcdf3_files(self, tmp_path):
        paths = write_series(tmp_path / "www", TIMES, fmt="NETCDF3_64BIT_OFFSET")
        with serve_directory(tmp_path / "www") as server:
            fs = virtual(f"{server.url}/", cache=False)
            check(fs, paths)
            assert fs.report().remote_scans == len(paths)

    def test_chained_url(self, served):
        server, paths = served
        url = f"virtualzarr::{server.url}/*.nc"
        for zarr_format in ZARR_FORMATS:
            options = {"virtualzarr": {"concat_dim": "time", "zarr_format": zarr_format}}
            with xr.open_zarr(url, storage_options=options, zarr_format=zarr_format) as ds:
                served_values = ds["v_float64"].values
            np.testing.assert_array_equal(
                served_values,
                open_truth(paths)["v_float64"].values,
                f"zarr_format={zarr_format}",
                strict=True,
            )

    def test_scan_requests_are_few_and_reported(self, served):
        server, paths = served
        server.reset()
        fs = virtual(f"{server.url}/", cache=False)
        report = fs.report()
        per_file = [h for h in server.hits if h.path]  # not the index page
        # per file: its size and ETag (HEAD), its magic bytes, its metadata and time values
        # through the 2 MiB block cache (one block for files this small)
        assert len(per_file) == 3 * len(paths), server.hits
        assert report.remote_scans == len(paths)
        assert report.requests_per_file == 1
        assert report.scan_cost.bytes == sum(p.stat().st_size for p in paths)
        assert "1.0 per file" in str(report)

    def test_first_blocks_are_fetched_together(self, served):
        """Scans run one at a time, but the files' first blocks are fetched concurrently
        ahead of them: round trips overlap instead of adding up."""
        server, paths = served
        server.delay.update({p.name: 0.2 for p in paths})  # every GET of a file waits
        server.reset()
        fs = virtual(f"{server.url}/", cache=False, max_workers=1)
        assert fs.report().requests_per_file == 1
        assert server.max_in_flight == len(paths)
        server.delay.clear()
        check(fs, paths)

    def test_scan_block_size_is_an_option(self, served):
        server, paths = served
        small_blocks = {"block_size": 4096}
        report = virtual(f"{server.url}/", cache=False, scan_options=small_blocks).report()
        assert report.requests_per_file > 1
        state_module.clear_states()
        # another cache type does not inherit the block cache's options
        readahead = {"cache_type": "readahead", "block_size": 1 << 20}
        fs = virtual(f"{server.url}/", cache=False, scan_options=readahead)
        check(fs, paths)

    def test_contiguous_chunks_are_read_in_few_requests(self, tmp_path):
        (tmp_path / "www").mkdir()
        path = _contiguous_chunks_file(tmp_path / "www" / "c.nc")
        with serve_directory(tmp_path / "www") as server:
            fs = virtual(f"{server.url}/c.nc", concat_dim=None, cache=False)
            group = zarr.open_group(fs.get_mapper(""), mode="r")
            array = group["v"]
            assert array.nchunks == 200
            server.reset()
            values = array[:]
            reads = server.gets("c.nc")
        with netCDF4.Dataset(path) as nc:
            np.testing.assert_array_equal(values, nc["v"][:].data)
        assert len(reads) <= 200 // 10, f"{len(reads)} requests for 200 contiguous chunks"

    def test_merging_limits_are_options(self, tmp_path):
        (tmp_path / "www").mkdir()
        _contiguous_chunks_file(tmp_path / "www" / "c.nc")
        with serve_directory(tmp_path / "www") as server:
            fs = virtual(f"{server.url}/c.nc", concat_dim=None, cache=False, max_block=800)
            array = zarr.open_group(fs.get_mapper(""), mode="r")["v"]
            server.reset()
            array[:]
            # a block of 800 bytes holds one chunk: no merging
            assert len(server.gets("c.nc")) == 200

    def test_server_without_range_support_is_refused(self, tmp_path):
        paths = write_series(tmp_path / "www", TIMES[:2])
        with serve_directory(tmp_path / "www", ranges=False) as server:
            fs = virtual(f"{server.url}/")
            with pytest.raises(RangeNotSupportedError, match=r"part0[01]\.nc.*Range"):
                fs.cat_file(".zmetadata")
        assert paths

    def test_rewritten_file_is_never_read_at_old_offsets(self, served):
        server, paths = served
        fs = virtual(f"{server.url}/", cache=False)
        mapper = fs.get_mapper("")
        zarr.open_group(mapper, mode="r")["v_float64"][:]
        # another chunking and other values, same name: the old offsets are meaningless
        time.sleep(0.01)
        write_series(paths[0].parent, [[100, 101, 102, 103]], names=[paths[1].name], chunk_time=1)
        with pytest.raises(StaleSourceError, match=r"part01\.nc"):
            zarr.open_group(mapper, mode="r")["v_float64"][:]
        fs.refresh()
        check(fs, [paths[0], paths[2], paths[1]])  # in time order: part01 now comes last

    @pytest.mark.parametrize("how", ["weak ETags", "If-Match ignored"])
    def test_rewrite_is_caught_without_if_match(self, served, how):
        """A server with weak ETags (If-Match never matches them, so none is sent) or one
        that ignores If-Match: the answer's own ETag still tells a rewritten file."""
        server, paths = served
        if how == "weak ETags":
            server.weak_etags = True
        else:
            server.honour_if_match = False
        fs = virtual(f"{server.url}/", cache=False)
        check(fs, paths)
        assert all(h.status < 400 for h in server.hits), server.hits
        time.sleep(0.01)
        write_series(paths[0].parent, [[100, 101, 102, 103]], names=[paths[1].name], chunk_time=1)
        with pytest.raises(StaleSourceError, match=r"part01\.nc"):
            zarr.open_group(fs.get_mapper(""), mode="r")["v_float64"][:]

    def test_missing_file_in_index_is_an_error_or_skipped(self, served):
        server, paths = served
        server.missing.add(paths[1].name)
        fs = refused_then_skipped(f"{server.url}/", NoSourceFilesError, "part01.nc")
        check(fs, [paths[0], paths[2]])

    def test_missing_url_in_list(self, served):
        server, paths = served
        urls = [f"{server.url}/{paths[0].name}", f"{server.url}/nothere.nc"]
        with pytest.raises(NoSourceFilesError, match=r"nothere\.nc"):
            virtual(urls, cache=False).cat_file(".zmetadata")

    def test_file_that_cannot_be_scanned(self, served):
        server, paths = served
        write_truncated(paths[0].parent / "zz_broken.nc", paths[0])
        check(refused_then_skipped(f"{server.url}/", ScanError, "zz_broken.nc"), paths)

    def test_connection_dropped_mid_read(self, served):
        server, paths = served
        fs = virtual(f"{server.url}/", cache=False)
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        server.drop.add(paths[2].name)
        with pytest.raises(SourceReadError, match=r"part02\.nc") as raised:
            group["v_float64"][:]
        assert not isinstance(raised.value, FileNotFoundError)  # zarr would fill it
        server.drop.clear()
        np.testing.assert_array_equal(
            group["v_float64"][:], open_truth(paths, decode_cf=False)["v_float64"].values
        )

    def test_connection_dropped_while_listing(self, served):
        server, paths = served
        server.drop.add(paths[0].name)
        fs = refused_then_skipped(
            f"{server.url}/", NoSourceFilesError, "part00.nc", "ClientPayloadError"
        )
        server.drop.clear()
        check(fs, paths[1:])

    def test_server_behind_a_token(self, served):
        """The filesystem's own headers go with every request, the ETag checks included;
        the token never shows in an error."""
        server, paths = served
        token = "Bearer sixteen-secret-chars"
        server.required_headers["Authorization"] = token
        options = {"headers": {"Authorization": token}}
        fs = virtual(f"{server.url}/", cache=False, target_options=options)
        check(fs, paths)
        assert all(h.status < 400 for h in server.hits), server.hits
        time.sleep(0.01)
        write_series(paths[0].parent, [[100, 101, 102, 103]], names=[paths[1].name])
        with pytest.raises(StaleSourceError) as raised:
            zarr.open_group(fs.get_mapper(""), mode="r")["v_float64"][:]
        assert "sixteen-secret" not in str(raised.value)
        assert "sixteen-secret" not in fs.to_json(include_password=False)

    def test_process_pool_scan_equals_serial(self, served, monkeypatch):
        import fsspec_virtual.scheduling as scheduling

        server, paths = served
        options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=30)}}
        serial = virtual(f"{server.url}/", cache=False, max_workers=1, target_options=options)
        expected = {k: serial.cat_file(k) for k in serial.find("")}
        state_module.clear_states()
        monkeypatch.setattr(scheduling, "POOL_MIN_FILES", 2)
        server.reset()
        pooled = virtual(f"{server.url}/", cache=False, max_workers=2, target_options=options)
        assert {k: pooled.cat_file(k) for k in pooled.find("")} == expected
        assert pooled.report().remote_scans == len(paths)  # the workers' counts came back

    def test_timeout(self, served):
        server, paths = served
        options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=1)}}
        fs = virtual(f"{server.url}/", cache=False, target_options=options)
        # the options object (not JSON) survives zarr's re-creation of the filesystem
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        server.delay[paths[1].name] = 3.0
        with pytest.raises(SourceReadError, match=r"part01\.nc.*Timeout"):
            group["v_int32"][:]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with serve_s3() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"b{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", **s3.options()).mkdir(name)
    return name


def _upload(s3: S3Server, paths: list[Path], prefix: str) -> Any:
    s3fs = fsspec.filesystem("s3", **s3.options())
    for p in paths:
        s3fs.pipe_file(f"{prefix}/{p.name}", p.read_bytes())
    return s3fs


class TestS3:
    @pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF3_CLASSIC"])
    def test_glob_scan_read(self, s3, bucket, tmp_path, fmt):
        paths = write_series(tmp_path / "d", TIMES, fmt=fmt)
        _upload(s3, paths, f"{bucket}/data")
        fs = virtual(f"s3://{bucket}/data/*.nc", target_options=s3.options(), cache=False)
        check(fs, paths)
        assert fs.report().remote_scans == 3

    def test_etag_identity_reopen_and_rewrite(self, s3, bucket, tmp_path, scan_calls):
        paths = write_series(tmp_path / "d", TIMES)
        s3fs = _upload(s3, paths, f"{bucket}/data")
        fs = virtual(f"s3://{bucket}/data/", target_options=s3.options())
        state = fs.collection()
        assert all(f.version.etag for f in state.files)
        assert len(scan_calls) == 3
        state_module.clear_states()  # a new process, as far as the state is concerned
        again = virtual(f"s3://{bucket}/data/", target_options=s3.options())
        check(again, paths)
        assert len(scan_calls) == 3  # reopened from the scan cache, keyed by ETag
        # overwrite one object: other values, other chunking
        other = write_series(
            tmp_path / "e", [[20, 21, 22, 23]], names=[paths[2].name], chunk_time=1
        )
        s3fs.pipe_file(f"{bucket}/data/{paths[2].name}", other[0].read_bytes())
        group = zarr.open_group(again.get_mapper(""), mode="r")
        with pytest.raises(StaleSourceError, match=r"part02\.nc"):
            group["v_float64"][:]
        again.refresh()
        assert len(scan_calls) == 4  # only the changed object
        check(again, [paths[0], paths[1], other[0]])

    def test_scan_requests(self, s3, bucket, tmp_path):
        """One listing; per file its magic bytes and one block (the listing's ETags make
        every read of the scan checked, so nothing is asked after it)."""
        paths = write_series(tmp_path / "d", TIMES)
        _upload(s3, paths, f"{bucket}/data")
        s3.reset()
        # in this process: worker processes look each file up once more (no listing there)
        fs = virtual(
            f"s3://{bucket}/data/*.nc", target_options=s3.options(), cache=False, max_workers=1
        )
        assert fs.report().requests_per_file == 1
        # one HEAD asks whether an object is named "*.nc" as written (it would be that file)
        pattern = [h for h in s3.hits if h[1].endswith("/*.nc")]
        assert [method for method, _, _ in pattern] == ["HEAD"], s3.hits
        per_file = [h for h in s3.hits if h[1].endswith(".nc") and h not in pattern]
        assert len(per_file) == 2 * len(paths), "\n".join(map(str, s3.hits))
        assert all(method == "GET" for method, _, _ in per_file), s3.hits

    def test_scan_cache_in_a_bucket(self, s3, bucket, tmp_path, scan_calls):
        """A team shares one scan: the cache is a bucket prefix; a second process (state
        cleared) opening the same local files scans none of them."""
        paths = write_series(tmp_path / "d", TIMES)
        shared = {"cache_dir": f"s3://{bucket}/scans", "cache_options": s3.options()}
        first = virtual(str(tmp_path / "d"), max_workers=1, **shared)
        check(first, paths)
        assert len(scan_calls) == 3
        entries = fsspec.filesystem("s3", **s3.options()).find(f"{bucket}/scans")
        assert len(entries) == 4 and all(e.endswith(".scan") for e in entries)  # 3 + whole
        state_module.clear_states()
        check(virtual(str(tmp_path / "d"), max_workers=1, **shared), paths)
        assert len(scan_calls) == 3

    def test_contiguous_chunks_are_read_in_few_requests(self, s3, bucket, tmp_path):
        path = _contiguous_chunks_file(tmp_path / "c.nc")
        _upload(s3, [path], bucket)
        fs = virtual(
            f"s3://{bucket}/c.nc", concat_dim=None, target_options=s3.options(), cache=False
        )
        array = zarr.open_group(fs.get_mapper(""), mode="r")["v"]
        s3.reset()
        values = array[:]
        with netCDF4.Dataset(path) as nc:
            np.testing.assert_array_equal(values, nc["v"][:].data)
        assert len(s3.gets("c.nc")) <= 20

    def test_credentials_are_never_shown(self, s3, bucket, tmp_path, caplog, capsys):
        paths = write_series(tmp_path / "d", TIMES[:2])
        _upload(s3, paths, f"{bucket}/data")
        secret = "testing-secret"
        options = s3.options()
        assert options["secret"] == secret
        caplog.set_level(logging.DEBUG)
        shown: list[str] = []
        fs = virtual(f"s3://{bucket}/data/", target_options=options, cache=False)
        shown += [repr(fs), repr(fs._spec), str(fs.report()), fs.to_json(include_password=False)]
        missing = virtual(f"s3://{bucket}/nothing/", target_options=options, cache=False)
        with pytest.raises(NoSourceFilesError) as raised:
            missing.cat_file(".zmetadata")
        shown.append(str(raised.value))
        s3fs = fsspec.filesystem("s3", **s3.options())
        s3fs.rm(f"{bucket}/data/{paths[0].name}")
        with pytest.raises(StaleSourceError) as stale:
            zarr.open_group(fs.get_mapper(""), mode="r")["v_float64"][:]
        shown.append(str(stale.value))
        shown += [r.getMessage() for r in caplog.records]
        captured = capsys.readouterr()
        shown += [captured.out, captured.err]
        leaks = [text for text in shown if secret in text]
        assert not leaks, leaks[:3]
        assert '"secret": "***"' in fs.to_json(include_password=False)


class TestSchedulers:
    def test_dask_local_cluster_gives_the_same_store(self, tmp_path):
        paths = write_series(tmp_path / "d", TIMES)
        serial = virtual(str(tmp_path / "d"), max_workers=1, cache=False)
        expected = {k: serial.cat_file(k) for k in serial.find("")}
        with local_dask_cluster(2) as client:
            for scheduler in ("dask", client):
                state_module.clear_states()
                fs = virtual(str(tmp_path / "d"), scheduler=scheduler, cache=False)
                assert {k: fs.cat_file(k) for k in fs.find("")} == expected
            # the client object survives zarr's re-creation of the filesystem
            state_module.clear_states()
            fs = virtual(str(tmp_path / "d"), scheduler=client, cache=False)
            check(fs, paths)
            assert sum(client.run(lambda: 1).values()) == 2  # the cluster is alive

    def test_dask_scans_windows_of_files_each_file_its_own(self, tmp_path):
        """With enough files, a Dask task scans a window of them: the store equals one
        scanned in this process, and a file that fails is left out alone, named."""
        from conftest import write_many

        import fsspec_virtual.scheduling as scheduling

        paths = write_many(tmp_path / "d", 40)
        bad = write_truncated(tmp_path / "d" / "m0017.nc", paths[17])
        kept = [p for p in paths if p != bad]
        assert scheduling._local_window(len(paths), 2) > 1  # windows of several files
        state_module.clear_states()
        serial = virtual([str(p) for p in kept], max_workers=1, cache=False)
        expected = {k: serial.cat_file(k) for k in serial.find("")}
        with local_dask_cluster(2) as client:
            for scheduler in (client, "dask"):
                state_module.clear_states()
                with pytest.warns(SkippedFileWarning, match="m0017.nc"):
                    fs = virtual(
                        str(tmp_path / "d"), scheduler=scheduler, cache=False, on_error="skip"
                    )
                    fs.cat_file(".zmetadata")
                assert len(fs.collection().files) == len(kept)
                assert {k: fs.cat_file(k) for k in fs.find("")} == expected
                check(fs, kept)
        state_module.clear_states()

    def test_unknown_scheduler(self, tmp_path):
        with pytest.raises(ValueError, match="scheduler"):
            virtual(str(tmp_path), scheduler="threads")


class TestProgress:
    def _slow_scans(self, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
        import fsspec_virtual.scheduling as scheduling

        real = scheduling.scan_file

        def slow(*args: Any) -> Any:
            time.sleep(seconds)
            return real(*args)

        monkeypatch.setattr(scheduling, "scan_file", slow)

    def test_progress_bar_for_a_long_scan(self, series, monkeypatch, capsys):
        paths = series(TIMES)
        self._slow_scans(monkeypatch, 0.5)
        state_module.clear_states()
        virtual(str(paths[0].parent), progress=True, cache=False, max_workers=1).report()
        err = capsys.readouterr().err
        assert "scanning" in err and "3/3" in err, err

    def test_silent_by_default(self, series, monkeypatch, capsys):
        paths = series(TIMES)
        self._slow_scans(monkeypatch, 0.5)
        state_module.clear_states()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            virtual(str(paths[0].parent), cache=False, max_workers=1).report()
        captured = capsys.readouterr()
        assert captured.err == "" and captured.out == ""

    def test_progress_callable(self, series):
        paths = series(TIMES)
        state_module.clear_states()
        seen: list[tuple[int, int]] = []
        virtual(
            str(paths[0].parent), progress=lambda d, t: seen.append((d, t)), cache=False
        ).report()
        assert seen == [(1, 3), (2, 3), (3, 3)]


def test_simple_files_over_http_equal_local(tmp_path):
    """Single-variable files with a packed variable: the same over HTTP as read locally."""
    (tmp_path / "www").mkdir()
    paths = [
        write_simple(tmp_path / "www" / f"s{i}.nc", [2 * i, 2 * i + 1], seed=i) for i in range(2)
    ]
    with serve_directory(tmp_path / "www") as server:
        check(virtual(f"{server.url}/*.nc", cache=False), paths)


def _lzf_file(path: Path, values: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, chunks=(2, 5), compression="lzf")
    return path


def test_h5py_read_chunks_over_http_are_checked(tmp_path):
    """lzf chunks (no numcodecs codec) are read through h5py on an HTTP file object: a
    rewritten file is refused by If-Match there too."""
    from fsspec_virtual.compute import _h5_files

    (tmp_path / "www").mkdir()
    first = np.arange(40.0).reshape(8, 5)
    path = _lzf_file(tmp_path / "www" / "a.h5", first)
    with serve_directory(tmp_path / "www") as server:
        fs = virtual(f"{server.url}/a.h5", concat_dim=None, cache=False)
        array = zarr.open_group(fs.get_mapper(""), mode="r")["v"]
        np.testing.assert_array_equal(array[:], first)
        _h5_files.clear()
        time.sleep(0.01)
        _lzf_file(path, first[::-1].copy())
        with pytest.raises(StaleSourceError, match=r"a\.h5"):
            array[:]
        fs.refresh()
        np.testing.assert_array_equal(
            zarr.open_group(fs.get_mapper(""), mode="r")["v"][:], first[::-1]
        )
