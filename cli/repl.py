"""The interactive session: ``gradcalc repl``, and bare ``gradcalc`` on a terminal.

One :class:`Session` holds one interpreter for the whole session, so names
persist from entry to entry and ``backward`` accumulates into the leaves'
``.grad`` exactly as PyTorch does. Input arrives as lines; an
:class:`EntryCollector` groups them into entries (a line, a bracketed
continuation, or a ``def``/``if``/``while``/``for`` block finished by a blank
line), the same way on a terminal and from a pipe. On a terminal the lines
come from prompt_toolkit (``gradcalc.cli.repl_prompt``); otherwise they are
read from standard input and the exit code says whether every entry worked.

Values print as the engine prints tensors (PyTorch's ``tensor(36.)``
notation). Everything an entry computes goes through ``gradcalc.api``
(``execute``, ``differentiate``); ``:grad``/``:graph`` and errors reuse the
command line's Rich renderers, and ``:json`` mode the one JSON encoding
(``gradcalc.jsonio``). ``gradcalc.cli.run.run_repl`` starts a session.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from gradcalc.errors import FormulaError, FormulaValueError, LimitError
from gradcalc.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from pathlib import Path  # (imported where used: not before the first prompt)

    from rich.console import Console, RenderableType

EXIT_OK, EXIT_FAILED = 0, 1
INDENT = "    "
BLOCK_KEYWORDS = ("if", "elif", "else", "while", "for", "def", "with")
"""A line starting with one of these opens a block that a blank line finishes (as in Python)."""
CONTINUATION_KEYWORDS = ("elif", "else")
"""Unindented lines that continue a block instead of starting a new statement."""
DEDENT_KEYWORDS = ("return", "pass", "break", "continue")
"""After these a block's body usually ends, so the next line is offered one level out."""
LABEL_MAX_CHARS = 32
LOAD_MAX_BYTES = 10_000_000
"""``:load`` refuses bigger files: a session file is a program, not data."""
"""An expression shorter than this labels its ``:grad`` output; longer ones are "value"."""


# ---------------------------------------------------------------- grouping lines into entries


@dataclass(slots=True)
class Entry:
    """What the session runs at once: a command, a statement, or a whole block."""

    text: str
    line: int
    """1-based number of the input line it starts on."""

    @property
    def is_command(self) -> bool:
        return self.text.startswith(":")


def _scan(text: str) -> tuple[int, bool, list[int]]:
    """Brackets still open at the end of ``text`` (an unfinished triple-quoted string counts
    as one), whether it ends inside such a string, and where each line's comment starts
    (-1: none): a ``#`` or bracket inside a string is text."""
    depth, quote, comments = 0, "", []
    index, size, comment = 0, len(text), -1
    line_start = 0
    while index < size:
        char = text[index]
        if quote:
            if char == "\\":
                index += 2
                continue
            if text.startswith(quote, index):
                index += len(quote)
                quote = ""
                continue
            if char == "\n" and len(quote) == 1:
                quote = ""  # an unterminated one-line string ends with its line
        elif char in "'\"":
            quote = (
                text[index : index + 3] if text[index : index + 3] in ("'" * 3, '"' * 3) else char
            )
            index += len(quote)
            continue
        elif char == "#":
            comment = index - line_start
            end = text.find("\n", index)
            index = size if end < 0 else end
            continue
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "\n":
            comments.append(comment)
            comment, line_start = -1, index + 1
        index += 1
    comments.append(comment)
    in_string = len(quote) == 3
    return depth + in_string, in_string, comments


def _code_part(line: str) -> str:
    """The line without a trailing ``# comment`` (one inside a string is no comment)."""
    start = _scan(line)[2][0]
    return (line if start < 0 else line[:start]).rstrip()


def _open_brackets(text: str) -> int:
    return _scan(text)[0]


def _first_word(line: str) -> str:
    match = re.match(r"\s*([A-Za-z_]\w*)", line)
    return match.group(1) if match else ""


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


