"""The float backend against the array path: one engine, two representations of a float64 scalar.

A float64 0-d value made by the language holds a Python float and its ops run
their ``scalar=`` forwards (``_tensor.on_floats``); with the backend switched off
at its one switch (``Context.zero_d``), the same formulas run on NumPy
float64 scalars. Answers must be the same bits for ``+ - * / sqrt`` and
powers, and within an ulp or two elsewhere (a gradient sums a few such
terms). Subprocess tests check that scalar work never imports NumPy.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest

from gradcalc import _numpy, api, ops
from gradcalc import builtins as lang

POINTS = [
    {"a": 2.0, "b": 6.0, "c": 0.5},
    {"a": 1.3, "b": -0.7, "c": 3.25},
    {"a": 0.1, "b": 0.2, "c": 0.3},
    {"a": -2.5, "b": 1e-3, "c": 7.0},
    {"a": 123.456, "b": -9.87, "c": 1e5},
    {"a": 4.0, "b": 0.25, "c": -0.0},
]

EXACT = [
    "a + b", "2 - a", "a * b * c * a", "a / b", "3 / a", "-(a*b)", "a**2", "a**3",
    "(a+b)**-2", "a**0.5", "(a*c)**1.7", "2**3 * a", "sqrt(a*a + b*b)", "3*a**3 - b**2",
    "(a - b) / (a + c) * 2", "a + a + a", "a**2 * b",
]  # fmt: skip
"""Correctly rounded in IEEE 754 (and C's pow, which both paths use for ``**``): equal bits."""

TRANSCENDENTAL = [
    "sin(a) * exp(b / 10)", "tanh(a*b) + cos(c)", "log(a*a + 1) - log1p(c*c)",
    "sigmoid(a) * relu(b) + abs(c)", "erf(a / 3) + tan(c / 10)", "exp(-a*a) * softplus(b)",
    "clamp(a, -1, 1) * maximum(b, c) + minimum(a, c)", "a % 1.5 + floor(b) * c",
]  # fmt: skip


@pytest.fixture
def numpy_scalars(monkeypatch: pytest.MonkeyPatch):
    """The backend switched off: the language's scalars are NumPy float64 scalars again."""

    def numpy_zero_d(self: lang.Context, number: object) -> object:
        return self.np_dtype.type(number)

    def run(formula: str, bindings: dict) -> dict:
        with monkeypatch.context() as patch:
            patch.setattr(lang.Context, "zero_d", numpy_zero_d)
            return api.evaluate_json(formula, bindings)

    return run


def answer(formula: str, bindings: dict) -> dict:
    return api.evaluate_json(formula, bindings)


def numbers(found: dict) -> list[float]:
    return [found["value"], *found["gradients"].values()]


def used(formula: str, point: dict) -> dict:
    return {name: value for name, value in point.items() if name in formula}


@pytest.mark.parametrize("formula", EXACT)
def test_arithmetic_is_the_same_bits_on_both(formula: str, numpy_scalars) -> None:
    for point in POINTS:
        bindings = used(formula, point)
        assert answer(formula, bindings) == numpy_scalars(formula, bindings), (formula, point)


@pytest.mark.parametrize("formula", TRANSCENDENTAL)
def test_transcendental_functions_agree_within_ulps(formula: str, numpy_scalars) -> None:
    for point in POINTS:
        bindings = used(formula, point)
        mine, theirs = answer(formula, bindings), numpy_scalars(formula, bindings)
        assert mine.keys() == theirs.keys()
        for x, y in zip(numbers(mine), numbers(theirs), strict=True):
            if isinstance(x, str) or isinstance(y, str):
                assert x == y
            else:
                assert abs(x - y) <= 4 * math.ulp(max(abs(x), abs(y))), (formula, point, x, y)


def _random_formula(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["a", "b", "c", "2", "0.5", "-3", "10"])
    kind = rng.random()
    if kind < 0.6:
        op = rng.choice(["+", "-", "*", "/"])
        return f"({_random_formula(rng, depth - 1)} {op} {_random_formula(rng, depth - 1)})"
    if kind < 0.8:
        exponent = rng.choice(["2", "3", "-1", "0.5", "-2", "1.5", "0", "1"])
        return f"({_random_formula(rng, depth - 1)})**{exponent}"
    return f"sqrt({_random_formula(rng, depth - 1)})"


def test_random_arithmetic_is_the_same_bits_on_both(numpy_scalars) -> None:
    rng = random.Random(20261206)
    for _ in range(300):
        formula = _random_formula(rng, 4)
        bindings = {name: rng.uniform(-5, 5) for name in "abc"}
        assert answer(formula, bindings) == numpy_scalars(formula, bindings), formula


def test_values_numpy_answers_with_inf_or_nan_are_the_engines() -> None:
    # math raises where NumPy answers inf/nan: the op declines and NumPy answers.
    assert answer("log(a)", {"a": 0.0})["value"] == "-Infinity"
    assert answer("sqrt(a)", {"a": -1.0})["value"] == "NaN"
    assert answer("a / b", {"a": 1.0, "b": 0.0})["value"] == "Infinity"
    assert answer("exp(a)", {"a": 1000.0})["value"] == "Infinity"


def test_a_scalar_meets_an_array() -> None:
    found = answer("a * x + sin(a)", {"a": 2.0, "x": [1.0, 2.0]})
    assert found["gradients"]["x"] == [2.0, 2.0]
    assert found["gradients"]["a"] == pytest.approx(3 + 2 * math.cos(2.0))  # sin(a) meets 2 items


def test_comparisons_are_python_bools_with_pytorchs_dtypes() -> None:
    import gradcalc as torch
    from gradcalc import _tensor

    a = _tensor.float_tensor(2.0)
    big = a > 1
    assert type(big._raw) is bool and big.dtype is torch.bool and big.item() is True
    assert (big * a).dtype is torch.float64 and (a * big).item() == 2.0
    assert (big + 1).dtype is torch.int64 and (big + 1).item() == 2  # as PyTorch
    assert (big * 0.5).dtype is torch.float32  # a bool tensor meets a weak float
    assert bool(a < 1) is False and (a == 2.0).item() is True


@pytest.mark.parametrize(
    ("program", "value"),
    [
        ("x = a\nwhile x < 100:\n    x = x * 2 + sin(x)\nx", 142.5697384282039),
        ("a if a > b else b", 3.0),
        ("(a > 1) * a + (a < 1)", 2.0),
    ],
)
def test_programs_with_conditions_run_on_floats(program: str, value: float, numpy_scalars) -> None:
    mine = answer(program, {"a": 2.0, "b": 3.0})
    assert mine["value"] == value
    assert mine == numpy_scalars(program, {"a": 2.0, "b": 3.0})


# ---------------------------------------------------------------- no NumPy


SCALAR_OPS = sorted(name for name, op in ops.REGISTRY.items() if op.scalar and op.vjps)


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout


def test_every_op_with_a_float_forward_runs_and_differentiates_without_numpy() -> None:
    # Each op of the registry with scalar=, forward and backward on float leaves, in a
    # process that has not imported NumPy: an op whose forward or VJP reads NumPy on a
    # float shows up here the day it is registered.
    code = f"""
import sys
import gradcalc.nn.functional
from gradcalc import _numpy, _tensor, ops
loaded = []
for name in {SCALAR_OPS!r}:
    op = ops.REGISTRY[name]
    for shapes, consts in op.sample.cases():
        if any(shape not in ((), None) for shape in shapes):
            continue
        args = []
        for i, shape in enumerate(shapes):
            if shape is None:
                args.append(1.25)
            else:
                leaf = _tensor.leaf(0.75 + 0.25 * i, requires_grad=True)
                args.append(leaf)
        out = op(*args, *consts)
        out.backward()
        kinds = {{type(out._raw)}} | {{type(a.grad._raw) for a in args if hasattr(a, "grad")}}
        if _numpy.is_loaded() or kinds != {{float}}:
            loaded.append((name, consts, sorted(k.__name__ for k in kinds)))
            break
    if _numpy.is_loaded():
        break
print(loaded, "numpy" in sys.modules)
"""
    assert _python(code).split("\n")[0] == "[] False"


HEAVY = (
    *("numpy", "rich", "typer", "dataclasses", "inspect", "typing"),
    *("gradcalc.autograd", "gradcalc.pylang"),
)
"""Modules a scalar one-shot command must not import."""


@pytest.mark.parametrize(
    "argv",
    [
        ["3*a**3 - b**2", "a=2", "b=6", "--json"],
        ["sin(a) * exp(b) + tanh(a/b) - relu(a) + log(b) / sqrt(a)", "a=2", "b=6", "--json"],
        [
            "1/a + a**0.5 - a**b + clamp(a, 0, 1) + a // 2 + 2**a + maximum(a, b)",
            "a=2",
            "b=3",
            "--json",
        ],
        ["reciprocal(a) + clamp(b, min=0) * (a % b) - minimum(a, b)", "a=2", "b=3", "--json"],
        ["pow(a, 2) + sum(a*b) - mean(b)", "a=2", "b=3", "--json"],
        ["@PROGRAM", "a=2", "--json"],
    ],
)
def test_scalar_commands_import_nothing_heavy(argv: list[str], tmp_path) -> None:
    """NumPy, Rich, Typer, and the standard library's slow imports (dataclasses with
    inspect, typing) each cost a one-shot command milliseconds it need not spend."""
    program = tmp_path / "program.gc"
    program.write_text("def f(x, n):\n    for i in range(n):\n        x = x * x + i\n"
                       "    if x > 10:\n        x = x / 2\n    return x\n"
                       "f(a, 3) / 2\n")  # fmt: skip
    argv = [f"@{program}" if arg == "@PROGRAM" else arg for arg in argv]
    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        f"code = run({argv!r})\n"
        f"print('HEAVY', code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    first, last = _python(code).strip().splitlines()
    assert json.loads(first)["dtype"] == "float64"
    assert last == "HEAVY 0 []"


def test_import_gradcalc_and_its_engine_leave_numpy_out() -> None:
    out = _python(
        "import sys, gradcalc, gradcalc.api, gradcalc.interpreter, gradcalc.nn.functional\n"
        "print('numpy' in sys.modules)"
    )
    assert out.split() == ["False"]


def test_help_imports_no_numpy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from gradcalc.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    code = run(['--help'])\n"
        "print(code, 'numpy' in sys.modules, 'Usage' in out.getvalue())\n"
    )
    assert _python(code).split() == ["0", "False", "True"]


