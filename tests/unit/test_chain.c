/*  test_chain.c - the whole AMI chain in one process: operator -> MDMS ->
    broker -> head ends -> aggregators -> meter fleets and back, CurveZMQ on
    every hop and end-to-end signatures (FUN-READ-1, FUN-READ-2,
    SEC-AVAIL-1, SEC-AUTH-1, SEC-VAL-1).

    Topology (the default one, smaller): 1 MDMS, 1 broker, 2 head ends,
    2 aggregators each connected to both head ends, 2 fleets of 5 meters.
    One process-wide ZAP handler (zauth is per process) whose allow-list is
    the union of every server's; the per-role checks that need more than
    that (operator vs head end on the MDMS) are the MDMS's own.
    Heartbeats are 100 ms so failover is observable in well under a second.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <sodium.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_aggregator.h"
#include "ami_auth.h"
#include "ami_broker.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_headend.h"
#include "ami_mdms.h"
#include "ami_meter.h"
#include "ami_msg.h"
#include "ami_test.h"

/* Heartbeat of every service in the test: 100 ms makes failover visible in
   well under a second. AMI_TEST_HEARTBEAT_MS raises it for slow runs
   (valgrind: `make memcheck` uses 1000). */
static int s_heartbeat_ms = 100;
#define HEARTBEAT_MS   s_heartbeat_ms
#define FLEETS         2
#define HEADENDS       2
#define AGGREGATORS    2
#define METERS         5            /* per fleet */
/* Longest any step may take before the test calls it failed: generous
   (150 heartbeats, 15 s by default), because a sanitizer build on a loaded
   2-core machine is slow. */
#define DEADLINE_MS    (150 * s_heartbeat_ms)

/* Interval data of the fleets: zeroed (none) except in the interval tests,
   whose setup sets it (s_setup_profile). */
static ami_meter_profile_config_t s_profile;
/* SEC-INT-5's setup: the head ends are stopped once the aggregators are
   up, before the fleets start (s_setup_headends_down). */
static bool s_headends_down;
/* A simulated day, 2026-11-20 UTC, in 15-minute intervals. */
#define PROFILE_START_S  1795132800
#define PROFILE_DAY      96

typedef struct {
    char *dir;
    char *allow;
    ami_auth_t *auth;
    ami_cert_t *mdms_cert, *broker_cert, *operator_cert, *viewer_cert, *stranger_cert;
    ami_cert_t *headend_cert [HEADENDS], *agg_cert [AGGREGATORS], *fleet_cert [FLEETS];
    uint8_t seed [FLEETS][AMI_E2E_SEED_SIZE];
    ami_e2e_mdms_t keys;
    char *registry, *db;
    zactor_t *broker, *mdms, *headend [HEADENDS], *agg [AGGREGATORS], *fleet [FLEETS];
    char *broker_ep, *api_ep, *ingest_ep, *headend_ep [HEADENDS], *agg_ep [AGGREGATORS];
    ami_msg_t *msg;
} chain_t;

static ami_cert_t *
s_cert (chain_t *c, const char *role, const char *node, const char *ami_role, bool listed)
{
    ami_cert_t *cert = ami_cert_new (role, node, NULL);
    assert_non_null (cert);
    if (ami_role)
        assert_int_equal (ami_cert_set_meta (cert, "ami-role", ami_role), AMI_OK);
    if (listed) {
        char name [128];
        snprintf (name, sizeof name, "%s/%s.cert", c->allow, node);
        assert_int_equal (ami_cert_save_public (cert, name), AMI_OK);
    }
    return cert;
}

static char *
s_ask (zactor_t *actor, const char *command)
{
    zsock_set_rcvtimeo (actor, DEADLINE_MS);
    zstr_send (actor, command);
    char *reply = zstr_recv (actor);
    assert_non_null (reply);
    return reply;
}

static void
s_start_broker (chain_t *c, const char *endpoint)
{
    ami_broker_config_t config = { 0 };
    config.endpoint = endpoint;
    config.server_cert = c->broker_cert;
    config.heartbeat_ms = HEARTBEAT_MS;
    config.liveness = 3;
    c->broker = ami_broker_new (&config);
    assert_non_null (c->broker);
    if (!c->broker_ep)
        c->broker_ep = s_ask (c->broker, "ENDPOINT");
}

static void
s_start_mdms (chain_t *c)
{
    ami_mdms_config_t config = { 0 };
    config.node_id = "mdms";
    config.cert = c->mdms_cert;
    config.api_endpoint = c->api_ep ? c->api_ep : "tcp://127.0.0.1:*";
    config.ingest_endpoint = c->ingest_ep ? c->ingest_ep : "tcp://127.0.0.1:*";
    config.events_endpoint = "tcp://127.0.0.1:*";
    config.broker_endpoint = c->broker_ep;
    config.broker_key = ami_cert_public_txt (c->broker_cert);
    config.db_dir = c->db;
    config.keys = &c->keys;
    config.registry_path = c->registry;
    char *data_key = ami_test_path (c->dir, "mdms-data.cert");
    config.data_key_path = data_key;
    config.read_timeout_ms = 20 * HEARTBEAT_MS;
    config.heartbeat_ms = HEARTBEAT_MS;
    c->mdms = ami_mdms_new (&config);
    free (data_key);
    assert_non_null (c->mdms);
    if (!c->api_ep) {
        zsock_set_rcvtimeo (c->mdms, DEADLINE_MS);
        zstr_send (c->mdms, "ENDPOINT");
        zmsg_t *reply = zmsg_recv (c->mdms);
        assert_non_null (reply);
        c->api_ep = zmsg_popstr (reply);
        c->ingest_ep = zmsg_popstr (reply);
        zmsg_destroy (&reply);
        assert_non_null (c->ingest_ep);
    }
}

