"""The scanned state of a collection, built on first need and shared within the process.

zarr re-creates our filesystem (with ``asynchronous=True``) from its arguments, and users
open the same collection many times: so the state is kept here, keyed by the arguments
that determine it, not on a filesystem instance. Building runs in a worker thread (never
on an event loop: kerchunk calls zarr's synchronous API).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import json
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fsspec import AbstractFileSystem, get_filesystem_class
from fsspec.core import split_protocol

from .combine import ScannedFile, combine
from .compute import DecodedChunkCache
from .concat import keep_layouts
from .errors import ScanError, SkippedFileWarning, UnsupportedVariableWarning
from .manifest import Manifest
from .metadata import render_metadata
from .scan import SCANNER_VERSION, ScanCost
from .scan_cache import ScanCache
from .scheduling import Scanned, ScanSettings, scan_files
from .source import SourceFile, list_source_files, resolve_filesystem

__all__ = [
    "CollectionSpec",
    "CollectionState",
    "get_state",
    "get_state_async",
    "refresh_state",
    "refresh_state_async",
    "peek_state",
    "clear_states",
]

OnError = Literal["raise", "skip"]


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What determines a collection's state: its sources and how they are combined."""

    paths: tuple[str, ...]
    concat_dim: str | None
    target_protocol: str
    target_options_json: str
    on_error: OnError
    #: The options themselves (they may hold objects JSON cannot spell, and secrets:
    #: never part of the repr)
    target_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_arguments(
        cls,
        path: str | Sequence[str],
        concat_dim: str | None,
        target_protocol: str | None,
        target_options: dict[str, Any] | None,
        on_error: OnError,
    ) -> CollectionSpec:
        """Normalise the filesystem's arguments."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        raw = [path] if isinstance(path, str) else [str(p) for p in path]
        if not raw:
            raise ValueError("path is empty: give a directory, glob, file or list of files")
        protocol = target_protocol or split_protocol(raw[0])[0] or "file"
        protocol = "file" if protocol == "local" else protocol
        # equal specs for equal sources, however they were spelled ("file:///x" or "/x")
        strip = get_filesystem_class(protocol)._strip_protocol
        paths = tuple(strip(p) for p in raw)
        options = json.dumps(target_options or {}, sort_keys=True, default=repr)
        return cls(paths, concat_dim, protocol, options, on_error, dict(target_options or {}))

    def __repr__(self) -> str:
        return (
            f"CollectionSpec(paths={self.paths!r}, concat_dim={self.concat_dim!r}, "
            f"target_protocol={self.target_protocol!r}, on_error={self.on_error!r})"
        )


@dataclass(frozen=True)
class CollectionState:
    """A scanned, combined collection, ready to serve keys.

    Attributes
    ----------
    fs
        The source filesystem.
    files
        The data files, as listed (skipped files excluded).
    manifest
        The combined manifest.
    metadata
        Every metadata key and its bytes.
    cache
        Decoded source chunks, for computed chunks.
    scanned
        Each kept file's scan, for reuse by :func:`refresh_state`.
    built_at
        ``time.monotonic()`` when the state was built (for ``listing_ttl``).
    scan_cost
        The remote files scanned for this state and the requests their scans made.
    """

    fs: AbstractFileSystem
    files: tuple[SourceFile, ...]
    manifest: Manifest
    metadata: dict[str, bytes]
    cache: DecodedChunkCache = field(default_factory=DecodedChunkCache, compare=False)
    scanned: tuple[tuple[ScannedFile, tuple[str, ...]], ...] = field(default=(), compare=False)
    built_at: float = field(default_factory=time.monotonic, compare=False)
    scan_cost: tuple[int, ScanCost] = field(default=(0, ScanCost()), compare=False)

    @functools.cached_property
    def versions(self) -> dict[str, tuple[int, str]]:
        """Each file's size and identity when scanned: reads check them (local files)."""
        return {f.path: (f.size, f.identity) for f in self.files}


_states: dict[CollectionSpec, CollectionState] = {}
_locks: dict[CollectionSpec, threading.Lock] = {}
_locks_guard = threading.Lock()


