"""The snapshots a server serves: one pinned store per snapshot, moved on by ``listing_ttl``.

Every request reads one store pinned to one snapshot (:meth:`Snapshots.current`), so
each response comes from one snapshot, whatever refresh happens meanwhile. Stores made
here are asynchronous (``asynchronous=True``): their coroutines run on the server's loop,
and such a store never moves to another snapshot on its own; after ``listing_ttl`` seconds
the next request lists the sources again through a new store (the collection's shared
refresh), and requests from then on read the new snapshot while those in flight finish
on theirs. A new snapshot that would change what keys of the one served mean (a variable
re-encoded, a file removed, rewritten or inserted before the end: see
:mod:`fsspec_virtual.continuity`) is not adopted: clients holding the served metadata
would decode its chunks into other values. It is logged, and served at its
``/snapshot/ID/`` URL only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..continuity import meaning_changes
from ..errors import StaleSourceError
from ..options import redacted_text
from .http import unservable_nodes

if TYPE_CHECKING:
    from ..filesystem import VirtualZarrFileSystem
    from ..state import CollectionState

__all__ = ["Pinned", "Snapshots", "blocking_store", "SNAPSHOTS", "PINNED", "STORE"]

log = logging.getLogger("fsspec_virtual.serve")

#: Snapshots kept for ``/snapshot/ID/`` URLs besides the current one.
KEPT = 8
#: What a snapshot identity looks like (anything else is not looked up).
_IDENTITY = re.compile(r"[A-Za-z0-9_-]{1,128}")

#: Options a served store is made without: the server sets them itself.
_SERVER_SET = ("asynchronous", "loop", "listing_ttl")


@dataclass(frozen=True)
class Pinned:
    """A store pinned to one snapshot, and that snapshot."""

    fs: VirtualZarrFileSystem
    state: CollectionState


class Snapshots:
    """The snapshot a server serves now, for the store ``fs`` was made as.

    Parameters
    ----------
    fs
        A :class:`~fsspec_virtual.VirtualZarrFileSystem`: its arguments make the stores
        served (asynchronous copies; a ``snapshot`` it was given is served until the first
        ``listing_ttl`` refresh).
    listing_ttl
        Seconds after which a request lists the sources again; None: never.
    """

    def __init__(self, fs: VirtualZarrFileSystem, listing_ttl: float | None = None) -> None:
        if listing_ttl is not None and listing_ttl < 0:
            raise ValueError(f"listing_ttl must be >= 0 seconds, not {listing_ttl}")
        self._cls = type(fs)
        self._args = tuple(fs.storage_args)
        self._options = {k: v for k, v in fs.storage_options.items() if k not in _SERVER_SET}
        self.listing_ttl = listing_ttl
        self._current: Pinned | None = None
        self._checked = -float("inf")
        self._refreshing: asyncio.Future[Pinned] | None = None
        self._kept: OrderedDict[str, Pinned] = OrderedDict()
        #: Snapshots a refresh found and the server did not adopt, with the reasons
        #: (:func:`~fsspec_virtual.continuity.meaning_changes`)
        self.refused: dict[str, list[str]] = {}

    def store(self, **options: Any) -> VirtualZarrFileSystem:
        """A new store with this collection's arguments, overridden by ``options``."""
        return self._cls(*self._args, **{**self._options, **options})

    @property
    def variant(self) -> str:
        """The options that change a key's bytes, for entity tags."""
        keys = ("decode", "zarr_format")
        return ";".join(f"{k}={self._options.get(k)!r}" for k in keys)

    async def current(self) -> Pinned:
        """The store (pinned) that a request starting now reads; lists the sources again
        first if ``listing_ttl`` has passed (concurrent requests share that listing)."""
        pinned, ttl = self._current, self.listing_ttl
        if pinned is not None and (ttl is None or time.monotonic() - self._checked <= ttl):
            return pinned
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)
        return await asyncio.shield(self._refreshing)

    async def at(self, ident: str) -> Pinned | None:
        """The store pinned to snapshot ``ident`` (a ``/snapshot/ID/`` URL): the current
        one, one of the last :data:`KEPT` served, or one the collection can still have (kept
        in this process, or whole in the scan cache); None if it cannot be had."""
        if not _IDENTITY.fullmatch(ident):
            return None
        current = self._current
        if current is not None and current.state.id == ident:
            return current
        if ident in self._kept:
            self._kept.move_to_end(ident)
            return self._kept[ident]
        fs = self.store(asynchronous=True, snapshot=ident)
        try:
            state = await fs._state()
        except StaleSourceError:
            return None
        pinned = Pinned(fs, state)
        self._keep(pinned)
        return pinned

    def _keep(self, pinned: Pinned) -> None:
        self._kept[pinned.state.id] = pinned
        self._kept.move_to_end(pinned.state.id)
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)

    def _refreshed(self, done: asyncio.Future[Pinned]) -> None:
        self._refreshing = None
        if not done.cancelled():
            done.exception()  # seen: every waiter got it

    async def _refresh(self) -> Pinned:
        previous = self._current
        started = time.monotonic()
        # the first store serves what the collection serves now (or the snapshot the
        # store was given); a later one lists again (listing_ttl=0: its snapshot is old)
        options: dict[str, Any] = {"asynchronous": True}
        if previous is not None:
            options.update(listing_ttl=0, snapshot=None)
        fs = self.store(**options)
        try:
            state = await fs._state()
        except Exception as error:
            if previous is None:
                raise
            # as fs.refresh(): a listing that fails leaves the snapshot served as it was
            log.warning(
                "listing the sources again failed; still serving snapshot %s: %s",
                previous.state.id[:13],
                redacted_text(f"{type(error).__name__}: {error}"),
            )
            self._checked = started
            return previous
        if previous is not None and state is not previous.state:
            reasons = self.refused.get(state.id)  # found before: every listing_ttl finds it
            if reasons is None:
                # a walk of every chunk grid: off the loop, which serves requests meanwhile
                reasons = await asyncio.to_thread(meaning_changes, previous.state, state)
                reasons += _unservable(state)
            if reasons:
                self._refuse(state, reasons)
                self._checked = started
                return previous
        if previous is None or state is not previous.state:
            self._current = Pinned(fs, state)
            if previous is not None:
                self._keep(previous)  # for clients that pinned it in their URLs
                log.info("serving snapshot %s: %d file(s)", state.id[:13], len(state.files))
        self._checked = started
        assert self._current is not None
        return self._current

    def _refuse(self, state: CollectionState, reasons: list[str]) -> None:
        """Keep serving the current snapshot instead of ``state``, which would change what
        keys clients already read mean (logged once per snapshot)."""
        if state.id in self.refused:
            return
        self.refused[state.id] = reasons
        log.warning(
            "not serving snapshot %s at the root: it changes what keys of snapshot %s mean "
            "(%s); clients may open it at /snapshot/%s/, or restart the server to serve it",
            state.id[:13],
            self._current.state.id[:13] if self._current else "?",
            redacted_text("; ".join(reasons[:5]) + (", ..." if len(reasons) > 5 else "")),
            state.id,
        )


def _unservable(state: CollectionState) -> list[str]:
    """Names a new snapshot brings that HTTP clients cannot ask for (a snapshot holding
    them would answer every request 503: it is not adopted)."""
    found = unservable_nodes(state.manifest)
    return [f"{path!r} is named with {why}" for path, why in sorted(found.items())]


async def blocking_store(request: web.Request) -> VirtualZarrFileSystem:
    """A blocking store pinned to the snapshot ``request`` reads, for pages that read data
    through xarray or zarr (call those in ``asyncio.to_thread``: never on the loop).

    Only inside a request that the server's middleware pinned (every request it routes).
    """
    snapshots: Snapshots = request.app[SNAPSHOTS]
    pinned: Pinned = request[PINNED]
    return snapshots.store(snapshot=pinned.state.id)


#: Where a server application keeps its :class:`Snapshots`.
SNAPSHOTS = web.AppKey("fsspec_virtual.snapshots", Snapshots)
#: The request item holding the :class:`Pinned` store a request reads.
PINNED = web.RequestKey("fsspec_virtual.pinned", Pinned)
#: The request item holding that store alone (asynchronous: await it on the server loop).
STORE: web.RequestKey[VirtualZarrFileSystem] = web.RequestKey("snapshot_store")
