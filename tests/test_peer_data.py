"""Real HDF5/NetCDF4 files from another project's test suite, when the checkout has them
beside it (``../shared/peer_data``).

blosc, zstd, lz4, bitshuffle, vlen strings, linked datasets, compound types: every dataset
h5py lists is accounted for, exactly once: served and equal to h5py's read (h5py decodes
the plugin filters through hdf5plugin), or left out, with a reason, as one of a type the
store documents as unsupported.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the filters h5py needs for the truth)
import numpy as np
import pytest
import zarr
from oracle import read_each_format
from servers import HTTPServer, serve_directory

from fsspec_virtual import UnsupportedVariableWarning, VirtualZarrFileSystem

PEER_DATA = Path(__file__).resolve().parents[2] / "shared" / "peer_data"
#: The files present (none on a checkout without the shared folder: nothing is collected).
PEER_FILES = sorted(p for p in PEER_DATA.rglob("*") if p.suffix in (".h5", ".hdf5", ".nc"))


def _truth(dataset: h5py.Dataset) -> np.ndarray:
    values = dataset[()]
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr()[()], dtype=object)
    return np.asarray(values)


@pytest.fixture(scope="module")
def peer_server() -> Iterator[HTTPServer]:
    with serve_directory(PEER_DATA) as server:
        yield server


_NETCDF_DIMENSION_ONLY = b"This is a netCDF dimension but not a netCDF variable"


def _is_dimension_only(dataset: h5py.Dataset) -> bool:
    """A netCDF dimension without values: netCDF hides it, and so does the store."""
    name = dataset.attrs.get("NAME", b"")
    name = name.encode() if isinstance(name, str) else bytes(name)
    return name.startswith(_NETCDF_DIMENSION_ONLY)


def _h5py_datasets(f: h5py.File) -> tuple[set[str], set[str]]:
    """Every dataset h5py lists, by the rules the store follows: every name that leads to
    a dataset (hard links, soft links; external links, which the store follows or leaves
    out), and apart from them the netCDF dimensions without values."""
    names: dict[str, h5py.HardLink | h5py.SoftLink | h5py.ExternalLink] = {}
    f.visititems_links(lambda name, link: names.__setitem__(name, link))
    listed, dimensions = set(), set()
    for name, link in names.items():
        if isinstance(link, h5py.ExternalLink):
            listed.add(name)
            continue
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            (dimensions if _is_dimension_only(obj) else listed).add(name)
    return listed, dimensions


def _served_arrays(group: zarr.Group) -> set[str]:
    return {
        path for path, member in group.members(max_depth=None) if isinstance(member, zarr.Array)
    }


def check_peer_file(path: Path, url: str) -> None:
    """Every dataset h5py lists in ``path`` is either served by the store over ``url``,
    equal to h5py's read, or listed as left out in its report, with a reason and a
    warning naming the file and the variable: never both, never neither."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = VirtualZarrFileSystem(url, skip_instance_cache=True, cache=False)
        report = fs.report()
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    served = _served_arrays(group)
    left_out = {v.path: v.reason for v in report.left_out}
    messages = [str(w.message) for w in caught if w.category is UnsupportedVariableWarning]

    with h5py.File(path, "r") as f:
        listed, dimensions = _h5py_datasets(f)
        assert not served & set(left_out), sorted(served & set(left_out))
        assert served | set(left_out) == listed, (
            f"not accounted for: {sorted(listed - served - set(left_out))}; "
            f"not listed by h5py: {sorted((served | set(left_out)) - listed)}"
        )
        assert not dimensions & served, sorted(dimensions & served)
        for name in sorted(served):
            actual = read_each_format(fs, name)  # Zarr format 3 reads the same
            expected = _truth(f[name])
            assert actual.shape == expected.shape, name
            if expected.dtype.kind == "O":
                assert [str(x) for x in actual.ravel()] == list(expected.ravel()), name
            else:
                assert actual.dtype == expected.dtype, (name, actual.dtype)
                np.testing.assert_array_equal(actual, expected, err_msg=name)
        for name, reason in left_out.items():
            assert reason, name
            assert any(repr(name) in m and path.name in m for m in messages), (name, messages)
            if not isinstance(f.get(name, getlink=True), h5py.ExternalLink):
                # the one type the store documents as unsupported that these files hold
                assert f[name].dtype.names is not None, (name, reason)
                assert "compound" in reason, (name, reason)


if PEER_FILES:  # else nothing is collected (a checkout without the shared folder)

    @pytest.mark.parametrize("path", PEER_FILES, ids=[p.name for p in PEER_FILES])
    def test_every_served_dataset_equals_h5py(path):
        check_peer_file(path, str(path))

    @pytest.mark.parametrize("path", PEER_FILES, ids=[p.name for p in PEER_FILES])
    def test_every_served_dataset_equals_h5py_over_http(path, peer_server):
        """The same files from an HTTP server: plugin filters and h5py-read datasets
        through HTTP file objects, ETag-checked."""
        check_peer_file(path, f"{peer_server.url}/{path.relative_to(PEER_DATA).as_posix()}")
