"""What each command does once its arguments are parsed, and the error boundary around it.

The Typer app builds an ``Invocation`` and calls :func:`run_invocation`; that
is the only place a one-shot command computes (via ``gradcalc.api``) and
chooses an output (Rich text, or strict JSON from ``gradcalc.jsonio``). Every
exception is caught here: formula problems exit 1 with a caret and a hint (or
a JSON error object), usage problems exit 2, a closed pipe ends quietly, and
a bug prints one "internal error" line, never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

from gradcalc.cli.inputs import Invocation, UsageProblem, make_limits, read_formula
from gradcalc.errors import FormulaError
from gradcalc.limits import rehint

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from gradcalc.limits import Limits

EXIT_OK, EXIT_FORMULA, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RENDERED_SUFFIXES = {".svg", ".png", ".pdf"}
FORMAT_SUFFIXES = {
    ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".json": "json",
    ".svg": "svg", ".png": "png", ".pdf": "pdf",
}  # fmt: skip
"""``graph -o NAME`` without ``--format``: the text format the file's suffix names."""


def run_invocation(inv: Invocation) -> int:
    """Run one one-shot command; returns its exit code."""
    json_errors = inv.json or (inv.command == "graph" and inv.format == "json")
    watchdog = _watchdog(inv.make_limits().timeout, json_errors)
    try:
        return guarded(lambda: _run(inv), json_errors=json_errors)
    finally:
        watchdog.cancel()


HARD_STOP_GRACE = 2.0
"""Seconds past ``--timeout`` before the watchdog ends the process (the run's own checks,
between operations, normally stop it at the timeout)."""


def _watchdog(timeout: float, json_errors: bool) -> Any:
    """The hard backstop of ``--timeout``: a thread that, if the command is still running
    ``HARD_STOP_GRACE`` seconds after its timeout (inside one long NumPy call, which no
    check interrupts; NumPy lets other threads run meanwhile), writes the timeout's error
    and ends the process with exit code 1."""
    from gradcalc.limits import end_process, limit_error

    error = limit_error(
        "timeout",
        f"the run took more than {timeout:,} second{'s' * (timeout != 1)} "
        "(stopped inside one long computation)",
        "is a tensor larger than intended?",
    )
    if json_errors:
        import json

        text, fd = json.dumps({"error": error.to_json()}) + "\n", 1
    else:
        text, fd = f"{error}\n", 2

    return _Watchdog(timeout + HARD_STOP_GRACE, end_process, (EXIT_FORMULA, fd, text))


class _Watchdog:
    """Calls ``action(*args)`` after ``seconds`` unless cancelled first, from a thread of
    ``_thread``'s: ``threading.Timer.start`` waits until the new thread runs (0.2 ms on a
    quiet machine, milliseconds on a busy one, on every command), this does not. Like a
    daemon thread, it does not keep the process alive."""

    __slots__ = ("_cancelled",)

    def __init__(self, seconds: float, action: Callable[..., Any], args: tuple) -> None:
        import _thread

        self._cancelled = _thread.allocate_lock()
        self._cancelled.acquire()
        _thread.start_new_thread(self._watch, (seconds, action, args))

    def _watch(self, seconds: float, action: Callable[..., Any], args: tuple) -> None:
        if not self._cancelled.acquire(timeout=seconds):
            action(*args)

    def cancel(self) -> None:
        if self._cancelled.locked():  # (held from __init__ until released here)
            self._cancelled.release()


def guarded(action: Callable[[], int], *, json_errors: bool = False) -> int:
    """Run ``action`` and map every exception to an exit code and a message a person can use."""
    try:
        return action()
    except UsageProblem as exc:
        return _report_usage(str(exc))
    except FormulaError as exc:
        return _report_error(exc, json_errors)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _report_error(exc, json_errors)


