/* What a long scalar graph does per node, in C, with CPython's public C API only.
 *
 * Measured gain (W2, the 0-d chain `y = sin(y*c + x)*k` in float64, which since
 * the float backend runs on Python floats; `benchmarks/run.py --only W2 --quick`,
 * CPython 3.11, a 2-core machine shared with other jobs, both runs interleaved
 * with PyTorch 2.13 in the same process tree): with this module the Python API
 * takes 2.0 us/node, 0.075x PyTorch eager (formula language 0.125x); without it
 * 7.8 us/node, 0.35x (formula 0.43x): about 3.9x, and the API target (<= 0.25x)
 * and the formula target (<= 0.4x) hold only with it. Before the float backend
 * (NumPy scalars) the gain was 2.2x; FastOp now also runs op.scalar on floats.
 *
 * Node, TensorBase: the slots of every grad_fn node and of every tensor, as C
 *     structs with PyMemberDef members. _tensor.Node and _tensor.Tensor derive
 *     from them; without this module they derive from Python classes with the
 *     same attribute names, and the engine reads and writes them by name.
 *     TensorBase's `_raw` slot may hold a Python float or bool (the float
 *     backend); its `_data` getter converts those to NumPy once.
 * record(cls, data, p0, p1, s0, s1, consts, ans, holds): the one way a node
 *     and its output tensor are made (_tensor._record is the same in Python).
 * count_dependencies(stack, base): the consumers of every node reachable
 *     from the roots (Node.deps, offset by the pass's base; see
 *     _tensor._count_consumers).
 * run_scalar_nodes(ready, pending, base, free): backward's 0-d fast path,
 *     _tensor._scalar_nodes in C: while the next ready node's gradient is a
 *     Python or NumPy float scalar and the node is a plain one- or two-operand
 *     node (its constants, e.g. pow's exponent, passed to the VJPs after the
 *     operands), run its VJPs and pass the results on; or a leaf's
 *     AccumulateGrad (no hooks, outside record_values) whose .grad takes the
 *     gradient with no cast or buffer (_tensor._scalar_leaf): store it. A
 *     formula's whole 0-d graph, leaves included, thus runs in one call (the
 *     leaves alone used to stop it, one Python round per leaf). Stops,
 *     changing nothing, at the first node that needs the general path. The
 *     caller takes this path only for raw passes that accumulate into leaves
 *     with no targets (_BackwardPass.scalar_path).
 * FastOp: the common case of a float elementwise op on 0-d tensors (what
 *     _tensor.binary_method / unary_function do in Python), taken when the
 *     operands' data are Python floats (op.scalar: the float backend) or
 *     NumPy float64/float32 scalars (or 0-d arrays), grad
 *     mode is on everywhere and the values lie where the op raises no
 *     floating-point warning (op.quiet); anything else calls the Python
 *     function it wraps, which it also answers for (name, doc, signature).
 *
 * The VJPs, the ops' forwards, the sums of gradients and everything numeric
 * stay Python calls, so results are bit-identical to the Python code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

#define MAX_ARGS 12 /* g, ans, up to two operands, then the op's constants */

typedef struct {
    PyObject_HEAD
    PyObject *p0, *p1, *s0, *s1, *consts, *ans, *holds, *meta, *deps;
} NodeObject;

typedef struct {
    PyObject_HEAD
    PyObject *data, *grad_fn, *requires_grad, *grad, *accum;
} TensorObject;

static PyTypeObject Node_Type, TensorBase_Type;

/* Set once by setup(): */
static PyTypeObject *tensor_type;  /* _tensor.Tensor (a subclass of TensorBase) */
static PyObject *freed;            /* _tensor._FREED */
static PyObject *scalar_grads;     /* gradient types the 0-d backward path takes */
static PyObject *forward_types;    /* the NumPy scalar types FastOp takes */
static PyObject *ndarray_type;
static PyObject *tensor_globals;   /* _tensor's module dict: grad mode, recording, _native */
static PyObject *edge_function;    /* _tensor._edge */
static PyObject *meta_class;       /* _tensor._Meta */

static PyObject *str_kind, *str_vjps, *str_ndim, *str_native, *str_grad_enabled,
    *str_recording, *str_variable, *str_dtype;
static PyObject *empty_tuple, *zero;

#define NODE(obj) ((NodeObject *)(obj))
#define TENSOR(obj) ((TensorObject *)(obj))

/* ------------------------------------------------------------------ the two types */

#define VISIT_ALL(s, a, b, c, d, e) \
    Py_VISIT(s->a); Py_VISIT(s->b); Py_VISIT(s->c); Py_VISIT(s->d); Py_VISIT(s->e)

static int
node_traverse(NodeObject *self, visitproc visit, void *arg)
{
    VISIT_ALL(self, p0, p1, s0, s1, consts);
    Py_VISIT(self->ans);
    Py_VISIT(self->holds);
    Py_VISIT(self->meta);
    Py_VISIT(self->deps);
    return 0;
}

static int
node_clear(NodeObject *self)
{
    Py_CLEAR(self->p0);
    Py_CLEAR(self->p1);
    Py_CLEAR(self->s0);
    Py_CLEAR(self->s1);
    Py_CLEAR(self->consts);
    Py_CLEAR(self->ans);
    Py_CLEAR(self->holds);
    Py_CLEAR(self->meta);
    Py_CLEAR(self->deps);
    return 0;
}

/* Nodes are instances of Python subclasses: their dealloc (CPython's, with its
 * trashcan for deep chains) untracks them and calls this one. */
