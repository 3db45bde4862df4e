"""Load on the Zarr server: ``fsspec-virtual serve`` vs xpublish vs our store in-process.

    python benchmarks/serve.py [--preset small] [--clients 1,16,64] [--seconds 8]
                               [--workdir DIR] [--results DIR]

Writes (once, then reuses) a collection of ``benchmarks/datagen.py``, then for each target
and each number of concurrent clients runs two workloads for a bounded time:

- ``random``: every request a chunk key drawn at random from every data variable;
- ``whole``: each client reads every chunk of one variable in order, then the next one.

Targets:

- ``ours``: ``fsspec-virtual serve DIR`` in a process of its own, read over loopback;
- ``xpublish``: xpublish with its Zarr plugin (``xpublish-zarr``: Zarr format 3 keys
  under ``/datasets/data/zarr/``) over ``xr.open_mfdataset`` of the same files (its chunks
  are the files' own chunks, as ours; it re-encodes each chunk with zstd and keeps encoded
  chunks in its cache), in a process of its own;
- ``in-process``: our store's ``_cat_file`` on the reading loop (no HTTP), in a process
  of its own: the server's ceiling.

The clients are coroutines on one aiohttp session (one process, the benchmark's own);
each answer of ours is checked against the store read in-process (CRC-32), an answer of
xpublish for its status and length. Figures: requests/s, p50/p99 latency, the serving
process's peak RSS, errors (any answer not 200 with the expected bytes; must be 0).
Results go to ``benchmarks/results/serve-<preset>-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PRESETS, ensure_collection  # noqa: E402

WORKLOADS = ("random", "whole")
TARGETS = ("ours", "xpublish", "in-process")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chunk_keys(consolidated: dict[str, Any]) -> dict[str, list[str]]:
    """Every chunk key of each data variable (2-D or more) of a store's consolidated
    metadata: Zarr format 2 (``.zmetadata``) or 3 (the root ``zarr.json``)."""
    keys: dict[str, list[str]] = {}
    if "consolidated_metadata" in consolidated:  # format 3
        for var, doc in consolidated["consolidated_metadata"]["metadata"].items():
            if doc.get("node_type") != "array" or len(doc["shape"]) < 2:
                continue
            chunks = doc["chunk_grid"]["configuration"]["chunk_shape"]
            encoding = doc["chunk_key_encoding"]
            sep = encoding.get("configuration", {}).get("separator", "/")
            first = "c" + sep if encoding["name"] == "default" else ""
            grid = _grid(doc["shape"], chunks)
            keys[var] = [var + "/" + first + sep.join(map(str, i)) for i in grid]
        return keys
    for name, doc in consolidated["metadata"].items():
        if not name.endswith("/.zarray") or len(doc["shape"]) < 2:
            continue
        var = name[: -len("/.zarray")]
        sep = doc.get("dimension_separator") or "."
        keys[var] = [var + "/" + sep.join(map(str, i)) for i in _grid(doc["shape"], doc["chunks"])]
    return keys


def _grid(shape: list[int], chunks: list[int]) -> Any:
    return itertools.product(*(range(math.ceil(s / c)) for s, c in zip(shape, chunks)))


class Recorder:
    """Latencies and errors of one run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what

    def figures(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "requests": n,
            "requests_per_s": n / seconds,
            "p50_ms": lat[n // 2] * 1e3 if n else None,
            "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else None,
            "errors": self.errors,
            "first_error": self.first_error,
        }


def picker(workload: str, keys: dict[str, list[str]], client: int, seed: int) -> Any:
    """The keys one client asks for, in order, forever."""
    rng = random.Random(seed * 1000 + client)
    every = [k for ks in keys.values() for k in ks]
    names = sorted(keys)
    if workload == "random":
        while True:
            yield rng.choice(every)
    else:
        for i in itertools.count(client):
            yield from keys[names[i % len(names)]]


async def drive(
    n_clients: int,
    seconds: float,
    workload: str,
    keys: dict[str, list[str]],
    fetch: Callable[[str], Awaitable[bytes]],
    check: Callable[[str, bytes], str | None],
) -> Recorder:
    """``n_clients`` coroutines fetching keys for ``seconds``."""
    record = Recorder()
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        for key in picker(workload, keys, i, 1):
            if time.perf_counter() >= deadline:
                return
            started = time.perf_counter()
            try:
                body = await fetch(key)
            except Exception as e:  # counted, never hidden
                record.error(f"{key}: {type(e).__name__}: {e}")
                continue
            record.latencies.append(time.perf_counter() - started)
            problem = check(key, body)
            if problem:
                record.error(problem)

    await asyncio.gather(*(client(i) for i in range(n_clients)))
    return record


def rss_sampler(pid: int) -> tuple[Callable[[], None], Callable[[], int]]:
    """Start sampling a process's RSS (in a thread); returns (stop, peak bytes)."""
    import threading

    import psutil

    process = psutil.Process(pid)
    peak = [process.memory_info().rss]
    stopped = threading.Event()

    def sample() -> None:
        while not stopped.wait(0.1):
            try:
                peak[0] = max(peak[0], process.memory_info().rss)
            except psutil.Error:
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join(5)

    return stop, lambda: peak[0]


# -- servers --------------------------------------------------------------------------------


def start_server(target: str, directory: Path, port: int) -> subprocess.Popen[bytes]:
    if target == "ours":
        command = [sys.executable, "-m", "fsspec_virtual", "serve", str(directory)]
        command += ["--port", str(port), "--concat-dim", "time"]
    else:
        command = [sys.executable, __file__, "_xpublish", str(directory), str(port)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> float:
    import aiohttp

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"the server ended ({process.returncode}) before serving")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def serve_xpublish(directory: str, port: int) -> None:
    """xpublish over open_mfdataset of the files (the ``_xpublish`` subcommand)."""
    import xarray as xr
    import xpublish

    files = sorted(str(p) for p in Path(directory).glob("*.nc"))
    ds = xr.open_mfdataset(files, combine="by_coords", chunks={}, parallel=False)
    xpublish.Rest({"data": ds}).serve(host="127.0.0.1", port=port, log_level="error")


async def measure_http(
    target: str, directory: Path, clients: list[int], seconds: float, expected: dict[str, int]
) -> list[dict[str, Any]]:
    import aiohttp

    port = free_port()
    process = start_server(target, directory, port)
    root = f"http://127.0.0.1:{port}/"
    url = root if target == "ours" else root + "datasets/data/zarr/"
    document = ".zmetadata" if target == "ours" else "zarr.json"
    rows: list[dict[str, Any]] = []
    try:
        ready = await wait_ready(url + document, process)
        log(f"{target}: ready in {ready:.1f} s")
        connector = aiohttp.TCPConnector(limit=max(clients))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(url + document) as response:
                keys = chunk_keys(json.loads(await response.read()))

            async def fetch(key: str) -> bytes:
                async with session.get(url + key) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"status {response.status}")
                    return body

            def check(key: str, body: bytes) -> str | None:
                if target == "ours":
                    return None if zlib.crc32(body) == expected[key] else f"{key}: wrong bytes"
                return None if body else f"{key}: empty"

            for n in clients:
                for workload in WORKLOADS:
                    stop, peak = rss_sampler(process.pid)
                    record = await drive(n, seconds, workload, keys, fetch, check)
                    stop()
                    row = {"target": target, "clients": n, "workload": workload}
                    row.update(record.figures(seconds), server_rss_mb=peak() / 2**20)
                    log(_line(row))
                    rows.append(row)
    finally:
        process.terminate()
        process.wait(30)
    return rows


