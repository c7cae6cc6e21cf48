/*  ami_e2e.c - MDMS <-> meter signatures, sealing and command checks.

    Everything here is a thin, checked use of one libsodium primitive; the
    protocol choices are explained in ami_e2e.h and proto/PROTOCOL.md.
*/
#include "ami_e2e.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ami_cert.h"
#include "ami_log.h"

/* crypto_kdf context: exactly 8 bytes, names what the subkeys are for. */
static const char s_meter_kdf_ctx [crypto_kdf_CONTEXTBYTES] = { 'A', 'M', 'I', 'm', 'e', 't', 'e', 'r' };

static int
s_path (char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf (out, cap, "%s/%s", dir, name);
    return (n < 0 || (size_t) n >= cap) ? AMI_E_IO : AMI_OK;
}

static int
s_save_pair (const char *path, const char *role, const char *node_id, const char *type,
             const uint8_t pk [32], const uint8_t secret [32])
{
    int err = 0;
    ami_cert_t *cert = ami_cert_new_from_keys (role, node_id, type, pk, secret, &err);
    if (!cert)
        return err;
    int rc = ami_cert_save (cert, path);
    ami_cert_destroy (&cert);
    return rc;
}

int
ami_e2e_mdms_generate (const char *dir, const char *node_id)
{
    if (sodium_init () < 0)
        return AMI_E_INTERNAL;
    char path [4096];
    uint8_t pk [32], seed [32], sk [crypto_sign_SECRETKEYBYTES];
    randombytes_buf (seed, sizeof seed);
    crypto_sign_seed_keypair (pk, sk, seed);
    int rc = s_path (path, sizeof path, dir, "mdms-sign.cert");
    if (rc == AMI_OK)
        rc = s_save_pair (path, "mdms", node_id, AMI_CERT_KEY_ED25519, pk, seed);
    if (rc == AMI_OK) {
        uint8_t box_sk [32];
        crypto_box_keypair (pk, box_sk);
        rc = s_path (path, sizeof path, dir, "mdms-box.cert");
        if (rc == AMI_OK)
            rc = s_save_pair (path, "mdms", node_id, AMI_CERT_KEY_CURVE, pk, box_sk);
        sodium_memzero (box_sk, sizeof box_sk);
    }
    sodium_memzero (seed, sizeof seed);
    sodium_memzero (sk, sizeof sk);
    return rc;
}

/*  Load one key file, checking its key type. Copies the public key and,
    when secret, the 32-byte secret. */
static int
s_load_key (const char *path, const char *type, bool secret, uint8_t pk [32], uint8_t sk32 [32])
{
    int err = 0;
    ami_cert_t *cert = secret ? ami_cert_load (path, &err) : ami_cert_load_public (path, &err);
    if (!cert)
        return err;
    int rc = AMI_OK;
    if (strcmp (ami_cert_key_type (cert), type) != 0) {
        ami_log_error ("%s: key-type is '%s', expected '%s'", path, ami_cert_key_type (cert), type);
        rc = AMI_E_KEY;
    }
    else {
        memcpy (pk, ami_cert_public_key (cert), 32);
        if (secret)
            memcpy (sk32, ami_cert_secret_key (cert), 32);
    }
    ami_cert_destroy (&cert);
    return rc;
}

int
ami_e2e_mdms_load (ami_e2e_mdms_t *keys, const char *dir, bool secret)
{
    assert (keys && dir);
    if (sodium_init () < 0)
        return AMI_E_INTERNAL;
    memset (keys, 0, sizeof *keys);
    char path [4096];
    uint8_t seed [32];
    int rc = s_path (path, sizeof path, dir, "mdms-sign.cert");
    if (rc == AMI_OK)
        rc = s_load_key (path, AMI_CERT_KEY_ED25519, secret, keys->sign_pk, seed);
    if (rc == AMI_OK && secret) {
        uint8_t pk [32];
        crypto_sign_seed_keypair (pk, keys->sign_sk, seed);
    }
    sodium_memzero (seed, sizeof seed);
    if (rc == AMI_OK)
        rc = s_path (path, sizeof path, dir, "mdms-box.cert");
    if (rc == AMI_OK)
        rc = s_load_key (path, AMI_CERT_KEY_CURVE, secret, keys->box_pk, keys->box_sk);
    if (rc == AMI_OK)
        keys->has_secret = secret;
    else
        ami_e2e_mdms_wipe (keys);
    return rc;
}

