"""Snapshots of collections: built on first need, kept in a bounded registry per process.

A snapshot (:class:`CollectionState`) is one listing of a collection's files at known
versions and the combined manifest built from it. Its identity (:func:`snapshot_id`) is a
digest of the collection's arguments and every file's path, version and format: it travels
with a filesystem's JSON form and pickle, so every reader of one opened dataset (zarr's
re-created filesystem, a Dask worker in another process) serves the same snapshot, or
raises :class:`~fsspec_virtual.errors.StaleSourceError`. :func:`refresh_state` makes a new
snapshot the collection's current one; snapshots already handed out never change.

zarr re-creates our filesystem (with ``asynchronous=True``) from its arguments, and users
open the same collection many times: so snapshots are kept here, not on a filesystem
instance. Building runs in a worker thread (never on an event loop: kerchunk calls zarr's
synchronous API).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fsspec import AbstractFileSystem, get_filesystem_class
from fsspec.core import split_protocol

from .access import FileVersion
from .bridges import awaited, in_builder
from .combine import CombineOptions, ScannedFile, combine
from .compute import DecodedChunkCache
from .errors import (
    ScanError,
    SkippedFileWarning,
    StaleSourceError,
    UnsupportedVariableWarning,
    UnversionedSourceWarning,
)
from .hypercube import value_from_path
from .manifest import Manifest
from .metadata import render_metadata
from .options import is_secret_name, redacted
from .scan import SCANNER_VERSION, ScanCost
from .scan_cache import Binding, ScanCache, binding_of, files_of
from .scheduling import ScanResult, ScanSettings, scan_files
from .source import SourceFile, list_source_files, resolve_filesystem

__all__ = [
    "CollectionSpec",
    "CollectionState",
    "ScanResult",
    "snapshot_id",
    "get_state",
    "get_state_async",
    "refresh_state",
    "refresh_state_async",
    "resolve_snapshot",
    "resolve_snapshot_async",
    "peek_state",
    "clear_states",
]

OnError = Literal["raise", "skip"]

#: What a scan reads besides the metadata: every file's dimension coordinates (the
#: combine compares and orders by them), whatever the collection's options.
SCAN_READS = "dimension-coordinates"


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What determines a collection's state: its sources and how they are combined."""

    paths: tuple[str, ...]
    combining: CombineOptions
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
        combining: CombineOptions | str | None,
        target_protocol: str | None,
        target_options: dict[str, Any] | None,
        on_error: OnError,
    ) -> CollectionSpec:
        """Normalise the filesystem's arguments."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if isinstance(path, str | os.PathLike):
            raw = [os.fspath(path)]
        else:
            raw = [os.fspath(p) if isinstance(p, os.PathLike) else str(p) for p in path]
        if not raw:
            raise ValueError("path is empty: give a directory, glob, file or list of files")
        protocol = target_protocol or split_protocol(raw[0])[0] or "file"
        protocol = "file" if protocol == "local" else protocol
        if protocol == "file" and any(not p.strip() for p in raw):
            raise ValueError(
                "path is empty: give a directory, glob, file or list of files (an empty "
                "path would list the working directory)"
            )
        # equal specs for equal sources, however they were spelled ("file:///x" or "/x")
        strip = get_filesystem_class(protocol)._strip_protocol
        paths = tuple(strip(p) for p in raw)
        options = json.dumps(target_options or {}, sort_keys=True, default=repr)
        if not isinstance(combining, CombineOptions):
            combining = CombineOptions.from_arguments(combining)
        return cls(paths, combining, protocol, options, on_error, dict(target_options or {}))

    @property
    def source_identity(self) -> str:
        """Where the files are, beyond their paths: the protocol and the options that
        locate them (a ``dir`` root, an endpoint), credentials and objects left out, so
        that it is the same in every process and for every user of a shared cache."""
        return _source_identity(self.target_protocol, self.target_options)

    @property
    def concat_dim(self) -> str | tuple[str, ...] | None:
        """The concat dimension(s) named, as given."""
        dims = self.combining.concat_dims
        return dims[0] if dims is not None and len(dims) == 1 else dims

    def __repr__(self) -> str:
        return (
            f"CollectionSpec(paths={redacted(self.paths)!r}, combining={self.combining!r}, "
            f"target_protocol={self.target_protocol!r}, on_error={self.on_error!r})"
        )


def _locating(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(k): _locating(v)
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
            if not is_secret_name(str(k))
        }
    if isinstance(value, list | tuple):
        return [_locating(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return type(value).__name__


def _source_identity(protocol: str, options: dict[str, Any]) -> str:
    ident = json.dumps([protocol, _locating(options)], sort_keys=True)
    return f"{protocol}:{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def snapshot_id(
    spec: CollectionSpec,
    files: Sequence[SourceFile],
    linked: dict[str, FileVersion] | None = None,
) -> str:
    """The identity of a snapshot: a digest of the collection's arguments and of every
    file's path, version and format (the options of the source filesystem are left out:
    they differ between processes, the files' versions do not), and of the version of
    every file read without being listed (``linked``: HDF5 external links' targets)."""
    return _snapshot_digest(spec, binding_of(list(files)), linked)


def _snapshot_digest(
    spec: CollectionSpec, binding: Binding, linked: dict[str, FileVersion] | None = None
) -> str:
    """:func:`snapshot_id` of the files whose :func:`binding_of` is ``binding``."""
    parts = [
        "snapshot",
        list(spec.paths),
        spec.combining.identity(callables=False),
        spec.source_identity,
        spec.on_error,
        SCANNER_VERSION,
        binding,
    ]
    if linked:
        parts.append(sorted([url, version.to_list()] for url, version in linked.items()))
    if spec.combining.runs_code:
        parts.append(_labels_from_code(spec, [path for path, _, _ in binding]))
    ident = json.dumps(parts)
    return "s" + hashlib.sha256(ident.encode()).hexdigest()[:40]


def _labels_from_code(spec: CollectionSpec, paths: list[str]) -> list[list[str]]:
    """What the callables of ``coords_from_path`` return for each file, spelled: part of
    a snapshot's identity, since a callable's own identity cannot tell (a process whose
    callable answers otherwise has another snapshot, never the same under its name)."""
    out = []
    for dim, where in spec.combining.coords_from_path:
        if isinstance(where, str):
            continue
        for path in paths:
            try:
                value = repr(value_from_path(path, dim, where))
            except Exception as e:  # the combine raises it, naming the file
                value = f"raised {type(e).__name__}"
            out.append([dim, path, value])
    return out


def _with_id(state: CollectionState, ident: str) -> CollectionState:
    """``state`` with its :attr:`~CollectionState.id` already known (a digest of its
    files was just taken to find it: thousands of files make it worth not taking twice)."""
    state.__dict__["id"] = ident
    return state


def _linked_versions(
    manifests: Sequence[Manifest], files: Sequence[SourceFile]
) -> dict[str, FileVersion]:
    """The versions of the files that the scans read without listing them (see
    ``Manifest.linked``).

    Raises
    ------
    StaleSourceError
        If one was read at two versions, or at a version other than the one it was listed
        (and scanned) at: the scans hold some of its values (inline chunks) from each, and
        no snapshot can be made of them.
    """
    listed = {f.path: f.version for f in files}
    out: dict[str, FileVersion] = {}
    for manifest in manifests:
        for url, version in manifest.linked.items():
            if out.get(url, listed.get(url, version)) != version:
                raise StaleSourceError(
                    url,
                    "it changed while the collection was scanned, and HDF5 external links "
                    "read it at two versions; open again",
                )
            out[url] = version
    return out


@dataclass(frozen=True, eq=False)
class CollectionState:
    """A snapshot of a collection: files at known versions and their combined manifest.

    Attributes
    ----------
    spec
        The collection.
    fs
        The source filesystem.
    files
        The data files at the versions scanned (skipped files excluded).
    manifest
        The combined manifest.
    metadata
        Every metadata key and its bytes.
    cache
        Decoded source chunks, for computed chunks.
    scanned
        Each kept file's scan, for reuse by :func:`refresh_state` (empty when the snapshot
        came whole from the persistent cache).
    built_at
        ``time.monotonic()`` when the snapshot was built (for ``listing_ttl``).
    scan_cost
        The remote files scanned for this snapshot and the requests their scans made.
    """

    spec: CollectionSpec
    fs: AbstractFileSystem
    files: tuple[SourceFile, ...]
    manifest: Manifest
    metadata: dict[str, bytes]
    cache: DecodedChunkCache = field(default_factory=DecodedChunkCache)
    scanned: tuple[ScanResult, ...] = ()
    built_at: float = field(default_factory=time.monotonic)
    scan_cost: tuple[int, ScanCost] = (0, ScanCost())

    @functools.cached_property
    def id(self) -> str:
        """The snapshot's identity (see :func:`snapshot_id`)."""
        return snapshot_id(self.spec, self.files, self.manifest.linked)

    @functools.cached_property
    def versions(self) -> dict[str, FileVersion]:
        """Each file's version when scanned, and each external link target's when its
        metadata was read: every read is checked against it."""
        return {**{f.path: f.version for f in self.files}, **self.manifest.linked}

    def __repr__(self) -> str:
        return (
            f"<collection snapshot {self.id[:13]}: {len(self.files)} file(s), "
            f"{len(self.manifest.arrays)} array(s), {len(self.manifest.groups)} group(s)>"
        )


#: Snapshots kept alive by the registry beyond those that open stores hold.
MAX_SNAPSHOTS = 8


class Registry:
    """The snapshots of this process: the current one of each collection, the most
    recently used ones (bounded: :data:`MAX_SNAPSHOTS`), and any that an open store still
    holds (weakly)."""

    def __init__(self, size: int = MAX_SNAPSHOTS) -> None:
        self.size = size
        self._guard = threading.Lock()
        self._current: OrderedDict[CollectionSpec, CollectionState] = OrderedDict()
        self._recent: OrderedDict[str, CollectionState] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[str, CollectionState] = (
            weakref.WeakValueDictionary()
        )
        self._locks: dict[CollectionSpec, threading.Lock] = {}

    def lock(self, spec: CollectionSpec) -> threading.Lock:
        """The lock serialising builds of one collection."""
        with self._guard:
            return self._locks.setdefault(spec, threading.Lock())

    def current(self, spec: CollectionSpec) -> CollectionState | None:
        """The collection's current snapshot, if one is kept (never for a collection whose
        combine runs code: see :attr:`CombineOptions.runs_code`)."""
        if spec.combining.runs_code:
            return None
        with self._guard:
            state = self._current.get(spec)
            if state is not None:
                self._current.move_to_end(spec)
            return state

    def find(self, ident: str) -> CollectionState | None:
        """A snapshot by identity, if this process still has it."""
        with self._guard:
            state = self._recent.get(ident) or self._alive.get(ident)
            if state is not None:
                self._keep(state)
            return state

    def add(self, state: CollectionState, current: bool = True) -> None:
        """Keep ``state``, as its collection's current snapshot if ``current``."""
        with self._guard:
            if current:
                self._current[state.spec] = state
                self._current.move_to_end(state.spec)
                while len(self._current) > self.size:
                    self._current.popitem(last=False)
            self._alive[state.id] = state
            self._keep(state)

    def _keep(self, state: CollectionState) -> None:
        self._recent[state.id] = state
        self._recent.move_to_end(state.id)
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)

    def clear(self) -> None:
        """Forget every snapshot."""
        with self._guard:
            self._current.clear()
            self._recent.clear()
            self._alive.clear()


