"""Remote benchmark: a collection served over HTTP, fsspec-virtual vs kerchunk and the
ReferenceFileSystem, with every request counted on the server.

    python benchmarks/remote.py [--preset small] [--repeats 3] [--var t2m]

The preset's files (``datagen.py``) are served by the aiohttp test server of
``tests/servers.py`` on 127.0.0.1, in a process of its own. Measured, in this process:

1. scan: listing + scan + combine into a store: ours (``fs.collection()``) vs kerchunk
   (``SingleHdf5ToZarr`` per file + ``MultiZarrToZarr``), with the requests per file the
   server received (and ours as ``fs.report()`` counts them);
2. read of one whole variable through zarr and through ``xr.open_zarr``: ours vs a
   ReferenceFileSystem over kerchunk's references, MB/s and GET requests;
3. correctness: ours against the ReferenceFileSystem and h5py (exit status 1 if ours differs);
4. our scan with a few ``scan_options`` (block size and cache type of the remote open).

Prints two tables; writes everything to ``benchmarks/results/remote-<preset>-<stamp>.json``.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from datagen import PRESETS, ensure_collection  # noqa: E402
from run import git_state, num, versions  # noqa: E402
from worker import compare, h5py_read_all, masked_h5py  # noqa: E402

from tests.servers import Hit  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")

#: (label, scan_options) tried for our scan (another ``cache_type`` does not inherit the
#: block cache's ``cache_options``).
SCAN_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("blockcache 64 KiB", {"cache_type": "blockcache", "block_size": 64 * KIB}),
    ("blockcache 256 KiB", {"cache_type": "blockcache", "block_size": 256 * KIB}),
    ("blockcache 512 KiB", {"cache_type": "blockcache", "block_size": 512 * KIB}),
    ("blockcache 2 MiB (default)", {"cache_type": "blockcache", "block_size": 2 * MIB}),
    ("readahead 5 MiB (fsspec HTTP default)", {"cache_type": "readahead", "block_size": 5 * MIB}),
    ("first 64 KiB", {"cache_type": "first", "block_size": 64 * KIB}),
    ("first 512 KiB", {"cache_type": "first", "block_size": 512 * KIB}),
    ("none", {"cache_type": "none", "block_size": 64 * KIB}),
]
for _, _opts in SCAN_OPTIONS:
    _opts["cache_options"] = {"maxblocks": 32} if _opts["cache_type"] == "blockcache" else {}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def now() -> float:
    return time.perf_counter()


# -- what the server saw --------------------------------------------------------------------


#: The server process: serves a directory, then answers "reset" and "hits" on stdin.
_SERVER_SCRIPT = """
import json, sys
from dataclasses import asdict
sys.path.insert(0, sys.argv[1])
from tests.servers import serve_directory
with serve_directory(sys.argv[2]) as server:
    latency = float(sys.argv[3])
    print(server.url, flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "reset":
            server.reset()
            print("ok", flush=True)
        elif command == "hits":
            print(json.dumps([asdict(h) for h in server.hits]), flush=True)
        elif command == "delay":
            server.delay.update({name: latency for name in json.loads(argument)})
            print("ok", flush=True)
"""


class ServerProcess:
    """The test HTTP server of ``tests/servers.py``, in a process of its own: a server
    thread in this process would share the GIL with the clients it is measuring (a read
    path with more thread hand-offs would look slower than it is)."""

    def __init__(self, root: Path, latency: float) -> None:
        import subprocess

        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT, str(REPO), str(root), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError("the HTTP server process did not start")

    def _ask(self, line: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline()

    @property
    def hits(self) -> list[Hit]:
        """Every request received since the last reset."""
        return [Hit(**h) for h in json.loads(self._ask("hits"))]

    def reset(self) -> None:
        """Forget the requests received so far."""
        self._ask("reset")

    def delay(self, names: list[str]) -> None:
        """Delay each GET of these files by the latency given at start."""
        self._ask("delay " + json.dumps(names))

    def close(self) -> None:
        """Stop the server."""
        self._process.kill()
        self._process.wait()


HTTPServer = ServerProcess


def traffic(server: HTTPServer, sizes: dict[str, int]) -> dict[str, int]:
    """Requests the server received since its last reset, by method, and bytes sent."""
    hits = list(server.hits)
    sent = 0
    for h in hits:
        if h.method != "GET" or h.status >= 400:
            continue
        size = sizes.get(h.path, 0)  # directory index pages count as 0 bytes
        m = _RANGE.fullmatch(h.range or "")
        if m is None:
            sent += size
        else:
            start = int(m.group(1))
            stop = size if m.group(2) == "" else min(int(m.group(2)) + 1, size)
            sent += max(stop - start, 0)
    return {
        "requests": len(hits),
        "get": sum(h.method == "GET" for h in hits),
        "head": sum(h.method == "HEAD" for h in hits),
        "other": sum(h.method not in ("GET", "HEAD") for h in hits),
        "bytes": sent,
    }


def measured(server: HTTPServer, sizes: dict[str, int], fn: Callable[[], Any]):
    """Run ``fn`` with the server's count reset; returns (its result, seconds, traffic)."""
    server.reset()
    t0 = now()
    result = fn()
    seconds = now() - t0
    return result, seconds, traffic(server, sizes)


# -- the two sides ----------------------------------------------------------------------------


def ours_fs(url: str, scan_options: dict[str, Any] | None = None):
    import fsspec

    # cache=False: no persistent scan cache; skip_instance_cache: a new filesystem each time
    return fsspec.filesystem(
        "virtualzarr",
        path=f"{url}/",
        concat_dim="time",
        cache=False,
        skip_instance_cache=True,
        scan_options=scan_options,
    )


def scan_ours(url: str, scan_options: dict[str, Any] | None = None):
    """Listing + scan + combine, cold (the per-process state forgotten first)."""
    from fsspec_virtual.state import clear_states

    clear_states()
    fs = ours_fs(url, scan_options)
    fs.collection()
    return fs


def scan_kerchunk(url: str) -> dict:
    """Listing + ``SingleHdf5ToZarr`` per file + ``MultiZarrToZarr``: a references dict."""
    import fsspec
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.hdf import SingleHdf5ToZarr
    from zarr.core.sync import _get_loop

    http = fsspec.filesystem("http")
    urls = sorted(u for u in http.ls(f"{url}/", detail=False) if u.endswith(".nc"))
    singles = []
    for u in urls:
        # kerchunk's translate() can deadlock when gc runs inside it under zarr 3
        # (kerchunk PR #588): the documented workaround is to disable gc around it.
        gc.disable()
        try:
            singles.append(SingleHdf5ToZarr(u).translate())
        finally:
            gc.enable()
    # MultiZarrToZarr reads "time" (not inlined: 4 KiB) through zarr's event loop; an HTTP
    # filesystem created on fsspec's loop (the default) fails there with aiohttp's "Timeout
    # context manager should be used inside a task", so its session is made on zarr's loop.
    return MultiZarrToZarr(
        singles,
        concat_dims=["time"],
        identical_dims=["lat", "lon"],
        coo_map={"time": "cf:time"},
        remote_protocol="http",
        remote_options={"loop": _get_loop()},
    ).translate()


def ours_mapper(url: str):
    return ours_fs(url).get_mapper("")


def reffs_store(refs: dict):
    """kerchunk's own way to a zarr 3 store: an asynchronous ReferenceFileSystem (a
    synchronous one, as ``fs.get_mapper("")`` gives, fails in zarr: "Reference-FS's target
    filesystem must have same value of asynchronous")."""
    from kerchunk.utils import refs_as_store

    return refs_as_store(refs, read_only=True, remote_protocol="http", skip_instance_cache=True)


def open_array(kind: str, store, var: str):
    import zarr

    if kind == "ours":
        return zarr.open_group(store, mode="r")[var]
    return zarr.open_group(store, mode="r", zarr_format=2)[var]


def open_dataset(kind: str, store):
    import xarray as xr

    if kind == "ours":
        return xr.open_zarr(store)
    return xr.open_zarr(store, consolidated=False, zarr_format=2)


# -- statistics and tables ------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3g}"


def table(head: tuple[str, ...], rows: list[tuple[str, ...] | None]) -> str:
    body = [head, None, *rows]
    width = [max(len(r[i]) for r in body if r is not None) for i in range(len(head))]
    rule = "-+-".join("-" * n for n in width)
    lines = []
    for r in body:
        if r is None:
            lines.append(rule)
        else:
            cells = [c.ljust(n) if i == 0 else c.rjust(n) for i, (c, n) in enumerate(zip(r, width))]
            lines.append(" | ".join(cells).rstrip())
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------


class Problems:
    """Errors of our package and wrong values: printed loudly, exit status 1."""

    def __init__(self) -> None:
        self.ours: list[str] = []
        self.peers: list[str] = []

    def error(self, side: str, what: str) -> None:
        text = f"{what}:\n{traceback.format_exc()}"
        (self.ours if side == "ours" else self.peers).append(text)
        log(f"  ! {side}: {what} failed: {traceback.format_exc().strip().splitlines()[-1]}")


def measure_scans(server, sizes, url, n_files, repeats, problems) -> tuple[dict, dict | None]:
    out: dict[str, Any] = {"ours": [], "kerchunk": []}
    refs = None
    # one untimed round first: imports, HTTP sessions and connections, the OS page cache
    for i in range(repeats + 1):
        tag = "warm-up" if i == 0 else f"{i}/{repeats}"
        log(f"scan {tag}: ours, kerchunk ...")
        try:
            fs, secs, seen = measured(server, sizes, lambda: scan_ours(url))
            report = fs.report()
            if i:
                out["ours"].append(
                    {
                        "seconds": secs,
                        **seen,
                        "report_files": report.remote_scans,
                        "report_requests": report.scan_cost.requests,
                        "report_bytes": report.scan_cost.bytes,
                        "report_requests_per_file": report.requests_per_file,
                    }
                )
        except Exception:
            problems.error("ours", "scan")
            out["ours"] = None
        try:
            refs, secs, seen = measured(server, sizes, lambda: scan_kerchunk(url))
            if i:
                out["kerchunk"].append({"seconds": secs, **seen})
        except Exception:
            problems.error("kerchunk", "scan")
            out["kerchunk"] = None
        if out["ours"] is None or out["kerchunk"] is None:
            break
    out["files"] = n_files
    return out, refs


def measure_reads(server, sizes, url, refs, var, repeats, problems) -> dict:
    """Whole-variable reads through zarr and xarray; also returns the values read."""
    out: dict[str, Any] = {}
    values: dict[str, Any] = {}
    sides = {"ours": lambda: ours_mapper(url)}
    if refs is not None:
        sides["ReferenceFileSystem"] = lambda: reffs_store(refs)
    for side, make in sides.items():
        kind = "ours" if side == "ours" else "reffs"
        entry: dict[str, Any] = {}
        try:
            store = make()
            arr = open_array(kind, store, var)  # the scan (ours) and metadata: untimed
            entry["nchunks"] = int(arr.nchunks)
            entry["nbytes"] = int(arr.nbytes)
            values[f"{side} zarr"] = arr[...]  # untimed warm-up read, kept for the checks
            entry["zarr"] = []
            for _ in range(repeats):
                log(f"read {side} via zarr ...")
                _, secs, seen = measured(server, sizes, lambda a=arr: a[...])
                entry["zarr"].append({"seconds": secs, **seen})
            ds = open_dataset(kind, store)
            values[f"{side} xarray"] = ds[var].values
            entry["xarray"] = []
            for _ in range(repeats):
                log(f"read {side} via xarray ...")
                _, secs, seen = measured(server, sizes, lambda d=ds: d[var].values)
                entry["xarray"].append({"seconds": secs, **seen})
        except Exception:
            problems.error(side if side == "ours" else "ReferenceFileSystem", f"read {var}")
            entry["error"] = traceback.format_exc()
        out[side] = entry
    out["_values"] = values
    return out


def verify(reads: dict, files: list[str], preset, var: str, problems: Problems) -> dict:
    """Ours against h5py and the ReferenceFileSystem, raw (zarr) and decoded (xarray)."""
    values = reads.pop("_values")
    a = {"files": files, "var": var, "steps": preset.steps, "ny": preset.ny, "nx": preset.nx}
    raw, masked = h5py_read_all(a), masked_h5py(a, var)
    checks: dict[str, dict] = {}
    pairs = [
        ("ours zarr", "h5py", raw),
        ("ours xarray", "h5py (fill as NaN)", masked),
        ("ReferenceFileSystem zarr", "h5py", raw),
        ("ReferenceFileSystem xarray", "h5py (fill as NaN)", masked),
    ]
    for name, ref_name, ref in pairs:
        if name in values:
            checks[f"{name} == {ref_name}"] = compare(values[name], ref)
    for how in ("zarr", "xarray"):
        if f"ours {how}" in values and f"ReferenceFileSystem {how}" in values:
            checks[f"ours {how} == ReferenceFileSystem {how}"] = compare(
                values[f"ours {how}"], values[f"ReferenceFileSystem {how}"]
            )
    for name, result in checks.items():
        if not result["equal"]:
            msg = f"{name}: {result['why']}"
            if name.startswith("ours"):
                problems.ours.append(msg)
            else:
                problems.peers.append(msg)
    return checks


def measure_scan_options(server, sizes, url, n_files, repeats, problems) -> dict:
    out = {}
    for label, options in SCAN_OPTIONS:
        log(f"scan options: {label} ...")
        samples = []
        try:
            for _ in range(repeats):
                fs, secs, seen = measured(server, sizes, lambda o=options: scan_ours(url, o))
                report = fs.report()
                samples.append(
                    {
                        "seconds": secs,
                        **seen,
                        "report_requests": report.scan_cost.requests,
                        "report_bytes": report.scan_cost.bytes,
                    }
                )
            out[label] = {"scan_options": options, "samples": samples}
        except Exception:
            problems.error("ours", f"scan with scan_options {options}")
            out[label] = {"scan_options": options, "error": traceback.format_exc()}
    return out


def med(samples: list[dict] | None, key: str, scale: float = 1.0) -> float | None:
    if not samples:
        return None
    return statistics.median(s[key] for s in samples) * scale


def scan_table(scans: dict, reads: dict, mb: float) -> str:
    n = scans["files"]
    ours, ker = scans["ours"], scans["kerchunk"]
    rows: list[tuple[str, ...] | None] = []

    def row(label, a, b, peer="kerchunk"):
        rows.append((label, num(a), peer, num(b), ratio(a, b)))

    row(
        "scan: listing + scan + combine [s] (lower is better)",
        med(ours, "seconds"),
        med(ker, "seconds"),
    )
    row(
        "  requests per file, server side",
        med(ours, "requests", 1 / n),
        med(ker, "requests", 1 / n),
    )
    row("    GET per file", med(ours, "get", 1 / n), med(ker, "get", 1 / n))
    row("    HEAD per file", med(ours, "head", 1 / n), med(ker, "head", 1 / n))
    row(
        "  KB sent per file, server side", med(ours, "bytes", 1e-3 / n), med(ker, "bytes", 1e-3 / n)
    )
    row(
        "  ours per fs.report(): requests per file",
        med(ours, "report_requests_per_file"),
        None,
        "-",
    )
    row("  ours per fs.report(): KB per file", med(ours, "report_bytes", 1e-3 / n), None, "-")
    rows.append(None)
    rfs = reads.get("ReferenceFileSystem", {})
    mine = reads.get("ours", {})
    for how in ("zarr", "xarray"):
        a, b = mine.get(how), rfs.get(how)
        mbs_a = mb / med(a, "seconds") if a else None
        mbs_b = mb / med(b, "seconds") if b else None
        peer = "ReferenceFileSystem"
        row(f"read via {how} [MB/s] (higher is better)", mbs_a, mbs_b, peer)
        row("  GET requests", med(a, "get"), med(b, "get"), peer)
        row("  MB sent", med(a, "bytes", 1e-6), med(b, "bytes", 1e-6), peer)
    rows.append(
        (
            "chunks of the variable",
            str(mine.get("nchunks", "-")),
            "ReferenceFileSystem",
            str(rfs.get("nchunks", "-")),
            "-",
        )
    )
    return table(("figure (median)", "ours", "peer", "peer value", "ours/peer"), rows)


def options_table(results: dict, n: int) -> str:
    rows: list[tuple[str, ...] | None] = []
    for label, entry in results.items():
        if "error" in entry:
            err = entry["error"].strip().splitlines()[-1]
            rows.append((label, "ERROR", err[:60], "", "", "", ""))
            continue
        s = entry["samples"]
        rows.append(
            (
                label,
                num(med(s, "seconds")),
                num(med(s, "requests", 1 / n)),
                num(med(s, "get", 1 / n)),
                num(med(s, "bytes", 1e-3 / n)),
                num(med(s, "report_requests", 1 / n)),
                num(med(s, "report_bytes", 1e-3 / n)),
            )
        )
    head = (
        "our scan_options",
        "scan [s]",
        "req/file",
        "GET/file",
        "KB/file",
        "report req/file",
        "report KB/file",
    )
    return table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each figure")
    parser.add_argument("--var", default="t2m", help="the variable read (default t2m)")
    parser.add_argument("--workdir", help="where the collection is written (and reused)")
    parser.add_argument("--results", default=str(HERE / "results"), help="JSON output directory")
    parser.add_argument("--no-options", action="store_true", help="skip the scan_options table")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="milliseconds the server waits before answering each GET of a file (default 0)",
    )
    opts = parser.parse_args(argv)

    preset = PRESETS[opts.preset]
    if opts.var not in preset.variables:
        parser.error(f"--var: {opts.var!r} is not one of {preset.name}'s {preset.variables}")
    repeats = max(1, opts.repeats)
    workdir = Path(opts.workdir or HERE / ".data" / preset.name).resolve()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    started = now()
    paths = ensure_collection(preset, workdir / "files", log=log)
    files = [str(p) for p in paths]
    sizes = {p.name: p.stat().st_size for p in paths}
    n = len(paths)
    mb = preset.var_nbytes / 1e6
    log(
        f"preset {preset.name}: {n} files ({sum(sizes.values()) / 1e6:.0f} MB) over HTTP, "
        f"{repeats} repeat(s), reading {opts.var} ({mb:.1f} MB decoded), "
        f"{opts.latency:g} ms added to each GET"
    )

    import fsspec_virtual  # noqa: F401  (registers "virtualzarr"; imports are not timed)

    problems = Problems()
    server = ServerProcess(paths[0].parent, opts.latency / 1e3)
    try:
        url = server.url
        # the test server can delay GETs only (not HEADs, nor the directory listing)
        if opts.latency > 0:
            server.delay(list(sizes))
        scans, refs = measure_scans(server, sizes, url, n, repeats, problems)
        reads = measure_reads(server, sizes, url, refs, opts.var, repeats, problems)
        checks = verify(reads, files, preset, opts.var, problems)
        options = {}
        if not opts.no_options:
            options = measure_scan_options(server, sizes, url, n, repeats, problems)
    finally:
        server.close()

    print(
        f"\nfsspec-virtual over HTTP (127.0.0.1, {opts.latency:g} ms added to each GET), "
        f"preset {preset.name}: {n} files, {opts.var} = {mb:.1f} MB decoded; "
        f"medians of {repeats}\n"
    )
    print(scan_table(scans, reads, mb))
    print("\nchecks:")
    for name, result in checks.items():
        print(f"  {name}: {'equal' if result['equal'] else 'DIFFERENT: ' + result['why']}")
    if options:
        print(
            f"\nour scan with scan_options (medians of {repeats}; req = requests; report = "
            "fs.report())\n"
        )
        print(options_table(options, n))
    if problems.peers:
        print("\nnotes on the peers:")
        for p in problems.peers:
            print("  " + p.strip().replace("\n", "\n  "))
    if problems.ours:
        print("\nPROBLEMS WITH fsspec-virtual:")
        for p in problems.ours:
            print("  " + p.strip().replace("\n", "\n  "))

    out_dir = Path(opts.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"remote-{preset.name}-{stamp}.json"
    record = {
        "preset": preset.name,
        "files": n,
        "file_bytes": sum(sizes.values()),
        "var": opts.var,
        "var_mb": mb,
        "repeats": repeats,
        "latency_ms": opts.latency,
        "scan": scans,
        "read": reads,
        "checks": checks,
        "scan_options": options,
        "problems_ours": problems.ours,
        "problems_peers": problems.peers,
        "versions": versions(),
        "git": git_state(),
        "wall": now() - started,
    }
    path.write_text(json.dumps(record, indent=1, default=str))
    log(f"\nwrote {path} ({record['wall']:.0f} s in all)")
    return 1 if problems.ours else 0


if __name__ == "__main__":
    sys.exit(main())
