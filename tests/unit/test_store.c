/*  test_store.c - cmocka tests for ami_store (the LMDB wrapper).

    Each test gets a fresh temporary directory from the fixture and the
    teardown removes it (and destroys a store the test left open, so a
    failed assertion does not also leak). Keys in the scan tests follow the
    MDMS layout: 8 bytes big-endian (meter index << 32 | interval), so
    bytewise order is (meter, interval) order and one meter's readings are a
    contiguous range.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ami_err.h"
#include "ami_store.h"
#include "ami_test.h"

typedef struct {
    char *dir;              //  the test's private temporary directory
    ami_store_t *store;     //  destroyed by the teardown if still open
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    fx->dir = ami_test_tmpdir ("store");
    if (!fx->dir) {
        free (fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    ami_store_destroy (&fx->store);
    int rc = ami_test_rmtree (fx->dir);
    free (fx->dir);
    free (fx);
    return rc;
}

//  Open fx->dir with the given map size and flags; asserts success.
static ami_store_t *
s_open (fixture_t *fx, size_t map_size, int flags)
{
    int err = -1;
    fx->store = ami_store_new (fx->dir, map_size, 0, flags, &err);
    assert_non_null (fx->store);
    assert_int_equal (err, AMI_OK);
    return fx->store;
}

static unsigned
s_db (ami_store_t *store, const char *name)
{
    unsigned dbi = 0;
    assert_int_equal (ami_store_db (store, name, &dbi), AMI_OK);
    return dbi;
}

//  The MDMS key: big-endian (meter << 32 | interval).
static void
s_key (uint8_t key [8], uint32_t meter, uint32_t interval)
{
    uint64_t v = (uint64_t) meter << 32 | interval;
    for (int i = 7; i >= 0; i--) {
        key [i] = (uint8_t) v;
        v >>= 8;
    }
}

static uint64_t
s_key_value (const void *key)
{
    const uint8_t *p = key;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p [i];
    return v;
}

#define K(meter, interval)  (((uint64_t) (meter) << 32) | (uint32_t) (interval))


//  --------------------------------------------------------------------------
//  Single put / get / del

static void
test_put_get_roundtrip (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");

    const char *val = "0123456789abcdef";
    assert_int_equal (ami_store_put (s, db, "m1", 2, val, 16, 0), AMI_OK);
    char buf [32];
    memset (buf, 'x', sizeof buf);
    size_t vlen = 0;
    assert_int_equal (ami_store_get (s, db, "m1", 2, buf, sizeof buf, &vlen), AMI_OK);
    assert_int_equal (vlen, 16);
    assert_memory_equal (buf, val, 16);
    assert_int_equal (buf [16], 'x');   //  nothing written past the value

    //  Overwrite without NOOVERWRITE replaces the value, also with a
    //  shorter one.
    assert_int_equal (ami_store_put (s, db, "m1", 2, "short", 5, 0), AMI_OK);
    assert_int_equal (ami_store_get (s, db, "m1", 2, buf, sizeof buf, &vlen), AMI_OK);
    assert_int_equal (vlen, 5);
    assert_memory_equal (buf, "short", 5);

    //  A zero-length value is a value.
    assert_int_equal (ami_store_put (s, db, "empty", 5, NULL, 0, 0), AMI_OK);
    vlen = 99;
    assert_int_equal (ami_store_get (s, db, "empty", 5, NULL, 0, &vlen), AMI_OK);
    assert_int_equal (vlen, 0);

    size_t n = 0;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 2);
}

static void
test_get_small_buffer (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "k", 1, "twelve bytes", 12, 0), AMI_OK);

    char buf [8];
    memset (buf, 'x', sizeof buf);
    size_t vlen = 0;
    assert_int_equal (ami_store_get (s, db, "k", 1, buf, sizeof buf, &vlen), AMI_E_LIMIT);
    assert_int_equal (vlen, 12);                //  the size needed
    assert_memory_equal (buf, "xxxxxxxx", 8);   //  buffer untouched

    //  cap 0, buf NULL: a length query.
    vlen = 0;
    assert_int_equal (ami_store_get (s, db, "k", 1, NULL, 0, &vlen), AMI_E_LIMIT);
    assert_int_equal (vlen, 12);
}

static void
test_get_missing_notfound (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_string_equal (ami_store_last_error (s), "");

    char buf [8];
    size_t vlen = 4242;
    assert_int_equal (ami_store_get (s, db, "nope", 4, buf, sizeof buf, &vlen), AMI_E_NOTFOUND);
    assert_int_equal (vlen, 4242);              //  untouched on NOTFOUND
    const char *text = ami_store_last_error (s);
    assert_non_null (text);
    assert_true (strlen (text) > 0);
    assert_non_null (strstr (text, "readings"));
    assert_non_null (strstr (text, "MDB_NOTFOUND"));

    //  A success does not clear the last error text.
    assert_int_equal (ami_store_put (s, db, "yes", 3, "v", 1, 0), AMI_OK);
    assert_non_null (strstr (ami_store_last_error (s), "MDB_NOTFOUND"));
}

static void
test_del (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "a", 1, "1", 1, 0), AMI_OK);
    assert_int_equal (ami_store_put (s, db, "b", 1, "2", 1, 0), AMI_OK);

    assert_int_equal (ami_store_del (s, db, "a", 1), AMI_OK);
    assert_int_equal (ami_store_get (s, db, "a", 1, NULL, 0, NULL), AMI_E_NOTFOUND);
    assert_int_equal (ami_store_del (s, db, "a", 1), AMI_E_NOTFOUND);
    size_t n = 0;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 1);
    char c = 0;
    assert_int_equal (ami_store_get (s, db, "b", 1, &c, 1, NULL), AMI_OK);
    assert_int_equal (c, '2');
}

static void
test_nooverwrite_keeps_original (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "k", 1, "first", 5, AMI_STORE_NOOVERWRITE), AMI_OK);
    assert_int_equal (ami_store_put (s, db, "k", 1, "second", 6, AMI_STORE_NOOVERWRITE),
                      AMI_E_EXISTS);
    char buf [16];
    size_t vlen = 0;
    assert_int_equal (ami_store_get (s, db, "k", 1, buf, sizeof buf, &vlen), AMI_OK);
    assert_int_equal (vlen, 5);
    assert_memory_equal (buf, "first", 5);
    assert_non_null (strstr (ami_store_last_error (s), "MDB_KEYEXIST"));
}

static void
test_key_limits (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    size_t max = ami_store_max_key (s);
    assert_true (max >= 8);

    uint8_t *key = calloc (1, max + 1);
    assert_non_null (key);
    memset (key, 'k', max + 1);
    assert_int_equal (ami_store_put (s, db, key, 0, "v", 1, 0), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_store_put (s, db, key, max + 1, "v", 1, 0), AMI_E_LIMIT);
    assert_int_equal (ami_store_get (s, db, key, max + 1, NULL, 0, NULL), AMI_E_LIMIT);
    assert_int_equal (ami_store_put (s, db, key, max, "v", 1, 0), AMI_OK);
    assert_int_equal (ami_store_get (s, db, key, max, NULL, 0, NULL), AMI_E_LIMIT);

    //  A handle this store never opened.
    assert_int_equal (ami_store_put (s, 4242, "k", 1, "v", 1, 0), AMI_E_BAD_REQUEST);
    size_t n = 0;
    assert_int_equal (ami_store_count (s, 4242, &n), AMI_E_BAD_REQUEST);

    //  In a batch these errors affect only the one put.
    int err = -1;
    ami_store_batch_t *b = ami_store_batch_begin (s, &err);
    assert_non_null (b);
    assert_int_equal (err, AMI_OK);
    assert_int_equal (ami_store_batch_put (b, db, key, max + 1, "v", 1, 0), AMI_E_LIMIT);
    assert_int_equal (ami_store_batch_put (b, db, key, 0, "v", 1, 0), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_store_batch_put (b, db, "ok", 2, "v", 1, 0), AMI_OK);
    assert_int_equal (ami_store_batch_count (b), 1);
    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);
    assert_null (b);
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 2);
    free (key);
}


//  --------------------------------------------------------------------------
//  Databases

static void
test_db_handles (void **state)
{
    fixture_t *fx = *state;
    int err = -1;
    fx->store = ami_store_new (fx->dir, 0, 2, AMI_STORE_NOSYNC, &err);
    assert_non_null (fx->store);
    ami_store_t *s = fx->store;

    unsigned a1 = 0, a2 = 0, b = 0, c = 0;
    assert_int_equal (ami_store_db (s, "a", &a1), AMI_OK);
    assert_int_equal (ami_store_db (s, "a", &a2), AMI_OK);
    assert_int_equal (a1, a2);
    assert_int_equal (ami_store_db (s, "b", &b), AMI_OK);
    assert_int_not_equal (a1, b);

    //  Same key, two databases, two values.
    assert_int_equal (ami_store_put (s, a1, "k", 1, "A", 1, 0), AMI_OK);
    assert_int_equal (ami_store_put (s, b, "k", 1, "B", 1, 0), AMI_OK);
    char v = 0;
    assert_int_equal (ami_store_get (s, a1, "k", 1, &v, 1, NULL), AMI_OK);
    assert_int_equal (v, 'A');
    assert_int_equal (ami_store_get (s, b, "k", 1, &v, 1, NULL), AMI_OK);
    assert_int_equal (v, 'B');

    //  max_dbs is 2: a third database does not fit; an empty name is refused.
    assert_int_equal (ami_store_db (s, "c", &c), AMI_E_LIMIT);
    assert_int_equal (ami_store_db (s, "", &c), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_store_db (s, "b", &c), AMI_OK);
    assert_int_equal (c, b);
}


//  --------------------------------------------------------------------------
//  Batches

static void
test_batch_10000_count (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");

    //  Interleaved across meters, as readings arrive from the head ends:
    //  100 meters x 100 intervals.
    int err = -1;
    ami_store_batch_t *b = ami_store_batch_begin (s, &err);
    assert_non_null (b);
    assert_int_equal (err, AMI_OK);
    for (uint32_t interval = 0; interval < 100; interval++)
        for (uint32_t meter = 0; meter < 100; meter++) {
            uint8_t key [8];
            s_key (key, meter, interval);
            uint32_t val [4] = { meter, interval, meter ^ interval, 0 };
            assert_int_equal (ami_store_batch_put (b, db, key, 8, val, sizeof val,
                                                   AMI_STORE_NOOVERWRITE), AMI_OK);
        }
    assert_int_equal (ami_store_batch_count (b), 10000);

    //  Not visible before commit.
    size_t n = 99;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 0);

    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);
    assert_null (b);
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 10000);

    uint8_t key [8];
    s_key (key, 57, 93);
    uint32_t val [4];
    size_t vlen = 0;
    assert_int_equal (ami_store_get (s, db, key, 8, val, sizeof val, &vlen), AMI_OK);
    assert_int_equal (vlen, sizeof val);
    assert_int_equal (val [0], 57);
    assert_int_equal (val [1], 93);
    assert_int_equal (val [2], 57 ^ 93);
}

static void
test_batch_nooverwrite_stays_usable (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "old", 3, "kept", 4, 0), AMI_OK);

    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    assert_int_equal (ami_store_batch_put (b, db, "new1", 4, "n1", 2, AMI_STORE_NOOVERWRITE), AMI_OK);
    //  Present in the store, and present earlier in the same batch.
    assert_int_equal (ami_store_batch_put (b, db, "old", 3, "lost", 4, AMI_STORE_NOOVERWRITE),
                      AMI_E_EXISTS);
    assert_int_equal (ami_store_batch_put (b, db, "new1", 4, "xx", 2, AMI_STORE_NOOVERWRITE),
                      AMI_E_EXISTS);
    //  The batch is not poisoned: later puts succeed and commit stores them.
    assert_int_equal (ami_store_batch_put (b, db, "new2", 4, "n2", 2, AMI_STORE_NOOVERWRITE), AMI_OK);
    assert_int_equal (ami_store_batch_count (b), 2);
    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);

    char buf [8];
    size_t vlen = 0;
    assert_int_equal (ami_store_get (s, db, "old", 3, buf, sizeof buf, &vlen), AMI_OK);
    assert_int_equal (vlen, 4);
    assert_memory_equal (buf, "kept", 4);
    assert_int_equal (ami_store_get (s, db, "new1", 4, buf, sizeof buf, &vlen), AMI_OK);
    assert_memory_equal (buf, "n1", 2);
    assert_int_equal (ami_store_get (s, db, "new2", 4, buf, sizeof buf, &vlen), AMI_OK);
    assert_memory_equal (buf, "n2", 2);
    size_t n = 0;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 3);
}

static void
test_batch_abort_discards (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    assert_int_equal (ami_store_batch_put (b, db, "k", 1, "v", 1, 0), AMI_OK);
    ami_store_batch_abort (&b);
    assert_null (b);
    ami_store_batch_abort (&b);             //  idempotent
    assert_int_equal (ami_store_get (s, db, "k", 1, NULL, 0, NULL), AMI_E_NOTFOUND);

    //  The write lock was released: single puts work again.
    assert_int_equal (ami_store_put (s, db, "k", 1, "w", 1, 0), AMI_OK);
}

static void
test_batch_busy_and_isolation (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "k", 1, "committed", 9, 0), AMI_OK);

    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    assert_int_equal (ami_store_batch_put (b, db, "k", 1, "pending", 7, 0), AMI_OK);

    //  Other writes through the store would deadlock on LMDB's write lock.
    int err = -1;
    assert_null (ami_store_batch_begin (s, &err));
    assert_int_equal (err, AMI_E_BUSY);
    assert_int_equal (ami_store_put (s, db, "x", 1, "v", 1, 0), AMI_E_BUSY);
    assert_int_equal (ami_store_del (s, db, "k", 1), AMI_E_BUSY);
    unsigned other = 0;
    assert_int_equal (ami_store_db (s, "other", &other), AMI_E_BUSY);
    assert_int_equal (ami_store_db (s, "readings", &other), AMI_OK);   //  cached
    assert_int_equal (other, db);

    //  Reads see the committed value, not the batch's.
    char buf [16];
    size_t vlen = 0;
    assert_int_equal (ami_store_get (s, db, "k", 1, buf, sizeof buf, &vlen), AMI_OK);
    assert_int_equal (vlen, 9);
    assert_memory_equal (buf, "committed", 9);

    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);
    assert_int_equal (ami_store_get (s, db, "k", 1, buf, sizeof buf, &vlen), AMI_OK);
    assert_int_equal (vlen, 7);
    assert_memory_equal (buf, "pending", 7);
    assert_int_equal (ami_store_put (s, db, "x", 1, "v", 1, 0), AMI_OK);
}

static void
test_destroy_with_open_batch (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    assert_int_equal (ami_store_batch_put (b, db, "k", 1, "v", 1, 0), AMI_OK);
    ami_store_destroy (&fx->store);
    assert_null (fx->store);
    ami_store_destroy (&fx->store);         //  idempotent

    //  The orphaned batch is still the caller's to free; it can do nothing.
    assert_int_equal (ami_store_batch_put (b, db, "k2", 2, "v", 1, 0), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_store_batch_commit (&b), AMI_E_BAD_REQUEST);
    assert_null (b);

    //  Nothing of it was stored.
    s = s_open (fx, 0, AMI_STORE_NOSYNC);
    db = s_db (s, "readings");
    size_t n = 99;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 0);
}


//  --------------------------------------------------------------------------
//  Range scans

typedef struct {
    uint64_t keys [64];
    size_t seen;
    size_t stop_after;      //  0: never stop
    bool bad_value;         //  a value did not match its key
} collect_t;

static int
s_collect (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    collect_t *c = arg;
    uint64_t k = klen == 8 ? s_key_value (key) : UINT64_MAX;
    //  Each value is the 8-byte key itself, so the pairing can be checked.
    if (vlen != 8 || memcmp (key, val, 8) != 0)
        c->bad_value = true;
    if (c->seen < sizeof c->keys / sizeof c->keys [0])
        c->keys [c->seen] = k;
    c->seen++;
    return c->stop_after && c->seen >= c->stop_after;
}

//  Meters 1..5 x intervals 0..9, stored in a scrambled order.
static unsigned
s_fill_meters (ami_store_t *s)
{
    unsigned db = s_db (s, "readings");
    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    for (uint32_t i = 0; i < 50; i++) {
        uint32_t j = (i * 17) % 50;         //  17 is coprime with 50: a permutation
        uint8_t key [8];
        s_key (key, 1 + j / 10, j % 10);
        assert_int_equal (ami_store_batch_put (b, db, key, 8, key, 8, 0), AMI_OK);
    }
    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);
    return db;
}

static void
test_scan_forward_bounds (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_fill_meters (s);

    //  Meter 3, intervals 2..7: both bounds are stored keys, both included.
    uint8_t from [8], to [8];
    s_key (from, 3, 2);
    s_key (to, 3, 7);
    collect_t c = { .seen = 0 };
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, false, s_collect, &c), AMI_OK);
    assert_false (c.bad_value);
    assert_int_equal (c.seen, 6);
    for (uint32_t i = 0; i < 6; i++)
        assert_int_equal (c.keys [i], K (3, 2 + i));

    //  All of meter 3: interval 0 .. UINT32_MAX.
    s_key (from, 3, 0);
    s_key (to, 3, UINT32_MAX);
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 10);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal (c.keys [i], K (3, i));

    //  A 4-byte prefix as the lower bound sorts before every key with it.
    const uint8_t prefix [4] = { 0, 0, 0, 4 };
    s_key (to, 4, 1);
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, prefix, 4, to, 8, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 2);
    assert_int_equal (c.keys [0], K (4, 0));
    assert_int_equal (c.keys [1], K (4, 1));

    //  Empty ranges: from > to, a meter with no readings, to of length 0.
    s_key (from, 3, 7);
    s_key (to, 3, 2);
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, false, s_collect, &c), AMI_OK);
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, true, s_collect, &c), AMI_OK);
    s_key (from, 9, 0);
    s_key (to, 9, UINT32_MAX);
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, false, s_collect, &c), AMI_OK);
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, true, s_collect, &c), AMI_OK);
    assert_int_equal (ami_store_scan (s, db, NULL, 0, "", 0, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 0);

    //  Stopped by the callback after 3: still AMI_OK.
    memset (&c, 0, sizeof c);
    c.stop_after = 3;
    assert_int_equal (ami_store_scan (s, db, NULL, 0, NULL, 0, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 3);
    assert_int_equal (c.keys [2], K (1, 2));
}

static void
test_scan_open_ended (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_fill_meters (s);

    //  No bounds: all 50 in (meter, interval) order.
    collect_t c = { .seen = 0 };
    assert_int_equal (ami_store_scan (s, db, NULL, 0, NULL, 0, false, s_collect, &c), AMI_OK);
    assert_false (c.bad_value);
    assert_int_equal (c.seen, 50);
    for (uint32_t i = 0; i < 50; i++)
        assert_int_equal (c.keys [i], K (1 + i / 10, i % 10));

    //  Up to (2, 4): meter 1 whole, meter 2 intervals 0..4.
    uint8_t bound [8];
    s_key (bound, 2, 4);
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, NULL, 0, bound, 8, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 15);
    assert_int_equal (c.keys [0], K (1, 0));
    assert_int_equal (c.keys [14], K (2, 4));

    //  From (5, 5) on: 5 keys. A zero-length from is no lower bound too.
    s_key (bound, 5, 5);
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, bound, 8, NULL, 0, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 5);
    assert_int_equal (c.keys [0], K (5, 5));
    assert_int_equal (c.keys [4], K (5, 9));
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, "", 0, NULL, 0, false, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 50);

    //  Empty database: no calls.
    unsigned empty = s_db (s, "empty");
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, empty, NULL, 0, NULL, 0, false, s_collect, &c), AMI_OK);
    assert_int_equal (ami_store_scan (s, empty, NULL, 0, NULL, 0, true, s_collect, &c), AMI_OK);
    assert_int_equal (ami_store_scan (s, empty, bound, 8, bound, 8, true, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 0);
}

static void
test_scan_reverse_last_n (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_fill_meters (s);

    //  "Last 3 readings of meter 3": the upper bound (3, UINT32_MAX) is not
    //  a stored key, so the walk starts at the greatest key below it.
    uint8_t from [8], to [8];
    s_key (from, 3, 0);
    s_key (to, 3, UINT32_MAX);
    collect_t c = { .stop_after = 3 };
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, true, s_collect, &c), AMI_OK);
    assert_false (c.bad_value);
    assert_int_equal (c.seen, 3);
    assert_int_equal (c.keys [0], K (3, 9));
    assert_int_equal (c.keys [1], K (3, 8));
    assert_int_equal (c.keys [2], K (3, 7));

    //  Stored upper bound is included; the lower bound stops the walk.
    s_key (from, 2, 7);
    s_key (to, 3, 1);
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, from, 8, to, 8, true, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 5);
    const uint64_t want [5] = { K (3, 1), K (3, 0), K (2, 9), K (2, 8), K (2, 7) };
    for (int i = 0; i < 5; i++)
        assert_int_equal (c.keys [i], want [i]);

    //  Upper bound above every key: starts at the last key.
    s_key (to, 99, 0);
    memset (&c, 0, sizeof c);
    c.stop_after = 1;
    assert_int_equal (ami_store_scan (s, db, NULL, 0, to, 8, true, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 1);
    assert_int_equal (c.keys [0], K (5, 9));

    //  No bounds: all 50 in descending order.
    memset (&c, 0, sizeof c);
    assert_int_equal (ami_store_scan (s, db, NULL, 0, NULL, 0, true, s_collect, &c), AMI_OK);
    assert_int_equal (c.seen, 50);
    for (uint32_t i = 0; i < 50; i++)
        assert_int_equal (c.keys [i], K (5 - i / 10, 9 - i % 10));
}

typedef struct {
    ami_store_t *store;
    unsigned src, dst;
    int rc;                 //  first failure inside the callback
    size_t calls;
} nested_t;

//  Reads and writes the store from inside a scan callback.
static int
s_nested (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    nested_t *n = arg;
    n->calls++;
    uint8_t buf [8];
    size_t got = 0;
    int rc = ami_store_get (n->store, n->src, key, klen, buf, sizeof buf, &got);
    if (rc == AMI_OK && (got != vlen || memcmp (buf, val, vlen) != 0))
        rc = AMI_E_INTERNAL;
    if (rc == AMI_OK)
        rc = ami_store_put (n->store, n->dst, key, klen, val, vlen, 0);
    if (rc != AMI_OK && n->rc == AMI_OK)
        n->rc = rc;
    return 0;
}

static void
test_scan_callback_uses_store (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned src = s_fill_meters (s);
    unsigned dst = s_db (s, "copy");
    nested_t n = { .store = s, .src = src, .dst = dst, .rc = AMI_OK };
    assert_int_equal (ami_store_scan (s, src, NULL, 0, NULL, 0, false, s_nested, &n), AMI_OK);
    assert_int_equal (n.rc, AMI_OK);
    assert_int_equal (n.calls, 50);
    size_t count = 0;
    assert_int_equal (ami_store_count (s, dst, &count), AMI_OK);
    assert_int_equal (count, 50);
    //  The outer snapshot was released: a later read sees the copies.
    uint8_t key [8];
    s_key (key, 4, 4);
    uint8_t got [8];
    assert_int_equal (ami_store_get (s, dst, key, 8, got, sizeof got, NULL), AMI_OK);
    assert_memory_equal (got, key, 8);
}


//  --------------------------------------------------------------------------
//  Open, reopen, read-only, info

static void
test_reopen_keeps_data (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, 0);         //  durable commits
    unsigned db = s_db (s, "readings");
    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    for (uint32_t i = 0; i < 100; i++) {
        uint8_t key [8];
        s_key (key, 7, i);
        assert_int_equal (ami_store_batch_put (b, db, key, 8, &i, sizeof i, 0), AMI_OK);
    }
    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);
    assert_int_equal (ami_store_put (s, db, "single", 6, "put", 3, 0), AMI_OK);
    unsigned meta = s_db (s, "meta");
    assert_int_equal (ami_store_put (s, meta, "version", 7, "1", 1, 0), AMI_OK);
    ami_store_destroy (&fx->store);
    assert_null (fx->store);

    s = s_open (fx, 0, 0);
    db = s_db (s, "readings");
    size_t n = 0;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 101);
    for (uint32_t i = 0; i < 100; i++) {
        uint8_t key [8];
        s_key (key, 7, i);
        uint32_t v = UINT32_MAX;
        assert_int_equal (ami_store_get (s, db, key, 8, &v, sizeof v, NULL), AMI_OK);
        assert_int_equal (v, i);
    }
    char buf [4];
    assert_int_equal (ami_store_get (s, db, "single", 6, buf, sizeof buf, NULL), AMI_OK);
    assert_memory_equal (buf, "put", 3);
    meta = s_db (s, "meta");
    assert_int_equal (ami_store_get (s, meta, "version", 7, buf, sizeof buf, NULL), AMI_OK);
    assert_int_equal (buf [0], '1');
}

static void
test_read_only (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "k", 1, "v", 1, 0), AMI_OK);
    ami_store_destroy (&fx->store);

    s = s_open (fx, 0, AMI_STORE_RDONLY);
    db = s_db (s, "readings");
    char v = 0;
    assert_int_equal (ami_store_get (s, db, "k", 1, &v, 1, NULL), AMI_OK);
    assert_int_equal (v, 'v');
    assert_int_equal (ami_store_put (s, db, "k2", 2, "v", 1, 0), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_store_del (s, db, "k", 1), AMI_E_BAD_REQUEST);
    int err = -1;
    assert_null (ami_store_batch_begin (s, &err));
    assert_int_equal (err, AMI_E_BAD_REQUEST);
    unsigned other = 0;
    assert_int_equal (ami_store_db (s, "missing", &other), AMI_E_NOTFOUND);

    //  Read-only never creates the directory.
    char *sub = ami_test_path (fx->dir, "nothing-here");
    assert_non_null (sub);
    err = -1;
    ami_store_t *none = ami_store_new (sub, 0, 0, AMI_STORE_RDONLY, &err);
    assert_null (none);
    assert_int_equal (err, AMI_E_IO);
    struct stat st;
    assert_int_equal (stat (sub, &st), -1);
    free (sub);
}

static void
test_new_creates_private_dirs (void **state)
{
    fixture_t *fx = *state;
    char *a = ami_test_path (fx->dir, "a");
    char *ab = ami_test_path (a, "b");
    char *data = ami_test_path (ab, "data.mdb");
    assert_non_null (data);

    int err = -1;
    fx->store = ami_store_new (ab, 0, 0, AMI_STORE_NOSYNC, &err);
    assert_non_null (fx->store);
    assert_int_equal (err, AMI_OK);
    struct stat st;
    assert_int_equal (stat (a, &st), 0);
    assert_true (S_ISDIR (st.st_mode));
    assert_int_equal (st.st_mode & 0777, 0700);
    assert_int_equal (stat (ab, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0700);
    assert_int_equal (stat (data, &st), 0);
    assert_true (S_ISREG (st.st_mode));
    assert_int_equal (st.st_mode & 0077, 0);    //  no access for group/other
    free (data);
    free (ab);
    free (a);
}

static void
test_new_under_regular_file_fails (void **state)
{
    fixture_t *fx = *state;
    char *file = ami_test_path (fx->dir, "plain");
    assert_non_null (file);
    int fd = open (file, O_CREAT | O_WRONLY, 0600);
    assert_true (fd >= 0);
    close (fd);

    //  A directory cannot be created under a regular file (ENOTDIR).
    char *dir = ami_test_path (file, "store");
    assert_non_null (dir);
    int err = -1;
    ami_store_t *s = ami_store_new (dir, 0, 0, 0, &err);
    assert_null (s);
    assert_int_equal (err, AMI_E_IO);

    //  The path itself names a regular file.
    err = -1;
    s = ami_store_new (file, 0, 0, 0, &err);
    assert_null (s);
    assert_int_equal (err, AMI_E_IO);

    //  err is optional.
    assert_null (ami_store_new (dir, 0, 0, 0, NULL));
    free (dir);
    free (file);
}

static void
test_info (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    long page = sysconf (_SC_PAGESIZE);
    assert_true (page > 0);
    size_t map = 0, used = 0;
    assert_int_equal (ami_store_info (s, &map, &used), AMI_OK);
    assert_int_equal (map, AMI_STORE_DEFAULT_MAP_SIZE);
    assert_int_equal (used, 2 * (size_t) page);     //  the two meta pages
    size_t used0 = used;

    unsigned db = s_db (s, "readings");
    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    for (uint32_t i = 0; i < 10000; i++) {
        uint8_t key [8], val [16] = { 0 };
        s_key (key, i % 1000, i / 1000);
        assert_int_equal (ami_store_batch_put (b, db, key, 8, val, 16, 0), AMI_OK);
    }
    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);
    assert_int_equal (ami_store_info (s, NULL, &used), AMI_OK);
    //  At least key + value bytes per reading, and not absurdly more
    //  (DESIGN.md section 8 measured 46 for interleaved inserts).
    assert_true (used - used0 >= 10000 * 24);
    assert_true (used - used0 <= 10000 * 100);
    ami_store_destroy (&fx->store);

    //  Reopened with a map smaller than the data, LMDB raises it to fit.
    s = s_open (fx, 16 * (size_t) page, AMI_STORE_NOSYNC);
    size_t used2 = 0;
    assert_int_equal (ami_store_info (s, &map, &used2), AMI_OK);
    assert_int_equal (used2, used);
    assert_true (map >= used);
    assert_true (map > 16 * (size_t) page);
    ami_store_destroy (&fx->store);

    //  A new store's map size is rounded up to whole pages.
    char *sub = ami_test_path (fx->dir, "fresh");
    assert_non_null (sub);
    int err = -1;
    fx->store = ami_store_new (sub, 16 * (size_t) page + 1, 0, AMI_STORE_NOSYNC, &err);
    free (sub);
    assert_non_null (fx->store);
    assert_int_equal (ami_store_info (fx->store, &map, NULL), AMI_OK);
    assert_int_equal (map, 17 * (size_t) page);
}


//  The MDMS may create the store in one thread and use it in its actor
//  thread (one thread at a time). This thread reads what main wrote, then
//  writes in a batch and scans.
static void *
s_other_thread (void *arg)
{
    ami_store_t *s = arg;
    uintptr_t ok = 0;
    unsigned db = 0;
    char v = 0;
    size_t n = 0;
    collect_t c = { .seen = 0 };
    ami_store_batch_t *b = NULL;
    if (ami_store_db (s, "readings", &db) == AMI_OK
    &&  ami_store_get (s, db, "main", 4, &v, 1, NULL) == AMI_OK && v == 'M'
    &&  (b = ami_store_batch_begin (s, NULL)) != NULL
    &&  ami_store_batch_put (b, db, "thread", 6, "T", 1, 0) == AMI_OK
    &&  ami_store_batch_commit (&b) == AMI_OK
    &&  ami_store_scan (s, db, NULL, 0, NULL, 0, false, s_collect, &c) == AMI_OK
    &&  ami_store_count (s, db, &n) == AMI_OK && n == 2 && c.seen == 2)
        ok = 1;
    ami_store_batch_abort (&b);
    return (void *) ok;
}

static void
test_handoff_between_threads (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, 0, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");
    assert_int_equal (ami_store_put (s, db, "main", 4, "M", 1, 0), AMI_OK);
    char v = 0;
    assert_int_equal (ami_store_get (s, db, "main", 4, &v, 1, NULL), AMI_OK);

    pthread_t thread;
    assert_int_equal (pthread_create (&thread, NULL, s_other_thread, s), 0);
    void *ok = NULL;
    assert_int_equal (pthread_join (thread, &ok), 0);
    assert_true (ok == (void *) 1);

    //  And back: main sees the other thread's write.
    assert_int_equal (ami_store_get (s, db, "thread", 6, &v, 1, NULL), AMI_OK);
    assert_int_equal (v, 'T');
}


//  --------------------------------------------------------------------------
//  MAP_FULL

//  64 KiB: 16 pages, a few hundred readings (LMDB's floor is 2 pages; one
//  named database with one record needs more than 16 KiB).
#define TINY_MAP    (64 * 1024)

static void
test_map_full_single_put (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, TINY_MAP, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");

    uint32_t i;
    int rc = AMI_OK;
    uint8_t key [8], val [16] = { 0 };
    for (i = 0; i < 100000; i++) {
        s_key (key, 1, i);
        memcpy (val, &i, sizeof i);
        rc = ami_store_put (s, db, key, 8, val, 16, 0);
        if (rc != AMI_OK)
            break;
    }
    assert_int_equal (rc, AMI_E_MAP_FULL);
    assert_true (i > 10);
    assert_non_null (strstr (ami_store_last_error (s), "MDB_MAP_FULL"));

    //  Every put that returned AMI_OK is there; the failed one is not.
    size_t n = 0;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, i);
    s_key (key, 1, i);
    assert_int_equal (ami_store_get (s, db, key, 8, NULL, 0, NULL), AMI_E_NOTFOUND);
    for (uint32_t j = 0; j < i; j++) {
        uint8_t got [16];
        s_key (key, 1, j);
        assert_int_equal (ami_store_get (s, db, key, 8, got, sizeof got, NULL), AMI_OK);
        assert_memory_equal (got, &j, sizeof j);
    }
}

static void
test_map_full_batch (void **state)
{
    fixture_t *fx = *state;
    ami_store_t *s = s_open (fx, TINY_MAP, AMI_STORE_NOSYNC);
    unsigned db = s_db (s, "readings");

    //  Committed before the failure: must survive it.
    uint8_t key [8], val [16] = { 0 };
    ami_store_batch_t *b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    for (uint32_t i = 0; i < 50; i++) {
        s_key (key, 1, i);
        memcpy (val, &i, sizeof i);
        assert_int_equal (ami_store_batch_put (b, db, key, 8, val, 16, 0), AMI_OK);
    }
    assert_int_equal (ami_store_batch_commit (&b), AMI_OK);

    b = ami_store_batch_begin (s, NULL);
    assert_non_null (b);
    int rc = AMI_OK;
    for (uint32_t i = 0; i < 100000 && rc == AMI_OK; i++) {
        s_key (key, 2, i);
        rc = ami_store_batch_put (b, db, key, 8, val, 16, 0);
    }
    assert_int_equal (rc, AMI_E_MAP_FULL);
    size_t good = ami_store_batch_count (b);
    assert_true (good > 0);
    //  The batch is failed: later puts, even NOOVERWRITE ones that would
    //  otherwise give EXISTS, report MAP_FULL and are not counted.
    s_key (key, 9, 9);
    assert_int_equal (ami_store_batch_put (b, db, key, 8, val, 16, 0), AMI_E_MAP_FULL);
    s_key (key, 1, 0);
    assert_int_equal (ami_store_batch_put (b, db, key, 8, val, 16, AMI_STORE_NOOVERWRITE),
                      AMI_E_MAP_FULL);
    assert_int_equal (ami_store_batch_count (b), good);
    //  Commit refuses and frees the batch.
    assert_int_equal (ami_store_batch_commit (&b), AMI_E_MAP_FULL);
    assert_null (b);
    assert_non_null (strstr (ami_store_last_error (s), "AMI_E_MAP_FULL"));

    //  Reads still work and see exactly the first batch.
    size_t n = 0;
    assert_int_equal (ami_store_count (s, db, &n), AMI_OK);
    assert_int_equal (n, 50);
    for (uint32_t i = 0; i < 50; i++) {
        uint8_t got [16];
        s_key (key, 1, i);
        assert_int_equal (ami_store_get (s, db, key, 8, got, sizeof got, NULL), AMI_OK);
        assert_memory_equal (got, &i, sizeof i);
    }
    s_key (key, 2, 0);
    assert_int_equal (ami_store_get (s, db, key, 8, NULL, 0, NULL), AMI_E_NOTFOUND);

    //  The write lock was released: a small write fits again.
    assert_int_equal (ami_store_put (s, db, "after", 5, "ok", 2, 0), AMI_OK);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
#define T(name) cmocka_unit_test_setup_teardown (name, s_setup, s_teardown)
        T (test_put_get_roundtrip),
        T (test_get_small_buffer),
        T (test_get_missing_notfound),
        T (test_del),
        T (test_nooverwrite_keeps_original),
        T (test_key_limits),
        T (test_db_handles),
        T (test_batch_10000_count),
        T (test_batch_nooverwrite_stays_usable),
        T (test_batch_abort_discards),
        T (test_batch_busy_and_isolation),
        T (test_destroy_with_open_batch),
        T (test_scan_forward_bounds),
        T (test_scan_open_ended),
        T (test_scan_reverse_last_n),
        T (test_scan_callback_uses_store),
        T (test_reopen_keeps_data),
        T (test_read_only),
        T (test_new_creates_private_dirs),
        T (test_new_under_regular_file_fails),
        T (test_info),
        T (test_handoff_between_threads),
        T (test_map_full_single_put),
        T (test_map_full_batch),
#undef T
    };
    return cmocka_run_group_tests_name ("ami_store", tests, NULL, NULL);
}
