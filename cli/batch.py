"""``gradcalc batch``: JSON Lines in, JSON Lines out, in input order, streaming.

Lines are read lazily and results written (and flushed) as they are
computed, so memory stays flat for any number of lines. With ``--jobs N > 1``
chunks of lines go to a ``ProcessPoolExecutor`` running
``gradcalc.api.run_lines``; at most a few chunks per worker are in flight,
and results are written in submission order. A progress bar (lines, rate)
goes to standard error only when it is a terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from itertools import islice
from typing import IO, Any

from gradcalc.cli.run import EXIT_FORMULA, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, silence_stdout
from gradcalc.limits import Limits

CHUNK_LINES = 64
"""Lines per task sent to a worker: large enough to hide the IPC cost, small enough to stream."""
CHUNKS_IN_FLIGHT_PER_JOB = 4
PROGRESS_INTERVAL = 0.1


def run_batch(
    source: str, jobs: int = 1, progress: bool | None = None, limits: Limits | None = None
) -> int:
    """Process every request of ``source`` (a path or ``-``); exit code 1 if any line failed."""
    try:
        stream = _open(source)
    except OSError as exc:
        sys.stderr.write(f"gradcalc batch: cannot read {source!r}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    jobs = jobs or os.cpu_count() or 1
    show_progress = progress if progress is not None else _is_terminal(sys.stderr)
    meter = _Progress() if show_progress else None
    failed = False
    try:
        numbered = _requests(stream)
        results = _sequential(numbered, limits) if jobs == 1 else _parallel(numbered, jobs, limits)
        write = sys.stdout.write
        flush = sys.stdout.flush
        for replies in results:
            write("".join(text + "\n" for text, _ in replies))
            flush()
            bad = sum(not ok for _, ok in replies)
            failed = failed or bad > 0
            if meter is not None:
                meter.advance(len(replies), bad)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if meter is not None:
            meter.close()
        _release(stream, source)
    return EXIT_FORMULA if failed else EXIT_OK


def _open(source: str) -> IO[str]:
    if source == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            return sys.stdin
        return io.TextIOWrapper(buffer, encoding="utf-8", errors="replace")
    return open(source, encoding="utf-8", errors="replace")


def _release(stream: IO[str], source: str) -> None:
    """Close a file we opened; leave standard input open (detach our wrapper from it)."""
    if source != "-":
        stream.close()
    elif isinstance(stream, io.TextIOWrapper) and stream is not sys.stdin:
        with contextlib.suppress(ValueError):
            stream.detach()


def _requests(stream: IO[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) for every non-blank line, lazily."""
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def _sequential(
    numbered: Iterable[tuple[int, str]], limits: Limits | None
) -> Iterator[list[tuple[str, bool]]]:
    """One line at a time, so each result is written as soon as it is computed."""
    from gradcalc.api import run_line

    for number, line in numbered:
        yield [run_line(line, number, limits)]


def _parallel(
    numbered: Iterator[tuple[int, str]], jobs: int, limits: Limits | None
) -> Iterator[list[tuple[str, bool]]]:
    """Chunks to a process pool with bounded look-ahead; each chunk's results, in input order."""
    from concurrent.futures import ProcessPoolExecutor

    from gradcalc.api import run_lines

    pending: deque[Future] = deque()
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_ignore_interrupts)
    try:
        while True:
            chunk = list(islice(numbered, CHUNK_LINES))
            if chunk:
                pending.append(pool.submit(run_lines, chunk, limits))
            while pending and (not chunk or len(pending) >= jobs * CHUNKS_IN_FLIGHT_PER_JOB):
                yield pending.popleft().result()
            if not chunk:
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops the batch without their tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Progress:
    """Lines done, failures and rate on standard error, redrawn at most every 0.1 s.

    Refreshed by hand (no background thread), so forking worker processes stays safe.
    """

    def __init__(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from gradcalc.cli.render import make_console

        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()
        self.last_draw = 0.0
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.completed:,} lines"),
            TextColumn("{task.fields[failed]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=make_console(sys.stderr),
            auto_refresh=False,
            transient=False,
        )
        self.task = self.bar.add_task("batch", total=None, failed="", rate="")
        self.bar.start()

    def advance(self, done: int, failed: int) -> None:
        self.done += done
        self.failed += failed
        now = time.perf_counter()
        if now - self.last_draw >= PROGRESS_INTERVAL:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self.last_draw = now
        elapsed = max(now - self.started, 1e-9)
        self.bar.update(
            self.task,
            completed=self.done,
            failed=f"{self.failed:,} failed" if self.failed else "",
            rate=f"{self.done / elapsed:,.0f} lines/s",
        )
        self.bar.refresh()

    def close(self) -> None:
        try:
            self._draw(time.perf_counter())
            self.bar.stop()
        except (OSError, ValueError):
            pass
