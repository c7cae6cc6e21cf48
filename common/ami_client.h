/*  ami_client.h - an operator's connection to the MDMS API: the one client
    behind amictl and ami-load.

    One DEALER socket, CURVE client with the operator's own certificate
    (SEC-AUTH-2: no shared accounts), connected to the MDMS api endpoint.
    Each request is one API_REQ frame behind an empty delimiter frame, so
    the MDMS's ROUTER sees exactly what a REQ socket would send, and
    replies come back as [empty][reply] (a bare [reply] is accepted too).
    Unlike REQ, a DEALER lets a caller give up on a request at a deadline
    and send another on the same socket, or keep many requests in flight;
    replies are matched to requests by correlation id.

    Two ways to use it:

    - one request at a time (amictl): ami_client_request sends a request
      with a fresh random correlation id and blocks until its answer or a
      deadline; a late answer to an earlier request is dropped. The paging
      helpers ami_client_audit, ami_client_intervals and ami_client_status
      (every row of API_STATUS: amictl status, ami-load ingest) are built
      on it.
    - pipelined (ami-load read): ami_client_send queues a request with the
      caller's correlation id and never blocks; ami_client_recv takes one
      answer if one is waiting; the caller polls ami_client_socket and
      matches answers itself.

    The socket is watched with a libzmq socket monitor so that a refusal
    by the MDMS's ZAP handler (this operator's key is not on its
    allow-list) is seen at once (AMI_E_DENIED instead of a timeout), and
    so that a timeout can say whether a connection was ever made.

    Ownership: a decoded reply belongs to the client and stays valid until
    the next call that sends or receives on it (its variable fields point
    into the received frame, which the client keeps). Not thread-safe: use
    a client from one thread.
*/
#ifndef AMI_CLIENT_H_INCLUDED
#define AMI_CLIENT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_cert.h"
#include "ami_config.h"
#include "ami_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ami_client_t ami_client_t;

/*  Most interval records ami_client_intervals collects for one range:
    about 28 years at 15 minutes, 24 MB. A larger range is refused
    (AMI_E_LIMIT) rather than filling memory: narrow the range. */
#define AMI_CLIENT_MAX_INTERVALS    1000000

/*  10000 messages each way on the client's DEALER (ZMQ_SNDHWM and
    ZMQ_RCVHWM). The MDMS keeps at most 10000 reads pending
    (AMI_MDMS_MAX_PENDING; more are answered BUSY), and ami-load's
    --concurrency, the most requests one client keeps in flight, is
    capped at the same number: so the bound is never met by a caller that
    waits for its answers (amictl has one request in flight), yet a caller
    that only sends cannot queue without limit. In bytes: an API_REQ is
    < 512 bytes, so a full send queue is < 5 MiB; replies come one per
    request (a READ's API_READINGS is a few KiB, pages of METERS, HISTORY
    or AUDIT at most AMI_MAX_FRAME but asked one at a time). At the send
    bound ami_client_send fails at once with AMI_E_BUSY (it never blocks);
    at the receive bound libzmq stops reading the connection, and the
    MDMS counts the replies it could not send (send_failed). */
#define AMI_CLIENT_HWM              10000

/*  Connect to endpoint as cert (with secret), trusting the server key
    server_key (Z85). The send and receive queues hold AMI_CLIENT_HWM
    messages each: see there, and ami_client_send. Returns NULL with
    *err = AMI_E_KEY (CURVE could not be set up), AMI_E_CONFIG (bad
    endpoint), AMI_E_INTERNAL (libsodium) or AMI_E_NOMEM (logged). */
ami_client_t *
    ami_client_new (const char *endpoint, ami_cert_t *cert, const char *server_key, int *err);

/*  Close the socket (linger 0: nothing left behind). Idempotent; nulls
    *self_p. */
void
    ami_client_destroy (ami_client_t **self_p);

/*  Send req (its corr is overwritten with a fresh random id) and wait
    until deadline (zclock_mono ms) for the reply to it. Returns:
      AMI_OK          *reply is the decoded reply (API_READINGS, API_METERS,
                      API_STATUS, API_INTERVALS, API_AUDIT, API_CUSTOMER,
                      API_VERIFY) with req->corr;
      the ERROR code  the MDMS answered ERROR: *reply is that ERROR message
                      (code in (*reply)->error.code, never AMI_OK);
      AMI_E_DENIED    the MDMS's ZAP handler refused this key (no reply);
      AMI_E_TIMEOUT   no reply before the deadline (see ami_client_why);
      AMI_E_INTERNAL  the request could not be encoded or sent.
    Frames that do not decode, or answer another request, are dropped
    (logged at debug level). */
