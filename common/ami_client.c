/*  ami_client.c - requests to the MDMS operator API (see ami_client.h).

    Pattern: the zguide's "Lazy Pirate" client side without the automatic
    retry (ami_client_request: a DEALER that speaks REQ's envelope, a
    deadline per request, correlation-id matching so that giving up on a
    request never confuses the next one), and the zguide's asynchronous
    client (chapter 3) for pipelined use (ami_client_send/recv: many
    requests in flight on one DEALER, answers taken as they come).
    Retrying is the caller's decision: only `amictl status --wait` polls; a
    read is never repeated behind the operator's back (the MDMS already
    retries towards the meter).
*/
#include "ami_client.h"

#include <assert.h>
#include <inttypes.h>
#include <sodium.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"

struct ami_client_t {
    zsock_t *dealer;
    zsock_t *monitor;           /* PAIR fed by zmq_socket_monitor */
    zpoller_t *poller;
    ami_msg_t *msg;             /* the last reply, decoded */
    zmq_msg_t body;             /* its bytes (decoded fields may point here) */
    bool have_body;
    char endpoint [256];
    int handshakes;             /* CURVE handshakes that succeeded */
    int failures;               /* handshakes that failed (protocol / no detail) */
    int disconnects;
    char why [512];
};

/* An API_REQ encodes to well under 200 bytes (16-byte corr, id <= 32). */
#define S_REQ_MAX 512

ami_client_t *
ami_client_new (const char *endpoint, ami_cert_t *cert, const char *server_key, int *err)
{
    int dummy;
    err = err ? err : &dummy;
    *err = AMI_E_NOMEM;
    if (sodium_init () < 0) {
        *err = AMI_E_INTERNAL;
        return NULL;
    }
    ami_client_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    snprintf (self->endpoint, sizeof self->endpoint, "%s", endpoint);
    self->msg = ami_msg_new ();
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->msg || !self->dealer) {
        ami_client_destroy (&self);
        return NULL;
    }
    zsock_set_linger (self->dealer, 0);
    zsock_set_maxmsgsize (self->dealer, AMI_MAX_FRAME);
    //  Bounded both ways (issue 6): no caller can queue without limit;
    //  the value and what happens at it are at AMI_CLIENT_HWM
    zsock_set_sndhwm (self->dealer, AMI_CLIENT_HWM);
    zsock_set_rcvhwm (self->dealer, AMI_CLIENT_HWM);
    //  A restarted MDMS is reached again within 100 ms; no need to back off
    //  further for a tool.
    zsock_set_reconnect_ivl (self->dealer, 100);
    if (ami_auth_client (self->dealer, cert, server_key) != AMI_OK) {
        *err = AMI_E_KEY;
        ami_client_destroy (&self);
        return NULL;
    }
    char monitor_ep [64];
    snprintf (monitor_ep, sizeof monitor_ep, "inproc://ami-client-monitor-%p", (void *) self);
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
               | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
               | ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor (zsock_resolve (self->dealer), monitor_ep, events) == 0) {
        self->monitor = zsock_new (ZMQ_PAIR);
        if (self->monitor) {
            zsock_set_linger (self->monitor, 0);
            if (zsock_connect (self->monitor, "%s", monitor_ep) != 0)
                zsock_destroy (&self->monitor);
        }
    }
    if (!self->monitor)
        ami_log_debug ("no socket monitor: authentication refusals will look like timeouts");
    if (zsock_connect (self->dealer, "%s", endpoint) != 0) {
        ami_log_error ("cannot connect to '%s': %s", endpoint, zmq_strerror (zmq_errno ()));
        *err = AMI_E_CONFIG;
        ami_client_destroy (&self);
        return NULL;
    }
    self->poller = zpoller_new (self->dealer, self->monitor, NULL);
    if (!self->poller) {
        ami_client_destroy (&self);
        return NULL;
    }
    *err = AMI_OK;
    return self;
}

static void
s_drop_body (ami_client_t *self)
{
    if (self->have_body)
        zmq_msg_close (&self->body);
    self->have_body = false;
}

