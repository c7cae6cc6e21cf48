/*  test_aggregator.c - the pole-top aggregator (ami-aggregator) between a
    real meter fleet actor and two test ROUTERs playing head ends, all
    CurveZMQ on 127.0.0.1.

    Requirements exercised: FUN-READ-1 (a read crosses the aggregator both
    ways), FUN-READ-2 (AMI_E_UNREACHABLE for an unknown or gone meter),
    SEC-AUTH-1 (an unlisted key gets nothing), SEC-AVAIL-1 (reads keep
    working with one head end down), SEC-INT-1 (frames relayed byte for
    byte: the meter's signature still verifies), SEC-VAL-1 (any bytes from
    a head end or a fleet).

    One ami_auth for the whole binary; its allow-list is the union of what
    the aggregator's ROUTER needs (the fleets' certificates) and what the
    head ends' ROUTERs need (the aggregator's). Every wait has a deadline.
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

#include "ami_aggregator.h"
#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_meter.h"
#include "ami_meter_model.h"
#include "ami_msg.h"
#include "ami_test.h"

#define WAIT_MS         5000
#define QUIET_MS        500
#define HEARTBEAT_MS    100
#define POLL_MS         10
#define FLEET_COUNT     10
#define HEADENDS        2

static struct {
    char *dir;
    ami_auth_t *auth;
    ami_cert_t *agg_cert;           /* the aggregator under test */
    ami_cert_t *fleet_cert;         /* the real fleet actor, fleet-1 */
    ami_cert_t *rogue_cert;         /* an allowed fleet played by the test, fleet-9 */
    ami_cert_t *stranger_cert;      /* not in any allow-list */
    ami_cert_t *he_cert [HEADENDS]; /* the test head ends */
    ami_e2e_mdms_t mdms;
    uint8_t seed [AMI_E2E_SEED_SIZE];
    ami_msg_t *msg;
    ami_msg_t *msg2;
} G;

typedef struct {
    zsock_t *router;
    char *endpoint;
    zframe_t *rid;                  /* the aggregator's routing id here */
} headend_t;

typedef struct {
    char *state;
    headend_t he [HEADENDS];
    zactor_t *agg;
    char *agg_endpoint;
    zactor_t *fleet;
    uint64_t counter [FLEET_COUNT + 1];     /* next command counter per meter */
} fx_t;


/* ---------------------------------------------------------------------- */
/*  Fixture                                                                 */

static int
s_save_allowed (ami_cert_t *cert, const char *allow, const char *name)
{
    char *path = ami_test_path (allow, name);
    int rc = ami_cert_save_public (cert, path);
    free (path);
    return rc;
}

static int
s_group_setup (void **state)
{
    (void) state;
    G.dir = ami_test_tmpdir ("aggregator");
    if (!G.dir)
        return -1;
    char *allow = ami_test_path (G.dir, "allow");
    char *mdms_dir = ami_test_path (G.dir, "mdms");
    char *seed_path = ami_test_path (G.dir, "fleet-1.seed");
    int rc = -1;
    if (zsys_dir_create ("%s", allow) || zsys_dir_create ("%s", mdms_dir))
        goto done;
    G.agg_cert = ami_cert_new ("aggregator", "agg-1", NULL);
    G.fleet_cert = ami_cert_new ("meter", "fleet-1", NULL);
    G.rogue_cert = ami_cert_new ("meter", "fleet-9", NULL);
    G.stranger_cert = ami_cert_new ("meter", "fleet-x", NULL);
    G.he_cert [0] = ami_cert_new ("headend", "headend-1", NULL);
    G.he_cert [1] = ami_cert_new ("headend", "headend-2", NULL);
    if (!G.agg_cert || !G.fleet_cert || !G.rogue_cert || !G.stranger_cert
    ||  !G.he_cert [0] || !G.he_cert [1])
        goto done;
    /* the union: fleets may talk to the aggregator, the aggregator to the
       head ends; the stranger is on no list */
    if (s_save_allowed (G.agg_cert, allow, "agg-1.cert")
    ||  s_save_allowed (G.fleet_cert, allow, "fleet-1.cert")
    ||  s_save_allowed (G.rogue_cert, allow, "fleet-9.cert"))
        goto done;
    if (ami_e2e_mdms_generate (mdms_dir, "mdms") != AMI_OK
    ||  ami_e2e_mdms_load (&G.mdms, mdms_dir, true) != AMI_OK
    ||  ami_e2e_kdf_generate (seed_path, "meter", "fleet-1") != AMI_OK
    ||  ami_e2e_kdf_load (seed_path, G.seed) != AMI_OK)
        goto done;
    G.auth = ami_auth_new (allow, NULL);
    G.msg = ami_msg_new ();
    G.msg2 = ami_msg_new ();
    if (G.auth && G.msg && G.msg2)
        rc = 0;
done:
    free (allow); free (mdms_dir); free (seed_path);
    return rc;
}