def in_process(directory: str, clients: list[int], seconds: float) -> list[dict[str, Any]]:
    """Our store read on this process's loop (the ``_inprocess`` subcommand)."""
    from fsspec_virtual import VirtualZarrFileSystem

    async def main() -> list[dict[str, Any]]:
        fs = VirtualZarrFileSystem(directory, concat_dim="time", asynchronous=True)
        keys = chunk_keys(json.loads(await fs._cat_file(".zmetadata")))
        rows = []
        for n in clients:
            for workload in WORKLOADS:
                stop, peak = rss_sampler(os.getpid())
                record = await drive(
                    n, seconds, workload, keys, fs._cat_file, lambda k, b: None if b else "empty"
                )
                stop()
                row = {"target": "in-process", "clients": n, "workload": workload}
                row.update(record.figures(seconds), server_rss_mb=peak() / 2**20)
                rows.append(row)
        return rows

    return asyncio.run(main())


def expected_crcs(directory: Path) -> dict[str, int]:
    """CRC-32 of every chunk key of ours, read in-process (the answers' check)."""
    from fsspec_virtual import VirtualZarrFileSystem

    fs = VirtualZarrFileSystem(str(directory), concat_dim="time")
    keys = chunk_keys(json.loads(fs.cat_file(".zmetadata")))
    every = [k for ks in keys.values() for k in ks]
    return {k: zlib.crc32(v) for k, v in fs.cat(every).items()}


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['target']:>10} {row['workload']:>6} x{row['clients']:<3} "
        f"{row['requests_per_s']:8.0f} req/s  p50 {row['p50_ms']:7.2f} ms  "
        f"p99 {row['p99_ms']:7.2f} ms  rss {row['server_rss_mb']:6.0f} MB  "
        f"errors {row['errors']}" + (f" ({row['first_error']})" if row["errors"] else "")
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = "| target | workload | clients | req/s | p50 ms | p99 ms | RSS MB | errors |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['workload']} | {r['clients']} | {r['requests_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_rss_mb']:.0f} | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["_xpublish"]:
        serve_xpublish(args[1], int(args[2]))
        return 0
    if args[:1] == ["_inprocess"]:
        clients = [int(c) for c in args[2].split(",")]
        print(json.dumps(in_process(args[1], clients, float(args[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="each run's length")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--workdir", help="where the collection is written (and reused)")
    parser.add_argument("--results", default=str(HERE / "results"), help="JSON output directory")
    opts = parser.parse_args(args)
    preset = PRESETS[opts.preset]
    clients = [int(c) for c in opts.clients.split(",")]
    targets = [t.strip() for t in opts.targets.split(",")]
    workdir = Path(opts.workdir or HERE / ".data" / preset.name).resolve()
    paths = ensure_collection(preset, workdir / "files", log=log)
    directory = paths[0].parent
    expected = expected_crcs(directory)
    log(f"{len(paths)} files, {len(expected)} chunk keys of data variables")
    rows: list[dict[str, Any]] = []
    for target in targets:
        if target == "in-process":
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "_inprocess",
                    str(directory),
                    opts.clients,
                    str(opts.seconds),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            for row in json.loads(out.stdout):
                log(_line(row))
                rows.append(row)
        else:
            rows += asyncio.run(measure_http(target, directory, clients, opts.seconds, expected))
    print(table(rows))
    results = Path(opts.results)
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = results / f"serve-{preset.name}-{stamp}.json"
    versions = {p: metadata.version(p) for p in ("fsspec-virtual", "aiohttp", "xpublish", "xarray")}
    out_path.write_text(
        json.dumps(
            {
                "preset": preset.name,
                "seconds": opts.seconds,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "versions": versions,
                "rows": rows,
            },
            indent=1,
        )
    )
    log(f"wrote {out_path}")
    errors = sum(r["errors"] for r in rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
