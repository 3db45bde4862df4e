"""Whether a newer snapshot keeps what an older one's keys mean.

A client that opened a dataset holds its metadata (dtype, codecs, fill value, shape) and
its coordinates, and keeps reading chunk keys by them. In this process that is safe: an
opened store stays on its snapshot. A client of another process (the HTTP server's) reads
whatever snapshot answers each request: if a refresh re-encoded an array (a new file's
packing unpacks the whole variable to float64), or moved values to other positions (a file
removed, or inserted before the end), the client's metadata would decode the new
snapshot's chunks into wrong values, or label them with the wrong coordinates, silently.

:func:`meaning_changes` tells such a refresh from one that keeps every key's meaning:
files appended at the end of the concat dimension, new variables and groups, and files
rewritten in place (same positions, same encoding: their chunks read the new values).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .manifest import COMPUTED, INLINE, MISSING, ArrayMeta, ComputePlan, SourcePart, VirtualArray

if TYPE_CHECKING:
    from .access import FileVersion
    from .manifest import Manifest
    from .state import CollectionState

__all__ = ["meaning_changes"]

#: Stands for the chunks checked on their own (the partial ones at grown ends).
_CHECKED = MISSING - 10


def meaning_changes(old: CollectionState, new: CollectionState) -> list[str]:
    """Why keys of snapshot ``old`` would be decoded or placed otherwise in snapshot
    ``new``: one reason per file or array, none if ``new`` keeps their meaning."""
    reasons = _removed_files(old.versions, new.versions)
    reasons += _moved_coordinates(old, new)
    reasons += _group_changes(old.manifest, new.manifest)
    for path, array in old.manifest.arrays.items():
        after = new.manifest.arrays.get(path)
        if after is None:
            reasons.append(f"variable {path!r} is gone")
            continue
        why = _array_change(array, after, old.manifest.urls, new.manifest.urls)
        if why is not None:
            reasons.append(f"variable {path!r}: {why}")
    return reasons


def _removed_files(old: dict[str, FileVersion], new: dict[str, FileVersion]) -> list[str]:
    return [f"file {url} is gone" for url in old if url not in new]


def _moved_coordinates(old: CollectionState, new: CollectionState) -> list[str]:
    """A file rewritten in place keeps its chunks' meaning only with the same dimension
    coordinate values (a client holds the labels): compared from the two scans, and
    named when either scan is not at hand (a snapshot loaded whole from the cache)."""
    before = {r.source.path: r.scanned.coords for r in old.scanned}
    after = {r.source.path: r.scanned.coords for r in new.scanned}
    out = []
    for url, version in old.versions.items():
        now = new.versions.get(url)
        if now is None or now == version:
            continue
        held, found = before.get(url), after.get(url)
        if held is None or found is None:
            out.append(f"file {url} was rewritten, and its coordinates cannot be compared")
            continue
        for path in sorted(set(held) | set(found)):
            a, b = held.get(path), found.get(path)
            if (
                a is None
                or b is None
                or a.dtype != b.dtype
                or not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
            ):
                out.append(f"file {url} was rewritten with other {path!r} values")
    return out


def _group_changes(old: Manifest, new: Manifest) -> list[str]:
    return [f"group {path!r} is gone" for path in old.groups if path not in new.groups]


def _array_change(
    old: VirtualArray, new: VirtualArray, old_urls: tuple[str, ...], new_urls: tuple[str, ...]
) -> str | None:
    """Why ``new`` would read other values than ``old`` where ``old`` has values, or None."""
    before, after = old.meta, new.meta
    if len(after.shape) != len(before.shape) or any(
        n < o for n, o in zip(after.shape, before.shape)
    ):
        return f"its shape went from {before.shape} to {after.shape}"
    if _single_chunk(before) and _single_chunk(after):
        return _single_chunk_change(old, new, old_urls, new_urls)
    if replace(after, shape=before.shape) != before:
        return "its encoding or attributes changed (dtype, chunks, codecs, fill value)"
    region = tuple(slice(0, n) for n in old.grid.shape)
    grid_before, grid_after = old.grid, new.grid
    ids_before, ids_after = grid_before.file_id, grid_after.file_id[region]
    edge = _grown_edges(before, after)
    # a partial chunk at the end of an axis that grew takes the new values after the old
    # extent: it may pass through before and be computed after, from the same file there
    why = _edge_change(old, new, edge, old_urls, new_urls)
    if why is not None:
        return why
    # elsewhere each chunk is served as it was, from the same file (a file rewritten in
    # place moves its chunks within itself)
    others_before = np.where(edge, _CHECKED, ids_before)
    others_after = np.where(edge, _CHECKED, ids_after)
    if not _same_sources(others_before, old_urls, others_after, new_urls):
        return "chunks it served are now served otherwise, or read from other files"
    computed = (grid_before.file_id == COMPUTED).any()
    if computed and not _plan_extends(old.plan, new.plan, old_urls, new_urls):
        return "chunks it computes are now computed from other sources"
    return None


def _edge_change(
    old: VirtualArray,
    new: VirtualArray,
    edge: np.ndarray,
    old_urls: tuple[str, ...],
    new_urls: tuple[str, ...],
) -> str | None:
    """Why a partial chunk at the end of a grown axis would hold other values within the
    old extent: it must still begin with the same file's data, at the same place."""
    grid_before, grid_after = old.grid, new.grid
    for index in zip(*edge.nonzero()):
        was, now = int(grid_before.file_id[index]), int(grid_after.file_id[index])
        if was == MISSING:
            if now != MISSING:
                return "its last, partial chunk was missing and is now written"
            continue
        if was < 0:  # inline or computed before: the plan check below covers computed
            if was != now:
                return "its last, partial chunk is now served otherwise"
            continue
        url = old_urls[was]
        if now >= 0:
            if new_urls[now] != url:
                return "its last, partial chunk is now read from another file"
        elif now != COMPUTED or not _part_begins(new, index, url, new_urls):
            return "its last, partial chunk no longer begins with the same file's data"
    return None


