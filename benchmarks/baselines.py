"""The references gradcalc is measured against, written here so they are always available.

- `ClosureTape`: reverse mode on Python floats, one closure per op on a flat
  tape: about the least work a pure-Python engine can do per node (W2's floor).
- `Value`: micrograd's engine as Karpathy wrote it (a set of children and a
  `_backward` closure per node, which makes a reference cycle), with the
  topological sort made iterative so a 100,000-node chain does not recurse.
- `elementwise_numpy` / `mlp_numpy`: the forward and backward passes a person
  would write by hand in NumPy for W3 and W4, keeping forward intermediates for
  the backward pass as an autograd engine must.
- `mixed_requests` / `mixed_batch_worker`: W6's mixed JSON Lines batch (five
  kinds of request, scalar to a small matmul and a loop) and a worker that
  answers it with hand-written NumPy forward and backward passes in a Python
  loop, writing the lines `gradcalc batch` writes. Run as a script:
  ``python benchmarks/baselines.py mixed-batch FILE > results.jsonl``.

This module imports only NumPy (and the standard library): `external.py` (run
by another interpreter, where PyTorch lives) uses the same input generators,
and the batch worker starts as cheaply as a hand-written script would.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

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


MIXED_FORMULAS = {
    "polynomial": "3*a**3 - b**2 + a*b",
    "transcendental": "exp(-a)*sin(b) + tanh(a*b) + log(1 + b**2)",
    "softmax": "sum(softmax(x) * t)",
    "matmul loss": "mean((x @ w - t)**2)",
    "loop program": "y = x\nfor i in range(4):\n    y = sin(y) * a + x\ny",
}
"""W6's kinds of request, in the order they cycle through the batch."""


def _uniform(rng: np.random.Generator, low: float, high: float, shape: tuple = ()) -> Any:
    """Values rounded to 4 decimals (as a person would type them): a float or nested lists."""
    return np.round(rng.uniform(low, high, shape), 4).tolist()


def mixed_requests(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """count requests cycling through MIXED_FORMULAS, with random values of the right shapes."""
    rng = np.random.default_rng(seed)
    kinds = list(MIXED_FORMULAS)
    requests = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        if kind == "polynomial":
            variables = {"a": _uniform(rng, -3, 3), "b": _uniform(rng, -3, 3)}
        elif kind == "transcendental":
            variables = {"a": _uniform(rng, -2, 2), "b": _uniform(rng, 0.1, 3)}
        elif kind == "softmax":
            variables = {"x": _uniform(rng, -2, 2, (5,)), "t": _uniform(rng, -1, 1, (5,))}
        elif kind == "matmul loss":
            variables = {
                "x": _uniform(rng, -1, 1, (4, 3)),
                "w": _uniform(rng, -1, 1, (3, 2)),
                "t": _uniform(rng, -1, 1, (4, 2)),
            }
        else:
            variables = {"x": _uniform(rng, -1, 1), "a": _uniform(rng, 0.5, 1.5)}
        requests.append({"id": index, "formula": MIXED_FORMULAS[kind], "vars": variables})
    return requests


def _polynomial(a: np.ndarray, b: np.ndarray) -> tuple[Any, dict[str, Any]]:
    value = 3 * a**3 - b**2 + a * b
    return value, {"a": 9 * a**2 + b, "b": -2 * b + a}


def _transcendental(a: np.ndarray, b: np.ndarray) -> tuple[Any, dict[str, Any]]:
    decay, sine, th = np.exp(-a), np.sin(b), np.tanh(a * b)
    value = decay * sine + th + np.log(1 + b**2)
    slope = 1 - th**2
    return value, {
        "a": -decay * sine + slope * b,
        "b": decay * np.cos(b) + slope * a + 2 * b / (1 + b**2),
    }


def _softmax(x: np.ndarray, t: np.ndarray) -> tuple[Any, dict[str, Any]]:
    e = np.exp(x - np.max(x))
    s = e / np.sum(e)
    value = np.sum(s * t)
    return value, {"x": s * (t - value), "t": s}


def _matmul_loss(x: np.ndarray, w: np.ndarray, t: np.ndarray) -> tuple[Any, dict[str, Any]]:
    residual = x @ w - t
    value = np.mean(residual**2)
    d = residual * (2 / residual.size)
    return value, {"x": d @ w.T, "w": x.T @ d, "t": -d}


def _loop_program(x: np.ndarray, a: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """y = x; 4 times y = sin(y)*a + x; reverse mode over the kept ys, by hand."""
    ys = [x]
    for _ in range(4):
        ys.append(np.sin(ys[-1]) * a + x)
    grad_y, grad_x, grad_a = 1.0, 0.0, 0.0
    for y in reversed(ys[:-1]):
        grad_a += grad_y * np.sin(y)
        grad_x += grad_y
        grad_y = grad_y * a * np.cos(y)
    return ys[-1], {"x": grad_x + grad_y, "a": grad_a}


MIXED_WORKERS: dict[str, Callable[..., tuple[Any, dict[str, Any]]]] = {
    MIXED_FORMULAS["polynomial"]: _polynomial,
    MIXED_FORMULAS["transcendental"]: _transcendental,
    MIXED_FORMULAS["softmax"]: _softmax,
    MIXED_FORMULAS["matmul loss"]: _matmul_loss,
    MIXED_FORMULAS["loop program"]: _loop_program,
}


def answer_mixed(request: dict[str, Any]) -> dict[str, Any]:
    """The result object `gradcalc batch` writes for one of W6's requests, by hand in NumPy."""
    variables = {k: np.asarray(v, dtype=np.float64) for k, v in request["vars"].items()}
    value, gradients = MIXED_WORKERS[request["formula"]](**variables)
    return {
        "id": request["id"],
        "schema_version": 1,
        "value": float(value),
        "shape": [],
        "dtype": "float64",
        "gradients": {name: np.asarray(gradients[name]).tolist() for name in variables},
    }


def mixed_batch_worker(lines: Iterable[str], out: TextIO) -> None:
    """Read JSON Lines requests, write one JSON result line each, in order."""
    write = out.write
    for line in lines:
        if line.strip():
            write(json.dumps(answer_mixed(json.loads(line))) + "\n")


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "mixed-batch":
        raise SystemExit("usage: python benchmarks/baselines.py mixed-batch FILE|-")
    if argv[1] == "-":
        mixed_batch_worker(sys.stdin, sys.stdout)
    else:
        with open(argv[1], encoding="utf-8") as lines:
            mixed_batch_worker(lines, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
