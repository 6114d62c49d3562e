"""UpstreamPool and its HTTP/1.1 connections against a scripted upstream (a raw asyncio server
that answers each request with the bytes a test gives it), for what the proxy suite cannot
provoke from a well-behaved upstream: informational answers, HEAD, bodies without a length,
broken framing, silence, a full pool, bytes nobody asked for; and an https upstream."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bff import upstream_pool
from bff.http1 import HIGH_WATER, UpstreamClosed
from bff.upstream_pool import UpstreamConnectError, UpstreamPool

Script = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(raw: bytes) -> Script:
    async def write(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return write


def answer_and_close(raw: bytes) -> Script:
    async def write(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(raw)(head, reader, writer)
        writer.close()

    return write


OK = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class ScriptedUpstream:
    """Answers the n-th request with `scripts[n]` (the last one repeats); records each request's
    head and body and how many connections were made."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def pool(self, **overrides: Any) -> UpstreamPool:
        options: dict[str, Any] = {"limit": 10, "connect_timeout": 2.0, "read_timeout": 2.0} | overrides
        return UpstreamPool(f"http://127.0.0.1:{self.port}", **options)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.heads.append(head)
                    script = self.scripts[min(len(self.heads), len(self.scripts)) - 1]
                    await script(head, reader, writer)
        finally:
            writer.close()


async def read_body(head: bytes, reader: asyncio.StreamReader) -> bytes:
    """The request body after `head`: by its Content-Length, or de-chunked."""
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
        return body
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


def echo_body(upstream: ScriptedUpstream) -> Script:
    async def echo(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_body(head, reader)
        upstream.bodies.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()

    return echo


async def whole(pool: UpstreamPool, method: str = "GET", body: Any = None, **kwargs: Any) -> tuple[int, bytes]:
    answer = await pool.request(method, "/x", kwargs.get("headers", []), body)
    data = b""
    while chunk := await answer.readany():
        data += chunk
    answer.release()
    return answer.status, data


async def test_the_head_names_the_host_and_frames_what_is_sent() -> None:
    async with ScriptedUpstream(OK) as upstream:
        pool = upstream.pool()
        assert await whole(pool, headers=[(b"x-one", b"1")]) == (200, b"ok")
        assert await whole(pool, "POST") == (200, b"ok")
        assert await whole(pool, "POST", headers=[(b"host", b"app.example")], body=b"abc") == (200, b"ok")
        await pool.close()
    host = f"host: 127.0.0.1:{upstream.port}".encode()
    assert upstream.heads[0] == b"GET /x HTTP/1.1\r\n" + host + b"\r\nx-one: 1\r\n\r\n"
    assert upstream.heads[1] == b"POST /x HTTP/1.1\r\n" + host + b"\r\ncontent-length: 0\r\n\r\n"
    assert upstream.heads[2] == b"POST /x HTTP/1.1\r\nhost: app.example\r\ncontent-length: 3\r\n\r\n"


async def test_connections_are_kept_alive_unless_the_upstream_closes_them() -> None:
    closing = answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    async with ScriptedUpstream(OK, OK, closing, OK) as upstream:
        pool = upstream.pool()
        for _ in range(4):
            assert await whole(pool) == (200, b"ok")
        await pool.close()
    assert upstream.connections == 2


async def test_an_idle_connection_is_not_reused_past_the_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_pool, "KEEPALIVE", 0.05)
    async with ScriptedUpstream(OK) as upstream:
        pool = upstream.pool()
        await whole(pool)
        await asyncio.sleep(0.1)
        await whole(pool)
        await pool.close()
    assert upstream.connections == 2


async def test_informational_answers_are_skipped() -> None:
    early = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")

    async def then_ok(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await early(head, reader, writer)
        await asyncio.sleep(0.05)
        await OK(head, reader, writer)

    async with ScriptedUpstream(then_ok) as upstream:
        pool = upstream.pool()
        answer_ = await pool.request("GET", "/x", [], None)
        assert (answer_.status, answer_.raw_headers) == (200, [(b"Content-Length", b"2")])
        assert await answer_.readany() == b"ok"
        answer_.release()
        await pool.close()


async def test_a_head_answer_has_no_body_and_its_connection_is_not_reused() -> None:
    async with ScriptedUpstream(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), OK) as upstream:
        pool = upstream.pool()
        assert await whole(pool, "HEAD") == (200, b"")
        assert await whole(pool) == (200, b"ok")
        await pool.close()
    assert upstream.connections == 2


