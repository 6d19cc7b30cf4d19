/* What a long scalar graph does per node, in C: the two loops of a backward
 * pass that visit every node, and the forward's 0-d elementwise ops.
 *
 * gradcalc/_tensor.py has the same code in Python and uses it when this
 * module was not built (no C compiler at install time) or was switched off
 * (GRADCALC_PURE_PYTHON=1). Both read and write the slots of _tensor.Node, so
 * they must agree on what those slots mean; the engine tests run with and
 * without this module.
 *
 * count_dependencies: the consumers of every node reachable from the roots
 *     (Node.deps, offset by the pass's base as _tensor.run_backward explains).
 * run_scalar_nodes: backward's 0-d fast path: while the next ready node is a
 *     plain one-or-two-operand node whose gradient is a NumPy float scalar,
 *     run its VJPs and pass the results on. Stops, changing nothing, at the
 *     first node that needs the general path (Python takes that node).
 *
 * FastOp: the common case of a float elementwise op on 0-d tensors (what
 *     _tensor.binary_method / unary_function inline in Python), taken when
 *     the operands' data are NumPy float64/float32 scalars (or 0-d arrays),
 *     grad mode is on everywhere and the values lie where the op raises no
 *     floating-point warning (op.quiet); anything else calls the Python
 *     function it wraps, which it also answers for (name, doc, signature).
 *
 * Slots are read at the offsets of the member descriptors of Node and
 * Tensor (found once, in setup); the VJPs, the ops' forwards, the sums of
 * gradients and everything numeric stay Python calls, so results are
 * bit-identical to the Python code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

#define MAX_ARGS 12 /* g, ans, up to two operands, then the op's constants */

static PyTypeObject *node_type;
static PyObject *freed;      /* _tensor._FREED */
static PyObject *scalar_types; /* a tuple of the NumPy scalar types taken */
static PyObject *str_kind, *str_vjps, *str_ndim, *str_native, *str_grad_enabled,
    *str_recording;
static PyTypeObject *tensor_type, *ndarray_type;
static PyObject *tensor_globals; /* _tensor's module dict: grad mode, recording, _native */
static PyObject *edge_function;  /* _tensor._edge */
static PyObject *empty_tuple, *zero;
static PyObject *forward_types; /* the NumPy scalar types FastOp takes: float64, float32 */
static Py_ssize_t off_data, off_grad_fn, off_requires_grad, off_grad, off_accum;
static Py_ssize_t off_p0, off_p1, off_s0, off_s1, off_consts, off_ans, off_holds, off_meta,
    off_deps;

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

static void
set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject *old = SLOT(obj, offset);
    Py_INCREF(value);
    SLOT(obj, offset) = value;
    Py_XDECREF(old);
}

static int
slot_offset(PyObject *cls, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttrString(cls, name);
    if (descr == NULL) {
        return -1;
    }
    if (Py_TYPE(descr) != &PyMemberDescr_Type ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "Node.%s is not a slot", name);
        Py_DECREF(descr);
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return 0;
}

/* The op's kind (Node subclasses set it as a class attribute); -2 if unknown. */
static long
kind_of(PyObject *node)
{
    PyObject *kind = _PyType_Lookup(Py_TYPE(node), str_kind);
    if (kind == NULL || !PyLong_CheckExact(kind)) {
        return -2;
    }
    long value = PyLong_AsLong(kind);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -2;
    }
    return value;
}

static int
is_node(PyObject *obj)
{
    return obj != NULL && PyObject_TypeCheck(obj, node_type);
}

/* deps as a C integer; the caller keeps base (and so every count) below 2**62. */
static int
read_deps(PyObject *node, long long *value)
{
    PyObject *deps = SLOT(node, off_deps);
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
    PyObject *old = SLOT(node, off_deps);
    SLOT(node, off_deps) = deps;
    Py_XDECREF(old);
    return 0;
}

