"""Subscribers the hub takes over from Hypercorn and Quart once their first answer is out
(hub.detach): nothing the client sent around that moment is lost, and the connection goes
on as before, to its close."""

from __future__ import annotations

import contextlib
import socket
import types
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from hypercorn.events import RawData
from hypercorn.protocol.ws_stream import WebsocketBuffer
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from trio_stream.hub import detach, patches, wire
from trio_stream.hub.config import HubConfig, Listen
from trio_stream.hub.server import ServedHub, serve_hub
from trio_stream.hub.sse import SSEParser
from trio_stream.hub.streams import Stream
from trio_stream.store.memory import MemoryStore

from .conftest import create, output

pytestmark = pytest.mark.skipif(
    not wire.fast_path["enabled"],
    reason="this run checks the hub with the fast path off, where nothing is taken over",
)


class RawClient:
    """A WebSocket client on a plain socket, which can send bytes at any moment."""

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        # Frames of its own, masked as a client's must be, sent whenever the test says.
        self.frames = FrameProtocol(client=True, extensions=[])
        self.messages: list[dict[str, Any]] = []
        self.closed: CloseConnection | None = None
        self.accepted = self.rejected = False

    def handshake(self, target: str, *, deflate: bool = False) -> bytes:
        extensions = [PerMessageDeflate()] if deflate else []
        return self.ws.send(Request(host="localhost", target=target, extensions=extensions))

    def frame(self, message: dict[str, Any]) -> bytes:
        return self.frames.send_data(orjson.dumps(message).decode(), fin=True)

    async def receive(self) -> None:
        """Read once; collect the messages and the close it completes."""
        with trio.fail_after(5):
            data = await self.sock.receive_some(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.messages.append(orjson.loads(event.data))
            elif isinstance(event, CloseConnection):
                self.closed = event
            elif isinstance(event, AcceptConnection):
                self.accepted = True
            else:
                assert isinstance(event, RejectConnection | RejectData), event
                self.rejected = True

    async def receive_accepted(self) -> None:
        while not self.accepted:
            await self.receive()

    async def receive_until(self, kind: str) -> dict[str, Any]:
        while not any(m["type"] == kind for m in self.messages):
            await self.receive()
        return next(m for m in self.messages if m["type"] == kind)


async def connect(served: ServedHub) -> RawClient:
    address = served.addresses[0]
    return RawClient(await trio.open_tcp_stream(address.host, address.port))


async def taken_over_client(
    served: ServedHub, target: str = "/api/streams/s/ws", *, deflate: bool = False
) -> RawClient:
    """A client whose WebSocket the hub has taken over, its ``connection_ack`` read."""
    taken = detach.taken_over["websocket"]
    client = await connect(served)
    await client.sock.send_all(client.handshake(target, deflate=deflate))
    await client.receive_until("connection_ack")
    await until(lambda: detach.taken_over["websocket"] > taken)
    return client


async def until(condition: Any) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.01)


