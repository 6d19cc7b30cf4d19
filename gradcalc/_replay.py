"""Replay: a repeated formula's forward and backward passes as flat lists of registry ops.

A batch (and a script calling :func:`gradcalc.evaluate` in a loop) asks for the
same few formulas over and over with new values of the same shapes. Once a
formula has run, its graph says exactly which registry ops ran on which
operands. :class:`Trace` keeps that list (JAX's ``jit`` idea, without a
compiler). :meth:`Trace.run` runs it again on new leaves' data: each op's own
``forward``, or its float backend's, chosen by ``_tensor.on_floats``'s rule.
:meth:`Trace.backward` then runs the ops' VJPs on raw values in the order the
engine's backward pass would (``_tensor._backpropagate``), so each gradient's
terms are added in the same order, to the same bits. No interpreter, no
operator dispatch, no Tensor or Node per value.

Why a second evaluator and a second backward loop (measured on W6's mixed batch,
five kinds of request, on this 2-core machine; benchmarks/RESULTS.md):
- Through the interpreter and the graph, a request took 45-112 µs in process.
  About half of that was the interpreter, dispatch, and Tensor and Node objects
  (the interpreter alone: 10-38 µs).
- Replayed, it takes 15-48 µs, of which the forward is 2-5 µs and the backward
  3-10 µs; the rest is reading the request and writing the answer.
- ``gradcalc batch`` of 100,000 requests went from 3.55x the hand-written NumPy
  worker's time to 1.36-1.43x (the last three full runs). The seed batch went
  from 24,615 to 88,000-93,000 requests/s.

Each loop is ~30 lines. Both follow the engine's rules (``on_floats``,
``Tensor._data``'s conversion, ``_backpropagate``'s order) and are checked
against it:
- every registry op, bit for bit (tests/test_replay.py);
- every trace, on a real request before it is used.

A replay is sound only where the graph is the whole story: where no value
computed from the inputs steered the program or left the graph. So a trace is
made only of a program in :func:`replayable`'s subset:
- allowed: assignments, arithmetic, calls of value-blind built-ins with literal
  options, ``for`` over a literal ``range``;
- refused: ``if``, comparisons, indexing by value, ``def``, randomness,
  ``backward``.

It is keyed by the leaves' names, types, dtypes and shapes. It is used only after
it reproduced a fresh run bit for bit on another request (``api``'s cache).
Anything unusual on the way declines, and the request runs the ordinary way:
- a node without a registry op, or with hooks;
- a leaf the request did not bind;
- an array as an op's option (a mask: it may come from the inputs);
- a constant operand that is not a Python number or a literal's data (an array a
  built-in made from the values: ``amax``'s mask);
- a run whose ops do not all reach the output (:class:`CountNodes`);
- the float backend declining an op, on the traced run (`_declined_here`) or at
  replay time (:class:`Declined`);
- a literal the trace read that has changed since, or a program parsed again
  (:meth:`Trace.stale`).
"""

from __future__ import annotations

import threading

from gradcalc import _tensor
from gradcalc import syntax as ast

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Trace", "replayable"]

# ---------------------------------------------------------------- the language subset


def _words(text: str) -> list[str]:
    """The names in a block of text (a table of built-ins, one word each)."""
    return text.split()


_OPERATOR_SYMBOLS = frozenset(("+", "-", "*", "/", "**", "@"))
"""Binary operators whose result is a differentiable registry op (``//`` and ``%`` are
value-dependent steps without a gradient)."""

