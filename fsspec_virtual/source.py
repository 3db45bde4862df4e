"""Where the files are: resolve ``path`` to a filesystem, list it, recognise data files.

Files are recognised by their magic bytes, never by their name: HDF5 (and so NetCDF4)
by the HDF5 signature (at byte 0, or after a user block of 512, 1024, 2048, ... bytes),
NetCDF3 by ``CDF\\x01`` / ``CDF\\x02``, CDF-5 (64-bit data) by ``CDF\\x05``. A name only
matters to tell a broken data file from a README: a file named like NetCDF/HDF5
(``.nc``, ``.h5``, ...) whose bytes match no format is an error.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import fsspec
from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from .access import FileVersion, adapter_for
from .bridges import blocking_on_own_loop
from .errors import NoSourceFilesError, RangeNotSupportedError, ScanError, SkippedFileWarning

__all__ = [
    "FileFormat",
    "SourceFile",
    "resolve_filesystem",
    "list_source_files",
    "sniff_format",
    "hdf5_signature_offsets",
    "DATA_SUFFIXES",
    "speaks",
    "speaks_http",
]

FileFormat = Literal["hdf5", "netcdf3", "netcdf5"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAGIC_LENGTH = 8
#: The smallest HDF5 user block: the superblock is at 0 or at 512 * 2**k (HDF5 format spec).
FIRST_USERBLOCK = 512
#: Offsets up to here are searched with one read per file (of at most 64 KiB + 8 bytes);
#: each larger one costs a read of 8 bytes.
NEAR_USERBLOCKS = 65536
#: Names that say NetCDF or HDF5: such a file whose bytes match no format is broken (or
#: not what its name says), never silently left out. ``.mat`` files are HDF5 from MATLAB
#: 7.3 on; earlier ones (header ``MATLAB 5.0 MAT-file``) are another format, and ignored.
DATA_SUFFIXES = frozenset(
    {".nc", ".nc3", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5", ".he5", ".hdf", ".mat"}
)
#: What a file named like data may be instead, by its first bytes (for the error message).
_OTHER_FORMATS = (
    (b"\x0e\x03\x13\x01", "HDF4, which is not supported (h4toh5 converts it to HDF5)"),
    (b"\x1f\x8b", "gzip-compressed: decompress it first"),
    (b"BZh", "bzip2-compressed: decompress it first"),
    (b"\xfd7zXZ", "xz-compressed: decompress it first"),
    (b"(\xb5/\xfd", "zstd-compressed: decompress it first"),
    (b"PK\x03\x04", "a zip archive"),
    (b"GRIB", "GRIB, which is not supported"),
    (b"<", "text, perhaps an HTML page (an error page saved in the file's place?)"),
)
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One data file of the collection, at one version.

    Attributes
    ----------
    path
        The file's path on the source filesystem (what its ``cat_file`` takes).
    version
        What it was when listed or scanned (size, mtime/inode/ctime or ETag/Last-Modified):
        every read of it is checked against this.
    format
        The format its magic bytes announce.
    """

    path: str
    version: FileVersion
    format: FileFormat

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.version.size


def sniff_format(head: bytes) -> FileFormat | None:
    """The format announced by a file's first bytes, or ``None`` for non-data files.

    Only byte 0 is looked at: an HDF5 file with a user block has its signature further on
    (see :func:`hdf5_signature_offsets`; :func:`list_source_files` searches there too).
    """
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


def hdf5_signature_offsets(size: int) -> list[int]:
    """Where the HDF5 library looks for its signature in a file of ``size`` bytes: byte 0,
    then after a user block of 512, 1024, 2048, ... bytes (MATLAB 7.3 files, ``h5jam``
    output, ``h5py.File(..., userblock_size=512)``), while 8 bytes fit before the end."""
    offsets = [0]
    offset = FIRST_USERBLOCK
    while offset + MAGIC_LENGTH <= size:
        offsets.append(offset)
        offset *= 2
    return offsets


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _default_port(scheme)
    except ValueError:  # not a port number
        return None
    return scheme, (parts.hostname or "").lower(), port


