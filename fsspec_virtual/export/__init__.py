"""Exports: a snapshot of the store written in formats other readers open without this
package (kerchunk references: :mod:`fsspec_virtual.export.kerchunk`)."""

from __future__ import annotations

from .icechunk import IcechunkExport, to_icechunk
from .kerchunk import (
    DEFAULT_INLINE_COMPUTED,
    DEFAULT_RECORD_SIZE,
    KerchunkExport,
    LeftOut,
    to_kerchunk,
)

__all__ = [
    "DEFAULT_INLINE_COMPUTED",
    "DEFAULT_RECORD_SIZE",
    "IcechunkExport",
    "KerchunkExport",
    "LeftOut",
    "to_icechunk",
    "to_kerchunk",
]
