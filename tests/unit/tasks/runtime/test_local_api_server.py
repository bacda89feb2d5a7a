"""The local API's idle clock: open requests and sockets keep it up; it exits once idle for the linger."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from types import SimpleNamespace

from tasks.runtime.local_api_server import IdleClock, forget, watch


def test_an_open_connection_is_never_idle_and_the_clock_starts_when_it_closes():
    release = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await release.wait()  # a client holding Prefect's events socket through a long stage

    clock = IdleClock(app)

    async def scenario():
        held = asyncio.create_task(clock({"type": "websocket"}, None, None))
        await asyncio.sleep(0.05)
        assert clock.open == 1 and clock.idle_s() == 0.0
        assert clock.open == 1 and clock.idle_s() == 0.0
        release.set()
        await held
        assert clock.open == 0
        await asyncio.sleep(0.05)
        return clock.idle_s()

    assert asyncio.run(scenario()) >= 0.04


def test_a_failed_request_still_closes_on_the_clock():
    async def app(scope, receive, send):
        raise RuntimeError("boom")

    clock = IdleClock(app)
    try:
        asyncio.run(clock({"type": "http"}, None, None))
    except RuntimeError:
        pass
    assert clock.open == 0


def test_the_watch_asks_the_server_to_exit_once_idle_for_the_linger_after_it_started():
    clock = IdleClock(None)
    server = SimpleNamespace(should_exit=False, started=False)
    watcher = threading.Thread(target=watch, args=(server, clock, 0.2, 0.02), daemon=True)
    watcher.start()
    time.sleep(0.4)  # a start-up longer than the linger, with no client yet
    assert not server.should_exit
    server.started = True
    clock.open = 1  # busy: the watch must not stop it
    time.sleep(0.4)
    assert not server.should_exit
    clock.open, clock.last = 0, time.monotonic()
    watcher.join(timeout=5)
    assert server.should_exit


def test_the_record_is_removed_only_when_it_names_this_server(tmp_path):
    record = tmp_path / "fusionaudit-local-api.json"
    record.write_text(json.dumps({"pid": os.getpid() + 1}))  # a newer server replaced this one's record
    forget(record)
    assert record.exists()
    record.write_text(json.dumps({"pid": os.getpid()}))
    forget(record)
    assert not record.exists()


def test_the_lifespan_is_not_a_client_and_its_shutdown_runs_the_callback():
    shut = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive():
        return next(messages)

    async def app(scope, receive, send):
        assert clock.open == 0  # the server's own life is not a client
        while (await receive())["type"] != "lifespan.shutdown":
            pass

    clock = IdleClock(app, on_shutdown=lambda: shut.append(True))
    asyncio.run(clock({"type": "lifespan"}, receive, None))
    assert shut == [True]