def _scan_or_reuse(
    spec: CollectionSpec,
    fs: AbstractFileSystem,
    listed: list[SourceFile],
    settings: ScanSettings,
    cache: ScanCache | None,
    previous: CollectionState | None = None,
) -> list[Scanned | BaseException]:
    """Each file's scan: from the previous state or the persistent cache where the file is
    unchanged (same path, size and identity), else scanned now (and stored)."""
    known: dict[SourceFile, Scanned] = {}
    if previous is not None:
        for source, (earlier, notes) in zip(previous.files, previous.scanned):
            known[source] = (earlier, list(notes), source, ScanCost())
    keys = [
        cache.key(spec.target_protocol, s, spec.concat_dim, SCANNER_VERSION) if cache else ""
        for s in listed
    ]
    results: list[Scanned | BaseException | None] = []
    for source, key in zip(listed, keys):
        hit = known.get(source) if source.identity else None
        if hit is None and cache is not None:
            cached = cache.get(key)
            if cached is not None:
                manifest, coords, cached_notes = cached
                hit = (ScannedFile(source.path, manifest, coords), cached_notes, source, ScanCost())
        results.append(hit)
    todo = [i for i, r in enumerate(results) if r is None]
    fresh = scan_files(
        fs,
        spec.target_protocol,
        spec.target_options,
        [listed[i] for i in todo],
        spec.concat_dim,
        settings,
    )
    for i, result in zip(todo, fresh):
        results[i] = result
        if cache is not None and not isinstance(result, BaseException):
            done, found, version, _ = result
            key = cache.key(spec.target_protocol, version, spec.concat_dim, SCANNER_VERSION)
            cache.put(key, done.manifest, done.coords, found)
    complete = [r for r in results if r is not None]
    if len(complete) != len(listed):  # never zip scans with the wrong files
        raise RuntimeError(f"{len(listed) - len(complete)} scan result(s) missing")
    return complete


def _collection_key(spec: CollectionSpec, listed: Sequence[SourceFile]) -> str:
    """The persistent-cache key of a whole combined collection: its arguments and the
    exact version of every file listed."""
    ident = json.dumps(
        [
            "collection",
            spec.paths,
            spec.concat_dim,
            spec.target_protocol,
            spec.on_error,
            SCANNER_VERSION,
            [[f.path, f.size, f.identity, f.format] for f in listed],
        ]
    )
    return "c" + hashlib.sha256(ident.encode()).hexdigest()


def _build(
    spec: CollectionSpec,
    settings: ScanSettings,
    cache: ScanCache | None,
    previous: CollectionState | None = None,
) -> CollectionState:
    if previous is not None:
        fs = previous.fs
        fs.invalidate_cache()  # listings must be fresh
        paths = [fs._strip_protocol(p) for p in spec.paths]
    else:
        options = spec.target_options
        fs, paths = resolve_filesystem(list(spec.paths), spec.target_protocol, options)
    listed = list_source_files(fs, paths, spec.on_error)
    whole_key = _collection_key(spec, listed) if cache is not None else ""
    if cache is not None and previous is None:
        # the whole combined collection, for this exact listing: one read instead of one
        # per file plus the combine
        hit = cache.get(whole_key, files=len(listed))
        if hit is not None:
            manifest = hit[0]
            for message in hit[2]:
                warnings.warn(message, UnsupportedVariableWarning, stacklevel=2)
            return CollectionState(
                fs, tuple(listed), manifest, render_metadata(manifest), DecodedChunkCache()
            )
    scanned: list[ScannedFile] = []
    kept: list[SourceFile] = []
    memo: list[tuple[ScannedFile, tuple[str, ...]]] = []
    results = _scan_or_reuse(spec, fs, listed, settings, cache, previous)
    cost = ScanCost()
    n_scanned = 0
    for source, result in zip(listed, results):
        if isinstance(result, BaseException) and previous is not None:
            # a refresh keeps what it knew of a file that is being rewritten right now: its
            # reads raise StaleSourceError until a later refresh catches it at rest
            earlier = next(
                (hit for f, hit in zip(previous.files, previous.scanned) if f.path == source.path),
                None,
            )
            if earlier is not None and source.path in previous.versions:
                old = next(f for f in previous.files if f.path == source.path)
                result = (earlier[0], list(earlier[1]), old, ScanCost())
        if isinstance(result, BaseException):
            if spec.on_error == "raise":
                raise result
            warnings.warn(f"skipping {source.path}: {result}", SkippedFileWarning, stacklevel=2)
            continue
        scanned_file, messages, as_scanned, spent = result
        if spent.requests:
            n_scanned += 1
            cost = cost + spent
        for message in messages:
            warnings.warn(message, UnsupportedVariableWarning, stacklevel=2)
        scanned.append(scanned_file)
        kept.append(as_scanned)
        memo.append((scanned_file, tuple(messages)))
    if not scanned:
        raise ScanError(", ".join(spec.paths), "no file could be scanned")
    manifest = combine(scanned, spec.concat_dim)
    if previous is not None:
        manifest = keep_layouts(manifest, previous.manifest)
    if cache is not None and tuple(kept) == tuple(listed):
        notes = [note for _, found in memo for note in found]
        cache.put(_collection_key(spec, kept), manifest, {}, notes)
    cache_of_chunks = previous.cache if previous is not None else DecodedChunkCache()
    return CollectionState(
        fs,
        tuple(kept),
        manifest,
        render_metadata(manifest),
        cache_of_chunks,
        tuple(memo),
        scan_cost=(n_scanned, cost),
    )


