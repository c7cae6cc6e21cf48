/*  ami_mdms_audit.c - the hash-chained audit log (see ami_mdms_audit.h).

    Design. A keyed hash chain (the pattern of tamper-evident logs such as
    Schneier-Kelsey secure audit logs, with a fixed key rather than an
    evolving one): every entry's hash covers its predecessor's hash, so
    changing, dropping or moving any stored entry breaks a link that only
    the holder of the audit key can mend. The entry bytes are hashed
    exactly as stored, never re-encoded, so verification needs no
    canonical form. Keys are big-endian sequence numbers: the log is one
    forward cursor walk, the tail one reverse step, and a time search a
    binary search over point reads (time_ms never decreases).

    The encoder is msgpack-c's packer (smallest encodings); the decoder is
    a small strict reader of exactly those forms, allocation-free, because
    the database file is input too (SEC-VAL-1).

    The anchor against truncation is the external-checkpoint half of the
    same pattern (a MACed head kept where the log's attacker is not: the
    "trusted checkpoint" of tamper-evident logs), written with the classic
    atomic replace (temp file, fdatasync, rename, fsync of the directory)
    so a crash leaves the old anchor or the new one, never half of one.
*/
#include "ami_mdms_audit.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ami_err.h"
#include "ami_log.h"

/*  Fields of E. */
#define S_FIELDS        8

struct _ami_mdms_audit_t {
    ami_store_t *store;
    unsigned dbi;
    uint8_t key [crypto_generichash_KEYBYTES];
    uint64_t last_seq;
    uint64_t last_time;
    uint8_t last_hash [AMI_HASH_SIZE];
    bool tail_ok;
    //  Entries staged in a caller's batch, waiting for settle: the tip
    //  of the chain as it will be once that batch commits
    bool staged;
    uint64_t staged_seq;
    uint64_t staged_time;
    uint8_t staged_hash [AMI_HASH_SIZE];
    //  The anchor (NULL path: none open)
    char *anchor_path;
    char *anchor_tmp;                   /* anchor_path + ".tmp" */
    char *anchor_dir;                   /* its directory, fsync'ed after a rename */
    uint8_t anchor_key [crypto_generichash_KEYBYTES];
    uint64_t anchored_seq;              /* what the file last written says */
    uint8_t anchored_hash [AMI_HASH_SIZE];
    bool anchor_written;                /* a write succeeded since open */
    int64_t anchor_written_at;          /* zclock_mono of the last write (attempt) */
    bool anchor_dirty;                  /* a finding changed: write even if the head did not */
    bool anchor_failing;                /* the last write failed (logged once) */
    char anchor_text [AMI_MDMS_AUDIT_ANCHOR_MAX];   /* the bytes last written */
    size_t anchor_len;
    //  Findings carried in every anchor
    uint64_t cut_first, cut_last;       /* truncated range, 0 0 = none */
    bool lost_missing, lost_forged;     /* the anchor was found missing / forged */
};

static int
    s_anchor_write (ami_mdms_audit_t *self);

/*  Anchor file lines (the layout in ami_mdms_audit.h). */
#define S_ANCHOR_MAGIC      "ami-audit-anchor 1\n"
#define S_ANCHOR_LINES      7


/* ---------------------------------------------------------------------- */
/*  Layout                                                                  */

static void
s_put_be64 (uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p [i] = (uint8_t) (v & 0xff);
        v >>= 8;
    }
}

static uint64_t
s_get_be64 (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p [i];
    return v;
}

