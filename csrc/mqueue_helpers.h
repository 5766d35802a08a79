/* The C helpers of baseplate.message_queue: what mqueue_helpers.c defines
   for Python.

   Declared once, here. mqueue_helpers.c includes this file, and build_ffi.py
   reads it into cffi's cdef, so the compiler checks each definition against
   its declaration and cffi checks the structs' layout against the compiled
   ones. It is therefore written in the C that cffi's cdef also parses: no
   #include, no #if, no _Atomic (the atomic fields are plain and used through
   the __atomic builtins), and only literal #defines. It comes after
   <mqueue.h> (struct mq_attr) and <stddef.h> (size_t).

   Conventions: failures return -errno; deadlines are CLOCK_MONOTONIC
   nanoseconds (time.monotonic_ns()); two numbers may come back packed in
   one, (priority or errno) << BP_PACK_SHIFT | a length, offset or count.
   mqueue_helpers.c says what each helper does. */

/* Results pack (priority or errno) above this many bits of length or count. */
#define BP_PACK_SHIFT 30
/* Deadlines: wait as long as it takes, or not at all (else a monotonic time). */
#define BP_FOREVER -1
#define BP_NOW 0

/* The queue as the helpers see it: one per MessageQueue object. */
struct bp_queue {
    int mqd;                       /* the queue's (non-blocking) descriptor */
    size_t msgsize;                /* the queue's max_message_size */
    unsigned long state;           /* atomic: BP_CLOSED | uses in flight * BP_USE */
    unsigned long held;            /* atomic: uses held across calls by Python (bp_hold) */
    int wake_fd;                   /* atomic: eventfd signalled by bp_close, or -1 */
    int retired_wake_fd;           /* the parent's, after fork (see bp_after_fork) */
};

/* A receive buffer: the queue it serves, then room for one message. get()'s
   fast path passes just `data`, and the helper finds the queue in front of it. */
struct bp_buffer {
    struct bp_queue *queue;
    char data[];
};

/* Opening, uses, closing. */
int bp_open(struct bp_queue *queue, const char *name, int oflag, unsigned int mode,
            long maxmsg, long msgsize);
int bp_hold(struct bp_queue *queue);
void bp_unhold(struct bp_queue *queue);
int bp_is_closed(struct bp_queue *queue);
void bp_close(struct bp_queue *queue);
void bp_after_fork(struct bp_queue *queue, unsigned long kept);
int bp_wake_fd(struct bp_queue *queue);

/* Facts and notification. */
int bp_getattr(struct bp_queue *queue, struct mq_attr *attr);
int bp_notify(struct bp_queue *queue, int signo, int token);
int bp_fstat(struct bp_queue *queue, unsigned int *mode, unsigned int *uid, unsigned int *gid);

/* One message: first attempts that never wait (they keep the GIL), then
   calls that wait per a deadline. */
int bp_try_put(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio);
long long bp_try_get(char *data);
long long bp_try_get_into(struct bp_queue *queue, char *data);
int bp_send(struct bp_queue *queue, const char *msg, size_t len, unsigned int prio,
            long long deadline_ns);
long long bp_receive(struct bp_queue *queue, char *data, long long deadline_ns);

/* Batches: the same two kinds. */
long long bp_try_put_many(struct bp_queue *queue, const char *data, const size_t *lens,
                          size_t count, unsigned int prio);
long long bp_send_many(struct bp_queue *queue, const char *data, const size_t *lens,
                       size_t count, unsigned int prio, long long timeout_ns,
                       long long *deadline, int may_wait);
long long bp_try_get_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long *results);
long long bp_receive_many(struct bp_queue *queue, char *buf, size_t capacity,
                          size_t max_count, long long deadline_ns, long long *results);
