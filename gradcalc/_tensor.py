"""Tensor, grad_fn nodes, grad mode and the backward pass.

A :class:`Tensor` wraps a NumPy value (``_data``: an ndarray, or a NumPy
scalar for 0-d results, which NumPy computes with much faster than with 0-d
arrays). An operation on tensors that require grad records a :class:`Node`:
the op's grad_fn class (``MulBackward0``), the nodes of its inputs
(``p0``/``p1``, PyTorch's ``next_functions``), and the *data* its VJPs read
(only what they read: other operands keep a zero-memory stand-in). Nodes
never reference tensors, so graphs hold no reference cycles, die with their
outputs, intermediate tensors die as soon as the user drops them, and each
recorded op adds a single object for the cyclic garbage collector to track.
The ops themselves are declared in :mod:`gradcalc.ops`; this module only
runs them (:func:`apply1`, :func:`apply2`, :func:`applyn`).

:func:`run_backward` walks the graph iteratively (:func:`_backpropagate`, the
reference loop): count each node's consumers, then process nodes whose
consumers are all done. Without ``create_graph`` it runs the VJPs on raw data
(ndarrays, NumPy or Python scalars: no Tensor, no graph per step), sums
gradients meeting at a node in place into buffers it owns, hands VJPs the
buffers they may overwrite (``spare=``), and drops each incoming gradient and
(unless ``retain_graph``) each node's saved data as soon as they are used, so
peak memory stays close to a hand-written NumPy backward. With
``create_graph`` the same VJPs run on Tensors rebuilt from the saved data and
the backward is recorded. No recursion, so a chain of a million nodes is fine.
Nodes and tensors are made in one place (:func:`_record`). The optional C
extension (``gradcalc/_native.c``) defines their slots as C types and runs the
per-node loops of long scalar graphs (counting consumers, the 0-d fast path,
node recording, the 0-d case of :func:`binary_method`/:func:`unary_function`);
results are the same bits, and the Python code here is what runs without it.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence

from gradcalc import _numpy, _recycle
from gradcalc.errors import (
    DtypeGradError,
    FreedGraphError,
    GradError,
    ImplicitGradError,
    InplaceLeafError,
    NoGradFnError,
)

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())

# log(0), 1/0, exp(1000): the engine answers -inf/inf/nan silently, as PyTorch
# does. NumPy warns about them from the frame that called the ufunc, which is
# always one of ours; np.errstate around every op would cost a microsecond each.
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"gradcalc\.")


def _load_native() -> Any:
    """The C extension (see ``_native.c``), or None: not built, or GRADCALC_PURE_PYTHON=1."""
    if os.environ.get("GRADCALC_PURE_PYTHON", "").lower() not in ("", "0", "false", "no"):
        return None
    try:
        from gradcalc import _native
    except ImportError:  # installed without a C compiler
        return None
    return _native


_native = _load_native()
"""The C loops, or None; tests set it to None to run the Python loops (``conftest.py``)."""

_grad_enabled = True
_recording = False


class _NotLoaded:
    """NumPy's array and scalar types until NumPy is loaded: nothing is an instance."""


_generic: Any = _NotLoaded
_ndarray: Any = _NotLoaded
_RECYCLE_BYTES = _recycle.MIN_BYTES

FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after "
    "calling backward."
)


# ---------------------------------------------------------------- dtypes


class dtype:
    """A dtype object printed as PyTorch prints it (``torch.float32``), NumPy's underneath
    (``.np``, made when first read: a float64 on the float backend needs no NumPy)."""

    __slots__ = ("_np", "is_floating_point", "itemsize", "name")

    def __init__(self, name: str, itemsize: int, np_dtype: Any = None) -> None:
        self.name = name
        self._np = np_dtype
        self.is_floating_point = name.startswith("float")
        self.itemsize = itemsize

    @property
    def np(self) -> np.dtype:
        found = self._np
        if found is None:
            found = self._np = np.dtype(self.name)
        return found

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dtype):
            return self is other
        try:
            return self.np == np.dtype(other)  # type: ignore[arg-type]
        except TypeError:
            return False

    def __hash__(self) -> int:
        return hash(self.np)


float16 = dtype("float16", 2)
float32 = dtype("float32", 4)
float64 = dtype("float64", 8)
int8 = dtype("int8", 1)
int16 = dtype("int16", 2)
int32 = dtype("int32", 4)
int64 = dtype("int64", 8)
uint8 = dtype("uint8", 1)
bool_ = dtype("bool", 1)
_DTYPES: dict[Any, dtype] = {}
"""NumPy dtype -> gradcalc dtype, filled when NumPy loads (:func:`_with_numpy`)."""


_default_float = float32
"""The dtype Python floats become (``set_default_dtype``); read it at call time
through :func:`default_float` / :func:`get_default_dtype`."""


def default_float() -> np.dtype:
    """The NumPy dtype Python floats become in the Python API (float32 unless changed)."""
    return _default_float.np


def get_default_dtype() -> dtype:
    """The dtype tensors made from Python floats get (float32 unless changed)."""
    return _default_float


def set_default_dtype(d: Any) -> None:
    """Make Python floats (and int tensors promoted to floats) ``d``: float16, float32
    or float64, as in PyTorch; process-wide."""
    global _default_float
    found = as_np_dtype(d) if isinstance(d, dtype | str) or d is float else None
    if found is None or found.kind != "f":
        raise TypeError("only floating-point types are supported as the default type")
    _default_float = dtype_of(found)


_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "ipu", "mtia", "hpu")


class device:
    """``torch.device``: gradcalc computes on the CPU; other devices can be named, not used."""

    __slots__ = ("index", "type")

    def __init__(self, type: Any, index: int | None = None) -> None:
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        if not isinstance(type, str):
            raise RuntimeError(
                f"Expected a device type string, got {type!r}: gradcalc has no accelerators"
            )
        name, colon, number = type.partition(":")
        if name not in _DEVICE_TYPES:
            raise RuntimeError(
                f"Expected one of {', '.join(_DEVICE_TYPES)} device type at start of "
                f"device string: {type}"
            )
        if colon:
            if not number.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}'")
            if index is not None:
                raise RuntimeError(
                    "type (string) must not include an index because index was passed explicitly: "
                    + type
                )
            index = int(number)
        if index is not None and (not isinstance(index, int) or index < 0):
            raise RuntimeError(f"Device index must not be negative, got {index}")
        self.type = name
        self.index = index

    def __repr__(self) -> str:
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, device):
            return NotImplemented
        return (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


_CPU = device("cpu")


def check_device(value: Any) -> None:
    """Accept ``device=`` arguments naming the CPU; others are a clear RuntimeError."""
    if value is None or value is _CPU:
        return
    found = device(value) if isinstance(value, str | device) else None
    if found is None:
        raise TypeError(f"device must be a string or torch.device, not {type(value).__name__}")
    if found.type != "cpu":
        raise RuntimeError(
            f"device '{found}' is not available: gradcalc computes on the CPU only "
            "(use device='cpu', or leave device out)"
        )


def get_default_device() -> device:
    """Where new tensors live: always the CPU."""
    return _CPU


def set_default_device(value: Any) -> None:
    """Accepts the CPU (or None, PyTorch's reset); any other device is a RuntimeError."""
    check_device(value)


def as_np_dtype(value: Any) -> np.dtype | None:
    """A NumPy dtype from a gradcalc dtype, a NumPy dtype, a type or a name (None stays None)."""
    if value is None:
        return None
    if isinstance(value, dtype):
        return value.np
    if isinstance(value, str):
        value = value.removeprefix("torch.").removeprefix("gradcalc.")
        value = {"float": "float32", "double": "float64", "long": "int64", "int": "int32"}.get(
            value, value
        )
    if value is float:
        return default_float()
    return np.dtype(value)


def dtype_of(np_dtype: np.dtype) -> dtype:
    """The gradcalc dtype object for a NumPy dtype."""
    found = _DTYPES.get(np_dtype)
    if found is None:
        found = _DTYPES[np_dtype] = dtype(np_dtype.name, np_dtype.itemsize, np_dtype)
    return found


class Size(tuple):
    """A shape, printed as PyTorch prints it: ``torch.Size([2, 3])``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"

    def numel(self) -> int:
        n = 1
        for d in self:
            n *= d
        return n


# ---------------------------------------------------------------- grad mode


# Grad mode is per thread, as in PyTorch. Every op reads the module-wide
# ``_grad_enabled`` first: True while no thread has turned grad off, so the
# common case costs one global read; otherwise the thread's own mode decides.
_thread_mode = threading.local()
_threads_off: set[int] = set()
_mode_lock = threading.Lock()


def _grad_here() -> bool:
    """This thread's grad mode (consulted while some thread has grad off)."""
    return getattr(_thread_mode, "on", True)


def is_grad_enabled() -> bool:
    return _grad_enabled or _grad_here()


def _set_grad_enabled(mode: bool) -> bool:
    """Set this thread's grad mode; return its previous one."""
    global _grad_enabled
    mode = bool(mode)
    previous = _grad_here()
    _thread_mode.on = mode
    with _mode_lock:
        if mode:
            _threads_off.discard(threading.get_ident())
        else:
            _threads_off.add(threading.get_ident())
        _grad_enabled = not _threads_off
    return previous


class _GradModeContext:
    """Base of ``no_grad``/``enable_grad``/``set_grad_enabled``: context manager and decorator."""

    _mode = True

    def __enter__(self) -> None:
        self._previous = _set_grad_enabled(self._mode)

    def __exit__(self, *exc: object) -> None:
        _set_grad_enabled(self._previous)

    def __call__(self, func: Any) -> Any:
        import functools

        mode = self._mode

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            previous = _set_grad_enabled(mode)
            try:
                return func(*args, **kwargs)
            finally:
                _set_grad_enabled(previous)

        return wrapper


class no_grad(_GradModeContext):
    """Operations inside record no graph (context manager or decorator)."""

    _mode = False


class enable_grad(_GradModeContext):
    """Operations inside record a graph even within ``no_grad``."""

    _mode = True


class set_grad_enabled(_GradModeContext):
    """Turn recording on or off; works as a function, a context manager or a decorator."""

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)
        self._previous = _set_grad_enabled(self._mode)

    def __enter__(self) -> None:
        pass


