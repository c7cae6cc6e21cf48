/*  ami_mdms_db.h - the MDMS database: meter registry, stored readings and
    the command counter, in one LMDB environment (ami_store).

    This header is the manual; it also defines the on-disk schema, which is
    a contract with every future reader of the database (a backup tool, the
    VERIFY action, a migration): change a layout only together with its
    layout version byte.

    Databases (named LMDB databases inside DIR/data.mdb):

    "meta"      small fixed keys, values big-endian integers:
                "schema"        be64  schema version, AMI_MDMS_DB_SCHEMA (2)
                "counter"       be64  the command counter's reserved mark
                                      (see "Command counter" below)
                "registry.gen"  be64  generation of the current registry
                "interval"      be64  length in seconds of the intervals
                                      stored in "intervals" (mdms/interval;
                                      written by ami_mdms_db_interval_setup)

    "meters"    the provisioned meter registry, imported from meters.tsv
                at every start (ami_mdms_db_registry_import).
                key   = meter_id bytes (1..32, no NUL, no terminator)
                value = AMI_MDMS_METER_LAYOUT (1), exactly:
                    u8    layout version (1)
                    be64  registry generation this entry belongs to
                    u8    F = fleet id length (1..32), then F bytes
                    u8    A = aggregator id length (1..32), then A bytes
                    32    the meter's Ed25519 signing public key
                An entry whose generation is not "registry.gen" is stale (a
                meter removed from the registry whose deletion did not
                finish): every reader skips it, and the next import deletes
                it.

    "readings"  every verified on-demand reading, with its proof of origin,
                encrypted (SEC-CONF-2): neither the READING nor the proof
                reaches the database file in clear.
                key   = meter_id bytes, 0x00, be64 read_ms, request_id (16)
                        (so one meter's readings are contiguous and sorted
                        by the meter's read time: history is a range scan;
                        0x00 never occurs in a meter id, so "MTR-1" rows sort
                        before "MTR-10" rows and never mix with them)
                value = AMI_MDMS_READING_SEALED (2), exactly:
                    u8    2 (a sealed record; 1 was the clear record of
                          schema 1, never written any more)
                    24    nonce, random per write
                    C     crypto_aead_xchacha20poly1305_ietf ciphertext +
                          16-byte tag of the RECORD below, under the meter
                          data key, additional data = the whole LMDB key
                          (so a value copied under another meter, time or
                          request id does not open)
                RECORD = AMI_MDMS_READING_LAYOUT (1), the plaintext (what
                ami_mdms_db_reading_open returns, ami_mdms_db_reading_parse
                reads; unchanged from schema 1, where it was the value):
                    u8    layout version (1)
                    be64  requested_ms  (MDMS clock when the read was issued)
                    be64  stored_ms     (MDMS clock at the durable write)
                    be32  R = length of the READING (1..AMI_MAX_FRAME)
                    R     the READING as the meter encoded it (the opened
                          plaintext of READ_RESP.sealed; decode with
                          ami_msg_decode)
                    be32  P = length of the proof (1..AMI_MAX_FRAME)
                    P     the whole READ_RESP frame as received, signed by
                          the meter (SEC-NR-1): ami_e2e_verify with the
                          meter's registry key re-proves its origin (once
                          opened: a verifier outside the MDMS needs the data
                          key too)
                A value that does not open (altered, moved to another key,
                written under another data key, or a clear schema-1
                value) and a record whose lengths do not add up are
                reported as AMI_E_STORAGE and logged, never served. The
                box costs 41 bytes per reading (~5 % of a typical ~0.8 KB
                value).

    "customers" the customer record of each meter that has one (SEC-CONF-2),
                encrypted: the plaintext never reaches the database file.
                Written by the registry import from the optional columns
                5..7 of meters.tsv.
                key   = meter_id bytes (as in "meters")
                value = AMI_MDMS_CUSTOMER_LAYOUT (1), exactly:
                    u8    layout version (1)
                    be64  registry generation (stale entries as in "meters")
                    24    nonce, random per record and per import
                    C     crypto_aead_xchacha20poly1305_ietf ciphertext +
                          16-byte tag of the msgpack array
                          [name str 1..64, address str 0..256, account str 1..32]
                          under the customer key, additional data = the
                          meter id bytes (a record moved to another meter's
                          key does not open)
                The customer key is the crypto_kdf subkey id
                AMI_MDMS_CUSTOMER_KDF_ID (2), context "AMIcust " (with the
                trailing space) of the MDMS data key (mdms/data-key), which
                lives in a key file outside the database, never in it.
                Every import re-encrypts every record with a fresh nonce
                (the registry file is the source of truth), so a new data
                key takes effect at the next start.

    "audit"     the operator audit log: layout in ami_mdms_audit.h (it
                shares this environment so that a reading and the audit
                entry of its read commit in one transaction).

    "intervals" interval (load-profile) data from BATCH blocks, exactly once
                per (meter, interval): one record per meter per bucket of
                96 consecutive intervals (one UTC day at 15 minutes),
                encrypted (SEC-CONF-2) except for its presence bitmap.
                With I = the interval length in seconds ("interval" in
                "meta") and n = end_s / I the interval's number (>= 1):
                    bucket = (n - 1) / 96,  slot = (n - 1) % 96,
                    end_s  = (bucket * 96 + slot + 1) * I.
                key   = meter_id bytes, 0x00, be32 bucket (so one meter's
                        buckets are contiguous and in time order: a range
                        query is one forward scan)
                value = exactly AMI_MDMS_INTERVAL_VALUE (1588) bytes:
                    12    presence bitmap, IN CLEAR: slot s is stored iff
                          bitmap [s / 8] & (1 << (s % 8)). It tells which
                          intervals exist, not what was consumed; tools
                          (ami-load) count stored readings from it without
                          the key.
                    24    nonce, random per write
                    1536  crypto_aead_xchacha20poly1305_ietf ciphertext of
                          the 96 slot records (below) under the meter data
                          key, additional data = the LMDB key followed by
                          the 12 bitmap bytes (a value moved to another
                          meter or day, or a bitmap bit flipped, does not
                          open)
                    16    its tag
                The opened value (AMI_MDMS_INTERVAL_PLAIN, 1548 bytes: what
                ami_mdms_db_interval_open gives and the slot helpers read)
                is the bitmap followed by the 96 records, slot s at offset
                12 + 16 * s:
                          u64 LE  import_wh
                          u48 LE  export_wh (< 2^48)
                          u16 LE  status (AMI_Q_* flags)
                    the 16 bytes of an absent slot are zero.
                A present slot is never overwritten (exactly once: a second
                copy of an interval is a duplicate, counted, and dropped);
                adding intervals to a record opens it, merges and seals it
                again with a new nonce. The layout has no version byte: a
                value of another length, or one that does not open, is
                corrupt (AMI_E_STORAGE, logged, never served). Readings
                stored = the number of set bits over all values (what
                ami-load counts). Two values still share a 4 KiB page (a
                leaf node of at most 8 + 37 + 1588 bytes, LMDB's limit for
                two per page being ~2 KB), so the box costs no space: a
                full page stores 192 readings, ~21 bytes each. Measured
                (test_mdms_ingest bench, mdb_stat pages of "intervals" /
                readings), the same with and without the box: 21.5 bytes
                per reading for 10 000 meters x 1 day; 34.5 after 5 days
                of 2 000 meters, because a meter's new day goes at the end
                of a full page, which LMDB splits leaving one value behind
                (the long-run bound is ~43, one value per page). LMDB's
                free pages (about two transactions' worth) come on top of
                the tree in the file.
                Interval data carries no per-reading proof of origin (the
                AEAD box authenticates it on arrival, ami_e2e.h); on-demand
                readings in "readings" do.

    Meter data key. Readings and interval records are sealed under the
    crypto_kdf subkey AMI_MDMS_METER_DATA_KDF_ID (3), context "AMImdata",
    of the MDMS data key (mdms/data-key), distinct from the customer key
    (2, "AMIcust "), the audit key (1, "AMIaudit") and the audit anchor's
    MAC key (4, "AMIanchr", ami_mdms_audit.h). One key serves both
    databases: their additional data cannot collide (a readings key has
    24 bytes after its meter id's 0x00 and is authenticated alone, an
    intervals key 4 and is followed by the bitmap; a value is also only
    ever opened as the layout of its own database). Nonces are random (192
    bits: no counter state that a restored backup could roll back), drawn
    from a pool that is refilled with a ChaCha20 keystream under a fresh
    32-byte seed from the operating system (randombytes_buf_deterministic),
    one system call per 256 nonces. A new data key makes every stored
    reading and interval record unreadable: keep the key file as long as
    the data (and backed up apart from it).

    Schema history. Schema 1 gained "customers", "audit" and "intervals"
    without a version change: they are additive, created empty when a
    schema-1 database without them is opened. Schema 2 (SEC-CONF-2)
    encrypts the values of "readings" and "intervals" (layouts above); the
    other databases did not change. A schema-1 database is not migrated:
    one that holds any reading or interval record (stored in clear) is
    refused (AMI_E_CONFIG, logged with what to do: move it away and let the
    MDMS create a new one, after exporting what must be kept); one with
    neither is upgraded in place (its "schema" becomes 2: nothing to
    encrypt). Why no migration: the clear copy would stay in LMDB's free
    pages and in every backup of the old file, so encrypting in place
    would not remove it from the host anyway; re-creating the database
    (and destroying the old file) does.

    Command counter. Every READ_REQ carries a counter that must be strictly
    greater than the last one the meter accepted, across MDMS restarts
    (SEC-INT-2). One MDMS-wide counter serves every meter (strictly
    increasing overall, hence per meter). Writing it durably per command
    would cost one fsync per read (~0.3 ms, DESIGN.md section 8), so
    counters are reserved in blocks of AMI_MDMS_COUNTER_BLOCK: "counter"
    holds the highest value that may have been handed out; a block is
    reserved with one durable write BEFORE its first value is used, and
    after a restart numbering continues above the reserved mark. A crash
    therefore skips at most one block of values, never reuses one.
    (Restoring an old copy of the database would reuse values: meters
    would then refuse commands with AMI_E_REPLAY until the counter passes
    their last one. Restore procedures must raise "counter".)

    Threads: none. Use an ami_mdms_db_t from one thread (the MDMS actor).
    Errors: every function returns an ami_err_t code; failures other than
    AMI_E_NOTFOUND are logged (by ami_store, or here with the file/line of
    the registry).
*/
#ifndef AMI_MDMS_DB_H_INCLUDED
#define AMI_MDMS_DB_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_msg.h"
#include "ami_e2e.h"
#include "ami_store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_mdms_db_t ami_mdms_db_t;

