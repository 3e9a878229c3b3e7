/* peer.h — the benchmarks' PyTorch peers: a script of tests/ref run by
 * $PYTHON (default /usr/bin/python3) from the source tree $GL_SRC (default
 * the working directory), read through a pipe (peer_open) or driven step
 * by step through two (peer_spawn). */
#ifndef GL_BENCH_PEER_H
#define GL_BENCH_PEER_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* The shell command "ENV PYTHON GL_SRC/tests/ref/SCRIPT ARGS" (env may be
 * ""), its standard error dropped. */
static inline void peer_command(char *cmd, size_t size, const char *env, const char *script, const char *args)
{
    const char *py = getenv("PYTHON"), *src = getenv("GL_SRC");
    snprintf(cmd, size, "%s '%s' '%s/tests/ref/%s' %s 2>/dev/null", env, py && *py ? py : "/usr/bin/python3",
             src && *src ? src : ".", script, args);
}

/* popen of the peer's command for reading; NULL when it cannot start. */
static inline FILE *peer_open(const char *env, const char *script, const char *args)
{
    char cmd[4096];
    peer_command(cmd, sizeof cmd, env, script, args);
    return popen(cmd, "r");
}

/* A peer that answers requests: one line to it, one line back. */
typedef struct {
    pid_t pid;
    FILE *to, *from;
} peer_t;

/* Starts the peer with pipes to its standard input and from its output;
 * -1 when it cannot start. */
static inline int peer_spawn(peer_t *p, const char *env, const char *script, const char *args)
{
    char cmd[4096];
    int in[2], out[2];
    peer_command(cmd, sizeof cmd, env, script, args);
    p->pid = -1;
    p->to = p->from = NULL;
    /* O_CLOEXEC: a peer started later must not inherit this one's ends,
     * or this one's input would never see its end; dup2 leaves the child's
     * standard input and output open across exec */
    if (pipe2(in, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) < 0) {
        close(in[0]), close(in[1]);
        return -1;
    }
    fflush(stdout);
    p->pid = fork();
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (p->pid < 0) {
        close(in[1]), close(out[0]);
        return -1;
    }
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
    if (!p->to || !p->from) {
        /* the ends fdopen did not take are closed here, the others by
         * peer_close (which also waits for the child) */
        if (!p->to)
            close(in[1]);
        if (!p->from)
            close(out[0]);
        return -1;
    }
    return 0;
}

/* Ends the peer: closes its input (its signal to exit) and waits for it. */
static inline void peer_close(peer_t *p)
{
    if (p->to)
        fclose(p->to);
    if (p->from)
        fclose(p->from);
    if (p->pid > 0)
        waitpid(p->pid, NULL, 0);
    p->to = p->from = NULL;
    p->pid = -1;
}

#endif
