"""What the text commands say, and a writer that lays it out as Rich does, without Rich.

Why a second writer: Rich's import (``rich.console`` alone 23 ms under
``-X importtime``, with ``typing``, ``dataclasses`` and ``inspect`` behind it)
was half of a one-shot text command. Measured on installed copies of the same
tree with this writer on and off (2-core machine, medians of 20 interleaved
runs, as a ratio to ``python -c "import numpy"``, 85 ms here), Rich -> plain:
``gradcalc '3*a**3 - b**2' a=2 b=6`` 0.97 -> 0.49 (82 -> 42 ms), a parse
error ``'3*a +'`` 0.82 -> 0.38, a name error ``'a + q' a=1`` 0.97 -> 0.50,
``gradcalc graph 'x*x + log(z)' x=2 z=3`` 1.01 -> 0.54, ``gradcalc
functions`` 1.12 -> 0.51; the scalar in JSON, which never loaded Rich, 0.48.
Issue 12 asks <= 0.7 (a scalar formula), 0.6 (an error) and 1.0 (the tree,
``functions``).

So the words are built here once, as blocks: `Line` (text in styled parts),
`Grid` (a SIMPLE_HEAD table without edges) and `Branch` (a tree).
``gradcalc.cli.render`` turns them into Rich objects (colour terminals, the
REPL, explain mode, and whatever this module declines); the ``write_*``
functions below lay them out as Rich does for a console that writes no colour
(not a terminal, or ``NO_COLOR``) and write the text, or write nothing and
return False whenever they cannot be sure of Rich's characters: a table wider
than the console (Rich would shrink or crop columns), a word wider than its
line (Rich folds or crops it), a character outside `_SAFE` (Rich measures wide and
zero-width characters with its own tables), a console Rich would set up
differently (Windows, ``FORCE_COLOR``, ``TTY_COMPATIBLE``, Jupyter, a dumb
terminal, a non-UTF-8 stream, fewer than `MIN_WIDTH` columns). Then the
caller prints with Rich: correctness first. The layout follows Rich 15
(``rich._wrap.divide_line``, ``Text.wrap``, ``Table._calculate_column_widths``,
``Tree``'s guides); ``tests/test_cli_plain.py`` compares both writers byte for
byte on a corpus, so a Rich release that lays out differently fails there.

The shared value helpers (`array_text`, `scalar_text`, `shape_text`) live here
too, so that this module never imports Rich.
"""

from __future__ import annotations

import itertools
import os
import re
import sys

from gradcalc.errors import FormulaError

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any

    import numpy as np

    from gradcalc.api import Result
    from gradcalc.graph import Graph, GraphNode

# NumPy is imported where an array is laid out: a scalar result (the engine's float
# backend) is printed without it, which is most of a one-shot command's start-up.

TREE_MAX_NODES = 200
"""Nodes drawn in a text tree before it is cut short (JSON/DOT/Mermaid carry the whole graph)."""
TREE_MAX_DEPTH = 12
CHAIN_MIN = 4
"""Runs of this many single-input nodes with the same op are drawn as first, "… N more", last."""
MIN_WIDTH = 20
"""Narrower consoles are left to Rich."""


class Line:
    """Text (it may hold newlines) as ``(text, Rich style)`` parts over a base style:
    ``render.to_text`` makes it a ``rich.text.Text``. (Slotted classes, not
    ``typing.NamedTuple``: importing typing costs ~3 ms of start-up.)"""

    __slots__ = ("parts", "style")

    def __init__(self, parts: tuple[tuple[str, str], ...], style: str = "") -> None:
        self.parts = parts
        self.style = style


class Grid:
    """A table with Rich's ``box.SIMPLE_HEAD`` and no edge: each column as
    ``Table.add_column``'s keyword arguments, rows of cells."""

    __slots__ = ("columns", "expand", "rows")

    def __init__(
        self, columns: list[dict[str, Any]], rows: list[list[Line]], expand: bool = False
    ) -> None:
        self.columns = columns
        self.rows = rows
        self.expand = expand


class Branch:
    """A tree node: its label and its children, drawn in order."""

    __slots__ = ("children", "label")

    def __init__(self, label: Line, children: list[Branch]) -> None:
        self.label = label
        self.children = children


Block = Line | Grid | Branch


def line(text: str, style: str = "") -> Line:
    """One unstyled part over ``style``: what ``Text(text, style=style)`` is in Rich."""
    return Line(((text, ""),), style)