static void
s_start_headend (chain_t *c, int i)
{
    char id [32];
    snprintf (id, sizeof id, "headend-%d", i + 1);
    ami_headend_config_t config = { 0 };
    config.node_id = id;
    config.cert = c->headend_cert [i];
    config.endpoint = c->headend_ep [i] ? c->headend_ep [i] : "tcp://127.0.0.1:*";
    config.broker = c->broker_ep;
    config.broker_key = ami_cert_public_txt (c->broker_cert);
    config.mdms = c->ingest_ep;
    config.mdms_key = ami_cert_public_txt (c->mdms_cert);
    config.heartbeat_ms = HEARTBEAT_MS;
    config.broker_heartbeat_ms = HEARTBEAT_MS;
    config.broker_liveness = 3;
    c->headend [i] = ami_headend_new (&config);
    assert_non_null (c->headend [i]);
    if (!c->headend_ep [i])
        c->headend_ep [i] = s_ask (c->headend [i], "ENDPOINT");
}

static void
s_start_aggregator (chain_t *c, int i)
{
    char id [32];
    snprintf (id, sizeof id, "agg-%d", i + 1);
    ami_aggregator_headend_t headends [HEADENDS];
    for (int h = 0; h < HEADENDS; h++) {
        headends [h].name = h ? "headend-2" : "headend-1";
        headends [h].endpoint = c->headend_ep [h];
        headends [h].server_key = ami_cert_public_txt (c->headend_cert [h]);
    }
    ami_aggregator_config_t config = { 0 };
    config.node_id = id;
    config.cert = c->agg_cert [i];
    //  a restarted aggregator binds its first endpoint again (its fleets
    //  reconnect there)
    config.endpoint = c->agg_ep [i] ? c->agg_ep [i] : "tcp://127.0.0.1:*";
    config.headends = headends;
    config.headend_count = HEADENDS;
    config.heartbeat_ms = HEARTBEAT_MS;
    //  the custody store, persisted as in a deployment
    char state [64];
    snprintf (state, sizeof state, "agg-%d-state", i + 1);
    char *state_dir = ami_test_path (c->dir, state);
    config.state = state_dir;
    c->agg [i] = ami_aggregator_new (&config);
    free (state_dir);
    assert_non_null (c->agg [i]);
    if (!c->agg_ep [i])
        c->agg_ep [i] = s_ask (c->agg [i], "ENDPOINT");
}

static void
s_start_fleet (chain_t *c, int i)
{
    char id [32], state [64];
    snprintf (id, sizeof id, "fleet-%d", i + 1);
    snprintf (state, sizeof state, "fleet-%d-state", i + 1);
    char *state_dir = ami_test_path (c->dir, state);
    ami_meter_config_t config;
    memset (&config, 0, sizeof config);
    config.node_id = id;
    config.cert = c->fleet_cert [i];
    config.aggregator = c->agg_ep [i % AGGREGATORS];
    config.aggregator_key = ami_cert_public_txt (c->agg_cert [i % AGGREGATORS]);
    config.first = (uint32_t) (i * METERS + 1);
    config.count = METERS;
    memcpy (config.seed, c->seed [i], sizeof config.seed);
    config.mdms = c->keys;
    ami_e2e_mdms_wipe (&config.mdms);           /* a fleet gets the public half only */
    config.state = state_dir;
    config.heartbeat_ms = HEARTBEAT_MS;
    config.profile = s_profile;
    c->fleet [i] = ami_meter_new (&config);
    sodium_memzero (config.seed, sizeof config.seed);
    free (state_dir);
    assert_non_null (c->fleet [i]);
}

static void
s_write_registry (chain_t *c)
{
    c->registry = ami_test_path (c->dir, "meters.tsv");
    FILE *file = fopen (c->registry, "w");
    assert_non_null (file);
    fprintf (file, "# meter\tfleet\taggregator\tsign_pk\n");
    for (int f = 0; f < FLEETS; f++)
        for (uint32_t m = 1; m <= METERS; m++) {
            uint32_t index = (uint32_t) (f * METERS) + m;
            uint8_t pk [32];
            char hex [65];
            ami_e2e_meter_keypair (c->seed [f], index, pk, NULL);
            sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
            fprintf (file, "MTR-%06u\tfleet-%d\tagg-%d\t%s\n", index, f + 1, f % AGGREGATORS + 1, hex);
        }
    /* a registered meter that no fleet simulates: offline */
    uint8_t pk [32], sk [64];
    char hex [65];
    crypto_sign_keypair (pk, sk);
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    fprintf (file, "MTR-000999\tfleet-1\tagg-1\t%s\n", hex);
    fclose (file);
}

