"""The float path (gradcalc.scalar) against the engine: same JSON, byte for byte, or no answer.

Every op in ``scalar.OPS`` is exercised by formulas in ``FORMULAS_BY_OP`` at
several points, and random formulas over the whole subset are compared too,
so the float path and the engine cannot drift apart. Subprocess tests check
that ``import gradcalc``, the seed formula and ``--help`` leave NumPy unimported.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
from unittest import mock

import pytest

from gradcalc import api, scalar
from gradcalc.limits import Limits

POINTS = [
    {"a": 2.0, "b": 6.0, "c": 0.5},
    {"a": 1.3, "b": -0.7, "c": 3.25},
    {"a": 0.1, "b": 0.2, "c": 0.3},
    {"a": -2.5, "b": 1e-3, "c": 7.0},
    {"a": 123.456, "b": -9.87, "c": 1e5},
    {"a": 4.0, "b": 0.25, "c": -0.0},
]

FORMULAS_BY_OP = {
    "add": ["a + b", "a + 2", "2 + a", "a + a + a"],
    "sub": ["a - b", "a - 2", "a - a", "(a*b) - (b*c)"],
    "rsub": ["2 - a", "-1.5 - a*b"],
    "mul": ["a * b", "a * 3", "3 * a", "a * a", "a*b*c*a"],
    "div": ["a / b", "a / 3", "(a + b) / (a - c)", "a / a"],
    "reciprocal": ["3 / a", "1 / (a*b)"],
    "neg": ["-a", "-(a*b)", "--a", "+a"],
    "pow": [
        "a**2",
        "a**3",
        "(a*b)**3",
        "(a+b)**-2",
        "a**0.5",
        "a**-1",
        "a**0",
        "a**1",
        "a^2",
        "(a*c)**1.7",
        "2**3 * a",
        "a**-2",
    ],
    "sqrt": ["sqrt(a)", "sqrt(a*b)", "sqrt(4)", "sqrt(a) * sqrt(a)"],
}
"""Formulas that exercise each op of the float path (one key per ``scalar.OPS`` entry)."""

SEED = "3*a**3 - b**2"


def engine_json(formula: str, bindings: dict, wrt: list[str] | None = None) -> str | None:
    """The engine path's JSON text (the float path turned off), or None when it raises."""
    try:
        with engine_only():
            return api.dumps(api.result_to_json(api.evaluate(formula, bindings, wrt=wrt)))
    except Exception:
        return None


def engine_only() -> contextlib.AbstractContextManager:
    """``api.evaluate`` without its float path (``api._float_path``, the one call into scalar)."""
    return mock.patch.object(api, "_float_path", lambda *args, **kwargs: None)


def scalar_json(formula: str, bindings: dict, wrt: list[str] | None = None) -> str | None:
    found = scalar.run_json(formula, bindings, wrt)
    return None if found is None else api.dumps(found)


def test_every_op_has_formulas() -> None:
    assert set(FORMULAS_BY_OP) == set(scalar.OPS)


@pytest.mark.parametrize("op", sorted(scalar.OPS))
def test_op_matches_engine(op: str) -> None:
    answered = 0
    for formula in FORMULAS_BY_OP[op]:
        for point in POINTS:
            bindings = {name: point[name] for name in "abc" if name in formula}
            mine = scalar_json(formula, bindings)
            if mine is None:
                continue
            answered += 1
            assert mine == engine_json(formula, bindings), (formula, bindings)
    assert answered >= len(FORMULAS_BY_OP[op])  # the float path really ran


def test_seed_formula_answered_and_identical() -> None:
    bindings = {"a": "2", "b": "6"}
    mine = scalar_json(SEED, bindings)
    assert mine is not None
    assert mine == engine_json(SEED, bindings)
    assert json.loads(mine)["gradients"] == {"a": 36.0, "b": -12.0}


