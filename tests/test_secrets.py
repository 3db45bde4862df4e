"""Credentials never leak: no error, warning, repr, report, log record, JSON form or command
output shows a source URL's password or a filesystem's secret options.

The sources are served by real servers on 127.0.0.1 that require the credentials (HTTP basic
auth; moto S3), so every case below runs with the secret actually in use. Each test
provokes one way text leaves the package and collects everything it showed: exception
messages, reprs and formatted tracebacks, warnings, every log record at DEBUG, and what was
written to stdout and stderr.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import fsspec
import pytest
import zarr
from conftest import write_series, write_truncated
from oracle import assert_store_matches, open_truth
from servers import HTTPServer, S3Server, serve_directory, serve_s3

import fsspec_virtual.errors as errors_module
import fsspec_virtual.state as state_module
from fsspec_virtual import (
    NoSourceFilesError,
    ScanError,
    SkippedFileWarning,
    SourceReadError,
    StaleSourceError,
    VirtualZarrFileSystem,
)
from fsspec_virtual.cli import main as cli_main
from fsspec_virtual.options import (
    REDACTED,
    RedactingFilter,
    is_secret_name,
    redacted,
    redacted_text,
)
from fsspec_virtual.report import VariableReport
from fsspec_virtual.scan_cache import CorruptCacheEntryWarning

SECRET = "S3CRET-PASS"
TIMES = [[0, 1], [2, 3], [4, 5]]


class Shown:
    """Everything a test saw the package (and the libraries it drives) show."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
        self.caplog, self.capsys = caplog, capsys
        self.texts: list[tuple[str, str]] = []
        caplog.set_level(logging.DEBUG)

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def error(self, error: BaseException) -> None:
        self.add("str(error)", str(error))
        self.add("repr(error)", repr(error))
        self.add("traceback", "".join(traceback.format_exception(error)))

    def warnings(self, caught: list[warnings.WarningMessage]) -> None:
        for w in caught:
            self.add("warning", str(w.message))
            self.add("repr(warning)", repr(w.message))
            shown = warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
            self.add("shown warning", shown)

    def raised(self, error: type[Exception], call: Callable[[], Any]) -> BaseException:
        with pytest.raises(error) as raised:
            call()
        self.error(raised.value)
        return raised.value

    def warned(self, category: type[Warning], call: Callable[[], Any]) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        self.warnings(caught)
        return [str(w.message) for w in caught if issubclass(w.category, category)]

    def check(self, *secrets: str) -> None:
        """Assert no secret was shown anywhere (and that something was looked at)."""
        formatter = logging.Formatter("%(name)s %(message)s")
        records = self.caplog.records
        for r in records:
            self.add(f"log {r.name}", formatter.format(r))
        out, err = self.capsys.readouterr()
        self.add("stdout", out)
        self.add("stderr", err)
        assert len(self.texts) > 2
        leaks = [(where, text[:300]) for where, text in self.texts for s in secrets if s in text]
        assert not leaks, leaks[:5]


