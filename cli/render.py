"""Rich text output: values laid out like NumPy, a gradients table, the graph as a tree, errors.

Imported only when text is printed (Rich costs tens of milliseconds to import).
Every piece of user text goes in as ``rich.text.Text``, never as markup, so a
formula containing ``[1, 2]`` prints as written. Colour is used only when the
stream is a terminal and ``NO_COLOR`` is not set; otherwise no escape codes at all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from gradcalc.api import Result
from gradcalc.errors import FormulaError
from gradcalc.graph import LABEL_DIGITS, Graph, GraphNode, node_title, short_text

if TYPE_CHECKING:
    import numpy as np

# NumPy is imported where an array is laid out: a scalar result (the engine's float
# backend) is printed without it, which is most of a one-shot command's start-up.

TREE_MAX_NODES = 200
"""Nodes drawn in a text tree before it is cut short (JSON/DOT/Mermaid carry the whole graph)."""
TREE_MAX_DEPTH = 12
CHAIN_MIN = 4
"""Runs of this many single-input nodes with the same op are drawn as first, "… N more", last."""


def wants_color(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_console(stream: IO[str] | None = None) -> Console:
    """A console that writes plain text (no escape codes) unless ``stream`` is a colour terminal."""
    stream = stream or sys.stdout
    color = wants_color(stream)
    return Console(
        file=stream,
        color_system="auto" if color else None,
        force_terminal=color or None,
        no_color=not color,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )


# ---------------------------------------------------------------- values


def scalar_text(array: np.ndarray) -> str:
    """``-12.0``, ``0.1`` (float32 spelled as float32), ``True``, ``3``."""
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


def value_block(result: Result, width: int) -> RenderableType:
    """``P = -12.0`` for a scalar; a heading and NumPy's layout for a tensor."""
    label = result.output_name or "value"
    if result.value.ndim == 0:
        line = Text()
        line.append(f"{label} = ", style="bold")
        line.append(scalar_text(result.value), style="cyan")
        if result.dtype != "float64":
            line.append(f"  ({result.dtype})", style="dim")
        return line
    heading = Text()
    heading.append(f"{label}", style="bold")
    heading.append(f"  shape {shape_text(result.shape)}, {result.dtype}", style="dim")
    return Group(heading, Text(array_text(result.value, width), style="cyan"))


def gradients_table(result: Result, width: int, with_check: bool) -> Table:
    """name | shape | gradient [| check] — unused names flagged, check failures marked.

    Each gradient is laid out by NumPy for the width left by the other columns,
    so matrices keep their rows.
    """
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("shape", style="dim", no_wrap=True)
    table.add_column("gradient", no_wrap=True, overflow="ellipsis")
    check_header = "check (max rel. error)"
    if with_check:
        table.add_column(check_header, no_wrap=True)
    names = [n + (" (unused)" if n in result.unused else "") for n in result.gradients]
    shapes = [shape_text(tuple(g.shape)) for g in result.gradients.values()]
    used = max(map(len, [*names, "name"])) + max(map(len, [*shapes, "shape"]))
    used += len(check_header) if with_check else 0
    columns = 4 if with_check else 3
    room = max(width - used - 2 * columns, 20)
    for (name, gradient), shown_name, shape in zip(
        result.gradients.items(), names, shapes, strict=True
    ):
        label = Text(name)
        if shown_name != name:
            label.append(" (unused)", style="yellow")
        row: list[RenderableType] = [label, Text(shape), Text(array_text(gradient, room, 200))]
        if with_check:
            row.append(
                _check_cell(
                    None if result.check is None else result.check.get(name), result.check_tolerance
                )
            )
        table.add_row(*row)
    return table


def gradients_blocks(result: Result, width: int, with_check: bool) -> RenderableType:
    """A heading line and NumPy's full-width layout per gradient (matrices, long vectors)."""
    parts: list[RenderableType] = []
    for name, gradient in result.gradients.items():
        heading = Text(name, style="bold")
        if name in result.unused:
            heading.append(" (unused)", style="yellow")
        heading.append(f"  shape {shape_text(tuple(gradient.shape))}", style="dim")
        if with_check:
            heading.append("  check ", style="dim")
            heading.append(
                _check_cell(
                    None if result.check is None else result.check.get(name), result.check_tolerance
                )
            )
        parts.append(heading)
        parts.append(Text(_indent(array_text(gradient, width - 2))))
    return Group(*parts)


