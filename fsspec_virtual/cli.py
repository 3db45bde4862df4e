"""The ``fsspec-virtual`` command: ``info``, ``scan``, ``export`` and ``demo``.

Everything it writes (results, warnings, log records, errors and their tracebacks) has the
credentials of source URLs removed (:func:`~fsspec_virtual.options.redacted_text`).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from .export.kerchunk import DEFAULT_INLINE_COMPUTED
from .options import RedactingFilter, redacted_text

__all__ = ["main"]


def _print(text: object = "", file: TextIO | None = None) -> None:
    print(redacted_text(str(text)), file=file if file is not None else sys.stdout)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line)
    (file if file is not None else sys.stderr).write(redacted_text(text))


@contextmanager
def _redacted_output() -> Iterator[None]:
    """Warnings, and log records that reach no configured handler, printed redacted
    (those of other libraries too: they may quote a source URL)."""
    guard = RedactingFilter()
    handlers = [h for h in (logging.lastResort, *logging.getLogger().handlers) if h is not None]
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        for handler in handlers:
            handler.addFilter(guard)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(guard)


#: Python argument spellings in our messages, as the command's flags spell them.
_FLAGS = (
    (re.compile(r"\bconcat_dim=\S*"), "--concat-dim DIM"),
    (re.compile(r"\bcoords_from_path=\{[^}]*\}"), "--coords-from-path NAME=REGEX"),
    (re.compile(r"\bcoords_from_path="), "--coords-from-path NAME=REGEX"),
    (re.compile(r"\bcombine='nested'"), "--combine nested"),
    (re.compile(r"\bjoin='exact'"), "--join exact"),
    (re.compile(r"\bon_error=['\"]skip['\"]"), "--on-error skip"),
    (re.compile(r"\boverwrite=True"), "--overwrite"),
)


def _as_flags(text: str) -> str:
    """A message's hints in the command's own words (``--concat-dim``, not
    ``concat_dim=``)."""
    for pattern, flag in _FLAGS:
        text = pattern.sub(flag, text)
    return text


def _failure(error: Exception, debug: bool = False) -> str:
    """What the command prints for ``error``: one line per error and cause (the whole
    traceback with ``--debug``); credentials redacted, hints spelled as flags."""
    if debug:
        return redacted_text("".join(traceback.format_exception(error)))
    if isinstance(error, _UsageError):
        return redacted_text(f"fsspec-virtual: error: {error}")
    lines = [f"fsspec-virtual: error: {type(error).__name__}: {_as_flags(str(error))}"]
    seen = {id(error)}
    cause = _cause(error)
    while cause is not None and id(cause) not in seen:
        lines.append(f"  caused by {type(cause).__name__}: {_as_flags(str(cause))}")
        seen.add(id(cause))
        cause = _cause(cause)
    return redacted_text("\n".join(lines))


def _cause(error: BaseException) -> BaseException | None:
    """The exception ``error`` was raised from, or while handling (as tracebacks show)."""
    if error.__cause__ is not None or error.__suppress_context__:
        return error.__cause__
    return error.__context__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse quotes the argument it refused: a URL with its password, maybe
        super().error(redacted_text(message))


#: What each Zarr format serves, as ``info`` reports it
_FORMATS = {
    2: "2 (.zgroup/.zarray/.zattrs, consolidated .zmetadata; chunk keys t2m/0.0.0)",
    3: "3 (zarr.json, consolidated inline in the root's; chunk keys t2m/c/0/0/0)",
}


def _summary(fs) -> str:
    state = fs.collection()
    manifest = state.manifest
    lines = [
        f"zarr format:       {_FORMATS[fs.zarr_format]}",
        f"files:             {len(state.files)}",
        f"variables:         {len(manifest.arrays)}",
        f"chunks:            {manifest.n_chunks}",
        f"bytes referenced:  {manifest.n_bytes_referenced}",
    ]
    return "\n".join(lines) + "\n\n" + str(fs.report())


class _UsageError(Exception):
    """The arguments themselves are wrong (exit status 2)."""


def _store(cls: Any, path: str, **options: Any) -> Any:
    """The filesystem, its arguments checked (construction does no I/O: what fails here
    is a usage error)."""
    try:
        return cls(path, **options)
    except (ValueError, TypeError) as e:
        raise _UsageError(_as_flags(str(e))) from e


def _combining(args: argparse.Namespace) -> dict[str, Any]:
    """The filesystem's combine options from the flags of ``_add_combining``."""
    dims = args.concat_dim
    names = [name for name, _ in args.coords_from_path or []]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _UsageError(f"--coords-from-path names {twice[0]!r} more than once")
    from_path = dict(args.coords_from_path or [])
    return {
        "on_error": args.on_error,
        "concat_dim": dims[0] if dims and len(dims) == 1 else dims,
        "combine": args.combine,
        "join": args.join,
        "coords_from_path": from_path or None,
    }


