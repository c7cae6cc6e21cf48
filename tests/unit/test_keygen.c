/*  test_keygen.c - the command-line tools' code: ami-keygen's provisioning
    (SEC-KEY-1, SEC-AUTH-1, SEC-AUTH-2: no default keys, one key per node
    and operator, allow-lists with exactly the peers each server needs,
    secrets 0600) and amictl's JSON writer, renderings and MDMS client
    (FUN-READ-2: correlation ids, distinct errors, timeouts, refusals).

    The tools are programs (the sources in tools/NAME link into bin/NAME, not into
    a library), so this test compiles their sources in directly; none of
    them has main() except main.c / amictl.c, which are not included. The
    process-level behaviour of both binaries is covered by
    tests/integration/demo_test.sh.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_meter_keys.h"
#include "ami_test.h"

#include "../../tools/ami-keygen/keygen.c"
#include "../../tools/amictl/amictl_json.c"
#include "../../tools/amictl/amictl_print.c"
#include "ami_client.h"

/* ---------------------------------------------------------------------- */
/*  Helpers                                                                */

static char *
h_path (const char *dir, const char *fmt, ...)
{
    char rel [512];
    va_list args;
    va_start (args, fmt);
    vsnprintf (rel, sizeof rel, fmt, args);
    va_end (args);
    return ami_test_path (dir, rel);
}

static bool
h_exists (const char *dir, const char *rel)
{
    char *p = ami_test_path (dir, rel);
    struct stat st;
    bool yes = stat (p, &st) == 0;
    free (p);
    return yes;
}

static mode_t
h_mode (const char *dir, const char *rel)
{
    char *p = ami_test_path (dir, rel);
    struct stat st;
    mode_t mode = stat (p, &st) == 0 ? st.st_mode & 07777 : (mode_t) -1;
    free (p);
    return mode;
}

static size_t
h_count_files (const char *dir, const char *rel)
{
    char *p = ami_test_path (dir, rel);
    zdir_t *d = zdir_new (p, NULL);
    size_t n = d ? zdir_count (d) : 0;
    zdir_destroy (&d);
    free (p);
    return n;
}

/* The line of meters.tsv for meter number n (1-based), or "" */
static void
h_registry_line (const char *dir, uint32_t n, char *out, size_t cap)
{
    char *p = ami_test_path (dir, "app/meters.tsv");
    FILE *f = fopen (p, "r");
    out [0] = '\0';
    for (uint32_t i = 1; f && fgets (out, (int) cap, f); i++)
        if (i == n)
            break;
    if (f)
        fclose (f);
    free (p);
}

static void
h_default_init (const char *dir)
{
    keygen_topology_t topo;
    keygen_topology_default (&topo);
    assert_int_equal (keygen_init (dir, &topo, false), KEYGEN_OK);
}

/* Provision dir again with the defaults (--force): every key new. */
static int
h_reinit (const char *dir)
{
    keygen_topology_t topo;
    keygen_topology_default (&topo);
    return keygen_init (dir, &topo, true);
}

/* ---------------------------------------------------------------------- */
/*  ami-keygen                                                             */

static void
test_init_layout (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-layout");
    assert_non_null (dir);
    h_default_init (dir);

    const char *nodes [] = { "mdms", "broker", "headend-1", "headend-2", "agg-1", "agg-2",
                             "fleet-1", "fleet-2", NULL };
    const char *roles [] = { "mdms", "broker", "headend", "headend", "aggregator", "aggregator",
                             "meter", "meter", NULL };
    for (int i = 0; nodes [i]; i++) {
        char rel [64];
        snprintf (rel, sizeof rel, "nodes/%s.cert_secret", nodes [i]);
        assert_int_equal (h_mode (dir, rel), 0600);
        snprintf (rel, sizeof rel, "nodes/%s.cert", nodes [i]);
        assert_int_equal (h_mode (dir, rel), 0644);
        char *p = ami_test_path (dir, rel);
        int err = 0;
        ami_cert_t *cert = ami_cert_load (p, &err);
        assert_non_null (cert);
        assert_string_equal (ami_cert_role (cert), roles [i]);
        assert_string_equal (ami_cert_node_id (cert), nodes [i]);
        ami_cert_destroy (&cert);
        free (p);
    }
    //  operators carry their IEC 62351-8 role
    char *p = ami_test_path (dir, "operators/viewer.cert");
    int err = 0;
    ami_cert_t *viewer = ami_cert_load (p, &err);
    assert_non_null (viewer);
    assert_string_equal (ami_cert_role (viewer), "operator");
    assert_string_equal (ami_cert_meta (viewer, "ami-role"), "VIEWER");
    ami_cert_destroy (&viewer);
    free (p);
    assert_int_equal (h_mode (dir, "operators/secadm.cert_secret"), 0600);

    //  allow-lists: exactly the peers of docs/SERVICES.md, public files only
    assert_int_equal (h_count_files (dir, "allow/broker"), 3);
    assert_true (h_exists (dir, "allow/broker/mdms.cert"));
    assert_true (h_exists (dir, "allow/broker/headend-2.cert"));
    assert_int_equal (h_count_files (dir, "allow/headend-1"), 2);
    assert_true (h_exists (dir, "allow/headend-1/agg-2.cert"));
    assert_int_equal (h_count_files (dir, "allow/agg-1"), 1);
    assert_true (h_exists (dir, "allow/agg-1/fleet-1.cert"));
    assert_true (h_exists (dir, "allow/agg-2/fleet-2.cert"));
    assert_int_equal (h_count_files (dir, "allow/mdms"), 6);
    assert_true (h_exists (dir, "allow/mdms/operator.cert"));
    assert_false (h_exists (dir, "allow/mdms/mdms.cert"));
    assert_false (h_exists (dir, "allow/fleet-1"));

    //  application keys; the fleets' copy of the MDMS keys is public only
    assert_int_equal (h_mode (dir, "app/mdms-sign.cert_secret"), 0600);
    assert_int_equal (h_mode (dir, "app/fleet-2.cert_secret"), 0600);
    assert_int_equal (h_count_files (dir, "app/mdms-pub"), 2);
    ami_e2e_mdms_t full, pub;
    char *app = ami_test_path (dir, "app"), *pubdir = ami_test_path (dir, "app/mdms-pub");
    assert_int_equal (ami_e2e_mdms_load (&full, app, true), AMI_OK);
    assert_int_equal (ami_e2e_mdms_load (&pub, pubdir, false), AMI_OK);
    assert_memory_equal (full.sign_pk, pub.sign_pk, sizeof full.sign_pk);
    assert_memory_equal (full.box_pk, pub.box_pk, sizeof full.box_pk);
    ami_e2e_mdms_wipe (&full);
    free (app);
    free (pubdir);

    //  the MDMS data key: a kdf secret of node-id mdms, 0600, kept in app/
    //  and never in the fleets' public copy; not any fleet's secret
    assert_int_equal (h_mode (dir, "app/mdms-data.cert_secret"), 0600);
    assert_int_equal (h_mode (dir, "app/mdms-data.cert"), 0644);
    assert_false (h_exists (dir, "app/mdms-pub/mdms-data.cert"));
    uint8_t data_key [AMI_E2E_SEED_SIZE], fleet_key [AMI_E2E_SEED_SIZE];
    char *data_path = ami_test_path (dir, "app/mdms-data.cert");
    assert_int_equal (ami_e2e_kdf_load (data_path, data_key), AMI_OK);
    ami_cert_t *data_cert = ami_cert_load (data_path, &err);
    assert_non_null (data_cert);
    assert_string_equal (ami_cert_node_id (data_cert), "mdms");
    assert_string_equal (ami_cert_key_type (data_cert), "kdf");
    ami_cert_destroy (&data_cert);
    free (data_path);

    //  the registry: meter 150 is fleet-2's, behind agg-2, with the key its
    //  fleet secret derives for number 150, and its synthetic customer
    char line [512], hex [65];
    uint8_t seed [AMI_E2E_SEED_SIZE], pk [32];
    h_registry_line (dir, 150, line, sizeof line);
    char *fleet2 = ami_test_path (dir, "app/fleet-2.cert");
    assert_int_equal (ami_e2e_kdf_load (fleet2, seed), AMI_OK);
    memcpy (fleet_key, seed, sizeof fleet_key);
    assert_memory_not_equal (data_key, fleet_key, sizeof data_key);
    ami_e2e_meter_keypair (seed, 150, pk, NULL);
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    char name [AMI_MAX_CUSTOMER_NAME + 1], address [AMI_MAX_TEXT + 1], account [AMI_MAX_ID + 1];
    keygen_customer (150, name, address, account);
    assert_string_equal (account, "ACC-00000150");
    char expect [512];
    snprintf (expect, sizeof expect, "MTR-000150\tfleet-2\tagg-2\t%s\t%s\t%s\tACC-00000150\n",
              hex, name, address);
    assert_string_equal (line, expect);
    //  exactly 7 TAB-separated columns, the customer ones not empty
    int tabs = 0;
    for (const char *c = line; *c; c++)
        tabs += *c == '\t';
    assert_int_equal (tabs, 6);
    assert_true (strlen (name) > 3 && strlen (address) > 10);
    h_registry_line (dir, 1, line, sizeof line);
    assert_true (strncmp (line, "MTR-000001\tfleet-1\tagg-1\t", 25) == 0);
    assert_non_null (strstr (line, "\tACC-00000001\n"));
    free (fleet2);

    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    ami_test_rmtree (dir);
    free (dir);
}

