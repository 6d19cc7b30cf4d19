"""Formula text to the typed AST of gradcalc/syntax.py, and back.

The grammar is ``grammar/gradcalc.lark`` (Lark, LALR(1)); its rules are
reduced by one transformer, ``_ToAst``, run inline in the parser, so
building the tree is a loop and never recursion, whatever the formula's
length. A postlexer (``_PostlexerMixin`` on Lark's ``Indenter``) turns
indentation into block tokens and, in the same pass, checks bracket balance
and nesting depth, so too deep a formula is a ``LimitError`` before anything
downstream could recurse on it.

Valid input is parsed by ``_FastDriver``: Lark's parse table and terminals
for the grammar, with the transformer's methods given their children as
Lark's tree builder shapes them, run by a tighter loop than Lark's (three
times faster). Input it rejects is parsed again by Lark's parser, whose
exception ``_explain`` turns into a ``ParseError`` with a position, a
message in words and a hint. Nothing else leaves ``parse``.

The parser is built once per process, lazily. The driver's tables are plain
literals in the generated module ``gradcalc.grammar._tables`` (``table_data``
of the grammar: loading them is unmarshalling a ``.pyc``, about a
millisecond, with no Lark import and no grammar analysis). Lark's own parser
is built only when an error needs explaining: the generated standalone
module ``gradcalc.grammar._standalone``. Either generated module is used
only if it was made from the current grammar; otherwise the grammar is
analysed by the installed Lark, through its cache in the user's cache
directory. Regenerate both with ``python -m gradcalc.parser`` after editing
the grammar (a test fails until then).

``pretty`` prints an AST back as source with the fewest parentheses the
precedence table needs; it walks the tree with an explicit stack.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Callable, Iterator

from gradcalc import syntax as ast
from gradcalc.errors import LimitError, ParseError
from gradcalc.limits import DEFAULT_LIMITS, Limits

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["grammar_text", "parse", "pretty", "token_vocabulary"]


def parse(
    source: str, *, limits: Limits | None = None, max_nesting: int | None = None
) -> ast.Program:
    """Parse a formula or program into a ``syntax.Program``.

    Raises ``ParseError`` for text outside the language and ``LimitError``
    for nesting deeper than ``max_nesting`` (default ``limits.max_nesting``).
    """
    if max_nesting is None:
        max_nesting = (limits or DEFAULT_LIMITS).max_nesting
    return _run(_parser(), source, max_nesting)


def _run(parser: _Parser, source: str, max_nesting: int, fast: bool = True) -> ast.Program:
    """Parse with the fast driver; on a syntax error, let Lark's own parser explain it."""
    # A final newline closes the last statement; positions are unaffected.
    text = source + "\n"
    # The AST has no reference cycles: pausing the cyclic collector while
    # allocating it saves a third of the time on large formulas.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if fast:
            scan = _current.scan = _ScanState(max_nesting)
            try:
                return parser.fast.parse(text, parser.postlex)
            except _Rejected as rejected:
                explained = _explain_rejected(rejected, source, scan)
                if explained is not None:
                    raise explained from None
        scan = _current.scan = _ScanState(max_nesting)
        try:
            return parser.lark.parse(text)
        except parser.errors.UnexpectedInput as error:
            raise _explain(error, source, scan, parser) from None
    except (ParseError, LimitError) as error:
        raise error.at(None, None, source) from None
    except Exception as error:  # the guard: nothing but our own errors leaves parse()
        raise ParseError(
            f"the parser failed on this input ({type(error).__name__})",
            hint="simplify the formula; if it is valid, please report it",
            source=source,
        ) from None
    finally:
        _current.scan = None
        if collecting:
            gc.enable()


# ------------------------------------------------------------- the grammar


def grammar_text() -> str:
    """The grammar file's text (``gradcalc.grammar/gradcalc.lark``)."""
    from importlib import resources

    return (resources.files("gradcalc.grammar") / "gradcalc.lark").read_text(encoding="utf-8")


LARK_OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "basic", "maybe_placeholders": True}


class _Parser:
    """The fast driver with its postlexer, and Lark's parser, built when an error needs it."""

    def __init__(
        self, tables: dict[str, Any], source: str, lark: Any = None, errors: Any = None
    ) -> None:
        self.fast = _FastDriver(tables, _ToAst())
        self.postlex = _PostlexerMixin()
        self.source = source  # "tables" (generated), "lark-cache" or "lark"
        self._lark = lark
        self._errors = errors

    def _built_lark(self) -> tuple[Any, Any]:
        if self._lark is None:
            with _build_lock:
                if self._lark is None:
                    self._errors, self._lark = _lark_parser()
        return self._lark, self._errors

    @property
    def lark(self) -> Any:
        """Lark's parser for the same grammar; it explains the input the fast driver rejects."""
        return self._built_lark()[0]

    @property
    def errors(self) -> Any:
        """Where Lark's exception classes come from (the standalone module or Lark)."""
        return self._built_lark()[1]


_built: _Parser | None = None
_build_lock = threading.RLock()
_current = threading.local()


def _parser() -> _Parser:
    """Build the parser on first use and reuse it for the life of the process."""
    global _built
    if _built is None:
        with _build_lock:
            if _built is None:
                _built = _build_parser()
    return _built


def _build_parser(prefer_generated: bool = True) -> _Parser:
    """The fast driver on the generated tables, or on tables taken from Lark if they are stale."""
    if prefer_generated:
        tables = _fresh_generated("_tables")
        if tables is not None:
            return _Parser(tables.TABLES, "tables")
    lark, source = _lark_from_grammar()
    import lark as lark_module

    return _Parser(table_data(lark), source, lark, _LarkModules(lark_module.exceptions))


def _lark_parser() -> tuple[Any, Any]:
    """(the module of Lark's exceptions, a Lark parser): the standalone one if it is current."""
    standalone = _fresh_generated("_standalone")
    if standalone is not None:
        postlex = _postlexer(standalone.Indenter)
        return standalone, standalone.Lark_StandAlone(transformer=_ToAst(), postlex=postlex)
    import lark as lark_module

    return _LarkModules(lark_module.exceptions), _lark_from_grammar()[0]


def _lark_from_grammar() -> tuple[Any, str]:
    """Lark's parser analysed from the grammar file, through Lark's cache when one is writable."""
    import lark as lark_module
    from lark.indenter import Indenter

    cache = _cache_file()
    lark = lark_module.Lark(
        grammar_text(),
        **LARK_OPTIONS,
        transformer=_ToAst(),
        postlex=_postlexer(Indenter),
        cache=str(cache) if cache else False,
    )
    return lark, "lark-cache" if cache else "lark"


class _LarkModules:
    """The installed Lark's exceptions, named as in the standalone module."""

    def __init__(self, exceptions: Any) -> None:
        self.UnexpectedInput = exceptions.UnexpectedInput
        self.UnexpectedToken = exceptions.UnexpectedToken
        self.UnexpectedCharacters = exceptions.UnexpectedCharacters


def _fresh_generated(name: str) -> Any:
    """The generated module ``gradcalc.grammar.<name>``, if present and made from this grammar.

    The check reads the grammar beside the module with a plain ``open`` (importing
    importlib.resources and hashing would cost more than loading the tables).
    """
    try:
        module = __import__(f"gradcalc.grammar.{name}", fromlist=[name])
    except ImportError:
        return None
    try:
        grammar_file = os.path.join(os.path.dirname(module.__file__), "gradcalc.lark")
        with open(grammar_file, encoding="utf-8") as file:
            current = file.read()
    except OSError:  # not on a file system (a zip): trust the module
        return module
    return module if getattr(module, "GRAMMAR_TEXT", None) == current else None


def _cache_file() -> Path | None:
    """Where Lark may cache the analysed grammar, or None if no writable cache dir exists."""
    from pathlib import Path

    import lark as lark_module

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = Path(base) / "gradcalc"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK):
        return None
    version = f"lark{lark_module.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    return directory / f"grammar-{version}.cache"


