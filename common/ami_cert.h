/*  ami_cert.h - CurveZMQ certificates of ami-bus nodes and operators.

    An ami_cert wraps a CZMQ zcert (a CURVE keypair plus metadata) and adds
    what ami-bus requires of every certificate:

    -   metadata "role" (meter, aggregator, headend, broker, mdms, operator,
        ...) and "node-id" (e.g. "MDMS-1", "MTR-000042", an operator's
        login), always present and validated;
    -   keys are only ever generated (ami_cert_new) or loaded from files:
        there are no compiled-in or default keys, and no way to make one;
    -   secret files are written so they are never readable by anyone but
        the owner, not even for an instant, and are refused at load time if
        their mode grants anything to group or others.

    On disk a certificate is two ZPL files in zcert's format, so CZMQ tools
    (and zauth's allow-list directories) read them unchanged:

        PATH            public key + metadata, mode 0644: hand it to peers
                        (copy it into the allow-list directory of each
                        server this node may talk to)
        PATH_secret     both keys + metadata, mode 0600: stays on the node

    Metadata limits. zauth (CZMQ 4.2.1) copies an allowed client's
    certificate metadata into a fixed 512-byte buffer without a bounds
    check (a heap overflow, seen under valgrind); each entry costs
    1 + strlen(name) + 4 + strlen(value) bytes there. So the total is
    capped at AMI_CERT_META_MAX bytes, names are [A-Za-z0-9._-] (1..64),
    values printable ASCII without '"' (0..255 bytes), and names that
    libzmq reserves for connection properties (User-Id, Socket-Type,
    Identity, Routing-Id, Peer-Address, Resource) are refused: a server
    reads the metadata back with zframe_meta(), so a certificate must not
    be able to pose as a connection property.
    role is [a-z][a-z0-9-]* (1..32); node-id is [A-Za-z0-9][A-Za-z0-9._-]*
    (1..64).

    Thread safety: none. Even reading metadata writes inside zcert's hash
    table (zhash caches the last lookup), so use an ami_cert from one
    thread at a time; an actor that needs its node's certificate should
    load its own copy or receive it before it starts.
*/
#ifndef AMI_CERT_H_INCLUDED
#define AMI_CERT_H_INCLUDED

#include <czmq.h>

#include "ami_err.h"
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ami_cert_t ami_cert_t;

#define AMI_CERT_META_ROLE      "role"
#define AMI_CERT_META_NODE_ID   "node-id"
/*  What the two 32-byte keys are (metadata "key-type"; absent = curve):
    curve    an X25519 keypair: CurveZMQ transport keys, crypto_box keys;
    ed25519  an Ed25519 public key and its 32-byte seed as the secret;
    kdf      a secret for crypto_kdf, with BLAKE2b-256 of it as the public
             field (a fingerprint, so the file pair still checks out).
    ami_cert_load checks that the secret produces the public key by the
    rule of its type. Only curve certs belong in allow-lists and on
    sockets; the others carry ami_e2e application keys. */
#define AMI_CERT_META_KEY_TYPE  "key-type"
#define AMI_CERT_KEY_CURVE      "curve"
#define AMI_CERT_KEY_ED25519    "ed25519"
#define AMI_CERT_KEY_KDF        "kdf"

/*  Budget for all metadata, as zauth encodes it (see above): 512 would
    just fit zauth's buffer; keep a margin below it. */
#define AMI_CERT_META_MAX       400

/*  Length of a Z85-encoded 32-byte CURVE key, without the NUL. */
#define AMI_CERT_KEY_TXT_LEN    40

/*  Generate a fresh keypair (from libsodium via libzmq) with the given
    role and node-id. Returns NULL with *err (if err is not NULL) set to:
      AMI_E_RANGE   role or node_id is not valid (see above; logged);
      AMI_E_KEY     libzmq was built without CURVE, or key generation
                    failed (logged);
      AMI_E_NOMEM   out of memory. */
ami_cert_t *
    ami_cert_new (const char *role, const char *node_id, int *err);

/*  Wrap existing 32-byte keys of the given key type (see
    AMI_CERT_META_KEY_TYPE) with role and node-id, e.g. an Ed25519 signing
    key made with libsodium. The keys are checked to belong together.
    Returns NULL with *err = AMI_E_RANGE (bad role/node-id/type, all-zero
    or mismatched keys; logged) or AMI_E_NOMEM. The caller wipes its own
    copy of secret_key. */
ami_cert_t *
    ami_cert_new_from_keys (const char *role, const char *node_id, const char *key_type,
                            const uint8_t public_key [32], const uint8_t secret_key [32],
                            int *err);

/*  Return the secret key as 32 bytes, or NULL for a public-only cert.
    Belongs to the cert (wiped when it is destroyed). */
const uint8_t *
    ami_cert_secret_key (ami_cert_t *self);

/*  Return the key type ("curve" when the metadata is absent). */
const char *
    ami_cert_key_type (ami_cert_t *self);