static void
test_init_refuses_and_force (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-force");
    h_default_init (dir);
    char *p = ami_test_path (dir, "nodes/mdms.cert");
    int err = 0;
    ami_cert_t *before = ami_cert_load_public (p, &err);
    assert_non_null (before);
    char *data_path = ami_test_path (dir, "app/mdms-data.cert");
    uint8_t data_before [AMI_E2E_SEED_SIZE], data_after [AMI_E2E_SEED_SIZE];
    assert_int_equal (ami_e2e_kdf_load (data_path, data_before), AMI_OK);

    keygen_topology_t topo;
    keygen_topology_default (&topo);
    assert_int_equal (keygen_init (dir, &topo, false), KEYGEN_EXISTS);
    ami_cert_t *same = ami_cert_load_public (p, &err);
    assert_memory_equal (ami_cert_public_key (before), ami_cert_public_key (same), 32);

    //  --force: every key is new, and stale allow-list entries are gone
    topo.fleets = 3;
    topo.operators = "alice:OPERATOR";
    assert_int_equal (keygen_init (dir, &topo, true), KEYGEN_OK);
    assert_int_equal (ami_e2e_kdf_load (data_path, data_after), AMI_OK);
    assert_memory_not_equal (data_before, data_after, sizeof data_before);
    free (data_path);
    ami_cert_t *after = ami_cert_load_public (p, &err);
    assert_non_null (after);
    assert_memory_not_equal (ami_cert_public_key (before), ami_cert_public_key (after), 32);
    assert_false (h_exists (dir, "operators/viewer.cert"));
    assert_int_equal (h_count_files (dir, "allow/mdms"), 3);       //  2 head ends + alice
    assert_true (h_exists (dir, "allow/agg-1/fleet-3.cert"));       //  fleet 3 -> agg 1
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    ami_cert_destroy (&before);
    ami_cert_destroy (&same);
    ami_cert_destroy (&after);
    //  ... the MDMS data key too (documented: an old audit log no longer
    //  verifies with it)
    free (p);
    ami_test_rmtree (dir);
    free (dir);
}

static void
test_topology_mapping (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-topo");
    keygen_topology_t topo;
    keygen_topology_default (&topo);
    topo.headends = 3;
    topo.aggregators = 3;
    topo.fleets = 5;
    topo.meters_per_fleet = 7;
    topo.operators = "";
    assert_int_equal (keygen_init (dir, &topo, false), KEYGEN_OK);
    //  fleet i -> aggregator ((i-1) mod 3)+1: agg-1 has fleets 1 and 4
    assert_int_equal (h_count_files (dir, "allow/agg-1"), 2);
    assert_true (h_exists (dir, "allow/agg-1/fleet-4.cert"));
    assert_true (h_exists (dir, "allow/agg-2/fleet-5.cert"));
    assert_int_equal (h_count_files (dir, "allow/agg-3"), 1);
    assert_int_equal (h_count_files (dir, "allow/headend-3"), 3);
    assert_int_equal (h_count_files (dir, "allow/mdms"), 3);        //  no operator
    char line [256];
    h_registry_line (dir, 29, line, sizeof line);                   //  fleet 5: 29..35
    assert_true (strncmp (line, "MTR-000029\tfleet-5\tagg-2\t", 25) == 0);
    h_registry_line (dir, 35, line, sizeof line);
    assert_true (strncmp (line, "MTR-000035\tfleet-5\tagg-2\t", 25) == 0);
    char *tsv = ami_test_path (dir, "app/meters.tsv");
    FILE *f = fopen (tsv, "r");
    size_t lines = 0;
    for (int c = f ? fgetc (f) : EOF; c != EOF; c = fgetc (f))
        lines += c == '\n';
    if (f)
        fclose (f);
    assert_int_equal (lines, 35);                                   //  5 fleets x 7 meters
    free (tsv);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    ami_test_rmtree (dir);
    free (dir);
}

static void
test_bad_arguments (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-args");
    char *sub = ami_test_path (dir, "keys");
    keygen_topology_t topo;
    keygen_topology_default (&topo);
    topo.fleets = 1;                            //  fewer fleets than aggregators
    assert_int_equal (keygen_init (sub, &topo, false), KEYGEN_USAGE);
    keygen_topology_default (&topo);
    topo.headends = 0;
    assert_int_equal (keygen_init (sub, &topo, false), KEYGEN_USAGE);
    keygen_topology_default (&topo);
    topo.meters_per_fleet = KEYGEN_MAX_METERS_PER + 1;
    assert_int_equal (keygen_init (sub, &topo, false), KEYGEN_USAGE);
    const char *bad_ops [] = { "alice", "alice:ROOT", "alice:VIEWER,alice:OPERATOR",
                               "-x:VIEWER", "fleet-1:VIEWER", "a/b:VIEWER",
                               "abcdefghijabcdefghijabcdefghijabc:VIEWER", NULL };
    for (int i = 0; bad_ops [i]; i++) {
        keygen_topology_default (&topo);
        topo.operators = bad_ops [i];
        assert_int_equal (keygen_init (sub, &topo, false), KEYGEN_USAGE);
    }
    //  nothing was written by the refused attempts
    assert_false (h_exists (dir, "keys/nodes"));
    //  lower-case role names are accepted and stored upper-case
    keygen_topology_default (&topo);
    topo.operators = "bob:viewer";
    assert_int_equal (keygen_init (sub, &topo, false), KEYGEN_OK);
    assert_true (keygen_role_valid ("AUDITOR"));
    assert_false (keygen_role_valid ("auditor"));
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);
    free (sub);
    ami_test_rmtree (dir);
    free (dir);
}

static void
test_check_finds_damage (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-check");
    char *sub = ami_test_path (dir, "keys");
    assert_int_equal (keygen_check (sub, true), KEYGEN_ABSENT);
    assert_int_equal (keygen_operator (sub, "alice", "VIEWER", false), KEYGEN_ABSENT);
    h_default_init (sub);
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);

    //  a secret readable by others
    char *secret = h_path (sub, "nodes/headend-1.cert_secret");
    assert_int_equal (chmod (secret, 0640), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    assert_int_equal (chmod (secret, 0600), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);

    //  an allow-list missing a peer, then one with an intruder
    char *allow = h_path (sub, "allow/broker/headend-2.cert");
    char *saved = h_path (sub, "saved.cert");
    assert_int_equal (rename (allow, saved), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    assert_int_equal (rename (saved, allow), 0);
    int err = 0;
    ami_cert_t *intruder = ami_cert_new ("operator", "mallory", &err);
    char *extra = h_path (sub, "allow/broker/mallory.cert");
    assert_int_equal (ami_cert_save_public (intruder, extra), AMI_OK);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    assert_int_equal (unlink (extra), 0);
    //  ... or a peer's entry swapped for another key
    char *swapped = h_path (sub, "allow/headend-2/agg-1.cert");
    assert_int_equal (ami_cert_save_public (intruder, swapped), AMI_OK);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    char *agg1 = h_path (sub, "nodes/agg-1.cert");
    ami_cert_t *real = ami_cert_load_public (agg1, &err);
    assert_int_equal (ami_cert_save_public (real, swapped), AMI_OK);
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);

    //  a registry key that is not the one the fleet secret derives
    char *tsv = h_path (sub, "app/meters.tsv");
    FILE *f = fopen (tsv, "r+");
    assert_non_null (f);
    assert_int_equal (fseek (f, 30, SEEK_SET), 0);  //  inside line 1's key
    int c = fgetc (f);
    assert_int_equal (fseek (f, 30, SEEK_SET), 0);
    fputc (c == 'a' ? 'b' : 'a', f);
    fclose (f);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);

    //  a customer column edited by hand (the key columns untouched)
    assert_int_equal (h_reinit (sub), KEYGEN_OK);
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);
    char line [512];
    h_registry_line (sub, 1, line, sizeof line);
    char *acc = strstr (line, "\tACC-");
    assert_non_null (acc);
    f = fopen (tsv, "r+");
    assert_non_null (f);
    assert_int_equal (fseek (f, (long) (acc - line) + 5, SEEK_SET), 0);    //  "ACC-0" -> "ACC-9"
    fputc ('9', f);
    fclose (f);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);

    //  the MDMS data key: readable by others, missing, or its public half
    //  not matching its secret
    assert_int_equal (h_reinit (sub), KEYGEN_OK);
    char *data_secret = h_path (sub, "app/mdms-data.cert_secret");
    char *data_public = h_path (sub, "app/mdms-data.cert");
    char *fleet1 = h_path (sub, "app/fleet-1.cert");
    assert_int_equal (chmod (data_secret, 0644), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    assert_int_equal (chmod (data_secret, 0600), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);
    char *data_saved = h_path (sub, "data.saved");
    assert_int_equal (rename (data_secret, data_saved), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    assert_int_equal (rename (data_saved, data_secret), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_OK);
    ami_cert_t *other = ami_cert_load_public (fleet1, &err);       //  another kdf key
    assert_non_null (other);
    assert_int_equal (ami_cert_save_public (other, data_public), AMI_OK);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);
    ami_cert_destroy (&other);
    free (data_secret); free (data_public); free (fleet1); free (data_saved);

    //  an interrupted init: nodes/ but no topology.cfg
    char *topology = h_path (sub, "topology.cfg");
    assert_int_equal (unlink (topology), 0);
    assert_int_equal (keygen_check (sub, true), KEYGEN_FAILED);

    ami_cert_destroy (&intruder);
    ami_cert_destroy (&real);
    free (secret); free (allow); free (saved); free (extra); free (swapped);
    free (agg1); free (tsv); free (topology); free (sub);
    ami_test_rmtree (dir);
    free (dir);
}