def gradients_view(result: Result, width: int, with_check: bool) -> RenderableType:
    """A table when every gradient fits on one line, else one block per gradient."""
    of = result.output_name or "the output"
    title = Text(f"gradients of {of}" + (" (as a sum)" if result.summed else ""), style="italic")
    table_room = width - 40
    if all("\n" not in array_text(g, table_room, 200) for g in result.gradients.values()):
        return Group(title, gradients_table(result, width, with_check))
    return Group(title, gradients_blocks(result, width, with_check))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _check_cell(error: float | None, tolerance: float) -> Text:
    if error is None:
        return Text("not checked", style="dim")
    if error <= tolerance:
        return Text(f"{error:.1e} ok", style="green")
    return Text(f"{error:.1e} MISMATCH", style="bold red")


def notes_block(result: Result) -> RenderableType | None:
    if not result.notes:
        return None
    return Group(*(Text("note: ", style="yellow").append(Text(note)) for note in result.notes))


def print_result(result: Result, console: Console, *, command: str, with_check: bool) -> None:
    """The text output of grad/eval/jacobian/hessian (the graph, if any, is printed after)."""
    width = console.width
    console.print(value_block(result, width))
    if command == "eval":
        notes = [n for n in result.notes if "not finite" in n]
        for note in notes:
            console.print(Text("note: ", style="yellow").append(note))
        return
    if result.gradients:
        console.print(gradients_view(result, width, with_check))
    elif command == "grad":
        console.print(Text("no variables to differentiate: bind some with NAME=VALUE", style="dim"))
    if result.jacobian is not None:
        for name, block in result.jacobian.items():
            console.print(
                _matrix_heading(f"jacobian d{result.output_name or 'out'}/d{name}", block)
            )
            console.print(Text(array_text(block, width)))
    if result.hessian is not None and _all_scalar(result.hessian):
        console.print(_hessian_table(result.hessian, result.output_name or "out"))
    elif result.hessian is not None:
        out = result.output_name or "out"
        for row, cols in result.hessian.items():
            for col, block in cols.items():
                console.print(_matrix_heading(f"hessian d²{out}/d{row} d{col}", block))
                console.print(Text(array_text(block, width)))
    notes = notes_block(result)
    if notes is not None:
        console.print(notes)


def _all_scalar(hessian: dict[str, dict[str, np.ndarray]]) -> bool:
    return all(block.ndim == 0 for cols in hessian.values() for block in cols.values())