def _below(url: str, directory: str) -> str | None:
    """``url`` (its dot segments resolved) if it names something below ``directory``: the
    same scheme, host and port, a path under the directory's, and no query or fragment
    (index pages link to their parent, to other sites, to ``?C=M;O=A`` sorted versions of
    themselves and to ``#`` anchors: none of these is a file of the directory). Else None.
    """
    if "?" in url or "#" in url or _origin(url) is None or _origin(url) != _origin(directory):
        return None
    path = urlsplit(url).path or "/"
    base = posixpath.normpath(unquote(urlsplit(directory).path or "/")).rstrip("/") + "/"
    # "%2e%2e" is ".." to servers that decode before resolving: check the decoded path
    if not (posixpath.normpath(unquote(path)) + "/").startswith(base):
        return None
    if posixpath.normpath(unquote(path)).rstrip("/") + "/" == base:
        return None  # the directory itself
    resolved = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
    if resolved == path:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, resolved, "", ""))


def _kept_below(found: dict[str, dict[str, Any]], directory: str) -> dict[str, dict[str, Any]]:
    """The entries of a remote listing that are below ``directory``, under resolved names."""
    kept: dict[str, dict[str, Any]] = {}
    for name, info in found.items():
        resolved = _below(name, directory)
        if resolved is not None and resolved not in kept:
            kept[resolved] = {**info, "name": resolved}
    return kept


def _expand_http(fs: AbstractFileSystem, path: str) -> dict[str, dict[str, Any]]:
    # fsspec's HTTP isdir() GETs the whole URL to look for links in it: for a data file
    # that is the whole file, twice. One HEAD tells a page from a file instead.
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise NoSourceFilesError(f"source path does not exist: {path}") from None
    if path.endswith("/") or info.get("mimetype") == "text/html":
        listed = {e["name"]: e for e in fs.ls(path, detail=True)}
        return _kept_below(listed, path.rstrip("/") + "/")
    return {path: info}


def _names_itself(fs: AbstractFileSystem, path: str) -> bool:
    """Whether ``path``, glob characters and all, names an existing file or directory.

    Not asked of HTTP(S), where it would cost a request per glob (and ``[`` is not legal
    unencoded in a URL's path)."""
    if _is_local(fs):
        return os.path.lexists(path)
    if speaks_http(fs):
        return False
    try:
        return bool(fs.exists(path))
    except OSError:
        return False


def _expand(fs: AbstractFileSystem, path: str) -> dict[str, dict[str, Any]]:
    """Files named by one path: a glob's matches, a directory's files, or the file.

    A path holding glob characters (``*``, ``?``, ``[``) that exists as written (a file
    named ``c[2].nc``) is that file, not a pattern: ``xr.open_mfdataset`` takes list
    entries literally, and a pattern meant to match other names would silently drop it.
    """
    glob = _GLOB_CHARS.search(path)
    if glob and not _names_itself(fs, path):
        found = fs.glob(path, detail=True)
        if speaks_http(fs):  # globs match in an index page's links: the same rules apply
            found = _kept_below(found, path[: path.rfind("/", 0, glob.start()) + 1])
    elif speaks_http(fs):
        found = _expand_http(fs, path)
    elif _is_local(fs) and os.path.isdir(path):
        found = _local_directory(fs, path)
    elif fs.isdir(path):
        found = {e["name"]: e for e in fs.ls(path, detail=True)}
    elif fs.exists(path):
        found = {path: fs.info(path)}
    elif isinstance(fs, LocalFileSystem) and os.path.islink(path):
        raise NoSourceFilesError(f"source path is {_broken_link(path)}: {path}")
    else:
        raise NoSourceFilesError(f"source path does not exist: {path}")
    if isinstance(fs, LocalFileSystem):
        found = {name: _followed(name, info) for name, info in found.items()}
    return {name: info for name, info in found.items() if info.get("type") != "directory"}


