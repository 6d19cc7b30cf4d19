"""Measuring, comparing and reporting: the parts every workload shares.

A workload records `Measure`s (medians of repeated samples) and `Target`s (a
ratio of two measures against the limit issue 6 sets). Ratios are only ever
taken between figures of the same run, because absolute times drift here.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
UNLIKE_USERS = ("PYTHONDONTWRITEBYTECODE",)
"""Removed from every child's environment: without bytecode caches an editable install
recompiles all of gradcalc at each start, which no installed copy does."""


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNLIKE_USERS}
    return env | (extra or {})


@dataclass
class Config:
    """What to run and where: one object handed to every workload."""

    quick: bool = False
    python: str = sys.executable
    torch_python: str | None = None
    jax_python: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gradcalc-bench-")))
    scale: float = 1.0
    """Shrinks sizes further than --quick (the smoke test runs at toy sizes)."""
    repeats: int | None = None
    """Forces every repeat count `runs` gives (the smoke test's 1)."""

    installed: bool = True
    """Time a `pip install .` copy (as users run it), built once per run in `workdir`;
    False times the console script beside `python` (an editable install here)."""
    _install_python: str | None = field(default=None, init=False, repr=False)
    install_note: str = ""

    @property
    def gradcalc_python(self) -> str:
        """The interpreter the whole-process workloads run: the installed copy's venv,
        else `python`. Its references (`python -c pass`, `import numpy`) use it too."""
        if self.installed and self._install_python is None:
            try:
                self._install_python = str(install_gradcalc(self.workdir, self.python))
            except (OSError, subprocess.CalledProcessError) as exc:
                self.installed = False
                detail = getattr(exc, "stderr", "") or str(exc)
                self.install_note = (
                    f"`pip install .` into a temporary venv failed ({str(detail)[-300:]}); "
                    "timing the editable install's script instead"
                )
        return self._install_python or self.python

    @property
    def gradcalc_script(self) -> Path:
        """The console script beside `gradcalc_python` (never a shim on PATH)."""
        return Path(self.gradcalc_python).parent / "gradcalc"

    def runs(self, full: int, quick: int) -> int:
        if self.repeats is not None:
            return self.repeats
        return quick if self.quick else full

    @property
    def warmup(self) -> int:
        """Untimed rounds before the timed ones of whole-process runs (none in smoke tests)."""
        return 0 if self.repeats is not None else 1

    def size(self, full: int, quick: int) -> int:
        return max(1, int((quick if self.quick else full) * self.scale))


INSTALL_IGNORE = (".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", "venv", "*.pyc")


def install_gradcalc(workdir: Path, base_python: str) -> Path:
    """`pip install .` of a copy of the working tree into a venv under `workdir`; its python.

    The editable install of a development venv adds an import finder that
    costs ~15 ms at every start (and imports pathlib); users run a normal
    install, so that is what W1 and W6 time. The venv reuses `base_python`'s
    site-packages for the dependencies (a path in a .pth file, whose own .pth
    files are not run), so nothing is downloaded.
    """
    import shutil

    venv = workdir / "installed-venv"
    python = venv / "bin" / "python"
    if (venv / "bin" / "gradcalc").exists():
        return python
    source = workdir / "gradcalc-src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*INSTALL_IGNORE))
    env = child_environment()
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)

    def purelib(interpreter: str | Path) -> str:
        code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        return subprocess.run(
            [str(interpreter), "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout.strip()

    Path(purelib(python), "_gradcalc_bench_dependencies.pth").write_text(
        purelib(base_python) + "\n", encoding="utf-8"
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", str(source)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return python


@dataclass
class Measure:
    workload: str
    case: str
    median: float
    unit: str
    samples: list[float]
    note: str = ""


@dataclass
class Target:
    workload: str
    label: str
    ratio: float | None
    limit: float
    lower_is_better: bool = True
    note: str = ""

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "SKIP"
        met = self.ratio <= self.limit if self.lower_is_better else self.ratio >= self.limit
        return "PASS" if met else "MISS"


@dataclass
class Report:
    measures: list[Measure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """Structured extras (import-time tables, profiles) kept for the JSON output."""

    def measure(
        self, workload: str, case: str, samples: Sequence[float], unit: str, note: str = ""
    ) -> Measure:
        found = Measure(workload, case, statistics.median(samples), unit, list(samples), note)
        self.measures.append(found)
        return found

    def target(
        self,
        workload: str,
        label: str,
        numerator: Measure | float | None,
        denominator: Measure | float | None,
        limit: float,
        *,
        lower_is_better: bool = True,
        note: str = "",
    ) -> Target:
        """Record numerator/denominator against `limit`; a missing side makes it a SKIP."""
        top = numerator.median if isinstance(numerator, Measure) else numerator
        bottom = denominator.median if isinstance(denominator, Measure) else denominator
        ratio = None if top is None or not bottom else top / bottom
        if ratio is None and not note:
            note = "a side was not measured (see the notes)"
        found = Target(workload, label, ratio, limit, lower_is_better, note)
        self.targets.append(found)
        return found

    def note(self, workload: str, text: str) -> None:
        self.notes.append(f"{workload}: {' '.join(text.split())}")

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "measures": [asdict(m) for m in self.measures],
            "targets": [asdict(t) | {"status": t.status} for t in self.targets],
            "notes": self.notes,
            "details": self.details,
        }


@dataclass
class ProcessRun:
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float | None = None
    """With watch_memory: the largest sum of resident sets over the process and its
    descendants, sampled every 20 ms. (wait4's ru_maxrss cannot serve: a child
    inherits its forking parent's high-water mark, here the benchmark's own.)"""


def _status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree_rss_kib(root: int) -> int:
    """Resident KiB of root and every descendant, found through /proc/*/task/*/children."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _status_kib(pid, "VmRSS:")
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    stack.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return total


def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin_path: Path | None = None,
    keep_output: bool = True,
    cwd: Path | None = None,
    watch_memory: bool = False,
) -> ProcessRun:
    """Time one whole process, from before fork to after reaping (optionally its memory)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        peak_kib = 0
        try:
            start = time.perf_counter()
            proc = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=out if keep_output else subprocess.DEVNULL,
                stderr=err,
                env=child_environment() if env is None else env,
                cwd=cwd,
            )
            while watch_memory:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
                if pid:
                    break
                peak_kib = max(peak_kib, _tree_rss_kib(proc.pid))
                time.sleep(0.02)
            else:
                _, status = os.waitpid(proc.pid, 0)
            seconds = time.perf_counter() - start
        finally:
            if stdin_path:
                stdin.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcessRun(
            seconds,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            peak_kib / 1024 if watch_memory else None,
        )


def checked_process(argv: Sequence[str], env: dict[str, str] | None = None) -> ProcessRun:
    """run_process, raising with the child's stderr when it fails."""
    done = run_process(argv, env=env)
    if done.returncode != 0:
        output = (done.stdout[-500:] + " " + done.stderr[-1500:]).strip()
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {output}")
    return done


def release_engine_cache() -> None:
    """Give gradcalc's kept step buffers back to malloc (``gradcalc.empty_cache``).

    Before a NumPy side runs, so it works on the heap it would have without
    gradcalc in the process; before a memory pass, so gradcalc's pass
    allocates (and is charged for) everything it uses.
    """
    import gradcalc

    empty_cache = getattr(gradcalc, "empty_cache", None)
    if empty_cache is not None:
        empty_cache()


def minor_faults() -> int:
    """Minor page faults of this process so far (pages the kernel handed it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fault_note(found: dict[str, list[int]], name: str) -> str:
    """A measure's note: the median page faults of its timed calls."""
    counts = found.get(name)
    return f"{statistics.median(counts):,.0f} page faults per call" if counts else ""


def interleaved(
    cases: dict[str, Callable[[], object]],
    repeats: int | dict[str, int],
    report: Report,
    workload: str,
    warmup: int = 1,
    settle: int = 0,
    prepare: dict[str, Callable[[], object]] | None = None,
    faults: dict[str, list[int]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each case, taken round-robin so load drifts hit every side alike.

    A case returning a `ProcessRun` is timed by that run (fork to reap); a case
    that raises is dropped with a note and the others go on. The gc stays on.
    ``settle`` untimed calls precede each timed one: with large arrays the first
    call after another side ran pays for that side's heap layout (the C
    allocator hands memory back and takes it again, page by page), which is not
    the steady state of a repeated step that the figure stands for.
    ``prepare[name]``, when given, runs untimed before that case's settling calls.
    ``faults``, when given, receives each timed call's minor page faults by case.
    """
    wanted = {name: repeats if isinstance(repeats, int) else repeats[name] for name in cases}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    alive = dict(cases)
    for index in range(warmup + max(wanted.values(), default=0)):
        for name, run in list(alive.items()):
            if index >= warmup + wanted[name]:
                continue
            gc.collect()
            try:
                if prepare and name in prepare:
                    prepare[name]()
                for _ in range(settle):
                    run()
                faulted = minor_faults()
                start = time.perf_counter()
                outcome = run()
            except Exception as exc:  # one broken side must not stop the others
                report.note(
                    workload, f"{name} not measured: {type(exc).__name__}: {str(exc)[-300:]}"
                )
                del alive[name], samples[name]
                continue
            elapsed = time.perf_counter() - start
            if faults is not None and index >= warmup:
                faults.setdefault(name, []).append(minor_faults() - faulted)
            if isinstance(outcome, ProcessRun):
                elapsed = outcome.seconds
            if index >= warmup:
                samples[name].append(elapsed)
            del outcome
    return samples


def blas_info() -> dict[str, Any]:
    """Which BLAS kernel NumPy runs, and the OpenBLAS variables that pick it."""
    import numpy as np

    info: dict[str, Any] = {name: os.environ.get(name) for name in BLAS_VARIABLES}
    try:
        from threadpoolctl import threadpool_info

        info["libraries"] = [
            {
                key: lib.get(key)
                for key in ("internal_api", "version", "architecture", "num_threads")
            }
            for lib in threadpool_info()
        ]
        return info
    except ImportError:
        pass
    np.ones((2, 2)) @ np.ones((2, 2))
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    libraries = []
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (
            ("scipy_openblas_", "64_"),
            ("scipy_openblas_", ""),
            ("openblas_", ""),
        ):
            corename = getattr(lib, f"{prefix}get_corename{suffix}", None)
            if corename is None:
                continue
            corename.restype = ctypes.c_char_p
            config = getattr(lib, f"{prefix}get_config{suffix}")
            config.restype = ctypes.c_char_p
            threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
            libraries.append(
                {
                    "internal_api": "openblas",
                    "architecture": corename().decode(),
                    "config": config().decode(),
                    "num_threads": threads(),
                    "file": Path(path).name,
                }
            )
            break
    info["libraries"] = libraries
    return info


def environment(config: Config) -> dict[str, Any]:
    import numpy as np

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    cpu = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "python": f"{platform.python_version()} ({config.python})",
        "numpy": np.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "blas": blas_info(),
        "quick": config.quick,
        "load_average": os.getloadavg(),
        "removed_from_children": {k: os.environ[k] for k in UNLIKE_USERS if k in os.environ},
        "torch_python": config.torch_python,
        "argv": sys.argv,
    }


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 100_000:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:.3g}"


def markdown(report: Report) -> str:
    """The report as Markdown tables: readable in a terminal, pasted as is into RESULTS.md."""
    lines = ["| workload | case | median | unit | runs | note |", "|---|---|---|---|---|---|"]
    for m in report.measures:
        lines.append(
            f"| {m.workload} | {m.case} | {format_number(m.median)} | {m.unit} "
            f"| {len(m.samples)} | {m.note} |"
        )
    lines += [
        "",
        "| workload | target | ratio | limit | status | note |",
        "|---|---|---|---|---|---|",
    ]
    for t in report.targets:
        sign = "≤" if t.lower_is_better else "≥"
        ratio = "-" if t.ratio is None else f"{t.ratio:.3f}" if t.ratio < 10 else f"{t.ratio:,.1f}"
        limit = f"{sign} {t.limit:g}"
        lines.append(
            f"| {t.workload} | {t.label} | {ratio} | {limit} | **{t.status}** | {t.note} |"
        )
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines)


def load_json_line(text: str) -> Any:
    """The last non-empty line of a child's stdout, as JSON (children print one result line)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the child printed nothing")
    return json.loads(lines[-1])


def external(config: Config, library: str, workload: str, **arguments: Any) -> dict[str, Any]:
    """Run a PyTorch/JAX side (benchmarks/external.py) in the interpreter that has the library."""
    python = config.torch_python if library == "torch" else config.jax_python
    if python is None:
        raise LookupError(f"{library} is not available")
    run = run_process(
        [python, "-m", "benchmarks.external", library, workload, json.dumps(arguments)], cwd=REPO
    )
    if run.returncode != 0:
        raise RuntimeError(f"{library} {workload} failed: {run.stderr[-2000:]}")
    return load_json_line(run.stdout)


def measure_references(
    config: Config,
    report: Report,
    workload: str,
    label: str,
    tolerance: float,
    **arguments: Any,
) -> None:
    """Time the PyTorch and JAX sides of one case, for each library whose interpreter is set.

    Each side runs `external` (workload ``workload.lower()``, with ``arguments``),
    must agree with NumPy within ``tolerance`` and is recorded in ms as
    ``"{library} {label}"``; a side that fails becomes a note, as with `attempt`.
    """
    for library, python in (("torch", config.torch_python), ("jax", config.jax_python)):
        if python is None:
            continue

        def reference(library: str = library) -> None:
            answer = external(config, library, workload.lower(), **arguments)
            if answer["error"] > tolerance:
                raise AssertionError(f"{library} differs from NumPy by {answer['error']:.2g}")
            note = f"{answer['threads']} threads" if "threads" in answer else "jit"
            samples = [s * 1000 for s in answer["samples"]]
            report.measure(workload, f"{library} {label}", samples, "ms", note)

        attempt(report, workload, f"{library} {label}", reference)


def relative_error(got: Any, want: Any) -> float:
    """Largest absolute difference over the largest magnitude of ``want`` (NumPy arrays)."""
    import numpy as np

    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def attempt(report: Report, workload: str, what: str, run: Callable[[], Any]) -> Any:
    """run(), or None with a note saying why: one broken side must not stop the others."""
    try:
        return run()
    except Exception as exc:  # a benchmark reports every failure and goes on
        report.note(workload, f"{what} not measured: {type(exc).__name__}: {str(exc)[-300:]}")
        return None
