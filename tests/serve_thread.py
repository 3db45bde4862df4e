"""fsspec-virtual's own HTTP server (``fsspec_virtual.serve``) on 127.0.0.1, in a thread of
its own, for tests whose clients block (urllib, Node, Chromium)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsspec_virtual.serve import make_app
from fsspec_virtual.serve.app import running

__all__ = ["serving"]


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
