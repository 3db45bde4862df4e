"""Kerchunk exports: time and size of ours (``fs.to_kerchunk``) against kerchunk's own
references (``SingleHdf5ToZarr`` per file + ``MultiZarrToZarr``, written as JSON, and as
Parquet by ``kerchunk.df.refs_to_dataframe``) for the same files.

    python benchmarks/export.py                       # small preset's shape, 120 files
    python benchmarks/export.py --preset many-chunks --files 60

Ours is timed from a scanned store (the export alone) and from nothing (scan + export, as
kerchunk's figure is); kerchunk's from nothing. Both exports are read back through fsspec's
ReferenceFileSystem and compared (one variable, every value) before any figure is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import fsspec
import numpy as np
import zarr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PRESETS, ensure_collection  # noqa: E402


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _ours(directory: Path, out: Path, fmt: str, repeats: int) -> tuple[float, float, int, int]:
    """(export alone, scan + export, size, bytes of the provenance record) of our export."""
    from fsspec_virtual import VirtualZarrFileSystem
    from fsspec_virtual.state import clear_states

    target = out / ("ours.json" if fmt == "json" else "ours.parq")

    def cold() -> None:
        clear_states()
        fs = VirtualZarrFileSystem(str(directory), concat_dim="time", cache=False)
        fs.to_kerchunk(str(target), overwrite=True)

    both = _best(cold, repeats)
    fs = VirtualZarrFileSystem(str(directory), concat_dim="time", cache=False)
    fs.collection()
    alone = _best(lambda: fs.to_kerchunk(str(target), overwrite=True), repeats)
    return alone, both, _size(target), _provenance_size(target)


def _provenance_size(target: Path) -> int:
    """Bytes of the export's record of where it came from (the files' versions)."""
    from fsspec_virtual.export.kerchunk import PROVENANCE_FILE, PROVENANCE_KEY

    if target.is_dir():
        return (target / PROVENANCE_FILE).stat().st_size
    record = json.loads(target.read_text())[PROVENANCE_KEY]
    return len(json.dumps(record, separators=(",", ":")))


def _kerchunk(files: list[Path], out: Path, repeats: int) -> dict[str, float]:
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.df import refs_to_dataframe
    from kerchunk.hdf import SingleHdf5ToZarr

    combined: dict = {}

    def build() -> None:
        singles = []
        for path in files:
            gc.disable()  # kerchunk's translate() can deadlock when gc runs inside it
            try:
                singles.append(SingleHdf5ToZarr(str(path)).translate())
            finally:
                gc.enable()
        refs = MultiZarrToZarr(
            singles,
            concat_dims=["time"],
            identical_dims=["lat", "lon"],
            coo_map={"time": "cf:time"},
        ).translate()
        combined.clear()
        combined.update(refs)

    def write_json() -> None:
        with open(out / "kerchunk.json", "w") as f:
            json.dump(combined, f)

    def write_parquet() -> None:
        target = out / "kerchunk.parq"
        if target.exists():
            shutil.rmtree(target)
        refs_to_dataframe(combined, str(target))

    scan = _best(build, repeats)
    return {
        "scan": scan,
        "json": _best(write_json, repeats),
        "parquet": _best(write_parquet, repeats),
        "json_size": _size(out / "kerchunk.json"),
        "parquet_size": _size(out / "kerchunk.parq"),
    }


def _same(out: Path, variable: str) -> None:
    """Both exports read ``variable`` equal through ReferenceFileSystem (or raise)."""
    values = []
    for name in ("ours.json", "ours.parq", "kerchunk.json", "kerchunk.parq"):
        fs = fsspec.filesystem("reference", fo=str(out / name))
        group = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=2)
        values.append((name, np.asarray(group[variable][...])))
    for name, got in values[1:]:
        if not np.array_equal(got, values[0][1], equal_nan=True):
            raise SystemExit(f"{name} reads {variable} differently from ours.json")


def _large(directory: Path, n_chunks: int, repeats: int) -> list[tuple[str, float, int]]:
    """Export time and size of a store holding one synthetic variable of ``n_chunks``
    passthrough chunks (random byte ranges of the collection's files: never read)."""
    from fsspec_virtual import VirtualZarrFileSystem
    from fsspec_virtual.manifest import ArrayMeta, ChunkGrid, VirtualArray
    from fsspec_virtual.metadata import render_metadata

    fs = VirtualZarrFileSystem(str(directory), concat_dim="time", cache=False)
    state = fs.collection()
    rng = np.random.default_rng(0)
    shape = (n_chunks // 100, 10, 10)
    grid = ChunkGrid(
        rng.integers(0, len(state.manifest.urls), shape, dtype=np.int32),
        rng.integers(0, 2**34, shape, dtype=np.uint64),
        rng.integers(1, 2**20, shape, dtype=np.uint64),
    )
    meta = ArrayMeta(shape, (1, 1, 1), "<f4", None, None, None, ("a", "b", "c"))
    arrays = {**state.manifest.arrays, "big": VirtualArray(meta, grid)}
    manifest = replace(state.manifest, arrays=arrays)
    big = replace(state, manifest=manifest, metadata=render_metadata(manifest))
    out = []
    with tempfile.TemporaryDirectory(prefix="export-large-") as tmp:
        from fsspec_virtual.export.kerchunk import to_kerchunk

        for name in ("big.json", "big.parq"):
            url = str(Path(tmp) / name)
            seconds = _best(lambda url=url: to_kerchunk(big, url, overwrite=True), repeats)
            out.append((name.split(".")[1], seconds, _size(Path(url))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--files", type=int, default=120, help="files (days) to write")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="where the collection is written (and reused)")
    parser.add_argument(
        "--large",
        type=int,
        default=2_000_000,
        metavar="N",
        help="also export a synthetic variable of N chunks (0: not)",
    )
    args = parser.parse_args(argv)
    preset = replace(PRESETS[args.preset], days=args.files)
    workdir = Path(args.workdir or HERE / ".data" / f"{preset.name}-{preset.days}")
    files = ensure_collection(preset, workdir, log=lambda *a: print(*a, file=sys.stderr))
    directory = files[0].parent
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        out = Path(tmp)
        theirs = _kerchunk(files, out, args.repeats)
        rows = []
        for fmt in ("json", "parquet"):
            alone, both, size, record = _ours(directory, out, fmt, args.repeats)
            their_write = theirs[fmt]
            their_size = theirs[f"{fmt}_size"]
            rows.append((fmt, alone, both, theirs["scan"] + their_write, size, record, their_size))
        _same(out, preset.variables[0])
    print(
        f"{len(files)} files ({preset.name} shape: {preset.steps} steps of "
        f"{preset.ny}x{preset.nx}, chunks {preset.chunks}, {len(preset.variables)} "
        f"variables), best of {args.repeats}"
    )
    print(
        f"{'format':<8} {'ours export':>12} {'ours scan+export':>17} {'kerchunk':>10} "
        f"{'ratio':>6} {'ours size':>10} {'(record)':>9} {'kerchunk size':>14} {'ratio':>6} "
        f"{'w/o record':>10}"
    )
    for fmt, alone, both, kerchunk, size, record, their_size in rows:
        print(
            f"{fmt:<8} {alone:>11.3f}s {both:>16.3f}s {kerchunk:>9.3f}s "
            f"{kerchunk / both:>5.1f}x {size:>10,} {record:>9,} {their_size:>14,} "
            f"{size / their_size:>5.2f}x {(size - record) / their_size:>9.2f}x"
        )
    print(
        "kerchunk: SingleHdf5ToZarr per file + MultiZarrToZarr + write (json.dump, or "
        "refs_to_dataframe); time ratio: kerchunk / ours from nothing; size ratio: ours / "
        "kerchunk; (record): our record of the snapshot and every file's version"
    )
    if args.large:
        print(f"\na synthetic variable of {args.large:,} passthrough chunks, exported alone:")
        for fmt, seconds, size in _large(directory, args.large, args.repeats):
            per = seconds / args.large * 1e6
            print(f"{fmt:<8} {seconds:>8.2f}s ({per:.2f} us a chunk) {size:>14,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
