"""fsspec-virtual: a directory of NetCDF4/HDF5/NetCDF3 files as one live, read-only Zarr store.

>>> import fsspec, xarray as xr
>>> fs = fsspec.filesystem("virtualzarr", path="/data/*.nc", concat_dim="time")  # doctest: +SKIP
>>> ds = xr.open_zarr(fs.get_mapper(""))  # doctest: +SKIP
"""

from __future__ import annotations

from .errors import (
    AmbiguousKeyError,
    ExportError,
    ExportExistsError,
    ExportIncompleteWarning,
    IncompatibleSourcesError,
    NoSourceFilesError,
    RangeNotSupportedError,
    ReadOnlyError,
    ScanError,
    SkippedFileWarning,
    SourceReadError,
    StaleSourceError,
    UnsupportedVariableWarning,
    UnversionedSourceWarning,
    VirtualZarrError,
    ZarrFormatNotServedError,
)
from .filesystem import VirtualZarrFileSystem
from .serve import serve

__all__ = [
    "VirtualZarrFileSystem",
    "serve",
    "VirtualZarrError",
    "ScanError",
    "NoSourceFilesError",
    "IncompatibleSourcesError",
    "AmbiguousKeyError",
    "ReadOnlyError",
    "StaleSourceError",
    "SourceReadError",
    "RangeNotSupportedError",
    "UnsupportedVariableWarning",
    "ZarrFormatNotServedError",
    "SkippedFileWarning",
    "UnversionedSourceWarning",
    "ExportError",
    "ExportExistsError",
    "ExportIncompleteWarning",
]
