"""Zarr v3 metadata of a manifest: one ``zarr.json`` per group and per array, with the
whole hierarchy consolidated inside the root's, as zarr-python 3 writes them.

What a v3 client reads equals what the v2 documents (:mod:`fsspec_virtual.metadata`) say:

- ``data_type`` and ``fill_value`` by zarr-python's own data types, from the v2 dtype;
  ``fill_value`` is what an unwritten chunk reads as (the v2 ``fill_value``, or the
  type's zero where v2 declares none: what zarr fills a v2 array with);
- ``_FillValue`` is an attribute exactly where xarray would see one through the v2
  documents (xarray takes the v2 ``fill_value`` as ``_FillValue``), spelled as xarray
  reads it from a v3 array (a float as the base64 of its little-endian double), so
  ``xr.open_zarr`` masks and unpacks as it does from v2; the ``dimension_names`` are the
  netCDF dimensions (v3 has no ``_ARRAY_DIMENSIONS`` attribute);
- the codecs by :mod:`fsspec_virtual.codecs_v3`; an array whose pipeline has no v3
  spelling, or that ``decoded`` serves decoded, declares ``bytes`` (and ``transpose``
  for order F): the store serves its chunks decoded.

A variable zarr-python 3 or xarray could not read as the v2 face serves it is refused
with :class:`~fsspec_virtual.errors.ZarrFormatNotServedError` naming it, never served
wrong: a node named ``zarr.json``, a string array whose object codec has no v3 codec, a
data type format 3 cannot describe, and a text array (strings, chars) with a fill value,
whose ``_FillValue`` xarray's v3 reader cannot decode (it would not mask what it masks
from format 2).
"""

from __future__ import annotations

import base64
import json
import struct
import unicodedata
import warnings
from typing import Any

import numpy as np

from .codecs_v3 import decoded_codecs, store_decodes, v3_codecs
from .errors import ZarrFormatNotServedError
from .manifest import ArrayMeta, Manifest

__all__ = ["render_metadata_v3", "ZARR_JSON"]

#: The one metadata document of a Zarr v3 node
ZARR_JSON = "zarr.json"


def _join(path: str, leaf: str) -> str:
    return f"{path}/{leaf}" if path else leaf


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=True).encode()


def _refused(path: str, why: str) -> ZarrFormatNotServedError:
    return ZarrFormatNotServedError(
        f"variable {path!r} cannot be served as Zarr format 3: {why}; open the store with "
        f"zarr_format=2 (the default), which serves it"
    )


def _zarr_dtype(path: str, meta: ArrayMeta) -> Any:
    """zarr-python's data type of ``meta`` (read from its v2 spelling)."""
    from zarr.core.dtype import get_data_type_from_json

    spelled: Any = json.loads(meta.dtype) if meta.dtype.startswith("[") else meta.dtype
    object_codec = None
    if meta.numpy_dtype.kind == "O":
        object_codec = next(iter(meta.filters or ()), {}).get("id")
    try:
        return get_data_type_from_json(
            {"name": spelled, "object_codec_id": object_codec}, zarr_format=2
        )
    except (ValueError, TypeError) as e:
        raise _refused(path, f"zarr-python has no data type for {meta.dtype} ({e})") from e


def _xarray_fill(value: Any, dtype: np.dtype) -> Any:
    """``value`` as xarray's ``FillValueCoder`` spells a v3 array's ``_FillValue``
    attribute (the inverse of what it decodes), or raise ``ValueError``."""
    kind = dtype.kind
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    if kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(value))).decode()
    if kind == "c":
        parts = (complex(value).real, complex(value).imag)
        return [base64.standard_b64encode(struct.pack("<d", p)).decode() for p in parts]
    raise ValueError(
        f"xarray reads no _FillValue of a text array ({dtype}) from Zarr format 3 (its "
        f"reader decodes numbers only), so it would not mask what it masks from format 2"
    )


def _attributes(path: str, meta: ArrayMeta, zdtype: Any) -> dict[str, Any]:
    """The array's attributes, with ``_FillValue`` where xarray sees one from v2."""
    attrs = dict(meta.attrs)
    if meta.fill_value is not None:
        seen = zdtype.from_json_scalar(meta.fill_value, zarr_format=2)
    elif "_FillValue" in attrs:
        seen = attrs["_FillValue"]  # xarray reads the v2 attribute as it is
    else:
        return attrs
    try:
        attrs["_FillValue"] = _xarray_fill(seen, meta.numpy_dtype)
    except (ValueError, TypeError) as e:
        raise _refused(path, f"its _FillValue {seen!r}: {e}") from e
    return attrs