def _part_begins(
    array: VirtualArray, index: tuple[int, ...], url: str, urls: tuple[str, ...]
) -> bool:
    """Whether ``array``'s plan reads the start of chunk ``index`` from ``url``."""
    plan = array.plan
    if plan is None or plan.axis is None:
        return False
    start = int(index[plan.axis]) * array.meta.chunks[plan.axis]
    for part in plan.parts:
        length = part.meta.shape[plan.axis]
        if part.start <= start < part.start + length:
            source = part.file_id if part.grid is None else _only_file(part)
            return source is not None and urls[source] == url
    return False


def _only_file(part: SourcePart) -> int | None:
    """The one file a part's chunks are read from, or None."""
    assert part.grid is not None
    ids = np.unique(part.grid.file_id[part.grid.file_id >= 0])
    return int(ids[0]) if len(ids) == 1 else None


def _grown_edges(before: ArrayMeta, after: ArrayMeta) -> np.ndarray:
    """Where ``before``'s chunk grid has a partial chunk at the end of an axis along which
    ``after`` is longer."""
    edge = np.zeros(before.grid_shape, dtype=bool)
    for axis, (old, new, chunk) in enumerate(zip(before.shape, after.shape, before.chunks)):
        if new > old and chunk and old % chunk:
            index = [slice(None)] * len(before.shape)
            index[axis] = -1  # type: ignore[call-overload]
            edge[tuple(index)] = True
    return edge


def _single_chunk(meta: ArrayMeta) -> bool:
    return tuple(meta.chunks) == tuple(meta.shape)


def _single_chunk_change(
    old: VirtualArray, new: VirtualArray, old_urls: tuple[str, ...], new_urls: tuple[str, ...]
) -> str | None:
    """An array held whole in one chunk (a joined coordinate) may grow, as long as its
    values are the same where the older one had values (a client holding the older
    metadata reads the new chunk as a size error, never as other values)."""
    before, after = old.meta, new.meta
    same = replace(after, shape=before.shape, chunks=before.chunks) == before
    if not same or before.compressor or before.filters or after.compressor or after.filters:
        return "its encoding or attributes changed (dtype, codecs, fill value)"
    if old.grid.file_id.flat[0] == MISSING and new.grid.file_id.flat[0] == MISSING:
        return None
    if old.grid.file_id.flat[0] != INLINE or new.grid.file_id.flat[0] != INLINE:
        if _same_single_source(old, new, old_urls, new_urls):
            return None
        return "its one chunk changed"
    dtype = before.numpy_dtype
    held = np.frombuffer(old.grid.inline[int(old.grid.offset.flat[0])], dtype=dtype)
    now = np.frombuffer(new.grid.inline[int(new.grid.offset.flat[0])], dtype=dtype)
    held = held.reshape(before.shape, order=before.order)  # type: ignore[call-overload]
    now = now.reshape(after.shape, order=after.order)  # type: ignore[call-overload]
    if held.tobytes() != now[tuple(slice(0, n) for n in before.shape)].tobytes():
        return "its values changed"
    return None


def _same_single_source(
    old: VirtualArray, new: VirtualArray, old_urls: tuple[str, ...], new_urls: tuple[str, ...]
) -> bool:
    """Whether the one chunk of both is the same byte range of the same file (file ids
    index each snapshot's own URL table)."""
    before, after = int(old.grid.file_id.flat[0]), int(new.grid.file_id.flat[0])
    return (
        old.meta.shape == new.meta.shape
        and before >= 0
        and after >= 0
        and old_urls[before] == new_urls[after]
        and old.grid.offset.flat[0] == new.grid.offset.flat[0]
        and old.grid.length.flat[0] == new.grid.length.flat[0]
    )


def _plan_extends(
    old: ComputePlan | None,
    new: ComputePlan | None,
    old_urls: tuple[str, ...],
    new_urls: tuple[str, ...],
) -> bool:
    """Whether ``new`` assembles the parts ``old`` did, in the same places (and perhaps
    more after them)."""
    if old is None or new is None or old.axis != new.axis or len(new.parts) < len(old.parts):
        return False
    return all(_same_part(a, b, old_urls, new_urls) for a, b in zip(old.parts, new.parts))


def _same_part(
    a: SourcePart, b: SourcePart, a_urls: tuple[str, ...], b_urls: tuple[str, ...]
) -> bool:
    if (a.start, a.meta, a.h5path, a.unpack) != (b.start, b.meta, b.h5path, b.unpack):
        return False
    if (a.grid is None) != (b.grid is None):
        return False
    if a.grid is None or b.grid is None:
        return a_urls[a.file_id] == b_urls[b.file_id]
    if a.grid.file_id.shape != b.grid.file_id.shape:
        return False
    return _same_sources(a.grid.file_id, a_urls, b.grid.file_id, b_urls)


def _same_sources(
    ids_a: np.ndarray, urls_a: tuple[str, ...], ids_b: np.ndarray, urls_b: tuple[str, ...]
) -> bool:
    """Whether two grids of file ids (each indexing its own URL table) serve each chunk
    the same way (missing, inline, computed, or read) and read the same files."""
    if not np.array_equal(np.where(ids_a >= 0, 0, ids_a), np.where(ids_b >= 0, 0, ids_b)):
        return False
    real = ids_a >= 0
    files_a = np.asarray(urls_a, dtype=object)[ids_a[real]]
    files_b = np.asarray(urls_b, dtype=object)[ids_b[real]]
    return bool(np.array_equal(files_a, files_b))
