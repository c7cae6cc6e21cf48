/*  ami_config.h - the one configuration format of every ami-bus service.

    Files are ZPL (ZeroMQ RFC 4, "ZeroMQ Property Language"), parsed by
    CZMQ's zconfig:

        #   ami-mdms configuration
        node-id = MDMS-1
        log
            level = info
        api
            endpoint = tcp://0.0.0.0:7010
            timeout = 5s

    Keys are addressed by path, with "/" between levels: "api/timeout".
    Indentation is exactly 4 spaces per level; values may be quoted with
    "..." or '...' (no escapes) or unquoted up to a '#' comment.

    Rules this class adds to ZPL (all checked at load, each failure is
    AMI_E_CONFIG with a log line naming the file and the line number):
    -   no line longer than 1024 bytes (zconfig silently cuts longer lines,
        and mis-counts what follows them), no NUL bytes, at most 1 MiB;
    -   no "/" inside a key name in the file ("a/b = 1" at top level would
        be a node named "a/b" that no path can reach: nest it instead).
    Syntax errors are found by our own line checker, which follows
    zconfig's grammar, so the message can say which line is wrong (zconfig
    itself only prints a line number to stdout). Log lines never quote the
    text of a line: the same parser reads key files.

    A key is "set" when it exists and its value is not empty. The typed
    getters return the default for a key that is not set (so "port =" or
    an override "port=" means "use the default"). When a key appears more
    than once, the getters read the first one (repeated keys are how ZPL
    writes lists: walk them with ami_config_zconfig()).

    Command-line overrides (-o / --set "path=value") go through
    ami_config_override() after loading and before reading: they replace
    the file's value, or add the key.

    Ownership: strings returned by getters belong to the config and stay
    valid until that key is set again or the config is destroyed.
    Thread safety: none; load and read configuration at start-up, from one
    thread, and hand plain values to actors.
*/
#ifndef AMI_CONFIG_H_INCLUDED
#define AMI_CONFIG_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ami_config_t ami_config_t;

/*  Load a ZPL file. Returns a new config, or NULL with *err (if err is not
    NULL) set to:
      AMI_E_IO      the file is missing or cannot be read (log names it);
      AMI_E_CONFIG  it is not a regular file, is over 1 MiB, or is not
                    valid ZPL (log names the file and the line);
      AMI_E_NOMEM   out of memory. */
ami_config_t *
    ami_config_load (const char *path, int *err);

/*  Parse ZPL from a string. origin names the text in log lines (e.g. a
    file name; NULL means "<string>"). Same errors as ami_config_load,
    except AMI_E_IO. */
ami_config_t *
    ami_config_load_str (const char *text, const char *origin, int *err);

/*  Create an empty config (every getter returns its default). Returns NULL
    only when out of memory. */
ami_config_t *
    ami_config_new_empty (void);

/*  Destroy a config. Idempotent; nulls *self_p. */
void
    ami_config_destroy (ami_config_t **self_p);

/*  Return the file name the config came from, the origin given to
    ami_config_load_str, or "<empty>". Never NULL. */
const char *
    ami_config_origin (ami_config_t *self);

/*  Set path (e.g. "store/batch") to value, creating the key and any
    missing sections. Returns AMI_OK, or AMI_E_CONFIG (logged) if the path
    is empty, has an empty segment, or uses characters outside ZPL names
    (letters, digits, $ - _ @ . & +), or the value holds a control
    character. */
int
    ami_config_set (ami_config_t *self, const char *path, const char *value);

/*  Apply a command-line override "path=value" (split at the first '=';
    spaces around path and value are trimmed). Returns AMI_OK, or
    AMI_E_CONFIG (logged) if there is no '=' or the path is invalid as for
    ami_config_set. */
int
    ami_config_override (ami_config_t *self, const char *assignment);

/*  Return true if path is set (exists with a non-empty value). */
bool
    ami_config_has (ami_config_t *self, const char *path);

/*  Get a string. *out is the value, or default_value (which may be NULL:
    then a NULL *out means "not set") when the key is not set. Always
    returns AMI_OK; it has the same shape as the other getters so call
    sites read alike. */
int
    ami_config_str (ami_config_t *self, const char *path,
                    const char *default_value, const char **out);

/*  Get a decimal integer in [min, max]. Accepts an optional sign and
    digits only: no spaces, no trailing characters, no hex. Returns AMI_OK
    with *out set (the default when not set; the default is not range
    checked), or AMI_E_CONFIG (logged with the file, key and value) for
    junk, overflow or a value out of range; *out is untouched on error. */
int
    ami_config_int (ami_config_t *self, const char *path, int64_t default_value,
                    int64_t min, int64_t max, int64_t *out);

/*  Get a boolean: true/yes/on/1 or false/no/off/0, case-insensitive.
    Returns AMI_OK, or AMI_E_CONFIG (logged) for anything else. */
int
    ami_config_bool (ami_config_t *self, const char *path, bool default_value,
                     bool *out);

/*  Get a size in bytes: digits with an optional binary suffix K, M, G or
    T ("1073741824", "512M", "1G"). A missing or empty key gives
    default_value. At least 1 MiB: every size configured in ami-bus is a
    buffer or a database map, for which less is a typo. Returns AMI_OK, or
    AMI_E_CONFIG (logged, naming the key and the value) for junk, a second
    suffix, overflow or less than 1 MiB. */
int
    ami_config_size (ami_config_t *self, const char *path, size_t default_value,
                     size_t *out);

/*  Get a duration in milliseconds: "250ms", "5s", "2m", "1h", or a plain
    number of milliseconds ("1500"). Non-negative integers only, no spaces,
    no combinations ("1h30m" is refused: write "90m"). Returns AMI_OK, or
    AMI_E_CONFIG (logged) for junk, a negative value or overflow. */
int
    ami_config_duration_ms (ami_config_t *self, const char *path,
                            int64_t default_ms, int64_t *out);

/*  Get a rate per second: digits with an optional "/s" ("20", "20/s"),
    in [min, max]. A missing or empty key gives default_value. Returns
    AMI_OK, or AMI_E_CONFIG (logged, naming the key, the value and the
    range) for junk, overflow or a value out of range; *out is untouched
    on error. */
int
    ami_config_rate (ami_config_t *self, const char *path, uint32_t default_value,
                     uint32_t min, uint32_t max, uint32_t *out);

//  Check every key in the config against a NULL-terminated list of known
//  paths, so a typo ("log/levle") is an error instead of a silently
//  ignored setting. An entry matches its exact path; an entry ending in
//  "/*" matches every key below that prefix ("meters/*"), and "*" alone
//  matches everything; sections above a known key ("log" for "log/level")
//  are implicitly known. Keys are checked in file order. Returns AMI_OK, or
//  AMI_E_CONFIG with a log line naming the first unknown key.
//  (Line comments here because the wildcard would end a block comment.)
int
    ami_config_check_known (ami_config_t *self, const char *const *known_paths);

/*  Return DIR/relative, where DIR is the directory of the running
    executable, if that file exists; else NULL. The tools use it to find the
    demo deployment's configuration next to bin/ ("../var/demo/etc/amictl.cfg")
    so that they work with no flag after `make demo`. Caller frees with
    zstr_free. */
char *
    ami_config_beside_exe (const char *relative);

/*  Return the underlying zconfig tree (borrowed, owned by self), e.g. to
    walk repeated keys: for (zconfig_t *c = zconfig_child (zconfig_locate
    (root, "uplinks")); c; c = zconfig_next (c)) ... */
zconfig_t *
    ami_config_zconfig (ami_config_t *self);

#ifdef __cplusplus
}
#endif

#endif
