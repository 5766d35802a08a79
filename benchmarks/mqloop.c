/* The physical limit: the benchmark loops in plain C.
   usage: mqloop MODE SIZE N, MODE one of
     inproc     send then receive, N times
     batch      8 sends then 8 receives
     events     10 non-blocking sends then 10 non-blocking receives (the
                users' event pattern in one process)
     cross      a forked producer sends N, this process receives them
     crosstimed the same with mq_timedsend (1 s) and mq_timedreceive (0.2 s),
                each deadline computed per call, as the event pattern does
   Prints the nanoseconds per message. */
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static struct timespec deadline_in(long ns)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += ns % 1000000000L;
    t.tv_sec += ns / 1000000000L + t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    const char *mode = argv[1];
    long size = atol(argv[2]), n = atol(argv[3]);
    char name[64], *msg = calloc(1, size), *buf = malloc(8192);
    unsigned prio;
    struct mq_attr attr = {0};
    int nonblocking = strcmp(mode, "events") == 0 ? O_NONBLOCK : 0;
    attr.mq_maxmsg = 10;
    attr.mq_msgsize = 8192;
    snprintf(name, sizeof name, "/bench-c-%d", getpid());
    mqd_t q = mq_open(name, O_CREAT | O_RDWR | nonblocking, 0600, &attr);
    if (q == (mqd_t)-1) { perror("mq_open"); return 1; }
    double start = now_ns();
    if (strcmp(mode, "inproc") == 0) {
        for (long i = 0; i < n; i++) {
            mq_send(q, msg, size, 0);
            mq_receive(q, buf, 8192, &prio);
        }
    } else if (strcmp(mode, "batch") == 0 || strcmp(mode, "events") == 0) {
        int depth = nonblocking ? 10 : 8;
        for (long i = 0; i < n; i += depth) {
            for (int j = 0; j < depth; j++) mq_send(q, msg, size, 0);
            for (int j = 0; j < depth; j++) mq_receive(q, buf, 8192, &prio);
        }
    } else if (strcmp(mode, "crosstimed") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            for (long i = 0; i < n; i++) {
                struct timespec t = deadline_in(1000000000L);
                mq_timedsend(q, msg, size, 0, &t);
            }
            _exit(0);
        }
        for (long i = 0; i < n; i++) {
            struct timespec t = deadline_in(200000000L);
            mq_timedreceive(q, buf, 8192, &prio, &t);
        }
        waitpid(pid, NULL, 0);
    } else {
        pid_t pid = fork();
        if (pid == 0) {
            for (long i = 0; i < n; i++) mq_send(q, msg, size, 0);
            _exit(0);
        }
        for (long i = 0; i < n; i++) mq_receive(q, buf, 8192, &prio);
        waitpid(pid, NULL, 0);
    }
    printf("%.1f\n", (now_ns() - start) / n);
    mq_unlink(name);
    return 0;
}
