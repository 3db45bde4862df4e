"""A persistent cache of scan results: one entry per (file, version, scanner version), and
one per combined snapshot of a collection.

Every entry is bound to what it describes: it holds its own key and the files (path,
version, format) it was made from, and is used only for a lookup of that key whose
caller expects those files; its manifest may name no other file.

An entry is a scanned manifest and coordinate values in a compact binary form (one
JSON document of metadata followed by the raw bytes of its numpy arrays: an ``.npz`` costs
a zip-member lookup per array, too slow for thousands of entries), behind a header holding
a SHA-256 of the payload. Entries are written under a temporary name and renamed, so readers
never see a torn entry; an entry that fails its checksum or cannot be decoded is discarded
with a warning and the file is scanned again. The cache may live on any fsspec URL (a bucket
shared by a team).
"""

from __future__ import annotations

import hashlib
import hmac
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

from .access import FileVersion
from .errors import RedactedWarning
from .manifest import ArrayMeta, ChunkGrid, ComputePlan, Manifest, SourcePart, VirtualArray
from .source import SourceFile, speaks

__all__ = ["ScanCache", "default_cache_dir", "CorruptCacheEntryWarning"]

_MAGIC = b"FSVSCAN1"
_FORMAT = 3
_LENGTH = struct.Struct("<Q")


class CorruptCacheEntryWarning(RedactedWarning):
    """A cache entry failed its checksum or could not be read; it was discarded."""


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/fsspec-virtual/scans`` (``~/.cache/fsspec-virtual/scans`` by default)."""
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


#: The files an entry was made from: ``[path, version, format]`` each.
Binding = list[list[Any]]


def binding_of(files: list[SourceFile]) -> Binding:
    """What an entry made from ``files`` is bound to (see :func:`encode_entry`)."""
    return [[f.path, f.version.to_list(), f.format] for f in files]


def files_of(binding: Binding) -> list[SourceFile]:
    """Undo :func:`binding_of`."""
    return [SourceFile(path, FileVersion.from_list(v), fmt) for path, v, fmt in binding]


def _digest(payload: bytes, secret: bytes | None) -> bytes:
    if secret is None:
        return hashlib.sha256(payload).digest()
    return hmac.new(secret, payload, hashlib.sha256).digest()


def encode_entry(
    manifest: Manifest,
    coords: dict[str, np.ndarray],
    messages: list[str],
    key: str = "",
    files: Binding | None = None,
    secret: bytes | None = None,
) -> bytes:
    """A scan result as cache-entry bytes (header, checksum or HMAC, payload), bound to
    its ``key`` and the ``files`` it was made from."""
    if manifest.linked or manifest.link_targets:  # it hangs on files its key does not name
        raise ValueError("a manifest that reads external links' targets is not cached")
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
        "key": key,
        "files": files or [],
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
    return _MAGIC + _digest(payload, secret) + payload


#: A decoded entry: manifest, coordinate values, messages, and what it is bound to.
Entry = tuple[Manifest, dict[str, np.ndarray], list[str], str, Binding]


def decode_entry(data: bytes, secret: bytes | None = None) -> Entry:
    """The scan result held in cache-entry bytes, with its key and the files it was made
    from.

    Raises
    ------
    ValueError
        If the bytes are not an intact entry of this format (or not signed with
        ``secret``).
    """
    if len(data) < len(_MAGIC) + 32 or not data.startswith(_MAGIC):
        raise ValueError("not a scan-cache entry (bad header)")
    digest, payload = data[len(_MAGIC) : len(_MAGIC) + 32], data[len(_MAGIC) + 32 :]
    if not hmac.compare_digest(_digest(payload, secret), digest):
        what = "signature" if secret is not None else "checksum"
        raise ValueError(f"{what} mismatch (truncated, corrupted or forged entry)")
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
    return manifest, coords, list(doc["messages"]), str(doc["key"]), list(doc["files"])


def check_binding(entry: Entry, key: str, expected: Binding | None) -> None:
    """Raise ``ValueError`` unless ``entry`` was stored under ``key``, made from the
    ``expected`` files (when given), and names no file it was not made from."""
    manifest, _, _, own_key, files = entry
    if own_key != key:
        raise ValueError(f"it was written for another key ({own_key[:16]}...)")
    if expected is not None and files != expected:
        raise ValueError("it describes other files or versions than the ones asked for")
    allowed = {path for path, _, _ in files}
    strangers = [url for url in manifest.urls if url not in allowed]
    if strangers:
        raise ValueError(f"its manifest names files it was not made from ({strangers[0]})")


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
    secret
        Sign entries with HMAC-SHA256 under this secret, and use only entries signed
        with it (see the module's trust model).
    """

    def __init__(
        self,
        location: str | None = None,
        storage_options: dict | None = None,
        secret: str | bytes | None = None,
    ):
        location = location or default_cache_dir()
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self.fs: AbstractFileSystem
        self.fs, self.root = fsspec.core.url_to_fs(location, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.hits = 0
        self.misses = 0

    def key(self, protocol: str, source: SourceFile, concat_dim: str | None, version: int) -> str:
        """The entry name of one file's scan (its path, version, format, scanner version)."""
        ident = json.dumps(
            [
                protocol,
                source.path,
                source.version.to_list(),
                source.format,
                concat_dim,
                version,
                _FORMAT,
            ]
        )
        return hashlib.sha256(ident.encode()).hexdigest()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.scan"

    def get(self, key: str, files: int = 1, expect: Binding | None = None) -> Entry | None:
        """The cached entry, or None (a corrupt or misbound entry is removed with a warning).

        ``files`` is how many files the entry stands for, in the ``hits``/``misses`` counts
        (a whole collection's entry: its files on a hit, none on a miss). ``expect``: the
        files the entry must have been made from (see :func:`check_binding`).
        """
        path = self._path(key)
        try:
            data = self.fs.cat_file(path)
        except (FileNotFoundError, OSError):
            self.misses += 1 if files == 1 else 0
            return None
        try:
            result = decode_entry(data, self._secret)
            check_binding(result, key, expect)
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
        self,
        key: str,
        manifest: Manifest,
        coords: dict[str, np.ndarray],
        messages: list[str],
        files: Binding,
    ) -> None:
        """Store an entry made from ``files``: written under a temporary name, then renamed
        into place."""
        path = self._path(key)
        data = encode_entry(manifest, coords, messages, key, files, self._secret)
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
            warnings.warn(
                f"cannot write scan cache entry {path}: {e}", RedactedWarning, stacklevel=2
            )