_TENSOR_ARGUMENTS = {
    **dict.fromkeys(
        _words(
            """
            abs absolute ceil clone cos erf exp exp2 flatten floor log log10 log1p log2 neg
            negative ravel reciprocal relu round rsqrt sigmoid sign sin softplus sqrt
            square t tan tanh trunc sum mean prod max min amax amin logsumexp softmax
            log_softmax norm std var transpose swapaxes permute reshape view squeeze
            unsqueeze expand broadcast_to narrow select numel len
            """
        ),
        1,
    ),
    **dict.fromkeys(
        _words(
            """
            add sub mul div true_divide rsub pow float_power maximum minimum matmul mm mv
            bmm dot inner outer ger mse_loss l1_loss binary_cross_entropy_with_logits
            expand_as reshape_as view_as
            """
        ),
        2,
    ),
    "linear": 3,
    **dict.fromkeys(
        _words(
            """
            cat concat concatenate stack
            """
        ),
        0,
    ),
}
"""The built-ins a replayable program may call, by how many leading positional
arguments may be tensors computed from the inputs (0: a list of them); every other
argument must be a literal. Each runs the same registry ops whatever its operands'
values are and reads no operand's values outside them (a number option given as a
tensor would be read, so options must be literals)."""

_CONSTRUCTORS = frozenset(("ones", "zeros", "full", "eye", "arange", "linspace"))
"""Built-ins that make constants from literal arguments only."""


def replayable(program: ast.Program, bound: frozenset[str] | set[str]) -> bool:
    """Whether ``program``'s graph is the same for every value of the ``bound`` names
    (of given shapes), so a :class:`Trace` of one run is a run of any other."""
    assigned: set[str] = set()
    statements = list(program.body)
    while statements:
        statement = statements.pop()
        kind = type(statement)
        if kind is ast.ExprStmt:
            expressions = [statement.value]
        elif kind is ast.Assign or kind is ast.AugAssign:
            if type(statement.target) is not ast.Name:
                return False
            if kind is ast.AugAssign and statement.op not in _OPERATOR_SYMBOLS:
                return False
            assigned.add(statement.target.id)
            expressions = [statement.value]
        elif kind is ast.For:
            if type(statement.target) is not str or not _literal_range(statement.iter):
                return False
            assigned.add(statement.target)
            statements.extend(statement.body)
            continue
        else:
            return False
        if not all(map(_expression, expressions)):
            return False
    called = _called_names(program)
    return not (called & assigned or called & set(bound))


def _literal_range(node: Any) -> bool:
    return (
        type(node) is ast.Call
        and type(node.func) is ast.Name
        and node.func.id == "range"
        and not node.keywords
        and 1 <= len(node.args) <= 3
        and all(map(_literal, node.args))
    )


def _literal(node: Any) -> bool:
    """A number, bool or None written out, or a list/tuple of them."""
    kind = type(node)
    if kind is ast.Num or kind is ast.Bool or kind is ast.NoneLit:
        return True
    if kind is ast.UnaryOp:
        return node.op in ("-", "+") and type(node.operand) is ast.Num
    if kind is ast.ListExpr or kind is ast.TupleExpr:
        return all(map(_literal, node.items))
    return False


def _expression(node: Any) -> bool:
    """An expression of the subset (see :func:`replayable`); iterative, as the compiler."""
    pending = [node]
    while pending:
        node = pending.pop()
        kind = type(node)
        if kind is ast.Num or kind is ast.Name:
            continue
        if kind is ast.UnaryOp:
            if node.op not in ("-", "+"):
                return False
            pending.append(node.operand)
        elif kind is ast.BinOp:
            if node.op not in _OPERATOR_SYMBOLS:
                return False
            pending += (node.left, node.right)
        elif kind is ast.Attribute:
            if node.attr != "T":
                return False
            pending.append(node.value)
        elif kind is ast.Call:
            operands = _call_operands(node)
            if operands is None:
                return False
            pending += operands
        else:
            return False
    return True


def _call_operands(node: ast.Call) -> list | None:
    """The tensor operands of a call of the subset, or None when the call is not one."""
    func = node.func
    args = list(node.args)
    if type(func) is ast.Name:
        name = func.id
    elif type(func) is ast.Attribute and type(func.value) is not ast.Attribute:
        name = func.attr
        args.insert(0, func.value)  # method sugar: x.sum() is sum(x)
    else:
        return None
    if not all(_literal(keyword.value) for keyword in node.keywords):
        return None
    if name in _CONSTRUCTORS and type(func) is ast.Name:
        return [] if all(map(_literal, args)) else None
    count = _TENSOR_ARGUMENTS.get(name)
    if count is None:
        return None
    if count == 0:  # cat([a, b], dim): the list's items are operands
        if not args or type(args[0]) not in (ast.ListExpr, ast.TupleExpr):
            return None
        operands, count = list(args[0].items), 1
    else:
        operands = args[:count]
    if not all(map(_literal, args[count:])):
        return None
    return operands