@pytest.fixture
def shown(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> Shown:
    return Shown(caplog, capsys)


@pytest.fixture
def authed(tmp_path: Path) -> Iterator[tuple[HTTPServer, str, list[Path]]]:
    """Three NetCDF4 files behind HTTP basic auth; the URL of their directory carries the
    password (``http://user:S3CRET-PASS@127.0.0.1:PORT/``)."""
    paths = write_series(tmp_path / "www", TIMES)
    state_module.clear_states()
    with serve_directory(tmp_path / "www") as server:
        url = server.require_basic_auth("user", SECRET) + "/"
        yield server, url, paths
    state_module.clear_states()


def virtual(path: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("concat_dim", "time")
    kwargs.setdefault("skip_instance_cache", True)
    kwargs.setdefault("cache", False)
    return fsspec.filesystem("virtualzarr", path=path, **kwargs)


def check_values(fs: Any, paths: list[Path]) -> None:
    assert_store_matches(fs, open_truth(paths), open_truth(paths, decode_cf=False))


# -- HTTP with a password in the URL --------------------------------------------------------


class TestHTTPPassword:
    def test_the_password_is_required_and_used(self, authed):
        server, url, paths = authed
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            fsspec.filesystem("http", skip_instance_cache=True).ls(server.url + "/")
        assert refused.value.status == 401
        check_values(virtual(url), paths)

    def test_missing_file_behind_an_index_page(self, authed, shown):
        server, url, paths = authed
        server.missing.add(paths[1].name)
        error = shown.raised(NoSourceFilesError, lambda: virtual(url).cat_file(".zmetadata"))
        assert paths[1].name in str(error)
        state_module.clear_states()
        fs = virtual(url, on_error="skip")
        messages = shown.warned(SkippedFileWarning, lambda: fs.cat_file(".zmetadata"))
        assert any(paths[1].name in m for m in messages), messages
        shown.add("report", str(fs.report()))
        shown.check(SECRET)

    def test_server_error_while_listing(self, authed, shown):
        """The error names the file and carries the server's answer as its cause (shown in
        tracebacks): neither holds the password."""
        server, url, paths = authed
        server.failing.add(paths[0].name)
        error = shown.raised(NoSourceFilesError, lambda: virtual(url).cat_file(".zmetadata"))
        assert paths[0].name in str(error) and error.__cause__ is not None
        state_module.clear_states()
        fs = virtual(url, on_error="skip")
        messages = shown.warned(SkippedFileWarning, lambda: fs.cat_file(".zmetadata"))
        assert any(paths[0].name in m for m in messages), messages
        shown.check(SECRET)

    def test_file_that_cannot_be_scanned(self, authed, shown):
        _, url, paths = authed
        write_truncated(paths[0].parent / "zz_broken.nc", paths[0])
        error = shown.raised(ScanError, lambda: virtual(url).cat_file(".zmetadata"))
        assert "zz_broken.nc" in str(error)
        assert isinstance(error, ScanError) and SECRET in error.path  # for programs
        state_module.clear_states()
        fs = virtual(url, on_error="skip")
        messages = shown.warned(SkippedFileWarning, lambda: fs.cat_file(".zmetadata"))
        assert any("zz_broken.nc" in m for m in messages), messages
        check_values(fs, paths)
        shown.check(SECRET)

    def test_server_error_on_a_chunk_read(self, authed, shown):
        server, url, paths = authed
        group = zarr.open_group(virtual(url).get_mapper(""), mode="r")
        server.failing.add(paths[2].name)
        error = shown.raised(SourceReadError, lambda: group["v_float64"][:])
        assert paths[2].name in str(error) and "500" in str(error)
        shown.check(SECRET)

    def test_file_rewritten_after_the_scan(self, authed, shown):
        _, url, paths = authed
        group = zarr.open_group(virtual(url).get_mapper(""), mode="r")
        group["v_float64"][:]
        time.sleep(0.01)
        write_series(paths[0].parent, [[100, 101]], names=[paths[1].name], chunk_time=1)
        error = shown.raised(StaleSourceError, lambda: group["v_float64"][:])
        assert paths[1].name in str(error)
        shown.check(SECRET)

    def test_reprs_and_report(self, authed, shown):
        _, url, _ = authed
        fs = virtual(url)
        shown.add("repr(fs)", repr(fs))
        shown.add("repr(spec)", repr(fs._spec))
        shown.add("str(report)", str(fs.report()))
        shown.add("repr(report)", repr(fs.report()))
        shown.add("repr(collection)", repr(fs.collection()))
        shown.check(SECRET)

    @pytest.mark.parametrize("how", ["path", "fo", "positional"])
    def test_to_json_without_password(self, authed, shown, how):
        _, url, paths = authed
        if how == "positional":
            fs = VirtualZarrFileSystem(url, "time", cache=False, skip_instance_cache=True)
        else:
            fs = fsspec.filesystem(
                "virtualzarr", **{how: url}, concat_dim="time", skip_instance_cache=True
            )
        text = fs.to_json(include_password=False)
        shown.add("to_json", text)
        assert f"user:{REDACTED}@127.0.0.1" in text
        shown.check(SECRET)
        # with the password (zarr re-creates the filesystem from it): the same store
        again = fsspec.AbstractFileSystem.from_json(fs.to_json())
        check_values(again, paths)

    def test_command_on_a_failing_collection(self, authed, shown, tmp_path):
        server, url, paths = authed
        server.missing.add(paths[1].name)
        assert cli_main(["info", url, "--concat-dim", "time"]) == 1
        out, err = shown.capsys.readouterr()
        assert paths[1].name in err and "NoSourceFilesError" in err, err
        shown.add("stdout", out)
        shown.add("stderr", err)
        state_module.clear_states()
        scan = ["scan", url, "--concat-dim", "time", "--cache-dir", str(tmp_path / "c")]
        assert cli_main([*scan, "--workers", "1"]) == 1
        shown.check(SECRET)

    def test_command_on_a_good_collection(self, authed, shown, tmp_path):
        _, url, _ = authed
        assert cli_main(["info", url, "--concat-dim", "time"]) == 0
        out, err = shown.capsys.readouterr()
        assert "v_float64" in out and "files:" in out, out
        shown.add("stdout", out)
        shown.add("stderr", err)
        state_module.clear_states()
        scan = ["scan", url, "--concat-dim", "time", "--cache-dir", str(tmp_path / "c")]
        assert cli_main([*scan, "--workers", "1"]) == 0
        out, err = shown.capsys.readouterr()
        assert "3 files: 3 scanned" in out, out
        shown.add("stdout", out)
        shown.add("stderr", err)
        shown.check(SECRET)

    def test_command_prints_unexpected_errors_redacted(self, shown, monkeypatch):
        import fsspec_virtual.cli as cli

        def failing(args: Any) -> int:
            try:
                raise ConnectionError(f"refused: {args.path}")
            except ConnectionError as e:
                raise RuntimeError(f"while opening {args.path}") from e

        monkeypatch.setattr(cli, "_info", failing)
        url = f"https://me:{SECRET}@example.invalid/data/"
        assert cli_main(["info", url]) == 1  # one line per error and cause
        err = shown.capsys.readouterr().err
        assert "Traceback" not in err and "ConnectionError" in err and "RuntimeError" in err, err
        assert f"me:{REDACTED}@example.invalid" in err
        shown.add("stderr", err)
        assert cli_main(["--debug", "info", url]) == 1  # the whole traceback, redacted too
        err = shown.capsys.readouterr().err
        assert "Traceback" in err and "ConnectionError" in err, err
        assert f"me:{REDACTED}@example.invalid" in err
        shown.add("stderr", err)
        with pytest.raises(SystemExit):
            cli_main(["info", "x", f"https://me:{SECRET}@unexpected/"])
        shown.check(SECRET)


# -- S3 with key, secret and session token ------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with serve_s3() as server:
        yield server


S3_SECRETS = {"secret": "s3-secret-QWERTY", "token": "s3-session-token-ASDFGH"}


def test_s3_key_secret_token_never_shown(s3, tmp_path, shown):
    bucket = f"b{uuid.uuid4().hex[:12]}"
    options = s3.options(**S3_SECRETS)
    writer = fsspec.filesystem("s3", **options)
    writer.mkdir(bucket)
    paths = write_series(tmp_path / "d", TIMES)
    for p in [*paths, write_truncated(tmp_path / "zz_broken.nc", paths[0])]:
        writer.pipe_file(f"{bucket}/data/{p.name}", p.read_bytes())
    state_module.clear_states()
    url = f"s3://{bucket}/data/"
    shown.raised(ScanError, lambda: virtual(url, target_options=options).cat_file(".zmetadata"))
    state_module.clear_states()
    fs = virtual(url, target_options=options, on_error="skip")
    assert shown.warned(SkippedFileWarning, lambda: fs.cat_file(".zmetadata"))
    check_values(fs, paths)
    shown.add("repr(spec)", repr(fs._spec))
    shown.add("report", str(fs.report()))
    shown.add("repr(collection)", repr(fs.collection()))
    text = fs.to_json(include_password=False)
    assert json.loads(text)["target_options"]["token"] == REDACTED
    shown.add("to_json", text)
    missing = virtual(f"s3://{bucket}/nothing/", target_options=options)
    shown.raised(NoSourceFilesError, lambda: missing.cat_file(".zmetadata"))
    writer.rm(f"{bucket}/data/{paths[0].name}")
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    shown.raised(StaleSourceError, lambda: group["v_float64"][:])
    shown.check(*S3_SECRETS.values())


# -- what counts as a credential ----------------------------------------------------------

#: Options and headers whose values are credentials, as s3fs, gcsfs, adlfs, sshfs/paramiko,
#: fsspec's HTTP filesystem and presigned/SAS URLs name them.
SECRET_NAMES = [
    # s3fs
    "key", "secret", "token", "password", "aws_secret_access_key", "aws_session_token",
    "aws_access_key_id", "SSECustomerKey",
    # gcsfs
    "token", "private_key", "client_secret", "refresh_token",
    # adlfs
    "account_key", "connection_string", "sas_token", "credential", "client_secret",
    # sftp / ftp / smb
    "passphrase", "pkey", "passwd",
    # HTTP headers
    "Authorization", "authorization", "Proxy-Authorization", "Cookie", "X-Amz-Security-Token",
    "X-Api-Key", "x-goog-api-key", "X-Auth-Token", "Ocp-Apim-Subscription-Key",
    # query parameters of presigned / SAS URLs
    "X-Amz-Signature", "X-Amz-Credential", "X-Goog-Signature", "Signature", "sig",
    "access_token", "api_key",
]  # fmt: skip
#: Options that are not: they must stay readable.
PLAIN_NAMES = [
    "anon", "key_prefix", "key_filename", "kms_key_id", "SSEKMSKeyId", "username", "user",
    "account_name", "client_id", "tenant_id", "project", "access", "endpoint_url",
    "region_name", "requester_pays", "version_aware", "default_block_size", "use_ssl",
    "client_kwargs", "config_kwargs", "headers", "simple_links", "block_size", "cache_type",
    "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Algorithm", "sv", "sp",
    "se", "st", "spr", "Range", "If-Match", "Accept", "User-Agent", "host", "port",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_credential_names(name):
    assert is_secret_name(name)
    assert redacted({"outer": {name: "x-value"}}) == {"outer": {name: REDACTED}}


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names(name):
    assert not is_secret_name(name)
    assert redacted({name: "value"}) == {name: "value"}


def test_our_own_options_are_shown_unless_secret():
    names = inspect.signature(VirtualZarrFileSystem.__init__).parameters
    hidden = {n for n in names if n not in ("self", "kwargs") and is_secret_name(n)}
    assert hidden <= {"cache_secret"}  # the scan cache's signing key, where there is one


def test_redacted_options_at_any_depth():
    options = {
        "path": f"https://me:{SECRET}@host/data/",
        "target_options": {
            "anon": False,
            "headers": [("Authorization", "Bearer abc"), ("Accept", "*/*")],
            "client_kwargs": {"headers": {"Authorization": "Basic abc"}, "auth": ("me", "pw")},
            "account_key": "k", "connection_string": "c", "passphrase": "p",
        },
    }  # fmt: skip
    shown = redacted(options)
    assert shown == {
        "path": f"https://me:{REDACTED}@host/data/",
        "target_options": {
            "anon": False,
            "headers": [("Authorization", REDACTED), ("Accept", "*/*")],
            "client_kwargs": {"headers": {"Authorization": REDACTED}, "auth": REDACTED},
            "account_key": REDACTED, "connection_string": REDACTED, "passphrase": REDACTED,
        },
    }  # fmt: skip
    assert redacted(options, include_password=True) is options


def test_to_json_writes_no_azure_or_ssh_secret():
    options = {
        "account_name": "acct",
        "account_key": "AZ-ACCOUNT-KEY",
        "connection_string": "DefaultEndpointsProtocol=https;AccountKey=AZ-CONN-KEY",
        "passphrase": "SSH-PASSPHRASE",
        "headers": {"Authorization": "Bearer HTTP-TOKEN"},
    }
    fs = virtual(["/nowhere/a.nc"], target_protocol="file", target_options=options)
    text = fs.to_json(include_password=False)
    assert json.loads(text)["target_options"]["account_name"] == "acct"
    for secret in ("AZ-ACCOUNT-KEY", "AZ-CONN-KEY", "SSH-PASSPHRASE", "HTTP-TOKEN"):
        assert secret not in text
        assert secret in fs.to_json()  # what zarr re-creates the filesystem from


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"http://user:{SECRET}@127.0.0.1:8080/a.nc", "http://user:***@127.0.0.1:8080/a.nc"),
        ("s3://bucket/a.nc and https://user@host/a.nc", None),  # no password: unchanged
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("https://u:p%40ss@host/", "https://u:***@host/"),
        ("https://u:p@ss@host/x", "https://u:***@host/x"),  # a raw "@" in the password
        ("'http://a:one@h/x', 'ftp://b:two@h/y'", "'http://a:***@h/x', 'ftp://b:***@h/y'"),
        ("URL('http://u:pw@h/')", "URL('http://u:***@h/')"),
        ("https://h:8080/a.nc?x=1#frag", None),  # a port is not a password
        ("mail user@example.org, ssh git@host:repo, a:b", None),
        ("cannot read /data/a.nc: size 10, mtime 1.5; scanned: size 12", None),
        (
            "https://b.s3.amazonaws.com/a.nc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F2024&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60"
            "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=TOK&X-Amz-Signature=abc123",
            "https://b.s3.amazonaws.com/a.nc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=***&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60"
            "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=***&X-Amz-Signature=***",
        ),
        (
            "https://a.blob.core.windows.net/c/a.nc?sv=2022-11-02&sp=r&sig=Zm9v%3D: 403",
            "https://a.blob.core.windows.net/c/a.nc?sv=2022-11-02&sp=r&sig=***: 403",
        ),
        ("https://h/a?token=abc&page=2", "https://h/a?token=***&page=2"),
        (
            "AccountName=acct;AccountKey=a+b/c==;EndpointSuffix=core.windows.net",
            "AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net",
        ),
        (
            "{'key': 'AKIA', 'secret': 'x', 'anon': False, 'headers': {'Authorization': 'B t'}}",
            "{'key': '***', 'secret': '***', 'anon': False, 'headers': {'Authorization': '***'}}",
        ),
        ('{"password": "p\\"w", "user": "me"}', '{"password": "***", "user": "me"}'),
        ("S3FileSystem(key='a', secret='b', anon=False)", "S3FileSystem(key='***', secret='***', anon=False)"),  # noqa: E501
        ("headers={'X-Amz-Security-Token': b'tok', 'Range': b'bytes=0-7'}",
         "headers={'X-Amz-Security-Token': b'***', 'Range': b'bytes=0-7'}"),
        ("GET\n/b/a.nc\nhost:127.0.0.1\nx-amz-security-token:tok\nAuthorization: Bearer t\n",
         "GET\n/b/a.nc\nhost:127.0.0.1\nx-amz-security-token:***\nAuthorization: ***\n"),
        ("Traceback:\nTokenError: it expired\nsig: 1",
         "Traceback:\nTokenError: it expired\nsig: ***"),
    ],
)  # fmt: skip
def test_redacted_text(text, expected):
    expected = text if expected is None else expected
    assert redacted_text(text) == expected
    assert redacted_text(expected) == expected  # idempotent


