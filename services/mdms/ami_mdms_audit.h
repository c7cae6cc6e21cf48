/*  ami_mdms_audit.h - the MDMS audit log: append-only, hash-chained,
    tamper-evident record of every operator request (SEC-AUD-1).

    This header is the manual; it also defines the on-disk layout, a
    contract with every future reader (an auditor's offline checker, a
    backup tool).

    What is recorded. One entry per operator request on the API socket,
    appended by the MDMS once the request's outcome is known: who (the
    operator's certificate node-id), with which role (its "ami-role"), what
    (action, meter id, correlation id), when (MDMS clock) and the result
    (0, or the ami_err_t code of the ERROR the operator got: refusals such
    as AMI_E_DENIED, AMI_E_RATE_LIMITED and AMI_E_BAD_REQUEST included).

    Layout. Named LMDB database "audit" in the MDMS environment (the same
    data.mdb as ami_mdms_db.h):
        key   = be64 seq, 1, 2, 3, ... contiguous
        value = E || H
          E = the entry's msgpack encoding, an array of 8:
                [seq u64, time_ms u64, operator str 1..32, role str 1..16,
                 action u8, meter_id str 0..32, corr bin(16), result u16]
              (msgpack-c's smallest encodings; operator, role and meter id
              in the wire id charset [A-Za-z0-9._:-]; action 0 = the
              request did not decode, so it named no action)
          H = 32 bytes: BLAKE2b-256 keyed with the audit key over
              prev_H || E, where prev_H is the H of entry seq - 1, and
              32 zero bytes for seq 1 (crypto_generichash)
    time_ms never decreases along the chain: if the clock steps back, an
    entry records the previous entry's time (so a time-ordered search is a
    binary search, and the log never claims an order it does not have).

    The audit key. crypto_kdf subkey id 1, context "AMIaudit", of the MDMS
    data key (mdms/data-key, a kdf key file kept outside the database). A
    keyed hash means whoever can write the database file but does not hold
    the data key cannot forge a consistent chain: any change, removal or
    reordering of stored entries is found by ami_mdms_audit_verify.
    Removing entries from the END of the log (truncation) leaves a
    consistent shorter chain: only an anchor kept elsewhere catches that
    (an auditor noting the last seq and hash from AMI_ACT_AUDIT; the MDMS
    also logs both at start and stop).

    Verification rule (ami_mdms_audit_verify). The stored entries are
    walked in key order; the entry at key s is good when its E decodes,
    carries seq s, and its H equals BLAKE2b_K(H stored at s - 1 || E).
      - a key s whose entry is not good          -> failure {s, AMI_E_BAD_SIGNATURE}
        (altered, forged, or moved here from elsewhere: reordered)
      - seq s missing between stored keys        -> failure {s, AMI_E_NOTFOUND}
        (removed)
    The walk goes on from the H stored at s whether or not s was good, so
    one altered entry is one failure and its successor checks clean. When
    entry s - 1 is missing or did not carry seq s - 1 (removed or moved),
    the H it held is not the one entry s was chained to: the link of s
    cannot be checked and is skipped (s is still checked for its seq); the
    failure at s - 1 already marks the spot. So one removed entry is one
    failure, and two swapped entries are exactly two.

    In memory: the last seq, its time and its H, loaded at open, so an
    append is one put. At open the tail entry is re-checked against its
    predecessor and the number of entries against the last seq; a mismatch
    is logged loudly (AMI_LOG_ERROR) and appending continues from the
    stored tail (ami_mdms_audit_tail_ok says so; the verify action reports
    the details).

    Durability. ami_mdms_audit_append writes the entry in its own durable
    transaction (one fsync). ami_mdms_audit_stage adds it to a caller's
    batch instead (the MDMS stores readings and their reads' audit entries
    in one group-commit transaction); ami_mdms_audit_settle then tells
    whether that batch committed. The in-memory tail advances only on a committed entry.

    Threads: none; one thread (the MDMS actor) uses an audit log.
    Errors: ami_err_t codes; storage failures are logged (by ami_store).
*/
#ifndef AMI_MDMS_AUDIT_H_INCLUDED
#define AMI_MDMS_AUDIT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_msg.h"
#include "ami_store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_mdms_audit_t ami_mdms_audit_t;

/*  Name of the LMDB database. */
#define AMI_MDMS_AUDIT_DB           "audit"
/*  crypto_kdf subkey of the data key: id and 8-byte context. */
#define AMI_MDMS_AUDIT_KDF_ID       1
#define AMI_MDMS_AUDIT_KDF_CTX      "AMIaudit"
/*  Longest E: array header 1, two u64 9 + 9, operator 2 + 32, role
    2 + 16, action 2, meter 2 + 32, corr 2 + 16, result 3 = 128. */