static void
node_dealloc(NodeObject *self)
{
    PyObject_GC_UnTrack(self);
    node_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define MEMBER(name, field, type, doc) \
    {name, T_OBJECT_EX, offsetof(type, field), 0, doc}

static PyMemberDef node_members[] = {
    MEMBER("p0", p0, NodeObject, "operand 0's grad_fn (or None; a tuple for a sequence op)"),
    MEMBER("p1", p1, NodeObject, "operand 1's grad_fn (or None)"),
    MEMBER("s0", s0, NodeObject, "what the VJPs read of operand 0"),
    MEMBER("s1", s1, NodeObject, "what the VJPs read of operand 1"),
    MEMBER("consts", consts, NodeObject, "the op's non-tensor arguments"),
    MEMBER("ans", ans, NodeObject, "the output's data when a VJP reads it"),
    MEMBER("holds", holds, NodeObject, "whether saved tensor data is kept (_FREED once freed)"),
    MEMBER("meta", meta, NodeObject, "rarely used extras (_tensor._Meta) or None"),
    MEMBER("deps", deps, NodeObject, "consumer count of the current backward pass"),
    {NULL},
};

static int
tensor_traverse(TensorObject *self, visitproc visit, void *arg)
{
    VISIT_ALL(self, data, grad_fn, requires_grad, grad, accum);
    return 0;
}

static int
tensor_clear(TensorObject *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->grad_fn);
    Py_CLEAR(self->requires_grad);
    Py_CLEAR(self->grad);
    Py_CLEAR(self->accum);
    return 0;
}

static void
tensor_dealloc(TensorObject *self)
{
    PyObject_GC_UnTrack(self);
    tensor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef tensor_members[] = {
    MEMBER("_raw", data, TensorObject,
           "the value: an ndarray, a NumPy scalar, or a Python float (the float backend)"),
    MEMBER("_grad_fn", grad_fn, TensorObject, "the Node that made it, or None"),
    MEMBER("_requires_grad", requires_grad, TensorObject, "bool"),
    MEMBER("_grad", grad, TensorObject, "the accumulated gradient, or None"),
    MEMBER("_accum", accum, TensorObject, "a weak reference to a leaf's AccumulateGrad"),
    {NULL},
};

/* `_data`: the value as NumPy holds it. A Python float or bool (the float
 * backend's float64 or bool scalar, see _tensor.py) becomes NumPy's here, once,
 * through _tensor._to_numpy: the one place the float backend meets NumPy. */
static PyObject *to_numpy; /* set by setup() */

static PyObject *
tensor_get_data(TensorObject *self, void *Py_UNUSED(closure))
{
    PyObject *data = self->data;
    if (data == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_data");
        return NULL;
    }
    if ((PyFloat_CheckExact(data) || PyBool_Check(data)) && to_numpy != NULL) {
        PyObject *converted = PyObject_CallOneArg(to_numpy, data);
        if (converted == NULL) {
            return NULL;
        }
        Py_SETREF(self->data, Py_NewRef(converted));
        return converted;
    }
    return Py_NewRef(data);
}

static int
tensor_set_data(TensorObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _data");
        return -1;
    }
    Py_XSETREF(self->data, Py_NewRef(value));
    return 0;
}

static PyGetSetDef tensor_getset[] = {
    {"_data", (getter)tensor_get_data, (setter)tensor_set_data,
     "the value as NumPy holds it (a float backend's Python float converted once)", NULL},
    {NULL},
};

/* The engine makes both with their __new__ (PyType_GenericNew) and fills the slots. */
static PyTypeObject Node_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gradcalc._native.Node",
    .tp_doc = "The slots of a grad_fn node (see _tensor.Node).",
    .tp_basicsize = sizeof(NodeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)node_traverse,
    .tp_clear = (inquiry)node_clear,
    .tp_dealloc = (destructor)node_dealloc,
    .tp_members = node_members,
    .tp_new = PyType_GenericNew,
};

static PyTypeObject TensorBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gradcalc._native.TensorBase",
    .tp_doc = "The slots of a tensor (see _tensor.Tensor).",
    .tp_basicsize = sizeof(TensorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)tensor_traverse,
    .tp_clear = (inquiry)tensor_clear,
    .tp_dealloc = (destructor)tensor_dealloc,
    .tp_members = tensor_members,
    .tp_getset = tensor_getset,
    .tp_new = PyType_GenericNew,
};

static int
is_node(PyObject *obj)
{
    return obj != NULL && PyObject_TypeCheck(obj, &Node_Type);
}

/* ------------------------------------------------------------------ setup */

static PyObject *
setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyType_Check(args[0]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], &TensorBase_Type) ||
        !PyTuple_CheckExact(args[2]) || !PyTuple_CheckExact(args[3]) ||
        !PyDict_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "setup(Tensor, FREED, scalar_grads, forward_types, ndarray, globals, "
                        "edge, Meta, to_numpy)");
        return NULL;
    }
    Py_XSETREF(tensor_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(freed, Py_NewRef(args[1]));
    Py_XSETREF(scalar_grads, Py_NewRef(args[2]));
    Py_XSETREF(forward_types, Py_NewRef(args[3]));
    Py_XSETREF(ndarray_type, Py_NewRef(args[4]));
    Py_XSETREF(tensor_globals, Py_NewRef(args[5]));
    Py_XSETREF(edge_function, Py_NewRef(args[6]));
    Py_XSETREF(meta_class, Py_NewRef(args[7]));
    Py_XSETREF(to_numpy, Py_NewRef(args[8]));
    Py_RETURN_NONE;
}

#define READY() (tensor_type != NULL)
#define NOT_READY() PyErr_SetString(PyExc_RuntimeError, "gradcalc._native.setup() not called")

/* ------------------------------------------------------------------ recording */

/* A new tensor with `data`, made by `node` (None: a constant). */
static PyObject *
new_tensor(PyObject *data, PyObject *node)
{
    PyObject *t = tensor_type->tp_alloc(tensor_type, 0);
    if (t == NULL) {
        return NULL;
    }
    TENSOR(t)->data = Py_NewRef(data);
    TENSOR(t)->grad_fn = Py_NewRef(node);
    TENSOR(t)->requires_grad = Py_NewRef(node == Py_None ? Py_False : Py_True);
    TENSOR(t)->grad = Py_NewRef(Py_None);
    TENSOR(t)->accum = Py_NewRef(Py_None);
    return t;
}

