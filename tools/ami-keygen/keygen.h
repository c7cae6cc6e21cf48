/*  keygen.h - provisioning of an ami-bus deployment's keys (ami-keygen).

    ami-bus has no default or compiled-in keys (SEC-KEY-1): every node,
    operator and fleet key is generated here, on the machine that deploys,
    into a directory outside the repository. The layout is the contract of
    docs/SERVICES.md "Keys":

        DIR/topology.cfg                 what init was asked for (ZPL); check
                                         and operator read it back
        DIR/nodes/<node>.cert(+_secret)  CURVE transport keys of mdms, broker,
                                         headend-1..H, agg-1..A, fleet-1..F
                                         (metadata role, node-id)
        DIR/operators/<op>.cert(+_secret)  one per operator: role=operator,
                                         node-id=<op>, ami-role=<ROLE>
        DIR/allow/<server>/<peer>.cert   each server's allow-list (public
                                         certs only):
                                           broker    <- mdms, every head end
                                           headend-N <- every aggregator
                                           agg-N     <- its fleets
                                           mdms      <- every head end, every
                                                        operator
        DIR/allow/<server>/<peer>.old-<unix>[-N].cert  an old key kept by
                                         rotate during its window (metadata
                                         expires); removed by prune /
                                         rotate --finish
        DIR/revoked.txt                  keys revoked (keygen_revoke)
        DIR/app/mdms-sign.cert(+_secret) MDMS Ed25519 command-signing key
        DIR/app/mdms-box.cert(+_secret)  MDMS X25519 reading-sealing key
        DIR/app/mdms-pub/mdms-{sign,box}.cert  their public halves only: the
                                         directory a fleet's meter/mdms-pub
                                         names, so fleets never see a secret
        DIR/app/mdms-pub/mdms-sign.old-<unix>[-N].cert  an old signing key
                                         kept by `rotate DIR mdms-sign`
                                         during its window (metadata
                                         expires; fleets accept it until
                                         then: services/meter/
                                         ami_meter_keys.h); removed by
                                         prune / rotate mdms-sign --finish
        DIR/app/fleet-N.cert(+_secret)   fleet secret (key-type kdf) from which
                                         each meter's Ed25519 key derives
        DIR/app/mdms-data.cert(+_secret) the MDMS data key (key-type kdf,
                                         node-id mdms; made by
                                         ami_e2e_fleet_generate, so its role
                                         metadata says "meter"): the MDMS
                                         derives its audit-chain key and the
                                         keys that encrypt customer records,
                                         readings and interval data from it.
                                         It lives here, outside the MDMS
                                         database (SEC-CONF-2); replacing it
                                         (init --force) makes an existing
                                         audit log unverifiable and its
                                         stored readings and interval data
                                         unreadable.
        DIR/app/meters.tsv               the MDMS registry, one line a meter,
                                         no header, 7 TAB-separated columns:
                                         meter_id, fleet_id, aggregator_id,
                                         sign_pk_hex, customer_name (UTF-8,
                                         1..64 bytes), service_address (UTF-8,
                                         0..256), account (id charset,
                                         ACC-%08u); mode 0600 like a secret
                                         (customer data, SEC-CONF-2: the
                                         MDMS refuses customer columns in
                                         a file group or others can read)

    Fleet i (1..F) reports to aggregator ((i-1) mod A)+1 and carries meters
    (i-1)*M+1 .. i*M, named MTR-%06u; a meter's signing key is
    ami_e2e_meter_keypair(fleet seed, meter number). Its customer columns
    are synthetic - invented combinations of small built-in lists, no real
    person's data - and a pure function of the meter number
    (keygen_customer), so check can recompute them.

    Modes: directories holding secrets (DIR, nodes, operators, app) are
    created 0700, secret files and meters.tsv (customer data) are 0600
    (ami_cert_save), public files and allow-list directories 0644/0755.
    Every file is written to a hidden
    temporary name and renamed into place, so a zauth directory watcher never
    sees half a certificate.

    Each function prints its own diagnostics on stderr (prefixed
    "ami-keygen: ") and returns the process exit code below.
*/
#ifndef KEYGEN_H_INCLUDED
#define KEYGEN_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "ami_msg.h"

/* Exit codes of ami-keygen (also documented in its --help). */
#define KEYGEN_OK            0   /* done / deployment valid */
#define KEYGEN_FAILED        1   /* I/O or crypto failure; check: invalid or incomplete */
#define KEYGEN_USAGE         2   /* bad command line or argument */
#define KEYGEN_EXISTS        3   /* init: DIR/nodes exists; operator: it exists (use --force) */
#define KEYGEN_ABSENT        4   /* check/operator: DIR is not provisioned at all */
#define KEYGEN_REFUSED       5   /* revoke: the last SECADM operator (use --force) */