#define AMI_MDMS_AUDIT_ENTRY_MAX    128
/*  Largest stored value: E plus H. */
#define AMI_MDMS_AUDIT_VALUE_MAX    (AMI_MDMS_AUDIT_ENTRY_MAX + AMI_HASH_SIZE)

/*  Open the audit log in store (opening or creating the "audit" database:
    call before any batch is open on store), derive the audit key from the
    32-byte data key (copied and wiped by destroy), load and re-check the
    tail. Returns NULL with *err set (AMI_E_STORAGE, AMI_E_BUSY,
    AMI_E_NOMEM, ...; logged). A tail that does not verify is NOT a
    failure (see above). store is borrowed and must outlive the log. */
ami_mdms_audit_t *
    ami_mdms_audit_new (ami_store_t *store, const uint8_t data_key [32], int *err);

/*  Close; wipes the key. Idempotent; nulls *self_p. */
void
    ami_mdms_audit_destroy (ami_mdms_audit_t **self_p);

/*  Append one entry in its own durable transaction. entry gives operator_id
    (1..32 id chars), role (1..16 id chars), action, meter_id (0..32 id
    chars), corr and result; seq, time_ms and hash are assigned here and,
    if out is not NULL, the complete entry is copied to *out. Text that is
    not a valid id is refused with AMI_E_RANGE (callers sanitise). Returns
    AMI_OK, AMI_E_RANGE, AMI_E_BUSY (a batch is open on the store: use
    stage), AMI_E_MAP_FULL, AMI_E_IO, AMI_E_STORAGE, AMI_E_NOMEM. */
int
    ami_mdms_audit_append (ami_mdms_audit_t *self, const ami_audit_row_t *entry,
                           ami_audit_row_t *out);

/*  Add the next entry to batch (opened on the same store), as append
    does, without committing. Several entries may be staged in the same
    batch (they chain onto each other: the MDMS's group commit); then call
    ami_mdms_audit_settle once with the outcome of ami_store_batch_commit
    (or false after ami_store_batch_abort) before appending (asserted) or
    staging into another batch. Returns AMI_OK or the batch put's error
    (this entry is not staged; earlier ones in the batch still are). */
int
    ami_mdms_audit_stage (ami_mdms_audit_t *self, ami_store_batch_t *batch,
                          const ami_audit_row_t *entry, ami_audit_row_t *out);

/*  The batch holding the staged entries committed (true: the tail
    advances to the last of them) or not (false: they are forgotten, their
    seqs are used by the next). Nothing staged: no effect. */
void
    ami_mdms_audit_settle (ami_mdms_audit_t *self, bool committed);

/*  Last seq in the log (0 when empty), and whether the tail checked clean
    when the log was opened. The last H into hash if not NULL. */
uint64_t
    ami_mdms_audit_last (ami_mdms_audit_t *self, uint8_t hash [AMI_HASH_SIZE]);
bool
    ami_mdms_audit_tail_ok (ami_mdms_audit_t *self);

/*  A page of the log, oldest first: entries with seq > after_seq and
    time_ms >= from_ms, at most limit of them into rows (each with its
    stored H as hash), *count set; *more when another matching entry
    exists. The next page is after_seq = the last row's seq, same from_ms.
    An entry that does not decode stops the page with AMI_E_STORAGE
    (logged): run the verify to see which. Returns AMI_OK or
    AMI_E_STORAGE. */
int
    ami_mdms_audit_page (ami_mdms_audit_t *self, uint64_t from_ms, uint64_t after_seq,
                         size_t limit, ami_audit_row_t *rows, size_t *count, bool *more);

/*  Walk the whole chain (rule above): out->checked = stored entries
    examined, out->failed = failures in all (removed seqs included),
    out->failures = the first AMI_MAX_API_FAILURES in seq order (count).
    out->corr is untouched. Cost: one keyed BLAKE2b (~1 us) and one decode
    per entry, in one read transaction: about a second per million entries.
    Returns AMI_OK (even with failures: they are the result) or
    AMI_E_STORAGE when the database itself cannot be read. */
int
    ami_mdms_audit_verify (ami_mdms_audit_t *self, ami_api_verify_t *out);

/*  Layout helpers, public so tests and tools use the very layout.
    Encode E for entry (seq, time_ms, ..., result; hash ignored) into
    out (AMI_MDMS_AUDIT_ENTRY_MAX bytes); returns its length, or 0 when a
    field is out of range. */
size_t
    ami_mdms_audit_encode (const ami_audit_row_t *entry, uint8_t *out);

/*  Parse a stored value (E || H) into row (hash = the stored H). Returns
    AMI_OK, or AMI_E_STORAGE when E does not decode strictly (wrong arity,
    types, lengths, charset, trailing bytes) or the value is too short. */
int
    ami_mdms_audit_parse (const void *val, size_t vlen, ami_audit_row_t *row);

#ifdef __cplusplus
}
#endif

#endif
