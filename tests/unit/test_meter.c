/*  test_meter.c - the meter fleet simulator (ami-meter) against a test
    ROUTER that plays its aggregator, over CurveZMQ on 127.0.0.1.

    Requirements exercised: SEC-AUTHZ-2 (act only on MDMS-signed commands),
    SEC-INT-1 (meter-signed responses), SEC-INT-2 (replay, expiry, counters
    that survive a restart), SEC-INT-3 (request id bound inside the sealed
    reading), SEC-CONF-1 (reading sealed to the MDMS), SEC-VAL-1 (any
    bytes on the link), FUN-READ-1 (a read returns the registers).

    One ami_auth for the whole binary (zauth is process-wide); its
    allow-list holds the fleet's public certificate. Every wait has a
    deadline; sleeps appear only as poll intervals of "wait until" loops.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_meter.h"
#include "ami_meter_model.h"
#include "ami_msg.h"
#include "ami_test.h"

/*  Positive waits are generous (a loaded 2-core VM, valgrind); "nothing
    arrives" waits are far above a loopback round trip. */
#define WAIT_MS         5000
#define HEARTBEAT_MS    100
#define POLL_MS         10

/*  Process-wide fixture: keys, certificates and the one ami_auth. */
static struct {
    char *dir;
    ami_auth_t *auth;
    ami_cert_t *fleet_cert;         /* the fleet's node certificate */
    ami_cert_t *agg_cert;           /* the test ROUTER plays the aggregator */
    ami_e2e_mdms_t mdms;            /* MDMS keys with secrets */
    ami_e2e_mdms_t mdms_pub;        /* what the fleet gets */
    ami_e2e_mdms_t forger;          /* another signing key: a forger's */
    uint8_t seed [AMI_E2E_SEED_SIZE];
    ami_msg_t *msg;                 /* decode scratch */
    ami_msg_t *msg2;                /* encode / inner decode scratch */
} G;

/*  Per test: a state directory, the aggregator's ROUTER, the fleet. */
typedef struct {
    char *state;
    zsock_t *router;
    char *endpoint;
    zactor_t *fleet;
    zframe_t *rid;                  /* the fleet's routing id */
} fx_t;


/* ---------------------------------------------------------------------- */
/*  Fixture                                                                 */

static int
s_group_setup (void **state)
{
    (void) state;
    G.dir = ami_test_tmpdir ("meter");
    if (!G.dir)
        return -1;
    char *allow = ami_test_path (G.dir, "allow");
    char *mdms_dir = ami_test_path (G.dir, "mdms");
    char *forger_dir = ami_test_path (G.dir, "forger");
    char *seed_path = ami_test_path (G.dir, "fleet-1.seed");
    char *fleet_pub = ami_test_path (allow, "fleet-1.cert");
    int rc = -1;
    if (zsys_dir_create ("%s", allow) || zsys_dir_create ("%s", mdms_dir)
    ||  zsys_dir_create ("%s", forger_dir))
        goto done;
    G.fleet_cert = ami_cert_new ("meter", "fleet-1", NULL);
    G.agg_cert = ami_cert_new ("aggregator", "agg-1", NULL);
    if (!G.fleet_cert || !G.agg_cert
    ||  ami_cert_save_public (G.fleet_cert, fleet_pub) != AMI_OK)
        goto done;
    if (ami_e2e_mdms_generate (mdms_dir, "mdms") != AMI_OK
    ||  ami_e2e_mdms_load (&G.mdms, mdms_dir, true) != AMI_OK
    ||  ami_e2e_mdms_load (&G.mdms_pub, mdms_dir, false) != AMI_OK
    ||  ami_e2e_mdms_generate (forger_dir, "mdms") != AMI_OK
    ||  ami_e2e_mdms_load (&G.forger, forger_dir, true) != AMI_OK)
        goto done;
    if (ami_e2e_kdf_generate (seed_path, "meter", "fleet-1") != AMI_OK
    ||  ami_e2e_kdf_load (seed_path, G.seed) != AMI_OK)
        goto done;
    G.auth = ami_auth_new (allow, NULL);
    G.msg = ami_msg_new ();
    G.msg2 = ami_msg_new ();
    if (G.auth && G.msg && G.msg2)
        rc = 0;
done:
    free (allow); free (mdms_dir); free (forger_dir); free (seed_path); free (fleet_pub);
    return rc;
}

