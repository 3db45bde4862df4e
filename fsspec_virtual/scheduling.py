"""Where scans run: in this thread, in a pool of processes, or on a Dask cluster.

Every scheduler runs the same function on each file (:func:`scan_in_worker`), so the
results are identical whatever runs them; only the time differs.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fsspec import AbstractFileSystem, filesystem
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from .access import adapter_for
from .bridges import run_blocking
from .codecs import decode_chunk
from .combine import ScannedFile, compared_paths
from .coords import storable
from .errors import ScanError
from .manifest import ChunkGrid, Manifest
from .materialize import byte_ranges_only, read_array
from .pool import default_workers, pool_running, shared_pool
from .reader import Request, fetch_ranges
from .scan import DEFAULT_SCAN_OPEN_OPTIONS, ScanCost, reads_are_guarded, scan_file
from .scan.repeat import learn
from .source import SourceFile

__all__ = [
    "ScanSettings",
    "ScanResult",
    "Progress",
    "scan_one",
    "scan_in_worker",
    "scan_window",
    "scan_window_in_worker",
    "scan_window_packed",
    "PackedScans",
    "unpacked",
    "scan_files",
    "SCAN_TIMEOUT",
]

#: Told the number of files scanned so far and the number to scan.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One file's scan, as a snapshot keeps it.

    Attributes
    ----------
    scanned
        The file's manifest and coordinate values.
    messages
        One message per variable left out of it.
    source
        The file at the version whose bytes were scanned.
    cost
        The requests the scan made (remote files).
    """

    scanned: ScannedFile
    messages: tuple[str, ...]
    source: SourceFile
    cost: ScanCost = field(default_factory=ScanCost)


#: Below this many files a cold pool's start-up (~1 s) costs more than it saves (a file
#: scans in ~25 ms in-process; measured on the small and medium benchmark presets).
POOL_MIN_FILES = 80
#: Filesystems whose files exist only in this process: worker processes cannot see them.
_PROCESS_LOCAL_PROTOCOLS = frozenset({"memory"})
#: Seconds one file's scan may take in a worker process before it is killed.
SCAN_TIMEOUT = 600.0
#: Times a file that changes while it is scanned is scanned again before giving up.
_SCAN_ATTEMPTS = 3


@dataclass(frozen=True)
class ScanSettings:
    """How a collection's files are scanned (never what the scan finds).

    Attributes
    ----------
    workers
        Scan processes of the ``"processes"`` scheduler (Dask sizes its own); ``1`` scans
        in the calling thread; None: the usable cores, at most 8.
    scheduler
        ``"processes"`` (the default: a pool of worker processes), ``"dask"`` (the
        current ``distributed`` client, else Dask's default scheduler), or a
        ``distributed.Client``.
    progress
        A callable told (files scanned, files to scan), True for a tqdm progress bar
        on stderr (shown once a scan has lasted a second), or False.
    open_options
        Options of ``fs.open`` for the scan of a remote file (block size and cache type).
    """

    workers: int | None = None
    scheduler: Any = "processes"
    progress: bool | Progress = False
    open_options: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_SCAN_OPEN_OPTIONS), hash=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.scheduler, str) and self.scheduler not in ("processes", "dask"):
            raise ValueError(
                f"scheduler must be 'processes', 'dask' or a distributed.Client, "
                f"not {self.scheduler!r}"
            )
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ValueError(f"max_workers must be a positive integer, not {self.workers!r}")


def _as_it_is_now(fs: AbstractFileSystem, source: SourceFile) -> SourceFile:
    return replace(source, version=adapter_for(fs).current_version(source.path))


def _read_coordinates(
    fs: AbstractFileSystem,
    manifest: Manifest,
    known: dict[str, np.ndarray],
    versions: dict[str, Any] | None,
) -> dict[str, np.ndarray]:
    """The raw values of the dimension coordinates not ``known`` (see ``storable``).

    Those held in byte ranges only are fetched in one batch, nearby ranges merged (a
    NetCDF3 file's coordinates lie side by side after its header: one request); the
    others (inline, unwritten, read through h5py) one array at a time.
    """
    paths = [p for p in compared_paths(manifest) if p not in known]
    batch = [p for p in paths if byte_ranges_only(manifest.arrays[p])]
    requests, owners = [], []
    for path in batch:
        grid = manifest.arrays[path].grid
        for fid, offset, length in zip(grid.file_id, grid.offset, grid.length):
            url = manifest.urls[int(fid)]
            version = versions.get(url) if versions else None
            requests.append(Request(url, int(offset), int(offset) + int(length), version))
            owners.append(path)
    chunks: dict[str, list[np.ndarray]] = {path: [] for path in batch}
    for path, raw in zip(owners, run_blocking(fetch_ranges(fs, requests)) if requests else []):
        if isinstance(raw, BaseException):
            raise raw
        chunks[path].append(decode_chunk(raw, manifest.arrays[path].meta))
    out = {}
    for path in paths:
        if path in chunks:
            n = manifest.arrays[path].meta.shape[0]
            values = np.concatenate(chunks[path])[:n]
        else:
            values = read_array(fs, manifest, path, versions)
        kept = storable(values)
        if kept is not None:  # else unread: a combine refuses to guess its agreement
            out[path] = kept
    return out


