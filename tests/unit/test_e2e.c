/*  test_e2e.c - MDMS <-> meter application security: key files, signatures
    over frames, sealed readings and a meter's command checks
    (SEC-AUTHZ-2, SEC-INT-1, SEC-INT-2, SEC-INT-3, SEC-CONF-1, SEC-KEY-1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_e2e.h"
#include "ami_msg.h"
#include "ami_test.h"

typedef struct {
    char *dir;
    ami_msg_t *msg;
    ami_e2e_mdms_t mdms;
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *f = calloc (1, sizeof *f);
    f->dir = ami_test_tmpdir ("e2e");
    f->msg = ami_msg_new ();
    if (!f->dir || !f->msg || ami_e2e_mdms_generate (f->dir, "mdms")
    ||  ami_e2e_mdms_load (&f->mdms, f->dir, true))
        return -1;
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = *state;
    ami_e2e_mdms_wipe (&f->mdms);
    ami_msg_destroy (&f->msg);
    ami_test_rmtree (f->dir);
    free (f->dir);
    free (f);
    return 0;
}

/* Encode and sign a READ_REQ for meter_id with the MDMS key. */
static size_t
s_command (fixture_t *f, const char *meter_id, uint64_t counter, uint64_t issued,
           uint64_t expires, uint8_t *buf, size_t cap)
{
    ami_msg_reset (f->msg, AMI_MSG_READ_REQ);
    ami_read_req_t *req = &f->msg->read_req;
    strcpy (req->meter_id, meter_id);
    randombytes_buf (req->request_id, sizeof req->request_id);
    req->counter = counter;
    req->issued_ms = issued;
    req->expires_ms = expires;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (f->msg, buf, cap, &len), AMI_OK);
    assert_int_equal (ami_e2e_sign (buf, len, f->mdms.sign_sk), AMI_OK);
    return len;
}

static void
test_command_signature (void **state)
{
    fixture_t *f = *state;
    uint8_t frame [512];
    size_t len = s_command (f, "MTR-000001", 5, 1000, 4000, frame, sizeof frame);

    /* a fleet holds only the public half, and that verifies */
    ami_e2e_mdms_t pub;
    assert_int_equal (ami_e2e_mdms_load (&pub, f->dir, false), AMI_OK);
    assert_false (pub.has_secret);
    assert_int_equal (ami_e2e_verify (frame, len, pub.sign_pk), AMI_OK);

    /* any single altered byte in the frame breaks it (forged or altered) */
    for (size_t i = 0; i < len; i++) {
        frame [i] ^= 0x01;
        assert_int_equal (ami_e2e_verify (frame, len, pub.sign_pk), AMI_E_BAD_SIGNATURE);
        frame [i] ^= 0x01;
    }
    /* a key that is not the MDMS's (a forged MDMS) does not verify */
    uint8_t other_pk [32], other_sk [64];
    crypto_sign_keypair (other_pk, other_sk);
    assert_int_equal (ami_e2e_verify (frame, len, other_pk), AMI_E_BAD_SIGNATURE);
    assert_int_equal (ami_e2e_sign (frame, len, other_sk), AMI_OK);
    assert_int_equal (ami_e2e_verify (frame, len, pub.sign_pk), AMI_E_BAD_SIGNATURE);
    /* truncated frames have no signature slot */
    assert_int_equal (ami_e2e_verify (frame, len - 1, pub.sign_pk), AMI_E_BAD_SIGNATURE);
    assert_int_equal (ami_e2e_verify (frame, 10, pub.sign_pk), AMI_E_BAD_SIGNATURE);
}

