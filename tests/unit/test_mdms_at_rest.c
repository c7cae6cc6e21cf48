/*  test_mdms_at_rest.c - SEC-CONF-2: meter data is encrypted at rest in
    the MDMS database, and no readable copy of customer data stays on the
    MDMS host.

    Through the real MDMS (mdms_harness: broker, MDMS actor, a meter-side
    MDP worker, a head end on the ingest socket): after on-demand reads and
    interval ingest, data.mdb holds neither the encoded READING, nor its
    proof, nor any interval record in clear, while the API still serves
    them; a value altered in the file, copied under another key, or with a
    changed presence bitmap is refused (AMI_E_STORAGE, logged) and never
    served or merged into; a schema-1 database with clear records is
    refused. The registry: the MDMS refuses customer columns in a file
    group or others can read, and ami-keygen writes meters.tsv 0600 and
    flags a readable one (its source is compiled in, as test_keygen does).

    The database file is attacked with LMDB directly (mdb_*), only while no
    MDMS has it open (LMDB: one open environment per file and process).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_mdms.h"
#include "ami_mdms_db.h"
#include "ami_mdms_ingest.h"
#include "ami_msg.h"
#include "ami_store.h"
#include "ami_test.h"
#include "mdms_harness.h"

//  ami-keygen is a program, not a library: its code is compiled in (its
//  statics are s_*; this file's helpers are t_*)
#include "../../tools/ami-keygen/keygen.c"

/*  A UTC midnight (2026-06-01): day d's intervals end at T0 + d * 86400 +
    900 .. T0 + (d + 1) * 86400, all in bucket T0 / 900 / 96 + d. */
#define T0          1780272000u
#define DAY         86400u
#define HOUR        3600u
#define BUCKET0     (T0 / MH_INTERVAL_S / AMI_MDMS_INTERVAL_SLOTS)

static uint64_t s_batch_id = 5000;


/* ---------------------------------------------------------------------- */
/*  Helpers                                                                 */

static char *
t_meter (uint32_t i)
{
    static char ids [4][AMI_MAX_ID + 1];
    static int next = 0;
    char *id = ids [next++ % 4];
    snprintf (id, AMI_MAX_ID + 1, "MTR-%06u", i);
    return id;
}

/*  The whole file (caller frees). */
static uint8_t *
t_slurp (const char *path, size_t *size)
{
    FILE *file = fopen (path, "rb");
    assert_non_null (file);
    assert_int_equal (fseek (file, 0, SEEK_END), 0);
    long len = ftell (file);
    assert_true (len > 0);
    rewind (file);
    uint8_t *data = (uint8_t *) malloc ((size_t) len);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) len, file), (size_t) len);
    fclose (file);
    *size = (size_t) len;
    return data;
}

static bool
t_in_file (const uint8_t *file, size_t size, const void *needle, size_t len)
{
    return memmem (file, size, needle, len) != NULL;
}

/*  Log capture: what the MDMS (any thread) logs between start and end. */
static FILE *s_capture;

static void
t_capture_start (void)
{
    s_capture = tmpfile ();
    assert_non_null (s_capture);
    zsys_set_logstream (s_capture);
}

static char *
t_capture_end (void)
{
    zsys_set_logstream (stderr);
    fflush (s_capture);
    long size = ftell (s_capture);
    assert_true (size >= 0);
    char *text = (char *) calloc (1, (size_t) size + 1);
    assert_non_null (text);
    rewind (s_capture);
    assert_int_equal (fread (text, 1, (size_t) size, s_capture), (size_t) size);
    fclose (s_capture);
    s_capture = NULL;
    return text;
}

/*  stderr capture, for ami-keygen's diagnostics. */
static int s_saved_stderr = -1;
static FILE *s_err_file;

static void
t_stderr_start (void)
{
    fflush (stderr);
    s_err_file = tmpfile ();
    assert_non_null (s_err_file);
    s_saved_stderr = dup (STDERR_FILENO);
    assert_true (s_saved_stderr >= 0);
    assert_true (dup2 (fileno (s_err_file), STDERR_FILENO) >= 0);
}

static char *
t_stderr_end (void)
{
    fflush (stderr);
    assert_true (dup2 (s_saved_stderr, STDERR_FILENO) >= 0);
    close (s_saved_stderr);
    s_saved_stderr = -1;
    long size = lseek (fileno (s_err_file), 0, SEEK_END);
    assert_true (size >= 0);
    char *text = (char *) calloc (1, (size_t) size + 1);
    assert_non_null (text);
    assert_int_equal (pread (fileno (s_err_file), text, (size_t) size, 0), size);
    fclose (s_err_file);
    s_err_file = NULL;
    return text;
}

/*  Raw LMDB access to an MDMS database directory (no MDMS running on it). */
typedef struct {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
} t_raw_t;

static void
t_raw_begin (t_raw_t *raw, const char *dir, const char *db, bool write)
{
    memset (raw, 0, sizeof *raw);
    assert_int_equal (mdb_env_create (&raw->env), 0);
    assert_int_equal (mdb_env_set_maxdbs (raw->env, 16), 0);
    assert_int_equal (mdb_env_set_mapsize (raw->env, 64u << 20), 0);
    assert_int_equal (mdb_env_open (raw->env, dir, write ? 0 : MDB_RDONLY, 0600), 0);
    assert_int_equal (mdb_txn_begin (raw->env, NULL, write ? 0 : MDB_RDONLY, &raw->txn), 0);
    assert_int_equal (mdb_dbi_open (raw->txn, db, 0, &raw->dbi), 0);
}

