"""fsspec-virtual serve: the store's keys over HTTP, read by real clients on 127.0.0.1.

Every client (xarray, zarr-python's FsspecStore, fsspec's HTTP filesystem) must read what
``open_mfdataset`` reads; the HTTP rules (ranges, entity tags, errors, tokens, paths that
are not keys) are checked on the wire, with raw sockets where a client would normalise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from aiohttp import web
from conftest import write_series, write_simple, write_sparse
from oracle import assert_same_dataset, open_truth

from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual.serve import app as app_module
from fsspec_virtual.serve import make_app
from fsspec_virtual.serve.app import Limits, running

TOKEN = "s3cret-T0ken"
DEFAULTS = Limits()


class ServerThread:
    """A server for ``app`` on 127.0.0.1 (a free port) in a thread with its own loop."""

    def __init__(self, app: web.Application, limits: Limits = DEFAULTS) -> None:
        self._app, self._limits = app, limits
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with running(self._app, "127.0.0.1", 0, self._limits) as url:
                self.url = url
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(60), "server did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].strip("/"))


@contextmanager
def serving(fs: VirtualZarrFileSystem, limits: Limits = DEFAULTS, **options: Any) -> Iterator[str]:
    server = ServerThread(make_app(fs, **options), limits).start()
    try:
        yield server.url
    finally:
        server.stop()


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    """(status, headers, body) of one request; errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def _raw(port: int, request: bytes) -> bytes:
    """The server's whole answer to ``request`` sent as is on a socket (no client in
    between to normalise the path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


@pytest.fixture
def collection(tmp_path: Path) -> tuple[list[Path], VirtualZarrFileSystem]:
    paths = write_series(tmp_path / "data", [[0.0, 1.0], [2.0, 3.0, 4.0]])
    return paths, VirtualZarrFileSystem(str(tmp_path / "data"), concat_dim="time")


# -- clients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("consolidated", [None, True])
def test_xarray_over_http_equals_open_mfdataset(collection, consolidated) -> None:
    paths, fs = collection
    with serving(fs) as url:
        ds = xr.open_zarr(url, consolidated=consolidated)
        assert_same_dataset(ds.load(), open_truth(paths))


def test_zarr_fsspec_store_over_http_equals_open_mfdataset(collection) -> None:
    paths, fs = collection
    truth = open_truth(paths, decode_cf=False)
    with serving(fs) as url:
        store = zarr.storage.FsspecStore.from_url(url, read_only=True)
        assert_same_dataset(xr.open_zarr(store).load(), open_truth(paths))
        group = zarr.open_group(store, mode="r", zarr_format=2)
        for name in truth.variables:
            values = group[name][...]
            assert values.dtype == truth[name].dtype, name
            np.testing.assert_array_equal(values, truth[name].values, err_msg=name)
        assert sorted(group.array_keys()) == sorted(truth.variables)


def test_missing_chunks_are_404_and_read_as_fill(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    paths = [
        write_sparse(tmp_path / "d" / "a.nc", [0.0, 1.0], declared_fill=True),
        write_sparse(tmp_path / "d" / "b.nc", [2.0, 3.0], declared_fill=True, seed=1),
    ]
    fs = VirtualZarrFileSystem(str(tmp_path / "d"), concat_dim="time")
    missing = "never_f8/0.0"
    assert not fs.exists(missing)
    with serving(fs) as url:
        status, _headers, body = _get(url + missing)
        assert status == 404 and b"never_f8/0.0" in body
        assert_same_dataset(xr.open_zarr(url).load(), open_truth(paths))


def test_every_key_equals_the_store_and_fsspec_http_reads_it(collection) -> None:
    import fsspec

    _, fs = collection
    keys = [k for k in fs.find("") if not k.endswith("/")]
    assert len(keys) > 20
    with serving(fs) as url:
        http = fsspec.filesystem("http")
        served = http.cat([url + k for k in keys])
        for key in keys:
            assert served[url + key] == fs.cat_file(key), key


# -- HTTP rules -------------------------------------------------------------------------------


def test_ranges(collection) -> None:
    _, fs = collection
    key = ".zmetadata"
    whole = fs.cat_file(key)
    size = len(whole)
    with serving(fs) as url:
        status, headers, body = _get(url + key)
        assert (status, body, headers["Content-Length"]) == (200, whole, str(size))
        assert headers["Accept-Ranges"] == "bytes"
        cases = {
            "bytes=10-19": (10, 20),
            "bytes=0-0": (0, 1),
            f"bytes={size - 5}-": (size - 5, size),
            "bytes=-7": (size - 7, size),
            f"bytes=-{size + 100}": (0, size),
            f"bytes=100-{size + 100}": (100, size),
            # more digits than Python's int() reads (4300): past every end, not a 500
            f"bytes=10-{'9' * 5000}": (10, size),
            f"bytes=-{'9' * 5000}": (0, size),
            f"bytes={'0' * 5000}5-9": (5, 10),
        }
        for header, (start, stop) in cases.items():
            status, headers, body = _get(url + key, {"Range": header})
            assert status == 206, header
            assert body == whole[start:stop], header
            assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}", header
            assert headers["Content-Length"] == str(stop - start), header
        for header in [
            f"bytes={size}-",
            f"bytes={size + 10}-{size + 20}",
            "bytes=-0",
            "bytes=20-10",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            f"bytes={'9' * 5000}-",
        ]:
            status, headers, body = _get(url + key, {"Range": header})
            assert status == 416, header
            assert headers["Content-Range"] == f"bytes */{size}", header
            assert whole[:50] not in body
        # Arabic-Indic digits (sent as UTF-8) are not digits of HTTP
        port = int(url.rsplit(":", 1)[1].strip("/"))
        request = f"GET /{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=\u0661-\u0663\r\n"
        answer = _raw(port, (request + "Connection: close\r\n\r\n").encode())
        assert answer.startswith(b"HTTP/1.1 416")


def test_ranges_of_a_chunk(collection) -> None:
    _, fs = collection
    key = "v_float64/1.0"
    whole = fs.cat_file(key)
    assert len(whole) > 8
    with serving(fs) as url:
        status, headers, body = _get(url + key, {"Range": "bytes=3-8"})
        assert (status, body) == (206, whole[3:9])
        assert headers["Content-Type"] == "application/octet-stream"


def test_head(collection) -> None:
    _, fs = collection
    whole = fs.cat_file("v_int32/0.0")
    with serving(fs) as url:
        status, headers, body = _get(url + "v_int32/0.0", method="HEAD")
        assert (status, body, headers["Content-Length"]) == (200, b"", str(len(whole)))
        get_tag = _get(url + "v_int32/0.0")[1]["ETag"]
        assert headers["ETag"] == get_tag
        status, headers, body = _get(url + "v_int32/0.0", {"Range": "bytes=2-"}, method="HEAD")
        assert (status, body) == (206, b"")
        assert headers["Content-Range"] == f"bytes 2-{len(whole) - 1}/{len(whole)}"
        assert headers["Content-Length"] == str(len(whole) - 2)
        assert _get(url + "v_int32/99.0", method="HEAD")[0] == 404


def test_etags_and_304(collection) -> None:
    _, fs = collection
    with serving(fs) as url:
        tags = {
            key: _get(url + key)[1]["ETag"]
            for key in (".zmetadata", "v_float32/0.0", "v_float32/1.0")
        }
        assert len(set(tags.values())) == 3
        tag = tags["v_float32/0.0"]
        assert _get(url + "v_float32/0.0")[1]["ETag"] == tag  # stable
        for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
            status, headers, body = _get(url + "v_float32/0.0", {"If-None-Match": header})
            assert (status, body, headers["ETag"]) == (304, b"", tag), header
        status, _, body = _get(url + "v_float32/0.0", {"If-None-Match": tags["v_float32/1.0"]})
        assert (status, body) == (200, fs.cat_file("v_float32/0.0"))
        # a key that does not exist is not "not modified"
        assert _get(url + "v_float32/99.0", {"If-None-Match": "*"})[0] == 404


def test_a_chunk_index_of_thousands_of_digits_is_404(collection) -> None:
    _, fs = collection
    huge = "9" * 5000
    with serving(fs) as url:
        for key in (f"v_float32/{huge}.0", f"v_float32/0.{huge}"):
            assert not fs.exists(key)
            status, _, body = _get(url + key)
            assert status == 404 and b"500" not in body


def test_if_match_and_if_range(collection) -> None:
    """A client resuming a download (``If-Range``) or pinning what it read (``If-Match``)
    never gets bytes of another version spliced in (RFC 9110 13.1.1, 13.1.5)."""
    _, fs = collection
    key = "v_float32/0.0"
    whole = fs.cat_file(key)
    with serving(fs) as url:
        tag = _get(url + key)[1]["ETag"]
        other = _get(url + "v_float32/1.0")[1]["ETag"]
        for header in (tag, f'"x", {tag}', "*"):
            status, _, body = _get(url + key, {"If-Match": header, "Range": "bytes=2-"})
            assert (status, body) == (206, whole[2:]), header
        for header in (other, f"W/{tag}", '"bogus"'):
            for method in ("GET", "HEAD"):
                status, headers, body = _get(url + key, {"If-Match": header}, method=method)
                assert status == 412 and whole not in body, header
                assert headers["ETag"] == tag
        assert _get(url + "v_float32/99.0", {"If-Match": "*"})[0] == 404
        # If-Range: the range if the tag is the key's (strong), else the whole key
        status, headers, body = _get(url + key, {"If-Range": tag, "Range": "bytes=2-"})
        assert (status, body) == (206, whole[2:])
        for header in (other, f"W/{tag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
            status, headers, body = _get(url + key, {"If-Range": header, "Range": "bytes=2-"})
            assert (status, body) == (200, whole), header
            assert "Content-Range" not in headers
        # without a Range, If-Range changes nothing
        assert _get(url + key, {"If-Range": other})[:3:2] == (200, whole)


def test_cors(collection) -> None:
    """Without a token, no page of another origin may read the server (a page the user
    visits would read every chunk), unless the server was given that origin; with a token
    (which a page must know) any origin may."""
    _, fs = collection
    evil = {"Origin": "https://evil.example"}
    with serving(fs) as url:
        for path, status in ((".zgroup", 200), ("nope/.zarray", 404)):
            answer = _get(url + path, evil)
            assert answer[0] == status
            assert "Access-Control-Allow-Origin" not in answer[1]
            exposed = answer[1]["Access-Control-Expose-Headers"]
            assert {"Content-Range", "ETag", "Content-Length"} <= set(exposed.split(", "))
    with serving(fs, cors_origins=["https://maps.example/"]) as url:
        assert "Access-Control-Allow-Origin" not in _get(url + ".zgroup", evil)[1]
        allowed = _get(url + ".zgroup", {"Origin": "https://maps.example"})[1]
        assert allowed["Access-Control-Allow-Origin"] == "https://maps.example"
        assert allowed["Vary"] == "Origin"
    for options in ({"cors_origins": ["*"]}, {"token": TOKEN}):
        with serving(fs, **options) as url:
            headers = {**evil, "Authorization": f"Bearer {TOKEN}"}
            for path, status in ((".zgroup", 200), ("nope/.zarray", 404)):
                answer = _get(url + path, headers)
                assert answer[0] == status
                assert answer[1]["Access-Control-Allow-Origin"] == "*"
            status, headers, _ = _get(
                url + "v_float32/0.0",
                {"Origin": "http://example.org", "Access-Control-Request-Method": "GET"},
                method="OPTIONS",
            )
            assert status == 204
            assert "GET" in headers["Access-Control-Allow-Methods"]
            assert {"Range", "If-None-Match", "If-Match", "If-Range", "Authorization"} <= set(
                headers["Access-Control-Allow-Headers"].split(", ")
            )


def test_without_a_token_only_this_machine_s_names_are_served(collection) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 is
    same-origin with the server; a Host naming neither this machine nor an address is
    refused (421). With a token, any Host is served (the page has no token)."""
    _, fs = collection
    with serving(fs) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", "[::1]:1", "10.1.2.3"):
            assert _raw_status(port, "/.zgroup", host) == 200, host
        for host in (f"rebind.evil.example:{port}", "evil", "", "localhost.evil.example"):
            assert _raw_status(port, "/.zgroup", host) == 421, host
        assert _raw_status(port, "/", "x:99999") == 421
    with serving(fs, allowed_hosts=["data.example.org"]) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert _raw_status(port, "/.zgroup", "Data.Example.org:443") == 200
        assert _raw_status(port, "/.zgroup", "evil.example") == 421
    with serving(fs, token=TOKEN) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for host in ("rebind.evil.example", "x:99999", ""):
            # no token: refused for that, never 421 nor a 500 (the landing page too)
            assert _raw_status(port, "/", host) == 401, host
            assert _raw_status(port, "/", host, TOKEN) == 200, host


