"""File factories: real NetCDF4 / NetCDF3 / HDF5 files written into ``tmp_path``.

Every factory writes with netCDF4-python or h5py (never with this package) and returns the
paths it wrote, in the order the collection should combine (time order), so the truth can be
read straight from them (see ``oracle.py``).
"""

from __future__ import annotations

import faulthandler
import functools
import http.server
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest

ALL_DTYPES = (
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
)
NC3_DTYPES = ("int8", "int16", "int32", "float32", "float64")
NC3_FORMATS = ("NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET")
LAYOUTS = ("gzip_shuffle", "uncompressed_chunked", "contiguous")
DAYS = "days since 2001-01-01"


def sample_values(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random values of ``dtype`` that include zero, the extremes and (floats) NaN and inf."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        data = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        special = [0, info.min, info.max, 1]
    else:
        data = (rng.standard_normal(shape) * 1000).astype(dt)
        special = [0.0, np.nan, np.inf, -np.inf]
    flat = data.reshape(-1)
    n = min(len(special), flat.size)
    flat[:n] = np.array(special[:n], dtype=object).astype(dt)
    return data


def _layout_kwargs(layout: str, chunks: tuple[int, ...] | None) -> dict[str, Any]:
    if layout == "gzip_shuffle":
        return {"compression": "zlib", "complevel": 4, "shuffle": True, "chunksizes": chunks}
    if layout == "uncompressed_chunked":
        return {"chunksizes": chunks}
    if layout == "contiguous":
        return {"contiguous": True}
    raise ValueError(layout)


def write_series(
    directory: Path,
    times: Sequence[Sequence[float]],
    *,
    units: str | Sequence[str] = DAYS,
    fmt: str = "NETCDF4",
    layout: str = "gzip_shuffle",
    chunk_time: int = 2,
    nx: int = 5,
    dtypes: Sequence[str] | None = None,
    unlimited: bool = False,
    names: Sequence[str] | None = None,
    with_time_coord: bool = True,
) -> list[Path]:
    """Files along ``time``, one per entry of ``times``, with one variable per dtype.

    Each file holds: ``time`` (CF, its own ``units``), ``x``, one ``v_<dtype>(time, x)`` per
    dtype (values with zeros and extremes), a scalar ``height`` and a non-concat ``area(x)``
    whose values differ per file (the first file's must win), string / numeric / array
    attributes, global and per variable, with a global ``history`` that differs per file.
    """
    nc3 = fmt.startswith("NETCDF3")
    dtypes = tuple(dtypes or (NC3_DTYPES if nc3 else ALL_DTYPES))
    unit_list = [units] * len(times) if isinstance(units, str) else list(units)
    names = list(names or [f"part{i:02d}.nc" for i in range(len(times))])
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (file_times, file_units) in enumerate(zip(times, unit_list)):
        path = directory / names[i]
        nt = len(file_times)
        with netCDF4.Dataset(path, "w", format=fmt) as nc:
            nc.title = "a series of test files"
            nc.history = f"written as file {i}"
            nc.answer = np.int32(42)
            nc.ratio = 0.25
            nc.weights = np.array([0.5, 1.5, 2.5], dtype="f4")
            nc.levels = np.array([1, 2, 3], dtype="i2")
            if not nc3:
                nc.setncattr_string("tags", ["alpha", "beta"])
                nc.big = np.int64(2**40 + 1)
            nc.createDimension("time", None if unlimited else nt)
            nc.createDimension("x", nx)
            if with_time_coord:
                time = nc.createVariable("time", "f8", ("time",))
                time.units = file_units
                time.calendar = "standard"
                time.standard_name = "time"
                time[:] = np.asarray(file_times, dtype="f8")
            x = nc.createVariable("x", "f8", ("x",))
            x.units = "m"
            x[:] = np.arange(nx, dtype="f8") * 10.0
            height = nc.createVariable("height", "f8", ())
            height.units = "m"
            height[...] = 2.0 + i
            area = nc.createVariable("area", "f4", ("x",))
            area.long_name = "cell area"
            area[:] = np.arange(nx, dtype="f4") + 100 * i
            for k, dtype in enumerate(dtypes):
                kwargs = {} if nc3 else _layout_kwargs(layout, (chunk_time, nx))
                var = nc.createVariable(f"v_{dtype}", dtype, ("time", "x"), **kwargs)
                var.long_name = f"a {dtype} variable"
                var.units = "1"
                info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
                var.valid_range = np.array([info.min, info.max], dtype=dtype)
                var.set_auto_maskandscale(False)
                var[:] = sample_values(dtype, (nt, nx), seed=1000 * i + k)
        paths.append(path)
    return paths


def write_simple(
    path: Path,
    times: Sequence[float] | None,
    *,
    units: str = DAYS,
    nx: int = 4,
    dtype: str = "f4",
    chunks: tuple[int, ...] | None = (2, 4),
    compression: str | None = "zlib",
    shuffle: bool = True,
    contiguous: bool = False,
    fill_value: Any = None,
    attrs: dict[str, Any] | None = None,
    unlimited: bool = False,
    fmt: str = "NETCDF4",
    seed: int = 0,
    nt: int | None = None,
    var: str = "t",
    static_dtype: str | None = None,
) -> Path:
    """One file with one variable ``var(time, x)`` and (if ``times``) a ``time`` coordinate;
    with ``static_dtype``, also ``area(x)`` of that dtype (a variable without ``time``).

    Values are raw (no packing applied on write), so a ``scale_factor`` in ``attrs`` packs.
    """
    nt = len(times) if times is not None else nt
    assert nt is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("time", None if unlimited else nt)
        nc.createDimension("x", nx)
        if times is not None:
            time = nc.createVariable("time", "f8", ("time",))
            time.units = units
            time.calendar = "standard"
            time[:] = np.asarray(times, dtype="f8")
        kwargs: dict[str, Any] = {"fill_value": fill_value}
        if not fmt.startswith("NETCDF3"):
            if contiguous:
                kwargs["contiguous"] = True
            else:
                kwargs.update(compression=compression, shuffle=shuffle, chunksizes=chunks)
        variable = nc.createVariable(var, dtype, ("time", "x"), **kwargs)
        for key, value in (attrs or {}).items():
            variable.setncattr(key, value)
        variable.set_auto_maskandscale(False)
        values = (np.arange(nt * nx).reshape(nt, nx) % 100 + seed * 100).astype(dtype)
        variable[:] = values
        if static_dtype is not None:
            area = nc.createVariable("area", static_dtype, ("x",))
            area[:] = np.arange(nx) + seed
    return path


def write_packed(
    directory: Path,
    n_files: int = 2,
    *,
    scale_dtype: str = "f4",
    missing_value: bool = False,
    steps: int = 4,
    nx: int = 6,
) -> list[Path]:
    """int16 packed with ``scale_factor`` / ``add_offset`` / ``_FillValue``, fill values inside."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        path = directory / f"packed{i}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", steps)
            nc.createDimension("x", nx)
            time = nc.createVariable("time", "i4", ("time",))
            time.units = "hours since 2000-01-01"
            time[:] = np.arange(steps) + i * steps
            var = nc.createVariable(
                "t2m",
                "i2",
                ("time", "x"),
                fill_value=np.int16(-32767),
                compression="zlib",
                shuffle=True,
                chunksizes=(2, 3),
            )
            var.scale_factor = np.dtype(scale_dtype).type(0.01)
            var.add_offset = np.dtype(scale_dtype).type(273.15)
            var.units = "K"
            if missing_value:
                var.missing_value = np.int16(-32768)
            var.set_auto_maskandscale(False)
            raw = sample_values("int16", (steps, nx), seed=i)
            raw[0, 0] = -32767
            raw[1, 2] = -32767
            if missing_value:
                raw[2, 1] = -32768
            var[:] = raw
        paths.append(path)
    return paths


def write_sparse(path: Path, times: Sequence[float], *, declared_fill: bool, seed: int = 0) -> Path:
    """Chunked variables of which only some chunks (or none) are ever written."""
    nt = len(times)
    fill = {"f4": np.float32(-999.0), "i4": np.int32(-9), "f8": -1.5, "i2": np.int16(-7)}
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", nt)
        nc.createDimension("x", 8)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = DAYS
        time[:] = np.asarray(times, dtype="f8")

        def make(name: str, dtype: str, dims: tuple[str, ...], **kwargs: Any) -> Any:
            fill_value = fill[dtype] if declared_fill else None
            return nc.createVariable(name, dtype, dims, fill_value=fill_value, **kwargs)

        part_f = make("part_f4", "f4", ("time", "x"), chunksizes=(2, 4), compression="zlib")
        part_f[0:2, 0:4] = sample_values("float32", (2, 4), seed)
        part_i = make("part_i4", "i4", ("time", "x"), chunksizes=(2, 4))
        part_i[0:2, 4:8] = sample_values("int32", (2, 4), seed + 1)
        make("never_f8", "f8", ("time", "x"), chunksizes=(2, 4), compression="zlib")
        make("never_contiguous", "f4", ("time", "x"), contiguous=True)
        scalar = make("scalar_i2", "i2", ())
        scalar[...] = 5 + seed
        make("scalar_never", "f8", ())
    return path


def write_groups(path: Path) -> Path:
    """A NetCDF4 file with nested groups, variables in each, dims inherited from parents."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "root"
        nc.createDimension("x", 3)
        x = nc.createVariable("x", "f8", ("x",))
        x[:] = [1.0, 2.0, 3.0]
        root_v = nc.createVariable("root_v", "i4", ("x",))
        root_v[:] = [0, 5, -5]
        g1 = nc.createGroup("g1")
        g1.description = "first level"
        g1.createDimension("y", 2)
        a = g1.createVariable("a", "i2", ("y",))
        a[:] = [0, 7]
        a.long_name = "in g1"
        b = g1.createVariable("b", "f4", ("x", "y"), compression="zlib", chunksizes=(2, 1))
        b[:] = sample_values("float32", (3, 2), 3)
        g2 = g1.createGroup("g2")
        g2.description = "second level"
        g2.level = np.int32(2)
        g2.createDimension("z", 4)
        c = g2.createVariable("c", "u2", ("z",), fill_value=np.uint16(999))
        c[0:2] = [0, 1]
        d = g2.createVariable("d", "f8", ("x", "z"), chunksizes=(1, 2))
        d[:] = sample_values("float64", (3, 4), 4)
        d.units = "K"
        g3 = nc.createGroup("g3")
        g3.note = "a group without variables"
    return path


def write_plain_hdf5(path: Path) -> Path:
    """A plain HDF5 file (no netCDF conventions): fill values, zeros, compact, groups."""
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "plain hdf5"
        f.attrs["numbers"] = np.array([1, 2, 3], dtype="i4")
        f.create_dataset("ints", data=np.array([0, 1, 0, -3, 0, 2**30], dtype="i4"))
        floats = sample_values("float64", (4, 5), 7)
        floats[2, :] = 0.0
        f.create_dataset("floats", data=floats, chunks=(2, 5), compression="gzip", shuffle=True)
        f["floats"].attrs["note"] = "zeros are data here"
        filled = f.create_dataset("filled", shape=(6,), dtype="f4", chunks=(2,), fillvalue=7.5)
        filled[0:2] = [0.0, 1.0]
        unfilled = f.create_dataset("unfilled", shape=(6,), dtype="i2", chunks=(2,))
        unfilled[4:6] = [3, 0]
        space = h5py.h5s.create_simple((10,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        compact = h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT16, space, plist)
        h5py.Dataset(compact)[...] = np.arange(10, dtype="i2") - 2
        f.create_dataset("scalar", data=np.float64(3.25))
        f.create_dataset("zero_scalar", data=np.int64(0))
        inner = f.create_group("grp").create_dataset("inner", data=np.eye(3, dtype="u1"))
        inner.attrs["kind"] = "identity"
    return path


def write_plain_hdf5_uniform(path: Path) -> Path:
    """Plain HDF5 datasets that all have shape (6,): zeros and HDF5 fill values are data."""
    with h5py.File(path, "w") as f:
        f.create_dataset("ints", data=np.array([0, 1, 0, -3, 0, 2**30], dtype="i4"))
        zeros = f.create_dataset("zeros", data=np.zeros(6), chunks=(2,), compression="gzip")
        zeros.attrs["note"] = "all zero"
        filled = f.create_dataset("filled", shape=(6,), dtype="f4", chunks=(2,), fillvalue=7.5)
        filled[0:2] = [0.0, 7.5]
        unfilled = f.create_dataset("unfilled", shape=(6,), dtype="i2", chunks=(2,))
        unfilled[4:6] = [3, 0]
    return path


def scanned_store(path: Path) -> Any:
    """The store over one file, scanned, with the messages of the UnsupportedVariableWarnings
    of its scan on it (``.caught``)."""
    import warnings

    import fsspec

    from fsspec_virtual import UnsupportedVariableWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = fsspec.filesystem(
            "virtualzarr", path=str(path), cache=False, max_workers=1, skip_instance_cache=True
        )
        fs.find("")  # scans
    fs.caught = [
        str(w.message) for w in caught if issubclass(w.category, UnsupportedVariableWarning)
    ]
    return fs


def write_steps(path: Path, start: int, value: float, steps: int = 3) -> Path:
    """A tiny NetCDF4 file: ``v(time, x)`` = ``value + x`` for days ``start ..``, one
    uncompressed chunk per step (a rewrite with other values keeps every offset)."""
    import xarray as xr

    ds = xr.Dataset(
        {"v": (("time", "x"), np.full((steps, 4), value, dtype="f4") + np.arange(4, dtype="f4"))},
        coords={
            "time": (
                "time",
                np.arange(start, start + steps, dtype="f8"),
                {"units": "days since 2000-01-01"},
            )
        },
    )
    ds.to_netcdf(path, encoding={"v": {"chunksizes": (1, 4)}})
    return path


def write_many(directory: Path, n_files: int) -> list[Path]:
    """``n_files`` tiny files of 1 or 2 time steps (chunk 1 along time)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    start = 0
    for i in range(n_files):
        steps = 2 if i % 3 == 0 else 1
        path = directory / f"m{i:04d}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.title = "many files"
            nc.createDimension("time", None)
            nc.createDimension("x", 3)
            time = nc.createVariable("time", "i4", ("time",))
            time.units = "hours since 2000-01-01"
            time[:] = np.arange(start, start + steps)
            var = nc.createVariable("t", "f4", ("time", "x"), chunksizes=(1, 3))
            var[:] = sample_values("float32", (steps, 3), i)
        start += steps
        paths.append(path)
    return paths


@contextmanager
def local_dask_cluster(n_workers: int) -> Iterator[Any]:
    """A Dask client of ``n_workers`` worker processes, one thread each: they have none of
    this process's snapshots."""
    import distributed  # a test extra: its absence fails the test, never skips it

    with (
        distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


# -- bad files --------------------------------------------------------------------------------


def write_truncated(path: Path, good: Path) -> Path:
    """The first half of a real NetCDF4 file."""
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_random(path: Path, n: int = 4096, seed: int = 0) -> Path:
    """Random bytes that do not start with a data magic."""
    data = np.random.default_rng(seed).bytes(n)
    if data[:1] in (b"\x89", b"C"):
        data = b"\x00" + data[1:]
    path.write_bytes(data)
    return path


def write_magic_garbage(path: Path, magic: bytes, n: int = 4096) -> Path:
    """A valid data magic followed by garbage."""
    path.write_bytes(magic + np.random.default_rng(1).bytes(n))
    return path


# -- fixtures ---------------------------------------------------------------------------------

HANG_SECONDS = 120


class TestHung(TimeoutError):
    """A test ran longer than ``HANG_SECONDS`` (a deadlock: kerchunk's translate() can
    hang when garbage collection runs inside it)."""

    __test__ = False


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    """Fail a test that hangs, print every thread's stack, and stop the session.

    A deadlocked scan leaves threads stuck, so the tests after it would hang too.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return
    fired = []

    def on_alarm(signum: int, frame: Any) -> None:
        fired.append(True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TestHung(f"test still running after {HANG_SECONDS} s: hung")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if fired:
        pytest.exit(f"a test hung for {HANG_SECONDS} s; stopping (stacks on stderr)", 3)


@pytest.fixture
def series(tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory: ``series(times, **kw)`` writes ``write_series`` files into a fresh directory."""
    counter = iter(range(1000))

    def make(times: Sequence[Sequence[float]], **kwargs: Any) -> list[Path]:
        return write_series(tmp_path / f"series{next(counter)}", times, **kwargs)

    return make


@pytest.fixture(scope="session")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """300 small files, 1 or 2 steps each, in one directory."""
    return write_many(tmp_path_factory.mktemp("many"), 300)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that honours ``Range: bytes=a-b`` (http.server does not)."""

    def log_message(self, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def do_GET(self) -> None:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path):
            super().do_GET()
            return
        data = Path(path).read_bytes()
        first, last = match.groups()
        if first == "":
            start, stop = max(len(data) - int(last), 0), len(data)
        else:
            start = int(first)
            stop = len(data) if last == "" else min(int(last) + 1, len(data))
        body = data[start:stop]
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{max(stop - 1, start)}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP (with range requests): ``(directory, base_url)``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_RangeHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True, scope="session")
def _private_scan_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The persistent scan cache of the whole run lives in a temporary directory, never in
    the user's cache (subprocesses such as the CLI inherit it through the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def scan_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the files scanned in this process during the test, in order.

    Small collections never go to a worker pool another test started, and every test
    starts and ends with no collection state in the process.
    """
    import fsspec_virtual.scheduling as scheduling_module
    import fsspec_virtual.state as state_module

    calls: list[str] = []
    real = scheduling_module.scan_file

    def counting(fs: Any, source: Any, *args: Any) -> Any:
        calls.append(source.path)
        return real(fs, source, *args)

    monkeypatch.setattr(scheduling_module, "scan_file", counting)
    monkeypatch.setattr(scheduling_module, "pool_running", lambda workers: False)
    state_module.clear_states()
    yield calls
    state_module.clear_states()
