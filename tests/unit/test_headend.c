/*  test_headend.c - the head end in-process: the real broker, the head
    end(s), and hand-made peers around them:
      - a fake aggregator: a CURVE DEALER that says HELLO, sends HEALTH
        (its own and one of a "fleet") every heartbeat, answers HELLO with
        HELLO, answers READ_REQ with a canned READ_RESP (or holds it),
        sends BATCHes when told and records the BATCH_ACKs it gets;
      - a fake MDMS ingest: a CURVE ROUTER that records what head ends send
        (BATCH frames kept as received) and sends BATCH_ACKs when told;
      - an MDP client (RFC 7 frames by hand on a DEALER) playing the MDMS;
      - in one test, a fake broker (ROUTER) to drive the worker side of
        MDP/0.1 directly.
    One ami_auth for the process; its allow-list is the union of what the
    broker (MDMS, head ends), the head ends (aggregators) and the fake
    ingest (head ends) admit. Heartbeats are 100 ms everywhere. Every wait
    polls with a deadline; sleeps are only the poll interval.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "ami_auth.h"
#include "ami_broker.h"
#include "ami_cert.h"
#include "ami_err.h"
#include "ami_headend.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_test.h"

/*  Positive waits are generous (loaded 2-core VM, sanitizers, valgrind);
    "nothing arrives" waits are short but far above a loopback round trip. */
#define WAIT_MS         5000
#define QUIET_MS        500
#define POLL_MS         5
/*  The heartbeat of every node in these tests, and the broker's MDP one. */
#define HB_MS           100

#define C_HEADER        "MDPC01"
#define W_HEADER        "MDPW01"
#define SERVICE         "agg.AGG-T"

/* ---------------------------------------------------------------------- */
/*  Process-wide keys and ZAP handler                                       */

static struct {
    char *dir;
    char *allow;
    ami_auth_t *auth;
    ami_cert_t *broker, *mdms, *he [2], *agg, *agg_x, *stranger;
    ami_msg_t *msg;
    uint8_t agg_health [256];           /* the fake aggregator's HEALTH */
    size_t agg_health_size;
    uint8_t fleet_health [256];         /* its "fleet's" HEALTH */
    size_t fleet_health_size;
    uint8_t aggx_health [256];          /* AGG-X's own HEALTH */
    size_t aggx_health_size;
    uint8_t fleetx_health [256];        /* AGG-X's fleet's HEALTH */
    size_t fleetx_health_size;
    uint8_t next_id;                    /* request id generator */
} g;

static void
s_save_public (ami_cert_t *cert, const char *name)
{
    char *path = ami_test_path (g.allow, name);
    assert_int_equal (ami_cert_save_public (cert, path), AMI_OK);
    free (path);
}

static ami_cert_t *
s_cert (const char *role, const char *node_id)
{
    int err = 0;
    ami_cert_t *cert = ami_cert_new (role, node_id, &err);
    assert_non_null (cert);
    return cert;
}

/*  Encode a HEALTH with fixed content, so a forwarded copy can be compared
    byte for byte. */
static size_t
s_health_state (const char *role, const char *node_id, int state, uint8_t *buf,
                size_t cap)
{
    ami_msg_reset (g.msg, AMI_MSG_HEALTH);
    snprintf (g.msg->health.role, sizeof g.msg->health.role, "%s", role);
    snprintf (g.msg->health.node_id, sizeof g.msg->health.node_id, "%s", node_id);
    g.msg->health.state = (uint8_t) state;
    g.msg->health.uptime_ms = 123456;
    g.msg->health.stat_count = 1;
    snprintf (g.msg->health.stats [0].name, sizeof g.msg->health.stats [0].name, "meters");
    g.msg->health.stats [0].value = 100;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (g.msg, buf, cap, &len), AMI_OK);
    return len;
}

static size_t
s_health (const char *role, const char *node_id, uint8_t *buf, size_t cap)
{
    return s_health_state (role, node_id, AMI_STATE_READY, buf, cap);
}

static int
s_group_setup (void **state)
{
    (void) state;
    ami_log_set_level (getenv ("AMI_TEST_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_ERROR);
    g.dir = ami_test_tmpdir ("headend");
    assert_non_null (g.dir);
    g.allow = ami_test_path (g.dir, "allow");
    assert_int_equal (mkdir (g.allow, 0700), 0);
    g.broker = s_cert ("broker", "BROKER-T");
    g.mdms = s_cert ("mdms", "MDMS-T");
    g.he [0] = s_cert ("headend", "HE-1");
    g.he [1] = s_cert ("headend", "HE-2");
    g.agg = s_cert ("aggregator", "AGG-T");
    g.agg_x = s_cert ("aggregator", "AGG-X");
    g.stranger = s_cert ("aggregator", "AGG-T");    //  same name, unlisted key
    //  Union of the allow-lists: broker (MDMS, head ends), head ends
    //  (aggregators), MDMS ingest (head ends). Not the stranger.
    s_save_public (g.mdms, "mdms.cert");
    s_save_public (g.he [0], "he-1.cert");
    s_save_public (g.he [1], "he-2.cert");
    s_save_public (g.agg, "agg-t.cert");
    s_save_public (g.agg_x, "agg-x.cert");
    int err = 0;
    g.auth = ami_auth_new (g.allow, &err);
    assert_non_null (g.auth);
    g.msg = ami_msg_new ();
    assert_non_null (g.msg);
    g.agg_health_size = s_health ("aggregator", "AGG-T", g.agg_health,
                                  sizeof g.agg_health);
    g.fleet_health_size = s_health ("meter", "FLEET-T", g.fleet_health,
                                    sizeof g.fleet_health);
    g.aggx_health_size = s_health ("aggregator", "AGG-X", g.aggx_health,
                                   sizeof g.aggx_health);
    g.fleetx_health_size = s_health ("meter", "FLEET-X", g.fleetx_health,
                                     sizeof g.fleetx_health);
    return 0;
}

static int
s_group_teardown (void **state)
{
    (void) state;
    ami_auth_destroy (&g.auth);         //  after every server socket
    ami_cert_destroy (&g.broker);
    ami_cert_destroy (&g.mdms);
    ami_cert_destroy (&g.he [0]);
    ami_cert_destroy (&g.he [1]);
    ami_cert_destroy (&g.agg);
    ami_cert_destroy (&g.agg_x);
    ami_cert_destroy (&g.stranger);
    ami_msg_destroy (&g.msg);
    assert_int_equal (ami_test_rmtree (g.dir), 0);
    free (g.allow);
    free (g.dir);
    return 0;
}


/* ---------------------------------------------------------------------- */
/*  Frames                                                                  */

typedef struct {
    const void *data;
    size_t size;
} frame_t;

#define F(s)        { (s), strlen (s) }
#define FB(p, n)    { (p), (n) }
#define SEND(sock, ...) \
    s_send_frames ((sock), (frame_t []) { __VA_ARGS__ }, \
                   sizeof ((frame_t []) { __VA_ARGS__ }) / sizeof (frame_t))

static void
s_send_frames (zsock_t *sock, const frame_t *frames, size_t count)
{
    zmsg_t *msg = zmsg_new ();
    for (size_t i = 0; i < count; i++)
        assert_int_equal (zmsg_addmem (msg, frames [i].data, frames [i].size), 0);
    assert_int_equal (zmsg_send (&msg, sock), 0);
}

static bool
s_frame_is (zframe_t *frame, const void *data, size_t size)
{
    return frame && zframe_size (frame) == size
        && (size == 0 || memcmp (zframe_data (frame), data, size) == 0);
}

static bool
s_frame_str (zframe_t *frame, const char *text)
{
    return s_frame_is (frame, text, strlen (text));
}

/*  A fresh request id: 16 bytes, distinct per call. */
static void
s_new_id (uint8_t id [AMI_REQUEST_ID_SIZE])
{
    g.next_id++;
    for (int i = 0; i < AMI_REQUEST_ID_SIZE; i++)
        id [i] = (uint8_t) (0xa0 + i) ^ g.next_id;
}

/*  A READ_REQ (unsigned: the head end never checks signatures) expiring
    at expires_ms (wall clock). */
static size_t
s_read_req (const uint8_t id [AMI_REQUEST_ID_SIZE], uint64_t expires_ms,
            uint8_t *buf, size_t cap)
{
    ami_msg_reset (g.msg, AMI_MSG_READ_REQ);
    snprintf (g.msg->read_req.meter_id, sizeof g.msg->read_req.meter_id, "MTR-000001");
    memcpy (g.msg->read_req.request_id, id, AMI_REQUEST_ID_SIZE);
    g.msg->read_req.counter = 7;
    //  issued a minute before it expires, or now if that is earlier
    uint64_t now = (uint64_t) zclock_time ();
    g.msg->read_req.issued_ms = expires_ms - 60000 < now ? expires_ms - 60000 : now;
    g.msg->read_req.expires_ms = expires_ms;
    memset (g.msg->read_req.signature, 0x5a, AMI_SIGNATURE_SIZE);
    size_t len = 0;
    assert_int_equal (ami_msg_encode (g.msg, buf, cap, &len), AMI_OK);
    return len;
}

static uint64_t
s_soon (void)
{
    return (uint64_t) zclock_time () + 30000;
}

/*  Decode an ERROR; returns its code, checks the request id and origin. */
static int
s_error_code (zframe_t *frame, const uint8_t *id, const char *origin)
{
    assert_non_null (frame);
    assert_int_equal (ami_msg_decode (g.msg, zframe_data (frame), zframe_size (frame)),
                      AMI_OK);
    assert_int_equal (g.msg->type, AMI_MSG_ERROR);
    if (id) {
        assert_true (g.msg->error.has_request_id);
        assert_memory_equal (g.msg->error.request_id, id, AMI_REQUEST_ID_SIZE);
    }
    else
        assert_false (g.msg->error.has_request_id);
    assert_string_equal (g.msg->error.origin, origin);
    return g.msg->error.code;
}


/* ---------------------------------------------------------------------- */
/*  The fake aggregator                                                     */

#define AGG_HELD 8

typedef struct {
    zsock_t *sock;
    const char *node_id;        /* what it claims in HELLO */
    bool beat;                  /* sends HEALTH every heartbeat */
    bool answer;                /* answers READ_REQ at once, else holds it */
    int64_t next_beat;
    int reads;                  /* READ_REQs received */
    int hellos;                 /* HELLOs received from the head end */
    int others;                 /* anything else received */
    uint8_t req [512];          /* last READ_REQ, as received */
    size_t req_size;
    uint8_t resp [512];         /* last READ_RESP, as sent */
    size_t resp_size;
    uint8_t held [AGG_HELD][AMI_REQUEST_ID_SIZE];
    int held_count;
    const uint8_t *health;      /* the HEALTH frames it beats with */
    size_t health_size;
    const uint8_t *fleet;
    size_t fleet_size;
    int acks;                   /* BATCH_ACKs received */
    uint8_t ack [64];           /* the last one, as received */
    size_t ack_size;
    ami_batch_ack_t last_ack;   /* and decoded */
} agg_t;

static void
s_agg_send (agg_t *agg, const void *data, size_t size)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, data, size);
    if (zmsg_send (&msg, agg->sock))
        zmsg_destroy (&msg);            //  queue full: a real child drops too
}

static void
s_agg_hello (agg_t *agg)
{
    ami_msg_reset (g.msg, AMI_MSG_HELLO);
    snprintf (g.msg->hello.role, sizeof g.msg->hello.role, "aggregator");
    snprintf (g.msg->hello.node_id, sizeof g.msg->hello.node_id, "%s", agg->node_id);
    g.msg->hello.meter_count = 1;
    snprintf (g.msg->hello.meters [0], sizeof g.msg->hello.meters [0], "MTR-000001");
    uint8_t buf [256];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (g.msg, buf, sizeof buf, &len), AMI_OK);
    s_agg_send (agg, buf, len);
}

/*  Connect to head end `he_endpoint` (whose key is he_cert's) as cert. */
static void
s_agg_open (agg_t *agg, const char *he_endpoint, ami_cert_t *he_cert,
            ami_cert_t *cert, const char *node_id, bool hello)
{
    memset (agg, 0, sizeof *agg);
    agg->sock = zsock_new (ZMQ_DEALER);
    assert_non_null (agg->sock);
    zsock_set_linger (agg->sock, 0);
    zsock_set_sndtimeo (agg->sock, 0);
    assert_int_equal (ami_auth_client (agg->sock, cert, ami_cert_public_txt (he_cert)),
                      AMI_OK);
    assert_int_equal (zsock_connect (agg->sock, "%s", he_endpoint), 0);
    agg->node_id = node_id;
    agg->beat = true;
    agg->answer = true;
    bool x = streq (node_id, "AGG-X");
    agg->health = x ? g.aggx_health : g.agg_health;
    agg->health_size = x ? g.aggx_health_size : g.agg_health_size;
    agg->fleet = x ? g.fleetx_health : g.fleet_health;
    agg->fleet_size = x ? g.fleetx_health_size : g.fleet_health_size;
    agg->next_beat = zclock_mono ();
    if (hello)
        s_agg_hello (agg);
}

static void
s_agg_close (agg_t *agg)
{
    zsock_destroy (&agg->sock);
}