static int
s_group_teardown (void **state)
{
    (void) state;
    ami_auth_destroy (&G.auth);
    ami_cert_destroy (&G.agg_cert);
    ami_cert_destroy (&G.fleet_cert);
    ami_cert_destroy (&G.rogue_cert);
    ami_cert_destroy (&G.stranger_cert);
    ami_cert_destroy (&G.he_cert [0]);
    ami_cert_destroy (&G.he_cert [1]);
    ami_e2e_mdms_wipe (&G.mdms);
    sodium_memzero (G.seed, sizeof G.seed);
    ami_msg_destroy (&G.msg);
    ami_msg_destroy (&G.msg2);
    ami_test_rmtree (G.dir);
    free (G.dir);
    return 0;
}

/*  STATUS frames (ami_aggregator.h). */
enum { ST_FLEETS, ST_METERS, ST_DOWN, ST_UP, ST_UNREACHABLE, ST_BUSY, ST_DROPPED,
       ST_PENDING, ST_MALFORMED, ST_ORPHANED, ST_DUPLICATES, ST_COUNT };

static void
s_status (fx_t *fx, uint64_t out [ST_COUNT])
{
    assert_int_equal (zstr_send (fx->agg, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (fx->agg);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), ST_COUNT);
    for (int i = 0; i < ST_COUNT; i++) {
        char *s = zmsg_popstr (reply);
        out [i] = strtoull (s, NULL, 10);
        zstr_free (&s);
    }
    zmsg_destroy (&reply);
}

/*  Wait until STATUS frame `which` equals value; returns false on timeout. */
static bool
s_wait_status (fx_t *fx, int which, uint64_t value)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    uint64_t st [ST_COUNT];
    while (zclock_mono () < deadline) {
        s_status (fx, st);
        if (st [which] == value)
            return true;
        zclock_sleep (POLL_MS);
    }
    return false;
}

static void
s_fleet_start (fx_t *fx)
{
    ami_meter_config_t config;
    memset (&config, 0, sizeof config);
    config.node_id = "fleet-1";
    config.cert = G.fleet_cert;
    config.aggregator = fx->agg_endpoint;
    config.aggregator_key = ami_cert_public_txt (G.agg_cert);
    config.first = 1;
    config.count = FLEET_COUNT;
    memcpy (config.seed, G.seed, sizeof config.seed);
    memcpy (config.mdms.sign_pk, G.mdms.sign_pk, sizeof config.mdms.sign_pk);
    memcpy (config.mdms.box_pk, G.mdms.box_pk, sizeof config.mdms.box_pk);
    config.state = fx->state;
    config.heartbeat_ms = HEARTBEAT_MS;
    fx->fleet = ami_meter_new (&config);
    assert_non_null (fx->fleet);
}

