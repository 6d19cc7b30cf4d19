"""W3 large elementwise: `sum(sin(x)*x**2 + exp(-x))`, forward plus backward, time and memory.

Time is measured without tracing; memory in one separate traced pass:
tracemalloc sees NumPy's array buffers, so "extra memory" is the peak of
traced bytes above what was allocated before the pass (x itself), the
returned gradient included, for gradcalc and the hand-written NumPy alike.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
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

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def gradcalc_leaf(x: np.ndarray) -> Any:
    """A leaf over x's buffer when the engine offers from_numpy, as torch.from_numpy does."""
    import gradcalc

    if hasattr(gradcalc, "from_numpy"):
        return gradcalc.from_numpy(x).requires_grad_()
    return gradcalc.tensor(x, requires_grad=True)


def elementwise_gradcalc(leaf: Any) -> np.ndarray:
    leaf.grad = None
    total = (leaf.sin() * leaf**2 + (-leaf).exp()).sum()
    total.backward()
    return leaf.grad.numpy()


def _checked_leaf(x: np.ndarray, want: np.ndarray, dtype: str) -> Any:
    leaf = gradcalc_leaf(x)
    error = relative_error(elementwise_gradcalc(leaf), want)
    if error > TOLERANCE[dtype]:
        raise AssertionError(f"gradcalc's gradient differs from NumPy's by {error:.2g}")
    return leaf


def peak_extra_bytes(run: Callable[[], object]) -> int:
    """Peak traced bytes allocated by run(), above those alive before it started."""
    release_engine_cache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return peak - before


def run(config: Config, report: Report) -> None:
    sizes = [config.size(full=1_000_000, quick=1_000_000)]
    if not config.quick:
        sizes.append(config.size(full=10_000_000, quick=10_000_000))
    else:
        report.note("W3", "--quick: 10^7 elements skipped")
    for n in sizes:
        for dtype in ("float64", "float32"):
            repeats = config.runs(full=30 if n <= 1_000_000 else 8, quick=5)
            attempt(
                report,
                "W3",
                f"n={n:.0e} {dtype}",
                lambda n=n, dtype=dtype, repeats=repeats: _case(config, report, n, dtype, repeats),
            )


def _case(config: Config, report: Report, n: int, dtype: str, repeats: int) -> None:
    x = baselines.elementwise_input(n, dtype)
    label = f"n={n:.0e} {dtype}"
    _, want = baselines.elementwise_numpy(x)
    numpy = f"NumPy by hand {label}"
    cases = {numpy: lambda: baselines.elementwise_numpy(x)}
    leaf = attempt(report, "W3", f"gradcalc {label}", lambda: _checked_leaf(x, want, dtype))
    if leaf is not None:
        cases[f"gradcalc {label}"] = lambda: elementwise_gradcalc(leaf)
    faults: dict[str, list[int]] = {}
    samples = interleaved(
        cases,
        repeats,
        report,
        "W3",
        settle=1,
        prepare={numpy: release_engine_cache},
        faults=faults,
    )
    timed = {
        name: report.measure(
            "W3", name, [s * 1000 for s in found], "ms", note=fault_note(faults, name)
        )
        for name, found in samples.items()
    }
    memory = {}
    for name, run in cases.items():
        if name in timed:
            if leaf is not None:
                leaf.grad = None  # its buffer must not seed the pass it is measured in
            memory[name] = peak_extra_bytes(run)
            report.measure("W3", f"{name} extra memory", [memory[name] / 2**20], "MiB")
    numpy_name, gradcalc_name = f"NumPy by hand {label}", f"gradcalc {label}"
    report.target("W3", f"time {label} / NumPy", timed.get(gradcalc_name), timed[numpy_name], 1.2)
    report.target(
        "W3", f"memory {label} / NumPy", memory.get(gradcalc_name), memory[numpy_name], 2.0
    )

    tolerance = TOLERANCE[dtype] * 10
    measure_references(config, report, "W3", label, tolerance, n=n, dtype=dtype, repeats=repeats)
