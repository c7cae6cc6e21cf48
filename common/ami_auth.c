/*  ami_auth.c - the ZAP handler (zauth) and the CURVE socket helpers.

    zauth does the authentication; this class makes it hard to use wrongly:
    it vets the allow-list directory before zauth reads it (CZMQ 4.2.1
    aborts on duplicate keys and overflows a buffer on large metadata),
    keeps the one-per-process rule, and lets ami_auth_server refuse to set
    up a server socket that no ZAP handler would protect.

    Global state: s_running records whether an ami_auth exists. It is forced
    by CZMQ/libzmq: the ZAP endpoint is one per context and CZMQ has one
    global context, so "is a ZAP handler running" is a process-wide fact.

    Live-session check (ami_auth_peer_allowed): zauth only judges
    handshakes, so we keep our own view of the same directory, a hash of
    allowed Z85 key -> expiry, guarded by s_lock (service actors call it
    from their threads). The caller that finds the view older than
    AMI_AUTH_REFRESH_MS re-scans the directory with zdir (the same walk
    zcertstore and ami_auth_check_dir do, so the three agree on which files
    count) and rebuilds the hash only if the directory's signature (name,
    inode, size, nanosecond mtime of every file) changed. s_current points
    at the one ami_auth so actors can pass NULL; s_lock also covers it, so
    ami_auth_destroy cannot free the view under a caller.
*/
#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct ami_auth_t {
    zactor_t *actor;            //  the zauth actor
    char *allow_dir;            //  absolute path of the allow-list
    size_t count;               //  certificates found by the last check
    bool verbose;               //  zauth verbose logging is on
    //  Our view of the directory (guarded by s_lock)
    zhashx_t *allowed;          //  Z85 key -> int64_t * expiry (0 = none)
    uint64_t signature;         //  of the directory the view was built from
    int64_t checked_ms;         //  zclock_mono of the last scan
};

static atomic_bool s_running = false;

//  Guards s_current and every ami_auth_t's view; see the design comment.
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static ami_auth_t *s_current = NULL;

//  Frames refused by ami_auth_peer_allowed, and the warning rate limit
static atomic_uint_fast64_t s_refused = 0;
static int64_t s_warn_second = 0;       //  guarded by s_lock
static int s_warn_count = 0;
static uint64_t s_warn_suppressed = 0;
//  At most this many refusal warnings a second (the project's rule for
//  anything a peer can trigger at will); the rest are counted.
#define S_WARN_PER_SECOND   20

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
s_check_file (const char *filename, zhashx_t *seen, zhashx_t *ids, size_t *count)
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
    const char *expires = ami_cert_meta (cert, AMI_AUTH_META_EXPIRES);
    int64_t when = 0;
    if (expires && !ami_auth_parse_expires (expires, &when)) {
        ami_log_error ("allow-list: %s: metadata expires = \"%s\" is not Unix "
                       "seconds (decimal digits)", filename, expires);
        ami_cert_destroy (&cert);
        return AMI_E_CONFIG;
    }
    const char *other = (const char *) zhashx_lookup (seen, key);
    //  One identity, one key (SEC-AUTH-2): two listed keys for one node or
    //  operator id would let either holder act as the other in the logs
    //  and the audit trail. Only a rotation window's old key (it carries
    //  "expires") may share its id with the current one.
    char id_key [128];              //  "role/node-id": both are short ids
    const char *role = ami_cert_meta (cert, "role"), *node_id = ami_cert_node_id (cert);
    snprintf (id_key, sizeof id_key, "%s/%s", role ? role : "", node_id ? node_id : "");
    const char *twin = expires ? NULL : (const char *) zhashx_lookup (ids, id_key);
    if (other) {
        ami_log_error ("allow-list: %s and %s hold the same public key: "
                       "keep one (zauth would abort the process)", other, filename);
        rc = AMI_E_CONFIG;
    }
    else
    if (twin) {
        ami_log_error ("allow-list: %s and %s are two keys for %s %s: one identity "
                       "has one current key (an old key in a rotation window carries "
                       "expires); remove one", twin, filename, role ? role : "node",
                       node_id ? node_id : "?");
        rc = AMI_E_CONFIG;
    }
    else
    if (!expires && zhashx_insert (ids, id_key, (void *) filename) != 0)
        rc = AMI_E_NOMEM;
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
    zhashx_t *seen = zhashx_new (), *ids = zhashx_new ();
    int rc = (files && seen && ids) ? AMI_OK : AMI_E_NOMEM;
    size_t found = 0;
    for (size_t i = 0; rc == AMI_OK && files [i]; i++)
        if (zfile_is_regular (files [i]))
            rc = s_check_file (zfile_filename (files [i], NULL), seen, ids, &found);
    zhashx_destroy (&seen);
    zhashx_destroy (&ids);
    if (files)
        zdir_flatten_free (&files);
    zdir_destroy (&dir);
    if (rc == AMI_OK && count)
        *count = found;
    return rc;
}