class record_values:  # (lower case: used like a function, ``with record_values():``)
    """Inside, each new Node keeps its output in ``node.value`` and backward keeps the
    node's incoming gradient in ``node.grad_value``, for renderers that show both.
    (A class, not ``contextlib.contextmanager``: ``contextlib`` cost every start-up ~1 ms.)"""

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        global _recording
        self._previous, _recording = _recording, True

    def __exit__(self, *exc_info: object) -> None:
        global _recording
        _recording = self._previous


_recorded_steps = 0


def _record_gradient(meta: _Meta, data: Any) -> None:
    """Keep the gradient that reached a node and when it did (see :func:`record_values`)."""
    global _recorded_steps
    meta.grad_value = data
    meta.step = _recorded_steps
    _recorded_steps += 1


def is_recording_values() -> bool:
    """Whether :func:`record_values` is active (nodes keep values and gradients)."""
    return _recording


def backward_passes() -> int:
    """How many backward passes (``backward`` and ``grad`` alike) this process has run:
    unchanged across a piece of work means no leaf got a gradient and no graph was freed."""
    return _passes


# ---------------------------------------------------------------- nodes


class _Meta:
    """A node's rarely used extras, kept apart so recording a node stays cheap."""

    __slots__ = ("grad_value", "hooks", "retain", "step", "value")

    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.grad_value = None
        self.retain = None
        self.hooks: dict | None = None
        """The output tensor's ``register_hook`` functions, in order (:class:`RemovableHandle`)."""
        self.step = -1
        """When backward reached the node: its place in the recorded passes (explain mode)."""


if _native is not None:
    _NodeSlots: type = _native.Node
else:

    class _NodeSlots:  # type: ignore[no-redef]
        """Node's slots; ``gradcalc._native.Node`` has the same ones in C."""

        __slots__ = ("ans", "consts", "deps", "holds", "meta", "p0", "p1", "s0", "s1")


_new_node = _NodeSlots.__new__  # object.__new__, or the C type's: no __init__ frame


