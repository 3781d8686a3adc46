/* Optional accelerator for collector.ami.framing: AMI message blocks (bytes) -> dicts.
 *
 * Why C: on an `Events: call,system` stream nearly every message is a ~20-line channel snapshot, and
 * building its 40 strings and a dict in Python costs ~4.5 us, more than everything else the collector
 * does with it. This module does only the common, exact case; every block it cannot decode *exactly* as
 * the pure-Python framer would (a line without ": ", a repeated header, invalid UTF-8, no Event/Response,
 * a banner, an oversized block) goes back to the Python `slow` callable, so there is one definition of
 * the edge cases and it lives in ami_framing.py.
 *
 * Decoder(skip_prefixes: tuple[bytes, ...], keep: frozenset[str] | None, max_bytes: int)
 *   .feed(buf: bytes, out: list, slow) -> (consumed, messages, skipped)   (buf as read: CRLF, partial tail)
 * `keep`, when given, is the set of header names to keep in events (a projection: the others are never
 * decoded); replies (blocks starting "Response:") always keep every header.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define KEY_CACHE_SIZE 1024 /* power of two */
#define KEY_MAX 64

typedef struct {
    PyObject *key;   /* interned str, or NULL */
    Py_ssize_t len;
    int kept;        /* 1 when `keep` is None or holds the key */
} KeySlot;

typedef struct {
    PyObject_HEAD
    PyObject *skip;  /* tuple of bytes */
    PyObject *keep;  /* frozenset of str, or NULL */
    Py_ssize_t max_bytes;
    KeySlot cache[KEY_CACHE_SIZE];
} Decoder;

static const char BANNER[] = "Asterisk Call Manager/";
#define BANNER_LEN (sizeof(BANNER) - 1)
static const char RESPONSE[] = "Response:";
#define RESPONSE_LEN (sizeof(RESPONSE) - 1)

static PyObject *str_event, *str_response;

static void Decoder_clear_cache(Decoder *self) {
    for (int i = 0; i < KEY_CACHE_SIZE; i++) {
        Py_CLEAR(self->cache[i].key);
    }
}

static void Decoder_dealloc(Decoder *self) {
    Decoder_clear_cache(self);
    Py_XDECREF(self->skip);
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Decoder_init(Decoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"skip_prefixes", "keep", "max_bytes", NULL};
    PyObject *skip, *keep;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!On", kwlist, &PyTuple_Type, &skip, &keep, &max_bytes))
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(skip); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(skip, i))) {
            PyErr_SetString(PyExc_TypeError, "skip_prefixes must be a tuple of bytes");
            return -1;
        }
    }
    if (keep != Py_None && !PyFrozenSet_Check(keep)) {
        PyErr_SetString(PyExc_TypeError, "keep must be a frozenset or None");
        return -1;
    }
    Decoder_clear_cache(self);
    Py_INCREF(skip);
    Py_XSETREF(self->skip, skip);
    if (keep == Py_None) {
        Py_CLEAR(self->keep);
    } else {
        Py_INCREF(keep);
        Py_XSETREF(self->keep, keep);
    }
    self->max_bytes = max_bytes;
    return 0;
}

/* The header name as an interned str (cached by its bytes); *kept says whether to keep its value.
 * Returns a borrowed reference (owned by the cache) or a new one in *owned; NULL on error. */
static PyObject *lookup_key(Decoder *self, const char *p, Py_ssize_t len, int *kept, PyObject **owned) {
    *owned = NULL;
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    }
    KeySlot *slot = &self->cache[h & (KEY_CACHE_SIZE - 1)];
    if (slot->key != NULL && slot->len == len && memcmp(PyUnicode_DATA(slot->key), p, len) == 0) {
        *kept = slot->kept;
        return slot->key;
    }
    PyObject *key = PyUnicode_DecodeUTF8(p, len, NULL);
    if (key == NULL)
        return NULL;
    int k = 1;
    if (self->keep != NULL) {
        k = PySet_Contains(self->keep, key);
        if (k < 0) {
            Py_DECREF(key);
            return NULL;
        }
    }
    *kept = k;
    if (len <= KEY_MAX && PyUnicode_IS_COMPACT_ASCII(key)) {
        PyUnicode_InternInPlace(&key);
        Py_XSETREF(slot->key, key);  /* the cache owns it */
        slot->len = len;
        slot->kept = k;
        return key;
    }
    *owned = key;
    return key;
}

