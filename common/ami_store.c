/*  ami_store.c - LMDB store wrapper (the contract is in ami_store.h).

    Design. One ami_store_t wraps one MDB_env. Named databases are opened
    once and cached in a small table (name, handle); the table doubles as
    the check that a dbi passed in was opened here, and gives the name for
    log lines.

    Reads reuse one cached read-only transaction: mdb_txn_renew at the start
    of a read, mdb_txn_reset at the end. That avoids a malloc and a reader
    table lock per get, and a reset transaction pins no snapshot. Reads nest
    (a scan callback may call get): read_depth counts the users of the live
    snapshot, and only the outermost one resets it.

    Writes are either one transaction per put/del, or a batch that holds the
    environment's single write transaction until commit or abort. Because
    the write lock is held by this very thread while a batch is open, any
    other write through the store would deadlock; it gets AMI_E_BUSY.

    The environment is opened with MDB_NOTLS, for two reasons: the actor
    thread reads (a read transaction) while its batch (the write
    transaction) is open, which LMDB allows in one thread only with
    MDB_NOTLS; and the cached read transaction keeps its reader slot when
    the store is created in one thread and used in another.

    A batch put that fails with anything but MDB_KEYEXIST (MAP_FULL above
    all) leaves LMDB's transaction in an error state in which it can only be
    aborted. The batch remembers that first error, returns it for every
    later put and makes commit abort instead, so a caller cannot mistake a
    partial batch for a stored one.
*/
#include "ami_store.h"
#include "ami_log.h"
#include "ami_err.h"

#include <assert.h>
#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <czmq.h>

_Static_assert (sizeof (MDB_dbi) == sizeof (unsigned), "MDB_dbi is exposed as unsigned");

#define AMI_STORE_OPEN_FLAGS   (AMI_STORE_NOSYNC | AMI_STORE_RDONLY)
#define AMI_STORE_PUT_FLAGS    (AMI_STORE_NOOVERWRITE)

//  LMDB stores a value's length in 32 bits (MDB_node.mn_lo/mn_hi).
#define S_MAX_VALUE            ((size_t) UINT32_MAX)

//  Long enough for "<op> on db '<511-byte name>': <LMDB text>" in the
//  usual case; longer text is truncated, never overflowed.
#define S_ERRBUF_SIZE          256

typedef struct {
    char *name;
    MDB_dbi dbi;
} s_db_entry_t;

/*  Errors logged per second per store (s_fail): enough to show what
    fails, few enough that a full disk does not also fill the log. */
#define S_ERROR_BURST   5

struct _ami_store_t {
    MDB_env *env;
    char *dir;
    int flags;                  //  AMI_STORE_NOSYNC | AMI_STORE_RDONLY
    size_t max_key;             //  mdb_env_get_maxkeysize
    s_db_entry_t *dbs;          //  opened databases, dbs_used of dbs_cap
    unsigned dbs_used;
    unsigned dbs_cap;
    MDB_txn *rtxn;              //  cached read txn, reset when not in use
    unsigned read_depth;        //  nested users of rtxn's current snapshot
    ami_store_batch_t *batch;   //  the open batch, if any
    char last_error [S_ERRBUF_SIZE];
    //  A store that fails (a full map or disk) fails every write of every
    //  request until it is fixed: its errors go through a limiter, so the
    //  log says it S_ERROR_BURST times a second, then how many it left out
    ami_log_limit_t error_limit;
};

struct _ami_store_batch_t {
    ami_store_t *store;         //  NULL once the store was destroyed
    MDB_txn *txn;
    size_t count;               //  successful puts
    int error;                  //  first error that failed the batch, or 0
};


//  --------------------------------------------------------------------------
//  Error handling