def table_data(lark: Any) -> dict[str, Any]:
    """What the fast driver needs from an analysed Lark parser, as plain Python literals.

    - ``states``: the LALR table, one dict per state from symbol to action; an
      action ``n >= 0`` shifts to state ``n``, ``~r`` reduces by rule ``r``.
    - ``rules``: per rule, ``(size, origin, callback, expand1, include, nones)``:
      how Lark shapes the children before the transformer method ``callback``
      sees them (``include``: ``(index, splice, Nones before)`` per kept child,
      None to keep all; ``nones``: placeholders after; ``expand1``: a ``?rule``
      with one child is that child). ``callback`` is None for a unit reduction.
    - ``lexer``: one regular expression of the terminals in Lark's order;
      ``keywords``: names Lark's lexer retypes; ``ignore``: skipped terminals.

    ``python -m gradcalc.parser`` writes this for the grammar file into
    ``grammar/_tables.py``; it is also how stale tables are replaced at run time.
    """
    import re

    table = lark.parser.parser.parser.parse_table
    builders = lark._parse_tree_builder.rule_builders
    numbers = {rule: number for number, (rule, _) in enumerate(builders)}
    rules = []
    for rule, chain in builders:
        expand1, include, nones = False, None, 0
        for step in chain:
            kind = getattr(step, "func", step).__name__
            if kind == "ExpandSingleChild":
                expand1 = True
            elif kind == "ChildFilterLALR":
                include, nones = tuple(tuple(item) for item in step.args[0]), step.args[1]
            elif kind == "ChildFilterLALR_NoPlaceholders":
                include = tuple((index, splice, 0) for index, splice in step.args[0])
            else:
                raise ValueError(f"no fast driver support for Lark's {kind}")
        size = len(rule.expansion)
        unit = expand1 and include is None and size == 1 and not rule.expansion[0].is_term
        name = rule.alias or rule.options.template_source or rule.origin.name
        origin = str(rule.origin.name)  # Lark's names may be Tokens, a str subclass
        rules.append((size, origin, None if unit else str(name), expand1, include, nones))
    # Lark numbers the states in an order that varies with string hashing; number
    # them breadth-first from the start state, symbols sorted, so the data is stable.
    start, end = table.start_states["start"], table.end_states["start"]
    order = [start]
    renumber = {start: 0}
    for state in order:  # grows while it is walked
        for _symbol, (action, argument) in sorted(table.states[state].items()):
            if action.name == "Shift" and argument not in renumber:
                renumber[argument] = len(order)
                order.append(argument)
    if len(order) != len(table.states):
        raise ValueError("the LALR table has states the start state does not reach")
    states = tuple(
        {
            str(symbol): renumber[argument] if action.name == "Shift" else ~numbers[argument]
            for symbol, (action, argument) in sorted(table.states[state].items())
        }
        for state in order
    )
    # Terminals in the order Lark's basic lexer tries them; keywords are NAMEs retyped.
    terminals = sorted(
        lark.terminals,
        key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
    )
    name_pattern = re.compile(next(t for t in terminals if t.name == "NAME").pattern.to_regexp())
    keywords = {
        str(t.pattern.value): str(t.name)
        for t in terminals
        if type(t.pattern).__name__ == "PatternStr" and name_pattern.fullmatch(t.pattern.value)
    }
    # Blanks before a token are skipped by the same match; any other character is no token.
    lexer = (
        "[\t \f]*(?:"
        + "|".join(
            f"(?P<{t.name}>{t.pattern.to_regexp()})"
            for t in terminals
            if t.pattern.value not in keywords or t.name == "NAME"
        )
        + r"|(?P<_REJECT>[\s\S]))"
    )
    return {
        "start": renumber[start],
        "end": renumber[end],
        "states": states,
        "rules": tuple(rules),
        "lexer": lexer,
        "keywords": keywords,
        "ignore": tuple(sorted(str(name) for name in lark.lexer_conf.ignore)),
    }


def token_vocabulary() -> list[str]:
    """One spelling of every token the language has (for fuzzing with token soup)."""
    return [*_TOKEN_SPELLINGS]


# ------------------------------------------------------------------ tokens
# Token names as the grammar declares them, in words for error messages.

_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "COMP_OP": "a comparison",
    "AUGASSIGN": "an augmented assignment like '+='",
    "POW": "'**'",
    "_NEWLINE": "the end of the line",
    "_INDENT": "an indented block",
    "_DEDENT": "the end of the block",
    "$END": "the end of the input",
}
_TOKEN_SPELLINGS = {
    "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "COMMA": ",", "COLON": ":",
    "SEMICOLON": ";", "DOT": ".", "EQUAL": "=", "PLUS": "+", "MINUS": "-", "STAR": "*",
    "SLASH": "/", "PERCENT": "%", "AT": "@", "POW": "**", "COMP_OP": "<=",
    "AUGASSIGN": "+=", "NOT": "not", "AND": "and", "OR": "or", "IF": "if", "ELIF": "elif",
    "ELSE": "else", "WHILE": "while", "FOR": "for", "IN": "in", "DEF": "def",
    "RETURN": "return", "PASS": "pass", "BREAK": "break", "CONTINUE": "continue",
    "TRUE": "True", "FALSE": "False", "NAME": "x", "NUMBER": "2.5",
}  # fmt: skip
_OPERAND_START = {"NAME", "NUMBER", "LPAR", "LSQB", "MINUS", "PLUS", "NOT", "TRUE", "FALSE"}
_OPERAND_END = {"NAME", "NUMBER", "TRUE", "FALSE", "RPAR", "RSQB"}
_OPERATORS = {
    "PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "AT", "POW", "COMP_OP", "AND", "OR", "NOT",
    "EQUAL", "AUGASSIGN",
}  # fmt: skip
_COMPOUND = {"IF", "ELIF", "ELSE", "WHILE", "FOR", "DEF"}
_PYTHON_ONLY = {
    "class", "try", "except", "finally", "raise",
    "del", "global", "nonlocal", "yield", "async", "await",
}  # fmt: skip
_CLOSER_OF = {"LPAR": "RPAR", "LSQB": "RSQB"}


def _words(token_type: str) -> str:
    if token_type in _WORDS:
        return _WORDS[token_type]
    if token_type in _TOKEN_SPELLINGS:
        return f"'{_TOKEN_SPELLINGS[token_type]}'"
    return token_type.lower()


_LAYOUT = {
    "_NEWLINE": "end of line",
    "_INDENT": "indent",
    "_DEDENT": "unindent",
    "$END": "end of input",
}


def _shown(token: Any) -> str:
    """A token as the user wrote it, for messages."""
    if token.type in _LAYOUT:
        return _LAYOUT[token.type]
    if token.type == "NAME":
        return f"name '{token.value}'"
    if token.type == "NUMBER":
        return f"number {token.value}"
    return f"'{token.value}'"


# -------------------------------------------------------------- postlexer
# Kinds of entries on the nesting stack. Brackets and indented blocks end at
# their closer; a prefix operator or '**' ends where its operand must end.
_BRACKET, _BLOCK, _ARITH, _NOT, _ELSE = range(5)

# What each token type does to the nesting stack.
_ACT_NONE, _ACT_OPEN, _ACT_CLOSE, _ACT_SIGN, _ACT_POW, _ACT_BINARY = range(6)
_ACT_NOT, _ACT_BOOL, _ACT_ELSE, _ACT_SEPARATOR, _ACT_NEWLINE = range(6, 11)
_ACTIONS = {
    "LPAR": _ACT_OPEN, "LSQB": _ACT_OPEN, "RPAR": _ACT_CLOSE, "RSQB": _ACT_CLOSE,
    "MINUS": _ACT_SIGN, "PLUS": _ACT_SIGN, "POW": _ACT_POW,
    "STAR": _ACT_BINARY, "SLASH": _ACT_BINARY, "PERCENT": _ACT_BINARY, "AT": _ACT_BINARY,
    "COMP_OP": _ACT_BINARY, "FLOORDIV": _ACT_BINARY, "IS": _ACT_BINARY, "IS_NOT": _ACT_BINARY,
    "IN": _ACT_BINARY, "NOT_IN": _ACT_BINARY, "NOT": _ACT_NOT, "AND": _ACT_BOOL,
    "OR": _ACT_BOOL, "IF": _ACT_BOOL,
    "ELSE": _ACT_ELSE, "COMMA": _ACT_SEPARATOR, "COLON": _ACT_SEPARATOR,
    "SEMICOLON": _ACT_SEPARATOR, "EQUAL": _ACT_SEPARATOR, "AUGASSIGN": _ACT_SEPARATOR,
    "_NEWLINE": _ACT_NEWLINE,
}  # fmt: skip


class _ScanState:
    """Per-parse state the postlexer shares with the error reporter."""

    __slots__ = ("below_margin", "brackets", "last", "max_nesting", "previous", "statement_start")

    def __init__(self, max_nesting: int) -> None:
        self.max_nesting = max_nesting
        self.brackets: list[Any] = []  # open bracket tokens, innermost last
        self.last: Any = None  # the last token handed to the parser
        self.previous: Any = None  # the one before it
        self.statement_start: Any = None  # first token of the current statement
        self.below_margin: Any = None  # a newline that dedented past the first line's margin


def _postlexer(indenter_base: type) -> Any:
    """The postlexer as a subclass of the Indenter of whichever Lark runs the parse."""
    return type("Postlexer", (_PostlexerMixin, indenter_base), {})()


