"""Real servers on 127.0.0.1 for the tests and the benchmark: HTTP (aiohttp) and S3 (moto).

Both count the requests they receive, on the server side, so request-merging and
block-cache behaviour is measured where it costs.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import html
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["Hit", "HTTPServer", "serve_directory", "S3Server", "serve_s3"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class Hit:
    """One request the server received."""

    method: str
    path: str
    range: str | None
    status: int


@dataclass
class HTTPServer:
    """A directory served over HTTP, and what it was asked.

    Attributes
    ----------
    root
        The directory served.
    url
        Its base URL (``http://127.0.0.1:PORT``), without a trailing slash.
    ranges
        Whether ``Range`` headers are honoured (False: the whole file, status 200).
    missing
        Names answered with 404 although they exist.
    drop
        Names whose GET responses are cut off half-way (the connection is closed).
    failing
        Names whose GET requests are answered with 500 Internal Server Error.
    delay
        Seconds to wait before answering a GET, per name.
    required_headers
        Headers every request must carry (else 401), as a server behind a token would.
    weak_etags
        Send weak ETags (``W/"..."``), as servers that compress on the fly do.
    honour_if_match
        Whether ``If-Match`` is checked (False: ignored, as some servers do).
    extra_links
        ``href`` values added to every index page after the directory's own entries, as
        real servers add links to the parent, sort orders (``?C=M;O=A``) and anchors.
    etags
        Whether answers carry an ``ETag`` (False: ``Last-Modified`` only).
    etags_on_get
        Whether GET answers carry the ``ETag`` (False: only HEAD answers do, as some
        proxies and CDNs strip it from range answers).
    last_modified
        Whether answers carry ``Last-Modified``.
    honour_if_unmodified_since
        Whether ``If-Unmodified-Since`` is checked (False: ignored).
    shift_ranges
        Answer range requests with the range this many bytes further on (and a
        ``Content-Range`` saying so), as a misbehaving cache or proxy might.
    hits
        Every request received, in order.
    max_in_flight
        The most GET requests of files the server was answering at once (8-byte probes of
        a file's magic bytes not counted).
    """

    root: Path
    url: str = ""
    ranges: bool = True
    missing: set[str] = field(default_factory=set)
    drop: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    delay: dict[str, float] = field(default_factory=dict)
    required_headers: dict[str, str] = field(default_factory=dict)
    weak_etags: bool = False
    honour_if_match: bool = True
    extra_links: list[str] = field(default_factory=list)
    etags: bool = True
    etags_on_get: bool = True
    last_modified: bool = True
    honour_if_unmodified_since: bool = True
    shift_ranges: int = 0
    hits: list[Hit] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, name: str | None = None) -> list[Hit]:
        """The GET requests received (for one file name, if given)."""
        with self._lock:
            hits = list(self.hits)
        return [h for h in hits if h.method == "GET" and (name is None or h.path == name)]

    def reset(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self.hits.clear()
            self.max_in_flight = 0

    def require_basic_auth(self, user: str, password: str) -> str:
        """Answer 401 to requests without HTTP basic auth as ``user``/``password``; returns
        the server's URL with them in it (``http://user:password@127.0.0.1:PORT``)."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.required_headers["Authorization"] = f"Basic {token}"
        return self.url.replace("://", f"://{user}:{password}@", 1)

    def _record(self, request: web.Request, status: int) -> None:
        with self._lock:
            self.hits.append(
                Hit(request.method, request.path.lstrip("/"), request.headers.get("Range"), status)
            )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        counted = (
            request.method == "GET"
            and bool(request.path.lstrip("/"))
            and request.headers.get("Range") != "bytes=0-7"  # not a magic-bytes probe
        )
        if counted:
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._answer(request)
        finally:
            if counted:
                with self._lock:
                    self._in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        name = request.path.lstrip("/")
        target = (self.root / name).resolve()
        if self.root.resolve() not in (target, *target.parents):
            self._record(request, 403)
            raise web.HTTPForbidden()
        if any(request.headers.get(k) != v for k, v in self.required_headers.items()):
            self._record(request, 401)
            raise web.HTTPUnauthorized()
        if name in self.delay and request.method == "GET":
            await asyncio.sleep(self.delay[name])
        if name in self.missing or not target.exists():
            self._record(request, 404)
            raise web.HTTPNotFound()
        if name in self.failing and request.method == "GET":
            self._record(request, 500)
            raise web.HTTPInternalServerError()
        if target.is_dir():
            self._record(request, 200)
            return self._index(target, request.path, self.extra_links)
        stat = target.stat()
        etag = '"' + hashlib.md5(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest() + '"'
        etag = "W/" + etag if self.weak_etags else etag
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
            "Accept-Ranges": "bytes" if self.ranges else "none",
            "Content-Type": "application/octet-stream",
        }
        if not self.etags or (request.method == "GET" and not self.etags_on_get):
            del headers["ETag"]
        if not self.last_modified:
            del headers["Last-Modified"]
        since = request.headers.get("If-Unmodified-Since")
        if self.honour_if_unmodified_since and since is not None:
            limit = email.utils.parsedate_to_datetime(since).timestamp()
            if int(stat.st_mtime) > limit:
                self._record(request, 412)
                raise web.HTTPPreconditionFailed(headers=headers)
        wanted = request.headers.get("If-Match")
        # If-Match compares strongly: a weak ETag never matches (RFC 9110, 13.1.1)
        strong = [t.strip() for t in (wanted or "").split(",") if not t.strip().startswith("W/")]
        refused = wanted not in (None, "*") and (etag.startswith("W/") or etag not in strong)
        if self.honour_if_match and refused:
            self._record(request, 412)
            raise web.HTTPPreconditionFailed(headers=headers)
        size = stat.st_size
        start, stop, status = 0, size, 200
        match = _RANGE.fullmatch(request.headers.get("Range", ""))
        if self.ranges and match is not None:
            first, last = match.groups()
            if first == "":
                start = max(size - int(last), 0)
            else:
                start = int(first)
                stop = size if last == "" else min(int(last) + 1, size)
            if start >= size:
                self._record(request, 416)
                raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"*/{size}"})
            status = 206
            if self.shift_ranges:
                start = min(start + self.shift_ranges, size - 1)
                stop = min(stop + self.shift_ranges, size)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        headers["Content-Length"] = str(stop - start)
        self._record(request, status)
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        with open(target, "rb") as f:
            f.seek(start)
            body = f.read(stop - start)
        if name in self.drop:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body
            return response
        return web.Response(status=status, body=body, headers=headers)

    @staticmethod
    def _index(directory: Path, path: str, extra: Sequence[str] = ()) -> web.Response:
        base = path if path.endswith("/") else path + "/"
        hrefs = [(base + p.name, p.name) for p in sorted(directory.iterdir())]
        links = "".join(
            f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>'
            for href, text in [*hrefs, *((link, link) for link in extra)]
        )
        page = f"<html><body><ul>{links}</ul></body></html>"
        return web.Response(text=page, content_type="text/html")