/* _tensor._record: a node of class `cls` and the tensor it makes. Steals p0 and
 * p1 (NULL for None), also when it fails. */
static PyObject *
make_result(PyTypeObject *cls, PyObject *data, PyObject *p0, PyObject *p1, PyObject *s0,
            PyObject *s1, PyObject *consts, PyObject *ans, PyObject *holds)
{
    PyObject *node = cls->tp_alloc(cls, 0), *meta, *result;
    if (node == NULL) {
        Py_XDECREF(p0);
        Py_XDECREF(p1);
        return NULL;
    }
    NodeObject *n = NODE(node);
    n->p0 = p0 != NULL ? p0 : Py_NewRef(Py_None);
    n->p1 = p1 != NULL ? p1 : Py_NewRef(Py_None);
    n->s0 = Py_NewRef(s0);
    n->s1 = Py_NewRef(s1);
    n->consts = Py_NewRef(consts);
    n->ans = Py_NewRef(ans);
    n->holds = Py_NewRef(holds);
    n->deps = Py_NewRef(zero);
    n->meta = Py_NewRef(Py_None);
    /* inside _tensor.record_values(): the node keeps its output (node.meta) */
    if (PyDict_GetItemWithError(tensor_globals, str_recording) == Py_True) {
        meta = PyObject_CallOneArg(meta_class, data);
        if (meta != NULL) {
            Py_SETREF(n->meta, meta);
        }
    }
    if (PyErr_Occurred()) {
        Py_DECREF(node);
        return NULL;
    }
    result = new_tensor(data, node);
    Py_DECREF(node);
    return result;
}

static PyObject *
record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!READY()) {
        NOT_READY();
        return NULL;
    }
    if (nargs != 9 || !PyType_Check(args[0]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], &Node_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "record(node_class, data, p0, p1, s0, s1, consts, ans, holds)");
        return NULL;
    }
    PyObject *p0 = args[2] == Py_None ? NULL : Py_NewRef(args[2]);
    PyObject *p1 = args[3] == Py_None ? NULL : Py_NewRef(args[3]);
    return make_result((PyTypeObject *)args[0], args[1], p0, p1, args[4], args[5], args[6],
                       args[7], args[8]);
}

/* ------------------------------------------------------------------ backward */

/* deps as a C integer; the caller keeps base (and so every count) below 2**62. */
static int
read_deps(PyObject *node, long long *value)
{
    PyObject *deps = NODE(node)->deps;
    if (deps == NULL || !PyLong_Check(deps)) {
        PyErr_SetString(PyExc_TypeError, "Node.deps is not an int");
        return -1;
    }
    *value = PyLong_AsLongLong(deps);
    return (*value == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
write_deps(PyObject *node, long long value)
{
    PyObject *deps = PyLong_FromLongLong(value);
    if (deps == NULL) {
        return -1;
    }
    Py_XSETREF(NODE(node)->deps, deps);
    return 0;
}

/* A stack of nodes in C (strong references): the loops below move a Python
 * list's items here, work on them, and give back what is left. */
typedef struct {
    PyObject **items;
    Py_ssize_t size, capacity;
} Stack;

static int
stack_push(Stack *stack, PyObject *item)
{
    if (stack->size == stack->capacity) {
        Py_ssize_t capacity = stack->capacity < 64 ? 64 : stack->capacity * 2;
        PyObject **items = PyMem_Realloc(stack->items, capacity * sizeof(PyObject *));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        stack->items = items;
        stack->capacity = capacity;
    }
    stack->items[stack->size++] = Py_NewRef(item);
    return 0;
}

/* Move the list's items onto an empty stack; the list is left empty. */
static int
stack_take(Stack *stack, PyObject *list)
{
    Py_ssize_t size = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (stack_push(stack, PyList_GET_ITEM(list, i))) {
            return -1;
        }
    }
    return PyList_SetSlice(list, 0, size, NULL);
}

/* Give the stack's items back to the list (in order) and free the stack. */
static int
stack_give(Stack *stack, PyObject *list)
{
    int failed = 0;
    for (Py_ssize_t i = 0; i < stack->size; i++) {
        failed = failed || PyList_Append(list, stack->items[i]) != 0;
        Py_DECREF(stack->items[i]);
    }
    PyMem_Free(stack->items);
    stack->items = NULL;
    stack->size = stack->capacity = 0;
    return failed ? -1 : 0;
}

static PyObject *
count_dependencies(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "count_dependencies(stack: list, base: int)");
        return NULL;
    }
    long long base = PyLong_AsLongLong(args[1]);
    Stack stack = {NULL, 0, 0};
    int failed = (base == -1 && PyErr_Occurred()) || stack_take(&stack, args[0]);
    while (!failed && stack.size > 0) {
        PyObject *node = stack.items[--stack.size]; /* the stack's reference, now ours */
        if (!is_node(node)) {
            PyErr_SetString(PyExc_TypeError, "a graph edge is not a Node");
            Py_DECREF(node);
            failed = 1;
            break;
        }
        /* A sequence op keeps its operands' nodes in a tuple in p0. */
        PyObject *p0 = NODE(node)->p0, *pair[2] = {p0, NODE(node)->p1};
        PyObject *const *parents = pair;
        Py_ssize_t count = 2;
        if (p0 != NULL && PyTuple_CheckExact(p0)) {
            parents = &PyTuple_GET_ITEM(p0, 0);
            count = PyTuple_GET_SIZE(p0);
        }
        for (Py_ssize_t i = 0; i < count && !failed; i++) {
            PyObject *parent = parents[i];
            long long deps;
            if (parent == NULL || parent == Py_None) {
                continue;
            }
            if (!is_node(parent)) {
                PyErr_SetString(PyExc_TypeError, "a graph edge is not a Node");
                failed = 1;
            }
            else {
                failed = read_deps(parent, &deps) ||
                         write_deps(parent, deps < base ? base + 1 : deps + 1) ||
                         (deps < base && stack_push(&stack, parent));
            }
        }
        Py_DECREF(node);
    }
    stack_give(&stack, args[0]);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* What run_scalar_nodes reads of a node's class (its `kind` and `vjps`), read
 * once per class and call: a scalar chain cycles through a few node classes. */
