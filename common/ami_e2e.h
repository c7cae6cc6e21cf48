/*  ami_e2e.h - end-to-end application security between the MDMS and meters.

    The transport (CurveZMQ, every hop) authenticates neighbours; this layer
    authenticates the two ends across relays that are not trusted with
    application data (the pole-top aggregator, the head ends). DESIGN.md §5,
    requirements SEC-AUTHZ-2, SEC-INT-1..3, SEC-CONF-1, SEC-NR-1.

    Primitives (libsodium only, nothing home-made):
      - commands (READ_REQ) are signed by the MDMS with Ed25519
        (crypto_sign_detached) over the frame's signed part;
      - readings travel as crypto_box_seal(READING, MDMS X25519 key): the
        relays see ciphertext only; the READ_RESP frame (meter id, request
        id, status, ciphertext) is signed by the meter's own Ed25519 key,
        which is the proof of origin the MDMS stores with the reading;
      - each meter's signing key derives from its fleet secret with
        crypto_kdf (BLAKE2b) and its meter number, so every meter has its
        own key and one captured meter reveals no other.
    Cost (DESIGN.md §8): one signature and one verification per command,
    one seal/open and one signature/verification per reading: tens of
    microseconds, small against a loopback round trip.

    Key files are ordinary ami_cert files whose metadata "key-type" says
    what the 32-byte keys are: "curve" (X25519, default), "ed25519" (public
    key + 32-byte seed as the secret), "kdf" (a fleet secret; the public key
    field is a BLAKE2b fingerprint of it). So every secret is loaded by
    ami_cert_load, with its file-permission check (SEC-KEY-1).
*/
#ifndef AMI_E2E_H_INCLUDED
#define AMI_E2E_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AMI_E2E_SIGN_PK_SIZE   32
#define AMI_E2E_SIGN_SK_SIZE   64
#define AMI_E2E_BOX_KEY_SIZE   32
#define AMI_E2E_SEED_SIZE      32
/* crypto_box_seal adds an ephemeral public key and a MAC: 32 + 16 bytes. */
#define AMI_E2E_SEAL_OVERHEAD  48
/* Clock skew a meter tolerates on a command's issue time: meters' clocks
   drift, and a command issued "in the future" by less than this is fine. */
#define AMI_E2E_SKEW_MS        30000

#define AMI_E2E_KEY_TYPE       "key-type"

/*  The MDMS's application keys. A meter fleet holds only the public half
    (has_secret false). */
typedef struct {
    uint8_t sign_pk [AMI_E2E_SIGN_PK_SIZE];
    uint8_t sign_sk [AMI_E2E_SIGN_SK_SIZE];
    uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE];
    uint8_t box_sk [AMI_E2E_BOX_KEY_SIZE];
    bool    has_secret;
} ami_e2e_mdms_t;

/*  Generate fresh MDMS application keys and write them as two certificates
    (ami_cert format): DIR/mdms-sign.cert (+_secret, key-type ed25519) and
    DIR/mdms-box.cert (+_secret, key-type curve). Returns AMI_OK, AMI_E_IO,
    AMI_E_KEY or AMI_E_NOMEM (logged). */
int
    ami_e2e_mdms_generate (const char *dir, const char *node_id);

/*  Load the MDMS keys from DIR (see above). With secret true the secret
    files are read (permission-checked); otherwise only the public ones.
    Returns AMI_OK, AMI_E_KEY or AMI_E_KEY_PERMS (logged, naming the file).
    Wipes keys->sign_sk/box_sk on failure. */
int
    ami_e2e_mdms_load (ami_e2e_mdms_t *keys, const char *dir, bool secret);

/*  Wipe secret keys from memory (sodium_memzero). */
void
    ami_e2e_mdms_wipe (ami_e2e_mdms_t *keys);

/*  Generate a 32-byte secret for crypto_kdf and write it at PATH
    (+_secret, key-type kdf) with the given role and node-id: a meter
    fleet's secret (role "meter", node-id the fleet id), from which every
    meter's signing key derives, or the MDMS data key (role "mdms"), from
    which the audit and customer-data keys derive. Returns as
    ami_e2e_mdms_generate. */
int
    ami_e2e_kdf_generate (const char *path, const char *role, const char *node_id);

/*  Load a kdf secret from PATH (+_secret): permission-checked, key type
    checked. Returns AMI_OK, AMI_E_KEY, AMI_E_KEY_PERMS (logged). */
