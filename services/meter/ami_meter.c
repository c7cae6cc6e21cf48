/*  ami_meter.c - the meter fleet simulator: many meters, one DEALER.

    Design. One CZMQ actor owns one DEALER (CURVE client) connected to the
    aggregator's ROUTER: the zguide's "asynchronous client" shape, where the
    DEALER may have many requests in flight and answers go out as soon as
    they are ready. Meters live in one flat array indexed by meter number -
    first, so finding a meter is arithmetic, not a lookup.

    Each wake-up drains up to AMI_METER_BATCH frames. READ_REQs that pass
    every check (signature, target, counter, time window) are collected;
    at the end of the drain their counters and register snapshots are
    written in one durable LMDB transaction (group commit), and only then
    are the readings sampled, sealed, signed and sent. Refusals need no
    write and go out at once. See ami_meter.h for the contract.

    Clock: zclock_mono for the heartbeat, zclock_time (+ the configured
    offset) for command windows and readings.
*/
#include "ami_meter.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_service.h"
#include "ami_store.h"

/*  Warnings about bad input: at most this many per window, the rest are
    counted and summarised, so a hostile peer cannot flood the log. */
#define S_LOG_BURST         20
/*  Outgoing queue to the aggregator. 1000 messages hold several seconds of
    answers and heartbeats while the link is down (they are stale after
    that: the MDMS retries); a full HELLO round is added on top so a large
    fleet's introduction never fills it on its own. */
#define S_SNDHWM_BASE       1000
/*  ZMTP heartbeats on the link: a silent half-open TCP connection (a
    pole-top node that lost power) is noticed after 3 intervals and the
    DEALER reconnects. */
#define S_ZMTP_LIVENESS     3
/*  Encode buffer: a full HELLO chunk (1024 ids of <= 33 bytes, about
    35 KiB) is the largest thing the fleet sends; 64 KiB holds it. */
#define S_BUF_SIZE          (64 * 1024)
/*  LMDB map: 16 MiB of base plus 256 bytes per meter. A counter entry is
    4 + 8 bytes and a snapshot 4 + 48 bytes, each with an 8-byte node
    header, on pages that random-order writes leave half full: about 160
    bytes per meter, so 256 leaves headroom. It reserves address space,
    not memory. */
#define S_MAP_BASE          ((size_t) 16 << 20)
#define S_MAP_PER_METER     256
/*  Register snapshot on disk (see ami_meter.h). */
#define S_SNAPSHOT_SIZE     48

typedef struct {
    ami_meter_model_t model;    /* the meter's physics */
    uint64_t last_counter;      /* last accepted command counter (persisted) */
    uint8_t sk [AMI_E2E_SIGN_SK_SIZE];  /* derived on first use */
    bool has_key;
} meter_t;

typedef struct {
    uint32_t slot;              /* meter number - first */
    ami_read_req_t req;         /* the accepted command */
} accepted_t;

typedef struct {
    zsock_t *pipe;              /* actor pipe, borrowed */
    zsock_t *dealer;            /* link to the aggregator */
    ami_store_t *store;
    unsigned counters_db;
    unsigned registers_db;
    char node_id [AMI_MAX_ID + 1];
    uint32_t first;
    uint32_t count;
    uint8_t seed [AMI_E2E_SEED_SIZE];
    uint8_t sign_pk [AMI_E2E_SIGN_PK_SIZE];
    uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE];
    int heartbeat_ms;
    int64_t clock_offset_ms;
    meter_t *meters;            /* count entries */
    ami_msg_t *in;              /* decoded input */
    ami_msg_t *out;             /* message being encoded */
    uint8_t *buf;               /* S_BUF_SIZE bytes: encoded output */
    uint8_t plain [AMI_MAX_SEALED];     /* encoded READING */
    uint8_t sealed [AMI_MAX_SEALED];    /* sealed READING */
    accepted_t batch [AMI_METER_BATCH];
    size_t batch_size;
    int64_t started;            /* zclock_mono at start */
    int64_t next_heartbeat;     /* zclock_mono */
    uint64_t reads, refused, unreachable, malformed, dropped;
    bool dropping;              /* the last send was dropped */
    ami_log_limit_t warn_limit; /* warnings about peers' input (ami_log.h) */
    bool terminated;
} fleet_t;


