/*  ami_store.h - a small LMDB store: named databases, single puts, batched
    write transactions and bytewise range scans.

    This header is the manual. An ami_store_t owns one LMDB environment: a
    directory holding data.mdb (the data, mode 0600) and lock.mdb. Inside it
    live named databases ("readings", "meters", ...) whose keys are compared
    bytewise (memcmp, shorter key first on a tie), so a big-endian integer
    key sorts numerically and a key made of (meter, interval) keeps each
    meter's readings contiguous for a range scan.

    Errors. Every function that can fail returns an int holding an
    ami_err_t code (ami_err.h):

        AMI_OK            success
        AMI_E_NOTFOUND    no such key / database (normal outcome, not logged)
        AMI_E_EXISTS      AMI_STORE_NOOVERWRITE and the key is present
                          (normal outcome, not logged)
        AMI_E_MAP_FULL    the map (= maximum file size) is full; the operator
                          must raise the store map size and restart
        AMI_E_LIMIT       a key is longer than ami_store_max_key (), a value
                          is over 4 GiB, a caller's buffer is too small, or
                          there are more databases than max_dbs
        AMI_E_BAD_REQUEST misuse that depends on data: empty key or name,
                          a database handle this store did not open, a write
                          on a read-only store
        AMI_E_BUSY        a write was attempted while a batch is open (see
                          "Transactions")
        AMI_E_NOMEM       out of memory
        AMI_E_IO          the directory or files cannot be created/opened, or
                          the disk failed (EIO, ENOSPC, EACCES...)
        AMI_E_STORAGE     any other LMDB error (corruption, version...)

    Programming errors are asserted, not returned: NULL self or out
    pointer, NULL key/val with a non-zero length, unknown flag bits, NULL
    scan callback, a NULL batch passed to commit.

    Failures other than NOTFOUND, EXISTS and a too-small get buffer are
    logged with zsys_error, naming the operation, the database and LMDB's
    own text. The text of the most recent failure is kept for
    ami_store_last_error ().

    Transactions. Each ami_store_put/del is its own write transaction and is
    durable when it returns (one fsync per call: a few thousand per second,
    see DESIGN.md section 8). For ingest, group puts in an ami_store_batch_t:
    one transaction, one fsync for the whole batch. LMDB serializes writers
    with one lock, so while a batch is open on a store, every other write
    through that store (put, del, creating a database, a second batch)
    returns AMI_E_BUSY instead of deadlocking on its own lock (a writer in
    another process on the same directory is waited for). Reads (get,
    scan, count) always see the last committed data: a batch's puts become
    visible to them only when the batch commits.

    Threads. An ami_store_t is NOT thread-safe: use it from one thread at a
    time (the MDMS uses it from its actor thread). It may be created in one
    thread and handed to another, but not used in a child after fork(). Do
    not open the same directory twice in one process at the same time
    (LMDB's file locks would break); other processes may open it, e.g.
    read-only.

    Ownership. Pointers passed in are only read during the call; the store
    keeps no reference to keys, values or buffers. Values handed to a scan
    callback point into the map and are valid only during that call.
*/
#ifndef AMI_STORE_H_INCLUDED
#define AMI_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_store_t ami_store_t;
typedef struct _ami_store_batch_t ami_store_batch_t;

/*  Flags for ami_store_new. */
#define AMI_STORE_NOSYNC    0x01    /* no fsync at commit: a commit survives a
                                       process crash but not an OS crash or
                                       power loss. Tests and benchmarks only. */
#define AMI_STORE_RDONLY    0x02    /* open read-only: never creates the
                                       directory, a file or a database */

/*  Flags for ami_store_put and ami_store_batch_put. */
#define AMI_STORE_NOOVERWRITE 0x10  /* keep the existing value: AMI_E_EXISTS */

/*  Map size used when ami_store_new is given 0: 1 GiB, about 23 M readings
    at the 46 bytes per reading measured in DESIGN.md section 8. */
#define AMI_STORE_DEFAULT_MAP_SIZE  ((size_t) 1 << 30)

/*  Named databases allowed when ami_store_new is given max_dbs 0. */
#define AMI_STORE_DEFAULT_MAX_DBS   16

/*  Open (and unless AMI_STORE_RDONLY, create) the store in directory dir.
    Missing directories on the path are created with mode 0700; an existing
    directory keeps its mode. The data file is created with mode 0600.

    map_size is the largest the data file may grow to, in bytes (it reserves
    address space, not disk); it is rounded up to a whole number of OS pages,
    0 means AMI_STORE_DEFAULT_MAP_SIZE. LMDB silently raises a size below
    the data already stored to that size, and never goes below 2 pages (the
    meta pages). A named database with one record needs a few pages more
    (16 KiB cannot hold one); 64 KiB holds about 240 readings of 24 bytes
    put one per transaction.
    max_dbs is the number of named databases the store may hold (0 means
    AMI_STORE_DEFAULT_MAX_DBS); each slot costs a little in every
    transaction, so keep it small. flags is 0 (durable, read-write) or a
    combination of AMI_STORE_NOSYNC and AMI_STORE_RDONLY.

    Returns a new store, or NULL on failure with *err (if err is not NULL)
    set to AMI_E_IO (directory or file cannot be created or opened: ENOTDIR,
    EACCES, ENOENT on a read-only open...), AMI_E_NOMEM or AMI_E_STORAGE
    (e.g. the file is not an LMDB file). The failure is logged. */