static void
test_add_operator (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-operator");
    h_default_init (dir);
    assert_int_equal (keygen_operator (dir, "alice", "secadm", false), KEYGEN_OK);
    assert_int_equal (h_mode (dir, "operators/alice.cert_secret"), 0600);
    assert_true (h_exists (dir, "allow/mdms/alice.cert"));
    assert_int_equal (h_count_files (dir, "allow/mdms"), 7);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);

    char *p = ami_test_path (dir, "allow/mdms/alice.cert");
    int err = 0;
    ami_cert_t *first = ami_cert_load_public (p, &err);
    assert_string_equal (ami_cert_meta (first, "ami-role"), "SECADM");
    assert_int_equal (keygen_operator (dir, "alice", "VIEWER", false), KEYGEN_EXISTS);
    assert_int_equal (keygen_operator (dir, "viewer", "VIEWER", false), KEYGEN_EXISTS);
    //  rotation: a new key, the same single allow-list entry
    assert_int_equal (keygen_operator (dir, "alice", "VIEWER", true), KEYGEN_OK);
    ami_cert_t *second = ami_cert_load_public (p, &err);
    assert_memory_not_equal (ami_cert_public_key (first), ami_cert_public_key (second), 32);
    assert_string_equal (ami_cert_meta (second, "ami-role"), "VIEWER");
    assert_int_equal (h_count_files (dir, "allow/mdms"), 7);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);

    assert_int_equal (keygen_operator (dir, "bob", "ROOT", false), KEYGEN_USAGE);
    assert_int_equal (keygen_operator (dir, "agg-1", "VIEWER", false), KEYGEN_USAGE);
    assert_int_equal (keygen_operator (dir, "bad id", "VIEWER", false), KEYGEN_USAGE);
    assert_int_equal (h_count_files (dir, "allow/mdms"), 7);

    //  the MDMS's ZAP handler accepts the result
    char *allow = ami_test_path (dir, "allow/mdms");
    ami_auth_t *auth = ami_auth_new (allow, &err);
    assert_non_null (auth);
    assert_int_equal (ami_auth_count (auth), 7);
    ami_auth_destroy (&auth);

    ami_cert_destroy (&first);
    ami_cert_destroy (&second);
    free (allow);
    free (p);
    ami_test_rmtree (dir);
    free (dir);
}


/*  rotate / prune / revoke (SEC-KEY-2, SEC-KEY-3) */
static ami_cert_t *
h_load_pub (const char *dir, const char *rel)
{
    char *p = ami_test_path (dir, rel);
    int err = 0;
    ami_cert_t *cert = ami_cert_load_public (p, &err);
    free (p);
    return cert;
}

/* The name of the one old-key file of id in allow/<server>, or NULL. */
static char *
h_old_file (const char *dir, const char *server, const char *id)
{
    char *sdir = h_path (dir, "allow/%s", server);
    DIR *d = opendir (sdir);
    char *found = NULL;
    struct dirent *e;
    size_t n = strlen (id);
    while (d && (e = readdir (d)))
        if (strncmp (e->d_name, id, n) == 0 && strncmp (e->d_name + n, ".old-", 5) == 0) {
            assert_null (found);
            found = h_path (sdir, "%s", e->d_name);
        }
    if (d)
        closedir (d);
    free (sdir);
    return found;
}

static void
test_rotate_prune_revoke (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-rotate");
    h_default_init (dir);
    ami_cert_t *old_op = h_load_pub (dir, "operators/operator.cert");
    ami_cert_t *old_agg = h_load_pub (dir, "nodes/agg-1.cert");
    assert_true (old_op && old_agg);

    //  bad arguments
    assert_int_equal (keygen_rotate (dir, "nobody", 60), KEYGEN_USAGE);
    assert_int_equal (keygen_rotate (dir, "../x", 60), KEYGEN_USAGE);
    assert_int_equal (keygen_rotate (dir, "operator", 0), KEYGEN_USAGE);

    //  operator: allow/mdms has the new key under the old name and the old
    //  key as operator.old-*.cert expiring in the window
    int64_t before = (int64_t) time (NULL);
    assert_int_equal (keygen_rotate (dir, "operator", 600), KEYGEN_OK);
    ami_cert_t *new_op = h_load_pub (dir, "operators/operator.cert");
    ami_cert_t *listed = h_load_pub (dir, "allow/mdms/operator.cert");
    assert_true (new_op && listed);
    assert_memory_not_equal (ami_cert_public_key (new_op), ami_cert_public_key (old_op), 32);
    assert_memory_equal (ami_cert_public_key (new_op), ami_cert_public_key (listed), 32);
    assert_string_equal (ami_cert_meta (new_op, "ami-role"), "OPERATOR");
    assert_null (ami_cert_meta (listed, AMI_AUTH_META_EXPIRES));
    char *old_path = h_old_file (dir, "mdms", "operator");
    assert_non_null (old_path);
    int err = 0;
    ami_cert_t *kept = ami_cert_load_public (old_path, &err);
    assert_non_null (kept);
    assert_memory_equal (ami_cert_public_key (kept), ami_cert_public_key (old_op), 32);
    int64_t expires = 0;
    assert_true (ami_auth_parse_expires (ami_cert_meta (kept, AMI_AUTH_META_EXPIRES), &expires));
    assert_true (expires >= before + 600 && expires <= (int64_t) time (NULL) + 600);
    assert_int_equal (h_mode (dir, "operators/operator.cert_secret"), 0600);
    //  the secret matches; the allow-list is one that zauth accepts
    ami_cert_t *secret = NULL;
    char *sp = ami_test_path (dir, "operators/operator.cert");
    secret = ami_cert_load (sp, &err);
    assert_non_null (secret);
    free (sp);
    ami_cert_destroy (&secret);
    assert_int_equal (h_count_files (dir, "allow/mdms"), 7);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    ami_cert_destroy (&kept);

    //  prune leaves a key in its window; rotate --finish ends the window
    assert_int_equal (keygen_prune (dir, NULL), KEYGEN_OK);
    assert_true (h_exists (dir, old_path + strlen (dir) + 1));
    assert_int_equal (keygen_prune (dir, "operator"), KEYGEN_OK);
    assert_false (h_exists (dir, old_path + strlen (dir) + 1));
    assert_int_equal (h_count_files (dir, "allow/mdms"), 6);
    free (old_path);

    //  a node in several allow-lists: agg-1 is a client of both head ends.
    //  An already expired window: prune removes the old key everywhere.
    assert_int_equal (keygen_rotate (dir, "agg-1", 1), KEYGEN_OK);
    char *o1 = h_old_file (dir, "headend-1", "agg-1");
    char *o2 = h_old_file (dir, "headend-2", "agg-1");
    assert_true (o1 && o2);
    int64_t deadline = zclock_mono () + 5000;
    while ((int64_t) time (NULL) <= before + 1 + 1 && zclock_mono () < deadline)
        zclock_sleep (50);          //  wait for the clock to pass expires
    //  (wait for the actual expiry of this rotation)
    kept = ami_cert_load_public (o1, &err);
    assert_non_null (kept);
    assert_true (ami_auth_parse_expires (ami_cert_meta (kept, AMI_AUTH_META_EXPIRES), &expires));
    ami_cert_destroy (&kept);
    while ((int64_t) time (NULL) < expires && zclock_mono () < deadline)
        zclock_sleep (50);
    assert_true ((int64_t) time (NULL) >= expires);
    assert_int_equal (keygen_check (dir, true), KEYGEN_FAILED);      //  "run prune"
    assert_int_equal (keygen_prune (dir, NULL), KEYGEN_OK);
    assert_false (h_exists (dir, o1 + strlen (dir) + 1));
    assert_false (h_exists (dir, o2 + strlen (dir) + 1));
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    free (o1);
    free (o2);

    //  revoke: removed from every allow-list, recorded, check agrees
    ami_cert_t *agg = h_load_pub (dir, "nodes/agg-1.cert");
    assert_non_null (agg);
    assert_int_equal (keygen_rotate (dir, "agg-1", 600), KEYGEN_OK);    //  an old key too
    ami_cert_t *agg2 = h_load_pub (dir, "nodes/agg-1.cert");
    assert_non_null (agg2);
    assert_int_equal (keygen_revoke (dir, "agg-1", false), KEYGEN_OK);
    assert_int_equal (h_count_files (dir, "allow/headend-1"), 1);      //  agg-2 only
    assert_int_equal (h_count_files (dir, "allow/headend-2"), 1);
    assert_false (h_exists (dir, "allow/headend-1/agg-1.cert"));
    char *rp = ami_test_path (dir, KEYGEN_REVOKED_FILE);
    FILE *f = fopen (rp, "r");
    assert_non_null (f);
    char text [2048];
    size_t n = fread (text, 1, sizeof text - 1, f);
    text [n] = '\0';
    fclose (f);
    free (rp);
    assert_non_null (strstr (text, ami_cert_public_txt (agg)));         //  old key
    assert_non_null (strstr (text, ami_cert_public_txt (agg2)));        //  current key
    assert_non_null (strstr (text, "\tagg-1\t"));
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    assert_int_equal (keygen_revoke (dir, "agg-1", false), KEYGEN_OK);   //  again: no-op
    //  a revoked key put back is found by check
    char *back = ami_test_path (dir, "allow/headend-1/agg-1.cert");
    assert_int_equal (ami_cert_save_public (agg2, back), AMI_OK);
    assert_int_equal (keygen_check (dir, true), KEYGEN_FAILED);
    assert_int_equal (unlink (back), 0);
    free (back);

    //  the last SECADM is kept unless --force; the broker is only a server
    assert_int_equal (keygen_revoke (dir, "secadm", false), KEYGEN_REFUSED);
    assert_true (h_exists (dir, "allow/mdms/secadm.cert"));
    assert_int_equal (keygen_operator (dir, "sec2", "SECADM", false), KEYGEN_OK);
    assert_int_equal (keygen_revoke (dir, "secadm", false), KEYGEN_OK);
    assert_false (h_exists (dir, "allow/mdms/secadm.cert"));
    assert_int_equal (keygen_revoke (dir, "sec2", false), KEYGEN_REFUSED);
    assert_int_equal (keygen_revoke (dir, "sec2", true), KEYGEN_OK);
    assert_int_equal (keygen_revoke (dir, "broker", false), KEYGEN_FAILED);
    assert_int_equal (keygen_revoke (dir, "../etc", false), KEYGEN_USAGE);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);

    ami_cert_destroy (&agg);
    ami_cert_destroy (&agg2);
    ami_cert_destroy (&new_op);
    ami_cert_destroy (&listed);
    ami_cert_destroy (&old_op);
    ami_cert_destroy (&old_agg);
    ami_test_rmtree (dir);
    free (dir);
}

