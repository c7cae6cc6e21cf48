/*  mdms_harness.c - the in-process MDMS test bench (see mdms_harness.h). */
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
#include "ami_meter_model.h"
#include "ami_msg.h"
#include "ami_test.h"
#include "mdms_harness.h"

/* ---------------------------------------------------------------------- */
/*  Process-wide fixture: certificates, allow-list, keys, registry         */

mh_group_t mh;

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
void
mh_registry_line (FILE *file, uint32_t i)
{
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (mh.fleet_seed, i, pk, NULL);
    char hex [2 * AMI_E2E_SIGN_PK_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    fprintf (file, "MTR-%06u\tFLEET-1\t%s\t%s\n", i, i <= AGG_T_METERS ? "AGG-T" : "AGG-NONE", hex);
}

/*  Registry line of a meter with customer data (7 columns). */
static void
s_customer_line (FILE *file, uint32_t i)
{
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (mh.fleet_seed, i, pk, NULL);
    char hex [2 * AMI_E2E_SIGN_PK_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    if (i == CUSTOMER_FIRST)
        fprintf (file, "MTR-%06u\tFLEET-1\tAGG-T\t%s\t%s\t%s\t%s\n", i, hex,
                 CUSTOMER_NAME, CUSTOMER_ADDRESS, CUSTOMER_ACCOUNT);
    else        //  an empty service address
        fprintf (file, "MTR-%06u\tFLEET-1\tAGG-T\t%s\tCustomer %u\t\tACC-%06u\n", i, hex,
                 i, i);
}

int
mh_group_setup (void **state)
{
    (void) state;
    //  Quiet by default; AMI_TEST_VERBOSE=1 shows every step of every read
    ami_log_set_level (getenv ("AMI_TEST_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_WARN);
    if (sodium_init () < 0)
        return -1;
    memset (&mh, 0, sizeof mh);
    mh.dir = ami_test_tmpdir ("mdms");
    if (!mh.dir)
        return -1;
    char *allow = ami_test_path (mh.dir, "allow");
    char *app = ami_test_path (mh.dir, "app");
    char *other = ami_test_path (mh.dir, "other");
    char *seed = ami_test_path (mh.dir, "fleet.seed");
    mkdir (allow, 0700);
    mkdir (app, 0700);
    mkdir (other, 0700);
    mh.broker_cert = s_cert ("broker", BROKER_ID, NULL, NULL);
    mh.mdms_cert = s_cert ("mdms", MDMS_ID, NULL, allow);
    mh.headend_cert = s_cert ("headend", HEADEND_ID, NULL, allow);
    mh.operator_cert = s_cert ("operator", "alice", "OPERATOR", allow);
    mh.operator2_cert = s_cert ("operator", "bob", "OPERATOR", allow);
    mh.viewer_cert = s_cert ("operator", "victor", "VIEWER", allow);
    mh.auditor_cert = s_cert ("operator", "audrey", "AUDITOR", allow);
    mh.secadm_cert = s_cert ("operator", "sam", "SECADM", allow);
    //  The data key lives next to the other application keys, outside
    //  every database directory
    mh.data_key = ami_test_path (app, "mdms-data.cert");
    int err = 0;
    mh.auth = ami_auth_new (allow, &err);
    if (!mh.auth
    ||  ami_e2e_mdms_generate (app, MDMS_ID) || ami_e2e_mdms_load (&mh.keys, app, true)
    ||  ami_e2e_mdms_generate (other, "mdms-x") || ami_e2e_mdms_load (&mh.other_keys, other, true)
    ||  ami_e2e_kdf_generate (seed, "meter", "FLEET-1") || ami_e2e_kdf_load (seed, mh.fleet_seed)
    ||  ami_e2e_kdf_generate (mh.data_key, "mdms", MDMS_ID)
    ||  ami_e2e_kdf_load (mh.data_key, mh.data_seed))
        return -1;
    //  SEC-CONF-2: files holding customer data are private, as on the
    //  MDMS host (the MDMS refuses a registry with customer columns that
    //  group or others can read): every file a test writes is 0600
    umask (077);
    mh.registry = ami_test_path (mh.dir, "meters.tsv");
    FILE *file = fopen (mh.registry, "w");
    if (!file)
        return -1;
    fprintf (file, "# meter\tfleet\taggregator\tsign_pk\t[customer\taddress\taccount]\n\n");
    for (uint32_t i = 1; i <= METERS; i++)
        if (i >= CUSTOMER_FIRST && i <= CUSTOMER_LAST)
            s_customer_line (file, i);
        else
            mh_registry_line (file, i);
    fclose (file);
    free (allow);
    free (app);
    free (other);
    free (seed);
    return 0;
}

int
mh_group_teardown (void **state)
{
    (void) state;
    ami_auth_destroy (&mh.auth);
    ami_cert_destroy (&mh.broker_cert);
    ami_cert_destroy (&mh.mdms_cert);
    ami_cert_destroy (&mh.headend_cert);
    ami_cert_destroy (&mh.operator_cert);
    ami_cert_destroy (&mh.operator2_cert);
    ami_cert_destroy (&mh.viewer_cert);
    ami_cert_destroy (&mh.auditor_cert);
    ami_cert_destroy (&mh.secadm_cert);
    ami_e2e_mdms_wipe (&mh.keys);
    ami_e2e_mdms_wipe (&mh.other_keys);
    sodium_memzero (mh.data_seed, sizeof mh.data_seed);
    ami_test_rmtree (mh.dir);
    free (mh.dir);
    free (mh.registry);
    free (mh.data_key);
    return 0;
}


/* ---------------------------------------------------------------------- */
/*  Frames by hand                                                          */

zmsg_t *
mh_recv (zsock_t *sock, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    zmsg_t *msg = NULL;
    if (zpoller_wait (poller, timeout_ms) == sock)
        msg = zmsg_recv (sock);
    zpoller_destroy (&poller);
    return msg;
}

zsock_t *
mh_curve (int type, const char *endpoint, ami_cert_t *cert, ami_cert_t *server)
{
    zsock_t *sock = zsock_new (type);
    assert_non_null (sock);
    zsock_set_linger (sock, 0);
    assert_int_equal (ami_auth_client (sock, cert, ami_cert_public_txt (server)), AMI_OK);
    assert_int_equal (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

/*  Encode m and return it as a frame's worth of bytes in buf. */
size_t
mh_encode (ami_msg_t *m, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    assert_int_equal (ami_msg_encode (m, buf, cap, &len), AMI_OK);
    return len;
}


/* ---------------------------------------------------------------------- */
/*  The meter side: an MDP worker for agg.AGG-T (RFC 7, over a DEALER)     */


void
mh_worker_start (mh_worker_t *w, const char *broker_endpoint, const char *service)
{
    memset (w, 0, sizeof *w);
    w->msg = ami_msg_new ();
    assert_non_null (w->msg);
    w->sock = mh_curve (ZMQ_DEALER, broker_endpoint, mh.headend_cert, mh.broker_cert);
    zmsg_t *ready = zmsg_new ();
    zmsg_addmem (ready, "", 0);
    zmsg_addstr (ready, W_HEADER);
    zmsg_addmem (ready, (byte []) { W_READY }, 1);
    zmsg_addstr (ready, service);
    assert_int_equal (zmsg_send (&ready, w->sock), 0);
    w->modes [0] = W_GOOD;
    w->mode_count = 1;
}

void
mh_worker_modes (mh_worker_t *w, int count, ...)
{
    va_list args;
    va_start (args, count);
    for (int i = 0; i < count; i++)
        w->modes [i] = (mh_wmode_t) va_arg (args, int);
    va_end (args);
    w->mode_count = count;
}

void
mh_worker_stop (mh_worker_t *w)
{
    zframe_destroy (&w->held_client);
    zsock_destroy (&w->sock);
    ami_msg_destroy (&w->msg);
}

void
mh_worker_disconnect (mh_worker_t *w)
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
s_meter_answer (mh_worker_t *w, const ami_read_req_t *req, mh_wmode_t mode, uint8_t *out, size_t cap)
{
    ami_msg_t *m = w->msg;
    uint32_t index = s_meter_index (req->meter_id);
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE], sk [AMI_E2E_SIGN_SK_SIZE];
    ami_e2e_meter_keypair (mh.fleet_seed, index, pk, sk);
    if (mode == W_UNREACHABLE || mode == W_RELAY_REPLAY) {
        ami_msg_reset (m, AMI_MSG_ERROR);
        m->error.has_request_id = true;
        memcpy (m->error.request_id, req->request_id, AMI_REQUEST_ID_SIZE);
        m->error.code = mode == W_UNREACHABLE ? AMI_E_UNREACHABLE : AMI_E_REPLAY;
        strcpy (m->error.origin, "AGG-T");
        strcpy (m->error.text, "meter did not answer");
        return mh_encode (m, out, cap);
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
        //  W_STALE: a reading taken long before the command was issued
        uint64_t read_at = mode == W_STALE ? req->issued_ms - 2 * AMI_E2E_SKEW_MS
                                           : (uint64_t) zclock_time ();
        ami_meter_model_sample (&model, req->meter_id, read_at, &m->reading);
        memcpy (m->reading.request_id, req->request_id, AMI_REQUEST_ID_SIZE);
        if (mode == W_WRONG_INNER_ID)
            m->reading.request_id [0] ^= 0xff;
        ami_reading_t reading = m->reading;
        uint8_t plain [AMI_MAX_SEALED];
        size_t plain_len = mh_encode (m, plain, sizeof plain - AMI_E2E_SEAL_OVERHEAD);
        const uint8_t *box_pk = mode == W_OTHER_SEAL ? mh.other_keys.box_pk : mh.keys.box_pk;
        assert_int_equal (ami_e2e_seal (plain, plain_len, box_pk, sealed, sizeof sealed,
                                        &sealed_len), AMI_OK);
        if (mode == W_GOOD || mode == W_RECORD)
            w->last_good = reading;
    }
    ami_msg_reset (m, AMI_MSG_READ_RESP);
    strcpy (m->read_resp.meter_id, req->meter_id);
    memcpy (m->read_resp.request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    m->read_resp.status = status;
    m->read_resp.sealed = sealed;
    m->read_resp.sealed_size = status ? 0 : sealed_len;
    size_t len = mh_encode (m, out, cap);
    assert_int_equal (ami_e2e_sign (out, len, sk), AMI_OK);
    if (mode == W_BAD_SIG)
        out [len - 1] ^= 0x01;          //  one bit of the signature
    sodium_memzero (sk, sizeof sk);
    if (mode == W_RECORD) {
        assert_true (len <= sizeof w->recorded);
        memcpy (w->recorded, out, len);
        w->recorded_len = len;
    }
    return len;
}

/*  Send answer to the client behind the broker. */
static void
s_worker_reply (mh_worker_t *w, zframe_t *client, const uint8_t *answer, size_t len)
{
    zmsg_t *reply = zmsg_new ();
    zmsg_addmem (reply, "", 0);
    zmsg_addstr (reply, W_HEADER);
    zmsg_addmem (reply, (byte []) { W_REPLY }, 1);
    zmsg_addmem (reply, zframe_data (client), zframe_size (client));
    zmsg_addmem (reply, "", 0);
    zmsg_addmem (reply, answer, len);
    assert_int_equal (zmsg_send (&reply, w->sock), 0);
}

void
mh_worker_release (mh_worker_t *w, mh_wmode_t mode)
{
    assert_non_null (w->held_client);
    uint8_t answer [AMI_MAX_SEALED + 512];
    size_t len = s_meter_answer (w, &w->held, mode, answer, sizeof answer);
    s_worker_reply (w, w->held_client, answer, len);
    zframe_destroy (&w->held_client);
}

/*  Handle one message from the broker: HEARTBEAT is ignored, REQUEST is
    checked as a meter would and answered per the worker's mode. */
void
mh_worker_serve (mh_worker_t *w)
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
    assert_int_equal (ami_e2e_verify (zframe_data (body), zframe_size (body), mh.keys.sign_pk),
                      AMI_OK);
    ami_read_req_t req = w->msg->read_req;
    assert_true (req.counter >= 1);
    assert_true (req.expires_ms > req.issued_ms);
    assert_true (req.issued_ms <= (uint64_t) zclock_time () + 1000);
    if (w->served < MAX_SEEN) {
        w->counters [w->served] = req.counter;
        memcpy (w->request_ids [w->served], req.request_id, AMI_REQUEST_ID_SIZE);
    }
    mh_wmode_t mode = w->modes [w->served < w->mode_count ? w->served : w->mode_count - 1];
    w->served++;
    if (mode == W_HOLD) {
        assert_null (w->held_client);
        w->held_client = zframe_dup (client);
        w->held = req;
    }
    else
    if (mode == W_PLAYBACK) {
        assert_true (w->recorded_len > 0);
        s_worker_reply (w, client, w->recorded, w->recorded_len);
    }
    else
    if (mode != W_SILENT) {
        uint8_t answer [AMI_MAX_SEALED + 512];
        size_t len = s_meter_answer (w, &req, mode, answer, sizeof answer);
        s_worker_reply (w, client, answer, len);
    }
    zframe_destroy (&client);
    zframe_destroy (&delim);
    zframe_destroy (&body);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Per-test environment: broker + MDMS + worker + operator client          */


void
mh_mdms_start (mh_env_t *env)
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
    env->client = mh_curve (ZMQ_DEALER, env->api, mh.operator_cert, mh.mdms_cert);
}

void
mh_mdms_stop (mh_env_t *env)
{
    zsock_destroy (&env->client);
    zactor_destroy (&env->mdms);
    zstr_free (&env->api);
    zstr_free (&env->ingest);
    zstr_free (&env->events);
}

/*  Start broker and MDMS on a fresh database; the worker is optional. */
void
mh_env_start (mh_env_t *env, bool with_worker)
{
    memset (env, 0, sizeof *env);
    env->reply = ami_msg_new ();
    assert_non_null (env->reply);
    ami_broker_config_t broker = { 0 };
    broker.endpoint = "tcp://127.0.0.1:*";
    broker.server_cert = mh.broker_cert;
    broker.liveness = 30;               //  the test worker does not heartbeat
    env->broker = ami_broker_new (&broker);
    assert_non_null (env->broker);
    zsock_set_rcvtimeo (env->broker, WAIT_MS);
    zstr_send (env->broker, "ENDPOINT");
    env->broker_endpoint = zstr_recv (env->broker);
    assert_non_null (env->broker_endpoint);

    char name [32];
    snprintf (name, sizeof name, "db-%d", ++mh.db_serial);
    env->db = ami_test_path (mh.dir, name);
    ami_mdms_config_t *c = &env->config;
    c->node_id = MDMS_ID;
    c->cert = mh.mdms_cert;
    c->api_endpoint = "tcp://127.0.0.1:*";
    c->ingest_endpoint = "tcp://127.0.0.1:*";
    c->events_endpoint = "tcp://127.0.0.1:*";
    c->broker_endpoint = env->broker_endpoint;
    c->broker_key = ami_cert_public_txt (mh.broker_cert);
    c->broker_id = BROKER_ID;
    c->db_dir = env->db;
    c->map_size = 64u << 20;
    c->keys = &mh.keys;
    c->registry_path = mh.registry;
    c->read_timeout_ms = 2000;
    c->heartbeat_ms = HEARTBEAT_MS;
    c->data_key_path = mh.data_key;
    mh_mdms_start (env);
    if (with_worker) {
        mh_worker_start (&env->worker, env->broker_endpoint, "agg.AGG-T");
        env->has_worker = true;
    }
}

void
mh_env_stop (mh_env_t *env)
{
    mh_mdms_stop (env);
    if (env->has_worker)
        mh_worker_stop (&env->worker);
    zactor_destroy (&env->broker);
    zstr_free (&env->broker_endpoint);
    ami_msg_destroy (&env->reply);
    free (env->db);
}

/*  Send an API_REQ as a REQ-compatible DEALER: [""][API_REQ]. */
void
mh_request (zsock_t *client, uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
           const char *meter_id, uint64_t from_ms, uint64_t to_ms, uint32_t limit,
           uint32_t timeout_ms)
{
    randombytes_buf (corr, AMI_REQUEST_ID_SIZE);
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_API_REQ);
    memcpy (m->api_req.corr, corr, AMI_REQUEST_ID_SIZE);
    m->api_req.action = (uint8_t) action;
    snprintf (m->api_req.meter_id, sizeof m->api_req.meter_id, "%s", meter_id ? meter_id : "");
    m->api_req.from_ms = from_ms;
    m->api_req.to_ms = to_ms;
    m->api_req.limit = limit;
    m->api_req.timeout_ms = timeout_ms;
    uint8_t buf [256];
    size_t len = mh_encode (m, buf, sizeof buf);
    ami_msg_destroy (&m);
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, buf, len);
    assert_int_equal (zmsg_send (&msg, client), 0);
}

void
mh_request_corr (zsock_t *client, const uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
                 const char *meter_id, uint32_t timeout_ms)
{
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_API_REQ);
    memcpy (m->api_req.corr, corr, AMI_REQUEST_ID_SIZE);
    m->api_req.action = (uint8_t) action;
    snprintf (m->api_req.meter_id, sizeof m->api_req.meter_id, "%s", meter_id);
    m->api_req.timeout_ms = timeout_ms;
    uint8_t buf [256];
    size_t len = mh_encode (m, buf, sizeof buf);
    ami_msg_destroy (&m);
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, buf, len);
    assert_int_equal (zmsg_send (&msg, client), 0);
}

/*  Wait for the reply on client, serving the worker meanwhile. Returns the
    decoded reply (env->reply), or NULL on timeout. */
ami_msg_t *
mh_reply (mh_env_t *env, zsock_t *client, int timeout_ms)
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
            mh_worker_serve (&env->worker);
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
ami_msg_t *
mh_call (mh_env_t *env, zsock_t *client, uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
        const char *meter_id, uint64_t from_ms, uint64_t to_ms, uint32_t limit,
        uint32_t timeout_ms)
{
    mh_request (client, corr, action, meter_id, from_ms, to_ms, limit, timeout_ms);
    ami_msg_t *reply = mh_reply (env, client, WAIT_MS + (int) timeout_ms);
    assert_non_null (reply);
    return reply;
}

/*  Assert reply is ERROR(corr, code) from the MDMS. */
void
mh_assert_error (ami_msg_t *reply, const uint8_t *corr, int code)
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
int
mh_meter_state (mh_env_t *env, const char *meter_id, uint64_t *last_read_ms)
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
    ami_msg_t *r = mh_call (env, env->client, corr, AMI_ACT_METERS, after, 0, 0, 1, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    if (r->api_meters.count != 1 || strcmp (r->api_meters.meters [0].meter_id, meter_id))
        return -1;
    if (last_read_ms)
        *last_read_ms = r->api_meters.meters [0].last_read_ms;
    return r->api_meters.meters [0].state;
}

/*  Wait until METERS shows meter_id in state (the MMI poll has run). */
void
mh_wait_meter_state (mh_env_t *env, const char *meter_id, int state)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (zclock_mono () < deadline) {
        if (mh_meter_state (env, meter_id, NULL) == state)
            return;
        zclock_sleep (POLL_MS);
    }
    fail_msg ("meter %s never reached state %d", meter_id, state);
}

