"""The landing page and the quick-look images of the HTTP server, on 127.0.0.1.

The page is parsed with ``html.parser`` (every variable listed with what the files say of
it, names and attributes shown as text); images are decoded (size, not blank); the values
a quick-look draws are compared with ``open_mfdataset``'s decoded slice.
"""

from __future__ import annotations

import dataclasses
import html.parser
import io
import os
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import xarray as xr
from conftest import write_groups
from matplotlib import image as mpimg
from oracle import open_truth
from serve_helpers import (
    EVIL_COMMENT,
    EVIL_DIM,
    EVIL_LONG_NAME,
    EVIL_NAMES,
    EVIL_NOTE,
    get,
    serving,
    write_cube,
)

from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual.access import FileVersion
from fsspec_virtual.report import describe
from fsspec_virtual.serve import landing, pages, quicklook
from fsspec_virtual.serve.pages import PAGE_POLICY
from fsspec_virtual.source import SourceFile

# -- the page as a parser sees it -------------------------------------------------------------


class Page(html.parser.HTMLParser):
    """Sections (one per group: their tables' rows as lists of cell texts), attribute
    lists, images, scripts, and every URL the page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, list[list[str]]]] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text = ""
        self._section = "(page)"
        self.sections["(page)"] = {}
        self._heading = ""
        self._h3 = False
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._dt: str | None = None
        self._in_dt = False
        self._in_dd = False
        self._summary = ""
        self._in_summary = False
        self._dl_owner = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href"):
            if attributes.get(name):
                self.urls.append(str(attributes[name]))
        if tag == "section":
            self._section = str(attributes.get("id", "")).removeprefix("group-")
            self.sections[self._section] = {}
        elif tag in ("h2", "h3"):
            self._h3, self._heading = True, ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "summary":
            self._in_summary, self._summary = True, ""
        elif tag == "dl":
            owner = self._summary if self._heading == "Variable attributes" else ""
            self._dl_owner = f"{self._section}/{owner}".strip("/")
            self.attributes[self._dl_owner] = {}
        elif tag == "dt":
            self._in_dt, self._dt = True, ""
        elif tag == "dd":
            self._in_dd = True
            assert self._dt is not None
            self.attributes[self._dl_owner][self._dt] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3"):
            self._h3 = False
        elif tag == "section":
            self._section = "(page)"
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and self._section in self.sections:
                self.sections[self._section].setdefault(self._heading, []).append(self._row)
            self._row = None
        elif tag == "summary":
            self._in_summary = False
        elif tag == "dt":
            self._in_dt = False
        elif tag == "dd":
            self._in_dd = False

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._h3:
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)
        if self._in_summary:
            self._summary += data
        if self._in_dt and self._dt is not None:
            self._dt += data
        if self._in_dd and self._dt is not None:
            self.attributes[self._dl_owner][self._dt] += data

    def table(self, section: str, heading: str) -> dict[str, list[str]]:
        """A table of a section by its first column (header row left out)."""
        rows = self.sections[section].get(heading, [])
        return {row[0]: row for row in rows[1:]}


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def _store(path: Path, **options: Any) -> VirtualZarrFileSystem:
    return VirtualZarrFileSystem(str(path), max_workers=1, **options)


@pytest.fixture
def cube(tmp_path: Path) -> list[Path]:
    return write_cube(tmp_path / "cube", evil=True)


@pytest.fixture
def cube_server(cube: list[Path]) -> Any:
    with serving(_store(cube[0].parent, concat_dim="time")) as url:
        yield url


# -- the landing page -------------------------------------------------------------------------


def test_page_lists_every_variable_with_dimensions_dtype_units_and_long_name(
    cube: list[Path], cube_server: str
) -> None:
    answer = get(cube_server)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    page = parse(answer.text)
    truth = open_truth(cube, decode_cf=False)
    dims = page.table("", "Dimensions")
    assert {name: int(row[1]) for name, row in dims.items()} == dict(truth.sizes)
    coordinates = page.table("", "Coordinates")
    variables = page.table("", "Variables")
    assert set(coordinates) == {"time", "level", "lat", "lon"}
    assert set(variables) == set(map(str, truth.data_vars))
    for name, row in {**coordinates, **variables}.items():
        variable = truth[name]
        _, shown_dims, dtype, units, long_name, served = row
        spelled = ", ".join(f"{d}: {n}" for d, n in zip(variable.dims, variable.shape))
        assert shown_dims == f"({spelled})", name
        assert dtype == str(variable.dtype), name
        assert units == str(variable.attrs.get("units", "")), name
        assert long_name == str(variable.attrs.get("long_name", "")), name
        assert served.split(" ")[0] in ("passthrough", "inline", "mixed", "computed"), served
    # global attributes (the first file's), and each variable's
    assert page.attributes[""]["title"] == "a cube of test files"
    assert page.attributes[""]["institution"] == "tests & <co>"
    assert page.attributes["t2m"]["scale_factor"] == "0.01"
    assert page.attributes["t2m"]["long_name"] == "2 m temperature"
    assert page.attributes["t2m"]["_FillValue"] == "-9999"
    assert "_FillValue" not in page.attributes["u"]  # none declared


def test_page_offers_a_quicklook_per_variable_of_two_or_more_dimensions(
    cube_server: str,
) -> None:
    page = parse(get(cube_server).text)
    shown = {str(image["data-variable"]): image for image in page.images}
    assert set(shown) == {"t2m", "u", "land", *EVIL_NAMES}  # not time, lat, mean_t2m
    assert shown["t2m"]["src"] == "quicklook/t2m.png"
    for name, image in shown.items():
        assert image["src"] == f"quicklook/{quote(name)}.png"
        assert get(cube_server + str(image["src"])).status == 200, name


def test_page_shows_html_in_names_and_attributes_as_text(cube_server: str) -> None:
    text = get(cube_server).text
    page = parse(text)
    # nothing from the files became markup: the only elements are the page's own
    assert "script" not in page.tags
    assert [t for t in page.tags if t == "img"] == ["img"] * 5
    assert set(EVIL_NAMES) <= set(page.table("", "Variables"))
    assert EVIL_DIM in page.table("", "Dimensions")
    assert page.attributes[""]["note"] == EVIL_NOTE
    for name in EVIL_NAMES:
        assert page.attributes[name]["comment"] == EVIL_COMMENT
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)" in text


def test_page_lists_the_files_with_their_sizes(cube: list[Path], cube_server: str) -> None:
    page = parse(get(cube_server).text)
    listed = page.table("(page)", "Files")
    assert set(listed) == {str(p) for p in cube}
    for path in cube:
        size = listed[str(path)][1]
        assert re.fullmatch(r"[\d.]+ (B|KiB|MiB)", size), size
    assert f'title="{os.path.getsize(cube[0])} bytes"' in get(cube_server).text


def test_page_loads_nothing_from_elsewhere_and_runs_no_script(cube_server: str) -> None:
    answer = get(cube_server)
    assert answer.headers["Content-Security-Policy"] == PAGE_POLICY
    page = parse(answer.text)
    assert "script" not in page.tags and "link" not in page.tags
    assert page.urls and all(u.startswith("quicklook/") for u in page.urls)


def test_page_answers_304_to_its_etag_and_head_without_body(cube_server: str) -> None:
    first = get(cube_server)
    tag = first.headers["ETag"]
    again = get(cube_server, {"If-None-Match": tag})
    assert again.status == 304 and again.body == b""
    head = get(cube_server, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert get(cube_server, {"If-None-Match": '"other"'}).status == 200


def test_page_shows_groups_as_sections(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    path = write_groups(tmp_path / "g" / "groups.nc")
    with serving(_store(path.parent)) as url:
        page = parse(get(url).text)
        images = sorted(str(i["data-variable"]) for i in page.images)
        assert images == ["g1/b", "g1/g2/d"]
        for image in page.images:
            assert get(url + str(image["src"])).status == 200
    assert set(page.sections) == {"(page)", "", "g1", "g1/g2", "g3"}
    assert set(page.table("g1", "Variables")) == {"a", "b"}
    assert set(page.table("g1/g2", "Variables")) == {"c", "d"}
    assert page.table("g1/g2", "Variables")["d"][3] == "K"
    assert page.table("g1/g2", "Dimensions")["z"][1] == "4"
    assert page.attributes["g1/g2"]["description"] == "second level"
    assert page.attributes["g3"]["note"] == "a group without variables"
    assert page.attributes["g1/g2/c"]["_FillValue"] == "999"


def test_page_redacts_credentials_in_paths_and_reasons(cube: list[Path]) -> None:
    fs = _store(cube[0].parent, concat_dim="time")
    state = fs.collection()
    secret_url = "https://reader:hunter2@data.example/x.nc?X-Amz-Signature=abc123"
    files = (SourceFile(secret_url, FileVersion(1234), "hdf5"), *state.files[1:])
    manifest = dataclasses.replace(
        state.manifest, skipped={"left": f"cannot read {secret_url}: 500"}
    )
    shown = dataclasses.replace(state, files=files, manifest=manifest)
    text = landing.landing_html(shown, describe(manifest, len(files)))
    assert "hunter2" not in text and "abc123" not in text
    assert "reader:***@data.example" in text
    assert "left" in parse(text).text


# -- quick-look images -----------------------------------------------------------------------


def decoded_png(body: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(body), format="png")


def test_quicklook_is_a_png_of_the_right_size_and_not_blank(cube_server: str) -> None:
    answer = get(cube_server + "quicklook/t2m.png")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "image/png"
    pixels = decoded_png(answer.body)
    assert pixels.shape[:2] == (480, 640)
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)
    assert len(colours) > 50  # a colour map, a colour bar, text: not a blank canvas
    again = get(cube_server + "quicklook/t2m.png", {"If-None-Match": answer.headers["ETag"]})
    assert again.status == 304


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each quick-look drew: the values and the title (rendering as usual)."""
    calls: list[dict[str, Any]] = []
    render = quicklook.render_png

    def recording(values: np.ndarray, **kwargs: Any) -> bytes:
        calls.append({"values": np.array(values), **kwargs})
        return render(values, **kwargs)

    monkeypatch.setattr(quicklook, "render_png", recording)
    return calls