static void
test_command_checks (void **state)
{
    fixture_t *f = *state;
    uint8_t frame [512];
    size_t len = s_command (f, "MTR-000007", 10, 100000, 103000, frame, sizeof frame);
    assert_int_equal (ami_msg_decode (f->msg, frame, len), AMI_OK);
    const ami_read_req_t *req = &f->msg->read_req;
    assert_int_equal (ami_e2e_check_command (req, "MTR-000007", 9, 101000), AMI_OK);
    assert_int_equal (ami_e2e_check_command (req, "MTR-000008", 9, 101000), AMI_E_WRONG_TARGET);
    assert_int_equal (ami_e2e_check_command (req, "MTR-000007", 10, 101000), AMI_E_REPLAY);
    assert_int_equal (ami_e2e_check_command (req, "MTR-000007", 11, 101000), AMI_E_REPLAY);
    assert_int_equal (ami_e2e_check_command (req, "MTR-000007", 9, 103001), AMI_E_EXPIRED);
    /* issued in the future by more than the tolerated skew */
    assert_int_equal (ami_e2e_check_command (req, "MTR-000007", 9, 100000 - AMI_E2E_SKEW_MS - 1),
                      AMI_E_EXPIRED);
    assert_int_equal (ami_e2e_check_command (req, "MTR-000007", 9, 100000 - AMI_E2E_SKEW_MS), AMI_OK);
}

static void
test_sealed_reading (void **state)
{
    fixture_t *f = *state;
    const char plain [] = "a reading the aggregator must not see";
    uint8_t sealed [256], opened [256];
    size_t sealed_len = 0, opened_len = 0;
    ami_e2e_mdms_t pub;
    assert_int_equal (ami_e2e_mdms_load (&pub, f->dir, false), AMI_OK);
    assert_int_equal (ami_e2e_seal ((const uint8_t *) plain, sizeof plain, pub.box_pk,
                                    sealed, sizeof sealed, &sealed_len), AMI_OK);
    assert_int_equal (sealed_len, sizeof plain + AMI_E2E_SEAL_OVERHEAD);
    /* the plaintext does not appear in what the relays carry */
    assert_null (memmem (sealed, sealed_len, "aggregator", 10));
    assert_int_equal (ami_e2e_open (sealed, sealed_len, &f->mdms, opened, sizeof opened, &opened_len), AMI_OK);
    assert_int_equal (opened_len, sizeof plain);
    assert_memory_equal (opened, plain, sizeof plain);
    /* altered, truncated, or opened without the secret: refused */
    sealed [sealed_len / 2] ^= 0x80;
    assert_int_equal (ami_e2e_open (sealed, sealed_len, &f->mdms, opened, sizeof opened, &opened_len), AMI_E_DECRYPT);
    sealed [sealed_len / 2] ^= 0x80;
    assert_int_equal (ami_e2e_open (sealed, sealed_len - 1, &f->mdms, opened, sizeof opened, &opened_len), AMI_E_DECRYPT);
    assert_int_equal (ami_e2e_open (sealed, 10, &f->mdms, opened, sizeof opened, &opened_len), AMI_E_DECRYPT);
    assert_int_equal (ami_e2e_open (sealed, sealed_len, &pub, opened, sizeof opened, &opened_len), AMI_E_DECRYPT);
    /* output buffers that are too small */
    assert_int_equal (ami_e2e_seal ((const uint8_t *) plain, sizeof plain, pub.box_pk,
                                    sealed, sizeof plain + 47, &sealed_len), AMI_E_BUFSIZE);
    assert_int_equal (ami_e2e_open (sealed, sizeof plain + AMI_E2E_SEAL_OVERHEAD, &f->mdms,
                                    opened, 3, &opened_len), AMI_E_BUFSIZE);
}

