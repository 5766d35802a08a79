/* The C half of baseplate.message_queue._mqueue: small helpers around the
   POSIX queue calls.

   mqueue_helpers.h declares them (and their structs and constants) once, for
   this file and for build_ffi.py, which compiles this file into the
   extension, after cffi's own prologue, with -Wall -Wextra (and -Werror
   under `nox -s sanitize`).

   Conventions (the header's): failures return -errno, never set errno for
   Python to fetch. Deadlines are CLOCK_MONOTONIC nanoseconds
   (time.monotonic_ns()): BP_FOREVER (< 0) waits as long as it takes, BP_NOW
   (0) never waits, anything else is the moment to give up. A retry after
   EINTR keeps its deadline, and a wall-clock jump changes nothing. Two
   numbers come back packed in one: (priority or errno) << BP_PACK_SHIFT | a
   length, offset or count.

   Every queue descriptor is non-blocking: the helpers never sleep inside
   mq_send or mq_receive. Waiting has one home, bp_wait_for() (below): try,
   keep trying for a few microseconds, then sleep in ppoll() on the queue's
   descriptor and on its wake descriptor, an eventfd that bp_close()
   signals. So closing a queue wakes every thread that waits on it.

   No helper ever passes a closed, or since reused, descriptor number to the
   kernel: each holds a "use" of the queue (bp_enter/bp_leave) while it
   touches the descriptors, bp_close() only marks the queue closed, and the
   last use out releases the descriptors. The fields the header marks atomic
   are only touched through the __atomic builtins, sequentially consistent
   (BP_ATOMIC_*), as C11's atomics would; cffi's cdef cannot parse _Atomic. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ppoll */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "mqueue_helpers.h"

#define BP_PACK_MASK ((1LL << BP_PACK_SHIFT) - 1)

/* The fields mqueue_helpers.h marks atomic, accessed as C11's seq_cst atomics. */
#define BP_ATOMIC_LOAD(field) __atomic_load_n(&(field), __ATOMIC_SEQ_CST)
#define BP_ATOMIC_STORE(field, value) __atomic_store_n(&(field), (value), __ATOMIC_SEQ_CST)
#define BP_ATOMIC_EXCHANGE(field, value) __atomic_exchange_n(&(field), (value), __ATOMIC_SEQ_CST)
#define BP_ATOMIC_ADD(field, value) __atomic_fetch_add(&(field), (value), __ATOMIC_SEQ_CST)
#define BP_ATOMIC_SUB(field, value) __atomic_fetch_sub(&(field), (value), __ATOMIC_SEQ_CST)
/* Compare and swap: replaces `field` by `desired` if it equals *expected, else
   loads it into *expected. `weak` may fail spuriously (for loops). */
#define BP_ATOMIC_CAS(field, expected, desired, weak) \
    __atomic_compare_exchange_n(&(field), (expected), (desired), (weak), __ATOMIC_SEQ_CST, \
                                __ATOMIC_SEQ_CST)

/* The attempts that keep the GIL (see build_ffi.KEEPS_GIL) move at most this
   many messages, and none more once this many bytes have moved (so at most
   BP_HOLD_MAX_BYTES plus one message), then hand the rest to a call that
   releases it. */
#define BP_HOLD_MAX_MESSAGES 64
#define BP_HOLD_MAX_BYTES (64 * 1024)

/* When ppoll() cannot watch a wake descriptor (none could be created: the
   process is out of descriptors), sleeps last at most this long, so that a
   close() is still seen soon. */
#define BP_BLIND_SLEEP_NS 20000000LL

/* The state word: bit 0 says closed; the rest counts the uses in flight. */
#define BP_CLOSED 1UL
#define BP_USE 2UL

#define BP_BUFFER_OF(data) ((struct bp_buffer *)(void *)((data) - offsetof(struct bp_buffer, data)))

static long long bp_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* ---------------------------------------------------------------------------
   fork()

   A descriptor is opened before a handle names it, and closed after it no
   longer does. A fork() by another thread in between would leave the child
   a descriptor that no handle names, and that nothing there can close. So
   those steps (opening, creating the wake descriptor, releasing) hold this
   lock for reading, and fork() takes it for writing (pthread_atfork): the
   steps are short and never wait for anything, the GIL included. */

