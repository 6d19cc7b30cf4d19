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

import contextlib
import io
import os
import signal
import stat
import sys
import time
from collections import deque
from collections.abc import Iterator

from gradcalc.cli.run import EXIT_FORMULA, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, silence_stdout
from gradcalc.limits import Limits
from gradcalc.lines import MAX_LINE_BYTES, EndlessLine, TooLong, line_blocks, too_long_reply

TYPE_CHECKING = False  # (not typing's, nor concurrent.futures at start-up: ~7 ms of --jobs 1)
if TYPE_CHECKING:
    from concurrent.futures import Future
    from typing import IO, Any

BLOCK_BYTES = 1 << 16
"""Most input read (and sent to a worker) at once: ~1,000 small requests, tens of ms of work."""
BLOCKS_IN_FLIGHT_PER_JOB = 4
PROGRESS_INTERVAL = 0.1


EXIT_TERMINATED = 128 + signal.SIGTERM


def run_batch(
    source: str,
    jobs: int = 1,
    progress: bool | None = None,
    limits: Limits | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    force_jobs: bool = False,
) -> int:
    """Process every request of ``source`` (a path or ``-``); exit code 1 if any line failed.

    ``jobs`` (0: one per core) is capped at the cores available unless
    ``force_jobs``. SIGINT and SIGTERM end the workers and return at once
    (exit codes 130 and 143).
    """
    if sys.stdout is None:
        _complain("standard output is closed: there is nowhere to write the results")
        return EXIT_USAGE
    try:
        stream, close = _open(source)
    except OSError as exc:
        _complain(f"cannot read {source!r}: {exc.strerror or exc}")
        return EXIT_USAGE
    jobs = cap_jobs(jobs, force_jobs)
    write = sys.stdout.write  # before anything could replace sys.stdout
    flush = sys.stdout.flush
    show_progress = progress if progress is not None else progress_wanted()
    meter = _Progress() if show_progress else None
    failed = False
    blocks = _blocks(stream, max_line_bytes)
    results = _sequential(blocks, limits) if jobs == 1 else _parallel(blocks, jobs, limits)
    try:
        with sigterm_raises():
            for text, count, bad in results:
                try:
                    write(text)
                    flush()
                except BrokenPipeError:
                    raise
                except OSError as exc:  # > /dev/full, a full disk
                    raise CannotWrite(exc) from exc
                failed = failed or bad > 0
                if meter is not None:
                    meter.advance(count, bad)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except CannotWrite as exc:
        silence_stdout()  # what is left in stdout's buffer must not fail again at exit
        _complain(str(exc))
        return EXIT_FORMULA
    except OSError as exc:
        _complain(f"cannot read {source!r}: {exc.strerror or exc}")
        return EXIT_FORMULA
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED
    except EndlessLine as exc:
        sys.stderr.write(f"gradcalc batch: {exc}\n")
        return EXIT_FORMULA
    finally:
        results.close()  # stops the workers now, not when the generator is collected
        if meter is not None:
            meter.close()
        if close:
            stream.close()
    return EXIT_FORMULA if failed else EXIT_OK


class CannotWrite(Exception):
    """Writing the results failed (other than the reader going away)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(f"cannot write the results: {cause.strerror or cause}")


def _complain(message: str) -> None:
    if sys.stderr is not None:
        sys.stderr.write(f"gradcalc batch: {message}\n")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cap_jobs(jobs: int, force: bool = False) -> int:
    """``jobs`` worker processes (0: one per core), at most one per core unless forced."""
    cores = available_cores()
    if not jobs:
        return cores
    return jobs if force else min(jobs, cores)


def progress_wanted(stdout: Any = None, stderr: Any = None) -> bool:
    """The default for the progress bar: standard error is a terminal, and standard output
    (the results) is not that same terminal, where the bar would be drawn over them."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    if not _is_terminal(stderr):
        return False
    if not _is_terminal(stdout):
        return True
    try:
        return os.fstat(stdout.fileno()).st_rdev != os.fstat(stderr.fileno()).st_rdev
    except (OSError, ValueError, AttributeError):
        return False


class Terminated(BaseException):
    """SIGTERM arrived: unwinds the batch like Ctrl-C, so that the workers are ended too."""


