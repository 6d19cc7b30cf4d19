"""W1 one-shot: whole `gradcalc` processes against the cheapest ways to start Python, and peers.

Issue 12's table: one-shot commands of every kind a person types (scalar
polynomial and transcendental formulas, a program file, vector and matrix
formulas, graph, hessian, jacobian, --check, parse and name errors, --help,
functions, the REPL), text and JSON where both exist; `w1_cases.py` holds
them and the answers they must print. Each command is timed round robin with
its floor (`python -c pass`, `python -c "import numpy"`, `python -c "import
numpy, rich.console, rich.table"`) and every ratio is taken within the run.
A row of the table gathers several formulas and reports the median of their
ratios and the worst one: the target holds for any formula, so both are
judged. Issue 6's rows stay (the seed with --json against `import numpy`,
qalc and PyTorch; --help).

Every command is a venv's own interpreter or console script (a pyenv shim on
PATH would add ~130 ms to each start): by default a `pip install .` copy of
the working tree built once per run (`harness.install_gradcalc`), because the
development venv's editable install adds an import finder to every start.
The REPL runs in a pseudo-terminal (pexpect) and is timed until its prompt,
or its first answer, appears. `-X importtime` of one command per row says
where the start-up time goes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import w1_cases
from benchmarks.external import TORCH_ONE_SHOT
from benchmarks.harness import (
    Config,
    Measure,
    ProcessRun,
    Report,
    attempt,
    checked_process,
    child_environment,
    interleaved,
    run_process,
)

SEED_FORMULA = "3*a**3 - b**2"
SEED_ARGUMENTS = [SEED_FORMULA, "a=2", "b=6", "--json"]
SEED_ANSWER = {"value": -12.0, "gradients": {"a": 36.0, "b": -12.0}}
QALC_EXPRESSION = "[3*2^3 - 6^2, diff(3x^3 - 6^2, x, 1, 2), diff(3*2^3 - y^2, y, 1, 6)]"
"""The same value and both partials at a=2, b=6 (x, y: qalc reads `a`, `b` as units)."""
QALC_ANSWER = [-12.0, 36.0, -12.0]
HEAVY_PACKAGES = (
    "gradcalc",
    "numpy",
    "lark",
    "rich",
    "typer",
    "click",
    "pydantic",
    "prompt_toolkit",
)
REPL_PROMPT = ">>>"
REPL_LINE = "a = 2; b = 6; P = 3*a**3 - b**2; P.backward(); a.grad"
REPL_ANSWER = r"tensor\(36\."
"""The REPL's first answer: the seed's gradient; the echo of the line cannot match it."""
FLOOR_NAMES = {"pass": "pass", "numpy": "import numpy", "numpy+rich": "import numpy+rich"}


@dataclass
class ImportLine:
    module: str
    depth: int
    self_us: int
    cumulative_us: int


def parse_importtime(stderr: str) -> list[ImportLine]:
    """The lines `python -X importtime` writes: self and cumulative µs, nesting by indentation."""
    found = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        module = name.rstrip()
        stripped = module.lstrip()
        found.append(
            ImportLine(
                stripped, (len(module) - len(stripped) - 1) // 2, int(self_us), int(cumulative_us)
            )
        )
    return found


def summarise_imports(lines: list[ImportLine], top: int = 8) -> dict[str, Any]:
    """Total import time, the slowest top-level imports, and the own time of each heavy
    package (its modules' self times: `rich.console` counts for rich even when imported
    on its own, and nothing is counted twice)."""
    top_level = sorted((i for i in lines if i.depth == 0), key=lambda i: -i.cumulative_us)
    packages = {}
    for name in HEAVY_PACKAGES:
        own = [i.self_us for i in lines if i.module == name or i.module.startswith(name + ".")]
        if own:
            packages[name] = round(sum(own) / 1000, 1)
    total = sum(i.self_us for i in lines)
    return {
        "total_ms": round(total / 1000, 1),
        "modules": len(lines),
        "top_level_ms": {i.module: round(i.cumulative_us / 1000, 1) for i in top_level[:top]},
        "heavy_packages_ms": packages,
        "other_ms": round(total / 1000 - sum(packages.values()), 1),
    }


def check_seed_output(stdout: str) -> None:
    answer = json.loads(stdout)
    got = {"value": answer.get("value"), "gradients": answer.get("gradients")}
    if got != SEED_ANSWER:
        raise AssertionError(f"gradcalc printed {stdout.strip()!r}, expected {SEED_ANSWER}")


def check_qalc_output(stdout: str) -> None:
    if w1_cases.numbers_in(stdout) != QALC_ANSWER:
        raise AssertionError(f"qalc printed {stdout.strip()!r}, expected {QALC_ANSWER}")


def repl_environment(state: Path) -> dict[str, str]:
    """A terminal like the REPL tests': no cursor-position queries, history under `state`."""
    return child_environment(
        {
            "TERM": "xterm",
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "XDG_STATE_HOME": str(state),
            "COLUMNS": "100",
            "LINES": "40",
        }
    )


