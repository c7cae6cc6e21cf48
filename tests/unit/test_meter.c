/*  test_meter.c - the meter fleet simulator (ami-meter) against a test
    ROUTER that plays its aggregator, over CurveZMQ on 127.0.0.1.

    Requirements exercised: SEC-AUTHZ-2 (act only on MDMS-signed commands),
    SEC-INT-1 (meter-signed responses), SEC-INT-2 (replay, expiry, counters
    that survive a restart, a crash between commit and answer, counter
    jumps), SEC-INT-3 (request id bound inside the sealed reading),
    SEC-CONF-1 (reading sealed to the MDMS), SEC-CONF-3 (every sealed
    reading has one length), SEC-KEY-2 (the MDMS signing key rotated with
    an overlap: old and new accepted, then only the new), SEC-AVAIL-3 (a
    forged-command flood costs a bounded number of signed refusals), SEC-FAIL-1 (a failing state store: signed
    AMI_E_STORAGE, nothing sealed), SEC-VAL-1 (any bytes on the link),
    FUN-READ-1 (a read returns the registers), and
    the fleet's side of interval data (issue 5): blocks that open with
    the MDMS-side key, contiguous intervals, limits, batch bounds,
    credit, resends (ack timeout, refusal, aggregator HELLO),
    PROFILE-STOP and profile_done, paced and flood production.

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
#include <math.h>
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
#include "ami_store.h"
#include "ami_test.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

/*  Positive waits are generous (a loaded 2-core VM, valgrind); "nothing
    arrives" waits are far above a loopback round trip. */
#define WAIT_MS         5000
/*  A batch of a flood test under valgrind: deriving 1024 meters' keys
    takes ~0.1 s natively and ~50 times that under valgrind. */
#define BATCH_WAIT_MS   60000
/*  A whole flood test, natively about a second: a bound for loops that
    receive until everything came. */
#define TEST_DEADLINE_MS (10 * 60 * 1000)
/*  Heartbeat of profile tests' fleets: the DEALER's ZMTP timeout is 3
    heartbeats, and 1.5 s survives a loaded machine under valgrind. */
#define PROFILE_HEARTBEAT_MS 500
/*  ... and of the flood tests, whose test thread decrypts every block:
    under valgrind a 15 s ZMTP timeout keeps the link from flapping (the
    fleet would recover - it resends - but these tests check strict
    order). */
#define FLOOD_HEARTBEAT_MS  5000
#define HEARTBEAT_MS    100
#define POLL_MS         10
/*  SEC-CONF-3: the length of every sealed READING of the 19-register
    model (ami_meter.h "Padding"): a 513-byte padded plaintext + 48. */
