"""The backward pass: the reference loop (``_tensor._backpropagate``) and what runs
around it (the 0-d fast path, buffer donation, gradients of every type)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import gradcalc as torch
from gradcalc import _tensor, ops
from gradcalc.autograd import grad

pytestmark = pytest.mark.usefixtures("backward_loops")  # C and Python loops alike


def scalar_graph(seed: int) -> tuple[list, Any]:
    """Leaves and the output of a random graph of 0-d ops with shared values."""
    rng = np.random.default_rng(seed)
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in rng.normal(size=3)]
    values = list(leaves)
    for _ in range(40):
        a, b = (values[i] for i in rng.integers(len(values), size=2))
        pick = rng.integers(5)
        values.append(
            [a * b, a + b * 0.5, (a * 0.3).sin(), (a * 0.2).exp() - b, a / (b * b + 1.0)][pick]
        )
    out = values[-1]
    for leaf in leaves:
        out = out + leaf * 0.01  # every leaf reached
    return leaves, out


@pytest.mark.parametrize("seed", range(6))
def test_the_0d_fast_path_gives_the_reference_loops_bits(seed: int, monkeypatch) -> None:
    # The fast path is the reference loop for scalar chains: same VJPs, same sums.
    leaves, out = scalar_graph(seed)
    out.backward()
    fast = [leaf.grad.numpy().tobytes() for leaf in leaves]
    monkeypatch.setattr(_tensor._BackwardPass, "scalar_path", lambda self, base: None)
    leaves, out = scalar_graph(seed)
    out.backward()
    assert [leaf.grad.numpy().tobytes() for leaf in leaves] == fast


class _Times:
    """A one-operand op for the test below: ``x * k`` with ``k`` a constant."""

    arity, negates, reads = "1", False, ((0,),)
    vjps = (lambda g, a, x, k: g * k,)


_TIMES = _tensor.node_class("TimesBackward0", _Times)


def times(x: Any, k: float) -> Any:
    return _tensor._record(_TIMES, x._raw * k, _tensor._edge(x), None, x._raw, None, (k,),
                           None, True)  # fmt: skip


def test_python_float_gradients_flow_through_both_paths() -> None:
    # Data may be Python floats (a float backend): the loop, the 0-d path and
    # the leaves take float gradients as they take NumPy scalars.
    x = _tensor.wrap(0.5)
    x._requires_grad = True
    y = times(times(times(x, 2.0), 3.0), 0.5)
    y.backward()
    assert type(x.grad._raw) is float and x.grad._raw == 3.0
    (gx,) = grad(times(x, 2.0), x)
    assert type(gx._raw) is float and gx._raw == 2.0


def test_vjps_without_spare_get_no_buffers(monkeypatch) -> None:
    # Buffer donation is offered only to VJPs that declare ``spare``.
    calls = []

    def plain(g: Any, a: Any, x: Any, y: Any) -> Any:
        calls.append(g)
        return ops.unbroadcast(g * y, x)

    monkeypatch.setattr(ops.MUL.node, "vjps", (plain, ops.MUL.vjps[1]))
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x.exp() * 2.0).sum().backward()
    assert calls and x.grad.tolist() == pytest.approx((2 * np.exp([1.0, 2.0, 3.0])).tolist())


def test_spare_buffers_are_offered_only_to_vjps_that_take_them() -> None:
    assert _tensor._takes_spare(ops.MUL.vjps[0])
    assert _tensor._takes_spare(ops.NEG.vjps[0])
    assert not _tensor._takes_spare(ops.DIV.vjps[0])
    assert not _tensor._takes_spare(len)


def test_a_pass_needs_no_more_memory_than_numpy_by_hand() -> None:
    # Buffer donation, in-place sums and .grad taking its buffer keep W3's
    # step at NumPy's footprint, from the first pass on (a fresh interpreter:
    # whether nothing else holds a buffer is read from reference counts, which
    # must not depend on how warm the interpreter's calls are).
    code = textwrap.dedent(
        """
        import gc, tracemalloc
        import numpy as np
        import gradcalc
        x = np.random.default_rng(0).uniform(-1, 1, 400_000)
        leaf = gradcalc.from_numpy(x).requires_grad_()
        peaks = []
        for _ in range(4):
            leaf.grad = None
            gradcalc.empty_cache()
            gc.collect()
            tracemalloc.start()
            start = tracemalloc.get_traced_memory()[0]
            (leaf.sin() * leaf**2 + (-leaf).exp()).sum().backward()
            peaks.append((tracemalloc.get_traced_memory()[1] - start) / x.nbytes)
            tracemalloc.stop()
        print(*peaks)
        """
    )
    env = {**os.environ, "GRADCALC_PURE_PYTHON": "1" if _tensor._native is None else "0"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    peaks = [float(p) for p in run.stdout.split()]
    assert len(peaks) == 4, run.stderr
    # NumPy by hand needs 5 arrays beside x here (benchmarks/w3_elementwise.py)
    assert max(peaks) <= 5.05, peaks