/* Decode one block exactly like ami_framing's fast path. Returns a new dict, or NULL with no error set
 * when the block must take the Python path, or NULL with an error set. */
static PyObject *decode_block(Decoder *self, const char *p, Py_ssize_t n) {
    /* replies (to Login, Ping …) go to panoramisk, which may read any header: never projected */
    int project = self->keep != NULL && !(n >= (Py_ssize_t)RESPONSE_LEN && memcmp(p, RESPONSE, RESPONSE_LEN) == 0);
    PyObject *msg = PyDict_New();
    if (msg == NULL)
        return NULL;
    const char *end = p + n;
    while (p < end) {
        const char *next = memchr(p, '\n', end - p);
        if (next == NULL)
            next = end;
        /* the Python path removes every CR: a trailing one (CRLF) is trimmed here; one anywhere else in
         * the line takes the Python path */
        const char *eol = next;
        while (eol > p && eol[-1] == '\r')
            eol--;
        if (memchr(p, '\r', eol - p) != NULL)
            goto fallback;
        const char *colon = NULL;  /* the first ": " */
        for (const char *q = p; q + 1 < eol;) {
            const char *c = memchr(q, ':', (size_t)(eol - 1 - q));
            if (c == NULL)
                break;
            if (c[1] == ' ') {
                colon = c;
                break;
            }
            q = c + 1;
        }
        if (colon == NULL)
            goto fallback;  /* a line without ": " (or an empty one) */
        int kept;
        PyObject *owned;
        PyObject *key = lookup_key(self, p, colon - p, &kept, &owned);
        if (key == NULL)
            goto fallback_if_unicode;
        if (kept || !project) {
            PyObject *value = PyUnicode_DecodeUTF8(colon + 2, eol - colon - 2, NULL);
            if (value == NULL) {
                Py_XDECREF(owned);
                goto fallback_if_unicode;
            }
            /* one lookup; a repeated header (the dict does not grow) takes the Python path, where the
             * first value wins */
            Py_ssize_t size = PyDict_GET_SIZE(msg);
            PyObject *stored = PyDict_SetDefault(msg, key, value);
            Py_DECREF(value);
            Py_XDECREF(owned);
            if (stored == NULL)
                goto error;
            if (PyDict_GET_SIZE(msg) == size)
                goto fallback;
        } else {
            Py_XDECREF(owned);
        }
        p = next + 1;
    }
    int has = PyDict_Contains(msg, str_event);
    if (has == 0)
        has = PyDict_Contains(msg, str_response);
    if (has < 0)
        goto error;
    if (has == 0)
        goto fallback;  /* garbage: the Python path counts and logs it */
    return msg;

fallback_if_unicode:
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        goto error;
    PyErr_Clear();
fallback:
    Py_DECREF(msg);
    return NULL;
error:
    Py_DECREF(msg);
    return NULL;
}

/* Does the block (leading CR/LF already skipped) start with one of the skip prefixes? The prefixes are
 * "Event: Name\n"; the block may still hold its CRs, so "Event: Name" then CRs then LF matches too. */
static int skipped_by_prefix(Decoder *self, const char *p, Py_ssize_t n) {
    Py_ssize_t nskip = PyTuple_GET_SIZE(self->skip);
    for (Py_ssize_t j = 0; j < nskip; j++) {
        PyObject *prefix = PyTuple_GET_ITEM(self->skip, j);
        Py_ssize_t plen = PyBytes_GET_SIZE(prefix) - 1;  /* without its "\n" */
        if (plen < 0 || n <= plen || memcmp(p, PyBytes_AS_STRING(prefix), plen) != 0)
            continue;
        Py_ssize_t k = plen;
        while (k < n && p[k] == '\r')
            k++;
        if (k < n && p[k] == '\n')
            return 1;
    }
    return 0;
}