def _fill_value(meta: ArrayMeta, zdtype: Any) -> Any:
    """The v3 ``fill_value``: what an unwritten chunk reads as through the v2 face."""
    if meta.fill_value is None:
        value = zdtype.default_scalar()
    else:
        value = zdtype.from_json_scalar(meta.fill_value, zarr_format=2)
    return zdtype.to_json_scalar(value, zarr_format=3)


def _codecs(path: str, meta: ArrayMeta, decoded: bool) -> list[dict[str, Any]]:
    if store_decodes(meta, decoded):
        return decoded_codecs(meta)
    codecs = v3_codecs(meta)
    if codecs is None:
        raise _refused(
            path,
            f"its codec pipeline (filters {meta.filters}, compressor {meta.compressor}) "
            f"has no Zarr v3 spelling for {meta.dtype}",
        )
    return codecs


def array_document(path: str, meta: ArrayMeta, *, decoded: bool = False) -> dict[str, Any]:
    """The ``zarr.json`` of one array (``decoded``: as a ``decode="store"`` store serves it).

    Raises
    ------
    ZarrFormatNotServedError
        If zarr-python 3 could not read the array as the v2 face serves it.
    """
    from zarr.errors import UnstableSpecificationWarning

    zdtype = _zarr_dtype(path, meta)
    try:
        with warnings.catch_warnings():
            # zarr-python warns whoever reads such a type (text: netCDF char arrays)
            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            data_type = zdtype.to_json(zarr_format=3)
    except (ValueError, TypeError) as e:
        raise _refused(path, f"Zarr format 3 has no data type for {meta.dtype} ({e})") from e
    return {
        "shape": list(meta.shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(meta.chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _fill_value(meta, zdtype),
        "codecs": _codecs(path, meta, decoded),
        "attributes": _attributes(path, meta, zdtype),
        "dimension_names": list(meta.dimensions),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _group_document(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": dict(attrs), "zarr_format": 3, "node_type": "group"}


def _consolidated(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """zarr-python 3's inline consolidated metadata: every node below the root by its
    full path, shallow first (a group's own entry with an empty consolidated block)."""
    nodes: dict[str, dict[str, Any]] = {}
    ordered = sorted(
        (p for p in documents if p),
        key=lambda p: (p.count("/"), unicodedata.normalize("NFKC", p).casefold()),
    )
    for path in ordered:
        doc = documents[path]
        if doc["node_type"] == "group":
            doc = {
                "attributes": doc["attributes"],
                "zarr_format": 3,
                "consolidated_metadata": _inline({}),
                "node_type": "group",
            }
        nodes[path] = doc
    return _inline(nodes)


def _inline(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


def render_metadata_v3(manifest: Manifest, *, decoded: bool = False) -> dict[str, bytes]:
    """Every Zarr v3 metadata key of the store (``"zarr.json"``, ``"g1/zarr.json"``,
    ``"t2m/zarr.json"``) and its JSON bytes; the root's holds the consolidated metadata.

    With ``decoded``, every array whose chunks a decoding store serves decoded
    (:func:`~fsspec_virtual.codecs.serves_decoded`) declares ``bytes`` alone (after a
    ``transpose`` for order F); so does every array whose v2 codec pipeline has no v3
    spelling, whose chunks the store always serves decoded in format 3
    (:func:`~fsspec_virtual.codecs_v3.store_decodes`).

    Raises
    ------
    ZarrFormatNotServedError
        If a variable cannot be served as Zarr format 3 (the message names it).
    """
    for path in [*manifest.groups, *manifest.arrays]:
        if path.rpartition("/")[2] == ZARR_JSON:
            # a listing would take the node for its parent's metadata document
            raise _refused(path, f"a Zarr format 3 node cannot be named {ZARR_JSON!r}")
    documents: dict[str, dict[str, Any]] = {}
    for path, attrs in manifest.groups.items():
        documents[path] = _group_document(attrs)
    for path, array in manifest.arrays.items():
        documents[path] = array_document(path, array.meta, decoded=decoded)
    rendered = {_join(path, ZARR_JSON): _dumps(doc) for path, doc in documents.items()}
    root = documents.get("", _group_document({}))
    rendered[ZARR_JSON] = _dumps(
        {
            "attributes": root["attributes"],
            "zarr_format": 3,
            "consolidated_metadata": _consolidated(documents),
            "node_type": "group",
        }
    )
    return rendered