static pthread_rwlock_t bp_fork_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t bp_fork_handlers = PTHREAD_ONCE_INIT;

static void bp_fork_prepare(void) { pthread_rwlock_wrlock(&bp_fork_lock); }

static void bp_fork_parent(void) { pthread_rwlock_unlock(&bp_fork_lock); }

/* The child's thread has another id than the writer it copies: glibc would
   not take its unlock for the writer's. It is alone: it starts afresh. */
static void bp_fork_child(void) { pthread_rwlock_init(&bp_fork_lock, NULL); }

static void bp_register_fork_handlers(void)
{
    pthread_atfork(bp_fork_prepare, bp_fork_parent, bp_fork_child);
}

/* Enter and leave a step that must not be split by fork(). */
static void bp_fork_guard(void)
{
    pthread_once(&bp_fork_handlers, bp_register_fork_handlers);
    pthread_rwlock_rdlock(&bp_fork_lock);
}

static void bp_fork_unguard(void) { pthread_rwlock_unlock(&bp_fork_lock); }

/* ---------------------------------------------------------------------------
   Opening, uses, closing */

/* Opens (or creates) queue `name` into `queue`, non-blocking. Returns 0 or -errno. */
int bp_open(struct bp_queue *queue, const char *name, int oflag, unsigned int mode,
            long maxmsg, long msgsize)
{
    struct mq_attr attr = {0};
    mqd_t mqd;
    attr.mq_maxmsg = maxmsg;
    attr.mq_msgsize = msgsize;
    bp_fork_guard();
    mqd = mq_open(name, oflag | O_NONBLOCK, (mode_t)mode, (oflag & O_CREAT) ? &attr : NULL);
    if (mqd == (mqd_t)-1) {
        int err = errno;
        bp_fork_unguard();
        return -err;
    }
    queue->mqd = (int)mqd; /* a child forked from now on can close it */
    bp_fork_unguard();
    if (mq_getattr(mqd, &attr) != 0) {
        int err = errno;
        bp_fork_guard();
        mq_close(mqd);
        queue->mqd = -1;
        bp_fork_unguard();
        return -err;
    }
    queue->msgsize = (size_t)attr.mq_msgsize;
    queue->state = 0; /* not shared yet: plain stores */
    queue->held = 0;
    queue->wake_fd = -1;
    queue->retired_wake_fd = -1;
    return 0;
}

/* Closes every descriptor of the queue: by the last use out after bp_close(). */
static void bp_release(struct bp_queue *queue)
{
    int wake;
    bp_fork_guard();
    wake = BP_ATOMIC_EXCHANGE(queue->wake_fd, -1);
    mq_close((mqd_t)queue->mqd);
    queue->mqd = -1;
    if (wake >= 0)
        close(wake);
    if (queue->retired_wake_fd >= 0) {
        close(queue->retired_wake_fd);
        queue->retired_wake_fd = -1;
    }
    bp_fork_unguard();
}

/* Takes a use of the queue: 1, and its descriptors stay open until
   bp_leave(); or 0 if it is closed (nothing to leave). */
static int bp_enter(struct bp_queue *queue)
{
    unsigned long state = BP_ATOMIC_LOAD(queue->state);
    do {
        if (state & BP_CLOSED)
            return 0;
    } while (!BP_ATOMIC_CAS(queue->state, &state, state + BP_USE, 1));
    return 1;
}

/* Gives a use back; the last one out of a closed queue releases it. */
static void bp_leave(struct bp_queue *queue)
{
    if (BP_ATOMIC_SUB(queue->state, BP_USE) == (BP_CLOSED | BP_USE))
        bp_release(queue);
}

/* A use that Python keeps across calls (a wait through gevent or asyncio
   watches the descriptors): counted apart too, for bp_after_fork. */
int bp_hold(struct bp_queue *queue)
{
    if (!bp_enter(queue))
        return 0;
    BP_ATOMIC_ADD(queue->held, 1);
    return 1;
}