static void
t_raw_end (t_raw_t *raw, bool commit)
{
    if (commit)
        assert_int_equal (mdb_txn_commit (raw->txn), 0);
    else
        mdb_txn_abort (raw->txn);
    mdb_env_close (raw->env);
}

/*  The first key >= (key, klen) in raw's database, copied into key_out
    (and its length into *key_len) and its value into a new buffer. */
static uint8_t *
t_raw_first (t_raw_t *raw, const void *key, size_t klen, uint8_t *key_out, size_t *key_len,
             size_t *vlen)
{
    MDB_cursor *cursor = NULL;
    assert_int_equal (mdb_cursor_open (raw->txn, raw->dbi, &cursor), 0);
    MDB_val k = { klen, (void *) key }, v;
    assert_int_equal (mdb_cursor_get (cursor, &k, &v, MDB_SET_RANGE), 0);
    memcpy (key_out, k.mv_data, k.mv_size);
    *key_len = k.mv_size;
    uint8_t *value = (uint8_t *) malloc (v.mv_size);
    assert_non_null (value);
    memcpy (value, v.mv_data, v.mv_size);
    *vlen = v.mv_size;
    mdb_cursor_close (cursor);
    return value;
}

static uint8_t *
t_raw_get (t_raw_t *raw, const void *key, size_t klen, size_t *vlen)
{
    MDB_val k = { klen, (void *) key }, v;
    assert_int_equal (mdb_get (raw->txn, raw->dbi, &k, &v), 0);
    uint8_t *value = (uint8_t *) malloc (v.mv_size);
    assert_non_null (value);
    memcpy (value, v.mv_data, v.mv_size);
    *vlen = v.mv_size;
    return value;
}

static void
t_raw_put (t_raw_t *raw, const void *key, size_t klen, const void *val, size_t vlen)
{
    MDB_val k = { klen, (void *) key }, v = { vlen, (void *) val };
    assert_int_equal (mdb_put (raw->txn, raw->dbi, &k, &v, 0), 0);
}

/*  The interval key of meter i, day d. */
static size_t
t_interval_key (uint32_t i, uint32_t day, uint8_t *key)
{
    size_t klen = ami_mdms_db_interval_key (t_meter (i), BUCKET0 + day, key);
    assert_true (klen > 0);
    return klen;
}

/*  A day of meter i in one BATCH (24 hourly blocks of 4 intervals), sent
    by the head end; asserts the ack. */
static void
t_ingest_day (zsock_t *he, uint32_t i, uint32_t day)
{
    uint8_t key [AMI_E2E_PROFILE_KEY_SIZE];
    mh_profile_key (i, key);
    mh_batch_t b;
    uint64_t id = s_batch_id++;
    mh_batch_init (&b, id, "AGG-T");
    for (uint32_t h = 0; h < 24; h++)
        mh_batch_add_meter (&b, i, key, T0 + day * DAY + h * HOUR + MH_INTERVAL_S, 4);
    zframe_t *frame = mh_batch_frame (&b);
    ami_batch_ack_t ack = mh_headend_send (he, frame, id);
    assert_int_equal (ack.status, AMI_OK);
    zframe_destroy (&frame);
    mh_batch_free (&b);
    sodium_memzero (key, sizeof key);
}

/*  The 16 bytes an interval of meter i ending at end_s is stored as
    (before sealing), as the header's layout says. */
static void
t_slot_bytes (uint32_t i, uint32_t end_s, uint8_t out [AMI_MDMS_INTERVAL_RECORD])
{
    ami_profile_t expect;
    mh_profile_fill (&expect, t_meter (i), end_s, 1);
    uint8_t plain [AMI_MDMS_INTERVAL_PLAIN];
    memset (plain, 0, sizeof plain);
    ami_mdms_db_interval_put (plain, 0, &expect.records [0]);
    memcpy (out, plain + AMI_MDMS_INTERVAL_BITMAP, AMI_MDMS_INTERVAL_RECORD);
    //  the layout as documented: u64 LE import_wh first
    uint64_t import_wh = 0;
    for (int k = 7; k >= 0; k--)
        import_wh = (import_wh << 8) | out [k];
    assert_true (import_wh == expect.records [0].import_wh);
}

/*  INTERVALS of meter i: a full day d, each value as mh_profile_fill made it. */
static void
t_assert_day (mh_env_t *env, uint32_t i, uint32_t day)
{
    uint64_t from = (uint64_t) (T0 + day * DAY) * 1000 + 1;
    uint64_t to = (uint64_t) (T0 + (day + 1) * DAY) * 1000;
    ami_msg_t *r = mh_intervals (env, env->client, t_meter (i), from, to, 0);
    assert_int_equal (r->api_intervals.count, AMI_MDMS_INTERVAL_SLOTS);
    for (uint32_t k = 0; k < AMI_MDMS_INTERVAL_SLOTS; k++) {
        ami_profile_t expect;
        uint32_t end_s = T0 + day * DAY + (k + 1) * MH_INTERVAL_S;
        mh_profile_fill (&expect, t_meter (i), end_s, 1);
        const ami_interval_t *got = &r->api_intervals.records [k];
        assert_int_equal (got->end_s, end_s);
        assert_true (got->import_wh == expect.records [0].import_wh);
        assert_true (got->export_wh == expect.records [0].export_wh);
        assert_int_equal (got->status, expect.records [0].status);
    }
}

/*  The API refuses with ERROR(AMI_E_STORAGE). */
static void
t_assert_storage_error (mh_env_t *env, int action, uint32_t i)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (env, env->client, corr, action, t_meter (i), 0, 0, 0, 0);
    if (r->type != AMI_MSG_ERROR)
        fail_msg ("%s of %s: %s, expected ERROR AMI_E_STORAGE", ami_action_name (action),
                  t_meter (i), ami_msg_type_name (r->type));
    mh_assert_error (r, corr, AMI_E_STORAGE);
}

