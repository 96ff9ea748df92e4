/* Compiled fast path of tarstream.TarReader: one member's headers, parsed in C.
 *
 * parse_member(data, position) -> tuple | None
 *     Parses the member whose headers start at data[position:]: an optional pax
 *     header (records "path", "linkpath" and "mtime"; keys the reader ignores are
 *     skipped, "size" and GNU sparse keys are left to the reference) and the
 *     ustar header after it, each with its checksum verified and its numbers in
 *     plain octal digits. Returns
 *         (end, header_bytes, name, kind, mode, size, mtime_ns, linkname)
 *     where `end` is the position of the member's body and `header_bytes` the
 *     bytes of headers read, exactly as the pure-Python reader would have made
 *     them; or None for anything else: the end of the archive, headers that run
 *     past `data`, any other spelling, any error. The caller then parses the
 *     same bytes in Python, which is the reference: it accepts what it may and
 *     names what is wrong. This code only ever says "the usual case, and here it
 *     is" or "not for me", so it cannot make the reader accept more than the
 *     reference does (tests/unit/test_fuzz_decoders.py checks that they agree on
 *     random and mutated archives).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define BLOCK 512
/* A pax body larger than this goes to the reference (ours hold at most two
 * 4096-byte names and a time). */
#define MAX_FAST_PAX 16384
#define NS_PER_SECOND 1000000000ULL
/* The largest time it returns (64-bit nanoseconds, past 2262 goes to the reference). */
#define MAX_FAST_NS 9223372036854775807ULL

typedef struct {
    const char *start;
    Py_ssize_t length;
    int present;
} Field;

typedef struct {
    Field path;
    Field linkpath;
    int has_mtime;
    long long mtime_ns;
} Overrides;

/* Octal digits only, exactly `n` of them (the field up to its NUL). */
static int octal(const unsigned char *s, int n, unsigned long long *value) {
    unsigned long long v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '7') {
            return 0;
        }
        v = (v << 3) | (unsigned long long)(s[i] - '0');
    }
    *value = v;
    return 1;
}

/* The header's mode, size and mtime, its checksum verified; 0 when the header
 * is not in the usual form (numbers as octal digits closed by a NUL) or the
 * checksum does not match. */
static int usual_numbers(const unsigned char *b, unsigned long long *mode,
                         unsigned long long *size, unsigned long long *mtime) {
    unsigned long long checksum;
    if (b[107] || b[135] || b[147] || b[154]) {
        return 0;
    }
    if (!octal(b + 100, 7, mode) || !octal(b + 124, 11, size) || !octal(b + 136, 11, mtime)
        || !octal(b + 148, 6, &checksum)) {
        return 0;
    }
    unsigned long long sum = 8 * ' ';
    for (int i = 0; i < 148; i++) {
        sum += b[i];
    }
    for (int i = 156; i < BLOCK; i++) {
        sum += b[i];
    }
    return sum == checksum;
}

static int is_zero(const unsigned char *b) {
    for (int i = 0; i < BLOCK; i++) {
        if (b[i]) {
            return 0;
        }
    }
    return 1;
}

/* A pax time ("-?[0-9]+(\.[0-9]*)?") as nanoseconds; 0 when it is not one or
 * does not fit (the reference then refuses it or reads it). */
static int pax_time(const unsigned char *s, Py_ssize_t n, long long *ns) {
    Py_ssize_t i = 0;
    int negative = 0;
    unsigned long long seconds = 0, fraction = 0;
    if (i < n && s[i] == '-') {
        negative = 1;
        i++;
    }
    Py_ssize_t digits_start = i;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (seconds > (MAX_FAST_NS / NS_PER_SECOND)) {
            return 0;
        }
        seconds = seconds * 10 + (unsigned long long)(s[i] - '0');
    }
    if (i == digits_start) {
        return 0;
    }
    int places = 0;
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (places < 9) {  /* digits past the ninth are dropped */
                fraction = fraction * 10 + (unsigned long long)(s[i] - '0');
                places++;
            }
        }
    }
    if (i != n) {
        return 0;
    }
    for (; places < 9; places++) {
        fraction *= 10;
    }
    if (seconds > (MAX_FAST_NS - fraction) / NS_PER_SECOND) {
        return 0;
    }
    unsigned long long total = seconds * NS_PER_SECOND + fraction;
    *ns = negative ? -(long long)total : (long long)total;
    return 1;
}

static int key_is(const unsigned char *key, Py_ssize_t n, const char *name) {
    return (size_t)n == strlen(name) && memcmp(key, name, (size_t)n) == 0;
}

/* The records of a pax body (exactly `size` bytes); 0 for anything the
 * reference should see: a malformed record, a key this path does not carry
 * (size, the GNU sparse keys), a bad time. */
