from cpython.object cimport PyObject

cdef extern from "Python.h":
    int PyContext_Enter(PyObject *) except -1
    int PyContext_Exit(PyObject *) except -1
    object PyContext_CopyCurrent()
    int PyErr_CheckSignals() except -1
    unsigned long PyThread_get_thread_ident()
    int PyObject_GetBuffer(object obj, Py_buffer *view, int flags) except -1
    void PyBuffer_Release(Py_buffer *view)
    int PyBUF_SIMPLE
    int PyBUF_WRITABLE
    int PyBUF_C_CONTIGUOUS
    int PyBUF_ANY_CONTIGUOUS
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t newsize) except -1
    # Without a reference count round trip (buffer ring lookups).
    char *PyBytes_AS_STRING_PTR "PyBytes_AS_STRING" (PyObject *bytes)

    # The item array of a list: the timer heap moves its entries in place.
    ctypedef struct PyListObject:
        PyObject **ob_item