/*  Answer request id with a canned READ_RESP (remembered in agg->resp). */
static void
s_agg_respond (agg_t *agg, const uint8_t id [AMI_REQUEST_ID_SIZE])
{
    static const uint8_t sealed [40] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
    ami_msg_reset (g.msg, AMI_MSG_READ_RESP);
    snprintf (g.msg->read_resp.meter_id, sizeof g.msg->read_resp.meter_id, "MTR-000001");
    memcpy (g.msg->read_resp.request_id, id, AMI_REQUEST_ID_SIZE);
    g.msg->read_resp.status = AMI_OK;
    g.msg->read_resp.sealed = sealed;
    g.msg->read_resp.sealed_size = sizeof sealed;
    memset (g.msg->read_resp.signature, 0xc3, AMI_SIGNATURE_SIZE);
    assert_int_equal (ami_msg_encode (g.msg, agg->resp, sizeof agg->resp,
                                      &agg->resp_size), AMI_OK);
    s_agg_send (agg, agg->resp, agg->resp_size);
}

static void
s_agg_answer_held (agg_t *agg)
{
    for (int i = 0; i < agg->held_count; i++)
        s_agg_respond (agg, agg->held [i]);
    agg->held_count = 0;
}

/*  Heartbeat if due, and serve what the head end sent. */
static void
s_agg_pump (agg_t *agg)
{
    if (!agg->sock)
        return;
    if (agg->beat && zclock_mono () >= agg->next_beat) {
        s_agg_send (agg, agg->health, agg->health_size);
        s_agg_send (agg, agg->fleet, agg->fleet_size);
        agg->next_beat = zclock_mono () + HB_MS;
    }
    while (zsock_events (agg->sock) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (agg->sock);
        assert_non_null (msg);
        zframe_t *frame = zmsg_first (msg);
        assert_int_equal (zmsg_size (msg), 1);
        assert_int_equal (ami_msg_decode (g.msg, zframe_data (frame),
                                          zframe_size (frame)), AMI_OK);
        if (g.msg->type == AMI_MSG_READ_REQ) {
            agg->reads++;
            assert_true (zframe_size (frame) <= sizeof agg->req);
            memcpy (agg->req, zframe_data (frame), zframe_size (frame));
            agg->req_size = zframe_size (frame);
            uint8_t id [AMI_REQUEST_ID_SIZE];
            memcpy (id, g.msg->read_req.request_id, sizeof id);
            if (agg->answer)
                s_agg_respond (agg, id);
            else
            if (agg->held_count < AGG_HELD)
                memcpy (agg->held [agg->held_count++], id, sizeof id);
        }
        else
        if (g.msg->type == AMI_MSG_BATCH_ACK) {
            agg->acks++;
            assert_true (zframe_size (frame) <= sizeof agg->ack);
            memcpy (agg->ack, zframe_data (frame), zframe_size (frame));
            agg->ack_size = zframe_size (frame);
            agg->last_ack = g.msg->batch_ack;
        }
        else
        if (g.msg->type == AMI_MSG_HELLO) {
            //  The head end does not know us (it restarted, or we were
            //  forgotten): a child re-introduces itself
            assert_string_equal (g.msg->hello.role, "headend");
            agg->hellos++;
            if (agg->beat)
                s_agg_hello (agg);
        }
        else
            agg->others++;
        zmsg_destroy (&msg);
    }
}


/* ---------------------------------------------------------------------- */
/*  The fake MDMS ingest                                                    */

#define INGEST_KEPT 8

typedef struct {
    zsock_t *sock;
    char *endpoint;
    int hellos [2];             /* HELLO from HE-1, HE-2 */
    int healths [2];            /* own HEALTH from HE-1, HE-2 */
    int agg_fwd;                /* the aggregator's HEALTH, byte for byte */
    int fleet_fwd;              /* the fleet's HEALTH, byte for byte */
    int others;
    int meta_mismatch;          /* HELLO/HEALTH node id != certificate's */
    uint64_t last_aggregators;  /* stats from the last HEALTH of HE-1 */
    uint64_t last_requests;
    uint8_t last_state;
    zframe_t *he1;              /* routing id of HE-1 */
    int batches;                /* BATCH frames received */
    zframe_t *batch [INGEST_KEPT];  /* the first INGEST_KEPT, as received */
    int aggx_fwd;               /* AGG-X's and its fleet's HEALTH */
    int fleetx_fwd;
    int spoofed;                /* any other HEALTH of another role than
                                   headend: none may get through */
} ingest_t;

static void
s_ingest_open (ingest_t *ingest)
{
    memset (ingest, 0, sizeof *ingest);
    ingest->sock = zsock_new (ZMQ_ROUTER);
    assert_non_null (ingest->sock);
    zsock_set_linger (ingest->sock, 0);
    assert_int_equal (ami_auth_server (ingest->sock, g.mdms), AMI_OK);
    assert_true (zsock_bind (ingest->sock, "tcp://127.0.0.1:*") > 0);
    ingest->endpoint = zsock_last_endpoint (ingest->sock);
    assert_non_null (ingest->endpoint);
}

static void
s_ingest_close (ingest_t *ingest)
{
    for (int i = 0; i < INGEST_KEPT; i++)
        zframe_destroy (&ingest->batch [i]);
    zframe_destroy (&ingest->he1);
    zsock_destroy (&ingest->sock);
    zstr_free (&ingest->endpoint);
}

static uint64_t
s_stat (const ami_health_t *health, const char *name)
{
    for (uint32_t i = 0; i < health->stat_count; i++)
        if (streq (health->stats [i].name, name))
            return health->stats [i].value;
    return UINT64_MAX;
}

static void
s_ingest_pump (ingest_t *ingest)
{
    while (ingest->sock && (zsock_events (ingest->sock) & ZMQ_POLLIN)) {
        zmsg_t *msg = zmsg_recv (ingest->sock);
        assert_non_null (msg);
        assert_int_equal (zmsg_size (msg), 2);
        zframe_t *id = zmsg_first (msg);
        zframe_t *frame = zmsg_next (msg);
        const char *node = ami_auth_peer_meta (frame, AMI_CERT_META_NODE_ID);
        assert_non_null (node);
        int which = streq (node, "HE-1") ? 0 : 1;
        if (s_frame_is (frame, g.agg_health, g.agg_health_size))
            ingest->agg_fwd++;
        else
        if (s_frame_is (frame, g.fleet_health, g.fleet_health_size))
            ingest->fleet_fwd++;
        else {
            assert_int_equal (ami_msg_decode (g.msg, zframe_data (frame),
                                              zframe_size (frame)), AMI_OK);
            if (g.msg->type == AMI_MSG_HELLO) {
                ingest->hellos [which]++;
                assert_string_equal (g.msg->hello.role, "headend");
                if (!streq (g.msg->hello.node_id, node))
                    ingest->meta_mismatch++;
                if (which == 0) {
                    zframe_destroy (&ingest->he1);
                    ingest->he1 = zframe_dup (id);
                }
            }
            else
            if (g.msg->type == AMI_MSG_BATCH) {
                if (ingest->batches < INGEST_KEPT)
                    ingest->batch [ingest->batches] = zframe_dup (frame);
                ingest->batches++;
                zframe_destroy (&ingest->he1);      //  where acks go
                ingest->he1 = zframe_dup (id);
            }
            else
            if (g.msg->type == AMI_MSG_HEALTH && !streq (g.msg->health.role, "headend")) {
                if (s_frame_is (frame, g.aggx_health, g.aggx_health_size))
                    ingest->aggx_fwd++;
                else
                if (s_frame_is (frame, g.fleetx_health, g.fleetx_health_size))
                    ingest->fleetx_fwd++;
                else
                    ingest->spoofed++;
            }
            else
            if (g.msg->type == AMI_MSG_HEALTH && streq (g.msg->health.role, "headend")) {
                ingest->healths [which]++;
                if (!streq (g.msg->health.node_id, node))
                    ingest->meta_mismatch++;
                if (which == 0) {
                    ingest->last_aggregators = s_stat (&g.msg->health, "aggregators");
                    ingest->last_requests = s_stat (&g.msg->health, "requests");
                    ingest->last_state = g.msg->health.state;
                    zframe_destroy (&ingest->he1);
                    ingest->he1 = zframe_dup (id);
                }
            }
            else
                ingest->others++;
        }
        zmsg_destroy (&msg);
    }
}


/* ---------------------------------------------------------------------- */
/*  The fixture: broker, head end(s), ingest, aggregators, MDP client       */

typedef struct {
    zactor_t *broker;
    char *broker_endpoint;
    zactor_t *he [2];
    char *he_endpoint [2];
    ingest_t ingest;
    agg_t agg [2];
    zsock_t *client;            /* MDP client, as the MDMS */
} fx_t;

static void
s_pump (fx_t *fx)
{
    s_agg_pump (&fx->agg [0]);
    s_agg_pump (&fx->agg [1]);
    s_ingest_pump (&fx->ingest);
}

/*  Wait until cond holds, pumping the fake peers; ok gets the outcome. */
#define WAIT_UNTIL(fx, ok, cond, ms) \
    do { \
        int64_t wait_deadline_ = zclock_mono () + (ms); \
        while (!((ok) = (cond)) && zclock_mono () < wait_deadline_) { \
            s_pump (fx); \
            zclock_sleep (POLL_MS); \
        } \
    } while (0)

static ami_headend_config_t
s_he_config (fx_t *fx, int index, int workers)
{
    ami_headend_config_t config = { 0 };
    config.node_id = index == 0 ? "HE-1" : "HE-2";
    config.cert = g.he [index];
    config.endpoint = "tcp://127.0.0.1:*";
    config.broker = fx->broker_endpoint;
    config.broker_key = ami_cert_public_txt (g.broker);
    config.mdms = fx->ingest.endpoint;
    config.mdms_key = ami_cert_public_txt (g.mdms);
    config.heartbeat_ms = HB_MS;
    config.broker_heartbeat_ms = HB_MS;
    config.broker_liveness = 3;
    config.workers_per_aggregator = workers;
    return config;
}

static void
s_he_start (fx_t *fx, int index, ami_headend_config_t *config)
{
    fx->he [index] = ami_headend_new (config);
    assert_non_null (fx->he [index]);
    zsock_set_rcvtimeo (fx->he [index], WAIT_MS);   //  a hung actor fails
    assert_int_equal (zstr_send (fx->he [index], "ENDPOINT"), 0);
    fx->he_endpoint [index] = zstr_recv (fx->he [index]);
    assert_non_null (fx->he_endpoint [index]);
    assert_true (strncmp (fx->he_endpoint [index], "tcp://127.0.0.1:", 16) == 0);
    assert_true (atoi (fx->he_endpoint [index] + 16) > 0);
}

static void
s_he_stop (fx_t *fx, int index)
{
    zactor_destroy (&fx->he [index]);
    zstr_free (&fx->he_endpoint [index]);
}

/*  Start the broker, the ingest, `headends` head ends with K workers per
    aggregator (0 = default), the MDP client. No aggregator yet. */
static void
s_fx_start (fx_t *fx, int headends, int workers, int margin_ms)
{
    memset (fx, 0, sizeof *fx);
    s_ingest_open (&fx->ingest);
    ami_broker_config_t broker = { 0 };
    broker.endpoint = "tcp://127.0.0.1:*";
    broker.server_cert = g.broker;
    broker.heartbeat_ms = HB_MS;
    broker.liveness = 3;
    fx->broker = ami_broker_new (&broker);
    assert_non_null (fx->broker);
    zsock_set_rcvtimeo (fx->broker, WAIT_MS);
    zstr_send (fx->broker, "ENDPOINT");
    fx->broker_endpoint = zstr_recv (fx->broker);
    assert_non_null (fx->broker_endpoint);
    for (int i = 0; i < headends; i++) {
        ami_headend_config_t config = s_he_config (fx, i, workers);
        config.request_margin_ms = margin_ms;
        s_he_start (fx, i, &config);
    }
    fx->client = zsock_new (ZMQ_DEALER);
    assert_non_null (fx->client);
    zsock_set_linger (fx->client, 0);
    assert_int_equal (ami_auth_client (fx->client, g.mdms,
                                       ami_cert_public_txt (g.broker)), AMI_OK);
    assert_int_equal (zsock_connect (fx->client, "%s", fx->broker_endpoint), 0);
}

static void
s_fx_stop (fx_t *fx)
{
    zsock_destroy (&fx->client);
    s_agg_close (&fx->agg [0]);
    s_agg_close (&fx->agg [1]);
    for (int i = 0; i < 2; i++)
        if (fx->he [i])
            s_he_stop (fx, i);
    zactor_destroy (&fx->broker);
    zstr_free (&fx->broker_endpoint);
    s_ingest_close (&fx->ingest);
}

/*  Connect aggregator slot i to head end he as AGG-T and say HELLO. */
static void
s_fx_agg (fx_t *fx, int i, int he)
{
    s_agg_open (&fx->agg [i], fx->he_endpoint [he], g.he [he], g.agg, "AGG-T", true);
}

