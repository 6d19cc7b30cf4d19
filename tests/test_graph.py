"""The grad_fn graph walk and its exporters, on hand-built nodes shaped like the engine's."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from gradcalc.graph import (
    Graph,
    build_graph,
    graph_to_dot,
    graph_to_mermaid,
    short_text,
)
from gradcalc.jsonio import graph_to_json


class FakeFn:
    """The engine's Node interface: name(), next_functions, value, grad_value (and variable)."""

    def __init__(self, name, inputs=(), value=None, grad=None, variable=None):
        self._name = name
        self.next_functions = tuple((fn, 0) for fn in inputs)
        self.value = value
        self.grad_value = grad
        self.variable = variable

    def name(self):
        return self._name


class FakeTensor:
    def __init__(self, data, grad_fn=None, requires_grad=True):
        self._data = np.asarray(data)
        self.grad_fn = grad_fn
        self.requires_grad = requires_grad


def shared_graph():
    """b = a + a; c = b * b (a reused twice, b reused twice)."""
    a = FakeTensor(2.0)
    leaf = FakeFn("AccumulateGrad", variable=a, grad=np.array(16.0))
    add = FakeFn("AddBackward0", [leaf, leaf], value=np.array(4.0), grad=np.array(8.0))
    b = FakeTensor(4.0, add)
    mul = FakeFn("MulBackward0", [add, add, None], value=np.array(16.0), grad=np.array(1.0))
    c = FakeTensor(16.0, mul)
    return c, [("a", a), ("b", b), ("c", c)]


def test_shared_nodes_appear_once_with_names_values_and_grads() -> None:
    output, named = shared_graph()
    graph = build_graph(output, named)
    assert [n.op for n in graph.nodes] == ["MulBackward0", "AddBackward0", "AccumulateGrad"]
    assert [n.name for n in graph.nodes] == ["c", "b", "a"]
    assert graph.edges == [(0, 1), (0, 1), (1, 2), (1, 2)]  # constants (None) are skipped
    assert graph.nodes[2].grad == 16.0 and graph.nodes[2].value == 2.0
    assert graph.nodes[2].is_leaf


def test_a_leaf_output_and_a_constant_output() -> None:
    x = FakeTensor([1.0, 2.0])
    graph = build_graph(x, [("x", x)], {"x": np.array([1.0, 1.0])})
    assert [(n.op, n.name) for n in graph.nodes] == [("AccumulateGrad", "x")]
    assert build_graph(FakeTensor(1.0, requires_grad=False)).nodes == []
    assert build_graph(None).root is None


def test_a_chain_deeper_than_the_recursion_limit() -> None:
    depth = 100_000
    assert depth > sys.getrecursionlimit()
    fn = FakeFn("AccumulateGrad", variable=FakeTensor(1.0))
    for _ in range(depth):
        fn = FakeFn("MulBackward0", [fn], value=np.array(1.0))
    graph = build_graph(FakeTensor(1.0, fn))
    assert len(graph.nodes) == depth + 1
    assert len(graph.edges) == depth
    assert len(graph_to_dot(graph).splitlines()) == 2 * depth + 4
    assert len(graph_to_mermaid(graph).splitlines()) == 2 * depth + 2
    from rich.console import Console

    from gradcalc.cli.render import graph_tree

    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    console.print(graph_tree(graph))
    lines = console.export_text().splitlines()
    assert len(lines) == 5  # root, first link, "… N more", last link, the leaf
    assert "99,997 more MulBackward0 in a chain" in lines[2]
    assert "AccumulateGrad" in lines[4]


def test_exporters() -> None:
    output, named = shared_graph()
    graph = build_graph(output, named)
    payload = json.loads(json.dumps(graph_to_json(graph), allow_nan=False))
    assert payload["root"] == 0
    assert payload["nodes"][0] == {
        "id": 0,
        "op": "MulBackward0",
        "name": "c",
        "shape": [],
        "value": 16.0,
        "grad": 1.0,
    }
    assert {"from": 1, "to": 2} in payload["edges"]
    dot = graph_to_dot(graph)
    assert dot.startswith("digraph gradcalc {") and dot.rstrip().endswith("}")
    assert "n2 -> n1;" in dot  # drawn as data flows
    assert 'label="a (AccumulateGrad)\\nvalue: 2.0\\ngrad: 16.0"' in dot
    mermaid = graph_to_mermaid(graph)
    assert mermaid.startswith("flowchart TD")
    assert "n2 --> n1" in mermaid
    assert 'n1["b = AddBackward0<br/>value: 4.0<br/>grad: 8.0"]' in mermaid


def test_big_tensors_are_shown_by_shape() -> None:
    assert short_text(np.zeros((30, 40))) == "tensor of shape (30, 40)"
    assert short_text(np.array([1.0, 2.0])) == "[1., 2.]"
    assert short_text(np.array(0.1, dtype=np.float32)) == "0.1"
    big = FakeTensor(np.zeros(5000), FakeFn("ExpBackward0", [], value=np.zeros(5000)))
    node = graph_to_json(build_graph(big))["nodes"][0]
    assert node["shape"] == [5000] and node["value"] is None


def test_tree_draws_shared_nodes_once_and_caps_size() -> None:
    from rich.console import Console

    from gradcalc.cli.render import graph_tree

    output, named = shared_graph()
    console = Console(width=100, color_system=None, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(graph_tree(build_graph(output, named)))
    text = console.export_text()
    assert text.count("b = AddBackward0") == 2  # once drawn, once referenced
    assert "↑ #1 b = AddBackward0 (shown above)" in text
    assert text.count("a (AccumulateGrad)") == 2

    wide = Graph()
    fns = [FakeFn("AccumulateGrad", variable=FakeTensor(float(i))) for i in range(500)]
    wide = build_graph(FakeTensor(0.0, FakeFn("StackBackward0", fns, value=np.zeros(500))))
    console.print(graph_tree(wide, max_nodes=50))
    assert "50 of 501 nodes drawn" in console.export_text()


@pytest.mark.parametrize("text", ['a"b', "x<y>&z"])
def test_labels_are_escaped(text: str) -> None:
    fn = FakeFn("AccumulateGrad", variable=FakeTensor(1.0))
    root = FakeTensor(1.0, FakeFn("AddBackward0", [fn], value=np.array(1.0)))
    graph = build_graph(root, [(text, root)])
    assert f'label="{text.replace(chr(34), chr(92) + chr(34))} = AddBackward0' in graph_to_dot(
        graph
    )
    label = graph_to_mermaid(graph).split('["', 1)[1].split('"]', 1)[0]
    assert '"' not in label
    assert text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") in label.replace(
        "#amp;", "&"
    )