def peek_state(spec: CollectionSpec) -> CollectionState | None:
    """The state if it has been built already (no I/O)."""
    return _states.get(spec)


def get_state(
    spec: CollectionSpec,
    settings: ScanSettings | None = None,
    cache: ScanCache | None = None,
) -> CollectionState:
    """The state of a collection, built now if no instance has built it yet (blocking).

    Parameters
    ----------
    spec
        The collection.
    settings
        Where and how files are scanned (default: a process pool, no progress bar).
    cache
        The persistent scan cache to reuse and fill, if any.
    """
    state = _states.get(spec)
    if state is not None:
        return state
    with _locks_guard:
        lock = _locks.setdefault(spec, threading.Lock())
    with lock:
        state = _states.get(spec)
        if state is None:
            state = _build(spec, settings or ScanSettings(), cache)
            _states[spec] = state
    return state


#: Builds started from coroutines run here, never in an event loop's default executor:
#: zarr's loop needs its executor's threads for the codec work kerchunk's translation
#: asks of it, and concurrent first reads would otherwise all block in that pool.
_builder = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="vz-scan")
_building: dict[CollectionSpec, concurrent.futures.Future[CollectionState]] = {}


async def get_state_async(
    spec: CollectionSpec, settings: ScanSettings | None = None, cache: ScanCache | None = None
) -> CollectionState:
    """:func:`get_state` for coroutines: concurrent callers share one build."""
    state = _states.get(spec)
    if state is not None:
        return state
    with _locks_guard:
        future = _building.get(spec)
        if future is None:
            future = _builder.submit(get_state, spec, settings, cache)
            _building[spec] = future
            future.add_done_callback(lambda _: _forget_build(spec, future))
    return await asyncio.wrap_future(future)


def _forget_build(spec: CollectionSpec, future: concurrent.futures.Future[CollectionState]) -> None:
    with _locks_guard:
        if _building.get(spec) is future:
            del _building[spec]


def refresh_state(
    spec: CollectionSpec,
    settings: ScanSettings | None = None,
    cache: ScanCache | None = None,
    seen: CollectionState | None = None,
) -> CollectionState:
    """List the sources again and rebuild the state, scanning only new or changed files.

    The new state replaces the old one in a single assignment: a request sees one or the
    other, never a mix. With ``seen`` (the state the caller found stale), nothing is done
    if another caller has replaced it meanwhile.
    """
    with _locks_guard:
        lock = _locks.setdefault(spec, threading.Lock())
    with lock:
        previous = _states.get(spec)
        if seen is not None and previous is not None and previous is not seen:
            return previous
        state = _build(spec, settings or ScanSettings(), cache, previous)
        _states[spec] = state
    return state


async def refresh_state_async(
    spec: CollectionSpec,
    settings: ScanSettings | None,
    cache: ScanCache | None,
    seen: CollectionState,
) -> CollectionState:
    """:func:`refresh_state` for coroutines, on the builder threads (never a loop's
    default executor, which zarr needs; see ``_builder``)."""
    future = _builder.submit(refresh_state, spec, settings, cache, seen)
    return await asyncio.wrap_future(future)


def clear_states() -> None:
    """Forget every built state (the next access rescans)."""
    _states.clear()
