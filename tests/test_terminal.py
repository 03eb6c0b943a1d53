import os

import pytest
import trio

from trio_stream.terminal import TerminalWriter, _coalesce, write_all


def test_coalesce_joins_runs_and_keeps_order_across_descriptors():
    queue = [(1, b"a"), (1, b"b"), (2, b"c"), (1, b"d"), (1, b"e")]
    assert _coalesce(queue) == [(1, b"ab"), (2, b"c"), (1, b"de")]


def test_write_all_reports_a_vanished_reader():
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        assert write_all(write_end, b"lost") is False
    finally:
        os.close(write_end)


async def test_writer_writes_in_order_and_stops_quietly_on_epipe():
    read_end, write_end = os.pipe()
    gone_read, gone_write = os.pipe()
    os.close(gone_read)
    writer = TerminalWriter(max_pending=4)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for part in (b"one ", b"two ", b"three"):
                await writer.write(write_end, part)
                await writer.write(gone_write, part)
            writer.close()
        assert os.read(read_end, 100) == b"one two three"
        assert writer.broken == {gone_write}
        with pytest.raises(trio.ClosedResourceError):
            await writer.write(write_end, b"late")
    finally:
        for fd in (read_end, write_end, gone_write):
            os.close(fd)


def test_writer_refuses_a_zero_bound():
    with pytest.raises(ValueError, match="max_pending"):
        TerminalWriter(max_pending=0)