/*  SEC-KEY-2 (MDMS signing key): `rotate DIR mdms-sign` makes a new
    Ed25519 signing key for the MDMS (app/mdms-sign.cert(+_secret), 0600)
    and its public half in app/mdms-pub, keeps the old public key there as
    mdms-sign.old-*.cert with expires = now + window, touches nothing else
    (box key, transport keys, allow-lists); the fleets' key set
    (ami_meter_keys_load) then holds both; check accepts it; --finish
    removes the old key (the set holds only the new one); prune removes
    an expired one; the bound on old keys is enforced. */
static void
test_sec_key_2_rotate_mdms_sign (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-sign");
    h_default_init (dir);
    char *app = ami_test_path (dir, "app");
    char *pub = ami_test_path (dir, "app/mdms-pub");
    ami_e2e_mdms_t before, after, after_pub;
    assert_int_equal (ami_e2e_mdms_load (&before, app, true), AMI_OK);
    ami_cert_t *agg = h_load_pub (dir, "nodes/agg-1.cert");
    assert_non_null (agg);

    assert_int_equal (keygen_rotate (dir, "mdms-sign", 0), KEYGEN_USAGE);
    int64_t t0 = (int64_t) time (NULL);
    assert_int_equal (keygen_rotate (dir, "mdms-sign", 600), KEYGEN_OK);
    assert_int_equal (ami_e2e_mdms_load (&after, app, true), AMI_OK);
    assert_int_equal (ami_e2e_mdms_load (&after_pub, pub, false), AMI_OK);
    //  a new signing key, the MDMS's secret and the fleets' public half agree
    assert_memory_not_equal (after.sign_pk, before.sign_pk, 32);
    assert_memory_equal (after.sign_pk, after_pub.sign_pk, 32);
    //  the box key and transport keys did not change
    assert_memory_equal (after.box_pk, before.box_pk, 32);
    ami_cert_t *agg_now = h_load_pub (dir, "nodes/agg-1.cert");
    assert_non_null (agg_now);
    assert_memory_equal (ami_cert_public_key (agg), ami_cert_public_key (agg_now), 32);
    assert_int_equal (h_mode (dir, "app/mdms-sign.cert_secret"), 0600);
    //  a command the new key signs verifies with the fleets' set, and so
    //  does one the old key signs (the window), and no other
    ami_meter_keys_t keys;
    char problem [AMI_METER_KEYS_PROBLEM_MAX];
    assert_int_equal (ami_meter_keys_load (&keys, pub, t0, problem, sizeof problem), AMI_OK);
    assert_string_equal (problem, "");
    assert_int_equal (keys.count, 2);
    assert_memory_equal (keys.pk [0], after.sign_pk, 32);
    assert_memory_equal (keys.pk [1], before.sign_pk, 32);
    assert_true (keys.expires [1] >= t0 + 600 && keys.expires [1] <= (int64_t) time (NULL) + 600);
    ami_msg_t *msg = ami_msg_new ();
    assert_non_null (msg);
    ami_msg_reset (msg, AMI_MSG_READ_REQ);
    snprintf (msg->read_req.meter_id, sizeof msg->read_req.meter_id, "MTR-000001");
    randombytes_buf (msg->read_req.request_id, AMI_REQUEST_ID_SIZE);
    msg->read_req.counter = 1;
    msg->read_req.issued_ms = (uint64_t) zclock_time ();
    msg->read_req.expires_ms = msg->read_req.issued_ms + 10000;
    uint8_t frame [512];
    size_t len = 0, which = 0;
    assert_int_equal (ami_msg_encode (msg, frame, sizeof frame, &len), AMI_OK);
    assert_int_equal (ami_e2e_sign (frame, len, before.sign_sk), AMI_OK);
    assert_int_equal (ami_meter_keys_verify (&keys, frame, len, t0, &which), AMI_OK);
    assert_int_equal (which, 1);
    assert_int_equal (ami_e2e_sign (frame, len, after.sign_sk), AMI_OK);
    assert_int_equal (ami_meter_keys_verify (&keys, frame, len, t0, &which), AMI_OK);
    assert_int_equal (which, 0);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);

    //  prune keeps a key in its window; --finish removes it
    assert_int_equal (keygen_prune (dir, NULL), KEYGEN_OK);
    assert_int_equal (ami_meter_keys_load (&keys, pub, t0, problem, sizeof problem), AMI_OK);
    assert_int_equal (keys.count, 2);
    assert_int_equal (keygen_prune (dir, "mdms-sign"), KEYGEN_OK);
    assert_int_equal (ami_meter_keys_load (&keys, pub, t0, problem, sizeof problem), AMI_OK);
    assert_int_equal (keys.count, 1);
    assert_memory_equal (keys.pk [0], after.sign_pk, 32);
    assert_int_equal (h_count_files (dir, "app/mdms-pub"), 2);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);

    //  rotate --finish of the MDMS transport key leaves signing keys alone
    assert_int_equal (keygen_rotate (dir, "mdms-sign", 600), KEYGEN_OK);
    assert_int_equal (keygen_prune (dir, "mdms"), KEYGEN_OK);
    assert_int_equal (h_count_files (dir, "app/mdms-pub"), 3);
    //  the bound: fleets accept AMI_METER_KEYS_MAX keys, so at most
    //  AMI_METER_KEYS_MAX - 1 old ones (each rotation in its own second
    //  or with a -N suffix: both are fine)
    for (int i = 2; i < AMI_METER_KEYS_MAX; i++)
        assert_int_equal (keygen_rotate (dir, "mdms-sign", 600), KEYGEN_OK);
    assert_int_equal (h_count_files (dir, "app/mdms-pub"), 1 + AMI_METER_KEYS_MAX);
    assert_int_equal (keygen_rotate (dir, "mdms-sign", 600), KEYGEN_FAILED);
    assert_int_equal (ami_meter_keys_load (&keys, pub, t0, problem, sizeof problem), AMI_OK);
    assert_int_equal (keys.count, AMI_METER_KEYS_MAX);
    assert_int_equal (keys.ignored, 0);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    assert_int_equal (keygen_prune (dir, "mdms-sign"), KEYGEN_OK);
    assert_int_equal (h_count_files (dir, "app/mdms-pub"), 2);

    //  an expired window: check says "run prune", prune removes it
    assert_int_equal (keygen_rotate (dir, "mdms-sign", 1), KEYGEN_OK);
    int64_t deadline = zclock_mono () + 5000;
    int64_t until = (int64_t) time (NULL) + 1;
    while ((int64_t) time (NULL) <= until && zclock_mono () < deadline)
        zclock_sleep (50);
    assert_true ((int64_t) time (NULL) > until);
    assert_int_equal (keygen_check (dir, true), KEYGEN_FAILED);
    assert_int_equal (ami_meter_keys_load (&keys, pub, (int64_t) time (NULL), problem,
                                           sizeof problem), AMI_OK);
    assert_int_equal (keys.count, 1);           //  fleets ignore it already
    assert_int_equal (keygen_prune (dir, NULL), KEYGEN_OK);
    assert_int_equal (h_count_files (dir, "app/mdms-pub"), 2);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);

    ami_msg_destroy (&msg);
    ami_cert_destroy (&agg);
    ami_cert_destroy (&agg_now);
    ami_e2e_mdms_wipe (&before);
    ami_e2e_mdms_wipe (&after);
    free (app);
    free (pub);
    ami_test_rmtree (dir);
    free (dir);
}

/*  The synthetic customers: a pure function of the meter number, always
    valid for the wire (API_CUSTOMER) and for meters.tsv, and varied. */
static void
test_customer_synthetic (void **state)
{
    (void) state;
    ami_msg_t *msg = ami_msg_new ();
    uint8_t *buf = malloc (AMI_MAX_FRAME);
    assert_non_null (msg);
    assert_non_null (buf);
    zhashx_t *names = zhashx_new (), *people = zhashx_new ();
    bool non_ascii = false;
    static const uint32_t extremes [] = { 0, 1, 999999, 1000000, 9999999, 10000000, UINT32_MAX };
    for (uint32_t k = 0; k < 2000 + sizeof extremes / sizeof extremes [0]; k++) {
        uint32_t n = k < 2000 ? k + 1 : extremes [k - 2000];
        char name [AMI_MAX_CUSTOMER_NAME + 1], address [AMI_MAX_TEXT + 1], account [AMI_MAX_ID + 1];
        char name2 [AMI_MAX_CUSTOMER_NAME + 1], address2 [AMI_MAX_TEXT + 1], account2 [AMI_MAX_ID + 1];
        keygen_customer (n, name, address, account);
        keygen_customer (n, name2, address2, account2);
        assert_string_equal (name, name2);             //  deterministic
        assert_string_equal (address, address2);
        assert_string_equal (account, account2);
        char want [AMI_MAX_ID + 1];
        snprintf (want, sizeof want, "ACC-%08u", n);
        assert_string_equal (account, want);
        //  meters.tsv syntax: no TAB, no '#', no control character
        for (const char *t = name; *t; t++) {
            assert_true ((unsigned char) *t >= 0x20 && *t != '#' && *t != 0x7f);
            non_ascii = non_ascii || (unsigned char) *t >= 0x80;
        }
        for (const char *t = address; *t; t++)
            assert_true ((unsigned char) *t >= 0x20 && *t != '#' && *t != 0x7f);
        //  the wire accepts it (name 1..64 UTF-8, address 0..256, account id)
        ami_msg_reset (msg, AMI_MSG_API_CUSTOMER);
        snprintf (msg->api_customer.meter_id, sizeof msg->api_customer.meter_id, "MTR-%06u", n % 1000000);
        memcpy (msg->api_customer.name, name, sizeof name);
        memcpy (msg->api_customer.address, address, sizeof address);
        memcpy (msg->api_customer.account, account, sizeof account);
        size_t len = 0;
        assert_int_equal (ami_msg_encode (msg, buf, AMI_MAX_FRAME, &len), AMI_OK);
        zhashx_insert (names, name, (void *) 1);
        char person [AMI_MAX_CUSTOMER_NAME + AMI_MAX_TEXT + 2];
        snprintf (person, sizeof person, "%s|%s", name, address);
        zhashx_insert (people, person, (void *) 1);
    }
    //  varied: hundreds of names, and name + address nearly never repeat
    assert_true (zhashx_size (names) > 500);
    assert_true (zhashx_size (people) > 1990);
    assert_true (non_ascii);
    //  neighbours differ
    char a [AMI_MAX_CUSTOMER_NAME + 1], b [AMI_MAX_CUSTOMER_NAME + 1], x [AMI_MAX_TEXT + 1],
         y [AMI_MAX_TEXT + 1], acc [AMI_MAX_ID + 1];
    keygen_customer (150, a, x, acc);
    keygen_customer (151, b, y, acc);
    assert_true (strcmp (a, b) != 0 || strcmp (x, y) != 0);
    zhashx_destroy (&names);
    zhashx_destroy (&people);
    free (buf);
    ami_msg_destroy (&msg);
}