#define SEALED_READING  561

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
        /* the fleet's routing id is that of its latest message, as an
           aggregator answers the connection a message came on (a fleet
           that restarted or reconnected, e.g. when a slow valgrind run
           missed ZMTP heartbeats, has a new one) */
        if (!fx->rid || !zframe_eq (fx->rid, zmsg_first (msg))) {
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

/*  Check a received READ_RESP (msg, owned by the caller): for (meter,
    request id) with `status`, signed by that meter's own derived key. For
    status 0 the sealed READING is opened with the MDMS keys, checked, and
    its +A energy (Wh) returned. */
static uint64_t
s_check_resp (zmsg_t *msg, uint32_t index, const uint8_t request_id [AMI_REQUEST_ID_SIZE],
              int status)
{
    assert_non_null (msg);
    zframe_t *body = zmsg_last (msg);
    assert_int_equal (ami_msg_decode (G.msg, zframe_data (body), zframe_size (body)), AMI_OK);
    assert_int_equal (G.msg->type, AMI_MSG_READ_RESP);
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
        /* SEC-CONF-3: one length for every reading, whatever it holds */
        assert_int_equal (resp->sealed_size, SEALED_READING);
        uint8_t plain [AMI_MAX_SEALED];
        size_t plain_len = 0;
        assert_int_equal (ami_e2e_open_padded (resp->sealed, resp->sealed_size, &G.mdms,
                                               plain, sizeof plain, &plain_len), AMI_OK);
        /* sealed to the MDMS: the forger's (or anyone else's) keys do not open it */
        assert_int_equal (ami_e2e_open_padded (resp->sealed, resp->sealed_size, &G.forger,
                                               plain, sizeof plain, &plain_len), AMI_E_DECRYPT);
        assert_int_equal (ami_e2e_open_padded (resp->sealed, resp->sealed_size, &G.mdms,
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
    return energy;
}

/*  Expect a READ_RESP and check it as s_check_resp does. */
static uint64_t
s_expect_resp (fx_t *fx, uint32_t index, const uint8_t request_id [AMI_REQUEST_ID_SIZE], int status)
{
    zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
    assert_non_null (msg);
    uint64_t energy = s_check_resp (msg, index, request_id, status);
    zmsg_destroy (&msg);
    return energy;
}

/*  STATUS frames (ami_meter.h). */
enum {
    ST_METERS, ST_READS, ST_REFUSED, ST_UNREACHABLE, ST_MALFORMED,
    ST_BLOCKS, ST_READINGS, ST_ACKED, ST_CLOCK, ST_SENT, ST_RESENT,
    ST_INFLIGHT, ST_DONE, ST_STORE_ERRORS, ST_REFUSALS_DROPPED, ST_MDMS_KEYS, ST_CREDIT,
    ST_RECOVERED, ST_CLIPPED, ST_BUSY, ST_PENDING,
    ST_COUNT
};

static void
s_status (fx_t *fx, uint64_t out [ST_COUNT])
{
    assert_int_equal (zstr_send (fx->fleet, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (fx->fleet);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), ST_COUNT);
    for (int i = 0; i < ST_COUNT; i++) {
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
    uint64_t st [ST_COUNT];
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
    uint64_t st [ST_COUNT];
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
    assert_int_equal (ami_e2e_open_padded (G.msg->read_resp.sealed, G.msg->read_resp.sealed_size,
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
    uint64_t st [ST_COUNT];
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
    /* with its load profile (paced: no block is due during the test; the
       per-meter profile state is allocated and touched at start) */
    ami_meter_config_t config = s_config (fx, 1, 100000);
    config.profile.enabled = true;
    config.profile.time_scale = 1;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
    zsock_set_rcvtimeo (fx->fleet, WAIT_MS);
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

/* ---------------------------------------------------------------------- */
/*  Interval data (load profile)                                            */

/*  2026-06-01 00:00:00 UTC: a whole day, so a multiple of every interval. */
#define P_START         1780272000LL
#define P_INTERVAL      900
/*  "Nothing more arrives" windows: far above a loopback round trip and a
    batch build (milliseconds), far below the ack timeout (10 s). */
#define QUIET_MS        300

static void
s_fleet_start_profile_hb (fx_t *fx, uint32_t count, const ami_meter_profile_config_t *profile,
                          int heartbeat_ms)
{
    ami_meter_config_t config = s_config (fx, 1, count);
    config.profile = *profile;
    config.heartbeat_ms = heartbeat_ms;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
    zsock_set_rcvtimeo (fx->fleet, WAIT_MS);
    zframe_destroy (&fx->rid);
}

static void
s_fleet_start_profile (fx_t *fx, uint32_t count, const ami_meter_profile_config_t *profile)
{
    s_fleet_start_profile_hb (fx, count, profile, PROFILE_HEARTBEAT_MS);
}

static ami_meter_profile_config_t
s_profile (uint32_t block, uint32_t time_scale, int64_t start, uint64_t limit)
{
    ami_meter_profile_config_t profile;
    memset (&profile, 0, sizeof profile);
    profile.enabled = true;
    profile.interval_s = P_INTERVAL;
    profile.block = block;
    profile.time_scale = time_scale;
    profile.start_s = start;
    profile.limit = limit;
    return profile;
}

/*  BATCH_ACK(batch_id, status, credit) to the fleet, as its aggregator. */
static void
s_ack (fx_t *fx, uint64_t batch_id, int status, uint32_t credit)
{
    ami_msg_reset (G.msg2, AMI_MSG_BATCH_ACK);
    G.msg2->batch_ack.batch_id = batch_id;
    G.msg2->batch_ack.status = (uint16_t) status;
    G.msg2->batch_ack.credit = credit;
    uint8_t buf [64];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
    s_send (fx, buf, len);
}

/*  The aggregator introduces itself (as after a restart). */
static void
s_agg_hello (fx_t *fx)
{
    ami_msg_reset (G.msg2, AMI_MSG_HELLO);
    strcpy (G.msg2->hello.role, "aggregator");
    strcpy (G.msg2->hello.node_id, "agg-1");
    uint8_t buf [256];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
    s_send (fx, buf, len);
}

/*  Next BATCH within timeout_ms (other messages skipped), checked as a
    fleet batch; NULL if none. G.msg holds it decoded. */
static zmsg_t *
s_expect_batch (fx_t *fx, int timeout_ms)
{
    zmsg_t *msg = s_expect (fx, AMI_MSG_BATCH, timeout_ms);
    if (msg) {
        assert_string_equal (G.msg->batch.origin, "fleet-1");
        assert_true (G.msg->batch.block_count >= 1
                  && G.msg->batch.block_count <= AMI_MAX_BATCH_BLOCKS);
        assert_true (zframe_size (zmsg_last (msg)) <= AMI_BATCH_MAX_BYTES);
    }
    return msg;
}

/*  Poll STATUS until profile_done is `done` (deadline WAIT_MS), acking
    with status 0 any batch that still arrives; returns the last STATUS. */
typedef struct tally_s tally_t;
static bool s_tally_batch (tally_t *t);

static void
s_wait_done (fx_t *fx, uint64_t st [ST_COUNT], tally_t *t)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (true) {
        s_status (fx, st);
        if (st [ST_DONE] == 1)
            return;
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, POLL_MS);
        if (msg) {
            if (t)
                s_tally_batch (t);
            s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
            zmsg_destroy (&msg);
        }
    }
}

/*  What the MDMS would see: every block opened with the MDMS-side key,
    decoded, checked against its header and against the meter's previous
    block (contiguous intervals, registers that never go down). */
struct tally_s {
    uint32_t count;             /* meters 1..count */
    int64_t start;              /* first interval start; 0 = learn it */
    int64_t *last_end;          /* per meter: last interval end seen */
    uint64_t *last_import;
    uint64_t *last_export;
    uint64_t *intervals;        /* per meter */
    uint8_t (*keys) [AMI_E2E_PROFILE_KEY_SIZE];
    bool *has_key;
    uint64_t total;             /* intervals */
    uint64_t blocks;
    uint32_t max_records;       /* in one block */
    uint32_t max_blocks;        /* in one batch */
    uint64_t next_id;           /* batch ids run on from the first one */
    uint64_t duplicates;        /* batches seen again (resent) */
};

static tally_t *
s_tally_new (uint32_t count, int64_t start)
{
    tally_t *t = (tally_t *) calloc (1, sizeof *t);
    assert_non_null (t);
    t->count = count;
    t->start = start;
    t->last_end = (int64_t *) calloc (count + 1, sizeof (int64_t));
    t->last_import = (uint64_t *) calloc (count + 1, sizeof (uint64_t));
    t->last_export = (uint64_t *) calloc (count + 1, sizeof (uint64_t));
    t->intervals = (uint64_t *) calloc (count + 1, sizeof (uint64_t));
    t->keys = calloc (count + 1, AMI_E2E_PROFILE_KEY_SIZE);
    t->has_key = (bool *) calloc (count + 1, sizeof (bool));
    assert_true (t->last_end && t->last_import && t->last_export && t->intervals
              && t->keys && t->has_key);
    return t;
}

static void
s_tally_destroy (tally_t **t_p)
{
    tally_t *t = *t_p;
    free (t->last_end); free (t->last_import); free (t->last_export);
    free (t->intervals); free (t->keys); free (t->has_key);
    free (t);
    *t_p = NULL;
}

/*  Open block with its meter's profile key and decode it into G.msg2:
    a PROFILE of the block's meter and seq (asserted). */
static const ami_profile_t *
s_open_profile (const uint8_t *key, const ami_block_t *block)
{
    uint8_t plain [AMI_MAX_SEALED];
    size_t plain_len = 0;
    assert_int_equal (ami_e2e_profile_open (key, block->meter_id, block->seq, block->box,
                                            block->box_size, plain, sizeof plain,
                                            &plain_len), AMI_OK);
    assert_int_equal (ami_msg_decode (G.msg2, plain, plain_len), AMI_OK);
    assert_int_equal (G.msg2->type, AMI_MSG_PROFILE);
    assert_string_equal (G.msg2->profile.meter_id, block->meter_id);
    assert_int_equal (G.msg2->profile.seq, block->seq);
    return &G.msg2->profile;
}

/*  Check and count the batch in G.msg. Delivery is at-least-once: a
    batch seen before (resent because its ack came late, e.g. while this
    test is slow under valgrind) is counted as a duplicate and skipped;
    new batches must have the next id (the fleet numbers them in order). */
static bool
s_tally_batch (tally_t *t)
{
    const ami_batch_t *batch = &G.msg->batch;
    if (t->next_id && batch->batch_id < t->next_id) {
        t->duplicates++;
        return false;
    }
    assert_true (t->next_id == 0 || batch->batch_id == t->next_id);
    t->next_id = batch->batch_id + 1;
    uint64_t now = s_now ();
    if (batch->block_count > t->max_blocks)
        t->max_blocks = batch->block_count;
    for (uint32_t b = 0; b < batch->block_count; b++) {
        const ami_block_t *block = &batch->blocks [b];
        uint32_t index = ami_meter_id_parse (block->meter_id);
        assert_true (index >= 1 && index <= t->count);
        if (!t->has_key [index]) {
            uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
            ami_e2e_meter_keypair (G.seed, index, pk, NULL);
            assert_int_equal (ami_e2e_profile_key_mdms (&G.mdms, pk, t->keys [index]), AMI_OK);
            t->has_key [index] = true;
        }
        const ami_profile_t *profile = s_open_profile (t->keys [index], block);
        /* made by the wall clock, just now */
        assert_true (profile->made_ms + BATCH_WAIT_MS > now && profile->made_ms <= now + 1000);
        assert_true (profile->record_count >= 1);
        if (profile->record_count > t->max_records)
            t->max_records = profile->record_count;
        for (uint32_t r = 0; r < profile->record_count; r++) {
            const ami_interval_t *rec = &profile->records [r];
            assert_int_equal (rec->end_s % P_INTERVAL, 0);
            if (t->last_end [index] == 0) {
                if (t->start == 0)
                    t->start = (int64_t) rec->end_s - P_INTERVAL;
                /* the first interval of every meter starts at the start */
                assert_int_equal (rec->end_s, t->start + P_INTERVAL);
            }
            else {
                /* contiguous: no gap, no repeat */
                assert_int_equal (rec->end_s, t->last_end [index] + P_INTERVAL);
                assert_true (rec->import_wh >= t->last_import [index]);
                assert_true (rec->export_wh >= t->last_export [index]);
            }
            assert_true (rec->import_wh >= 1000000);    /* a meter years in service */
            assert_int_equal (rec->status, AMI_Q_VALID);
            t->last_end [index] = rec->end_s;
            t->last_import [index] = rec->import_wh;
            t->last_export [index] = rec->export_wh;
            t->intervals [index]++;
            t->total++;
        }
        /* seq = interval number of the last record */
        assert_int_equal (block->seq, profile->records [profile->record_count - 1].end_s / P_INTERVAL);
        t->blocks++;
    }
    return true;
}

/*  The registers move: over a day a household imports energy. */
static void
s_tally_check_day (const tally_t *t, uint32_t index, uint64_t first_import)
{
    assert_true (t->last_import [index] > first_import);
}

/*  A limited run in flood mode: exactly meters x limit intervals, blocks
    of `block` intervals then the remainder, every block opens with the
    MDMS-side key and decodes to a PROFILE of its meter; then done. */
static void
test_profile_limit (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 10);
    s_fleet_start_profile (fx, 20, &profile);
    tally_t *t = s_tally_new (20, P_START);
    uint64_t batches = 0;
    int64_t deadline = zclock_mono () + TEST_DEADLINE_MS;
    while (t->total < 20 * 10) {
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        batches += s_tally_batch (t);
        /* a box does not open under another meter's key */
        const ami_block_t *block = &G.msg->batch.blocks [0];
        uint32_t index = ami_meter_id_parse (block->meter_id);
        uint8_t other [AMI_E2E_PROFILE_KEY_SIZE], plain [AMI_MAX_SEALED];
        memcpy (other, t->keys [index == 1 ? 2 : 1], sizeof other);
        if (!t->has_key [index == 1 ? 2 : 1])
            memset (other, 0x55, sizeof other);
        size_t plain_len = 0;
        assert_int_equal (ami_e2e_profile_open (other, block->meter_id, block->seq, block->box,
                                                block->box_size, plain, sizeof plain, &plain_len),
                          AMI_E_DECRYPT);
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
    }
    assert_int_equal (t->total, 200);
    for (uint32_t i = 1; i <= 20; i++) {
        assert_int_equal (t->intervals [i], 10);
        assert_int_equal (t->last_end [i], P_START + 10 * P_INTERVAL);
    }
    assert_int_equal (t->blocks, 20 * 3);       /* 4 + 4 + 2 */
    assert_int_equal (t->max_records, 4);
    uint64_t st [ST_COUNT];
    s_wait_done (fx, st, t);
    assert_int_equal (st [ST_BLOCKS], 60);
    assert_int_equal (st [ST_READINGS], 200);
    assert_int_equal (st [ST_ACKED], 200);
    assert_int_equal (st [ST_CLOCK], P_START + 10 * P_INTERVAL);
    assert_int_equal (st [ST_SENT], batches);
    assert_int_equal (st [ST_RESENT], t->duplicates);
    assert_int_equal (st [ST_INFLIGHT], 0);
    /* the limit holds: nothing more */
    zmsg_t *msg = s_expect_batch (fx, QUIET_MS);
    assert_null (msg);
    /* HEALTH carries the same figures */
    deadline = zclock_mono () + WAIT_MS;
    bool seen = false;
    while (!seen && zclock_mono () < deadline) {
        msg = s_expect (fx, AMI_MSG_HEALTH, WAIT_MS);
        assert_non_null (msg);
        const ami_health_t *health = &G.msg->health;
        uint64_t done = 0, readings = 0, acked = 0, clock = 0, inflight = 99;
        for (uint32_t i = 0; i < health->stat_count; i++) {
            const ami_stat_t *stat = &health->stats [i];
            if (streq (stat->name, "profile_done")) done = stat->value;
            if (streq (stat->name, "profile_readings")) readings = stat->value;
            if (streq (stat->name, "profile_acked")) acked = stat->value;
            if (streq (stat->name, "profile_clock")) clock = stat->value;
            if (streq (stat->name, "batches_inflight")) inflight = stat->value;
        }
        if (done == 1) {
            assert_int_equal (readings, 200);
            assert_int_equal (acked, 200);
            assert_int_equal (clock, P_START + 10 * P_INTERVAL);
            assert_int_equal (inflight, 0);
            seen = true;
        }
        zmsg_destroy (&msg);
    }
    assert_true (seen);
    s_tally_destroy (&t);
}

static long s_rss_kib (const char *field);

/*  A simulated day of a larger fleet in flood mode: exactly meters x 96
    intervals, batches of <= 1024 blocks. Prints the production rate (the
    test decrypts every block meanwhile, so it is a lower bound).
    AMI_METER_FLOOD_METERS=N runs it with N meters (e.g. 100000, to
    measure; not part of the normal run). */
static void
test_profile_flood_day (void **state)
{
    fx_t *fx = (fx_t *) *state;
    uint32_t meters = 2000;
    const char *env = getenv ("AMI_METER_FLOOD_METERS");
    if (env && atol (env) > 0)
        meters = (uint32_t) atol (env);
    long rss0 = s_rss_kib ("VmRSS");
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 96);
    int64_t t0 = zclock_mono ();
    s_fleet_start_profile_hb (fx, meters, &profile, FLOOD_HEARTBEAT_MS);
    tally_t *t = s_tally_new (meters, P_START);
    uint64_t expected = (uint64_t) meters * 96;
    /* round 2's first block (meter 1's second block): keys are cached
       from then on, so the steady rate is measured after it */
    uint64_t round2_seq = (uint64_t) (P_START / P_INTERVAL) + 8;
    int64_t t_round2 = 0;
    uint64_t total_round2 = 0;
    uint64_t first_import = 0;
    while (t->total < expected) {
        assert_true (zclock_mono () - t0 < TEST_DEADLINE_MS);
        zmsg_t *msg = s_expect_batch (fx, BATCH_WAIT_MS);
        assert_non_null (msg);
        if (!t_round2)
            for (uint32_t b = 0; b < G.msg->batch.block_count; b++)
                if (G.msg->batch.blocks [b].seq == round2_seq) {
                    t_round2 = zclock_mono ();
                    total_round2 = t->total + b * 4;    /* about: blocks before it */
                    break;
                }
        s_tally_batch (t);
        if (!first_import)
            first_import = t->last_import [1];
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
    }
    int64_t t_end = zclock_mono ();
    long rss1 = s_rss_kib ("VmRSS");
    long hwm = s_rss_kib ("VmHWM");
    assert_int_equal (t->total, expected);
    for (uint32_t i = 1; i <= meters; i++) {
        assert_int_equal (t->intervals [i], 96);
        assert_int_equal (t->last_end [i], P_START + 86400);
    }
    assert_int_equal (t->blocks, (uint64_t) meters * 24);
    assert_true (t->max_blocks <= AMI_MAX_BATCH_BLOCKS);
    s_tally_check_day (t, 1, first_import);
    uint64_t st [ST_COUNT];
    s_wait_done (fx, st, t);
    assert_int_equal (st [ST_READINGS], expected);
    assert_int_equal (st [ST_ACKED], expected);
    /* none resent unless this test was too slow to ack in time */
    assert_int_equal (st [ST_RESENT], t->duplicates);
    assert_null (s_expect_batch (fx, QUIET_MS));
    double steady_s = (double) (t_end - t_round2) / 1000.0;
    print_message ("flood, %u meters x 96 intervals: %.2f s in all, %.0f readings/s after "
                   "the first round (keys cached); RSS +%ld KiB (process %ld KiB, peak %ld KiB)\n",
                   meters, (double) (t_end - t0) / 1000.0,
                   steady_s > 0 ? (double) (expected - total_round2) / steady_s : 0.0,
                   rss1 - rss0, rss1, hwm);
    s_tally_destroy (&t);
}

/*  Big blocks (a day per block): the byte bound, not the block count,
    closes batches, and every batch frame stays under AMI_BATCH_MAX_BYTES. */
static void
test_profile_big_blocks (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (96, 0, P_START, 96);
    s_fleet_start_profile_hb (fx, 2000, &profile, FLOOD_HEARTBEAT_MS);
    tally_t *t = s_tally_new (2000, P_START);
    uint64_t batches = 0;
    size_t smallest = AMI_MAX_FRAME, last = 0;
    int64_t deadline = zclock_mono () + TEST_DEADLINE_MS;
    while (t->total < 2000 * 96) {
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, BATCH_WAIT_MS);     /* checks the size bound */
        assert_non_null (msg);
        if (s_tally_batch (t)) {
            if (batches && last < smallest)
                smallest = last;
            last = zframe_size (zmsg_last (msg));
            batches++;
        }
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
    }
    assert_int_equal (t->blocks, 2000);
    assert_int_equal (t->max_records, 96);
    /* ~1.5 KiB blocks: a batch holds ~600, so 2000 take 4 batches */
    assert_true (t->max_blocks < AMI_MAX_BATCH_BLOCKS);
    assert_true (batches >= 3);
    /* and every batch but the last is full to within 1 % (the builder
       counts a few bytes per block more than msgpack needs) */
    print_message ("day blocks: %" PRIu64 " batches, smallest full one %zu bytes\n",
                   batches, smallest);
    assert_true (smallest >= AMI_BATCH_MAX_BYTES - AMI_BATCH_MAX_BYTES / 100);
    uint64_t st [ST_COUNT];
    s_wait_done (fx, st, t);
    assert_int_equal (st [ST_ACKED], 2000 * 96);
    s_tally_destroy (&t);
}

/*  Credit: never more batches in flight than the last credit granted;
    credit 0 with nothing in flight -> one probe after ~AMI_BATCH_RETRY_MS,
    and only one while it is unanswered. */
static void
test_profile_credit (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 0);
    s_fleet_start_profile (fx, 50, &profile);
    uint64_t id [6];
    /* the initial credit: 4 batches, then nothing */
    for (int i = 0; i < 4; i++) {
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        id [i] = G.msg->batch.batch_id;
        zmsg_destroy (&msg);
    }
    assert_null (s_expect_batch (fx, QUIET_MS));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_SENT], 4);
    assert_int_equal (st [ST_INFLIGHT], 4);
    assert_int_equal (st [ST_DONE], 0);
    assert_int_equal (st [ST_CREDIT], AMI_CREDIT_INITIAL);      /* issue 6: reported */

    /* two acks granting 2: still 2 in flight, so nothing new */
    s_ack (fx, id [0], AMI_OK, 2);
    s_ack (fx, id [1], AMI_OK, 2);
    assert_null (s_expect_batch (fx, QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_CREDIT], 2);
    /* one more: 1 in flight under a credit of 2 -> exactly one new batch */
    s_ack (fx, id [2], AMI_OK, 2);
    zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
    assert_non_null (msg);
    id [4] = G.msg->batch.batch_id;
    zmsg_destroy (&msg);
    assert_null (s_expect_batch (fx, QUIET_MS));

    /* credit 0 and nothing in flight: one probe after about a second */
    s_ack (fx, id [3], AMI_OK, 0);
    s_ack (fx, id [4], AMI_OK, 0);
    int64_t t0 = zclock_mono ();
    msg = s_expect_batch (fx, AMI_BATCH_RETRY_MS + WAIT_MS);
    assert_non_null (msg);
    int64_t waited = zclock_mono () - t0;
    print_message ("credit 0: probe after %" PRId64 " ms\n", waited);
    assert_true (waited >= AMI_BATCH_RETRY_MS - 100);
    id [5] = G.msg->batch.batch_id;
    assert_true (id [5] != id [4]);
    zmsg_destroy (&msg);
    /* the probe is in flight and credit is 0: no second probe */
    assert_null (s_expect_batch (fx, AMI_BATCH_RETRY_MS + QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_INFLIGHT], 1);
    assert_int_equal (st [ST_SENT], 6);
    assert_int_equal (st [ST_CREDIT], 0);
    /* issue 6: HEALTH carries the credit too, so amictl status shows it */
    msg = s_expect (fx, AMI_MSG_HEALTH, WAIT_MS);
    assert_non_null (msg);
    bool credit_seen = false;
    for (uint32_t i = 0; i < G.msg->health.stat_count; i++)
        if (streq (G.msg->health.stats [i].name, "credit")) {
            credit_seen = true;
            assert_int_equal (G.msg->health.stats [i].value, 0);
        }
    assert_true (credit_seen);
    zmsg_destroy (&msg);
    /* an ack for a batch it does not hold is ignored, credit included */
    s_ack (fx, id [0], AMI_OK, 4);
    assert_null (s_expect_batch (fx, QUIET_MS));
    /* the probe's ack with credit again: production resumes */
    s_ack (fx, id [5], AMI_OK, 4);
    msg = s_expect_batch (fx, WAIT_MS);
    assert_non_null (msg);
    zmsg_destroy (&msg);
    s_status (fx, st);
    assert_int_equal (st [ST_CREDIT], 4);
}

