"""Serving a store as Zarr over HTTP: ``fsspec-virtual serve PATH`` and :func:`serve`.

The server (aiohttp) answers ``GET`` and ``HEAD`` for the store's keys, with ranges,
entity tags and CORS headers, so that any Zarr client reads the collection: xarray and
zarr-python through fsspec's HTTP filesystem, zarrita.js in a browser. See
``docs/serving.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from ..filesystem import VirtualZarrFileSystem

__all__ = ["serve", "make_app"]


def serve(
    fs: VirtualZarrFileSystem,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    listing_ttl: float | None = None,
    cors_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] = (),
    **limits: Any,
) -> None:
    """Serve ``fs``'s keys over HTTP until interrupted (Ctrl-C): a Zarr endpoint that
    ``xr.open_zarr("http://HOST:PORT/")`` and other Zarr clients read.

    The collection is listed and scanned before the server listens (errors surface here).

    Parameters
    ----------
    fs
        The store to serve (a :class:`~fsspec_virtual.VirtualZarrFileSystem`).
    host, port
        Where to listen: by default the loopback interface only (this machine). Use
        ``"0.0.0.0"`` to serve other machines, with a ``token``.
    token
        If given, every request must carry it: ``Authorization: Bearer TOKEN``, or (for a
        browser) once ``?token=TOKEN`` on a URL, which sets a cookie.
    listing_ttl
        Seconds after which a request lists the sources again, so that new, changed and
        deleted files are served (default: the store's own ``listing_ttl``; None: never).
        Each answer is read from one snapshot.
    cors_origins
        Without a token, the origins (``"https://maps.example.org"``, or ``"*"``: any)
        whose web pages may read the server (CORS); by default none: a page the user visits
        cannot read a server on this machine. With a token, pages of any origin may (they
        must send the token).
    allowed_hosts
        Without a token, the ``Host`` names answered besides this machine's
        (``localhost``, the ``host`` listened on) and IP addresses: the name a reverse proxy
        forwards. Others are refused (421), so that a web page cannot reach the server
        through DNS rebinding.
    **limits
        Fields of :class:`fsspec_virtual.serve.app.Limits`: request line and header
        sizes, ``idle_timeout``, ``send_timeout``.
    """
    from .app import Limits, run

    run(
        fs,
        host,
        port,
        token=token,
        listing_ttl=listing_ttl,
        limits=Limits(**limits),
        cors_origins=cors_origins,
        allowed_hosts=allowed_hosts,
    )


def make_app(
    fs: VirtualZarrFileSystem,
    *,
    token: str | None = None,
    listing_ttl: float | None = None,
    send_timeout: float = 120.0,
    cors_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] = (),
) -> web.Application:
    """The :class:`aiohttp.web.Application` :func:`serve` runs, for tests and for
    embedding in another aiohttp server (as a sub-application:
    ``parent.add_subapp("/era5/", make_app(fs))`` serves the keys under ``/era5/``).

    Parameters are :func:`serve`'s; run it with
    :func:`fsspec_virtual.serve.app.running` (which applies the request limits) or any
    aiohttp runner.
    """
    from .app import make_app as build

    return build(
        fs,
        token=token,
        listing_ttl=listing_ttl,
        send_timeout=send_timeout,
        cors_origins=cors_origins,
        allowed_hosts=allowed_hosts,
    )