static int
s_setup (void **state)
{
    fx_t *fx = (fx_t *) calloc (1, sizeof *fx);
    assert_non_null (fx);
    fx->state = ami_test_tmpdir ("aggregator-state");
    assert_non_null (fx->state);
    for (int i = 0; i < FLEET_COUNT + 1; i++)
        fx->counter [i] = 1;

    ami_aggregator_headend_t headends [HEADENDS];
    const char *names [HEADENDS] = { "headend-1", "headend-2" };
    for (int i = 0; i < HEADENDS; i++) {
        headend_t *he = &fx->he [i];
        he->router = zsock_new (ZMQ_ROUTER);
        assert_non_null (he->router);
        zsock_set_linger (he->router, 0);
        zsock_set_maxmsgsize (he->router, AMI_MAX_FRAME);
        assert_int_equal (ami_auth_server (he->router, G.he_cert [i]), AMI_OK);
        assert_true (zsock_bind (he->router, "tcp://127.0.0.1:*") > 0);
        he->endpoint = zsock_last_endpoint (he->router);
        headends [i].name = names [i];
        headends [i].endpoint = he->endpoint;
        headends [i].server_key = ami_cert_public_txt (G.he_cert [i]);
    }
    ami_aggregator_config_t config;
    memset (&config, 0, sizeof config);
    config.node_id = "agg-1";
    config.cert = G.agg_cert;
    config.endpoint = "tcp://127.0.0.1:*";
    config.headends = headends;
    config.headend_count = HEADENDS;
    config.heartbeat_ms = HEARTBEAT_MS;
    fx->agg = ami_aggregator_new (&config);
    assert_non_null (fx->agg);
    zsock_set_rcvtimeo (fx->agg, WAIT_MS);
    assert_int_equal (zstr_send (fx->agg, "ENDPOINT"), 0);
    fx->agg_endpoint = zstr_recv (fx->agg);
    assert_non_null (fx->agg_endpoint);
    assert_true (strncmp (fx->agg_endpoint, "tcp://127.0.0.1:", 16) == 0);
    assert_true (atoi (fx->agg_endpoint + 16) > 0);

    s_fleet_start (fx);
    /* ready when the fleet's meters are routed */
    assert_true (s_wait_status (fx, ST_METERS, FLEET_COUNT));
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zactor_destroy (&fx->fleet);
    zactor_destroy (&fx->agg);
    for (int i = 0; i < HEADENDS; i++) {
        zsock_destroy (&fx->he [i].router);
        zstr_free (&fx->he [i].endpoint);
        zframe_destroy (&fx->he [i].rid);
    }
    zstr_free (&fx->agg_endpoint);
    ami_test_rmtree (fx->state);
    free (fx->state);
    free (fx);
    return 0;
}


/* ---------------------------------------------------------------------- */
/*  Head ends' side                                                          */

static zmsg_t *
s_he_recv (fx_t *fx, int i, int timeout_ms)
{
    headend_t *he = &fx->he [i];
    zpoller_t *poller = zpoller_new (he->router, NULL);
    zmsg_t *msg = NULL;
    if (zpoller_wait (poller, timeout_ms) == he->router)
        msg = zmsg_recv (he->router);
    zpoller_destroy (&poller);
    if (msg) {
        assert_int_equal (zmsg_size (msg), 2);
        if (!he->rid)
            he->rid = zframe_dup (zmsg_first (msg));
        /* only the aggregator talks to this head end */
        assert_true (zframe_eq (he->rid, zmsg_first (msg)));
    }
    return msg;
}

/*  Receive at head end i until a message of `type` arrives (others
    skipped); decoded into G.msg. NULL on timeout. */
static zmsg_t *
s_he_expect (fx_t *fx, int i, int type, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (true) {
        int64_t left = deadline - zclock_mono ();
        zmsg_t *msg = s_he_recv (fx, i, left > 0 ? (int) left : 0);
        if (!msg)
            return NULL;
        zframe_t *body = zmsg_last (msg);
        assert_int_equal (ami_msg_decode (G.msg, zframe_data (body), zframe_size (body)), AMI_OK);
        if (G.msg->type == type)
            return msg;
        zmsg_destroy (&msg);
    }
}

/*  Frames of the given types arriving at head end i within ms (others,
    i.e. HEALTH, are skipped). */
static int
s_he_count (fx_t *fx, int i, int type_a, int type_b, int ms)
{
    int count = 0;
    int64_t deadline = zclock_mono () + ms;
    while (zclock_mono () < deadline) {
        zmsg_t *msg = s_he_recv (fx, i, (int) (deadline - zclock_mono ()));
        if (!msg)
            break;
        zframe_t *body = zmsg_last (msg);
        int type = ami_msg_peek_type (zframe_data (body), zframe_size (body));
        if (type == type_a || type == type_b)
            count++;
        zmsg_destroy (&msg);
    }
    return count;
}

