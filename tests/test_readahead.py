"""Read-ahead of remote chunks (``fsspec_virtual.readahead``), against a real HTTP server.

What is read ahead must be exactly what a read at that moment would have returned: the
truth is the files read directly with netCDF4, and a file changed on the server is never
served with its new bytes under an old snapshot (nor its old bytes under a new one).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from servers import HTTPServer, serve_directory

import fsspec_virtual.readahead as readahead
import fsspec_virtual.state as state_module
from fsspec_virtual import StaleSourceError

STEPS = 16  # per file: one chunk per step
FILES = 4
X = 200


def _write(path: Path, first_step: int, offset: float = 0.0, u_offset: int = 0) -> Path:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", X)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(first_step, first_step + STEPS, dtype="f8")
        v = nc.createVariable("v", "f4", ("time", "x"), chunksizes=(1, X), zlib=True, shuffle=True)
        v.long_name = "a field"
        # uncompressed: a file rewritten with other values keeps every chunk's range
        u = nc.createVariable("u", "i8", ("time", "x"), chunksizes=(1, X))
        rng = np.random.default_rng(first_step)
        v[:] = (rng.normal(size=(STEPS, X)) + offset).astype("f4")
        u[:] = rng.integers(0, 1000, size=(STEPS, X)) + u_offset
    return path


def _truth(paths: list[Path], name: str = "v") -> np.ndarray:
    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            parts.append(nc[name][:].data)
    return np.concatenate(parts)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[HTTPServer, list[Path]]]:
    """FILES files of STEPS chunks each, every GET delayed a little (a remote server)."""
    root = tmp_path / "www"
    root.mkdir()
    paths = [_write(root / f"f{i}.nc", i * STEPS) for i in range(FILES)]
    state_module.clear_states()
    with serve_directory(root) as server:
        server.delay.update({p.name: 0.005 for p in paths})
        yield server, paths
    state_module.clear_states()


def _store(server: HTTPServer, **kwargs: Any) -> Any:
    kwargs.setdefault("cache", False)
    return fsspec.filesystem(
        "virtualzarr",
        path=f"{server.url}/",
        concat_dim="time",
        skip_instance_cache=True,
        **kwargs,
    )


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each read found its bytes read ahead (in the order of the reads)."""
    seen: list[bool] = []
    take = readahead.ReadAhead.take

    def spy(self: Any, state: Any, request: Any) -> Any:
        entry = take(self, state, request)
        seen.append(entry is not None)
        return entry

    monkeypatch.setattr(readahead.ReadAhead, "take", spy)
    return seen


def _ahead_on_fsspec_loop() -> readahead.ReadAhead:
    from fsspec.asyn import get_loop

    async def get() -> readahead.ReadAhead:
        return readahead.read_ahead_for()

    return asyncio.run_coroutine_threadsafe(get(), get_loop()).result()


def test_zarr_whole_read_is_read_ahead_and_equal(served, taken):
    server, paths = served
    fs = _store(server)
    array = zarr.open_group(fs.get_mapper(""), mode="r")["v"]
    assert array.nchunks == FILES * STEPS
    for _ in range(2):  # a second pass over the same array is read ahead too
        taken.clear()
        np.testing.assert_array_equal(array[...], _truth(paths), strict=True)
        assert sum(taken) >= FILES * STEPS // 2, taken


def test_dask_read_backwards_is_read_ahead_and_equal(served, taken):
    server, paths = served
    with xr.open_zarr(_store(server).get_mapper("")) as ds:
        assert ds["v"].chunks is not None
        values = ds["v"].values
        assert ds["v"].attrs["long_name"] == "a field"
    np.testing.assert_array_equal(values, _truth(paths), strict=True)
    assert sum(taken) >= FILES * STEPS // 2, taken


def test_store_decoding_reads_ahead_and_decodes_the_same(served, taken):
    server, paths = served
    array = zarr.open_group(_store(server, decode="store").get_mapper(""), mode="r")["v"]
    np.testing.assert_array_equal(array[...], _truth(paths), strict=True)
    assert sum(taken) >= FILES * STEPS // 2, taken