/*  An on-demand read that must succeed; returns the READ_REQ counter the
    worker saw for its last try. */
uint64_t
mh_read_ok (mh_env_t *env, const char *meter_id)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int served = env->worker.served;
    ami_msg_t *r = mh_call (env, env->client, corr, AMI_ACT_READ, meter_id, 0, 0, 0, 0);
    if (r->type != AMI_MSG_API_READINGS)
        fail_msg ("read %s: %s %s", meter_id, ami_msg_type_name (r->type),
                  r->type == AMI_MSG_ERROR ? r->error.text : "");
    assert_memory_equal (r->api_readings.corr, corr, AMI_REQUEST_ID_SIZE);
    assert_false (r->api_readings.more);
    assert_int_equal (r->api_readings.count, 1);
    ami_stored_reading_t *row = &r->api_readings.readings [0];
    assert_string_equal (row->reading.meter_id, meter_id);
    //  SEC-INT-3: bound to the MDMS's own request id of this read (the
    //  one the worker saw last), never the operator's corr
    assert_true (env->worker.served > served);
    int last = env->worker.served - 1;
    if (last < MAX_SEEN)
        assert_memory_equal (row->reading.request_id, env->worker.request_ids [last],
                             AMI_REQUEST_ID_SIZE);
    assert_memory_not_equal (row->reading.request_id, corr, AMI_REQUEST_ID_SIZE);
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
    //  every try carried the read's one request id (not the corr)
    for (int k = served; k < env->worker.served && k < MAX_SEEN; k++)
        assert_memory_equal (env->worker.request_ids [k], row->reading.request_id,
                             AMI_REQUEST_ID_SIZE);
    //  counters are recorded for the first MAX_SEEN requests only
    return env->worker.served <= MAX_SEEN ? env->worker.counters [env->worker.served - 1] : 0;
}