int
    ami_e2e_kdf_load (const char *path, uint8_t seed [AMI_E2E_SEED_SIZE]);

/*  Derive meter number `index`'s Ed25519 keypair from its fleet secret.
    Deterministic; distinct for every index. sk may be NULL when only the
    public key is wanted (ami-keygen writing the MDMS registry). */
void
    ami_e2e_meter_keypair (const uint8_t seed [AMI_E2E_SEED_SIZE], uint32_t index,
                           uint8_t pk [AMI_E2E_SIGN_PK_SIZE],
                           uint8_t sk [AMI_E2E_SIGN_SK_SIZE]);

/*  Sign an encoded READ_REQ or READ_RESP in place: frame was encoded with
    any signature bytes; they are replaced by the Ed25519 signature of the
    signed part (ami_msg_signature_slot). Returns AMI_OK or AMI_E_RANGE if
    the frame has no signature slot. */
int
    ami_e2e_sign (uint8_t *frame, size_t size, const uint8_t sk [AMI_E2E_SIGN_SK_SIZE]);

/*  Verify the signature of a signed frame with public key pk. Returns
    AMI_OK or AMI_E_BAD_SIGNATURE (also for a frame with no slot). */
int
    ami_e2e_verify (const uint8_t *frame, size_t size, const uint8_t pk [AMI_E2E_SIGN_PK_SIZE]);

/*  Seal plain[0..len) to the MDMS box key. out must hold len +
    AMI_E2E_SEAL_OVERHEAD bytes (cap). Returns AMI_OK or AMI_E_BUFSIZE. */
int
    ami_e2e_seal (const uint8_t *plain, size_t len, const uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE],
                  uint8_t *out, size_t cap, size_t *out_len);

/*  Open a sealed box with the MDMS keys (must have the secret). Returns
    AMI_OK with *out_len set, AMI_E_DECRYPT if it does not open (altered,
    truncated, or sealed to another key), AMI_E_BUFSIZE if cap is short. */
int
    ami_e2e_open (const uint8_t *sealed, size_t len, const ami_e2e_mdms_t *keys,
                  uint8_t *out, size_t cap, size_t *out_len);

/* ---------------------------------------------------------------------- */
/*  Interval data: BATCH block boxes (PROTOCOL.md 4.8, 4.9, 9)             */
/*
    Bulk interval data is encrypted, not signed: one signature per block
    would cost the MDMS an Ed25519 verification (~50 us) per block, while
    an AEAD open costs ~1 us. Each (meter, MDMS) pair shares a symmetric
    key derived with crypto_kx from the meter's X25519 key and the MDMS box
    key; the meter's X25519 key is its Ed25519 signing key converted by
    libsodium (crypto_sign_ed25519_*_to_curve25519, the documented way to
    use one identity key for both), so the MDMS registry needs no second
    key per meter and no secret key ever leaves a meter. The box is
    XChaCha20-Poly1305-IETF with a random 24-byte nonce (random nonces are
    safe at this nonce size, so a meter that restarts and reuses a seq can
    never reuse a nonce), and the additional data binds the block header
    (meter id, seq) so a box cannot be moved to another meter or block.
    What it gives: confidentiality past the field (SEC-CONF-1) and
    integrity and origin to the MDMS (SEC-INT-1) for every block; not
    third-party non-repudiation (the MDMS holds the same key), which
    on-demand reads provide with the meter's signature (SEC-NR-1).

    box = nonce (24) || ciphertext || tag (16).

    Length (SEC-CONF-3). The plaintext is padded before sealing, in the
    self-describing format of ami_e2e_seal_padded (below), to a block the
    sender chooses; the meter chooses ami_e2e_profile_pad_block (its
    record count), the largest encoding a PROFILE of that many records can
    have, so every block of one record count seals to one length whatever
    the register values (msgpack widths vary with them). The record count
    stays visible: it is the meter's configured cadence (`block`), except
    for a shorter block at the end of a `limit`. ami_e2e_profile_open
    refuses an unpadded box.
*/
#define AMI_E2E_PROFILE_KEY_SIZE  32
#define AMI_E2E_PROFILE_OVERHEAD  (24 + 16)