@contextmanager
def serve_directory(
    root: Path, *, ranges: bool = True, host: str = "127.0.0.1", port: int = 0
) -> Iterator[HTTPServer]:
    """Serve ``root`` over HTTP on ``host`` (an aiohttp server in its own thread), on
    ``port`` (default: a free one; on 80 the URL names no port, as users write it)."""
    server = HTTPServer(Path(root), ranges=ranges)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner: dict[str, Any] = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        app_runner = web.AppRunner(app, access_log=None)
        await app_runner.setup()
        runner["runner"] = app_runner
        site = web.TCPSite(app_runner, host, port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        bound = sockets[0].getsockname()[1]
        server.url = f"http://{host}" if bound == 80 else f"http://{host}:{bound}"

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except OSError as e:  # the address is taken
            runner["error"] = e
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="test-http-server")
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the test HTTP server did not start")
    if "error" in runner:
        thread.join(10)
        loop.run_until_complete(runner["runner"].cleanup())
        loop.close()
        raise runner["error"]
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class S3Server:
    """A moto S3 server on 127.0.0.1, and what it was asked.

    Attributes
    ----------
    endpoint
        Its URL, for ``client_kwargs={"endpoint_url": ...}``.
    hits
        ``(method, path, range)`` of every request received, in order.
    """

    endpoint: str = ""
    hits: list[tuple[str, str, str | None]] = field(default_factory=list)

    def options(self, **extra: Any) -> dict[str, Any]:
        """s3fs options reaching this server (with moto's fake credentials)."""
        return {
            "key": "testing-key",
            "secret": "testing-secret",
            "client_kwargs": {"endpoint_url": self.endpoint},
            "skip_instance_cache": True,
            **extra,
        }

    def gets(self, fragment: str = "") -> list[tuple[str, str, str | None]]:
        """The GET requests whose path contains ``fragment``."""
        return [h for h in list(self.hits) if h[0] == "GET" and fragment in h[1]]

    def reset(self) -> None:
        """Forget the requests received so far."""
        self.hits.clear()


@contextmanager
def serve_s3() -> Iterator[S3Server]:
    """Start moto's S3 server (its werkzeug app, wrapped to count requests) on 127.0.0.1."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    server = S3Server()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        server.hits.append(
            (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE"))
        )
        return app(environ, start_response)

    wsgi = make_server("127.0.0.1", 0, counting, threaded=True)
    server.endpoint = f"http://127.0.0.1:{wsgi.server_address[1]}"
    thread = threading.Thread(target=wsgi.serve_forever, daemon=True, name="test-s3-server")
    thread.start()
    try:
        yield server
    finally:
        wsgi.shutdown()
        wsgi.server_close()
        thread.join(10)