static int
s_group_teardown (void **state)
{
    (void) state;
    ami_auth_destroy (&G.auth);
    ami_cert_destroy (&G.fleet_cert);
    ami_cert_destroy (&G.agg_cert);
    ami_e2e_mdms_wipe (&G.mdms);
    ami_e2e_mdms_wipe (&G.forger);
    sodium_memzero (G.seed, sizeof G.seed);
    ami_msg_destroy (&G.msg);
    ami_msg_destroy (&G.msg2);
    ami_test_rmtree (G.dir);
    free (G.dir);
    return 0;
}

static int
s_setup (void **state)
{
    fx_t *fx = (fx_t *) calloc (1, sizeof *fx);
    assert_non_null (fx);
    fx->state = ami_test_tmpdir ("meter-state");
    assert_non_null (fx->state);
    fx->router = zsock_new (ZMQ_ROUTER);
    assert_non_null (fx->router);
    zsock_set_linger (fx->router, 0);
    zsock_set_maxmsgsize (fx->router, AMI_MAX_FRAME);
    assert_int_equal (ami_auth_server (fx->router, G.agg_cert), AMI_OK);
    assert_true (zsock_bind (fx->router, "tcp://127.0.0.1:*") > 0);
    fx->endpoint = zsock_last_endpoint (fx->router);
    assert_non_null (fx->endpoint);
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zactor_destroy (&fx->fleet);
    zsock_destroy (&fx->router);
    zstr_free (&fx->endpoint);
    zframe_destroy (&fx->rid);
    ami_test_rmtree (fx->state);
    free (fx->state);
    free (fx);
    return 0;
}

static ami_meter_config_t
s_config (fx_t *fx, uint32_t first, uint32_t count)
{
    ami_meter_config_t config;
    memset (&config, 0, sizeof config);
    config.node_id = "fleet-1";
    config.cert = G.fleet_cert;
    config.aggregator = fx->endpoint;
    config.aggregator_key = ami_cert_public_txt (G.agg_cert);
    config.first = first;
    config.count = count;
    memcpy (config.seed, G.seed, sizeof config.seed);
    config.mdms = G.mdms_pub;
    config.state = fx->state;
    config.heartbeat_ms = HEARTBEAT_MS;
    return config;
}

static void
s_fleet_start (fx_t *fx, uint32_t first, uint32_t count, int64_t offset_ms)
{
    ami_meter_config_t config = s_config (fx, first, count);
    config.clock_offset_ms = offset_ms;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
    zsock_set_rcvtimeo (fx->fleet, WAIT_MS);    /* a hung actor fails the test */
    zframe_destroy (&fx->rid);
}


/* ---------------------------------------------------------------------- */
/*  The aggregator's side of the link                                       */

/*  Receive one [routing id, frame] within timeout_ms, or NULL. */
static zmsg_t *
s_recv (fx_t *fx, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (fx->router, NULL);
    zmsg_t *msg = NULL;
    if (zpoller_wait (poller, timeout_ms) == fx->router)
        msg = zmsg_recv (fx->router);
    zpoller_destroy (&poller);
    if (msg) {
        assert_int_equal (zmsg_size (msg), 2);
        /* the fleet's routing id: taken from its HELLO (a restarted fleet
           has a new one), or from the first message seen */
        zframe_t *body = zmsg_last (msg);
        if (!fx->rid || ami_msg_peek_type (zframe_data (body), zframe_size (body)) == AMI_MSG_HELLO) {
            zframe_destroy (&fx->rid);
            fx->rid = zframe_dup (zmsg_first (msg));
        }
    }
    return msg;
}

/*  Receive until a message of `type` arrives (others, e.g. HEALTH, are
    skipped); decode it into G.msg. Returns the zmsg (whose frame G.msg's
    binaries point into: free it after use), or NULL on timeout. */