class sigterm_raises:
    """While the batch runs (in the main thread), SIGTERM raises :class:`Terminated`."""

    def __enter__(self) -> None:
        self.previous = None
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise Terminated()


def _open(source: str) -> tuple[IO[Any], bool]:
    """The input as a binary stream (or standard input's text stream without a buffer),
    and whether it is ours to close."""
    if source == "-":
        if sys.stdin is None:
            raise OSError("standard input is closed")
        try:
            # Its file descriptor, unbuffered: the reader thread may still be waiting in a
            # read when the batch ends (Ctrl-C), and a thread inside sys.stdin's buffer then
            # aborts the interpreter's shutdown ("could not acquire lock ... <stdin>").
            return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False), True
        except (AttributeError, OSError, ValueError):  # no descriptor (a test's stand-in)
            return getattr(sys.stdin, "buffer", None) or sys.stdin, False
    return open(source, "rb"), True


def _blocks(
    stream: IO[Any], max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[bytes | TooLong, int]]:
    """(whole lines as UTF-8 bytes, number of their first line), lazily, in input order;
    a line longer than ``max_line`` comes as a ``TooLong`` (see ``gradcalc.lines``)."""
    read = getattr(stream, "read1", None) or stream.read
    endless = None if _is_regular_file(stream) else -1  # a file's last line ends with it
    return line_blocks(read, BLOCK_BYTES, max_line, endless_after=endless)


