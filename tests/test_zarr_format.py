"""The store serves one Zarr format: 2 by default, 3 with ``zarr_format=3``. A client that
asks for the other one is told which format is served, and every ordinary open (format
left to zarr to find) still works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_groups, write_steps
from oracle import assert_same_dataset, open_truth

from fsspec_virtual import ZarrFormatNotServedError


@pytest.fixture
def steps(tmp_path: Path) -> list[Path]:
    return [write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i)) for i in range(3)]


def _store(pattern: Path | str, **kwargs: Any) -> Any:
    return fsspec.filesystem("virtualzarr", path=str(pattern), cache=False, **kwargs)


def test_asking_for_format_3_names_the_format_served(steps: list[Path]) -> None:
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time")
    root = fs.get_mapper("")
    for open_v3 in (
        lambda: zarr.open_group(root, mode="r", zarr_format=3),
        lambda: xr.open_zarr(root, zarr_format=3),
        lambda: xr.open_zarr(root, zarr_format=3, consolidated=False),
    ):
        with pytest.raises(ZarrFormatNotServedError, match=r"Zarr format 2 only.*the root"):
            open_v3()
    with pytest.raises(ZarrFormatNotServedError, match="node 'v'"):
        zarr.open_array(fs.get_mapper("v"), mode="r", zarr_format=3)
    # NotImplementedError, so code that probes for support can tell
    assert issubclass(ZarrFormatNotServedError, NotImplementedError)
    # and the same store still opens as format 2 right after
    assert_same_dataset(xr.open_zarr(root), open_truth(steps))


def test_every_ordinary_open_finds_format_2(steps: list[Path]) -> None:
    truth = open_truth(steps)
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time")
    root = fs.get_mapper("")
    for opened in (
        xr.open_zarr(root),
        xr.open_zarr(root, consolidated=False),
        xr.open_zarr(root, consolidated=True),
        xr.open_zarr(root, zarr_format=2),
        xr.open_dataset(root, engine="zarr"),
    ):
        assert_same_dataset(opened.load(), truth)
    expected = truth["v"].values
    np.testing.assert_array_equal(zarr.open_group(root, mode="r")["v"][:], expected)
    np.testing.assert_array_equal(zarr.open(root, mode="r")["v"][:], expected)
    np.testing.assert_array_equal(zarr.open_array(fs.get_mapper("v"), mode="r")[:], expected)
    np.testing.assert_array_equal(zarr.open_consolidated(root, mode="r")["v"][:], expected)


def test_nested_groups_open_without_zarr_format(tmp_path: Path) -> None:
    path = write_groups(tmp_path / "groups.nc")
    fs = _store(path)
    for group in ("g1", "g1/g2"):
        opened = xr.open_zarr(fs.get_mapper(group), consolidated=False)
        assert_same_dataset(opened.load(), open_truth([path], None, group=group), group)
    tree = zarr.open_group(fs.get_mapper(""), mode="r")
    names = sorted(name for name, _ in tree.members(max_depth=None))
    assert "g1/g2/d" in names
    with netCDF4.Dataset(path) as nc:
        np.testing.assert_array_equal(tree["g1/g2/d"][:], nc["g1/g2/d"][:])


def test_a_variable_named_zarr_json_is_served(tmp_path: Path) -> None:
    path = tmp_path / "odd.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 3)
        nc.createVariable("zarr.json", "i4", ("x",))[:] = [4, 5, 6]
    fs = _store(path)
    opened = xr.open_zarr(fs.get_mapper("")).load()
    assert_same_dataset(opened, open_truth([path], None))
    np.testing.assert_array_equal(opened["zarr.json"].values, [4, 5, 6])


def test_a_slow_first_scan_does_not_turn_a_format_2_open_into_a_refusal(
    steps: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first requests wait for the scan: the format 2 requests zarr sent beside
    zarr.json still vouch for it, however long the scan took."""
    import time

    import fsspec_virtual.format_probe as format_probe
    import fsspec_virtual.state as state_module

    monkeypatch.setattr(format_probe, "_WINDOW", 0.2)
    real_get_state = state_module.get_state

    def slow_get_state(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)
        return real_get_state(*args, **kwargs)

    monkeypatch.setattr(state_module, "get_state", slow_get_state)
    state_module.clear_states()
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time")
    assert_same_dataset(xr.open_zarr(fs.get_mapper("")).load(), open_truth(steps))
    state_module.clear_states()
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time")
    with pytest.raises(ZarrFormatNotServedError):
        zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=3)


