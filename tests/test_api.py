"""gradcalc.api on real formulas: evaluate, jacobian, hessian, run_request."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from gradcalc import api
from gradcalc.errors import FormulaError, LimitError, ShapeError, UnknownNameError
from gradcalc.limits import Limits


def test_seed_000() -> None:
    result = api.evaluate("3*a**3 - b**2", {"a": 2, "b": 6})
    assert result.value.shape == () and float(result.value) == -12.0
    assert result.dtype == "float64"
    assert {k: float(v) for k, v in result.gradients.items()} == {"a": 36.0, "b": -12.0}
    assert result.unused == [] and result.summed is False and result.check is None


def test_values_may_be_numbers_lists_arrays_or_constant_formulas() -> None:
    result = api.evaluate(
        "sum(x @ w) + s", {"x": "arange(6).reshape(2, 3)", "w": [[1], [1], [1]], "s": "2.5"}
    )
    assert float(result.value) == 17.5
    np.testing.assert_array_equal(result.gradients["w"], [[3.0], [5.0], [7.0]])
    np.testing.assert_array_equal(result.gradients["x"], np.ones((2, 3)))
    from_array = api.evaluate("x * 2", {"x": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(from_array.value, [2.0, 4.0])
    with pytest.raises(FormulaError):
        api.evaluate("x", {"x": {"a": 1}})


@pytest.mark.parametrize(
    "text",
    ["[1, 0.5]", "[[1, 0.5], [-0.3, 2]]", "[1e3, -2E-2, -0.0]", "[]", "[[]]", "[1,2,]", "[.5, 1]"],
)
def test_a_list_in_text_reads_as_the_constant_formula_it_is(text: str) -> None:
    """``x=[[1, 0.5], ...]`` on the command line is read as JSON when it is JSON (a
    one-shot vector command then skips a parse and a run of the interpreter per
    variable); the value must be what the formula language makes of the same text."""
    from gradcalc.interpreter import Interpreter

    interp = Interpreter()
    interp.bind("x", text)
    expected = np.asarray(interp.env["x"]._data)
    got = api.evaluate("x * 1", {"x": text}).value
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("text", ["[1, [2]]", "[[1, 2], [3]]", "[true]", "[NaN]", "[1, pi]"])
def test_a_list_in_text_that_is_not_plain_json_numbers_is_a_formula(text: str) -> None:
    """Ragged rows, JSON's other values and names keep the formula language's reading
    (and its error messages, which say where)."""
    assert api._binding_values({"x": text})["x"] == text


def test_non_scalar_output_is_summed_unless_seeded() -> None:
    summed = api.evaluate("x**2", {"x": [1.0, 2.0]})
    assert summed.summed and any("sum" in note for note in summed.notes)
    np.testing.assert_array_equal(summed.gradients["x"], [2.0, 4.0])
    seeded = api.evaluate("x**2", {"x": [1.0, 2.0]}, grad_output=[1.0, 0.0])
    assert not seeded.summed
    np.testing.assert_array_equal(seeded.gradients["x"], [2.0, 0.0])
    with pytest.raises(ShapeError):
        api.evaluate("x**2", {"x": [1.0, 2.0]}, grad_output=[1.0, 0.0, 3.0])


def test_wrt_intermediates_and_unknown_names() -> None:
    result = api.evaluate("h = x * 3; y = h * h", {"x": 2.0}, wrt=["h", "x"])
    assert list(result.gradients) == ["h", "x"]
    assert float(result.gradients["h"]) == 12.0 and float(result.gradients["x"]) == 36.0
    with pytest.raises(UnknownNameError):
        api.evaluate("x * 2", {"x": 1.0}, wrt=["nope"])


def test_unused_bindings_get_zeros_of_their_shape() -> None:
    result = api.evaluate("a * 2", {"a": 1.0, "m": "ones(2, 3)"})
    assert result.unused == ["m"]
    np.testing.assert_array_equal(result.gradients["m"], np.zeros((2, 3)))


def test_program_leaves_are_reported_by_default() -> None:
    result = api.evaluate("a = 2; b = 6; 3*a**3 - b**2", {})
    assert {k: float(v) for k, v in result.gradients.items()} == {"a": 36.0, "b": -12.0}


def test_constant_output_has_zero_gradients() -> None:
    result = api.evaluate("3 + 4", {"a": 1.0})
    assert float(result.value) == 7.0 and result.unused == ["a"]


def test_non_finite_values_are_noted_not_raised() -> None:
    result = api.evaluate("log(a) + 1/b", {"a": -1.0, "b": 0.0})
    assert np.isnan(result.value)
    assert any("not finite" in note for note in result.notes)
    assert api.result_to_json(result)["value"] == "NaN"


def test_check_agrees_on_smooth_functions_and_not_at_kinks() -> None:
    smooth = api.evaluate("sum(tanh(x) * exp(y))", {"x": [0.1, -0.7], "y": 0.3}, check=True)
    assert smooth.check is not None and max(smooth.check.values()) < 1e-7
    kink = api.evaluate("relu(x)", {"x": 0.0}, check=True)
    assert kink.check is not None and kink.check["x"] > api.CHECK_TOLERANCE
    intermediate = api.evaluate("h = x * 2; h * h", {"x": 1.0}, wrt=["h"], check=True)
    assert intermediate.check == {"h": None}


def test_float32() -> None:
    result = api.evaluate("x / 3", {"x": 1}, dtype="float32")
    assert result.dtype == "float32" and result.gradients["x"].dtype == np.float32


def test_limits_are_enforced() -> None:
    with pytest.raises(LimitError):
        api.evaluate("sum(ones(100))", {}, limits=Limits(max_elements=10))


def test_graph_is_built_on_request() -> None:
    result = api.evaluate("b = a + a; c = b * b", {"a": 3.0}, graph=True)
    graph = result.graph
    assert graph is not None
    assert [n.op for n in graph.nodes] == ["MulBackward0", "AddBackward0", "AccumulateGrad"]
    assert [n.name for n in graph.nodes] == ["c", "b", "a"]
    assert float(graph.nodes[0].value) == 36.0 and float(graph.nodes[0].grad) == 1.0
    assert float(graph.nodes[1].grad) == 12.0 and float(graph.nodes[2].grad) == 24.0
    assert api.evaluate("a * 2", {"a": 1.0}).graph is None


def test_deep_graph_walks_without_recursion() -> None:
    chain = "y = x\nfor i in range(30000):\n    y = y * 1.0\ny"
    result = api.evaluate(chain, {"x": 2.0}, graph=True)
    assert result.graph is not None and len(result.graph.nodes) == 30001
    assert float(result.gradients["x"]) == 1.0


def test_jacobian_and_hessian() -> None:
    jac = api.jacobian("w @ x", {"w": [[1, 2], [3, 4], [5, 6]], "x": [7, 8]})
    assert jac.jacobian is not None
    np.testing.assert_array_equal(jac.jacobian["x"], [[1, 2], [3, 4], [5, 6]])
    assert jac.jacobian["w"].shape == (3, 3, 2)
    hess = api.hessian("x**3 * y", {"x": 2.0, "y": 3.0})
    assert hess.hessian is not None
    assert float(hess.hessian["x"]["x"]) == 36.0 and float(hess.hessian["x"]["y"]) == 12.0
    with pytest.raises(ShapeError):
        api.hessian("x * 2", {"x": [1.0, 2.0]})


def test_run_request_never_raises_and_echoes_id() -> None:
    good = api.run_request({"id": 7, "formula": "3*a**3 - b**2", "vars": {"a": 2, "b": 6}})
    assert good == {
        "id": 7,
        "schema_version": 1,
        "value": -12.0,
        "shape": [],
        "dtype": "float64",
        "gradients": {"a": 36.0, "b": -12.0},
    }
    for bad in [None, 3, {"id": 1}, {"id": 2, "formula": "3*(a"}, {"id": 3, "formula": "q"}]:
        reply = api.run_request(bad)
        assert "error" in reply and reply["id"] == (
            bad.get("id") if isinstance(bad, dict) else None
        )
    wrt = api.run_request({"formula": "a*b", "vars": {"a": 2, "b": 3}, "wrt": "b"})
    assert wrt["gradients"] == {"b": 2.0} and wrt["id"] is None
    pickle.dumps(api.run_request)
    pickle.dumps(api.run_lines)


def test_run_line_output_is_strict_json() -> None:
    text, ok = api.run_line('{"id": 1, "formula": "log(a)", "vars": {"a": 0}}')
    assert ok
    payload = json.loads(text, parse_constant=lambda c: pytest.fail(c))
    assert payload["value"] == "-Infinity"


# The shortcut: a plain backward into fresh leaves' .grad instead of autograd.grad's pruning.

_SHORTCUT_CASES = [
    ("y = x\nfor i in range(50):\n    y = sin(y * 0.9 + x) * 0.99\ny", {"x": "0.5"}, ["x"], None),
    ("3*a**3 - b**2", {"a": 2, "b": 6}, None, None),
    (
        "sum(x @ w) + s",
        {"x": "arange(6).reshape(2, 3)", "w": [[1], [1], [1]], "s": 2.5},
        None,
        None,
    ),
    ("x**2 * y", {"x": [1.0, 2.0], "y": 3.0}, None, None),
    ("x**2 * y", {"x": [1.0, 2.0], "y": 3.0}, None, [0.5, -2.0]),
    ("x * 2", {"x": [1.0, 2.0], "z": [[1.0, 2.0]]}, None, None),
    ("x * x + x", {"x": 3.0}, ["x", "x"], None),
    ("y = x\ny * 4", {"x": 1.5}, None, None),
]


def _without_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_owns_every_leaf", lambda run, inputs: False)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("formula", "bindings", "wrt", "seed"), _SHORTCUT_CASES)
def test_backward_shortcut_matches_autograd_grad(
    monkeypatch: pytest.MonkeyPatch, formula: str, bindings: dict, wrt, seed, dtype: str
) -> None:
    fast = api.result_to_json(
        api.evaluate(formula, bindings, wrt=wrt, grad_output=seed, dtype=dtype)
    )
    _without_shortcut(monkeypatch)
    slow = api.result_to_json(
        api.evaluate(formula, bindings, wrt=wrt, grad_output=seed, dtype=dtype)
    )
    assert fast == slow


def _spy_shortcut(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = api._backward_into

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(api, "_backward_into", spy)
    return calls


def test_backward_shortcut_runs_for_bound_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_shortcut(monkeypatch)
    result = api.evaluate("y = x\nfor i in range(3):\n    y = y * x\ny", {"x": 2.0}, wrt=["x"])
    assert calls and float(result.gradients["x"]) == 32.0
    # jacobian keeps the graph for its rows after the shortcut's backward
    jac = api.jacobian("x**2", {"x": [1.0, 3.0]})
    np.testing.assert_array_equal(jac.jacobian["x"], [[2.0, 0.0], [0.0, 6.0]])


@pytest.mark.parametrize(
    ("formula", "bindings", "wrt", "graph", "want"),
    [
        # an intermediate name: only autograd.grad reaches it
        (
            "r1 = x*y\nr2 = r1 + x\nr2 * r1",
            {"x": 2.0, "y": 3.0},
            ["x", "y", "r1", "r2"],
            False,
            {"x": 48.0, "r1": 14.0, "r2": 6.0},
        ),
        # the program's own backward filled x.grad: it must not leak into the answer
        ("y = x*x\ny.backward()\nx*3", {"x": 2.0}, ["x"], False, {"x": 3.0}),
        # ... and freed a's graph, which the gradient of y must not walk through
        ("a = x*x\na.backward()\na + y", {"x": 2.0, "y": 1.0}, ["y"], False, {"y": 1.0}),
        # another named leaf would get a gradient nobody asked for
        ("c = 2.0\nx * c", {"x": 2.0}, ["x"], False, {"x": 2.0}),
        ("x * y", {"x": 2.0, "y": 5.0}, ["x"], False, {"x": 5.0}),
        # --graph shows each node's gradient as autograd.grad's pruned pass leaves it
        ("x * y", {"x": 2.0, "y": 5.0}, ["x"], True, {"x": 5.0}),
    ],
)
def test_backward_shortcut_stands_aside(
    monkeypatch: pytest.MonkeyPatch, formula: str, bindings: dict, wrt, graph: bool, want: dict
) -> None:
    calls = _spy_shortcut(monkeypatch)
    result = api.evaluate(formula, bindings, wrt=wrt, graph=graph)
    assert not calls
    assert {name: float(result.gradients[name]) for name in want} == want


def test_backward_shortcut_keeps_errors_and_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_shortcut(monkeypatch)
    result = api.evaluate("x * 2 + 0 * sum(z) ", {"x": 1.0, "z": [1.0, 2.0]})
    assert calls and result.unused == []
    unused = api.evaluate("x * 2", {"x": 1.0, "z": [1.0, 2.0]})
    assert unused.unused == ["z"]
    np.testing.assert_array_equal(unused.gradients["z"], [0.0, 0.0])
    with pytest.raises(ShapeError):
        api.evaluate("x * 2", {"x": [1.0, 2.0]}, grad_output=[1.0, 2.0, 3.0])


def test_a_request_leaves_no_free_engine_buffers_behind() -> None:
    # Large arrays of a request go through the engine's buffer pool; once the
    # result is built the free ones go back to malloc (a REPL holds no memory).
    from gradcalc import _recycle
    from gradcalc.api import evaluate, jacobian

    big = "sum(tanh(x) * x**2 + exp(-x))"
    result = evaluate(big, {"x": "linspace(0, 1, 300000)"})
    assert result.gradients["x"].shape == (300000,)
    assert _recycle.held_bytes() == 0
    jacobian("tanh(x[0:3]) * sum(x)", {"x": "linspace(0, 1, 300000)"})
    assert _recycle.held_bytes() == 0
    descent = "for i in range(3):\n    g = grad(sum(sin(x*w)**2), w)\n    w = w - 0.1*g\nsum(w)"
    evaluate(descent, {"x": "linspace(0, 1, 300000)", "w": "ones(300000)"})
    assert _recycle.held_bytes() == 0  # the program's graph died with the request


@pytest.mark.parametrize(
    "value",
    [[1, 2.5, True], [[1.0, 2.0], [3.0, 4.0]], [[[1], [2]], [[3], [4]]], [(1, 2), [3, 4]], [[]]],
)
def test_nested_lists_of_numbers_are_values(value: list) -> None:
    result = api.evaluate("sum(x)", {"x": value})
    np.testing.assert_array_equal(result.gradients["x"], np.ones(np.shape(value)))


@pytest.mark.parametrize(
    "value",
    [
        [1, "2"],
        [[1.0, 2.0], [3.0, None]],
        [[1, 2], [3, {"a": 4}]],
        [[[1]], [[2, "x"]]],
        [1, [2, {}]],
    ],
)
def test_lists_holding_anything_but_numbers_are_refused(value: list) -> None:
    # (a string in a list would become a number in NumPy's hands: refused before)
    with pytest.raises(FormulaError, match="expected a number, a list of numbers"):
        api.evaluate("sum(x)", {"x": value})