//  Map an LMDB return code (negative MDB_* or positive errno) to ami_err_t.
static int
s_map_rc (int rc)
{
    switch (rc) {
        case MDB_SUCCESS:     return AMI_OK;
        case MDB_MAP_FULL:    return AMI_E_MAP_FULL;
        case MDB_NOTFOUND:    return AMI_E_NOTFOUND;
        case MDB_KEYEXIST:    return AMI_E_EXISTS;
        case MDB_DBS_FULL:    return AMI_E_LIMIT;
        case MDB_BAD_VALSIZE: return AMI_E_LIMIT;
        case ENOMEM:          return AMI_E_NOMEM;
        case EINVAL:          return AMI_E_STORAGE;
        default:
            //  Any other positive value is an errno from the file system
            //  (EIO, ENOSPC, EACCES, ENOENT...); LMDB's own codes are negative.
            return rc > 0 ? AMI_E_IO : AMI_E_STORAGE;
    }
}

//  Record a failure: format it into last_error, log it if log is true, and
//  return code (so callers can `return s_fail (...)`).
static int
s_fail (ami_store_t *self, int code, bool log, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

static int
s_fail (ami_store_t *self, int code, bool log, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->last_error, sizeof self->last_error, fmt, args);
    va_end (args);
    if (log) {
        if (!self->error_limit.burst)
            self->error_limit.burst = S_ERROR_BURST;
        if (code == AMI_E_MAP_FULL)
            ami_log_error_limited (&self->error_limit, "ami_store",
                                   "%s (store %s): raise the store map size",
                                   self->last_error, self->dir);
        else
            ami_log_error_limited (&self->error_limit, "ami_store", "%s (store %s)",
                                   self->last_error, self->dir);
    }
    return code;
}

//  Record an LMDB failure of op on database db (NULL: no particular one);
//  NOTFOUND and KEYEXIST are ordinary outcomes and are not logged.
static int
s_fail_rc (ami_store_t *self, int rc, const char *op, const char *db)
{
    int code = s_map_rc (rc);
    bool log = code != AMI_E_NOTFOUND && code != AMI_E_EXISTS;
    if (db)
        return s_fail (self, code, log, "%s on db '%s': %s", op, db, mdb_strerror (rc));
    return s_fail (self, code, log, "%s: %s", op, mdb_strerror (rc));
}


//  --------------------------------------------------------------------------
//  Helpers

//  Name of an opened database, or NULL if this store did not open dbi.
static const char *
s_db_name (ami_store_t *self, MDB_dbi dbi)
{
    for (unsigned i = 0; i < self->dbs_used; i++)
        if (self->dbs [i].dbi == dbi)
            return self->dbs [i].name;
    return NULL;
}

//  Check the dbi, the key and (if check_val) the value of a call; returns
//  the database name in *db_p or a failure code.
static int
s_check_args (ami_store_t *self, const char *op, MDB_dbi dbi, size_t klen,
              bool check_val, size_t vlen, const char **db_p)
{
    const char *db = s_db_name (self, dbi);
    if (!db)
        return s_fail (self, AMI_E_BAD_REQUEST, true,
                       "%s: database handle %u was not opened by this store", op, dbi);
    *db_p = db;
    if (klen == 0)
        return s_fail (self, AMI_E_BAD_REQUEST, true, "%s on db '%s': empty key", op, db);
    if (klen > self->max_key)
        return s_fail (self, AMI_E_LIMIT, true, "%s on db '%s': key of %zu bytes, limit %zu",
                       op, db, klen, self->max_key);
    if (check_val && vlen > S_MAX_VALUE)
        return s_fail (self, AMI_E_LIMIT, true, "%s on db '%s': value of %zu bytes, limit %zu",
                       op, db, vlen, S_MAX_VALUE);
    return AMI_OK;
}

//  Writes other than through the open batch are refused (see file header).
//  db may be NULL for an operation on no particular database.
static int
s_check_writable (ami_store_t *self, const char *op, const char *db)
{
    const char *sep = db ? " on db '" : "";
    const char *end = db ? "'" : "";
    if (!db)
        db = "";
    if (self->flags & AMI_STORE_RDONLY)
        return s_fail (self, AMI_E_BAD_REQUEST, true,
                       "%s%s%s%s: store is read-only", op, sep, db, end);
    if (self->batch)
        return s_fail (self, AMI_E_BUSY, true,
                       "%s%s%s%s: a batch is open on this store; "
                       "commit or abort it first", op, sep, db, end);
    return AMI_OK;
}