static int pax_records(const unsigned char *data, Py_ssize_t size, Overrides *out) {
    Py_ssize_t position = 0;
    while (position < size) {
        Py_ssize_t space = position;
        unsigned long long length = 0;
        while (space < size && data[space] >= '0' && data[space] <= '9') {
            length = length * 10 + (unsigned long long)(data[space] - '0');
            if (length > (unsigned long long)size) {
                return 0;
            }
            space++;
        }
        if (space == position || space >= size || data[space] != ' ' || length == 0
            || (Py_ssize_t)length > size - position || space + 1 >= position + (Py_ssize_t)length) {
            return 0;
        }
        const unsigned char *record = data + space + 1;
        Py_ssize_t record_length = position + (Py_ssize_t)length - (space + 1);
        if (record[record_length - 1] != '\n') {
            return 0;
        }
        const unsigned char *equals = memchr(record, '=', (size_t)(record_length - 1));
        if (equals == NULL) {
            return 0;
        }
        Py_ssize_t key_length = equals - record;
        const unsigned char *value = equals + 1;
        Py_ssize_t value_length = record + record_length - 1 - value;
        if (key_is(record, key_length, "path")) {
            out->path = (Field){(const char *)value, value_length, 1};
        } else if (key_is(record, key_length, "linkpath")) {
            out->linkpath = (Field){(const char *)value, value_length, 1};
        } else if (key_is(record, key_length, "mtime")) {
            if (!pax_time(value, value_length, &out->mtime_ns)) {
                return 0;
            }
            out->has_mtime = 1;
        } else if (key_is(record, key_length, "size")
                   || (key_length >= 10 && memcmp(record, "GNU.sparse", 10) == 0)) {
            return 0;
        }
        position += (Py_ssize_t)length;
    }
    return 1;
}

/* The NUL-terminated text of b[start:end], decoded as the reference does. */
static PyObject *text(const unsigned char *b, int start, int end) {
    const unsigned char *nul = memchr(b + start, 0, (size_t)(end - start));
    Py_ssize_t n = nul ? nul - (b + start) : end - start;
    return PyUnicode_DecodeUTF8((const char *)b + start, n, "surrogateescape");
}

static PyObject *name_of(const unsigned char *b, const Overrides *o) {
    if (o->path.present) {
        return PyUnicode_DecodeUTF8(o->path.start, o->path.length, "surrogateescape");
    }
    PyObject *name = text(b, 0, 100);
    if (name == NULL || !(memcmp(b + 257, "ustar", 5) == 0 && b[345])) {
        return name;
    }
    PyObject *prefix = text(b, 345, 500);  /* the ustar prefix field */
    PyObject *joined = prefix ? PyUnicode_FromFormat("%U/%U", prefix, name) : NULL;
    Py_XDECREF(prefix);
    Py_DECREF(name);
    return joined;
}

static PyObject *linkname_of(const unsigned char *b, const Overrides *o) {
    if (o->linkpath.present) {
        return PyUnicode_DecodeUTF8(o->linkpath.start, o->linkpath.length, "surrogateescape");
    }
    if (!b[157]) {
        return PyUnicode_FromStringAndSize("", 0);
    }
    return text(b, 157, 257);
}

static PyObject *member(const unsigned char *b, Py_ssize_t end, Py_ssize_t header_bytes,
                        const Overrides *o) {
    unsigned long long mode, size, mtime;
    if (!usual_numbers(b, &mode, &size, &mtime)) {
        Py_RETURN_NONE;
    }
    long long mtime_ns = o->has_mtime ? o->mtime_ns : (long long)(mtime * NS_PER_SECOND);
    PyObject *name = name_of(b, o);
    PyObject *linkname = name ? linkname_of(b, o) : NULL;
    if (linkname == NULL) {
        Py_XDECREF(name);
        return NULL;
    }
    return Py_BuildValue("nnNy#KKLN", end, header_bytes, name, (const char *)b + 156,
                         (Py_ssize_t)1, mode, size, mtime_ns, linkname);
}

static int is_meta(unsigned char kind) {
    return kind == 'x' || kind == 'g' || kind == 'L' || kind == 'K';
}

static PyObject *parse_member(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t position;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*n", &view, &position)) {
        return NULL;
    }
    const unsigned char *data = view.buf;
    Py_ssize_t length = view.len;
    Overrides overrides = {{NULL, 0, 0}, {NULL, 0, 0}, 0, 0};
    Py_ssize_t start = position;
    if (position < 0 || length - position < BLOCK || is_zero(data + position)) {
        goto not_for_me;
    }
    if (data[position + 156] == 'x') {
        unsigned long long mode, size, mtime;
        if (!usual_numbers(data + position, &mode, &size, &mtime) || size > MAX_FAST_PAX) {
            goto not_for_me;
        }
        Py_ssize_t padded = (Py_ssize_t)((size + BLOCK - 1) / BLOCK * BLOCK);
        if (length - position < BLOCK + padded + BLOCK
            || !pax_records(data + position + BLOCK, (Py_ssize_t)size, &overrides)) {
            goto not_for_me;
        }
        position += BLOCK + padded;
    }
    const unsigned char *header = data + position;
    if (is_meta(header[156]) || is_zero(header)) {
        goto not_for_me;
    }
    position += BLOCK;
    result = member(header, position, position - start, &overrides);
    PyBuffer_Release(&view);
    return result;

not_for_me:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse_member", parse_member, METH_VARARGS,
     "parse_member(data, position) -> (end, header_bytes, name, kind, mode, size, mtime_ns, "
     "linkname) or None: one member's headers in the usual form, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tarhead", "Compiled fast path of the tar reader's headers.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tarhead(void) {
    return PyModule_Create(&module);
}
