"""The documentation site builds (``mkdocs build --strict``) and cannot drift from the code.

The build renders the API reference from the docstrings (mkdocstrings) and the performance
plot from ``benchmarks/published/medium.json``; these tests check both came out, that the
design map names every module, that the command-line page names every flag, and that the
self-contained examples of the quickstart and snapshot pages run as written.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import matplotlib
import pytest
import yaml

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fsspec_virtual"
PUBLISHED = ROOT / "benchmarks" / "published" / "medium.json"
#: pages whose ```python blocks, run in order in an empty directory, are a whole program
RUNNABLE_PAGES = ("quickstart.md", "snapshots.md")


def _nav_pages() -> list[str]:
    # mkdocs.yml is plain YAML (no !!python tags): safe_load reads it
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return [page for entry in config["nav"] for page in entry.values()]


def _text(html_page: str) -> str:
    """A built page's visible text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_page))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _built(site: Path, page: str) -> Path:
    name = page.removesuffix(".md")
    return site / "index.html" if name == "index" else site / name / "index.html"


def test_every_nav_page_is_built(site: Path) -> None:
    pages = _nav_pages()
    assert len(pages) == 14
    for page in pages:
        assert (ROOT / "docs" / page).exists(), page
        built = _built(site, page)
        assert built.exists(), page
        title = (ROOT / "docs" / page).read_text().splitlines()[0].lstrip("# ").strip()
        assert title in _text(built.read_text()), page


def test_api_page_is_rendered_from_the_docstrings(site: Path) -> None:
    from fsspec_virtual import VirtualZarrFileSystem, errors

    text = re.sub(r"\s+", " ", _text(_built(site, "api.md").read_text()))
    assert "VirtualZarrFileSystem" in text
    # a sentence of the class's docstring, and of refresh()'s: rendered, not typed
    for doc in (VirtualZarrFileSystem.__doc__, VirtualZarrFileSystem.refresh.__doc__):
        first = re.sub(r"\s+", " ", (doc or "").strip().split(".")[0])
        assert first and first in text, first
    # numpydoc parameters became a parameter table (the option names, with their defaults)
    assert "listing_ttl" in text and "cache_secret" in text
    for name in errors.__all__:
        if name != "RedactedWarning":
            assert name in text, name


def test_performance_plot_is_a_valid_image(site: Path) -> None:
    svg = site / "performance" / "medium.svg"
    root = ET.parse(svg).getroot()
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    page = _built(site, "performance.md").read_text()
    assert 'src="medium.svg"' in page
    # the table is the published result's, figure by figure
    result = json.loads(PUBLISHED.read_text())
    text = _text(page)
    for fig in result["figures"]:
        assert fig["figure"] in text, fig["figure"]
        for peer in fig["peers"]:
            assert peer in text, peer


def test_errors_page_names_every_exception_and_warning() -> None:
    from fsspec_virtual import errors
    from fsspec_virtual.scan_cache import CorruptCacheEntryWarning

    doc = (ROOT / "docs" / "errors.md").read_text()
    for name in [*errors.__all__, CorruptCacheEntryWarning.__name__]:
        assert f"| `{name}` |" in doc or f"`{name}` itself" in doc, name


def _module_names() -> list[str]:
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


def test_design_map_names_every_module(site: Path) -> None:
    text = _text(_built(site, "design.md").read_text())
    for module in _module_names():
        # scan/hdf5.py must be named as such; a bare __init__.py is the package's own
        assert re.search(rf"(?<![\w/.]){re.escape(module)}(?!\w)", text), module


def test_design_map_names_no_module_that_does_not_exist() -> None:
    source = (ROOT / "docs" / "design.md").read_text()
    modules = set(_module_names())
    named = re.findall(r"(?<![\w/.])((?:[a-z_]+/)?[a-z_0-9]+\.py)\b", source)
    assert named
    for name in named:
        assert name in modules or any(m.endswith("/" + name) for m in modules), name


def test_cli_page_names_every_flag() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for command in ([], ["info"], ["scan"], ["demo"], ["serve"]):
        out = subprocess.run(
            [sys.executable, "-m", "fsspec_virtual", *command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out)) - {"--help"}
        assert command or flags, out
        for flag in flags:
            assert f"`{flag}" in doc, (command, flag)
        if command:
            assert f"## `{command[0]}`" in doc


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_examples_run(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from fsspec_virtual.state import clear_states

    source = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", source, re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clear_states()
    try:
        exec(compile("\n".join(blocks), page, "exec"), {"__name__": "__docs__"})
    finally:
        clear_states()
    printed = capsys.readouterr().out
    # what the page says a print shows (``print(x)  # shown``) is what it printed
    for shown in re.findall(r"print\(.*\)[ \t]+# (\S.*)$", "\n".join(blocks), re.M):
        if shown[0] in "{([<'0123456789" and "..." not in shown:
            assert shown.strip() in printed, shown


def _plot_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_plot", ROOT / "benchmarks/plot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plot_bars_are_the_published_figures() -> None:
    plot = _plot_module()
    result = json.loads(PUBLISHED.read_text())
    fig = plot.figure(result)
    panels = plot.panel_figures(result)
    assert len(panels) == len(plot.PANELS)  # the published run has every panel's figure
    assert len(fig.axes) == len(panels)
    for ax, (_, figure) in zip(fig.axes, panels):
        entries = [figure["ours"], *figure["peers"].values()]
        expected = [entry.get("median", 0.0) for entry in entries]
        widths = [patch.get_width() for patch in ax.patches]
        assert widths == pytest.approx(expected, rel=1e-12)
        labels = [label.get_text() for label in ax.get_yticklabels()]
        assert labels == [plot.OURS, *figure["peers"]]
        assert figure["unit"] in ax.get_xlabel()
