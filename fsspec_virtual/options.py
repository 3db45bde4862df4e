"""Filesystem options that JSON cannot spell, and options that must never be printed.

zarr re-creates our filesystem from its JSON form (``fs.to_json()``) to get an async
instance. Options such as a ``distributed.Client`` or an ``aiohttp.ClientTimeout`` have no
JSON form: they are kept in this process and the JSON carries a reference to them.
Credentials are replaced by ``"***"`` wherever options are shown (:func:`redacted`), and in
every text the package lets out (:func:`redacted_text`): error and warning messages, reprs,
reports, the command's output, and the log records of the libraries that are handed our URLs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = [
    "to_json_safe",
    "from_json_safe",
    "redacted",
    "redacted_text",
    "is_secret_name",
    "RedactingFilter",
    "REDACTED",
]

_MARK = "__fsspec_virtual_object__"
_objects: dict[str, Any] = {}
_ids: dict[int, str] = {}
_guard = threading.Lock()

REDACTED = "***"
#: Option, header and query-parameter names whose values are credentials: s3fs ``key``,
#: ``secret``, ``token``; adlfs ``account_key``, ``connection_string``, ``sas_token``,
#: ``client_secret``, ``credential``; gcsfs ``token``; paramiko ``password``, ``passphrase``,
#: ``pkey``; HTTP ``Authorization``, ``Cookie``, ``X-Amz-Security-Token``, ``X-Api-Key``;
#: presigned and SAS URLs' ``X-Amz-Signature``, ``X-Amz-Credential``, ``sig``. Names that
#: merely contain "key" are not (``key_prefix``, ``key_filename``, ``kms_key_id``): only
#: names ending in it.
_SECRET_NAMES = re.compile(
    r"secret|passw(?:or)?d|passphrase|(?:^|[_-])pwd$|token|credential|auth|cookie|private|"
    r"key$|access[_-]?key|connection[_-]?string|^conn[_-]?str$|"
    r"signature|^sig$|session",
    re.IGNORECASE,
)
_TEXT_END = r"\s'\"<>`"
#: ``scheme://user:password@``: the password (RFC 3986 userinfo cannot hold "/", "?" or
#: "#"; a raw "@" in a password is taken to the last "@" of the authority, as urllib does).
_USERINFO = re.compile(rf"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@{_TEXT_END}]*:)([^/?#{_TEXT_END}]*)@")
#: ``?name=value``, ``&name=value``, ``;name=value`` (query strings, connection strings);
#: punctuation ending a sentence is not part of the value.
_PARAMETER = re.compile(
    rf"([?&;]([^=&;#?{_TEXT_END}]+)=)([^&;#{_TEXT_END})]*?)(?=[:,.!]*(?:[&;#{_TEXT_END})]|$))"
)
#: ``'name': 'value'`` (dict reprs, JSON) and ``name='value'`` (keyword reprs); values
#: may be bytes (``b'...'``: botocore's request headers).
_QUOTED_PAIR = re.compile(
    r"""((['"])([^'"\s:=,{}()]+)\2\s*:\s*b?|\b([A-Za-z_][\w-]*)=b?)(['"])((?:\\.|(?!\5)[^\\])*)\5"""
)
#: ``Name: value`` lines (HTTP headers, botocore's canonical requests); not a traceback's
#: ``SomeError: message``.
_HEADER_LINE = re.compile(
    r"^([ \t]*((?![A-Za-z0-9-]*(?:Error|Exception|Warning)[ \t]*:)[A-Za-z][A-Za-z0-9-]*)"
    r"[ \t]*:[ \t]*)(\S[^\r\n]*)$",
    re.MULTILINE,
)


def _can_spell(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def to_json_safe(value: Any) -> Any:
    """``value`` with every part JSON cannot spell replaced by a reference to it (valid
    in this process only)."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if _can_spell(value):
        return value
    with _guard:
        token = _ids.get(id(value))
        if token is None or _objects.get(token) is not value:
            token = uuid.uuid4().hex
            _objects[token] = value
            _ids[id(value)] = token
    return {_MARK: token}


def from_json_safe(value: Any) -> Any:
    """Undo :func:`to_json_safe`.

    Raises
    ------
    ValueError
        For a reference made by another process.
    """
    if isinstance(value, dict):
        if set(value) == {_MARK}:
            with _guard:
                if value[_MARK] not in _objects:
                    raise ValueError(
                        "this virtualzarr filesystem's JSON form refers to an option object "
                        "(a Dask client, a timeout, ...) of another process; pass the "
                        "options again"
                    )
                return _objects[value[_MARK]]
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def is_secret_name(name: str) -> bool:
    """Whether an option, header or query parameter called ``name`` holds a credential.

    Examples
    --------
    >>> [is_secret_name(n) for n in ("secret", "account_key", "X-Amz-Signature", "anon")]
    [True, True, True, False]
    """
    return bool(_SECRET_NAMES.search(name))


def redacted(options: Any, include_password: bool = False) -> Any:
    """``options`` with the values of credential-like keys replaced by ``"***"``, at any
    depth, and passwords and signatures removed from every string (see
    :func:`redacted_text`).

    Mappings become dicts, tuples stay tuples; a ``(name, value)`` pair whose name is a
    credential's (headers given as a list of pairs) has its value replaced too.
    ``include_password=True`` returns ``options`` as they are (as fsspec's ``to_json``
    spells that choice).
    """
    if include_password:
        return options
    if isinstance(options, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str) and is_secret_name(k) and v is not None
            else redacted(v)
            for k, v in options.items()
        }
    if isinstance(options, list | tuple):
        if len(options) == 2 and isinstance(options[0], str) and is_secret_name(options[0]):
            items = [options[0], REDACTED]
        else:
            items = [redacted(v) for v in options]
        return tuple(items) if isinstance(options, tuple) else items
    if isinstance(options, str):
        return redacted_text(options)
    return options


