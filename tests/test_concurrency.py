"""Readers, a refreshing thread and a process rewriting and adding files, all at once.

Producers write files under a temporary name and rename them into place (as well-behaved
producers do). Every read must succeed with values of one consistent version of its file,
or raise StaleSourceError: never a mix of versions, never bytes from old offsets.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import zarr

import fsspec_virtual.scheduling as scheduling
import fsspec_virtual.state as state_module
from fsspec_virtual import StaleSourceError, VirtualZarrFileSystem

WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np, xarray as xr

    def write(directory, index, version):
        values = np.full((3, 6), index * 1000 + version, dtype="f4")
        times = np.arange(3 * index, 3 * index + 3, dtype="f8")
        ds = xr.Dataset(
            {"v": (("time", "x"), values)},
            coords={"time": ("time", times, {"units": "days since 2000-01-01"})},
        )
        temporary = os.path.join(directory, f".f{index:03d}.tmp")
        # a different chunking per version: old offsets are wrong for new files
        chunks = (1, 6) if version % 2 else (3, 3)
        ds.to_netcdf(temporary, encoding={"v": {"chunksizes": chunks, "zlib": True}})
        os.replace(temporary, os.path.join(directory, f"f{index:03d}.nc"))

    directory, mode = sys.argv[1], sys.argv[2]
    if mode == "init":
        for i in range(4):
            write(directory, i, 0)
    else:
        for version in range(1, 7):
            for i in range(4):
                write(directory, i, version)
            write(directory, 3 + version, version)  # a new file extends the axis
            time.sleep(0.05)
    """
)


def test_readers_refresher_and_writer_process(tmp_path, monkeypatch):
    directory = tmp_path / "data"
    directory.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    subprocess.run([sys.executable, str(script), str(directory), "init"], check=True)
    monkeypatch.setattr(scheduling, "pool_running", lambda workers: False)
    state_module.clear_states()
    fs = VirtualZarrFileSystem(
        str(directory / "f*.nc"),
        concat_dim="time",
        cache=False,
        max_workers=1,
        skip_instance_cache=True,
    )
    fs.ls("")
    stop = threading.Event()
    problems: list[str] = []
    reads = {"ok": 0, "stale": 0}
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                group = zarr.open_group(fs.get_mapper(""), mode="r")
                n = group["v"].shape[0]
                t = rng.randrange(n)
                values = group["v"][t]
                index = t // 3
                version = values[0] - index * 1000
                if not (
                    np.all(values == values[0]) and version == int(version) and 0 <= version <= 6
                ):
                    problems.append(f"time {t}: {values.tolist()}")
                with lock:
                    reads["ok"] += 1
            except StaleSourceError:
                with lock:
                    reads["stale"] += 1
            except Exception as e:  # anything else is a failure
                problems.append(f"{type(e).__name__}: {e}")

    def refresher() -> None:
        while not stop.is_set():
            try:
                fs.refresh()
            except Exception as e:
                problems.append(f"refresh: {type(e).__name__}: {e}")
            time.sleep(0.02)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=refresher))
    for thread in threads:
        thread.start()
    try:
        subprocess.run([sys.executable, str(script), str(directory), "update"], check=True)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not problems, problems[:5]
    assert reads["ok"] > 50, reads
    print("reads", reads)
    # once quiet, the store equals the files
    fs.refresh()
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    assert group["v"].shape == (3 * 10, 6)
    for t in range(30):
        index = t // 3
        expected = index * 1000 + (6 if index < 4 else index - 3)
        np.testing.assert_array_equal(group["v"][t], np.full(6, expected, dtype="f4"))
    state_module.clear_states()
