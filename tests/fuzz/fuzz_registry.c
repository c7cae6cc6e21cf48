/*  fuzz_registry.c - libFuzzer target for the MDMS registry line parser.

    meters.tsv is written by operators (or generated from a utility's
    asset system) and imported at every MDMS start; the import hands every
    line to ami_mdms_registry_parse_line, which this target drives
    directly (no LMDB). The input is split at '\n' into lines as getline
    would (each line keeps its newline), so one input exercises many
    lines; the whole input is also given as one "line" (longer than
    AMI_MDMS_REGISTRY_LINE_MAX, or holding NUL bytes, it must be refused).
    Oracles, per line:
    - the result is AMI_OK, AMI_E_NOTFOUND or AMI_E_CONFIG; *why is set
      exactly on AMI_E_CONFIG;
    - on AMI_OK the row holds valid ids, a key that is a valid Ed25519
      point, and customer fields within their limits (all NUL-terminated);
      the meter id and the key are really in the line;
    - a line over the limit or with a NUL byte is refused.
    Any violation aborts, which libFuzzer reports as a crash.
*/
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_err.h"
#include "ami_log.h"
#include "ami_mdms_db.h"
#include "ami_msg.h"

static void
s_fail (const char *what, int a)
{
    fprintf (stderr, "fuzz_registry oracle: %s (%d)\n", what, a);
    abort ();
}

static bool
s_bounded (const char *s, size_t max)
{
    return memchr (s, 0, max + 1) != NULL;
}

static void
s_check_line (const char *line, size_t len)
{
    ami_mdms_registry_row_t row;
    const char *why = (const char *) 1;         //  must be overwritten
    //  Give the parser an exact-size heap copy, so ASan sees any read past
    //  the line (it is not NUL-terminated)
    char *copy = malloc (len ? len : 1);
    if (!copy)
        abort ();
    if (len)
        memcpy (copy, line, len);
    int rc = ami_mdms_registry_parse_line (copy, len, &row, &why);
    if (rc == AMI_E_CONFIG) {
        if (!why || why == (const char *) 1 || !*why)
            s_fail ("refusal without a complaint", rc);
    }
    else
    if (rc == AMI_OK || rc == AMI_E_NOTFOUND) {
        if (why != NULL)
            s_fail ("complaint on success", rc);
    }
    else
        s_fail ("unexpected return code", rc);

    if (len > AMI_MDMS_REGISTRY_LINE_MAX && rc != AMI_E_CONFIG)
        s_fail ("over-long line accepted", (int) len);
    if (len && memchr (line, 0, len) && rc != AMI_E_CONFIG)
        s_fail ("line with NUL accepted", (int) len);

    if (rc == AMI_OK) {
        if (!ami_id_valid (row.meter.meter_id) || !ami_id_valid (row.meter.fleet_id)
        ||  !ami_id_valid (row.meter.aggregator_id))
            s_fail ("invalid id accepted", 0);
        if (!crypto_core_ed25519_is_valid_point (row.meter.sign_pk))
            s_fail ("invalid key accepted", 0);
        if (!memmem (line, len, row.meter.meter_id, strlen (row.meter.meter_id)))
            s_fail ("meter id not from the line", 0);
        char hex [2 * sizeof row.meter.sign_pk + 1];
        sodium_bin2hex (hex, sizeof hex, row.meter.sign_pk, sizeof row.meter.sign_pk);
        //  the line may spell the key in upper case: compare case-blind
        bool found = false;
        for (size_t i = 0; !found && i + 64 <= len; i++)
            found = strncasecmp (line + i, hex, 64) == 0;
        if (!found)
            s_fail ("key not from the line", 0);
        if (row.has_customer) {
            if (!s_bounded (row.name, AMI_MAX_CUSTOMER_NAME) || !row.name [0])
                s_fail ("customer name length", 0);
            if (!s_bounded (row.address, AMI_MDMS_CUSTOMER_ADDRESS_MAX))
                s_fail ("address length", 0);
            if (!ami_id_valid (row.account))
                s_fail ("invalid account accepted", 0);
        }
        else
        if (row.name [0] || row.address [0] || row.account [0])
            s_fail ("customer fields without has_customer", 0);
    }
    sodium_memzero (&row, sizeof row);
    free (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static bool initialized;
    if (!initialized) {
        if (sodium_init () < 0)
            abort ();
        ami_log_set_level (AMI_LOG_ERROR);
        initialized = true;
    }
    const char *text = (const char *) data;
    size_t start = 0;
    while (start < size) {
        const char *nl = memchr (text + start, '\n', size - start);
        size_t end = nl ? (size_t) (nl - text) + 1 : size;
        s_check_line (text + start, end - start);
        start = end;
    }
    //  The whole input as one line (no split): long lines, NULs, no '\n'
    s_check_line (text, size);
    return 0;
}
