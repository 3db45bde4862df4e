"""Filesystem options that JSON cannot spell, and options that must never be printed.

zarr re-creates our filesystem from its JSON form (``fs.to_json()``) to get an async
instance. Options such as a ``distributed.Client`` or an ``aiohttp.ClientTimeout`` have no
JSON form: they are kept in this process and the JSON carries a reference to them.
Credentials in ``target_options`` are replaced by ``"***"`` wherever options are shown.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from typing import Any

__all__ = ["to_json_safe", "from_json_safe", "redacted", "REDACTED"]

_MARK = "__fsspec_virtual_object__"
_objects: dict[str, Any] = {}
_ids: dict[int, str] = {}
_guard = threading.Lock()

REDACTED = "***"
_SECRET_NAMES = re.compile(
    r"(secret|password|passwd|token|credential|authorization|api[_-]?key|^key$|"
    r"access[_-]?key|session|auth|cookie|private)",
    re.IGNORECASE,
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


def redacted(options: Any) -> Any:
    """``options`` with the values of credential-like keys replaced by ``"***"``."""
    if isinstance(options, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and _SECRET_NAMES.search(k) and v is not None
            else redacted(v)
            for k, v in options.items()
        }
    if isinstance(options, list | tuple):
        return type(options)(redacted(v) for v in options)
    return options