class Node(_NodeSlots):
    """A grad_fn: one recorded operation. Subclasses per op carry PyTorch's names.

    ``p0``/``p1`` are the operands' grad_fns (an :class:`AccumulateGrad` for
    a leaf that requires grad) or None, PyTorch's ``next_functions``;
    ``s0``/``s1`` the operands' *data* as the VJPs need it (a zero-memory
    stand-in with the right shape and dtype when no VJP reads the values) or
    the Python numbers they were. An op over a sequence (``kind == 0``)
    keeps tuples in ``p0``/``s0``. ``consts`` are the op's non-tensor
    arguments, ``ans`` the output's data when the VJP needs it, ``holds``
    whether backward frees saved tensor data (then a second backward is an
    error), ``deps`` the running backward pass's consumer count, ``meta``
    the rare extras (:class:`_Meta`). Nodes are made only by :func:`_record`.
    Nodes reference data and other nodes, never tensors: graphs hold
    no reference cycles, die with their outputs, and each node is a single
    object for the cyclic garbage collector to track (no tuples per node).
    """

    __slots__ = ("__weakref__",)
    op: Any = None
    vjps: Any = ()
    negates = False
    """The VJP is exactly ``-g``: a raw backward folds it into the sum at the operand."""
    kind = 1
    """1 or 2 operands; 0 for an op over a sequence; -1 for AccumulateGrad."""

    @property
    def parents(self) -> tuple:
        """The operands' grad_fns (or None), one per operand."""
        kind = self.kind
        if kind == 0:
            return self.p0
        if kind == 1:
            return (self.p0,)
        if kind == 2:
            return (self.p0, self.p1)
        return ()

    @property
    def saved(self) -> tuple | None:
        """What the VJPs read, one entry per operand (None once backward freed it)."""
        if self.holds is _FREED:
            return None
        kind = self.kind
        if kind == 0:
            return self.s0
        if kind == 1:
            return (self.s0,)
        if kind == 2:
            return (self.s0, self.s1)
        return ()

    @property
    def value(self) -> Any:
        """The output's data, recorded inside :func:`record_values` (else None)."""
        meta = self.meta
        return None if meta is None else meta.value

    @value.setter
    def value(self, data: Any) -> None:
        self._meta().value = data

    @property
    def grad_value(self) -> Any:
        """The total gradient that reached this node in the last recorded backward."""
        meta = self.meta
        return None if meta is None else meta.grad_value

    @grad_value.setter
    def grad_value(self, data: Any) -> None:
        self._meta().grad_value = data

    @property
    def step(self) -> int:
        """When the last recorded backward pass ran this node, counted across passes
        (-1: never); explain mode lists the backward pass in this order."""
        meta = self.meta
        return -1 if meta is None else meta.step

    @property
    def _retain(self) -> Any:
        meta = self.meta
        return None if meta is None else meta.retain

    def _meta(self) -> _Meta:
        meta = self.meta
        if meta is None:
            meta = self.meta = _Meta()
        return meta

    def name(self) -> str:
        return type(self).__name__

    @property
    def next_functions(self) -> tuple[tuple[Node | None, int], ...]:
        return tuple((p, 0) for p in self.parents)

    @property
    def previous_functions(self) -> tuple[tuple[Any, int], ...]:
        """Legacy (PyTorch 0.1) spelling: like next_functions, but leaves appear as tensors."""
        return tuple((p.variable if isinstance(p, AccumulateGrad) else p, 0) for p in self.parents)

    @property
    def metadata(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object at {id(self):#x}>"

    def __call__(self, *grads: Any) -> Any:
        raise GradError(f"{self.name()} cannot be called directly; use backward() or grad()")


class AccumulateGrad(Node):
    """The grad_fn slot of a leaf that requires grad: backward adds into ``variable.grad``."""

    __slots__ = ("variable",)
    kind = -1

    def __init__(self, variable: Tensor) -> None:
        self.p0 = self.p1 = self.s0 = self.s1 = None
        self.consts = ()
        self.ans = None
        self.holds = False
        self.meta = None
        self.deps = 0
        self.variable = variable


def node_class(grad_fn_name: str, op: Any) -> type[Node]:
    """A Node subclass named like PyTorch's grad_fn (``MulBackward0``) for one op."""
    kind = {"1": 1, "2": 2}.get(op.arity, 0)
    namespace = {
        "__slots__": (),
        "op": op,
        "vjps": op.vjps,
        "kind": kind,
        "negates": op.negates,
        "__module__": __name__,
    }
    return type(grad_fn_name, (Node,), namespace)


# ---------------------------------------------------------------- tensor hooks

_hook_ids = iter(range(1 << 62))


class _KeptNode:
    """What a hooked leaf keeps in ``_accum`` instead of a weak reference: called like
    one, it returns the AccumulateGrad node, which holds the leaf's hooks and must
    live as long as the leaf (the leaf <-> node cycle is the garbage collector's)."""

    __slots__ = ("node",)

    def __init__(self, node: AccumulateGrad) -> None:
        self.node = node

    def __call__(self) -> AccumulateGrad:
        return self.node


class RemovableHandle:
    """What ``register_hook`` returns: ``remove()`` unregisters the hook (PyTorch's
    ``torch.utils.hooks.RemovableHandle``, a context manager too)."""

    __slots__ = ("_hooks", "id")

    def __init__(self, hooks: dict, key: int) -> None:
        self._hooks = hooks
        self.id = key

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _call_hooks(hooks: dict, g: Any, recorded: bool) -> Any:
    """Run a tensor's hooks in registration order on its gradient ``g`` (raw data, or a
    Tensor in a recorded pass); a hook may return a replacement of the same shape."""
    for hook in list(hooks.values()):
        given = g if recorded else _wrap(_own(g))
        out = hook(given)
        if out is None:
            continue
        if not isinstance(out, Tensor):
            raise TypeError(f"expected Variable, but hook returned {type(out).__name__!r}")
        if np.shape(out._data) != np.shape(g._data if recorded else g):
            name = getattr(hook, "__name__", type(hook).__name__)
            raise GradError(f"hook {name!r} has changed the size of value")
        g = out if recorded else _cast_like(out._data, g)
    return g


# ---------------------------------------------------------------- tensor


# ---------------------------------------------------------------- version counter
# PyTorch bumps a tensor's version at each in-place change, and a backward pass
# refuses a node whose saved tensor's version moved since it was saved. Here an
# in-place change marks the data object it changes as stale (`_stale`, by identity)
# and gives the tensor a new view of the same memory, so nodes recorded afterwards
# save an object that is not stale. Backward looks for stale saved data only when
# something was ever marked (`_check_versions`): nothing is added to recording.

_versions: dict[int, list] = {}
"""id(tensor) -> [its version, a weak reference that forgets it], for tensors changed in
place at least once (by identity: a Tensor's == compares elements)."""
_stale: dict[int, tuple] = {}
"""id(data object) -> (the object, its tensor's version cell, the version it had, a weak
reference to the tensor): data some node may have saved before an in-place change."""
_STALE_PRUNE = [256]
"""Size of `_stale` at which entries nothing else holds any more are dropped."""


def _modified(tensor: Tensor) -> None:
    """Record an in-place change of ``tensor`` about to happen (see above)."""
    key = id(tensor)
    cell = _versions.get(key)
    if cell is None or cell[1]() is not tensor:
        forget = weakref.ref(tensor, lambda _, key=key: _versions.pop(key, None))
        cell = _versions[key] = [0, forget]
    data = tensor._raw  # (a float backend's float as it is: what a node saved)
    _stale[id(data)] = (data, cell, cell[0], weakref.ref(tensor))
    cell[0] += 1
    if len(_stale) > _STALE_PRUNE[0]:
        _prune_stale()
        _STALE_PRUNE[0] = max(256, 2 * len(_stale))


def _prune_stale() -> None:
    """Forget stale data nothing but `_stale` holds (no node can have saved it): its data is
    held by the entry, a local name and getrefcount's argument, and, when its tensor still
    views that memory, by the view's ``base`` (its data, made a view by the change)."""
    getrefcount = sys.getrefcount
    for key, (data, _, _, tensor_ref) in list(_stale.items()):
        tensor = tensor_ref()
        viewed = tensor is not None and getattr(tensor._data, "base", None) is data
        if getrefcount(data) <= 3 + viewed:  # (the entry, this name, the argument)
            del _stale[key]


def _view_of_leaf(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a view (shares memory) of a leaf that requires grad, through a
    chain of one-operand nodes (indexing, reshapes, transposes)."""
    data = tensor._raw
    if not isinstance(data, _ndarray) or data.base is None:
        return False
    node = tensor._grad_fn
    for _ in range(64):
        if node is None or node.kind == 0 or node.kind == 2:
            return False
        if node.kind == -1:
            leaf = node.variable._raw
            return isinstance(leaf, _ndarray) and np.may_share_memory(leaf, data)
        node = node.p0
    return False


def _check_versions(roots: Sequence[Node]) -> None:
    """Raise PyTorch's error if a node about to run saved data an in-place change has
    since modified. Called by a backward pass only after some in-place change."""
    seen: set[int] = set()
    todo = [root for root in roots if root is not None]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        kind = node.kind
        if kind == -1 or node.holds is _FREED:
            continue
        parents = node.p0 if kind == 0 else (node.p0, node.p1) if kind == 2 else (node.p0,)
        saved = node.s0 if kind == 0 else (node.s0, node.s1) if kind == 2 else (node.s0,)
        for index, data in enumerate((*saved, node.ans)):
            entry = _stale.get(id(data))
            if entry is not None and entry[0] is data:
                raise GradError(_version_message(node, entry, index == len(saved)))
        todo.extend(p for p in parents if p is not None)


_TORCH_TYPES = {"float32": "Float", "float64": "Double", "int64": "Long", "bool": "Bool"}


def _version_message(node: Node, entry: tuple, output: bool) -> str:
    data, cell, expected, tensor_ref = entry
    dtype = np.dtype(bool if type(data) is bool else getattr(data, "dtype", np.float64))
    kind = _TORCH_TYPES.get(dtype.name, dtype.name.capitalize())
    shape = ", ".join(str(n) for n in np.shape(data))
    owner = node if output else getattr(tensor_ref(), "_grad_fn", None)
    which = ""
    if owner is not None and type(owner) is not AccumulateGrad:
        which = f", which is output 0 of {owner.name().split('Backward')[0]},"
    return (
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: [torch.{kind}Tensor [{shape}]]{which} is at version {cell[0]}; "
        f"expected version {expected} instead. Hint: enable anomaly detection to find the "
        "operation that failed to compute its gradient, with "
        "torch.autograd.set_detect_anomaly(True, check_nan=False)."
    )


def _wrap(data: Any) -> Tensor:
    t = _new_tensor(Tensor)
    t._raw = data
    t._grad_fn = None
    t._requires_grad = False
    t._grad = None
    t._accum = None
    return t


def _record_py(
    node_class: type[Node],
    data: Any,
    p0: Any,
    p1: Any,
    s0: Any,
    s1: Any,
    consts: tuple,
    ans: Any,
    holds: Any,
) -> Tensor:
    """A node of ``node_class`` (fields as :class:`Node` describes) and the tensor
    ``data`` it made: the one way nodes are built. ``_native.record`` is the same in C.

    One path costs, on W2 without the C extension, ~9% more forward instructions
    per node than the attribute stores the six call sites had inlined (~3.5% of
    the whole chain); with it, ``_native.record`` makes the forward 5% cheaper.
    """
    node = _new_node(node_class)
    node.p0 = p0
    node.p1 = p1
    node.s0 = s0
    node.s1 = s1
    node.consts = consts
    node.ans = ans
    node.holds = holds
    node.deps = 0
    node.meta = _Meta(data) if _recording else None
    t = _new_tensor(Tensor)
    t._raw = data
    t._grad_fn = node
    t._requires_grad = True
    t._grad = None
    t._accum = None
    return t


_record = _record_py if _native is None else _native.record


def _edge(t: Tensor) -> Node:
    """The node a consumer of ``t`` (which requires grad) points to."""
    fn = t._grad_fn
    if fn is not None:
        return fn
    ref = t._accum
    acc = ref() if ref is not None else None
    if acc is None:
        acc = AccumulateGrad(t)
        t._accum = weakref.ref(acc)
    return acc


_stand_ins: dict[tuple, np.ndarray] = {}


def _stand_in(data: Any) -> Any:
    """What a node keeps of an operand whose values no VJP reads: for an array, a
    read-only zero-strided view with its shape and dtype (no memory); numbers as is."""
    if type(data) is not _ndarray or data.ndim == 0:
        return data
    key = (data.dtype, data.shape)
    found = _stand_ins.get(key)
    if found is None:
        if len(_stand_ins) > 512:
            _stand_ins.clear()
        found = _stand_ins[key] = np.broadcast_to(np.zeros((), data.dtype), data.shape)
    return found


# ---------------------------------------------------------------- the float backend
#
# A float64 0-d tensor made from a Python number holds a Python float
# (``_raw``; see :func:`float_tensor`), and a comparison of such values a
# Python bool (a 0-d bool tensor). Ops on such data run their Python-float
# forward (``Op.scalar``, from :mod:`math` and :mod:`operator`), and backward
# runs the same VJPs on floats, so all-scalar work, ``if`` and ``while``
# included, needs no NumPy. Which backend runs is decided here, by the data:
# :func:`on_floats` answers or declines, and a declined op (no ``scalar=``, an
# operand that is an array, a result NumPy would type otherwise, or a value
# NumPy answers with inf/nan where ``math`` raises) reads ``_data``, which
# converts the value to NumPy's float64 or bool once, in one place
# (``Tensor._data``). Results are the same bits as NumPy's for
# ``+ - * / sqrt`` and within 1 ulp otherwise (tests/test_engine_scalar.py
# walks the registry, tests/test_float_backend.py compares whole formulas).

PYTHON_VALUES = frozenset((float, bool))
"""What a float backend tensor's data is: a float (float64) or a bool (bool)."""
_FLOATS = frozenset((float, int, bool))
"""Operand types the float backend takes: its values, and Python ints beside them."""


def on_floats(op: Any, args: tuple) -> float | bool | None:
    """``op``'s forward on Python floats, or None where it declines (see above)."""
    scalar = op.scalar
    if scalar is None:
        return None
    try:
        out = scalar(*args)
    except (ArithmeticError, ValueError):
        return None
    return out if type(out) in PYTHON_VALUES else None


def float_tensor(value: float) -> Tensor:
    """A float64 0-d constant on the float backend (its data a Python float): what the
    formula language's numbers are in float64 (``builtins.Context.zero_d``) and what
    ``tensor(number, dtype=float64)`` makes."""
    return _wrap(float(value))


def _to_numpy(value: float | bool) -> Any:
    """A float backend's value as the NumPy float64 or bool it stands for (``Tensor._data``)."""
    return np.float64(value) if type(value) is float else np.bool_(value)


def _retry_on_numpy(vjp: Any, args: tuple) -> Any:
    """A VJP that raised ArithmeticError on Python floats (``1.0 / 0.0``, ``0.0 ** -1``)
    runs again on NumPy float64s, which answer inf or nan as the array path does."""
    return vjp(*[_to_numpy(a) if type(a) is float else a for a in args])


def apply1(op: Any, x: Tensor, *consts: Any) -> Tensor:
    """Run a one-operand op (``x`` a Tensor) and record it when ``x`` requires grad."""
    xd = x._raw
    record = x._requires_grad and (_grad_enabled or _grad_here()) and op.node is not None
    data = None
    if type(xd) in PYTHON_VALUES:
        data = on_floats(op, (xd, *consts))
        if data is None:
            xd = x._data
    elif (
        record
        and op.pooled is not None
        and type(xd) is _ndarray
        and xd.nbytes >= _RECYCLE_BYTES
        and _recycle.poolable(xd)
    ):
        data = op.pooled(xd, *consts)
    if data is None:
        data = op.forward(xd, *consts)
    if record:
        saves = op.saves
        p0 = x._grad_fn or _edge(x)
        s0 = xd if saves else _stand_in(xd)
        ans = data if op.uses_ans else None
        return _record(op.node, data, p0, None, s0, None, consts, ans, saves)
    return _wrap(data)


class ShapeMismatch(RuntimeError, ValueError):
    """Operands whose shapes do not fit (broadcasting, matmul, reshape): PyTorch's
    RuntimeError and message (a ValueError too, what NumPy raised here before, so code
    catching either still works)."""


def _broadcast_error(xd: Any, yd: Any, exc: ValueError) -> Exception:
    """PyTorch's message for shapes that do not broadcast (``exc`` itself otherwise):
    the last dimension, counted in the broadcast result, where the sizes differ."""
    a, b = np.shape(xd), np.shape(yd)
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        ndim = max(len(a), len(b))
        for dim in range(ndim - 1, -1, -1):
            i, j = dim - (ndim - len(a)), dim - (ndim - len(b))
            size_a = a[i] if i >= 0 else 1
            size_b = b[j] if j >= 0 else 1
            if size_a != size_b and size_a != 1 and size_b != 1:
                return ShapeMismatch(
                    f"The size of tensor a ({size_a}) must match the size of tensor b "
                    f"({size_b}) at non-singleton dimension {dim}"
                )
    return exc


def apply2(op: Any, x: Any, y: Any, *consts: Any) -> Tensor:
    """Run a two-operand op; either operand may be a Python number (its edge is None)."""
    tx = type(x) is Tensor
    ty = type(y) is Tensor
    xd = x._raw if tx else x
    yd = y._raw if ty else y
    rx = tx and x._requires_grad
    ry = ty and y._requires_grad
    data = None
    try:
        if (tx and type(xd) in PYTHON_VALUES) or (ty and type(yd) in PYTHON_VALUES):
            if type(xd) in _FLOATS and type(yd) in _FLOATS:
                data = on_floats(op, (xd, yd, *consts))
            if data is None:  # NumPy takes over
                xd = x._data if tx else x
                yd = y._data if ty else y
        elif (
            (rx or ry)
            and (_grad_enabled or _grad_here())
            and op.pooled is not None
            and type(xd) is _ndarray
            and xd.dtype.kind == "f"
        ):
            data = op.pooled(xd, yd, *consts)  # None: not a large float result
        if data is None:
            data = op.forward(xd, yd, *consts)
    except ValueError as exc:
        raise _broadcast_error(xd, yd, exc) from None
    if (rx or ry) and (_grad_enabled or _grad_here()) and op.node is not None:
        k0, k1 = op.keep2[rx + 2 * ry]
        p0 = (x._grad_fn or _edge(x)) if rx else None
        p1 = (y._grad_fn or _edge(y)) if ry else None
        s0 = xd if k0 else _stand_in(xd)
        s1 = yd if k1 else _stand_in(yd)
        ans = data if op.uses_ans else None
        holds = (k0 and tx) or (k1 and ty)
        return _record(op.node, data, p0, p1, s0, s1, consts, ans, holds)
    return _wrap(data)


def unary_function(op: Any, slow: Any) -> Any:
    """A float elementwise op (``sin``, ``exp``) with the common case inlined: a float
    Tensor in, one node out. Anything else (ints, lists, numbers) goes through ``slow``."""
    node_class = op.node
    saves = op.saves
    uses_ans = op.uses_ans

    def function(input: Any) -> Tensor:
        if type(input) is not Tensor:
            return slow(input)
        xd = input._raw
        if type(xd) in PYTHON_VALUES:
            return apply1(op, input) if type(xd) is float else slow(input)  # the float backend
        kind = xd.dtype.kind
        if kind not in "fc":
            return slow(input)
        record = input._requires_grad and (_grad_enabled or _grad_here())
        if record and op.ufunc is not None and kind == "f" and xd.nbytes >= _RECYCLE_BYTES:
            data = _recycle.unary(op.ufunc, xd)  # a training step's array: pooled
        else:
            data = op.forward(xd)  # read per call: NumPy's own once loaded (see _numpy)
        if record:
            p0 = input._grad_fn or _edge(input)
            s0 = xd if saves else _stand_in(xd)
            ans = data if uses_ans else None
            return _record(node_class, data, p0, None, s0, None, (), ans, saves)
        return _wrap(data)

    function.__name__ = function.__qualname__ = op.name
    return _fast_op(function, op, 1, saves)


def _fast_op(python: Any, op: Any, arity: int, keep: Any) -> Any:
    """``python`` (an op's inlined Python path), or the C FastOp that runs its 0-d
    case where the op is quiet (``op.quiet``) and calls ``python`` for everything
    else (see ``_native.c``)."""
    if _native is None or op.node is None or op.quiet is None or op.scalar is None:
        return python
    fast = _native.FastOp(
        python, op.forward, op.scalar, op.node, arity, op.uses_ans, keep, op.quiet
    )
    # its fast path takes NumPy scalars only, so it first runs once NumPy is loaded
    # (the op's own hook, registered before this one, resolved op.forward by then)
    _numpy.when_loaded(lambda numpy: _native.set_forward(fast, op.forward))
    return fast


def binary_method(op: Any, slow: Any, float_only: bool = False) -> Any:
    """A Tensor operator for a binary op with the common cases inlined.

    Same-dtype tensors and a Python number beside a float tensor run here
    directly (the hot path of long scalar chains); anything needing dtype
    promotion or conversion goes through ``slow`` (so does every non-float
    operand when ``float_only``: true division of integers gives float32).
    """
    node_class = op.node
    uses_ans = op.uses_ans
    keep = op.keep2
    keep_with_number = keep[1][0]

    def method(self: Tensor, other: Any) -> Tensor:
        kind = type(other)
        xd = self._raw
        if type(xd) in PYTHON_VALUES:  # the float backend: float64 (or with a bool) stays
            other_raw = other._raw if kind is Tensor else None
            if (
                type(xd) is float
                and (kind is float or kind is int or type(other_raw) in PYTHON_VALUES)
            ) or type(other_raw) is float:
                return apply2(op, self, other)
            return slow(self, other)
        if type(xd) is _ndarray and not xd.ndim:
            # A 0-d array (a leaf or a constant) as a NumPy scalar: arithmetic
            # with NumPy scalars is several times cheaper and, for + - * /,
            # gives the same bits (IEEE 754 rounds each of them correctly).
            xd = xd[()]
        if kind is Tensor:
            yd = other._data
            if type(yd) is _ndarray and not yd.ndim:
                yd = yd[()]
            if type(xd) is not type(yd) or (
                type(xd) is _ndarray and xd.dtype is not yd.dtype
            ):  # NumPy scalars of one type share a dtype
                return slow(self, other)
            if float_only and xd.dtype.kind not in "fc":
                return slow(self, other)
            rx = self._requires_grad
            ry = other._requires_grad
            if (
                (rx or ry)
                and type(xd) is _ndarray
                and xd.nbytes >= _RECYCLE_BYTES
                and op.ufunc is not None
                and xd.shape == yd.shape
                and xd.dtype.kind == "f"
                and (_grad_enabled or _grad_here())
            ):
                data = _recycle.binary(op.ufunc, xd, yd)  # a training step's array: pooled
            else:
                try:
                    data = op.forward(xd, yd)
                except ValueError as exc:
                    raise _broadcast_error(xd, yd, exc) from None
            if (rx or ry) and (_grad_enabled or _grad_here()):
                k0, k1 = keep[rx + 2 * ry]
                return _record(
                    node_class,
                    data,
                    (self._grad_fn or _edge(self)) if rx else None,
                    (other._grad_fn or _edge(other)) if ry else None,
                    xd if k0 or type(xd) is not _ndarray else _stand_in(xd),
                    yd if k1 or type(yd) is not _ndarray else _stand_in(yd),
                    (),
                    data if uses_ans else None,
                    k0 or k1,
                )
            return _wrap(data)
        if kind is float or kind is int:
            if (kind is float or float_only) and xd.dtype.kind not in "fc":
                return slow(self, other)
            record = self._requires_grad and (_grad_enabled or _grad_here())
            if (
                record
                and type(xd) is _ndarray
                and xd.nbytes >= _RECYCLE_BYTES
                and op.ufunc is not None
                and xd.dtype.kind == "f"
            ):
                data = _recycle.binary(op.ufunc, xd, other)
            else:
                data = op.forward(xd, other)
            if record:
                return _record(
                    node_class,
                    data,
                    self._grad_fn or _edge(self),
                    None,
                    xd if keep_with_number or type(xd) is not _ndarray else _stand_in(xd),
                    other,
                    (),
                    data if uses_ans else None,
                    keep_with_number,
                )
            return _wrap(data)
        return slow(self, other)

    method.__name__ = method.__qualname__ = f"__{op.name}__"
    return _fast_op(method, op, 2, keep)


def applyn(op: Any, operands: Sequence[Any], *consts: Any) -> Tensor:
    """Run an op over a sequence of operands (cat, stack, where)."""
    datas = [o._data if type(o) is Tensor else o for o in operands]
    data = op.forward(datas, *consts)
    if (_grad_enabled or _grad_here()) and op.node is not None:
        parents = tuple(
            _edge(o) if type(o) is Tensor and o._requires_grad else None for o in operands
        )
        if any(p is not None for p in parents):
            saves = op.saves
            saved = tuple(datas) if saves else tuple(_stand_in(d) for d in datas)
            ans = data if op.uses_ans else None
            return _record(op.node, data, parents, None, saved, None, consts, ans, saves)
    return _wrap(data)


OVERFLOW_MESSAGE = "Overflow when unpacking long long"
"""PyTorch's error for a Python int beyond int64 (``tensor([2**63])``), where NumPy would wrap."""
_INT64_MAX = 2**63 - 1


def _infer_array(data: Any, np_dtype: np.dtype | None) -> np.ndarray:
    """An owned ndarray from Python data with PyTorch's dtype defaults."""
    if isinstance(data, Tensor):
        arr = np.array(data._data, dtype=np_dtype, copy=True)
        return arr
    if isinstance(data, (np.ndarray, np.generic)):
        return np.array(data, dtype=np_dtype, copy=True)
    if isinstance(data, (list, tuple)) and _holds_tensor(data):
        data = _untensor(data)
    arr = np.array(data, dtype=np_dtype)
    if np_dtype is None:
        if arr.dtype.kind == "f" and arr.dtype != default_float() and not _has_numpy(data):
            if arr.size and np.max(np.abs(arr)) >= 2.0**63 and _int_overflow(data):
                raise ValueError(OVERFLOW_MESSAGE)  # [2**63, -1]: NumPy made floats of it
            arr = arr.astype(default_float())
        elif arr.dtype.kind in "iu" and arr.dtype != np.int64:
            if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
                raise ValueError(OVERFLOW_MESSAGE)  # NumPy chose uint64; PyTorch refuses
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "O":
            if _int_overflow(data):
                raise ValueError(OVERFLOW_MESSAGE)  # an int past 64 bits
            if not all(type(v) in (int, float, bool) for v in _flat_items(data)):
                raise TypeError(f"Could not infer dtype of {type(data).__name__}")
            arr = np.array(data, dtype=np.float64).astype(default_float())  # [1.5, 2**70]
    return arr


def _int_overflow(data: Any) -> bool:
    """Whether ``data`` is integers (PyTorch infers int64) with one outside int64; a float
    among them makes it a float tensor, where a big int is just a large number."""
    items = list(_flat_items(data))
    return all(type(v) in (int, bool) for v in items) and any(
        not -_INT64_MAX - 1 <= v <= _INT64_MAX for v in items
    )


_ROWS = frozenset((list, tuple))


def _holds_tensor(data: list | tuple) -> bool:
    """Whether nested lists and tuples hold a Tensor (what :func:`_flat_items` would
    yield), read without a generator step per number."""
    stack = [data]
    while stack:
        items = stack.pop()
        kinds = set(map(type, items))  # (read at C speed)
        if kinds <= _FLOATS:  # a row of numbers
            continue
        if kinds <= _ROWS:  # rows
            stack.extend(items)
            continue
        for item in items:
            if isinstance(item, (list, tuple)):
                stack.append(item)
            elif isinstance(item, Tensor):
                return True
    return False


def _flat_items(data: Any) -> Iterator[Any]:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            yield item


def _has_numpy(data: Any) -> bool:
    return any(isinstance(v, (np.ndarray, np.floating)) for v in _flat_items(data)) and all(
        isinstance(v, (np.ndarray, np.generic)) for v in _flat_items(data)
    )


def _untensor(data: Any) -> Any:
    """Nested lists holding 0-d tensors → nested lists of their items, without recursion."""
    out: list = []
    stack: list[tuple[Any, list]] = [(data, out)]
    while stack:
        src, dst = stack.pop()
        for item in src:
            if isinstance(item, (list, tuple)):
                child: list = []
                dst.append(child)
                stack.append((item, child))
            elif isinstance(item, Tensor):
                dst.append(item._data)
            else:
                dst.append(item)
    return out


def _check_can_require_grad(np_dtype: np.dtype) -> None:
    if np_dtype.kind not in "fc":
        raise DtypeGradError(
            "Only Tensors of floating point and complex dtype can require gradients"
        )


if _native is not None:
    _TensorSlots: type = _native.TensorBase
else:

    class _TensorSlots:  # type: ignore[no-redef]
        """Tensor's slots; ``gradcalc._native.TensorBase`` has the same ones in C."""

        __slots__ = ("_accum", "_grad", "_grad_fn", "_raw", "_requires_grad")

        @property
        def _data(self) -> Any:
            """The value as NumPy holds it: a float backend's Python float becomes a
            NumPy float64 here, once (the C type's ``_data`` does the same)."""
            raw = self._raw
            if type(raw) in PYTHON_VALUES:
                raw = self._raw = _to_numpy(raw)
            return raw

        @_data.setter
        def _data(self, value: Any) -> None:
            self._raw = value


_new_tensor = _TensorSlots.__new__


class Tensor(_TensorSlots):
    """An n-dimensional value that can record the operations applied to it."""

    __slots__ = ("__weakref__",)
    __array_priority__ = 1000

    def __init__(self, *args: Any, requires_grad: bool = False) -> None:
        """``Tensor([1, 0.1])`` (float32 data) or ``Tensor(2, 3)`` (a 2x3 float32 tensor)."""
        if len(args) == 1 and not isinstance(args[0], (int, np.integer)):
            data = _infer_array(args[0], None)
            if data.dtype != default_float():
                data = data.astype(default_float())
        else:
            shape = args[0] if len(args) == 1 and isinstance(args[0], tuple) else args
            data = np.zeros(tuple(int(d) for d in shape), dtype=default_float())
        self._data = data
        self._grad_fn = None
        self._grad = None
        self._accum = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- autograd attributes ------------------------------------------------

    @property
    def grad_fn(self) -> Node | None:
        return self._grad_fn

    @property
    def creator(self) -> Node | None:
        """Legacy (PyTorch 0.1) name of ``grad_fn``."""
        return self._grad_fn

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if self._grad_fn is not None:
            if not requires_grad:
                raise GradError(
                    "you can only change requires_grad flags of leaf variables. If you want to "
                    "use a computed variable in a subgraph that doesn't require differentiation "
                    "use var_no_grad = var.detach()."
                )
            return self
        if requires_grad and type(self._raw) is not float:  # a float backend float may
            _check_can_require_grad(self._data.dtype)
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def is_leaf(self) -> bool:
        return self._grad_fn is None

    @property
    def grad(self) -> Tensor | None:
        fn = self._grad_fn
        if fn is not None and fn._retain is None:
            return None
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        """PyTorch's checks: a Tensor (or None) of this tensor's shape and dtype."""
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(
                    "assigned grad expected to be a Tensor or None but got grad of type "
                    f"{type(value).__name__}"
                )
            if value.shape != self.shape:
                raise GradError(
                    f"attempting to assign a gradient of size '{list(value.shape)}' to a "
                    f"tensor of size '{list(self.shape)}'. Please ensure that the gradient "
                    "and the tensor are the same size"
                )
            if value.dtype != self.dtype:
                raise GradError(
                    f"attempting to assign a gradient with dtype '{value.dtype}' to a tensor "
                    f"with dtype '{self.dtype}'. The gradient must match the tensor's dtype"
                )
        self._grad = value

    def retain_grad(self) -> None:
        """Keep this non-leaf's gradient in ``.grad`` after backward (no-op on a leaf)."""
        if not self._requires_grad:
            raise GradError("can't retain_grad on Tensor that has requires_grad=False")
        fn = self._grad_fn
        if fn is not None and fn._retain is None:
            fn._meta().retain = weakref.ref(self)

    @property
    def retains_grad(self) -> bool:
        fn = self._grad_fn
        return fn is not None and fn._retain is not None

    def register_hook(self, hook: Any) -> RemovableHandle:
        """Call ``hook(grad)`` each time this tensor's gradient is computed; a Tensor it
        returns replaces the gradient (what flows on, or what a leaf accumulates)."""
        if not self._requires_grad:
            raise GradError("cannot register a hook on a tensor that doesn't require gradient")
        fn = self._grad_fn
        if fn is None:  # a leaf: its AccumulateGrad node holds the hooks, kept alive
            fn = _edge(self)
            if type(self._accum) is not _KeptNode:
                self._accum = _KeptNode(fn)
        meta = fn._meta()
        if meta.hooks is None:
            meta.hooks = {}
        hooks = meta.hooks
        key = next(_hook_ids)
        hooks[key] = hook
        return RemovableHandle(hooks, key)

    def backward(
        self,
        gradient: Any = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Any = None,
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``."""
        backward(
            [self], None if gradient is None else [gradient], retain_graph, create_graph, inputs
        )

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return _wrap(self._raw)

    def detach_(self) -> Tensor:
        self._grad_fn = None
        self._requires_grad = False
        return self

    @property
    def data(self) -> Tensor:
        """The same storage, without history (changes through it are not tracked: its
        data is another view of the memory, so in-place changes through it leave what
        nodes saved unmarked, as PyTorch exempts ``.data``)."""
        if isinstance(self._data, _generic):
            self._data = np.array(self._data)
        return _wrap(self._data.view())

    @data.setter
    def data(self, value: Tensor) -> None:
        self._data = value._data if isinstance(value, Tensor) else np.asarray(value)

    # -- shape and dtype ----------------------------------------------------

    # A float backend's value (a Python float) answers these without NumPy.

    @property
    def shape(self) -> Size:
        return Size(_shape_of(self._raw))

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        return self._data.shape[dim]

    @property
    def ndim(self) -> int:
        return len(_shape_of(self._raw))

    def dim(self) -> int:
        return self.ndim

    def ndimension(self) -> int:
        return self.ndim

    def numel(self) -> int:
        raw = self._raw
        return 1 if type(raw) in PYTHON_VALUES else int(raw.size)

    def nelement(self) -> int:
        return self.numel()

    @property
    def dtype(self) -> dtype:
        raw = self._raw
        if type(raw) in PYTHON_VALUES:
            return float64 if type(raw) is float else bool_
        return dtype_of(raw.dtype)

    @property
    def device(self) -> device:
        return _CPU

    @property
    def is_cuda(self) -> bool:
        return False

    def cpu(self, memory_format: Any = None) -> Tensor:
        """The tensor itself: it is on the CPU already."""
        return self

    def cuda(
        self, device: Any = None, non_blocking: bool = False, memory_format: Any = None
    ) -> Tensor:
        """A RuntimeError: gradcalc computes on the CPU only."""
        check_device(
            "cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device
        )
        return self

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    # -- conversions --------------------------------------------------------

    def item(self) -> Any:
        raw = self._raw
        if type(raw) in PYTHON_VALUES:
            return raw
        if self._data.size != 1:
            raise GradError(
                f"a Tensor with {self._data.size} elements cannot be converted to Scalar"
            )
        return self._data.item()

    def tolist(self) -> Any:
        raw = self._raw
        return raw if type(raw) in PYTHON_VALUES else raw.tolist()

    def numpy(self, force: bool = False) -> np.ndarray:
        if self._requires_grad and not force:
            raise GradError(
                "Can't call numpy() on Tensor that requires grad. "
                "Use tensor.detach().numpy() instead."
            )
        if isinstance(self._data, _generic):
            self._data = np.array(self._data)
        return self._data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = np.asarray(self._data)
        return arr if dtype is None else arr.astype(dtype)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self) -> bool:
        if type(self._raw) in PYTHON_VALUES:
            return bool(self._raw)
        if self._data.size != 1:
            raise GradError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self._data)

    def __hash__(self) -> int:
        return id(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_rebuild, (np.asarray(self._data), self._requires_grad))

    # -- in-place updates ---------------------------------------------------

    def _check_inplace(self) -> None:
        """PyTorch's refusals of an in-place change, then the change's version bump."""
        if (_grad_enabled or _grad_here()) and self._requires_grad:
            if self._grad_fn is None:
                raise InplaceLeafError(
                    "a leaf Variable that requires grad is being used in an in-place operation."
                )
            if _view_of_leaf(self):
                raise InplaceLeafError(
                    "a view of a leaf Variable that requires grad is being used in an "
                    "in-place operation."
                )
        _modified(self)

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor has had (PyTorch's version counter)."""
        cell = _versions.get(id(self))
        return 0 if cell is None or cell[1]() is not self else cell[0]

    def _set_data(self, value: Any) -> Tensor:
        data = self._data
        if isinstance(data, _ndarray) and data.flags.writeable:
            data[...] = value
            self._data = data.view()  # a new object: what nodes saved before is now stale
        else:
            self._data = (
                np.asarray(value, dtype=data.dtype)[()]
                if data.ndim == 0
                else (np.array(np.broadcast_to(value, data.shape), dtype=data.dtype))
            )
        return self

    def _inplace(self, value: Tensor) -> Tensor:
        """Make ``value`` (computed from self) this tensor's new content, graph included."""
        self._check_inplace()
        result = self._set_data(value._data)
        if value._grad_fn is not None:
            self._grad_fn = value._grad_fn
            self._requires_grad = True
        return result

    def zero_(self) -> Tensor:
        self._check_inplace()
        return self._set_data(0)

    def fill_(self, value: Any) -> Tensor:
        self._check_inplace()
        return self._set_data(value._data if isinstance(value, Tensor) else value)

    def copy_(self, src: Any) -> Tensor:
        self._check_inplace()
        return self._set_data(src._data if isinstance(src, Tensor) else src)

    def add_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return self._inplace(self.add(other, alpha=alpha))

    def sub_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return self._inplace(self.sub(other, alpha=alpha))

    def mul_(self, other: Any) -> Tensor:
        return self._inplace(self * other)

    def div_(self, other: Any) -> Tensor:
        return self._inplace(self / other)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:
        return self._inplace(self.clamp(min, max))

    def __iadd__(self, other: Any) -> Tensor:
        return self.add_(other)

    def __isub__(self, other: Any) -> Tensor:
        return self.sub_(other)

    def __imul__(self, other: Any) -> Tensor:
        return self.mul_(other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self.div_(other)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check_inplace()
        if self._grad_fn is not None or (self._requires_grad and (_grad_enabled or _grad_here())):
            raise GradError(
                "item assignment into a tensor that is part of a graph is not supported"
            )
        if isinstance(self._data, _generic):
            self._data = np.array(self._data)
        self._data[_index_data(index)] = value._data if isinstance(value, Tensor) else value
        self._data = self._data.view()  # (see _set_data)

    # -- printing -----------------------------------------------------------

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        from gradcalc._format import tensor_repr

        return tensor_repr(self, _default_float.name)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        if self.ndim == 0:
            return self.item().__format__(spec)
        return object.__format__(self, spec)


def _rebuild(data: np.ndarray, requires_grad: bool) -> Tensor:
    t = _wrap(data)
    t._requires_grad = bool(requires_grad)
    return t


def _index_data(index: Any) -> Any:
    """A NumPy index from one with tensors in it."""
    if isinstance(index, Tensor):
        return np.asarray(index._data)
    if isinstance(index, tuple):
        return tuple(np.asarray(i._data) if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(_untensor(index)) if any(isinstance(i, Tensor) for i in index) else index
    return index


def make_tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """``gradcalc.tensor``: copy ``data`` into a new leaf with PyTorch's dtype defaults."""
    if (dtype is float64 or dtype == "float64") and type(data) in _FLOATS:
        t = _wrap(float(data))  # a float64 number: the float backend (no NumPy)
        t._requires_grad = bool(requires_grad)
        return t
    arr = _infer_array(data, as_np_dtype(dtype))
    t = _wrap(arr)
    if requires_grad:
        _check_can_require_grad(arr.dtype)
        t._requires_grad = True
    return t


def leaf(data: Any, requires_grad: bool = False) -> Tensor:
    """A leaf around an ndarray the caller owns (constructors), without copying, or
    around a Python float (the float backend)."""
    t = _wrap(data)
    if requires_grad:
        if type(data) is not float:
            _check_can_require_grad(data.dtype)
        t._requires_grad = True
    return t


def wrap(data: Any) -> Tensor:
    """A constant tensor around NumPy data (no copy)."""
    return _wrap(data)


# ---------------------------------------------------------------- backward


def _as_grad_tensor(value: Any, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value
    data = like._raw if type(like._raw) is float else like._data
    if type(data) is float:
        return _wrap(float(value))
    return _wrap(np.asarray(value, dtype=data.dtype))


def _ones_like(data: Any) -> Any:
    """The implicit gradient of a one-element output: 1 in its type and shape."""
    if type(data) is float:
        return 1.0
    if data.ndim == 0:  # (what ``np.ones_like(data)[()]`` gives, without its ~1 µs)
        return data.dtype.type(1)
    return np.ones_like(data)


def _seed_gradients(outputs: Sequence[Tensor], gradients: Sequence[Any] | None) -> list[Tensor]:
    grads = []
    for index, out in enumerate(outputs):
        given = None if gradients is None else gradients[index]
        raw = out._raw
        if type(raw) is float:  # the float backend: a 0-d float64
            if given is None:
                grads.append(_wrap(1.0))
                continue
            shape = ()
        else:
            raw = out._data  # (a float backend bool as NumPy's: an ndarray or NumPy scalar)
            shape = raw.shape
        if given is None:
            if raw.size != 1:
                raise ImplicitGradError("grad can be implicitly created only for scalar outputs")
            given = _wrap(_ones_like(raw))
        else:
            given = _as_grad_tensor(given, out)
            if _shape_of(given._raw) != shape:
                raise GradError(
                    f"Mismatch in shape: grad_output[{index}] has a shape of "
                    f"{Size(np.shape(given._data))!r} and output[{index}] has a shape of "
                    f"{Size(shape)!r}."
                )
        grads.append(given)
    return grads


def _shape_of(raw: Any) -> tuple:
    return () if type(raw) in PYTHON_VALUES else np.shape(raw)


def _roots(outputs: Sequence[Tensor]) -> list[Node]:
    roots = []
    for index, out in enumerate(outputs):
        if not out._requires_grad:
            raise NoGradFnError(
                f"element {index} of tensors does not require grad and does not have a grad_fn"
            )
        roots.append(_edge(out))
    return roots


def backward(
    tensors: Sequence[Tensor],
    grad_tensors: Sequence[Any] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Any = None,
) -> None:
    """``torch.autograd.backward``: accumulate gradients of ``tensors`` into leaves' ``.grad``."""
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    if isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    if retain_graph is None:
        retain_graph = create_graph
    grads = _seed_gradients(tensors, grad_tensors)
    roots = _roots(tensors)
    if inputs is None:
        run_backward(roots, grads, retain_graph, create_graph, None, accumulate=True)
        return
    # Only ``inputs`` accumulate: leaves among them, and non-leaves, which (as in
    # PyTorch) retain their gradient from now on.
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if not inputs:
        raise GradError("`inputs` argument to `backward()` cannot be empty.")
    for t in inputs:
        if not t._requires_grad:
            raise GradError("One of the differentiated Tensors does not require grad")
        t.retain_grad()
    targets = [_edge(t) for t in inputs]
    run_backward(roots, grads, retain_graph, create_graph, targets, accumulate=True)


def grad(
    outputs: Any,
    inputs: Any,
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    only_inputs: bool = True,
    allow_unused: bool | None = None,
    is_grads_batched: bool = False,
    materialize_grads: bool = False,
) -> tuple[Tensor | None, ...]:
    """d(outputs)/d(inputs) for leaf or intermediate inputs; leaves' ``.grad`` is untouched."""
    if isinstance(outputs, Tensor):
        outputs = [outputs]
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    if isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    outputs, inputs = list(outputs), list(inputs)
    if retain_graph is None:
        retain_graph = create_graph
    if allow_unused is None:
        allow_unused = materialize_grads
    for t in inputs:
        if not t._requires_grad:
            raise GradError("One of the differentiated Tensors does not require grad")
    grads = _seed_gradients(outputs, grad_outputs)
    roots = _roots(outputs)
    targets = [_edge(t) for t in inputs]
    captured = run_backward(roots, grads, retain_graph, create_graph, targets, accumulate=False)
    results: list[Tensor | None] = []
    for index, (t, node) in enumerate(zip(inputs, targets, strict=True)):
        g = captured.get(node)
        if g is None:
            if materialize_grads:
                g = _wrap(np.zeros_like(t._data))
            elif not allow_unused:
                raise GradError(
                    f"The differentiated Tensor at index {index} appears to not have been used "
                    "in the graph. Set allow_unused=True if this is the desired behavior."
                )
        elif _cast_like(g._raw, t._raw) is not g._raw:  # another dtype
            g = g.to(t.dtype) if create_graph else _wrap(_cast_like(g._raw, t._raw))
        results.append(g)
    return tuple(results)


_FREED = object()
"""Stands for saved data after backward freed it."""
_passes = 0
"""Backward passes run so far (see :func:`_count_consumers`)."""
_NUMBERS = (int, float, bool)
_SCALAR_GRADS = frozenset((float,))  # and NumPy's float scalars, once loaded
"""Gradients with no buffer behind them: backward's 0-d fast path takes these."""
_NATIVE_BASE_LIMIT = 1 << 62
"""The C loops keep counts in 64-bit integers: passes beyond ~4 million use Python's."""
_getrefcount = sys.getrefcount
_pooled = _recycle.pooled


def _owns_memory(array: Any) -> bool:
    """Whether ``array`` is an ndarray with writeable memory of its own (not a view)."""
    return type(array) is _ndarray and array.base is None and array.flags.writeable


def _refs_when_alone() -> int:
    """What ``sys.getrefcount`` reports for an array one local variable alone holds.

    Backward overwrites a buffer only when nothing else can see it:
    ``_getrefcount(a) - _pooled(a) == _ALONE + n`` for ``a`` held by a local
    and ``n`` containers it knows of (``pending``, an args tuple). Only ever
    test a value the testing frame took out of a container itself: a
    parameter's count depends on how the call was made (an interpreter's
    specialised call moves its arguments, a generic one adds a reference).
    """
    alone = object()  # any fresh object: reference counts do not depend on the type
    return _getrefcount(alone)


_ALONE = _refs_when_alone()


def _cast_like(data: Any, like: Any) -> Any:
    """Gradient ``data`` in the type of a tensor's data ``like``: its NumPy dtype, or
    a Python float; ``data`` itself when it already is."""
    target = getattr(like, "dtype", None)
    if target is None:
        return data if type(data) is float else float(data)
    if type(data) is float:
        return target.type(data)
    return data if data.dtype == target else data.astype(target)


_backward_lock = threading.RLock()
"""Held by every backward pass: passes keep their counts on the nodes, and graphs
built in different threads may share nodes (a model's parameters). PyTorch
serialises the sums into a shared ``.grad`` with a lock in AccumulateGrad."""


def run_backward(
    roots: Sequence[Node],
    grads: Sequence[Tensor],
    retain_graph: bool,
    create_graph: bool,
    targets: Sequence[Node] | None = None,
    accumulate: bool = True,
) -> dict[Node, Tensor]:
    """Propagate ``grads`` from ``roots`` through the graph, one pass at a time across threads.

    With ``accumulate``, leaves' ``.grad`` (and retained non-leaves') receive their
    gradients. With ``targets``, only the part of the graph leading to them runs
    and the total gradient arriving at each target node is returned.
    """
    if _stale:  # some tensor was changed in place: what the pass reads must be as saved
        _prune_stale()
        if _stale:
            _check_versions(roots)
    run = _BackwardPass(retain_graph, create_graph, accumulate, targets)
    with _backward_lock:
        # A recorded backward records (grad mode on in this thread); a raw one
        # computes on arrays and releases the buffers its pass did not use.
        previous_mode = _set_grad_enabled(True) if create_graph else True
        try:
            with _numpy.errstate():
                _backpropagate(run, roots, grads)
        finally:
            if create_graph:
                _set_grad_enabled(previous_mode)
            else:
                _recycle.end_of_pass()
    return run.results()


def _backpropagate(run: _BackwardPass, roots: Sequence[Node], grads: Sequence[Tensor]) -> None:
    """The reference loop (HIPS autograd's ``backward_pass``): count every node's
    consumers, then take nodes whose consumers are all done, run their VJPs and
    add what they return into the pending gradient of each operand's node. Each
    gradient and (unless ``retain_graph``) each node's saved data are dropped
    once used. What else happens at a node (leaves, targets, hooks, buffer
    donation) is ``run``'s; the 0-d fast path is this loop for scalar chains."""
    global _passes
    _passes += 1
    base = _passes << 40
    run.prune(_count_consumers(roots, base, ordered=run.targets is not None))
    pending: dict[Node, Any] = {}
    for root, g in zip(roots, grads, strict=True):
        run.add(pending, root, g if run.recorded else g._raw)
    ready = [root for root in dict.fromkeys(roots) if root.deps == base]
    scalar_nodes = run.scalar_path(base)
    arguments, vjp, add, free = run.arguments, run.vjp, run.add, run.free
    while ready:
        if scalar_nodes is not None:
            scalar_nodes(ready, pending, base, free)  # this loop, for 0-d nodes
            if not ready:
                break
        node = ready.pop()
        args = arguments(node, pending)  # None: nothing flows on
        kind = node.kind
        parents = (node.p0,) if kind == 1 else (node.p0, node.p1) if kind == 2 else node.parents
        for index, parent in enumerate(parents):
            if parent is None:
                continue
            if args is not None:
                gi = vjp(node, index, args)
                if gi is not None:
                    if parent in pending:
                        add(pending, parent, gi)
                    else:  # (what ``add`` does with the first gradient to arrive)
                        pending[parent] = gi
                gi = None  # held in ``pending`` alone: a later sum may go into it
            count = parent.deps - 1
            parent.deps = count
            if count == base:
                ready.append(parent)
        args = None  # the same for ``g`` and the saved data


class _BackwardPass:
    """What one backward pass does at a node besides :func:`_backpropagate`'s loop.

    ``recorded`` (``create_graph``): the VJPs run on Tensors rebuilt from the
    saved data, so the backward is itself recorded; otherwise on raw data
    (ndarrays, NumPy or Python scalars: the same registry code). A raw pass
    adds gradients in place into buffers only it holds, folds ``-g`` into
    those sums (:class:`_Negated`) and hands VJPs the buffers they may
    overwrite (:func:`_spare_buffers`).
    """

    def __init__(
        self, retain_graph: bool, create_graph: bool, accumulate: bool, targets: Any
    ) -> None:
        self.recorded = create_graph
        self.free = not retain_graph
        self.accumulate = accumulate
        self.targets = None if targets is None else dict.fromkeys(targets)
        self.needed: set[Node] | None = None
        self.captured: dict[Node, Any] = {}
        self.add = _add_recorded if create_graph else _add_raw

    def prune(self, reached: list[Node] | None) -> None:
        """With targets: only nodes with a path to one need their VJPs run."""
        if self.targets is not None and reached is not None:
            self.needed = _needed(reached, self.targets)

    def scalar_path(self, base: int) -> Any:
        """The 0-d fast path (C or Python) when this pass may take it: raw, no
        targets, leaves accumulating (it stores their ``.grad``)."""
        if self.recorded or self.targets is not None or not self.accumulate:
            return None
        if _native is not None and base < _NATIVE_BASE_LIMIT:
            return _native.run_scalar_nodes
        return _scalar_nodes

    def arguments(self, node: Node, pending: dict) -> tuple | None:
        """A node's gradient is complete: takes it out of ``pending``; targets capture
        it, leaves accumulate it, recorded values and ``retain_grad`` keep it.
        Returns its VJPs' arguments ``(g, ans, *operands, *consts)`` (freeing the
        node's saved data unless ``retain_graph``), or None when nothing flows on."""
        g = pending.pop(node, None)
        if type(g) is _Negated:
            g = _negated_total(g)
        elif g is None:
            return None
        meta = node.meta  # the tensor's hooks (leaves': on their AccumulateGrad)
        if meta is not None and meta.hooks and (self.needed is None or node in self.needed):
            g = _call_hooks(meta.hooks, g, self.recorded)
        if self.targets is not None and node in self.targets:
            self.captured[node] = g
        kind = node.kind
        if kind < 0:  # AccumulateGrad: .grad may take g's buffer if nothing else holds it
            owned = _getrefcount(g) - _pooled(g) == _ALONE and _owns_memory(g)
            self._leaf(node, g, owned and not self.recorded)
            return None
        if node.meta is not None:
            self._keep(node.meta, g)
        if self.needed is not None and node not in self.needed:
            return None
        holds = node.holds
        ans = node.ans
        if holds is _FREED or ans is _FREED:
            raise FreedGraphError(FREED_MESSAGE)
        if self.recorded:
            saved = _saved_tensors(node.parents, node.saved)
            if ans is not None:  # the output again, hanging from this node
                ans = _wrap(ans)
                ans._grad_fn = node
                ans._requires_grad = True
            args = (g, ans, *saved, *node.consts)
        elif kind == 2:
            args = (g, ans, node.s0, node.s1, *node.consts)
        elif kind == 1:
            args = (g, ans, node.s0, *node.consts)
        else:
            args = (g, ans, *node.s0, *node.consts)
        if self.free:
            if holds:
                node.holds = _FREED
                node.s0 = node.s1 = None
            if ans is not None:
                node.ans = _FREED
        return args

    def vjp(self, node: Node, index: int, args: tuple) -> Any:
        """VJP ``index`` of ``node`` on ``args``. On a raw array gradient, ``-g`` is not
        computed but folded into the operand's sum, and VJPs that take ``spare=``
        get the buffers they may write their result into."""
        vjp = node.vjps[index]
        if type(args[0]) is _ndarray and not self.recorded:
            if node.negates and args[0].ndim:
                return _Negated(args[0])
            if self.free and node.kind > 0:
                takes = _spare_takers.get(vjp)
                if takes is None:
                    takes = _remember_takes_spare(vjp)
                if takes:
                    try:
                        return vjp(*args, spare=_spare_buffers(node, args, index))
                    except ArithmeticError:  # a float backend's operand beside the array
                        return _retry_on_numpy(vjp, args)  # (before any write: Python's)
        try:
            return vjp(*args)
        except ArithmeticError:  # on the float backend's floats
            if self.recorded:
                raise
            return _retry_on_numpy(vjp, args)

    def results(self) -> dict[Node, Any]:
        """The gradients captured at targets, as Tensors that alias nothing."""
        if self.recorded:
            return self.captured
        return {node: _wrap(_own(g)) for node, g in self.captured.items()}

    def _leaf(self, node: AccumulateGrad, g: Any, owned: bool) -> None:
        if self.accumulate and (self.targets is None or node in self.targets):
            if self.recorded:
                _store_leaf_grad(node.variable, g)
            else:
                _store_leaf_data(node.variable, g, owned)
        if _recording:
            _record_gradient(node._meta(), g._data if self.recorded else g)

    def _keep(self, meta: _Meta, g: Any) -> None:
        """A non-leaf's extras: its gradient for the renderer, ``retain_grad``'s ``.grad``."""
        if meta.value is not None:
            _record_gradient(meta, g._data if self.recorded else g)
        if self.accumulate and meta.retain is not None:
            kept = meta.retain()
            if kept is not None:
                _store_retained(kept, g, self.recorded)


def _count_consumers(roots: Sequence[Node], base: int, ordered: bool) -> list[Node] | None:
    """Set every reachable node's ``deps`` to ``base`` plus its number of consumers.

    Counts live on the nodes (cheaper than a dict of 10^5 nodes), offset by a
    ``base`` unique to the pass, so counts a former pass left read as "unseen"
    (below ``base``). With ``ordered``, returns the nodes reached, each after
    its first consumer (for :func:`_needed`).
    """
    stack = []
    for root in roots:
        if root.deps < base:
            root.deps = base
            stack.append(root)
    if not ordered and _native is not None and base < _NATIVE_BASE_LIMIT:
        _native.count_dependencies(stack, base)  # the loop below, in C
        return None
    reached: list[Node] | None = [] if ordered else None
    while stack:
        node = stack.pop()
        if reached is not None:
            reached.append(node)
        p0 = node.p0
        for parent in p0 if type(p0) is tuple else (p0, node.p1):  # a tuple: a sequence op
            if parent is not None:
                count = parent.deps
                if count < base:
                    parent.deps = base + 1
                    stack.append(parent)
                else:
                    parent.deps = count + 1
    return reached


class _Negated:
    """A pending gradient held negated: ``-array`` (a raw backward's folded
    NegBackward: adding ``-g`` at the operand is subtracting ``g``, the same bits
    without computing ``-g``, one pass over memory fewer)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _negated_total(wrapper: _Negated) -> Any:
    """The gradient a :class:`_Negated` taken out of ``pending`` stands for: its array
    negated, in place when nothing else holds it."""
    array = wrapper.array
    wrapper.array = None  # (the caller's wrapper no longer holds it)
    alone = _getrefcount(array) - _pooled(array) == _ALONE
    return np.negative(array, out=array) if alone and _owns_memory(array) else -array


def _add_raw(pending: dict, node: Node, g: Any) -> None:
    """``pending[node] += g`` on raw data, into pending's buffer when nothing else holds
    it. Either side may be a :class:`_Negated`: sums of one sign add, of opposite
    signs subtract (exact, as IEEE negation is): -P + g is g - P, P + -g is P - g."""
    old = pending.get(node)
    if old is None:
        pending[node] = g
        return
    negated = type(old) is _Negated
    if negated:
        old = old.array  # held by the wrapper in pending and here, as a plain one is
    subtract = type(g) is _Negated
    if subtract:
        g = g.array
    into_old = (
        _getrefcount(old) - _pooled(old) == _ALONE + 1  # ``old`` and pending alone
        and _owns_memory(old)
        and type(g) is _ndarray
        and old.shape == g.shape
        and old.dtype == g.dtype
    )
    if negated == subtract:  # P + g, or -P + -g = -(P + g)
        total = np.add(old, g, out=old) if into_old else old + g
        pending[node] = _Negated(total) if negated else total
    elif negated:
        pending[node] = np.subtract(g, old, out=old) if into_old else g - old
    else:
        pending[node] = np.subtract(old, g, out=old) if into_old else old - g


def _add_recorded(pending: dict, node: Node, g: Any) -> None:
    old = pending.get(node)
    pending[node] = g if old is None else old + g


def _scalar_nodes(ready: list, pending: dict, base: int, free: bool) -> None:
    """Backward's 0-d fast path: :func:`_backpropagate`'s loop for as long as the
    next ready node is a plain one- or two-operand node (no values recorded, not
    freed) or a leaf's AccumulateGrad (see :func:`_scalar_leaf`), and its
    gradient is a Python or NumPy float scalar (long scalar chains; a formula's
    whole graph, its leaves included, in one call). Stops, changing nothing, at
    the first other node. ``_native.run_scalar_nodes`` is the same in C. No
    targets or hooks reach here (hooks live on ``meta``), and scalars need no
    buffer donation or in-place sums.
    """
    pop, push, get, take = ready.pop, ready.append, pending.get, pending.pop
    scalars, freed = _SCALAR_GRADS, _FREED
    leaves = not _recording  # (record_values keeps a leaf's gradient: the general path)
    while ready:
        node = pop()
        g = take(node, None)
        kind = node.kind
        if kind < 0 and leaves and node.meta is None and _scalar_leaf(node.variable, g):
            continue
        if type(g) in scalars and kind > 0 and node.meta is None:
            holds = node.holds
            ans = node.ans
            if holds is not freed and ans is not freed:
                args = (g, ans, node.s0, node.s1) if kind == 2 else (g, ans, node.s0)
                consts = node.consts
                if consts:
                    args += consts
                if free:
                    if holds:
                        node.holds = freed
                        node.s0 = node.s1 = None
                    if ans is not None:
                        node.ans = freed
                vjps = node.vjps
                # p0 then p1, unrolled: a loop costs this path a fifth of its time
                parent = node.p0
                if parent is not None:
                    try:
                        gi = vjps[0](*args)
                    except ArithmeticError:
                        gi = _retry_on_numpy(vjps[0], args)
                    if gi is not None:
                        old = get(parent)
                        pending[parent] = gi if old is None else old + gi
                    count = parent.deps - 1
                    parent.deps = count
                    if count == base:
                        push(parent)
                parent = node.p1
                if parent is not None:
                    try:
                        gi = vjps[1](*args)
                    except ArithmeticError:
                        gi = _retry_on_numpy(vjps[1], args)
                    if gi is not None:
                        old = get(parent)
                        pending[parent] = gi if old is None else old + gi
                    count = parent.deps - 1
                    parent.deps = count
                    if count == base:
                        push(parent)
                continue
        push(node)  # for the general path, as it was
        if g is not None:
            pending[node] = g
        return


def _scalar_leaf(leaf: Tensor, g: Any) -> bool:
    """Backward's 0-d fast path at a leaf: ``.grad`` takes ``g`` when
    :func:`_store_leaf_data` would neither cast it (the leaf's data is of ``g``'s
    float scalar type, or an array of its dtype) nor add into a buffer (any
    earlier ``.grad``'s data is of ``g``'s type): a new tensor of ``g`` or of the
    sum, as it makes. False, changing nothing, otherwise. ``_native.run_scalar_nodes``
    decides (``scalar_leaf``) and stores the same.
    """
    kind = type(g)
    if kind not in _SCALAR_GRADS:
        return False
    like = leaf._raw
    if type(like) is not kind and (
        kind is float or type(like) is not _ndarray or g.dtype != like.dtype
    ):
        return False
    old = leaf._grad
    if old is None:
        leaf._grad = _wrap(g)
        return True
    if type(old) is not Tensor or type(old._raw) is not kind:
        return False
    leaf._grad = _wrap(old._raw + g)  # (``old.detach()``'s data is ``old._raw``)
    return True


def _takes_spare(vjp: Any) -> bool:
    """Whether a VJP declares a keyword-only ``spare`` parameter (see :func:`_spare_buffers`)."""
    code = getattr(vjp, "__code__", None)
    if code is None or not code.co_kwonlyargcount:
        return False
    start = code.co_argcount
    return "spare" in code.co_varnames[start : start + code.co_kwonlyargcount]


_spare_takers: dict[Any, bool] = {}
"""VJP -> whether it takes ``spare=`` (:func:`_takes_spare`, read once per function)."""


def _remember_takes_spare(vjp: Any) -> bool:
    if len(_spare_takers) > 4096:  # (user-made node classes come and go)
        _spare_takers.clear()
    takes = _spare_takers[vjp] = _takes_spare(vjp)
    return takes


def _spare_buffers(node: Node, args: tuple, index: int) -> tuple:
    """The arguments VJP ``index`` of ``node`` may write its result into (buffer donation).

    Raw backward only, after the node was freed: an argument (the incoming
    gradient, the output, a saved operand) qualifies when only ``args`` holds
    it (no user tensor, no node can see the buffer) and no VJP still to run
    for this node reads it (the gradient and output are read by all; operands
    as the op's ``reads`` declares). VJPs take them as ``spare=`` and pass
    them to ``ops._mul``/``ops._neg``, saving an allocation and its page faults.
    """
    kind = node.kind
    later = None
    if kind == 2 and index == 0 and node.p1 is not None:
        later = node.op.reads[1]
    spare = ()
    for position in range(2 + kind):
        if later is not None and (position < 2 or position - 2 in later):
            continue
        if type(args[position]) is not _ndarray or args[position].base is not None:
            continue
        # held by ``args`` alone (the count of an item read as a temporary,
        # as of a local): no new tuple or variable may hold it before the test
        count = _getrefcount(args[position])
        alone = count == _ALONE or (count == _ALONE + 1 and _pooled(args[position]))
        if alone and args[position].flags.writeable:
            spare += (args[position],)
    return spare


def _saved_tensors(parents: tuple, saved: tuple) -> list:
    """The operands as Tensors again (for a recorded backward): constants wrap their
    data, leaves are the leaf tensors, intermediates hang from their grad_fn, so
    operations on them extend the graph as the forward's tensors would have."""
    out: list = []
    for parent, data in zip(parents, saved, strict=True):
        if parent is None:
            out.append(data if type(data) in _NUMBERS else _wrap(data))
        elif type(parent) is AccumulateGrad:
            out.append(parent.variable)
        else:
            t = _wrap(data)
            t._grad_fn = parent
            t._requires_grad = True
            out.append(t)
    return out


def _store_leaf_grad(leaf_tensor: Tensor, g: Tensor) -> None:
    """Add a recorded gradient ``g`` (``create_graph=True``) into ``leaf.grad``."""
    data = _cast_like(g._raw, leaf_tensor._raw)
    if data is not g._raw:
        g = _wrap(data)
    old = leaf_tensor._grad
    leaf_tensor._grad = g if old is None else old + g


def _store_leaf_data(leaf_tensor: Tensor, data: Any, owned: bool) -> None:
    """Add raw gradient ``data`` into ``leaf.grad`` as PyTorch's AccumulateGrad does.

    ``owned``: nothing else references ``data``, so ``.grad`` may take its buffer.
    Later gradients are added in place into a ``.grad`` buffer of the same shape.
    """
    like = leaf_tensor._raw
    if type(data) is not _ndarray or type(like) is not _ndarray or data.dtype is not like.dtype:
        cast = _cast_like(data, like)
        if cast is not data:
            data, owned = cast, True
    old = leaf_tensor._grad
    if old is None:
        leaf_tensor._grad = _wrap(data if owned else _own(data))
        return
    if old._grad_fn is not None:
        old = old.detach()
    old_data = old._raw
    if type(old_data) is _ndarray and old_data.flags.writeable and old_data.shape == np.shape(data):
        old_data += data
        leaf_tensor._grad = old
    else:
        leaf_tensor._grad = _wrap(old_data + data)


def _own(g: Any) -> Any:
    """A copy of an array ``g`` handed to the user: VJPs may pass on saved
    operands or views (``sum()``'s gradient times ``y`` is ``y``), and a
    returned gradient must alias nothing (PyTorch's retain_grad clones too)."""
    return g.copy() if type(g) is _ndarray else g


def _store_retained(t: Tensor, g: Any, recorded: bool) -> None:
    old = t._grad
    if recorded:
        t._grad = g if old is None else old + g
        return
    t._grad = _wrap(_own(g)) if old is None else _wrap(old._data + g)


def _needed(reached: Sequence[Node], targets: Sequence[Node]) -> set[Node]:
    """Nodes with a path to a target (the only ones whose VJPs must run)."""
    target_set = set(targets)
    needed: set[Node] = set()
    done: set[Node] = set()
    # Iterative post-order: a node is decided after all of its parents.
    for start in reached:
        if start in done:
            continue
        stack = [start]
        while stack:
            node = stack[-1]
            parents = node.parents
            for parent in parents:
                if parent is not None and parent not in done:
                    stack.append(parent)
                    break
            else:
                stack.pop()
                done.add(node)
                if node in target_set:
                    needed.add(node)
                else:
                    for parent in parents:
                        if parent in needed:
                            needed.add(node)
                            break
    return needed


def _setup_native(forward_types: tuple, ndarray: Any) -> None:
    if _native is not None:
        _native.setup(
            Tensor,
            _FREED,
            tuple(_SCALAR_GRADS),
            forward_types,  # what FastOp takes
            ndarray,
            globals(),
            _edge,
            _Meta,
            _to_numpy,
        )


def _with_numpy(numpy: Any) -> None:
    """What waits for NumPy (see ``gradcalc/_numpy.py``): its types, the dtype table."""
    global _generic, _ndarray, _SCALAR_GRADS
    _generic, _ndarray = numpy.generic, numpy.ndarray
    _SCALAR_GRADS = frozenset((float, numpy.float64, numpy.float32, numpy.float16))
    for d in (float16, float32, float64, int8, int16, int32, int64, uint8, bool_):
        _DTYPES[d.np] = d
    _setup_native((numpy.float64, numpy.float32), numpy.ndarray)


_setup_native((), _NotLoaded)
_numpy.when_loaded(_with_numpy)