def _is_local(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is fsspec's own local filesystem (not a subclass that may read
    otherwise)."""
    return type(fs) is LocalFileSystem


#: An ``info`` key of a local listing: the file's version, from the ``stat`` the listing
#: made (one ``stat`` per file instead of two).
_VERSION = "fsspec_virtual_version"


def _local_directory(fs: LocalFileSystem, path: str) -> dict[str, dict[str, Any]]:
    """A local directory's entries as ``fs.ls(path, detail=True)`` gives them (names, sizes,
    types, links), with each regular file's version from the same ``stat``."""
    found: dict[str, dict[str, Any]] = {}
    with os.scandir(path) as entries:
        for entry in entries:
            name = entry.path
            if os.sep != "/" or not name.startswith("/"):  # else what _strip_protocol gives
                name = fs._strip_protocol(name)
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while listed: as fs.ls
                continue
            if stat.S_ISLNK(status.st_mode):
                found[name] = fs.info(entry)  # as fs.ls has it; _followed follows it
            elif stat.S_ISDIR(status.st_mode):
                found[name] = {"name": name, "type": "directory", "size": status.st_size}
            else:
                kind = "file" if stat.S_ISREG(status.st_mode) else "other"
                found[name] = {
                    "name": name,
                    "type": kind,
                    "size": status.st_size,
                    "islink": False,
                    _VERSION: FileVersion.from_stat(status),
                }
    return found


def _followed(name: str, info: dict[str, Any]) -> dict[str, Any]:
    """A local symbolic link as what it points to: a directory is skipped like a real
    one, a file is listed with the file's size."""
    if not info.get("islink"):
        return info
    if os.path.isdir(name):
        return {**info, "type": "directory"}
    if os.path.isfile(name):
        return {**info, "type": "file", "size": os.stat(name).st_size}
    # dangling (its target is gone): its name decides whether that is an error, as for a
    # file that is not data; never read, and never called empty
    return {**info, "type": "file", "size": 0, "dangling": _broken_link(name, info)}


def _link_target(name: str, info: dict[str, Any]) -> str:
    """Where a local symbolic link points, as written in the link."""
    try:
        return os.readlink(name)
    except OSError:
        return str(info.get("destination", "?"))


def _broken_link(name: str, info: dict[str, Any] | None = None) -> str:
    """What a local symbolic link that leads to no file is: in a loop, or dangling."""
    target = _link_target(name, info or {})
    try:
        os.stat(name)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a symbolic link to {target} in a loop of symbolic links (never a file)"
    return f"a dangling symbolic link to {target}, which does not exist"


def source_file(
    fs: AbstractFileSystem, name: str, info: dict[str, Any], fmt: FileFormat
) -> SourceFile:
    """The :class:`SourceFile` of a listed data file, from its ``info`` (a local file's
    version comes from ``os.stat``: nanosecond times, inode and ctime)."""
    version = info.get(_VERSION)
    if version is None:
        version = adapter_for(fs).listed_version(name, info)
    return SourceFile(name, version, fmt)


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

        infos = blocking_on_own_loop(fs, all_info)
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


@dataclass(slots=True)
class _Sniffed:
    """What a listed file's bytes say: its first bytes, the format found (at byte 0, or
    HDF5 after a user block), or the error reading it."""

    head: bytes = b""
    format: FileFormat | None = None
    error: BaseException | None = None