void bp_unhold(struct bp_queue *queue)
{
    BP_ATOMIC_SUB(queue->held, 1);
    bp_leave(queue);
}

int bp_is_closed(struct bp_queue *queue)
{
    return (BP_ATOMIC_LOAD(queue->state) & BP_CLOSED) != 0;
}

/* Marks the queue closed and wakes every wait on it; the descriptors are
   released at once, or by the last call still using them. Idempotent. */
void bp_close(struct bp_queue *queue)
{
    unsigned long state = BP_ATOMIC_LOAD(queue->state);
    int wake;
    /* Close and take a use in one step: the wake descriptor must stay open
       while it is signalled. */
    do {
        if (state & BP_CLOSED)
            return;
    } while (!BP_ATOMIC_CAS(queue->state, &state, (state | BP_CLOSED) + BP_USE, 1));
    /* A sleeper publishes its wake descriptor, then checks BP_CLOSED; this
       sets BP_CLOSED, then reads the descriptor (all sequentially
       consistent): either it sees ours, or we see its. */
    wake = BP_ATOMIC_LOAD(queue->wake_fd);
    if (wake >= 0) {
        uint64_t one = 1;
        ssize_t written;
        do
            written = write(wake, &one, sizeof one);
        while (written < 0 && errno == EINTR);
        /* EAGAIN: the counter is full, so it is readable already. */
    }
    bp_leave(queue);
}

/* In a child after fork(): only the forking thread lives on, and it is in
   none of our calls. Of the uses Python held across calls (bp_hold), `kept`
   still count: those of the forking thread's greenlets, which fork copies;
   the others belonged to threads and event loops that did not come along,
   and nothing in the child would give them back. The parent's wake
   descriptor is shared with the child, so the child gets its own when it
   first sleeps: otherwise a close() in one process would wake the other's
   waiters. The parent's is kept open (a copied greenlet may still watch it)
   until the queue is released. */
void bp_after_fork(struct bp_queue *queue, unsigned long kept)
{
    unsigned long closed = BP_ATOMIC_LOAD(queue->state) & BP_CLOSED;
    int inherited = BP_ATOMIC_EXCHANGE(queue->wake_fd, -1);
    if (inherited >= 0) {
        if (queue->retired_wake_fd >= 0)
            close(queue->retired_wake_fd);
        queue->retired_wake_fd = inherited;
    }
    BP_ATOMIC_STORE(queue->held, kept);
    BP_ATOMIC_STORE(queue->state, closed | kept * BP_USE);
    if (closed && kept == 0 && queue->mqd >= 0)
        bp_release(queue);
}

/* The wake descriptor, created on first need (queues that never wait never
   pay a descriptor for it), or -errno. The caller holds a use. */
int bp_wake_fd(struct bp_queue *queue)
{
    int fd = BP_ATOMIC_LOAD(queue->wake_fd);
    int created;
    if (fd >= 0)
        return fd;
    bp_fork_guard();
    created = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (created < 0) {
        int err = errno;
        bp_fork_unguard();
        return -err;
    }
    if (!BP_ATOMIC_CAS(queue->wake_fd, &fd, created, 0)) {
        close(created); /* another thread published one first: `fd` holds it */
        created = fd;
    }
    bp_fork_unguard();
    return created;
}

int bp_getattr(struct bp_queue *queue, struct mq_attr *attr)
{
    int r;
    if (!bp_enter(queue))
        return -EBADF;
    r = mq_getattr((mqd_t)queue->mqd, attr) == 0 ? 0 : -errno;
    bp_leave(queue);
    return r;
}

/* Python's side of a notification by thread: build_ffi.py declares it
   extern "Python", and cffi defines it after this file. */
static void bp_notified(int token);

/* What glibc runs, in a new thread, when a notification by thread fires. */
static void bp_notify_thread(union sigval value)
{
    bp_notified(value.sival_int);
}

/* mq_notify(): with token > 0, call bp_notified(token) in a new thread when
   a message arrives in the empty queue; else with signo > 0, send this
   process that signal; else cancel this process's registration. */