class EntryCollector:
    """Groups input lines into entries, for the prompt and for piped input alike.

    A line is an entry by itself unless its brackets are still open, it ends
    with ``:``, or it starts with a block keyword; then lines are gathered
    until a blank line, or an unindented line that is neither ``elif``,
    ``else`` nor a comment (which then starts the next entry).
    """

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._start = 0
        self._in_block = False
        self._line_number = 0

    @property
    def pending(self) -> bool:
        return bool(self._lines)

    def reset(self) -> None:
        """Drop a half-typed entry (Ctrl-C at a continuation prompt)."""
        self._lines.clear()
        self._in_block = False

    def feed(self, line: str) -> list[Entry]:
        """Add one input line; return the entries it completed (zero, one or two)."""
        self._line_number += 1
        line = line.rstrip("\r\n")
        done: list[Entry] = []
        if self._in_block and self._ends_block(line):
            done.append(self._finish())
        if not line.strip() and not self._lines:
            return done
        if not self._lines:
            if line.lstrip().startswith(":"):
                done.append(Entry(line.strip(), self._line_number))
                return done
            self._start = self._line_number
        self._lines.append(line)
        text = "\n".join(self._lines)
        if self._in_block or _open_brackets(text) > 0:
            return done
        first = self._lines[0]
        if _code_part(line).endswith(":") or _first_word(first) in BLOCK_KEYWORDS:
            self._in_block = True
            return done
        done.append(self._finish())
        return done

    def flush(self) -> Entry | None:
        """The pending entry at the end of the input, if any."""
        return self._finish() if self._lines else None

    def continuation_indent(self) -> str:
        """The indentation offered on the next line of a pending entry (auto-indentation)."""
        if not self._lines:
            return ""
        last = next((ln for ln in reversed(self._lines) if ln.strip()), "")
        indent = _indent_of(last)
        if _open_brackets("\n".join(self._lines)) > 0:
            return indent
        code = _code_part(last)
        if code.endswith(":"):
            return indent + INDENT
        if _first_word(code) in DEDENT_KEYWORDS:
            return indent[: max(len(indent) - len(INDENT), 0)]
        return indent

    def _ends_block(self, line: str) -> bool:
        if _open_brackets("\n".join(self._lines)) > 0:
            return False
        if not line.strip():
            return True
        if line[0] in " \t" or line.lstrip().startswith("#"):
            return False
        return _first_word(line) not in CONTINUATION_KEYWORDS

    def _finish(self) -> Entry:
        entry = Entry("\n".join(self._lines), self._start)
        self.reset()
        return entry


# ---------------------------------------------------------------- the session


@dataclass(slots=True)
class Command:
    run: Callable[[Session, str], bool]
    usage: str
    doc: str


class OutputClosed(BaseException):
    """The reader of the session's output went away (``gradcalc repl < f | head``) while a
    program printed: no error of the program, so not an Exception its run would report."""