static zmsg_t *
s_expect (fx_t *fx, int type, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (true) {
        int64_t left = deadline - zclock_mono ();
        zmsg_t *msg = s_recv (fx, left > 0 ? (int) left : 0);
        if (!msg)
            return NULL;
        zframe_t *body = zmsg_last (msg);
        assert_int_equal (ami_msg_decode (G.msg, zframe_data (body), zframe_size (body)), AMI_OK);
        if (G.msg->type == type)
            return msg;
        zmsg_destroy (&msg);
    }
}

static void
s_send (fx_t *fx, const void *data, size_t size)
{
    assert_non_null (fx->rid);
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &(zframe_t *) { zframe_dup (fx->rid) });
    zmsg_addmem (msg, data, size);
    assert_int_equal (zmsg_send (&msg, fx->router), 0);
}

/*  Wait for the fleet's first HELLO so its routing id is known. */
static void
s_wait_hello (fx_t *fx)
{
    zmsg_t *msg = s_expect (fx, AMI_MSG_HELLO, WAIT_MS);
    assert_non_null (msg);
    zmsg_destroy (&msg);
}

/*  A READ_REQ for meter_id signed with sk; request id random (returned). */
static size_t
s_command (const char *meter_id, uint64_t counter, uint64_t issued, uint64_t expires,
           const uint8_t *sk, uint8_t request_id [AMI_REQUEST_ID_SIZE], uint8_t *buf, size_t cap)
{
    ami_msg_reset (G.msg2, AMI_MSG_READ_REQ);
    ami_read_req_t *req = &G.msg2->read_req;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter_id);
    randombytes_buf (req->request_id, sizeof req->request_id);
    memcpy (request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    req->counter = counter;
    req->issued_ms = issued;
    req->expires_ms = expires;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, cap, &len), AMI_OK);
    assert_int_equal (ami_e2e_sign (buf, len, sk), AMI_OK);
    return len;
}

static uint64_t
s_now (void)
{
    return (uint64_t) zclock_time ();
}

/*  Expect a READ_RESP for (meter, request id) with `status`, signed by that
    meter's own derived key. For status 0 the sealed READING is opened with
    the MDMS keys, checked, and its +A energy (Wh) returned. */
