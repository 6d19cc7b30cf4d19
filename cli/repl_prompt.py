"""The REPL on a terminal: prompt_toolkit line editing around a :class:`~gradcalc.cli.repl.Session`.

History persists in ``$XDG_STATE_HOME/gradcalc/history`` (in memory when that
cannot be written); Tab completes names, built-in functions, methods after a
``.`` and ``:commands``, or indents on an empty line; Python's Pygments lexer
colours the input; Ctrl-R searches the history (prompt_toolkit's own binding).
Imported only when a session starts on a terminal.

Issue 12 wants the first prompt within 1.5x ``python -c "import numpy"``, and
prompt_toolkit's own import is about that much already. So nothing else is
loaded before the prompt is on screen: the banner is written without Rich
(:func:`write_banner`), Pygments loads at the first text to colour
(:class:`PythonColours`), and a thread started once the prompt is drawn
(:class:`_WarmUp`) loads Pygments, the engine and Rich while the person
types; completion tables load at the first Tab.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import get_app
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import Lexer, PygmentsLexer, SimpleLexer
from prompt_toolkit.output import Output

from gradcalc.cli.repl import (
    ALIASES,
    COMMANDS,
    EXIT_OK,
    INDENT,
    EntryCollector,
    Session,
)
from gradcalc.limits import resume_collector

if TYPE_CHECKING:
    from pathlib import Path

PROMPT, CONTINUATION = ">>> ", "... "
KEYWORDS = ("if", "elif", "else", "while", "for", "in", "def", "return", "pass", "break")
KEYWORDS += ("continue", "and", "or", "not", "True", "False")
CONSTANTS = ("pi", "e")
_WORD = re.compile(r"[A-Za-z_]\w*$")
BANNER = "gradcalc {version} — names persist; :help lists the commands; Ctrl-D leaves."


def history_path() -> Path:
    """``$XDG_STATE_HOME/gradcalc/history``, ``~/.local/state/gradcalc/history`` by default."""
    from pathlib import Path

    return Path(_history_file())


def _history_file() -> str:
    """`history_path` without pathlib, which nothing else imports before the first prompt."""
    base = os.environ.get("XDG_STATE_HOME", "")
    if not (base and os.path.isabs(base)):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "gradcalc", "history")


def open_history(path: Path | None = None) -> History:
    """The persistent history, or an in-memory one when its file cannot be written."""
    file = _history_file() if path is None else os.fspath(path)
    try:
        os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
        with open(file, "a", encoding="utf-8"):
            pass
    except OSError:
        return InMemoryHistory()
    return FileHistory(file)


class ReplCompleter(Completer):
    """Commands after ``:``, files after ``:load``/``:save``, methods after ``.``, else names."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        stripped = text.lstrip()
        if stripped.startswith(":"):
            command, space, rest = stripped.partition(" ")
            if not space:
                yield from self._commands(command)
            elif ALIASES.get(command, command) in (":load", ":save", ":save!"):
                yield from self._paths.get_completions(Document(rest.lstrip()), event)
            elif ALIASES.get(command, command) in (":grad", ":graph"):
                yield from self._expression(rest)
            return
        yield from self._expression(text)

    def _commands(self, typed: str) -> Iterator[Completion]:
        for name, command in COMMANDS.items():
            if name.startswith(typed):
                yield Completion(name, -len(typed), display_meta=command.doc)

    def _expression(self, text: str) -> Iterator[Completion]:
        match = _WORD.search(text)
        word = match.group(0) if match else ""
        before = text[: len(text) - len(word)].rstrip()
        after_dot = before.endswith(".")
        module = _MODULE_PATH.search(before) if after_dot else None
        members = _module_members(module.group(1)) if module else []
        if members:  # torch.<Tab>, F.<Tab>: the module's functions
            candidates = [(name, "torch") for name in members]
        elif after_dot:
            candidates = _attribute_names()
        else:
            candidates = _global_names(self._names())
        for name, meta in candidates:
            if name.startswith(word) and name != word:
                yield Completion(name, -len(word), display_meta=meta)


_MODULE_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.$")


def _module_members(path: str) -> list[str]:
    from gradcalc import api

    return api.module_members(path)


def _spec_meta(spec: Any) -> str:
    return str(getattr(spec, "signature", "") or getattr(spec, "doc", "") or "")


def _attribute_names() -> list[tuple[str, str]]:
    from gradcalc import builtins

    found: dict[str, str] = {}
    for table, kind in ((builtins.METHODS, "method"), (builtins.ATTRIBUTES, "attribute")):
        for name in table:
            spec = table[name] if isinstance(table, dict) else None
            found.setdefault(name, _spec_meta(spec) or kind)
    return sorted(found.items())


def _global_names(user_names: Iterable[str]) -> list[tuple[str, str]]:
    from gradcalc import builtins

    found: dict[str, str] = {name: "variable" for name in user_names}
    for name, spec in builtins.FUNCTIONS.items():
        found.setdefault(name, _spec_meta(spec) or "function")
    for name in CONSTANTS:
        found.setdefault(name, "constant")
    for name in KEYWORDS:
        found.setdefault(name, "keyword")
    return sorted(found.items())


def make_lexer() -> PythonColours:
    """Python's Pygments lexer (Pygments comes with Rich), loaded at the first text to colour;
    no colouring if Pygments is missing."""
    return PythonColours()