/*  Receive the only batch of a 10-meter, one-block run. Returns its
    frame (copied) and id. */
static zframe_t *
s_single_batch (fx_t *fx, int ack_timeout_ms, uint64_t *id)
{
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 4);
    profile.ack_timeout_ms = ack_timeout_ms;
    s_fleet_start_profile (fx, 10, &profile);
    zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (G.msg->batch.block_count, 10);
    *id = G.msg->batch.batch_id;
    zframe_t *frame = zframe_dup (zmsg_last (msg));
    zmsg_destroy (&msg);
    return frame;
}

/*  The next BATCH is the same batch again: same id, same bytes. */
static void
s_expect_same (fx_t *fx, const zframe_t *frame, uint64_t id, int timeout_ms)
{
    zmsg_t *msg = s_expect_batch (fx, timeout_ms);
    assert_non_null (msg);
    assert_int_equal (G.msg->batch.batch_id, id);
    assert_true (zframe_eq (zmsg_last (msg), (zframe_t *) frame));
    zmsg_destroy (&msg);
}

/*  A batch whose ack does not come is resent after the ack timeout with
    the same id and bytes; while the aggregator stays silent no further
    copy is queued (a dead link would pile them up), once it is heard
    the resends go on; once acked, the fleet is done. */
static void
test_profile_ack_timeout (void **state)
{
    fx_t *fx = (fx_t *) *state;
    uint64_t id;
    int64_t t0 = zclock_mono ();
    zframe_t *frame = s_single_batch (fx, 400, &id);
    s_expect_same (fx, frame, id, WAIT_MS);
    assert_true (zclock_mono () - t0 >= 400);
    /* silence: no third copy over two more timeouts */
    assert_null (s_expect_batch (fx, 2 * 400 + QUIET_MS));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_SENT], 1);
    assert_int_equal (st [ST_RESENT], 1);
    /* the aggregator speaks (here: an ack for nothing the fleet holds) */
    s_ack (fx, id + 1000, AMI_OK, AMI_CREDIT_INITIAL);
    s_expect_same (fx, frame, id, WAIT_MS);
    s_status (fx, st);
    assert_int_equal (st [ST_RESENT], 2);
    assert_int_equal (st [ST_DONE], 0);     /* made everything, not acked */
    assert_int_equal (st [ST_INFLIGHT], 1);
    s_ack (fx, id, AMI_OK, AMI_CREDIT_INITIAL);
    s_wait_done (fx, st, NULL);
    assert_int_equal (st [ST_ACKED], 40);
    assert_int_equal (st [ST_INFLIGHT], 0);
    /* a duplicate ack changes nothing, and nothing is resent any more */
    s_ack (fx, id, AMI_OK, AMI_CREDIT_INITIAL);
    assert_null (s_expect_batch (fx, 400 + QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_ACKED], 40);
    zframe_destroy (&frame);
}

/*  BUSY (custody not taken, credit 0): the same batch comes again after
    about AMI_BATCH_RETRY_MS; status 0 then ends it. */
static void
test_profile_busy (void **state)
{
    fx_t *fx = (fx_t *) *state;
    uint64_t id;
    zframe_t *frame = s_single_batch (fx, 0, &id);
    s_ack (fx, id, AMI_E_BUSY, 0);
    int64_t t0 = zclock_mono ();
    s_expect_same (fx, frame, id, AMI_BATCH_RETRY_MS + WAIT_MS);
    int64_t waited = zclock_mono () - t0;
    assert_true (waited >= AMI_BATCH_RETRY_MS - 100);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_ACKED], 0);
    assert_int_equal (st [ST_RESENT], 1);
    assert_int_equal (st [ST_DONE], 0);
    s_ack (fx, id, AMI_OK, AMI_CREDIT_INITIAL);
    s_wait_done (fx, st, NULL);
    assert_int_equal (st [ST_ACKED], 40);
    assert_int_equal (st [ST_READINGS], 40);
    zframe_destroy (&frame);
}

/*  A HELLO from the aggregator (it restarted): the fleet re-introduces
    itself and resends every unacknowledged batch at once, unchanged. */
static void
test_profile_hello_resend (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 0);
    s_fleet_start_profile (fx, 50, &profile);
    zframe_t *frames [4];
    uint64_t ids [4];
    for (int i = 0; i < 4; i++) {
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        ids [i] = G.msg->batch.batch_id;
        frames [i] = zframe_dup (zmsg_last (msg));
        zmsg_destroy (&msg);
    }
    int64_t t0 = zclock_mono ();
    s_agg_hello (fx);
    s_expect_hello_round (fx, 1, 50);
    for (int i = 0; i < 4; i++)
        s_expect_same (fx, frames [i], ids [i], WAIT_MS);
    /* long before any ack timeout */
    assert_true (zclock_mono () - t0 < AMI_BATCH_ACK_TIMEOUT_MS / 2);
    /* still 4 in flight under a credit of 4: nothing else */
    assert_null (s_expect_batch (fx, QUIET_MS));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_SENT], 4);
    assert_int_equal (st [ST_RESENT], 4);
    assert_int_equal (st [ST_INFLIGHT], 4);
    for (int i = 0; i < 4; i++)
        zframe_destroy (&frames [i]);
}

/*  PROFILE-STOP: no new blocks after it, what was made is delivered, and
    profile_done becomes 1 once all of it is acknowledged. */
