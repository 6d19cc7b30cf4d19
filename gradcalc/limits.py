"""Resource limits for running a formula, each raised as a ``LimitError`` when crossed.

Length is never limited (a 1 MB formula runs); what a formula can make the
machine do is: loop iterations, call depth, bracket nesting, tensor size,
graph size, work (elements computed), memory and time. The CLI exposes each
as an option (``--max-iterations``, ..., ``--max-memory``, ``--timeout``) so a
user can raise it, and every error names its option in the words of the
surface that raised it (`hint_for`).

The limits that hold a whole run, not one tensor, are kept by a `Budget`:
a clock and a memory allowance started when a request (a one-shot command, a
batch line, a REPL entry) starts, and consulted only at checkpoints, never per
operation: before a large tensor is allocated (its size is known from the
shapes: creation functions, broadcasting, matmul) and every few thousand
operations or iterations of the interpreter. Memory is what the process grew
by since the run's first check (its resident set, read from ``/proc/self/statm``
where there is one: tensors alive, their graph, everything), plus the
allocation about to happen.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import namedtuple

MiB = 1 << 20


LIMIT_DEFAULTS: dict[str, int] = {
    # Total loop iterations (``while`` and ``for``) in one run (about a second of a tight loop).
    "max_iterations": 500_000,
    # Nested user-function calls (recursion depth).
    "max_call_depth": 200,
    # Bracket / expression nesting depth of the source; 200 must always work.
    "max_nesting": 500,
    # Elements of any one tensor, checked before allocating; in programs also the characters
    # of a string and the items of a list (and a hundredth of it the bits of an int), checked
    # before they are made.
    "max_elements": 100_000_000,
    # Operations recorded in one run (about a second of them, ~75 MB of graph).
    "max_graph_nodes": 500_000,
    # Elements computed in one run, summed over the operations on large tensors (a loop
    # making a million-element tensor each time ends in about a second).
    "max_work": 1_000_000_000,
    # MiB the run may add to the process: tensors alive, their graph and the output.
    "max_memory": 512,
    # Wall-clock seconds for one run (a one-shot command, a REPL entry).
    "timeout": 60,
}
"""Each limit of a run and its default (the comments say what each one counts)."""


class Limits(namedtuple("Limits", LIMIT_DEFAULTS, defaults=LIMIT_DEFAULTS.values())):
    """What one run may use: ``Limits(timeout=5)``, ``limits.replace(max_memory=1024)``;
    the fields and their defaults are `LIMIT_DEFAULTS`.

    A named tuple (immutable, hashable: compiled programs are cached per limits) made by
    ``collections.namedtuple``: a dataclass's import, or ``typing.NamedTuple``'s compiling
    of each string annotation, cost milliseconds of every command's start-up.
    """

    __slots__ = ()

    max_iterations: int
    max_call_depth: int
    max_nesting: int
    max_elements: int
    max_graph_nodes: int
    max_work: int
    max_memory: int
    timeout: int

    def replace(self, **changes: int) -> Limits:
        """These limits with ``changes`` (``Limits().replace(timeout=5)``)."""
        return self._replace(**changes)


DEFAULT_LIMITS = Limits()
BATCH_TIMEOUT = 10
"""Seconds per batch request unless ``gradcalc batch --timeout`` says otherwise."""
BATCH_LIMITS = Limits(timeout=BATCH_TIMEOUT)
"""What a batch request runs under by default (`gradcalc.api.run_request`)."""
LARGE = 1 << 16
"""Elements from which an operation's result is counted as work and checked against the
budget: smaller ones cost the interpreter's operation counter only."""

# ---------------------------------------------------------------- hints per surface

SURFACES = ("cli", "batch", "repl", "api")
_HOW = {
    "cli": "raise it with {option} N",
    "batch": "raise it with gradcalc batch {option} N (for every request)",
    "repl": "raise it by starting gradcalc repl {option} N",
    "api": "raise it with Limits({field}=N)",
}


def option_of(field: str) -> str:
    """``max_memory`` -> ``--max-memory``: the command-line option of a Limits field."""
    return "--" + field.replace("_", "-")