static bool
s_id_chars (const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s [i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
           || c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static bool
s_text_ok (const char *s, size_t min, size_t max)
{
    size_t n = strnlen (s, max + 1);
    return n >= min && n <= max && s_id_chars (s, n);
}

typedef struct {
    uint8_t *buf;
    size_t len;
    bool full;
} s_writer_t;

static int
s_write (void *data, const char *buf, size_t len)
{
    s_writer_t *w = (s_writer_t *) data;
    if (w->full || len > AMI_MDMS_AUDIT_ENTRY_MAX - w->len) {
        w->full = true;
        return -1;
    }
    memcpy (w->buf + w->len, buf, len);
    w->len += len;
    return 0;
}

size_t
ami_mdms_audit_encode (const ami_audit_row_t *e, uint8_t *out)
{
    assert (e && out);
    if (e->seq < 1
    ||  !s_text_ok (e->operator_id, 1, AMI_MAX_ID)
    ||  !s_text_ok (e->role, 1, AMI_MAX_ROLE)
    ||  !s_text_ok (e->meter_id, 0, AMI_MAX_ID))
        return 0;
    s_writer_t w = { out, 0, false };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &w, s_write);
    size_t op = strlen (e->operator_id), role = strlen (e->role), meter = strlen (e->meter_id);
    msgpack_pack_array (&pk, S_FIELDS);
    msgpack_pack_uint64 (&pk, e->seq);
    msgpack_pack_uint64 (&pk, e->time_ms);
    msgpack_pack_str (&pk, op);
    msgpack_pack_str_body (&pk, e->operator_id, op);
    msgpack_pack_str (&pk, role);
    msgpack_pack_str_body (&pk, e->role, role);
    msgpack_pack_uint8 (&pk, e->action);
    msgpack_pack_str (&pk, meter);
    if (meter)
        msgpack_pack_str_body (&pk, e->meter_id, meter);
    msgpack_pack_bin (&pk, AMI_REQUEST_ID_SIZE);
    msgpack_pack_bin_body (&pk, e->corr, AMI_REQUEST_ID_SIZE);
    msgpack_pack_uint16 (&pk, e->result);
    return w.full ? 0 : w.len;
}

/*  Strict reader of the msgpack forms the packer emits. */
typedef struct {
    const uint8_t *p;
    size_t n;
    size_t pos;
} s_reader_t;

static bool
s_take (s_reader_t *r, size_t len, const uint8_t **out)
{
    if (len > r->n - r->pos)
        return false;
    *out = r->p + r->pos;
    r->pos += len;
    return true;
}

static bool
s_uint (s_reader_t *r, uint64_t max, uint64_t *v)
{
    const uint8_t *b;
    if (!s_take (r, 1, &b))
        return false;
    size_t size = 0;
    if (*b <= 0x7f) {
        *v = *b;
        return *v <= max;
    }
    switch (*b) {
        case 0xcc: size = 1; break;
        case 0xcd: size = 2; break;
        case 0xce: size = 4; break;
        case 0xcf: size = 8; break;
        default:   return false;
    }
    if (!s_take (r, size, &b))
        return false;
    *v = 0;
    for (size_t i = 0; i < size; i++)
        *v = (*v << 8) | b [i];
    return *v <= max;
}

static bool
s_str (s_reader_t *r, char *out, size_t min, size_t max)
{
    const uint8_t *b;
    if (!s_take (r, 1, &b))
        return false;
    size_t len;
    if ((*b & 0xe0) == 0xa0)
        len = *b & 0x1f;
    else
    if (*b == 0xd9) {
        if (!s_take (r, 1, &b))
            return false;
        len = *b;
    }
    else
        return false;
    if (len < min || len > max || !s_take (r, len, &b) || !s_id_chars ((const char *) b, len))
        return false;
    memcpy (out, b, len);
    out [len] = 0;
    return true;
}

int
ami_mdms_audit_parse (const void *val, size_t vlen, ami_audit_row_t *row)
{
    assert (row);
    memset (row, 0, sizeof *row);
    if (!val || vlen <= AMI_HASH_SIZE || vlen > AMI_MDMS_AUDIT_VALUE_MAX)
        return AMI_E_STORAGE;
    s_reader_t r = { (const uint8_t *) val, vlen - AMI_HASH_SIZE, 0 };
    const uint8_t *b;
    uint64_t action, result;
    bool ok = s_take (&r, 1, &b) && *b == (0x90 | S_FIELDS)
           && s_uint (&r, UINT64_MAX, &row->seq) && row->seq >= 1
           && s_uint (&r, UINT64_MAX, &row->time_ms)
           && s_str (&r, row->operator_id, 1, AMI_MAX_ID)
           && s_str (&r, row->role, 1, AMI_MAX_ROLE)
           && s_uint (&r, UINT8_MAX, &action)
           && s_str (&r, row->meter_id, 0, AMI_MAX_ID)
           && s_take (&r, 2, &b) && b [0] == 0xc4 && b [1] == AMI_REQUEST_ID_SIZE
           && s_take (&r, AMI_REQUEST_ID_SIZE, &b)
           && (memcpy (row->corr, b, AMI_REQUEST_ID_SIZE), true)
           && s_uint (&r, UINT16_MAX, &result)
           && r.pos == r.n;             //  nothing between E and H
    if (!ok)
        return AMI_E_STORAGE;
    row->action = (uint8_t) action;
    row->result = (uint16_t) result;
    memcpy (row->hash, (const uint8_t *) val + vlen - AMI_HASH_SIZE, AMI_HASH_SIZE);
    return AMI_OK;
}

/*  H = BLAKE2b-256_K (prev || E) */
static void
s_chain (const ami_mdms_audit_t *self, const uint8_t prev [AMI_HASH_SIZE],
         const uint8_t *e, size_t elen, uint8_t out [AMI_HASH_SIZE])
{
    crypto_generichash_state st;
    crypto_generichash_init (&st, self->key, sizeof self->key, AMI_HASH_SIZE);
    crypto_generichash_update (&st, prev, AMI_HASH_SIZE);
    crypto_generichash_update (&st, e, elen);
    crypto_generichash_final (&st, out, AMI_HASH_SIZE);
}


/* ---------------------------------------------------------------------- */
/*  Open: load and check the tail                                           */

typedef struct {
    uint64_t seq;
    uint8_t value [AMI_MDMS_AUDIT_VALUE_MAX];
    size_t vlen;
    bool found;
    bool bad_key;
} s_tail_t;

static int
s_tail_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_tail_t *ctx = (s_tail_t *) arg;
    ctx->found = true;
    if (klen != 8) {
        ctx->bad_key = true;
        return 1;
    }
    ctx->seq = s_get_be64 ((const uint8_t *) key);
    ctx->vlen = vlen < sizeof ctx->value ? vlen : sizeof ctx->value;
    memcpy (ctx->value, val, ctx->vlen);
    if (vlen > sizeof ctx->value)
        ctx->vlen = 0;                  //  too long to be an entry
    return 1;
}

/*  Load the stored hash (last 32 bytes) of entry seq; false if absent or
    too short. */
static bool
s_stored_hash (ami_mdms_audit_t *self, uint64_t seq, uint8_t hash [AMI_HASH_SIZE])
{
    uint8_t key [8], value [AMI_MDMS_AUDIT_VALUE_MAX];
    size_t vlen = 0;
    s_put_be64 (key, seq);
    if (ami_store_get (self->store, self->dbi, key, sizeof key, value, sizeof value, &vlen)
    ||  vlen <= AMI_HASH_SIZE)
        return false;
    memcpy (hash, value + vlen - AMI_HASH_SIZE, AMI_HASH_SIZE);
    return true;
}

static int
s_load_tail (ami_mdms_audit_t *self)
{
    s_tail_t tail;
    memset (&tail, 0, sizeof tail);
    int rc = ami_store_scan (self->store, self->dbi, NULL, 0, NULL, 0, true, s_tail_row, &tail);
    if (rc)
        return rc;
    self->tail_ok = true;
    if (!tail.found) {
        ami_log_info ("audit log: empty, starting at seq 1");
        return AMI_OK;
    }
    if (tail.bad_key) {
        ami_log_error ("audit log: TAMPERED OR CORRUPT: the last key is not an 8-byte seq; "
                       "new entries cannot continue it");
        return AMI_E_STORAGE;
    }
    self->last_seq = tail.seq;
    ami_audit_row_t row;
    bool parsed = ami_mdms_audit_parse (tail.value, tail.vlen, &row) == AMI_OK;
    if (tail.vlen > AMI_HASH_SIZE)
        memcpy (self->last_hash, tail.value + tail.vlen - AMI_HASH_SIZE, AMI_HASH_SIZE);
    if (parsed)
        self->last_time = row.time_ms;
    //  Re-check the tail's link to its predecessor
    uint8_t prev [AMI_HASH_SIZE], expect [AMI_HASH_SIZE];
    memset (prev, 0, sizeof prev);
    bool linked = tail.seq == 1 || s_stored_hash (self, tail.seq - 1, prev);
    if (parsed && linked)
        s_chain (self, prev, tail.value, tail.vlen - AMI_HASH_SIZE, expect);
    if (!parsed || !linked || row.seq != tail.seq
    ||  sodium_memcmp (expect, self->last_hash, AMI_HASH_SIZE) != 0) {
        self->tail_ok = false;
        ami_log_error ("audit log: TAMPERED: the last entry (seq %llu) does not verify "
                       "(%s); appending continues, run the audit verify action",
                       (unsigned long long) tail.seq,
                       !parsed ? "does not decode" : !linked ? "its predecessor is missing"
                       : row.seq != tail.seq ? "it carries another seq" : "hash mismatch");
    }
    size_t entries = 0;
    if (ami_store_count (self->store, self->dbi, &entries) == AMI_OK && entries != tail.seq) {
        self->tail_ok = false;
        ami_log_error ("audit log: TAMPERED: %zu entries stored, the last is seq %llu; "
                       "run the audit verify action", entries, (unsigned long long) tail.seq);
    }
    char hex [2 * AMI_HASH_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, self->last_hash, AMI_HASH_SIZE);
    //  An anchor outside the database: truncation shows against it
    ami_log_info ("audit log: last seq %llu hash %s", (unsigned long long) self->last_seq, hex);
    return AMI_OK;
}