//  --------------------------------------------------------------------------
//  Our view of the allow-list (for ami_auth_peer_allowed)

bool
ami_auth_parse_expires (const char *text, int64_t *expires)
{
    //  18 digits always fit in int64_t; Unix seconds need 10 until 2286
    size_t len = text ? strlen (text) : 0;
    if (len < 1 || len > 18)
        return false;
    int64_t value = 0;
    for (size_t i = 0; i < len; i++) {
        if (text [i] < '0' || text [i] > '9')
            return false;
        value = value * 10 + (text [i] - '0');
    }
    if (expires)
        *expires = value;
    return true;
}

//  FNV-1a, 64 bits: a change detector, not a MAC (whoever can write the
//  directory can change it anyway).
static uint64_t
s_fnv (uint64_t hash, const void *data, size_t size)
{
    const uint8_t *bytes = (const uint8_t *) data;
    for (size_t i = 0; i < size; i++) {
        hash ^= bytes [i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

//  The files zauth reads (regular, not "_secret"; zdir already skips
//  hidden names), NULL-terminated, and the directory's signature. Returns
//  NULL when the directory cannot be read (*signature then 0).
static zfile_t **
s_scan (const char *allow_dir, zdir_t **dir_p, uint64_t *signature)
{
    *signature = 0;
    *dir_p = zdir_new (allow_dir, NULL);
    if (!*dir_p)
        return NULL;
    zfile_t **files = zdir_flatten (*dir_p);
    if (!files) {
        zdir_destroy (dir_p);
        return NULL;
    }
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t i = 0; files [i]; i++) {
        const char *name = zfile_filename (files [i], NULL);
        struct stat st;
        if (!zfile_is_regular (files [i]) || s_ends_with (name, "_secret")
        ||  lstat (name, &st) != 0)
            continue;
        hash = s_fnv (hash, name, strlen (name) + 1);
        uint64_t fields [5] = {
            (uint64_t) st.st_ino, (uint64_t) st.st_size, (uint64_t) st.st_mode,
            (uint64_t) st.st_mtim.tv_sec, (uint64_t) st.st_mtim.tv_nsec
        };
        hash = s_fnv (hash, fields, sizeof fields);
    }
    *signature = hash;
    return files;
}

static void
s_expiry_free (void **item)
{
    free (*item);
    *item = NULL;
}

//  Build a key -> expiry hash from the scanned files. An invalid file is
//  skipped (logged): the view then refuses its key, which is the safe
//  side; ami_auth_check_dir refuses such a directory outright at start.
static zhashx_t *
s_build_view (zfile_t **files, size_t *with_expiry)
{
    zhashx_t *view = zhashx_new ();
    if (!view)
        return NULL;
    zhashx_set_destructor (view, s_expiry_free);
    *with_expiry = 0;
    for (size_t i = 0; files [i]; i++) {
        const char *name = zfile_filename (files [i], NULL);
        if (!zfile_is_regular (files [i]) || s_ends_with (name, "_secret"))
            continue;
        int rc = AMI_OK;
        ami_cert_t *cert = ami_cert_load_public (name, &rc);
        if (!cert) {
            ami_log_warn ("auth: %s is not a valid public certificate: its key "
                          "is not allowed", name);
            continue;
        }
        const char *text = ami_cert_meta (cert, AMI_AUTH_META_EXPIRES);
        int64_t expires = 0;
        if (text && (!ami_auth_parse_expires (text, &expires) || expires == 0)) {
            ami_log_warn ("auth: %s: expires = \"%s\" is not Unix seconds: its key "
                          "is not allowed", name, text);
            expires = 1;        //  long past: refused, fail closed
        }
        if (text)
            (*with_expiry)++;
        const char *key = ami_cert_public_txt (cert);
        int64_t *old = (int64_t *) zhashx_lookup (view, key);
        if (old) {
            //  The same key twice (zauth would abort; check_dir refuses it):
            //  the more permissive of the two is what zauth would apply
            if (*old != 0 && (expires == 0 || expires > *old))
                *old = expires;
        }
        else {
            int64_t *item = (int64_t *) malloc (sizeof (int64_t));
            if (!item || zhashx_insert (view, key, item) != 0) {
                free (item);
                ami_cert_destroy (&cert);
                zhashx_destroy (&view);
                return NULL;
            }
            *item = expires;
        }
        ami_cert_destroy (&cert);
    }
    return view;
}

//  On a miss, the view is re-scanned if it is older than this: fresh enough
//  that a peer flooding frames from a refused key costs at most 100 scans a
//  second, short enough that a just-added key is never refused for long.
#define S_MISS_RESCAN_MS 10

//  Re-scan if the view is older than AMI_AUTH_REFRESH_MS (or force), and
//  rebuild it if the directory changed. Caller holds s_lock.
static void
s_refresh_locked (ami_auth_t *self, bool force)
{
    int64_t now = zclock_mono ();
    if (!force && self->allowed && now - self->checked_ms < AMI_AUTH_REFRESH_MS)
        return;
    self->checked_ms = now;
    zdir_t *dir = NULL;
    uint64_t signature = 0;
    zfile_t **files = s_scan (self->allow_dir, &dir, &signature);
    if (!files) {
        //  Gone or unreadable: refuse everyone rather than trust a stale view
        if (self->allowed && zhashx_size (self->allowed) > 0)
            ami_log_error ("auth: allow-list %s cannot be read: refusing every "
                           "client's frames until it can", self->allow_dir);
        if (self->allowed)
            zhashx_purge (self->allowed);
        else
            self->allowed = zhashx_new ();
        self->signature = 0;
        return;
    }
    if (force || !self->allowed || signature != self->signature) {
        size_t with_expiry = 0;
        zhashx_t *view = s_build_view (files, &with_expiry);
        if (view) {
            zhashx_destroy (&self->allowed);
            self->allowed = view;
            self->signature = signature;
            ami_log_info ("auth: allow-list %s: %zu key(s) allowed, %zu with an expiry",
                          self->allow_dir, zhashx_size (view), with_expiry);
        }
        else
            ami_log_error ("auth: out of memory re-reading %s: keeping the previous view",
                           self->allow_dir);
    }
    zdir_flatten_free (&files);
    zdir_destroy (&dir);
}

//  Caller holds s_lock.
static bool
s_key_allowed_locked (ami_auth_t *self, const char *key)
{
    if (!self)
        self = s_current;
    if (!self || !key || strlen (key) != AMI_CERT_KEY_TXT_LEN)
        return false;
    s_refresh_locked (self, false);
    const int64_t *expires = self->allowed
                           ? (const int64_t *) zhashx_lookup (self->allowed, key) : NULL;
    if (!expires && zclock_mono () - self->checked_ms >= S_MISS_RESCAN_MS) {
        //  A key zauth just admitted but our view lacks: the directory
        //  changed inside the refresh interval (a key added or rotated).
        //  Look again now rather than drop the new peer's first frames.
        self->checked_ms = 0;
        s_refresh_locked (self, false);
        expires = self->allowed ? (const int64_t *) zhashx_lookup (self->allowed, key) : NULL;
    }
    return expires && (*expires == 0 || (int64_t) time (NULL) < *expires);
}

bool
ami_auth_key_allowed (ami_auth_t *self, const char *key_txt)
{
    pthread_mutex_lock (&s_lock);
    bool allowed = s_key_allowed_locked (self, key_txt);
    pthread_mutex_unlock (&s_lock);
    return allowed;
}

bool
ami_auth_peer_allowed (ami_auth_t *self, zframe_t *frame)
{
    assert (frame);
    const char *key = ami_auth_peer_key (frame);
    pthread_mutex_lock (&s_lock);
    bool allowed = s_key_allowed_locked (self, key);
    if (!allowed) {
        atomic_fetch_add (&s_refused, 1);
        int64_t second = (int64_t) time (NULL);
        if (second != s_warn_second) {
            if (s_warn_suppressed)
                ami_log_warn ("auth: %" PRIu64 " more frame(s) from keys no longer "
                              "allowed were dropped without a log line", s_warn_suppressed);
            s_warn_second = second;
            s_warn_count = 0;
            s_warn_suppressed = 0;
        }
        if (s_warn_count < S_WARN_PER_SECOND) {
            s_warn_count++;
            const char *who = ami_auth_peer_meta (frame, AMI_CERT_META_NODE_ID);
            ami_log_warn ("auth: dropped a frame from %s (key %.40s): key revoked, "
                          "expired or never listed", who ? who : "?", key ? key : "none");
        }
        else
            s_warn_suppressed++;
    }
    pthread_mutex_unlock (&s_lock);
    return allowed;
}

uint64_t
ami_auth_refused_count (void)
{
    return (uint64_t) atomic_load (&s_refused);
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
    pthread_mutex_lock (&s_lock);
    s_refresh_locked (self, true);
    bool ok = self->allowed != NULL;
    if (ok)
        s_current = self;
    pthread_mutex_unlock (&s_lock);
    if (!ok) {
        ami_auth_destroy (&self);
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
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
        pthread_mutex_lock (&s_lock);
        if (s_current == self)
            s_current = NULL;
        zhashx_destroy (&self->allowed);
        pthread_mutex_unlock (&s_lock);
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
    pthread_mutex_lock (&s_lock);
    s_refresh_locked (self, true);
    pthread_mutex_unlock (&s_lock);
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
