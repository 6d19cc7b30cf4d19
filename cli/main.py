"""The ``gradcalc`` console script (and ``python -m gradcalc``): the Typer app, and nothing escapes.

Every command line, ``--help`` and every usage error go through the Typer app
in ``gradcalc.cli.app``, except the plain one-shot formula commands,
``functions``, ``repl`` and ``batch`` (and bare ``gradcalc`` on a terminal), which
``gradcalc.cli.direct`` reads without importing Typer (its docstring says why,
with the numbers) when it understands every token. This module turns the exit
into a code and keeps tracebacks from users (a closed pipe, Ctrl-C, a bug).
"""

from __future__ import annotations

import sys

from gradcalc.limits import pause_collector, resume_collector

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from gradcalc.cli.direct import Call

EXIT_FORMULA, EXIT_INTERRUPTED = 1, 130


def main(argv: list[str] | None = None) -> None:
    """Run gradcalc with ``argv`` (default: the process arguments) and exit with its code.

    The process starts with the cyclic garbage collector paused (``gradcalc.limits.
    pause_collector`` says why), before the rest of the CLI is imported. `run` resumes
    it at once for what may run long with little work per step (a batch, a REPL reading
    a script, whatever Typer reads); a formula command's run resumes it at its first
    budget check, the REPL once its first prompt is drawn, and a short command ends
    without it: resumed at the end, it would collect once more everything the start
    allocated (~1 ms), to find no garbage. (So this is the process's entry point; code
    that goes on after a command calls `run`, which leaves the collector as it was.)"""
    pause_collector()
    args = sys.argv[1:] if argv is None else list(argv)
    sys.exit(run(args))


def run(args: list[str]) -> int:
    """Run the command line ``args`` and return the exit code; nothing escapes as a traceback."""
    from gradcalc.cli import direct
    from gradcalc.cli.run import run_invocation, silence_stdout

    try:
        invocation = direct.parse(args)
        if invocation is not None:
            return run_invocation(invocation)
        call = direct.parse_call(args)
        if call is not None:
            return _run_call(call)
        resume_collector()  # (see `main`)
        return _run_typer(args)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, never a traceback
        sys.stderr.write(f"gradcalc: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FORMULA


def _run_call(call: Call) -> int:
    """Call the runner; a batch, or a REPL reading a script, resumes the collector `main`
    paused (the REPL on a terminal resumes it once its first prompt is drawn)."""
    from gradcalc.cli import direct

    if call.runner == "run_batch_files" or (call.runner == "run_repl" and not direct.on_terminal()):
        resume_collector()
    return direct.runner(call.runner)(**call.arguments)


def _run_typer(args: list[str]) -> int:
    from gradcalc.cli.app import app

    try:
        app(args=args, prog_name="gradcalc")
    except SystemExit as done:
        code = done.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        sys.stderr.write(f"{code}\n")
        return EXIT_FORMULA
    return 0


if __name__ == "__main__":
    main()