static void
test_profile_stop (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 0);
    s_fleet_start_profile (fx, 50, &profile);
    tally_t *t = s_tally_new (50, P_START);
    for (int i = 0; i < 6; i++) {
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        s_tally_batch (t);
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
    }
    assert_int_equal (zstr_send (fx->fleet, "PROFILE-STOP"), 0);
    uint64_t st [ST_COUNT];
    s_status (fx, st);          /* answered after the stop was handled */
    uint64_t blocks = st [ST_BLOCKS], readings = st [ST_READINGS];
    assert_true (blocks >= 6 * 1024 / 2);
    /* deliver the rest: everything made arrives, and nothing more */
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (true) {
        s_status (fx, st);
        if (st [ST_DONE])
            break;
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, POLL_MS);
        if (msg) {
            s_tally_batch (t);
            s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
            zmsg_destroy (&msg);
        }
    }
    assert_int_equal (st [ST_BLOCKS], blocks);
    assert_int_equal (st [ST_READINGS], readings);
    assert_int_equal (st [ST_ACKED], readings);
    assert_int_equal (t->total, readings);
    assert_int_equal (st [ST_INFLIGHT], 0);
    assert_null (s_expect_batch (fx, QUIET_MS));
    /* a second PROFILE-STOP is harmless */
    assert_int_equal (zstr_send (fx->fleet, "PROFILE-STOP"), 0);
    s_status (fx, st);
    assert_int_equal (st [ST_DONE], 1);
    s_tally_destroy (&t);
}

/*  Paced (time-scale 7200: a 4 x 15 min round every 0.5 s, starting at
    the fleet's clock rounded down to the interval): rounds come at the
    simulated pace, not as fast as credit allows, and never ahead of the
    simulated clock. */
static void
test_profile_paced (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (4, 7200, 0, 0);
    uint64_t started_s = s_now () / 1000;
    int64_t t0 = zclock_mono ();
    s_fleet_start_profile (fx, 10, &profile);
    tally_t *t = s_tally_new (10, 0);
    zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
    assert_non_null (msg);
    s_tally_batch (t);
    s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
    zmsg_destroy (&msg);
    /* it started at the fleet's clock rounded down to 15 minutes */
    assert_true (t->start <= (int64_t) started_s + 1 && t->start + P_INTERVAL > (int64_t) started_s - 5);
    assert_int_equal (t->start % P_INTERVAL, 0);
    /* for 1.2 s more: 2 or 3 rounds at 0.5 s, never dozens */
    int64_t until = zclock_mono () + 1200;
    uint64_t rounds = 0;
    while (zclock_mono () < until) {
        msg = s_expect_batch (fx, (int) (until - zclock_mono ()));
        if (!msg)
            break;
        /* never ahead of the simulated clock */
        uint64_t sim_now = started_s + (uint64_t) ((zclock_mono () - t0) * 7200 / 1000) + 7200;
        for (uint32_t b = 0; b < G.msg->batch.block_count; b++)
            assert_true (G.msg->batch.blocks [b].seq * P_INTERVAL <= sim_now);
        s_tally_batch (t);
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        rounds++;
        zmsg_destroy (&msg);
    }
    print_message ("paced: %" PRIu64 " rounds in 1.2 s at 0.5 s a round\n", rounds);
    assert_true (rounds >= 1 && rounds <= 3);
    assert_int_equal (t->total, (rounds + 1) * 10 * 4);
    s_tally_destroy (&t);
}

/*  The model's fast path (time-of-day table) integrates exactly what
    ami_meter_model_power_w gives: the same registers to the bit as the
    step-by-step formula, for meters with and without solar, over days. */
static void
test_profile_model_exact (void **state)
{
    (void) state;
    for (uint32_t index = 1; index <= 64; index++) {
        ami_meter_model_t fast, ref;
        ami_meter_model_init (&fast, index, 0x5eed0000ULL + index, P_START + index * 60);
        ref = fast;
        int64_t until = P_START + 3 * 86400 + 7;
        ami_meter_model_advance (&fast, until);
        while (ref.clock_s + AMI_METER_STEP_S <= until) {
            int64_t mid = ref.clock_s + AMI_METER_STEP_S / 2;
            double p = ami_meter_model_power_w (&ref, mid);
            uint64_t mwh = (uint64_t) (fabs (p) * AMI_METER_STEP_S / 3.6 + 0.5);
            int64_t of_day = mid % 86400;
            int tariff = of_day >= 7 * 3600 && of_day < 23 * 3600 ? 0 : 1;
            uint64_t total = (p >= 0 ? ref.residue_mwh_i : ref.residue_mwh_e) + mwh;
            if (p >= 0) {
                ref.import_wh [tariff] += total / 1000;
                ref.residue_mwh_i = (uint32_t) (total % 1000);
            }
            else {
                ref.export_wh [tariff] += total / 1000;
                ref.residue_mwh_e = (uint32_t) (total % 1000);
            }
            ref.clock_s += AMI_METER_STEP_S;
        }
        assert_memory_equal (&fast, &ref, sizeof fast);
    }
}

/*  Configurations that cannot work are refused at start. */
static void
test_profile_config (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t bad [4];
    bad [0] = s_profile (4, 0, P_START, 0);
    bad [0].interval_s = 7 * 60;            /* does not divide a day */
    bad [1] = s_profile (AMI_MAX_PROFILE_RECORDS + 1, 0, P_START, 0);
    bad [2] = s_profile (4, 0, P_START + 60, 0);    /* not on an interval boundary */
    bad [3] = s_profile (4, AMI_METER_MAX_TIME_SCALE + 1, P_START, 0);
    for (int i = 0; i < 4; i++) {
        ami_meter_config_t config = s_config (fx, 1, 10);
        config.profile = bad [i];
        zactor_t *fleet = ami_meter_new (&config);
        assert_null (fleet);
    }
}

/* ---------------------------------------------------------------------- */
/*  Security requirements (issue 4): SEC-CONF-3, SEC-INT-2, SEC-FAIL-1     */

/*  Send a read of meter `index` with `counter`, issued now; fills rid. */
static void
s_send_read (fx_t *fx, uint32_t index, uint64_t counter, uint8_t rid [AMI_REQUEST_ID_SIZE])
{
    char meter_id [AMI_MAX_ID + 1];
    uint8_t buf [512];
    uint64_t now = s_now ();
    size_t len = s_command (ami_meter_id_format (index, meter_id), counter, now, now + 60000,
                            G.mdms.sign_sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
}

/*  A read of meter `index` with `counter` expecting `status`, checked by
    s_expect_resp (the meter's signature; nothing sealed on a refusal).
    Returns +A energy for status 0. */
static uint64_t
s_read_status (fx_t *fx, uint32_t index, uint64_t counter, int status)
{
    uint8_t rid [AMI_REQUEST_ID_SIZE];
    s_send_read (fx, index, counter, rid);
    return s_expect_resp (fx, index, rid, status);
}

static void
s_be32 (uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p [i] = (uint8_t) (v >> (24 - 8 * i));
}

static void
s_be64 (uint8_t *p, uint64_t v)
{
    s_be32 (p, (uint32_t) (v >> 32));
    s_be32 (p + 4, (uint32_t) v);
}

/*  Put meter `index`'s register snapshot into a fleet's state directory
    before the fleet starts (layout: ami_meter.h "Persistence"). */
static void
s_seed_snapshot (const char *dir, uint32_t index, int64_t clock_s,
                 uint64_t import_t1, uint64_t import_t2, uint64_t export_t1, uint64_t export_t2)
{
    ami_store_t *store = ami_store_new (dir, 1 << 20, 0, AMI_STORE_NOSYNC, NULL);
    assert_non_null (store);
    unsigned dbi = 0;
    assert_int_equal (ami_store_db (store, "registers", &dbi), AMI_OK);
    uint8_t key [4], val [48] = { 0 };
    s_be32 (key, index);
    s_be64 (val, (uint64_t) clock_s);
    s_be64 (val + 8, import_t1);
    s_be64 (val + 16, import_t2);
    s_be64 (val + 24, export_t1);
    s_be64 (val + 32, export_t2);
    assert_int_equal (ami_store_put (store, dbi, key, sizeof key, val, sizeof val, 0), AMI_OK);
    ami_store_destroy (&store);
}

/*  SEC-CONF-3: a meter whose energy registers are 0 and one whose
    registers are near INT64_MAX (six registers 8 bytes longer each) seal
    their READINGs to the same length, SEALED_READING; the padded box
    opens (ami_e2e_open_padded) to the READING the meter encoded, values
    included; a receiver that opens without unpadding fails closed (the
    codec refuses the padded form). */
static void
test_sec_conf_3_sealed_length_fixed (void **state)
{
    fx_t *fx = (fx_t *) *state;
    int64_t now_s = (int64_t) (s_now () / 1000);
    /* per tariff: the two tariffs' total still fits the i64 register */
    const uint64_t huge = (uint64_t) INT64_MAX / 2 - 1000000000000ULL;
    s_seed_snapshot (fx->state, 1, now_s, 0, 0, 0, 0);
    s_seed_snapshot (fx->state, 2, now_s, huge, huge, huge, huge);
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);

    size_t encoded [3];
    int64_t import [3], export [3];
    for (uint32_t i = 0; i < 3; i++) {
        uint32_t index = 1 + i;
        char meter_id [AMI_MAX_ID + 1];
        uint8_t rid [AMI_REQUEST_ID_SIZE];
        ami_meter_id_format (index, meter_id);
        s_send_read (fx, index, 1, rid);
        zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
        assert_non_null (msg);
        const ami_read_resp_t *resp = &G.msg->read_resp;
        assert_int_equal (resp->status, AMI_OK);
        assert_int_equal (resp->sealed_size, SEALED_READING);
        /* round trip: the whole READING, for this meter and request */
        uint8_t plain [AMI_MAX_SEALED];
        size_t plain_len = 0;
        assert_int_equal (ami_e2e_open_padded (resp->sealed, resp->sealed_size, &G.mdms,
                                               plain, sizeof plain, &plain_len), AMI_OK);
        assert_int_equal (ami_msg_decode (G.msg2, plain, plain_len), AMI_OK);
        assert_int_equal (G.msg2->type, AMI_MSG_READING);
        assert_string_equal (G.msg2->reading.meter_id, meter_id);
        assert_memory_equal (G.msg2->reading.request_id, rid, AMI_REQUEST_ID_SIZE);
        assert_int_equal (G.msg2->reading.register_count, AMI_METER_REGISTERS);
        /* encoding what was decoded gives the same bytes: nothing of the
           padding is left in the message */
        uint8_t again [AMI_MAX_SEALED];
        size_t again_len = 0;
        assert_int_equal (ami_msg_encode (G.msg2, again, sizeof again, &again_len), AMI_OK);
        assert_int_equal (again_len, plain_len);
        assert_memory_equal (again, plain, plain_len);
        encoded [i] = plain_len;
        assert_int_equal (G.msg2->reading.registers [1].obis [2], 1);  /* 1.0.1.8.0 */
        assert_int_equal (G.msg2->reading.registers [4].obis [2], 2);  /* 1.0.2.8.0 */
        import [i] = G.msg2->reading.registers [1].value;
        export [i] = G.msg2->reading.registers [4].value;
        /* an MDMS that does not unpad gets the padded form, which its
           decoder refuses: it never misreads */
        assert_int_equal (ami_e2e_open (resp->sealed, resp->sealed_size, &G.mdms,
                                        plain, sizeof plain, &plain_len), AMI_OK);
        assert_int_equal (plain_len, SEALED_READING - AMI_E2E_SEAL_OVERHEAD);
        assert_int_equal (plain [0], AMI_E2E_PAD_MARK);
        assert_int_not_equal (ami_msg_decode (G.msg2, plain, plain_len), AMI_OK);
        zmsg_destroy (&msg);
    }
    print_message ("READINGs of %zu, %zu and %zu bytes all sealed to %d bytes\n",
                   encoded [0], encoded [1], encoded [2], SEALED_READING);
    /* the planted registers came through, so the encodings do differ */
    assert_true (import [0] >= 0 && import [0] < 1000 && export [0] >= 0 && export [0] < 1000);
    assert_true ((uint64_t) import [1] >= 2 * huge && (uint64_t) export [1] >= 2 * huge);
    /* six registers 8 bytes longer each, less what the power and current
       registers (5 of them, 1..3 bytes each) may differ */
    assert_true (encoded [1] >= encoded [0] + 6 * 8 - 5 * 2);
}

