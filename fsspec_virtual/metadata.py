"""Zarr v2 metadata of a manifest: ``.zgroup``, ``.zattrs``, ``.zarray``, ``.zmetadata``."""

from __future__ import annotations

import json
from typing import Any

from .manifest import Manifest

__all__ = ["render_metadata"]


def _join(path: str, leaf: str) -> str:
    return f"{path}/{leaf}" if path else leaf


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def render_metadata(manifest: Manifest) -> dict[str, bytes]:
    """Every metadata key of the store and its JSON bytes, consolidated ``.zmetadata`` included."""
    documents: dict[str, dict[str, Any]] = {}
    for path, attrs in manifest.groups.items():
        documents[_join(path, ".zgroup")] = {"zarr_format": 2}
        documents[_join(path, ".zattrs")] = dict(attrs)
    for path, array in manifest.arrays.items():
        documents[_join(path, ".zarray")] = array.meta.to_zarray()
        documents[_join(path, ".zattrs")] = array.meta.to_zattrs()
    rendered = {key: _dumps(doc) for key, doc in documents.items()}
    rendered[".zmetadata"] = _dumps({"zarr_consolidated_format": 1, "metadata": documents})
    return rendered