_registry = Registry()


def _scan_or_reuse(
    spec: CollectionSpec,
    fs: AbstractFileSystem,
    listed: list[SourceFile],
    settings: ScanSettings,
    cache: ScanCache | None,
    previous: CollectionState | None = None,
) -> list[ScanResult | BaseException]:
    """Each file's scan: from the previous snapshot or the persistent cache where the file
    is unchanged (same path and version), else scanned now (and stored)."""
    known: dict[SourceFile, ScanResult] = {}
    if previous is not None:
        # a scan whose external links named other files is never reused: what it made of
        # them (followed at their versions, or refused: missing, not HDF5 yet) hangs on
        # their state, which the linking file's own version cannot vouch for
        known = {
            r.source: ScanResult(r.scanned, r.messages, r.source)
            for r in previous.scanned
            if not r.scanned.manifest.link_targets
        }
    results: list[ScanResult | BaseException | None] = []
    for source in listed:
        # a version that is only a size cannot tell a rewrite: never reused
        hit = known.get(source) if source.version.tells_rewrites else None
        if hit is None and cache is not None and source.version.tells_rewrites:
            key = cache.key(spec.source_identity, source, SCAN_READS, SCANNER_VERSION)
            entry = cache.get(key, expect=binding_of([source]))
            if entry is not None:
                manifest, coords, notes = entry[0], entry[1], entry[2]
                hit = ScanResult(ScannedFile(source.path, manifest, coords), tuple(notes), source)
        results.append(hit)
    todo = [i for i, r in enumerate(results) if r is None]
    fresh = scan_files(
        fs,
        spec.target_protocol,
        spec.target_options,
        [listed[i] for i in todo],
        SCAN_READS,
        settings,
    )
    for i, outcome in zip(todo, fresh):
        if isinstance(outcome, BaseException):
            results[i] = outcome
            continue
        done, found, as_scanned = outcome.scanned, list(outcome.messages), outcome.source
        results[i] = outcome
        keep = as_scanned.version.tells_rewrites and not done.manifest.link_targets
        if cache is not None and keep:
            key = cache.key(spec.source_identity, as_scanned, SCAN_READS, SCANNER_VERSION)
            cache.put(key, done.manifest, done.coords, found, binding_of([as_scanned]))
    complete = [r for r in results if r is not None]
    if len(complete) != len(listed):  # never zip scans with the wrong files
        raise RuntimeError(f"{len(listed) - len(complete)} scan result(s) missing")
    return complete