async def test_messages_sent_as_the_hub_takes_over_are_all_answered_in_order(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    for _ in range(5):
        client = await connect(served)
        await client.sock.send_all(client.handshake("/api/streams/s/ws"))
        await client.receive_accepted()
        # At once, in one write: whether Hypercorn reads them before the hub takes the
        # connection over (they are then handed over through the app) or the hub's own
        # reader does, each is answered, in order.
        pings = b"".join(client.frame({"type": "ping", "id": i}) for i in range(20))
        await client.sock.send_all(pings)
        with trio.fail_after(5):
            while sum(m["type"] == "pong" for m in client.messages) < 20:
                await client.receive()
        assert client.messages[0]["type"] == "connection_ack"
        assert [m["id"] for m in client.messages if m["type"] == "pong"] == list(range(20))
        await client.sock.aclose()


async def test_a_frame_cut_around_the_takeover_is_read_whole(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    stream = await served.hub.broker.get_stream("s")
    taken = detach.taken_over["websocket"]
    client = await connect(served)
    ping = client.frame({"type": "ping", "id": "cut"})
    await client.sock.send_all(client.handshake("/api/streams/s/ws"))
    await client.receive_accepted()
    # Half a frame: read by Hypercorn and held by wsproto, which the hub's own reader
    # carries on with, or read by the hub's reader.
    await client.sock.send_all(ping[:9])
    await client.receive_until("connection_ack")
    await until(lambda: detach.taken_over["websocket"] > taken)
    await client.sock.send_all(ping[9:])
    assert (await client.receive_until("pong"))["id"] == "cut"
    assert len(stream.clients) == 1
    await client.sock.aclose()
    await until(lambda: not stream.clients)


async def test_a_websocket_with_permessage_deflate_is_taken_over_and_still_compressed(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    client = await taken_over_client(served, "/api/streams/s/ws?after=-1", deflate=True)
    sent = 0
    original = client.sock.receive_some

    async def counted(size: int) -> bytes:
        nonlocal sent
        data = await original(size)
        sent += len(data)
        return data

    client.sock.receive_some = counted  # type: ignore[method-assign]
    long = "compressible " * 2000
    answer = await http.post("/api/streams/s/events", json=[output("short"), output(long)])
    assert answer.status_code == 200, answer.text
    texts: list[str] = []
    with trio.fail_after(5):
        while len(texts) < 2:
            await client.receive()
            texts = [
                event["data"]["text"]
                for message in client.messages
                if message["type"] == "event"
                for event in message["events"]
            ]
    assert texts == ["short", long]
    # The event of 26 KB came compressed, as it did before the takeover.
    assert sent < len(long) // 4
    await client.sock.aclose()


async def test_frames_sent_before_the_handshakes_answer_never_stop_the_hub(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    # A client must wait for the answer to its handshake (RFC 6455 4.1). One that does
    # not is refused (400) or served, by how fast the app accepts; a 101 sent behind the
    # 400 once ended the whole server.
    await create(http, "s")
    stream = await served.hub.broker.get_stream("s")
    for _ in range(20):
        client = await connect(served)
        early = client.handshake("/api/streams/s/ws") + client.frame({"type": "ping"})[:5]
        await client.sock.send_all(early)
        with trio.fail_after(5):
            while not client.accepted and not client.rejected:
                await client.receive()
        await client.sock.aclose()
    await until(lambda: not stream.clients)
    assert (await http.get("/api/streams/s")).status_code == 200


async def test_the_close_of_either_side_ends_a_taken_over_websocket(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s")
    stream: Stream = await served.hub.broker.get_stream("s")
    # The client closes: the hub answers with its own close, then lets the client go.
    client = await connect(served)
    await client.sock.send_all(client.handshake("/api/streams/s/ws"))
    await client.receive_until("connection_ack")
    await until(lambda: len(stream.clients) == 1)
    await client.sock.send_all(client.ws.send(CloseConnection(code=1000, reason="bye")))
    while client.closed is None:
        await client.receive()
    assert client.closed.code == 1000
    await until(lambda: not stream.clients)
    await client.sock.aclose()
    # The stream ends: the hub closes with 1000 and the client's answer ends it.
    client = await connect(served)
    await client.sock.send_all(client.handshake("/api/streams/s/ws?after=-1"))
    await client.receive_until("connection_ack")
    await until(lambda: len(stream.clients) == 1)
    answer = await http.post(
        "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
    )
    assert answer.status_code == 200, answer.text
    while client.closed is None:
        await client.receive()
    assert (client.closed.code, client.closed.reason) == (1000, "stream_ended")
    assert [m["type"] for m in client.messages][-1] == "end"
    await client.sock.send_all(client.ws.send(client.closed.response()))
    with trio.fail_after(5):
        assert await client.sock.receive_some(65536) == b""
    await until(lambda: not stream.clients)


async def test_a_client_that_vanishes_is_let_go(served: ServedHub, http: httpx.AsyncClient) -> None:
    await create(http, "s")
    stream = await served.hub.broker.get_stream("s")
    clients = [await connect(served) for _ in range(3)]
    for client in clients:
        await client.sock.send_all(client.handshake("/api/streams/s/ws"))
        await client.receive_until("connection_ack")
    await until(lambda: len(stream.clients) == 3)
    # No close frame: the socket just goes.
    await clients[0].sock.aclose()
    await until(lambda: len(stream.clients) == 2)
    for client in clients[1:]:
        await client.sock.send_all(client.frame({"type": "ping", "id": 7}))
        assert (await client.receive_until("pong"))["id"] == 7
        await client.sock.aclose()


async def test_a_taken_over_sse_response_ends_with_its_stream_and_its_connection(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 2)
    stream = await served.hub.broker.get_stream("s")
    taken = detach.taken_over["sse"]
    seen = b""
    async with http.stream("GET", "/api/streams/s/sse?lastEventId=-1") as response:
        # It is not kept alive for another request: the hub serves it to its end.
        assert response.headers["connection"] == "close"
        chunks = response.aiter_bytes()
        while b"line 1" not in seen:
            seen += await chunks.__anext__()
        await until(lambda: detach.taken_over["sse"] > taken)
        answer = await http.post(
            "/api/streams/s/events", json={"type": "session_ended", "data": {"exit_status": 0}}
        )
        assert answer.status_code == 200, answer.text
        with trio.fail_after(5):
            async for chunk in chunks:
                seen += chunk
    # The whole body came, chunked to its last chunk (httpx checks), the end event last.
    assert [m.event for m in SSEParser().feed(seen)][-1] == "end"
    await until(lambda: not stream.clients)


async def _read_all(data: list[bytes], limit: int) -> list[str | bytes]:
    ours, theirs = socket.socketpair()
    detached = detach.DetachedWebSocket(
        ours, Connection(ConnectionType.SERVER), WebsocketBuffer(limit)
    )
    taken: list[str | bytes] = []
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            # The hub may close first (after a close of its own): the rest is not read.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for chunk in data:
                    await peer.send_all(chunk)
                await peer.send_eof()

        async def drain() -> None:
            # The close and pongs the hub answers with.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await peer.receive_some(65536):
                    pass

        nursery.start_soon(send)
        nursery.start_soon(drain)
        with trio.fail_after(5):
            try:
                await detached.read(taken.append)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await detached.aclose()
        nursery.cancel_scope.cancel()
    await peer.aclose()
    return taken


async def test_the_fan_out_writes_nothing_inside_a_frame_being_written() -> None:
    # A pong or a close of the connection's reader is written under its lock; while
    # part of it is on the wire, a tick's frame from the fan-out (write_now) must wait,
    # even at a moment the socket has room.
    ours, theirs = socket.socketpair()
    detached = detach.DetachedWebSocket(
        ours, Connection(ConnectionType.SERVER), WebsocketBuffer(1000)
    )
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    big = wire.ws_frame(b"x" * 1_000_000)
    tick = wire.ws_frame(b'{"type":"event"}')
    received = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(detached.write, big)
        await trio.testing.wait_all_tasks_blocked()
        received += await peer.receive_some(1 << 16)
        # The socket has room now, and the write is not done.
        assert detached.writer.write_now(tick) == -1
        while len(received) < len(big):
            received += await peer.receive_some(1 << 16)
    assert received == big
    assert detached.writer.write_now(tick) == len(tick)
    assert await peer.receive_some(1 << 16) == tick
    await detached.aclose()
    assert detached.writer.write_now(tick) == -1
    await peer.aclose()


async def test_a_frame_the_fan_out_began_is_finished_before_a_control_frame() -> None:
    # The fan-out wrote part of a tick's frame (the socket was nearly full) and left the
    # rest to the connection's writer task; the reader answers a ping meanwhile: its pong
    # goes after the rest, not inside the frame.
    ours, theirs = socket.socketpair()
    detached = detach.DetachedWebSocket(
        ours, Connection(ConnectionType.SERVER), WebsocketBuffer(1000)
    )
    frame = wire.ws_frame(b"y" * 300)
    ours.send(frame[:40])
    rest = [frame[40:]]
    detached.writer.rest = lambda: rest.pop() if rest else b""
    await detached.send_event(Ping(b"p").response())
    await detached.send_event(CloseConnection(1000, "bye"))
    await detached.aclose()
    data = b""
    while chunk := theirs.recv(1 << 16):
        data += chunk
    pong = b"\x8a\x01p"
    assert data.startswith(frame + pong)
    assert data[len(frame) + len(pong)] == 0x88
    theirs.close()


async def test_hypercorns_own_writes_finish_a_frame_the_fan_out_began_first() -> None:
    # On a connection Hypercorn still serves, its pong or close goes through its locked
    # write (patches._protocol_send), which sends the rest of the fan-out's frame first.
    ours, theirs = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    frame = wire.ws_frame(b"z" * 300)
    await stream.send_all(frame[:50])
    rest = [frame[50:]]
    writer = wire.RawWriter(stream.send_all, trio.Lock(), stream)
    writer.rest = lambda: rest.pop() if rest else b""
    server = types.SimpleNamespace(send_lock=trio.Lock(), stream=stream, _tstream_writer=writer)
    await patches._protocol_send(server, RawData(data=b"\x8a\x00"))  # type: ignore[arg-type]
    await patches._protocol_send(server, RawData(data=b"\x8a\x00"))  # type: ignore[arg-type]
    await stream.aclose()
    data = b""
    while chunk := theirs.recv(1 << 16):
        data += chunk
    assert data == frame + b"\x8a\x00\x8a\x00"
    theirs.close()


async def test_no_data_frame_is_written_after_either_sides_close() -> None:
    for closing in ("ours", "theirs"):
        ours, theirs = socket.socketpair()
        detached = detach.DetachedWebSocket(
            ours, Connection(ConnectionType.SERVER), WebsocketBuffer(1000)
        )
        peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
        tick = wire.ws_frame(b'{"type":"event"}')
        if closing == "ours":
            await detached.close(1000, "bye")
        else:
            await peer.send_all(_masked(0x8, b"\x03\xe8", True))
            with trio.fail_after(5):
                await detached.read(lambda _message: None)
        assert detached.writer.write_now(tick) == -1
        await detached.writer(tick)
        await detached.aclose()
        data = b""
        while chunk := await peer.receive_some(1 << 16):
            data += chunk
        # The close frame alone (opcode 8), no event behind it.
        assert data[0] == 0x88 and len(data) == 2 + data[1]
        await peer.aclose()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(1, 400))
def test_any_bytes_from_a_peer_end_its_reading_without_an_error(
    data: list[bytes], limit: int
) -> None:
    # Whatever a client sends a taken-over WebSocket (a broken frame, an unmasked one,
    # a message over the limit, invalid UTF-8, a close), reading ends or goes on with a
    # close answered: nothing else is raised that would reach the hub.
    taken = trio.run(_read_all, data, limit)
    assert all(isinstance(message, str | bytes) for message in taken)


def test_valid_messages_from_a_peer_are_all_taken() -> None:
    frames = FrameProtocol(client=True, extensions=[])
    data = [frames.send_data(f"m{i}", fin=True) for i in range(5)]
    data.append(frames.send_data("x" * 10, fin=False) + frames.send_data("y" * 5, fin=True))
    data.append(frames.close(1000, "bye"))
    assert trio.run(_read_all, data, 100) == [f"m{i}" for i in range(5)] + ["x" * 10 + "y" * 5]


async def test_a_client_that_never_answers_the_hubs_close_is_let_go(
    start_hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detach, "CLOSE_WAIT", 0.2)
    served = await start_hub(max_message_size=1024)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
    stream = await served.hub.broker.get_stream("s")
    client = await taken_over_client(served)
    # Over the limit: the hub closes with 1009, and waits for no answer for ever.
    await client.sock.send_all(client.frame({"type": "ping", "id": "x" * 2000}))
    while client.closed is None:
        await client.receive()
    assert client.closed.code == 1009
    with trio.fail_after(3):
        while await client.sock.receive_some(65536):
            pass
    await until(lambda: not stream.clients)
    await client.sock.aclose()


async def test_a_connection_is_not_adopted_by_a_closed_nursery() -> None:
    async with trio.open_nursery() as nursery:
        pass
    assert not detach.adopt(nursery, trio.sleep_forever)


async def test_an_sse_response_with_a_request_pipelined_behind_it_is_served_all_the_same(
    served: ServedHub, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # h11 holds the second request until the response is done, and Hypercorn's reading
    # task with it: the takeover is called off, and Hypercorn goes on serving.
    monkeypatch.setattr(detach, "TAKEOVER_WAIT", 0.2)
    await create(http, "s", 2)
    stream = await served.hub.broker.get_stream("s")
    taken = detach.taken_over["sse"]
    address = served.addresses[0]
    sock = await trio.open_tcp_stream(address.host, address.port)
    request = b"GET /api/streams/s/sse?lastEventId=-1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    await sock.send_all(request + b"GET /api/streams HTTP/1.1\r\nHost: localhost\r\n\r\n")
    seen = b""
    with trio.fail_after(5):
        while b"line 1" not in seen:
            seen += await sock.receive_some(65536)
    assert b"connection: close" not in seen.lower()
    answer = await http.post("/api/streams/s/events", json=[output("line 2")])
    assert answer.status_code == 200, answer.text
    with trio.fail_after(5):
        while b"line 2" not in seen:
            seen += await sock.receive_some(65536)
    assert detach.taken_over["sse"] == taken
    assert len(stream.clients) == 1
    await sock.aclose()


frames_or_bytes = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda opcode, payload, fin: (opcode, payload, fin),
            st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]),
            st.binary(max_size=300),
            st.booleans(),
        ),
    ),
    max_size=5,
)