static void
test_meter_keys (void **state)
{
    fixture_t *f = *state;
    char *path = ami_test_path (f->dir, "fleet-1.cert");
    assert_int_equal (ami_e2e_kdf_generate (path, "meter", "fleet-1"), AMI_OK);
    uint8_t seed [32], seed2 [32];
    assert_int_equal (ami_e2e_kdf_load (path, seed), AMI_OK);
    assert_int_equal (ami_e2e_kdf_load (path, seed2), AMI_OK);
    assert_memory_equal (seed, seed2, 32);

    /* every meter has its own key, the same every time it is derived */
    uint8_t pk1 [32], sk1 [64], pk2 [32], sk2 [64], pk1b [32];
    ami_e2e_meter_keypair (seed, 1, pk1, sk1);
    ami_e2e_meter_keypair (seed, 2, pk2, sk2);
    ami_e2e_meter_keypair (seed, 1, pk1b, NULL);
    assert_memory_equal (pk1, pk1b, 32);
    assert_memory_not_equal (pk1, pk2, 32);

    /* a meter's signature verifies with its own key only */
    ami_msg_reset (f->msg, AMI_MSG_READ_RESP);
    strcpy (f->msg->read_resp.meter_id, "MTR-000001");
    static const uint8_t ciphertext [60] = { 1, 2, 3 };
    f->msg->read_resp.sealed = ciphertext;
    f->msg->read_resp.sealed_size = sizeof ciphertext;
    uint8_t frame [512];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (f->msg, frame, sizeof frame, &len), AMI_OK);
    assert_int_equal (ami_e2e_sign (frame, len, sk1), AMI_OK);
    assert_int_equal (ami_e2e_verify (frame, len, pk1), AMI_OK);
    assert_int_equal (ami_e2e_verify (frame, len, pk2), AMI_E_BAD_SIGNATURE);

    /* a fleet secret readable by others is refused (SEC-KEY-1) */
    char *secret = ami_test_path (f->dir, "fleet-1.cert_secret");
    assert_int_equal (chmod (secret, 0644), 0);
    assert_int_equal (ami_e2e_kdf_load (path, seed2), AMI_E_KEY_PERMS);
    /* a key of the wrong type is refused: the MDMS box key is not a fleet secret */
    char *box = ami_test_path (f->dir, "mdms-box.cert");
    assert_int_equal (ami_e2e_kdf_load (box, seed2), AMI_E_KEY);
    free (box);
    free (secret);
    free (path);
}

static void
test_mdms_key_perms (void **state)
{
    fixture_t *f = *state;
    char *secret = ami_test_path (f->dir, "mdms-sign.cert_secret");
    assert_int_equal (chmod (secret, 0640), 0);
    ami_e2e_mdms_t keys;
    assert_int_equal (ami_e2e_mdms_load (&keys, f->dir, true), AMI_E_KEY_PERMS);
    assert_false (keys.has_secret);
    /* the public halves are still fine for a fleet */
    assert_int_equal (ami_e2e_mdms_load (&keys, f->dir, false), AMI_OK);
    assert_int_equal (chmod (secret, 0600), 0);
    free (secret);
    /* a directory with no keys */
    char *empty = ami_test_tmpdir ("e2e-empty");
    assert_int_equal (ami_e2e_mdms_load (&keys, empty, true), AMI_E_KEY);
    ami_test_rmtree (empty);
    free (empty);
}

/*  SEC-CONF-1, SEC-INT-1 for interval data: the meter and the MDMS agree on
    a per-meter profile key; a box opens only with that key and its own
    block header, and any altered byte is refused. */
