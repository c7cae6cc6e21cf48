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
    consistent shorter chain: only an anchor kept elsewhere catches that -
    the anchor file below (the MDMS also logs the last seq and hash at
    start and stop, and an auditor may note them from AMI_ACT_AUDIT).

    Verification rule (ami_mdms_audit_verify). The stored entries are
    walked in key order; the entry at key s is good when its E decodes,
    carries seq s, and its H equals BLAKE2b_K(H stored at s - 1 || E).
      - a key s whose entry is not good          -> failure {s, AMI_E_BAD_SIGNATURE}
        (altered, forged, or moved here from elsewhere: reordered)
      - seq s missing between stored keys        -> failure {s, AMI_E_NOTFOUND}
        (removed)
      - a key that is not an 8-byte seq at all   -> failure {0, AMI_E_STORAGE}
    The walk goes on from the H stored at s whether or not s was good, so
    one altered entry is one failure and its successor checks clean. When
    entry s - 1 is missing or did not carry seq s - 1 (removed or moved),
    the H it held is not the one entry s was chained to: the link of s
    cannot be checked and is skipped (s is still checked for its seq); the
    failure at s - 1 already marks the spot. So one removed entry is one
    failure, and two swapped entries are exactly two. Seqs missing AFTER
    the last stored entry - below the MDMS's in-memory tail or the anchor
    - are not "removed" but a truncation (AMI_E_TRUNCATED, below).

    The anchor (truncation, ami_mdms_audit_anchor_open). A small text file
    OUTSIDE the LMDB environment records the chain head - the last
    committed seq and its H - MACed with a key the database file does not
    hold, so a tail cut from data.mdb shows against it. Where: the MDMS's
    config mdms/audit-anchor, default "<mdms/db>.audit-anchor" (a sibling
    of the database directory, e.g. /var/lib/ami/db/mdms.audit-anchor):
    not inside the directory, so copying, restoring or replacing the
    database directory (what an attacker or a backup tool handles as one
    unit) does not carry the anchor along; not under mdms/keys, which
    holds provisioned secrets and is read-only to the service. For more
    protection point it at a directory the database's other writers
    cannot write (another owner or mount). Layout, exactly these 7 lines,
    each ending in LF, numbers in decimal, hex lower case:
        ami-audit-anchor 1
        seq <last committed seq, 0 = empty log>
        hash <its stored H, 64 hex; 64 zeros when seq is 0>
        time <Unix ms of the write>
        truncated <first> <last>    (a truncation found earlier; 0 0 = none)
        anchor-lost none | missing | forged | missing forged
                                    (the anchor was found missing or not
                                     verifying earlier)
        mac <64 hex>
    mac = BLAKE2b-256 keyed with the anchor key over every byte before the
    "mac" line. The anchor key is crypto_kdf subkey id 4, context
    "AMIanchr", of the MDMS data key: the same custody as the audit key
    (a 0600 file outside the database; whoever could forge the anchor
    could forge the chain anyway), no new key file to provision, and the
    MDMS signing key keeps its single purpose (commands to meters; it is
    also the key whose rotation must not invalidate the anchor). The
    earlier findings ("truncated", "anchor-lost") are carried into every
    later anchor, so a restart or new entries never wash them out; they
    end only with the audit log (a new database and anchor). A missing or
    forged anchor takes the findings it carried with it (they cannot be
    trusted any more): its own finding ("anchor-lost"), which says that
    nothing before that point is vouched for, takes their place and is
    carried on in the same way.
    Written atomically: "<anchor>.tmp" written, fdatasync'ed, renamed
    over the anchor, then the directory fsync'ed. When: at open; by
    ami_mdms_audit_anchor_sync, which the MDMS calls after every pass of
    its loop, when the committed head moved and the last write is at least
    AMI_MDMS_AUDIT_ANCHOR_MS old (a new finding: at once); and at destroy
    (the stop: always the final head). So the anchor costs at most 10
    writes (20 fsyncs) a second however many commits - per-request
    appends and group commits - there are, instead of doubling the cost
    of every commit. The price, stated: the anchor may lag the committed
    head by one window - the commits of the last 100 ms, or up to the
    loop's next pass, which comes at least once a heartbeat (1 s) when
    the MDMS is idle. While the MDMS runs that lag is covered by its
    in-memory tail (verify compares with both); after a crash, the
    entries after the anchored seq are covered by nothing outside the
    database: the next open logs them ("anchor lags: entries a..b are not
    covered by it") and the verify's log line names the anchored seq. The
    anchor is never ahead of what committed (written only after it).
    At open (after the tail is loaded), the anchor found is checked:
      - valid, its seq = the last seq, same H           -> fine (logged)
      - valid, its seq < the last seq, same H at its seq -> it lags: a crash
                                                           (warned)
      - valid, its seq > the last seq                   -> TRUNCATED: seqs
        last + 1 .. its seq are gone
      - valid, another H at its seq                     -> TRUNCATED: the
        log was cut at or before its seq and grown again (recorded as
        the range its seq .. its seq)
      - missing while the log is not empty              -> anchor-lost missing
      - present but not verifying (mac, layout, not a
        regular file)                                   -> anchor-lost forged
    Every finding is logged as an ERROR naming the range or the file, makes
    ami_mdms_audit_tail_ok false, is carried into the new anchor written at
    once, and a rejected anchor file is kept aside as
    "<anchor>.rejected-<Unix ms>" for the investigation. The MDMS STARTS
    anyway (and appends from the stored tail): it is the system of record
    for reads and interval data, so refusing to start would turn a
    detectable tampering into an outage an attacker with file access can
    cause at will; the evidence is not lost (carried, reported by every
    verify). A missing anchor with an empty log is the first start.
    Not covered: an older anchor file put back together with a log cut to
    exactly its seq (both consistent) - keep the anchor where the
    database's writers cannot write, and the start/stop log lines (shipped
    off the host) are the second anchor.

    Verification against the anchor (ami_mdms_audit_verify, when an anchor
    is open; ref 0 = the anchor file itself, not an entry):
      - the anchor file is missing now           -> {0, AMI_E_NOTFOUND}
      - it is not the one this MDMS wrote last
        (forged, replaced, unreadable)           -> {0, AMI_E_BAD_SIGNATURE}
        (both also become "anchor-lost" findings: reported again by every
        later verify, also once the next write has restored the file)
      - an earlier "anchor-lost" finding         -> the same failure
      - truncation: the seqs from the last stored entry + 1 up to the
        anchored seq or the MDMS's in-memory tail, whichever is higher,
        united with an earlier "truncated" finding into ONE range
        [first, last]                            -> {first, AMI_E_TRUNCATED}
        and, when last > first, {last, AMI_E_TRUNCATED}: the range's two
        ends; `failed` counts every seq in it
    Anchor failures are always listed (slots are kept for them when chain
    failures fill the list), and the list is in ref order (so the anchor
    file's own come first).

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

/*  The anchor key: crypto_kdf subkey of the data key (id, 8-byte context). */
#define AMI_MDMS_AUDIT_ANCHOR_KDF_ID    4
#define AMI_MDMS_AUDIT_ANCHOR_KDF_CTX   "AMIanchr"
/*  Suffix of the default anchor path, after the database directory. */
#define AMI_MDMS_AUDIT_ANCHOR_SUFFIX    ".audit-anchor"
/*  Shortest time between two anchor writes for a moved head: 100 ms
    bounds the cost at 10 writes a second whatever the request rate, and
    the lag after a crash at a tenth of a second of commits. */
#define AMI_MDMS_AUDIT_ANCHOR_MS        100
/*  Longest anchor file: 7 lines of at most 19 + 25 + 70 + 26 + 52 + 27 +
    69 bytes = 288; anything longer is not an anchor. */
#define AMI_MDMS_AUDIT_ANCHOR_MAX       320

/*  Open the audit log in store (opening or creating the "audit" database:
    call before any batch is open on store), derive the audit key from the
    32-byte data key (copied and wiped by destroy), load and re-check the
    tail. Returns NULL with *err set (AMI_E_STORAGE, AMI_E_BUSY,
    AMI_E_NOMEM, ...; logged). A tail that does not verify is NOT a
    failure (see above). store is borrowed and must outlive the log. */
ami_mdms_audit_t *
    ami_mdms_audit_new (ami_store_t *store, const uint8_t data_key [32], int *err);

/*  Close (writing the anchor if one is open and the head moved); wipes
    the keys. Idempotent; nulls *self_p. */
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

/*  Walk the whole chain (rule above) and, when an anchor is open, check
    the log against it ("Verification against the anchor"): out->checked =
    stored entries examined, out->failed = failures in all (removed and
    truncated seqs included), out->failures = the first
    AMI_MAX_API_FAILURES in ref order (count), anchor failures always
    among them. A finding about the anchor file is recorded (carried into
    the next anchor written).
    out->corr is untouched. Cost: one keyed BLAKE2b (~1 us) and one decode
    per entry, in one read transaction: about a second per million entries.
    Returns AMI_OK (even with failures: they are the result) or
    AMI_E_STORAGE when the database itself cannot be read. */
int
    ami_mdms_audit_verify (ami_mdms_audit_t *self, ami_api_verify_t *out);

/*  Open the anchor at path (see "The anchor" above): read and check it
    against the loaded tail, log and record what is found, keep a rejected
    file aside, and write the anchor of the current head. Call once, after
    ami_mdms_audit_new and before any append. Returns AMI_OK - also when
    the anchor showed tampering (a finding, not a failure) - or AMI_E_IO
    when the anchor cannot be read (other than missing) or written (wrong
    directory, permissions: a configuration error, logged with the path;
    the MDMS does not start), AMI_E_NOMEM. */
int
    ami_mdms_audit_anchor_open (ami_mdms_audit_t *self, const char *path);

/*  Write the anchor if a finding changed since the last write, or the
    committed head moved and the last write is AMI_MDMS_AUDIT_ANCHOR_MS
    old; call it often (every loop pass): nothing to do costs a compare and
    a clock read. Returns AMI_OK, or AMI_E_IO
    (logged once per spell of failures, and again when writes succeed):
    the audit entries themselves are durable in the database either way.
    No anchor open: AMI_OK. */
int
    ami_mdms_audit_anchor_sync (ami_mdms_audit_t *self);

/*  The seq the anchor file last written records (0: none written). */
uint64_t
    ami_mdms_audit_anchored (ami_mdms_audit_t *self);

/*  The default anchor path of a database directory: db_dir without
    trailing '/' + AMI_MDMS_AUDIT_ANCHOR_SUFFIX, into out (cap bytes).
    Returns AMI_OK, or AMI_E_LIMIT if it does not fit / db_dir is empty. */
int
    ami_mdms_audit_anchor_default (const char *db_dir, char *out, size_t cap);

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