def repl_session(script: str, until: str, env: dict[str, str]) -> ProcessRun:
    """`gradcalc repl` in a pty: seconds from spawn to the prompt, or to the first answer.

    The first answer is the seed typed as one line (`REPL_LINE`) as soon as the
    prompt shows; then the session waits for the next prompt and ends with
    Ctrl-D (untimed).
    """
    import pexpect

    start = time.perf_counter()
    child = pexpect.spawn(
        script, ["repl"], env=env, encoding="utf-8", timeout=60, dimensions=(40, 100)
    )
    child.delaybeforesend = None  # pexpect sleeps 50 ms before each send by default
    try:
        child.expect_exact(REPL_PROMPT)
        seconds = time.perf_counter() - start
        if until == "answer":
            child.send(REPL_LINE + "\r")
            child.expect(REPL_ANSWER)
            seconds = time.perf_counter() - start
            child.expect_exact(REPL_PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)
    if child.exitstatus not in (0, None):
        raise RuntimeError(f"gradcalc repl exited {child.exitstatus}")
    return ProcessRun(seconds, child.exitstatus or 0, "", "")


def case_runner(case: w1_cases.Case, script: str, workdir: Path) -> Callable[[], ProcessRun]:
    """One timed run of a case; raises unless it exits as its check expects."""
    if case.kind.startswith("repl-"):
        env = repl_environment(workdir / "repl-state")
        until = case.kind.removeprefix("repl-")
        return lambda: repl_session(script, until, env)
    argv = [script, *case.arguments]

    def run_once() -> ProcessRun:
        done = run_process(argv)
        if done.returncode != case.returncode:
            raise RuntimeError(
                f"{case.name} exited {done.returncode}, not {case.returncode}: {done.stderr[-500:]}"
            )
        return done

    return run_once


def check_case(case: w1_cases.Case, run_once: Callable[[], ProcessRun]) -> None:
    """One untimed run whose output must be right (the REPL's runs check themselves)."""
    done = run_once()
    case.check(done.stdout, done.stderr)


def row_targets(
    report: Report, by_case: dict[str, Measure], cases: list[w1_cases.Case], floors: dict
) -> None:
    """Per row of issue 12's table: the median of its cases' ratios, and the worst case."""
    for key, row in w1_cases.ROWS.items():
        floor = floors.get(row.floor)
        members = [c for c in cases if c.row == key]
        ratios = {
            c.label: by_case[c.name].median / floor.median
            for c in members
            if c.name in by_case and floor is not None
        }
        label = f"{row.title} / {FLOOR_NAMES[row.floor]}"
        missing = len(members) - len(ratios)
        note = "; ".join(
            part
            for part in (row.note, f"{missing} case(s) not measured" if missing else "")
            if part
        )
        if not ratios:
            report.target("W1", label, None, None, row.limit, note=note or "not measured")
            continue
        if len(members) == 1:
            report.target("W1", label, next(iter(ratios.values())), 1.0, row.limit, note=note)
            continue
        report.target(
            "W1",
            f"{label}: median of {len(ratios)}",
            statistics.median(ratios.values()),
            1.0,
            row.limit,
            note=note,
        )
        worst = max(ratios, key=ratios.__getitem__)
        report.target("W1", f"{label}: worst", ratios[worst], 1.0, row.limit, note=f"`{worst}`")


def trace_imports(
    report: Report, python: str, script: str, cases: list[w1_cases.Case], by_case: dict
) -> None:
    """-X importtime of the first command of each row: how much of its run is imports."""
    seen = set()
    for case in cases:
        if case.kind != "process" or case.row in seen:
            continue
        seen.add(case.row)
        traced = attempt(
            report,
            "W1",
            f"importtime {case.name}",
            lambda case=case: run_process([python, "-X", "importtime", script, *case.arguments]),
        )
        if traced is None:
            continue
        summary = summarise_imports(parse_importtime(traced.stderr))
        measured = by_case.get(case.name)
        summary["median_run_ms"] = round(measured.median, 1) if measured else None
        report.details[f"W1 importtime {case.name}"] = summary
        heavy = ", ".join(
            f"{k} {v}"
            for k, v in [*summary["heavy_packages_ms"].items(), ("other", summary["other_ms"])]
        )
        run_ms = f" of a {summary['median_run_ms']} ms run" if measured else ""
        report.note(
            "W1",
            f"-X importtime `{case.name}`: {summary['modules']} modules, "
            f"{summary['total_ms']} ms of imports{run_ms}; own ms by package: {heavy}",
        )


