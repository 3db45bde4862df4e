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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fsspec import AbstractFileSystem, filesystem, get_filesystem_class
from fsspec.core import split_protocol

from .combine import ScannedFile, combine, concat_coordinate_paths
from .compute import DecodedChunkCache
from .concat import keep_layouts
from .errors import ScanError, SkippedFileWarning, UnsupportedVariableWarning
from .manifest import Manifest
from .materialize import read_array
from .metadata import render_metadata
from .pool import default_workers, pool_running, shared_pool
from .scan import SCANNER_VERSION, scan_file
from .scan_cache import ScanCache
from .source import SourceFile, file_identity, list_source_files, resolve_filesystem

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
        return cls(paths, concat_dim, protocol, options, on_error)


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
    """

    fs: AbstractFileSystem
    files: tuple[SourceFile, ...]
    manifest: Manifest
    metadata: dict[str, bytes]
    cache: DecodedChunkCache = field(default_factory=DecodedChunkCache, compare=False)
    scanned: tuple[tuple[ScannedFile, tuple[str, ...]], ...] = field(default=(), compare=False)
    built_at: float = field(default_factory=time.monotonic, compare=False)

    @functools.cached_property
    def versions(self) -> dict[str, tuple[int, str]]:
        """Each file's size and identity when scanned: reads check them (local files)."""
        return {f.path: (f.size, f.identity) for f in self.files}


#: Below this many files a cold pool's start-up (~1 s) costs more than it saves (a file
#: scans in ~25 ms in-process; measured on the small and medium benchmark presets).
_POOL_MIN_FILES = 80
#: Filesystems whose files exist only in this process: worker processes cannot see them.
_PROCESS_LOCAL_PROTOCOLS = frozenset({"memory"})
#: Seconds one file's scan may take in a worker process before it is killed.
SCAN_TIMEOUT = 600.0

_states: dict[CollectionSpec, CollectionState] = {}
_locks: dict[CollectionSpec, threading.Lock] = {}
_locks_guard = threading.Lock()


#: Times a file that changes while it is scanned is scanned again before giving up.
_SCAN_ATTEMPTS = 3

Scanned = tuple[ScannedFile, list[str], SourceFile]


def _as_it_is_now(fs: AbstractFileSystem, source: SourceFile) -> SourceFile:
    fs.invalidate_cache(source.path)
    info = fs.info(source.path)
    return replace(source, size=int(info.get("size") or 0), identity=file_identity(info))


def _scan_one(fs: AbstractFileSystem, source: SourceFile, concat_dim: str | None) -> Scanned:
    """Scan one file; returns the scan, its messages and the file version it describes.

    A file replaced between its listing and its scan, or during it, is scanned again: the
    version recorded (and later checked by every read) is the one whose bytes were read.
    """
    for _ in range(_SCAN_ATTEMPTS):
        manifest, messages = scan_file(fs, source)
        coords = {}
        try:
            if concat_dim is not None:
                for path in concat_coordinate_paths(manifest, concat_dim):
                    coords[path] = read_array(fs, manifest, path)
            unchanged = _as_it_is_now(fs, source)
        except FileNotFoundError as e:
            raise ScanError(source.path, f"it vanished while being scanned: {e}") from e
        except OSError as e:  # the file changed under the coordinate read
            unchanged = None
            error: Exception = e
        if unchanged is not None and (unchanged.size, unchanged.identity) == (
            source.size,
            source.identity,
        ):
            return ScannedFile(source.path, manifest, coords), messages, source
        source = unchanged if unchanged is not None else _as_it_is_now(fs, source)
        error = ScanError(source.path, "it changed while being scanned")
    raise ScanError(source.path, f"it kept changing while being scanned ({error})")


def scan_in_worker(
    protocol: str, options_json: str, source: SourceFile, concat_dim: str | None
) -> Scanned:
    """:func:`_scan_one` in a worker process, which makes its own source filesystem."""
    fs = filesystem(protocol, **json.loads(options_json))
    return _scan_one(fs, source, concat_dim)


#: Told the number of files scanned so far and the number to scan.
Progress = Callable[[int, int], None]


def _counter(total: int, progress: Progress | None) -> Callable[[], None]:
    done = [0]
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            done[0] += 1
            count = done[0]
        if progress is not None:
            progress(count, total)

    return tick


def _scan_all(
    spec: CollectionSpec,
    fs: AbstractFileSystem,
    listed: list[SourceFile],
    workers: int,
    progress: Progress | None = None,
) -> list[Scanned | BaseException]:
    """Scan every file, in worker processes where that pays, else in this thread."""
    use_pool = workers > 1 and len(listed) > 1
    use_pool = use_pool and spec.target_protocol not in _PROCESS_LOCAL_PROTOCOLS
    use_pool = use_pool and (len(listed) >= _POOL_MIN_FILES or pool_running(workers))
    if use_pool:
        args = [
            (spec.target_protocol, spec.target_options_json, source, spec.concat_dim)
            for source in listed
        ]
        tick = _counter(len(listed), progress)
        results = shared_pool(workers).map(scan_in_worker, args, timeout=SCAN_TIMEOUT, on_done=tick)
        return [
            r
            if not isinstance(r, BaseException) or isinstance(r, ScanError)
            else ScanError(source.path, f"{type(r).__name__}: {r}")
            for source, r in zip(listed, results)
        ]
    out: list[Scanned | BaseException] = []
    tick = _counter(len(listed), progress)
    for source in listed:
        try:
            out.append(_scan_one(fs, source, spec.concat_dim))
        except ScanError as e:
            out.append(e)
        tick()
    return out