static int
s_setup (void **state)
{
    chain_t *c = calloc (1, sizeof *c);
    assert_non_null (c);
    c->dir = ami_test_tmpdir ("chain");
    c->allow = ami_test_path (c->dir, "allow");
    c->db = ami_test_path (c->dir, "db");
    assert_int_equal (zsys_dir_create ("%s", c->allow), 0);
    c->mdms_cert = s_cert (c, "mdms", "mdms", NULL, true);
    c->broker_cert = s_cert (c, "broker", "broker", NULL, false);
    c->operator_cert = s_cert (c, "operator", "alice", "OPERATOR", true);
    c->viewer_cert = s_cert (c, "operator", "victor", "VIEWER", true);
    c->stranger_cert = s_cert (c, "operator", "mallory", "OPERATOR", false);
    for (int i = 0; i < HEADENDS; i++) {
        char id [32];
        snprintf (id, sizeof id, "headend-%d", i + 1);
        c->headend_cert [i] = s_cert (c, "headend", id, NULL, true);
    }
    for (int i = 0; i < AGGREGATORS; i++) {
        char id [32];
        snprintf (id, sizeof id, "agg-%d", i + 1);
        c->agg_cert [i] = s_cert (c, "aggregator", id, NULL, true);
    }
    for (int i = 0; i < FLEETS; i++) {
        char id [32];
        snprintf (id, sizeof id, "fleet-%d", i + 1);
        c->fleet_cert [i] = s_cert (c, "meter", id, NULL, true);
        char *path = ami_test_path (c->dir, id);
        assert_int_equal (ami_e2e_kdf_generate (path, "meter", id), AMI_OK);
        assert_int_equal (ami_e2e_kdf_load (path, c->seed [i]), AMI_OK);
        free (path);
    }
    assert_int_equal (ami_e2e_mdms_generate (c->dir, "mdms"), AMI_OK);
    assert_int_equal (ami_e2e_mdms_load (&c->keys, c->dir, true), AMI_OK);
    char *data_key = ami_test_path (c->dir, "mdms-data.cert");
    assert_int_equal (ami_e2e_kdf_generate (data_key, "mdms", "mdms"), AMI_OK);
    free (data_key);
    s_write_registry (c);

    c->auth = ami_auth_new (c->allow, NULL);
    assert_non_null (c->auth);
    c->msg = ami_msg_new ();
    s_start_broker (c, "tcp://127.0.0.1:*");
    s_start_mdms (c);
    for (int i = 0; i < HEADENDS; i++)
        s_start_headend (c, i);
    for (int i = 0; i < AGGREGATORS; i++)
        s_start_aggregator (c, i);
    //  (after the aggregators bound: none may take a head end's port)
    if (s_headends_down)
        for (int i = 0; i < HEADENDS; i++)
            zactor_destroy (&c->headend [i]);
    for (int i = 0; i < FLEETS; i++)
        s_start_fleet (c, i);
    *state = c;
    return 0;
}

static int
s_teardown (void **state)
{
    chain_t *c = *state;
    for (int i = 0; i < FLEETS; i++)
        zactor_destroy (&c->fleet [i]);
    for (int i = 0; i < AGGREGATORS; i++) {
        zactor_destroy (&c->agg [i]);
        zstr_free (&c->agg_ep [i]);
    }
    for (int i = 0; i < HEADENDS; i++) {
        zactor_destroy (&c->headend [i]);
        zstr_free (&c->headend_ep [i]);
        ami_cert_destroy (&c->headend_cert [i]);
    }
    zactor_destroy (&c->mdms);
    zactor_destroy (&c->broker);
    ami_auth_destroy (&c->auth);
    for (int i = 0; i < AGGREGATORS; i++)
        ami_cert_destroy (&c->agg_cert [i]);
    for (int i = 0; i < FLEETS; i++) {
        ami_cert_destroy (&c->fleet_cert [i]);
        sodium_memzero (c->seed [i], sizeof c->seed [i]);
    }
    ami_cert_destroy (&c->mdms_cert);
    ami_cert_destroy (&c->broker_cert);
    ami_cert_destroy (&c->operator_cert);
    ami_cert_destroy (&c->viewer_cert);
    ami_cert_destroy (&c->stranger_cert);
    ami_e2e_mdms_wipe (&c->keys);
    ami_msg_destroy (&c->msg);
    zstr_free (&c->broker_ep);
    zstr_free (&c->api_ep);
    zstr_free (&c->ingest_ep);
    ami_test_rmtree (c->dir);
    free (c->dir);
    free (c->allow);
    free (c->db);
    free (c->registry);
    free (c);
    return 0;
}

/* An operator's API client: DEALER with the REQ-compatible empty frame. */
static zsock_t *
s_operator (chain_t *c, ami_cert_t *cert)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    assert_non_null (sock);
    assert_int_equal (ami_auth_client (sock, cert, ami_cert_public_txt (c->mdms_cert)), AMI_OK);
    zsock_set_linger (sock, 0);
    assert_int_equal (zsock_connect (sock, "%s", c->api_ep), 0);
    return sock;
}

/* Send the API_REQ in c->msg and wait for its reply (decoded into
   c->msg). Returns AMI_OK, or AMI_E_TIMEOUT if none came within wait_ms. */
static int
s_api_exchange (chain_t *c, zsock_t *sock, int wait_ms)
{
    uint8_t buf [1024];
    size_t len = 0;
    assert_int_equal (ami_msg_encode (c->msg, buf, sizeof buf, &len), AMI_OK);
    zmsg_t *out = zmsg_new ();
    zmsg_addmem (out, "", 0);
    zmsg_addmem (out, buf, len);
    assert_int_equal (zmsg_send (&out, sock), 0);
    zpoller_t *poller = zpoller_new (sock, NULL);
    void *which = zpoller_wait (poller, wait_ms);
    zpoller_destroy (&poller);
    if (!which)
        return AMI_E_TIMEOUT;
    zmsg_t *reply = zmsg_recv (sock);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), 2);
    zframe_t *body = zmsg_last (reply);
    assert_int_equal (ami_msg_decode (c->msg, zframe_data (body), zframe_size (body)), AMI_OK);
    zmsg_destroy (&reply);
    return AMI_OK;
}

/* Send one API_REQ and wait for its reply (decoded into c->msg). Returns
   AMI_OK with the reply in c->msg, or AMI_E_TIMEOUT if none came within
   wait_ms. */
static int
s_api (chain_t *c, zsock_t *sock, uint8_t action, const char *meter, uint32_t timeout_ms,
       uint32_t limit, int wait_ms, uint8_t corr [AMI_REQUEST_ID_SIZE])
{
    ami_msg_reset (c->msg, AMI_MSG_API_REQ);
    ami_api_req_t *req = &c->msg->api_req;
    randombytes_buf (req->corr, sizeof req->corr);
    if (corr)
        memcpy (corr, req->corr, sizeof req->corr);
    req->action = action;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter ? meter : "");
    req->timeout_ms = timeout_ms;
    req->limit = limit;
    return s_api_exchange (c, sock, wait_ms);
}

/* One on-demand read. Returns AMI_OK with the reading in c->msg, or the
   ERROR code the chain answered with. */
