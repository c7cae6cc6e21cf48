/*  ami_cert.c - CURVE certificates: generate, validate, save, load.

    The keypair and metadata live in a zcert, so zcert_apply and zauth work
    unchanged; everything around it is ours:

    -   Loading reads the file ourselves (open with O_NOFOLLOW for secrets,
        then fstat on the open descriptor: the mode we check is the mode of
        the file we read, with no window between check and use), parses it
        with ami_config (line-precise errors, bounded size) and validates
        every field, where zcert_load would silently fall back from the
        secret file to the public one, ignore a bad Z85 key and never check
        that the two keys belong together.
    -   Saving writes the ZPL text ourselves through a 0600 temporary file
        and rename (see ami_cert_save in the header for why not umask).
    -   zcert_set_meta does not replace an existing entry (CZMQ 4.2.1 keeps
        the old value silently), so replacing one rebuilds the zcert.

    Secret material (key text, file buffers) is wiped with explicit_bzero
    before it is freed, as far as we hold it; zcert and zconfig internals
    that CZMQ frees itself are wiped through their accessors first.
*/
#include "ami_cert.h"
#include "ami_config.h"
#include "ami_err.h"
#include "ami_log.h"

#include <errno.h>
#include <sodium.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

//  A certificate file is well under 1 KiB; anything over 64 KiB is not one
//  and is not worth reading into memory.
#define AMI_CERT_MAX_FILE       (64 * 1024)

//  Limits of the metadata grammar (see the header).
#define AMI_CERT_NAME_MAX       64
#define AMI_CERT_VALUE_MAX      255
#define AMI_CERT_ROLE_MAX       32
#define AMI_CERT_NODE_ID_MAX    64

struct ami_cert_t {
    zcert_t *zcert;             //  keys + metadata
    bool has_secret;            //  false when loaded from a public file
};

//  Connection properties libzmq attaches to messages (zmq_msg_gets); ZAP
//  metadata shares their namespace, compared case-insensitively.
static const char *s_reserved [] = {
    "User-Id", "Socket-Type", "Identity", "Routing-Id", "Peer-Address",
    "Resource", NULL
};


//  --------------------------------------------------------------------------
//  Metadata rules

