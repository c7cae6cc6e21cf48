/*  ami_mdms_db.h - the MDMS database: meter registry, stored readings and
    the command counter, in one LMDB environment (ami_store).

    This header is the manual; it also defines the on-disk schema, which is
    a contract with every future reader of the database (a backup tool, the
    VERIFY action, a migration): change a layout only together with its
    layout version byte.

    Databases (named LMDB databases inside DIR/data.mdb):

    "meta"      small fixed keys, values big-endian integers:
                "schema"        be32  schema version, AMI_MDMS_DB_SCHEMA (1)
                "counter"       be64  the command counter's reserved mark
                                      (see "Command counter" below)
                "registry.gen"  be64  generation of the current registry

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

    "readings"  every verified on-demand reading, with its proof of origin.
                key   = meter_id bytes, 0x00, be64 read_ms, request_id (16)
                        (so one meter's readings are contiguous and sorted
                        by the meter's read time: history is a range scan;
                        0x00 never occurs in a meter id, so "MTR-1" rows sort
                        before "MTR-10" rows and never mix with them)
                value = AMI_MDMS_READING_LAYOUT (1), exactly:
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
                          meter's registry key re-proves its origin
                Lengths are validated on every read: a value whose layout
                does not add up is reported as AMI_E_STORAGE, never
                trusted. (Readings are stored in clear here; encryption at
                rest, SEC-CONF-2, belongs to the security work.)

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

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_mdms_db_t ami_mdms_db_t;

#define AMI_MDMS_DB_SCHEMA          1
#define AMI_MDMS_METER_LAYOUT       1
#define AMI_MDMS_READING_LAYOUT     1

/*  10 000 counter values per durable reservation: one fsync per 10 000
    commands instead of one per command, and a restart skips at most
    10 000 values of a 64-bit counter (10^15 restarts to run out). */
#define AMI_MDMS_COUNTER_BLOCK      10000

/*  Readings key: meter id + 0x00 + be64 read_ms + request id. */
#define AMI_MDMS_READING_KEY_MAX    (AMI_MAX_ID + 1 + 8 + AMI_REQUEST_ID_SIZE)
/*  Fixed part of a readings value: version, two times, two lengths. */
#define AMI_MDMS_READING_HEADER     (1 + 8 + 8 + 4)

/*  Longest line accepted in meters.tsv: the four fields take at most
    32 + 32 + 32 + 64 bytes plus 3 tabs; 512 leaves room for a comment. */
#define AMI_MDMS_REGISTRY_LINE_MAX  512

/*  One registry entry. */
typedef struct {
    ami_id_t meter_id;
    ami_id_t fleet_id;
    ami_id_t aggregator_id;
    uint8_t  sign_pk [AMI_E2E_SIGN_PK_SIZE];
} ami_mdms_meter_t;

/*  One stored reading, as handed to a history callback. The pointers point
    into the database map and are valid only during the callback. */
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
    for ami_store_new (0 in production). Opens the three databases, checks
    or writes the schema version, and loads the counter's reserved mark.
    Returns NULL with *err set (AMI_E_IO, AMI_E_STORAGE, AMI_E_MAP_FULL,
    AMI_E_NOMEM, or AMI_E_CONFIG for a database of another schema version),
    logged. */
ami_mdms_db_t *
    ami_mdms_db_new (const char *dir, size_t map_size, int store_flags, int *err);

/*  Close the database. Idempotent; nulls *self_p. */
void
    ami_mdms_db_destroy (ami_mdms_db_t **self_p);

/*  Import the registry file at path, replacing the registry in the
    database. The file holds one meter per line:

        meter_id <TAB> fleet_id <TAB> aggregator_id <TAB> sign_pk_hex

    ids as on the wire (ami_id_valid), sign_pk_hex exactly 64 hex digits of
    a valid Ed25519 public key; '#' starts a comment (whole line or rest of
    line); blank lines are skipped; a trailing CR is ignored. Every field
    of every line is checked and a meter id may appear only once; on the
    first error nothing is written and AMI_E_CONFIG is returned with a log
    line naming the file, line and field. The import is one write
    transaction (all new entries and the new generation), so a reader sees
    the old registry or the new one, never a mix; entries of meters no
    longer listed are deleted afterwards (and skipped until then).
    The meter ids are held in memory during the import (about 80 bytes a
    meter). If aggregators_p is not NULL it gets a new list (owned by the
    caller, zlistx_destroy) of the distinct aggregator ids, as strings
    sorted bytewise. *count gets the number of meters (may be NULL).
    Returns AMI_OK, AMI_E_CONFIG, AMI_E_IO (file unreadable),
    AMI_E_MAP_FULL, AMI_E_STORAGE, AMI_E_NOMEM. */
int
    ami_mdms_db_registry_import (ami_mdms_db_t *self, const char *path,
                                 zlistx_t **aggregators_p, size_t *count);

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

/*  Store one verified reading durably (one write transaction). reading and
    proof must be non-empty and at most AMI_MAX_FRAME bytes. A reading with
    the same key is never overwritten: AMI_E_EXISTS. Returns AMI_OK,
    AMI_E_EXISTS, AMI_E_MAP_FULL, AMI_E_LIMIT, AMI_E_STORAGE, AMI_E_IO,
    AMI_E_NOMEM. */
int
    ami_mdms_db_reading_put (ami_mdms_db_t *self, const char *meter_id, uint64_t read_ms,
                             const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                             uint64_t requested_ms, uint64_t stored_ms,
                             const uint8_t *reading, size_t reading_size,
                             const uint8_t *proof, size_t proof_size);

/*  History callback: return 0 to go on, non-zero to stop. */
typedef int (ami_mdms_history_fn) (const ami_mdms_reading_t *row, void *arg);

/*  Visit the readings of meter_id with from_ms <= read_ms <= to_ms (to_ms
    0 = no upper bound), newest first, at most limit rows; *more (may be
    NULL) is set when at least one more row is in range. A stored value
    that does not parse stops the scan with AMI_E_STORAGE (logged): never
    hand corrupt data to an operator as if it were a reading. A callback
    returning non-zero just stops the scan (not an error). Returns AMI_OK
    or AMI_E_STORAGE. */
int
    ami_mdms_db_history (ami_mdms_db_t *self, const char *meter_id,
                         uint64_t from_ms, uint64_t to_ms, size_t limit,
                         ami_mdms_history_fn *fn, void *arg, bool *more);

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

/*  Parse a readings key and value into row (pointers into val). Returns
    AMI_OK or AMI_E_STORAGE when a length or version does not add up. */
int
    ami_mdms_db_reading_parse (const void *key, size_t klen, const void *val, size_t vlen,
                               ami_mdms_reading_t *row);

#ifdef __cplusplus
}
#endif

#endif