def test_a_real_presigned_url(s3):
    """s3fs's own presigned URL (moto's server signs like AWS): nothing of its signature
    or credential is left, and the URL still says what it points at."""
    bucket = f"b{uuid.uuid4().hex[:12]}"
    s3fs = fsspec.filesystem("s3", **s3.options(token="SESSION-TOKEN"))
    s3fs.mkdir(bucket)
    s3fs.pipe_file(f"{bucket}/a.nc", b"x")
    url = s3fs.sign(f"{bucket}/a.nc", expiration=60)
    query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    signature = query.get("X-Amz-Signature") or query["Signature"]
    clean = redacted_text(f"cannot read {url}: 403")
    assert signature not in clean and "SESSION-TOKEN" not in clean
    assert f"{bucket}/a.nc?" in clean and clean.endswith(": 403")


# -- errors, warnings and log records themselves -------------------------------------------


def _file_errors() -> list[type[errors_module._FileError]]:
    found = [getattr(errors_module, n) for n in errors_module.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, errors_module._FileError)]


@pytest.mark.parametrize("error", _file_errors(), ids=lambda c: c.__name__)
def test_file_errors_keep_the_path_and_hide_the_password(error):
    url = f"http://me:{SECRET}@host/a.nc"
    made = error(url, f"ClientError: refused {url}?sig=SIGVALUE")
    for text in (str(made), repr(made), made.reason, *map(str, made.args)):
        assert SECRET not in text and "SIGVALUE" not in text
    assert "me:***@host/a.nc" in str(made)
    assert made.path == url  # programs match it against the collection's files
    again = pickle.loads(pickle.dumps(made))  # errors cross process pipes
    assert type(again) is error and again.path == url and str(again) == str(made)


