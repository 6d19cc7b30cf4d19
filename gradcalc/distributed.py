"""``gradcalc batch`` on a Dask cluster: JSON Lines files cut into byte ranges, one task each.

The input never passes through one machine: :func:`plan` only looks at file
sizes and cuts each file into :class:`Partition` byte ranges; each worker
reads its own range from the (shared) file system. A partition owns the lines
that *start* inside its range (Dask's ``read_text`` rule), so every line
belongs to exactly one partition however the cuts fall.

Error lines name their input line (``input line 12: not valid JSON``), as
plain ``gradcalc batch`` does, and line numbers restart with every file. A
worker learns the number of its first line from the newlines before its
range: :func:`count_newlines` (a fast first pass, one task per partition
but the last of each file) gives them, and :func:`run` adds them up.

:func:`run_partition` is the per-partition function: public, picklable, it
never raises for a bad line (that is an error line, as in ``run_block``).
With ``output_dir`` it writes the partition's results to
``output_dir/partition.name`` (through a temporary file renamed into place,
so a partition recomputed after a worker was lost replaces its file rather
than adding to it) and returns only counts; without, it returns the result
lines, and :func:`run` hands them back in input order.

Nothing here imports Dask until :func:`connect` or :func:`run` is called.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from gradcalc.limits import Limits
from gradcalc.lines import MAX_LINE_BYTES, TooLong, line_blocks, too_long_reply

DEFAULT_PARTITION_BYTES = 8 << 20
"""Largest partition :func:`plan` makes: a few seconds of work, a few tens of MB of results."""
MIN_PARTITION_BYTES = 64 << 10
"""Smallest partition :func:`plan` makes when it spreads a small input over the workers."""
PARTITIONS_PER_WORKER = 4
"""Partitions per worker thread :func:`plan` aims for, so a slow or lost one is a small part."""
READ_BYTES = 1 << 20
"""Bytes read (and answered by ``run_block``) at once inside a partition."""
TAIL_BYTES = 1 << 16
"""Bytes read at once to find where a line starts."""
INSTALL_HINT = "pip install 'gradcalc[dask]'"


class DaskMissing(ImportError):
    """``--dask`` was asked for but Dask (``dask[distributed]``) is not installed."""

    def __init__(self, cause: ImportError | None = None) -> None:
        missing = getattr(cause, "name", None)
        detail = "" if cause is None or missing in _DASK_MODULES else f" ({cause})"
        super().__init__(
            f"Dask (dask[distributed]) is not installed{detail}; install it with: {INSTALL_HINT}"
        )


_DASK_MODULES = {None, "dask", "distributed", "dask.distributed"}


class PartitionFailed(RuntimeError):
    """A partition's task failed on the cluster (after Dask's own retries)."""

    def __init__(self, partition: Partition, cause: BaseException) -> None:
        self.partition = partition
        self.cause = cause
        hint = ""
        if isinstance(cause, OSError):
            hint = " (every worker must see the input files, and --output-dir, at the same path)"
        super().__init__(
            f"partition {partition.index} ({partition.path}, bytes {partition.start:,}-"
            f"{partition.end:,}) failed: {type(cause).__name__}: {cause}{hint}"
        )


@dataclass(frozen=True, slots=True)
class Partition:
    """The lines of ``path`` that start at a byte offset in ``[start, end)``.

    ``index`` is its place in the whole input (files in the order given);
    ``name`` the results file it gets with an output directory (names sort
    in input order). ``newlines_before`` counts the newlines in
    ``[0, start)``, for line numbers; ``None`` lets the worker count them.
    """

    path: str
    start: int
    end: int
    index: int
    name: str
    last_in_file: bool = True
    newlines_before: int | None = None


class PartitionResult(NamedTuple):
    """What :func:`run_partition` returns: the result lines (empty when written to a file),
    lines answered, lines failed."""

    text: bytes
    lines: int
    failed: int


def partition_bytes_for(total_bytes: int, workers: int, largest: int | None = None) -> int:
    """A partition size giving each of ``workers`` threads a few partitions of this input."""
    largest = largest or DEFAULT_PARTITION_BYTES
    spread = -(-total_bytes // max(1, workers * PARTITIONS_PER_WORKER))
    return max(1, min(largest, max(MIN_PARTITION_BYTES, spread)))


def plan(paths: Sequence[str], partition_bytes: int) -> list[Partition]:
    """Cut each file into byte ranges of at most ``partition_bytes``, in input order.

    Reads nothing but the sizes; paths become absolute, since workers may run
    elsewhere (they must see the same files). An empty file has no partition.
    """
    if partition_bytes < 1:
        raise ValueError("partition_bytes must be positive")
    ranges: list[tuple[str, int, int, bool]] = []
    for path in paths:
        full = os.path.abspath(path)
        size = os.path.getsize(full)
        starts = range(0, size, partition_bytes)
        for start in starts:
            end = min(start + partition_bytes, size)
            ranges.append((full, start, end, end == size))
    width = max(5, len(str(max(len(ranges) - 1, 0))))
    return [
        Partition(
            path=path,
            start=start,
            end=end,
            index=index,
            name=f"{index:0{width}d}-{_stem(path)}.jsonl",
            last_in_file=last,
        )
        for index, (path, start, end, last) in enumerate(ranges)
    ]


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".jsonl", ".ndjson", ".json", ".txt"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base or "input"


# ---------------------------------------------------------------- worker side


def count_newlines(partition: Partition) -> int:
    """Newlines in the partition's byte range ``[start, end)`` (the first pass)."""
    return _count(partition.path, partition.start, partition.end)


