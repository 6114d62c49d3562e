"""The per-request parts of an authenticated GET, in-process: `python -m bench.token_path`.

`python -m bench` measures whole requests through wrk; this measures two parts of one on their
own, to tell what the `+us` of `bff-oidc` over `bff` is made of. `bearer()` is the token path a
`token = "user"` route runs, for a session in server mode on SQLite and one in cookie mode: as a
browser's repeated requests run it (answered by `bff.session_memo` after its SQLite version
check), and with a `Cookie` header never seen before (the full load: the cookie read and
verified, the session loaded through the read cache). `AccessLog` is the access middleware
around an app that answers at once, writing its line to memory. The reference, measured in the
same run, is a bare call of that app. Medians of `--repeats` rounds of `--calls` calls each, on
whatever core the process runs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from starlette.types import Message, Receive, Scope, Send

from bff.access import AccessLog
from bff.server import TextFormatter, access_writer
from tests.fakes import Clock, FakeIdP
from tests.test_tokens import USER, start_worker

Call = Callable[[], Awaitable[object]]


async def _answer(_scope: Scope, _receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"abcd", "more_body": False})


async def _nothing(_message: Message) -> None:
    return None


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope() -> Scope:
    headers = [(b"host", b"bench"), (b"x-csrf", b"1")]
    return {"type": "http", "method": "GET", "path": "/api/items", "raw_path": b"/api/items", "headers": headers}


def _access_log() -> AccessLog:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(TextFormatter(fmt="%(levelprefix)s %(name)s: %(message)s", use_colors=False))
    middleware = AccessLog(_answer, lambda _scope: None)
    middleware.write = access_writer(handler)
    return middleware


async def _per_call(call: Call, calls: int, repeats: int) -> float:
    """Median µs per call over `repeats` rounds."""
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


async def measure(calls: int, repeats: int) -> list[tuple[str, float]]:
    access = _access_log()
    rows = [
        (
            "a bare ASGI call (reference)",
            await _per_call(lambda: _answer(_scope(), _empty_body, _nothing), calls, repeats),
        ),
        ("AccessLog around it", await _per_call(lambda: access(_scope(), _empty_body, _nothing), calls, repeats)),
    ]
    logging.getLogger("bff").setLevel(logging.WARNING)  # the sessions' own info lines
    with tempfile.TemporaryDirectory() as directory:
        for storage in ("server", "cookie"):
            idp, clock = FakeIdP(), Clock(time.time())
            store = f"sqlite:///{Path(directory) / storage}.db"
            worker = await start_worker(idp, clock, store, storage=storage)
            try:
                session = await worker.login(idp, clock, expires_in=3600)
                headers = [*_scope()["headers"], *worker.headers(session)]
                bearer = await _per_call(lambda: worker.tokens.bearer(USER, headers), calls, repeats)  # noqa: B023
                rows.append((f"bearer(), {storage} mode on SQLite", bearer))
                [(name, cookie)] = worker.headers(session)
                unseen = ([*headers[:-1], (name, cookie + b"; n=%d" % n)] for n in itertools.count())
                full = await _per_call(lambda: worker.tokens.bearer(USER, next(unseen)), calls, repeats)  # noqa: B023
                rows.append((f"bearer(), {storage} mode, full load", full))
            finally:
                await worker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="The per-request parts of an authenticated GET, in-process.")
    parser.add_argument("--calls", type=int, default=20000, help="calls per round (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median is reported (default 5)")
    args = parser.parse_args()
    rows = uvloop.run(measure(args.calls, args.repeats))
    reference = rows[0][1]
    print(f"{'part':<36} {'us/call':>8} {'x reference':>12}")
    for name, micros in rows:
        print(f"{name:<36} {micros:8.2f} {micros / reference:11.1f}x")


if __name__ == "__main__":
    main()