def _masked(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A client's frame as it would be sent, whatever its opcode or payload."""
    size = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if size < 126:
        head += bytes((0x80 | size,))
    else:
        head += bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    mask = b"\x01\x02\x03\x04"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _hostile_example(data: list[Any]) -> None:
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        served = await nursery.start(serve_hub, HubConfig(listen=(Listen(port=0),)), store)
        async with httpx.AsyncClient(base_url=served.urls[0]) as http:
            await create(http, "s")
        stream = await served.hub.broker.get_stream("s")
        client = await taken_over_client(served)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for part in data:
                await client.sock.send_all(part if isinstance(part, bytes) else _masked(*part))
        # Another client is answered, and the first one, once gone, is let go.
        other = await connect(served)
        await other.sock.send_all(other.handshake("/api/streams/s/ws"))
        await other.receive_until("connection_ack")
        await other.sock.send_all(other.frame({"type": "ping", "id": 1}))
        assert (await other.receive_until("pong"))["id"] == 1
        await client.sock.aclose()
        await until(lambda: len(stream.clients) == 1)
        await other.sock.aclose()
        served.shutdown()
    await store.aclose()


@settings(max_examples=25, deadline=None)
@given(data=frames_or_bytes)
def test_whatever_a_taken_over_client_sends_the_hub_serves_on(data: list[Any]) -> None:
    trio.run(_hostile_example, data)


async def test_a_request_sent_behind_a_taken_over_sse_response_is_ignored(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 2)
    taken = detach.taken_over["sse"]
    address = served.addresses[0]
    sock = await trio.open_tcp_stream(address.host, address.port)
    await sock.send_all(
        b"GET /api/streams/s/sse?lastEventId=-1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    seen = b""
    with trio.fail_after(5):
        while b"line 1" not in seen:
            seen += await sock.receive_some(65536)
    assert b"connection: close" in seen.lower()
    await until(lambda: detach.taken_over["sse"] > taken)
    # Said to close after this response, the hub reads no other request on it.
    await sock.send_all(b"GET /api/streams HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = await http.post("/api/streams/s/events", json=[output("line 2")])
    assert answer.status_code == 200, answer.text
    with trio.fail_after(5):
        while b"line 2" not in seen:
            seen += await sock.receive_some(65536)
    assert b"HTTP/1.1 200" not in seen.split(b"\r\n\r\n", 1)[1]
    await sock.aclose()