def _read_round(
    fs: AbstractFileSystem, reads: list[tuple[str, int, int]]
) -> list[bytes | BaseException]:
    """One batched ``cat_ranges`` of ``(name, start, end)`` reads.

    Raises
    ------
    RangeNotSupportedError
        If an answer is longer than asked: the server ignores Range requests, and every
        chunk read would return the wrong bytes.
    """
    if not reads:
        return []
    if _is_local(fs):
        return [_read_local(name, start, end) for name, start, end in reads]
    names, starts, ends = (list(column) for column in zip(*reads))
    answers = fs.cat_ranges(names, starts, ends, on_error="return")
    for (name, start, end), answer in zip(reads, answers):
        if not isinstance(answer, BaseException) and len(answer) > end - start:
            raise RangeNotSupportedError(name)
    return answers


def _read_local(name: str, start: int, end: int) -> bytes | BaseException:
    """Bytes ``start`` to ``end`` of a local file, or the error (``cat_file`` through a
    file object costs ten times as much, and a listing reads every file)."""
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as e:
        return e
    try:
        return os.pread(fd, end - start, start)
    except OSError as e:
        return e
    finally:
        os.close(fd)


def _sniffed(fs: AbstractFileSystem, found: dict[str, dict[str, Any]]) -> dict[str, _Sniffed]:
    """The format of each listed file, from its magic bytes.

    The first round reads bytes 0-8 of every file (one batched ``cat_ranges``). HDF5 may
    also sit after a user block (see :func:`hdf5_signature_offsets`): only files that
    matched nothing at byte 0 are searched further, in rounds of one batched
    ``cat_ranges`` each: the second reads bytes 512 to 64 KiB + 8 of each (all offsets up
    to 64 KiB at once), each later one 8 bytes at the next offset (128 KiB, 256 KiB, ...)
    of the files still unmatched and long enough. A remote file that is not data so costs
    1 + 1 + log2(size / 64 KiB) requests (2 for one under 128 KiB); a data file, one.
    """
    sniffed = {name: _Sniffed() for name in found}
    sizes = {name: info.get("size") for name, info in found.items()}
    first = [(name, 0, MAGIC_LENGTH) for name in found if sizes[name] != 0]
    for (name, _, _), answer in zip(first, _read_round(fs, first)):
        if isinstance(answer, BaseException):
            sniffed[name].error = answer
        else:
            sniffed[name].head = answer
            sniffed[name].format = sniff_format(answer)

    def unmatched(beyond: int) -> list[str]:
        return [
            name
            for name, seen in sniffed.items()
            if seen.format is None
            and seen.error is None
            and (sizes[name] or 0) >= beyond + MAGIC_LENGTH
        ]

    offset = FIRST_USERBLOCK
    while names := unmatched(offset):
        if offset == FIRST_USERBLOCK:
            ends = [min(sizes[n] or 0, NEAR_USERBLOCKS + MAGIC_LENGTH) for n in names]
        else:
            ends = [offset + MAGIC_LENGTH] * len(names)
        reads = [(name, offset, end) for name, end in zip(names, ends)]
        for (name, start, _), answer in zip(reads, _read_round(fs, reads)):
            if isinstance(answer, BaseException):
                sniffed[name].error = answer
                continue
            found_at = [
                at
                for at in hdf5_signature_offsets(start + len(answer))
                if at >= start and answer[at - start :].startswith(HDF5_SIGNATURE)
            ]
            if found_at:
                sniffed[name].format = "hdf5"
        offset = NEAR_USERBLOCKS * 2 if offset == FIRST_USERBLOCK else offset * 2
    return sniffed


def _named_like_data(name: str, head: bytes) -> bool:
    """Whether ``name`` says NetCDF/HDF5 (see :data:`DATA_SUFFIXES`)."""
    suffix = posixpath.splitext(name.rstrip("/").rpartition("/")[2])[1].lower()
    if suffix == ".mat":
        return not head.startswith(b"MATLAB 5")  # MATLAB before 7.3: not HDF5
    return suffix in DATA_SUFFIXES


