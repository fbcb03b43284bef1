/* LD_PRELOAD shim for tests/test_offline.py: appends every host name a process looks up to the
 * file named by RESOLVE_LOG, then resolves it as usual. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>

static void note(const char *name) {
    const char *path = getenv("RESOLVE_LOG");
    if (!path || !name) return;
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%s\n", name);
        fclose(f);
    }
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
    note(node);
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, res);
}

struct hostent *gethostbyname(const char *name) {
    note(name);
    struct hostent *(*real)(const char *) = dlsym(RTLD_NEXT, "gethostbyname");
    return real(name);
}
