/*  fuzz_cert.c - libFuzzer target for public certificate loading.

    Public certificates are files that peers hand over (they go into the
    allow-list directory), so ami_cert_load_public must refuse any file
    that is not a well-formed public certificate with AMI_E_KEY (or
    AMI_E_NOMEM), and never misbehave. The input is written to one
    temporary file created once per process (ftruncate + pwrite per
    input; the file is removed at exit), and loaded. Oracles: NULL comes
    with AMI_E_KEY or AMI_E_NOMEM; a loaded cert has no secret key, a
    role and node-id, a 32-byte public key whose Z85 text is 40
    characters and decodes back to it.
    Any violation aborts, which libFuzzer reports as a crash.
*/
#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ami_cert.h"
#include "ami_err.h"
#include "ami_log.h"

static char s_path [256];
static int s_fd = -1;

static void
s_fail (const char *what, int a)
{
    fprintf (stderr, "fuzz_cert oracle: %s (%d)\n", what, a);
    abort ();
}

static void
s_cleanup (void)
{
    if (s_fd >= 0) {
        close (s_fd);
        unlink (s_path);
        s_fd = -1;
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (s_fd < 0) {
        ami_log_set_level (AMI_LOG_ERROR);
        const char *tmp = getenv ("TMPDIR");
        snprintf (s_path, sizeof s_path, "%s/fuzz_cert-XXXXXX",
                  tmp && *tmp ? tmp : "/tmp");
        s_fd = mkstemp (s_path);
        if (s_fd < 0)
            abort ();
        atexit (s_cleanup);
    }
    if (ftruncate (s_fd, 0) != 0)
        abort ();
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite (s_fd, data + done, size - done, (off_t) done);
        if (n <= 0)
            abort ();
        done += (size_t) n;
    }
    int err = -12345;
    ami_cert_t *cert = ami_cert_load_public (s_path, &err);
    if (!cert) {
        if (err != AMI_E_KEY && err != AMI_E_NOMEM)
            s_fail ("load_public failed with an unexpected code", err);
        return 0;
    }
    if (ami_cert_has_secret (cert))
        s_fail ("public cert holds a secret", 0);
    const char *role = ami_cert_role (cert);
    const char *node_id = ami_cert_node_id (cert);
    if (!role || !*role || !node_id || !*node_id)
        s_fail ("role or node-id missing", 0);
    const char *txt = ami_cert_public_txt (cert);
    if (!txt || strlen (txt) != 40)
        s_fail ("public key text length", txt ? (int) strlen (txt) : -1);
    uint8_t key [32];
    if (!zmq_z85_decode (key, txt) || memcmp (key, ami_cert_public_key (cert), 32) != 0)
        s_fail ("public key text does not decode to the key", 0);
    (void) ami_cert_key_type (cert);
    (void) ami_cert_meta (cert, "role");
    ami_cert_destroy (&cert);
    if (cert)
        s_fail ("destroy did not null", 0);
    return 0;
}