def _not_data(head: bytes, info: dict[str, Any]) -> str:
    """Why a file named like data is not: a dangling link, or what its first bytes are."""
    size = info.get("size")
    if "dangling" in info:
        return f"it is {info['dangling']}"
    if size == 0:
        return "the file is empty"
    if len(head) < MAGIC_LENGTH:
        return f"the file is only {len(head)} byte(s) long ({head!r})"
    what = next((text for magic, text in _OTHER_FORMATS if head.startswith(magic)), None)
    said = f"its first bytes are {head!r}" + (f" ({what})" if what else "")
    return (
        f"{said}: neither NetCDF3 (CDF\\x01, CDF\\x02) nor HDF5 (whose signature "
        f"is at none of bytes 0, 512, 1024, ...)"
    )


def _refuse(message: str, error: Exception, skip: bool) -> None:
    """Raise ``error``, or with ``skip`` warn that the file is left out."""
    if not skip:
        raise error
    warnings.warn(message, SkippedFileWarning, stacklevel=4)


def _named_by(fs: AbstractFileSystem, path: str, skip: bool) -> dict[str, dict[str, Any]]:
    """The files ``path`` names: none is an error naming it (a glob matching nothing, an
    empty directory, a missing file), or with ``skip`` a warning and nothing."""
    try:
        found = _expand(fs, path)
        if not found:
            raise NoSourceFilesError(f"source path names no file: {path}")
    except NoSourceFilesError as error:
        _refuse(f"skipping {path}: {error}", error, skip)
        return {}
    return found


def list_source_files(
    fs: AbstractFileSystem, paths: list[str], on_error: str = "raise"
) -> list[SourceFile]:
    """List the data files that ``paths`` name on ``fs``, in the order they were named.

    Data files are recognised by their bytes (see :func:`_sniffed` for what that costs
    on a remote filesystem). A file named like NetCDF/HDF5 (``.nc``, ``.h5``, see
    :data:`DATA_SUFFIXES`) whose bytes match no format, empty ones included, is a
    :class:`~fsspec_virtual.ScanError`: its time steps would vanish silently otherwise.
    Other files (a README, a ``.json``) are ignored.

    Each path is a directory, a file, or a glob; one that exists as written is taken
    literally even if it holds glob characters (see :func:`_expand`). Each path must name
    at least one file: a glob matching nothing or a missing file is an error naming it.

    With ``on_error="skip"``, a path naming no file, a listed file that cannot be looked
    up or read (a 404 from a server whose index names it), or one that is named like data
    but is not, is left out with a :class:`~fsspec_virtual.SkippedFileWarning`.

    Raises
    ------
    NoSourceFilesError
        If a path names no file, a file cannot be read, or no data file is found.
    ScanError
        If a file named like NetCDF/HDF5 is not.
    RangeNotSupportedError
        If the server ignores Range requests.
    """
    skip = on_error == "skip"
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        found.update(_named_by(fs, path, skip))
    _completed(fs, found, skip)
    files = []
    for name, sniffed in _sniffed(fs, found).items():
        info = found[name]
        if sniffed.error is not None:
            error = sniffed.error
            message = f"cannot read {name}: {type(error).__name__}: {error}"
            unreadable = NoSourceFilesError(message)
            unreadable.__cause__ = error
            _refuse(f"skipping {name}: {message}", unreadable, skip)
            continue
        if sniffed.format is not None:
            files.append(source_file(fs, name, info, sniffed.format))
        elif _named_like_data(name, sniffed.head):
            not_data = _not_data(sniffed.head, info)
            refused = ScanError(name, f"named like a NetCDF/HDF5 file, but {not_data}")
            _refuse(f"skipping {name}: {refused}", refused, skip)
    if not files:
        where = ", ".join(paths)
        raise NoSourceFilesError(
            f"no HDF5/NetCDF4 or NetCDF3 file found in {where} "
            f"({len(found)} file(s) looked at; files are recognised by their magic bytes)"
        )
    return files