def _random_formula(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        choice = rng.random()
        if choice < 0.6:
            return rng.choice("abc")
        return rng.choice(["2", "3", "0.5", "1.5", "-2", "10"])
    kind = rng.random()
    if kind < 0.55:
        op = rng.choice(["+", "-", "*", "/"])
        return f"({_random_formula(rng, depth - 1)} {op} {_random_formula(rng, depth - 1)})"
    if kind < 0.7:
        exponent = rng.choice(["2", "3", "-1", "0.5", "-2", "1.5", "4", "0", "1"])
        return f"({_random_formula(rng, depth - 1)})**{exponent}"
    if kind < 0.8:
        return f"-({_random_formula(rng, depth - 1)})"
    if kind < 0.9:
        return f"sqrt({_random_formula(rng, depth - 1)})"
    return (
        f"{rng.choice(['2', '0.5', '-3'])} {rng.choice('+-*/')} {_random_formula(rng, depth - 1)}"
    )


def test_random_formulas_match_engine() -> None:
    rng = random.Random(20261202)
    answered = 0
    for _ in range(400):
        formula = _random_formula(rng, 4)
        bindings = {
            name: rng.choice([rng.uniform(-5, 5), rng.randint(-4, 4) / 2]) for name in "abc"
        }
        wrt = rng.choice([None, ["a"], ["c", "a"]])
        mine = scalar_json(formula, bindings, wrt)
        if mine is None:
            continue
        answered += 1
        assert mine == engine_json(formula, bindings, wrt), (formula, bindings, wrt)
    assert answered > 100


def test_pow_matches_engine_where_pow_implementations_differ() -> None:
    """Values where NumPy's array power (x*x, sqrt, 1/x, SIMD pow) and the C library's pow
    give different last bits: the float path must follow the engine on each (or decline)."""
    np = pytest.importorskip("numpy")
    rng = random.Random(7)
    checked = 0
    for p in (2.0, 0.5, -1.0, 3.0, -2.0, 1.7):
        found = []
        for _ in range(20000):
            x = rng.uniform(0.01, 30.0)
            if math.pow(x, p) != float(np.asarray(x) ** p):
                found.append(x)
                if len(found) == 4:
                    break
        for x in found:
            for formula in (f"a**{p}", f"(a*1)**{p}", f"(a + 0)**{p} * a**{p}"):
                mine = scalar_json(formula, {"a": x})
                if mine is not None:
                    checked += 1
                    assert mine == engine_json(formula, {"a": x}), (formula, x)
    assert checked >= 8


def test_unused_variables_noted_like_the_engine() -> None:
    for formula in ("a * 2", "3", "sqrt(9) + 1"):
        bindings = {"a": 1.5, "b": 2.0}
        mine = scalar_json(formula, bindings)
        assert mine is not None
        assert mine == engine_json(formula, bindings)


@pytest.mark.parametrize(
    ("formula", "bindings"),
    [
        ("exp(a)", {"a": 1.0}),  # not in the subset
        ("a**b", {"a": 2.0, "b": 3.0}),  # a tensor exponent
        ("2**a", {"a": 2.0}),
        ("(a - 2)**0.5", {"a": 1.0}),  # a negative base: NaN in the engine
        ("a / b", {"a": 1.0, "b": 0.0}),  # the engine's inf and its note
        ("sqrt(a)", {"a": -1.0}),
        ("a**0.5 * 0 + 1/(a-a)", {"a": 2.0}),
        ("(a*1)**1e3", {"a": 10.0}),  # overflow
        ("a + pi", {"a": 1.0}),  # a constant: left to the engine
        ("a + zz", {"a": 1.0}),  # unknown name: the engine's error
        ("a +", {"a": 1.0}),  # parse error
        ("y = a*2", {"a": 1.0}),  # an assignment
        ("[a, a]", {"a": 1.0}),
        ("a.sqrt()", {"a": 4.0}),
        ("sqrt(a)", {"a": 4.0, "sqrt": 1.0}),  # a variable shadows the function
        ("a * 2", {"a": True}),
        ("a * 2", {"a": "[1, 2]"}),
        ("a * 2", {"a": "ones(2)"}),
        ("a * 2", {"if": 1.0}),
    ],
)
def test_left_to_the_engine(formula: str, bindings: dict) -> None:
    assert scalar.run(formula, bindings) is None


def test_wrt_must_name_bound_variables() -> None:
    assert scalar.run("a * b", {"a": 1.0, "b": 2.0}, ["z"]) is None
    found = scalar.run("a * b", {"a": 1.0, "b": 2.0}, ["b", "b"])
    assert found is not None
    assert found.gradients == {"b": 1.0}


def test_graph_node_limit_goes_to_the_engine() -> None:
    assert scalar.run("a + a + a", {"a": 1.0}, limits=Limits(max_graph_nodes=2)) is None


def test_long_flat_sum_does_not_recurse() -> None:
    formula = " + ".join(["a"] * 5000)
    found = scalar.run(formula, {"a": 1.0})
    assert found is not None
    assert found.value == 5000.0
    assert found.gradients == {"a": 5000.0}


# ---------------------------------------------------------------- no NumPy at start-up


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout


def test_import_gradcalc_leaves_numpy_out() -> None:
    out = _python("import sys, gradcalc; print('numpy' in sys.modules, gradcalc.__version__)")
    assert out.split()[0] == "False"


def test_seed_json_run_imports_no_numpy_rich_or_pydantic() -> None:
    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        f"code = run([{SEED!r}, 'a=2', 'b=6', '--json'])\n"
        "heavy = sorted(m for m in ('numpy', 'rich', 'pydantic') if m in sys.modules)\n"
        "print('HEAVY', code, heavy)\n"
    )
    out = _python(code)
    first, last = out.strip().splitlines()
    assert json.loads(first)["gradients"] == {"a": 36.0, "b": -12.0}
    assert last == "HEAVY 0 []"