#define CLASSES 8

typedef struct {
    PyObject *type; /* strong references */
    PyObject *vjps;
    long kind;      /* 1 or 2 operands; anything else: not for this path */
} ClassInfo;

typedef struct {
    ClassInfo entries[CLASSES];
    int size;
} Classes;

static ClassInfo *
class_info(Classes *classes, PyObject *node)
{
    PyObject *type = (PyObject *)Py_TYPE(node);
    for (int i = 0; i < classes->size; i++) {
        if (classes->entries[i].type == type) {
            return &classes->entries[i];
        }
    }
    PyObject *kind = PyObject_GetAttr(type, str_kind);
    PyObject *vjps = PyObject_GetAttr(type, str_vjps);
    long value = kind != NULL && PyLong_CheckExact(kind) ? PyLong_AsLong(kind) : 0;
    Py_XDECREF(kind);
    PyErr_Clear(); /* a class without them is simply not for this path */
    if (vjps == NULL || !PyTuple_CheckExact(vjps) || PyTuple_GET_SIZE(vjps) < value) {
        value = 0;
    }
    ClassInfo found = {Py_NewRef(type), vjps != NULL ? vjps : Py_NewRef(Py_None), value};
    if (classes->size == CLASSES) { /* full: forget the oldest */
        Py_DECREF(classes->entries[0].type);
        Py_DECREF(classes->entries[0].vjps);
        memmove(classes->entries, classes->entries + 1, (CLASSES - 1) * sizeof(ClassInfo));
        classes->size--;
    }
    classes->entries[classes->size] = found;
    return &classes->entries[classes->size++];
}

static void
classes_clear(Classes *classes)
{
    for (int i = 0; i < classes->size; i++) {
        Py_DECREF(classes->entries[i].type);
        Py_DECREF(classes->entries[i].vjps);
    }
    classes->size = 0;
}

static int
is_scalar_grad(PyObject *g)
{
    int scalar = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(scalar_grads); i++) {
        scalar |= (PyObject *)Py_TYPE(g) == PyTuple_GET_ITEM(scalar_grads, i);
    }
    return scalar;
}

/* Whether _tensor._cast_like keeps gradient `g` for a leaf of data `like`: of
 * g's type, or (g a NumPy scalar) an array of g's dtype. -1: an error. */
static int
keeps_type(PyObject *like, PyObject *g)
{
    if (Py_TYPE(like) == Py_TYPE(g)) {
        return 1;
    }
    if (PyFloat_CheckExact(g) || (PyObject *)Py_TYPE(like) != ndarray_type) {
        return 0;
    }
    PyObject *target = PyObject_GetAttr(like, str_dtype);
    PyObject *dtype = target != NULL ? PyObject_GetAttr(g, str_dtype) : NULL;
    int same = dtype != NULL ? PyObject_RichCompareBool(dtype, target, Py_EQ) : -1;
    Py_XDECREF(target);
    Py_XDECREF(dtype);
    return same;
}

/* At a leaf's AccumulateGrad, the leaf tensor (new reference) when `g` goes into
 * its .grad with no cast or buffer, as _tensor._scalar_leaf decides: see
 * keeps_type, and any earlier .grad's data is of g's type. NULL without an
 * error when not. */
static PyObject *
scalar_leaf(PyObject *node, PyObject *g)
{
    PyObject *leaf = PyObject_GetAttr(node, str_variable);
    if (leaf == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear(); /* not an AccumulateGrad after all: the general path's */
        }
        return NULL;
    }
    /* Tensor itself: a subclass might read its slots through properties */
    PyObject *old = Py_TYPE(leaf) == tensor_type ? TENSOR(leaf)->grad : NULL;
    int keeps = old != NULL && TENSOR(leaf)->data != NULL &&
                (old == Py_None || (Py_TYPE(old) == tensor_type && TENSOR(old)->data != NULL &&
                                    Py_TYPE(TENSOR(old)->data) == Py_TYPE(g)));
    if (keeps) {
        keeps = keeps_type(TENSOR(leaf)->data, g);
    }
    if (keeps <= 0) {
        Py_DECREF(leaf);
        return NULL;
    }
    return leaf;
}

/* _tensor._store_leaf_data without a cast or a buffer: .grad becomes a new
 * tensor of `g`, or of the earlier .grad's data plus `g`. */
static int
store_leaf_grad(PyObject *leaf, PyObject *g)
{
    PyObject *old = Py_NewRef(TENSOR(leaf)->grad); /* held while the sum runs */
    PyObject *sum = old == Py_None ? Py_NewRef(g) : PyNumber_Add(TENSOR(old)->data, g);
    Py_DECREF(old);
    if (sum == NULL) {
        return -1;
    }
    PyObject *grad = new_tensor(sum, Py_None);
    Py_DECREF(sum);
    if (grad == NULL) {
        return -1;
    }
    Py_SETREF(TENSOR(leaf)->grad, grad);
    return 0;
}

/* Whether the 0-d path takes `node` with gradient `g` (as _tensor._scalar_nodes
 * decides); if so, the node's class information (kind -1: a leaf's
 * AccumulateGrad, which `leaves` allows and scalar_leaf then decides). */