static PyObject *
setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "setup(Node, FREED, scalar_types)");
        return NULL;
    }
    PyObject *cls = args[0];
    if (slot_offset(cls, "p0", &off_p0) || slot_offset(cls, "p1", &off_p1) ||
        slot_offset(cls, "s0", &off_s0) || slot_offset(cls, "s1", &off_s1) ||
        slot_offset(cls, "consts", &off_consts) || slot_offset(cls, "ans", &off_ans) ||
        slot_offset(cls, "holds", &off_holds) || slot_offset(cls, "meta", &off_meta) ||
        slot_offset(cls, "deps", &off_deps)) {
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(node_type, (PyTypeObject *)cls);
    Py_INCREF(args[1]);
    Py_XSETREF(freed, args[1]);
    Py_INCREF(args[2]);
    Py_XSETREF(scalar_types, args[2]);
    Py_RETURN_NONE;
}

static PyObject *
setup_forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PyTuple_CheckExact(args[4]) || node_type == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "setup_forward(Tensor, ndarray, globals, edge, scalar_types) after setup");
        return NULL;
    }
    PyObject *cls = args[0];
    if (slot_offset(cls, "_data", &off_data) || slot_offset(cls, "_grad_fn", &off_grad_fn) ||
        slot_offset(cls, "_requires_grad", &off_requires_grad) ||
        slot_offset(cls, "_grad", &off_grad) || slot_offset(cls, "_accum", &off_accum)) {
        return NULL;
    }
    Py_XSETREF(tensor_type, (PyTypeObject *)Py_NewRef(cls));
    Py_XSETREF(ndarray_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(tensor_globals, Py_NewRef(args[2]));
    Py_XSETREF(edge_function, Py_NewRef(args[3]));
    Py_XSETREF(forward_types, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

static PyObject *
count_dependencies(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || node_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "count_dependencies(stack: list, base: int) after setup");
        return NULL;
    }
    PyObject *stack = args[0];
    long long base = PyLong_AsLongLong(args[1]);
    if (base == -1 && PyErr_Occurred()) {
        return NULL;
    }
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t top = PyList_GET_SIZE(stack) - 1;
        PyObject *node = PyList_GET_ITEM(stack, top); /* the list's reference, now ours */
        Py_SET_SIZE(stack, top);
        if (!is_node(node)) {
            PyErr_SetString(PyExc_TypeError, "a graph edge is not a Node");
            Py_DECREF(node);
            return NULL;
        }
        PyObject *pair[2];
        PyObject *const *parents = pair;
        Py_ssize_t count = 2;
        if (kind_of(node) == 0) {
            PyObject *many = SLOT(node, off_p0);
            if (many == NULL || !PyTuple_CheckExact(many)) {
                PyErr_SetString(PyExc_TypeError, "Node.p0 of a sequence op is not a tuple");
                Py_DECREF(node);
                return NULL;
            }
            parents = &PyTuple_GET_ITEM(many, 0);
            count = PyTuple_GET_SIZE(many);
        }
        else {
            pair[0] = SLOT(node, off_p0);
            pair[1] = SLOT(node, off_p1);
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *parent = parents[i];
            if (parent == NULL || parent == Py_None) {
                continue;
            }
            long long deps;
            if (!is_node(parent)) {
                PyErr_SetString(PyExc_TypeError, "a graph edge is not a Node");
                Py_DECREF(node);
                return NULL;
            }
            if (read_deps(parent, &deps) ||
                write_deps(parent, deps < base ? base + 1 : deps + 1) ||
                (deps < base && PyList_Append(stack, parent))) {
                Py_DECREF(node);
                return NULL;
            }
        }
        Py_DECREF(node);
    }
    Py_RETURN_NONE;
}

/* Whether Python's fast path would take `node` with gradient `g`. */
static int
takes(PyObject *node, PyObject *g, long *kind)
{
    PyObject *types = scalar_types;
    int scalar = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(types); i++) {
        scalar |= (PyObject *)Py_TYPE(g) == PyTuple_GET_ITEM(types, i);
    }
    if (!scalar || !is_node(node)) {
        return 0;
    }
    *kind = kind_of(node);
    if (*kind != 1 && *kind != 2) {
        return 0;
    }
    PyObject *holds = SLOT(node, off_holds), *ans = SLOT(node, off_ans);
    PyObject *consts = SLOT(node, off_consts);
    PyObject *vjps = _PyType_Lookup(Py_TYPE(node), str_vjps);
    return SLOT(node, off_meta) == Py_None && holds != NULL && holds != freed &&
           ans != NULL && ans != freed && SLOT(node, off_s0) != NULL &&
           SLOT(node, off_s1) != NULL && SLOT(node, off_p0) != NULL &&
           SLOT(node, off_p1) != NULL && consts != NULL && PyTuple_CheckExact(consts) &&
           PyTuple_GET_SIZE(consts) <= MAX_ARGS - 4 && vjps != NULL &&
           PyTuple_CheckExact(vjps) && PyTuple_GET_SIZE(vjps) >= *kind;
}

