"""The ``fsspec-virtual`` command: ``info``, ``scan`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence

__all__ = ["main"]


def _summary(fs) -> str:
    state = fs.collection()
    manifest = state.manifest
    lines = [
        f"files:             {len(state.files)}",
        f"variables:         {len(manifest.arrays)}",
        f"chunks:            {manifest.n_chunks}",
        f"bytes referenced:  {manifest.n_bytes_referenced}",
    ]
    return "\n".join(lines) + "\n\n" + str(fs.report())


def _info(args: argparse.Namespace) -> int:
    import xarray as xr

    from .filesystem import VirtualZarrFileSystem

    fs = VirtualZarrFileSystem(args.path, concat_dim=args.concat_dim)
    ds = xr.open_zarr(fs.get_mapper(""), consolidated=True)
    print(ds)
    print()
    print(_summary(fs))
    return 0


def _scan(args: argparse.Namespace) -> int:
    import time

    from .filesystem import VirtualZarrFileSystem
    from .state import get_state

    fs = VirtualZarrFileSystem(
        args.path,
        concat_dim=args.concat_dim,
        cache_dir=args.cache_dir,
        max_workers=args.workers,
        scheduler=args.scheduler,
        progress=True,
    )
    cache = fs._scan_cache
    assert cache is not None
    start = time.perf_counter()
    state = get_state(fs._spec, fs._scanning, cache)
    elapsed = time.perf_counter() - start
    print(
        f"{len(state.files)} files: {cache.misses} scanned, {cache.hits} reused from the scan "
        f"cache at {cache.fs.unstrip_protocol(cache.root)}, in {elapsed:.1f} s"
    )
    remote, cost = state.scan_cost
    if remote:
        print(
            f"remote scans: {cost.requests} requests ({cost.requests / remote:.1f} per file), "
            f"{cost.bytes} bytes read"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    import h5py
    import numpy as np
    import xarray as xr

    from .demo import write_sample_collection

    directory = args.dir or tempfile.mkdtemp(prefix="fsspec-virtual-demo-")
    paths = write_sample_collection(directory)
    print(f"wrote {len(paths)} NetCDF4 files to {directory}")
    url = f"virtualzarr::{directory}/*.nc"
    print(f'xr.open_zarr("{url}", storage_options={{"virtualzarr": {{"concat_dim": "time"}}}})\n')
    ds = xr.open_zarr(url, storage_options={"virtualzarr": {"concat_dim": "time"}})
    print(ds)
    served = ds["t2m"].values
    with_h5py = np.concatenate([h5py.File(p, "r")["t2m"][()] for p in paths])
    if served.dtype != with_h5py.dtype or not np.array_equal(served, with_h5py):
        print("\nCHECK FAILED: t2m differs from a direct h5py read", file=sys.stderr)
        return 1
    print(f"\nchecked: t2m {served.shape} {served.dtype} equals a direct h5py read of every file")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="fsspec-virtual", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the combined dataset and a summary")
    info.add_argument("path", help="directory, glob, file or URL of the source files")
    info.add_argument("--concat-dim", default=None, help="dimension to concatenate along")
    info.set_defaults(run=_info)
    scan = commands.add_parser("scan", help="scan a collection into the persistent scan cache")
    scan.add_argument("path", help="directory, glob, file or URL of the source files")
    scan.add_argument("--concat-dim", default=None, help="dimension to concatenate along")
    scan.add_argument("--cache-dir", default=None, help="cache location (directory or URL)")
    scan.add_argument("--workers", type=int, default=None, help="scan processes (default: cores)")
    scan.add_argument(
        "--scheduler",
        choices=["processes", "dask"],
        default="processes",
        help="scan in a pool of processes (default) or on the current Dask client",
    )
    scan.set_defaults(run=_scan)
    demo = commands.add_parser("demo", help="write a sample collection and open it")
    demo.add_argument("dir", nargs="?", default=None, help="where to write (default: a temp dir)")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return args.run(args)
