"""The benchmark suite imports, its references compute the right derivatives, and W2 runs tiny.

No timing is asserted: figures only mean something side by side in a real run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines, run
from benchmarks.harness import Report, markdown
from benchmarks.w1_startup import parse_importtime, summarise_imports
from benchmarks.w5_parse import count_tokens, generated_program


def chain_value(x: float, iterations: int) -> float:
    y = x
    for _ in range(iterations):
        y = math.sin(y * baselines.CHAIN_SCALE + x) * baselines.CHAIN_DAMPING
    return y


def test_float_references_agree_with_finite_differences() -> None:
    step = 1e-6
    numeric = (chain_value(0.5 + step, 30) - chain_value(0.5 - step, 30)) / (2 * step)
    tape_value, tape_grad = baselines.chain_closure_tape(30)
    micro_value, micro_grad = baselines.chain_micrograd(30)
    assert tape_value == pytest.approx(chain_value(0.5, 30), rel=1e-12)
    assert tape_grad == pytest.approx(numeric, rel=1e-6)
    assert (micro_value, micro_grad) == pytest.approx((tape_value, tape_grad), rel=1e-12)


def test_micrograd_backward_survives_a_chain_deeper_than_the_recursion_limit() -> None:
    value, grad = baselines.chain_micrograd(sys.getrecursionlimit())
    assert math.isfinite(value) and math.isfinite(grad)


def test_numpy_references_agree_with_finite_differences() -> None:
    x = baselines.elementwise_input(5, "float64")
    total, grad = baselines.elementwise_numpy(x)
    step = 1e-6
    for i in range(x.size):
        shifted = x.copy()
        shifted[i] += step
        assert (baselines.elementwise_numpy(shifted)[0] - total) / step == pytest.approx(
            grad[i], rel=1e-4, abs=1e-5
        )

    data = baselines.mlp_inputs("float64", rows=6)
    loss, grad_w1, grad_w2 = baselines.mlp_numpy(**data)
    assert grad_w1.shape == (512, 512) and grad_w2.shape == (512, 1)
    for name, grad, index in (("W1", grad_w1, (3, 7)), ("W2", grad_w2, (11, 0))):
        moved = dict(data, **{name: data[name].copy()})
        moved[name][index] += step
        assert (baselines.mlp_numpy(**moved)[0] - loss) / step == pytest.approx(
            grad[index], rel=1e-3, abs=1e-9
        )


def test_generated_program_is_python_and_sized() -> None:
    text = generated_program(5_000)
    compile(text, "<generated>", "exec")
    assert 5_000 <= len(text) < 5_300
    assert count_tokens(text) > 500


def test_importtime_summary_reads_nesting_and_heavy_packages() -> None:
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |   numpy.core\n"
        "import time:      2000 |       2100 | numpy\n"
        "import time:       300 |        300 | json\n"
    )
    lines = parse_importtime(stderr)
    assert [(line.module, line.depth) for line in lines] == [
        ("numpy.core", 1),
        ("numpy", 0),
        ("json", 0),
    ]
    summary = summarise_imports(lines)
    assert summary["heavy_packages_ms"] == {"numpy": 2.1}
    assert list(summary["top_level_ms"]) == ["numpy", "json"]


def test_target_status_and_missing_sides() -> None:
    report = Report()
    fast = report.measure("W0", "fast", [1.0, 2.0, 3.0], "ms")
    slow = report.measure("W0", "slow", [4.0], "ms")
    assert fast.median == 2.0
    assert report.target("W0", "fast/slow", fast, slow, 1.0).status == "PASS"
    assert report.target("W0", "slow/fast", slow, fast, 1.0).status == "MISS"
    assert report.target("W0", "higher", slow, fast, 3.0, lower_is_better=False).status == "MISS"
    assert report.target("W0", "absent", None, fast, 1.0).status == "SKIP"
    table = markdown(report)
    assert "| W0 | fast/slow | 0.500 | ≤ 1 | **PASS** |" in table


def test_w2_runs_at_toy_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run, "find_library_python", lambda library, given: None)
    out = tmp_path / "w2.json"
    report = run.main(["--only", "W2", "--quick", "--scale", "0.01", "--json", str(out)])
    cases = {m.case: m for m in report.measures}
    assert not [note for note in report.notes if "not measured" in note]
    for side in ("gradcalc Python API", "gradcalc formula language", "micrograd Value"):
        assert cases[side].unit == "µs/node" and cases[side].median > 0
    statuses = {t.label: t.status for t in report.targets}
    assert statuses["API / micrograd"] in {"PASS", "MISS"}
    assert statuses["formula / PyTorch eager"] == "SKIP"
    assert out.read_text().startswith("{")
    assert np.isfinite([m.median for m in report.measures]).all()