def test_random_reads_are_not_read_ahead(served, taken):
    server, paths = served
    fs = _store(server)
    fs.cat_file(".zmetadata")
    truth = _truth(paths)
    array = zarr.open_group(fs.get_mapper(""), mode="r")["v"]
    array[0]  # opened, metadata read
    server.reset()
    # a pair of neighbours, never three consecutive chunks
    order = [0, 7, 3, 11, 1, 20, 5, 30, 9, 40, 14, 33, 17, 50, 25]
    for step in order:
        np.testing.assert_array_equal(array[step], truth[step], strict=True)
    assert not any(taken)
    assert len(server.gets()) <= len(order), server.hits  # nothing read but what was asked


def test_no_read_ahead_when_told_or_local(served, taken, tmp_path):
    server, paths = served
    array = zarr.open_group(_store(server, read_ahead=0).get_mapper(""), mode="r")["v"]
    server.reset()
    np.testing.assert_array_equal(array[...], _truth(paths), strict=True)
    assert not any(taken)
    local = fsspec.filesystem("virtualzarr", path=[str(p) for p in paths], concat_dim="time")
    assert not readahead.reads_ahead(local.collection().fs)
    assert readahead.reads_ahead(_store(server).collection().fs)
    for wrong in (-1, True, 1.5, "64M"):
        with pytest.raises(ValueError, match="read_ahead must be a whole number of bytes"):
            _store(server, read_ahead=wrong)
    _store(server, read_ahead=np.int64(1 << 20))  # any integer type


def test_bytes_held_stay_within_the_budget(served, taken, monkeypatch):
    server, paths = served
    fs = _store(server)
    chunk = fs.info("v/0.0")["size"]
    budget = 3 * chunk + chunk // 2
    most = 0
    hold = readahead.ReadAhead._hold

    def spy(self: Any, state: Any, request: Any) -> None:
        nonlocal most
        hold(self, state, request)
        most = max(most, self.held)
        _check_accounts(self)

    monkeypatch.setattr(readahead.ReadAhead, "_hold", spy)
    array = zarr.open_group(_store(server, read_ahead=budget).get_mapper(""), mode="r")["v"]
    np.testing.assert_array_equal(array[...], _truth(paths), strict=True)
    assert 0 < most <= budget
    assert any(taken)


def _check_accounts(ahead: readahead.ReadAhead) -> None:
    """The bytes counted as held are those of the ranges held."""
    assert ahead.held == sum(e.size for e in ahead._ahead.values())


def _read_keys(fs: Any, keys: list[str]) -> list[bytes]:
    return [fs.cat_file(k) for k in keys]


def _settled(ahead: readahead.ReadAhead) -> None:
    deadline = time.monotonic() + 10
    while any(e.arrived is None for e in list(ahead._ahead.values())):
        assert time.monotonic() < deadline, "read-ahead never finished"
        time.sleep(0.01)


def _rewrite(path: Path, first_step: int, only_u: bool = False) -> None:
    """The same file written again with other values (a new version on the server); with
    ``only_u``, other values of ``u`` only (then every chunk keeps its byte range)."""
    time.sleep(0.01)
    _write(path, first_step, offset=0.0 if only_u else 100.0, u_offset=100)


def _raw_chunks(fs: Any, path: Path, first: int, stop: int) -> list[bytes]:
    """Chunks ``first`` to ``stop`` of ``v`` as the file on disk holds them now, at the
    ranges the store scanned (the bytes a read at the scanned version returns)."""
    grid = fs.collection().manifest.arrays["v"].grid
    data = path.read_bytes()
    out = []
    for i in range(first, stop):
        offset, length = int(grid.offset[i, 0]), int(grid.length[i, 0])
        out.append(data[offset : offset + length])
    return out


def test_a_file_changed_after_read_ahead_never_serves_its_new_bytes(served, monkeypatch):
    server, paths = served
    fs = _store(server)
    old = _raw_chunks(fs, paths[0], 0, STEPS)
    assert _read_keys(fs, ["v/0.0", "v/1.0", "v/2.0"]) == old[:3]
    ahead = _ahead_on_fsspec_loop()
    _settled(ahead)
    assert ahead.held > 0
    _rewrite(paths[0], 0)
    assert _raw_chunks(fs, paths[0], 3, 5) != old[3:5]
    # read ahead at the scanned version: exactly the bytes the snapshot scanned
    assert _read_keys(fs, [f"v/{i}.0" for i in range(3, 5)]) == old[3:5]
    # not read ahead in time: read now, and refused (the file is no longer the one scanned)
    monkeypatch.setattr(readahead, "MAX_AGE", 0.0)
    with pytest.raises(StaleSourceError, match=r"f0\.nc"):
        fs.cat_file("v/5.0")
    # a new snapshot of the changed file reads its new bytes, not what was read ahead
    state_module.clear_states()
    fresh = zarr.open_group(_store(server).get_mapper(""), mode="r")["v"]
    np.testing.assert_array_equal(fresh[...], _truth(paths), strict=True)


