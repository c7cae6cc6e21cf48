/*  ami_mdms_db.c - the MDMS database schema on top of ami_store (LMDB).

    Design. Three named databases (meta, meters, readings; layouts in
    ami_mdms_db.h). Keys are built so that the queries the MDMS serves are
    single cursor walks: a meter's history is one reverse range scan, a
    registry page one forward scan. Every value carries a layout version
    byte and explicit lengths, and every read re-checks them: the database
    file is input too (a disk error, a tool writing the wrong thing), so a
    value that does not add up is reported, never trusted (SEC-VAL-1).

    The registry import streams the file into one ami_store batch (one
    transaction: atomic, one fsync), remembering only the meter ids seen
    (to refuse duplicates) and the distinct aggregators. ami_store has no
    batched delete, so "replacing" the registry works by generation: every
    entry carries the generation of the import that wrote it, the new
    generation is committed in the same transaction, readers ignore entries
    of older generations, and those are deleted one by one afterwards (a
    meter leaving the registry is rare, so a durable delete each is fine).
    Customer records ride in the same import transaction and generation,
    encrypted on the way in (XChaCha20-Poly1305, a key derived from the
    data key that lives outside the database), so their plaintext exists
    only in the line buffer (wiped) and in an API reply.

    Meter data at rest (SEC-CONF-2): every "readings" and "intervals" value
    is sealed the same way under its own subkey, with the LMDB key as
    additional data, so what LMDB stores, pages, copies into free pages
    and backups is ciphertext; it is opened only into a work buffer that
    is wiped after use. Random nonces come from a pool (ami_e2e_nonce): the
    ingest seals tens of thousands of records a second, and one getrandom
    system call per nonce would cost ~0.5 us each.
*/
#include "ami_mdms_db.h"

#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_err.h"
#include "ami_log.h"
#include "ami_store.h"
#include "ami_sort.h"

/*  Named databases: ami_store's default slot count (16) is plenty. */
#define S_DB_META       "meta"
#define S_DB_METERS     "meters"
#define S_DB_READINGS   "readings"
#define S_DB_CUSTOMERS  "customers"
#define S_DB_INTERVALS  "intervals"

#define S_KEY_SCHEMA    "schema"
#define S_KEY_COUNTER   "counter"
#define S_KEY_GEN       "registry.gen"
#define S_KEY_INTERVAL  "interval"

/*  Removed meters named one by one in the log at an import; the rest are
    counted (a registry swap that drops a whole region must not flood the
    log with 100 000 lines). */
#define S_REMOVED_NAMED     20

/*  Registry value: version, generation, two length-prefixed ids, key. */
#define S_METER_VALUE_MAX   (1 + 8 + 1 + AMI_MAX_ID + 1 + AMI_MAX_ID + AMI_E2E_SIGN_PK_SIZE)
#define S_METER_VALUE_MIN   (1 + 8 + 1 + 1 + 1 + 1 + AMI_E2E_SIGN_PK_SIZE)

/*  Customer record: the msgpack plaintext [name, address, account] takes at
    most 1 + (2 + 64) + (3 + 256) + (2 + 32) = 360 bytes. */
#define S_CUSTOMER_PLAIN_MAX    384
#define S_CUSTOMER_NONCE        crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define S_CUSTOMER_TAG          crypto_aead_xchacha20poly1305_ietf_ABYTES
#define S_CUSTOMER_HEADER       (1 + 8 + S_CUSTOMER_NONCE)
#define S_CUSTOMER_VALUE_MAX    (S_CUSTOMER_HEADER + S_CUSTOMER_PLAIN_MAX + S_CUSTOMER_TAG)

/*  Sealed values (SEC-CONF-2). */
#define S_NONCE         crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define S_TAG           crypto_aead_xchacha20poly1305_ietf_ABYTES
/*  Where the parts of a stored "intervals" value start. */
#define S_IV_NONCE      AMI_MDMS_INTERVAL_BITMAP
#define S_IV_CIPHER     (S_IV_NONCE + S_NONCE)
#define S_IV_TAG        (S_IV_CIPHER + AMI_MDMS_INTERVAL_RECORDS)

static_assert (S_NONCE == AMI_MDMS_SEAL_NONCE && S_NONCE == AMI_E2E_NONCE_SIZE && S_TAG == AMI_MDMS_SEAL_TAG,
               "the header's box sizes are libsodium's");
static_assert (S_IV_TAG + S_TAG == AMI_MDMS_INTERVAL_VALUE, "intervals value layout");

struct _ami_mdms_db_t {
    ami_store_t *store;
    unsigned meta;
    unsigned meters;
    unsigned readings;
    unsigned customers;
    unsigned intervals;
    uint32_t interval_s;        /* set up by ami_mdms_db_interval_setup */
    uint8_t customer_key [crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    uint8_t meter_key [crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    bool has_key;               /* both keys derived */
    uint8_t *work;              /* opened readings records (wiped after use) */
    size_t work_cap;
    uint64_t gen;               /* current registry generation */
    uint64_t reserved;          /* counter values <= this may be in use */
    uint64_t next;              /* next counter to hand out */
    size_t meter_count;         /* meters in the current registry */
};


/* ---------------------------------------------------------------------- */
/*  Big-endian helpers                                                      */

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

static void
s_put_be32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) (v >> 24);
    p [1] = (uint8_t) (v >> 16);
    p [2] = (uint8_t) (v >> 8);
    p [3] = (uint8_t) v;
}

static uint32_t
s_get_be32 (const uint8_t *p)
{
    return ((uint32_t) p [0] << 24) | ((uint32_t) p [1] << 16)
         | ((uint32_t) p [2] << 8) | (uint32_t) p [3];
}


/*  Read a be64 under key in meta: AMI_OK, AMI_E_NOTFOUND, AMI_E_STORAGE. */
static int
s_meta_get (ami_mdms_db_t *self, const char *key, uint64_t *value)
{
    uint8_t buf [8];
    size_t len = 0;
    int rc = ami_store_get (self->store, self->meta, key, strlen (key), buf, sizeof buf, &len);
    if (rc == AMI_E_NOTFOUND)
        return rc;
    if (rc == AMI_E_LIMIT || (rc == AMI_OK && len != 8)) {
        ami_log_error ("mdms db: meta '%s' has %zu bytes, expected 8: database corrupt", key, len);
        return AMI_E_STORAGE;
    }
    if (rc)
        return rc;
    *value = s_get_be64 (buf);
    return AMI_OK;
}


/* ---------------------------------------------------------------------- */
/*  Registry values                                                         */

static size_t
s_meter_encode (const ami_mdms_meter_t *m, uint64_t gen, uint8_t *out)
{
    size_t fl = strlen (m->fleet_id), al = strlen (m->aggregator_id);
    size_t n = 0;
    out [n++] = AMI_MDMS_METER_LAYOUT;
    s_put_be64 (out + n, gen);
    n += 8;
    out [n++] = (uint8_t) fl;
    memcpy (out + n, m->fleet_id, fl);
    n += fl;
    out [n++] = (uint8_t) al;
    memcpy (out + n, m->aggregator_id, al);
    n += al;
    memcpy (out + n, m->sign_pk, AMI_E2E_SIGN_PK_SIZE);
    n += AMI_E2E_SIGN_PK_SIZE;
    return n;
}

/*  Copy a length-prefixed id; false if it does not fit or is not an id. */
static bool
s_take_id (const uint8_t *v, size_t vlen, size_t *pos, char *out)
{
    if (*pos >= vlen)
        return false;
    size_t len = v [(*pos)++];
    if (len < 1 || len > AMI_MAX_ID || *pos + len > vlen)
        return false;
    memcpy (out, v + *pos, len);
    out [len] = 0;
    *pos += len;
    return ami_id_valid (out);
}

/*  Parse a registry key and value. AMI_OK, AMI_E_STORAGE (corrupt; logged)
    or AMI_E_NOTFOUND (a stale generation). */
static int
s_meter_parse (ami_mdms_db_t *self, const void *key, size_t klen,
               const void *val, size_t vlen, ami_mdms_meter_t *out)
{
    const uint8_t *v = (const uint8_t *) val;
    bool ok = klen >= 1 && klen <= AMI_MAX_ID
           && vlen >= S_METER_VALUE_MIN && vlen <= S_METER_VALUE_MAX
           && v [0] == AMI_MDMS_METER_LAYOUT;
    if (ok) {
        memcpy (out->meter_id, key, klen);
        out->meter_id [klen] = 0;
        ok = ami_id_valid (out->meter_id);
    }
    if (ok && s_get_be64 (v + 1) != self->gen)
        return AMI_E_NOTFOUND;
    size_t pos = 9;
    ok = ok && s_take_id (v, vlen, &pos, out->fleet_id)
            && s_take_id (v, vlen, &pos, out->aggregator_id)
            && pos + AMI_E2E_SIGN_PK_SIZE == vlen;
    if (!ok) {
        ami_log_error ("mdms db: registry entry (%zu-byte key, %zu-byte value) is corrupt",
                       klen, vlen);
        return AMI_E_STORAGE;
    }
    memcpy (out->sign_pk, v + pos, AMI_E2E_SIGN_PK_SIZE);
    return AMI_OK;
}


