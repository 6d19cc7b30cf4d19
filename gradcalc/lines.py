"""Reading JSON Lines input in linear time, with a maximum line length.

``gradcalc batch`` (and each Dask partition) reads its input in chunks and
hands whole lines on in blocks. A line longer than :data:`MAX_LINE_BYTES`
is never held: it becomes one :class:`TooLong` marker in the block stream,
answered by an error line (:func:`too_long_reply`) with its line number, and
the rest of it is skipped without being kept. Each byte is scanned once, so a
100 MB line costs the time to read it, not its square.

Nothing here imports NumPy or the engine: the batch parent process uses it.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterator

MAX_LINE_BYTES = 16 << 20
"""Longest request line answered (a 1 MB formula fits many times over); longer is an error line."""
ENDLESS_FACTOR = 64
"""A line still going on after this many times the maximum (1 GiB by default) ends the input:
``gradcalc batch /dev/zero`` stops instead of skipping zeros forever."""


class TooLong(namedtuple("TooLong", "limit")):
    """In a block stream: one line longer than ``limit`` bytes was skipped here.
    (``collections.namedtuple``: importing ``typing`` costs the batch's start-up ~2 ms.)"""

    __slots__ = ()

    limit: int


class EndlessLine(Exception):
    """The input's last line went on past ``ENDLESS_FACTOR`` times the maximum: reading stopped."""

    def __init__(self, line: int, skipped: int) -> None:
        self.line = line
        self.skipped = skipped
        super().__init__(
            f"input line {line} goes on for more than {skipped:,} bytes without a newline; "
            "the rest of the input is not read"
        )


def too_long_reply(line_number: int | None, limit: int) -> str:
    """The error line (JSON text, no newline) answering a line longer than ``limit`` bytes."""
    where = f"input line {line_number}: " if line_number is not None else ""
    error = {
        "type": "LimitError",
        "message": f"{where}the line is longer than {limit:,} bytes",
        "hint": "raise the maximum with --max-line-bytes",
    }
    return json.dumps({"id": None, "error": error})


def line_blocks(
    read: Callable[[int], bytes | str],
    chunk_bytes: int,
    max_line: int = MAX_LINE_BYTES,
    first_line: int = 1,
    endless_after: int | None = -1,
) -> Iterator[tuple[bytes | TooLong, int]]:
    """(whole lines as UTF-8 bytes, or a :class:`TooLong`; number of their first line).

    ``read(n)`` returns at most ``n`` bytes (``read1``: whatever has arrived),
    empty at the end; text (standard input without a buffer) is encoded. Reads
    are at most ``min(chunk_bytes, max_line)``, so a line inside one read is
    never too long and only lines spanning reads need measuring. A final line
    without a newline is yielded too. Raises :class:`EndlessLine` when a
    skipped line goes on past ``endless_after`` bytes (default
    ``ENDLESS_FACTOR * max_line``; ``None``: never, for a file of known size).
    """
    if endless_after is not None and endless_after < 0:
        endless_after = ENDLESS_FACTOR * max_line
    size = max(1, min(chunk_bytes, max_line))
    pieces: list[bytes] = []  # the line being read, not yet ended
    partial = 0  # its length so far
    skipping = -1  # bytes of a too-long line skipped so far, or -1
    first = first_line
    while True:
        data = read(size)
        if not data:
            break
        if isinstance(data, str):
            data = data.encode("utf-8", errors="replace")
        if skipping >= 0:
            end = data.find(b"\n")
            if end < 0:
                skipping += len(data)
                if endless_after is not None and skipping > endless_after:
                    raise EndlessLine(first - 1, endless_after)
                continue
            skipping = -1
            data = data[end + 1 :]
        cut = data.rfind(b"\n") + 1
        if not cut:
            if partial + len(data) > max_line:
                yield TooLong(max_line), first
                first += 1
                pieces, partial, skipping = [], 0, partial + len(data)
            elif data:
                pieces.append(data)
                partial += len(data)
            continue
        start = 0
        if pieces:
            end = data.find(b"\n")
            if partial + end > max_line:  # the line begun in earlier reads ends here, too long
                yield TooLong(max_line), first
                first += 1
                pieces, partial, start = [], 0, end + 1
        if pieces:
            pieces.append(data[:cut])
            block = b"".join(pieces)
        else:
            block = data[start:cut]
        rest = data[cut:]
        pieces, partial = ([rest], len(rest)) if rest else ([], 0)
        if block:
            yield block, first
            first += block.count(b"\n")
    if pieces and skipping < 0:
        yield b"".join(pieces), first