class _PostlexerMixin:
    """Python-style indentation (Lark's ``Indenter``), bracket balance, nesting depth.

    Lark's parser gets it as a subclass of Lark's ``Indenter`` (``_postlexer``);
    the fast driver uses it alone: its ``process`` replaces all of the
    Indenter's and needs only the configuration below, so start-up imports
    no Lark.

    Nesting depth counts what nests without bound: open brackets, indented
    blocks, prefix operators (``-``, ``+``, ``not``) until their operand
    ends, ``**`` chains and the ``else`` branches of conditional expressions.
    Left-deep chains (``a+a+...``, ``x.T.T``) are flat and do not count.
    All state is per parse (in ``_ScanState`` and local variables), so one
    parser serves every thread.
    """

    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ("LPAR", "LSQB")
    CLOSE_PAREN_types = ("RPAR", "RSQB")
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8
    always_accept = ("_NEWLINE",)

    def process(self, stream: Iterator[Any]) -> Iterator[Any]:
        scan: _ScanState = _current.scan
        limit = scan.max_nesting
        brackets = scan.brackets
        nest: list[int] = []  # kinds, innermost last
        indents = [0]
        actions = _ACTIONS
        operand_end = _OPERAND_END
        previous_type = "_NEWLINE"
        token = None
        for token in stream:
            kind = token.type
            action = actions.get(kind, _ACT_NONE)
            if previous_type == "_NEWLINE" and scan.last is None and kind != "_NEWLINE":
                # The first statement's indentation is the margin (text pasted indented).
                indents[0] = token.column - 1
            if action:
                if action == _ACT_NEWLINE:
                    if brackets:
                        continue  # newlines inside brackets are whitespace
                    if scan.last is None:  # blank lines before the first statement
                        indents[0] = _width(token.value, self.tab_len)
                        continue
                    while nest and nest[-1] != _BLOCK:
                        nest.pop()
                    scan.previous, scan.last = scan.last, token
                    yield token
                    previous_type = kind
                    yield from self._indentation(token, indents, nest, scan)
                    continue
                if action == _ACT_SIGN:
                    if previous_type in operand_end:  # binary + or -
                        while nest and nest[-1] == _ARITH:
                            nest.pop()
                    else:
                        nest.append(_ARITH)
                        if len(nest) > limit:
                            raise _too_deep(token, limit)
                elif action == _ACT_OPEN:
                    brackets.append(token)
                    nest.append(_BRACKET)
                    if len(nest) > limit:
                        raise _too_deep(token, limit)
                elif action == _ACT_CLOSE:
                    while nest and nest[-1] != _BRACKET and nest[-1] != _BLOCK:
                        nest.pop()
                    if not brackets:
                        raise ParseError(
                            f"unmatched '{token.value}'",
                            hint="remove it, or add the opening bracket it closes",
                            line=token.line,
                            column=token.column,
                        )
                    opener = brackets.pop()
                    if _CLOSER_OF[opener.type] != kind:
                        raise ParseError(
                            f"'{token.value}' does not match '{opener.value}' opened at "
                            f"line {opener.line}, column {opener.column}",
                            hint=f"close '{opener.value}' first",
                            line=token.line,
                            column=token.column,
                        )
                    nest.pop()
                elif action in (_ACT_POW, _ACT_NOT):
                    nest.append(_ARITH if action == _ACT_POW else _NOT)
                    if len(nest) > limit:
                        raise _too_deep(token, limit)
                elif action == _ACT_BINARY:
                    while nest and nest[-1] == _ARITH:
                        nest.pop()
                elif action == _ACT_BOOL:
                    while nest and (nest[-1] == _ARITH or nest[-1] == _NOT):
                        nest.pop()
                elif action == _ACT_ELSE:
                    while nest and (nest[-1] == _ARITH or nest[-1] == _NOT):
                        nest.pop()
                    if previous_type in operand_end:  # `a if c else b`, not a block's else
                        nest.append(_ELSE)
                        if len(nest) > limit:
                            raise _too_deep(token, limit)
                else:  # a separator ends every prefix operator and conditional
                    while nest and nest[-1] != _BRACKET and nest[-1] != _BLOCK:
                        nest.pop()
            if previous_type in ("_NEWLINE", "SEMICOLON", "_INDENT", "_DEDENT"):
                scan.statement_start = token
                if scan.below_margin is not None:
                    raise ParseError(
                        "this line is indented less than the first line",
                        hint="indent every top-level line as far as the first one",
                        line=token.line,
                        column=token.column,
                    )
            scan.previous, scan.last = scan.last, token
            previous_type = kind
            yield token
        if brackets:
            opener = brackets[-1]
            closer = "')'" if opener.type == "LPAR" else "']'"
            raise ParseError(
                f"unclosed '{opener.value}' opened at line {opener.line}, column {opener.column}",
                hint=f"add the missing {closer}",
                line=opener.line,
                column=opener.column,
            )
        while len(indents) > 1:
            indents.pop()
            yield token.new_borrow_pos(self.DEDENT_type, "", token)

    def _indentation(
        self, newline: Any, indents: list[int], nest: list[int], scan: _ScanState
    ) -> Iterator[Any]:
        """_INDENT/_DEDENT tokens for the indentation that follows a newline."""
        text = newline.value.rsplit("\n", 1)[1]
        width = _width(newline.value, self.tab_len)
        if width > indents[-1]:
            indents.append(width)
            nest.append(_BLOCK)
            if len(nest) > scan.max_nesting:
                raise _too_deep(newline, scan.max_nesting, line=newline.end_line)
            indent = type(newline)(
                self.INDENT_type,
                text,
                newline.end_pos,
                newline.end_line,
                newline.end_column,
                newline.end_line,
                newline.end_column,
                newline.end_pos,
            )
            scan.previous, scan.last = scan.last, indent
            yield indent
            return
        while len(indents) > 1 and width < indents[-1]:
            indents.pop()
            nest.pop()
            dedent = newline.new_borrow_pos(self.DEDENT_type, text, newline)
            scan.previous, scan.last = scan.last, dedent
            yield dedent
        if width < indents[0]:
            scan.below_margin = newline  # an error only if a statement follows
        elif width != indents[-1]:
            raise ParseError(
                "unindent does not match any outer indentation level",
                hint="indent the line exactly as far as the block it belongs to",
                line=newline.end_line,
                column=width + 1,
            )


def _width(newline: str, tab_len: int) -> int:
    """Indentation width of the line a newline token leads to (a tab counts tab_len)."""
    text = newline.rsplit("\n", 1)[-1]
    return text.count(" ") + text.count("\t") * tab_len


def _too_deep(token: Any, limit: int, line: int | None = None) -> LimitError:
    return LimitError(
        f"the formula nests deeper than {limit} levels "
        "(brackets, blocks, prefix operators and '**' chains count)",
        hint="split it into named steps, or raise the nesting limit (max_nesting)",
        line=line or token.line,
        column=token.column if line is None else 1,
    )


# ------------------------------------------------------------- AST builder


def _at(node: ast.Node) -> dict[str, int]:
    return {"line": node.line, "column": node.column}


def _tok(token: Any) -> dict[str, int]:
    return {"line": token.line, "column": token.column}


def _binary(op: str) -> Any:
    def build(self: _ToAst, children: list) -> ast.BinOp:
        left, right = children
        return ast.BinOp(op, left, right, line=left.line, column=left.column)

    build.__name__ = f"binary_{op}"
    return build


