"""Sans-IO line splitting: bytes in, :class:`Line` objects out.

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
"""

from __future__ import annotations

from typing import Final, final

import attrs

DEFAULT_MAX_LINE_LENGTH: Final = 1024 * 1024

_EOLS: Final = {b"\n": "\n", b"\r\n": "\r\n", b"\r": "\r", b"": ""}


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


def _decode(raw: bytes, eol: bytes, partial: bool = False) -> Line:
    body = raw[: len(raw) - len(eol)] if eol else raw
    try:
        return Line(body.decode(), _EOLS[eol], partial)
    except UnicodeDecodeError:
        return Line(body.decode(errors="replace"), _EOLS[eol], partial, raw)


def _char_boundary(buf: bytes | bytearray, cut: int) -> int:
    """Move ``cut`` back so that it does not split a UTF-8 sequence (at most 3 bytes)."""
    for back in range(min(3, cut - 1) + 1):
        if (buf[cut - back] & 0xC0) != 0x80:
            return cut - back
    return cut


@final
class LineSplitter:
    """Split a byte stream into :class:`Line` objects.

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

    def feed(self, data: bytes) -> list[Line]:
        """Take the next chunk; return the lines it completes, in order."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        if not data:
            return []
        buf = self._buf + data if self._buf else bytes(data)
        out: list[Line] = []
        if b"\r" not in buf:
            self._buf = self._split_lf(buf, out)
        else:
            self._buf = self._split_any(buf, out)
        held = self._buf
        if len(held) > self.max_line_length:
            # A held "\r" may still become "\r\n": it is a line ending, not line content.
            if held.endswith(b"\r"):
                self._buf = self._cut_long(held[:-1], out) + b"\r"
            else:
                self._buf = self._cut_long(held, out)
        return out

    def close(self) -> list[Line]:
        """End of stream: return the final line(s) still held, if any."""
        self._closed = True
        buf, self._buf = self._buf, b""
        if not buf:
            return []
        if buf.endswith(b"\r"):
            return [_decode(buf, b"\r")]
        return [_decode(buf, b"")]

    def _split_lf(self, buf: bytes, out: list[Line]) -> bytes:
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
        if len(complete) <= limit or all(len(t) * 4 <= limit for t in texts):
            out.extend([Line(t) for t in texts])
        else:
            for t in texts:
                if len(t) * 4 <= limit:
                    out.append(Line(t))
                else:
                    self._emit(t.encode() + b"\n", b"\n", out)
        return rest

    def _split_any(self, buf: bytes, out: list[Line]) -> bytes:
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

    def _emit(self, raw: bytes, eol: bytes, out: list[Line]) -> None:
        """Append one complete line, cut into pieces if it is too long."""
        body_len = len(raw) - len(eol)
        if body_len > self.max_line_length:
            rest = self._cut_long(raw[:body_len], out)
            out.append(_decode(rest + eol, eol))
        else:
            out.append(_decode(raw, eol))

    def _cut_long(self, buf: bytes, out: list[Line]) -> bytes:
        """Emit pieces of at most ``max_line_length`` while more is held; return the rest."""
        limit = self.max_line_length
        while len(buf) > limit:
            cut = _char_boundary(buf, limit)
            out.append(_decode(buf[:cut], b"", partial=True))
            buf = buf[cut:]
        return buf