def test_a_file_changed_before_read_ahead_is_refused_not_served(served, taken):
    server, paths = served
    fs = _store(server)
    fs.cat_file(".zmetadata")
    _rewrite(paths[1], STEPS)
    _read_keys(fs, ["v/0.0", "v/1.0", "v/2.0"])  # file 0: unchanged, read ahead follows
    _settled(_ahead_on_fsspec_loop())
    for i in range(3, STEPS):
        fs.cat_file(f"v/{i}.0")
    # file 1's chunks were read ahead and refused: each reader reads and is refused itself
    with pytest.raises(StaleSourceError, match=r"f1\.nc"):
        fs.cat_file(f"v/{STEPS}.0")
    with pytest.raises(StaleSourceError, match=r"f1\.nc"):
        zarr.open_group(fs.get_mapper(""), mode="r")["v"][...]


def test_two_snapshots_of_one_file_never_share_what_was_read_ahead(served, taken):
    server, paths = served
    old_store = _store(server)
    old_array = zarr.open_group(old_store.get_mapper(""), mode="r")["u"]
    old_truth = _truth(paths, "u")
    np.testing.assert_array_equal(old_array[: STEPS // 2], old_truth[: STEPS // 2], strict=True)
    _settled(_ahead_on_fsspec_loop())
    old_grid = old_store.collection().manifest.arrays["u"].grid
    _rewrite(paths[0], 0, only_u=True)
    state_module.clear_states()
    new_store = _store(server)
    new_grid = new_store.collection().manifest.arrays["u"].grid
    # the same ranges hold other values: only the version tells the two apart
    np.testing.assert_array_equal(new_grid.offset, old_grid.offset)
    np.testing.assert_array_equal(new_grid.length, old_grid.length)
    new_array = zarr.open_group(new_store.get_mapper(""), mode="r")["u"]
    taken.clear()
    np.testing.assert_array_equal(new_array[...], _truth(paths, "u"), strict=True)
    assert any(taken)
    # the old snapshot serves its own bytes (read ahead before the change) or is refused
    try:
        last = old_array[STEPS - 1]
    except StaleSourceError as e:
        assert "f0.nc" in str(e)
    else:
        np.testing.assert_array_equal(last, old_truth[STEPS - 1], strict=True)


def test_a_rewrite_the_version_cannot_tell_never_mixes_snapshots(served):
    """A file rewritten with the same size and modification time has the same version
    (and here the same ETag): a snapshot scanned after it reads the new bytes, never what
    was read ahead for the snapshot before it."""
    server, paths = served
    old = _store(server)
    _read_keys(old, ["u/0.0", "u/1.0", "u/2.0"])
    ahead = _ahead_on_fsspec_loop()
    _settled(ahead)
    assert ahead.held > 0
    stat = paths[0].stat()
    _rewrite(paths[0], 0, only_u=True)
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert paths[0].stat().st_size == stat.st_size
    state_module.clear_states()
    new = _store(server)
    assert new.collection().id == old.collection().id  # nothing tells the versions apart
    got = np.stack([np.frombuffer(new.cat_file(f"u/{i}.0"), "<i8") for i in range(STEPS)])
    np.testing.assert_array_equal(got, _truth(paths, "u")[:STEPS], strict=True)


def test_loops_that_end_let_go_of_what_was_read_ahead(served):
    server, _ = served
    fs = _store(server, asynchronous=True)

    async def read_three() -> None:
        for i in range(3):
            await fs._cat_file(f"u/{i}.0")

    for _ in range(4):
        asyncio.run(read_three())
    closed = [loop for loop in readahead._per_loop if loop.is_closed()]
    assert len(closed) <= 1, closed  # a new loop lets go of those that ended before it


def test_one_range_at_two_positions_is_held_once(tmp_path, monkeypatch):
    """An ensemble whose members all link the same dataset: one byte range at several
    chunk positions is read ahead once, and the bytes counted are the bytes held."""
    import h5py
    from test_external_links import _write_data, _write_master

    (tmp_path / "data").mkdir()
    (tmp_path / "m").mkdir()
    _write_data(tmp_path / "data" / "d.h5", 0, seed=1, steps=40)
    links = {n: h5py.ExternalLink("../data/d.h5", n) for n in ("time", "lat", "t2m")}
    for i in range(3):
        _write_master(tmp_path / "m" / f"m{i}.h5", links, own=False)
    with h5py.File(tmp_path / "data" / "d.h5") as f:
        want = np.stack([f["t2m"][()]] * 3)
    monkeypatch.setattr(readahead, "MAX_AGE", 0.2)
    state_module.clear_states()
    with serve_directory(tmp_path) as server:
        fs = fsspec.filesystem(
            "virtualzarr",
            path=f"{server.url}/m/",
            combine="nested",
            concat_dim="member",
            cache=False,
            skip_instance_cache=True,
        )
        ahead = _ahead_on_fsspec_loop()
        for _ in range(2):
            keys = [f"t2m/{m}.{t}.{x}" for m in range(3) for t in range(20) for x in range(2)]
            for key in keys:
                fs.cat_file(key)
                _check_accounts(ahead)
            _settled(ahead)
            time.sleep(0.3)
            fs.cat_file("t2m/0.0.0")  # a reader comes back: what was not asked for goes
            assert ahead.held == 0
        np.testing.assert_array_equal(zarr.open_group(fs.get_mapper(""))["t2m"][...], want)
    state_module.clear_states()


def _gets_bytes(server: HTTPServer) -> list[int]:
    sizes = []
    for hit in server.gets():
        start, _, end = (hit.range or "").removeprefix("bytes=").partition("-")
        if start and end and hit.range != "bytes=0-7":
            sizes.append(int(end) - int(start) + 1)
    return sizes


def test_read_ahead_requests_stay_small_and_few(served, monkeypatch):
    server, paths = served
    fs = _store(server, max_concurrency=2)
    chunk = fs.info("u/0.0")["size"]
    monkeypatch.setattr(readahead, "MAX_REQUEST_BYTES", 3 * chunk)
    server.reset()
    truth = _truth(paths, "u")
    for i in range(FILES * STEPS):  # one reader, one chunk at a time
        np.testing.assert_array_equal(np.frombuffer(fs.cat_file(f"u/{i}.0"), "<i8"), truth[i])
    sizes = _gets_bytes(server)
    assert max(sizes) <= 3 * chunk, sizes
    assert sum(sizes) == FILES * STEPS * chunk  # every chunk read once
    # the reader's own request, and at most max_concurrency read-ahead requests
    assert server.max_in_flight <= 1 + 2, server.max_in_flight


def test_what_arrives_late_is_still_taken(served, monkeypatch, taken):
    """The age of a range read ahead counts from its arrival, not its request: on a slow
    link nothing is read twice."""
    server, paths = served
    monkeypatch.setattr(readahead, "MAX_AGE", 0.3)
    server.delay.update({p.name: 0.4 for p in paths})
    fs = _store(server)
    fs.cat_file(".zmetadata")
    server.reset()
    truth = _truth(paths, "u")
    for i in range(STEPS):
        np.testing.assert_array_equal(np.frombuffer(fs.cat_file(f"u/{i}.0"), "<i8"), truth[i])
    assert sum(_gets_bytes(server)) <= STEPS * fs.info("u/0.0")["size"] * 2
    assert sum(taken) >= STEPS // 2, taken


def test_random_steps_of_a_tiled_variable_read_little_more(tmp_path, taken):
    """A random time step of a variable split into tiles asks for consecutive chunks: how
    far ahead is read grows with the run, so a step costs at most about one more step."""
    root = tmp_path / "www"
    root.mkdir()
    path = root / "tiles.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 40)
        nc.createDimension("x", 8 * 100)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(40.0)
        w = nc.createVariable("w", "i8", ("time", "x"), chunksizes=(1, 100))
        w[:] = np.arange(40 * 800).reshape(40, 800)
    state_module.clear_states()
    with serve_directory(root) as server:
        fs = _store(server)
        array = zarr.open_group(fs.get_mapper(""), mode="r")["w"]
        array[0, 0]
        server.reset()
        steps = [17, 3, 29, 8, 35, 12, 24, 1, 38, 20]
        for step in steps:
            np.testing.assert_array_equal(array[step], np.arange(step * 800, (step + 1) * 800))
        asked = len(steps) * 800 * 8
        assert sum(_gets_bytes(server)) <= 2 * asked
    state_module.clear_states()