#define AMI_MDMS_DB_SCHEMA          2
#define AMI_MDMS_METER_LAYOUT       1
#define AMI_MDMS_READING_LAYOUT     1       /* the record inside the box */
#define AMI_MDMS_READING_SEALED     2       /* a readings value: the sealed record */
#define AMI_MDMS_CUSTOMER_LAYOUT    1

/*  crypto_kdf subkey of the data key that encrypts customer records
    (context: exactly 8 bytes). */
#define AMI_MDMS_CUSTOMER_KDF_ID    2
#define AMI_MDMS_CUSTOMER_KDF_CTX   "AMIcust "
/*  crypto_kdf subkey of the data key that encrypts meter data at rest:
    "readings" and "intervals" values (see "Meter data key" above). */
#define AMI_MDMS_METER_DATA_KDF_ID  3
#define AMI_MDMS_METER_DATA_KDF_CTX "AMImdata"
/*  The box of a sealed value: XChaCha20-Poly1305-IETF nonce and tag
    (crypto_aead_xchacha20poly1305_ietf_NPUBBYTES and _ABYTES). */
#define AMI_MDMS_SEAL_NONCE         24
#define AMI_MDMS_SEAL_TAG           16
/*  Customer fields (API_CUSTOMER limits): name UTF-8 1..64 bytes,
    service address UTF-8 0..256, account id 1..32 of the id charset. */
