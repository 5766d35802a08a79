"""cffi builder for ``baseplate._mqueue``: the raw binding of POSIX message queues.

Out-of-line API mode: the C compiler checks every declaration below against
``<mqueue.h>``, and fills in the types and constants marked ``...``, so no
number is hard-coded here.

Besides the raw ``mq_*`` calls, a few small C helpers (``bp_*``) are compiled
in. They exist for speed and for one consistent error convention:

* they return ``-errno`` on failure instead of setting ``errno``, so Python
  needs no second trip through ``ffi.errno``;
* a deadline is ``< 0`` to wait forever, ``0`` not to wait (``ETIMEDOUT``
  at once if the call would block: a plain call on the queue's non-blocking
  twin descriptor, else an already expired deadline), or a
  ``CLOCK_MONOTONIC`` time in nanoseconds (``time.monotonic_ns()``), so a
  retry after ``EINTR`` keeps the original deadline;
* the ``*_many`` helpers loop in C, so one call (and one release of the GIL)
  moves many messages.

Run ``python build_ffi.py`` to compile the module in place for development.
"""

from __future__ import annotations

from cffi import FFI

CDEF = """
typedef int... mqd_t;
typedef unsigned int... mode_t;

struct mq_attr {
    long mq_flags;
    long mq_maxmsg;
    long mq_msgsize;
    long mq_curmsgs;
    ...;
};

struct timespec {
    long tv_sec;
    long tv_nsec;
    ...;
};

#define O_RDONLY ...
#define O_WRONLY ...
#define O_RDWR ...
#define O_CREAT ...
#define O_EXCL ...
#define O_NONBLOCK ...
#define MQ_PRIO_MAX ...
#define NAME_MAX ...
#define RLIMIT_MSGQUEUE ...
#define BP_PACK_SHIFT ...

/* The raw POSIX surface. */
mqd_t mq_open(const char *name, int oflag, ...);
int mq_close(mqd_t mqdes);
int mq_unlink(const char *name);
int mq_getattr(mqd_t mqdes, struct mq_attr *attr);
int mq_send(mqd_t mqdes, const char *msg_ptr, size_t msg_len, unsigned int msg_prio);
ssize_t mq_receive(mqd_t mqdes, char *msg_ptr, size_t msg_len, unsigned int *msg_prio);
int mq_timedsend(mqd_t mqdes, const char *msg_ptr, size_t msg_len,
                 unsigned int msg_prio, const struct timespec *abs_timeout);
ssize_t mq_timedreceive(mqd_t mqdes, char *msg_ptr, size_t msg_len,
                        unsigned int *msg_prio, const struct timespec *abs_timeout);

/* The queue as the helpers see it: one per MessageQueue object. `mqd` is
   the blocking descriptor, for waits; `try_mqd` a non-blocking one of the
   same queue, for attempts that must not wait, or -1. close() sets both to
   -1, so no helper can reach a descriptor number the OS has since handed to
   someone else. */
struct bp_queue {
    int mqd;
    int try_mqd;
    size_t msgsize;
    ...;
};

/* A receive buffer: the queue it serves, then room for one message. The
   helpers are given `data` and find the header in front of it. */
struct bp_buffer {
    struct bp_queue *queue;
    char data[];
};

/* Helpers: -errno on failure; deadlines on CLOCK_MONOTONIC (see SOURCE).
   Two numbers come back packed in one: (priority or errno) << BP_PACK_SHIFT
   | length, offset or count. */
int bp_open(const char *name, int oflag, unsigned int mode, long maxmsg, long msgsize);
int bp_open_twin(int mqd, const char *name, int oflag);
int bp_try_put(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio);
long long bp_try_get(char *data);
int bp_send(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio,
            long long deadline_ns);
long long bp_receive(char *data, long long deadline_ns);
long long bp_send_many(struct bp_queue *queue, const char *data, const size_t *lens,
                       size_t count, unsigned int prio, long long timeout_ns,
                       long long *deadline);
long long bp_receive_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long first_deadline_ns,
                          long long *results);
"""

