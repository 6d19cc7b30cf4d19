"""The autograd engine's behaviour: backward, accumulation, graphs, grad modes, errors."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from typing import Any

import numpy as np
import pytest

import gradcalc as torch
from gradcalc import _recycle, _tensor
from gradcalc.autograd import Variable, grad
from gradcalc.errors import (
    DtypeGradError,
    FreedGraphError,
    GradError,
    ImplicitGradError,
    InplaceLeafError,
    NoGradFnError,
)

pytestmark = pytest.mark.usefixtures("backward_loops")  # C and Python loops alike


def names(fn) -> list:
    return [None if f is None else f.name() for f, _ in fn.next_functions]


# ---------------------------------------------------------------- defaults and dtypes


def test_pytorch_defaults() -> None:
    assert torch.tensor(2.0).dtype == torch.float32
    assert torch.tensor(2).dtype == torch.int64
    assert torch.tensor([True]).dtype == torch.bool
    assert not torch.tensor(2.0).requires_grad
    assert (torch.arange(6).reshape(2, 3) * 1.0).dtype == torch.float32
    assert (torch.arange(4) / 2).dtype == torch.float32
    assert torch.Tensor([1, 0.1, 0.01]).dtype == torch.float32
    assert torch.tensor(5, requires_grad=True, dtype=torch.float32).requires_grad
    assert torch.tensor(np.float64(1.5)).dtype == torch.float64
    assert (torch.tensor([1.0], dtype=torch.float64) * 2.5).dtype == torch.float64
    assert torch.randn(3, 1).shape == (3, 1)
    assert torch.rand((5, 5), requires_grad=True).requires_grad
    assert torch.randn(size=(), requires_grad=True).shape == ()
    assert repr(torch.float64) == "torch.float64"
    assert repr(torch.ones(2, 3).shape) == "torch.Size([2, 3])"
    assert isinstance(torch.__version__, str)


def test_integer_tensors_cannot_require_grad() -> None:
    message = "Only Tensors of floating point and complex dtype can require gradients"
    with pytest.raises(DtypeGradError, match=message):
        torch.tensor(5, requires_grad=True)
    with pytest.raises(RuntimeError, match=message):
        torch.arange(3).requires_grad_()


def test_manual_seed_makes_random_tensors_reproducible() -> None:
    torch.manual_seed(7)
    first = torch.randn(4)
    torch.manual_seed(7)
    assert torch.equal(first, torch.randn(4))
    u = torch.rand(1000)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    generator = torch.Generator().manual_seed(3)
    again = torch.Generator().manual_seed(3)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=again))


# ---------------------------------------------------------------- backward


def test_seed_000_gradients_accumulate() -> None:
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(6.0, requires_grad=True)
    (3 * a**3 - b**2).backward()
    assert (float(a.grad), float(b.grad)) == (36.0, -12.0)
    (-3 * a**3 + b**2).backward()
    assert (float(a.grad), float(b.grad)) == (0.0, 0.0)


def test_reused_nodes_and_shared_operands() -> None:
    a = torch.tensor(3.0, requires_grad=True)
    b = a + a
    c = b + b
    c.backward()
    assert float(a.grad) == 4.0
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_broadcast_gradients_are_summed_back() -> None:
    x = torch.ones((2, 1), requires_grad=True)
    y = torch.ones((1, 3), requires_grad=True)
    s = torch.tensor(2.0, requires_grad=True)
    ((x + y) * s).sum().backward()
    assert x.grad.shape == (2, 1) and x.grad.tolist() == [[6.0], [6.0]]
    assert y.grad.shape == (1, 3) and y.grad.tolist() == [[4.0, 4.0, 4.0]]
    assert float(s.grad) == 12.0


def test_non_scalar_backward_needs_a_gradient() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(
        ImplicitGradError, match="grad can be implicitly created only for scalar outputs"
    ):
        (x * 2).backward()
    (x * 2).backward(torch.tensor([1.0, 0.5]))
    assert x.grad.tolist() == [2.0, 1.0]


def test_backward_of_a_constant() -> None:
    with pytest.raises(
        NoGradFnError,
        match="element 0 of tensors does not require grad and does not have a grad_fn",
    ):
        (torch.tensor(5) * torch.tensor(5)).backward()


def test_second_backward_through_a_freed_graph() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(FreedGraphError, match="Trying to backward through the graph a second time"):
        y.backward()
    z = (x.exp()).sum()
    z.backward(retain_graph=True)
    z.backward()
    assert np.allclose(x.grad._data, 2 * x._data + 2 * np.exp(x._data))
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        z.backward()


def test_graphs_without_saved_tensors_can_be_walked_twice() -> None:
    x = torch.tensor(1.0, requires_grad=True)
    y = x + 1
    y.backward()
    y.backward()
    assert float(x.grad) == 2.0


def test_a_second_backward_fails_only_when_tensors_were_saved() -> None:
    # As PyTorch: multiplying by a Python number saves no tensor, by a tensor does.
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = 2 * x
    y.sum().backward()
    twice = (x / 4).sum()
    twice.backward()
    twice.backward()
    assert x.grad.tolist() == [2.5, 2.5]
    z = (x * torch.tensor(3.0)).sum()
    z.backward()
    with pytest.raises(FreedGraphError):
        z.backward()
    w = x.exp().sum()
    w.backward()
    with pytest.raises(FreedGraphError):
        w.backward()


def test_nodes_keep_only_the_values_their_vjps_read() -> None:
    x = torch.tensor(np.arange(1000.0), requires_grad=True)
    big = x * 1.0  # an intermediate
    node = (big + 1).grad_fn  # add reads no values: a zero-memory stand-in
    assert node.saved[0].shape == (1000,) and node.saved[0].strides == (0,)
    node = (big * torch.tensor(2.0)).grad_fn  # d/d big reads only the other operand
    assert node.saved[0].strides == (0,) and float(node.saved[1]) == 2.0
    node = (big * big).grad_fn
    assert node.saved[0] is big._data and node.saved[1] is big._data


def test_backward_never_writes_into_arrays_it_does_not_own() -> None:
    # Gradients meeting at a node are summed in place, but only into buffers the
    # backward pass allocated: never a seed, a leaf's data or an array shared
    # between two branches.
    seed_data = np.ones(3)
    seed = torch.from_numpy(seed_data)
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    y = a + b  # both operands receive the seed itself
    z = y + y + a
    z.backward(seed)
    assert seed_data.tolist() == [1.0, 1.0, 1.0]
    assert a.grad.tolist() == [3.0, 3.0, 3.0] and b.grad.tolist() == [2.0, 2.0, 2.0]
    a.grad.zero_()
    assert b.grad.tolist() == [2.0, 2.0, 2.0]
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    kept = x.grad
    (x * x).sum().backward()  # accumulates into .grad in place, as PyTorch does
    assert kept is x.grad and x.grad.tolist() == [5.0, 7.0]


def test_backward_reuses_only_buffers_nobody_else_holds() -> None:
    # Backward writes results into saved arrays it no longer needs (exp's output,
    # a product's operands), but never into one a tensor of the user still shows.
    x = torch.tensor(np.linspace(-1.0, 1.0, 5), requires_grad=True)
    e = x.exp()
    s = x.sin()
    kept_e, kept_s = e.detach().numpy().copy(), s.detach().numpy().copy()
    (e * s).sum().backward()
    assert np.array_equal(e.detach().numpy(), kept_e)
    assert np.array_equal(s.detach().numpy(), kept_s)
    xd = x.detach().numpy()
    want = np.exp(xd) * np.sin(xd) + np.exp(xd) * np.cos(xd)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12)
    x.grad = None
    (x.exp() * x.sin()).sum().backward()  # the same with nothing held: same numbers
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12)
    assert np.array_equal(x.detach().numpy(), xd)


def test_ops_with_arguments_also_write_into_spare_buffers() -> None:
    # pow's node holds its exponent beside the saved arrays; the gradient
    # arriving there (cos's output, held by nothing else) is still spare.
    x = torch.tensor(np.linspace(-1.0, 1.0, 7), requires_grad=True)
    seen: list[tuple[str, int]] = []
    original = _tensor._spare_buffers

    def spy(node: Any, args: tuple, index: int) -> tuple:
        found = original(node, args, index)
        seen.append((type(node).__name__, len(found)))
        return found

    _tensor._spare_buffers = spy
    try:
        (x.sin() ** 2 * x.cos()).sum().backward()
    finally:
        _tensor._spare_buffers = original
    assert any(name == "PowBackward0" and count > 0 for name, count in seen)
    xd = x.detach().numpy()
    want = 2 * np.sin(xd) * np.cos(xd) ** 2 - np.sin(xd) ** 3
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12)


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_large_results_reuse_buffers_nobody_holds_any_more() -> None:
    # A training loop's next step writes into the arrays the last one let go
    # (no fresh pages from the kernel), never into one a user still holds.
    torch.empty_cache()
    x = torch.from_numpy(np.linspace(-1.0, 1.0, 400_000)).requires_grad_()
    held = x.exp()  # the user keeps this intermediate
    held_values = held.detach().numpy().copy()
    (held * x.sin() * x.cos()).sum().backward()
    free = {
        _address(a)
        for arrays in _recycle._pool.values()
        for a in arrays
        if sys.getrefcount(a) <= 3  # the pool's list, the loop, the call
    }
    assert free and _address(held.detach().numpy()) not in free
    assert _address(x.detach().numpy()) not in free
    assert _address(x.grad.numpy()) not in free
    reused = x.tanh()
    assert _address(reused.detach().numpy()) in free
    np.testing.assert_array_equal(reused.detach().numpy(), np.tanh(x.detach().numpy()))
    np.testing.assert_array_equal(held.detach().numpy(), held_values)
    view = x.sin()[::2]  # a view keeps its whole buffer in use
    del reused
    assert _address(x.cos().detach().numpy()) != _address(view.detach().numpy().base)
    torch.empty_cache()
    assert _recycle.held_bytes() == 0


@pytest.mark.parametrize(
    "step",
    [
        lambda x, w: (x.tanh() * x.tan() + x**2 * 0.5 - x.exp()).sum(),
        lambda x, w: ((x.sin() + 1.0) / (x.cos() + 3.0) - x.sqrt().log1p()).sum(),
        lambda x, w: ((x.reshape(400, 1000) @ w).tanh() ** 2).mean(),
    ],
    ids=["elementwise", "quotients", "matmul"],
)
def test_pooled_large_arrays_give_the_recorded_backwards_bits(step: Any) -> None:
    # Large arrays go through pooled buffers and in-place VJPs; the recorded
    # (create_graph) backward runs the same formulas on Tensors.
    torch.empty_cache()
    x = torch.from_numpy(np.linspace(0.1, 1.2, 400_000)).requires_grad_()
    w = torch.from_numpy(np.linspace(-1.0, 1.0, 1000 * 400).reshape(1000, 400)).requires_grad_()
    for _ in range(2):  # the second pass runs on buffers the first one freed
        raw = [
            g.numpy().copy() for g in grad(step(x, w), [x, w], allow_unused=True) if g is not None
        ]
    recorded = [
        g.detach().numpy()
        for g in grad(step(x, w), [x, w], create_graph=True, allow_unused=True)
        if g is not None
    ]
    assert len(raw) == len(recorded) > 0
    for got, want in zip(raw, recorded, strict=True):
        np.testing.assert_array_equal(got, want)
    torch.empty_cache()


NEGATIONS = {
    "alone": lambda x: (-x).sum(),
    "first of two": lambda x: (x * 3.0 + (-x)).sum(),
    "first, own buffer": lambda x: (x * x + (-x) * x.cos()).sum(),
    "first, then in place": lambda x: (x * 3.0 + (-x) * x.detach().cos()).sum(),
    "between": lambda x: (x.sin() + (-x) * x.exp() + x * 2.0).sum(),
    "then a sum": lambda x: (-x.exp() + x * 3.0).sum(),
    "after a sum": lambda x: (x * 3.0 + -x.exp()).sum(),
    "twice": lambda x: ((-x) * 0.5 + (-x).sin()).sum(),
    "of a negation": lambda x: ((-x).neg() * x).sum(),
    "rsub": lambda x: ((2.5 - x) * x + (1.0 - x.cos())).sum(),
    "into a view": lambda x: (-x[::2]).sum() + (x * x).sum(),
    "broadcast": lambda x: (-x.reshape(-1, 1) + x.reshape(1, -1)[:, :3]).sum(),
}


@pytest.mark.parametrize("size", [6, 300_000], ids=["small", "pooled"])
@pytest.mark.parametrize("step", NEGATIONS.values(), ids=NEGATIONS.keys())
def test_folded_negations_give_the_recorded_backwards_bits(step: Any, size: int) -> None:
    # A raw backward folds NegBackward's -g into the sum at the operand
    # (subtracting instead of negating then adding); the recorded backward
    # computes -g as written. Bits must agree, signed zeros included.
    x = torch.from_numpy(np.linspace(-1.2, 1.1, size)).requires_grad_()
    step(x).backward()
    (recorded,) = grad(step(x), x, create_graph=True)
    (targeted,) = grad(step(x), x)
    assert x.grad.numpy().tobytes() == recorded.detach().numpy().tobytes()
    assert targeted.numpy().tobytes() == recorded.detach().numpy().tobytes()
    retained = x.grad.numpy().copy()
    loss = step(x)
    loss.backward(retain_graph=True)  # saved buffers stay shared: nothing in place
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), retained * 3)
    torch.empty_cache()


def test_a_raw_backward_never_computes_minus_g_for_arrays(monkeypatch) -> None:
    from gradcalc import ops

    def computed(g: Any, a: Any, x: Any) -> Any:
        raise AssertionError("NegBackward's VJP ran")

    monkeypatch.setattr(ops.NEG.node, "vjps", (computed,))
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * 2.0 - (-x).exp()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0 + np.exp(-x.detach().numpy()))


def test_a_folded_negation_reaches_hooks_and_intermediates_negated() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    u = x * 2.0
    u.retain_grad()
    (-u).sum().backward()
    assert u.grad.tolist() == [-1.0, -1.0, -1.0]
    assert x.grad.tolist() == [-2.0, -2.0, -2.0]
    u = x * 2.0
    (gu,) = grad((-u * u).sum(), u)
    assert gu.tolist() == [-4.0, 8.0, -12.0]


def test_pooled_buffers_last_one_step_and_only_large_arrays_are_pooled() -> None:
    torch.empty_cache()
    small = torch.tensor(np.ones(1000), requires_grad=True)
    (small.exp() * small.sin()).sum().backward()
    assert _recycle.held_bytes() == 0  # malloc recycles small arrays well
    plain = torch.from_numpy(np.ones(300_000))
    unrecorded = torch.from_numpy(np.ones(300_000)).requires_grad_()
    with torch.no_grad():
        unrecorded.exp() * unrecorded.sin()
    plain.exp() * plain.sin() ** 2 + 1.0
    assert not _recycle._pool  # only a training step's arrays are pooled
    big = torch.from_numpy(np.ones(300_000)).requires_grad_()
    (big.exp() * big.sin()).sum().backward()
    assert _recycle.held_bytes() > 0
    loss = (big.exp() * big.sin()).sum()
    loss.backward(retain_graph=True)
    big.grad = None
    (big.exp() * big.cos()).sum().backward()  # may take any free buffer
    big.grad = None
    loss.backward()  # the retained graph's data is intact
    want = np.exp(1.0) * (np.sin(1.0) + np.cos(1.0))
    np.testing.assert_allclose(big.grad.numpy(), np.full(300_000, want), rtol=1e-12)
    other = torch.from_numpy(np.ones(200_000)).requires_grad_()
    for _ in range(3):
        (other.exp() * other.sin()).sum().backward()
    shapes = {key[0] for key, arrays in _recycle._pool.items() if arrays}
    assert (300_000,) not in shapes  # free and unused for a whole step: released
    torch.empty_cache()
    assert _recycle.held_bytes() == 0


def test_recorded_backward_keeps_retained_gradients_and_values() -> None:
    with _tensor.record_values():
        x = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        y = x.exp()
        y.retain_grad()
        z = y * y
        (g,) = grad(z, [x], create_graph=True)
        z.backward()
    assert float(g) == pytest.approx(2 * np.exp(4.0))
    assert float(y.grad) == pytest.approx(2 * np.exp(2.0))
    assert float(y.grad_fn.grad_value) == pytest.approx(2 * np.exp(2.0))


def test_retain_grad_keeps_an_intermediate_gradient() -> None:
    x = torch.tensor(5.0, requires_grad=True)
    r1 = x * x
    r2 = r1 * 3
    r1.retain_grad()
    r2.backward()
    assert float(r1.grad) == 3.0 and float(x.grad) == 30.0
    assert r2.grad is None and r1.retains_grad and not r2.retains_grad


def test_the_graph_structure_matches_pytorch() -> None:
    a = torch.tensor(2.0, requires_grad=True)
    assert names((a * 3).grad_fn) == ["AccumulateGrad", None]
    assert names((3 * a).grad_fn) == ["AccumulateGrad", None]
    assert (3 - a).grad_fn.name() == "RsubBackward1"
    assert names((3 / a).grad_fn) == ["ReciprocalBackward0", None]
    assert names((a**2).grad_fn) == ["AccumulateGrad"]
    assert (2**a).grad_fn.name() == "PowBackward2"
    assert (a**a).grad_fn.name() == "PowBackward1"
    x = torch.randn((3, 1), requires_grad=True)
    y = x + 1
    z = y**2 + 3
    assert names(z.grad_fn) == ["PowBackward0", None]
    assert z.grad_fn.next_functions[0][0].next_functions[0][0] is y.grad_fn
    leaf = y.grad_fn.next_functions[0][0]
    assert leaf.name() == "AccumulateGrad" and leaf.variable is x
    v = torch.arange(4.0, requires_grad=True)
    assert (2 * torch.dot(v, v)).grad_fn.name() == "MulBackward0"
    assert v.sum().grad_fn.name() == "SumBackward0"
    assert v.mean().grad_fn.name() == "MeanBackward0"
    w = torch.ones((3, 1), requires_grad=True)
    assert (torch.ones(2, 3)).matmul(w).grad_fn.name() == "MmBackward0"
    assert repr(y.grad_fn).startswith("<AddBackward0 object at 0x")
    assert type(y.grad_fn).__name__ == "AddBackward0"
    assert v[0].grad_fn.name() == "SelectBackward0"
    assert v[1:3].grad_fn.name() == "SliceBackward0"
    assert v[[0, 0]].grad_fn.name() == "IndexBackward0"


def test_indexing_gradients_scatter_add() -> None:
    x = torch.arange(4.0, requires_grad=True)
    (x[[0, 0, 3]] * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 0.0, 3.0]
    m = torch.ones((2, 3), requires_grad=True)
    (m[:, 1].sum() + m[1, 1:].sum() + m[m > 0].sum()).backward()
    assert m.grad.tolist() == [[1.0, 2.0, 1.0], [1.0, 3.0, 2.0]]


def test_cat_stack_where_clamp() -> None:
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    out = torch.cat([a, b]) * torch.tensor([1.0, 2.0, 3.0])
    out.sum().backward()
    assert a.grad.tolist() == [1.0, 2.0] and b.grad.tolist() == [3.0]
    a.grad = None
    torch.stack([a, a * 2], dim=1).sum().backward()
    assert a.grad.tolist() == [3.0, 3.0]
    a.grad = None
    torch.where(a > 0, a, 0.0).sum().backward()
    assert a.grad.tolist() == [1.0, 0.0]
    a.grad = None
    a.clamp(min=-1.0).sum().backward()
    assert a.grad.tolist() == [1.0, 0.0]


def test_reductions_with_dim_and_keepdim() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    assert torch.sum(x, dim=0).tolist() == [3.0, 5.0, 7.0]
    assert x.sum(1, keepdim=True).shape == (2, 1)
    assert x.mean(dim=(0, 1)).item() == 2.5
    assert x.max(dim=1).values.tolist() == [2.0, 5.0]
    assert x.max(dim=1).indices.tolist() == [2, 2]
    assert x.max().item() == 5.0
    assert torch.max(x, torch.tensor(3.0)).tolist() == [[3.0, 3.0, 3.0], [3.0, 4.0, 5.0]]
    assert x.prod(1).tolist() == [0.0, 60.0]
    assert np.isclose(x.norm().item(), np.sqrt(55.0))
    assert np.allclose(x.softmax(1).sum(1).tolist(), [1.0, 1.0])
    assert np.isclose(x.logsumexp(1)[0].item(), np.log(np.exp([0, 1, 2]).sum()))


def test_matmul_shapes() -> None:
    m = torch.ones((2, 3), requires_grad=True)
    v = torch.ones(3, requires_grad=True)
    assert (m @ v).grad_fn.name() == "MvBackward0"
    batch = torch.ones((4, 2, 3), requires_grad=True)
    out = batch @ torch.ones((3, 5))
    assert out.shape == (4, 2, 5)
    out.sum().backward()
    assert batch.grad.shape == (4, 2, 3) and float(batch.grad[0, 0, 0]) == 5.0
    (v @ m.t()).sum().backward()
    assert v.grad.tolist() == [2.0, 2.0, 2.0]


# ---------------------------------------------------------------- autograd.grad


def test_grad_of_intermediates_leaves_dot_grad_alone() -> None:
    x = torch.tensor(5.0, requires_grad=True)
    z = torch.tensor(3.0, requires_grad=True)
    r1 = x * x + z + torch.log(z)
    r2 = r1 + torch.sqrt(x)
    r3 = 100 * r1 + torch.log(r2)
    y = r1 + r2 + r3
    g_r1, g_x = grad(y, [r1, x], retain_graph=True)
    expected_r1 = 1 + (1 + 1 / r2.item()) + 100
    assert np.isclose(g_r1.item(), expected_r1, rtol=1e-6)
    assert np.isclose(g_x.item(), 1020.5499, rtol=1e-6)
    assert x.grad is None and z.grad is None
    (g_r2,) = grad(y, r2)
    assert np.isclose(g_r2.item(), 1 + 1 / r2.item(), rtol=1e-6)


def test_grad_flows_through_one_requested_tensor_to_another() -> None:
    # Asking for h and x: the part of the graph between them must still run.
    x = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    h = x * 3
    y = h.sin() * h.sin()
    dh, dx = grad(y, [h, x])
    assert float(dh) == pytest.approx(2 * np.sin(6.0) * np.cos(6.0))
    assert float(dx) == pytest.approx(6 * np.sin(6.0) * np.cos(6.0))
    assert x.grad is None


def test_grad_errors_and_allow_unused() -> None:
    x = torch.tensor(1.0, requires_grad=True)
    unused = torch.tensor(1.0, requires_grad=True)
    with pytest.raises(GradError, match="appears to not have been used in the graph"):
        grad(x * 2, [unused])
    assert grad(x * 2, [x, unused], allow_unused=True)[1] is None
    with pytest.raises(GradError, match="One of the differentiated Tensors does not require grad"):
        grad(x * 2, [torch.tensor(1.0)])


def test_higher_derivatives_through_create_graph() -> None:
    x = torch.tensor(2.0, requires_grad=True, dtype=torch.float64)
    y = x**3 + torch.sin(x)
    (dy,) = grad(y, x, create_graph=True)
    (d2y,) = grad(dy, x, create_graph=True)
    (d3y,) = grad(d2y, x)
    assert np.isclose(dy.item(), 12 + np.cos(2.0))
    assert np.isclose(d2y.item(), 12 - np.sin(2.0))
    assert np.isclose(d3y.item(), 6 - np.cos(2.0))
    y = (x * x).exp()
    y.backward(create_graph=True)
    assert x.grad.requires_grad


def test_jacobian_and_hessian_layouts() -> None:
    from gradcalc.autograd.functional import hessian, jacobian

    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    jac = jacobian(lambda v: v**2, x)
    assert jac.tolist() == [[2.0, 0.0], [0.0, 4.0]]
    a, b = torch.tensor(2.0, dtype=torch.float64), torch.tensor([1.0, 3.0], dtype=torch.float64)
    blocks = jacobian(lambda p, q: p * q, (a, b))
    assert blocks[0].shape == (2,) and blocks[1].shape == (2, 2)
    assert blocks[0].tolist() == [1.0, 3.0] and blocks[1].tolist() == [[2.0, 0.0], [0.0, 2.0]]
    h = hessian(lambda v: (v**3).sum(), x)
    assert h.tolist() == [[6.0, 0.0], [0.0, 12.0]]
    hh = hessian(lambda p, q: p * p * q.sum(), (a, b))
    assert hh[0][0].item() == 8.0 and hh[0][1].tolist() == [4.0, 4.0]
    assert hh[1][1].tolist() == [[0.0, 0.0], [0.0, 0.0]]


# ---------------------------------------------------------------- grad mode and in-place


def test_no_grad_as_context_and_decorator() -> None:
    z = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        assert not (z * 2).requires_grad
        with torch.enable_grad():
            assert (z * 2).requires_grad

    @torch.no_grad()
    def doubled(t):
        return t * 2

    assert not doubled(z).requires_grad
    assert torch.is_grad_enabled()
    assert not z.detach().requires_grad and (z + 1).requires_grad


def test_in_place_updates_of_leaves() -> None:
    w = torch.ones((3, 1), requires_grad=True)
    with pytest.raises(
        InplaceLeafError,
        match=r"a leaf Variable that requires grad is being used in an in-place operation\.",
    ):
        w.add_(1)
    w.grad = torch.tensor([[27.0], [37.0], [47.0]])
    with torch.no_grad():
        w.add_(w.grad, alpha=-0.01)
    assert np.allclose(w._data.ravel(), [0.73, 0.63, 0.53])
    assert w.requires_grad and w.is_leaf
    w.grad.zero_()
    assert w.grad.tolist() == [[0.0], [0.0], [0.0]]
    with torch.no_grad():
        w.sub_(1).mul_(2)
    assert np.allclose(w._data.ravel(), [-0.54, -0.74, -0.94])


def test_data_shares_storage_and_detach_cuts_history() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    x.data.zero_()
    assert x.tolist() == [0.0, 0.0]
    assert x.data.norm().item() == 0.0
    y = (x * 2).detach()
    assert y.grad_fn is None and not y.requires_grad


def test_leaf_grad_does_not_alias_the_given_gradient() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    seed = torch.tensor([1.0, 1.0])
    (x + 0).backward(seed)
    x.grad.zero_()
    assert seed.tolist() == [1.0, 1.0]
    a = torch.tensor([1.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.zero_()
    assert b.grad.tolist() == [1.0]


def test_gradients_of_a_sum_never_alias_the_operands() -> None:
    # sum()'s gradient of ones times w is w itself inside backward; every
    # gradient the user receives (.grad, retained, autograd.grad) is its own.
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([4.0, 5.0, 6.0], requires_grad=True)
    z = x * w
    z.retain_grad()
    (z * w).sum().backward()
    for received in (x.grad, z.grad, w.grad):
        received.zero_()
    assert w.tolist() == [4.0, 5.0, 6.0] and x.tolist() == [1.0, 2.0, 3.0]
    (g,) = torch.autograd.grad((x * w).sum(), x)
    g.zero_()
    assert w.tolist() == [4.0, 5.0, 6.0]
    (g,) = torch.autograd.grad(x.sum(), x)
    g.add_(1.0)  # not a read-only broadcast view
    assert g.tolist() == [2.0, 2.0, 2.0]
    y = x.exp()
    (grad_of_y,) = torch.autograd.grad(y.sum(), x)
    grad_of_y.zero_()
    assert y.tolist() == pytest.approx(np.exp([1.0, 2.0, 3.0]).tolist())
    wide = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (x * wide).mean().backward()  # mean's 1/n is applied before broadcasting back
    assert x.grad.tolist() == pytest.approx([5 / 6, 7 / 6, 9 / 6])


def test_legacy_variable_api() -> None:
    v = Variable(torch.randn(3, 3), requires_grad=True)
    y = v**2
    z = y + 3
    assert y.creator is y.grad_fn
    assert z.creator.previous_functions[0][0] is y.creator
    assert z.creator.previous_functions[0][0].previous_functions[0][0] is v
    z.mean().backward()
    assert torch.allclose(v.grad, 2 * v.detach() / 9)


# ---------------------------------------------------------------- scale and memory


def test_a_million_node_chain_backpropagates_without_recursion() -> None:
    assert sys.getrecursionlimit() <= 10_000
    x = torch.tensor(1.0, requires_grad=True, dtype=torch.float64)
    gc.disable()  # the collector's passes over a growing graph are not what is tested here
    try:
        y = x
        for _ in range(1_000_000):
            y = y + 1.0
        y.backward()
        del y
    finally:
        gc.enable()
    assert float(x.grad) == 1.0


def test_graphs_hold_no_reference_cycles() -> None:
    gc.disable()
    try:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = (x * x).exp().sum()
        node = weakref.ref(y.grad_fn)
        out = weakref.ref(y)
        del y
        assert out() is None and node() is None
    finally:
        gc.enable()


def test_graphs_do_not_keep_intermediate_tensors_alive() -> None:
    # Nodes keep data (and only what their VJPs read), never tensor objects.
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    middle = x * 2
    out = (middle + 1).sum()
    gone = weakref.ref(middle)
    del middle
    assert gone() is None
    out.backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_record_values_keeps_values_and_gradients_for_renderers() -> None:
    with _tensor.record_values():
        a = torch.tensor(3.0, requires_grad=True)
        b = a + a
        c = b * b
        c.backward()
    assert float(c.grad_fn.value) == 36.0 and float(b.grad_fn.value) == 6.0
    assert float(c.grad_fn.grad_value) == 1.0 and float(b.grad_fn.grad_value) == 12.0
    assert float(b.grad_fn.next_functions[0][0].grad_value) == 24.0
    plain = a * 2
    assert plain.grad_fn.value is None


def test_nn_functional_is_an_importable_module_like_torchs():
    import gradcalc
    import gradcalc.nn.functional as F

    assert gradcalc.nn.functional is F
    x = gradcalc.tensor([-1.0, 2.0], requires_grad=True)
    loss = F.mse_loss(F.relu(x), gradcalc.tensor([0.0, 0.0]))
    loss.backward()
    assert x.grad.tolist() == [0.0, 2.0]


def test_floating_point_edge_cases_are_silent_as_in_pytorch() -> None:
    # -inf, inf and nan are the answers; NumPy's RuntimeWarnings from inside the
    # engine do not reach the user (their own NumPy calls still warn). The 0-d
    # cases go through the C fast path where it is built (see _native.c).
    code = (
        "import numpy as np, gradcalc as torch\n"
        "x = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)\n"
        "y = torch.log(x) + 1 / x + torch.sqrt(x) + torch.exp(x * 1000.0)\n"
        "y.sum().backward()\n"
        "print(y.tolist(), x.grad.tolist())\n"
        "np.log(np.zeros(1))\n"
        "s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)\n"
        "z = s * 0.0\n"
        "values = [z.log(), s / z, (s * 1e300) * 1e300, (s * 1000.0).exp(), (z / z).sin(),\n"
        "          (s - 2.0).sqrt(), (s * 3e38).float() * 10.0]\n"
        "print([v.item() for v in values])\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "nan" in done.stdout and "inf" in done.stdout
    assert done.stdout.splitlines()[1] == "[-inf, inf, inf, inf, nan, nan, inf]"
    warned = [line for line in done.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == 1 and "<string>:6" in warned[0], done.stderr


def test_threads_backpropagating_into_shared_leaves_lose_nothing() -> None:
    # Hogwild-style: graphs built in two threads share the leaf w (one
    # AccumulateGrad node); a thread switch every 10 µs interleaves their passes.
    w = torch.tensor(np.linspace(0.0, 1.0, 50), requires_grad=True)

    def loss() -> Any:
        y = w
        for _ in range(60):
            y = (y * 0.9 + w).sin()
        return y.sum()

    loss().backward()
    once = w.grad.numpy().copy()
    w.grad = None
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        workers = [
            threading.Thread(target=lambda: [loss().backward() for _ in range(10)])
            for _ in range(2)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    np.testing.assert_allclose(w.grad.numpy(), 20 * once, rtol=1e-13)


def test_grad_mode_is_per_thread_as_in_pytorch() -> None:
    import threading

    inside = threading.Event()
    leave = threading.Event()
    seen: dict[str, bool] = {}

    def inference() -> None:
        with torch.no_grad():
            seen["off there"] = not torch.is_grad_enabled()
            y = torch.tensor([1.0], requires_grad=True) * 2
            seen["unrecorded there"] = y.grad_fn is None
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=inference)
    thread.start()
    try:
        assert inside.wait(10)
        assert torch.is_grad_enabled()  # this thread's mode is its own
        x = torch.tensor([3.0], requires_grad=True)
        (x * x).sum().backward()
        assert x.grad.tolist() == [6.0]
        with torch.no_grad():
            assert (x * 2).grad_fn is None
        assert (x * 2).grad_fn is not None
    finally:
        leave.set()
        thread.join()
    assert seen == {"off there": True, "unrecorded there": True}
    assert torch.is_grad_enabled() and _tensor._grad_enabled


def test_grad_assignment_is_checked_as_pytorch_checks_it() -> None:
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="expected to be a Tensor or None but got grad of type int"):
        x.grad = 5
    with pytest.raises(RuntimeError, match=r"gradient of size '\[3\]' to a tensor of size '\[2\]'"):
        x.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="dtype"):
        x.grad = torch.ones(2, dtype=torch.float64)
    assert x.grad is None  # a refused assignment changes nothing
    x.grad = torch.full((2,), 3.0)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0]  # backward accumulates into the assigned gradient
    x.grad = None
    assert x.grad is None


@pytest.mark.parametrize("data", [[2**63], 2**63, [2**64], [[1, 2**70]], [2**63, -1]])
def test_ints_beyond_int64_raise_as_in_pytorch_instead_of_wrapping(data: Any) -> None:
    with pytest.raises(ValueError, match="Overflow when unpacking long long"):
        torch.tensor(data)


def test_ints_at_the_int64_edges_and_floats_beside_big_ints_still_work() -> None:
    assert torch.tensor([-(2**63), 2**63 - 1]).tolist() == [-(2**63), 2**63 - 1]
    assert torch.tensor([1.5, 2**63]).dtype == torch.float32
    assert torch.tensor([1.5, 2**70]).tolist() == [1.5, float(2**70)]  # a float: a float tensor


def test_errstate_silences_numpy_once_per_thread() -> None:
    # Nested blocks (a request, its interpreter, its backward pass) silence NumPy once;
    # another thread is silenced by its own block only, as NumPy's state is per thread.
    from gradcalc import _numpy

    seen: dict[str, str] = {}

    def other_thread() -> None:
        seen["before"] = np.geterr()["divide"]
        with _numpy.errstate():
            seen["inside"] = np.geterr()["divide"]
        seen["after"] = np.geterr()["divide"]

    _numpy.load()  # (before gradcalc loads NumPy there is nothing of its own to silence)
    with np.errstate(all="raise"):
        with _numpy.errstate():
            assert set(np.geterr().values()) == {"ignore"}
            with _numpy.errstate():
                assert set(np.geterr().values()) == {"ignore"}
            assert set(np.geterr().values()) == {"ignore"}  # the inner block changed nothing
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
            assert np.float64(1.0) / np.float64(0.0) == np.inf  # no FloatingPointError
        assert set(np.geterr().values()) == {"raise"}
        with _numpy.errstate():  # not nested any more: silences again
            assert set(np.geterr().values()) == {"ignore"}
    assert seen == {"before": seen["after"], "inside": "ignore", "after": seen["before"]}
    assert seen["before"] != "ignore"