static int
s_read (chain_t *c, zsock_t *sock, const char *meter)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int rc = s_api (c, sock, AMI_ACT_READ, meter, (uint32_t) (20 * HEARTBEAT_MS), 0, DEADLINE_MS, corr);
    if (rc)
        return rc;
    if (c->msg->type == AMI_MSG_ERROR) {
        assert_true (c->msg->error.has_request_id);
        assert_memory_equal (c->msg->error.request_id, corr, sizeof corr);
        return c->msg->error.code;
    }
    assert_int_equal (c->msg->type, AMI_MSG_API_READINGS);
    assert_memory_equal (c->msg->api_readings.corr, corr, sizeof corr);
    assert_int_equal (c->msg->api_readings.count, 1);
    return AMI_OK;
}

/* Read until it succeeds or the deadline passes (the chain is still
   coming up, or failing over). Returns the last code. */
static int
s_read_eventually (chain_t *c, zsock_t *sock, const char *meter)
{
    int64_t deadline = zclock_mono () + DEADLINE_MS;
    int rc = AMI_E_TIMEOUT;
    while (zclock_mono () < deadline && (rc = s_read (c, sock, meter)) != AMI_OK)
        zclock_sleep (HEARTBEAT_MS);        /* pacing between retries, not readiness */
    return rc;
}

static const ami_register_t *
s_register (const ami_reading_t *r, uint8_t c, uint8_t d, uint8_t e)
{
    for (uint32_t i = 0; i < r->register_count; i++)
        if (r->registers [i].obis [2] == c && r->registers [i].obis [3] == d
        &&  r->registers [i].obis [4] == e)
            return &r->registers [i];
    return NULL;
}

static void
test_read_through_chain (void **state)
{
    chain_t *c = *state;
    zsock_t *op = s_operator (c, c->operator_cert);
    const char *meters [] = { "MTR-000001", "MTR-000005", "MTR-000006", "MTR-000010" };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal (s_read_eventually (c, op, meters [i]), AMI_OK);
        const ami_stored_reading_t *s = &c->msg->api_readings.readings [0];
        assert_string_equal (s->reading.meter_id, meters [i]);
        assert_int_equal (s->reading.register_count, 19);
        const ami_register_t *v = s_register (&s->reading, 32, 7, 0);
        assert_non_null (v);
        assert_in_range (v->value, 2200, 2400);
        assert_true (s->requested_ms <= s->stored_ms);
        int64_t import1 = s_register (&s->reading, 1, 8, 0)->value;
        /* a second read of the same meter: energy never decreases */
        assert_int_equal (s_read (c, op, meters [i]), AMI_OK);
        int64_t import2 = s_register (&c->msg->api_readings.readings [0].reading, 1, 8, 0)->value;
        assert_true (import2 >= import1);
    }
    /* FUN-READ-2: distinct errors */
    assert_int_equal (s_read (c, op, "MTR-123456"), AMI_E_UNKNOWN_METER);
    assert_int_equal (s_read (c, op, "MTR-000999"), AMI_E_UNREACHABLE);
    zsock_t *viewer = s_operator (c, c->viewer_cert);
    assert_int_equal (s_read (c, viewer, "MTR-000001"), AMI_E_DENIED);
    zsock_destroy (&viewer);
    zsock_destroy (&op);
}

static void
test_history_survives_mdms_restart (void **state)
{
    chain_t *c = *state;
    zsock_t *op = s_operator (c, c->operator_cert);
    assert_int_equal (s_read_eventually (c, op, "MTR-000003"), AMI_OK);
    uint64_t read_ms = c->msg->api_readings.readings [0].reading.read_ms;
    zsock_destroy (&op);

    zactor_destroy (&c->mdms);
    s_start_mdms (c);                       /* same endpoints, same database */
    op = s_operator (c, c->operator_cert);
    int rc = s_api (c, op, AMI_ACT_HISTORY, "MTR-000003", 0, 10, DEADLINE_MS, NULL);
    assert_int_equal (rc, AMI_OK);
    assert_int_equal (c->msg->type, AMI_MSG_API_READINGS);
    assert_true (c->msg->api_readings.count >= 1);
    assert_int_equal (c->msg->api_readings.readings [0].reading.read_ms, read_ms);
    /* and the restarted MDMS still reads: its counter kept rising, so the
       meter does not take its new commands for replays */
    assert_int_equal (s_read_eventually (c, op, "MTR-000003"), AMI_OK);
    zsock_destroy (&op);
}

static void
test_headend_failover (void **state)
{
    chain_t *c = *state;
    zsock_t *op = s_operator (c, c->operator_cert);
    assert_int_equal (s_read_eventually (c, op, "MTR-000002"), AMI_OK);

    /* SEC-AVAIL-1: one head end down, reads go on through the other */
    zactor_destroy (&c->headend [0]);
    assert_int_equal (s_read_eventually (c, op, "MTR-000002"), AMI_OK);
    assert_int_equal (s_read_eventually (c, op, "MTR-000007"), AMI_OK);

    /* both down: the chain says there is no route (or the read times out
       while the broker still lists a worker that has not yet expired) */
    zactor_destroy (&c->headend [1]);
    int64_t deadline = zclock_mono () + DEADLINE_MS;
    int rc = AMI_OK;
    while (zclock_mono () < deadline && (rc = s_read (c, op, "MTR-000002")) != AMI_E_NO_ROUTE)
        assert_true (rc == AMI_OK || rc == AMI_E_TIMEOUT || rc == AMI_E_UNREACHABLE);
    assert_int_equal (rc, AMI_E_NO_ROUTE);

    /* one comes back: reads recover */
    s_start_headend (c, 1);
    assert_int_equal (s_read_eventually (c, op, "MTR-000002"), AMI_OK);
    s_start_headend (c, 0);
    zsock_destroy (&op);
}