ami_store_t *
    ami_store_new (const char *dir, size_t map_size, unsigned max_dbs,
                   int flags, int *err);

/*  Close the store and free it; set *self_p to NULL. Does nothing if
    self_p or *self_p is NULL. Must not be called from inside a scan
    callback. A batch still open is aborted (its puts are lost, a warning is
    logged); the caller still owns that batch and must pass it to
    ami_store_batch_abort to free it. */
void
    ami_store_destroy (ami_store_t **self_p);

/*  Open the named database, creating it if missing (unless the store is
    read-only), and store its handle in *dbi_out. Handles are cached: the
    same name always gives the same handle, which stays valid until the
    store is destroyed; there is no close. Names are compared exactly, are
    at most ami_store_max_key () bytes long and must not be empty.

    Creating a database is a durable write transaction: open databases at
    start-up, before any batch (while a batch is open, a name not yet
    opened gives AMI_E_BUSY).

    Returns AMI_OK; AMI_E_NOTFOUND (read-only store, no such database);
    AMI_E_LIMIT (max_dbs databases already open, or name too long);
    AMI_E_BAD_REQUEST (empty name); AMI_E_BUSY; AMI_E_MAP_FULL;
    AMI_E_NOMEM; AMI_E_IO; AMI_E_STORAGE. */
int
    ami_store_db (ami_store_t *self, const char *name, unsigned *dbi_out);

/*  Store val under key in database dbi in a transaction of its own, durable
    when this returns AMI_OK (unless AMI_STORE_NOSYNC). An existing value is
    replaced, unless flags has AMI_STORE_NOOVERWRITE: then it is kept and
    AMI_E_EXISTS returned. flags is 0 or AMI_STORE_NOOVERWRITE.
    Keys are 1..ami_store_max_key () bytes; values 0 bytes to 4 GiB - 1
    (val may be NULL when vlen is 0).

    Returns AMI_OK; AMI_E_EXISTS; AMI_E_MAP_FULL (nothing was written; the
    store stays usable for reads and for smaller writes that fit);
    AMI_E_LIMIT; AMI_E_BAD_REQUEST (empty key, unknown dbi, read-only store);
    AMI_E_BUSY (a batch is open); AMI_E_NOMEM; AMI_E_IO; AMI_E_STORAGE. */
int
    ami_store_put (ami_store_t *self, unsigned dbi,
                   const void *key, size_t klen,
                   const void *val, size_t vlen, int flags);

/*  Copy the value stored under key into buf (capacity cap bytes) and set
    *vlen_out (if not NULL) to its length. buf may be NULL when cap is 0,
    which asks for the length only. Reads the last committed data.

    Returns AMI_OK; AMI_E_NOTFOUND (*vlen_out untouched); AMI_E_LIMIT when
    the value is longer than cap (*vlen_out is set to the length needed and
    buf is untouched; or the key is too long); AMI_E_BAD_REQUEST;
    AMI_E_NOMEM; AMI_E_STORAGE. */
int
    ami_store_get (ami_store_t *self, unsigned dbi,
                   const void *key, size_t klen,
                   void *buf, size_t cap, size_t *vlen_out);

/*  Delete key and its value in a transaction of its own (durable like
    ami_store_put). Returns AMI_OK; AMI_E_NOTFOUND (no such key, nothing
    written); the other codes of ami_store_put. */
int
    ami_store_del (ami_store_t *self, unsigned dbi,
                   const void *key, size_t klen);

/*  Scan callback: called once per key in order. key/val point into the
    store's map and are valid only during this call (copy what you keep).
    Return 0 to continue, non-zero to stop the scan. */
typedef int (ami_store_scan_fn) (const void *key, size_t klen,
                                 const void *val, size_t vlen, void *arg);

