/*  test_aggregator.c - the pole-top aggregator (ami-aggregator) between a
    real meter fleet actor and two test ROUTERs playing head ends, all
    CurveZMQ on 127.0.0.1.

    Requirements exercised: FUN-READ-1 (a read crosses the aggregator both
    ways), FUN-READ-2 (AMI_E_UNREACHABLE for an unknown or gone meter),
    SEC-AUTH-1 (an unlisted key gets nothing), SEC-AVAIL-1 (reads keep
    working with one head end down; interval data goes through the other
    head end when one is silent or does not acknowledge), SEC-INT-1 (frames
    and interval blocks relayed byte for byte: the meter's signature still
    verifies), SEC-VAL-1 (any bytes from a head end or a fleet), FUN-INT-1
    (custody, store and forward, credit, bounded buffer whose overflow is
    refused and counted).

    Interval-data tests play the fleet with a DEALER of their own (fleet-9)
    and the head ends with two ROUTERs; one test puts a TCP proxy in front
    of head end 1 and freezes it, so that head end stops answering ZMTP
    heartbeats without closing its connection.

    One ami_auth for the whole binary; its allow-list is the union of what
    the aggregator's ROUTER needs (the fleets' certificates) and what the
    head ends' ROUTERs need (the aggregator's). Every wait has a deadline.

    AMI_AGG_BENCH=1 in the environment runs only test_benchmark, which
    measures the aggregator's interval-data throughput for several batch
    sizes (the figures behind AMI_AGGREGATOR_BATCH_BLOCKS).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

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
/*  Interval-data tests: blocks with distinct boxes the test can compare. */
#define TEST_BLOCKS     64

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
    uint8_t boxes [TEST_BLOCKS][AMI_MAX_SEALED];    /* random bytes */
} G;

/*  How a test wants its fixture (cmocka prestate); NULL = the defaults. */
typedef struct {
    bool no_fleet;                  /* do not start the real fleet actor */
    bool proxy;                     /* head end 1 behind a freezable TCP proxy */
    size_t buffer_blocks;           /* 0 = default, as in the config struct */
    uint32_t batch_blocks;
    int batch_delay_ms;
    int ack_timeout_ms;
    size_t max_pending;             /* 0 = default */
    size_t store_map_size;          /* 0 = derived from the bounds */
    size_t max_fleets;              /* 0 = default */
    size_t max_meters;              /* 0 = default */
    int heartbeat_ms;               /* 0 = HEARTBEAT_MS */
} params_t;

typedef struct {
    zsock_t *router;
    char *endpoint;
    zframe_t *rid;                  /* the aggregator's routing id here */
} headend_t;

typedef struct {
    char *state;                    /* the fleet actor's */
    char *agg_state;                /* the aggregator's custody store */
    params_t params;                /* how the aggregator is configured */
    char proxy_endpoint [64];       /* head end 1's, with params.proxy */
    headend_t he [HEADENDS];
    zactor_t *proxy;                /* in front of head end 1, or NULL */
    uint32_t bench_blocks;          /* batch-blocks of this run (benchmark) */
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
    randombytes_buf (G.boxes, sizeof G.boxes);
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
       ST_PENDING, ST_MALFORMED, ST_ORPHANED, ST_DUPLICATES,
       ST_BATCHES_IN, ST_BLOCKS_IN, ST_BATCHES_OUT, ST_BATCHES_ACKED, ST_BATCHES_RESENT,
       ST_BUFFER_BLOCKS, ST_BUFFER_MAX, ST_OVERFLOW_BATCHES, ST_OVERFLOW_BLOCKS, ST_CREDIT,
       ST_INFLIGHT, ST_HEADENDS_LIVE, ST_ACKS_REFUSED, ST_ACKS_UNKNOWN, ST_BUFFER_BYTES,
       ST_PENDING_BUSY, ST_HANDSHAKES_REFUSED, ST_HANDSHAKES_FAILED,
       ST_HEADEND_HANDSHAKES_FAILED, ST_STORE_REFUSED, ST_STORE_ERRORS, ST_STORE_COMMITS,
       ST_RESTORED_BLOCKS, ST_TOMBS, ST_ACKS_FAILED, ST_FLEETS_REFUSED, ST_ROUTES_FULL,
       ST_SUPERSEDED_FULL, ST_BUFFER_BYTES_MAX, ST_ROUTES_REFUSED, ST_COUNT };

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

/*  A TCP proxy (test double for the network path to a head end): it
    forwards bytes both ways until "FREEZE", then forwards nothing, reads
    nothing and accepts nothing, keeping every connection open - a head end
    that has stopped answering without closing anything. Sends its port
    after the handshake. */
static void
s_proxy_actor (zsock_t *pipe, void *args)
{
    int upstream = *(int *) args;
    int listener = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t addr_len = sizeof addr;
    int port = 0;
    if (listener >= 0
    &&  bind (listener, (struct sockaddr *) &addr, sizeof addr) == 0
    &&  listen (listener, 8) == 0
    &&  getsockname (listener, (struct sockaddr *) &addr, &addr_len) == 0)
        port = ntohs (addr.sin_port);
    zsock_signal (pipe, 0);
    zstr_sendf (pipe, "%d", port);
    int fds [16][2];                /* pairs: [0] accepted, [1] to upstream */
    size_t pairs = 0;
    bool frozen = false;
    static uint8_t buf [65536];
    while (port) {
        zmq_pollitem_t items [2 + 2 * 16];
        int n = 0;
        items [n++] = (zmq_pollitem_t) { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 };
        if (!frozen) {
            items [n++] = (zmq_pollitem_t) { NULL, listener, ZMQ_POLLIN, 0 };
            for (size_t k = 0; k < pairs; k++)
                for (int side = 0; side < 2; side++)
                    items [n++] = (zmq_pollitem_t) { NULL, fds [k][side], ZMQ_POLLIN, 0 };
        }
        if (zmq_poll (items, n, -1) == -1)
            break;
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            bool stop = !command || streq (command, "$TERM");
            if (command && streq (command, "FREEZE")) {
                frozen = true;
                zsock_signal (pipe, 0);
            }
            zstr_free (&command);
            if (stop)
                break;
            continue;
        }
        if ((items [1].revents & ZMQ_POLLIN) && pairs < 16) {
            int in = accept (listener, NULL, NULL);
            int out = socket (AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in up = addr;
            up.sin_port = htons ((uint16_t) upstream);
            if (in >= 0 && out >= 0 && connect (out, (struct sockaddr *) &up, sizeof up) == 0) {
                fds [pairs][0] = in;
                fds [pairs][1] = out;
                pairs++;
            }
            else {
                if (in >= 0) close (in);
                if (out >= 0) close (out);
            }
            continue;           /* the item list changed */
        }
        for (size_t k = 0; k < pairs; k++)
            for (int side = 0; side < 2; side++) {
                if (!(items [2 + 2 * k + side].revents & ZMQ_POLLIN) || fds [k][0] < 0)
                    continue;
                ssize_t got = read (fds [k][side], buf, sizeof buf);
                ssize_t put = 0;
                while (got > 0 && put < got) {
                    ssize_t w = write (fds [k][!side], buf + put, (size_t) (got - put));
                    if (w <= 0)
                        break;
                    put += w;
                }
                if (got <= 0 || put < got) {
                    close (fds [k][0]);
                    close (fds [k][1]);
                    fds [k][0] = fds [k][1] = -1;
                }
            }
        size_t kept = 0;            /* forget closed pairs */
        for (size_t k = 0; k < pairs; k++)
            if (fds [k][0] >= 0) {
                fds [kept][0] = fds [k][0];
                fds [kept][1] = fds [k][1];
                kept++;
            }
        pairs = kept;
    }
    for (size_t k = 0; k < pairs; k++) {
        close (fds [k][0]);
        close (fds [k][1]);
    }
    if (listener >= 0)
        close (listener);
}

/*  Start the aggregator under test (again) on fx->agg_state, reporting
    to the head end endpoints in fx->he; sets fx->agg and fx->agg_endpoint. */
static void
s_agg_start (fx_t *fx)
{
    const params_t *params = &fx->params;
    ami_aggregator_headend_t headends [HEADENDS];
    const char *names [HEADENDS] = { "headend-1", "headend-2" };
    for (int i = 0; i < HEADENDS; i++) {
        headends [i].name = names [i];
        headends [i].endpoint = fx->he [i].endpoint;
        headends [i].server_key = ami_cert_public_txt (G.he_cert [i]);
    }
    if (params->proxy)
        headends [0].endpoint = fx->proxy_endpoint;
    ami_aggregator_config_t config;
    memset (&config, 0, sizeof config);
    config.node_id = "agg-1";
    config.cert = G.agg_cert;
    config.endpoint = "tcp://127.0.0.1:*";
    config.headends = headends;
    config.headend_count = HEADENDS;
    config.heartbeat_ms = params->heartbeat_ms ? params->heartbeat_ms : HEARTBEAT_MS;
    config.max_fleets = params->max_fleets;
    config.max_meters = params->max_meters;
    config.buffer_blocks = params->buffer_blocks;
    config.batch_blocks = params->batch_blocks;
    config.batch_delay_ms = params->batch_delay_ms;
    config.ack_timeout_ms = params->ack_timeout_ms;
    config.max_pending = params->max_pending;
    config.state = fx->agg_state;
    config.store_map_size = params->store_map_size;
    fx->agg = ami_aggregator_new (&config);
    assert_non_null (fx->agg);
    zsock_set_rcvtimeo (fx->agg, WAIT_MS);
    assert_int_equal (zstr_send (fx->agg, "ENDPOINT"), 0);
    zstr_free (&fx->agg_endpoint);
    fx->agg_endpoint = zstr_recv (fx->agg);
    assert_non_null (fx->agg_endpoint);
    assert_true (strncmp (fx->agg_endpoint, "tcp://127.0.0.1:", 16) == 0);
    assert_true (atoi (fx->agg_endpoint + 16) > 0);
}

