"""Export a snapshot to an Icechunk repository (``fs.to_icechunk``).

What the repository gets, chunk by chunk:

- a passthrough chunk (a byte range of a source file) becomes a *virtual reference* to that
  range, checked by the file's ETag (a strong one) or else its modification time, so that
  Icechunk refuses to read a source that changed after the export;
- a computed or inline chunk becomes a real chunk: its encoded bytes, as the store serves
  them with ``decode="client"``;
- a missing chunk becomes nothing (readers get the fill value);
- metadata becomes Zarr v3 ``zarr.json`` documents (without consolidated metadata:
  Icechunk lists its own nodes).

Each commit records the snapshot it was written from (:data:`COMMIT_KEY` in the commit's
metadata). The next export to the same branch compares the new snapshot's manifest with
that one and writes only what differs: changed documents, new or moved references, chunk
keys that no longer exist deleted. Where the branch's last commit was not written by this
package, or its snapshot can no longer be had (not kept in this process nor in the scan
cache), everything is written again: the same result, slower.

Icechunk reads virtual chunks only from *virtual chunk containers* declared in the
repository's configuration, and only those a reader authorizes: the export adds one
container per source location (a local directory, an HTTP server, an S3 or GCS bucket)
that no container of the repository covers yet, and :attr:`IcechunkExport.containers`
lists the prefixes a reader authorizes.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import json
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from ..bridges import run_blocking
from ..codecs_v3 import store_decodes
from ..keys import ChunkSource, ComputedSource, InlineSource, RangeSource
from ..manifest import COMPUTED, INLINE, MISSING, Manifest, VirtualArray
from ..options import redacted_text
from ..reader import ReadOptions
from ..serving import Decode, read_source

if TYPE_CHECKING:
    from ..access import FileVersion
    from ..state import CollectionState

__all__ = ["COMMIT_KEY", "EXPORT_FORMAT", "IcechunkExport", "to_icechunk"]

#: The key of the commit metadata this package writes.
COMMIT_KEY = "fsspec_virtual"
#: Bumped when what an export writes for a given snapshot changes: a repository written
#: in another format is written again in full.
EXPORT_FORMAT = 1
#: Real chunks computed and written at once.
_CONCURRENT_CHUNKS = 16

INSTALL_HINT = "pip install fsspec-virtual[icechunk]"


@dataclass(frozen=True)
class IcechunkExport:
    """What one :func:`to_icechunk` wrote.

    Attributes
    ----------
    commit
        The Icechunk snapshot id of the commit made (the branch's tip, unchanged, when
        nothing differed: see ``committed``).
    branch
        The branch written.
    snapshot
        The identity of the collection snapshot exported.
    committed
        Whether a commit was made (False: the branch already held this snapshot).
    references
        Virtual chunk references written.
    chunks
        Real chunks written (computed and inline chunks).
    deleted
        Chunk keys and nodes deleted (they no longer exist in the store).
    documents
        Metadata documents (``zarr.json``) written.
    unchanged
        Chunks left as the repository held them.
    rewritten
        Why everything was written again, or None when only the differences were.
    containers
        The URL prefixes of the virtual chunk containers the references need: a reader
        authorizes them (``authorize_virtual_chunk_access={prefix: None, ...}``).
    """

    commit: str
    branch: str
    snapshot: str
    committed: bool
    references: int
    chunks: int
    deleted: int
    documents: int
    unchanged: int
    rewritten: str | None
    containers: tuple[str, ...]

    def __repr__(self) -> str:
        how = f"; everything written again: {self.rewritten}" if self.rewritten else ""
        return (
            f"<Icechunk export of snapshot {self.snapshot[:13]} to {self.branch!r} "
            f"({self.commit if self.committed else 'nothing to commit'}): "
            f"{self.references} reference(s), {self.chunks} chunk(s), {self.documents} "
            f"document(s) written, {self.deleted} deleted, {self.unchanged} unchanged{how}>"
        )


def _icechunk() -> Any:
    try:
        import icechunk
    except ImportError as e:
        raise ImportError(
            f"exporting to Icechunk needs the icechunk package: {INSTALL_HINT}"
        ) from e
    return icechunk


# -- where sources are, as Icechunk spells them -----------------------------------------------


def chunk_key(path: str, index: tuple[int, ...]) -> str:
    """The Zarr v3 key (default chunk key encoding) of chunk ``index`` of array ``path``."""
    return f"{path}/c/" + "/".join(str(i) for i in index) if index else f"{path}/c"


def _location(url: str, protocol: str) -> str:
    """The URL Icechunk records for a source file (``url`` as the snapshot holds it)."""
    if protocol == "file":
        # percent-encoded: Icechunk reads a location as a URL ("#" would end the path)
        return "file://" + quote(os.path.abspath(url))
    if protocol in ("http", "https"):
        if urlsplit(url).username is not None or redacted_text(url) != url:
            raise ValueError(
                f"exporting to Icechunk: {redacted_text(url)} holds credentials, which "
                "every reader of the repository would see in its references"
            )
        parts = urlsplit(url)
        if parts.port == {"http": 80, "https": 443}.get(parts.scheme):
            # a default port spelled out: Icechunk drops it, and so do its containers
            return parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()
        return url
    if protocol in ("s3", "s3a"):
        return "s3://" + url.removeprefix("s3://")
    if protocol in ("gs", "gcs"):
        return "gs://" + url.removeprefix("gs://").removeprefix("gcs://")
    raise NotImplementedError(
        f"exporting to Icechunk: sources read through {protocol!r} ({url}) cannot be "
        "virtual chunks (Icechunk reads local files, HTTP, S3 and GCS)"
    )


@functools.lru_cache(maxsize=1)
def _icechunk_keeps_ports() -> bool:
    """Whether this Icechunk keeps a port in virtual chunk URLs (1.1.x drops it: a
    reference to ``http://host:8080/f.nc`` reads ``http://host/f.nc``)."""
    ic = _icechunk()
    config = ic.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer("http://probe.invalid:8080/", ic.http_store())
    )
    repo = ic.Repository.create(ic.in_memory_storage(), config)
    session = repo.writable_session("main")
    _set_documents(
        session.store,
        {
            "zarr.json": b'{"zarr_format":3,"node_type":"group","attributes":{}}',
            "a/zarr.json": json.dumps(
                {
                    "zarr_format": 3,
                    "node_type": "array",
                    "shape": [1],
                    "data_type": "uint8",
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
                    "chunk_key_encoding": {"name": "default"},
                    "fill_value": 0,
                    "codecs": [{"name": "bytes"}],
                }
            ).encode(),
        },
    )
    spec = ic.VirtualChunkSpec([0], "http://probe.invalid:8080/f", 0, 1)
    return session.store.set_virtual_refs("a", [spec]) is None