/* SEC-AUTH-1: a key on no allow-list gets nothing from any server socket */
static void
test_unlisted_key_refused_everywhere (void **state)
{
    chain_t *c = *state;
    struct { const char *endpoint; const char *server_key; } servers [] = {
        { c->api_ep, ami_cert_public_txt (c->mdms_cert) },
        { c->ingest_ep, ami_cert_public_txt (c->mdms_cert) },
        { c->broker_ep, ami_cert_public_txt (c->broker_cert) },
        { c->headend_ep [0], ami_cert_public_txt (c->headend_cert [0]) },
        { c->agg_ep [0], ami_cert_public_txt (c->agg_cert [0]) },
    };
    for (size_t i = 0; i < sizeof servers / sizeof servers [0]; i++) {
        zsock_t *sock = zsock_new (ZMQ_DEALER);
        assert_int_equal (ami_auth_client (sock, c->stranger_cert, servers [i].server_key), AMI_OK);
        zsock_set_linger (sock, 0);
        assert_int_equal (zsock_connect (sock, "%s", servers [i].endpoint), 0);
        /* something every server would answer if it accepted the peer */
        zstr_sendx (sock, "", "MDPC01", "mmi.service", "agg.agg-1", NULL);
        zpoller_t *poller = zpoller_new (sock, NULL);
        assert_null (zpoller_wait (poller, 500));
        zpoller_destroy (&poller);
        zsock_destroy (&sock);
    }
    /* the listed operator is still served */
    zsock_t *op = s_operator (c, c->operator_cert);
    assert_int_equal (s_api (c, op, AMI_ACT_STATUS, NULL, 0, 0, DEADLINE_MS, NULL), AMI_OK);
    assert_int_equal (c->msg->type, AMI_MSG_API_STATUS);
    zsock_destroy (&op);
}

/* SEC-VAL-1: garbage from a listed peer on every server socket does not
   stop any service */
static void
test_malformed_frames_from_listed_peers (void **state)
{
    chain_t *c = *state;
    struct { const char *endpoint; const char *server_key; ami_cert_t *cert; } servers [] = {
        { c->api_ep, ami_cert_public_txt (c->mdms_cert), c->operator_cert },
        { c->ingest_ep, ami_cert_public_txt (c->mdms_cert), c->headend_cert [0] },
        { c->broker_ep, ami_cert_public_txt (c->broker_cert), c->mdms_cert },
        { c->headend_ep [0], ami_cert_public_txt (c->headend_cert [0]), c->agg_cert [0] },
        { c->agg_ep [0], ami_cert_public_txt (c->agg_cert [0]), c->fleet_cert [0] },
    };
    static const uint8_t garbage [][8] = {
        { 0xdd, 0xff, 0xff, 0xff, 0xff }, { 0x93, 0x01, 0x0a, 0xc1 },
        { 0x92, 0x01, 0x7f }, { 0xc4, 0x40 }, { 0 }, { 0x91, 0x02 },
    };
    for (size_t i = 0; i < sizeof servers / sizeof servers [0]; i++) {
        zsock_t *sock = zsock_new (ZMQ_DEALER);
        assert_int_equal (ami_auth_client (sock, servers [i].cert, servers [i].server_key), AMI_OK);
        zsock_set_linger (sock, 0);
        assert_int_equal (zsock_connect (sock, "%s", servers [i].endpoint), 0);
        for (size_t g = 0; g < sizeof garbage / sizeof garbage [0]; g++) {
            zsock_send (sock, "b", garbage [g], sizeof garbage [g]);
            zsock_send (sock, "bb", "", (size_t) 0, garbage [g], sizeof garbage [g]);
            zstr_sendx (sock, "", "MDPW01", "\x07", NULL);
        }
        zsock_destroy (&sock);
    }
    /* every service still works end to end */
    zsock_t *op = s_operator (c, c->operator_cert);
    assert_int_equal (s_read_eventually (c, op, "MTR-000004"), AMI_OK);
    assert_int_equal (s_read_eventually (c, op, "MTR-000009"), AMI_OK);
    zsock_destroy (&op);
}

/*  SEC-VAL-1: a listed peer that sends a frame over AMI_MAX_FRAME (2 MiB,
    alone and as one part of a multi-frame message) to any server socket
    is disconnected by libzmq (ZMQ_MAXMSGSIZE) before the service sees a
    byte; the services keep serving reads. */
