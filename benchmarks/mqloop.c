/* The physical limit: the benchmark loops in plain C.
   usage: mqloop inproc SIZE N  |  mqloop cross SIZE N  |  mqloop batch SIZE N
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

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    const char *mode = argv[1];
    long size = atol(argv[2]), n = atol(argv[3]);
    char name[64], *msg = calloc(1, size), *buf = malloc(8192);
    unsigned prio;
    struct mq_attr attr = {0};
    attr.mq_maxmsg = 10;
    attr.mq_msgsize = 8192;
    snprintf(name, sizeof name, "/bench-c-%d", getpid());
    mqd_t q = mq_open(name, O_CREAT | O_RDWR, 0600, &attr);
    if (q == (mqd_t)-1) { perror("mq_open"); return 1; }
    double start = now_ns();
    if (strcmp(mode, "inproc") == 0) {
        for (long i = 0; i < n; i++) {
            mq_send(q, msg, size, 0);
            mq_receive(q, buf, 8192, &prio);
        }
    } else if (strcmp(mode, "batch") == 0) {
        for (long i = 0; i < n; i += 8) {
            for (int j = 0; j < 8; j++) mq_send(q, msg, size, 0);
            for (int j = 0; j < 8; j++) mq_receive(q, buf, 8192, &prio);
        }
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
