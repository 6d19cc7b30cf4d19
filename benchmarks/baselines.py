"""The references gradcalc is measured against, written here so they are always available.

- `ClosureTape`: reverse mode on Python floats, one closure per op on a flat
  tape: about the least work a pure-Python engine can do per node (W2's floor).
- `Value`: micrograd's engine as Karpathy wrote it (a set of children and a
  `_backward` closure per node, which makes a reference cycle), with the
  topological sort made iterative so a 100,000-node chain does not recurse.
- `elementwise_numpy` / `mlp_numpy`: the forward and backward passes a person
  would write by hand in NumPy for W3 and W4, keeping forward intermediates for
  the backward pass as an autograd engine must.

This module imports only NumPy: `external.py` (run by another interpreter,
where PyTorch lives) uses the same input generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

CHAIN_SCALE = 0.9
"""`c` in W2's `y = sin(y * c + x) * k`; with `k` it keeps the chain's values bounded."""
CHAIN_DAMPING = 0.95
CHAIN_X = 0.5
NODES_PER_ITERATION = 4
"""mul, add, sin, mul."""


class TapeValue:
    __slots__ = ("grad", "value")

    def __init__(self, value: float) -> None:
        self.value = value
        self.grad = 0.0


class ClosureTape:
    """Each op appends one closure; backward runs them in reverse order. No cycles, no sets."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], None]] = []

    def add(self, a: TapeValue, b: TapeValue) -> TapeValue:
        out = TapeValue(a.value + b.value)

        def step() -> None:
            a.grad += out.grad
            b.grad += out.grad

        self.steps.append(step)
        return out

    def mul(self, a: TapeValue, b: TapeValue) -> TapeValue:
        out = TapeValue(a.value * b.value)

        def step() -> None:
            a.grad += b.value * out.grad
            b.grad += a.value * out.grad

        self.steps.append(step)
        return out

    def sin(self, a: TapeValue) -> TapeValue:
        out = TapeValue(math.sin(a.value))

        def step() -> None:
            a.grad += math.cos(a.value) * out.grad

        self.steps.append(step)
        return out

    def backward(self, out: TapeValue) -> None:
        out.grad = 1.0
        for step in reversed(self.steps):
            step()


def chain_closure_tape(iterations: int) -> tuple[float, float]:
    """W2 on the closure tape: (value, d value / d x)."""
    tape = ClosureTape()
    x = TapeValue(CHAIN_X)
    c = TapeValue(CHAIN_SCALE)
    k = TapeValue(CHAIN_DAMPING)
    y = x
    for _ in range(iterations):
        y = tape.mul(tape.sin(tape.add(tape.mul(y, c), x)), k)
    tape.backward(y)
    return y.value, x.grad


class Value:
    """micrograd's scalar: children in a set, backward as a closure stored on the output."""

    def __init__(self, data: float, _children: tuple[Value, ...] = (), _op: str = "") -> None:
        self.data = data
        self.grad = 0.0
        self._backward: Callable[[], None] = lambda: None
        self._prev = set(_children)
        self._op = _op

    def __add__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward() -> None:
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward() -> None:
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def sin(self) -> Value:
        out = Value(math.sin(self.data), (self,), "sin")

        def _backward() -> None:
            self.grad += math.cos(self.data) * out.grad

        out._backward = _backward
        return out

    def backward(self) -> None:
        topo: list[Value] = []
        visited: set[Value] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                topo.append(node)
                continue
            if node in visited:
                continue
            visited.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child in node._prev if child not in visited)
        self.grad = 1.0
        for node in reversed(topo):
            node._backward()


def chain_micrograd(iterations: int) -> tuple[float, float]:
    """W2 on micrograd's Value: (value, d value / d x)."""
    x = Value(CHAIN_X)
    c = Value(CHAIN_SCALE)
    k = Value(CHAIN_DAMPING)
    y = x
    for _ in range(iterations):
        y = (y * c + x).sin() * k
    y.backward()
    return y.data, x.grad


def elementwise_input(n: int, dtype: str, seed: int = 0) -> np.ndarray:
    """W3's x: uniform in [-2, 2], so exp(-x) neither overflows nor vanishes."""
    return np.random.default_rng(seed).uniform(-2.0, 2.0, n).astype(dtype)


def elementwise_numpy(x: np.ndarray) -> tuple[float, np.ndarray]:
    """sum(sin(x)*x**2 + exp(-x)) and its gradient, by hand."""
    sin_x = np.sin(x)
    square = x**2
    exp_neg = np.exp(-x)
    total = np.sum(sin_x * square + exp_neg)
    grad = np.cos(x) * square + sin_x * (2 * x) - exp_neg
    return float(total), grad


MLP_SHAPES = {"X": (4096, 512), "W1": (512, 512), "W2": (512, 1), "T": (4096, 1)}


def mlp_inputs(dtype: str, seed: int = 0, rows: int = 4096) -> dict[str, np.ndarray]:
    """W4's data, scaled like a default-initialised layer so tanh does not saturate."""
    rng = np.random.default_rng(seed)
    width = MLP_SHAPES["W1"][0]
    return {
        "X": rng.standard_normal((rows, width)).astype(dtype),
        "W1": (rng.standard_normal((width, width)) / math.sqrt(width)).astype(dtype),
        "W2": (rng.standard_normal((width, 1)) / math.sqrt(width)).astype(dtype),
        "T": rng.standard_normal((rows, 1)).astype(dtype),
    }


def mlp_numpy(
    X: np.ndarray, W1: np.ndarray, W2: np.ndarray, T: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """mean((tanh(X @ W1) @ W2 - T)**2) and the gradients of W1 and W2, by hand."""
    hidden = np.tanh(X @ W1)
    diff = hidden @ W2 - T
    loss = np.mean(diff**2)
    d_out = diff * (2 / diff.size)
    grad_w2 = hidden.T @ d_out
    d_hidden = (d_out @ W2.T) * (1 - hidden**2)
    grad_w1 = X.T @ d_hidden
    return float(loss), grad_w1, grad_w2