def test_help_imports_no_numpy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from gradcalc.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    code = run(['--help'])\n"
        "print(code, 'numpy' in sys.modules, 'Usage' in out.getvalue())\n"
    )
    assert _python(code).split() == ["0", "False", "True"]


def test_engine_names_still_load_lazily() -> None:
    out = _python(
        "import gradcalc as torch\n"
        "from gradcalc import Tensor, no_grad\n"
        "x = torch.tensor([1.0, 2.0], requires_grad=True)\n"
        "(x * x).sum().backward()\n"
        "print(x.grad.tolist(), torch.float is torch.float32, torch.float64, "
        "isinstance(x, Tensor), callable(torch.autograd.grad), hasattr(torch.nn, 'functional'))\n"
    )
    assert out.strip() == "[2.0, 4.0] True torch.float64 True True True"


# ---------------------------------------------------------------- the CLI's two paths


@pytest.mark.parametrize(
    "argv",
    [
        [SEED, "a=2", "b=6"],
        [SEED, "a=2", "b=6", "--json"],
        ["eval", SEED, "a=2", "b=6"],
        ["eval", SEED, "a=2", "b=6", "--json"],
        ["a/b + sqrt(a) - 2/a", "a=2.5", "b=-4", "--wrt", "b,a"],
        ["x * 2", "x=1.5", "y=3"],
        ["x * 2", "x=1.5", "y=3", "--json"],
        ["2 + 3"],
    ],
)
def test_cli_output_is_the_same_on_both_paths(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from gradcalc.cli import main

    assert main.run(argv) == 0
    fast = capsys.readouterr()
    with engine_only():
        assert main.run(argv) == 0
    assert capsys.readouterr() == fast


def test_square_gradient_rounds_like_the_engine_near_subnormals() -> None:
    # d(a**2)·g is computed as (g*a)*2 by both paths; g*(a*2) would round
    # differently where g*a falls among the subnormals.
    formula, bindings = "a**2 * b", {"a": 3e-159, "b": 7e-151}
    assert (7e-151 * 3e-159) * 2 != 7e-151 * (3e-159 * 2)  # tells the two orders apart
    mine = scalar_json(formula, bindings, ["a"])
    assert mine is not None and mine == engine_json(formula, bindings, ["a"])
