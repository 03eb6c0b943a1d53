"""Sans-IO line splitting: bytes in, lines out.

The splitter holds no I/O and no clock. Feed it chunks as they are read and it returns
the lines those chunks complete; call :meth:`LineSplitter.close` at end of stream for the
final line without a newline.

Line endings:

* ``\\n`` and ``\\r\\n`` end a line; :attr:`Line.eol` says which.
* A lone ``\\r`` (a progress bar redrawing itself) also ends a line, with ``eol == "\\r"``,
  so that every redraw is captured and a replay can redraw it the same way. A ``\\r`` at
  the end of a chunk is held until the next byte shows whether ``\\n`` follows.
* A line longer than ``max_line_length`` bytes is cut into pieces of at most that many
  bytes (at a UTF-8 character boundary); every piece but the last has ``partial=True``
  and ``eol == ""``. Memory use is bounded by ``max_line_length`` whatever the input.

Decoding is UTF-8. A line that is not valid UTF-8 is decoded with U+FFFD replacements and
keeps its exact bytes in :attr:`Line.raw`; valid lines have ``raw is None`` (the bytes are
then ``text.encode() + eol``).

Any way of cutting the same bytes into chunks gives the same lines.

Speed: a chunk of ``\\n``-terminated (or all ``\\r\\n``-terminated), valid UTF-8 lines
(the usual case) is decoded once and its lines counted, and they come back as
:class:`Lines` holding that one text (:meth:`Lines.joined`): the list of their texts is
made by one split when first asked for, and :class:`Line` objects only when someone
indexes or iterates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, final, overload

import attrs

DEFAULT_MAX_LINE_LENGTH: Final = 1024 * 1024

_EOLS: Final = {b"\n": "\n", b"\r\n": "\r\n", b"\r": "\r", b"": ""}
_NO_INDEXES: Final[frozenset[int]] = frozenset()
_NO_RAW: Final[Mapping[int, bytes]] = {}


@final
@attrs.frozen(slots=True)
class Line:
    """One captured line, without its line ending.

    Attributes:
        text: the decoded text, without ``eol``.
        eol: ``"\\n"``, ``"\\r\\n"``, ``"\\r"`` or ``""`` (final line at end of stream, or
            a piece of an over-long line).
        partial: True for every piece of an over-long line except its last.
        raw: the exact bytes of the line including ``eol`` when they are not valid UTF-8,
            else None.
    """

    text: str
    eol: str = "\n"
    partial: bool = False
    raw: bytes | None = None

    @property
    def data(self) -> bytes:
        """The exact bytes the child wrote for this line, line ending included."""
        if self.raw is not None:
            return self.raw
        return (self.text + self.eol).encode()


@final
class Lines(Sequence[Line]):
    """Lines read together, held as columns; a sequence of :class:`Line` made on access.

    Lines read whole as one text (:meth:`joined`) keep that text, and make the list of
    their texts only when :attr:`texts` is first read.

    Attributes:
        texts: the decoded text of each line (a list; not to be changed in place).
        eols: the line ending of each line, or None when every line ends with ``"\\n"``.
        partial: the indexes of the pieces of cut lines that are not their line's last.
        raw: the exact bytes of each line that is not valid UTF-8, by index.
    """

    __slots__ = ("_count", "_joined", "_sep", "_texts", "eols", "partial", "raw")

    def __init__(
        self,
        texts: list[str],
        eols: list[str] | None = None,
        partial: frozenset[int] = _NO_INDEXES,
        raw: Mapping[int, bytes] = _NO_RAW,
    ) -> None:
        self._texts: list[str] | None = texts
        self._count = len(texts)
        self._joined: str | None = None
        self._sep = "\n"
        self.eols = eols
        self.partial = partial
        self.raw = raw

    @classmethod
    def joined(cls, text: str, sep: str, count: int, texts: list[str] | None = None) -> Lines:
        """``count`` lines that all end with ``sep`` (``"\\n"`` or ``"\\r\\n"``), whole and
        valid, held as the one text they make joined by ``sep`` (without the last line's
        ending): their list of ``texts`` (``text.split(sep)``) is made when first asked
        for, unless given."""
        lines = cls.__new__(cls)
        lines._texts = texts
        lines._count = count
        lines._joined = text
        lines._sep = sep
        lines.eols = None if sep == "\n" else [sep] * count
        lines.partial = _NO_INDEXES
        lines.raw = _NO_RAW
        return lines

    @property
    def texts(self) -> list[str]:
        """The decoded text of each line."""
        texts = self._texts
        if texts is None:
            assert self._joined is not None
            texts = self._texts = self._joined.split(self._sep)
        return texts

    def joined_text(self) -> tuple[str, str] | None:
        """The lines as one text and the ending that joins them, when they were read as
        such (every line ending with it): see :meth:`joined`."""
        if self._joined is None:
            return None
        return self._joined, self._sep

    @classmethod
    def of(cls, lines: Iterable[Line]) -> Lines:
        """The columns of ``lines`` (returned as they are when already columns)."""
        if isinstance(lines, Lines):
            return lines
        builder = _Builder()
        for line in lines:
            builder.add(line.text, line.eol, line.partial, line.raw)
        return builder.build()

    def eol(self, index: int) -> str:
        return "\n" if self.eols is None else self.eols[index]

    def line(self, index: int) -> Line:
        """Line ``index`` (not negative, in range) as a :class:`Line`."""
        eols = self.eols
        return Line(
            self.texts[index],
            "\n" if eols is None else eols[index],
            index in self.partial,
            self.raw.get(index),
        )

    def part(self, start: int, stop: int) -> Lines:
        """Lines ``start`` to ``stop`` (not negative) as columns of their own."""
        if start == 0 and stop >= self._count:
            return self
        partial = self.partial
        raw = self.raw
        return Lines(
            self.texts[start:stop],
            None if self.eols is None else self.eols[start:stop],
            frozenset(i - start for i in partial if start <= i < stop) if partial else partial,
            {i - start: b for i, b in raw.items() if start <= i < stop} if raw else raw,
        )

    def written(self) -> bytes:
        """The exact bytes of every line, line endings included (as :attr:`Line.data`
        of each, joined), from the columns."""
        if self._joined is not None:
            return (self._joined + self._sep).encode() if self._count else b""
        texts, eols, raw = self.texts, self.eols, self.raw
        if raw:
            return b"".join(
                [
                    raw[i] if i in raw else (t + ("\n" if eols is None else eols[i])).encode()
                    for i, t in enumerate(texts)
                ]
            )
        if eols is None:
            return ("\n".join(texts) + "\n").encode() if texts else b""
        return "".join([t + e for t, e in zip(texts, eols, strict=True)]).encode()

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Line: ...

    @overload
    def __getitem__(self, index: slice) -> Lines: ...

    def __getitem__(self, index: int | slice) -> Line | Lines:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return Lines.of([self.line(i) for i in range(start, stop, step)])
            return self.part(start, max(start, stop))
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("line index out of range")
        return self.line(index)

    def __iter__(self) -> Iterator[Line]:
        if self.eols is None and not self.partial and not self.raw:
            return map(Line, self.texts)
        return map(self.line, range(self._count))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lines):
            return (
                self.texts == other.texts
                and [self.eol(i) for i in range(len(self))]
                == [other.eol(i) for i in range(len(other))]
                and self.partial == other.partial
                and dict(self.raw) == dict(other.raw)
            )
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Lines({list(self)!r})"


@final
class _Builder:
    """Columns gathered line by line (the paths that are not the fast one)."""

    __slots__ = ("eols", "partial", "raw", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.eols: list[str] | None = None
        self.partial: set[int] = set()
        self.raw: dict[int, bytes] = {}

    def add(self, text: str, eol: str, partial: bool = False, raw: bytes | None = None) -> None:
        index = len(self.texts)
        if eol != "\n" and self.eols is None:
            self.eols = ["\n"] * index
        if self.eols is not None:
            self.eols.append(eol)
        if partial:
            self.partial.add(index)
        if raw is not None:
            self.raw[index] = raw
        self.texts.append(text)

    def add_raw(self, data: bytes, eol: bytes, partial: bool = False) -> None:
        """A line from its bytes, ``eol`` included."""
        body = data[: len(data) - len(eol)] if eol else data
        try:
            self.add(body.decode(), _EOLS[eol], partial)
        except UnicodeDecodeError:
            self.add(body.decode(errors="replace"), _EOLS[eol], partial, data)

    def build(self) -> Lines:
        return Lines(
            self.texts,
            self.eols,
            frozenset(self.partial) if self.partial else _NO_INDEXES,
            self.raw or _NO_RAW,
        )


# Every byte but the two of line endings: what bytes.translate deletes to leave only those.
_NOT_LINE_ENDS: Final = bytes(b for b in range(256) if b not in b"\r\n")


def _decode_head(buf: bytes, end: int) -> str:
    """``buf[:end]`` decoded from UTF-8, read in place: slicing a read's bytes first copied
    them into one more large allocation before their text was made.

    Raises:
        UnicodeDecodeError: when those bytes are not valid UTF-8.
    """
    return str(memoryview(buf)[:end], "utf-8")


def _char_boundary(buf: bytes | bytearray, cut: int) -> int:
    """Move ``cut`` back so that it does not split a UTF-8 sequence (at most 3 bytes)."""
    for back in range(min(3, cut - 1) + 1):
        if (buf[cut - back] & 0xC0) != 0x80:
            return cut - back
    return cut


@final
class LineSplitter:
    """Split a byte stream into lines.

    :meth:`feed` and :meth:`close` return lists of :class:`Line`; :meth:`feed_lines` and
    :meth:`close_lines` return the same lines as :class:`Lines` columns (the fast path).

    Args:
        max_line_length: the longest line, in bytes, kept whole (at least 4).
    """

    __slots__ = ("_buf", "_closed", "max_line_length")

    def __init__(self, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        if max_line_length < 4:
            raise ValueError(f"max_line_length must be at least 4, not {max_line_length}")
        self.max_line_length = max_line_length
        self._buf = b""
        self._closed = False

    @property
    def pending(self) -> int:
        """Bytes held for a line not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[Line]:
        """Take the next chunk; return the lines it completes, in order."""
        return list(self.feed_lines(data))

    def close(self) -> list[Line]:
        """End of stream: return the final line(s) still held, if any."""
        return list(self.close_lines())

    def feed_lines(self, data: bytes | bytearray, *, lazy: bool = False) -> Lines:
        """Take the next chunk; return the lines it completes, in order, as columns.

        Whole, valid lines (each ending with ``"\\n"``, or each with ``"\\r\\n"``) come
        as :meth:`Lines.joined`, their list of texts made at once; with ``lazy``, only
        when first asked for (their count is then one more pass over the text: worth it
        when nobody may ask).
        """
        if self._closed:
            raise RuntimeError("feed() after close()")
        if not data:
            return Lines([])
        buf = self._buf + data if self._buf else bytes(data)
        limit = self.max_line_length
        if b"\r" not in buf:
            last = buf.rfind(b"\n")
            if last < 0:
                if len(buf) <= limit:
                    self._buf = buf
                    return Lines([])
            elif len(buf) - last - 1 <= limit:
                # The fast path: whole lines that are valid UTF-8 and short enough.
                try:
                    text = _decode_head(buf, last)
                except UnicodeDecodeError:
                    pass
                else:
                    if last <= limit:
                        self._buf = buf[last + 1 :]
                        if lazy:
                            return Lines.joined(text, "\n", text.count("\n") + 1)
                        texts = text.split("\n")
                        return Lines.joined(text, "\n", len(texts), texts)
                    texts = text.split("\n")
                    if all(len(t) * 4 <= limit for t in texts):
                        self._buf = buf[last + 1 :]
                        return Lines(texts)
        else:
            lines = self._crlf_lines(buf, lazy)
            if lines is not None:
                return lines
        out = _Builder()
        if b"\r" not in buf:
            held = self._split_lf(buf, out)
        else:
            held = self._split_any(buf, out)
        if len(held) > limit:
            # A held "\r" may still become "\r\n": it is a line ending, not line content.
            if held.endswith(b"\r"):
                held = self._cut_long(held[:-1], out) + b"\r"
            else:
                held = self._cut_long(held, out)
        self._buf = held
        return out.build()

    def _crlf_lines(self, buf: bytes, lazy: bool) -> Lines | None:
        """The fast path of a pseudo-terminal's output: whole lines that all end with
        ``\\r\\n``, valid UTF-8 and short enough. None, having changed nothing, otherwise.
        """
        last = buf.rfind(b"\n")
        limit = self.max_line_length
        if last < 1 or buf[last - 1] != 0x0D or len(buf) - last - 1 > limit:
            return None
        # What is held may end with the "\r" of a "\r\n" cut by the read, and hold no
        # other "\r" (a lone one ends a line).
        cr = buf.find(b"\r", last + 1)
        if cr != -1 and cr != len(buf) - 1:
            return None
        # Every "\r" and "\n" is part of a "\r\n" (a lone one ends a line of its own) when
        # there are twice as many of them as of "\r\n", the held "\r" aside. Counted with
        # one bytes.translate that keeps only them, and one count: three counts of the
        # text took a quarter longer.
        count = buf.count(b"\r\n")
        if len(buf.translate(None, _NOT_LINE_ENDS)) - (cr != -1) != 2 * count:
            return None
        try:
            text = _decode_head(buf, last + 1)
        except UnicodeDecodeError:
            return None
        joined = text[:-2]
        texts = None if lazy else joined.split("\r\n")
        if last > limit and not all(len(t) * 4 <= limit for t in texts or joined.split("\r\n")):
            return None
        self._buf = buf[last + 1 :]
        return Lines.joined(joined, "\r\n", count, texts)

    def close_lines(self) -> Lines:
        """End of stream: the final line(s) still held, if any, as columns."""
        self._closed = True
        buf, self._buf = self._buf, b""
        out = _Builder()
        if buf:
            out.add_raw(buf, b"\r" if buf.endswith(b"\r") else b"")
        return out.build()

    def _split_lf(self, buf: bytes, out: _Builder) -> bytes:
        last = buf.rfind(b"\n")
        if last < 0:
            return buf
        complete = buf[:last]
        rest = buf[last + 1 :]
        limit = self.max_line_length
        try:
            texts = complete.decode().split("\n")
        except UnicodeDecodeError:
            for piece in complete.split(b"\n"):
                self._emit(piece + b"\n", b"\n", out)
            return rest
        for t in texts:
            if len(t) * 4 <= limit:
                out.add(t, "\n")
            else:
                self._emit(t.encode() + b"\n", b"\n", out)
        return rest

    def _split_any(self, buf: bytes, out: _Builder) -> bytes:
        parts = buf.splitlines(keepends=True)
        last = parts[-1]
        if last.endswith(b"\n"):
            held = b""
        else:
            # An unfinished line, or a trailing "\r" that may be the first half of "\r\n".
            held = last
            parts.pop()
        for part in parts:
            if part.endswith(b"\r\n"):
                eol = b"\r\n"
            elif part.endswith(b"\n"):
                eol = b"\n"
            else:
                eol = b"\r"
            self._emit(part, eol, out)
        return held

    def _emit(self, raw: bytes, eol: bytes, out: _Builder) -> None:
        """Add one complete line, cut into pieces if it is too long."""
        body_len = len(raw) - len(eol)
        if body_len > self.max_line_length:
            rest = self._cut_long(raw[:body_len], out)
            out.add_raw(rest + eol, eol)
        else:
            out.add_raw(raw, eol)

    def _cut_long(self, buf: bytes, out: _Builder) -> bytes:
        """Add pieces of at most ``max_line_length`` while more is held; return the rest."""
        limit = self.max_line_length
        while len(buf) > limit:
            cut = _char_boundary(buf, limit)
            out.add_raw(buf[:cut], b"", partial=True)
            buf = buf[cut:]
        return buf
