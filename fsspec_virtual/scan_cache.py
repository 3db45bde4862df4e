"""A persistent cache of scan results: one entry per (file, size, identity, scanner version).

An entry is a file's scanned manifest and concat coordinates in a compact binary form (one
JSON document of metadata followed by the raw bytes of its numpy arrays: an ``.npz`` costs
a zip-member lookup per array, too slow for thousands of entries), behind a header holding
a SHA-256 of the payload. Entries are written under a temporary name and renamed, so readers
never see a torn entry; an entry that fails its checksum or cannot be decoded is discarded
with a warning and the file is scanned again. The cache may live on any fsspec URL (a bucket
shared by a team).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
from fsspec import AbstractFileSystem

from .manifest import ArrayMeta, ChunkGrid, ComputePlan, Manifest, SourcePart, VirtualArray
from .source import SourceFile, speaks

__all__ = ["ScanCache", "default_cache_dir", "CorruptCacheEntryWarning"]

_MAGIC = b"FSVSCAN1"
_FORMAT = 2
_LENGTH = struct.Struct("<Q")


class CorruptCacheEntryWarning(UserWarning):
    """A cache entry failed its checksum or could not be read; it was discarded."""


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/fsspec-virtual`` (``~/.cache/fsspec-virtual`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return os.path.join(base, "fsspec-virtual", "scans")


# -- encoding -------------------------------------------------------------------------------


def _meta_doc(meta: ArrayMeta) -> dict[str, Any]:
    doc = asdict(meta)
    doc["filters"] = list(meta.filters) if meta.filters is not None else None
    return doc


def _meta_from(doc: dict[str, Any]) -> ArrayMeta:
    filters = doc.pop("filters")
    return ArrayMeta(
        **{
            **doc,
            "shape": tuple(doc["shape"]),
            "chunks": tuple(doc["chunks"]),
            "dimensions": tuple(doc["dimensions"]),
            "filters": tuple(filters) if filters is not None else None,
        }
    )


class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def grid(self, grid: ChunkGrid) -> str:
        name = f"g{len(self.arrays)}"
        self.arrays[f"{name}.file_id"] = grid.file_id
        self.arrays[f"{name}.offset"] = grid.offset
        self.arrays[f"{name}.length"] = grid.length
        lengths = np.array([len(b) for b in grid.inline], dtype=np.uint64)
        self.arrays[f"{name}.inline_lengths"] = lengths
        self.arrays[f"{name}.inline"] = np.frombuffer(b"".join(grid.inline), dtype=np.uint8)
        return name


def _read_grid(arrays: Any, name: str) -> ChunkGrid:
    lengths = arrays[f"{name}.inline_lengths"]
    blob = arrays[f"{name}.inline"].tobytes()
    inline, at = [], 0
    for n in lengths.tolist():
        inline.append(blob[at : at + n])
        at += n
    return ChunkGrid(
        arrays[f"{name}.file_id"],
        arrays[f"{name}.offset"],
        arrays[f"{name}.length"],
        tuple(inline),
    )


def encode_entry(manifest: Manifest, coords: dict[str, np.ndarray], messages: list[str]) -> bytes:
    """One file's scan result as cache-entry bytes (header, checksum, payload)."""
    writer = _Writer()
    arrays_doc = {}
    for path, array in manifest.arrays.items():
        plan = None
        if array.plan is not None:
            plan = {
                "axis": array.plan.axis,
                "reason": array.plan.reason,
                "parts": [
                    {
                        "start": part.start,
                        "meta": _meta_doc(part.meta),
                        "grid": writer.grid(part.grid) if part.grid is not None else None,
                        "file_id": part.file_id,
                        "h5path": part.h5path,
                        "unpack": part.unpack,
                    }
                    for part in array.plan.parts
                ],
            }
        arrays_doc[path] = {
            "meta": _meta_doc(array.meta),
            "grid": writer.grid(array.grid),
            "plan": plan,
        }
    coords_doc = {}
    for i, (path, values) in enumerate(coords.items()):
        writer.arrays[f"c{i}"] = np.asarray(values)
        coords_doc[path] = f"c{i}"
    doc = {
        "format": _FORMAT,
        "urls": list(manifest.urls),
        "groups": manifest.groups,
        "skipped": manifest.skipped,
        "arrays": arrays_doc,
        "coords": coords_doc,
        "messages": messages,
    }
    buffers, blobs, at = {}, [], 0
    for name, values in writer.arrays.items():
        values = np.asarray(values)
        flat = np.ascontiguousarray(values)  # NB: makes 0-d arrays 1-d: keep values.shape
        if flat.dtype.kind == "O" or flat.dtype.names:
            raise TypeError(f"cannot cache an array of dtype {flat.dtype} ({name})")
        buffers[name] = [flat.dtype.str, list(values.shape), at, flat.nbytes]
        blobs.append(flat.tobytes())
        at += flat.nbytes
    doc["buffers"] = buffers
    head = json.dumps(doc).encode()
    payload = _LENGTH.pack(len(head)) + head + b"".join(blobs)
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def decode_entry(data: bytes) -> tuple[Manifest, dict[str, np.ndarray], list[str]]:
    """The scan result held in cache-entry bytes.

    Raises
    ------
    ValueError
        If the bytes are not an intact entry of this format.
    """
    if len(data) < len(_MAGIC) + 32 or not data.startswith(_MAGIC):
        raise ValueError("not a scan-cache entry (bad header)")
    digest, payload = data[len(_MAGIC) : len(_MAGIC) + 32], data[len(_MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch (truncated or corrupted entry)")
    (size,) = _LENGTH.unpack_from(payload)
    doc = json.loads(payload[_LENGTH.size : _LENGTH.size + size])
    if doc.get("format") != _FORMAT:
        raise ValueError(f"entry format {doc.get('format')} is not {_FORMAT}")
    blob = memoryview(payload)[_LENGTH.size + size :]
    arrays = {
        name: np.frombuffer(blob[at : at + n], dtype=np.dtype(dtype)).reshape(shape).copy()
        for name, (dtype, shape, at, n) in doc["buffers"].items()
    }
    out = {}
    for path, entry in doc["arrays"].items():
        plan = None
        if entry["plan"] is not None:
            parts = tuple(
                SourcePart(
                    part["start"],
                    _meta_from(part["meta"]),
                    _read_grid(arrays, part["grid"]) if part["grid"] is not None else None,
                    part["file_id"],
                    part["h5path"],
                    part["unpack"],
                )
                for part in entry["plan"]["parts"]
            )
            plan = ComputePlan(parts, entry["plan"]["axis"], entry["plan"]["reason"])
        out[path] = VirtualArray(_meta_from(entry["meta"]), _read_grid(arrays, entry["grid"]), plan)
    coords = {path: arrays[name] for path, name in doc["coords"].items()}
    manifest = Manifest(tuple(doc["urls"]), doc["groups"], out, doc["skipped"])
    return manifest, coords, list(doc["messages"])


# -- the cache ----------------------------------------------------------------------------


#: Object stores, where one PUT makes a whole object visible at once (a rename there is a
#: copy and a delete: three requests for nothing).
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def _puts_are_atomic(fs: AbstractFileSystem) -> bool:
    return speaks(fs, *_ATOMIC_PUT_PROTOCOLS)


class ScanCache:
    """Scan results on disk (or any fsspec URL), keyed by file identity.

    Parameters
    ----------
    location
        A directory or fsspec URL; default :func:`default_cache_dir`.
    storage_options
        Options of ``location``'s filesystem.
    """

    def __init__(self, location: str | None = None, storage_options: dict | None = None):
        location = location or default_cache_dir()
        self.fs: AbstractFileSystem
        self.fs, self.root = fsspec.core.url_to_fs(location, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.hits = 0
        self.misses = 0

    def key(self, protocol: str, source: SourceFile, concat_dim: str | None, version: int) -> str:
        """The entry name of one file's scan (its path, size, identity, scanner version)."""
        ident = json.dumps(
            [protocol, source.path, source.size, source.identity, concat_dim, version, _FORMAT]
        )
        return hashlib.sha256(ident.encode()).hexdigest()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.scan"

    def get(
        self, key: str, files: int = 1
    ) -> tuple[Manifest, dict[str, np.ndarray], list[str]] | None:
        """The cached scan, or None (a corrupt entry is removed with a warning).

        ``files`` is how many files the entry stands for, in the ``hits``/``misses`` counts
        (a whole collection's entry: its files on a hit, none on a miss).
        """
        path = self._path(key)
        try:
            data = self.fs.cat_file(path)
        except (FileNotFoundError, OSError):
            self.misses += 1 if files == 1 else 0
            return None
        try:
            result = decode_entry(data)
        except Exception as e:
            warnings.warn(
                f"scan cache entry {path} is unusable ({e}); it is discarded and the file "
                "scanned again",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
            try:
                self.fs.rm_file(path)
            except OSError:
                pass
            self.misses += 1 if files == 1 else 0
            return None
        self.hits += files
        return result

    def put(
        self, key: str, manifest: Manifest, coords: dict[str, np.ndarray], messages: list[str]
    ) -> None:
        """Store a scan: written under a temporary name, then renamed into place."""
        path = self._path(key)
        data = encode_entry(manifest, coords, messages)
        parent = path.rsplit("/", 1)[0]
        try:
            if _puts_are_atomic(self.fs):
                self.fs.pipe_file(path, data)  # an object appears whole, or not at all
                return
            self.fs.makedirs(parent, exist_ok=True)
            temporary = f"{path}.{uuid.uuid4().hex}.tmp"
            self.fs.pipe_file(temporary, data)
            self.fs.mv(temporary, path)
        except OSError as e:
            warnings.warn(f"cannot write scan cache entry {path}: {e}", stacklevel=2)
