"""Every op's Python-float forward (``Op.scalar``) against its NumPy forward, in float64.

Parametrised over ``gradcalc.ops.REGISTRY``: random inputs from each op's
sample domain and consts, plus edge values. ``+ - * /`` and ``sqrt`` must
agree bit for bit, every other op within 1 ulp; where ``math`` raises
(``log(0)``, ``1 / 0``) NumPy must have answered inf or NaN, since a float
backend then falls back to the NumPy forward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradcalc import ops

SCALAR_OPS = [name for name, op in ops.REGISTRY.items() if op.scalar is not None]
BIT_EXACT = {"add", "sub", "mul", "div", "sqrt"}
EDGES = (0.0, -0.0, 1e-310, -1e-310, 1.0, -1.0, 709.0, 1e300, -1e300, math.inf, -math.inf, math.nan)


def _ulps(a: float, b: float) -> float:
    """Distance in units in the last place; NaN equals NaN, and 0.0 equals -0.0."""
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    if a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(a - b) / math.ulp(max(abs(a), abs(b)))


def _numpy(op: ops.Op, values: tuple, consts: tuple) -> tuple[float, float, type]:
    """The NumPy forward on float64 scalars, and on one-element arrays; and the Python
    type the float backend must answer with (bool for a comparison's bool result)."""
    with np.errstate(all="ignore"):
        scalar = op.forward(*(np.float64(v) for v in values), *consts)
        array = op.forward(*(np.array([v]) for v in values), *consts)
    kind = bool if np.asarray(scalar).dtype == bool else float
    return float(scalar), float(np.asarray(array).reshape(-1)[0]), kind


def _inputs(op: ops.Op, rng: np.random.Generator) -> list[tuple]:
    domain = op.sample.domain
    count = 2 if op.arity == "2" else 1
    names = [domain if isinstance(domain, str) else domain[i] for i in range(count)]
    cases = [tuple(float(ops.DOMAINS[name](rng, ())) for name in names) for _ in range(200)]
    cases += [(edge,) * count for edge in EDGES]
    if count == 2:
        cases += [(edge, 1.5) for edge in EDGES] + [(1.5, edge) for edge in EDGES]
    return cases


@pytest.mark.parametrize("name", SCALAR_OPS)
def test_scalar_forward_agrees_with_numpy(name: str) -> None:
    op = ops.REGISTRY[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    tolerance = 0.0 if name in BIT_EXACT else 1.0
    for consts in {consts for _, consts in op.sample.cases()}:
        for values in _inputs(op, rng):
            expected, from_array, kind = _numpy(op, values, consts)
            try:
                got = op.scalar(*values, *consts)
            except (ArithmeticError, ValueError):
                # The backend falls back to NumPy here: only where NumPy left the reals.
                assert not math.isfinite(expected), (name, values, consts, expected)
                continue
            assert type(got) is kind, (name, values, type(got))
            assert _ulps(got, expected) <= tolerance, (name, values, consts, got, expected)
            if tolerance == 0.0:
                assert math.copysign(1, got) == math.copysign(1, expected) or got != got
            if all(map(math.isfinite, values)):  # (NumPy's arrays take x**0.5 as sqrt(x))
                # erf's array path is its own NumPy code (NumPy has no erf): within 2 ulp
                limit = 2.0 if name == "erf" else max(tolerance, 1.0)
                assert _ulps(got, from_array) <= limit, (name, values, consts, got, from_array)


def test_elementwise_ops_declare_a_scalar_forward() -> None:
    """What a float backend can run: every arithmetic and elementwise op of the registry."""
    expected = {
        "add", "sub", "rsub", "mul", "div", "reciprocal", "neg", "pow", "pow_tensor", "rpow",
        "remainder", "exp", "log", "log1p", "sqrt", "abs", "sin", "cos", "tan", "tanh",
        "sigmoid", "relu", "erf", "softplus", "clamp", "maximum", "minimum", "sign", "floor",
        "ceil", "round",
    }  # fmt: skip
    assert expected <= set(SCALAR_OPS)


def test_erf_array_path_matches_math_erf() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-7, 7, 20_000), rng.uniform(-0.02, 0.02, 5_000)])
    got = ops.ERF.forward(x)
    for value, result in zip(x.tolist(), got.tolist(), strict=True):
        assert _ulps(result, math.erf(value)) <= 2.0, value
    special = np.array([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 6.0, 40.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no warning
        out = ops.ERF.forward(special)
    np.testing.assert_array_equal(out, [0.0, -0.0, 1.0, -1.0, math.nan, math.erf(5e-324), 1, 1])
    assert math.copysign(1, out[1]) == -1
    assert ops.ERF.forward(np.ones(3, np.float32)).dtype == np.float32
    assert type(ops.ERF.forward(np.float32(0.5))) is np.float32
