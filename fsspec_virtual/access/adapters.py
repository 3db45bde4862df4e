"""One adapter per protocol family: every read of a source file, checked against the
version it was scanned at.

An adapter reads byte ranges (:meth:`SourceAdapter.read_ranges`), opens files for a scan
(:meth:`SourceAdapter.open_for_scan`) and looks a file's version up now
(:meth:`SourceAdapter.current_version`); every check that keeps a changed file from being
read at its old offsets lives in the adapter of its protocol: local files (an ``fstat`` of
the descriptor read from), HTTP (:mod:`.http`), S3 (:mod:`.s3`), and any other fsspec
filesystem (a look at the file's ``info`` after each batch of reads).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..bridges import on_own_loop
from ..errors import RangeNotSupportedError, SourceReadError, StaleSourceError, VirtualZarrError
from .version import FileVersion

__all__ = [
    "Read",
    "SourceAdapter",
    "LocalAdapter",
    "GenericAdapter",
    "CheckedAnswersAdapter",
    "adapter_for",
    "described_error",
]

T = TypeVar("T")

#: Local reads this small in all are done on the event loop itself.
_INLINE_LOCAL_BYTES = 256 * 1024
#: Reads done by one worker-thread call, for blocking filesystems.
_READS_PER_THREAD_CALL = 8


@dataclass(frozen=True, slots=True)
class Read:
    """Bytes ``[start, end)`` of the source file ``url``, at ``version`` (None: unchecked,
    for files read before they were ever listed)."""

    url: str
    start: int
    end: int
    version: FileVersion | None = None


def _precondition_failed(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is a server's "412 Precondition Failed"."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if getattr(seen, "status", None) == 412:  # aiohttp.ClientResponseError
            return True
        response = getattr(seen, "response", None)  # botocore ClientError
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def described_error(url: str, error: BaseException) -> BaseException:
    """The error a failed read of ``url`` raises: never a bare ``FileNotFoundError`` (zarr
    would fill the chunk and serve it as data), always naming the file.

    A vanished file, or one whose version no longer matches, is stale; other failures (after
    the retries the source filesystem makes) are :class:`SourceReadError` s.
    """
    if isinstance(error, VirtualZarrError):
        return error
    if isinstance(error, FileNotFoundError):
        return StaleSourceError(url, f"it no longer exists: {error}")
    if _precondition_failed(error):
        return StaleSourceError(url, "it changed (the server refused the read's precondition)")
    if isinstance(error, Exception):
        return SourceReadError(url, f"{type(error).__name__}: {error}")
    return error


def check_length(read: Read, data: bytes) -> bytes:
    """``data`` unless it is longer than asked (the server ignored ``Range``); a shorter
    answer (the file ends before the range does) fails only the chunks beyond its end,
    when the reader splits it."""
    if len(data) > read.end - read.start:
        raise RangeNotSupportedError(read.url)
    return data


def reads_async(fs: AbstractFileSystem) -> bool:
    """Whether ``fs``'s coroutines can be awaited: an async filesystem, and not a wrapper
    (fsspec's ``DirFileSystem``) around a blocking one, whose coroutines do not exist."""
    if not (isinstance(fs, AsyncFileSystem) and fs.async_impl):
        return False
    inner = getattr(fs, "fs", None)
    return not isinstance(inner, AbstractFileSystem) or reads_async(inner)


class SourceAdapter:
    """Checked access to the files of one fsspec filesystem (the generic behaviour).

    Parameters
    ----------
    fs
        The source filesystem.
    """

    def __init__(self, fs: AbstractFileSystem) -> None:
        self.fs = fs

    # -- versions ---------------------------------------------------------------------

    def listed_version(self, path: str, info: dict[str, Any]) -> FileVersion:
        """The version of a file from its listing entry."""
        return FileVersion.from_info(info)

    def current_version(self, path: str) -> FileVersion:
        """The file's version now (asks the filesystem, bypassing its listing cache).

        Raises
        ------
        FileNotFoundError
            If the file no longer exists.
        """
        self.fs.invalidate_cache(path)
        return FileVersion.from_info(self.fs.info(path))

    async def _current_version_async(self, path: str) -> FileVersion:
        fs = self.fs
        if reads_async(fs) and fs.asynchronous is False:
            # on the filesystem's own loop (see read_ranges): its coroutines, not its sync face
            fs.invalidate_cache(path)
            return FileVersion.from_info(await fs._info(path))
        return await asyncio.to_thread(self.current_version, path)

    def check_current(self, path: str, version: FileVersion) -> None:
        """Raise :class:`StaleSourceError` unless the file is still at ``version``."""
        try:
            now = self.current_version(path)
        except FileNotFoundError as e:
            raise StaleSourceError(path, f"it no longer exists: {e}") from e
        if now != version:
            raise StaleSourceError(path, now.differences(version))

    # -- scans ------------------------------------------------------------------------

    def open_for_scan(self, path: str, version: FileVersion | None, **options: Any) -> Any:
        """The file opened for reading (``fs.open``), its reads failing where the protocol
        can tell that the file is no longer at ``version``."""
        try:
            return self.fs.open(path, mode="rb", **options)
        except Exception as e:
            raise described_error(path, e) from e

    @property
    def guards_reads(self) -> bool:
        """Whether every read through :meth:`open_for_scan` fails for a file that is no
        longer at the version given (else a scan must look at the file afterwards)."""
        return False

    def guards(self, version: FileVersion) -> bool:
        """:attr:`guards_reads` for a file at ``version``."""
        return False

    # -- ranges -----------------------------------------------------------------------

    async def read_ranges(
        self, reads: Sequence[Read], concurrency: int
    ) -> list[bytes | BaseException]:
        """The bytes of each read, or the error it raised (never a ``FileNotFoundError``)."""
        fs = self.fs
        if reads_async(fs):
            return await on_own_loop(fs, self._read_async(reads, concurrency))  # type: ignore[arg-type]
        return await self._read_in_threads(reads, concurrency)

    def read_ranges_at_once(self, reads: Sequence[Read]) -> list[bytes | BaseException] | None:
        """:meth:`read_ranges` done here and now if that blocks for less than a thread
        hand-off would cost (a few small ranges of local files), else None."""
        return None

    async def _read_async(
        self, reads: Sequence[Read], concurrency: int
    ) -> list[bytes | BaseException]:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(read: Read) -> bytes | BaseException:
            if read.start == read.end:
                return b""
            async with semaphore:
                try:
                    return check_length(read, await self.read_one_async(read))
                except Exception as e:
                    return described_error(read.url, e)

        results = list(await asyncio.gather(*(one(read) for read in reads)))
        return await self._checked_after(reads, results)

    async def read_one_async(self, read: Read) -> bytes:
        """One range, on the filesystem's own loop (the generic way: ``_cat_file``)."""
        return await self.fs._cat_file(read.url, start=read.start, end=read.end)  # type: ignore[attr-defined]

    async def _checked_after(
        self, reads: Sequence[Read], results: list[bytes | BaseException]
    ) -> list[bytes | BaseException]:
        """Generic filesystems send no precondition: each file read is looked up once after
        its reads, and all its results are refused if it is no longer the version scanned
        (one ``info`` per file and batch)."""
        versions = {(r.url, r.version) for r in reads if r.version is not None}
        if not versions:
            return results
        verdicts: dict[tuple[str, FileVersion], BaseException | None] = {}
        for url, version in versions:
            try:
                now = await self._current_version_async(url)
                stale = None if now == version else StaleSourceError(url, now.differences(version))
                verdicts[(url, version)] = stale
            except Exception as e:
                verdicts[(url, version)] = described_error(url, e)
        out = []
        for read, result in zip(reads, results):
            verdict = verdicts.get((read.url, read.version)) if read.version else None
            out.append(verdict if verdict is not None and isinstance(result, bytes) else result)
        return out

    def read_one_blocking(self, read: Read) -> bytes:
        """One range of a blocking filesystem."""
        return self.fs.cat_file(read.url, start=read.start, end=read.end)

    def _read_many_blocking(self, reads: Sequence[Read]) -> list[bytes | BaseException]:
        out: list[bytes | BaseException] = []
        for read in reads:
            if read.start == read.end:
                out.append(b"")
                continue
            try:
                out.append(check_length(read, self.read_one_blocking(read)))
            except Exception as e:
                out.append(described_error(read.url, e))
        return out

    async def _read_in_threads(
        self, reads: Sequence[Read], concurrency: int
    ) -> list[bytes | BaseException]:
        # a few worker-thread calls each doing several reads, rather than one thread
        # hand-off per chunk (which costs more than reading a small chunk)
        n_calls = max(1, min(concurrency, math.ceil(len(reads) / _READS_PER_THREAD_CALL)))
        slices = [list(reads[i::n_calls]) for i in range(n_calls)]
        done = await asyncio.gather(
            *(asyncio.to_thread(self._read_many_blocking, s) for s in slices)
        )
        out: list[bytes | BaseException] = [b""] * len(reads)
        for i, results in enumerate(done):
            out[i::n_calls] = results
        return await self._checked_after(reads, out)


GenericAdapter = SourceAdapter


class CheckedAnswersAdapter(SourceAdapter):
    """A protocol whose every answer is checked against the version asked for (a
    precondition sent, the answer's own version and range compared): nothing to look up
    after a batch, and a scan with a strong ETag needs no look afterwards either."""

    def guards(self, version: FileVersion) -> bool:
        return version.strong_etag is not None

    async def _checked_after(
        self, reads: Sequence[Read], results: list[bytes | BaseException]
    ) -> list[bytes | BaseException]:
        """Answers to reads sent with a strong ETag were checked as they came; the others
        (a weak ETag or none: the answer may carry nothing to check) are looked up after,
        as a generic filesystem's are."""
        loose = [i for i, r in enumerate(reads) if r.version and not self.guards(r.version)]
        if not loose:
            return results
        checked = await super()._checked_after(
            [reads[i] for i in loose], [results[i] for i in loose]
        )
        out = list(results)
        for i, result in zip(loose, checked):
            out[i] = result
        return out


def check_local(path: str, stat: os.stat_result, version: FileVersion) -> None:
    """Raise :class:`StaleSourceError` unless a local file's ``stat`` is ``version``."""
    now = FileVersion.from_stat(stat)
    if now != version:
        raise StaleSourceError(path, now.differences(version))


def read_local(read: Read) -> bytes:
    """One range of a local file, checked by an ``fstat`` of the very descriptor read
    from, before and after the read (about a microsecond each; ``os.pread``: no file
    object, no seek, any thread)."""
    fd = os.open(read.url, os.O_RDONLY)
    try:
        if read.version is not None:
            check_local(read.url, os.fstat(fd), read.version)
        data = os.pread(fd, read.end - read.start, read.start)
        if read.version is not None:
            # a write that lands during the read changes ctime before its bytes show
            check_local(read.url, os.fstat(fd), read.version)
        return data
    finally:
        os.close(fd)


class LocalAdapter(SourceAdapter):
    """Local files: versions from ``os.stat`` (size, mtime, inode, ctime), reads checked by
    an ``fstat`` of the descriptor they read from."""

    def listed_version(self, path: str, info: dict[str, Any]) -> FileVersion:
        return FileVersion.from_stat(os.stat(path))

    def current_version(self, path: str) -> FileVersion:
        return FileVersion.from_stat(os.stat(path))

    def open_for_scan(self, path: str, version: FileVersion | None, **options: Any) -> Any:
        handle = open(path, "rb")
        if version is not None:
            try:
                check_local(path, os.fstat(handle.fileno()), version)
            except BaseException:
                handle.close()
                raise
        return handle

    def read_one_blocking(self, read: Read) -> bytes:
        return read_local(read)

    async def _checked_after(
        self, reads: Sequence[Read], results: list[bytes | BaseException]
    ) -> list[bytes | BaseException]:
        return results  # each read checked its own descriptor

    def read_ranges_at_once(self, reads: Sequence[Read]) -> list[bytes | BaseException] | None:
        if sum(r.end - r.start for r in reads) <= _INLINE_LOCAL_BYTES:
            # a thread hand-off costs more than pread-ing a few small ranges
            return self._read_many_blocking(reads)
        return None

    async def read_ranges(
        self, reads: Sequence[Read], concurrency: int
    ) -> list[bytes | BaseException]:
        at_once = self.read_ranges_at_once(reads)
        if at_once is not None:
            return at_once
        return await self._read_in_threads(reads, concurrency)


def adapter_for(fs: AbstractFileSystem) -> SourceAdapter:
    """The adapter of ``fs``'s protocol family, one per filesystem *instance* (kept on it:
    equal filesystems are not the same one, with their own listing caches and loops)."""
    adapter = getattr(fs, "_virtualzarr_adapter", None)
    if adapter is None or adapter.fs is not fs:
        adapter = _make_adapter(fs)
        try:
            fs._virtualzarr_adapter = adapter  # type: ignore[attr-defined]
        except AttributeError:  # an object without attributes: a new adapter each time
            pass
    return adapter


def _make_adapter(fs: AbstractFileSystem) -> SourceAdapter:
    from .http import HTTPAdapter, is_http
    from .s3 import S3Adapter, is_s3

    if isinstance(fs, LocalFileSystem):
        return LocalAdapter(fs)
    if is_http(fs):
        return HTTPAdapter(fs)
    if is_s3(fs):
        return S3Adapter(fs)
    return SourceAdapter(fs)
