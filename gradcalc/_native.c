/* The two loops of a backward pass that visit every node, in C.
 *
 * gradcalc/_tensor.py has the same loops in Python and uses them when this
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
 * Slots are read at the offsets of Node's member descriptors (found once, in
 * setup); the VJPs, the sums of gradients and everything numeric stay Python
 * calls, so results are bit-identical to the Python loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define MAX_ARGS 12 /* g, ans, up to two operands, then the op's constants */

static PyTypeObject *node_type;
static PyObject *freed;      /* _tensor._FREED */
static PyObject *scalar_types; /* a tuple of the NumPy scalar types taken */
static PyObject *str_kind, *str_vjps;
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

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(Node, FREED, scalar_types): find Node's slots; call once before the others."},
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
    return (str_kind == NULL || str_vjps == NULL) ? -1 : 0;
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