/* ---------------------------------------------------------------------- */
/*  Small helpers                                                           */

static void
s_warn (fleet_t *self, const char *format, ...) CHECK_PRINTF (2);

static void
s_warn (fleet_t *self, const char *format, ...)
{
    if (!self->warn_limit.burst)
        self->warn_limit.burst = S_LOG_BURST;
    char prefix [64];
    snprintf (prefix, sizeof prefix, "fleet %s", self->node_id);
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (&self->warn_limit, prefix, format, args);
    va_end (args);
}

static void
s_put_be32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) (v >> 24); p [1] = (uint8_t) (v >> 16);
    p [2] = (uint8_t) (v >> 8);  p [3] = (uint8_t) v;
}

static void
s_put_be64 (uint8_t *p, uint64_t v)
{
    s_put_be32 (p, (uint32_t) (v >> 32));
    s_put_be32 (p + 4, (uint32_t) v);
}

static uint32_t
s_get_be32 (const uint8_t *p)
{
    return (uint32_t) p [0] << 24 | (uint32_t) p [1] << 16 | (uint32_t) p [2] << 8 | p [3];
}

static uint64_t
s_get_be64 (const uint8_t *p)
{
    return (uint64_t) s_get_be32 (p) << 32 | s_get_be32 (p + 4);
}

static uint64_t
s_now_ms (fleet_t *self)
{
    int64_t now = zclock_time () + self->clock_offset_ms;
    return now > 0 ? (uint64_t) now : 0;
}

uint64_t
ami_meter_model_seed (const uint8_t seed [AMI_E2E_SEED_SIZE])
{
    /* keyed BLAKE2b: the fleet secret is the key, a fixed label the
       message; 16 bytes is the smallest output crypto_generichash allows */
    static const char label [] = "ami-meter-model";
    uint8_t out [crypto_generichash_BYTES_MIN];
    crypto_generichash (out, sizeof out, (const uint8_t *) label, sizeof label - 1,
                        seed, AMI_E2E_SEED_SIZE);
    return s_get_be64 (out);
}

/*  The meter's slot for a meter id, or -1 if the id is not one of ours
    (including non-canonical spellings of one of our numbers). */
static int64_t
s_slot (fleet_t *self, const char *meter_id)
{
    uint32_t index = ami_meter_id_parse (meter_id);
    if (index < self->first || index - self->first >= self->count)
        return -1;
    char canonical [AMI_MAX_ID + 1];
    ami_meter_id_format (index, canonical);
    if (strcmp (canonical, meter_id) != 0)
        return -1;
    return (int64_t) (index - self->first);
}

static const uint8_t *
s_meter_key (fleet_t *self, uint32_t slot)
{
    meter_t *meter = &self->meters [slot];
    if (!meter->has_key) {
        uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
        ami_e2e_meter_keypair (self->seed, self->first + slot, pk, meter->sk);
        meter->has_key = true;
    }
    return meter->sk;
}

/*  Send one encoded frame without blocking; a full queue drops it. */
static void
s_send (fleet_t *self, const uint8_t *data, size_t size, const char *what)
{
    if (zmq_send (zsock_resolve (self->dealer), data, size, ZMQ_DONTWAIT) == -1) {
        /* log the change of state, not every frame: a long outage would
           otherwise log once per heartbeat */
        if (!self->dropping)
            ami_log_warn ("fleet %s: link to the aggregator is full or down (%s): "
                          "dropping frames, starting with a %s", self->node_id,
                          zmq_strerror (zmq_errno ()), what);
        self->dropping = true;
        self->dropped++;
    }
    else
    if (self->dropping) {
        ami_log_info ("fleet %s: link to the aggregator accepts frames again "
                      "(%" PRIu64 " dropped so far)", self->node_id, self->dropped);
        self->dropping = false;
    }
}


