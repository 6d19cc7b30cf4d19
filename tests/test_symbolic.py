"""Derivatives as formulas (gradcalc/symbolic.py, ``api.derivatives``).

Every differentiable elementwise op of the registry (walked, so a new op is
covered the day it is declared): its symbolic derivative, printed and evaluated
by gradcalc at the sample point, equals the engine's gradient. Formulas: the
printed derivative parses and evaluates to ``evaluate``'s gradient (round trip).
A length table against hand-written expected forms (SymPy-like) for 30+ formulas.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import numpy as np
import pytest

import gradcalc as torch
from gradcalc import api, ops, symbolic
from gradcalc.autograd import grad
from gradcalc.errors import FormulaError, FormulaValueError, UnknownNameError

RTOL = 1e-9


def evaluate_text(program: str, point: dict) -> np.ndarray:
    """A derivative's text run as a gradcalc program at ``point`` (names bound as constants)."""
    bindings = {n: np.asarray(v).tolist() for n, v in point.items()}
    return np.asarray(api.evaluate(program, bindings, wrt=[]).value, dtype=np.float64)


# ---------------------------------------------------------------- every registry op

ELEMENTWISE = [op for op in ops.REGISTRY.values() if symbolic.is_elementwise(op)]


def test_every_public_elementwise_op_is_covered():
    for entry in ops.API.values():
        if entry.op is not None and entry.op.vjps is not None and entry.elementwise:
            assert symbolic.is_elementwise(entry.op), entry.name
    for op in ops.REGISTRY.values():
        if op.vjps is not None and op.ufunc is not None:
            assert symbolic.is_elementwise(op), op.name
    assert len(ELEMENTWISE) >= 30


def _cases(op: ops.Op) -> list[tuple[tuple, tuple]]:
    """Sample cases whose tensor operands all have one shape (no broadcast sums)."""
    found = []
    for shapes, consts in op.sample.cases():
        tensor_shapes = {s for s in shapes if s is not None}
        if len(tensor_shapes) == 1:
            found.append((shapes, consts))
    return found


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_symbolic_derivative_of_each_op_equals_the_engines_gradient(op: ops.Op):
    cases = _cases(op)
    assert cases, f"{op.name}: no sample case without broadcasting"
    rng = np.random.default_rng(14)
    for shapes, consts in cases:
        names = [f"x{i}" for i in range(len(shapes))]
        operands, leaves = [], {}
        for i, shape in enumerate(shapes):
            domain = op.sample.domain if isinstance(op.sample.domain, str) else op.sample.domain[i]
            data = np.asarray(ops.DOMAINS[domain](rng, () if shape is None else shape))
            if shape is None:
                operands.append(float(data))
            else:
                leaf = torch.tensor(data, requires_grad=True)
                operands.append(leaf)
                leaves[names[i]] = leaf
        output = ops.invoke(op, operands, consts)
        engine = grad([output.sum()], list(leaves.values()), allow_unused=True)
        output = ops.invoke(op, operands, consts)
        raw, values = symbolic._trace(lambda: (SimpleNamespace(value=output), leaves))  # noqa: B023
        builder, exprs = symbolic._canonical(raw, list(leaves))
        found = symbolic._printed(builder, exprs, [], values)
        for (name, leaf), expected in zip(leaves.items(), engine, strict=True):
            want = np.zeros(leaf.shape) if expected is None else expected.numpy()
            got = evaluate_text(found.programs[name], values)
            np.testing.assert_allclose(
                np.broadcast_to(got, want.shape), want, rtol=RTOL, atol=1e-12,
                err_msg=f"{op.name} {consts} d/d{name} = {found.programs[name]}",
            )  # fmt: skip


# ---------------------------------------------------------------- formulas: round trip

