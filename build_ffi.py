"""cffi builder for ``baseplate._mqueue``: the raw binding of POSIX message queues.

Out-of-line API mode: the C compiler checks every declaration below against
``<mqueue.h>``, and fills in the types and constants marked ``...``, so no
number is hard-coded here.

Besides the raw ``mq_*`` calls, it declares the small C helpers (``bp_*``)
of ``mqueue_helpers.c``, the C source beside this file, which is compiled
into the module (with ``-Wall -Wextra``). They exist for speed, for one
consistent error convention (``-errno``), and to make waiting and closing
safe; that file says how.

Run ``python build_ffi.py`` to compile the module in place for development.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HELPERS = Path(__file__).resolve().parent / "mqueue_helpers.c"

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
#define NSIG ...
#define BP_PACK_SHIFT ...
#define BP_FOREVER ...
#define BP_NOW ...

/* The raw POSIX surface. */
mqd_t mq_open(const char *name, int oflag, ...);
int mq_close(mqd_t mqdes);
int mq_unlink(const char *name);
int mq_getattr(mqd_t mqdes, struct mq_attr *attr);
int mq_setattr(mqd_t mqdes, const struct mq_attr *newattr, struct mq_attr *oldattr);
int mq_send(mqd_t mqdes, const char *msg_ptr, size_t msg_len, unsigned int msg_prio);
ssize_t mq_receive(mqd_t mqdes, char *msg_ptr, size_t msg_len, unsigned int *msg_prio);
int mq_timedsend(mqd_t mqdes, const char *msg_ptr, size_t msg_len,
                 unsigned int msg_prio, const struct timespec *abs_timeout);
ssize_t mq_timedreceive(mqd_t mqdes, char *msg_ptr, size_t msg_len,
                        unsigned int *msg_prio, const struct timespec *abs_timeout);

/* The queue as the helpers see it: one per MessageQueue object (the rest of
   its fields, atomics, are the helpers' own). */
struct bp_queue {
    int mqd;
    size_t msgsize;
    ...;
};

/* A receive buffer: the queue it serves, then room for one message. */
struct bp_buffer {
    struct bp_queue *queue;
    char data[];
};

/* The helpers (mqueue_helpers.c says what each does). */
int bp_open(struct bp_queue *queue, const char *name, int oflag, unsigned int mode,
            long maxmsg, long msgsize);
int bp_hold(struct bp_queue *queue);
void bp_unhold(struct bp_queue *queue);
int bp_is_closed(struct bp_queue *queue);
void bp_close(struct bp_queue *queue);
void bp_after_fork(struct bp_queue *queue);
int bp_wake_fd(struct bp_queue *queue);
int bp_getattr(struct bp_queue *queue, struct mq_attr *attr);
int bp_notify(struct bp_queue *queue, int signo, int token);
int bp_fstat(struct bp_queue *queue, unsigned int *mode, unsigned int *uid, unsigned int *gid);
int bp_try_put(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio);
long long bp_try_get(char *data);
long long bp_try_get_into(struct bp_queue *queue, char *data);
int bp_send(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio,
            long long deadline_ns);
long long bp_receive(struct bp_queue *queue, char *data, long long deadline_ns);
long long bp_try_put_many(struct bp_queue *queue, const char *data, const size_t *lens,
                          size_t count, unsigned int prio);
long long bp_send_many(struct bp_queue *queue, const char *data, const size_t *lens,
                       size_t count, unsigned int prio, long long timeout_ns,
                       long long *deadline, int may_wait);
long long bp_try_get_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long *results);
long long bp_receive_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long deadline_ns, long long *results);

/* Run by a notification (bp_notify with a token), in a thread glibc starts. */
extern "Python" void bp_notified(int token);
"""

# The helpers that never block: every call's first attempt. cffi releases
# the GIL around every call; for these, releasing and retaking it was a third
# of the call's cost on CPython (about 430 of 1,300 instructions, by
# callgrind), plus atomic operations on a lock that other threads contend
# for. Holding it is safe: they return at once, after one system call per
# message and at most 64 messages or 64 KiB. Every other call, all those that
# may sleep among them, still releases the GIL.
KEEPS_GIL = ("bp_try_put", "bp_try_get", "bp_try_get_into", "bp_try_put_many", "bp_try_get_many")

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

# Extra flags for `nox -s sanitize` (sanitizers, -Werror), from the environment.
EXTRA_CFLAGS = os.environ.get("BASEPLATE_MQ_CFLAGS", "").split()


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
# The module's own C, after cffi's prologue (which includes Python.h): the
# helpers, included so that diagnostics name their file and line, then the
# GIL redefinitions.
ffibuilder.set_source(
    "baseplate._mqueue",
    f'#include "{HELPERS.name}"\n{KEEP_GIL_SOURCE}',
    include_dirs=[str(HELPERS.parent)],
    libraries=["rt"],
    depends=[str(HELPERS)],
    extra_compile_args=["-Wall", "-Wextra", *EXTRA_CFLAGS],
    extra_link_args=EXTRA_CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