/* rotate: how long the old key stays accepted [1 hour: time to restart a
   node or hand an operator the new file]; at most a week, so a typo does
   not leave an old key valid for years. */
#define KEYGEN_DEFAULT_WINDOW    3600
#define KEYGEN_MAX_WINDOW        (7 * 24 * 3600)

/* rotate/prune: the id naming the MDMS command-signing key (app/
   mdms-sign.cert), which is not a node: `rotate DIR mdms-sign`. */
#define KEYGEN_SIGN_ID           "mdms-sign"

/* Revocation record under DIR (see keygen_revoke). */
#define KEYGEN_REVOKED_FILE      "revoked.txt"

/* Bounds on the topology: generous for load tests, small enough that a
   typo (an extra zero) is refused instead of filling the disk. Meter
   numbers must stay below 2^32 (ami_e2e_meter_keypair's index). */
#define KEYGEN_MAX_HEADENDS      16
#define KEYGEN_MAX_AGGREGATORS   256
#define KEYGEN_MAX_FLEETS        1024
#define KEYGEN_MAX_METERS_PER    1000000
#define KEYGEN_MAX_METERS        10000000
#define KEYGEN_MAX_OPERATORS     64

/* File name of the MDMS data key under DIR/app. */
#define KEYGEN_DATA_KEY          "mdms-data.cert"

/* Longest meters.tsv line keygen writes: 7 columns of at most 10 + 11 + 7
   + 64 + 64 + 256 + 12 bytes, 6 TABs and the newline (431); room to spare. */
#define KEYGEN_REGISTRY_LINE_MAX 1024

/* Default operators: one per IEC 62351-8 role used by ami-bus. */
#define KEYGEN_DEFAULT_OPERATORS "operator:OPERATOR,viewer:VIEWER,secadm:SECADM,auditor:AUDITOR"

typedef struct {
    int headends;               /* 1..KEYGEN_MAX_HEADENDS [2] */
    int aggregators;            /* 1..KEYGEN_MAX_AGGREGATORS [2] */
    int fleets;                 /* aggregators..KEYGEN_MAX_FLEETS [2] */
    uint32_t meters_per_fleet;  /* 1..KEYGEN_MAX_METERS_PER [100] */
    const char *operators;      /* "id:ROLE,id:ROLE..." [KEYGEN_DEFAULT_OPERATORS] */
} keygen_topology_t;

/*  Fill *topo with the defaults above. */
void
    keygen_topology_default (keygen_topology_t *topo);

/*  Provision DIR (created if missing). Refuses (KEYGEN_EXISTS) when
    DIR/nodes exists unless force, in which case the previous nodes,
    operators, allow and app directories and topology.cfg are removed first
    (nothing else in DIR is touched). Ends by running ami_auth_check_dir on
    every allow-list directory. Returns KEYGEN_OK, KEYGEN_USAGE (bad
    topology or operator list), KEYGEN_EXISTS or KEYGEN_FAILED. */
int
    keygen_init (const char *dir, const keygen_topology_t *topo, bool force);

/*  Verify DIR against its topology.cfg: every file present; every secret
    a regular file of mode 0600 whose keys belong together and match the
    public file; role/node-id/ami-role metadata as expected; every
    allow-list directory passes ami_auth_check_dir and holds exactly the
    expected peers' keys; meters.tsv lists exactly the expected meters with
    the keys their fleet secrets derive, and gives group and others no
    access (it holds customer data). Prints every problem found (not
    only the first) and, unless quiet, a one-line summary on stdout.
    Returns KEYGEN_OK, KEYGEN_ABSENT (neither topology.cfg nor nodes/
    exists: nothing was ever provisioned) or KEYGEN_FAILED. */
int
    keygen_check (const char *dir, bool quiet);

/*  Add operator id with role (VIEWER | OPERATOR | SECADM | AUDITOR, any
    case) to a provisioned DIR: writes DIR/operators/<id>.cert(+_secret),
    installs the public cert as DIR/allow/mdms/<id>.cert (a running MDMS's
    zauth picks it up at the next handshake) and records it in
    topology.cfg. With force an existing operator's key is replaced (key
    rotation; the old key is refused from its next connection on). Returns
    KEYGEN_OK, KEYGEN_USAGE, KEYGEN_EXISTS, KEYGEN_ABSENT or
    KEYGEN_FAILED. */
int
    keygen_operator (const char *dir, const char *id, const char *role, bool force);