static int
s_setup (void **state)
{
    params_t defaults;
    memset (&defaults, 0, sizeof defaults);
    const params_t *params = *state ? (const params_t *) *state : &defaults;
    fx_t *fx = (fx_t *) calloc (1, sizeof *fx);
    assert_non_null (fx);
    fx->state = ami_test_tmpdir ("aggregator-state");
    assert_non_null (fx->state);
    for (int i = 0; i < FLEET_COUNT + 1; i++)
        fx->counter [i] = 1;

    for (int i = 0; i < HEADENDS; i++) {
        headend_t *he = &fx->he [i];
        he->router = zsock_new (ZMQ_ROUTER);
        assert_non_null (he->router);
        zsock_set_linger (he->router, 0);
        zsock_set_maxmsgsize (he->router, AMI_MAX_FRAME);
        assert_int_equal (ami_auth_server (he->router, G.he_cert [i]), AMI_OK);
        assert_true (zsock_bind (he->router, "tcp://127.0.0.1:*") > 0);
        he->endpoint = zsock_last_endpoint (he->router);
    }
    if (params->proxy) {
        int upstream = atoi (strrchr (fx->he [0].endpoint, ':') + 1);
        fx->proxy = zactor_new (s_proxy_actor, &upstream);
        assert_non_null (fx->proxy);
        char *port = zstr_recv (fx->proxy);
        assert_non_null (port);
        assert_true (atoi (port) > 0);
        snprintf (fx->proxy_endpoint, sizeof fx->proxy_endpoint, "tcp://127.0.0.1:%s", port);
        zstr_free (&port);
    }
    fx->agg_state = ami_test_tmpdir ("aggregator-custody");
    assert_non_null (fx->agg_state);
    fx->params = *params;
    fx->bench_blocks = params->batch_blocks;
    s_agg_start (fx);

    if (!params->no_fleet) {
        s_fleet_start (fx);
        /* ready when the fleet's meters are routed */
        assert_true (s_wait_status (fx, ST_METERS, FLEET_COUNT));
    }
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zactor_destroy (&fx->fleet);
    zactor_destroy (&fx->agg);
    zactor_destroy (&fx->proxy);
    for (int i = 0; i < HEADENDS; i++) {
        zsock_destroy (&fx->he [i].router);
        zstr_free (&fx->he [i].endpoint);
        zframe_destroy (&fx->he [i].rid);
    }
    zstr_free (&fx->agg_endpoint);
    ami_test_rmtree (fx->state);
    free (fx->state);
    ami_test_rmtree (fx->agg_state);
    free (fx->agg_state);
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


/*  Aggregator HEALTH at a head end, and a test BATCH (defined with the
    interval-data helpers). */
static uint64_t
    s_stat (const ami_health_t *health, const char *name);
static bool
    s_wait_health (fx_t *fx, int i, const char *name, uint64_t value);
static size_t
    s_make_batch (uint64_t id, const char *origin, uint32_t first, uint32_t count,
                  uint8_t *buf, size_t cap);


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
    ami_msg_reset (G.msg2, AMI_MSG_BATCH);                   /* wrong direction */
    G.msg2->batch.batch_id = 7;
    strcpy (G.msg2->batch.origin, "headend-1");
    strcpy (G.msg2->batch.blocks [0].meter_id, "MTR-000001");
    G.msg2->batch.blocks [0].seq = 1;
    G.msg2->batch.blocks [0].box = G.boxes [0];
    G.msg2->batch.blocks [0].box_size = 16;
    G.msg2->batch.block_count = 1;
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
    /* issue 6: the orphaned answer reaches the head ends' HEALTH too */
    assert_true (s_wait_health (fx, 0, "orphaned", 1));
    assert_int_equal (s_stat (&G.msg->health, "malformed"), 11);
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

/*  SEC-INT-4: an allowed fleet (fleet-9) that announces a meter another
    live fleet serves does not take its route: commands for MTR-000001
    still reach fleet-1, none reaches the claimant, and the claim is
    counted. */
static void
test_sec_int_4_route_claim (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_read_via (fx, 0, 1);
    zsock_t *rogue = s_fleet_socket (fx, G.rogue_cert);
    s_hello (rogue, "meter", "fleet-9", "MTR-000001");
    s_health (rogue, "meter", "fleet-9");
    assert_true (s_wait_status (fx, ST_FLEETS, 2));
    s_read_via (fx, 1, 1);                      /* still answered by fleet-1 */
    zpoller_t *poller = zpoller_new (rogue, NULL);
    int64_t deadline = zclock_mono () + QUIET_MS;
    while (zclock_mono () < deadline) {
        if (!zpoller_wait (poller, POLL_MS))
            continue;
        zmsg_t *msg = zmsg_recv (rogue);
        assert_non_null (msg);
        zframe_t *frame = zmsg_last (msg);
        assert_int_not_equal (ami_msg_peek_type (zframe_data (frame), zframe_size (frame)),
                              AMI_MSG_READ_REQ);
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&rogue);
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


/* ---------------------------------------------------------------------- */
/*  SEC-AUD-2: failed handshakes on the fleet ROUTER                        */

/*  Attempts at a report that names the peer (a miss is a connection that
    failed before the monitor could ask for its address, ami_monitor.h);
    few enough that every warning fits the aggregator's log budget. */
#define NAME_ATTEMPTS   8

/*  SEC-AUD-2: a fleet key on no allow-list, and a plaintext client, each
    connect to the aggregator's fleet ROUTER: each failed handshake is
    counted exactly (STATUS and HEALTH handshakes_refused /
    handshakes_failed) and warned about once, naming the peer's address -
    the client's own source ip:port (set here with
    "tcp://source;destination"), not the aggregator's endpoint. The real
    fleet is served all the while; the aggregator's own handshakes with
    the head ends all succeeded. */
static void
test_sec_aud_2_refused_handshakes (void **state)
{
    fx_t *fx = (fx_t *) *state;
    char *path = ami_test_path (G.dir, "aggregator-aud.log");
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    zsys_set_logstream (file);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_HANDSHAKES_REFUSED], 0);
    assert_int_equal (st [ST_HANDSHAKES_FAILED], 0);
    const char *server_key = ami_cert_public_txt (G.agg_cert);

    /* kind 0: the stranger's key, refused by ZAP; kind 1: plaintext */
    const int which [2] = { ST_HANDSHAKES_REFUSED, ST_HANDSHAKES_FAILED };
    const char *line [2] = { "aggregator agg-1: fleets: CURVE handshake from ",
                             "aggregator agg-1: fleets: handshake from " };
    const char *verdict [2] = { "refused: key not in the allow-list (ZAP status 400)",
                                "failed: not a CURVE client of this server" };
    uint64_t count [2] = { 0, 0 };
    for (int kind = 0; kind < 2; kind++) {
        bool named = false;
        for (int attempt = 0; attempt < NAME_ATTEMPTS && !named; attempt++) {
            int port = ami_test_free_port ();
            assert_true (port > 0);
            zsock_t *sock = ami_test_knock (fx->agg_endpoint, port, kind ? NULL : G.stranger_cert,
                                     server_key);
            assert_non_null (sock);
            count [kind]++;
            assert_true (s_wait_status (fx, which [kind], count [kind]));
            /* logged before STATUS counted it: one line per failure */
            assert_int_equal (ami_test_count_in_file (path, line [kind]), count [kind]);
            char needle [160];
            snprintf (needle, sizeof needle, "%s127.0.0.1:%d %s", line [kind], port,
                      verdict [kind]);
            named = ami_test_count_in_file (path, needle) == 1;
            if (!named) {           /* then the peer is unknown, never another's */
                snprintf (needle, sizeof needle, "%s? %s", line [kind], verdict [kind]);
                assert_true (ami_test_count_in_file (path, needle) > 0);
            }
            zsock_destroy (&sock);
        }
        if (!named)
            fail_msg ("fleets: no warning named the peer in %d attempts", NAME_ATTEMPTS);
    }
    /* exact: one count per failed handshake, none of one kind in the other */
    zclock_sleep (QUIET_MS / 5);        /* (a late extra report would show) */
    s_status (fx, st);
    assert_int_equal (st [ST_HANDSHAKES_REFUSED], count [0]);
    assert_int_equal (st [ST_HANDSHAKES_FAILED], count [1]);
    assert_int_equal (st [ST_HEADEND_HANDSHAKES_FAILED], 0);
    assert_int_equal (st [ST_FLEETS], 1);
    s_read_via (fx, 0, 1);
    /* the head ends see the counts in the aggregator's HEALTH */
    bool seen = false;
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!seen && zclock_mono () < deadline) {
        zmsg_t *msg = s_he_expect (fx, 1, AMI_MSG_HEALTH, WAIT_MS);
        assert_non_null (msg);
        const ami_health_t *h = &G.msg->health;
        uint64_t refused = UINT64_MAX, failed = UINT64_MAX;
        for (uint32_t k = 0; streq (h->role, "aggregator") && k < h->stat_count; k++) {
            if (streq (h->stats [k].name, "handshakes_refused"))
                refused = h->stats [k].value;
            if (streq (h->stats [k].name, "handshakes_failed"))
                failed = h->stats [k].value;
        }
        seen = refused == count [0] && failed == count [1];
        zmsg_destroy (&msg);
    }
    assert_true (seen);
    zsys_set_logstream (stderr);
    fclose (file);
    free (path);
}


/* ---------------------------------------------------------------------- */
/*  SEC-AVAIL-2: the aggregator's pending bound                             */

#define BOUND       3                   /* max_pending in this test */
#define OVER        2                   /* reads sent over it */
#define ROGUE_METER "MTR-000901"

/*  A test fleet's heartbeat: HEALTH every half heartbeat, so the
    aggregator keeps it (a fleet silent for 3 heartbeats is gone, and its
    requests with it). */
typedef struct {
    zsock_t *sock;
    int64_t next;
} beat_t;

static void
s_beat (beat_t *beat)
{
    if (zclock_mono () >= beat->next) {
        s_health (beat->sock, "meter", "fleet-9");
        beat->next = zclock_mono () + HEARTBEAT_MS / 2;
    }
}

/*  s_he_expect, keeping the test fleet alive meanwhile. */
static zmsg_t *
s_he_expect_beating (fx_t *fx, int i, int type, int ms, beat_t *beat)
{
    int64_t deadline = zclock_mono () + ms;
    while (zclock_mono () < deadline) {
        s_beat (beat);
        zmsg_t *msg = s_he_expect (fx, i, type, POLL_MS);
        if (msg)
            return msg;
    }
    return NULL;
}

/*  A READ_REQ at the test fleet within ms (decoded into G.msg), keeping
    it alive meanwhile. */
static bool
s_fleet_read_beating (beat_t *beat, int ms)
{
    int64_t deadline = zclock_mono () + ms;
    while (zclock_mono () < deadline) {
        s_beat (beat);
        if (s_sock_expect (beat->sock, AMI_MSG_READ_REQ, POLL_MS, NULL))
            return true;
    }
    return false;
}

/*  Expect ERROR(rid, AMI_E_BUSY, origin agg-1) at head end 0. */
static void
s_expect_busy (fx_t *fx, const uint8_t rid [AMI_REQUEST_ID_SIZE], beat_t *beat)
{
    zmsg_t *msg = s_he_expect_beating (fx, 0, AMI_MSG_ERROR, WAIT_MS, beat);
    assert_non_null (msg);
    assert_true (G.msg->error.has_request_id);
    assert_memory_equal (G.msg->error.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->error.code, AMI_E_BUSY);
    assert_string_equal (G.msg->error.origin, "agg-1");
    zmsg_destroy (&msg);
}

/*  READ_REQs reaching the test fleet, and answers or errors reaching
    head end 0, within ms. */
