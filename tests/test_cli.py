"""The ``fsspec-virtual`` command, run as a real subprocess (``python -m fsspec_virtual``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import fsspec
import h5py
import numpy as np
import pytest
import xarray as xr
from conftest import write_series, write_simple
from oracle import assert_same_dataset, open_truth

TIMEOUT = 120


def run(*args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if tmpdir is not None:  # where the command's own temporary files go
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "fsspec_virtual", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


def _mentions_count(text: str, word: str, count: int) -> bool:
    """``count`` appears next to ``word`` (either order), e.g. 'files: 3' or '3 files'."""
    n = re.escape(str(count))
    return bool(
        re.search(rf"{word}\w*\W{{0,40}}\b{n}\b", text, re.I)
        or re.search(rf"\b{n}\b\W{{0,10}}{word}", text, re.I)
    )


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> list[Path]:
    directory = tmp_path_factory.mktemp("cli")
    return write_series(directory, [[0, 1], [2, 3], [4, 5]], dtypes=["float32", "int16"])


class TestInfo:
    def test_info_prints_dataset_and_summary(self, collection):
        result = run("info", str(collection[0].parent), "--concat-dim", "time")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        truth = open_truth(collection)
        for name in truth.variables:
            assert re.search(rf"\b{re.escape(str(name))}\b", out), f"{name} not in output"
        for dim, size in truth.sizes.items():
            assert re.search(rf"\b{dim}\b\W+{size}\b", out), f"{dim}: {size} not in output"
        assert _mentions_count(out, "file", len(collection)), out
        n_vars = len(truth.variables)
        assert _mentions_count(out, "variable", n_vars) or "variable" in out.lower(), out
        assert "chunk" in out.lower() and "byte" in out.lower(), out

    def test_info_says_which_zarr_format_is_served(self, collection):
        for flags, served in (
            ([], "zarr format:       2"),
            (["--zarr-format", "3"], "format:       3"),
        ):
            result = run("info", str(collection[0].parent), "--concat-dim", "time", *flags)
            assert result.returncode == 0, result.stderr
            assert served in result.stdout, result.stdout
            assert re.search(r"\btime\b\W+6\b", result.stdout), result.stdout
        assert "t2m/c/0/0/0" in result.stdout and ".zmetadata" not in result.stdout
        bad = run("info", str(collection[0].parent), "--zarr-format", "4")
        assert bad.returncode == 2 and "--zarr-format" in bad.stderr, bad.stderr

    def test_info_single_file(self, tmp_path):
        path = write_simple(tmp_path / "one.nc", [0, 1, 2, 3], var="temperature")
        result = run("info", str(path))
        assert result.returncode == 0, result.stderr
        assert "temperature" in result.stdout
        assert re.search(r"\btime\b\W+4\b", result.stdout), result.stdout

    def test_info_glob(self, collection):
        result = run("info", f"{collection[0].parent}/*.nc", "--concat-dim", "time")
        assert result.returncode == 0, result.stderr
        assert re.search(r"\btime\b\W+6\b", result.stdout), result.stdout

    def test_info_bad_path_fails_and_names_it(self, tmp_path):
        missing = tmp_path / "nowhere"
        result = run("info", str(missing), "--concat-dim", "time")
        assert result.returncode != 0
        assert "nowhere" in result.stdout + result.stderr

    def test_info_incompatible_files_fails(self, tmp_path):
        write_simple(tmp_path / "a.nc", [0, 1, 2, 3])
        write_simple(tmp_path / "b.nc", [4, 5, 6, 7], nx=5)
        result = run("info", str(tmp_path), "--concat-dim", "time")
        assert result.returncode != 0
        assert "a.nc" in result.stdout + result.stderr

    def test_help(self):
        result = run("--help")
        assert result.returncode == 0
        assert "info" in result.stdout and "demo" in result.stdout


class TestDemo:
    def test_demo_writes_files_and_checks_a_read(self, tmp_path):
        directory = tmp_path / "demo"
        result = run("demo", str(directory))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
        files = sorted(p for p in directory.iterdir() if p.is_file())
        data = [p for p in files if p.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"]
        assert len(data) >= 2, files
        # the demo's own check is not the truth: open its files independently
        fs = fsspec.filesystem("virtualzarr", path=str(directory), concat_dim="time")
        with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
            actual = ds.load()
        truth = open_truth(data)
        assert_same_dataset(actual, truth)
        # compressed and chunked, as the issue says
        with h5py.File(data[0], "r") as f:
            chunked = [n for n, v in f.items() if isinstance(v, h5py.Dataset) and v.chunks]
            assert chunked and any(f[n].compression for n in chunked)
        assert any(v.ndim >= 2 for v in truth.data_vars.values())
        assert np.issubdtype(truth["time"].dtype, np.datetime64)

    def test_demo_default_directory(self, tmp_path):
        result = run("demo", tmpdir=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert written, "the demo wrote its files somewhere other than the temp directory"


class TestScan:
    def test_scan_fills_the_cache_then_reuses_it(self, tmp_path):
        for i in range(3):
            write_simple(tmp_path / f"f{i}.nc", [4 * i + k for k in range(4)])
        cache = tmp_path / "cache-dir"
        first = run("scan", str(tmp_path), "--concat-dim", "time", "--cache-dir", str(cache))
        assert first.returncode == 0, first.stderr
        assert "3 files: 3 scanned, 0 reused" in first.stdout, first.stdout
        assert "scanning" not in first.stderr, first.stderr  # no bar for a short scan
        second = run("scan", str(tmp_path), "--concat-dim", "time", "--cache-dir", str(cache))
        assert second.returncode == 0, second.stderr
        assert "3 files: 0 scanned, 3 reused" in second.stdout, second.stdout


def test_scan_of_a_remote_directory_reports_its_requests(tmp_path):
    from servers import serve_directory

    write_series(tmp_path / "www", [[0, 1], [2, 3]])
    with serve_directory(tmp_path / "www") as server:
        result = run(
            "scan", f"{server.url}/", "--concat-dim", "time", "--cache-dir", str(tmp_path / "c")
        )
        gets = len(server.gets())
    assert result.returncode == 0, result.stderr
    assert "2 files: 2 scanned, 0 reused" in result.stdout, result.stdout
    assert "remote scans: 2 requests (1.0 per file)" in result.stdout, result.stdout
    assert gets == 1 + 2 * 2  # the index page; per file its magic bytes and one block


class TestCombineFlags:
    def _members(self, directory: Path) -> list[Path]:
        """Files whose member is only in their names (r1, r2, r10: natural order)."""
        paths = []
        for member in (1, 2, 10):
            (path,) = write_series(directory, [[0, 1]], names=[f"tas_r{member}i1p1.nc"])
            paths.append(path)
        return paths

    def test_coords_from_path_and_repeated_concat_dim(self, tmp_path):
        self._members(tmp_path)
        done = run(
            "info",
            str(tmp_path),
            "--concat-dim",
            "member",
            "--coords-from-path",
            r"member=_r(\d+)i",
            "--join",
            "exact",
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"member\W+3", done.stdout), done.stdout

    def test_malformed_coords_from_path_is_a_usage_error(self, tmp_path):
        done = run("info", str(tmp_path), "--coords-from-path", "member")
        assert done.returncode == 2
        assert "NAME=REGEX" in done.stderr

    def test_errors_are_one_line_with_hints_in_flags(self, tmp_path):
        self._members(tmp_path)
        usage = run("info", str(tmp_path), "--combine", "nested")  # nested needs a dimension
        assert usage.returncode == 2 and "--combine nested" in usage.stderr
        assert "Traceback" not in usage.stderr
        data = run("info", str(tmp_path), "--concat-dim", "member")  # nothing gives member
        assert data.returncode == 1, data.stderr
        assert (
            "--coords-from-path NAME=REGEX" in data.stderr and "coords_from_path" not in data.stderr
        )
        assert "Traceback" not in data.stderr and len(data.stderr.strip().splitlines()) <= 3
        debug = run("--debug", "info", str(tmp_path), "--concat-dim", "member")
        assert debug.returncode == 1 and "Traceback" in debug.stderr

    def test_a_bad_regex_or_a_name_given_twice_is_a_usage_error(self, tmp_path):
        bad = run("info", str(tmp_path), "--coords-from-path", r"member=_r(\d+")
        assert bad.returncode == 2 and "not a regex" in bad.stderr
        twice = run(
            "info", str(tmp_path), "--coords-from-path", "m=(a)", "--coords-from-path", "m=(b)"
        )
        assert twice.returncode == 2 and "more than once" in twice.stderr