static ClassInfo *
takes(Classes *classes, PyObject *node, PyObject *g, int leaves)
{
    if (!is_scalar_grad(g) || !is_node(node)) {
        return NULL;
    }
    NodeObject *n = NODE(node);
    if (n->meta != Py_None) {
        return NULL;
    }
    ClassInfo *info = class_info(classes, node);
    if (info->kind == -1) {
        return leaves ? info : NULL;
    }
    if ((info->kind != 1 && info->kind != 2) || n->holds == NULL || n->holds == freed ||
        n->ans == NULL || n->ans == freed || n->s0 == NULL || n->s1 == NULL ||
        n->p0 == NULL || n->p1 == NULL || n->consts == NULL ||
        !PyTuple_CheckExact(n->consts) || PyTuple_GET_SIZE(n->consts) > MAX_ARGS - 4) {
        return NULL;
    }
    return info;
}

/* Add gradient `gi` for `parent` into `pending`; count the parent's consumer done. */
static int
pass_on(PyObject *pending, Stack *ready, PyObject *parent, PyObject *gi, long long base)
{
    if (gi != Py_None) {
        PyObject *old = PyDict_GetItemWithError(pending, parent);
        if (old == NULL && PyErr_Occurred()) {
            return -1;
        }
        PyObject *sum = old == NULL ? Py_NewRef(gi) : PyNumber_Add(old, gi);
        if (sum == NULL) {
            return -1;
        }
        int failed = PyDict_SetItem(pending, parent, sum);
        Py_DECREF(sum);
        if (failed) {
            return -1;
        }
    }
    long long deps;
    if (!is_node(parent)) {
        PyErr_SetString(PyExc_TypeError, "a graph edge is not a Node");
        return -1;
    }
    if (read_deps(parent, &deps) || write_deps(parent, deps - 1)) {
        return -1;
    }
    return deps - 1 == base ? stack_push(ready, parent) : 0;
}

/* Run one node the 0-d path took: its VJPs on (g, ans, s0[, s1], *consts). */
/* A VJP raised ArithmeticError on Python floats (1.0 / 0.0, 0.0 ** -1): run it
 * again through _tensor._retry_on_numpy, on NumPy float64s, which answer inf or
 * nan as the array path does. Without that helper, the error stands. */
static PyObject *
retry_on_numpy(PyObject *vjp, PyObject *const *argv, Py_ssize_t argc)
{
    PyObject *helper = PyDict_GetItemString(tensor_globals, "_retry_on_numpy");
    if (helper == NULL) {
        return NULL;
    }
    PyErr_Clear();
    PyObject *args = PyTuple_New(argc);
    if (args == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        PyTuple_SET_ITEM(args, i, Py_NewRef(argv[i]));
    }
    PyObject *result = PyObject_CallFunctionObjArgs(helper, vjp, args, NULL);
    Py_DECREF(args);
    return result;
}

static int
run_scalar_node(PyObject *node, PyObject *g, long kind, PyObject *vjps, PyObject *pending,
                Stack *ready, long long base, int free_saved)
{
    NodeObject *n = NODE(node);
    PyObject *argv[MAX_ARGS];
    Py_ssize_t argc = 0;
    argv[argc++] = Py_NewRef(g);
    argv[argc++] = Py_NewRef(n->ans);
    argv[argc++] = Py_NewRef(n->s0);
    if (kind == 2) {
        argv[argc++] = Py_NewRef(n->s1);
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(n->consts); i++) {
        argv[argc++] = Py_NewRef(PyTuple_GET_ITEM(n->consts, i));
    }
    PyObject *parents[2] = {Py_NewRef(n->p0), Py_NewRef(n->p1)};
    int failed = 0;
    if (free_saved) {
        int holds = PyObject_IsTrue(n->holds);
        failed = holds < 0;
        if (holds > 0) {
            Py_SETREF(n->holds, Py_NewRef(freed));
            Py_SETREF(n->s0, Py_NewRef(Py_None));
            Py_SETREF(n->s1, Py_NewRef(Py_None));
        }
        if (n->ans != Py_None) {
            Py_SETREF(n->ans, Py_NewRef(freed));
        }
    }
    for (long i = 0; i < kind && !failed; i++) {
        if (parents[i] == Py_None) {
            continue;
        }
        PyObject *gi = PyObject_Vectorcall(PyTuple_GET_ITEM(vjps, i), argv, argc, NULL);
        if (gi == NULL && PyErr_ExceptionMatches(PyExc_ArithmeticError)) {
            gi = retry_on_numpy(PyTuple_GET_ITEM(vjps, i), argv, argc);
        }
        failed = gi == NULL || pass_on(pending, ready, parents[i], gi, base) != 0;
        Py_XDECREF(gi);
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        Py_DECREF(argv[i]);
    }
    Py_DECREF(parents[0]);
    Py_DECREF(parents[1]);
    return failed ? -1 : 0;
}