void
ami_e2e_mdms_wipe (ami_e2e_mdms_t *keys)
{
    if (keys) {
        sodium_memzero (keys->sign_sk, sizeof keys->sign_sk);
        sodium_memzero (keys->box_sk, sizeof keys->box_sk);
        keys->has_secret = false;
    }
}

int
ami_e2e_kdf_generate (const char *path, const char *role, const char *node_id)
{
    if (sodium_init () < 0)
        return AMI_E_INTERNAL;
    uint8_t seed [AMI_E2E_SEED_SIZE], fingerprint [32];
    crypto_kdf_keygen (seed);
    crypto_generichash (fingerprint, sizeof fingerprint, seed, sizeof seed, NULL, 0);
    int rc = s_save_pair (path, role, node_id, AMI_CERT_KEY_KDF, fingerprint, seed);
    sodium_memzero (seed, sizeof seed);
    return rc;
}

int
ami_e2e_kdf_load (const char *path, uint8_t seed [AMI_E2E_SEED_SIZE])
{
    if (sodium_init () < 0)
        return AMI_E_INTERNAL;
    uint8_t fingerprint [32];
    return s_load_key (path, AMI_CERT_KEY_KDF, true, fingerprint, seed);
}

void
ami_e2e_meter_keypair (const uint8_t seed [AMI_E2E_SEED_SIZE], uint32_t index,
                       uint8_t pk [AMI_E2E_SIGN_PK_SIZE], uint8_t sk [AMI_E2E_SIGN_SK_SIZE])
{
    uint8_t meter_seed [crypto_sign_SEEDBYTES];
    uint8_t scratch [crypto_sign_SECRETKEYBYTES];
    crypto_kdf_derive_from_key (meter_seed, sizeof meter_seed, index, s_meter_kdf_ctx, seed);
    crypto_sign_seed_keypair (pk, sk ? sk : scratch, meter_seed);
    sodium_memzero (meter_seed, sizeof meter_seed);
    sodium_memzero (scratch, sizeof scratch);
}

int
ami_e2e_sign (uint8_t *frame, size_t size, const uint8_t sk [AMI_E2E_SIGN_SK_SIZE])
{
    size_t signed_len = 0;
    const uint8_t *slot = ami_msg_signature_slot (frame, size, &signed_len);
    if (!slot)
        return AMI_E_RANGE;
    /* the slot points into frame, which we own and may write */
    crypto_sign_detached ((uint8_t *) slot, NULL, frame, signed_len, sk);
    return AMI_OK;
}

int
ami_e2e_verify (const uint8_t *frame, size_t size, const uint8_t pk [AMI_E2E_SIGN_PK_SIZE])
{
    size_t signed_len = 0;
    const uint8_t *slot = ami_msg_signature_slot (frame, size, &signed_len);
    if (!slot || crypto_sign_verify_detached (slot, frame, signed_len, pk) != 0)
        return AMI_E_BAD_SIGNATURE;
    return AMI_OK;
}

int
ami_e2e_seal (const uint8_t *plain, size_t len, const uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE],
              uint8_t *out, size_t cap, size_t *out_len)
{
    if (cap < AMI_E2E_SEAL_OVERHEAD || len > cap - AMI_E2E_SEAL_OVERHEAD)
        return AMI_E_BUFSIZE;
    if (crypto_box_seal (out, plain, len, box_pk) != 0)
        return AMI_E_INTERNAL;
    *out_len = len + AMI_E2E_SEAL_OVERHEAD;
    return AMI_OK;
}