@pytest.mark.parametrize(
    ("variable", "query", "where", "title"),
    [
        ("t2m", "", {"time": 0}, "time = 2001-01-01 (index 0 of 6)"),
        ("t2m", "?time=3", {"time": 3}, "time = 2001-01-04 (index 3 of 6)"),
        ("t2m", "?time=-1", {"time": 5}, "time = 2001-01-06 (index 5 of 6)"),
        ("t2m", "?time=2001-01-04", {"time": 3}, "index 3 of 6"),
        ("t2m", "?time=2001-01-04T00:00", {"time": 3}, "index 3 of 6"),
        ("u", "", {"time": 0, "level": 0}, "time = 2001-01-01 (index 0 of 6), level = 500"),
        ("u", "?level=value:850&time=1", {"time": 1, "level": 1}, "level = 850 (index 1 of 2)"),
        ("u", "?level=850.0", {"time": 0, "level": 1}, "level = 850 (index 1 of 2)"),
        ("u", "?level=1", {"time": 0, "level": 1}, "level = 850 (index 1 of 2)"),
        ("land", "", {}, "land: land mask"),
    ],
)
def test_quicklook_draws_the_decoded_slice(
    cube: list[Path],
    cube_server: str,
    drawn: list[dict[str, Any]],
    variable: str,
    query: str,
    where: dict[str, int],
    title: str,
) -> None:
    answer = get(f"{cube_server}quicklook/{variable}.png{query}")
    assert answer.status == 200, answer.text
    (call,) = drawn
    truth = open_truth(cube)  # CF-decoded: fill values masked, packed values unpacked
    expected = truth[variable].isel(where).values
    values = call["values"]
    assert values.shape == expected.shape
    assert values.dtype == expected.dtype
    same = (values == expected) | (np.isnan(values) & np.isnan(expected))
    assert same.all(), f"differs at {np.argwhere(~same).tolist()}"
    assert title in call["title"], call["title"]
    assert call["units"] == truth[variable].attrs.get("units", "")