def _called_names(program: ast.Program) -> set[str]:
    """Every name the program calls (a variable of that name would shadow the built-in)."""
    names = set()
    for node in _walk(program):
        if type(node) is ast.Call and type(node.func) is ast.Name:
            names.add(node.func.id)
    return names


def _walk(root: Any) -> Any:
    pending = [root]
    while pending:
        node = pending.pop()
        yield node
        for field in type(node).__match_args__:
            value = getattr(node, field)
            if isinstance(value, ast.Node):
                pending.append(value)
            elif type(value) is list:
                pending += (item for item in value if isinstance(item, ast.Node))


# ---------------------------------------------------------------- traces

_PYTHON_VALUES = _tensor.PYTHON_VALUES
_FLOATS = _tensor._FLOATS


class Trace:
    """One run's graph as steps ``(node_class, refs, consts)`` and a backward schedule.

    Slots ``0..n-1`` hold the leaves' data, the next ones the constants the graph
    read (numbers, and arrays the nodes kept), then one per step; ``refs`` are the
    slots of a step's operands. ``schedule`` is the order in which the engine's
    backward pass (``_tensor._backpropagate``: consumers counted, a stack of ready
    nodes) runs the steps' VJPs (see :meth:`_schedule`): replaying that order adds
    each gradient's terms in the engine's order, to the same bits.
    """

    __slots__ = ("first", "leaves", "literals", "plan", "schedule", "slots", "steps")

    def __init__(self, leaves: int, constants: list, steps: list, literals: tuple = ()) -> None:
        self.leaves = leaves
        self.first = leaves + len(constants)
        self.slots = [None] * leaves + constants
        """The slots before the steps': leaves (filled per run) and constants."""
        self.steps = steps
        self.plan = [
            (cls.op, cls.kind, refs, consts, cls.op.scalar, numpy)
            for cls, refs, consts, numpy in steps
        ]
        """What :meth:`run` reads of each step, looked up once."""
        self.schedule = self._schedule()
        self.literals = literals
        """(weak reference to a literal tensor, its data as traced) for each constant
        that is a literal's data: `stale` once that data changed."""

    @classmethod
    def of(cls, leaves: list[Any], output: Any) -> Trace | None:
        """The trace of the graph from ``leaves`` (Tensors) to ``output`` (a Tensor that
        requires grad), before backward ran on it; None when it cannot be replayed."""
        root = output._grad_fn
        if root is None:
            return None
        leaf_slot = {id(leaf): slot for slot, leaf in enumerate(leaves)}
        nodes = _post_order(root)
        if nodes is None:
            return None
        constants: list = []
        node_step: dict[int, int] = {}
        planned = []
        literals = _literal_data()
        for node in nodes:
            step = _plan(node, leaf_slot, node_step, constants, len(leaves), literals)
            if step is None:
                return None
            node_step[id(node)] = len(planned)
            planned.append(step)
        first = len(leaves) + len(constants)
        kept = tuple((literals[id(c)], c) for c in constants if id(c) in literals)
        steps = [
            (
                node_class,
                tuple(first + n if kind == "node" else n for kind, n in refs),
                consts,
                numpy,
            )
            for node_class, refs, consts, numpy in planned
        ]
        return cls(len(leaves), constants, steps, kept)

    def stale(self) -> bool:
        """Whether a literal this trace read is gone (its program was compiled again) or
        holds other data: the engine converts a float literal to NumPy's float64 for
        good the first time NumPy reads it (``Tensor._data``), and literals live as long
        as their compiled program, so later runs see it converted. (The caller also
        checks that the program is still the one the trace was made from.)"""
        for ref, data in self.literals:
            tensor = ref()
            if tensor is None or tensor._raw is not data:
                return True
        return False

    def _schedule(self) -> tuple:
        """The engine's backward order over the steps (see the class docstring), each as
        ``(slot, step, uses_ans, consts, ((vjp, operand's slot), ...))``."""
        first = self.first
        consumers: dict[int, int] = {}
        for _, refs, _, _ in self.steps:
            for slot in refs:
                if slot < self.leaves or slot >= first:
                    consumers[slot] = consumers.get(slot, 0) + 1
        schedule = []
        ready = [first + len(self.steps) - 1]
        while ready:
            slot = ready.pop()
            if slot < first:
                continue  # a leaf: its gradient is complete
            node_class, refs, consts, _ = self.steps[slot - first]
            calls = []
            for operand, ref in enumerate(refs):
                if ref in consumers:
                    calls.append((node_class.vjps[operand], ref))
                    consumers[ref] -= 1
                    if not consumers[ref]:
                        ready.append(ref)
            uses_ans = node_class.op.uses_ans
            negates = node_class.negates
            schedule.append((slot, slot - first, uses_ans, consts, tuple(calls), negates))
        return tuple(schedule)

    def run(self, inputs: list[Any]) -> tuple[list, list]:
        """The traced forward pass on new leaves' data ``inputs`` (their ``_raw``: same
        types, dtypes and shapes as the traced ones): every slot's value, and the
        operands each step's VJPs read (what the engine's node kept). The output is the
        last slot's.

        Each op gets its operands as the engine's node got them: a float backend's
        value that the node saw as NumPy's float64 (``Tensor._data`` converted it, for
        good, wherever the program read it that way first) is converted for that op;
        the float forward runs where the node saw Python floats. Raises
        :class:`Declined` where the float backend declines an op (``math`` raising where
        NumPy gives inf or nan): the engine then goes on in NumPy, a path the trace does
        not follow (``_tensor.on_floats`` is the rule, written out here)."""
        data = self.slots[:]
        data[: self.leaves] = inputs
        saved = []
        floats = _PYTHON_VALUES
        to_numpy = _tensor._to_numpy
        for op, kind, refs, consts, scalar, numpy in self.plan:
            if kind == 2:
                a = data[refs[0]]
                b = data[refs[1]]
                if numpy is not None:
                    if numpy[0] and type(a) in floats:
                        a = to_numpy(a)
                    if numpy[1] and type(b) in floats:
                        b = to_numpy(b)
                if (type(a) in floats or type(b) in floats) and (
                    type(a) in _FLOATS and type(b) in _FLOATS
                ):
                    try:
                        value = scalar(a, b, *consts)
                    except (ArithmeticError, ValueError, TypeError):
                        raise Declined(op.name) from None
                    if type(value) not in floats:
                        raise Declined(op.name)
                else:  # (a Python number beside NumPy's values stays one, as in ``apply2``)
                    value = op.forward(a, b, *consts)
                operands = (a, b)
            elif kind == 1:
                a = data[refs[0]]
                if numpy is not None and type(a) in floats:
                    a = to_numpy(a)
                if type(a) in floats:
                    try:
                        value = scalar(a, *consts)
                    except (ArithmeticError, ValueError, TypeError):
                        raise Declined(op.name) from None
                    if type(value) not in floats:
                        raise Declined(op.name)
                else:
                    value = op.forward(a, *consts)
                operands = (a,)
            else:  # an op over a sequence (``applyn``)
                operands = tuple(data[ref] for ref in refs)
                if numpy is not None:
                    operands = tuple(
                        to_numpy(v) if convert and type(v) in floats else v
                        for v, convert in zip(operands, numpy, strict=True)
                    )
                value = op.forward(list(operands), *consts)
            data.append(value)
            saved.append(operands)
        return data, saved

    def backward(self, data: list, saved: list, seed: Any) -> list:
        """The gradient reaching each leaf slot (None: none did) from ``seed`` at the
        output, by the steps' VJPs in the engine's order on raw values. As the engine's
        raw pass, ``-g`` of an array is not computed but folded into the sum it joins
        (``_tensor._Negated``): the same bits, a NaN's sign included."""
        grads: list = [None] * len(data)
        grads[-1] = seed
        ndarray = _tensor._ndarray
        for slot, step, uses_ans, consts, calls, negates in self.schedule:
            g = grads[slot]
            if g is None:
                continue
            grads[slot] = None
            if type(g) is _Negated:
                g = -g.array
            if negates and type(g) is ndarray and g.ndim:
                for _, target in calls:
                    grads[target] = _sum_into(grads[target], _Negated(g))
                continue
            args = (g, data[slot] if uses_ans else None, *saved[step], *consts)
            for vjp, target in calls:
                try:
                    gi = vjp(*args)
                except ArithmeticError:  # on the float backend's floats (as the engine)
                    gi = _tensor._retry_on_numpy(vjp, args)
                if gi is not None:
                    old = grads[target]
                    grads[target] = gi if old is None else _sum_into(old, gi)
        return [-g.array if type(g) is _Negated else g for g in grads[: self.leaves]]