int
ami_e2e_open (const uint8_t *sealed, size_t len, const ami_e2e_mdms_t *keys,
              uint8_t *out, size_t cap, size_t *out_len)
{
    assert (keys);
    if (!keys->has_secret || len < AMI_E2E_SEAL_OVERHEAD)
        return AMI_E_DECRYPT;
    if (len - AMI_E2E_SEAL_OVERHEAD > cap)
        return AMI_E_BUFSIZE;
    if (crypto_box_seal_open (out, sealed, len, keys->box_pk, keys->box_sk) != 0)
        return AMI_E_DECRYPT;
    *out_len = len - AMI_E2E_SEAL_OVERHEAD;
    return AMI_OK;
}

int
ami_e2e_check_command (const ami_read_req_t *req, const char *meter_id,
                       uint64_t last_counter, uint64_t now_ms)
{
    assert (req && meter_id);
    if (strcmp (req->meter_id, meter_id) != 0)
        return AMI_E_WRONG_TARGET;
    if (req->counter <= last_counter)
        return AMI_E_REPLAY;
    if (now_ms > req->expires_ms || now_ms + AMI_E2E_SKEW_MS < req->issued_ms)
        return AMI_E_EXPIRED;
    return AMI_OK;
}

/* ---------------------------------------------------------------------- */
/*  Interval data boxes (see ami_e2e.h for the construction and its why)   */

#define S_PROFILE_NONCE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

/*  Additional data: the block header as the BATCH carries it, meter id
    bytes, a NUL (ids never contain one), seq as 8 bytes big-endian. */
static size_t
s_profile_ad (uint8_t ad [AMI_MAX_ID + 9], const char *meter_id, uint64_t seq)
{
    size_t n = strnlen (meter_id, AMI_MAX_ID);
    memcpy (ad, meter_id, n);
    ad [n++] = 0;
    for (int i = 7; i >= 0; i--)
        ad [n++] = (uint8_t) (seq >> (8 * i));
    return n;
}

int
ami_e2e_profile_key_meter (const uint8_t meter_sk [AMI_E2E_SIGN_SK_SIZE],
                           const uint8_t mdms_box_pk [AMI_E2E_BOX_KEY_SIZE],
                           uint8_t key [AMI_E2E_PROFILE_KEY_SIZE])
{
    uint8_t x_sk [crypto_scalarmult_curve25519_BYTES], x_pk [crypto_scalarmult_curve25519_BYTES];
    uint8_t rx [crypto_kx_SESSIONKEYBYTES];
    int rc = AMI_OK;
    if (crypto_sign_ed25519_sk_to_curve25519 (x_sk, meter_sk) != 0
    ||  crypto_scalarmult_curve25519_base (x_pk, x_sk) != 0
    ||  crypto_kx_client_session_keys (rx, key, x_pk, x_sk, mdms_box_pk) != 0)
        rc = AMI_E_KEY;
    sodium_memzero (x_sk, sizeof x_sk);
    sodium_memzero (rx, sizeof rx);
    if (rc)
        sodium_memzero (key, AMI_E2E_PROFILE_KEY_SIZE);
    return rc;
}

int
ami_e2e_profile_key_mdms (const ami_e2e_mdms_t *keys,
                          const uint8_t meter_pk [AMI_E2E_SIGN_PK_SIZE],
                          uint8_t key [AMI_E2E_PROFILE_KEY_SIZE])
{
    uint8_t x_pk [crypto_scalarmult_curve25519_BYTES], tx [crypto_kx_SESSIONKEYBYTES];
    int rc = AMI_OK;
    if (!keys->has_secret
    ||  crypto_sign_ed25519_pk_to_curve25519 (x_pk, meter_pk) != 0
    ||  crypto_kx_server_session_keys (key, tx, keys->box_pk, keys->box_sk, x_pk) != 0)
        rc = AMI_E_KEY;
    sodium_memzero (tx, sizeof tx);
    if (rc)
        sodium_memzero (key, AMI_E2E_PROFILE_KEY_SIZE);
    return rc;
}

/*  Pad plain[0..len) into padded (cap bytes) in the ami_e2e_seal_padded
    format; the padded length, or 0 if it does not fit (or block is bad). */