int bp_notify(struct bp_queue *queue, int signo, int token)
{
    struct sigevent event;
    int r;
    if (!bp_enter(queue))
        return -EBADF;
    memset(&event, 0, sizeof event);
    if (token > 0) {
        event.sigev_notify = SIGEV_THREAD;
        event.sigev_notify_function = bp_notify_thread;
        event.sigev_value.sival_int = token;
    } else {
        event.sigev_notify = SIGEV_SIGNAL;
        event.sigev_signo = signo;
    }
    r = mq_notify((mqd_t)queue->mqd, token > 0 || signo > 0 ? &event : NULL) == 0 ? 0 : -errno;
    bp_leave(queue);
    return r;
}

/* The queue's permission bits and owner, from fstat() on its descriptor. */
int bp_fstat(struct bp_queue *queue, unsigned int *mode, unsigned int *uid, unsigned int *gid)
{
    struct stat st;
    int r;
    if (!bp_enter(queue))
        return -EBADF;
    r = fstat(queue->mqd, &st) == 0 ? 0 : -errno;
    bp_leave(queue);
    if (r == 0) {
        *mode = (unsigned int)(st.st_mode & 07777);
        *uid = (unsigned int)st.st_uid;
        *gid = (unsigned int)st.st_gid;
    }
    return r;
}

/* ---------------------------------------------------------------------------
   Single attempts, which never wait: -EAGAIN when the queue is not ready.
   The caller holds a use. */

static int bp_send_now(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio)
{
    return mq_send((mqd_t)queue->mqd, msg, len, prio) == 0 ? 0 : -errno;
}

/* Returns (priority << BP_PACK_SHIFT) | length, or -errno. `data` has room
   for msgsize bytes. */
static long long bp_receive_now(struct bp_queue *queue, char *data)
{
    unsigned int prio;
    ssize_t n = mq_receive((mqd_t)queue->mqd, data, queue->msgsize, &prio);
    if (n < 0)
        return -(long long)errno;
    return ((long long)prio << BP_PACK_SHIFT) | (long long)n;
}

/* ---------------------------------------------------------------------------
   Waiting: the one home */

/* Before sleeping, a call keeps trying for this long: a peer process on
   another core usually makes room or sends within microseconds, and a sleep
   plus a wake-up costs far more. With one CPU the peer cannot run
   meanwhile, so there is no spin. */
#define BP_SPIN_NS 10000LL

static long long bp_spin_ns(void)
{
    static long long spin = -1; /* relaxed: every thread computes the same */
    long long known = __atomic_load_n(&spin, __ATOMIC_RELAXED);
    if (known < 0) {
        known = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? BP_SPIN_NS : 0;
        __atomic_store_n(&spin, known, __ATOMIC_RELAXED);
    }
    return known;
}

/* Sleeps until the queue is ready for `events` (POLLIN or POLLOUT), it is
   closed, the deadline passes, or a signal arrives. Returns 0 (try again),
   -EBADF (closed), -ETIMEDOUT or -EINTR. The caller holds a use. */
static int bp_sleep(struct bp_queue *queue, short events, long long deadline_ns)
{
    struct pollfd fds[2];
    struct timespec timeout, *until = NULL;
    long long left = BP_FOREVER;
    int wake = bp_wake_fd(queue);
    nfds_t count = wake >= 0 ? 2 : 1;
    int r;
    if (bp_is_closed(queue)) /* after publishing the wake descriptor: see bp_close */
        return -EBADF;
    if (deadline_ns >= 0) {
        left = deadline_ns - bp_monotonic_ns();
        if (left <= 0)
            return -ETIMEDOUT;
    }
    if (wake < 0 && (left < 0 || left > BP_BLIND_SLEEP_NS))
        left = BP_BLIND_SLEEP_NS; /* no wake descriptor: look again soon */
    if (left >= 0) {
        timeout.tv_sec = (time_t)(left / 1000000000LL);
        timeout.tv_nsec = (long)(left % 1000000000LL);
        until = &timeout;
    }
    fds[0].fd = queue->mqd;
    fds[0].events = events;
    fds[1].fd = wake;
    fds[1].events = POLLIN;
    r = ppoll(fds, count, until, NULL);
    if (r < 0)
        return -errno;
    if (bp_is_closed(queue))
        return -EBADF;
    if (r == 0 && deadline_ns >= 0 && bp_monotonic_ns() >= deadline_ns)
        return -ETIMEDOUT;
    return 0;
}

