"""Random training steps over large arrays: the buffer pool and in-place backward
never change a value the user can see, and give the reference's gradients bit for bit.

Arrays of at least ``_recycle.MIN_BYTES`` go through pooled buffers and
backward writes into buffers it decides (by reference count) nobody else
holds. The reference runs the same steps with the pool off and a recorded
(``create_graph``) backward, which never writes in place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import gradcalc as torch
from gradcalc import _recycle, _tensor
from gradcalc.autograd import grad

pytestmark = pytest.mark.usefixtures("backward_loops")  # C and Python loops alike

SIZE = 160_000  # float64: 1.28 MB, above the pool's threshold
assert SIZE * 8 >= _recycle.MIN_BYTES

UNARY: list[Callable[[Any], Any]] = [
    lambda a: a.sin(),
    lambda a: a.cos(),
    lambda a: (a * 0.1).exp(),
    lambda a: a.tanh(),
    lambda a: a**2,
    lambda a: -a,
    lambda a: a * 0.5 + 1.0,
    lambda a: (a * a + 1.0).sqrt(),
]
BINARY: list[Callable[[Any, Any], Any]] = [
    lambda a, b: a * b,
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a / (b * b + 1.0),
    lambda a, b: (a.reshape(400, 400) @ b.reshape(400, 400)).reshape(-1) * 0.01,
]


def _step(rng: np.random.Generator, leaves: list[Any], held: list[Any]) -> Any:
    """A random expression DAG over the leaves; some intermediates go to ``held``."""
    values = list(leaves)
    for _ in range(rng.integers(4, 12)):
        if rng.random() < 0.5:
            out = UNARY[rng.integers(len(UNARY))](values[rng.integers(len(values))])
        else:
            a, b = (values[i] for i in rng.integers(len(values), size=2))
            out = BINARY[rng.integers(len(BINARY))](a, b)
        values.append(out)
        if rng.random() < 0.3:
            held.append(out)
    reduce = values[-1].sum() if rng.random() < 0.5 else values[-1].mean()
    return reduce + values[rng.integers(len(values))].sum() * 0.5


def _gradients(seed: int, pooled: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two steps of the seed's program; the second step's gradients and held values."""
    rng = np.random.default_rng(seed)
    data = [rng.uniform(-1.0, 1.0, SIZE) for _ in range(3)]
    leaves = [torch.from_numpy(d.copy()).requires_grad_() for d in data]
    torch.empty_cache()
    saved_limits = _recycle.MIN_BYTES, _tensor._RECYCLE_BYTES
    if not pooled:
        _recycle.MIN_BYTES = _tensor._RECYCLE_BYTES = 1 << 62
    try:
        grads: list[np.ndarray] = []
        held: list[Any] = []
        for step in range(2):
            program = np.random.default_rng(seed * 7 + step)
            held = []
            loss = _step(program, leaves, held)
            snapshots = [h.detach().numpy().copy() for h in held]
            found = grad(loss, leaves, allow_unused=True, create_graph=not pooled)
            grads = [np.zeros(SIZE) if g is None else g.detach().numpy().copy() for g in found]
            for h, before in zip(held, snapshots, strict=True):
                np.testing.assert_array_equal(h.detach().numpy(), before)
        for leaf, d in zip(leaves, data, strict=True):
            np.testing.assert_array_equal(leaf.detach().numpy(), d)
        assert bool(_recycle._pool) == pooled
        return grads, [h.detach().numpy().copy() for h in held]
    finally:
        _recycle.MIN_BYTES, _tensor._RECYCLE_BYTES = saved_limits
        torch.empty_cache()


@pytest.mark.parametrize("seed", range(12))
def test_pooled_in_place_backward_matches_the_recorded_reference(seed: int) -> None:
    got, held = _gradients(seed, pooled=True)
    want, want_held = _gradients(seed, pooled=False)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    for h, w in zip(held, want_held, strict=True):
        np.testing.assert_array_equal(h, w)


def test_threads_training_side_by_side_share_the_pool_safely() -> None:
    # Two threads run steps over their own large leaves while a third keeps
    # emptying the pool; each gets the gradients it gets alone.
    def steps(seed: int, out: dict[int, list[np.ndarray]]) -> None:
        rng = np.random.default_rng(seed)
        x = torch.from_numpy(rng.uniform(0.1, 1.0, SIZE)).requires_grad_()
        w = torch.from_numpy(rng.uniform(0.1, 1.0, SIZE)).requires_grad_()
        found = []
        for _ in range(15):
            x.grad = w.grad = None
            ((x.sin() * w + (x * w).tanh() ** 2 - (-x).exp()).sum()).backward()
            found.append(x.grad.numpy().copy() + w.grad.numpy())
        out[seed] = found

    alone: dict[int, list[np.ndarray]] = {}
    for seed in (1, 2):
        steps(seed, alone)
    together: dict[int, list[np.ndarray]] = {}
    stop = threading.Event()

    def empty() -> None:
        while not stop.is_set():
            torch.empty_cache()

    workers = [threading.Thread(target=steps, args=(seed, together)) for seed in (1, 2)]
    cleaner = threading.Thread(target=empty)
    for thread in (*workers, cleaner):
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    cleaner.join()
    for seed in (1, 2):
        for got, want in zip(together[seed], alone[seed], strict=True):
            np.testing.assert_array_equal(got, want)
    torch.empty_cache()