SOURCE = r"""
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Results pack a priority or errno above a length, offset or count below
   this shift. 30 bits hold any message (the kernel caps them at 16 MiB) and
   any batch, and keep the common result (priority 0) a one-digit CPython
   int, which the interpreter compares without a detour. */
#define BP_PACK_SHIFT 30
#define BP_PACK_MASK ((1LL << BP_PACK_SHIFT) - 1)

/* The epoch: a deadline that has always passed, so the call never sleeps. */
static const struct timespec bp_expired = {0, 0};

static long long bp_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* The mq_timed* calls want an absolute CLOCK_REALTIME deadline; ours are on
   CLOCK_MONOTONIC (time.monotonic_ns() in Python). Converts `left_ns` from
   now, or gives the expired deadline when nothing is left. */
static const struct timespec *bp_realtime_in(long long left_ns, struct timespec *ts)
{
    if (left_ns <= 0)
        return &bp_expired;
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += (time_t)(left_ns / 1000000000LL);
    ts->tv_nsec += (long)(left_ns % 1000000000LL);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
    return ts;
}

static int bp_open(const char *name, int oflag, unsigned int mode, long maxmsg, long msgsize)
{
    struct mq_attr attr = {0};
    mqd_t mqd;
    attr.mq_maxmsg = maxmsg;
    attr.mq_msgsize = msgsize;
    mqd = mq_open(name, oflag, (mode_t)mode, (oflag & O_CREAT) ? &attr : NULL);
    return mqd == (mqd_t)-1 ? -errno : (int)mqd;
}

/* Opens a second, non-blocking descriptor of queue `mqd`, which is called
   `name` and was opened with `oflag`. Attempts that must not wait go through
   it as plain mq_send/mq_receive: the kernel serves those faster than
   mq_timed* with an expired deadline, which must copy and check the
   deadline. Returns -1 (the helpers then use the expired deadline) if it
   cannot be opened, or if it is not the same queue: the name was unlinked,
   and perhaps reused, since `mqd` was opened. */
static int bp_open_twin(int mqd, const char *name, int oflag)
{
    struct stat first, second;
    mqd_t twin = mq_open(name, (oflag & O_ACCMODE) | O_NONBLOCK);
    if (twin == (mqd_t)-1)
        return -1;
    if (fstat(mqd, &first) != 0 || fstat((int)twin, &second) != 0
        || first.st_dev != second.st_dev || first.st_ino != second.st_ino) {
        mq_close(twin);
        return -1;
    }
    return (int)twin;
}

struct bp_queue {
    int mqd;
    int try_mqd;
    size_t msgsize;
};

struct bp_buffer {
    struct bp_queue *queue;
    char data[];
};

#define BP_BUFFER_OF(data) ((struct bp_buffer *)((data) - offsetof(struct bp_buffer, data)))

/* One attempt, which may sleep. Deadlines: < 0 waits forever, 0 does not
   wait (ETIMEDOUT if it would have to), > 0 is a CLOCK_MONOTONIC time in
   nanoseconds. A wait that ends before it (the wall clock jumped) waits
   again, so a timeout never ends early. */
static int bp_send_once(struct bp_queue *queue, const char *msg, size_t len,
                        unsigned int prio, long long deadline_ns)
{
    struct timespec ts;
    long long left;
    int r;
    if (deadline_ns == 0 && queue->try_mqd >= 0) {
        if (mq_send(queue->try_mqd, msg, len, prio) == 0)
            return 0;
        return errno == EAGAIN ? -ETIMEDOUT : -errno;
    }
    if (deadline_ns < 0)
        return mq_send(queue->mqd, msg, len, prio) < 0 ? -errno : 0;
    do {
        left = deadline_ns == 0 ? 0 : deadline_ns - bp_monotonic_ns();
        r = mq_timedsend(queue->mqd, msg, len, prio, bp_realtime_in(left, &ts));
    } while (r < 0 && errno == ETIMEDOUT && left > 0);
    return r < 0 ? -errno : 0;
}

/* The same for receiving into `data`, which has room for msgsize bytes.
   Returns (priority << BP_PACK_SHIFT) | length, or -errno. */
static long long bp_receive_once(struct bp_queue *queue, char *data, long long deadline_ns)
{
    struct timespec ts;
    unsigned int prio = 0;
    long long left;
    ssize_t n;
    if (deadline_ns == 0 && queue->try_mqd >= 0) {
        n = mq_receive(queue->try_mqd, data, queue->msgsize, &prio);
        if (n < 0 && errno == EAGAIN)
            return -ETIMEDOUT;
    } else if (deadline_ns < 0) {
        n = mq_receive(queue->mqd, data, queue->msgsize, &prio);
    } else {
        do {
            left = deadline_ns == 0 ? 0 : deadline_ns - bp_monotonic_ns();
            n = mq_timedreceive(queue->mqd, data, queue->msgsize, &prio,
                                bp_realtime_in(left, &ts));
        } while (n < 0 && errno == ETIMEDOUT && left > 0);
    }
    if (n < 0)
        return -(long long)errno;
    return ((long long)prio << BP_PACK_SHIFT) | (long long)n;
}

/* Before a send or receive sleeps in the kernel, it keeps trying for this
   long: a peer process on another core usually makes room or sends within
   microseconds, and a sleep plus a wake-up costs far more than that
   (through a 10-deep queue, two C processes move about 5x as many messages
   with it). With one CPU the peer cannot run meanwhile, so there is no spin. */
#define BP_SPIN_NS 10000LL

static long long bp_spin_ns(void)
{
    static long long spin = -1;  /* a benign race: every thread computes the same */
    if (spin < 0)
        spin = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? BP_SPIN_NS : 0;
    return spin;
}

/* Send per the deadline: try, keep trying for up to bp_spin_ns(), then sleep. */
static int bp_send(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio,
                   long long deadline_ns)
{
    long long spin_end;
    int r = bp_send_once(queue, msg, len, prio, 0);
    if (r != -ETIMEDOUT || deadline_ns == 0)
        return r;
    spin_end = bp_monotonic_ns() + bp_spin_ns();
    while (r == -ETIMEDOUT && bp_monotonic_ns() < spin_end)
        r = bp_send_once(queue, msg, len, prio, 0);
    return r == -ETIMEDOUT ? bp_send_once(queue, msg, len, prio, deadline_ns) : r;
}

/* Receive per the deadline: try, keep trying for up to bp_spin_ns(), then sleep. */
static long long bp_receive_into(struct bp_queue *queue, char *data, long long deadline_ns)
{
    long long spin_end;
    long long r = bp_receive_once(queue, data, 0);
    if (r != -ETIMEDOUT || deadline_ns == 0)
        return r;
    spin_end = bp_monotonic_ns() + bp_spin_ns();
    while (r == -ETIMEDOUT && bp_monotonic_ns() < spin_end)
        r = bp_receive_once(queue, data, 0);
    return r == -ETIMEDOUT ? bp_receive_once(queue, data, deadline_ns) : r;
}

/* Receive into a bp_buffer's data, per the deadline. */
static long long bp_receive(char *data, long long deadline_ns)
{
    return bp_receive_into(BP_BUFFER_OF(data)->queue, data, deadline_ns);
}

/* The fast path of get(): bp_receive(data, 0), receiving if a message is
   there, else -ETIMEDOUT (and get() goes on to wait). Its own function
   because cffi passes a single argument without building a tuple, and
   because its wrapper keeps the GIL (KEEPS_GIL, below, goes by name). */
static long long bp_try_get(char *data)
{
    return bp_receive_once(BP_BUFFER_OF(data)->queue, data, 0);
}

/* The fast path of put(): send if there is room, else -ETIMEDOUT (as
   bp_send with deadline 0, with one argument fewer for cffi to convert, and
   a wrapper that keeps the GIL: see KEEPS_GIL). */
static int bp_try_put(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio)
{
    return bp_send_once(queue, msg, len, prio, 0);
}

/* Sends `count` messages stored back to back in `data`, in order. With
   timeout_ns > 0 each message may wait that long: the first until *deadline,
   each later one from the moment the one before it went out, and *deadline
   is left as the deadline of the message that was not sent (NULL is fine
   when timeout_ns <= 0). Returns (errno << BP_PACK_SHIFT) | number sent,
   errno being 0 when all were sent; but if a message is longer than the
   queue allows, nothing is sent and it returns (EMSGSIZE << BP_PACK_SHIFT)
   | the index of the first such message (a loop here is cheaper than
   Python's max() over the lengths). */
static long long bp_send_many(struct bp_queue *queue, const char *data, const size_t *lens,
                              size_t count, unsigned int prio, long long timeout_ns,
                              long long *deadline)
{
    size_t i;
    int r = 0;
    for (i = 0; i < count; i++)
        if (lens[i] > queue->msgsize)
            return ((long long)EMSGSIZE << BP_PACK_SHIFT) | (long long)i;
    for (i = 0; i < count; i++) {
        if (i > 0 && timeout_ns > 0)
            *deadline = bp_monotonic_ns() + timeout_ns;
        r = bp_send(queue, data, lens[i], prio, timeout_ns > 0 ? *deadline : timeout_ns);
        if (r != 0)
            break;
        data += lens[i];
    }
    return ((long long)-r << BP_PACK_SHIFT) | (long long)i;
}

/* Receives up to `max_count` messages back to back into `buf`: the first
   waits until `first_deadline_ns`, the rest only if already there. Stops
   when the buffer could not hold another message of the queue's msgsize.
   results[i] is (priority << BP_PACK_SHIFT) | the offset where message i
   ends. Returns (errno << BP_PACK_SHIFT) | count, errno being what ended the
   loop before max_count
   (ETIMEDOUT once the queue is drained) or 0. */
static long long bp_receive_many(struct bp_queue *queue, char *buf, size_t capacity,
                                 size_t max_count, long long first_deadline_ns,
                                 long long *results)
{
    size_t i, offset = 0;
    long long r = 0, deadline_ns = first_deadline_ns;
    for (i = 0; i < max_count && capacity - offset >= queue->msgsize; i++) {
        r = bp_receive_into(queue, buf + offset, deadline_ns);
        if (r < 0)
            break;
        offset += (size_t)(r & BP_PACK_MASK);
        results[i] = (r & ~BP_PACK_MASK) | (long long)offset;
        deadline_ns = 0;
        r = 0;
    }
    return ((long long)-r << BP_PACK_SHIFT) | (long long)i;
}
"""