/* ---------------------------------------------------------------------- */
/*  Outgoing messages                                                       */

static void
s_send_hello (fleet_t *self)
{
    uint32_t sent = 0;
    while (sent < self->count) {
        ami_msg_reset (self->out, AMI_MSG_HELLO);
        ami_hello_t *hello = &self->out->hello;
        snprintf (hello->role, sizeof hello->role, "meter");
        snprintf (hello->node_id, sizeof hello->node_id, "%s", self->node_id);
        uint32_t chunk = self->count - sent;
        if (chunk > AMI_MAX_HELLO_METERS)
            chunk = AMI_MAX_HELLO_METERS;
        for (uint32_t i = 0; i < chunk; i++)
            ami_meter_id_format (self->first + sent + i, hello->meters [i]);
        hello->meter_count = chunk;
        size_t len = 0;
        int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
        assert (rc == AMI_OK);      /* ids are ours and valid: a bug otherwise */
        s_send (self, self->buf, len, "HELLO");
        sent += chunk;
    }
    ami_log_debug ("fleet %s: HELLO sent (%u meters)", self->node_id, self->count);
}

static void
s_send_health (fleet_t *self)
{
    ami_msg_reset (self->out, AMI_MSG_HEALTH);
    ami_health_t *health = &self->out->health;
    snprintf (health->role, sizeof health->role, "meter");
    snprintf (health->node_id, sizeof health->node_id, "%s", self->node_id);
    health->state = AMI_STATE_READY;
    health->uptime_ms = (uint64_t) (zclock_mono () - self->started);
    const struct { const char *name; uint64_t value; } stats [] = {
        { "meters", self->count },
        { "reads", self->reads },
        { "refused", self->refused },
        { "unreachable", self->unreachable },
        { "malformed", self->malformed },
        { "dropped", self->dropped },
    };
    for (size_t i = 0; i < sizeof stats / sizeof stats [0]; i++) {
        snprintf (health->stats [i].name, sizeof health->stats [i].name, "%s", stats [i].name);
        health->stats [i].value = stats [i].value;
    }
    health->stat_count = sizeof stats / sizeof stats [0];
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
    assert (rc == AMI_OK);
    s_send (self, self->buf, len, "HEALTH");
}

/*  READ_RESP from meter `slot`, signed with its key. sealed may be NULL
    (a refusal: status != 0). */
