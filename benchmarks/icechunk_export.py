"""Export to Icechunk: ``fs.to_icechunk`` against VirtualiZarr's ``vds.vz.to_icechunk``.

On one preset (default ``small``), each tool in a fresh process, ``--repeats`` times:

- scan all files but the last, export them to a new repository (commit);
- add the last file, and export again: our store refreshes and commits the differences;
  VirtualiZarr scans the new file and appends it along ``time``.

Reported: wall seconds of each step (median), the references the second commit wrote, the
repository's size on disk, and whether both repositories read back equal to the files.

    python benchmarks/icechunk_export.py [--preset small] [--repeats 3] [--workdir DIR]

JSON goes to ``benchmarks/results/icechunk-<preset>-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PRESETS, ensure_collection  # noqa: E402


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_back(repo_dir: Path, data: Path, files: list[Path]) -> bool:
    import icechunk
    import numpy as np
    import xarray as xr

    prefix = f"file://{data}/"
    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(repo_dir)),
        authorize_virtual_chunk_access={prefix: None},
    )
    store = repo.readonly_session("main").store
    with (
        xr.open_zarr(store, consolidated=False, zarr_format=3) as exported,
        xr.open_mfdataset([str(f) for f in files], engine="netcdf4", combine="by_coords") as truth,
    ):
        return all(
            np.array_equal(exported[v].values, truth[v].values, equal_nan=True)
            for v in truth.data_vars
        )


def run_ours(data: Path, files: list[Path], repo_dir: Path) -> dict[str, Any]:
    import icechunk

    from fsspec_virtual import VirtualZarrFileSystem

    storage = icechunk.local_filesystem_storage(str(repo_dir))
    t0 = time.perf_counter()
    fs = VirtualZarrFileSystem(str(data), concat_dim="time", cache=False)
    fs.collection()
    t1 = time.perf_counter()
    first = fs.to_icechunk(storage)
    t2 = time.perf_counter()
    shutil.copy(files[-1], data / files[-1].name)
    t3 = time.perf_counter()
    fs.refresh()
    t4 = time.perf_counter()
    second = fs.to_icechunk(storage)
    t5 = time.perf_counter()
    return {
        "scan": t1 - t0,
        "export": t2 - t1,
        "append_scan": t4 - t3,
        "append_export": t5 - t4,
        "references_first": first.references,
        "references_second": second.references,
        "chunks_second": second.chunks,
    }


def run_virtualizarr(data: Path, files: list[Path], repo_dir: Path) -> dict[str, Any]:
    import icechunk
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset, open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    prefix = f"file://{data}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(data)))
    )
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(repo_dir)), config)
    kwargs = {"data_vars": "minimal", "coords": "minimal", "compat": "override"}
    t0 = time.perf_counter()
    urls = [f"file://{data / f.name}" for f in files[:-1]]
    vds = open_virtual_mfdataset(
        urls,
        registry=registry,
        parser=HDFParser(),
        concat_dim="time",
        combine="nested",
        loadable_variables=["time", "lat", "lon"],
        **kwargs,
    )
    t1 = time.perf_counter()
    session = repo.writable_session("main")
    vds.vz.to_icechunk(session.store)
    session.commit("first")
    t2 = time.perf_counter()
    shutil.copy(files[-1], data / files[-1].name)
    t3 = time.perf_counter()
    new = open_virtual_dataset(
        f"file://{data / files[-1].name}",
        registry=registry,
        parser=HDFParser(),
        loadable_variables=["time", "lat", "lon"],
    )
    t4 = time.perf_counter()
    session = repo.writable_session("main")
    new.vz.to_icechunk(session.store, append_dim="time")
    session.commit("append")
    t5 = time.perf_counter()
    refs = sum(
        int((v.data.manifest._paths != "").sum())
        for v in new.variables.values()
        if hasattr(v.data, "manifest")
    )
    return {
        "scan": t1 - t0,
        "export": t2 - t1,
        "append_scan": t4 - t3,
        "append_export": t5 - t4,
        "references_second": refs,
    }


def one(tool: str, preset: str, source: Path) -> dict[str, Any]:
    files = sorted(source.glob(f"{preset}_*.nc"))
    with tempfile.TemporaryDirectory(prefix="ice-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for f in files[:-1]:
            shutil.copy(f, data / f.name)
        repo_dir = Path(tmp) / "repo"
        run = run_ours if tool == "ours" else run_virtualizarr
        out = run(data, files, repo_dir)
        out["repository_bytes"] = _size(repo_dir)
        out["equal"] = _read_back(repo_dir, data, [data / f.name for f in files])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="where the collection is written (and reused)")
    parser.add_argument("--results", default=str(HERE / "results"), help="JSON output directory")
    parser.add_argument("--one", choices=["ours", "virtualizarr"], help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    workdir = Path(a.workdir or HERE / ".data" / a.preset).resolve()
    source = workdir / "files"
    if a.one:
        print(json.dumps(one(a.one, a.preset, source)))
        return 0
    ensure_collection(PRESETS[a.preset], source)
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "virtualizarr": []}
    for _ in range(a.repeats):
        for tool in results:  # interleaved, each in a fresh process
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    tool,
                    "--preset",
                    a.preset,
                    "--workdir",
                    str(workdir),
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "RUST_LOG": "error"},
            )
            results[tool].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = {}
    for tool, runs in results.items():
        summary[tool] = {
            key: statistics.median(r[key] for r in runs)
            if isinstance(runs[0][key], float)
            else runs[0][key]
            for key in runs[0]
        }
        summary[tool]["runs"] = len(runs)
    text = json.dumps({"preset": a.preset, "summary": summary, "runs": results}, indent=1)
    out = Path(a.results) / f"icechunk-{a.preset}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