def _raw_status(port: int, target: str, host: str, token: str | None = None) -> int:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    answer = _raw(
        port,
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode(),
    )
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_405(collection, method) -> None:
    _, fs = collection
    with serving(fs) as url:
        status, headers, _ = _get(url + "v_float32/0.0", method=method)
        assert status == 405
        assert set(headers["Allow"].split(",")) == {"GET", "HEAD", "OPTIONS"}
        assert fs.cat_file("v_float32/0.0")  # still there


def test_groups_arrays_and_root_are_not_keys(collection) -> None:
    _, fs = collection
    with serving(fs) as url:
        assert _get(url + "v_float32")[0] == 404
        assert _get(url + "v_float32/")[0] in (400, 404)
        assert _get(url + "part00.nc")[0] == 404  # a source file is not a key


# -- errors of sources -------------------------------------------------------------------------


def _rewrite(path: Path, values_seed: int) -> None:
    """Write another version of a ``write_series`` file (same shape, other values and
    size) next to it and move it into place at once."""
    other = path.parent / "rewrite" / path.name
    names = [path.name]
    write_series(other.parent, [[2.0, 3.0, 4.0]], names=names, layout="gzip_shuffle", nx=5)
    with xr.open_dataset(other, engine="netcdf4") as ds:
        assert ds.sizes["time"] == 3
    # make the sizes differ too: append an attribute of a length of its own
    import netCDF4

    with netCDF4.Dataset(other, "a") as nc:
        nc.rewritten = "x" * (100 + values_seed)
        nc["v_float64"][:] = nc["v_float64"][:] + values_seed
    os.replace(other, path)