static void
s_he_send (fx_t *fx, int i, const void *data, size_t size)
{
    headend_t *he = &fx->he [i];
    if (!he->rid) {
        /* learn the aggregator's routing id from its HELLO */
        zmsg_t *msg = s_he_expect (fx, i, AMI_MSG_HELLO, WAIT_MS);
        assert_non_null (msg);
        zmsg_destroy (&msg);
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &(zframe_t *) { zframe_dup (he->rid) });
    zmsg_addmem (msg, data, size);
    assert_int_equal (zmsg_send (&msg, he->router), 0);
}

static size_t
s_command (const char *meter_id, uint64_t counter, uint8_t request_id [AMI_REQUEST_ID_SIZE],
           uint8_t *buf, size_t cap)
{
    ami_msg_reset (G.msg2, AMI_MSG_READ_REQ);
    ami_read_req_t *req = &G.msg2->read_req;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter_id);
    randombytes_buf (req->request_id, sizeof req->request_id);
    memcpy (request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    req->counter = counter;
    req->issued_ms = (uint64_t) zclock_time ();
    req->expires_ms = req->issued_ms + 10000;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, cap, &len), AMI_OK);
    assert_int_equal (ami_e2e_sign (buf, len, G.mdms.sign_sk), AMI_OK);
    return len;
}

/*  A read of meter `index` from head end i: the READ_RESP comes back to i,
    byte for byte as the meter signed it, and to no other head end. */
static void
s_read_via (fx_t *fx, int i, uint32_t index)
{
    char meter_id [AMI_MAX_ID + 1];
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command (ami_meter_id_format (index, meter_id), fx->counter [index]++,
                            rid, buf, sizeof buf);
    s_he_send (fx, i, buf, len);
    zmsg_t *msg = s_he_expect (fx, i, AMI_MSG_READ_RESP, WAIT_MS);
    assert_non_null (msg);
    assert_string_equal (G.msg->read_resp.meter_id, meter_id);
    assert_memory_equal (G.msg->read_resp.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->read_resp.status, AMI_OK);
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (G.seed, index, pk, NULL);
    zframe_t *body = zmsg_last (msg);
    assert_int_equal (ami_e2e_verify (zframe_data (body), zframe_size (body), pk), AMI_OK);
    uint8_t plain [AMI_MAX_SEALED];
    size_t plain_len = 0;
    assert_int_equal (ami_e2e_open (G.msg->read_resp.sealed, G.msg->read_resp.sealed_size,
                                    &G.mdms, plain, sizeof plain, &plain_len), AMI_OK);
    zmsg_destroy (&msg);
}

/*  Expect ERROR(request_id, code, origin agg-1) at head end i. */
static void
s_expect_error (fx_t *fx, int i, const uint8_t rid [AMI_REQUEST_ID_SIZE], int code,
                const char *mentions)
{
    zmsg_t *msg = s_he_expect (fx, i, AMI_MSG_ERROR, WAIT_MS);
    assert_non_null (msg);
    assert_true (G.msg->error.has_request_id);
    assert_memory_equal (G.msg->error.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->error.code, code);
    assert_string_equal (G.msg->error.origin, "agg-1");
    if (mentions)
        assert_non_null (strstr (G.msg->error.text, mentions));
    zmsg_destroy (&msg);
}

/*  A DEALER on the aggregator's fleet socket with the given certificate. */
static zsock_t *
s_fleet_socket (fx_t *fx, ami_cert_t *cert)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    assert_non_null (sock);
    zsock_set_linger (sock, 0);
    assert_int_equal (ami_auth_client (sock, cert, ami_cert_public_txt (G.agg_cert)), AMI_OK);
    assert_int_equal (zsock_connect (sock, "%s", fx->agg_endpoint), 0);
    return sock;
}

static void
s_send_encoded (zsock_t *sock, ami_msg_t *msg)
{
    uint8_t buf [8192];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (msg, buf, sizeof buf, &len), AMI_OK);
    assert_int_equal (zsock_send (sock, "b", buf, len), 0);
}

static void
s_hello (zsock_t *sock, const char *role, const char *node_id, const char *meter)
{
    ami_msg_reset (G.msg2, AMI_MSG_HELLO);
    snprintf (G.msg2->hello.role, sizeof G.msg2->hello.role, "%s", role);
    snprintf (G.msg2->hello.node_id, sizeof G.msg2->hello.node_id, "%s", node_id);
    if (meter) {
        snprintf (G.msg2->hello.meters [0], sizeof G.msg2->hello.meters [0], "%s", meter);
        G.msg2->hello.meter_count = 1;
    }
    s_send_encoded (sock, G.msg2);
}

