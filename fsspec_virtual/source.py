"""Where the files are: resolve ``path`` to a filesystem, list it, recognise data files.

Files are recognised by their magic bytes, never by their name: HDF5 (and so NetCDF4)
by the HDF5 signature, NetCDF3 by ``CDF\\x01`` / ``CDF\\x02`` (``CDF\\x05`` is recognised so
that it can be refused with a clear error).
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem, sync

from .errors import NoSourceFilesError, RangeNotSupportedError, SkippedFileWarning

__all__ = [
    "FileFormat",
    "SourceFile",
    "resolve_filesystem",
    "list_source_files",
    "sniff_format",
    "speaks",
    "speaks_http",
    "http_headers",
    "strong_etag",
]

FileFormat = Literal["hdf5", "netcdf3", "netcdf5"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAGIC_LENGTH = 8
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One data file of the collection.

    Attributes
    ----------
    path
        The file's path on the source filesystem (what its ``cat_file`` takes).
    size
        Size in bytes.
    identity
        What changes when the file is rewritten: ETag, or modification time.
    format
        The format its magic bytes announce.
    """

    path: str
    size: int
    identity: str
    format: FileFormat


def sniff_format(head: bytes) -> FileFormat | None:
    """The format announced by a file's first bytes, or ``None`` for non-data files."""
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if head[:4] in (b"CDF\x01", b"CDF\x02"):
        return "netcdf3"
    if head[:4] == b"CDF\x05":
        return "netcdf5"
    return None


def resolve_filesystem(
    path: str | Sequence[str],
    target_protocol: str,
    target_options: dict[str, Any] | None = None,
) -> tuple[AbstractFileSystem, list[str]]:
    """The source filesystem and the paths on it that ``path`` names.

    Parameters
    ----------
    path
        A directory, a glob, a file, or a list of those, as URLs or as paths on the
        ``target_protocol`` filesystem.
    target_protocol, target_options
        The source filesystem and its options.
    """
    paths = [path] if isinstance(path, str) else list(path)
    if not paths:
        raise NoSourceFilesError("no source path given")
    fs = fsspec.filesystem(target_protocol, **(target_options or {}))
    return fs, [fs._strip_protocol(p) for p in paths]


def speaks(fs: AbstractFileSystem, *protocols: str) -> bool:
    """Whether ``fs`` answers to one of ``protocols`` (its ``protocol`` may be a tuple)."""
    own = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return not own.isdisjoint(protocols)