void
ami_client_destroy (ami_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ami_client_t *self = *self_p;
    zpoller_destroy (&self->poller);
    if (self->dealer && self->monitor)
        zmq_socket_monitor (zsock_resolve (self->dealer), NULL, 0);
    zsock_destroy (&self->monitor);
    zsock_destroy (&self->dealer);
    s_drop_body (self);
    ami_msg_destroy (&self->msg);
    free (self);
    *self_p = NULL;
}

const char *
ami_client_why (ami_client_t *self)
{
    return self->why;
}

void *
ami_client_socket (ami_client_t *self)
{
    return zsock_resolve (self->dealer);
}

int
ami_client_handshakes (ami_client_t *self)
{
    return self->handshakes;
}

/* One monitor event (one is waiting). Returns the ZAP status when the
   MDMS refused our key, else 0. */
static int
s_monitor_event (ami_client_t *self)
{
    zmsg_t *event = zmsg_recv (self->monitor);
    if (!event)
        return 0;
    zframe_t *head = zmsg_first (event);
    int refused = 0;
    //  libzmq's v1 monitor format: u16 event, u32 value, then the endpoint.
    if (head && zframe_size (head) == 6) {
        uint16_t id;
        uint32_t value;
        memcpy (&id, zframe_data (head), 2);
        memcpy (&value, zframe_data (head) + 2, 4);
        if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            self->handshakes++;
        else
        if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            //  ZAP status codes are 300/400/500; 0 would read as "fine"
            refused = value ? (int) value : 400;
        else
        if (id == ZMQ_EVENT_DISCONNECTED)
            self->disconnects++;
        else
            self->failures++;
        ami_log_debug ("socket event 0x%04x value %u", id, value);
    }
    zmsg_destroy (&event);
    return refused;
}

int
ami_client_check (ami_client_t *self)
{
    int refused = 0;
    while (self->monitor && (zsock_events (self->monitor) & ZMQ_POLLIN)) {
        int status = s_monitor_event (self);
        if (status)
            refused = status;
    }
    return refused;
}

bool
ami_client_reply_corr (const ami_msg_t *msg, uint8_t corr [AMI_REQUEST_ID_SIZE])
{
    const uint8_t *got = NULL;
    switch (msg->type) {
        case AMI_MSG_ERROR:
            if (!msg->error.has_request_id)
                return false;
            got = msg->error.request_id;
            break;
        case AMI_MSG_API_READINGS:  got = msg->api_readings.corr; break;
        case AMI_MSG_API_METERS:    got = msg->api_meters.corr; break;
        case AMI_MSG_API_STATUS:    got = msg->api_status.corr; break;
        case AMI_MSG_API_INTERVALS: got = msg->api_intervals.corr; break;
        case AMI_MSG_API_AUDIT:     got = msg->api_audit.corr; break;
        case AMI_MSG_API_CUSTOMER:  got = msg->api_customer.corr; break;
        case AMI_MSG_API_VERIFY:    got = msg->api_verify.corr; break;
        default:
            return false;
    }
    memcpy (corr, got, AMI_REQUEST_ID_SIZE);
    return true;
}

int
ami_client_send (ami_client_t *self, const ami_api_req_t *req)
{
    uint8_t buf [S_REQ_MAX];
    size_t len = 0;
    ami_msg_reset (self->msg, AMI_MSG_API_REQ);
    self->msg->api_req = *req;
    int rc = ami_msg_encode (self->msg, buf, sizeof buf, &len);
    if (rc) {
        snprintf (self->why, sizeof self->why, "cannot encode the request: %s", ami_strerror (rc));
        return AMI_E_INTERNAL;
    }
    //  Multipart messages are queued whole or not at all: only the first
    //  part can meet the HWM (EAGAIN), and then nothing is queued
    void *sock = zsock_resolve (self->dealer);
    if (zmq_send (sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) != 0
    ||  zmq_send (sock, buf, len, ZMQ_DONTWAIT) != (int) len) {
        int error = zmq_errno ();
        if (error == EAGAIN) {
            snprintf (self->why, sizeof self->why, "%d requests already queued to %s "
                      "and not taken (is the MDMS running and reading?): wait for "
                      "answers before sending more", AMI_CLIENT_HWM, self->endpoint);
            return AMI_E_BUSY;
        }
        snprintf (self->why, sizeof self->why, "cannot send the request to %s: %s",
                  self->endpoint, zmq_strerror (error));
        return AMI_E_INTERNAL;
    }
    return AMI_OK;
}