ami_msg_t *
mh_history (mh_env_t *env, zsock_t *client, const char *meter_id, uint32_t limit)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (env, client, corr, AMI_ACT_HISTORY, meter_id, 0, 0, limit, 0);
    assert_int_equal (r->type, AMI_MSG_API_READINGS);
    assert_memory_equal (r->api_readings.corr, corr, AMI_REQUEST_ID_SIZE);
    return r;
}

/*  A value from the MDMS's STATUS pipe reply ("name=value"). */
uint64_t
mh_pipe_stat (mh_env_t *env, const char *name)
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

char *
mh_pipe_text (mh_env_t *env, const char *name)
{
    assert_int_equal (zstr_send (env->mdms, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (env->mdms);
    assert_non_null (reply);
    char *value = NULL;
    size_t len = strlen (name);
    for (zframe_t *f = zmsg_first (reply); f; f = zmsg_next (reply)) {
        char *text = zframe_strdup (f);
        if (!value && strncmp (text, name, len) == 0 && text [len] == '=')
            value = strdup (text + len + 1);
        zstr_free (&text);
    }
    zmsg_destroy (&reply);
    assert_non_null (value);
    return value;
}


/* ---------------------------------------------------------------------- */
/*  Interval data                                                           */

void
mh_profile_key (uint32_t i, uint8_t key [AMI_E2E_PROFILE_KEY_SIZE])
{
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE], sk [AMI_E2E_SIGN_SK_SIZE];
    ami_e2e_meter_keypair (mh.fleet_seed, i, pk, sk);
    assert_int_equal (ami_e2e_profile_key_meter (sk, mh.keys.box_pk, key), AMI_OK);
    sodium_memzero (sk, sizeof sk);
}

void
mh_profile_fill (ami_profile_t *profile, const char *meter_id, uint32_t first_end_s,
                 uint32_t count)
{
    assert_true (count >= 1 && count <= AMI_MAX_PROFILE_RECORDS);
    memset (profile, 0, sizeof *profile);
    snprintf (profile->meter_id, sizeof profile->meter_id, "%s", meter_id);
    uint32_t salt = (uint32_t) strlen (meter_id) + (uint32_t) meter_id [strlen (meter_id) - 1];
    for (uint32_t k = 0; k < count; k++) {
        ami_interval_t *r = &profile->records [k];
        r->end_s = first_end_s + k * MH_INTERVAL_S;
        r->import_wh = (uint64_t) r->end_s / 9 + salt;
        r->export_wh = (uint64_t) r->end_s / 97 + salt;
        r->status = (uint16_t) (r->end_s % 7 == 0 ? AMI_Q_ESTIMATED : AMI_Q_VALID);
    }
    profile->record_count = count;
    profile->seq = profile->records [count - 1].end_s / MH_INTERVAL_S;
    profile->made_ms = (uint64_t) zclock_time ();
}

size_t
mh_profile_seal (ami_msg_t *m, const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE],
                 const char *header_id, uint64_t header_seq, const ami_profile_t *profile,
                 uint8_t *box, size_t cap)
{
    ami_msg_reset (m, AMI_MSG_PROFILE);
    m->profile = *profile;
    uint8_t plain [AMI_MAX_SEALED];
    size_t len = mh_encode (m, plain, sizeof plain);
    size_t out = 0;
    assert_int_equal (ami_e2e_profile_seal (key, header_id, header_seq, plain, len,
                                            ami_e2e_profile_pad_block (profile->record_count), box, cap,
                                            &out), AMI_OK);
    return out;
}

