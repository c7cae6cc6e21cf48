/*  ami_test.c - shared helpers for the cmocka test binaries. */
#include "ami_test.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *
s_tmproot (void)
{
    const char *t = getenv ("TMPDIR");
    return (t && *t) ? t : "/tmp";
}

char *
ami_test_tmpdir (const char *tag)
{
    char templ [512];
    int n = snprintf (templ, sizeof templ, "%s/ami-test-%s-XXXXXX", s_tmproot (), tag ? tag : "x");
    if (n < 0 || (size_t) n >= sizeof templ)
        return NULL;
    if (!mkdtemp (templ))
        return NULL;
    return strdup (templ);
}

static int
s_unlink_cb (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st; (void) flag; (void) ftw;
    return remove (path);
}

int
ami_test_rmtree (const char *path)
{
    char prefix [512];
    snprintf (prefix, sizeof prefix, "%s/ami-test-", s_tmproot ());
    if (!path || strncmp (path, prefix, strlen (prefix)) != 0 || strstr (path, ".."))
        return -1;
    return nftw (path, s_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
}

char *
ami_test_path (const char *dir, const char *name)
{
    size_t len = strlen (dir) + strlen (name) + 2;
    char *p = malloc (len);
    if (p)
        snprintf (p, len, "%s/%s", dir, name);
    return p;
}