class _Negated:
    """A pending gradient held negated (``_tensor._Negated``'s twin: ``-array``)."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array


def _sum_into(old: Any, g: Any) -> Any:
    """``old + g`` as ``_tensor._add_raw`` adds: sums of one sign add, of opposite signs
    subtract (-P + g is g - P, P + -g is P - g)."""
    if old is None:
        return g
    negated = type(old) is _Negated
    subtract = type(g) is _Negated
    if not negated and not subtract:
        return old + g
    a = old.array if negated else old
    b = g.array if subtract else g
    if negated == subtract:
        return _Negated(a + b)
    return b - a if negated else a - b


def _post_order(root: Any) -> list | None:
    """The nodes behind ``root`` (leaves' AccumulateGrad excluded), each after its
    operands' nodes; None when one is not a plain registry node."""
    order = []
    expanded = set()
    stack = [(root, False)]
    accumulate = _tensor.AccumulateGrad
    while stack:
        node, finished = stack.pop()
        if finished:
            order.append(node)
            continue
        if id(node) in expanded:
            continue
        expanded.add(id(node))
        if getattr(type(node), "op", None) is None or node.meta is not None:
            return None  # a custom Function, a hook, a retained gradient, recorded values
        stack.append((node, True))
        for parent in node.parents:
            if parent is not None and type(parent) is not accumulate and id(parent) not in expanded:
                stack.append((parent, False))
    return order


def _plan(
    node: Any, leaf_slot: dict, node_slot: dict, constants: list, base: int, literals: dict
) -> tuple | None:
    """One step of a trace: ``(node_class, refs, consts, numpy)``, refs as ``("slot", n)``
    or ``("node", step)``, ``numpy`` as `Trace.run` reads it; None when the node cannot
    be replayed."""
    node_class = type(node)
    kind = node_class.kind
    if node.holds is _tensor._FREED or node.ans is _tensor._FREED:
        return None
    if kind == 0:
        parents, saved = node.p0, node.s0
    elif kind == 1:
        parents, saved = (node.p0,), (node.s0,)
    elif kind == 2:
        parents, saved = (node.p0, node.p1), (node.s0, node.s1)
    else:
        return None
    consts = node.consts
    if not all(map(_plain, consts)):
        return None  # an array or tensor as an option (a mask): it may come from the inputs
    refs = []
    numpy = []
    for parent, kept in zip(parents, saved, strict=True):
        numpy.append(parent is not None and _is_numpy_scalar(kept))
        if parent is None:
            if type(kept) not in _NUMBERS and id(kept) not in literals:
                return None  # an array or NumPy number made by code: it may come from values
            refs.append(("slot", base + len(constants)))
            constants.append(kept)
        elif type(parent) is _tensor.AccumulateGrad:
            slot = leaf_slot.get(id(parent.variable))
            if slot is None:
                return None  # a leaf the program made (``w = ones(3)``), not an input
            refs.append(("slot", slot))
        else:
            step = node_slot.get(id(parent))
            if step is None:
                return None
            refs.append(("node", step))
    if _declined_here(node_class.op, saved, consts):
        return None
    return node_class, tuple(refs), consts, tuple(numpy) if any(numpy) else None


_NUMBERS = frozenset((int, float, bool))


def _is_numpy_scalar(value: Any) -> bool:
    """A float backend's value as ``Tensor._data`` converts it (NumPy's float64 or bool)."""
    kind = type(value)
    return kind is not float and kind is not bool and kind in _converted_types()


def _converted_types() -> tuple:
    return (type(_tensor._to_numpy(0.0)), type(_tensor._to_numpy(False)))


def _declined_here(op: Any, saved: Any, consts: tuple) -> bool:
    """Whether the float backend declined this node's op on the traced run's values
    (``math`` raising: ``log(-1)``). The engine then converted the operands to NumPy
    for good, so this node and later readers of them saw NumPy where other values
    would keep Python floats: such a trace holds only for values like these."""
    if op.arity not in ("1", "2") or op.scalar is None:
        return False  # (no float forward: a conversion on any values)
    values = [v.item() if _is_numpy_scalar(v) else v for v in saved]
    if not all(type(v) in _FLOATS for v in values):
        return False
    if not any(type(v) in _PYTHON_VALUES for v in values):
        return False
    return _tensor.on_floats(op, (*values, *consts)) is None


def _literal_data() -> dict[int, Any]:
    """The literal tensors alive (``[1, 2]``, ``2.0`` as a call's argument), by the id of
    their data: the only arrays and NumPy numbers a trace may keep as constants (any
    other a node read was made by code, maybe from the inputs' values: ``amax``'s mask
    of where the maximum is)."""
    from gradcalc.builtins import _LITERALS

    data = {}
    for ref in list(_LITERALS.values()):
        tensor = ref()
        if tensor is not None:
            data[id(tensor._raw)] = ref
    return data


def _plain(const: Any) -> bool:
    """Whether an op's option is plain data (a dim, an exponent, a slice), not values."""
    if type(const) in _PLAIN_CONSTS:
        return True
    if type(const) is tuple:
        return all(map(_plain, const))
    if type(const) is slice:
        return all(map(_plain, (const.start, const.stop, const.step)))
    # a NumPy number or dtype (``to(float32)``), never an array
    return type(const).__module__.startswith("numpy") and type(const) is not _tensor._ndarray


_PLAIN_CONSTS = frozenset((int, float, bool, str, type(None), type(Ellipsis)))


class CountNodes:
    """``with CountNodes() as count:`` the graph nodes made inside (``count.nodes``):
    the engine's ``_record`` counted, its C fast path held off meanwhile (it makes
    nodes without it). A trace holds only the nodes that reach the output, so a run
    that made more had code whose ops the trace leaves out; they may still change what
    the rest sees (``a ** 0.5`` of a negative ``a`` turns ``a`` into NumPy's float64).
    Only the run a trace is made of pays this."""

    def __init__(self) -> None:
        self.nodes: int | None = 0
        self._saved: tuple = ()

    def __enter__(self) -> CountNodes:
        if not _COUNTING.acquire(blocking=False):  # (another thread counts: no count)
            self.nodes = None
            return self
        record = _tensor._record

        def counting(*args: Any) -> Any:
            self.nodes += 1
            return record(*args)

        self._saved = (record, _tensor._recording)
        _tensor._record = counting
        # Falsy for the Python code (no values recorded), but not False: the C fast
        # path (``_native.c``'s ``fast_mode``) runs only while it is False, and makes
        # its nodes without ``_record``.
        _tensor._recording = 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved:
            _tensor._record, _tensor._recording = self._saved
            _COUNTING.release()


_COUNTING = threading.Lock()
"""One count at a time: the engine's globals are swapped while it lasts (another
thread's nodes counted meanwhile only make a count too high, which declines)."""


class Declined(ArithmeticError):
    """The float backend declined a replayed op (see :meth:`Trace.run`)."""


def _is_stand_in(value: Any) -> bool:
    """Whether a node's saved operand is `_tensor._stand_in`'s shape-only view."""
    if type(value) is not _tensor._ndarray or not value.ndim:
        return False
    return _tensor._stand_ins.get((value.dtype, value.shape)) is value
