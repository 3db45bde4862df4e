"""A collection whose files differ in format or codec: only the odd file's chunks are computed.

    python benchmarks/mixed.py [--files 60 --steps 4 --ny 180 --nx 360] [--repeats 3]

Writes the same daily data (float32 ``t2m(time, lat, lon)``, one chunk per step, zlib+shuffle)
three times: all NetCDF4; with one file in the middle written as NetCDF3 (big-endian,
uncompressed records); and with one file's chunks written without compression. Opens each
with a cold store (scan cache off), reads ``t2m`` whole through ``zarr.open_group`` and
``xr.open_zarr``, checks the values against ``xr.open_mfdataset``, and reports how many
chunks pass through and how many are computed, MB/s of decoded data, and the same read
through ``open_mfdataset``. Prints a table and writes
``benchmarks/results/mixed-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

import fsspec_virtual
from fsspec_virtual.manifest import COMPUTED
from fsspec_virtual.state import clear_states

HERE = Path(__file__).resolve().parent

#: collection label -> how the middle file is written (None: like the others)
ODD_FILE = {
    "all NetCDF4 (zlib+shuffle)": None,
    "one NetCDF3 file among them": {"format": "NETCDF3_64BIT"},
    "one uncompressed NetCDF4 file": {"compress": False},
}


def write_collection(
    directory: Path, files: int, steps: int, ny: int, nx: int, odd: dict | None
) -> list[Path]:
    """``files`` daily files of ``steps`` steps; the middle one written as ``odd`` says."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(files):
        values = (rng.random((steps, ny, nx), dtype="f4") * 40 + 250).round(2).astype("f4")
        ds = xr.Dataset(
            {"t2m": (("time", "lat", "lon"), values, {"units": "K"})},
            coords={
                "time": (
                    "time",
                    np.arange(i * steps, (i + 1) * steps, dtype="f8"),
                    {"units": "days since 2001-01-01"},
                )
            },
        )
        path = directory / f"t2m_{i:04d}.nc"
        these = odd if (odd is not None and i == files // 2) else {}
        if these.get("format"):
            ds.to_netcdf(path, format=these["format"])
        else:
            compress = these.get("compress", True)
            encoding = {"chunksizes": (1, ny, nx), "zlib": compress, "shuffle": compress}
            ds.to_netcdf(path, format="NETCDF4", encoding={"t2m": encoding})
        paths.append(path)
    return paths


def measure(directory: Path, paths: list[Path], repeats: int) -> dict:
    """Cold open, then whole reads of t2m through zarr and xarray (checked), and through
    open_mfdataset."""
    with xr.open_mfdataset(paths, combine="by_coords") as ds:
        truth = ds["t2m"].values
    nbytes = truth.nbytes
    out: dict = {"open_s": [], "zarr": [], "xarray": [], "open_mfdataset": []}
    for _ in range(repeats):
        clear_states()
        t0 = time.perf_counter()
        fs = fsspec_virtual.VirtualZarrFileSystem(str(directory), concat_dim="time", cache=False)
        state = fs.collection()
        out["open_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        served = zarr.open_group(fs.get_mapper(""), mode="r")["t2m"][...]
        out["zarr"].append(nbytes / (time.perf_counter() - t0) / 1e6)
        if not np.array_equal(served, truth):
            raise SystemExit(f"{directory}: zarr read differs from open_mfdataset")
        state.cache.clear()
        t0 = time.perf_counter()
        with xr.open_zarr(fs.get_mapper("")) as ds:
            loaded = ds["t2m"].values
        out["xarray"].append(nbytes / (time.perf_counter() - t0) / 1e6)
        if not (np.array_equal(loaded, truth) and loaded.dtype == truth.dtype):
            raise SystemExit(f"{directory}: xarray read differs from open_mfdataset")
        t0 = time.perf_counter()
        with xr.open_mfdataset(paths, combine="by_coords") as ds:
            ds["t2m"].load()
        out["open_mfdataset"].append(nbytes / (time.perf_counter() - t0) / 1e6)
    grid = state.manifest.arrays["t2m"].grid
    computed = int((grid.file_id == COMPUTED).sum())
    return {"chunks": int(grid.file_id.size), "computed": computed, "MB": nbytes / 1e6, **out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--ny", type=int, default=180)
    parser.add_argument("--nx", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (label, odd) in enumerate(ODD_FILE.items()):
            directory = Path(tmp) / f"c{n}"
            paths = write_collection(directory, args.files, args.steps, args.ny, args.nx, odd)
            runs[label] = measure(directory, paths, args.repeats)
    med = statistics.median
    base = med(runs[next(iter(runs))]["zarr"])
    lines = [
        f"mixed collections: {args.files} files x {args.steps} steps of {args.ny}x{args.nx} "
        f"float32, {args.repeats} repeat(s), medians; MB/s of decoded data",
        f"{'collection':30} | computed/chunks | open s | zarr MB/s (vs all NetCDF4) | "
        "xarray MB/s | open_mfdataset MB/s",
    ]
    for label, run in runs.items():
        lines.append(
            f"{label:30} | {run['computed']:>6} / {run['chunks']:<6} | {med(run['open_s']):6.2f} | "
            f"{med(run['zarr']):9.0f} ({med(run['zarr']) / base:4.2f})         | "
            f"{med(run['xarray']):11.0f} | {med(run['open_mfdataset']):19.0f}"
        )
    print("\n".join(lines))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"mixed-{stamp}.json").write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