class _ToAst:
    """The one transformer: Lark calls a method per reduced rule, inline in the parser."""

    # -- atoms
    def number(self, children: list) -> ast.Num:
        (token,) = children
        text = token.value
        if "." in text or "e" in text or "E" in text or len(text) > 308:  # (floats beyond)
            return ast.Num(float(text), **_tok(token))
        return ast.Num(int(text), **_tok(token))  # an int, as in Python (`7 // 2` is 3)

    def none(self, children: list) -> ast.NoneLit:
        return ast.NoneLit(**_tok(children[0]))

    def string(self, children: list) -> ast.Str | ast.FString:
        """Adjacent literals joined ('a' 'b'); f-strings split into text and fields."""
        parts: list[Any] = []
        for token in children:
            for part in _string_parts(token):
                if type(part) is str and parts and type(parts[-1]) is str:
                    parts[-1] += part
                else:
                    parts.append(part)
        if all(type(part) is str for part in parts):
            return ast.Str("".join(parts), **_tok(children[0]))
        return ast.FString(parts, **_tok(children[0]))

    def listcomp(self, children: list) -> ast.ListComp:
        opener, element, *generators = children
        return ast.ListComp(element, generators, **_tok(opener))

    def genexp(self, children: list) -> ast.ListComp:
        if isinstance(children[0], ast.Node):  # an argument: f(x for x in xs)
            element, *generators = children
            return ast.ListComp(element, generators, **_at(element))
        opener, element, *generators = children
        return ast.ListComp(element, generators, **_tok(opener))

    def comp_for(self, children: list) -> ast.Comprehension:
        keyword, targets, _, iterable, *conditions = children
        ifs = [c for c in conditions if isinstance(c, ast.Node)]
        return ast.Comprehension(targets, iterable, ifs, **_tok(keyword))

    def targets(self, children: list) -> str | list[str]:
        names = [c.value for c in children if c.type == "NAME"]
        if len(names) == 1 and children[0].type != "LPAR":
            return names[0]
        return names

    def bare_tuple(self, children: list) -> ast.TupleExpr:
        return ast.TupleExpr(list(children), **_at(children[0]))

    # -- imports and with
    def dotted_name(self, children: list) -> Any:
        token = children[0]
        return _Token("DOTTED", ".".join(c.value for c in children), 0, token.line, token.column)

    def dotted_as_name(self, children: list) -> ast.Alias:
        name, _, asname = children
        return ast.Alias(name.value, asname.value if asname else None, **_tok(name))

    def import_as_name(self, children: list) -> ast.Alias:
        name, _, asname = children
        return ast.Alias(name.value, asname.value if asname else None, **_tok(name))

    def import_stmt(self, children: list) -> ast.Import:
        keyword, *names = children
        return ast.Import(names, **_tok(keyword))

    def from_stmt(self, children: list) -> ast.ImportFrom:
        keyword, module, _, *names = children
        aliases = [n for n in names if isinstance(n, ast.Alias)]
        return ast.ImportFrom(module.value, aliases, **_tok(keyword))

    def with_item(self, children: list) -> ast.WithItem:
        context, _, name = children
        return ast.WithItem(context, name.value if name else None, **_at(context))

    def with_stmt(self, children: list) -> ast.With:
        keyword, *items, body = children
        return ast.With(items, body, **_tok(keyword))

    def name(self, children: list) -> ast.Name:
        (token,) = children
        return ast.Name(token.value, **_tok(token))

    def true(self, children: list) -> ast.Bool:
        return ast.Bool(True, **_tok(children[0]))

    def false(self, children: list) -> ast.Bool:
        return ast.Bool(False, **_tok(children[0]))

    def paren(self, children: list) -> ast.Node:
        # The bracketed expression starts at its '(' (so does `(a+b)*c`).
        opener, node = children
        node.line, node.column = opener.line, opener.column
        return node

    def tuple(self, children: list) -> ast.TupleExpr:
        return ast.TupleExpr(children[1:], **_tok(children[0]))

    def list(self, children: list) -> ast.ListExpr:
        return ast.ListExpr(children[1:], **_tok(children[0]))

    # -- postfix
    def call(self, children: list) -> ast.Call:
        func, arguments = children
        args: list = []
        keywords: list[ast.Keyword] = []
        for argument in arguments or ():
            if isinstance(argument, ast.Keyword):
                if any(k.name == argument.name for k in keywords):
                    raise ParseError(
                        f"keyword argument '{argument.name}' repeated",
                        hint="give each keyword once",
                        **_at(argument),
                    )
                keywords.append(argument)
            elif keywords:
                raise ParseError(
                    "positional argument follows keyword argument",
                    hint="put positional arguments first: f(x, axis=0)",
                    **_at(argument),
                )
            else:
                args.append(argument)
        return ast.Call(func, args, keywords, **_at(func))

    def arguments(self, children: list) -> list:
        return children

    def keyword(self, children: list) -> ast.Keyword:
        name, value = children
        if not isinstance(name, ast.Name):
            raise ParseError(
                "a keyword argument needs a plain name before '='",
                hint="write f(x, axis=0); to compare, use '=='",
                **_at(name),
            )
        return ast.Keyword(name.id, value, **_at(name))

    def attribute(self, children: list) -> ast.Attribute:
        value, name = children
        return ast.Attribute(value, name.value, **_at(value))

    def subscript(self, children: list) -> ast.Subscript:
        value, index = children
        return ast.Subscript(value, index, **_at(value))

    def subscripts(self, children: list) -> ast.Node:
        *items, trailing_comma = children
        if len(items) == 1 and trailing_comma is None:
            return items[0]
        return ast.TupleExpr(items, **_at(items[0]))

    def slice(self, children: list) -> ast.Slice:
        lower, colon, upper, step = children
        return ast.Slice(lower, upper, step, **(_at(lower) if lower is not None else _tok(colon)))

    # -- operators
    def unary(self, children: list) -> ast.UnaryOp:
        op, operand = children
        return ast.UnaryOp(op.value, operand, **_tok(op))

    def pow(self, children: list) -> ast.BinOp:
        left, _, right = children
        return ast.BinOp("**", left, right, **_at(left))

    add = _binary("+")
    sub = _binary("-")
    mul = _binary("*")
    div = _binary("/")
    mod = _binary("%")
    floordiv = _binary("//")
    matmul = _binary("@")

    def comparison(self, children: list) -> ast.Compare:
        left = children[0]
        ops = [" ".join(token.value.split()) for token in children[1::2]]  # "is  not"
        return ast.Compare(left, ops, children[2::2], **_at(left))

    def and_test(self, children: list) -> ast.BoolOp:
        return ast.BoolOp("and", children, **_at(children[0]))

    def or_test(self, children: list) -> ast.BoolOp:
        return ast.BoolOp("or", children, **_at(children[0]))

    def ifexp(self, children: list) -> ast.IfExp:
        body, test, orelse = children
        return ast.IfExp(test, body, orelse, **_at(body))

    # -- simple statements
    def expr_stmt(self, children: list) -> ast.ExprStmt:
        (value,) = children
        return ast.ExprStmt(value, **_at(value))

    def assign(self, children: list) -> ast.Assign | ast.ChainAssign:
        *targets, value = children
        for target in targets:
            _check_target(target, "=")
        if len(targets) > 1:
            return ast.ChainAssign(targets, value, **_at(targets[0]))
        return ast.Assign(targets[0], value, **_at(targets[0]))

    def assert_stmt(self, children: list) -> ast.Assert:
        keyword, test, message = children
        return ast.Assert(test, message, **_tok(keyword))

    def lambdef(self, children: list) -> ast.Lambda:
        keyword, params, body = children
        return ast.Lambda(params or [], body, **_tok(keyword))

    def aug_assign(self, children: list) -> ast.AugAssign:
        target, op, value = children
        _check_target(target, op.value)
        symbol = op.value[:-1]
        return ast.AugAssign(target, "**" if symbol == "^" else symbol, value, **_at(target))

    def return_stmt(self, children: list) -> ast.Return:
        keyword, value = children
        return ast.Return(value, **_tok(keyword))

    def pass_stmt(self, children: list) -> ast.Pass:
        return ast.Pass(**_tok(children[0]))

    def break_stmt(self, children: list) -> ast.Break:
        return ast.Break(**_tok(children[0]))

    def continue_stmt(self, children: list) -> ast.Continue:
        return ast.Continue(**_tok(children[0]))

    # -- compound statements
    def suite(self, children: list) -> list:
        return children

    def if_stmt(self, children: list) -> ast.If:
        keyword, test, body, *elifs, orelse = children
        orelse = orelse or []
        for clause in reversed(elifs):
            clause.orelse = orelse
            orelse = [clause]
        return ast.If(test, body, orelse, **_tok(keyword))

    def elif_clause(self, children: list) -> ast.If:
        keyword, test, body = children
        return ast.If(test, body, [], **_tok(keyword))

    def else_clause(self, children: list) -> list:
        (body,) = children
        return body

    def while_stmt(self, children: list) -> ast.While:
        keyword, test, body = children
        return ast.While(test, body, **_tok(keyword))

    def for_stmt(self, children: list) -> ast.For:
        keyword, targets, _, iterable, body = children
        return ast.For(targets, iterable, body, **_tok(keyword))

    def funcdef(self, children: list) -> ast.FunctionDef:
        keyword, name, params, body = children
        return ast.FunctionDef(name.value, params or [], body, **_tok(keyword))

    def params(self, children: list) -> list[ast.Param]:
        seen: set[str] = set()
        after_default = False
        for param in children:
            if param.name in seen:
                raise ParseError(
                    f"duplicate parameter '{param.name}'",
                    hint="give each parameter its own name",
                    **_at(param),
                )
            seen.add(param.name)
            if param.default is not None:
                after_default = True
            elif after_default:
                raise ParseError(
                    f"parameter '{param.name}' without a default follows one with a default",
                    hint="put parameters with defaults last: def f(a, b=0.1)",
                    **_at(param),
                )
        return children

    def param(self, children: list) -> ast.Param:
        name, default = children
        return ast.Param(name.value, default, **_tok(name))

    def start(self, children: list) -> ast.Program:
        return ast.Program(children, line=1, column=1)


def _check_target(target: ast.Node, op: str) -> None:
    if isinstance(target, ast.Name | ast.Subscript) or (
        op != "=" and isinstance(target, ast.Attribute)
    ):
        return
    if op == "=" and isinstance(target, ast.Attribute):
        return  # x.requires_grad = True (the interpreter says which attributes can be set)
    if op == "=" and isinstance(target, ast.TupleExpr | ast.ListExpr):
        todo = list(target.items)  # a, b = 1, 2; (a, b), c = ... (iterative)
        while todo:
            item = todo.pop()
            if isinstance(item, ast.TupleExpr | ast.ListExpr):
                todo += item.items
            elif not isinstance(item, ast.Name | ast.Subscript | ast.Attribute):
                _check_target(item, "unpack")
        return
    what = {
        ast.Call: "a call",
        ast.Attribute: "an attribute",
        ast.Num: "a number",
        ast.Bool: "True or False",
        ast.Compare: "a comparison",
    }.get(type(target), "an expression")
    hint = "assign to a name (y = ...) or an element (x[0] = ...)"
    if isinstance(target, ast.Compare) or (op == "=" and isinstance(target, ast.BoolOp)):
        hint += "; to compare, use '=='"
    raise ParseError(f"cannot assign to {what}", hint=hint, **_at(target))


# ------------------------------------------------------------------ strings


def _unescape(text: str, token: Any) -> str:
    """Python's backslash escapes decoded (any character may be written as itself)."""
    if "\\" not in text:
        return text
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"bad escape in a string: {exc.reason}",
            hint="write a backslash as \\\\, or use a raw string r'...'",
            **_tok(token),
        ) from None