#define AMI_MDMS_CUSTOMER_ADDRESS_MAX   AMI_MAX_TEXT

/*  10 000 counter values per durable reservation: one fsync per 10 000
    commands instead of one per command, and a restart skips at most
    10 000 values of a 64-bit counter (10^15 restarts to run out). */
#define AMI_MDMS_COUNTER_BLOCK      10000

/*  Readings key: meter id + 0x00 + be64 read_ms + request id. */
#define AMI_MDMS_READING_KEY_MAX    (AMI_MAX_ID + 1 + 8 + AMI_REQUEST_ID_SIZE)
/*  Fixed part of a readings record: version, two times, two lengths. */
#define AMI_MDMS_READING_HEADER     (1 + 8 + 8 + 4)
/*  A readings value is its record plus this: version byte, nonce, tag. */
#define AMI_MDMS_READING_BOX        (1 + AMI_MDMS_SEAL_NONCE + AMI_MDMS_SEAL_TAG)

/*  "intervals" layout (see above). */
#define AMI_MDMS_INTERVAL_SLOTS     96      /* intervals per bucket: a day at 15 min */
#define AMI_MDMS_INTERVAL_BITMAP    12      /* 96 presence bits */
#define AMI_MDMS_INTERVAL_RECORD    16      /* u64 + u48 + u16 */
#define AMI_MDMS_INTERVAL_RECORDS   (AMI_MDMS_INTERVAL_SLOTS * AMI_MDMS_INTERVAL_RECORD)
/*  The opened value (bitmap + records, 1548 bytes) and the stored one
    (bitmap + nonce + sealed records + tag, 1588 bytes). */