/* An operation for bp_wait_for: one attempt, returning >= 0 when done,
   -EAGAIN when the queue is not ready, or -errno. */
typedef long long (*bp_attempt)(struct bp_queue *queue, void *operation);

/* The one waiting loop. Attempts `attempt`; while the queue is not ready
   and the deadline allows, keeps attempting for up to bp_spin_ns(), then
   sleeps until the queue is ready for `events`, and attempts again, until it
   is done, fails, the deadline passes (-ETIMEDOUT), a signal comes (-EINTR:
   the caller runs its handlers and calls again), or the queue is closed
   (-EBADF). Each wake-up, and each step of `*progress` (messages send_many
   has sent; NULL for one message), starts a new spin: a peer that keeps
   pace is then met without sleeping. `*deadline_ns` may be moved by the
   attempt itself (send_many's timeout per message). The caller holds a use. */
static long long bp_wait_for(struct bp_queue *queue, bp_attempt attempt, void *operation,
                             short events, const long long *deadline_ns, const size_t *progress)
{
    long long r = attempt(queue, operation);
    if (r != -EAGAIN)
        return r;
    if (*deadline_ns == BP_NOW)
        return -ETIMEDOUT;
    for (;;) {
        size_t seen = progress != NULL ? *progress : 0;
        long long now = bp_monotonic_ns(), spin_end = now + bp_spin_ns();
        while (now < spin_end && !bp_is_closed(queue)) {
            r = attempt(queue, operation);
            if (r != -EAGAIN)
                return r;
            now = bp_monotonic_ns();
            if (progress != NULL && *progress != seen) {
                seen = *progress;
                spin_end = now + bp_spin_ns();
            }
        }
        r = bp_sleep(queue, events, *deadline_ns);
        if (r < 0)
            return r;
        r = attempt(queue, operation);
        if (r != -EAGAIN)
            return r;
    }
}

/* ---------------------------------------------------------------------------
   One message */

/* The fast path of put(): send if there is room, else -EAGAIN. Its wrapper
   keeps the GIL (build_ffi.KEEPS_GIL goes by this name). */
int bp_try_put(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio)
{
    int r;
    if (!bp_enter(queue))
        return -EBADF;
    r = bp_send_now(queue, msg, len, prio);
    bp_leave(queue);
    return r;
}

/* The fast path of get_into(): receive into the caller's memory, which has
   room for msgsize bytes (checked in Python), if a message is there, else
   -EAGAIN. Its wrapper keeps the GIL (KEEPS_GIL). */
long long bp_try_get_into(struct bp_queue *queue, char *data)
{
    long long r;
    if (!bp_enter(queue))
        return -EBADF;
    r = bp_receive_now(queue, data);
    bp_leave(queue);
    return r;
}

/* The fast path of get(): the same, into a bp_buffer's data. A single
   argument, which cffi passes without building a tuple; the buffer's header
   names the queue. Keeps the GIL too. */
long long bp_try_get(char *data)
{
    return bp_try_get_into(BP_BUFFER_OF(data)->queue, data);
}

struct bp_one_send {
    const char *msg;
    size_t len;
    unsigned int prio;
};

static long long bp_attempt_send(struct bp_queue *queue, void *operation)
{
    struct bp_one_send *send = operation;
    return bp_send_now(queue, send->msg, send->len, send->prio);
}

/* Sends one message, waiting per the deadline. 0 or -errno. */
int bp_send(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio,
            long long deadline_ns)
{
    struct bp_one_send send = {msg, len, prio};
    long long r;
    if (!bp_enter(queue))
        return -EBADF;
    r = bp_wait_for(queue, bp_attempt_send, &send, POLLOUT, &deadline_ns, NULL);
    bp_leave(queue);
    return (int)r;
}