static void
s_quiet_beating (fx_t *fx, beat_t *beat, int ms, int *reads, int *answers)
{
    *reads = *answers = 0;
    int64_t deadline = zclock_mono () + ms;
    while (zclock_mono () < deadline) {
        s_beat (beat);
        if (s_sock_expect (beat->sock, AMI_MSG_READ_REQ, POLL_MS, NULL))
            (*reads)++;
        zmsg_t *msg = s_he_recv (fx, 0, 0);
        if (msg) {
            zframe_t *body = zmsg_last (msg);
            int type = ami_msg_peek_type (zframe_data (body), zframe_size (body));
            *answers += type == AMI_MSG_READ_RESP || type == AMI_MSG_ERROR;
            zmsg_destroy (&msg);
        }
    }
}

/*  SEC-AVAIL-2: with max_pending = BOUND and a fleet that holds its reads,
    BOUND + OVER reads from a head end: exactly BOUND reach the fleet, the
    OVER last are answered ERROR(request_id, AMI_E_BUSY, agg-1) at once -
    well before the reads' deadline, 10 s away - and counted
    (pending_busy, busy). A retry of a request id already in flight is not
    refused (it replaces its entry). Once the fleet answers one, a new read
    goes through again, and the next is BUSY again. */
static void
test_sec_avail_2_aggregator_pending_bound (void **state)
{
    fx_t *fx = (fx_t *) *state;
    beat_t beat = { s_fleet_socket (fx, G.rogue_cert), 0 };
    s_hello (beat.sock, "meter", "fleet-9", ROGUE_METER);
    s_beat (&beat);
    assert_true (s_wait_status (fx, ST_METERS, 1));

    uint8_t buf [512], rid [BOUND + OVER][AMI_REQUEST_ID_SIZE];
    int64_t sent = zclock_mono ();
    for (int n = 0; n < BOUND + OVER; n++) {
        size_t len = s_command (ROGUE_METER, (uint64_t) n + 1, rid [n], buf, sizeof buf);
        s_he_send (fx, 0, buf, len);
    }
    /* frames from one head end are handled in order: the last OVER are
       over the bound */
    for (int n = BOUND; n < BOUND + OVER; n++)
        s_expect_busy (fx, rid [n], &beat);
    assert_true (zclock_mono () - sent < WAIT_MS);     /* far from the 10 s deadline */
    for (int n = 0; n < BOUND; n++) {
        assert_true (s_fleet_read_beating (&beat, WAIT_MS));
        assert_memory_equal (G.msg->read_req.request_id, rid [n], AMI_REQUEST_ID_SIZE);
    }
    int reads, answers;
    s_quiet_beating (fx, &beat, QUIET_MS, &reads, &answers);
    assert_int_equal (reads, 0);
    assert_int_equal (answers, 0);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_PENDING], BOUND);
    assert_int_equal (st [ST_DOWN], BOUND);
    assert_int_equal (st [ST_PENDING_BUSY], OVER);
    assert_int_equal (st [ST_BUSY], OVER);

    /* a retry of a request in flight (new counter) is not over the bound */
    uint8_t scratch [AMI_REQUEST_ID_SIZE];
    size_t len = s_command (ROGUE_METER, 100, scratch, buf, sizeof buf);
    memcpy (G.msg2->read_req.request_id, rid [0], AMI_REQUEST_ID_SIZE);
    assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
    s_he_send (fx, 0, buf, len);
    assert_true (s_fleet_read_beating (&beat, WAIT_MS));
    assert_memory_equal (G.msg->read_req.request_id, rid [0], AMI_REQUEST_ID_SIZE);
    assert_int_equal (G.msg->read_req.counter, 100);

    /* the fleet answers rid [0]: its answer goes up, and a new read fits */
    static const uint8_t sealed [40] = { 1, 2, 3 };
    ami_msg_reset (G.msg2, AMI_MSG_READ_RESP);
    snprintf (G.msg2->read_resp.meter_id, sizeof G.msg2->read_resp.meter_id, ROGUE_METER);
    memcpy (G.msg2->read_resp.request_id, rid [0], AMI_REQUEST_ID_SIZE);
    G.msg2->read_resp.sealed = sealed;
    G.msg2->read_resp.sealed_size = sizeof sealed;
    s_send_encoded (beat.sock, G.msg2);
    zmsg_t *msg = s_he_expect_beating (fx, 0, AMI_MSG_READ_RESP, WAIT_MS, &beat);
    assert_non_null (msg);
    assert_memory_equal (G.msg->read_resp.request_id, rid [0], AMI_REQUEST_ID_SIZE);
    zmsg_destroy (&msg);
    uint8_t next [2][AMI_REQUEST_ID_SIZE];
    len = s_command (ROGUE_METER, 200, next [0], buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    assert_true (s_fleet_read_beating (&beat, WAIT_MS));
    assert_memory_equal (G.msg->read_req.request_id, next [0], AMI_REQUEST_ID_SIZE);
    /* ...and the bound holds again */
    len = s_command (ROGUE_METER, 201, next [1], buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_busy (fx, next [1], &beat);
    s_status (fx, st);
    assert_int_equal (st [ST_PENDING], BOUND);
    assert_int_equal (st [ST_PENDING_BUSY], OVER + 1);
    assert_int_equal (st [ST_UP], 1);
    zsock_destroy (&beat.sock);
}

static params_t s_bound_pending_params = { .no_fleet = true, .max_pending = BOUND };


/* ---------------------------------------------------------------------- */
/*  Issue 6: the fleet-side bounds, counted and reported                     */

/*  A HELLO from sock as fleet-9 announcing MTR-(first) .. MTR-(first +
    count - 1). */
static void
s_hello_range (zsock_t *sock, uint32_t first, uint32_t count)
{
    ami_msg_reset (G.msg2, AMI_MSG_HELLO);
    strcpy (G.msg2->hello.role, "meter");
    strcpy (G.msg2->hello.node_id, "fleet-9");
    for (uint32_t i = 0; i < count; i++)
        ami_meter_id_format (first + i, G.msg2->hello.meters [i]);
    G.msg2->hello.meter_count = count;
    s_send_encoded (sock, G.msg2);
}

/*  Fleets table full (max_fleets 1): a second fleet gets nothing - no
    HELLO, no route - and every frame it sends is counted (fleets_refused,
    STATUS and HEALTH, next to fleets_max). */
static params_t s_fleets_full_params = { .no_fleet = true, .max_fleets = 1 };

static void
test_issue6_fleets_refused (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *first = s_fleet_socket (fx, G.rogue_cert);
    s_hello (first, "meter", "fleet-9", "MTR-000901");
    assert_true (s_wait_status (fx, ST_METERS, 1));
    zsock_t *second = s_fleet_socket (fx, G.fleet_cert);
    s_hello (second, "meter", "fleet-1", "MTR-000001");
    s_health (second, "meter", "fleet-1");
    assert_true (s_wait_status (fx, ST_FLEETS_REFUSED, 2));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_FLEETS], 1);
    assert_int_equal (st [ST_METERS], 1);
    assert_false (s_sock_expect (second, AMI_MSG_HELLO, QUIET_MS, NULL));
    /* its meter is not routed: a read of it is answered UNREACHABLE */
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000001", 1, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_error (fx, 0, rid, AMI_E_UNREACHABLE, "MTR-000001");
    assert_true (s_wait_health (fx, 1, "fleets_refused", 2));
    assert_int_equal (s_stat (&G.msg->health, "fleets_max"), 1);
    assert_int_equal (s_stat (&G.msg->health, "fleets"), 1);
    zsock_destroy (&second);
    zsock_destroy (&first);
}

/*  Route table full (max_meters 2): a HELLO's ids past the bound are not
    routed, counted (routes_refused_full) and a read of one is answered
    UNREACHABLE, never lost; routes_refused (SEC-INT-4) is a different
    counter and stays 0. */
static params_t s_routes_full_params = { .no_fleet = true, .max_meters = 2 };

static void
test_issue6_routes_refused_full (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_fleet_socket (fx, G.rogue_cert);
    s_hello_range (fleet, 901, 3);              /* 901, 902 routed; 903 not */
    assert_true (s_wait_status (fx, ST_ROUTES_FULL, 1));
    s_hello_range (fleet, 903, 2);              /* 903, 904: no room */
    assert_true (s_wait_status (fx, ST_ROUTES_FULL, 3));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_METERS], 2);
    assert_int_equal (st [ST_ROUTES_REFUSED], 0);
    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command ("MTR-000903", 1, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    s_expect_error (fx, 0, rid, AMI_E_UNREACHABLE, "MTR-000903");
    /* a routed one reaches the fleet */
    len = s_command ("MTR-000902", 1, rid, buf, sizeof buf);
    s_he_send (fx, 0, buf, len);
    assert_true (s_sock_expect (fleet, AMI_MSG_READ_REQ, WAIT_MS, NULL));
    assert_memory_equal (G.msg->read_req.request_id, rid, AMI_REQUEST_ID_SIZE);
    assert_true (s_wait_health (fx, 1, "routes_refused_full", 3));
    assert_int_equal (s_stat (&G.msg->health, "meters_max"), 2);
    assert_int_equal (s_stat (&G.msg->health, "meters"), 2);
    zsock_destroy (&fleet);
}

/*  The superseded-connection table (bounded by max_fleets = 2) full: the
    fleet reconnects three times (connections A, B, C, D, each announcing
    one more meter); A and B are remembered, C is not: warned and counted
    (superseded_full). A frame from A is still ignored (duplicates); one
    from C is taken for a new connection, as the header says. A long
    heartbeat keeps the silent connections remembered for the whole test. */
static params_t s_superseded_params = { .no_fleet = true, .max_fleets = 2,
                                        .heartbeat_ms = 2000 };

static void
test_issue6_superseded_full (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *conn [4];
    for (uint32_t n = 0; n < 4; n++) {
        conn [n] = s_fleet_socket (fx, G.rogue_cert);
        s_hello_range (conn [n], 901, n + 1);
        /* the newest connection took over: its meters, the older one's gone */
        assert_true (s_wait_status (fx, ST_METERS, n + 1));
    }
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_SUPERSEDED_FULL], 1);
    assert_int_equal (st [ST_FLEETS], 1);
    assert_int_equal (st [ST_DUPLICATES], 0);
    s_health (conn [0], "meter", "fleet-9");    /* remembered: ignored */
    assert_true (s_wait_status (fx, ST_DUPLICATES, 1));
    s_health (conn [2], "meter", "fleet-9");    /* forgotten: a new fleet entry */
    assert_true (s_wait_status (fx, ST_FLEETS, 2));
    s_status (fx, st);
    assert_int_equal (st [ST_DUPLICATES], 1);
    assert_true (s_wait_health (fx, 1, "superseded_full", 1));
    for (int n = 0; n < 4; n++)
        zsock_destroy (&conn [n]);
}

/*  A BATCH_ACK the fleet ROUTER would not take is counted (acks_failed),
    not lost silently. The test fleet reads nothing (receive queue of 1, a
    small kernel buffer) while head end 1 sends it the same read again and
    again until its queue at the aggregator is full - the aggregator then
    answers that read AMI_E_BUSY - and then hands over BATCHes, the reads
    still coming so that the queue stays full (libzmq makes room in a full
    queue in steps as the kernel takes bytes): taken into custody, their
    acks cannot be queued. */
