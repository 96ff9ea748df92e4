/* Compiled fast path of tarwriter.TarWriter: one small regular file, opened,
 * read and written as a tar member in C.
 *
 * add_regular(buffer, path, name) -> int
 *     Opens `path` as it is (O_RDONLY | O_NOFOLLOW | O_NONBLOCK, as the agent
 *     itself) and, when it is a regular file in the usual form, appends its
 *     member to the bytearray `buffer`: a pax header when the name is longer
 *     than 100 bytes or the mtime has nanoseconds (records "path", then
 *     "mtime"), the ustar header, the body and its padding. These are byte for
 *     byte what the Python writer (tarwriter.py, the reference) writes for the
 *     same file. Returns
 *         the size of the body (>= 0): the member was added;
 *         NOT_REGULAR: the path is not a regular file that opens as it is
 *             (gone, a symlink, a directory, a FIFO, closed to the agent, a
 *             name too long for one system call): nothing was added;
 *         DECLINED: a regular file outside the usual form (larger than
 *             MAX_FAST_SIZE, sparse, an mtime beyond 64-bit nanoseconds, a
 *             read that failed or came short): nothing was added.
 *     The caller adds the last two the reference's way. So this code never
 *     writes anything the reference would not: it only ever says "the usual
 *     case, and here it is" or "not for me" (tests/unit/agent/test_tarpack.py
 *     checks that both write the same bytes for random trees).
 *
 * Why: returning 20,000 small files, the agent's Python around each file's
 * open, fstat, read, header and close was ~14 us a file, about half of the
 * packing thread's time; the system calls themselves are the other half.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define NAME_FIELD 100
#define MAX_OCTAL 8589934591LL /* 8**11 - 1: the largest value of an 11-digit octal field */
#define NS_PER_SECOND 1000000000LL
/* Larger files go to the reference, which reads them a block at a time into
 * the sink instead of growing the buffer by their size. */
#define MAX_FAST_SIZE (256 * 1024)
/* Seconds whose nanoseconds fit in 64 bits (years 1678-2262); others go to the
 * reference, whose integers have no bound. */
#define MAX_FAST_SECONDS 9223372035LL
/* A pax body of "path" (a name of at most PATH_MAX bytes) and "mtime". */
#define MAX_RECORDS 4400

#define NOT_REGULAR (-1)
#define DECLINED (-2)
#define RAISED (-3) /* internal: an exception is set */

static const char USTAR_MAGIC[8] = {'u', 's', 't', 'a', 'r', '\0', '0', '0'};

/* `width` octal digits of value, zero-padded, then a NUL: what snprintf's
 * "%0*llo" writes, whose formatting machinery was ~6 % of packing small files. */
static void octal(unsigned char *out, int width, unsigned long long value) {
    out[width] = '\0';
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (unsigned char)('0' + (value & 7));
        value >>= 3;
    }
}

/* One ustar header, as tarwriter._ustar makes it: ids zeroed, no owner names.
 * Every number fits its field: a mode of 12 bits, a checksum of at most
 * 512 * 255, and a size and mtime the caller keeps within MAX_OCTAL. */
static void ustar(unsigned char *block, const char *name, size_t name_length,
                  unsigned mode, long long size, long long mtime, char kind) {
    memset(block, 0, BLOCK);
    memcpy(block, name, name_length < NAME_FIELD ? name_length : NAME_FIELD);
    /* The numbers (mode, uid, gid, size, mtime), each ended by a NUL. */
    octal(block + 100, 7, mode);
    octal(block + 108, 7, 0);
    octal(block + 116, 7, 0);
    octal(block + 124, 11, (unsigned long long)size);
    octal(block + 136, 11, (unsigned long long)mtime);
    block[156] = (unsigned char)kind;
    memcpy(block + 257, USTAR_MAGIC, sizeof USTAR_MAGIC);
    memset(block + 148, ' ', 8); /* the checksum counts its own field as spaces */
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++) {
        sum += block[i];
    }
    octal(block + 148, 6, sum); /* then its NUL; the last space stays */
}