@dataclass(slots=True)
class Session:
    """One interpreter, the entries that defined its state, and where output goes.

    ``run`` takes an :class:`Entry` and returns whether it worked; it never
    raises except ``KeyboardInterrupt`` (which leaves every name as it was).
    """

    dtype: str = "float64"
    seed: int | None = None
    limits: Limits = DEFAULT_LIMITS
    stdout: IO[str] | None = None
    stderr: IO[str] | None = None
    script: bool = False
    """Reading piped input: errors name the input line they come from."""
    json: bool = False
    definitions: list[str] = field(default_factory=list)
    """Successful code entries that change state, in order: what ``:save`` writes."""
    failures: int = 0
    quit: bool = False
    program: bool = False
    """Python's values (`gradcalc run`'s language): from the first ``import torch`` on."""
    _interp: Any = None
    """The session's interpreter (``gradcalc.api.interpreter``), made at first use."""
    _out: Console | None = None
    _err: Console | None = None

    # -- plumbing

    @property
    def interp(self) -> Any:
        if self._interp is None:
            from gradcalc import api

            self._interp = api.interpreter(
                dtype=self.dtype,
                seed=self.seed,
                limits=self.limits,
                program=self.program,
                write=self._write,
            )
        return self._interp

    def _write(self, text: str) -> None:
        """Where ``print`` writes: the session's output, at once."""
        stream = self.stdout or sys.stdout
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def _to_program(self) -> None:
        """From a formula session to a program one (an entry imports torch): the names stay."""
        names = dict(self.names)
        self.program = True
        self._interp = None
        self.interp.env.update(names)

    @property
    def names(self) -> dict[str, Any]:
        """The user's names and what they hold (empty before the first entry)."""
        return {} if self._interp is None else self._interp.env

    @property
    def out(self) -> Console:
        if self._out is None:
            from gradcalc.cli.render import make_console

            self._out = make_console(self.stdout or sys.stdout)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from gradcalc.cli.render import make_console

            self._err = make_console(self.stderr or sys.stderr)
        return self._err

    def print(self, renderable: RenderableType) -> None:
        self.out.print(renderable)
        self.out.file.flush()

    def write_json(self, payload: dict) -> None:
        from gradcalc.jsonio import dumps

        stream = self.stdout or sys.stdout
        stream.write(dumps(payload) + "\n")
        stream.flush()

    def note(self, message: str) -> None:
        from rich.text import Text

        self.print(Text(message, style="dim"))

    # -- running entries

    def run(self, entry: Entry) -> bool:
        """Run one entry, print what it shows, count it if it failed."""
        ok = self._run_command(entry) if entry.is_command else self.run_code(entry)
        if not ok:
            self.failures += 1
        return ok

    def run_code(self, entry: Entry, *, remember: bool = True, file: str | None = None) -> bool:
        """Run a code entry (not a ``:command``); remembered for ``:save`` when it changes
        state. ``file``: the entry is that file's text (``:load``), errors name it."""
        from gradcalc import api

        if not self.program and _IMPORTS_TORCH.search(entry.text):
            self._to_program()
        try:
            outcome = api.execute(self.interp, entry.text)
        except Exception as exc:  # FormulaError, or a bug: reported, never a traceback
            self.report(exc, entry, file=file)
            return False
        if remember and _changes_state(entry.text):
            self.definitions.append(entry.text)
        if outcome.name is None and outcome.value is not None:
            self.show_value(outcome.value)
        if not self.program and not self.json:
            for note in api.formula_notes(entry.text, self.limits):
                self.note(f"note: {note}")
        return True

    def show_value(self, value: Any) -> None:
        """An expression's value: the engine's PyTorch-style repr, or JSON in ``:json`` mode."""
        if self.json:
            from gradcalc.jsonio import value_to_json

            self.write_json(value_to_json(value))
            return
        from rich.text import Text

        self.print(Text(self.interp.show(value) if self.program else _value_text(value)))

    def report(
        self, exc: BaseException, entry: Entry | None = None, file: str | None = None
    ) -> None:
        """A failure: the error with caret and hint (stderr), or a JSON error object (stdout).
        Its line is the piped input's when reading a script, the file's (named) for
        ``:load FILE``."""
        from gradcalc.jsonio import error_to_json

        if self.json:
            payload = error_to_json(exc)
            if file is not None:
                payload["error"]["file"] = file
            elif self.script and entry is not None and "line" in payload["error"]:
                payload["error"]["line"] += entry.line - 1
            self.write_json(payload)
            return
        from gradcalc.cli.render import error_text

        shown = exc if isinstance(exc, FormulaError) else _as_formula_error(exc)
        if file is not None:
            shown = copy.copy(shown)
            shown.file = file  # type: ignore[attr-defined]
        elif self.script and entry is not None:
            shown = _shift_lines(shown, entry.line - 1)
        self.err.print(error_text(shown))
        self.err.file.flush()

    def fail(self, message: str, hint: str | None = None) -> bool:
        """Report a problem with a command (not with a formula) and return False."""
        self.report(FormulaValueError(message, hint=hint))
        return False

    def _run_command(self, entry: Entry) -> bool:
        name, _, argument = entry.text.partition(" ")
        command = COMMANDS.get(ALIASES.get(name, name))
        if command is None:
            return self.fail(f"unknown command '{name}'", hint=":help lists the commands")
        try:
            return command.run(self, argument.strip())
        except Exception as exc:
            self.report(exc, entry)
            return False

    def reset(self) -> None:
        """Forget every name and every remembered definition (and Python mode)."""
        self._interp = None
        self.program = False
        self.definitions.clear()


_IMPORTS_TORCH = re.compile(r"^[ \t]*(?:import|from)[ \t]+(?:torch|gradcalc)\b", re.M)
"""An entry that imports torch turns the session into `gradcalc run`'s language (Python's
values: ``2`` is an int, ``torch.tensor(...)`` makes tensors, ``print`` prints)."""


def _as_formula_error(exc: BaseException) -> FormulaError:
    from gradcalc.jsonio import error_to_json

    body = error_to_json(exc)["error"]
    error = FormulaError(body["message"])
    error.kind = body["type"]
    return error


