/*  test_mdms.c - the MDMS, in process, over CURVE: on-demand reads through
    a real ami_broker to a hand-written MDP worker that plays head end,
    aggregator and meter; history, registry, status, roles, events, and
    the database schema (FUN-READ-1, FUN-READ-2, SEC-AUTHZ-1, SEC-INT-1,
    SEC-INT-2, SEC-INT-3, SEC-NR-1, SEC-FAIL-1, SEC-VAL-1, SEC-AVAIL-2).

    The worker and the operator client are written from PROTOCOL.md and
    RFC 7 here, sharing no code with services/mdms/: frames are built by
    hand, the meter's answer is made the way a real meter makes it (meter
    model registers, READING sealed to the MDMS box key, READ_RESP signed
    with the meter's own derived key). Every wait has a deadline; the only
    sleeps are poll intervals of bounded "wait until" loops.

    One ami_auth serves the whole process (zauth is process-wide); its
    allow-list is the union of what the broker (MDMS, head end) and the
    MDMS (operators, head end) accept.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_auth.h"
#include "ami_broker.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_mdms.h"
#include "ami_mdms_acl.h"
#include "ami_mdms_db.h"
#include "ami_meter_model.h"
#include "ami_msg.h"
#include "ami_store.h"
#include "ami_test.h"

/*  Deadlines: generous for a loaded 2-core VM under valgrind; "nothing
    arrives" waits are short but far above a loopback round trip. */
#define WAIT_MS         5000
#define QUIET_MS        300
#define POLL_MS         10
/*  MDMS heartbeat in these tests: services go DOWN after 3 (300 ms). */
#define HEARTBEAT_MS    100
/*  Meters in the registry: more than one METERS page (256). */
#define METERS          300
/*  Meters above this index are under AGG-NONE, which no worker serves. */
#define AGG_T_METERS    295
#define MDMS_ID         "mdms-1"
#define BROKER_ID       "broker-1"
#define HEADEND_ID      "HE-1"

/*  RFC 7 */
#define W_HEADER        "MDPW01"
#define W_READY         0x01
#define W_REQUEST       0x02
#define W_REPLY         0x03
#define W_HEARTBEAT     0x04
#define W_DISCONNECT    0x05


/* ---------------------------------------------------------------------- */
/*  Process-wide fixture: certificates, allow-list, keys, registry         */

typedef struct {
    char *dir;
    char *registry;
    ami_auth_t *auth;
    ami_cert_t *broker_cert;
    ami_cert_t *mdms_cert;
    ami_cert_t *headend_cert;
    ami_cert_t *operator_cert;      /* alice, OPERATOR */
    ami_cert_t *viewer_cert;        /* victor, VIEWER */
    ami_e2e_mdms_t keys;            /* the MDMS's application keys */
    ami_e2e_mdms_t other_keys;      /* someone else's: wrong sealing key */
    uint8_t fleet_seed [AMI_E2E_SEED_SIZE];
    int db_serial;
} group_t;

static group_t g;

static ami_cert_t *
s_cert (const char *role, const char *id, const char *ami_role, const char *allow_dir)
{
    int err = 0;
    ami_cert_t *cert = ami_cert_new (role, id, &err);
    assert_non_null (cert);
    if (ami_role)
        assert_int_equal (ami_cert_set_meta (cert, AMI_MDMS_META_AMI_ROLE, ami_role), AMI_OK);
    if (allow_dir) {
        char name [128];
        snprintf (name, sizeof name, "%s/%s.cert", allow_dir, id);
        assert_int_equal (ami_cert_save_public (cert, name), AMI_OK);
    }
    return cert;
}

