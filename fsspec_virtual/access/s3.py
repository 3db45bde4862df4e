"""S3 sources (s3fs): every read carries ``IfMatch`` with the ETag scanned, and every
answer's ``ETag`` and ``ContentRange`` are checked (servers that ignore ``IfMatch``)."""

from __future__ import annotations

from typing import Any

from fsspec import AbstractFileSystem

from ..errors import StaleSourceError
from .adapters import CheckedAnswersAdapter, Read, described_error
from .http import check_content_range, same_etag
from .version import FileVersion

__all__ = ["S3Adapter", "is_s3"]


def is_s3(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is s3fs."""
    protocol = getattr(fs, "protocol", ())
    own = {protocol} if isinstance(protocol, str) else set(protocol)
    return bool(own & {"s3", "s3a"}) and hasattr(fs, "_call_s3")


class S3Adapter(CheckedAnswersAdapter):
    """s3fs, with checked reads (see the module)."""

    async def read_one_async(self, read: Read) -> bytes:
        fs: Any = self.fs
        version = read.version
        bucket, key, version_id = fs.split_path(read.url)
        extra: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        if version is not None and version.strong_etag:
            extra["IfMatch"] = version.strong_etag
        response = await fs._call_s3(
            "get_object",
            Bucket=bucket,
            Key=key,
            Range=f"bytes={read.start}-{read.end - 1}",
            **extra,
        )
        try:
            answered = response.get("ETag")
            if version is not None and version.etag and answered:
                if not same_etag(answered, version.etag):
                    raise StaleSourceError(
                        read.url, f"its ETag is {answered}, scanned: {version.etag}"
                    )
            if response.get("ContentRange") is not None:
                size = version.size if version is not None else None
                check_content_range(read, response["ContentRange"], size)
            return await response["Body"].read()
        finally:
            response["Body"].close()

    def open_for_scan(self, path: str, version: FileVersion | None, **options: Any) -> Any:
        """s3fs sends the ETag it finds at open with each of its requests: it is checked
        here against the scanned one."""
        try:
            handle = self.fs.open(path, mode="rb", **options)
        except Exception as e:
            raise described_error(path, e) from e
        etag = version.strong_etag if version is not None else None
        details = getattr(handle, "details", None)
        if etag and isinstance(details, dict) and details.get("ETag") != etag:
            handle.close()
            raise StaleSourceError(path, f"its ETag is {details.get('ETag')}, scanned: {etag}")
        return handle