def scan_one(
    fs: AbstractFileSystem,
    source: SourceFile,
    concat_dim: str | None,
    open_options: dict[str, Any] | None = None,
    first_block: bytes | None = None,
) -> ScanResult:
    """Scan one file; returns the scan, its messages, the file version it describes and
    the requests it made.

    A file replaced between its listing and its scan, or during it, is scanned again: the
    version recorded (and later checked by every read) is the one whose bytes were read.
    ``first_block`` (fetched ahead, as listed) serves the first attempt only.
    """
    cost = ScanCost(1, len(first_block)) if first_block is not None else ScanCost()
    error: Exception | None = None
    for _ in range(_SCAN_ATTEMPTS):
        # where every read carries the listed ETag (HTTP If-Match, S3 IfMatch), a file
        # that changes fails the scan's reads instead of being read: no check afterwards
        guarded = reads_are_guarded(fs, source)
        try:
            manifest, messages, spent, read, look = scan_file(
                fs, source, open_options, concat_dim, first_block
            )
        except ScanError as e:
            if not guarded:
                raise
            now = _as_it_is_now(fs, source)
            if now.version == source.version:
                raise
            source, error, first_block = now, e, None
            continue
        cost = cost + spent
        # external links' targets: read at the versions their metadata was scanned at
        own = {source.path: source.version} if guarded else {}
        versions = {**manifest.linked, **own} or None
        coords = dict(read or {})
        try:
            if concat_dim is not None:  # a collection: its files' labels are compared
                coords.update(_read_coordinates(fs, manifest, coords, versions))
            unchanged = source if guarded else _as_it_is_now(fs, source)
        except FileNotFoundError as e:
            raise ScanError(source.path, f"it vanished while being scanned: {e}") from e
        except OSError as e:  # the file changed under the coordinate read
            unchanged = None
            error = e
        if unchanged is not None and unchanged.version == source.version:
            if look is not None:  # a full scan of a file that stayed as it was
                learn(look, source.path, manifest, messages)
            return ScanResult(
                ScannedFile(source.path, manifest, coords), tuple(messages), source, cost
            )
        try:
            source = unchanged if unchanged is not None else _as_it_is_now(fs, source)
        except FileNotFoundError as e:
            raise ScanError(source.path, f"it vanished while being scanned: {e}") from e
        first_block = None
        error = ScanError(source.path, "it changed while being scanned")
    raise ScanError(source.path, f"it kept changing while being scanned ({error})")


#: Remote files whose first blocks are fetched together, ahead of their scans: the
#: round trips overlap instead of adding up (scans themselves run one at a time here).
_PREFETCH_WINDOW = 16
#: Local files sent to a worker process in one task, at most: a task's round trip costs
#: both processes a little, and one reply pickles what its files' scans share (a repeated
#: structure's array descriptions, scan/repeat.py) once. About 8 tasks per worker at
#: least keep the processes evenly busy to the end.
_LOCAL_WINDOW = 32
_TASKS_PER_WORKER = 8