static params_t s_acks_failed_params = { .no_fleet = true };

static void
test_issue6_acks_failed (void **state)
{
    fx_t *fx = (fx_t *) *state;
    beat_t beat = { zsock_new (ZMQ_DEALER), 0 };
    assert_non_null (beat.sock);
    zsock_set_linger (beat.sock, 0);
    zsock_set_rcvhwm (beat.sock, 1);
    zsock_set_rcvbuf (beat.sock, 4096);
    zsock_set_maxmsgsize (beat.sock, AMI_MAX_FRAME);
    assert_int_equal (ami_auth_client (beat.sock, G.rogue_cert, ami_cert_public_txt (G.agg_cert)),
                      AMI_OK);
    assert_int_equal (zsock_connect (beat.sock, "%s", fx->agg_endpoint), 0);
    s_hello (beat.sock, "meter", "fleet-9", ROGUE_METER);
    s_beat (&beat);
    assert_true (s_wait_status (fx, ST_METERS, 1));

    uint8_t buf [512], rid [AMI_REQUEST_ID_SIZE];
    size_t len = s_command (ROGUE_METER, 1, rid, buf, sizeof buf);
    bool full = false;
    int sent = 0;
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!full && zclock_mono () < deadline) {
        for (int n = 0; n < 100; n++, sent++)
            s_he_send (fx, 1, buf, len);    /* the same request: one entry, resent */
        s_beat (&beat);
        zmsg_t *msg;
        while (!full && (msg = s_he_recv (fx, 1, sent % 1000 == 0 ? POLL_MS : 0))) {
            zframe_t *body = zmsg_last (msg);
            if (ami_msg_decode (G.msg, zframe_data (body), zframe_size (body)) == AMI_OK
            &&  G.msg->type == AMI_MSG_ERROR && G.msg->error.code == AMI_E_BUSY)
                full = true;
            zmsg_destroy (&msg);
        }
    }
    print_message ("fleet queue full after %d reads\n", sent);
    assert_true (full);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_true (st [ST_BUSY] >= 1);
    assert_int_equal (st [ST_ACKS_FAILED], 0);

    static uint8_t frame [AMI_MAX_FRAME];
    uint64_t batches = 0;
    deadline = zclock_mono () + WAIT_MS;
    while (st [ST_ACKS_FAILED] == 0 && zclock_mono () < deadline) {
        for (int n = 0; n < 100; n++)
            s_he_send (fx, 1, buf, len);
        size_t size = s_make_batch (4242 + batches++, "fleet-9", 0, 2, frame, sizeof frame);
        assert_int_equal (zsock_send (beat.sock, "b", frame, size), 0);
        s_beat (&beat);
        zmsg_t *msg;
        while ((msg = s_he_recv (fx, 1, 0)))
            zmsg_destroy (&msg);
        zclock_sleep (POLL_MS);
        s_status (fx, st);
    }
    print_message ("an ack failed after %" PRIu64 " batches\n", batches);
    assert_true (st [ST_ACKS_FAILED] >= 1);
    /* taken into custody all the same: only the acks failed */
    zclock_sleep (QUIET_MS);
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_IN], batches);
    assert_true (st [ST_ACKS_FAILED] >= 1 && st [ST_ACKS_FAILED] <= batches);
    assert_true (s_wait_health (fx, 0, "acks_failed", st [ST_ACKS_FAILED]));
    zsock_destroy (&beat.sock);
}


/* ---------------------------------------------------------------------- */
/*  Interval data: helpers                                                   */

/*  Box size of test block k: varied, 1..~1 KiB, one of them the wire
    maximum, so copying of every size is exercised. */
static size_t
s_box_size (uint32_t k)
{
    return k % TEST_BLOCKS == 13 ? AMI_MAX_SEALED : 1 + (k * 97) % 1000;
}

/*  Encode BATCH(id, origin, blocks first..first+count-1) into buf. Block k
    is meter MTR-(900+k), seq 1000+k, box G.boxes [k % TEST_BLOCKS]. */
static size_t
s_make_batch (uint64_t id, const char *origin, uint32_t first, uint32_t count,
              uint8_t *buf, size_t cap)
{
    ami_msg_reset (G.msg2, AMI_MSG_BATCH);
    ami_batch_t *batch = &G.msg2->batch;
    batch->batch_id = id;
    snprintf (batch->origin, sizeof batch->origin, "%s", origin);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t k = first + i;
        ami_meter_id_format (900 + k, batch->blocks [i].meter_id);
        batch->blocks [i].seq = 1000 + k;
        batch->blocks [i].box = G.boxes [k % TEST_BLOCKS];
        batch->blocks [i].box_size = s_box_size (k);
    }
    batch->block_count = count;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, cap, &len), AMI_OK);
    return len;
}

/*  Check that a decoded BATCH holds exactly test blocks first.. in order. */
static void
s_check_blocks (const ami_batch_t *batch, uint32_t first, uint32_t count)
{
    assert_int_equal (batch->block_count, count);
    char meter_id [AMI_MAX_ID + 1];
    for (uint32_t i = 0; i < count; i++) {
        uint32_t k = first + i;
        assert_string_equal (batch->blocks [i].meter_id, ami_meter_id_format (900 + k, meter_id));
        assert_int_equal (batch->blocks [i].seq, 1000 + k);
        assert_int_equal (batch->blocks [i].box_size, s_box_size (k));
        assert_memory_equal (batch->blocks [i].box, G.boxes [k % TEST_BLOCKS], s_box_size (k));
    }
}

/*  The test's fleet: fleet-9's certificate, introduced with a HELLO. */
static zsock_t *
s_feeder (fx_t *fx)
{
    zsock_t *sock = s_fleet_socket (fx, G.rogue_cert);
    zsock_set_maxmsgsize (sock, AMI_MAX_FRAME);
    s_hello (sock, "meter", "fleet-9", "MTR-000900");
    assert_true (s_wait_status (fx, ST_METERS, 1));
    /* and both head ends live, so choices are deterministic */
    assert_true (s_wait_status (fx, ST_HEADENDS_LIVE, HEADENDS));
    return sock;
}

/*  Send a BATCH from the fleet and expect its BATCH_ACK; returns credit. */
static uint32_t
s_feed (zsock_t *sock, uint64_t id, uint32_t first, uint32_t count, int status)
{
    static uint8_t buf [AMI_MAX_FRAME];
    size_t len = s_make_batch (id, "fleet-9", first, count, buf, sizeof buf);
    assert_int_equal (zsock_send (sock, "b", buf, len), 0);
    assert_true (s_sock_expect (sock, AMI_MSG_BATCH_ACK, WAIT_MS, NULL));
    assert_int_equal (G.msg->batch_ack.batch_id, id);
    assert_int_equal (G.msg->batch_ack.status, status);
    return G.msg->batch_ack.credit;
}

/*  One BATCH as a head end got it. */
typedef struct {
    int he;                         /* which head end */
    zframe_t *frame;                /* its bytes */
    uint64_t id;
    uint32_t blocks;
    int64_t at;                     /* zclock_mono when it arrived */
} got_t;

/*  A one-block BATCH from test_credit: block k in batch base + k. With
    base 0, works base out from this batch and returns it. */
static uint64_t
s_check_one (const ami_batch_t *batch, const got_t *got, uint64_t base)
{
    assert_int_equal (batch->block_count, 1);
    uint32_t k = (uint32_t) (batch->blocks [0].seq - 1000);
    if (!base)
        base = got->id - k;
    assert_int_equal (got->id, base + k);
    s_check_blocks (batch, k, 1);
    return base;
}

static void
s_got_free (got_t *got)
{
    zframe_destroy (&got->frame);
}

/*  The next BATCH at either head end within ms (other messages skipped);
    false on timeout. Decoded into G.msg on success. */
static bool
s_next_batch (fx_t *fx, int ms, got_t *got)
{
    memset (got, 0, sizeof *got);
    int64_t deadline = zclock_mono () + ms;
    zpoller_t *poller = zpoller_new (NULL);
    for (int i = 0; i < HEADENDS; i++)
        if (fx->he [i].router)
            zpoller_add (poller, fx->he [i].router);
    bool found = false;
    while (!found) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            break;
        void *which = zpoller_wait (poller, (int) left);
        if (!which)
            break;
        int i = which == fx->he [0].router ? 0 : 1;
        zmsg_t *msg = s_he_recv (fx, i, 0);
        if (!msg)
            continue;
        zframe_t *body = zmsg_last (msg);
        assert_int_equal (ami_msg_decode (G.msg, zframe_data (body), zframe_size (body)), AMI_OK);
        if (G.msg->type == AMI_MSG_BATCH) {
            got->he = i;
            got->frame = zframe_dup (body);
            got->id = G.msg->batch.batch_id;
            got->blocks = G.msg->batch.block_count;
            got->at = zclock_mono ();
            assert_string_equal (G.msg->batch.origin, "agg-1");
            found = true;
        }
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    if (found) {
        /* G.msg's boxes must point into a frame that lives on */
        assert_int_equal (ami_msg_decode (G.msg, zframe_data (got->frame),
                                          zframe_size (got->frame)), AMI_OK);
    }
    return found;
}

/*  Head end i answers BATCH_ACK(id, status, credit). */
static void
s_he_ack (fx_t *fx, int i, uint64_t id, int status, uint32_t credit)
{
    ami_msg_reset (G.msg2, AMI_MSG_BATCH_ACK);
    G.msg2->batch_ack.batch_id = id;
    G.msg2->batch_ack.status = (uint16_t) status;
    G.msg2->batch_ack.credit = credit;
    uint8_t buf [64];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
    s_he_send (fx, i, buf, len);
}

static uint64_t
s_stat (const ami_health_t *health, const char *name)
{
    for (uint32_t k = 0; k < health->stat_count; k++)
        if (streq (health->stats [k].name, name))
            return health->stats [k].value;
    fail_msg ("HEALTH has no stat %s", name);
    return 0;
}

/*  Wait for an aggregator HEALTH at head end i whose stat `name` is
    value; it is then in G.msg. False on timeout. Other messages at head
    end i are consumed: use it when no BATCH is expected there. */
static bool
s_wait_health (fx_t *fx, int i, const char *name, uint64_t value)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (zclock_mono () < deadline) {
        zmsg_t *msg = s_he_expect (fx, i, AMI_MSG_HEALTH, (int) (deadline - zclock_mono ()));
        if (!msg)
            return false;
        zmsg_destroy (&msg);
        if (streq (G.msg->health.role, "aggregator") && s_stat (&G.msg->health, name) == value)
            return true;
    }
    return false;
}

/*  No BATCH at any head end for ms. */
static void
s_no_batch (fx_t *fx, int ms)
{
    got_t got;
    bool some = s_next_batch (fx, ms, &got);
    if (some)
        s_got_free (&got);
    assert_false (some);
}


/* ---------------------------------------------------------------------- */
/*  Interval data: tests                                                     */