#define AMI_MDMS_INTERVAL_PLAIN     (AMI_MDMS_INTERVAL_BITMAP + AMI_MDMS_INTERVAL_RECORDS)
#define AMI_MDMS_INTERVAL_VALUE     (AMI_MDMS_INTERVAL_BITMAP + AMI_MDMS_SEAL_NONCE \
                                     + AMI_MDMS_INTERVAL_RECORDS + AMI_MDMS_SEAL_TAG)
#define AMI_MDMS_INTERVAL_KEY_MAX   (AMI_MAX_ID + 1 + 4)
/*  export_wh is stored in 48 bits: 2.8e14 Wh, far beyond any register. */
#define AMI_MDMS_EXPORT_MAX         (((uint64_t) 1 << 48) - 1)

/*  Longest line accepted in meters.tsv: the seven fields take at most
    32 + 32 + 32 + 64 + 64 + 256 + 32 bytes plus 6 tabs (518); 1024
    leaves room for a comment. */
#define AMI_MDMS_REGISTRY_LINE_MAX  1024

/*  One registry entry. */
typedef struct {
    ami_id_t meter_id;
    ami_id_t fleet_id;
    ami_id_t aggregator_id;
    uint8_t  sign_pk [AMI_E2E_SIGN_PK_SIZE];
} ami_mdms_meter_t;

/*  One stored reading, as handed to a history callback. The pointers point
    into the opened (decrypted) record, a work buffer that is wiped after
    the callback: valid only during it. */
typedef struct {
    ami_id_t meter_id;
    uint64_t read_ms;
    uint8_t  request_id [AMI_REQUEST_ID_SIZE];
    uint64_t requested_ms;
    uint64_t stored_ms;
    const uint8_t *reading;         /* encoded READING */
    size_t   reading_size;
    const uint8_t *proof;           /* signed READ_RESP frame */
    size_t   proof_size;
} ami_mdms_reading_t;

/*  Open (creating if needed) the database in directory dir with the given
    LMDB map size (0 = AMI_STORE_DEFAULT_MAP_SIZE, 1 GiB); store_flags as
    for ami_store_new (0 in production). Opens the meta, meters, readings,
    customers and intervals databases (the audit log opens its own
    database, ami_mdms_audit_new), checks or writes the schema version
    (a schema-1 database: see "Schema history"), and loads the counter's
    reserved mark.
    Returns NULL with *err set (AMI_E_IO, AMI_E_STORAGE, AMI_E_MAP_FULL,
    AMI_E_NOMEM, or AMI_E_CONFIG for a database of another schema version,
    or of schema 1 with records in clear), logged. */
ami_mdms_db_t *
    ami_mdms_db_new (const char *dir, size_t map_size, int store_flags, int *err);

/*  Close the database. Idempotent; nulls *self_p. */
void
    ami_mdms_db_destroy (ami_mdms_db_t **self_p);

/*  Give the database the 32-byte MDMS data key, from which it derives the
    customer key and the meter data key (only the subkeys are kept; wiped
    by destroy). Needed before an import of a registry with customer
    columns, by ami_mdms_db_customer_get, and by everything that reads or
    writes readings or interval records: without it those return
    AMI_E_CONFIG (and the ingest does not start). */
void
    ami_mdms_db_set_data_key (ami_mdms_db_t *self, const uint8_t data_key [32]);

/*  Has a data key been set? */
bool
    ami_mdms_db_has_data_key (ami_mdms_db_t *self);

/*  The underlying store, for a caller that writes a reading and other
    records (the audit entry) in one ami_store batch. Borrowed. */
ami_store_t *
    ami_mdms_db_store (ami_mdms_db_t *self);

