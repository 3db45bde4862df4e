"""Telling a client that asks for Zarr format 3 that only format 2 is served.

zarr-python asks for ``zarr.json`` in two situations: told ``zarr_format=3``, it asks for
that key alone (and a miss reads as "No group found", which sends the user looking for a
missing file); told nothing, it asks for ``zarr.json``, ``.zgroup``, ``.zattrs`` and
``.zmetadata`` of the same node at once and takes whichever exists. The store cannot
refuse ``zarr.json`` outright (that would break the second, ordinary open), so a miss on
``zarr.json`` waits a few turns of the loop and is refused with
:class:`~fsspec_virtual.errors.ZarrFormatNotServedError` only when no format 2 document
of the same node was asked for around it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .errors import ZarrFormatNotServedError

__all__ = ["FormatProbes", "V2_DOCUMENTS"]

#: The metadata documents of Zarr format 2.
V2_DOCUMENTS = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata"})

#: How long (seconds) before a ``zarr.json`` request a format 2 request of its node
#: vouches for it (any format 2 request made after it does).
_WINDOW = 5.0

#: Turns of the event loop a ``zarr.json`` miss gives the requests started with it.
_TURNS = 3


class FormatProbes:
    """The format 2 documents asked for lately, per node (one per store instance)."""

    def __init__(self) -> None:
        self._asked: dict[str, float] = {}

    def note(self, path: str) -> float:
        """Record a request for ``path`` (a key as the client spelled it), as it starts;
        return when that was."""
        now = time.monotonic()
        node, _, name = path.rpartition("/")
        if name in V2_DOCUMENTS:
            self._asked[node] = now
        return now

    async def refuse_v3(self, path: str, asked_at: float, is_node: Callable[[str], bool]) -> None:
        """Raise :class:`ZarrFormatNotServedError` if ``path`` is a ``zarr.json`` asked
        for on its own at ``asked_at`` (what :meth:`note` returned), of a node the store
        has (``is_node``: a group or an array); return otherwise (the caller then reports
        the key missing).

        The answer may come long after the request (the first one waits for the scan),
        so the format 2 requests that vouch for it are counted from when it was made.
        """
        node, _, name = path.rpartition("/")
        if name != "zarr.json" or not is_node(node):
            return
        for _ in range(_TURNS):
            await asyncio.sleep(0)
        if self._asked.get(node, -math.inf) >= asked_at - _WINDOW:
            return
        where = f"node {node!r}" if node else "the root"
        raise ZarrFormatNotServedError(
            f"this store serves Zarr format 2 only: asked for Zarr format 3 metadata "
            f"(zarr.json) of {where}; open it with zarr_format=2 or without zarr_format"
        )
