"""fsspec-virtual's own HTTP server (``fsspec_virtual.serve``) on 127.0.0.1, in a thread of
its own, for tests whose clients block (urllib, Node, Chromium); a blocking GET; and the
collection the landing page and quick-look tests serve."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from fsspec_virtual.serve import make_app
from fsspec_virtual.serve.app import running

__all__ = ["EVIL_LONG_NAME", "EVIL_NAMES", "Answer", "get", "serving", "write_cube"]


@contextmanager
def serving(fs: Any, **options: Any) -> Iterator[str]:
    """Serve ``fs`` (``make_app(fs, **options)``) on a free port of 127.0.0.1 while the
    block runs; yields the server's URL (``http://127.0.0.1:PORT/``)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["stop"] = stop
        async with running(make_app(fs, **options), "127.0.0.1", 0) as url:
            state["url"] = url
            started.set()
            await stop.wait()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as error:  # handed to the test
            state["error"] = error
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True, name="test-fsspec-virtual-server")
    thread.start()
    if not started.wait(60):
        raise RuntimeError("the fsspec-virtual server did not start")
    if "error" in state:
        thread.join(10)
        raise state["error"]
    try:
        yield state["url"]
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        loop.close()


class Answer:
    """A response: status, headers, body."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode()


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
    """A blocking request; error statuses are answers too."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


#: Names of variables (and a dimension) that are HTML: the page must show them as text.
EVIL_NAMES = ("x<script>alert(1)", 'q"><img src=x onerror=alert(2)>')
EVIL_DIM = "a<b>"
#: Attribute values that are HTML.
EVIL_COMMENT = '</td><script>alert(3)</script> & "quotes"'
EVIL_NOTE = "<img src=x onerror=alert(4)>"
#: A long name that matplotlib would read as mathtext (and fail on), were it not told.
EVIL_LONG_NAME = r"$\notacommand{x}$ & $x^2$ <b>"


def write_cube(directory: Path, n_files: int = 3, *, evil: bool = False) -> list[Path]:
    """Files along ``time`` (2 steps each): ``t2m(time, lat, lon)`` packed int16 with a
    fill value (one masked point per file), ``u(time, level, lat, lon)`` float32 with NaNs
    and an integer ``level`` coordinate, ``land(lat, lon)``, 1-D ``mean_t2m(time)``; with
    ``evil``, variables, a dimension and attributes whose names and values are HTML."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        path = directory / f"cube{i:02d}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.title = "a cube of test files"
            nc.institution = "tests & <co>"
            nc.createDimension("time", 2)
            nc.createDimension("level", 2)
            nc.createDimension("lat", 6)
            nc.createDimension("lon", 8)
            time = nc.createVariable("time", "f8", ("time",))
            time.units = "days since 2001-01-01"
            time.calendar = "standard"
            time[:] = [2 * i, 2 * i + 1]
            level = nc.createVariable("level", "i4", ("level",))
            level.units = "hPa"
            level[:] = [500, 850]
            lat = nc.createVariable("lat", "f4", ("lat",))
            lat.units = "degrees_north"
            lat[:] = np.linspace(50, 40, 6)
            lon = nc.createVariable("lon", "f4", ("lon",))
            lon.units = "degrees_east"
            lon[:] = np.linspace(0, 14, 8)
            t2m = nc.createVariable("t2m", "i2", ("time", "lat", "lon"), fill_value=-9999)
            t2m.units = "K"
            t2m.long_name = "2 m temperature"
            t2m.scale_factor = 0.01
            t2m.add_offset = 273.15
            t2m.set_auto_maskandscale(False)
            raw = (np.arange(2 * 6 * 8).reshape(2, 6, 8) * 7 + 100 * i).astype("i2")
            raw[1, 2, 3] = -9999
            t2m[:] = raw
            u = nc.createVariable("u", "f4", ("time", "level", "lat", "lon"), zlib=True)
            u.units = "m s-1"
            u.long_name = "eastward wind"
            values = np.sin(np.arange(2 * 2 * 6 * 8) / 7.0 + i).reshape(2, 2, 6, 8) * 20
            values[0, 1, :2, :2] = np.nan
            u[:] = values.astype("f4")
            land = nc.createVariable("land", "u1", ("lat", "lon"))
            land.long_name = "land mask"
            land[:] = (np.arange(48).reshape(6, 8) % 3 == 0).astype("u1")
            mean = nc.createVariable("mean_t2m", "f4", ("time",))
            mean.units = "K"
            mean[:] = [280.0 + i, 281.0 + i]
            if evil:
                nc.note = EVIL_NOTE
                nc.createDimension(EVIL_DIM, 3)
                for k, name in enumerate(EVIL_NAMES):
                    v = nc.createVariable(name, "f4", ("time", EVIL_DIM))
                    v.comment = EVIL_COMMENT
                    v.units = "<K>"
                    v.long_name = EVIL_LONG_NAME
                    v[:] = np.arange(6, dtype="f4").reshape(2, 3) + k
        paths.append(path)
    return paths
