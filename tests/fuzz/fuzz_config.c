/*  fuzz_config.c - libFuzzer target for the ZPL configuration parser.

    Configuration files are written by people (and key files share the
    parser), so every byte sequence must either load or be refused with
    AMI_E_CONFIG / AMI_E_NOMEM, never misbehave. For every input:
    - ami_config_load_str on a NUL-terminated copy (an input with a NUL
      inside is cut there, as a C string is);
    - on success, the typed getters on a few keys that real services read
      (every getter must return AMI_OK or AMI_E_CONFIG, and leave the
      output untouched on error), a walk of the whole tree, and
      ami_config_check_known with a small list including a wildcard;
    - on failure, the result is NULL with err set to a config error.
    Any violation aborts, which libFuzzer reports as a crash.
*/
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_config.h"
#include "ami_err.h"
#include "ami_log.h"

static void
s_fail (const char *what, int a)
{
    fprintf (stderr, "fuzz_config oracle: %s (%d)\n", what, a);
    abort ();
}

static void
s_check_rc (const char *what, int rc)
{
    if (rc != AMI_OK && rc != AMI_E_CONFIG)
        s_fail (what, rc);
}

/*  Walk every node, reading name and value as a service walking a list
    would (depth bounded by the parser's own line checker). */
static size_t
s_walk (zconfig_t *node, int depth)
{
    size_t n = 0;
    for (zconfig_t *c = zconfig_child (node); c; c = zconfig_next (c)) {
        const char *name = zconfig_name (c);
        const char *value = zconfig_value (c);
        n += (name ? strlen (name) : 0) + (value ? strlen (value) : 0) + 1;
        n += s_walk (c, depth + 1);
    }
    return n;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static bool initialized;
    if (!initialized) {
        ami_log_set_level (AMI_LOG_ERROR);
        initialized = true;
    }
    char *text = malloc (size + 1);
    if (!text)
        abort ();
    memcpy (text, data, size);
    text [size] = 0;

    int err = -12345;
    ami_config_t *config = ami_config_load_str (text, "fuzz", &err);
    free (text);
    if (!config) {
        if (err != AMI_E_CONFIG && err != AMI_E_NOMEM)
            s_fail ("load_str failed with an unexpected code", err);
        return 0;
    }
    if (strcmp (ami_config_origin (config), "fuzz") != 0)
        s_fail ("origin lost", 0);

    //  Keys the services read (docs/SERVICES.md)
    static const char *const keys [] = {
        "node/id", "log/level", "heartbeat", "mdms/api", "mdms/read-timeout",
        "mdms/retries", "mdms/rate/operator", "mdms/rate/meter-burst",
        "fleet/meters", "node", NULL
    };
    for (size_t i = 0; keys [i]; i++) {
        const char *s = NULL;
        if (ami_config_str (config, keys [i], "dflt", &s) != AMI_OK || !s)
            s_fail ("str getter", (int) i);
        bool has = ami_config_has (config, keys [i]);
        if (!has && strcmp (s, "dflt") != 0)
            s_fail ("unset key did not give the default", (int) i);

        int64_t v = -77;
        int rc = ami_config_int (config, keys [i], 5, -1000, 1000000, &v);
        s_check_rc ("int getter", rc);
        if (rc == AMI_OK && has && (v < -1000 || v > 1000000))
            s_fail ("int out of range accepted", (int) i);
        if (rc != AMI_OK && v != -77)
            s_fail ("int getter wrote on error", (int) i);

        bool b = false;
        s_check_rc ("bool getter", ami_config_bool (config, keys [i], true, &b));

        int64_t ms = -77;
        rc = ami_config_duration_ms (config, keys [i], 1000, &ms);
        s_check_rc ("duration getter", rc);
        if (rc == AMI_OK && ms < 0)
            s_fail ("negative duration accepted", (int) i);
    }
    zconfig_t *root = ami_config_zconfig (config);
    if (root)
        (void) s_walk (root, 0);

    static const char *const known [] = {
        "node/id", "node/cert", "node/allow", "log/level", "heartbeat", "mdms/*", NULL
    };
    s_check_rc ("check_known", ami_config_check_known (config, known));
    static const char *const all [] = { "*", NULL };
    if (ami_config_check_known (config, all) != AMI_OK)
        s_fail ("\"*\" refused a key", 0);

    //  An override on the loaded tree must not break it either
    s_check_rc ("override", ami_config_override (config, "api/timeout = 7s"));
    int64_t ms = 0;
    if (ami_config_duration_ms (config, "api/timeout", 0, &ms) != AMI_OK || ms != 7000)
        s_fail ("override not read back", (int) ms);

    ami_config_destroy (&config);
    if (config)
        s_fail ("destroy did not null", 0);
    return 0;
}
