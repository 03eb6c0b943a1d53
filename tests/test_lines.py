"""The sans-IO line splitter."""

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream.lines import Line, Lines, LineSplitter


def split_all(chunks: list[bytes], limit: int = 1 << 20) -> list[Line]:
    splitter = LineSplitter(limit)
    out: list[Line] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    out.extend(splitter.close())
    return out


def test_lines_as_they_arrive_and_partial_held():
    s = LineSplitter()
    assert s.feed(b"one\ntw") == [Line("one")]
    assert s.pending == 2
    assert s.feed(b"o\n") == [Line("two")]


def test_final_line_without_newline_delivered_at_close():
    assert split_all([b"a\nlast"]) == [Line("a"), Line("last", eol="")]


def test_crlf_and_lone_cr():
    lines = split_all([b"a\r\nb\r", b"\nprogress 1\rprogress 2\rdone\n"])
    assert lines == [
        Line("a", "\r\n"),
        Line("b", "\r\n"),
        Line("progress 1", "\r"),
        Line("progress 2", "\r"),
        Line("done"),
    ]


def test_cr_at_end_of_stream_is_a_line_ending():
    assert split_all([b"50%\r"]) == [Line("50%", "\r")]


def test_long_line_cut_into_marked_pieces():
    lines = split_all([b"x" * 10 + b"\n"], limit=4)
    assert [(x.text, x.partial, x.eol) for x in lines] == [
        ("xxxx", True, ""),
        ("xxxx", True, ""),
        ("xx", False, "\n"),
    ]


def test_long_line_memory_bounded_while_streaming():
    s = LineSplitter(8)
    for _ in range(1000):
        s.feed(b"y" * 7)
        assert s.pending <= 8


def test_cut_never_splits_a_utf8_character():
    lines = split_all([("é" * 5 + "\n").encode()], limit=5)
    assert all(line.raw is None for line in lines)
    assert "".join(line.text for line in lines) == "é" * 5


def test_invalid_utf8_replaced_and_raw_kept():
    (line,) = split_all([b"bad \xff\xfe byte\n"])
    assert line.text == "bad \ufffd\ufffd byte"
    assert line.raw == b"bad \xff\xfe byte\n"
    assert line.data == b"bad \xff\xfe byte\n"


def test_binary_output_never_crashes():
    data = bytes(range(256)) * 50
    lines = split_all([data])
    assert b"".join(line.data for line in lines) == data


def test_bytes_round_trip_exactly():
    data = b"a\r\nb\rc\n\xffd\n"
    assert b"".join(line.data for line in split_all([data])) == data


