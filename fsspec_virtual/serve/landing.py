"""The landing page: a snapshot of the store as a person wants to see it, as plain HTML.

Pure: :func:`landing_html` takes a snapshot and its report and returns a page that needs
nothing else (no script, no external resource, a little CSS inline). Everything that comes
from the files (names, attributes, paths) is HTML-escaped; paths and report reasons have
their credentials redacted.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..manifest import ArrayMeta
from ..options import redacted_text

if TYPE_CHECKING:
    from ..report import ScanReport, VariableReport
    from ..state import CollectionState

__all__ = [
    "GroupView",
    "group_views",
    "has_quicklook",
    "landing_html",
    "quicklook_url",
    "MAX_FILES_LISTED",
]

#: numpy dtype kinds a quick-look image can show (booleans, integers, floats)
IMAGE_KINDS = frozenset("biuf")
#: Files listed by name (in path order); the count and total size cover all.
MAX_FILES_LISTED = 1000

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:72em;padding:0 1em;color:#1b1b1b;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;margin-top:1.6em;
border-bottom:1px solid #ccc}h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{border:1px solid #ddd;
padding:.2em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:.4em 0}
dt{font-weight:600;font-family:ui-monospace,Menlo,Consolas,monospace}
dd{margin:0;white-space:pre-wrap;word-break:break-word}
.muted{color:#666}.figs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;border:1px solid #ddd;padding:.4em;background:#fafafa}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:.9em;color:#444}
""".replace("\n", "")


@dataclass(frozen=True, slots=True)
class GroupView:
    """One group of the store as the page shows it.

    Attributes
    ----------
    path
        The group's path (``""`` for the root).
    attrs
        Its attributes.
    dimensions
        Dimension name -> the sizes the group's arrays give it (one, unless they disagree).
    coordinates, variables
        The group's arrays (path -> metadata): coordinates (named like a dimension of the
        group, or listed in an array's CF ``coordinates`` attribute) and the others.
    """

    path: str
    attrs: Mapping[str, Any]
    dimensions: dict[str, tuple[int, ...]]
    coordinates: dict[str, ArrayMeta]
    variables: dict[str, ArrayMeta]


def _cf_coordinates(metas: Iterable[ArrayMeta]) -> set[str]:
    names: set[str] = set()
    for meta in metas:
        listed = meta.attrs.get("coordinates")
        if isinstance(listed, str):
            names.update(listed.split())
    return names


def group_views(
    groups: Mapping[str, Mapping[str, Any]], arrays: Mapping[str, ArrayMeta]
) -> list[GroupView]:
    """Each group with its dimensions, coordinates and variables, the root first."""
    views = []
    for group in sorted(groups, key=lambda g: (g != "", g)):
        members = {
            path: meta for path, meta in sorted(arrays.items()) if path.rpartition("/")[0] == group
        }
        sizes: dict[str, list[int]] = {}
        for meta in members.values():
            for dim, size in zip(meta.dimensions, meta.shape):
                seen = sizes.setdefault(dim, [])
                if size not in seen:
                    seen.append(size)
        coordinate_names = set(sizes) | _cf_coordinates(members.values())
        coordinates = {p: m for p, m in members.items() if p.rpartition("/")[2] in coordinate_names}
        variables = {p: m for p, m in members.items() if p not in coordinates}
        dimensions = {d: tuple(s) for d, s in sizes.items()}
        views.append(GroupView(group, groups[group], dimensions, coordinates, variables))
    return views


def has_quicklook(meta: ArrayMeta) -> bool:
    """Whether a quick-look image is offered: two or more dimensions, numeric values,
    some of them."""
    dtype = meta.numpy_dtype
    numeric = dtype.names is None and dtype.kind in IMAGE_KINDS
    return len(meta.shape) >= 2 and numeric and 0 not in meta.shape


def quicklook_url(path: str) -> str:
    """The quick-look image's URL relative to the landing page (``quicklook/g1/t2m.png``)."""
    return f"quicklook/{quote(path)}.png"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), 4)
    return f"{n / 1024**exponent:.1f} {'KMGT'[exponent - 1]}iB"


def _attr_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_attr_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _attrs_html(attrs: Mapping[str, Any]) -> str:
    if not attrs:
        return '<p class="muted">no attributes</p>'
    items = "".join(
        f"<dt>{_e(k)}</dt><dd>{_e(_attr_text(v))}</dd>" for k, v in sorted(attrs.items())
    )
    return f"<dl>{items}</dl>"


def _shown_attrs(meta: ArrayMeta) -> Mapping[str, Any]:
    """A variable's attributes as netCDF shows them: its declared fill value (which the
    store serves as the array's ``fill_value``) as ``_FillValue``."""
    if meta.fill_value is None or "_FillValue" in meta.attrs:
        return meta.attrs
    return {**meta.attrs, "_FillValue": meta.fill_value}


