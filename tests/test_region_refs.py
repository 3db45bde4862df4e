"""HDF5 region references, served as text: the referenced dataset's path and its selection.

Files are written here with h5py. The truth, for every element: the served text, parsed back
into a selection, reads from ``f[path]`` exactly the values h5py reads with ``f[ref][ref]``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import fsspec
import h5py
import numpy as np
from conftest import scanned_store
from h5py import h5r, h5s
from oracle import open_each_format, read_each_format
from test_h5_types import xarray_values, zarr_values

from fsspec_virtual.state import clear_states

_PIECE = re.compile(r"(/[^\[{]*)(\[.*\]|\{.*\})")


# -- the served text, parsed back -------------------------------------------------------------


def _selection(text: str) -> Any:
    """``[...]``, ``[()]``, ``[0:3, 2:5]`` as an index; ``[]`` as None (nothing)."""
    inner = text[1:-1]
    if inner == "":
        return None
    if inner == "...":
        return Ellipsis
    if inner == "()":
        return ()
    return tuple(slice(*(int(n) for n in part.split(":"))) for part in inner.split(", "))


def served_values(f: h5py.File, text: str) -> tuple[h5py.Dataset, np.ndarray]:
    """The dataset a served text names, and the values its selection reads, in HDF5's
    order: a point list in its order, hyperslab blocks as their union in row-major order."""
    pieces = [_PIECE.fullmatch(piece) for piece in text.split(" | ")]
    assert all(pieces), text
    paths = {m.group(1) for m in pieces if m}
    assert len(paths) == 1, text
    dset = f[paths.pop()]
    data = dset[()]
    texts = [m.group(2) for m in pieces if m]
    if texts[0].startswith("{"):
        assert len(texts) == 1, text
        points = ast.literal_eval("[" + texts[0][1:-1] + "]")
        return dset, np.array([data[p] for p in points])
    indexes = [_selection(t) for t in texts]
    if indexes == [None]:
        return dset, np.array([], dtype=dset.dtype)
    assert None not in indexes, text
    if len(indexes) == 1:
        return dset, np.ravel(dset[indexes[0]])  # the text works as f[path][selection]
    mask = np.zeros(dset.shape, dtype=bool)
    for index in indexes:
        assert not mask[index].any(), f"overlapping blocks in {text}"
        mask[index] = True
    return dset, data[mask]


def truth(f: h5py.File, ref: h5py.RegionReference) -> tuple[h5py.Dataset, np.ndarray]:
    """What h5py reads through a region reference (its dataset, the selected values)."""
    dset = f[ref]
    values = dset[ref]
    if isinstance(values, h5py.Empty):  # nothing selected in a rank-0 dataset
        return dset, np.array([], dtype=dset.dtype)
    return dset, np.ravel(values)


def assert_selects_the_same(path: Path, name: str, served: np.ndarray) -> None:
    """Every served text of region-reference dataset ``name`` selects what h5py's does."""
    with h5py.File(path, "r") as f:
        refs = f[name][()]
        refs = np.asarray(refs, dtype=object)
        assert served.shape == refs.shape, (name, served.shape, refs.shape)
        for index in np.ndindex(refs.shape):
            ref, text = refs[index], str(served[index])
            if not ref:
                assert text == "", (name, index, text)
                continue
            expected_dset, expected = truth(f, ref)
            actual_dset, actual = served_values(f, text)
            where = f"{name}{list(index)}: {text}"
            assert actual_dset == expected_dset, where
            assert actual.dtype == expected.dtype, where
            np.testing.assert_array_equal(actual, expected, err_msg=where, strict=True)


# -- files ------------------------------------------------------------------------------------


def _region(dset: h5py.Dataset, select: Any) -> h5py.RegionReference:
    """A region reference made from a dataspace selection h5py's slicing cannot spell."""
    space = dset.id.get_space()
    select(space)
    return h5r.create(dset.file.id, dset.name.encode(), h5r.DATASET_REGION, space)


def _union(space: h5s.SpaceID) -> None:
    space.select_hyperslab((0, 0), (2, 2))
    space.select_hyperslab((1, 1), (3, 3), op=h5s.SELECT_OR)


