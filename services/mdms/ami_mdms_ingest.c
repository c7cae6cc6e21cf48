/*  ami_mdms_ingest.c - interval-data ingest (contract in ami_mdms_ingest.h).

    Design. Credit-based flow control (zguide chapter 7) at the edge, group
    commit inside: BATCH frames wait in a small ring (the credit budget);
    each run takes a group of them, and every block that passes its checks
    is merged into an in-memory copy of each (meter, bucket) value it
    touches, read once per group from the last committed state. The group
    then writes each changed bucket once, all in ONE write transaction, so
    the per-transaction cost (fsync) and the per-bucket cost (page
    copy-on-write) are both paid once however many blocks or duplicates
    touched them; acks leave only after the commit returned.

    Why merge in memory instead of read-modify-write inside the LMDB
    transaction: ami_store reads see committed data only (its reads never
    see the open batch), so two blocks of one meter-day in one group must
    meet before the write. The group table gives that, and also lets a
    group that only carried duplicates commit nothing at all.

    Encryption at rest (SEC-CONF-2, layout in ami_mdms_db.h): the group
    holds every bucket OPENED (plaintext, 1548 bytes); a bucket is opened
    once when the group first loads it and sealed once, with a fresh
    nonce, when the group writes it. So the cost is one open and one seal
    of 1.5 KB per changed bucket and group (~2 x 1.5 us), whatever the
    number of blocks merged into it; buckets seen only by duplicates are
    opened, never rewritten. A bucket that does not open is corrupt: its
    blocks are refused (AMI_E_STORAGE), like a bucket of the wrong size.

    Tables (allocated once, see "Memory" in the header):
    - buckets: flat array of (key, dirty) with their opened 1548-byte
      values in a parallel array, found through an open-addressing index
      (linear probing, power-of-two size >= 2 x capacity, cleared per
      group); wiped on destroy;
    - key cache: set-associative, 8 ways, round-robin victim per set.
*/
#include "ami_mdms_ingest.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ami_err.h"
#include "ami_log.h"
#include "ami_store.h"

/*  A block spans at most 96 consecutive intervals, so at most 2 buckets:
    the room one more batch can need. */
#define S_BATCH_KEYS        (2 * AMI_MAX_BATCH_BLOCKS)
/*  Blocks of one group at most: the latency array. */
#define S_GROUP_BLOCKS      (AMI_MDMS_GROUP_BATCHES * AMI_MAX_BATCH_BLOCKS)
/*  Origins remembered for the fair share of credit: a deployment has
    tens of aggregators; more are counted but not remembered. */
#define S_MAX_ORIGINS       1024
/*  Latency histogram: exact below 16 us, then 8 buckets per power of two
    (relative width 1/8: the midpoint is within ~6 %) up to 2^63 us. */
#define S_LAT_EXACT         16
#define S_LAT_BUCKETS       (S_LAT_EXACT + 60 * 8)
/*  Encoded BATCH_ACK: header 3, u64 9, u16 3, u32 5 bytes. */
#define S_ACK_MAX           32
/*  Returned by s_bucket for a stored value that does not parse. */
#define S_CORRUPT           (-1)

typedef struct {
    uint32_t tag;                       /* hash of the id */
    uint8_t len;                        /* 0 = empty way */
    char id [AMI_MAX_ID];               /* not NUL-terminated */
    uint8_t key [AMI_E2E_PROFILE_KEY_SIZE];
} s_cached_t;

typedef struct {
    uint8_t key [AMI_MDMS_INTERVAL_KEY_MAX];
    uint8_t klen;
    bool dirty;                         /* a slot was set in this group */
    uint32_t hash;
} s_bucket_t;

typedef struct {
    zframe_t *routing;
    zframe_t *body;
} s_queued_t;

typedef struct {
    zframe_t *routing;                  /* owned until acknowledged */
    uint64_t batch_id;
    ami_id_t origin;
} s_member_t;

struct _ami_mdms_ingest_t {
    ami_mdms_db_t *db;
    ami_store_t *store;
    unsigned dbi;
    uint32_t interval_s;
    ami_e2e_mdms_t keys;
    ami_mdms_ingest_reject_fn *on_reject;
    void *reject_arg;

    s_cached_t *cache;                  /* open addressing, cache_cap entries */
    size_t cache_cap;
    size_t cache_used;
    uint64_t evictions;

    s_queued_t *queue;                  /* ring */
    size_t queue_cap, queue_head, queue_count;

