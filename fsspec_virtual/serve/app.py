"""The server: an aiohttp application serving a store's keys read-only over HTTP.

A request goes through three middlewares, outermost first:

1. ``guard``: without a token, a ``Host`` that names neither this machine nor an address
   refused (421: DNS rebinding); ``OPTIONS`` (CORS preflight) answered; methods other than
   ``GET`` and ``HEAD`` refused (405); the request target, relative to where the
   application is mounted, turned into a key (:func:`~.http.key_of_target`: 400 for
   ``..``, ``//``, backslashes, control characters, absolute URLs); errors turned into
   answers (503 for a stale or unreadable source, naming the file; 500 without details
   for anything else); CORS headers on every answer (``*`` with a token, else only the
   origins the server was given).
2. the token check (:mod:`.auth`), when the server has a token.
3. ``store_first``: the request's snapshot pinned (:class:`~.store.Snapshots`), refused
   (503) if it has a variable or group named so that clients cannot ask for it; a path
   the store serves as a key is answered from the store, whatever page route matches it;
   anything else goes to the routes: the pages (``/``, ``/quicklook/...``, added by
   :mod:`.pages` where present), else 404.

Keys are read through the store's own coroutines (``_info``, ``_cat_file``) on the
server's loop: what a client gets is byte for byte what ``fs.cat_file`` returns.
Directories are not listed: Zarr clients read the consolidated metadata (``.zmetadata``)
or ask for keys by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from traceback import format_exc
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..bridges import run_blocking
from ..errors import SourceReadError, VirtualZarrError, ZarrFormatNotServedError
from ..options import RedactingFilter, redacted_text
from .accesslog import AccessLog, access_logger
from .auth import token_middleware
from .http import (
    BadRange,
    BadTarget,
    UnservableNameError,
    byte_range,
    content_range,
    content_type,
    entity_tag,
    host_name,
    is_ip_literal,
    key_of_target,
    none_match,
    range_applies,
    strong_match,
    unservable_nodes,
)
from .store import PINNED, SNAPSHOTS, STORE, Pinned, Snapshots

if TYPE_CHECKING:
    from ..filesystem import VirtualZarrFileSystem

__all__ = ["Limits", "make_app", "running", "run"]

log = logging.getLogger("fsspec_virtual.serve")

#: Keys below it are read from one snapshot: ``/snapshot/ID/KEY`` (store keys come first).
SNAPSHOT_PREFIX = "snapshot/"
#: The request item holding the key a request names.
KEY = web.RequestKey("fsspec_virtual.key", str)
#: The request item holding the path the application is mounted under (``""``: the root).
MOUNT = web.RequestKey("fsspec_virtual.mount", str)
_METHODS = "GET, HEAD, OPTIONS"
_EXPOSED = {
    "Access-Control-Expose-Headers": (
        "Content-Range, Content-Length, ETag, Accept-Ranges, X-Snapshot"
    ),
}
_PREFLIGHT = {
    "Access-Control-Allow-Methods": _METHODS,
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Match, If-Range, Authorization",
    "Access-Control-Max-Age": "600",
}
#: ``Host`` names always accepted (with any port): this machine.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Addresses that mean "every interface": a server bound to one accepts this machine's names.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass
class _Policy:
    """Who may read an application: the ``Host`` names it accepts without a token (more
    are added when it starts listening), the origins CORS lets read it, and the resource
    that tells where it is mounted."""

    token: bool
    hosts: set[str]
    origins: frozenset[str]
    mount: Any = None
    #: The snapshot last found to have no name clients cannot ask for.
    names_checked: str = ""

    def check_names(self, pinned: Pinned) -> None:
        if pinned.state.id != self.names_checked:
            _check_names(pinned.state.manifest)
            self.names_checked = pinned.state.id

    def host_ok(self, header: str | None) -> bool:
        if self.token or header is None:  # HTTP/1.0 without a Host: no browser sends it
            return True
        host = host_name(header)
        return host is not None and (
            host in LOCAL_HOSTS or host in self.hosts or is_ip_literal(host)
        )

    def allowed_origin(self, origin: str | None) -> str | None:
        if self.token or "*" in self.origins:
            return "*"
        if origin is not None and origin.rstrip("/").lower() in self.origins:
            return origin
        return None

    def prefix(self) -> str:
        """The path the application is mounted under (``""`` at the root,
        ``"/era5"`` under ``parent.add_subapp("/era5/", app)``)."""
        canonical: str = self.mount.canonical
        return canonical[: -len(_CATCH_ALL)]


_CATCH_ALL = "/{tail}"
_POLICY = web.AppKey("fsspec_virtual.policy", _Policy)


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server.

    Attributes
    ----------
    max_line_size, max_field_size, max_headers
        Bytes of the request line and of one header, and the number of headers: a request
        over them is refused (400, by aiohttp).
    idle_timeout
        Seconds a connection may take to send a whole request (line and headers), counted
        from when it opened or its last answer was sent; then it is closed. Slow senders
        (a request dribbled byte by byte) are closed by it too.
    send_timeout
        Seconds an answer may take to be sent (a client that stops reading); then the
        connection is dropped.
    """

    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    idle_timeout: float = 30.0
    send_timeout: float = 120.0


