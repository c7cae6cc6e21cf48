/*  load_seccost.h - the CPU cost of the end-to-end application security
    layer per on-demand read and per interval block (ami-load
    security-cost). See load_seccost.c for what is timed and how.
*/
#ifndef LOAD_SECCOST_H_INCLUDED
#define LOAD_SECCOST_H_INCLUDED

#include <stdint.h>

/* Intervals per timed block: the fleets' default push (4 x 15 min). */
#define LOAD_SECCOST_BLOCK 4

typedef struct {
    /* microseconds per operation, median of 5 timed rounds */
    double mdms_sign_command_us;    /* encode + Ed25519-sign a READ_REQ */
    double meter_verify_command_us; /* Ed25519-verify it */
    double meter_answer_us;         /* encode READING, seal, encode + sign READ_RESP */
    double mdms_check_answer_us;    /* verify, decode, open, decode */
    double meter_seal_block_us;     /* encode PROFILE + AEAD seal (4 intervals) */
    double mdms_open_block_us;      /* AEAD open + decode */
    double meter_profile_key_us;    /* once per meter: the profile key (meter side) */
    double mdms_profile_key_us;     /* once per meter: the profile key (MDMS side) */
    /* sums */
    double read_path_us;            /* the four read steps: on the read's critical path */
    double block_path_us;           /* seal + open of one block */
    double per_reading_us;          /* block_path_us / LOAD_SECCOST_BLOCK */
} load_seccost_result_t;

/*  Time every operation for 5 rounds of round_ms each. Returns AMI_OK, or
    AMI_E_NOMEM / AMI_E_INTERNAL (an operation failed: a bug). */
int
    load_seccost_run (int64_t round_ms, load_seccost_result_t *result);

#endif