//  Start using the cached read transaction (begin it the first time, renew
//  it after a reset). Nested calls share the live snapshot.
static int
s_read_begin (ami_store_t *self, MDB_txn **txn_p)
{
    if (self->read_depth == 0) {
        int rc;
        if (self->rtxn) {
            rc = mdb_txn_renew (self->rtxn);
            if (rc) {
                mdb_txn_abort (self->rtxn);
                self->rtxn = NULL;
            }
        }
        else {
            MDB_txn *txn = NULL;
            rc = mdb_txn_begin (self->env, NULL, MDB_RDONLY, &txn);
            if (rc == 0)
                self->rtxn = txn;
        }
        if (rc)
            return rc;
    }
    self->read_depth++;
    *txn_p = self->rtxn;
    return 0;
}

static void
s_read_end (ami_store_t *self)
{
    assert (self->read_depth > 0);
    if (--self->read_depth == 0)
        mdb_txn_reset (self->rtxn);
}

//  Create dir and any missing parent, mode 0700. Returns 0 or -1 with errno.
static int
s_mkdirs (const char *dir)
{
    if (*dir == '\0') {
        errno = ENOENT;
        return -1;
    }
    char *path = strdup (dir);
    if (!path)
        return -1;
    int error = 0;
    for (char *p = path + 1; !error; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir (path, 0700) != 0) {
            //  An existing directory may answer EACCES or EROFS rather than
            //  EEXIST (a parent we cannot write): only a missing one matters.
            int e = errno;
            struct stat st;
            if (e != EEXIST && !(stat (path, &st) == 0 && S_ISDIR (st.st_mode)))
                error = e;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    free (path);
    if (!error) {
        //  The last component may exist as something other than a directory.
        struct stat st;
        if (stat (dir, &st) != 0)
            return -1;
        if (!S_ISDIR (st.st_mode))
            error = ENOTDIR;
    }
    if (error) {
        errno = error;
        return -1;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Store

ami_store_t *
ami_store_new (const char *dir, size_t map_size, unsigned max_dbs, int flags, int *err)
{
    assert (dir);
    assert ((flags & ~AMI_STORE_OPEN_FLAGS) == 0);
    int code = AMI_OK;
    int rc;

    ami_store_t *self = calloc (1, sizeof *self);
    if (!self) {
        ami_log_error ("ami_store: out of memory opening store %s", dir);
        if (err)
            *err = AMI_E_NOMEM;
        return NULL;
    }
    self->flags = flags;
    self->dbs_cap = max_dbs ? max_dbs : AMI_STORE_DEFAULT_MAX_DBS;
    self->dir = strdup (dir);
    self->dbs = calloc (self->dbs_cap, sizeof *self->dbs);
    if (!self->dir || !self->dbs) {
        ami_log_error ("ami_store: out of memory opening store %s", dir);
        code = AMI_E_NOMEM;
        goto failed;
    }
    if (!(flags & AMI_STORE_RDONLY) && s_mkdirs (dir) != 0) {
        int e = errno;
        code = s_fail (self, e == ENOMEM ? AMI_E_NOMEM : AMI_E_IO, true,
                       "cannot create store directory: %s", strerror (e));
        goto failed;
    }

    //  LMDB sizes the map in whole pages; round up so the size asked for
    //  is the size that can be filled.
    if (map_size == 0)
        map_size = AMI_STORE_DEFAULT_MAP_SIZE;
    long page = sysconf (_SC_PAGESIZE);
    size_t psize = page > 0 ? (size_t) page : 4096;
    if (map_size % psize && map_size <= SIZE_MAX - psize)
        map_size += psize - map_size % psize;

    rc = mdb_env_create (&self->env);
    if (rc) {
        self->env = NULL;
        code = s_fail_rc (self, rc, "mdb_env_create", NULL);
        goto failed;
    }
    rc = mdb_env_set_mapsize (self->env, map_size);
    if (rc == 0)
        rc = mdb_env_set_maxdbs (self->env, self->dbs_cap);
    if (rc) {
        code = s_fail_rc (self, rc, "configure environment", NULL);
        goto failed;
    }
    unsigned env_flags = MDB_NOTLS;     //  why: see the file header
    if (flags & AMI_STORE_NOSYNC)
        env_flags |= MDB_NOSYNC;
    if (flags & AMI_STORE_RDONLY)
        env_flags |= MDB_RDONLY;
    rc = mdb_env_open (self->env, dir, env_flags, 0600);
    if (rc) {
        //  Any errno here is about the files (EACCES, ENOENT, ENOTDIR...).
        code = s_fail (self, rc > 0 && rc != ENOMEM ? AMI_E_IO : s_map_rc (rc), true,
                       "cannot open store: %s", mdb_strerror (rc));
        goto failed;
    }
    self->max_key = (size_t) mdb_env_get_maxkeysize (self->env);
    if (err)
        *err = AMI_OK;
    return self;

failed:
    if (err)
        *err = code;
    ami_store_destroy (&self);
    return NULL;
}

void
ami_store_destroy (ami_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ami_store_t *self = *self_p;
    assert (self->read_depth == 0);     //  not from inside a scan callback
    if (self->batch) {
        ami_log_warn ("ami_store: store %s destroyed with a batch open: "
                      "%zu puts discarded", self->dir, self->batch->count);
        mdb_txn_abort (self->batch->txn);
        self->batch->txn = NULL;
        self->batch->store = NULL;      //  orphaned: the owner frees it
        self->batch = NULL;
    }
    if (self->rtxn)
        mdb_txn_abort (self->rtxn);
    if (self->env)
        mdb_env_close (self->env);
    if (self->dbs)
        for (unsigned i = 0; i < self->dbs_used; i++)
            free (self->dbs [i].name);
    free (self->dbs);
    free (self->dir);
    free (self);
    *self_p = NULL;
}

int
ami_store_db (ami_store_t *self, const char *name, unsigned *dbi_out)
{
    assert (self);
    assert (name);
    assert (dbi_out);
    for (unsigned i = 0; i < self->dbs_used; i++)
        if (strcmp (self->dbs [i].name, name) == 0) {
            *dbi_out = self->dbs [i].dbi;
            return AMI_OK;
        }
    size_t len = strlen (name);
    if (len == 0)
        return s_fail (self, AMI_E_BAD_REQUEST, true, "open db: empty database name");
    if (len > self->max_key)
        return s_fail (self, AMI_E_LIMIT, true, "open db '%.64s...': name of %zu bytes, limit %zu",
                       name, len, self->max_key);
    if (self->dbs_used == self->dbs_cap)
        return s_fail (self, AMI_E_LIMIT, true, "open db '%s': all %u database slots in use; "
                       "raise max_dbs", name, self->dbs_cap);
    bool rdonly = (self->flags & AMI_STORE_RDONLY) != 0;
    if (!rdonly && self->batch)
        return s_check_writable (self, "open db", name);    //  AMI_E_BUSY

    char *copy = strdup (name);
    if (!copy)
        return s_fail (self, AMI_E_NOMEM, true, "open db '%s': out of memory", name);

    //  The handle becomes usable by other transactions only once the
    //  transaction that opened it commits (also a read-only one).
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int rc = mdb_txn_begin (self->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open (txn, name, rdonly ? 0 : MDB_CREATE, &dbi);
        if (rc == 0)
            rc = mdb_txn_commit (txn);
        else
            mdb_txn_abort (txn);
    }
    if (rc) {
        free (copy);
        return s_fail_rc (self, rc, "open db", name);
    }
    self->dbs [self->dbs_used].name = copy;
    self->dbs [self->dbs_used].dbi = dbi;
    self->dbs_used++;
    *dbi_out = dbi;
    return AMI_OK;
}

int
ami_store_put (ami_store_t *self, unsigned dbi, const void *key, size_t klen,
               const void *val, size_t vlen, int flags)
{
    assert (self);
    assert (key || klen == 0);
    assert (val || vlen == 0);
    assert ((flags & ~AMI_STORE_PUT_FLAGS) == 0);
    const char *db;
    int code = s_check_args (self, "put", dbi, klen, true, vlen, &db);
    if (code == AMI_OK)
        code = s_check_writable (self, "put", db);
    if (code != AMI_OK)
        return code;

    MDB_txn *txn;
    int rc = mdb_txn_begin (self->env, NULL, 0, &txn);
    if (rc)
        return s_fail_rc (self, rc, "put", db);
    MDB_val k = { klen, (void *) key };
    MDB_val v = { vlen, vlen ? (void *) val : (void *) "" };
    rc = mdb_put (txn, dbi, &k, &v, (flags & AMI_STORE_NOOVERWRITE) ? MDB_NOOVERWRITE : 0);
    if (rc) {
        mdb_txn_abort (txn);
        return s_fail_rc (self, rc, "put", db);
    }
    rc = mdb_txn_commit (txn);      //  frees txn whatever the outcome
    if (rc)
        return s_fail_rc (self, rc, "put: commit", db);
    return AMI_OK;
}

int
ami_store_get (ami_store_t *self, unsigned dbi, const void *key, size_t klen,
               void *buf, size_t cap, size_t *vlen_out)
{
    assert (self);
    assert (key || klen == 0);
    assert (buf || cap == 0);
    const char *db;
    int code = s_check_args (self, "get", dbi, klen, false, 0, &db);
    if (code != AMI_OK)
        return code;

    MDB_txn *txn;
    int rc = s_read_begin (self, &txn);
    if (rc)
        return s_fail_rc (self, rc, "get", db);
    MDB_val k = { klen, (void *) key };
    MDB_val v;
    rc = mdb_get (txn, dbi, &k, &v);
    if (rc == 0) {
        if (vlen_out)
            *vlen_out = v.mv_size;
        if (v.mv_size > cap)
            code = s_fail (self, AMI_E_LIMIT, false, "get on db '%s': value of %zu bytes, "
                           "buffer of %zu", db, v.mv_size, cap);
        else
        if (v.mv_size)
            memcpy (buf, v.mv_data, v.mv_size);
    }
    else
        code = s_fail_rc (self, rc, "get", db);
    s_read_end (self);
    return code;
}

int
ami_store_del (ami_store_t *self, unsigned dbi, const void *key, size_t klen)
{
    assert (self);
    assert (key || klen == 0);
    const char *db;
    int code = s_check_args (self, "del", dbi, klen, false, 0, &db);
    if (code == AMI_OK)
        code = s_check_writable (self, "del", db);
    if (code != AMI_OK)
        return code;

    MDB_txn *txn;
    int rc = mdb_txn_begin (self->env, NULL, 0, &txn);
    if (rc)
        return s_fail_rc (self, rc, "del", db);
    MDB_val k = { klen, (void *) key };
    rc = mdb_del (txn, dbi, &k, NULL);
    if (rc) {
        mdb_txn_abort (txn);
        return s_fail_rc (self, rc, "del", db);
    }
    rc = mdb_txn_commit (txn);
    if (rc)
        return s_fail_rc (self, rc, "del: commit", db);
    return AMI_OK;
}

//  Position the cursor on the first key of the walk; returns an LMDB code
//  (MDB_NOTFOUND when the range is empty at that end).
static int
s_scan_first (MDB_cursor *cur, MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v,
              const MDB_val *lo, const MDB_val *hi, bool reverse)
{
    if (!reverse) {
        if (!lo)
            return mdb_cursor_get (cur, k, v, MDB_FIRST);
        *k = *lo;
        return mdb_cursor_get (cur, k, v, MDB_SET_RANGE);
    }
    if (!hi)
        return mdb_cursor_get (cur, k, v, MDB_LAST);
    //  SET_RANGE finds the smallest key >= hi: step back one if it is
    //  above hi; if every key is below hi, start from the last.
    *k = *hi;
    int rc = mdb_cursor_get (cur, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        return mdb_cursor_get (cur, k, v, MDB_LAST);
    if (rc == 0 && mdb_cmp (txn, dbi, k, hi) > 0)
        return mdb_cursor_get (cur, k, v, MDB_PREV);
    return rc;
}

int
ami_store_scan (ami_store_t *self, unsigned dbi,
                const void *from, size_t from_len,
                const void *to, size_t to_len, bool reverse,
                ami_store_scan_fn *fn, void *arg)
{
    assert (self);
    assert (fn);
    const char *db = s_db_name (self, dbi);
    if (!db)
        return s_fail (self, AMI_E_BAD_REQUEST, true,
                       "scan: database handle %u was not opened by this store", dbi);
    if ((from && from_len > self->max_key) || (to && to_len > self->max_key))
        return s_fail (self, AMI_E_LIMIT, true, "scan on db '%s': bound longer than %zu bytes",
                       db, self->max_key);
    if (to && to_len == 0)
        return AMI_OK;          //  no key is <= the empty key
    MDB_val lo = { from_len, (void *) from };
    MDB_val hi = { to_len, (void *) to };
    const MDB_val *lo_p = from && from_len ? &lo : NULL;
    const MDB_val *hi_p = to ? &hi : NULL;

    MDB_txn *txn;
    int rc = s_read_begin (self, &txn);
    if (rc)
        return s_fail_rc (self, rc, "scan", db);
    MDB_cursor *cur;
    rc = mdb_cursor_open (txn, dbi, &cur);
    if (rc) {
        s_read_end (self);
        return s_fail_rc (self, rc, "scan", db);
    }
    MDB_val k, v;
    rc = s_scan_first (cur, txn, dbi, &k, &v, lo_p, hi_p, reverse);
    while (rc == 0) {
        if (!reverse && hi_p && mdb_cmp (txn, dbi, &k, hi_p) > 0)
            break;
        if (reverse && lo_p && mdb_cmp (txn, dbi, &k, lo_p) < 0)
            break;
        if (fn (k.mv_data, k.mv_size, v.mv_data, v.mv_size, arg))
            break;
        rc = mdb_cursor_get (cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
    }
    mdb_cursor_close (cur);
    s_read_end (self);
    if (rc && rc != MDB_NOTFOUND)
        return s_fail_rc (self, rc, "scan", db);
    return AMI_OK;
}

int
ami_store_count (ami_store_t *self, unsigned dbi, size_t *entries)
{
    assert (self);
    assert (entries);
    const char *db = s_db_name (self, dbi);
    if (!db)
        return s_fail (self, AMI_E_BAD_REQUEST, true,
                       "count: database handle %u was not opened by this store", dbi);
    MDB_txn *txn;
    int rc = s_read_begin (self, &txn);
    if (rc)
        return s_fail_rc (self, rc, "count", db);
    MDB_stat st;
    rc = mdb_stat (txn, dbi, &st);
    s_read_end (self);
    if (rc)
        return s_fail_rc (self, rc, "count", db);
    *entries = st.ms_entries;
    return AMI_OK;
}

int
ami_store_info (ami_store_t *self, size_t *map_size, size_t *used_bytes)
{
    assert (self);
    MDB_envinfo info;
    MDB_stat st;
    int rc = mdb_env_info (self->env, &info);
    if (rc == 0)
        rc = mdb_env_stat (self->env, &st);
    if (rc)
        return s_fail_rc (self, rc, "info", NULL);
    if (map_size)
        *map_size = info.me_mapsize;
    //  Page numbers start at 0, so the file holds last_pgno + 1 pages.
    if (used_bytes)
        *used_bytes = ((size_t) info.me_last_pgno + 1) * st.ms_psize;
    return AMI_OK;
}

size_t
ami_store_max_key (ami_store_t *self)
{
    assert (self);
    return self->max_key;
}

const char *
ami_store_last_error (ami_store_t *self)
{
    assert (self);
    return self->last_error;
}


//  --------------------------------------------------------------------------
//  Batch

ami_store_batch_t *
ami_store_batch_begin (ami_store_t *self, int *err)
{
    assert (self);
    int code = s_check_writable (self, "batch begin", NULL);
    ami_store_batch_t *batch = NULL;
    if (code == AMI_OK) {
        batch = calloc (1, sizeof *batch);
        if (!batch)
            code = s_fail (self, AMI_E_NOMEM, true, "batch begin: out of memory");
    }
    if (code == AMI_OK) {
        int rc = mdb_txn_begin (self->env, NULL, 0, &batch->txn);
        if (rc) {
            free (batch);
            batch = NULL;
            code = s_fail_rc (self, rc, "batch begin", NULL);
        }
    }
    if (batch) {
        batch->store = self;
        self->batch = batch;
    }
    if (err)
        *err = code;
    return batch;
}

int
ami_store_batch_put (ami_store_batch_t *self, unsigned dbi,
                     const void *key, size_t klen,
                     const void *val, size_t vlen, int flags)
{
    assert (self);
    assert (key || klen == 0);
    assert (val || vlen == 0);
    assert ((flags & ~AMI_STORE_PUT_FLAGS) == 0);
    ami_store_t *store = self->store;
    if (!store) {
        ami_log_error ("ami_store: batch put after its store was destroyed");
        return AMI_E_BAD_REQUEST;
    }
    if (self->error)
        return self->error;
    const char *db;
    int code = s_check_args (store, "batch put", dbi, klen, true, vlen, &db);
    if (code != AMI_OK)
        return code;

    MDB_val k = { klen, (void *) key };
    MDB_val v = { vlen, vlen ? (void *) val : (void *) "" };
    int rc = mdb_put (self->txn, dbi, &k, &v,
                      (flags & AMI_STORE_NOOVERWRITE) ? MDB_NOOVERWRITE : 0);
    if (rc == 0) {
        self->count++;
        return AMI_OK;
    }
    code = s_fail_rc (store, rc, "batch put", db);
    //  MDB_NOOVERWRITE's KEYEXIST returns before LMDB changes anything, and
    //  the size errors were caught above; any other error has left the
    //  transaction unusable (MDB_TXN_ERROR), so the batch has failed.
    if (rc != MDB_KEYEXIST)
        self->error = code;
    return code;
}

size_t
ami_store_batch_count (ami_store_batch_t *self)
{
    assert (self);
    return self->count;
}

int
ami_store_batch_commit (ami_store_batch_t **self_p)
{
    assert (self_p);
    assert (*self_p);
    ami_store_batch_t *self = *self_p;
    ami_store_t *store = self->store;
    int code = AMI_OK;
    if (!store) {
        ami_log_error ("ami_store: batch commit after its store was destroyed");
        code = AMI_E_BAD_REQUEST;
    }
    else {
        store->batch = NULL;
        if (self->error) {
            mdb_txn_abort (self->txn);
            code = s_fail (store, self->error, true,
                           "batch commit refused: the batch failed earlier (%s); "
                           "%zu puts discarded", ami_errname (self->error), self->count);
        }
        else {
            int rc = mdb_txn_commit (self->txn);    //  frees txn either way
            if (rc)
                code = s_fail_rc (store, rc, "batch commit", NULL);
        }
    }
    free (self);
    *self_p = NULL;
    return code;
}

void
ami_store_batch_abort (ami_store_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ami_store_batch_t *self = *self_p;
    if (self->store) {
        self->store->batch = NULL;
        mdb_txn_abort (self->txn);
    }
    free (self);
    *self_p = NULL;
}
