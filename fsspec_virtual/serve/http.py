"""The HTTP rules of serving store keys, as pure functions: which request targets name a
key, byte ranges, entity tags and conditional requests.

Nothing here touches a store or a socket; :mod:`fsspec_virtual.serve.app` applies them.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

__all__ = [
    "BadTarget",
    "BadRange",
    "key_of_target",
    "byte_range",
    "content_range",
    "entity_tag",
    "none_match",
    "content_type",
]

#: Characters never allowed in a request target, raw or decoded: backslashes (a Windows
#: path separator), NUL and the other control characters.
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
#: The documents of Zarr formats 2 and 3, served as JSON.
_JSON_DOCUMENTS = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json"})


class BadTarget(ValueError):
    """A request target that cannot name a store key (400): it is not a path from the
    root, or it has an empty, ``.`` or ``..`` segment, a backslash or a control character,
    raw or percent-encoded."""


class BadRange(ValueError):
    """A ``Range`` header that is malformed, names several ranges, or no byte of the key
    (416)."""


def key_of_target(target: str) -> str:
    """The store key a request target names: its path, percent-decoded, without the
    leading ``/`` (``""`` for the root).

    The key space is the store's keys and nothing else: a key is looked up in the
    store's manifest, never opened as a file. Targets that a file server or a proxy might
    read as another path are refused rather than normalised, so that one key has one
    spelling.

    Raises
    ------
    BadTarget
        For an absolute URL (``http://host/key``), ``//``, ``.``/``..`` segments (raw or as
        ``%2e``), backslashes, NUL or control characters, or bytes that are not UTF-8.

    Examples
    --------
    >>> key_of_target("/t2m/0.0.0?x=1")
    't2m/0.0.0'
    >>> key_of_target("/")
    ''
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise BadTarget("not a path from the root (absolute URLs are not served)")
    if _FORBIDDEN.search(path):
        raise BadTarget("a backslash or a control character in the path")
    try:
        key = unquote(path[1:], errors="strict")
    except UnicodeDecodeError:
        raise BadTarget("percent-encoded bytes that are not UTF-8") from None
    if _FORBIDDEN.search(key):
        raise BadTarget("a backslash or a control character in the path")
    if key and any(part in ("", ".", "..") for part in key.split("/")):
        raise BadTarget("an empty, '.' or '..' segment in the path")
    return key


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes ``[start, stop)`` of a key of ``size`` bytes that a ``Range`` header
    asks for; None without one.

    One range only: ``bytes=a-b`` (``b`` past the end means the end), ``bytes=a-``,
    ``bytes=-n`` (the last ``n`` bytes, the whole key if it is shorter).

    Raises
    ------
    BadRange
        For a malformed header, several ranges, ``b < a``, a start at or past the end, or
        ``bytes=-0``.

    Examples
    --------
    >>> byte_range("bytes=2-5", 10), byte_range("bytes=7-", 10), byte_range("bytes=-3", 10)
    ((2, 6), (7, 10), (7, 10))
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise BadRange(f"only one range of bytes is served, not {header[:80]!r}")
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0 or size == 0:
            raise BadRange(f"no byte of a key of {size} bytes in {header!r}")
        return max(size - int(last), 0), size
    start = int(first)
    stop = size if not last else int(last) + 1
    if last and stop <= start:
        raise BadRange(f"a range that ends before it starts: {header!r}")
    if start >= size:
        raise BadRange(f"no byte of a key of {size} bytes in {header!r}")
    return start, min(stop, size)


def content_range(start: int, stop: int, size: int) -> str:
    """The ``Content-Range`` of bytes ``[start, stop)`` of ``size``."""
    return f"bytes {start}-{stop - 1}/{size}"


def entity_tag(snapshot: str, key: str, variant: str) -> str:
    """A strong ``ETag`` for ``key`` as served from snapshot ``snapshot`` in ``variant``
    (the serving options that change a key's bytes, such as ``decode``).

    A snapshot never changes (a refresh makes a new one, with a new identity when a file
    changed), so a key's bytes are a function of these three.
    """
    digest = hashlib.sha256("\0".join((snapshot, variant, key)).encode()).hexdigest()
    return f'"{digest[:32]}"'


def none_match(header: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``tag`` (weak comparison, as RFC 9110
    asks of ``If-None-Match``; ``*`` matches any existing key)."""
    if header is None:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


def content_type(key: str) -> str:
    """``application/json`` for metadata documents, else ``application/octet-stream``."""
    return (
        "application/json"
        if key.rpartition("/")[2] in _JSON_DOCUMENTS
        else ("application/octet-stream")
    )