static void
test_profile_box (void **state)
{
    fixture_t *f = *state;
    uint8_t seed [32], pk1 [32], sk1 [64], pk2 [32], sk2 [64];
    randombytes_buf (seed, sizeof seed);
    ami_e2e_meter_keypair (seed, 1, pk1, sk1);
    ami_e2e_meter_keypair (seed, 2, pk2, sk2);

    uint8_t k_meter [32], k_mdms [32], k_other [32];
    assert_int_equal (ami_e2e_profile_key_meter (sk1, f->mdms.box_pk, k_meter), AMI_OK);
    assert_int_equal (ami_e2e_profile_key_mdms (&f->mdms, pk1, k_mdms), AMI_OK);
    assert_memory_equal (k_meter, k_mdms, 32);
    assert_int_equal (ami_e2e_profile_key_mdms (&f->mdms, pk2, k_other), AMI_OK);
    assert_memory_not_equal (k_meter, k_other, 32);

    /* the MDMS's public half alone derives nothing */
    ami_e2e_mdms_t pub = f->mdms;
    pub.has_secret = false;
    assert_int_equal (ami_e2e_profile_key_mdms (&pub, pk1, k_other), AMI_E_KEY);

    static const uint8_t plain [100] = { 0x96, 1, 20, 7, 7, 7 };
    uint8_t box [200], out [200], box2 [200];
    size_t box_len = 0, out_len = 0, box2_len = 0;
    /* a pad block of 128: the 100-byte plaintext pads to one block */
    assert_int_equal (ami_e2e_profile_seal (k_meter, "MTR-000001", 9, plain, sizeof plain, 128,
                                            box, ami_e2e_profile_box_size (128) - 1, &box_len),
                      AMI_E_BUFSIZE);
    assert_int_equal (ami_e2e_profile_seal (k_meter, "MTR-000001", 9, plain, sizeof plain, 0,
                                            box, sizeof box, &box_len), AMI_E_RANGE);
    assert_int_equal (ami_e2e_profile_seal (k_meter, "MTR-000001", 9, plain, sizeof plain, 128,
                                            box, sizeof box, &box_len), AMI_OK);
    assert_int_equal (box_len, ami_e2e_profile_box_size (128));
    assert_int_equal (ami_e2e_profile_open (k_mdms, "MTR-000001", 9, box, box_len,
                                            out, sizeof out, &out_len), AMI_OK);
    assert_int_equal (out_len, sizeof plain);
    assert_memory_equal (out, plain, sizeof plain);

    /* random nonces: sealing the same block twice gives different boxes */
    assert_int_equal (ami_e2e_profile_seal (k_meter, "MTR-000001", 9, plain, sizeof plain, 128,
                                            box2, sizeof box2, &box2_len), AMI_OK);
    assert_memory_not_equal (box, box2, box_len);

    /* another block header, another meter's key, a truncation: refused */
    assert_int_equal (ami_e2e_profile_open (k_mdms, "MTR-000001", 10, box, box_len, out, sizeof out, &out_len),
                      AMI_E_DECRYPT);
    assert_int_equal (ami_e2e_profile_open (k_mdms, "MTR-000002", 9, box, box_len, out, sizeof out, &out_len),
                      AMI_E_DECRYPT);
    assert_int_equal (ami_e2e_profile_open (k_other, "MTR-000001", 9, box, box_len, out, sizeof out, &out_len),
                      AMI_E_DECRYPT);
    assert_int_equal (ami_e2e_profile_open (k_mdms, "MTR-000001", 9, box, box_len - 1, out, sizeof out, &out_len),
                      AMI_E_DECRYPT);
    assert_int_equal (ami_e2e_profile_open (k_mdms, "MTR-000001", 9, box, 10, out, sizeof out, &out_len),
                      AMI_E_DECRYPT);
    /* every single flipped bit is caught */
    for (size_t i = 0; i < box_len; i++) {
        box [i] ^= 0x01;
        assert_int_equal (ami_e2e_profile_open (k_mdms, "MTR-000001", 9, box, box_len, out, sizeof out,
                                                &out_len), AMI_E_DECRYPT);
        box [i] ^= 0x01;
    }
    sodium_memzero (sk1, sizeof sk1);
    sodium_memzero (sk2, sizeof sk2);
}

/*  SEC-CONF-3: the length of an interval-data box says nothing about the
    register values: PROFILE blocks of n records (1..4), with meter ids of
    any length and values from 0 to near UINT64_MAX, all seal to the length
    of their record count; a box without padding is refused. */
