/*  test_log.c - ami_log: levels and the escaping of every log line
    (SEC-VAL-2: text a peer sent cannot forge log lines or drive a
    terminal). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ami_log.h"
#include "ami_test.h"

static void
s_expect (const char *in, const char *want)
{
    char out [256];
    size_t n = ami_log_escape (out, sizeof out, in);
    assert_string_equal (out, want);
    assert_int_equal (n, strlen (want));
}

static void
test_sec_val_2_escape_table (void **state)
{
    (void) state;
    s_expect ("plain text MTR-000001", "plain text MTR-000001");
    s_expect ("a\nb", "a\\nb");
    s_expect ("\r\t", "\\r\\t");
    s_expect ("\x1b[2Jclear", "\\e[2Jclear");
    s_expect ("bell\x07 del\x7f", "bell\\x07 del\\x7f");
    s_expect ("back\\slash", "back\\\\slash");
    //  valid UTF-8 stays, C1 controls (U+009B CSI) are escaped
    s_expect ("Schäfer Zoë Øster", "Schäfer Zoë Øster");
    s_expect ("\xc2\x9b" "31m", "\\u009b31m");
    //  invalid UTF-8: stray continuation, overlong, surrogate, cut short
    s_expect ("\x80", "\\x80");
    s_expect ("\xc0\xaf", "\\xc0\\xaf");
    s_expect ("\xed\xa0\x80", "\\xed\\xa0\\x80");
    s_expect ("\xe2\x82", "\\xe2\\x82");
    s_expect ("\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80");
    s_expect ("€ ok", "€ ok");
}

/*  The output never overflows and never splits an escape or a character. */
static void
test_escape_truncation (void **state)
{
    (void) state;
    char out [8];
    assert_int_equal (ami_log_escape (out, sizeof out, "abcdefghij"), 7);
    assert_string_equal (out, "abcdefg");
    assert_int_equal (ami_log_escape (out, sizeof out, "abcdef\n"), 6);
    assert_string_equal (out, "abcdef");
    assert_int_equal (ami_log_escape (out, sizeof out, "abcde€"), 5);
    assert_string_equal (out, "abcde");
    assert_int_equal (ami_log_escape (out, 1, "abc"), 0);
    assert_string_equal (out, "");
}

/*  A log line with a peer's hostile text is one line, escaped. */
static void
test_sec_val_2_log_line_escaped (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("log");
    char *path = ami_test_path (dir, "log.txt");
    FILE *file = fopen (path, "w+");
    assert_non_null (file);
    ami_log_init ("test-log", "node-1", AMI_LOG_INFO);
    zsys_set_logstream (file);
    const char *peer_text = "refused\nE: (ami-mdms) forged line\x1b]0;owned\x07";
    ami_log_warn ("aggregator agg-1: ERROR from fleet: %s", peer_text);
    ami_log_limit_t limit = AMI_LOG_LIMIT_INIT (5);
    ami_log_warn_limited (&limit, "fleet-1", "text %s", peer_text);
    ami_log_debug ("not shown at info: %s", peer_text);
    fflush (file);
    zsys_set_logstream (stderr);
    rewind (file);
    char buf [2048];
    size_t n = fread (buf, 1, sizeof buf - 1, file);
    buf [n] = 0;
    fclose (file);
    //  two lines, each ending in the one real newline
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf [i] == '\n';
    assert_int_equal (lines, 2);
    assert_non_null (strstr (buf, "refused\\nE: (ami-mdms) forged line\\e]0;owned\\x07"));
    assert_null (strchr (buf, 0x1b));
    assert_null (strchr (buf, 0x07));
    assert_null (strstr (buf, "not shown"));
    ami_test_rmtree (dir);
    free (path);
    free (dir);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_sec_val_2_escape_table),
        cmocka_unit_test (test_escape_truncation),
        cmocka_unit_test (test_sec_val_2_log_line_escaped),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