def _shift_lines(exc: FormulaError, offset: int) -> FormulaError:
    """The error as seen from the whole piped input rather than from its entry.

    Its caret line still comes from the entry: padding the source with ``offset``
    newlines instead made each error cost time in proportion to its line number.
    """
    if offset == 0 or exc.line is None:
        return exc
    text = exc.source_line()
    shifted = copy.copy(exc)
    shifted.line = exc.line + offset
    shifted.source_line = lambda: text  # type: ignore[method-assign]
    return shifted


def _label(source: str) -> str:
    text = " ".join(source.split())
    return text if len(text) <= LABEL_MAX_CHARS else "value"


_INSPECTION = re.compile(r"\s*[A-Za-z_]\w*(\s*\.\s*[A-Za-z_]\w*)*\s*(#.*)?")


def _changes_state(source: str) -> bool:
    """False for a look at a name (``a``, ``a.grad``): ``:save`` leaves those out."""
    return not all(_INSPECTION.fullmatch(part) for part in source.replace(";", "\n").splitlines())


def _value_text(value: Any) -> str:
    """What Python's REPL shows: the repr (tensors print as PyTorch prints them)."""
    return repr(value)


# ---------------------------------------------------------------- commands


def _cmd_grad(session: Session, argument: str) -> bool:
    if not argument:
        return session.fail("':grad' needs an expression", hint="e.g. :grad 3*a**3 - b**2")
    from gradcalc import api

    result = api.differentiate(session.interp, argument, label=_label(argument))
    if session.json:
        from gradcalc.jsonio import result_to_json

        session.write_json(result_to_json(result))
        return True
    from gradcalc.cli.render import print_result

    print_result(result, session.out, command="grad", with_check=False)
    session.out.file.flush()
    return True


def _cmd_graph(session: Session, argument: str) -> bool:
    if not argument:
        return session.fail("':graph' needs an expression", hint="e.g. :graph 3*a**3 - b**2")
    from gradcalc import api

    graph = api.differentiate(session.interp, argument, graph=True).graph
    assert graph is not None
    if session.json:
        from gradcalc.jsonio import SCHEMA_VERSION, graph_to_json

        session.write_json({"schema_version": SCHEMA_VERSION, "graph": graph_to_json(graph)})
        return True
    from gradcalc.cli.render import graph_tree

    session.print(graph_tree(graph))
    if any(node.value is None for node in graph.nodes):
        session.note(
            "operations computed by earlier entries show no values; "
            "give :graph the formula itself to see every value and gradient"
        )
    return True


def _cmd_explain(session: Session, argument: str) -> bool:
    if not argument:
        return session.fail("':explain' needs an expression", hint="e.g. :explain 3*a**3 - b**2")
    from gradcalc import api
    from gradcalc.explain import explain_result

    explanation = explain_result(api.differentiate(session.interp, argument, graph=True))
    if session.json:
        from gradcalc.jsonio import explanation_to_json

        session.write_json(explanation_to_json(explanation))
        return True
    from gradcalc.cli.render import explanation_view

    session.print(explanation_view(explanation, session.out.width))
    if any(step.value is None for step in explanation.forward):
        session.note(
            "operations computed by earlier entries are not shown step by step; "
            "give :explain the formula itself to see every step"
        )
    return True


def _cmd_diff(session: Session, argument: str) -> bool:
    if not argument:
        return session.fail("':diff' needs an expression", hint="e.g. :diff 3*a**3 - b**2 a")
    from gradcalc import api

    source, wrt = api.split_names(argument)
    found = api.derivatives_in(session.interp, source, wrt)
    if session.json:
        from gradcalc.jsonio import derivatives_to_json

        session.write_json(derivatives_to_json(found))
        return True
    from rich.text import Text

    for line in found.lines():
        if line.startswith("note: "):
            session.note(line[len("note: ") :])
        else:
            session.print(Text(line))
    return True


def _cmd_vars(session: Session, argument: str) -> bool:
    names = session.names
    if session.json:
        from gradcalc.jsonio import variables_to_json

        session.write_json(variables_to_json(names))
        return True
    if not names:
        session.note("no names yet: assign one, e.g. a = 2")
        return True
    session.print(_vars_table(names))
    return True