def _write_regions(path: Path, shift: int = 0, length: int = 14) -> Path:
    """Region references of every kind: ``regions`` (1-D), ``grp/grid`` (2-D), ``one``
    (rank 0). Values are unique within each dataset, so equal values mean equal elements."""
    with h5py.File(path, "w") as f:
        line = f.create_dataset("line", data=np.arange(20, dtype="i4") + shift)
        plane = f.create_dataset("plane", data=np.arange(60.0).reshape(6, 10) * 1.5 + shift)
        inner = f.create_dataset("grp/inner", data=np.arange(24, dtype="i2").reshape(2, 3, 4))
        scalar = f.create_dataset("scalar", data=np.float32(2.5 + shift))
        refs = [
            line.regionref[2:5],
            plane.regionref[0:3, 2:5],
            plane.regionref[::2, 1:9:3],  # strided: nine blocks of one element
            plane.regionref[np.arange(60).reshape(6, 10) % 7 == 0],  # points
            _region(plane, lambda s: s.select_elements(np.array([(1, 2), (3, 4), (0, 0)]))),
            plane.regionref[...],
            _region(plane, lambda s: s.select_none()),
            None,  # stays null
            inner.regionref[1:2, 0:3, 1:4],
            scalar.regionref[()],
            _region(scalar, lambda s: s.select_none()),
            _region(plane, _union),
            _region(line, lambda s: s.select_elements(np.array([(7,), (3,)]))),
            line.regionref[5:6],
        ]
        regions = f.create_dataset("regions", (length,), dtype=h5py.regionref_dtype)
        for i, ref in enumerate(refs[:length]):
            if ref is not None:
                regions[i] = ref
        grid = f.create_dataset("grp/grid", (2, 3), dtype=h5py.regionref_dtype)
        grid[0, 0], grid[0, 2] = inner.regionref[:, 1, ::2], plane.regionref[4:, :]
        grid[1, 1], grid[1, 2] = refs[3], line.regionref[...]
        f.create_dataset("one", data=plane.regionref[1:2, 3:7], dtype=h5py.regionref_dtype)
        f.create_dataset("plain", data=np.arange(3.0))
    return path


# -- tests ------------------------------------------------------------------------------------


def test_every_served_text_selects_what_the_reference_selects(tmp_path: Path) -> None:
    path = _write_regions(tmp_path / "regions.h5")
    fs = scanned_store(path)
    assert not fs.caught, fs.caught
    for name in ("regions", "grp/grid", "one"):
        assert_selects_the_same(path, name, zarr_values(fs, name))
        assert_selects_the_same(path, name, xarray_values(fs, name))


def test_spelling(tmp_path: Path) -> None:
    """The documented spelling of each kind of selection (the values are checked above)."""
    path = _write_regions(tmp_path / "regions.h5")
    texts = [str(t) for t in zarr_values(scanned_store(path), "regions")]
    assert texts[0] == "/line[2:5]"
    assert texts[1] == "/plane[0:3, 2:5]"
    assert texts[2].split(" | ")[:2] == ["/plane[0:1, 1:2]", "/plane[0:1, 4:5]"]
    assert len(texts[2].split(" | ")) == 9
    assert texts[4] == "/plane{(1, 2), (3, 4), (0, 0)}"
    assert texts[5:8] == ["/plane[...]", "/plane[]", ""]
    assert texts[8] == "/grp/inner[1:2, 0:3, 1:4]"
    assert texts[9:11] == ["/scalar[()]", "/scalar[]"]
    assert texts[12] == "/line{(7,), (3,)}"


def test_references_into_a_dataset_resized_since(tmp_path: Path) -> None:
    """HDF5 applies a stored selection to the dataset's extent at read time (``[...]``
    selects all six elements): the served text reads the same."""
    path = tmp_path / "resized.h5"
    with h5py.File(path, "w") as f:
        grow = f.create_dataset("grow", data=np.arange(4.0), maxshape=(None,), chunks=(2,))
        refs = [grow.regionref[...], grow.regionref[1:3], grow.regionref[[0, 2]]]
        f.create_dataset("regions", data=refs, dtype=h5py.regionref_dtype)
        grow.resize((6,))
        grow[4:] = [4.0, 5.0]
    fs = scanned_store(path)
    assert not fs.caught, fs.caught
    assert_selects_the_same(path, "regions", zarr_values(fs, "regions"))


def _write_series(directory: Path) -> list[Path]:
    """Two plain HDF5 files along a ``time`` dimension scale, each with ``regions(time)``
    into its own datasets (the second file's values differ)."""
    directory.mkdir()
    paths = []
    for i, length in enumerate((14, 9)):
        path = _write_regions(directory / f"r{i}.h5", shift=100 * i, length=length)
        with h5py.File(path, "r+") as f:
            time = f.create_dataset("time", data=np.arange(length, dtype="f8") + 20 * i)
            time.make_scale("time")
            f["regions"].dims[0].attach_scale(time)
        paths.append(path)
    return paths


def test_a_collection_concatenates_each_files_texts(tmp_path: Path) -> None:
    paths = _write_series(tmp_path / "series")
    clear_states()
    fs = fsspec.filesystem(
        "virtualzarr", path=str(tmp_path / "series"), concat_dim="time", skip_instance_cache=True
    )
    served = read_each_format(fs, "regions")
    with open_each_format(fs, consolidated=True) as ds:
        assert ds["regions"].dims == ("time",)
        np.testing.assert_array_equal(np.asarray(ds["regions"].values), served)
        np.testing.assert_array_equal(
            ds["time"].values, np.r_[np.arange(14.0), np.arange(9.0) + 20]
        )
    assert served.shape == (23,)
    assert_selects_the_same(paths[0], "regions", served[:14])
    assert_selects_the_same(paths[1], "regions", served[14:])