ami_mdms_audit_t *
ami_mdms_audit_new (ami_store_t *store, const uint8_t data_key [32], int *err)
{
    assert (store && data_key);
    int rc = AMI_E_NOMEM;
    ami_mdms_audit_t *self = (ami_mdms_audit_t *) calloc (1, sizeof *self);
    if (!self || sodium_init () < 0)
        goto failed;
    self->store = store;
    //  crypto_kdf wants exactly 8 context bytes ("AMIaudit")
    static_assert (sizeof AMI_MDMS_AUDIT_KDF_CTX - 1 == crypto_kdf_CONTEXTBYTES,
                   "kdf context is 8 bytes");
    if (crypto_kdf_derive_from_key (self->key, sizeof self->key, AMI_MDMS_AUDIT_KDF_ID,
                                    AMI_MDMS_AUDIT_KDF_CTX, data_key) != 0) {
        rc = AMI_E_INTERNAL;
        goto failed;
    }
    static_assert (sizeof AMI_MDMS_AUDIT_ANCHOR_KDF_CTX - 1 == crypto_kdf_CONTEXTBYTES,
                   "kdf context is 8 bytes");
    if (crypto_kdf_derive_from_key (self->anchor_key, sizeof self->anchor_key,
                                    AMI_MDMS_AUDIT_ANCHOR_KDF_ID, AMI_MDMS_AUDIT_ANCHOR_KDF_CTX,
                                    data_key) != 0) {
        rc = AMI_E_INTERNAL;
        goto failed;
    }
    if ((rc = ami_store_db (store, AMI_MDMS_AUDIT_DB, &self->dbi)))
        goto failed;
    if ((rc = s_load_tail (self)))
        goto failed;
    return self;
failed:
    if (err)
        *err = rc;
    ami_log_error ("audit log: cannot open: %s", ami_strerror (rc));
    ami_mdms_audit_destroy (&self);
    return NULL;
}

void
ami_mdms_audit_destroy (ami_mdms_audit_t **self_p)
{
    assert (self_p);
    ami_mdms_audit_t *self = *self_p;
    if (self) {
        //  The stop: the anchor records the final committed head, now
        //  (not after a failed open: the MDMS did not start)
        if (self->anchor_path && self->anchor_written
        &&  (self->anchor_dirty || self->anchored_seq != self->last_seq))
            s_anchor_write (self);
        if (self->last_seq) {
            char hex [2 * AMI_HASH_SIZE + 1];
            sodium_bin2hex (hex, sizeof hex, self->last_hash, AMI_HASH_SIZE);
            ami_log_info ("audit log closed: last seq %llu hash %s (anchor %s: seq %llu)",
                          (unsigned long long) self->last_seq, hex,
                          self->anchor_path ? self->anchor_path : "none",
                          (unsigned long long) self->anchored_seq);
        }
        sodium_memzero (self->key, sizeof self->key);
        sodium_memzero (self->anchor_key, sizeof self->anchor_key);
        free (self->anchor_path);
        free (self->anchor_tmp);
        free (self->anchor_dir);
        free (self);
        *self_p = NULL;
    }
}


/* ---------------------------------------------------------------------- */
/*  Append                                                                  */

/*  Build the next entry's key and value; fills *out. */
static int
s_build (ami_mdms_audit_t *self, const ami_audit_row_t *entry, ami_audit_row_t *out,
         uint8_t key [8], uint8_t *value, size_t *vlen)
{
    //  Chain onto the staged tip when entries are staged, else the tail
    uint64_t tip_seq = self->staged ? self->staged_seq : self->last_seq;
    uint64_t tip_time = self->staged ? self->staged_time : self->last_time;
    const uint8_t *tip_hash = self->staged ? self->staged_hash : self->last_hash;
    *out = *entry;
    out->seq = tip_seq + 1;
    uint64_t now = (uint64_t) zclock_time ();
    out->time_ms = now > tip_time ? now : tip_time;
    size_t elen = ami_mdms_audit_encode (out, value);
    if (!elen) {
        ami_log_error ("audit log: entry with an invalid operator, role or meter id refused");
        return AMI_E_RANGE;
    }
    s_chain (self, tip_hash, value, elen, out->hash);
    memcpy (value + elen, out->hash, AMI_HASH_SIZE);
    *vlen = elen + AMI_HASH_SIZE;
    s_put_be64 (key, out->seq);
    return AMI_OK;
}

int
ami_mdms_audit_stage (ami_mdms_audit_t *self, ami_store_batch_t *batch,
                      const ami_audit_row_t *entry, ami_audit_row_t *out)
{
    assert (self && batch && entry);
    ami_audit_row_t built;
    uint8_t key [8], value [AMI_MDMS_AUDIT_VALUE_MAX];
    size_t vlen = 0;
    int rc = s_build (self, entry, &built, key, value, &vlen);
    if (rc == AMI_OK)
        //  NOOVERWRITE: a seq is written once; an existing key means the
        //  in-memory tail is behind the file (another writer): refuse
        rc = ami_store_batch_put (batch, self->dbi, key, sizeof key, value, vlen,
                                  AMI_STORE_NOOVERWRITE);
    if (rc == AMI_E_EXISTS)
        ami_log_error ("audit log: seq %llu already stored: another process writes this "
                       "database?", (unsigned long long) built.seq);
    if (rc)
        return rc;
    self->staged = true;
    self->staged_seq = built.seq;
    self->staged_time = built.time_ms;
    memcpy (self->staged_hash, built.hash, AMI_HASH_SIZE);
    if (out)
        *out = built;
    return AMI_OK;
}