def _vars_table(names: Mapping[str, Any]) -> RenderableType:
    import numpy as np
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from gradcalc import Tensor
    from gradcalc.cli.render import shape_text
    from gradcalc.graph import short_text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("shape", style="dim", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column(".grad", overflow="fold")
    table.add_column("kind", style="dim")
    for name, value in names.items():
        if not isinstance(value, Tensor):
            table.add_row(
                Text(name), Text(""), Text(_value_text(value)), Text(""), Text(_kind(value))
            )
            continue
        data = np.asarray(value)
        grad = value.grad
        if value.grad_fn is not None:
            kind = value.grad_fn.name()
        elif value.requires_grad:
            kind = "leaf, requires grad"
        else:
            kind = "constant"
        table.add_row(
            Text(name),
            Text(shape_text(tuple(data.shape))),
            Text(short_text(data), style="cyan"),
            Text("None" if grad is None else short_text(np.asarray(grad)), style="magenta"),
            Text(kind),
        )
    return table


def _kind(value: Any) -> str:
    from gradcalc.builtins import kind_of

    return kind_of(value).removeprefix("a ").removeprefix("the ")


def _cmd_reset(session: Session, argument: str) -> bool:
    session.reset()
    session.note("every name is gone; a fresh session")
    return True


def _cmd_load(session: Session, argument: str) -> bool:
    if not argument:
        return session.fail("':load' needs a file name", hint="e.g. :load session.gc")
    from pathlib import Path  # (not before the first prompt)

    try:
        data = _read_program(Path(argument).expanduser(), argument)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return session.fail(f"cannot read {argument}: {getattr(exc, 'strerror', None) or exc}")
    ok = session.run_code(Entry(text, 1), remember=False, file=argument)
    if ok:
        session.definitions.append(text.rstrip("\n"))
        session.note(f"loaded {argument}")
    return ok


def _read_program(path: Path, shown: str) -> bytes:
    """A regular file's bytes, at most ``LOAD_MAX_BYTES``: checked on the open descriptor
    before reading, so ``/dev/zero``, a FIFO or a huge file cannot fill the memory
    (O_NONBLOCK: opening a FIFO nobody writes to must not hang the session)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FormulaValueError(
            f"cannot read {shown}: not a regular file ({_file_kind(info.st_mode)})",
            hint=":load runs a program file, e.g. one written by :save",
        )
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(LOAD_MAX_BYTES + 1) if info.st_size <= LOAD_MAX_BYTES else b""
    if info.st_size > LOAD_MAX_BYTES or len(data) > LOAD_MAX_BYTES:
        raise LimitError(
            f"cannot read {shown}: larger than the {_megabytes(LOAD_MAX_BYTES)} :load reads",
            hint="a session file is a program; split it, or run it with 'gradcalc @FILE'",
        )
    return data


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a device"}
    kinds |= {stat.S_ISBLK: "a device", stat.S_ISSOCK: "a socket"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a file")


def _megabytes(count: int) -> str:
    return f"{count / 1_000_000:g} MB"


def _cmd_save(session: Session, argument: str) -> bool:
    return _save(session, argument, overwrite=False)


def _cmd_save_over(session: Session, argument: str) -> bool:
    return _save(session, argument, overwrite=True)


def _save(session: Session, argument: str, *, overwrite: bool) -> bool:
    """Write the definitions whole or not at all: to a new temporary file beside the
    target, then renamed over it, so a crash leaves the old file or the new one, and a
    symbolic link at the target is refused rather than followed (nor is it replaced)."""
    command = ":save!" if overwrite else ":save"
    if not argument:
        return session.fail(f"'{command}' needs a file name", hint=f"e.g. {command} session.gc")
    from datetime import UTC, datetime  # (not before the first prompt, as tempfile, pathlib)
    from pathlib import Path

    path = Path(argument).expanduser()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = f"# gradcalc session, saved {stamp} (dtype {session.dtype}"
    header += ")" if session.seed is None else f", seed {session.seed})"
    body = "\n\n".join(session.definitions)
    text = header + "\n" + body + ("\n" if body else "")
    try:
        refusal = _refusal(path, argument, overwrite)
        if refusal is not None:
            return session.fail(*refusal)
        if not _write_whole(path, text.encode("utf-8"), overwrite=overwrite):
            return session.fail(*_exists(argument))
    except OSError as exc:
        return session.fail(f"cannot write {argument}: {exc.strerror or exc}")
    count = len(session.definitions)
    session.note(f"saved {count} entr{'y' if count == 1 else 'ies'} to {argument}")
    return True


def _exists(shown: str) -> tuple[str, str]:
    return (
        f"{shown} exists; the session was not saved",
        f":save! {shown} replaces it",
    )


def _refusal(path: Path, shown: str, overwrite: bool) -> tuple[str, str] | None:
    """Why ``path`` must not be written (message, hint), or None. ``lstat``: never follows."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return (
            f"{shown} is a symbolic link; the session was not saved",
            "give the path of the file itself, or a new name",
        )
    if not stat.S_ISREG(info.st_mode):
        return (
            f"{shown} is {_file_kind(info.st_mode)}; the session was not saved",
            "give a file name",
        )
    return None if overwrite else _exists(shown)