def _check_port(location: str) -> None:
    parts = urlsplit(location)
    if parts.scheme in ("http", "https") and parts.port is not None:
        default = 80 if parts.scheme == "http" else 443
        if parts.port != default and not _icechunk_keeps_ports():
            raise NotImplementedError(
                f"exporting to Icechunk: {location} is served on port {parts.port}, and the "
                f"installed icechunk ({_icechunk().__version__}) drops the port of virtual "
                "chunk URLs (it would read the file from the default port); serve the "
                "files on port 80/443, or use an icechunk that keeps ports (icechunk PR 2224)"
            )


def _container_prefix(location: str) -> str:
    """The prefix of the container a location belongs to, when no container of the
    repository covers it: a local file's directory, an HTTP server, a bucket."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        # a directory spelled the same encoded or not: Icechunk 1.1 matches a container
        # to an encoded location when writing and to the decoded one when reading
        directory = posixpath.dirname(unquote(parts.path))
        while quote(directory) != directory:
            directory = posixpath.dirname(directory)
        return "file://" + directory.rstrip("/") + "/"
    if parts.scheme in ("http", "https") and parts.port in (80, 443):
        # Icechunk matches containers to locations without their default port
        return f"{parts.scheme}://{parts.hostname}/"
    return f"{parts.scheme}://{parts.netloc}/"


def _common_local_prefix(prefixes: list[str]) -> str:
    paths = [p.removeprefix("file://").rstrip("/") or "/" for p in prefixes]
    common = os.path.commonpath(paths).rstrip("/")
    return "file://" + common + "/"


def _container(prefix: str, target_options: dict[str, Any]) -> Any:
    """A virtual chunk container for ``prefix``, configured from the source filesystem's
    options where it reads them (an S3 endpoint, anonymous access)."""
    ic = _icechunk()
    scheme = urlsplit(prefix).scheme
    if scheme == "file":
        store = ic.local_filesystem_store(prefix.removeprefix("file://"))
    elif scheme in ("http", "https"):
        store = ic.http_store({"allow_http": "true"} if scheme == "http" else None)
    elif scheme == "s3":
        client = target_options.get("client_kwargs") or {}
        endpoint = target_options.get("endpoint_url") or client.get("endpoint_url")
        store = ic.s3_store(
            region=client.get("region_name") or target_options.get("region_name"),
            endpoint_url=endpoint,
            allow_http=bool(endpoint and endpoint.startswith("http://")),
            anonymous=bool(target_options.get("anon")),
            s3_compatible=endpoint is not None,
            force_path_style=endpoint is not None,
        )
    else:
        store = ic.gcs_store()
    return ic.VirtualChunkContainer(prefix, store)


def _covering(locations: list[str], prefixes: list[str]) -> tuple[str, ...]:
    """The container prefixes that ``locations`` fall under (each location must fall
    under one: the references are then written without Icechunk checking each one)."""
    used = set()
    for location in locations:
        prefix = next((p for p in prefixes if location.startswith(p)), None)
        if prefix is None:
            raise RuntimeError(
                f"exporting to Icechunk: no virtual chunk container covers {location}"
            )
        used.add(prefix)
    return tuple(sorted(used))


def _containers_needed(locations: list[str], existing: list[str]) -> list[str]:
    """Prefixes of the containers to add so that every location is covered."""
    uncovered = [loc for loc in locations if not any(loc.startswith(prefix) for prefix in existing)]
    local = [_container_prefix(loc) for loc in uncovered if loc.startswith("file://")]
    remote = {_container_prefix(loc) for loc in uncovered if not loc.startswith("file://")}
    out = sorted(remote)
    if local:
        out.append(_common_local_prefix(sorted(set(local))))
    return out


# -- checksums ---------------------------------------------------------------------------------


def _modified_at(spelled: str) -> datetime.datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(spelled)
    except (TypeError, ValueError):
        try:
            when = datetime.datetime.fromisoformat(spelled)
        except ValueError:
            return None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def checksum(url: str, version: FileVersion) -> dict[str, Any]:
    """The ``VirtualChunkSpec`` checksum arguments of a file at ``version``: its strong
    ETag, else its modification time (rounded up to the second: Icechunk compares whole
    seconds, and refuses a file modified after it).

    Raises
    ------
    ValueError
        If the file has neither (Icechunk could not refuse it once changed).
    """
    if version.strong_etag is not None:
        return {"etag_checksum": version.strong_etag}
    if version.mtime_ns is not None:
        seconds = -(-version.mtime_ns // 1_000_000_000)
        return {"last_updated_at_checksum": datetime.datetime.fromtimestamp(seconds, datetime.UTC)}
    if version.last_modified is not None:
        when = _modified_at(version.last_modified)
        if when is not None:
            return {"last_updated_at_checksum": when}
    raise ValueError(
        f"exporting to Icechunk: {url} has neither a strong ETag nor a modification time "
        f"({version}), so Icechunk could not refuse it once it changes"
    )


# -- what the repository holds -----------------------------------------------------------------


def _previous(
    repo: Any, branch: str, earlier: Callable[[str], CollectionState | None]
) -> tuple[CollectionState | None, str | None]:
    """The snapshot the branch's tip was exported from, or None and why everything is
    written again (None as the reason for a repository with no commit but its first)."""
    tip = repo.lookup_snapshot(repo.lookup_branch(branch))
    recorded = (tip.metadata or {}).get(COMMIT_KEY)
    if recorded is None:
        if tip.parent_id is None:
            return None, None  # a new repository: nothing to compare with
        return None, "the branch's last commit was not written by fsspec-virtual"
    if recorded.get("format") != EXPORT_FORMAT:
        return None, f"the branch was written in export format {recorded.get('format')}"
    ident = str(recorded.get("snapshot"))
    state = earlier(ident)
    if state is None:
        return None, (
            f"snapshot {ident[:13]}, which the branch holds, is neither kept in this "
            "process nor in the scan cache"
        )
    return state, None


# -- writing -----------------------------------------------------------------------------------


def _buffer(data: bytes) -> Any:
    from zarr.core.buffer import cpu

    return cpu.Buffer.from_bytes(data)


def _set_documents(store: Any, documents: dict[str, bytes]) -> None:
    async def write() -> None:
        for key in sorted(documents, key=lambda k: k.count("/")):  # parents first
            await store.set(key, _buffer(documents[key]))

    run_blocking(write())


def _documents(manifest: Manifest) -> dict[str, bytes]:
    """The Zarr v3 documents, the root's consolidated metadata left out (Icechunk lists
    its own nodes; a copy would go stale with the first change made by others)."""
    from ..metadata_v3 import render_metadata_v3

    documents = dict(render_metadata_v3(manifest))
    root = json.loads(documents["zarr.json"])
    if "consolidated_metadata" in root:
        root.pop("consolidated_metadata")
        documents["zarr.json"] = json.dumps(root, separators=(",", ":")).encode()
    return documents


def _file_codes(
    urls: tuple[str, ...], versions: dict[str, FileVersion], table: dict[Any, int]
) -> np.ndarray:
    """An integer per URL-table entry naming (url, version): equal codes in two
    manifests are the same file at the same version."""
    codes = [table.setdefault((url, versions.get(url)), len(table)) for url in urls]
    return np.asarray([*codes, -1], dtype=np.int64)  # [-1]: what a negative file id indexes


_LAYOUT = ("chunks", "dtype", "compressor", "filters", "order")


def _same_layout(old: VirtualArray, new: VirtualArray) -> bool:
    """Whether a chunk key of ``old`` means the same region, encoded the same way, in
    ``new`` (then chunks can be compared one by one)."""
    return len(old.meta.shape) == len(new.meta.shape) and all(
        getattr(old.meta, name) == getattr(new.meta, name) for name in _LAYOUT
    )


@dataclass
class _Plan:
    """What one array needs written and deleted."""

    references: list[tuple[tuple[int, ...], int, int, int]]  # index, file id, offset, length
    real: list[tuple[int, ...]]
    deleted: list[tuple[int, ...]]
    unchanged: int


def _indices(mask: np.ndarray) -> Iterator[tuple[int, ...]]:
    if mask.ndim == 0:
        if bool(mask):
            yield ()
        return
    for index in zip(*mask.nonzero()):
        yield tuple(int(i) for i in index)


def _plan_array(
    new: VirtualArray,
    old: VirtualArray | None,
    new_codes: np.ndarray,
    old_codes: np.ndarray | None,
) -> _Plan:
    """What array ``new`` needs written where the repository holds ``old`` (None: nothing
    to compare with). An array whose codecs have no Zarr v3 spelling is declared without
    codecs (:func:`~fsspec_virtual.codecs_v3.store_decodes`): its chunks are written
    decoded, as real chunks, never as references to encoded bytes."""
    grid = new.grid
    fid = grid.file_id
    decoded = store_decodes(new.meta, False)
    virtual = fid >= 0
    real = (fid == INLINE) | (fid == COMPUTED)
    deleted: list[tuple[int, ...]] = []
    same = np.zeros(fid.shape, dtype=bool)
    if old is not None and old_codes is not None:
        before = old.grid
        common = tuple(slice(0, min(a, b)) for a, b in zip(fid.shape, before.shape))
        nf, of = fid[common], before.file_id[common]
        same_ref = (
            (nf >= 0)
            & (of >= 0)
            & (new_codes[nf] == old_codes[of])
            & (grid.offset[common] == before.offset[common])
            & (grid.length[common] == before.length[common])
        )
        same[common] = same_ref
        gone = np.zeros(before.shape, dtype=bool)
        gone[common] = (nf == MISSING) & (of != MISSING)
        outside = np.ones(before.shape, dtype=bool)
        outside[common] = False
        gone |= outside & (before.file_id != MISSING)
        deleted = list(_indices(gone))
    if decoded:
        real |= virtual & ~same
        virtual = np.zeros(fid.shape, dtype=bool)
    references = [
        (index, int(fid[index]), int(grid.offset[index]), int(grid.length[index]))
        for index in _indices(virtual & ~same)
    ]
    return _Plan(references, list(_indices(real)), deleted, int(same.sum()))


async def _real_chunks(
    state: CollectionState,
    store: Any,
    path: str,
    array: VirtualArray,
    indices: list[tuple[int, ...]],
    compare: Callable[[tuple[int, ...]], bool],
    reading: ReadOptions,
) -> tuple[int, int]:
    """Compute and write the real chunks ``indices`` of ``path`` (encoded as the store
    serves them, or decoded where the v3 document declares no codecs); a chunk that
    ``compare`` says the repository may hold already is read back and left alone if its
    bytes are the same. Returns (written, unchanged)."""
    gate = asyncio.Semaphore(_CONCURRENT_CHUNKS)
    grid = array.grid
    decode: Decode = "store" if store_decodes(array.meta, False) else "client"

    async def one(index: tuple[int, ...]) -> bool:
        async with gate:
            fid = int(grid.file_id[index])
            source: ChunkSource
            if fid == INLINE:
                source = InlineSource(grid.inline[int(grid.offset[index])], array)
            elif fid == COMPUTED:
                source = ComputedSource(path, array, index)
            else:
                url = state.manifest.urls[fid]
                offset, length = int(grid.offset[index]), int(grid.length[index])
                source = RangeSource(url, offset, length, array)
            data = await read_source(state, source, None, None, decode, reading)
            key = chunk_key(path, index)
            if compare(index):
                from zarr.core.buffer import default_buffer_prototype

                held = await store.get(key, default_buffer_prototype())
                if held is not None and held.to_bytes() == data:
                    return False
            await store.set(key, _buffer(data))
            return True

    written = await asyncio.gather(*(one(index) for index in indices))
    return sum(written), len(written) - sum(written)


def to_icechunk(
    state: CollectionState,
    repo_or_storage: Any,
    *,
    branch: str = "main",
    message: str | None = None,
    reading: ReadOptions,
    earlier: Callable[[str], CollectionState | None],
) -> IcechunkExport:
    """Write snapshot ``state`` to ``branch`` of an Icechunk repository and commit.

    Parameters
    ----------
    state
        The snapshot to export.
    repo_or_storage
        An ``icechunk.Repository``, or an ``icechunk.Storage`` (the repository there is
        opened, or created if there is none).
    branch
        The branch to commit to (created at ``main``'s tip if it does not exist).
    message
        The commit message (default: names the snapshot and its number of files).
    reading
        How source chunks are read, for computed chunks.
    earlier
        Finds a snapshot by identity (None if it cannot be had): the one the branch was
        exported from, to write only what differs.

    Returns
    -------
    IcechunkExport
        What was written.

    Raises
    ------
    ImportError
        If icechunk is not installed.
    NotImplementedError
        If a source cannot be a virtual chunk Icechunk reads (its protocol, or an HTTP
        port the installed icechunk drops).
    ValueError
        If a source has no version Icechunk could check (neither ETag nor modification
        time).
    """
    ic = _icechunk()
    manifest = state.manifest
    protocol = state.spec.target_protocol
    used = sorted(
        {int(i) for a in manifest.arrays.values() for i in np.unique(a.grid.file_id) if i >= 0}
    )
    locations = {i: _location(manifest.urls[i], protocol) for i in used}
    if protocol in ("http", "https"):
        for location in set(locations.values()):
            _check_port(location)
    checksums = {i: checksum(manifest.urls[i], state.versions[manifest.urls[i]]) for i in used}
    documents = _documents(manifest)  # refuses what Zarr v3 cannot spell, before any write

    repo = _repository(ic, repo_or_storage)
    existing = list((repo.config.virtual_chunk_containers or {}).keys())
    added = _containers_needed(sorted(set(locations.values())), existing)
    if added:
        config = repo.config
        for prefix in added:
            config.set_virtual_chunk_container(_container(prefix, state.spec.target_options))
        repo = repo.reopen(config=config)
        repo.save_config()
    prefixes = _covering(sorted(set(locations.values())), [*existing, *added])
    if branch not in repo.list_branches():
        repo.create_branch(branch, repo.lookup_branch("main"))

    previous, rewritten = _previous(repo, branch, earlier)
    session = repo.writable_session(branch)
    store = session.store
    full = previous is None
    if full and rewritten is not None:
        run_blocking(store.clear())

    counts = run_blocking(
        _write(state, store, documents, previous, locations, checksums, reading, ic)
    )
    if not session.has_uncommitted_changes:
        tip = repo.lookup_branch(branch)
        return IcechunkExport(tip, branch, state.id, False, *counts, rewritten, prefixes)
    recorded = {
        "format": EXPORT_FORMAT,
        "snapshot": state.id,
        "files": [[f.path, f.version.to_list()] for f in state.files],
        "references": counts[0],
        "chunks": counts[1],
        "deleted": counts[2],
    }
    text = message or f"fsspec-virtual: snapshot {state.id[:13]} of {len(state.files)} file(s)"
    commit = session.commit(text, metadata={COMMIT_KEY: recorded})
    return IcechunkExport(commit, branch, state.id, True, *counts, rewritten, prefixes)


def _repository(ic: Any, repo_or_storage: Any) -> Any:
    if isinstance(repo_or_storage, ic.Repository):
        return repo_or_storage
    if isinstance(repo_or_storage, ic.Storage):
        if ic.Repository.exists(repo_or_storage):
            return ic.Repository.open(repo_or_storage)
        return ic.Repository.create(repo_or_storage)
    raise TypeError(
        "to_icechunk needs an icechunk.Repository or an icechunk.Storage, "
        f"not {type(repo_or_storage).__name__}"
    )


async def _write(
    state: CollectionState,
    store: Any,
    documents: dict[str, bytes],
    previous: CollectionState | None,
    locations: dict[int, str],
    checksums: dict[int, dict[str, Any]],
    reading: ReadOptions,
    ic: Any,
) -> tuple[int, int, int, int, int]:
    """Write what differs from ``previous`` (everything if None); returns the counts
    (references, chunks, deleted, documents, unchanged)."""
    from zarr.core.buffer import default_buffer_prototype

    manifest = state.manifest
    old_manifest = previous.manifest if previous is not None else None
    deleted = documents_written = unchanged = references = chunks = 0

    table: dict[Any, int] = {}
    new_codes = _file_codes(manifest.urls, state.versions, table)
    old_codes = None
    olds: dict[str, VirtualArray] = {}
    if old_manifest is not None and previous is not None:
        old_codes = _file_codes(old_manifest.urls, previous.versions, table)
        # nodes that are gone, or arrays whose chunk keys mean something else now
        gone = [
            path
            for path, old in old_manifest.arrays.items()
            if path not in manifest.arrays or not _same_layout(old, manifest.arrays[path])
        ]
        gone += [p for p in old_manifest.groups if p and p not in manifest.groups]
        for path in sorted(gone, key=lambda p: -p.count("/")):
            await store.delete_dir(path)
            deleted += 1
        olds = {p: a for p, a in old_manifest.arrays.items() if p not in gone}
    plans = {
        path: _plan_array(array, olds.get(path), new_codes, old_codes)
        for path, array in manifest.arrays.items()
    }
    # chunks that no longer exist go before the documents: a smaller shape makes the
    # chunks beyond it invalid keys
    for path, plan in plans.items():
        for index in plan.deleted:
            await store.delete(chunk_key(path, index))
        deleted += len(plan.deleted)

    for key in sorted(documents, key=lambda k: k.count("/")):  # parents first
        if old_manifest is not None:
            held = await store.get(key, default_buffer_prototype())
            if held is not None and json.loads(held.to_bytes()) == json.loads(documents[key]):
                continue
        await store.set(key, _buffer(documents[key]))
        documents_written += 1

    for path, array in manifest.arrays.items():
        plan = plans[path]
        unchanged += plan.unchanged
        if plan.references:
            specs = [
                ic.VirtualChunkSpec(list(index), locations[fid], offset, length, **checksums[fid])
                for index, fid, offset, length in plan.references
            ]
            # every location is under a container (_covering): Icechunk's own check of
            # each reference would cost as much as writing it
            store.set_virtual_refs(path, specs, validate_containers=False)
            references += len(specs)
        if plan.real:
            old = olds.get(path)
            old_grid = old.grid if old is not None else None
            # the old chunks written real (a reference is never read back: its source
            # may have changed, and reading it needs the container authorized)
            old_decoded = old is not None and store_decodes(old.meta, False)

            def held_maybe(
                index: tuple[int, ...], grid: Any = old_grid, decoded: bool = old_decoded
            ) -> bool:
                if grid is None or any(i >= n for i, n in zip(index, grid.shape)):
                    return False
                fid = int(grid.file_id[index])
                return fid in (INLINE, COMPUTED) or (decoded and fid >= 0)

            written, same = await _real_chunks(
                state, store, path, array, plan.real, held_maybe, reading
            )
            chunks += written
            unchanged += same
    return references, chunks, deleted, documents_written, unchanged
