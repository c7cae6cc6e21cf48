/*  load_api.h - ami-load's minimal, pipelined client of the MDMS operator API.

    The same wire as amictl (tools/amictl/amictl_client.c): one DEALER,
    CURVE client with an operator's certificate, each request [empty]
    [API_REQ] as a REQ would send it, each answer [empty][reply]. What
    differs is the shape of the conversation: amictl has one request out
    and blocks on it; ami-load keeps many out at once on one socket and
    matches answers by correlation id, so this class only sends and
    receives, without waiting. (The connection set-up and monitor are a
    reduced copy of amictl_client.c's: see the report that asked to merge
    both into common/.)

    The socket monitor counts CURVE handshakes and sees a refusal by the
    MDMS's ZAP handler, so the caller can tell "nothing is listening"
    from "our key is refused" from "connected but no answer".
*/
#ifndef LOAD_API_H_INCLUDED
#define LOAD_API_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "ami_cert.h"
#include "ami_msg.h"

typedef struct load_api_t load_api_t;

/*  What one answer said. */
typedef struct {
    int type;                   /* AMI_MSG_API_READINGS, AMI_MSG_ERROR, ... */
    bool has_corr;              /* false: an ERROR without a request id */
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int code;                   /* ERROR: its code; else AMI_OK */
    uint32_t count;             /* API_READINGS: rows */
    char meter_id [AMI_MAX_ID + 1];   /* API_READINGS: meter of the first row */
} load_api_reply_t;

/*  Connect a DEALER to endpoint as cert, trusting server_key (Z85). The
    send and receive queues are unbounded (HWM 0): the caller bounds the
    requests in flight itself. Returns NULL with *err = AMI_E_KEY,
    AMI_E_CONFIG (bad endpoint) or AMI_E_NOMEM (logged). */
load_api_t *
    load_api_new (const char *endpoint, ami_cert_t *cert, const char *server_key, int *err);

/*  Close (linger 0). Idempotent; nulls *self_p. */
void
    load_api_destroy (load_api_t **self_p);

/*  The libzmq socket, for zmq_poll. */
void *
    load_api_socket (load_api_t *self);

/*  Queue one READ of meter_id with this correlation id and the MDMS-side
    timeout. Never blocks. Returns AMI_OK or AMI_E_INTERNAL (encode or
    send failed). */
int
    load_api_send_read (load_api_t *self, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                        const char *meter_id, uint32_t timeout_ms);

/*  Take one answer if one is waiting. Returns 1 and fills *reply, 0 if
    none is waiting, -1 if a frame was dropped (bad envelope or does not
    decode: logged at debug level; call again). */
int
    load_api_recv (load_api_t *self, load_api_reply_t *reply);

/*  Read pending monitor events. Returns the ZAP status code if the MDMS
    refused our key (e.g. 400), else 0. */
int
    load_api_check (load_api_t *self);

/*  CURVE handshakes completed so far. */
int
    load_api_handshakes (load_api_t *self);

#endif