def _kept_while_rewritten(
    source: SourceFile, previous: CollectionState | None
) -> ScanResult | None:
    """A refresh keeps what it knew of a file that is being rewritten right now: its reads
    raise StaleSourceError until a later refresh catches it at rest."""
    if previous is None:
        return None
    return next((r for r in previous.scanned if r.source.path == source.path), None)


def _from_cache(
    spec: CollectionSpec,
    fs: AbstractFileSystem,
    cache: ScanCache,
    ident: str,
    expect: list[SourceFile] | None,
    expect_binding: Binding | None = None,
) -> CollectionState | None:
    """A whole snapshot from the persistent cache: the entry must be bound to ``ident``,
    and its files must be ``expect`` (when given: ``ident`` is then their
    :func:`snapshot_id`, and ``expect_binding`` their :func:`binding_of` if known), or
    digest to ``ident``."""
    entry = cache.get(ident, files=len(expect) if expect else 1, expect=None)
    if entry is None:
        return None
    if expect is not None:
        binding = expect_binding if expect_binding is not None else binding_of(expect)
        if entry[4] != binding:
            return None  # a valid entry of another listing: not this one
        files = tuple(expect)
    else:
        files = tuple(files_of(entry[4]))
        if _snapshot_digest(spec, entry[4]) != ident:
            return None  # a valid entry of another snapshot: not this one
    for message in entry[2]:
        warnings.warn(message, UnsupportedVariableWarning, stacklevel=3)
    manifest = _sharing_paths(entry[0], files)
    state = CollectionState(spec, fs, files, manifest, render_metadata(manifest))
    return _with_id(state, ident)