static int
t_count_row (const ami_mdms_reading_t *row, void *arg)
{
    (void) row;
    (*(int *) arg)++;
    return 0;
}


/* ---------------------------------------------------------------------- */
/*  Meter data at rest                                                      */

/*  After reads and interval ingest through the MDMS, data.mdb holds no
    plaintext READING, proof or interval record, yet the API serves them
    all; the presence bitmap stays in clear and counts what is stored, the
    way ami-load counts it with LMDB directly. */
static void
test_sec_conf_2_meter_data_sealed_at_rest (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000050", AMI_STATE_READY);
    //  Two reads; the second answer's bytes (the proof) are recorded
    mh_read_ok (&env, "MTR-000050");
    mh_worker_modes (&env.worker, 1, W_RECORD);
    mh_read_ok (&env, "MTR-000050");
    ami_reading_t sent = env.worker.last_good;
    uint8_t proof [sizeof env.worker.recorded];
    size_t proof_len = env.worker.recorded_len;
    assert_true (proof_len > AMI_SIGNATURE_SIZE);
    memcpy (proof, env.worker.recorded, proof_len);
    //  The READING as the meter encoded it (the encoder is deterministic)
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_READING);
    m->reading = sent;
    uint8_t reading [AMI_MAX_SEALED];
    size_t reading_len = mh_encode (m, reading, sizeof reading);
    ami_msg_destroy (&m);
    assert_true (reading_len > 64);

    //  Two days of meter 50, one of meter 51, through a head end
    zsock_t *he = mh_headend_connect (&env);
    t_ingest_day (he, 50, 0);
    t_ingest_day (he, 50, 1);
    t_ingest_day (he, 51, 0);
    zsock_destroy (&he);

    //  The API serves them, opened
    ami_msg_t *r = mh_history (&env, env.client, "MTR-000050", 10);
    assert_int_equal (r->api_readings.count, 2);
    const ami_reading_t *back = &r->api_readings.readings [0].reading;   //  newest first
    assert_true (back->read_ms == sent.read_ms);
    assert_int_equal (back->register_count, sent.register_count);
    for (uint32_t k = 0; k < sent.register_count; k++) {
        assert_memory_equal (back->registers [k].obis, sent.registers [k].obis, AMI_OBIS_SIZE);
        assert_true (back->registers [k].value == sent.registers [k].value);
    }
    t_assert_day (&env, 50, 0);
    t_assert_day (&env, 50, 1);
    t_assert_day (&env, 51, 0);
    ami_api_verify_t *v = NULL;
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    r = mh_call (&env, env.client, corr, AMI_ACT_VERIFY, "MTR-000050", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_VERIFY);
    v = &r->api_verify;
    assert_int_equal (v->checked, 2);
    assert_int_equal (v->failed, 0);
    mh_mdms_stop (&env);

    //  The file: no plaintext meter data anywhere in it
    char *path = ami_test_path (env.db, "data.mdb");
    size_t size = 0;
    uint8_t *file = t_slurp (path, &size);
    if (t_in_file (file, size, reading, reading_len))
        fail_msg ("the encoded READING is in data.mdb in clear");
    //  its registers alone (the READING without its header fields)
    if (t_in_file (file, size, reading + reading_len - 48, 48))
        fail_msg ("the READING's register encoding is in data.mdb in clear");
    if (t_in_file (file, size, proof, proof_len))
        fail_msg ("the proof (READ_RESP) is in data.mdb in clear");
    if (t_in_file (file, size, proof + proof_len - AMI_SIGNATURE_SIZE, AMI_SIGNATURE_SIZE))
        fail_msg ("the meter's signature is in data.mdb in clear");
    //  every interval record, alone and as the run of one block
    for (uint32_t day = 0; day < 2; day++)
        for (uint32_t k = 0; k < AMI_MDMS_INTERVAL_SLOTS; k++) {
            uint8_t rec [AMI_MDMS_INTERVAL_RECORD];
            t_slot_bytes (50, T0 + day * DAY + (k + 1) * MH_INTERVAL_S, rec);
            if (t_in_file (file, size, rec, sizeof rec))
                fail_msg ("interval %u of day %u is in data.mdb in clear", k, day);
        }
    uint8_t run [4 * AMI_MDMS_INTERVAL_RECORD];
    for (uint32_t k = 0; k < 4; k++)
        t_slot_bytes (51, T0 + (k + 1) * MH_INTERVAL_S, run + k * AMI_MDMS_INTERVAL_RECORD);
    assert_false (t_in_file (file, size, run, sizeof run));
    //  (the search does find what is stored in clear: the keys' meter ids)
    assert_true (t_in_file (file, size, "MTR-000050", 10));
    assert_true (t_in_file (file, size, "MTR-000051", 10));
    free (file);
    free (path);

    //  The bitmap is in clear: counted with LMDB directly (as ami-load
    //  does, first 12 bytes of each value), every value the sealed size
    t_raw_t raw;
    t_raw_begin (&raw, env.db, "intervals", false);
    MDB_cursor *cursor = NULL;
    assert_int_equal (mdb_cursor_open (raw.txn, raw.dbi, &cursor), 0);
    MDB_val k, val;
    uint64_t bits = 0;
    size_t values = 0;
    for (int rc = mdb_cursor_get (cursor, &k, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get (cursor, &k, &val, MDB_NEXT)) {
        assert_int_equal (val.mv_size, AMI_MDMS_INTERVAL_VALUE);
        for (int b = 0; b < AMI_MDMS_INTERVAL_BITMAP; b++)
            bits += (uint64_t) __builtin_popcount (((const uint8_t *) val.mv_data) [b]);
        values++;
    }
    mdb_cursor_close (cursor);
    t_raw_end (&raw, false);
    assert_int_equal (values, 3);
    assert_int_equal (bits, 3 * AMI_MDMS_INTERVAL_SLOTS);
    mh_env_stop (&env);
}