    s_bucket_t *buckets;
    uint8_t *values;                    /* bucket_cap x AMI_MDMS_INTERVAL_PLAIN, opened */
    uint8_t sealed [AMI_MDMS_INTERVAL_VALUE];   /* one stored value, in or out */
    size_t bucket_cap, bucket_used, group_keys;
    uint32_t *index;                    /* bucket number + 1, 0 = free */
    uint32_t *order;                    /* dirty buckets in put order */
    size_t index_mask;
    s_member_t members [AMI_MDMS_GROUP_BATCHES];
    size_t member_count;
    uint64_t *made;                     /* made_ms of the group's storing blocks */
    size_t made_count;
    uint64_t g_new, g_dup, g_conflict;  /* this group, applied when committed */
    int g_error;                        /* first error that fails the group */

    ami_msg_t *batch;
    ami_msg_t *profile;
    ami_msg_t *tx;
    uint8_t plain [AMI_MAX_SEALED];

    zhashx_t *origins;                  /* origin id -> int64_t last seen (mono) */
    int64_t origin_ttl;

    uint64_t batches_in, blocks_in, blocks_rejected, batches_failed;
    uint64_t stored, dup, conflict, commits, malformed;
    uint64_t throttled;                 /* acks that slowed a sender: credit 0, BUSY */
    uint64_t lat [S_LAT_BUCKETS];
    uint64_t lat_count, lat_max;
    ami_log_limit_t warn_limit;
};


/* ---------------------------------------------------------------------- */
/*  Helpers                                                                 */

/*  FNV-1a, 64 bits, then mixed: ids and keys are short; this is not exposed to
    collisions an attacker could exploit (only registered ids are cached,
    bucket keys come from authenticated blocks). */
static uint64_t
s_hash (const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *) data;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p [i];
        h *= 1099511628211ULL;
    }
    //  FNV leaves the last bytes' effect in the low bits only; ids that
    //  differ in their last digits must spread over all bits (the key
    //  cache picks its set from the high ones): a 64-bit finaliser mix
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static unsigned
s_lat_bucket (uint64_t us)
{
    if (us < S_LAT_EXACT)
        return (unsigned) us;
    unsigned e = 63u - (unsigned) __builtin_clzll (us);       //  >= 4
    unsigned sub = (unsigned) (us >> (e - 3)) & 7u;
    return S_LAT_EXACT + (e - 4) * 8 + sub;
}

/*  Midpoint of a histogram bucket. */
static uint64_t
s_lat_value (unsigned b)
{
    if (b < S_LAT_EXACT)
        return b;
    unsigned e = (b - S_LAT_EXACT) / 8 + 4, sub = (b - S_LAT_EXACT) % 8;
    uint64_t lo = (uint64_t) (8 + sub) << (e - 3);
    return lo + ((uint64_t) 1 << (e - 3)) / 2;
}

static uint64_t
s_lat_percentile (ami_mdms_ingest_t *self, unsigned permille)
{
    if (!self->lat_count)
        return 0;
    uint64_t rank = (self->lat_count * permille + 999) / 1000;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < S_LAT_BUCKETS; b++) {
        seen += self->lat [b];
        if (seen >= rank) {
            uint64_t v = s_lat_value (b);
            return v < self->lat_max ? v : self->lat_max;
        }
    }
    return self->lat_max;
}

static void
s_reject (ami_mdms_ingest_t *self, const char *origin, const ami_block_t *block, int code,
          const char *why)
{
    self->blocks_rejected++;
    if (self->on_reject)
        self->on_reject (origin, block->meter_id, block->seq, code, why, self->reject_arg);
}


/* ---------------------------------------------------------------------- */
/*  Profile key cache                                                       */

/*  The profile key of meter_id into *key (pointing into the cache).
    Returns AMI_OK, AMI_E_UNKNOWN_METER, AMI_E_KEY (the registered key
    cannot make a profile key), or the registry's storage error.

    The cache is an open-addressing table with linear probing, filled to
    at most 3/4 so a probe always ends at an empty entry. Meters arrive in
    rounds (every meter once per block period), the access pattern that
    makes any LRU-like eviction miss every time once the working set
    exceeds the capacity; so nothing is evicted while there is room (a
    registry that fits is derived once per meter), and past 3/4 a new
    meter takes the entry at its home position (no entry is emptied, so
    every probe chain stays intact). */