def _sharing_paths(manifest: Manifest, files: Sequence[SourceFile]) -> Manifest:
    """``manifest`` with its URL table holding the files' own path strings (equal ones
    decoded a second time would cost a hundred bytes a file for as long as it is open)."""
    paths = {f.path: f.path for f in files}
    urls = tuple(paths.get(url, url) for url in manifest.urls)
    return replace(manifest, urls=urls)


def _source_filesystem(
    spec: CollectionSpec, previous: CollectionState | None
) -> tuple[AbstractFileSystem, list[str]]:
    if previous is not None:
        fs = previous.fs
        fs.invalidate_cache()  # listings must be fresh
        return fs, [fs._strip_protocol(p) for p in spec.paths]
    return resolve_filesystem(list(spec.paths), spec.target_protocol, spec.target_options)


def _build(
    spec: CollectionSpec,
    settings: ScanSettings,
    cache: ScanCache | None,
    previous: CollectionState | None = None,
) -> CollectionState:
    fs, paths = _source_filesystem(spec, previous)
    listed = list_source_files(fs, paths, spec.on_error)
    blind = [f.path for f in listed if not f.version.tells_rewrites]
    if blind:
        warnings.warn(
            f"{len(blind)} file(s) have no version but their size ({blind[0]}, ...: their "
            "filesystem reports neither an ETag nor a modification time): a rewrite at the "
            "same size cannot be detected, and would be read at the scanned offsets",
            UnversionedSourceWarning,
            stacklevel=3,
        )
    listed_binding = binding_of(listed)
    listed_id = _snapshot_digest(spec, listed_binding)
    reusable = not spec.combining.runs_code
    if cache is not None and previous is None and reusable:
        # the whole snapshot of this exact listing: one read instead of one per file plus
        # the combine
        hit = _from_cache(spec, fs, cache, listed_id, listed, listed_binding)
        if hit is not None:
            return hit
    kept: list[ScanResult] = []
    for source, result in zip(listed, _scan_or_reuse(spec, fs, listed, settings, cache, previous)):
        if isinstance(result, BaseException):
            result = _kept_while_rewritten(source, previous) or result
        if isinstance(result, BaseException):
            if spec.on_error == "raise":
                raise result
            warnings.warn(f"skipping {source.path}: {result}", SkippedFileWarning, stacklevel=2)
            continue
        for message in result.messages:
            warnings.warn(message, UnsupportedVariableWarning, stacklevel=2)
        kept.append(result)
    if not kept:
        raise ScanError(", ".join(spec.paths), "no file could be scanned")
    manifest = combine([r.scanned for r in kept], spec.combining)
    files = tuple(r.source for r in kept)
    linked = _linked_versions([r.scanned.manifest for r in kept], files)
    if linked:
        manifest = replace(manifest, linked=linked)
    remote = [r.cost for r in kept if r.cost.requests]
    cost = sum(remote, ScanCost())
    state = CollectionState(
        spec,
        fs,
        files,
        manifest,
        render_metadata(manifest),
        previous.cache if previous is not None else DecodedChunkCache(),
        tuple(kept),
        scan_cost=(len(remote), cost),
    )
    if not linked and files == tuple(listed):
        _with_id(state, listed_id)
    tried_links = any(r.scanned.manifest.link_targets for r in kept)
    if (
        cache is not None
        and reusable
        and all(f.version.tells_rewrites for f in files)
        and not tried_links
    ):
        notes = [note for r in kept for note in r.messages]
        cache.put(state.id, manifest, {}, notes, binding_of(list(files)))
    return state


