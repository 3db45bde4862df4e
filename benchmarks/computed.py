"""Computed chunks beside passthrough chunks, for the same data.

    python benchmarks/computed.py [--ny 180 --nx 360] [--repeats 3]

Writes one year of daily data twice, as 12 monthly NetCDF4 files (28-31 days, zlib+shuffle):
once with chunks of 1 day (every chunk lies in one file: all passthrough) and once with
chunks of 10 days (chunks straddle month boundaries: those are computed, the rest pass
through). Reads the whole variable through ``zarr.open_group`` and ``xr.open_zarr``, checks
it against h5py, and reports MB/s of decoded data and how many source chunks a full read
decoded (the target: each at most once). Prints a table and writes
``benchmarks/results/computed-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import calendar
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import xarray as xr
import zarr

import fsspec_virtual
from fsspec_virtual.state import clear_states

HERE = Path(__file__).resolve().parent


def write_year(directory: Path, chunk_days: int, ny: int, nx: int) -> list[Path]:
    """12 monthly files of 2001, daily, one float32 variable; the same values every call."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2001)
    paths, day = [], 0
    for month in range(1, 13):
        n = calendar.monthrange(2001, month)[1]
        path = directory / f"t2m_2001{month:02d}.nc"
        values = (rng.random((n, ny, nx), dtype="f4") * 40 + 250).astype("f4")
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("lat", ny)
            nc.createDimension("lon", nx)
            time_var = nc.createVariable("time", "f8", ("time",))
            time_var.units = "days since 2001-01-01"
            time_var[:] = np.arange(day, day + n)
            var = nc.createVariable(
                "t2m",
                "f4",
                ("time", "lat", "lon"),
                zlib=True,
                shuffle=True,
                complevel=4,
                chunksizes=(min(chunk_days, n), ny, nx),
            )
            var[:] = values
        paths.append(path)
        day += n
    return paths


def h5py_read(paths: list[Path]) -> np.ndarray:
    parts = []
    for path in paths:
        with h5py.File(path, "r") as f:
            parts.append(f["t2m"][...])
    return np.concatenate(parts)


def measure(directory: Path, paths: list[Path], repeats: int) -> dict:
    """Full reads of t2m through zarr and xarray, with the number of source decodes."""
    truth = h5py_read(paths)
    nbytes = truth.nbytes
    out: dict = {"zarr": [], "xarray": [], "decodes": [], "h5py": []}
    for _ in range(repeats):
        clear_states()
        fs = fsspec_virtual.VirtualZarrFileSystem(
            str(directory), concat_dim="time", skip_instance_cache=True
        )
        state = fs.collection()
        group = zarr.open_group(fs.get_mapper(""), mode="r")
        t0 = time.perf_counter()
        served = group["t2m"][...]
        out["zarr"].append(nbytes / (time.perf_counter() - t0) / 1e6)
        out["decodes"].append(state.cache.loads)
        if not np.array_equal(served, truth):
            raise SystemExit(f"{directory}: zarr read differs from h5py")
        state.cache.clear()
        t0 = time.perf_counter()
        with xr.open_zarr(fs.get_mapper("")) as ds:
            loaded = ds["t2m"].values
        out["xarray"].append(nbytes / (time.perf_counter() - t0) / 1e6)
        if not np.array_equal(loaded, truth):
            raise SystemExit(f"{directory}: xarray read differs from h5py")
        t0 = time.perf_counter()
        h5py_read(paths)
        out["h5py"].append(nbytes / (time.perf_counter() - t0) / 1e6)
    report = fs.report()
    entry = next(v for v in report.variables if v.path == "t2m")
    with h5py.File(paths[0], "r") as f:
        chunk_days = f["t2m"].chunks[0]
    source_chunks = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            source_chunks += -(-f["t2m"].shape[0] // chunk_days)
    return {
        "served": {"how": entry.how, "chunks": entry.chunks, "reason": entry.reason},
        "source_chunks": source_chunks,
        "MB": nbytes / 1e6,
        **{k: v for k, v in out.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ny", type=int, default=180)
    parser.add_argument("--nx", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = {}
        for label, days in (
            ("passthrough (chunks of 1 day)", 1),
            ("computed (chunks of 10 days)", 10),
        ):
            paths = write_year(root / f"c{days}", days, args.ny, args.nx)
            runs[label] = measure(root / f"c{days}", paths, args.repeats)
    med = statistics.median
    lines = [
        f"computed vs passthrough: 12 monthly files, 365 x {args.ny} x {args.nx} float32 "
        f"(zlib+shuffle), {args.repeats} repeat(s), median MB/s of decoded data",
        f"{'collection':32} | {'served as':38} | zarr MB/s | xarray MB/s | h5py MB/s | "
        "source decodes / source chunks",
    ]
    for label, run in runs.items():
        served = run["served"]
        counts = ", ".join(f"{n} {k}" for k, n in served["chunks"].items() if n)
        lines.append(
            f"{label:32} | {served['how'] + ' (' + counts + ')':38} | {med(run['zarr']):9.0f} | "
            f"{med(run['xarray']):11.0f} | {med(run['h5py']):9.0f} | "
            f"{max(run['decodes'])} / {run['source_chunks']}"
        )
    print("\n".join(lines))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"computed-{stamp}.json").write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
