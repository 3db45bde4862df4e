"""Scanners: one file's bytes -> its :class:`~fsspec_virtual.manifest.Manifest`.

Dispatched by the format its magic bytes announce (see :mod:`fsspec_virtual.source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..access import adapter_for
from ..errors import ScanError
from ..manifest import Manifest
from ..reader import open_as_scanned
from ..source import SourceFile, speaks_http
from .repeat import Look

__all__ = [
    "scan_file",
    "scan_options",
    "reads_are_guarded",
    "ScanCost",
    "SCANNER_VERSION",
    "DEFAULT_SCAN_OPEN_OPTIONS",
]

#: Bumped whenever a scanner's output changes, so cached scans are not reused.
SCANNER_VERSION = 19

#: How remote files are opened for a scan. HDF5 metadata (object headers, B-trees, heaps)
#: is scattered in small pieces through a file (netCDF-C interleaves chunk indexes with
#: data): fsspec's block cache fetches each block touched once, in one request, and keeps
#: it. benchmarks/remote.py, 2.3 MB files: 64 KiB blocks took 5 requests and 331 KB per
#: file, 512 KiB 4 and 2.1 MB, 2 MiB 1 and 2.1 MB; with 20 ms per request 2 MiB scanned
#: fastest (as fsspec's 5 MiB readahead). Files much larger than a block fetch only the
#: blocks their metadata lies in (at most 32 kept: 64 MiB).
DEFAULT_SCAN_OPEN_OPTIONS: dict[str, Any] = {
    "block_size": 2 * 1024 * 1024,
    "cache_type": "blockcache",
    "cache_options": {"maxblocks": 32},
}


@dataclass(frozen=True, slots=True)
class ScanCost:
    """What scanning a file asked of its filesystem (0 for local files: not counted).

    Attributes
    ----------
    requests
        Read requests made (cache misses of the opened file).
    bytes
        Bytes those requests fetched.
    """

    requests: int = 0
    bytes: int = 0

    def __add__(self, other: ScanCost) -> ScanCost:
        return ScanCost(self.requests + other.requests, self.bytes + other.bytes)


class _CountingFetcher:
    """Wraps a file cache's fetcher: the requests it makes and the bytes they bring; the
    file's first block, if it was fetched ahead (see ``scheduling``), is served once."""

    def __init__(self, fetch: Any, first_block: bytes | None, size: int) -> None:
        self._fetch = fetch
        self._first_block = first_block
        self._size = size
        self.requests = 0
        self.bytes = 0

    def __call__(self, start: int, end: int) -> bytes:
        ahead = self._first_block
        # fsspec's block cache asks for whole blocks, past the end of a short file
        if ahead is not None and start == 0 and min(end, self._size) <= len(ahead):
            self._first_block = None
            return ahead[:end]
        data = self._fetch(start, end)
        self.requests += 1
        self.bytes += len(data)
        return data


def _counted(f: Any, first_block: bytes | None, size: int) -> _CountingFetcher | None:
    cache = getattr(f, "cache", None)
    if cache is None or not callable(getattr(cache, "fetcher", None)):
        return None
    counter = _CountingFetcher(cache.fetcher, first_block, size)
    cache.fetcher = counter
    return counter


def scan_options(user: dict[str, Any] | None) -> dict[str, Any]:
    """The ``fs.open`` options of a remote scan: ``user``'s over the defaults (another
    ``cache_type`` does not inherit the block cache's ``cache_options``)."""
    user = dict(user or {})
    merged = {**DEFAULT_SCAN_OPEN_OPTIONS, **user}
    if "cache_type" in user and "cache_options" not in user:
        merged.pop("cache_options", None)
    return merged


def reads_are_guarded(fs: AbstractFileSystem, source: SourceFile) -> bool:
    """Whether every read of the scan fails if the file is no longer the version listed:
    HTTP with ``If-Match``, s3fs files with the ``IfMatch`` of the ETag found at open
    (checked against the listed one; see :func:`~fsspec_virtual.reader.open_as_scanned`).
    Not with a weak ETag, which ``If-Match`` never matches: those scans are checked by a
    look at the file afterwards."""
    return adapter_for(fs).guards(source.version)


def _in_file_zero(array: Any) -> bool:
    """Whether every byte range of ``array`` lies in the scanned file itself (id 0)."""
    grids = [array.grid]
    if array.plan is not None:
        grids += [part.grid for part in array.plan.parts if part.grid is not None]
    return all(not (grid.file_id > 0).any() for grid in grids)


def _coordinates(manifest: Manifest, f: Any) -> dict[str, Any]:
    """The raw values of the dimension coordinates, read through the open file ``f``:
    from the blocks the scan fetched, usually without a request (netCDF-C allocates
    contiguous coordinates next to the metadata). Those that need h5py, or that the
    scan cache cannot keep, are left out (read later through the filesystem)."""
    from ..combine import compared_paths
    from ..coords import storable
    from ..materialize import (
        FileObjectSource,
        byte_ranges_only,
        read_array,
        read_byte_ranges,
        readable_through_file,
    )

    via = FileObjectSource(f)
    out = {}
    for path in compared_paths(manifest):
        array = manifest.arrays[path]
        # ``f`` is this file only: a dataset an external link leads to lies in another
        if not (readable_through_file(manifest, path) and _in_file_zero(array)):
            continue
        if byte_ranges_only(array):
            values = storable(read_byte_ranges(via, array))
        else:
            values = storable(read_array(via, manifest, path))
        if values is not None:
            out[path] = values
    return out


def scan_file(
    fs: AbstractFileSystem,
    source: SourceFile,
    open_options: dict[str, Any] | None = None,
    concat_dim: str | None = None,
    first_block: bytes | None = None,
) -> tuple[Manifest, list[str], ScanCost, dict[str, Any] | None, Look | None]:
    """Scan one data file.

    Parameters
    ----------
    fs
        The source filesystem.
    source
        The file, as listed.
    open_options
        Options of ``fs.open`` for remote files (default :data:`DEFAULT_SCAN_OPEN_OPTIONS`).
    concat_dim
        If given, for an HDF5 file, the dimension coordinates' values are read through
        the scan's own file object (remote: from the blocks it fetched, usually without
        a request).
    first_block
        The remote file's first block, fetched ahead (counted by whoever fetched it).

    Returns
    -------
    manifest, warnings, cost, coords, look
        The file's manifest, one message per variable left out of it, the requests the
        scan made, the raw values of the dimension coordinates read (else None), and
        what was seen of an HDF5 file's structure: a full scan of a file found unchanged
        afterwards may become a template for later files (:func:`.repeat.learn`).

    Raises
    ------
    ScanError
        If the file cannot be scanned.
    """
    local = isinstance(fs, LocalFileSystem)
    chosen = DEFAULT_SCAN_OPEN_OPTIONS if open_options is None else open_options
    options: dict[str, Any] = {} if local else dict(chosen)
    try:
        if source.format == "hdf5":
            from .hdf5 import LinkResolver, scan_hdf5
            from .repeat import rescan

            if speaks_http(fs) and source.size:
                options["size"] = source.size  # spares fsspec a HEAD request
            # local scans are checked afterwards (a file replaced meanwhile is scanned again)
            guard = None if local else source.version
            opened = open_as_scanned(fs, source.path, guard, **options)
            with opened as f:
                counter = None if local else _counted(f, first_block, source.size)
                # a file structured as one scanned before reuses its scan (scan/repeat.py)
                # a small local file is read whole (scan/repeat.py's in-memory image)
                repeated, look = rescan(f, source.path, source.size if local else None)
                messages: list[str] = []
                if repeated is not None:
                    manifest = repeated
                else:
                    links = LinkResolver(fs, options)
                    manifest, messages = scan_hdf5(f, source.path, links)
                coords = None
                if concat_dim is not None:
                    coords = _coordinates(manifest, f)
                cost = ScanCost() if counter is None else ScanCost(counter.requests, counter.bytes)
                return manifest, messages, cost, coords, look
        if source.format == "netcdf3":
            from .netcdf3 import scan_netcdf3

            manifest, messages, (requests, nbytes) = scan_netcdf3(fs, source.path)
            cost = ScanCost() if local else ScanCost(requests, nbytes)
            return manifest, messages, cost, None, None
        if source.format == "netcdf5":
            from .cdf5 import scan_cdf5

            manifest, messages, (requests, nbytes) = scan_cdf5(fs, source.path, source.size)
            cost = ScanCost() if local else ScanCost(requests, nbytes)
            return manifest, messages, cost, None, None
        raise NotImplementedError(f"{source.format} files are not supported")
    except ScanError:
        raise
    except Exception as e:
        raise ScanError(source.path, f"{type(e).__name__}: {e}") from e
