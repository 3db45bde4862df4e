"""Scan a NetCDF3 (classic or 64-bit offset) file with kerchunk's ``NetCDF3ToZarr``."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from ..manifest import Manifest
from .attributes import (
    attribute_dtypes,
    json_attributes,
    left_out_messages,
    numeric_fill_problem,
    zarr_fill_value,
)
from .translate import manifest_from_references

__all__ = ["scan_netcdf3"]


def scan_netcdf3(fs: Any, url: str) -> tuple[Manifest, list[str], tuple[int, int]]:
    """Scan one NetCDF3 file (opened by kerchunk, with the filesystem's default cache: the
    header it reads is one contiguous block at the start of the file).

    Parameters
    ----------
    fs
        The source filesystem.
    url
        The file's path on ``fs``.

    Returns
    -------
    manifest, warnings, (requests, bytes)
        The file's manifest (variables that cannot be served are in ``skipped``), a
        message for each of those, and the requests the scan made.
    """
    storage_options = fs.storage_options if fs.protocol not in ("file", "local") else {}
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    full_url = url if protocol in ("file", "local") else fs.unstrip_protocol(url)
    translator = _header_keeping_translator()(
        full_url, storage_options=storage_options, inline_threshold=0
    )
    try:
        refs = translator.translate()
        refs = refs.get("refs", refs)
        # kerchunk records the URL it was given; chunks must point at our path
        fixed = {
            key: [url, *value[1:]] if isinstance(value, list) else value
            for key, value in refs.items()
        }
        manifest = manifest_from_references(fixed, url)
        cache = getattr(translator.fp, "cache", None)
        cost = (0, 0) if cache is None else (cache.miss_count, cache.total_requested_bytes)
        manifest = _with_record_count(manifest, translator)
        manifest = _with_source_attributes(manifest, translator)
        return manifest, left_out_messages(manifest), cost
    finally:
        translator.fp.close()


@functools.cache
def _header_keeping_translator() -> type:
    """kerchunk's translator, keeping the global and variable attributes as the header
    holds them (``source_attributes``, ``variable_attributes``).

    kerchunk stores its ``filename`` as a global attribute (overwriting a real one).
    """
    from kerchunk.netCDF3 import NetCDF3ToZarr

    class HeaderKeepingTranslator(NetCDF3ToZarr):  # type: ignore[misc]
        def _read(self) -> None:
            super()._read()
            self.__dict__["source_attributes"] = dict(self._attributes)
            kept = {name: dict(var._attributes) for name, var in self.variables.items()}
            self.__dict__["variable_attributes"] = kept
            # kerchunk decodes text attributes as strict UTF-8 (netCDF-C reads any bytes):
            # it sees them decoded leniently; ours are rebuilt from the kept ones
            _leniently_decoded(self._attributes)
            for var in self.variables.values():
                _leniently_decoded(var._attributes)
                # kerchunk makes its fill value of these (int() of an array of two raises);
                # ours is rebuilt from the kept attributes
                var._attributes.pop("_FillValue", None)
                var._attributes.pop("missing_value", None)

    return HeaderKeepingTranslator


def _leniently_decoded(attributes: dict[str, Any]) -> None:
    """Text attributes as ``str``, bytes that are no UTF-8 replaced by U+FFFD."""
    for name, value in attributes.items():
        if isinstance(value, bytes):
            attributes[name] = value.decode("utf-8", errors="replace")


def _with_record_count(manifest: Manifest, header: Any) -> Manifest:
    """Record variables as long as the header's record count says.

    kerchunk divides the record section's padded size by the unpadded record size: with
    a single record variable (whose records are not padded, by the format) and a record
    not a multiple of 4 bytes, that invents records, and every file after it would be
    shifted along the record dimension. The record count is the header's.
    """
    records = int(header._recs)
    unlimited = {name for name, size in header.dimensions.items() if size is None}
    arrays = dict(manifest.arrays)
    for path, array in manifest.arrays.items():
        meta = array.meta
        if not meta.dimensions or meta.dimensions[0] not in unlimited:
            continue
        if meta.shape[0] == records:
            continue
        if meta.shape[0] < records or meta.chunks[0] != 1:
            raise ValueError(
                f"variable {path!r}: {meta.shape[0]} records found, the header says {records}"
            )
        grid = array.grid
        arrays[path] = replace(
            array,
            meta=replace(meta, shape=(records, *meta.shape[1:])),
            grid=replace(
                grid,
                file_id=grid.file_id[:records],
                offset=grid.offset[:records],
                length=grid.length[:records],
            ),
        )
    return replace(manifest, arrays=arrays)


def _with_source_attributes(manifest: Manifest, header: Any) -> Manifest:
    """Attributes and fill values as netCDF readers see them.

    kerchunk writes NetCDF3 attributes as strings, drops ``_FillValue`` and
    ``missing_value`` and declares ``missing_value`` as the fill value; xarray would then
    mask the wrong values, so both are rebuilt from the header scipy parsed. A variable
    whose ``_FillValue`` is not one value of its type is left out (``skipped``).
    """
    groups = {**manifest.groups, "": json_attributes(header.__dict__["source_attributes"])}
    arrays = {}
    skipped = dict(manifest.skipped)
    for path, array in manifest.arrays.items():
        raw = header.__dict__["variable_attributes"][path]
        attrs = json_attributes({k: v for k, v in raw.items() if k != "_FillValue"})
        dtype = array.meta.numpy_dtype
        odd_fill = numeric_fill_problem(raw, dtype)
        if odd_fill is not None:
            skipped[path] = odd_fill
            continue
        fill = zarr_fill_value(raw["_FillValue"], dtype) if "_FillValue" in raw else None
        types = attribute_dtypes(raw, raw)
        meta = replace(array.meta, attrs=attrs, fill_value=fill, attr_dtypes=types)
        arrays[path] = replace(array, meta=meta)
    return replace(manifest, groups=groups, arrays=arrays, skipped=skipped)