/*  Import the registry file at path, replacing the registry in the
    database. The file holds one meter per line:

        meter_id <TAB> fleet_id <TAB> aggregator_id <TAB> sign_pk_hex
            [ <TAB> customer_name <TAB> service_address <TAB> account ]

    ids as on the wire (ami_id_valid), sign_pk_hex exactly 64 hex digits of
    a valid Ed25519 public key. The three customer columns come together or
    not at all: customer_name UTF-8 1..64 bytes, service_address UTF-8
    0..256 bytes (both without control characters), account an id (1..32
    of [A-Za-z0-9._:-]); they are stored only encrypted ("customers"; the
    data key must have been set, else AMI_E_CONFIG). A file that holds
    customer columns must give group and others no access (mode & 077 ==
    0, as a secret key file; ami-keygen writes it 0600): one that does is
    refused at its first customer line with AMI_E_CONFIG and a log line
    naming the file, its mode and the fix (chmod 600), so no readable copy
    of the customer data stays on the MDMS host (SEC-CONF-2). A
    registry of 4-column lines only may be readable. A line without them
    leaves the meter with no customer record. '#' starts a comment - a
    whole line, or the rest of a line from a '#' in the first four fields
    or at the start of the fifth (inside customer fields a '#' is text:
    "Apt #4"); blank lines are skipped; trailing blanks and a CR are
    ignored. Every field of every line is checked and a meter id may
    appear only once; on the first error nothing is written and
    AMI_E_CONFIG is returned with a log line naming the file, line and
    field (never the customer data itself). The import is one write
    transaction (all new entries, customer records and the new
    generation), so a reader sees the old registry or the new one, never a
    mix; entries of meters no longer listed, and customer records no
    longer given, are deleted afterwards (and skipped until then). Removal
    (SEC-KEY-3) is how a meter is taken out of service or its key revoked:
    the MDMS imports the registry at start, so after a restart with a
    meters.tsv without meter X, every lookup of X answers AMI_E_NOTFOUND:
    the MDMS refuses X's READ (and HISTORY, INTERVALS, VERIFY, CUSTOMER)
    with AMI_E_UNKNOWN_METER, audited, and rejects X's interval blocks
    (ami_mdms_ingest.h: counted, EVENT security). X's stored readings and
    interval records are KEPT in "readings" and "intervals" (billing
    records under retention rules; a registry edit must not be able to
    destroy them) but are not served while X is not registered: the
    registry's key is what VERIFY needs to re-prove them, and listing X
    again makes them readable again. Each removed meter is named in the
    log (a warning; the first 20, then a count). Line
    buffers holding customer plaintext are wiped before they are freed.
    The meter ids are held in memory during the import (about 80 bytes a
    meter). If aggregators_p is not NULL it gets a new list (owned by the
    caller, zlistx_destroy) of the distinct aggregator ids, as strings
    sorted bytewise. *count gets the number of meters (may be NULL).
    Returns AMI_OK, AMI_E_CONFIG, AMI_E_IO (file unreadable),
    AMI_E_MAP_FULL, AMI_E_STORAGE, AMI_E_NOMEM. */
int
    ami_mdms_db_registry_import (ami_mdms_db_t *self, const char *path,
                                 zlistx_t **aggregators_p, size_t *count);

/*  One parsed line of meters.tsv (ami_mdms_registry_parse_line). The
    customer fields are plaintext: wipe the row (sodium_memzero) when done
    with a row that has_customer. */
typedef struct {
    ami_mdms_meter_t meter;
    bool has_customer;                              /* 7-column line */
    char name [AMI_MAX_CUSTOMER_NAME + 1];          /* UTF-8 1..64 bytes */
    char address [AMI_MDMS_CUSTOMER_ADDRESS_MAX + 1];   /* UTF-8 0..256 */
    char account [AMI_MAX_ID + 1];                  /* an id */
} ami_mdms_registry_row_t;

/*  Parse one line of a registry file, as ami_mdms_db_registry_import does
    (it calls this function for every line): line is len bytes, not
    necessarily NUL-terminated, as read including its line end (so len
    counts the newline). Pure: no database, no logging, no allocation.
    Returns
      AMI_OK          row filled (a meter; customer fields if 7 columns,
                      else has_customer false and the strings empty);
      AMI_E_NOTFOUND  nothing to import (blank line or comment only);
      AMI_E_CONFIG    the line is wrong: longer than
                      AMI_MDMS_REGISTRY_LINE_MAX, a NUL byte, or a field
                      as described at ami_mdms_db_registry_import; *why
                      (if why is not NULL) gets a static complaint that
                      never quotes customer data.
    row is written on every return (zeroed unless AMI_OK). The copy of the
    line this function works on is wiped before it returns. */