def _hessian_table(hessian: dict[str, dict[str, np.ndarray]], out: str) -> RenderableType:
    """Second derivatives of scalar variables as one matrix with named rows and columns."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column(f"d²{out}", style="bold", no_wrap=True)
    for col in hessian:
        table.add_column(f"d{col}", justify="right", no_wrap=True)
    for row, cols in hessian.items():
        table.add_row(Text(f"d{row}"), *(Text(scalar_text(cols[c])) for c in hessian))
    return Group(Text("hessian", style="italic"), table)


def _matrix_heading(title: str, block: np.ndarray) -> Text:
    heading = Text(title, style="bold")
    heading.append(f"  shape {shape_text(tuple(block.shape))}", style="dim")
    return heading


# ---------------------------------------------------------------- graph tree


def graph_tree(
    graph: Graph, max_nodes: int = TREE_MAX_NODES, max_depth: int = TREE_MAX_DEPTH
) -> RenderableType:
    """The graph from the output down to the leaves; a shared node is drawn once, then referenced.

    Built with an explicit stack (graphs can be 100,000 nodes deep) and cut
    at ``max_nodes``/``max_depth`` with a note, since Rich draws a tree's
    guides for every level.
    """
    if not graph.nodes:
        return Text("no graph: the output does not depend on any variable", style="dim")
    inputs = graph.inputs()
    consumers = [0] * len(graph.nodes)
    for _, source in set(graph.edges):
        consumers[source] += 1
    root = graph.nodes[0]
    tree = Tree(_node_label(root))
    shown = {root.id}
    drawn = 1  # labels drawn, against max_nodes
    covered = 1  # nodes drawn or summarised in a chain
    cut_depth = False
    stack: list[tuple[int, Tree, int]] = [(child, tree, 1) for child in reversed(inputs[root.id])]
    while stack:
        node_id, parent, depth = stack.pop()
        node = graph.nodes[node_id]
        if node_id in shown:
            parent.add(Text(f"↑ #{node_id} {node_title(node)} (shown above)", style="dim"))
            continue
        if drawn >= max_nodes:
            break
        if depth > max_depth:
            cut_depth = True
            parent.add(Text(f"… #{node_id} {node_title(node)} and its inputs", style="dim"))
            continue
        shown.add(node_id)
        drawn += 1
        covered += 1
        branch = parent.add(_node_label(node))
        last, skipped = _chain_end(graph, inputs, consumers, node_id, shown)
        if skipped:
            branch.add(Text(f"… {skipped:,} more {node.op} in a chain", style="dim"))
            covered += skipped
            if last != node_id:
                shown.add(last)
                drawn += 1
                covered += 1
                branch = branch.add(_node_label(graph.nodes[last]))
        stack.extend((child, branch, depth + 1) for child in reversed(inputs[last]))
    parts: list[RenderableType] = [tree]
    if covered < len(graph.nodes) or cut_depth:
        parts.append(
            Text(
                f"… {covered} of {len(graph.nodes)} nodes drawn; "
                "--format json, dot or mermaid writes the whole graph",
                style="dim",
            )
        )
    return Group(*parts)


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


def _node_label(node: GraphNode) -> Text:
    label = Text(f"#{node.id} ", style="dim")
    if node.is_leaf:
        label.append(node_title(node), style="bold green")
    else:
        label.append(node_title(node), style="bold")
    if node.value is not None:
        label.append("  value ", style="dim")
        label.append(short_text(node.value, digits=LABEL_DIGITS), style="cyan")
    if node.grad is not None:
        label.append("  grad ", style="dim")
        label.append(short_text(node.grad, digits=LABEL_DIGITS), style="magenta")
    return label


# ---------------------------------------------------------------- errors and listings


def error_text(exc: BaseException, width: int = 80) -> Text:
    """``ParseError: message (line 1, column 4)``, the source line with a caret, and the hint."""
    text = Text()
    if not isinstance(exc, FormulaError):
        text.append("error: ", style="bold red")
        text.append(str(exc))
        return text
    text.append(f"{exc.kind}: ", style="bold red")
    text.append(exc.message, style="red")
    if exc.line is not None:
        file = getattr(exc, "file", None)  # the REPL's :load FILE: lines are the file's
        where = f" ({file}, line {exc.line}" if file else f" (line {exc.line}"
        text.append(where + (f", column {exc.column})" if exc.column else ")"), style="dim")
    snippet = _caret_snippet(exc, max((width - 6) // 2, 10))
    if snippet is not None:
        source, caret = snippet
        text.append("\n  " + source)
        text.append("\n  " + caret, style="bold red")
    if exc.hint:
        text.append("\nhint: ", style="yellow")
        text.append(exc.hint)
    return text


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


def functions_table(functions: dict[str, Any]) -> Table:
    """The signature (it starts with the name) and the description wrapped beside it; a
    signature stays whole on its line up to 40 characters (longer ones wrap)."""
    # expand=True: without it Rich 15 crops (not wraps) a description one character too wide
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=True)
    widest = min(40, _widest(functions))
    table.add_column("signature", style="cyan", min_width=widest, max_width=widest)
    table.add_column("description", ratio=1)
    for name, spec in functions.items():
        table.add_row(Text(str(getattr(spec, "signature", name))), Text(getattr(spec, "doc", "")))
    return table


def _widest(functions: dict[str, Any]) -> int:
    return max((len(str(getattr(spec, "signature", ""))) for spec in functions.values()), default=0)


EXPLAIN_ROWS = 40
"""Steps shown per pass in text (the first and last half); ``--json`` lists every one."""
EXPLAIN_TERMS = 8
"""Contributions spelled out in a variable's sum before the rest are counted."""