def test_quicklook_shows_masked_points_as_missing(
    cube: list[Path], cube_server: str, drawn: list[dict[str, Any]]
) -> None:
    assert get(cube_server + "quicklook/t2m.png?time=1").status == 200
    values = drawn[0]["values"]
    assert np.isnan(values[2, 3]) and np.isfinite(values).sum() == values.size - 1
    assert values[0, 0] == pytest.approx(273.15 + 48 * 7 * 0.01)


def test_quicklook_by_value_is_the_image_by_index(cube_server: str) -> None:
    by_index = get(cube_server + "quicklook/u.png?time=2&level=1").body
    by_value = get(cube_server + "quicklook/u.png?time=2001-01-03&level=value:850").body
    other = get(cube_server + "quicklook/u.png?time=2&level=0").body
    assert by_index == by_value != other


def test_quicklook_strides_a_long_axis_and_says_so(
    cube: list[Path], cube_server: str, drawn: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quicklook, "MAX_PIXELS", 3)
    assert get(cube_server + "quicklook/land.png").status == 200
    expected = open_truth(cube)["land"].values[::2, ::3]
    np.testing.assert_array_equal(drawn[0]["values"], expected)
    assert "1 in 2 points along lat, 1 in 3 points along lon" in drawn[0]["title"]
    np.testing.assert_array_equal(drawn[0]["x"], open_truth(cube)["lon"].values[::3])


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("?time=6", "index 6 is out of range for dimension 'time' of size 6"),
        ("?time=-7", "index -7 is out of range for dimension 'time' of size 6"),
        ("?time=2002-01-01", "no coordinate value '2002-01-01' along dimension 'time'"),
        ("?time=2001-01", "'2001-01' matches 6 values along dimension 'time'"),
        ("?level=value:700", "no coordinate value '700' along dimension 'level'"),
        ("?level=high", "'high' is not a number: dimension 'level' has numeric coordinates"),
        ("?lat=1", "dimension 'lat' is an axis of the image"),
        ("?depth=1", "'depth' is not a dimension of the variable (selectable: time, level)"),
        ("?time=1&time=2", "dimension 'time' is selected 2 times"),
    ],
)
def test_quicklook_refuses_a_bad_selection_naming_the_problem(
    cube_server: str, query: str, problem: str
) -> None:
    answer = get(f"{cube_server}quicklook/u.png{query}")
    assert answer.status == 400
    assert problem in answer.text, answer.text