static void
s_health (zsock_t *sock, const char *role, const char *node_id)
{
    ami_msg_reset (G.msg2, AMI_MSG_HEALTH);
    snprintf (G.msg2->health.role, sizeof G.msg2->health.role, "%s", role);
    snprintf (G.msg2->health.node_id, sizeof G.msg2->health.node_id, "%s", node_id);
    G.msg2->health.state = AMI_STATE_READY;
    s_send_encoded (sock, G.msg2);
}

/*  Receive one frame on a test socket within ms, decoded into G.msg, or
    return false. */
static bool
s_sock_expect (zsock_t *sock, int type, int ms, zframe_t **frame_p)
{
    int64_t deadline = zclock_mono () + ms;
    zpoller_t *poller = zpoller_new (sock, NULL);
    bool found = false;
    while (!found && zclock_mono () < deadline) {
        if (zpoller_wait (poller, (int) (deadline - zclock_mono ())) != sock)
            break;
        zframe_t *frame = zframe_recv (sock);
        assert_non_null (frame);
        assert_int_equal (ami_msg_decode (G.msg, zframe_data (frame), zframe_size (frame)), AMI_OK);
        if (G.msg->type == type) {
            found = true;
            if (frame_p) {
                *frame_p = frame;
                continue;
            }
        }
        zframe_destroy (&frame);
    }
    zpoller_destroy (&poller);
    return found;
}


/* ---------------------------------------------------------------------- */
/*  Tests                                                                   */

/*  A read from head end 1 returns to head end 1 only; from 2 to 2 only. */
static void
test_read_each_headend (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_read_via (fx, 0, 1);
    assert_int_equal (s_he_count (fx, 1, AMI_MSG_READ_RESP, AMI_MSG_ERROR, QUIET_MS / 2), 0);
    s_read_via (fx, 1, 2);
    assert_int_equal (s_he_count (fx, 0, AMI_MSG_READ_RESP, AMI_MSG_ERROR, QUIET_MS / 2), 0);
    /* interleaved, many in flight */
    char meter_id [AMI_MAX_ID + 1];
    uint8_t buf [512], rid [20][AMI_REQUEST_ID_SIZE];
    for (int n = 0; n < 20; n++) {
        uint32_t index = 1 + (uint32_t) (n % FLEET_COUNT);
        size_t len = s_command (ami_meter_id_format (index, meter_id), fx->counter [index]++,
                                rid [n], buf, sizeof buf);
        s_he_send (fx, n % 2, buf, len);
    }
    int got [HEADENDS] = { 0, 0 };
    for (int i = 0; i < HEADENDS; i++)
        for (int n = 0; n < 10; n++) {
            zmsg_t *msg = s_he_expect (fx, i, AMI_MSG_READ_RESP, WAIT_MS);
            assert_non_null (msg);
            assert_int_equal (G.msg->read_resp.status, AMI_OK);
            /* one of the requests this head end sent */
            bool mine = false;
            for (int k = i; k < 20; k += 2)
                mine |= memcmp (G.msg->read_resp.request_id, rid [k], AMI_REQUEST_ID_SIZE) == 0;
            assert_true (mine);
            got [i]++;
            zmsg_destroy (&msg);
        }
    assert_int_equal (got [0] + got [1], 20);
    uint64_t st [ST_COUNT];
    assert_true (s_wait_status (fx, ST_PENDING, 0));
    s_status (fx, st);
    assert_int_equal (st [ST_DOWN], 22);
    assert_int_equal (st [ST_UP], 22);
}

/*  Both head ends get the aggregator's HEALTH and the fleet's HEALTH
    (forwarded unchanged); a head end's HELLO is answered with HELLO. */