static void
test_sec_val_1_oversize_frames (void **state)
{
    chain_t *c = *state;
    struct { const char *endpoint; const char *server_key; ami_cert_t *cert; } servers [] = {
        { c->api_ep, ami_cert_public_txt (c->mdms_cert), c->operator_cert },
        { c->ingest_ep, ami_cert_public_txt (c->mdms_cert), c->headend_cert [0] },
        { c->broker_ep, ami_cert_public_txt (c->broker_cert), c->mdms_cert },
        { c->headend_ep [0], ami_cert_public_txt (c->headend_cert [0]), c->agg_cert [0] },
        { c->agg_ep [0], ami_cert_public_txt (c->agg_cert [0]), c->fleet_cert [0] },
    };
    const size_t big = 2 * AMI_MAX_FRAME;
    uint8_t *payload = calloc (1, big);
    assert_non_null (payload);
    memset (payload, 0x93, big);
    for (size_t i = 0; i < sizeof servers / sizeof servers [0]; i++) {
        for (int multi = 0; multi < 2; multi++) {
            zsock_t *sock = zsock_new (ZMQ_DEALER);
            assert_non_null (sock);
            assert_int_equal (ami_auth_client (sock, servers [i].cert, servers [i].server_key), AMI_OK);
            zsock_set_linger (sock, 0);
            zactor_t *monitor = zactor_new (zmonitor, sock);
            assert_non_null (monitor);
            zstr_sendx (monitor, "LISTEN", "HANDSHAKE_SUCCEEDED", "DISCONNECTED", NULL);
            zstr_send (monitor, "START");
            zsock_wait (monitor);
            assert_int_equal (zsock_connect (sock, "%s", servers [i].endpoint), 0);
            if (multi)
                assert_int_equal (zsock_send (sock, "bb", "", (size_t) 0, payload, big), 0);
            else
                assert_int_equal (zsock_send (sock, "b", payload, big), 0);
            /* handshake, then the server drops the connection */
            bool handshook = false, dropped = false;
            int64_t deadline = zclock_mono () + 10000;
            zpoller_t *poller = zpoller_new (monitor, NULL);
            while (!dropped && zclock_mono () < deadline) {
                if (!zpoller_wait (poller, 200))
                    continue;
                zmsg_t *event = zmsg_recv (monitor);
                char *name = event ? zmsg_popstr (event) : NULL;
                if (name && streq (name, "HANDSHAKE_SUCCEEDED"))
                    handshook = true;
                else if (name && streq (name, "DISCONNECTED") && handshook)
                    dropped = true;
                zstr_free (&name);
                zmsg_destroy (&event);
            }
            zpoller_destroy (&poller);
            zactor_destroy (&monitor);
            zsock_destroy (&sock);
            if (!dropped)
                fail_msg ("server %s kept a peer that sent a %zu-byte frame (%s)",
                          servers [i].endpoint, big, multi ? "multi-part" : "single");
        }
    }
    free (payload);
    zsock_t *op = s_operator (c, c->operator_cert);
    assert_int_equal (s_read_eventually (c, op, "MTR-000004"), AMI_OK);
    assert_int_equal (s_read_eventually (c, op, "MTR-000009"), AMI_OK);
    zsock_destroy (&op);
}

/* ------------------------------------------------------------------ */
/*  Interval data (FUN-INT-1, SEC-AVAIL-1)                             */

static int
s_setup_profile (void **state, uint64_t limit, uint32_t time_scale)
{
    memset (&s_profile, 0, sizeof s_profile);
    s_profile.enabled = true;
    s_profile.interval_s = 900;
    s_profile.block = 4;
    s_profile.time_scale = time_scale;  /* 0 = flood: as fast as credit allows */
    s_profile.start_s = PROFILE_START_S;
    s_profile.limit = limit;
    int rc = s_setup (state);
    memset (&s_profile, 0, sizeof s_profile);
    return rc;
}

static int
s_setup_day (void **state)
{
    return s_setup_profile (state, PROFILE_DAY, 0);
}

static int
s_setup_three_days (void **state)
{
    /* a simulated day per second: the flow lasts ~3 s, long enough to stop
       a head end in the middle of it */
    return s_setup_profile (state, 3 * PROFILE_DAY, 86400);
}

/* The MDMS's own stat `name` from an API status (0 if absent). */
static uint64_t
s_mdms_stat (chain_t *c, zsock_t *op, const char *name)
{
    assert_int_equal (s_api (c, op, AMI_ACT_STATUS, NULL, 0, 0, DEADLINE_MS, NULL), AMI_OK);
    assert_int_equal (c->msg->type, AMI_MSG_API_STATUS);
    const ami_api_status_t *st = &c->msg->api_status;
    for (uint32_t i = 0; i < st->count; i++)
        if (streq (st->services [i].role, "mdms"))
            for (uint32_t k = 0; k < st->services [i].stat_count; k++)
                if (streq (st->services [i].stats [k].name, name))
                    return st->services [i].stats [k].value;
    return 0;
}

/* Wait (deadline) until the MDMS has stored `expected` intervals. */
static uint64_t
s_wait_stored (chain_t *c, zsock_t *op, uint64_t expected, int deadline_ms)
{
    int64_t deadline = zclock_mono () + deadline_ms;
    uint64_t stored = 0;
    while ((stored = s_mdms_stat (c, op, "intervals_stored")) < expected && zclock_mono () < deadline)
        zclock_sleep (HEARTBEAT_MS);    /* pacing of the status polls, with a deadline */
    return stored;
}

/* Every interval of the meter's `days` simulated days, read back through the
   API (paged): exactly one record per 15-minute interval, in order, energy
   never decreasing. */
static void
s_check_meter_intervals (chain_t *c, zsock_t *op, const char *meter, int days)
{
    uint32_t expected_end = PROFILE_START_S + 900, got = 0;
    uint64_t last_import = 0;
    uint64_t from_ms = (uint64_t) PROFILE_START_S * 1000;
    const uint64_t to_ms = ((uint64_t) PROFILE_START_S + (uint64_t) days * 86400) * 1000;
    bool more = true;
    while (more) {
        ami_msg_reset (c->msg, AMI_MSG_API_REQ);
        ami_api_req_t *req = &c->msg->api_req;
        randombytes_buf (req->corr, sizeof req->corr);
        req->action = AMI_ACT_INTERVALS;
        snprintf (req->meter_id, sizeof req->meter_id, "%s", meter);
        req->from_ms = from_ms;
        req->to_ms = to_ms;
        assert_int_equal (s_api_exchange (c, op, DEADLINE_MS), AMI_OK);
        assert_int_equal (c->msg->type, AMI_MSG_API_INTERVALS);
        const ami_api_intervals_t *iv = &c->msg->api_intervals;
        for (uint32_t i = 0; i < iv->count; i++) {
            if (iv->records [i].end_s != expected_end)
                fail_msg ("%s: interval ending %u where %u was expected", meter,
                          iv->records [i].end_s, expected_end);
            assert_true (iv->records [i].import_wh >= last_import);
            last_import = iv->records [i].import_wh;
            expected_end += 900;
            got++;
        }
        more = iv->more;
        if (more) {
            assert_true (iv->count > 0);
            from_ms = (uint64_t) iv->records [iv->count - 1].end_s * 1000 + 1;
        }
    }
    assert_int_equal (got, (uint32_t) days * PROFILE_DAY);
}

