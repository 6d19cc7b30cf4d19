"""The PyTorch gaps issue 13 closes in the Python API: hooks, backward(inputs=), custom
autograd.Function, devices and default dtypes, autograd.functional's vjp/jvp/vhp/hvp,
gradcheck/gradgradcheck, the classification losses and RuntimeError for shapes.

Expected values were computed with PyTorch 2.13 (float64 unless said otherwise);
the tests do not need torch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gradcalc as torch
import gradcalc.nn.functional as F
from gradcalc.autograd.functional import hessian, hvp, jacobian, jvp, vhp, vjp

f64 = torch.float64


def t64(values, **kw):
    return torch.tensor(values, dtype=f64, **kw)


def close(t, expected, tol=1e-8):
    np.testing.assert_allclose(np.asarray(t.detach().numpy()), expected, rtol=tol, atol=tol)


@pytest.fixture(autouse=True)
def _default_dtype():
    yield
    torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------- hooks


def test_hooks_run_in_order_and_a_returned_tensor_replaces_the_gradient(backward_loops) -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(("a", g.tolist())))
    h.register_hook(lambda g: g * 10)
    h.register_hook(lambda g: seen.append(("c", g.tolist())))
    h.retain_grad()
    y = (h**2).sum()
    (gh,) = torch.autograd.grad(y, [h], retain_graph=True)
    assert gh.tolist() == [60.0, 120.0]
    assert seen == [("a", [6.0, 12.0]), ("c", [60.0, 120.0])]
    y.backward()
    assert x.grad.tolist() == [180.0, 360.0]
    assert h.grad.tolist() == [60.0, 120.0]  # retain_grad keeps the hooked gradient


def test_leaf_hook_changes_what_accumulates_and_remove_unregisters(backward_loops) -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    handle = x.register_hook(lambda g: g + 1)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]
    handle.remove()
    x.grad = None
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]
    a = torch.tensor(2.0, requires_grad=True)
    a.register_hook(lambda g: g * 100)
    assert torch.autograd.grad(a * 3, a)[0].item() == 300.0


def test_a_leaf_hook_runs_once_with_the_total_gradient(backward_loops) -> None:
    x = torch.tensor(1.0, requires_grad=True)
    calls = []
    x.register_hook(lambda g: calls.append(g.item()))
    (x * 2 + x * 3).backward()
    assert calls == [5.0]


def test_hooks_in_a_recorded_backward_are_recorded() -> None:
    x = torch.tensor(2.0, requires_grad=True)
    y = x**3
    y.register_hook(lambda g: g * x)
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    assert g.item() == 24.0 and g.grad_fn.name() == "MulBackward0"


def test_hook_errors_are_pytorchs() -> None:
    with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't"):
        torch.tensor(1.0).register_hook(lambda g: g)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g.sum())
    with pytest.raises(RuntimeError, match="hook '<lambda>' has changed the size of value"):
        (x * 2).sum().backward()
    y = torch.tensor([1.0, 2.0], requires_grad=True)
    y.register_hook(lambda g: 5)
    with pytest.raises(TypeError, match="expected Variable, but hook returned 'int'"):
        (y * 2).sum().backward()


def test_a_handle_is_a_context_manager() -> None:
    x = torch.tensor(1.0, requires_grad=True)
    with x.register_hook(lambda g: g * 0):
        (x * 2).backward()
    assert x.grad.item() == 0.0
    (x * 2).backward()
    assert x.grad.item() == 2.0


# ---------------------------------------------------------------- backward(inputs=)


def test_backward_inputs_accumulates_only_into_them(backward_loops) -> None:
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    (a * b * a).backward(inputs=[a])
    assert a.grad.item() == 12.0 and b.grad is None
    c = a * b
    d = c * a
    d.backward(inputs=[c], retain_graph=True)
    assert c.grad.item() == 2.0 and c.retains_grad  # as PyTorch: a non-leaf input retains
    assert a.grad.item() == 12.0
    d.backward(retain_graph=True)
    assert (c.grad.item(), a.grad.item(), b.grad.item()) == (4.0, 24.0, 4.0)
    d.backward(inputs=[c, a])
    assert (c.grad.item(), a.grad.item(), b.grad.item()) == (6.0, 36.0, 4.0)


def test_backward_inputs_errors() -> None:
    a = torch.tensor(2.0, requires_grad=True)
    with pytest.raises(RuntimeError, match="`inputs` argument to `backward\\(\\)` cannot be empty"):
        (a * 2).backward(inputs=[])
    with pytest.raises(RuntimeError, match="does not require grad"):
        (a * 2).backward(inputs=[torch.tensor(1.0)])


# ---------------------------------------------------------------- custom Function


class LegendrePolynomial3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input**3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * input**2 - 1)


def test_pytorchs_polynomial_custom_function_example(backward_loops) -> None:
    """PyTorch's polynomial_custom_function.py, 2000 steps, float32: the printed losses
    (within float32 summation order) and the fitted coefficients."""
    dtype = torch.float
    device = torch.device("cpu")
    x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
    y = torch.sin(x)
    a = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
    b = torch.full((), -1.0, device=device, dtype=dtype, requires_grad=True)
    c = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
    d = torch.full((), 0.3, device=device, dtype=dtype, requires_grad=True)
    losses = {}
    for t in range(2000):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if t % 100 == 99:
            losses[t] = loss.item()
        loss.backward()
        with torch.no_grad():
            for p in (a, b, c, d):
                p -= 5e-6 * p.grad
                p.grad = None
    assert y_pred.grad_fn.next_functions[1][0].next_functions[1][0].name() == (
        "LegendrePolynomial3Backward"
    )
    torch_losses = {99: 209.95834350585938, 999: 14.877889633178711, 1999: 8.943641662597656}
    for step, expected in torch_losses.items():
        assert losses[step] == pytest.approx(expected, rel=2e-6)
    assert b.item() == pytest.approx(-2.208526849746704, rel=1e-6)
    assert d.item() == pytest.approx(0.2554861009120941, rel=1e-6)
    assert abs(a.item()) < 1e-7 and abs(c.item()) < 1e-7


def test_function_ctx_needs_input_grad_and_gradcheck() -> None:
    seen = {}

    class MulAdd(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, k):
            seen["needs"] = ctx.needs_input_grad
            ctx.save_for_backward(x, y)
            ctx.k = k
            return x * y + k

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return g * y, g * x, None

    x = t64([1.0, 2.0], requires_grad=True)
    y = t64([3.0, 4.0])
    out = MulAdd.apply(x, y, 5.0)
    assert seen["needs"] == (True, False, False)
    assert out.grad_fn.name() == "MulAddBackward"
    assert out.tolist() == [8.0, 13.0]
    out.sum().backward()
    assert x.grad.tolist() == [3.0, 4.0]
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        out.sum().backward()
    assert torch.autograd.gradcheck(MulAdd.apply, (x, y.requires_grad_(), 2.0))
    assert torch.autograd.gradgradcheck(LegendrePolynomial3.apply, (x,))


def test_function_without_grad_returns_plain_tensor_and_checks_gradients() -> None:
    class Spread(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.expand(3, 2)  # x's shape broadcasts to it: summed down, as in PyTorch

    class Summed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.sum()

    plain = Spread.apply(torch.tensor([1.0, 2.0]))
    assert plain.grad_fn is None and plain.tolist() == [2.0, 4.0]
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    Spread.apply(x).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]
    with pytest.raises(
        RuntimeError,
        match=r"SummedBackward returned an invalid gradient at index 0 - got \[\] but expected "
        r"shape compatible with \[2\]",
    ):
        Summed.apply(x).sum().backward()

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g, g

    with pytest.raises(RuntimeError, match="returned an incorrect number of gradients"):
        Wrong.apply(x).sum().backward()


def test_function_saving_its_output_and_setup_context() -> None:
    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.exp()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx, g):
            (result,) = ctx.saved_tensors
            return g * result

    x = t64([0.0, 1.0], requires_grad=True)
    (g,) = torch.autograd.grad(Exp.apply(x).sum(), x, create_graph=True)
    close(g, [1.0, math.e])
    (gg,) = torch.autograd.grad(g.sum(), x)
    close(gg, [1.0, math.e])
    assert torch.autograd.gradcheck(Exp.apply, x)


# ---------------------------------------------------------------- devices and default dtypes


def test_device() -> None:
    d = torch.device("cpu")
    assert repr(d) == "device(type='cpu')" and str(d) == "cpu"
    assert d == torch.device("cpu") and d != "cpu" and d.index is None
    assert repr(torch.device("cpu:0")) == "device(type='cpu', index=0)"
    assert repr(torch.device("cuda", 1)) == "device(type='cuda', index=1)"
    assert torch.tensor([1.0]).device == d and str(torch.tensor([1.0]).device) == "cpu"
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        torch.device("gpu")
    for make in (
        lambda: torch.zeros(2, device="cuda"),
        lambda: torch.tensor([1.0], device=torch.device("cuda:0")),
        lambda: torch.ones(2).to("cuda"),
        lambda: torch.ones(2).cuda(),
        lambda: torch.set_default_device("cuda"),
    ):
        with pytest.raises(RuntimeError, match="gradcalc computes on the CPU only"):
            make()
    assert torch.zeros(2, device=d).tolist() == [0.0, 0.0]
    assert torch.ones(1).to(torch.device("cpu"), torch.float64).dtype == f64
    torch.set_default_device("cpu")
    torch.set_default_device(None)
    assert torch.get_default_device() == d


def test_default_dtype_changes_python_floats_as_in_pytorch() -> None:
    assert torch.get_default_dtype() == torch.float32
    torch.set_default_dtype(torch.float64)
    assert torch.get_default_dtype() == f64
    assert torch.tensor(1.0).dtype == f64 and torch.tensor([1, 2]).dtype == torch.int64
    assert torch.ones(2).dtype == f64 and torch.arange(3.0).dtype == f64
    assert torch.arange(3).dtype == torch.int64 and torch.linspace(0, 1, 3).dtype == f64
    assert torch.rand(2).dtype == f64 and torch.full((2,), 1.0).dtype == f64
    assert torch.zeros(2, dtype=torch.float32).dtype == torch.float32
    assert torch.Tensor([1]).dtype == f64 and (torch.tensor([1, 2]) * 0.5).dtype == f64
    assert torch.tensor(2).sqrt().dtype == f64
    assert repr(torch.tensor(1.0) + 1.5) == "tensor(2.5000)"  # the default prints no dtype
    assert repr(torch.tensor([1.0], dtype=torch.float32)) == "tensor([1.], dtype=torch.float32)"
    with pytest.raises(TypeError, match="only floating-point types are supported"):
        torch.set_default_dtype(torch.int64)
    torch.set_default_dtype(torch.float32)
    assert torch.tensor(1.0).dtype == torch.float32


# ---------------------------------------------------------------- autograd.functional


def cube(x):
    return x**3


def test_vjp_jvp_vhp_hvp_match_pytorch_and_jacobian_hessian() -> None:
    x = t64([1.0, 2.0])
    v = t64([1.0, 0.5])
    out, prod = vjp(cube, x, v)
    close(out, [1.0, 8.0]) and close(prod, [3.0, 6.0])
    close(prod, (v @ jacobian(cube, x)).numpy())
    out, prod = jvp(cube, x, v)
    close(prod, [3.0, 6.0])
    close(prod, (jacobian(cube, x) @ v).numpy())

    def g(a, b):
        return (a * b).sum()

    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    out, (ga, gb) = vjp(g, (a, b))
    assert out.item() == 11.0 and ga.tolist() == [3.0, 4.0] and gb.tolist() == [1.0, 2.0]
    out, prod = jvp(g, (a, b), (torch.ones(2, dtype=f64), torch.ones(2, dtype=f64)))
    assert prod.item() == 10.0
    direction = (torch.ones(2, dtype=f64), torch.zeros(2, dtype=f64))
    for fn in (hvp, vhp):
        out, (ha, hb) = fn(g, (a, b), direction)
        assert ha.tolist() == [0.0, 0.0] and hb.tolist() == [1.0, 1.0]

    def s(x):
        return (x**3).sum()

    for fn in (hvp, vhp):
        out, prod = fn(s, x, t64([1.0, 1.0]))
        assert out.item() == 9.0 and prod.tolist() == [6.0, 12.0]
        close(prod, hessian(s, x).numpy() @ np.ones(2))
    out, prod = vjp(lambda a, b: (a * b, a + b), (a, b), (torch.ones(2, dtype=f64),) * 2)
    assert [o.tolist() for o in out] == [[3.0, 8.0], [4.0, 6.0]]
    assert [p.tolist() for p in prod] == [[4.0, 5.0], [2.0, 3.0]]
    assert jvp(cube, t64(2.0))[1].item() == 12.0


def test_functional_create_graph_strict_and_errors() -> None:
    x = t64([1.0, 2.0], requires_grad=True)
    out, prod = vjp(cube, x, torch.ones(2, dtype=f64), create_graph=True)
    assert out.grad_fn.name() == "PowBackward0" and prod.grad_fn is not None
    out, prod = vjp(cube, x, torch.ones(2, dtype=f64))
    assert out.grad_fn is None and prod.grad_fn is None
    const = lambda x: torch.ones(2, dtype=f64)  # noqa: E731
    assert vjp(const, x, torch.ones(2, dtype=f64))[1].tolist() == [0.0, 0.0]
    assert jvp(const, x, torch.ones(2, dtype=f64))[1].tolist() == [0.0, 0.0]
    for fn in (vjp, jvp):
        with pytest.raises(RuntimeError, match="Output 0 of the user-provided function does not"):
            fn(const, x, torch.ones(2, dtype=f64), strict=True)
    with pytest.raises(RuntimeError, match="v can only be None if the user-provided function"):
        vjp(cube, x)
    with pytest.raises(RuntimeError, match="v can only be None if the input"):
        hvp(lambda x: (x**3).sum(), x)
    with pytest.raises(RuntimeError, match="function given to hvp should contain a single"):
        hvp(cube, x, x)
    with pytest.raises(RuntimeError, match=r"v has invalid size: should be torch.Size\(\[2\]\)"):
        vjp(cube, x, torch.ones(3, dtype=f64))
    with pytest.raises(TypeError, match="The inputs given to jvp must be either a Tensor"):
        jvp(cube, [1.0])


# ---------------------------------------------------------------- gradcheck


class WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x


def test_gradcheck_passes_fails_and_reports_as_pytorch() -> None:
    x = t64([1.0, 2.0], requires_grad=True)
    assert torch.autograd.gradcheck(cube, (x,)) and torch.autograd.gradcheck(cube, x)
    assert torch.autograd.gradgradcheck(cube, (x,))
    assert torch.autograd.gradgradcheck(cube, (x,), (t64([1.0, -1.0]),))
    assert torch.autograd.gradcheck(lambda x, k: x * k, (x, 3.0))
    m = t64([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: (a @ b, a.sum() * b), (m, x))
    assert torch.autograd.gradcheck(WrongSquare.apply, (x,), raise_exception=False) is False
    with pytest.raises(torch.autograd.GradcheckError) as info:
        torch.autograd.gradcheck(WrongSquare.apply, (x,))
    assert isinstance(info.value, RuntimeError)
    assert str(info.value) == (
        "Jacobian mismatch for output 0 with respect to input 0,\n"
        "numerical:tensor([[2.0000, 0.0000],\n        [0.0000, 4.0000]], dtype=torch.float64)\n"
        "analytical:tensor([[3., 0.],\n        [0., 6.]], dtype=torch.float64)\n"
    )
    with pytest.raises(ValueError, match="gradcheck expects at least one input tensor"):
        torch.autograd.gradcheck(cube, (x.detach(),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.autograd.gradcheck(cube, (torch.tensor([1.0, 2.0], requires_grad=True),),
                                 raise_exception=False)  # fmt: skip
    assert "Input #0 requires gradient and is not a double precision" in str(caught[0].message)


def test_gradgradcheck_finds_a_backward_that_is_not_differentiable() -> None:
    class Flat(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2 * x.detach()

    x = t64([1.0, 2.0], requires_grad=True)
    assert torch.autograd.gradcheck(Flat.apply, (x,))
    with pytest.raises(torch.autograd.GradcheckError, match="Jacobian mismatch for output 0"):
        torch.autograd.gradgradcheck(Flat.apply, (x,))


# ---------------------------------------------------------------- losses


X = [[1.0, -2.0, 0.5], [0.3, 0.2, -1.5]]
Y = [2, 0]
W = [1.0, 2.0, 0.5]
CE_INDEX = [  # kwargs, value, d(sum of loss)/dx, from PyTorch
    ({}, 0.86610568,
     [[0.30187445, 0.01502944, -0.31690389], [-0.25847001, 0.21854537, 0.03992464]]),
    ({"reduction": "sum"}, 1.73221136,
     [[0.60374890, 0.03005889, -0.63380778], [-0.51694002, 0.43709074, 0.07984928]]),
    ({"reduction": "none"}, [1.00459690, 0.72761445],
     [[0.60374890, 0.03005889, -0.63380778], [-0.51694002, 0.43709074, 0.07984928]]),
    ({"weight": W}, 0.81994194,
     [[0.20124963, 0.01001963, -0.21126926], [-0.34462668, 0.29139383, 0.05323285]]),
    ({"label_smoothing": 0.1}, 0.93110568,
     [[0.28520778, -0.00163722, -0.28357056], [-0.22513668, 0.20187871, 0.02325797]]),
    ({"weight": W, "label_smoothing": 0.2}, 1.17429754,
     [[0.21047176, -0.07619736, -0.13427440], [-0.24500313, 0.21221807, 0.03278506]]),
    ({"ignore_index": 0}, 1.00459690, [[0.60374890, 0.03005889, -0.63380778], [0.0, 0.0, 0.0]]),
]  # fmt: skip
P = [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]
CE_PROB = [
    ({}, 1.19110568,
     [[0.20187445, -0.13497056, -0.06690389], [-0.25847001, 0.21854537, 0.03992464]]),
    ({"reduction": "none"}, [1.65459690, 0.72761445],
     [[0.40374890, -0.26994111, -0.13380778], [-0.51694002, 0.43709074, 0.07984928]]),
    ({"weight": W}, 1.59122060,
     [[0.21696817, -0.28421908, 0.06725091], [-0.25847001, 0.21854537, 0.03992464]]),
    ({"label_smoothing": 0.1}, 1.22360568,
     [[0.19520778, -0.13663722, -0.05857056], [-0.22513668, 0.20187871, 0.02325797]]),
]  # fmt: skip


def _with_weight(kwargs):
    return {k: t64(v) if k in ("weight", "pos_weight") else v for k, v in kwargs.items()}


@pytest.mark.parametrize(("kwargs", "value", "grad"), CE_INDEX + CE_PROB)
def test_cross_entropy_matches_pytorch(kwargs, value, grad) -> None:
    x = t64(X, requires_grad=True)
    target = torch.tensor(Y) if (kwargs, value, grad) in CE_INDEX else t64(P)
    loss = F.cross_entropy(x, target, **_with_weight(kwargs))
    close(loss, value)
    loss.sum().backward()
    close(x.grad, grad)
    assert not np.signbit(np.asarray(x.grad.numpy())[np.asarray(x.grad.numpy()) == 0]).any()
    assert torch.autograd.gradcheck(
        lambda x: F.cross_entropy(x, target, **_with_weight(kwargs)), (t64(X, requires_grad=True),)
    )


def test_cross_entropy_shapes_and_errors() -> None:
    x = t64(X)
    close(F.cross_entropy(x[0], torch.tensor(1)), 3.50459690)
    x3 = torch.arange(12.0, dtype=f64).reshape(2, 3, 2).sin()
    close(F.cross_entropy(x3, torch.tensor([[0, 2], [1, 1]])), 1.25262458)
    close(F.nll_loss(F.log_softmax(x, 1), torch.tensor(Y)), 0.86610568)
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        F.cross_entropy(x, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"Expected input batch_size \(2\) to match target"):
        F.cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        F.cross_entropy(x, torch.tensor(Y), reduction="avg")


Z = [[1.0, -2.0, 30.0], [0.3, -40.0, -1.5]]
T = [[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]]
BCE = [
    ({}, 9.66599304,
     [[-0.04482357, 0.01986715, 0.08333333], [0.09574042, -0.16666667, -0.13626241]]),
    ({"reduction": "none"}, [[0.31326169, 0.12692801, 15.0], [0.85435524, 40.0, 1.70141328]],
     [[-0.26894142, 0.11920292, 0.5], [0.57444252, -1.0, -0.81757448]]),
    ({"weight": W}, 14.96202993,
     [[-0.04482357, 0.03973431, 0.04166667], [0.09574042, -0.33333333, -0.06813121]]),
    ({"pos_weight": [3.0, 1.0, 0.5]}, 9.62862916,
     [[-0.13447071, 0.01986715, 0.08333333], [0.09574042, -0.16666667, -0.06813121]]),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "value", "grad"), BCE)
def test_binary_cross_entropy_with_logits_matches_pytorch(kwargs, value, grad) -> None:
    z = t64(Z, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(z, t64(T), **_with_weight(kwargs))
    close(loss, value)
    loss.sum().backward()
    close(z.grad, grad)
    target = t64(T, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, **_with_weight(kwargs)),
        (t64([[1.0, -2.0, 3.0], [0.3, -4.0, -1.5]], requires_grad=True), target),
    )
    assert torch.autograd.gradgradcheck(
        lambda z: F.binary_cross_entropy_with_logits(z, t64(T), **_with_weight(kwargs)),
        (t64([[1.0, -2.0, 3.0], [0.3, -4.0, -1.5]], requires_grad=True),),
    )


def test_bce_with_logits_and_mse_errors() -> None:
    with pytest.raises(
        ValueError, match=r"Target size \(torch.Size\(\[1, 2\]\)\) must be the same"
    ):
        F.binary_cross_entropy_with_logits(t64(Z), t64([[1.0, 0.0]]))
    close(F.mse_loss(t64(Z), t64(T)), 426.93166667)
    close(F.mse_loss(t64(Z), t64(T), reduce=False)[0, 2], 870.25)


# ---------------------------------------------------------------- exception types


def test_shapes_that_do_not_broadcast_raise_pytorchs_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=r"size of tensor a \(3\) must match the size of tensor "
                       r"b \(2\) at non-singleton dimension 1"):  # fmt: skip
        torch.ones(2, 3) + torch.ones(2, 2)
    with pytest.raises(RuntimeError, match="at non-singleton dimension 2"):
        torch.ones(2, 3, requires_grad=True) * torch.ones(4, 1, 2)
    with pytest.raises(ValueError):  # still what code written against NumPy catches
        torch.maximum(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="Overflow when unpacking long long"):
        torch.tensor([2**63])


def test_losses_record_pytorchs_fused_nodes() -> None:
    x = t64(X, requires_grad=True)
    assert F.cross_entropy(x, torch.tensor(Y)).grad_fn.name() == "NllLossBackward0"
    assert F.nll_loss(x.log_softmax(1), torch.tensor(Y), reduction="none").grad_fn.name() == (
        "NllLossBackward0"
    )
    assert F.cross_entropy(x, torch.tensor(Y), label_smoothing=0.1).grad_fn.name() == (
        "AddBackward0"  # as in PyTorch: (1 - e) * nll + smoothing
    )
    z = t64(Z, requires_grad=True)
    assert F.binary_cross_entropy_with_logits(z, t64(T)).grad_fn.name() == (
        "BinaryCrossEntropyWithLogitsBackward0"
    )
    loss = F.mse_loss(z, t64(T))
    assert loss.grad_fn.name() == "MseLossBackward0"
    close(loss, 426.93166667)
    (g,) = torch.autograd.grad(loss, z)
    close(g, (2 * (np.array(Z) - np.array(T)) / 6))


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ((3,), (2,), "inconsistent tensor size, expected tensor [3] and src [2] to have the same "
         "number of elements, but got 3 and 2 elements respectively"),
        ((2, 3), (2, 3), "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)"),
        ((2, 3), (2,), "size mismatch, got input (2), mat (2x3), vec (2)"),
        ((2,), (3, 2), "mat1 and mat2 shapes cannot be multiplied (1x2 and 3x2)"),
        ((4, 2, 3), (2,), "size mismatch, got input (8), mat (8x3), vec (2)"),
    ],
)  # fmt: skip
def test_matmul_mismatches_are_pytorchs_runtime_errors(a, b, message) -> None:
    with pytest.raises(RuntimeError) as info:
        torch.matmul(torch.ones(*a), torch.ones(*b))
    assert str(info.value) == message


def test_reshape_mismatch_is_pytorchs_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=r"shape '\[2, -1\]' is invalid for input of size 5"):
        torch.ones(5).view(2, -1)
    with pytest.raises(RuntimeError, match=r"shape '\[3\]' is invalid for input of size 1"):
        torch.ones(1).reshape(3)


def test_gradcheck_forward_ad_compares_jacobian_vector_products() -> None:
    x = t64([1.0, 2.0], requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, k: (x**3 * k, x.sum()), (x, 2.0), check_forward_ad=True
    )
    with pytest.raises(torch.autograd.GradcheckError, match="While considering the forward AD"):
        torch.autograd.gradcheck(
            WrongSquare.apply, (x,), check_forward_ad=True, check_backward_ad=False
        )


def test_mark_non_differentiable_output_gets_no_node() -> None:
    class ArgMax(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            index = x.argmax()
            ctx.mark_non_differentiable(index)
            return index

        @staticmethod
        def backward(ctx, g):
            return None

    out = ArgMax.apply(t64([1.0, 3.0, 2.0], requires_grad=True))
    assert out.item() == 1 and not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (lambda: torch.cat([torch.ones(2, 3), torch.ones(2, 2)]), RuntimeError,
         "Sizes of tensors must match except in dimension 0. Expected size 3 but got size 2 "
         "for tensor number 1 in the list."),
        (lambda: torch.cat([torch.ones(2, 3), torch.ones(3)]), RuntimeError,
         "Tensors must have same number of dimensions: got 2 and 1"),
        (lambda: torch.stack([torch.ones(3), torch.ones(2)]), RuntimeError,
         "stack expects each tensor to be equal size, but got [3] at entry 0 and [2] at entry 1"),
        (lambda: torch.ones(3).expand(2, 4), RuntimeError,
         "The expanded size of the tensor (4) must match the existing size (3) at non-singleton "
         "dimension 1.  Target sizes: [2, 4].  Tensor sizes: [3]"),
        (lambda: torch.ones(2, 3).expand(3), RuntimeError,
         "expand(torch.FloatTensor{[2, 3]}, size=[3]): the number of sizes provided (1) must be "
         "greater or equal to the number of dimensions in the tensor (2)"),
        (lambda: torch.ones(3).transpose(0, 2), IndexError,
         "Dimension out of range (expected to be in range of [-1, 0], but got 2)"),
        (lambda: torch.ones(2, 3).permute(0), RuntimeError,
         "permute(sparse_coo): number of dimensions in the tensor input does not match the "
         "length of the desired ordering of dimensions i.e. input.dim() = 2 is not equal to "
         "len(dims) = 1"),
        (lambda: torch.ones(2, 3).permute(0, 0), RuntimeError,
         "permute(): duplicate dims are not allowed."),
    ],
)  # fmt: skip
def test_shape_errors_have_pytorchs_types_and_messages(make, kind, message) -> None:
    with pytest.raises(kind) as info:
        make()
    assert str(info.value) == message


def test_shape_functions_still_work() -> None:
    assert torch.cat([torch.ones(2, 3), torch.zeros(1, 3)]).shape == (3, 3)
    assert torch.cat([torch.ones(2, 3), torch.zeros(2, 1)], dim=1).shape == (2, 4)
    assert torch.ones(1, 3).expand(2, -1).shape == (2, 3)
    assert torch.ones(3).expand(4, 2, 3).shape == (4, 2, 3)
    assert torch.ones(2, 3, 4).permute(2, 0, 1).shape == (4, 2, 3)
    assert torch.ones(2, 3).permute(-1, 0).shape == (3, 2)
    assert torch.ones(2, 3).transpose(-1, 0).shape == (3, 2)


class SinCos(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin(), x.cos()

    @staticmethod
    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        return grad_sin * x.cos() - grad_cos * x.sin()


def test_a_function_with_several_outputs(backward_loops) -> None:
    x = t64([0.5, 1.0], requires_grad=True)
    s, c = SinCos.apply(x)
    assert s.grad_fn.name() == c.grad_fn.name() == "SinCosBackward"
    (s * 2 + c * 3).sum().backward()
    close(x.grad, [0.3169, -1.4438], tol=1e-4)  # PyTorch's printed values
    close(x.grad, 2 * np.cos([0.5, 1.0]) - 3 * np.sin([0.5, 1.0]))
    x.grad = None
    s, c = SinCos.apply(x)
    c.sum().backward()  # the unused output's gradient reaches backward as zeros
    close(x.grad, -np.sin([0.5, 1.0]))
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        c.sum().backward()
    s.sum().backward()  # the other output's node still holds what it saved
    close(x.grad, np.cos([0.5, 1.0]) - np.sin([0.5, 1.0]))
    assert torch.autograd.gradcheck(SinCos.apply, (x,))
    assert torch.autograd.gradgradcheck(SinCos.apply, (x,))


def test_a_hooked_leaf_is_collected_with_its_hooks(backward_loops) -> None:
    import gc
    import weakref

    def hooked_leaf():
        leaf = torch.tensor([1.0, 2.0], requires_grad=True)
        leaf.register_hook(lambda g: g * leaf.detach())  # the hook refers to the leaf itself
        return leaf

    x = hooked_leaf()
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]
    (x * 2).sum().backward()  # the hook outlives the first graph
    assert x.grad.tolist() == [4.0, 8.0]
    alive = weakref.ref(x)
    del x
    gc.collect()
    assert alive() is None


def test_cpu_only_code_chooses_the_cpu() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert device == "cpu" and torch.cuda.device_count() == 0
    torch.cuda.manual_seed(0)
    assert torch.zeros(2, device=device).device == torch.device("cpu")


POLYNOMIAL_TORCH_PRINTS = {  # PyTorch 2.13's printed losses (float32), a few of the 20
    99: 209.95834350585938,
    499: 50.978511810302734,
    999: 14.877889633178711,
    1499: 9.692105293273926,
    1999: 8.943641662597656,
}


def test_pytorchs_example_file_runs_unchanged_but_for_its_import() -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).parent / "examples" / "polynomial_custom_function.py"
    run = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stderr == ""
    lines = run.stdout.splitlines()
    assert len(lines) == 21
    printed = dict(line.split() for line in lines[:20])
    assert sorted(int(step) for step in printed) == list(range(99, 2000, 100))
    for step, expected in POLYNOMIAL_TORCH_PRINTS.items():
        assert float(printed[str(step)]) == pytest.approx(expected, rel=2e-6)
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", lines[20])]
    assert lines[20].startswith("Result: y = ") and " * P3(" in lines[20]
    a, b, c, d = numbers
    assert b == pytest.approx(-2.208526849746704, rel=1e-6)
    assert d == pytest.approx(0.2554861009120941, rel=1e-6)
    assert abs(a) < 1e-7 and abs(c) < 1e-7
