"""Export a snapshot as kerchunk references (``fs.to_kerchunk``): JSON or Parquet.

What each chunk becomes:

- a passthrough chunk (a byte range of a source file): ``[url, offset, length]``, the URL
  as ReferenceFileSystem opens it (a local file's absolute path; any other with its
  protocol: ``s3://bucket/key``, ``https://...``);
- a chunk the store holds inline: its bytes (kerchunk's ``base64:`` spelling where they
  are not ASCII);
- a computed chunk (no byte range holds it): computed now and encoded with the codecs the
  array declares, at their declared settings (the store encodes at the fastest, for reads;
  an export is kept, so its size matters). Written inline when a chunk's decoded size is at
  most ``inline_computed`` bytes; else written as a file of a side store (``computed_to``)
  and referenced whole; else, with no side store, the variable is left out of the export,
  named in the returned report and in an :class:`~fsspec_virtual.ExportIncompleteWarning`;
- a missing chunk: no reference (readers get the fill value).

Metadata documents are the store's in ``decode="client"`` mode, byte for byte (an export
is for other readers, whatever the store's ``decode``), without the variables left out.

Each export records where it came from (:data:`PROVENANCE_KEY`: the snapshot, every file's
version, the reader's options), beside ``version`` and ``refs`` in the JSON and in
:data:`PROVENANCE_FILE` of a Parquet export's directory: ReferenceFileSystem ignores
both. References carry no version: a reader of them cannot tell a rewritten source.

Selection is vectorised over the numpy chunk grids; the Parquet records go through
fsspec's own writer (``LazyReferenceMapper.write``) one record of columns at a time, and
the JSON text is written in batches, so no dict of every reference is ever built.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import math
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
from fsspec.core import split_protocol

from ..bridges import run_blocking
from ..codecs import decode_chunk, encode_chunk
from ..compute import compute_chunk
from ..errors import ExportError, ExportExistsError, ExportIncompleteWarning
from ..manifest import COMPUTED, INLINE, VirtualArray
from ..metadata import render_metadata
from ..options import is_secret_name, redacted_text
from ..reader import DEFAULT_READ_OPTIONS, ReadOptions

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from ..state import CollectionState

__all__ = [
    "FORMATS",
    "DEFAULT_INLINE_COMPUTED",
    "DEFAULT_RECORD_SIZE",
    "PROVENANCE_KEY",
    "PROVENANCE_FILE",
    "LeftOut",
    "KerchunkExport",
    "to_kerchunk",
]

FORMATS = ("json", "parquet")
#: Computed chunks of at most this many bytes (decoded) are written inline by default.
DEFAULT_INLINE_COMPUTED = 64 * 1024
#: References per Parquet file (kerchunk's ``refs_to_dataframe`` default).
DEFAULT_RECORD_SIZE = 100_000
#: The JSON key (beside ``version`` and ``refs``) that records where an export came from.
PROVENANCE_KEY = "fsspec_virtual"
#: The file of a Parquet export's directory that records the same.
PROVENANCE_FILE = "fsspec_virtual.json"

_PARQUET_SUFFIXES = (".parq", ".parquet")
#: Chunk references formatted per batch of the JSON text (bounds the memory it takes).
_TEXT_BATCH = 1 << 18
#: Computed chunks computed together (bounds the memory a side store's chunks take).
_COMPUTE_BATCH = 32
_COMPUTE_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A variable that is not in an export, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return redacted_text(f"{self.path}: {self.reason}")


@dataclass(frozen=True)
class KerchunkExport:
    """What :meth:`~fsspec_virtual.VirtualZarrFileSystem.to_kerchunk` wrote.

    Attributes
    ----------
    url
        Where the references are (a JSON file, or a Parquet directory).
    format
        ``"json"`` or ``"parquet"``.
    snapshot
        The identity of the snapshot exported.
    files
        Source files (listed, and HDF5 external links' targets) at the versions exported.
    variables
        The arrays exported.
    ranges
        Chunks referenced as byte ranges of the source files.
    inline
        Chunks the store holds inline, written inline.
    computed_inline, computed_files
        Computed chunks written inline, and written to the side store (``computed_to``).
    left_out
        The variables not in the export, with why: computed chunks too large to inline
        and no side store, or left out of the store itself (``fs.report()``).
    reader_options
        What a reader passes to ``fsspec.filesystem("reference", fo=url, ...)`` besides
        credentials: ``remote_protocol`` and ``remote_options``.
    withheld_options
        Names of source (or side store) options not recorded because they are
        credentials or have no JSON form: a reader supplies their own.
    """

    url: str
    format: str
    snapshot: str
    files: int
    variables: tuple[str, ...]
    ranges: int
    inline: int
    computed_inline: int
    computed_files: int
    left_out: tuple[LeftOut, ...]
    reader_options: dict[str, Any] = field(default_factory=dict)
    withheld_options: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every variable of the store is in the export."""
        return not self.left_out

    def __str__(self) -> str:
        lines = [
            f"kerchunk {self.format} references at {self.url}: {len(self.variables)} "
            f"variable(s) of snapshot {self.snapshot[:13]} ({self.files} file(s))",
            f"  {self.ranges} chunk(s) as byte ranges, {self.inline} inline, "
            f"{self.computed_inline} computed inline, {self.computed_files} computed to files",
        ]
        if self.left_out:
            lines.append(f"  left out ({len(self.left_out)}):")
            lines += [f"    {item}" for item in self.left_out]
        options = ", ".join(f"{k}={v!r}" for k, v in self.reader_options.items())
        lines.append(f'  open with fsspec.filesystem("reference", fo={self.url!r}, {options})')
        if self.withheld_options:
            lines.append(f"  not recorded (give your own): {', '.join(self.withheld_options)}")
        return redacted_text("\n".join(lines))


@dataclass
class _Refs:
    """One array's references over its whole chunk grid (C order): ``file_id`` indexes the
    export's URL table (or is a negative sentinel), ``raw`` holds inline bytes by flat
    chunk index."""

    path: str
    shape: tuple[int, ...]
    file_id: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    raw: dict[int, bytes]


def _format_of(url: str, format: str | None) -> str:
    """The export format: given, or by the URL's suffix (``.parq``/``.parquet``, else JSON).

    Raises
    ------
    ExportError
        For an unknown format, or one ReferenceFileSystem would read as the other (it
        takes a URL ending ``.parq`` for Parquet, and one holding ``.json`` for JSON).
    """
    parquet_name = url.rstrip("/").endswith(_PARQUET_SUFFIXES)
    if format is None:
        return "parquet" if parquet_name else "json"
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: give one of {FORMATS}")
    if format == "json" and parquet_name:
        raise ExportError(
            f"{url}: a name ending .parq/.parquet is read as Parquet references by "
            "ReferenceFileSystem; name a JSON export otherwise (refs.json)"
        )
    if format == "parquet" and ".json" in url:
        raise ExportError(
            f"{url}: a name holding '.json' is read as JSON references by "
            "ReferenceFileSystem; name a Parquet export otherwise (refs.parq)"
        )
    return format


def _public_options(options: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """The options a reader may be told (no credentials, JSON-able), and the names of the
    others."""
    kept: dict[str, Any] = {}
    withheld: list[str] = []
    for name, value in options.items():
        spelled = f"{prefix}{name}"
        if is_secret_name(str(name)):
            withheld.append(spelled)
        elif isinstance(value, dict):
            inner, hidden = _public_options(value, f"{spelled}.")
            kept[name] = inner
            withheld += hidden
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                withheld.append(spelled)
            else:
                kept[name] = value
    return kept, withheld


def _reference_url(fs: AbstractFileSystem, url: str) -> str:
    """``url`` of ``fs`` as ReferenceFileSystem opens it: a local path as it is (absolute),
    anything else with its protocol."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return url
    return fs.unstrip_protocol(url)


def _check_no_credentials(urls: list[str]) -> None:
    for url in urls:
        if redacted_text(url) != url:
            raise ExportError(
                f"{redacted_text(url)}: the source URL carries a credential (a password or "
                "a signature), which every reference of an export would publish; serve the "
                "files from URLs without one (credentials in target_options stay private)"
            )


def _exists(fs: AbstractFileSystem, path: str) -> bool:
    try:
        return bool(fs.exists(path))
    except FileNotFoundError:
        return False


def _source_layout(array: VirtualArray) -> VirtualArray:
    """``array`` in its source chunks, where the store serves many tiny source chunks
    merged into computed ones (one part covering the whole array, read as it is): the same
    values, each source chunk a byte range, instead of merged chunks computed and copied."""
    plan = array.plan
    if plan is None or len(plan.parts) != 1 or not (array.grid.file_id == COMPUTED).all():
        return array
    part, meta = plan.parts[0], array.meta
    source = part.meta
    if (
        part.grid is None
        or part.unpack
        or part.start != 0
        or source.shape != meta.shape
        or source.dtype != meta.dtype
        or source.fill_value != meta.fill_value
        or (part.grid.file_id == COMPUTED).any()
    ):
        return array
    layout = replace(
        meta,
        chunks=source.chunks,
        compressor=source.compressor,
        filters=source.filters,
        order=source.order,
    )
    return VirtualArray(layout, part.grid)


def _left_out(
    state: CollectionState, inline_computed: int, side_store: bool
) -> tuple[dict[str, VirtualArray], list[LeftOut]]:
    """The arrays exported (merged tiny chunks in their source layout), and the variables
    left out (computed chunks too large to inline without a side store; the store's own
    skipped variables)."""
    kept: dict[str, VirtualArray] = {}
    left: list[LeftOut] = []
    for path, served in state.manifest.arrays.items():
        array = _source_layout(served)
        computed = int(np.count_nonzero(array.grid.file_id == COMPUTED))
        size = math.prod(array.meta.chunks) * array.meta.numpy_dtype.itemsize
        if computed and size > inline_computed and not side_store:
            why = array.plan.reason if array.plan is not None else "computed"
            left.append(
                LeftOut(
                    path,
                    f"{computed} computed chunk(s) of {size} bytes each (decoded), over "
                    f"inline_computed={inline_computed}, and no side store (computed_to) "
                    f"to write them to; computed because {why}",
                )
            )
            continue
        kept[path] = array
    for path, reason in sorted(state.manifest.skipped.items()):
        left.append(LeftOut(path, f"not served by the store: {reason}"))
    return kept, left


async def _encoded(
    state: CollectionState, array: VirtualArray, index: tuple[int, ...], reading: ReadOptions
) -> bytes:
    """Computed chunk ``index`` encoded with the array's codecs at their declared settings."""
    meta = array.meta
    urls, cache, versions = state.manifest.urls, state.cache, state.versions
    if meta.numpy_dtype.kind == "O":  # objects have no raw bytes: decode the store's encoding
        raw = await compute_chunk(state.fs, urls, array, index, cache, versions, reading)
        values = decode_chunk(raw, meta)
    else:
        raw = await compute_chunk(
            state.fs, urls, array, index, cache, versions, reading, encoded=False
        )
        values = np.frombuffer(raw, dtype=meta.numpy_dtype).reshape(meta.chunks)
    return await asyncio.to_thread(encode_chunk, values, meta)


async def _computed_batch(
    state: CollectionState,
    array: VirtualArray,
    indices: list[tuple[int, ...]],
    reading: ReadOptions,
) -> list[bytes]:
    limit = asyncio.Semaphore(_COMPUTE_CONCURRENCY)

    async def one(index: tuple[int, ...]) -> bytes:
        async with limit:
            return await _encoded(state, array, index, reading)

    return list(await asyncio.gather(*(one(index) for index in indices)))


def _chunk_name(shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return "0"
    return ".".join(str(int(i)) for i in np.unravel_index(flat, shape))


class _SideStore:
    """Where computed chunks too large to inline are written, one file per chunk."""

    def __init__(self, url: str, options: dict[str, Any] | None, overwrite: bool) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url, **(options or {}))
        self.root = self.root.rstrip("/")
        self.options = dict(options or {})
        if not overwrite and _exists(self.fs, self.root) and self.fs.ls(self.root):
            raise ExportExistsError(
                f"{url}: the side store for computed chunks exists and is not empty (another "
                "export's chunks?); give another computed_to, or overwrite=True"
            )

    def write(self, key: str, data: bytes) -> str:
        path = f"{self.root}/{key}"
        self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        self.fs.pipe_file(path, data)
        return _reference_url(self.fs, path)


def _array_refs(
    state: CollectionState,
    path: str,
    array: VirtualArray,
    urls: list[str],
    inline_computed: int,
    side: _SideStore | None,
    reading: ReadOptions,
    counts: dict[str, int],
) -> _Refs:
    """One array's references; its computed chunks computed now (inline or to ``side``,
    whose URLs join ``urls``)."""
    grid = array.grid
    shape = grid.shape
    file_id = np.ascontiguousarray(grid.file_id).reshape(-1).copy()
    offset = np.ascontiguousarray(grid.offset).reshape(-1).astype(np.int64)
    length = np.ascontiguousarray(grid.length).reshape(-1).astype(np.int64)
    raw: dict[int, bytes] = {}
    held = np.flatnonzero(file_id == INLINE)
    for flat in held.tolist():
        raw[flat] = bytes(grid.inline[int(offset[flat])])  # a scan may hold a bytearray
    counts["ranges"] += int(np.count_nonzero(file_id >= 0))
    counts["inline"] += len(held)
    computed = np.flatnonzero(file_id == COMPUTED)
    if len(computed):
        size = math.prod(array.meta.chunks) * array.meta.numpy_dtype.itemsize
        inline = size <= inline_computed
        for start in range(0, len(computed), _COMPUTE_BATCH):
            flats = computed[start : start + _COMPUTE_BATCH].tolist()
            indices = [
                tuple(int(i) for i in np.unravel_index(f, shape)) if shape else () for f in flats
            ]
            datas = run_blocking(_computed_batch(state, array, indices, reading))
            for flat, data in zip(flats, datas):
                if inline:
                    raw[flat] = data
                    file_id[flat] = INLINE
                    counts["computed_inline"] += 1
                    continue
                assert side is not None
                urls.append(side.write(f"{path}/{_chunk_name(shape, flat)}", data))
                file_id[flat] = len(urls) - 1
                offset[flat], length[flat] = 0, len(data)
                counts["computed_files"] += 1
    return _Refs(path, shape, file_id, offset, length, raw)


# -- JSON ---------------------------------------------------------------------------------


def _json_inline(data: bytes) -> str:
    """Inline bytes as kerchunk spells them: ASCII text as it is, else ``base64:``
    (ReferenceFileSystem decodes any string starting ``base64:``, so such text is too)."""
    if data.isascii() and not data.startswith(b"base64:"):
        return json.dumps(data.decode("ascii"))
    return json.dumps("base64:" + base64.b64encode(data).decode("ascii"))


def _json_chunk_entries(refs: _Refs, url_json: np.ndarray) -> Iterator[str]:
    """``"key":value`` entries of one array's chunks, in batches of text."""
    key = json.dumps(f"{refs.path}/")[:-1]  # the opening quote and the escaped prefix
    ranged = np.flatnonzero(refs.file_id >= 0)
    for start in range(0, len(ranged), _TEXT_BATCH):
        flats = ranged[start : start + _TEXT_BATCH]
        names = _names(refs.shape, flats)
        yield ",\n".join(
            f'{key}{name}":[{url},{offset},{length}]'
            for name, url, offset, length in zip(
                names,
                url_json[refs.file_id[flats]].tolist(),
                refs.offset[flats].tolist(),
                refs.length[flats].tolist(),
            )
        )
    if refs.raw:
        yield ",\n".join(
            f'{key}{_chunk_name(refs.shape, flat)}":{_json_inline(data)}'
            for flat, data in sorted(refs.raw.items())
        )


def _names(shape: tuple[int, ...], flats: np.ndarray) -> list[str]:
    """Chunk names (``"3.0.12"``) of flat C-order chunk indices, each axis's numbers
    spelled once."""
    if not shape:
        return ["0"] * len(flats)
    axes = np.unravel_index(flats, shape)
    spelled = [[str(i) for i in range(n)] for n in shape]
    columns = [[words[i] for i in axis.tolist()] for words, axis in zip(spelled, axes)]
    if len(columns) == 1:
        return columns[0]
    return [".".join(parts) for parts in zip(*columns)]


def _write_json(
    fs: AbstractFileSystem,
    path: str,
    documents: dict[str, bytes],
    arrays: list[_Refs],
    urls: list[str],
    provenance: dict[str, Any],
) -> None:
    url_json = np.array([json.dumps(u) for u in urls], dtype=object)
    head = json.dumps({"version": 1, PROVENANCE_KEY: provenance}, separators=(",", ":"))
    # written beside the target and moved over it: a reader never sees half an export
    temporary = f"{path}.{uuid.uuid4().hex[:12]}.partial"
    parent = path.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(temporary, "wb") as f:
            f.write(head[:-1].encode() + b',"refs":{\n')
            f.write(
                ",\n".join(
                    f"{json.dumps(k)}:{json.dumps(doc.decode())}" for k, doc in documents.items()
                ).encode()
            )
            for refs in arrays:
                for text in _json_chunk_entries(refs, url_json):
                    if text:
                        f.write(b",\n" + text.encode())
            f.write(b"\n}}\n")
        if _exists(fs, path):
            fs.rm(path, recursive=True)
        fs.mv(temporary, path)
    finally:
        if _exists(fs, temporary):
            fs.rm(temporary)


# -- Parquet ------------------------------------------------------------------------------


def _parquet_raw(data: bytes) -> bytes:
    """Inline bytes for the ``raw`` column: ReferenceFileSystem decodes raw bytes that
    start ``base64:``, so only those are spelled so."""
    if data.startswith(b"base64:"):
        return b"base64:" + base64.b64encode(data)
    return data


def _write_records(mapper: Any, refs: _Refs, url_objects: np.ndarray, record_size: int) -> None:
    """One array's references as Parquet records, written by fsspec's own
    ``LazyReferenceMapper.write`` from columns made with numpy.

    ``write`` completes a record it holds fewer references of from what ``open_refs``
    returns for it (the record already on disk): handing it this record's columns there,
    with no reference held, writes them as they are, with fsspec's columns, types,
    categorical paths, null handling and engine options, and no Python object per chunk.
    """
    n = refs.file_id.size
    ranged = refs.file_id >= 0
    none = len(url_objects) - 1
    paths = url_objects[np.where(ranged, refs.file_id, none)]
    offsets = np.where(ranged, refs.offset, 0).astype(np.int64)
    sizes = np.where(ranged, refs.length, 0).astype(np.int64)
    raws = np.full(n, None, dtype=object)
    for flat, data in refs.raw.items():
        raws[flat] = _parquet_raw(data)
    present = ranged.copy()
    present[list(refs.raw)] = True
    opened = mapper.open_refs
    try:
        for record in range(math.ceil(n / record_size)):
            window = slice(record * record_size, (record + 1) * record_size)
            if not present[window].any():
                continue  # no record file: every key of it reads as missing
            columns = {
                "path": np.full(record_size, None, dtype=object),
                "offset": np.zeros(record_size, dtype=np.int64),
                "size": np.zeros(record_size, dtype=np.int64),
                "raw": np.full(record_size, None, dtype=object),
            }
            count = len(paths[window])
            for name, values in (("path", paths), ("offset", offsets), ("size", sizes)):
                columns[name][:count] = values[window]
            columns["raw"][:count] = raws[window]
            mapper.open_refs = lambda field, number, columns=columns: columns
            mapper._items[(refs.path, record)] = {}
            mapper.write(refs.path, record)
    finally:
        mapper.open_refs = opened


def _write_parquet(
    fs: AbstractFileSystem,
    path: str,
    documents: dict[str, bytes],
    arrays: list[_Refs],
    urls: list[str],
    provenance: dict[str, Any],
    record_size: int,
) -> None:
    from fsspec.implementations.reference import LazyReferenceMapper

    try:
        import fastparquet  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "a Parquet export needs pandas and fastparquet (the engine fsspec's reference "
            "filesystem reads with): pip install 'fsspec-virtual[parquet]'"
        ) from e
    mapper = LazyReferenceMapper.create(path, fs=fs, record_size=record_size)
    for key, document in documents.items():
        if key != ".zmetadata":  # the mapper consolidates the documents itself
            mapper[key] = document
    url_objects = np.array([*urls, None], dtype=object)
    for refs in arrays:
        _write_records(mapper, refs, url_objects, record_size)
    mapper.flush()
    fs.pipe_file(f"{path}/{PROVENANCE_FILE}", json.dumps(provenance).encode())


# -- the export ---------------------------------------------------------------------------


def _protocol(url: str) -> str:
    return split_protocol(url)[0] or "file"


def _check_side_protocol(side: _SideStore, urls: list[str], computed_to: str) -> None:
    """ReferenceFileSystem reads the references of one protocol (``remote_protocol``):
    a side store elsewhere would be unreadable (a local path among S3 references is
    read from S3)."""
    if not urls:
        return
    sources, there = _protocol(urls[0]), _protocol(_reference_url(side.fs, side.root))
    if sources != there:
        raise ExportError(
            f"{computed_to}: the side store is on {there!r} and the sources on "
            f"{sources!r}; ReferenceFileSystem reads the references of one protocol, so put "
            f"the side store on {sources!r} too"
        )


def to_kerchunk(
    state: CollectionState,
    url: str,
    *,
    format: str | None = None,
    inline_computed: int = DEFAULT_INLINE_COMPUTED,
    computed_to: str | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    computed_options: dict[str, Any] | None = None,
    record_size: int = DEFAULT_RECORD_SIZE,
    reading: ReadOptions = DEFAULT_READ_OPTIONS,
) -> KerchunkExport:
    """Write ``state`` (a snapshot) as kerchunk references at ``url``.

    Parameters
    ----------
    state
        The snapshot to export.
    url
        Where: a JSON file, or a Parquet directory (any fsspec URL).
    format
        ``"json"`` or ``"parquet"``; default: Parquet for a URL ending ``.parq`` or
        ``.parquet``, else JSON.
    inline_computed
        Computed chunks whose decoded size is at most this many bytes are written
        inline (default 64 KiB; 0: never).
    computed_to
        A directory (any fsspec URL) where larger computed chunks are written, one file
        per chunk, referenced whole; without it, their variables are left out.
    overwrite
        Replace an existing export at ``url`` (and write over the side store's files).
    storage_options, computed_options
        Options of ``url``'s and ``computed_to``'s filesystems.
    record_size
        References per Parquet file.
    reading
        How source chunks are read to compute chunks.

    Returns
    -------
    KerchunkExport
        What was written, and what was left out and why.

    Raises
    ------
    ExportExistsError
        If ``url`` exists (or ``computed_to`` holds files) and not ``overwrite``.
    ExportError
        For an unknown format, source URLs that carry credentials, or a side store on
        another protocol than the sources.
    """
    fmt = _format_of(url, format)
    if inline_computed < 0:
        raise ExportError(f"inline_computed must be >= 0, not {inline_computed}")
    if record_size < 1:
        raise ExportError(f"record_size must be >= 1, not {record_size}")
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    path = path.rstrip("/")
    if not overwrite and _exists(fs, path):
        raise ExportExistsError(f"{url} exists; give another URL, or overwrite=True")
    manifest = state.manifest
    urls = [_reference_url(state.fs, u) for u in manifest.urls]
    _check_no_credentials(urls)
    kept, left = _left_out(state, inline_computed, computed_to is not None)
    side = None
    if computed_to is not None:
        side = _SideStore(computed_to, computed_options, overwrite)
        _check_side_protocol(side, urls, computed_to)
    same = len(kept) == len(manifest.arrays) and all(kept[p] is manifest.arrays[p] for p in kept)
    documents = state.metadata if same else render_metadata(replace(manifest, arrays=kept))
    counts = dict.fromkeys(("ranges", "inline", "computed_inline", "computed_files"), 0)
    arrays = [
        _array_refs(state, p, a, urls, inline_computed, side, reading, counts)
        for p, a in kept.items()
    ]
    remote_options, withheld = _public_options(state.spec.target_options)
    if side is not None:
        withheld += [f"computed_options.{n}" for n in _public_options(side.options)[1]]
    protocol = _protocol(urls[0]) if urls else "file"
    reader = {"remote_protocol": protocol, "remote_options": remote_options}
    versions = state.versions
    provenance = {
        "package_version": _package_version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "snapshot": state.id,
        "source": {"protocol": state.spec.target_protocol, "paths": list(state.spec.paths)},
        "files": [
            {"url": _reference_url(state.fs, u), **_version_fields(v)} for u, v in versions.items()
        ],
        "reader": reader,
        "withheld_options": withheld,
        "computed_to": _reference_url(side.fs, side.root) if side is not None else None,
        "left_out": {item.path: item.reason for item in left},
    }
    if fmt == "json":
        _write_json(fs, path, documents, arrays, urls, provenance)
    else:
        _write_parquet(fs, path, documents, arrays, urls, provenance, record_size)
    for item in left:
        warnings.warn(
            f"{item.path} is left out of the export at {url}: {item.reason}",
            ExportIncompleteWarning,
            stacklevel=3,
        )
    return KerchunkExport(
        url=url,
        format=fmt,
        snapshot=state.id,
        files=len(versions),
        variables=tuple(kept),
        ranges=counts["ranges"],
        inline=counts["inline"],
        computed_inline=counts["computed_inline"],
        computed_files=counts["computed_files"],
        left_out=tuple(left),
        reader_options=reader,
        withheld_options=tuple(withheld),
    )


def _version_fields(version: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {
        f.name: getattr(version, f.name)
        for f in fields(version)
        if getattr(version, f.name) is not None
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fsspec-virtual")
    except PackageNotFoundError:
        return "unknown"