def _windows(items: Sequence[SourceFile], size: int) -> list[Sequence[SourceFile]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _local_window(files: int, workers: int) -> int:
    """Local files per task for ``files`` files on ``workers`` processes."""
    return max(1, min(_LOCAL_WINDOW, files // (workers * _TASKS_PER_WORKER)))


def _first_blocks(
    fs: AbstractFileSystem, window: Sequence[SourceFile], open_options: dict[str, Any]
) -> list[bytes | None]:
    """The first block of each remote HDF5 file of ``window`` as its scan's block cache
    will ask for it, fetched concurrently with the version checks of any read; None
    where not applicable or where the fetch failed (the scan then reads it itself)."""
    block_size = open_options.get("block_size")
    eligible = [source.format == "hdf5" and source.size > 0 for source in window]
    if (
        isinstance(fs, LocalFileSystem)
        or not isinstance(fs, AsyncFileSystem)
        or open_options.get("cache_type") != "blockcache"
        or not isinstance(block_size, int)
        or not any(eligible)
    ):
        return [None] * len(window)
    requests = [
        Request(s.path, 0, min(block_size, s.size), s.version)
        for s, ok in zip(window, eligible)
        if ok
    ]
    fetched = iter(run_blocking(fetch_ranges(fs, requests)))
    out: list[bytes | None] = []
    for ok in eligible:
        block = next(fetched) if ok else None
        out.append(block if isinstance(block, bytes) else None)
    return out


def scan_window(
    fs: AbstractFileSystem,
    window: Sequence[SourceFile],
    concat_dim: str | None,
    open_options: dict[str, Any],
) -> list[ScanResult | ScanError]:
    """Scan the files of ``window`` one at a time, their first blocks fetched together."""
    out: list[ScanResult | ScanError] = []
    for source, block in zip(window, _first_blocks(fs, window, open_options)):
        try:
            out.append(scan_one(fs, source, concat_dim, open_options, block))
        except ScanError as e:
            out.append(e)
    return out


def scan_window_in_worker(
    protocol: str,
    options: dict[str, Any],
    window: Sequence[SourceFile],
    concat_dim: str | None,
    open_options: dict[str, Any],
) -> list[ScanResult | ScanError]:
    """:func:`scan_window` in a worker process, which makes its own source filesystem."""
    try:
        fs = filesystem(protocol, **options)
    except Exception as e:
        return [ScanError(s.path, f"{type(e).__name__}: {e}") for s in window]
    return scan_window(fs, window, concat_dim, open_options)


def _grid_from(
    shape: tuple[int, ...],
    kinds: tuple[str, str, str],
    data: tuple[bytes, bytes, bytes],
    inline: tuple[bytes, ...],
) -> ChunkGrid:
    file_id, offset, length = (
        np.frombuffer(raw, dtype=kind).reshape(shape) for kind, raw in zip(kinds, data)
    )
    return ChunkGrid(file_id, offset, length, inline)


def _grid_reduced(grid: ChunkGrid) -> tuple[Any, ...]:
    arrays = (grid.file_id, grid.offset, grid.length)
    kinds = tuple(a.dtype.str for a in arrays)
    return _grid_from, (grid.file_id.shape, kinds, tuple(a.tobytes() for a in arrays), grid.inline)


#: How a window's scans travel back: chunk grids as their raw bytes (numpy's own pickling
#: of three small arrays per variable cost most of a reply's pickling and unpickling).
_RESULT_REDUCERS = {**copyreg.dispatch_table, ChunkGrid: _grid_reduced}


@dataclass(frozen=True)
class PackedScans:
    """A window's scans (ScanResult or ScanError each), pickled by the worker that ran
    them (:func:`unpacked`)."""

    data: bytes


def scan_window_packed(
    protocol: str,
    options: dict[str, Any],
    window: Sequence[SourceFile],
    concat_dim: str | None,
    open_options: dict[str, Any],
) -> PackedScans:
    """:func:`scan_window_in_worker`, its results pickled with chunk grids as bytes."""
    results = scan_window_in_worker(protocol, options, window, concat_dim, open_options)
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _RESULT_REDUCERS
    pickler.dump(results)
    return PackedScans(buffer.getvalue())


def unpacked(packed: PackedScans) -> list[ScanResult | ScanError]:
    """The scans :func:`scan_window_packed` packed."""
    out = pickle.loads(packed.data)
    if not isinstance(out, list):
        raise TypeError(f"a worker sent {type(out).__name__}, not a list of scans")
    return out


def scan_in_worker(
    protocol: str,
    options: dict[str, Any],
    source: SourceFile,
    concat_dim: str | None,
    open_options: dict[str, Any] | None = None,
) -> ScanResult | ScanError:
    """:func:`scan_one` where the source filesystem must be made anew (a worker process
    or a Dask worker); a failure is returned, not raised, so that one bad file never
    fails a whole batch."""
    try:
        fs = filesystem(protocol, **options)
        return scan_one(fs, source, concat_dim, open_options)
    except ScanError as e:
        return e
    except Exception as e:
        return ScanError(source.path, f"{type(e).__name__}: {e}")


def _ticker(
    total: int, progress: bool | Progress
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A thread-safe ``tick(files)`` reporting progress, and the ``close()`` ending it."""
    bar = None
    report: Progress | None = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="file", desc="scanning", delay=1.0, leave=False)
    elif callable(progress):
        report = progress
    done = [0]
    lock = threading.Lock()

    def tick(files: int = 1) -> None:
        with lock:
            done[0] += files
            count = done[0]
            if bar is not None:
                bar.update(files)
        if report is not None:
            report(count, total)

    def close() -> None:
        if bar is not None:
            bar.close()

    return tick, close


def _dask_map(
    client: Any,
    windows: list[Sequence[SourceFile]],
    task_args: tuple[Any, ...],
    tick: Callable[[int], None],
) -> list[ScanResult | ScanError]:
    """:func:`scan_window_packed` over ``windows`` on a Dask cluster (or Dask's default
    scheduler): a task per window, not per file (a task costs the scheduler and this
    process about 5 ms, as much as scanning a small file). ``task_args``: protocol,
    options, concat_dim and open options."""
    protocol, options, concat_dim, open_options = task_args
    args = [(protocol, options, w, concat_dim, open_options) for w in windows]
    if client is None:
        import dask

        tasks = [dask.delayed(scan_window_packed, pure=False)(*a) for a in args]
        done: list[Any] = list(dask.compute(*tasks))
        tick(sum(len(w) for w in windows))
    else:
        from distributed import as_completed

        futures = [client.submit(scan_window_packed, *a, pure=False) for a in args]
        sizes = {f.key: len(w) for f, w in zip(futures, windows)}
        for future in as_completed(futures):
            tick(sizes[future.key])
        done = []
        for future in futures:
            try:
                done.append(future.result())
            except Exception as e:  # the task failed: each of its files gets the error
                done.append(e)
    return _unpacked_windows(windows, done)


def _unpacked_windows(
    windows: Sequence[Sequence[SourceFile]], done: Sequence[Any]
) -> list[ScanResult | ScanError]:
    """Each file's scan from each window's :class:`PackedScans` (or the window task's
    error, given to each of its files)."""
    out: list[ScanResult | ScanError] = []
    for window, result in zip(windows, done):
        if isinstance(result, PackedScans):
            try:
                result = unpacked(result)
            except Exception as e:  # each of its files gets the error
                result = e
        if isinstance(result, BaseException):
            why = f"{type(result).__name__}: {result}"
            out.extend(ScanError(source.path, why) for source in window)
        else:
            out.extend(result)
    return out


def _dask_workers(client: Any) -> int:
    """The threads a Dask client's cluster runs tasks on (the cores, for Dask's default
    scheduler)."""
    if client is None:
        return default_workers()
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return default_workers()


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker
    except ImportError:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def _current_client() -> Any:
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:  # no client running: Dask's own scheduler
        return None


def scan_files(
    fs: AbstractFileSystem,
    protocol: str,
    options: dict[str, Any],
    listed: Sequence[SourceFile],
    concat_dim: str | None,
    settings: ScanSettings,
) -> list[ScanResult | ScanError]:
    """Scan every file, where ``settings`` say; a file that fails gives its ScanError.

    Parameters
    ----------
    fs
        The source filesystem (for scans in this process).
    protocol, options
        How a worker makes the same filesystem.
    listed
        The files.
    concat_dim
        The concat dimension, whose coordinate values each scan reads.
    settings
        Scheduler, workers, progress and open options.
    """
    if not listed:
        return []
    tick, close = _ticker(len(listed), settings.progress)
    try:
        scheduler = settings.scheduler
        remote = not isinstance(fs, LocalFileSystem)
        # a store unpickled inside a Dask task scans where it is: waiting there for other
        # tasks of the same cluster could take every worker thread and never finish
        if (scheduler == "dask" or not isinstance(scheduler, str)) and not _in_dask_worker():
            client = _current_client() if scheduler == "dask" else scheduler
            size = _local_window(len(listed), _dask_workers(client))
            windows = _windows(listed, min(size, _PREFETCH_WINDOW) if remote else size)
            task_args = (protocol, options, concat_dim, settings.open_options)
            return _dask_map(client, windows, task_args, tick)
        workers = default_workers() if settings.workers is None else settings.workers
        use_pool = workers > 1 and len(listed) > 1
        use_pool = use_pool and protocol not in _PROCESS_LOCAL_PROTOCOLS
        use_pool = use_pool and (len(listed) >= POOL_MIN_FILES or pool_running(workers))
        # remote files go in windows whose first blocks are fetched together; local ones
        # in windows as large as keeps every worker busy (one by one in this process)
        local_size = _local_window(len(listed), workers) if use_pool else 1
        windows = _windows(listed, _PREFETCH_WINDOW if remote else local_size)
        if use_pool:
            done = shared_pool(workers).map(
                scan_window_packed,
                [(protocol, options, w, concat_dim, settings.open_options) for w in windows],
                timeout=SCAN_TIMEOUT,
                on_done=lambda i: tick(len(windows[i])),
            )
            return _unpacked_windows(windows, done)
        out = []
        for window in windows:
            out.extend(scan_window(fs, window, concat_dim, settings.open_options))
            tick(len(window))
        return out
    finally:
        close()
