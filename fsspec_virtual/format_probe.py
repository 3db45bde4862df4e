"""Telling a client that asks for the Zarr format a store does not serve which one it does.

zarr-python asks for a node's metadata in two situations. Told a format, it asks for that
format's documents alone (``zarr.json``; or ``.zgroup``/``.zarray``, ``.zattrs``,
``.zmetadata``), and a miss reads as "No group found", which sends the user looking for
a missing file. Told nothing, it asks for ``zarr.json``, ``.zgroup``, ``.zattrs`` and
``.zmetadata`` of the same node at once and takes whichever exists. The store cannot
refuse the other format's documents outright (that would break the second, ordinary
open), so a miss on one of them waits a few turns of the loop and is refused with
:class:`~fsspec_virtual.errors.ZarrFormatNotServedError` only when no document of the
served format of the same node was asked for around it.

A store serving format 2 answers a lone ``zarr.json``; one serving format 3 answers a
lone ``.zgroup``, ``.zarray`` or ``.zmetadata`` (``.zattrs`` is asked with them).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .errors import ZarrFormatNotServedError

__all__ = ["FormatProbes", "V2_DOCUMENTS", "V3_DOCUMENTS"]

#: The metadata documents of Zarr format 2.
V2_DOCUMENTS = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata"})

#: The metadata document of Zarr format 3.
V3_DOCUMENTS = frozenset({"zarr.json"})

#: The documents of the other format that, asked for alone, are refused: a format 2
#: client asks ``.zattrs`` only with ``.zgroup`` or ``.zarray``
_PROBES = {2: V3_DOCUMENTS, 3: frozenset({".zgroup", ".zarray", ".zmetadata"})}
_SERVED = {2: V2_DOCUMENTS, 3: V3_DOCUMENTS}

#: How long (seconds) before a request of the other format a request of the served
#: format of its node vouches for it (any made after it does).
_WINDOW = 5.0

#: Turns of the event loop a miss gives the requests started with it.
_TURNS = 3


class FormatProbes:
    """The served format's documents asked for lately, per node (one per store instance).

    Parameters
    ----------
    served
        The Zarr format the store serves (2 or 3).
    """

    def __init__(self, served: int = 2) -> None:
        self.served = served
        self._asked: dict[str, float] = {}

    def note(self, path: str) -> float:
        """Record a request for ``path`` (a key as the client spelled it), as it starts;
        return when that was."""
        now = time.monotonic()
        node, _, name = path.rpartition("/")
        if name in _SERVED[self.served]:
            self._asked[node] = now
        return now

    async def refuse_other_format(
        self, path: str, asked_at: float, is_node: Callable[[str], bool]
    ) -> None:
        """Raise :class:`ZarrFormatNotServedError` if ``path`` is a document of the format
        not served, asked for on its own at ``asked_at`` (what :meth:`note` returned), of a
        node the store has (``is_node``: a group or an array); return otherwise (the
        caller then reports the key missing).

        The answer may come long after the request (the first one waits for the scan),
        so the requests of the served format that vouch for it are counted from when it
        was made.
        """
        node, _, name = path.rpartition("/")
        if name not in _PROBES[self.served] or not is_node(node):
            return
        for _ in range(_TURNS):
            await asyncio.sleep(0)
        if self._asked.get(node, -math.inf) >= asked_at - _WINDOW:
            return
        where = f"node {node!r}" if node else "the root"
        other = 3 if self.served == 2 else 2
        raise ZarrFormatNotServedError(
            f"this store serves Zarr format {self.served} only: asked for Zarr format "
            f"{other} metadata ({name}) of {where}; open it with zarr_format={self.served} "
            f"or without zarr_format, or make the store with zarr_format={other}"
        )