/*  Registry line of meter number i. */
static void
s_registry_line (FILE *file, uint32_t i)
{
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (g.fleet_seed, i, pk, NULL);
    char hex [2 * AMI_E2E_SIGN_PK_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    fprintf (file, "MTR-%06u\tFLEET-1\t%s\t%s\n", i, i <= AGG_T_METERS ? "AGG-T" : "AGG-NONE", hex);
}

static int
s_group_setup (void **state)
{
    (void) state;
    //  Quiet by default; AMI_TEST_VERBOSE=1 shows every step of every read
    ami_log_set_level (getenv ("AMI_TEST_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_WARN);
    if (sodium_init () < 0)
        return -1;
    g.dir = ami_test_tmpdir ("mdms");
    if (!g.dir)
        return -1;
    char *allow = ami_test_path (g.dir, "allow");
    char *app = ami_test_path (g.dir, "app");
    char *other = ami_test_path (g.dir, "other");
    char *seed = ami_test_path (g.dir, "fleet.seed");
    mkdir (allow, 0700);
    mkdir (app, 0700);
    mkdir (other, 0700);
    g.broker_cert = s_cert ("broker", BROKER_ID, NULL, NULL);
    g.mdms_cert = s_cert ("mdms", MDMS_ID, NULL, allow);
    g.headend_cert = s_cert ("headend", HEADEND_ID, NULL, allow);
    g.operator_cert = s_cert ("operator", "alice", "OPERATOR", allow);
    g.viewer_cert = s_cert ("operator", "victor", "VIEWER", allow);
    int err = 0;
    g.auth = ami_auth_new (allow, &err);
    if (!g.auth
    ||  ami_e2e_mdms_generate (app, MDMS_ID) || ami_e2e_mdms_load (&g.keys, app, true)
    ||  ami_e2e_mdms_generate (other, "mdms-x") || ami_e2e_mdms_load (&g.other_keys, other, true)
    ||  ami_e2e_fleet_generate (seed, "FLEET-1") || ami_e2e_fleet_load (seed, g.fleet_seed))
        return -1;
    g.registry = ami_test_path (g.dir, "meters.tsv");
    FILE *file = fopen (g.registry, "w");
    if (!file)
        return -1;
    fprintf (file, "# meter\tfleet\taggregator\tsign_pk\n\n");
    for (uint32_t i = 1; i <= METERS; i++)
        s_registry_line (file, i);
    fclose (file);
    free (allow);
    free (app);
    free (other);
    free (seed);
    return 0;
}

static int
s_group_teardown (void **state)
{
    (void) state;
    ami_auth_destroy (&g.auth);
    ami_cert_destroy (&g.broker_cert);
    ami_cert_destroy (&g.mdms_cert);
    ami_cert_destroy (&g.headend_cert);
    ami_cert_destroy (&g.operator_cert);
    ami_cert_destroy (&g.viewer_cert);
    ami_e2e_mdms_wipe (&g.keys);
    ami_e2e_mdms_wipe (&g.other_keys);
    ami_test_rmtree (g.dir);
    free (g.dir);
    free (g.registry);
    return 0;
}


/* ---------------------------------------------------------------------- */
/*  Frames by hand                                                          */

static zmsg_t *
s_recv (zsock_t *sock, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    zmsg_t *msg = NULL;
    if (zpoller_wait (poller, timeout_ms) == sock)
        msg = zmsg_recv (sock);
    zpoller_destroy (&poller);
    return msg;
}

static zsock_t *
s_curve (int type, const char *endpoint, ami_cert_t *cert, ami_cert_t *server)
{
    zsock_t *sock = zsock_new (type);
    assert_non_null (sock);
    zsock_set_linger (sock, 0);
    assert_int_equal (ami_auth_client (sock, cert, ami_cert_public_txt (server)), AMI_OK);
    assert_int_equal (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

/*  Encode m and return it as a frame's worth of bytes in buf. */
static size_t
s_encode (ami_msg_t *m, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    assert_int_equal (ami_msg_encode (m, buf, cap, &len), AMI_OK);
    return len;
}


/* ---------------------------------------------------------------------- */
/*  The meter side: an MDP worker for agg.AGG-T (RFC 7, over a DEALER)     */

typedef enum {
    W_GOOD,             /* a meter's correct answer */
    W_SILENT,           /* never answers */
    W_REPLAY,           /* the meter refuses: status AMI_E_REPLAY */
    W_BAD_SIG,          /* signature does not verify */
    W_OTHER_SEAL,       /* READING sealed to another key */
    W_WRONG_INNER_ID,   /* READING bound to another request id */
    W_UNREACHABLE       /* the aggregator says: meter unreachable */
} wmode_t;

#define MAX_SEEN 64

typedef struct {
    zsock_t *sock;
    wmode_t modes [8];          /* mode of request k; the last one repeats */
    int mode_count;
    int served;                 /* READ_REQs received */
    uint64_t counters [MAX_SEEN];
    uint8_t request_ids [MAX_SEEN][AMI_REQUEST_ID_SIZE];
    ami_reading_t last_good;    /* the last reading answered with W_GOOD */
    ami_msg_t *msg;
} worker_t;

static void
s_worker_start (worker_t *w, const char *broker_endpoint, const char *service)
{
    memset (w, 0, sizeof *w);
    w->msg = ami_msg_new ();
    assert_non_null (w->msg);
    w->sock = s_curve (ZMQ_DEALER, broker_endpoint, g.headend_cert, g.broker_cert);
    zmsg_t *ready = zmsg_new ();
    zmsg_addmem (ready, "", 0);
    zmsg_addstr (ready, W_HEADER);
    zmsg_addmem (ready, (byte []) { W_READY }, 1);
    zmsg_addstr (ready, service);
    assert_int_equal (zmsg_send (&ready, w->sock), 0);
    w->modes [0] = W_GOOD;
    w->mode_count = 1;
}

static void
s_worker_modes (worker_t *w, int count, ...)
{
    va_list args;
    va_start (args, count);
    for (int i = 0; i < count; i++)
        w->modes [i] = (wmode_t) va_arg (args, int);
    va_end (args);
    w->mode_count = count;
}

static void
s_worker_stop (worker_t *w)
{
    zsock_destroy (&w->sock);
    ami_msg_destroy (&w->msg);
}

static void
s_worker_disconnect (worker_t *w)
{
    zmsg_t *bye = zmsg_new ();
    zmsg_addmem (bye, "", 0);
    zmsg_addstr (bye, W_HEADER);
    zmsg_addmem (bye, (byte []) { W_DISCONNECT }, 1);
    assert_int_equal (zmsg_send (&bye, w->sock), 0);
}

/*  Meter number of "MTR-nnnnnn". */
static uint32_t
s_meter_index (const char *meter_id)
{
    assert_int_equal (strncmp (meter_id, "MTR-", 4), 0);
    return (uint32_t) atoi (meter_id + 4);
}

/*  Build a meter's READ_RESP (or an aggregator's ERROR) for req. */
static size_t
s_meter_answer (worker_t *w, const ami_read_req_t *req, wmode_t mode, uint8_t *out, size_t cap)
{
    ami_msg_t *m = w->msg;
    uint32_t index = s_meter_index (req->meter_id);
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE], sk [AMI_E2E_SIGN_SK_SIZE];
    ami_e2e_meter_keypair (g.fleet_seed, index, pk, sk);
    if (mode == W_UNREACHABLE) {
        ami_msg_reset (m, AMI_MSG_ERROR);
        m->error.has_request_id = true;
        memcpy (m->error.request_id, req->request_id, AMI_REQUEST_ID_SIZE);
        m->error.code = AMI_E_UNREACHABLE;
        strcpy (m->error.origin, "AGG-T");
        strcpy (m->error.text, "meter did not answer");
        return s_encode (m, out, cap);
    }
    uint8_t sealed [AMI_MAX_SEALED];
    size_t sealed_len = 0;
    uint16_t status = AMI_OK;
    if (mode == W_REPLAY)
        status = AMI_E_REPLAY;
    else {
        //  The reading, as a meter samples and binds it
        ami_meter_model_t model;
        ami_meter_model_init (&model, index, 42, (int64_t) (req->issued_ms / 1000) - 3600);
        ami_msg_reset (m, AMI_MSG_READING);
        ami_meter_model_sample (&model, req->meter_id, (uint64_t) zclock_time (), &m->reading);
        memcpy (m->reading.request_id, req->request_id, AMI_REQUEST_ID_SIZE);
        if (mode == W_WRONG_INNER_ID)
            m->reading.request_id [0] ^= 0xff;
        ami_reading_t reading = m->reading;
        uint8_t plain [AMI_MAX_SEALED];
        size_t plain_len = s_encode (m, plain, sizeof plain - AMI_E2E_SEAL_OVERHEAD);
        const uint8_t *box_pk = mode == W_OTHER_SEAL ? g.other_keys.box_pk : g.keys.box_pk;
        assert_int_equal (ami_e2e_seal (plain, plain_len, box_pk, sealed, sizeof sealed,
                                        &sealed_len), AMI_OK);
        if (mode == W_GOOD)
            w->last_good = reading;
    }
    ami_msg_reset (m, AMI_MSG_READ_RESP);
    strcpy (m->read_resp.meter_id, req->meter_id);
    memcpy (m->read_resp.request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    m->read_resp.status = status;
    m->read_resp.sealed = sealed;
    m->read_resp.sealed_size = status ? 0 : sealed_len;
    size_t len = s_encode (m, out, cap);
    assert_int_equal (ami_e2e_sign (out, len, sk), AMI_OK);
    if (mode == W_BAD_SIG)
        out [len - 1] ^= 0x01;          //  one bit of the signature
    sodium_memzero (sk, sizeof sk);
    return len;
}

/*  Handle one message from the broker: HEARTBEAT is ignored, REQUEST is
    checked as a meter would and answered per the worker's mode. */
static void
s_worker_serve (worker_t *w)
{
    zmsg_t *msg = zmsg_recv (w->sock);
    assert_non_null (msg);
    assert_true (zmsg_size (msg) >= 3);
    zframe_t *empty = zmsg_pop (msg);
    zframe_t *header = zmsg_pop (msg);
    zframe_t *command = zmsg_pop (msg);
    assert_int_equal (zframe_size (empty), 0);
    assert_true (zframe_streq (header, W_HEADER));
    assert_int_equal (zframe_size (command), 1);
    byte cmd = zframe_data (command) [0];
    zframe_destroy (&empty);
    zframe_destroy (&header);
    zframe_destroy (&command);
    if (cmd != W_REQUEST) {
        assert_int_equal (cmd, W_HEARTBEAT);
        zmsg_destroy (&msg);
        return;
    }
    //  REQUEST: client address, "", body (exactly one frame: PROTOCOL 8.4)
    assert_int_equal (zmsg_size (msg), 3);
    zframe_t *client = zmsg_pop (msg);
    zframe_t *delim = zmsg_pop (msg);
    zframe_t *body = zmsg_pop (msg);
    assert_int_equal (zframe_size (delim), 0);
    //  The meter's checks: decode, MDMS signature, target, freshness
    assert_int_equal (ami_msg_decode (w->msg, zframe_data (body), zframe_size (body)), AMI_OK);
    assert_int_equal (w->msg->type, AMI_MSG_READ_REQ);
    assert_int_equal (ami_e2e_verify (zframe_data (body), zframe_size (body), g.keys.sign_pk),
                      AMI_OK);
    ami_read_req_t req = w->msg->read_req;
    assert_true (req.counter >= 1);
    assert_true (req.expires_ms > req.issued_ms);
    assert_true (req.issued_ms <= (uint64_t) zclock_time () + 1000);
    if (w->served < MAX_SEEN) {
        w->counters [w->served] = req.counter;
        memcpy (w->request_ids [w->served], req.request_id, AMI_REQUEST_ID_SIZE);
    }
    wmode_t mode = w->modes [w->served < w->mode_count ? w->served : w->mode_count - 1];
    w->served++;
    if (mode != W_SILENT) {
        uint8_t answer [AMI_MAX_SEALED + 512];
        size_t len = s_meter_answer (w, &req, mode, answer, sizeof answer);
        zmsg_t *reply = zmsg_new ();
        zmsg_addmem (reply, "", 0);
        zmsg_addstr (reply, W_HEADER);
        zmsg_addmem (reply, (byte []) { W_REPLY }, 1);
        zmsg_addmem (reply, zframe_data (client), zframe_size (client));
        zmsg_addmem (reply, "", 0);
        zmsg_addmem (reply, answer, len);
        assert_int_equal (zmsg_send (&reply, w->sock), 0);
    }
    zframe_destroy (&client);
    zframe_destroy (&delim);
    zframe_destroy (&body);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Per-test environment: broker + MDMS + worker + operator client          */

typedef struct {
    zactor_t *broker;
    char *broker_endpoint;
    zactor_t *mdms;
    char *api;
    char *ingest;
    char *events;
    char *db;
    zsock_t *client;            /* alice (OPERATOR), DEALER */
    worker_t worker;
    bool has_worker;
    ami_msg_t *reply;
    ami_mdms_config_t config;
} env_t;

static void
s_mdms_start (env_t *env)
{
    env->mdms = ami_mdms_new (&env->config);
    assert_non_null (env->mdms);
    zsock_set_rcvtimeo (env->mdms, WAIT_MS);
    assert_int_equal (zstr_send (env->mdms, "ENDPOINT"), 0);
    zmsg_t *endpoints = zmsg_recv (env->mdms);
    assert_non_null (endpoints);
    assert_int_equal (zmsg_size (endpoints), 3);
    env->api = zmsg_popstr (endpoints);
    env->ingest = zmsg_popstr (endpoints);
    env->events = zmsg_popstr (endpoints);
    zmsg_destroy (&endpoints);
    assert_true (strncmp (env->api, "tcp://127.0.0.1:", 16) == 0 && atoi (env->api + 16) > 0);
    assert_true (atoi (env->ingest + 16) > 0);
    assert_true (atoi (env->events + 16) > 0);
    env->client = s_curve (ZMQ_DEALER, env->api, g.operator_cert, g.mdms_cert);
}

static void
s_mdms_stop (env_t *env)
{
    zsock_destroy (&env->client);
    zactor_destroy (&env->mdms);
    zstr_free (&env->api);
    zstr_free (&env->ingest);
    zstr_free (&env->events);
}

/*  Start broker and MDMS on a fresh database; the worker is optional. */
static void
s_env_start (env_t *env, bool with_worker)
{
    memset (env, 0, sizeof *env);
    env->reply = ami_msg_new ();
    assert_non_null (env->reply);
    ami_broker_config_t broker = { 0 };
    broker.endpoint = "tcp://127.0.0.1:*";
    broker.server_cert = g.broker_cert;
    broker.liveness = 30;               //  the test worker does not heartbeat
    env->broker = ami_broker_new (&broker);
    assert_non_null (env->broker);
    zsock_set_rcvtimeo (env->broker, WAIT_MS);
    zstr_send (env->broker, "ENDPOINT");
    env->broker_endpoint = zstr_recv (env->broker);
    assert_non_null (env->broker_endpoint);

    char name [32];
    snprintf (name, sizeof name, "db-%d", ++g.db_serial);
    env->db = ami_test_path (g.dir, name);
    ami_mdms_config_t *c = &env->config;
    c->node_id = MDMS_ID;
    c->cert = g.mdms_cert;
    c->api_endpoint = "tcp://127.0.0.1:*";
    c->ingest_endpoint = "tcp://127.0.0.1:*";
    c->events_endpoint = "tcp://127.0.0.1:*";
    c->broker_endpoint = env->broker_endpoint;
    c->broker_key = ami_cert_public_txt (g.broker_cert);
    c->broker_id = BROKER_ID;
    c->db_dir = env->db;
    c->map_size = 64u << 20;
    c->keys = &g.keys;
    c->registry_path = g.registry;
    c->read_timeout_ms = 2000;
    c->heartbeat_ms = HEARTBEAT_MS;
    s_mdms_start (env);
    if (with_worker) {
        s_worker_start (&env->worker, env->broker_endpoint, "agg.AGG-T");
        env->has_worker = true;
    }
}

static void
s_env_stop (env_t *env)
{
    s_mdms_stop (env);
    if (env->has_worker)
        s_worker_stop (&env->worker);
    zactor_destroy (&env->broker);
    zstr_free (&env->broker_endpoint);
    ami_msg_destroy (&env->reply);
    free (env->db);
}

/*  Send an API_REQ as a REQ-compatible DEALER: [""][API_REQ]. */
static void
s_request (zsock_t *client, uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
           const char *meter_id, uint64_t from_ms, uint64_t to_ms, uint32_t limit,
           uint32_t timeout_ms)
{
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_API_REQ);
    randombytes_buf (corr, AMI_REQUEST_ID_SIZE);
    memcpy (m->api_req.corr, corr, AMI_REQUEST_ID_SIZE);
    m->api_req.action = (uint8_t) action;
    snprintf (m->api_req.meter_id, sizeof m->api_req.meter_id, "%s", meter_id ? meter_id : "");
    m->api_req.from_ms = from_ms;
    m->api_req.to_ms = to_ms;
    m->api_req.limit = limit;
    m->api_req.timeout_ms = timeout_ms;
    uint8_t buf [256];
    size_t len = s_encode (m, buf, sizeof buf);
    ami_msg_destroy (&m);
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, buf, len);
    assert_int_equal (zmsg_send (&msg, client), 0);
}

/*  Wait for the reply on client, serving the worker meanwhile. Returns the
    decoded reply (env->reply), or NULL on timeout. */
static ami_msg_t *
s_reply (env_t *env, zsock_t *client, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (client, NULL);
    if (env->has_worker && env->worker.sock)
        zpoller_add (poller, env->worker.sock);
    int64_t deadline = zclock_mono () + timeout_ms;
    ami_msg_t *result = NULL;
    while (!result) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            break;
        void *which = zpoller_wait (poller, (int) left);
        if (!which)
            break;
        if (env->has_worker && which == env->worker.sock) {
            s_worker_serve (&env->worker);
            continue;
        }
        zmsg_t *msg = zmsg_recv (client);
        assert_non_null (msg);
        assert_int_equal (zmsg_size (msg), 2);          //  "", reply
        assert_int_equal (zframe_size (zmsg_first (msg)), 0);
        zframe_t *body = zmsg_last (msg);
        assert_int_equal (ami_msg_decode (env->reply, zframe_data (body), zframe_size (body)),
                          AMI_OK);
        zmsg_destroy (&msg);
        result = env->reply;
    }
    zpoller_destroy (&poller);
    return result;
}

/*  One API call from client; returns the reply, asserting it came. */
static ami_msg_t *
s_call (env_t *env, zsock_t *client, uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
        const char *meter_id, uint64_t from_ms, uint64_t to_ms, uint32_t limit,
        uint32_t timeout_ms)
{
    s_request (client, corr, action, meter_id, from_ms, to_ms, limit, timeout_ms);
    ami_msg_t *reply = s_reply (env, client, WAIT_MS + (int) timeout_ms);
    assert_non_null (reply);
    return reply;
}

/*  Assert reply is ERROR(corr, code) from the MDMS. */
static void
s_assert_error (ami_msg_t *reply, const uint8_t *corr, int code)
{
    if (reply->type != AMI_MSG_ERROR || reply->error.code != code)
        fail_msg ("expected ERROR %s, got %s %s", ami_errname (code),
                  ami_msg_type_name (reply->type),
                  reply->type == AMI_MSG_ERROR ? ami_errname (reply->error.code) : "");
    assert_string_equal (reply->error.origin, MDMS_ID);
    if (corr) {
        assert_true (reply->error.has_request_id);
        assert_memory_equal (reply->error.request_id, corr, AMI_REQUEST_ID_SIZE);
    }
    else
        assert_false (reply->error.has_request_id);
}

/*  Find meter_id's row through METERS; returns its state, or -1. */
static int
s_meter_state (env_t *env, const char *meter_id, uint64_t *last_read_ms)
{
    //  "after" = the id with its last digit decremented, or dropped if it
    //  is 0: in this registry the first meter after that is meter_id
    char after [AMI_MAX_ID + 1];
    snprintf (after, sizeof after, "%s", meter_id);
    size_t end = strlen (after) - 1;
    if (after [end] > '0')
        after [end]--;
    else
        after [end] = 0;
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = s_call (env, env->client, corr, AMI_ACT_METERS, after, 0, 0, 1, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    if (r->api_meters.count != 1 || strcmp (r->api_meters.meters [0].meter_id, meter_id))
        return -1;
    if (last_read_ms)
        *last_read_ms = r->api_meters.meters [0].last_read_ms;
    return r->api_meters.meters [0].state;
}

/*  Wait until METERS shows meter_id in state (the MMI poll has run). */
static void
s_wait_meter_state (env_t *env, const char *meter_id, int state)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (zclock_mono () < deadline) {
        if (s_meter_state (env, meter_id, NULL) == state)
            return;
        zclock_sleep (POLL_MS);
    }
    fail_msg ("meter %s never reached state %d", meter_id, state);
}

/*  An on-demand read that must succeed; returns the READ_REQ counter the
    worker saw for its last try. */
static uint64_t
s_read_ok (env_t *env, const char *meter_id)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int served = env->worker.served;
    ami_msg_t *r = s_call (env, env->client, corr, AMI_ACT_READ, meter_id, 0, 0, 0, 0);
    if (r->type != AMI_MSG_API_READINGS)
        fail_msg ("read %s: %s %s", meter_id, ami_msg_type_name (r->type),
                  r->type == AMI_MSG_ERROR ? r->error.text : "");
    assert_memory_equal (r->api_readings.corr, corr, AMI_REQUEST_ID_SIZE);
    assert_false (r->api_readings.more);
    assert_int_equal (r->api_readings.count, 1);
    ami_stored_reading_t *row = &r->api_readings.readings [0];
    assert_string_equal (row->reading.meter_id, meter_id);
    assert_memory_equal (row->reading.request_id, corr, AMI_REQUEST_ID_SIZE);
    //  exactly the registers the meter sent
    ami_reading_t *sent = &env->worker.last_good;
    assert_int_equal (row->reading.register_count, sent->register_count);
    assert_int_equal (row->reading.read_ms, sent->read_ms);
    for (uint32_t i = 0; i < sent->register_count; i++) {
        assert_memory_equal (row->reading.registers [i].obis, sent->registers [i].obis,
                             AMI_OBIS_SIZE);
        assert_true (row->reading.registers [i].value == sent->registers [i].value);
        assert_int_equal (row->reading.registers [i].scaler, sent->registers [i].scaler);
        assert_int_equal (row->reading.registers [i].unit, sent->registers [i].unit);
    }
    assert_true (row->requested_ms > 0);
    assert_true (row->requested_ms <= row->stored_ms);
    assert_true (row->stored_ms <= (uint64_t) zclock_time ());
    assert_true (env->worker.served > served);
    //  every try carried this corr as its request id
    for (int k = served; k < env->worker.served && k < MAX_SEEN; k++)
        assert_memory_equal (env->worker.request_ids [k], corr, AMI_REQUEST_ID_SIZE);
    return env->worker.counters [env->worker.served - 1];
}

static ami_msg_t *
s_history (env_t *env, zsock_t *client, const char *meter_id, uint32_t limit)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = s_call (env, client, corr, AMI_ACT_HISTORY, meter_id, 0, 0, limit, 0);
    assert_int_equal (r->type, AMI_MSG_API_READINGS);
    assert_memory_equal (r->api_readings.corr, corr, AMI_REQUEST_ID_SIZE);
    return r;
}

/*  A value from the MDMS's STATUS pipe reply ("name=value"). */
static uint64_t
s_pipe_stat (env_t *env, const char *name)
{
    assert_int_equal (zstr_send (env->mdms, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (env->mdms);
    assert_non_null (reply);
    uint64_t value = UINT64_MAX;
    size_t len = strlen (name);
    for (zframe_t *f = zmsg_first (reply); f; f = zmsg_next (reply)) {
        char *text = zframe_strdup (f);
        if (strncmp (text, name, len) == 0 && text [len] == '=')
            value = strtoull (text + len + 1, NULL, 10);
        zstr_free (&text);
    }
    zmsg_destroy (&reply);
    assert_true (value != UINT64_MAX);
    return value;
}


/* ---------------------------------------------------------------------- */
/*  Tests: on-demand reads                                                  */

/*  FUN-READ-1: a read through the whole chain returns the meter's
    registers, is stored, and shows in HISTORY (newest first, paged). */
static void
test_read_and_history (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000001", AMI_STATE_READY);

    uint64_t c1 = s_read_ok (&env, "MTR-000001");
    ami_reading_t first = env.worker.last_good;
    ami_msg_t *h = s_history (&env, env.client, "MTR-000001", 0);
    assert_int_equal (h->api_readings.count, 1);
    assert_false (h->api_readings.more);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, first.read_ms);
    assert_memory_equal (h->api_readings.readings [0].reading.request_id, first.request_id,
                         AMI_REQUEST_ID_SIZE);
    assert_int_equal (h->api_readings.readings [0].reading.register_count, first.register_count);

    //  A second read: a higher counter, and history lists it first
    zclock_sleep (2);                   //  a distinct meter clock (read_ms)
    uint64_t c2 = s_read_ok (&env, "MTR-000001");
    assert_true (c2 > c1);
    h = s_history (&env, env.client, "MTR-000001", 0);
    assert_int_equal (h->api_readings.count, 2);
    assert_true (h->api_readings.readings [0].reading.read_ms
               > h->api_readings.readings [1].reading.read_ms);
    assert_memory_equal (h->api_readings.readings [0].reading.request_id,
                         env.worker.last_good.request_id, AMI_REQUEST_ID_SIZE);
    //  Paging: limit 1 says there is more
    h = s_history (&env, env.client, "MTR-000001", 1);
    assert_int_equal (h->api_readings.count, 1);
    assert_true (h->api_readings.more);
    //  next page: to_ms = last read_ms - 1
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    uint64_t older = h->api_readings.readings [0].reading.read_ms - 1;
    h = s_call (&env, env.client, corr, AMI_ACT_HISTORY, "MTR-000001", 0, older, 1, 0);
    assert_int_equal (h->type, AMI_MSG_API_READINGS);
    assert_int_equal (h->api_readings.count, 1);
    assert_false (h->api_readings.more);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, first.read_ms);
    //  from > to is a bad request; other meters have no history
    h = s_call (&env, env.client, corr, AMI_ACT_HISTORY, "MTR-000001", 10, 5, 0, 0);
    s_assert_error (h, corr, AMI_E_BAD_REQUEST);
    h = s_history (&env, env.client, "MTR-000002", 0);
    assert_int_equal (h->api_readings.count, 0);

    //  A different meter of the same aggregator, and a meter's last read
    s_read_ok (&env, "MTR-000295");
    uint64_t last = 0;
    assert_int_equal (s_meter_state (&env, "MTR-000295", &last), AMI_STATE_READY);
    assert_int_equal (last, env.worker.last_good.read_ms);
    assert_int_equal (s_pipe_stat (&env, "readings"), 3);
    assert_int_equal (s_pipe_stat (&env, "reads_ok"), 3);
    assert_int_equal (s_pipe_stat (&env, "pending"), 0);
    s_env_stop (&env);
}

/*  SEC-INT-2 / SEC-NR-1: readings and the command counter survive an
    MDMS restart on the same database. */
static void
test_restart_persistence (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    uint64_t c1 = s_read_ok (&env, "MTR-000007");
    zclock_sleep (2);
    uint64_t c2 = s_read_ok (&env, "MTR-000007");
    assert_true (c2 > c1);
    uint64_t reserved = s_pipe_stat (&env, "counter_reserved");
    assert_true (reserved >= c2);

    //  Restart the MDMS only (the broker and the worker stay)
    s_mdms_stop (&env);
    s_mdms_start (&env);
    ami_msg_t *h = s_history (&env, env.client, "MTR-000007", 0);
    assert_int_equal (h->api_readings.count, 2);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, env.worker.last_good.read_ms);
    s_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    uint64_t c3 = s_read_ok (&env, "MTR-000007");
    assert_true (c3 > c2);
    assert_true (c3 > reserved);        //  numbering continues above the mark
    h = s_history (&env, env.client, "MTR-000007", 0);
    assert_int_equal (h->api_readings.count, 3);

    //  And once more: still strictly increasing
    s_mdms_stop (&env);
    s_mdms_start (&env);
    s_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    uint64_t c4 = s_read_ok (&env, "MTR-000007");
    assert_true (c4 > c3);
    s_env_stop (&env);
}