static uint64_t
s_expect_resp (fx_t *fx, uint32_t index, const uint8_t request_id [AMI_REQUEST_ID_SIZE], int status)
{
    zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
    assert_non_null (msg);
    zframe_t *body = zmsg_last (msg);
    const ami_read_resp_t *resp = &G.msg->read_resp;
    char meter_id [AMI_MAX_ID + 1];
    ami_meter_id_format (index, meter_id);
    assert_string_equal (resp->meter_id, meter_id);
    assert_memory_equal (resp->request_id, request_id, AMI_REQUEST_ID_SIZE);
    assert_int_equal (resp->status, status);

    /* signed by this meter's key, and no other meter's */
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE], other [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (G.seed, index, pk, NULL);
    ami_e2e_meter_keypair (G.seed, index + 1, other, NULL);
    assert_int_equal (ami_e2e_verify (zframe_data (body), zframe_size (body), pk), AMI_OK);
    assert_int_equal (ami_e2e_verify (zframe_data (body), zframe_size (body), other),
                      AMI_E_BAD_SIGNATURE);
    uint64_t energy = 0;
    if (status != AMI_OK)
        assert_int_equal (resp->sealed_size, 0);    /* refusals carry no data */
    else {
        assert_true (resp->sealed_size > AMI_E2E_SEAL_OVERHEAD);
        uint8_t plain [AMI_MAX_SEALED];
        size_t plain_len = 0;
        assert_int_equal (ami_e2e_open (resp->sealed, resp->sealed_size, &G.mdms,
                                        plain, sizeof plain, &plain_len), AMI_OK);
        /* sealed to the MDMS: the forger's (or anyone else's) keys do not open it */
        assert_int_equal (ami_e2e_open (resp->sealed, resp->sealed_size, &G.forger,
                                        plain, sizeof plain, &plain_len), AMI_E_DECRYPT);
        assert_int_equal (ami_e2e_open (resp->sealed, resp->sealed_size, &G.mdms,
                                        plain, sizeof plain, &plain_len), AMI_OK);
        assert_int_equal (ami_msg_decode (G.msg2, plain, plain_len), AMI_OK);
        assert_int_equal (G.msg2->type, AMI_MSG_READING);
        const ami_reading_t *reading = &G.msg2->reading;
        assert_string_equal (reading->meter_id, meter_id);
        assert_memory_equal (reading->request_id, request_id, AMI_REQUEST_ID_SIZE);
        assert_int_equal (reading->register_count, AMI_METER_REGISTERS);
        /* the meter's clock is the fleet's: within a few seconds of ours */
        assert_true (reading->read_ms + 5000 > s_now () && reading->read_ms < s_now () + 5000);
        bool found = false;
        for (uint32_t i = 0; i < reading->register_count; i++) {
            const ami_register_t *r = &reading->registers [i];
            static const uint8_t import [6] = { 1, 0, 1, 8, 0, 255 };
            static const uint8_t voltage [6] = { 1, 0, 32, 7, 0, 255 };
            if (memcmp (r->obis, import, 6) == 0) {
                found = true;
                energy = (uint64_t) r->value;
                assert_int_equal (r->unit, 30);         /* Wh */
                /* a meter a few years in service: 1 000 .. 50 000 kWh and more */
                assert_true (r->value >= 1000000);
            }
            if (memcmp (r->obis, voltage, 6) == 0) {
                /* 230 V +- a few percent, in 0.1 V */
                assert_int_equal (r->scaler, -1);
                assert_true (r->value > 2150 && r->value < 2450);
            }
        }
        assert_true (found);
    }
    zmsg_destroy (&msg);
    return energy;
}

/*  STATUS: meters, reads, refused, unreachable, malformed. */
static void
s_status (fx_t *fx, uint64_t out [5])
{
    assert_int_equal (zstr_send (fx->fleet, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (fx->fleet);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), 5);
    for (int i = 0; i < 5; i++) {
        char *s = zmsg_popstr (reply);
        out [i] = strtoull (s, NULL, 10);
        zstr_free (&s);
    }
    zmsg_destroy (&reply);
}

/*  One read of meter `index` with `counter`, issued at `now` (the MDMS's
    clock); expects `status`. */