int
ami_client_recv (ami_client_t *self, ami_msg_t **reply)
{
    void *sock = zsock_resolve (self->dealer);
    zmq_msg_t part [2];
    int parts = 0;
    bool bad = false;
    //  Read the whole message; [empty][body] or a bare [body] is an answer.
    while (true) {
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&frame);
            if (parts == 0)
                return 0;
            bad = true;             //  cannot happen: parts arrive together
            break;
        }
        bool more = zmq_msg_more (&frame);
        if (parts < 2)
            part [parts++] = frame;
        else {
            zmq_msg_close (&frame);
            bad = true;
        }
        if (!more)
            break;
    }
    if (parts == 2 && zmq_msg_size (&part [0]) != 0)
        bad = true;
    if (bad) {
        for (int i = 0; i < parts; i++)
            zmq_msg_close (&part [i]);
        ami_log_debug ("dropped an answer with an unexpected envelope");
        return -1;
    }
    if (parts == 2)
        zmq_msg_close (&part [0]);
    //  Keep the body: decoded variable fields point into it.
    s_drop_body (self);
    self->body = part [parts - 1];
    self->have_body = true;
    int rc = ami_msg_decode (self->msg, zmq_msg_data (&self->body), zmq_msg_size (&self->body));
    if (rc) {
        ami_log_debug ("dropped an answer that does not decode: %s", ami_strerror (rc));
        return -1;
    }
    *reply = self->msg;
    return 1;
}

int
ami_client_request (ami_client_t *self, ami_api_req_t *req, int64_t deadline,
                    ami_msg_t **reply)
{
    char hex [2 * AMI_REQUEST_ID_SIZE + 1];
    self->why [0] = '\0';
    randombytes_buf (req->corr, sizeof req->corr);
    ami_request_id_format (req->corr, hex);
    if (ami_client_send (self, req) != AMI_OK)
        return AMI_E_INTERNAL;
    ami_log_debug ("sent %s request corr=%s meter=%s to %s",
                   ami_action_name (req->action) ? ami_action_name (req->action) : "?",
                   hex, req->meter_id, self->endpoint);

    while (true) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            break;
        void *which = zpoller_wait (self->poller, (int) (left > 1000000 ? 1000000 : left));
        if (!which) {
            if (zpoller_terminated (self->poller)) {
                snprintf (self->why, sizeof self->why, "interrupted");
                return AMI_E_TIMEOUT;
            }
            continue;
        }
        if (which == self->monitor) {
            int status = s_monitor_event (self);
            if (status) {
                snprintf (self->why, sizeof self->why,
                          "the MDMS at %s refused this operator's key (ZAP status %d): "
                          "it is not on the MDMS's allow-list", self->endpoint, status);
                return AMI_E_DENIED;
            }
            continue;
        }
        ami_msg_t *msg = NULL;
        int got;
        while ((got = ami_client_recv (self, &msg)) != 0) {
            if (got < 0)
                continue;
            uint8_t corr [AMI_REQUEST_ID_SIZE];
            //  An ERROR without a request id answers a request the MDMS
            //  could not decode: ours, since only one is outstanding.
            bool ours = msg->type == AMI_MSG_ERROR && !msg->error.has_request_id;
            if (!ours && ami_client_reply_corr (msg, corr))
                ours = memcmp (corr, req->corr, AMI_REQUEST_ID_SIZE) == 0;
            if (!ours) {
                ami_log_debug ("dropped a late %s that answers another request",
                               ami_msg_type_name (msg->type));
                continue;
            }
            *reply = msg;
            if (msg->type == AMI_MSG_ERROR)
                return msg->error.code ? msg->error.code : AMI_E_INTERNAL;
            return AMI_OK;
        }
    }
    if (self->handshakes > 0)
        snprintf (self->why, sizeof self->why,
                  "connected to the MDMS at %s, but it did not answer in time", self->endpoint);
    else
    if (self->failures > 0 || self->disconnects > 0)
        snprintf (self->why, sizeof self->why,
                  "reached %s, but the CURVE handshake never completed "
                  "(is amictl/mdms-cert the MDMS's certificate?)", self->endpoint);
    else
        snprintf (self->why, sizeof self->why,
                  "no connection to the MDMS at %s (is it running?)", self->endpoint);
    return AMI_E_TIMEOUT;
}