def _write_whole(path: Path, data: bytes, *, overwrite: bool) -> bool:
    """Write ``data`` to a temporary file in ``path``'s directory, then put it in place:
    ``os.replace`` when overwriting, else ``os.link`` (which fails if ``path`` appeared
    meanwhile). False if ``path`` exists and may not be overwritten."""
    import tempfile

    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), _mode_for(path))
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network and FAT file systems)
            if os.path.lexists(path):
                return False
            os.replace(temporary, path)
            return True
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _mode_for(path: Path) -> int:
    """An existing file keeps its permissions; a new one gets what ``open`` would give."""
    try:
        return stat.S_IMODE(os.lstat(path).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _cmd_json(session: Session, argument: str) -> bool:
    choice = argument.lower()
    if choice not in ("", "on", "off"):
        return session.fail("':json' takes 'on', 'off' or nothing (to toggle)")
    session.json = (not session.json) if not choice else choice == "on"
    if not session.json:
        session.note("JSON output off")
    else:
        session.write_json({"json": True})
    return True


def _cmd_help(session: Session, argument: str) -> bool:
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2), pad_edge=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for command in COMMANDS.values():
        table.add_row(Text(command.usage), Text(command.doc))
    session.print(Text(HELP_INTRO))
    session.print(table)
    session.print(Text(HELP_KEYS, style="dim"))
    return True


def _cmd_quit(session: Session, argument: str) -> bool:
    session.quit = True
    return True


HELP_INTRO = """\
Type statements of the formula language; names persist; an expression prints.
  a = 2; b = 6          assignments bind differentiable leaves
  P = 3*a**3 - b**2
  P.backward()          accumulates into a.grad and b.grad, as in PyTorch
  a.grad                36; zero_grad() clears every stored gradient
A line ending in ':' opens a block (def, if, while, for, with); a blank line ends it.
`import torch` switches to Python's values, as `gradcalc run` has them: paste a
PyTorch snippet (torch.tensor(...), print(...)) as it is.
Commands:"""

HELP_KEYS = """\
Tab completes names, functions, methods (after '.') and commands.
Ctrl-R searches the history; Ctrl-C clears the line or stops a running entry;
Ctrl-D leaves."""

COMMANDS: dict[str, Command] = {
    ":grad": Command(_cmd_grad, ":grad EXPR", "value and gradients w.r.t. every variable"),
    ":graph": Command(_cmd_graph, ":graph EXPR", "the operations behind EXPR, as a tree"),
    ":explain": Command(_cmd_explain, ":explain EXPR", "the chain rule behind EXPR, step by step"),
    ":diff": Command(_cmd_diff, ":diff EXPR [NAMES]", "derivatives of EXPR as formulas"),
    ":vars": Command(_cmd_vars, ":vars", "names, shapes, values and stored .grad"),
    ":reset": Command(_cmd_reset, ":reset", "forget every name"),
    ":load": Command(_cmd_load, ":load FILE", "run a program file in this session"),
    ":save": Command(_cmd_save, ":save FILE", "write this session's definitions as a program"),
    ":save!": Command(_cmd_save_over, ":save! FILE", "the same, replacing an existing FILE"),
    ":json": Command(_cmd_json, ":json [on|off]", "toggle JSON output of results"),
    ":help": Command(_cmd_help, ":help", "this help"),
    ":quit": Command(_cmd_quit, ":quit", "leave (Ctrl-D too)"),
}
ALIASES = {":q": ":quit", ":exit": ":quit", ":h": ":help", ":?": ":help"}


# ---------------------------------------------------------------- running a session


def run_script(lines: Iterable[str], session: Session) -> int:
    """Run piped input: every entry, in order, then 1 if any failed (0 otherwise)."""
    collector = EntryCollector()
    for entry in _entries(lines, collector):
        session.run(entry)
        if session.quit:
            break
    return EXIT_FAILED if session.failures else EXIT_OK


def _entries(lines: Iterable[str], collector: EntryCollector) -> Iterator[Entry]:
    for line in lines:
        yield from collector.feed(line)
    last = collector.flush()
    if last is not None:
        yield last