static void
s_send_read_resp (fleet_t *self, uint32_t slot, const ami_read_req_t *req,
                  uint16_t status, const uint8_t *sealed, size_t sealed_size)
{
    ami_msg_reset (self->out, AMI_MSG_READ_RESP);
    ami_read_resp_t *resp = &self->out->read_resp;
    ami_meter_id_format (self->first + slot, resp->meter_id);
    memcpy (resp->request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    resp->status = status;
    resp->sealed = sealed;
    resp->sealed_size = sealed ? sealed_size : 0;
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
    assert (rc == AMI_OK);      /* sizes are bounded by our own buffers */
    rc = ami_e2e_sign (self->buf, len, s_meter_key (self, slot));
    assert (rc == AMI_OK);
    s_send (self, self->buf, len, "READ_RESP");
}

static void
s_refuse (fleet_t *self, uint32_t slot, const ami_read_req_t *req, int code)
{
    char rid [2 * AMI_REQUEST_ID_SIZE + 1];
    self->refused++;
    s_warn (self, "meter %s refused request %s (counter %" PRIu64 "): %s",
            req->meter_id, ami_request_id_format (req->request_id, rid),
            req->counter, ami_strerror (code));
    s_send_read_resp (self, slot, req, (uint16_t) code, NULL, 0);
}

static void
s_send_unreachable (fleet_t *self, const ami_read_req_t *req)
{
    char rid [2 * AMI_REQUEST_ID_SIZE + 1];
    self->unreachable++;
    ami_log_info ("fleet %s: request %s for meter %s, which is not in this fleet",
                  self->node_id, ami_request_id_format (req->request_id, rid), req->meter_id);
    ami_msg_reset (self->out, AMI_MSG_ERROR);
    ami_error_t *error = &self->out->error;
    error->has_request_id = true;
    memcpy (error->request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    error->code = AMI_E_UNREACHABLE;
    snprintf (error->origin, sizeof error->origin, "%s", self->node_id);
    snprintf (error->text, sizeof error->text, "meter %s is not in fleet %s",
              req->meter_id, self->node_id);
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
    assert (rc == AMI_OK);
    s_send (self, self->buf, len, "ERROR");
}


/* ---------------------------------------------------------------------- */
/*  Reads                                                                   */

static void
s_snapshot (const ami_meter_model_t *model, uint8_t out [S_SNAPSHOT_SIZE])
{
    s_put_be64 (out, (uint64_t) model->clock_s);
    s_put_be64 (out + 8, model->import_wh [0]);
    s_put_be64 (out + 16, model->import_wh [1]);
    s_put_be64 (out + 24, model->export_wh [0]);
    s_put_be64 (out + 32, model->export_wh [1]);
    s_put_be32 (out + 40, model->residue_mwh_i);
    s_put_be32 (out + 44, model->residue_mwh_e);
}

/*  Answer one accepted command with a sealed reading. The model has
    already been advanced to now_ms (and that state persisted), so the
    sample's energy equals the snapshot on disk. */
static void
s_answer (fleet_t *self, const accepted_t *acc, uint64_t now_ms)
{
    meter_t *meter = &self->meters [acc->slot];
    ami_msg_reset (self->out, AMI_MSG_READING);
    ami_reading_t *reading = &self->out->reading;
    ami_meter_model_sample (&meter->model, acc->req.meter_id, now_ms, reading);
    memcpy (reading->request_id, acc->req.request_id, AMI_REQUEST_ID_SIZE);
    size_t plain_len = 0, sealed_len = 0;
    int rc = ami_msg_encode (self->out, self->plain,
                             sizeof self->plain - AMI_E2E_SEAL_OVERHEAD, &plain_len);
    if (rc == AMI_OK)
        rc = ami_e2e_seal (self->plain, plain_len, self->box_pk,
                           self->sealed, sizeof self->sealed, &sealed_len);
    sodium_memzero (self->plain, plain_len);
    if (rc != AMI_OK) {
        /* cannot happen with 19 registers; refuse rather than send less */
        ami_log_error ("fleet %s: cannot seal reading of %s: %s",
                       self->node_id, acc->req.meter_id, ami_strerror (rc));
        s_refuse (self, acc->slot, &acc->req, AMI_E_INTERNAL);
        return;
    }
    self->reads++;
    if (ami_log_enabled (AMI_LOG_DEBUG)) {
        char rid [2 * AMI_REQUEST_ID_SIZE + 1];
        zsys_debug ("fleet %s: meter %s read for request %s (counter %" PRIu64 ")",
                    self->node_id, acc->req.meter_id,
                    ami_request_id_format (acc->req.request_id, rid), acc->req.counter);
    }
    s_send_read_resp (self, acc->slot, &acc->req, AMI_OK, self->sealed, sealed_len);
}

/*  Persist every accepted command of the batch in one transaction, then
    answer them all (or refuse them all if the write failed). */
static void
s_flush (fleet_t *self)
{
    if (self->batch_size == 0)
        return;
    uint64_t now_ms = s_now_ms (self);
    int err = 0;
    ami_store_batch_t *batch = ami_store_batch_begin (self->store, &err);
    for (size_t i = 0; batch && i < self->batch_size; i++) {
        accepted_t *acc = &self->batch [i];
        meter_t *meter = &self->meters [acc->slot];
        uint8_t key [4], counter [8], snapshot [S_SNAPSHOT_SIZE];
        s_put_be32 (key, self->first + acc->slot);
        s_put_be64 (counter, acc->req.counter);
        ami_meter_model_advance (&meter->model, (int64_t) (now_ms / 1000));
        s_snapshot (&meter->model, snapshot);
        int rc = ami_store_batch_put (batch, self->counters_db, key, sizeof key,
                                      counter, sizeof counter, 0);
        if (rc == AMI_OK)
            rc = ami_store_batch_put (batch, self->registers_db, key, sizeof key,
                                      snapshot, sizeof snapshot, 0);
        if (rc != AMI_OK) {
            err = rc;
            break;
        }
    }
    if (batch && err == AMI_OK)
        err = ami_store_batch_commit (&batch);
    else
        ami_store_batch_abort (&batch);
    if (err != AMI_OK) {
        /* SEC-FAIL-1: what was not recorded is not answered. The counters
           stay advanced in memory, which only makes the meter stricter. */
        ami_log_error ("fleet %s: cannot persist %zu command counters (%s): %s",
                       self->node_id, self->batch_size, ami_strerror (err),
                       ami_store_last_error (self->store));
        for (size_t i = 0; i < self->batch_size; i++)
            s_refuse (self, self->batch [i].slot, &self->batch [i].req, AMI_E_STORAGE);
    }
    else
        for (size_t i = 0; i < self->batch_size; i++)
            s_answer (self, &self->batch [i], now_ms);
    self->batch_size = 0;
}

static void
s_handle_read_req (fleet_t *self, const uint8_t *data, size_t size)
{
    const ami_read_req_t *req = &self->in->read_req;
    int64_t slot = s_slot (self, req->meter_id);
    if (slot < 0) {
        s_send_unreachable (self, req);
        return;
    }
    meter_t *meter = &self->meters [slot];
    int rc = ami_e2e_verify (data, size, self->sign_pk);
    if (rc == AMI_OK)
        rc = ami_e2e_check_command (req, req->meter_id, meter->last_counter, s_now_ms (self));
    if (rc != AMI_OK) {
        s_refuse (self, (uint32_t) slot, req, rc);
        return;
    }
    /* accepted: from now on this counter is used, whatever happens next */
    meter->last_counter = req->counter;
    if (self->batch_size == AMI_METER_BATCH)
        s_flush (self);
    accepted_t *acc = &self->batch [self->batch_size++];
    acc->slot = (uint32_t) slot;
    acc->req = *req;
}

static void
s_handle_dealer (fleet_t *self)
{
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return;                 /* interrupted */
    zframe_t *frame = zmsg_first (msg);
    if (zmsg_size (msg) != 1) {
        self->malformed++;
        s_warn (self, "dropped a %zu-frame message from the aggregator", zmsg_size (msg));
        zmsg_destroy (&msg);
        return;
    }
    const uint8_t *data = zframe_data (frame);
    size_t size = zframe_size (frame);
    int rc = ami_msg_decode (self->in, data, size);
    if (rc != AMI_OK) {
        self->malformed++;
        s_warn (self, "dropped a malformed frame from the aggregator (%zu bytes): %s",
                size, ami_strerror (rc));
    }
    else
    if (self->in->type == AMI_MSG_READ_REQ)
        s_handle_read_req (self, data, size);
    else
    if (self->in->type == AMI_MSG_HELLO) {
        ami_log_info ("fleet %s: HELLO from %s %s: re-sending HELLO",
                      self->node_id, self->in->hello.role, self->in->hello.node_id);
        s_send_hello (self);
    }
    else {
        self->malformed++;
        s_warn (self, "dropped %s from the aggregator: not an aggregator's message",
                ami_msg_type_name (self->in->type));
    }
    zmsg_destroy (&msg);
}

static void
s_handle_pipe (fleet_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (msg);
    if (!command || streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "STATUS")) {
        zmsg_t *reply = zmsg_new ();
        zmsg_addstrf (reply, "%u", self->count);
        zmsg_addstrf (reply, "%" PRIu64, self->reads);
        zmsg_addstrf (reply, "%" PRIu64, self->refused);
        zmsg_addstrf (reply, "%" PRIu64, self->unreachable);
        zmsg_addstrf (reply, "%" PRIu64, self->malformed);
        zmsg_send (&reply, self->pipe);
    }
    else
        ami_log_error ("fleet %s: unknown pipe command '%s'", self->node_id, command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Start-up                                                                */

typedef struct {
    fleet_t *self;
    int rc;
} load_t;

static int
s_load_counter (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    load_t *load = (load_t *) arg;
    fleet_t *self = load->self;
    if (klen != 4 || vlen != 8) {
        ami_log_error ("fleet %s: state store: bad counter entry (%zu/%zu bytes)",
                       self->node_id, klen, vlen);
        load->rc = AMI_E_STORAGE;
        return 1;
    }
    uint32_t index = s_get_be32 ((const uint8_t *) key);
    if (index >= self->first && index - self->first < self->count)
        self->meters [index - self->first].last_counter = s_get_be64 ((const uint8_t *) val);
    return 0;
}

static int
s_load_snapshot (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    load_t *load = (load_t *) arg;
    fleet_t *self = load->self;
    if (klen != 4 || vlen != S_SNAPSHOT_SIZE) {
        ami_log_error ("fleet %s: state store: bad register snapshot (%zu/%zu bytes)",
                       self->node_id, klen, vlen);
        load->rc = AMI_E_STORAGE;
        return 1;
    }
    uint32_t index = s_get_be32 ((const uint8_t *) key);
    if (index < self->first || index - self->first >= self->count)
        return 0;
    const uint8_t *p = (const uint8_t *) val;
    ami_meter_model_t *model = &self->meters [index - self->first].model;
    model->clock_s = (int64_t) s_get_be64 (p);
    model->import_wh [0] = s_get_be64 (p + 8);
    model->import_wh [1] = s_get_be64 (p + 16);
    model->export_wh [0] = s_get_be64 (p + 24);
    model->export_wh [1] = s_get_be64 (p + 32);
    model->residue_mwh_i = s_get_be32 (p + 40);
    model->residue_mwh_e = s_get_be32 (p + 44);
    return 0;
}

static int
s_load_state (fleet_t *self, const char *dir)
{
    int err = 0;
    size_t map_size = S_MAP_BASE + (size_t) self->count * S_MAP_PER_METER;
    self->store = ami_store_new (dir, map_size, 0, 0, &err);
    if (!self->store) {
        ami_log_error ("fleet %s: cannot open state directory %s: %s",
                       self->node_id, dir, ami_strerror (err));
        return err;
    }
    int rc = ami_store_db (self->store, "counters", &self->counters_db);
    if (rc == AMI_OK)
        rc = ami_store_db (self->store, "registers", &self->registers_db);
    if (rc != AMI_OK) {
        ami_log_error ("fleet %s: state directory %s: %s", self->node_id, dir,
                       ami_store_last_error (self->store));
        return rc;
    }
    uint8_t from [4], to [4];
    s_put_be32 (from, self->first);
    s_put_be32 (to, self->first + self->count - 1);
    load_t load = { self, AMI_OK };
    rc = ami_store_scan (self->store, self->counters_db, from, 4, to, 4, false,
                         s_load_counter, &load);
    if (rc == AMI_OK)
        rc = ami_store_scan (self->store, self->registers_db, from, 4, to, 4, false,
                             s_load_snapshot, &load);
    if (rc == AMI_OK)
        rc = load.rc;
    if (rc != AMI_OK)
        ami_log_error ("fleet %s: cannot load state from %s: %s", self->node_id, dir,
                       ami_strerror (rc));
    return rc;
}

static bool
s_config_valid (const ami_meter_config_t *config)
{
    if (!config->node_id || !ami_id_valid (config->node_id)) {
        ami_log_error ("meter fleet: node id '%s' is not a valid id",
                       config->node_id ? config->node_id : "");
        return false;
    }
    const char *id = config->node_id;
    if (!config->cert || !ami_cert_has_secret (config->cert)) {
        ami_log_error ("fleet %s: a certificate with its secret key is required", id);
        return false;
    }
    if (!config->aggregator || !*config->aggregator) {
        ami_log_error ("fleet %s: the aggregator endpoint is required", id);
        return false;
    }
    if (!config->aggregator_key || strlen (config->aggregator_key) != AMI_CERT_KEY_TXT_LEN) {
        ami_log_error ("fleet %s: the aggregator's public key (Z85, %d characters) is required",
                       id, AMI_CERT_KEY_TXT_LEN);
        return false;
    }
    if (config->first == 0 || config->count == 0 || config->count > AMI_METER_MAX_COUNT
    ||  config->first - 1 > UINT32_MAX - config->count) {
        ami_log_error ("fleet %s: meters %u..+%u: first must be >= 1, count 1..%d, "
                       "and the last meter number must fit 32 bits",
                       id, config->first, config->count, AMI_METER_MAX_COUNT);
        return false;
    }
    if (!config->state || !*config->state) {
        ami_log_error ("fleet %s: a state directory is required", id);
        return false;
    }
    if (config->heartbeat_ms < 0) {
        ami_log_error ("fleet %s: heartbeat must not be negative", id);
        return false;
    }
    if (sodium_is_zero (config->seed, AMI_E2E_SEED_SIZE)
    ||  sodium_is_zero (config->mdms.sign_pk, AMI_E2E_SIGN_PK_SIZE)
    ||  sodium_is_zero (config->mdms.box_pk, AMI_E2E_BOX_KEY_SIZE)) {
        ami_log_error ("fleet %s: the fleet secret and the MDMS public keys are required", id);
        return false;
    }
    return true;
}

static void
s_self_destroy (fleet_t **self_p)
{
    fleet_t *self = *self_p;
    if (!self)
        return;
    zsock_destroy (&self->dealer);
    ami_store_destroy (&self->store);
    if (self->meters) {
        sodium_memzero (self->meters, (size_t) self->count * sizeof (meter_t));
        free (self->meters);
    }
    sodium_memzero (self->seed, sizeof self->seed);
    ami_msg_destroy (&self->in);
    ami_msg_destroy (&self->out);
    free (self->buf);
    free (self);
    *self_p = NULL;
}

static fleet_t *
s_self_new (zsock_t *pipe, const ami_meter_config_t *config)
{
    if (sodium_init () < 0) {
        ami_log_error ("meter fleet: libsodium failed to initialise");
        return NULL;
    }
    if (!s_config_valid (config))
        return NULL;
    fleet_t *self = (fleet_t *) zmalloc (sizeof (fleet_t));
    assert (self);
    self->pipe = pipe;
    snprintf (self->node_id, sizeof self->node_id, "%s", config->node_id);
    self->first = config->first;
    self->count = config->count;
    memcpy (self->seed, config->seed, sizeof self->seed);
    memcpy (self->sign_pk, config->mdms.sign_pk, sizeof self->sign_pk);
    memcpy (self->box_pk, config->mdms.box_pk, sizeof self->box_pk);
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms : AMI_METER_HEARTBEAT_MS;
    self->clock_offset_ms = config->clock_offset_ms;
    self->in = ami_msg_new ();
    self->out = ami_msg_new ();
    self->buf = (uint8_t *) malloc (S_BUF_SIZE);
    self->meters = (meter_t *) calloc (self->count, sizeof (meter_t));
    if (!self->in || !self->out || !self->buf || !self->meters) {
        ami_log_error ("fleet %s: out of memory for %u meters", self->node_id, self->count);
        s_self_destroy (&self);
        return NULL;
    }
    /* every model starts now; the snapshots loaded next override the
       energy registers of meters that have reported before */
    uint64_t model_seed = ami_meter_model_seed (self->seed);
    int64_t start_s = (int64_t) (s_now_ms (self) / 1000);
    for (uint32_t i = 0; i < self->count; i++)
        ami_meter_model_init (&self->meters [i].model, self->first + i, model_seed, start_s);
    if (s_load_state (self, config->state) != AMI_OK) {
        s_self_destroy (&self);
        return NULL;
    }

    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer) {
        ami_log_error ("fleet %s: cannot create the DEALER socket", self->node_id);
        s_self_destroy (&self);
        return NULL;
    }
    zsock_set_linger (self->dealer, 0);
    zsock_set_maxmsgsize (self->dealer, AMI_MAX_FRAME);
    int hello_chunks = (int) ((self->count + AMI_MAX_HELLO_METERS - 1) / AMI_MAX_HELLO_METERS);
    zsock_set_sndhwm (self->dealer, S_SNDHWM_BASE + hello_chunks);
    zsock_set_heartbeat_ivl (self->dealer, self->heartbeat_ms);
    zsock_set_heartbeat_timeout (self->dealer, S_ZMTP_LIVENESS * self->heartbeat_ms);
    if (ami_auth_client (self->dealer, config->cert, config->aggregator_key) != AMI_OK) {
        s_self_destroy (&self);
        return NULL;
    }
    if (zsock_connect (self->dealer, "%s", config->aggregator) != 0) {
        ami_log_error ("fleet %s: cannot connect to aggregator %s: %s",
                       self->node_id, config->aggregator, zmq_strerror (zmq_errno ()));
        s_self_destroy (&self);
        return NULL;
    }
    self->started = zclock_mono ();
    self->next_heartbeat = self->started + self->heartbeat_ms;
    /* queued until the connection is up: the introduction goes first */
    s_send_hello (self);
    ami_log_info ("fleet %s: %u meters (MTR numbers %u..%u) connecting to %s",
                  self->node_id, self->count, self->first,
                  self->first + self->count - 1, config->aggregator);
    return self;
}

void
ami_meter_actor (zsock_t *pipe, void *args)
{
    zsock_signal (pipe, 0);
    fleet_t *self = s_self_new (pipe, (const ami_meter_config_t *) args);
    if (!self) {
        ami_actor_failed (pipe);
        return;
    }
    ami_actor_ready (pipe);

    zpoller_t *poller = zpoller_new (pipe, self->dealer, NULL);
    assert (poller);
    while (!self->terminated) {
        int64_t wait = self->next_heartbeat - zclock_mono ();
        void *which = zpoller_wait (poller, wait > 0 ? (int) wait : 0);
        if (which == pipe)
            s_handle_pipe (self);
        else
        if (which == self->dealer) {
            /* drain a burst, then commit the accepted counters once */
            for (int i = 0; i < AMI_METER_BATCH; i++) {
                s_handle_dealer (self);
                if (!(zsock_events (self->dealer) & ZMQ_POLLIN))
                    break;
            }
            s_flush (self);
        }
        else
        if (zpoller_terminated (poller))
            break;
        if (zclock_mono () >= self->next_heartbeat) {
            s_send_health (self);
            self->next_heartbeat += self->heartbeat_ms;
            /* after a long stall, do not send a burst of catch-up beats */
            if (self->next_heartbeat < zclock_mono ())
                self->next_heartbeat = zclock_mono () + self->heartbeat_ms;
        }
    }
    zpoller_destroy (&poller);
    ami_log_info ("fleet %s: stopped (%" PRIu64 " reads, %" PRIu64 " refused)",
                  self->node_id, self->reads, self->refused);
    s_self_destroy (&self);
}

zactor_t *
ami_meter_new (const ami_meter_config_t *config)
{
    assert (config);
    return ami_actor_new (ami_meter_actor, (void *) config);
}