def _table(head: Sequence[str], rows: Iterable[str]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _served(report: VariableReport | None) -> str:
    if report is None:
        return ""
    counts = ", ".join(f"{n} {kind}" for kind, n in report.chunks.items() if n)
    text = report.how + (f" ({counts})" if counts else "")
    if report.reason:
        text += f": {report.reason}"
    return redacted_text(text)


def _array_rows(
    arrays: Mapping[str, ArrayMeta], served: Mapping[str, VariableReport]
) -> Iterable[str]:
    for path, meta in arrays.items():
        name = path.rpartition("/")[2]
        dims = ", ".join(f"{d}: {s}" for d, s in zip(meta.dimensions, meta.shape))
        cells = (
            f'<td class="name" id="var-{_e(path)}">{_e(name)}</td>',
            f"<td>({_e(dims)})</td>",
            f"<td><code>{_e(meta.numpy_dtype)}</code></td>",
            f"<td>{_e(_attr_text(meta.attrs.get('units', '')))}</td>",
            f"<td>{_e(_attr_text(meta.attrs.get('long_name', '')))}</td>",
            f"<td>{_e(_served(served.get(path)))}</td>",
        )
        yield f"<tr>{''.join(cells)}</tr>"


_ARRAY_HEAD = ("name", "dimensions", "dtype", "units", "long name", "served")


def _group_html(view: GroupView, served: Mapping[str, VariableReport], quicklooks: bool) -> str:
    title = f"/{view.path}" if view.path else "/ (root)"
    parts = [f'<section class="group" id="group-{_e(view.path)}"><h2>{_e(title)}</h2>']
    if view.dimensions:
        dims = (
            f'<tr><td class="name">{_e(d)}</td>'
            f'<td class="num">{_e(", ".join(str(s) for s in sizes))}</td></tr>'
            for d, sizes in view.dimensions.items()
        )
        parts += ["<h3>Dimensions</h3>", _table(("name", "size"), dims)]
    if view.coordinates:
        parts += [
            "<h3>Coordinates</h3>",
            _table(_ARRAY_HEAD, _array_rows(view.coordinates, served)),
        ]
    if view.variables:
        parts += ["<h3>Variables</h3>", _table(_ARRAY_HEAD, _array_rows(view.variables, served))]
    if not view.coordinates and not view.variables:
        parts.append('<p class="muted">no arrays</p>')
    parts += ["<h3>Attributes</h3>", _attrs_html(view.attrs)]
    arrays = {**view.coordinates, **view.variables}
    with_attrs = [(p, a) for p, a in ((p, _shown_attrs(m)) for p, m in arrays.items()) if a]
    if with_attrs:
        parts.append("<h3>Variable attributes</h3>")
        parts += [
            f'<details><summary class="name">{_e(p.rpartition("/")[2])}</summary>'
            f"{_attrs_html(attrs)}</details>"
            for p, attrs in with_attrs
        ]
    figures = [
        f'<figure><img src="{_e(quicklook_url(p))}" '
        f'alt="{_e("quick-look of " + p)}" data-variable="{_e(p)}" loading="lazy" '
        f'width="640" height="480"><figcaption class="name">{_e(p)}</figcaption></figure>'
        for p, m in arrays.items()
        if quicklooks and has_quicklook(m)
    ]
    if figures:
        parts += ["<h3>Quick-look</h3>", f'<div class="figs">{"".join(figures)}</div>']
    parts.append("</section>")
    return "".join(parts)


def _files_html(state: CollectionState) -> str:
    files = sorted(state.files, key=lambda f: f.path)
    rows = (
        f'<tr><td class="name">{_e(redacted_text(f.path))}</td>'
        f'<td class="num" title="{f.size} bytes">{_e(_size(f.size))}</td>'
        f"<td>{_e(f.format)}</td></tr>"
        for f in files[:MAX_FILES_LISTED]
    )
    total = sum(f.size for f in files)
    head = f"<h2>Files</h2><p>{len(files)} file(s), {_e(_size(total))} in all.</p>"
    more = len(files) - MAX_FILES_LISTED
    tail = f'<p class="muted">and {more} more file(s), not listed.</p>' if more > 0 else ""
    return head + _table(("path", "size", "format"), rows) + tail


def _report_html(report: ScanReport) -> str:
    skipped = report.left_out
    parts = ["<h2>How it is served</h2>"]
    parts.append(
        "<p>Passthrough chunks are byte ranges of the files above, inline chunks are held in "
        "memory, computed chunks are assembled on request, missing chunks read as the fill "
        "value.</p>"
    )
    if skipped:
        rows = (
            f'<tr><td class="name">{_e(v.path)}</td><td>{_e(redacted_text(v.reason))}</td></tr>'
            for v in skipped
        )
        parts += ["<h3>Left out</h3>", _table(("variable", "why"), rows)]
    return "".join(parts)


def landing_html(
    state: CollectionState,
    report: ScanReport,
    *,
    base_url: str = "",
    quicklooks: bool = True,
    note: str = "",
) -> str:
    """The landing page of a snapshot.

    Parameters
    ----------
    state
        The snapshot served.
    report
        Its report (:meth:`~fsspec_virtual.VirtualZarrFileSystem.report`).
    base_url
        The store's URL as clients reach it, for the "open it" example (omitted if empty).
    quicklooks
        Whether to show a quick-look image of each variable of two or more dimensions.
    note
        A line shown under the title (why there are no quick-looks, say).

    Returns
    -------
    str
        A complete HTML document.
    """
    manifest = state.manifest
    metas = {path: array.meta for path, array in manifest.arrays.items()}
    views = group_views(manifest.groups, metas)
    served = {v.path: v for v in report.variables}
    root_title = manifest.groups.get("", {}).get("title")
    title = _attr_text(root_title) if root_title else "Virtual Zarr store"
    n_vars = len(metas)
    intro = (
        f"<p>{n_vars} array(s) in {len(manifest.groups)} group(s) from "
        f"{len(state.files)} file(s); snapshot <code>{_e(state.id[:13])}</code>.</p>"
    )
    if base_url:
        intro += (
            "<p>Open it: <code>xr.open_zarr("
            f"{_e(json.dumps(base_url))}, consolidated=True)</code></p>"
        )
    if note:
        intro += f'<p class="muted">{_e(note)}</p>'
    body = [f"<h1>{_e(title)}</h1>", intro]
    body += [_group_html(view, served, quicklooks) for view in views]
    body += [_files_html(state), _report_html(report)]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