static size_t
s_pad (const uint8_t *plain, size_t len, size_t block, uint8_t *padded, size_t cap)
{
    size_t padded_len = ami_e2e_padded_size (len, block);
    if (padded_len == 0 || padded_len > cap)
        return 0;
    padded [0] = AMI_E2E_PAD_MARK;
    padded [1] = (uint8_t) (block >> 8);
    padded [2] = (uint8_t) block;
    if (len)
        memmove (padded + AMI_E2E_PAD_HEADER, plain, len);
    size_t sodium_len = 0;
    if (sodium_pad (&sodium_len, padded, AMI_E2E_PAD_HEADER + len, block, cap) != 0
    ||  sodium_len != padded_len)
        return 0;                   /* ami_e2e_padded_size disagrees: a bug */
    return padded_len;
}

/*  Unpad buf[0..n) in place; the message length, or -1 (buf wiped) if the
    header or padding is malformed. */
static long
s_unpad (uint8_t *buf, size_t n)
{
    size_t block = n >= AMI_E2E_PAD_HEADER && buf [0] == AMI_E2E_PAD_MARK
                 ? (size_t) buf [1] << 8 | buf [2] : 0;
    size_t unpadded = 0;
    if (block == 0 || n % block != 0
    ||  sodium_unpad (&unpadded, buf, n, block) != 0
    ||  unpadded < AMI_E2E_PAD_HEADER) {
        sodium_memzero (buf, n);
        return -1;
    }
    size_t message = unpadded - AMI_E2E_PAD_HEADER;
    memmove (buf, buf + AMI_E2E_PAD_HEADER, message);
    sodium_memzero (buf + message, n - message);
    return (long) message;
}

size_t
ami_e2e_profile_pad_block (uint32_t record_count)
{
    return AMI_PROFILE_MAX_ENCODED (record_count) + AMI_E2E_PAD_OVERHEAD;
}

size_t
ami_e2e_profile_box_size (size_t pad_block)
{
    return pad_block + AMI_E2E_PROFILE_OVERHEAD;
}

int
ami_e2e_profile_seal (const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE], const char *meter_id,
                      uint64_t seq, const uint8_t *plain, size_t len, size_t pad_block,
                      uint8_t *out, size_t cap, size_t *out_len)
{
    if (pad_block == 0 || pad_block > AMI_E2E_PAD_BLOCK_MAX)
        return AMI_E_RANGE;
    /* the padded plaintext lives on the stack: never larger than a box
       may be on the wire */
    uint8_t padded [AMI_MAX_SEALED - AMI_E2E_PROFILE_OVERHEAD];
    size_t padded_len = ami_e2e_padded_size (len, pad_block);
    if (padded_len == 0 || padded_len > sizeof padded
    ||  cap < AMI_E2E_PROFILE_OVERHEAD || padded_len > cap - AMI_E2E_PROFILE_OVERHEAD)
        return AMI_E_BUFSIZE;
    if (s_pad (plain, len, pad_block, padded, sizeof padded) != padded_len) {
        sodium_memzero (padded, sizeof padded);
        return AMI_E_INTERNAL;      /* ami_e2e_padded_size disagrees: a bug */
    }
    uint8_t ad [AMI_MAX_ID + 9];
    size_t ad_len = s_profile_ad (ad, meter_id, seq);
    ami_e2e_nonce (out);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt (out + S_PROFILE_NONCE, &clen, padded, padded_len,
                                                ad, ad_len, NULL, out, key);
    sodium_memzero (padded, padded_len);
    *out_len = S_PROFILE_NONCE + (size_t) clen;
    return AMI_OK;
}

int
ami_e2e_profile_open (const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE], const char *meter_id,
                      uint64_t seq, const uint8_t *box, size_t len,
                      uint8_t *out, size_t cap, size_t *out_len)
{
    if (len < AMI_E2E_PROFILE_OVERHEAD)
        return AMI_E_DECRYPT;
    if (cap < len - AMI_E2E_PROFILE_OVERHEAD)
        return AMI_E_BUFSIZE;
    uint8_t ad [AMI_MAX_ID + 9];
    size_t ad_len = s_profile_ad (ad, meter_id, seq);
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt (out, &mlen, NULL, box + S_PROFILE_NONCE,
                                                    len - S_PROFILE_NONCE, ad, ad_len, box, key) != 0)
        return AMI_E_DECRYPT;
    long message = s_unpad (out, (size_t) mlen);
    if (message < 0)
        return AMI_E_DECRYPT;
    *out_len = (size_t) message;
    return AMI_OK;
}

