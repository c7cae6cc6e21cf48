/*  test_meter_model.c - the simulated meter physics: determinism, monotonic
    energy, plausible values, daily shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ami_meter_model.h"

/* 2026-06-01T00:00:00Z: a fixed start so results do not depend on today */
#define T0_S 1780272000LL

static const ami_register_t *
s_find (const ami_reading_t *r, uint8_t c, uint8_t d, uint8_t e)
{
    for (uint32_t i = 0; i < r->register_count; i++)
        if (r->registers [i].obis [2] == c && r->registers [i].obis [3] == d
        &&  r->registers [i].obis [4] == e)
            return &r->registers [i];
    return NULL;
}

static void
test_deterministic (void **state)
{
    (void) state;
    ami_meter_model_t a, b, c;
    ami_reading_t ra, rb, rc;
    ami_meter_model_init (&a, 42, 7, T0_S);
    ami_meter_model_init (&b, 42, 7, T0_S);
    ami_meter_model_init (&c, 43, 7, T0_S);
    uint64_t t = (uint64_t) (T0_S + 5 * 3600) * 1000;
    ami_meter_model_sample (&a, "MTR-000042", t, &ra);
    ami_meter_model_sample (&b, "MTR-000042", t, &rb);
    ami_meter_model_sample (&c, "MTR-000043", t, &rc);
    assert_int_equal (ra.register_count, AMI_METER_REGISTERS);
    for (uint32_t i = 0; i < ra.register_count; i++) {
        assert_memory_equal (ra.registers [i].obis, rb.registers [i].obis, AMI_OBIS_SIZE);
        assert_int_equal (ra.registers [i].value, rb.registers [i].value);
        assert_int_equal (ra.registers [i].scaler, rb.registers [i].scaler);
        assert_int_equal (ra.registers [i].unit, rb.registers [i].unit);
    }
    /* a different meter is a different household */
    assert_true (s_find (&ra, 1, 8, 0)->value != s_find (&rc, 1, 8, 0)->value);
}

static void
test_energy_never_decreases (void **state)
{
    (void) state;
    for (uint32_t m = 1; m <= 50; m++) {
        ami_meter_model_t model;
        ami_meter_model_init (&model, m, 99, T0_S);
        ami_reading_t r;
        int64_t prev_imp = -1, prev_exp = -1;
        /* two days, sampled every 7 minutes (not a multiple of the step) */
        for (int64_t t = T0_S; t < T0_S + 2 * 86400; t += 7 * 60) {
            ami_meter_model_sample (&model, "MTR-000001", (uint64_t) t * 1000, &r);
            int64_t imp = s_find (&r, 1, 8, 0)->value;
            int64_t exp_ = s_find (&r, 2, 8, 0)->value;
            assert_true (imp >= prev_imp);
            assert_true (exp_ >= prev_exp);
            assert_int_equal (imp, s_find (&r, 1, 8, 1)->value + s_find (&r, 1, 8, 2)->value);
            assert_int_equal (exp_, s_find (&r, 2, 8, 1)->value + s_find (&r, 2, 8, 2)->value);
            prev_imp = imp;
            prev_exp = exp_;
        }
        /* time going backwards leaves the registers alone */
        uint64_t imp_before = ami_meter_model_import_wh (&model);
        ami_meter_model_advance (&model, T0_S);
        assert_int_equal (ami_meter_model_import_wh (&model), imp_before);
    }
}

static void
test_values_plausible (void **state)
{
    (void) state;
    for (uint32_t m = 1; m <= 200; m++) {
        ami_meter_model_t model;
        ami_meter_model_init (&model, m, 1, T0_S);
        ami_reading_t r;
        ami_meter_model_sample (&model, "MTR-000001", (uint64_t) (T0_S + 19 * 3600) * 1000, &r);
        for (uint8_t c = 32; c <= 72; c += 20) {
            const ami_register_t *v = s_find (&r, c, 7, 0);
            assert_non_null (v);
            assert_int_equal (v->scaler, -1);
            assert_in_range (v->value, 2200, 2400);   /* 220.0 - 240.0 V */
        }
        const ami_register_t *f = s_find (&r, 14, 7, 0);
        assert_in_range (f->value, 4990, 5010);       /* 49.90 - 50.10 Hz */
        const ami_register_t *pf = s_find (&r, 13, 7, 0);
        assert_in_range (pf->value, 900, 1000);
        /* evening: no solar, so import power is positive and < 20 kW */
        const ami_register_t *p = s_find (&r, 1, 7, 0);
        assert_in_range (p->value, 1, 20000);
        /* current consistent with power: P ~ sum(V*I)*pf within 5 % */
        double sum = 0;
        for (int i = 0; i < 3; i++)
            sum += s_find (&r, (uint8_t) (32 + 20 * i), 7, 0)->value / 10.0
                 * s_find (&r, (uint8_t) (31 + 20 * i), 7, 0)->value / 1000.0;
        double est = sum * pf->value / 1000.0;
        assert_true (est > p->value * 0.95 && est < p->value * 1.05 + 1);
        assert_int_equal (s_find (&r, 96, 1, 0)->value, 40000000 + m);
    }
}

static void
test_daily_shape (void **state)
{
    (void) state;
    /* Over a fleet, evening (19:00) demand must clearly exceed night (03:00). */
    double night = 0, evening = 0;
    for (uint32_t m = 1; m <= 500; m++) {
        ami_meter_model_t model;
        ami_meter_model_init (&model, m, 3, T0_S);
        night += ami_meter_model_power_w (&model, T0_S + 3 * 3600);
        evening += ami_meter_model_power_w (&model, T0_S + 19 * 3600);
    }
    assert_true (evening > 1.8 * night);
    assert_true (night > 0);
}

static void
test_solar_exports (void **state)
{
    (void) state;
    /* Some meters export at noon and their -A register rises over a day. */
    int exporters = 0;
    for (uint32_t m = 1; m <= 100; m++) {
        ami_meter_model_t model;
        ami_meter_model_init (&model, m, 5, T0_S);
        uint64_t e0 = ami_meter_model_export_wh (&model);
        ami_meter_model_advance (&model, T0_S + 86400);
        if (ami_meter_model_export_wh (&model) > e0)
            exporters++;
    }
    assert_in_range (exporters, 5, 50);
}

static void
test_meter_ids (void **state)
{
    (void) state;
    char id [AMI_MAX_ID + 1];
    assert_string_equal (ami_meter_id_format (1, id), "MTR-000001");
    assert_string_equal (ami_meter_id_format (150, id), "MTR-000150");
    assert_string_equal (ami_meter_id_format (1234567, id), "MTR-1234567");
    assert_int_equal (ami_meter_id_parse ("MTR-000150"), 150);
    assert_int_equal (ami_meter_id_parse ("MTR-"), 0);
    assert_int_equal (ami_meter_id_parse ("MTR-12x"), 0);
    assert_int_equal (ami_meter_id_parse ("XYZ-000001"), 0);
    assert_int_equal (ami_meter_id_parse ("MTR-99999999999"), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_deterministic),
        cmocka_unit_test (test_energy_never_decreases),
        cmocka_unit_test (test_values_plausible),
        cmocka_unit_test (test_daily_shape),
        cmocka_unit_test (test_solar_exports),
        cmocka_unit_test (test_meter_ids),
    };
    return cmocka_run_group_tests_name ("meter_model", tests, NULL, NULL);
}
