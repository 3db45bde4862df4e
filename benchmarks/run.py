"""Side-by-side benchmark: fsspec-virtual vs kerchunk, VirtualiZarr, open_mfdataset and h5py.

    python benchmarks/run.py --preset small|medium|many-chunks [--repeats N]
                             [--only scan,open,read,random,memory] [--workdir DIR]

Writes (once, then reuses) a collection of climate-like NetCDF4 files, measures every figure
in fresh processes (``worker.py``), prints one table and writes the figures as JSON to
``benchmarks/results/<preset>-<timestamp>.json``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PRESETS, Preset, ensure_collection  # noqa: E402
from worker import RESULT_MARK  # noqa: E402

STEPS = ("scan", "open", "read", "random", "memory")
READ_VAR = "t2m"
MASKED_VAR = "sst"  # holds _FillValue over land: checks our masking
RANDOM_READS = 200
PACKAGES = (
    "fsspec-virtual",
    "fsspec",
    "zarr",
    "xarray",
    "kerchunk",
    "virtualizarr",
    "h5py",
    "netCDF4",
    "h5netcdf",
    "numcodecs",
    "numpy",
    "dask",
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class TaskError(Exception):
    """A measuring subprocess failed; the message says why in one line."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Runner:
    """Runs worker tasks in fresh processes and keeps a log of failures."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.failures: dict[str, dict[str, str]] = {}

    def run(self, task: str, args: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        label = label or task
        # arguments on stdin: an archive's file list is past the argv limit
        cmd = [sys.executable, str(HERE / "worker.py"), task, "-"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                input=json.dumps(args),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=env,
                cwd=HERE,
            )
        except subprocess.TimeoutExpired:
            err = TaskError(f"timed out after {self.timeout:.0f} s")
            self.failures[label] = {"reason": err.reason, "stderr": ""}
            raise err from None
        wall = time.perf_counter() - t0
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
                result["process_wall"] = wall
                return result
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"exit status {proc.returncode}, no output"
        detail = "\n".join(lines[-25:])
        self.failures[label] = {"reason": reason[:400], "stderr": detail}
        raise TaskError(reason[:400], detail)


def attempt(runner: Runner, task: str, args: dict[str, Any], label: str) -> dict[str, Any]:
    """Run a task; a failure becomes ``{"error": reason}`` instead of an exception."""
    try:
        return runner.run(task, args, label)
    except TaskError as e:
        log(f"  ! {label} failed: {e.reason}")
        return {"error": e.reason}


def repeat(runner: Runner, task: str, args: dict, n: int, label: str, first: dict | None = None):
    """Up to ``n`` fresh-process runs; ``first`` adds arguments to the first run only.

    Runs stop early once they have taken more than ``args["budget"]`` seconds in total, so a
    slow peer is measured fewer times rather than making the whole run slow.
    """
    results = []
    spent = 0.0
    for i in range(n):
        res = attempt(runner, task, {**args, **(first or {})} if i == 0 else args, label)
        results.append(res)
        spent += res.get("process_wall", 0.0)
        if "error" in res or spent > args.get("budget", float("inf")):
            break
    return results


# -- figures ------------------------------------------------------------------------------


def stat(samples: list[float], scale: float = 1.0, invert: float | None = None) -> dict:
    """best/median of ``samples`` (seconds), scaled, or as throughput ``invert / seconds``."""
    if invert is not None:
        values = [invert / s for s in samples]
        return {"best": max(values), "median": statistics.median(values), "samples": values}
    values = [s * scale for s in samples]
    return {"best": min(values), "median": statistics.median(values), "samples": values}


def collect(results: list[dict], key: str, **kw) -> dict:
    """A figure's entry from runs' results: the error if any failed, else best/median."""
    if not results:
        return {"unavailable": "not measured"}
    for res in results:
        if "error" in res:
            return {"unavailable": res["error"]}
    samples: list[float] = []
    for res in results:
        value = res.get(key)
        if value is None:
            return {"unavailable": f"no {key!r} in result"}
        samples.extend(value if isinstance(value, list) else [value])
    return stat(samples, **kw)


def single(value: float | None, error: str | None = None) -> dict:
    if error is not None:
        return {"unavailable": error}
    if value is None:
        return {"unavailable": "not measured"}
    return {"best": value, "median": value, "samples": [value]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency(results: dict, key: str) -> tuple[dict, dict]:
    if "error" in results:
        bad = {"unavailable": results["error"]}
        return bad, bad
    values = results.get(key)
    if not values:
        bad = {"unavailable": "not measured"}
        return bad, bad
    ms = [v * 1000 for v in values]
    med, p95 = statistics.median(ms), percentile(ms, 0.95)
    return single(med), single(p95)


def figure(name: str, unit: str, better: str, ours: dict, peers: dict[str, dict], note="") -> dict:
    for peer in peers.values():
        if "median" in peer and "median" in ours and peer["median"]:
            peer["ratio"] = ours["median"] / peer["median"]
    return {
        "figure": name,
        "unit": unit,
        "better": better,
        "ours": ours,
        "peers": peers,
        "note": note,
    }


# -- the table ----------------------------------------------------------------------------


def num(x: float | None) -> str:
    """A figure with 3 significant digits or so (``-`` for none)."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt(entry: dict, ours: bool = False) -> str:
    if "median" not in entry:
        reason = entry.get("unavailable", entry.get("error", "?"))
        if reason in ("", "not measured"):
            return reason
        return f"ERROR: {reason}" if ours else f"unavailable: {reason}"
    best, med = entry["best"], entry["median"]
    if len(entry.get("samples", [])) <= 1 or num(best) == num(med):
        return num(med)
    return f"{num(best)} / {num(med)}"


