"""Scanners: one file's bytes -> its :class:`~fsspec_virtual.manifest.Manifest`.

Dispatched by the format its magic bytes announce (see :mod:`fsspec_virtual.source`).
"""

from __future__ import annotations

from fsspec import AbstractFileSystem

from ..errors import ScanError
from ..manifest import Manifest
from ..source import SourceFile

__all__ = ["scan_file", "SCANNER_VERSION"]

#: Bumped whenever a scanner's output changes, so cached scans are not reused.
SCANNER_VERSION = 1


def scan_file(fs: AbstractFileSystem, source: SourceFile) -> tuple[Manifest, list[str]]:
    """Scan one data file.

    Parameters
    ----------
    fs
        The source filesystem.
    source
        The file, as listed.

    Returns
    -------
    manifest, warnings
        The file's manifest and one message per variable left out of it.

    Raises
    ------
    ScanError
        If the file cannot be scanned.
    """
    try:
        if source.format == "hdf5":
            from .hdf5 import scan_hdf5

            with fs.open(source.path, mode="rb") as f:
                return scan_hdf5(f, source.path)
        if source.format == "netcdf3":
            from .netcdf3 import scan_netcdf3

            return scan_netcdf3(fs, source.path)
        raise NotImplementedError(f"{source.format} files are not supported")
    except ScanError:
        raise
    except Exception as e:
        raise ScanError(source.path, f"{type(e).__name__}: {e}") from e
