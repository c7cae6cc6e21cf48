/*  ami_service.h - the start-up and run loop shared by every service main.

    Each services/<role>/main.c is a thin wrapper:

        static const char *const known [] = { "mdms/api", "mdms/db", ..., NULL };
        static const ami_service_info_t info = {
            .program = "ami-mdms", .role = "mdms", .summary = "...",
            .known = known, .config_help = "...", .server = true
        };
        int main (int argc, char **argv) {
            int rc;
            ami_service_t *svc = ami_service_start (&info, argc, argv, &rc);
            if (!svc) return rc;                 // --help (0), usage (2), startup error (1)
            ... build the actor's arguments from ami_service_config (svc) ...
            zactor_t *actor = zactor_new (ami_mdms_actor, &args);
            if (args.status) { ...; rc = 1; }    // actor could not start: it said why
            else rc = ami_service_run (svc, actor);
            zactor_destroy (&actor);
            ami_service_destroy (&svc);
            return rc;
        }

    ami_service_start does, in this order, and stops at the first failure
    with a log line that names the file or key at fault:
      1. parse the common options: -c FILE (required), -o path=value
         (repeatable), -v (debug), -h/--help;
      2. load the ZPL config, apply the -o overrides, refuse unknown keys
         (the common keys below plus info->known);
      3. set up logging as "PROGRAM[node/id]" at log/level (or debug);
      4. load this node's certificate from node/cert (secret file mode is
         checked by ami_cert_load: SEC-KEY-1) and check its role metadata
         equals info->role and its node-id equals node/id;
      5. for servers, start the ZAP handler on node/allow BEFORE the actor
         binds anything (libzmq accepts every client when no ZAP handler
         runs).

    Common configuration keys (every service):
        node/id        this node's id (must match the certificate)
        node/cert      path of this node's certificate (public path; the
                       secret is read from PATH_secret)
        node/allow     allow-list directory (servers only, required)
        log/level      error | warn | info | debug (default info)
        heartbeat      HEALTH interval (default 1s)

    Actor convention used by every ami-bus actor (CZMQ 4.2's zactor_new
    discards the handshake status, so start-up success travels as one
    string message after it):

        void ami_x_actor (zsock_t *pipe, void *args) {
            zsock_signal (pipe, 0);                  // CZMQ: signal first
            self = s_self_new (args);                // binds, opens, loads
            if (!self) { ami_actor_failed (pipe); return; }   // logged why
            ami_actor_ready (pipe);
            ... serve until "$TERM" ...
        }
        zactor_t *ami_x_new (const ami_x_config_t *config) {
            return ami_actor_new (ami_x_actor, (void *) config);
        }

    ami_actor_new returns NULL when the actor failed, and then nothing of
    it is left running.
*/
#ifndef AMI_SERVICE_H_INCLUDED
#define AMI_SERVICE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Transport constants shared by every role (proto/PROTOCOL.md §8.1).
   HEALTH goes upward every heartbeat; a peer silent for LIVENESS heartbeats
   is gone: 3 tolerates one lost or late heartbeat without flapping, and
   still detects a dead head end within about 3 s (SEC-AVAIL-1). */
#define AMI_HEARTBEAT_MS        1000
#define AMI_HEARTBEAT_LIVENESS  3
/* Linger on close: long enough to flush a final reply on loopback, short
   enough that a stopping service never hangs on a dead peer. */
#define AMI_LINGER_MS           100

typedef struct {
    const char *program;            /* "ami-mdms": log identity and --help */
    const char *role;               /* certificate role required: "mdms" */
    const char *summary;            /* one line for --help */
    const char *const *known;       /* role-specific config keys, NULL-terminated */
    const char *config_help;        /* role-specific keys and defaults for --help */
    bool server;                    /* binds sockets: node/allow is required */
} ami_service_info_t;

typedef struct ami_service_t ami_service_t;

/*  Start a service as described above. On success returns the service.
    Otherwise returns NULL and sets *exit_code: 0 after --help (printed to
    stdout), 2 for a usage error (message and usage on stderr), 1 for a
    start-up failure (logged, naming the file or key). */
ami_service_t *
    ami_service_start (const ami_service_info_t *info, int argc, char **argv,
                       int *exit_code);

/*  Stop the ZAP handler and free everything. Idempotent; nulls *self_p. */
void
    ami_service_destroy (ami_service_t **self_p);

/*  Borrowed accessors: valid until ami_service_destroy. */
ami_config_t *
    ami_service_config (ami_service_t *self);
ami_cert_t *
    ami_service_cert (ami_service_t *self);
ami_auth_t *
    ami_service_auth (ami_service_t *self);      /* NULL for clients */
const char *
    ami_service_node_id (ami_service_t *self);
int64_t
    ami_service_heartbeat_ms (ami_service_t *self);
bool
    ami_service_verbose (ami_service_t *self);

/*  Wait until SIGINT/SIGTERM or until the actor ends on its own (it sends
    anything on its pipe, or the pipe closes). Returns the process exit
    code: 0 after a signal, 1 if the actor ended by itself. Logs why. The
    caller then destroys the actor ($TERM). */
int
    ami_service_run (ami_service_t *self, zactor_t *actor);

/*  Start an actor that follows the convention above. Returns the actor
    once it has called ami_actor_ready, or NULL (the actor is destroyed)
    if it called ami_actor_failed. args must stay valid until this returns
    (actors copy what they keep). */
zactor_t *
    ami_actor_new (zactor_fn *actor, void *args);

/*  Actor side: report that start-up succeeded. */
void
    ami_actor_ready (zsock_t *pipe);

/*  Actor side: report that start-up failed (already logged), then wait for
    "$TERM" so zactor_destroy never hangs. The actor returns after this. */
void
    ami_actor_failed (zsock_t *pipe);

/*  Load a peer's public certificate named by config key `key` (e.g.
    "mdms/broker-cert") and copy its Z85 public key into out. Returns
    AMI_OK or AMI_E_CONFIG / AMI_E_KEY (logged, naming key and file). */
int
    ami_service_peer_key (ami_service_t *self, const char *key,
                          char out [AMI_CERT_KEY_TXT_LEN + 1]);

#ifdef __cplusplus
}
#endif

#endif
