/*  test_cert.c - cmocka tests for ami_cert (CurveZMQ certificates).

    Each test gets a fresh temporary directory from the fixture; the
    teardown removes it and destroys certificates a test left behind. Log
    lines are captured (zsys log stream pointed at a temporary file) where a
    test checks that an error names the file.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ami_cert.h"
#include "ami_err.h"
#include "ami_test.h"

typedef struct {
    char *dir;                  //  the test's private temporary directory
    char *path;                 //  dir/node.cert (public; secret is +_secret)
    char *secret;               //  dir/node.cert_secret
    ami_cert_t *cert;           //  destroyed by the teardown if still set
    ami_cert_t *other;          //  idem
    FILE *capture;              //  zsys log stream while capturing
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    fx->dir = ami_test_tmpdir ("cert");
    if (!fx->dir)
        return -1;
    fx->path = ami_test_path (fx->dir, "node.cert");
    fx->secret = ami_test_path (fx->dir, "node.cert_secret");
    if (!fx->path || !fx->secret)
        return -1;
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    ami_cert_destroy (&fx->cert);
    ami_cert_destroy (&fx->other);
    if (fx->capture) {
        zsys_set_logstream (stderr);
        fclose (fx->capture);
    }
    int rc = ami_test_rmtree (fx->dir);
    free (fx->path);
    free (fx->secret);
    free (fx->dir);
    free (fx);
    return rc == 0 ? 0 : -1;
}

static void
s_write (const char *path, const char *text, size_t size, mode_t mode)
{
    FILE *f = fopen (path, "wb");
    assert_non_null (f);
    assert_int_equal (fwrite (text, 1, size, f), size);
    assert_int_equal (fclose (f), 0);
    assert_int_equal (chmod (path, mode), 0);
}

static void
s_capture_start (fixture_t *fx)
{
    fx->capture = tmpfile ();
    assert_non_null (fx->capture);
    zsys_set_logstream (fx->capture);
}

static char *
s_capture_end (fixture_t *fx)
{
    zsys_set_logstream (stderr);
    long size = ftell (fx->capture);
    assert_true (size >= 0);
    char *text = calloc (1, (size_t) size + 1);
    assert_non_null (text);
    rewind (fx->capture);
    assert_int_equal (fread (text, 1, (size_t) size, fx->capture), (size_t) size);
    fclose (fx->capture);
    fx->capture = NULL;
    return text;
}

static mode_t
s_mode (const char *path)
{
    struct stat st;
    assert_int_equal (lstat (path, &st), 0);
    return st.st_mode & 07777;
}

//  Number of entries in dir other than . and ..
static int
s_entries (const char *dir)
{
    DIR *d = opendir (dir);
    assert_non_null (d);
    int n = 0;
    for (struct dirent *e = readdir (d); e; e = readdir (d))
        if (strcmp (e->d_name, ".") && strcmp (e->d_name, ".."))
            n++;
    closedir (d);
    return n;
}

//  Save a fresh valid cert at fx->path.
static void
s_save_fresh (fixture_t *fx)
{
    int err = -1;
    fx->cert = ami_cert_new ("meter", "MTR-000042", &err);
    assert_non_null (fx->cert);
    assert_int_equal (err, AMI_OK);
    assert_int_equal (ami_cert_save (fx->cert, fx->path), AMI_OK);
}


//  --------------------------------------------------------------------------

static void
test_roundtrip (void **state)
{
    fixture_t *fx = *state;
    s_save_fresh (fx);
    assert_int_equal (ami_cert_set_meta (fx->cert, "firmware", "1.2.3"), AMI_OK);
    assert_int_equal (ami_cert_save (fx->cert, fx->path), AMI_OK);

    int err = -1;
    fx->other = ami_cert_load (fx->path, &err);
    assert_non_null (fx->other);
    assert_int_equal (err, AMI_OK);
    assert_true (ami_cert_has_secret (fx->other));
    assert_string_equal (ami_cert_public_txt (fx->other), ami_cert_public_txt (fx->cert));
    assert_int_equal (strlen (ami_cert_public_txt (fx->other)), AMI_CERT_KEY_TXT_LEN);
    assert_memory_equal (ami_cert_public_key (fx->other), ami_cert_public_key (fx->cert), 32);
    //  zcert_eq compares the public and the secret keys
    assert_true (zcert_eq (ami_cert_zcert (fx->other), ami_cert_zcert (fx->cert)));
    assert_string_equal (ami_cert_role (fx->other), "meter");
    assert_string_equal (ami_cert_node_id (fx->other), "MTR-000042");
    assert_string_equal (ami_cert_meta (fx->other, "firmware"), "1.2.3");
    assert_null (ami_cert_meta (fx->other, "nothing"));
    ami_cert_destroy (&fx->other);
    assert_null (fx->other);
    ami_cert_destroy (&fx->other);          //  idempotent

    //  The secret path itself is accepted too
    fx->other = ami_cert_load (fx->secret, &err);
    assert_non_null (fx->other);
    assert_true (zcert_eq (ami_cert_zcert (fx->other), ami_cert_zcert (fx->cert)));
    ami_cert_destroy (&fx->other);

    //  The public file gives the public key and metadata, no secret
    fx->other = ami_cert_load_public (fx->path, &err);
    assert_non_null (fx->other);
    assert_false (ami_cert_has_secret (fx->other));
    assert_string_equal (ami_cert_public_txt (fx->other), ami_cert_public_txt (fx->cert));
    assert_string_equal (ami_cert_node_id (fx->other), "MTR-000042");
    assert_false (zcert_eq (ami_cert_zcert (fx->other), ami_cert_zcert (fx->cert)));
    ami_cert_destroy (&fx->other);

    //  CZMQ reads our files unchanged (zauth allow-lists depend on it)
    zcert_t *z = zcert_load (fx->path);
    assert_non_null (z);
    assert_true (zcert_eq (z, ami_cert_zcert (fx->cert)));   //  it read _secret
    assert_string_equal (zcert_meta (z, "role"), "meter");
    zcert_destroy (&z);
    assert_int_equal (unlink (fx->secret), 0);
    z = zcert_load (fx->path);
    assert_non_null (z);
    assert_string_equal (zcert_public_txt (z), ami_cert_public_txt (fx->cert));
    zcert_destroy (&z);
}

static void
test_file_modes (void **state)
{
    fixture_t *fx = *state;
    //  The modes are exact whatever the umask (here: none at all)
    mode_t old = umask (0);
    s_save_fresh (fx);
    assert_int_equal (s_mode (fx->secret), 0600);
    assert_int_equal (s_mode (fx->path), 0644);
    //  Only the two files: no temporary left behind
    assert_int_equal (s_entries (fx->dir), 2);

    //  Overwriting a secret file that had a loose mode still gives 0600
    //  (fopen "w", as zcert_save_secret uses, would keep 0666)
    assert_int_equal (chmod (fx->secret, 0666), 0);
    assert_int_equal (ami_cert_save (fx->cert, fx->path), AMI_OK);
    assert_int_equal (s_mode (fx->secret), 0600);
    assert_int_equal (s_mode (fx->path), 0644);
    umask (old);

    //  A public-only save writes just the public file
    char *pub = ami_test_path (fx->dir, "peer.cert");
    assert_non_null (pub);
    assert_int_equal (ami_cert_save_public (fx->cert, pub), AMI_OK);
    assert_int_equal (s_mode (pub), 0644);
    assert_int_equal (s_entries (fx->dir), 3);
    free (pub);

    //  Saving into a missing directory fails cleanly
    char *bad = ami_test_path (fx->dir, "no/such/dir.cert");
    assert_non_null (bad);
    assert_int_equal (ami_cert_save (fx->cert, bad), AMI_E_IO);
    free (bad);
}

static void
test_perms_refused (void **state)
{
    fixture_t *fx = *state;
    s_save_fresh (fx);
    static const mode_t loose [] = { 0644, 0640, 0604, 0660, 0610, 0601, 0666 };
    for (size_t i = 0; i < sizeof loose / sizeof loose [0]; i++) {
        assert_int_equal (chmod (fx->secret, loose [i]), 0);
        int err = AMI_OK;
        s_capture_start (fx);
        assert_null (ami_cert_load (fx->path, &err));
        char *log = s_capture_end (fx);
        assert_int_equal (err, AMI_E_KEY_PERMS);
        assert_non_null (strstr (log, fx->secret));
        free (log);
    }
    //  Owner-only modes are fine, read-only included
    assert_int_equal (chmod (fx->secret, 0400), 0);
    int err = -1;
    fx->other = ami_cert_load (fx->path, &err);
    assert_non_null (fx->other);
    assert_int_equal (err, AMI_OK);
}

static void
test_not_regular_refused (void **state)
{
    fixture_t *fx = *state;
    s_save_fresh (fx);
    //  A symlink to a perfectly good 0600 secret is refused
    char *real = ami_test_path (fx->dir, "real_secret");
    char *link = ami_test_path (fx->dir, "link.cert_secret");
    char *link_pub = ami_test_path (fx->dir, "link.cert");
    assert_true (real && link && link_pub);
    assert_int_equal (rename (fx->secret, real), 0);
    assert_int_equal (symlink (real, link), 0);
    int err = AMI_OK;
    assert_null (ami_cert_load (link_pub, &err));
    assert_int_equal (err, AMI_E_KEY_PERMS);

    //  A FIFO is refused at once (and does not block the open)
    assert_int_equal (mkfifo (fx->secret, 0600), 0);
    assert_null (ami_cert_load (fx->path, &err));
    assert_int_equal (err, AMI_E_KEY_PERMS);
    assert_int_equal (unlink (fx->secret), 0);

    //  A directory too
    assert_int_equal (mkdir (fx->secret, 0700), 0);
    assert_null (ami_cert_load (fx->path, &err));
    assert_int_equal (err, AMI_E_KEY_PERMS);
    free (real);
    free (link);
    free (link_pub);
}

static void
test_missing (void **state)
{
    fixture_t *fx = *state;
    int err = AMI_OK;
    s_capture_start (fx);
    assert_null (ami_cert_load (fx->path, &err));
    char *log = s_capture_end (fx);
    assert_int_equal (err, AMI_E_KEY);
    char expect [600];
    snprintf (expect, sizeof expect, "no secret key at %s: run ami-keygen", fx->secret);
    if (!strstr (log, expect))
        fail_msg ("log lacks '%s': %s", expect, log);
    free (log);

    //  A public file alone is not a secret key
    s_save_fresh (fx);
    assert_int_equal (unlink (fx->secret), 0);
    assert_null (ami_cert_load (fx->path, &err));
    assert_int_equal (err, AMI_E_KEY);

    //  A missing public cert
    char *nope = ami_test_path (fx->dir, "nope.cert");
    assert_non_null (nope);
    assert_null (ami_cert_load_public (nope, &err));
    assert_int_equal (err, AMI_E_KEY);
    free (nope);
}

static void
test_garbage (void **state)
{
    fixture_t *fx = *state;
    s_save_fresh (fx);
    fx->other = ami_cert_new ("meter", "MTR-2", NULL);
    assert_non_null (fx->other);
    const char *pub1 = ami_cert_public_txt (fx->cert);
    const char *sec1 = zcert_secret_txt (ami_cert_zcert (fx->cert));
    const char *pub2 = ami_cert_public_txt (fx->other);

    //  binary noise with NUL bytes
    static const char noise [] = { 1, 2, 'g', 'a', 'r', 'b', 0, (char) 0xff, (char) 0xfe };
    s_write (fx->secret, noise, sizeof noise, 0600);
    int err = AMI_OK;
    assert_null (ami_cert_load (fx->path, &err));
    assert_int_equal (err, AMI_E_KEY);

    char *bad [8] = { 0 };
    size_t n = 0;
    //  text that is not ZPL
    bad [n++] = strdup ("hello world, this is not a certificate\n  oops\n");
    //  ZPL without keys
    bad [n++] = strdup ("metadata\n    role = \"meter\"\n    node-id = \"M1\"\n");
    //  a key with a bad length, and one with a character outside Z85
    bad [n++] = zsys_sprintf ("metadata\n    role = meter\n    node-id = M1\ncurve\n"
                              "    public-key = \"%.39s\"\n    secret-key = \"%s\"\n", pub1, sec1);
    bad [n++] = zsys_sprintf ("metadata\n    role = meter\n    node-id = M1\ncurve\n"
                              "    public-key = \"~%.39s\"\n    secret-key = \"%s\"\n", pub1 + 1, sec1);
    //  a secret that does not belong to the public key
    bad [n++] = zsys_sprintf ("metadata\n    role = meter\n    node-id = M1\ncurve\n"
                              "    public-key = \"%s\"\n    secret-key = \"%s\"\n", pub2, sec1);
    //  no secret key at all
    bad [n++] = zsys_sprintf ("metadata\n    role = meter\n    node-id = M1\ncurve\n"
                              "    public-key = \"%s\"\n", pub1);
    for (size_t i = 0; i < n; i++) {
        assert_non_null (bad [i]);
        s_write (fx->secret, bad [i], strlen (bad [i]), 0600);
        err = AMI_OK;
        ami_cert_t *c = ami_cert_load (fx->path, &err);
        if (c || err != AMI_E_KEY)
            fail_msg ("case %zu: loaded=%d err=%d", i, c != NULL, err);
        zstr_free (&bad [i]);
    }

    //  Oversized file
    char *big = malloc (70000);
    assert_non_null (big);
    memset (big, '#', 70000);
    s_write (fx->secret, big, 70000, 0600);
    free (big);
    err = AMI_OK;
    assert_null (ami_cert_load (fx->path, &err));
    assert_int_equal (err, AMI_E_KEY);
}

static void
test_missing_metadata (void **state)
{
    fixture_t *fx = *state;
    //  Certificates made by plain CZMQ lack role/node-id
    for (int variant = 0; variant < 3; variant++) {
        zcert_t *z = zcert_new ();
        assert_non_null (z);
        if (variant == 1)
            zcert_set_meta (z, "node-id", "M1");
        if (variant == 2)
            zcert_set_meta (z, "role", "meter");
        assert_int_equal (zcert_save (z, fx->path), 0);
        assert_int_equal (chmod (fx->secret, 0600), 0);
        zcert_destroy (&z);
        int err = AMI_OK;
        s_capture_start (fx);
        assert_null (ami_cert_load (fx->path, &err));
        char *log = s_capture_end (fx);
        assert_int_equal (err, AMI_E_KEY);
        assert_non_null (strstr (log, variant == 2 ? "'node-id'" : "'role'"));
        free (log);
        assert_null (ami_cert_load_public (fx->path, &err));
        assert_int_equal (err, AMI_E_KEY);
    }
    //  Invalid metadata values in a file are refused as well
    zcert_t *z = zcert_new ();
    assert_non_null (z);
    zcert_set_meta (z, "role", "Meter Role");       //  not [a-z0-9-]
    zcert_set_meta (z, "node-id", "M1");
    assert_int_equal (zcert_save (z, fx->path), 0);
    assert_int_equal (chmod (fx->secret, 0600), 0);
    zcert_destroy (&z);
    int err = AMI_OK;
    assert_null (ami_cert_load (fx->path, &err));
    assert_int_equal (err, AMI_E_KEY);
}

static void
test_distinct_keys (void **state)
{
    fixture_t *fx = *state;
    fx->cert = ami_cert_new ("meter", "MTR-1", NULL);
    fx->other = ami_cert_new ("meter", "MTR-1", NULL);
    assert_non_null (fx->cert);
    assert_non_null (fx->other);
    assert_string_not_equal (ami_cert_public_txt (fx->cert), ami_cert_public_txt (fx->other));
    assert_string_not_equal (zcert_secret_txt (ami_cert_zcert (fx->cert)),
                             zcert_secret_txt (ami_cert_zcert (fx->other)));
    //  and no key is all zeros (what zcert_new gives without CURVE)
    static const uint8_t zero [32] = { 0 };
    assert_memory_not_equal (ami_cert_public_key (fx->cert), zero, 32);
    assert_true (ami_cert_has_secret (fx->cert));
}

static void
test_meta_rules (void **state)
{
    fixture_t *fx = *state;
    int err = AMI_OK;
    assert_null (ami_cert_new ("Meter", "M1", &err));       //  upper case
    assert_int_equal (err, AMI_E_RANGE);
    assert_null (ami_cert_new ("", "M1", &err));
    assert_int_equal (err, AMI_E_RANGE);
    assert_null (ami_cert_new ("meter", "", &err));
    assert_int_equal (err, AMI_E_RANGE);
    assert_null (ami_cert_new ("meter", "M 1", &err));
    assert_int_equal (err, AMI_E_RANGE);
    assert_null (ami_cert_new ("meter", "-M1", &err));
    assert_int_equal (err, AMI_E_RANGE);

    fx->cert = ami_cert_new ("operator", "alice", &err);
    assert_non_null (fx->cert);
    //  replacing works (zcert_set_meta alone would keep the old value)
    assert_int_equal (ami_cert_set_meta (fx->cert, "node-id", "bob"), AMI_OK);
    assert_string_equal (ami_cert_node_id (fx->cert), "bob");
    assert_int_equal (ami_cert_set_meta (fx->cert, "site", "north"), AMI_OK);
    assert_int_equal (ami_cert_set_meta (fx->cert, "site", "south"), AMI_OK);
    assert_string_equal (ami_cert_meta (fx->cert, "site"), "south");
    assert_true (ami_cert_has_secret (fx->cert));

    //  refused: reserved names (any case), bad names and values, bad role
    assert_int_equal (ami_cert_set_meta (fx->cert, "User-Id", "x"), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "user-id", "x"), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "Socket-Type", "x"), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "a b", "x"), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "a/b", "x"), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "note", "say \"hi\""), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "note", "new\nline"), AMI_E_RANGE);
    assert_int_equal (ami_cert_set_meta (fx->cert, "role", "Bad Role"), AMI_E_RANGE);
    assert_string_equal (ami_cert_role (fx->cert), "operator");

    //  the metadata budget (zauth's 512-byte buffer)
    char value [201];
    memset (value, 'v', 200);
    value [200] = 0;
    assert_int_equal (ami_cert_set_meta (fx->cert, "a", value), AMI_OK);
    assert_int_equal (ami_cert_set_meta (fx->cert, "b", value), AMI_E_RANGE);
    assert_null (ami_cert_meta (fx->cert, "b"));

    //  and it all survives a save/load round trip
    assert_int_equal (ami_cert_save (fx->cert, fx->path), AMI_OK);
    fx->other = ami_cert_load (fx->path, &err);
    assert_non_null (fx->other);
    assert_string_equal (ami_cert_node_id (fx->other), "bob");
    assert_string_equal (ami_cert_meta (fx->other, "site"), "south");
    assert_string_equal (ami_cert_meta (fx->other, "a"), value);
}

static void
test_public_holding_secret (void **state)
{
    fixture_t *fx = *state;
    s_save_fresh (fx);
    //  Somebody hands out the secret file as if it were public
    int err = -1;
    s_capture_start (fx);
    fx->other = ami_cert_load_public (fx->secret, &err);
    char *log = s_capture_end (fx);
    assert_non_null (fx->other);
    assert_int_equal (err, AMI_OK);
    assert_false (ami_cert_has_secret (fx->other));
    assert_non_null (strstr (log, "holds a secret key"));
    free (log);
    //  the secret was not kept: the zcert holds the all-zero key (Z85 "0"s)
    assert_string_equal (zcert_secret_txt (ami_cert_zcert (fx->other)),
                         "0000000000000000000000000000000000000000");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_roundtrip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_file_modes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_perms_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_not_regular_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_missing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_garbage, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_missing_metadata, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_distinct_keys, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_meta_rules, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_public_holding_secret, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