def cut_at(data, cuts):
    """``data`` cut at the sorted positions ``cuts`` (empty pieces included)."""
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def chunked(draw):
    alphabet = st.sampled_from([b"a", b"b", b"\n", b"\r", b"\xc3\xa9", b"\xff", b"\xe2\x82\xac"])
    data = b"".join(draw(st.lists(alphabet, max_size=200)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    return data, cut_at(data, cuts)


@settings(max_examples=400, deadline=None)
@given(chunked(), st.integers(4, 12))
def test_any_chunking_gives_the_same_lines(case, limit):
    data, chunks = case
    whole = split_all([data], limit)
    assert split_all(chunks, limit) == whole
    assert split_all([bytes([b]) for b in data], limit) == whole
    assert b"".join(line.data for line in whole) == data
    for line in whole:
        assert len(line.data) - len(line.eol) <= limit


def test_plain_lines_come_back_as_columns_without_line_objects():
    lines = LineSplitter().feed_lines(b"one\ntwo\nthr")
    assert lines.texts == ["one", "two"]
    assert lines.eols is None and not lines.partial and not lines.raw
    assert list(lines) == [Line("one"), Line("two")]


def test_columns_keep_every_line_field():
    lines = split_all([b"a\r\nbad \xff\n" + b"x" * 10 + b"\n"], limit=4)
    columns = Lines.of(lines)
    assert list(columns) == lines
    assert columns[1:] == lines[1:]
    assert columns[-1] == lines[-1]


@settings(max_examples=200, deadline=None)
@given(chunked(), st.integers(4, 12), st.booleans())
def test_columns_give_the_same_lines_as_line_objects(case, limit, lazy):
    data, chunks = case
    splitter = LineSplitter(limit)
    columns = [line for chunk in chunks for line in splitter.feed_lines(chunk, lazy=lazy)]
    columns.extend(splitter.close_lines())
    assert columns == split_all([data], limit)


def test_crlf_lines_come_back_as_columns_without_line_objects():
    splitter = LineSplitter()
    lines = splitter.feed_lines(b"one\r\n\r\ntwo\r\nthr\r")
    assert lines.texts == ["one", "", "two"]
    assert lines.eols == ["\r\n"] * 3 and not lines.partial and not lines.raw
    assert splitter.pending == 4
    assert list(splitter.feed_lines(b"\nfour\r\n")) == [Line("thr", "\r\n"), Line("four", "\r\n")]


def reference_lines(data: bytes) -> list[Line]:
    """Lines as the module's docstring defines them, one at a time (no cut lines)."""
    lines = []
    for match in re.finditer(rb"([^\r\n]*)(\r\n|\r|\n|$)", data):
        body, eol = match.groups()
        if not body and not eol:
            continue
        raw = body + eol
        try:
            lines.append(Line(body.decode(), eol.decode()))
        except UnicodeDecodeError:
            lines.append(Line(body.decode(errors="replace"), eol.decode(), raw=raw))
    return lines


@st.composite
def terminal_output(draw):
    """Mostly lines ending with \\r\\n, as a pty gives them, and what breaks the pattern."""
    pieces = [b"ab", b"\xc3\xa9", b"\r\n", b"\r\n", b"\r\n", b"\r", b"\n", b"\x0b", b"\xc2\x85"]
    data = b"".join(draw(st.lists(st.sampled_from([*pieces, b"\xff"]), max_size=60)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return data, cut_at(data, cuts)


@settings(max_examples=400, deadline=None)
@given(terminal_output())
def test_terminal_lines_split_as_defined_however_they_are_read(case):
    data, chunks = case
    assert split_all(chunks) == reference_lines(data)
    splitter = LineSplitter()
    lazily = [line for chunk in chunks for line in splitter.feed_lines(chunk, lazy=True)]
    assert lazily + list(splitter.close_lines()) == reference_lines(data)


@pytest.mark.parametrize("lazy", [False, True])
def test_whole_lines_read_together_are_held_as_one_text(lazy):
    lines = LineSplitter().feed_lines(b"one\n\ntwo\nthr", lazy=lazy)
    # Lazy: their count is known without a string per line; the texts come on first
    # asking.
    assert len(lines) == 3
    assert (lines._texts is None) is lazy
    assert lines.joined_text() == ("one\n\ntwo", "\n")
    assert lines.texts == ["one", "", "two"]
    assert lines.eols is None and not lines.partial and not lines.raw
    assert lines.written() == b"one\n\ntwo\n"
    assert list(lines[1:]) == [Line(""), Line("two")]


@pytest.mark.parametrize("lazy", [False, True])
def test_terminal_lines_read_together_are_held_as_one_text(lazy):
    splitter = LineSplitter()
    lines = splitter.feed_lines(b"a\x0bb\r\n\r\nc\xc2\x85d\r\ne\r", lazy=lazy)
    assert (lines._texts is None) is lazy
    assert len(lines) == 3
    assert lines.joined_text() == ("a\x0bb\r\n\r\nc\x85d", "\r\n")
    # Only "\r\n" ends a line here: a vertical tab or NEL is text.
    assert list(lines) == [Line("a\x0bb", "\r\n"), Line("", "\r\n"), Line("c\x85d", "\r\n")]
    assert lines.written() == b"a\x0bb\r\n\r\nc\xc2\x85d\r\n"
    # A lone "\r" or "\n" is a line ending of its own: not one text.
    assert splitter.feed_lines(b"\nf\rg\r\n", lazy=lazy).joined_text() is None
    # Also when the lone ones alternate as the ends of "\r\n" lines would.
    lines = LineSplitter().feed_lines(b"x\ra\n\r\n", lazy=lazy)
    assert lines.joined_text() is None
    assert list(lines) == [Line("x", "\r"), Line("a", "\n"), Line("", "\r\n")]


def test_lines_that_are_not_whole_and_valid_are_not_held_as_one_text():
    assert LineSplitter().feed_lines(b"bad \xff\nok\n").joined_text() is None
    assert LineSplitter(4).feed_lines(b"toolong\n").joined_text() is None
    assert LineSplitter().feed_lines(b"a\r\nb\n").joined_text() is None
    assert Lines(["a", "b"]).joined_text() is None