def test_the_python_api_loads_numpy_when_it_needs_it() -> None:
    out = _python(
        "import gradcalc as torch\n"
        "from gradcalc import Tensor, no_grad\n"
        "x = torch.tensor([1.0, 2.0], requires_grad=True)\n"
        "(x * x).sum().backward()\n"
        "print(x.grad.tolist(), torch.float is torch.float32, torch.float64, "
        "isinstance(x, Tensor), callable(torch.autograd.grad), hasattr(torch.nn, 'functional'))\n"
    )
    assert out.strip() == "[2.0, 4.0] True torch.float64 True True True"


def test_numpy_loaded_first_is_used_from_the_start() -> None:
    assert _numpy.is_loaded() and _numpy.numpy is not None  # this process imported it
    assert np.float64 in ops._SCALARS


@pytest.mark.parametrize(
    "argv",
    [
        ["3*a**3 - b**2", "a=2", "b=6"],
        ["eval", "exp(a) * sin(b)", "a=2", "b=6"],
        ["3*a +", "a=1"],
        ["3*a + c", "a=2"],
    ],
)
def test_scalar_text_output_imports_no_numpy(argv: list[str]) -> None:
    # Rich renders the text; the scalar values it shows need no NumPy.
    code = (
        "import sys, contextlib, io\n"
        "from gradcalc.cli.main import run\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        f"    code = run({argv!r})\n"
        "print(code, 'numpy' in sys.modules, bool(out.getvalue()))\n"
    )
    _, numpy_loaded, printed = _python(code).split()
    assert (numpy_loaded, printed) == ("False", "True")