void
ami_mdms_audit_settle (ami_mdms_audit_t *self, bool committed)
{
    assert (self);
    if (!self->staged)
        return;                         //  nothing was staged
    self->staged = false;
    if (committed) {
        self->last_seq = self->staged_seq;
        self->last_time = self->staged_time;
        memcpy (self->last_hash, self->staged_hash, AMI_HASH_SIZE);
    }
}

int
ami_mdms_audit_append (ami_mdms_audit_t *self, const ami_audit_row_t *entry,
                       ami_audit_row_t *out)
{
    assert (self && entry);
    assert (!self->staged);             //  settle the caller's batch first
    int rc = AMI_OK;
    ami_store_batch_t *batch = ami_store_batch_begin (self->store, &rc);
    if (!batch)
        return rc;
    rc = ami_mdms_audit_stage (self, batch, entry, out);
    if (rc) {
        ami_store_batch_abort (&batch);
        return rc;
    }
    rc = ami_store_batch_commit (&batch);
    ami_mdms_audit_settle (self, rc == AMI_OK);
    return rc;
}

uint64_t
ami_mdms_audit_last (ami_mdms_audit_t *self, uint8_t hash [AMI_HASH_SIZE])
{
    assert (self);
    if (hash)
        memcpy (hash, self->last_hash, AMI_HASH_SIZE);
    return self->last_seq;
}

bool
ami_mdms_audit_tail_ok (ami_mdms_audit_t *self)
{
    assert (self);
    return self->tail_ok;
}


/* ---------------------------------------------------------------------- */
/*  Page                                                                    */

typedef struct {
    uint64_t from_ms;
    ami_audit_row_t *rows;
    size_t limit;
    size_t count;
    bool more;
    int rc;
} s_page_t;

static int
s_page_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_page_t *ctx = (s_page_t *) arg;
    ami_audit_row_t row;
    if (klen != 8 || ami_mdms_audit_parse (val, vlen, &row) != AMI_OK) {
        ami_log_error ("audit log: entry at %s does not decode: run the audit verify action",
                       klen == 8 ? "a seq key" : "a malformed key");
        ctx->rc = AMI_E_STORAGE;
        return 1;
    }
    if (row.time_ms < ctx->from_ms)
        return 0;
    if (ctx->count == ctx->limit) {
        ctx->more = true;
        return 1;
    }
    //  the key is the entry's position: show that, even if E says otherwise
    row.seq = s_get_be64 ((const uint8_t *) key);
    ctx->rows [ctx->count++] = row;
    return 0;
}

/*  Time of entry seq, or false if it is absent or does not decode. */
static bool
s_time_of (ami_mdms_audit_t *self, uint64_t seq, uint64_t *time_ms)
{
    uint8_t key [8], value [AMI_MDMS_AUDIT_VALUE_MAX];
    size_t vlen = 0;
    ami_audit_row_t row;
    s_put_be64 (key, seq);
    if (ami_store_get (self->store, self->dbi, key, sizeof key, value, sizeof value, &vlen)
    ||  ami_mdms_audit_parse (value, vlen, &row))
        return false;
    *time_ms = row.time_ms;
    return true;
}

/*  First seq that may have time_ms >= from_ms: binary search over point
    reads (time never decreases). Any irregularity (a missing or corrupt
    entry) falls back to 1: the page filter is still exact, only slower. */
static uint64_t
s_time_search (ami_mdms_audit_t *self, uint64_t from_ms)
{
    uint64_t lo = 1, hi = self->last_seq + 1;     //  answer in [lo, hi]
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        uint64_t t = 0;
        if (!s_time_of (self, mid, &t))
            return 1;
        if (t < from_ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int
ami_mdms_audit_page (ami_mdms_audit_t *self, uint64_t from_ms, uint64_t after_seq,
                     size_t limit, ami_audit_row_t *rows, size_t *count, bool *more)
{
    assert (self && rows && count && more);
    uint64_t start = after_seq < UINT64_MAX ? after_seq + 1 : UINT64_MAX;
    if (from_ms && self->last_seq) {
        uint64_t found = s_time_search (self, from_ms);
        if (found > start)
            start = found;
    }
    uint8_t from [8];
    s_put_be64 (from, start);
    s_page_t ctx = { from_ms, rows, limit, 0, false, AMI_OK };
    int rc = ami_store_scan (self->store, self->dbi, from, sizeof from, NULL, 0, false,
                             s_page_row, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    *count = ctx.count;
    *more = ctx.more;
    return rc;
}


/* ---------------------------------------------------------------------- */
/*  The anchor                                                              */

/*  One parsed anchor file. */
typedef struct {
    uint64_t seq;
    uint8_t hash [AMI_HASH_SIZE];
    uint64_t time_ms;
    uint64_t cut_first, cut_last;
    bool lost_missing, lost_forged;
} s_anchor_t;

static char *
s_strcat2 (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    char *out = (char *) malloc (la + lb + 1);
    if (out) {
        memcpy (out, a, la);
        memcpy (out + la, b, lb + 1);
    }
    return out;
}

int
ami_mdms_audit_anchor_default (const char *db_dir, char *out, size_t cap)
{
    assert (out && cap);
    size_t len = db_dir ? strlen (db_dir) : 0;
    while (len > 1 && db_dir [len - 1] == '/')
        len--;
    if (!len || (len == 1 && db_dir [0] == '/'))
        return AMI_E_LIMIT;             //  no sibling of "" or of "/"
    int n = snprintf (out, cap, "%.*s%s", (int) len, db_dir, AMI_MDMS_AUDIT_ANCHOR_SUFFIX);
    return n < 0 || (size_t) n >= cap ? AMI_E_LIMIT : AMI_OK;
}

/*  Read the anchor file into buf (AMI_MDMS_AUDIT_ANCHOR_MAX + 1 bytes).
    Returns AMI_OK, AMI_E_NOTFOUND (no such file), AMI_E_STORAGE (not a
    regular file, a symlink, or too long: not an anchor), AMI_E_IO (it
    cannot be read: logged). */
static int
s_anchor_read (const char *path, uint8_t *buf, size_t *len)
{
    *len = 0;
    int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return AMI_E_NOTFOUND;
        if (errno == ELOOP)
            return AMI_E_STORAGE;       //  a symlink where the anchor should be
        ami_log_error ("audit anchor %s: cannot read: %s", path, strerror (errno));
        return AMI_E_IO;
    }
    struct stat st;
    int rc = AMI_OK;
    if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode))
        rc = AMI_E_STORAGE;
    while (rc == AMI_OK && *len <= AMI_MDMS_AUDIT_ANCHOR_MAX) {
        ssize_t got = read (fd, buf + *len, AMI_MDMS_AUDIT_ANCHOR_MAX + 1 - *len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            ami_log_error ("audit anchor %s: cannot read: %s", path, strerror (errno));
            rc = AMI_E_IO;
        }
        if (got <= 0)
            break;
        *len += (size_t) got;
    }
    close (fd);
    if (rc == AMI_OK && *len > AMI_MDMS_AUDIT_ANCHOR_MAX)
        rc = AMI_E_STORAGE;             //  too long to be an anchor
    return rc;
}