def _string_parts(token: Any) -> list[Any]:
    """A STRING token's text, or for an f-string its text and `FormattedValue` fields."""
    value = token.value
    quote_at = min(i for i in (value.find("'"), value.find('"')) if i >= 0)
    prefix = value[:quote_at].lower()
    body = value[quote_at:]
    quote = 3 if body[:3] in ("'" * 3, '"' * 3) and len(body) >= 6 else 1
    body = body[quote:-quote]
    raw = "r" in prefix
    if "f" not in prefix:
        return [body if raw else _unescape(body, token)]
    return _fstring_parts(body, raw, token)


def _fstring_parts(body: str, raw: bool, token: Any) -> list[Any]:
    """Split an f-string's body into text and ``{expression!conversion:spec}`` fields."""
    parts: list[Any] = []
    text: list[str] = []
    index, size = 0, len(body)

    def fail(message: str) -> ParseError:
        return ParseError(
            f"f-string: {message}", hint="fields look like {x}, {x:.4f}, {x!r}", **_tok(token)
        )

    def flush() -> None:
        if text:
            joined = "".join(text)
            parts.append(joined if raw else _unescape(joined, token))
            text.clear()

    while index < size:
        char = body[index]
        if char == "}":
            if body[index : index + 2] != "}}":
                raise fail("single '}' is not allowed")
            text.append("}")
            index += 2
            continue
        if char != "{":
            text.append(char)
            index += 1
            continue
        if body[index : index + 2] == "{{":
            text.append("{")
            index += 2
            continue
        # a field: the expression ends at a top-level '!', ':' or '}'
        depth, start, index = 0, index + 1, index + 1
        quote_char = None
        while index < size:
            char = body[index]
            if quote_char is not None:
                if char == quote_char:
                    quote_char = None
            elif char in "'\"":
                quote_char = char
            elif char in "([{":
                depth += 1
            elif char in ")]}" and depth:
                depth -= 1
            elif depth == 0 and (
                char in ":}" or (char == "!" and body[index + 1 : index + 2] != "=")
            ):
                break
            index += 1
        expression = body[start:index]
        conversion = spec = None
        if index < size and body[index] == "!":
            conversion = body[index + 1 : index + 2]
            if conversion not in ("r", "s", "a"):
                raise fail("the conversion after '!' must be r, s or a")
            index += 2
        if index < size and body[index] == ":":
            end = body.find("}", index)
            if end < 0:
                raise fail("expected '}'")
            spec = body[index + 1 : end]
            if "{" in spec:
                raise fail("nested fields in a format spec are not supported")
            index = end
        if index >= size or body[index] != "}":
            raise fail("expected '}'")
        index += 1
        if not expression.strip():
            raise fail("empty expression not allowed")
        bare = expression.rstrip()
        if bare.endswith("=") and bare[-2:] not in ("==", "!=", "<=", ">="):
            text.append(expression)  # f"{x=}": the text, then the value (its repr)
            expression = bare[:-1]
            if conversion is None and spec is None:
                conversion = "r"
        flush()
        field = ast.FormattedValue(_field(expression, token), conversion, spec, **_tok(token))
        parts.append(field)
    flush()
    return parts


def _field(expression: str, token: Any) -> ast.Node:
    """An f-string field's expression, parsed; its nodes take the string's position."""
    scan = getattr(_current, "scan", None)  # (this parse runs inside another)
    try:
        program = parse("(" + expression.replace("\n", " ") + ")")
    except ParseError as exc:
        raise ParseError(
            f"in the f-string field {{{expression}}}: {exc.message}", hint=exc.hint, **_tok(token)
        ) from None
    finally:
        _current.scan = scan
    node = program.body[0].value
    todo: list[Any] = [node]
    while todo:  # (iterative: the field may nest as deep as the limits allow)
        current = todo.pop()
        if isinstance(current, ast.Node):
            current.line, current.column = token.line, token.column
            todo += [getattr(current, name) for name in type(current).__match_args__]
        elif type(current) is list:
            todo += current
    return node


# -------------------------------------------------------- friendly errors


def _explain(error: Any, source: str, scan: _ScanState, parser: _Parser) -> ParseError:
    """Turn a Lark exception into a ParseError that says what went wrong in words."""
    errors = parser.errors
    if isinstance(error, errors.UnexpectedCharacters):
        return _unknown_character(error.char, error.line, error.column, source)
    if not isinstance(error, errors.UnexpectedToken):
        line, column = getattr(error, "line", None), getattr(error, "column", None)
        return ParseError("invalid syntax", line=line, column=column, source=source)
    explained = _unexpected_token(
        error.token, set(error.expected), source, scan, lambda: _match_example(error, parser)
    )
    assert explained is not None
    return explained


def _explain_rejected(rejected: _Rejected, source: str, scan: _ScanState) -> ParseError | None:
    """The fast driver's rejection in words, as `_explain` words Lark's exception for the
    same input, or None where only Lark can say (a typical mistake is recognised by
    re-parsing examples with Lark's parser).

    Importing Lark's parser to explain an error cost a one-shot command ~25 ms (its
    runtime imports logging, dataclasses, inspect, typing, pickle); the fast driver
    stops at the same token in the same parse state, so it knows what Lark's exception
    would: the token, or the character no terminal matches, and the state's terminals.
    """
    if rejected.char is not None:
        return _unknown_character(rejected.char, rejected.line, rejected.column, source)
    if rejected.token is None:
        return None
    return _unexpected_token(
        rejected.token, rejected.expected, source, scan, lambda: _match_rejected(rejected)
    )


def _match_rejected(rejected: _Rejected) -> tuple[str, str] | None:
    """Lark's ``match_examples`` (``use_accepts=True``) for a fast-driver rejection: the
    label of the first example that fails with the same token value in the same parse
    state, stack depth and set of acceptable terminals, else of the first that fails in
    the same state with the same acceptable terminals."""
    driver = _parser().fast
    accepts = _accepts(driver.actions, rejected.stack)
    candidate = None
    saved = getattr(_current, "scan", None)
    try:
        for label, examples in _MISTAKES.items():
            for example in examples:
                _current.scan = _ScanState(DEFAULT_LIMITS.max_nesting)
                try:
                    driver.parse(example, _parser().postlex)
                    continue
                except Exception as failed:  # as Lark's: an example that fails otherwise
                    other = failed if isinstance(failed, _Rejected) else None
                    if other is None or (
                        other.token is None
                        or len(other.stack) != len(rejected.stack)
                        or other.stack[-1] != rejected.stack[-1]
                        or _accepts(driver.actions, other.stack) != accepts
                    ):
                        continue
                    if other.token.value == rejected.token.value:
                        return label
                    candidate = candidate or label
    finally:
        _current.scan = saved
    return candidate


def _accepts(actions: Any, stack: list[int]) -> set[str]:
    """The terminals that would be shifted after the reductions they call for, from the
    parse state ``stack`` (Lark's ``InteractiveParser.accepts``)."""
    accepted = set()
    for terminal in _terminals(actions[stack[-1]]):
        states = list(stack)
        while True:
            action = actions[states[-1]].get(terminal)
            if action is None:
                break
            if action.__class__ is int:
                accepted.add(terminal)
                break
            size, origin = action[0], action[1]
            if size:
                del states[-size:]
            states.append(actions[states[-1]][origin])
    return accepted


def _unexpected_token(
    token: Any,
    expected: set[str],
    source: str,
    scan: _ScanState,
    match_example: Callable[[], tuple[str, str] | None] | None,
) -> ParseError | None:
    """A token the parser cannot take, in words; None if that takes ``match_example``
    and there is none."""
    previous = scan.previous if token is scan.last else scan.last
    line, column = token.line, token.column
    if token.type in ("$END", "_DEDENT", "_NEWLINE") and token.type not in expected:
        line, column = _end_of(source, token, scan)

    def fail(message: str, hint: str | None = None) -> ParseError:
        return ParseError(message, hint=hint, line=line, column=column, source=source)

    start = scan.statement_start
    in_condition = scan.brackets or (start is not None and start.type in ("IF", "ELIF", "WHILE"))
    if token.type == "EQUAL" and in_condition:
        return fail("'=' is assignment; use '==' to compare", "write 'if x == 1:'")
    if token.type == "_INDENT":
        return fail("unexpected indent", "indent only the lines of a block that follows ':'")
    if "_INDENT" in expected:
        return fail(
            "expected an indented block after ':'",
            "indent the block's lines, or write one statement after ':' on the same line",
        )
    for word in (token, previous):
        if word is not None and word.type == "NAME" and word.value in _PYTHON_ONLY:
            line, column = word.line, word.column
            return fail(
                f"'{word.value}' is not part of the gradcalc language",
                "formulas have numbers, names, lists, operators, calls, if/while/for and def",
            )
    if scan.brackets and _never_closed(source, token):
        opener = scan.brackets[-1]
        closer = ")" if opener.type == "LPAR" else "]"
        line, column = opener.line, opener.column
        return fail(
            f"unclosed '{opener.value}' opened at line {opener.line}, column {opener.column}",
            f"add the missing '{closer}'",
        )
    if token.type in ("ELSE", "ELIF") and (previous is None or previous.type in _LAYOUT):
        return fail(
            f"'{token.value}' without an 'if' block before it",
            f"put '{token.value}' right after an 'if' block, at the same indentation",
        )
    if token.type in _COMPOUND and previous is not None and previous.type == "COLON":
        return fail(
            f"'{token.value}' cannot follow ':' on the same line",
            f"start '{token.value}' on its own, indented line",
        )
    found = {"$END": "the input ended", "_NEWLINE": "the line ended"}.get(
        token.type, f"found {_shown(token)}"
    )
    if expected & _OPERAND_START and previous is not None and previous.type in _OPERATORS:
        return fail(
            f"expected an operand after '{previous.value}', but {found}",
            "write a number, a name or a bracketed expression there",
        )
    if "COLON" in expected and start is not None and start.type in _COMPOUND:
        return fail(
            f"expected ':' to end the '{start.value}' line, but {found}",
            f"write '{start.value} ...:' and then the block",
        )
    if match_example is None:
        return None
    label = match_example()
    if label is not None:
        return fail(*label)
    return fail(f"unexpected {_shown(token)}", _expected_hint(expected))