/*  Head end STATUS: totals, and the aggregator line for AGG-T ("" if none). */
static void
s_he_status (fx_t *fx, int he, size_t *aggs, size_t *workers, size_t *in_flight,
             char *line, size_t line_size)
{
    assert_int_equal (zstr_send (fx->he [he], "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (fx->he [he]);
    assert_non_null (reply);
    assert_true (zmsg_size (reply) >= 3);
    char *a = zmsg_popstr (reply), *w = zmsg_popstr (reply), *f = zmsg_popstr (reply);
    if (aggs) *aggs = (size_t) atol (a);
    if (workers) *workers = (size_t) atol (w);
    if (in_flight) *in_flight = (size_t) atol (f);
    assert_int_equal (zmsg_size (reply), (size_t) atol (a));    //  one line each
    if (line) {
        line [0] = 0;
        char *text = zmsg_popstr (reply);
        if (text)
            snprintf (line, line_size, "%s", text);
        zstr_free (&text);
    }
    zstr_free (&a); zstr_free (&w); zstr_free (&f);
    zmsg_destroy (&reply);
}

/*  The broker's STATUS line for SERVICE ("agg.AGG-T <workers> <queued>"). */
static void
s_broker_line (fx_t *fx, char *line, size_t size)
{
    assert_int_equal (zstr_send (fx->broker, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (fx->broker);
    assert_non_null (reply);
    line [0] = 0;
    for (zframe_t *f = zmsg_first (reply); f; f = zmsg_next (reply))
        if (zframe_size (f) > strlen (SERVICE)
        &&  memcmp (zframe_data (f), SERVICE " ", strlen (SERVICE) + 1) == 0)
            snprintf (line, size, "%.*s", (int) zframe_size (f),
                      (char *) zframe_data (f));
    zmsg_destroy (&reply);
}

static bool
s_broker_line_is (fx_t *fx, const char *expected)
{
    char line [128];
    s_broker_line (fx, line, sizeof line);
    return streq (line, expected);
}


/* ---------------------------------------------------------------------- */
/*  The MDP client (RFC 7: "", "MDPC01", service, body...)                  */

static void
s_request (fx_t *fx, const void *body, size_t size)
{
    SEND (fx->client, F (""), F (C_HEADER), F (SERVICE), FB (body, size));
}

/*  Wait for a REPLY for service (pumping the fake peers); returns the
    body frames, or NULL on timeout. */
static zmsg_t *
s_reply (fx_t *fx, const char *service, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (true) {
        s_pump (fx);
        if (zsock_events (fx->client) & ZMQ_POLLIN) {
            zmsg_t *msg = zmsg_recv (fx->client);
            assert_non_null (msg);
            assert_true (zmsg_size (msg) >= 4);
            zframe_t *f = zmsg_pop (msg);
            assert_true (s_frame_is (f, "", 0));
            zframe_destroy (&f);
            f = zmsg_pop (msg);
            assert_true (s_frame_str (f, C_HEADER));
            zframe_destroy (&f);
            f = zmsg_pop (msg);
            assert_true (s_frame_str (f, service));
            zframe_destroy (&f);
            return msg;
        }
        if (zclock_mono () >= deadline)
            return NULL;
        zclock_sleep (POLL_MS);
    }
}

/*  Ask the broker mmi.service about SERVICE: "200" or "404" into code. */
static void
s_mmi (fx_t *fx, char code [4])
{
    SEND (fx->client, F (""), F (C_HEADER), F ("mmi.service"), F (SERVICE));
    zmsg_t *reply = s_reply (fx, "mmi.service", WAIT_MS);
    assert_non_null (reply);
    char *text = zmsg_popstr (reply);
    snprintf (code, 4, "%s", text);
    zstr_free (&text);
    zmsg_destroy (&reply);
}

static bool
s_wait_mmi (fx_t *fx, const char *expected)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    char code [4] = "";
    while (zclock_mono () < deadline) {
        s_mmi (fx, code);
        if (streq (code, expected))
            return true;
        for (int i = 0; i < 4; i++) {
            s_pump (fx);
            zclock_sleep (POLL_MS);
        }
    }
    return false;
}

/*  One complete read through the chain; returns the aggregator slot that
    served it (the body came back byte for byte). */
static int
s_read_ok (fx_t *fx)
{
    uint8_t id [AMI_REQUEST_ID_SIZE], req [512];
    s_new_id (id);
    size_t len = s_read_req (id, s_soon (), req, sizeof req);
    int before [2] = { fx->agg [0].reads, fx->agg [1].reads };
    s_request (fx, req, len);
    zmsg_t *body = s_reply (fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_int_equal (zmsg_size (body), 1);
    int served = fx->agg [0].reads > before [0] ? 0 : 1;
    agg_t *agg = &fx->agg [served];
    assert_int_equal (agg->reads, (served == 0 ? before [0] : before [1]) + 1);
    assert_int_equal (agg->req_size, len);
    assert_memory_equal (agg->req, req, len);           //  down unchanged
    assert_true (s_frame_is (zmsg_first (body), agg->resp, agg->resp_size));
    zmsg_destroy (&body);
    return served;
}


/* ---------------------------------------------------------------------- */
/*  Interval data: batches, acks, head end statistics                       */

/*  One stat of the head end's HEALTH, through its STATS pipe command
    ("name value" frames); UINT64_MAX if it has no such stat. */
static uint64_t
s_he_stat (fx_t *fx, int he, const char *name)
{
    return ami_test_actor_stat (fx->he [he], name);
}

/*  Wait until the head end's stat reaches value (pumping the peers). */
static bool
s_wait_stat (fx_t *fx, int he, const char *name, uint64_t value)
{
    bool ok;
    WAIT_UNTIL (fx, ok, s_he_stat (fx, he, name) == value, WAIT_MS);
    return ok;
}

/*  Wait until head end he has `count` live aggregators. */
static bool
s_wait_aggs (fx_t *fx, int he, size_t count)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (zclock_mono () < deadline) {
        size_t aggs;
        s_he_status (fx, he, &aggs, NULL, NULL, NULL, 0);
        if (aggs == count)
            return true;
        s_pump (fx);
        zclock_sleep (POLL_MS);
    }
    return false;
}

/*  Encode a BATCH of `blocks` blocks with boxes of box_size bytes (not
    real ciphertext: relays never open them). Returns a malloc'd frame. */
static uint8_t *
s_batch (uint64_t batch_id, const char *origin, uint32_t blocks, size_t box_size,
         size_t *len)
{
    static uint8_t box [AMI_MAX_SEALED];
    for (size_t i = 0; i < sizeof box; i++)
        box [i] = (uint8_t) (i * 7 + batch_id);
    ami_msg_reset (g.msg, AMI_MSG_BATCH);
    g.msg->batch.batch_id = batch_id;
    snprintf (g.msg->batch.origin, sizeof g.msg->batch.origin, "%s", origin);
    g.msg->batch.block_count = blocks;
    for (uint32_t i = 0; i < blocks; i++) {
        ami_block_t *block = &g.msg->batch.blocks [i];
        snprintf (block->meter_id, sizeof block->meter_id, "MTR-%06u", i + 1);
        block->seq = 1000 + i;
        block->box = box;
        block->box_size = box_size;
    }
    size_t cap = 64 + (size_t) blocks * (box_size + 64);
    uint8_t *buf = (uint8_t *) malloc (cap);
    assert_non_null (buf);
    assert_int_equal (ami_msg_encode (g.msg, buf, cap, len), AMI_OK);
    return buf;
}

/*  The aggregator sends a small BATCH; returns nothing (the frame is
    rebuilt by the caller when it wants to compare). */
static void
s_agg_batch (agg_t *agg, uint64_t batch_id, const char *origin)
{
    size_t len;
    uint8_t *buf = s_batch (batch_id, origin, 3, 40, &len);
    s_agg_send (agg, buf, len);
    free (buf);
}

/*  The ingest answers BATCH_ACK through HE-1; the bytes sent go to ack. */
static size_t
s_ingest_ack (fx_t *fx, uint64_t batch_id, int status, uint32_t credit,
              uint8_t *ack, size_t cap)
{
    ami_msg_reset (g.msg, AMI_MSG_BATCH_ACK);
    g.msg->batch_ack.batch_id = batch_id;
    g.msg->batch_ack.status = (uint16_t) status;
    g.msg->batch_ack.credit = credit;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (g.msg, ack, cap, &len), AMI_OK);
    zframe_t *he = fx->ingest.he1;
    assert_non_null (he);
    SEND (fx->ingest.sock, FB (zframe_data (he), zframe_size (he)), FB (ack, len));
    return len;
}

/*  Start one head end with the ingest, AGG-T in slot 0 and AGG-X in slot
    1, both live, and the head end introduced to the ingest. */
static void
s_fx_two_aggs (fx_t *fx, ami_headend_config_t *config)
{
    if (config)
        s_he_start (fx, 0, config);
    s_fx_agg (fx, 0, 0);
    s_agg_open (&fx->agg [1], fx->he_endpoint [0], g.he [0], g.agg_x, "AGG-X", true);
    assert_true (s_wait_aggs (fx, 0, 2));
    bool ok;
    WAIT_UNTIL (fx, ok, fx->ingest.he1 != NULL, WAIT_MS);
    assert_true (ok);
}


/* ---------------------------------------------------------------------- */
/*  Tests                                                                   */

/*  Without a ZAP handler the CURVE ROUTER would admit anyone: no start.
    Runs in its own group, before the process's ami_auth exists. */
static void
test_refused_without_auth (void **state)
{
    (void) state;
    assert_false (ami_auth_running ());
    int err = 0;
    ami_cert_t *cert = ami_cert_new ("headend", "HE-1", &err);
    ami_cert_t *broker = ami_cert_new ("broker", "BROKER-T", &err);
    assert_non_null (cert);
    assert_non_null (broker);
    ami_headend_config_t config = { 0 };
    config.node_id = "HE-1";
    config.cert = cert;
    config.endpoint = "tcp://127.0.0.1:*";
    config.broker = "tcp://127.0.0.1:1";
    config.broker_key = ami_cert_public_txt (broker);
    assert_null (ami_headend_new (&config));
    ami_cert_destroy (&cert);
    ami_cert_destroy (&broker);
}

/*  Invalid configurations are refused at start, naming the field. */
static void
test_config_refused (void **state)
{
    (void) state;
    ami_headend_config_t good = { 0 };
    good.node_id = "HE-1";
    good.cert = g.he [0];
    good.endpoint = "tcp://127.0.0.1:*";
    good.broker = "tcp://127.0.0.1:1";
    good.broker_key = ami_cert_public_txt (g.broker);
    good.heartbeat_ms = HB_MS;

    ami_headend_config_t c = good;
    c.node_id = NULL;
    assert_null (ami_headend_new (&c));
    c = good;
    c.node_id = "HE-2";                     //  not the certificate's node
    assert_null (ami_headend_new (&c));
    c = good;
    c.broker_key = "too-short";
    assert_null (ami_headend_new (&c));
    c = good;
    c.broker = NULL;
    assert_null (ami_headend_new (&c));
    c = good;
    c.mdms = "tcp://127.0.0.1:2";           //  uplink without the MDMS key
    assert_null (ami_headend_new (&c));
    c = good;
    c.workers_per_aggregator = AMI_HEADEND_MAX_WORKERS + 1;
    assert_null (ami_headend_new (&c));
    c = good;
    c.heartbeat_ms = -1;
    assert_null (ami_headend_new (&c));
    c = good;
    c.endpoint = "tcp://no-such-interface-x:1";
    assert_null (ami_headend_new (&c));
    c = good;
    c.cert = NULL;
    assert_null (ami_headend_new (&c));
    int err = 0;
    char *path = ami_test_path (g.allow, "he-1.cert");
    ami_cert_t *public_only = ami_cert_load_public (path, &err);
    assert_non_null (public_only);
    c = good;
    c.cert = public_only;                   //  no secret key
    assert_null (ami_headend_new (&c));
    ami_cert_destroy (&public_only);
    free (path);

    //  The valid one starts (no MDMS uplink), and its port is taken after
    zactor_t *he = ami_headend_new (&good);
    assert_non_null (he);
    zsock_set_rcvtimeo (he, WAIT_MS);
    zstr_send (he, "ENDPOINT");
    char *endpoint = zstr_recv (he);
    assert_non_null (endpoint);
    c = good;
    c.endpoint = endpoint;                  //  already bound
    assert_null (ami_headend_new (&c));
    zstr_free (&endpoint);
    zactor_destroy (&he);
}

/*  The on-demand read chain and the uplink: MMI 200 after HELLO; the
    READ_REQ reaches the aggregator byte for byte and the READ_RESP comes
    back byte for byte; HELLO and HEALTH reach the ingest, with the
    aggregator's and its fleet's HEALTH forwarded unchanged. */
static void
test_read_round_trip (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 0, 0);              //  default K
    bool ok;
    //  The head end introduces itself to the MDMS before any aggregator
    WAIT_UNTIL (&fx, ok, fx.ingest.hellos [0] >= 1, WAIT_MS);
    assert_true (ok);
    char code [4];
    s_mmi (&fx, code);
    assert_string_equal (code, "404");      //  no aggregator yet

    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    //  The default pool: AMI_HEADEND_WORKERS workers for the aggregator
    char expected [64];
    snprintf (expected, sizeof expected, SERVICE " %d 0", AMI_HEADEND_WORKERS);
    WAIT_UNTIL (&fx, ok, s_broker_line_is (&fx, expected), WAIT_MS);
    assert_true (ok);
    size_t aggs, workers, in_flight;
    char line [64];
    s_he_status (&fx, 0, &aggs, &workers, &in_flight, line, sizeof line);
    assert_int_equal (aggs, 1);
    assert_int_equal (workers, AMI_HEADEND_WORKERS);
    assert_int_equal (in_flight, 0);
    snprintf (expected, sizeof expected, "AGG-T %d 0", AMI_HEADEND_WORKERS);
    assert_string_equal (line, expected);

    assert_int_equal (s_read_ok (&fx), 0);
    assert_int_equal (s_read_ok (&fx), 0);

    //  Uplink: own HEALTH (with stats), the aggregator's and the fleet's
    //  HEALTH byte for byte
    WAIT_UNTIL (&fx, ok, fx.ingest.healths [0] >= 2 && fx.ingest.agg_fwd >= 2
                && fx.ingest.fleet_fwd >= 2 && fx.ingest.last_requests == 2, WAIT_MS);
    assert_true (ok);
    assert_int_equal (fx.ingest.last_aggregators, 1);
    assert_int_equal (fx.ingest.last_state, AMI_STATE_READY);
    assert_int_equal (fx.ingest.meta_mismatch, 0);
    assert_int_equal (fx.ingest.others, 0);

    //  A HELLO from the MDMS (it restarted) is answered with HELLO
    int hellos = fx.ingest.hellos [0];
    uint8_t hello [128];
    size_t len = 0;
    ami_msg_reset (g.msg, AMI_MSG_HELLO);
    snprintf (g.msg->hello.role, sizeof g.msg->hello.role, "mdms");
    snprintf (g.msg->hello.node_id, sizeof g.msg->hello.node_id, "MDMS-T");
    assert_int_equal (ami_msg_encode (g.msg, hello, sizeof hello, &len), AMI_OK);
    assert_non_null (fx.ingest.he1);
    SEND (fx.ingest.sock, FB (zframe_data (fx.ingest.he1), zframe_size (fx.ingest.he1)),
          FB (hello, len));
    WAIT_UNTIL (&fx, ok, fx.ingest.hellos [0] > hellos, WAIT_MS);
    assert_true (ok);
    assert_int_equal (fx.agg [0].others, 0);
    s_fx_stop (&fx);
}

/*  Requests the head end refuses itself, without bothering the aggregator. */
static void
test_bad_requests (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));

    //  Garbage body: BAD_REQUEST without a request id
    s_request (&fx, "garbage", 7);
    zmsg_t *body = s_reply (&fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_int_equal (zmsg_size (body), 1);
    assert_int_equal (s_error_code (zmsg_first (body), NULL, "HE-1"), AMI_E_BAD_REQUEST);
    zmsg_destroy (&body);

    //  A valid ami message that is not a READ_REQ
    s_request (&fx, g.agg_health, g.agg_health_size);
    body = s_reply (&fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_int_equal (s_error_code (zmsg_first (body), NULL, "HE-1"), AMI_E_BAD_REQUEST);
    zmsg_destroy (&body);

    //  Two body frames: BAD_REQUEST, naming the READ_REQ's id
    uint8_t id [AMI_REQUEST_ID_SIZE], req [512];
    s_new_id (id);
    size_t len = s_read_req (id, s_soon (), req, sizeof req);
    SEND (fx.client, F (""), F (C_HEADER), F (SERVICE), FB (req, len), F ("extra"));
    body = s_reply (&fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_int_equal (s_error_code (zmsg_first (body), id, "HE-1"), AMI_E_BAD_REQUEST);
    zmsg_destroy (&body);

    //  A command that expired long ago is not forwarded
    s_new_id (id);
    len = s_read_req (id, (uint64_t) zclock_time () - 60000, req, sizeof req);
    s_request (&fx, req, len);
    body = s_reply (&fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_int_equal (s_error_code (zmsg_first (body), id, "HE-1"), AMI_E_EXPIRED);
    zmsg_destroy (&body);

    assert_int_equal (fx.agg [0].reads, 0);
    //  The single worker is free again after each refusal
    s_read_ok (&fx);
    s_fx_stop (&fx);
}

/*  Malformed and unexpected frames from the aggregator side and from the
    MDMS are dropped; the head end keeps serving. */
static void
test_malformed_peers (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    zsock_t *a = fx.agg [0].sock;
    uint8_t buf [512];
    size_t len = 0;

    SEND (a, F ("not msgpack at all"));
    SEND (a, FB ("", 0));
    SEND (a, FB ("\x96\x01\x02", 3));                   //  truncated array
    SEND (a, FB (g.agg_health, g.agg_health_size), F ("second frame"));
    {
        zmsg_t *many = zmsg_new ();                     //  too many frames
        for (int i = 0; i < 40; i++)
            zmsg_addstr (many, "frame");
        assert_int_equal (zmsg_send (&many, a), 0);
    }
    //  A READ_RESP nobody asked for, an ERROR without a request id
    uint8_t stray [AMI_REQUEST_ID_SIZE];
    s_new_id (stray);
    s_agg_respond (&fx.agg [0], stray);
    ami_msg_reset (g.msg, AMI_MSG_ERROR);
    g.msg->error.code = AMI_E_UNREACHABLE;
    snprintf (g.msg->error.origin, sizeof g.msg->error.origin, "FLEET-T");
    assert_int_equal (ami_msg_encode (g.msg, buf, sizeof buf, &len), AMI_OK);
    SEND (a, FB (buf, len));
    //  A READ_REQ travelling the wrong way
    len = s_read_req (stray, s_soon (), buf, sizeof buf);
    SEND (a, FB (buf, len));
    //  A BATCH under another aggregator's name (SEC-INT-4): refused
    static const uint8_t box [16] = { 9 };
    ami_msg_reset (g.msg, AMI_MSG_BATCH);
    g.msg->batch.batch_id = 1;
    snprintf (g.msg->batch.origin, sizeof g.msg->batch.origin, "AGG-Z");
    g.msg->batch.block_count = 1;
    snprintf (g.msg->batch.blocks [0].meter_id, sizeof g.msg->batch.blocks [0].meter_id,
              "MTR-000001");
    g.msg->batch.blocks [0].seq = 1;
    g.msg->batch.blocks [0].box = box;
    g.msg->batch.blocks [0].box_size = sizeof box;
    assert_int_equal (ami_msg_encode (g.msg, buf, sizeof buf, &len), AMI_OK);
    SEND (a, FB (buf, len));
    //  A HELLO with another role is refused (the aggregator stays as it was)
    ami_msg_reset (g.msg, AMI_MSG_HELLO);
    snprintf (g.msg->hello.role, sizeof g.msg->hello.role, "meter");
    snprintf (g.msg->hello.node_id, sizeof g.msg->hello.node_id, "AGG-T");
    assert_int_equal (ami_msg_encode (g.msg, buf, sizeof buf, &len), AMI_OK);
    SEND (a, FB (buf, len));

    //  A listed aggregator claiming another's node id gets no service
    agg_t liar;
    s_agg_open (&liar, fx.he_endpoint [0], g.he [0], g.agg_x, "AGG-Z", true);
    //  MDMS side: garbage to the head end's uplink
    bool ok;
    WAIT_UNTIL (&fx, ok, fx.ingest.he1 != NULL, WAIT_MS);
    assert_true (ok);
    zframe_t *he1 = fx.ingest.he1;
    SEND (fx.ingest.sock, FB (zframe_data (he1), zframe_size (he1)), F ("junk"));
    SEND (fx.ingest.sock, FB (zframe_data (he1), zframe_size (he1)), F ("a"), F ("b"));
    SEND (fx.ingest.sock, FB (zframe_data (he1), zframe_size (he1)),
          FB (g.agg_health, g.agg_health_size));       //  unexpected type

    //  Still serving: reads work, the aggregator is still live
    s_read_ok (&fx);
    s_read_ok (&fx);
    size_t aggs;
    char line [64];
    for (int i = 0; i < 10; i++) {                      //  a few heartbeats
        s_agg_pump (&liar);
        s_pump (&fx);
        zclock_sleep (HB_MS / 5);
    }
    s_he_status (&fx, 0, &aggs, NULL, NULL, line, sizeof line);
    assert_int_equal (aggs, 1);                         //  AGG-Z refused
    assert_string_equal (line, "AGG-T 1 0");
    assert_int_equal (fx.agg [0].others, 0);
    s_agg_close (&liar);
    s_fx_stop (&fx);
}

/*  A silent aggregator expires after ~3 heartbeats: its request in flight
    gets ERROR NO_ROUTE, MMI says 404; when it talks again the head end
    (not knowing it) answers HELLO, it re-introduces itself, and the
    service is back. */
static void
test_aggregator_expiry (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    s_read_ok (&fx);

    agg_t *agg = &fx.agg [0];
    agg->answer = false;
    uint8_t id [AMI_REQUEST_ID_SIZE], req [512];
    s_new_id (id);
    size_t len = s_read_req (id, s_soon (), req, sizeof req);
    s_request (&fx, req, len);
    bool ok;
    WAIT_UNTIL (&fx, ok, agg->reads == 2, WAIT_MS);
    assert_true (ok);
    size_t in_flight;
    s_he_status (&fx, 0, NULL, NULL, &in_flight, NULL, 0);
    assert_int_equal (in_flight, 1);

    agg->beat = false;                      //  goes silent
    int64_t silent = zclock_mono ();
    zmsg_t *body = s_reply (&fx, SERVICE, WAIT_MS);
    int64_t elapsed = zclock_mono () - silent;
    assert_non_null (body);
    assert_int_equal (s_error_code (zmsg_first (body), id, "HE-1"), AMI_E_NO_ROUTE);
    zmsg_destroy (&body);
    //  Not before 3 heartbeats since it was last heard (a HEALTH may have
    //  left just before `silent`)
    assert_true (elapsed >= 3 * HB_MS - HB_MS - 10);
    assert_true (s_wait_mmi (&fx, "404"));
    size_t aggs, workers;
    s_he_status (&fx, 0, &aggs, &workers, &in_flight, NULL, 0);
    assert_int_equal (aggs, 0);
    assert_int_equal (workers, 0);
    assert_int_equal (in_flight, 0);

    //  It talks again (HEALTH): unknown routing id -> the head end's HELLO
    //  -> the aggregator's new HELLO -> live again
    agg->held_count = 0;
    agg->answer = true;
    agg->beat = true;
    WAIT_UNTIL (&fx, ok, agg->hellos >= 1, WAIT_MS);
    assert_true (ok);
    assert_true (s_wait_mmi (&fx, "200"));
    s_read_ok (&fx);

    //  Its connection drops: a request is answered NO_ROUTE (at once when
    //  the ROUTER already knows the peer is gone, else at its expiry)
    s_agg_close (agg);
    s_new_id (id);
    len = s_read_req (id, s_soon (), req, sizeof req);
    s_request (&fx, req, len);
    body = s_reply (&fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_int_equal (s_error_code (zmsg_first (body), id, "HE-1"), AMI_E_NO_ROUTE);
    zmsg_destroy (&body);
    s_fx_stop (&fx);
}

/*  An aggregator that reconnects (new connection, same certificate) keeps
    its service and its workers; reads go over the new connection. */
static void
test_aggregator_reconnect (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    s_read_ok (&fx);
    char before [64];
    s_broker_line (&fx, before, sizeof before);
    assert_string_equal (before, SERVICE " 1 0");

    s_agg_close (&fx.agg [0]);
    s_fx_agg (&fx, 0, 0);                   //  new socket, new routing id
    //  Its HEALTH is forwarded only once its HELLO moved the route
    bool ok;
    int forwarded = fx.ingest.agg_fwd;
    WAIT_UNTIL (&fx, ok, fx.ingest.agg_fwd > forwarded, WAIT_MS);
    assert_true (ok);
    s_read_ok (&fx);
    assert_int_equal (fx.agg [0].hellos, 0);    //  it was never unknown
    size_t aggs, workers;
    char line [64];
    s_he_status (&fx, 0, &aggs, &workers, NULL, line, sizeof line);
    assert_int_equal (aggs, 1);
    assert_int_equal (workers, 1);
    assert_string_equal (line, "AGG-T 1 0");
    assert_true (s_broker_line_is (&fx, SERVICE " 1 0"));
    s_fx_stop (&fx);
}

/*  A command nobody answers before it expires (plus the margin) gets ERROR
    TIMEOUT, freeing the worker; a late answer is dropped. */
static void
test_request_timeout (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 100);            //  100 ms margin
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    agg_t *agg = &fx.agg [0];
    agg->answer = false;
    uint8_t id [AMI_REQUEST_ID_SIZE], req [512];
    s_new_id (id);
    size_t len = s_read_req (id, (uint64_t) zclock_time () + 200, req, sizeof req);
    int64_t sent = zclock_mono ();
    s_request (&fx, req, len);
    zmsg_t *body = s_reply (&fx, SERVICE, WAIT_MS);
    assert_non_null (body);
    assert_true (zclock_mono () - sent >= 250);     //  200 + 100 - clock slack
    assert_int_equal (s_error_code (zmsg_first (body), id, "HE-1"), AMI_E_TIMEOUT);
    zmsg_destroy (&body);
    assert_int_equal (agg->reads, 1);

    //  The late answer goes nowhere
    s_agg_answer_held (agg);
    body = s_reply (&fx, SERVICE, QUIET_MS);
    assert_null (body);
    //  and the (only) worker serves the next request
    agg->answer = true;
    s_read_ok (&fx);
    s_fx_stop (&fx);
}

/*  K = 2: two reads to one aggregator are in flight at once through one
    head end; a third waits at the broker until a worker is free. */
static void
test_worker_pool (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 2, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    bool ok;
    WAIT_UNTIL (&fx, ok, s_broker_line_is (&fx, SERVICE " 2 0"), WAIT_MS);
    assert_true (ok);

    agg_t *agg = &fx.agg [0];
    agg->answer = false;
    uint8_t ids [3][AMI_REQUEST_ID_SIZE], req [512];
    for (int i = 0; i < 3; i++) {
        s_new_id (ids [i]);
        size_t len = s_read_req (ids [i], s_soon (), req, sizeof req);
        s_request (&fx, req, len);
    }
    WAIT_UNTIL (&fx, ok, agg->reads == 2, WAIT_MS);
    assert_true (ok);
    size_t in_flight;
    s_he_status (&fx, 0, NULL, NULL, &in_flight, NULL, 0);
    assert_int_equal (in_flight, 2);
    WAIT_UNTIL (&fx, ok, agg->reads > 2, 3 * HB_MS);
    assert_false (ok);                      //  the third waits its turn

    agg->answer = true;
    s_agg_answer_held (agg);
    bool seen [3] = { false, false, false };
    for (int n = 0; n < 3; n++) {
        zmsg_t *body = s_reply (&fx, SERVICE, WAIT_MS);
        assert_non_null (body);
        zframe_t *frame = zmsg_first (body);
        assert_int_equal (ami_msg_decode (g.msg, zframe_data (frame), zframe_size (frame)),
                          AMI_OK);
        assert_int_equal (g.msg->type, AMI_MSG_READ_RESP);
        for (int i = 0; i < 3; i++)
            if (memcmp (g.msg->read_resp.request_id, ids [i], AMI_REQUEST_ID_SIZE) == 0)
                seen [i] = true;
        zmsg_destroy (&body);
    }
    assert_true (seen [0] && seen [1] && seen [2]);
    assert_int_equal (agg->reads, 3);
    s_fx_stop (&fx);
}

/*  The MDMS retries a request id (new counter) while the first attempt is
    still in flight: the aggregator's one answer answers both attempts,
    freeing both workers. */
static void
test_retry_same_id (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 2, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    bool ok;
    WAIT_UNTIL (&fx, ok, s_broker_line_is (&fx, SERVICE " 2 0"), WAIT_MS);
    assert_true (ok);
    agg_t *agg = &fx.agg [0];
    agg->answer = false;
    uint8_t id [AMI_REQUEST_ID_SIZE], req [512];
    s_new_id (id);
    size_t len = s_read_req (id, s_soon (), req, sizeof req);
    s_request (&fx, req, len);
    WAIT_UNTIL (&fx, ok, agg->reads == 1, WAIT_MS);
    assert_true (ok);
    len = s_read_req (id, s_soon () + 1000, req, sizeof req);     //  the retry
    s_request (&fx, req, len);
    WAIT_UNTIL (&fx, ok, agg->reads == 2, WAIT_MS);
    assert_true (ok);
    size_t in_flight;
    s_he_status (&fx, 0, NULL, NULL, &in_flight, NULL, 0);
    assert_int_equal (in_flight, 2);

    agg->held_count = 1;                    //  the aggregator answers once
    s_agg_answer_held (agg);
    for (int i = 0; i < 2; i++) {
        zmsg_t *body = s_reply (&fx, SERVICE, WAIT_MS);
        assert_non_null (body);
        assert_true (s_frame_is (zmsg_first (body), agg->resp, agg->resp_size));
        zmsg_destroy (&body);
    }
    s_he_status (&fx, 0, NULL, NULL, &in_flight, NULL, 0);
    assert_int_equal (in_flight, 0);
    agg->answer = true;
    s_read_ok (&fx);                        //  both workers are free
    s_read_ok (&fx);
    s_fx_stop (&fx);
}

/*  An unlisted CURVE key gets nothing from the head end's ROUTER; a listed
    aggregator that says HEALTH before HELLO is answered with HELLO. */
static void
test_unlisted_key (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    agg_t stranger;
    s_agg_open (&stranger, fx.he_endpoint [0], g.he [0], g.stranger, "AGG-T", true);
    agg_t listed;
    s_agg_open (&listed, fx.he_endpoint [0], g.he [0], g.agg_x, "AGG-X", false);
    listed.answer = false;
    listed.beat = true;
    //  Only HEALTH from the listed one: the head end answers HELLO and
    //  the fake re-introduces itself (as a child must)
    int64_t deadline = zclock_mono () + QUIET_MS;
    while (zclock_mono () < deadline) {
        s_agg_pump (&stranger);
        s_agg_pump (&listed);
        zclock_sleep (POLL_MS);
    }
    assert_int_equal (stranger.hellos + stranger.reads + stranger.others, 0);
    assert_true (listed.hellos >= 1);
    size_t aggs;
    char line [64];
    s_he_status (&fx, 0, &aggs, NULL, NULL, line, sizeof line);
    assert_int_equal (aggs, 1);
    assert_string_equal (line, "AGG-X 1 0");           //  the stranger: nothing
    s_agg_close (&stranger);
    s_agg_close (&listed);
    s_fx_stop (&fx);
}

/*  Two head ends serve one aggregator: the broker has 2 workers for it,
    and stopping one head end keeps reads working through the other. */
static void
test_two_headends (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 2, 1, 0);
    s_fx_agg (&fx, 0, 0);                   //  AGG-T -> HE-1
    s_fx_agg (&fx, 1, 1);                   //  AGG-T -> HE-2
    bool ok;
    WAIT_UNTIL (&fx, ok, s_broker_line_is (&fx, SERVICE " 2 0"), WAIT_MS);
    assert_true (ok);
    int served [2] = { 0, 0 };
    for (int i = 0; i < 6; i++)
        served [s_read_ok (&fx)]++;
    assert_int_equal (served [0] + served [1], 6);
    assert_true (served [0] > 0 && served [1] > 0);     //  both in service
    WAIT_UNTIL (&fx, ok, fx.ingest.hellos [0] >= 1 && fx.ingest.hellos [1] >= 1
                && fx.ingest.healths [1] >= 1, WAIT_MS);
    assert_true (ok);

    //  Stop HE-1: it DISCONNECTs its worker, the broker keeps HE-2's
    s_he_stop (&fx, 0);
    WAIT_UNTIL (&fx, ok, s_broker_line_is (&fx, SERVICE " 1 0"), WAIT_MS);
    assert_true (ok);
    char code [4];
    s_mmi (&fx, code);
    assert_string_equal (code, "200");
    for (int i = 0; i < 4; i++)
        assert_int_equal (s_read_ok (&fx), 1);
    s_fx_stop (&fx);
}


/* ---------------------------------------------------------------------- */
/*  The worker side of MDP/0.1 against a hand-driven broker                 */

typedef struct {
    zsock_t *sock;
    zframe_t *worker;           /* routing id of the worker of interest */
    int heartbeats;             /* HEARTBEATs from it */
    int disconnects;            /* DISCONNECTs from it */
    zmsg_t *ready;              /* last READY seen: [id, service] */
    zmsg_t *reply;              /* last REPLY seen: [id, client, "", body...] */
} fake_broker_t;

/*  Read everything the worker(s) sent; check the RFC 7 header. */
static void
s_fb_pump (fake_broker_t *fb)
{
    while (zsock_events (fb->sock) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (fb->sock);
        assert_non_null (msg);
        assert_true (zmsg_size (msg) >= 4);
        zframe_t *id = zmsg_pop (msg);
        zframe_t *f = zmsg_pop (msg);
        assert_true (s_frame_is (f, "", 0));
        zframe_destroy (&f);
        f = zmsg_pop (msg);
        assert_true (s_frame_str (f, W_HEADER));
        zframe_destroy (&f);
        zframe_t *command = zmsg_pop (msg);
        assert_int_equal (zframe_size (command), 1);
        byte cmd = *zframe_data (command);
        zframe_destroy (&command);
        bool mine = fb->worker && zframe_eq (id, fb->worker);
        if (cmd == 0x01) {                              //  READY
            assert_int_equal (zmsg_size (msg), 1);
            zmsg_destroy (&fb->ready);
            zmsg_prepend (msg, &id);
            fb->ready = msg;
            msg = NULL;
        }
        else
        if (cmd == 0x03) {                              //  REPLY
            assert_true (mine);
            zmsg_destroy (&fb->reply);
            zmsg_prepend (msg, &id);
            fb->reply = msg;
            msg = NULL;
        }
        else
        if (cmd == 0x04) {                              //  HEARTBEAT
            assert_int_equal (zmsg_size (msg), 0);
            if (mine)
                fb->heartbeats++;
        }
        else {
            assert_int_equal (cmd, 0x05);               //  DISCONNECT
            assert_int_equal (zmsg_size (msg), 0);
            if (mine)
                fb->disconnects++;
        }
        zframe_destroy (&id);
        zmsg_destroy (&msg);
    }
}

/*  Wait for a READY for SERVICE from a worker other than fb->worker, and
    make it the worker of interest. Heartbeats every worker it knows. */
static bool
s_fb_wait_ready (fake_broker_t *fb, agg_t *agg, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        s_agg_pump (agg);
        s_fb_pump (fb);
        if (fb->ready) {
            zframe_t *id = zmsg_first (fb->ready);
            bool fresh = !fb->worker || !zframe_eq (id, fb->worker);
            assert_true (s_frame_str (zmsg_next (fb->ready), SERVICE));
            if (fresh) {
                zframe_destroy (&fb->worker);
                fb->worker = zframe_dup (id);
                fb->heartbeats = fb->disconnects = 0;
                zmsg_destroy (&fb->ready);
                return true;
            }
            zmsg_destroy (&fb->ready);
        }
        zclock_sleep (POLL_MS);
    }
    return false;
}

/*  Run for ms, heartbeating the worker every HB_MS if beat. */
static void
s_fb_run (fake_broker_t *fb, agg_t *agg, int ms, bool beat)
{
    int64_t end = zclock_mono () + ms, next = zclock_mono ();
    while (zclock_mono () < end) {
        if (beat && zclock_mono () >= next) {
            SEND (fb->sock, FB (zframe_data (fb->worker), zframe_size (fb->worker)),
                  F (""), F (W_HEADER), FB ("\x04", 1));
            next += HB_MS;
        }
        s_agg_pump (agg);
        s_fb_pump (fb);
        zclock_sleep (POLL_MS);
    }
}

static void
test_mdp_worker (void **state)
{
    (void) state;
    fake_broker_t fb;
    memset (&fb, 0, sizeof fb);
    fb.sock = zsock_new (ZMQ_ROUTER);
    assert_non_null (fb.sock);
    zsock_set_linger (fb.sock, 0);
    assert_int_equal (ami_auth_server (fb.sock, g.broker), AMI_OK);
    assert_true (zsock_bind (fb.sock, "tcp://127.0.0.1:*") > 0);
    char *endpoint = zsock_last_endpoint (fb.sock);

    fx_t fx;
    memset (&fx, 0, sizeof fx);
    fx.broker_endpoint = endpoint;
    ami_headend_config_t config = s_he_config (&fx, 0, 1);
    config.mdms = NULL;                     //  no uplink in this test
    s_he_start (&fx, 0, &config);
    agg_t *agg = &fx.agg [0];
    s_fx_agg (&fx, 0, 0);

    //  READY "", "MDPW01", 0x01, "agg.AGG-T" after the HELLO
    assert_true (s_fb_wait_ready (&fb, agg, WAIT_MS));
    //  Idle, it heartbeats at the broker's interval
    s_fb_run (&fb, agg, 5 * HB_MS, true);
    assert_true (fb.heartbeats >= 3);

    //  Malformed broker traffic is dropped
    zframe_t *w = fb.worker;
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F ("junk"));
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER));
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER), FB ("\x09", 1));
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F ("MDPX01"), FB ("\x02", 1));
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER), FB ("\x02", 1),
          F ("CLIENT-1"));                                  //  REQUEST, no body
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER), FB ("\x04", 1),
          F ("extra"));
    //  then a valid REQUEST is served: frame down unchanged, REPLY with
    //  the client envelope and the READ_RESP unchanged
    uint8_t id [AMI_REQUEST_ID_SIZE], req [512];
    s_new_id (id);
    size_t len = s_read_req (id, s_soon (), req, sizeof req);
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER), FB ("\x02", 1),
          F ("CLIENT-1"), F (""), FB (req, len));
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!fb.reply && zclock_mono () < deadline)
        s_fb_run (&fb, agg, POLL_MS, false);
    assert_non_null (fb.reply);
    assert_int_equal (agg->reads, 1);
    assert_memory_equal (agg->req, req, len);
    assert_int_equal (zmsg_size (fb.reply), 4);
    assert_true (zframe_eq (zmsg_first (fb.reply), w));
    assert_true (s_frame_str (zmsg_next (fb.reply), "CLIENT-1"));
    assert_true (s_frame_is (zmsg_next (fb.reply), "", 0));
    assert_true (s_frame_is (zmsg_next (fb.reply), agg->resp, agg->resp_size));
    zmsg_destroy (&fb.reply);

    //  Busy (the aggregator holds the answer), it still heartbeats
    agg->answer = false;
    s_new_id (id);
    len = s_read_req (id, s_soon (), req, sizeof req);
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER), FB ("\x02", 1),
          F ("CLIENT-2"), F (""), FB (req, len));
    fb.heartbeats = 0;
    s_fb_run (&fb, agg, 5 * HB_MS, true);
    assert_int_equal (agg->reads, 2);
    assert_null (fb.reply);
    assert_true (fb.heartbeats >= 3);
    s_agg_answer_held (agg);
    agg->answer = true;
    deadline = zclock_mono () + WAIT_MS;
    while (!fb.reply && zclock_mono () < deadline)
        s_fb_run (&fb, agg, POLL_MS, false);
    assert_non_null (fb.reply);
    zmsg_first (fb.reply);                  //  the worker's routing id
    assert_true (s_frame_str (zmsg_next (fb.reply), "CLIENT-2"));
    zmsg_destroy (&fb.reply);

    //  DISCONNECT from the broker: a new socket says READY again
    SEND (fb.sock, FB (zframe_data (w), zframe_size (w)), F (""), F (W_HEADER), FB ("\x05", 1));
    assert_true (s_fb_wait_ready (&fb, agg, WAIT_MS));

    //  A silent broker: after liveness * heartbeat the worker DISCONNECTs
    //  and comes back with a new socket and READY
    zframe_t *old = zframe_dup (fb.worker);
    int64_t silent = zclock_mono ();        //  nothing sent to the new one yet
    assert_true (s_fb_wait_ready (&fb, agg, WAIT_MS));
    //  (the worker opened a moment before `silent`: allow for that)
    assert_true (zclock_mono () - silent >= 2 * HB_MS);
    assert_false (zframe_eq (old, fb.worker));
    zframe_destroy (&old);

    //  Stopping the head end: its worker says DISCONNECT
    s_he_stop (&fx, 0);
    deadline = zclock_mono () + WAIT_MS;
    while (fb.disconnects == 0 && zclock_mono () < deadline)
        s_fb_run (&fb, agg, POLL_MS, false);
    assert_int_equal (fb.disconnects, 1);
    s_agg_close (agg);
    zframe_destroy (&fb.worker);
    zmsg_destroy (&fb.ready);
    zmsg_destroy (&fb.reply);
    zsock_destroy (&fb.sock);
    zstr_free (&endpoint);
}

