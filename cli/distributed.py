"""``gradcalc batch FILE... [--dask ADDRESS] [--output-dir DIR]``: several files, or a cluster.

Without ``--dask``, several files run one after the other, each exactly as
``gradcalc batch FILE`` runs it (line numbers restart with each file). With
``--dask``, the files (and quoted globs) are cut into partitions that Dask
workers answer (``gradcalc.distributed``); the results go to standard
output in input order, byte for byte what the plain runs write, or with
``--output-dir`` into one file per partition, written by the workers.
Dask is imported only here, and only with ``--dask``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import time
from collections.abc import Sequence

from gradcalc.cli.batch import (
    EXIT_TERMINATED,
    CannotWrite,
    Terminated,
    cap_jobs,
    progress_wanted,
    sigterm_raises,
)
from gradcalc.cli.run import EXIT_FORMULA, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, silence_stdout
from gradcalc.limits import Limits
from gradcalc.lines import MAX_LINE_BYTES

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


class Usage(Exception):
    """A command line that cannot run as given (exit code 2); the message says why."""


def run_batch_files(
    sources: Sequence[str],
    *,
    dask: str | None = None,
    jobs: int = 1,
    force_jobs: bool = False,
    output_dir: str | None = None,
    partition_size: str | None = None,
    max_line_bytes: str | None = None,
    progress: bool | None = None,
    limits: Limits | None = None,
) -> int:
    """``gradcalc batch`` over files, or on Dask; returns the exit code."""
    if sys.stdout is None and output_dir is None:
        sys.stderr.write("gradcalc batch: standard output is closed: nowhere to write results\n")
        return EXIT_USAGE
    try:
        max_line = parse_size(max_line_bytes, "--max-line-bytes") if max_line_bytes else None
        if dask is None:
            if output_dir is not None or partition_size is not None:
                option = "--output-dir" if output_dir is not None else "--partition-size"
                raise Usage(f"{option} needs --dask (ADDRESS, or 'local')")
            return _one_after_another(sources, jobs, force_jobs, progress, limits, max_line)
        jobs = cap_jobs(jobs, force_jobs)
        return _on_dask(sources, dask, jobs, output_dir, partition_size, progress, limits, max_line)
    except Usage as problem:
        sys.stderr.write(f"gradcalc batch: {problem}\n")
        return EXIT_USAGE


def _one_after_another(
    sources: Sequence[str],
    jobs: int,
    force_jobs: bool,
    progress: bool | None,
    limits: Limits | None,
    max_line: int | None,
) -> int:
    """Each file as ``gradcalc batch FILE`` runs it, one after the other."""
    from gradcalc.cli.batch import run_batch

    paths = expand_sources(sources, allow_stdin=True)
    failed = False
    for path in paths:
        code = run_batch(
            path,
            jobs=jobs,
            progress=progress,
            limits=limits,
            max_line_bytes=max_line or MAX_LINE_BYTES,
            force_jobs=force_jobs,
        )
        if code not in (EXIT_OK, EXIT_FORMULA):
            return code
        failed = failed or code == EXIT_FORMULA
    return EXIT_FORMULA if failed else EXIT_OK


def expand_sources(
    sources: Sequence[str], allow_stdin: bool = False, regular_only: bool = False
) -> list[str]:
    """Every file named, in order, a pattern (``*``, ``?``, ``[``) that names no file
    expanded to its matches, sorted; an unmatched pattern is a :class:`Usage`, and so is
    an unreadable file among several (before any is read), or anything but a regular file
    with ``regular_only`` (its size is its length)."""
    paths: list[str] = []
    for source in sources or ["-"]:
        if source == "-":
            if not allow_stdin:
                raise Usage("--dask reads files (each worker reads its own part), not '-'")
            paths.append(source)
            continue
        if not os.path.exists(source) and glob.has_magic(source):
            matches = sorted(glob.glob(source))
            if not matches:
                raise Usage(f"cannot read {source!r}: no file matches it")
            paths.extend(matches)
        else:
            paths.append(source)
    if len(paths) == 1 and not regular_only:
        return paths  # ``run_batch`` says why it cannot read one file
    for path in paths:
        if path == "-":
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise Usage(f"cannot read {path!r}: {exc.strerror or exc}") from None
        if os.path.isdir(path):
            raise Usage(f"cannot read {path!r}: it is a directory")
        if regular_only and not os.path.isfile(path):
            raise Usage(f"cannot read {path!r} in partitions: it is not a regular file")
    return paths


def parse_size(text: str, option: str = "--partition-size") -> int:
    """``"8MiB"``, ``"64k"``, ``"1000000"`` -> bytes (powers of 1024 for the units)."""
    match = _SIZE.fullmatch(text)
    if not match or int(match.group(1)) < 1:
        raise Usage(f"{option} expects a size such as 64KiB, 8MiB or 1000000; got {text!r}")
    return int(match.group(1)) << (10 * _UNITS[match.group(2).lower()])


def _on_dask(
    sources: Sequence[str],
    address: str,
    jobs: int,
    output_dir: str | None,
    partition_size: str | None,
    progress: bool | None,
    limits: Limits | None,
    max_line: int | None,
) -> int:
    from gradcalc import distributed as dist

    try:
        address = dist.check_address(address)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if partition_size is not None:
        parse_size(partition_size)  # a bad size is a usage error before anything starts
    paths = expand_sources(sources, regular_only=True)
    try:
        dist.import_dask()
    except dist.DaskMissing as exc:
        raise Usage(f"--dask: {exc}") from None
    if output_dir is not None:
        output_dir = _prepare_output_dir(output_dir)
    workers = jobs
    meter = None
    try:
        with sigterm_raises(), contextlib.ExitStack() as stack:
            try:
                client = stack.enter_context(dist.connect(address, workers))
            except (OSError, TimeoutError, ValueError) as exc:
                raise Usage(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from None
            if partition_size is None:
                total = sum(os.path.getsize(path) for path in paths)
                size = dist.partition_bytes_for(total, dist.worker_threads(client))
            else:
                size = parse_size(partition_size)
            partitions = dist.plan(paths, size)
            if progress is None:
                progress = progress_wanted() if output_dir is None else _is_terminal(sys.stderr)
            if progress:
                meter = _Progress(len(partitions))
            return _drive(client, partitions, output_dir, limits, meter, max_line)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED
    finally:
        if meter is not None:
            meter.close()


def _drive(
    client: Any,
    partitions: list[Any],
    output_dir: str | None,
    limits: Limits | None,
    meter: _Progress | None,
    max_line: int | None,
) -> int:
    from gradcalc import distributed as dist

    out = getattr(sys.stdout, "buffer", None)
    failed = False
    max_line = max_line or MAX_LINE_BYTES
    try:
        for _, result in dist.run(client, partitions, output_dir, limits, max_line_bytes=max_line):
            if result.text:
                try:
                    if out is not None:
                        out.write(result.text)
                        out.flush()
                    else:
                        sys.stdout.write(result.text.decode("utf-8"))
                        sys.stdout.flush()
                except BrokenPipeError:
                    raise
                except OSError as exc:  # > /dev/full, a full disk
                    raise CannotWrite(exc) from exc
            failed = failed or result.failed > 0
            if meter is not None:
                meter.advance(result.lines, result.failed)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except CannotWrite as exc:
        silence_stdout()
        sys.stderr.write(f"gradcalc batch: {exc}\n")
        return EXIT_FORMULA
    except dist.PartitionFailed as exc:
        sys.stderr.write(f"gradcalc batch: {exc}\n")
        return EXIT_FORMULA
    return EXIT_FORMULA if failed else EXIT_OK


def _prepare_output_dir(directory: str) -> str:
    """The directory, absolute and created; an existing one must be empty, so that its
    files, concatenated in name order, are exactly this run's results."""
    full = os.path.abspath(directory)
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise Usage(f"--output-dir {directory!r} is not a directory")
        if os.listdir(full):
            raise Usage(f"--output-dir {directory!r} is not empty; give a new or empty one")
    else:
        try:
            os.makedirs(full)
        except OSError as exc:
            raise Usage(f"cannot create --output-dir {directory!r}: {exc.strerror}") from None
    return full


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


class _Progress:
    """Partitions done (a bar), lines, failures and rate on standard error.

    Never redirects standard output: results are written there directly.
    """

    def __init__(self, partitions: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from gradcalc.cli.render import make_console

        self.lines = 0
        self.failed = 0
        self.started = time.perf_counter()
        self.bar = Progress(
            TextColumn("partitions"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[lines]}"),
            TextColumn("{task.fields[failed]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=make_console(sys.stderr),
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
        )
        self.task = self.bar.add_task("dask", total=partitions, lines="", failed="", rate="")
        self.bar.start()

    def advance(self, lines: int, failed: int) -> None:
        self.lines += lines
        self.failed += failed
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(
            self.task,
            advance=1,
            lines=f"{self.lines:,} lines",
            failed=f"{self.failed:,} failed" if self.failed else "",
            rate=f"{self.lines / elapsed:,.0f} lines/s",
        )

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.bar.stop()