/*  Custody: each fleet BATCH is acknowledged at once (status 0, credit
    AMI_CREDIT_INITIAL with a roomy buffer); the blocks go up re-batched
    in our own BATCHes (origin agg-1, our own ids, batch-blocks at most, a
    partial one after batch-delay) byte for byte - including blocks whose
    msgpack encoding is not the shortest. */
static params_t s_custody_params = { .no_fleet = true, .batch_blocks = 4, .batch_delay_ms = 200 };

static void
test_batch_custody (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);

    /* a fleet BATCH of 2 blocks, encoded by the codec */
    assert_int_equal (s_feed (fleet, 1001, 0, 2, AMI_OK), AMI_CREDIT_INITIAL);
    /* and one of 3 blocks written by hand with non-shortest encodings:
       str8 meter ids, 8-byte seqs, a bin16 box; the decoder takes them */
    uint8_t raw [3][64];
    size_t raw_len [3];
    uint8_t frame [512];
    size_t len = 0;
    const uint8_t head [] = { 0x95, 0x01, 0x15, 0xcd, 0x03, 0xea,       /* id 1002 */
                              0xa7, 'f', 'l', 'e', 'e', 't', '-', '9', 0x93 };
    memcpy (frame, head, sizeof head);
    len = sizeof head;
    for (uint32_t i = 0; i < 3; i++) {
        uint32_t k = 2 + i;
        uint8_t *b = raw [i];
        size_t n = 0;
        char meter_id [AMI_MAX_ID + 1];
        ami_meter_id_format (900 + k, meter_id);
        b [n++] = 0x93;
        b [n++] = 0xd9;
        b [n++] = (uint8_t) strlen (meter_id);
        memcpy (b + n, meter_id, strlen (meter_id));
        n += strlen (meter_id);
        b [n++] = 0xcf;
        for (int byte = 7; byte >= 0; byte--)
            b [n++] = (uint8_t) ((uint64_t) (1000 + k) >> (8 * byte));
        size_t box = 20 + k;
        b [n++] = 0xc5;
        b [n++] = 0;
        b [n++] = (uint8_t) box;
        memcpy (b + n, G.boxes [k], box);
        n += box;
        raw_len [i] = n;
        memcpy (frame + len, b, n);
        len += n;
    }
    assert_int_equal (ami_msg_decode (G.msg, frame, len), AMI_OK);
    assert_int_equal (zsock_send (fleet, "b", frame, len), 0);
    assert_true (s_sock_expect (fleet, AMI_MSG_BATCH_ACK, WAIT_MS, NULL));
    assert_int_equal (G.msg->batch_ack.batch_id, 1002);
    assert_int_equal (G.msg->batch_ack.status, AMI_OK);

    /* 5 blocks, batch-blocks 4: a full batch now, the last block after
       batch-delay (it waits for company first) */
    got_t one, two;
    assert_true (s_next_batch (fx, WAIT_MS, &one));
    assert_int_equal (one.blocks, 4);
    assert_int_not_equal (one.id, 1001);
    assert_int_not_equal (one.id, 1002);
    ami_batch_t *batch = &G.msg->batch;
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal (batch->blocks [i].seq, 1000 + i);
        assert_int_equal (batch->blocks [i].box_size, s_box_size (i));
        assert_memory_equal (batch->blocks [i].box, G.boxes [i], s_box_size (i));
    }
    assert_true (s_next_batch (fx, WAIT_MS, &two));
    assert_int_equal (two.blocks, 1);
    assert_int_equal (two.id, one.id + 1);           /* ids count up */
    assert_true (two.at - one.at >= 200 / 2);        /* it waited */
    /* the hand-written blocks arrived byte for byte */
    assert_non_null (memmem (zframe_data (one.frame), zframe_size (one.frame), raw [0], raw_len [0]));
    assert_non_null (memmem (zframe_data (one.frame), zframe_size (one.frame), raw [1], raw_len [1]));
    assert_non_null (memmem (zframe_data (two.frame), zframe_size (two.frame), raw [2], raw_len [2]));
    /* fewest in flight: the second went to the other head end */
    assert_int_not_equal (one.he, two.he);

    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_IN], 2);
    assert_int_equal (st [ST_BLOCKS_IN], 5);
    assert_int_equal (st [ST_BATCHES_OUT], 2);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 5);
    assert_int_equal (st [ST_INFLIGHT], 2);
    /* the MDMS's acks, relayed: the buffer empties */
    s_he_ack (fx, one.he, one.id, AMI_OK, 4);
    s_he_ack (fx, two.he, two.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_ACKED], 2);
    assert_int_equal (st [ST_INFLIGHT], 0);
    assert_int_equal (st [ST_BUFFER_BYTES], 0);
    assert_int_equal (st [ST_BATCHES_RESENT], 0);

    /* a full-size fleet batch (with a 4 KiB box) goes up too, in batches of 4 */
    assert_int_equal (s_feed (fleet, 1003, 10, 8, AMI_OK), AMI_CREDIT_INITIAL);
    for (int n = 0; n < 2; n++) {
        got_t got;
        assert_true (s_next_batch (fx, WAIT_MS, &got));
        s_check_blocks (&G.msg->batch, 10 + 4 * (uint32_t) n, 4);
        s_he_ack (fx, got.he, got.id, AMI_OK, 4);
        s_got_free (&got);
    }
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_got_free (&one);
    s_got_free (&two);
    zsock_destroy (&fleet);
}

/*  The custody buffer never holds more than buffer-blocks: a fleet BATCH
    that does not fit is refused AMI_E_BUSY with credit 0, counted, and
    reported in HEALTH; room made by the MDMS's acks is usable again. */
static params_t s_bound_params = { .no_fleet = true, .buffer_blocks = 8, .batch_blocks = 4 };

static void
test_buffer_bound (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    /* 5 of 8: taken, but no room for another 5-block batch: credit 0 */
    assert_int_equal (s_feed (fleet, 1, 0, 5, AMI_OK), 0);
    assert_int_equal (s_feed (fleet, 2, 5, 5, AMI_E_BUSY), 0);
    assert_int_equal (s_feed (fleet, 3, 10, 3, AMI_OK), 0);       /* exactly full */
    assert_int_equal (s_feed (fleet, 4, 13, 1, AMI_E_BUSY), 0);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 8);
    assert_int_equal (st [ST_BUFFER_MAX], 8);
    assert_int_equal (st [ST_BATCHES_IN], 2);
    assert_int_equal (st [ST_BLOCKS_IN], 8);
    assert_int_equal (st [ST_OVERFLOW_BATCHES], 2);
    assert_int_equal (st [ST_OVERFLOW_BLOCKS], 6);
    /* the 8 blocks went up as 2 batches */
    got_t got [2];
    for (int n = 0; n < 2; n++) {
        assert_true (s_next_batch (fx, WAIT_MS, &got [n]));
        assert_int_equal (got [n].blocks, 4);
    }
    s_no_batch (fx, QUIET_MS / 2);
    /* the overflow is reported upward */
    assert_true (s_wait_health (fx, 1, "overflow_batches", 2));
    assert_int_equal (s_stat (&G.msg->health, "overflow_blocks"), 6);
    assert_int_equal (s_stat (&G.msg->health, "buffer_blocks"), 8);
    assert_int_equal (s_stat (&G.msg->health, "buffer_max"), 8);
    assert_int_equal (s_stat (&G.msg->health, "blocks_in"), 8);
    assert_int_equal (s_stat (&G.msg->health, "batches_inflight"), 2);
    /* issue 6: the byte bound is reported next to the fill */
    assert_true (s_stat (&G.msg->health, "buffer_bytes") > 0);
    assert_true (s_stat (&G.msg->health, "buffer_bytes_max") == AMI_AGGREGATOR_BUFFER_BYTES);
    assert_true (st [ST_BUFFER_BYTES_MAX] == AMI_AGGREGATOR_BUFFER_BYTES);
    /* the MDMS's acks free the buffer */
    s_he_ack (fx, got [0].he, got [0].id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 4));
    assert_int_equal (s_feed (fleet, 5, 20, 4, AMI_OK), 0);       /* full again */
    s_he_ack (fx, got [1].he, got [1].id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 4));
    /* the refused batch, sent again by its fleet, now fits */
    s_he_ack (fx, 0, 0, AMI_OK, 4);                 /* unknown: changes nothing */
    got_t third;
    assert_true (s_next_batch (fx, WAIT_MS, &third));
    s_check_blocks (&G.msg->batch, 20, 4);
    s_he_ack (fx, third.he, third.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    assert_int_equal (s_feed (fleet, 2, 5, 5, AMI_OK), 0);
    s_status (fx, st);
    assert_int_equal (st [ST_OVERFLOW_BATCHES], 2);
    assert_true (st [ST_BUFFER_BLOCKS] <= 8);
    s_got_free (&got [0]);
    s_got_free (&got [1]);
    s_got_free (&third);
    zsock_destroy (&fleet);
}

/*  End-to-end credit: never more batches in flight than the last credit;
    credit 0 with nothing in flight probes with one batch after
    AMI_BATCH_RETRY_MS; batches spread over the head ends (fewest in
    flight). */
static params_t s_credit_params = { .no_fleet = true, .batch_blocks = 1 };

static void
test_credit (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    s_feed (fleet, 1, 0, 10, AMI_OK);               /* 10 batches of 1 block */
    got_t got [10];
    int n = 0, per_he [HEADENDS] = { 0, 0 };
    /* batch k holds block k and has id base + k (the order in which two
       head ends' frames reach the test is not fixed) */
    uint64_t base = 0;
    for (; n < AMI_CREDIT_INITIAL; n++) {
        assert_true (s_next_batch (fx, WAIT_MS, &got [n]));
        base = s_check_one (&G.msg->batch, &got [n], n ? base : 0);
        per_he [got [n].he]++;
    }
    s_no_batch (fx, QUIET_MS);
    assert_int_equal (per_he [0], 2);
    assert_int_equal (per_he [1], 2);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_INFLIGHT], 4);
    /* credit 2 with 3 in flight, then 2 with 2: nothing more */
    s_he_ack (fx, got [0].he, got [0].id, AMI_OK, 2);
    s_no_batch (fx, QUIET_MS / 2);
    s_he_ack (fx, got [1].he, got [1].id, AMI_OK, 2);
    s_no_batch (fx, QUIET_MS / 2);
    assert_true (s_wait_status (fx, ST_CREDIT, 2));
    /* credit 3 with 1 in flight: 2 more */
    s_he_ack (fx, got [2].he, got [2].id, AMI_OK, 3);
    for (; n < 6; n++) {
        assert_true (s_next_batch (fx, WAIT_MS, &got [n]));
        s_check_one (&G.msg->batch, &got [n], base);
        assert_true (got [n].id - base >= 4 && got [n].id - base < 6);
    }
    s_no_batch (fx, QUIET_MS / 2);
    /* credit 0: everything in flight is acked, then one probe a second later */
    s_he_ack (fx, got [3].he, got [3].id, AMI_OK, 0);
    s_he_ack (fx, got [4].he, got [4].id, AMI_OK, 0);
    s_he_ack (fx, got [5].he, got [5].id, AMI_OK, 0);
    int64_t acked = zclock_mono ();
    assert_true (s_wait_status (fx, ST_INFLIGHT, 0));
    assert_true (s_next_batch (fx, WAIT_MS, &got [n]));
    assert_true (got [n].at - acked >= AMI_BATCH_RETRY_MS - 100);
    s_check_one (&G.msg->batch, &got [n], base);
    assert_int_equal (got [n].id - base, 6);
    n++;
    s_no_batch (fx, QUIET_MS / 2);                  /* just one */
    /* its ack brings credit back: the rest at once */
    s_he_ack (fx, got [n - 1].he, got [n - 1].id, AMI_OK, 4);
    for (; n < 10; n++) {
        assert_true (s_next_batch (fx, WAIT_MS, &got [n]));
        assert_true (got [n].at - acked < AMI_BATCH_RETRY_MS + 1000);
        s_check_one (&G.msg->batch, &got [n], base);
        s_he_ack (fx, got [n].he, got [n].id, AMI_OK, 4);
    }
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_OUT], 10);
    assert_int_equal (st [ST_BATCHES_ACKED], 10);
    assert_int_equal (st [ST_BATCHES_RESENT], 0);
    assert_int_equal (st [ST_CREDIT], 4);
    for (int k = 0; k < n; k++)
        s_got_free (&got [k]);
    zsock_destroy (&fleet);
}