def _count(path: str, start: int, end: int) -> int:
    count = 0
    with open(path, "rb") as stream:
        stream.seek(start)
        left = end - start
        while left > 0:
            data = stream.read(min(READ_BYTES, left))
            if not data:
                break
            count += data.count(b"\n")
            left -= len(data)
    return count


def run_partition(
    partition: Partition,
    output_dir: str | None = None,
    limits: Limits | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> PartitionResult:
    """Answer every request the partition owns, as ``gradcalc batch`` answers it.

    Returns the result lines (UTF-8, each ending in a newline) with the counts,
    or, with ``output_dir``, writes them to ``output_dir/partition.name`` and
    returns empty text. A bad line, or one longer than ``max_line_bytes``, is
    an error line; only an unreadable input or output raises (``OSError``).
    """
    from gradcalc.api import run_block

    before = partition.newlines_before
    if before is None:
        before = _count(partition.path, 0, partition.start)
    answered = failed = 0
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(partition.path, "rb"))
        sink, finish = (
            _atomic_writer(stack, output_dir, partition.name) if output_dir else (None, None)
        )
        pieces: list[bytes] = []
        for block, line in _owned_blocks(stream, partition, before, max_line_bytes):
            if isinstance(block, TooLong):
                text, count, bad = too_long_reply(line, block.limit) + "\n", 1, 1
            else:
                text, count, bad = run_block(block, line, limits)
            answered += count
            failed += bad
            if text:
                data = text.encode("utf-8")
                if sink is not None:
                    sink.write(data)
                else:
                    pieces.append(data)
        if finish is not None:
            finish()
    return PartitionResult(b"".join(pieces), answered, failed)


