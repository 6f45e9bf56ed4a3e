/*
 * pyxenstored.store._nodebase: the compiled storage of a tree node (issue 10 item 5).
 *
 * A node is four fields: value, perms, children (objects) and gen (an integer). In pure
 * Python (store/nodebase.py) that is a slotted object of 64 bytes, 16 of them the cyclic
 * garbage collector's header, plus a 32-byte int object for the generation, which is
 * distinct for every node. This type stores the generation inline as a C integer and
 * takes no part in garbage collection: 48 bytes a node instead of 96.
 *
 * Why no GC is safe: the fields hold bytes, a permission tuple of int tuples, and a
 * child list (a tuple, list or dict of path strings); none of them can refer back to a
 * node, so no cycle can pass through one. A subclass made by a class statement is
 * collected again (CPython 3.11 collects every class type() makes), as LiveNode must be:
 * it adds a callable field. Field-less subclasses are made by derive() below.
 *
 * Contract (the same as nodebase.PureNodeBase, which the tests hold both to):
 *   NodeBase(value, perms, children=None, gen=0); children None or empty -> the shared
 *   empty tuple; attributes value, perms, children (objects) and gen (an int in
 *   [-2**63, 2**63): OverflowError outside, TypeError for a non-int).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *value;
    PyObject *perms;
    PyObject *children;
    long long gen;
} NodeBase;

static PyObject *empty_children; /* the shared empty tuple, set at import */

static int
NodeBase_init(NodeBase *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", "perms", "children", "gen", NULL};
    PyObject *value, *perms, *children = Py_None;
    long long gen = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OL:NodeBase", kwlist, &value, &perms,
                                     &children, &gen))
        return -1;
    if (children == Py_None) {
        children = empty_children;
    } else {
        int truth = PyObject_IsTrue(children);
        if (truth < 0)
            return -1;
        if (!truth)
            children = empty_children;
    }
    Py_INCREF(value);
    Py_INCREF(perms);
    Py_INCREF(children);
    Py_XSETREF(self->value, value);
    Py_XSETREF(self->perms, perms);
    Py_XSETREF(self->children, children);
    self->gen = gen;
    return 0;
}

static void
NodeBase_dealloc(NodeBase *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->value);
    Py_CLEAR(self->perms);
    Py_CLEAR(self->children);
    /* Not Py_DECREF(tp) for a heap subclass: every heap type's tp_dealloc is
     * subtype_dealloc (type() and PyType_FromSpec set it), which calls this one and
     * then drops the instance's reference to its type itself, NodeBase being static. */
    tp->tp_free((PyObject *)self);
}

/* Member descriptors, not getsets: CPython 3.11 specialises attribute loads and stores
 * of T_OBJECT_EX members as it does those of __slots__, so the hot paths that read
 * node.value and node.perms cost what they cost in pure Python. T_OBJECT_EX raises
 * AttributeError for an unset field, as an unset slot does. */
static PyMemberDef NodeBase_members[] = {
    {"value", T_OBJECT_EX, offsetof(NodeBase, value), 0, "the value (bytes)"},
    {"perms", T_OBJECT_EX, offsetof(NodeBase, perms), 0, "the permission list"},
    {"children", T_OBJECT_EX, offsetof(NodeBase, children), 0, "the child paths"},
    {"gen", T_LONGLONG, offsetof(NodeBase, gen), 0, "the generation of the last change"},
    {NULL},
};

static PyTypeObject NodeBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyxenstored.store._nodebase.NodeBase",
    .tp_doc = PyDoc_STR("A tree node's storage: value, perms, children, gen (no GC)."),
    .tp_basicsize = sizeof(NodeBase),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)NodeBase_init,
    .tp_dealloc = (destructor)NodeBase_dealloc,
    .tp_members = NodeBase_members,
};

/* derive(qualified_name, base): a subclass of NodeBase (or of a type derive() made) that
 * adds no fields and, unlike a class statement, no garbage-collector header: since
 * CPython 3.11 every class made by type() is collected, so a class statement would give
 * every node the 16 bytes back. The new type is mutable: the caller sets its methods and
 * class attributes on it (store/nodebase.py's NodeStorage does). */
static PyObject *
derive(PyObject *module, PyObject *args)
{
    const char *name;
    PyObject *base;
    if (!PyArg_ParseTuple(args, "sO!:derive", &name, &PyType_Type, &base))
        return NULL;
    PyTypeObject *tbase = (PyTypeObject *)base;
    if (!PyType_IsSubtype(tbase, &NodeBaseType) || tbase->tp_basicsize != sizeof(NodeBase) ||
        (tbase->tp_flags & Py_TPFLAGS_HAVE_GC)) {
        PyErr_SetString(PyExc_TypeError, "derive: the base must be NodeBase or derived by derive()");
        return NULL;
    }
    /* CPython 3.11 keeps spec->name as tp_name: it must live as long as the type. These
     * types are made once, at import, a handful of them: the copy is never freed. */
    size_t len = strlen(name) + 1;
    char *kept = PyMem_RawMalloc(len);
    if (kept == NULL)
        return PyErr_NoMemory();
    memcpy(kept, name, len);
    PyType_Slot slots[] = {{0, NULL}};
    PyType_Spec spec = {
        .name = kept,
        .basicsize = (int)sizeof(NodeBase),
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
        .slots = slots,
    };
    PyObject *type = PyType_FromSpecWithBases(&spec, base);
    if (type == NULL)
        PyMem_RawFree(kept);
    return type;
}

static PyMethodDef nodebase_functions[] = {
    {"derive", derive, METH_VARARGS,
     PyDoc_STR("derive(qualified_name, base): a field-less subclass without GC.")},
    {NULL},
};

static struct PyModuleDef nodebase_module = {
    PyModuleDef_HEAD_INIT,
    .m_methods = nodebase_functions,
    .m_name = "pyxenstored.store._nodebase",
    .m_doc = "The compiled storage of a tree node (see store/nodebase.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__nodebase(void)
{
    if (PyType_Ready(&NodeBaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&nodebase_module);
    if (m == NULL)
        return NULL;
    empty_children = PyTuple_New(0);
    if (empty_children == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&NodeBaseType);
    if (PyModule_AddObject(m, "NodeBase", (PyObject *)&NodeBaseType) < 0) {
        Py_DECREF(&NodeBaseType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
