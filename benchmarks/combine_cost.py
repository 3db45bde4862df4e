"""How long combining takes next to scanning: synthetic manifests, no files.

``python benchmarks/combine_cost.py [--files 10000] [--variables 10]`` builds one
manifest per "file" (a daily step of ``--variables`` float32 fields on a 180 x 360 grid,
one chunk each, plus time/lat/lon coordinates with their values, as a scan gives them),
then times :func:`fsspec_virtual.combine.combine` (concat dimension inferred, as
``xr.open_mfdataset(combine="by_coords")``) and the metadata rendering, best of 3.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fsspec_virtual.combine import ScannedFile, combine
from fsspec_virtual.manifest import ArrayMeta, ChunkGrid, Manifest, VirtualArray
from fsspec_virtual.metadata import render_metadata

LAT = np.linspace(-89.5, 89.5, 180)
LON = np.linspace(0.5, 359.5, 360)


def _array(shape, dims, dtype="<f4", attrs=None, offset=4096) -> VirtualArray:
    meta = ArrayMeta(shape, shape, dtype, {"id": "zlib", "level": 4}, None, None, dims, attrs or {})
    grid = ChunkGrid(
        np.zeros((1,) * len(shape), np.int32),
        np.full((1,) * len(shape), offset, np.uint64),
        np.full((1,) * len(shape), 100_000, np.uint64),
    )
    return VirtualArray(meta, grid)


def synthetic_file(day: int, variables: int) -> ScannedFile:
    path = f"/archive/era5/day_{day:05d}.nc"
    arrays = {
        "time": _array((1,), ("time",), "<f8", {"units": "days since 2000-01-01"}),
        "lat": _array((180,), ("lat",), "<f8"),
        "lon": _array((360,), ("lon",), "<f8"),
    }
    for v in range(variables):
        arrays[f"var{v}"] = _array((1, 180, 360), ("time", "lat", "lon"), offset=8192 * (v + 1))
    manifest = Manifest((path,), {"": {"title": "synthetic"}}, arrays)
    coords = {"time": np.array([float(day)]), "lat": LAT, "lon": LON}
    return ScannedFile(path, manifest, coords)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--variables", type=int, default=10)
    args = parser.parse_args()
    files = [synthetic_file(d, args.variables) for d in range(args.files)]
    files.reverse()  # listing order is not time order
    best_combine = best_metadata = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        manifest = combine(files, None)
        middle = time.perf_counter()
        render_metadata(manifest)
        end = time.perf_counter()
        best_combine = min(best_combine, middle - start)
        best_metadata = min(best_metadata, end - middle)
    chunks = sum(int(np.prod(a.grid.shape)) for a in manifest.arrays.values())
    print(
        f"{args.files} files x {args.variables} variables ({chunks} chunks): combine "
        f"{best_combine:.3f} s, metadata {best_metadata:.3f} s, total "
        f"{best_combine + best_metadata:.3f} s (best of 3)"
    )


if __name__ == "__main__":
    main()