/*  Interval data: each aggregator's BATCH reaches the MDMS byte for byte
    (a full 1024-block one too), and each BATCH_ACK goes back, byte for
    byte, to the aggregator that sent that batch - not to the other one.
    A batch id another aggregator has in flight is answered BUSY; a resend
    through the same head end is forwarded again and each copy's ack
    relayed; acks for no batch (unknown, or already answered) are orphans. */
static void
test_batch_relay (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_two_aggs (&fx, NULL);
    agg_t *t = &fx.agg [0], *x = &fx.agg [1];
    const uint64_t id_t = 0xfedcba9876543210ULL, id_x = 0x0123456789abcdefULL;
    size_t len_t, len_x;
    uint8_t *batch_t = s_batch (id_t, "AGG-T", AMI_MAX_BATCH_BLOCKS, 200, &len_t);
    assert_true (len_t > 200 * AMI_MAX_BATCH_BLOCKS);
    uint8_t *batch_x = s_batch (id_x, "AGG-X", 2, 40, &len_x);
    s_agg_send (t, batch_t, len_t);
    s_agg_send (x, batch_x, len_x);
    bool ok;
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 2, WAIT_MS);
    assert_true (ok);
    int first = s_frame_is (fx.ingest.batch [0], batch_t, len_t) ? 0 : 1;
    assert_true (s_frame_is (fx.ingest.batch [first], batch_t, len_t));
    assert_true (s_frame_is (fx.ingest.batch [1 - first], batch_x, len_x));
    assert_int_equal (s_he_stat (&fx, 0, "batches_relayed"), 2);
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 2);

    //  AGG-X reusing AGG-T's batch id in flight: its ack could not be
    //  told apart, so it is answered BUSY (credit 1) and not forwarded
    s_agg_batch (x, id_t, "AGG-X");
    WAIT_UNTIL (&fx, ok, x->acks == 1, WAIT_MS);
    assert_true (ok);
    assert_true (x->last_ack.batch_id == id_t);
    assert_int_equal (x->last_ack.status, AMI_E_BUSY);
    assert_int_equal (x->last_ack.credit, 1);
    assert_int_equal (s_he_stat (&fx, 0, "batches_busy"), 1);
    assert_int_equal (s_he_stat (&fx, 0, "batches_relayed"), 2);

    //  The MDMS acks in the other order: each ack to its own aggregator,
    //  bytes unchanged
    uint8_t ack_t [32], ack_x [32];
    size_t ack_x_len = s_ingest_ack (&fx, id_x, AMI_OK, 3, ack_x, sizeof ack_x);
    size_t ack_t_len = s_ingest_ack (&fx, id_t, AMI_OK, 2, ack_t, sizeof ack_t);
    WAIT_UNTIL (&fx, ok, t->acks == 1 && x->acks == 2, WAIT_MS);
    assert_true (ok);
    assert_int_equal (t->ack_size, ack_t_len);
    assert_memory_equal (t->ack, ack_t, ack_t_len);
    assert_int_equal (x->ack_size, ack_x_len);
    assert_memory_equal (x->ack, ack_x, ack_x_len);
    assert_int_equal (s_he_stat (&fx, 0, "acks_relayed"), 2);
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 0);

    //  Orphans: the same ack again, and an ack for a batch never seen
    s_ingest_ack (&fx, id_t, AMI_OK, 2, ack_t, sizeof ack_t);
    s_ingest_ack (&fx, 42, AMI_OK, 2, ack_t, sizeof ack_t);
    assert_true (s_wait_stat (&fx, 0, "acks_orphan", 2));
    assert_int_equal (s_he_stat (&fx, 0, "acks_relayed"), 2);

    //  A resend through this head end (twice): each copy forwarded, each
    //  copy's ack relayed, then the entry is gone
    s_agg_send (x, batch_x, len_x);
    s_agg_send (x, batch_x, len_x);
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 4, WAIT_MS);
    assert_true (ok);
    assert_true (s_frame_is (fx.ingest.batch [2], batch_x, len_x));
    assert_true (s_frame_is (fx.ingest.batch [3], batch_x, len_x));
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 1);
    s_ingest_ack (&fx, id_x, AMI_OK, 4, ack_x, sizeof ack_x);
    s_ingest_ack (&fx, id_x, AMI_OK, 4, ack_x, sizeof ack_x);
    WAIT_UNTIL (&fx, ok, x->acks == 4, WAIT_MS);
    assert_true (ok);
    assert_int_equal (x->last_ack.credit, 4);
    assert_int_equal (t->acks, 1);
    assert_int_equal (s_he_stat (&fx, 0, "acks_relayed"), 4);
    assert_int_equal (s_he_stat (&fx, 0, "acks_orphan"), 2);
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 0);

    //  Health of both aggregators and their fleets still flows
    WAIT_UNTIL (&fx, ok, fx.ingest.agg_fwd >= 1 && fx.ingest.fleet_fwd >= 1
                && fx.ingest.aggx_fwd >= 1 && fx.ingest.fleetx_fwd >= 1, WAIT_MS);
    assert_true (ok);
    assert_int_equal (fx.ingest.spoofed, 0);
    assert_int_equal (t->others + x->others, 0);
    free (batch_t);
    free (batch_x);
    s_fx_stop (&fx);
}

