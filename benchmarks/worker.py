"""One measurement, run in a fresh process: ``python worker.py TASK JSON_ARGS``.

Each task imports what it needs *before* starting its clock, measures, and prints one line
``@@RESULT {json}`` on stdout. Nothing is shared between tasks but the files on disk (and the
kerchunk references JSON written by ``scan-kerchunk``): a fresh process has no in-process
cache, which is what makes a "cold" figure cold.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import warnings
from typing import Any

RESULT_MARK = "@@RESULT "
RNG_SEED = 20260
BUDGET = 30.0  # seconds of samples after which a measurement is not repeated

TASKS: dict[str, Any] = {}


def task(fn):
    TASKS[fn.__name__.replace("_", "-")] = fn
    return fn


def now() -> float:
    return time.perf_counter()


def rss_now() -> int:
    """Current resident set size, bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process, bytes."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class OurWarnings:
    """Record the warnings our package emits (they are reported, not hidden)."""

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self.records = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)

    def ours(self) -> list[str]:
        out = []
        for w in self.records:
            if (w.category.__module__ or "").startswith("fsspec_virtual"):
                msg = f"{w.category.__name__}: {w.message}"
                if msg not in out:
                    out.append(msg)
        return out


# -- helpers shared by tasks ------------------------------------------------------------


def ours_options(a) -> dict:
    """The store options a run measures (``--decode``, ``--zarr-format``)."""
    options = {"decode": a.get("decode", "client")}
    if a.get("zarr_format", 2) != 2:
        options["zarr_format"] = a["zarr_format"]
    return options


def open_ours(fs, a):
    """``xr.open_zarr`` of our store in the run's Zarr format."""
    import xarray as xr

    return xr.open_zarr(fs.get_mapper(""), zarr_format=a.get("zarr_format", 2))


def ours_fs(a):
    import fsspec

    # reads are measured with the scan cache off: no state from earlier runs is reused
    return fsspec.filesystem(
        "virtualzarr", path=a["dir"], concat_dim="time", cache=False, **ours_options(a)
    )


def ref_fs(a):
    import fsspec

    return fsspec.filesystem("reference", fo=a["refs"])


def zarr_group(kind: str, a):
    import zarr

    if kind == "ours":
        fmt = a.get("zarr_format", 2)
        return zarr.open_group(ours_fs(a).get_mapper(""), mode="r", zarr_format=fmt)
    return zarr.open_group(ref_fs(a).get_mapper(""), mode="r", zarr_format=2)


def xr_dataset(kind: str, a):
    import xarray as xr

    if kind == "ours":
        return open_ours(ours_fs(a), a)
    return xr.open_zarr(ref_fs(a).get_mapper(""), consolidated=True, zarr_format=2)


def open_mf(a, engine: str):
    import xarray as xr

    return xr.open_mfdataset(
        a["files"],
        engine=engine,
        combine="by_coords",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        parallel=False,
    )


def h5py_read_all(a):
    """The variable, read file by file with h5py (files opened and closed here)."""
    import h5py
    import numpy as np

    steps, ny, nx = a["steps"], a["ny"], a["nx"]
    out = np.empty((len(a["files"]) * steps, ny, nx), dtype="f4")
    for i, path in enumerate(a["files"]):
        with h5py.File(path, "r", rdcc_nbytes=0) as f:
            f[a["var"]].read_direct(out, dest_sel=np.s_[i * steps : (i + 1) * steps])
    return out