static bool
s_is_alnum (int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool
s_name_valid (const char *name)
{
    size_t len = strlen (name);
    if (len == 0 || len > AMI_CERT_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!s_is_alnum ((unsigned char) *p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    for (const char **r = s_reserved; *r; r++)
        if (strcasecmp (name, *r) == 0)
            return false;
    return true;
}

static bool
s_value_valid (const char *value)
{
    if (strlen (value) > AMI_CERT_VALUE_MAX)
        return false;
    //  Printable ASCII; no '"' because values are saved inside "..."
    for (const unsigned char *p = (const unsigned char *) value; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"')
            return false;
    return true;
}

static bool
s_role_valid (const char *role)
{
    size_t len = strlen (role);
    if (len == 0 || len > AMI_CERT_ROLE_MAX || !(role [0] >= 'a' && role [0] <= 'z'))
        return false;
    for (const char *p = role; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

static bool
s_node_id_valid (const char *node_id)
{
    size_t len = strlen (node_id);
    if (len == 0 || len > AMI_CERT_NODE_ID_MAX || !s_is_alnum ((unsigned char) node_id [0]))
        return false;
    for (const char *p = node_id; *p; p++)
        if (!s_is_alnum ((unsigned char) *p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return true;
}

//  Bytes one entry takes in zauth's ZAP reply metadata buffer.
static size_t
s_wire_size (const char *name, const char *value)
{
    return 1 + strlen (name) + 4 + strlen (value);
}

//  Why name=value can't be an entry, or NULL if it can (size not counted).
static const char *
s_entry_problem (const char *name, const char *value)
{
    if (!s_name_valid (name))
        return "invalid or reserved metadata name";
    if (!s_value_valid (value))
        return "invalid metadata value (printable ASCII without '\"', at most 255 bytes)";
    if (streq (name, AMI_CERT_META_ROLE) && !s_role_valid (value))
        return "invalid role ([a-z][a-z0-9-]*, at most 32 characters)";
    if (streq (name, AMI_CERT_META_NODE_ID) && !s_node_id_valid (value))
        return "invalid node-id ([A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters)";
    return NULL;
}

//  Total wire size of a zcert's metadata, leaving out one name if given.
static size_t
s_meta_total (zcert_t *cert, const char *except)
{
    size_t total = 0;
    zlist_t *keys = zcert_meta_keys (cert);
    if (!keys)
        return SIZE_MAX;
    for (const char *name = (const char *) zlist_first (keys); name;
         name = (const char *) zlist_next (keys)) {
        if (except && streq (name, except))
            continue;
        const char *value = zcert_meta (cert, name);
        total += s_wire_size (name, value ? value : "");
    }
    zlist_destroy (&keys);
    return total;
}

//  Check a zcert's metadata against the rules (see the header): role and
//  node-id present and valid, names, values, reserved names, total size.
//  Returns AMI_OK or AMI_E_KEY (logged, naming origin).
static int
s_check_zcert (zcert_t *cert, const char *origin)
{
    assert (cert);
    assert (origin);
    zlist_t *keys = zcert_meta_keys (cert);
    if (!keys)
        return AMI_E_NOMEM;
    int rc = AMI_OK;
    for (const char *name = (const char *) zlist_first (keys); name;
         name = (const char *) zlist_next (keys)) {
        const char *value = zcert_meta (cert, name);
        const char *problem = s_entry_problem (name, value ? value : "");
        if (problem) {
            ami_log_error ("certificate %s: metadata '%.64s': %s", origin, name, problem);
            rc = AMI_E_KEY;
            break;
        }
    }
    zlist_destroy (&keys);
    if (rc)
        return rc;
    if (!zcert_meta (cert, AMI_CERT_META_ROLE) || !zcert_meta (cert, AMI_CERT_META_NODE_ID)) {
        ami_log_error ("certificate %s: no '%s' metadata: not an ami-bus certificate "
                       "(make one with ami-keygen)", origin,
                       zcert_meta (cert, AMI_CERT_META_ROLE) ? AMI_CERT_META_NODE_ID
                                                             : AMI_CERT_META_ROLE);
        return AMI_E_KEY;
    }
    if (s_meta_total (cert, NULL) > AMI_CERT_META_MAX) {
        ami_log_error ("certificate %s: metadata larger than %d bytes", origin,
                       AMI_CERT_META_MAX);
        return AMI_E_KEY;
    }
    return AMI_OK;
}


//  --------------------------------------------------------------------------
//  Construction and destruction

static void
s_set_err (int *err, int code)
{
    if (err)
        *err = code;
}

//  Wipe a zcert's secret key (binary and text) and destroy it. The
//  accessors return const pointers into the zcert's own heap memory,
//  which is writable: casting const away is how we reach it.
static void
s_zcert_wipe_destroy (zcert_t **cert_p)
{
    if (*cert_p) {
        explicit_bzero ((void *) zcert_secret_key (*cert_p), 32);
        char *secret_txt = (char *) zcert_secret_txt (*cert_p);
        explicit_bzero (secret_txt, strlen (secret_txt));
        zcert_destroy (cert_p);
    }
}

static ami_cert_t *
s_wrap (zcert_t *zcert, bool has_secret)
{
    ami_cert_t *self = (ami_cert_t *) calloc (1, sizeof (ami_cert_t));
    if (self) {
        self->zcert = zcert;
        self->has_secret = has_secret;
    }
    return self;
}

ami_cert_t *
ami_cert_new (const char *role, const char *node_id, int *err)
{
    assert (role);
    assert (node_id);
    const char *problem = s_entry_problem (AMI_CERT_META_ROLE, role);
    if (!problem)
        problem = s_entry_problem (AMI_CERT_META_NODE_ID, node_id);
    if (problem) {
        ami_log_error ("ami_cert_new: %s", problem);
        s_set_err (err, AMI_E_RANGE);
        return NULL;
    }
    //  Without CURVE, zcert_new would return an all-zero "keypair" that
    //  every node would share: refuse instead.
    if (!zmq_has ("curve")) {
        ami_log_error ("ami_cert_new: libzmq was built without CURVE support");
        s_set_err (err, AMI_E_KEY);
        return NULL;
    }
    zcert_t *zcert = zcert_new ();
    if (!zcert) {
        ami_log_error ("ami_cert_new: key generation failed");
        s_set_err (err, AMI_E_KEY);
        return NULL;
    }
    zcert_set_meta (zcert, AMI_CERT_META_ROLE, "%s", role);
    zcert_set_meta (zcert, AMI_CERT_META_NODE_ID, "%s", node_id);
    ami_cert_t *self = s_wrap (zcert, true);
    if (!self) {
        s_zcert_wipe_destroy (&zcert);
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    s_set_err (err, AMI_OK);
    return self;
}

static bool
    s_pair_ok (const char *key_type, const uint8_t public_key [32], const uint8_t secret_key [32],
               const char *secret_txt, char derived [AMI_CERT_KEY_TXT_LEN + 1]);
static bool
    s_all_zero (const uint8_t *bytes, size_t size);

ami_cert_t *
ami_cert_new_from_keys (const char *role, const char *node_id, const char *key_type,
                        const uint8_t public_key [32], const uint8_t secret_key [32], int *err)
{
    assert (role && node_id && key_type && public_key && secret_key);
    const char *problem = s_entry_problem (AMI_CERT_META_ROLE, role);
    if (!problem)
        problem = s_entry_problem (AMI_CERT_META_NODE_ID, node_id);
    char secret_txt [AMI_CERT_KEY_TXT_LEN + 1];
    char derived [AMI_CERT_KEY_TXT_LEN + 1];
    zmq_z85_encode (secret_txt, secret_key, 32);
    if (!problem && (s_all_zero (secret_key, 32)
                 ||  !s_pair_ok (key_type, public_key, secret_key, secret_txt, derived)))
        problem = "keys do not belong together, are all zero, or the key type is unknown";
    explicit_bzero (secret_txt, sizeof secret_txt);
    if (problem) {
        ami_log_error ("ami_cert_new_from_keys: %s", problem);
        s_set_err (err, AMI_E_RANGE);
        return NULL;
    }
    zcert_t *zcert = zcert_new_from (public_key, secret_key);
    if (!zcert) {
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    zcert_set_meta (zcert, AMI_CERT_META_ROLE, "%s", role);
    zcert_set_meta (zcert, AMI_CERT_META_NODE_ID, "%s", node_id);
    zcert_set_meta (zcert, AMI_CERT_META_KEY_TYPE, "%s", key_type);
    ami_cert_t *self = s_wrap (zcert, true);
    if (!self) {
        s_zcert_wipe_destroy (&zcert);
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    s_set_err (err, AMI_OK);
    return self;
}

const uint8_t *
ami_cert_secret_key (ami_cert_t *self)
{
    assert (self);
    return self->has_secret ? zcert_secret_key (self->zcert) : NULL;
}

const char *
ami_cert_key_type (ami_cert_t *self)
{
    assert (self);
    const char *type = zcert_meta (self->zcert, AMI_CERT_META_KEY_TYPE);
    return type ? type : AMI_CERT_KEY_CURVE;
}

void
ami_cert_destroy (ami_cert_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        ami_cert_t *self = *self_p;
        s_zcert_wipe_destroy (&self->zcert);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Loading

//  Read a certificate file into a NUL-terminated heap buffer. For a secret
//  file: no symlinks, regular file, mode & 077 == 0. Returns AMI_OK or an
//  error code (logged).
static int
s_read_file (const char *path, bool secret, char **text_out)
{
    //  O_NONBLOCK: opening a FIFO must not hang us; regular files ignore it
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (secret ? O_NOFOLLOW : 0);
    int fd = open (path, flags);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT && secret)
            ami_log_error ("no secret key at %s: run ami-keygen", path);
        else
        if (e == ENOENT)
            ami_log_error ("no certificate at %s", path);
        else
        if (e == ELOOP && secret) {
            ami_log_error ("secret key %s is a symbolic link: refused "
                           "(copy the key file into place)", path);
            return AMI_E_KEY_PERMS;
        }
        else
            ami_log_error ("cannot open %s: %s", path, strerror (e));
        return AMI_E_KEY;
    }
    struct stat st;
    if (fstat (fd, &st) != 0) {
        ami_log_error ("cannot stat %s: %s", path, strerror (errno));
        close (fd);
        return AMI_E_KEY;
    }
    if (!S_ISREG (st.st_mode)) {
        ami_log_error ("%s %s is not a regular file: refused",
                       secret ? "secret key" : "certificate", path);
        close (fd);
        return secret ? AMI_E_KEY_PERMS : AMI_E_KEY;
    }
    if (secret && (st.st_mode & 077)) {
        ami_log_error ("secret key %s has mode %04o: group and others must have "
                       "no access (chmod 600 %s)", path,
                       (unsigned) (st.st_mode & 07777), path);
        close (fd);
        return AMI_E_KEY_PERMS;
    }
    if (st.st_size > AMI_CERT_MAX_FILE) {
        ami_log_error ("%s is larger than %d bytes: not a certificate", path,
                       AMI_CERT_MAX_FILE);
        close (fd);
        return AMI_E_KEY;
    }
    char *text = (char *) malloc (AMI_CERT_MAX_FILE + 2);
    if (!text) {
        close (fd);
        return AMI_E_NOMEM;
    }
    size_t size = 0;
    int rc = AMI_OK;
    while (size <= AMI_CERT_MAX_FILE) {
        ssize_t n = read (fd, text + size, AMI_CERT_MAX_FILE + 1 - size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ami_log_error ("cannot read %s: %s", path, strerror (errno));
            rc = AMI_E_KEY;
            break;
        }
        if (n == 0)
            break;
        size += (size_t) n;
    }
    close (fd);
    if (rc == AMI_OK && size > AMI_CERT_MAX_FILE) {
        ami_log_error ("%s is larger than %d bytes: not a certificate", path,
                       AMI_CERT_MAX_FILE);
        rc = AMI_E_KEY;
    }
    if (rc == AMI_OK && memchr (text, 0, size)) {
        ami_log_error ("%s is not a text file: not a certificate", path);
        rc = AMI_E_KEY;
    }
    if (rc) {
        explicit_bzero (text, size);
        free (text);
        return rc;
    }
    text [size] = 0;
    *text_out = text;
    return AMI_OK;
}

//  Decode a Z85 key of exactly 40 characters into 32 bytes.
static bool
s_decode_key (const char *txt, uint8_t key [32])
{
    return txt && strlen (txt) == AMI_CERT_KEY_TXT_LEN && zmq_z85_decode (key, txt) != NULL;
}

static bool
s_all_zero (const uint8_t *bytes, size_t size)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < size; i++)
        acc |= bytes [i];
    return acc == 0;
}

//  Check that a secret key produces its public key, by key type: CURVE
//  (X25519 scalar mult, via libzmq), Ed25519 (the secret is the 32-byte
//  seed), or a KDF secret (the public field is its BLAKE2b-256 fingerprint).
//  An unknown key type never matches.
static bool
s_pair_ok (const char *key_type, const uint8_t public_key [32], const uint8_t secret_key [32],
           const char *secret_txt, char derived [AMI_CERT_KEY_TXT_LEN + 1])
{
    uint8_t expect [32];
    bool ok = false;
    if (streq (key_type, AMI_CERT_KEY_CURVE)) {
        char public_txt [AMI_CERT_KEY_TXT_LEN + 1];
        ok = zmq_curve_public (derived, secret_txt) == 0
          && zmq_z85_encode (public_txt, public_key, 32)
          && strcmp (derived, public_txt) == 0;
    }
    else
    if (streq (key_type, AMI_CERT_KEY_ED25519)) {
        uint8_t sk [crypto_sign_SECRETKEYBYTES];
        ok = crypto_sign_seed_keypair (expect, sk, secret_key) == 0
          && sodium_memcmp (expect, public_key, 32) == 0;
        sodium_memzero (sk, sizeof sk);
    }
    else
    if (streq (key_type, AMI_CERT_KEY_KDF))
        ok = crypto_generichash (expect, 32, secret_key, 32, NULL, 0) == 0
          && sodium_memcmp (expect, public_key, 32) == 0;
    return ok;
}

//  Parse a certificate's text and build the ami_cert. want_secret: this is
//  our own secret file (secret required and checked against the public).
static ami_cert_t *
s_parse (const char *text, const char *path, bool want_secret, int *err)
{
    int rc = AMI_OK;
    ami_config_t *config = ami_config_load_str (text, path, &rc);
    if (!config) {
        ami_log_error ("certificate %s: malformed (not ZPL)", path);
        s_set_err (err, rc == AMI_E_NOMEM ? AMI_E_NOMEM : AMI_E_KEY);
        return NULL;
    }
    zconfig_t *root = ami_config_zconfig (config);
    zconfig_t *secret_item = zconfig_locate (root, "curve/secret-key");
    const char *public_txt = zconfig_get (root, "curve/public-key", NULL);
    const char *secret_txt = secret_item ? zconfig_value (secret_item) : NULL;

    ami_cert_t *self = NULL;
    zcert_t *zcert = NULL;
    uint8_t public_key [32] = { 0 };
    uint8_t secret_key [32] = { 0 };
    char derived [AMI_CERT_KEY_TXT_LEN + 1] = "";
    rc = AMI_E_KEY;

    if (!s_decode_key (public_txt, public_key))
        ami_log_error ("certificate %s: no valid curve/public-key", path);
    else
    if (want_secret && !s_decode_key (secret_txt, secret_key))
        ami_log_error ("certificate %s: no valid curve/secret-key", path);
    else
    if (want_secret && s_all_zero (secret_key, sizeof secret_key))
        ami_log_error ("certificate %s: secret key is all zeros (made without CURVE?)", path);
    else
    if (want_secret && !s_pair_ok (zconfig_get (root, "metadata/" AMI_CERT_META_KEY_TYPE, AMI_CERT_KEY_CURVE),
                                   public_key, secret_key, secret_txt, derived))
        ami_log_error ("certificate %s: public and secret keys do not belong together", path);
    else {
        if (!want_secret && secret_txt && *secret_txt)
            ami_log_warn ("certificate %s holds a secret key: ignored; a public "
                          "certificate must not carry one (was the _secret file "
                          "copied instead?)", path);
        zcert = zcert_new_from (public_key, secret_key);
        rc = zcert ? AMI_OK : AMI_E_NOMEM;
    }
    if (rc == AMI_OK) {
        zconfig_t *section = zconfig_locate (root, "metadata");
        for (zconfig_t *item = section ? zconfig_child (section) : NULL; item;
             item = zconfig_next (item)) {
            const char *name = zconfig_name (item);
            const char *value = zconfig_value (item);
            if (zcert_meta (zcert, name)) {
                ami_log_error ("certificate %s: metadata '%.64s' appears twice", path, name);
                rc = AMI_E_KEY;
                break;
            }
            zcert_set_meta (zcert, name, "%s", value ? value : "");
        }
    }
    if (rc == AMI_OK)
        rc = s_check_zcert (zcert, path);
    if (rc == AMI_OK) {
        self = s_wrap (zcert, want_secret);
        if (self)
            zcert = NULL;
        else
            rc = AMI_E_NOMEM;
    }

    s_zcert_wipe_destroy (&zcert);
    explicit_bzero (secret_key, sizeof secret_key);
    if (secret_txt)
        explicit_bzero ((char *) secret_txt, strlen (secret_txt));
    ami_config_destroy (&config);
    s_set_err (err, rc);
    return self;
}

static ami_cert_t *
s_load (const char *path, bool secret, int *err)
{
    char *text = NULL;
    int rc = s_read_file (path, secret, &text);
    if (rc) {
        s_set_err (err, rc);
        return NULL;
    }
    ami_cert_t *self = s_parse (text, path, secret, err);
    explicit_bzero (text, strlen (text));
    free (text);
    return self;
}

ami_cert_t *
ami_cert_load (const char *path, int *err)
{
    assert (path);
    size_t len = strlen (path);
    static const char suffix [] = "_secret";
    size_t slen = sizeof suffix - 1;
    if (len >= slen && streq (path + len - slen, suffix))
        return s_load (path, true, err);

    char *secret_path = zsys_sprintf ("%s%s", path, suffix);
    if (!secret_path) {
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    ami_cert_t *self = s_load (secret_path, true, err);
    zstr_free (&secret_path);
    return self;
}

ami_cert_t *
ami_cert_load_public (const char *path, int *err)
{
    assert (path);
    return s_load (path, false, err);
}


//  --------------------------------------------------------------------------
//  Saving

static int
s_compare_str (void *a, void *b)
{
    return strcmp ((const char *) a, (const char *) b);
}

//  Render the certificate as zcert-format ZPL: metadata (role, node-id,
//  then the rest by name, so files are reproducible), then the keys.
//  Returns a heap string (wipe and free it) or NULL when out of memory.
static char *
s_render (ami_cert_t *self, bool secret)
{
    //  Metadata is capped at AMI_CERT_META_MAX wire bytes and keys are 40
    //  characters: 4 KiB holds any valid certificate with room to spare.
    size_t cap = 4096;
    char *out = (char *) malloc (cap);
    if (!out)
        return NULL;
    size_t len = 0;
    bool fits = true;
#define EMIT(...) do { \
        if (fits) { \
            int n_ = snprintf (out + len, cap - len, __VA_ARGS__); \
            if (n_ < 0 || (size_t) n_ >= cap - len) fits = false; \
            else len += (size_t) n_; \
        } \
    } while (0)

    EMIT ("#   ****  Generated by ami-bus (ami_cert)  ****\n");
    if (secret) {
        EMIT ("#   ZeroMQ CURVE **Secret** Certificate\n");
        EMIT ("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n");
    }
    else {
        EMIT ("#   ZeroMQ CURVE Public Certificate\n");
        EMIT ("#   Install it in the allow-list directory of each server this\n");
        EMIT ("#   node may talk to; verify its contents after exchange.\n");
    }
    EMIT ("\nmetadata\n");
    EMIT ("    %s = \"%s\"\n", AMI_CERT_META_ROLE, ami_cert_role (self));
    EMIT ("    %s = \"%s\"\n", AMI_CERT_META_NODE_ID, ami_cert_node_id (self));
    zlist_t *keys = zcert_meta_keys (self->zcert);
    if (!keys)
        fits = false;
    else {
        zlist_sort (keys, s_compare_str);
        for (const char *name = (const char *) zlist_first (keys); name;
             name = (const char *) zlist_next (keys))
            if (!streq (name, AMI_CERT_META_ROLE) && !streq (name, AMI_CERT_META_NODE_ID))
                EMIT ("    %s = \"%s\"\n", name, zcert_meta (self->zcert, name));
        zlist_destroy (&keys);
    }
    EMIT ("curve\n");
    EMIT ("    public-key = \"%s\"\n", zcert_public_txt (self->zcert));
    if (secret)
        EMIT ("    secret-key = \"%s\"\n", zcert_secret_txt (self->zcert));
#undef EMIT
    if (!fits) {
        explicit_bzero (out, cap);
        free (out);
        return NULL;
    }
    return out;
}

//  Write text to path atomically with exactly the given mode (see the
//  header of ami_cert_save for the reasoning).
static int
s_write_atomic (const char *path, const char *text, mode_t mode)
{
    //  ".NAME.tmp-XXXXXX" next to NAME: same file system, so rename is
    //  atomic; hidden, so zdir-based watchers (zcertstore) skip it.
    char *copy1 = strdup (path);
    char *copy2 = strdup (path);
    char *tmp = NULL;
    if (copy1 && copy2)
        tmp = zsys_sprintf ("%s/.%s.tmp-XXXXXX", dirname (copy1), basename (copy2));
    free (copy1);
    free (copy2);
    if (!tmp)
        return AMI_E_NOMEM;

    int fd = mkostemp (tmp, O_CLOEXEC);     //  O_EXCL, mode 0600
    if (fd < 0) {
        ami_log_error ("cannot create a file next to %s: %s", path, strerror (errno));
        zstr_free (&tmp);
        return AMI_E_IO;
    }
    int error = 0;                          //  errno of the first failure
    //  fchmod sets the exact mode whatever the umask; for 0600 it is a
    //  no-op, so a secret is never more open than 0600 at any moment.
    if (fchmod (fd, mode) != 0)
        error = errno;
    size_t len = strlen (text);
    size_t done = 0;
    while (!error && done < len) {
        ssize_t n = write (fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            error = n < 0 ? errno : EIO;
        else
            done += (size_t) n;
    }
    if (!error && fsync (fd) != 0)
        error = errno;
    if (close (fd) != 0 && !error)
        error = errno;
    if (!error && rename (tmp, path) != 0)
        error = errno;
    int rc = error ? AMI_E_IO : AMI_OK;
    if (rc) {
        ami_log_error ("cannot write %s: %s", path, strerror (error));
        unlink (tmp);
    }
    else {
        //  Make the rename itself durable; best effort (the key is
        //  complete either way).
        char *dir_copy = strdup (path);
        if (dir_copy) {
            int dfd = open (dirname (dir_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                if (fsync (dfd) != 0)
                    ami_log_debug ("fsync of the directory of %s failed", path);
                close (dfd);
            }
            free (dir_copy);
        }
    }
    zstr_free (&tmp);
    return rc;
}

static int
s_save_one (ami_cert_t *self, const char *path, bool secret)
{
    char *text = s_render (self, secret);
    if (!text)
        return AMI_E_NOMEM;
    int rc = s_write_atomic (path, text, secret ? 0600 : 0644);
    explicit_bzero (text, strlen (text));
    free (text);
    return rc;
}

int
ami_cert_save (ami_cert_t *self, const char *path)
{
    assert (self);
    assert (path);
    assert (self->has_secret);
    char *secret_path = zsys_sprintf ("%s_secret", path);
    if (!secret_path)
        return AMI_E_NOMEM;
    int rc = s_save_one (self, secret_path, true);
    zstr_free (&secret_path);
    if (rc == AMI_OK)
        rc = s_save_one (self, path, false);
    return rc;
}

int
ami_cert_save_public (ami_cert_t *self, const char *path)
{
    assert (self);
    assert (path);
    return s_save_one (self, path, false);
}


//  --------------------------------------------------------------------------
//  Accessors

const char *
ami_cert_role (ami_cert_t *self)
{
    assert (self);
    return zcert_meta (self->zcert, AMI_CERT_META_ROLE);
}

const char *
ami_cert_node_id (ami_cert_t *self)
{
    assert (self);
    return zcert_meta (self->zcert, AMI_CERT_META_NODE_ID);
}

const char *
ami_cert_public_txt (ami_cert_t *self)
{
    assert (self);
    return zcert_public_txt (self->zcert);
}

const uint8_t *
ami_cert_public_key (ami_cert_t *self)
{
    assert (self);
    return zcert_public_key (self->zcert);
}

bool
ami_cert_has_secret (ami_cert_t *self)
{
    assert (self);
    return self->has_secret;
}

const char *
ami_cert_meta (ami_cert_t *self, const char *name)
{
    assert (self);
    assert (name);
    return zcert_meta (self->zcert, name);
}

int
ami_cert_set_meta (ami_cert_t *self, const char *name, const char *value)
{
    assert (self);
    assert (name);
    assert (value);
    const char *problem = s_entry_problem (name, value);
    if (!problem) {
        size_t others = s_meta_total (self->zcert, name);
        if (others == SIZE_MAX)
            return AMI_E_NOMEM;
        if (others + s_wire_size (name, value) > AMI_CERT_META_MAX)
            problem = "metadata would exceed AMI_CERT_META_MAX bytes";
    }
    if (problem) {
        ami_log_error ("ami_cert_set_meta '%.64s': %s", name, problem);
        return AMI_E_RANGE;
    }
    if (!zcert_meta (self->zcert, name)) {
        zcert_set_meta (self->zcert, name, "%s", value);
        return AMI_OK;
    }
    //  Replace: zcert_set_meta keeps an existing value, so copy the keys
    //  and every other entry into a new zcert.
    zcert_t *fresh = zcert_new_from (zcert_public_key (self->zcert),
                                     zcert_secret_key (self->zcert));
    zlist_t *keys = fresh ? zcert_meta_keys (self->zcert) : NULL;
    if (!keys) {
        s_zcert_wipe_destroy (&fresh);
        return AMI_E_NOMEM;
    }
    for (const char *key = (const char *) zlist_first (keys); key;
         key = (const char *) zlist_next (keys))
        zcert_set_meta (fresh, key, "%s",
                        streq (key, name) ? value : zcert_meta (self->zcert, key));
    zlist_destroy (&keys);
    s_zcert_wipe_destroy (&self->zcert);
    self->zcert = fresh;
    return AMI_OK;
}

zcert_t *
ami_cert_zcert (ami_cert_t *self)
{
    assert (self);
    return self->zcert;
}