@pytest.mark.parametrize(
    "formula",
    [
        "a*b*b",
        "exp(a)*sin(b)",
        "a/b - b**3 + a",
        "tanh(a*b) + log(b)",
        "relu(a)*b**2 - sqrt(a)",
        "maximum(a, b)*a",
        "a**b",
    ],
)
def test_scalar_hessian_equals_the_array_paths(formula: str) -> None:
    """Second order through the float backend (a float operand saved by a recorded VJP,
    which once had no ``.shape`` for ``unbroadcast``) equals the 1-element array path."""
    from gradcalc import api

    floats = api.hessian(formula, bindings={"a": "2", "b": "3"}).hessian
    arrays = api.hessian(f"sum({formula})", bindings={"a": "[2.0]", "b": "[3.0]"}).hessian
    assert floats is not None and arrays is not None
    for row, columns in arrays.items():
        for column, block in columns.items():
            assert float(floats[row][column]) == pytest.approx(float(block.reshape(-1)[0]))


def test_a_batch_of_plain_numbers_imports_no_numpy() -> None:
    # JSON numbers reach the API as floats and ints: asking whether one is an ndarray
    # must not load NumPy (it did, for every batch of scalar requests: ~60 ms).
    code = (
        "import sys, json\n"
        "from gradcalc import api\n"
        "lines = [json.dumps({'id': i, 'formula': '3*a**3 - b**2 + a*b', "
        "'vars': {'a': i, 'b': 1.5, 'c': -2}}) for i in range(3)]\n"
        "out = [api.run_line(line) for line in lines]\n"
        "print(json.dumps([json.loads(text) for text, _ in out]))\n"
        "print('numpy' in sys.modules)\n"
    )
    first, last = _python(code).strip().splitlines()
    assert last == "False"
    answers = json.loads(first)
    assert [a["gradients"]["a"] for a in answers] == [1.5, 10.5, 37.5]
    assert answers[2]["unused"] == ["c"] and answers[2]["value"] == 24 - 2.25 + 3.0