def make_app(
    fs: VirtualZarrFileSystem,
    *,
    token: str | None = None,
    listing_ttl: float | None = None,
    send_timeout: float = Limits.send_timeout,
    cors_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] = (),
) -> web.Application:
    """The aiohttp application serving ``fs``'s keys (see :func:`fsspec_virtual.serve`).

    ``cors_origins``: the origins (``https://example.org``, or ``*``) whose pages may read
    a server without a token (with a token, any may: ``*``). ``allowed_hosts``: ``Host``
    names accepted without a token besides this machine's and IP addresses (the name a
    reverse proxy forwards).
    """
    from ..filesystem import VirtualZarrFileSystem

    if not isinstance(fs, VirtualZarrFileSystem):
        raise TypeError(f"serve a VirtualZarrFileSystem, not {type(fs).__name__}")
    if listing_ttl is None:
        listing_ttl = fs.storage_options.get("listing_ttl")
    policy = _Policy(
        token=token is not None,
        hosts={h.rstrip(".").lower().strip("[]") for h in allowed_hosts},
        origins=frozenset(o.rstrip("/").lower() for o in cors_origins),
    )
    middlewares: list[Middleware] = [_guard(policy)]
    if token is not None:
        middlewares.append(token_middleware(token))
    middlewares.append(_store_first)
    app = web.Application(middlewares=middlewares)
    app[SNAPSHOTS] = Snapshots(fs, listing_ttl)
    app[_SEND_TIMEOUT] = send_timeout
    app[_POLICY] = policy
    app.on_response_prepare.append(_cors(policy))
    _add_pages(app)
    policy.mount = app.router.add_route("*", "/{tail:.*}", _not_found).resource
    return app


_SEND_TIMEOUT = web.AppKey("fsspec_virtual.send_timeout", float)


def _drop(transport: asyncio.Transport | None) -> None:
    """Close a connection at once: a reset (SO_LINGER 0), so the kernel does not keep
    sending what the client would not read."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _add_pages(app: web.Application) -> None:
    """The landing page and quick-looks (``serve/pages.py``), where the package has them."""
    try:
        from .pages import add_page_routes  # type: ignore[import-not-found, unused-ignore]
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.pages":
            raise
        return
    add_page_routes(app)


@asynccontextmanager
async def running(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits()
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) while the block runs; yields the
    server's URL (``http://127.0.0.1:PORT/``)."""
    runner = web.AppRunner(
        app,
        access_log_class=AccessLog,
        access_log=access_logger,
        handler_cancellation=True,
        keepalive_timeout=limits.idle_timeout,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
    )
    policy = app.get(_POLICY)
    if policy is not None:
        policy.hosts.add(host.strip("[]").lower())
        if host in _WILDCARDS:  # every interface: this machine's names too
            policy.hosts.update({socket.gethostname().lower(), socket.getfqdn().lower()})
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        address = runner.addresses[0]
        bound, bound_port = address[0], address[1]
        where = f"[{bound}]" if ":" in bound else bound
        yield f"http://{where}:{bound_port}/"
    finally:
        await runner.cleanup()