/* The decimal digits of value, written at out; returns how many. */
static size_t decimal(char *out, unsigned long long value) {
    char reversed[20];
    size_t count = 0;
    do {
        reversed[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < count; i++) {
        out[i] = reversed[count - 1 - i];
    }
    return count;
}

static size_t decimal_width(unsigned long long value) {
    char scratch[20];
    return decimal(scratch, value);
}

/* "LEN key=value\n", LEN counting the whole record with its own digits, as
 * tarwriter._pax_record makes it; returns its length. */
static size_t pax_record(char *out, const char *key, const char *value, size_t value_length) {
    size_t key_length = strlen(key);
    size_t body = 1 + key_length + 1 + value_length + 1; /* " key=value\n" */
    size_t width = decimal_width(body);
    size_t length = body + width;
    if (decimal_width(length) > width) {
        length += 1; /* adding the digits carried into one more digit */
    }
    size_t at = decimal(out, length);
    out[at++] = ' ';
    memcpy(out + at, key, key_length);
    at += key_length;
    out[at++] = '=';
    memcpy(out + at, value, value_length);
    at += value_length;
    out[at++] = '\n';
    return at;
}

/* Decimal seconds, exact to the nanosecond, as tarwriter._pax_time writes them:
 * "1764300000.123456789", "-1.5", "7". */
static size_t pax_time(char *out, long long ns) {
    size_t length = 0;
    if (ns < 0) {
        out[length++] = '-';
    }
    unsigned long long magnitude = ns < 0 ? 0ULL - (unsigned long long)ns : (unsigned long long)ns;
    unsigned long long nanos = magnitude % NS_PER_SECOND;
    length += decimal(out + length, magnitude / NS_PER_SECOND);
    if (nanos == 0) {
        return length;
    }
    out[length++] = '.';
    for (int i = 8; i >= 0; i--) { /* nine digits, zero-padded, then cut after the last non-zero */
        out[length + (size_t)i] = (char)('0' + nanos % 10);
        nanos /= 10;
    }
    length += 9;
    while (out[length - 1] == '0') {
        length--;
    }
    return length;
}

/* The pax records the member needs (none: 0), as tarwriter._pax orders them. */
static size_t pax_records(char *out, const char *name, size_t name_length,
                          const struct stat *st, int pax_mtime) {
    size_t length = 0;
    if (name_length > NAME_FIELD) {
        length += pax_record(out, "path", name, name_length);
    }
    if (pax_mtime) {
        char value[32];
        long long ns = (long long)st->st_mtim.tv_sec * NS_PER_SECOND + st->st_mtim.tv_nsec;
        length += pax_record(out + length, "mtime", value, pax_time(value, ns));
    }
    return length;
}

/* Reads exactly `size` bytes of fd into `out`; 0 when the file ended sooner or
 * a read failed. */
static int read_whole(int fd, char *out, Py_ssize_t size) {
    Py_ssize_t done = 0;
    while (done < size) {
        ssize_t got = read(fd, out + done, (size_t)(size - done));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return 0;
        }
        done += got;
    }
    return 1;
}

static long long padded(long long size) {
    return (size + BLOCK - 1) / BLOCK * BLOCK;
}

/* The member's pax and ustar headers written at `at`, its body read after them. */
static int write_member(int fd, char *at, const char *name, size_t name_length,
                        const struct stat *st, const char *records, size_t records_length,
                        size_t pax_length) {
    long long seconds = (long long)st->st_mtim.tv_sec;
    if (pax_length) {
        ustar((unsigned char *)at, "././@PaxHeader", 14, 0644, (long long)records_length, 0, 'x');
        memcpy(at + BLOCK, records, records_length);
        memset(at + BLOCK + records_length, 0, pax_length - BLOCK - records_length);
        at += pax_length;
    }
    ustar((unsigned char *)at, name, name_length, st->st_mode & 07777, (long long)st->st_size,
          seconds >= 0 && seconds <= MAX_OCTAL ? seconds : 0, '0');
    at += BLOCK;
    memset(at + st->st_size, 0, (size_t)(padded(st->st_size) - st->st_size));
    int whole;
    Py_BEGIN_ALLOW_THREADS
    whole = read_whole(fd, at, (Py_ssize_t)st->st_size);
    Py_END_ALLOW_THREADS
    return whole;
}

