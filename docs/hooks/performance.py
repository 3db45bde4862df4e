"""MkDocs hook: the performance page shows the published benchmark result, rendered at build.

``benchmarks/published/medium.json`` (a ``benchmarks/run.py`` result) becomes the plot
``performance/medium.svg`` (by ``benchmarks/plot.py``, matplotlib's Agg backend) and, where
``docs/performance.md`` has the marker ``<!-- benchmark -->``, a paragraph saying what was
measured and a table of every figure. Nothing on that page is typed by hand.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

matplotlib.use("Agg")  # no display at build time

PAGE = "performance.md"
MARKER = "<!-- benchmark -->"
PLOT = "performance/medium.svg"
RESULT = Path("benchmarks/published/medium.json")


def _root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _plot_module(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_plot", root / "benchmarks/plot.py")
    if spec is None or spec.loader is None:
        raise PluginError("cannot load benchmarks/plot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _result(root: Path) -> dict[str, Any]:
    path = root / RESULT
    if not path.exists():
        raise PluginError(f"{RESULT} is missing: the performance page plots it")
    return json.loads(path.read_text())


def on_files(files: Files, config: Any) -> Files:
    root = _root(config)
    buffer = io.BytesIO()
    _plot_module(root).figure(_result(root)).savefig(buffer, format="svg")
    files.append(File.generated(config, PLOT, content=buffer.getvalue()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} has no {MARKER} marker for the benchmark table")
    root = _root(config)
    plot, result = _plot_module(root), _result(root)
    return markdown.replace(MARKER, plot.context(result) + "\n\n" + plot.table(result))