def _atomic_writer(stack: contextlib.ExitStack, directory: str, name: str) -> tuple[Any, Any]:
    """A temporary file in ``directory`` and the function that renames it to ``name``."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by the stack or finish)
        mode="wb", dir=directory, prefix=f".{name}.", suffix=".part", delete=False
    )
    done = False

    def finish() -> None:
        nonlocal done
        handle.close()
        os.replace(handle.name, os.path.join(directory, name))
        done = True

    def cleanup() -> None:
        if not done:
            handle.close()
            with contextlib.suppress(OSError):
                os.unlink(handle.name)

    stack.callback(cleanup)
    return handle, finish


def _owned_blocks(
    stream: Any, partition: Partition, newlines_before: int, max_line: int
) -> Iterator[tuple[bytes | TooLong, int]]:
    """(whole lines or ``TooLong``, number of their first line) for the partition's lines.

    A line starts at offset 0 and after every newline; the partition owns those
    starting in ``[start, end)``: the bytes from the first line start at or
    after ``start`` to the first at or after ``end`` (or the end of the file),
    read as ``gradcalc batch`` reads its input (``gradcalc.lines``).
    """
    begin = _line_start_from(stream, partition.start)
    if begin >= partition.end:
        return
    stop = _line_start_from(stream, partition.end)
    stream.seek(begin)
    left = stop - begin

    def read(size: int) -> bytes:
        nonlocal left
        data = stream.read(min(size, left)) if left > 0 else b""
        left -= len(data)
        return data

    first = newlines_before + (1 if begin > partition.start else 0) + 1
    yield from line_blocks(read, READ_BYTES, max_line, first, endless_after=None)


def _line_start_from(stream: Any, offset: int) -> int:
    """The first offset at or after ``offset`` where a line starts (or the file's end)."""
    if offset == 0:
        return 0
    pos = offset - 1
    stream.seek(pos)
    while True:  # to just past the first newline at or after offset - 1
        data = stream.read(TAIL_BYTES)
        if not data:
            return pos
        found = data.find(b"\n")
        if found >= 0:
            return pos + found + 1
        pos += len(data)


# ---------------------------------------------------------------- client side


@contextlib.contextmanager
def connect(address: str, workers: int = 1, timeout: float = 10.0) -> Iterator[Any]:
    """A ``dask.distributed.Client``: of the scheduler at ``address``, or, for ``"local"``,
    of a new ``LocalCluster`` of ``workers`` single-threaded processes on 127.0.0.1 only
    (closed, with its processes, on exit)."""
    address = check_address(address)
    distributed = import_dask()
    if address == "local":
        import logging

        cluster = distributed.LocalCluster(
            n_workers=max(1, workers),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            # Its HTTP server runs without a dashboard too, by default on port 8787: a free
            # port instead, so that two runs (or another cluster) never collide.
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
        with cluster:
            try:
                with distributed.Client(cluster, set_as_default=False) as client:
                    yield client
            except BaseException:  # Ctrl-C, SIGTERM: do not let runaway tasks delay the end
                _stop_workers_now(cluster)
                raise
    else:
        with distributed.Client(address, timeout=timeout, set_as_default=False) as client:
            yield client


def _stop_workers_now(cluster: Any, grace: float = 0.3) -> None:
    """Close a LocalCluster's workers, killing within ``grace`` seconds any still running
    a task (a nanny otherwise waits 4 s for it before killing its worker)."""
    import asyncio

    async def close_all() -> None:
        nannies = list(cluster.workers.values())
        await asyncio.gather(*(n.close(timeout=grace) for n in nannies), return_exceptions=True)

    with contextlib.suppress(Exception):
        cluster.sync(close_all)


def check_address(address: str) -> str:
    """``address`` if it is ``local`` or a scheduler address (``tcp://HOST:PORT``,
    ``HOST:PORT``, other Dask protocols), else ``ValueError`` saying what is expected."""
    address = address.strip()
    if address == "local" or _ADDRESS.fullmatch(address):
        return address
    raise ValueError(
        f"--dask expects a scheduler address such as tcp://127.0.0.1:8786, or 'local'; "
        f"got {address!r}"
    )


_ADDRESS = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+):\d{1,5}")


def import_dask() -> Any:
    """``dask.distributed``, or :class:`DaskMissing` saying how to install it."""
    try:
        import dask.distributed as distributed
    except ImportError as exc:
        raise DaskMissing(exc) from None
    return distributed


def worker_threads(client: Any) -> int:
    """Threads across the cluster's workers now (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def number_lines(client: Any, partitions: Sequence[Partition]) -> list[Partition]:
    """The partitions with ``newlines_before`` filled in, counted by the workers."""
    todo = [p for p in partitions if not p.last_in_file]
    counts = dict(
        zip(
            (p.index for p in todo),
            client.gather(client.map(count_newlines, todo, pure=False)) if todo else [],
            strict=True,
        )
    )
    numbered = []
    before = 0
    previous_path = None
    for part in partitions:
        if part.path != previous_path or part.start == 0:
            before = 0
            previous_path = part.path
        numbered.append(replace(part, newlines_before=before))
        if not part.last_in_file:
            before += counts[part.index]
    return numbered


def run(
    client: Any,
    partitions: Sequence[Partition],
    output_dir: str | None = None,
    limits: Limits | None = None,
    window: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[Partition, PartitionResult]]:
    """Run every partition on the cluster; yield each with its result, in input order.

    Without ``output_dir`` at most ``window`` partitions (default: twice the
    worker threads, at least 4) are submitted and not yet yielded, so memory
    stays flat whatever the input's size. Each partition is yielded exactly once,
    whatever Dask recomputed after losing a worker. Raises
    :class:`PartitionFailed` when Dask gives a partition up.
    """
    partitions = number_lines(client, partitions)
    if window is None:
        window = max(4, 2 * worker_threads(client))
    if output_dir is not None:
        window = len(partitions) or 1  # results are counts: submit everything at once
    todo: Iterator[Partition] = iter(partitions)
    pending: deque[tuple[Partition, Any]] = deque()

    def submit(count: int) -> None:
        for part in _take(todo, count):
            future = client.submit(
                run_partition, part, output_dir, limits, max_line_bytes, pure=False
            )
            pending.append((part, future))

    submit(window)
    try:
        while pending:
            part, future = pending.popleft()
            try:
                result = future.result()
            except Exception as exc:  # the task's error, KilledWorker, a cancelled future
                raise PartitionFailed(part, exc) from exc
            finally:
                future.release()
            submit(1)
            yield part, result
    finally:
        for _, future in pending:
            future.cancel()


def _take(items: Iterator[Partition], count: int) -> Iterable[Partition]:
    for _ in range(count):
        item = next(items, None)
        if item is None:
            return
        yield item