static void
test_health (void **state)
{
    fx_t *fx = (fx_t *) *state;
    for (int i = 0; i < HEADENDS; i++) {
        bool agg = false, fleet = false;
        int64_t deadline = zclock_mono () + WAIT_MS;
        while (!(agg && fleet) && zclock_mono () < deadline) {
            zmsg_t *msg = s_he_expect (fx, i, AMI_MSG_HEALTH, WAIT_MS);
            assert_non_null (msg);
            const ami_health_t *h = &G.msg->health;
            if (streq (h->role, "aggregator")) {
                assert_string_equal (h->node_id, "agg-1");
                assert_int_equal (h->state, AMI_STATE_READY);
                /* heartbeats queued before the fleet arrived say 0 */
                uint64_t fleets = 99, meters = 99;
                for (uint32_t k = 0; k < h->stat_count; k++) {
                    if (streq (h->stats [k].name, "fleets"))
                        fleets = h->stats [k].value;
                    if (streq (h->stats [k].name, "meters"))
                        meters = h->stats [k].value;
                }
                assert_true (fleets <= 1 && meters <= FLEET_COUNT);
                if (fleets == 1 && meters == FLEET_COUNT)
                    agg = true;
            }
            else {
                assert_string_equal (h->role, "meter");
                assert_string_equal (h->node_id, "fleet-1");
                assert_int_equal (h->stats [0].value, FLEET_COUNT);     /* meters */
                fleet = true;
            }
            zmsg_destroy (&msg);
        }
        assert_true (agg && fleet);
    }
    /* a head end that (re)starts introduces itself: the aggregator answers */
    ami_msg_reset (G.msg2, AMI_MSG_HELLO);
    strcpy (G.msg2->hello.role, "headend");
    strcpy (G.msg2->hello.node_id, "headend-2");
    uint8_t buf [256];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
    s_he_send (fx, 1, buf, len);
    zmsg_t *msg = s_he_expect (fx, 1, AMI_MSG_HELLO, WAIT_MS);
    assert_non_null (msg);
    assert_string_equal (G.msg->hello.role, "aggregator");
    assert_string_equal (G.msg->hello.node_id, "agg-1");
    assert_int_equal (G.msg->hello.meter_count, 0);
    zmsg_destroy (&msg);
}

/*  With head end 1 gone, reads through head end 2 still work. */
static void
test_headend_down (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_read_via (fx, 0, 1);
    s_read_via (fx, 1, 1);
    zsock_destroy (&fx->he [0].router);
    for (uint32_t index = 1; index <= FLEET_COUNT; index++)
        s_read_via (fx, 1, index);
    /* and HEALTH keeps flowing to the head end that is up */
    zmsg_t *msg = s_he_expect (fx, 1, AMI_MSG_HEALTH, WAIT_MS);
    assert_non_null (msg);
    zmsg_destroy (&msg);
}

/*  An unknown meter: ERROR AMI_E_UNREACHABLE from the aggregator. */
static void
test_unknown_meter (void **state)
{
    fx_t *fx = (fx_t *) *state;
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-999999", 1, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_error (fx, 0, rid, AMI_E_UNREACHABLE, "MTR-999999");
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_UNREACHABLE], 1);
    assert_int_equal (st [ST_DOWN], 0);
}

/*  A fleet that stops is gone after 3 heartbeats: its meters become
    AMI_E_UNREACHABLE, and requests in flight to it are answered so. */