/*  SEC-CONF-3, the padding functions (ami_e2e.h "Padded sealing"): every
    message of up to block - AMI_E2E_PAD_OVERHEAD bytes seals to one
    length and opens to itself; an unpadded box (ami_e2e_seal: an older
    meter, a stored proof) opens unchanged; malformed padding is refused
    and nothing of it is returned. */
static void
test_sec_conf_3_padding_round_trip (void **state)
{
    (void) state;
    uint8_t msg [600], sealed [AMI_MAX_SEALED], opened [AMI_MAX_SEALED];
    size_t sealed_len = 0, opened_len = 0;
    randombytes_buf (msg, sizeof msg);
    msg [0] = 0x97;             /* a msgpack array, as every ami message */
    const size_t block = 128;
    const size_t lengths [] = { 0, 1, 60, block - AMI_E2E_PAD_OVERHEAD,
                                block - AMI_E2E_PAD_OVERHEAD + 1, sizeof msg };
    const size_t padded [] = { block, block, block, block, 2 * block, 5 * block };
    for (size_t i = 0; i < sizeof lengths / sizeof lengths [0]; i++) {
        assert_int_equal (ami_e2e_padded_size (lengths [i], block), padded [i]);
        assert_int_equal (ami_e2e_seal_padded (msg, lengths [i], block, G.mdms.box_pk,
                                               sealed, sizeof sealed, &sealed_len), AMI_OK);
        assert_int_equal (sealed_len, padded [i] + AMI_E2E_SEAL_OVERHEAD);
        memset (opened, 0xaa, sizeof opened);
        assert_int_equal (ami_e2e_open_padded (sealed, sealed_len, &G.mdms, opened,
                                               sizeof opened, &opened_len), AMI_OK);
        assert_int_equal (opened_len, lengths [i]);
        if (lengths [i])
            assert_memory_equal (opened, msg, lengths [i]);
        /* the header and padding left behind in the buffer are wiped */
        assert_true (sodium_is_zero (opened + opened_len, padded [i] - opened_len));
        /* the MDMS keys only */
        assert_int_equal (ami_e2e_open_padded (sealed, sealed_len, &G.forger, opened,
                                               sizeof opened, &opened_len), AMI_E_DECRYPT);
    }
    /* unpadded (an older meter, a stored proof): as it is */
    assert_int_equal (ami_e2e_seal (msg, 100, G.mdms.box_pk, sealed, sizeof sealed, &sealed_len),
                      AMI_OK);
    assert_int_equal (ami_e2e_open_padded (sealed, sealed_len, &G.mdms, opened, sizeof opened,
                                           &opened_len), AMI_OK);
    assert_int_equal (opened_len, 100);
    assert_memory_equal (opened, msg, 100);

    /* malformed padded plaintexts, as any sealer could make them: block
       0; no 0x80 in the last block; not a whole number of blocks; a last
       block (02 01, block 2) that is not padding */
    uint8_t bad [4][20];
    const size_t bad_len [4] = { 16, 16, 17, 4 };
    memset (bad, 0, sizeof bad);
    for (int i = 0; i < 4; i++)
        bad [i][0] = AMI_E2E_PAD_MARK;
    bad [1][2] = 16;
    bad [2][2] = 16;
    bad [2][3] = 'a';
    bad [2][4] = 0x80;
    bad [3][2] = 2;
    bad [3][3] = 0x01;
    for (int i = 0; i < 4; i++) {
        assert_int_equal (ami_e2e_seal (bad [i], bad_len [i], G.mdms.box_pk, sealed,
                                        sizeof sealed, &sealed_len), AMI_OK);
        memset (opened, 0xaa, sizeof opened);
        opened_len = 12345;
        assert_int_equal (ami_e2e_open_padded (sealed, sealed_len, &G.mdms, opened,
                                               sizeof opened, &opened_len), AMI_E_DECRYPT);
        assert_true (sodium_is_zero (opened, bad_len [i]));
        assert_int_equal (opened_len, 12345);
    }
    /* limits: block 1..65535; the sealed result within AMI_MAX_SEALED and cap */
    assert_int_equal (ami_e2e_seal_padded (msg, 10, 0, G.mdms.box_pk, sealed, sizeof sealed,
                                           &sealed_len), AMI_E_RANGE);
    assert_int_equal (ami_e2e_seal_padded (msg, 10, AMI_E2E_PAD_BLOCK_MAX + 1, G.mdms.box_pk,
                                           sealed, sizeof sealed, &sealed_len), AMI_E_RANGE);
    assert_int_equal (ami_e2e_seal_padded (msg, 10, AMI_MAX_SEALED, G.mdms.box_pk, sealed,
                                           sizeof sealed, &sealed_len), AMI_E_BUFSIZE);
    assert_int_equal (ami_e2e_seal_padded (msg, 10, block, G.mdms.box_pk, sealed,
                                           block + AMI_E2E_SEAL_OVERHEAD - 1, &sealed_len),
                      AMI_E_BUFSIZE);
    assert_int_equal (ami_e2e_padded_size (10, 0), 0);
}

/*  SEC-INT-2 (c): a meter refuses a command whose counter is more than
    max_counter_jump above its last accepted one, with a signed AMI_E_RANGE
    and nothing sealed; the refusal changes nothing; after a restart the
    bound counts from the persisted counter, and by default it is
    AMI_METER_MAX_COUNTER_JUMP. */
static void
test_sec_int_2_counter_jump (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_config_t config = s_config (fx, 1, 10);
    config.max_counter_jump = 1000;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
    zsock_set_rcvtimeo (fx->fleet, WAIT_MS);
    s_wait_hello (fx);
    /* a meter's first command has no reference: any counter (the MDMS's
       one counter for all meters may be far ahead when it first reads
       this meter) */
    s_read_status (fx, 1, 5000, AMI_OK);
    s_read_status (fx, 1, 6000, AMI_OK);                /* exactly the bound */
    s_read_status (fx, 1, 7001, AMI_E_RANGE);           /* one above it */
    /* the command a stolen signing key would poison a meter with */
    s_read_status (fx, 1, UINT64_MAX, AMI_E_RANGE);
    /* the refusals moved nothing: the bound still counts from 6000 */
    s_read_status (fx, 1, 7000, AMI_OK);
    s_read_status (fx, 2, 1, AMI_OK);                   /* other meters: their own */
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_READS], 4);
    assert_int_equal (st [ST_REFUSED], 2);

    /* restart with the default bound: it counts from the persisted 7000 */
    zactor_destroy (&fx->fleet);
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    s_read_status (fx, 1, 7000 + AMI_METER_MAX_COUNTER_JUMP + 1, AMI_E_RANGE);
    s_read_status (fx, 1, 7000 + AMI_METER_MAX_COUNTER_JUMP, AMI_OK);
}

/*  SEC-INT-2 (b): the fleet dies between the durable commit of a burst's
    counters and its answers (test hook CRASH-AFTER-COMMIT). Nothing was
    answered; after a restart from the same state directory the committed
    command, sent again, is refused as a replay, and no command of the
    burst is acted on twice. */
static void
test_sec_int_2_crash_after_commit (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    enum { N = 3 };
    uint8_t frame [N][512], rid [N][AMI_REQUEST_ID_SIZE];
    size_t len [N];
    uint64_t now = s_now ();
    for (int i = 0; i < N; i++) {
        char meter_id [AMI_MAX_ID + 1];
        len [i] = s_command (ami_meter_id_format (1 + (uint32_t) i, meter_id), 10, now,
                             now + 60000, G.mdms.sign_sk, rid [i], frame [i], sizeof frame [i]);
    }
    assert_int_equal (zstr_send (fx->fleet, "CRASH-AFTER-COMMIT"), 0);
    for (int i = 0; i < N; i++)
        s_send (fx, frame [i], len [i]);
    /* the actor ends at its first commit (zsock_wait: its exit signal) */
    assert_int_equal (zsock_wait (fx->fleet), 0);
    /* ... having answered nothing */
    zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, QUIET_MS);
    assert_null (msg);
    zactor_destroy (&fx->fleet);

    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    /* the first command was in that commit: a replay now, never acted on */
    s_send (fx, frame [0], len [0]);
    s_expect_resp (fx, 1, rid [0], AMI_E_REPLAY);
    /* the others were committed with it (a replay), or never reached the
       dead actor (answered now, once): either way at most one answer */
    for (int i = 1; i < N; i++) {
        s_send (fx, frame [i], len [i]);
        msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
        assert_non_null (msg);
        int status = G.msg->read_resp.status;
        assert_true (status == AMI_OK || status == AMI_E_REPLAY);
        zmsg_destroy (&msg);
        s_send (fx, frame [i], len [i]);
        s_expect_resp (fx, 1 + (uint32_t) i, rid [i], AMI_E_REPLAY);
    }
    /* the meter goes on with the next counter */
    s_read_status (fx, 1, 11, AMI_OK);
}

/*  The state of the first HEALTH within WAIT_MS whose state is `want`;
    -1 if none came (one sent before a change may still be on its way). */
static int
s_health_state (fx_t *fx, int want)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    int64_t left;
    while ((left = deadline - zclock_mono ()) > 0) {
        zmsg_t *msg = s_expect (fx, AMI_MSG_HEALTH, (int) left);
        if (!msg)
            break;
        int got = G.msg->health.state;
        zmsg_destroy (&msg);
        if (got == want)
            return got;
    }
    return -1;
}

/*  SEC-FAIL-1: the state store fails under a running fleet: no data page
    of data.mdb can be written any more (RLIMIT_FSIZE below the first data
    page, so writes fail with EFBIG as they would with ENOSPC on a full
    disk; a chmod of the directory would change nothing, LMDB writes
    through the descriptors it opened at start). Every command is refused
    with a signed AMI_E_STORAGE, nothing sealed; the fleet reports
    DEGRADED and counts store_errors; the refused command was not acted
    on; once the store works again the fleet answers again. The limit is
    process-wide, so it is lifted before any assertion (and log lines
    written meanwhile to a regular file past 8 KiB are lost: EFBIG too). */