/*  The meter's side of the profile key, from its Ed25519 secret key and
    the MDMS box public key. Cost: one X25519 scalar multiplication
    (~60 us): derive once per meter and cache. Returns AMI_OK or AMI_E_KEY
    (a key libsodium refuses to convert or a weak shared point). */
int
    ami_e2e_profile_key_meter (const uint8_t meter_sk [AMI_E2E_SIGN_SK_SIZE],
                               const uint8_t mdms_box_pk [AMI_E2E_BOX_KEY_SIZE],
                               uint8_t key [AMI_E2E_PROFILE_KEY_SIZE]);

/*  The MDMS's side of the same key, from the meter's registered Ed25519
    public key and the MDMS box keys (must have the secret). Returns AMI_OK
    or AMI_E_KEY. */
int
    ami_e2e_profile_key_mdms (const ami_e2e_mdms_t *keys,
                              const uint8_t meter_pk [AMI_E2E_SIGN_PK_SIZE],
                              uint8_t key [AMI_E2E_PROFILE_KEY_SIZE]);

/*  The pad block for a PROFILE of record_count records: its largest
    encoding (AMI_PROFILE_MAX_ENCODED) plus the padding header and byte,
    so every such PROFILE pads to exactly this many bytes (a default
    4-record block: 170, sealed 210). */
size_t
    ami_e2e_profile_pad_block (uint32_t record_count);

/*  Box length of a PROFILE padded to pad_block: pad_block +
    AMI_E2E_PROFILE_OVERHEAD (a plaintext of up to pad_block -
    AMI_E2E_PAD_OVERHEAD bytes). Size box buffers with it. */
size_t
    ami_e2e_profile_box_size (size_t pad_block);

/*  Pad an encoded PROFILE to pad_block (a multiple of it, see
    ami_e2e_padded_size) and encrypt it for block (meter_id, seq). out must
    hold ami_e2e_padded_size (len, pad_block) + AMI_E2E_PROFILE_OVERHEAD
    bytes (cap); ami_e2e_profile_box_size (pad_block) when len fits one
    block. Returns AMI_OK, AMI_E_RANGE (pad_block 0 or above
    AMI_E2E_PAD_BLOCK_MAX) or AMI_E_BUFSIZE (cap short, or the box would
    exceed AMI_MAX_SEALED). */
int
    ami_e2e_profile_seal (const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE], const char *meter_id,
                          uint64_t seq, const uint8_t *plain, size_t len, size_t pad_block,
                          uint8_t *out, size_t cap, size_t *out_len);

/*  Decrypt, authenticate and unpad block (meter_id, seq)'s box: out
    [0..*out_len) is the PROFILE message. cap must hold the padded
    plaintext, len - AMI_E2E_PROFILE_OVERHEAD bytes. Returns AMI_OK,
    AMI_E_DECRYPT if the box does not authenticate (altered, truncated,
    another meter's or another block's header, another key) or its padding
    is missing or malformed (out is wiped then), AMI_E_BUFSIZE if cap is
    short. */
int
    ami_e2e_profile_open (const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE], const char *meter_id,
                          uint64_t seq, const uint8_t *box, size_t len,
                          uint8_t *out, size_t cap, size_t *out_len);

/*  A meter's checks on a command whose signature has verified: addressed
    to meter_id (AMI_E_WRONG_TARGET), counter above last_counter
    (AMI_E_REPLAY), now_ms within [issued_ms - AMI_E2E_SKEW_MS, expires_ms]
    (AMI_E_EXPIRED). Returns AMI_OK when the command may be acted on; the
    caller then persists req->counter as the new last counter BEFORE
    answering. */
int
    ami_e2e_check_command (const ami_read_req_t *req, const char *meter_id,
                           uint64_t last_counter, uint64_t now_ms);

/*  A fresh random 24-byte nonce (XChaCha20), cheaply: from a per-thread
    pool refilled with a ChaCha20 keystream under a 32-byte seed drawn
    from the system (randombytes_buf_deterministic) every
    AMI_E2E_NONCE_POOL nonces. As unpredictable as the system generator,
    and 192-bit random nonces do not repeat; a system call per nonce would
    cost ~0.5 us each, more than the AEAD of a small block. The pool is
    per thread (no lock) and refilled after a fork (the child never hands
    out the parent's nonces); a nonce handed out is wiped from the pool. */
