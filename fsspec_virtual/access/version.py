"""What a source file is at one moment: its :class:`FileVersion`.

A version is what reads are checked against: a file whose version differs from the one
scanned is never read at the scanned offsets. Local files are known by size, modification
time, inode and change time (``ctime`` cannot be set back by ``os.utime``, and a replace by
rename changes the inode); remote files by ETag, else by ``Last-Modified``, plus size.
"""

from __future__ import annotations

import datetime
import json
import operator
import os
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["FileVersion"]

#: ``info`` keys that hold a modification time, in the spellings fsspec filesystems use
#: (HTTP's header, s3fs, gcsfs/adlfs, generic).
_MODIFIED_KEYS = (
    "Last-Modified",
    "LastModified",
    "last_modified",
    "updated",
    "modified",
    "mtime",
    "created",  # fsspec's memory filesystem: a rewrite makes a new file
)


def _spelled(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One version of a source file.

    Attributes
    ----------
    size
        Size in bytes.
    mtime_ns, inode, ctime_ns
        Local files: ``os.stat``'s modification time, inode and change time.
    etag
        Remote files: the ETag, as the server spells it (quotes, ``W/`` included).
    last_modified
        Remote files: the modification time as the filesystem reports it (HTTP's
        ``Last-Modified`` header, S3's ``LastModified``), used where there is no ETag.
    """

    size: int
    mtime_ns: int | None = None
    inode: int | None = None
    ctime_ns: int | None = None
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def from_stat(cls, stat: os.stat_result) -> FileVersion:
        """The version of a local file from its ``os.stat`` / ``os.fstat``."""
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> FileVersion:
        """The version of a remote file from its fsspec ``info``."""
        etag = info.get("ETag") or info.get("etag")
        modified = next((info[k] for k in _MODIFIED_KEYS if info.get(k) is not None), None)
        return cls(
            int(info.get("size") or 0), etag=_spelled(etag), last_modified=_spelled(modified)
        )

    @property
    def strong_etag(self) -> str | None:
        """The ETag if it is a strong one: the only kind ``If-Match`` can match (a weak
        ``W/"..."`` never does, RFC 9110)."""
        if self.etag is None or self.etag.startswith("W/"):
            return None
        return self.etag

    @property
    def tells_rewrites(self) -> bool:
        """Whether a rewrite at the same size shows in this version (it has more than a
        size)."""
        return _as_tuple(self)[1:] != _SIZE_ONLY

    def to_list(self) -> list[Any]:
        """A JSON-able form (see :meth:`from_list`)."""
        # not dataclasses.astuple: it deep-copies, and snapshots spell thousands of these
        return list(_as_tuple(self))

    @classmethod
    def from_list(cls, values: list[Any]) -> FileVersion:
        """Undo :meth:`to_list`."""
        if len(values) != len(fields(cls)):
            raise ValueError(f"a file version has {len(fields(cls))} fields, not {len(values)}")
        return cls(*values)

    def token(self) -> str:
        """A stable text form, for cache keys and digests."""
        return json.dumps(self.to_list())

    def differences(self, other: FileVersion) -> str:
        """What differs from ``other`` (this version is the one found now), for messages."""
        parts = [
            f"{f.name} {getattr(self, f.name)} (scanned: {getattr(other, f.name)})"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
        return ", ".join(parts) or "no difference"


_FIELD_NAMES = tuple(f.name for f in fields(FileVersion))
_as_tuple = operator.attrgetter(*_FIELD_NAMES)
_SIZE_ONLY = (None,) * (len(_FIELD_NAMES) - 1)
