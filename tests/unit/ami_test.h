/*  ami_test.h - small helpers shared by the cmocka test binaries.

    Include after <cmocka.h>'s prerequisites (stdarg, stddef, setjmp, stdint).
*/
#ifndef AMI_TEST_H_INCLUDED
#define AMI_TEST_H_INCLUDED

#include <stddef.h>

/*  Create a fresh private directory under $TMPDIR (or /tmp) named for the
    test, mode 0700. Returns a heap string the caller frees with free(), or
    NULL on failure. */
char *
    ami_test_tmpdir (const char *tag);

/*  Remove a directory tree created by ami_test_tmpdir. Refuses (returns -1)
    any path that is not under the temporary root. Returns 0 on success. */
int
    ami_test_rmtree (const char *path);

/*  Join dir and name into a heap string "dir/name" (caller frees). */
char *
    ami_test_path (const char *dir, const char *name);

#endif
