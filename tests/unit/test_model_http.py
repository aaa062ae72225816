"""The lean model's HTTP transport (sessions/model_http.py) against real local servers: the
OpenAI client's errors and retries, mid-stream closes, timeouts, the pool, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from agents import ModelSettings
from agents.models.interface import ModelTracing
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

from loadtest.openai_stub import OpenAIStub, ToolCalls, filler
from sessions import lean_model
from sessions.lean_model import LeanChatModel, LeanProvider
from sessions.model_http import WireTransport
from sessions.model_pump import CAUGHT_UP, END, ModelPump
from sessions.read_deadlines import TICK
from tests.unit.test_lean_model import TEXT, events

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


@contextlib.asynccontextmanager
async def server(handle: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A local server running ``handle`` per connection; yields its base URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handle(reader, writer)
        writer.close()

    srv = await asyncio.start_server(run, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://localhost:{port}/v1"
    finally:
        srv.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def wired(base_url: str, retries: int = 0, timeout: float = 5.0,
          transport: WireTransport | None = None) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=transport or WireTransport())
    return openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, http_client=http,
                              max_retries=retries, timeout=timeout)


@pytest.mark.parametrize("answer", ["one two three four five", ToolCalls(
    [("call_1", "calc", '{"expression": "1+1"}')])], ids=["text", "tool_call"])
async def test_events_over_the_wire_match_the_sdk_over_httpx(answer: Any) -> None:
    stub = await OpenAIStub(lambda messages: answer).start()
    try:
        sdk = await events(OpenAIChatCompletionsModel("m", openai.AsyncOpenAI(
            api_key="sk-test", base_url=stub.base_url, max_retries=0)))
        lean = await events(LeanChatModel("m", wired(stub.base_url)))
    finally:
        await stub.stop()

    def shape(evs: list[dict[str, Any]]) -> list[str]:  # text deltas merge per read
        kinds = [e["type"] for e in evs]
        return [k for n, k in enumerate(kinds) if k != "response.output_text.delta"
                or kinds[n - 1] != k]
    assert shape(lean) == shape(sdk)
    assert "".join(e.get("delta", "") for e in lean if "text" in e["type"]) == \
        "".join(e.get("delta", "") for e in sdk if "text" in e["type"])
    completed = lean[-1]["response"], sdk[-1]["response"]
    assert completed[0]["output"] == completed[1]["output"]


async def test_a_provider_reuses_one_connection_for_consecutive_replies() -> None:
    stub = await OpenAIStub(filler(30)).start()
    try:
        provider = LeanProvider([openai.AsyncOpenAI(api_key="k", base_url=stub.base_url)])
        for _ in range(3):
            got = await events(provider.get_model("m"))
            assert got[-1]["type"] == "response.completed"
        pool = provider.clients[0]._client._transport.pool  # type: ignore[attr-defined]
        assert pool.open == 1
    finally:
        await stub.stop()


def test_a_proxied_endpoint_keeps_httpxs_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    clients = [openai.AsyncOpenAI(api_key="k", base_url="http://model.example/v1")]
    wire = LeanProvider(clients).clients[0]._client._transport
    assert isinstance(wire, WireTransport)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert LeanProvider(clients).clients == clients
    monkeypatch.setenv("NO_PROXY", "model.example")
    assert LeanProvider(clients).clients != clients


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError),
                                               (400, openai.BadRequestError),
                                               (500, openai.InternalServerError)])
async def test_status_errors_and_retries_are_the_openai_clients(status: int,
                                                                error: type) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await request(reader))
            body = b'{"error": {"message": "no", "type": "x"}}'
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                         b"retry-after-ms: 1\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(body), body))

    transport = WireTransport()
    async with server(handle) as url:
        with pytest.raises(error):
            await events(LeanChatModel("m", wired(url, retries=1, transport=transport)))
    assert len(seen) == (2 if status in (429, 500) else 1)  # the client's own retry policy
    assert transport.pool.open == 1  # one kept-alive connection carried both
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nhost: localhost:" in seen[0].lower()


async def test_a_close_mid_stream_is_a_connection_error_after_the_text_before_it() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(SSE_HEAD + chunk(TEXT[0]) + chunk(TEXT[1]))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with server(handle) as url:
        got: list[str] = []
        with pytest.raises(openai.APIConnectionError):
            async for e in LeanChatModel("m", wired(url)).stream_response(
                    None, "hi", ModelSettings(), [], None, [], ModelTracing.DISABLED):
                got.append(e.type)
        assert "response.output_text.delta" in got
        async with httpx2.AsyncClient(transport=WireTransport()) as http, \
                http.stream("POST", url, content=b"{}") as r:
            with pytest.raises(httpx2.RemoteProtocolError):
                await r.aread()


async def test_read_timeouts_before_and_during_the_body() -> None:
    async def slow_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        await asyncio.sleep(30)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(SSE_HEAD + chunk(TEXT[0]) + chunk(TEXT[1]))
        await asyncio.sleep(30)

    for handle in (slow_head, stalls):
        async with server(handle) as url:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(openai.APITimeoutError):
                await events(LeanChatModel("m", wired(url, timeout=0.3)))
            assert 0.25 < loop.time() - start < 5


async def test_bytes_keep_moving_the_read_deadline_and_the_watch_stops() -> None:
    """A body whose bytes come more often than the read timeout is read to its end however
    long it takes, and the pool's deadline timer stops when no reader waits."""
    async def trickles(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(SSE_HEAD)
        for n in range(8):
            writer.write(chunk(b"x%d" % n))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")

    transport = WireTransport()
    async with server(trickles) as url, httpx2.AsyncClient(transport=transport) as http, \
            http.stream("POST", url, content=b"{}",
                        timeout=httpx2.Timeout(5, read=TICK * 1.2)) as r:
        body = await r.aread()
    assert body == b"".join(b"x%d" % n for n in range(8))
    deadlines = transport.pool._deadlines
    assert not deadlines.waiting
    pending = deadlines._timer
    if pending is not None:  # its last look, run now rather than waited for
        pending.cancel()
        deadlines._look(asyncio.get_running_loop())
    assert deadlines._timer is None, "nothing waits: no timer"


async def test_a_refused_connection_is_a_connection_error() -> None:
    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass

    async with server(nothing) as url:  # a port that was just free again
        pass
    with pytest.raises(openai.APIConnectionError):
        await events(LeanChatModel("m", wired(url)))


async def test_the_pool_waits_for_a_free_connection_then_times_out() -> None:
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await request(reader)
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    transport = WireTransport(max_connections=1)
    async with server(handle) as url, httpx2.AsyncClient(transport=transport) as http:
        first = asyncio.create_task(http.post(url, content=b"{}"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx2.PoolTimeout):
            await http.post(url, content=b"{}", timeout=httpx2.Timeout(5, pool=0.1))
        second = asyncio.create_task(http.post(url, content=b"{}"))
        await asyncio.sleep(0.05)
        release.set()
        assert [(await t).text for t in (first, second)] == ["ok", "ok"]
        assert transport.pool.open == 1


async def test_connection_close_opens_a_new_connection_next_time() -> None:
    conns = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    transport = WireTransport()
    async with server(handle) as url, httpx2.AsyncClient(transport=transport) as http:
        for _ in range(3):
            assert (await http.post(url, content=b"{}")).text == "ok"
            assert transport.pool.open == 0  # not kept: the server said close
    assert conns == 3


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True,
                   capture_output=True, timeout=60)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    return server_ctx, ssl.create_default_context(cafile=str(cert))


async def test_https_streams_with_the_servers_certificate_checked(
        tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(SSE_HEAD + b"".join(chunk(e) for e in TEXT) + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server_ctx, trusting = tls_pair
    async with server(handle, server_ctx) as url:
        got = await events(LeanChatModel("m", wired(url, transport=WireTransport(
            ssl_context=trusting))))
        assert got[-1]["type"] == "response.completed"
        with pytest.raises(openai.APIConnectionError):  # the system's CAs do not know it
            await events(LeanChatModel("m", wired(url)))


async def test_a_kept_alive_connection_the_server_closed_is_not_reused() -> None:
    conns = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # then its keep-alive timeout closes the idle connection

    transport = WireTransport()
    async with server(handle) as url, httpx2.AsyncClient(transport=transport) as http:
        assert (await http.post(url, content=b"{}")).text == "ok"
        await asyncio.sleep(0.3)
        assert (await http.post(url, content=b"{}")).text == "ok"
        assert transport.pool.open == 1  # the closed one was dropped, not counted
    assert conns == 2


async def test_a_reply_cancelled_mid_stream_closes_its_connection() -> None:
    # 1.2 s of reply: cancelled after its first piece, the rest unread (the second call
    # reads all of it; 300 tokens made this test 6 s)
    stub = await OpenAIStub(filler(60), tokens_per_s=50).start()
    try:
        provider = LeanProvider([openai.AsyncOpenAI(api_key="k", base_url=stub.base_url)])
        pool = provider.clients[0]._client._transport.pool  # type: ignore[attr-defined]
        texting = asyncio.Event()

        async def one() -> None:
            async for e in provider.get_model("m").stream_response(  # type: ignore[call-arg]
                    None, "hi", ModelSettings(), [], None, [], ModelTracing.DISABLED):
                if e.type == "response.output_text.delta":
                    texting.set()

        turn = asyncio.create_task(one())
        await texting.wait()
        turn.cancel()  # as a cancelled turn's task is
        with pytest.raises(asyncio.CancelledError):
            await turn
        assert pool.open == 0  # closed, not kept: the rest of its reply was never read
        assert (await events(provider.get_model("m")))[-1]["type"] == "response.completed"
        assert pool.open == 1
    finally:
        await stub.stop()


async def test_a_gzipped_stream_is_decoded_by_httpx_then_read_alike() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        body = gzip.compress(b"".join(TEXT))
        writer.write(SSE_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
                     + chunk(body[:20]) + chunk(body[20:]) + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with server(handle) as url:
        got = await events(LeanChatModel("m", wired(url)))
    assert "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta") \
        == "Hello, world"
    assert got[-1]["type"] == "response.completed"


async def test_paced_tapped_streams_give_their_text_exactly_in_fewer_reads() -> None:
    """Streams paced by one shared timer (sessions/lean_model.py ``Pace``: sockets held
    between reads, released at the tick, the readers woken after) each give their reply's
    text exactly once, in far fewer reads than tokens."""
    stub = await OpenAIStub(filler(60), tokens_per_s=300).start()
    reads: list[int] = []
    real = lean_model.SSEDecoder.feed_text

    def counted(self: lean_model.SSEDecoder, chunk: bytes) -> str | None:
        reads.append(1)
        return real(self, chunk)

    async def one(provider: LeanProvider) -> str:
        model = provider.get_model("m")
        assert isinstance(model, LeanChatModel)
        pump = ModelPump()
        model.tap = pump
        pump.start(model.stream_response(None, "hi", ModelSettings(), [], None, [],
                                         ModelTracing.DISABLED))
        texts: list[str] = []
        given = False  # as the direct path (sessions/direct_run.py) takes them
        while (event := await pump.next()) is not END:
            if type(event) is str:
                texts.append(event)
            elif event is CAUGHT_UP:
                given = True
            elif getattr(event, "type", "") == "response.output_text.delta":
                if not given:
                    texts.append(event.delta)
                given = False
        return "".join(texts)

    try:
        lean_model.SSEDecoder.feed_text = counted  # type: ignore[method-assign]
        provider = LeanProvider([openai.AsyncOpenAI(api_key="k", base_url=stub.base_url)],
                                read_every=0.03)
        got = await asyncio.gather(*(one(provider) for _ in range(20)))
    finally:
        lean_model.SSEDecoder.feed_text = real  # type: ignore[method-assign]
        await stub.stop()
    assert got == [filler(60)([])] * 20
    assert len(reads) < 20 * 60 / 3, "tokens come several to a read"