static int
s_profile_key (ami_mdms_ingest_t *self, const char *meter_id, const uint8_t **key)
{
    size_t len = strlen (meter_id);
    uint64_t h = s_hash (meter_id, len);
    uint32_t tag = (uint32_t) (h >> 32);
    size_t home = (size_t) (((uint64_t) (uint32_t) h * self->cache_cap) >> 32);
    size_t pos = home;
    s_cached_t *entry = NULL;
    for (;;) {
        entry = &self->cache [pos];
        if (!entry->len)
            break;                      //  not cached
        if (entry->len == len && entry->tag == tag && memcmp (entry->id, meter_id, len) == 0) {
            *key = entry->key;
            return AMI_OK;
        }
        pos = pos + 1 == self->cache_cap ? 0 : pos + 1;
    }
    ami_mdms_meter_t meter;
    int rc = ami_mdms_db_meter_get (self->db, meter_id, &meter);
    if (rc == AMI_E_NOTFOUND)
        return AMI_E_UNKNOWN_METER;
    if (rc)
        return rc;
    if (self->cache_used * 4 < self->cache_cap * 3)
        self->cache_used++;
    else {
        entry = &self->cache [home];    //  full: replace, never empty
        self->evictions++;
    }
    entry->len = 0;
    if (ami_e2e_profile_key_mdms (&self->keys, meter.sign_pk, entry->key) != AMI_OK) {
        sodium_memzero (entry->key, sizeof entry->key);
        //  an entry that was in use must stay in use (probe chains)
        entry->len = 1;
        entry->tag = 0;
        entry->id [0] = 0;              //  matches no id (ids are never empty)
        return AMI_E_KEY;
    }
    entry->tag = tag;
    entry->len = (uint8_t) len;
    memcpy (entry->id, meter_id, len);
    *key = entry->key;
    return AMI_OK;
}


/* ---------------------------------------------------------------------- */
/*  The group's bucket table                                                */

static void
s_group_reset (ami_mdms_ingest_t *self)
{
    if (self->bucket_used)
        memset (self->index, 0, (self->index_mask + 1) * sizeof *self->index);
    self->bucket_used = 0;
    self->member_count = 0;
    self->made_count = 0;
    self->g_new = self->g_dup = self->g_conflict = 0;
    self->g_error = AMI_OK;
}

/*  The group's copy of (meter_id, bucket), loaded from the database the
    first time. Sets *index to its number. Returns AMI_OK, S_CORRUPT (the
    stored value does not parse: logged), or a storage error. */
static int
s_bucket (ami_mdms_ingest_t *self, const char *meter_id, uint32_t bucket, size_t *index)
{
    uint8_t key [AMI_MDMS_INTERVAL_KEY_MAX];
    size_t klen = ami_mdms_db_interval_key (meter_id, bucket, key);
    assert (klen);                      //  ids are checked by the codec
    uint32_t h = (uint32_t) s_hash (key, klen);
    size_t pos = h & self->index_mask;
    while (self->index [pos]) {
        size_t i = self->index [pos] - 1;
        s_bucket_t *b = &self->buckets [i];
        if (b->hash == h && b->klen == klen && memcmp (b->key, key, klen) == 0) {
            *index = i;
            return AMI_OK;
        }
        pos = (pos + 1) & self->index_mask;
    }
    //  The group takes a batch only with room for 2 buckets per block
    assert (self->bucket_used < self->bucket_cap);
    size_t i = self->bucket_used;
    uint8_t *value = self->values + i * AMI_MDMS_INTERVAL_PLAIN;
    size_t vlen = 0;
    int rc = ami_store_get (self->store, self->dbi, key, klen, self->sealed,
                            sizeof self->sealed, &vlen);
    if (rc == AMI_E_NOTFOUND) {
        memset (value, 0, AMI_MDMS_INTERVAL_PLAIN);
        rc = AMI_OK;
    }
    else
    if (rc == AMI_E_LIMIT || (rc == AMI_OK && vlen != AMI_MDMS_INTERVAL_VALUE)) {
        ami_log_error ("mdms ingest: stored interval bucket %u of meter %s has %zu bytes, "
                       "expected %d: database corrupt, blocks for it are refused",
                       bucket, meter_id, vlen, AMI_MDMS_INTERVAL_VALUE);
        return S_CORRUPT;
    }
    else
    if (rc == AMI_OK) {
        //  SEC-CONF-2: decrypt to merge (logged by the db if it does not open)
        rc = ami_mdms_db_interval_open (self->db, key, klen, self->sealed, value);
        if (rc == AMI_E_STORAGE)
            return S_CORRUPT;
    }
    if (rc)
        return rc;
    s_bucket_t *b = &self->buckets [i];
    memcpy (b->key, key, klen);
    b->klen = (uint8_t) klen;
    b->hash = h;
    b->dirty = false;
    self->index [pos] = (uint32_t) (i + 1);
    self->bucket_used++;
    *index = i;
    return AMI_OK;
}


/* ---------------------------------------------------------------------- */
/*  One block                                                               */

