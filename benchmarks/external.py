"""PyTorch and JAX sides of W2-W4, run by whichever interpreter has them installed.

Invoked as ``python -m benchmarks.external LIB WORKLOAD JSON_ARGS`` from the
repository root (by run.py, possibly with another venv's interpreter); prints
one JSON line: the timing samples in seconds, the result, and its largest
relative difference from the hand-written NumPy reference. Imports neither
gradcalc nor anything but NumPy and the library measured.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import baselines

TORCH_ONE_SHOT = (
    "import json, torch\n"
    "a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)\n"
    "b = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)\n"
    "P = 3*a**3 - b**2\n"
    "P.backward()\n"
    "gradients = {'a': a.grad.item(), 'b': b.grad.item()}\n"
    "print(json.dumps({'value': P.item(), 'gradients': gradients}))\n"
)
"""W1's seed formula done with PyTorch in a fresh process, printing the same JSON facts."""


def _timed(run: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    samples = []
    for index in range(warmup + repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        if index >= warmup:
            samples.append(elapsed)
    return samples


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def torch_w2(iterations: int, repeats: int) -> dict[str, Any]:
    import torch

    def chain() -> tuple[float, float]:
        x = torch.tensor(baselines.CHAIN_X, dtype=torch.float64, requires_grad=True)
        c = torch.tensor(baselines.CHAIN_SCALE, dtype=torch.float64)
        k = torch.tensor(baselines.CHAIN_DAMPING, dtype=torch.float64)
        y = x
        for _ in range(iterations):
            y = (y * c + x).sin() * k
        y.backward()
        return y.item(), x.grad.item()

    samples = _timed(chain, repeats)
    value, grad = chain()
    want = baselines.chain_closure_tape(iterations)
    return {
        "samples": samples,
        "error": _relative_error(np.array([value, grad]), np.array(want)),
        "threads": torch.get_num_threads(),
    }


def torch_w3(n: int, dtype: str, repeats: int) -> dict[str, Any]:
    import torch

    x_np = baselines.elementwise_input(n, dtype)
    result: dict[str, Any] = {}

    def step() -> None:
        x = torch.from_numpy(x_np).requires_grad_()
        total = torch.sum(torch.sin(x) * x**2 + torch.exp(-x))
        total.backward()
        result["grad"] = x.grad

    samples = _timed(step, repeats)
    _, want = baselines.elementwise_numpy(x_np)
    return {
        "samples": samples,
        "error": _relative_error(result["grad"].numpy(), want),
        "threads": torch.get_num_threads(),
    }


def torch_w4(dtype: str, repeats: int, rows: int) -> dict[str, Any]:
    import torch

    data = baselines.mlp_inputs(dtype, rows=rows)
    X, T = torch.from_numpy(data["X"]), torch.from_numpy(data["T"])
    W1 = torch.from_numpy(data["W1"]).requires_grad_()
    W2 = torch.from_numpy(data["W2"]).requires_grad_()

    def step() -> None:
        W1.grad = None
        W2.grad = None
        loss = torch.mean((torch.tanh(X @ W1) @ W2 - T) ** 2)
        loss.backward()

    samples = _timed(step, repeats)
    _, want_w1, want_w2 = baselines.mlp_numpy(**data)
    error = max(
        _relative_error(W1.grad.numpy(), want_w1), _relative_error(W2.grad.numpy(), want_w2)
    )
    return {"samples": samples, "error": error, "threads": torch.get_num_threads()}


def _torch_mixed_formulas() -> dict[str, Callable[..., Any]]:
    """W6's kinds of request written with PyTorch's ops, by the formula they stand for."""
    import torch

    def loop(x: Any, a: Any) -> Any:
        y = x
        for _ in range(4):
            y = torch.sin(y) * a + x
        return y

    formulas = baselines.MIXED_FORMULAS
    return {
        formulas["polynomial"]: lambda a, b: 3 * a**3 - b**2 + a * b,
        formulas["transcendental"]: lambda a, b: (
            torch.exp(-a) * torch.sin(b) + torch.tanh(a * b) + torch.log(1 + b**2)
        ),
        formulas["softmax"]: lambda x, t: torch.sum(torch.softmax(x, 0) * t),
        formulas["matmul loss"]: lambda x, w, t: torch.mean((x @ w - t) ** 2),
        formulas["loop program"]: loop,
    }


def torch_w6(per_kind: int, repeats: int) -> dict[str, Any]:
    """W6's mixed requests answered one by one with PyTorch eager autograd, each kind
    timed on its own: JSON in, tensors, forward, backward, JSON out (as the worker does).
    ``samples`` maps a kind to seconds per request; ``error`` is the largest difference
    from the hand-written worker's answers, relative to the larger of 1 and their size
    (as W6 compares gradcalc's)."""
    import torch

    torch_formulas = _torch_mixed_formulas()

    def answer(line: str) -> str:
        request = json.loads(line)
        leaves = {
            name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
            for name, value in request["vars"].items()
        }
        value = torch_formulas[request["formula"]](**leaves)
        value.backward()
        return json.dumps(
            {
                "id": request["id"],
                "schema_version": 1,
                "value": value.item(),
                "shape": [],
                "dtype": "float64",
                "gradients": {name: leaf.grad.tolist() for name, leaf in leaves.items()},
            }
        )

    requests = baselines.mixed_requests(per_kind * len(baselines.MIXED_FORMULAS), seed=1)
    samples: dict[str, list[float]] = {}
    error = 0.0
    for kind, formula in baselines.MIXED_FORMULAS.items():
        lines = [json.dumps(r) for r in requests if r["formula"] == formula]
        for line in lines[:5]:
            got = json.loads(answer(line))
            want = baselines.answer_mixed(json.loads(line))
            pairs = [(got["value"], want["value"])]
            pairs += [(got["gradients"][n], grad) for n, grad in want["gradients"].items()]
            for mine, theirs in pairs:
                mine, theirs = np.asarray(mine), np.asarray(theirs)
                scale = max(1.0, float(np.max(np.abs(theirs))))
                error = max(error, float(np.max(np.abs(mine - theirs))) / scale)

        def run(lines: list[str] = lines) -> None:
            for line in lines:
                answer(line)

        samples[kind] = [s / len(lines) for s in _timed(run, repeats)]
    return {"samples": samples, "error": error, "threads": torch.get_num_threads()}


def jax_w3(n: int, dtype: str, repeats: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x_np = baselines.elementwise_input(n, dtype)
    step = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(x) * x**2 + jnp.exp(-x))))
    x = jnp.asarray(x_np)
    samples = _timed(lambda: step(x).block_until_ready(), repeats)
    _, want = baselines.elementwise_numpy(x_np)
    return {"samples": samples, "error": _relative_error(np.asarray(step(x)), want)}