static PyObject *
run_scalar_nodes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!READY()) {
        NOT_READY();
        return NULL;
    }
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "run_scalar_nodes(ready: list, pending: dict, base: int, free: bool)");
        return NULL;
    }
    PyObject *ready = args[0], *pending = args[1];
    long long base = PyLong_AsLongLong(args[2]);
    int free_saved = PyObject_IsTrue(args[3]);
    if ((base == -1 && PyErr_Occurred()) || free_saved < 0) {
        return NULL;
    }
    /* record_values keeps each leaf's gradient: then leaves take the general path */
    PyObject *recording = PyDict_GetItemWithError(tensor_globals, str_recording);
    if (recording == NULL && PyErr_Occurred()) {
        return NULL;
    }
    int leaves = recording == Py_False;
    /* Nodes made ready here stay on a C stack above the list's items. */
    Stack stack = {NULL, 0, 0};
    Classes classes = {.size = 0};
    int failed = 0;
    for (;;) {
        Py_ssize_t listed = PyList_GET_SIZE(ready);
        PyObject *node;
        if (stack.size > 0) {
            node = stack.items[stack.size - 1];
        }
        else if (listed > 0) {
            node = PyList_GET_ITEM(ready, listed - 1);
        }
        else {
            break;
        }
        PyObject *g = PyDict_GetItemWithError(pending, node);
        if (g == NULL) {
            failed = PyErr_Occurred() != NULL;
            break;
        }
        ClassInfo *info = takes(&classes, node, g, leaves);
        PyObject *leaf = NULL;
        if (info != NULL && info->kind == -1) {
            leaf = scalar_leaf(node, g);
            failed = leaf == NULL && PyErr_Occurred() != NULL;
            info = leaf != NULL ? info : NULL;
        }
        if (info == NULL) {
            break;
        }
        /* Committed: from here on this node is ours, as Python's pop would make it. */
        if (stack.size > 0) {
            stack.size--; /* the stack's reference, now ours */
        }
        else {
            Py_INCREF(node);
            failed = PyList_SetSlice(ready, listed - 1, listed, NULL);
        }
        Py_INCREF(g);
        PyObject *vjps = Py_NewRef(info->vjps);
        failed = failed || PyDict_DelItem(pending, node) ||
                 (leaf != NULL ? store_leaf_grad(leaf, g)
                               : run_scalar_node(node, g, info->kind, vjps, pending, &stack,
                                                 base, free_saved));
        Py_XDECREF(leaf);
        Py_DECREF(vjps);
        Py_DECREF(g);
        Py_DECREF(node);
        if (failed) {
            break;
        }
    }
    classes_clear(&classes);
    if (stack_give(&stack, ready) || failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ forward */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *python;     /* the Python function: fallback, name, doc */
    PyObject *compute;    /* op.forward */
    PyObject *scalar;     /* op.scalar: the forward on Python floats (the float backend) */
    PyObject *node_class; /* op.node */
    int arity;            /* 1 or 2 */
    int uses_ans;
    int keep[4][2];       /* binary: op.keep2; unary: keep[0][0] is op.saves */
    double lo, hi;        /* op.quiet: where the op raises no floating-point warning */
} FastOp;

/* The value of a float64 or float32 scalar, or a Python float or int; NaN if none. */
static double
value_of(PyObject *v)
{
    double d = PyFloat_Check(v) ? PyFloat_AS_DOUBLE(v) : PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return Py_NAN;
    }
    return d;
}

/* NumPy warns about overflow, division by zero and invalid operations from the
 * frame that called it: the user's, here. Python's path silences them (a filter
 * on gradcalc's frames), so the fast path only runs where none can arise. */
static int
quiet_binary(FastOp *self, PyObject *x, PyObject *y)
{
    double a = fabs(value_of(x)), b = fabs(value_of(y));
    return a <= self->hi && b <= self->hi && b >= self->lo; /* false for NaN */
}

static int
quiet_unary(FastOp *self, PyObject *x)
{
    double a = value_of(x);
    return self->lo <= a && a < self->hi;
}

static int
is_scalar(PyObject *value)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(forward_types); i++) {
        if ((PyObject *)Py_TYPE(value) == PyTuple_GET_ITEM(forward_types, i)) {
            return 1;
        }
    }
    return 0;
}

/* Whether the fast path may run: C loops on, grad mode on in every thread,
 * values not being recorded for the graph renderer. */
static int
fast_mode(void)
{
    PyObject *native = PyDict_GetItemWithError(tensor_globals, str_native);
    PyObject *enabled = PyDict_GetItemWithError(tensor_globals, str_grad_enabled);
    PyObject *recording = PyDict_GetItemWithError(tensor_globals, str_recording);
    return native != NULL && native != Py_None && enabled == Py_True && recording == Py_False;
}

/* A tensor's data as a NumPy float scalar (new reference), as `xd[()]` would
 * make a 0-d array one; NULL without an error when the fast path cannot take it. */
static PyObject *
scalar_data(PyObject *tensor)
{
    PyObject *data = TENSOR(tensor)->data;
    if (data == NULL) {
        return NULL;
    }
    if (is_scalar(data)) {
        return Py_NewRef(data);
    }
    if ((PyObject *)Py_TYPE(data) != ndarray_type) {
        return NULL;
    }
    PyObject *ndim = PyObject_GetAttr(data, str_ndim);
    if (ndim == NULL) {
        PyErr_Clear();
        return NULL;
    }
    int zero_d = PyLong_CheckExact(ndim) && PyLong_AsLong(ndim) == 0;
    Py_DECREF(ndim);
    if (!zero_d) {
        return NULL;
    }
    PyObject *scalar = PyObject_GetItem(data, empty_tuple);
    if (scalar == NULL || !is_scalar(scalar)) {
        Py_XDECREF(scalar);
        PyErr_Clear();
        return NULL;
    }
    return scalar;
}

/* The node a consumer of tensor `t` points to: its grad_fn, or _edge(t) for a leaf. */
static PyObject *
edge_of(PyObject *t)
{
    PyObject *fn = TENSOR(t)->grad_fn;
    if (fn != NULL && fn != Py_None) {
        return Py_NewRef(fn);
    }
    return PyObject_CallOneArg(edge_function, t);
}

static PyObject *
fast_result(FastOp *self, PyObject *data, PyObject *p0, PyObject *p1, PyObject *s0,
            PyObject *s1, int holds)
{
    return make_result((PyTypeObject *)self->node_class, data, p0, p1, s0, s1, empty_tuple,
                       self->uses_ans ? data : Py_None, holds ? Py_True : Py_False);
}

#define NOT_TAKEN NULL
#define FAILED ((PyObject *)-1) /* an error is set */
#define NOT_TAKEN_DATA ((PyObject *)-2) /* scalar_forward: the Python function decides */

/* The float backend's case (see _tensor.on_floats): op.scalar on Python floats.
 * Where it raises ArithmeticError or ValueError (math.log(0), 1.0 / 0.0), or
 * answers other than a float or bool, the Python function runs instead, which
 * hands the value to NumPy. No quiet check: math raises where NumPy warns. */