/*  One byte altered in the file - in a sealed reading, in a sealed
    interval record, in a clear presence bitmap - and the MDMS refuses the
    value with AMI_E_STORAGE, logged: HISTORY, INTERVALS and VERIFY say so,
    and a block for the altered bucket is rejected, the bucket left as it
    is (never re-sealed over the damage). Other meters are unaffected. */
static void
test_sec_conf_2_altered_value_refused (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000060", AMI_STATE_READY);
    mh_read_ok (&env, "MTR-000060");
    mh_read_ok (&env, "MTR-000062");
    zsock_t *he = mh_headend_connect (&env);
    t_ingest_day (he, 60, 0);
    t_ingest_day (he, 61, 0);
    t_ingest_day (he, 62, 0);
    zsock_destroy (&he);
    mh_mdms_stop (&env);

    //  readings: flip one ciphertext byte of meter 60's reading
    t_raw_t raw;
    t_raw_begin (&raw, env.db, "readings", true);
    uint8_t prefix [AMI_MAX_ID + 1];
    memcpy (prefix, "MTR-000060", 11);          //  with its 0x00 separator
    uint8_t key [AMI_MDMS_READING_KEY_MAX];
    size_t klen = 0, vlen = 0;
    uint8_t *value = t_raw_first (&raw, prefix, 11, key, &klen, &vlen);
    assert_true (klen > 11 && memcmp (key, prefix, 11) == 0);
    assert_int_equal (value [0], AMI_MDMS_READING_SEALED);
    value [vlen / 2] ^= 0x01;
    t_raw_put (&raw, key, klen, value, vlen);
    free (value);
    t_raw_end (&raw, true);
    //  intervals: a ciphertext byte of meter 60's day, a bitmap bit of 61's
    t_raw_begin (&raw, env.db, "intervals", true);
    uint8_t ikey [AMI_MDMS_INTERVAL_KEY_MAX];
    size_t iklen = t_interval_key (60, 0, ikey);
    value = t_raw_get (&raw, ikey, iklen, &vlen);
    assert_int_equal (vlen, AMI_MDMS_INTERVAL_VALUE);
    value [AMI_MDMS_INTERVAL_BITMAP + AMI_MDMS_SEAL_NONCE + 100] ^= 0x80;
    t_raw_put (&raw, ikey, iklen, value, vlen);
    uint8_t *altered = value;                   //  kept: must stay as it is
    iklen = t_interval_key (61, 0, ikey);
    value = t_raw_get (&raw, ikey, iklen, &vlen);
    assert_int_equal (value [0], 0xff);         //  a full day: every bit set
    value [0] = 0xfe;                           //  "interval 1 is missing"
    t_raw_put (&raw, ikey, iklen, value, vlen);
    free (value);
    t_raw_end (&raw, true);

    mh_mdms_start (&env);
    t_capture_start ();
    t_assert_storage_error (&env, AMI_ACT_HISTORY, 60);
    t_assert_storage_error (&env, AMI_ACT_INTERVALS, 60);
    t_assert_storage_error (&env, AMI_ACT_INTERVALS, 61);
    //  VERIFY reports the reading as a storage failure
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_VERIFY, "MTR-000060", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_VERIFY);
    assert_int_equal (r->api_verify.checked, 1);
    assert_int_equal (r->api_verify.failed, 1);
    assert_int_equal (r->api_verify.count, 1);
    assert_int_equal (r->api_verify.failures [0].code, AMI_E_STORAGE);
    //  A block for the altered bucket (a copy of an hour already there):
    //  rejected, since merging needs the record opened
    uint64_t rejected = mh_pipe_stat (&env, "blocks_rejected");
    he = mh_headend_connect (&env);
    uint8_t pkey [AMI_E2E_PROFILE_KEY_SIZE];
    mh_profile_key (60, pkey);
    mh_batch_t b;
    mh_batch_init (&b, 6000, "AGG-T");
    mh_batch_add_meter (&b, 60, pkey, T0 + 5 * HOUR + MH_INTERVAL_S, 4);
    zframe_t *frame = mh_batch_frame (&b);
    ami_batch_ack_t ack = mh_headend_send (he, frame, 6000);
    assert_int_equal (ack.status, AMI_OK);     //  acknowledged: resending cannot help
    zframe_destroy (&frame);
    mh_batch_free (&b);
    zsock_destroy (&he);
    assert_int_equal (mh_pipe_stat (&env, "blocks_rejected"), rejected + 1);
    char *log = t_capture_end ();
    if (!strstr (log, "stored reading of meter MTR-000060")
    ||  !strstr (log, "interval record of meter MTR-000060")
    ||  !strstr (log, "interval record of meter MTR-000061")
    ||  !strstr (log, "does not open"))
        fail_msg ("the refusals are not logged as expected:\n%s", log);
    free (log);
    //  Untouched meters still read
    r = mh_history (&env, env.client, "MTR-000062", 10);
    assert_int_equal (r->api_readings.count, 1);
    t_assert_day (&env, 62, 0);
    mh_mdms_stop (&env);

    //  The altered bucket was not rewritten
    t_raw_begin (&raw, env.db, "intervals", false);
    iklen = t_interval_key (60, 0, ikey);
    value = t_raw_get (&raw, ikey, iklen, &vlen);
    assert_memory_equal (value, altered, AMI_MDMS_INTERVAL_VALUE);
    free (value);
    free (altered);
    t_raw_end (&raw, false);
    mh_env_stop (&env);
}

