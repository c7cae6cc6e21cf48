/*  ami_auth.c - the ZAP handler (zauth) and the CURVE socket helpers.

    zauth does the authentication; this class makes it hard to use wrongly:
    it vets the allow-list directory before zauth reads it (CZMQ 4.2.1
    aborts on duplicate keys and overflows a buffer on large metadata),
    keeps the one-per-process rule, and lets ami_auth_server refuse to set
    up a server socket that no ZAP handler would protect.

    Global state: s_running records whether an ami_auth exists. It is forced
    by CZMQ/libzmq: the ZAP endpoint is one per context and CZMQ has one
    global context, so "is a ZAP handler running" is a process-wide fact.
*/
#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct ami_auth_t {
    zactor_t *actor;            //  the zauth actor
    char *allow_dir;            //  absolute path of the allow-list
    size_t count;               //  certificates found by the last check
    bool verbose;               //  zauth verbose logging is on
};

static atomic_bool s_running = false;

static void
s_set_err (int *err, int code)
{
    if (err)
        *err = code;
}

static bool
s_ends_with (const char *text, const char *suffix)
{
    size_t tlen = strlen (text);
    size_t slen = strlen (suffix);
    return tlen >= slen && streq (text + tlen - slen, suffix);
}


//  --------------------------------------------------------------------------
//  Allow-list directory check

//  Vet one file zcertstore would load. It must be a valid ami-bus public
//  certificate: we parse it with ami_cert_load_public rather than
//  zcert_load, which (through zconfig_load) leaks memory on a file that is
//  not ZPL. seen maps public key -> file name, to find duplicates.
static int
s_check_file (const char *filename, zhashx_t *seen, size_t *count)
{
    //  zcertstore skips these; a secret has no business here at all
    if (s_ends_with (filename, "_secret")) {
        ami_log_warn ("allow-list: %s is a SECRET key file: remove it "
                      "(allow-lists hold public certificates only)", filename);
        return AMI_OK;
    }
    struct stat st;
    if (stat (filename, &st) == 0 && (st.st_mode & S_IWOTH)) {
        ami_log_error ("allow-list: %s is writable by others: anyone could "
                       "swap in their key (chmod o-w)", filename);
        return AMI_E_KEY_PERMS;
    }
    int rc = AMI_OK;
    ami_cert_t *cert = ami_cert_load_public (filename, &rc);
    if (!cert) {
        if (rc == AMI_E_NOMEM)
            return rc;
        ami_log_error ("allow-list: %s is not a valid ami-bus public certificate "
                       "(nothing else belongs in an allow-list)", filename);
        return AMI_E_CONFIG;
    }
    const char *key = ami_cert_public_txt (cert);
    const char *other = (const char *) zhashx_lookup (seen, key);
    if (other) {
        ami_log_error ("allow-list: %s and %s hold the same public key: "
                       "keep one (zauth would abort the process)", other, filename);
        rc = AMI_E_CONFIG;
    }
    else
    if (zhashx_insert (seen, key, (void *) filename) != 0)
        rc = AMI_E_NOMEM;
    else
        (*count)++;
    ami_cert_destroy (&cert);
    return rc;
}

int
ami_auth_check_dir (const char *allow_dir, size_t *count)
{
    assert (allow_dir);
    struct stat st;
    if (stat (allow_dir, &st) != 0) {
        ami_log_error ("allow-list directory %s: %s", allow_dir, strerror (errno));
        return AMI_E_CONFIG;
    }
    if (!S_ISDIR (st.st_mode)) {
        ami_log_error ("allow-list directory %s: not a directory", allow_dir);
        return AMI_E_CONFIG;
    }
    if (st.st_mode & S_IWOTH) {
        ami_log_error ("allow-list directory %s is writable by others: anyone "
                       "could add a key (chmod o-w)", allow_dir);
        return AMI_E_KEY_PERMS;
    }
    zdir_t *dir = zdir_new (allow_dir, NULL);
    if (!dir) {
        ami_log_error ("allow-list directory %s: cannot read it", allow_dir);
        return AMI_E_CONFIG;
    }
    zfile_t **files = zdir_flatten (dir);
    zhashx_t *seen = zhashx_new ();
    int rc = (files && seen) ? AMI_OK : AMI_E_NOMEM;
    size_t found = 0;
    for (size_t i = 0; rc == AMI_OK && files [i]; i++)
        if (zfile_is_regular (files [i]))
            rc = s_check_file (zfile_filename (files [i], NULL), seen, &found);
    zhashx_destroy (&seen);
    if (files)
        zdir_flatten_free (&files);
    zdir_destroy (&dir);
    if (rc == AMI_OK && count)
        *count = found;
    return rc;
}