FORMULAS = [
    "3*a**3 - b**2",
    "exp(-a)*sin(b) + log(a*b)",
    "sqrt(a**2 + b**2)",
    "tanh(a*b) + sigmoid(a - b)",
    "erf(a)*log1p(b**2)",
    "a**b + 2**a",
    "(a - 1)/(a + 1) * b",
    "x = a*b; y = sin(x); y*y + x",
    "def f(x):\n    return x*exp(x)\nf(a) + f(b)**2",
    "s = a\nfor i in range(4):\n    s = s*b + a\ns",
    "tan(a)/cos(b) - a**-2",
    "exp(a)**3 - exp(3*a) + b",
    "abs(a)*b + floor(a)*b",
    "1/(1 + exp(-a*b))",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_printed_derivative_evaluates_to_the_gradient(formula: str):
    rng = np.random.default_rng(7)
    found = api.derivatives(formula)
    assert list(found.derivatives) == ["a", "b"]
    for _ in range(3):
        point = {"a": float(rng.uniform(0.3, 1.5)), "b": float(rng.uniform(0.3, 1.5))}
        gradients = api.evaluate(formula, point).gradients
        for name, program in found.programs.items():
            got = evaluate_text(program, point)
            np.testing.assert_allclose(got, gradients[name], rtol=RTOL, atol=1e-12, err_msg=program)


def test_the_issue_example():
    found = api.derivatives("3*a**3 - b**2")
    assert found.derivatives == {"a": "9*a**2", "b": "-2*b"}
    assert found.lines() == ["d/da = 9*a**2", "d/db = -2*b"]


def test_wrt_picks_and_orders_names():
    assert api.derivatives("a*b*c", wrt=["c", "a"]).derivatives == {"c": "a*b", "a": "b*c"}
    with pytest.raises(UnknownNameError, match="'z' is not a variable"):
        api.derivatives("a*b", wrt=["z"])


def test_unused_and_constant_outputs():
    assert api.derivatives("a*0 + b").derivatives == {"a": "0", "b": "1"}
    assert api.derivatives("a").derivatives == {"a": "1"}
    assert api.derivatives("x = 2; a + x*a").derivatives == {"a": "3"}


def test_shared_subexpressions_are_named_when_long():
    formula = "x = a\nfor i in range(5):\n    x = sin(x)*exp(x)\nx"
    found = api.derivatives(formula)
    assert found.intermediates, found.derivatives
    names = [name for name, _ in found.intermediates]
    assert names == [f"t{i}" for i in range(1, len(names) + 1)]
    assert found.programs["a"].startswith("t1 = ")
    point = {"a": 0.4}
    expected = api.evaluate(formula, point).gradients["a"]
    np.testing.assert_allclose(evaluate_text(found.programs["a"], point), expected, rtol=RTOL)
    assert "t1" not in found.inline["a"]  # the written-out form too
    np.testing.assert_allclose(evaluate_text(found.inline["a"], point), expected, rtol=RTOL)


def test_intermediate_names_avoid_the_formulas_names():
    formula = "x = t1\nfor i in range(5):\n    x = sin(x)*exp(x)\nx"
    found = api.derivatives(formula)
    assert found.intermediates
    assert all(name != "t1" for name, _ in found.intermediates)


def test_a_long_flat_sum_does_not_recurse():
    formula = " + ".join(f"a**{i % 7}*b" for i in range(3000))
    found = api.derivatives(formula)
    assert found.derivatives["b"].count("a**") <= 6


def test_a_deep_chain_does_not_recurse():
    formula = "x = a\nfor i in range(1500):\n    x = sin(x)\nx"
    found = api.derivatives(formula)
    point = {"a": 0.3}
    expected = api.evaluate(formula, point).gradients["a"]
    np.testing.assert_allclose(evaluate_text(found.programs["a"], point), expected, rtol=1e-8)


# ---------------------------------------------------------------- branches and points


def test_branches_need_a_point():
    with pytest.raises(FormulaValueError, match="depends on where it is taken") as info:
        api.derivatives("if a > 0:\n    y = a**2\nelse:\n    y = -a\ny")
    assert "a=1" in info.value.hint


@pytest.mark.parametrize(
    "formula",
    [
        "relu(a)",
        "maximum(a, b)",
        "clamp(a, -1, 1)",
        "a % b",
        "maximum(a, 5)",
        "relu(a - 3)",
        "const(a)*a",
    ],
)
def test_kinks_and_steps_need_a_point(formula: str):
    with pytest.raises(FormulaValueError, match="depends on where it is taken"):
        api.derivatives(formula)


def test_the_branch_taken_at_the_point_with_a_note():
    formula = "if a > 0:\n    y = a**2\nelse:\n    y = -a*b\ny"
    found = api.derivatives(formula, {"a": "2", "b": "3"})
    assert found.derivatives == {"a": "2*a", "b": "0"}
    assert "branch taken at a=2, b=3" in found.notes[0]
    found = api.derivatives(formula, {"a": -2, "b": 3})
    assert found.derivatives == {"a": "-b", "b": "-a"}
    assert api.derivatives("relu(a)", {"a": -1}).derivatives == {"a": "0"}


def test_a_partial_point_is_not_enough_where_it_matters():
    with pytest.raises(FormulaValueError, match="depends on where") as info:
        api.derivatives("relu(a)*b", {"a": 2})
    assert "b=1" in info.value.hint and "a=1" not in info.value.hint
    assert api.derivatives("a*b", {"a": 2}).derivatives == {"a": "b", "b": "a"}


def test_no_note_where_the_point_changes_nothing():
    found = api.derivatives("a**b", {"a": 2, "b": 3})
    assert found.notes == []
    assert found.derivatives == {"a": "b*a**(b - 1)", "b": "log(a)*a**b"}


def test_vectors_differentiate_elementwise():
    found = api.derivatives("x**2*sin(x)", {"x": "[1, 2, 3]"})
    point = {"x": [1.0, 2.0, 3.0]}
    expected = api.evaluate("x**2*sin(x)", point).gradients["x"]
    np.testing.assert_allclose(evaluate_text(found.programs["x"], point), expected, rtol=RTOL)


@pytest.mark.parametrize(
    ("formula", "bindings"),
    [("sum(x)", {"x": "[1, 2]"}), ("a*x", {"a": "2", "x": "[1, 2]"}), ("x @ x", {"x": "[1, 2]"})],
)
def test_other_vector_formulas_are_a_clear_error(formula: str, bindings: dict):
    with pytest.raises(FormulaValueError, match="not elementwise"):
        api.derivatives(formula, bindings)


def test_errors_are_formula_errors_with_the_source():
    with pytest.raises(FormulaError) as info:
        api.derivatives("a +")
    assert info.value.source == "a +"
    with pytest.raises(FormulaValueError, match="no tensor value"):
        api.derivatives("def f(x):\n    return x\nf")


# ---------------------------------------------------------------- how short


TABLE = [
    ("3*a**3 - b**2", "a", "9*a**2"),
    ("3*a**3 - b**2", "b", "-2*b"),
    ("a/b", "b", "-a/b**2"),
    ("sin(a)*cos(a)", "a", "cos(2*a)"),
    ("x = a*b; x*exp(-x)", "b", "a*(1 - a*b)*exp(-a*b)"),
    ("exp(-a)*a", "a", "(1 - a)*exp(-a)"),
    ("sqrt(a**2 + b**2)", "a", "a/sqrt(a**2 + b**2)"),
    ("log(a*b)", "a", "1/a"),
    ("exp(a)/(1 + exp(a))", "a", "exp(a)/(exp(2*a) + 2*exp(a) + 1)"),
    ("a**b", "a", "a**(b - 1)*b"),
    ("a**b", "b", "a**b*log(a)"),
    ("2**a", "a", "2**a*log(2)"),
    ("tanh(a)", "a", "4/(exp(a) + exp(-a))**2"),
    ("sigmoid(a)", "a", "exp(-a)/(1 + exp(-a))**2"),
    ("erf(a)", "a", "2*exp(-a**2)/sqrt(pi)"),
    ("log1p(a**2)", "a", "2*a/(a**2 + 1)"),
    ("a*exp(-a**2)", "a", "(1 - 2*a**2)*exp(-a**2)"),
    ("sin(a)**2 + cos(a)**2", "a", "0"),
    ("1/(1 + a**2)", "a", "-2*a/(a**2 + 1)**2"),
    ("(a + b)**3", "a", "3*(a + b)**2"),
    ("a*sin(b) + b*sin(a)", "a", "b*cos(a) + sin(b)"),
    ("exp(a*b)", "b", "a*exp(a*b)"),
    ("log(sin(a))", "a", "1/tan(a)"),
    ("sqrt(a)*log(a)", "a", "(log(a) + 2)/(2*sqrt(a))"),
    ("a**2*b**3", "b", "3*a**2*b**2"),
    ("(a - 1)/(a + 1)", "a", "2/(a + 1)**2"),
    ("exp(sin(a))", "a", "exp(sin(a))*cos(a)"),
    ("tan(a)", "a", "1/cos(a)**2"),
    ("a*log(a) - a", "a", "log(a)"),
    ("cos(a*b)**2", "a", "-b*sin(2*a*b)"),
    ("exp(-a)*sin(b)", "a", "-exp(-a)*sin(b)"),
    ("log(exp(a) + exp(b))", "a", "exp(a)/(exp(a) + exp(b))"),
    ("(a**2 - 1)**2", "a", "4*a*(a**2 - 1)"),
    ("a/(a**2 + b**2)", "a", "(b**2 - a**2)/(a**4 + 2*a**2*b**2 + b**4)"),
    ("a/(a**2 + b**2)", "b", "-2*a*b/(a**2 + b**2)**2"),
    ("sin(a + b)*exp(a - b)", "a", "sqrt(2)*exp(a - b)*sin(a + b + pi/4)"),
    ("abs(a)*a", "a", "2*abs(a)"),
    ("1/sqrt(a)", "a", "-1/(2*a**(3/2))"),
]


def _ratios() -> list[float]:
    ratios = []
    for formula, name, expected in TABLE:
        ours = api.derivatives(formula).inline[name]
        ratios.append(len(ours) / len(expected))
    return ratios


def test_the_table_is_right_and_ours_agree_with_it():
    point = {"a": 0.7, "b": 1.3}
    for formula, name, expected in TABLE:
        ours = api.derivatives(formula).inline[name]
        np.testing.assert_allclose(
            evaluate_text(ours, point), evaluate_text(expected, point), rtol=1e-9, atol=1e-12,
            err_msg=f"{formula}: d/d{name} = {ours} vs {expected}",
        )  # fmt: skip


def test_derivatives_are_about_as_short_as_simplified_ones():
    assert len(TABLE) >= 30
    ratios = _ratios()
    assert statistics.median(ratios) <= 1.3, ratios
    assert max(ratios) <= 2.5, ratios


def test_sympy_simplify_when_installed():
    pytest.importorskip("sympy")
    found = api.derivatives("(a - 1)/(a + 1)", simplify="sympy")
    assert found.derivatives == {"a": "2/(a + 1)**2"}
    point = {"a": 0.7}
    expected = api.evaluate("(a - 1)/(a + 1)", point).gradients["a"]
    np.testing.assert_allclose(evaluate_text(found.programs["a"], point), expected, rtol=RTOL)


def test_unknown_simplifier():
    with pytest.raises(FormulaValueError, match="unknown simplifier"):
        api.derivatives("a", simplify="maxima")


# ---------------------------------------------------------------- random formulas


def _random_formula(rng: np.random.Generator, depth: int) -> str:
    """A random formula over a and b (built iteratively: a list of subformulas grows)."""
    parts = ["a", "b", "a", "b", "2", "0.5", "3"]
    for _ in range(depth):
        x, y = (parts[int(i)] for i in rng.integers(0, len(parts), 2))
        choice = int(rng.integers(0, 12))
        parts.append(
            [
                f"({x} + {y})",
                f"({x} - {y})",
                f"({x} * {y})",
                f"({x} / (1 + {y}**2))",
                f"({x})**2",
                f"({x})**3",
                f"-({x})",
                f"exp(-({x})**2)",
                f"sin({x})",
                f"cos({x})*{y}",
                f"tanh({x})",
                f"sqrt(1 + ({x})**2)",
            ][choice]
        )
    return parts[-1] + " + a*b"


@pytest.mark.parametrize("seed", range(40))
def test_random_formulas_round_trip(seed: int):
    rng = np.random.default_rng(seed)
    formula = _random_formula(rng, int(rng.integers(3, 9)))
    found = api.derivatives(formula)
    for _ in range(2):
        point = {"a": float(rng.uniform(-1.2, 1.2)), "b": float(rng.uniform(-1.2, 1.2))}
        gradients = api.evaluate(formula, point).gradients
        for name in ("a", "b"):
            got = evaluate_text(found.programs[name], point)
            np.testing.assert_allclose(
                got, gradients[name], rtol=1e-8, atol=1e-10,
                err_msg=f"{formula}: d/d{name} = {found.programs[name]}",
            )  # fmt: skip
            inline = evaluate_text(found.inline[name], point)
            np.testing.assert_allclose(inline, got, rtol=1e-8, atol=1e-10)


def test_a_new_elementwise_op_has_a_symbolic_derivative_the_day_it_is_declared():
    """One defop entry (as in test_registry): `gradcalc diff` differentiates it at once."""
    import subprocess
    import sys

    code = """
from gradcalc import ops
ops.defop(
    "cube", "CubeBackward0", lambda x: x * x * x, (lambda g, a, x: g * 3 * x * x,),
    scalar=lambda x: x * x * x, sample=ops.Sample(ops.UNARY), doc="x ** 3, elementwise",
)
from gradcalc import api
found = api.derivatives("cube(sin(a))")
assert found.derivatives == {"a": "3*cos(a)*sin(a)**2"}, found.derivatives
found = api.derivatives("exp(cube(a))")
assert found.derivatives == {"a": "3*a**2*exp(cube(a))"}, found.derivatives
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_dag_whose_tree_is_exponential_prints_in_polynomial_size():
    formula = "x = a\nfor i in range(60):\n    x = x*x + x\nx"  # 2**60 nodes as a tree
    found = api.derivatives(formula)
    assert found.inline == {}  # not written out
    assert len(found.programs["a"]) < 200_000 and found.intermediates
    point = {"a": 1e-3}
    expected = api.evaluate(formula, point).gradients["a"]
    np.testing.assert_allclose(evaluate_text(found.programs["a"], point), expected, rtol=1e-9)