void
mh_batch_init (mh_batch_t *b, uint64_t batch_id, const char *origin)
{
    memset (b, 0, sizeof *b);
    b->msg = ami_msg_new ();
    b->scratch = ami_msg_new ();
    assert_non_null (b->msg);
    assert_non_null (b->scratch);
    ami_msg_reset (b->msg, AMI_MSG_BATCH);
    b->msg->batch.batch_id = batch_id;
    snprintf (b->msg->batch.origin, sizeof b->msg->batch.origin, "%s", origin);
    b->cap = (size_t) AMI_MAX_BATCH_BLOCKS * 512;
    b->boxes = (uint8_t *) malloc (b->cap);
    assert_non_null (b->boxes);
}

void
mh_batch_add (mh_batch_t *b, const char *meter_id, uint64_t seq, const uint8_t *box, size_t len)
{
    ami_batch_t *batch = &b->msg->batch;
    assert_true (batch->block_count < AMI_MAX_BATCH_BLOCKS);
    if (b->used + len > b->cap) {
        //  blocks point into boxes: re-point them after growing
        size_t cap = (b->used + len) * 2;
        uint8_t *boxes = (uint8_t *) realloc (b->boxes, cap);
        assert_non_null (boxes);
        for (uint32_t k = 0; k < batch->block_count; k++)
            batch->blocks [k].box = boxes + (batch->blocks [k].box - b->boxes);
        b->boxes = boxes;
        b->cap = cap;
    }
    memcpy (b->boxes + b->used, box, len);
    ami_block_t *block = &batch->blocks [batch->block_count++];
    snprintf (block->meter_id, sizeof block->meter_id, "%s", meter_id);
    block->seq = seq;
    block->box = b->boxes + b->used;
    block->box_size = len;
    b->used += len;
}

