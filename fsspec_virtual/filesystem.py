"""``VirtualZarrFileSystem``: the fsspec face of a virtual Zarr store (protocol ``virtualzarr``).

A thin shell: it turns fsspec calls into key lookups (:mod:`fsspec_virtual.keys`) on the
shared collection state (:mod:`fsspec_virtual.state`) and reads (:mod:`fsspec_virtual.reader`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.chained import ChainedFileSystem
from fsspec.spec import AbstractBufferedFile

from .combine import CombineOptions
from .errors import AmbiguousKeyError, ReadOnlyError, StaleSourceError
from .export.kerchunk import DEFAULT_INLINE_COMPUTED, DEFAULT_RECORD_SIZE
from .format_probe import FormatProbes
from .keys import (
    ChunkSource,
    StoreKey,
    ZarrFormat,
    children,
    choose_reading,
    files_below,
    resolve_key,
)
from .options import from_json_safe, redacted, redacted_text, to_json_safe
from .readahead import DEFAULT_READ_AHEAD, check_read_ahead, note_chunk_read
from .reader import DEFAULT_READ_OPTIONS, ReadOptions
from .report import ScanReport, describe
from .scan import scan_options as merged_scan_options
from .scan_cache import ScanCache
from .scheduling import Progress, ScanSettings
from .serving import (
    Decode,
    check_decode,
    check_zarr_format,
    read_source,
    read_sources,
    served_metadata,
    served_size,
)
from .state import (
    CollectionSpec,
    CollectionState,
    OnError,
    get_state,
    get_state_async,
    peek_state,
    refresh_state,
    refresh_state_async,
    resolve_snapshot,
    resolve_snapshot_async,
)

if TYPE_CHECKING:
    from .export.icechunk import IcechunkExport
    from .export.kerchunk import KerchunkExport

__all__ = ["VirtualZarrFileSystem"]


@dataclass(frozen=True)
class Changes:
    """What a :meth:`VirtualZarrFileSystem.refresh` found.

    Attributes
    ----------
    added, changed, removed
        The files (paths) that joined, were rewritten, or left the collection.
    snapshot
        The snapshot the store serves now.
    """

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    snapshot: CollectionState

    @classmethod
    def between(cls, before: CollectionState | None, after: CollectionState) -> Changes:
        """The difference of two snapshots' files (all added if there was none before)."""
        old = before.versions if before is not None else {}
        new = after.versions
        return cls(
            tuple(p for p in new if p not in old),
            tuple(p for p in new if p in old and old[p] != new[p]),
            tuple(p for p in old if p not in new),
            after,
        )

    @property
    def files(self) -> tuple[Any, ...]:
        """The snapshot's files (as :attr:`CollectionState.files`)."""
        return self.snapshot.files

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def __repr__(self) -> str:
        return redacted_text(
            f"<refresh: {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.removed)} removed; snapshot {self.snapshot.id[:13]} of "
            f"{len(self.snapshot.files)} file(s)>"
        )