def random_chunks(a, n: int):
    """``n`` chunk-aligned selections (time index, lat start, lon start), fixed seed."""
    import numpy as np

    rng = np.random.default_rng(RNG_SEED)
    ct, cy, cx = a["chunks"]
    grid = (len(a["files"]) * a["steps"] // ct, -(-a["ny"] // cy), -(-a["nx"] // cx))
    total = grid[0] * grid[1] * grid[2]
    flat = rng.choice(total, n, replace=n > total)  # distinct chunks where there are enough
    t, y, x = np.unravel_index(flat, grid)
    return [(int(i) * ct, int(j) * cy, int(k) * cx) for i, j, k in zip(t, y, x)]


def time_reads(fn, repeats: int) -> list[float]:
    """Time ``fn`` up to ``repeats`` times, stopping early once BUDGET seconds are spent."""
    times: list[float] = []
    for _ in range(repeats):
        t0 = now()
        fn()
        times.append(now() - t0)
        if sum(times) > BUDGET:
            break
    return times


def add_zmetadata(refs: dict) -> None:
    """Give kerchunk's references a consolidated ``.zmetadata`` key (as a careful user would)."""
    meta = {}
    for key, value in refs.items():
        if key.rsplit("/", 1)[-1] in (".zgroup", ".zattrs", ".zarray"):
            meta[key] = json.loads(value) if isinstance(value, str | bytes) else value
    refs[".zmetadata"] = json.dumps({"zarr_consolidated_format": 1, "metadata": meta})


def count_refs(refs: dict) -> int:
    """Chunk references (byte ranges or inline data) in a kerchunk references dict."""
    return sum(1 for k in refs if not k.rsplit("/", 1)[-1].startswith(".z"))


# -- scan: from nothing to a combined, openable store -------------------------------------


@task
def scan_ours(a):
    import fsspec
    import xarray as xr  # noqa: F401 - imported before the clock starts

    import fsspec_virtual  # noqa: F401  (registers the protocol; import cost is not scan cost)

    with OurWarnings() as w:
        t0 = now()
        # a cold scan: the persistent scan cache is off (its reuse is a separate figure)
        options = ours_options(a)
        fs = fsspec.filesystem(
            "virtualzarr", path=a["dir"], concat_dim="time", cache=False, **options
        )
        ds = open_ours(fs, a)
        scan = now() - t0
        # open: a second open in the same process, from our warm state
        t0 = now()
        fs2 = fsspec.filesystem(
            "virtualzarr", path=a["dir"], concat_dim="time", cache=False, **options
        )
        ds2 = open_ours(fs2, a)
        warm_open = now() - t0
    out = {"scan": scan, "open": warm_open, "warnings": w.ours()}
    out["dims"] = {k: int(v) for k, v in ds2.sizes.items()}
    out["variables"] = sorted(ds.data_vars)
    if a.get("memory"):
        m = fs.collection().manifest
        grid_bytes = sum(arr.grid.nbytes for arr in m.arrays.values())
        out["manifest_bytes"] = grid_bytes
        out["n_chunks"] = m.n_chunks
        out["bytes_per_ref"] = grid_bytes / m.n_chunks
    return out


@task
def scan_kerchunk(a):
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.hdf import SingleHdf5ToZarr

    t0 = now()
    singles = []
    for path in a["files"]:
        # kerchunk's translate() can deadlock when gc runs inside it under zarr 3
        # (kerchunk PR #588): the documented workaround is to disable gc around it.
        gc.disable()
        try:
            singles.append(SingleHdf5ToZarr(path).translate())
        finally:
            gc.enable()
    t1 = now()
    combined = MultiZarrToZarr(
        singles,
        concat_dims=["time"],
        identical_dims=["lat", "lon"],
        coo_map={"time": "cf:time"},
    ).translate()
    t2 = now()
    out = {"scan": t2 - t0, "translate": t1 - t0, "combine": t2 - t1}
    out["n_refs"] = count_refs(combined["refs"])
    if a.get("write_refs"):
        add_zmetadata(combined["refs"])
        tmp = a["refs"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(combined, f)
        os.replace(tmp, a["refs"])
    return out


@task
def scan_virtualizarr(a):
    import numpy as np
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    t0 = now()
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    urls = [f"file://{os.path.abspath(p)}" for p in a["files"]]
    vds = open_virtual_mfdataset(
        urls,
        registry=registry,
        parser=HDFParser(),
        concat_dim="time",
        combine="nested",
        data_vars="minimal",
        coords="minimal",
        compat="override",
    )
    scan = now() - t0
    out = {"scan": scan, "dims": {k: int(v) for k, v in vds.sizes.items()}}
    if a.get("memory"):
        import tracemalloc

        manifests = [v.data.manifest for v in vds.variables.values() if hasattr(v.data, "manifest")]
        n = sum(int((m._paths != "").sum()) for m in manifests)
        reported = sum(m.nbytes for m in manifests)
        # ChunkManifest.nbytes counts 16 bytes per path (numpy StringDType's slot), not the
        # path strings stored out of line: copy the arrays under tracemalloc to see both.
        gc.collect()
        tracemalloc.start()
        copies = [
            (np.array(m._paths, copy=True), m._offsets.copy(), m._lengths.copy()) for m in manifests
        ]
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del copies
        out.update(
            n_chunks=n,
            manifest_nbytes=reported,
            manifest_traced=traced,
            bytes_per_ref=traced / n,
            bytes_per_ref_reported=reported / n,
        )
    return out


# -- open: from references (or our warm state) to an xr.Dataset ---------------------------


@task
def reopen_ours(a):
    """A fresh process opening a collection whose scans are in the persistent cache."""
    import shutil

    import dask.array  # noqa: F401 - see open_reffs
    import fsspec
    import xarray as xr  # noqa: F401 - imported before the clock starts
    import zarr  # noqa: F401

    import fsspec_virtual  # noqa: F401

    if a.get("prefill"):  # untimed: make sure the cache holds this exact collection
        shutil.rmtree(a["cache_dir"], ignore_errors=True)
        fs = fsspec.filesystem(
            "virtualzarr", path=a["dir"], concat_dim="time", cache_dir=a["cache_dir"]
        )
        fs.collection()
        return {"prefill": True}
    if a.get("memory"):  # untimed (tracing slows the open): what an open snapshot holds
        return reopen_memory(a)
    t0 = now()
    fs = fsspec.filesystem(
        "virtualzarr",
        path=a["dir"],
        concat_dim="time",
        cache_dir=a["cache_dir"],
        **ours_options(a),
    )
    ds = open_ours(fs, a)
    out = {"open": now() - t0, "dims": {k: int(v) for k, v in ds.sizes.items()}}
    return out


def reopen_memory(a):
    """Memory a reopened dataset holds (tracemalloc around the open, the store's snapshot
    and every version it checks reads against included), per file beyond the manifest's
    chunk grids, and the grids' bytes per chunk."""
    import tracemalloc

    import fsspec
    import xarray as xr

    gc.collect()
    tracemalloc.start()
    fs = fsspec.filesystem(
        "virtualzarr", path=a["dir"], concat_dim="time", cache_dir=a["cache_dir"]
    )
    ds = xr.open_zarr(fs.get_mapper(""))
    state = fs.collection()
    state.versions  # noqa: B018 - built at the first read: counted as held
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grids = sum(array.grid.nbytes for array in state.manifest.arrays.values())
    chunks = sum(array.grid.file_id.size for array in state.manifest.arrays.values())
    files = len(state.files)
    del ds
    return {
        "files": files,
        "chunks": chunks,
        "held": held,
        "peak": peak,
        "grid_bytes": grids,
        "per_chunk": grids / chunks,
        "per_file": (held - grids) / files,
    }


@task
def open_reffs(a):
    # imports are excluded from every figure: xr.open_zarr imports dask on its first call
    # (~0.45 s of the 0.5 s a fresh process's open took), which would measure the import
    import dask.array  # noqa: F401
    import fsspec
    import xarray as xr
    import zarr  # noqa: F401

    t0 = now()
    rfs = fsspec.filesystem("reference", fo=a["refs"])
    ds = xr.open_zarr(rfs.get_mapper(""), consolidated=True, zarr_format=2)
    out = {"open": now() - t0, "dims": {k: int(v) for k, v in ds.sizes.items()}}
    return out


@task
def open_mfdataset(a):
    import h5netcdf  # noqa: F401
    import netCDF4  # noqa: F401
    import xarray as xr  # noqa: F401

    t0 = now()
    ds = open_mf(a, a["engine"])
    out = {"open": now() - t0, "dims": {k: int(v) for k, v in ds.sizes.items()}}
    if a.get("reads"):
        out["read_xarray"] = time_reads(lambda: ds[a["var"]].compute(), a["reads"])
    return out


# -- read and random access through a Zarr store --------------------------------------------


def compare(x, y) -> dict:
    import numpy as np

    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return {"equal": False, "why": f"shapes differ: {x.shape} vs {y.shape}"}
    same = x == y
    if x.dtype.kind == "f":
        same |= np.isnan(x) & np.isnan(y)
    bad = int((~same).sum())
    if bad == 0:
        return {"equal": True}
    first = tuple(int(i) for i in np.argwhere(~same)[0])
    return {
        "equal": False,
        "why": f"{bad} of {x.size} values differ; first at {first}: {x[first]!r} vs {y[first]!r}",
    }


def h5py_time(a):
    """The files' time values, decoded with cftime (independently of xarray), as int64 ns."""
    import cftime
    import h5py
    import numpy as np

    values = []
    for path in a["files"]:
        with h5py.File(path, "r") as f:
            t = f["time"]
            units, calendar = (t.attrs[k] for k in ("units", "calendar"))
            units = units.decode() if isinstance(units, bytes) else units
            calendar = calendar.decode() if isinstance(calendar, bytes) else calendar
            dates = cftime.num2date(t[...], units, calendar, only_use_python_datetimes=True)
            values.extend(np.datetime64(d, "ns") for d in dates)
    return np.array(values, dtype="M8[ns]").astype("i8")


def masked_h5py(a, var):
    """The variable read with h5py, its _FillValue replaced by NaN (what xarray should give)."""
    import h5py
    import numpy as np

    raw = h5py_read_all({**a, "var": var})
    with h5py.File(a["files"][0], "r") as f:
        fill = f[var].attrs.get("_FillValue")
    if fill is not None:
        raw[raw == np.asarray(fill).astype(raw.dtype)] = np.nan
    return raw


def verify(a, ds, zarr_result, xarray_result) -> dict:
    """Our reads against h5py: raw values through zarr, decoded values through xarray."""
    var = a["var"]
    out = {"verify_zarr_vs_h5py": compare(zarr_result, h5py_read_all(a))}
    out["verify_xarray_vs_h5py"] = compare(xarray_result.values, masked_h5py(a, var))
    # a variable with fill values where they mean "missing" (land in sst): masked alike?
    masked_var = a.get("masked_var")
    if masked_var and masked_var in ds:
        out["verify_masked_var"] = masked_var
        out["verify_masked_xarray_vs_h5py"] = compare(
            ds[masked_var].compute().values, masked_h5py(a, masked_var)
        )
    out["verify_time_vs_cftime"] = compare(
        ds["time"].values.astype("M8[ns]").astype("i8"), h5py_time(a)
    )
    return out


@task
def access(a):
    """Whole-variable reads (zarr, then xarray+dask) and random single-chunk reads."""
    import xarray as xr  # noqa: F401
    import zarr  # noqa: F401

    kind, var, repeats = a["kind"], a["var"], a["repeats"]
    if kind == "ours":
        import fsspec_virtual  # noqa: F401

    out: dict[str, Any] = {}
    with OurWarnings() as w:
        t0 = now()
        arr = zarr_group(kind, a)[var]
        out["setup"] = now() - t0
        result = None

        def zarr_read():
            nonlocal result
            result = arr[...]

        if a.get("read", True):
            out["read_zarr"] = time_reads(zarr_read, repeats)
            ds = xr_dataset(kind, a)
            xres = None

            def xr_read():
                nonlocal xres
                xres = ds[var].compute()

            out["read_xarray"] = time_reads(xr_read, repeats)
            if a.get("verify"):
                out.update(verify(a, ds, result, xres))
            del result, xres
        if a.get("random"):
            ct, cy, cx = a["chunks"]
            lat = []
            for i, j, k in random_chunks(a, a["random"]):
                t0 = now()
                arr[i : i + ct, j : j + cy, k : k + cx]
                lat.append(now() - t0)
            out["random"] = lat
    out["warnings"] = w.ours()
    return out


@task
def h5py_access(a):
    import h5py

    out: dict[str, Any] = {}
    if a.get("read", True):
        out["read"] = time_reads(lambda: h5py_read_all(a), a["repeats"])
    if a.get("random"):
        steps, var = a["steps"], a["var"]
        ct, cy, cx = a["chunks"]
        picks = random_chunks(a, a["random"])
        # files opened per read: what a script that knows the file layout does
        lat = []
        for i, j, k in picks:
            t0 = now()
            with h5py.File(a["files"][i // steps], "r", rdcc_nbytes=0) as f:
                f[var][i % steps : i % steps + ct, j : j + cy, k : k + cx]
            lat.append(now() - t0)
        out["random_open_per_read"] = lat
        # every file kept open (handles opened before the clock): the lower bound. HDF5's
        # chunk cache is off (rdcc_nbytes=0), as zarr keeps no decoded chunks either.
        handles = [h5py.File(p, "r", rdcc_nbytes=0) for p in a["files"]]
        dsets = [h[var] for h in handles]
        lat = []
        for i, j, k in picks:
            t0 = now()
            dsets[i // steps][i % steps : i % steps + ct, j : j + cy, k : k + cx]
            lat.append(now() - t0)
        out["random_open_handles"] = lat
        for h in handles:
            h.close()
    return out


# -- physical limits ------------------------------------------------------------------------

_CHUNKS: list[bytes] = []


def _decode_slice(args: tuple[int, int]) -> int:
    from numcodecs import Shuffle, Zlib

    start, step = args
    zlib, shuffle = Zlib(), Shuffle(elementsize=4)
    n = 0
    for raw in _CHUNKS[start::step]:
        n += len(shuffle.decode(zlib.decode(raw)))
    return n


@task
def limits(a):
    """Raw sequential read of the files (OS cache warm) and zlib+shuffle decode of the chunks."""
    import multiprocessing

    import h5py
    import numpy as np
    from numcodecs import Shuffle, Zlib

    out: dict[str, Any] = {}
    files = a["files"]
    total = sum(os.path.getsize(p) for p in files)
    for p in files:  # warm the OS page cache
        with open(p, "rb") as f:
            f.read()

    def raw_read():
        for p in files:
            with open(p, "rb") as f:
                f.read()

    out["raw_bytes"] = total
    out["raw_read"] = time_reads(raw_read, a["repeats"])

    # the variable's chunks, as stored (compressed), straight from HDF5
    var = a["var"]
    for p in files:
        with h5py.File(p, "r") as f:
            dset = f[var]
            for c in range(dset.id.get_num_chunks()):
                info = dset.id.get_chunk_info(c)
                mask, data = dset.id.read_direct_chunk(info.chunk_offset)
                if mask:
                    raise RuntimeError(f"{p}: chunk {c} has filters disabled (mask {mask})")
                _CHUNKS.append(bytes(data))
    with h5py.File(files[0], "r") as f:  # check the decoder against h5py once
        dset = f[var]
        ct, cy, cx = dset.chunks
        expect = dset[:ct, :cy, :cx]
        got = np.frombuffer(Shuffle(elementsize=4).decode(Zlib().decode(_CHUNKS[0])), "f4")
        if not np.array_equal(got[: expect.size].reshape(expect.shape), expect):
            raise RuntimeError("zlib+shuffle decode of the first chunk differs from h5py")
    out["n_chunks"] = len(_CHUNKS)
    out["compressed_bytes"] = sum(len(c) for c in _CHUNKS)
    out["decode_1core"] = time_reads(lambda: _decode_slice((0, 1)), a["repeats"])
    nproc = a.get("processes") or os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(nproc) as pool:
        # one untimed pass: workers started, the forked chunk pages touched
        pool.map(_decode_slice, [(i, nproc) for i in range(nproc)])
        out["decode_pool"] = time_reads(
            lambda: pool.map(_decode_slice, [(i, nproc) for i in range(nproc)]), a["repeats"]
        )
    out["processes"] = nproc
    return out


# -- memory -------------------------------------------------------------------------------


@task
def memory_kerchunk(a):
    """Bytes held per reference once kerchunk's combined JSON is loaded as a dict."""
    import tracemalloc

    gc.collect()
    rss0 = rss_now()
    tracemalloc.start()
    with open(a["refs"]) as f:
        refs = json.load(f)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    n = count_refs(refs["refs"])
    rss_delta = rss_now() - rss0
    return {"n_refs": n, "traced": traced, "bytes_per_ref": traced / n, "rss_delta": rss_delta}


@task
def rss(a):
    """Peak RSS of scan + open + read of one variable, in this fresh process."""
    import fsspec
    import xarray as xr
    import zarr

    if a["kind"] == "ours":
        import fsspec_virtual  # noqa: F401
    else:
        from kerchunk.combine import MultiZarrToZarr
        from kerchunk.hdf import SingleHdf5ToZarr
    base = rss_now()
    t0 = now()
    if a["kind"] == "ours":
        fs = fsspec.filesystem("virtualzarr", path=a["dir"], concat_dim="time", cache=False)
        mapper = fs.get_mapper("")
        ds = xr.open_zarr(mapper)
        zarr.open_group(mapper, mode="r")[a["var"]][...]
    else:
        singles = []
        for path in a["files"]:
            gc.disable()
            try:
                singles.append(SingleHdf5ToZarr(path).translate())
            finally:
                gc.enable()
        refs = MultiZarrToZarr(
            singles,
            concat_dims=["time"],
            identical_dims=["lat", "lon"],
            coo_map={"time": "cf:time"},
        ).translate()
        del singles
        rfs = fsspec.filesystem("reference", fo=refs)
        mapper = rfs.get_mapper("")
        ds = xr.open_zarr(mapper, consolidated=False, zarr_format=2)
        zarr.open_group(mapper, mode="r", zarr_format=2)[a["var"]][...]
    elapsed = now() - t0
    del ds
    return {"peak_rss": peak_rss(), "rss_after_imports": base, "elapsed": elapsed}


def main() -> None:
    global BUDGET
    # "-": the arguments come on stdin (10,000 file names are past the argv limit)
    name, spelled = sys.argv[1], sys.argv[2]
    args = json.loads(sys.stdin.read() if spelled == "-" else spelled)
    BUDGET = float(args.get("budget", BUDGET))
    result = TASKS[name](args)
    result["peak_rss_process"] = peak_rss()
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