int
ami_client_audit (ami_client_t *self, uint64_t from_ms, uint32_t timeout_ms,
                  int64_t page_wait_ms, size_t want, ami_audit_row_t *rows,
                  size_t *count, size_t *total,
                  uint8_t first_corr [AMI_REQUEST_ID_SIZE], ami_msg_t **reply)
{
    assert (self && want > 0 && rows && count && total && reply);
    uint64_t last_seq = 0;
    size_t seen = 0;            //  rows kept so far, as a ring over rows[want]
    bool first = true;
    *reply = NULL;
    *count = *total = 0;
    while (true) {
        ami_api_req_t req = { 0 };
        req.action = AMI_ACT_AUDIT;
        req.from_ms = from_ms;
        req.to_ms = last_seq;       //  for audit: start after this seq
        req.limit = AMI_MAX_API_AUDIT;
        req.timeout_ms = timeout_ms;
        int rc = ami_client_request (self, &req, zclock_mono () + page_wait_ms, reply);
        if (first && first_corr)
            memcpy (first_corr, req.corr, AMI_REQUEST_ID_SIZE);
        first = false;
        if (rc)
            return rc;
        if ((*reply)->type != AMI_MSG_API_AUDIT) {
            snprintf (self->why, sizeof self->why, "the MDMS answered %s to an audit request",
                      ami_msg_type_name ((*reply)->type));
            return AMI_E_INTERNAL;
        }
        const ami_api_audit_t *page = &(*reply)->api_audit;
        size_t fresh = 0;
        uint64_t last_time = from_ms;
        for (uint32_t i = 0; i < page->count; i++) {
            const ami_audit_row_t *row = &page->entries [i];
            if (row->time_ms > last_time)
                last_time = row->time_ms;
            if (row->seq <= last_seq)
                continue;           //  the overlap with the previous page
            rows [seen % want] = *row;
            seen++;
            fresh++;
            last_seq = row->seq;
        }
        if (!page->more || page->count == 0)
            break;
        if (fresh == 0) {
            //  A whole page of one millisecond already seen: step past it
            //  rather than ask for the same page forever.
            ami_log_warn ("audit: more than %d entries at %" PRIu64 " ms: some are not shown",
                          AMI_MAX_API_AUDIT, last_time);
            if (last_time == UINT64_MAX)
                break;
            last_time++;
        }
        from_ms = last_time;
    }
    //  Unroll the ring, oldest first (in place, by rotation).
    *total = seen;
    *count = seen < want ? seen : want;
    if (seen > want) {
        size_t start = seen % want;
        ami_audit_row_t *tmp = malloc (start * sizeof *tmp);
        if (!tmp && start) {
            snprintf (self->why, sizeof self->why, "out of memory");
            return AMI_E_NOMEM;
        }
        if (start) {
            memcpy (tmp, rows, start * sizeof *tmp);
            memmove (rows, rows + start, (want - start) * sizeof *rows);
            memcpy (rows + (want - start), tmp, start * sizeof *tmp);
        }
        free (tmp);
    }
    return AMI_OK;
}