static void
test_sec_conf_3_profile_length_fixed (void **state)
{
    (void) state;
    uint8_t key [AMI_E2E_PROFILE_KEY_SIZE];
    randombytes_buf (key, sizeof key);
    ami_msg_t *msg = ami_msg_new ();
    assert_non_null (msg);
    static const uint64_t values [] = { 0, 127, 65536, 4294967296ull, UINT64_MAX - 1 };
    size_t sealed = 0;
    for (uint32_t count = 1; count <= 4; count++)
        for (size_t v = 0; v < sizeof values / sizeof values [0]; v++) {
            ami_msg_reset (msg, AMI_MSG_PROFILE);
            ami_profile_t *p = &msg->profile;
            /* the longest id: the bound covers it */
            snprintf (p->meter_id, sizeof p->meter_id, "%s", v % 2 ? "MTR-1" : "MTR-0123456789-0123456789-012345");
            for (uint32_t k = 0; k < count; k++) {
                p->records [k].end_s = 1767225600u + 900u * (k + 1);
                p->records [k].import_wh = values [v];
                p->records [k].export_wh = values [v];
                p->records [k].status = (uint16_t) (v ? 0xFFFF : 0);
            }
            p->record_count = count;
            p->seq = p->records [count - 1].end_s / 900u;
            p->made_ms = v ? UINT64_MAX - 1 : 0;
            uint8_t plain [AMI_MAX_SEALED], box [AMI_MAX_SEALED], out [AMI_MAX_SEALED];
            size_t plain_len = 0, box_len = 0, out_len = 0;
            assert_int_equal (ami_msg_encode (msg, plain, sizeof plain, &plain_len), AMI_OK);
            assert_true (plain_len + AMI_E2E_PAD_OVERHEAD <= ami_e2e_profile_pad_block (count));
            assert_int_equal (ami_e2e_profile_seal (key, p->meter_id, p->seq, plain, plain_len,
                                                    ami_e2e_profile_pad_block (count),
                                                    box, sizeof box, &box_len), AMI_OK);
            assert_int_equal (box_len, ami_e2e_profile_box_size (ami_e2e_profile_pad_block (count)));
            if (count == 4 && !sealed)
                sealed = box_len;
            if (count == 4)
                assert_int_equal (box_len, sealed);
            assert_int_equal (ami_e2e_profile_open (key, p->meter_id, p->seq, box, box_len,
                                                    out, sizeof out, &out_len), AMI_OK);
            assert_int_equal (out_len, plain_len);
            assert_memory_equal (out, plain, plain_len);
        }
    assert_int_equal (sealed, 210);             /* as the header says for 4 records */

    /* an unpadded box (a valid AEAD under the right key and header, built
       by hand as an old meter would) is refused, and out is wiped */
    uint8_t plain [20] = { 0x96, 1, 20 }, box [64], out [64];
    uint8_t ad8 [19];               /* meter id, NUL, seq 7 as big-endian u64 */
    memcpy (ad8, "MTR-000001", 10);
    memset (ad8 + 10, 0, 9);
    ad8 [18] = 7;
    randombytes_buf (box, 24);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt (box + 24, &clen, plain, sizeof plain, ad8,
                                                sizeof ad8, NULL, box, key);
    size_t out_len = 0;
    memset (out, 0x55, sizeof out);
    assert_int_equal (ami_e2e_profile_open (key, "MTR-000001", 7, box, 24 + (size_t) clen,
                                            out, sizeof out, &out_len), AMI_E_DECRYPT);
    for (size_t i = 0; i < sizeof plain; i++)
        assert_int_equal (out [i], 0);
    ami_msg_destroy (&msg);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_command_signature, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_command_checks, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sealed_reading, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_meter_keys, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_box, s_setup, s_teardown),
        cmocka_unit_test (test_sec_conf_3_profile_length_fixed),
        cmocka_unit_test_setup_teardown (test_mdms_key_perms, s_setup, s_teardown),
    };
    return cmocka_run_group_tests_name ("e2e", tests, NULL, NULL);
}