def _parameter(match: re.Match[str]) -> str:
    # a name spelled with %-escapes (``?%74oken=``) is the name a server decodes
    name = unquote_plus(match.group(2))
    return match.group(1) + REDACTED if is_secret_name(name) else match.group(0)


def _header_line(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED if is_secret_name(match.group(2)) else match.group(0)


def _quoted_pair(match: re.Match[str]) -> str:
    name = match.group(3) or match.group(4)
    if not is_secret_name(name):
        return match.group(0)
    quote = match.group(5)
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


def redacted_text(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``"***"``.

    Replaced: the password of a URL's userinfo (``https://user:***@host/``; a user name
    alone is kept), the values of credential-like query or connection-string parameters
    (``?X-Amz-Signature=***``, ``&sig=***``, ``;AccountKey=***``), and quoted values of
    credential-like names (``'secret': '***'``, ``token='***'``) and of header lines
    (``Authorization: ***``). Pure, and idempotent.

    Examples
    --------
    >>> redacted_text("cannot read http://me:pw@host/a.nc?sig=abc&sp=r: 500")
    'cannot read http://me:***@host/a.nc?sig=***&sp=r: 500'
    """
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _PARAMETER.sub(_parameter, text)
    text = _QUOTED_PAIR.sub(_quoted_pair, text)
    return _HEADER_LINE.sub(_header_line, text)


class RedactingFilter(logging.Filter):
    """A logging filter that removes credentials (:func:`redacted_text`) from records.

    A record whose text holds one is rewritten as its redacted, formatted message (and
    redacted traceback); other records pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a malformed record: logging reports it when it is emitted
        clean = redacted_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # formatted here only if it must change: handlers format the others their way
            shown = logging.Formatter().formatException(record.exc_info)
            if redacted_text(shown) != shown:
                record.exc_text = redacted_text(shown)
        elif record.exc_text:
            record.exc_text = redacted_text(record.exc_text)
        return True


#: Loggers (and their children) of the libraries we hand source URLs and credentials to,
#: that log them: fsspec at DEBUG logs every HTTP URL it fetches, kerchunk every file it
#: scans, botocore every request it signs (its session token among the headers).
GUARDED_LOGGERS = (
    "fsspec",
    "h5-to-zarr",
    "kerchunk",
    "s3fs",
    "gcsfs",
    "adlfs",
    "sshfs",
    "paramiko",
    "botocore",
    "aiobotocore",
    "boto3",
    "aiohttp",
    "urllib3",
    "fsspec_virtual",
)
_GUARDED = re.compile("|".join(rf"{re.escape(n)}(?:\.|$)" for n in GUARDED_LOGGERS))
_guard_records = RedactingFilter()


def _install_record_factory() -> None:
    """Redact the records of :data:`GUARDED_LOGGERS` as they are made, whatever handler
    (the application's, pytest's) later shows them. A logger's own filters would see
    only its own records, not its children's; records of other loggers are untouched."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_fsspec_virtual", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _GUARDED.match(record.name):
            _guard_records.filter(record)
        return record

    make_record._fsspec_virtual = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


_install_record_factory()