static PyObject *
scalar_forward(FastOp *self, PyObject *const *operands, Py_ssize_t n)
{
    PyObject *data = PyObject_Vectorcall(self->scalar, operands, n, NULL);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ArithmeticError) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return NOT_TAKEN_DATA;
        }
        return NULL;
    }
    if (!PyFloat_CheckExact(data) && !PyBool_Check(data)) {
        Py_DECREF(data);
        return NOT_TAKEN_DATA;
    }
    return data;
}

static PyObject *
fast_float_binary(FastOp *self, PyObject *x, PyObject *y)
{
    PyObject *xs = TENSOR(x)->data, *ys, *p0 = NULL, *p1 = NULL, *result = FAILED;
    int number = PyFloat_CheckExact(y) || PyLong_CheckExact(y);
    if (number) {
        ys = y;
    }
    else if (Py_TYPE(y) == tensor_type && TENSOR(y)->data != NULL &&
             PyFloat_CheckExact(TENSOR(y)->data)) {
        ys = TENSOR(y)->data;
    }
    else {
        return NOT_TAKEN;
    }
    PyObject *operands[2] = {xs, ys};
    PyObject *data = scalar_forward(self, operands, 2);
    if (data == NULL) {
        return FAILED;
    }
    if (data == NOT_TAKEN_DATA) {
        return NOT_TAKEN;
    }
    int rx = TENSOR(x)->requires_grad == Py_True;
    int ry = !number && TENSOR(y)->requires_grad == Py_True;
    if (!rx && !ry) {
        result = new_tensor(data, Py_None);
    }
    else if ((!rx || (p0 = edge_of(x)) != NULL) && (!ry || (p1 = edge_of(y)) != NULL)) {
        int *keep = self->keep[rx + 2 * ry];
        int holds = number ? keep[0] : keep[0] || keep[1];
        result = fast_result(self, data, p0, p1, xs, ys, holds); /* takes p0, p1 */
    }
    else {
        Py_XDECREF(p0);
    }
    Py_DECREF(data);
    return result == NULL ? FAILED : result;
}

static PyObject *
fast_binary(FastOp *self, PyObject *x, PyObject *y)
{
    if (TENSOR(x)->data != NULL && PyFloat_CheckExact(TENSOR(x)->data)) {
        return fast_float_binary(self, x, y);
    }
    PyObject *xs = scalar_data(x), *ys = NULL, *data = NULL, *result = FAILED;
    PyObject *p0 = NULL, *p1 = NULL;
    int number = PyFloat_CheckExact(y) || PyLong_CheckExact(y);
    if (xs == NULL) {
        return NOT_TAKEN;
    }
    if (number) {
        ys = Py_NewRef(y);
    }
    else if (Py_TYPE(y) == tensor_type) {
        ys = scalar_data(y);
        if (ys != NULL && Py_TYPE(ys) != Py_TYPE(xs)) {
            Py_CLEAR(ys);
        }
    }
    if (ys == NULL || !quiet_binary(self, xs, ys)) {
        Py_DECREF(xs);
        Py_XDECREF(ys);
        return NOT_TAKEN;
    }
    PyObject *operands[2] = {xs, ys};
    data = PyObject_Vectorcall(self->compute, operands, 2, NULL);
    if (data != NULL) {
        int rx = TENSOR(x)->requires_grad == Py_True;
        int ry = !number && TENSOR(y)->requires_grad == Py_True;
        if (!rx && !ry) {
            result = new_tensor(data, Py_None);
        }
        else if ((!rx || (p0 = edge_of(x)) != NULL) && (!ry || (p1 = edge_of(y)) != NULL)) {
            int *keep = self->keep[rx + 2 * ry];
            /* holds: whether the node keeps tensor data (a number operand is not) */
            int holds = number ? keep[0] : keep[0] || keep[1];
            result = fast_result(self, data, p0, p1, xs, ys, holds); /* takes p0, p1 */
        }
        else {
            Py_XDECREF(p0);
        }
    }
    Py_XDECREF(data);
    Py_DECREF(xs);
    Py_DECREF(ys);
    return result == NULL ? FAILED : result;
}

static PyObject *
fast_unary(FastOp *self, PyObject *x)
{
    PyObject *xd = TENSOR(x)->data, *result = FAILED, *p0, *data;
    if (xd != NULL && PyFloat_CheckExact(xd)) {
        data = scalar_forward(self, &xd, 1); /* the float backend */
        if (data == NOT_TAKEN_DATA) {
            return NOT_TAKEN;
        }
    }
    else if (xd == NULL || !is_scalar(xd) || !quiet_unary(self, xd)) {
        return NOT_TAKEN;
    }
    else {
        data = PyObject_CallOneArg(self->compute, xd);
    }
    if (data == NULL) {
        return FAILED;
    }
    if (TENSOR(x)->requires_grad != Py_True) {
        result = new_tensor(data, Py_None);
    }
    else if ((p0 = edge_of(x)) != NULL) {
        result = fast_result(self, data, p0, NULL, xd, Py_None, self->keep[0][0]);
    }
    Py_DECREF(data);
    return result == NULL ? FAILED : result;
}

static PyObject *
fastop_vectorcall(FastOp *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == self->arity && Py_TYPE(args[0]) == tensor_type &&
        fast_mode()) {
        PyObject *result = self->arity == 2 ? fast_binary(self, args[0], args[1])
                                            : fast_unary(self, args[0]);
        if (result == FAILED) {
            return NULL;
        }
        if (result != NOT_TAKEN) {
            return result;
        }
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_Vectorcall(self->python, args, nargsf, kwnames);
}