/* Add gradient `gi` for `parent` into `pending`; count the parent's consumer done. */
static int
pass_on(PyObject *pending, PyObject *ready, PyObject *parent, PyObject *gi, long long base)
{
    if (gi != Py_None) {
        PyObject *old = PyDict_GetItemWithError(pending, parent);
        if (old == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (old == NULL) {
            if (PyDict_SetItem(pending, parent, gi)) {
                return -1;
            }
        }
        else {
            PyObject *sum = PyNumber_Add(old, gi);
            if (sum == NULL) {
                return -1;
            }
            int failed = PyDict_SetItem(pending, parent, sum);
            Py_DECREF(sum);
            if (failed) {
                return -1;
            }
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
    return deps - 1 == base ? PyList_Append(ready, parent) : 0;
}

static PyObject *
run_scalar_nodes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) ||
        node_type == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "run_scalar_nodes(ready: list, pending: dict, base: int, free: bool) "
                        "after setup");
        return NULL;
    }
    PyObject *ready = args[0], *pending = args[1];
    long long base = PyLong_AsLongLong(args[2]);
    if (base == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int free_saved = PyObject_IsTrue(args[3]);
    if (free_saved < 0) {
        return NULL;
    }
    while (PyList_GET_SIZE(ready) > 0) {
        Py_ssize_t top = PyList_GET_SIZE(ready) - 1;
        PyObject *node = PyList_GET_ITEM(ready, top);
        PyObject *g = PyDict_GetItemWithError(pending, node);
        long kind;
        if (g == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            break;
        }
        if (!takes(node, g, &kind)) {
            break;
        }
        /* Committed: from here on this node is ours, as Python's pop would make it. */
        Py_SET_SIZE(ready, top);
        Py_INCREF(g);
        if (PyDict_DelItem(pending, node)) {
            Py_DECREF(g);
            Py_DECREF(node);
            return NULL;
        }
        PyObject *argv[MAX_ARGS];
        PyObject *consts = SLOT(node, off_consts);
        Py_ssize_t argc = 0;
        argv[argc++] = g; /* our reference */
        argv[argc++] = Py_NewRef(SLOT(node, off_ans));
        argv[argc++] = Py_NewRef(SLOT(node, off_s0));
        if (kind == 2) {
            argv[argc++] = Py_NewRef(SLOT(node, off_s1));
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
            argv[argc++] = Py_NewRef(PyTuple_GET_ITEM(consts, i));
        }
        PyObject *vjps = Py_NewRef(_PyType_Lookup(Py_TYPE(node), str_vjps));
        PyObject *parents[2] = {Py_NewRef(SLOT(node, off_p0)), Py_NewRef(SLOT(node, off_p1))};
        int failed = 0;
        if (free_saved) {
            int holds = PyObject_IsTrue(SLOT(node, off_holds));
            if (holds < 0) {
                failed = 1;
            }
            else if (holds) {
                set_slot(node, off_holds, freed);
                set_slot(node, off_s0, Py_None);
                set_slot(node, off_s1, Py_None);
            }
            if (SLOT(node, off_ans) != Py_None) {
                set_slot(node, off_ans, freed);
            }
        }
        for (long i = 0; i < kind && !failed; i++) {
            if (parents[i] == Py_None) {
                continue;
            }
            PyObject *gi = PyObject_Vectorcall(PyTuple_GET_ITEM(vjps, i), argv, argc, NULL);
            if (gi == NULL) {
                failed = 1;
                break;
            }
            failed = pass_on(pending, ready, parents[i], gi, base) != 0;
            Py_DECREF(gi);
        }
        for (Py_ssize_t i = 0; i < argc; i++) {
            Py_DECREF(argv[i]);
        }
        Py_DECREF(parents[0]);
        Py_DECREF(parents[1]);
        Py_DECREF(vjps);
        Py_DECREF(node);
        if (failed) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ forward */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *python;     /* the Python function: fallback, name, doc */
    PyObject *compute;    /* op.forward */
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
    PyObject *types = forward_types;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(types); i++) {
        if ((PyObject *)Py_TYPE(value) == PyTuple_GET_ITEM(types, i)) {
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
    PyObject *data = SLOT(tensor, off_data);
    if (data == NULL) {
        return NULL;
    }
    if (is_scalar(data)) {
        return Py_NewRef(data);
    }
    if (Py_TYPE(data) != ndarray_type) {
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
    PyObject *fn = SLOT(t, off_grad_fn);
    if (fn != NULL && fn != Py_None) {
        return Py_NewRef(fn);
    }
    return PyObject_CallOneArg(edge_function, t);
}

static PyObject *
new_tensor(PyObject *data, PyObject *node)
{
    PyObject *t = tensor_type->tp_alloc(tensor_type, 0);
    if (t == NULL) {
        return NULL;
    }
    SLOT(t, off_data) = Py_NewRef(data);
    SLOT(t, off_grad_fn) = Py_NewRef(node);
    SLOT(t, off_requires_grad) = Py_NewRef(node == Py_None ? Py_False : Py_True);
    SLOT(t, off_grad) = Py_NewRef(Py_None);
    SLOT(t, off_accum) = Py_NewRef(Py_None);
    return t;
}

/* A node of `self`'s op class. It takes over p0 and p1 (references, or NULL
 * for None), also when it fails. */
static PyObject *
new_node(FastOp *self, PyObject *p0, PyObject *p1, PyObject *s0, PyObject *s1,
         PyObject *data, int holds)
{
    PyTypeObject *cls = (PyTypeObject *)self->node_class;
    PyObject *node = cls->tp_alloc(cls, 0);
    if (node == NULL) {
        Py_XDECREF(p0);
        Py_XDECREF(p1);
        return NULL;
    }
    SLOT(node, off_p0) = p0 != NULL ? p0 : Py_NewRef(Py_None);
    SLOT(node, off_p1) = p1 != NULL ? p1 : Py_NewRef(Py_None);
    SLOT(node, off_s0) = Py_NewRef(s0);
    SLOT(node, off_s1) = Py_NewRef(s1);
    SLOT(node, off_consts) = Py_NewRef(empty_tuple);
    SLOT(node, off_ans) = Py_NewRef(self->uses_ans ? data : Py_None);
    SLOT(node, off_holds) = Py_NewRef(holds ? Py_True : Py_False);
    SLOT(node, off_meta) = Py_NewRef(Py_None);
    SLOT(node, off_deps) = Py_NewRef(zero);
    return node;
}

static PyObject *
fast_binary(FastOp *self, PyObject *x, PyObject *y)
{
    PyObject *xs = scalar_data(x), *ys = NULL, *data = NULL, *node = Py_None, *result;
    PyObject *p0 = NULL, *p1 = NULL;
    int number = PyFloat_CheckExact(y) || PyLong_CheckExact(y);
    if (xs == NULL) {
        return NULL;
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
        return NULL;
    }
    PyObject *operands[2] = {xs, ys};
    data = PyObject_Vectorcall(self->compute, operands, 2, NULL);
    if (data == NULL) {
        goto error;
    }
    int rx = SLOT(x, off_requires_grad) == Py_True;
    int ry = !number && SLOT(y, off_requires_grad) == Py_True;
    if (rx || ry) {
        int *keep = self->keep[rx + 2 * ry];
        /* holds: whether the node keeps tensor data (a number operand is not) */
        int holds = number ? keep[0] : keep[0] || keep[1];
        if ((rx && (p0 = edge_of(x)) == NULL) || (ry && (p1 = edge_of(y)) == NULL)) {
            goto error;
        }
        node = new_node(self, p0, p1, xs, ys, data, holds);
        p0 = p1 = NULL; /* taken by new_node, whether or not it succeeded */
        if (node == NULL) {
            goto error;
        }
    }
    result = new_tensor(data, node);
    if (node != Py_None) {
        Py_DECREF(node);
    }
    Py_DECREF(xs);
    Py_DECREF(ys);
    Py_DECREF(data);
    return result;
error:
    Py_XDECREF(p0);
    Py_XDECREF(p1);
    Py_XDECREF(data);
    Py_DECREF(xs);
    Py_DECREF(ys);
    return (PyObject *)-1; /* an error is set */
}

static PyObject *
fast_unary(FastOp *self, PyObject *x)
{
    PyObject *xd = SLOT(x, off_data), *node = Py_None, *p0, *result;
    if (xd == NULL || !is_scalar(xd) || !quiet_unary(self, xd)) {
        return NULL;
    }
    PyObject *data = PyObject_CallOneArg(self->compute, xd);
    if (data == NULL) {
        return (PyObject *)-1;
    }
    if (SLOT(x, off_requires_grad) == Py_True) {
        p0 = edge_of(x);
        node = p0 == NULL ? NULL : new_node(self, p0, NULL, xd, Py_None, data, self->keep[0][0]);
        if (node == NULL) {
            Py_DECREF(data);
            return (PyObject *)-1;
        }
    }
    result = new_tensor(data, node);
    if (node != Py_None) {
        Py_DECREF(node);
    }
    Py_DECREF(data);
    return result;
}

static PyObject *
fastop_vectorcall(FastOp *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == self->arity && Py_TYPE(args[0]) == tensor_type &&
        fast_mode()) {
        PyObject *result = self->arity == 2 ? fast_binary(self, args[0], args[1])
                                            : fast_unary(self, args[0]);
        if (result == (PyObject *)-1) {
            return NULL;
        }
        if (result != NULL) {
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
    PyObject *python, *compute, *node_class, *keep;
    int arity, uses_ans;
    double lo, hi;
    if (!PyArg_ParseTuple(args, "OOOipO(dd):FastOp", &python, &compute, &node_class, &arity,
                          &uses_ans, &keep, &lo, &hi)) {
        return NULL;
    }
    if ((arity != 1 && arity != 2) || !PyType_Check(node_class) ||
        !PyType_IsSubtype((PyTypeObject *)node_class, node_type)) {
        PyErr_SetString(PyExc_TypeError, "FastOp(python, compute, node_class, arity, uses_ans, keep, quiet)");
        return NULL;
    }
    FastOp *self = (FastOp *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)fastop_vectorcall;
    self->python = Py_NewRef(python);
    self->compute = Py_NewRef(compute);
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
    Py_VISIT(self->node_class);
    return 0;
}

static int
fastop_clear(FastOp *self)
{
    Py_CLEAR(self->python);
    Py_CLEAR(self->compute);
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

static PyTypeObject FastOp_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gradcalc._native.FastOp",
    .tp_doc = "FastOp(python, compute, node_class, arity, uses_ans, keep, (lo, hi)): see the module doc.",
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

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(Node, FREED, scalar_types): find Node's slots; call once before the others."},
    {"setup_forward", (PyCFunction)(void (*)(void))setup_forward, METH_FASTCALL,
     "setup_forward(Tensor, ndarray, globals, edge): find Tensor's slots, for FastOp."},
    {"count_dependencies", (PyCFunction)(void (*)(void))count_dependencies, METH_FASTCALL,
     "count_dependencies(stack, base): count every reachable node's consumers."},
    {"run_scalar_nodes", (PyCFunction)(void (*)(void))run_scalar_nodes, METH_FASTCALL,
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
    empty_tuple = PyTuple_New(0);
    zero = PyLong_FromLong(0);
    if (str_kind == NULL || str_vjps == NULL || str_ndim == NULL || str_native == NULL ||
        str_grad_enabled == NULL || str_recording == NULL || empty_tuple == NULL ||
        zero == NULL || PyType_Ready(&FastOp_Type) < 0) {
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
    .m_doc = "The loops of a backward pass that visit every node, in C (see _tensor.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&module_def);
}
