"""Hostile batch input under budgets: every id answered exactly once, no internal error,
time under the timeout, memory under the budget (issue 16).

Lines are built from pieces that have cost the machine before: runaway loops, huge
tensors, deep recursion, Hessians of large inputs, deeply nested JSON, ids strict JSON
cannot echo, numbers beyond float64, blank lines, control characters, bad UTF-8. Each
example is a block of lines run by ``gradcalc.api.run_block`` (what a batch worker runs)
under small limits, so a runaway costs a fraction of a second. Deterministic in CI:
``derandomize=True`` and no example database. GRADCALC_FUZZ_EXAMPLES raises the count.
"""

from __future__ import annotations

import json
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcalc.api import run_block
from gradcalc.limits import Limits, resident_bytes

EXAMPLES = int(os.environ.get("GRADCALC_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # bounded below by the budget itself, with the machine's noise allowed
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = Limits(
    timeout=1,
    max_memory=64,
    max_iterations=20_000,
    max_graph_nodes=40_000,
    max_work=20_000_000,
    max_elements=10_000_000,
)
SLACK_SECONDS = 1.5
"""What one request may take beyond its timeout: the last check's interval, a slow machine."""
SLACK_BYTES = 96 << 20
"""What the process may grow beyond the memory budget: NumPy's first use, one result in
flight between checks, the allocator's own caches."""

FORMULAS = st.sampled_from(
    [
        "3*a**3 - b**2",
        "x = 0\nwhile True: x = 1",
        "while True: x = ones(1e6)",
        "x = ones(1e5)\nwhile True: x = sin(x)",
        "ones(1e8)*2",
        "ones(1e7)",
        "sum(ones(3000, 3000) @ ones(3000, 3000))",
        "def f(n): return 1 if n <= 0 else f(n - 1) + f(n - 1)\nf(30)",
        "def g(n): return g(n + 1)\ng(0)",
        "arange(10**12)",
        "s = 0\nfor i in range(10**9): s = s + i",
        "grad(grad(sum(a**3), a), a)",
        "(" * 300 + "a" + ")" * 300,
        "[" * 2000 + "]" * 2000,
        "\n" * 20_000 + "a",
        "a +* b",
        "\x1b]0;title\x07 + a",
        "a" + " + a" * 3000,
        "softmax(ones(1000))",
        "x = a\nx[0] = 1",
        "undefined_name * 2",
        "1e400 * a",
    ]
)
VALUES = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["2", "ones(3)", "ones(1e8)", "[1, 2", "arange(4)", "10**400"]),
    st.lists(st.floats(-10, 10), max_size=5),
)
BAD_LINES = st.sampled_from(
    [
        "not json",
        "[" * 1000 + "]" * 1000,
        '{"id": NaN, "formula": "a"}',
        '{"id": 1e400, "formula": "a"}',
        '{"id": 5, "formula": "a", "vars": {"a": 1' + "0" * 400 + "}}",
        '{"id": 6}',
        '{"id": 7, "formula": 3}',
        '{"id": 8, "formula": "a", "surprise": true}',
        "   ",
        "",
        '"just a string"',
        '{"id": 9, "formula": "a", "vars": {"a": {"b": 1}}}',
    ]
)


@st.composite
def requests(draw: st.DrawFn, number: int) -> str:
    """One request line: mostly well-formed JSON of a hostile formula, sometimes a bad line."""
    if draw(st.integers(0, 4)) == 0:
        return draw(BAD_LINES)
    request: dict = {"id": number, "formula": draw(FORMULAS)}
    if draw(st.booleans()):
        request["vars"] = {"a": draw(VALUES), "b": draw(VALUES)}
    kind = draw(st.integers(0, 5))
    if kind == 1:
        request["wrt"] = ["a"]
    elif kind == 2:
        request["check"] = True
    elif kind == 3:
        request["grad_output"] = draw(VALUES)
    return json.dumps(request)


@st.composite
def blocks(draw: st.DrawFn) -> list[str]:
    count = draw(st.integers(1, 4))
    return [draw(requests(number)) for number in range(count)]


def _peak_reset() -> int:
    """Reset this process's peak resident size (Linux: clear_refs 5) and return the current
    one; 0 where that cannot be done (then only the growth is checked)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return 0
    return resident_bytes()


def _peak() -> int:
    """The peak resident size since `_peak_reset`, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def answered(lines: list[str]) -> tuple[list, list[dict]]:
    """The ids a batch must answer (None for lines without a usable id) and its replies,
    each checked: no internal error, within time and memory."""
    started = time.monotonic()
    resettable = _peak_reset()
    before = resettable or resident_bytes()
    text, count, failed = run_block("\n".join(lines).encode("utf-8", "replace"), 1, LIMITS)
    seconds = time.monotonic() - started
    grown = (_peak() if resettable else resident_bytes()) - before  # the peak where known
    replies = [json.loads(line) for line in text.splitlines()]
    assert count == len(replies)
    assert failed == sum("error" in reply for reply in replies)
    for reply in replies:
        error = reply.get("error")
        assert not (error and error.get("internal")), reply
        if error and error["type"] == "LimitError":
            assert (
                error.get("hint") is None
                or "gradcalc batch" in error["hint"]
                or ("the limit is" not in error["hint"])
            ), error
    requests_sent = [line for line in lines if line.strip()]
    assert seconds < len(requests_sent) * (LIMITS.timeout + SLACK_SECONDS), seconds
    if before:
        assert grown < (LIMITS.max_memory << 20) + SLACK_BYTES, grown
    return requests_sent, replies


@SETTINGS
@given(blocks())
def test_every_line_is_answered_once_within_the_budgets(lines: list[str]) -> None:
    sent, replies = answered(lines)
    assert len(replies) == len(sent)
    for line, reply in zip(sent, replies, strict=True):
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            assert reply["id"] is None and "error" in reply
            continue
        expected = request.get("id") if isinstance(request, dict) else None
        if isinstance(expected, int | str):
            assert reply["id"] == expected, (line, reply)


@SETTINGS
@given(st.lists(FORMULAS, min_size=1, max_size=3), st.integers(0, 3))
def test_formulas_among_blank_lines_keep_their_order(formulas: list[str], blanks: int) -> None:
    lines = []
    for number, formula in enumerate(formulas):
        lines += [""] * blanks + [json.dumps({"id": f"r{number}", "formula": formula})]
    _, replies = answered(lines)
    assert [reply["id"] for reply in replies] == [f"r{n}" for n in range(len(formulas))]