/*  No ack within ack-timeout: the same batch (same id, same bytes) goes
    through the other head end. A late ack for it, or an ack for an id
    never sent, is ignored. */
static params_t s_timeout_params = { .no_fleet = true, .batch_blocks = 4, .ack_timeout_ms = 600 };

static void
test_ack_timeout (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    s_feed (fleet, 1, 0, 4, AMI_OK);
    got_t first, again;
    assert_true (s_next_batch (fx, WAIT_MS, &first));
    assert_true (s_next_batch (fx, WAIT_MS, &again));
    assert_int_not_equal (again.he, first.he);
    assert_int_equal (again.id, first.id);
    assert_true (zframe_eq (again.frame, first.frame));
    assert_true (again.at - first.at >= 600 - 50);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_OUT], 1);
    assert_int_equal (st [ST_BATCHES_RESENT], 1);
    assert_int_equal (st [ST_INFLIGHT], 1);
    /* the ack through the second path frees it */
    s_he_ack (fx, again.he, again.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    /* the late ack of the first send, and an ack for an id never sent
       (with credit 0, which would stop us if it counted): ignored */
    s_he_ack (fx, first.he, first.id, AMI_OK, 0);
    s_he_ack (fx, 0, first.id + 1000, AMI_OK, 0);
    s_he_ack (fx, 1, first.id - 1, AMI_E_BUSY, 0);
    assert_true (s_wait_status (fx, ST_ACKS_UNKNOWN, 3));
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_ACKED], 1);
    assert_int_equal (st [ST_CREDIT], 4);
    assert_int_equal (st [ST_ACKS_REFUSED], 0);
    assert_int_equal (st [ST_MALFORMED], 0);
    /* and data still flows at once */
    s_feed (fleet, 2, 4, 4, AMI_OK);
    got_t next;
    assert_true (s_next_batch (fx, WAIT_MS, &next));
    assert_int_equal (next.id, first.id + 1);
    s_check_blocks (&G.msg->batch, 4, 4);
    s_he_ack (fx, next.he, next.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_got_free (&first);
    s_got_free (&again);
    s_got_free (&next);
    zsock_destroy (&fleet);
}

/*  A BATCH_ACK with a non-zero status: the batch is kept and resent (same
    id and bytes) AMI_BATCH_RETRY_MS later. */
static params_t s_retry_params = { .no_fleet = true, .batch_blocks = 4 };

static void
test_refused_retry (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    s_feed (fleet, 1, 0, 4, AMI_OK);
    got_t first, again;
    assert_true (s_next_batch (fx, WAIT_MS, &first));
    s_he_ack (fx, first.he, first.id, AMI_E_STORAGE, 4);
    int64_t refused = zclock_mono ();
    assert_true (s_next_batch (fx, WAIT_MS, &again));
    assert_int_equal (again.id, first.id);
    assert_true (zframe_eq (again.frame, first.frame));
    int64_t waited = again.at - refused;
    assert_true (waited >= AMI_BATCH_RETRY_MS - 100);
    assert_true (waited < AMI_BATCH_RETRY_MS + 1500);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_ACKS_REFUSED], 1);
    assert_int_equal (st [ST_BATCHES_RESENT], 1);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 4);    /* kept all along */
    s_he_ack (fx, again.he, again.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_got_free (&first);
    s_got_free (&again);
    zsock_destroy (&fleet);
}

/*  Head end 1 stops answering (its network path freezes: no FIN, no
    ZMTP PONG): after 3 heartbeats it is gone, and the batch in flight
    through it goes through head end 2 - long before the ack timeout. */
static params_t s_silent_params = { .no_fleet = true, .proxy = true, .batch_blocks = 4 };

static void
test_headend_silent (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    s_feed (fleet, 1, 0, 4, AMI_OK);
    got_t first, again;
    assert_true (s_next_batch (fx, WAIT_MS, &first));
    assert_int_equal (first.he, 0);                 /* tie: the first configured */
    assert_int_equal (zstr_send (fx->proxy, "FREEZE"), 0);
    assert_int_equal (zsock_wait (fx->proxy), 0);
    int64_t frozen = zclock_mono ();
    assert_true (s_next_batch (fx, WAIT_MS, &again));
    assert_int_equal (again.he, 1);
    assert_int_equal (again.id, first.id);
    assert_true (zframe_eq (again.frame, first.frame));
    int64_t took = again.at - frozen;
    assert_true (took >= 2 * HEARTBEAT_MS);         /* not before it fell silent */
    assert_true (took < AMI_BATCH_ACK_TIMEOUT_MS / 2);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_HEADENDS_LIVE], 1);
    assert_int_equal (st [ST_BATCHES_RESENT], 1);
    s_he_ack (fx, 1, again.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    /* what comes next goes through the live one */
    s_feed (fleet, 2, 4, 4, AMI_OK);
    got_t next;
    assert_true (s_next_batch (fx, WAIT_MS, &next));
    assert_int_equal (next.he, 1);
    s_he_ack (fx, 1, next.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_got_free (&first);
    s_got_free (&again);
    s_got_free (&next);
    zsock_destroy (&fleet);
}

/*  Bad BATCHes from a fleet are dropped, counted, not acknowledged; the
    aggregator keeps serving. */
static params_t s_bad_batch_params = { .no_fleet = true, .batch_blocks = 4 };

static void
test_batch_malformed (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    static uint8_t buf [AMI_MAX_FRAME];
    size_t len = s_make_batch (1, "fleet-9", 0, 3, buf, sizeof buf);
    assert_int_equal (zsock_send (fleet, "b", buf, len - 5), 0);            /* truncated */
    len = s_make_batch (2, "fleet-1", 0, 3, buf, sizeof buf);               /* another fleet's */
    assert_int_equal (zsock_send (fleet, "b", buf, len), 0);
    const uint8_t empty [] = { 0x95, 0x01, 0x15, 0x03, 0xa7, 'f', 'l', 'e', 'e', 't', '-', '9', 0x90 };
    assert_int_equal (zsock_send (fleet, "b", empty, sizeof empty), 0);     /* no blocks */
    len = s_make_batch (4, "fleet-9", 0, 2, buf, sizeof buf);
    assert_int_equal (buf [len - s_box_size (1) - 2], 0xc4);      /* bin8 */
    buf [len - s_box_size (1) - 1] = 0xff;          /* box length: past the end */
    assert_int_equal (zsock_send (fleet, "b", buf, len), 0);
    ami_msg_reset (G.msg2, AMI_MSG_BATCH_ACK);                              /* wrong way */
    G.msg2->batch_ack.batch_id = 5;
    s_send_encoded (fleet, G.msg2);
    assert_true (s_wait_status (fx, ST_MALFORMED, 5));
    assert_false (s_sock_expect (fleet, AMI_MSG_BATCH_ACK, QUIET_MS / 2, NULL));
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_IN], 0);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 0);
    s_no_batch (fx, QUIET_MS / 2);
    /* a good one is served */
    s_feed (fleet, 6, 0, 3, AMI_OK);
    got_t got;
    assert_true (s_next_batch (fx, WAIT_MS, &got));
    s_check_blocks (&G.msg->batch, 0, 3);
    s_he_ack (fx, got.he, got.id, AMI_OK, 4);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_got_free (&got);
    zsock_destroy (&fleet);
}

/*  Big blocks: a batch is closed before its encoding would pass
    AMI_BATCH_MAX_BYTES, however few blocks it has. */
static params_t s_max_bytes_params = { .no_fleet = true };

static void
test_batch_max_bytes (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    /* 2 x 150 blocks with 4 KiB boxes: ~1.2 MiB in all */
    enum { PER = 150 };
    static uint8_t buf [AMI_MAX_FRAME];
    for (uint64_t f = 0; f < 2; f++) {
        ami_msg_reset (G.msg2, AMI_MSG_BATCH);
        ami_batch_t *batch = &G.msg2->batch;
        batch->batch_id = 77 + f;
        strcpy (batch->origin, "fleet-9");
        for (uint32_t i = 0; i < PER; i++) {
            uint32_t k = (uint32_t) f * PER + i;
            ami_meter_id_format (k + 1, batch->blocks [i].meter_id);
            batch->blocks [i].seq = k + 1;
            batch->blocks [i].box = G.boxes [k % TEST_BLOCKS];
            batch->blocks [i].box_size = AMI_MAX_SEALED;
        }
        batch->block_count = PER;
        size_t len = 0;
        assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
        assert_int_equal (zsock_send (fleet, "b", buf, len), 0);
        assert_true (s_sock_expect (fleet, AMI_MSG_BATCH_ACK, WAIT_MS, NULL));
        assert_int_equal (G.msg->batch_ack.status, AMI_OK);
    }
    uint32_t blocks = 0, next_seq = 1;
    for (int n = 0; n < 2; n++) {
        got_t got;
        assert_true (s_next_batch (fx, WAIT_MS, &got));
        assert_true (zframe_size (got.frame) <= AMI_BATCH_MAX_BYTES);
        assert_true (got.blocks < 2 * PER);
        for (uint32_t i = 0; i < got.blocks; i++) {
            /* one batch may overtake the other on the way to the test */
            if (i == 0 && G.msg->batch.blocks [0].seq != next_seq)
                next_seq = (uint32_t) G.msg->batch.blocks [0].seq;
            assert_int_equal (G.msg->batch.blocks [i].seq, next_seq);
            assert_memory_equal (G.msg->batch.blocks [i].box,
                                 G.boxes [(next_seq - 1) % TEST_BLOCKS], AMI_MAX_SEALED);
            next_seq++;
        }
        blocks += got.blocks;
        s_he_ack (fx, got.he, got.id, AMI_OK, 4);
        s_got_free (&got);
    }
    assert_int_equal (blocks, 2 * PER);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    zsock_destroy (&fleet);
}