def _expected_hint(expected: set[str]) -> str | None:
    names = sorted({_words(name) for name in expected if not name.startswith("__")})
    if not names:
        return None
    if len(names) > 8:
        names = [*names[:8], "..."]
    return "expected " + ", ".join(names)


def _end_of(source: str, token: Any, scan: _ScanState) -> tuple[int, int]:
    """The position just after the last real token, for errors at the end of a line or input."""
    for last in (scan.last, scan.previous):
        if last is not None and last is not token and last.type not in _LAYOUT:
            return last.end_line, last.end_column
    lines = source.splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


def _never_closed(source: str, token: Any) -> bool:
    """Whether the innermost open bracket stays open to the end of the source."""
    position = len(source) if token.type == "$END" else (token.start_pos or 0)
    level = 0
    comment = False
    for char in source[position:]:
        if comment:
            comment = char != "\n"
        elif char == "#":
            comment = True
        elif char in "([":
            level += 1
        elif char in ")]":
            if level == 0:
                return False
            level -= 1
    return True


# Typical mistakes, recognised by Lark's match_examples (same parser state as an example).
_MISTAKES: dict[tuple[str, str], list[str]] = {
    (
        "two values in a row with nothing between them",
        "put an operator (a * b) or a ',' (f(a, b)) between them",
    ): ["a b\n", "2 x\n", "f(a b)\n", "[1 2]\n", "x = a b\n", "f(x)(y) z\n"],
    (
        "a keyword argument needs a value after '='",
        "write f(x, axis=0)",
    ): ["f(x, axis=)\n", "f(axis=)\n"],
    (
        "expected a name after '.'",
        "attributes and methods are names: x.T, x.sum()",
    ): ["x.2\n", "x.(y)\n", "x.[0]\n"],
}


def _match_example(error: Any, parser: _Parser) -> tuple[str, str] | None:
    if getattr(error, "state", None) is None:
        return None
    saved = getattr(_current, "scan", None)
    try:
        _current.scan = _ScanState(DEFAULT_LIMITS.max_nesting)
        return error.match_examples(parser.lark.parse, _MISTAKES, use_accepts=True)
    except Exception:
        return None
    finally:
        _current.scan = saved


def _unknown_character(char: str, line: int, column: int, source: str) -> ParseError:
    if char in "\"'":
        message, hint = "unterminated string", f"close it with the {char} it opens with"
    elif char == "!":
        message, hint = "unknown character '!'", "use 'not' for negation, '!=' to compare"
    elif char in "&|~":
        message = f"unknown character '{char}'"
        hint = "use 'and', 'or', 'not'"
    elif char in "{}":
        message = "braces are not part of the language"
        hint = "use [ ] for lists and tensors"
    elif char == "\\":
        message, hint = "a '\\' continues a line only at its very end", "remove it"
    else:
        message = f"unknown character {char!r}"
        hint = "remove it; formulas use numbers, names, brackets and operators"
    return ParseError(message, hint=hint, line=line, column=column, source=source)


# ------------------------------------------------------------ fast driver


class _Rejected(Exception):
    """The fast driver met input it cannot parse: the token it could not take (with the
    terminals its parse state has, as Lark's ``UnexpectedToken.expected``), or the
    character no terminal matches (Lark's ``UnexpectedCharacters``)."""

    def __init__(
        self,
        token: _Token | None = None,
        stack: list[int] | None = None,
        actions: Any = None,
        char: str | None = None,
        line: int = 0,
        column: int = 0,
    ) -> None:
        super().__init__()
        self.token = token
        self.stack = stack or []
        """The parse states, as Lark's ``ParserState.state_stack`` at the same error."""
        self.expected = set() if actions is None else _terminals(actions[self.stack[-1]])
        self.char = char
        self.line = line
        self.column = column


def _terminals(row: dict[str, Any]) -> set[str]:
    """The terminals a parse-table row has actions for (its other keys are rules' gotos),
    as Lark's parser lists them in ``UnexpectedToken.expected``."""
    return {symbol for symbol in row if symbol.isupper()}


class _Token:
    """A token with Lark's Token attributes, without the cost of a ``str`` subclass."""

    __slots__ = (
        "column",
        "end_column",
        "end_line",
        "end_pos",
        "line",
        "start_pos",
        "type",
        "value",
    )

    def __init__(
        self,
        type: str,
        value: str,
        start_pos: int | None = None,
        line: int | None = None,
        column: int | None = None,
        end_line: int | None = None,
        end_column: int | None = None,
        end_pos: int | None = None,
    ) -> None:
        self.type = type
        self.value = value
        self.start_pos = start_pos
        self.line = line
        self.column = column
        self.end_line = end_line
        self.end_column = end_column
        self.end_pos = end_pos

    def new_borrow_pos(self, type: str, value: str, borrow: _Token) -> _Token:
        return _Token(
            type, value, borrow.start_pos, borrow.line, borrow.column,
            borrow.end_line, borrow.end_column, borrow.end_pos,
        )  # fmt: skip


class _Rows(dict):
    """Parse-table rows as the fast driver wants them, converted the first time a state is met.

    A shift is the next state (an int); a reduction is ``(size, origin, callback)``
    with ``callback`` None for a unit reduction. Converting lazily keeps a
    one-line formula from paying for the whole table.
    """

    def __init__(self, states: tuple[dict[str, int], ...], reductions: list[tuple]) -> None:
        super().__init__()
        self.states = states
        self.reductions = reductions

    def __missing__(self, state: int) -> dict[str, Any]:
        reductions = self.reductions
        row = self[state] = {
            symbol: action if action >= 0 else reductions[~action]
            for symbol, action in self.states[state].items()
        }
        return row


class _Splice:
    """A reduced ``_rule`` (or a repetition): its children are spliced into its parent's."""

    __slots__ = ("children",)

    def __init__(self, children: list) -> None:
        self.children = children


def _reducer(method: Any, expand1: bool, include: tuple | None, nones: int) -> Any:
    """A rule's callback: shape the children as Lark's tree builder does, then call ``method``.

    Lark's ``ChildFilterLALR`` (drop filtered tokens, splice ``_rule`` children,
    insert None for absent ``[optional]`` parts), then ``ExpandSingleChild``.
    """
    if include is None and not nones:
        if not expand1:
            return method
        return lambda children: children[0] if len(children) == 1 else method(children)
    if not nones and not expand1 and not any(splice or before for _, splice, before in include):
        if len(include) == 1:
            ((only, _, _),) = include
            return lambda children: method([children[only]])
        if len(include) == 2:
            (first, _, _), (second, _, _) = include
            return lambda children: method([children[first], children[second]])

    def reduce(children: list) -> Any:
        kept: list = []
        for index, splice, before in include or ():
            if before:
                kept += [None] * before
            if not splice:
                kept.append(children[index])
            elif kept:
                kept += children[index].children
            else:  # reuse a left-recursive repetition's list: appending stays O(1)
                kept = children[index].children
        if nones:
            kept += [None] * nones
        if expand1 and len(kept) == 1:
            return kept[0]
        return method(kept)

    return reduce