/*  FUN-INT-1: a simulated day of every meter's 15-minute load profile, pushed
    as fast as credit allows through both aggregators and head ends, is in
    the MDMS complete and exactly once: the MDMS counts exactly meters x 96
    new intervals, and every meter's day reads back contiguous. */
static void
test_fun_int_1_day_exactly_once (void **state)
{
    chain_t *c = *state;
    zsock_t *op = s_operator (c, c->operator_cert);
    const uint64_t expected = (uint64_t) FLEETS * METERS * PROFILE_DAY;
    assert_int_equal (s_wait_stored (c, op, expected, 4 * DEADLINE_MS), expected);
    for (int f = 0; f < FLEETS; f++)
        for (int m = 1; m <= METERS; m++) {
            char meter [16];
            snprintf (meter, sizeof meter, "MTR-%06d", f * METERS + m);
            s_check_meter_intervals (c, op, meter, 1);
        }
    /* nothing more arrives: the fleets stopped at their limit */
    assert_int_equal (s_mdms_stat (c, op, "intervals_stored"), expected);
    assert_int_equal (s_mdms_stat (c, op, "blocks_rejected"), 0);
    zsock_destroy (&op);
}

/*  FUN-INT-1, SEC-AVAIL-1: a head end stopped while three days of interval
    data flow loses nothing: every interval is stored once, the rest goes
    through the other head end. */
static void
test_fun_int_1_headend_stopped_midflow (void **state)
{
    chain_t *c = *state;
    zsock_t *op = s_operator (c, c->operator_cert);
    const uint64_t expected = (uint64_t) FLEETS * METERS * 3 * PROFILE_DAY;
    /* stop headend-1 once some, not all, data is stored */
    uint64_t before = s_wait_stored (c, op, expected / 4, DEADLINE_MS);
    assert_true (before >= expected / 4);
    assert_true (before < expected);
    zactor_destroy (&c->headend [0]);
    assert_int_equal (s_wait_stored (c, op, expected, 4 * DEADLINE_MS), expected);
    for (int f = 0; f < FLEETS; f++)
        for (int m = 1; m <= METERS; m++) {
            char meter [16];
            snprintf (meter, sizeof meter, "MTR-%06d", f * METERS + m);
            s_check_meter_intervals (c, op, meter, 3);
        }
    assert_int_equal (s_mdms_stat (c, op, "intervals_stored"), expected);
    print_message ("head end stopped after %" PRIu64 " of %" PRIu64 " intervals were stored\n",
                   before, expected);
    zsock_destroy (&op);
}

/* ------------------------------------------------------------------ */
/*  Load-profile recovery (SEC-INT-5)                                   */

static int
s_setup_headends_down (void **state)
{
    s_headends_down = true;
    int rc = s_setup_profile (state, PROFILE_DAY, 0);
    s_headends_down = false;
    return rc;
}

/* Frame `index` of fleet i's STATUS (ami_meter.h), as a number. */
static uint64_t
s_fleet_stat (chain_t *c, int i, int index)
{
    zsock_set_rcvtimeo (c->fleet [i], DEADLINE_MS);
    zstr_send (c->fleet [i], "STATUS");
    zmsg_t *reply = zmsg_recv (c->fleet [i]);
    assert_non_null (reply);
    assert_true ((int) zmsg_size (reply) > index);
    zframe_t *frame = zmsg_first (reply);
    for (int k = 0; k < index; k++)
        frame = zmsg_next (reply);
    char text [32];
    snprintf (text, sizeof text, "%.*s", (int) zframe_size (frame), (char *) zframe_data (frame));
    zmsg_destroy (&reply);
    return strtoull (text, NULL, 10);
}
#define FLEET_PROFILE_DONE      12      /* STATUS frames (ami_meter.h) */
#define FLEET_PROFILE_RECOVERED 17

/* The stored intervals of meter in the simulated day (one page holds a day). */
static uint32_t
s_stored_in_day (chain_t *c, zsock_t *op, const char *meter)
{
    ami_msg_reset (c->msg, AMI_MSG_API_REQ);
    ami_api_req_t *req = &c->msg->api_req;
    randombytes_buf (req->corr, sizeof req->corr);
    req->action = AMI_ACT_INTERVALS;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter);
    req->from_ms = (uint64_t) PROFILE_START_S * 1000;
    req->to_ms = ((uint64_t) PROFILE_START_S + 86400) * 1000;
    assert_int_equal (s_api_exchange (c, op, DEADLINE_MS), AMI_OK);
    assert_int_equal (c->msg->type, AMI_MSG_API_INTERVALS);
    assert_false (c->msg->api_intervals.more);
    return c->msg->api_intervals.count;
}

/* recover of meter over the simulated day, retried (with a new corr) while
   the chain is still coming back (no route yet, unreachable, timeout);
   asserts it succeeds within the deadline with the meter's reading. */
static void
s_recover_day (chain_t *c, zsock_t *op, const char *meter)
{
    int64_t deadline = zclock_mono () + 4 * DEADLINE_MS;
    while (true) {
        ami_msg_reset (c->msg, AMI_MSG_API_REQ);
        ami_api_req_t *req = &c->msg->api_req;
        randombytes_buf (req->corr, sizeof req->corr);
        req->action = AMI_ACT_RECOVER;
        snprintf (req->meter_id, sizeof req->meter_id, "%s", meter);
        req->from_ms = (uint64_t) PROFILE_START_S * 1000;
        req->to_ms = ((uint64_t) PROFILE_START_S + 86400) * 1000;
        req->timeout_ms = (uint32_t) (20 * HEARTBEAT_MS);
        int rc = s_api_exchange (c, op, DEADLINE_MS);
        if (rc == AMI_OK && c->msg->type == AMI_MSG_API_READINGS) {
            assert_int_equal (c->msg->api_readings.count, 1);
            assert_string_equal (c->msg->api_readings.readings [0].reading.meter_id, meter);
            return;
        }
        if (rc == AMI_OK && c->msg->type == AMI_MSG_ERROR) {
            int code = c->msg->error.code;
            if (code != AMI_E_NO_ROUTE && code != AMI_E_UNREACHABLE && code != AMI_E_TIMEOUT
            &&  code != AMI_E_RATE_LIMITED)
                fail_msg ("recover %s: %s", meter, ami_errname (code));
        }
        assert_true (zclock_mono () < deadline);
        zclock_sleep (HEARTBEAT_MS);    /* pacing while the chain comes back, with a deadline */
    }
}

