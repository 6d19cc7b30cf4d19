"""The ``gradcalc`` console script (and ``python -m gradcalc``).

Start-up is most of the cost of a one-shot command, so this module imports
almost nothing: a plain ``grad``, ``eval`` or ``batch`` command line goes
straight to its runner (``gradcalc.cli.fast``); everything else, including
``--help`` and every usage error, goes through the Typer app in
``gradcalc.cli.app``.
"""

from __future__ import annotations

import sys

EXIT_FORMULA, EXIT_INTERRUPTED = 1, 130


def main(argv: list[str] | None = None) -> None:
    """Run gradcalc with ``argv`` (default: the process arguments) and exit with its code."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.exit(run(args))


def run(args: list[str]) -> int:
    """Dispatch ``args`` and return the exit code; nothing escapes as a traceback."""
    from gradcalc.cli.run import silence_stdout

    try:
        if not args and sys.stdin.isatty() and sys.stdout.isatty():
            from gradcalc.cli.run import run_repl

            return run_repl()
        from gradcalc.cli import fast

        if args and args[0] == "batch":
            options = fast.parse_batch(args[1:])
            if options is not None:
                from gradcalc.cli.batch import run_batch

                return run_batch(**options)
        invocation = fast.parse(args)
        if invocation is not None:
            from gradcalc.cli.run import run_invocation

            return run_invocation(invocation)
        return _run_typer(args)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FORMULA
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, never a traceback
        sys.stderr.write(f"gradcalc: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FORMULA


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


def version() -> str:
    """The installed version (the package metadata, or the package's own ``__version__``)."""
    import gradcalc

    known = getattr(gradcalc, "__version__", None)
    if known:
        return str(known)
    from importlib import metadata

    try:
        return metadata.version("gradcalc")
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    main()