/* ---------------------------------------------------------------------- */
/*  amictl: JSON                                                           */

static void
h_escape_is (const char *in, size_t len, const char *expect)
{
    char *out = amictl_json_escape (in, len);
    assert_non_null (out);
    assert_string_equal (out, expect);
    free (out);
}

static void
test_json_escape (void **state)
{
    (void) state;
    h_escape_is ("", 0, "");
    h_escape_is ("MTR-000150", 10, "MTR-000150");
    h_escape_is ("say \"hi\"\\", 9, "say \\\"hi\\\"\\\\");
    h_escape_is ("a\nb\tc\rd\be\ff", 11, "a\\nb\\tc\\rd\\be\\ff");
    h_escape_is ("\x01\x1f\x7f", 3, "\\u0001\\u001f\x7f");
    h_escape_is ("nul\0x", 5, "nul\\u0000x");           //  embedded NUL kept, escaped
    h_escape_is ("/", 1, "/");
    //  valid UTF-8 passes through: é, €, U+10FFFF
    h_escape_is ("\xc3\xa9", 2, "\xc3\xa9");
    h_escape_is ("\xe2\x82\xac", 3, "\xe2\x82\xac");
    h_escape_is ("\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf");
    //  invalid: stray continuation, 0xff, overlong '/', surrogate, > U+10FFFF,
    //  truncated sequence at the end, truncated in the middle
    h_escape_is ("\x80", 1, "\\ufffd");
    h_escape_is ("a\xff", 2, "a\\ufffd");
    h_escape_is ("\xc0\xaf", 2, "\\ufffd\\ufffd");
    h_escape_is ("\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd");
    h_escape_is ("\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd");
    h_escape_is ("\xe2\x82", 2, "\\ufffd\\ufffd");
    h_escape_is ("\xe2\x82x", 3, "\\ufffd\\ufffdx");
}

static void
test_json_writer (void **state)
{
    (void) state;
    amictl_json_t *j = amictl_json_new ();
    amictl_json_object (j, NULL);
    amictl_json_str (j, "a", "x\"y");
    amictl_json_array (j, "list");
    amictl_json_int (j, NULL, -5);
    amictl_json_uint (j, NULL, UINT64_MAX);
    amictl_json_null (j, NULL);
    amictl_json_object (j, NULL);
    amictl_json_end (j);
    amictl_json_array (j, NULL);
    amictl_json_end (j);
    amictl_json_end (j);
    amictl_json_bool (j, "ok", true);
    amictl_json_str (j, "none", NULL);
    amictl_json_object (j, "k\n");
    amictl_json_int (j, "min", INT64_MIN);
    amictl_json_end (j);
    amictl_json_end (j);
    assert_string_equal (amictl_json_text (j),
        "{\"a\":\"x\\\"y\",\"list\":[-5,18446744073709551615,null,{},[]],\"ok\":true,"
        "\"none\":null,\"k\\n\":{\"min\":-9223372036854775808}}");
    amictl_json_destroy (&j);
    assert_null (j);
    amictl_json_destroy (&j);               //  idempotent
}

/* ---------------------------------------------------------------------- */
/*  amictl: formatting                                                     */

static void
h_scaled_is (int64_t value, int8_t scaler, const char *expect)
{
    char out [AMICTL_TEXT];
    assert_string_equal (amictl_format_scaled (value, scaler, out), expect);
}

static void
test_format (void **state)
{
    (void) state;
    h_scaled_is (2301, -1, "230.1");
    h_scaled_is (2300, -1, "230.0");
    h_scaled_is (5, -3, "0.005");
    h_scaled_is (-5, -3, "-0.005");
    h_scaled_is (1234, -3, "1.234");
    h_scaled_is (123, -3, "0.123");
    h_scaled_is (0, -2, "0.00");
    h_scaled_is (12, 2, "1200");
    h_scaled_is (-12, 1, "-120");
    h_scaled_is (0, 3, "0");
    h_scaled_is (42, 0, "42");
    h_scaled_is (INT64_MIN, 0, "-9223372036854775808");
    h_scaled_is (INT64_MIN, -9, "-9223372036.854775808");
    h_scaled_is (7, 100, "7e100");

    char out [AMICTL_TEXT];
    assert_string_equal (amictl_format_time (0, true, out), "1970-01-01T00:00:00.000Z");
    assert_string_equal (amictl_format_time (1764141161123ULL, true, out),
                         "2025-11-26T07:12:41.123Z");
    assert_string_equal (amictl_format_time (1764141161123ULL, false, out),
                         "2025-11-26T07:12:41Z");
    assert_string_equal (amictl_format_duration (850, out), "850ms");
    assert_string_equal (amictl_format_duration (12345, out), "12.3s");
    assert_string_equal (amictl_format_duration (245000, out), "4m05s");
    assert_string_equal (amictl_format_duration (7380000, out), "2h03m");
    assert_string_equal (amictl_format_duration (273600000, out), "3d04h");

    const uint8_t import [6] = { 1, 0, 1, 8, 0, 255 }, volts [6] = { 1, 0, 52, 7, 0, 255 },
                  unknown [6] = { 1, 0, 99, 99, 0, 255 };
    assert_string_equal (amictl_obis_name (import), "Active energy import (+A)");
    assert_string_equal (amictl_obis_name (volts), "Voltage L2");
    assert_null (amictl_obis_name (unknown));
    assert_string_equal (amictl_unit_symbol (30), "Wh");
    assert_string_equal (amictl_unit_symbol (29), "var");
    assert_string_equal (amictl_unit_symbol (255), "none");
    assert_null (amictl_unit_symbol (200));
    assert_string_equal (amictl_state_name (AMI_STATE_DEGRADED), "DEGRADED");
    assert_string_equal (amictl_state_name (99), "UNKNOWN");

    const char *names [8];
    assert_int_equal (amictl_quality_names (0, names, 8), 1);
    assert_string_equal (names [0], "valid");
    assert_int_equal (amictl_quality_names (AMI_Q_ESTIMATED | AMI_Q_TAMPER | 0x80, names, 8), 3);
    assert_string_equal (names [0], "estimated");
    assert_string_equal (names [1], "tamper");
    assert_string_equal (names [2], "other");
}

static void
test_json_meter_readings (void **state)
{
    (void) state;
    ami_stored_reading_t *row = calloc (1, sizeof *row);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    for (int i = 0; i < AMI_REQUEST_ID_SIZE; i++)
        corr [i] = (uint8_t) (0xa0 + i);
    strcpy (row->reading.meter_id, "MTR-000150");
    memcpy (row->reading.request_id, corr, sizeof corr);
    row->reading.read_ms = 1764141161123ULL;
    row->requested_ms = 1764141161120ULL;
    row->stored_ms = 1764141161125ULL;
    row->reading.register_count = 2;
    ami_register_t *r = row->reading.registers;
    memcpy (r [0].obis, (uint8_t []) { 1, 0, 1, 8, 0, 255 }, 6);
    r [0].value = 12345;
    r [0].unit = 30;
    memcpy (r [1].obis, (uint8_t []) { 1, 0, 32, 7, 0, 255 }, 6);
    r [1].value = 2301;
    r [1].scaler = -1;
    r [1].unit = 35;
    r [1].quality = AMI_Q_ESTIMATED;

    amictl_json_t *j = amictl_json_new ();
    amictl_json_meter_readings (j, corr, row, 1);
    const char *text = amictl_json_text (j);
    assert_non_null (text);
    assert_non_null (strstr (text,
        "{\"MeterReadings\":{\"correlationId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\","
        "\"MeterReading\":[{\"Meter\":{\"mRID\":\"MTR-000150\"},"
        "\"requestId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\","
        "\"requestedDateTime\":\"2025-11-26T07:12:41.120Z\","
        "\"readDateTime\":\"2025-11-26T07:12:41.123Z\","
        "\"storedDateTime\":\"2025-11-26T07:12:41.125Z\""));
    assert_non_null (strstr (text,
        "{\"ReadingType\":{\"obis\":\"1.0.1.8.0.255\",\"name\":\"Active energy import (+A)\","
        "\"unit\":\"Wh\",\"unitCode\":30,\"powerOfTenMultiplier\":0},\"value\":12345,"
        "\"timeStamp\":\"2025-11-26T07:12:41.123Z\",\"ReadingQualities\":[{\"ref\":\"valid\"}]}"));
    assert_non_null (strstr (text, "\"powerOfTenMultiplier\":-1},\"value\":2301,"));
    assert_non_null (strstr (text, "[{\"ref\":\"estimated\"}]"));
    assert_string_equal (text + strlen (text) - 5, "]}]}}");
    amictl_json_destroy (&j);

    j = amictl_json_new ();
    amictl_json_error (j, AMI_E_UNKNOWN_METER, "no \"such\" meter", NULL, corr);
    assert_string_equal (amictl_json_text (j),
        "{\"error\":{\"code\":20,\"name\":\"AMI_E_UNKNOWN_METER\",\"message\":\"no \\\"such\\\" "
        "meter\",\"origin\":null,\"correlationId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\"}}");
    amictl_json_destroy (&j);
    free (row);
}

