/*  test_config.c - cmocka tests for ami_config (ZPL configuration) and the
    config-facing part of ami_log (log/level).

    Each test gets a fresh temporary directory from the fixture; the
    teardown removes it and destroys a config the test left open. Log lines
    are captured by pointing zsys's log stream at a temporary file, so the
    tests can check that an error names the file, the line and the key.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_config.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_test.h"

typedef struct {
    char *dir;                  //  the test's private temporary directory
    ami_config_t *config;       //  destroyed by the teardown if still open
    FILE *capture;              //  zsys log stream while capturing
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    fx->dir = ami_test_tmpdir ("config");
    if (!fx->dir) {
        free (fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    ami_config_destroy (&fx->config);
    if (fx->capture) {
        zsys_set_logstream (stderr);
        fclose (fx->capture);
    }
    int rc = ami_test_rmtree (fx->dir);
    free (fx->dir);
    free (fx);
    ami_log_set_level (AMI_LOG_INFO);
    return rc == 0 ? 0 : -1;
}

//  Write text to dir/name; returns the heap path (caller frees).
static char *
s_write (fixture_t *fx, const char *name, const char *text, size_t size)
{
    char *path = ami_test_path (fx->dir, name);
    assert_non_null (path);
    FILE *f = fopen (path, "wb");
    assert_non_null (f);
    assert_int_equal (fwrite (text, 1, size, f), size);
    assert_int_equal (fclose (f), 0);
    return path;
}

static ami_config_t *
s_load_text (fixture_t *fx, const char *text, int *err)
{
    char *path = s_write (fx, "test.cfg", text, strlen (text));
    ami_config_t *config = ami_config_load (path, err);
    free (path);
    return config;
}

//  Start capturing zsys log lines.
static void
s_capture_start (fixture_t *fx)
{
    fx->capture = tmpfile ();
    assert_non_null (fx->capture);
    zsys_set_logstream (fx->capture);
}

//  Stop capturing; returns what was logged (caller frees).
static char *
s_capture_end (fixture_t *fx)
{
    zsys_set_logstream (stderr);
    long size = ftell (fx->capture);
    assert_true (size >= 0);
    char *text = calloc (1, (size_t) size + 1);
    assert_non_null (text);
    rewind (fx->capture);
    assert_int_equal (fread (text, 1, (size_t) size, fx->capture), (size_t) size);
    fclose (fx->capture);
    fx->capture = NULL;
    return text;
}

static const char *s_sample =
    "#   ami-mdms test configuration\n"
    "node-id = MDMS-1\n"
    "\n"
    "log\n"
    "    level = debug\n"
    "store\n"
    "    path = \"/var/lib/ami # not a comment\"\n"
    "    batch = 1000\n"
    "    sync = yes\n"
    "    #   an indented comment\n"
    "    limits\n"
    "        max-meters = -7\n"
    "api\n"
    "    endpoint = 'tcp://127.0.0.1:7010'   # trailing comment\n"
    "    timeout = 5s\n"
    "    empty =\n";


//  --------------------------------------------------------------------------

static void
test_load_nested_typed (void **state)
{
    fixture_t *fx = *state;
    int err = -1;
    fx->config = s_load_text (fx, s_sample, &err);
    assert_non_null (fx->config);
    assert_int_equal (err, AMI_OK);
    assert_non_null (strstr (ami_config_origin (fx->config), "test.cfg"));

    const char *s = NULL;
    assert_int_equal (ami_config_str (fx->config, "node-id", NULL, &s), AMI_OK);
    assert_string_equal (s, "MDMS-1");
    assert_int_equal (ami_config_str (fx->config, "/log/level", NULL, &s), AMI_OK);
    assert_string_equal (s, "debug");
    assert_int_equal (ami_config_str (fx->config, "store/path", NULL, &s), AMI_OK);
    assert_string_equal (s, "/var/lib/ami # not a comment");
    assert_int_equal (ami_config_str (fx->config, "api/endpoint", NULL, &s), AMI_OK);
    assert_string_equal (s, "tcp://127.0.0.1:7010");

    int64_t n = 0;
    assert_int_equal (ami_config_int (fx->config, "store/batch", 1, 1, 100000, &n), AMI_OK);
    assert_int_equal (n, 1000);
    assert_int_equal (ami_config_int (fx->config, "store/limits/max-meters", 0,
                                      INT64_MIN, INT64_MAX, &n), AMI_OK);
    assert_int_equal (n, -7);

    bool b = false;
    assert_int_equal (ami_config_bool (fx->config, "store/sync", false, &b), AMI_OK);
    assert_true (b);

    int64_t ms = 0;
    assert_int_equal (ami_config_duration_ms (fx->config, "api/timeout", 1, &ms), AMI_OK);
    assert_int_equal (ms, 5000);

    assert_true (ami_config_has (fx->config, "store/batch"));
    assert_false (ami_config_has (fx->config, "api/empty"));     //  empty = not set
    assert_false (ami_config_has (fx->config, "store/nothing"));

    //  The tree is reachable for walking repeated keys
    zconfig_t *root = ami_config_zconfig (fx->config);
    assert_non_null (zconfig_locate (root, "store/limits"));
}

static void
test_defaults_when_absent (void **state)
{
    fixture_t *fx = *state;
    fx->config = s_load_text (fx, s_sample, NULL);
    assert_non_null (fx->config);

    const char *s = "sentinel";
    assert_int_equal (ami_config_str (fx->config, "nope/key", "dflt", &s), AMI_OK);
    assert_string_equal (s, "dflt");
    assert_int_equal (ami_config_str (fx->config, "nope/key", NULL, &s), AMI_OK);
    assert_null (s);
    //  "empty =" is a key without a value: the default applies
    assert_int_equal (ami_config_str (fx->config, "api/empty", "dflt", &s), AMI_OK);
    assert_string_equal (s, "dflt");
    //  a section has no value either
    assert_int_equal (ami_config_str (fx->config, "store", "dflt", &s), AMI_OK);
    assert_string_equal (s, "dflt");

    int64_t n = 0;
    //  the default is returned as is, even outside [min, max]
    assert_int_equal (ami_config_int (fx->config, "api/empty", 42, 0, 10, &n), AMI_OK);
    assert_int_equal (n, 42);
    bool b = false;
    assert_int_equal (ami_config_bool (fx->config, "api/nope", true, &b), AMI_OK);
    assert_true (b);
    int64_t ms = 0;
    assert_int_equal (ami_config_duration_ms (fx->config, "api/nope", 250, &ms), AMI_OK);
    assert_int_equal (ms, 250);

    //  An empty config gives defaults everywhere and can be filled
    ami_config_t *empty = ami_config_new_empty ();
    assert_non_null (empty);
    assert_int_equal (ami_config_int (empty, "a/b", 7, 0, 10, &n), AMI_OK);
    assert_int_equal (n, 7);
    assert_int_equal (ami_config_set (empty, "a/b", "9"), AMI_OK);
    assert_int_equal (ami_config_int (empty, "a/b", 7, 0, 10, &n), AMI_OK);
    assert_int_equal (n, 9);
    assert_string_equal (ami_config_origin (empty), "<empty>");
    ami_config_destroy (&empty);
    assert_null (empty);
    ami_config_destroy (&empty);            //  idempotent
}

static void
test_bad_int (void **state)
{
    fixture_t *fx = *state;
    fx->config = s_load_text (fx,
        "n\n"
        "    junk = 12x\n"
        "    space = \" 12\"\n"
        "    hex = 0x10\n"
        "    huge = 99999999999999999999\n"
        "    big = 101\n"
        "    low = -1\n"
        "    edge = 100\n"
        "    sign = +5\n", NULL);
    assert_non_null (fx->config);

    int64_t n = 1234;
    s_capture_start (fx);
    assert_int_equal (ami_config_int (fx->config, "n/junk", 0, 0, 100, &n), AMI_E_CONFIG);
    char *log = s_capture_end (fx);
    //  the log line names the file, the key and the bad value
    assert_non_null (strstr (log, "test.cfg"));
    assert_non_null (strstr (log, "n/junk"));
    assert_non_null (strstr (log, "12x"));
    free (log);
    assert_int_equal (n, 1234);             //  untouched on error

    assert_int_equal (ami_config_int (fx->config, "n/space", 0, 0, 100, &n), AMI_E_CONFIG);
    assert_int_equal (ami_config_int (fx->config, "n/hex", 0, 0, 100, &n), AMI_E_CONFIG);
    assert_int_equal (ami_config_int (fx->config, "n/huge", 0, INT64_MIN, INT64_MAX, &n),
                      AMI_E_CONFIG);
    assert_int_equal (ami_config_int (fx->config, "n/big", 0, 0, 100, &n), AMI_E_CONFIG);
    assert_int_equal (ami_config_int (fx->config, "n/low", 0, 0, 100, &n), AMI_E_CONFIG);
    assert_int_equal (n, 1234);

    assert_int_equal (ami_config_int (fx->config, "n/edge", 0, 0, 100, &n), AMI_OK);
    assert_int_equal (n, 100);
    assert_int_equal (ami_config_int (fx->config, "n/low", 0, -1, 100, &n), AMI_OK);
    assert_int_equal (n, -1);
    assert_int_equal (ami_config_int (fx->config, "n/sign", 0, 0, 100, &n), AMI_OK);
    assert_int_equal (n, 5);
}

static void
test_bool (void **state)
{
    fixture_t *fx = *state;
    fx->config = ami_config_new_empty ();
    assert_non_null (fx->config);
    const char *yes [] = { "true", "TRUE", "yes", "On", "1" };
    const char *no [] = { "false", "No", "off", "OFF", "0" };
    for (size_t i = 0; i < 5; i++) {
        bool b = false;
        assert_int_equal (ami_config_set (fx->config, "x/flag", yes [i]), AMI_OK);
        assert_int_equal (ami_config_bool (fx->config, "x/flag", false, &b), AMI_OK);
        assert_true (b);
        assert_int_equal (ami_config_set (fx->config, "x/flag", no [i]), AMI_OK);
        assert_int_equal (ami_config_bool (fx->config, "x/flag", true, &b), AMI_OK);
        assert_false (b);
    }
    bool b = true;
    assert_int_equal (ami_config_set (fx->config, "x/flag", "maybe"), AMI_OK);
    assert_int_equal (ami_config_bool (fx->config, "x/flag", false, &b), AMI_E_CONFIG);
    assert_true (b);                        //  untouched
    assert_int_equal (ami_config_set (fx->config, "x/flag", "2"), AMI_OK);
    assert_int_equal (ami_config_bool (fx->config, "x/flag", false, &b), AMI_E_CONFIG);
}

static void
test_sizes (void **state)
{
    fixture_t *fx = *state;
    fx->config = ami_config_new_empty ();
    assert_non_null (fx->config);
    size_t out = 0;
    assert_int_equal (ami_config_size (fx->config, "x/size", 12345678, &out), AMI_OK);
    assert_int_equal (out, 12345678);       //  missing: the default
    static const struct {
        const char *text;
        size_t bytes;
    } good [] = {
        { "1048576", 1048576 }, { "1M", 1048576 }, { "512m", 536870912 },
        { "1G", 1073741824 }, { "2048K", 2097152 }, { "1T", (size_t) 1 << 40 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        assert_int_equal (ami_config_set (fx->config, "x/size", good [i].text), AMI_OK);
        assert_int_equal (ami_config_size (fx->config, "x/size", 0, &out), AMI_OK);
        assert_true (out == good [i].bytes);
    }
    static const char *const bad [] = {
        "1000", "1023K", "0", "-1G", "1GG", "1X", "G", " 1G", "1.5G", "99999999999999999999",
        "17179869184G",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        out = 7;
        assert_int_equal (ami_config_set (fx->config, "x/size", bad [i]), AMI_OK);
        assert_int_equal (ami_config_size (fx->config, "x/size", 0, &out), AMI_E_CONFIG);
        assert_int_equal (out, 7);          //  untouched
    }
}

static void
test_durations (void **state)
{
    fixture_t *fx = *state;
    fx->config = ami_config_new_empty ();
    assert_non_null (fx->config);
    static const struct {
        const char *text;
        int64_t ms;
    } good [] = {
        { "250ms", 250 }, { "5s", 5000 }, { "2m", 120000 }, { "1h", 3600000 },
        { "1500", 1500 }, { "0", 0 }, { "0s", 0 }, { "90m", 5400000 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        int64_t ms = -1;
        assert_int_equal (ami_config_set (fx->config, "t", good [i].text), AMI_OK);
        assert_int_equal (ami_config_duration_ms (fx->config, "t", -1, &ms), AMI_OK);
        assert_int_equal (ms, good [i].ms);
    }
    static const char *bad [] = {
        "-5s", "5x", "1h30m", "s", "ms", "5 s", "5S", "1.5s", "+5s",
        "9999999999999999h", "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        int64_t ms = -1;
        assert_int_equal (ami_config_set (fx->config, "t", bad [i]), AMI_OK);
        assert_int_equal (ami_config_duration_ms (fx->config, "t", 7, &ms), AMI_E_CONFIG);
        assert_int_equal (ms, -1);
    }
}

static void
test_rates (void **state)
{
    fixture_t *fx = *state;
    fx->config = ami_config_new_empty ();
    assert_non_null (fx->config);
    uint32_t out = 99;
    assert_int_equal (ami_config_rate (fx->config, "r", 20, 1, 1000, &out), AMI_OK);
    assert_int_equal (out, 20);                 //  absent: the default
    static const struct {
        const char *text;
        uint32_t rate;
    } good [] = { { "20", 20 }, { "20/s", 20 }, { "1", 1 }, { "1000/s", 1000 } };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        assert_int_equal (ami_config_set (fx->config, "r", good [i].text), AMI_OK);
        assert_int_equal (ami_config_rate (fx->config, "r", 7, 1, 1000, &out), AMI_OK);
        assert_int_equal (out, good [i].rate);
    }
    static const char *bad [] = {
        "0", "1001", "-1", "+5", "5/m", "5/", "/s", "5 /s", "20/s/s", "x",
        "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        out = 99;
        assert_int_equal (ami_config_set (fx->config, "r", bad [i]), AMI_OK);
        assert_int_equal (ami_config_rate (fx->config, "r", 7, 1, 1000, &out), AMI_E_CONFIG);
        assert_int_equal (out, 99);             //  untouched
    }
    //  0 allowed when min is 0 (0 = no limit at the MDMS)
    assert_int_equal (ami_config_set (fx->config, "r", "0"), AMI_OK);
    assert_int_equal (ami_config_rate (fx->config, "r", 7, 0, 1000, &out), AMI_OK);
    assert_int_equal (out, 0);
}

static void
test_override_wins (void **state)
{
    fixture_t *fx = *state;
    fx->config = s_load_text (fx, "a\n    b = 1\n    c = keep\n", NULL);
    assert_non_null (fx->config);
    int64_t n = 0;
    assert_int_equal (ami_config_int (fx->config, "a/b", 0, 0, 10, &n), AMI_OK);
    assert_int_equal (n, 1);

    assert_int_equal (ami_config_override (fx->config, "a/b=5"), AMI_OK);
    assert_int_equal (ami_config_int (fx->config, "a/b", 0, 0, 10, &n), AMI_OK);
    assert_int_equal (n, 5);
    //  the rest of the section is untouched
    const char *s = NULL;
    assert_int_equal (ami_config_str (fx->config, "a/c", NULL, &s), AMI_OK);
    assert_string_equal (s, "keep");

    //  new keys and sections; spaces trimmed; '=' in the value kept
    assert_int_equal (ami_config_override (fx->config, " x/y/z = hello = world "), AMI_OK);
    assert_int_equal (ami_config_str (fx->config, "x/y/z", NULL, &s), AMI_OK);
    assert_string_equal (s, "hello = world");

    //  an empty value resets to the default
    assert_int_equal (ami_config_override (fx->config, "a/b="), AMI_OK);
    assert_int_equal (ami_config_int (fx->config, "a/b", 3, 0, 10, &n), AMI_OK);
    assert_int_equal (n, 3);

    //  bad overrides change nothing
    assert_int_equal (ami_config_override (fx->config, "a/c"), AMI_E_CONFIG);
    assert_int_equal (ami_config_override (fx->config, "=5"), AMI_E_CONFIG);
    assert_int_equal (ami_config_override (fx->config, "a//c=5"), AMI_E_CONFIG);
    assert_int_equal (ami_config_override (fx->config, "a/c/=5"), AMI_E_CONFIG);
    assert_int_equal (ami_config_override (fx->config, "a c=5"), AMI_E_CONFIG);
    assert_int_equal (ami_config_set (fx->config, "a/c", "line\nbreak"), AMI_E_CONFIG);
    assert_int_equal (ami_config_str (fx->config, "a/c", NULL, &s), AMI_OK);
    assert_string_equal (s, "keep");
}

//  Texts our checker must refuse, each with the line it must name. The
//  first group zconfig refuses too (the checker follows its grammar); the
//  last two are our own stricter rules.
static const struct {
    const char *text;
    int line;
    bool zconfig_refuses;
} s_malformed [] = {
    { "a\n  b = 1\n", 2, true },                        //  2-space indent
    { "a = \"open\n", 1, true },                        //  missing quote
    { "a = 'x' junk\n", 1, true },                      //  junk after quote
    { "a b\n", 1, true },                               //  junk after name
    { "a = 1\nb = 2\n        c = 3\n", 3, true },       //  too deep
    { "a = 1\n    # ok\n  # not ok\n", 3, true },       //  comment at 2 spaces
    { "a\n\tb = 1\n", 2, true },                        //  tab indentation
    { "/a = 1\n", 1, true },                            //  '/' at name start
    { "!x = 1\n", 1, true },                            //  not a name
    { "a/b = 1\n", 1, false },                          //  '/' inside a name
};

static void
test_malformed (void **state)
{
    fixture_t *fx = *state;
    for (size_t i = 0; i < sizeof s_malformed / sizeof s_malformed [0]; i++) {
        int err = AMI_OK;
        s_capture_start (fx);
        ami_config_t *config = s_load_text (fx, s_malformed [i].text, &err);
        char *log = s_capture_end (fx);
        assert_null (config);
        assert_int_equal (err, AMI_E_CONFIG);
        char expect [64];
        snprintf (expect, sizeof expect, "test.cfg: line %d:", s_malformed [i].line);
        if (!strstr (log, expect))
            fail_msg ("case %zu: log lacks '%s': %s", i, expect, log);
        free (log);
        if (s_malformed [i].zconfig_refuses) {
            zconfig_t *z = zconfig_str_load (s_malformed [i].text);
            if (z)
                fail_msg ("case %zu: zconfig accepts what we refuse", i);
        }
    }
    //  A line longer than zconfig's 1024-byte buffer
    char *longline = malloc (2000);
    assert_non_null (longline);
    memset (longline, 'x', 1999);
    memcpy (longline, "a = ", 4);
    longline [1999] = 0;
    int err = AMI_OK;
    assert_null (s_load_text (fx, longline, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    free (longline);

    //  A NUL byte (binary garbage)
    char *path = s_write (fx, "nul.cfg", "a = 1\nb\0c = 2\n", 14);
    assert_null (ami_config_load (path, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    free (path);

    //  Missing file: AMI_E_IO; a directory: AMI_E_CONFIG
    path = ami_test_path (fx->dir, "missing.cfg");
    assert_non_null (path);
    assert_null (ami_config_load (path, &err));
    assert_int_equal (err, AMI_E_IO);
    free (path);
    assert_null (ami_config_load (fx->dir, &err));
    assert_int_equal (err, AMI_E_CONFIG);

    //  load_str reports the origin it was given
    s_capture_start (fx);
    assert_null (ami_config_load_str ("a\n  b\n", "inline-text", &err));
    char *log = s_capture_end (fx);
    assert_int_equal (err, AMI_E_CONFIG);
    assert_non_null (strstr (log, "inline-text: line 2:"));
    free (log);
}

//  Texts both zconfig and our checker must accept.
static void
test_valid_edge_cases (void **state)
{
    fixture_t *fx = *state;
    static const char *valid [] = {
        "",
        "\n\n",
        "# only a comment\n",
        "a\n    b\n        c = 1\n    d = 2\ne = 3\n",
        "a = \"x # y\"   # z\n",
        "a = 'it\"s'\n",
        "a =   \n",
        "a\r\n    b = 1\r\n",
        "$x-_@.&+ = 1\n",
        "a = 1\t\n\t# comment after a tab\n",
        "a = value with spaces\n",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid [0]; i++) {
        int err = -1;
        ami_config_t *config = ami_config_load_str (valid [i], "valid", &err);
        if (!config)
            fail_msg ("case %zu refused: '%s'", i, valid [i]);
        assert_int_equal (err, AMI_OK);
        ami_config_destroy (&config);
        zconfig_t *z = zconfig_str_load (valid [i]);
        if (!z)
            fail_msg ("case %zu: zconfig refuses what we accept", i);
        zconfig_destroy (&z);
    }
    fx->config = ami_config_load_str ("a\r\n    b = 1\r\n", NULL, NULL);
    assert_non_null (fx->config);
    int64_t n = 0;
    assert_int_equal (ami_config_int (fx->config, "a/b", 0, 0, 9, &n), AMI_OK);
    assert_int_equal (n, 1);
    assert_string_equal (ami_config_origin (fx->config), "<string>");
}

static void
test_check_known (void **state)
{
    fixture_t *fx = *state;
    fx->config = s_load_text (fx, s_sample, NULL);
    assert_non_null (fx->config);
    const char *const known [] = {
        "node-id", "log/level", "store/*", "api/endpoint", "api/timeout",
        "api/empty", NULL
    };
    assert_int_equal (ami_config_check_known (fx->config, known), AMI_OK);

    //  a typo is caught and named
    const char *const strict [] = {
        "node-id", "log/levle", "store/*", "api/*", NULL
    };
    s_capture_start (fx);
    assert_int_equal (ami_config_check_known (fx->config, strict), AMI_E_CONFIG);
    char *log = s_capture_end (fx);
    assert_non_null (strstr (log, "'log/level'"));
    free (log);

    //  the wildcard covers the subtree but not a sibling with the same prefix
    assert_int_equal (ami_config_set (fx->config, "storex/a", "1"), AMI_OK);
    s_capture_start (fx);
    assert_int_equal (ami_config_check_known (fx->config, known), AMI_E_CONFIG);
    log = s_capture_end (fx);
    assert_non_null (strstr (log, "'storex'"));
    free (log);

    //  "*" alone accepts everything; a key below a leaf is unknown
    const char *const all [] = { "*", NULL };
    assert_int_equal (ami_config_check_known (fx->config, all), AMI_OK);
    ami_config_t *c = ami_config_load_str ("log\n    level = info\n        x = 1\n", NULL, NULL);
    assert_non_null (c);
    const char *const leaf [] = { "log/level", NULL };
    assert_int_equal (ami_config_check_known (c, leaf), AMI_E_CONFIG);
    ami_config_destroy (&c);
}

static void
test_log_level (void **state)
{
    fixture_t *fx = *state;
    int level = -1;
    assert_int_equal (ami_log_level_parse ("debug", &level), AMI_OK);
    assert_int_equal (level, AMI_LOG_DEBUG);
    assert_int_equal (ami_log_level_parse ("WARNING", &level), AMI_OK);
    assert_int_equal (level, AMI_LOG_WARN);
    assert_int_equal (ami_log_level_parse ("Error", &level), AMI_OK);
    assert_int_equal (level, AMI_LOG_ERROR);
    assert_int_equal (ami_log_level_parse ("loud", &level), AMI_E_CONFIG);
    assert_int_equal (level, AMI_LOG_ERROR);
    assert_string_equal (ami_log_level_name (AMI_LOG_INFO), "info");
    assert_string_equal (ami_log_level_name (99), "?");

    //  log/level from config; -v wins; absent means info
    fx->config = s_load_text (fx, "log\n    level = warn\n", NULL);
    assert_non_null (fx->config);
    assert_int_equal (ami_log_level_from_config (fx->config, false, &level), AMI_OK);
    assert_int_equal (level, AMI_LOG_WARN);
    assert_int_equal (ami_log_level_from_config (fx->config, true, &level), AMI_OK);
    assert_int_equal (level, AMI_LOG_DEBUG);
    assert_int_equal (ami_log_level_from_config (NULL, false, &level), AMI_OK);
    assert_int_equal (level, AMI_LOG_INFO);
    assert_int_equal (ami_config_override (fx->config, "log/level=loud"), AMI_OK);
    assert_int_equal (ami_log_level_from_config (fx->config, false, &level), AMI_E_CONFIG);

    //  the filter: debug lines are dropped at info, kept at debug
    s_capture_start (fx);
    ami_log_set_level (AMI_LOG_INFO);
    ami_log_debug ("hidden-%d", 1);
    ami_log_info ("shown-%d", 2);
    ami_log_set_level (AMI_LOG_DEBUG);
    ami_log_debug ("shown-%d", 3);
    ami_log_set_level (AMI_LOG_ERROR);
    ami_log_warn ("hidden-%d", 4);
    char *log = s_capture_end (fx);
    assert_null (strstr (log, "hidden"));
    assert_non_null (strstr (log, "shown-2"));
    assert_non_null (strstr (log, "shown-3"));
    free (log);
    ami_log_set_level (99);
    assert_int_equal (ami_log_level (), AMI_LOG_DEBUG);
    ami_log_set_level (AMI_LOG_INFO);
}

static void
test_log_identity (void **state)
{
    fixture_t *fx = *state;
    ami_log_init ("ami-test", NULL, AMI_LOG_INFO);
    assert_string_equal (ami_log_ident (), "ami-test");
    ami_log_init ("ami-test", "NODE-1", AMI_LOG_WARN);
    assert_string_equal (ami_log_ident (), "ami-test[NODE-1]");
    assert_int_equal (ami_log_level (), AMI_LOG_WARN);
    s_capture_start (fx);
    ami_log_warn ("identity check %d", 42);
    ami_log_info ("not at warn");
    char *log = s_capture_end (fx);
    //  zsys prefixes every line with the identity
    assert_non_null (strstr (log, "ami-test[NODE-1]"));
    assert_non_null (strstr (log, "identity check 42"));
    assert_null (strstr (log, "not at warn"));
    free (log);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_load_nested_typed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_defaults_when_absent, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_bad_int, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_bool, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_durations, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_rates, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sizes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_override_wins, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_malformed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_valid_edge_cases, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_check_known, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_log_level, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_log_identity, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
