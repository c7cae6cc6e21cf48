/*  ami_service.c - common start-up for every ami-bus service main.

    The order matters for security: keys are loaded and the ZAP handler is
    running before the caller starts the actor that binds (DESIGN.md §5), so
    there is no instant at which a server socket accepts unauthenticated
    peers.
*/
#include "ami_service.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ami_err.h"
#include "ami_log.h"

/* Most -o overrides anyone types on a command line; more is a usage error. */
#define MAX_OVERRIDES 32
/* Heartbeat bounds: under 10 ms is a busy loop, over 60 s makes failover
   (3 missed heartbeats) slower than any operator would accept. */
#define HEARTBEAT_MIN_MS 10
#define HEARTBEAT_MAX_MS 60000

struct ami_service_t {
    const ami_service_info_t *info;
    ami_config_t *config;
    ami_cert_t *cert;
    ami_auth_t *auth;
    const char *node_id;
    int64_t heartbeat_ms;
    bool verbose;
};

static const char *const s_common_keys [] = {
    "node/id", "node/cert", "node/allow", "log/level", "heartbeat", NULL
};

static void
s_usage (const ami_service_info_t *info, FILE *out)
{
    fprintf (out,
        "Usage: %s -c CONFIG [-o key=value]... [-v]\n"
        "%s\n\n"
        "Options:\n"
        "  -c, --config FILE     configuration file (ZPL, see docs/SERVICES.md)\n"
        "  -o, --set KEY=VALUE   override a configuration key, e.g. -o log/level=debug\n"
        "  -v, --verbose         debug logging (same as -o log/level=debug)\n"
        "  -h, --help            this help\n\n"
        "Configuration keys common to every service:\n"
        "  node/id               this node's id (must match its certificate)\n"
        "  node/cert             this node's certificate; the secret is PATH_secret (mode 0600)\n"
        "%s"
        "  log/level             error | warn | info | debug [info]\n"
        "  heartbeat             HEALTH interval [1s]; peers expire after 3 missed\n"
        "%s%s\n"
        "Exit status: 0 stopped by SIGINT/SIGTERM, 1 start-up or runtime failure, 2 usage.\n",
        info->program, info->summary,
        info->server ? "  node/allow            allow-list directory of peer public certificates\n" : "",
        info->config_help ? "\nKeys for this service:\n" : "",
        info->config_help ? info->config_help : "");
}

static int
s_check_known (ami_service_t *self)
{
    /* merge the common and the role's key lists into one NULL-terminated list */
    const char *keys [256];
    size_t n = 0;
    for (size_t i = 0; s_common_keys [i]; i++)
        keys [n++] = s_common_keys [i];
    for (size_t i = 0; self->info->known && self->info->known [i]; i++) {
        assert (n < sizeof keys / sizeof keys [0] - 1);
        keys [n++] = self->info->known [i];
    }
    keys [n] = NULL;
    return ami_config_check_known (self->config, keys);
}

static int
s_load_identity (ami_service_t *self)
{
    int rc = ami_config_str (self->config, "node/id", NULL, &self->node_id);
    if (rc)
        return rc;
    if (!self->node_id || !*self->node_id) {
        ami_log_error ("%s: node/id is required", ami_config_origin (self->config));
        return AMI_E_CONFIG;
    }
    const char *cert_path = NULL;
    rc = ami_config_str (self->config, "node/cert", NULL, &cert_path);
    if (rc)
        return rc;
    if (!cert_path || !*cert_path) {
        ami_log_error ("%s: node/cert is required (this node's certificate, made by ami-keygen)",
                       ami_config_origin (self->config));
        return AMI_E_CONFIG;
    }
    int err = 0;
    self->cert = ami_cert_load (cert_path, &err);
    if (!self->cert)
        return err;         /* ami_cert_load logged the file and why */
    if (strcmp (ami_cert_role (self->cert), self->info->role) != 0) {
        ami_log_error ("%s: certificate role is '%s', %s needs a '%s' certificate",
                       cert_path, ami_cert_role (self->cert), self->info->program, self->info->role);
        return AMI_E_KEY;
    }
    if (strcmp (ami_cert_node_id (self->cert), self->node_id) != 0) {
        ami_log_error ("%s: certificate is for node '%s' but node/id is '%s'",
                       cert_path, ami_cert_node_id (self->cert), self->node_id);
        return AMI_E_KEY;
    }
    return AMI_OK;
}

static int
s_start_auth (ami_service_t *self)
{
    const char *allow = NULL;
    int rc = ami_config_str (self->config, "node/allow", NULL, &allow);
    if (rc)
        return rc;
    if (!allow || !*allow) {
        ami_log_error ("%s: node/allow is required for %s (allow-list directory)",
                       ami_config_origin (self->config), self->info->program);
        return AMI_E_CONFIG;
    }
    int err = 0;
    self->auth = ami_auth_new (allow, &err);
    return self->auth ? AMI_OK : err;
}