static long long bp_attempt_receive(struct bp_queue *queue, void *data)
{
    return bp_receive_now(queue, data);
}

/* Receives one message into `data` (room for msgsize bytes), waiting per
   the deadline: (priority << BP_PACK_SHIFT) | length, or -errno. */
long long bp_receive(struct bp_queue *queue, char *data, long long deadline_ns)
{
    long long r;
    if (!bp_enter(queue))
        return -EBADF;
    r = bp_wait_for(queue, bp_attempt_receive, data, POLLIN, &deadline_ns, NULL);
    bp_leave(queue);
    return r;
}

/* ---------------------------------------------------------------------------
   Batches */

struct bp_many_send {
    const char *data;      /* the messages, back to back */
    const size_t *lens;
    size_t count;
    unsigned int prio;
    size_t sent;
    size_t limit;          /* stop after this many (the GIL-keeping attempt) */
    long long timeout_ns;  /* > 0: each message may wait this long */
    long long *deadline;   /* moved on after each message sent, with timeout_ns */
};

/* Sends what fits: 0 once all (or `limit`) are sent, else -EAGAIN or -errno. */
static long long bp_attempt_send_many(struct bp_queue *queue, void *operation)
{
    struct bp_many_send *many = operation;
    size_t bytes = 0;
    int r;
    while (many->sent < many->count && many->sent < many->limit) {
        size_t len = many->lens[many->sent];
        r = bp_send_now(queue, many->data, len, many->prio);
        if (r != 0)
            return r;
        many->data += len;
        many->sent++;
        bytes += len;
        if (many->timeout_ns > 0)
            *many->deadline = bp_monotonic_ns() + many->timeout_ns;
        if (many->limit != SIZE_MAX && bytes >= BP_HOLD_MAX_BYTES)
            many->limit = many->sent;
    }
    return 0;
}

/* If a message is longer than the queue allows, nothing may be sent:
   returns (EMSGSIZE << BP_PACK_SHIFT) | the index of the first such one, or
   -1 when all fit. (A loop here is cheaper than Python's max().) */
static long long bp_first_too_long(struct bp_queue *queue, const size_t *lens, size_t count)
{
    size_t i;
    for (i = 0; i < count; i++)
        if (lens[i] > queue->msgsize)
            return ((long long)EMSGSIZE << BP_PACK_SHIFT) | (long long)i;
    return -1;
}

/* The first attempt of put_many(): sends, never waiting, what fits of the
   first BP_HOLD_MAX_MESSAGES messages, stopping after the one that reaches
   BP_HOLD_MAX_BYTES. Returns
   (errno << BP_PACK_SHIFT) | number sent, errno being 0 when that many went
   out (it may be fewer than `count`: the caller goes on with bp_send_many),
   EAGAIN when the queue filled up; but nothing is sent, and it returns
   EMSGSIZE and the index, if a message is too long. Keeps the GIL. */
long long bp_try_put_many(struct bp_queue *queue, const char *data, const size_t *lens,
                          size_t count, unsigned int prio)
{
    struct bp_many_send many = {data, lens, count, prio, 0, BP_HOLD_MAX_MESSAGES, 0, NULL};
    long long r = bp_first_too_long(queue, lens, count);
    if (r >= 0)
        return r;
    if (!bp_enter(queue))
        return (long long)EBADF << BP_PACK_SHIFT;
    r = bp_attempt_send_many(queue, &many);
    bp_leave(queue);
    return ((long long)-r << BP_PACK_SHIFT) | (long long)many.sent;
}

/* Sends `count` messages stored back to back in `data`, in order, waiting
   for room until *deadline (or not at all unless `may_wait`: gevent and
   asyncio wait in Python). With timeout_ns > 0 each message may wait that
   long: *deadline is moved on after each one sent, and is left as the
   deadline of the message that was not. Returns (errno << BP_PACK_SHIFT) |
   number sent, errno being 0 when all were sent; EMSGSIZE and the index if
   a message is too long (then nothing is sent). */