/*  A sealed value copied under another key (another meter, another read
    of the same meter, another day) does not open: the LMDB key is the
    additional data. Nor does any value under another data key. */
static void
test_sec_conf_2_moved_value_refused (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000070", AMI_STATE_READY);
    mh_read_ok (&env, "MTR-000070");
    zclock_sleep (2);                   //  distinct meter clocks
    mh_read_ok (&env, "MTR-000070");
    mh_read_ok (&env, "MTR-000073");
    zsock_t *he = mh_headend_connect (&env);
    t_ingest_day (he, 70, 0);
    t_ingest_day (he, 72, 0);
    t_ingest_day (he, 72, 1);
    t_ingest_day (he, 73, 0);
    zsock_destroy (&he);
    mh_mdms_stop (&env);

    t_raw_t raw;
    t_raw_begin (&raw, env.db, "readings", true);
    //  meter 70's older reading under meter 71's key (same time and id)
    uint8_t prefix [12];
    memcpy (prefix, "MTR-000070", 11);
    uint8_t key1 [AMI_MDMS_READING_KEY_MAX], key2 [AMI_MDMS_READING_KEY_MAX];
    size_t klen1 = 0, klen2 = 0, vlen1 = 0, vlen2 = 0;
    uint8_t *value1 = t_raw_first (&raw, prefix, 11, key1, &klen1, &vlen1);
    uint8_t moved [AMI_MDMS_READING_KEY_MAX];
    memcpy (moved, key1, klen1);
    moved [9] = '1';                    //  "MTR-000071"
    t_raw_put (&raw, moved, klen1, value1, vlen1);
    //  ... and over meter 70's newer reading (another read of the meter)
    uint64_t read_ms1 = 0;
    for (int k = 0; k < 8; k++)
        read_ms1 = (read_ms1 << 8) | key1 [11 + k];
    uint8_t after [AMI_MDMS_READING_KEY_MAX];
    size_t after_len = ami_mdms_db_reading_key ("MTR-000070", read_ms1 + 1, NULL, after);
    uint8_t *value2 = t_raw_first (&raw, after, after_len, key2, &klen2, &vlen2);
    assert_true (klen2 == klen1 && memcmp (key2, "MTR-000070", 11) == 0);
    assert_memory_not_equal (key2, key1, klen1);
    t_raw_put (&raw, key2, klen2, value1, vlen1);
    free (value1);
    free (value2);
    t_raw_end (&raw, true);
    t_raw_begin (&raw, env.db, "intervals", true);
    //  meter 70's day under meter 71; meter 72's day 0 over its day 1
    uint8_t ikey [AMI_MDMS_INTERVAL_KEY_MAX];
    size_t iklen = t_interval_key (70, 0, ikey), vlen = 0;
    uint8_t *value = t_raw_get (&raw, ikey, iklen, &vlen);
    iklen = t_interval_key (71, 0, ikey);
    t_raw_put (&raw, ikey, iklen, value, vlen);
    free (value);
    iklen = t_interval_key (72, 0, ikey);
    value = t_raw_get (&raw, ikey, iklen, &vlen);
    iklen = t_interval_key (72, 1, ikey);
    t_raw_put (&raw, ikey, iklen, value, vlen);
    free (value);
    t_raw_end (&raw, true);

    mh_mdms_start (&env);
    t_capture_start ();
    t_assert_storage_error (&env, AMI_ACT_HISTORY, 71);
    t_assert_storage_error (&env, AMI_ACT_HISTORY, 70);
    t_assert_storage_error (&env, AMI_ACT_INTERVALS, 71);
    t_assert_storage_error (&env, AMI_ACT_INTERVALS, 72);
    char *log = t_capture_end ();
    assert_non_null (strstr (log, "interval record of meter MTR-000072, bucket"));
    assert_non_null (strstr (log, "does not open"));
    free (log);
    //  the originals under their own keys still open
    t_assert_day (&env, 70, 0);
    ami_msg_t *r = mh_intervals (&env, env.client, "MTR-000072", 0,
                                 (uint64_t) (T0 + DAY) * 1000, 0);
    assert_int_equal (r->api_intervals.count, AMI_MDMS_INTERVAL_SLOTS);
    mh_mdms_stop (&env);

    //  Through the db layer: the codes, and another data key
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (env.db, 64u << 20, 0, &err);
    assert_non_null (db);
    ami_mdms_db_set_data_key (db, mh.data_seed);
    assert_int_equal (ami_mdms_db_interval_setup (db, MH_INTERVAL_S), AMI_OK);
    int rows = 0;
    assert_int_equal (ami_mdms_db_history (db, "MTR-000073", 0, 0, 10, t_count_row, &rows,
                                           NULL), AMI_OK);
    assert_int_equal (rows, 1);
    assert_int_equal (ami_mdms_db_history (db, "MTR-000071", 0, 0, 10, t_count_row, &rows,
                                           NULL), AMI_E_STORAGE);
    ami_interval_t out [8];
    size_t count = 0;
    bool more = false;
    assert_int_equal (ami_mdms_db_intervals (db, "MTR-000073", 0, 0, 8, out, &count, &more),
                      AMI_OK);
    assert_int_equal (count, 8);
    assert_int_equal (ami_mdms_db_intervals (db, "MTR-000071", 0, 0, 8, out, &count, &more),
                      AMI_E_STORAGE);
    uint8_t wrong [AMI_E2E_SEED_SIZE];
    randombytes_buf (wrong, sizeof wrong);
    ami_mdms_db_set_data_key (db, wrong);
    assert_int_equal (ami_mdms_db_history (db, "MTR-000073", 0, 0, 10, t_count_row, &rows,
                                           NULL), AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_intervals (db, "MTR-000073", 0, 0, 8, out, &count, &more),
                      AMI_E_STORAGE);
    ami_mdms_db_destroy (&db);
    mh_env_stop (&env);
}