/*  FUN-READ-2: unknown meter, no route, timeout, unreachable - distinct. */
static void
test_read_errors (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Unknown meter: at once
    ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-999999", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    r = s_call (&env, env.client, corr, AMI_ACT_HISTORY, "MTR-999999", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    r = s_call (&env, env.client, corr, AMI_ACT_READ, "", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_BAD_REQUEST);

    //  No worker for AGG-NONE: NO_ROUTE, well before the timeout
    s_wait_meter_state (&env, "MTR-000296", AMI_STATE_DOWN);
    int64_t start = zclock_mono ();
    r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000296", 0, 0, 0, 3000);
    s_assert_error (r, corr, AMI_E_NO_ROUTE);
    assert_true (zclock_mono () - start < 1500);

    //  The aggregator says the meter is unreachable
    s_wait_meter_state (&env, "MTR-000003", AMI_STATE_READY);
    s_worker_modes (&env.worker, 1, W_UNREACHABLE);
    r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_UNREACHABLE);

    //  The meter refuses (its signed status): AMI_E_REPLAY
    s_worker_modes (&env.worker, 1, W_REPLAY);
    r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_REPLAY);

    //  Nothing of that was stored
    ami_msg_t *h = s_history (&env, env.client, "MTR-000003", 0);
    assert_int_equal (h->api_readings.count, 0);

    //  The worker leaves: the route goes, reads fail fast with NO_ROUTE
    s_worker_disconnect (&env.worker);
    s_wait_meter_state (&env, "MTR-000003", AMI_STATE_DOWN);
    r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_NO_ROUTE);
    assert_int_equal (s_pipe_stat (&env, "pending"), 0);
    s_env_stop (&env);
}