int
    ami_mdms_registry_parse_line (const char *line, size_t len,
                                  ami_mdms_registry_row_t *row, const char **why);

/*  Look up a meter in the registry. Returns AMI_OK (out filled),
    AMI_E_NOTFOUND, or AMI_E_STORAGE for a corrupt entry (logged). */
int
    ami_mdms_db_meter_get (ami_mdms_db_t *self, const char *meter_id,
                           ami_mdms_meter_t *out);

/*  A page of the registry in meter id order (bytewise), starting after
    meter id `after` ("" or NULL = from the start). Fills up to limit rows
    and sets *count; *more is set when further meters exist. Returns AMI_OK
    or AMI_E_STORAGE. */
int
    ami_mdms_db_meters_page (ami_mdms_db_t *self, const char *after, size_t limit,
                             ami_mdms_meter_t *rows, size_t *count, bool *more);

/*  Number of meters in the current registry (stale entries not counted). */
size_t
    ami_mdms_db_meter_count (ami_mdms_db_t *self);

/*  Hand out the next command counter (>= 1, strictly greater than every
    counter handed out before by any process on this database), reserving
    a new block durably when the current one is used up. Returns AMI_OK, or
    the store's error when the reservation could not be written (then no
    counter is handed out: a command must not be sent). */
int
    ami_mdms_db_counter_next (ami_mdms_db_t *self, uint64_t *counter);

/*  The reserved mark as stored ("counter" in "meta"), for tests and the
    STATUS pipe command. */
uint64_t
    ami_mdms_db_counter_reserved (ami_mdms_db_t *self);

/*  The customer record of meter_id, decrypted into out->name, address and
    account (out->corr and meter_id untouched). Returns AMI_OK;
    AMI_E_NOTFOUND (the meter has no customer record in the current
    registry); AMI_E_DECRYPT (the record does not open: altered, moved
    from another meter, or written under another data key; logged);
    AMI_E_STORAGE (layout does not add up; logged); AMI_E_CONFIG (no data
    key set). The plaintext is wiped from the work buffer. */
int
    ami_mdms_db_customer_get (ami_mdms_db_t *self, const char *meter_id,
                              ami_api_customer_t *out);

/*  Store one verified reading durably (one write transaction), sealed
    (layout above): the plaintext never reaches LMDB. reading and proof
    must be non-empty and at most AMI_MAX_FRAME bytes. A reading with the
    same key is never overwritten: AMI_E_EXISTS. Returns AMI_OK,
    AMI_E_EXISTS, AMI_E_MAP_FULL, AMI_E_LIMIT, AMI_E_STORAGE, AMI_E_IO,
    AMI_E_NOMEM, AMI_E_CONFIG (no data key set). */
int
    ami_mdms_db_reading_put (ami_mdms_db_t *self, const char *meter_id, uint64_t read_ms,
                             const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                             uint64_t requested_ms, uint64_t stored_ms,
                             const uint8_t *reading, size_t reading_size,
                             const uint8_t *proof, size_t proof_size);

/*  The same, as one put in the caller's batch (opened on
    ami_mdms_db_store): nothing is durable until the batch commits.
    AMI_E_EXISTS affects only this put (the batch stays usable). */
int
    ami_mdms_db_reading_stage (ami_mdms_db_t *self, ami_store_batch_t *batch,
                               const char *meter_id, uint64_t read_ms,
                               const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                               uint64_t requested_ms, uint64_t stored_ms,
                               const uint8_t *reading, size_t reading_size,
                               const uint8_t *proof, size_t proof_size);

/*  History callback: return 0 to go on, non-zero to stop. */
typedef int (ami_mdms_history_fn) (const ami_mdms_reading_t *row, void *arg);

/*  Visit the readings of meter_id with from_ms <= read_ms <= to_ms (to_ms
    0 = no upper bound), newest first, at most limit rows; *more (may be
    NULL) is set when at least one more row is in range. Each value is
    opened (decrypted) for its callback: row's pointers point into a work
    buffer that is wiped after the callback. A stored value that does not
    open or parse stops the scan with AMI_E_STORAGE (logged): never hand
    corrupt data to an operator as if it were a reading. A callback
    returning non-zero just stops the scan (not an error). Returns AMI_OK,
    AMI_E_STORAGE, AMI_E_NOMEM, or AMI_E_CONFIG (no data key). */
