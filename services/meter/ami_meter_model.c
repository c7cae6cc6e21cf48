/*  ami_meter_model.c - deterministic household load, solar and registers.

    Design: all randomness comes from splitmix64 over (meter seed, time
    bucket), never from a shared generator, so any meter can be sampled at
    any time in any order and gives the same answer. Energy is integrated
    with integer milliwatt-hours so the registers are exact and monotonic.

    Speed: the integration samples the power at the middle of each 60 s
    step, which falls on one of 1440 times of day. The parts of the power
    that depend only on the time of day (the load shape: three exp(); the
    solar arc: one sin(); the tariff) are computed once per process into a
    table by the very same expressions, so advancing gives bit-identical
    registers at about a third of the cost (the load-profile flood of the
    fleet spends most of its model time here).
*/
#include "ami_meter_model.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define SECONDS_PER_DAY 86400
#define STEPS_PER_DAY   (SECONDS_PER_DAY / AMI_METER_STEP_S)
/* Tariff T1 (day) runs 07:00-23:00 UTC, T2 (night) otherwise: a common
   two-rate domestic tariff. */
#define T1_START_H 7
#define T1_END_H   23

static uint64_t
s_mix (uint64_t x)
{
    /* splitmix64 finaliser: a cheap, well-distributed 64-bit hash */
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* uniform in [0, 1) from a hash */
static double
s_unit (uint64_t h)
{
    return (double) (h >> 11) * (1.0 / 9007199254740992.0);
}

static double
s_bump (double h, double centre, double width)
{
    /* circular distance on the 24 h clock, so the evening peak wraps */
    double d = fabs (h - centre);
    if (d > 12.0)
        d = 24.0 - d;
    return exp (-(d / width) * (d / width));
}

static double
s_hour_of_day (int64_t t_s)
{
    int64_t s = t_s % SECONDS_PER_DAY;
    if (s < 0)
        s += SECONDS_PER_DAY;
    return (double) s / 3600.0;
}

void
ami_meter_model_init (ami_meter_model_t *self, uint32_t index,
                      uint64_t fleet_seed, int64_t start_s)
{
    memset (self, 0, sizeof *self);
    self->index = index;
    self->seed = s_mix (fleet_seed ^ s_mix ((uint64_t) index));
    uint64_t h1 = s_mix (self->seed + 1);
    uint64_t h2 = s_mix (self->seed + 2);
    uint64_t h3 = s_mix (self->seed + 3);
    /* Mean household load 250-1250 W: small flat to large house. */
    self->base_w = (float) (250.0 + 1000.0 * s_unit (h1));
    /* About one meter in four has rooftop PV of 2-8 kW peak. */
    if ((h2 & 3) == 0)
        self->solar_w = (float) (2000.0 + 6000.0 * s_unit (h2 >> 2));
    /* Registers start where a meter a few years in service would be:
       1 000-50 000 kWh imported, up to 5 000 kWh exported with PV. */
    uint64_t import0 = 1000000 + (uint64_t) (49000000.0 * s_unit (h3));
    self->import_wh [0] = import0 * 2 / 3;
    self->import_wh [1] = import0 - self->import_wh [0];
    if (self->solar_w > 0) {
        uint64_t export0 = (uint64_t) (5000000.0 * s_unit (h3 >> 3));
        self->export_wh [0] = export0;
    }
    self->clock_s = start_s - (start_s % AMI_METER_STEP_S);
}

/* Daily shape: night base, breakfast peak, small midday, evening peak. */
static double
s_shape (double h)
{
    return 0.45 + 0.55 * s_bump (h, 7.5, 1.2) + 0.25 * s_bump (h, 13.0, 2.5)
         + 1.10 * s_bump (h, 19.0, 2.0);
}

/* PV panels produce between 06:00 and 18:00, along a half sine. */
static bool
s_daylight (double h)
{
    return h > 6.0 && h < 18.0;
}

static double
s_sun (double h)
{
    return sin (M_PI * (h - 6.0) / 12.0);
}

/* Net power at t_s given its time-of-day parts (shape, daylight, sun). */
static double
s_power (const ami_meter_model_t *self, int64_t t_s, double shape, bool daylight, double sun)
{
    /* +-10 % noise per simulation step */
    uint64_t bucket = (uint64_t) (t_s / AMI_METER_STEP_S);
    double noise = 0.9 + 0.2 * s_unit (s_mix (self->seed ^ (bucket * 0x100000001B3ULL)));
    double load = self->base_w * shape * noise;
    double solar = 0;
    if (self->solar_w > 0 && daylight) {
        /* clouds: 60-100 % of clear-sky output, changing hourly */
        uint64_t hour = (uint64_t) (t_s / 3600);
        double cloud = 0.6 + 0.4 * s_unit (s_mix (self->seed ^ ~hour));
        solar = self->solar_w * sun * cloud;
    }
    return load - solar;
}

double
ami_meter_model_power_w (const ami_meter_model_t *self, int64_t t_s)
{
    double h = s_hour_of_day (t_s);
    bool daylight = s_daylight (h);
    return s_power (self, t_s, s_shape (h), daylight,
                    daylight && self->solar_w > 0 ? s_sun (h) : 0.0);
}

static int
s_tariff (int64_t t_s)
{
    double h = s_hour_of_day (t_s);
    return (h >= T1_START_H && h < T1_END_H) ? 0 : 1;
}

/* The time-of-day parts at the middle of each step of the day: what
   ami_meter_model_power_w and s_tariff compute, computed once. */
typedef struct {
    double shape;
    double sun;
    bool daylight;
    int tariff;
} s_step_t;

static s_step_t s_day [STEPS_PER_DAY];
static pthread_once_t s_day_once = PTHREAD_ONCE_INIT;

static void
s_day_init (void)
{
    for (int i = 0; i < STEPS_PER_DAY; i++) {
        int64_t mid = (int64_t) i * AMI_METER_STEP_S + AMI_METER_STEP_S / 2;
        double h = s_hour_of_day (mid);
        s_day [i].shape = s_shape (h);
        s_day [i].daylight = s_daylight (h);
        s_day [i].sun = s_day [i].daylight ? s_sun (h) : 0.0;
        s_day [i].tariff = s_tariff (mid);
    }
}

void
ami_meter_model_advance (ami_meter_model_t *self, int64_t now_s)
{
    pthread_once (&s_day_once, s_day_init);
    while (self->clock_s + AMI_METER_STEP_S <= now_s) {
        int64_t mid = self->clock_s + AMI_METER_STEP_S / 2;
        int64_t of_day = mid % SECONDS_PER_DAY;
        if (of_day < 0)
            of_day += SECONDS_PER_DAY;
        double p;
        int tariff;
        if (of_day % AMI_METER_STEP_S == AMI_METER_STEP_S / 2) {
            /* the usual case: clocks start on a step boundary */
            const s_step_t *step = &s_day [of_day / AMI_METER_STEP_S];
            p = s_power (self, mid, step->shape, step->daylight, step->sun);
            tariff = step->tariff;
        }
        else {
            p = ami_meter_model_power_w (self, mid);
            tariff = s_tariff (mid);
        }
        /* W over one step in mWh: p * step_s / 3600 * 1000 */
        uint64_t mwh = (uint64_t) (fabs (p) * AMI_METER_STEP_S / 3.6 + 0.5);
        if (p >= 0) {
            uint64_t total = self->residue_mwh_i + mwh;
            self->import_wh [tariff] += total / 1000;
            self->residue_mwh_i = (uint32_t) (total % 1000);
        }
        else {
            uint64_t total = self->residue_mwh_e + mwh;
            self->export_wh [tariff] += total / 1000;
            self->residue_mwh_e = (uint32_t) (total % 1000);
        }
        self->clock_s += AMI_METER_STEP_S;
    }
}

uint64_t
ami_meter_model_import_wh (const ami_meter_model_t *self)
{
    return self->import_wh [0] + self->import_wh [1];
}

uint64_t
ami_meter_model_export_wh (const ami_meter_model_t *self)
{
    return self->export_wh [0] + self->export_wh [1];
}

static void
s_reg (ami_register_t *r, uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t e,
       int64_t value, int8_t scaler, uint8_t unit)
{
    r->obis [0] = a; r->obis [1] = b; r->obis [2] = c;
    r->obis [3] = d; r->obis [4] = e; r->obis [5] = 255;
    r->value = value;
    r->scaler = scaler;
    r->unit = unit;
    r->quality = AMI_Q_VALID;
}

/* DLMS/COSEM unit codes (IEC 62056-62): */
#define U_SECOND 7
#define U_W      27
#define U_WH     30
#define U_A      33
#define U_V      35
#define U_HZ     44
#define U_NONE   255

void
ami_meter_model_sample (ami_meter_model_t *self, const char *meter_id,
                        uint64_t now_ms, ami_reading_t *reading)
{
    int64_t now_s = (int64_t) (now_ms / 1000);
    ami_meter_model_advance (self, now_s);

    double p = ami_meter_model_power_w (self, now_s);
    uint64_t h = s_mix (self->seed ^ (uint64_t) now_s);
    /* 230 V nominal, +-2 %, sagging up to 1 % at high load */
    double sag = fmin (fabs (p) / 10000.0, 1.0) * 0.01;
    double v [3], amps [3];
    for (int i = 0; i < 3; i++) {
        double jitter = 0.98 + 0.04 * s_unit (s_mix (h + (uint64_t) i));
        v [i] = 230.0 * jitter * (1.0 - sag);
    }
    double pf = 0.92 + 0.07 * s_unit (s_mix (h + 7));
    /* Load spread over the phases 40/35/25 %: houses are rarely balanced. */
    static const double share [3] = { 0.40, 0.35, 0.25 };
    for (int i = 0; i < 3; i++)
        amps [i] = fabs (p) * share [i] / (v [i] * pf);
    double hz = 50.0 + 0.1 * (s_unit (s_mix (h + 11)) - 0.5);

    snprintf (reading->meter_id, sizeof reading->meter_id, "%s", meter_id);
    reading->read_ms = now_ms;
    reading->quality = AMI_Q_VALID;
    reading->register_count = AMI_METER_REGISTERS;
    ami_register_t *r = reading->registers;
    s_reg (r++, 0, 0, 1, 0, 0, now_s, 0, U_SECOND);
    s_reg (r++, 1, 0, 1, 8, 0, (int64_t) ami_meter_model_import_wh (self), 0, U_WH);
    s_reg (r++, 1, 0, 1, 8, 1, (int64_t) self->import_wh [0], 0, U_WH);
    s_reg (r++, 1, 0, 1, 8, 2, (int64_t) self->import_wh [1], 0, U_WH);
    s_reg (r++, 1, 0, 2, 8, 0, (int64_t) ami_meter_model_export_wh (self), 0, U_WH);
    s_reg (r++, 1, 0, 2, 8, 1, (int64_t) self->export_wh [0], 0, U_WH);
    s_reg (r++, 1, 0, 2, 8, 2, (int64_t) self->export_wh [1], 0, U_WH);
    s_reg (r++, 1, 0, 1, 7, 0, p > 0 ? llround (p) : 0, 0, U_W);
    s_reg (r++, 1, 0, 2, 7, 0, p < 0 ? llround (-p) : 0, 0, U_W);
    s_reg (r++, 1, 0, 32, 7, 0, llround (v [0] * 10), -1, U_V);
    s_reg (r++, 1, 0, 52, 7, 0, llround (v [1] * 10), -1, U_V);
    s_reg (r++, 1, 0, 72, 7, 0, llround (v [2] * 10), -1, U_V);
    s_reg (r++, 1, 0, 31, 7, 0, llround (amps [0] * 1000), -3, U_A);
    s_reg (r++, 1, 0, 51, 7, 0, llround (amps [1] * 1000), -3, U_A);
    s_reg (r++, 1, 0, 71, 7, 0, llround (amps [2] * 1000), -3, U_A);
    s_reg (r++, 1, 0, 13, 7, 0, llround (pf * 1000), -3, U_NONE);
    s_reg (r++, 1, 0, 14, 7, 0, llround (hz * 100), -2, U_HZ);
    /* serial numbers in a manufacturer-style 8-digit block */
    s_reg (r++, 0, 0, 96, 1, 0, 40000000 + (int64_t) self->index, 0, U_NONE);
    s_reg (r++, 0, 0, 97, 98, 0, 0, 0, U_NONE);
}

char *
ami_meter_id_format (uint32_t index, char *out)
{
    snprintf (out, AMI_MAX_ID + 1, "MTR-%06u", index);
    return out;
}

uint32_t
ami_meter_id_parse (const char *meter_id)
{
    if (!meter_id || strncmp (meter_id, "MTR-", 4) != 0)
        return 0;
    const char *p = meter_id + 4;
    if (*p == '\0')
        return 0;
    uint64_t n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        n = n * 10 + (uint64_t) (*p - '0');
        if (n > UINT32_MAX)
            return 0;
    }
    return (uint32_t) n;
}
