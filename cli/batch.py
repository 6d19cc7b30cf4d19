"""``gradcalc batch``: JSON Lines in, JSON Lines out, in input order, streaming.

Input is read in blocks of whole lines (``read1``: whatever has arrived, up
to :data:`BLOCK_BYTES`), so a slow producer gets each answer as soon as its
line is in, and a file is read in large pieces. Each block goes to
``gradcalc.api.run_block`` (in this process with ``--jobs 1``, else in a
``ProcessPoolExecutor``), which returns the block's finished output lines as
one string: the parent only reads, dispatches and writes, and never imports
NumPy. At most a few blocks per worker are in flight, and results are
written in submission order, so memory stays flat for any input. A progress
bar (lines, rate) goes to standard error only when it is a terminal.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import IO, Any

from gradcalc.cli.run import EXIT_FORMULA, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, silence_stdout
from gradcalc.limits import Limits

BLOCK_BYTES = 1 << 16
"""Most input read (and sent to a worker) at once: ~1,000 small requests, tens of ms of work."""
BLOCKS_IN_FLIGHT_PER_JOB = 4
PROGRESS_INTERVAL = 0.1


def run_batch(
    source: str, jobs: int = 1, progress: bool | None = None, limits: Limits | None = None
) -> int:
    """Process every request of ``source`` (a path or ``-``); exit code 1 if any line failed."""
    try:
        stream, close = _open(source)
    except OSError as exc:
        sys.stderr.write(f"gradcalc batch: cannot read {source!r}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    jobs = jobs or os.cpu_count() or 1
    show_progress = progress if progress is not None else _is_terminal(sys.stderr)
    meter = _Progress() if show_progress else None
    failed = False
    blocks = _blocks(stream)
    results = _sequential(blocks, limits) if jobs == 1 else _parallel(blocks, jobs, limits)
    try:
        write = sys.stdout.write
        flush = sys.stdout.flush
        for text, count, bad in results:
            write(text)
            flush()
            failed = failed or bad > 0
            if meter is not None:
                meter.advance(count, bad)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        results.close()  # stops the workers now, not when the generator is collected
        if meter is not None:
            meter.close()
        if close:
            stream.close()
    return EXIT_FORMULA if failed else EXIT_OK


def _open(source: str) -> tuple[IO[Any], bool]:
    """The input as a binary stream (or standard input's text stream without a buffer),
    and whether it is ours to close."""
    if source == "-":
        return getattr(sys.stdin, "buffer", None) or sys.stdin, False
    return open(source, "rb"), True


def _blocks(stream: IO[Any]) -> Iterator[tuple[bytes, int]]:
    """(whole lines as UTF-8 bytes, number of their first line), lazily, in input order."""
    read = getattr(stream, "read1", None) or stream.read
    carry = b""
    first = 1
    while True:
        data = read(BLOCK_BYTES)
        if not data:
            break
        if isinstance(data, str):  # a text stream standing in for standard input
            data = data.encode("utf-8", errors="replace")
        cut = data.rfind(b"\n") + 1
        if not cut:
            carry += data
            continue
        block = carry + data[:cut] if carry else data[:cut]
        carry = data[cut:]
        yield block, first
        first += block.count(b"\n")
    if carry:
        yield carry, first


def _work(block: bytes, first: int, limits: Limits | None) -> tuple[str, int, int]:
    """One block's output lines (as text), lines answered and lines failed."""
    from gradcalc.api import run_block

    return run_block(block, first, limits)


def _sequential(
    blocks: Iterator[tuple[bytes, int]], limits: Limits | None
) -> Iterator[tuple[str, int, int]]:
    for block, first in blocks:
        yield _work(block, first, limits)


def _parallel(
    blocks: Iterator[tuple[bytes, int]], jobs: int, limits: Limits | None
) -> Iterator[tuple[str, int, int]]:
    """Blocks to a process pool; each block's output as soon as it and those before it are done.

    A reader thread reads ahead (at most :data:`BLOCKS_IN_FLIGHT_PER_JOB` blocks
    per worker not yet written, so memory stays flat); this thread wakes on each
    block read and each block finished, so a result is written even while the
    input is waiting for more lines.
    """
    import queue
    import threading
    from concurrent.futures import ProcessPoolExecutor

    first = next(blocks, None)
    if first is None:
        return
    limit = jobs * BLOCKS_IN_FLIGHT_PER_JOB
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    slots = threading.Semaphore(limit)
    stop = threading.Event()
    pending: deque[Future] = deque()
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_start_worker)

    def submit(block: bytes, first_line: int) -> None:
        future = pool.submit(_work, block, first_line, limits)
        future.add_done_callback(lambda _: events.put(None))
        pending.append(future)

    try:
        slots.acquire()
        submit(*first)  # forks the workers before the reader thread exists
        reader = threading.Thread(
            target=_read_ahead, args=(blocks, events, slots, stop), daemon=True
        )
        reader.start()
        reading = True
        while reading or pending:
            item = events.get()
            if item is _END:
                reading = False
            elif isinstance(item, BaseException):
                raise item
            elif item is not None:
                submit(*item)
            while pending and pending[0].done():
                yield pending.popleft().result()
                slots.release()
    finally:
        stop.set()
        slots.release(limit)  # a reader waiting for room sees the stop
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def _read_ahead(blocks: Iterator[tuple[bytes, int]], events: Any, slots: Any, stop: Any) -> None:
    """The reader thread: put each block on ``events`` once there is room for it."""
    try:
        for item in blocks:
            slots.acquire()
            if stop.is_set():
                return
            events.put(item)
    except Exception as exc:  # an input error ends the batch in the main thread
        events.put(exc)
    finally:
        events.put(_END)


def _start_worker() -> None:
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
