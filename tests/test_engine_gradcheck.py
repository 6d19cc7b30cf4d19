"""Every op of the registry against central finite differences, in float64.

Parametrised over ``gradcalc.ops.REGISTRY`` itself: an op is checked on the
shapes, arguments and input domain its ``Sample`` declares (broadcast pairs
included), first order through ``autograd.grad`` and second order through
``create_graph=True``. A table of special values pins PyTorch's conventions
at kinks and domain edges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradcalc as torch
from gradcalc import ops
from gradcalc.autograd import grad

pytestmark = pytest.mark.usefixtures("backward_loops")  # C and Python loops alike

EPS = 1e-6
RTOL = 1e-4
ATOL = 1e-6


def _domain(op: ops.Op, position: int) -> str:
    domain = op.sample.domain
    return domain if isinstance(domain, str) else domain[position]


def _make_operands(op: ops.Op, shapes: tuple, rng: np.random.Generator) -> list:
    operands = []
    for position, shape in enumerate(shapes):
        name = _domain(op, position) if op.arity != "n" else _domain(op, 0)
        if shape is None:
            operands.append(float(ops.DOMAINS[name](rng, ())))
        else:
            data = np.asarray(ops.DOMAINS[name](rng, shape), dtype=np.float64)
            operands.append(torch.tensor(data, requires_grad=True))
    return operands


def _call(op: ops.Op, operands: list, consts: tuple) -> torch.Tensor:
    if op.arity == "n":
        return ops.invoke(op, [operands], consts)
    return ops.invoke(op, operands, consts)


def _forward_data(op: ops.Op, datas: list, consts: tuple) -> np.ndarray:
    if op.arity == "n":
        return np.asarray(op.forward(datas, *consts), dtype=np.float64)
    return np.asarray(op.forward(*datas, *consts), dtype=np.float64)


def _numeric_gradient(function, datas: list, position: int) -> np.ndarray:
    base = np.array(datas[position], dtype=np.float64)
    out = np.zeros_like(base)
    for index in np.ndindex(base.shape):
        values = []
        for step in (EPS, -EPS):
            moved = base.copy()
            moved[index] += step
            trial = list(datas)
            trial[position] = moved
            values.append(function(trial))
        out[index] = (values[0] - values[1]) / (2 * EPS)
    return out


def _cases() -> list:
    params = []
    for name, op in ops.REGISTRY.items():
        for number, (shapes, consts) in enumerate(op.sample.cases()):
            params.append(pytest.param(name, shapes, consts, id=f"{name}-{number}"))
    return params


def _tensor_positions(operands: list) -> list[int]:
    return [i for i, o in enumerate(operands) if isinstance(o, torch.Tensor)]


@pytest.mark.parametrize(("name", "shapes", "consts"), _cases())
def test_vjp_matches_finite_differences(name: str, shapes: tuple, consts: tuple) -> None:
    op = ops.REGISTRY[name]
    rng = np.random.default_rng(abs(hash((name, repr(shapes), repr(consts)))) % 2**32)
    operands = _make_operands(op, shapes, rng)
    out = _call(op, operands, consts)
    if op.node is None:
        assert out.grad_fn is None and not out.requires_grad
        return
    assert out.grad_fn is not None and out.grad_fn.name() == op.grad_fn
    positions = _tensor_positions(operands)
    weights = rng.standard_normal(out.shape)
    tensors = [operands[i] for i in positions]
    analytic = grad(
        out,
        tensors,
        torch.tensor(weights, dtype=torch.float64),
        retain_graph=True,
        allow_unused=True,
    )

    datas = [o._data if isinstance(o, torch.Tensor) else o for o in operands]

    def loss(trial: list) -> float:
        return float(np.sum(_forward_data(op, trial, consts) * weights))

    for position, g in zip(positions, analytic, strict=True):
        expected = _numeric_gradient(loss, datas, position)
        got = np.zeros_like(expected) if g is None else np.asarray(g._data)
        assert got.shape == expected.shape
        np.testing.assert_allclose(
            got, expected, rtol=RTOL, atol=ATOL, err_msg=f"{name} d/d#{position}"
        )

    if not op.sample.second_order:
        return
    # Second order: the gradient of <grad(x), v> is H v; compare with differences of grad.
    directions = [rng.standard_normal(np.shape(operands[i]._data)) for i in positions]
    first = grad(
        out,
        tensors,
        torch.tensor(weights, dtype=torch.float64),
        create_graph=True,
        allow_unused=True,
    )
    # The recorded backward runs the same VJPs on Tensors: same numbers, bit for bit.
    for plain, recorded in zip(analytic, first, strict=True):
        assert (plain is None) == (recorded is None)
        if plain is not None:
            np.testing.assert_array_equal(np.asarray(recorded._data), np.asarray(plain._data))
            assert recorded._data.dtype == plain._data.dtype
    total = None
    for g, v in zip(first, directions, strict=True):
        if g is not None and g.requires_grad:
            term = (g * torch.tensor(v, dtype=torch.float64)).sum()
            total = term if total is None else total + term
    hvp = [None] * len(tensors) if total is None else grad(total, tensors, allow_unused=True)

    def directional(trial: list) -> float:
        fresh = [
            torch.tensor(np.asarray(d), requires_grad=True) if i in positions else d
            for i, d in enumerate(trial)
        ]
        out_t = _call(op, fresh, consts)
        gs = grad(
            out_t,
            [fresh[i] for i in positions],
            torch.tensor(weights, dtype=torch.float64),
            allow_unused=True,
        )
        return float(
            sum(
                0.0 if g is None else np.sum(g._data * v)
                for g, v in zip(gs, directions, strict=True)
            )
        )

    for position, h in zip(positions, hvp, strict=True):
        expected = _numeric_gradient(directional, datas, position)
        got = np.zeros_like(expected) if h is None else np.asarray(h._data)
        np.testing.assert_allclose(
            got, expected, rtol=1e-3, atol=1e-5, err_msg=f"{name} second order d/d#{position}"
        )


def test_every_op_declares_checkable_samples() -> None:
    for name, op in ops.REGISTRY.items():
        assert op.sample.cases(), f"{name} has no gradient-check case"
        if op.node is not None:
            assert op.grad_fn and op.grad_fn[0].isupper(), name
            assert len(op.vjps) >= 1


def test_an_op_without_a_sample_cannot_be_registered() -> None:
    with pytest.raises(TypeError, match="needs a Sample"):
        ops.Op("broken", "BrokenBackward0", np.negative, (lambda g, a, x: -g,), sample=None,
               arity="1", saves=False, uses_ans=False)  # type: ignore[arg-type]  # fmt: skip


def _grad_of(function, *values: float) -> list[float]:
    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    out = function(*inputs)
    return [float(g) for g in grad(out, inputs, allow_unused=True, materialize_grads=True)]


# PyTorch's conventions at kinks and domain edges (values as torch 2.x computes them).
SPECIAL = [
    ("relu at 0", lambda x: torch.relu(x), (0.0,), [0.0]),
    ("abs at 0", lambda x: torch.abs(x), (0.0,), [0.0]),
    ("clamp at its lower bound", lambda x: torch.clamp(x, 0.0, 1.0), (0.0,), [1.0]),
    ("clamp at its upper bound", lambda x: torch.clamp(x, 0.0, 1.0), (1.0,), [1.0]),
    ("clamp outside", lambda x: torch.clamp(x, 0.0, 1.0), (2.0,), [0.0]),
    ("maximum tie", lambda x, y: torch.maximum(x, y), (1.0, 1.0), [0.5, 0.5]),
    ("minimum tie", lambda x, y: torch.minimum(x, y), (1.0, 1.0), [0.5, 0.5]),
    ("max tie", lambda x, y: torch.stack([x, y]).max(), (2.0, 2.0), [0.5, 0.5]),
    ("min tie", lambda x, y: torch.stack([x, y]).min(), (2.0, 2.0), [0.5, 0.5]),
    (
        "max along dim picks the first",
        lambda x, y: torch.stack([x, y]).max(dim=0).values,
        (2.0, 2.0),
        [1.0, 0.0],
    ),
    ("sqrt at 0", lambda x: torch.sqrt(x), (0.0,), [math.inf]),
    ("log at 0", lambda x: torch.log(x), (0.0,), [math.inf]),
    ("x**2 at 0", lambda x: x**2, (0.0,), [0.0]),
    ("x**0 at 0", lambda x: x**0, (0.0,), [0.0]),
    ("x**0.5 at 0", lambda x: x**0.5, (0.0,), [math.inf]),
    ("x**y at x = 0", lambda x, y: x**y, (0.0, 2.0), [0.0, 0.0]),
    ("norm at 0", lambda x, y: torch.stack([x, y]).norm(), (0.0, 0.0), [0.0, 0.0]),
    ("prod with a zero", lambda x, y: torch.stack([x, y]).prod(), (0.0, 3.0), [3.0, 0.0]),
    ("sigmoid far left", lambda x: torch.sigmoid(x), (-800.0,), [0.0]),
    ("softplus past threshold", lambda x: torch.softplus(x), (30.0,), [1.0]),
    ("where on the other side", lambda x: torch.where(x > 0, x, 0.0), (-1.0,), [0.0]),
    ("sign", lambda x: torch.sign(x), (0.0,), [0.0]),
    ("tanh far right", lambda x: torch.tanh(x), (40.0,), [0.0]),
    (
        "logsumexp of -inf and 0",
        lambda x, y: torch.stack([x, y]).logsumexp(0),
        (-math.inf, 0.0),
        [0.0, 1.0],
    ),
]


@pytest.mark.parametrize(
    ("label", "function", "values", "expected"), SPECIAL, ids=[s[0] for s in SPECIAL]
)
def test_special_values_follow_pytorch(label, function, values, expected) -> None:
    assert _grad_of(function, *values) == expected


@pytest.mark.parametrize(
    ("values", "dim"),
    [
        ([0.0, 2.0, 3.0], None),
        ([0.0, 0.0, 3.0], None),
        ([0.0, 0.0, 0.0], None),
        ([2.0, 0.0, 5.0, 0.5], None),
        ([[0.0, 2.0, 3.0], [1.0, 0.0, 0.0], [4.0, 0.0, 0.0]], 1),
        ([[0.0, 2.0, 3.0], [1.0, 0.0, 0.5], [4.0, 0.0, 0.0]], 0),
    ],
)
def test_second_derivatives_of_prod_through_zeros(values: list, dim: int | None) -> None:
    # The Hessian is the Jacobian of the (first-order) gradient: compared with
    # central differences of it, entries like d2/dx0 dx1 prod([0, 0, 3]) = 3 included.
    from gradcalc.autograd.functional import hessian

    def total(t: torch.Tensor) -> torch.Tensor:
        return t.prod() if dim is None else t.prod(dim).sum()

    point = np.array(values, dtype=np.float64)

    def gradient_at(array: np.ndarray) -> np.ndarray:
        t = torch.tensor(array, dtype=torch.float64, requires_grad=True)
        total(t).backward()
        return t.grad.numpy().reshape(-1)

    n = point.size
    want = np.zeros((n, n))
    for j in range(n):
        step = np.zeros(n)
        step[j] = 1e-6
        step = step.reshape(point.shape)
        want[:, j] = (gradient_at(point + step) - gradient_at(point - step)) / 2e-6
    got = hessian(total, torch.tensor(point, dtype=torch.float64)).numpy().reshape(n, n)
    np.testing.assert_allclose(got, want, atol=1e-8)
