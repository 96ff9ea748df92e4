/* Compiled S2 block decoder: the same algorithm as _block_py.py, for speed.
 *
 * decode(src, limit) -> bytes
 *     Decodes one S2 block (Snappy's tags plus S2's repeat offsets). Raises
 *     ValueError(message, position) on corrupt input, where position is the
 *     byte of the block where decoding stopped. The block may decode to at most
 *     `limit` bytes; a larger declared length fails before anything is
 *     allocated. The GIL is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum {
    OK = 0,
    ERR_VARINT,
    ERR_VARINT_RANGE,
    ERR_TOO_LARGE,
    ERR_LITERAL_HEADER,
    ERR_LITERAL_SRC,
    ERR_LITERAL_DST,
    ERR_TAG,
    ERR_REPEAT_HEADER,
    ERR_OFFSET,
    ERR_COPY_DST,
    ERR_SHORT,
};

static const char *const messages[] = {
    "",
    "truncated or overlong decoded-length header",
    "decoded length does not fit in 32 bits",
    "block claims more bytes than the limit",
    "truncated literal length",
    "literal runs past the end of the block",
    "literal runs past the declared block length",
    "truncated copy tag",
    "truncated repeat length",
    "copy offset points before the start of the block",
    "copy runs past the declared block length",
    "block decodes to fewer bytes than it declares",
};

/* Reads the uvarint decoded length; returns its size in bytes or -error. */
static int read_decoded_len(const uint8_t *src, size_t n, uint64_t *value) {
    uint64_t v = 0;
    for (size_t i = 0; i < 5 && i < n; i++) {
        v |= (uint64_t)(src[i] & 0x7f) << (7 * i);
        if (src[i] < 0x80) {
            if (v > 0xffffffffu) {
                return -ERR_VARINT_RANGE;
            }
            *value = v;
            return (int)i + 1;
        }
    }
    return -ERR_VARINT;
}

static uint32_t load_le(const uint8_t *p, size_t nbytes) {
    uint32_t v = 0;
    for (size_t i = 0; i < nbytes; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

/* Forward copy of `length` bytes from `offset` back, where the ranges may
 * overlap: each memcpy doubles the stretch that is already a whole number of
 * periods, so long runs (offset 1) take log2(length) calls, not length. */
static void copy_overlapping(uint8_t *op, size_t offset, size_t length) {
    const uint8_t *ip = op - offset;
    while (length > 0) {
        size_t step = (size_t)(op - ip);
        if (step > length) {
            step = length;
        }
        memcpy(op, ip, step);
        op += step;
        length -= step;
    }
}

/* Decodes the tags of src[s:] into dst[0:n]; returns OK or an error code and
 * sets *where to the block position of the offending tag. */
static int decode_tags(uint8_t *dst, size_t n, const uint8_t *src, size_t end, size_t s,
                       size_t *where) {
    size_t d = 0;
    size_t offset = 0; /* S2: copy with offset 0 repeats the previous offset */
    while (s < end) {
        size_t at = s;
        uint8_t tag = src[s];
        size_t length;
        *where = at;
        if ((tag & 3) == 0) {
            length = (size_t)(tag >> 2) + 1;
            s += 1;
            if (length > 60) {
                size_t extra = length - 60;
                if (end - s < extra) {
                    return ERR_LITERAL_HEADER;
                }
                length = (size_t)load_le(src + s, extra) + 1;
                s += extra;
            }
            if (end - s < length) {
                return ERR_LITERAL_SRC;
            }
            if (n - d < length) {
                return ERR_LITERAL_DST;
            }
            if (length <= 16 && end - s >= 16 && n - d >= 16) {
                memcpy(dst + d, src + s, 16); /* fixed size: two vector moves */
            } else {
                memcpy(dst + d, src + s, length);
            }
            s += length;
            d += length;
            continue;
        }
        if ((tag & 3) == 1) {
            if (end - s < 2) {
                return ERR_TAG;
            }
            length = (size_t)((tag >> 2) & 7) + 4;
            size_t copy_offset = ((size_t)(tag & 0xe0) << 3) | src[s + 1];
            s += 2;
            if (copy_offset != 0) {
                offset = copy_offset;
            } else if (length > 8) {
                size_t extra = length - 8; /* codes 5, 6, 7 carry 1, 2, 3 bytes */
                static const size_t base[4] = {0, 8, 260, 65540};
                if (end - s < extra) {
                    return ERR_REPEAT_HEADER;
                }
                length = (size_t)load_le(src + s, extra) + base[extra];
                s += extra;
            }
        } else if ((tag & 3) == 2) {
            if (end - s < 3) {
                return ERR_TAG;
            }
            length = (size_t)(tag >> 2) + 1;
            offset = load_le(src + s + 1, 2);
            s += 3;
        } else {
            if (end - s < 5) {
                return ERR_TAG;
            }
            length = (size_t)(tag >> 2) + 1;
            offset = load_le(src + s + 1, 4);
            s += 5;
        }
        if (offset == 0 || offset > d) {
            return ERR_OFFSET;
        }
        if (n - d < length) {
            return ERR_COPY_DST;
        }
        if (length <= 16 && offset >= 8 && n - d >= 16) {
            /* Short copies dominate; fixed-size moves skip memcpy's dispatch.
             * Bytes written past `length` are overwritten by later tags. */
            memcpy(dst + d, dst + d - offset, 8);
            memcpy(dst + d + 8, dst + d + 8 - offset, 8);
        } else if (offset >= length) {
            memcpy(dst + d, dst + d - offset, length);
        } else {
            copy_overlapping(dst + d, offset, length);
        }
        d += length;
    }
    *where = end;
    return d == n ? OK : ERR_SHORT;
}

static PyObject *raise_corrupt(int code, size_t where) {
    PyObject *args = Py_BuildValue("(sn)", messages[code], (Py_ssize_t)where);
    if (args != NULL) {
        PyErr_SetObject(PyExc_ValueError, args);
        Py_DECREF(args);
    }
    return NULL;
}

static PyObject *s2block_decode(PyObject *module, PyObject *args) {
    Py_buffer view;
    Py_ssize_t limit;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*n:decode", &view, &limit)) {
        return NULL;
    }
    const uint8_t *src = (const uint8_t *)view.buf;
    size_t end = (size_t)view.len;
    uint64_t n = 0;
    int header = read_decoded_len(src, end, &n);
    if (header < 0) {
        PyBuffer_Release(&view);
        return raise_corrupt(-header, 0);
    }
    if (limit < 0 || n > (uint64_t)limit) {
        PyBuffer_Release(&view);
        return raise_corrupt(ERR_TOO_LARGE, 0);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    size_t where = 0;
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = decode_tags((uint8_t *)PyBytes_AS_STRING(out), (size_t)n, src, end, (size_t)header,
                       &where);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (code != OK) {
        Py_DECREF(out);
        return raise_corrupt(code, where);
    }
    return out;
}

static PyMethodDef s2block_methods[] = {
    {"decode", s2block_decode, METH_VARARGS,
     "decode(src, limit) -> bytes: decode one S2 block of at most limit bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef s2block_module = {
    PyModuleDef_HEAD_INIT, "_s2block", "Compiled S2 block decoder.", -1, s2block_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__s2block(void) {
    return PyModule_Create(&s2block_module);
}