/*  AMI_AGG_BENCH=1: the aggregator's interval-data throughput. One fleet
    (the test) pushes 1024-block BATCHes of 170-byte blocks (an hourly
    4-interval block) within the credit the aggregator grants; the two
    head ends ack every BATCH at once with credit 4. All CURVE, all in one
    process on this machine (so the test's own encoding and acking share
    the CPU: the figures are a floor for the aggregator). */
#define BENCH_BLOCK_BOX 140         /* + ~30 bytes of block header = ~170 */
#define BENCH_SECONDS   3

/* ---------------------------------------------------------------------- */
/*  Interval data: the persisted custody store                               */

/*  Bind head end i's ROUTER (again) at its endpoint: the head end comes
    back, or appears for the first time at an address the aggregator has
    been trying. A new connection: the aggregator's routing id is learnt
    again. */
static void
s_he_bind (fx_t *fx, int i)
{
    headend_t *he = &fx->he [i];
    zframe_destroy (&he->rid);
    he->router = zsock_new (ZMQ_ROUTER);
    assert_non_null (he->router);
    zsock_set_linger (he->router, 0);
    zsock_set_maxmsgsize (he->router, AMI_MAX_FRAME);
    assert_int_equal (ami_auth_server (he->router, G.he_cert [i]), AMI_OK);
    assert_int_equal (zsock_bind (he->router, "%s", he->endpoint), atoi (strrchr (he->endpoint, ':') + 1));
}

/*  Head end i becomes unreachable: its socket is closed (connections
    drop) and a plain TCP listener that never accepts holds its port, so
    the aggregator's connection attempts get no ZMTP greeting (no
    handshake: not live) and nothing else - the aggregator restarted
    later, say - can take the port (CZMQ's "*" takes the lowest free one).
    Returns the listener. */
static int
s_he_cut (fx_t *fx, int i)
{
    zsock_destroy (&fx->he [i].router);
    zframe_destroy (&fx->he [i].rid);
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    int on = 1;
    assert_int_equal (setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on), 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    addr.sin_port = htons ((uint16_t) atoi (strrchr (fx->he [i].endpoint, ':') + 1));
    /* libzmq closes the ROUTER's listener in its I/O thread, soon */
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (bind (fd, (struct sockaddr *) &addr, sizeof addr) != 0) {
        assert_true (zclock_mono () < deadline);
        zclock_sleep (POLL_MS);
    }
    assert_int_equal (listen (fd, 8), 0);
    return fd;
}

/*  Collect every block of the BATCHes arriving at either head end within
    ms, acknowledging each batch (status 0) as the MDMS would; seen [k]
    counts test block k (which must be byte for byte what the fleet sent).
    Returns after `want` blocks, or at the deadline. */
static uint32_t
s_collect (fx_t *fx, uint32_t seen [TEST_BLOCKS], uint32_t want, int ms)
{
    uint32_t total = 0;
    int64_t deadline = zclock_mono () + ms;
    while (total < want && zclock_mono () < deadline) {
        got_t got;
        if (!s_next_batch (fx, (int) (deadline - zclock_mono ()), &got))
            break;
        const ami_batch_t *batch = &G.msg->batch;
        for (uint32_t i = 0; i < batch->block_count; i++) {
            uint32_t k = (uint32_t) (batch->blocks [i].seq - 1000);
            assert_true (k < TEST_BLOCKS);
            char meter_id [AMI_MAX_ID + 1];
            assert_string_equal (batch->blocks [i].meter_id, ami_meter_id_format (900 + k, meter_id));
            assert_int_equal (batch->blocks [i].box_size, s_box_size (k));
            assert_memory_equal (batch->blocks [i].box, G.boxes [k], s_box_size (k));
            seen [k]++;
            total++;
        }
        s_he_ack (fx, got.he, got.id, AMI_OK, AMI_CREDIT_INITIAL);
        s_got_free (&got);
    }
    return total;
}

/*  FUN-INT-1 (issue 6, fault 4): custody survives a restart of the
    aggregator. Blocks 0..3 go up and the MDMS stand-in acknowledges
    them; blocks 4..7 go up unacknowledged; then no head end is reachable
    and the fleet hands over blocks 8..19 (the last batch partial, still
    open), each acknowledged by the aggregator. The aggregator is
    destroyed and started again on the same store while no head end
    listens: it takes all 16 blocks back. When the head ends appear,
    exactly blocks 4..19 arrive, each once, byte for byte - and not
    0..3, which the MDMS had acknowledged. Once acknowledged they leave
    the store: a third start has nothing to send. */
static params_t s_restart_params = { .no_fleet = true, .batch_blocks = 4, .batch_delay_ms = 50 };

static void
test_fun_int_1_custody_survives_restart (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    assert_int_equal (s_feed (fleet, 1, 0, 4, AMI_OK), AMI_CREDIT_INITIAL);
    got_t acked, unacked;
    assert_true (s_next_batch (fx, WAIT_MS, &acked));
    s_check_blocks (&G.msg->batch, 0, 4);
    s_he_ack (fx, acked.he, acked.id, AMI_OK, AMI_CREDIT_INITIAL);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    assert_int_equal (s_feed (fleet, 2, 4, 4, AMI_OK), AMI_CREDIT_INITIAL);
    assert_true (s_next_batch (fx, WAIT_MS, &unacked));
    s_check_blocks (&G.msg->batch, 4, 4);

    /* the uplink is cut: custody goes on */
    int hold [HEADENDS];
    for (int i = 0; i < HEADENDS; i++)
        hold [i] = s_he_cut (fx, i);
    assert_true (s_wait_status (fx, ST_HEADENDS_LIVE, 0));
    assert_int_equal (s_feed (fleet, 3, 8, 6, AMI_OK), AMI_CREDIT_INITIAL);
    assert_int_equal (s_feed (fleet, 4, 14, 5, AMI_OK), AMI_CREDIT_INITIAL);
    assert_int_equal (s_feed (fleet, 5, 19, 1, AMI_OK), AMI_CREDIT_INITIAL);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 16);
    assert_int_equal (st [ST_BLOCKS_IN], 20);
    assert_int_equal (st [ST_STORE_REFUSED], 0);
    assert_int_equal (st [ST_STORE_ERRORS], 0);
    assert_true (st [ST_STORE_COMMITS] >= 5);

    /* the aggregator restarts, still cut off */
    zsock_destroy (&fleet);
    zactor_destroy (&fx->agg);
    s_agg_start (fx);
    s_status (fx, st);
    assert_int_equal (st [ST_RESTORED_BLOCKS], 16);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 16);
    assert_int_equal (st [ST_BLOCKS_IN], 0);
    assert_int_equal (st [ST_HEADENDS_LIVE], 0);

    /* the head ends come back: everything held arrives, exactly once */
    for (int i = 0; i < HEADENDS; i++) {
        close (hold [i]);       /* the aggregator's attempts are reset... */
        s_he_bind (fx, i);      /* ...and it reconnects here */
    }
    uint32_t seen [TEST_BLOCKS] = { 0 };
    assert_int_equal (s_collect (fx, seen, 16, WAIT_MS), 16);
    for (uint32_t k = 0; k < 20; k++)
        assert_int_equal (seen [k], k < 4 ? 0 : 1);
    s_no_batch (fx, QUIET_MS);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_status (fx, st);
    assert_int_equal (st [ST_BATCHES_ACKED], 4);    /* 16 blocks in 4 restored batches */
    assert_int_equal (st [ST_STORE_ERRORS], 0);
    /* issue 6: the custody store's counters reach the head ends' HEALTH:
       what this start restored, its commits (the acknowledged batches'
       tombstones), none of them left to commit */
    assert_true (s_wait_health (fx, 0, "tombstones", 0));
    assert_int_equal (s_stat (&G.msg->health, "restored_blocks"), 16);
    assert_true (s_stat (&G.msg->health, "store_commits") >= 1);

    /* acknowledged blocks left the store: a third start sends nothing */
    zactor_destroy (&fx->agg);
    for (int i = 0; i < HEADENDS; i++) {
        /* what the stopped aggregator sent (its last HEALTHs) is read here,
           before the routing id is learnt again */
        zmsg_t *stale;
        while ((stale = s_he_recv (fx, i, QUIET_MS / 5)))
            zmsg_destroy (&stale);
        zframe_destroy (&fx->he [i].rid);
    }
    s_agg_start (fx);
    assert_true (s_wait_status (fx, ST_HEADENDS_LIVE, HEADENDS));
    s_status (fx, st);
    assert_int_equal (st [ST_RESTORED_BLOCKS], 0);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 0);
    s_no_batch (fx, QUIET_MS);
    s_got_free (&acked);
    s_got_free (&unacked);
}

/*  SEC-FAIL-1: a custody store that cannot write (a map too small for
    what a fleet hands over) refuses custody: the fleet's BATCH is
    answered AMI_E_BUSY with credit 0, never status 0, counted
    (store_refused, store_errors, also in HEALTH), and nothing of it is
    held or sent up. The batch open before it is cut back to what was
    committed, and a small batch that fits is taken as usual. A store
    directory that cannot be created stops the aggregator from starting. */
static params_t s_store_fail_params = { .no_fleet = true, .batch_blocks = 4,
                                        .batch_delay_ms = 1000,
                                        .store_map_size = 64 * 1024 };

