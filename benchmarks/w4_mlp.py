"""W4 MLP step: `mean((tanh(X @ W1) @ W2 - T)**2)` and the gradients of W1 and W2.

X is 4096x512, W1 512x512, W2 512x1; float32 and float64. Inputs are made
once, outside the timed step; each step clears the gradients as a training
loop's zero_grad would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import baselines
from benchmarks.harness import (
    Config,
    Report,
    attempt,
    fault_note,
    interleaved,
    measure_references,
    relative_error,
    release_engine_cache,
)

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def gradcalc_tensors(data: dict[str, np.ndarray]) -> dict[str, Any]:
    import gradcalc

    make = getattr(gradcalc, "from_numpy", None) or gradcalc.tensor
    tensors = {name: make(array) for name, array in data.items()}
    for name in ("W1", "W2"):
        tensors[name].requires_grad_()
    return tensors


def mlp_gradcalc(X: Any, W1: Any, W2: Any, T: Any) -> tuple[np.ndarray, np.ndarray]:
    W1.grad = None
    W2.grad = None
    loss = (((X @ W1).tanh() @ W2 - T) ** 2).mean()
    loss.backward()
    return W1.grad.numpy(), W2.grad.numpy()


def run(config: Config, report: Report) -> None:
    rows = config.size(full=4096, quick=2048)
    repeats = config.runs(full=20, quick=3)
    for dtype in ("float32", "float64"):
        _case(config, report, dtype, rows, repeats)
    report.note("W4", f"X {rows}x512, W1 512x512, W2 512x1; {repeats} steps per case")


def _case(config: Config, report: Report, dtype: str, rows: int, repeats: int) -> None:
    data = baselines.mlp_inputs(dtype, rows=rows)
    _, want_w1, want_w2 = baselines.mlp_numpy(**data)

    def checked_tensors() -> dict[str, Any]:
        tensors = gradcalc_tensors(data)
        got_w1, got_w2 = mlp_gradcalc(**tensors)
        error = max(relative_error(got_w1, want_w1), relative_error(got_w2, want_w2))
        if error > TOLERANCE[dtype]:
            raise AssertionError(f"gradcalc's gradients differ from NumPy's by {error:.2g}")
        return tensors

    numpy = f"NumPy by hand {dtype}"
    cases = {numpy: lambda: baselines.mlp_numpy(**data)}
    tensors = attempt(report, "W4", f"gradcalc {dtype}", checked_tensors)
    if tensors is not None:
        cases[f"gradcalc {dtype}"] = lambda: mlp_gradcalc(**tensors)
    faults: dict[str, list[int]] = {}
    samples = interleaved(
        cases,
        repeats,
        report,
        "W4",
        settle=1,
        prepare={numpy: release_engine_cache},
        faults=faults,
    )
    timed = {
        name: report.measure(
            "W4", name, [s * 1000 for s in found], "ms", note=fault_note(faults, name)
        )
        for name, found in samples.items()
    }
    report.target(
        "W4",
        f"step {dtype} / NumPy",
        timed.get(f"gradcalc {dtype}"),
        timed.get(f"NumPy by hand {dtype}"),
        1.1,
    )

    tolerance = TOLERANCE[dtype] * 10
    measure_references(
        config, report, "W4", dtype, tolerance, dtype=dtype, repeats=repeats, rows=rows
    )
