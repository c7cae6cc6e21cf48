/*  ami_auth.h - CurveZMQ authentication for every ami-bus server socket.

    Two layers (DESIGN.md section 5, layer 1): every socket that binds runs
    CURVE as server with this node's certificate, and a ZAP handler (CZMQ
    zauth) admits only clients whose public key is in the allow-list
    directory of the receiving role.

        ami_auth_t *auth = ami_auth_new ("/etc/ami/mdms/allow", &err);
        if (!auth) exit (...);                      //  BEFORE any bind
        zsock_t *api = zsock_new (ZMQ_ROUTER);
        ami_auth_server (api, my_cert);             //  before bind
        zsock_bind (api, "tcp://0.0.0.0:7010");
        ...
        zmsg_t *msg = zmsg_recv (api);
        zframe_t *body = zmsg_next (msg);           //  not the identity frame
        const char *key = ami_auth_peer_key (body); //  caller's public key
        const char *who = ami_auth_peer_meta (body, AMI_CERT_META_NODE_ID);
        ...
        zsock_destroy (&api);                       //  sockets first,
        ami_auth_destroy (&auth);                   //  then the handler

    !!  CREATE ami_auth BEFORE THE FIRST BIND, DESTROY IT AFTER THE LAST
    !!  SERVER SOCKET. libzmq asks a ZAP handler only if one is bound at
    !!  inproc://zeromq.zap.01 when a client connects; with none, a CURVE
    !!  server accepts ANY client that knows its public key. ami_auth_server
    !!  refuses to configure a socket when no ami_auth is running, and
    !!  refuses a socket that is already bound (options set after bind do
    !!  not apply to that endpoint).

    !!  zauth IS PROCESS-WIDE: one ZAP endpoint per ZeroMQ context, and CZMQ
    !!  uses one global context. So there is at most one ami_auth per
    !!  process (a second ami_auth_new fails), and every CURVE server socket
    !!  in the process is checked against the same allow-list; zauth ignores
    !!  the ZAP domain. Running several roles in one process (in-process
    !!  tests) means one allow-list that is the union of theirs (zauth also
    !!  reads subdirectories of the allow-list directory).

    The allow-list directory holds public certificates (ami_cert_save_public
    / ami-keygen output), one file per allowed peer, any names, also in
    subdirectories; files starting with '.' and files ending in "_secret"
    are ignored. zauth re-reads the directory at a handshake whenever its
    file count, total size or newest mtime (1-second resolution) changed;
    ami_auth_reload forces a re-read, for changes that detector can miss
    (a file replaced by one of the same size within the same second).
    Revocation (remove the file; ami_auth_reload makes it immediate) refuses
    the key from its next connection on. ZAP runs at handshakes only, so a
    CURVE session established before the revocation stays up at the socket
    level: servers therefore call ami_auth_peer_allowed on every content
    frame they receive on a server socket and drop what a key no longer
    listed sends (SEC-KEY-3: "reject a revoked node from its next
    connection on, and drop its live sessions").

    Key rotation window (SEC-KEY-2). A certificate in an allow-list may
    carry metadata "expires" = Unix seconds (decimal digits only): from
    that second on ami_auth_peer_allowed refuses the key. zauth does not
    know about "expires": a NEW connection with an expired certificate
    that is still in the directory passes the handshake (and then every
    frame it sends is dropped by ami_auth_peer_allowed). So an expired
    certificate must also be removed: `ami-keygen prune DIR` removes every
    expired one, `ami-keygen rotate DIR NODE --finish` ends a node's window
    at once; run prune from cron/a timer, or after each window.

    CZMQ 4.2.1 zauth hazards this class checks for (ami_auth_check_dir):
    two files with the same public key make zauth abort the whole process
    (assert in zcertstore_insert) the next time it reads the directory, and
    certificate metadata over 512 bytes overflows a heap buffer in zauth;
    also, each time zauth re-reads a file that is not ZPL it leaks memory
    (zconfig_load). All are refused at ami_auth_new and ami_auth_reload, but zauth also
    re-reads the directory on its own: only install certificates made by
    ami-keygen, one per key, and run ami_auth_check_dir in provisioning
    tools before installing one.

    Thread safety: an ami_auth talks to its actor over a pipe that belongs
    to the thread that created it; call ami_auth_reload, _set_verbose and
    _destroy from that thread. The socket helpers and peer accessors have
    no shared state (each socket is used by one thread, as always).
    ami_auth_peer_allowed, ami_auth_key_allowed and ami_auth_refused_count
    may be called from any thread (service actors): the allowed-key set is
    guarded by a process-wide mutex.
*/
#ifndef AMI_AUTH_H_INCLUDED
#define AMI_AUTH_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include "ami_cert.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ami_auth_t ami_auth_t;

