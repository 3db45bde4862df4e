"""Translate a kerchunk reference dict into a :class:`~fsspec_virtual.manifest.Manifest`.

This is the only module that knows the shape of kerchunk's output: keys ``.zgroup``,
``VAR/.zarray``, ``VAR/.zattrs``, and chunk keys ``VAR/i.j`` whose values are
``[url, offset, length]`` or the chunk's bytes.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..manifest import INLINE, ArrayMeta, ChunkGrid, Manifest, VirtualArray

__all__ = ["manifest_from_references"]

_METADATA_KEYS = (".zarray", ".zattrs", ".zgroup", ".zmetadata")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        if value.startswith("base64:"):
            return base64.b64decode(value[7:])
        return value.encode()
    if hasattr(value, "to_bytes"):  # a zarr Buffer
        return bytes(value.to_bytes())
    raise TypeError(f"unexpected reference value of type {type(value).__name__}")


def _array_meta(zarray: dict[str, Any], zattrs: dict[str, Any]) -> ArrayMeta:
    attrs = dict(zattrs)
    shape = tuple(zarray["shape"])
    dims = attrs.pop("_ARRAY_DIMENSIONS", None) or [f"phony_dim_{i}" for i in range(len(shape))]
    filters = zarray.get("filters")
    return ArrayMeta(
        shape=shape,
        chunks=tuple(zarray["chunks"]),
        dtype=zarray["dtype"] if isinstance(zarray["dtype"], str) else json.dumps(zarray["dtype"]),
        compressor=zarray.get("compressor"),
        filters=tuple(filters) if filters else None,
        fill_value=zarray.get("fill_value"),
        # kerchunk names the dimensions of variables in groups by their HDF5 path
        dimensions=tuple(str(d).rsplit("/", 1)[-1] for d in dims),
        attrs=attrs,
        order=zarray.get("order", "C"),
    )


def _chunk_grid(meta: ArrayMeta, chunks: list[tuple[str, Any]], url: str, path: str) -> ChunkGrid:
    grid = ChunkGrid.empty(meta.grid_shape)
    file_id, offset, length = (np.array(a) for a in (grid.file_id, grid.offset, grid.length))
    inline: list[bytes] = []
    for leaf, value in chunks:
        index = tuple(int(i) for i in leaf.split(".")) if meta.shape else ()
        if isinstance(value, list):
            if len(value) == 1 or value[0] != url:
                raise ValueError(f"{path}/{leaf}: unexpected reference {value!r}")
            file_id[index] = 0
            offset[index] = value[1]
            length[index] = value[2]
        else:
            data = _as_bytes(value)
            file_id[index] = INLINE
            offset[index] = len(inline)
            length[index] = len(data)
            inline.append(data)
    return ChunkGrid(file_id, offset, length, tuple(inline))


def manifest_from_references(refs: Mapping[str, Any], url: str) -> Manifest:
    """Build the manifest of one file from kerchunk's references to it.

    Parameters
    ----------
    refs
        kerchunk's reference store: either ``{"version": 1, "refs": {...}}`` or the bare
        mapping of keys to values.
    url
        The file the references point into; it becomes file id 0.
    """
    if "refs" in refs and "version" in refs:
        refs = refs["refs"]
    documents: dict[str, dict[str, Any]] = {}
    chunks: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for key, value in refs.items():
        parent, _, leaf = key.rpartition("/")
        if leaf in _METADATA_KEYS:
            documents[key] = json.loads(_as_bytes(value))
        else:
            chunks[parent].append((leaf, value))

    def attrs_of(path: str) -> dict[str, Any]:
        return documents.get(f"{path}/.zattrs" if path else ".zattrs", {})

    groups: dict[str, dict[str, Any]] = {"": attrs_of("")}
    arrays: dict[str, VirtualArray] = {}
    for key, doc in documents.items():
        path, _, leaf = key.rpartition("/")
        if leaf == ".zgroup":
            groups[path] = attrs_of(path)
        elif leaf == ".zarray":
            meta = _array_meta(doc, attrs_of(path))
            arrays[path] = VirtualArray(meta, _chunk_grid(meta, chunks.get(path, []), url, path))
    # kerchunk may create an array inside a group it did not list (it creates parents)
    for path in list(arrays):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            groups.setdefault("/".join(parts[:i]), {})
    return Manifest(urls=(url,), groups=groups, arrays=arrays)