/*  A worker that never answers: AMI_E_TIMEOUT within timeout + margin,
    after retries with the same request id and increasing counters. */
static void
test_read_timeout (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000004", AMI_STATE_READY);
    s_worker_modes (&env.worker, 1, W_SILENT);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int64_t start = zclock_mono ();
    ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000004", 0, 0, 0, 600);
    int64_t took = zclock_mono () - start;
    s_assert_error (r, corr, AMI_E_TIMEOUT);
    assert_true (took >= 590);
    assert_true (took < 600 + 1000);
    //  The silent worker holds the first try; the broker queues the others
    assert_int_equal (env.worker.served, 1);
    ami_msg_t *h = s_history (&env, env.client, "MTR-000004", 0);
    assert_int_equal (h->api_readings.count, 0);
    assert_int_equal (s_pipe_stat (&env, "reads_failed"), 1);
    s_env_stop (&env);
}

/*  SEC-INT-1 / SEC-INT-3 / SEC-FAIL-1: a response with a bad signature, or
    sealed to another key, or bound to another request id, is never
    stored; the MDMS keeps retrying and a correct answer then succeeds;
    if none comes, the read times out. */
static void
test_bad_responses (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000005", AMI_STATE_READY);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Always a bad signature: retried, never stored, AMI_E_TIMEOUT
    s_worker_modes (&env.worker, 1, W_BAD_SIG);
    ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000005", 0, 0, 0, 800);
    s_assert_error (r, corr, AMI_E_TIMEOUT);
    assert_true (env.worker.served >= 2);               //  it did retry
    assert_true (env.worker.served <= 4);               //  at most retries + 1 tries
    for (int k = 1; k < env.worker.served; k++) {
        assert_true (env.worker.counters [k] > env.worker.counters [k - 1]);
        assert_memory_equal (env.worker.request_ids [k], corr, AMI_REQUEST_ID_SIZE);
    }
    ami_msg_t *h = s_history (&env, env.client, "MTR-000005", 0);
    assert_int_equal (h->api_readings.count, 0);
    assert_true (s_pipe_stat (&env, "bad_responses") >= 2);

    //  Sealed to another key, then a correct answer: the correct one wins
    s_worker_modes (&env.worker, 2, W_OTHER_SEAL, W_GOOD);
    env.worker.served = 0;              //  modes count from this read
    s_read_ok (&env, "MTR-000005");
    assert_int_equal (env.worker.served, 2);
    assert_true (env.worker.counters [1] > env.worker.counters [0]);
    h = s_history (&env, env.client, "MTR-000005", 0);
    assert_int_equal (h->api_readings.count, 1);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, env.worker.last_good.read_ms);

    //  Bound to another request id (an old reading), then correct
    s_worker_modes (&env.worker, 2, W_WRONG_INNER_ID, W_GOOD);
    env.worker.served = 0;
    zclock_sleep (2);
    s_read_ok (&env, "MTR-000005");
    assert_int_equal (env.worker.served, 2);
    h = s_history (&env, env.client, "MTR-000005", 0);
    assert_int_equal (h->api_readings.count, 2);
    //  only the good answers were stored: the newest is the last good one
    assert_memory_equal (h->api_readings.readings [0].reading.request_id,
                         env.worker.last_good.request_id, AMI_REQUEST_ID_SIZE);
    assert_int_equal (s_pipe_stat (&env, "readings"), 2);
    s_env_stop (&env);
}