/* ---------------------------------------------------------------------- */
/*  Open / close                                                            */

/*  A schema-1 database: readings and interval records in clear. Returns
    AMI_E_NOTFOUND when it holds neither (the caller writes the new
    version: an upgrade in place), AMI_E_CONFIG (logged, with what to do)
    when it holds any, or a store error. */
static int
s_schema_1 (ami_mdms_db_t *self, const char *dir)
{
    size_t readings = 0, intervals = 0;
    int rc = ami_store_count (self->store, self->readings, &readings);
    if (rc == AMI_OK)
        rc = ami_store_count (self->store, self->intervals, &intervals);
    if (rc)
        return rc;
    if (readings == 0 && intervals == 0) {
        ami_log_info ("mdms db %s: schema 1 without readings or interval data: upgraded to "
                      "schema %d (readings and interval data encrypted at rest)",
                      dir, AMI_MDMS_DB_SCHEMA);
        return AMI_E_NOTFOUND;
    }
    ami_log_error ("mdms db %s: schema 1 database with %zu reading(s) and %zu interval "
                   "record(s) stored IN CLEAR; this MDMS (schema %d) encrypts meter data at "
                   "rest and does not read or migrate clear records: export what must be "
                   "kept with the old version, then move %s away (and destroy it and its "
                   "backups) and let the MDMS create a new database there (SEC-CONF-2)",
                   dir, readings, intervals, AMI_MDMS_DB_SCHEMA, dir);
    return AMI_E_CONFIG;
}

ami_mdms_db_t *
ami_mdms_db_new (const char *dir, size_t map_size, int store_flags, int *err)
{
    assert (dir);
    int rc = AMI_OK;
    ami_mdms_db_t *self = (ami_mdms_db_t *) calloc (1, sizeof *self);
    if (!self) {
        rc = AMI_E_NOMEM;
        goto failed;
    }
    self->store = ami_store_new (dir, map_size, 0, store_flags, &rc);
    if (!self->store)
        goto failed;
    if ((rc = ami_store_db (self->store, S_DB_META, &self->meta))
    ||  (rc = ami_store_db (self->store, S_DB_METERS, &self->meters))
    ||  (rc = ami_store_db (self->store, S_DB_READINGS, &self->readings))
    ||  (rc = ami_store_db (self->store, S_DB_CUSTOMERS, &self->customers))
    ||  (rc = ami_store_db (self->store, S_DB_INTERVALS, &self->intervals)))
        goto failed;

    uint64_t schema = 0;
    rc = s_meta_get (self, S_KEY_SCHEMA, &schema);
    if (rc == AMI_OK && schema == 1)
        rc = s_schema_1 (self, dir);    //  AMI_E_NOTFOUND: nothing in clear
    if (rc == AMI_E_NOTFOUND) {
        uint8_t buf [8];
        s_put_be64 (buf, AMI_MDMS_DB_SCHEMA);
        rc = ami_store_put (self->store, self->meta, S_KEY_SCHEMA, strlen (S_KEY_SCHEMA),
                            buf, sizeof buf, 0);
    }
    else
    if (rc == AMI_OK && schema != AMI_MDMS_DB_SCHEMA) {
        ami_log_error ("mdms db %s: schema version %llu, this MDMS reads version %d",
                       dir, (unsigned long long) schema, AMI_MDMS_DB_SCHEMA);
        rc = AMI_E_CONFIG;
    }
    if (rc)
        goto failed;
    rc = s_meta_get (self, S_KEY_GEN, &self->gen);
    if (rc == AMI_E_NOTFOUND) {
        self->gen = 0;
        rc = AMI_OK;
    }
    if (rc)
        goto failed;
    rc = s_meta_get (self, S_KEY_COUNTER, &self->reserved);
    if (rc == AMI_E_NOTFOUND) {
        self->reserved = 0;
        rc = AMI_OK;
    }
    if (rc)
        goto failed;
    //  Continue above the mark: values up to it may have been used before
    self->next = self->reserved + 1;
    return self;

failed:
    if (err)
        *err = rc ? rc : AMI_E_STORAGE;
    ami_log_error ("mdms db %s: cannot open: %s", dir, ami_strerror (rc));
    ami_mdms_db_destroy (&self);
    return NULL;
}

void
ami_mdms_db_destroy (ami_mdms_db_t **self_p)
{
    assert (self_p);
    ami_mdms_db_t *self = *self_p;
    if (self) {
        ami_store_destroy (&self->store);
        sodium_memzero (self->customer_key, sizeof self->customer_key);
        sodium_memzero (self->meter_key, sizeof self->meter_key);
        if (self->work) {
            sodium_memzero (self->work, self->work_cap);
            free (self->work);
        }
        free (self);
        *self_p = NULL;
    }
}


void
ami_mdms_db_set_data_key (ami_mdms_db_t *self, const uint8_t data_key [32])
{
    assert (self && data_key);
    static_assert (sizeof AMI_MDMS_CUSTOMER_KDF_CTX - 1 == crypto_kdf_CONTEXTBYTES,
                   "kdf context is 8 bytes");
    static_assert (crypto_kdf_KEYBYTES == 32, "the data key is a 32-byte kdf key");
    static_assert (sizeof AMI_MDMS_METER_DATA_KDF_CTX - 1 == crypto_kdf_CONTEXTBYTES,
                   "kdf context is 8 bytes");
    static_assert (AMI_MDMS_METER_DATA_KDF_ID != AMI_MDMS_CUSTOMER_KDF_ID,
                   "one subkey per purpose");
    crypto_kdf_derive_from_key (self->customer_key, sizeof self->customer_key,
                                AMI_MDMS_CUSTOMER_KDF_ID, AMI_MDMS_CUSTOMER_KDF_CTX, data_key);
    crypto_kdf_derive_from_key (self->meter_key, sizeof self->meter_key,
                                AMI_MDMS_METER_DATA_KDF_ID, AMI_MDMS_METER_DATA_KDF_CTX, data_key);
    self->has_key = true;
}

bool
ami_mdms_db_has_data_key (ami_mdms_db_t *self)
{
    assert (self);
    return self->has_key;
}

ami_store_t *
ami_mdms_db_store (ami_mdms_db_t *self)
{
    assert (self);
    return self->store;
}


/* ---------------------------------------------------------------------- */
/*  Customer records                                                        */

/*  Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
    U+10FFFF) without control characters (C0, DEL): text that is safe in an
    API string, a log line and a terminal. */