int
ami_client_intervals (ami_client_t *self, const char *meter_id, uint64_t from_ms,
                      uint64_t to_ms, uint32_t timeout_ms, int64_t page_wait_ms,
                      ami_interval_t **records, size_t *count,
                      uint8_t first_corr [AMI_REQUEST_ID_SIZE], ami_msg_t **reply)
{
    assert (self && meter_id && records && count && reply);
    ami_interval_t *rows = NULL;
    size_t have = 0, cap = 0;
    bool first = true;
    uint64_t next_ms = from_ms;     //  ask from here; rows must end at or after it
    *records = NULL;
    *count = 0;
    *reply = NULL;
    int rc = AMI_OK;
    while (true) {
        ami_api_req_t req = { 0 };
        req.action = AMI_ACT_INTERVALS;
        snprintf (req.meter_id, sizeof req.meter_id, "%s", meter_id);
        req.from_ms = next_ms;
        req.to_ms = to_ms;
        req.limit = AMI_MAX_API_INTERVALS;
        req.timeout_ms = timeout_ms;
        rc = ami_client_request (self, &req, zclock_mono () + page_wait_ms, reply);
        if (first && first_corr)
            memcpy (first_corr, req.corr, AMI_REQUEST_ID_SIZE);
        first = false;
        if (rc)
            break;
        if ((*reply)->type != AMI_MSG_API_INTERVALS
        ||  strcmp ((*reply)->api_intervals.meter_id, meter_id) != 0) {
            snprintf (self->why, sizeof self->why, "the MDMS answered %s%s%s to an intervals "
                      "request for %s", ami_msg_type_name ((*reply)->type),
                      (*reply)->type == AMI_MSG_API_INTERVALS ? " of " : "",
                      (*reply)->type == AMI_MSG_API_INTERVALS ? (*reply)->api_intervals.meter_id
                                                              : "", meter_id);
            rc = AMI_E_INTERNAL;
            break;
        }
        const ami_api_intervals_t *page = &(*reply)->api_intervals;
        size_t fresh = 0;
        for (uint32_t i = 0; i < page->count; i++) {
            uint64_t end_ms = (uint64_t) page->records [i].end_s * 1000;
            if (end_ms < next_ms || (to_ms && end_ms > to_ms))
                continue;           //  repeated, out of order, or out of range
            if (have == AMI_CLIENT_MAX_INTERVALS) {
                snprintf (self->why, sizeof self->why, "more than %d interval records in the "
                          "range: ask for a shorter one", AMI_CLIENT_MAX_INTERVALS);
                rc = AMI_E_LIMIT;
                break;
            }
            if (have == cap) {
                size_t ncap = cap ? cap * 2 : AMI_MAX_API_INTERVALS;
                ami_interval_t *grown = realloc (rows, ncap * sizeof *rows);
                if (!grown) {
                    snprintf (self->why, sizeof self->why, "out of memory");
                    rc = AMI_E_NOMEM;
                    break;
                }
                rows = grown;
                cap = ncap;
            }
            rows [have++] = page->records [i];
            next_ms = end_ms + 1;
            fresh++;
        }
        if (rc)
            break;
        //  A server that says "more" but sends nothing new would loop forever.
        if (!page->more || fresh == 0 || (to_ms && next_ms > to_ms))
            break;
    }
    if (rc) {
        free (rows);
        return rc;
    }
    *records = rows;
    *count = have;
    return AMI_OK;
}

/*  Status paging: the same request/reply paging as ami_client_intervals
    (a cursor carried from page to page), with the cursor a row count.
    Duplicates are found by a linear scan: at most ~1 000 rows, ~0.5 M
    comparisons for a whole walk, nothing next to one CURVE round trip. */
static bool
s_status_held (const ami_client_status_t *status, const ami_service_row_t *row)
{
    for (size_t i = 0; i < status->count; i++)
        if (strcmp (status->rows [i].node_id, row->node_id) == 0
        &&  strcmp (status->rows [i].role, row->role) == 0)
            return true;
    return false;
}

