/*  ami_test.h - small helpers shared by the cmocka test binaries.

    Include after <cmocka.h>'s prerequisites (stdarg, stddef, setjmp, stdint).
*/
#ifndef AMI_TEST_H_INCLUDED
#define AMI_TEST_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <czmq.h>

#include "ami_cert.h"

/*  Create a fresh private directory under $TMPDIR (or /tmp) named for the
    test, mode 0700. Returns a heap string the caller frees with free(), or
    NULL on failure. */
char *
    ami_test_tmpdir (const char *tag);

/*  Remove a directory tree created by ami_test_tmpdir. Refuses (returns -1)
    any path that is not under the temporary root. Returns 0 on success. */
int
    ami_test_rmtree (const char *path);

/*  Join dir and name into a heap string "dir/name" (caller frees). */
char *
    ami_test_path (const char *dir, const char *name);

/*  A TCP port of 127.0.0.1 that is free now (bound to port 0, let go), or
    -1 if none could be had. */
int
    ami_test_free_port (void);

/*  A DEALER that connects to endpoint ("tcp://127.0.0.1:N") from local
    port `port` (libzmq's "tcp://source;destination"), CURVE with cert
    trusting server_key, or plaintext if cert is NULL. It does not
    reconnect within a test, so one connection is one handshake: what the
    handshake-failure tests (SEC-AUD-2) count. NULL on failure. */
zsock_t *
    ami_test_knock (const char *endpoint, int port, ami_cert_t *cert, const char *server_key);

/*  One statistic from an actor's "STATS" pipe command (a zmsg of "name
    value" frames: the broker, the head end), or UINT64_MAX if the reply
    has no such statistic or does not come. */
uint64_t
    ami_test_actor_stat (zactor_t *actor, const char *name);

/*  Occurrences of needle in the first 256 KiB of the file at path (a
    test's captured log), or -1 if it cannot be read. */
int
    ami_test_count_in_file (const char *path, const char *needle);

#endif