ami_service_t *
ami_service_start (const ami_service_info_t *info, int argc, char **argv, int *exit_code)
{
    assert (info && exit_code);
    const char *config_path = NULL;
    const char *overrides [MAX_OVERRIDES];
    size_t override_count = 0;
    bool verbose = false;

    static const struct option options [] = {
        { "config",  required_argument, NULL, 'c' },
        { "set",     required_argument, NULL, 'o' },
        { "verbose", no_argument,       NULL, 'v' },
        { "help",    no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    int opt;
    while ((opt = getopt_long (argc, argv, "c:o:vh", options, NULL)) != -1) {
        switch (opt) {
            case 'c': config_path = optarg; break;
            case 'v': verbose = true; break;
            case 'h': s_usage (info, stdout); *exit_code = 0; return NULL;
            case 'o':
                if (override_count == MAX_OVERRIDES) {
                    fprintf (stderr, "%s: too many -o options (at most %d)\n", info->program, MAX_OVERRIDES);
                    *exit_code = 2;
                    return NULL;
                }
                overrides [override_count++] = optarg;
                break;
            default:
                s_usage (info, stderr);
                *exit_code = 2;
                return NULL;
        }
    }
    if (optind < argc || !config_path) {
        fprintf (stderr, "%s: %s\n\n", info->program,
                 optind < argc ? "unexpected argument" : "-c CONFIG is required");
        s_usage (info, stderr);
        *exit_code = 2;
        return NULL;
    }

    /* Log under the program name until we know the node id. */
    ami_log_init (info->program, NULL, verbose ? AMI_LOG_DEBUG : AMI_LOG_INFO);

    ami_service_t *self = (ami_service_t *) zmalloc (sizeof (ami_service_t));
    assert (self);
    self->info = info;
    self->verbose = verbose;
    *exit_code = 1;

    int err = 0;
    self->config = ami_config_load (config_path, &err);
    if (!self->config)
        goto failed;
    for (size_t i = 0; i < override_count; i++)
        if (ami_config_override (self->config, overrides [i])) {
            *exit_code = 2;
            goto failed;
        }
    if (s_check_known (self))
        goto failed;

    const char *node_id = NULL;
    int level = AMI_LOG_INFO;
    if (ami_config_str (self->config, "node/id", NULL, &node_id)
    ||  ami_log_level_from_config (self->config, verbose, &level))
        goto failed;
    ami_log_init (info->program, node_id, level);

    if (ami_config_duration_ms (self->config, "heartbeat", AMI_HEARTBEAT_MS, &self->heartbeat_ms))
        goto failed;
    if (self->heartbeat_ms < HEARTBEAT_MIN_MS || self->heartbeat_ms > HEARTBEAT_MAX_MS) {
        ami_log_error ("%s: heartbeat must be between %dms and %ds",
                       ami_config_origin (self->config), HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS / 1000);
        goto failed;
    }
    if (s_load_identity (self))
        goto failed;
    if (info->server && s_start_auth (self))
        goto failed;

    ami_log_info ("starting (config %s, key %s)", config_path, ami_cert_public_txt (self->cert));
    return self;

failed:
    ami_log_error ("%s not started", info->program);
    ami_service_destroy (&self);
    return NULL;
}

void
ami_service_destroy (ami_service_t **self_p)
{
    assert (self_p);
    ami_service_t *self = *self_p;
    if (!self)
        return;
    ami_auth_destroy (&self->auth);
    ami_cert_destroy (&self->cert);
    ami_config_destroy (&self->config);
    free (self);
    *self_p = NULL;
}

ami_config_t *
ami_service_config (ami_service_t *self) { assert (self); return self->config; }

ami_cert_t *
ami_service_cert (ami_service_t *self) { assert (self); return self->cert; }

ami_auth_t *
ami_service_auth (ami_service_t *self) { assert (self); return self->auth; }

const char *
ami_service_node_id (ami_service_t *self) { assert (self); return self->node_id; }

int64_t
ami_service_heartbeat_ms (ami_service_t *self) { assert (self); return self->heartbeat_ms; }

bool
ami_service_verbose (ami_service_t *self) { assert (self); return self->verbose; }

int
ami_service_run (ami_service_t *self, zactor_t *actor)
{
    assert (self && actor);
    ami_log_info ("ready");
    zpoller_t *poller = zpoller_new (actor, NULL);
    assert (poller);
    int rc = 0;
    while (true) {
        /* wake up once a second only to notice a signal that arrived
           between polls; CZMQ's handler sets zsys_interrupted */
        void *which = zpoller_wait (poller, 1000);
        if (which == actor) {
            ami_log_error ("actor stopped on its own; exiting");
            rc = 1;
            break;
        }
        if (zpoller_terminated (poller) || zsys_interrupted) {
            ami_log_info ("stopping on signal");
            break;
        }
    }
    zpoller_destroy (&poller);
    return rc;
}

int
ami_service_peer_key (ami_service_t *self, const char *key, char out [AMI_CERT_KEY_TXT_LEN + 1])
{
    assert (self && key && out);
    const char *path = NULL;
    int rc = ami_config_str (self->config, key, NULL, &path);
    if (rc)
        return rc;
    if (!path || !*path) {
        ami_log_error ("%s: %s is required (public certificate of the peer)",
                       ami_config_origin (self->config), key);
        return AMI_E_CONFIG;
    }
    return ami_auth_server_key_from_file (path, out);
}

/* The one message an actor sends after its handshake signal. */
#define ACTOR_READY  "READY"
#define ACTOR_FAILED "FAILED"

zactor_t *
ami_actor_new (zactor_fn *actor, void *args)
{
    assert (actor);
    zactor_t *self = zactor_new (actor, args);
    if (!self)
        return NULL;
    char *status = zstr_recv (self);
    bool ok = status && streq (status, ACTOR_READY);
    zstr_free (&status);
    if (!ok)
        zactor_destroy (&self);
    return self;
}

void
ami_actor_ready (zsock_t *pipe)
{
    zstr_send (pipe, ACTOR_READY);
}

void
ami_actor_failed (zsock_t *pipe)
{
    zstr_send (pipe, ACTOR_FAILED);
    while (true) {
        char *command = zstr_recv (pipe);
        bool term = !command || streq (command, "$TERM");
        zstr_free (&command);
        if (term)
            break;
    }
}