//  --------------------------------------------------------------------------
//  The handler

ami_auth_t *
ami_auth_new (const char *allow_dir, int *err)
{
    assert (allow_dir);
    char *absolute = realpath (allow_dir, NULL);
    if (!absolute) {
        int e = errno;
        ami_log_error ("allow-list directory %s: %s", allow_dir, strerror (e));
        s_set_err (err, e == ENOMEM ? AMI_E_NOMEM : AMI_E_CONFIG);
        return NULL;
    }
    size_t count = 0;
    int rc = ami_auth_check_dir (absolute, &count);
    if (rc == AMI_OK && count == 0) {
        ami_log_error ("allow-list directory %s holds no public certificate: "
                       "no client could ever connect", absolute);
        rc = AMI_E_CONFIG;
    }
    if (rc) {
        free (absolute);
        s_set_err (err, rc);
        return NULL;
    }
    bool expected = false;
    if (!atomic_compare_exchange_strong (&s_running, &expected, true)) {
        ami_log_error ("ami_auth_new: a ZAP handler already runs in this process "
                       "(zauth is process-wide: use one allow-list)");
        free (absolute);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    ami_auth_t *self = (ami_auth_t *) calloc (1, sizeof (ami_auth_t));
    if (!self) {
        atomic_store (&s_running, false);
        free (absolute);
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    self->allow_dir = absolute;
    self->count = count;
    //  zactor_new returns once zauth has bound the ZAP endpoint, and every
    //  zauth command is acknowledged (zsock_wait): when we return, sockets
    //  bound afterwards are checked against this directory.
    self->actor = zactor_new (zauth, NULL);
    if (!self->actor) {
        ami_log_error ("ami_auth_new: cannot start the zauth actor");
        ami_auth_destroy (&self);
        s_set_err (err, AMI_E_INTERNAL);
        return NULL;
    }
    zstr_sendx (self->actor, "CURVE", self->allow_dir, NULL);
    zsock_wait (self->actor);
    ami_log_info ("auth: CURVE allow-list %s (%zu certificates)", self->allow_dir, count);
    s_set_err (err, AMI_OK);
    return self;
}

void
ami_auth_destroy (ami_auth_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        ami_auth_t *self = *self_p;
        //  Sends $TERM and joins the actor: the ZAP endpoint is unbound
        //  (zauth unbinds it explicitly) before this returns.
        zactor_destroy (&self->actor);
        free (self->allow_dir);
        free (self);
        atomic_store (&s_running, false);
        *self_p = NULL;
    }
}

int
ami_auth_reload (ami_auth_t *self)
{
    assert (self);
    size_t count = 0;
    int rc = ami_auth_check_dir (self->allow_dir, &count);
    if (rc) {
        ami_log_error ("auth: allow-list %s NOT reloaded: fix it now (zauth may "
                       "re-read it on its own at the next handshake)", self->allow_dir);
        return rc;
    }
    if (count == 0)
        ami_log_warn ("auth: allow-list %s is empty: every client will be refused",
                      self->allow_dir);
    zstr_sendx (self->actor, "CURVE", self->allow_dir, NULL);
    zsock_wait (self->actor);
    self->count = count;
    ami_log_info ("auth: reloaded allow-list %s (%zu certificates)", self->allow_dir, count);
    return AMI_OK;
}

void
ami_auth_set_verbose (ami_auth_t *self, bool verbose)
{
    assert (self);
    if (verbose && !self->verbose) {
        zstr_sendx (self->actor, "VERBOSE", NULL);
        zsock_wait (self->actor);
        self->verbose = true;
    }
    else
    if (!verbose && self->verbose)
        ami_log_warn ("auth: zauth cannot turn verbose logging off");
}

const char *
ami_auth_allow_dir (ami_auth_t *self)
{
    assert (self);
    return self->allow_dir;
}

size_t
ami_auth_count (ami_auth_t *self)
{
    assert (self);
    return self->count;
}

bool
ami_auth_running (void)
{
    return atomic_load (&s_running);
}


//  --------------------------------------------------------------------------
//  Socket helpers

int
ami_auth_server (zsock_t *sock, ami_cert_t *cert)
{
    assert (sock);
    assert (cert);
    if (!ami_auth_running ()) {
        ami_log_error ("ami_auth_server: no ZAP handler runs: create ami_auth "
                       "before any server socket (libzmq would accept every client)");
        return AMI_E_CONFIG;
    }
    char *endpoint = zsock_last_endpoint (sock);
    bool bound = endpoint && *endpoint;
    zstr_free (&endpoint);
    if (bound) {
        ami_log_error ("ami_auth_server: socket already has an endpoint (%s): "
                       "security options set afterwards do not apply to it",
                       "bound or connected");
        return AMI_E_CONFIG;
    }
    if (!ami_cert_has_secret (cert)) {
        ami_log_error ("ami_auth_server: certificate of %s has no secret key",
                       ami_cert_node_id (cert));
        return AMI_E_KEY;
    }
    zcert_apply (ami_cert_zcert (cert), sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, AMI_AUTH_ZAP_DOMAIN);
    //  zcert_apply silently does nothing when CURVE is unavailable: check
    if (zsock_mechanism (sock) != ZMQ_CURVE) {
        ami_log_error ("ami_auth_server: CURVE could not be enabled");
        return AMI_E_KEY;
    }
    return AMI_OK;
}

int
ami_auth_client (zsock_t *sock, ami_cert_t *cert, const char *server_public_txt)
{
    assert (sock);
    assert (cert);
    assert (server_public_txt);
    if (!ami_cert_has_secret (cert)) {
        ami_log_error ("ami_auth_client: certificate of %s has no secret key",
                       ami_cert_node_id (cert));
        return AMI_E_KEY;
    }
    uint8_t key [32];
    if (strlen (server_public_txt) != AMI_CERT_KEY_TXT_LEN
    ||  !zmq_z85_decode (key, server_public_txt)) {
        ami_log_error ("ami_auth_client: server key '%.48s' is not a Z85 public key",
                       server_public_txt);
        return AMI_E_KEY;
    }
    zcert_apply (ami_cert_zcert (cert), sock);
    zsock_set_curve_serverkey (sock, server_public_txt);
    if (zsock_mechanism (sock) != ZMQ_CURVE) {
        ami_log_error ("ami_auth_client: CURVE could not be enabled");
        return AMI_E_KEY;
    }
    return AMI_OK;
}

int
ami_auth_server_key_from_file (const char *public_cert_path,
                               char out [AMI_CERT_KEY_TXT_LEN + 1])
{
    assert (public_cert_path);
    assert (out);
    int rc = AMI_OK;
    ami_cert_t *cert = ami_cert_load_public (public_cert_path, &rc);
    if (!cert)
        return rc;
    memcpy (out, ami_cert_public_txt (cert), AMI_CERT_KEY_TXT_LEN + 1);
    ami_cert_destroy (&cert);
    return AMI_OK;
}

const char *
ami_auth_peer_key (zframe_t *frame)
{
    assert (frame);
    const char *key = zframe_meta (frame, "User-Id");
    return (key && strlen (key) == AMI_CERT_KEY_TXT_LEN) ? key : NULL;
}

const char *
ami_auth_peer_meta (zframe_t *frame, const char *name)
{
    assert (frame);
    assert (name);
    return zframe_meta (frame, name);
}
