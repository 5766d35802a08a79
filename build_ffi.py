"""cffi builder for ``baseplate.message_queue._mqueue``: the raw binding of POSIX message queues.

Out-of-line API mode: the C compiler checks every declaration below against
``<mqueue.h>``, and fills in the types and constants marked ``...``, so no
number is hard-coded here.

Besides the raw ``mq_*`` calls, it declares the small C helpers (``bp_*``)
that ``csrc/mqueue_helpers.c`` defines and compiles into the module (with
``-Wall -Wextra``). They are declared once, in ``csrc/mqueue_helpers.h``,
which that file includes and this one reads into the cdef. They exist for
speed, for one consistent error convention (``-errno``), and to make waiting
and closing safe; the C file says how.

Run ``python build_ffi.py`` to compile the module in place, into
``src/baseplate/message_queue/``, for development (then ``PYTHONPATH=src``).
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

C_SOURCES = Path(__file__).resolve().parent / "csrc"
HELPERS = C_SOURCES / "mqueue_helpers.c"
HELPERS_HEADER = C_SOURCES / "mqueue_helpers.h"

# The system's surface, as <mqueue.h> and its neighbours declare it.
SYSTEM_CDEF = """
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

/* The raw POSIX calls. */
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
"""

# Python's side of a notification by thread, which the helpers call.
CALLBACKS_CDEF = """
/* Run by a notification (bp_notify with a token), in a thread glibc starts. */
extern "Python" void bp_notified(int token);
"""

CDEF = SYSTEM_CDEF + HELPERS_HEADER.read_text() + CALLBACKS_CDEF

# The helpers that never block: every call's first attempt. cffi releases
# the GIL around every call; for these, releasing and retaking it was a third
# of the call's cost on CPython (about 430 of 1,300 instructions, by
# callgrind), plus atomic operations on a lock that other threads contend
# for. Holding it is safe: they return at once, after one system call per
# message, for at most 64 messages, and none more once 64 KiB have moved (so
# 64 KiB plus one message, of up to max_message_size, at most). Every other
# call, all those that may sleep among them, still releases the GIL.
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
    "baseplate.message_queue._mqueue",
    f'#include "{HELPERS.name}"\n{KEEP_GIL_SOURCE}',
    include_dirs=[str(C_SOURCES)],
    libraries=["rt", "pthread"],  # both in libc since glibc 2.34, apart before
    depends=[str(HELPERS), str(HELPERS_HEADER)],
    extra_compile_args=["-Wall", "-Wextra", *EXTRA_CFLAGS],
    extra_link_args=EXTRA_CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(Path(__file__).resolve().parent / "src"), verbose=False)