static void
test_fleet_gone (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_read_via (fx, 0, 3);

    /* a second, silent fleet (played here) that takes requests and never
       answers; it first speaks without a HELLO, so the aggregator, which
       does not know it, introduces itself */
    zsock_t *silent = s_fleet_socket (fx, G.rogue_cert);
    s_health (silent, "meter", "fleet-9");
    assert_true (s_sock_expect (silent, AMI_MSG_HELLO, WAIT_MS, NULL));
    assert_string_equal (G.msg->hello.role, "aggregator");
    assert_string_equal (G.msg->hello.node_id, "agg-1");
    s_hello (silent, "meter", "fleet-9", "MTR-000500");
    assert_true (s_wait_status (fx, ST_METERS, FLEET_COUNT + 1));
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000500", 1, rid, buf, sizeof buf);
    s_he_send (fx, 1, buf, len);
    /* the command reaches the fleet byte for byte */
    zframe_t *frame = NULL;
    assert_true (s_sock_expect (silent, AMI_MSG_READ_REQ, WAIT_MS, &frame));
    assert_int_equal (zframe_size (frame), len);
    assert_memory_equal (zframe_data (frame), buf, len);
    zframe_destroy (&frame);

    /* both fleets stop */
    int64_t stopped = zclock_mono ();
    zactor_destroy (&fx->fleet);
    zsock_destroy (&silent);
    assert_true (s_wait_status (fx, ST_FLEETS, 0));
    int64_t elapsed = zclock_mono () - stopped;
    /* not before 3 heartbeats of silence (the last one heard at most one
       heartbeat before the stop) */
    assert_true (elapsed >= 2 * HEARTBEAT_MS);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_METERS], 0);
    assert_int_equal (st [ST_PENDING], 0);
    /* the request in flight to the silent fleet was answered */
    s_expect_error (fx, 1, rid, AMI_E_UNREACHABLE, "MTR-000500");
    /* and new requests for the gone fleet's meters too */
    len = s_command ("MTR-000003", fx->counter [3]++, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_error (fx, 0, rid, AMI_E_UNREACHABLE, "MTR-000003");

    /* the fleet comes back: served again */
    s_fleet_start (fx);
    assert_true (s_wait_status (fx, ST_METERS, FLEET_COUNT));
    s_read_via (fx, 0, 3);
}

/*  Malformed frames from a head end and from a fleet are dropped and
    counted; identities cannot be borrowed; reads keep working. */
static void
test_malformed (void **state)
{
    fx_t *fx = (fx_t *) *state;
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000001", fx->counter [1]++, rid, buf, sizeof buf);

    /* from head end 1: 6 bad frames */
    s_he_send (fx, 0, "garbage", 7);
    s_he_send (fx, 0, "", 0);
    s_he_send (fx, 0, buf, len - 3);                        /* truncated */
    zmsg_t *multi = zmsg_new ();
    zmsg_append (multi, &(zframe_t *) { zframe_dup (fx->he [0].rid) });
    zmsg_addmem (multi, buf, len);
    zmsg_addmem (multi, buf, len);
    assert_int_equal (zmsg_send (&multi, fx->he [0].router), 0);
    ami_msg_reset (G.msg2, AMI_MSG_READ_RESP);              /* wrong direction */
    strcpy (G.msg2->read_resp.meter_id, "MTR-000001");
    G.msg2->read_resp.status = AMI_E_REPLAY;
    uint8_t other [512];
    size_t other_len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, other, sizeof other, &other_len), AMI_OK);
    s_he_send (fx, 0, other, other_len);
    ami_msg_reset (G.msg2, AMI_MSG_BATCH_ACK);               /* not for us */
    assert_int_equal (ami_msg_encode (G.msg2, other, sizeof other, &other_len), AMI_OK);
    s_he_send (fx, 0, other, other_len);

    /* from an allowed fleet: 5 bad frames and 1 orphaned answer */
    zsock_t *rogue = s_fleet_socket (fx, G.rogue_cert);
    assert_int_equal (zsock_send (rogue, "b", "\x93\x01", 2), 0);      /* truncated */
    assert_int_equal (zsock_send (rogue, "bb", "a", 1, "b", 1), 0);   /* 2 frames */
    assert_int_equal (zsock_send (rogue, "b", buf, len), 0);         /* READ_REQ upward */
    s_hello (rogue, "meter", "fleet-1", "MTR-000001");  /* posing as fleet-1 */
    s_health (rogue, "mdms", "mdms");                   /* posing as the MDMS */
    ami_msg_reset (G.msg2, AMI_MSG_READ_RESP);          /* answer nobody asked for */
    strcpy (G.msg2->read_resp.meter_id, "MTR-000001");
    G.msg2->read_resp.status = AMI_E_REPLAY;
    randombytes_buf (G.msg2->read_resp.request_id, AMI_REQUEST_ID_SIZE);
    s_send_encoded (rogue, G.msg2);
    /* an allowed key whose certificate is not a fleet's (the aggregator's
       own, here) is not taken for one */
    zsock_t *impostor = s_fleet_socket (fx, G.agg_cert);
    s_hello (impostor, "meter", "agg-1", "MTR-000002");

    assert_true (s_wait_status (fx, ST_MALFORMED, 11));
    assert_true (s_wait_status (fx, ST_ORPHANED, 1));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_METERS], FLEET_COUNT);     /* nothing re-routed */
    assert_int_equal (st [ST_FLEETS], 2);               /* fleet-1 and the rogue */
    /* no one answered anything to the head ends' bad frames; the real
       meter still serves both head ends */
    s_he_send (fx, 0, buf, len);
    zmsg_t *msg = s_he_expect (fx, 0, AMI_MSG_READ_RESP, WAIT_MS);
    assert_non_null (msg);
    assert_memory_equal (G.msg->read_resp.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->read_resp.status, AMI_OK);
    zmsg_destroy (&msg);
    s_read_via (fx, 1, 2);
    /* the forged HEALTH never reached a head end */
    int64_t deadline = zclock_mono () + 3 * HEARTBEAT_MS;
    while (zclock_mono () < deadline) {
        msg = s_he_expect (fx, 1, AMI_MSG_HEALTH, (int) (deadline - zclock_mono ()));
        if (!msg)
            break;
        assert_false (streq (G.msg->health.node_id, "mdms"));
        zmsg_destroy (&msg);
    }
    zsock_destroy (&rogue);
    zsock_destroy (&impostor);
}

