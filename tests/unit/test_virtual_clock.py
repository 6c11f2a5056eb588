"""VirtualClock.advance returns with every woken task settled, on asyncio and trio alike.

"Settled" is what a test relies on to read state right after a jump: each task woken by the jump
has run until it blocks again, loopback I/O it started has completed, and I/O served outside the
loop finishes while an attached I/O probe reports it in flight.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from jwks_cache.testing import VirtualClock
from jwks_cache.testing import _clock as clock_module


async def _echo(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await stream.send(await stream.receive())


async def _exchange(port: int, payload: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(payload)
        return await stream.receive()


@contextmanager
def _slow_echo_thread(delay: float) -> Iterator[int]:
    """A one-connection echo server on its own thread, answering ``delay`` real seconds late.

    Its reply comes from outside the event loop: while it is pending every task is blocked, and
    only an I/O probe tells the clock that the exchange is not over.
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = conn.recv(64)
            time.sleep(delay)
            conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(5)


async def test_advance_returns_once_the_woken_task_finished_its_loopback_exchange() -> None:
    clock = VirtualClock()
    steps: list[object] = []
    with anyio.fail_after(10):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)

            async def woken_at_ten() -> None:
                await clock.sleep_until(1010.0)
                steps.append(clock.monotonic())
                steps.append(await _exchange(port, b"ping"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, _echo)
                tg.start_soon(woken_at_ten)
                await clock.advance(9.5)
                assert steps == []
                await clock.advance(0.5)
                assert steps == [1010.0, b"ping"]  # woken, and its I/O done, when advance returns
                tg.cancel_scope.cancel()


async def test_advance_waits_for_io_served_outside_the_loop_while_the_probe_reports_it() -> None:
    clock = VirtualClock()
    steps: list[object] = []
    in_flight = [0]
    clock.attach_io_probe(lambda: in_flight[0] > 0)
    with anyio.fail_after(10), _slow_echo_thread(0.05) as port:

        async def woken_at_ten() -> None:
            await clock.sleep_until(1010.0)
            in_flight[0] += 1
            try:
                steps.append(await _exchange(port, b"late"))
            finally:
                in_flight[0] -= 1
            await clock.sleep_until(clock.monotonic() + 5)  # a deadline relative to when the I/O ended
            steps.append(clock.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(woken_at_ten)
            await clock.advance(10)
            assert steps == [b"late"]
            await clock.advance(5)
            assert steps == [b"late", 1015.0]


async def test_wake_ups_chained_through_events_and_later_deadlines_run_in_order() -> None:
    clock = VirtualClock()
    seen: list[tuple[str, float]] = []
    handed_over = anyio.Event()

    async def first() -> None:
        await clock.sleep_until(1003.0)
        seen.append(("first", clock.monotonic()))
        for _ in range(50):  # many scheduler rounds before the hand-over
            await anyio.lowlevel.checkpoint()
        handed_over.set()

    async def second() -> None:
        await handed_over.wait()
        seen.append(("second", clock.monotonic()))
        await clock.sleep_until(clock.monotonic() + 2)
        seen.append(("second again", clock.monotonic()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            await clock.advance(10)
            assert seen == [("first", 1003.0), ("second", 1003.0), ("second again", 1005.0)]


async def test_next_deadline_skips_sleepers_that_left_and_disarmed_deadlines() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep_until, 1050.0)
            scope = anyio.CancelScope()
            disarm = clock.schedule_cancel(1020.0, scope)
            await clock.settle()
            assert clock.next_deadline == 1020.0
            disarm()
            assert clock.next_deadline == 1050.0
            tg.cancel_scope.cancel()  # the sleeper leaves early
        assert clock.next_deadline is None
        await clock.advance(100)  # nothing left to wake
        assert clock.monotonic() == 1100.0 and not scope.cancel_called


async def test_a_hundred_wake_ups_cost_no_real_sleeps() -> None:
    """asyncio has no "every task is blocked" primitive, and anyio's emulation sleeps a real 0.1 s
    whenever it finds a runnable task: a hundred woken tasks that each run twenty scheduler rounds
    cost at least ten real seconds that way. Settling by loop rounds costs well under one, debug
    mode included."""
    clock = VirtualClock()
    woken: list[float] = []

    async def sleeper(at: float) -> None:
        await clock.sleep_until(at)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        woken.append(clock.monotonic())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(sleeper, 1001.0 + i)
            began = time.perf_counter()
            await clock.advance(100)
            elapsed = time.perf_counter() - began
    assert woken == [1001.0 + i for i in range(100)]
    assert elapsed < 6.0


async def test_settle_gives_up_on_io_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock_module, "_IO_PATIENCE", 0.2)
    clock = VirtualClock()
    clock.attach_io_probe(lambda: True)  # a request stalled forever: its timeout is virtual
    with anyio.fail_after(10), pytest.raises(RuntimeError, match="I/O still in flight"):
        await clock.advance(1)
    assert clock.monotonic() == 1000.0


async def test_advance_refuses_to_go_back_in_time() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="cannot go back in time"):
        await clock.advance(-1)