def silence_stdout() -> None:
    """After the reader of our output went away: point stdout at /dev/null so the final
    flush at exit cannot raise again (the recipe in Python's ``signal`` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. under a test runner)
        pass


def _report_usage(message: str) -> int:
    sys.stderr.write(f"Usage error: {message}\nTry 'gradcalc --help' for help.\n")
    return EXIT_USAGE


def _report_error(exc: BaseException, json_errors: bool) -> int:
    from gradcalc.jsonio import dumps, error_to_json

    payload = error_to_json(exc)
    if json_errors:
        sys.stdout.write(dumps(payload) + "\n")
        sys.stdout.flush()
        return EXIT_FORMULA
    from gradcalc.cli.plain import write_error

    body = payload["error"]
    if body.get("internal"):
        sys.stderr.write(f"gradcalc: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FORMULA
    shown = exc if isinstance(exc, FormulaError) else _as_formula_error(body)
    if write_error(shown, sys.stderr):  # no colour: the same text without importing Rich
        return EXIT_FORMULA
    from gradcalc.cli.render import error_text, make_console

    console = make_console(sys.stderr)
    console.print(error_text(shown, console.width), soft_wrap=not console.is_terminal)
    return EXIT_FORMULA


def _as_formula_error(body: dict) -> FormulaError:
    error = FormulaError(body["message"])
    error.kind = body["type"]
    return error


# ---------------------------------------------------------------- commands


def _run(inv: Invocation) -> int:
    from gradcalc import api
    from gradcalc.jsonio import dumps, result_to_json

    formula = read_formula(inv.formula)
    common: dict[str, Any] = {
        "bindings": inv.bindings,
        "of": inv.of,
        "dtype": inv.dtype,
        "seed": inv.seed,
        "limits": inv.make_limits(),
    }
    if inv.command == "explain":
        return _write_explanation(formula, inv, common)
    if inv.command == "diff":
        return _write_derivatives(formula, inv)
    if inv.command in ("grad", "eval", "graph"):
        grad = inv.command != "eval"
        common |= {
            "wrt": inv.wrt if grad else [],
            "grad_output": inv.grad_output if grad else None,
            "check": inv.check and grad,
            "graph": inv.graph or inv.command == "graph",
        }
        if inv.check and grad:
            common["check_tolerance"] = inv.check_tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's floating-point warnings: results say it
        if inv.json and inv.command in ("grad", "eval"):
            payload = api.evaluate_json(formula, **common)
            _write(dumps(payload) + "\n")
            return EXIT_FORMULA if payload.get("check_passed") is False else EXIT_OK
        if inv.command == "jacobian":
            result = api.jacobian(formula, wrt=inv.wrt, **common)
        elif inv.command == "hessian":
            result = api.hessian(formula, wrt=inv.wrt, **common)
        else:
            result = api.evaluate(formula, **common)
    if inv.command == "graph":
        return _write_graph(result, inv)
    failed = EXIT_FORMULA if result.check_passed is False else EXIT_OK  # --check: a mismatch
    if inv.json:
        _write(dumps(result_to_json(result)) + "\n")
        return failed
    from gradcalc.cli.plain import write_result

    graph = result.graph if inv.graph else None
    if write_result(result, sys.stdout, command=inv.command, with_check=inv.check, graph=graph):
        return failed  # no colour: the same text without importing Rich
    from gradcalc.cli.render import graph_tree, make_console, print_result

    console = make_console(sys.stdout)
    print_result(result, console, command=inv.command, with_check=inv.check)
    if inv.graph and result.graph is not None:
        console.print(graph_tree(result.graph))
    sys.stdout.flush()
    return failed


def _write_derivatives(formula: str, inv: Invocation) -> int:
    """``gradcalc diff``: plain text (no Rich: formulas need no table) or JSON."""
    from gradcalc import api
    from gradcalc.jsonio import derivatives_to_json, dumps

    if inv.simplify not in api.SIMPLIFIERS:
        raise UsageProblem(f"--simplify takes gradcalc or sympy, not {inv.simplify!r}")
    if inv.simplify == "sympy":
        import importlib.util

        if importlib.util.find_spec("sympy") is None:
            raise UsageProblem(
                "--simplify sympy needs SymPy, which is not installed: "
                "pip install 'gradcalc[sympy]', or leave --simplify out"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's floating-point warnings
        found = api.derivatives(
            formula,
            inv.bindings,
            wrt=inv.wrt,
            dtype=inv.dtype,
            limits=inv.make_limits(),
            simplify=inv.simplify,
        )
    if inv.json:
        _write(dumps(derivatives_to_json(found)) + "\n")
    else:
        _write("".join(line + "\n" for line in found.lines()))
    return EXIT_OK


def _write_explanation(formula: str, inv: Invocation, common: dict[str, Any]) -> int:
    from gradcalc.explain import explain
    from gradcalc.jsonio import dumps, explanation_to_json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's floating-point warnings: results say it
        explanation = explain(formula, wrt=inv.wrt, **common)
    if inv.json:
        _write(dumps(explanation_to_json(explanation)) + "\n")
        return EXIT_OK
    from gradcalc.cli.render import explanation_view, make_console

    console = make_console(sys.stdout)
    console.print(explanation_view(explanation, console.width))
    sys.stdout.flush()
    return EXIT_OK


def _write_graph(result: Any, inv: Invocation) -> int:
    from pathlib import Path

    from gradcalc import graph
    from gradcalc.jsonio import dumps, graph_to_json

    assert result.graph is not None
    target = Path(inv.output) if inv.output else None
    fmt = inv.format
    if fmt == "tree" and target is not None:
        fmt = FORMAT_SUFFIXES.get(target.suffix.lower(), fmt)
    if f".{fmt}" in RENDERED_SUFFIXES:
        if target is None and fmt != "svg":
            raise UsageProblem(f"--format {fmt} is a picture: give a file with -o NAME.{fmt}")
        return _render_with_dot(graph.graph_to_dot(result.graph), fmt, target)
    if fmt == "tree":
        if target is not None:
            raise UsageProblem(
                "--output needs --format json, dot or mermaid, or a name ending in "
                ".dot, .mmd, .json, .svg, .png or .pdf"
            )
        from gradcalc.cli.plain import write_tree

        if write_tree(result.graph, sys.stdout):  # no colour: the same text without Rich
            return EXIT_OK
        from gradcalc.cli.render import graph_tree, make_console

        make_console(sys.stdout).print(graph_tree(result.graph))
        sys.stdout.flush()
        return EXIT_OK
    if fmt == "json":
        text = dumps(graph_to_json(result.graph)) + "\n"
    elif fmt == "dot":
        text = graph.graph_to_dot(result.graph)
    else:
        text = graph.graph_to_mermaid(result.graph)
    if target is None:
        _write(text)
        return EXIT_OK
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageProblem(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    return EXIT_OK


def _render_with_dot(dot_source: str, fmt: str, target: Path | None) -> int:
    """Draw the graph with Graphviz's ``dot`` into ``target`` (an SVG may go to stdout)."""
    import shutil
    import subprocess

    where = str(target) if target is not None else "standard output"
    program = shutil.which("dot")
    if program is None:
        dot_name = target.with_suffix(".dot") if target is not None else "graph.dot"
        sys.stderr.write(
            f"gradcalc: cannot write {where}: Graphviz's 'dot' program is not installed "
            "(e.g. apt-get install graphviz).\n"
            f"'--format dot --output {dot_name}' writes the DOT text instead.\n"
        )
        return EXIT_FORMULA
    into = ["-o", str(target)] if target is not None else []
    run = subprocess.run(
        [program, f"-T{fmt}", *into], input=dot_source, text=True, capture_output=True, check=False
    )
    if run.returncode != 0:
        sys.stderr.write(f"gradcalc: dot failed to write {where}: {run.stderr.strip()}\n")
        return EXIT_FORMULA
    if target is None:
        _write(run.stdout)
    return EXIT_OK


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_functions(as_json: bool) -> int:
    """``gradcalc functions``: every built-in with its signature and one-line description."""

    def action() -> int:
        from gradcalc.builtins import FUNCTIONS

        if as_json:
            from gradcalc.jsonio import dumps, functions_to_json

            _write(dumps(functions_to_json(FUNCTIONS)) + "\n")
            return EXIT_OK
        from gradcalc.cli.plain import write_functions

        if write_functions(FUNCTIONS, sys.stdout):  # no colour: the same text without Rich
            return EXIT_OK
        from gradcalc.cli.render import functions_table, make_console

        make_console(sys.stdout).print(functions_table(FUNCTIONS))
        sys.stdout.flush()
        return EXIT_OK

    return guarded(action, json_errors=as_json)