/* ---------------------------------------------------------------------- */
/*  amictl: audit --since times, terminal-safe text, security renderings    */

static void
h_time_is (const char *text, uint64_t expect)
{
    uint64_t out = 12345;
    //  now = 2026-11-26T08:00:00Z
    if (amictl_parse_time (text, 1795680000000ULL, &out) != 0)
        fail_msg ("'%s' should parse", text);
    if (out != expect)
        fail_msg ("'%s' gave %" PRIu64 ", expected %" PRIu64, text, out, expect);
}

static void
test_parse_time (void **state)
{
    (void) state;
    h_time_is ("2026-11-26T08:00:00Z", 1795680000000ULL);
    h_time_is ("2026-11-26T08:00:00.250Z", 1795680000250ULL);
    h_time_is ("1970-01-01T00:00:00Z", 0);
    h_time_is ("2024-02-29T23:59:59Z", 1709251199000ULL);     //  leap day
    h_time_is ("2000-03-01T00:00:00Z", 951868800000ULL);      //  after a 400-year leap
    h_time_is ("1795680000", 1795680000000ULL);               //  Unix seconds
    h_time_is ("0", 0);
    h_time_is ("-1h", 1795680000000ULL - 3600000);
    h_time_is ("-30m", 1795680000000ULL - 1800000);
    h_time_is ("-90s", 1795680000000ULL - 90000);
    h_time_is ("-2d", 1795680000000ULL - 2 * 86400000ULL);
    h_time_is ("-0h", 1795680000000ULL);
    h_time_is ("-30000d", 0);                                 //  before 1970: clamped
    static const char *bad [] = {
        "", "yesterday", "-1", "-h", "-1x", "-1h ", "+1h", "1h", "-1.5h",
        "2026-11-26", "2026-11-26T08:00:00", "2026-11-26T08:00:00+01:00",
        "2026-11-26 08:00:00Z", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z", "2026-11-26T24:00:00Z", "2026-11-26T08:60:00Z",
        "2026-11-26T08:00:60Z", "1969-12-31T23:59:59Z", "2026-11-26T08:00:00.5Z",
        "2026-11-26T08:00:00.1234Z", "2026-11-26T08:00:00Zjunk", "17956800001234",
        "253402300800", "-1234567890123h", "１２", NULL
    };
    uint64_t out = 777;
    for (int i = 0; bad [i]; i++)
        if (amictl_parse_time (bad [i], 1795680000000ULL, &out) != -1)
            fail_msg ("'%s' should be refused", bad [i]);
    assert_int_equal (out, 777);                                //  untouched
    assert_int_equal (amictl_parse_time (NULL, 0, &out), -1);
}

static void
test_safe_text (void **state)
{
    (void) state;
    char out [64];
    assert_string_equal (amictl_safe_text ("J\xc3\xb6rg Weber", out, sizeof out), "J\xc3\xb6rg Weber");
    //  escape sequences, newlines, DEL and C1 CSI (U+009B) are neutralised
    assert_string_equal (amictl_safe_text ("a\x1b[2Jb\nc\x7f", out, sizeof out), "a?[2Jb?c?");
    assert_string_equal (amictl_safe_text ("x\xc2\x9by", out, sizeof out), "x?y");
    //  invalid UTF-8: one '?' per bad byte
    assert_string_equal (amictl_safe_text ("\xff\xc0\xaf\xed\xa0\x80", out, sizeof out), "??????");
    assert_string_equal (amictl_safe_text ("\xe2\x82", out, sizeof out), "??");
    //  truncation never splits a character
    assert_string_equal (amictl_safe_text ("ab\xe2\x82\xac", out, 5), "ab");
    assert_string_equal (amictl_safe_text ("abcdef", out, 4), "abc");
    assert_string_equal (amictl_safe_text (NULL, out, sizeof out), "");
}

/* Render with fn into a string (the caller frees it). */
static char *
h_capture (void (*fn) (FILE *, const void *, const void *), const void *a, const void *b)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream (&text, &size);
    assert_non_null (f);
    fn (f, a, b);
    fclose (f);
    return text;
}

static void h_verify (FILE *f, const void *a, const void *b) { amictl_print_verify (f, a, b); }
static void h_audit_verify (FILE *f, const void *a, const void *b) { (void) b; amictl_print_audit_verify (f, a); }
static void h_customer (FILE *f, const void *a, const void *b) { (void) b; amictl_print_customer (f, a); }
static void h_audit (FILE *f, const void *a, const void *b) { amictl_print_audit (f, a, *(const size_t *) b); }

static void
test_render_security (void **state)
{
    (void) state;
    ami_api_verify_t *v = calloc (1, sizeof *v);
    ami_api_customer_t *c = calloc (1, sizeof *c);
    ami_audit_row_t *rows = calloc (2, sizeof *rows);
    assert_true (v && c && rows);
    for (int i = 0; i < AMI_REQUEST_ID_SIZE; i++)
        v->corr [i] = c->corr [i] = (uint8_t) (0xa0 + i);

    //  verify: clean, then with failures (one more than listed)
    v->checked = 1000;
    char *text = h_capture (h_verify, "MTR-000150", v);
    assert_string_equal (text, "Meter MTR-000150: 1000 stored reading(s) checked, "
                               "every proof of origin verified\n");
    free (text);
    amictl_json_t *j = amictl_json_new ();
    amictl_json_verify (j, "MTR-000150", v);
    assert_string_equal (amictl_json_text (j),
        "{\"correlationId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\",\"mRID\":\"MTR-000150\","
        "\"checked\":1000,\"failed\":0,\"intact\":true,\"failures\":[]}");
    amictl_json_destroy (&j);
    v->failed = 3;
    v->count = 2;
    v->failures [0].ref = 1764141161123ULL;
    v->failures [0].code = AMI_E_BAD_SIGNATURE;
    v->failures [1].ref = 1764142061123ULL;
    v->failures [1].code = AMI_E_DECRYPT;
    text = h_capture (h_verify, "MTR-000150", v);
    assert_non_null (strstr (text, "1000 stored reading(s) checked, 3 FAILED"));
    assert_non_null (strstr (text, "2025-11-26T07:12:41.123Z  AMI_E_BAD_SIGNATURE  "
                                   "proof of origin does not verify with the meter's registered key\n"));
    assert_non_null (strstr (text, "AMI_E_DECRYPT        sealed reading does not open\n"));
    assert_non_null (strstr (text, "... and 1 more failure(s) not listed"));
    free (text);
    j = amictl_json_new ();
    amictl_json_verify (j, "MTR-000150", v);
    assert_non_null (strstr (amictl_json_text (j),
        "\"failed\":3,\"intact\":false,\"failures\":[{\"readDateTime\":\"2025-11-26T07:12:41.123Z\","
        "\"readMs\":1764141161123,\"code\":40,\"name\":\"AMI_E_BAD_SIGNATURE\",\"reason\":"));
    amictl_json_destroy (&j);

    //  audit --verify: intact, then a removed entry (the first failure named)
    v->checked = 57;
    v->failed = 0;
    v->count = 0;
    text = h_capture (h_audit_verify, v, NULL);
    assert_string_equal (text, "audit chain intact: 57 entries\n");
    free (text);
    v->failed = 2;
    v->count = 2;
    v->failures [0].ref = 42;
    v->failures [0].code = AMI_E_NOTFOUND;
    v->failures [1].ref = 50;
    v->failures [1].code = AMI_E_BAD_SIGNATURE;
    text = h_capture (h_audit_verify, v, NULL);
    assert_non_null (strstr (text, "42         AMI_E_NOTFOUND       entry missing: removed\n"));
    assert_non_null (strstr (text, "50         AMI_E_BAD_SIGNATURE  hash mismatch: entry altered or reordered\n"));
    assert_non_null (strstr (text, "the first failure (seq 42)"));
    free (text);
    j = amictl_json_new ();
    amictl_json_verify (j, NULL, v);
    assert_string_equal (amictl_json_text (j),
        "{\"correlationId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\",\"scope\":\"audit\","
        "\"checked\":57,\"failed\":2,\"intact\":false,\"failures\":["
        "{\"seq\":42,\"code\":62,\"name\":\"AMI_E_NOTFOUND\",\"reason\":\"entry missing: removed\"},"
        "{\"seq\":50,\"code\":40,\"name\":\"AMI_E_BAD_SIGNATURE\","
        "\"reason\":\"hash mismatch: entry altered or reordered\"}]}");
    amictl_json_destroy (&j);

    //  customer: text is terminal-safe, JSON carries the exact bytes
    strcpy (c->meter_id, "MTR-000150");
    strcpy (c->name, "J\xc3\xb6rg \x1b[31mWeber");
    strcpy (c->address, "Am Markt 3, 04109 Leipzig");
    strcpy (c->account, "ACC-00000150");
    text = h_capture (h_customer, c, NULL);
    assert_string_equal (text, "Meter            MTR-000150\n"
                               "Customer         J\xc3\xb6rg ?[31mWeber\n"
                               "Service address  Am Markt 3, 04109 Leipzig\n"
                               "Account          ACC-00000150\n");
    free (text);
    j = amictl_json_new ();
    amictl_json_customer (j, c);
    assert_string_equal (amictl_json_text (j),
        "{\"correlationId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\",\"mRID\":\"MTR-000150\","
        "\"customer\":{\"name\":\"J\xc3\xb6rg \\u001b[31mWeber\",\"serviceAddress\":"
        "\"Am Markt 3, 04109 Leipzig\",\"account\":\"ACC-00000150\"}}");
    amictl_json_destroy (&j);

    //  audit rows: a read by an operator, a refused request without meter
    rows [0].seq = 1;
    rows [0].time_ms = 1764141161123ULL;
    strcpy (rows [0].operator_id, "operator");
    strcpy (rows [0].role, "OPERATOR");
    rows [0].action = AMI_ACT_READ;
    strcpy (rows [0].meter_id, "MTR-000150");
    memcpy (rows [0].corr, v->corr, AMI_REQUEST_ID_SIZE);
    memset (rows [0].hash, 0xab, AMI_HASH_SIZE);
    rows [1] = rows [0];
    rows [1].seq = 2;
    strcpy (rows [1].operator_id, "viewer");
    strcpy (rows [1].role, "VIEWER");
    rows [1].action = AMI_ACT_AUDIT_VERIFY;
    rows [1].meter_id [0] = 0;
    rows [1].result = AMI_E_DENIED;
    size_t two = 2;
    text = h_capture (h_audit, rows, &two);
    assert_non_null (strstr (text, "1        2025-11-26T07:12:41.123Z operator         OPERATOR  "
                                   "read          MTR-000150     a0a1a2a3a4a5a6a7a8a9aaabacadaeaf "
                                   "AMI_OK               abababababab\n"));
    assert_non_null (strstr (text, "viewer           VIEWER    audit-verify  -              "));
    assert_non_null (strstr (text, "AMI_E_DENIED"));
    assert_non_null (strstr (text, "2 entries\n"));
    free (text);
    j = amictl_json_new ();
    amictl_json_audit (j, v->corr, rows, 2);
    const char *json = amictl_json_text (j);
    assert_non_null (strstr (json, "{\"seq\":1,\"dateTime\":\"2025-11-26T07:12:41.123Z\","
        "\"operator\":\"operator\",\"role\":\"OPERATOR\",\"action\":\"read\",\"actionCode\":1,"
        "\"mRID\":\"MTR-000150\",\"correlationId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\","
        "\"result\":0,\"resultName\":\"AMI_OK\",\"hash\":\"abababab"));
    assert_non_null (strstr (json, "\"mRID\":null"));
    assert_non_null (strstr (json, "\"result\":24,\"resultName\":\"AMI_E_DENIED\""));
    amictl_json_destroy (&j);

    assert_string_equal (amictl_verify_reason (AMI_E_TIMEOUT, true), ami_strerror (AMI_E_TIMEOUT));
    free (v);
    free (c);
    free (rows);
}

