/*  test_sort.c - ami_keys_sorted: every key of a hash, once, in byte order
    (the lists czmq 4.2.1's zlistx_sort leaves unsorted among them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ami_sort.h"
#include "ami_test.h"

/*  Random hashes of 0..300 keys: the list holds each key exactly once,
    in strcmp order, and owns its copies. */
static void
test_keys_sorted (void **state)
{
    (void) state;
    //  A fixed seed: the same lists on every run
    srandom (20261126);
    for (int run = 0; run < 200; run++) {
        zhashx_t *hash = zhashx_new ();
        assert_non_null (hash);
        int n = (int) (random () % 301);
        for (int i = 0; i < n; i++) {
            char key [32];
            snprintf (key, sizeof key, "%s/%ld", (random () & 1) ? "meter" : "aggregator",
                      random () % 100000);
            zhashx_update (hash, key, (void *) "x");
        }
        zlistx_t *list = ami_keys_sorted (hash);
        assert_non_null (list);
        assert_int_equal (zlistx_size (list), zhashx_size (hash));
        const char *prev = NULL;
        for (const char *key = (const char *) zlistx_first (list); key;
             key = (const char *) zlistx_next (list)) {
            if (prev)
                assert_true (strcmp (prev, key) < 0);   //  ordered, no repeat
            assert_non_null (zhashx_lookup (hash, key));
            prev = key;
        }
        zlistx_destroy (&list);
        zhashx_destroy (&hash);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_keys_sorted),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