def _is_regular_file(stream: IO[Any]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def _work(block: bytes | TooLong, first: int, limits: Limits | None) -> tuple[str, int, int]:
    """One block's output lines (as text), lines answered and lines failed."""
    if isinstance(block, TooLong):
        return too_long_reply(first, block.limit) + "\n", 1, 1
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
    from concurrent.futures.process import BrokenProcessPool

    first = next(blocks, None)
    if first is None:
        return
    limit = jobs * BLOCKS_IN_FLIGHT_PER_JOB
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    slots = threading.Semaphore(limit)
    stop = threading.Event()
    pending: deque[tuple[Future, bytes | TooLong, int]] = deque()
    pool = _pool(jobs)

    def submit(block: bytes | TooLong, first_line: int) -> None:
        future = pool.submit(_work, block, first_line, limits)
        future.add_done_callback(lambda _: events.put(None))
        pending.append((future, block, first_line))

    failure: BaseException | None = None
    reading = True
    try:
        slots.acquire()
        submit(*first)  # forks the workers before the reader thread exists
        reader = threading.Thread(
            target=_read_ahead, args=(blocks, events, slots, stop), daemon=True
        )
        reader.start()
        while reading or pending:
            item = events.get()
            if item is _END:
                reading = False
            elif isinstance(item, BaseException):
                failure = item  # raised once every block read before it is written
            elif item is not None:
                submit(*item)
            while pending and pending[0][0].done():
                future = pending[0][0]
                try:
                    result = future.result()
                except BrokenProcessPool:  # a worker died: answer what it held line by line
                    pool.terminate()
                    pool.shutdown()
                    for result in _after_a_worker_died(list(pending), limits):
                        pending.popleft()
                        yield result
                        slots.release()
                    pool = _pool(jobs)
                    continue
                pending.popleft()
                yield result
                slots.release()
        if failure is not None:
            raise failure
    finally:
        stop.set()
        slots.release(limit)  # a reader waiting for room sees the stop
        if reading or pending:  # ended early (Ctrl-C, SIGTERM, a closed pipe): end the workers
            pool.terminate()
        pool.shutdown()


class _Pool:
    """A process pool that knows its worker processes: to end them at once (a runaway
    request must not keep the batch alive), and to say how one died."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers: list[Any] = []
        context = _RecordingContext(multiprocessing.get_context(), self.workers)
        self.executor = ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_start_worker
        )

    def submit(self, *args: Any) -> Future:
        return self.executor.submit(*args)

    def terminate(self) -> None:
        """SIGTERM to every worker still running."""
        for process in self.workers:
            with contextlib.suppress(Exception):
                if process.is_alive():
                    process.terminate()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def how_a_worker_died(self) -> str:
        for process in self.workers:
            with contextlib.suppress(Exception):
                process.join(1)
            code = process.exitcode
            # The pool's own thread may reap the process first: our wait then finds no
            # child and reads no code until that thread records it, a moment later.
            for _ in range(50):
                if code is not None:
                    break
                time.sleep(0.02)
                code = process.exitcode
            if code is not None and code < 0:
                with contextlib.suppress(ValueError):
                    return f"killed by {signal.Signals(-code).name}"
            if code == EXIT_TIMED_OUT:
                return TIMED_OUT
            if code:
                return f"exit code {code}"
        return "it ended"


class _RecordingContext:
    """A multiprocessing context that records each process it makes (public API only)."""

    def __init__(self, context: Any, made: list[Any]) -> None:
        self.context = context
        self.made = made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # multiprocessing's name
        process = self.context.Process(*args, **kwargs)
        self.made.append(process)
        return process


def _pool(jobs: int) -> _Pool:
    return _Pool(jobs)


def _after_a_worker_died(
    blocks: list[tuple[Future, bytes | TooLong, int]], limits: Limits | None
) -> Iterator[tuple[str, int, int]]:
    """Each block's answer once the pool broke: its result if it had one, else its lines
    answered one at a time in a pool of one worker, and a line that kills that worker too
    answered by an error line with its id (the batch goes on)."""
    from concurrent.futures.process import BrokenProcessPool

    pool = None
    try:
        for future, block, first in blocks:
            if not future.cancelled() and future.exception() is None:
                yield future.result()
                continue
            if isinstance(block, TooLong):
                yield _work(block, first, limits)
                continue
            texts: list[str] = []
            answered = failed = 0
            for number, line in enumerate(block.split(b"\n"), start=first):
                if not line.strip():
                    continue
                pool = pool or _pool(1)
                try:
                    text, count, bad = pool.submit(_work, line, number, limits).result()
                except BrokenProcessPool:
                    how = pool.how_a_worker_died()
                    pool.shutdown()
                    pool = None
                    text, count, bad = _died_reply(line, number, how) + "\n", 1, 1
                texts.append(text)
                answered += count
                failed += bad
            yield "".join(texts), answered, failed
    finally:
        if pool is not None:
            pool.shutdown()


def _died_reply(line: bytes, number: int, how: str) -> str:
    """The error line for a request whose worker died answering it, with its id if it has one."""
    import json
    import math

    request_id = None
    with contextlib.suppress(Exception):
        request = json.loads(line)
        if isinstance(request, dict):
            request_id = request.get("id")
    if not (
        request_id is None
        or type(request_id) in (str, int, bool)
        or (type(request_id) is float and math.isfinite(request_id))
    ):
        request_id = None
    message = (
        f"input line {number}: the worker process answering this request died ({how}); "
        "it may need more memory than the machine has"
    )
    error = {"type": "LimitError", "message": message}
    if how == TIMED_OUT:
        from gradcalc.limits import hint_for

        message = (
            f"input line {number}: the request ran past its timeout inside one long computation"
        )
        error = {"type": "LimitError", "message": message, "hint": hint_for("timeout", "batch")}
    return json.dumps({"id": request_id, "error": error})


_END = object()
TIMED_OUT = "timed out"


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


EXIT_TIMED_OUT = 124
"""A worker's exit code when its watchdog ended it (as timeout(1) exits)."""
HARD_STOP_GRACE = 2.0
"""Seconds past a request's ``--timeout`` before its worker's watchdog ends the worker."""


def _watch_worker() -> None:
    """A worker's watchdog thread: a request stuck past its timeout inside one long call
    (no check between operations can stop it) ends the worker; the parent then answers
    that request with an error line (`_after_a_worker_died`) and goes on."""
    from gradcalc.limits import end_process, overdue

    while True:
        time.sleep(0.25)
        if overdue(HARD_STOP_GRACE):
            end_process(EXIT_TIMED_OUT)


def _start_worker() -> None:
    """Workers leave Ctrl-C to the parent, which stops the batch without their tracebacks
    (and ends them); on Linux they also end if the parent dies without doing so. Each
    has a watchdog (`_watch_worker`)."""
    import threading

    threading.Thread(target=_watch_worker, daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, forked with it
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
            redirect_stdout=False,  # the results go to standard output, never into the bar
            redirect_stderr=False,
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