def _name_and_regex(text: str) -> tuple[str, str]:
    name, sep, pattern = text.partition("=")
    if not sep or not name or not pattern:
        raise argparse.ArgumentTypeError(f"wants NAME=REGEX, not {text!r}")
    try:
        re.compile(pattern)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"{pattern!r} is not a regex: {e}") from None
    return name, pattern


def _add_combining(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="a file that cannot be scanned is an error (raise, default) or left out with "
        "a warning (skip)",
    )
    parser.add_argument(
        "--concat-dim",
        action="append",
        default=None,
        metavar="DIM",
        help="a dimension to concatenate along (repeat for several; default: inferred "
        "from the coordinates that differ between files)",
    )
    parser.add_argument(
        "--combine",
        choices=["by_coords", "nested"],
        default="by_coords",
        help="place files by their coordinates (default), or by file-name order along "
        "--concat-dim dimensions without coordinates",
    )
    parser.add_argument(
        "--join",
        choices=["outer", "exact"],
        default="outer",
        help="a variable missing from some files is served as missing there (outer, "
        "default) or refused (exact)",
    )
    parser.add_argument(
        "--coords-from-path",
        action="append",
        default=None,
        type=_name_and_regex,
        metavar="NAME=REGEX",
        help="a file's coordinate along NAME is the regex's one group in its path "
        "(repeatable), e.g. member=_r(\\d+)i",
    )


def _info(args: argparse.Namespace) -> int:
    import xarray as xr

    from .filesystem import VirtualZarrFileSystem

    fs = _store(VirtualZarrFileSystem, args.path, **_combining(args), zarr_format=args.zarr_format)
    ds = xr.open_zarr(fs.get_mapper(""), consolidated=True, zarr_format=args.zarr_format)
    _print(ds)
    _print()
    _print(_summary(fs))
    return 0


