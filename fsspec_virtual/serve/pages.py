"""The pages a person reads: the landing page (``/``) and quick-look images
(``/quicklook/{variable path}.png``), added to the server's application.

Each request reads the snapshot the server's middleware pinned for it; the page and the
images are made in a small pool of threads of their own (never on the loop, and never in
the loop's default pool, where the store's reads of keys run: many quick-looks at once
wait for each other, not the keys' readers), and each carries an entity tag of its
snapshot, path and query, so a browser that has one asks again with ``If-None-Match``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from aiohttp import web

from ..report import describe
from .app import MOUNT
from .http import none_match
from .landing import landing_html
from .quicklook import (
    UNAVAILABLE,
    DatasetCache,
    QuickLookError,
    available,
    check_variable,
    quicklook_png,
)
from .store import PINNED, Pinned, blocking_store

__all__ = ["PAGE_POLICY", "add_page_routes"]

#: The landing page loads nothing but its own quick-look images: no script, no resource
#: from elsewhere (names and attributes from the files are escaped; this is the second
#: line of defence).
PAGE_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_DATASETS = web.AppKey("fsspec_virtual.quicklook_datasets", DatasetCache)
_POOL = web.AppKey("fsspec_virtual.page_threads", ThreadPoolExecutor)
#: Threads drawing pages and quick-looks (a quick-look holds one while it reads and draws).
PAGE_THREADS = 2
T = TypeVar("T")


def add_page_routes(app: web.Application) -> None:
    """Add ``GET``/``HEAD`` ``/`` (the landing page) and ``/quicklook/{path}.png``.

    The server's middleware must pin a snapshot to each request first (``PINNED``).
    """
    app[_DATASETS] = DatasetCache()
    app[_POOL] = ThreadPoolExecutor(PAGE_THREADS, thread_name_prefix="fsspec-virtual-pages")
    app.on_cleanup.append(_stop_pool)
    app.router.add_get("/", landing)
    app.router.add_get("/quicklook/{path:.+}.png", quicklook)


async def _stop_pool(app: web.Application) -> None:
    app[_POOL].shutdown(wait=False, cancel_futures=True)


async def _in_pool(request: web.Request, function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in the pages' own threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[_POOL], functools.partial(function, *args))


def _base_url(request: web.Request) -> str:
    """The store's URL as the client reached it, or ``""`` where its ``Host`` names none
    (the page then shows no example)."""
    try:
        origin = str(request.url.origin())
    except ValueError:  # Host: x:99999, an empty Host
        return ""
    return origin + request.get(MOUNT, "") + "/"


def _tag(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f'"{digest[:32]}"'


def _not_modified(request: web.Request, tag: str) -> web.Response | None:
    if none_match(request.headers.get("If-None-Match"), tag):
        return web.Response(status=304, headers={"ETag": tag})
    return None


async def landing(request: web.Request) -> web.Response:
    """The landing page of the snapshot the request reads."""
    state = request[PINNED].state
    base_url = _base_url(request)
    drawing = available()
    tag = _tag("page", state.id, base_url, str(drawing))
    unchanged = _not_modified(request, tag)
    if unchanged is not None:
        return unchanged

    def page() -> str:
        report = describe(state.manifest, len(state.files), state.scan_cost)
        note = "" if drawing else UNAVAILABLE
        return landing_html(state, report, base_url=base_url, quicklooks=drawing, note=note)

    text = await _in_pool(request, page)
    headers = {"ETag": tag, "Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


def _problem(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


async def quicklook(request: web.Request) -> web.Response:
    """A quick-look PNG of one variable: 404 for a variable without one, 400 for a bad
    selection, 501 without matplotlib (the body says why)."""
    pinned: Pinned = request[PINNED]
    state = pinned.state
    path = request.match_info["path"]
    manifest = state.manifest
    query: dict[str, str] = {}
    for name in request.query:
        if name == "token":  # the server's own (it answers it before pages see it)
            continue
        values = request.query.getall(name)
        if len(values) > 1:
            return _problem(400, f"dimension {name!r} is selected {len(values)} times")
        query[name] = values[0]
    try:
        metas = {p: a.meta for p, a in manifest.arrays.items()}
        meta = check_variable(metas, manifest.skipped, path)
    except QuickLookError as error:
        return _problem(error.status, str(error))
    tag = _tag("quicklook", state.id, path, *sorted(f"{k}={v}" for k, v in query.items()))
    unchanged = _not_modified(request, tag)
    if unchanged is not None:
        return unchanged
    if not available():
        return _problem(501, UNAVAILABLE)
    fs = await blocking_store(request)
    datasets = request.app[_DATASETS]
    try:
        png = await _in_pool(request, quicklook_png, datasets, fs, state.id, path, meta, query)
    except QuickLookError as error:
        return _problem(error.status, str(error))
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    return web.Response(body=png, content_type="image/png", headers=headers)