def jax_w4(dtype: str, repeats: int, rows: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    data = baselines.mlp_inputs(dtype, rows=rows)
    X, T = jnp.asarray(data["X"]), jnp.asarray(data["T"])

    def loss(W1: Any, W2: Any) -> Any:
        return jnp.mean((jnp.tanh(X @ W1) @ W2 - T) ** 2)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    W1, W2 = jnp.asarray(data["W1"]), jnp.asarray(data["W2"])
    samples = _timed(lambda: jax.block_until_ready(step(W1, W2)), repeats)
    got_w1, got_w2 = step(W1, W2)
    _, want_w1, want_w2 = baselines.mlp_numpy(**data)
    error = max(_relative_error(got_w1, want_w1), _relative_error(got_w2, want_w2))
    return {"samples": samples, "error": error}


RUNNERS: dict[tuple[str, str], Callable[..., dict[str, Any]]] = {
    ("torch", "w2"): torch_w2,
    ("torch", "w3"): torch_w3,
    ("torch", "w4"): torch_w4,
    ("torch", "w6"): torch_w6,
    ("jax", "w3"): jax_w3,
    ("jax", "w4"): jax_w4,
}


def main(argv: list[str]) -> None:
    library, workload, arguments = argv
    print(json.dumps(RUNNERS[library, workload](**json.loads(arguments))))


if __name__ == "__main__":
    main(sys.argv[1:])
