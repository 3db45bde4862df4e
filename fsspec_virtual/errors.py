"""Exceptions and warnings raised by fsspec-virtual.

Every error subclasses :class:`VirtualZarrError` and a builtin, so callers that only know
the builtin (zarr treats ``FileNotFoundError`` as "missing chunk") keep working.

Messages never carry credentials: the text of every error and warning made here is passed
through :func:`~fsspec_virtual.options.redacted_text` when it is made (a source URL's
password, a presigned URL's signature become ``***``), wherever it was raised from.
"""

from __future__ import annotations

from typing import Any

from .options import redacted_text

__all__ = [
    "VirtualZarrError",
    "ScanError",
    "NoSourceFilesError",
    "IncompatibleSourcesError",
    "AmbiguousKeyError",
    "ReadOnlyError",
    "ZarrFormatNotServedError",
    "StaleSourceError",
    "SourceReadError",
    "RangeNotSupportedError",
    "ExportError",
    "ExportExistsError",
    "UnsupportedVariableWarning",
    "SkippedFileWarning",
    "UnversionedSourceWarning",
    "RedactedWarning",
    "ExportIncompleteWarning",
]


class _Redacting:
    """Makes an exception's (or warning's) text arguments credential-free as it is made,
    so ``str()``, ``repr()``, tracebacks, pickles and ``warnings`` all show them redacted."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redacted_text(a) if isinstance(a, str) else a for a in args))


class VirtualZarrError(_Redacting, Exception):
    """Base class of every error raised by fsspec-virtual; its message never holds a
    credential."""


class _FileError(VirtualZarrError, OSError):
    """An error about one source file: its ``path`` and the ``reason``, in a message
    made from the class's ``template``.

    Parameters
    ----------
    path
        The URL of the file. Kept as given in the ``path`` attribute, for programs to
        match against the collection's files (it may hold a password: never print it);
        the message and ``reason`` show it redacted.
    reason
        What went wrong.
    """

    template = "{path}: {reason}"

    def __init__(self, path: str, reason: str) -> None:
        reason = redacted_text(reason)
        super().__init__(self.template.format(path=path, reason=reason))
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # OSError's default reduce would drop our arguments (errors cross process pipes)
        return (type(self), (self.path, self.reason))


class ScanError(_FileError):
    """A file that looks like data (by its magic bytes) could not be scanned."""

    template = "cannot scan {path}: {reason}"


class NoSourceFilesError(VirtualZarrError, OSError):
    """The source path does not exist, or holds no file with a known data format.

    Deliberately not a ``FileNotFoundError``: zarr reads that as "this key is missing"
    and would replace our message (which names the path) by "no group found".
    """


class IncompatibleSourcesError(VirtualZarrError, ValueError):
    """Two source files cannot be combined into one dataset.

    The message names the variable, both files and the rule that was broken.
    """


class AmbiguousKeyError(VirtualZarrError, ValueError):
    """A path names two different things in the store: the key below a chained root, and
    the same path read as a key of its own. Never a ``FileNotFoundError`` (zarr would
    serve fill values)."""


class ReadOnlyError(VirtualZarrError, PermissionError):
    """The virtual store is read-only."""


class ZarrFormatNotServedError(VirtualZarrError, NotImplementedError):
    """A client asked for Zarr format 3 metadata (``zarr.json``); the store serves Zarr
    format 2. Open with ``zarr_format=2``, or without ``zarr_format``."""


class StaleSourceError(_FileError):
    """A source file changed (or vanished) since it was scanned: its old offsets would
    read wrong bytes, so nothing is served from it until ``fs.refresh()``."""

    template = "{path} changed since it was scanned ({reason}); call fs.refresh()"


class SourceReadError(_FileError):
    """Bytes of a source file could not be read (network error, timeout, server error),
    after the retries its filesystem makes.

    Deliberately not a ``FileNotFoundError`` (zarr would serve fill values instead).
    """

    template = "cannot read {path}: {reason}"


class RangeNotSupportedError(SourceReadError):
    """The server answered a range request with the whole file: it does not support
    ``Range``, and offsets into its answers would be wrong bytes."""

    def __init__(self, path: str, reason: str = "") -> None:
        super().__init__(
            path,
            reason
            or "the server ignores HTTP Range requests (it sent the whole file); "
            "fsspec-virtual needs byte ranges: serve the files from a server that "
            "supports them, or copy them locally",
        )


class ExportError(VirtualZarrError, ValueError):
    """An export cannot be written as asked: an unknown format, or source URLs that carry
    credentials (an export would publish them)."""


class ExportExistsError(VirtualZarrError, FileExistsError):
    """The export's target (or its side store for computed chunks) exists already; pass
    ``overwrite=True`` to replace it. (Not an :class:`ExportError`: an exception cannot be
    both a ``ValueError`` and an ``OSError`` and still pickle.)"""


class RedactedWarning(_Redacting, UserWarning):
    """Base of the package's warnings: their messages never hold a credential."""


class UnsupportedVariableWarning(RedactedWarning):
    """A variable of a source file cannot be served yet and is left out of the store."""


class UnversionedSourceWarning(RedactedWarning):
    """A source file has no version beyond its size (a server that sends neither ``ETag``
    nor ``Last-Modified``): a rewrite at the same size cannot be told from it."""


class SkippedFileWarning(RedactedWarning):
    """A source file could not be scanned and was skipped (``on_error="skip"``)."""


class ExportIncompleteWarning(RedactedWarning):
    """A variable of the store is left out of an export (named, with why): its computed
    chunks are too large to write inline and no side store was given, or the store
    itself does not serve it."""