/*  The next line of [*p, end) must start with prefix; its value (after
    the prefix, before the LF) into *val, *vlen. */
static bool
s_line (const char **p, const char *end, const char *prefix, const char **val, size_t *vlen)
{
    size_t plen = strlen (prefix);
    const char *lf = (const char *) memchr (*p, '\n', (size_t) (end - *p));
    if (!lf || (size_t) (lf - *p) < plen || memcmp (*p, prefix, plen) != 0)
        return false;
    *val = *p + plen;
    *vlen = (size_t) (lf - *val);
    *p = lf + 1;
    return true;
}

/*  A decimal u64: 1..20 digits, no leading zero (but "0"), no overflow. */
static bool
s_dec (const char *s, size_t n, uint64_t *out)
{
    if (n < 1 || n > 20 || (n > 1 && s [0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s [i] < '0' || s [i] > '9')
            return false;
        uint64_t d = (uint64_t) (s [i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/*  Exactly 64 lower-case hex digits. */
static bool
s_hex32 (const char *s, size_t n, uint8_t out [AMI_HASH_SIZE])
{
    if (n != 2 * AMI_HASH_SIZE)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s [i] >= '0' && s [i] <= '9') || (s [i] >= 'a' && s [i] <= 'f')))
            return false;
    size_t bin = 0;
    return sodium_hex2bin (out, AMI_HASH_SIZE, s, n, NULL, &bin, NULL) == 0
        && bin == AMI_HASH_SIZE;
}

static void
s_anchor_mac (const ami_mdms_audit_t *self, const void *text, size_t len,
              uint8_t out [AMI_HASH_SIZE])
{
    crypto_generichash (out, AMI_HASH_SIZE, (const uint8_t *) text, len,
                        self->anchor_key, sizeof self->anchor_key);
}

/*  Parse and authenticate an anchor file. Returns AMI_OK, or
    AMI_E_BAD_SIGNATURE when the layout or the mac is wrong (*why says
    which, for the log). */
static int
s_anchor_parse (const ami_mdms_audit_t *self, const uint8_t *buf, size_t len,
                s_anchor_t *a, const char **why)
{
    memset (a, 0, sizeof *a);
    const char *p = (const char *) buf, *end = p + len;
    const char *v;
    size_t n;
    *why = "layout";
    size_t magic = strlen (S_ANCHOR_MAGIC);
    if (len < magic || memcmp (p, S_ANCHOR_MAGIC, magic) != 0)
        return AMI_E_BAD_SIGNATURE;
    p += magic;
    if (!s_line (&p, end, "seq ", &v, &n) || !s_dec (v, n, &a->seq)
    ||  !s_line (&p, end, "hash ", &v, &n) || !s_hex32 (v, n, a->hash)
    ||  !s_line (&p, end, "time ", &v, &n) || !s_dec (v, n, &a->time_ms)
    ||  !s_line (&p, end, "truncated ", &v, &n))
        return AMI_E_BAD_SIGNATURE;
    const char *space = (const char *) memchr (v, ' ', n);
    if (!space || !s_dec (v, (size_t) (space - v), &a->cut_first)
    ||  !s_dec (space + 1, n - (size_t) (space + 1 - v), &a->cut_last)
    ||  a->cut_first > a->cut_last || (a->cut_first == 0) != (a->cut_last == 0))
        return AMI_E_BAD_SIGNATURE;
    if (!s_line (&p, end, "anchor-lost ", &v, &n))
        return AMI_E_BAD_SIGNATURE;
    if (n == 4 && memcmp (v, "none", 4) == 0)
        ;
    else
    if (n == 7 && memcmp (v, "missing", 7) == 0)
        a->lost_missing = true;
    else
    if (n == 6 && memcmp (v, "forged", 6) == 0)
        a->lost_forged = true;
    else
    if (n == 14 && memcmp (v, "missing forged", 14) == 0)
        a->lost_missing = a->lost_forged = true;
    else
        return AMI_E_BAD_SIGNATURE;
    size_t signed_len = (size_t) (p - (const char *) buf);
    uint8_t mac [AMI_HASH_SIZE], expect [AMI_HASH_SIZE];
    if (!s_line (&p, end, "mac ", &v, &n) || !s_hex32 (v, n, mac) || p != end)
        return AMI_E_BAD_SIGNATURE;
    s_anchor_mac (self, buf, signed_len, expect);
    if (sodium_memcmp (mac, expect, AMI_HASH_SIZE) != 0) {
        *why = "mac";
        return AMI_E_BAD_SIGNATURE;
    }
    *why = NULL;
    return AMI_OK;
}

/*  Unite [first, last] with the recorded truncation. */
static void
s_cut (ami_mdms_audit_t *self, uint64_t first, uint64_t last)
{
    if (!first || first > last)
        return;
    if (!self->cut_first || first < self->cut_first) {
        self->cut_first = first;
        self->anchor_dirty = true;
    }
    if (last > self->cut_last) {
        self->cut_last = last;
        self->anchor_dirty = true;
    }
}

/*  The anchor text of the committed head and the findings. */
static size_t
s_anchor_format (const ami_mdms_audit_t *self, char out [AMI_MDMS_AUDIT_ANCHOR_MAX])
{
    char hex [2 * AMI_HASH_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, self->last_hash, AMI_HASH_SIZE);
    const char *lost = self->lost_missing && self->lost_forged ? "missing forged"
                     : self->lost_missing ? "missing" : self->lost_forged ? "forged" : "none";
    int n = snprintf (out, AMI_MDMS_AUDIT_ANCHOR_MAX,
                      S_ANCHOR_MAGIC "seq %llu\nhash %s\ntime %llu\ntruncated %llu %llu\n"
                      "anchor-lost %s\n", (unsigned long long) self->last_seq, hex,
                      (unsigned long long) zclock_time (),
                      (unsigned long long) self->cut_first, (unsigned long long) self->cut_last,
                      lost);
    assert (n > 0 && (size_t) n + 4 + 2 * AMI_HASH_SIZE + 1 < AMI_MDMS_AUDIT_ANCHOR_MAX);
    uint8_t mac [AMI_HASH_SIZE];
    s_anchor_mac (self, out, (size_t) n, mac);
    sodium_bin2hex (hex, sizeof hex, mac, AMI_HASH_SIZE);
    int m = snprintf (out + n, AMI_MDMS_AUDIT_ANCHOR_MAX - (size_t) n, "mac %s\n", hex);
    assert (m > 0);
    return (size_t) n + (size_t) m;
}

/*  Write the anchor atomically (temp, fdatasync, rename, fsync of the
    directory). Returns AMI_OK or AMI_E_IO (logged once per spell). */
static int
s_anchor_write (ami_mdms_audit_t *self)
{
    char text [AMI_MDMS_AUDIT_ANCHOR_MAX];
    size_t len = s_anchor_format (self, text);
    self->anchor_written_at = zclock_mono ();
    const char *step = "open";
    int fd = open (self->anchor_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                   0640);               //  no secret in it: auditors may read it
    bool ok = fd >= 0;
    for (size_t done = 0; ok && done < len; ) {
        ssize_t put = write (fd, text + done, len - done);
        if (put < 0 && errno == EINTR)
            continue;
        ok = put > 0;
        step = "write";
        if (ok)
            done += (size_t) put;
    }
    if (ok) {
        step = "fdatasync";
        ok = fdatasync (fd) == 0;
    }
    if (fd >= 0 && close (fd) != 0 && ok) {
        step = "close";
        ok = false;
    }
    if (ok) {
        step = "rename";
        ok = rename (self->anchor_tmp, self->anchor_path) == 0;
    }
    if (ok) {
        //  The rename itself durable: fsync the directory
        step = "fsync of the directory";
        int dfd = open (self->anchor_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ok = dfd >= 0 && fsync (dfd) == 0;
        if (dfd >= 0)
            close (dfd);
    }
    if (!ok) {
        int err = errno;
        unlink (self->anchor_tmp);
        if (!self->anchor_failing)
            ami_log_error ("audit anchor %s: cannot write (%s: %s): the log's tail is not "
                           "anchored beyond seq %llu until a write succeeds",
                           self->anchor_path, step, strerror (err),
                           (unsigned long long) self->anchored_seq);
        self->anchor_failing = true;
        return AMI_E_IO;
    }
    if (self->anchor_failing)
        ami_log_info ("audit anchor %s: written again (seq %llu)", self->anchor_path,
                      (unsigned long long) self->last_seq);
    self->anchor_failing = false;
    self->anchor_written = true;
    self->anchor_dirty = false;
    self->anchored_seq = self->last_seq;
    memcpy (self->anchored_hash, self->last_hash, AMI_HASH_SIZE);
    memcpy (self->anchor_text, text, len);
    self->anchor_len = len;
    return AMI_OK;
}

/*  Keep a rejected anchor file for the investigation. */
static void
s_anchor_aside (ami_mdms_audit_t *self)
{
    char aside [4096];                  //  PATH_MAX on Linux
    int n = snprintf (aside, sizeof aside, "%s.rejected-%lld", self->anchor_path,
                      (long long) zclock_time ());
    if (n > 0 && (size_t) n < sizeof aside && rename (self->anchor_path, aside) == 0)
        ami_log_error ("audit anchor %s: kept as %s for the investigation", self->anchor_path,
                       aside);
    else
        ami_log_warn ("audit anchor %s: could not be kept aside (%s); it is replaced",
                      self->anchor_path, strerror (errno));
}

static const char *
s_lost_text (const ami_mdms_audit_t *self)
{
    return self->lost_missing && self->lost_forged ? "missing and forged"
         : self->lost_missing ? "missing" : self->lost_forged ? "forged" : "none";
}

int
ami_mdms_audit_anchor_open (ami_mdms_audit_t *self, const char *path)
{
    assert (self && path && *path);
    assert (!self->anchor_path);        //  once
    self->anchor_path = strdup (path);
    self->anchor_tmp = s_strcat2 (path, ".tmp");
    const char *slash = strrchr (path, '/');
    self->anchor_dir = slash == path ? strdup ("/")
                     : slash ? strndup (path, (size_t) (slash - path)) : strdup (".");
    if (!self->anchor_path || !self->anchor_tmp || !self->anchor_dir)
        return AMI_E_NOMEM;
    struct stat st;
    if (stat (self->anchor_dir, &st) != 0 || !S_ISDIR (st.st_mode)) {
        ami_log_error ("audit anchor %s: its directory %s does not exist: check "
                       "mdms/audit-anchor", path, self->anchor_dir);
        return AMI_E_IO;
    }

    uint8_t buf [AMI_MDMS_AUDIT_ANCHOR_MAX + 1];
    size_t len = 0;
    int rc = s_anchor_read (path, buf, &len);
    if (rc == AMI_E_IO)
        return rc;                      //  logged: not readable, not writable either
    const char *why = "not a regular file, or too long";
    s_anchor_t a;
    memset (&a, 0, sizeof a);
    if (rc == AMI_OK)
        rc = s_anchor_parse (self, buf, len, &a, &why);
    char hex [2 * AMI_HASH_SIZE + 1];
    sodium_bin2hex (hex, sizeof hex, self->last_hash, AMI_HASH_SIZE);
    unsigned long long last = (unsigned long long) self->last_seq;
    if (rc == AMI_E_NOTFOUND) {
        if (self->last_seq) {
            self->lost_missing = true;
            self->tail_ok = false;
            ami_log_error ("audit anchor %s: MISSING while the log holds entries up to seq %llu "
                           "(hash %s): a cut tail cannot be ruled out; recorded in the anchor "
                           "and reported by every audit verify; a new anchor starts at seq "
                           "%llu", path, last, hex, last);
        }
        else
            ami_log_info ("audit anchor %s: none yet (empty log): created", path);
    }
    else
    if (rc) {
        self->lost_forged = true;
        self->tail_ok = false;
        ami_log_error ("audit anchor %s: DOES NOT VERIFY (%s: forged, damaged, or written "
                       "with another data key); recorded in the anchor and reported by every "
                       "audit verify; a new anchor starts at seq %llu", path,
                       why ? why : "layout", last);
        s_anchor_aside (self);
    }
    else {
        //  Earlier findings are carried on
        self->lost_missing = a.lost_missing;
        self->lost_forged = a.lost_forged;
        s_cut (self, a.cut_first, a.cut_last);
        if (a.cut_first || a.lost_missing || a.lost_forged) {
            self->tail_ok = false;
            char cut [64] = "none";
            if (a.cut_first)
                snprintf (cut, sizeof cut, "seq %llu..%llu", (unsigned long long) a.cut_first,
                          (unsigned long long) a.cut_last);
            ami_log_error ("audit anchor %s: earlier findings stand: truncated %s, anchor "
                           "lost %s (run the audit verify action)", path, cut,
                           s_lost_text (self));
        }
        uint8_t stored [AMI_HASH_SIZE];
        if (a.seq > self->last_seq) {
            s_cut (self, self->last_seq + 1, a.seq);
            self->tail_ok = false;
            ami_log_error ("audit log TRUNCATED: the anchor %s records seq %llu, the log ends "
                           "at seq %llu: entries %llu..%llu are gone; recorded in the anchor "
                           "and reported by every audit verify; appending continues at seq "
                           "%llu", path, (unsigned long long) a.seq, last, last + 1,
                           (unsigned long long) a.seq, last + 1);
            s_anchor_aside (self);
        }
        else
        if (a.seq == 0)
            ami_log_warn ("audit anchor %s lags the log: it records an empty log, the log "
                          "holds seq 1..%llu (the MDMS stopped without writing it: a crash); "
                          "those entries are not covered by it", path, last);
        else
        if (!s_stored_hash (self, a.seq, stored))
            ami_log_error ("audit anchor %s: the entry at the anchored seq %llu is missing: "
                           "run the audit verify action", path, (unsigned long long) a.seq);
        else
        if (sodium_memcmp (stored, a.hash, AMI_HASH_SIZE) != 0) {
            s_cut (self, a.seq, a.seq);
            self->tail_ok = false;
            ami_log_error ("audit log TRUNCATED AND REWRITTEN: the entry at the anchored seq "
                           "%llu is not the one the anchor %s records: the log was cut at or "
                           "before seq %llu and grown again; recorded in the anchor and "
                           "reported by every audit verify", (unsigned long long) a.seq,
                           path, (unsigned long long) a.seq);
            s_anchor_aside (self);
        }
        else
        if (a.seq < self->last_seq)
            ami_log_warn ("audit anchor %s lags the log: seq %llu of %llu (the MDMS stopped "
                          "without writing it: a crash); entries %llu..%llu are not covered "
                          "by it", path, (unsigned long long) a.seq, last,
                          (unsigned long long) a.seq + 1, last);
        else
            ami_log_info ("audit anchor %s: seq %llu hash %s matches the log", path, last, hex);
    }
    self->anchor_dirty = true;
    rc = s_anchor_write (self);
    if (rc)
        ami_log_error ("audit anchor %s: cannot be written: check mdms/audit-anchor (its "
                       "directory must exist and be writable by the MDMS)", path);
    return rc;
}

int
ami_mdms_audit_anchor_sync (ami_mdms_audit_t *self)
{
    assert (self);
    if (!self->anchor_path)
        return AMI_OK;
    if (!self->anchor_dirty && self->anchor_written && self->anchored_seq == self->last_seq)
        return AMI_OK;
    //  The head moved: at most one write per window (a finding: at once,
    //  unless writes are failing: then retries are paced like writes)
    if ((!self->anchor_dirty || self->anchor_failing)
    &&  zclock_mono () - self->anchor_written_at < AMI_MDMS_AUDIT_ANCHOR_MS)
        return AMI_OK;
    return s_anchor_write (self);
}

uint64_t
ami_mdms_audit_anchored (ami_mdms_audit_t *self)
{
    assert (self);
    return self->anchor_written ? self->anchored_seq : 0;
}


/* ---------------------------------------------------------------------- */
/*  Verify                                                                  */

typedef struct {
    ami_mdms_audit_t *self;
    ami_api_verify_t *out;
    uint64_t expected;                  /* next seq */
    uint8_t prev [AMI_HASH_SIZE];       /* H stored at expected - 1 */
    bool prev_ok;                       /* ... and it is the right one to chain to */
} s_verify_t;

static void
s_failure (s_verify_t *ctx, uint64_t ref, int code)
{
    ami_api_verify_t *out = ctx->out;
    if (out->count < AMI_MAX_API_FAILURES) {
        out->failures [out->count].ref = ref;
        out->failures [out->count].code = (uint16_t) code;
        out->count++;
    }
    out->failed++;
}

/*  Seqs [from, to) are missing: removed. Each is a failure; the list
    holds as many as fit, a long gap costs no more than the list. */
static void
s_missing (s_verify_t *ctx, uint64_t from, uint64_t to)
{
    ami_api_verify_t *out = ctx->out;
    for (; from < to && out->count < AMI_MAX_API_FAILURES; from++)
        s_failure (ctx, from, AMI_E_NOTFOUND);
    if (from < to)
        out->failed += to - from;
}

static int
s_verify_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_verify_t *ctx = (s_verify_t *) arg;
    ami_api_verify_t *out = ctx->out;
    if (klen != 8) {
        //  Not a seq at all: count it, it cannot be placed in the chain
        out->checked++;
        s_failure (ctx, 0, AMI_E_STORAGE);
        return 0;
    }
    uint64_t seq = s_get_be64 ((const uint8_t *) key);
    if (seq > ctx->expected) {
        s_missing (ctx, ctx->expected, seq);
        ctx->prev_ok = false;
    }
    out->checked++;
    ami_audit_row_t row;
    bool good = ami_mdms_audit_parse (val, vlen, &row) == AMI_OK && row.seq == seq;
    if (good && ctx->prev_ok) {
        uint8_t expect [AMI_HASH_SIZE];
        s_chain (ctx->self, ctx->prev, (const uint8_t *) val, vlen - AMI_HASH_SIZE, expect);
        good = sodium_memcmp (expect, row.hash, AMI_HASH_SIZE) == 0;
    }
    if (!good)
        s_failure (ctx, seq, AMI_E_BAD_SIGNATURE);
    //  Go on from what is stored here; chain the next entry to it only if
    //  this entry really is entry seq (moved entries hold another's H)
    if (vlen > AMI_HASH_SIZE) {
        memcpy (ctx->prev, (const uint8_t *) val + vlen - AMI_HASH_SIZE, AMI_HASH_SIZE);
        ctx->prev_ok = ami_mdms_audit_parse (val, vlen, &row) == AMI_OK && row.seq == seq;
    }
    else
        ctx->prev_ok = false;
    ctx->expected = seq < UINT64_MAX ? seq + 1 : seq;
    return 0;
}

/*  Check the anchor file as it is now against what this MDMS wrote last;
    a finding is recorded (and carried into the next anchor). */
static void
s_verify_anchor_file (ami_mdms_audit_t *self)
{
    uint8_t buf [AMI_MDMS_AUDIT_ANCHOR_MAX + 1];
    size_t len = 0;
    int rc = s_anchor_read (self->anchor_path, buf, &len);
    if (rc == AMI_E_NOTFOUND) {
        if (!self->lost_missing)
            ami_log_error ("audit anchor %s: MISSING (deleted while the MDMS runs); recorded "
                           "in the next anchor", self->anchor_path);
        if (!self->lost_missing)
            self->anchor_dirty = true;
        self->lost_missing = true;
    }
    else
    if (rc || !self->anchor_written || len != self->anchor_len
    ||  memcmp (buf, self->anchor_text, len) != 0) {
        s_anchor_t a;
        const char *why = "not a regular file, or too long";
        bool verifies = rc == AMI_OK && s_anchor_parse (self, buf, len, &a, &why) == AMI_OK;
        if (!self->lost_forged)
            ami_log_error ("audit anchor %s: not the anchor this MDMS wrote (%s); recorded in "
                           "the next anchor", self->anchor_path,
                           verifies ? "a valid but other anchor: an old copy put back?"
                           : why ? why : "layout");
        if (!self->lost_forged)
            self->anchor_dirty = true;
        self->lost_forged = true;
        s_anchor_aside (self);          //  the next write must not destroy it
        self->anchor_dirty = true;
    }
}

/*  Stable sort of the listed failures by ref (at most 256: insertion). */
static void
s_sort_failures (ami_api_verify_t *out)
{
    for (uint32_t i = 1; i < out->count; i++) {
        ami_failure_t f = out->failures [i];
        uint32_t j = i;
        for (; j > 0 && out->failures [j - 1].ref > f.ref; j--)
            out->failures [j] = out->failures [j - 1];
        out->failures [j] = f;
    }
}

int
ami_mdms_audit_verify (ami_mdms_audit_t *self, ami_api_verify_t *out)
{
    assert (self && out);
    out->checked = 0;
    out->failed = 0;
    out->count = 0;
    s_verify_t ctx;
    memset (&ctx, 0, sizeof ctx);
    ctx.self = self;
    ctx.out = out;
    ctx.expected = 1;
    ctx.prev_ok = true;                 //  seq 1 chains to 32 zero bytes
    int rc = ami_store_scan (self->store, self->dbi, NULL, 0, NULL, 0, false,
                             s_verify_row, &ctx);
    if (rc)
        return rc;
    uint64_t stored_last = ctx.expected - 1;

    //  Truncation: entries the MDMS committed (its in-memory tail is an
    //  anchor of its own while it runs) or anchored, gone from the end
    uint64_t cut_first = self->cut_first, cut_last = self->cut_last;
    uint64_t head = self->last_seq;
    if (self->anchor_path && self->anchor_written && self->anchored_seq > head)
        head = self->anchored_seq;
    if (head > stored_last)
        s_cut (self, stored_last + 1, head);
    //  ... or cut and grown again: the anchored entry is another one now
    uint8_t stored [AMI_HASH_SIZE];
    if (self->anchor_path && self->anchor_written && self->anchored_seq
    &&  self->anchored_seq <= stored_last
    &&  s_stored_hash (self, self->anchored_seq, stored)
    &&  sodium_memcmp (stored, self->anchored_hash, AMI_HASH_SIZE) != 0)
        s_cut (self, self->anchored_seq, self->anchored_seq);
    if (self->cut_first != cut_first || self->cut_last != cut_last)
        ami_log_error ("audit log TRUNCATED (found by the verify): the log ends at seq %llu, "
                       "seq %llu was committed; entries %llu..%llu are recorded as cut",
                       (unsigned long long) stored_last, (unsigned long long) head,
                       (unsigned long long) self->cut_first,
                       (unsigned long long) self->cut_last);
    if (self->anchor_path)
        s_verify_anchor_file (self);

    //  The anchor's failures, always listed: they take the place of the
    //  last listed chain failures when the list is full (still counted)
    ami_failure_t extra [4];
    uint32_t extras = 0;
    if (self->lost_missing)
        extra [extras++] = (ami_failure_t) { 0, AMI_E_NOTFOUND };
    if (self->lost_forged)
        extra [extras++] = (ami_failure_t) { 0, AMI_E_BAD_SIGNATURE };
    if (self->cut_first) {
        extra [extras++] = (ami_failure_t) { self->cut_first, AMI_E_TRUNCATED };
        if (self->cut_last > self->cut_first)
            extra [extras++] = (ami_failure_t) { self->cut_last, AMI_E_TRUNCATED };
        out->failed += self->cut_last - self->cut_first + 1;
    }
    out->failed += (self->lost_missing ? 1 : 0) + (self->lost_forged ? 1 : 0);
    if (out->count + extras > AMI_MAX_API_FAILURES)
        out->count = AMI_MAX_API_FAILURES - extras;
    for (uint32_t i = 0; i < extras; i++)
        out->failures [out->count++] = extra [i];
    s_sort_failures (out);
    return AMI_OK;
}