int
    ami_mdms_db_history (ami_mdms_db_t *self, const char *meter_id,
                         uint64_t from_ms, uint64_t to_ms, size_t limit,
                         ami_mdms_history_fn *fn, void *arg, bool *more);

/*  Verification walk: called for every stored readings row of one meter in
    range, oldest first. rc is AMI_OK with row opened and parsed (pointers
    valid during the call only), or AMI_E_STORAGE when the value does not
    open (logged) or the record (or key) does not parse: then only
    row->meter_id, row->read_ms and row->request_id are set (from the key,
    0 if even that is broken). Return 0 to go on, non-zero to stop. */
typedef int (ami_mdms_each_fn) (int rc, const ami_mdms_reading_t *row, void *arg);

/*  Visit every reading of meter_id with from_ms <= read_ms <= to_ms (to_ms
    0 = no upper bound), oldest first, INCLUDING rows that do not parse (a
    verifier must report those, not stop at them). Returns AMI_OK,
    AMI_E_STORAGE when the database cannot be read, AMI_E_NOMEM, or
    AMI_E_CONFIG (no data key). */
int
    ami_mdms_db_readings_each (ami_mdms_db_t *self, const char *meter_id,
                               uint64_t from_ms, uint64_t to_ms,
                               ami_mdms_each_fn *fn, void *arg);

/*  read_ms of the newest reading of meter_id into *read_ms, or 0 if it has
    none. Returns AMI_OK or AMI_E_STORAGE. */
int
    ami_mdms_db_last_read (ami_mdms_db_t *self, const char *meter_id, uint64_t *read_ms);

/*  Number of stored readings (all meters). */
size_t
    ami_mdms_db_reading_count (ami_mdms_db_t *self);

/*  Schema helpers, public so tests and tools use the very same layout.
    Build a readings key into key (AMI_MDMS_READING_KEY_MAX bytes); returns
    its length, or 0 if meter_id is not a valid id. */
size_t
    ami_mdms_db_reading_key (const char *meter_id, uint64_t read_ms,
                             const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                             uint8_t *key);

/*  Parse a readings key and RECORD (an opened value, layout
    AMI_MDMS_READING_LAYOUT: ami_mdms_db_reading_open) into row (pointers
    into record). Returns AMI_OK or AMI_E_STORAGE when a length or version
    does not add up. */
int
    ami_mdms_db_reading_parse (const void *key, size_t klen, const void *record, size_t rlen,
                               ami_mdms_reading_t *row);

/*  Open a readings value as stored under key (klen bytes) - for tools,
    tests and the readers above: decrypt it into record (cap bytes; vlen -
    AMI_MDMS_READING_BOX are enough) and set *rlen. The record is not
    parsed (ami_mdms_db_reading_parse). Returns AMI_OK; AMI_E_STORAGE (the
    value is too short, not a sealed value - e.g. a clear schema-1 one -
    or does not open: altered, moved to another key, or sealed under
    another data key; logged with the meter and read time); AMI_E_LIMIT
    (cap too small); AMI_E_CONFIG (no data key set). Wipe record when done
    (sodium_memzero): it is plaintext meter data. */
int
    ami_mdms_db_reading_open (ami_mdms_db_t *self, const void *key, size_t klen,
                              const void *val, size_t vlen,
                              uint8_t *record, size_t cap, size_t *rlen);

/*  Seal a record (rlen bytes, any content) for key: into val (cap bytes;
    rlen + AMI_MDMS_READING_BOX are enough) with a fresh nonce, setting
    *vlen; what ami_mdms_db_reading_put stores. For tools, migrations and
    tests that rewrite a value. Returns AMI_OK, AMI_E_LIMIT (cap too small
    or rlen 0), AMI_E_CONFIG (no data key set). */
int
    ami_mdms_db_reading_seal (ami_mdms_db_t *self, const void *key, size_t klen,
                              const uint8_t *record, size_t rlen,
                              uint8_t *val, size_t cap, size_t *vlen);

/* ---------------------------------------------------------------------- */
/*  Interval data ("intervals")                                             */

/*  Record (or check) the interval length of the "intervals" database in
    "meta". A database without one takes interval_s; one with another
    length refuses (AMI_E_CONFIG, logged: the stored bucket/slot numbers
    mean other times) unless "intervals" is still empty, in which case the
    new length replaces the old. Call once at start, before any batch.
    interval_s must be 1..86400 and divide 86400. Returns AMI_OK,
    AMI_E_CONFIG, or a store error. */