/*  The same fleet connected twice (a second process with its
    certificate): the newest connection takes the meters, the older one is
    ignored - no endless exchange of HELLOs between the two. */
static void
test_duplicate_fleet (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_read_via (fx, 0, 1);
    zsock_t *twin = s_fleet_socket (fx, G.fleet_cert);
    s_hello (twin, "meter", "fleet-1", "MTR-000001");
    /* the real fleet's next HEALTH comes from a superseded connection */
    assert_true (s_wait_status (fx, ST_FLEETS, 1));
    int64_t deadline = zclock_mono () + WAIT_MS;
    uint64_t st [ST_COUNT] = { 0 };
    while (zclock_mono () < deadline && st [ST_DUPLICATES] < 3) {
        s_status (fx, st);
        zclock_sleep (POLL_MS);
    }
    assert_true (st [ST_DUPLICATES] >= 3);      /* a few heartbeats ignored */
    assert_int_equal (st [ST_FLEETS], 1);
    assert_int_equal (st [ST_METERS], 1);       /* only what the twin announced */
    /* the twin serves MTR-000001 now: the command reaches it */
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000001", fx->counter [1]++, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    assert_true (s_sock_expect (twin, AMI_MSG_READ_REQ, WAIT_MS, NULL));
    assert_memory_equal (G.msg->read_req.request_id, rid, AMI_REQUEST_ID_SIZE);
    /* the others are unreachable: their fleet is the ignored connection */
    len = s_command ("MTR-000002", fx->counter [2]++, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_error (fx, 0, rid, AMI_E_UNREACHABLE, "MTR-000002");
    /* the twin goes away; the real fleet keeps talking on its ignored
       connection, so it stays ignored; restarted, it connects anew and
       gets its meters back */
    zsock_destroy (&twin);
    zactor_destroy (&fx->fleet);
    s_fleet_start (fx);
    assert_true (s_wait_status (fx, ST_METERS, FLEET_COUNT));
    s_read_via (fx, 1, 2);
}

/*  A key on no allow-list gets nothing from the aggregator. */
static void
test_unlisted_key (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *stranger = s_fleet_socket (fx, G.stranger_cert);
    s_health (stranger, "meter", "fleet-x");
    s_hello (stranger, "meter", "fleet-x", "MTR-000777");
    zpoller_t *poller = zpoller_new (stranger, NULL);
    assert_null (zpoller_wait (poller, QUIET_MS));
    assert_true (zpoller_expired (poller));
    zpoller_destroy (&poller);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_FLEETS], 1);
    assert_int_equal (st [ST_METERS], FLEET_COUNT);
    zsock_destroy (&stranger);
    /* its meter is unknown */
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000777", 1, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_error (fx, 0, rid, AMI_E_UNREACHABLE, "MTR-000777");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_read_each_headend, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_health, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_headend_down, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unknown_meter, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fleet_gone, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_malformed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_duplicate_fleet, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unlisted_key, s_setup, s_teardown),
    };
    return cmocka_run_group_tests_name ("aggregator", tests, s_group_setup, s_group_teardown);
}
