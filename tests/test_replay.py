"""Replays of repeated formulas (``gradcalc._replay`` and ``api._Replays``).

A batch answers its 4th and later requests of a formula by a recorded ``Trace``
(registry forwards on raw data, then the VJPs in the engine's backward order),
never through the interpreter. These tests hold that to its promise: the same
answer, bit for bit, as the ordinary path; refusals for programs whose graph
depends on values; a fall back on anything unusual; and every registry op
replayed like the engine runs it.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import pytest

import gradcalc
from gradcalc import _replay, _tensor, api, ops
from gradcalc.builtins import literal
from gradcalc.interpreter import Interpreter
from gradcalc.limits import DEFAULT_LIMITS

# ---------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _fresh_replays() -> Iterator[None]:
    """Each test starts (and leaves) with no replays recorded."""
    api._REPLAYS.clear()
    yield
    api._REPLAYS.clear()


def _no_replays(*args: Any, **kwargs: Any) -> None:
    """``api._replays`` switched off: every request runs the ordinary way."""
    return None


@contextlib.contextmanager
def _replays_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Replays disabled: no recording (``_replays``) and nothing recorded to answer from
    (an empty ``_REPLAYS``, which the answering side reads); restored after."""
    with monkeypatch.context() as patch:
        patch.setattr(api, "_replays", _no_replays)
        patch.setattr(api, "_REPLAYS", {})
        yield


def _line(request: dict) -> str:
    return api.run_line(json.dumps(request))[0]


def _plain_lines(monkeypatch: pytest.MonkeyPatch, requests: list[dict]) -> list[str]:
    """The answers with replays disabled (the reference)."""
    with _replays_off(monkeypatch):
        return [_line(request) for request in requests]


def _replayed_lines(requests: list[dict]) -> list[str]:
    """The answers in order, replays on: requests 4 and later are replayed."""
    return [_line(request) for request in requests]


def _entries(formula: str, dtype: str = "float64") -> list[list | bool]:
    """Every trace entry recorded for ``formula`` (any bound names)."""
    return [
        entry
        for key, replays in api._REPLAYS.items()
        if key[0] == formula and key[1] == dtype
        for entry in replays.traces.values()
    ]


def _verified(formula: str, dtype: str = "float64") -> bool:
    """Whether a verified trace of ``formula`` exists (so replay was used)."""
    entries = _entries(formula, dtype)
    return any(isinstance(entry, api._Entry) and entry.verified is True for entry in entries)


def _value(rng: np.random.Generator, shape: tuple | None, low: float, high: float) -> Any:
    """A random JSON value: a float (``shape`` None) or a nested list, 4 decimals."""
    if shape is None:
        return round(float(rng.uniform(low, high)), 4)
    return np.round(rng.uniform(low, high, shape), 4).tolist()