/* ---------------------------------------------------------------------- */
/*  Tests: operator API                                                     */

/*  SEC-AUTHZ-1: roles limit actions; only operator keys on the API. */
static void
test_roles (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000006", AMI_STATE_READY);
    s_read_ok (&env, "MTR-000006");
    zsock_t *viewer = s_curve (ZMQ_DEALER, env.api, g.viewer_cert, g.mdms_cert);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  VIEWER may not READ (and the worker never sees a command)
    int served = env.worker.served;
    ami_msg_t *r = s_call (&env, viewer, corr, AMI_ACT_READ, "MTR-000006", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_DENIED);
    assert_int_equal (env.worker.served, served);
    //  ... but may look at history, meters and status
    r = s_history (&env, viewer, "MTR-000006", 0);
    assert_int_equal (r->api_readings.count, 1);
    r = s_call (&env, viewer, corr, AMI_ACT_METERS, "", 0, 0, 5, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    assert_int_equal (r->api_meters.count, 5);
    r = s_call (&env, viewer, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    //  Not implemented yet: a bad request, for any role
    r = s_call (&env, env.client, corr, AMI_ACT_INTERVALS, "MTR-000006", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_BAD_REQUEST);
    assert_non_null (strstr (r->error.text, "not implemented"));
    r = s_call (&env, env.client, corr, AMI_ACT_VERIFY, "MTR-000006", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_BAD_REQUEST);
    assert_true (s_pipe_stat (&env, "denied") >= 1);

    //  A head end's key passes ZAP (it is on the process-wide allow-list)
    //  but is refused on the API
    zsock_t *intruder = s_curve (ZMQ_DEALER, env.api, g.headend_cert, g.mdms_cert);
    r = s_call (&env, intruder, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_DENIED);
    served = env.worker.served;
    r = s_call (&env, intruder, corr, AMI_ACT_READ, "MTR-000006", 0, 0, 0, 0);
    s_assert_error (r, corr, AMI_E_DENIED);
    assert_int_equal (env.worker.served, served);

    //  An operator's key on ingest gets nothing, and is not recorded
    zsock_t *wrong = s_curve (ZMQ_DEALER, env.ingest, g.operator_cert, g.mdms_cert);
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "headend");
    strcpy (m->health.node_id, "FAKE-HE");
    m->health.state = AMI_STATE_READY;
    uint8_t buf [256];
    size_t len = s_encode (m, buf, sizeof buf);
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, wrong);
    assert_null (s_recv (wrong, QUIET_MS));
    r = s_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    for (uint32_t i = 0; i < r->api_status.count; i++)
        assert_string_not_equal (r->api_status.services [i].node_id, "FAKE-HE");

    //  An unlisted key gets nothing at all (ZAP)
    int err = 0;
    ami_cert_t *stranger = ami_cert_new ("operator", "mallory", &err);
    assert_non_null (stranger);
    ami_cert_set_meta (stranger, AMI_MDMS_META_AMI_ROLE, "OPERATOR");
    zsock_t *outsider = s_curve (ZMQ_DEALER, env.api, stranger, g.mdms_cert);
    s_request (outsider, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_null (s_recv (outsider, QUIET_MS));

    ami_msg_destroy (&m);
    zsock_destroy (&outsider);
    ami_cert_destroy (&stranger);
    zsock_destroy (&wrong);
    zsock_destroy (&intruder);
    zsock_destroy (&viewer);
    s_env_stop (&env);
}

/*  METERS pages through the whole registry (300 > one page of 256). */
static void
test_meters_paging (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000001", AMI_STATE_READY);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_METERS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    assert_memory_equal (r->api_meters.corr, corr, AMI_REQUEST_ID_SIZE);
    assert_int_equal (r->api_meters.count, AMI_MAX_API_METERS);
    assert_true (r->api_meters.more);
    int seen = 0;
    char last [AMI_MAX_ID + 1] = "";
    for (uint32_t i = 0; i < r->api_meters.count; i++, seen++) {
        ami_meter_row_t *row = &r->api_meters.meters [i];
        char expected [AMI_MAX_ID + 1];
        snprintf (expected, sizeof expected, "MTR-%06d", seen + 1);
        assert_string_equal (row->meter_id, expected);
        assert_string_equal (row->aggregator_id, "AGG-T");
        assert_int_equal (row->state, AMI_STATE_READY);
        assert_true (row->last_read_ms == 0);
        snprintf (last, sizeof last, "%s", row->meter_id);
    }
    //  Second page, after the last id seen
    r = s_call (&env, env.client, corr, AMI_ACT_METERS, last, 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    assert_int_equal (r->api_meters.count, METERS - AMI_MAX_API_METERS);
    assert_false (r->api_meters.more);
    for (uint32_t i = 0; i < r->api_meters.count; i++, seen++) {
        ami_meter_row_t *row = &r->api_meters.meters [i];
        char expected [AMI_MAX_ID + 1];
        snprintf (expected, sizeof expected, "MTR-%06d", seen + 1);
        assert_string_equal (row->meter_id, expected);
        bool served = seen + 1 <= AGG_T_METERS;
        assert_string_equal (row->aggregator_id, served ? "AGG-T" : "AGG-NONE");
        assert_int_equal (row->state, served ? AMI_STATE_READY : AMI_STATE_DOWN);
    }
    assert_int_equal (seen, METERS);
    //  A small page, and a page past the end
    r = s_call (&env, env.client, corr, AMI_ACT_METERS, "MTR-000010", 0, 0, 3, 0);
    assert_int_equal (r->api_meters.count, 3);
    assert_true (r->api_meters.more);
    assert_string_equal (r->api_meters.meters [0].meter_id, "MTR-000011");
    r = s_call (&env, env.client, corr, AMI_ACT_METERS, "MTR-000300", 0, 0, 0, 0);
    assert_int_equal (r->api_meters.count, 0);
    assert_false (r->api_meters.more);
    assert_int_equal (s_pipe_stat (&env, "meters"), METERS);
    s_env_stop (&env);
}

/*  HEALTH from a head end (its own and forwarded) shows in STATUS, with
    the MDMS and the broker; silent services turn DOWN. Unknown peers are
    greeted with HELLO. */
static void
test_status_health (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, false);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    zsock_t *headend = s_curve (ZMQ_DEALER, env.ingest, g.headend_cert, g.mdms_cert);
    ami_msg_t *m = ami_msg_new ();
    uint8_t buf [512];

    //  HEALTH before any HELLO: the MDMS introduces itself
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "headend");
    strcpy (m->health.node_id, HEADEND_ID);
    m->health.state = AMI_STATE_READY;
    m->health.uptime_ms = 12345;
    size_t health_len = s_encode (m, buf, sizeof buf);
    zstr_send (headend, "");            //  an empty frame: dropped, no HELLO
    zmsg_t *msg = s_recv (headend, QUIET_MS);
    assert_null (msg);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, health_len);
    zmsg_send (&msg, headend);
    msg = s_recv (headend, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (zmsg_size (msg), 1);
    zframe_t *f = zmsg_first (msg);
    assert_int_equal (ami_msg_decode (m, zframe_data (f), zframe_size (f)), AMI_OK);
    assert_int_equal (m->type, AMI_MSG_HELLO);
    assert_string_equal (m->hello.role, "mdms");
    assert_string_equal (m->hello.node_id, MDMS_ID);
    assert_int_equal (m->hello.meter_count, 0);
    zmsg_destroy (&msg);

    //  It introduces itself; then HEALTH, its own and an aggregator's
    ami_msg_reset (m, AMI_MSG_HELLO);
    strcpy (m->hello.role, "headend");
    strcpy (m->hello.node_id, HEADEND_ID);
    size_t len = s_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, headend);
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "aggregator");
    strcpy (m->health.node_id, "AGG-T");
    m->health.state = AMI_STATE_DEGRADED;
    m->health.uptime_ms = 777;
    uint8_t agg [256];
    size_t agg_len = s_encode (m, agg, sizeof agg);

    //  Keep both alive for a while, watching STATUS; no more HELLOs come
    int64_t deadline = zclock_mono () + WAIT_MS;
    bool seen = false;
    while (!seen && zclock_mono () < deadline) {
        msg = zmsg_new ();
        ami_msg_reset (m, AMI_MSG_HEALTH);
        strcpy (m->health.role, "headend");
        strcpy (m->health.node_id, HEADEND_ID);
        m->health.state = AMI_STATE_READY;
        m->health.uptime_ms = 12345;
        len = s_encode (m, buf, sizeof buf);
        zmsg_addmem (msg, buf, len);
        zmsg_send (&msg, headend);
        msg = zmsg_new ();
        zmsg_addmem (msg, agg, agg_len);
        zmsg_send (&msg, headend);
        ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
        assert_int_equal (r->type, AMI_MSG_API_STATUS);
        assert_memory_equal (r->api_status.corr, corr, AMI_REQUEST_ID_SIZE);
        assert_true (r->api_status.count >= 2);
        ami_service_row_t *rows = r->api_status.services;
        assert_string_equal (rows [0].role, "mdms");
        assert_string_equal (rows [0].node_id, MDMS_ID);
        assert_int_equal (rows [0].state, AMI_STATE_READY);
        assert_string_equal (rows [1].role, "broker");
        assert_string_equal (rows [1].node_id, BROKER_ID);
        bool broker_ready = rows [1].state == AMI_STATE_READY;
        int he = -1, ag = -1;
        for (uint32_t i = 2; i < r->api_status.count; i++) {
            if (streq (rows [i].node_id, HEADEND_ID)) he = (int) i;
            if (streq (rows [i].node_id, "AGG-T")) ag = (int) i;
        }
        if (broker_ready && he > 0 && ag > 0) {
            //  sorted by role: aggregator before headend
            assert_true (ag < he);
            assert_string_equal (rows [he].role, "headend");
            assert_int_equal (rows [he].state, AMI_STATE_READY);
            assert_true (rows [he].uptime_ms == 12345);
            assert_true (rows [he].age_ms < 1000);
            assert_string_equal (rows [ag].role, "aggregator");
            assert_int_equal (rows [ag].state, AMI_STATE_DEGRADED);
            assert_true (rows [ag].uptime_ms == 777);
            seen = true;
        }
        else
            zclock_sleep (POLL_MS);
    }
    assert_true (seen);
    //  introduced: no further HELLO arrives
    assert_null (s_recv (headend, QUIET_MS));

    //  Silence: after 3 heartbeats both are DOWN, the broker stays READY
    bool down = false;
    deadline = zclock_mono () + WAIT_MS;
    while (!down && zclock_mono () < deadline) {
        ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
        ami_service_row_t *rows = r->api_status.services;
        int downs = 0;
        for (uint32_t i = 2; i < r->api_status.count; i++)
            if ((streq (rows [i].node_id, HEADEND_ID) || streq (rows [i].node_id, "AGG-T"))
            &&  rows [i].state == AMI_STATE_DOWN) {
                assert_true (rows [i].age_ms >= 3 * HEARTBEAT_MS);
                downs++;
            }
        if (downs == 2) {
            assert_int_equal (rows [1].state, AMI_STATE_READY);
            down = true;
        }
        else
            zclock_sleep (POLL_MS);
    }
    assert_true (down);

    //  A HELLO claiming another node id is refused (no record of it)
    ami_msg_reset (m, AMI_MSG_HELLO);
    strcpy (m->hello.role, "headend");
    strcpy (m->hello.node_id, "HE-OTHER");
    len = s_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, headend);
    //  Malformed ingest input is dropped; the MDMS keeps serving
    msg = zmsg_new ();
    zmsg_addstr (msg, "not msgpack");
    zmsg_send (&msg, headend);
    msg = zmsg_new ();
    zmsg_addstr (msg, "two");
    zmsg_addstr (msg, "frames");
    zmsg_send (&msg, headend);
    //  (ingest and api are different sockets: wait, don't assume order)
    int64_t until = zclock_mono () + WAIT_MS;
    while (s_pipe_stat (&env, "malformed") < 3 && zclock_mono () < until)
        zclock_sleep (POLL_MS);
    assert_int_equal (s_pipe_stat (&env, "malformed"), 3);
    ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);

    ami_msg_destroy (&m);
    zsock_destroy (&headend);
    s_env_stop (&env);
}