EDGES = [-math.inf, -1e300, -2.0, -1.0, -0.5, -5e-324, -0.0, 0.0, 5e-324, 0.5, 1.0, 2.0, 1e300,
         math.inf, math.nan]  # fmt: skip
"""Inputs where a float forward's library function raises or rounds at the edge."""


ROUNDED_BY_THE_LIBRARY = {"exp", "log", "log1p", "sin", "cos", "tan", "tanh", "erf", "sigmoid",
                          "softplus"}  # fmt: skip
"""Ops whose float forward is a libm function NumPy may compute its own way (within 4 ulps,
as ``tests/test_engine_scalar.py`` holds them); every other op must give NumPy's bits."""


def _bits(value: object) -> object:
    return value if isinstance(value, bool | np.bool_) else struct.pack("<d", float(value))


def _agree(op: ops.Op, got: object, want: object) -> bool:
    if _bits(got) == _bits(want):
        return True
    if op.name not in ROUNDED_BY_THE_LIBRARY or not (math.isfinite(got) and math.isfinite(want)):
        return False
    return math.copysign(1, got) == math.copysign(1, want) and abs(got - want) <= 4 * math.ulp(
        max(abs(got), abs(want))
    )


@pytest.mark.parametrize(
    "op",
    [op for op in ops.REGISTRY.values() if op.scalar is not None and op.arity in ("1", "2")],
    ids=lambda op: op.name,
)
def test_a_float_forward_answers_numpys_bits_where_it_answers(op: ops.Op) -> None:
    """Walks the registry: wherever an op's float forward gives an answer (it may decline
    by raising, and NumPy then answers), the answer is NumPy's, bit for bit, on edge
    inputs (signed zeros, subnormals, infinities, NaN, domain edges)."""
    _numpy.load()
    consts = [c for _, c in op.sample.cases() if all(type(v) in (int, float) for v in c)]
    pairs = [(x,) for x in EDGES] if op.arity == "1" else [(x, y) for x in EDGES for y in EDGES]
    compared = 0
    for operands in pairs:
        for const in dict.fromkeys(consts or [()]):
            try:
                got = op.scalar(*operands, *const)
            except (ArithmeticError, ValueError):
                continue
            with np.errstate(all="ignore"):
                want = op.forward(*(np.float64(x) for x in operands), *const)
            assert _agree(op, got, want), (op.name, operands, const, got, want)
            compared += 1
    assert compared


def test_threads_that_load_numpy_at_once_all_get_it() -> None:
    # Threads whose first array work comes at the same moment: one imports NumPy, the
    # others wait for it (they once saw a half-imported NumPy: KeyError('numpy')).
    code = (
        "import threading\n"
        "from gradcalc import api\n"
        "errors = []\n"
        "def work(k):\n"
        "    try:\n"
        "        for i in range(5):\n"
        "            api.evaluate('sum(x * a)', {'x': [1.0, 2.0, float(k)], 'a': 0.5 + i})\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(errors)\n"
    )
    for _ in range(3):
        assert _python(code).strip() == "[]"
