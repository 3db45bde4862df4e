"""The HTTP rules of serving store keys, as pure functions: which request targets name a
key, byte ranges, entity tags and conditional requests.

Nothing here touches a store or a socket; :mod:`fsspec_virtual.serve.app` applies them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ..errors import VirtualZarrError

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = [
    "BadTarget",
    "BadRange",
    "key_of_target",
    "byte_range",
    "content_range",
    "entity_tag",
    "none_match",
    "strong_match",
    "range_applies",
    "UnservableNameError",
    "unservable_names",
    "unservable_nodes",
    "host_name",
    "is_ip_literal",
    "content_type",
]

#: Characters never allowed in a request target, raw or decoded: backslashes (a Windows
#: path separator), NUL and the other control characters.
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
#: Digits past which a byte position is past the end of any key (and Python's int() of a
#: very long string of digits is refused).
_MAX_DIGITS = 18
#: Characters of a node name that HTTP clients do not send as they are: ``%`` starts an
#: escape that URL libraries decode or normalise (``a%41`` is fetched as ``aA``), ``?`` and
#: ``#`` end the path (``a?b`` is fetched as ``a``).
_NOT_IN_URLS = re.compile(r"[%?#]")
#: The documents of Zarr formats 2 and 3, served as JSON.
_JSON_DOCUMENTS = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json"})


class BadTarget(ValueError):
    """A request target that cannot name a store key (400): it is not a path from the
    root, or it has an empty, ``.`` or ``..`` segment, a backslash or a control character,
    raw or percent-encoded."""


class UnservableNameError(VirtualZarrError, ValueError):
    """The store has variables or groups whose names HTTP clients cannot ask for: a
    ``%``, ``?`` or ``#`` in a name (the server refuses to serve such a store: a client would
    read another variable's values, or fill values)."""


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
    first, last = (_position(digits) for digits in match.groups())
    if first is None:
        if not last or size == 0:
            raise BadRange(f"no byte of a key of {size} bytes in {header[:80]!r}")
        return max(size - last, 0), size
    start = first
    stop = size if last is None else last + 1
    if last and stop <= start:
        raise BadRange(f"a range that ends before it starts: {header[:80]!r}")
    if start >= size:
        raise BadRange(f"no byte of a key of {size} bytes in {header[:80]!r}")
    return start, min(stop, size)


def _position(digits: str) -> int | None:
    """A byte position of a ``Range`` header (None where absent); one with more digits
    than any key has bytes is read as 10**18, past every end."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


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


def strong_match(header: str, tag: str) -> bool:
    """Whether an ``If-Match`` header matches ``tag`` (strong comparison, RFC 9110
    13.1.1: a weak tag never matches; ``*`` matches any existing key)."""
    return any(
        candidate.strip() in ("*", tag) for candidate in header.split(",") if candidate.strip()
    )


def range_applies(if_range: str | None, tag: str) -> bool:
    """Whether a ``Range`` is honoured under an ``If-Range`` header (RFC 9110 13.1.5): only
    if it names ``tag`` exactly (strong comparison). A date never matches (the server sends
    no ``Last-Modified``): the client gets the whole key, never bytes of two versions."""
    return if_range is None or if_range.strip() == tag


def unservable_names(paths: Iterable[str]) -> dict[str, str]:
    """The variable and group paths among ``paths`` that HTTP clients cannot ask for, each
    with the reason (see :class:`UnservableNameError`).

    Examples
    --------
    >>> unservable_names(["t2m", "a%41", "g?/v"])
    {'a%41': "'%' (clients decode or normalise escapes: read as another name)", \
'g?/v': "'?' (ends the path in a URL: the name is cut there)"}
    """
    reasons = {
        "%": "'%' (clients decode or normalise escapes: read as another name)",
        "?": "'?' (ends the path in a URL: the name is cut there)",
        "#": "'#' (ends the path in a URL: the name is cut there)",
    }
    found = {}
    for path in paths:
        match = _NOT_IN_URLS.search(path)
        if match is not None:
            found[path] = reasons[match.group()]
    return found


def unservable_nodes(manifest: Manifest) -> dict[str, str]:
    """:func:`unservable_names` of a manifest's arrays and groups (the root aside)."""
    return unservable_names([*manifest.arrays, *(g for g in manifest.groups if g)])


def host_name(header: str) -> str | None:
    """The host a ``Host`` header names, lower case, without the port or a final dot;
    None for a header that names none (empty, or not ``host[:port]``).

    Examples
    --------
    >>> host_name("LocalHost.:8000"), host_name("[::1]:80"), host_name("")
    ('localhost', '::1', None)
    """
    header = header.strip()
    if header.startswith("["):
        host, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
    else:
        host, _, port = header.partition(":")
        if ":" in port:
            return None
    host = host.rstrip(".").lower()
    return host or None


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP address (a ``Host`` naming one cannot come from DNS
    rebinding, which needs a name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def content_type(key: str) -> str:
    """``application/json`` for metadata documents, else ``application/octet-stream``."""
    return (
        "application/json"
        if key.rpartition("/")[2] in _JSON_DOCUMENTS
        else ("application/octet-stream")
    )