/*  SEC-INT-5, end to end: an aggregator takes custody of a day of its
    fleet's interval data (acknowledged: the fleet forgets it) while no head
    end is up, then is lost with its custody store (stopped, state
    directory deleted, started again empty). The MDMS gets the other
    aggregator's day only: the lost meters show the hole (no interval).
    `recover` of each lost meter over the day makes the meter send it
    again; the MDMS then holds every interval exactly once, and a second
    recover only counts duplicates. */
static void
test_sec_int_5_recover_lost_custody (void **state)
{
    chain_t *c = *state;
    /* 1. both fleets make their day; the aggregators take custody of it
          all (the fleets count every interval acknowledged) */
    int64_t deadline = zclock_mono () + 4 * DEADLINE_MS;
    while (s_fleet_stat (c, 0, FLEET_PROFILE_DONE) != 1 || s_fleet_stat (c, 1, FLEET_PROFILE_DONE) != 1) {
        assert_true (zclock_mono () < deadline);
        zclock_sleep (HEARTBEAT_MS);    /* pacing of the status polls, with a deadline */
    }
    /* 2. agg-1 and its custody store are lost: stopped, state deleted,
          started again on the same endpoint with nothing */
    zactor_destroy (&c->agg [0]);
    char *agg_state = ami_test_path (c->dir, "agg-1-state");
    ami_test_rmtree (agg_state);
    free (agg_state);
    s_start_aggregator (c, 0);
    /* 3. the head ends come back: agg-2 delivers fleet-2's day */
    for (int i = 0; i < HEADENDS; i++)
        s_start_headend (c, i);
    zsock_t *op = s_operator (c, c->operator_cert);
    const uint64_t day = (uint64_t) METERS * PROFILE_DAY;
    assert_int_equal (s_wait_stored (c, op, day, 4 * DEADLINE_MS), day);
    for (int m = 1; m <= METERS; m++) {
        char meter [16];
        snprintf (meter, sizeof meter, "MTR-%06d", METERS + m);
        s_check_meter_intervals (c, op, meter, 1);
        /* fleet-1's meters: the hole (what `amictl gaps` lists) */
        snprintf (meter, sizeof meter, "MTR-%06d", m);
        assert_int_equal (s_stored_in_day (c, op, meter), 0);
    }
    assert_int_equal (s_mdms_stat (c, op, "intervals_stored"), day);
    uint64_t dup_before = s_mdms_stat (c, op, "intervals_dup");

    /* 4. recover each lost meter's day: every interval comes, once */
    for (int m = 1; m <= METERS; m++) {
        char meter [16];
        snprintf (meter, sizeof meter, "MTR-%06d", m);
        s_recover_day (c, op, meter);
    }
    assert_int_equal (s_wait_stored (c, op, 2 * day, 4 * DEADLINE_MS), 2 * day);
    for (int m = 1; m <= METERS; m++) {
        char meter [16];
        snprintf (meter, sizeof meter, "MTR-%06d", m);
        s_check_meter_intervals (c, op, meter, 1);
    }
    uint64_t recovered = s_fleet_stat (c, 0, FLEET_PROFILE_RECOVERED);
    assert_true (recovered >= day);     /* a retried recover may send a meter's day twice */
    assert_int_equal (s_fleet_stat (c, 1, FLEET_PROFILE_RECOVERED), 0);

    /* 5. recovering a stored day again: duplicates, nothing stored twice */
    s_recover_day (c, op, "MTR-000001");
    deadline = zclock_mono () + 4 * DEADLINE_MS;
    while (s_mdms_stat (c, op, "intervals_dup") < dup_before + PROFILE_DAY) {
        assert_true (zclock_mono () < deadline);
        zclock_sleep (HEARTBEAT_MS);    /* pacing of the status polls, with a deadline */
    }
    assert_true (s_fleet_stat (c, 0, FLEET_PROFILE_RECOVERED) >= recovered + PROFILE_DAY);
    assert_int_equal (s_mdms_stat (c, op, "intervals_stored"), 2 * day);
    assert_int_equal (s_mdms_stat (c, op, "intervals_conflict"), 0);
    assert_int_equal (s_mdms_stat (c, op, "blocks_rejected"), 0);
    s_check_meter_intervals (c, op, "MTR-000001", 1);
    zsock_destroy (&op);
}

int
main (void)
{
    if (sodium_init () < 0)
        return 1;
    const char *heartbeat = getenv ("AMI_TEST_HEARTBEAT_MS");
    if (heartbeat && atoi (heartbeat) >= 10)
        s_heartbeat_ms = atoi (heartbeat);
    zsys_init ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_read_through_chain, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_history_survives_mdms_restart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_headend_failover, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unlisted_key_refused_everywhere, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_malformed_frames_from_listed_peers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_val_1_oversize_frames, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fun_int_1_day_exactly_once, s_setup_day, s_teardown),
        cmocka_unit_test_setup_teardown (test_fun_int_1_headend_stopped_midflow, s_setup_three_days, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_int_5_recover_lost_custody, s_setup_headends_down, s_teardown),
    };
    return cmocka_run_group_tests_name ("chain", tests, NULL, NULL);
}