/* ---------------------------------------------------------------------- */
/*  amictl: the client against a stand-in MDMS API                         */

/* The stand-in's audit log: seq 1..600 three to a millisecond from
   t = 1000 ms, then seq 601..900 all in the millisecond 5000 (more than a
   page: the client must step past it, not loop). */
#define H_AUDIT_ENTRIES 900

/* Set by the test: the stand-in pages the audit log as an MDMS that
   ignores to_ms (the paging rule before it carried a seq) would. */
static atomic_bool s_ignore_after_seq;

static uint64_t
h_audit_time (uint64_t seq)
{
    return seq <= 600 ? 1000 + seq / 3 : 5000;
}

/* A ROUTER that answers API_REQs by action: AUDIT pages the log above,
   CUSTOMER and VERIFY / AUDIT_VERIFY give fixed replies; other actions
   according to the meter id asked for:
     MTR-000001  API_READINGS (one reading) with the request's corr
     STALE       an answer with another corr, an undecodable frame, then
                 the real answer
     ERR         ERROR AMI_E_UNREACHABLE with the corr, origin fleet-1
     NOREQID     ERROR AMI_E_BAD_REQUEST without request id
     SILENT      nothing */
static void
s_stand_in (zsock_t *pipe, void *args)
{
    const char *dir = (const char *) args;
    char *path = ami_test_path (dir, "nodes/mdms.cert");
    int err = 0;
    ami_cert_t *cert = ami_cert_load (path, &err);
    free (path);
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    assert (cert && router);
    zsock_set_linger (router, 0);
    assert (ami_auth_server (router, cert) == AMI_OK);
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    assert (port > 0);
    zsock_signal (pipe, 0);
    zstr_sendf (pipe, "tcp://127.0.0.1:%d", port);
    ami_msg_t *in = ami_msg_new (), *out = ami_msg_new ();
    uint8_t *buf = malloc (AMI_MAX_FRAME);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which != router)
            break;                          //  $TERM or interrupted
        zmsg_t *msg = zmsg_recv (router);
        zframe_t *id = zmsg_pop (msg), *empty = zmsg_pop (msg), *body = zmsg_pop (msg);
        if (!body || ami_msg_decode (in, zframe_data (body), zframe_size (body))
        ||  in->type != AMI_MSG_API_REQ) {
            zframe_destroy (&id); zframe_destroy (&empty); zframe_destroy (&body);
            zmsg_destroy (&msg);
            continue;
        }
        ami_api_req_t req = in->api_req;
        const char *m = req.meter_id;
        size_t len = 0;
        if (req.action == AMI_ACT_AUDIT) {
            ami_msg_reset (out, AMI_MSG_API_AUDIT);
            ami_api_audit_t *page = &out->api_audit;
            memcpy (page->corr, req.corr, AMI_REQUEST_ID_SIZE);
            uint32_t limit = req.limit && req.limit < AMI_MAX_API_AUDIT ? req.limit : AMI_MAX_API_AUDIT;
            for (uint64_t seq = 1; seq <= H_AUDIT_ENTRIES; seq++) {
                if (h_audit_time (seq) < req.from_ms
                ||  (seq <= req.to_ms && !atomic_load (&s_ignore_after_seq)))
                    continue;
                if (page->count == limit) {
                    page->more = true;
                    break;
                }
                ami_audit_row_t *row = &page->entries [page->count++];
                row->seq = seq;
                row->time_ms = h_audit_time (seq);
                strcpy (row->operator_id, "auditor");
                strcpy (row->role, "AUDITOR");
                row->action = AMI_ACT_STATUS;
            }
        }
        else
        if (req.action == AMI_ACT_CUSTOMER) {
            ami_msg_reset (out, AMI_MSG_API_CUSTOMER);
            memcpy (out->api_customer.corr, req.corr, AMI_REQUEST_ID_SIZE);
            strcpy (out->api_customer.meter_id, m);
            strcpy (out->api_customer.name, "Zo\xc3\xab Dahlke");
            strcpy (out->api_customer.address, "Weidenstieg 60, 10002 Birkenhain");
            strcpy (out->api_customer.account, "ACC-00000001");
        }
        else
        if (req.action == AMI_ACT_VERIFY || req.action == AMI_ACT_AUDIT_VERIFY) {
            ami_msg_reset (out, AMI_MSG_API_VERIFY);
            memcpy (out->api_verify.corr, req.corr, AMI_REQUEST_ID_SIZE);
            out->api_verify.checked = req.action == AMI_ACT_VERIFY ? 40 : 57;
            out->api_verify.failed = 1;
            out->api_verify.count = 1;
            out->api_verify.failures [0].ref = req.action == AMI_ACT_VERIFY ? 1764141161123ULL : 42;
            out->api_verify.failures [0].code = req.action == AMI_ACT_VERIFY ? AMI_E_BAD_SIGNATURE
                                                                             : AMI_E_NOTFOUND;
        }
        else {
            if (strcmp (m, "SILENT") == 0) {
                zframe_destroy (&id); zframe_destroy (&empty); zframe_destroy (&body);
                zmsg_destroy (&msg);
                continue;
            }
            if (strcmp (m, "STALE") == 0) {
                ami_msg_reset (out, AMI_MSG_API_READINGS);
                memset (out->api_readings.corr, 0x5a, AMI_REQUEST_ID_SIZE);
                ami_msg_encode (out, buf, AMI_MAX_FRAME, &len);
                zmsg_t *late = zmsg_new ();
                zmsg_addmem (late, zframe_data (id), zframe_size (id));
                zmsg_addmem (late, NULL, 0);
                zmsg_addmem (late, buf, len);
                zmsg_send (&late, router);
                zmsg_t *junk = zmsg_new ();
                zmsg_addmem (junk, zframe_data (id), zframe_size (id));
                zmsg_addmem (junk, NULL, 0);
                zmsg_addstr (junk, "not msgpack");
                zmsg_send (&junk, router);
            }
            if (strcmp (m, "ERR") == 0 || strcmp (m, "NOREQID") == 0) {
                ami_msg_reset (out, AMI_MSG_ERROR);
                out->error.has_request_id = strcmp (m, "ERR") == 0;
                memcpy (out->error.request_id, req.corr, AMI_REQUEST_ID_SIZE);
                out->error.code = strcmp (m, "ERR") == 0 ? AMI_E_UNREACHABLE : AMI_E_BAD_REQUEST;
                strcpy (out->error.origin, "fleet-1");
                strcpy (out->error.text, "meter offline");
            }
            else {
                ami_msg_reset (out, AMI_MSG_API_READINGS);
                memcpy (out->api_readings.corr, req.corr, AMI_REQUEST_ID_SIZE);
                out->api_readings.count = 1;
                ami_stored_reading_t *row = &out->api_readings.readings [0];
                strcpy (row->reading.meter_id, "MTR-000001");
                memcpy (row->reading.request_id, req.corr, AMI_REQUEST_ID_SIZE);
                row->reading.read_ms = 1;
                row->reading.register_count = 1;
                memcpy (row->reading.registers [0].obis, (uint8_t []) { 1, 0, 1, 8, 0, 255 }, 6);
                row->reading.registers [0].unit = 30;
            }
        }
        int rc = ami_msg_encode (out, buf, AMI_MAX_FRAME, &len);
        assert (rc == AMI_OK);
        zmsg_t *reply = zmsg_new ();
        zmsg_append (reply, &id);
        zmsg_append (reply, &empty);
        zmsg_addmem (reply, buf, len);
        zmsg_send (&reply, router);
        zframe_destroy (&body);
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    free (buf);
    ami_msg_destroy (&in);
    ami_msg_destroy (&out);
    zsock_destroy (&router);
    ami_cert_destroy (&cert);
}

