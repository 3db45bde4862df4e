"""Bad input gives the documented error, naming the culprit, at first access; never an array.

Construction never raises (it does no I/O): every ``pytest.raises`` wraps the first access.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import (
    DAYS,
    write_magic_garbage,
    write_many,
    write_random,
    write_simple,
    write_truncated,
)
from oracle import (
    assert_same_dataset,
    assert_store_matches,
    faces,
    open_each_format,
    open_truth,
)

from fsspec_virtual import (
    IncompatibleSourcesError,
    NoSourceFilesError,
    ReadOnlyError,
    ScanError,
    SkippedFileWarning,
    UnsupportedVariableWarning,
    VirtualZarrError,
    VirtualZarrFileSystem,
)


def virtual(path: Any, **kwargs: Any) -> Any:
    """Build the filesystem; construction itself must not raise, whatever the path."""
    if isinstance(path, Path):
        path = str(path)
    return fsspec.filesystem("virtualzarr", path=path, **kwargs)


def _ls(fs: Any) -> Any:
    return fs.ls("")


def _cat_zgroup(fs: Any) -> Any:
    return fs.cat_file(".zgroup")


def _open_zarr(fs: Any) -> Any:
    return xr.open_zarr(fs.get_mapper(""), consolidated=True).load()


def _zarr_group(fs: Any) -> Any:
    return zarr.open_group(fs.get_mapper(""), mode="r")


FIRST_ACCESS: dict[str, Callable[[Any], Any]] = {
    "ls": _ls,
    "cat_file": _cat_zgroup,
    "xr.open_zarr": _open_zarr,
    "zarr.open_group": _zarr_group,
}


def good_files(directory: Path, n: int = 2, **kwargs: Any) -> list[Path]:
    return [
        write_simple(directory / f"good{i}.nc", [4 * i + k for k in range(4)], seed=i, **kwargs)
        for i in range(n)
    ]


class TestErrorTypes:
    """The hierarchy the issue promises: each error is also the builtin callers catch."""

    @pytest.mark.parametrize(
        ("error", "builtin"),
        [
            (ScanError, OSError),
            (NoSourceFilesError, OSError),
            (IncompatibleSourcesError, ValueError),
            (ReadOnlyError, PermissionError),
        ],
    )
    def test_hierarchy(self, error, builtin):
        assert issubclass(error, VirtualZarrError)
        assert issubclass(error, builtin)

    def test_warning_is_a_user_warning(self):
        assert issubclass(UnsupportedVariableWarning, UserWarning)


class TestNoSourceFiles:
    @pytest.mark.parametrize("access", list(FIRST_ACCESS))
    def test_nonexistent_directory(self, tmp_path, access):
        missing = tmp_path / "does-not-exist"
        fs = virtual(missing, concat_dim="time")
        with pytest.raises(NoSourceFilesError, match=re.escape(str(missing))):
            FIRST_ACCESS[access](fs)

    @pytest.mark.parametrize(
        "spelling", ["file", "glob", "file_url", "list"], ids=lambda s: f"nonexistent-{s}"
    )
    def test_nonexistent_spellings(self, tmp_path, spelling):
        missing = tmp_path / "nowhere" / "x.nc"
        path: Any = {
            "file": str(missing),
            "glob": f"{tmp_path}/nowhere/*.nc",
            "file_url": f"file://{missing}",
            "list": [str(missing)],
        }[spelling]
        fs = virtual(path, concat_dim="time")
        with pytest.raises(NoSourceFilesError, match="nowhere"):
            fs.ls("")

    def test_empty_directory(self, tmp_path):
        (tmp_path / "empty").mkdir()
        fs = virtual(tmp_path / "empty", concat_dim="time")
        with pytest.raises(NoSourceFilesError, match="empty"):
            fs.ls("")

    def test_glob_matching_nothing(self, tmp_path):
        good_files(tmp_path)
        fs = virtual(f"{tmp_path}/*.h5", concat_dim="time")
        with pytest.raises(NoSourceFilesError):
            fs.ls("")

    def test_only_non_data_files(self, tmp_path):
        (tmp_path / "README.txt").write_text("nothing to see\n")
        (tmp_path / "meta.json").write_text("{}")
        fs = virtual(tmp_path, concat_dim="time")
        with pytest.raises(NoSourceFilesError):
            fs.ls("")

    @pytest.mark.parametrize("access", ["ls", "xr.open_zarr"])
    def test_only_random_bytes_named_nc(self, tmp_path, access):
        """A file named like NetCDF whose bytes are no format is an error naming it."""
        write_random(tmp_path / "random.nc")
        fs = virtual(tmp_path, concat_dim="time")
        with pytest.raises(ScanError, match=r"random\.nc"):
            FIRST_ACCESS[access](fs)

    def test_error_repeats_on_every_access(self, tmp_path):
        fs = virtual(tmp_path / "missing")
        for _ in range(2):
            with pytest.raises(NoSourceFilesError):
                fs.ls("")
        with pytest.raises(NoSourceFilesError):
            virtual(tmp_path / "missing").cat_file(".zmetadata")


class TestIgnoredFiles:
    def test_random_bytes_named_nc_among_good_files(self, tmp_path):
        paths = good_files(tmp_path)
        write_random(tmp_path / "good0_5.nc")
        (tmp_path / "README.txt").write_text("readme\n")
        with pytest.raises(ScanError, match="good0_5"):  # never its time steps lost silently
            virtual(tmp_path, concat_dim="time").ls("")
        fs = virtual(tmp_path, concat_dim="time", on_error="skip")
        with pytest.warns(SkippedFileWarning, match="good0_5"):
            fs.ls("")
        assert_store_matches(fs, open_truth(paths), open_truth(paths, decode_cf=False))


def _truncated(tmp_path: Path, name: str = "broken.nc", fraction: float = 0.5) -> Path:
    """The first ``fraction`` of a real NetCDF4 file, written as ``tmp_path / name``."""
    # the donor lives outside the collection's directory
    donor = write_simple(
        tmp_path.parent / f"donor-{tmp_path.name}" / "donor.nc", [0, 1, 2, 3], nx=64, chunks=(1, 64)
    )
    data = donor.read_bytes()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


class TestScanError:
    @pytest.mark.parametrize("access", list(FIRST_ACCESS))
    def test_truncated_hdf5_alone(self, tmp_path, access):
        path = _truncated(tmp_path / "data")
        fs = virtual(path.parent, concat_dim="time")
        with pytest.raises(ScanError, match=re.escape(path.name)) as info:
            FIRST_ACCESS[access](fs)
        assert isinstance(info.value, OSError)

    def test_truncated_hdf5_among_good_files(self, tmp_path):
        good_files(tmp_path / "data")
        bad = _truncated(tmp_path / "data", "good0_5.nc")
        fs = virtual(tmp_path / "data", concat_dim="time")
        with pytest.raises(ScanError) as info:
            fs.ls("")
        assert bad.name in str(info.value)
        assert "good1.nc" not in str(info.value)

    def test_truncated_among_many_files(self, tmp_path):
        # enough files that scanning may go to worker processes: errors must still name the file
        directory = tmp_path / "data"
        write_many(directory, 30)
        bad = _truncated(directory, "m0014_5.nc")
        fs = virtual(directory, concat_dim="time")
        with pytest.raises(ScanError, match=re.escape(bad.name)):
            fs.ls("")

    def test_truncated_donor_helper_is_real(self, tmp_path):
        # the donor must be a real file, cut: the first half of a readable NetCDF4 file
        good = write_simple(tmp_path / "g.nc", [0, 1], nx=64, chunks=(1, 64))
        cut = write_truncated(tmp_path / "cut.nc", good)
        assert cut.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
        with pytest.raises(OSError):
            netCDF4.Dataset(cut).close()

    @pytest.mark.parametrize(
        "magic", [b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02"], ids=["hdf5", "cdf1", "cdf2"]
    )
    def test_garbage_after_a_valid_magic(self, tmp_path, magic):
        (tmp_path / "data").mkdir()
        path = write_magic_garbage(tmp_path / "data" / "garbage.nc", magic)
        fs = virtual(tmp_path / "data", concat_dim="time")
        with pytest.raises(ScanError, match=re.escape(path.name)):
            fs.ls("")

    @pytest.mark.parametrize("fraction", [0.9, 0.97])
    def test_barely_truncated_never_serves_an_array(self, tmp_path, fraction):
        # The header may survive: then scanning may succeed, but reading must not invent data.
        path = _truncated(tmp_path / "data", fraction=fraction)
        fs = virtual(path)
        try:  # as Zarr format 2 and 3
            opened = [face.open_dataset(consolidated=True) for face in faces(fs)]
        except ScanError as e:
            assert path.name in str(e)
            return
        for ds in opened:
            with pytest.raises(Exception):  # noqa: B017 - any error, but an error
                ds.load()

    @pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET"])
    def test_truncated_netcdf3_never_serves_an_array(self, tmp_path, fmt):
        donor = write_simple(tmp_path / "donor.nc", [0, 1, 2, 3], nx=256, fmt=fmt)
        (tmp_path / "data").mkdir()
        path = write_truncated(tmp_path / "data" / "cut.nc", donor)
        fs = virtual(path)
        try:  # as Zarr format 2 and 3
            opened = [face.open_dataset(consolidated=True) for face in faces(fs)]
        except ScanError as e:
            assert path.name in str(e)
            return
        for ds in opened:
            with pytest.raises(Exception):  # noqa: B017 - any error, but an error
                ds.load()


class TestSkip:
    def test_skip_truncated_among_good(self, tmp_path):
        directory = tmp_path / "data"
        paths = good_files(directory, 3)
        bad = _truncated(directory, "good1_5.nc")
        fs = virtual(directory, concat_dim="time", on_error="skip")
        with pytest.warns(UserWarning, match=re.escape(bad.name)):
            fs.ls("")
        assert_store_matches(fs, open_truth(paths), open_truth(paths, decode_cf=False))

    def test_skip_among_many_files(self, tmp_path):
        directory = tmp_path / "data"
        paths = write_many(directory, 30)
        bad = _truncated(directory, "m0014_5.nc")
        fs = virtual(directory, concat_dim="time", on_error="skip")
        with pytest.warns(UserWarning, match=re.escape(bad.name)):
            fs.ls("")
        assert_same_dataset(open_each_format(fs, consolidated=True), open_truth(paths))

    def test_skip_through_xarray_first(self, tmp_path):
        directory = tmp_path / "data"
        paths = good_files(directory, 2)
        bad = write_magic_garbage(directory / "good0_5.nc", b"\x89HDF\r\n\x1a\n")
        fs = virtual(directory, concat_dim="time", on_error="skip")
        with pytest.warns(UserWarning, match=re.escape(bad.name)):
            ds = xr.open_zarr(fs.get_mapper(""), consolidated=True).load()
        assert ds.sizes["time"] == sum(open_truth([p]).sizes["time"] for p in paths)

    def test_skip_with_nothing_left(self, tmp_path):
        bad = _truncated(tmp_path / "data")
        fs = virtual(bad.parent, concat_dim="time", on_error="skip")
        with pytest.warns(UserWarning, match=re.escape(bad.name)):
            with pytest.raises(VirtualZarrError):
                fs.ls("")


# -- incompatible sources --------------------------------------------------------------------

#: Differences no conversion reconciles: still refused.
MISMATCHES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "shape": ({}, {"nx": 5}),
    "units": ({"attrs": {"units": "K"}}, {"attrs": {"units": "degC"}}),
}

#: Differences served by computing chunks (issue 4): equal to open_mfdataset.
RECONCILED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "dtype": ({}, {"dtype": "f8"}),
    "chunking": ({}, {"chunks": (2, 2)}),
    "chunking_time": ({}, {"chunks": (4, 4)}),
    "compressed_vs_not": ({}, {"compression": None}),
    "shuffle": ({}, {"shuffle": False}),
    "contiguous": ({"compression": None, "shuffle": False}, {"contiguous": True}),
    "scale_factor": (
        {"dtype": "i2", "attrs": {"scale_factor": 0.5}},
        {"dtype": "i2", "attrs": {"scale_factor": 0.25}},
    ),
    "scale_factor_absent": ({"dtype": "i2", "attrs": {"scale_factor": 0.5}}, {"dtype": "i2"}),
    "add_offset": (
        {"dtype": "i2", "attrs": {"add_offset": 1.0}},
        {"dtype": "i2", "attrs": {"add_offset": 2.0}},
    ),
    "fill_value": (
        {"dtype": "i2", "fill_value": np.int16(-1)},
        {"dtype": "i2", "fill_value": np.int16(-2)},
    ),
    "fill_value_absent": ({"fill_value": np.float32(-1)}, {}),
    "missing_value": (
        {"attrs": {"missing_value": np.float32(-1)}},
        {"attrs": {"missing_value": np.float32(-2)}},
    ),
}
#: Of those, the ones served unpacked: their raw values are the decoded ones.
UNPACKED = {"scale_factor", "scale_factor_absent", "add_offset", "fill_value"}
UNPACKED |= {"fill_value_absent", "missing_value"}


class TestIncompatibleSources:
    @pytest.mark.parametrize("case", list(MISMATCHES))
    @pytest.mark.parametrize("access", ["ls", "xr.open_zarr"])
    def test_mismatch(self, tmp_path, case, access):
        first, second = MISMATCHES[case]
        a = write_simple(tmp_path / "alpha_0.nc", [0, 1, 2, 3], var="temperature", **first)
        b = write_simple(tmp_path / "beta_1.nc", [4, 5, 6, 7], var="temperature", **second)
        fs = virtual(tmp_path, concat_dim="time")
        with pytest.raises(IncompatibleSourcesError) as info:
            FIRST_ACCESS[access](fs)
        message = str(info.value)
        assert "temperature" in message, message
        assert a.name in message and b.name in message, message

    @pytest.mark.parametrize("case", list(RECONCILED))
    def test_reconciled_difference_is_served_as_open_mfdataset(self, tmp_path, case):
        first, second = RECONCILED[case]
        a = write_simple(tmp_path / "alpha_0.nc", [0, 1, 2, 3], var="temperature", **first)
        b = write_simple(tmp_path / "beta_1.nc", [4, 5, 6, 7], var="temperature", **second)
        fs = virtual(tmp_path, concat_dim="time")
        expected = open_truth([a, b])
        raw_skip = ("temperature",) if case in UNPACKED else ()
        assert_store_matches(fs, expected, open_truth([a, b], decode_cf=False), raw_skip=raw_skip)
        if case in UNPACKED:  # the stored values are the decoded ones
            group = zarr.open_group(fs.get_mapper(""), mode="r")
            served = group["temperature"][...]
            truth = expected["temperature"].values
            assert served.dtype == truth.dtype, (served.dtype, truth.dtype)
            np.testing.assert_array_equal(served, truth)
        report = {v.path: v for v in fs.report().variables}
        assert report["temperature"].how == "computed", report["temperature"]

    def test_variable_without_concat_dim_of_other_shape(self, tmp_path):
        a = write_simple(tmp_path / "alpha_0.nc", [0, 1, 2, 3], static_dtype="f4")
        b = write_simple(tmp_path / "beta_1.nc", [4, 5, 6, 7], nx=5, chunks=(2, 5))
        fs = virtual(tmp_path, concat_dim="time")
        with pytest.raises(IncompatibleSourcesError) as info:
            fs.ls("")
        message = str(info.value)
        assert a.name in message and b.name in message, message

    def test_variable_without_concat_dim_comes_from_the_first_file(self, tmp_path):
        # xarray's compat="override": another dtype in a later file does not matter
        a = write_simple(tmp_path / "alpha_0.nc", [0, 1, 2, 3], static_dtype="f4")
        b = write_simple(tmp_path / "beta_1.nc", [4, 5, 6, 7], static_dtype="f8")
        fs = virtual(tmp_path, concat_dim="time")
        assert_store_matches(fs, open_truth([a, b]), open_truth([a, b], decode_cf=False))

    def test_mismatch_regardless_of_name_order(self, tmp_path):
        # the mismatching file sorts first by name but comes second in time
        a = write_simple(tmp_path / "zz.nc", [0, 1, 2, 3], var="temperature")
        b = write_simple(tmp_path / "aa.nc", [4, 5, 6, 7], var="temperature", nx=5)
        fs = virtual(tmp_path, concat_dim="time")
        with pytest.raises(IncompatibleSourcesError) as info:
            fs.ls("")
        assert a.name in str(info.value) and b.name in str(info.value)

    @pytest.mark.parametrize(
        ("times_a", "times_b", "units_b"),
        [
            ([0, 1, 2, 3], [0, 1, 2, 3], DAYS),
            ([0, 1, 2, 3], [3, 4, 5, 6], DAYS),
            ([0, 2, 4, 6], [1, 3, 5, 7], DAYS),
            ([0, 1, 2, 3], [0, 6, 12, 18], "hours since 2001-01-02"),
        ],
        ids=["duplicate", "one-overlapping", "interleaved", "overlap-other-units"],
    )
    def test_duplicate_or_overlapping_times(self, tmp_path, times_a, times_b, units_b):
        a = write_simple(tmp_path / "first.nc", times_a)
        b = write_simple(tmp_path / "second.nc", times_b, units=units_b)
        fs = virtual(tmp_path, concat_dim="time")
        with pytest.raises(IncompatibleSourcesError) as info:
            fs.ls("")
        assert a.name in str(info.value) and b.name in str(info.value), str(info.value)

    @pytest.mark.parametrize("access", list(FIRST_ACCESS))
    def test_lengths_off_the_chunk_grid(self, tmp_path, access):
        # kerchunk's MultiZarrToZarr serves [nan, 10, 30, 40, nan] here; straddling chunks
        # are computed
        a = write_simple(tmp_path / "three.nc", [0, 1, 2], chunks=(2, 4))
        b = write_simple(tmp_path / "two.nc", [3, 4], chunks=(2, 4))
        fs = virtual(tmp_path, concat_dim="time")
        FIRST_ACCESS[access](fs)
        assert_store_matches(fs, open_truth([a, b]), open_truth([a, b], decode_cf=False))

    def test_monthly_lengths_off_the_chunk_grid(self, tmp_path):
        paths, start = [], 0
        for name, n in [("jan.nc", 5), ("feb.nc", 4), ("mar.nc", 5)]:
            paths.append(write_simple(tmp_path / name, list(range(start, start + n))))
            start += n
        fs = virtual(tmp_path, concat_dim="time")
        assert_store_matches(fs, open_truth(paths), open_truth(paths, decode_cf=False))


class TestBadArguments:
    def test_on_error_must_be_raise_or_skip(self, tmp_path):
        good_files(tmp_path)
        with pytest.raises((ValueError, TypeError)):
            virtual(tmp_path, concat_dim="time", on_error="warn").ls("")

    def test_concat_dim_missing_from_files(self, tmp_path):
        good_files(tmp_path)
        fs = virtual(tmp_path, concat_dim="level")
        with pytest.raises(VirtualZarrError, match="level"):
            fs.ls("")

    def test_several_files_without_concat_dim_are_combined_by_coordinates(self, tmp_path):
        """As xr.open_mfdataset(combine="by_coords"): the differing coordinate is found."""
        paths = good_files(tmp_path)
        assert_store_matches(
            virtual(tmp_path), open_truth(paths), open_truth(paths, decode_cf=False)
        )

    def test_files_alike_in_every_coordinate_without_concat_dim(self, tmp_path):
        paths = good_files(tmp_path)
        twin = tmp_path / "twin.nc"
        twin.write_bytes(paths[0].read_bytes())
        with pytest.raises(IncompatibleSourcesError, match=r"concat_dim|overlap|same place"):
            virtual(tmp_path).ls("")


class TestFriendlierArguments:
    def test_pathlib_paths(self, tmp_path):
        paths = good_files(tmp_path)
        truth = open_truth(paths), open_truth(paths, decode_cf=False)
        for source in (tmp_path, [Path(p) for p in paths]):
            fs = VirtualZarrFileSystem(source, concat_dim="time", cache=False, max_workers=1)
            assert_store_matches(fs, *truth)  # through zarr's JSON re-creation too

    def test_empty_local_path_is_refused(self):
        with pytest.raises(ValueError, match="path is empty"):
            VirtualZarrFileSystem("", cache=False)

    def test_symlinked_directory_is_skipped_like_a_directory(self, tmp_path):
        paths = good_files(tmp_path / "data")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere")
        fs = virtual(tmp_path / "data", concat_dim="time")
        assert_store_matches(fs, open_truth(paths), open_truth(paths, decode_cf=False))

    def test_repr_and_refresh_say_what_they_are(self, tmp_path):
        paths = good_files(tmp_path)
        fs = virtual(tmp_path, concat_dim="time")
        assert "not scanned yet" in repr(fs) and str(tmp_path) in repr(fs)
        fs.ls("")
        assert f"{len(paths)} file(s)" in repr(fs)
        extra = tmp_path / "zz_late.nc"
        write_simple(extra, [100.0, 101.0])
        changes = fs.refresh()
        assert changes.added == (str(extra),) and not changes.changed and not changes.removed
        assert "1 added" in repr(changes) and len(repr(changes)) < 200
        assert not fs.refresh()  # nothing changed since