def test_format_3_asked_of_a_node_that_does_not_exist_is_not_found(steps: list[Path]) -> None:
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time")
    with pytest.raises(FileNotFoundError) as caught:
        zarr.open_group(fs.get_mapper("nosuch"), mode="r", zarr_format=3)
    assert not isinstance(caught.value, ZarrFormatNotServedError)


# -- a store made with zarr_format=3 -------------------------------------------------------


def test_a_format_3_store_asked_for_format_2_names_the_format_served(steps: list[Path]) -> None:
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time", zarr_format=3)
    root = fs.get_mapper("")
    for open_v2 in (
        lambda: zarr.open_group(root, mode="r", zarr_format=2),
        lambda: xr.open_zarr(root, zarr_format=2),
        lambda: xr.open_zarr(root, zarr_format=2, consolidated=False),
        lambda: zarr.open_consolidated(root, mode="r", zarr_format=2),
    ):
        with pytest.raises(ZarrFormatNotServedError, match=r"Zarr format 3 only.*the root"):
            open_v2()
    with pytest.raises(ZarrFormatNotServedError, match=r"format 3 only.*node 'v'"):
        zarr.open_array(fs.get_mapper("v"), mode="r", zarr_format=2)
    # and the same store still opens as format 3 right after, asked or found
    truth = open_truth(steps)
    for opened in (
        xr.open_zarr(root),
        xr.open_zarr(root, zarr_format=3),
        xr.open_zarr(root, consolidated=False),
        xr.open_dataset(root, engine="zarr"),
    ):
        assert_same_dataset(opened.load(), truth)
    group = zarr.open_group(root, mode="r")
    assert group.metadata.zarr_format == 3
    np.testing.assert_array_equal(group["v"][:], truth["v"].values)
    np.testing.assert_array_equal(zarr.open_array(fs.get_mapper("v"), mode="r")[:], truth["v"])


def test_a_format_3_store_of_nested_groups_opens_without_zarr_format(tmp_path: Path) -> None:
    path = write_groups(tmp_path / "groups.nc")
    fs = _store(path, zarr_format=3)
    for group in ("g1", "g1/g2"):
        opened = xr.open_zarr(fs.get_mapper(group), consolidated=False)
        assert_same_dataset(opened.load(), open_truth([path], None, group=group), group)
    tree = zarr.open_group(fs.get_mapper(""), mode="r")
    assert tree.metadata.zarr_format == 3
    assert "g1/g2/d" in sorted(name for name, _ in tree.members(max_depth=None))


def test_arrays_named_c_are_served_in_format_3(tmp_path: Path) -> None:
    """An array named ``c``, the first part of every v3 chunk key, at the root and in a
    group: its chunks are ``c/c/0`` and ``g/c/c/0``."""
    import h5py

    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("c", data=np.array([7, 8, 9], dtype="<i4"))
        f.create_dataset("g/c", data=np.array([1.5], dtype="<f8"))
    fs = _store(path, zarr_format=3)
    tree = zarr.open_group(fs.get_mapper(""), mode="r")
    with h5py.File(path, "r") as f:
        for name in ("c", "g/c"):
            np.testing.assert_array_equal(tree[name][:], f[name][:])
    assert np.frombuffer(fs.cat_file("c/c/0"), "<i4").tolist() == [7, 8, 9]
    assert np.frombuffer(fs.cat_file("g/c/c/0"), "<f8").tolist() == [1.5]
    with pytest.raises(FileNotFoundError):
        fs.cat_file("c/c")  # a 1-d array's chunk has one index


def test_a_variable_named_zarr_json_is_refused_in_format_3(tmp_path: Path) -> None:
    """A v3 listing takes a node named ``zarr.json`` for its parent's document (zarr's
    ``consolidated=False`` open then leaves the variable out): refused by name."""
    path = tmp_path / "odd.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 3)
        nc.createVariable("zarr.json", "i4", ("x",))[:] = [4, 5, 6]
    fs = _store(path, zarr_format=3)
    for open_v3 in (
        lambda: xr.open_zarr(fs.get_mapper("")),
        lambda: xr.open_zarr(fs.get_mapper(""), zarr_format=3, consolidated=False),
    ):
        with pytest.raises(ZarrFormatNotServedError, match=r"variable 'zarr.json'"):
            open_v3()


def test_format_2_asked_of_a_format_3_node_that_does_not_exist_is_not_found(
    steps: list[Path],
) -> None:
    fs = _store(steps[0].parent / "s*.nc", concat_dim="time", zarr_format=3)
    with pytest.raises(FileNotFoundError) as caught:
        zarr.open_group(fs.get_mapper("nosuch"), mode="r", zarr_format=2)
    assert not isinstance(caught.value, ZarrFormatNotServedError)