/*  The db layer on its own: seal/open round trips, the additional data
    (key, and for intervals the bitmap too), no data key, a clear record
    (schema 1's value layout) refused, and a schema-1 database refused when
    it holds records in clear, upgraded in place when it holds none. */
static void
test_sec_conf_2_db_layer (void **state)
{
    (void) state;
    char *dir = ami_test_path (mh.dir, "at-rest-db");
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (dir, 64u << 20, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);
    assert_false (ami_mdms_db_has_data_key (db));
    uint8_t rid [AMI_REQUEST_ID_SIZE] = { 7 };
    const uint8_t reading [] = { 0x95, 1, 12, 0xa1, 'R' }, proof [] = { 1, 2, 3, 4 };
    //  No data key: nothing stored, nothing read
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 100, rid, 90, 110, reading,
                                               sizeof reading, proof, sizeof proof),
                      AMI_E_CONFIG);
    assert_int_equal (ami_mdms_db_interval_setup (db, MH_INTERVAL_S), AMI_OK);
    ami_mdms_ingest_config_t config = { 0 };
    config.db = db;
    config.keys = &mh.keys;
    assert_null (ami_mdms_ingest_new (&config, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    ami_mdms_db_set_data_key (db, mh.data_seed);
    assert_true (ami_mdms_db_has_data_key (db));
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 100, rid, 90, 110, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);

    //  Seal / open: the record back; its box is 41 bytes; AD = the key
    uint8_t key [AMI_MDMS_READING_KEY_MAX], other [AMI_MDMS_READING_KEY_MAX];
    size_t klen = ami_mdms_db_reading_key ("MTR-1", 100, rid, key);
    size_t olen = ami_mdms_db_reading_key ("MTR-1", 101, rid, other);
    uint8_t record [64], value [128], back [64];
    memset (record, 0x5a, sizeof record);
    size_t vlen = 0, rlen = 0;
    assert_int_equal (ami_mdms_db_reading_seal (db, key, klen, record, sizeof record, value,
                                                sizeof value, &vlen), AMI_OK);
    assert_int_equal (vlen, sizeof record + AMI_MDMS_READING_BOX);
    assert_int_equal (value [0], AMI_MDMS_READING_SEALED);
    assert_int_equal (ami_mdms_db_reading_open (db, key, klen, value, vlen, back, sizeof back,
                                                &rlen), AMI_OK);
    assert_int_equal (rlen, sizeof record);
    assert_memory_equal (back, record, sizeof record);
    assert_int_equal (ami_mdms_db_reading_open (db, other, olen, value, vlen, back, sizeof back,
                                                &rlen), AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_reading_seal (db, key, klen, record, sizeof record, value,
                                                sizeof record, &vlen), AMI_E_LIMIT);
    //  Two seals of the same record differ (a fresh nonce each)
    uint8_t value2 [128];
    size_t vlen2 = 0;
    assert_int_equal (ami_mdms_db_reading_seal (db, key, klen, record, sizeof record, value2,
                                                sizeof value2, &vlen2), AMI_OK);
    assert_memory_not_equal (value + 1, value2 + 1, AMI_MDMS_SEAL_NONCE);
    //  A clear record (schema 1 stored the record itself) is refused
    unsigned dbi;
    ami_store_t *store = ami_mdms_db_store (db);
    assert_int_equal (ami_store_db (store, "readings", &dbi), AMI_OK);
    uint8_t clear [64] = { AMI_MDMS_READING_LAYOUT };
    clear [20] = (uint8_t) sizeof reading;
    memcpy (clear + 21, reading, sizeof reading);
    clear [21 + sizeof reading + 3] = (uint8_t) sizeof proof;
    memcpy (clear + 21 + sizeof reading + 4, proof, sizeof proof);
    size_t clear_len = 21 + sizeof reading + 4 + sizeof proof;
    ami_mdms_reading_t row;
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, clear, clear_len, &row), AMI_OK);
    size_t ckey_len = ami_mdms_db_reading_key ("MTR-2", 100, rid, key);
    assert_int_equal (ami_store_put (store, dbi, key, ckey_len, clear, clear_len, 0), AMI_OK);
    t_capture_start ();
    int rows = 0;
    assert_int_equal (ami_mdms_db_history (db, "MTR-2", 0, 0, 10, t_count_row, &rows, NULL),
                      AMI_E_STORAGE);
    assert_int_equal (rows, 0);
    char *log = t_capture_end ();
    assert_non_null (strstr (log, "a clear record, not sealed"));
    free (log);
    rows = 0;
    assert_int_equal (ami_mdms_db_history (db, "MTR-1", 0, 0, 10, t_count_row, &rows, NULL),
                      AMI_OK);
    assert_int_equal (rows, 1);

    //  Intervals: the bitmap in clear and authenticated, the records not
    uint8_t plain [AMI_MDMS_INTERVAL_PLAIN], opened [AMI_MDMS_INTERVAL_PLAIN];
    uint8_t sealed [AMI_MDMS_INTERVAL_VALUE];
    memset (plain, 0, sizeof plain);
    ami_profile_t profile;
    mh_profile_fill (&profile, "MTR-1", T0 + MH_INTERVAL_S, 4);
    for (unsigned s = 0; s < 4; s++)
        ami_mdms_db_interval_put (plain, s, &profile.records [s]);
    uint8_t ikey [AMI_MDMS_INTERVAL_KEY_MAX];
    size_t iklen = ami_mdms_db_interval_key ("MTR-1", BUCKET0, ikey);
    assert_int_equal (ami_mdms_db_interval_seal (db, ikey, iklen, plain, sealed), AMI_OK);
    assert_memory_equal (sealed, plain, AMI_MDMS_INTERVAL_BITMAP);
    assert_int_equal (ami_mdms_db_interval_count (sealed), 4);
    assert_true (memmem (sealed, sizeof sealed, plain + AMI_MDMS_INTERVAL_BITMAP,
                         AMI_MDMS_INTERVAL_RECORD) == NULL);
    assert_int_equal (ami_mdms_db_interval_open (db, ikey, iklen, sealed, opened), AMI_OK);
    assert_memory_equal (opened, plain, sizeof plain);
    sealed [1] ^= 0x01;                 //  "slot 8 is stored" (it is not)
    assert_int_equal (ami_mdms_db_interval_open (db, ikey, iklen, sealed, opened),
                      AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_interval_count (opened), 0);     //  zeroed
    sealed [1] ^= 0x01;
    iklen = ami_mdms_db_interval_key ("MTR-1", BUCKET0 + 1, ikey);
    assert_int_equal (ami_mdms_db_interval_open (db, ikey, iklen, sealed, opened),
                      AMI_E_STORAGE);
    ami_mdms_db_destroy (&db);

    //  Schema 1 with a record in clear: refused, with what to do
    int eerr = 0;
    store = ami_store_new (dir, 64u << 20, 0, AMI_STORE_NOSYNC, &eerr);
    assert_non_null (store);
    unsigned meta;
    assert_int_equal (ami_store_db (store, "meta", &meta), AMI_OK);
    uint8_t one [8] = { 0, 0, 0, 0, 0, 0, 0, 1 };
    assert_int_equal (ami_store_put (store, meta, "schema", 6, one, 8, 0), AMI_OK);
    ami_store_destroy (&store);
    t_capture_start ();
    err = 0;
    assert_null (ami_mdms_db_new (dir, 64u << 20, AMI_STORE_NOSYNC, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    log = t_capture_end ();
    if (!strstr (log, "schema 1") || !strstr (log, "IN CLEAR")
    ||  !strstr (log, "let the MDMS create a new database"))
        fail_msg ("schema-1 refusal not explained:\n%s", log);
    free (log);
    //  Schema 1 without readings or interval data: upgraded in place
    char *dir2 = ami_test_path (mh.dir, "at-rest-db-empty");
    db = ami_mdms_db_new (dir2, 64u << 20, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);
    ami_mdms_db_destroy (&db);
    store = ami_store_new (dir2, 64u << 20, 0, AMI_STORE_NOSYNC, &eerr);
    assert_non_null (store);
    assert_int_equal (ami_store_db (store, "meta", &meta), AMI_OK);
    assert_int_equal (ami_store_put (store, meta, "schema", 6, one, 8, 0), AMI_OK);
    ami_store_destroy (&store);
    db = ami_mdms_db_new (dir2, 64u << 20, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);
    ami_mdms_db_destroy (&db);
    store = ami_store_new (dir2, 64u << 20, 0, AMI_STORE_NOSYNC, &eerr);
    assert_non_null (store);
    assert_int_equal (ami_store_db (store, "meta", &meta), AMI_OK);
    uint8_t schema [8];
    size_t slen = 0;
    assert_int_equal (ami_store_get (store, meta, "schema", 6, schema, sizeof schema, &slen),
                      AMI_OK);
    assert_int_equal (slen, 8);
    assert_int_equal (schema [7], AMI_MDMS_DB_SCHEMA);
    ami_store_destroy (&store);
    ami_test_rmtree (dir);
    ami_test_rmtree (dir2);
    free (dir);
    free (dir2);
}


/* ---------------------------------------------------------------------- */
/*  The registry on the MDMS host                                           */

/*  Copy src to dst with mode. */
static void
t_copy (const char *src, const char *dst, mode_t mode)
{
    size_t size = 0;
    uint8_t *data = t_slurp (src, &size);
    FILE *file = fopen (dst, "wb");
    assert_non_null (file);
    assert_int_equal (fwrite (data, 1, size, file), size);
    assert_int_equal (fclose (file), 0);
    assert_int_equal (chmod (dst, mode), 0);
    free (data);
}

/*  A registry with customer columns that group or others can read is
    refused (the MDMS does not start; the log names the file, its mode and
    the fix); 0600 is accepted. A registry without customer columns may be
    readable. */
static void
test_sec_conf_2_registry_mode (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    mh_mdms_stop (&env);
    char *registry = ami_test_path (mh.dir, "meters-at-rest.tsv");
    const mode_t refused [] = { 0644, 0640, 0604, 0660 };
    for (size_t i = 0; i < sizeof refused / sizeof refused [0]; i++) {
        t_copy (mh.registry, registry, refused [i]);
        env.config.registry_path = registry;
        t_capture_start ();
        zactor_t *mdms = ami_mdms_new (&env.config);
        char *log = t_capture_end ();
        if (mdms)
            fail_msg ("a registry of mode %04o with customer data was imported",
                      (unsigned) refused [i]);
        char mode [8];
        snprintf (mode, sizeof mode, "%04o", (unsigned) refused [i]);
        if (!strstr (log, registry) || !strstr (log, mode) || !strstr (log, "chmod 600")
        ||  !strstr (log, "customer data"))
            fail_msg ("refusal of mode %s not explained:\n%s", mode, log);
        //  ... and never quotes the customer data
        assert_null (strstr (log, "Quintessa"));
        free (log);
    }
    assert_int_equal (chmod (registry, 0600), 0);
    mh_mdms_start (&env);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_CUSTOMER, "MTR-000021", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_CUSTOMER);
    assert_string_equal (r->api_customer.name, CUSTOMER_NAME);
    mh_mdms_stop (&env);

    //  The db layer: nothing of a refused import is written; a 4-column
    //  registry may be 0644
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (env.db, 64u << 20, 0, &err);
    assert_non_null (db);
    ami_mdms_db_set_data_key (db, mh.data_seed);
    char *plain = ami_test_path (mh.dir, "meters-4col.tsv");
    FILE *file = fopen (plain, "w");
    assert_non_null (file);
    for (uint32_t i = 1; i <= 5; i++)
        mh_registry_line (file, i);
    fclose (file);
    assert_int_equal (chmod (plain, 0644), 0);
    size_t count = 0;
    assert_int_equal (ami_mdms_db_registry_import (db, plain, NULL, &count), AMI_OK);
    assert_int_equal (count, 5);
    assert_int_equal (chmod (registry, 0644), 0);
    assert_int_equal (ami_mdms_db_registry_import (db, registry, NULL, &count), AMI_E_CONFIG);
    assert_int_equal (ami_mdms_db_meter_count (db), 5);
    ami_mdms_meter_t meter;
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000021", &meter), AMI_E_NOTFOUND);
    assert_int_equal (chmod (registry, 0600), 0);
    assert_int_equal (ami_mdms_db_registry_import (db, registry, NULL, &count), AMI_OK);
    assert_int_equal (count, METERS);
    ami_mdms_db_destroy (&db);
    mh_env_stop (&env);
    free (registry);
    free (plain);
}