def wants_color(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# ---------------------------------------------------------------- values


def scalar_text(array: np.ndarray) -> str:
    """``-12.0``, ``0.1`` (float32 spelled as float32), ``True``, ``3``."""
    from gradcalc.graph import short_text

    if isinstance(array, float | int | bool) and type(array).__module__ != "numpy":
        return short_text(array)
    import numpy as np

    return short_text(np.asarray(array).reshape(()))


def array_text(array: Any, width: int = 80, threshold: int = 1000) -> str:
    """NumPy's layout for a tensor (summarised with ``...`` when large); Python's for a scalar."""
    if getattr(array, "ndim", None) == 0 or isinstance(array, float | int | bool):
        return scalar_text(array)
    import numpy as np

    array = np.asarray(array)
    if array.ndim == 0:
        return scalar_text(array)
    return np.array2string(array, max_line_width=max(width, 20), threshold=threshold, edgeitems=3)


def shape_text(shape: tuple[int, ...]) -> str:
    return (
        "()"
        if not shape
        else "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# ---------------------------------------------------------------- what a result says


def value_lines(result: Result, width: int) -> list[Line]:
    """``P = -12.0`` for a scalar; a heading and NumPy's layout for a tensor."""
    label = result.output_name or "value"
    if result.value.ndim == 0:
        parts = [(f"{label} = ", "bold"), (scalar_text(result.value), "cyan")]
        if result.dtype != "float64":
            parts.append((f"  ({result.dtype})", "dim"))
        return [Line(tuple(parts))]
    shape = f"  shape {shape_text(result.shape)}, {result.dtype}"
    return [Line(((label, "bold"), (shape, "dim"))), line(array_text(result.value, width), "cyan")]


def result_blocks(result: Result, width: int, *, command: str, with_check: bool) -> list[Block]:
    """Everything grad/eval/jacobian/hessian print as text, in order (the graph comes after)."""
    blocks: list[Block] = [*value_lines(result, width)]
    if command == "eval":
        return blocks + [_note(n) for n in result.notes if "not finite" in n]
    if result.gradients:
        blocks += gradients_blocks(result, width, with_check)
    elif command == "grad":
        blocks.append(line("no variables to differentiate: bind some with NAME=VALUE", "dim"))
    out = result.output_name or "out"
    if result.jacobian is not None:
        for name, block in result.jacobian.items():
            blocks.append(_matrix_heading(f"jacobian d{out}/d{name}", block))
            blocks.append(line(array_text(block, width)))
    if result.hessian is not None and _all_scalar(result.hessian):
        blocks += [line("hessian", "italic"), _hessian_grid(result.hessian, out)]
    elif result.hessian is not None:
        for row, cols in result.hessian.items():
            for col, block in cols.items():
                blocks.append(_matrix_heading(f"hessian d²{out}/d{row} d{col}", block))
                blocks.append(line(array_text(block, width)))
    return blocks + notes_lines(result)


def gradients_blocks(result: Result, width: int, with_check: bool) -> list[Block]:
    """A title, then a table when every gradient fits on one line, else one block per gradient."""
    of = result.output_name or "the output"
    title = line(f"gradients of {of}" + (" (as a sum)" if result.summed else ""), "italic")
    table_room = width - 40
    if all("\n" not in array_text(g, table_room, 200) for g in result.gradients.values()):
        return [title, gradients_grid(result, width, with_check)]
    blocks: list[Block] = [title]
    for name, gradient in result.gradients.items():
        parts = [(name, "")]
        if name in result.unused:
            parts.append((" (unused)", "yellow"))
        parts.append((f"  shape {shape_text(tuple(gradient.shape))}", "dim"))
        if with_check:
            parts += [("  check ", "dim"), _check_part(result, name)]
        blocks.append(Line(tuple(parts), "bold"))
        blocks.append(line(_indent(array_text(gradient, width - 2))))
    return blocks


CHECK_HEADER = "check (max rel. error)"


def gradients_grid(result: Result, width: int, with_check: bool) -> Grid:
    """name | shape | gradient [| check] — unused names flagged, check failures marked.

    Each gradient is laid out by NumPy for the width left by the other columns,
    so matrices keep their rows.
    """
    columns: list[dict[str, Any]] = [
        {"header": "name", "style": "bold", "no_wrap": True},
        {"header": "shape", "style": "dim", "no_wrap": True},
        {"header": "gradient", "no_wrap": True, "overflow": "ellipsis"},
    ]
    if with_check:
        columns.append({"header": CHECK_HEADER, "no_wrap": True})
    names = [n + (" (unused)" if n in result.unused else "") for n in result.gradients]
    shapes = [shape_text(tuple(g.shape)) for g in result.gradients.values()]
    used = max(map(len, [*names, "name"])) + max(map(len, [*shapes, "shape"]))
    used += len(CHECK_HEADER) if with_check else 0
    room = max(width - used - 2 * len(columns), 20)
    rows = []
    for (name, gradient), shape in zip(result.gradients.items(), shapes, strict=True):
        label = ((name, ""), (" (unused)", "yellow")) if name in result.unused else ((name, ""),)
        row = [Line(label), line(shape), line(array_text(gradient, room, 200))]
        if with_check:
            text, style = _check_part(result, name)
            row.append(line(text, style))
        rows.append(row)
    return Grid(columns, rows)


def _check_part(result: Result, name: str) -> tuple[str, str]:
    error = None if result.check is None else result.check.get(name)
    if error is None:
        return "not checked", "dim"
    if error <= result.check_tolerance:
        return f"{error:.1e} ok", "green"
    return f"{error:.1e} MISMATCH", "bold red"


def _note(note: str) -> Line:
    return Line((("note: ", ""), (note, "")), "yellow")


def notes_lines(result: Result) -> list[Line]:
    return [_note(note) for note in result.notes]


def _all_scalar(hessian: dict[str, dict[str, np.ndarray]]) -> bool:
    return all(block.ndim == 0 for cols in hessian.values() for block in cols.values())


def _hessian_grid(hessian: dict[str, dict[str, np.ndarray]], out: str) -> Grid:
    """Second derivatives of scalar variables as one matrix with named rows and columns."""
    columns: list[dict[str, Any]] = [{"header": f"d²{out}", "style": "bold", "no_wrap": True}]
    columns += [{"header": f"d{col}", "justify": "right", "no_wrap": True} for col in hessian]
    rows = [
        [line(f"d{row}"), *(line(scalar_text(cols[c])) for c in hessian)]
        for row, cols in hessian.items()
    ]
    return Grid(columns, rows)


def _matrix_heading(title: str, block: np.ndarray) -> Line:
    return Line(((title, ""), (f"  shape {shape_text(tuple(block.shape))}", "dim")), "bold")


# ---------------------------------------------------------------- the graph as a tree


def graph_outline(
    graph: Graph, max_nodes: int = TREE_MAX_NODES, max_depth: int = TREE_MAX_DEPTH
) -> list[Block]:
    """The graph from the output down to the leaves; a shared node is drawn once, then referenced.

    Built with an explicit stack (graphs can be 100,000 nodes deep) and cut
    at ``max_nodes``/``max_depth`` with a note, since a tree draws its guides
    for every level.
    """
    from gradcalc.graph import node_title

    if not graph.nodes:
        return [line("no graph: the output does not depend on any variable", "dim")]
    inputs = graph.inputs()
    consumers = [0] * len(graph.nodes)
    for _, source in set(graph.edges):
        consumers[source] += 1
    root = graph.nodes[0]
    tree = Branch(_node_label(root), [])
    shown = {root.id}
    drawn = 1  # labels drawn, against max_nodes
    covered = 1  # nodes drawn or summarised in a chain
    cut_depth = False
    stack: list[tuple[int, Branch, int]] = [(child, tree, 1) for child in reversed(inputs[root.id])]
    while stack:
        node_id, parent, depth = stack.pop()
        node = graph.nodes[node_id]
        if node_id in shown:
            _add(parent, line(f"↑ #{node_id} {node_title(node)} (shown above)", "dim"))
            continue
        if drawn >= max_nodes:
            break
        if depth > max_depth:
            cut_depth = True
            _add(parent, line(f"… #{node_id} {node_title(node)} and its inputs", "dim"))
            continue
        shown.add(node_id)
        drawn += 1
        covered += 1
        branch = _add(parent, _node_label(node))
        last, skipped = _chain_end(graph, inputs, consumers, node_id, shown)
        if skipped:
            _add(branch, line(f"… {skipped:,} more {node.op} in a chain", "dim"))
            covered += skipped
            if last != node_id:
                shown.add(last)
                drawn += 1
                covered += 1
                branch = _add(branch, _node_label(graph.nodes[last]))
        stack.extend((child, branch, depth + 1) for child in reversed(inputs[last]))
    blocks: list[Block] = [tree]
    if covered < len(graph.nodes) or cut_depth:
        blocks.append(
            line(
                f"… {covered} of {len(graph.nodes)} nodes drawn; "
                "--format json, dot or mermaid writes the whole graph",
                "dim",
            )
        )
    return blocks


def _add(parent: Branch, label: Line) -> Branch:
    branch = Branch(label, [])
    parent.children.append(branch)
    return branch


def _chain_end(
    graph: Graph, inputs: list[list[int]], consumers: list[int], start: int, shown: set[int]
) -> tuple[int, int]:
    """Where a run of single-input nodes with ``start``'s op ends, and how many it skips.

    A long loop (``y = y * 1.0001`` 30,000 times) becomes three lines, not a
    30,000-level staircase. Nodes with a name or another consumer end the run.
    """
    op = graph.nodes[start].op
    run = [start]
    node_id = start
    while len(inputs[node_id]) == 1:
        child = inputs[node_id][0]
        node = graph.nodes[child]
        if child in shown or node.op != op or consumers[child] != 1 or node.name is not None:
            break
        run.append(child)
        node_id = child
    if len(run) < CHAIN_MIN:
        return start, 0
    for middle in run[1:-1]:
        shown.add(middle)
    return run[-1], len(run) - 2


def _node_label(node: GraphNode) -> Line:
    from gradcalc.graph import LABEL_DIGITS, node_title, short_text

    parts = [(f"#{node.id} ", ""), (node_title(node), "bold green" if node.is_leaf else "bold")]
    if node.value is not None:
        parts.append(("  value ", "dim"))
        parts.append((short_text(node.value, digits=LABEL_DIGITS), "cyan"))
    if node.grad is not None:
        parts.append(("  grad ", "dim"))
        parts.append((short_text(node.grad, digits=LABEL_DIGITS), "magenta"))
    return Line(tuple(parts), "dim")


# ---------------------------------------------------------------- errors and listings


def error_line(exc: BaseException, width: int = 80) -> Line:
    """``ParseError: message (line 1, column 4)``, the source line with a caret, and the hint."""
    if not isinstance(exc, FormulaError):
        return Line((("error: ", "bold red"), (str(exc), "")))
    parts = [(f"{exc.kind}: ", "bold red"), (exc.message, "red")]
    if exc.line is not None:
        file = getattr(exc, "file", None)  # the REPL's :load FILE: lines are the file's
        where = f" ({file}, line {exc.line}" if file else f" (line {exc.line}"
        parts.append((where + (f", column {exc.column})" if exc.column else ")"), "dim"))
    snippet = _caret_snippet(exc, max((width - 6) // 2, 10))
    if snippet is not None:
        source, caret = snippet
        parts += [("\n  " + source, ""), ("\n  " + caret, "bold red")]
    if exc.hint:
        parts += [("\nhint: ", "yellow"), (exc.hint, "")]
    return Line(tuple(parts))


def _caret_snippet(exc: FormulaError, window: int) -> tuple[str, str] | None:
    """The offending line (windowed around the column when long) and a caret under the column."""
    line = exc.source_line()
    if line is None or exc.column is None:
        return None
    line = line.expandtabs(1)
    column = max(exc.column - 1, 0)
    start = max(0, column - window)
    end = min(len(line), column + window)
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(line) else ""
    shown = prefix + line[start:end] + suffix
    return shown, " " * (len(prefix) + column - start) + "^"


def functions_grid(functions: dict[str, Any]) -> Grid:
    """The signature (it starts with the name) and the description wrapped beside it; a
    signature stays whole on its line up to 40 characters (longer ones wrap)."""
    # expand=True: without it Rich 15 crops (not wraps) a description one character too wide
    widest = min(40, _widest(functions))
    columns: list[dict[str, Any]] = [
        {"header": "signature", "style": "cyan", "min_width": widest, "max_width": widest},
        {"header": "description", "ratio": 1},
    ]
    rows = [
        [line(str(getattr(spec, "signature", name))), line(getattr(spec, "doc", ""))]
        for name, spec in functions.items()
    ]
    return Grid(columns, rows, expand=True)


def _widest(functions: dict[str, Any]) -> int:
    return max((len(str(getattr(spec, "signature", ""))) for spec in functions.values()), default=0)


# ---------------------------------------------------------------- writing without Rich


def write_result(
    result: Result, stream: IO[str], *, command: str, with_check: bool, graph: Graph | None = None
) -> bool:
    """``render.print_result`` (then ``graph``'s tree) without Rich; False: nothing written."""

    def blocks(width: int) -> list[Block]:
        found = result_blocks(result, width, command=command, with_check=with_check)
        return found if graph is None else found + graph_outline(graph)

    return _write(stream, lambda width, _: _lay_blocks(blocks(width), width))


def write_tree(graph: Graph, stream: IO[str]) -> bool:
    """``render.graph_tree(graph)`` without Rich; False: nothing written."""
    return _write(stream, lambda width, _: _lay_blocks(graph_outline(graph), width))


def write_functions(functions: dict[str, Any], stream: IO[str]) -> bool:
    """``render.functions_table(functions)`` without Rich; False: nothing written."""
    return _write(stream, lambda width, _: _lay_grid(functions_grid(functions), width))


def write_error(exc: BaseException, stream: IO[str]) -> bool:
    """``render.error_text(exc)`` as ``run._report_error`` prints it (not wrapped unless on a
    terminal), without Rich; False: nothing written."""
    return _write(stream, lambda width, tty: _lay_line(error_line(exc, width), width, tty))


class Unfit(Exception):
    """This module cannot be sure to write what Rich would: Rich writes it."""


def _write(stream: IO[str], lay: Callable[[int, bool], list[str]]) -> bool:
    shape = console_shape(stream)
    if shape is None:
        return False
    try:
        lines = lay(*shape)
    except Unfit:
        return False
    stream.write("".join(line + "\n" for line in lines))
    stream.flush()  # as Rich does after each print
    return True


_RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "JUPYTER_COLUMNS", "DATABRICKS_RUNTIME_VERSION")
"""Set, they change what Rich takes for a terminal (or a notebook): left to Rich."""


def console_shape(stream: IO[str]) -> tuple[int, bool] | None:
    """``(width, is_terminal)`` of the console ``render.make_console(stream)`` would be, when it
    writes no colour and this module knows its layout; None when Rich should write."""
    environ = os.environ
    if wants_color(stream) or sys.platform == "win32" or any(k in environ for k in _RICH_ENV):
        return None
    import builtins

    stdin_module = str(getattr(sys.stdin, "__module__", ""))
    if hasattr(builtins, "get_ipython") or stdin_module.startswith("idlelib"):
        return None  # Rich's Jupyter and IDLE special cases
    if hasattr(stream, "rich_proxied_file"):
        return None
    if not (getattr(stream, "encoding", "utf-8") or "utf-8").lower().startswith("utf"):
        return None  # Rich would draw ASCII boxes and guides
    terminal = _isatty(stream)
    if terminal and environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return None
    columns = environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    else:  # Rich asks standard input, output and error, in that order
        width = 0
        for fd in (0, 1, 2):
            try:
                width = os.get_terminal_size(fd).columns
            except (AttributeError, ValueError, OSError):
                continue
            break
        width = width or 80
    return (width, terminal) if width >= MIN_WIDTH else None


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


_SAFE = frozenset(
    [chr(c) for c in range(0x20, 0x7F)]
    + [chr(c) for c in range(0xA1, 0x100) if c != 0xAD]
    + [chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2]
    + list("…─│├└↑⋮")
)
"""Characters one cell wide for Rich (and for a terminal) and, but for the space, no
whitespace: text with any other character is left to Rich."""
_SAFE_TEXT = _SAFE | {"\n"}


def _lay_blocks(blocks: list[Block], width: int) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Grid):
            lines += _lay_grid(block, width)
        elif isinstance(block, Branch):
            lines += _lay_tree(block, width)
        else:
            lines += _lay_line(block, width, True)
    return lines


def _plain(text: Line) -> str:
    joined = "".join(part for part, _ in text.parts)
    if not _SAFE_TEXT.issuperset(joined):
        raise Unfit
    return joined


def _lay_line(text: Line, width: int, wrap: bool) -> list[str]:
    """``console.print(Text)``: each line word-wrapped to ``width``, or (Rich's soft wrap)
    left whole."""
    pieces = _plain(text).split("\n")
    if not wrap:
        return pieces
    return [part for piece in pieces for part in _wrap(piece, width)]


_WORD = re.compile(r"\s*\S+\s*")


def _wrap(text: str, width: int) -> list[str]:
    """Rich's ``Text.wrap`` of one line of one-cell characters: broken before each word
    that does not fit, then whitespace past the width dropped. A word wider than the
    line is left to Rich (it folds or crops it, differently across releases)."""
    if len(text) <= width:
        return [text]
    if width < 1:
        raise Unfit
    cuts = [0, *_breaks(text, width), len(text)]
    lines = []
    for start, end in itertools.pairwise(cuts):
        piece = text[start:end]
        if len(piece) > width:  # Text.rstrip_end
            excess = len(piece) - width
            spaces = len(piece) - len(piece.rstrip())
            piece = piece[: len(piece) - min(spaces, excess)]
        if len(piece) > width:
            raise Unfit
        lines.append(piece)
    return lines


def _breaks(text: str, width: int) -> list[int]:
    """``rich._wrap.divide_line``: the offsets where ``text`` breaks into lines."""
    breaks: list[int] = []
    offset = 0
    for match in _WORD.finditer(text):
        start, word = match.start(), match.group()
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:
            raise Unfit
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    return breaks


_GRID_KEYS = frozenset({"header", "style", "justify", "no_wrap", "overflow"})


def _lay_grid(grid: Grid, width: int) -> list[str]:
    """Rich's ``Table(box=box.SIMPLE_HEAD, show_edge=False)``: a header, a rule, the rows;
    each cell padded by a space on each side, columns one space apart."""
    headers = [line(column["header"]) for column in grid.columns]
    rows = [headers, *grid.rows]
    texts = [[_plain(cell) for cell in row] for row in rows]
    if grid.expand:
        widths = _flex_widths(grid.columns, width)
    else:
        if any(not _GRID_KEYS.issuperset(column) for column in grid.columns):
            raise Unfit
        widths = [
            max(len(piece) for row in texts for piece in row[index].split("\n"))
            for index in range(len(grid.columns))
        ]
        if sum(widths) + 3 * len(widths) - 1 > width:
            raise Unfit  # Rich would shrink, wrap or crop columns
    out: list[str] = []
    for number, row in enumerate(texts):
        cells = [
            _cell_lines(text, size, column)
            for text, size, column in zip(row, widths, grid.columns, strict=True)
        ]
        height = max(map(len, cells))
        if number == 0 and any(len(cell) != height for cell in cells):
            raise Unfit  # a header cell wrapped (Rich aligns headers at the bottom)
        for cell, size in zip(cells, widths, strict=True):
            cell += [" " * size] * (height - len(cell))
        out += [" ".join(f" {text} " for text in parts) for parts in zip(*cells, strict=True)]
        if number == 0:
            out.append("─" * (sum(widths) + 3 * len(widths) - 1))
    return out


def _cell_lines(text: str, size: int, column: dict[str, Any]) -> list[str]:
    """One cell's lines, wrapped unless ``no_wrap`` and justified to ``size``."""
    lines = []
    for piece in text.split("\n"):
        parts = [piece] if column.get("no_wrap") else _wrap(piece, size)
        for part in parts:
            if len(part) > size:
                raise Unfit
            if column.get("justify", "left") == "right":
                lines.append(part.rstrip().rjust(size))
            else:
                lines.append(part.ljust(size))
    return lines


def _flex_widths(columns: list[dict[str, Any]], width: int) -> list[int]:
    """Content widths of an expanded table of a fixed-width column and a ratio column (the
    functions listing): the second takes the rest of the line. Other shapes: Rich."""
    if len(columns) != 2:
        raise Unfit
    fixed, flexible = columns
    size = fixed.get("min_width")
    if (
        size is None
        or fixed.get("max_width") != size
        or set(fixed) - {"header", "style", "min_width", "max_width"}
        or set(flexible) - {"header", "style", "ratio"}
        or not flexible.get("ratio")
    ):
        raise Unfit
    rest = width - 1 - (size + 2)  # the column gap, then the fixed column and its padding
    if size < 1 or rest < 3:
        raise Unfit
    return [size, rest - 2]


_GUIDES = ("    ", "│   ", "├── ", "└── ")
"""Rich's tree guides (``Tree.TREE_GUIDES[0]``): space, continue, fork, end."""


def _lay_tree(root: Branch, width: int) -> list[str]:
    """Rich's ``Tree``: each label after its ancestors' guides, wrapped to what is left."""
    out: list[str] = []
    stack: list[tuple[Branch, str, bool | None]] = [(root, "", None)]
    while stack:
        branch, above, last = stack.pop()
        if last is None:  # the root: no guide
            first = rest = ""
        else:
            first = above + _GUIDES[3 if last else 2]
            rest = above + _GUIDES[0 if last else 1]
        lines = _lay_line(branch.label, width - len(first), True)
        out.append(first + lines[0])
        out += [rest + text for text in lines[1:]]
        children = branch.children
        stack += [
            (child, rest, index == len(children) - 1) for index, child in enumerate(children)
        ][::-1]
    return out