static void
test_sec_fail_1_store_failure (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    s_read_status (fx, 1, 1, AMI_OK);

    struct rlimit saved, limited;
    assert_int_equal (getrlimit (RLIMIT_FSIZE, &saved), 0);
    limited = saved;
    /* LMDB's two meta pages stay writable, no other page does */
    limited.rlim_cur = 2 * (rlim_t) sysconf (_SC_PAGESIZE);
    struct sigaction ignore, saved_action;
    memset (&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset (&ignore.sa_mask);
    assert_int_equal (sigaction (SIGXFSZ, &ignore, &saved_action), 0);
    assert_int_equal (setrlimit (RLIMIT_FSIZE, &limited), 0);

    /* while the store fails: collect, assert nothing yet */
    uint8_t rid [2][AMI_REQUEST_ID_SIZE];
    s_send_read (fx, 2, 1, rid [0]);
    zmsg_t *refusal_2 = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
    s_send_read (fx, 1, 2, rid [1]);
    zmsg_t *refusal_1 = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
    int degraded = s_health_state (fx, AMI_STATE_DEGRADED);
    int lifted = setrlimit (RLIMIT_FSIZE, &saved);
    sigaction (SIGXFSZ, &saved_action, NULL);
    assert_int_equal (lifted, 0);

    /* signed by each meter, status AMI_E_STORAGE, nothing sealed */
    s_check_resp (refusal_2, 2, rid [0], AMI_E_STORAGE);
    s_check_resp (refusal_1, 1, rid [1], AMI_E_STORAGE);
    zmsg_destroy (&refusal_2);
    zmsg_destroy (&refusal_1);
    assert_int_equal (degraded, AMI_STATE_DEGRADED);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_READS], 1);
    assert_int_equal (st [ST_REFUSED], 2);
    assert_int_equal (st [ST_STORE_ERRORS], 2);

    /* the store works again: answered, READY; the refused counters stay
       used (a resent refused command is a replay, the MDMS resends with a
       new counter) */
    s_read_status (fx, 2, 1, AMI_E_REPLAY);
    s_read_status (fx, 2, 2, AMI_OK);
    s_read_status (fx, 1, 3, AMI_OK);
    assert_int_equal (s_health_state (fx, AMI_STATE_READY), AMI_STATE_READY);
    s_status (fx, st);
    assert_int_equal (st [ST_READS], 3);
    assert_int_equal (st [ST_STORE_ERRORS], 2);

    /* nothing of the refused commands was recorded, the rest was: after a
       restart meter 2 is at counter 2 and meter 1 at 3 */
    zactor_destroy (&fx->fleet);
    s_fleet_start (fx, 1, 10, 0);
    s_wait_hello (fx);
    s_read_status (fx, 2, 2, AMI_E_REPLAY);
    s_read_status (fx, 1, 3, AMI_E_REPLAY);
    s_read_status (fx, 2, 3, AMI_OK);
}

/* ---------------------------------------------------------------------- */
/*  SEC-KEY-2: MDMS signing-key rotation; SEC-AVAIL-3: forged floods       */

/*  A READ_REQ for meter `index` with `counter`, signed with sk; sent;
    its request id in rid. */
static void
s_send_signed (fx_t *fx, uint32_t index, uint64_t counter, const uint8_t *sk,
               uint8_t rid [AMI_REQUEST_ID_SIZE])
{
    char meter_id [AMI_MAX_ID + 1];
    uint8_t buf [512];
    uint64_t now = s_now ();
    size_t len = s_command (ami_meter_id_format (index, meter_id), counter, now, now + 60000,
                            sk, rid, buf, sizeof buf);
    s_send (fx, buf, len);
}

/*  Install the public signing key of the MDMS key directory `from` into
    directory `to` under `name`, with metadata expires (0: none). */
static void
s_install_sign_key (const char *from, const char *to, const char *name, int64_t expires)
{
    char *src = ami_test_path (from, "mdms-sign.cert");
    char *dst = ami_test_path (to, name);
    int err = 0;
    ami_cert_t *cert = ami_cert_load_public (src, &err);
    assert_non_null (cert);
    if (expires) {
        char text [24];
        snprintf (text, sizeof text, "%" PRId64, expires);
        assert_int_equal (ami_cert_set_meta (cert, AMI_AUTH_META_EXPIRES, text), AMI_OK);
    }
    assert_int_equal (ami_cert_save_public (cert, dst), AMI_OK);
    ami_cert_destroy (&cert);
    free (src);
    free (dst);
}

/*  "RELOAD-KEYS": the number of signing keys the fleet accepts after it. */
static int
s_reload_keys (fx_t *fx)
{
    assert_int_equal (zstr_send (fx->fleet, "RELOAD-KEYS"), 0);
    char *reply = zstr_recv (fx->fleet);
    assert_non_null (reply);
    int count = atoi (reply);
    zstr_free (&reply);
    return count;
}

/*  SEC-KEY-2 (MDMS signing key, overlap): a fleet whose mdms-pub holds
    the new key (mdms-sign.cert) and the old one in its window
    (mdms-sign.old-*.cert, expires in the future) acts on commands signed
    by either, and on no other; old keys that are expired or carry no
    expires are not accepted. Once the old key's file is removed (what
    `ami-keygen rotate DIR mdms-sign --finish` does) the running fleet
    notices on its own within its refresh period, and a command signed
    with the old key is refused with a signed AMI_E_BAD_SIGNATURE while the
    new key goes on working. A directory that loses its current key keeps
    the set in use. The key set's expiry is also checked per command. */
static void
test_sec_key_2_mdms_signing_overlap (void **state)
{
    fx_t *fx = (fx_t *) *state;
    char *newdir = ami_test_tmpdir ("meter-mdms-new");
    char *pub = ami_test_tmpdir ("meter-mdms-pub");
    char *olddir = ami_test_path (G.dir, "mdms");
    assert_true (newdir && pub && olddir);
    ami_e2e_mdms_t fresh;
    assert_int_equal (ami_e2e_mdms_generate (newdir, "mdms"), AMI_OK);
    assert_int_equal (ami_e2e_mdms_load (&fresh, newdir, true), AMI_OK);
    int64_t now_s = (int64_t) time (NULL);
    s_install_sign_key (newdir, pub, "mdms-sign.cert", 0);
    s_install_sign_key (olddir, pub, "mdms-sign.old-100.cert", now_s + 600);
    /* not accepted: an expired old key (the forger's), an old key without
       expires (the forger's too) */
    char *forgerdir = ami_test_path (G.dir, "forger");
    s_install_sign_key (forgerdir, pub, "mdms-sign.old-50.cert", now_s - 1);
    s_install_sign_key (forgerdir, pub, "mdms-sign.old-60.cert", 0);

    /* the key set on its own: bound, expiry per call */
    ami_meter_keys_t keys;
    char problem [AMI_METER_KEYS_PROBLEM_MAX];
    assert_int_equal (ami_meter_keys_load (&keys, pub, now_s, problem, sizeof problem), AMI_OK);
    assert_int_equal (keys.count, 2);
    assert_memory_equal (keys.pk [0], fresh.sign_pk, AMI_E2E_SIGN_PK_SIZE);
    assert_memory_equal (keys.pk [1], G.mdms.sign_pk, AMI_E2E_SIGN_PK_SIZE);
    assert_true (problem [0] != '\0');          /* the old key without expires */
    uint8_t frame [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000001", 1, s_now (), s_now () + 60000, G.mdms.sign_sk,
                            rid, frame, sizeof frame);
    size_t which = 0;
    assert_int_equal (ami_meter_keys_verify (&keys, frame, len, now_s, &which), AMI_OK);
    assert_int_equal (which, 1);
    assert_int_equal (ami_meter_keys_verify (&keys, frame, len, now_s + 600, &which),
                      AMI_E_BAD_SIGNATURE);     /* from its expires second on */

    ami_meter_config_t config = s_config (fx, 1, 10);
    memset (config.mdms.sign_pk, 0, sizeof config.mdms.sign_pk);     /* from the directory */
    config.mdms_pub = pub;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
    zsock_set_rcvtimeo (fx->fleet, WAIT_MS);
    s_wait_hello (fx);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_MDMS_KEYS], 2);

    /* inside the window: the new key and the old one both act */
    s_send_signed (fx, 1, 1, fresh.sign_sk, rid);
    s_expect_resp (fx, 1, rid, AMI_OK);
    s_send_signed (fx, 1, 2, G.mdms.sign_sk, rid);
    s_expect_resp (fx, 1, rid, AMI_OK);
    s_send_signed (fx, 2, 1, G.mdms.sign_sk, rid);
    s_expect_resp (fx, 2, rid, AMI_OK);
    s_send_signed (fx, 2, 2, G.forger.sign_sk, rid);   /* listed, but not usable */
    s_expect_resp (fx, 2, rid, AMI_E_BAD_SIGNATURE);

    /* --finish: the old key's file goes; the fleet notices by itself */
    char *old_file = ami_test_path (pub, "mdms-sign.old-100.cert");
    assert_int_equal (unlink (old_file), 0);
    free (old_file);
    int64_t deadline = zclock_mono () + WAIT_MS;
    do {
        s_status (fx, st);
        if (st [ST_MDMS_KEYS] == 1)
            break;
        zclock_sleep (POLL_MS);
    } while (zclock_mono () < deadline);
    assert_int_equal (st [ST_MDMS_KEYS], 1);
    s_send_signed (fx, 1, 3, G.mdms.sign_sk, rid);
    s_expect_resp (fx, 1, rid, AMI_E_BAD_SIGNATURE);
    s_send_signed (fx, 1, 3, fresh.sign_sk, rid);      /* the refusal moved nothing */
    s_expect_resp (fx, 1, rid, AMI_OK);

    /* a half-written directory (no current key) does not empty the set */
    char *current = ami_test_path (pub, "mdms-sign.cert");
    assert_int_equal (unlink (current), 0);
    assert_int_equal (s_reload_keys (fx), 1);
    s_send_signed (fx, 2, 3, fresh.sign_sk, rid);
    s_expect_resp (fx, 2, rid, AMI_OK);
    s_send_signed (fx, 2, 4, G.mdms.sign_sk, rid);
    s_expect_resp (fx, 2, rid, AMI_E_BAD_SIGNATURE);
    s_status (fx, st);
    assert_int_equal (st [ST_READS], 5);
    assert_int_equal (st [ST_REFUSED], 3);
    assert_int_equal (st [ST_REFUSALS_DROPPED], 0);
    free (current);

    ami_e2e_mdms_wipe (&fresh);
    ami_test_rmtree (newdir);
    ami_test_rmtree (pub);
    free (newdir);
    free (pub);
    free (olddir);
    free (forgerdir);
}

/*  SEC-AVAIL-3: a flood of forged commands (fresh counters, so each one
    passes the cheap checks and costs a verification) and replays of a
    captured valid command (refused by the cheap checks alone) costs the
    fleet at most burst + rate x elapsed signed refusals; every other one
    is dropped unanswered and counted (STATUS and HEALTH
    refusals_dropped); a valid read sent in the middle of the flood is
    served. */