static bool
s_text_valid (const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *) s;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p [i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else
        if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else
        if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else
            return false;
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p [i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p [i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
        ||  (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
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
    if (w->full || len > S_CUSTOMER_PLAIN_MAX - w->len) {
        w->full = true;
        return -1;
    }
    memcpy (w->buf + w->len, buf, len);
    w->len += len;
    return 0;
}

/*  Encode [name, address, account]; 0 if it does not fit. */
static size_t
s_customer_encode (const char *name, const char *address, const char *account, uint8_t *out)
{
    s_writer_t w = { out, 0, false };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &w, s_write);
    const char *fields [3] = { name, address, account };
    msgpack_pack_array (&pk, 3);
    for (int i = 0; i < 3; i++) {
        size_t n = strlen (fields [i]);
        msgpack_pack_str (&pk, n);
        if (n)
            msgpack_pack_str_body (&pk, fields [i], n);
    }
    return w.full ? 0 : w.len;
}

/*  Read one msgpack str (fixstr, str8, str16) of min..max bytes at *pos. */
static bool
s_read_str (const uint8_t *p, size_t n, size_t *pos, char *out, size_t min, size_t max)
{
    if (*pos >= n)
        return false;
    uint8_t c = p [(*pos)++];
    size_t len;
    if ((c & 0xe0) == 0xa0)
        len = c & 0x1f;
    else
    if (c == 0xd9 && *pos + 1 <= n)
        len = p [(*pos)++];
    else
    if (c == 0xda && *pos + 2 <= n) {
        len = ((size_t) p [*pos] << 8) | p [*pos + 1];
        *pos += 2;
    }
    else
        return false;
    if (len < min || len > max || len > n - *pos)
        return false;
    memcpy (out, p + *pos, len);
    out [len] = 0;
    *pos += len;
    return true;
}

static bool
s_customer_decode (const uint8_t *p, size_t n, ami_api_customer_t *out)
{
    size_t pos = 1;
    return n >= 1 && p [0] == 0x93
        && s_read_str (p, n, &pos, out->name, 1, AMI_MAX_CUSTOMER_NAME)
        && s_text_valid (out->name, strlen (out->name))
        && s_read_str (p, n, &pos, out->address, 0, AMI_MDMS_CUSTOMER_ADDRESS_MAX)
        && s_text_valid (out->address, strlen (out->address))
        && s_read_str (p, n, &pos, out->account, 1, AMI_MAX_ID)
        && ami_id_valid (out->account)
        && pos == n;
}

/*  Encrypt a customer record for meter_id into value (S_CUSTOMER_VALUE_MAX
    bytes). Returns its length, or 0 on failure. */
static size_t
s_customer_seal (ami_mdms_db_t *self, const char *meter_id, uint64_t gen,
                 const char *name, const char *address, const char *account, uint8_t *value)
{
    uint8_t plain [S_CUSTOMER_PLAIN_MAX];
    size_t plen = s_customer_encode (name, address, account, plain);
    size_t vlen = 0;
    if (plen) {
        value [0] = AMI_MDMS_CUSTOMER_LAYOUT;
        s_put_be64 (value + 1, gen);
        uint8_t *nonce = value + 9;
        randombytes_buf (nonce, S_CUSTOMER_NONCE);
        unsigned long long clen = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt (
            value + S_CUSTOMER_HEADER, &clen, plain, plen,
            (const uint8_t *) meter_id, strlen (meter_id), NULL, nonce, self->customer_key);
        vlen = S_CUSTOMER_HEADER + (size_t) clen;
    }
    sodium_memzero (plain, sizeof plain);
    return vlen;
}

int
ami_mdms_db_customer_get (ami_mdms_db_t *self, const char *meter_id, ami_api_customer_t *out)
{
    assert (self && meter_id && out);
    if (!self->has_key)
        return AMI_E_CONFIG;
    size_t klen = strlen (meter_id);
    if (klen == 0 || klen > AMI_MAX_ID)
        return AMI_E_NOTFOUND;
    uint8_t value [S_CUSTOMER_VALUE_MAX];
    size_t vlen = 0;
    int rc = ami_store_get (self->store, self->customers, meter_id, klen, value,
                            sizeof value, &vlen);
    if (rc == AMI_E_LIMIT || (rc == AMI_OK && (vlen < S_CUSTOMER_HEADER + S_CUSTOMER_TAG + 1
                                           || value [0] != AMI_MDMS_CUSTOMER_LAYOUT))) {
        ami_log_error ("mdms db: customer record of %s (%zu bytes) is corrupt", meter_id, vlen);
        return AMI_E_STORAGE;
    }
    if (rc)
        return rc;
    if (s_get_be64 (value + 1) != self->gen)
        return AMI_E_NOTFOUND;          //  stale: no longer in the registry
    uint8_t plain [S_CUSTOMER_PLAIN_MAX];
    unsigned long long plen = 0;
    if (vlen - S_CUSTOMER_HEADER - S_CUSTOMER_TAG > sizeof plain
    ||  crypto_aead_xchacha20poly1305_ietf_decrypt (
            plain, &plen, NULL, value + S_CUSTOMER_HEADER, vlen - S_CUSTOMER_HEADER,
            (const uint8_t *) meter_id, klen, value + 9, self->customer_key) != 0) {
        ami_log_error ("mdms db: customer record of %s does not open (altered, moved, or "
                       "written under another data key)", meter_id);
        return AMI_E_DECRYPT;
    }
    rc = AMI_OK;
    if (!s_customer_decode (plain, (size_t) plen, out)) {
        ami_log_error ("mdms db: customer record of %s opens but does not parse", meter_id);
        rc = AMI_E_STORAGE;
    }
    sodium_memzero (plain, sizeof plain);
    return rc;
}


/* ---------------------------------------------------------------------- */
/*  Registry import                                                         */

static int
s_hex_nibble (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/*  Customer fields of a registry line (pointers into the line). */
typedef struct {
    const char *name;
    const char *address;
    const char *account;
} s_customer_t;

/*  Parse one registry line (comment and line end already removed) into m
    and, for a 7-column line, *customer (else customer->name is NULL).
    Returns NULL, or the complaint (never quoting customer data). */
static const char *
s_registry_line (char *line, ami_mdms_meter_t *m, s_customer_t *customer)
{
    char *fields [8];
    size_t count = 0;
    char *p = line;
    while (count < 8) {
        fields [count++] = p;
        char *tab = strchr (p, '\t');
        if (!tab)
            break;
        *tab = 0;
        p = tab + 1;
    }
    if (count != 4 && count != 7)
        return "expected 4 TAB-separated fields (meter_id, fleet_id, aggregator_id, "
               "sign_pk_hex), or 7 (and customer_name, service_address, account)";
    if (!ami_id_valid (fields [0]))
        return "meter_id is not a valid id (1..32 of [A-Za-z0-9._:-])";
    if (!ami_id_valid (fields [1]))
        return "fleet_id is not a valid id (1..32 of [A-Za-z0-9._:-])";
    if (!ami_id_valid (fields [2]))
        return "aggregator_id is not a valid id (1..32 of [A-Za-z0-9._:-])";
    if (strlen (fields [3]) != 2 * AMI_E2E_SIGN_PK_SIZE)
        return "sign_pk_hex must be exactly 64 hex digits";
    for (size_t i = 0; i < AMI_E2E_SIGN_PK_SIZE; i++) {
        int hi = s_hex_nibble (fields [3][2 * i]);
        int lo = s_hex_nibble (fields [3][2 * i + 1]);
        if (hi < 0 || lo < 0)
            return "sign_pk_hex must be exactly 64 hex digits";
        m->sign_pk [i] = (uint8_t) (hi << 4 | lo);
    }
    //  Refuse small-order and non-canonical points: such a "key" would let
    //  anyone forge that meter's signatures
    if (!crypto_core_ed25519_is_valid_point (m->sign_pk))
        return "sign_pk_hex is not a valid Ed25519 public key";
    customer->name = customer->address = customer->account = NULL;
    if (count == 7) {
        size_t name = strlen (fields [4]), address = strlen (fields [5]);
        if (name < 1 || name > AMI_MAX_CUSTOMER_NAME || !s_text_valid (fields [4], name))
            return "customer_name must be 1..64 bytes of UTF-8 without control characters";
        if (address > AMI_MDMS_CUSTOMER_ADDRESS_MAX || !s_text_valid (fields [5], address))
            return "service_address must be 0..256 bytes of UTF-8 without control characters";
        if (!ami_id_valid (fields [6]))
            return "account is not a valid id (1..32 of [A-Za-z0-9._:-])";
        customer->name = fields [4];
        customer->address = fields [5];
        customer->account = fields [6];
    }
    snprintf (m->meter_id, sizeof m->meter_id, "%s", fields [0]);
    snprintf (m->fleet_id, sizeof m->fleet_id, "%s", fields [1]);
    snprintf (m->aggregator_id, sizeof m->aggregator_id, "%s", fields [2]);
    return NULL;
}

/*  Where the comment of a registry line starts, or NULL: a '#' in the
    first four fields, or the first non-blank of the fifth; in customer
    text a '#' is text. */
static char *
s_comment (char *line)
{
    size_t tabs = 0;
    bool blank = true;                  //  nothing but blanks so far in field 5
    for (char *p = line; *p; p++) {
        if (*p == '\t') {
            tabs++;
            continue;
        }
        if (*p == '#' && (tabs < 4 || (tabs == 4 && blank)))
            return p;
        if (tabs >= 4 && *p != ' ')
            blank = false;
        if (tabs > 4)
            return NULL;
    }
    return NULL;
}

//  Stringify a numeric macro for a static complaint
#define S_STR_(x) #x
#define S_STR(x) S_STR_ (x)

int
ami_mdms_registry_parse_line (const char *line, size_t len,
                              ami_mdms_registry_row_t *row, const char **why)
{
    assert (row && (line || len == 0));
    memset (row, 0, sizeof *row);
    const char *complaint = NULL;
    int rc = AMI_E_CONFIG;
    //  Work on a NUL-terminated copy: the parser cuts fields in place
    char buf [AMI_MDMS_REGISTRY_LINE_MAX + 1];
    if (len > AMI_MDMS_REGISTRY_LINE_MAX) {
        complaint = "line longer than " S_STR (AMI_MDMS_REGISTRY_LINE_MAX) " bytes";
        goto done;
    }
    if (len && memchr (line, 0, len)) {
        complaint = "NUL byte in line";
        goto done;
    }
    if (len)
        memcpy (buf, line, len);
    buf [len] = 0;
    char *hash = s_comment (buf);
    if (hash)
        *hash = 0;
    size_t n = strlen (buf);
    while (n && (buf [n - 1] == '\n' || buf [n - 1] == '\r'
              || buf [n - 1] == ' ' || buf [n - 1] == '\t'))
        buf [--n] = 0;
    if (n == 0) {
        rc = AMI_E_NOTFOUND;            //  blank or comment
        goto done;
    }
    s_customer_t customer;
    complaint = s_registry_line (buf, &row->meter, &customer);
    if (complaint) {
        memset (row, 0, sizeof *row);
        goto done;
    }
    if (customer.name) {
        //  Lengths were checked by s_registry_line: these copies are whole
        row->has_customer = true;
        snprintf (row->name, sizeof row->name, "%s", customer.name);
        snprintf (row->address, sizeof row->address, "%s", customer.address);
        snprintf (row->account, sizeof row->account, "%s", customer.account);
    }
    rc = AMI_OK;
done:
    sodium_memzero (buf, sizeof buf);   //  customer plaintext
    if (why)
        *why = complaint;
    return rc;
}

typedef struct {
    ami_mdms_db_t *self;
    zlistx_t *stale;            /* keys (strings) of entries to delete */
    int rc;
} s_stale_t;

/*  Is a customers value stale (or corrupt)? Its generation is at 1..9. */
static bool
s_customer_stale (ami_mdms_db_t *self, const void *val, size_t vlen)
{
    const uint8_t *v = (const uint8_t *) val;
    return vlen < S_CUSTOMER_HEADER || v [0] != AMI_MDMS_CUSTOMER_LAYOUT
        || s_get_be64 (v + 1) != self->gen;
}

static int
s_collect_stale_customer (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_stale_t *ctx = (s_stale_t *) arg;
    if (s_customer_stale (ctx->self, val, vlen) && klen >= 1 && klen <= AMI_MAX_ID) {
        char id [AMI_MAX_ID + 1];
        memcpy (id, key, klen);
        id [klen] = 0;
        if (!zlistx_add_end (ctx->stale, id)) {
            ctx->rc = AMI_E_NOMEM;
            return 1;
        }
    }
    return 0;
}

static int
s_collect_stale (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_stale_t *ctx = (s_stale_t *) arg;
    ami_mdms_meter_t m;
    int rc = s_meter_parse (ctx->self, key, klen, val, vlen, &m);
    if (rc == AMI_E_NOTFOUND || rc == AMI_E_STORAGE) {
        //  Stale (or corrupt: the import just rewrote every valid entry,
        //  so a corrupt one is not in the registry either)
        char id [AMI_MAX_ID + 1];
        if (klen >= 1 && klen <= AMI_MAX_ID) {
            memcpy (id, key, klen);
            id [klen] = 0;
            if (!zlistx_add_end (ctx->stale, id)) {
                ctx->rc = AMI_E_NOMEM;
                return 1;
            }
        }
    }
    return 0;
}

int
ami_mdms_db_registry_import (ami_mdms_db_t *self, const char *path,
                             zlistx_t **aggregators_p, size_t *count)
{
    assert (self && path);
    FILE *file = fopen (path, "r");
    if (!file) {
        ami_log_error ("registry %s: cannot open: %s", path, strerror (errno));
        return AMI_E_IO;
    }
    //  SEC-CONF-2: customer columns only in a file nobody else can read
    //  (the mode of what was opened, not of whatever the path names now)
    struct stat st;
    if (fstat (fileno (file), &st) != 0) {
        ami_log_error ("registry %s: cannot stat: %s", path, strerror (errno));
        fclose (file);
        return AMI_E_IO;
    }
    unsigned mode = (unsigned) (st.st_mode & 07777);
    int rc = AMI_OK;
    size_t meters = 0, lineno = 0, customers = 0;
    uint64_t gen = self->gen + 1;
    char *line = NULL;
    size_t cap = 0;
    zhashx_t *seen = zhashx_new ();
    zhashx_t *aggregators = zhashx_new ();
    ami_store_batch_t *batch = NULL;
    if (!seen || !aggregators) {
        rc = AMI_E_NOMEM;
        goto done;
    }
    batch = ami_store_batch_begin (self->store, &rc);
    if (!batch)
        goto done;

    ssize_t len;
    while ((len = getline (&line, &cap, file)) != -1) {
        lineno++;
        ami_mdms_registry_row_t row;
        const char *why = NULL;
        rc = ami_mdms_registry_parse_line (line, (size_t) len, &row, &why);
        if (rc == AMI_E_NOTFOUND) {
            rc = AMI_OK;
            continue;                   //  blank or comment
        }
        if (rc) {
            ami_log_error ("registry %s:%zu: %s", path, lineno, why);
            goto done;
        }
        ami_mdms_meter_t m = row.meter;
        s_customer_t customer = { NULL, NULL, NULL };
        if (row.has_customer) {
            customer.name = row.name;
            customer.address = row.address;
            customer.account = row.account;
        }
        if (customer.name && (mode & 077)) {
            ami_log_error ("registry %s:%zu: customer data (names, addresses, accounts) in a "
                           "file of mode %04o: refused - group and others must have no "
                           "access, as for a secret key (chmod 600 %s; ami-keygen writes it "
                           "0600)", path, lineno, mode, path);
            rc = AMI_E_CONFIG;
            sodium_memzero (&row, sizeof row);
            goto done;
        }
        if (customer.name && !self->has_key) {
            ami_log_error ("registry %s:%zu: customer data but no data key to encrypt it "
                           "(mdms/data-key)", path, lineno);
            rc = AMI_E_CONFIG;
            sodium_memzero (&row, sizeof row);
            goto done;
        }
        size_t first = (size_t) (uintptr_t) zhashx_lookup (seen, m.meter_id);
        if (first) {
            ami_log_error ("registry %s:%zu: meter %s is already listed at line %zu",
                           path, lineno, m.meter_id, first);
            rc = AMI_E_CONFIG;
            sodium_memzero (&row, sizeof row);
            goto done;
        }
        if (zhashx_insert (seen, m.meter_id, (void *) (uintptr_t) lineno)
        ||  (!zhashx_lookup (aggregators, m.aggregator_id)
          && zhashx_insert (aggregators, m.aggregator_id, (void *) (uintptr_t) 1))) {
            rc = AMI_E_NOMEM;
            sodium_memzero (&row, sizeof row);
            goto done;
        }
        uint8_t value [S_METER_VALUE_MAX];
        size_t vlen = s_meter_encode (&m, gen, value);
        rc = ami_store_batch_put (batch, self->meters, m.meter_id, strlen (m.meter_id),
                                  value, vlen, 0);
        if (rc == AMI_OK && customer.name) {
            //  SEC-CONF-2: only ciphertext enters the transaction
            uint8_t record [S_CUSTOMER_VALUE_MAX];
            size_t rlen = s_customer_seal (self, m.meter_id, gen, customer.name,
                                           customer.address, customer.account, record);
            rc = rlen ? ami_store_batch_put (batch, self->customers, m.meter_id,
                                             strlen (m.meter_id), record, rlen, 0)
                      : AMI_E_INTERNAL;
            customers++;
        }
        sodium_memzero (line, cap);     //  customer plaintext
        sodium_memzero (&row, sizeof row);
        if (rc) {
            ami_log_error ("registry %s:%zu: cannot store meter %s: %s", path, lineno,
                           m.meter_id, ami_strerror (rc));
            goto done;
        }
        meters++;
    }
    if (ferror (file)) {
        ami_log_error ("registry %s: read error: %s", path, strerror (errno));
        rc = AMI_E_IO;
        goto done;
    }
    uint8_t genbuf [8];
    s_put_be64 (genbuf, gen);
    rc = ami_store_batch_put (batch, self->meta, S_KEY_GEN, strlen (S_KEY_GEN),
                              genbuf, sizeof genbuf, 0);
    if (rc == AMI_OK)
        rc = ami_store_batch_commit (&batch);
    if (rc) {
        ami_log_error ("registry %s: cannot commit the import: %s", path, ami_strerror (rc));
        goto done;
    }
    self->gen = gen;
    self->meter_count = meters;

    //  Delete what the new registry no longer lists (readers skip it now)
    s_stale_t ctx = { self, zlistx_new (), AMI_OK };
    if (!ctx.stale) {
        rc = AMI_E_NOMEM;
        goto done;
    }
    zlistx_set_duplicator (ctx.stale, (zlistx_duplicator_fn *) strdup);
    zlistx_set_destructor (ctx.stale, (zlistx_destructor_fn *) zstr_free);
    rc = ami_store_scan (self->store, self->meters, NULL, 0, NULL, 0, false,
                         s_collect_stale, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    for (const char *id = (const char *) zlistx_first (ctx.stale); id && rc == AMI_OK;
         id = (const char *) zlistx_next (ctx.stale)) {
        int drc = ami_store_del (self->store, self->meters, id, strlen (id));
        if (drc && drc != AMI_E_NOTFOUND)
            rc = drc;
    }
    if (zlistx_size (ctx.stale)) {
        //  SEC-KEY-3: a removal is a security decision: name the meters
        size_t named = 0;
        for (const char *id = (const char *) zlistx_first (ctx.stale);
             id && named < S_REMOVED_NAMED; id = (const char *) zlistx_next (ctx.stale), named++)
            ami_log_warn ("registry %s: meter %s no longer listed, removed: its reads and "
                          "interval data are refused from now on (its stored data is kept)",
                          path, id);
        ami_log_info ("registry %s: %zu meter(s) no longer listed, removed%s", path,
                      zlistx_size (ctx.stale),
                      zlistx_size (ctx.stale) > named ? " (the first ones named above)" : "");
    }
    //  Customer records of meters gone, or listed without customer data
    zlistx_purge (ctx.stale);
    if (rc == AMI_OK)
        rc = ami_store_scan (self->store, self->customers, NULL, 0, NULL, 0, false,
                             s_collect_stale_customer, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    for (const char *id = (const char *) zlistx_first (ctx.stale); id && rc == AMI_OK;
         id = (const char *) zlistx_next (ctx.stale)) {
        int drc = ami_store_del (self->store, self->customers, id, strlen (id));
        if (drc && drc != AMI_E_NOTFOUND)
            rc = drc;
    }
    if (zlistx_size (ctx.stale))
        ami_log_info ("registry %s: %zu customer record(s) no longer given, removed", path,
                      zlistx_size (ctx.stale));
    zlistx_destroy (&ctx.stale);
    if (rc)
        goto done;
    ami_log_info ("registry %s: %zu customer record(s), encrypted at rest", path, customers);

    if (aggregators_p) {
        zlistx_t *list = ami_keys_sorted (aggregators);
        if (!list) {
            rc = AMI_E_NOMEM;
            goto done;
        }
        *aggregators_p = list;
    }
    if (count)
        *count = meters;

done:
    ami_store_batch_abort (&batch);
    zhashx_destroy (&seen);
    zhashx_destroy (&aggregators);
    if (line)
        sodium_memzero (line, cap);
    free (line);
    fclose (file);
    return rc;
}


/* ---------------------------------------------------------------------- */
/*  Registry queries                                                        */

int
ami_mdms_db_meter_get (ami_mdms_db_t *self, const char *meter_id, ami_mdms_meter_t *out)
{
    assert (self && meter_id && out);
    size_t klen = strlen (meter_id);
    if (klen == 0 || klen > AMI_MAX_ID)
        return AMI_E_NOTFOUND;
    uint8_t value [S_METER_VALUE_MAX];
    size_t vlen = 0;
    int rc = ami_store_get (self->store, self->meters, meter_id, klen, value, sizeof value, &vlen);
    if (rc == AMI_E_LIMIT) {
        ami_log_error ("mdms db: registry entry of %s is %zu bytes: corrupt", meter_id, vlen);
        return AMI_E_STORAGE;
    }
    if (rc)
        return rc;
    return s_meter_parse (self, meter_id, klen, value, vlen, out);
}

typedef struct {
    ami_mdms_db_t *self;
    ami_mdms_meter_t *rows;
    size_t limit;
    size_t count;
    bool more;
    int rc;
} s_page_t;

static int
s_page_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_page_t *ctx = (s_page_t *) arg;
    ami_mdms_meter_t m;
    int rc = s_meter_parse (ctx->self, key, klen, val, vlen, &m);
    if (rc == AMI_E_NOTFOUND)
        return 0;                       //  stale entry: not in the registry
    if (rc) {
        ctx->rc = rc;
        return 1;
    }
    if (ctx->count == ctx->limit) {
        ctx->more = true;
        return 1;
    }
    ctx->rows [ctx->count++] = m;
    return 0;
}

int
ami_mdms_db_meters_page (ami_mdms_db_t *self, const char *after, size_t limit,
                         ami_mdms_meter_t *rows, size_t *count, bool *more)
{
    assert (self && rows && count && more);
    s_page_t ctx = { self, rows, limit, 0, false, AMI_OK };
    //  The smallest key above `after` is `after` followed by a 0x00 byte
    uint8_t from [AMI_MAX_ID + 1];
    size_t from_len = 0;
    if (after && *after) {
        from_len = strlen (after);
        if (from_len > AMI_MAX_ID)
            from_len = AMI_MAX_ID;
        memcpy (from, after, from_len);
        from [from_len++] = 0;
    }
    //  With limit 0 the first row only sets more: rows is never written
    int rc = ami_store_scan (self->store, self->meters, from_len ? from : NULL, from_len,
                             NULL, 0, false, s_page_row, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    *count = ctx.count;
    *more = ctx.more;
    return rc;
}

size_t
ami_mdms_db_meter_count (ami_mdms_db_t *self)
{
    assert (self);
    return self->meter_count;
}


/* ---------------------------------------------------------------------- */
/*  Counter                                                                 */

int
ami_mdms_db_counter_next (ami_mdms_db_t *self, uint64_t *counter)
{
    assert (self && counter);
    if (self->next > self->reserved) {
        if (self->next > UINT64_MAX - AMI_MDMS_COUNTER_BLOCK) {
            ami_log_error ("mdms db: command counter exhausted");
            return AMI_E_STORAGE;
        }
        uint64_t mark = self->next - 1 + AMI_MDMS_COUNTER_BLOCK;
        uint8_t buf [8];
        s_put_be64 (buf, mark);
        //  Durable BEFORE the first value of the block leaves the MDMS
        int rc = ami_store_put (self->store, self->meta, S_KEY_COUNTER, strlen (S_KEY_COUNTER),
                                buf, sizeof buf, 0);
        if (rc) {
            ami_log_error ("mdms db: cannot reserve command counters: %s", ami_strerror (rc));
            return rc;
        }
        self->reserved = mark;
    }
    *counter = self->next++;
    return AMI_OK;
}

uint64_t
ami_mdms_db_counter_reserved (ami_mdms_db_t *self)
{
    assert (self);
    return self->reserved;
}


/* ---------------------------------------------------------------------- */
/*  Readings                                                                */

size_t
ami_mdms_db_reading_key (const char *meter_id, uint64_t read_ms,
                         const uint8_t request_id [AMI_REQUEST_ID_SIZE], uint8_t *key)
{
    if (!meter_id || !ami_id_valid (meter_id))
        return 0;
    size_t n = strlen (meter_id);
    memcpy (key, meter_id, n);
    key [n++] = 0;
    s_put_be64 (key + n, read_ms);
    n += 8;
    if (request_id)
        memcpy (key + n, request_id, AMI_REQUEST_ID_SIZE);
    else
        memset (key + n, 0, AMI_REQUEST_ID_SIZE);
    return n + AMI_REQUEST_ID_SIZE;
}

static int
s_parse_key (const uint8_t *k, size_t klen, ami_mdms_reading_t *row)
{
    if (klen < 1 + 1 + 8 + AMI_REQUEST_ID_SIZE || klen > AMI_MDMS_READING_KEY_MAX)
        return AMI_E_STORAGE;
    size_t idlen = klen - (1 + 8 + AMI_REQUEST_ID_SIZE);
    if (k [idlen] != 0)
        return AMI_E_STORAGE;
    memcpy (row->meter_id, k, idlen);
    row->meter_id [idlen] = 0;
    if (!ami_id_valid (row->meter_id))
        return AMI_E_STORAGE;
    row->read_ms = s_get_be64 (k + idlen + 1);
    memcpy (row->request_id, k + idlen + 9, AMI_REQUEST_ID_SIZE);
    return AMI_OK;
}

int
ami_mdms_db_reading_parse (const void *key, size_t klen, const void *record, size_t rlen,
                           ami_mdms_reading_t *row)
{
    assert (row);
    const uint8_t *v = (const uint8_t *) record;
    size_t vlen = rlen;
    memset (row, 0, sizeof *row);
    if (!key || !record || s_parse_key ((const uint8_t *) key, klen, row))
        return AMI_E_STORAGE;
    if (vlen < AMI_MDMS_READING_HEADER + 4 || v [0] != AMI_MDMS_READING_LAYOUT)
        return AMI_E_STORAGE;
    row->requested_ms = s_get_be64 (v + 1);
    row->stored_ms = s_get_be64 (v + 9);
    size_t len = s_get_be32 (v + 17);
    size_t pos = AMI_MDMS_READING_HEADER;
    //  Every length is checked against what is actually there
    if (len < 1 || len > AMI_MAX_FRAME || len > vlen - pos || vlen - pos - len < 4)
        return AMI_E_STORAGE;
    row->reading = v + pos;
    row->reading_size = len;
    pos += len;
    size_t plen = s_get_be32 (v + pos);
    pos += 4;
    if (plen < 1 || plen > AMI_MAX_FRAME || plen != vlen - pos)
        return AMI_E_STORAGE;
    row->proof = v + pos;
    row->proof_size = plen;
    return AMI_OK;
}

/*  "MTR-1 read_ms 1234" of a readings key, for a log line. */
static void
s_key_text (const void *key, size_t klen, char *out, size_t cap)
{
    ami_mdms_reading_t row;
    memset (&row, 0, sizeof row);
    if (s_parse_key ((const uint8_t *) key, klen, &row) == AMI_OK)
        snprintf (out, cap, "of meter %s, read_ms %llu", row.meter_id,
                  (unsigned long long) row.read_ms);
    else
        snprintf (out, cap, "(%zu-byte key)", klen);
}

int
ami_mdms_db_reading_seal (ami_mdms_db_t *self, const void *key, size_t klen,
                          const uint8_t *record, size_t rlen,
                          uint8_t *val, size_t cap, size_t *vlen)
{
    assert (self && key && record && val && vlen);
    if (!self->has_key)
        return AMI_E_CONFIG;
    if (rlen == 0 || cap < AMI_MDMS_READING_BOX || rlen > cap - AMI_MDMS_READING_BOX)
        return AMI_E_LIMIT;
    val [0] = AMI_MDMS_READING_SEALED;
    uint8_t *nonce = val + 1;
    ami_e2e_nonce (nonce);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt (val + 1 + S_NONCE, &clen, record, rlen,
                                                (const uint8_t *) key, klen, NULL, nonce,
                                                self->meter_key);
    *vlen = 1 + S_NONCE + (size_t) clen;
    return AMI_OK;
}

int
ami_mdms_db_reading_open (ami_mdms_db_t *self, const void *key, size_t klen,
                          const void *val, size_t vlen,
                          uint8_t *record, size_t cap, size_t *rlen)
{
    assert (self && key && val && record && rlen);
    if (!self->has_key)
        return AMI_E_CONFIG;
    const uint8_t *v = (const uint8_t *) val;
    char where [80];
    if (vlen < AMI_MDMS_READING_BOX + 1 || v [0] != AMI_MDMS_READING_SEALED) {
        s_key_text (key, klen, where, sizeof where);
        ami_log_error ("mdms db: stored reading %s (%zu bytes) is %s: refused as corrupt",
                       where, vlen, vlen && v [0] == AMI_MDMS_READING_LAYOUT
                                    ? "a clear record, not sealed" : "not a sealed value");
        return AMI_E_STORAGE;
    }
    if (cap < vlen - AMI_MDMS_READING_BOX)
        return AMI_E_LIMIT;
    unsigned long long plen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt (
            record, &plen, NULL, v + 1 + S_NONCE, vlen - 1 - S_NONCE,
            (const uint8_t *) key, klen, v + 1, self->meter_key) != 0) {
        s_key_text (key, klen, where, sizeof where);
        ami_log_error ("mdms db: stored reading %s does not open (altered, moved to another "
                       "key, or sealed under another data key): refused as corrupt", where);
        return AMI_E_STORAGE;
    }
    *rlen = (size_t) plen;
    return AMI_OK;
}

/*  A work buffer of at least size bytes for an opened record (kept: the
    next one is usually as large). */
static uint8_t *
s_work (ami_mdms_db_t *self, size_t size)
{
    if (size > self->work_cap) {
        //  Grown by a fresh allocation: the old buffer is wiped (it is
        //  wiped after every use anyway) and freed, never realloc'd
        uint8_t *work = (uint8_t *) malloc (size);
        if (!work)
            return NULL;
        if (self->work) {
            sodium_memzero (self->work, self->work_cap);
            free (self->work);
        }
        self->work = work;
        self->work_cap = size;
    }
    return self->work;
}

/*  Open and parse one stored readings value into row (pointers into the
    work buffer; *used gets the bytes to wipe after use). AMI_OK,
    AMI_E_STORAGE (logged), AMI_E_NOMEM, AMI_E_CONFIG. */
static int
s_reading_row (ami_mdms_db_t *self, const void *key, size_t klen, const void *val,
               size_t vlen, ami_mdms_reading_t *row, size_t *used)
{
    *used = 0;
    memset (row, 0, sizeof *row);
    if (!self->has_key)
        return AMI_E_CONFIG;
    size_t need = vlen > AMI_MDMS_READING_BOX ? vlen - AMI_MDMS_READING_BOX : 1;
    uint8_t *work = s_work (self, need);
    if (!work)
        return AMI_E_NOMEM;
    size_t rlen = 0;
    int rc = ami_mdms_db_reading_open (self, key, klen, val, vlen, work, self->work_cap, &rlen);
    if (rc)
        return rc;
    *used = rlen;
    if (ami_mdms_db_reading_parse (key, klen, work, rlen, row)) {
        char where [80];
        s_key_text (key, klen, where, sizeof where);
        ami_log_error ("mdms db: stored reading %s opens but its record (%zu bytes) does not "
                       "parse: refused as corrupt", where, rlen);
        return AMI_E_STORAGE;
    }
    return AMI_OK;
}

/*  Build a readings key and sealed value (value malloc'd, caller frees). */
static int
s_reading_build (ami_mdms_db_t *self, const char *meter_id, uint64_t read_ms,
                 const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                 uint64_t requested_ms, uint64_t stored_ms,
                 const uint8_t *reading, size_t reading_size,
                 const uint8_t *proof, size_t proof_size,
                 uint8_t *key, size_t *klen, uint8_t **value_p, size_t *vlen_p)
{
    if (!self->has_key) {
        ami_log_error ("mdms db: no data key: a reading cannot be stored encrypted");
        return AMI_E_CONFIG;
    }
    if (reading_size < 1 || reading_size > AMI_MAX_FRAME
    ||  proof_size < 1 || proof_size > AMI_MAX_FRAME)
        return AMI_E_LIMIT;
    *klen = ami_mdms_db_reading_key (meter_id, read_ms, request_id, key);
    if (!*klen)
        return AMI_E_RANGE;
    size_t rlen = AMI_MDMS_READING_HEADER + reading_size + 4 + proof_size;
    uint8_t *record = (uint8_t *) malloc (rlen);
    uint8_t *value = (uint8_t *) malloc (rlen + AMI_MDMS_READING_BOX);
    if (!record || !value) {
        free (record);
        free (value);
        return AMI_E_NOMEM;
    }
    record [0] = AMI_MDMS_READING_LAYOUT;
    s_put_be64 (record + 1, requested_ms);
    s_put_be64 (record + 9, stored_ms);
    s_put_be32 (record + 17, (uint32_t) reading_size);
    memcpy (record + AMI_MDMS_READING_HEADER, reading, reading_size);
    size_t pos = AMI_MDMS_READING_HEADER + reading_size;
    s_put_be32 (record + pos, (uint32_t) proof_size);
    memcpy (record + pos + 4, proof, proof_size);
    //  SEC-CONF-2: only the sealed record goes on
    int rc = ami_mdms_db_reading_seal (self, key, *klen, record, rlen, value,
                                       rlen + AMI_MDMS_READING_BOX, vlen_p);
    sodium_memzero (record, rlen);
    free (record);
    if (rc) {
        free (value);
        return rc;
    }
    *value_p = value;
    return AMI_OK;
}

int
ami_mdms_db_reading_put (ami_mdms_db_t *self, const char *meter_id, uint64_t read_ms,
                         const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                         uint64_t requested_ms, uint64_t stored_ms,
                         const uint8_t *reading, size_t reading_size,
                         const uint8_t *proof, size_t proof_size)
{
    assert (self && meter_id && request_id && reading && proof);
    uint8_t key [AMI_MDMS_READING_KEY_MAX];
    size_t klen = 0, vlen = 0;
    uint8_t *value = NULL;
    int rc = s_reading_build (self, meter_id, read_ms, request_id, requested_ms, stored_ms,
                              reading, reading_size, proof, proof_size,
                              key, &klen, &value, &vlen);
    if (rc)
        return rc;
    rc = ami_store_put (self->store, self->readings, key, klen, value, vlen,
                        AMI_STORE_NOOVERWRITE);
    free (value);
    return rc;
}

int
ami_mdms_db_reading_stage (ami_mdms_db_t *self, ami_store_batch_t *batch,
                           const char *meter_id, uint64_t read_ms,
                           const uint8_t request_id [AMI_REQUEST_ID_SIZE],
                           uint64_t requested_ms, uint64_t stored_ms,
                           const uint8_t *reading, size_t reading_size,
                           const uint8_t *proof, size_t proof_size)
{
    assert (self && batch && meter_id && request_id && reading && proof);
    uint8_t key [AMI_MDMS_READING_KEY_MAX];
    size_t klen = 0, vlen = 0;
    uint8_t *value = NULL;
    int rc = s_reading_build (self, meter_id, read_ms, request_id, requested_ms, stored_ms,
                              reading, reading_size, proof, proof_size,
                              key, &klen, &value, &vlen);
    if (rc)
        return rc;
    rc = ami_store_batch_put (batch, self->readings, key, klen, value, vlen,
                              AMI_STORE_NOOVERWRITE);
    free (value);
    return rc;
}

typedef struct {
    ami_mdms_db_t *self;
    ami_mdms_history_fn *fn;
    void *arg;
    size_t limit;
    size_t count;
    bool more;
    bool stopped;
    int rc;
} s_history_t;

static int
s_history_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_history_t *ctx = (s_history_t *) arg;
    if (ctx->count == ctx->limit) {
        ctx->more = true;
        return 1;
    }
    ami_mdms_reading_t row;
    size_t used = 0;
    int rc = s_reading_row (ctx->self, key, klen, val, vlen, &row, &used);
    if (rc) {
        if (used)
            sodium_memzero (ctx->self->work, used);
        ctx->rc = rc;
        return 1;
    }
    ctx->count++;
    bool stop = ctx->fn && ctx->fn (&row, ctx->arg);
    sodium_memzero (ctx->self->work, used);
    if (stop) {
        ctx->stopped = true;
        return 1;
    }
    return 0;
}

/*  Range of one meter's readings keys with from_ms <= read_ms <= to_ms. */
static bool
s_history_range (const char *meter_id, uint64_t from_ms, uint64_t to_ms,
                 uint8_t *lo, size_t *lo_len, uint8_t *hi, size_t *hi_len)
{
    uint8_t ones [AMI_REQUEST_ID_SIZE];
    memset (ones, 0xff, sizeof ones);
    *lo_len = ami_mdms_db_reading_key (meter_id, from_ms, NULL, lo);
    *hi_len = ami_mdms_db_reading_key (meter_id, to_ms ? to_ms : UINT64_MAX, ones, hi);
    return *lo_len && *hi_len;
}

int
ami_mdms_db_history (ami_mdms_db_t *self, const char *meter_id,
                     uint64_t from_ms, uint64_t to_ms, size_t limit,
                     ami_mdms_history_fn *fn, void *arg, bool *more)
{
    assert (self && meter_id);
    s_history_t ctx = { self, fn, arg, limit, 0, false, false, AMI_OK };
    uint8_t lo [AMI_MDMS_READING_KEY_MAX], hi [AMI_MDMS_READING_KEY_MAX];
    size_t lo_len, hi_len;
    if (more)
        *more = false;
    if (!s_history_range (meter_id, from_ms, to_ms, lo, &lo_len, hi, &hi_len))
        return AMI_OK;                  //  not an id: it has no readings
    int rc = ami_store_scan (self->store, self->readings, lo, lo_len, hi, hi_len, true,
                             s_history_row, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    if (more)
        *more = ctx.more;
    return rc;
}

typedef struct {
    ami_mdms_db_t *self;
    ami_mdms_each_fn *fn;
    void *arg;
    int rc;
} s_each_t;

static int
s_each_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_each_t *ctx = (s_each_t *) arg;
    ami_mdms_reading_t row;
    size_t used = 0;
    int rc = s_reading_row (ctx->self, key, klen, val, vlen, &row, &used);
    if (rc == AMI_E_NOMEM || rc == AMI_E_CONFIG) {
        ctx->rc = rc;                   //  not the row's fault: the walk fails
        return 1;
    }
    if (rc) {
        //  Keep what the key tells (the meter and read time), if anything
        memset (&row, 0, sizeof row);
        ami_mdms_reading_t keyed;
        memset (&keyed, 0, sizeof keyed);
        if (s_parse_key ((const uint8_t *) key, klen, &keyed) == AMI_OK) {
            memcpy (row.meter_id, keyed.meter_id, sizeof row.meter_id);
            row.read_ms = keyed.read_ms;
            memcpy (row.request_id, keyed.request_id, AMI_REQUEST_ID_SIZE);
        }
        rc = AMI_E_STORAGE;
    }
    int stop = ctx->fn (rc, &row, ctx->arg);
    if (used)
        sodium_memzero (ctx->self->work, used);
    return stop;
}

int
ami_mdms_db_readings_each (ami_mdms_db_t *self, const char *meter_id,
                           uint64_t from_ms, uint64_t to_ms,
                           ami_mdms_each_fn *fn, void *arg)
{
    assert (self && meter_id && fn);
    uint8_t lo [AMI_MDMS_READING_KEY_MAX], hi [AMI_MDMS_READING_KEY_MAX];
    size_t lo_len, hi_len;
    if (!s_history_range (meter_id, from_ms, to_ms, lo, &lo_len, hi, &hi_len))
        return AMI_OK;
    s_each_t ctx = { self, fn, arg, AMI_OK };
    int rc = ami_store_scan (self->store, self->readings, lo, lo_len, hi, hi_len, false,
                             s_each_row, &ctx);
    return rc ? rc : ctx.rc;
}

typedef struct {
    uint64_t read_ms;
    int rc;
} s_last_t;

static int
s_last_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    (void) val;
    (void) vlen;
    s_last_t *ctx = (s_last_t *) arg;
    ami_mdms_reading_t row;
    if (s_parse_key ((const uint8_t *) key, klen, &row))
        ctx->rc = AMI_E_STORAGE;
    else
        ctx->read_ms = row.read_ms;
    return 1;
}

int
ami_mdms_db_last_read (ami_mdms_db_t *self, const char *meter_id, uint64_t *read_ms)
{
    assert (self && meter_id && read_ms);
    *read_ms = 0;
    uint8_t lo [AMI_MDMS_READING_KEY_MAX], hi [AMI_MDMS_READING_KEY_MAX];
    size_t lo_len, hi_len;
    if (!s_history_range (meter_id, 0, 0, lo, &lo_len, hi, &hi_len))
        return AMI_OK;
    s_last_t ctx = { 0, AMI_OK };
    int rc = ami_store_scan (self->store, self->readings, lo, lo_len, hi, hi_len, true,
                             s_last_row, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    if (rc == AMI_OK)
        *read_ms = ctx.read_ms;
    return rc;
}

size_t
ami_mdms_db_reading_count (ami_mdms_db_t *self)
{
    assert (self);
    size_t n = 0;
    if (ami_store_count (self->store, self->readings, &n))
        return 0;
    return n;
}


/* ---------------------------------------------------------------------- */
/*  Interval data                                                           */

int
ami_mdms_db_interval_setup (ami_mdms_db_t *self, uint32_t interval_s)
{
    assert (self);
    if (interval_s < 1 || interval_s > 86400 || 86400 % interval_s) {
        ami_log_error ("mdms db: interval of %u s does not divide a day", interval_s);
        return AMI_E_CONFIG;
    }
    uint64_t stored = 0;
    int rc = s_meta_get (self, S_KEY_INTERVAL, &stored);
    if (rc == AMI_OK && stored != interval_s) {
        size_t entries = 0;
        rc = ami_store_count (self->store, self->intervals, &entries);
        if (rc)
            return rc;
        if (entries) {
            ami_log_error ("mdms db: interval data is stored at %llu s intervals, "
                           "configured %u s: refusing (the stored slots would mean "
                           "other times)", (unsigned long long) stored, interval_s);
            return AMI_E_CONFIG;
        }
        rc = AMI_E_NOTFOUND;            //  nothing stored yet: take the new one
    }
    if (rc == AMI_E_NOTFOUND) {
        uint8_t buf [8];
        s_put_be64 (buf, interval_s);
        rc = ami_store_put (self->store, self->meta, S_KEY_INTERVAL, strlen (S_KEY_INTERVAL),
                            buf, sizeof buf, 0);
    }
    if (rc == AMI_OK)
        self->interval_s = interval_s;
    return rc;
}

uint32_t
ami_mdms_db_interval_s (ami_mdms_db_t *self)
{
    assert (self);
    return self->interval_s;
}

unsigned
ami_mdms_db_intervals_dbi (ami_mdms_db_t *self)
{
    assert (self);
    return self->intervals;
}

size_t
ami_mdms_db_interval_key (const char *meter_id, uint32_t bucket, uint8_t *key)
{
    assert (meter_id && key);
    if (!ami_id_valid (meter_id))
        return 0;
    size_t len = strlen (meter_id);
    memcpy (key, meter_id, len);
    key [len] = 0;
    s_put_be32 (key + len + 1, bucket);
    return len + 5;
}

int
ami_mdms_db_interval_key_parse (const void *key, size_t klen, ami_id_t meter_id,
                                uint32_t *bucket)
{
    assert (key && meter_id && bucket);
    const uint8_t *k = (const uint8_t *) key;
    if (klen < 6 || klen > AMI_MDMS_INTERVAL_KEY_MAX || k [klen - 5] != 0)
        return AMI_E_STORAGE;
    memcpy (meter_id, k, klen - 5);
    meter_id [klen - 5] = 0;
    if (!ami_id_valid (meter_id))
        return AMI_E_STORAGE;
    *bucket = s_get_be32 (k + klen - 4);
    return AMI_OK;
}

bool
ami_mdms_db_interval_present (const uint8_t *value, unsigned slot)
{
    assert (value && slot < AMI_MDMS_INTERVAL_SLOTS);
    return (value [slot >> 3] >> (slot & 7)) & 1;
}

void
ami_mdms_db_interval_get (const uint8_t *value, unsigned slot, uint32_t bucket,
                          uint32_t interval_s, ami_interval_t *out)
{
    assert (value && out && slot < AMI_MDMS_INTERVAL_SLOTS);
    const uint8_t *p = value + AMI_MDMS_INTERVAL_BITMAP + slot * AMI_MDMS_INTERVAL_RECORD;
    uint64_t import_wh = 0, export_wh = 0;
    for (int i = 7; i >= 0; i--)
        import_wh = (import_wh << 8) | p [i];
    for (int i = 13; i >= 8; i--)
        export_wh = (export_wh << 8) | p [i];
    out->end_s = (uint32_t) (((uint64_t) bucket * AMI_MDMS_INTERVAL_SLOTS + slot + 1)
                             * interval_s);
    out->import_wh = import_wh;
    out->export_wh = export_wh;
    out->status = (uint16_t) (p [14] | (p [15] << 8));
}

void
ami_mdms_db_interval_put (uint8_t *value, unsigned slot, const ami_interval_t *rec)
{
    assert (value && rec && slot < AMI_MDMS_INTERVAL_SLOTS);
    assert (rec->export_wh <= AMI_MDMS_EXPORT_MAX);
    uint8_t *p = value + AMI_MDMS_INTERVAL_BITMAP + slot * AMI_MDMS_INTERVAL_RECORD;
    uint64_t v = rec->import_wh;
    for (int i = 0; i < 8; i++, v >>= 8)
        p [i] = (uint8_t) v;
    v = rec->export_wh;
    for (int i = 8; i < 14; i++, v >>= 8)
        p [i] = (uint8_t) v;
    p [14] = (uint8_t) rec->status;
    p [15] = (uint8_t) (rec->status >> 8);
    value [slot >> 3] |= (uint8_t) (1u << (slot & 7));
}

unsigned
ami_mdms_db_interval_count (const uint8_t *value)
{
    assert (value);
    unsigned n = 0;
    for (int i = 0; i < AMI_MDMS_INTERVAL_BITMAP; i++)
        n += (unsigned) __builtin_popcount (value [i]);
    return n;
}

/*  "of meter MTR-1, bucket 20617" of an intervals key, for a log line. */
static void
s_interval_key_text (const void *key, size_t klen, char *out, size_t cap)
{
    ami_id_t meter;
    uint32_t bucket = 0;
    if (ami_mdms_db_interval_key_parse (key, klen, meter, &bucket) == AMI_OK)
        snprintf (out, cap, "of meter %s, bucket %u", meter, bucket);
    else
        snprintf (out, cap, "(%zu-byte key)", klen);
}

/*  Additional data of an intervals value: its key, then its clear bitmap
    (so the bitmap cannot be changed either). Returns the length. */
static size_t
s_interval_ad (const void *key, size_t klen, const uint8_t *bitmap, uint8_t *ad)
{
    memcpy (ad, key, klen);
    memcpy (ad + klen, bitmap, AMI_MDMS_INTERVAL_BITMAP);
    return klen + AMI_MDMS_INTERVAL_BITMAP;
}

int
ami_mdms_db_interval_seal (ami_mdms_db_t *self, const void *key, size_t klen,
                           const uint8_t *plain, uint8_t *value)
{
    assert (self && key && plain && value);
    assert (klen >= 1 && klen <= AMI_MDMS_INTERVAL_KEY_MAX);
    if (!self->has_key)
        return AMI_E_CONFIG;
    uint8_t ad [AMI_MDMS_INTERVAL_KEY_MAX + AMI_MDMS_INTERVAL_BITMAP];
    size_t adlen = s_interval_ad (key, klen, plain, ad);
    memcpy (value, plain, AMI_MDMS_INTERVAL_BITMAP);
    ami_e2e_nonce (value + S_IV_NONCE);
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached (
        value + S_IV_CIPHER, value + S_IV_TAG, NULL,
        plain + AMI_MDMS_INTERVAL_BITMAP, AMI_MDMS_INTERVAL_RECORDS,
        ad, adlen, NULL, value + S_IV_NONCE, self->meter_key);
    return AMI_OK;
}

int
ami_mdms_db_interval_open (ami_mdms_db_t *self, const void *key, size_t klen,
                           const uint8_t *value, uint8_t *plain)
{
    assert (self && key && value && plain);
    if (!self->has_key)
        return AMI_E_CONFIG;
    uint8_t ad [AMI_MDMS_INTERVAL_KEY_MAX + AMI_MDMS_INTERVAL_BITMAP];
    bool key_ok = klen >= 1 && klen <= AMI_MDMS_INTERVAL_KEY_MAX;
    size_t adlen = key_ok ? s_interval_ad (key, klen, value, ad) : 0;
    if (!key_ok
    ||  crypto_aead_xchacha20poly1305_ietf_decrypt_detached (
            plain + AMI_MDMS_INTERVAL_BITMAP, NULL,
            value + S_IV_CIPHER, AMI_MDMS_INTERVAL_RECORDS, value + S_IV_TAG,
            ad, adlen, value + S_IV_NONCE, self->meter_key) != 0) {
        memset (plain, 0, AMI_MDMS_INTERVAL_PLAIN);
        char where [80];
        s_interval_key_text (key, klen, where, sizeof where);
        ami_log_error ("mdms db: interval record %s does not open (altered, moved to another "
                       "key, or sealed under another data key): refused as corrupt", where);
        return AMI_E_STORAGE;
    }
    memcpy (plain, value, AMI_MDMS_INTERVAL_BITMAP);
    return AMI_OK;
}

typedef struct {
    ami_mdms_db_t *self;
    const char *meter_id;
    size_t id_len;
    uint32_t interval_s;
    uint64_t n_from, n_to;          /* interval numbers, inclusive */
    ami_interval_t *out;
    size_t limit;
    size_t count;
    bool more;
    int rc;
} s_intervals_t;

static int
s_intervals_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    s_intervals_t *ctx = (s_intervals_t *) arg;
    ami_id_t meter;
    uint32_t bucket = 0;
    if (ami_mdms_db_interval_key_parse (key, klen, meter, &bucket)
    ||  strcmp (meter, ctx->meter_id) != 0 || vlen != AMI_MDMS_INTERVAL_VALUE) {
        ami_log_error ("mdms db: interval record of %s (%zu-byte key, %zu-byte value) is "
                       "corrupt", ctx->meter_id, klen, vlen);
        ctx->rc = AMI_E_STORAGE;
        return 1;
    }
    //  Open it (SEC-CONF-2): a record that does not open is never served
    uint8_t value [AMI_MDMS_INTERVAL_PLAIN];
    int rc = ami_mdms_db_interval_open (ctx->self, key, klen, (const uint8_t *) val, value);
    if (rc) {
        ctx->rc = rc;
        return 1;
    }
    int stop = 0;
    uint64_t first = (uint64_t) bucket * AMI_MDMS_INTERVAL_SLOTS + 1;     //  n of slot 0
    for (unsigned slot = 0; slot < AMI_MDMS_INTERVAL_SLOTS; slot++) {
        uint64_t n = first + slot;
        if (n < ctx->n_from)
            continue;
        if (n > ctx->n_to) {
            stop = 1;
            break;
        }
        if (!ami_mdms_db_interval_present (value, slot))
            continue;
        if (ctx->count == ctx->limit) {
            ctx->more = true;
            stop = 1;
            break;
        }
        ami_mdms_db_interval_get (value, slot, bucket, ctx->interval_s, &ctx->out [ctx->count++]);
    }
    sodium_memzero (value, sizeof value);
    return stop;
}

int
ami_mdms_db_intervals (ami_mdms_db_t *self, const char *meter_id, uint64_t from_ms,
                       uint64_t to_ms, size_t limit, ami_interval_t *out,
                       size_t *count, bool *more)
{
    assert (self && meter_id && out && count && more && limit >= 1);
    *count = 0;
    *more = false;
    uint64_t interval = self->interval_s;
    if (!interval || !ami_id_valid (meter_id))
        return AMI_OK;
    //  Interval numbers n with from_ms <= n * interval * 1000 <= to_ms;
    //  end_s is a u32, so n never passes UINT32_MAX / interval
    uint64_t from_s = from_ms / 1000 + (from_ms % 1000 != 0);
    uint64_t n_from = (from_s + interval - 1) / interval;
    if (n_from < 1)
        n_from = 1;
    uint64_t n_max = UINT32_MAX / interval;
    uint64_t n_to = to_ms ? (to_ms / 1000) / interval : n_max;
    if (n_to > n_max)
        n_to = n_max;
    if (n_from > n_to)
        return AMI_OK;
    uint8_t lo [AMI_MDMS_INTERVAL_KEY_MAX], hi [AMI_MDMS_INTERVAL_KEY_MAX];
    size_t lo_len = ami_mdms_db_interval_key (meter_id, (uint32_t) ((n_from - 1) / AMI_MDMS_INTERVAL_SLOTS), lo);
    size_t hi_len = ami_mdms_db_interval_key (meter_id, (uint32_t) ((n_to - 1) / AMI_MDMS_INTERVAL_SLOTS), hi);
    if (!self->has_key)
        return AMI_E_CONFIG;
    s_intervals_t ctx = { self, meter_id, strlen (meter_id), self->interval_s, n_from, n_to,
                          out, limit, 0, false, AMI_OK };
    int rc = ami_store_scan (self->store, self->intervals, lo, lo_len, hi, hi_len, false,
                             s_intervals_row, &ctx);
    if (rc == AMI_OK)
        rc = ctx.rc;
    if (rc == AMI_OK) {
        *count = ctx.count;
        *more = ctx.more;
    }
    return rc;
}

typedef struct {
    uint64_t readings;
    size_t buckets;
} s_total_t;

static int
s_total_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    (void) key;
    (void) klen;
    s_total_t *ctx = (s_total_t *) arg;
    ctx->buckets++;
    if (vlen == AMI_MDMS_INTERVAL_VALUE)
        ctx->readings += ami_mdms_db_interval_count ((const uint8_t *) val);
    return 0;
}

int
ami_mdms_db_intervals_total (ami_mdms_db_t *self, uint64_t *readings, size_t *buckets)
{
    assert (self);
    s_total_t ctx = { 0, 0 };
    int rc = ami_store_scan (self->store, self->intervals, NULL, 0, NULL, 0, false,
                             s_total_row, &ctx);
    if (rc == AMI_OK) {
        if (readings)
            *readings = ctx.readings;
        if (buckets)
            *buckets = ctx.buckets;
    }
    return rc;
}