async def test_a_body_without_a_length_ends_with_the_connection() -> None:
    async with ScriptedUpstream(answer_and_close(b"HTTP/1.0 200 OK\r\n\r\nall of it")) as upstream:
        pool = upstream.pool()
        assert await whole(pool) == (200, b"all of it")
        assert pool.in_use == 0
        await pool.close()


async def test_an_upstream_that_closes_mid_body_fails_the_read() -> None:
    async with ScriptedUpstream(answer_and_close(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")) as upstream:
        pool = upstream.pool()
        answer_ = await pool.request("GET", "/x", [], None)
        assert await answer_.readany() == b"half"
        with pytest.raises(UpstreamClosed, match="closed the connection"):
            await answer_.readany()
        answer_.close()
        assert pool.in_use == 0
        await pool.close()


@pytest.mark.parametrize(
    "raw",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", b"NOT HTTP\r\n\r\n", b""],
    ids=["conflicting-lengths", "garbage", "closed-at-once"],
)
async def test_a_broken_or_missing_answer_is_an_upstream_failure(raw: bytes) -> None:
    async with ScriptedUpstream(answer_and_close(raw)) as upstream:
        pool = upstream.pool()
        with pytest.raises(UpstreamClosed):
            await pool.request("GET", "/x", [], None)
        assert pool.in_use == 0
        await pool.close()


async def test_silence_longer_than_the_read_timeout_is_a_timeout() -> None:
    async def silent(_head: bytes, _reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with ScriptedUpstream(silent) as upstream:
        pool = upstream.pool(read_timeout=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/x", [], None)
        assert 0.2 <= loop.time() - started < 1.0
        await pool.close()


async def test_a_paused_read_is_not_silence_and_a_big_body_arrives_whole() -> None:
    size = 8 * HIGH_WATER
    big = answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (size, b"z" * size))
    async with ScriptedUpstream(big) as upstream:
        pool = upstream.pool(read_timeout=0.2)
        answer_ = await pool.request("GET", "/x", [], None)
        await asyncio.sleep(0.5)  # the browser is slow: reading is paused, nothing times out
        received = 0
        while chunk := await answer_.readany():
            received += len(chunk)
            assert len(chunk) <= 2 * HIGH_WATER
        answer_.release()
        assert received == size
        await pool.close()


async def test_an_unreachable_upstream_is_a_connect_error() -> None:
    async with ScriptedUpstream(OK) as upstream:
        pass  # closed: its port now refuses
    pool = upstream.pool()
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await pool.request("GET", "/x", [], None)


async def test_a_full_pool_makes_a_request_wait_for_a_connection_within_the_timeouts() -> None:
    async with ScriptedUpstream(OK) as upstream:
        pool = upstream.pool(limit=1, connect_timeout=0.1, read_timeout=0.1)
        held = await pool.request("GET", "/x", [], None)
        waiting = asyncio.ensure_future(whole(pool))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await held.readany()
        held.release()
        assert await waiting == (200, b"ok")
        held = await pool.request("GET", "/x", [], None)
        with pytest.raises(TimeoutError, match="no free connection"):
            await pool.request("GET", "/x", [], None)
        held.release()
        await pool.close()
    assert upstream.connections == 1


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with ScriptedUpstream(OK) as upstream:
        pool = upstream.pool()
        for value in (b"a\r\nx-injected: 1", b"a\nb", b"a\rb"):
            with pytest.raises(ValueError, match="CR or LF"):
                await pool.request("GET", "/x", [(b"authorization", value)], None)
        await pool.close()
    assert upstream.connections == 0


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def test_a_streamed_body_is_chunked_without_a_length_and_raw_with_one() -> None:
    async with ScriptedUpstream() as upstream:
        upstream.scripts.append(echo_body(upstream))
        pool = upstream.pool()
        assert await whole(pool, "POST", chunks(b"ab", b"", b"cd")) == (200, b"abcd")
        assert await whole(pool, "POST", chunks(b"ab", b"cd"), headers=[(b"content-length", b"4")]) == (200, b"abcd")
        await pool.close()
    assert b"transfer-encoding: chunked" in upstream.heads[0]
    assert b"transfer-encoding" not in upstream.heads[1]
    assert upstream.connections == 1


async def test_a_big_upload_waits_while_the_upstream_reads_slowly() -> None:
    part = b"u" * 65536

    async def slow_reader(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received = 0
        while received < length:
            received += len(await reader.read(65536))
            await asyncio.sleep(0.002)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(received)), received))
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(256):  # 16 MiB: far more than the socket buffers hold
            yield part

    async with ScriptedUpstream(slow_reader) as upstream:
        pool = upstream.pool()
        size = 256 * len(part)
        assert await whole(pool, "PUT", parts(), headers=[(b"content-length", b"%d" % size)]) == (200, b"%d" % size)
        await pool.close()


async def test_switching_protocols_on_a_plain_request_is_an_upstream_failure() -> None:
    switching = answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\n")
    async with ScriptedUpstream(switching) as upstream:
        pool = upstream.pool()
        with pytest.raises(UpstreamClosed):
            await pool.request("GET", "/x", [], None)
        await pool.close()


async def test_the_content_type_is_the_media_type_alone() -> None:
    typed = answer(b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nContent-Length: 0\r\n\r\n")
    async with ScriptedUpstream(typed, OK) as upstream:
        pool = upstream.pool()
        for expected in ("text/event-stream", ""):
            answer_ = await pool.request("GET", "/x", [], None)
            assert answer_.content_type == expected
            await answer_.readany()
            answer_.release()
        await pool.close()


async def test_an_answer_before_the_upload_ends_is_returned_and_its_connection_dropped() -> None:
    refused = answer(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
    forever = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        await forever.wait()
        yield b"never"

    async with ScriptedUpstream(refused, OK) as upstream:
        pool = upstream.pool()
        answer_ = await pool.request("POST", "/x", [(b"content-length", b"99999")], endless())
        assert answer_.status == 413
        assert await answer_.readany() == b""
        answer_.release()
        assert await whole(pool) == (200, b"ok")
        await pool.close()
    assert upstream.connections == 2


async def test_a_body_that_fails_before_the_answer_raises_its_own_error() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        raise ConnectionResetError("client disconnected")

    async def never(_head: bytes, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with ScriptedUpstream(never) as upstream:
        pool = upstream.pool()
        with pytest.raises(ConnectionResetError, match="client disconnected"):
            await pool.request("POST", "/x", [], failing())
        assert pool.in_use == 0
        await pool.close()


async def test_bytes_on_an_idle_connection_make_it_unusable() -> None:
    async def chatty(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await OK(head, reader, writer)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")

    async with ScriptedUpstream(chatty, OK) as upstream:
        pool = upstream.pool()
        assert await whole(pool) == (200, b"ok")
        await asyncio.sleep(0.15)
        assert await whole(pool) == (200, b"ok")
        await pool.close()
    assert upstream.connections == 2


def self_signed_pem(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (test fixtures, made per test)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bff-test-upstream")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "upstream.pem", directory / "upstream.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_an_https_upstream_is_verified_against_the_trusted_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed_pem(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    origin = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        untrusting = UpstreamPool(origin, limit=1, connect_timeout=2, read_timeout=2)
        with pytest.raises(UpstreamConnectError, match="SSLCertVerificationError"):
            await untrusting.request("GET", "/x", [], None)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # read when the pool builds its context
        trusting = UpstreamPool(origin, limit=1, connect_timeout=2, read_timeout=2)
        assert await whole(trusting) == (200, b"secure")
        await trusting.close()
    finally:
        server.close()
