"""Zarr v2 metadata of a manifest: ``.zgroup``, ``.zattrs``, ``.zarray``, ``.zmetadata``."""

from __future__ import annotations

import json
from typing import Any

from .codecs import serves_decoded
from .manifest import Manifest

__all__ = ["render_metadata"]


def _join(path: str, leaf: str) -> str:
    return f"{path}/{leaf}" if path else leaf


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def render_metadata(manifest: Manifest, *, decoded: bool = False) -> dict[str, bytes]:
    """Every metadata key of the store and its JSON bytes, consolidated ``.zmetadata`` included.

    With ``decoded``, the ``.zarray`` of every array whose chunks a decoding store serves
    decoded (:func:`~fsspec_virtual.codecs.serves_decoded`) declares no compressor and no
    filters: what zarr reads is what the document says.
    """
    documents: dict[str, dict[str, Any]] = {}
    for path, attrs in manifest.groups.items():
        documents[_join(path, ".zgroup")] = {"zarr_format": 2}
        documents[_join(path, ".zattrs")] = dict(attrs)
    for path, array in manifest.arrays.items():
        zarray = array.meta.to_zarray()
        if decoded and serves_decoded(array.meta):
            zarray["compressor"] = zarray["filters"] = None
        documents[_join(path, ".zarray")] = zarray
        documents[_join(path, ".zattrs")] = array.meta.to_zattrs()
    rendered = {key: _dumps(doc) for key, doc in documents.items()}
    rendered[".zmetadata"] = _dumps({"zarr_consolidated_format": 1, "metadata": documents})
    return rendered
