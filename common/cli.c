/* cli.c — git-style subcommand dispatch and the command layer's helpers.
 *
 * A command level is a table of gl_cmd_t; gl_cmd_dispatch picks the entry
 * named by argv[1] and hands it argv shifted by one, with argv[0] rewritten
 * to the full command name so that its getopt_long messages and --help read
 * "gptline shards stat: ...". Each leaf command parses its own options with
 * getopt_long and handles --help itself.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void gl_cmd_print_list(FILE *f, const gl_cmd_t *cmds)
{
    for (const gl_cmd_t *c = cmds; c->name; c++)
        fprintf(f, "  %-14s %s\n", c->name, c->summary);
}

int gl_usage_error(const char *prog, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog, msg, prog);
    return GL_EXIT_USAGE;
}

int gl_cmd_fail(const char *prog, const gl_err_t *err)
{
    fprintf(stderr, "%s: %s\n", prog, err->msg[0] ? err->msg : gl_strerror(err->code));
    return gl_exit_status(err->code);
}

int gl_cmd_dispatch(const char *prog, const gl_cmd_t *cmds, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: %s <command> [options]\n\ncommands:\n", prog);
        gl_cmd_print_list(f, cmds);
        fprintf(f, "\nRun '%s <command> --help' for a command's options.\n", prog);
        return argc < 2 ? GL_EXIT_USAGE : GL_EXIT_OK;
    }
    for (const gl_cmd_t *c = cmds; c->name; c++) {
        if (strcmp(c->name, argv[1]))
            continue;
        size_t n = strlen(prog) + strlen(c->name) + 2;
        char *full = gl_xmalloc(n);
        snprintf(full, n, "%s %s", prog, c->name);
        char *saved = argv[1];
        argv[1] = full;
        int rc = c->run(argc - 1, argv + 1);
        argv[1] = saved;
        free(full);
        return rc;
    }
    return gl_usage_error(prog, "unknown command '%s'", argv[1]);
}

int gl_parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1 << 30)
        return -1;
    *out = (int)v;
    return 0;
}

int gl_parse_float(const char *s, float *out)
{
    char *end;
    float v = strtof(s, &end);
    if (!*s || *end || !(v == v))
        return -1;
    *out = v;
    return 0;
}

int gl_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mul = 1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mul = 1000ull; end++; break;
    case 'M': mul = 1000000ull; end++; break;
    case 'G': mul = 1000000000ull; end++; break;
    case 'T': mul = 1000000000000ull; end++; break;
    default: return -1;
    }
    if (*end != '\0')
        return -1;
    if (v > UINT64_MAX / mul)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}