def peek_state(spec: CollectionSpec) -> CollectionState | None:
    """The collection's current snapshot if one has been built already (no I/O)."""
    return _registry.current(spec)


def get_state(
    spec: CollectionSpec,
    settings: ScanSettings | None = None,
    cache: ScanCache | None = None,
) -> CollectionState:
    """The collection's current snapshot, built now if there is none yet (blocking).

    Parameters
    ----------
    spec
        The collection.
    settings
        Where and how files are scanned (default: a process pool, no progress bar).
    cache
        The persistent scan cache to reuse and fill, if any.
    """
    state = _registry.current(spec)
    if state is not None:
        return state
    with _registry.lock(spec):
        state = _registry.current(spec)
        if state is None:
            state = _build(spec, settings or ScanSettings(), cache)
            _registry.add(state)
    return state


def refresh_state(
    spec: CollectionSpec,
    settings: ScanSettings | None = None,
    cache: ScanCache | None = None,
    seen: CollectionState | None = None,
) -> CollectionState:
    """List the sources again and make a new current snapshot, scanning only new or
    changed files. Snapshots handed out before are not changed.

    With ``seen`` (the snapshot the caller found too old), nothing is done if another
    caller has replaced it meanwhile.
    """
    with _registry.lock(spec):
        previous = _registry.current(spec)
        if seen is not None and previous is not None and previous is not seen:
            return previous
        state = _build(spec, settings or ScanSettings(), cache, previous)
        if previous is not None and state.id == previous.id:
            state = previous  # nothing changed: same snapshot, same identity
        _registry.add(state)
    return state