int
    ami_mdms_db_interval_setup (ami_mdms_db_t *self, uint32_t interval_s);

/*  The interval length set up above (0 before). */
uint32_t
    ami_mdms_db_interval_s (ami_mdms_db_t *self);

/*  Handle of the "intervals" database in ami_mdms_db_store (self), for
    the ingest's reads and batch puts. */
unsigned
    ami_mdms_db_intervals_dbi (ami_mdms_db_t *self);

/*  Build an "intervals" key into key (AMI_MDMS_INTERVAL_KEY_MAX bytes);
    returns its length, or 0 if meter_id is not a valid id. */
size_t
    ami_mdms_db_interval_key (const char *meter_id, uint32_t bucket, uint8_t *key);

/*  Parse an "intervals" key: meter id (into meter_id) and bucket. Returns
    AMI_OK or AMI_E_STORAGE if it is not a key of that layout. */
int
    ami_mdms_db_interval_key_parse (const void *key, size_t klen, ami_id_t meter_id,
                                    uint32_t *bucket);

/*  Open a stored "intervals" value (AMI_MDMS_INTERVAL_VALUE bytes at
    value) of key (klen bytes) into plain (AMI_MDMS_INTERVAL_PLAIN bytes:
    the bitmap, then the 96 slot records). Returns AMI_OK, AMI_E_STORAGE
    (does not open: altered, bitmap changed, moved to another key, or
    sealed under another data key; logged with the meter and bucket;
    plain is then zeroed) or AMI_E_CONFIG (no data key). */
int
    ami_mdms_db_interval_open (ami_mdms_db_t *self, const void *key, size_t klen,
                               const uint8_t *value, uint8_t *plain);

/*  Seal an opened value (plain, AMI_MDMS_INTERVAL_PLAIN bytes) for key
    into value (AMI_MDMS_INTERVAL_VALUE bytes) with a fresh nonce: the
    bitmap is copied in clear and authenticated with the key. Returns
    AMI_OK or AMI_E_CONFIG (no data key). */
int
    ami_mdms_db_interval_seal (ami_mdms_db_t *self, const void *key, size_t klen,
                               const uint8_t *plain, uint8_t *value);

/*  Slot helpers on an OPENED value (AMI_MDMS_INTERVAL_PLAIN bytes; _present
    and _count read only the bitmap, so they also work on a stored value).
    _present tells whether slot (0..95) is stored; _get decodes it into
    out with out->end_s computed from bucket and interval_s; _put stores
    rec's values (not end_s) in slot and sets its presence bit. */
bool
    ami_mdms_db_interval_present (const uint8_t *value, unsigned slot);
void
    ami_mdms_db_interval_get (const uint8_t *value, unsigned slot, uint32_t bucket,
                              uint32_t interval_s, ami_interval_t *out);
void
    ami_mdms_db_interval_put (uint8_t *value, unsigned slot, const ami_interval_t *rec);

/*  Number of stored intervals in one value, opened or stored (set
    presence bits). */
unsigned
    ami_mdms_db_interval_count (const uint8_t *value);

/*  The stored intervals of meter_id whose END time end_s satisfies
    from_ms <= end_s * 1000 <= to_ms (0 = unbounded at that end), oldest
    first, at most limit of them into out (limit >= 1 entries); *count
    gets how many; *more is set when at least one more stored interval is
    in range (next page: from_ms = last end_s * 1000 + 1). Each value in
    range is opened; the plaintext is wiped after use. Returns AMI_OK,
    AMI_E_STORAGE when a stored key or value does not parse or open
    (logged: never hand corrupt data to an operator), or AMI_E_CONFIG (no
    data key). An id that is not valid has no intervals (AMI_OK, count
    0). */
int
    ami_mdms_db_intervals (ami_mdms_db_t *self, const char *meter_id, uint64_t from_ms,
                           uint64_t to_ms, size_t limit, ami_interval_t *out,
                           size_t *count, bool *more);

/*  Totals over "intervals": *readings = set presence bits (stored
    intervals, read from the clear bitmaps: nothing is decrypted), *buckets
    = values. Either may be NULL. A full scan (~10 ms per 100 000 values):
    for tests, tools and STATUS on demand. Returns AMI_OK or a store
    error. */
int
    ami_mdms_db_intervals_total (ami_mdms_db_t *self, uint64_t *readings, size_t *buckets);

#ifdef __cplusplus
}
#endif

#endif