class PythonColours(Lexer):
    """Python's Pygments lexer, loaded when there is text to colour (or by the warm-up).

    The first prompt shows an empty line, which needs no lexer; loading Pygments'
    Python lexer (importing it and compiling its patterns) costs ~10 ms of the start.
    """

    def __init__(self) -> None:
        self._lexer: Lexer | None = None
        self._lock = threading.Lock()

    def load(self) -> Lexer:
        """The Pygments lexer (a lexer that colours nothing if Pygments is missing)."""
        with self._lock:
            if self._lexer is None:
                try:
                    from pygments.lexers.python import PythonLexer
                except ImportError:
                    self._lexer = SimpleLexer()
                else:
                    self._lexer = PygmentsLexer(PythonLexer)
            return self._lexer

    def lex_document(self, document: Document) -> Callable[[int], StyleAndTextTuples]:
        if self._lexer is None and not document.text:
            return _no_colours
        return self.load().lex_document(document)


def _no_colours(lineno: int) -> StyleAndTextTuples:
    return []


def write_banner(session: Session) -> None:
    """The banner, as ``session.note`` prints it: dim on a colour terminal, else plain.

    Written without Rich when it certainly fits on one line (Rich, with
    ``gradcalc.cli.render``, costs ~25 ms before the first prompt); else by Rich,
    which wraps it. ``tests/test_repl_prompt.py`` checks both write the same bytes.
    """
    from gradcalc import __version__

    text = BANNER.format(version=__version__)
    stream = session.stdout or sys.stdout
    if sys.platform == "win32" or len(text) >= _narrowest_width():
        session.note(text)
        return
    if _dim(stream):
        text = f"\x1b[2m{text}\x1b[0m"
    stream.write(text + "\n")
    stream.flush()


def _dim(stream: Any) -> bool:
    """Whether Rich, as ``gradcalc.cli.render.make_console`` sets it up, would style the text:
    a terminal, ``NO_COLOR`` unset, and a ``TERM`` that is not dumb."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        terminal = bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
    return terminal and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def _narrowest_width() -> int:
    """The narrowest of the widths Rich's console may take: ``$COLUMNS``, 80 (a dumb terminal,
    or no terminal), or the terminal's."""
    widths = [80]
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        widths.append(int(columns))
    for fd in (0, 1, 2):
        try:
            widths.append(os.get_terminal_size(fd).columns or 80)
        except (AttributeError, ValueError, OSError):
            continue
        break
    return min(widths)


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @Condition
    def at_line_start() -> bool:
        return not get_app().current_buffer.document.current_line_before_cursor.strip()

    @bindings.add("tab", filter=at_line_start)
    def _indent(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text(INDENT)

    return bindings


def make_prompt_session(
    session: Session,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
) -> PromptSession:
    return PromptSession(
        input=input,
        output=output,
        history=history if history is not None else open_history(),
        completer=ReplCompleter(lambda: list(session.names)),
        complete_while_typing=False,
        auto_suggest=AutoSuggestFromHistory(),
        lexer=make_lexer(),
        key_bindings=_key_bindings(),
    )


def interact(
    session: Session,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
    banner: bool = True,
) -> int:
    """Read, run and print until Ctrl-D or ``:quit``; Ctrl-C clears the line or stops an entry."""
    prompt = make_prompt_session(session, input=input, output=output, history=history)
    warm_up = _WarmUp(prompt.lexer)
    prompt.app.after_render += warm_up.start
    collector = EntryCollector()
    if banner:
        write_banner(session)
    while not session.quit:
        try:
            line = prompt.prompt(
                CONTINUATION if collector.pending else PROMPT,
                default=collector.continuation_indent(),
            )
        except KeyboardInterrupt:
            collector.reset()
            continue
        except EOFError:
            break
        for entry in collector.feed(line):
            try:
                session.run(entry)
            except KeyboardInterrupt:
                session.failures += 1
                session.note("KeyboardInterrupt: the entry was stopped; every name is as before")
            if session.quit:
                break
    warm_up.join(timeout=5.0)  # never leave an import half done at exit
    return EXIT_OK


class _WarmUp:
    """Loads what the first keys and the first entry need while the first prompt waits.

    Started once the prompt is drawn (prompt_toolkit's ``after_render``), never
    before: an import holds the GIL, so loading sooner would only delay the
    prompt. First Pygments (the first key colours the line), then the
    interpreter and the engine (the first entry runs them), then Rich (it
    prints the first value); a person types slower than this loads (~100 ms).
    An entry typed sooner waits on the import lock for what is left, so nothing
    is imported twice or half.
    """

    def __init__(self, lexer: Lexer | None) -> None:
        self._lexer = lexer
        self._thread: threading.Thread | None = None

    def start(self, _app: object = None) -> None:
        resume_collector()  # the prompt is on screen (`gradcalc.cli.main.main` paused it)
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="gradcalc-warm-up", daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _load(self) -> None:
        with contextlib.suppress(Exception):  # the first key or entry will report a real problem
            if isinstance(self._lexer, PythonColours):
                self._lexer.load()
            from gradcalc import api

            api.interpreter()  # imports the interpreter, its built-ins and the engine
            from gradcalc.cli import render  # noqa: F401  (Rich: the first value printed)