def test_quicklook_of_a_dimension_without_coordinate_takes_an_index(cube_server: str) -> None:
    name = quote(EVIL_NAMES[0])
    assert get(f"{cube_server}quicklook/{name}.png").status == 200
    answer = get(f"{cube_server}quicklook/{name}.png?{quote(EVIL_DIM)}=1")
    assert answer.status == 400 and "is an axis of the image" in answer.text


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("nope", "no variable 'nope' in the store"),
        ("mean_t2m", "no quick-look image of 'mean_t2m': it has 1 dimension(s)"),
        ("time", "no quick-look image of 'time': it has 1 dimension(s)"),
        ("g1/t2m", "no variable 'g1/t2m' in the store"),
    ],
)
def test_quicklook_404_for_an_unknown_or_one_dimensional_variable(
    cube_server: str, path: str, problem: str
) -> None:
    answer = get(f"{cube_server}quicklook/{path}.png")
    assert answer.status == 404
    assert problem in answer.text, answer.text


def test_quicklook_of_variables_in_groups(tmp_path: Path, drawn: list[dict[str, Any]]) -> None:
    (tmp_path / "g").mkdir()
    path = write_groups(tmp_path / "g" / "groups.nc")
    with serving(_store(path.parent)) as url:
        assert get(url + "quicklook/g1/b.png").status == 200
        assert get(url + "quicklook/g1/g2/d.png").status == 200
        assert get(url + "quicklook/g1/a.png").status == 404
        assert get(url + "quicklook/g2/d.png").status == 404
    with xr.open_dataset(path, group="g1/g2") as truth:
        np.testing.assert_array_equal(drawn[1]["values"], truth["d"].values)
    assert drawn[1]["title"].startswith("g1/g2/d [K]")