/*  SEC-VAL-1: malformed API input gets ERROR AMI_E_BAD_REQUEST when the
    envelope is intact, nothing otherwise; the MDMS keeps serving. A REQ
    socket works as a client too. */
static void
test_malformed_api (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, false);
    zsock_t *client = env.client;
    zmsg_t *msg;

    //  Garbage after the delimiter
    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, "\x93\x01\x28garbage");
    zmsg_send (&msg, client);
    ami_msg_t *r = s_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    s_assert_error (r, NULL, AMI_E_BAD_REQUEST);
    assert_non_null (strstr (r->error.text, "malformed request"));

    //  Empty body, a body of the wrong type, two body frames
    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, "", 0);
    zmsg_send (&msg, client);
    r = s_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    s_assert_error (r, NULL, AMI_E_BAD_REQUEST);

    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "operator");
    strcpy (m->health.node_id, "alice");
    uint8_t buf [256];
    size_t len = s_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, client);
    r = s_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    s_assert_error (r, NULL, AMI_E_BAD_REQUEST);

    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, "one");
    zmsg_addstr (msg, "two");
    zmsg_send (&msg, client);
    r = s_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    s_assert_error (r, NULL, AMI_E_BAD_REQUEST);

    //  Truncated API_REQ, and every prefix of a valid one: all answered
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_reset (m, AMI_MSG_API_REQ);
    m->api_req.action = AMI_ACT_STATUS;
    len = s_encode (m, buf, sizeof buf);
    for (size_t cut = 1; cut < len; cut += 3) {
        msg = zmsg_new ();
        zmsg_addmem (msg, "", 0);
        zmsg_addmem (msg, buf, cut);
        zmsg_send (&msg, client);
        r = s_reply (&env, client, WAIT_MS);
        assert_non_null (r);
        s_assert_error (r, NULL, AMI_E_BAD_REQUEST);
    }

    //  No envelope delimiter: no intact envelope, no reply
    msg = zmsg_new ();
    zmsg_addstr (msg, "no delimiter");
    zmsg_send (&msg, client);
    assert_null (s_reply (&env, client, QUIET_MS));

    //  Still serving, on the same connection and over REQ
    r = s_call (&env, client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    zsock_t *req = s_curve (ZMQ_REQ, env.api, g.operator_cert, g.mdms_cert);
    ami_msg_reset (m, AMI_MSG_API_REQ);
    randombytes_buf (m->api_req.corr, AMI_REQUEST_ID_SIZE);
    m->api_req.action = AMI_ACT_METERS;
    m->api_req.limit = 2;
    len = s_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, req);
    msg = s_recv (req, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (zmsg_size (msg), 1);
    zframe_t *f = zmsg_first (msg);
    uint8_t sent_corr [AMI_REQUEST_ID_SIZE];
    memcpy (sent_corr, m->api_req.corr, sizeof sent_corr);
    assert_int_equal (ami_msg_decode (m, zframe_data (f), zframe_size (f)), AMI_OK);
    assert_int_equal (m->type, AMI_MSG_API_METERS);
    assert_memory_equal (m->api_meters.corr, sent_corr, AMI_REQUEST_ID_SIZE);
    assert_int_equal (m->api_meters.count, 2);
    zmsg_destroy (&msg);
    assert_true (s_pipe_stat (&env, "malformed") >= 5);

    zsock_destroy (&req);
    ami_msg_destroy (&m);
    s_env_stop (&env);
}