/*  Rotate the CURVE transport key of node or operator `id` without
    stopping anything (SEC-KEY-2). A new keypair with the same role,
    node-id (and ami-role) is generated; in every DIR/allow/<server>/ that
    holds the old public key, the file holding it is renamed to
    <id>.old-<unix-now>.cert and given metadata expires = now + window, and
    the new public key is written under the original name. Then the new
    secret+public pair replaces DIR/nodes/<id>.cert(+_secret) (or
    operators/): the node uses it from its next restart (supervisorctl
    restart ami-<program>), and until the window ends both keys are
    accepted; ami_auth_peer_allowed refuses the old one per frame from
    "expires" on, and `prune` (or keygen_prune with the id, `rotate
    --finish`) removes the file so zauth refuses its handshakes too. No
    allow-list ever holds the same key twice or lacks the old key while
    rotating (a running zauth may re-read at any moment).

    A SERVER (mdms, broker, headend-N, agg-N) has ONE CURVE key: its
    clients trust exactly the key in DIR/nodes/<server>.cert, read at their
    start. So after rotating a server's key, restart the server, then its
    clients; in between, they cannot connect (the allow-lists' window only
    covers the server's own role as a client, e.g. an aggregator towards
    its head ends). Transport keys rotate this way; of the application
    keys, only the MDMS signing key rotates (below); app/mdms-box,
    app/mdms-data and app/fleet-N are not touched.

    id KEYGEN_SIGN_ID ("mdms-sign"): a new MDMS command-signing key
    (Ed25519, SEC-KEY-2 for the application layer). The old public key
    is kept in app/mdms-pub as mdms-sign.old-<unix-now>.cert with
    metadata expires = now + window (fleets accept commands signed with
    it until then, services/meter/ami_meter_keys.h), the new public key
    replaces app/mdms-pub/mdms-sign.cert, and last the new secret replaces
    app/mdms-sign.cert(+_secret): running fleets accept the new key
    within AMI_METER_KEYS_REFRESH_MS (they re-read the directory), the
    MDMS signs with it from its next restart. `rotate DIR mdms-sign
    --finish` (keygen_prune with that id) removes the old key at once;
    prune removes it once expired. Refused (KEYGEN_FAILED) while
    app/mdms-pub already holds AMI_METER_KEYS_MAX - 1 old signing keys
    (fleets would ignore one more).

    Returns KEYGEN_OK, KEYGEN_USAGE (no such node/operator, window outside
    1..KEYGEN_MAX_WINDOW) or KEYGEN_FAILED. */
int
    keygen_rotate (const char *dir, const char *id, int64_t window);

/*  Remove from every allow-list the certificates whose "expires" has
    passed (id NULL; `ami-keygen prune DIR`), or every certificate of
    node-id `id` that carries an "expires" (its old keys, whatever the
    time: `ami-keygen rotate DIR ID --finish`). The old MDMS signing keys
    in app/mdms-pub are pruned the same way: expired ones (or ones
    without a valid expires) with id NULL, all of them with id
    KEYGEN_SIGN_ID. Prints each file removed.
    Returns KEYGEN_OK, KEYGEN_USAGE or KEYGEN_FAILED. */
int
    keygen_prune (const char *dir, const char *id);

/*  Revoke node or operator `id` (SEC-KEY-3): remove every certificate of
    node-id `id`, or with its current key, from every allow-list (printed),
    and append each removed key to DIR/revoked.txt ("unix TAB id TAB
    key"). A running server's zauth refuses the key from its next
    handshake; ami_auth_peer_allowed drops what its live sessions send
    within AMI_AUTH_REFRESH_MS. The key files under nodes/ or operators/
    stay (evidence); `check` expects a revoked key in no allow-list;
    `operator ID ROLE --force` gives an operator a new key. Refuses
    (KEYGEN_REFUSED) to revoke the last SECADM operator unless force.
    Revoking again is a no-op (KEYGEN_OK). A node no allow-list holds (the
    broker: only a server) cannot be revoked: rotate it (KEYGEN_FAILED).
    Returns KEYGEN_OK, KEYGEN_USAGE, KEYGEN_REFUSED or KEYGEN_FAILED. */
int
    keygen_revoke (const char *dir, const char *id, bool force);

/*  The synthetic customer of meter number `number`: name "First Last"
    (UTF-8, <= AMI_MAX_CUSTOMER_NAME bytes), service address "Street N,
    POSTCODE Town" (UTF-8, <= AMI_MAX_TEXT), account "ACC-%08u". Always
    the same for the same number; never holds TAB, '#' or control
    characters. */
void
    keygen_customer (uint32_t number, char name [AMI_MAX_CUSTOMER_NAME + 1],
                     char address [AMI_MAX_TEXT + 1], char account [AMI_MAX_ID + 1]);

/*  Return true if role is one of the operator roles (exact, upper case). */
bool
    keygen_role_valid (const char *role);

/*  Return true if id can name an operator: the intersection of a wire id
    and a certificate node-id, [A-Za-z0-9][A-Za-z0-9._-]{0,31}. */
bool
    keygen_operator_id_valid (const char *id);

#endif