/* One block [p, p+n), which may start with blank lines and hold CRs. Appends its message to `out`, or
 * hands the original bytes to `slow`. Returns 1 for a message decoded here, 2 for skipped, 0 for
 * nothing/slow, -1 on error. */
static int handle_block(Decoder *self, const char *p, Py_ssize_t n, PyObject *out, PyObject *slow) {
    const char *start = p;
    Py_ssize_t total = n;
    while (n > 0 && (*p == '\n' || *p == '\r')) {
        p++;
        n--;
    }
    if (n == 0)
        return 0;
    if (skipped_by_prefix(self, p, n))
        return 2;
    PyObject *msg = NULL;
    if (n <= self->max_bytes && !(n >= (Py_ssize_t)BANNER_LEN && memcmp(p, BANNER, BANNER_LEN) == 0)) {
        msg = decode_block(self, p, n);
        if (msg == NULL && PyErr_Occurred())
            return -1;
    }
    if (msg == NULL) {
        /* the slow path appends and counts its own messages (a banner may yield two, garbage none) */
        PyObject *part = PyBytes_FromStringAndSize(start, total);
        if (part == NULL)
            return -1;
        PyObject *r = PyObject_CallFunctionObjArgs(slow, part, out, NULL);
        Py_DECREF(part);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    int rc = PyList_Append(out, msg);
    Py_DECREF(msg);
    return rc < 0 ? -1 : 1;
}

static int check_ready(Decoder *self) {
    if (self->skip == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder.__init__ was not called");
        return -1;
    }
    return 0;
}

/* A TCP stream buffer (CRLF framing, as read): every complete block is handled, in order, without first
 * copying the buffer to drop its CRs and split it. A block ends at LF, any CRs, LF: where the Python
 * framer, which removes every CR first, sees a blank line. Returns (consumed, messages, skipped). */
static PyObject *Decoder_feed(Decoder *self, PyObject *args) {
    PyObject *buf, *out, *slow;
    if (check_ready(self) < 0 ||
        !PyArg_ParseTuple(args, "O!O!O", &PyBytes_Type, &buf, &PyList_Type, &out, &slow))
        return NULL;
    const char *base = PyBytes_AS_STRING(buf);
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    Py_ssize_t pos = 0, scan = 0, messages = 0, skipped = 0;
    while (scan < size) {
        const char *lf = memchr(base + scan, '\n', size - scan);
        if (lf == NULL)
            break;
        Py_ssize_t k = lf - base + 1;
        while (k < size && base[k] == '\r')
            k++;
        if (k >= size)
            break;  /* LF (and CRs) at the very end: the next read says whether it was a blank line */
        if (base[k] != '\n') {
            scan = k;
            continue;
        }
        int rc = handle_block(self, base + pos, (lf - base) - pos, out, slow);
        if (rc < 0)
            return NULL;
        messages += rc == 1;
        skipped += rc == 2;
        pos = scan = k + 1;
    }
    return Py_BuildValue("(nnn)", pos, messages, skipped);
}

static PyMethodDef Decoder_methods[] = {
    {"feed", (PyCFunction)Decoder_feed, METH_VARARGS,
     "feed(buf, out, slow) -> (consumed, messages, skipped): the complete blocks of a stream buffer."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "collector.ami._fast.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AMI blocks -> dicts, the exact common case; everything else goes to `slow`.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "collector.ami._fast", "Optional C accelerator for collector.ami.framing.", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&DecoderType) < 0)
        return NULL;
    str_event = PyUnicode_InternFromString("Event");
    str_response = PyUnicode_InternFromString("Response");
    if (str_event == NULL || str_response == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