def test_a_rewritten_file_is_503_naming_it(collection) -> None:
    paths, fs = collection
    with serving(fs) as url:
        before = _get(url + "v_float64/1.0")
        assert before[0] == 200
        _rewrite(paths[1], 1)
        status, _headers, body = _get(url + "v_float64/1.0")
        assert status == 503
        # HEAD (a client asking the size first) and a range are told the same
        assert _get(url + "v_float64/1.0", method="HEAD")[0] == 503
        assert _get(url + "v_float64/1.0", {"Range": "bytes=0-3"}, method="HEAD")[0] == 503
        assert paths[1].name in body.decode()
        # a client is told, never given fill values
        with pytest.raises(Exception) as raised:
            xr.open_zarr(url)["v_float64"].load()
        assert "503" in str(raised.value) or "Service Unavailable" in str(raised.value)
        # keys of the unchanged file are still served
        assert _get(url + "v_float64/0.0")[0] == 200


def test_a_deleted_file_is_503_naming_it(collection) -> None:
    paths, fs = collection
    with serving(fs) as url:
        assert _get(url + "v_int16/1.0")[0] == 200
        paths[1].unlink()
        status, _, body = _get(url + "v_int16/1.0")
        assert status == 503 and paths[1].name in body.decode()


def test_listing_ttl_serves_a_rewritten_file_new(collection) -> None:
    paths, fs = collection
    with serving(fs, listing_ttl=0) as url:
        old = _get(url + "v_float64/1.0")
        _rewrite(paths[1], 7)
        new = _get(url + "v_float64/1.0")
        assert new[0] == 200
        assert new[2] != old[2] and new[1]["ETag"] != old[1]["ETag"]
        fresh = VirtualZarrFileSystem(str(paths[0].parent), concat_dim="time", cache=False)
        assert new[2] == fresh.cat_file("v_float64/1.0")
        assert_same_dataset(xr.open_zarr(url).load(), open_truth(paths))


