"""Real HDF5/NetCDF4 files from another project's test suite, when the checkout has them
beside it (``../shared/peer_data``).

blosc, zstd, lz4, bitshuffle, vlen strings, linked datasets, compound types: every dataset
the store serves equals h5py's read (h5py decodes the plugin filters through hdf5plugin),
and every dataset it leaves out is one of a type it documents as unsupported.
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


def check_peer_file(path: Path, url: str) -> None:
    """Every dataset the store over ``url`` serves equals h5py's read of ``path``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = VirtualZarrFileSystem(url, skip_instance_cache=True, cache=False)
        report = fs.report()
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    served = [v for v in report.variables if v.how != "skipped"]

    with h5py.File(path, "r") as f:
        for entry in served:
            actual = np.asarray(group[entry.path][...])
            expected = _truth(f[entry.path])
            assert actual.shape == expected.shape, entry.path
            if expected.dtype.kind == "O":
                assert [str(x) for x in actual.ravel()] == list(expected.ravel()), entry.path
            else:
                assert actual.dtype == expected.dtype, (entry.path, actual.dtype)
                np.testing.assert_array_equal(actual, expected, err_msg=entry.path)
        for entry in (v for v in report.variables if v.how == "skipped"):
            assert f[entry.path].dtype.names is not None, (entry.path, entry.reason)
            assert "compound" in entry.reason
            messages = [str(w.message) for w in caught if w.category is UnsupportedVariableWarning]
            assert any(entry.path in m and path.name in m for m in messages), entry.path


if PEER_FILES:  # else nothing is collected (a checkout without the shared folder)

    @pytest.mark.parametrize("path", PEER_FILES, ids=[p.name for p in PEER_FILES])
    def test_every_served_dataset_equals_h5py(path):
        check_peer_file(path, str(path))

    @pytest.mark.parametrize("path", PEER_FILES, ids=[p.name for p in PEER_FILES])
    def test_every_served_dataset_equals_h5py_over_http(path, peer_server):
        """The same files from an HTTP server: plugin filters and h5py-read datasets
        through HTTP file objects, ETag-checked."""
        check_peer_file(path, f"{peer_server.url}/{path.relative_to(PEER_DATA).as_posix()}")