static void
s_block (ami_mdms_ingest_t *self, const char *origin, const ami_block_t *block)
{
    self->blocks_in++;
    const uint8_t *key = NULL;
    int rc = s_profile_key (self, block->meter_id, &key);
    if (rc == AMI_E_UNKNOWN_METER) {
        s_reject (self, origin, block, rc, "meter not in the registry");
        return;
    }
    if (rc == AMI_E_KEY) {
        s_reject (self, origin, block, rc, "registered key cannot make a profile key");
        return;
    }
    if (rc) {
        self->g_error = rc;             //  the registry cannot be read
        return;
    }
    size_t plen = 0;
    rc = ami_e2e_profile_open (key, block->meter_id, block->seq, block->box, block->box_size,
                               self->plain, sizeof self->plain, &plen);
    if (rc) {
        s_reject (self, origin, block, AMI_E_DECRYPT, "box does not open (altered, moved or "
                                                      "not sealed by this meter)");
        return;
    }
    ami_msg_t *m = self->profile;
    rc = ami_msg_decode (m, self->plain, plen);
    if (rc == AMI_OK && m->type != AMI_MSG_PROFILE)
        rc = AMI_E_MSGTYPE;
    if (rc) {
        s_reject (self, origin, block, rc, "plaintext is not a PROFILE");
        return;
    }
    const ami_profile_t *profile = &m->profile;
    if (strcmp (profile->meter_id, block->meter_id) != 0 || profile->seq != block->seq) {
        s_reject (self, origin, block, AMI_E_RANGE, "PROFILE meter_id/seq differ from the block's");
        return;
    }
    uint64_t interval = self->interval_s, first = 0, prev = 0;
    for (uint32_t i = 0; i < profile->record_count; i++) {
        const ami_interval_t *r = &profile->records [i];
        const char *why = NULL;
        uint64_t n = r->end_s / interval;
        if (r->end_s == 0 || r->end_s % interval)
            why = "end_s is not a multiple of the interval";
        else
        if (n <= prev)
            why = "end_s not ascending";
        else
        if (r->export_wh > AMI_MDMS_EXPORT_MAX)
            why = "export_wh over 2^48";
        else
        if (i && n - first >= AMI_MDMS_INTERVAL_SLOTS)
            why = "records span more than 96 intervals";
        if (why) {
            s_reject (self, origin, block, AMI_E_RANGE, why);
            return;
        }
        if (!i)
            first = n;
        prev = n;
    }
    //  Both buckets it touches, before any record is merged: a block is
    //  stored whole or not at all
    uint32_t b0 = (uint32_t) ((first - 1) / AMI_MDMS_INTERVAL_SLOTS);
    uint32_t b1 = (uint32_t) ((prev - 1) / AMI_MDMS_INTERVAL_SLOTS);
    size_t i0 = 0, i1 = 0;
    rc = s_bucket (self, block->meter_id, b0, &i0);
    if (rc == AMI_OK)
        rc = b1 == b0 ? AMI_OK : s_bucket (self, block->meter_id, b1, &i1);
    if (rc == S_CORRUPT) {
        s_reject (self, origin, block, AMI_E_STORAGE, "stored bucket is corrupt");
        return;
    }
    if (rc) {
        self->g_error = rc;
        return;
    }
    bool stored = false;
    for (uint32_t i = 0; i < profile->record_count; i++) {
        const ami_interval_t *r = &profile->records [i];
        uint64_t n = r->end_s / interval;
        uint32_t b = (uint32_t) ((n - 1) / AMI_MDMS_INTERVAL_SLOTS);
        unsigned slot = (unsigned) ((n - 1) % AMI_MDMS_INTERVAL_SLOTS);
        size_t index = b == b0 ? i0 : i1;
        uint8_t *value = self->values + index * AMI_MDMS_INTERVAL_PLAIN;
        if (ami_mdms_db_interval_present (value, slot)) {
            self->g_dup++;
            ami_interval_t old;
            ami_mdms_db_interval_get (value, slot, b, self->interval_s, &old);
            if (old.import_wh != r->import_wh || old.export_wh != r->export_wh
            ||  old.status != r->status) {
                self->g_conflict++;
                ami_log_warn_limited (&self->warn_limit, "mdms ingest",
                                      "meter %s interval ending %u: a copy with other values "
                                      "arrived (+A %llu/%llu Wh, -A %llu/%llu Wh, status "
                                      "%u/%u stored/new): the stored one is kept",
                                      block->meter_id, r->end_s,
                                      (unsigned long long) old.import_wh,
                                      (unsigned long long) r->import_wh,
                                      (unsigned long long) old.export_wh,
                                      (unsigned long long) r->export_wh, old.status, r->status);
            }
            continue;
        }
        ami_mdms_db_interval_put (value, slot, r);
        self->buckets [index].dirty = true;
        self->g_new++;
        stored = true;
    }
    if (stored) {
        assert (self->made_count < S_GROUP_BLOCKS);
        self->made [self->made_count++] = profile->made_ms;
    }
}


