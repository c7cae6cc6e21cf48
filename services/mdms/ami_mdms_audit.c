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
*/
#include "ami_mdms_audit.h"

#include <assert.h>
#include <czmq.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

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
};


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
        if (self->last_seq) {
            char hex [2 * AMI_HASH_SIZE + 1];
            sodium_bin2hex (hex, sizeof hex, self->last_hash, AMI_HASH_SIZE);
            ami_log_info ("audit log closed: last seq %llu hash %s",
                          (unsigned long long) self->last_seq, hex);
        }
        sodium_memzero (self->key, sizeof self->key);
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
        s_failure (ctx, 0, AMI_E_BAD_SIGNATURE);
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
    //  Entries the MDMS wrote since it opened the log but that are gone
    //  from the file now (the in-memory tail is an anchor of its own)
    if (self->last_seq >= ctx.expected)
        s_missing (&ctx, ctx.expected, self->last_seq + 1);
    return AMI_OK;
}