class _FastDriver:
    """The grammar's LALR tables and the AST callbacks, run by a tight loop for input that parses.

    Lark's own lexer and parser loop cost about three times more per token
    (a ``str``-subclass token, a rule-keyed callback lookup, a Python call
    for every unit reduction such as ``term -> factor``). This driver runs on
    Lark's tables for the grammar (``table_data``, stored as literals in the
    generated ``gradcalc.grammar._tables``, so start-up imports no Lark): the
    same terminals (one regular expression, in Lark's order), the same parse
    table, and the transformer's methods with the children shaped as Lark
    shapes them. It skips unit reductions, which return their child
    unchanged. Any syntax error raises ``_Rejected`` and the input is parsed
    again by Lark, whose exception carries what the error message needs.
    """

    def __init__(self, tables: dict[str, Any], transformer: Any) -> None:
        import re

        self.start = tables["start"]
        self.end = tables["end"]
        reductions = []
        for size, origin, name, expand1, include, nones in tables["rules"]:
            if name is None:
                callback = None
            else:
                method = getattr(transformer, name, None)
                if method is None:
                    if not origin.startswith("_"):
                        raise ValueError(f"the transformer has no method for rule {name!r}")
                    method = _Splice
                callback = _reducer(method, expand1, include, nones)
            reductions.append((size, origin, callback))
        self.actions = _Rows(tables["states"], reductions)
        self.keywords = tables["keywords"]
        self.ignore = frozenset(tables["ignore"])
        self.regex = re.compile(tables["lexer"])
        # (state below, state, token type) -> the state after a run of unit reductions
        self.unit_runs: dict[tuple, Any] = {}

    def tokens(self, text: str) -> Iterator[_Token]:
        """Lex ``text``; a character no terminal matches raises ``_Rejected``."""
        ignore = self.ignore
        keywords = self.keywords
        line, line_start = 1, 0
        for found in self.regex.finditer(text):
            kind = found.lastgroup
            value = found.group(kind)
            end = found.end()
            start = end - len(value)
            if kind == "NAME":
                column = start - line_start + 1
                kind = keywords.get(value, "NAME")
                yield _Token(kind, value, start, line, column, line, column + end - start, end)
            elif kind == "_NEWLINE":
                token = _Token(kind, value, start, line, start - line_start + 1)
                line += value.count("\n")
                line_start = start + value.rfind("\n") + 1
                token.end_line, token.end_column, token.end_pos = line, end - line_start + 1, end
                yield token
            elif kind in ignore:
                if "\n" in value:
                    line += value.count("\n")
                    line_start = start + value.rfind("\n") + 1
            elif kind == "_REJECT":
                raise _Rejected(char=value, line=line, column=start - line_start + 1)
            elif kind == "STRING" and "\n" in value:  # a triple-quoted string over lines
                token = _Token(kind, value, start, line, start - line_start + 1)
                line += value.count("\n")
                line_start = start + value.rfind("\n") + 1
                token.end_line, token.end_column, token.end_pos = line, end - line_start + 1, end
                yield token
            else:
                column = start - line_start + 1
                yield _Token(kind, value, start, line, column, line, column + end - start, end)

    def _unit_run(self, below: Any, top: Any, kind: str) -> Any:
        """The state after consecutive unit reductions from ``top`` (over ``below``) on ``kind``."""
        actions = self.actions
        action = actions[top].get(kind)
        while action is not None and action.__class__ is not int and action[2] is None:
            top = actions[below][action[1]]
            action = actions[top].get(kind)
        return top

    def parse(self, text: str, postlex: Any) -> ast.Program:
        actions = self.actions
        unit_runs = self.unit_runs
        top = self.start
        states = [top]
        values: list[Any] = []
        token = None
        for token in postlex.process(self.tokens(text)):
            kind = token.type
            while True:
                action = actions[top].get(kind)
                if action is None:
                    raise _Rejected(token, states, actions)
                if action.__class__ is int:
                    states.append(action)
                    values.append(token)
                    top = action
                    break
                size, origin, callback = action
                if callback is None:  # unit reductions keep the value and change the state
                    key = (states[-2], top, kind)
                    top = unit_runs.get(key)
                    if top is None:
                        top = unit_runs[key] = self._unit_run(key[0], key[1], kind)
                    states[-1] = top
                    continue
                if size:
                    children = values[-size:]
                    del values[-size:]
                    del states[-size:]
                else:
                    children = []
                values.append(callback(children))
                top = actions[states[-1]][origin]
                states.append(top)
        end = self.end
        while True:
            action = actions[states[-1]].get("$END")
            if action is None:
                last = _Token("$END", "", 0, 1, 1) if token is None else token
                raise _Rejected(last.new_borrow_pos("$END", "", last), states, actions)
            if action.__class__ is int:
                raise _Rejected
            size, origin, callback = action
            if size:
                children = values[-size:]
                del values[-size:]
                del states[-size:]
            else:
                children = []
            values.append(children[0] if callback is None else callback(children))
            states.append(actions[states[-1]][origin])
            if states[-1] == end:
                return values[-1]


# ----------------------------------------------------------- pretty-printer
# Binding strength of each form (higher binds tighter), Python's table.
_IFEXP, _OR, _AND, _NOTP, _CMP, _ARITHP, _TERM, _UNARY, _POWER, _POSTFIX, _ATOM = range(1, 12)
_BINARY_PREC = {
    "+": _ARITHP, "-": _ARITHP, "*": _TERM, "/": _TERM, "//": _TERM, "%": _TERM, "@": _TERM,
}  # fmt: skip


def _precedence(node: ast.Node) -> int:
    kind = type(node)
    if kind is ast.BinOp:
        return _POWER if node.op == "**" else _BINARY_PREC[node.op]
    if kind is ast.UnaryOp:
        return _NOTP if node.op == "not" else _UNARY
    if kind is ast.BoolOp:
        return _OR if node.op == "or" else _AND
    if kind is ast.Compare:
        return _CMP
    if kind is ast.IfExp:
        return _IFEXP
    if kind is ast.Lambda:
        return _IFEXP - 1
    if kind in (ast.Call, ast.Attribute, ast.Subscript):
        return _POSTFIX
    return _ATOM


def _number(value: float) -> str:
    if type(value) is int:
        return str(value)
    if value != value:
        raise ValueError("NaN has no source form")
    if value == float("inf"):
        return "1e999"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def pretty(node: ast.Node) -> str:
    """Source text for an AST (a Program, statement or expression) that parses back to it."""
    out: list[str] = []
    # Work items, popped from the end: text to emit, ("e", expr, min_precedence),
    # ("s", statement, depth), or ("i", index) for a subscript's index.
    work: list[Any] = [_item(node, 0)]
    while work:
        item = work.pop()
        if type(item) is str:
            out.append(item)
            continue
        tag, node, level = item
        if tag == "s":
            _push_statement(work, node, level)
        elif tag == "i":
            _push_index(work, node)
        else:
            _push_expression(work, node, level)
    return "".join(out).rstrip("\n")


def _item(node: ast.Node, level: int) -> tuple:
    if isinstance(node, ast.Program):
        return ("s", node, 0)
    if isinstance(node, _STATEMENTS):
        return ("s", node, level)
    return ("e", node, 0)


_STATEMENTS = (
    ast.ExprStmt, ast.Assign, ast.AugAssign, ast.If, ast.While, ast.For, ast.FunctionDef,
    ast.Return, ast.Pass, ast.Break, ast.Continue, ast.Import, ast.ImportFrom, ast.With,
    ast.ChainAssign, ast.Assert,
)  # fmt: skip


def _push_block(work: list, body: list, depth: int) -> None:
    for statement in reversed(body):
        work.append(("s", statement, depth))


def _push_statement(work: list, node: ast.Node, depth: int) -> None:
    """Queue one statement's pieces (in reverse, since work is a stack)."""
    indent = "    " * depth
    kind = type(node)
    if kind is ast.Program:
        _push_block(work, node.body, 0)
    elif kind is ast.ExprStmt:
        work += ["\n", ("e", node.value, _IFEXP), indent]
    elif kind is ast.Assign:
        work += ["\n", ("e", node.value, _IFEXP), " = ", ("e", node.target, _IFEXP), indent]
    elif kind is ast.Assert:
        work.append("\n")
        if node.msg is not None:
            work += [("e", node.msg, _IFEXP), ", "]
        work += [("e", node.test, _IFEXP), indent + "assert "]
    elif kind is ast.ChainAssign:
        work += ["\n", ("e", node.value, _IFEXP)]
        for target in reversed(node.targets):
            work += [" = ", ("e", target, _IFEXP)]
        work.append(indent)
    elif kind is ast.AugAssign:
        op = f" {node.op}= "
        work += ["\n", ("e", node.value, _IFEXP), op, ("e", node.target, _IFEXP), indent]
    elif kind is ast.Return:
        if node.value is None:
            work.append(indent + "return\n")
        else:
            work += ["\n", ("e", node.value, _IFEXP), indent + "return "]
    elif kind in (ast.Pass, ast.Break, ast.Continue):
        work.append(indent + kind.__name__.lower() + "\n")
    elif kind is ast.If:
        # Walk the elif chain here, then queue the pieces in reverse.
        pieces: list[Any] = []
        keyword = "if "
        while True:
            pieces += [indent + keyword, ("e", node.test, _IFEXP), ":\n", ("b", node.body)]
            orelse = node.orelse
            if len(orelse) == 1 and type(orelse[0]) is ast.If:
                node, keyword = orelse[0], "elif "
                continue
            if orelse:
                pieces += [indent + "else:\n", ("b", orelse)]
            break
        for piece in reversed(pieces):
            if type(piece) is tuple and piece[0] == "b":
                _push_block(work, piece[1], depth + 1)
            else:
                work.append(piece)
    elif kind is ast.While:
        _push_block(work, node.body, depth + 1)
        work += [":\n", ("e", node.test, _IFEXP), indent + "while "]
    elif kind is ast.For:
        _push_block(work, node.body, depth + 1)
        target = node.target if type(node.target) is str else _names(node.target)
        work += [":\n", ("e", node.iter, _IFEXP), f"{indent}for {target} in "]
    elif kind is ast.Import:
        work.append(f"{indent}import {_aliases(node.names)}\n")
    elif kind is ast.ImportFrom:
        work.append(f"{indent}from {node.module} import {_aliases(node.names)}\n")
    elif kind is ast.With:
        _push_block(work, node.body, depth + 1)
        work.append(":\n")
        for position in range(len(node.items) - 1, -1, -1):
            item = node.items[position]
            if item.name is not None:
                work.append(f" as {item.name}")
            work.append(("e", item.context, _IFEXP))
            if position:
                work.append(", ")
        work.append(f"{indent}with ")
    elif kind is ast.FunctionDef:
        _push_block(work, node.body, depth + 1)
        work.append("):\n")
        for position, param in reversed(list(enumerate(node.params))):
            if param.default is not None:
                work += [("e", param.default, _IFEXP), "="]
            work.append(param.name if position == 0 else ", " + param.name)
        work.append(f"{indent}def {node.name}(")
    else:
        raise TypeError(f"pretty: not a statement: {type(node).__name__}")