/* ---------------------------------------------------------------------- */
/*  Nonces (why a pool: ami_e2e.h)                                         */

static __thread struct {
    uint8_t nonces [AMI_E2E_NONCE_POOL * AMI_E2E_NONCE_SIZE];   /* unused ones first */
    size_t left;
    pid_t pid;                      /* the process that filled the pool */
} s_pool;

void
ami_e2e_nonce (uint8_t nonce [AMI_E2E_NONCE_SIZE])
{
    pid_t pid = getpid ();
    if (s_pool.left == 0 || s_pool.pid != pid) {
        uint8_t seed [randombytes_SEEDBYTES];
        randombytes_buf (seed, sizeof seed);
        randombytes_buf_deterministic (s_pool.nonces, sizeof s_pool.nonces, seed);
        sodium_memzero (seed, sizeof seed);
        s_pool.left = AMI_E2E_NONCE_POOL;
        s_pool.pid = pid;
    }
    uint8_t *p = s_pool.nonces + --s_pool.left * AMI_E2E_NONCE_SIZE;
    memcpy (nonce, p, AMI_E2E_NONCE_SIZE);
    sodium_memzero (p, AMI_E2E_NONCE_SIZE);
}

/* ---------------------------------------------------------------------- */
/*  Padded sealing (SEC-CONF-3; format and why in ami_e2e.h)               */

size_t
ami_e2e_padded_size (size_t len, size_t block)
{
    if (block == 0 || block > AMI_E2E_PAD_BLOCK_MAX
    ||  len > SIZE_MAX - AMI_E2E_PAD_HEADER - 2 * block)
        return 0;
    size_t n = AMI_E2E_PAD_HEADER + len;
    /* what sodium_pad makes of n bytes: at least one byte more, up to the
       next multiple of block */
    return (n / block + 1) * block;
}

int
ami_e2e_seal_padded (const uint8_t *plain, size_t len, size_t block,
                     const uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE],
                     uint8_t *out, size_t cap, size_t *out_len)
{
    if (block == 0 || block > AMI_E2E_PAD_BLOCK_MAX)
        return AMI_E_RANGE;
    /* the padded copy lives on the stack: it is never larger than what a
       sealed field may carry on the wire */
    uint8_t padded [AMI_MAX_SEALED - AMI_E2E_SEAL_OVERHEAD];
    size_t padded_len = ami_e2e_padded_size (len, block);
    if (padded_len == 0 || padded_len > sizeof padded
    ||  cap < AMI_E2E_SEAL_OVERHEAD || padded_len > cap - AMI_E2E_SEAL_OVERHEAD)
        return AMI_E_BUFSIZE;
    int rc = s_pad (plain, len, block, padded, sizeof padded) == padded_len
           ? ami_e2e_seal (padded, padded_len, box_pk, out, cap, out_len)
           : AMI_E_INTERNAL;
    sodium_memzero (padded, padded_len);
    return rc;
}

int
ami_e2e_open_padded (const uint8_t *sealed, size_t len, const ami_e2e_mdms_t *keys,
                     uint8_t *out, size_t cap, size_t *out_len)
{
    size_t n = 0;
    int rc = ami_e2e_open (sealed, len, keys, out, cap, &n);
    if (rc != AMI_OK)
        return rc;
    if (n == 0 || out [0] != AMI_E2E_PAD_MARK) {
        *out_len = n;               /* unpadded (ami_e2e_seal): as it is */
        return AMI_OK;
    }
    long message = s_unpad (out, n);
    if (message < 0)
        return AMI_E_DECRYPT;
    *out_len = (size_t) message;
    return AMI_OK;
}