def test_files_rewritten_while_serving_never_wrong_bytes(collection) -> None:
    """Readers hammer one chunk of a file rewritten again and again (moved into place):
    every answer is 503 or the bytes of one version of the file, and one entity tag
    always names the same bytes."""
    paths, fs = collection
    versions = set()
    for seed in (1, 2):
        _rewrite(paths[1], seed)
        fs.refresh()
        versions.add(fs.cat_file("v_float64/1.0"))
    assert len(versions) == 2
    by_tag: dict[str, bytes] = {}
    statuses: list[int] = []
    wrong: list[bytes] = []
    stop = threading.Event()
    with serving(fs, listing_ttl=0) as url:

        def read() -> None:
            while not stop.is_set():
                status, headers, body = _get(url + "v_float64/1.0")
                statuses.append(status)
                if status == 200:
                    if body not in versions:
                        wrong.append(body)
                    if by_tag.setdefault(headers["ETag"], body) != body:
                        wrong.append(body)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for reader in readers:
            reader.start()
        try:
            for i in range(8):
                _rewrite(paths[1], 1 + i % 2)
                time.sleep(0.05)
        finally:
            stop.set()
            for reader in readers:
                reader.join(60)
    assert not wrong
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) > 0


def test_listing_ttl_picks_up_a_new_file(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    paths = write_series(directory, [[0.0, 1.0], [2.0, 3.0]])
    fs = VirtualZarrFileSystem(str(directory), concat_dim="time")
    with serving(fs, listing_ttl=0) as url, serving(fs) as fixed:
        assert_same_dataset(xr.open_zarr(url).load(), open_truth(paths))
        tag = _get(url + ".zmetadata")[1]["ETag"]
        assert xr.open_zarr(fixed).sizes["time"] == 4  # pins its snapshot
        more = write_series(tmp_path / "more", [[4.0, 5.0, 6.0]], names=["part02.nc"])
        shutil.move(more[0], directory / "part02.nc")
        paths.append(directory / "part02.nc")
        assert_same_dataset(xr.open_zarr(url).load(), open_truth(paths))
        assert _get(url + ".zmetadata")[1]["ETag"] != tag
        # without listing_ttl the server keeps its snapshot
        assert xr.open_zarr(fixed).sizes["time"] == 4


# -- safety ------------------------------------------------------------------------------------


def test_token_refused_and_accepted(collection) -> None:
    paths, fs = collection
    with serving(fs, token=TOKEN) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, answer, body = _get(url + ".zmetadata", headers)
            assert status == 401, headers
            assert answer["WWW-Authenticate"].startswith("Bearer")
            assert b"zarr_consolidated_format" not in body
        assert _get(url + "v_float32/0.0")[0] == 401
        assert _get(url + ".zmetadata?token=wrong")[0] == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert _get(url + ".zmetadata", good)[0] == 200
        opened = xr.open_zarr(url, storage_options={"headers": good})
        assert_same_dataset(opened.load(), open_truth(paths))
        # preflight carries no credentials
        assert _get(url + ".zmetadata", method="OPTIONS")[0] == 204


def test_token_in_a_url_becomes_a_cookie(collection) -> None:
    _, fs = collection
    with serving(fs, token=TOKEN) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        target = f"/.zgroup?token={TOKEN}&x=1"
        answer = _raw(
            port, f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
        )
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 303")
        assert "\r\nLocation: /.zgroup?x=1\r\n" in head
        cookie = next(line for line in head.split("\r\n") if line.startswith("Set-Cookie:"))
        assert f"fsspec_virtual_token={TOKEN}" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, _, body = _get(url + ".zgroup", {"Cookie": f"fsspec_virtual_token={TOKEN}"})
        assert status == 200 and b"zarr_format" in body
        assert _get(url + ".zgroup", {"Cookie": "fsspec_virtual_token=nope"})[0] == 401


def test_the_token_parameter_is_spelled_token(collection, caplog) -> None:
    """``?%74oken=`` is refused (a log or a proxy would not know it for the token) and never
    written to the access log; the redirect keeps the path as the client spelled it."""
    _, fs = collection
    caplog.set_level(logging.INFO, logger="fsspec_virtual.serve.access")
    with serving(fs, token=TOKEN) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for target in (f"/.zgroup?%74oken={TOKEN}", f"/.zgroup?x=1&t%6Fken={TOKEN}"):
            answer = _raw(
                port, f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.startswith(b"HTTP/1.1 400"), target
            assert b"Set-Cookie" not in answer
        target = f"/a%3Fb%23c?token={TOKEN}&y=%3F"
        answer = _raw(
            port, f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
        )
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 303")
        assert "\r\nLocation: /a%3Fb%23c?y=" in head  # the path as sent, not /a?b#c
    lines = [r.getMessage() for r in caplog.records if r.name == "fsspec_virtual.serve.access"]
    assert len(lines) == 3 and not any(TOKEN in line for line in lines), lines


TRAVERSALS = [
    "/../etc/passwd",
    "/%2e%2e/etc/passwd",
    "/%2E%2E%2Fetc%2Fpasswd",
    "/v_float32/../../etc/passwd",
    "/v_float32/..%2f..%2fetc%2fpasswd",
    "/v_float32/%2e%2e/.zarray",
    "//etc/passwd",
    "/v_float32//0.0",
    "/./.zgroup",
    "/v_float32/./.zarray",
    "/..\\..\\etc\\passwd",
    "/v_float32%5c.zarray",
    "/.zgroup%00",
    "/%00",
    "/%c0%ae%c0%ae/etc/passwd",
    "http://127.0.0.1/.zgroup",
    "http://evil.example/../../etc/passwd",
    "*",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_outside_the_store_are_refused(collection, target) -> None:
    paths, fs = collection
    server = ServerThread(make_app(fs)).start()
    try:
        answer = _raw(server.port, _request(target))
    finally:
        server.stop()
    status = int(answer.split(b" ", 2)[1])
    assert status == 400, (target, answer[:200])
    assert b"root:x:0:0" not in answer and b"zarr_format" not in answer
    assert paths[0].read_bytes()[:64] not in answer


def test_a_variable_named_like_a_page_keeps_its_keys(tmp_path: Path, monkeypatch) -> None:
    """Store keys win over page routes, and pages answer paths that are not keys."""
    path = write_simple(tmp_path / "d" / "a.nc", [0.0, 1.0], var="quicklook")
    fs = VirtualZarrFileSystem(str(path))

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="page")

    def add_pages(app: web.Application) -> None:
        app.router.add_get("/quicklook/{var}.png", page)
        app.router.add_get("/{anything:.+}", page)  # a page route matching every path

    monkeypatch.setattr(app_module, "_add_pages", add_pages)
    with serving(fs) as url:
        for key in ("quicklook/.zarray", "quicklook/0.0", ".zmetadata"):
            status, _, body = _get(url + key)
            assert (status, body) == (200, fs.cat_file(key)), key
        assert _get(url + "quicklook/quicklook.png")[2] == b"page"
        # a missing chunk key goes to the routes (here a page; without one, 404)
        assert _get(url + "quicklook/9.0")[2] == b"page"
        opened = xr.open_zarr(url, zarr_format=2, consolidated=True)
        assert_same_dataset(opened.load(), open_truth([path]))


def test_request_size_limits(collection) -> None:
    _, fs = collection
    server = ServerThread(make_app(fs)).start()
    try:
        long_line = _raw(server.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        big_header = _raw(
            server.port, b"GET /.zgroup HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
        )
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(100))
        many_headers = _raw(server.port, b"GET /.zgroup HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")
    finally:
        server.stop()
    for answer in (long_line, big_header, many_headers):
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 413, 414, 431), answer[:200]


def test_a_slow_client_is_dropped(collection) -> None:
    _, fs = collection
    server = ServerThread(make_app(fs), Limits(idle_timeout=1.0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /.zgroup HTTP/1.1\r\n")
            for _ in range(3):  # dribbles a header, never ends the request
                time.sleep(0.5)
                try:
                    sock.sendall(b"X: y\r\n")
                except OSError:
                    break
            sock.settimeout(30)
            try:
                rest = sock.recv(65536)
            except ConnectionResetError:
                rest = b""
        assert b"zarr_format" not in rest
        assert rest == b"" or rest.startswith(b"HTTP/1.1 4")
    finally:
        server.stop()


def test_no_credentials_in_answers_or_logs(http_root, caplog) -> None:
    """A source URL's password and the server's token appear in no answer and no log line."""
    root, base = http_root
    paths = write_series(root, [[0.0, 1.0], [2.0, 3.0]])
    secret_url = base.replace("http://", "http://user:pa55word@") + "/"
    fs = VirtualZarrFileSystem([secret_url + p.name for p in paths], concat_dim="time", cache=False)
    caplog.set_level(logging.INFO, logger="fsspec_virtual")
    with serving(fs, token=TOKEN) as url:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert _get(url + "v_float32/0.0", auth)[0] == 200
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(url + f".zgroup?token={TOKEN}", timeout=60) as page:
            assert page.status == 200 and page.url == url + ".zgroup"  # redirected
        paths[1].unlink()
        status, headers, body = _get(url + "v_float32/1.0", auth)
        assert status == 503 and paths[1].name.encode() in body
        answers = [body, str(headers).encode(), _get(url + ".zmetadata", auth)[2]]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "v_float32/1.0" in logged and "/.zgroup?token=***" in logged  # the access log
    for text in [*answers, logged.encode()]:
        assert b"pa55word" not in text
        assert TOKEN.encode() not in text


def test_access_log_is_in_the_combined_format(collection, caplog) -> None:
    _, fs = collection
    caplog.set_level(logging.INFO, logger="fsspec_virtual.serve.access")
    with serving(fs) as url:
        size = len(_get(url + ".zgroup", {"User-Agent": "probe/1", "Referer": "http://r/"})[2])
        _get(url + "nope/0.0")
    lines = [r.getMessage() for r in caplog.records if r.name == "fsspec_virtual.serve.access"]
    import re

    combined = re.compile(
        r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        r'"(\S+) (\S+) HTTP/1\.1" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"'
    )
    parsed = [combined.fullmatch(line) for line in lines]
    assert all(parsed), lines
    first = parsed[0]
    assert first is not None
    assert first.groups() == ("GET", "/.zgroup", "200", str(size), "http://r/", "probe/1")
    assert any(m is not None and m.group(3) == "404" for m in parsed)


def test_make_app_refuses_other_filesystems() -> None:
    import fsspec

    with pytest.raises(TypeError, match="VirtualZarrFileSystem"):
        make_app(fsspec.filesystem("memory"))


def test_the_command_serves_until_interrupted(collection, tmp_path: Path) -> None:
    """``fsspec-virtual serve`` (token from the environment, a free port): it announces
    its URL, serves with the token only, logs requests redacted, and ends on Ctrl-C."""
    import re
    import signal
    import subprocess
    import sys

    paths, _ = collection
    env = {**os.environ, "FSSPEC_VIRTUAL_TOKEN": TOKEN}
    command = [sys.executable, "-m", "fsspec_virtual", "serve", str(paths[0].parent)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--concat-dim", "time"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    announced = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if line.startswith("serving "):
                announced.set()
        announced.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert announced.wait(120), lines
        found = re.search(r"at (http://127\.0\.0\.1:\d+/) ", "".join(lines))
        assert found is not None, lines
        url = found.group(1)
        assert _get(url + ".zgroup")[0] == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        opened = xr.open_zarr(url, storage_options={"headers": headers})
        assert_same_dataset(opened.load(), open_truth(paths))
        port = int(url.rsplit(":", 1)[1].strip("/"))
        answer = _raw(port, _request(f"/.zgroup?token={TOKEN}"))
        assert answer.startswith(b"HTTP/1.1 303")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        reader.join(30)
    assert code == 0, lines
    text = "".join(lines)
    assert '"GET /.zmetadata HTTP/1.1" 200' in text and '"GET /.zgroup HTTP/1.1" 401' in text
    assert "/.zgroup?token=***" in text
    assert TOKEN not in text


def test_the_command_refuses_a_negative_listing_ttl(collection) -> None:
    from fsspec_virtual.cli import main

    paths, _ = collection
    assert main(["serve", str(paths[0].parent), "--listing-ttl", "-1"]) == 2


def test_snapshot_urls_keep_a_dataset_on_its_snapshot(tmp_path: Path) -> None:
    """A client that keeps a dataset open while the server moves on reads it from
    ``/snapshot/ID/``: a file inserted before the others changes what a key holds in the
    new snapshot, not there."""
    directory = tmp_path / "d"
    paths = write_series(directory, [[2.0, 3.0], [4.0, 5.0]], names=["b.nc", "c.nc"])
    fs = VirtualZarrFileSystem(str(directory), concat_dim="time")
    with serving(fs, listing_ttl=0) as url:
        status, headers, _ = _get(url + ".zmetadata")
        ident = headers["X-Snapshot"]
        assert status == 200 and ident
        assert "X-Snapshot" in headers["Access-Control-Expose-Headers"]
        pinned = f"{url}snapshot/{ident}/"
        before = _get(pinned + "time/0")[2]
        assert before == fs.cat_file("time/0")
        earlier = write_series(tmp_path / "more", [[0.0, 1.0]], names=["a.nc"])
        shutil.move(earlier[0], directory / "a.nc")
        now = [directory / "a.nc", *paths]
        # a file inserted before the others moves every key's meaning: the root keeps
        # serving the first snapshot, and the new one is served at its own URL
        assert _get(url + ".zmetadata")[1]["X-Snapshot"] == ident
        assert_same_dataset(xr.open_zarr(url).load(), open_truth(paths))
        newer = VirtualZarrFileSystem(str(directory), concat_dim="time").collection().id
        assert newer != ident
        moved = f"{url}snapshot/{newer}/"
        assert_same_dataset(xr.open_zarr(moved).load(), open_truth(now))
        assert _get(moved + "time/0")[2] != before  # a.nc's times come first there
        # the pinned URL still serves the first snapshot, whole
        assert _get(pinned + "time/0")[2] == before
        assert_same_dataset(xr.open_zarr(pinned).load(), open_truth(paths))
        assert _get(pinned + "v_float64/9.0")[0] == 404
        for unknown in ("s" + "0" * 40, "not$an-id", "x" * 200):
            status, _, body = _get(f"{url}snapshot/{unknown}/.zgroup")
            assert status == 410, unknown
            assert b"open the dataset again" in body


def test_zarr_format_3_over_http(collection) -> None:
    paths, fs = collection
    v3 = VirtualZarrFileSystem(str(paths[0].parent), concat_dim="time", zarr_format=3)
    with serving(v3) as url, serving(fs) as url2:
        opened = xr.open_zarr(url, zarr_format=3)
        assert_same_dataset(opened.load(), open_truth(paths))
        assert _get(url + "zarr.json")[1]["Content-Type"] == "application/json"
        assert _get(url + "v_float64/c/1/0")[2] == v3.cat_file("v_float64/c/1/0")
        # the same snapshot served in two formats: different bytes, different tags
        assert _get(url + "zarr.json")[1]["ETag"] != _get(url2 + ".zgroup")[1]["ETag"]


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path, caplog) -> None:
    """An answer larger than the socket buffers, to a client that never reads it: dropped
    after ``send_timeout``, and the server goes on serving others."""
    import netCDF4

    path = tmp_path / "d" / "big.nc"
    path.parent.mkdir()
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 1)
        nc.createDimension("x", 1_500_000)
        nc.createVariable("time", "f8", ("time",))[:] = [0.0]
        big = nc.createVariable("big", "f8", ("time", "x"), chunksizes=(1, 1_500_000))
        big[:] = np.arange(1_500_000, dtype="f8")[None, :]
    fs = VirtualZarrFileSystem(str(path.parent))
    assert fs.info("big/0.0")["size"] == 12_000_000
    caplog.set_level(logging.INFO, logger="fsspec_virtual")
    server = ServerThread(make_app(fs, send_timeout=1.0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(_request("/big/0.0"))
            deadline = time.monotonic() + 60
            while not any("client too slow" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the slow client was never dropped"
                time.sleep(0.1)
            received = b""
            try:
                while chunk := sock.recv(1 << 20):
                    received += chunk
            except ConnectionResetError:
                pass
            assert len(received) < 12_000_000  # cut short, not finished
        status, _, body = _get(server.url + ".zgroup")
        assert status == 200 and b"zarr_format" in body
    finally:
        server.stop()


def test_a_collection_that_cannot_be_combined_is_503_naming_it(tmp_path: Path) -> None:
    """Served through make_app (serve() would fail before listening): every request is
    503 with the reason, never a 500 or an empty store."""
    directory = tmp_path / "d"
    write_simple(directory / "a.nc", [0.0, 1.0], nx=4)
    write_simple(directory / "b.nc", [2.0, 3.0], nx=5)  # another x: cannot be combined
    fs = VirtualZarrFileSystem(str(directory), concat_dim="time")
    with serving(fs) as url:
        status, _, body = _get(url + ".zmetadata")
    assert status == 503
    assert b"a.nc" in body or b"b.nc" in body


# -- mounted under a prefix, names clients cannot ask for -------------------------------------


def _write_root_and_group(path: Path, group: str) -> Path:
    import netCDF4

    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 3)
        ds.createVariable("a", "f4", ("x",))[:] = np.zeros(3, "f4")
        sub = ds.createGroup(group)
        sub.createVariable("a", "f4", ("x",))[:] = np.ones(3, "f4")
    return path


def test_mounted_under_a_prefix_keys_are_relative_to_it(tmp_path: Path) -> None:
    """``parent.add_subapp("/sub/", make_app(fs))``: ``/sub/a`` is the store's ``a``, never
    the ``a`` of the store's group named ``sub``."""
    (tmp_path / "d").mkdir()
    path = _write_root_and_group(tmp_path / "d" / "k.nc", "sub")
    fs = VirtualZarrFileSystem(str(tmp_path / "d"))
    parent = web.Application()
    parent.add_subapp("/sub/", make_app(fs))
    server = ServerThread(parent).start()
    try:
        url = server.url + "sub/"
        assert _get(url + ".zmetadata")[2] == fs.cat_file(".zmetadata")
        assert _get(url + "a/0")[2] == fs.cat_file("a/0")
        assert _get(url + "sub/a/0")[2] == fs.cat_file("sub/a/0")
        assert _get(server.url + "a/0")[0] == 404  # outside the mount: the parent's
        root = zarr.open_array(url + "a", mode="r", zarr_format=2)
        np.testing.assert_array_equal(root[:], np.zeros(3, "f4"))
        assert_same_dataset(xr.open_zarr(url).load(), open_truth([path]))
        group = xr.open_zarr(url, group="sub").load()
        np.testing.assert_array_equal(group["a"].values, np.ones(3, "f4"))
        status, _, page = _get(url)
        assert status == 200 and f"{server.url}sub/".encode() in page
        assert _get(url + "quicklook/a.png")[0] in (404, 200)  # the pages are mounted too
    finally:
        server.stop()


def _write_names(path: Path, names: list[str], group: str | None = None) -> Path:
    import netCDF4

    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 3)
        for i, name in enumerate(names):
            ds.createVariable(name, "f4", ("x",))[:] = np.full(3, i + 1, "f4")
        if group is not None:
            ds.createGroup(group).createVariable("v", "f4", ("x",))[:] = np.zeros(3, "f4")
    return path


BAD_NAMES = ["a%41", "a?b", "a#b"]


def test_names_clients_cannot_ask_for_are_refused(tmp_path: Path) -> None:
    """A variable named ``a%41`` is fetched by HTTP clients as ``aA`` (another variable's
    values), ``a?b`` as ``a`` (fill values): the server refuses to serve such a store,
    naming each, at start and on every request."""
    from fsspec_virtual import VirtualZarrError
    from fsspec_virtual.serve.http import UnservableNameError

    (tmp_path / "d").mkdir()
    _write_names(tmp_path / "d" / "n.nc", ["aA", *BAD_NAMES, "fine é+;&="], group="g#1")
    fs = VirtualZarrFileSystem(str(tmp_path / "d"))
    with pytest.raises(UnservableNameError) as raised:
        app_module.run(fs, "127.0.0.1", 0, announce=lambda text: None)
    assert isinstance(raised.value, VirtualZarrError) and isinstance(raised.value, ValueError)
    for name in [*BAD_NAMES, "g#1"]:
        assert repr(name) in str(raised.value)
    assert "'aA'" not in str(raised.value) and "fine" not in str(raised.value)
    with serving(fs) as url:
        for key in (".zmetadata", "aA/0", "", "quicklook/aA.png"):
            status, _, body = _get(url + key)
            assert status == 503 and b"'a%41'" in body, key
        with pytest.raises(Exception, match="503"):
            xr.open_zarr(url)


def test_a_refresh_that_brings_such_a_name_is_not_served(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    _write_names(directory / "n.nc", ["aA"])
    fs = VirtualZarrFileSystem(str(directory))
    with serving(fs, listing_ttl=0) as url:
        status, headers, _ = _get(url + ".zmetadata")
        assert status == 200
        old = headers["X-Snapshot"]
        _write_names(directory / "n.nc.tmp", ["aA", "a%41"])
        os.replace(directory / "n.nc.tmp", directory / "n.nc")
        # not adopted (served, it would answer every request 503): the root keeps its
        # snapshot, whose file changed under it
        status, headers, _ = _get(url + ".zmetadata")
        assert status == 200 and headers["X-Snapshot"] == old
        assert _get(url + "aA/0")[0] == 503
        # a client of the old snapshot still reads it there
        assert _get(url + f"snapshot/{old}/.zmetadata")[0] == 200
        # and the new snapshot, asked for by name, is refused naming the variable
        newer = VirtualZarrFileSystem(str(directory)).collection().id
        assert newer != old
        status, _, body = _get(url + f"snapshot/{newer}/.zmetadata")
        assert status == 503 and b"'a%41'" in body


def test_a_computed_chunk_is_computed_once_per_get(tmp_path: Path, monkeypatch) -> None:
    """A chunk that straddles two files is assembled and encoded once per ``GET`` (its
    size is the length of its bytes), not once for the size and again for the body."""
    from fsspec_virtual import filesystem

    (tmp_path / "d").mkdir()
    _write_straddling(tmp_path / "d")
    fs = VirtualZarrFileSystem(str(tmp_path / "d"), concat_dim="time")
    key = "v/1.0"  # steps 2-3: the last of f0.nc, the first of f1.nc
    expected = fs.cat_file(key)
    reads: list[object] = []
    original = filesystem.read_source

    async def counting(state: Any, source: Any, *args: Any) -> bytes:
        reads.append(source)
        return await original(state, source, *args)

    monkeypatch.setattr(filesystem, "read_source", counting)
    with serving(fs) as url:
        assert _get(url + ".zmetadata")[0] == 200
        reads.clear()
        status, headers, body = _get(url + key)
        assert (status, body) == (200, expected)
        assert headers["Content-Length"] == str(len(expected))
        assert type(reads[0]).__name__ == "ComputedSource"
        assert len(reads) == 1


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_nan_and_infinite_attributes_read_back_as_floats(tmp_path: Path, zarr_format) -> None:
    """Written as zarr-python writes them (``NaN``, ``Infinity``): xarray reads floats back,
    as from the files (strings ``"NaN"`` would read back as strings)."""
    import netCDF4

    (tmp_path / "d").mkdir()
    with netCDF4.Dataset(tmp_path / "d" / "a.nc", "w") as ds:
        ds.createDimension("x", 3)
        v = ds.createVariable("v", "f4", ("x",))
        v[:] = np.arange(3, dtype="f4")
        v.valid_max = np.nan
        v.span = np.array([np.inf, -np.inf, 1.0])
        ds.history_nan = np.nan
    fs = VirtualZarrFileSystem(str(tmp_path / "d"), zarr_format=zarr_format)
    truth = open_truth([tmp_path / "d" / "a.nc"])
    with serving(fs) as url:
        served = xr.open_zarr(url, zarr_format=zarr_format)
        attrs = served["v"].attrs
        assert isinstance(attrs["valid_max"], float) and np.isnan(attrs["valid_max"])
        assert list(attrs["span"]) == [np.inf, -np.inf, 1.0]
        assert np.isnan(served.attrs["history_nan"])
        assert_same_dataset(served.load(), truth)


def test_a_client_that_goes_away_does_not_drop_another_s_request(
    tmp_path: Path, monkeypatch
) -> None:
    """Two clients ask for the same computed chunk; the first goes away while its source
    chunk is being read (aiohttp cancels its handler): the second is answered all the same
    (the shared read handed it the first one's cancellation, and its connection was
    dropped)."""
    from fsspec_virtual import compute

    (tmp_path / "d").mkdir()
    _write_straddling(tmp_path / "d")
    fs = VirtualZarrFileSystem(str(tmp_path / "d"), concat_dim="time")
    key = "v/1.0"
    loading, release, cancelled = threading.Event(), threading.Event(), threading.Event()
    waiting = threading.Semaphore(0)
    original = compute.DecodedChunkCache.get_or_load

    async def get_or_load(self: Any, cache_key: Any, load: Any) -> Any:
        async def held() -> Any:
            loading.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
            return await load()

        waiting.release()
        try:
            return await original(self, cache_key, held)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(compute.DecodedChunkCache, "get_or_load", get_or_load)
    with serving(fs) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert _get(url + ".zmetadata")[0] == 200
        first = socket.create_connection(("127.0.0.1", port), timeout=30)
        first.sendall(_request("/" + key))
        assert loading.wait(60)
        answers: list[bytes] = []
        second = threading.Thread(target=lambda: answers.append(_raw(port, _request("/" + key))))
        second.start()
        for _ in range(2):  # both requests wait on the read of the same source chunk
            assert waiting.acquire(timeout=60)
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        first.close()  # a reset: the server cancels the first request's handler
        assert cancelled.wait(60)
        release.set()
        second.join(60)
    (answer,) = answers
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == fs.cat_file(key)


def _write_straddling(directory: Path) -> None:
    """Two files of 3 steps, ``v`` chunked 2 steps at a time: chunk 1 is computed."""
    import netCDF4

    for i in range(2):
        with netCDF4.Dataset(directory / f"f{i}.nc", "w") as ds:
            ds.createDimension("time", None)
            ds.createDimension("y", 4)
            ds.createVariable("time", "f8", ("time",))[:] = np.arange(3) + 3 * i
            v = ds.createVariable("v", "f4", ("time", "y"), chunksizes=(2, 4), zlib=True)
            v[:] = np.arange(12, dtype="f4").reshape(3, 4) + 100 * i