def _spelled(value: Any) -> Any:
    """Paths (``pathlib``) as the strings JSON spells (a source path may be one)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_spelled(v) for v in value]
    return value


class VirtualZarrFileSystem(AsyncFileSystem, ChainedFileSystem):
    """A read-only Zarr store (format 2, or 3 on request) over a collection of
    NetCDF4/HDF5/NetCDF3 files.

    Construction does no I/O: the files are listed and scanned on first access, and the
    result is shared by every instance with the same arguments in the process.

    Parameters
    ----------
    path
        A directory, a glob, a file, or a list of them, as URLs or as paths on the
        ``target_protocol`` filesystem. A directory's own files are used (not its
        subdirectories'); use a ``**`` glob to recurse.
    concat_dim
        The dimension(s) to concatenate the files along: a name or a list of names.
        Default: inferred from the coordinate values that differ between files.
    combine
        ``"by_coords"`` (default: files placed by their coordinate values, as
        ``xr.open_mfdataset(combine="by_coords")``) or ``"nested"`` (files without
        coordinates along a ``concat_dim`` ordered by natural file-name order).
    join
        ``"outer"`` (default): a variable missing from some files along a concat
        dimension is served missing (NaN) there; ``"exact"``: such collections are refused.
    coords_from_path
        Dimension -> a regex with one group (or a callable ``path -> value``) that finds a
        file's coordinate along it in its path, e.g. ``{"member": r"_r(\\d+)i"}``: a new
        dimension of the data variables where the files lack it.
    fo
        Alias of ``path``, as passed by fsspec's URL chaining (``virtualzarr::s3://...``).
    target_protocol, target_options
        The filesystem holding the files, and its options; inferred from the URL when
        not given.
    on_error
        ``"raise"`` (default) makes a file that cannot be scanned an error;
        ``"skip"`` leaves it out with a :class:`~fsspec_virtual.SkippedFileWarning`.
    max_workers
        Processes that scan files in parallel (default: the usable cores, at most 8);
        ``1`` scans in the calling process. Small collections are scanned in-process.
    chunk_cache_size
        Bytes of decoded source chunks kept for computing chunks (default 256 MiB,
        shared by the instances of one collection; ``0`` keeps none).
    cache
        Keep each file's scan in a persistent cache and reuse it while the file's size and
        modification time (or ETag) are unchanged (default True).
    cache_dir
        Where: a directory or any fsspec URL (default ``$XDG_CACHE_HOME/fsspec-virtual/scans``,
        ``~/.cache/fsspec-virtual/scans`` when ``XDG_CACHE_HOME`` is not set).
    cache_options
        Options of ``cache_dir``'s filesystem.
    listing_ttl
        Seconds after which an access lists the sources again (see :meth:`refresh`);
        default None: only :meth:`refresh` does.
    scheduler
        Where files are scanned: ``"processes"`` (default; ``max_workers`` processes),
        ``"dask"`` (the current ``distributed`` client, else Dask's default scheduler),
        or a ``distributed.Client``. The result is the same whatever scans.
    progress
        Show a progress bar (tqdm, on stderr) for scans lasting over a second; or a
        callable told (files scanned, files to scan). Default: silent.
    scan_options
        Options of the source filesystem's ``open`` for scanning remote files, over the
        defaults (``block_size`` 2 MiB, ``cache_type`` ``"blockcache"``, at most 32
        blocks kept).
    max_gap, max_block
        Chunk reads of one file closer than ``max_gap`` bytes (default 64 KiB) are merged
        into one request, up to ``max_block`` bytes (default 32 MiB).
    max_concurrency
        Requests to the source in flight at once (default 16).
    decode
        Who decodes compressed chunks: ``"client"`` (default: chunks are passed through
        as the files hold them, and zarr decodes them) or ``"store"`` (the store decodes
        them, batched on every core, and the arrays' ``.zarray`` declare no codecs, their
        ``zarr.json`` only ``bytes``): for readers in this process; string arrays are
        passed through either way.
    zarr_format
        The Zarr format served: ``2`` (default: ``.zgroup``/``.zarray``/``.zattrs`` and
        consolidated ``.zmetadata``, chunk keys ``t2m/17.0.0``) or ``3`` (``zarr.json``
        per node, consolidated inline in the root's, chunk keys ``t2m/c/17/0/0``). Both
        read the same values from the same byte ranges; in format 3 an array whose codec
        pipeline has no v3 spelling is served decoded by the store.
    read_ahead
        Remote sources only: once a reader has asked for three consecutive chunks of an
        array, the next ones are read before they are asked for, at most this many bytes
        held at once (default 64 MiB, shared by the stores of one event loop; 0: never).
        What is read ahead belongs to this store's snapshot and is checked against the
        scanned version like any read.
    cache_secret
        Sign the persistent cache's entries with this secret (HMAC-SHA256) and use only
        entries signed with it: for caches that people you do not trust can write.
    snapshot
        The identity of the snapshot to serve (written by :meth:`to_json` and pickles, so
        that every copy of an opened store serves the same files at the same versions);
        default: the collection's current snapshot when first accessed.
    **kwargs
        Passed to :class:`fsspec.asyn.AsyncFileSystem` (``asynchronous``, ``loop``).
    """

    protocol = "virtualzarr"
    root_marker = ""
    #: Every construction is a new store, pinned to a snapshot at its first access (and
    #: cheap: snapshots are kept per process, see :mod:`fsspec_virtual.state`)
    cachable = False

    def __init__(
        self,
        path: str | Sequence[str] | None = None,
        concat_dim: str | Sequence[str] | None = None,
        *,
        combine: str = "by_coords",
        join: str = "outer",
        coords_from_path: dict[str, Any] | None = None,
        fo: str | Sequence[str] | None = None,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        on_error: OnError = "raise",
        max_workers: int | None = None,
        chunk_cache_size: int | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        cache_options: dict[str, Any] | None = None,
        listing_ttl: float | None = None,
        scheduler: Any = "processes",
        progress: bool | Progress = False,
        scan_options: dict[str, Any] | None = None,
        max_gap: int = DEFAULT_READ_OPTIONS.max_gap,
        max_block: int = DEFAULT_READ_OPTIONS.max_block,
        max_concurrency: int = DEFAULT_READ_OPTIONS.concurrency,
        decode: Decode = "client",
        zarr_format: ZarrFormat = 2,
        read_ahead: int = DEFAULT_READ_AHEAD,
        cache_secret: str | None = None,
        snapshot: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        target_options = from_json_safe(target_options)
        scheduler = from_json_safe(scheduler)
        progress = from_json_safe(progress)
        coords_from_path = from_json_safe(coords_from_path)
        # what a pickle (to a Dask worker, say) carries: the options themselves, never
        # references valid in this process only; a process that unpickles a store scans
        # (if it must) on its own, with no progress bar
        self._portable_options = {
            "target_options": target_options,
            "coords_from_path": coords_from_path,
            "scheduler": "processes",
            "progress": False,
        }
        source = path if path is not None else fo
        if source is None:
            raise TypeError("VirtualZarrFileSystem needs a path (a directory, glob, file or list)")
        combining = CombineOptions.from_arguments(concat_dim, combine, join, coords_from_path)
        self._spec = CollectionSpec.from_arguments(
            source, combining, target_protocol, target_options, on_error
        )
        self._scanning = ScanSettings(
            max_workers,
            scheduler,
            progress,
            merged_scan_options(scan_options),
        )
        self._reading = ReadOptions(max_gap, max_block, max_concurrency)
        self._decode = check_decode(decode)
        self._format = check_zarr_format(zarr_format)
        self._read_ahead = check_read_ahead(read_ahead)
        if chunk_cache_size is not None and chunk_cache_size < 0:
            raise ValueError(f"chunk_cache_size must be >= 0, not {chunk_cache_size}")
        self._chunk_cache_size = chunk_cache_size
        self._scan_cache = ScanCache(cache_dir, cache_options, cache_secret) if cache else None
        self._listing_ttl = listing_ttl
        self._fixed_snapshot = snapshot
        self._pinned: CollectionState | None = None
        self._probes = FormatProbes(self._format)
        # Only under URL chaining (fsspec's url_to_fs passes fo=) do clients address keys
        # below the source path itself ("/data/*.nc/t2m/.zarray"); a path= never prefixes keys.
        self._chained_root = fo.strip("/") if path is None and isinstance(fo, str) else None

    def __repr__(self) -> str:
        spec, state = self._spec, self._pinned
        where = ", ".join(spec.paths[:3]) + (", ..." if len(spec.paths) > 3 else "")
        seen = (
            f"snapshot {state.id[:13]}: {len(state.files)} file(s), "
            f"{len(state.manifest.arrays)} array(s)"
            if state is not None
            else "not scanned yet"
        )
        return redacted_text(f"<VirtualZarrFileSystem {spec.target_protocol}: {where} ({seen})>")

    def __reduce__(self) -> tuple[Any, ...]:
        from fsspec.spec import make_instance

        options = self._pinned_options(dict(self.storage_options))
        for name, value in self._portable_options.items():
            if name in options:
                options[name] = value
        return make_instance, (type(self), self.storage_args, options)

    def _pinned_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` naming the snapshot a copy of this store must serve: the one it
        serves now (unless ``listing_ttl`` says a new store should list again)."""
        options.pop("snapshot", None)
        pinned = self._pinned
        if pinned is not None and (self._fixed_snapshot or not self._stale(pinned)):
            options["snapshot"] = pinned.id
        elif self._fixed_snapshot:
            options["snapshot"] = self._fixed_snapshot
        return options

    def to_dict(self, *, include_password: bool = True) -> dict[str, Any]:
        """The JSON form of the filesystem: its arguments, as fsspec records them.

        Arguments passed as ``None`` are dropped (``None`` is every option's default), as
        fsspec's encoder cannot write ``None`` and zarr round-trips us through JSON.
        Option objects JSON cannot spell (a Dask client, an aiohttp timeout) are written
        as references valid in this process (see :mod:`fsspec_virtual.options`);
        ``include_password=False`` replaces credentials by ``"***"``.
        """
        from fsspec.json import FilesystemJSONEncoder

        encoder = FilesystemJSONEncoder()
        options = {k: _spelled(v) for k, v in self.storage_options.items() if v is not None}
        options = self._pinned_options(options)
        if not include_password:
            options = redacted(options)
        options = to_json_safe(options)
        cls = type(self)
        args = [_spelled(a) for a in self.storage_args]
        return {
            "cls": f"{cls.__module__}:{cls.__name__}",
            "protocol": self.protocol,
            "args": encoder.make_serializable(redacted(args, include_password)),
            **encoder.make_serializable(options),
        }

    # -- keys -------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: str) -> str:  # type: ignore[override]
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        if isinstance(path, StoreKey):
            return path  # a key already, perhaps undecided: fsspec's path helpers keep it so
        path = str(path)
        if path.startswith("virtualzarr://"):
            path = path[len("virtualzarr://") :]
        return path.strip("/")

    def _key(self, path: str, state: CollectionState | None = None) -> StoreKey:
        """The store key ``path`` names.

        Under URL chaining (the instance was given ``fo=``), a path below the chained root
        names the key below it; unless only the path itself, read as a key, names something
        in the store (``fs.get_mapper("")`` on ``fo="/data"`` with a variable ``data``).
        Where both readings name something, :class:`AmbiguousKeyError`. Telling them apart
        needs the collection: a coroutine asking before it was built gets an undecided
        :class:`StoreKey`, which :func:`resolve_key` decides.
        """
        if isinstance(path, StoreKey):
            if path.other is None:
                return path
            below, whole = str(path), path.other
        else:
            whole = self._strip_protocol(path)
            root = self._chained_root
            if not root or not (whole == root or whole.startswith(root + "/")):
                return StoreKey(whole)
            below = whole[len(root) :].lstrip("/")
        state = state or self._pinned
        if state is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a synchronous caller (open): building now blocks no loop
                state = self.collection()
            else:
                return StoreKey(below, whole)
        return choose_reading(state.manifest, self._metadata(state), below, whole, self._format)

    def _metadata(self, state: CollectionState) -> dict[str, bytes]:
        """The metadata documents this store serves (its format and decode mode)."""
        return served_metadata(state, self._decode, self._format)

    def _is_node(self, state: CollectionState, path: str) -> bool:
        """Whether ``path`` names a group or an array of the store (either reading of an
        ambiguous chained path counts: the ambiguity is raised where a key is read)."""
        try:
            key = self._key(path, state)
        except AmbiguousKeyError:
            return True
        return key in state.manifest.groups or key in state.manifest.arrays

    def _named(self, path: str, key: str) -> str:
        """``key`` spelled as the caller spelled ``path``: under its chained root or slash.

        Clients (zarr's ``FsspecStore.list_dir``) strip the prefix they passed from the
        names ``ls`` returns, so names must carry that prefix back.
        """
        spelled = str(path)
        if spelled.startswith("virtualzarr://"):
            spelled = spelled[len("virtualzarr://") :]
        spelled = spelled.rstrip("/")
        own = self._key(path)
        if not spelled.endswith(own):  # a decided StoreKey: the caller spelled the key
            return key
        base = spelled[: len(spelled) - len(own)] if own else spelled
        if not base:
            return key
        if not key:
            return base.rstrip("/") or base
        return base + key if base.endswith("/") else f"{base}/{key}"

    async def _state(self) -> CollectionState:
        """The snapshot this store serves: pinned at its first access (see :meth:`refresh`)."""
        pinned = self._pinned
        if pinned is not None and not self._moves(pinned):
            return pinned
        spec, settings, cache = self._spec, self._scanning, self._scan_cache
        if pinned is None and self._fixed_snapshot:
            ident = self._fixed_snapshot
            return self._pin(await resolve_snapshot_async(spec, ident, settings, cache))
        state = peek_state(spec)
        if state is None:
            state = await get_state_async(spec, settings, cache)
        elif self._stale(state):
            state = await refresh_state_async(spec, settings, cache, state)
        return self._pin(state)

    def _pin(self, state: CollectionState) -> CollectionState:
        state = self._configured(state)
        self._pinned = state
        return state

    def _stale(self, state: CollectionState) -> bool:
        ttl = self._listing_ttl
        return ttl is not None and time.monotonic() - state.built_at > ttl

    def _moves(self, pinned: CollectionState) -> bool:
        """Whether an access lists the sources again: only for a blocking store (the one a
        user holds) whose ``listing_ttl`` has passed. Asynchronous stores (the ones zarr
        and xarray read through) and stores given a ``snapshot`` never change under the
        arrays opened on them."""
        return not self.asynchronous and not self._fixed_snapshot and self._stale(pinned)

    def refresh(self) -> Changes:
        """List the sources again: new files join the dataset (in coordinate order), changed
        files are scanned again, deleted ones leave it; unchanged files are not rescanned.

        This store serves the new snapshot from now on, and so do stores opened from it
        after (``xr.open_zarr(fs.get_mapper(""))``); datasets and arrays opened before keep
        reading the snapshot they were opened on, unchanged. A refresh that fails (a new
        file that cannot be combined) raises, and the store keeps its snapshot.

        Returns
        -------
        Changes
            The files added, changed and removed, and the new snapshot.
        """
        before = self._pinned or peek_state(self._spec)  # what it served, or would have
        state = refresh_state(self._spec, self._scanning, self._scan_cache)
        self._fixed_snapshot = None
        return Changes.between(before, self._pin(state))

    def _configured(self, state: CollectionState) -> CollectionState:
        if self._chunk_cache_size is not None and state.cache.capacity != self._chunk_cache_size:
            state.cache.capacity = self._chunk_cache_size
            if self._chunk_cache_size == 0:
                state.cache.clear()
        return state

    @property
    def zarr_format(self) -> ZarrFormat:
        """The Zarr format this store serves (2 or 3)."""
        return self._format

    @property
    def scan_cache(self) -> ScanCache | None:
        """The persistent scan cache this store reads and fills (None with ``cache=False``)."""
        return self._scan_cache

    def collection(self) -> CollectionState:
        """The snapshot this store serves (files, combined manifest, metadata); lists and
        scans if needed."""
        pinned = self._pinned
        if pinned is not None and not self._moves(pinned):
            return pinned
        spec, settings, cache = self._spec, self._scanning, self._scan_cache
        if pinned is None and self._fixed_snapshot:
            return self._pin(resolve_snapshot(spec, self._fixed_snapshot, settings, cache))
        state = peek_state(spec)
        if state is None:
            state = get_state(spec, settings, cache)
        elif self._stale(state):
            state = refresh_state(spec, settings, cache, state)
        return self._pin(state)

    def report(self) -> ScanReport:
        """How each variable is served (passthrough, inline, skipped and why); scans if needed."""
        state = self.collection()
        return describe(state.manifest, len(state.files), state.scan_cost)

    def to_kerchunk(
        self,
        url: str,
        format: str | None = None,
        *,
        inline_computed: int = DEFAULT_INLINE_COMPUTED,
        computed_to: str | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        computed_options: dict[str, Any] | None = None,
        record_size: int = DEFAULT_RECORD_SIZE,
    ) -> KerchunkExport:
        """Write this store's snapshot as kerchunk references (JSON, or Parquet), which
        ``fsspec.filesystem("reference", fo=url)`` reads as this store serves it: passthrough
        chunks as byte ranges of the sources, inline chunks inline, computed chunks inline
        when small, else to a side store (``computed_to``), else their variable is left out
        (reported, with an :class:`~fsspec_virtual.ExportIncompleteWarning`). See
        :func:`fsspec_virtual.export.kerchunk.to_kerchunk`.

        Parameters
        ----------
        url
            A JSON file or a Parquet directory (any fsspec URL).
        format
            ``"json"`` or ``"parquet"`` (default: Parquet for a URL ending ``.parq`` or
            ``.parquet``, else JSON).
        inline_computed
            Computed chunks of at most this many bytes (decoded) are written inline
            (default 64 KiB).
        computed_to
            A directory (any fsspec URL) for larger computed chunks, one file per chunk.
        overwrite
            Replace an existing export (default: :class:`~fsspec_virtual.ExportExistsError`).
        storage_options, computed_options
            Options of the filesystems of ``url`` and ``computed_to``.
        record_size
            References per Parquet file.

        Returns
        -------
        KerchunkExport
            What was written, what was left out and why, and the reader's options.
        """
        from .export.kerchunk import to_kerchunk

        return to_kerchunk(
            self.collection(),
            url,
            format=format,
            inline_computed=inline_computed,
            computed_to=computed_to,
            overwrite=overwrite,
            storage_options=storage_options,
            computed_options=computed_options,
            record_size=record_size,
            reading=self._reading,
        )

    def to_icechunk(
        self, repo_or_storage: Any, branch: str = "main", message: str | None = None
    ) -> IcechunkExport:
        """Commit this store's snapshot to a branch of an Icechunk repository: passthrough
        chunks as virtual references (checked by the source's ETag or modification time),
        computed and inline chunks as real chunks, metadata as Zarr v3. A second export
        after :meth:`refresh` writes only what changed. Needs ``pip install
        fsspec-virtual[icechunk]``; see :func:`fsspec_virtual.export.icechunk.to_icechunk`.

        Parameters
        ----------
        repo_or_storage
            An ``icechunk.Repository``, or an ``icechunk.Storage`` (opened, or created).
        branch
            The branch to commit to (created at ``main``'s tip if it does not exist).
        message
            The commit message (default: names the snapshot).

        Returns
        -------
        IcechunkExport
            The commit, what it wrote, and the container prefixes readers authorize.
        """
        from .export.icechunk import to_icechunk

        return to_icechunk(
            self.collection(),
            repo_or_storage,
            branch=branch,
            message=message,
            reading=self._reading,
            earlier=self._known_snapshot,
        )

    def _known_snapshot(self, ident: str) -> CollectionState | None:
        """Snapshot ``ident`` of this collection if it can still be had (kept in this
        process or in the scan cache), else None."""
        try:
            return resolve_snapshot(self._spec, ident, self._scanning, self._scan_cache)
        except StaleSourceError:
            return None

    # -- listing ----------------------------------------------------------------------

    def _children(self, state: CollectionState, key: str) -> list[dict[str, Any]] | None:
        """Entries directly below a directory key (a group, an array, a level of v3 chunk
        keys), or None if ``key`` is none."""
        found = children(
            state.manifest, self._metadata(state), key, self._decode == "store", self._format
        )
        if found is None:
            return None
        return [
            {"name": n, "size": size, "type": "directory" if is_dir else "file"}
            for n, size, is_dir in found
        ]

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        state = await self._state()
        key = self._key(path, state)
        entries = self._children(state, key)
        if entries is None:
            entries = [await self._info(path)]
        else:
            entries = [{**e, "name": self._named(path, e["name"])} for e in entries]
        return entries if detail else [e["name"] for e in entries]

    async def _find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any
    ) -> Any:
        """fsspec's ``find``; every file below a directory in one pass where fsspec's walk
        would list each level of the v3 chunk keys (``t2m/c/0/...``) on its own."""
        if self._format == 3 and maxdepth is None and not withdirs:
            state = await self._state()
            key = self._key(path, state)
            if self._children(state, key) is not None:
                decoded = self._decode == "store"
                files = files_below(
                    state.manifest, self._metadata(state), key, decoded, self._format
                )
                sizes = {self._named(path, name): size for name, size in files}
                if kwargs.get("detail"):
                    return {n: {"name": n, "size": sizes[n], "type": "file"} for n in sorted(sizes)}
                return sorted(sizes)
        return await super()._find(path, maxdepth=maxdepth, withdirs=withdirs, **kwargs)

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        state = await self._state()
        key = self._key(path, state)
        name = self._named(path, key)
        if key in state.manifest.groups or key in state.manifest.arrays:
            return {"name": name, "size": 0, "type": "directory"}
        source = resolve_key(state.manifest, self._metadata(state), key, self._format)
        if source is None:
            if self._format == 3 and self._children(state, key) is not None:
                return {"name": name, "size": 0, "type": "directory"}  # "t2m/c/3"
            raise FileNotFoundError(key)
        size = served_size(source, self._decode, self._format)
        if size is None:
            size = len(await self._read(state, source, None, None))
        return {"name": name, "size": size, "type": "file"}

    async def _read(
        self, state: CollectionState, source: ChunkSource, start: int | None, end: int | None
    ) -> bytes:
        return await read_source(
            state, source, start, end, self._decode, self._reading, self._format
        )

    # -- reading ----------------------------------------------------------------------

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        asked_at = self._probes.note(self._strip_protocol(path))
        state = await self._state()
        key = self._key(path, state)
        source = resolve_key(state.manifest, self._metadata(state), key, self._format)
        if source is None:
            await self._probes.refuse_other_format(
                self._strip_protocol(path), asked_at, lambda node: self._is_node(state, node)
            )
            raise FileNotFoundError(key)
        note_chunk_read(state, key, source, self._reading, self._read_ahead, self._format)
        return await self._read(state, source, start, end)

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: int | list[int | None] | None,
        ends: int | list[int | None] | None,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[bytes | BaseException]:
        n = len(paths)
        starts = starts if isinstance(starts, list) else [starts] * n
        ends = ends if isinstance(ends, list) else [ends] * n
        if len(starts) != n or len(ends) != n:
            raise ValueError("paths, starts and ends must have the same length")
        state = await self._state()
        metadata = self._metadata(state)
        results: list[bytes | BaseException] = [b""] * n
        found: list[tuple[ChunkSource, int | None, int | None]] = []
        targets: list[int] = []
        for i, (path, start, end) in enumerate(zip(paths, starts, ends)):
            key = self._key(path, state)
            source = resolve_key(state.manifest, metadata, key, self._format)
            if source is None:
                results[i] = FileNotFoundError(key)
            else:
                found.append((source, start, end))
                targets.append(i)
        read = await read_sources(state, found, self._decode, self._reading, self._format)
        for i, data in zip(targets, read):
            results[i] = data
        if on_error == "raise":
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    async def _cat(
        self, path: str | list[str], recursive: bool = False, on_error: str = "raise", **kwargs: Any
    ) -> bytes | dict[str, bytes | BaseException]:
        # Expand keys, not paths: a chained root may itself be a glob ("dir/*.nc").
        keys = [self._key(p) for p in ([path] if isinstance(path, str) else path)]
        paths = await self._expand_path(keys, recursive=recursive)
        paths = [p for p in paths if not await self._isdir(p)]
        results = await self._cat_ranges(paths, None, None, on_error="return")
        single = isinstance(path, str) and len(paths) == 1 and not self._is_pattern(keys[0])
        if on_error == "raise":
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if single:
            return results[0]  # type: ignore[return-value]
        out = dict(zip(paths, results))
        if on_error == "omit":
            out = {k: v for k, v in out.items() if not isinstance(v, BaseException)}
        return out

    @staticmethod
    def _is_pattern(path: str) -> bool:
        return any(c in path for c in "*?[")

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> VirtualFile:
        if "r" not in mode or "+" in mode:
            raise ReadOnlyError(f"virtualzarr is read-only: cannot open {path!r} in mode {mode!r}")
        return VirtualFile(self, self._key(path), mode=mode, **kwargs)

    # -- read-only --------------------------------------------------------------------

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError("virtualzarr is read-only: the store is computed from its source files")

    async def _refuse_async(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse()

    _pipe_file = _put_file = _rm_file = _rm = _cp_file = _refuse_async
    _mkdir = _makedirs = _mv = _refuse_async
    mkdir = makedirs = rmdir = touch = _refuse  # sync-only methods of AbstractFileSystem


class VirtualFile(AbstractBufferedFile):
    """A read-only file object over one key of a :class:`VirtualZarrFileSystem`."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=end)