void
mh_batch_add_meter (mh_batch_t *b, uint32_t i, const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE],
                    uint32_t first_end_s, uint32_t count)
{
    char id [AMI_MAX_ID + 1];
    snprintf (id, sizeof id, "MTR-%06u", i);
    ami_profile_t profile;
    mh_profile_fill (&profile, id, first_end_s, count);
    uint8_t box [AMI_MAX_SEALED];
    size_t len = mh_profile_seal (b->scratch, key, id, profile.seq, &profile, box, sizeof box);
    mh_batch_add (b, id, profile.seq, box, len);
}

zframe_t *
mh_batch_frame (mh_batch_t *b)
{
    uint8_t *buf = (uint8_t *) malloc (AMI_MAX_FRAME);
    assert_non_null (buf);
    size_t len = mh_encode (b->msg, buf, AMI_MAX_FRAME);
    zframe_t *frame = zframe_new (buf, len);
    free (buf);
    return frame;
}

void
mh_batch_free (mh_batch_t *b)
{
    ami_msg_destroy (&b->msg);
    ami_msg_destroy (&b->scratch);
    free (b->boxes);
    memset (b, 0, sizeof *b);
}

zsock_t *
mh_headend_connect (mh_env_t *env)
{
    zsock_t *sock = mh_curve (ZMQ_DEALER, env->ingest, mh.headend_cert, mh.mdms_cert);
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_HELLO);
    strcpy (m->hello.role, "headend");
    strcpy (m->hello.node_id, HEADEND_ID);
    uint8_t buf [128];
    size_t len = mh_encode (m, buf, sizeof buf);
    ami_msg_destroy (&m);
    assert_int_equal (zsock_send (sock, "b", buf, len), 0);
    return sock;
}