/* ---------------------------------------------------------------------- */
/*  Origins and credit                                                      */

static void
s_origin_touch (ami_mdms_ingest_t *self, const char *origin, int64_t now)
{
    int64_t *seen = (int64_t *) zhashx_lookup (self->origins, origin);
    if (seen) {
        *seen = now;
        return;
    }
    if (zhashx_size (self->origins) >= S_MAX_ORIGINS) {
        //  Forget the stale ones (rare: only when the table is full)
        zlistx_t *stale = zlistx_new ();
        if (!stale)
            return;
        zlistx_set_duplicator (stale, (zlistx_duplicator_fn *) strdup);
        zlistx_set_destructor (stale, (zlistx_destructor_fn *) zstr_free);
        for (int64_t *s = (int64_t *) zhashx_first (self->origins); s;
             s = (int64_t *) zhashx_next (self->origins))
            if (now - *s > self->origin_ttl)
                zlistx_add_end (stale, (void *) zhashx_cursor (self->origins));
        for (const char *k = (const char *) zlistx_first (stale); k;
             k = (const char *) zlistx_next (stale))
            zhashx_delete (self->origins, k);
        zlistx_destroy (&stale);
        if (zhashx_size (self->origins) >= S_MAX_ORIGINS)
            return;
    }
    seen = (int64_t *) malloc (sizeof *seen);
    if (!seen)
        return;
    *seen = now;
    if (zhashx_insert (self->origins, origin, seen))
        free (seen);
}

static uint32_t
s_credit (ami_mdms_ingest_t *self, int64_t now)
{
    size_t active = 0;
    for (int64_t *s = (int64_t *) zhashx_first (self->origins); s;
         s = (int64_t *) zhashx_next (self->origins))
        if (now - *s <= self->origin_ttl)
            active++;
    size_t share = self->queue_cap / (active ? active : 1);
    if (share > AMI_CREDIT_INITIAL)
        share = AMI_CREDIT_INITIAL;
    if (share < 1)
        share = 1;
    if (self->queue_count * 4 >= self->queue_cap * 3)
        share = 0;
    else
    if (self->queue_count > self->queue_cap / 2)
        share = share > 1 ? share / 2 : 1;
    return (uint32_t) share;
}


/* ---------------------------------------------------------------------- */
/*  Life cycle                                                              */

static void
s_origin_destructor (void **item)
{
    free (*item);
    *item = NULL;
}

ami_mdms_ingest_t *
ami_mdms_ingest_new (const ami_mdms_ingest_config_t *config, int *err)
{
    assert (config && config->db && config->keys);
    int rc = AMI_OK;
    ami_mdms_ingest_t *self = (ami_mdms_ingest_t *) calloc (1, sizeof *self);
    if (!self) {
        rc = AMI_E_NOMEM;
        goto failed;
    }
    self->db = config->db;
    self->store = ami_mdms_db_store (config->db);
    self->dbi = ami_mdms_db_intervals_dbi (config->db);
    self->interval_s = ami_mdms_db_interval_s (config->db);
    if (!self->interval_s || !config->keys->has_secret
    ||  !ami_mdms_db_has_data_key (config->db) || config->queue > AMI_MDMS_INGEST_QUEUE_MAX) {
        ami_log_error ("mdms ingest: %s",
                       !self->interval_s ? "no interval set up on the database"
                     : !config->keys->has_secret ? "MDMS box secret key missing"
                     : config->queue > AMI_MDMS_INGEST_QUEUE_MAX ? "queue over "
                       "AMI_MDMS_INGEST_QUEUE_MAX batches"
                     : "no data key on the database (interval data is stored encrypted)");
        rc = AMI_E_CONFIG;
        goto failed;
    }
    self->keys = *config->keys;
    self->warn_limit.burst = AMI_MDMS_INGEST_LOG_BURST;
    self->origin_ttl = config->origin_ttl_ms > 0 ? config->origin_ttl_ms : 3000;

    //  keys to hold; the table is 4/3 of that (filled to 3/4 at most)
    size_t entries = config->key_cache;
    if (!entries)
        entries = ami_mdms_db_meter_count (config->db);
    if (entries < 1024)
        entries = 1024;
    if (entries > AMI_MDMS_KEY_CACHE_MAX)
        entries = AMI_MDMS_KEY_CACHE_MAX;
    self->cache_cap = entries / 3 * 4 + 4;
    self->cache = (s_cached_t *) calloc (self->cache_cap, sizeof *self->cache);

    self->queue_cap = config->queue ? config->queue : AMI_MDMS_INGEST_QUEUE;
    self->queue = (s_queued_t *) calloc (self->queue_cap, sizeof *self->queue);

    self->group_keys = config->group_keys ? config->group_keys : AMI_MDMS_GROUP_KEYS;
    self->bucket_cap = self->group_keys + S_BATCH_KEYS;
    size_t index_size = 1;
    while (index_size < 2 * self->bucket_cap)
        index_size <<= 1;
    self->index_mask = index_size - 1;
    self->index = (uint32_t *) calloc (index_size, sizeof *self->index);
    self->buckets = (s_bucket_t *) calloc (self->bucket_cap, sizeof *self->buckets);
    self->order = (uint32_t *) calloc (self->bucket_cap, sizeof *self->order);
    self->values = (uint8_t *) malloc (self->bucket_cap * AMI_MDMS_INTERVAL_PLAIN);
    self->made = (uint64_t *) calloc (S_GROUP_BLOCKS, sizeof *self->made);
    self->batch = ami_msg_new ();
    self->profile = ami_msg_new ();
    self->tx = ami_msg_new ();
    self->origins = zhashx_new ();
    if (!self->cache || !self->queue || !self->index || !self->buckets || !self->order
    ||  !self->values || !self->made || !self->batch || !self->profile || !self->tx
    ||  !self->origins) {
        rc = AMI_E_NOMEM;
        goto failed;
    }
    zhashx_set_destructor (self->origins, s_origin_destructor);
    ami_log_debug ("mdms ingest: %u s intervals, %zu cached keys, groups of %zu buckets, "
                   "queue of %zu batches", self->interval_s, self->cache_cap / 4 * 3,
                   self->group_keys, self->queue_cap);
    return self;

failed:
    if (rc == AMI_E_NOMEM)
        ami_log_error ("mdms ingest: out of memory");
    if (err)
        *err = rc;
    ami_mdms_ingest_destroy (&self);
    return NULL;
}