/*  Metadata of an allow-list certificate: Unix seconds (decimal) from
    which the key is refused (see "Key rotation window" above). */
#define AMI_AUTH_META_EXPIRES   "expires"

/*  How often, at most, ami_auth_peer_allowed looks at the allow-list
    directory for changes (one readdir + one lstat per file; the set is
    rebuilt only when something changed). Why 250 ms: it bounds how long a
    revoked key's frames are still acted on after its file is removed to a
    quarter second, well under a heartbeat (1 s) and under zauth's own
    1-second change detector, while the scan costs ~4 directory reads a
    second however many frames arrive: per message the check is a mutex
    and a hash lookup. Expiry needs no scan: it is compared with the clock
    at every lookup. */
#define AMI_AUTH_REFRESH_MS     250

/*  ZAP domain set on every server socket by ami_auth_server. zauth does not
    distinguish domains; a domain makes libzmq consult ZAP for every
    mechanism, including NULL. */
#define AMI_AUTH_ZAP_DOMAIN     "ami"

/*  Start the ZAP handler (a zauth actor) with CURVE authentication against
    the public certificates in allow_dir (made absolute with realpath, so a
    later chdir does not matter). When this returns, the handler is bound
    and configured: sockets bound from now on are protected. Returns NULL
    with *err (if err is not NULL) set to:
      AMI_E_CONFIG     allow_dir is missing, not a directory, holds no
                       public certificate, holds a file that is not a valid
                       ami-bus public certificate, or two with the same
                       key; or an ami_auth already runs in this process
                       (logged, naming the directory or file);
      AMI_E_KEY_PERMS  allow_dir, or a certificate in it, is writable by
                       others (anyone could add or swap a key);
      AMI_E_INTERNAL   the zauth actor could not start;
      AMI_E_NOMEM      out of memory. */
ami_auth_t *
    ami_auth_new (const char *allow_dir, int *err);

/*  Stop the ZAP handler. From then on CURVE server sockets accept any
    client: destroy them first. Idempotent; nulls *self_p. */
void
    ami_auth_destroy (ami_auth_t **self_p);

/*  Re-check and re-read the allow-list directory now (re-sends "CURVE" to
    zauth, which rebuilds its certificate store). An empty directory is
    applied (every client is then refused) with a warning. Returns AMI_OK,
    or, without touching zauth's current list, AMI_E_CONFIG /
    AMI_E_KEY_PERMS as for ami_auth_new (logged). */
int
    ami_auth_reload (ami_auth_t *self);

/*  Turn on zauth's verbose logging (every ZAP request and verdict, through
    zsys_info). zauth has no command to turn it off again: false is a
    no-op (a warning is logged if it was on). */
void
    ami_auth_set_verbose (ami_auth_t *self, bool verbose);

/*  Return the absolute allow-list directory. Belongs to self. */
const char *
    ami_auth_allow_dir (ami_auth_t *self);

/*  Return how many public certificates the last check found. */
size_t
    ami_auth_count (ami_auth_t *self);

/*  Return true while an ami_auth exists in this process. */
bool
    ami_auth_running (void);

/*  Check an allow-list directory the way ami_auth_new does, without
    starting anything: it exists, is not world-writable, and every file
    zauth would read (regular, name not starting with '.' nor ending in
    "_secret", subdirectories included) is a valid ami-bus public
    certificate (ami_cert_load_public) that is not world-writable and has
    a key no other file has, whose (role, node-id) no other file without
    "expires" metadata has (one identity, one current key: SEC-AUTH-2; a
    rotation window's old key carries expires), and whose "expires" metadata, if any, is
    decimal Unix seconds (an expired one is fine here: prune removes it).
    Anything else is refused: a stray file has no
    business in an allow-list, and CZMQ 4.2.1 leaks memory each time zauth
    re-reads a file that is not ZPL. *_secret files get a warning (zauth
    skips them, but secrets do not belong there). Stores the number of
    certificates in *count (if not NULL; 0 is not an error here). Returns
    AMI_OK, AMI_E_CONFIG, AMI_E_KEY_PERMS or AMI_E_NOMEM, logged. */
