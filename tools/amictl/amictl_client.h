/*  amictl_client.h - amictl's connection to the MDMS operator API.

    One DEALER socket, CURVE client with the operator's own certificate
    (SEC-AUTH-2: no shared accounts), connected to the MDMS api endpoint.
    Each request is one API_REQ frame behind an empty delimiter frame, so
    the MDMS's ROUTER sees exactly what a REQ socket would send, and
    replies come back as [empty][reply]. Unlike REQ, a DEALER lets us give
    up on a request at a deadline and send another one on the same socket
    (a polling `status --wait`); replies are matched to the request by
    correlation id, and a late reply to an earlier request is dropped.

    Every request gets a fresh random correlation id (randombytes_buf):
    the MDMS uses it as the request id end to end, and prints it in its
    logs and audit trail.

    The socket is watched with a libzmq socket monitor so that a refusal
    by the MDMS's ZAP handler (this operator's key is not on its
    allow-list) ends the wait at once with AMI_E_DENIED instead of
    looking like a timeout, and so that a timeout can say whether a
    connection was ever made.
*/
#ifndef AMICTL_CLIENT_H_INCLUDED
#define AMICTL_CLIENT_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

#include "ami_cert.h"
#include "ami_msg.h"

typedef struct amictl_client_t amictl_client_t;

/*  Connect to endpoint as cert (with secret), trusting the server key
    server_key (Z85). Returns NULL with *err = AMI_E_KEY (CURVE could not
    be set up), AMI_E_CONFIG (bad endpoint) or AMI_E_NOMEM (logged). */
amictl_client_t *
    amictl_client_new (const char *endpoint, ami_cert_t *cert, const char *server_key, int *err);

/*  Close the socket (linger 0: nothing left behind). Idempotent. */
void
    amictl_client_destroy (amictl_client_t **self_p);

/*  Send req (its corr is overwritten with a fresh random id) and wait
    until deadline (zclock_mono ms) for the reply to it. Returns:
      AMI_OK          *reply is the decoded reply (API_READINGS, API_METERS,
                      API_STATUS, API_INTERVALS, API_AUDIT, API_CUSTOMER,
                      API_VERIFY) with req->corr;
      the ERROR code  the MDMS answered ERROR: *reply is that ERROR message
                      (code in (*reply)->error.code, never AMI_OK);
      AMI_E_DENIED    the MDMS's ZAP handler refused this key (no reply);
      AMI_E_TIMEOUT   no reply before the deadline (see amictl_client_why);
      AMI_E_INTERNAL  the request could not be encoded or sent.
    *reply belongs to the client, valid until the next request. Frames
    that do not decode, or answer another request, are dropped (logged at
    debug level). */
int
    amictl_client_request (amictl_client_t *self, ami_api_req_t *req, int64_t deadline,
                           ami_msg_t **reply);

/*  The audit log from from_ms on, paged (one AUDIT request per page of
    AMI_MAX_API_AUDIT, `more`): each next page asks for the entries after
    the last seq received (to_ms = that seq, PROTOCOL.md 4.11) from the
    last row's time on (the same entries: time never decreases along the
    chain), and skips rows already received, so an MDMS that ignored
    to_ms would still be paged correctly. Keeps the `want` (>= 1) most
    recent entries in rows[want], oldest first: *count of them; *total =
    entries received in all. first_corr gets the first page's correlation
    id. Each page waits at most page_wait_ms; timeout_ms goes into the
    requests. Should a server that ignores to_ms hold more entries in one
    millisecond than a page, the rest of that millisecond is skipped
    (logged) rather than asked for forever. Returns
    AMI_OK, or the first page's failure as amictl_client_request does
    (*reply is then the ERROR, or NULL), or AMI_E_INTERNAL for a reply of
    the wrong type. */
int
    amictl_client_audit (amictl_client_t *self, uint64_t from_ms, uint32_t timeout_ms,
                         int64_t page_wait_ms, size_t want, ami_audit_row_t *rows,
                         size_t *count, size_t *total,
                         uint8_t first_corr [AMI_REQUEST_ID_SIZE], ami_msg_t **reply);

/*  Why the last request got no answer, for the user ("no connection to
    tcp://... was established", ...). Belongs to the client. */
const char *
    amictl_client_why (amictl_client_t *self);

#endif