void
ami_mdms_ingest_destroy (ami_mdms_ingest_t **self_p)
{
    assert (self_p);
    ami_mdms_ingest_t *self = *self_p;
    if (!self)
        return;
    if (self->queue)
        for (size_t i = 0; i < self->queue_count; i++) {
            s_queued_t *q = &self->queue [(self->queue_head + i) % self->queue_cap];
            zframe_destroy (&q->routing);
            zframe_destroy (&q->body);
        }
    if (self->cache) {
        sodium_memzero (self->cache, self->cache_cap * sizeof *self->cache);
        free (self->cache);
    }
    free (self->queue);
    free (self->index);
    free (self->buckets);
    free (self->order);
    if (self->values) {
        //  opened meter data
        sodium_memzero (self->values, self->bucket_cap * AMI_MDMS_INTERVAL_PLAIN);
        free (self->values);
    }
    sodium_memzero (self->sealed, sizeof self->sealed);
    free (self->made);
    ami_msg_destroy (&self->batch);
    ami_msg_destroy (&self->profile);
    ami_msg_destroy (&self->tx);
    zhashx_destroy (&self->origins);
    sodium_memzero (self->plain, sizeof self->plain);
    ami_e2e_mdms_wipe (&self->keys);
    free (self);
    *self_p = NULL;
}

void
ami_mdms_ingest_set_reject (ami_mdms_ingest_t *self, ami_mdms_ingest_reject_fn *fn, void *arg)
{
    assert (self);
    self->on_reject = fn;
    self->reject_arg = arg;
}


/* ---------------------------------------------------------------------- */
/*  Queue                                                                   */

bool
ami_mdms_ingest_push (ami_mdms_ingest_t *self, zframe_t **routing_p, zframe_t **body_p)
{
    assert (self && routing_p && *routing_p && body_p && *body_p);
    if (self->queue_count == self->queue_cap)
        return false;
    s_queued_t *q = &self->queue [(self->queue_head + self->queue_count) % self->queue_cap];
    q->routing = *routing_p;
    q->body = *body_p;
    *routing_p = NULL;
    *body_p = NULL;
    self->queue_count++;
    return true;
}

bool
ami_mdms_ingest_full (ami_mdms_ingest_t *self)
{
    assert (self);
    return self->queue_count == self->queue_cap;
}

size_t
ami_mdms_ingest_backlog (ami_mdms_ingest_t *self)
{
    assert (self);
    return self->queue_count;
}

static int
s_encode_ack (ami_mdms_ingest_t *self, uint64_t batch_id, uint16_t status, uint32_t credit,
              uint8_t *buf, size_t cap, size_t *len)
{
    ami_msg_reset (self->tx, AMI_MSG_BATCH_ACK);
    self->tx->batch_ack.batch_id = batch_id;
    self->tx->batch_ack.status = status;
    self->tx->batch_ack.credit = credit;
    return ami_msg_encode (self->tx, buf, cap, len);
}