def _messages() -> list[type[BaseException]]:
    found = [getattr(errors_module, n) for n in errors_module.__all__]
    classes = [c for c in found if isinstance(c, type) and issubclass(c, BaseException)]
    return [*classes, CorruptCacheEntryWarning]


@pytest.mark.parametrize("kind", _messages(), ids=lambda c: c.__name__)
def test_every_error_and_warning_redacts_its_message(kind):
    message = f"skipping http://me:{SECRET}@host/a.nc: cannot read it"
    if issubclass(kind, errors_module._FileError):
        made: BaseException = kind(f"http://me:{SECRET}@host/a.nc", "cannot read it")
    else:
        made = kind(message)
    assert SECRET not in str(made) and SECRET not in repr(made)
    assert SECRET not in repr(pickle.loads(pickle.dumps(made)))
    if issubclass(kind, Warning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.warn(message, kind, stacklevel=1)
        assert [str(w.message) for w in caught] == [redacted_text(message)]


def test_reports_redact_their_reasons():
    report = VariableReport("v", "skipped", {}, f"file http://me:{SECRET}@h/a.nc: bad")
    assert SECRET not in report.reason and SECRET not in repr(report)


def test_log_records_of_the_libraries_we_drive(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://me:{SECRET}@host/a.nc"
    logging.getLogger("fsspec.http").debug("Retrieve file size for %s", url)
    logging.getLogger("h5-to-zarr").debug("HDF5 file: %s", url)
    logging.getLogger("botocore.auth").debug("CanonicalRequest:\nx-amz-security-token:%s", SECRET)
    try:
        raise OSError(f"refused {url}")
    except OSError:
        logging.getLogger("fsspec").exception("failed")
    texts = [logging.Formatter().format(r) for r in caplog.records]
    assert len(texts) == 4 and "me:***@host/a.nc" in texts[0]
    assert all(SECRET not in t for t in texts), texts
    assert "OSError: refused" in texts[3]


def test_log_records_are_rewritten_only_where_they_must_be(caplog):
    caplog.set_level(logging.DEBUG)
    record = logging.LogRecord("fsspec", logging.INFO, __file__, 1, "read %d bytes", (5,), None)
    assert RedactingFilter().filter(record)
    assert (record.msg, record.args) == ("read %d bytes", (5,))
    url = f"http://me:{SECRET}@host/a.nc"
    logging.getLogger("an.application").debug("its own record: %s", url)
    assert [r.args for r in caplog.records] == [(url,)]  # not a library we drive
