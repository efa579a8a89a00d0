"""The transport seam: the JSON client over any transport, errors translated at one point."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from vbatch.errors import ConnectError, HTTPStatusError, InvalidResponseError, RequestTimeout
from vbatch.testing.behaviour import SimConfig, SimulatedServer
from vbatch.testing.fake import SimulatedTransport
from vbatch.transport.base import RawResponse
from vbatch.transport.client import HTTPClient
from vbatch.transport.network import NETWORK_ERRORS, map_network_errors


def test_client_over_the_in_process_server_speaks_json_and_errors() -> None:
    server = SimulatedServer(SimConfig(fail_first=1, fail_status=429, retry_after=2.0,
                                       api_key="k"))

    async def main() -> None:
        async with HTTPClient("http://sim.invalid", api_key="k",
                              transport=SimulatedTransport(server)) as client:
            with pytest.raises(HTTPStatusError) as refused:
                await client.post_json("/v1/completions", b'{"prompt": "a b"}')
            assert refused.value.status_code == 429 and refused.value.retry_after == 2.0
            answer = await client.post_json("/v1/completions", b'{"prompt": "a b"}')
            assert answer["usage"]["prompt_tokens"] == 2
            assert "vllm:num_requests_running" in await client.get_text("/metrics")
            assert await client.get_status("/health") == 200

    asyncio.run(main())


def test_a_wrong_key_is_a_401_and_a_dropped_connection_a_connect_error() -> None:
    server = SimulatedServer(SimConfig(api_key="right", drop_rate=1.0))

    async def main() -> None:
        transport = SimulatedTransport(server)
        async with HTTPClient("http://sim.invalid", api_key="wrong",
                              transport=transport) as client:
            with pytest.raises(HTTPStatusError, match="invalid API key"):
                await client.get_json("/v1/models")
        async with HTTPClient("http://sim.invalid", api_key="right",
                              transport=transport) as client:
            with pytest.raises(ConnectError):
                await client.post_json("/v1/chat/completions",
                                       b'{"messages": [{"role": "user", "content": "hi"}]}')

    asyncio.run(main())


class _Canned:
    """A transport that answers every request with the same raw response."""

    def __init__(self, response: RawResponse):
        self.response = response
        self.sent: list[tuple[str, str, bytes | None]] = []

    async def send(self, method: str, url: str, headers: object, body: bytes | None
                   ) -> RawResponse:
        self.sent.append((method, url, body))
        return self.response


def test_a_body_that_is_not_a_json_object_is_an_invalid_response() -> None:
    async def main() -> None:
        for body in (b"<html>", b"[1, 2]"):
            transport = _Canned(RawResponse(200, body, {}))
            async with HTTPClient("http://x.invalid/", transport=transport) as client:
                with pytest.raises(InvalidResponseError):
                    await client.post_json("/v1/completions", b"{}")
            assert transport.sent == [("POST", "http://x.invalid/v1/completions", b"{}")]

    asyncio.run(main())


@pytest.mark.parametrize(("raised", "expected", "says"), [
    (asyncio.TimeoutError(), RequestTimeout, "within 3 s"),
    (aiohttp.ClientOSError("reset"), ConnectError, "ClientOSError on http://h/v1"),
    (ConnectionRefusedError("refused"), ConnectError, "ConnectionRefusedError"),
])
def test_network_errors_are_translated_at_one_point(raised: BaseException,
                                                     expected: type[Exception], says: str) -> None:
    assert isinstance(raised, NETWORK_ERRORS)
    error = map_network_errors(raised, "http://h/v1", 3.0)
    assert isinstance(error, expected) and says in str(error)
