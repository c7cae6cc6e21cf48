/*  ami_meter_model.h - the simulated physics of one AMI meter.

    A meter model turns (meter index, fleet seed, time) into the register set
    of DESIGN.md section 7. It is deterministic: the same index, seed and
    sequence of sample times always give the same registers, so a test can
    predict a reading and a benchmark can be repeated.

    The household behind the meter has a daily load shape (night base,
    morning and evening peaks) scaled by a per-meter size, small per-step
    noise, and - for about one meter in four - rooftop solar that exports at
    midday. Energy registers integrate the NET power in fixed simulation
    steps, split by tariff (T1 day 07:00-23:00 UTC, T2 night), so they only
    ever rise; instantaneous power, voltage, current, power factor and
    frequency are computed at the sample time.

    Memory: one model is about 64 bytes, so a fleet of 100 000 meters costs
    about 6 MiB of state.

    Not thread-safe per model; models are independent, so a fleet may step
    different meters on different threads.
*/
#ifndef AMI_METER_MODEL_H_INCLUDED
#define AMI_METER_MODEL_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "ami_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Simulation step for the energy integration: 60 s keeps a 15-minute
   interval at 15 steps (cheap) while following the load shape closely. */
#define AMI_METER_STEP_S        60

/* Number of registers in a sampled reading (see ami_meter_model.c for the
   OBIS list; DESIGN.md section 7). */
#define AMI_METER_REGISTERS     19

typedef struct {
    uint32_t index;         /* meter number within the deployment, 1.. */
    uint64_t seed;          /* per-meter seed derived from (fleet seed, index) */
    float    base_w;        /* household size: mean load in W */
    float    solar_w;       /* peak PV output in W, 0 = no solar */
    int64_t  clock_s;       /* simulation time reached, Unix seconds */
    uint64_t import_wh [2]; /* +A by tariff T1, T2 (Wh) */
    uint64_t export_wh [2]; /* -A by tariff T1, T2 (Wh) */
    uint32_t residue_mwh_i; /* sub-Wh import carried between steps (mWh) */
    uint32_t residue_mwh_e; /* sub-Wh export carried between steps (mWh) */
} ami_meter_model_t;

/*  Initialise a model for meter `index` at time start_s (Unix seconds).
    fleet_seed selects the population; the meter's own seed, size, solar
    and initial register values derive from (fleet_seed, index). */
void
    ami_meter_model_init (ami_meter_model_t *self, uint32_t index,
                          uint64_t fleet_seed, int64_t start_s);

/*  Advance the energy registers to time now_s in AMI_METER_STEP_S steps.
    Time never goes back: a now_s earlier than the model's clock is ignored
    (the registers stay; energy cannot decrease). */
void
    ami_meter_model_advance (ami_meter_model_t *self, int64_t now_s);

/*  Advance to now_ms and fill `reading` (meter_id, read_ms, quality and the
    AMI_METER_REGISTERS registers; request_id is left untouched for the
    caller). meter_id must be a valid id (ami_id_valid). */
void
    ami_meter_model_sample (ami_meter_model_t *self, const char *meter_id,
                            uint64_t now_ms, ami_reading_t *reading);

/*  Instantaneous net power at time t_s, in W: positive = import, negative =
    export. Exposed for tests and for the interval-data profile. */
double
    ami_meter_model_power_w (const ami_meter_model_t *self, int64_t t_s);

/*  Total +A and -A energy (Wh) reached so far. */
uint64_t
    ami_meter_model_import_wh (const ami_meter_model_t *self);
uint64_t
    ami_meter_model_export_wh (const ami_meter_model_t *self);

/*  Format the conventional meter id for an index: "MTR-000001". out must
    hold AMI_MAX_ID + 1 bytes. Returns out. */
char *
    ami_meter_id_format (uint32_t index, char *out);

/*  Parse "MTR-000001" back to 1; returns 0 on anything else. */
uint32_t
    ami_meter_id_parse (const char *meter_id);

#ifdef __cplusplus
}
#endif

#endif
