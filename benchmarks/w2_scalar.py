"""W2 scalar chain: ~100,000 0-d operations recorded then backpropagated, in µs per node.

The chain is `y = sin(y * c + x) * k`, four ops per iteration, written once
for every engine: gradcalc's Python API (float64 0-d tensors), gradcalc's
formula language (a `for` loop run by the interpreter), PyTorch eager,
micrograd's Value and a closure tape on floats. The cyclic garbage collector
stays on, as users run it; one extra gradcalc figure with it off shows its share.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from benchmarks import baselines
from benchmarks.harness import Config, Report, attempt, external, interleaved

RELATIVE_TOLERANCE = 1e-9


def chain_gradcalc_api(iterations: int) -> tuple[float, float]:
    import gradcalc

    x = gradcalc.tensor(baselines.CHAIN_X, dtype=gradcalc.float64, requires_grad=True)
    c = gradcalc.tensor(baselines.CHAIN_SCALE, dtype=gradcalc.float64)
    k = gradcalc.tensor(baselines.CHAIN_DAMPING, dtype=gradcalc.float64)
    y = x
    for _ in range(iterations):
        y = (y * c + x).sin() * k
    y.backward()
    return y.item(), x.grad.item()


def chain_program(iterations: int) -> str:
    return (
        "y = x\n"
        f"for i in range({iterations}):\n"
        f"    y = sin(y * {baselines.CHAIN_SCALE} + x) * {baselines.CHAIN_DAMPING}\n"
        "y\n"
    )


def chain_gradcalc_formula(iterations: int) -> tuple[float, float]:
    from gradcalc.api import evaluate

    result = evaluate(chain_program(iterations), bindings={"x": str(baselines.CHAIN_X)}, wrt=["x"])
    return float(result.value), float(result.gradients["x"])


def _without_gc(run: Callable[[int], tuple[float, float]]) -> Callable[[int], tuple[float, float]]:
    def paused(iterations: int) -> tuple[float, float]:
        gc.disable()
        try:
            return run(iterations)
        finally:
            gc.enable()

    return paused


def _check(name: str, got: tuple[float, float], want: tuple[float, float]) -> bool:
    for g, w in zip(got, want, strict=True):
        if abs(g - w) > RELATIVE_TOLERANCE * max(abs(w), 1.0):
            raise AssertionError(f"{name} computed {got}, the closure tape {want}")
    return True


def run(config: Config, report: Report) -> None:
    iterations = config.size(full=25_000, quick=3_000)
    repeats = config.runs(full=5, quick=3)
    nodes = iterations * baselines.NODES_PER_ITERATION
    want = baselines.chain_closure_tape(iterations)
    per_node = 1e6 / nodes
    cases: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        ("gradcalc Python API", chain_gradcalc_api),
        ("gradcalc formula language", chain_gradcalc_formula),
        ("gradcalc Python API, gc off (info)", _without_gc(chain_gradcalc_api)),
        ("micrograd Value", baselines.chain_micrograd),
        ("closure tape on floats", baselines.chain_closure_tape),
    ]
    checked = {}
    for name, chain in cases:
        verify = lambda chain=chain, name=name: _check(name, chain(iterations), want)  # noqa: E731
        if attempt(report, "W2", f"{name} check", verify):
            checked[name] = lambda chain=chain: chain(iterations)
    samples = interleaved(checked, repeats, report, "W2")
    measured = {
        name: report.measure("W2", name, [s * per_node for s in found], "µs/node")
        for name, found in samples.items()
    }

    torch = None
    if config.torch_python:

        def measure_torch():
            answer = external(config, "torch", "w2", iterations=iterations, repeats=repeats)
            if answer["error"] > RELATIVE_TOLERANCE:
                raise AssertionError(f"PyTorch differs from the tape by {answer['error']}")
            return report.measure(
                "W2",
                "PyTorch eager 0-d",
                [s * per_node for s in answer["samples"]],
                "µs/node",
                f"{answer['threads']} threads",
            )

        torch = attempt(report, "W2", "PyTorch eager", measure_torch)
    no_torch = "" if config.torch_python else "torch not available (--torch-python)"
    api = measured.get("gradcalc Python API")
    report.target("W2", "API / PyTorch eager", api, torch, 0.25, note=no_torch)
    report.target("W2", "API / micrograd", api, measured.get("micrograd Value"), 1.0)
    report.target("W2", "API / closure tape", api, measured.get("closure tape on floats"), 2.0)
    report.target(
        "W2",
        "formula / PyTorch eager",
        measured.get("gradcalc formula language"),
        torch,
        0.4,
        note=no_torch,
    )
    report.note(
        "W2", f"{iterations} iterations x {baselines.NODES_PER_ITERATION} ops = {nodes} nodes"
    )
