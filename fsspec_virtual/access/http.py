"""HTTP(S) sources (fsspec's ``HTTPFileSystem``): every read carries a precondition and
every answer is checked.

A read sends ``If-Match`` with a strong ETag, else ``If-Unmodified-Since`` with the
``Last-Modified`` the file was scanned at. Whatever the server does with them, the answer
is checked: status 206 with a ``Content-Range`` whose start, end and total are exactly the
range asked and the size scanned, the ``ETag`` (weak comparison) or ``Last-Modified``
scanned, and as many bytes as the range. A 200 to a range request means the server ignores
``Range``: :class:`~fsspec_virtual.errors.RangeNotSupportedError`.
"""

from __future__ import annotations

import re
from typing import Any

from fsspec import AbstractFileSystem

from ..errors import RangeNotSupportedError, SourceReadError, StaleSourceError
from .adapters import CheckedAnswersAdapter, Read, described_error
from .version import FileVersion

__all__ = ["HTTPAdapter", "is_http", "http_headers", "precondition_headers"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def is_http(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is fsspec's HTTP(S) filesystem."""
    protocol = getattr(fs, "protocol", ())
    own = {protocol} if isinstance(protocol, str) else set(protocol)
    return bool(own & {"http", "https"}) and hasattr(fs, "set_session")


def http_headers(fs: AbstractFileSystem, **extra: str) -> dict[str, str]:
    """The headers an HTTP request of ``fs`` sends (its own, e.g. ``Authorization``) plus
    ``extra``: a ``headers=`` argument replaces, not extends, the filesystem's."""
    own = getattr(fs, "kwargs", {}).get("headers") or {}
    return {**own, **extra}


def precondition_headers(version: FileVersion | None) -> dict[str, str]:
    """``If-Match`` for a strong ETag, else ``If-Unmodified-Since`` for a file known by its
    modification time only (a weak ETag matches no ``If-Match``: the answer is checked)."""
    if version is None:
        return {}
    if version.strong_etag:
        return {"If-Match": version.strong_etag}
    if version.etag is None and version.last_modified:
        return {"If-Unmodified-Since": version.last_modified}
    return {}


def same_etag(a: str, b: str) -> bool:
    """ETags equal by the weak comparison (``W/"x"`` equals ``"x"``)."""
    return a.removeprefix("W/") == b.removeprefix("W/")


def check_answer_version(url: str, headers: Any, version: FileVersion | None) -> None:
    """Raise :class:`StaleSourceError` if an answer's ``ETag`` or ``Last-Modified`` is not
    the version scanned (``Last-Modified`` is compared where the answer carries no ETag to
    compare: a file without one, or a server that leaves it off its range answers)."""
    if version is None:
        return
    answered = headers.get("ETag")
    if version.etag and answered and not same_etag(answered, version.etag):
        raise StaleSourceError(url, f"its ETag is {answered}, scanned: {version.etag}")
    modified = headers.get("Last-Modified")
    if (
        not (version.etag and answered)
        and version.last_modified
        and modified not in (None, version.last_modified)
    ):
        raise StaleSourceError(
            url, f"its Last-Modified is {modified}, scanned: {version.last_modified}"
        )


def check_content_range(read: Read, header: str | None, size: int | None) -> None:
    """A 206 answer must be exactly the range asked, of a file of the size scanned."""
    match = _CONTENT_RANGE.fullmatch(header or "")
    if match is None:
        raise SourceReadError(read.url, f"a 206 answer without a valid Content-Range ({header!r})")
    first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
    if size is not None and total != "*" and int(total) != size:
        raise StaleSourceError(read.url, f"its size is {total}, scanned: {size}")
    if (first, last) != (read.start, read.end - 1):
        raise SourceReadError(
            read.url,
            f"asked for bytes {read.start}-{read.end - 1}, the server answered "
            f"bytes {first}-{last}",
        )


class HTTPAdapter(CheckedAnswersAdapter):
    """fsspec's HTTP(S) filesystem, with checked reads (see the module)."""

    async def read_one_async(self, read: Read) -> bytes:
        fs: Any = self.fs
        version = read.version
        extra = {"Range": f"bytes={read.start}-{read.end - 1}", **precondition_headers(version)}
        kwargs = {**fs.kwargs, "headers": http_headers(fs, **extra)}
        session = await fs.set_session()
        async with session.get(fs.encode_url(read.url), **kwargs) as response:
            if response.status == 404:
                raise FileNotFoundError(read.url)
            if response.status == 412:
                raise StaleSourceError(read.url, "it changed (the server refused the precondition)")
            response.raise_for_status()
            check_answer_version(read.url, response.headers, version)
            if response.status == 206:
                size = version.size if version is not None else None
                check_content_range(read, response.headers.get("Content-Range"), size)
            data = await response.read()
        if response.status == 200:
            whole = read.start == 0 and len(data) == read.end
            if not whole or (version is not None and len(data) != version.size):
                raise RangeNotSupportedError(read.url)
        elif response.status != 206:
            raise SourceReadError(
                read.url, f"unexpected answer {response.status} to a range request"
            )
        return data

    def open_for_scan(self, path: str, version: FileVersion | None, **options: Any) -> Any:
        headers = precondition_headers(version)
        if headers:
            options["headers"] = http_headers(self.fs, **headers)
        try:
            return self.fs.open(path, mode="rb", **options)
        except Exception as e:
            raise described_error(path, e) from e
