"""The server's access log: one line per request in the Combined Log Format, redacted.

``host - - [time] "request line" status bytes "referer" "user agent"``, as Apache and nginx
write it, on the ``fsspec_virtual.serve.access`` logger. The line passes through
:func:`~fsspec_virtual.options.redacted_text`: a ``?token=`` in a request line or a
referer is written ``?token=***``; headers (``Authorization``, cookies) are never written.
"""

from __future__ import annotations

import logging
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from ..options import redacted_text

__all__ = ["AccessLog", "access_logger", "combined_line"]

#: The logger access lines go to (``logging.INFO``).
access_logger = logging.getLogger("fsspec_virtual.serve.access")


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def combined_line(request: BaseRequest, response: StreamResponse, now: float) -> str:
    """The Combined Log Format line of one request, redacted."""
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
    version = request.version
    line = f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}"
    # the body's bytes, without headers (aiohttp's body_length counts them)
    size = None if request.method == "HEAD" else response.content_length
    return redacted_text(
        f'{request.remote or "-"} - - [{stamp}] "{_quoted(line)}" {response.status} '
        f'{size if size else "-"} "{_quoted(request.headers.get("Referer", "-"))}" '
        f'"{_quoted(request.headers.get("User-Agent", "-"))}"'
    )


class AccessLog(AbstractAccessLogger):
    """aiohttp's access logger, writing :func:`combined_line` lines."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(combined_line(request, response, _now()))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _now() -> float:
    return time.time()