def _scan_or_reuse(
    spec: CollectionSpec,
    fs: AbstractFileSystem,
    listed: list[SourceFile],
    workers: int,
    cache: ScanCache | None,
    previous: CollectionState | None = None,
    progress: Progress | None = None,
) -> list[Scanned | BaseException]:
    """Each file's scan: from the previous state or the persistent cache where the file is
    unchanged (same path, size and identity), else scanned now (and stored)."""
    known: dict[SourceFile, Scanned] = {}
    if previous is not None:
        for source, (earlier, notes) in zip(previous.files, previous.scanned):
            known[source] = (earlier, list(notes), source)
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
                hit = (ScannedFile(source.path, manifest, coords), cached_notes, source)
        results.append(hit)
    todo = [i for i, r in enumerate(results) if r is None]
    fresh = _scan_all(spec, fs, [listed[i] for i in todo], workers, progress) if todo else []
    for i, result in zip(todo, fresh):
        results[i] = result
        if cache is not None and not isinstance(result, BaseException):
            done, found, version = result
            key = cache.key(spec.target_protocol, version, spec.concat_dim, SCANNER_VERSION)
            cache.put(key, done.manifest, done.coords, found)
    return [r for r in results if r is not None]


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
    workers: int,
    cache: ScanCache | None,
    previous: CollectionState | None = None,
    progress: Progress | None = None,
) -> CollectionState:
    if previous is not None:
        fs = previous.fs
        fs.invalidate_cache()  # listings must be fresh
        paths = [fs._strip_protocol(p) for p in spec.paths]
    else:
        options = json.loads(spec.target_options_json)
        fs, paths = resolve_filesystem(list(spec.paths), spec.target_protocol, options)
    listed = list_source_files(fs, paths)
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
    results = _scan_or_reuse(spec, fs, listed, workers, cache, previous, progress)
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
                result = (earlier[0], list(earlier[1]), old)
        if isinstance(result, BaseException):
            if spec.on_error == "raise":
                raise result
            warnings.warn(f"skipping {source.path}: {result}", SkippedFileWarning, stacklevel=2)
            continue
        scanned_file, messages, as_scanned = result
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
    )


def peek_state(spec: CollectionSpec) -> CollectionState | None:
    """The state if it has been built already (no I/O)."""
    return _states.get(spec)


def get_state(
    spec: CollectionSpec,
    workers: int | None = None,
    cache: ScanCache | None = None,
    progress: Progress | None = None,
) -> CollectionState:
    """The state of a collection, built now if no instance has built it yet (blocking).

    Parameters
    ----------
    spec
        The collection.
    workers
        Scan processes (``1``: scan in this thread); default :func:`default_workers`.
    cache
        The persistent scan cache to reuse and fill, if any.
    progress
        Called with (files scanned, files to scan) as scans complete.
    """
    state = _states.get(spec)
    if state is not None:
        return state
    with _locks_guard:
        lock = _locks.setdefault(spec, threading.Lock())
    with lock:
        state = _states.get(spec)
        if state is None:
            n = default_workers() if workers is None else workers
            state = _build(spec, n, cache, progress=progress)
            _states[spec] = state
    return state


#: Builds started from coroutines run here, never in an event loop's default executor:
#: zarr's loop needs its executor's threads for the codec work kerchunk's translation
#: asks of it, and concurrent first reads would otherwise all block in that pool.
_builder = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="vz-scan")
_building: dict[CollectionSpec, concurrent.futures.Future[CollectionState]] = {}


async def get_state_async(
    spec: CollectionSpec, workers: int | None = None, cache: ScanCache | None = None
) -> CollectionState:
    """:func:`get_state` for coroutines: concurrent callers share one build."""
    state = _states.get(spec)
    if state is not None:
        return state
    with _locks_guard:
        future = _building.get(spec)
        if future is None:
            future = _builder.submit(get_state, spec, workers, cache)
            _building[spec] = future
            future.add_done_callback(lambda _: _forget_build(spec, future))
    return await asyncio.wrap_future(future)


def _forget_build(spec: CollectionSpec, future: concurrent.futures.Future[CollectionState]) -> None:
    with _locks_guard:
        if _building.get(spec) is future:
            del _building[spec]


def refresh_state(
    spec: CollectionSpec,
    workers: int | None = None,
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
        state = _build(spec, default_workers() if workers is None else workers, cache, previous)
        _states[spec] = state
    return state


async def refresh_state_async(
    spec: CollectionSpec,
    workers: int | None,
    cache: ScanCache | None,
    seen: CollectionState,
) -> CollectionState:
    """:func:`refresh_state` for coroutines, on the builder threads (never a loop's
    default executor, which zarr needs; see ``_builder``)."""
    future = _builder.submit(refresh_state, spec, workers, cache, seen)
    return await asyncio.wrap_future(future)


def clear_states() -> None:
    """Forget every built state (the next access rescans)."""
    _states.clear()
