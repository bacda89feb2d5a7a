"""Prefect's API app under uvicorn, exiting once no client has used it for ``--linger`` seconds.

Started by ``tasks/runtime/local_api.py`` as ``python -m tasks.runtime.local_api_server``. The app is the one
Prefect starts for its own temporary server (``prefect.server.api.server.create_app``, UI off); the wrapper only
counts open HTTP requests and websocket connections, so a cycle that holds Prefect's events socket open through a
long stage keeps the server up, and the server leaves by itself when the last cycle is long gone. With ``--linger
0`` it never leaves by itself: the CLI that started it stops it.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path


class IdleClock:
    """ASGI middleware: how long the app has had no request or connection in flight (0 while one is).

    ``on_shutdown`` runs when the server shuts down, however it was asked to (idle, SIGTERM, Ctrl-C): uvicorn
    re-raises a caught signal after shutting down, so code after ``server.run()`` would not run then.
    """

    def __init__(self, app, on_shutdown=None):
        self.app, self.open, self.last, self.on_shutdown = app, 0, time.monotonic(), on_shutdown

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":  # the server's own life, not a client
            async def watched():
                message = await receive()
                if message["type"] == "lifespan.shutdown" and self.on_shutdown is not None:
                    self.on_shutdown()
                return message

            return await self.app(scope, watched, send)
        self.open += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.last = time.monotonic()

    def idle_s(self) -> float:
        return 0.0 if self.open else time.monotonic() - self.last


def watch(server, clock: IdleClock, linger_s: float, tick_s: float = 1.0) -> None:
    """Ask uvicorn to exit once ``clock`` has been idle for ``linger_s`` after the server started.

    The clock starts when the server does: a start-up (migrations on a loaded machine) longer than the linger
    must not end the server before its first client could reach it."""
    while not server.started and not server.should_exit:
        time.sleep(tick_s / 10)
    clock.last = time.monotonic()
    while not server.should_exit:
        time.sleep(tick_s)
        if clock.idle_s() >= linger_s:
            server.should_exit = True


def forget(record: Path) -> None:
    """Remove the record naming this server (a newer server may have replaced it: leave that one's)."""
    try:
        if json.loads(record.read_text()).get("pid") == os.getpid():
            record.unlink()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--linger", type=float, default=0.0, help="seconds without clients before exiting; 0: never")
    parser.add_argument("--record", type=Path, help="the file that names this server to later CLIs; removed on exit")
    args = parser.parse_args(argv)

    import uvicorn
    from prefect.server.api.server import create_app

    clock = IdleClock(create_app(), on_shutdown=(lambda: forget(args.record)) if args.record else None)
    server = uvicorn.Server(uvicorn.Config(clock, host="127.0.0.1", port=args.port, log_level="error", lifespan="on"))
    if args.linger > 0:
        threading.Thread(target=watch, args=(server, clock, args.linger), daemon=True).start()
    server.run()
    if not server.started:
        raise SystemExit(3)  # the app failed to start (uvicorn's code for it): the caller retries on the same port


if __name__ == "__main__":
    main()