#define AMI_E2E_NONCE_SIZE      24
/*  256 nonces = 6 KiB of keystream (~3 us) per system call. */
#define AMI_E2E_NONCE_POOL      256
void
    ami_e2e_nonce (uint8_t nonce [AMI_E2E_NONCE_SIZE]);

/* ---------------------------------------------------------------------- */
/*  Padded sealing: hiding a reading's length (SEC-CONF-3)                 */
/*
    crypto_box_seal hides the content, not the length: a sealed box is its
    plaintext plus AMI_E2E_SEAL_OVERHEAD bytes, and msgpack encodes small
    numbers in fewer bytes than large ones (0 in 1 byte, a large energy
    register in 9), so the length of READ_RESP.sealed would tell every
    relay something about the registers inside. ami_e2e_seal_padded pads
    the plaintext to a multiple of a block size first: with a block chosen
    above the largest encoding (the meter uses the largest READING its
    register count can encode to), every reading of one meter model seals
    to the same length.

    Padded plaintext (self-describing):

        0xC1 | block (be16) | message | 0x80 0x00 ... 0x00

    a 3-byte header, the message, then ISO/IEC 7816-4 padding (libsodium's
    sodium_pad: 0x80 then zeros, at least one byte) up to the next
    multiple of `block`, header included. 0xC1 is the one byte value the
    msgpack specification never uses, so no ami message (each one is a
    msgpack array) starts with it, and a padded plaintext is never taken
    for a message or the reverse. The block size travels in the header, so
    the receiver needs no configuration and sodium_unpad checks the
    padding in constant time over the last block.

    Compatibility. ami_e2e_open_padded returns a plaintext that does not
    start with 0xC1 unchanged: boxes sealed with ami_e2e_seal (an older
    meter, a stored proof from before padding) still open to their
    message. A receiver that still uses ami_e2e_open on a padded box gets
    the padded form, whose first byte ami_msg_decode refuses (AMI_E_TYPE):
    it fails closed, it never misreads.
*/
#define AMI_E2E_PAD_MARK        0xC1
#define AMI_E2E_PAD_HEADER      3
/* The header plus the one byte of padding that is always added: a
   message of up to block - AMI_E2E_PAD_OVERHEAD bytes pads to one block. */
#define AMI_E2E_PAD_OVERHEAD    (AMI_E2E_PAD_HEADER + 1)
/* The block size field is 16 bits. */
#define AMI_E2E_PAD_BLOCK_MAX   65535

/*  Length of the padded plaintext of a len-byte message with this block:
    the next multiple of block above len + AMI_E2E_PAD_HEADER. Every len up
    to block - AMI_E2E_PAD_OVERHEAD gives exactly block. Returns 0 if block
    is 0 or above AMI_E2E_PAD_BLOCK_MAX. The sealed length is this plus
    AMI_E2E_SEAL_OVERHEAD. */
size_t
    ami_e2e_padded_size (size_t len, size_t block);

/*  Pad plain[0..len) with the given block (see above), then seal it to the
    MDMS box key like ami_e2e_seal. out must hold ami_e2e_padded_size (len,
    block) + AMI_E2E_SEAL_OVERHEAD bytes (cap). Returns AMI_OK; AMI_E_RANGE
    (block 0 or above AMI_E2E_PAD_BLOCK_MAX); AMI_E_BUFSIZE (the sealed
    result would exceed cap, or AMI_MAX_SEALED, the wire limit of a sealed
    field). The padded copy of plain is wiped before returning. */
int
    ami_e2e_seal_padded (const uint8_t *plain, size_t len, size_t block,
                         const uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE],
                         uint8_t *out, size_t cap, size_t *out_len);

/*  Open a box sealed with ami_e2e_seal_padded (or, unpadded, with
    ami_e2e_seal) with the MDMS keys: out[0..*out_len) is the message
    without header and padding. cap must hold the whole opened plaintext,
    len - AMI_E2E_SEAL_OVERHEAD bytes, as for ami_e2e_open. Returns AMI_OK;
    AMI_E_DECRYPT if the box does not open, or opens to a padded plaintext
    whose header or padding is malformed (out is wiped then); AMI_E_BUFSIZE
    if cap is short. A plaintext not starting with AMI_E2E_PAD_MARK is
    returned as it is (see "Compatibility"). */
int
    ami_e2e_open_padded (const uint8_t *sealed, size_t len, const ami_e2e_mdms_t *keys,
                         uint8_t *out, size_t cap, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif
