"""The benchmark suite imports, its references compute the right derivatives, and W2 runs tiny.

W1's checks accept gradcalc's real output and reject another formula's, a
toy W1 and a toy mixed W6 run end to end, and the W6 worker answers as
gradcalc does. No timing is asserted: figures only mean something side by
side in a real run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines, run, w1_cases, w1_startup, w6_batch
from benchmarks.harness import Config, Report, markdown
from benchmarks.w1_startup import parse_importtime, summarise_imports
from benchmarks.w5_parse import count_tokens, generated_program

SCRIPT = Path(sys.executable).parent / "gradcalc"
needs_script = pytest.mark.skipif(not SCRIPT.exists(), reason="no gradcalc script beside python")


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


def _toy_config(tmp_path: Path) -> Config:
    return Config(quick=True, workdir=tmp_path, scale=0.01, repeats=1, installed=False)


def test_every_w1_row_has_cases_and_every_case_a_row(tmp_path: Path) -> None:
    cases = w1_cases.cases(tmp_path)
    rows = {case.row for case in cases}
    assert set(w1_cases.ROWS) <= rows
    assert rows - set(w1_cases.ROWS) == {"repl answer"}  # measured, no target in issue 12
    for row in ("poly text", "trans json", "program text", "vector json", "matrix text"):
        assert sum(case.row == row for case in cases) >= 2, row
    assert len({case.name for case in cases}) == len(cases)
    assert (tmp_path / "prog_loops.gc").read_text().startswith("#")
    assert {w1_cases.SEED_TEXT, w1_cases.SEED_JSON} <= {case.name for case in cases}


def test_text_check_finds_numbers_in_order_within_printed_precision() -> None:
    assert w1_cases.numbers_in("x  shape (3,), float64 [ 1.5 -2.e-03] #0 AddBackward0") == [
        3.0,
        1.5,
        -0.002,
        0.0,
    ]
    w1_cases.expect_in_order("a 1.0 b 2.0000001 c", [(1.0, 1e-6), (2.0, 1e-6)], "t")
    with pytest.raises(AssertionError):
        w1_cases.expect_in_order("a 2.0 b 1.0", [(1.0, 1e-6), (2.0, 1e-6)], "t")


@needs_script
def test_w1_checks_accept_gradcalc_and_reject_another_formulas_output(tmp_path: Path) -> None:
    """One case of each kind of check, run concurrently; each check must refuse the output
    of a different formula of its row."""
    wanted = {
        "trans text": 2,
        "program json": 1,
        "hessian text": 1,
        "jacobian json": 1,
        "graph tree": 1,
        "graph dot": 1,
        "graph json": 1,
        "name json": 2,
        "functions text": 1,
    }
    picked = []
    for case in w1_cases.cases(tmp_path):
        if wanted.get(case.row, 0) > 0:
            wanted[case.row] -= 1
            picked.append(case)
    children = {
        case.name: subprocess.Popen(
            [str(SCRIPT), *case.arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for case in picked
    }
    outputs = {}
    for case in picked:
        stdout, stderr = children[case.name].communicate(timeout=120)
        assert children[case.name].returncode == case.returncode, (case.name, stderr)
        case.check(stdout, stderr)
        outputs[case.name] = (stdout, stderr)
    for case in picked:
        for other in picked:
            if other.row == case.row and other is not case:
                with pytest.raises((AssertionError, KeyError, ValueError)):
                    case.check(*outputs[other.name])


def test_w1_row_targets_judge_median_and_worst() -> None:
    report = Report()
    floor = report.measure("W1", "floor", [100.0], "ms")
    cases = [
        w1_cases.Case("poly text", label, [], lambda out, err: None)
        for label in ("fast", "slow", "mid")
    ]
    by_case = {
        c.name: report.measure("W1", c.name, [ms], "ms")
        for c, ms in zip(cases, (50.0, 90.0, 60.0), strict=True)
    }
    w1_startup.row_targets(report, by_case, cases, {"numpy": floor})
    found = {t.label: t for t in report.targets}
    median = found["scalar polynomial, text / import numpy: median of 3"]
    worst = found["scalar polynomial, text / import numpy: worst"]
    assert (median.ratio, median.status) == (pytest.approx(0.6), "PASS")
    assert (worst.ratio, worst.status, worst.note) == (pytest.approx(0.9), "MISS", "`slow`")
    assert found["parse error, text / import numpy"].status == "SKIP"


@needs_script
def test_w1_runs_at_toy_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    every = w1_cases.cases
    keep = {w1_cases.SEED_JSON, "parse text: 3*a +", "repl answer: gradcalc repl, first answer"}
    monkeypatch.setattr(
        w1_cases, "cases", lambda workdir: [case for case in every(workdir) if case.name in keep]
    )
    monkeypatch.setattr(w1_startup, "find_qalc", lambda: None)
    pytest.importorskip("pexpect")
    report = Report()
    w1_startup.run(_toy_config(tmp_path), report)
    assert not [note for note in report.notes if "not measured" in note], report.notes
    cases = {m.case: m for m in report.measures}
    assert cases[w1_cases.SEED_JSON].note.endswith("x import numpy")
    assert cases["repl answer: gradcalc repl, first answer"].median > 0
    statuses = {t.label: t.status for t in report.targets}
    assert statuses["seed --json / import numpy"] in {"PASS", "MISS"}
    assert statuses["scalar polynomial, JSON / import numpy"] in {"PASS", "MISS"}
    assert statuses["seed --json / qalc"] == "SKIP"
    assert any("importtime `parse text: 3*a +`" in note for note in report.notes)


def test_w6_worker_answers_as_gradcalc_does() -> None:
    from gradcalc.api import run_line

    requests = baselines.mixed_requests(10)
    assert {r["formula"] for r in requests} == set(baselines.MIXED_FORMULAS.values())
    lines = [json.dumps(r) for r in requests]
    gradcalc_text = "\n".join(run_line(line)[0] for line in lines)
    worker_text = "\n".join(json.dumps(baselines.answer_mixed(json.loads(x))) for x in lines)
    w6_batch.compare_results(gradcalc_text, worker_text, "gradcalc")
    wrong = json.loads(worker_text.splitlines()[3])
    wrong["gradients"]["w"][0][0] *= 1 + 1e-9
    with pytest.raises(AssertionError):
        w6_batch.compare_results(gradcalc_text.splitlines()[3], json.dumps(wrong), "gradcalc")


@needs_script
def test_w6_mixed_batch_runs_at_toy_size(tmp_path: Path) -> None:
    report = Report()
    w6_batch.run_mixed_batch(_toy_config(tmp_path), report)
    assert not [note for note in report.notes if "not measured" in note], report.notes
    statuses = {t.label: t.status for t in report.targets}
    assert statuses["mixed batch --jobs 1 / NumPy worker (time)"] in {"PASS", "MISS"}
    assert statuses["mixed batch --jobs 1 / --jobs 2 (speed-up)"] in {"PASS", "MISS"}
    kinds = [m.case for m in report.measures if m.case.startswith("in-process")]
    assert len(kinds) == 2 * len(baselines.MIXED_FORMULAS)