# The helpers that never block. cffi releases the GIL around every call; for
# these, releasing and retaking it was a third of the call's cost on CPython
# (about 430 of 1,300 instructions, by callgrind), plus atomic operations on
# a lock that other threads contend for. Holding it is safe: they return at once,
# copying at most one message, which is shorter than the copy Python makes of
# every received message anyway. Every other call still releases the GIL.
KEEPS_GIL = ("bp_try_put", "bp_try_get")

# How: cffi's CPython wrapper for function F is `_cffi_f_F`, which brackets
# the call with Py_BEGIN/END_ALLOW_THREADS. Redefined here, after Python.h
# and before the wrappers, those macros skip the release when the enclosing
# function (__func__, compared at compile time) is one of KEEPS_GIL. Should a
# cffi version name or bracket its wrappers otherwise, nothing matches and
# every call releases the GIL as before: slower, never wrong. PyPy compiles
# no such wrappers.
KEEP_GIL_SOURCE = r"""
#ifndef PYPY_VERSION
#define BP_KEEPS_GIL(function) (BP_KEEPS_GIL_TEST)
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS \
    { PyThreadState *_save = BP_KEEPS_GIL(__func__) ? NULL : PyEval_SaveThread();
#define Py_END_ALLOW_THREADS \
    if (_save != NULL) PyEval_RestoreThread(_save); }
#endif
""".replace(
    "BP_KEEPS_GIL_TEST",
    " || ".join(f'__builtin_strcmp(function, "_cffi_f_{name}") == 0' for name in KEEPS_GIL),
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("baseplate._mqueue", SOURCE + KEEP_GIL_SOURCE, libraries=["rt"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