int
    ami_client_request (ami_client_t *self, ami_api_req_t *req, int64_t deadline,
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
    (logged) rather than asked for forever. Returns AMI_OK, or a page's
    failure as ami_client_request does (*reply is then the ERROR, or
    NULL), or AMI_E_INTERNAL for a reply of the wrong type. */
int
    ami_client_audit (ami_client_t *self, uint64_t from_ms, uint32_t timeout_ms,
                      int64_t page_wait_ms, size_t want, ami_audit_row_t *rows,
                      size_t *count, size_t *total,
                      uint8_t first_corr [AMI_REQUEST_ID_SIZE], ami_msg_t **reply);

/*  Every stored interval record of meter_id whose end lies in
    [from_ms, to_ms] (Unix ms, inclusive; 0 = unbounded), oldest first:
    action intervals (PROTOCOL.md 4.11, 4.15), paged by asking again from
    the last record's end + 1 ms while the MDMS says `more`. Records that
    do not advance (a repeated or out-of-order end time) or lie outside
    the range are skipped, so a misbehaving server cannot make this loop
    or return rows twice. *records is a heap array the caller frees
    (NULL when *count is 0). first_corr gets the first page's correlation
    id. Each page waits at most page_wait_ms. Returns AMI_OK, a page's
    failure as ami_client_request does (*reply the ERROR, or NULL),
    AMI_E_INTERNAL for a reply of the wrong type or for another meter,
    AMI_E_LIMIT past AMI_CLIENT_MAX_INTERVALS records, AMI_E_NOMEM;
    ami_client_why says which. On failure *records is NULL. */
int
    ami_client_intervals (ami_client_t *self, const char *meter_id, uint64_t from_ms,
                          uint64_t to_ms, uint32_t timeout_ms, int64_t page_wait_ms,
                          ami_interval_t **records, size_t *count,
                          uint8_t first_corr [AMI_REQUEST_ID_SIZE], ami_msg_t **reply);

/*  Rows ami_client_status receives in one walk at most, duplicates
    included: 8 x the MDMS's service table (AMI_MDMS_MAX_SERVICES, 1024)
    plus its own two rows, so no honest walk comes near it even with rows
    shifting; it bounds a server that keeps saying `more`, and the
    caller's memory (~3 KiB a row kept, 64 stats each: 25 MiB at worst). */
#define AMI_CLIENT_STATUS_MAX_ROWS  8192

/*  Every row of the MDMS's API_STATUS, as ami_client_status collects it.
    Zero it before the first walk ({ 0 }); it may then be walked into
    again and again (each walk frees the previous rows first). */
typedef struct {
    ami_service_row_t *rows;    /* heap, in the MDMS's order, no (role, node) twice */
    size_t count;
    size_t cap;
    uint8_t first_corr [AMI_REQUEST_ID_SIZE];   /* of the first page's request */
    uint8_t last_corr [AMI_REQUEST_ID_SIZE];    /* of the last request sent */
    size_t pages;               /* replies received */
    size_t received;            /* rows received, duplicates included */
} ami_client_status_t;

/*  Every service the MDMS knows (action status, PROTOCOL.md 4.11 action
    4, 4.14): API_STATUS is paged - at most AMI_MAX_API_SERVICES (64) rows
    a reply, `more` while rows follow - and a deployment has more services
    than that (the MDMS tracks up to 1024: head ends, aggregators, meter
    fleets). This walks every page and keeps the rows in *out, which
    must be zeroed or hold an earlier walk (its rows are freed first);
    free them with ami_client_status_free, also after a failure (the rows
    of a failed walk are partial: do not use them).

    Paging: each next page asks from_ms = the rows received so far (a row
    count, not a time), limit = AMI_MAX_API_SERVICES. The MDMS recomputes
    its order (mdms, broker, then by role and node id) per request, so a
    service heard or forgotten between two pages shifts the later rows by
    one: a row whose (role, node id) is already held is dropped, never
    kept twice. A service that appears during the walk at a position
    already passed is missed until the next walk.

    Defence against a misbehaving server: a page that says `more` but
    holds no row ends the walk (what was received is kept, AMI_OK); more
    than AMI_CLIENT_STATUS_MAX_ROWS rows received in all (duplicates
    included) fails with AMI_E_LIMIT rather than asking forever.

    Each page waits at most page_wait_ms; timeout_ms goes into the
    requests. Returns AMI_OK, or a page's failure as ami_client_request
    returns it (*reply is then the ERROR, or NULL; out->last_corr names
    that request), AMI_E_INTERNAL for a reply of another type,
    AMI_E_LIMIT past AMI_CLIENT_STATUS_MAX_ROWS, AMI_E_NOMEM;
    ami_client_why says which. */
int
    ami_client_status (ami_client_t *self, uint32_t timeout_ms, int64_t page_wait_ms,
                       ami_client_status_t *out, ami_msg_t **reply);

/*  Free the rows of a walk; *status can be walked into again.
    Idempotent. */
void
    ami_client_status_free (ami_client_status_t *status);

/*  Why the last request got no answer or failed on our side, for the
    user ("no connection to the MDMS at tcp://... (is it running?)").
    Belongs to the client; "" when there is nothing to say. */
const char *
    ami_client_why (ami_client_t *self);

/*  Pipelined use: the libzmq socket, for zmq_poll (ZMQ_POLLIN). */
void *
    ami_client_socket (ami_client_t *self);

/*  Queue req as it is (its corr is the caller's). Never blocks. Returns
    AMI_OK; AMI_E_BUSY when AMI_CLIENT_HWM requests are already queued
    and not yet taken by the connection (the MDMS is not reading them, or
    is not connected: requests queue until it is): nothing is queued,
    ami_client_why says so, the caller should wait for answers before
    sending more; or AMI_E_INTERNAL when it could not be encoded or
    queued for another reason (ami_client_why says which). */
int
    ami_client_send (ami_client_t *self, const ami_api_req_t *req);

/*  Take one answer if one is waiting, without blocking. Returns 1 with
    *reply the decoded answer (any type: the caller matches it), 0 when
    none is waiting, -1 when a frame was dropped (bad envelope, does not
    decode: logged at debug level; call again). */
int
    ami_client_recv (ami_client_t *self, ami_msg_t **reply);

/*  The correlation id an answer carries (API_* replies, or an ERROR with
    a request id). Returns false for an ERROR without a request id (the
    MDMS could not decode the request) and for other types. */
bool
    ami_client_reply_corr (const ami_msg_t *reply, uint8_t corr [AMI_REQUEST_ID_SIZE]);

/*  Read pending monitor events without blocking. Returns the ZAP status
    code if the MDMS refused our key (e.g. 400), else 0. */
int
    ami_client_check (ami_client_t *self);

/*  CURVE handshakes completed so far (as seen by ami_client_check and
    ami_client_request). */
int
    ami_client_handshakes (ami_client_t *self);

/*  Where operator tools (amictl, ami-load) find amictl.cfg when -c is not
    given: $AMICTL_CONFIG, else the demo's var/demo/etc/amictl.cfg beside
    the binary's ../, else AMI_CLIENT_SYSTEM_CONFIG if it exists. */
#define AMI_CLIENT_SYSTEM_CONFIG "/etc/ami-bus/amictl.cfg"

/*  The configuration file to load: `given` (from -c) if not NULL, else as
    above. Returns a fresh string (free it), or NULL when there is none. */
char *
    ami_client_config_path (const char *given);

/*  The connection settings from amictl.cfg's section amictl, each unless
    the command line already gave it (non-NULL *endpoint, *cert,
    *mdms_cert stay). Returns NULL when all three are set, else the name of
    the first missing one, for the error message ("amictl/endpoint (or
    -e)"). The strings are borrowed from config. */
const char *
    ami_client_settings (ami_config_t *config, const char **endpoint, const char **cert,
                         const char **mdms_cert);

/*  Parse a command-line time in milliseconds the way the operator tools
    take --timeout: digits, optionally followed by "ms" or "s" ("2500",
    "2500ms", "3s"). Stores 0..max in *out and returns 0, or returns -1
    (no digits first, junk after, overflow, or above max). */
int
    ami_client_parse_ms (const char *text, int64_t max, int64_t *out);

#ifdef __cplusplus
}
#endif

#endif
