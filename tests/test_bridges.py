"""The crossings between blocking code and coroutines (fsspec_virtual.bridges)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import netCDF4

from fsspec_virtual.bridges import awaited, in_builder, run_blocking


def _one_turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.call_soon(loop.stop)
    loop.run_forever()


def _left_unretrieved(wait: Any) -> bool:
    """Whether an error handed to a waiter whose task has not run again yet is still
    marked unretrieved: if the loop ends now (an interpreter exiting), asyncio prints
    "Future exception was never retrieved" for it."""
    loop = asyncio.new_event_loop()
    try:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        task = loop.create_task(wait(future))
        _one_turn(loop)  # the task now waits
        future.set_exception(ValueError("boom"))
        _one_turn(loop)  # the error is handed over; the task would wake on the next turn
        waiter = task._fut_waiter  # type: ignore[attr-defined]  # asyncio's own
        assert waiter.done() and not task.done()
        unretrieved = bool(waiter._log_traceback)
        _one_turn(loop)
        assert isinstance(task.exception(), ValueError)  # the task still gets the error
        return unretrieved
    finally:
        loop.close()


def test_an_error_handed_to_a_waiter_that_never_wakes_is_not_reported() -> None:
    async def wrapped(future: concurrent.futures.Future[int]) -> int:
        return await asyncio.wrap_future(future)

    assert _left_unretrieved(wrapped)  # asyncio's own bridge leaves it to be reported
    assert not _left_unretrieved(awaited)


def test_every_waiter_gets_the_error_or_the_result() -> None:
    async def main(outcome: BaseException | None) -> list[Any]:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        waits = [asyncio.ensure_future(awaited(future)) for _ in range(3)]
        await asyncio.sleep(0)
        if outcome is None:
            future.set_result(7)
        else:
            future.set_exception(outcome)
        return await asyncio.gather(*waits, return_exceptions=True)

    assert asyncio.run(main(None)) == [7, 7, 7]
    error = KeyError("x")
    assert asyncio.run(main(error)) == [error, error, error]


def test_a_waiter_cancelled_leaves_the_shared_work_running() -> None:
    async def main() -> tuple[bool, int]:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        quitter = asyncio.ensure_future(awaited(future))
        stayer = asyncio.ensure_future(awaited(future))
        await asyncio.sleep(0)
        quitter.cancel()
        await asyncio.sleep(0)
        future.set_result(3)
        return quitter.cancelled(), await stayer

    assert asyncio.run(main()) == (True, 3)


def test_run_blocking_inside_a_running_loop() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def notebook_cell() -> int:
        return run_blocking(answer())  # a blocking call made from a running loop's thread

    assert run_blocking(answer()) == 42
    assert asyncio.run(notebook_cell()) == 42


def test_in_builder_runs_on_its_own_threads() -> None:
    name = in_builder(lambda: threading.current_thread().name).result(timeout=10)
    assert name.startswith("vz-scan")


def test_a_failed_open_prints_only_the_error(tmp_path: Path) -> None:
    """Files that cannot be combined (two calendars): xarray's open fails with the error,
    and the interpreter exits with nothing else on stderr, run after run."""
    for i, calendar in enumerate(["standard", "noleap"]):
        with netCDF4.Dataset(tmp_path / f"f{i}.nc", "w") as ds:
            ds.createDimension("time", None)
            ds.createDimension("x", 3)
            time = ds.createVariable("time", "f8", ("time",))
            time.units, time.calendar = "days since 2000-01-01", calendar
            time[:] = [2 * i, 2 * i + 1]
            ds.createVariable("v", "f4", ("time", "x"))[:] = [[1, 2, 3], [4, 5, 6]]
    script = textwrap.dedent(
        f"""
        import fsspec, xarray as xr
        from fsspec_virtual.errors import IncompatibleSourcesError
        for _ in range(5):
            fs = fsspec.filesystem("virtualzarr", path={str(tmp_path / "*.nc")!r},
                                   concat_dim="time", cache_dir=None)
            try:
                xr.open_zarr(fs.get_mapper(""))
            except IncompatibleSourcesError:
                pass
            else:
                raise SystemExit("opened")
        """
    )
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""


def test_slow_builds_do_not_hold_up_another() -> None:
    """Builds that wait (a slow server) leave threads for the first open of another
    collection."""
    release = threading.Event()
    waiting = [in_builder(release.wait, 30) for _ in range(4)]
    try:
        assert in_builder(lambda: "quick").result(timeout=10) == "quick"
    finally:
        release.set()
    assert all(w.result(timeout=10) for w in waiting)


def test_run_blocking_runs_outside_any_exception_context() -> None:
    """Errors raised by the coroutine are chained to nothing: a server run by
    ``run_blocking`` logged every traceback chained to a bogus "no running event loop"."""

    async def context_of_an_error() -> BaseException | None:
        try:
            raise ValueError("raised inside")
        except ValueError as error:
            return error.__context__

    assert run_blocking(context_of_an_error()) is None