def resolve_snapshot(
    spec: CollectionSpec,
    ident: str,
    settings: ScanSettings | None = None,
    cache: ScanCache | None = None,
) -> CollectionState:
    """The snapshot ``ident`` of a collection: kept in this process, or whole in the
    persistent cache, or the current listing if it is still that snapshot.

    Raises
    ------
    StaleSourceError
        If the snapshot cannot be had any more (its files changed, and it is neither kept
        nor cached): the dataset must be opened again.
    """
    state = _registry.find(ident)
    if state is not None:
        return state
    with _registry.lock(spec):
        state = _registry.find(ident)
        if state is not None:
            return state
        if cache is not None and not spec.combining.runs_code:
            fs, _ = resolve_filesystem(list(spec.paths), spec.target_protocol, spec.target_options)
            state = _from_cache(spec, fs, cache, ident, None)
        if state is None:
            current = _registry.current(spec) or _build(spec, settings or ScanSettings(), cache)
            _registry.add(current, current=True)
            state = current if current.id == ident else None
        if state is None:
            raise StaleSourceError(
                ", ".join(spec.paths),
                f"this store was opened on snapshot {ident[:13]} of the collection, which "
                "can no longer be had (its files changed and it is not in the scan cache); "
                "open the dataset again",
            )
        _registry.add(state, current=False)
    return state


_building: dict[Any, concurrent.futures.Future[CollectionState]] = {}
_building_guard = threading.Lock()


async def _shared_build(key: Any, function: Any, *args: Any) -> CollectionState:
    """``function(*args)`` on the builder threads; concurrent callers with one ``key``
    share one call."""
    with _building_guard:
        future = _building.get(key)
        started = future is None
        if future is None:
            future = _building[key] = in_builder(function, *args)
    if started:
        # outside the guard: a future already done runs its callback here, at once
        future.add_done_callback(lambda done: _forget_build(key, done))
    return await awaited(future)


def _forget_build(key: Any, future: concurrent.futures.Future[CollectionState]) -> None:
    with _building_guard:
        if _building.get(key) is future:
            del _building[key]


async def get_state_async(
    spec: CollectionSpec, settings: ScanSettings | None = None, cache: ScanCache | None = None
) -> CollectionState:
    """:func:`get_state` for coroutines: concurrent callers share one build."""
    state = _registry.current(spec)
    if state is not None:
        return state
    return await _shared_build(("get", spec), get_state, spec, settings, cache)


async def refresh_state_async(
    spec: CollectionSpec,
    settings: ScanSettings | None,
    cache: ScanCache | None,
    seen: CollectionState,
) -> CollectionState:
    """:func:`refresh_state` for coroutines, on the builder threads."""
    return await awaited(in_builder(refresh_state, spec, settings, cache, seen))


async def resolve_snapshot_async(
    spec: CollectionSpec,
    ident: str,
    settings: ScanSettings | None = None,
    cache: ScanCache | None = None,
) -> CollectionState:
    """:func:`resolve_snapshot` for coroutines."""
    state = _registry.find(ident)
    if state is not None:
        return state
    return await _shared_build(
        ("resolve", spec, ident), resolve_snapshot, spec, ident, settings, cache
    )


def clear_states() -> None:
    """Forget every snapshot, and the source files held open for them (the next access
    lists and scans again, from the persistent cache where it can)."""
    from .compute import _h5_files

    _registry.clear()
    _h5_files.clear()
