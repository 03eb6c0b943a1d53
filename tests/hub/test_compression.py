"""permessage-deflate: offered to clients that ask, skipped for small messages."""

from __future__ import annotations

import httpx
import trio
import wsproto
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate

from trio_stream.hub.server import ServedHub

from .conftest import StartHub, create, output


def _frames(data: bytes) -> list[tuple[bool, int, int]]:
    """(rsv1, opcode, payload length) of each complete frame a server sent."""
    out = []
    position = 0
    while position + 2 <= len(data):
        first, second = data[position], data[position + 1]
        length = second & 0x7F
        header = 2
        if length == 126:
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            header = 4
        elif length == 127:
            length = int.from_bytes(data[position + 2 : position + 10], "big")
            header = 10
        if position + header + length > len(data):
            break
        out.append((bool(first & 0x40), first & 0x0F, length))
        position += header + length
    return out


async def _open(served: ServedHub, path: str) -> tuple[trio.SocketStream, bytes, bytes]:
    """A WebSocket offering permessage-deflate; returns the stream, the handshake answer
    and what came after it."""
    address = served.addresses[0]
    stream = await trio.open_tcp_stream(address.host, address.port)
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = Request(host="localhost", target=path, extensions=[PerMessageDeflate()])
    await stream.send_all(conn.send(request))
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
    head, _, rest = data.partition(b"\r\n\r\n")
    conn.receive_data(head + b"\r\n\r\n")
    assert any(isinstance(e, AcceptConnection) for e in conn.events())
    return stream, head, rest


async def test_small_messages_go_uncompressed_and_large_ones_compressed(
    served: ServedHub, http: httpx.AsyncClient
) -> None:
    await create(http, "s", 1)
    big = "tstream " * 500
    await http.post("/api/streams/s/events", json=[output(big)])
    stream, head, data = await _open(served, "/api/streams/s/ws?after=-1")
    assert b"permessage-deflate" in head.lower()
    with trio.fail_after(5):
        while len(_frames(data)) < 3:
            data += await stream.receive_some()
    (ack_rsv1, ack_op, _), (sub_rsv1, _, _), (events_rsv1, _, events_size) = _frames(data)[:3]
    assert ack_op == 1 and not ack_rsv1 and not sub_rsv1
    assert events_rsv1 and events_size < len(big) // 4
    await stream.aclose()


async def test_compression_can_be_turned_off(start_hub: StartHub) -> None:
    served = await start_hub(compression=False)
    async with httpx.AsyncClient(base_url=served.urls[0]) as http:
        await create(http, "s")
    stream, head, _ = await _open(served, "/api/streams/s/ws")
    assert b"permessage-deflate" not in head.lower()
    await stream.aclose()
