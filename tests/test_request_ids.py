"""Request ids: which incoming ids are kept, and the provider calls of a request carrying it."""

from __future__ import annotations

import httpx
import pytest

from bff.access import AccessLine
from bff.login import send_to_source
from bff.request_ids import HEADER, AccessRecord, current, request_id_of


@pytest.mark.parametrize("value", [b"a", b"abc.DEF-1_2", b"x" * 128])
def test_a_well_formed_id_is_kept_and_the_headers_untouched(value: bytes) -> None:
    headers = [(b"host", b"h"), (HEADER, value)]
    assert request_id_of(headers) == (value.decode(), None)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", b"h")],
        [(HEADER, b"")],
        [(HEADER, b"x" * 129)],
        [(HEADER, b"has space")],
        [(HEADER, b"caf\xc3\xa9")],
        [(HEADER, b"one"), (HEADER, b"two")],
    ],
)
def test_anything_else_is_replaced_by_one_new_id(headers: list[tuple[bytes, bytes]]) -> None:
    request_id, replaced = request_id_of(headers)
    assert len(request_id) == 32
    assert int(request_id, 16) >= 0
    assert replaced is not None
    assert [value for name, value in replaced if name == HEADER] == [request_id.encode()]


async def test_provider_calls_during_a_request_carry_its_id() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-request-id"))
        return httpx.Response(200, json={})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        await send_to_source(http, http.build_request("POST", "https://idp.test/token"), who="provider", retry_after=1)
        token = current.set(AccessRecord("req-7", "GET", "/api/x"))
        try:
            await send_to_source(
                http, http.build_request("POST", "https://idp.test/token"), who="provider", retry_after=1
            )
        finally:
            current.reset(token)
    assert seen == [None, "req-7"]


def test_text_access_line_quotes_values_that_would_break_key_value_parsing() -> None:
    record = AccessRecord("r1", "GET", "/api/x")
    record.route, record.status, record.bytes = "/api", 200, 5
    record.session, record.sub = "abcdefghijkl", 'Al "x"=1'
    line = str(AccessLine(record, 0.0015))
    assert line == (
        "method=GET route=/api path=/api/x status=200 duration_ms=1.50 bytes=5 request_id=r1 "
        'session=abcdefghijkl sub="Al \\"x\\"=1"'
    )