static ami_client_t *
h_client (const char *dir, const char *endpoint, const char *cert_rel)
{
    char *cert_path = ami_test_path (dir, cert_rel), *mdms = ami_test_path (dir, "nodes/mdms.cert");
    char key [AMI_CERT_KEY_TXT_LEN + 1];
    int err = 0;
    ami_cert_t *cert = ami_cert_load (cert_path, &err);
    assert_non_null (cert);
    assert_int_equal (ami_auth_server_key_from_file (mdms, key), AMI_OK);
    ami_client_t *client = ami_client_new (endpoint, cert, key, &err);
    assert_non_null (client);
    assert_int_equal (err, AMI_OK);
    ami_cert_destroy (&cert);       //  the socket keeps its own copy of the keys
    free (cert_path);
    free (mdms);
    return client;
}

static int
h_ask (ami_client_t *client, const char *meter, int64_t wait_ms, ami_api_req_t *req,
       ami_msg_t **reply)
{
    memset (req, 0, sizeof *req);
    req->action = AMI_ACT_READ;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter);
    *reply = NULL;
    return ami_client_request (client, req, zclock_mono () + wait_ms, reply);
}

static void
test_client (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("keygen-client");
    h_default_init (dir);
    char *allow = ami_test_path (dir, "allow/mdms");
    int err = 0;
    ami_auth_t *auth = ami_auth_new (allow, &err);          //  before any bind
    assert_non_null (auth);
    zactor_t *mdms = zactor_new (s_stand_in, dir);
    char *endpoint = zstr_recv (mdms);
    assert_non_null (endpoint);

    ami_client_t *client = h_client (dir, endpoint, "operators/operator.cert");
    ami_api_req_t req;
    ami_msg_t *reply = NULL;
    uint8_t previous [AMI_REQUEST_ID_SIZE];

    assert_int_equal (h_ask (client, "MTR-000001", 5000, &req, &reply), AMI_OK);
    assert_int_equal (reply->type, AMI_MSG_API_READINGS);
    assert_memory_equal (reply->api_readings.corr, req.corr, AMI_REQUEST_ID_SIZE);
    memcpy (previous, req.corr, sizeof previous);

    //  key rotation right away (within the second of provisioning): the
    //  running ZAP handler must see the new key (SEC-KEY-2)
    assert_int_equal (keygen_operator (dir, "operator", "OPERATOR", true), KEYGEN_OK);
    ami_client_destroy (&client);
    client = h_client (dir, endpoint, "operators/operator.cert");
    assert_int_equal (h_ask (client, "MTR-000001", 5000, &req, &reply), AMI_OK);

    //  a fresh random correlation id per request; late and broken replies
    //  are skipped, the matching one is taken
    assert_int_equal (h_ask (client, "STALE", 5000, &req, &reply), AMI_OK);
    assert_memory_not_equal (req.corr, previous, AMI_REQUEST_ID_SIZE);
    assert_memory_equal (reply->api_readings.corr, req.corr, AMI_REQUEST_ID_SIZE);

    assert_int_equal (h_ask (client, "ERR", 5000, &req, &reply), AMI_E_UNREACHABLE);
    assert_int_equal (reply->type, AMI_MSG_ERROR);
    assert_string_equal (reply->error.origin, "fleet-1");
    assert_string_equal (reply->error.text, "meter offline");
    assert_int_equal (h_ask (client, "NOREQID", 5000, &req, &reply), AMI_E_BAD_REQUEST);

    int64_t start = zclock_mono ();
    assert_int_equal (h_ask (client, "SILENT", 300, &req, &reply), AMI_E_TIMEOUT);
    assert_true (zclock_mono () - start >= 300);
    assert_non_null (strstr (ami_client_why (client), "did not answer"));
    //  ...and its late silence does not confuse the next request
    assert_int_equal (h_ask (client, "MTR-000001", 5000, &req, &reply), AMI_OK);

    //  the security replies are matched by correlation id like the others
    memset (&req, 0, sizeof req);
    req.action = AMI_ACT_CUSTOMER;
    strcpy (req.meter_id, "MTR-000001");
    assert_int_equal (ami_client_request (client, &req, zclock_mono () + 5000, &reply), AMI_OK);
    assert_int_equal (reply->type, AMI_MSG_API_CUSTOMER);
    assert_memory_equal (reply->api_customer.corr, req.corr, AMI_REQUEST_ID_SIZE);
    assert_string_equal (reply->api_customer.name, "Zo\xc3\xab Dahlke");
    req.action = AMI_ACT_VERIFY;
    assert_int_equal (ami_client_request (client, &req, zclock_mono () + 5000, &reply), AMI_OK);
    assert_int_equal (reply->type, AMI_MSG_API_VERIFY);
    assert_memory_equal (reply->api_verify.corr, req.corr, AMI_REQUEST_ID_SIZE);
    assert_true (reply->api_verify.checked == 40);
    memset (&req, 0, sizeof req);
    req.action = AMI_ACT_AUDIT_VERIFY;
    assert_int_equal (ami_client_request (client, &req, zclock_mono () + 5000, &reply), AMI_OK);
    assert_int_equal (reply->type, AMI_MSG_API_VERIFY);
    assert_true (reply->api_verify.failures [0].ref == 42);

    //  audit paging (to_ms = the last seq): every entry exactly once, in
    //  order, also across the 300 entries of the millisecond 5000
    size_t want = 2000, count = 0, total = 0;
    ami_audit_row_t *rows = calloc (want, sizeof *rows);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    assert_non_null (rows);
    assert_int_equal (ami_client_audit (client, 0, 5000, 5000, want, rows, &count, &total,
                                           corr, &reply), AMI_OK);
    assert_int_equal (total, H_AUDIT_ENTRIES);
    assert_int_equal (count, H_AUDIT_ENTRIES);
    for (size_t i = 0; i < count; i++)
        assert_true (rows [i].seq == i + 1);
    //  --since and --last: the 10 most recent from t = 1100 on (seq 300..)
    assert_int_equal (ami_client_audit (client, 1100, 5000, 5000, 10, rows, &count, &total,
                                           corr, &reply), AMI_OK);
    assert_int_equal (total, H_AUDIT_ENTRIES - 299);
    assert_int_equal (count, 10);
    for (size_t i = 0; i < count; i++)
        assert_true (rows [i].seq == H_AUDIT_ENTRIES - 9 + i);
    assert_int_equal (ami_client_audit (client, 0, 5000, 5000, 1, rows, &count, &total,
                                           corr, &reply), AMI_OK);
    assert_int_equal (count, 1);
    assert_true (rows [0].seq == H_AUDIT_ENTRIES);
    //  a server that ignores to_ms: the overlap of pages is skipped by seq,
    //  and a millisecond fuller than a page is stepped past (seq 857..900
    //  lost, logged) instead of asked for forever
    atomic_store (&s_ignore_after_seq, true);
    assert_int_equal (ami_client_audit (client, 0, 5000, 5000, want, rows, &count, &total,
                                           corr, &reply), AMI_OK);
    atomic_store (&s_ignore_after_seq, false);
    assert_int_equal (total, 856);
    for (size_t i = 0; i < count; i++)
        assert_true (rows [i].seq == i + 1);
    assert_int_equal (ami_client_audit (client, 6000, 5000, 5000, 5, rows, &count, &total,
                                           corr, &reply), AMI_OK);
    assert_int_equal (count, 0);
    assert_int_equal (total, 0);
    free (rows);
    ami_client_destroy (&client);
    assert_null (client);

    //  a key not on the MDMS's allow-list: refused at the handshake, said at
    //  once (not after the deadline)
    client = h_client (dir, endpoint, "nodes/broker.cert");
    start = zclock_mono ();
    assert_int_equal (h_ask (client, "MTR-000001", 10000, &req, &reply), AMI_E_DENIED);
    assert_true (zclock_mono () - start < 5000);
    assert_non_null (strstr (ami_client_why (client), "allow-list"));
    ami_client_destroy (&client);

    //  nobody listening
    client = h_client (dir, "tcp://127.0.0.1:1", "operators/operator.cert");
    assert_int_equal (h_ask (client, "MTR-000001", 300, &req, &reply), AMI_E_TIMEOUT);
    assert_non_null (strstr (ami_client_why (client), "no connection"));
    ami_client_destroy (&client);

    zstr_free (&endpoint);
    zactor_destroy (&mdms);
    ami_auth_destroy (&auth);
    free (allow);
    ami_test_rmtree (dir);
    free (dir);
}

int
main (void)
{
    //  library diagnostics (expected refusals) stay quiet unless they matter
    ami_log_init ("test_keygen", NULL, AMI_LOG_ERROR);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_init_layout),
        cmocka_unit_test (test_init_refuses_and_force),
        cmocka_unit_test (test_topology_mapping),
        cmocka_unit_test (test_bad_arguments),
        cmocka_unit_test (test_check_finds_damage),
        cmocka_unit_test (test_add_operator),
        cmocka_unit_test (test_rotate_prune_revoke),
        cmocka_unit_test (test_sec_key_2_rotate_mdms_sign),
        cmocka_unit_test (test_customer_synthetic),
        cmocka_unit_test (test_json_escape),
        cmocka_unit_test (test_json_writer),
        cmocka_unit_test (test_format),
        cmocka_unit_test (test_json_meter_readings),
        cmocka_unit_test (test_parse_time),
        cmocka_unit_test (test_safe_text),
        cmocka_unit_test (test_render_security),
        cmocka_unit_test (test_client),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
