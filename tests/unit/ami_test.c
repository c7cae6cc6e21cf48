/*  ami_test.c - shared helpers for the cmocka test binaries. */
#include "ami_test.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "ami_auth.h"

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

int
ami_test_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0
    &&  getsockname (fd, (struct sockaddr *) &addr, &len) == 0)
        port = ntohs (addr.sin_port);
    close (fd);
    return port;
}

zsock_t *
ami_test_knock (const char *endpoint, int port, ami_cert_t *cert, const char *server_key)
{
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return NULL;
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    if (!sock)
        return NULL;
    zsock_set_linger (sock, 0);
    zsock_set_reconnect_ivl (sock, 60000);      //  no second handshake within a test
    if ((cert && ami_auth_client (sock, cert, server_key) != AMI_OK)
    ||  zsock_connect (sock, "tcp://127.0.0.1:%d;%s", port, endpoint + 6) != 0)
        zsock_destroy (&sock);
    return sock;
}

int
ami_test_count_in_file (const char *path, const char *needle)
{
    FILE *in = fopen (path, "r");
    if (!in)
        return -1;
    static char text [262144];
    size_t n = fread (text, 1, sizeof text - 1, in);
    text [n] = 0;
    fclose (in);
    int count = 0;
    for (const char *p = strstr (text, needle); p; p = strstr (p + 1, needle))
        count++;
    return count;
}

uint64_t
ami_test_actor_stat (zactor_t *actor, const char *name)
{
    if (zstr_send (actor, "STATS") != 0)
        return UINT64_MAX;
    zmsg_t *reply = zmsg_recv (actor);
    if (!reply)
        return UINT64_MAX;
    uint64_t value = UINT64_MAX;
    size_t n = strlen (name);
    for (zframe_t *f = zmsg_first (reply); f; f = zmsg_next (reply)) {
        char *text = zframe_strdup (f);
        if (text && strncmp (text, name, n) == 0 && text [n] == ' ')
            value = strtoull (text + n + 1, NULL, 10);
        zstr_free (&text);
    }
    zmsg_destroy (&reply);
    return value;
}