long long bp_send_many(struct bp_queue *queue, const char *data, const size_t *lens,
                       size_t count, unsigned int prio, long long timeout_ns,
                       long long *deadline, int may_wait)
{
    struct bp_many_send many = {data, lens, count, prio, 0, SIZE_MAX, timeout_ns, deadline};
    long long now = BP_NOW;
    long long r = bp_first_too_long(queue, lens, count);
    if (r >= 0)
        return r;
    if (!bp_enter(queue))
        return (long long)EBADF << BP_PACK_SHIFT;
    r = bp_wait_for(queue, bp_attempt_send_many, &many, POLLOUT, may_wait ? deadline : &now,
                    &many.sent);
    bp_leave(queue);
    return ((long long)-r << BP_PACK_SHIFT) | (long long)many.sent;
}

struct bp_many_receive {
    char *buf;
    size_t capacity;
    size_t max_count;
    long long *results;
    size_t received;
    size_t offset;
    int stopped;           /* the errno that ended the last attempt, or 0 */
};

/* Receives what is there, up to max_count and while the buffer has room for
   one more message: done (0) once it has at least one, else -EAGAIN or
   -errno. results[i] is (priority << BP_PACK_SHIFT) | where message i ends.
   `stopped` says why it stopped: 0 (max_count or room), EAGAIN (drained). */
static long long bp_attempt_receive_many(struct bp_queue *queue, void *operation)
{
    struct bp_many_receive *many = operation;
    many->stopped = 0;
    while (many->received < many->max_count
           && many->capacity - many->offset >= queue->msgsize) {
        long long r = bp_receive_now(queue, many->buf + many->offset);
        if (r < 0) {
            many->stopped = (int)-r;
            return many->received > 0 ? 0 : r;
        }
        many->offset += (size_t)(r & BP_PACK_MASK);
        many->results[many->received++] = (r & ~BP_PACK_MASK) | (long long)many->offset;
    }
    return 0;
}

/* The first attempt of get_many(): receives, never waiting, what is there,
   at most BP_HOLD_MAX_MESSAGES, into room for BP_HOLD_MAX_BYTES plus one
   message of msgsize bytes (the kernel needs that much for each). Returns
   (errno << BP_PACK_SHIFT) | count, errno saying why it stopped: EAGAIN
   when the queue ran empty, 0 at its own limits (more may be there), or
   what went wrong. Keeps the GIL. */
long long bp_try_get_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long *results)
{
    size_t bytes_limit = queue->msgsize + BP_HOLD_MAX_BYTES;
    struct bp_many_receive many = {
        buf,
        capacity < bytes_limit ? capacity : bytes_limit,
        max_count < BP_HOLD_MAX_MESSAGES ? max_count : BP_HOLD_MAX_MESSAGES,
        results, 0, 0, 0};
    if (!bp_enter(queue))
        return (long long)EBADF << BP_PACK_SHIFT;
    bp_attempt_receive_many(queue, &many);
    bp_leave(queue);
    return ((long long)many.stopped << BP_PACK_SHIFT) | (long long)many.received;
}

/* Waits per `deadline_ns` for a message, then receives every message already
   there, up to `max_count`, back to back into `buf`, while it has room for one
   more of msgsize bytes. results[i] is (priority << BP_PACK_SHIFT) | the
   offset where message i ends. Returns (errno << BP_PACK_SHIFT) | count:
   with a count, errno says why it stopped as for bp_try_get_many; without
   one, what ended the wait (ETIMEDOUT, EINTR, EBADF once closed...). */
long long bp_receive_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long deadline_ns, long long *results)
{
    struct bp_many_receive many = {buf, capacity, max_count, results, 0, 0, 0};
    long long r;
    if (!bp_enter(queue))
        return (long long)EBADF << BP_PACK_SHIFT;
    r = bp_wait_for(queue, bp_attempt_receive_many, &many, POLLIN, &deadline_ns, NULL);
    bp_leave(queue);
    if (r < 0)
        return ((long long)-r << BP_PACK_SHIFT) | (long long)many.received;
    return ((long long)many.stopped << BP_PACK_SHIFT) | (long long)many.received;
}