/*  Load this node's own certificate with its secret key. path is the
    public file name; the secret is read from path + "_secret" (a path
    that already ends in "_secret" is used as is). Only the secret file is
    read: it holds both keys and the metadata. Returns NULL with *err set
    to:
      AMI_E_KEY_PERMS  the secret file's mode grants any permission to
                       group or others (mode & 077), or it is not a
                       regular file: symbolic links are refused too, so the
                       file whose mode we check is the file we read, and it
                       lives where the operator sees it (deployment copies
                       keys into place, it does not link them);
      AMI_E_KEY        it is missing ("no secret key at PATH_secret: run
                       ami-keygen"), unreadable, larger than 64 KiB, not
                       ZPL, lacks a valid public or secret key, the two
                       keys do not belong together, or role/node-id
                       metadata is missing or invalid;
      AMI_E_NOMEM      out of memory.
    Every failure is logged with the file name. */
ami_cert_t *
    ami_cert_load (const char *path, int *err);

/*  Load a peer's public certificate from path (symbolic links are fine:
    nothing secret is read). The result has no secret key. A file that
    does hold a secret key is accepted, the secret is ignored and a
    warning logged (a public file must not carry one). Returns NULL with
    *err set to AMI_E_KEY (missing, unreadable, not a regular file, over
    64 KiB, malformed, bad public key, role/node-id missing or invalid) or
    AMI_E_NOMEM; failures are logged with the file name. */
ami_cert_t *
    ami_cert_load_public (const char *path, int *err);

/*  Destroy a certificate, wiping its secret key from memory first.
    Idempotent; nulls *self_p. */
void
    ami_cert_destroy (ami_cert_t **self_p);

/*  Write the public file at path (mode 0644) and the secret file at
    path + "_secret" (mode 0600), secret first. The cert must have a
    secret key (assert: saving a public-only cert is a programming error).

    Each file is written to a hidden temporary file in the same directory
    (".NAME.tmp-XXXXXX", created by mkostemp with mode 0600 and O_EXCL),
    given its final mode with fchmod, fsync'ed, then renamed over NAME.
    Chosen over umask(077) around zcert_save_secret because umask is
    process-wide (other threads' files would be affected, and CZMQ's own
    zsys_file_mode_private/default pair does exactly that, and fails to
    restore a umask of 0), and because fopen("w") on an existing file keeps
    that file's old, possibly loose, mode; rename gives the final name a
    new inode with exactly our mode, and a crash never leaves a half-written
    key. The temporary name is hidden so a zauth allow-list directory
    watcher never sees two files with the same key.
    Existing files are replaced. Returns AMI_OK, AMI_E_IO (logged, naming
    the file) or AMI_E_NOMEM. */
int
    ami_cert_save (ami_cert_t *self, const char *path);

/*  Write only the public file at path (mode 0644), as ami_cert_save does.
    Works for public-only certs too (e.g. to install a peer's cert into an
    allow-list directory). Returns AMI_OK, AMI_E_IO or AMI_E_NOMEM. */
int
    ami_cert_save_public (ami_cert_t *self, const char *path);

/*  Return the role / node-id metadata. Never NULL for a valid cert. The
    string belongs to the cert and is valid until that entry is set again
    or the cert is destroyed. */
const char *
    ami_cert_role (ami_cert_t *self);
const char *
    ami_cert_node_id (ami_cert_t *self);

/*  Return the public key as Z85 text (AMI_CERT_KEY_TXT_LEN characters,
    NUL-terminated), as used by curve_serverkey and as a client's User-Id.
    Belongs to the cert. */
const char *
    ami_cert_public_txt (ami_cert_t *self);

/*  Return the public key as 32 bytes. Belongs to the cert. */
const uint8_t *
    ami_cert_public_key (ami_cert_t *self);

/*  Return true if the cert holds a secret key (ami_cert_new, ami_cert_load),
    false for ami_cert_load_public. */
bool
    ami_cert_has_secret (ami_cert_t *self);

/*  Return a metadata value, or NULL if the cert has no such entry. The
    string belongs to the cert (valid until that entry is set again). */
const char *
    ami_cert_meta (ami_cert_t *self, const char *name);

/*  Set (add or replace) a metadata entry. Returns AMI_OK, or AMI_E_RANGE
    (logged) if the name or value is invalid, the name is reserved, role or
    node-id would become invalid, or the total would exceed
    AMI_CERT_META_MAX; AMI_E_NOMEM when out of memory. The cert is
    unchanged on error. Entries cannot be
    removed (zcert_unset_meta is a CZMQ draft API). */
int
    ami_cert_set_meta (ami_cert_t *self, const char *name, const char *value);

/*  Return the underlying zcert (borrowed: owned by self, do not destroy),
    e.g. for zcert_apply. */
zcert_t *
    ami_cert_zcert (ami_cert_t *self);

#ifdef __cplusplus
}
#endif

#endif