int
    ami_auth_check_dir (const char *allow_dir, size_t *count);

/*  Make sock a CURVE server with cert's keypair and the ZAP domain. Call
    after ami_auth_new and before zsock_bind. Returns AMI_OK, or:
      AMI_E_CONFIG  no ami_auth is running in this process, or sock
                    already has an endpoint (ZMQ_LAST_ENDPOINT is set:
                    bound, or connected) (logged);
      AMI_E_KEY     cert has no secret key, or CURVE could not be set. */
int
    ami_auth_server (zsock_t *sock, ami_cert_t *cert);

/*  Make sock a CURVE client with cert's keypair, trusting the server whose
    public key is server_public_txt (Z85, 40 characters). Call before
    zsock_connect. Returns AMI_OK, or AMI_E_KEY (logged) if cert has no
    secret key, the server key is not valid Z85 of 40 characters, or CURVE
    could not be set. */
int
    ami_auth_client (zsock_t *sock, ami_cert_t *cert, const char *server_public_txt);

/*  Read a server's public key (Z85) from its public certificate file into
    out (41 bytes, NUL-terminated). Returns AMI_OK, or the error of
    ami_cert_load_public (AMI_E_KEY, AMI_E_NOMEM), logged. */
int
    ami_auth_server_key_from_file (const char *public_cert_path,
                                   char out [AMI_CERT_KEY_TXT_LEN + 1]);

/*  Return the Z85 public key of the CURVE client that sent this frame
    (libzmq's "User-Id" property, which zauth sets to the client key), or
    NULL if there is none. Use a content frame as received (zframe_recv /
    zmsg_recv): a ROUTER's identity frame carries no properties, nor does a
    frame made locally or copied with zframe_dup. The string belongs to the
    frame. */
const char *
    ami_auth_peer_key (zframe_t *frame);

/*  Return a metadata value of the sending client's certificate as found
    in the server's allow-list (zauth sends it in the ZAP reply), e.g.
    ami_auth_peer_meta (frame, AMI_CERT_META_NODE_ID), or NULL. Trust it
    as much as the allow-list directory: the client cannot choose it. Same
    frame rules as ami_auth_peer_key. */
const char *
    ami_auth_peer_meta (zframe_t *frame, const char *name);

/*  Is the CURVE client that sent this frame still allowed? True iff the
    frame carries a client key (ami_auth_peer_key; same frame rules) that
    is in the allow-list directory NOW and whose certificate has no
    "expires" metadata or one still in the future. Call it on every content
    frame received on a server socket, before acting on it, and drop the
    message when it returns false: that is how a revoked (or expired)
    node's live session is cut off, since ZAP only runs at handshakes. The
    caller should also stop routing to that peer (it will be forgotten
    when its heartbeats are no longer accepted).

    self may be NULL: then the process's one ami_auth is used (zauth is
    process-wide, so this is the same directory zauth reads); with none
    running, every frame is refused (fail closed). Cost: a mutex and a hash
    lookup; at most every AMI_AUTH_REFRESH_MS the calling thread re-scans
    the directory (a changed directory is re-read; an unreadable or
    invalid file in it is skipped with a warning, so a half-broken
    directory refuses rather than admits). Refusals are counted
    (ami_auth_refused_count) and logged as warnings, at most 20 a second,
    with a count of the ones not logged. */
bool
    ami_auth_peer_allowed (ami_auth_t *self, zframe_t *frame);

/*  Same check for a Z85 public key (40 characters), e.g. one kept from
    ami_auth_peer_key. NULL or malformed: false. Not counted, not logged. */
bool
    ami_auth_key_allowed (ami_auth_t *self, const char *key_txt);

/*  Return how many frames ami_auth_peer_allowed refused since the process
    started (for HEALTH stats). */
uint64_t
    ami_auth_refused_count (void);

/*  Parse an "expires" metadata value: decimal digits only (1..19), no
    sign, no spaces. Returns true and stores the value, or false. */
bool
    ami_auth_parse_expires (const char *text, int64_t *expires);

#ifdef __cplusplus
}
#endif

#endif