def _names(names: list[str]) -> str:
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _aliases(names: list[ast.Alias]) -> str:
    return ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in names)


def _string(text: str) -> str:
    """A string literal for ``text`` in single quotes (braces doubled by the caller)."""
    return text.encode("unicode_escape").decode("ascii").replace("'", "\\'")


def _push_fstring(work: list, node: ast.FString) -> None:
    work.append("'")
    for part in reversed(node.parts):
        if type(part) is str:
            work.append(_string(part).replace("{", "{{").replace("}", "}}"))
            continue
        work.append("}")
        if part.spec is not None:
            work.append(":" + part.spec)
        if part.conversion is not None:
            work.append("!" + part.conversion)
        work += [("e", part.value, _IFEXP), "{"]
    work.append("f'")


def _push_index(work: list, index: ast.Node) -> None:
    """A subscript's index: a bare tuple (trailing comma if single), slices, or an expression."""
    if type(index) is ast.TupleExpr:
        if len(index.items) == 1:
            work.append(",")
        for position in range(len(index.items) - 1, -1, -1):
            item = index.items[position]
            work.append(("i", item, 0) if type(item) is ast.Slice else ("e", item, _IFEXP))
            if position:
                work.append(", ")
        return
    if type(index) is ast.Slice:
        parts = [index.lower, ":", index.upper]
        if index.step is not None:
            parts += [":", index.step]
        for part in reversed(parts):
            if part is None:
                continue
            work.append(part if type(part) is str else ("e", part, _IFEXP))
        return
    work.append(("e", index, _IFEXP))


def _push_expression(work: list, node: ast.Node, minimum: int) -> None:
    """Queue an expression's pieces, bracketed if it binds looser than its place needs."""
    precedence = _precedence(node)
    if precedence < minimum:
        work.append(")")
    kind = type(node)
    if kind is ast.Num:
        work.append(_number(node.value))
    elif kind is ast.Name:
        work.append(node.id)
    elif kind is ast.Bool:
        work.append("True" if node.value else "False")
    elif kind is ast.BinOp:
        if node.op == "**":
            work += [("e", node.right, _UNARY), " ** ", ("e", node.left, _POSTFIX)]
        else:
            work += [
                ("e", node.right, precedence + 1),
                f" {node.op} ",
                ("e", node.left, precedence),
            ]
    elif kind is ast.UnaryOp:
        if node.op == "not":
            work += [("e", node.operand, _NOTP), "not "]
        else:
            work += [("e", node.operand, _UNARY), node.op]
    elif kind is ast.BoolOp:
        for position in range(len(node.values) - 1, -1, -1):
            work.append(("e", node.values[position], precedence + 1))
            if position:
                work.append(f" {node.op} ")
    elif kind is ast.Compare:
        for position in range(len(node.comparators) - 1, -1, -1):
            work += [("e", node.comparators[position], _ARITHP), f" {node.ops[position]} "]
        work.append(("e", node.left, _ARITHP))
    elif kind is ast.IfExp:
        work += [("e", node.orelse, _IFEXP), " else ", ("e", node.test, _OR), " if "]
        work.append(("e", node.body, _OR))
    elif kind is ast.Call:
        work.append(")")
        arguments = [*node.args, *node.keywords]
        for position in range(len(arguments) - 1, -1, -1):
            argument = arguments[position]
            if type(argument) is ast.Keyword:
                work += [("e", argument.value, _IFEXP), f"{argument.name}="]
            else:
                work.append(("e", argument, _IFEXP))
            if position:
                work.append(", ")
        work += ["(", ("e", node.func, _POSTFIX)]
    elif kind is ast.Attribute:
        # `2.T` would lex as the number `2.` and a name: bracket a number before a dot.
        before_dot = _ATOM + 1 if type(node.value) is ast.Num else _POSTFIX
        work += ["." + node.attr, ("e", node.value, before_dot)]
    elif kind is ast.Subscript:
        work += ["]", ("i", node.index, 0), "[", ("e", node.value, _POSTFIX)]
    elif kind is ast.ListExpr or kind is ast.TupleExpr:
        closer = "]" if kind is ast.ListExpr else ")"
        if kind is ast.TupleExpr and len(node.items) == 1:
            closer = ",)"
        work.append(closer)
        for position in range(len(node.items) - 1, -1, -1):
            work.append(("e", node.items[position], _IFEXP))
            if position:
                work.append(", ")
        work.append("[" if kind is ast.ListExpr else "(")
    elif kind is ast.Slice:
        _push_index(work, node)
    elif kind is ast.Str:
        work.append("'" + _string(node.value) + "'")
    elif kind is ast.FString:
        _push_fstring(work, node)
    elif kind is ast.NoneLit:
        work.append("None")
    elif kind is ast.Lambda:
        work += [("e", node.body, _IFEXP), ": "]
        for position in range(len(node.params) - 1, -1, -1):
            param = node.params[position]
            if param.default is not None:
                work += [("e", param.default, _IFEXP), "="]
            work.append(param.name if position == 0 else ", " + param.name)
        work.append("lambda " if node.params else "lambda")
    elif kind is ast.ListComp:
        work.append("]")
        for generator in reversed(node.generators):
            for condition in reversed(generator.ifs):
                work += [("e", condition, _OR), " if "]
            target = generator.target
            target = target if type(target) is str else _names(target)
            work += [("e", generator.iter, _OR), f" for {target} in "]
        work += [("e", node.elt, _IFEXP), "["]
    elif kind is ast.Keyword:
        work += [("e", node.value, _IFEXP), f"{node.name}="]
    elif kind is ast.Param:
        if node.default is not None:
            work += [("e", node.default, _IFEXP), "="]
        work.append(node.name)
    else:
        raise TypeError(f"pretty: not an AST node: {kind.__name__}")
    if precedence < minimum:
        work.append("(")


# ---------------------------------------------------------- generated modules


def tables_source(text: str | None = None) -> str:
    """The source of ``grammar/_tables.py``: ``table_data`` of the grammar as literals."""
    import pprint

    import lark as lark_module

    if text is None:
        text = grammar_text()
    data = table_data(lark_module.Lark(text, **LARK_OPTIONS))
    return (
        '"""LALR tables of gradcalc.lark for the parser\'s fast driver. Generated: do not edit.\n'
        "\n"
        "Written by ``python -m gradcalc.parser`` (see ``gradcalc.parser.table_data``); the\n"
        "parser uses them only while GRAMMAR_TEXT is the grammar file's text, and\n"
        "tests/test_parser.py checks that they are what the installed Lark makes of it.\n"
        '"""\n'
        "# fmt: off\n"
        "# ruff: noqa: E501\n"
        "\n"
        f"LARK_VERSION = {lark_module.__version__!r}\n"
        f"GRAMMAR_TEXT = {text!r}\n"
        f"TABLES = {pprint.pformat(data, width=100, sort_dicts=False)}\n"
    )


def standalone_source(text: str | None = None) -> str:
    """The source of ``grammar/_standalone.py``: Lark's standalone parser, plus the grammar.

    The fast driver does not need it; it is Lark's own parser without the
    cost of importing Lark and analysing the grammar, for explaining errors.
    """
    import io

    import lark as lark_module
    from lark.tools.standalone import gen_standalone

    if text is None:
        text = grammar_text()
    buffer = io.StringIO()
    gen_standalone(lark_module.Lark(text, **LARK_OPTIONS), out=buffer)
    buffer.write(f"\nGRAMMAR_TEXT = {text!r}\n")
    return buffer.getvalue()


def write_generated(directory: Path | None = None) -> list[Path]:
    """Regenerate ``grammar/_tables.py`` and ``grammar/_standalone.py`` after editing the grammar.

    ``python -m gradcalc.parser`` does this. Until then the parser notices
    the grammar changed and analyses it with Lark at start-up instead.
    """
    from importlib import resources
    from pathlib import Path

    if directory is None:
        directory = Path(str(resources.files("gradcalc.grammar")))
    text = grammar_text()
    written = []
    for name, source in (
        ("_tables.py", tables_source(text)),
        ("_standalone.py", standalone_source(text)),
    ):
        path = directory / name
        path.write_text(source, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_generated():
        print(f"wrote {path}")
