/*  load_api.c - pipelined requests to the MDMS API (see load_api.h).

    Pattern: the zguide's asynchronous client (chapter 3, "asynchronous
    client/server"): a DEALER with many requests in flight, each carrying
    its own correlation id, answers taken as they come. The envelope is
    REQ's ([empty][body]) because the MDMS's api ROUTER is a REQ-compatible
    server.
*/
#include "load_api.h"

#include <string.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"

struct load_api_t {
    zsock_t *dealer;
    zsock_t *monitor;           /* PAIR fed by zmq_socket_monitor */
    ami_msg_t *msg;             /* reused for every encode and decode */
    int handshakes;
};

/* An API_REQ encodes to well under 200 bytes (16-byte corr, id <= 32). */
#define S_REQ_MAX 512

load_api_t *
load_api_new (const char *endpoint, ami_cert_t *cert, const char *server_key, int *err)
{
    int dummy;
    err = err ? err : &dummy;
    *err = AMI_E_NOMEM;
    load_api_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->msg = ami_msg_new ();
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->msg || !self->dealer) {
        load_api_destroy (&self);
        return NULL;
    }
    zsock_set_linger (self->dealer, 0);
    zsock_set_maxmsgsize (self->dealer, AMI_MAX_FRAME);
    zsock_set_sndhwm (self->dealer, 0);
    zsock_set_rcvhwm (self->dealer, 0);
    zsock_set_reconnect_ivl (self->dealer, 100);
    if (ami_auth_client (self->dealer, cert, server_key) != AMI_OK) {
        *err = AMI_E_KEY;
        load_api_destroy (&self);
        return NULL;
    }
    char monitor_ep [64];
    snprintf (monitor_ep, sizeof monitor_ep, "inproc://ami-load-monitor-%p", (void *) self);
    if (zmq_socket_monitor (zsock_resolve (self->dealer), monitor_ep,
                            ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0) {
        self->monitor = zsock_new (ZMQ_PAIR);
        if (self->monitor && zsock_connect (self->monitor, "%s", monitor_ep) != 0)
            zsock_destroy (&self->monitor);
    }
    if (zsock_connect (self->dealer, "%s", endpoint) != 0) {
        ami_log_error ("cannot connect to '%s': %s", endpoint, zmq_strerror (zmq_errno ()));
        *err = AMI_E_CONFIG;
        load_api_destroy (&self);
        return NULL;
    }
    *err = AMI_OK;
    return self;
}

void
load_api_destroy (load_api_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    load_api_t *self = *self_p;
    if (self->dealer && self->monitor)
        zmq_socket_monitor (zsock_resolve (self->dealer), NULL, 0);
    zsock_destroy (&self->monitor);
    zsock_destroy (&self->dealer);
    ami_msg_destroy (&self->msg);
    free (self);
    *self_p = NULL;
}

void *
load_api_socket (load_api_t *self)
{
    return zsock_resolve (self->dealer);
}

int
load_api_handshakes (load_api_t *self)
{
    return self->handshakes;
}

int
load_api_send_read (load_api_t *self, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                    const char *meter_id, uint32_t timeout_ms)
{
    uint8_t buf [S_REQ_MAX];
    size_t len = 0;
    ami_msg_reset (self->msg, AMI_MSG_API_REQ);
    ami_api_req_t *req = &self->msg->api_req;
    memcpy (req->corr, corr, AMI_REQUEST_ID_SIZE);
    req->action = AMI_ACT_READ;
    snprintf (req->meter_id, sizeof req->meter_id, "%s", meter_id);
    req->timeout_ms = timeout_ms;
    if (ami_msg_encode (self->msg, buf, sizeof buf, &len))
        return AMI_E_INTERNAL;
    void *sock = zsock_resolve (self->dealer);
    if (zmq_send (sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) != 0
    ||  zmq_send (sock, buf, len, ZMQ_DONTWAIT) != (int) len)
        return AMI_E_INTERNAL;
    return AMI_OK;
}

int
load_api_recv (load_api_t *self, load_api_reply_t *reply)
{
    void *sock = zsock_resolve (self->dealer);
    zmq_msg_t part [2];
    int parts = 0;
    bool bad = false;
    //  Read the whole message; only [empty][body] is an answer.
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
    if (parts != 2 || zmq_msg_size (&part [0]) != 0)
        bad = true;
    int rc = bad ? -1
               : ami_msg_decode (self->msg, zmq_msg_data (&part [1]), zmq_msg_size (&part [1]));
    for (int i = 0; i < parts; i++)
        zmq_msg_close (&part [i]);
    if (bad || rc) {
        ami_log_debug ("dropped an answer: %s", bad ? "unexpected envelope" : ami_strerror (rc));
        return -1;
    }
    memset (reply, 0, sizeof *reply);
    ami_msg_t *msg = self->msg;
    reply->type = msg->type;
    if (msg->type == AMI_MSG_API_READINGS) {
        reply->has_corr = true;
        memcpy (reply->corr, msg->api_readings.corr, AMI_REQUEST_ID_SIZE);
        reply->count = msg->api_readings.count;
        if (reply->count > 0)
            snprintf (reply->meter_id, sizeof reply->meter_id, "%s",
                      msg->api_readings.readings [0].reading.meter_id);
    }
    else
    if (msg->type == AMI_MSG_ERROR) {
        reply->has_corr = msg->error.has_request_id;
        memcpy (reply->corr, msg->error.request_id, AMI_REQUEST_ID_SIZE);
        reply->code = msg->error.code ? msg->error.code : AMI_E_INTERNAL;
    }
    return 1;
}

int
load_api_check (load_api_t *self)
{
    int refused = 0;
    while (self->monitor) {
        zmsg_t *event = NULL;
        if (zsock_events (self->monitor) & ZMQ_POLLIN)
            event = zmsg_recv (self->monitor);
        if (!event)
            break;
        zframe_t *head = zmsg_first (event);
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
                refused = value ? (int) value : 400;
        }
        zmsg_destroy (&event);
    }
    return refused;
}
