"""Scan a NetCDF3 (classic or 64-bit offset) file with kerchunk's ``NetCDF3ToZarr``."""

from __future__ import annotations

from typing import Any

from ..manifest import Manifest
from .translate import manifest_from_references

__all__ = ["scan_netcdf3"]


def scan_netcdf3(fs: Any, url: str) -> tuple[Manifest, list[str]]:
    """Scan one NetCDF3 file.

    Parameters
    ----------
    fs
        The source filesystem.
    url
        The file's path on ``fs``.

    Returns
    -------
    manifest, warnings
        The file's manifest and (always empty) warnings.
    """
    from kerchunk.netCDF3 import NetCDF3ToZarr

    storage_options = fs.storage_options if fs.protocol not in ("file", "local") else {}
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    full_url = url if protocol in ("file", "local") else fs.unstrip_protocol(url)
    translator = NetCDF3ToZarr(full_url, storage_options=storage_options, inline_threshold=0)
    refs = translator.translate()
    refs = refs.get("refs", refs)
    # kerchunk records the URL it was given; chunks must point at our path
    fixed = {
        key: [url, *value[1:]] if isinstance(value, list) else value for key, value in refs.items()
    }
    return manifest_from_references(fixed, url), []