/*  SEC-INT-4: a listed, live aggregator (AGG-X) cannot inject interval
    data under another origin: the batch is dropped, counted, not acked. */
static void
test_sec_int_4_batch_origin_spoof (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_two_aggs (&fx, NULL);
    agg_t *x = &fx.agg [1];
    s_agg_batch (x, 77, "AGG-T");           //  the other aggregator's name
    s_agg_batch (x, 78, "AGG-Z");           //  a name nobody has
    assert_true (s_wait_stat (&fx, 0, "batches_refused", 2));
    assert_int_equal (s_he_stat (&fx, 0, "batches_relayed"), 0);
    assert_int_equal (s_he_stat (&fx, 0, "batches_busy"), 0);
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 0);

    //  Its own batch still goes through (the head end keeps serving it)
    s_agg_batch (x, 79, "AGG-X");
    bool ok;
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 1, WAIT_MS);
    assert_true (ok);
    zframe_t *frame = fx.ingest.batch [0];
    assert_int_equal (ami_msg_decode (g.msg, zframe_data (frame), zframe_size (frame)),
                      AMI_OK);
    assert_int_equal (g.msg->type, AMI_MSG_BATCH);
    assert_true (g.msg->batch.batch_id == 79);
    assert_string_equal (g.msg->batch.origin, "AGG-X");
    assert_int_equal (x->acks, 0);
    assert_int_equal (s_he_stat (&fx, 0, "batches_refused"), 2);
    s_fx_stop (&fx);
}