static void
test_sec_avail_3_forged_command_flood (void **state)
{
    fx_t *fx = (fx_t *) *state;
    enum { RATE = 10, BURST = 20, FORGED = 400, REPLAYS = 100 };
    ami_meter_config_t config = s_config (fx, 1, 10);
    config.refusal_rate = RATE;
    config.refusal_burst = BURST;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
    zsock_set_rcvtimeo (fx->fleet, WAIT_MS);
    s_wait_hello (fx);

    uint8_t rid [AMI_REQUEST_ID_SIZE], valid_rid [AMI_REQUEST_ID_SIZE];
    uint8_t valid [512];
    int64_t started = zclock_mono ();
    for (int i = 0; i < FORGED; i++) {
        s_send_signed (fx, 1 + (uint32_t) (i % 10), 1 + (uint64_t) i, G.forger.sign_sk, rid);
        if (i == FORGED / 2) {
            uint64_t now = s_now ();
            size_t len = s_command ("MTR-000005", 1000, now, now + 60000, G.mdms.sign_sk,
                                    valid_rid, valid, sizeof valid);
            s_send (fx, valid, len);
            for (int r = 0; r < REPLAYS; r++)
                s_send (fx, valid, len);            /* captured and replayed */
        }
    }
    /* wait until the fleet has handled every frame: each one is answered
       (read, refusal) or counted dropped */
    uint64_t st [ST_COUNT];
    int64_t deadline = zclock_mono () + WAIT_MS;
    do {
        s_status (fx, st);
        if (st [ST_READS] + st [ST_REFUSED] + st [ST_REFUSALS_DROPPED] == 1 + FORGED + REPLAYS)
            break;
        zclock_sleep (POLL_MS);
    } while (zclock_mono () < deadline);
    double elapsed_s = (double) (zclock_mono () - started) / 1000.0;
    assert_int_equal (st [ST_READS] + st [ST_REFUSED] + st [ST_REFUSALS_DROPPED],
                      1 + FORGED + REPLAYS);
    assert_int_equal (st [ST_READS], 1);
    /* bounded: the burst, plus what the rate refilled meanwhile (+1 for
       a token completed between the fleet's clock reading and ours) */
    uint64_t bound = BURST + (uint64_t) (RATE * elapsed_s) + 1;
    if (st [ST_REFUSED] > bound)
        print_message ("%" PRIu64 " signed refusals in %.2f s, bound %" PRIu64 "\n",
                       st [ST_REFUSED], elapsed_s, bound);
    assert_true (st [ST_REFUSED] <= bound);
    assert_true (st [ST_REFUSED] >= BURST);     /* the budget is spent, not skipped */
    assert_int_equal (st [ST_REFUSALS_DROPPED], FORGED + REPLAYS - st [ST_REFUSED]);

    /* what arrived: exactly the refusals counted, each signed by its
       meter (BAD_SIGNATURE for forgeries, REPLAY for the replays), and
       the valid reading */
    uint64_t refusals = 0;
    bool read_ok = false;
    deadline = zclock_mono () + WAIT_MS;
    while ((refusals < st [ST_REFUSED] || !read_ok) && zclock_mono () < deadline) {
        zmsg_t *msg = s_expect (fx, AMI_MSG_READ_RESP, WAIT_MS);
        assert_non_null (msg);
        const ami_read_resp_t *resp = &G.msg->read_resp;
        uint32_t index = ami_meter_id_parse (resp->meter_id);
        uint8_t got_rid [AMI_REQUEST_ID_SIZE];
        memcpy (got_rid, resp->request_id, sizeof got_rid);
        int status = resp->status;
        if (status == AMI_OK) {
            assert_memory_equal (got_rid, valid_rid, AMI_REQUEST_ID_SIZE);
            s_check_resp (msg, index, valid_rid, AMI_OK);
            read_ok = true;
        }
        else {
            assert_true (status == AMI_E_BAD_SIGNATURE
                         || (status == AMI_E_REPLAY
                             && memcmp (got_rid, valid_rid, AMI_REQUEST_ID_SIZE) == 0));
            s_check_resp (msg, index, got_rid, status);
            refusals++;
        }
        zmsg_destroy (&msg);
    }
    assert_true (read_ok);
    assert_int_equal (refusals, st [ST_REFUSED]);
    /* ... and nothing more */
    assert_null (s_expect (fx, AMI_MSG_READ_RESP, QUIET_MS));

    /* the HEALTH stat carries the drops */
    zmsg_t *msg = s_expect (fx, AMI_MSG_HEALTH, WAIT_MS);
    assert_non_null (msg);
    bool found = false;
    for (uint32_t i = 0; i < G.msg->health.stat_count; i++)
        if (streq (G.msg->health.stats [i].name, "refusals_dropped")) {
            found = true;
            assert_int_equal (G.msg->health.stats [i].value, st [ST_REFUSALS_DROPPED]);
        }
    assert_true (found);
    zmsg_destroy (&msg);

    /* still serving genuine commands after the flood */
    s_read_status (fx, 5, 1001, AMI_OK);
}

/* ---------------------------------------------------------------------- */
/*  SEC-INT-5: load-profile recovery                                        */

static void
s_eq_interval_m (const ami_interval_t *x, const ami_interval_t *y)
{
    assert_int_equal (x->end_s, y->end_s);
    assert_true (x->import_wh == y->import_wh);
    assert_true (x->export_wh == y->export_wh);
    assert_int_equal (x->status, y->status);
}

/*  What the first delivery carried, per meter and interval number k
    (end = P_START + k x P_INTERVAL, k = 1..), and per block. */
#define R_METERS        5
#define R_INTERVALS     3000        /* enough for 31 days at 15 minutes */
typedef struct {
    uint32_t meters;
    uint8_t keys [R_METERS + 1][AMI_E2E_PROFILE_KEY_SIZE];  /* the meters' own */
    ami_interval_t first [R_METERS + 1][R_INTERVALS + 1];   /* by k */
    bool seen [R_METERS + 1][R_INTERVALS + 1];
    uint64_t got [R_METERS + 1];                /* intervals received (this phase) */
    uint64_t blocks;                            /* blocks received (this phase) */
    uint64_t seqs [64];                         /* seqs of this phase, in order (first 64) */
    uint8_t box1 [3][AMI_MAX_SEALED];           /* meter 2's first three boxes */
    size_t box1_size [3];
    bool recovering;                            /* records must equal `first` */
} recov_t;

static void
s_recov_init (recov_t *r, uint32_t meters)
{
    memset (r, 0, sizeof *r);
    r->meters = meters;
    for (uint32_t index = 1; index <= meters; index++) {
        /* the METER's side of the profile key: its signing key with the
           MDMS box key (ami_e2e.h) */
        uint8_t pk [AMI_E2E_SIGN_PK_SIZE], sk [AMI_E2E_SIGN_SK_SIZE];
        ami_e2e_meter_keypair (G.seed, index, pk, sk);
        assert_int_equal (ami_e2e_profile_key_meter (sk, G.mdms_pub.box_pk, r->keys [index]),
                          AMI_OK);
        sodium_memzero (sk, sizeof sk);
    }
}

/*  Open every block of the BATCH in G.msg with its meter's profile key
    and record it (first delivery), or check it against the first one
    (recovery: same end, same registers). */
static void
s_recov_batch (recov_t *r)
{
    const ami_batch_t *batch = &G.msg->batch;
    for (uint32_t b = 0; b < batch->block_count; b++) {
        const ami_block_t *block = &batch->blocks [b];
        uint32_t index = ami_meter_id_parse (block->meter_id);
        assert_true (index >= 1 && index <= r->meters);
        const ami_profile_t *profile = s_open_profile (r->keys [index], block);
        assert_int_equal (block->seq,
                          profile->records [profile->record_count - 1].end_s / P_INTERVAL);
        if (r->blocks < 64)
            r->seqs [r->blocks] = block->seq;
        if (index == 2 && r->recovering) {
            /* the block is sealed anew: a fresh nonce, so other bytes */
            uint64_t n = (block->seq - (uint64_t) P_START / P_INTERVAL) / 4;
            assert_true (n >= 1 && n <= 3);
            assert_true (block->box_size != r->box1_size [n - 1]
                      || memcmp (block->box, r->box1 [n - 1], block->box_size) != 0);
        }
        if (index == 2 && !r->recovering && r->got [2] < 12) {
            uint64_t n = r->got [2] / 4;
            assert_true (block->box_size <= AMI_MAX_SEALED);
            memcpy (r->box1 [n], block->box, block->box_size);
            r->box1_size [n] = block->box_size;
        }
        for (uint32_t i = 0; i < profile->record_count; i++) {
            const ami_interval_t *rec = &profile->records [i];
            assert_true (rec->end_s > P_START);
            uint64_t k = (rec->end_s - P_START) / P_INTERVAL;
            assert_int_equal (rec->end_s, P_START + k * P_INTERVAL);
            assert_true (k >= 1 && k <= R_INTERVALS);
            if (r->recovering) {
                /* the same interval, rebuilt: the very same values */
                assert_true (r->seen [index][k]);
                s_eq_interval_m (rec, &r->first [index][k]);
            }
            else {
                assert_false (r->seen [index][k]);
                r->first [index][k] = *rec;
                r->seen [index][k] = true;
            }
            r->got [index]++;
        }
        r->blocks++;
    }
}

/*  Receive and acknowledge (status 0: custody taken, then DISCARDED, as a
    captured aggregator does) every batch until `total` intervals came;
    then nothing more within QUIET_MS. */
static void
s_recov_collect (fx_t *fx, recov_t *r, uint64_t total)
{
    int64_t deadline = zclock_mono () + TEST_DEADLINE_MS;
    uint64_t sum = 0;
    while (sum < total) {
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        s_recov_batch (r);
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
        sum = 0;
        for (uint32_t i = 1; i <= r->meters; i++)
            sum += r->got [i];
    }
    assert_int_equal (sum, total);
    zmsg_t *msg = s_expect_batch (fx, QUIET_MS);
    assert_null (msg);
}

/*  A READ_REQ with a load-profile range, signed with sk. */
static size_t
s_command_range (const char *meter_id, uint64_t counter, uint64_t from_s, uint64_t to_s,
                 const uint8_t *sk, uint8_t request_id [AMI_REQUEST_ID_SIZE],
                 uint8_t *buf, size_t cap)
{
    ami_msg_reset (G.msg2, AMI_MSG_READ_REQ);
    ami_read_req_t *req = &G.msg2->read_req;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter_id);
    randombytes_buf (req->request_id, sizeof req->request_id);
    memcpy (request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    req->counter = counter;
    req->issued_ms = s_now ();
    req->expires_ms = s_now () + 10000;
    req->profile_from_s = from_s;
    req->profile_to_s = to_s;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, cap, &len), AMI_OK);
    assert_int_equal (ami_e2e_sign (buf, len, sk), AMI_OK);
    return len;
}

/*  The fleet plays against a captured aggregator that acknowledges every
    batch and discards it. A READ_REQ signed by the MDMS with a range then
    makes the meter answer the read AND send its intervals of the range
    again: the same seqs, boxes that open with the meter's profile key to
    the same values as the first time (new nonces), only what it produced
    (the rest counted as clipped). A range on a forged or replayed command
    queues nothing. */
