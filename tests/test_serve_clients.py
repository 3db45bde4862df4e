"""Clients that are not Python, against the HTTP server on 127.0.0.1: zarrita.js in Node
reading arrays whole and in slices, and the landing page in headless Chromium.

The truth is the files read directly (``open_mfdataset``'s raw values, dtype-exact). These
tests skip only where the program they drive is absent (``node``, ``chromium``); CI
installs both (``tests/js/install-clients.sh``, the first step of the test command).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import html.parser
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_groups, write_series
from oracle import open_truth
from serve_helpers import EVIL_NAMES, serving, write_cube

from fsspec_virtual import VirtualZarrFileSystem

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_node = pytest.mark.skipif(
    NODE is None,
    reason="node is not installed: the zarrita.js client test runs Node.js "
    "(bash tests/js/install-clients.sh installs it)",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: the browser test runs Debian's headless chromium "
    "(bash tests/js/install-clients.sh installs it)",
)


# -- zarrita.js ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zarrita() -> Path:
    """The script reading a store with zarrita.js, its npm packages installed
    (``npm ci`` from the committed lock file, once, whichever test worker comes first)."""
    if NODE is None:
        pytest.skip("node is not installed")
    script = JS_DIR / "read_store.mjs"
    key = hashlib.sha256(str(JS_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"fsspec-virtual-npm-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (JS_DIR / "node_modules" / "zarrita" / "package.json").exists():
            npm = shutil.which("npm")
            assert npm is not None, "node is installed but npm is not: cannot install zarrita"
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600
            )
    return script


def read_with_zarrita(
    script: Path, url: str, reads: list[dict[str, Any]], *, consolidated: bool
) -> dict[str, Any]:
    """Run the zarrita.js script; its reads as numpy arrays (``"reads"``: path -> list)."""
    spec = {"url": url, "consolidated": consolidated, "reads": reads}
    done = subprocess.run(
        [str(NODE), str(script), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"zarrita.js failed:\n{done.stderr}"
    answer = json.loads(done.stdout)
    arrays = []
    for read in answer["reads"]:
        dtype = np.dtype(read["dtype"])  # zarrita's names are numpy's: "float32", "uint64"
        values = np.frombuffer(base64.b64decode(read["bytes"]), dtype=dtype)
        arrays.append((read["path"], read["dtype"], values.reshape(read["shape"])))
    answer["arrays"] = arrays
    return answer


def _native(values: np.ndarray) -> np.ndarray:
    return values.astype(values.dtype.newbyteorder("="))


def assert_exact(actual: np.ndarray, dtype_name: str, expected: np.ndarray, where: str) -> None:
    """Same dtype (native order), shape and values, NaN where NaN."""
    expected = _native(np.asarray(expected))
    assert dtype_name == expected.dtype.name, (
        f"{where}: dtype {dtype_name}, expected {expected.dtype}"
    )
    assert actual.shape == expected.shape, (
        f"{where}: shape {actual.shape}, expected {expected.shape}"
    )
    if expected.dtype.kind == "f":
        same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        assert same.all(), f"{where}: values differ at {np.argwhere(~same)[:5].tolist()}"
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=where)


def _selection(items: list[Any]) -> tuple[Any, ...]:
    return tuple(
        slice(None) if item is None else slice(*item) if isinstance(item, list) else item
        for item in items
    )


@pytest.fixture
def series_files(tmp_path: Path) -> list[Path]:
    """Two NetCDF4 files along time (3 + 2 steps, chunks of 2: the second file's chunks
    are computed), one variable per numeric dtype."""
    return write_series(tmp_path / "series", [[0.0, 1.0, 2.0], [3.0, 4.0]])


def _store(path: Path, **options: Any) -> VirtualZarrFileSystem:
    return VirtualZarrFileSystem(str(path), max_workers=1, **options)


@needs_node
@pytest.mark.parametrize("zarr_format", [2, 3], ids=["v2", "v3"])
@pytest.mark.parametrize("consolidated", [True, False], ids=["consolidated", "by-key"])
def test_zarrita_reads_every_variable_whole_and_sliced(
    zarrita: Path, series_files: list[Path], consolidated: bool, zarr_format: int
) -> None:
    truth = open_truth(series_files, decode_cf=False)
    names = sorted(str(n) for n in truth.variables if truth[n].ndim > 0)
    reads: list[dict[str, Any]] = [{"path": n, "selection": None} for n in names]
    # slices across the two files (a computed chunk), a point, a negative-free tail
    two_d = [n for n in names if truth[n].ndim == 2]
    reads += [{"path": n, "selection": [[1, 4], [1, 4]]} for n in two_d]
    reads += [{"path": n, "selection": [3, None]} for n in two_d]
    reads.append({"path": "time", "selection": [[2, 5]]})
    fs = _store(series_files[0].parent, concat_dim="time", zarr_format=zarr_format)
    with serving(fs) as url:
        answer = read_with_zarrita(zarrita, url, reads, consolidated=consolidated)
    assert len(answer["arrays"]) == len(reads)
    for read, (path, dtype_name, values) in zip(reads, answer["arrays"]):
        assert path == read["path"]
        expected = truth[path].values
        if read["selection"] is not None:
            expected = expected[_selection(read["selection"])]
        assert_exact(values, dtype_name, expected, f"zarrita {path}{read['selection']}")
    if consolidated:
        listed = set(answer["contents"])
        assert {f"array:/{n}" for n in names} <= listed
        assert "group:/" in listed


@needs_node
@pytest.mark.parametrize("zarr_format", [2, 3], ids=["v2", "v3"])
def test_zarrita_reads_arrays_in_groups(zarrita: Path, tmp_path: Path, zarr_format: int) -> None:
    (tmp_path / "groups").mkdir()
    path = write_groups(tmp_path / "groups" / "g.nc")
    reads = [
        {"path": "g1/b", "selection": None},
        {"path": "g1/b", "selection": [[1, 3], 1]},
        {"path": "g1/g2/d", "selection": None},
        {"path": "g1/g2/d", "selection": [[0, 2], [1, 4]]},
        {"path": "g1/g2/c", "selection": None},
    ]
    with serving(_store(path.parent, zarr_format=zarr_format)) as url:
        answer = read_with_zarrita(zarrita, url, reads, consolidated=True)
    for read, (name, dtype_name, values) in zip(reads, answer["arrays"]):
        group, _, variable = name.rpartition("/")
        truth = open_truth([path], None, decode_cf=False, group=group)
        expected = truth[variable].values
        if read["selection"] is not None:
            expected = expected[_selection(read["selection"])]
        assert_exact(values, dtype_name, expected, f"zarrita {name}{read['selection']}")
    assert "group:/g1/g2" in answer["contents"]


# -- headless Chromium --------------------------------------------------------------------


class _Page(html.parser.HTMLParser):
    """What a dumped DOM shows: variable names (cells of class ``name``) and images."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self._in_name = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "td" and "name" in (attributes.get("class") or "").split():
            self._in_name = True
            self.names.append("")
        elif tag == "img":
            self.images.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_name = False

    def handle_data(self, data: str) -> None:
        if self._in_name:
            self.names[-1] += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def run_chromium(url: str, profile: Path) -> tuple[str, list[str]]:
    """Load ``url`` in headless Chromium until the page is done; its DOM and the console
    lines it logged."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--allow-file-access-from-files",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


@pytest.fixture
def cube_files(tmp_path: Path) -> list[Path]:
    return write_cube(tmp_path / "cube", evil=True)


@needs_chromium
def test_chromium_shows_the_landing_page_without_console_errors(
    cube_files: list[Path], tmp_path: Path
) -> None:
    fs = _store(cube_files[0].parent, concat_dim="time")
    with serving(fs) as url:
        dom, console = run_chromium(url, tmp_path / "profile")
    assert console == [], "the page logged to the console:\n" + "\n".join(console)
    page = _parse(dom)
    expected = {"time", "level", "lat", "lon", "t2m", "u", "land", "mean_t2m", *EVIL_NAMES}
    assert expected <= set(page.names)
    sources = sorted(str(image["data-variable"]) for image in page.images)
    assert sources == sorted(["land", "t2m", "u", *EVIL_NAMES])  # 2 or more dimensions


#: Run inside a copy of the landing page: every image loaded now (not lazily) and decoded,
#: its natural size written where --dump-dom shows it.
_DECODE_CHECK = """<script>
(async () => {
  const images = [...document.images];
  for (const image of images) image.loading = "eager";
  await Promise.all(images.map((image) => image.decode().then(
    () => { image.dataset.decoded = image.naturalWidth + "x" + image.naturalHeight; },
    () => { image.dataset.decoded = "failed"; })));
  document.body.dataset.checked = String(images.length);
})();
</script>"""


def _checked_dom(harness: Path, profile: Path, attempts: int = 3) -> str:
    """The harness's DOM once its check has finished. Chromium dumps the DOM when its
    virtual time budget runs out, which a busy machine's slow answers can outrun: a
    check that has not finished (no ``data-checked``, or an image without its result) is
    loaded again, at most ``attempts`` times; a finished one is returned as it is."""
    dom = ""
    for attempt in range(attempts):
        dom, _ = run_chromium(harness.as_uri(), profile / str(attempt))
        images = _parse(dom).images
        finished = re.search(r'<body[^>]*data-checked="(\d+)"', dom) is not None
        if finished and all(image.get("data-decoded") for image in images):
            return dom
    return dom


def _decode_harness(page: str, url: str) -> str:
    """The landing page with its relative URLs resolved against ``url`` and the check
    above (the server's own page runs no script: its policy forbids it)."""
    page = page.replace("<head>", f'<head><base href="{url}">', 1)
    return page.replace("</body>", _DECODE_CHECK + "</body>", 1)


@needs_chromium
def test_chromium_decodes_every_quicklook_image(cube_files: list[Path], tmp_path: Path) -> None:
    fs = _store(cube_files[0].parent, concat_dim="time")
    with serving(fs) as url:
        with urllib.request.urlopen(url) as answer:
            page = answer.read().decode()
        harness = tmp_path / "harness.html"
        harness.write_text(_decode_harness(page, url))
        dom = _checked_dom(harness, tmp_path / "profile")
    checked = re.search(r'<body[^>]*data-checked="(\d+)"', dom)
    assert checked is not None, "the check did not finish"
    images = _parse(dom).images
    assert int(checked.group(1)) == len(images) == 5
    for image in images:
        assert image.get("data-decoded") == "640x480", f"{image.get('src')}: {image}"


@needs_chromium
def test_chromium_check_sees_an_image_that_does_not_decode(
    cube_files: list[Path], tmp_path: Path
) -> None:
    """The decode check above can fail: an image the server refuses (404) is seen."""
    fs = _store(cube_files[0].parent, concat_dim="time")
    with serving(fs) as url:
        with urllib.request.urlopen(url) as answer:
            page = answer.read().decode()
        page = page.replace("quicklook/land.png", "quicklook/no-such-variable.png")
        harness = tmp_path / "harness.html"
        harness.write_text(_decode_harness(page, url))
        dom = _checked_dom(harness, tmp_path / "profile")
    decoded = sorted(str(image.get("data-decoded")) for image in _parse(dom).images)
    assert decoded == ["640x480"] * 4 + ["failed"]