def run(
    fs: VirtualZarrFileSystem,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    listing_ttl: float | None = None,
    limits: Limits = Limits(),
    announce: Any = None,
    cors_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Serve until interrupted (see :func:`fsspec_virtual.serve`)."""
    _log_to_stderr()
    # list and scan now: a collection that cannot be served fails here
    _check_names(fs.collection().manifest)
    app = make_app(
        fs,
        token=token,
        listing_ttl=listing_ttl,
        send_timeout=limits.send_timeout,
        cors_origins=cors_origins,
        allowed_hosts=allowed_hosts,
    )
    say = announce or (lambda text: print(redacted_text(text), file=sys.stderr, flush=True))

    async def forever() -> None:
        async with running(app, host, port, limits) as url:
            say(_announcement(fs, url, token is not None, host))
            await asyncio.Event().wait()

    try:
        run_blocking(forever())
    except KeyboardInterrupt:
        pass


def _announcement(fs: VirtualZarrFileSystem, url: str, with_token: bool, host: str) -> str:
    lines = [f"serving {fs!r} at {url} (Ctrl-C to stop)"]
    if with_token:
        lines.append(
            f'  xr.open_zarr("{url}", storage_options={{"headers": '
            f'{{"Authorization": "Bearer TOKEN"}}}})   browser: {url}?token=TOKEN'
        )
    else:
        lines.append(f'  xr.open_zarr("{url}")')
        if host not in ("127.0.0.1", "localhost", "::1"):
            lines.append(
                f"  warning: listening on {host} without a token: anyone who can "
                "reach it reads the data (--token / FSSPEC_VIRTUAL_TOKEN)"
            )
    return "\n".join(lines)


def _log_to_stderr() -> None:
    """Access lines and server messages on stderr, redacted, unless logging is set up."""
    logger = logging.getLogger("fsspec_virtual.serve")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _check_names(manifest: Any) -> None:
    """Refuse a snapshot with variables or groups HTTP clients cannot ask for by name."""
    found = unservable_nodes(manifest)
    if found:
        listed = "; ".join(f"{path!r}: {why}" for path, why in sorted(found.items()))
        raise UnservableNameError(
            f"not served over HTTP: {len(found)} variable(s) or group(s) named with a "
            f"character clients do not send as it is, so they would read another "
            f"variable's values or fill values: {listed}. Rename them in the files, or "
            "read the store with fsspec_virtual directly"
        )


# -- middlewares ---------------------------------------------------------------------------


def _target(request: web.Request, policy: _Policy) -> str:
    """The request target relative to where the application is mounted."""
    target = request.raw_path
    prefix = request[MOUNT] = policy.prefix()
    if prefix:
        if not (target == prefix or target.startswith((prefix + "/", prefix + "?"))):
            raise BadTarget(f"not a path under {prefix}/")
        target = target[len(prefix) :]
        if not target.startswith("/"):
            target = "/" + target
    return target


def _guard(policy: _Policy) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not policy.host_ok(request.headers.get("Host")):
                raise web.HTTPMisdirectedRequest(
                    text="421: this server answers requests for this machine only "
                    "(its address, localhost), not for the name in Host\n"
                )
            if request.method == "OPTIONS":
                return web.Response(status=204, headers=_PREFLIGHT)
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(
                    request.method, ["GET", "HEAD", "OPTIONS"], text="405: read-only\n"
                )
            try:
                request[KEY] = key_of_target(_target(request, policy))
            except BadTarget as error:
                raise web.HTTPBadRequest(text=f"400: {error}\n") from None
            return await handler(request)
        except web.HTTPException:
            raise
        except ZarrFormatNotServedError as error:
            return web.Response(status=404, text=f"404: {error}\n")
        except VirtualZarrError as error:
            # a stale or unreadable source (never fill values for a read error: the client
            # is told, naming the file), or a collection that cannot be listed or combined
            log.warning("%s %s: %s", request.method, redacted_text(request.raw_path), error)
            return web.Response(status=503, text=f"503: {error}\n", headers={"Retry-After": "5"})
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.error(
                "%s %s failed: %s",
                request.method,
                redacted_text(request.raw_path),
                redacted_text(format_exc()),
            )
            return web.Response(status=500, text="500: internal error (see the server log)\n")

    return guard


def _cors(policy: _Policy) -> Any:
    async def cors(request: web.Request, response: web.StreamResponse) -> None:
        """CORS headers on every answer (errors too): any origin with a token, else the
        origins the server was given."""
        origin = policy.allowed_origin(request.headers.get("Origin"))
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.update(_EXPOSED)
        if origin != "*":
            response.headers["Vary"] = "Origin"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")

    return cors


@web.middleware
async def _store_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    pinned = await request.app[SNAPSHOTS].current()
    key = request[KEY]
    try:
        request.app[_POLICY].check_names(pinned)
    except UnservableNameError:
        if key.startswith(SNAPSHOT_PREFIX):  # an earlier snapshot may be served
            return await _serve_pinned(request, key[len(SNAPSHOT_PREFIX) :])
        raise
    request[PINNED] = pinned
    request[STORE] = pinned.fs
    if key:  # the root is a group, never a key
        answer = await _serve_key(request, pinned, key)
        if answer is not None:
            return answer
    if key.startswith(SNAPSHOT_PREFIX):
        return await _serve_pinned(request, key[len(SNAPSHOT_PREFIX) :])
    return await handler(request)


async def _serve_pinned(request: web.Request, rest: str) -> web.StreamResponse:
    """``/snapshot/ID/KEY``: ``KEY`` read from snapshot ``ID``, for clients that keep a
    dataset open while the server moves on (``listing_ttl``)."""
    ident, _, key = rest.partition("/")
    pinned = await request.app[SNAPSHOTS].at(ident)
    if pinned is None:
        raise web.HTTPGone(
            text=f"410: snapshot {ident[:40]!r} can no longer be had (its files changed); "
            "open the dataset again at the server's root\n"
        )
    request.app[_POLICY].check_names(pinned)
    request[PINNED] = pinned
    request[STORE] = pinned.fs
    answer = await _serve_key(request, pinned, key) if key else None
    if answer is None:
        raise web.HTTPNotFound(text=f"404: no key {key!r} in snapshot {ident}\n")
    return answer


async def _not_found(request: web.Request) -> web.StreamResponse:
    key = request.get(KEY, "")
    if not key:
        raise web.HTTPNotFound(text="404: this server serves Zarr keys (start at .zmetadata)\n")
    raise web.HTTPNotFound(text=f"404: no key {key!r} in this store\n")


# -- a key ---------------------------------------------------------------------------------


async def _serve_key(request: web.Request, pinned: Pinned, key: str) -> web.StreamResponse | None:
    """The answer for ``key`` from ``pinned``, or None if the store serves no such key
    (a group, an array, a missing chunk: the routes answer, 404 at last)."""
    fs = pinned.fs
    tag = entity_tag(pinned.state.id, key, request.app[SNAPSHOTS].variant)
    asks = request.headers
    ranged = "Range" in asks and range_applies(asks.get("If-Range"), tag)
    whole: bytes | None = None
    try:
        if not ranged and "If-None-Match" not in asks:
            # the bytes themselves tell the size: a computed chunk is computed once
            whole = await fs._cat_file(key)
            size = len(whole)
        else:
            info = await fs._info(key)
            if info.get("type") != "file":
                return None
            size = int(info["size"])
    except (FileNotFoundError, IsADirectoryError):
        return None
    headers = {
        "ETag": tag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-cache",
        "Content-Type": content_type(key),
        "X-Snapshot": pinned.state.id,
    }
    # RFC 9110 13.2.2: If-Match, then If-None-Match, then If-Range
    if "If-Match" in asks and not strong_match(asks["If-Match"], tag):
        return web.Response(
            status=412, text="412: the key's ETag differs from If-Match\n", headers=headers
        )
    if none_match(asks.get("If-None-Match"), tag):
        return web.Response(status=304, headers=headers)
    try:
        span = byte_range(asks.get("Range") if ranged else None, size)
    except BadRange as error:
        return web.Response(
            status=416,
            text=f"416: {error}\n",
            headers={"Content-Range": f"bytes */{size}", "ETag": tag},
        )
    status = 200 if span is None else 206
    start, stop = span if span is not None else (0, size)
    if span is not None:
        headers["Content-Range"] = content_range(start, stop, size)
    if request.method == "HEAD":
        if whole is None:  # read as GET would (never 200 where GET is 503), sent as nothing
            await fs._cat_file(key, start, stop)
        headers["Content-Length"] = str(stop - start)
        return web.Response(status=status, headers=headers)
    if whole is not None:
        data = whole
    elif span is None:
        data = await fs._cat_file(key)
    else:
        data = await fs._cat_file(key, start, stop)
    if len(data) != stop - start:  # never send bytes other than the ones announced
        raise SourceReadError(
            key, f"{len(data)} bytes read where {stop - start} were expected (bytes {start}-{stop})"
        )
    return await _send(request, web.StreamResponse(status=status, headers=headers), data)


async def _send(
    request: web.Request, response: web.StreamResponse, data: bytes
) -> web.StreamResponse:
    """Send ``data``, dropping the connection of a client that stops reading."""
    response.content_length = len(data)
    try:
        async with asyncio.timeout(request.app[_SEND_TIMEOUT]):
            await response.prepare(request)
            await response.write(data)
            await response.write_eof()
    except TimeoutError:
        log.warning("%s %s: client too slow, connection dropped", request.method, request.raw_path)
        _drop(request.transport)
    return response