/*  Call fn for every key k of database dbi with from <= k <= to (bytewise,
    both ends inclusive), in ascending key order, or descending if reverse
    is true. from NULL means no lower bound, to NULL no upper bound (from_len
    and to_len are then ignored). A zero-length from is also no lower bound;
    a zero-length to matches nothing (no key is that small). from > to
    matches nothing. reverse walks from the top down: "the last N readings
    of a meter" is a reverse scan whose fn stops after N calls.

    The whole scan sees one snapshot (one read transaction). fn may call
    other functions of this store: reads see the same snapshot, writes (put,
    del, batch) are allowed but not seen by the scan in progress. A database
    first opened inside fn cannot be read there (AMI_E_STORAGE) until the
    scan returns: open databases at start-up.

    Returns AMI_OK when every key in range was visited or fn stopped the
    scan (there is no separate code for "stopped"); AMI_E_LIMIT (a bound
    longer than ami_store_max_key ()); AMI_E_BAD_REQUEST (unknown dbi);
    AMI_E_NOMEM; AMI_E_STORAGE. */
int
    ami_store_scan (ami_store_t *self, unsigned dbi,
                    const void *from, size_t from_len,
                    const void *to, size_t to_len, bool reverse,
                    ami_store_scan_fn *fn, void *arg);

/*  Set *entries to the number of keys in database dbi (committed data).
    Returns AMI_OK; AMI_E_BAD_REQUEST (unknown dbi); AMI_E_NOMEM;
    AMI_E_STORAGE. */
int
    ami_store_count (ami_store_t *self, unsigned dbi, size_t *entries);

/*  Set *map_size (if not NULL) to the current map size in bytes, and
    *used_bytes (if not NULL) to the bytes of the data file in use: pages
    up to the last one used, times the page size, which counts the LMDB
    meta pages, branch pages and free pages kept for reuse. used_bytes /
    entries is the "bytes per reading" of DESIGN.md section 8.
    Returns AMI_OK or AMI_E_STORAGE. */
int
    ami_store_info (ami_store_t *self, size_t *map_size, size_t *used_bytes);

/*  Longest key this store accepts, in bytes (LMDB's build-time limit:
    511 for the stock library). Never fails. */
size_t
    ami_store_max_key (ami_store_t *self);

/*  Text of the most recent failure of any call on this store, e.g.
    "put on db 'readings': MDB_MAP_FULL: Environment mapsize limit reached".
    Empty string if no call has failed yet; a success does not clear it.
    Never NULL. The string belongs to the store and is overwritten by the
    next failure. */
const char *
    ami_store_last_error (ami_store_t *self);

/*  Begin a batch: one write transaction for many puts, committed (one
    fsync) by ami_store_batch_commit. At most one batch per store at a time
    (see "Transactions"). Returns the batch, owned by the caller until
    passed to ami_store_batch_commit or ami_store_batch_abort; or NULL with
    *err (if not NULL) set to AMI_E_BUSY (a batch is already open),
    AMI_E_BAD_REQUEST (read-only store), AMI_E_NOMEM, AMI_E_IO or
    AMI_E_STORAGE. Keep batches short: a batch holds LMDB's single writer
    lock (other processes' writers wait), and nothing in it is durable
    until it commits. */
ami_store_batch_t *
    ami_store_batch_begin (ami_store_t *self, int *err);

/*  Add a put to the batch. Arguments and flags as for ami_store_put.

    AMI_E_EXISTS (NOOVERWRITE, key present in the store or earlier in this
    batch), AMI_E_LIMIT and AMI_E_BAD_REQUEST affect only this put: the
    batch stays usable. Any other error (AMI_E_MAP_FULL above all, also
    AMI_E_NOMEM, AMI_E_IO, AMI_E_STORAGE) FAILS THE BATCH: LMDB has
    poisoned the transaction, every later put returns the same code without
    doing anything, and ami_store_batch_commit refuses (aborts) and returns
    it. None of the batch is then stored; the caller retries the readings
    after fixing the cause (for AMI_E_MAP_FULL: a larger map size), or in
    smaller batches. */
int
    ami_store_batch_put (ami_store_batch_t *self, unsigned dbi,
                         const void *key, size_t klen,
                         const void *val, size_t vlen, int flags);

/*  Number of puts that succeeded in this batch so far (AMI_E_EXISTS and
    other refused puts are not counted; after the batch has failed, this
    still counts the puts made before, none of which will be stored). */
size_t
    ami_store_batch_count (ami_store_batch_t *self);

/*  Commit the batch, free it and set *self_p to NULL, whatever the
    outcome (*self_p must not be NULL). On AMI_OK every successful put of
    the batch is stored, durably unless AMI_STORE_NOSYNC. On any error none
    of them is: AMI_E_MAP_FULL
    (from a put earlier, or from the commit itself), AMI_E_NOMEM, AMI_E_IO,
    AMI_E_STORAGE, or AMI_E_BAD_REQUEST if its store was destroyed first. */
int
    ami_store_batch_commit (ami_store_batch_t **self_p);

/*  Discard the batch (nothing of it is stored), free it and set *self_p to
    NULL. Does nothing if self_p or *self_p is NULL. */
void
    ami_store_batch_abort (ami_store_batch_t **self_p);

#ifdef __cplusplus
}
#endif

#endif