class Case(NamedTuple):
    formula: str
    shapes: dict[str, tuple | None]
    extra: Mapping[str, Any] = MappingProxyType({})
    low: float = 0.5
    high: float = 2.0

    def requests(self, count: int, seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        return [
            {
                "id": i,
                "formula": self.formula,
                "vars": {n: _value(rng, s, self.low, self.high) for n, s in self.shapes.items()},
                **self.extra,
            }
            for i in range(count)
        ]


S = None  # a scalar variable
AB = {"a": S, "b": S}
SUBSET = [
    Case("3*a**3 - b**2", AB),
    Case("exp(a) * sin(b) + log(a) * cos(b)", AB),
    Case("tanh(a) + sigmoid(b) * relu(a - b) + sqrt(a) * abs(b - 1)", AB),
    Case("a**2.5", {"a": S}),
    Case("1/a", {"a": S}),
    Case("-a", {"a": S}),
    Case("a - a", {"a": S}),
    Case("a*a*a", {"a": S}),
    Case("y = x\nfor i in range(4):\n    y = sin(y) * a + x\ny", {"x": S, "a": S}),
    Case("u = a*b\nv = u + a\nu*v", AB),
    Case("y = a\ny += b\ny *= a\ny", AB),
    Case("a * b + b**2", AB, {"wrt": ["a"]}),
    Case("a * sin(b) - b", AB, {"dtype": "float32"}),
    Case("sum(softmax(x) * t)", {"x": (5,), "t": (5,)}, low=-2.0),
    Case("mean((x @ w - t)**2)", {"x": (4, 3), "w": (3, 2), "t": (4, 2)}, low=-1.0),
    Case("sum(x**2)", {"x": (3,)}, low=-2.0),
    Case("logsumexp(x, 0)", {"x": (3, 4)}, low=-2.0),  # a vector output
    Case("sum(exp(x) * t)", {"x": (4,), "t": (4,)}, low=-1.0),
    Case("max(x)", {"x": (6,)}, low=-3.0),
    Case("norm(x)", {"x": (4,)}, low=-2.0),
    Case("sum(cat([x, t]))", {"x": (2, 3), "t": (2, 3)}),
    Case("sum(cat([x, t], dim=1) ** 2)", {"x": (2, 3), "t": (2, 3)}, low=-1.0),
    Case("sum(stack([x, t]) ** 2)", {"x": (3,), "t": (3,)}, low=-1.0),
    Case("mean(tanh(x @ w))", {"x": (4, 3), "w": (3, 2)}, low=-1.0),
    Case("sum(x.T @ t)", {"x": (3, 2), "t": (3, 4)}, low=-1.0),
    Case("std(x)", {"x": (5,)}, low=-2.0),
    Case("var(x)", {"x": (5,)}, low=-2.0),
    Case("x.sum()", {"x": (2, 3)}, low=-2.0),
    Case("x * 2", {"x": (3,)}, {"grad_output": [1, 2, 3]}),  # a vector output
    Case("mean(tanh(x @ w)) * 2.5 + sum(x) / 3", {"x": (4, 3), "w": (3, 2)}, {"dtype": "float32"}),
    Case("sum(x ** 2.5 - 1 / x)", {"x": (4,)}, {"dtype": "float32"}),
    Case("sum(sigmoid(x) * w)", {"x": (3,), "w": (3,)}, {"wrt": ["w"]}, low=-2.0),
]


def _case_id(case: Case) -> str:
    return case.formula.replace("\n", ";")[:40] + (
        "-" + json.dumps(dict(case.extra)) if case.extra else ""
    )


_OPTIONS = ("wrt", "grad_output")
"""Request keys the answering side may leave to the ordinary path: a case with one is
asked first without it (so a trace is verified), then with it."""


def _subset_params() -> list:
    params = []
    for case in SUBSET:
        params.append(pytest.param(case, id=_case_id(case)))
    return params


# ---------------------------------------------------------------- 1. batch equivalence


@pytest.mark.parametrize("case", _subset_params())
def test_replayed_batch_answers_equal_the_ordinary_ones(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay must never change an answer: every output line of 6 requests (3 of them
    replayed) equals the line computed with replays disabled, byte for byte; and replay
    really ran (a verified trace exists), else the equality would prove nothing."""
    requests = case.requests(6, seed=len(case.formula))
    if any(key in case.extra for key in _OPTIONS):
        plain = Case(
            case.formula,
            case.shapes,
            {k: v for k, v in case.extra.items() if k not in _OPTIONS},
            case.low,
            case.high,
        )
        requests = plain.requests(6, seed=len(case.formula) + 1) + requests
    expected = _plain_lines(monkeypatch, requests)
    assert not api._REPLAYS
    assert _replayed_lines(requests) == expected
    assert all('"error"' not in line for line in expected), expected
    assert _replay.replayable(api._program(case.formula, DEFAULT_LIMITS), set(case.shapes))
    assert _verified(case.formula, case.extra.get("dtype", "float64"))


X3, XT = {"x": (3,)}, {"x": (3,), "t": (3,)}
MORE = [
    # (case, whether a trace is verified: leaves the program makes decline by design)
    # (y += t makes a new y that nothing reads: an op off the output's graph, declined)
    (Case("y = x * 1\nz = y\ny += t\nsum(z * z)", XT, low=-1.0), False),
    (Case("y = x * 1\nz = y + y\ny *= t\nsum(z * y)", XT, low=-1.0), True),
    (Case("x += t\nsum(x)", XT, low=-1.0), True),
    (Case("a = a * 2\na + b", AB), True),  # a bound name reassigned
    (Case("y = a\ny -= b\ny /= a\ny **= 2\ny", AB, low=-1.0), True),
    (Case("y = x * 1\ny @= w\nsum(y)", {"x": (2, 2), "w": (2, 2)}, low=-1.0), True),
    # (an in-place op on a view makes nodes the output's graph does not hold: declined)
    (Case("y = x * 1\nv = y.view(4)\nv *= 2\nsum(y * x)", {"x": (2, 2)}, low=-1.0), False),
    (Case("y = x * 1\nv = select(y, 0, 1)\nv *= 3\nsum(y * y)", {"x": (2, 3)}, low=-1.0), False),
    (Case("y = x * 1\nfor i in range(3):\n    y *= x\nsum(y)", X3, low=-1.0), True),
    # (len and numel are numbers a built-in made: beside NumPy's float64 they are NumPy's
    # too, which a trace cannot tell from a number made from the values: declined)
    (Case("a * len(x) + sum(x) * numel(x)", {"x": (3,), "a": S}, low=-1.0), False),
    (Case("sum(round(x, 1) * x) + round(a, 2) * a", {"x": (3,), "a": S}, low=-1.0), True),
    (Case("sum(softplus(x, 2, 1) * x)", X3, low=-1.0), True),
    (Case("a ** b + maximum(a, b) + minimum(a, b)", AB, low=-1.0), False),  # (no float forward)
    (Case("sum(maximum(x, 0.5) * x) + sum(max(x, 0))", {"x": (3, 2)}, low=-1.0), True),
    (Case("prod(x) + x.max() + x.min() + x.mean() + x.std()", {"x": (4,)}, low=-1.0), True),
    (Case("mse_loss(x, t) + l1_loss(x, t)", {"x": (4,), "t": (4,)}, low=-1.0), True),
    (Case("binary_cross_entropy_with_logits(x, t)", {"x": (4,), "t": (4,)}, low=0.0), True),
    (Case("sum(linear(x, w, b))", {"x": (2, 3), "w": (4, 3), "b": (4,)}, low=-1.0), True),
    (Case("sum(outer(x, t)) + dot(x, t) + inner(x, t)", XT, low=-1.0), True),
    (Case("sum(bmm(x, t))", {"x": (2, 2, 3), "t": (2, 3, 2)}, low=-1.0), True),
    (Case("sum(permute(x, [1, 0]) * t)", {"x": (2, 3), "t": (3, 2)}, low=-1.0), True),
    (Case("sum(broadcast_to(x, [2, 3]) * t)", {"x": (3,), "t": (2, 3)}, low=-1.0), True),
    (Case("norm(x, 1) + norm(x, 3) + norm(x, 2, 0).sum()", {"x": (2, 3)}, low=-1.0), True),
    (Case("std(x, 0).sum() + var(x, 1).sum()", {"x": (2, 3)}, low=-1.0), True),
    (Case("sum(x * eye(3))", {"x": (3, 3)}, low=-1.0), False),  # (an array a built-in made)
    (Case("sum(x / 0) + sum(sqrt(x))", X3, low=-1.0), True),  # non-finite everywhere
    (Case("a * 0 + 1 / (a - a)", {"a": S}), False),  # (the float backend declines 1 / 0)
    (Case("w = ones(3)\nw *= a\nsum(w * x)", {"x": (3,), "a": S}, low=-1.0), False),
    (Case("w = ones(3)\nw += x\nsum(w * x)", X3, low=-1.0), False),
]


@pytest.mark.parametrize(("case", "replayed"), MORE, ids=[_case_id(c) for c, _ in MORE])
def test_more_programs_replay_the_same_lines(
    case: Case, replayed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-place updates (aliased, through views), reassigned bound names, every
    built-in family of the subset, non-finite values: the same lines as without
    replays; replayed unless the program makes its own leaves (``Trace.of`` declines)."""
    requests = case.requests(7, seed=3)
    expected = _plain_lines(monkeypatch, requests)
    assert _replayed_lines(requests) == expected
    assert all('"error"' not in line for line in expected), expected[0]
    assert _verified(case.formula) is replayed, _entries(case.formula)


def test_a_replayed_batch_note_names_the_request_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vector output's note tells a batch user the request key to set
    (``request 'grad_output'``), replayed or not; the CLI's ``--grad-output`` is not
    something a batch request can give."""
    requests = [{"formula": "x * 2", "vars": {"x": [1.0, float(i), 3.0]}} for i in range(4)]
    notes = [json.loads(line)["note"] for line in _replayed_lines(requests)]
    assert _verified("x * 2")
    assert all("request 'grad_output'" in note for note in notes), notes[-1]


FLOAT32_LITERALS = {c.formula for c in SUBSET if c.extra.get("dtype") == "float32"} - {
    "a * sin(b) - b"
}
"""float32 formulas with a number literal in arithmetic (a Python number beside a float32
array must stay one: NumPy 2 would widen float32 op np.float64 to float64)."""


@pytest.mark.parametrize("formula", sorted(FLOAT32_LITERALS))
def test_float32_formulas_with_number_literals_are_replayed(
    formula: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float32 request with ``x * 2.5`` in it is as replayable as one without."""
    (case,) = [c for c in SUBSET if c.formula == formula]
    _replayed_lines(case.requests(6, seed=1))
    assert _verified(formula, "float32"), _entries(formula, "float32")


def _evaluated_as_ordinary(
    monkeypatch: pytest.MonkeyPatch, formula: str, bindings: list[dict]
) -> list[api.Result]:
    """``evaluate`` of each binding, replays on; each result asserted the same bits as
    with replays off."""
    with _replays_off(monkeypatch):
        expected = [api.evaluate(formula, b) for b in bindings]
    got = [api.evaluate(formula, b) for b in bindings]
    for a, b in zip(got, expected, strict=True):
        _same_bits(a, b)
    return got


def _same_bits(a: api.Result, b: api.Result) -> None:
    """Two results hold the same bits: values, gradients (type, dtype, shape) and words."""
    pairs = [(a.value, b.value)] + [(a.gradients[n], b.gradients[n]) for n in a.gradients]
    assert list(a.gradients) == list(b.gradients)
    for x, y in pairs:
        assert type(x) is type(y)
        x, y = np.asarray(x), np.asarray(y)
        assert (x.dtype, x.shape) == (y.dtype, y.shape)
        assert x.tobytes() == y.tobytes()
    assert (a.notes, a.unused, a.summed, a.output_name) == (
        b.notes,
        b.unused,
        b.summed,
        b.output_name,
    )


@pytest.mark.parametrize(
    ("formula", "shapes", "dtype"),
    [
        ("sum(exp(x) * t) + norm(x @ w)", {"x": (3, 4), "t": (3, 4), "w": (4,)}, "float64"),
        (
            "y = a\nfor i in range(3):\n    y = tanh(y) * b + a\ny",
            {"a": None, "b": None},
            "float64",
        ),
        ("mean(softmax(x, 1) * t)", {"x": (2, 5), "t": (2, 5)}, "float32"),
        ("a * b + c", {"a": None, "b": None, "c": None}, "float64"),
        ("softmax(x) * t", {"x": (4,), "t": (4,)}, "float64"),  # a vector output
    ],
)
def test_evaluate_in_a_loop_gives_the_same_bits(
    formula: str, shapes: dict, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``api.evaluate`` in a loop replays too: each Result equals the ordinary one bit
    for bit (values, gradients, their types, notes, unused, summed)."""
    rng = np.random.default_rng(7)
    bindings = [{n: _value(rng, s, -1.5, 1.5) for n, s in shapes.items()} for _ in range(6)]
    with _replays_off(monkeypatch):
        expected = [api.evaluate(formula, b, dtype=dtype) for b in bindings]
    got = [api.evaluate(formula, b, dtype=dtype) for b in bindings]
    for a, b in zip(got, expected, strict=True):
        _same_bits(a, b)
    assert _verified(formula, dtype)


def test_run_block_replays_the_same_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_block`` (a batch worker's unit: many lines, warnings silenced once) answers
    the same lines with replays as without, two formulas interleaved."""
    requests = [
        r
        for pair in zip(
            Case("sum(tanh(x) * t)", {"x": (3,), "t": (3,)}, low=-1.0).requests(8, seed=1),
            Case("u = a*b\nsin(u) + a", AB).requests(8, seed=2),
            strict=True,
        )
        for r in pair
    ]
    block = ("\n".join(json.dumps(r) for r in requests) + "\n").encode()
    with _replays_off(monkeypatch):
        expected = api.run_block(block)
    assert api.run_block(block) == expected
    assert expected[1:] == (16, 0)
    assert _verified("sum(tanh(x) * t)") and _verified("u = a*b\nsin(u) + a")


def test_unused_variable_and_numpy_bindings_replay_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bound variable the output never reads (gradient 0, listed as unused) and NumPy
    array bindings go through the replay like through the interpreter."""
    rng = np.random.default_rng(3)
    bindings = [{"x": rng.standard_normal(4), "unused": rng.standard_normal(2)} for _ in range(6)]
    formula = "sum(sin(x) * x)"
    got = _evaluated_as_ordinary(monkeypatch, formula, bindings)
    assert got[-1].unused == ["unused"]
    assert _verified(formula)


def test_large_arrays_replay_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrays past the engine's pooling threshold (``_recycle.MIN_BYTES``): the engine
    forwards into pooled buffers and sums gradients in place, the replay does not;
    the bits must still agree."""
    n = 140_000
    rng = np.random.default_rng(11)
    bindings = [{"x": rng.uniform(-1, 1, n), "t": rng.uniform(-1, 1, n)} for _ in range(5)]
    formula = "sum(exp(x) * t - x**2 + tanh(x) * x)"
    _evaluated_as_ordinary(monkeypatch, formula, bindings)
    assert _verified(formula)


# ---------------------------------------------------------------- 2. the interpreter is skipped


def test_replay_answers_without_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the 4th request on, the interpreter is not called at all: with
    ``Interpreter.execute`` raising, requests are still answered, correctly."""
    formula = "sum(x**2 * w) + sum(tanh(w))"
    rng = np.random.default_rng(5)
    for _ in range(3):  # (evaluate and batch requests run under different limits: two keys)
        x, w = np.round(rng.uniform(-1, 1, (2, 4)), 4)
        api.evaluate(formula, {"x": x, "w": w})
        _line({"formula": formula, "vars": {"x": x.tolist(), "w": w.tolist()}})
    x = np.round(rng.uniform(-1, 1, 4), 4)
    w = np.round(rng.uniform(-1, 1, 4), 4)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the interpreter ran")

    with monkeypatch.context() as patch:
        patch.setattr(Interpreter, "execute", broken)
        result = api.evaluate(formula, {"x": x, "w": w})
        line = _line({"formula": formula, "vars": {"x": x.tolist(), "w": w.tolist()}})
    np.testing.assert_allclose(result.value, np.sum(x**2 * w) + np.sum(np.tanh(w)), rtol=1e-14)
    np.testing.assert_array_equal(result.gradients["x"], 2 * x * w)
    np.testing.assert_allclose(result.gradients["w"], x**2 + 1 - np.tanh(w) ** 2, rtol=1e-14)
    reply = json.loads(line)
    assert "error" not in reply, reply
    assert reply["gradients"]["x"] == (2 * x * w).tolist()
    # and the interpreter is back: a new formula runs the ordinary way
    assert api.evaluate("sum(x) * 2", {"x": x}).value == 2 * np.sum(x)


# ---------------------------------------------------------------- 3. refusals


REFUSED = [
    Case("if a > 0:\n    y = a\nelse:\n    y = -a\ny", {"a": S}, low=-2.0),
    Case("a * (a > 0)", {"a": S}, low=-2.0),
    Case("sum(x * (x > 0))", {"x": (4,)}, low=-2.0),
    Case("y = a\ni = 0\nwhile i < 3:\n    y = y * a\n    i = i + 1\ny", {"a": S}),
    Case("def f(x):\n    return x * 2 + a\nf(a)", {"a": S}),
    Case("x[0] * x[1]", {"x": (3,)}),
    Case("detach(a) * a", {"a": S}),
    Case("const(a) * a", {"a": S}),
    Case("sum(x + rand(3) * 0)", {"x": (3,)}),
    Case("sum(clamp(x, a))", {"x": (3,), "a": S}),
    Case("norm(x, a)", {"x": (3,), "a": S}, low=1.0, high=3.0),
    Case("a // 1 + a", {"a": S}),
    Case("a % 1 * a", {"a": S}),
    Case("exp(exp)", {"exp": S}),
    Case("y = a * a\ngrad(y, a) * a", {"a": S}),
    Case("y = a * a\ny.backward()\na.grad * b", AB),
    Case("x.sum().item() * x", {"x": (2,)}),
    Case("y = a * 2 if a > 1 else a * 3\ny", {"a": S}),
]


@pytest.mark.parametrize("case", REFUSED, ids=[_case_id(c) for c in REFUSED])
def test_programs_outside_the_subset_are_never_replayed(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program whose graph may depend on its values (or that leaves the graph) is
    refused by ``replayable``, keeps no verified trace, and is answered as always."""
    program = api._program(case.formula, DEFAULT_LIMITS)
    assert not _replay.replayable(program, set(case.shapes))
    requests = case.requests(6, seed=len(case.formula))
    expected = _plain_lines(monkeypatch, requests)
    assert _replayed_lines(requests) == expected
    assert not _verified(case.formula)


@pytest.mark.parametrize(
    ("formula", "bound", "accepted"),
    [
        ("a * b", {"a", "b"}, True),
        ("y = a\nfor i in range(1, 5, 2):\n    y = y * a\ny", {"a"}, True),
        ("sum(x, 0, keepdim=True)", {"x"}, True),
        ("ones(3) * a + zeros(3) + full([3], 2.0) + eye(3)[0]", {"a"}, False),  # index
        ("ones(3) * a + arange(3) + linspace(0, 1, 3)", {"a"}, True),
        ("x.T @ x", {"x"}, True),
        ("cat((x, y), -1)", {"x", "y"}, True),
        ("softmax(x, dim=-1)", {"x"}, True),
        ("-a + +a", {"a"}, True),
        ("sum(x, -1)", {"x"}, True),
        # negative cases
        ("y = a\nfor i in range(n):\n    y = y * a\ny", {"a", "n"}, False),  # range of a value
        ("for i in [1, 2]:\n    a = a * i\na", {"a"}, False),  # not a range
        ("for i, j in range(2):\n    a = a\na", {"a"}, False),  # unpacking target
        ("sum(x, a)", {"x", "a"}, False),  # an option given as a tensor
        ("sum(x, dim=a)", {"x", "a"}, False),  # ... as a keyword
        ("cat(xs)", {"xs"}, False),  # not a written list
        ("ones(n)", {"n"}, False),  # a constructor of a value
        ("x.detach()", {"x"}, False),
        ("x.mean.sum()", {"x"}, False),  # attribute of an attribute
        ("not a", {"a"}, False),
        ("a and b", {"a", "b"}, False),
        ("a < b", {"a", "b"}, False),
        ("a if b else a", {"a", "b"}, False),
        ("[a, b]", {"a", "b"}, False),
        ("x.data * x", {"x"}, False),
        ("a.grad_fn", {"a"}, False),
        ("x[1:] * 2", {"x"}, False),
        ("a // b", {"a", "b"}, False),
        ("y = a\ny //= b\ny", {"a", "b"}, False),
        ("y = a\ny %= b\ny", {"a", "b"}, False),
        ("randn(3) * a", {"a"}, False),
        ("where(a > 0, a, 0)", {"a"}, False),
        ("clamp(a, 0, 1)", {"a"}, False),
        ("sin(a)", {"a", "sin"}, False),  # a bound name shadows the built-in
        ("sin = a\nsin(a)", {"a"}, False),  # an assigned name shadows it
        ("for exp in range(2):\n    a = a * 2\nexp(a)", {"a"}, False),  # a loop variable
        ("def f(x):\n    return x\nf(a)", {"a"}, False),
        ("lambda: a", {"a"}, False),
        ("import math\nmath.sin(a)", {"a"}, False),
        ("y = x = a\ny", {"a"}, False),
        ("assert a > 0\na", {"a"}, False),
        ("pass\na", {"a"}, False),
        ("f'{a}'", {"a"}, False),
        ("sum([a, b])", {"a", "b"}, False),
        ("float(a) * a", {"a"}, False),
        ("a.item() * a", {"a"}, False),
    ],
)
def test_replayable_decides_the_subset(formula: str, bound: set[str], accepted: bool) -> None:
    """``replayable`` on parsed programs: the subset's constructs pass, anything that
    may steer the graph by a value (or leave it) does not."""
    program = api._program(formula, DEFAULT_LIMITS)
    assert _replay.replayable(program, bound) is accepted


# ---------------------------------------------------------------- 4. verification


def test_a_value_dependent_program_let_through_is_caught_by_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were ``replayable`` to let an ``if`` on a value through, the third run (the other
    branch) must reject the recorded trace: answers stay right, nothing is verified."""
    monkeypatch.setattr(_replay, "replayable", lambda *args, **kwargs: True)
    formula = "if a > 0:\n    y = a * 2\nelse:\n    y = a * 3\ny"
    values = [1.5, 0.75, -1.25, 2.0, -0.5, 1.0, -2.0]
    for a in values:
        reply = json.loads(_line({"formula": formula, "vars": {"a": a}}))
        factor = 2.0 if a > 0 else 3.0
        assert reply["value"] == factor * a
        assert reply["gradients"] == {"a": factor}
    assert _entries(formula)  # a trace was recorded, then
    assert not _verified(formula)  # rejected


def test_a_detached_value_let_through_is_caught_by_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value cut from the graph (``detach``) is a constant in the trace: were it let
    through, verification on other values must reject it."""
    monkeypatch.setattr(_replay, "replayable", lambda *args, **kwargs: True)
    formula = "sum(x - detach(x).max())"
    rng = np.random.default_rng(2)
    for _ in range(6):
        x = np.round(rng.uniform(-2, 2, 4), 4)
        reply = json.loads(_line({"formula": formula, "vars": {"x": x.tolist()}}))
        assert "error" not in reply, reply
        assert reply["value"] == float(np.sum(x - x.max()))
        assert reply["gradients"] == {"x": [1.0] * 4}
    assert _entries(formula)
    assert not _verified(formula)


def test_a_trace_that_does_not_reproduce_its_run_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verification compares bits: a replay that is off by one ulp is not kept."""
    formula = "sum(exp(x) * x)"
    real = _replay.Trace.backward

    def off_by_an_ulp(self: _replay.Trace, data: list, saved: list, seed: Any) -> list:
        return [
            None if g is None else np.nextafter(g, np.inf) for g in real(self, data, saved, seed)
        ]

    monkeypatch.setattr(_replay.Trace, "backward", off_by_an_ulp)
    requests = Case(formula, {"x": (3,)}).requests(6, seed=1)
    expected = _plain_lines(monkeypatch, requests)
    assert _replayed_lines(requests) == expected
    assert _entries(formula) == [False]


# ---------------------------------------------------------------- 5. shapes


def test_new_shapes_get_their_own_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces are keyed by each leaf's type, dtype and shape: a formula asked with
    length 3, then 5, then 3 again answers right each time, with one trace per shape."""
    formula = "sum(x**2)"
    rng = np.random.default_rng(4)
    lengths = [3] * 4 + [5] * 4 + [3] * 3
    requests = [
        {"id": i, "formula": formula, "vars": {"x": np.round(rng.uniform(-2, 2, n), 4).tolist()}}
        for i, n in enumerate(lengths)
    ]
    expected = _plain_lines(monkeypatch, requests)
    got = _replayed_lines(requests)
    assert got == expected
    for request, line in zip(requests, got, strict=True):
        x = np.array(request["vars"]["x"])
        reply = json.loads(line)
        assert reply["gradients"]["x"] == (2 * x).tolist()
        assert reply["value"] == pytest.approx(float(np.sum(x**2)), rel=1e-15)
    (replays,) = api._REPLAYS.values()
    assert set(replays.traces) == {
        ((np.ndarray, np.dtype("float64"), (3,)),),
        ((np.ndarray, np.dtype("float64"), (5,)),),
    }
    assert all(entry.verified is True for entry in replays.traces.values())


def test_raw_spec_tells_types_dtypes_and_shapes_apart() -> None:
    """``_raw_spec`` separates a float backend's float, NumPy scalars of each dtype,
    and arrays of each shape."""
    leaves = [
        _tensor.leaf(2.0, requires_grad=True),
        _tensor.leaf(np.float64(2.0), requires_grad=True),
        _tensor.leaf(np.float32(2.0), requires_grad=True),
        _tensor.leaf(np.zeros(3), requires_grad=True),
        _tensor.leaf(np.zeros(3, np.float32), requires_grad=True),
        _tensor.leaf(np.zeros((3, 1)), requires_grad=True),
    ]
    specs = [api._raw_spec(leaf._raw) for leaf in leaves]
    assert len(set(specs)) == len(specs)
    assert specs[0] == (float,)


def test_a_float32_request_does_not_share_float64_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same formula and names in float32 and float64, interleaved: each answer as
    its dtype's ordinary one."""
    case = Case("sum(sin(x) * x) + a * 0.1", {"x": (3,), "a": S})  # (0.1: float32 not replayed)
    requests = [
        {**r, "dtype": "float32" if i % 2 else "float64"}
        for i, r in enumerate(case.requests(12, seed=8))
    ]
    assert _replayed_lines(requests) == _plain_lines(monkeypatch, requests)
    assert _verified(case.formula, "float64")


# ---------------------------------------------------------------- 6. fall backs


def test_non_finite_and_bad_values_answer_as_without_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a trace of ``sum(log(x))`` is verified, requests whose values give NaN or
    inf, or that are no valid values at all, answer exactly as the ordinary path."""
    formula = "sum(log(x))"
    good = Case(formula, {"x": (3,)}).requests(4, seed=9)
    odd = [
        [0.0, 1.0, 2.0],
        [-1.0, 1.0, 2.0],
        [1e-320, 1.0, 2.0],
        [1, "a", 2],
        [[1.0, 2.0], [3.0]],
        [1.0, 2.0],
        "ones(3)",
        "rand(2) + 1",
        [True, 1.0, 2.0],
        [1e308, 1e308, 1e308],
        [10**400, 1.0, 2.0],
        {"nested": 1},
    ]
    requests = good + [
        {"id": 10 + i, "formula": formula, "vars": {"x": v}} for i, v in enumerate(odd)
    ]
    requests += Case(formula, {"x": (3,)}).requests(2, seed=10)
    expected = _plain_lines(monkeypatch, requests)
    got = _replayed_lines(requests)
    assert _verified(formula)
    for request, a, b in zip(requests, got, expected, strict=True):
        if request["vars"]["x"] == "rand(2) + 1":  # random: same shape of answer
            assert json.loads(a).keys() == json.loads(b).keys()
            continue
        assert a == b, request


def test_grad_output_of_the_wrong_shape_answers_as_without_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error raised after the replayed forward pass (a seed of the wrong shape) is
    the ordinary error."""
    case = Case("x * 2", {"x": (3,)}, {"grad_output": [1, 2, 3]})
    requests = case.requests(5, seed=3)
    requests += [{**requests[0], "grad_output": [1, 2]}, {**requests[1], "grad_output": "x"}]
    expected = _plain_lines(monkeypatch, requests)
    assert _replayed_lines(requests) == expected
    assert '"error"' in expected[-2]


# ---------------------------------------------------------------- float backend state


FLOAT_BACKEND = [
    # (formula, values for "a" (4 decimals), why)
    ("y = a * 1\nmax(y) + tanh(y)", "max() (no float forward) turns y into a NumPy float64"),
    (
        "y = a * 1\ny ** 0.5 + tanh(y) * b",
        "y ** 0.5 of a negative y declines on floats and turns y into a NumPy float64",
    ),
]


def _math_and_numpy_differ(x: float) -> bool:
    return math.tanh(x) != float(np.tanh(np.float64(x)))


@pytest.mark.parametrize(("formula", "why"), FLOAT_BACKEND, ids=["max", "declined-pow"])
def test_float_backend_values_that_turn_numpy_replay_the_same(
    formula: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine converts a float backend tensor's data to NumPy for good once an op
    reads ``_data`` (no float forward, or a float forward that declined); later ops on
    it run NumPy's functions. The replay must run the same ones."""
    del why
    rng = np.random.default_rng(0)
    candidates = [round(float(v), 4) for v in rng.uniform(0.2, 3.0, 400)]
    same = [v for v in candidates if not _math_and_numpy_differ(v)][:3]
    differ = [-v for v in candidates if _math_and_numpy_differ(-v)][:3]
    differ += [v for v in candidates if _math_and_numpy_differ(v)][:3]
    assert len(same) == 3 and len(differ) == 6
    requests = [{"formula": formula, "vars": {"a": v, "b": 1.0}} for v in same + differ]
    if "b" not in formula:
        for request in requests:
            del request["vars"]["b"]
    assert _replayed_lines(requests) == _plain_lines(monkeypatch, requests)


def test_trunc_replays_with_the_signs_of_the_new_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """``trunc`` of a vector: verified on positive values, then asked on negative ones."""
    formula = "sum(trunc(x) * x)"
    values = [[0.25, 0.5, 0.75], [0.5, 0.25, 1.5], [1.25, 0.75, 0.5], [1.5, 2.5, -1.5]]
    requests = [{"formula": formula, "vars": {"x": x}} for x in values]
    assert _replayed_lines(requests) == _plain_lines(monkeypatch, requests)


def test_a_mask_a_built_in_makes_from_the_values_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``amax(x, 0)`` spreads its gradient with a mask of where the maxima are, made in
    Python from ``x``: a constant of the graph that other values change. Verified on
    values with the maxima in the same places, the trace must still not be used on
    values with them elsewhere."""
    matrices = [[[1.0, 5.0], [3.0, 2.0]], [[1.5, 6.0], [3.5, 2.5]], [[0.5, 7.0], [4.0, 1.0]]]
    matrices += [[[9.0, 1.0], [3.0, 2.0]], [[2.0, 2.0], [2.0, 2.0]]]
    for formula in ("sum(amax(x, 0) * w)", "sum(x.amin(1) * w)"):
        requests = [{"formula": formula, "vars": {"x": x, "w": [1.0, 2.0]}} for x in matrices]
        assert _replayed_lines(requests) == _plain_lines(monkeypatch, requests)
        assert not _verified(formula)


@pytest.mark.parametrize(
    ("formula", "values", "extra"),
    [
        ("a*x + exp(a)", [1.6331, 2.8613, 0.6036, 1.3287], {"x": [0.5, 1.5]}),
        ("exp(a) + a*x", [1.6331, 2.8613, 0.6036, 1.3287], {"x": [0.5, 1.5]}),
        ("3*log(a) - a*sum(x)", [0.73, 2.5465, 3.0473, 2.6109], {"x": [0.5, 1.25, 2.0]}),
        ("float_power(a, 2) + tanh(a)", [1.9835, 0.3147, 2.4772, 0.2463], {}),
        ("log(a) + tanh(a)", [-1.25, 1.9835, 0.3147, 2.4772, 0.2463], {}),
    ],
)
def test_a_float_value_numpy_reads_is_numpy_only_where_the_engine_had_it(
    formula: str, values: list[float], extra: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scalar variable beside an array (or read by ``float_power``) becomes NumPy's
    float64 for good where the program first reads it so, in the program's order; the
    ops before that ran ``math``'s functions on it (1 ulp apart from NumPy's, for some
    values). A replay must give each op what the engine gave it; and a trace made on
    values where ``math`` declined (``log(-1.25)``) holds for no others."""
    requests = [{"formula": formula, "vars": {"a": a, **extra}} for a in values]
    assert _replayed_lines(requests) == _plain_lines(monkeypatch, requests)


def test_code_whose_ops_do_not_reach_the_output_declines_the_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``y = a ** 0.5`` is not part of the output, but for a negative ``a`` the float
    backend declines it and turns ``a`` into NumPy's float64, so ``exp(a)`` runs NumPy's
    exp: a trace holds only the output's graph, and must not be made of such a run."""
    formula = "y = a ** 0.5\nexp(a) * b"
    for values in ([2.7328, 3.509, 0.3624, -1.5728, 0.3632], [-2.7328, -3.509, -0.36, 1.57, -0.3]):
        api._REPLAYS.clear()
        requests = [{"formula": formula, "vars": {"a": a, "b": 2.0}} for a in values]
        assert _replayed_lines(requests) == _plain_lines(monkeypatch, requests)
        assert not _verified(formula)


def test_a_literal_numpy_converts_later_retires_the_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float literal given to a function (``div(2.0, a)``) is shared by every run of its
    compiled program, and NumPy's first read of it (``a = 0`` declines ``2.0 / a`` on
    floats) turns it into NumPy's float64 for good; later runs then differ from a trace
    made before. The trace must give way, not answer as before."""
    formula = "div(2.0, a) + exp(a)"
    values = [1.1, 1.3, 0.4, 0.0, 3.7922, 4.2154, 1.3032]
    requests = [{"formula": formula, "vars": {"a": a}} for a in values]
    replayed = _replayed_lines(requests)
    api._REPLAYS.clear()
    api._PROGRAMS.clear()  # (a fresh program: its literal as the ordinary runs see it)
    from gradcalc import interpreter

    interpreter._CACHE.clear()
    expected = _plain_lines(monkeypatch, requests)
    assert replayed == expected


def test_no_grad_is_answered_as_the_ordinary_run_answers() -> None:
    """Under ``no_grad()`` nothing is recorded: a replay must not give gradients."""
    formula = "a * b + exp(a)"
    for a in (1.0, 1.5, 2.0):
        api.evaluate(formula, {"a": a, "b": 2.0})
    assert _verified(formula)
    with _tensor.no_grad():
        result = api.evaluate(formula, {"a": 1.25, "b": 2.0})
    assert result.unused == ["a", "b"]
    assert float(result.gradients["a"]) == 0.0


def test_a_nan_keeps_its_sign_as_the_engine_folds_negation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine's raw backward never negates an array gradient: it subtracts where the
    negation would be added (``_tensor._Negated``). On finite values the bits are the
    same either way, on a NaN not (its sign bit): the replay folds negation the same way,
    so even a NaN gradient is the engine's, bit for bit."""
    formula = "rsub(b + y, (-y) * float_power(x, b))"
    ok = {"b": 2.5, "x": [5.0, 1.0], "y": [1.0, 2.0]}
    bad = {"b": 2.5, "x": [-5.0, 1.0], "y": [1.0, 2.0]}
    for values in (ok, ok, ok):
        api.evaluate(formula, values)
    assert _verified(formula)
    got = api.evaluate(formula, bad)
    with _replays_off(monkeypatch):
        want = api.evaluate(formula, bad)
    for name in want.gradients:
        assert (
            np.asarray(got.gradients[name]).tobytes() == np.asarray(want.gradients[name]).tobytes()
        )


def test_a_python_float_overflow_in_a_vjp_beside_an_array_gives_infinity() -> None:
    """``pow(b, -1)`` of a tiny scalar ``b`` beside arrays: its VJP overflows in Python's
    float arithmetic; the engine retries on NumPy (-inf, and a note), as it does where
    no buffer is donated, instead of reporting an error."""
    result = api.evaluate(
        "flatten(pow(b, -1)) + x * y", {"b": 1e-300, "x": [1.0, 2.0, 3.0], "y": [2.0, 2.0, 2.0]}
    )
    assert float(result.gradients["b"]) == -math.inf
    assert any("Non-finite" in note for note in result.notes)


# ---------------------------------------------------------------- 7. the registry walk


DIFFERENTIABLE = [v for v in vars(ops).values() if isinstance(v, ops.Op) and v.node is not None]
DECLINED = {"where", "index", "index_add", "nll_loss", "binary_cross_entropy_with_logits"}
"""Ops whose samples give an array as an option (a mask, indices, class targets, weights):
``Trace.of`` declines them, as it cannot tell a literal from values of the inputs (those
requests run the ordinary way)."""


def _domain(op: ops.Op, position: int) -> str:
    domain = op.sample.domain
    return domain if isinstance(domain, str) else domain[position]


def _operand_data(op: ops.Op, shapes: tuple, rng: np.random.Generator) -> list:
    """One datum per operand from the op's sample domain (as the gradient check makes
    them): a Python float for a ``None`` shape, else a float64 array."""
    data = []
    for position, shape in enumerate(shapes):
        name = _domain(op, 0 if op.arity == "n" else position)
        if shape is None:
            data.append(float(ops.DOMAINS[name](rng, ())))
        else:
            data.append(np.asarray(ops.DOMAINS[name](rng, shape), dtype=np.float64))
    return data


def _leaves(data: list, backend: str) -> tuple[list, list]:
    """Operands (leaves for arrays, the numbers as they are) and the leaves alone:
    ``backend`` float64/float32 arrays (0-d ones as NumPy scalars, as the language makes
    them) or ``floats`` (a 0-d value as the float backend's Python float)."""
    operands, leaves = [], []
    for datum in data:
        if type(datum) is float:
            operands.append(datum)
            continue
        if backend == "floats":
            raw: Any = float(datum)
        else:
            array = datum.astype(backend)
            raw = array[()] if array.ndim == 0 else array
        leaf = _tensor.leaf(raw, requires_grad=True)
        operands.append(leaf)
        leaves.append(leaf)
    return operands, leaves


def _apply(op: ops.Op, operands: list, consts: tuple) -> Any:
    if op.arity == "n":
        return ops.invoke(op, [operands], consts)
    return ops.invoke(op, operands, consts)


def _scalar(out: Any, weights: Any) -> Any:
    """The op's output reduced to one value, each element weighed (so every element's
    gradient counts); a 0-d output as it is."""
    if not np.shape(out._raw):
        return out
    return (out * weights).sum()


def _bits(x: Any) -> tuple:
    """What must agree bit for bit: the type, and for NumPy data its dtype, shape, bytes."""
    if type(x) is float:
        return (float, x.hex())
    array = np.asarray(x)
    return (type(x), array.dtype.str, array.shape, array.tobytes())


def _registry_cases() -> list:
    """(op, shapes, consts, backend): float64 and float32 arrays (0-d: NumPy scalars),
    and the float backend's Python floats where every operand is 0-d and the op has a
    float forward."""
    params = []
    for op in DIFFERENTIABLE:
        for number, (shapes, consts) in enumerate(op.sample.cases()):
            backends = ["float64", "float32"]
            if op.scalar is not None and all(s in ((), None) for s in shapes):
                backends.append("floats")
            for backend in backends:
                params.append(
                    pytest.param(op, shapes, consts, backend, id=f"{op.name}-{number}-{backend}")
                )
    return params


def _walk_one(op: ops.Op, shapes: tuple, consts: tuple, backend: str) -> str | None:
    """Trace the op on one set of leaves, replay it on another; compare with the engine.
    Returns "declined" when ``Trace.of`` gives None, else None (asserting equality)."""
    rng = np.random.default_rng(abs(hash((op.name, repr(shapes), backend))) % 2**32)
    first = _operand_data(op, shapes, rng)
    operands, leaves = _leaves(first, backend)
    out = _apply(op, operands, consts)
    if not out._requires_grad:
        return None
    weights = rng.standard_normal(np.shape(out._raw)).astype(np.asarray(out._raw).dtype)
    weights = literal(weights)  # (alive while traced: a trace keeps no other made array)
    trace = _replay.Trace.of(leaves, _scalar(out, weights))
    if trace is None:
        return "declined"
    for _ in range(2):  # new values, twice (a trace is replayed many times)
        fresh = _operand_data(op, shapes, rng)
        numbers = [d for d in first if type(d) is float]
        fresh = [numbers.pop(0) if type(d) is float else d for d in fresh]  # same constants
        engine_operands, engine_leaves = _leaves(fresh, backend)
        _, replay_leaves = _leaves(fresh, backend)
        _, store_leaves = _leaves(fresh, backend)
        scalar = _scalar(_apply(op, engine_operands, consts), weights)
        with np.errstate(all="ignore"):
            try:
                data, saved = trace.run([leaf._raw for leaf in replay_leaves])
            except _replay.Declined:  # (the float backend declined: the api runs it anew)
                continue
            value = data[-1]
            seed = _tensor._seed_gradients([_tensor._wrap(value)], None)[0]._raw
            totals = trace.backward(data, saved, seed)
            scalar.backward()
        assert _bits(value) == _bits(scalar._raw), f"{op.name} value"
        assert len(totals) == len(engine_leaves)
        for index, (total, leaf, store) in enumerate(
            zip(totals, engine_leaves, store_leaves, strict=True)
        ):
            if total is None:
                assert leaf.grad is None, f"{op.name} d/d#{index}: the replay has none"
                continue
            _tensor._store_leaf_data(store, total, False)  # as api._replayed_backward stores it
            assert leaf.grad is not None, f"{op.name} d/d#{index}: the engine has none"
            assert _bits(store._grad._raw) == _bits(leaf._grad._raw), f"{op.name} d/d#{index}"
    return None


@pytest.mark.usefixtures("backward_loops")  # the engine's C and Python loops alike
@pytest.mark.parametrize(("op", "shapes", "consts", "backend"), _registry_cases())
def test_every_registry_op_replays_as_the_engine_runs_it(
    op: ops.Op, shapes: tuple, consts: tuple, backend: str
) -> None:
    """Each differentiable op, on its sample's shapes and consts: a trace of it
    replayed on new values gives the engine's value and gradients bit for bit."""
    with np.errstate(all="ignore"):
        outcome = _walk_one(op, shapes, consts, backend)
    if outcome == "declined":
        print(f"declined: {op.name} {shapes} {consts!r} {backend}")
        assert op.name in DECLINED, f"Trace.of declined {op.name} ({backend})"


def test_the_registry_walk_covers_every_differentiable_op() -> None:
    """The walk is over the registry itself: a new op is replayed the moment it exists."""
    assert {op.name for op in DIFFERENTIABLE} == {
        name for name, op in ops.REGISTRY.items() if op.node is not None
    }
    assert len(DIFFERENTIABLE) > 60
    assert gradcalc.sum is not None