def test_quicklook_of_a_rewritten_file_is_503_naming_it(tmp_path: Path) -> None:
    paths = write_cube(tmp_path / "cube")
    with serving(_store(paths[0].parent, concat_dim="time")) as url:
        assert get(url).status == 200  # the snapshot is taken
        before = os.stat(paths[1])
        write_cube(tmp_path / "other", n_files=2)[1].replace(paths[1])
        os.utime(paths[1], ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
        answer = get(url + "quicklook/t2m.png?time=2")  # in the second file
    assert answer.status == 503
    assert str(paths[1]) in answer.text


def test_quicklook_with_a_token_loads_through_the_cookie(cube: list[Path]) -> None:
    """A person opens the page once with ``?token=``; the images load with the cookie
    the server set, and the page never holds the token."""
    with serving(_store(cube[0].parent, concat_dim="time"), token="s3cret") as url:
        assert get(url).status == 401
        assert get(url + "quicklook/t2m.png").status == 401
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(url + "?token=s3cret", timeout=120) as answer:
            page = answer.read().decode()
            assert answer.status == 200 and answer.url == url
        assert "s3cret" not in page
        for image in parse(page).images:
            with browser.open(url + str(image["src"]), timeout=120) as answer:
                assert answer.status == 200
                assert decoded_png(answer.read()).shape[:2] == (480, 640)
        bearer = get(url + "quicklook/u.png", {"Authorization": "Bearer s3cret"})
        assert bearer.status == 200


def test_without_matplotlib_the_page_says_so_and_quicklooks_are_501(
    cube_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "available", lambda: False)
    page = parse(get(cube_server).text)
    assert page.images == []
    assert quicklook.UNAVAILABLE in page.text
    answer = get(cube_server + "quicklook/t2m.png")
    assert answer.status == 501 and quicklook.UNAVAILABLE in answer.text


def test_selection_parses_without_a_server() -> None:
    import pandas as pd

    index = pd.Index([500, 850])
    slices = quicklook.parse_selection(
        ("member", "level", "y", "x"), (3, 2, 4, 5), {"level": "value:850"}, {"level": index}
    )
    assert [(s.dim, s.index) for s in slices] == [("member", 0), ("level", 1)]
    assert slices[0].describe() == "member index 0 of 3"
    assert slices[1].describe() == "level = 850 (index 1 of 2)"
    with pytest.raises(quicklook.QuickLookError, match="'member' has no coordinate"):
        quicklook.parse_selection(("member", "y", "x"), (3, 4, 5), {"member": "r1"}, {})


@pytest.mark.parametrize(
    "options", [{"zarr_format": 3}, {"decode": "store"}], ids=["zarr-v3", "decode-store"]
)
def test_pages_of_stores_served_otherwise(
    cube: list[Path], drawn: list[dict[str, Any]], options: dict[str, Any]
) -> None:
    with serving(_store(cube[0].parent, concat_dim="time", **options)) as url:
        page = parse(get(url).text)
        assert set(page.table("", "Variables")) == {"t2m", "u", "land", "mean_t2m", *EVIL_NAMES}
        assert get(url + "quicklook/t2m.png?time=1").status == 200
    expected = open_truth(cube)["t2m"].isel(time=1).values
    np.testing.assert_array_equal(drawn[0]["values"], expected)


def test_quicklook_title_from_the_files_is_text_not_mathtext(
    cube_server: str, drawn: list[dict[str, Any]]
) -> None:
    answer = get(f"{cube_server}quicklook/{quote(EVIL_NAMES[0])}.png")
    assert answer.status == 200, answer.text
    assert EVIL_LONG_NAME in drawn[0]["title"]
    assert decoded_png(answer.body).shape[:2] == (480, 640)


def test_quicklook_of_a_variable_without_values_is_404(tmp_path: Path) -> None:
    import netCDF4

    path = tmp_path / "empty" / "e.nc"
    path.parent.mkdir()
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", None)
        nc.createDimension("x", 3)
        nc.createVariable("empty", "f4", ("t", "x"))
    with serving(_store(path.parent)) as url:
        assert parse(get(url).text).images == []
        answer = get(url + "quicklook/empty.png")
    assert answer.status == 404
    assert "no quick-look image of 'empty': it holds no values (shape (0, 3))" in answer.text


def test_page_lists_at_most_so_many_files(
    cube: list[Path], cube_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "MAX_FILES_LISTED", 2)
    page = parse(get(cube_server).text)
    assert list(page.table("(page)", "Files")) == [str(p) for p in cube[:2]]
    assert "3 file(s)" in page.text and "and 1 more file(s), not listed." in page.text


def test_page_and_quicklooks_follow_a_new_snapshot(
    tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    """With listing_ttl, a new file joins the page and the quick-looks (the datasets a
    quick-look reads are per snapshot: an old one would refuse the new step)."""
    paths = write_cube(tmp_path / "cube", n_files=2)
    with serving(_store(paths[0].parent, concat_dim="time"), listing_ttl=0) as url:
        page = parse(get(url).text)
        assert page.table("", "Dimensions")["time"][1] == "4"
        assert get(url + "quicklook/t2m.png?time=5").status == 400
        more = write_cube(tmp_path / "more", n_files=3)[2]
        more.replace(paths[0].parent / more.name)
        page = parse(get(url).text)
        assert page.table("", "Dimensions")["time"][1] == "6"
        assert len(page.table("(page)", "Files")) == 3
        assert get(url + "quicklook/t2m.png?time=5").status == 200
    expected = open_truth([*paths, paths[0].parent / more.name])["t2m"].isel(time=5).values
    np.testing.assert_array_equal(drawn[-1]["values"], expected)


def test_concurrent_quicklooks_are_each_their_own_slice(cube_server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"?time={t}&level={lv}" for t in range(6) for lv in (0, 1)]
    one_by_one = [get(f"{cube_server}quicklook/u.png{q}").body for q in queries]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: get(f"{cube_server}quicklook/u.png{q}").body, queries))
    assert together == one_by_one
    assert len(set(one_by_one)) == len(queries)


