"""Plot a result of ``run.py``: bar charts of the figures a user choosing a reader compares.

    python benchmarks/plot.py benchmarks/published/medium.json medium.svg   # or .png

One panel per figure present in the result: first open time, whole-variable MB/s through
zarr and through xarray+dask, random single-chunk latency. Every reader the result has for
that figure gets a bar (its median); ours is highlighted; a reader the run could not measure
is shown as "unavailable". The documentation renders this plot, and :func:`table`, from
``benchmarks/published/medium.json`` at build time (``docs/hooks/performance.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

OURS = "fsspec-virtual"
OURS_COLOUR = "#c0392b"
PEER_COLOUR = "#7f8c8d"
LIMIT_COLOUR = "#d5dbdb"


@dataclass(frozen=True)
class Panel:
    """One chart: which figure of the result it shows, and its title."""

    title: str
    matches: Callable[[str], bool]


PANELS = (
    Panel("first open: files -> xr.Dataset", lambda name: name.startswith("first open")),
    Panel(
        "whole variable via zarr",
        lambda name: name.startswith("read ") and " via zarr" in name,
    ),
    Panel(
        "whole variable via xarray+dask",
        lambda name: name.startswith("read ") and " via xarray" in name,
    ),
    Panel(
        "random single-chunk read, median",
        lambda name: name.startswith("random single-chunk read, median"),
    ),
)


def bars(fig: dict[str, Any]) -> list[tuple[str, float | None]]:
    """A figure's readers and their medians (None: unavailable), ours first."""
    entries = [(OURS, fig["ours"]), *fig["peers"].items()]
    return [(name, entry.get("median")) for name, entry in entries]


def panel_figures(result: dict[str, Any]) -> list[tuple[Panel, dict[str, Any]]]:
    """The panels whose figure the result holds, each with that figure, in panel order."""
    found = []
    for panel in PANELS:
        for fig in result["figures"]:
            if panel.matches(fig["figure"]):
                found.append((panel, fig))
                break
    return found


def number(value: float) -> str:
    """A figure as the plot and the table print it: 3 significant digits, no exponent."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _colour(name: str) -> str:
    if name == OURS:
        return OURS_COLOUR
    return LIMIT_COLOUR if name.startswith("limit:") else PEER_COLOUR


def _draw(ax: Any, panel: Panel, fig: dict[str, Any]) -> None:
    named = bars(fig)
    labels = [name for name, _ in named]
    values = [0.0 if value is None else value for _, value in named]
    rows = list(range(len(named)))
    ax.barh(rows, values, color=[_colour(n) for n in labels])
    ax.set_yticks(rows, labels)
    ax.invert_yaxis()  # ours on top
    top = max(values) or 1.0
    for row, (_, value) in zip(rows, named):
        text = "unavailable" if value is None else number(value)
        ax.text((value or 0.0) + top * 0.01, row, text, va="center", fontsize=8, clip_on=False)
    ax.set_xlim(0, top * 1.18)
    ax.set_title(fig["figure"], fontsize=10, loc="left")
    ax.set_xlabel(f"{fig['unit']} ({fig['better']} is better; median)")
    for label in ax.get_yticklabels():
        if label.get_text() == OURS:
            label.set_fontweight("bold")


def figure(result: dict[str, Any]) -> Figure:
    """Bar charts of ``result`` (a ``run.py`` JSON document): one axes per panel present.

    Parameters
    ----------
    result
        The parsed JSON that ``run.py`` writes (``figures``: name, unit, better, ``ours``
        and ``peers`` entries with ``median``, or ``unavailable``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, not attached to pyplot (save it with ``savefig``).
    """
    found = panel_figures(result)
    if not found:
        raise ValueError("the result holds none of the figures this plot shows")
    height = sum(0.5 + 0.32 * len(fig["peers"]) + 0.9 for _, fig in found)
    out = Figure(figsize=(8.5, height), layout="constrained")
    axes = out.subplots(len(found), 1, squeeze=False)[:, 0]
    for ax, (panel, fig) in zip(axes, found):
        _draw(ax, panel, fig)
    return out


def _number(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    return "" if value is None else number(value)


def table(result: dict[str, Any]) -> str:
    """Every figure of ``result`` as one Markdown table: best, median, ratio ours/peer."""
    lines = [
        "| figure | unit | reader | best | median | ours / this |",
        "|---|---|---|---|---|---|",
    ]
    for fig in result["figures"]:
        entries = [(OURS, fig["ours"]), *fig["peers"].items()]
        for i, (name, entry) in enumerate(entries):
            what = f"{fig['figure']} ({fig['better']} is better)" if i == 0 else ""
            unit = fig["unit"] if i == 0 else ""
            reader = f"**{name}**" if name == OURS else name.replace("*", r"\*")
            if "unavailable" in entry:
                cells = ["unavailable", "", ""]
            else:
                cells = [_number(entry, "best"), _number(entry, "median"), _number(entry, "ratio")]
            lines.append("| " + " | ".join([what.replace("|", "/"), unit, reader, *cells]) + " |")
    return "\n".join(lines)


def context(result: dict[str, Any]) -> str:
    """One paragraph: what was measured, where and when (from the result itself)."""
    coll, machine, git = result["collection"], result["machine"], result.get("git", {})
    commit = str(git.get("commit") or "?")[:10]
    dirty = " (with uncommitted changes)" if git.get("package_dirty") else ""
    versions = result.get("versions", {})
    named = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (
        f"Preset `{result['preset']['name']}`: {coll['files']} files, "
        f"{coll['disk_bytes'] / 1e6:.0f} MB on disk, {coll['data_chunks']} data chunks; "
        f"the variable read is `{coll['read_variable']}` "
        f"({coll['read_variable_bytes'] / 1e6:.0f} MB decoded). "
        f"Measured {result['timestamp']} on {machine['cores']} cores ({machine['platform']}, "
        f"Python {machine['python']}), {result['repeats']} repeat(s), at commit "
        f"`{commit}`{dirty}. Versions: {named}."
    )


def main(argv: list[str] | None = None) -> int:
    """Write the plot of a result JSON to a PNG or SVG file."""
    import matplotlib

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="a JSON written by run.py")
    parser.add_argument("output", type=Path, help="the image to write (.png or .svg)")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    figure(result).savefig(args.output, dpi=120)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