def render_table(figures: list[dict]) -> str:
    head = ("figure [unit] (better)", "ours", "peer", "peer value", "ours/peer")
    rows: list[tuple[str, ...] | None] = [head, None]
    for fig in figures:
        label = f"{fig['figure']} [{fig['unit']}] ({fig['better']} is better)"
        ours = fmt(fig["ours"], ours=True)
        peers = list(fig["peers"].items()) or [("-", {"unavailable": ""})]
        for i, (peer, entry) in enumerate(peers):
            ratio = f"{entry['ratio']:.3g}" if "ratio" in entry else "-"
            rows.append((label if i == 0 else "", ours if i == 0 else "", peer, fmt(entry), ratio))
        rows.append(None)
    width = [max(len(r[i]) for r in rows if r is not None) for i in range(len(head))]
    width[1] = min(width[1], 40)  # long error reasons would stretch the table
    width[3] = min(width[3], 60)
    rule = "-+-".join("-" * n for n in width)
    lines = []
    for r in rows:
        if r is None:
            lines.append(rule)
        else:
            cells = [c if len(c) <= n else c[: n - 1] + "…" for c, n in zip(r, width)]
            lines.append(" | ".join(c.ljust(n) for c, n in zip(cells, width)).rstrip())
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=HERE, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "package_dirty": bool(git("status", "--porcelain", "--", "../fsspec_virtual")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--repeats", type=int, help="fresh-process repeats of each figure")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--workdir", help="where the collection is written (and reused)")
    parser.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds after which a measurement is not repeated further (default 30)",
    )
    parser.add_argument("--results", default=str(HERE / "results"), help="JSON output directory")
    parser.add_argument(
        "--decode",
        choices=("client", "store"),
        default="client",
        help="who decodes our chunks in the read figures (the store's decode= option)",
    )
    parser.add_argument(
        "--zarr-format",
        type=int,
        choices=(2, 3),
        default=2,
        help="the Zarr format our store serves and xarray/zarr open (the store's zarr_format=)",
    )
    opts = parser.parse_args(argv)

    preset: Preset = PRESETS[opts.preset]
    repeats = max(1, opts.repeats or preset.repeats)
    only = set(STEPS) if not opts.only else {s.strip() for s in opts.only.split(",") if s.strip()}
    unknown = only - set(STEPS)
    if unknown:
        parser.error(f"--only: unknown step(s) {sorted(unknown)}; choose from {STEPS}")
    workdir = Path(opts.workdir or HERE / ".data" / preset.name).resolve()

    started = time.perf_counter()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    paths = ensure_collection(preset, workdir / "files", log=log)
    gen_time = time.perf_counter() - t0
    files = [str(p) for p in paths]
    disk_bytes = sum(p.stat().st_size for p in paths)
    refs_path = workdir / "kerchunk_refs.json"
    base = {
        "dir": str(workdir / "files"),
        "files": files,
        "var": READ_VAR,
        "steps": preset.steps,
        "ny": preset.ny,
        "nx": preset.nx,
        "chunks": list(preset.chunks),
        "refs": str(refs_path),
        "budget": opts.budget,
        "masked_var": MASKED_VAR,
        "decode": opts.decode,
        "zarr_format": opts.zarr_format,
    }
    mb = preset.var_nbytes / 1e6
    log(
        f"preset {preset.name}: {len(files)} files, {disk_bytes / 1e6:.0f} MB on disk, "
        f"{preset.n_chunks} data chunks of {preset.chunks}; {repeats} repeat(s); "
        f"steps {','.join(s for s in STEPS if s in only)}"
    )
    runner = Runner(preset.timeout)
    figures: list[dict] = []
    problems: list[str] = []
    peer_notes: list[str] = []
    raw: dict[str, Any] = {}

    # scan (kerchunk first: its first run writes the references the ReferenceFileSystem reads)
    needs_refs = bool(only & {"open", "read", "random", "memory"})
    refs_fresh = refs_path.exists() and refs_path.stat().st_mtime >= max(
        p.stat().st_mtime for p in paths
    )
    scan_ours: list[dict] = []
    if "scan" in only:
        log("scan: kerchunk ...")
        raw["scan_kerchunk"] = repeat(
            runner, "scan-kerchunk", base, repeats, "scan kerchunk", {"write_refs": True}
        )
        log("scan: ours ...")
        scan_ours = repeat(runner, "scan-ours", base, repeats, "scan ours", {"memory": True})
        log("scan: virtualizarr ...")
        raw["scan_virtualizarr"] = repeat(
            runner, "scan-virtualizarr", base, repeats, "scan virtualizarr", {"memory": True}
        )
        figures.append(
            figure(
                "scan: files -> combined store",
                "s",
                "lower",
                collect(scan_ours, "scan"),
                {
                    "kerchunk (serial) + MultiZarrToZarr": collect(raw["scan_kerchunk"], "scan"),
                    "VirtualiZarr open_virtual_mfdataset": collect(
                        raw["scan_virtualizarr"], "scan"
                    ),
                },
                "ours: fsspec.filesystem + xr.open_zarr; kerchunk: translate per file + combine "
                "(refs dict in memory); VirtualiZarr: combined virtual dataset in memory",
            )
        )
    elif needs_refs and not refs_fresh:
        log("kerchunk references (for the ReferenceFileSystem) ...")
        raw["scan_kerchunk"] = [
            attempt(runner, "scan-kerchunk", {**base, "write_refs": True}, "kerchunk refs")
        ]
    refs_error = None
    if needs_refs and not refs_path.exists():
        refs_error = "no kerchunk references: " + runner.failures.get(
            "scan kerchunk", runner.failures.get("kerchunk refs", {"reason": "?"})
        ).get("reason", "?")

    def reffs(task: str, args: dict, label: str, n: int = 1, first=None) -> list[dict]:
        if refs_error:
            return [{"error": refs_error}]
        return repeat(runner, task, args, n, label, first)

    # open
    mf: dict[str, list[dict]] = {}
    if "open" in only:
        if not scan_ours:
            log("open: ours ...")
            scan_ours = repeat(runner, "scan-ours", base, repeats, "scan ours")
        log("open: ReferenceFileSystem ...")
        raw["open_reffs"] = reffs("open-reffs", base, "open reffs", repeats)
        log("open: ours from the persistent scan cache ...")
        reopen_args = {**base, "cache_dir": str(workdir / "scan-cache")}
        attempt(runner, "reopen-ours", {**reopen_args, "prefill": True}, "reopen ours: fill")
        raw["reopen_ours"] = repeat(runner, "reopen-ours", reopen_args, repeats, "reopen ours")
        raw["reopen_memory"] = attempt(
            runner, "reopen-ours", {**reopen_args, "memory": True}, "reopen ours: memory"
        )
        for engine in ("netcdf4", "h5netcdf"):
            log(f"open: open_mfdataset({engine}) ...")
            first = {"reads": repeats} if "read" in only else None
            mf[engine] = repeat(
                runner,
                "open-mfdataset",
                {**base, "engine": engine},
                repeats,
                f"open_mfdataset {engine}",
                first,
            )
        figures.append(
            figure(
                "open: refs/warm state -> xr.Dataset",
                "s",
                "lower",
                collect(scan_ours, "open"),
                {
                    "xr.open_zarr(ReferenceFileSystem)": collect(raw["open_reffs"], "open"),
                    "open_mfdataset netcdf4": collect(mf["netcdf4"], "open"),
                    "open_mfdataset h5netcdf": collect(mf["h5netcdf"], "open"),
                },
                "ours: a second open in the process that scanned; RefFS: load JSON refs + "
                "open_zarr (consolidated); open_mfdataset: combine=by_coords, minimal",
            )
        )
        figures.append(
            figure(
                "reopen: new process, warm scan cache -> xr.Dataset",
                "s",
                "lower",
                collect(raw["reopen_ours"], "open"),
                {
                    "ours, first open (scan figure)": collect(scan_ours, "scan"),
                    "xr.open_zarr(ReferenceFileSystem)": collect(raw["open_reffs"], "open"),
                },
                "ours: fsspec.filesystem + open_zarr in a fresh process whose scans are in the "
                "persistent cache (issue 5: >= 20x faster than first open, faster than the JSON)",
            )
        )
        figures.append(
            figure(
                "reopen: memory held per file (beyond the chunk grids)",
                "B",
                "lower",
                collect([raw["reopen_memory"]], "per_file"),
                {"chunk grids, per chunk": collect([raw["reopen_memory"]], "per_chunk")},
                "tracemalloc around fsspec.filesystem + open_zarr in a fresh process, warm "
                "scan cache: snapshot, versions, metadata and xarray/dask's objects (issue 14: "
                "<= 1 KiB a file, ~20 B a chunk)",
            )
        )
        figures.append(
            figure(
                "first open: files -> xr.Dataset",
                "s",
                "lower",
                collect(scan_ours, "scan"),
                {
                    "open_mfdataset netcdf4": collect(mf["netcdf4"], "open"),
                    "open_mfdataset h5netcdf": collect(mf["h5netcdf"], "open"),
                },
                "ours cold (scan figure) vs open_mfdataset, which has no reusable state",
            )
        )
    raw["scan_ours"] = scan_ours
    raw["open_mfdataset"] = mf

    # read and random access
    if only & {"read", "random"}:
        do_read = "read" in only
        rand = RANDOM_READS if "random" in only else 0
        args = {**base, "repeats": repeats, "read": do_read, "random": rand}
        log("read/random: ours ...")
        ours_acc = attempt(
            runner, "access", {**args, "kind": "ours", "verify": do_read}, "access ours"
        )
        log("read/random: ReferenceFileSystem ...")
        ref_acc = reffs("access", {**args, "kind": "reffs", "verify": do_read}, "access reffs")[0]
        log("read/random: h5py ...")
        h5 = attempt(runner, "h5py-access", args, "h5py")
        raw.update(access_ours=ours_acc, access_reffs=ref_acc, h5py=h5)
        if do_read:
            log("read: physical limits ...")
            lim = attempt(runner, "limits", {**base, "repeats": repeats}, "limits")
            raw["limits"] = lim
            if "open" not in only:
                for engine in ("netcdf4", "h5netcdf"):
                    log(f"read: open_mfdataset({engine}) ...")
                    mf[engine] = [
                        attempt(
                            runner,
                            "open-mfdataset",
                            {**base, "engine": engine, "reads": repeats},
                            f"open_mfdataset {engine}",
                        )
                    ]
            raw_mb = lim.get("raw_bytes", 0) / 1e6
            figures.append(
                figure(
                    f"read {READ_VAR} via zarr ({mb:.0f} MB)",
                    "MB/s",
                    "higher",
                    collect([ours_acc], "read_zarr", invert=mb),
                    {
                        "zarr on ReferenceFileSystem": collect([ref_acc], "read_zarr", invert=mb),
                        "h5py, file by file": collect([h5], "read", invert=mb),
                        "limit: raw file read (cache warm)*": collect(
                            [lim], "raw_read", invert=raw_mb
                        ),
                        f"limit: zlib+shuffle decode, {lim.get('processes', '?')} procs": collect(
                            [lim], "decode_pool", invert=mb
                        ),
                        "limit: zlib+shuffle decode, 1 core": collect(
                            [lim], "decode_1core", invert=mb
                        ),
                    },
                    "decoded MB/s (raw read: file MB/s over all files)",
                )
            )
            figures.append(
                figure(
                    f"read {READ_VAR} via xarray+dask",
                    "MB/s",
                    "higher",
                    collect([ours_acc], "read_xarray", invert=mb),
                    {
                        "xr.open_zarr(ReferenceFileSystem)": collect(
                            [ref_acc], "read_xarray", invert=mb
                        ),
                        "open_mfdataset netcdf4": collect(
                            mf.get("netcdf4", [])[:1], "read_xarray", invert=mb
                        ),
                        "open_mfdataset h5netcdf": collect(
                            mf.get("h5netcdf", [])[:1], "read_xarray", invert=mb
                        ),
                        "h5py, file by file": collect([h5], "read", invert=mb),
                    },
                    "ds[var].compute() with xarray's default chunks",
                )
            )
            checks = (
                ("verify_zarr_vs_h5py", f"ours zarr read of {READ_VAR} vs h5py"),
                ("verify_xarray_vs_h5py", f"ours xarray read of {READ_VAR} vs h5py, masked"),
                ("verify_masked_xarray_vs_h5py", f"ours xarray read of {MASKED_VAR} vs h5py"),
                ("verify_time_vs_cftime", "ours decoded time vs h5py + cftime"),
            )
            for key, what in checks:
                check = ours_acc.get(key)
                if check is None:
                    if "error" not in ours_acc:
                        problems.append(f"{what}: not verified")
                elif not check["equal"]:
                    problems.append(f"MISMATCH: {what}: {check['why']}")
            for key, what in checks:
                check = ref_acc.get(key)
                if check is not None and not check["equal"]:
                    peer_notes.append(f"kerchunk refs: {what.replace('ours ', '')}: {check['why']}")
        if rand:
            o_med, o_p95 = latency(ours_acc, "random")
            r_med, r_p95 = latency(ref_acc, "random")
            h_med, h_p95 = latency(h5, "random_open_handles")
            f_med, f_p95 = latency(h5, "random_open_per_read")
            for label, ours_v, peer_v in (
                ("median", o_med, (r_med, h_med, f_med)),
                ("p95", o_p95, (r_p95, h_p95, f_p95)),
            ):
                figures.append(
                    figure(
                        f"random single-chunk read, {label}",
                        "ms",
                        "lower",
                        ours_v,
                        {
                            "zarr on ReferenceFileSystem": peer_v[0],
                            "h5py, files kept open": peer_v[1],
                            "h5py, file opened per read": peer_v[2],
                        },
                        f"{RANDOM_READS} chunk-aligned reads of {READ_VAR} through zarr",
                    )
                )

    # memory
    if "memory" in only:
        first_ours = scan_ours[0] if scan_ours else {}
        if "bytes_per_ref" not in first_ours and "error" not in first_ours:
            log("memory: ours ...")
            first_ours = attempt(runner, "scan-ours", {**base, "memory": True}, "memory ours")
            raw["memory_ours"] = first_ours
        vz = raw.get("scan_virtualizarr", [{}])[0]
        if "bytes_per_ref" not in vz and "error" not in vz:
            log("memory: virtualizarr ...")
            vz = attempt(
                runner, "scan-virtualizarr", {**base, "memory": True}, "memory virtualizarr"
            )
            raw["memory_virtualizarr"] = vz
        log("memory: kerchunk references dict ...")
        kmem = reffs("memory-kerchunk", base, "memory kerchunk")[0]
        raw["memory_kerchunk"] = kmem
        figures.append(
            figure(
                "memory per chunk reference",
                "bytes",
                "lower",
                single(first_ours.get("bytes_per_ref"), first_ours.get("error")),
                {
                    "kerchunk refs dict (json.load)": single(
                        kmem.get("bytes_per_ref"), kmem.get("error")
                    ),
                    "VirtualiZarr ChunkManifest (traced)": single(
                        vz.get("bytes_per_ref"), vz.get("error")
                    ),
                    "VirtualiZarr ChunkManifest .nbytes": single(
                        vz.get("bytes_per_ref_reported"), vz.get("error")
                    ),
                },
                "ours: manifest grids' nbytes / n_chunks; others: tracemalloc",
            )
        )
        log("memory: peak RSS, ours ...")
        rss_ours = attempt(runner, "rss", {**base, "kind": "ours"}, "rss ours")
        log("memory: peak RSS, kerchunk ...")
        rss_k = attempt(runner, "rss", {**base, "kind": "kerchunk"}, "rss kerchunk")
        raw.update(rss_ours=rss_ours, rss_kerchunk=rss_k)
        mib = 1 / 2**20
        figures.append(
            figure(
                "peak RSS, scan+open+read",
                "MiB",
                "lower",
                single(
                    rss_ours["peak_rss"] * mib if "peak_rss" in rss_ours else None,
                    rss_ours.get("error"),
                ),
                {
                    "kerchunk + ReferenceFileSystem": single(
                        rss_k["peak_rss"] * mib if "peak_rss" in rss_k else None,
                        rss_k.get("error"),
                    )
                },
                "ru_maxrss of a fresh process (imports included: "
                f"ours {rss_ours.get('rss_after_imports', 0) * mib:.0f} MiB, "
                f"kerchunk {rss_k.get('rss_after_imports', 0) * mib:.0f} MiB after imports)",
            )
        )

    # our own errors and warnings
    for label, failure in runner.failures.items():
        if "ours" in label:
            problems.append(f"ERROR in {label}: {failure['reason']}")
    our_warnings: list[str] = []
    for res in [*scan_ours, raw.get("access_ours") or {}]:
        for w in res.get("warnings", []):
            if w not in our_warnings:
                our_warnings.append(w)
    for res in scan_ours[:1]:
        dims = res.get("dims")
        expect = {"time": preset.days * preset.steps, "lat": preset.ny, "lon": preset.nx}
        if dims and dims != expect:
            problems.append(f"ours: dataset dims {dims}, expected {expect}")
        if res.get("variables") and sorted(res["variables"]) != sorted(preset.variables):
            problems.append(f"ours: variables {res['variables']}, expected {preset.variables}")

    wall = time.perf_counter() - started
    table = render_table(figures)
    header = (
        f"fsspec-virtual benchmark, preset {preset.name}: {len(files)} files x {preset.steps} "
        f"steps of {preset.ny}x{preset.nx}, chunks {preset.chunks}, {len(preset.variables)} "
        f"float32 variables, {preset.n_chunks} data chunks, {disk_bytes / 1e6:.0f} MB on disk; "
        f"{repeats} repeat(s), values 'best / median', ratio of medians; "
        f"{os.cpu_count()} cores; wall {wall:.0f} s"
    )
    print(header)
    print(table)
    if "read" in only:
        print(
            "* raw file read: MB/s of file bytes (all variables), OS page cache warm; every "
            "other MB/s is decoded bytes of one variable."
        )
    if our_warnings:
        print("\nwarnings from fsspec-virtual:")
        for w in our_warnings:
            print(f"  {w}")
    peer_failures = {k: v for k, v in runner.failures.items() if "ours" not in k}
    if peer_failures:
        print("\npeers that failed:")
        for label, failure in peer_failures.items():
            print(f"  {label}: {failure['reason']}")
    if peer_notes:
        print("\npeers' reads that differ from h5py:")
        for note in peer_notes:
            print(f"  {note}")
    if problems:
        print("\n" + "!" * 78)
        print("!!! PROBLEMS WITH fsspec-virtual IN THIS RUN:")
        for p in problems:
            print(f"!!!   {p}")
        print("!" * 78)
    else:
        if "read" in only and "error" not in (raw.get("access_ours") or {}):
            print(
                f"\nours verified: {READ_VAR} equals h5py (raw through zarr; masked through "
                f"xarray), {MASKED_VAR} masked like h5py's _FillValue, time equals cftime's"
            )

    out_dir = Path(opts.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{preset.name}-{stamp}.json"
    doc = {
        "preset": asdict(preset),
        "timestamp": stamp,
        "repeats": repeats,
        "steps": sorted(only),
        "decode": opts.decode,
        "zarr_format": opts.zarr_format,
        "wall_seconds": wall,
        "generation_seconds": gen_time,
        "collection": {
            "directory": base["dir"],
            "files": len(files),
            "disk_bytes": disk_bytes,
            "data_chunks": preset.n_chunks,
            "read_variable": READ_VAR,
            "read_variable_bytes": preset.var_nbytes,
        },
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": versions(),
        "git": git_state(),
        "figures": figures,
        "problems": problems,
        "peer_notes": peer_notes,
        "our_warnings": our_warnings,
        "failures": runner.failures,
        "raw": raw,
    }
    out_path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"results: {out_path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