static void
test_sec_int_5_recover_profile (void **state)
{
    fx_t *fx = (fx_t *) *state;
    /* 12 intervals per meter in blocks of 4, as fast as credit allows */
    ami_meter_profile_config_t profile = s_profile (4, 0, P_START, 12);
    s_fleet_start_profile (fx, R_METERS, &profile);
    recov_t *r = (recov_t *) calloc (1, sizeof *r);
    assert_non_null (r);
    s_recov_init (r, R_METERS);
    s_recov_collect (fx, r, R_METERS * 12);
    uint64_t st [ST_COUNT];
    s_wait_done (fx, st, NULL);
    assert_int_equal (st [ST_ACKED], R_METERS * 12);
    assert_int_equal (st [ST_RECOVERED], 0);
    assert_int_equal (st [ST_CLIPPED], 0);
    uint64_t sent = st [ST_SENT];

    /* 1. meter 2, its whole production: (P_START, P_START + 12 intervals] */
    char meter_id [AMI_MAX_ID + 1];
    ami_meter_id_format (2, meter_id);
    uint8_t frame [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command_range (meter_id, 10, P_START, P_START + 12 * P_INTERVAL,
                                  G.mdms.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 2, rid, AMI_OK);         /* the read is answered as ever */
    memset (r->got, 0, sizeof r->got);
    r->blocks = 0;
    r->recovering = true;
    s_recov_collect (fx, r, 12);
    assert_int_equal (r->got [2], 12);          /* meter 2's, and no one else's */
    assert_int_equal (r->blocks, 3);            /* its own three blocks, */
    for (uint64_t b = 0; b < 3; b++)            /* with their original seqs */
        assert_int_equal (r->seqs [b], (uint64_t) P_START / P_INTERVAL + 4 * (b + 1));
    s_status (fx, st);
    assert_int_equal (st [ST_RECOVERED], 12);
    assert_int_equal (st [ST_CLIPPED], 0);
    assert_int_equal (st [ST_READS], 1);
    assert_int_equal (st [ST_ACKED], R_METERS * 12);    /* production figures unchanged */
    assert_int_equal (st [ST_READINGS], R_METERS * 12);
    assert_true (st [ST_SENT] > sent);          /* ordinary batches, acked as any */
    assert_int_equal (st [ST_INFLIGHT], 0);
    assert_int_equal (st [ST_DONE], 1);

    /* 2. meter 3, from inside its first block to beyond what it produced:
       ends 3..12 come (a short first block), 13..17 are clipped */
    ami_meter_id_format (3, meter_id);
    len = s_command_range (meter_id, 11, P_START + 2 * P_INTERVAL, P_START + 17 * P_INTERVAL,
                           G.mdms.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 3, rid, AMI_OK);
    memset (r->got, 0, sizeof r->got);
    r->blocks = 0;
    s_recov_collect (fx, r, 10);
    assert_int_equal (r->got [3], 10);
    assert_int_equal (r->blocks, 3);            /* ends 3-4, 5-8, 9-12 */
    assert_int_equal (r->seqs [0], (uint64_t) P_START / P_INTERVAL + 4);
    assert_int_equal (r->seqs [1], (uint64_t) P_START / P_INTERVAL + 8);
    assert_int_equal (r->seqs [2], (uint64_t) P_START / P_INTERVAL + 12);
    s_status (fx, st);
    assert_int_equal (st [ST_RECOVERED], 22);
    assert_int_equal (st [ST_CLIPPED], 5);
    assert_int_equal (st [ST_BUSY], 0);
    assert_int_equal (st [ST_PENDING], 0);

    /* 3. a range wholly before the start or after the clock: nothing */
    len = s_command_range (meter_id, 12, P_START + 20 * P_INTERVAL, P_START + 30 * P_INTERVAL,
                           G.mdms.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 3, rid, AMI_OK);
    assert_null (s_expect_batch (fx, QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_RECOVERED], 22);
    assert_int_equal (st [ST_CLIPPED], 15);

    /* 4. the same range on a forged command, then on the replayed
       genuine one: refused as ever, and nothing is sent again */
    ami_meter_id_format (2, meter_id);
    len = s_command_range (meter_id, 13, P_START, P_START + 12 * P_INTERVAL,
                           G.forger.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 2, rid, AMI_E_BAD_SIGNATURE);
    len = s_command_range (meter_id, 10, P_START, P_START + 12 * P_INTERVAL,
                           G.mdms.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 2, rid, AMI_E_REPLAY);
    assert_null (s_expect_batch (fx, QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_RECOVERED], 22);
    assert_int_equal (st [ST_CLIPPED], 15);
    assert_int_equal (st [ST_REFUSED], 2);

    /* HEALTH carries the recovery counters */
    int64_t deadline = zclock_mono () + WAIT_MS;
    bool seen = false;
    while (!seen && zclock_mono () < deadline) {
        zmsg_t *msg = s_expect (fx, AMI_MSG_HEALTH, WAIT_MS);
        assert_non_null (msg);
        uint64_t recovered = 0, clipped = 0;
        for (uint32_t i = 0; i < G.msg->health.stat_count; i++) {
            if (streq (G.msg->health.stats [i].name, "profile_recovered"))
                recovered = G.msg->health.stats [i].value;
            if (streq (G.msg->health.stats [i].name, "recover_clipped"))
                clipped = G.msg->health.stats [i].value;
        }
        seen = recovered == 22 && clipped == 15;
        zmsg_destroy (&msg);
    }
    assert_true (seen);
    free (r);
}

/*  A recovery whose meter started long ago is rebuilt in slices (the
    model steps per wake-up are bounded) and still gives the very records
    of the first time: 100 days of one meter in one-day blocks, then its
    last 31 days asked for again (the rebuild runs 100 days of physics,
    over S_RECOVER_STEPS). Beyond the retention nothing comes. */
static void
test_sec_int_5_recover_in_slices (void **state)
{
    fx_t *fx = (fx_t *) *state;
    ami_meter_profile_config_t profile = s_profile (96, 0, P_START, 100 * 96);
    profile.retain_s = 40 * 86400;
    s_fleet_start_profile (fx, 1, &profile);
    recov_t *r = (recov_t *) calloc (1, sizeof *r);
    assert_non_null (r);
    s_recov_init (r, 1);
    /* R_INTERVALS holds 31 days: record the last 31 only */
    int64_t deadline = zclock_mono () + TEST_DEADLINE_MS;
    uint64_t got = 0, blocks = 0;
    const uint64_t skip = 69 * 96;              /* intervals before the last 31 days */
    while (got < 100 * 96) {
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        for (uint32_t b = 0; b < G.msg->batch.block_count; b++) {
            const ami_block_t *block = &G.msg->batch.blocks [b];
            s_open_profile (r->keys [1], block);
            for (uint32_t i = 0; i < G.msg2->profile.record_count; i++) {
                const ami_interval_t *rec = &G.msg2->profile.records [i];
                uint64_t k = (rec->end_s - P_START) / P_INTERVAL;
                if (k > skip) {
                    r->first [1][k - skip] = *rec;
                    r->seen [1][k - skip] = true;
                }
                got++;
            }
            blocks++;
        }
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
    }
    assert_int_equal (blocks, 100);
    uint64_t st [ST_COUNT];
    s_wait_done (fx, st, NULL);

    /* the last 31 days, and 20 days before the retention (40 days) */
    int64_t end = P_START + 100 * 86400;
    uint8_t frame [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command_range ("MTR-000001", 5, (uint64_t) (end - 31 * 86400),
                                  (uint64_t) end, G.mdms.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 1, rid, AMI_OK);
    deadline = zclock_mono () + TEST_DEADLINE_MS;
    uint64_t again = 0, again_blocks = 0;
    while (again < 31 * 96) {
        assert_true (zclock_mono () < deadline);
        zmsg_t *msg = s_expect_batch (fx, WAIT_MS);
        assert_non_null (msg);
        for (uint32_t b = 0; b < G.msg->batch.block_count; b++) {
            const ami_block_t *block = &G.msg->batch.blocks [b];
            s_open_profile (r->keys [1], block);
            /* whole days, as made the first time */
            assert_int_equal (G.msg2->profile.record_count, 96);
            assert_int_equal (block->seq, (uint64_t) P_START / P_INTERVAL + skip + 96 * (again_blocks + 1));
            for (uint32_t i = 0; i < G.msg2->profile.record_count; i++) {
                const ami_interval_t *rec = &G.msg2->profile.records [i];
                uint64_t k = (rec->end_s - P_START) / P_INTERVAL;
                assert_true (k > skip && k - skip <= 31 * 96);
                assert_true (r->seen [1][k - skip]);
                s_eq_interval_m (rec, &r->first [1][k - skip]);
                again++;
            }
            again_blocks++;
        }
        s_ack (fx, G.msg->batch.batch_id, AMI_OK, AMI_CREDIT_INITIAL);
        zmsg_destroy (&msg);
    }
    assert_int_equal (again, 31 * 96);
    assert_null (s_expect_batch (fx, QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_RECOVERED], 31 * 96);
    assert_int_equal (st [ST_CLIPPED], 0);

    /* days 40..60 before the clock: no longer kept */
    len = s_command_range ("MTR-000001", 6, (uint64_t) (end - 60 * 86400),
                           (uint64_t) (end - 40 * 86400), G.mdms.sign_sk, rid, frame,
                           sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 1, rid, AMI_OK);
    assert_null (s_expect_batch (fx, QUIET_MS));
    s_status (fx, st);
    assert_int_equal (st [ST_RECOVERED], 31 * 96);
    assert_int_equal (st [ST_CLIPPED], 20 * 96);
    free (r);
}

/*  A fleet without load-profile production answers the read of a
    recover command and sends nothing: the range counts as clipped. */
static void
test_sec_int_5_recover_without_profile (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_fleet_start (fx, 1, 3, 0);
    s_wait_hello (fx);
    uint8_t frame [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command_range ("MTR-000002", 1, P_START, P_START + 86400,
                                  G.mdms.sign_sk, rid, frame, sizeof frame);
    s_send (fx, frame, len);
    s_expect_resp (fx, 2, rid, AMI_OK);
    assert_null (s_expect_batch (fx, QUIET_MS));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_READS], 1);
    assert_int_equal (st [ST_RECOVERED], 0);
    assert_int_equal (st [ST_CLIPPED], 96);     /* a day at 15 minutes */
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
        cmocka_unit_test_setup_teardown (test_profile_limit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_flood_day, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_big_blocks, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_ack_timeout, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_busy, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_hello_resend, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_stop, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_paced, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_profile_config, s_setup, s_teardown),
        cmocka_unit_test (test_profile_model_exact),
        cmocka_unit_test_setup_teardown (test_sec_conf_3_sealed_length_fixed, s_setup, s_teardown),
        cmocka_unit_test (test_sec_conf_3_padding_round_trip),
        cmocka_unit_test_setup_teardown (test_sec_int_2_counter_jump, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_int_2_crash_after_commit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_fail_1_store_failure, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_key_2_mdms_signing_overlap, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_avail_3_forged_command_flood, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_int_5_recover_profile, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_int_5_recover_in_slices, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_int_5_recover_without_profile, s_setup, s_teardown),
    };
    return cmocka_run_group_tests_name ("meter fleet", tests, s_group_setup, s_group_teardown);
}