/* A regular file the fast path takes: small, not sparse, a time it can spell. */
static int usual(const struct stat *st) {
    return S_ISREG(st->st_mode) && st->st_size <= MAX_FAST_SIZE
        && (long long)st->st_blocks * 512 >= (long long)st->st_size
        && st->st_mtim.tv_sec >= -MAX_FAST_SECONDS && st->st_mtim.tv_sec <= MAX_FAST_SECONDS;
}

static long add_opened(PyObject *buffer, int fd, const struct stat *st, PyObject *name_bytes) {
    const char *name = PyBytes_AS_STRING(name_bytes);
    size_t name_length = (size_t)PyBytes_GET_SIZE(name_bytes);
    if (name_length > 4096) {
        return DECLINED; /* its "path" record would not fit `records` */
    }
    long long seconds = (long long)st->st_mtim.tv_sec;
    int pax_mtime = st->st_mtim.tv_nsec != 0 || seconds < 0 || seconds > MAX_OCTAL;
    char records[MAX_RECORDS];
    size_t records_length = pax_records(records, name, name_length, st, pax_mtime);
    size_t pax_length = records_length ? BLOCK + (size_t)padded((long long)records_length) : 0;
    Py_ssize_t start = PyByteArray_GET_SIZE(buffer);
    Py_ssize_t added = (Py_ssize_t)pax_length + BLOCK + (Py_ssize_t)padded(st->st_size);
    if (PyByteArray_Resize(buffer, start + added) < 0) {
        return RAISED; /* a view of the buffer exists, or no memory */
    }
    char *at = PyByteArray_AS_STRING(buffer) + start;
    if (!write_member(fd, at, name, name_length, st, records, records_length, pax_length)) {
        return PyByteArray_Resize(buffer, start) < 0 ? RAISED : DECLINED;
    }
    return (long)st->st_size;
}

static PyObject *add_regular(PyObject *self, PyObject *args) {
    PyObject *buffer, *path_bytes, *name_bytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O&O&:add_regular", &PyByteArray_Type, &buffer,
                          PyUnicode_FSConverter, &path_bytes, PyUnicode_FSConverter,
                          &name_bytes)) {
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_bytes);
    int fd;
    struct stat st;
    int opened;
    Py_BEGIN_ALLOW_THREADS
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    opened = fd >= 0 && fstat(fd, &st) == 0;
    Py_END_ALLOW_THREADS
    long result = NOT_REGULAR;
    if (opened && S_ISREG(st.st_mode)) {
        result = usual(&st) ? add_opened(buffer, fd, &st, name_bytes) : DECLINED;
    }
    if (fd >= 0) {
        close(fd);
    }
    Py_DECREF(path_bytes);
    Py_DECREF(name_bytes);
    return result == RAISED ? NULL : PyLong_FromLong(result);
}

static PyMethodDef methods[] = {
    {"add_regular", add_regular, METH_VARARGS,
     "add_regular(buffer, path, name) -> the body's size, NOT_REGULAR or DECLINED"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tarpack",
    "The agent's tar writer for small regular files, compiled (see tarwriter.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tarpack(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "NOT_REGULAR", NOT_REGULAR) < 0
        || PyModule_AddIntConstant(m, "DECLINED", DECLINED) < 0
        || PyModule_AddIntConstant(m, "MAX_FAST_SIZE", MAX_FAST_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