def find_qalc() -> str | None:
    return shutil.which("qalc")


def run(config: Config, report: Report) -> None:
    runs = config.runs(full=12, quick=5)
    # The installed copy's venv (`pip install .`, as users run it) for gradcalc and the
    # Python references alike, so both sides pay the same interpreter start-up.
    python = config.gradcalc_python
    script = str(config.gradcalc_script)
    if config.install_note:
        report.note("W1", config.install_note)
    else:
        report.note("W1", f"timing a `pip install .` copy: {script}")
    workdir = config.workdir / "w1"
    workdir.mkdir(parents=True, exist_ok=True)
    cases = w1_cases.cases(workdir)

    timed: dict[str, Callable[[], Any]] = {
        w1_cases.FLOORS[key]: (lambda code=code: checked_process([python, "-c", code]))
        for key, code in w1_cases.FLOOR_CODE.items()
    }
    for case in cases:
        run_once = case_runner(case, script, workdir)
        if attempt(
            report,
            "W1",
            f"{case.name} (output check)",
            lambda case=case, run_once=run_once: check_case(case, run_once) or True,
        ):
            timed[case.name] = run_once
    qalc = find_qalc()
    if qalc:
        qalc_argv = [qalc, "-t", QALC_EXPRESSION]
        if attempt(
            report,
            "W1",
            "qalc (output check)",
            lambda: check_qalc_output(checked_process(qalc_argv).stdout) or True,
        ):
            timed["qalc value + both partials"] = lambda: checked_process(qalc_argv)
    else:
        report.note("W1", "qalc is not installed (apt-get install qalc): its ratios are skipped")
    if config.torch_python:
        torch_argv = [config.torch_python, "-c", TORCH_ONE_SHOT]
        if attempt(
            report,
            "W1",
            "PyTorch seed (output check)",
            lambda: check_seed_output(checked_process(torch_argv).stdout) or True,
        ):
            timed["PyTorch seed (fresh process)"] = lambda: checked_process(torch_argv)

    counts = {name: runs for name in timed}
    if "PyTorch seed (fresh process)" in timed:
        counts["PyTorch seed (fresh process)"] = config.runs(full=10, quick=2)
    samples = interleaved(timed, counts, report, "W1", warmup=config.warmup)
    by_case = {
        name: report.measure("W1", name, [s * 1000 for s in found], "ms")
        for name, found in samples.items()
    }
    floors = {key: by_case.get(name) for key, name in w1_cases.FLOORS.items()}
    for case in cases:
        measured = by_case.get(case.name)
        row = w1_cases.ROWS.get(case.row)
        key = row.floor if row else "numpy"
        if measured and floors.get(key):
            measured.note = f"{measured.median / floors[key].median:.2f}x {FLOOR_NAMES[key]}"

    seed = by_case.get(w1_cases.SEED_JSON)
    numpy_start = floors["numpy"]
    qalc_time = by_case.get("qalc value + both partials")
    report.target("W1", "seed --json / import numpy", seed, numpy_start, 1.3)
    report.target(
        "W1", "seed --json / qalc", seed, qalc_time, 1.0, note="" if qalc else "qalc not installed"
    )
    report.target(
        "W1",
        "seed text / qalc (gradcalc faster)",
        by_case.get(w1_cases.SEED_TEXT),
        qalc_time,
        1.0,
        note="" if qalc else "qalc not installed",
    )
    report.target(
        "W1",
        "PyTorch one-shot / seed --json",
        by_case.get("PyTorch seed (fresh process)"),
        seed,
        10.0,
        lower_is_better=False,
        note="" if config.torch_python else "torch not available (--torch-python)",
    )
    row_targets(report, by_case, cases, floors)
    trace_imports(report, python, script, cases, by_case)
    if os.environ.get("GRADCALC_BENCH_KEEP_W1") is None:
        shutil.rmtree(workdir / "repl-state", ignore_errors=True)