/*  ami-keygen init writes meters.tsv 0600 (also with --force), check
    flags it once group or others can read it, and the MDMS imports what
    keygen wrote. */
static void
test_sec_conf_2_keygen_registry_private (void **state)
{
    (void) state;
    char *dir = ami_test_path (mh.dir, "keygen-at-rest");
    keygen_topology_t topo;
    keygen_topology_default (&topo);
    topo.meters_per_fleet = 5;
    assert_int_equal (keygen_init (dir, &topo, false), KEYGEN_OK);
    char *tsv = ami_test_path (dir, "app/meters.tsv");
    struct stat st;
    assert_int_equal (stat (tsv, &st), 0);
    assert_int_equal (st.st_mode & 07777, 0600);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    //  readable by the group: flagged, with the reason and the fix
    assert_int_equal (chmod (tsv, 0640), 0);
    t_stderr_start ();
    int rc = keygen_check (dir, true);
    char *text = t_stderr_end ();
    assert_int_equal (rc, KEYGEN_FAILED);
    if (!strstr (text, "meters.tsv: mode 0640, expected 0600") || !strstr (text, "customer"))
        fail_msg ("check did not explain the readable registry:\n%s", text);
    free (text);
    assert_int_equal (chmod (tsv, 0600), 0);
    assert_int_equal (keygen_check (dir, true), KEYGEN_OK);
    //  The MDMS imports it as written, with the data key keygen made
    char *data_key = ami_test_path (dir, "app/mdms-data.cert");
    uint8_t seed [AMI_E2E_SEED_SIZE];
    assert_int_equal (ami_e2e_kdf_load (data_key, seed), AMI_OK);
    char *dbdir = ami_test_path (mh.dir, "keygen-at-rest-db");
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (dbdir, 64u << 20, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);
    ami_mdms_db_set_data_key (db, seed);
    size_t count = 0;
    assert_int_equal (ami_mdms_db_registry_import (db, tsv, NULL, &count), AMI_OK);
    assert_int_equal (count, 10);
    ami_api_customer_t customer;
    memset (&customer, 0, sizeof customer);
    assert_int_equal (ami_mdms_db_customer_get (db, "MTR-000007", &customer), AMI_OK);
    char name [AMI_MAX_CUSTOMER_NAME + 1], address [AMI_MAX_TEXT + 1], account [AMI_MAX_ID + 1];
    keygen_customer (7, name, address, account);
    assert_string_equal (customer.name, name);
    //  ... and refuses it made readable
    assert_int_equal (chmod (tsv, 0644), 0);
    assert_int_equal (ami_mdms_db_registry_import (db, tsv, NULL, &count), AMI_E_CONFIG);
    ami_mdms_db_destroy (&db);
    //  init --force writes it 0600 again
    assert_int_equal (keygen_init (dir, &topo, true), KEYGEN_OK);
    assert_int_equal (stat (tsv, &st), 0);
    assert_int_equal (st.st_mode & 07777, 0600);
    sodium_memzero (seed, sizeof seed);
    ami_test_rmtree (dir);
    ami_test_rmtree (dbdir);
    free (dir);
    free (tsv);
    free (data_key);
    free (dbdir);
}

int
main (void)
{
    if (getenv ("AMI_TEST_FILTER"))
        cmocka_set_test_filter (getenv ("AMI_TEST_FILTER"));
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_sec_conf_2_meter_data_sealed_at_rest),
        cmocka_unit_test (test_sec_conf_2_altered_value_refused),
        cmocka_unit_test (test_sec_conf_2_moved_value_refused),
        cmocka_unit_test (test_sec_conf_2_db_layer),
        cmocka_unit_test (test_sec_conf_2_registry_mode),
        cmocka_unit_test (test_sec_conf_2_keygen_registry_private),
    };
    return cmocka_run_group_tests_name ("mdms_at_rest", tests, mh_group_setup,
                                        mh_group_teardown);
}