static void
s_read_at (fx_t *fx, uint32_t index, uint64_t counter, uint64_t now, int status)
{
    char meter_id [AMI_MAX_ID + 1];
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command (ami_meter_id_format (index, meter_id), counter, now,
                            now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
    assert_non_null (msg);
    assert_string_equal (G.msg->read_resp.meter_id, meter_id);
    assert_memory_equal (G.msg->read_resp.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->read_resp.status, status);
    zmsg_destroy (&msg);
}

/*  One accepted read of meter `index` with `counter`; returns +A energy. */
static uint64_t
s_read (fx_t *fx, uint32_t index, uint64_t counter)
{
    char meter_id [AMI_MAX_ID + 1];
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command (ami_meter_id_format (index, meter_id), counter, s_now (),
                            s_now () + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    return s_expect_resp (fx, index, rid, AMI_OK);
}

/*  Collect HELLO chunks until `count` distinct meters are announced;
    checks each chunk and that exactly first..first+count-1 came. */
static void
s_expect_hello_round (fx_t *fx, uint32_t first, uint32_t count)
{
    uint8_t *seen = (uint8_t *) calloc (count, 1);
    assert_non_null (seen);
    uint32_t distinct = 0, chunks = 0;
    while (distinct < count) {
        zmsg_t *msg = s_expect (fx, AMI_MSG_HELLO, WAIT_MS);
        assert_non_null (msg);
        const ami_hello_t *hello = &G.msg->hello;
        assert_string_equal (hello->role, "meter");
        assert_string_equal (hello->node_id, "fleet-1");
        assert_true (hello->meter_count >= 1 && hello->meter_count <= AMI_MAX_HELLO_METERS);
        for (uint32_t i = 0; i < hello->meter_count; i++) {
            uint32_t index = ami_meter_id_parse (hello->meters [i]);
            char canonical [AMI_MAX_ID + 1];
            assert_string_equal (hello->meters [i], ami_meter_id_format (index, canonical));
            assert_true (index >= first && index - first < count);
            assert_false (seen [index - first]);     /* each meter once per round */
            seen [index - first] = 1;
            distinct++;
        }
        chunks++;
        zmsg_destroy (&msg);
    }
    assert_int_equal (chunks, (count + AMI_MAX_HELLO_METERS - 1) / AMI_MAX_HELLO_METERS);
    free (seen);
}


/* ---------------------------------------------------------------------- */
/*  Tests                                                                   */

/*  HELLO lists exactly the fleet's meters in chunks of <= 1024; HEALTH
    arrives every heartbeat; an aggregator HELLO makes the fleet re-send. */
static void
test_hello_health (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 101, 2500, 0);
    s_expect_hello_round (fx, 101, 2500);

    zmsg_t *msg = s_expect (fx, AMI_MSG_HEALTH, WAIT_MS);
    assert_non_null (msg);
    const ami_health_t *health = &G.msg->health;
    assert_string_equal (health->role, "meter");
    assert_string_equal (health->node_id, "fleet-1");
    assert_int_equal (health->state, AMI_STATE_READY);
    bool meters = false;
    for (uint32_t i = 0; i < health->stat_count; i++)
        if (streq (health->stats [i].name, "meters")) {
            meters = true;
            assert_int_equal (health->stats [i].value, 2500);
        }
    assert_true (meters);
    zmsg_destroy (&msg);
    /* and again one heartbeat later */
    msg = s_expect (fx, AMI_MSG_HEALTH, WAIT_MS);
    assert_non_null (msg);
    zmsg_destroy (&msg);

    /* the aggregator introduces itself (e.g. after a restart) */
    ami_msg_reset (G.msg2, AMI_MSG_HELLO);
    strcpy (G.msg2->hello.role, "aggregator");
    strcpy (G.msg2->hello.node_id, "agg-1");
    uint8_t buf [256];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
    s_send (fx, buf, len);
    s_expect_hello_round (fx, 101, 2500);
}

/*  A signed READ_REQ gets a sealed, meter-signed reading bound to the
    request; energy never decreases from one read to the next. */
static void
test_read (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    uint64_t e1 = s_read (fx, 1, 1);
    uint64_t e2 = s_read (fx, 1, 2);
    assert_true (e2 >= e1);
    /* counters are per meter: meter 7 starts from its own zero */
    s_read (fx, 7, 1);
    /* a counter may jump (the MDMS's retries burn numbers) */
    uint64_t e3 = s_read (fx, 1, 100);
    assert_true (e3 >= e2);
    uint64_t st [5];
    s_status (fx, st);
    assert_int_equal (st [0], 10);
    assert_int_equal (st [1], 4);
    assert_int_equal (st [2], 0);
}

/*  Every refusal is a signed READ_RESP with the right status and no
    sealed data; a meter not in the fleet is an ERROR AMI_E_UNREACHABLE. */
static void
test_refusals (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    uint64_t now = s_now ();

    /* forged: signed by a key that is not the MDMS's */
    size_t len = s_command ("MTR-000001", 1, now, now + 10000, G.forger.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_E_BAD_SIGNATURE);

    /* altered: one byte of the signed part (inside the request id) */
    len = s_command ("MTR-000001", 2, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    uint8_t *at = memmem (buf, len, rid, AMI_REQUEST_ID_SIZE);
    assert_non_null (at);
    at [0] ^= 0x01;
    rid [0] ^= 0x01;                /* the meter answers the id it received */
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_E_BAD_SIGNATURE);

    /* replayed: a valid command, accepted once, refused the second time */
    len = s_command ("MTR-000001", 3, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_OK);
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_E_REPLAY);
    /* ... and so is a fresh command with an older counter */
    len = s_command ("MTR-000001", 2, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_E_REPLAY);

    /* expired */
    len = s_command ("MTR-000001", 4, now - 60000, now - 30000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_E_EXPIRED);
    /* issued too far in the future (beyond the clock skew allowance) */
    len = s_command ("MTR-000001", 5, now + 3600000, now + 3610000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_E_EXPIRED);

    /* a command for meter 1 redirected to meter 2: the signature breaks,
       and meter 2 (the one addressed now) refuses it */
    len = s_command ("MTR-000001", 6, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    at = memmem (buf, len, "MTR-000001", 10);
    assert_non_null (at);
    at [9] = '2';
    s_send (fx, buf, len);
    s_expect_resp (fx, 2, rid, AMI_E_BAD_SIGNATURE);

    /* a validly signed command for a meter this fleet does not have */
    len = s_command ("MTR-000011", 1, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    zmsg_t *msg = s_expect (fx, AMI_MSG_ERROR, WAIT_MS);
    assert_non_null (msg);
    assert_true (G.msg->error.has_request_id);
    assert_memory_equal (G.msg->error.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->error.code, AMI_E_UNREACHABLE);
    assert_string_equal (G.msg->error.origin, "fleet-1");
    assert_non_null (strstr (G.msg->error.text, "MTR-000011"));
    zmsg_destroy (&msg);
    /* so is a non-canonical spelling of one of its meters */
    len = s_command ("MTR-1", 1, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    msg = s_expect (fx, AMI_MSG_ERROR, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (G.msg->error.code, AMI_E_UNREACHABLE);
    zmsg_destroy (&msg);

    /* meter 1 still works, with a counter above everything it accepted */
    s_read (fx, 1, 7);
    uint64_t st [5];
    s_status (fx, st);
    assert_int_equal (st [1], 2);       /* reads */
    assert_int_equal (st [2], 7);       /* refused */
    assert_int_equal (st [3], 2);       /* unreachable */
}

/*  The last accepted counter survives a restart of the fleet actor; the
    energy registers resume where they were. */
static void
test_counter_persists (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    uint64_t now = s_now ();
    size_t len = s_command ("MTR-000003", 5, now, now + 60000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    uint64_t e1 = s_expect_resp (fx, 3, rid, AMI_OK);

    /* restart, with the meter clock a day ahead */
    zactor_destroy (&fx->fleet);
    s_fleet_start (fx, 1, 10, 24 * 3600 * 1000LL);
    s_wait_hello (fx);
    /* the old command is now a replay */
    s_send (fx, buf, len);
    s_expect_resp (fx, 3, rid, AMI_E_REPLAY);
    /* the next counter works; a day later the energy register has grown
       from where it was (it did not restart from the model's initial value) */
    char meter_id [AMI_MAX_ID + 1] = "MTR-000003";
    now = s_now () + 24 * 3600 * 1000LL;
    len = s_command (meter_id, 6, now, now + 60000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
    zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (G.msg->read_resp.status, AMI_OK);
    uint8_t plain [AMI_MAX_SEALED];
    size_t plain_len = 0;
    assert_int_equal (ami_e2e_open (G.msg->read_resp.sealed, G.msg->read_resp.sealed_size,
                                    &G.mdms, plain, sizeof plain, &plain_len), AMI_OK);
    assert_int_equal (ami_msg_decode (G.msg2, plain, plain_len), AMI_OK);
    assert_memory_equal (G.msg2->reading.request_id, rid, AMI_REQUEST_ID_SIZE);
    uint64_t e2 = (uint64_t) G.msg2->reading.registers [1].value;   /* 1.0.1.8.0 */
    assert_int_equal (G.msg2->reading.registers [1].obis [2], 1);
    assert_int_equal (G.msg2->reading.registers [1].obis [3], 8);
    /* a household uses at least a few hundred Wh a day */
    if (e2 <= e1 + 500)
        print_message ("+A before the restart %" PRIu64 " Wh, a day later %" PRIu64 " Wh\n", e1, e2);
    assert_true (e2 > e1 + 500);
    zmsg_destroy (&msg);
    /* other meters' counters were not touched; the meter clock is a day
       ahead, so a command issued on today's clock has expired for it */
    s_read_at (fx, 4, 1, now, AMI_OK);
    s_read_at (fx, 5, 1, s_now (), AMI_E_EXPIRED);
}

/*  Garbage, truncated frames, wrong types and multi-frame messages are
    dropped and counted; the fleet keeps serving. */
static void
test_malformed (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    uint64_t now = s_now ();

    s_send (fx, "hello, meter", 12);                            /* garbage */
    s_send (fx, "", 0);                                         /* empty */
    size_t len = s_command ("MTR-000001", 1, now, now + 10000, G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len - 10);                                 /* truncated READ_REQ */
    s_send (fx, buf, 1);                                        /* a single byte of it */
    zmsg_t *multi = zmsg_new ();                                /* two frames */
    zmsg_append (multi, &(zframe_t *) { zframe_dup (fx->rid) });
    zmsg_addmem (multi, buf, len);
    zmsg_addmem (multi, buf, len);
    assert_int_equal (zmsg_send (&multi, fx->router), 0);
    /* well-formed, but not for a meter: dropped */
    ami_msg_reset (G.msg2, AMI_MSG_HEALTH);
    strcpy (G.msg2->health.role, "aggregator");
    strcpy (G.msg2->health.node_id, "agg-1");
    size_t hlen = 0;
    uint8_t hbuf [512];
    assert_int_equal (ami_msg_encode (G.msg2, hbuf, sizeof hbuf, &hlen), AMI_OK);
    s_send (fx, hbuf, hlen);
    /* random bytes, many times */
    for (int i = 0; i < 50; i++) {
        uint8_t junk [64];
        randombytes_buf (junk, sizeof junk);
        junk [0] = 0x90 + (i % 16);         /* msgpack fixarray of some arity */
        s_send (fx, junk, 1 + (size_t) (i % 64));
    }

    /* still serving: the intact command works (nothing above consumed it) */
    s_send (fx, buf, len);
    s_expect_resp (fx, 1, rid, AMI_OK);
    uint64_t st [5];
    s_status (fx, st);
    assert_int_equal (st [1], 1);           /* reads */
    assert_int_equal (st [4], 6 + 50);      /* malformed: 6 + the random ones */
}

/*  Memory of a 100 000-meter fleet. Prints the RSS it adds to this
    process (VmRSS from /proc/self/status) and asserts it is well under
    256 MiB; a read of its last meter works. */
static long
s_rss_kib (const char *field)
{
    FILE *f = fopen ("/proc/self/status", "r");
    if (!f)
        return -1;
    char line [256];
    long kib = -1;
    size_t n = strlen (field);
    while (fgets (line, sizeof line, f))
        if (strncmp (line, field, n) == 0)
            kib = atol (line + n + 1);
    fclose (f);
    return kib;
}

static void
test_rss_100k (void **state)
{
    fx_t *fx = (fx_t *) *state;
    long before = s_rss_kib ("VmRSS");
    int64_t t0 = zclock_mono ();
    s_fleet_start (fx, 1, 100000, 0);
    int64_t started = zclock_mono () - t0;
    s_expect_hello_round (fx, 1, 100000);
    /* reads of the first and the last meter: keys derived on demand */
    s_read (fx, 100000, 1);
    s_read (fx, 1, 1);
    long after = s_rss_kib ("VmRSS");
    assert_true (before > 0 && after > 0);
    print_message ("100000-meter fleet: start %" PRId64 " ms, RSS %ld KiB -> %ld KiB "
                   "(+%ld KiB, %.0f bytes/meter)\n", started, before, after, after - before,
                   (double) (after - before) * 1024.0 / 100000.0);
    assert_true (after - before < 64 * 1024);   /* far under 256 MiB */
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_hello_health, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_read, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_refusals, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_counter_persists, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_malformed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_rss_100k, s_setup, s_teardown),
    };
    return cmocka_run_group_tests_name ("meter fleet", tests, s_group_setup, s_group_teardown);
}