/*  The event feed: [topic][EVENT], read_done per stored read, origin the
    MDMS, seq increasing. */
static void
test_events (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    zsock_t *sub = zsock_new (ZMQ_SUB);
    assert_non_null (sub);
    zsock_set_linger (sub, 0);
    assert_int_equal (ami_auth_client (sub, g.operator_cert, ami_cert_public_txt (g.mdms_cert)),
                      AMI_OK);
    zsock_set_subscribe (sub, "event.");
    assert_int_equal (zsock_connect (sub, "%s", env.events), 0);
    ami_msg_t *ev = ami_msg_new ();
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Subscriptions take a moment to reach the PUB: provoke read_failed
    //  events (unknown meter) until one arrives
    int64_t deadline = zclock_mono () + WAIT_MS;
    bool joined = false;
    while (!joined && zclock_mono () < deadline) {
        ami_msg_t *r = s_call (&env, env.client, corr, AMI_ACT_READ, "MTR-999999", 0, 0, 0, 0);
        s_assert_error (r, corr, AMI_E_UNKNOWN_METER);
        zmsg_t *msg;
        while ((msg = s_recv (sub, POLL_MS))) {
            char *topic = zmsg_popstr (msg);
            if (streq (topic, "event.read_failed"))
                joined = true;
            zstr_free (&topic);
            zmsg_destroy (&msg);
        }
    }
    assert_true (joined);

    s_wait_meter_state (&env, "MTR-000008", AMI_STATE_READY);
    s_read_ok (&env, "MTR-000008");
    s_read_ok (&env, "MTR-000009");
    const char *expected [] = { "MTR-000008", "MTR-000009" };
    int done = 0;
    uint64_t last_seq = 0;
    while (done < 2) {
        zmsg_t *msg = s_recv (sub, WAIT_MS);
        assert_non_null (msg);
        assert_int_equal (zmsg_size (msg), 2);
        char *topic = zmsg_popstr (msg);
        zframe_t *f = zmsg_first (msg);
        assert_int_equal (ami_msg_decode (ev, zframe_data (f), zframe_size (f)), AMI_OK);
        assert_int_equal (ev->type, AMI_MSG_EVENT);
        assert_string_equal (ev->event.origin, MDMS_ID);
        assert_true (ev->event.seq > last_seq);
        if (last_seq)
            assert_true (ev->event.seq == last_seq + 1);    //  nothing lost here
        last_seq = ev->event.seq;
        if (ev->event.kind == AMI_EV_READ_DONE) {
            assert_string_equal (topic, "event.read_done");
            assert_string_equal (ev->event.meter_id, expected [done]);
            done++;
        }
        zstr_free (&topic);
        zmsg_destroy (&msg);
    }
    assert_int_equal (s_pipe_stat (&env, "events"), last_seq);
    ami_msg_destroy (&ev);
    zsock_destroy (&sub);
    s_env_stop (&env);
}

/*  SEC-AVAIL-2: reads beyond max_pending are refused at once (BUSY). */
static void
test_pending_bound (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, true);
    s_wait_meter_state (&env, "MTR-000010", AMI_STATE_READY);
    //  Restart with a bound of 1, worker silent
    s_mdms_stop (&env);
    env.config.max_pending = 1;
    s_mdms_start (&env);
    s_wait_meter_state (&env, "MTR-000010", AMI_STATE_READY);
    s_worker_modes (&env.worker, 1, W_SILENT);
    uint8_t first [AMI_REQUEST_ID_SIZE], second [AMI_REQUEST_ID_SIZE];
    s_request (env.client, first, AMI_ACT_READ, "MTR-000010", 0, 0, 0, 500);
    ami_msg_t *r = s_call (&env, env.client, second, AMI_ACT_READ, "MTR-000011", 0, 0, 0, 500);
    s_assert_error (r, second, AMI_E_BUSY);
    r = s_reply (&env, env.client, WAIT_MS);
    assert_non_null (r);
    s_assert_error (r, first, AMI_E_TIMEOUT);
    s_env_stop (&env);
}


/* ---------------------------------------------------------------------- */
/*  Tests: start-up and the database schema                                 */

static char *
s_write_registry (const char *name, const char *text)
{
    char *path = ami_test_path (g.dir, name);
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    fputs (text, file);
    fclose (file);
    return path;
}

/*  SEC-KEY-1 / registry validation: the MDMS refuses to start rather than
    run with a bad configuration. */
static void
test_start_failures (void **state)
{
    (void) state;
    env_t env;
    s_env_start (&env, false);
    ami_mdms_config_t bad = env.config;
    bad.api_endpoint = "tcp://127.0.0.1:*";
    bad.db_dir = NULL;
    assert_null (ami_mdms_new (&bad));
    bad = env.config;
    bad.broker_key = "short";
    assert_null (ami_mdms_new (&bad));
    ami_e2e_mdms_t public_only = g.keys;
    public_only.has_secret = false;
    bad = env.config;
    bad.keys = &public_only;
    assert_null (ami_mdms_new (&bad));
    assert_null (ami_mdms_new (NULL));

    char *db = ami_test_path (g.dir, "db-bad");
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (g.fleet_seed, 1, pk, NULL);
    char hex [65], line [256];
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    const char *broken [] = {
        "MTR-1\tF\tA\n",                                           //  3 fields
        "MTR 1\tF\tA\t%s\n",                                       //  bad id
        "MTR-1\tF\tA\t%s\textra\n",                                //  5 fields
        "MTR-1\tF\tA\t0011\n",                                     //  short key
        "MTR-1\tF\tA\tzz%s\n",                                     //  not hex
        "MTR-1\tF\tA\t%s\nMTR-1\tF\tA\t%s\n",                      //  duplicate
        "MTR-1\tF\tA\t0000000000000000000000000000000000000000000000000000000000000000\n",
        "MTR-1\tF\tAGG-with-a-name-far-longer-than-32\t%s\n",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken [0]; i++) {
        snprintf (line, sizeof line, broken [i], hex, hex);
        char *path = s_write_registry ("bad.tsv", line);
        bad = env.config;
        bad.db_dir = db;
        bad.registry_path = path;
        zactor_t *mdms = ami_mdms_new (&bad);
        if (mdms)
            fail_msg ("registry line %zu was accepted", i);
        free (path);
    }
    bad = env.config;
    bad.db_dir = db;
    bad.registry_path = "/nonexistent/meters.tsv";
    assert_null (ami_mdms_new (&bad));
    //  The api endpoint already bound
    bad = env.config;
    bad.db_dir = db;
    bad.api_endpoint = env.api;
    assert_null (ami_mdms_new (&bad));
    free (db);
    s_env_stop (&env);
}

/*  The schema: counters in blocks across reopen, key order, value checks,
    registry replacement. */