/*  SEC-INT-4: an aggregator's HEALTH is forwarded only under its own node
    id (role aggregator) or as a fleet's (role meter): a captured
    aggregator cannot add or overwrite the MDMS's status rows of another
    aggregator, a head end or the MDMS. */
static void
test_sec_int_4_health_spoof (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_two_aggs (&fx, NULL);
    agg_t *x = &fx.agg [1];
    static const struct { const char *role, *node; } spoofs [] = {
        { "aggregator", "AGG-T" },          //  evict/overwrite a neighbour
        { "aggregator", "AGG-Z" },          //  invent an aggregator
        { "headend", "HE-2" },              //  pose as a head end
        { "mdms", "MDMS-T" },               //  pose as the MDMS
        { "broker", "BROKER-T" },
    };
    size_t count = sizeof spoofs / sizeof spoofs [0];
    for (size_t i = 0; i < count; i++) {
        uint8_t buf [256];
        size_t len = s_health_state (spoofs [i].role, spoofs [i].node,
                                     AMI_STATE_DOWN, buf, sizeof buf);
        s_agg_send (x, buf, len);
    }
    assert_true (s_wait_stat (&fx, 0, "health_refused", count));
    //  Its own HEALTH and its fleet's go through, byte for byte, and
    //  AGG-T's own are untouched; no spoof reached the MDMS
    bool ok;
    int aggx = fx.ingest.aggx_fwd, fleetx = fx.ingest.fleetx_fwd;
    int agg = fx.ingest.agg_fwd;
    WAIT_UNTIL (&fx, ok, fx.ingest.aggx_fwd > aggx && fx.ingest.fleetx_fwd > fleetx
                && fx.ingest.agg_fwd > agg, WAIT_MS);
    assert_true (ok);
    assert_int_equal (fx.ingest.spoofed, 0);
    assert_int_equal (fx.ingest.meta_mismatch, 0);
    assert_int_equal (s_he_stat (&fx, 0, "health_refused"), count);
    //  Still live and served
    size_t aggs;
    s_he_status (&fx, 0, &aggs, NULL, NULL, NULL, 0);
    assert_int_equal (aggs, 2);
    s_fx_stop (&fx);
}

/*  No MDMS connection: a BATCH is answered BUSY (credit 1) by the head
    end itself and nothing is queued; once the MDMS is back the resent
    batch goes through and its ack comes back. Without an uplink
    configured at all: BUSY too. */
static void
test_batch_busy_no_mdms (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 0, 1, 0);
    //  The MDMS is down: its endpoint is an IPC path nobody has bound yet.
    //  (Not a closed TCP port: libzmq's reconnects to a free loopback port
    //  in the ephemeral range can connect to themselves and hold it.)
    zsock_destroy (&fx.ingest.sock);
    zstr_free (&fx.ingest.endpoint);
    char *ipc = ami_test_path (g.dir, "ingest.ipc");
    fx.ingest.endpoint = zsys_sprintf ("ipc://%s", ipc);
    free (ipc);
    assert_non_null (fx.ingest.endpoint);
    ami_headend_config_t config = s_he_config (&fx, 0, 1);
    s_he_start (&fx, 0, &config);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_aggs (&fx, 0, 1));
    agg_t *t = &fx.agg [0];
    s_agg_batch (t, 500, "AGG-T");
    bool ok;
    WAIT_UNTIL (&fx, ok, t->acks == 1, WAIT_MS);
    assert_true (ok);
    assert_true (t->last_ack.batch_id == 500);
    assert_int_equal (t->last_ack.status, AMI_E_BUSY);
    assert_int_equal (t->last_ack.credit, 1);
    assert_int_equal (s_he_stat (&fx, 0, "batches_busy"), 1);
    assert_int_equal (s_he_stat (&fx, 0, "batches_relayed"), 0);
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 0);

    //  The MDMS comes up at that endpoint: the head end connects and says
    //  HELLO, and the aggregator's resend goes through
    fx.ingest.sock = zsock_new (ZMQ_ROUTER);
    assert_non_null (fx.ingest.sock);
    zsock_set_linger (fx.ingest.sock, 0);
    assert_int_equal (ami_auth_server (fx.ingest.sock, g.mdms), AMI_OK);
    assert_int_equal (zsock_bind (fx.ingest.sock, "%s", fx.ingest.endpoint), 0);
    WAIT_UNTIL (&fx, ok, fx.ingest.hellos [0] >= 1, WAIT_MS);
    assert_true (ok);
    s_agg_batch (t, 500, "AGG-T");
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 1, WAIT_MS);
    assert_true (ok);
    uint8_t ack [32];
    size_t ack_len = s_ingest_ack (&fx, 500, AMI_OK, 4, ack, sizeof ack);
    WAIT_UNTIL (&fx, ok, t->acks == 2, WAIT_MS);
    assert_true (ok);
    assert_memory_equal (t->ack, ack, ack_len);
    assert_int_equal (s_he_stat (&fx, 0, "batches_busy"), 1);

    //  A head end without an uplink answers BUSY as well
    config = s_he_config (&fx, 1, 1);
    config.mdms = NULL;
    s_he_start (&fx, 1, &config);
    agg_t *t2 = &fx.agg [1];
    s_agg_open (t2, fx.he_endpoint [1], g.he [1], g.agg, "AGG-T", true);
    assert_true (s_wait_aggs (&fx, 1, 1));
    s_agg_batch (t2, 600, "AGG-T");
    WAIT_UNTIL (&fx, ok, t2->acks == 1, WAIT_MS);
    assert_true (ok);
    assert_int_equal (t2->last_ack.status, AMI_E_BUSY);
    assert_int_equal (s_he_stat (&fx, 1, "batches_busy"), 1);
    s_fx_stop (&fx);
}