class _OutputClosed(BaseException):
    """The reader of a program's output went away (``gradcalc run prog.py | head``): not an
    error of the program, so not an Exception the interpreter would report as one."""


def _program_write(text: str) -> None:
    try:
        sys.stdout.write(text)
        if _LINE_BUFFERED[0]:
            sys.stdout.flush()
    except BrokenPipeError:
        raise _OutputClosed from None


_LINE_BUFFERED = [False]


def run_program(path: str, seed: int | None = None, limits: Limits | None = None) -> int:
    """``gradcalc run FILE``: run a program as ``python FILE`` would; only ``print`` writes
    (flushed at once on a terminal). Returns 0, or 1 at the first error (reported with
    the file's line and column)."""

    def action() -> int:
        from gradcalc import api

        source = read_program(path)
        _LINE_BUFFERED[0] = _is_terminal(sys.stdout)
        interp = api.interpreter(
            seed=seed, limits=limits or make_limits({}), program=True, write=_program_write
        )
        try:
            api.execute(interp, source)
        except _OutputClosed:
            raise BrokenPipeError from None
        except FormulaError as exc:
            rehint(exc, "cli")  # a limit is raised with this command's --max-* options
            raise
        finally:
            try:
                sys.stdout.flush()  # what it printed comes before an error's report
            except BrokenPipeError:
                silence_stdout()
        return EXIT_OK

    return guarded(action)


def read_program(path: str) -> str:
    """A program's text: standard input for ``-``, else the file."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8-sig") as handle:  # (as Python, a BOM is no character)
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageProblem(f"cannot read program file {path!r}: {reason}") from None


def run_repl(dtype: str = "float64", seed: int | None = None, limits: Limits | None = None) -> int:
    """``gradcalc repl``: a session on the terminal, or standard input replayed as one.

    Returns 0, or (piped input) 1 if an entry failed; 130 if interrupted.
    """

    def action() -> int:
        from gradcalc.cli.repl import OutputClosed, Session, run_script

        session = Session(dtype=dtype, seed=seed, limits=limits or make_limits({}))
        if not (_is_terminal(sys.stdin) and _is_terminal(sys.stdout)):
            session.script = True
            try:
                return run_script(sys.stdin or (), session)
            except OutputClosed:
                raise BrokenPipeError from None
        try:
            from gradcalc.cli.repl_prompt import interact
        except ImportError as exc:
            missing = getattr(exc, "name", None) or "a module"
            sys.stderr.write(f"gradcalc: the REPL is not available ({missing} is missing).\n")
            return EXIT_FORMULA
        return interact(session)

    return guarded(action)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