static void
test_db_schema (void **state)
{
    (void) state;
    char *dir = ami_test_path (g.dir, "db-schema");
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (dir, 0, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);

    //  Counters: 1, 2, ... with one block reserved
    uint64_t c = 0, prev = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal (ami_mdms_db_counter_next (db, &c), AMI_OK);
        assert_true (c > prev);
        prev = c;
    }
    assert_true (c == 5);
    assert_true (ami_mdms_db_counter_reserved (db) == AMI_MDMS_COUNTER_BLOCK);
    ami_mdms_db_destroy (&db);
    db = ami_mdms_db_new (dir, 0, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);
    assert_int_equal (ami_mdms_db_counter_next (db, &c), AMI_OK);
    assert_true (c == AMI_MDMS_COUNTER_BLOCK + 1);      //  above the old mark
    assert_true (ami_mdms_db_counter_reserved (db) == 2 * AMI_MDMS_COUNTER_BLOCK);

    //  Registry import, then a replacement that drops a meter
    char *reg = s_write_registry ("small.tsv", "");
    FILE *file = fopen (reg, "w");
    s_registry_line (file, 1);
    s_registry_line (file, 10);
    fputs ("  # indented comment\n\r\n", file);
    s_registry_line (file, 2);
    fclose (file);
    zlistx_t *aggs = NULL;
    size_t count = 0;
    assert_int_equal (ami_mdms_db_registry_import (db, reg, &aggs, &count), AMI_OK);
    assert_int_equal (count, 3);
    assert_int_equal (zlistx_size (aggs), 1);
    assert_string_equal ((char *) zlistx_first (aggs), "AGG-T");
    zlistx_destroy (&aggs);
    ami_mdms_meter_t m;
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000010", &m), AMI_OK);
    assert_string_equal (m.fleet_id, "FLEET-1");
    assert_string_equal (m.aggregator_id, "AGG-T");
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (g.fleet_seed, 10, pk, NULL);
    assert_memory_equal (m.sign_pk, pk, sizeof pk);
    file = fopen (reg, "w");
    s_registry_line (file, 1);
    s_registry_line (file, 300);
    fclose (file);
    assert_int_equal (ami_mdms_db_registry_import (db, reg, &aggs, &count), AMI_OK);
    assert_int_equal (zlistx_size (aggs), 2);
    zlistx_destroy (&aggs);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000010", &m), AMI_E_NOTFOUND);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000300", &m), AMI_OK);
    assert_string_equal (m.aggregator_id, "AGG-NONE");
    ami_mdms_meter_t rows [4];
    bool more = true;
    assert_int_equal (ami_mdms_db_meters_page (db, "", 4, rows, &count, &more), AMI_OK);
    assert_int_equal (count, 2);
    assert_false (more);
    //  A failed import changes nothing
    char *broken = s_write_registry ("broken.tsv", "MTR-000099\tF\tA\tnot-a-key\n");
    assert_int_equal (ami_mdms_db_registry_import (db, broken, NULL, NULL), AMI_E_CONFIG);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000300", &m), AMI_OK);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000099", &m), AMI_E_NOTFOUND);

    //  Readings: "MTR-1" rows never mix with "MTR-10" rows
    uint8_t rid [AMI_REQUEST_ID_SIZE] = { 1 };
    const uint8_t reading [] = { 0x90 }, proof [] = { 1, 2, 3 };
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 100, rid, 90, 110, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-10", 50, rid, 40, 60, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 200, rid, 190, 210, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 200, rid, 190, 210, reading,
                                               sizeof reading, proof, sizeof proof),
                      AMI_E_EXISTS);
    uint64_t last = 0;
    assert_int_equal (ami_mdms_db_last_read (db, "MTR-1", &last), AMI_OK);
    assert_true (last == 200);
    assert_int_equal (ami_mdms_db_last_read (db, "MTR-10", &last), AMI_OK);
    assert_true (last == 50);
    assert_int_equal (ami_mdms_db_last_read (db, "MTR-2", &last), AMI_OK);
    assert_true (last == 0);
    more = false;
    assert_int_equal (ami_mdms_db_history (db, "MTR-1", 0, 0, 1, NULL, NULL, &more), AMI_OK);
    assert_true (more);
    assert_int_equal (ami_mdms_db_history (db, "MTR-1", 0, 150, 1, NULL, NULL, &more), AMI_OK);
    assert_false (more);
    assert_int_equal (ami_mdms_db_reading_count (db), 3);

    //  Value layout: parse a good one, refuse every truncation
    uint8_t key [AMI_MDMS_READING_KEY_MAX];
    size_t klen = ami_mdms_db_reading_key ("MTR-1", 100, rid, key);
    assert_int_equal (klen, 5 + 1 + 8 + 16);
    uint8_t val [64] = { AMI_MDMS_READING_LAYOUT };
    val [8] = 90;                                   //  requested_ms
    val [16] = 110;                                 //  stored_ms
    val [20] = 1;                                   //  reading length
    val [21] = 0x90;
    val [25] = 3;                                   //  proof length
    memcpy (val + 26, proof, 3);
    ami_mdms_reading_t row;
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_OK);
    assert_true (row.requested_ms == 90 && row.stored_ms == 110 && row.read_ms == 100);
    assert_int_equal (row.reading_size, 1);
    assert_int_equal (row.proof_size, 3);
    assert_string_equal (row.meter_id, "MTR-1");
    for (size_t cut = 0; cut < 29; cut++)
        assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, cut, &row), AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 30, &row), AMI_E_STORAGE);
    val [0] = 9;                                    //  unknown layout
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_E_STORAGE);
    val [0] = AMI_MDMS_READING_LAYOUT;
    val [20] = 0xff;                                //  length past the end
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_E_STORAGE);
    key [5] = 'x';                                  //  separator gone
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_reading_key ("bad id", 1, rid, key), 0);

    ami_mdms_db_destroy (&db);
    free (reg);
    free (broken);
    free (dir);
}

/*  The role table (SEC-AUTHZ-1). */
static void
test_acl (void **state)
{
    (void) state;
    assert_int_equal (ami_mdms_acl_check ("OPERATOR", AMI_ACT_READ, NULL), AMI_OK);
    assert_int_equal (ami_mdms_acl_check ("VIEWER", AMI_ACT_READ, NULL), AMI_E_DENIED);
    assert_int_equal (ami_mdms_acl_check ("SECADM", AMI_ACT_READ, NULL), AMI_E_DENIED);
    assert_int_equal (ami_mdms_acl_check ("AUDITOR", AMI_ACT_READ, NULL), AMI_E_DENIED);
    const char *roles [] = { "VIEWER", "OPERATOR", "SECADM", "AUDITOR" };
    for (int i = 0; i < 4; i++) {
        assert_int_equal (ami_mdms_acl_check (roles [i], AMI_ACT_HISTORY, NULL), AMI_OK);
        assert_int_equal (ami_mdms_acl_check (roles [i], AMI_ACT_METERS, NULL), AMI_OK);
        assert_int_equal (ami_mdms_acl_check (roles [i], AMI_ACT_STATUS, NULL), AMI_OK);
        assert_int_equal (ami_mdms_acl_check (roles [i], AMI_ACT_AUDIT, NULL), AMI_E_BAD_REQUEST);
    }
    assert_int_equal (ami_mdms_acl_check (NULL, AMI_ACT_STATUS, NULL), AMI_E_DENIED);
    assert_int_equal (ami_mdms_acl_check ("operator", AMI_ACT_STATUS, NULL), AMI_E_DENIED);
    assert_int_equal (ami_mdms_acl_check ("ROOT", AMI_ACT_READ, NULL), AMI_E_DENIED);
    const char *why = NULL;
    assert_int_equal (ami_mdms_acl_check ("OPERATOR", 0, &why), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_mdms_acl_check ("OPERATOR", AMI_ACT_MAX + 1, &why), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_mdms_acl_check ("OPERATOR", AMI_ACT_VERIFY, &why), AMI_E_BAD_REQUEST);
    assert_string_equal (why, "not implemented yet");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_acl),
        cmocka_unit_test (test_db_schema),
        cmocka_unit_test (test_read_and_history),
        cmocka_unit_test (test_restart_persistence),
        cmocka_unit_test (test_read_errors),
        cmocka_unit_test (test_read_timeout),
        cmocka_unit_test (test_bad_responses),
        cmocka_unit_test (test_roles),
        cmocka_unit_test (test_meters_paging),
        cmocka_unit_test (test_status_health),
        cmocka_unit_test (test_malformed_api),
        cmocka_unit_test (test_events),
        cmocka_unit_test (test_pending_bound),
        cmocka_unit_test (test_start_failures),
    };
    return cmocka_run_group_tests_name ("mdms", tests, s_group_setup, s_group_teardown);
}