int
ami_client_status (ami_client_t *self, uint32_t timeout_ms, int64_t page_wait_ms,
                   ami_client_status_t *out, ami_msg_t **reply)
{
    assert (self && out && reply);
    ami_client_status_free (out);           //  a previous walk's rows
    memset (out, 0, sizeof *out);
    *reply = NULL;
    while (true) {
        ami_api_req_t req = { 0 };
        req.action = AMI_ACT_STATUS;
        req.from_ms = out->received;        //  for status: rows to skip
        req.limit = AMI_MAX_API_SERVICES;
        req.timeout_ms = timeout_ms;
        int rc = ami_client_request (self, &req, zclock_mono () + page_wait_ms, reply);
        memcpy (out->last_corr, req.corr, AMI_REQUEST_ID_SIZE);
        if (out->pages == 0)
            memcpy (out->first_corr, req.corr, AMI_REQUEST_ID_SIZE);
        if (rc)
            return rc;
        if ((*reply)->type != AMI_MSG_API_STATUS) {
            snprintf (self->why, sizeof self->why, "the MDMS answered %s to a status request",
                      ami_msg_type_name ((*reply)->type));
            return AMI_E_INTERNAL;
        }
        const ami_api_status_t *page = &(*reply)->api_status;
        out->pages++;
        if (out->received + page->count > AMI_CLIENT_STATUS_MAX_ROWS) {
            snprintf (self->why, sizeof self->why, "the MDMS kept paging past %d rows",
                      AMI_CLIENT_STATUS_MAX_ROWS);
            return AMI_E_LIMIT;
        }
        out->received += page->count;
        if (out->count + page->count > out->cap) {
            size_t cap = out->cap ? out->cap * 2 : AMI_MAX_API_SERVICES;
            while (cap < out->count + page->count)
                cap *= 2;
            ami_service_row_t *grown = realloc (out->rows, cap * sizeof *grown);
            if (!grown) {
                snprintf (self->why, sizeof self->why, "out of memory");
                return AMI_E_NOMEM;
            }
            out->rows = grown;
            out->cap = cap;
        }
        for (uint32_t i = 0; i < page->count && i < AMI_MAX_API_SERVICES; i++)
            if (!s_status_held (out, &page->services [i]))
                out->rows [out->count++] = page->services [i];
        //  A server that says "more" but sends nothing would loop forever.
        if (!page->more || page->count == 0)
            return AMI_OK;
    }
}

void
ami_client_status_free (ami_client_status_t *status)
{
    if (!status)
        return;
    free (status->rows);
    status->rows = NULL;
    status->count = status->cap = 0;
}

int
ami_client_parse_ms (const char *text, int64_t max, int64_t *out)
{
    char *end = NULL;
    if (!text || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno)
        return -1;
    if (strcmp (end, "s") == 0) {
        if (value > max / 1000)
            return -1;
        value *= 1000;
    }
    else
    if (*end && strcmp (end, "ms") != 0)
        return -1;
    if (value > max)
        return -1;
    *out = value;
    return 0;
}

char *
ami_client_config_path (const char *given)
{
    if (given)
        return strdup (given);
    const char *env = getenv ("AMICTL_CONFIG");
    if (env && *env)
        return strdup (env);
    char *found = ami_config_beside_exe ("../var/demo/etc/amictl.cfg");
    if (!found && access (AMI_CLIENT_SYSTEM_CONFIG, F_OK) == 0)
        found = strdup (AMI_CLIENT_SYSTEM_CONFIG);
    return found;
}

const char *
ami_client_settings (ami_config_t *config, const char **endpoint, const char **cert,
                     const char **mdms_cert)
{
    if (!*endpoint)
        ami_config_str (config, "amictl/endpoint", NULL, endpoint);
    if (!*cert)
        ami_config_str (config, "amictl/cert", NULL, cert);
    if (!*mdms_cert)
        ami_config_str (config, "amictl/mdms-cert", NULL, mdms_cert);
    return !*endpoint ? "amictl/endpoint (or -e)"
         : !*cert ? "amictl/cert (or --cert)"
         : !*mdms_cert ? "amictl/mdms-cert (or --mdms-cert)" : NULL;
}