def hint_for(field: str, surface: str = "cli", advice: str | None = None) -> str:
    """The hint of a `LimitError`: ``advice`` (what may be wrong), then how to raise the limit."""
    how = _HOW.get(surface, _HOW["cli"]).format(option=option_of(field), field=field)
    how = f"the limit is {field}: {how}"
    return f"{advice} ({how})" if advice else how


def limit_error(field: str, message: str, advice: str | None = None) -> Exception:
    """A `LimitError` for ``field``, hinted for the command line; `rehint` changes the surface."""
    from gradcalc.errors import LimitError

    error = LimitError(message, hint=hint_for(field, "cli", advice))
    error.limit = field  # type: ignore[attr-defined]
    error.advice = advice  # type: ignore[attr-defined]
    return error


def rehint(error: BaseException, surface: str) -> None:
    """Say how to raise the limit ``error`` names in the words of ``surface``."""
    field = getattr(error, "limit", None)
    if field is not None:
        error.hint = hint_for(field, surface, getattr(error, "advice", None))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the budget of one run


def resident_bytes() -> int:
    """The process's resident set size in bytes (0 where ``/proc`` has no statm)."""
    pid = os.getpid()
    if _STATM[0] != pid:
        try:
            _STATM[:] = [pid, os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)]
        except OSError:
            _STATM[:] = [pid, -1]
    fd = _STATM[1]
    if fd < 0:
        return 0
    try:
        return int(os.pread(fd, 64, 0).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_STATM: list[int] = [-1, -1]
"""(pid, descriptor of /proc/self/statm): reopened in a forked child, whose own it is not."""
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Budget:
    """The clock, memory and work allowance of one run; see the module docstring."""

    __slots__ = ("alarm", "armed", "base", "deadline", "limits", "memory", "work")

    def __init__(self, limits: Limits, alarm: bool = False) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout
        self.memory = limits.max_memory * MiB
        self.base = -1  # read at the first check: a run that never gets there costs no read
        self.work = 0
        self.alarm = alarm  # arm a timer at the first check (a run that gets that far)
        self.armed = False

    def check(self, nbytes: int = 0, what: str | None = None) -> None:
        """Raise the `LimitError` of the first budget crossed: time, or memory with
        ``nbytes`` more about to be allocated (for ``what``)."""
        if time.monotonic() > self.deadline:
            raise self.timeout_error()
        if _COLLECTOR_PAUSED[0]:
            resume_collector()  # a run this long may make cyclic garbage: collect it
        if self.alarm and not self.armed:
            self.armed = _arm(self)
        if self.base < 0:
            self.base = resident_bytes()  # (what the run made before, all small, is not counted)
        used = resident_bytes() - self.base if self.base else 0
        if used + nbytes > self.memory:
            raise self.memory_error(used, nbytes, what)

    def allocate(self, elements: int, itemsize: int, what: str) -> None:
        """Before a tensor of ``elements`` is allocated: count its work and check the budget."""
        self.work += elements
        if self.work > self.limits.max_work:
            raise work_error(self.limits)
        self.check(elements * itemsize, what)

    def spend(self, elements: int) -> None:
        """An operation reads ``elements``: count them as work and check the budget."""
        self.work += elements
        if self.work > self.limits.max_work:
            raise work_error(self.limits)
        self.check()

    def timeout_error(self) -> Exception:
        seconds = self.limits.timeout
        return limit_error(
            "timeout",
            f"the run took more than {seconds:,} second{'s' * (seconds != 1)}",
            "is a loop or a tensor larger than intended?",
        )

    def memory_error(self, used: int, nbytes: int, what: str | None) -> Exception:
        limit = self.limits.max_memory
        if what and nbytes:
            held = f", and the run already holds {_mib(used)}" if used >= MiB else ""
            message = (
                f"{what} would need {_mib(nbytes)}{held}: "
                f"more than the memory budget of {limit:,} MiB"
            )
        else:
            message = (
                f"the run holds {_mib(used + nbytes)}, more than the memory budget of {limit:,} MiB"
            )
        return limit_error("max_memory", message, "use smaller tensors")


def work_error(limits: Limits) -> Exception:
    return limit_error(
        "max_work",
        f"more than {limits.max_work:,} elements computed in one run",
        "is a loop making large tensors running away?",
    )


def pause_collector() -> None:
    """Hold Python's cyclic garbage collector off while a command starts (nothing if
    something else already did), until `resume_collector`.

    Starting a command allocates tens of thousands of objects that all stay alive
    (modules, the op registry, the grammar's tables; prompt_toolkit's for the REPL),
    and the collections they trigger find no garbage: ~25 of them, ~2.5 ms of a ~31 ms
    scalar one-shot command and ~7 ms with NumPy's import (issue 12's targets are
    ratios to ``python -c "import numpy"``), ~8 ms of the REPL's first prompt.
    ``gradcalc.cli.main.main`` pauses it first thing; it comes back at a run's first
    budget check (a run that long may make cyclic garbage that matters), when the
    REPL's first prompt is drawn, or at once for what may run long with little work per
    step (a batch). Only the collection of reference cycles waits."""
    if gc.isenabled():
        gc.disable()
        _COLLECTOR_PAUSED[0] = True


def resume_collector() -> None:
    """Undo `pause_collector` (nothing if it did not pause the collector)."""
    if _COLLECTOR_PAUSED[0]:
        _COLLECTOR_PAUSED[0] = False
        gc.enable()


_COLLECTOR_PAUSED = [False]


def _mib(nbytes: int) -> str:
    return f"{max(nbytes, 0) / MiB:,.0f} MiB" if nbytes >= MiB else f"{max(nbytes, 0):,} bytes"


_LOCAL = threading.local()


def current() -> Budget | None:
    """The budget of the run in progress in this thread, if any."""
    return getattr(_LOCAL, "budget", None)


class running:
    """``with running(limits) as budget:`` a run under a fresh `Budget`, or under the one
    already running in this thread (a request's interpreter inside the request).

    ``alarm=True`` (the main thread only) also arms a timer, at the run's first check
    (a cheap run never arms it), that raises the timeout's `LimitError` wherever Python
    code runs when the deadline passes: for the work no checkpoint sees (a long
    backward pass, encoding a large output)."""

    __slots__ = ("alarm", "budget", "limits", "outer")

    def __init__(self, limits: Limits, alarm: bool = False) -> None:
        self.limits = limits
        self.alarm = alarm

    def __enter__(self) -> Budget:
        outer = self.outer = getattr(_LOCAL, "budget", None)  # (`current`, inlined)
        if outer is not None:
            self.budget = outer
            return outer
        budget = self.budget = _LOCAL.budget = _LATEST[0] = Budget(self.limits, self.alarm)
        return budget

    def __exit__(self, *exc: object) -> None:
        if self.outer is None:
            _LOCAL.budget = _LATEST[0] = None
            if self.budget.armed:
                _disarm()


_LATEST: list[Budget | None] = [None]
"""The budget of the last run started (in any thread) while it runs: what `overdue` reads."""


def overdue(grace: float) -> bool:
    """Whether the run in progress is ``grace`` seconds past its deadline: stuck in one long
    call that no check interrupts (a watchdog thread asks, in a one-request-at-a-time
    process such as a batch worker)."""
    budget = _LATEST[0]
    return budget is not None and time.monotonic() > budget.deadline + grace


def end_process(code: int, fd: int = -1, text: str = "") -> None:
    """Write ``text`` to ``fd`` and end the process now (``os._exit``: no clean-up, which a
    thread stuck in a long call could block): a watchdog's last resort."""
    try:
        if fd >= 0 and text:
            os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os._exit(code)


def _arm(budget: Budget) -> bool:
    import signal

    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, _on_alarm):
        return False  # someone else's alarm: leave it alone
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(budget.deadline - time.monotonic(), 0.001))
    return True


def _disarm() -> None:
    import signal

    signal.setitimer(signal.ITIMER_REAL, 0)


def _on_alarm(signum: int, frame: object) -> None:
    budget = current()
    if budget is not None:
        raise budget.timeout_error()