int
ami_mdms_ingest_refuse (ami_mdms_ingest_t *self, zframe_t *body, uint16_t status,
                        uint8_t *buf, size_t cap, size_t *len)
{
    assert (self && body && buf && len);
    int rc = ami_msg_decode (self->batch, zframe_data (body), zframe_size (body));
    if (rc == AMI_OK && self->batch->type != AMI_MSG_BATCH)
        rc = AMI_E_MSGTYPE;
    if (rc)
        return rc;
    //  Back-pressure, not failure: counted apart from batches_failed
    if (status == AMI_E_BUSY)
        self->throttled++;
    return s_encode_ack (self, self->batch->batch.batch_id, status, 0, buf, cap, len);
}


/* ---------------------------------------------------------------------- */
/*  Group commit                                                            */

/*  LMDB's key order (bytewise, shorter first on a tie); qsort_r over
    bucket numbers, arg = the bucket array. */
static int
s_compare_buckets (const void *a, const void *b, void *arg)
{
    const s_bucket_t *base = (const s_bucket_t *) arg;
    const s_bucket_t *x = &base [*(const uint32_t *) a];
    const s_bucket_t *y = &base [*(const uint32_t *) b];
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp (x->key, y->key, n);
    return c ? c : (int) x->klen - (int) y->klen;
}

/*  Write the group's changed buckets in one transaction.

    Order of the puts: by key, with each pair swapped (2nd, 1st, 4th, 3rd,
    ...). Why: a value is 1588 bytes, so a 4 KiB leaf page holds two, and
    LMDB splits a full page that gets a key at its END as [1][2, new]: a
    run of new keys put in ascending order (every meter's first day, or a
    new meter) leaves every page half empty, ~43 bytes per reading. Put
    the second key of each pair first and the first goes in the MIDDLE of
    its page, which LMDB splits as [1, new][2], so pages fill: measured
    ~22 bytes per reading for a fresh fill (test_mdms_ingest bench).
    Updates of existing buckets (same size, in place) do not split at all,
    so the order costs them nothing; the sort also walks the tree in
    order. */
static int
s_commit (ami_mdms_ingest_t *self)
{
    if (self->g_error)
        return self->g_error;
    size_t dirty = 0;
    for (size_t i = 0; i < self->bucket_used; i++)
        if (self->buckets [i].dirty)
            self->order [dirty++] = (uint32_t) i;
    if (!dirty)
        return AMI_OK;                  //  only duplicates: nothing to write
    qsort_r (self->order, dirty, sizeof *self->order, s_compare_buckets, self->buckets);
    int rc = AMI_OK;
    ami_store_batch_t *txn = ami_store_batch_begin (self->store, &rc);
    if (!txn)
        return rc;
    for (size_t k = 0; k < dirty && rc == AMI_OK; k++) {
        size_t pick = k ^ 1;            //  pairs swapped
        if (pick >= dirty)
            pick = k;                   //  an odd count: the last one as it is
        size_t i = self->order [pick];
        s_bucket_t *b = &self->buckets [i];
        //  SEC-CONF-2: sealed with a fresh nonce; the put copies it
        rc = ami_mdms_db_interval_seal (self->db, b->key, b->klen,
                                        self->values + i * AMI_MDMS_INTERVAL_PLAIN, self->sealed);
        if (rc == AMI_OK)
            rc = ami_store_batch_put (txn, self->dbi, b->key, b->klen, self->sealed,
                                      AMI_MDMS_INTERVAL_VALUE, 0);
    }
    if (rc) {
        ami_store_batch_abort (&txn);
        return rc;
    }
    rc = ami_store_batch_commit (&txn);
    if (rc == AMI_OK)
        self->commits++;
    return rc;
}