static PyObject *
fastop_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *python, *compute, *scalar, *node_class, *keep;
    int arity, uses_ans;
    double lo, hi;
    if (!READY()) {
        NOT_READY();
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOOipO(dd):FastOp", &python, &compute, &scalar, &node_class,
                          &arity, &uses_ans, &keep, &lo, &hi)) {
        return NULL;
    }
    if ((arity != 1 && arity != 2) || !PyType_Check(node_class) ||
        !PyType_IsSubtype((PyTypeObject *)node_class, &Node_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "FastOp(python, compute, scalar, node_class, arity, uses_ans, keep, quiet)");
        return NULL;
    }
    FastOp *self = (FastOp *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)fastop_vectorcall;
    self->python = Py_NewRef(python);
    self->compute = Py_NewRef(compute);
    self->scalar = Py_NewRef(scalar);
    self->node_class = Py_NewRef(node_class);
    self->arity = arity;
    self->uses_ans = uses_ans;
    self->lo = lo;
    self->hi = hi;
    /* keep: binary, four (k0, k1) pairs; unary, a bool (whether the node keeps x) */
    if (arity == 1) {
        int saves = PyObject_IsTrue(keep);
        if (saves < 0) {
            Py_DECREF(self);
            return NULL;
        }
        self->keep[0][0] = saves;
        return (PyObject *)self;
    }
    for (int mask = 0; mask < 4; mask++) {
        PyObject *pair = PySequence_GetItem(keep, mask);
        for (int j = 0; pair != NULL && j < 2; j++) {
            PyObject *flag = PySequence_GetItem(pair, j);
            self->keep[mask][j] = flag == NULL ? -1 : PyObject_IsTrue(flag);
            Py_XDECREF(flag);
        }
        Py_XDECREF(pair);
        if (PyErr_Occurred()) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static int
fastop_traverse(FastOp *self, visitproc visit, void *arg)
{
    Py_VISIT(self->python);
    Py_VISIT(self->compute);
    Py_VISIT(self->scalar);
    Py_VISIT(self->node_class);
    return 0;
}

static int
fastop_clear(FastOp *self)
{
    Py_CLEAR(self->python);
    Py_CLEAR(self->compute);
    Py_CLEAR(self->scalar);
    Py_CLEAR(self->node_class);
    return 0;
}

static void
fastop_dealloc(FastOp *self)
{
    PyObject_GC_UnTrack(self);
    fastop_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* As a class attribute it binds like a function (t.sin() calls it with t). */
static PyObject *
fastop_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

/* Everything else (__name__, __doc__, __wrapped__, the signature) is the Python function's. */
static PyObject *
fastop_getattro(FastOp *self, PyObject *name)
{
    return PyObject_GetAttr(self->python, name);
}

static int
fastop_setattro(FastOp *self, PyObject *name, PyObject *value)
{
    return PyObject_SetAttr(self->python, name, value);
}

static PyObject *
fastop_repr(FastOp *self)
{
    return PyObject_Repr(self->python);
}

static PyTypeObject FastOp_Type;

/* set_forward(fastop, forward): the op's forward, once NumPy is loaded (the
 * engine names NumPy's functions lazily, see gradcalc/_numpy.py). */
static PyObject *
set_forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &FastOp_Type) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_forward(fastop, forward)");
        return NULL;
    }
    Py_XSETREF(((FastOp *)args[0])->compute, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyTypeObject FastOp_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gradcalc._native.FastOp",
    .tp_doc = "FastOp(python, compute, scalar, node_class, arity, uses_ans, keep, (lo, hi)): "
              "see the module doc.",
    .tp_basicsize = sizeof(FastOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(FastOp, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = fastop_new,
    .tp_traverse = (traverseproc)fastop_traverse,
    .tp_clear = (inquiry)fastop_clear,
    .tp_dealloc = (destructor)fastop_dealloc,
    .tp_descr_get = fastop_get,
    .tp_getattro = (getattrofunc)fastop_getattro,
    .tp_setattro = (setattrofunc)fastop_setattro,
    .tp_repr = (reprfunc)fastop_repr,
};

/* ------------------------------------------------------------------ module */

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

static PyMethodDef methods[] = {
    {"setup", FASTCALL(setup),
     "setup(Tensor, FREED, scalar_grads, forward_types, ndarray, globals, edge, Meta, "
     "to_numpy): once, "
     "before the others."},
    {"record", FASTCALL(record),
     "record(node_class, data, p0, p1, s0, s1, consts, ans, holds): a node and its tensor."},
    {"count_dependencies", FASTCALL(count_dependencies),
     "count_dependencies(stack, base): count every reachable node's consumers."},
    {"set_forward", FASTCALL(set_forward),
     "set_forward(fastop, forward): the op's forward, once NumPy is loaded."},
    {"run_scalar_nodes", FASTCALL(run_scalar_nodes),
     "run_scalar_nodes(ready, pending, base, free): backward's 0-d fast path."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    str_kind = PyUnicode_InternFromString("kind");
    str_vjps = PyUnicode_InternFromString("vjps");
    str_ndim = PyUnicode_InternFromString("ndim");
    str_native = PyUnicode_InternFromString("_native");
    str_grad_enabled = PyUnicode_InternFromString("_grad_enabled");
    str_recording = PyUnicode_InternFromString("_recording");
    str_variable = PyUnicode_InternFromString("variable");
    str_dtype = PyUnicode_InternFromString("dtype");
    empty_tuple = PyTuple_New(0);
    zero = PyLong_FromLong(0);
    if (str_kind == NULL || str_vjps == NULL || str_ndim == NULL || str_native == NULL ||
        str_grad_enabled == NULL || str_recording == NULL || str_variable == NULL ||
        str_dtype == NULL || empty_tuple == NULL || zero == NULL ||
        PyType_Ready(&Node_Type) < 0 || PyType_Ready(&TensorBase_Type) < 0 ||
        PyType_Ready(&FastOp_Type) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Node", (PyObject *)&Node_Type) < 0 ||
        PyModule_AddObjectRef(module, "TensorBase", (PyObject *)&TensorBase_Type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "FastOp", (PyObject *)&FastOp_Type);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gradcalc._native",
    .m_doc = "Node and tensor slots, and backward's and the forward's per-node loops, in C "
             "(see _tensor.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&module_def);
}