def speaks_http(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is fsspec's HTTP(S) filesystem."""
    return speaks(fs, "http", "https")


def http_headers(fs: AbstractFileSystem, **extra: str) -> dict[str, str]:
    """The headers an HTTP request of ``fs`` sends (its own, e.g. ``Authorization``) plus
    ``extra``: a ``headers=`` argument replaces, not extends, the filesystem's."""
    own = getattr(fs, "kwargs", {}).get("headers") or {}
    return {**own, **extra}


def _expand_http(fs: AbstractFileSystem, path: str) -> dict[str, dict[str, Any]]:
    # fsspec's HTTP isdir() GETs the whole URL to look for links in it: for a data file
    # that is the whole file, twice. One HEAD tells a page from a file instead.
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise NoSourceFilesError(f"source path does not exist: {path}") from None
    if path.endswith("/") or info.get("mimetype") == "text/html":
        return {e["name"]: e for e in fs.ls(path, detail=True)}
    return {path: info}


def _expand(fs: AbstractFileSystem, path: str) -> dict[str, dict[str, Any]]:
    """Files named by one path: a glob's matches, a directory's files, or the file."""
    if _GLOB_CHARS.search(path):
        found = fs.glob(path, detail=True)
    elif speaks_http(fs):
        found = _expand_http(fs, path)
    elif fs.isdir(path):
        found = {e["name"]: e for e in fs.ls(path, detail=True)}
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        raise NoSourceFilesError(f"source path does not exist: {path}")
    return {name: info for name, info in found.items() if info.get("type") != "directory"}


#: Prefix of identities that are ETags: reads of remote files send them as ``If-Match``.
ETAG_PREFIX = "etag:"


def strong_etag(identity: str) -> str | None:
    """The ETag an identity holds, if it is a strong one: the only kind ``If-Match`` can
    match (a weak ``W/"..."`` never does, RFC 9110)."""
    etag = identity.removeprefix(ETAG_PREFIX)
    if etag == identity or etag.startswith("W/"):
        return None
    return etag


def file_identity(info: dict[str, Any]) -> str:
    """What changes when a file is rewritten, from its ``info``: ``etag:<ETag>``, or the
    modification time as the filesystem spells it."""
    for key in ("ETag", "etag"):
        if info.get(key):
            return ETAG_PREFIX + str(info[key])
    for key in ("mtime", "LastModified", "last_modified", "modified", "Last-Modified"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def source_file(name: str, info: dict[str, Any], fmt: FileFormat) -> SourceFile:
    """The :class:`SourceFile` of a listed data file, from its ``info``."""
    return SourceFile(name, int(info.get("size") or 0), file_identity(info), fmt)


def _completed(fs: AbstractFileSystem, found: dict[str, dict[str, Any]], skip: bool) -> None:
    """Fill in the size and identity of entries a listing gave without them (an HTTP
    index page names files only): one ``info`` per file, concurrently where ``fs`` is
    async. An entry that cannot be looked up is an error, or dropped with a warning."""
    lacking = [name for name, info in found.items() if info.get("size") is None]
    if not lacking:
        return
    if isinstance(fs, AsyncFileSystem) and fs.async_impl:

        async def all_info() -> list[Any]:
            return await asyncio.gather(*(fs._info(n) for n in lacking), return_exceptions=True)

        infos = sync(fs.loop, all_info)
    else:
        infos = [fs.info(name) for name in lacking]
    for name, info in zip(lacking, infos):
        if isinstance(info, BaseException):
            message = f"cannot look up {name}: {type(info).__name__}: {info}"
            if not skip:
                raise NoSourceFilesError(message)
            warnings.warn(f"skipping {name}: {message}", SkippedFileWarning, stacklevel=3)
            del found[name]
            continue
        found[name] = {**found[name], **info}


def list_source_files(
    fs: AbstractFileSystem, paths: list[str], on_error: str = "raise"
) -> list[SourceFile]:
    """List the data files that ``paths`` name on ``fs``, in the order they were named.

    With ``on_error="skip"``, a listed file that cannot be looked up or read (a 404 from
    a server whose index names it) is left out with a warning.

    Raises
    ------
    NoSourceFilesError
        If a path does not exist, or no data file is found.
    """
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        found.update(_expand(fs, path))
    skip = on_error == "skip"
    _completed(fs, found, skip)
    candidates = [(name, info) for name, info in found.items() if (info.get("size") or 0) >= 4]
    heads = fs.cat_ranges(
        [name for name, _ in candidates],
        [0] * len(candidates),
        [MAGIC_LENGTH] * len(candidates),
        on_error="return",
    )
    files = []
    for (name, info), head in zip(candidates, heads):
        if isinstance(head, BaseException):
            message = f"cannot read {name}: {type(head).__name__}: {head}"
            if skip:
                warnings.warn(f"skipping {name}: {message}", SkippedFileWarning, stacklevel=2)
                continue
            raise NoSourceFilesError(message) from head
        if len(head) > MAGIC_LENGTH:
            # asked for 8 bytes, got the whole file: the server ignores Range requests,
            # and every read of a chunk would return the wrong bytes
            raise RangeNotSupportedError(name)
        fmt = sniff_format(head)
        if fmt is not None:
            files.append(source_file(name, info, fmt))
    if not files:
        where = ", ".join(paths)
        raise NoSourceFilesError(
            f"no HDF5/NetCDF4 or NetCDF3 file found in {where} "
            f"({len(found)} file(s) looked at; files are recognised by their magic bytes)"
        )
    return files