size_t
ami_mdms_ingest_run (ami_mdms_ingest_t *self, ami_mdms_ingest_ack_fn *fn, void *arg)
{
    assert (self);
    s_group_reset (self);
    int64_t now = zclock_mono ();
    while (self->queue_count && self->member_count < AMI_MDMS_GROUP_BATCHES
       &&  self->bucket_used < self->group_keys && self->g_error == AMI_OK) {
        s_queued_t q = self->queue [self->queue_head];
        self->queue_head = (self->queue_head + 1) % self->queue_cap;
        self->queue_count--;
        int rc = ami_msg_decode (self->batch, zframe_data (q.body), zframe_size (q.body));
        if (rc == AMI_OK && self->batch->type != AMI_MSG_BATCH)
            rc = AMI_E_MSGTYPE;
        if (rc) {
            self->malformed++;
            ami_log_warn_limited (&self->warn_limit, "mdms ingest",
                                  "queued frame of %zu bytes is not a BATCH (%s): dropped",
                                  zframe_size (q.body), ami_strerror (rc));
            zframe_destroy (&q.routing);
            zframe_destroy (&q.body);
            continue;
        }
        const ami_batch_t *batch = &self->batch->batch;
        //  Room for every block's buckets: group_keys + S_BATCH_KEYS
        assert (self->bucket_used + 2 * (size_t) batch->block_count <= self->bucket_cap);
        s_member_t *member = &self->members [self->member_count++];
        member->routing = q.routing;
        member->batch_id = batch->batch_id;
        memcpy (member->origin, batch->origin, sizeof member->origin);
        self->batches_in++;
        s_origin_touch (self, batch->origin, now);
        for (uint32_t i = 0; i < batch->block_count && self->g_error == AMI_OK; i++)
            s_block (self, batch->origin, &batch->blocks [i]);
        zframe_destroy (&q.body);       //  the blocks pointed into it
    }
    if (!self->member_count)
        return 0;

    int rc = s_commit (self);
    uint64_t done_us = s_now_us ();
    if (rc == AMI_OK) {
        self->stored += self->g_new;
        self->dup += self->g_dup;
        self->conflict += self->g_conflict;
        for (size_t i = 0; i < self->made_count; i++) {
            uint64_t made_us = self->made [i] * 1000u;
            uint64_t lat = done_us > made_us ? done_us - made_us : 0;
            self->lat [s_lat_bucket (lat)]++;
            self->lat_count++;
            if (lat > self->lat_max)
                self->lat_max = lat;
        }
    }
    else {
        self->batches_failed += self->member_count;
        ami_log_error ("mdms ingest: group commit of %zu batches (%zu buckets) failed: %s; "
                       "nothing of it is stored, the senders resend",
                       self->member_count, self->bucket_used, ami_strerror (rc));
    }
    uint32_t credit = rc ? 0 : s_credit (self, zclock_mono ());
    //  Stored, but the sender must wait (queue at least 3/4 full): the
    //  throttle an operator wants to see apart from failed groups
    if (rc == AMI_OK && credit == 0)
        self->throttled += self->member_count;
    for (size_t i = 0; i < self->member_count; i++) {
        s_member_t *member = &self->members [i];
        uint8_t ack [S_ACK_MAX];
        size_t len = 0;
        int erc = s_encode_ack (self, member->batch_id, (uint16_t) rc, credit, ack, sizeof ack,
                                &len);
        assert (erc == AMI_OK);         //  fixed-size message: cannot fail
        (void) erc;
        if (fn)
            fn (member->routing, ack, len, (uint16_t) rc, arg);
        zframe_destroy (&member->routing);
    }
    size_t count = self->member_count;
    s_group_reset (self);
    return count;
}


/* ---------------------------------------------------------------------- */
/*  Statistics                                                              */

void
ami_mdms_ingest_stats (ami_mdms_ingest_t *self, ami_stat_t *out, size_t cap, uint32_t *count)
{
    assert (self && out && count);
    const struct {
        const char *name;
        uint64_t value;
    } rows [] = {
        { "batches_in",         self->batches_in },
        { "blocks_in",          self->blocks_in },
        { "blocks_rejected",    self->blocks_rejected },
        { "batches_failed",     self->batches_failed },
        { "intervals_stored",   self->stored },
        { "intervals_dup",      self->dup },
        { "intervals_conflict", self->conflict },
        { "ingest_commits",     self->commits },
        { "ingest_lat_p50_us",  s_lat_percentile (self, 500) },
        { "ingest_lat_p99_us",  s_lat_percentile (self, 990) },
        { "ingest_lat_max_us",  self->lat_max },
        { "ingest_backlog",     self->queue_count },
        { "ingest_malformed",   self->malformed },
        { "key_cache_evictions", self->evictions },
        { "ingest_throttled",   self->throttled },
    };
    _Static_assert (sizeof rows / sizeof rows [0] == AMI_MDMS_INGEST_STATS,
                    "AMI_MDMS_INGEST_STATS must count the statistics");
    size_t n = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows [0] && n < cap; i++, n++) {
        snprintf (out [n].name, sizeof out [n].name, "%s", rows [i].name);
        out [n].value = rows [i].value;
    }
    *count = (uint32_t) n;
}

uint64_t
ami_mdms_ingest_stat (ami_mdms_ingest_t *self, const char *name)
{
    assert (self && name);
    ami_stat_t stats [AMI_MAX_STATS];
    uint32_t count = 0;
    ami_mdms_ingest_stats (self, stats, AMI_MAX_STATS, &count);
    for (uint32_t i = 0; i < count; i++)
        if (strcmp (stats [i].name, name) == 0)
            return stats [i].value;
    return UINT64_MAX;
}
