"""Scanners: one file's bytes -> its :class:`~fsspec_virtual.manifest.Manifest`.

Dispatched by the format its magic bytes announce (see :mod:`fsspec_virtual.source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..errors import ScanError
from ..manifest import Manifest
from ..source import SourceFile

__all__ = ["scan_file", "ScanCost", "SCANNER_VERSION", "DEFAULT_SCAN_OPEN_OPTIONS"]

#: Bumped whenever a scanner's output changes, so cached scans are not reused.
SCANNER_VERSION = 2

#: How remote files are opened for a scan. HDF5 metadata (object headers, B-trees, heaps)
#: is scattered in small pieces through a file: fsspec's block cache fetches each block
#: touched once, in one request, and keeps it (measured in benchmarks/remote.py).
DEFAULT_SCAN_OPEN_OPTIONS: dict[str, Any] = {
    "block_size": 512 * 1024,
    "cache_type": "blockcache",
    "cache_options": {"maxblocks": 256},
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


def _cost_of(f: Any) -> ScanCost:
    cache = getattr(f, "cache", None)
    if cache is None:
        return ScanCost()
    return ScanCost(int(cache.miss_count), int(cache.total_requested_bytes))


def _speaks_http(fs: AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"http", "https"})


def scan_file(
    fs: AbstractFileSystem, source: SourceFile, open_options: dict[str, Any] | None = None
) -> tuple[Manifest, list[str], ScanCost]:
    """Scan one data file.

    Parameters
    ----------
    fs
        The source filesystem.
    source
        The file, as listed.
    open_options
        Options of ``fs.open`` for remote files (default :data:`DEFAULT_SCAN_OPEN_OPTIONS`).

    Returns
    -------
    manifest, warnings, cost
        The file's manifest, one message per variable left out of it, and the requests
        the scan made.

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
            from .hdf5 import scan_hdf5

            if _speaks_http(fs) and source.size:
                options["size"] = source.size  # spares fsspec a HEAD request
            with fs.open(source.path, mode="rb", **options) as f:
                manifest, messages = scan_hdf5(f, source.path)
                return manifest, messages, ScanCost() if local else _cost_of(f)
        if source.format == "netcdf3":
            from .netcdf3 import scan_netcdf3

            manifest, messages, (requests, nbytes) = scan_netcdf3(fs, source.path)
            return manifest, messages, ScanCost() if local else ScanCost(requests, nbytes)
        raise NotImplementedError(f"{source.format} files are not supported")
    except ScanError:
        raise
    except Exception as e:
        raise ScanError(source.path, f"{type(e).__name__}: {e}") from e
