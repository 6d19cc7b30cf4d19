"""W1 one-shot: the whole `gradcalc` process against the cheapest ways to start Python and peers.

Every command is a venv's own interpreter or console script (a pyenv shim on
PATH would add ~130 ms to each start): by default a `pip install .` copy of
the working tree built once per run (`harness.install_gradcalc`), because the
development venv's editable install adds an import finder to every start.
`-X importtime` of the same CLI run says where the start-up time goes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Any

from benchmarks.external import TORCH_ONE_SHOT
from benchmarks.harness import (
    Config,
    Report,
    attempt,
    checked_process,
    interleaved,
    run_process,
)

SEED_FORMULA = "3*a**3 - b**2"
SEED_ARGUMENTS = [SEED_FORMULA, "a=2", "b=6", "--json"]
SEED_ANSWER = {"value": -12.0, "gradients": {"a": 36.0, "b": -12.0}}
QALC_EXPRESSION = "[3*2^3 - 6^2, diff(3x^3 - 6^2, x, 1, 2), diff(3*2^3 - y^2, y, 1, 6)]"
"""The same value and both partials at a=2, b=6 (x, y: qalc reads `a`, `b` as units)."""
HEAVY_PACKAGES = ("numpy", "lark", "rich", "typer", "click", "pydantic", "prompt_toolkit")


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
    top_level = sorted((i for i in lines if i.depth == 0), key=lambda i: -i.cumulative_us)
    packages = {}
    for name in HEAVY_PACKAGES:
        roots = [i for i in lines if i.module == name]
        if roots:
            packages[name] = round(max(i.cumulative_us for i in roots) / 1000, 1)
    return {
        "total_ms": round(sum(i.self_us for i in lines) / 1000, 1),
        "modules": len(lines),
        "top_level_ms": {i.module: round(i.cumulative_us / 1000, 1) for i in top_level[:top]},
        "heavy_packages_ms": packages,
    }


def check_seed_output(stdout: str) -> None:
    answer = json.loads(stdout)
    got = {"value": answer.get("value"), "gradients": answer.get("gradients")}
    if got != SEED_ANSWER:
        raise AssertionError(f"gradcalc printed {stdout.strip()!r}, expected {SEED_ANSWER}")


def run(config: Config, report: Report) -> None:
    runs = config.runs(full=20, quick=5)
    # The installed copy's venv (`pip install .`, as users run it) for gradcalc and the
    # Python references alike, so both sides pay the same interpreter start-up.
    python = config.gradcalc_python
    script = str(config.gradcalc_script)
    if config.install_note:
        report.note("W1", config.install_note)
    else:
        report.note("W1", f"timing a `pip install .` copy: {script}")
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import numpy'": [python, "-c", "import numpy"],
        "gradcalc seed --json": [script, *SEED_ARGUMENTS],
        "gradcalc --help": [script, "--help"],
    }
    qalc = shutil.which("qalc")
    if qalc:
        commands["qalc value + both partials"] = [qalc, "-t", QALC_EXPRESSION]
    else:
        report.note("W1", "qalc is not installed (apt-get install qalc): its ratio is skipped")
    if config.torch_python:
        commands["PyTorch seed (fresh process)"] = [config.torch_python, "-c", TORCH_ONE_SHOT]
    attempt(
        report,
        "W1",
        "seed output check",
        lambda: check_seed_output(checked_process(commands["gradcalc seed --json"]).stdout),
    )
    counts = {name: runs for name in commands}
    if config.torch_python:
        counts["PyTorch seed (fresh process)"] = config.runs(full=20, quick=2)
    samples = interleaved(
        {name: lambda argv=argv: checked_process(argv) for name, argv in commands.items()},
        counts,
        report,
        "W1",
        warmup=config.runs(full=2, quick=1),
    )
    by_case = {
        name: report.measure("W1", name, [s * 1000 for s in found], "ms")
        for name, found in samples.items()
    }
    seed = by_case.get("gradcalc seed --json")
    numpy_start = by_case.get("python -c 'import numpy'")
    report.target("W1", "seed --json / import numpy", seed, numpy_start, 1.3)
    report.target(
        "W1",
        "seed --json / qalc",
        seed,
        by_case.get("qalc value + both partials"),
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
    report.target("W1", "--help / import numpy", by_case.get("gradcalc --help"), numpy_start, 1.0)

    for case, arguments in (("seed --json", SEED_ARGUMENTS), ("--help", ["--help"])):
        traced = attempt(
            report,
            "W1",
            f"importtime {case}",
            lambda arguments=arguments: run_process(
                [python, "-X", "importtime", script, *arguments]
            ),
        )
        if traced is None:
            continue
        summary = summarise_imports(parse_importtime(traced.stderr))
        report.details[f"W1 importtime {case}"] = summary
        heavy = ", ".join(f"{k} {v} ms" for k, v in summary["heavy_packages_ms"].items()) or "none"
        top = ", ".join(f"{k} {v}" for k, v in list(summary["top_level_ms"].items())[:5])
        report.note(
            "W1",
            f"-X importtime `gradcalc {case}`: {summary['modules']} modules, "
            f"{summary['total_ms']} ms of imports; heavy: {heavy}; top-level ms: {top}",
        )