def _scan(args: argparse.Namespace) -> int:
    import time

    from .filesystem import VirtualZarrFileSystem

    fs = _store(
        VirtualZarrFileSystem,
        args.path,
        **_combining(args),
        cache_dir=args.cache_dir,
        max_workers=args.workers,
        scheduler=args.scheduler,
        progress=True,
    )
    cache = fs.scan_cache
    assert cache is not None
    start = time.perf_counter()
    state = fs.collection()
    elapsed = time.perf_counter() - start
    _print(
        f"{len(state.files)} files: {cache.misses} scanned, {cache.hits} reused from the scan "
        f"cache at {cache.fs.unstrip_protocol(cache.root)}, in {elapsed:.1f} s"
    )
    remote, cost = state.scan_cost
    if remote:
        _print(
            f"remote scans: {cost.requests} requests ({cost.requests / remote:.1f} per file), "
            f"{cost.bytes} bytes read"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from .filesystem import VirtualZarrFileSystem

    fs = _store(VirtualZarrFileSystem, args.path, **_combining(args))
    if args.inline_computed < 0:
        raise _UsageError(f"--inline-computed must be >= 0, not {args.inline_computed}")
    report = fs.to_kerchunk(
        args.to,
        format=args.format,
        inline_computed=args.inline_computed,
        computed_to=args.computed_to,
        overwrite=args.overwrite,
    )
    _print(report)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import h5py
    import numpy as np
    import xarray as xr

    from .demo import write_sample_collection

    directory = args.dir or tempfile.mkdtemp(prefix="fsspec-virtual-demo-")
    paths = write_sample_collection(directory)
    _print(f"wrote {len(paths)} NetCDF4 files to {directory}")
    url = f"virtualzarr::{directory}/*.nc"
    _print(f'xr.open_zarr("{url}", storage_options={{"virtualzarr": {{"concat_dim": "time"}}}})\n')
    ds = xr.open_zarr(url, storage_options={"virtualzarr": {"concat_dim": "time"}})
    _print(ds)
    served = ds["t2m"].values
    with_h5py = np.concatenate([h5py.File(p, "r")["t2m"][()] for p in paths])
    if served.dtype != with_h5py.dtype or not np.array_equal(served, with_h5py):
        _print("\nCHECK FAILED: t2m differs from a direct h5py read", file=sys.stderr)
        return 1
    _print(f"\nchecked: t2m {served.shape} {served.dtype} equals a direct h5py read of every file")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from .filesystem import VirtualZarrFileSystem
    from .serve.app import Limits, run

    options: dict[str, Any] = {}
    if args.zarr_format is not None:
        options["zarr_format"] = args.zarr_format
    if args.listing_ttl is not None and args.listing_ttl < 0:
        raise _UsageError(f"--listing-ttl must be >= 0 seconds, not {args.listing_ttl}")
    fs = _store(VirtualZarrFileSystem, args.path, **_combining(args), **options)
    token = args.token or os.environ.get("FSSPEC_VIRTUAL_TOKEN") or None
    run(
        fs,
        args.host,
        args.port,
        token=token,
        listing_ttl=args.listing_ttl,
        limits=Limits(),
        cors_origins=args.cors_origin,
        allowed_hosts=args.allow_host,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (1 after an error, printed on stderr)."""
    parser = _Parser(prog="fsspec-virtual", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="print the whole traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the combined dataset and a summary")
    info.add_argument("path", help="directory, glob, file or URL of the source files")
    _add_combining(info)
    info.add_argument(
        "--zarr-format",
        type=int,
        choices=(2, 3),
        default=2,
        help="the Zarr format the store serves and xarray opens (default 2)",
    )
    info.set_defaults(run=_info)
    scan = commands.add_parser("scan", help="scan a collection into the persistent scan cache")
    scan.add_argument("path", help="directory, glob, file or URL of the source files")
    _add_combining(scan)
    scan.add_argument("--cache-dir", default=None, help="cache location (directory or URL)")
    scan.add_argument("--workers", type=int, default=None, help="scan processes (default: cores)")
    scan.add_argument(
        "--scheduler",
        choices=["processes", "dask"],
        default="processes",
        help="scan in a pool of processes (default) or on the current Dask client",
    )
    scan.set_defaults(run=_scan)
    export = commands.add_parser(
        "export", help="write the combined dataset as kerchunk references (JSON or Parquet)"
    )
    export.add_argument("path", help="directory, glob, file or URL of the source files")
    export.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="where to write: a .json file, or a .parq directory (any fsspec URL)",
    )
    export.add_argument(
        "--format",
        choices=["json", "parquet"],
        default=None,
        help="default: parquet for a name ending .parq or .parquet, else json",
    )
    export.add_argument(
        "--inline-computed",
        type=int,
        default=DEFAULT_INLINE_COMPUTED,
        metavar="BYTES",
        help="computed chunks of at most this many bytes (decoded) are written inline "
        f"(default {DEFAULT_INLINE_COMPUTED})",
    )
    export.add_argument(
        "--computed-to",
        default=None,
        metavar="URL",
        help="a directory for larger computed chunks, one file each (without it, their "
        "variables are left out, with a warning)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing export at --to"
    )
    _add_combining(export)
    export.set_defaults(run=_export)
    demo = commands.add_parser("demo", help="write a sample collection and open it")
    demo.add_argument("dir", nargs="?", default=None, help="where to write (default: a temp dir)")
    demo.set_defaults(run=_demo)
    serve = commands.add_parser(
        "serve", help="serve the combined dataset as Zarr over HTTP (until Ctrl-C)"
    )
    serve.add_argument("path", help="directory, glob, file or URL of the source files")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: all)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    serve.add_argument(
        "--token",
        default=None,
        help="require this bearer token on every request (default: the environment "
        "variable FSSPEC_VIRTUAL_TOKEN, which other users cannot see in ps)",
    )
    serve.add_argument(
        "--listing-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="list the sources again after this many seconds, serving new and changed "
        "files (default: never)",
    )
    serve.add_argument(
        "--zarr-format",
        type=int,
        choices=[2, 3],
        default=None,
        help="the Zarr format served (default 2)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="without a token, let web pages of this origin read the server "
        "(https://example.org, or '*': any); repeatable (default: none; with a token: any)",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="without a token, answer requests for this Host name too (a reverse proxy's), "
        "besides this machine's and IP addresses; repeatable",
    )
    _add_combining(serve)
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    with _redacted_output():
        try:
            code: int = args.run(args)
        except Exception as e:
            _print(_failure(e, args.debug), file=sys.stderr)
            return 2 if isinstance(e, _UsageError) else 1
    return code