bool
mh_headend_ack (zsock_t *sock, int timeout_ms, ami_batch_ack_t *ack)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    ami_msg_t *m = ami_msg_new ();
    bool found = false;
    while (!found) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            break;
        zmsg_t *msg = mh_recv (sock, (int) left);
        if (!msg)
            break;
        assert_int_equal (zmsg_size (msg), 1);
        zframe_t *f = zmsg_first (msg);
        assert_int_equal (ami_msg_decode (m, zframe_data (f), zframe_size (f)), AMI_OK);
        if (m->type == AMI_MSG_BATCH_ACK) {
            *ack = m->batch_ack;
            found = true;
        }
        else
            assert_int_equal (m->type, AMI_MSG_HELLO);
        zmsg_destroy (&msg);
    }
    ami_msg_destroy (&m);
    return found;
}

ami_batch_ack_t
mh_headend_send (zsock_t *sock, zframe_t *frame, uint64_t batch_id)
{
    zframe_t *copy = zframe_dup (frame);
    assert_int_equal (zframe_send (&copy, sock, 0), 0);
    ami_batch_ack_t ack;
    memset (&ack, 0, sizeof ack);
    if (!mh_headend_ack (sock, WAIT_MS, &ack))
        fail_msg ("no BATCH_ACK for batch %llu", (unsigned long long) batch_id);
    assert_true (ack.batch_id == batch_id);
    return ack;
}

ami_msg_t *
mh_intervals (mh_env_t *env, zsock_t *client, const char *meter_id, uint64_t from_ms,
              uint64_t to_ms, uint32_t limit)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (env, client, corr, AMI_ACT_INTERVALS, meter_id, from_ms, to_ms,
                            limit, 0);
    if (r->type != AMI_MSG_API_INTERVALS)
        fail_msg ("intervals %s: %s %s", meter_id, ami_msg_type_name (r->type),
                  r->type == AMI_MSG_ERROR ? r->error.text : "");
    assert_memory_equal (r->api_intervals.corr, corr, AMI_REQUEST_ID_SIZE);
    assert_string_equal (r->api_intervals.meter_id, meter_id);
    return r;
}