@pytest.mark.parametrize("cx", [[0.0, 1e308, 1.7e308], [-1.7e308, 0.0, 1.7e308]])
def test_quicklook_of_a_coordinate_near_the_float64_limit_takes_an_index(
    tmp_path: Path, drawn: list[dict[str, Any]], cx: list[float]
) -> None:
    """Cell edges past the float64 limit cannot be drawn: the axis is drawn by index
    rather than answering 500."""
    import netCDF4

    (tmp_path / "d").mkdir()
    with netCDF4.Dataset(tmp_path / "d" / "h.nc", "w") as ds:
        ds.createDimension("y", 2)
        ds.createDimension("cx", 3)
        ds.createVariable("cx", "f8", ("cx",))[:] = cx
        ds.createVariable("huge", "f4", ("y", "cx"))[:] = np.arange(6, dtype="f4").reshape(2, 3)
    with serving(_store(tmp_path / "d")) as url:
        answer = get(url + "quicklook/huge.png")
    assert answer.status == 200, answer.text
    assert answer.body.startswith(b"\x89PNG")
    (call,) = drawn
    assert call["x"] is None and call["xlabel"] == "cx"


def test_quicklooks_never_hold_up_reads_of_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quick-looks are drawn in the pages' own threads: however many are being drawn (here
    more than the loop's default pool has threads, all stuck), keys are still read (a chunk
    of 1 MiB, which the store reads in a thread)."""
    import concurrent.futures
    import threading

    import netCDF4

    (tmp_path / "d").mkdir()
    with netCDF4.Dataset(tmp_path / "d" / "b.nc", "w") as ds:
        ds.createDimension("y", 512)
        ds.createDimension("x", 512)
        blob = ds.createVariable("blob", "f4", ("y", "x"), chunksizes=(512, 512))
        blob[:] = np.arange(512 * 512, dtype="f4").reshape(512, 512)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def stuck(*args: Any, **kwargs: Any) -> bytes:
        entered.release()
        release.wait(120)
        return b"\x89PNG"

    monkeypatch.setattr(pages, "quicklook_png", stuck)
    fs = _store(tmp_path / "d")
    n = (os.cpu_count() or 1) + 8  # more than asyncio's default pool: min(32, cpus + 4)
    with serving(fs) as url, concurrent.futures.ThreadPoolExecutor(n) as pool:
        try:
            looks = [pool.submit(get, f"{url}quicklook/blob.png?y={i}") for i in range(n)]
            assert entered.acquire(timeout=60)  # quick-looks are being drawn
            for key in (".zmetadata", "blob/0.0"):
                answer = get(url + key)
                assert answer.status == 200 and answer.body == fs.cat_file(key), key
            # the first quick-looks are stuck, the others wait for a thread of the pages
            assert not any(look.done() for look in looks)
        finally:
            release.set()
        assert all(look.result().status == 200 for look in looks)
