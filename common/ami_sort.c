/*  ami_sort.c - the keys of a hash table in byte order (see ami_sort.h):
    qsort over an array of the keys, then one list in that order. */
#include "ami_sort.h"

#include <stdlib.h>
#include <string.h>

static int
s_compare (const void *a, const void *b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

zlistx_t *
ami_keys_sorted (zhashx_t *hash)
{
    assert (hash);
    zlistx_t *list = zlistx_new ();
    if (!list)
        return NULL;
    zlistx_set_destructor (list, (zlistx_destructor_fn *) zstr_free);
    zlistx_set_comparator (list, (zlistx_comparator_fn *) strcmp);
    size_t n = zhashx_size (hash);
    if (n == 0)
        return list;
    const char **keys = (const char **) malloc (n * sizeof *keys);
    if (!keys) {
        zlistx_destroy (&list);
        return NULL;
    }
    size_t count = 0;
    for (void *item = zhashx_first (hash); item && count < n; item = zhashx_next (hash))
        keys [count++] = (const char *) zhashx_cursor (hash);
    qsort (keys, count, sizeof *keys, s_compare);
    for (size_t i = 0; i < count; i++) {
        char *copy = strdup (keys [i]);
        if (!copy || !zlistx_add_end (list, copy)) {
            free (copy);
            zlistx_destroy (&list);
            break;
        }
    }
    free (keys);
    return list;
}
