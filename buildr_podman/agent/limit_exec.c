/* buildr-limit-exec NPROC PROGRAM ARG0 [ARG...]
 *
 * Sets RLIMIT_NPROC, soft and hard, to NPROC, then becomes PROGRAM (a path, searched nowhere)
 * with the arguments ARG0 ARG...: the task's pids limit where the kernel gives no pids cgroup
 * (agent/limits.py). The agent could set the limit itself between fork and exec, but that
 * makes CPython fork the agent instead of vfork'ing it, and the fork costs each task ~7 ms of
 * page-table copying and copy-on-write faults; exec'ing this first costs a fraction of a
 * millisecond. Built with the agent bundle when a C compiler is at hand (agent_build.py);
 * without it the agent sets the limit as before. Exit status 125 when the limit cannot be set,
 * 126 or 127 when PROGRAM cannot be run (as a shell does).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fputs("usage: buildr-limit-exec NPROC PROGRAM ARG0 [ARG...]\n", stderr);
        return 125;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long nproc = strtoull(argv[1], &end, 10);
    if (errno != 0 || end == argv[1] || *end != '\0' || argv[1][0] == '-') {
        fprintf(stderr, "buildr-limit-exec: not a number of processes: %s\n", argv[1]);
        return 125;
    }
    struct rlimit limit = {(rlim_t)nproc, (rlim_t)nproc};
    if (setrlimit(RLIMIT_NPROC, &limit) != 0) {
        fprintf(stderr, "buildr-limit-exec: cannot limit the task to %llu processes: %s\n",
                nproc, strerror(errno));
        return 125;
    }
    execv(argv[2], argv + 3);
    int error = errno;
    fprintf(stderr, "buildr-limit-exec: cannot run %s: %s\n", argv[2], strerror(error));
    return error == ENOENT ? 127 : 126;
}
