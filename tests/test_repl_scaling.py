"""A REPL entry costs the same at line 1 and line 20,000 (issue 16: 40k lines took 15.6 s).

What grew with the session, each now bounded: the interpreter's undo copy of every
name per entry (now only the names an entry binds), the scan of every name for
functions before a ``for`` loop (now only the functions it can reach), the "did you
mean" search over every name (now the latest), and piped-input errors padding their
source with one newline per earlier line (now the caret line alone).

Timed in-process with ``time.perf_counter`` through the per-line entry point that
``run_script`` and the prompt share (``EntryCollector.feed`` then ``Session.run``).
"""

from __future__ import annotations

import io
import statistics
import time

from gradcalc.cli.repl import EntryCollector, Session

LINES = 20_000
WINDOW = 1_000


def _cycle(i: int) -> list[str]:
    """Ten input lines: new names, reads, a typo, a loop that reads nothing, a def."""
    return [
        f"v{i} = {i % 7}",
        f"w{i} = v{i} * 2",
        f"u{i} = w{i} + v{i}",
        f"v{i} + 1",
        f"nope{i}",  # a NameError: reported, the session goes on
        "for j in range(3): t = 1",
        "",
        f"def f{i}(x): return x * {i % 5}",
        "",
        f"f{i}(u{i})",
    ]


def _timed_lines(count: int) -> list[float]:
    session = Session(stdout=io.StringIO(), stderr=io.StringIO(), script=True)
    collector = EntryCollector()
    for line in _cycle(count) * 30:  # warm-up: imports, consoles, first compilations
        for entry in collector.feed(line):
            session.run(entry)
    times: list[float] = []
    clock = time.perf_counter
    for i in range(count // 10):
        for line in _cycle(i):
            start = clock()
            for entry in collector.feed(line):
                session.run(entry)
            times.append(clock() - start)
    assert session.failures == count // 10 + 30  # only the typos failed
    assert len(session.names) > 4 * count // 10
    return times


def test_the_last_thousand_lines_cost_what_the_first_thousand_did():
    times = _timed_lines(LINES)
    first, last = times[:WINDOW], times[-WINDOW:]
    # medians ignore a collection that lands in one window; the total catches the rest
    assert statistics.median(last) <= 2.0 * statistics.median(first), (first, last)
    assert sum(last) <= 3.0 * sum(first), (sum(first), sum(last))


def test_a_failed_entry_still_undoes_every_name_it_bound():
    """The undo covers what an entry can bind (``Compiled.binds``), not a copy of all."""
    from gradcalc import api

    interp = api.interpreter()
    api.execute(interp, "a = 1\nk = 5")
    before = dict(interp.env)
    failing = [
        "a = 2\nb = 3\nnope",
        "for k in range(3): c = k\nnope",
        "for k in range(3): pass\nnope",  # a loop whose variable nothing reads
        "def a(x): return x\nnope",
        "a = [1, 2]\na[0] = 5\nnope",
        "if 1: d = 1\nelse: e = 2\nnope",
    ]
    for source in failing:
        try:
            api.execute(interp, source)
        except Exception:
            pass
        else:
            raise AssertionError(source)
        assert interp.env == before, source


def test_a_function_from_an_earlier_entry_sees_the_loop_variable():
    """Reaching functions through the names a loop reads still finds one reading it."""
    _, out, err, _ = _replay_lines(
        "def g(k):\n    return j + k\n",
        "h = g",
        "def outer(k):\n    return h(k)\n",
        *[f"x{i} = {i}" for i in range(100)],
        "s = 0\nfor j in range(3):\n    s = s + outer(0)\n",
        "s",
    )
    assert err == "" and "tensor(3." in out


def _replay_lines(*entries: str) -> tuple[int, str, str, Session]:
    out, err = io.StringIO(), io.StringIO()
    session = Session(stdout=out, stderr=err, script=True)
    collector = EntryCollector()
    for text in entries:
        for line in (text + "\n").splitlines():
            for entry in collector.feed(line):
                session.run(entry)
    last = collector.flush()
    if last is not None:
        session.run(last)
    return session.failures, out.getvalue(), err.getvalue(), session