def explanation_view(explanation: Any, width: int) -> RenderableType:
    """Explain mode's text: the forward pass, the backward pass, and each variable's sum."""
    blocks: list[RenderableType] = [
        value_block(explanation.result, width),
        Text("forward pass: each operation and its value", style="bold"),
        _forward_table(explanation.forward),
        Text("backward pass: contribution = local derivative × upstream gradient", style="bold"),
        _backward_table(explanation.backward),
        Text("gradients: the contributions reaching each variable, added", style="bold"),
        _gradient_sums(explanation),
    ]
    notes = notes_block(explanation.result)
    if notes is not None:
        blocks.append(notes)
    return Group(*blocks)


def _shown(steps: list, table: Table) -> Iterator[Any]:
    """The steps to draw: all of a short pass; the first and last of a long one, with a
    row in ``table`` counting those left out between them."""
    if len(steps) <= EXPLAIN_ROWS:
        yield from steps
        return
    half = EXPLAIN_ROWS // 2
    yield from steps[:half]
    note = Text(f"⋮ {len(steps) - 2 * half:,} more (--json lists every step)", style="dim")
    table.add_row("", note, *([""] * (len(table.columns) - 2)))
    yield from steps[-half:]


def _forward_table(steps: list) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("node")
    table.add_column("computes", overflow="fold")
    table.add_column("value", overflow="fold")
    for step in _shown(steps, table):
        computes = step.expr if step.op == "leaf" or not step.name else f"{step.name} = {step.expr}"
        node = Text("variable", style="cyan") if step.op == "leaf" else Text(step.op)
        table.add_row(str(step.id), node, computes, _explain_value(step.value))
    return table


def _backward_table(steps: list) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("node")
    table.add_column("upstream", overflow="fold")
    table.add_column("to", justify="right")
    table.add_column("local", overflow="fold")
    table.add_column("contribution", overflow="fold")
    for step in _shown(steps, table):
        for index, part in enumerate(step.to):
            first = index == 0
            local = (
                Text(part.describe or "", style="dim")
                if part.local is None
                else _explain_value(part.local)
            )
            table.add_row(
                str(step.node) if first else "",
                f"{step.op} ({step.expr})" if first else "",
                _explain_value(step.upstream) if first else "",
                f"#{part.input}",
                local,
                _explain_value(part.contribution),
            )
    return table


def _gradient_sums(explanation: Any) -> Text:
    """``d/dx = 9.0 (from #1) + 9.0 (from #1) = 18.0``, one line per reported name."""
    sums = Text()
    nodes = explanation.variables()
    for name, gradient in explanation.result.gradients.items():
        found = explanation.contributions_to(nodes.get(name, -1))
        parts = [f"{_explain_value(value)} (from #{source})" for source, value in found]
        if len(parts) > EXPLAIN_TERMS:
            parts[EXPLAIN_TERMS:] = [f"… ({len(parts) - EXPLAIN_TERMS:,} more)"]
        import numpy as np

        added = sum(np.asarray(value, dtype=float) for _, value in found)
        if found and not np.allclose(added, gradient, equal_nan=True):
            parts.append("operations of earlier entries")  # the REPL's :explain
        total = _explain_value(gradient)
        if not parts:
            where = "not used by the output" if not np.any(gradient) else "through earlier entries"
            line = f" = {total} ({where})"
        elif len(parts) == 1:
            line = f" = {parts[0]}"
        else:
            line = f" = {' + '.join(parts)} = {total}"
        sums.append("\n" if sums else "").append(f"d/d{name}", style="cyan").append(line)
    return sums


def _explain_value(array: Any) -> str:
    return short_text(array, digits=LABEL_DIGITS)