/*  The batch table is bounded per aggregator (over it: BUSY, and other
    aggregators are unaffected) and forgets unacknowledged batches after
    batch_expiry_ms; a later ack is an orphan. */
static void
test_batch_bounds (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 0, 1, 0);
    ami_headend_config_t config = s_he_config (&fx, 0, 1);
    config.batches_per_aggregator = 2;
    config.batch_expiry_ms = 1000;
    s_fx_two_aggs (&fx, &config);
    agg_t *t = &fx.agg [0], *x = &fx.agg [1];
    s_agg_batch (t, 1, "AGG-T");
    s_agg_batch (t, 2, "AGG-T");
    s_agg_batch (t, 3, "AGG-T");
    bool ok;
    WAIT_UNTIL (&fx, ok, t->acks == 1 && fx.ingest.batches == 2, WAIT_MS);
    assert_true (ok);
    assert_true (t->last_ack.batch_id == 3);
    assert_int_equal (t->last_ack.status, AMI_E_BUSY);
    assert_int_equal (s_he_stat (&fx, 0, "batches_inflight"), 2);
    assert_int_equal (s_he_stat (&fx, 0, "batches_busy"), 1);
    //  AGG-X has its own bound
    s_agg_batch (x, 11, "AGG-X");
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 3, WAIT_MS);
    assert_true (ok);

    //  Nothing acked: the entries expire, a late ack is an orphan
    assert_true (s_wait_stat (&fx, 0, "batches_inflight", 0));
    uint8_t ack [32];
    s_ingest_ack (&fx, 1, AMI_OK, 4, ack, sizeof ack);
    assert_true (s_wait_stat (&fx, 0, "acks_orphan", 1));
    assert_int_equal (s_he_stat (&fx, 0, "acks_relayed"), 0);
    //  and AGG-T has room again
    s_agg_batch (t, 4, "AGG-T");
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 4, WAIT_MS);
    assert_true (ok);
    s_ingest_ack (&fx, 4, AMI_OK, 4, ack, sizeof ack);
    WAIT_UNTIL (&fx, ok, t->acks == 2, WAIT_MS);
    assert_true (ok);
    assert_int_equal (t->last_ack.status, AMI_OK);
    assert_int_equal (t->acks, 2);
    assert_int_equal (x->acks, 0);
    s_fx_stop (&fx);
}

/*  Malformed interval-data frames from either side are dropped and
    counted; the head end keeps relaying batches, acks and reads. */
static void
test_batch_malformed (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_two_aggs (&fx, NULL);
    agg_t *t = &fx.agg [0];
    uint64_t bad = s_he_stat (&fx, 0, "bad-frames");
    size_t len;
    uint8_t *batch = s_batch (9, "AGG-T", 3, 40, &len);
    uint8_t *longer = (uint8_t *) malloc (len + 1);
    assert_non_null (longer);
    memcpy (longer, batch, len);
    longer [len] = 0xc0;
    //  From the aggregator: cut short, trailing byte, two frames, and a
    //  BATCH_ACK (the wrong way)
    SEND (t->sock, FB (batch, len - 1));
    SEND (t->sock, FB (longer, len + 1));
    SEND (t->sock, FB (batch, len), F ("extra"));
    uint8_t ack [32];
    ami_msg_reset (g.msg, AMI_MSG_BATCH_ACK);
    g.msg->batch_ack.batch_id = 9;
    size_t ack_len = 0;
    assert_int_equal (ami_msg_encode (g.msg, ack, sizeof ack, &ack_len), AMI_OK);
    SEND (t->sock, FB (ack, ack_len));
    //  From the MDMS: a BATCH_ACK cut short, one with a second frame
    zframe_t *he = fx.ingest.he1;
    SEND (fx.ingest.sock, FB (zframe_data (he), zframe_size (he)), FB (ack, ack_len - 1));
    SEND (fx.ingest.sock, FB (zframe_data (he), zframe_size (he)), FB (ack, ack_len),
          F ("extra"));
    assert_true (s_wait_stat (&fx, 0, "bad-frames", bad + 6));
    assert_int_equal (s_he_stat (&fx, 0, "batches_relayed"), 0);
    assert_int_equal (s_he_stat (&fx, 0, "acks_orphan"), 0);

    //  Still serving: the batch and its ack, and a read
    SEND (t->sock, FB (batch, len));
    bool ok;
    WAIT_UNTIL (&fx, ok, fx.ingest.batches == 1, WAIT_MS);
    assert_true (ok);
    assert_true (s_frame_is (fx.ingest.batch [0], batch, len));
    s_ingest_ack (&fx, 9, AMI_OK, 4, ack, sizeof ack);
    WAIT_UNTIL (&fx, ok, t->acks == 1, WAIT_MS);
    assert_true (ok);
    assert_int_equal (t->last_ack.status, AMI_OK);
    s_read_ok (&fx);
    free (batch);
    free (longer);
    s_fx_stop (&fx);
}

/*  SEC-VAL-2: an ERROR text with LF and ESC from an aggregator is logged
    by the head end as one line, escaped: it cannot forge a log line or
    drive the operator's terminal. */