static void
test_sec_fail_1_custody_store_failure (void **state)
{
    fx_t *fx = (fx_t *) *state;
    zsock_t *fleet = s_feeder (fx);
    /* one small block is stored, and waits in the open batch */
    assert_int_equal (s_feed (fleet, 1, 1, 1, AMI_OK), AMI_CREDIT_INITIAL);
    /* 256 blocks, ~140 KB (four of them 4 KiB): more than the 64 KiB map */
    assert_int_equal (s_feed (fleet, 2, 0, 4 * TEST_BLOCKS, AMI_E_BUSY), 0);
    uint64_t st [ST_COUNT];
    s_status (fx, st);
    assert_int_equal (st [ST_STORE_REFUSED], 1);
    assert_true (st [ST_STORE_ERRORS] >= 1);
    assert_int_equal (st [ST_BATCHES_IN], 1);
    assert_int_equal (st [ST_BLOCKS_IN], 1);
    assert_int_equal (st [ST_BUFFER_BLOCKS], 1);
    char meter_id [AMI_MAX_ID + 1];
    /* [fixstr id, uint16 seq 1001, bin8 box]: nothing of batch 2 held */
    assert_int_equal (st [ST_BUFFER_BYTES], 1 + (1 + strlen (ami_meter_id_format (901, meter_id)))
                                            + 3 + (2 + s_box_size (1)));
    assert_int_equal (st [ST_OVERFLOW_BATCHES], 0);
    /* only the stored block goes up, after batch-delay */
    got_t got;
    assert_true (s_next_batch (fx, WAIT_MS, &got));
    s_check_blocks (&G.msg->batch, 1, 1);
    s_he_ack (fx, got.he, got.id, AMI_OK, AMI_CREDIT_INITIAL);
    s_got_free (&got);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_no_batch (fx, QUIET_MS);
    /* reported upward */
    assert_true (s_wait_health (fx, 0, "store_refused", 1));
    assert_true (s_stat (&G.msg->health, "store_errors") >= 1);
    /* the store still takes what fits */
    assert_int_equal (s_feed (fleet, 3, 2, 1, AMI_OK), AMI_CREDIT_INITIAL);
    assert_true (s_next_batch (fx, WAIT_MS, &got));
    s_check_blocks (&G.msg->batch, 2, 1);
    s_he_ack (fx, got.he, got.id, AMI_OK, AMI_CREDIT_INITIAL);
    s_got_free (&got);
    assert_true (s_wait_status (fx, ST_BUFFER_BLOCKS, 0));
    s_status (fx, st);
    assert_int_equal (st [ST_STORE_REFUSED], 1);
    zsock_destroy (&fleet);

    /* no store, no aggregator: its directory would be under a file */
    char *file = ami_test_path (fx->agg_state, "not-a-dir");
    FILE *f = fopen (file, "w");
    assert_non_null (f);
    fclose (f);
    char *bad = ami_test_path (file, "custody");
    ami_aggregator_headend_t headend = { "headend-1", fx->he [0].endpoint,
                                         ami_cert_public_txt (G.he_cert [0]) };
    ami_aggregator_config_t config;
    memset (&config, 0, sizeof config);
    config.node_id = "agg-1";
    config.cert = G.agg_cert;
    config.endpoint = "tcp://127.0.0.1:*";
    config.headends = &headend;
    config.headend_count = 1;
    config.state = bad;
    zactor_t *agg = ami_aggregator_new (&config);
    assert_null (agg);
    free (bad);
    free (file);
}

static params_t s_bench_params [] = {
    { .no_fleet = true, .batch_blocks = 16 },
    { .no_fleet = true, .batch_blocks = 64 },
    { .no_fleet = true, .batch_blocks = 256 },
    { .no_fleet = true, .batch_blocks = 1024 },
};

static void
s_bench (fx_t *fx, uint32_t batch_blocks)
{
    zsock_t *fleet = s_feeder (fx);
    /* 8 pre-encoded fleet batches (distinct ids), reused in turn */
    enum { FRAMES = 8, BLOCKS = AMI_MAX_BATCH_BLOCKS };
    zframe_t *frames [FRAMES];
    for (int f = 0; f < FRAMES; f++) {
        ami_msg_reset (G.msg2, AMI_MSG_BATCH);
        ami_batch_t *batch = &G.msg2->batch;
        batch->batch_id = (uint64_t) f;
        strcpy (batch->origin, "fleet-9");
        for (uint32_t i = 0; i < BLOCKS; i++) {
            ami_meter_id_format (1 + (uint32_t) f * BLOCKS + i, batch->blocks [i].meter_id);
            batch->blocks [i].seq = 500000;
            batch->blocks [i].box = G.boxes [i % TEST_BLOCKS];
            batch->blocks [i].box_size = BENCH_BLOCK_BOX;
        }
        batch->block_count = BLOCKS;
        static uint8_t buf [AMI_MAX_FRAME];
        size_t len = 0;
        assert_int_equal (ami_msg_encode (G.msg2, buf, sizeof buf, &len), AMI_OK);
        frames [f] = zframe_new (buf, len);
    }
    zpoller_t *poller = zpoller_new (fleet, fx->he [0].router, fx->he [1].router, NULL);
    uint32_t credit = AMI_CREDIT_INITIAL, inflight = 0;
    uint64_t sent = 0, acked_blocks = 0, up_batches = 0, refused = 0;
    struct rusage r0, r1;
    getrusage (RUSAGE_SELF, &r0);
    int64_t start = zclock_mono (), end = start + BENCH_SECONDS * 1000;
    uint8_t ack [64];
    while (zclock_mono () < end) {
        while (inflight < (credit ? credit : 1)) {
            zframe_t *copy = zframe_dup (frames [sent % FRAMES]);
            assert_int_equal (zframe_send (&copy, fleet, 0), 0);
            sent++;
            inflight++;
        }
        void *which = zpoller_wait (poller, 100);
        if (which == fleet) {
            zframe_t *frame = zframe_recv (fleet);
            assert_int_equal (ami_msg_decode (G.msg, zframe_data (frame), zframe_size (frame)), AMI_OK);
            if (G.msg->type == AMI_MSG_BATCH_ACK) {
                /* the buffer fills when the uplink is the bottleneck:
                   refusals are flow control at work, and this fleet
                   keeps offering (it measures the uplink) */
                if (G.msg->batch_ack.status != AMI_OK) {
                    assert_int_equal (G.msg->batch_ack.status, AMI_E_BUSY);
                    refused++;
                }
                credit = G.msg->batch_ack.credit;
                inflight--;
            }
            zframe_destroy (&frame);
        }
        else
        if (which) {
            int i = which == fx->he [0].router ? 0 : 1;
            zmsg_t *msg = zmsg_recv (fx->he [i].router);
            zframe_t *body = zmsg_last (msg);
            const uint8_t *p = zframe_data (body);
            if (zframe_size (body) > 16 && p [2] == AMI_MSG_BATCH) {
                /* the id and block count from our own header, without a
                   full decode: 0xcf + 8 bytes (random 64-bit ids are
                   that long but for 1 in 2^32) */
                assert_int_equal (p [3], 0xcf);
                uint64_t id = 0;
                for (int b = 0; b < 8; b++)
                    id = id << 8 | p [4 + b];
                const uint8_t *blocks = p + 12 + 1 + 5;         /* "agg-1" fixstr */
                uint32_t count = blocks [0] == 0xdc ? (uint32_t) blocks [1] << 8 | blocks [2]
                                                    : blocks [0] & 0x0f;
                ami_msg_reset (G.msg2, AMI_MSG_BATCH_ACK);
                G.msg2->batch_ack.batch_id = id;
                G.msg2->batch_ack.credit = 4;
                size_t len = 0;
                assert_int_equal (ami_msg_encode (G.msg2, ack, sizeof ack, &len), AMI_OK);
                zmsg_t *reply = zmsg_new ();
                zmsg_append (reply, &(zframe_t *) { zframe_dup (zmsg_first (msg)) });
                zmsg_addmem (reply, ack, len);
                zmsg_send (&reply, fx->he [i].router);
                acked_blocks += count;
                up_batches++;
            }
            zmsg_destroy (&msg);
        }
    }
    int64_t elapsed = zclock_mono () - start;
    getrusage (RUSAGE_SELF, &r1);
    double cpu = (double) (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec)
               + (double) (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    double rate = (double) acked_blocks * 1000.0 / (double) elapsed;
    printf ("BENCH aggregator batch-blocks %4u: %8.0f blocks/s (%8.0f readings/s at 4 a block), "
            "%6.0f uplink batches/s, process CPU %.2f us/block, %" PRIu64 " of %" PRIu64
            " fleet batches refused (buffer full)\n", batch_blocks, rate, 4 * rate,
            (double) up_batches * 1000.0 / (double) elapsed,
            acked_blocks ? cpu * 1e6 / (double) acked_blocks : 0.0, refused, sent);
    assert_true (acked_blocks > 0);
    zpoller_destroy (&poller);
    for (int f = 0; f < FRAMES; f++)
        zframe_destroy (&frames [f]);
    zsock_destroy (&fleet);
}

static void
test_benchmark (void **state)
{
    fx_t *fx = (fx_t *) *state;
    s_bench (fx, fx->bench_blocks);
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
        cmocka_unit_test_setup_teardown (test_sec_int_4_route_claim, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unlisted_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_aud_2_refused_handshakes, s_setup,
                                         s_teardown),
        cmocka_unit_test_prestate_setup_teardown (test_sec_avail_2_aggregator_pending_bound,
                                                  s_setup, s_teardown,
                                                  &s_bound_pending_params),
        cmocka_unit_test_prestate_setup_teardown (test_batch_custody, s_setup, s_teardown,
                                                  &s_custody_params),
        cmocka_unit_test_prestate_setup_teardown (test_buffer_bound, s_setup, s_teardown,
                                                  &s_bound_params),
        cmocka_unit_test_prestate_setup_teardown (test_credit, s_setup, s_teardown,
                                                  &s_credit_params),
        cmocka_unit_test_prestate_setup_teardown (test_ack_timeout, s_setup, s_teardown,
                                                  &s_timeout_params),
        cmocka_unit_test_prestate_setup_teardown (test_refused_retry, s_setup, s_teardown,
                                                  &s_retry_params),
        cmocka_unit_test_prestate_setup_teardown (test_headend_silent, s_setup, s_teardown,
                                                  &s_silent_params),
        cmocka_unit_test_prestate_setup_teardown (test_batch_malformed, s_setup, s_teardown,
                                                  &s_bad_batch_params),
        cmocka_unit_test_prestate_setup_teardown (test_fun_int_1_custody_survives_restart,
                                                  s_setup, s_teardown, &s_restart_params),
        cmocka_unit_test_prestate_setup_teardown (test_sec_fail_1_custody_store_failure,
                                                  s_setup, s_teardown, &s_store_fail_params),
        cmocka_unit_test_prestate_setup_teardown (test_batch_max_bytes, s_setup, s_teardown,
                                                  &s_max_bytes_params),
        cmocka_unit_test_prestate_setup_teardown (test_issue6_fleets_refused, s_setup,
                                                  s_teardown, &s_fleets_full_params),
        cmocka_unit_test_prestate_setup_teardown (test_issue6_routes_refused_full, s_setup,
                                                  s_teardown, &s_routes_full_params),
        cmocka_unit_test_prestate_setup_teardown (test_issue6_superseded_full, s_setup,
                                                  s_teardown, &s_superseded_params),
        cmocka_unit_test_prestate_setup_teardown (test_issue6_acks_failed, s_setup,
                                                  s_teardown, &s_acks_failed_params),
    };
    //  The benchmark is a separate group that only exists when asked for
    //  (AMI_AGG_BENCH=1), so the suite never reports a skipped test.
    const struct CMUnitTest bench [] = {
        cmocka_unit_test_prestate_setup_teardown (test_benchmark, s_setup, s_teardown,
                                                  &s_bench_params [0]),
        cmocka_unit_test_prestate_setup_teardown (test_benchmark, s_setup, s_teardown,
                                                  &s_bench_params [1]),
        cmocka_unit_test_prestate_setup_teardown (test_benchmark, s_setup, s_teardown,
                                                  &s_bench_params [2]),
        cmocka_unit_test_prestate_setup_teardown (test_benchmark, s_setup, s_teardown,
                                                  &s_bench_params [3]),
    };
    if (getenv ("AMI_AGG_BENCH"))
        return cmocka_run_group_tests_name ("aggregator-bench", bench, s_group_setup, s_group_teardown);
    return cmocka_run_group_tests_name ("aggregator", tests, s_group_setup, s_group_teardown);
}