static void
test_sec_val_2_headend_log (void **state)
{
    (void) state;
    char *path = ami_test_path (g.dir, "headend.log");
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    ami_log_set_level (AMI_LOG_WARN);
    zsys_set_logstream (file);
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_aggs (&fx, 0, 1));
    uint8_t buf [512];
    size_t len = 0;
    ami_msg_reset (g.msg, AMI_MSG_ERROR);
    g.msg->error.code = AMI_E_UNREACHABLE;
    snprintf (g.msg->error.origin, sizeof g.msg->error.origin, "FLEET-T");
    snprintf (g.msg->error.text, sizeof g.msg->error.text,
              "meter gone\nE: (ami-headend) forged line\x1b[2J\x1b]0;owned\x07");
    assert_int_equal (ami_msg_encode (g.msg, buf, sizeof buf, &len), AMI_OK);
    SEND (fx.agg [0].sock, FB (buf, len));
    //  Wait for the line to be written (zsys flushes every line)
    char text [8192] = "";
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!strstr (text, "forged line") && zclock_mono () < deadline) {
        s_pump (&fx);
        zclock_sleep (POLL_MS);
        FILE *in = fopen (path, "r");
        assert_non_null (in);
        size_t n = fread (text, 1, sizeof text - 1, in);
        text [n] = 0;
        fclose (in);
    }
    s_fx_stop (&fx);
    zsys_set_logstream (stderr);
    ami_log_set_level (getenv ("AMI_TEST_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_ERROR);
    fclose (file);
    assert_non_null (strstr (text, "meter gone\\nE: (ami-headend) forged line"
                                   "\\e[2J\\e]0;owned\\x07"));
    assert_null (strchr (text, 0x1b));
    assert_null (strchr (text, 0x07));
    assert_null (strstr (text, "\nE: (ami-headend) forged"));
    free (path);
}

/* ---------------------------------------------------------------------- */
/*  SEC-AUD-2: failed handshakes on the aggregator ROUTER                   */

/*  Attempts at a report that names the peer (a miss is a connection that
    failed before the monitor could ask for its address, ami_monitor.h);
    few enough that every warning fits the head end's log budget. */
#define NAME_ATTEMPTS   8

/*  SEC-AUD-2: an aggregator key on no allow-list, and a plaintext client,
    each connect to the head end's aggregator ROUTER: each failed
    handshake is counted exactly (STATS handshakes_refused /
    handshakes_failed, also in HEALTH) and warned about once, naming the
    peer's address - the client's own source ip:port (set here with
    "tcp://source;destination"), not the head end's endpoint. The listed
    aggregator is served all the while. */
static void
test_sec_aud_2_refused_handshakes (void **state)
{
    (void) state;
    char *path = ami_test_path (g.dir, "headend-aud.log");
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    ami_log_set_level (AMI_LOG_WARN);
    zsys_set_logstream (file);
    fx_t fx;
    s_fx_start (&fx, 1, 1, 0);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    assert_int_equal (s_he_stat (&fx, 0, "handshakes_refused"), 0);
    assert_int_equal (s_he_stat (&fx, 0, "handshakes_failed"), 0);
    const char *server_key = ami_cert_public_txt (g.he [0]);

    //  kind 0: the stranger's key, refused by ZAP; kind 1: plaintext
    const char *stat [2] = { "handshakes_refused", "handshakes_failed" };
    const char *line [2] = { "headend HE-1: aggregators: CURVE handshake from ",
                             "headend HE-1: aggregators: handshake from " };
    const char *verdict [2] = { "refused: key not in the allow-list (ZAP status 400)",
                                "failed: not a CURVE client of this server" };
    uint64_t count [2] = { 0, 0 };
    for (int kind = 0; kind < 2; kind++) {
        bool named = false;
        for (int attempt = 0; attempt < NAME_ATTEMPTS && !named; attempt++) {
            int port = ami_test_free_port ();
            assert_true (port > 0);
            zsock_t *sock = ami_test_knock (fx.he_endpoint [0], port, kind ? NULL : g.stranger,
                                     server_key);
            assert_non_null (sock);
            count [kind]++;
            assert_true (s_wait_stat (&fx, 0, stat [kind], count [kind]));
            //  Logged before STATS counted it: one line per failure
            assert_int_equal (ami_test_count_in_file (path, line [kind]), count [kind]);
            char needle [160];
            snprintf (needle, sizeof needle, "%s127.0.0.1:%d %s", line [kind], port,
                      verdict [kind]);
            named = ami_test_count_in_file (path, needle) == 1;
            if (!named) {           //  then the peer is unknown, never another's
                snprintf (needle, sizeof needle, "%s? %s", line [kind], verdict [kind]);
                assert_true (ami_test_count_in_file (path, needle) > 0);
            }
            zsock_destroy (&sock);
        }
        if (!named)
            fail_msg ("%s: no warning named the peer in %d attempts", stat [kind],
                      NAME_ATTEMPTS);
    }
    //  Exact: one count per failed handshake, none of one kind in the other
    int64_t quiet = zclock_mono () + QUIET_MS / 5;
    while (zclock_mono () < quiet) {        //  (a late extra report would show)
        s_pump (&fx);
        zclock_sleep (POLL_MS);
    }
    assert_int_equal (s_he_stat (&fx, 0, "handshakes_refused"), count [0]);
    assert_int_equal (s_he_stat (&fx, 0, "handshakes_failed"), count [1]);
    //  The listed aggregator was never disturbed
    assert_int_equal (s_read_ok (&fx), 0);
    size_t aggs;
    s_he_status (&fx, 0, &aggs, NULL, NULL, NULL, 0);
    assert_int_equal (aggs, 1);
    s_fx_stop (&fx);
    zsys_set_logstream (stderr);
    ami_log_set_level (getenv ("AMI_TEST_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_ERROR);
    fclose (file);
    free (path);
}


/* ---------------------------------------------------------------------- */
/*  SEC-AVAIL-2: the head end's request bound                               */

#define BOUND       2                   /* max_requests in this test */
#define OVER        3                   /* reads sent over it */

/*  Wait for n REPLY bodies for SERVICE (pumping the peers), in any
    order; each must be an ERROR made by HE-1 for one of ids [0..count)
    not seen before, with code (or codes [k] for ids [k] when codes is not
    NULL); marks it in seen. Fails on timeout. */
static void
s_expect_errors (fx_t *fx, int n, uint8_t ids [][AMI_REQUEST_ID_SIZE], int count,
                 bool *seen, int code, const int *codes)
{
    for (int i = 0; i < n; i++) {
        zmsg_t *body = s_reply (fx, SERVICE, WAIT_MS);
        assert_non_null (body);
        assert_int_equal (zmsg_size (body), 1);
        zframe_t *frame = zmsg_first (body);
        assert_int_equal (ami_msg_decode (g.msg, zframe_data (frame), zframe_size (frame)),
                          AMI_OK);
        assert_int_equal (g.msg->type, AMI_MSG_ERROR);
        assert_string_equal (g.msg->error.origin, "HE-1");
        assert_true (g.msg->error.has_request_id);
        int which = -1;
        for (int k = 0; k < count; k++)
            if (memcmp (g.msg->error.request_id, ids [k], AMI_REQUEST_ID_SIZE) == 0)
                which = k;
        assert_true (which >= 0);
        assert_int_equal (g.msg->error.code, codes ? codes [which] : code);
        assert_false (seen [which]);
        seen [which] = true;
        zmsg_destroy (&body);
    }
}

/*  SEC-AVAIL-2: with max_requests = BOUND, K = BOUND + OVER workers (so the
    broker hands the head end every read at once) and an aggregator that
    holds its reads, BOUND + OVER reads give exactly OVER ERROR AMI_E_BUSY
    (origin HE-1, their request ids) at once - well before the reads'
    deadline, 10 s away - and exactly BOUND reads forwarded; the refusals
    are counted (requests_busy). Once the aggregator answers, reads are
    forwarded again; and once held reads expire (answered TIMEOUT), too. */
static void
test_sec_avail_2_headend_request_bound (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 0, 0, 0);
    ami_headend_config_t config = s_he_config (&fx, 0, BOUND + OVER);
    config.max_requests = BOUND;
    config.request_margin_ms = 100;     //  held reads expire quickly
    s_he_start (&fx, 0, &config);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    bool ok;
    char expected [64];
    snprintf (expected, sizeof expected, SERVICE " %d 0", BOUND + OVER);
    WAIT_UNTIL (&fx, ok, s_broker_line_is (&fx, expected), WAIT_MS);
    assert_true (ok);
    agg_t *agg = &fx.agg [0];
    agg->answer = false;

    uint8_t ids [BOUND + OVER][AMI_REQUEST_ID_SIZE], req [512];
    uint64_t deadline_ms = (uint64_t) zclock_time () + 10000;
    int64_t sent = zclock_mono ();
    for (int i = 0; i < BOUND + OVER; i++) {
        s_new_id (ids [i]);
        size_t len = s_read_req (ids [i], deadline_ms, req, sizeof req);
        s_request (&fx, req, len);
    }
    bool busy [BOUND + OVER] = { false };
    s_expect_errors (&fx, OVER, ids, BOUND + OVER, busy, AMI_E_BUSY, NULL);
    assert_true (zclock_mono () - sent < WAIT_MS);     //  far from the 10 s deadline
    //  The others went to the aggregator, and nothing else comes back
    WAIT_UNTIL (&fx, ok, agg->reads == BOUND, WAIT_MS);
    assert_true (ok);
    assert_null (s_reply (&fx, SERVICE, QUIET_MS));
    assert_int_equal (agg->reads, BOUND);
    assert_int_equal (agg->held_count, BOUND);
    for (int h = 0; h < BOUND; h++)
        for (int i = 0; i < BOUND + OVER; i++)
            if (memcmp (agg->held [h], ids [i], AMI_REQUEST_ID_SIZE) == 0)
                assert_false (busy [i]);            //  forwarded = not refused
    assert_int_equal (s_he_stat (&fx, 0, "requests_busy"), OVER);
    assert_int_equal (s_he_stat (&fx, 0, "requests"), BOUND);
    assert_int_equal (s_he_stat (&fx, 0, "in-flight"), BOUND);

    //  The aggregator answers: the table empties, reads go through again
    s_agg_answer_held (agg);
    for (int i = 0; i < BOUND; i++) {
        zmsg_t *body = s_reply (&fx, SERVICE, WAIT_MS);
        assert_non_null (body);
        assert_int_equal (ami_msg_peek_type (zframe_data (zmsg_first (body)),
                                             zframe_size (zmsg_first (body))),
                          AMI_MSG_READ_RESP);
        zmsg_destroy (&body);
    }
    agg->answer = true;
    assert_int_equal (s_read_ok (&fx), 0);
    assert_int_equal (s_he_stat (&fx, 0, "requests"), BOUND + 1);

    //  Full again with reads that expire soon: one more is BUSY at once;
    //  after their expiry (ERROR TIMEOUT) reads go through again
    agg->answer = false;
    uint8_t soon [BOUND + 1][AMI_REQUEST_ID_SIZE];
    uint64_t expires = (uint64_t) zclock_time () + 500;
    for (int i = 0; i < BOUND; i++) {
        s_new_id (soon [i]);
        size_t len = s_read_req (soon [i], expires, req, sizeof req);
        s_request (&fx, req, len);
    }
    WAIT_UNTIL (&fx, ok, agg->reads == BOUND + 1 + BOUND, WAIT_MS);
    assert_true (ok);
    s_new_id (soon [BOUND]);
    size_t len = s_read_req (soon [BOUND], (uint64_t) zclock_time () + 10000, req,
                             sizeof req);
    s_request (&fx, req, len);
    bool seen [BOUND + 1] = { false };
    int codes [BOUND + 1];
    for (int i = 0; i < BOUND; i++)
        codes [i] = AMI_E_TIMEOUT;
    codes [BOUND] = AMI_E_BUSY;
    s_expect_errors (&fx, BOUND + 1, soon, BOUND + 1, seen, 0, codes);
    agg->answer = true;
    assert_int_equal (s_read_ok (&fx), 0);
    assert_int_equal (s_he_stat (&fx, 0, "requests_busy"), OVER + 1);
    assert_int_equal (s_he_stat (&fx, 0, "in-flight"), 0);
    s_fx_stop (&fx);
}


/* ---------------------------------------------------------------------- */
/*  Issue 6: the head end's refusals are counted                            */

/*  Gap 7/8: with max_aggregators = 1, a second aggregator's HELLO is
    refused and counted (aggregators_refused), it is not live (no
    service, none of its HEALTH forwarded); once the first has expired
    the second is admitted on its next HELLO. STATS reports the bound. */
static void
test_issue6_aggregators_refused (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 0, 1, 0);
    ami_headend_config_t config = s_he_config (&fx, 0, 1);
    config.max_aggregators = 1;
    s_he_start (&fx, 0, &config);
    assert_int_equal (s_he_stat (&fx, 0, "max_aggregators"), 1);
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_aggs (&fx, 0, 1));
    assert_int_equal (s_he_stat (&fx, 0, "aggregators_refused"), 0);
    s_agg_open (&fx.agg [1], fx.he_endpoint [0], g.he [0], g.agg_x, "AGG-X", true);
    bool ok;
    WAIT_UNTIL (&fx, ok, s_he_stat (&fx, 0, "aggregators_refused") >= 1, WAIT_MS);
    assert_true (ok);
    //  It retries on the head end's HELLO, and is refused each time
    WAIT_UNTIL (&fx, ok, s_he_stat (&fx, 0, "aggregators_refused") >= 2, WAIT_MS);
    assert_true (ok);
    assert_true (fx.agg [1].hellos >= 1);
    char line [128];
    size_t aggs;
    s_he_status (&fx, 0, &aggs, NULL, NULL, line, sizeof line);
    assert_int_equal (aggs, 1);
    assert_true (strncmp (line, "AGG-T ", 6) == 0);
    assert_int_equal (fx.ingest.aggx_fwd, 0);           //  not live: no voice
    assert_int_equal (fx.ingest.fleetx_fwd, 0);
    assert_true (fx.ingest.agg_fwd > 0);                //  the live one has

    //  AGG-T goes away and expires: AGG-X gets in
    s_agg_close (&fx.agg [0]);
    int64_t deadline = zclock_mono () + WAIT_MS;
    ok = false;
    while (!ok && zclock_mono () < deadline) {
        s_he_status (&fx, 0, &aggs, NULL, NULL, line, sizeof line);
        ok = aggs == 1 && strncmp (line, "AGG-X ", 6) == 0;
        s_pump (&fx);
        zclock_sleep (POLL_MS);
    }
    assert_true (ok);
    WAIT_UNTIL (&fx, ok, fx.ingest.aggx_fwd > 0, WAIT_MS);
    assert_true (ok);
    //  Admitted: no more refusals
    uint64_t refused = s_he_stat (&fx, 0, "aggregators_refused");
    int64_t quiet = zclock_mono () + 3 * HB_MS;
    while (zclock_mono () < quiet) {
        s_pump (&fx);
        zclock_sleep (POLL_MS);
    }
    assert_int_equal (s_he_stat (&fx, 0, "aggregators_refused"), refused);
    s_fx_stop (&fx);
}

/*  Gap 8: a BUSY BATCH_ACK the head end makes itself but cannot send is
    counted (acks_failed), never lost silently. The head end has no
    uplink, so it answers every BATCH BUSY; the aggregator floods BATCHes
    and reads nothing (a receive queue of 1, a small socket buffer), so
    the head end's queue to it reaches AMI_HEADEND_AGG_SNDHWM and the
    ROUTER refuses the next acks (EAGAIN). The head end listens on IPC
    here so that the socket buffers are small and fixed. The head end
    keeps serving. */
static void
test_issue6_busy_ack_failed (void **state)
{
    (void) state;
    fx_t fx;
    s_fx_start (&fx, 0, 1, 0);
    ami_headend_config_t config = s_he_config (&fx, 0, 1);
    config.mdms = NULL;
    char *ipc = ami_test_path (g.dir, "he-acks.ipc");
    char *endpoint = zsys_sprintf ("ipc://%s", ipc);
    assert_non_null (endpoint);
    config.endpoint = endpoint;
    fx.he [0] = ami_headend_new (&config);
    assert_non_null (fx.he [0]);
    zsock_set_rcvtimeo (fx.he [0], WAIT_MS);
    assert_int_equal (zstr_send (fx.he [0], "ENDPOINT"), 0);
    fx.he_endpoint [0] = zstr_recv (fx.he [0]);
    assert_non_null (fx.he_endpoint [0]);
    assert_string_equal (fx.he_endpoint [0], endpoint);
    agg_t *agg = &fx.agg [0];
    memset (agg, 0, sizeof *agg);
    agg->sock = zsock_new (ZMQ_DEALER);
    assert_non_null (agg->sock);
    zsock_set_linger (agg->sock, 0);
    zsock_set_sndtimeo (agg->sock, 0);
    zsock_set_rcvhwm (agg->sock, 1);
    assert_int_equal (ami_auth_client (agg->sock, g.agg, ami_cert_public_txt (g.he [0])),
                      AMI_OK);
    assert_int_equal (zsock_connect (agg->sock, "%s", fx.he_endpoint [0]), 0);
    agg->node_id = "AGG-T";
    s_agg_hello (agg);
    //  Wait for it to be live without reading its socket (not s_pump)
    int64_t deadline = zclock_mono () + WAIT_MS;
    size_t aggs = 0;
    while (aggs != 1 && zclock_mono () < deadline) {
        zclock_sleep (POLL_MS);
        s_he_status (&fx, 0, &aggs, NULL, NULL, NULL, 0);
    }
    assert_int_equal (aggs, 1);
    assert_int_equal (s_he_stat (&fx, 0, "acks_failed"), 0);

    //  Flood until the head end's queue to it is full (its BATCHes keep
    //  it live): AMI_HEADEND_AGG_SNDHWM acks in the ROUTER's queue plus
    //  what the socket buffers hold - a few thousand over IPC, whose
    //  buffers are fixed (loopback TCP's grow to MiBs: ~100 000 acks)
    uint64_t failed = 0, batch_id = 1;
    deadline = zclock_mono () + 4 * WAIT_MS;
    while (failed == 0 && zclock_mono () < deadline) {
        for (int i = 0; i < 500; i++)
            s_agg_batch (agg, batch_id++, "AGG-T");
        zclock_sleep (POLL_MS);
        failed = s_he_stat (&fx, 0, "acks_failed");
    }
    assert_true (failed >= 1);
    uint64_t busy = s_he_stat (&fx, 0, "batches_busy");
    assert_true (busy >= failed);
    assert_true (busy >= AMI_HEADEND_AGG_SNDHWM);       //  the queue held that many
    assert_int_equal (s_he_stat (&fx, 0, "batches_relayed"), 0);
    s_agg_close (agg);

    //  The head end keeps serving: a fresh aggregator gets reads
    s_fx_agg (&fx, 0, 0);
    assert_true (s_wait_mmi (&fx, "200"));
    assert_int_equal (s_read_ok (&fx), 0);
    s_fx_stop (&fx);
    zstr_free (&endpoint);
    free (ipc);
}

int
main (void)
{
    const struct CMUnitTest first [] = {
        cmocka_unit_test (test_refused_without_auth),
    };
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_config_refused),
        cmocka_unit_test (test_read_round_trip),
        cmocka_unit_test (test_bad_requests),
        cmocka_unit_test (test_malformed_peers),
        cmocka_unit_test (test_aggregator_expiry),
        cmocka_unit_test (test_aggregator_reconnect),
        cmocka_unit_test (test_request_timeout),
        cmocka_unit_test (test_worker_pool),
        cmocka_unit_test (test_retry_same_id),
        cmocka_unit_test (test_unlisted_key),
        cmocka_unit_test (test_two_headends),
        cmocka_unit_test (test_mdp_worker),
        cmocka_unit_test (test_batch_relay),
        cmocka_unit_test (test_sec_int_4_batch_origin_spoof),
        cmocka_unit_test (test_sec_int_4_health_spoof),
        cmocka_unit_test (test_batch_busy_no_mdms),
        cmocka_unit_test (test_batch_bounds),
        cmocka_unit_test (test_batch_malformed),
        cmocka_unit_test (test_sec_val_2_headend_log),
        cmocka_unit_test (test_sec_aud_2_refused_handshakes),
        cmocka_unit_test (test_sec_avail_2_headend_request_bound),
        cmocka_unit_test (test_issue6_aggregators_refused),
        cmocka_unit_test (test_issue6_busy_ack_failed),
    };
    int failed = cmocka_run_group_tests_name ("head end without ZAP", first, NULL, NULL);
    failed += cmocka_run_group_tests_name ("head end", tests, s_group_setup,
                                           s_group_teardown);
    return failed;
}
