/*  ami_config.c - ZPL configuration: load, check, override, typed getters.

    Loading is two passes over text we read ourselves: s_zpl_check walks
    the lines with zconfig's grammar (indentation, name characters, '=',
    quotes, trailing junk, nesting depth) so that an error can name its
    line, then zconfig_str_load builds the tree. If the two ever disagree
    (our checker passes, zconfig refuses), the file is still refused, only
    with a less precise message. Reading the file ourselves (instead of
    zconfig_load) lets us bound its size, refuse non-regular files (a FIFO
    would block us) and refuse NUL bytes, which zconfig would cut lines at.

    Getters never assert on values: a value comes from a file or a command
    line, so every bad one is a logged AMI_E_CONFIG.
*/
#include "ami_config.h"
#include "ami_err.h"
#include "ami_log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

//  A service config is a few hundred bytes; 1 MiB is far beyond any real
//  one and still small enough to read into memory without thought.
#define AMI_CONFIG_MAX_BYTES    (1024 * 1024)

//  zconfig copies each line into a 1024-byte buffer and silently drops
//  the rest (then mis-counts the bytes that follow): refuse longer lines.
#define AMI_CONFIG_MAX_LINE     1024

//  Longest key path we build while checking known keys; a ZPL line is at
//  most 1024 bytes, and no real path comes near this.
#define AMI_CONFIG_MAX_PATH     1024

//  Values quoted in log lines are cut here so one bad value can't flood
//  the log (zsys itself cuts a log line at 1024 bytes).
#define LOGV "%.64s"

struct ami_config_t {
    zconfig_t *root;            //  the tree; root node is named "root"
    char *origin;               //  file name or caller's label, for logs
};


//  --------------------------------------------------------------------------
//  ZPL line checker

//  Characters zconfig accepts in a name (RFC 4 plus '/', which we refuse
//  separately with a clearer message).
static bool
s_is_namechar (int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9')
        || c == '$' || c == '-' || c == '_' || c == '@'
        || c == '.' || c == '&' || c == '+' || c == '/';
}

static bool
s_is_space (int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

//  After a name or a value: only spaces or a comment may follow.
static bool
s_rest_is_empty (const char *p)
{
    while (s_is_space ((unsigned char) *p))
        p++;
    return *p == 0 || *p == '#';
}

//  Check one trimmed line. chain is the depth of the deepest section a
//  new item can hang under (zconfig_at_depth succeeds up to it). Returns
//  NULL if the line is fine, else the reason.
static const char *
s_check_line (const char *line, int *chain)
{
    const char *p = line;
    size_t spaces = 0;
    while (*p == ' ') {
        p++;
        spaces++;
    }
    if (*p == '\t' && !s_rest_is_empty (p))
        return "tab in indentation (indent with 4 spaces per level)";
    const char *name = p;
    while (s_is_namechar ((unsigned char) *p))
        p++;
    size_t name_len = (size_t) (p - name);
    if (name_len == 0) {
        //  Blank line or comment; zconfig checks the indentation even here
        if (!s_rest_is_empty (p))
            return "invalid syntax (expected a key name)";
        if (spaces % 4)
            return "indentation is not a multiple of 4 spaces";
        return NULL;
    }
    if (spaces % 4)
        return "indentation is not a multiple of 4 spaces";
    if (memchr (name, '/', name_len))
        return "'/' in a key name (write nested sections instead)";
    int level = (int) (spaces / 4);
    if (level > *chain)
        return "indented deeper than its section";

    while (s_is_space ((unsigned char) *p))
        p++;
    if (*p == '=') {
        p++;
        while (s_is_space ((unsigned char) *p))
            p++;
        if (*p == '"' || *p == '\'') {
            const char *close = strchr (p + 1, *p);
            if (!close)
                return "missing closing quote";
            if (!s_rest_is_empty (close + 1))
                return "text after the closing quote";
        }
        //  An unquoted value runs to a '#' comment: always fine
    }
    else
    if (!s_rest_is_empty (p))
        return "invalid syntax after the key name (expected '=')";

    *chain = level + 1;
    return NULL;
}

//  Check the whole text. Returns 0 if it is valid, else the 1-based number
//  of the first bad line, with *why set.
static int
s_zpl_check (const char *text, size_t size, const char **why)
{
    int lineno = 0;
    int chain = 0;
    size_t pos = 0;
    char line [AMI_CONFIG_MAX_LINE + 1];

    while (pos < size) {
        lineno++;
        const char *start = text + pos;
        const char *eol = memchr (start, '\n', size - pos);
        size_t len = eol ? (size_t) (eol - start) : size - pos;
        pos += len + (eol ? 1 : 0);

        if (memchr (start, 0, len)) {
            *why = "NUL byte (not a text file?)";
            return lineno;
        }
        if (len > AMI_CONFIG_MAX_LINE) {
            *why = "line longer than 1024 bytes";
            return lineno;
        }
        memcpy (line, start, len);
        line [len] = 0;
        while (len && s_is_space ((unsigned char) line [len - 1]))
            line [--len] = 0;

        const char *reason = s_check_line (line, &chain);
        if (reason) {
            *why = reason;
            return lineno;
        }
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Construction

static ami_config_t *
s_new (zconfig_t *root, const char *origin)
{
    ami_config_t *self = (ami_config_t *) calloc (1, sizeof (ami_config_t));
    if (!self)
        return NULL;
    self->origin = strdup (origin);
    if (!self->origin) {
        free (self);
        return NULL;
    }
    self->root = root;
    return self;
}

static void
s_set_err (int *err, int code)
{
    if (err)
        *err = code;
}

//  Parse size bytes of text (text [size] must be 0).
static ami_config_t *
s_parse (const char *text, size_t size, const char *origin, int *err)
{
    const char *why = NULL;
    int bad_line = s_zpl_check (text, size, &why);
    if (bad_line) {
        ami_log_error ("config %s: line %d: %s", origin, bad_line, why);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    zconfig_t *root = zconfig_str_load (text);
    if (!root) {
        ami_log_error ("config %s: not valid ZPL (refused by zconfig)", origin);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    ami_config_t *self = s_new (root, origin);
    if (!self) {
        zconfig_destroy (&root);
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    s_set_err (err, AMI_OK);
    return self;
}

ami_config_t *
ami_config_load (const char *path, int *err)
{
    assert (path);
    //  O_NONBLOCK: opening a FIFO must not hang us; regular files ignore it
    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        ami_log_error ("config %s: cannot open: %s", path, strerror (errno));
        s_set_err (err, AMI_E_IO);
        return NULL;
    }
    struct stat st;
    if (fstat (fd, &st) != 0) {
        ami_log_error ("config %s: cannot stat: %s", path, strerror (errno));
        close (fd);
        s_set_err (err, AMI_E_IO);
        return NULL;
    }
    if (!S_ISREG (st.st_mode)) {
        ami_log_error ("config %s: not a regular file", path);
        close (fd);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    if (st.st_size > AMI_CONFIG_MAX_BYTES) {
        ami_log_error ("config %s: larger than %d bytes", path, AMI_CONFIG_MAX_BYTES);
        close (fd);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    //  Read to EOF, not st_size bytes: the file may change under us, and
    //  one byte over the cap tells us it grew too large.
    char *text = (char *) malloc (AMI_CONFIG_MAX_BYTES + 2);
    if (!text) {
        close (fd);
        s_set_err (err, AMI_E_NOMEM);
        return NULL;
    }
    size_t size = 0;
    while (size <= AMI_CONFIG_MAX_BYTES) {
        ssize_t n = read (fd, text + size, AMI_CONFIG_MAX_BYTES + 1 - size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ami_log_error ("config %s: read failed: %s", path, strerror (errno));
            free (text);
            close (fd);
            s_set_err (err, AMI_E_IO);
            return NULL;
        }
        if (n == 0)
            break;
        size += (size_t) n;
    }
    close (fd);
    if (size > AMI_CONFIG_MAX_BYTES) {
        ami_log_error ("config %s: larger than %d bytes", path, AMI_CONFIG_MAX_BYTES);
        free (text);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    text [size] = 0;
    ami_config_t *self = s_parse (text, size, path, err);
    free (text);
    return self;
}

ami_config_t *
ami_config_load_str (const char *text, const char *origin, int *err)
{
    assert (text);
    size_t size = strlen (text);
    if (!origin)
        origin = "<string>";
    if (size > AMI_CONFIG_MAX_BYTES) {
        ami_log_error ("config %s: larger than %d bytes", origin, AMI_CONFIG_MAX_BYTES);
        s_set_err (err, AMI_E_CONFIG);
        return NULL;
    }
    return s_parse (text, size, origin, err);
}

ami_config_t *
ami_config_new_empty (void)
{
    zconfig_t *root = zconfig_new ("root", NULL);
    if (!root)
        return NULL;
    ami_config_t *self = s_new (root, "<empty>");
    if (!self)
        zconfig_destroy (&root);
    return self;
}

void
ami_config_destroy (ami_config_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        ami_config_t *self = *self_p;
        zconfig_destroy (&self->root);
        free (self->origin);
        free (self);
        *self_p = NULL;
    }
}

const char *
ami_config_origin (ami_config_t *self)
{
    assert (self);
    return self->origin;
}

zconfig_t *
ami_config_zconfig (ami_config_t *self)
{
    assert (self);
    return self->root;
}


//  --------------------------------------------------------------------------
//  Setting values

//  A settable path: segments of name characters (no '/'), separated by
//  single '/'; one leading '/' is allowed, as in zconfig.
static bool
s_path_valid (const char *path)
{
    if (*path == '/')
        path++;
    if (*path == 0 || strlen (path) > AMI_CONFIG_MAX_PATH)
        return false;
    bool segment_empty = true;
    for (const char *p = path; *p; p++) {
        if (*p == '/') {
            if (segment_empty)
                return false;
            segment_empty = true;
        }
        else
        if (s_is_namechar ((unsigned char) *p))
            segment_empty = false;
        else
            return false;
    }
    return !segment_empty;
}

int
ami_config_set (ami_config_t *self, const char *path, const char *value)
{
    assert (self);
    assert (path);
    assert (value);
    if (!s_path_valid (path)) {
        ami_log_error ("config %s: invalid key path '" LOGV "'", self->origin, path);
        return AMI_E_CONFIG;
    }
    for (const unsigned char *v = (const unsigned char *) value; *v; v++)
        if (*v < 0x20 || *v == 0x7f) {
            ami_log_error ("config %s: %s: control character in value",
                           self->origin, path);
            return AMI_E_CONFIG;
        }
    zconfig_put (self->root, path, value);
    return AMI_OK;
}

//  Copy [start, start+len) without surrounding spaces into a new string.
static char *
s_trimmed (const char *start, size_t len)
{
    while (len && s_is_space ((unsigned char) *start)) {
        start++;
        len--;
    }
    while (len && s_is_space ((unsigned char) start [len - 1]))
        len--;
    return strndup (start, len);
}

int
ami_config_override (ami_config_t *self, const char *assignment)
{
    assert (self);
    assert (assignment);
    const char *eq = strchr (assignment, '=');
    if (!eq) {
        ami_log_error ("config override '" LOGV "': expected path=value", assignment);
        return AMI_E_CONFIG;
    }
    char *path = s_trimmed (assignment, (size_t) (eq - assignment));
    char *value = s_trimmed (eq + 1, strlen (eq + 1));
    int rc = AMI_E_NOMEM;
    if (path && value)
        rc = ami_config_set (self, path, value);
    if (rc == AMI_OK)
        ami_log_debug ("config %s: override %s", self->origin, path);
    free (path);
    free (value);
    return rc;
}


//  --------------------------------------------------------------------------
//  Typed getters

//  The value of a set key, or NULL if it is absent or empty.
static const char *
s_value (ami_config_t *self, const char *path)
{
    assert (self);
    assert (path);
    zconfig_t *item = zconfig_locate (self->root, path);
    const char *value = item ? zconfig_value (item) : NULL;
    return (value && *value) ? value : NULL;
}

bool
ami_config_has (ami_config_t *self, const char *path)
{
    return s_value (self, path) != NULL;
}

int
ami_config_str (ami_config_t *self, const char *path,
                const char *default_value, const char **out)
{
    assert (out);
    const char *value = s_value (self, path);
    *out = value ? value : default_value;
    return AMI_OK;
}

//  Parse an optionally signed decimal integer with nothing after it.
//  Returns 0, -1 for junk, -2 for overflow.
static int
s_parse_int (const char *text, int64_t *out)
{
    _Static_assert (sizeof (long long) == sizeof (int64_t), "long long is 64 bits");
    const char *p = text;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit ((unsigned char) *p))
        return -1;              //  strtoll would skip spaces; we don't
    errno = 0;
    char *end = NULL;
    long long v = strtoll (text, &end, 10);
    if (*end)
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = (int64_t) v;
    return 0;
}

int
ami_config_int (ami_config_t *self, const char *path, int64_t default_value,
                int64_t min, int64_t max, int64_t *out)
{
    assert (out);
    assert (min <= max);
    const char *value = s_value (self, path);
    if (!value) {
        *out = default_value;
        return AMI_OK;
    }
    int64_t v = 0;
    int rc = s_parse_int (value, &v);
    if (rc == -1) {
        ami_log_error ("config %s: %s = '" LOGV "': not an integer",
                       self->origin, path, value);
        return AMI_E_CONFIG;
    }
    if (rc == -2 || v < min || v > max) {
        ami_log_error ("config %s: %s = '" LOGV "': out of range [%" PRId64
                       ", %" PRId64 "]", self->origin, path, value, min, max);
        return AMI_E_CONFIG;
    }
    *out = v;
    return AMI_OK;
}

int
ami_config_bool (ami_config_t *self, const char *path, bool default_value,
                 bool *out)
{
    assert (out);
    static const char *yes [] = { "true", "yes", "on", "1" };
    static const char *no [] = { "false", "no", "off", "0" };
    const char *value = s_value (self, path);
    if (!value) {
        *out = default_value;
        return AMI_OK;
    }
    for (size_t i = 0; i < sizeof yes / sizeof yes [0]; i++) {
        if (strcasecmp (value, yes [i]) == 0) {
            *out = true;
            return AMI_OK;
        }
        if (strcasecmp (value, no [i]) == 0) {
            *out = false;
            return AMI_OK;
        }
    }
    ami_log_error ("config %s: %s = '" LOGV "': not a boolean "
                   "(true/false, yes/no, on/off, 1/0)", self->origin, path, value);
    return AMI_E_CONFIG;
}

int
ami_config_rate (ami_config_t *self, const char *path, uint32_t default_value,
                 uint32_t min, uint32_t max, uint32_t *out)
{
    assert (out);
    const char *value = s_value (self, path);
    if (!value) {
        *out = default_value;
        return AMI_OK;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long n = strtoull (value, &end, 10);
    if (end && strcmp (end, "/s") == 0)
        end += 2;
    if (!isdigit ((unsigned char) *value) || errno || (end && *end) || n < min || n > max) {
        ami_log_error ("config %s: %s = '" LOGV "' is not a rate of %u..%u per second "
                       "(e.g. 20 or 20/s)", self->origin, path, value, min, max);
        return AMI_E_CONFIG;
    }
    *out = (uint32_t) n;
    return AMI_OK;
}

int
ami_config_duration_ms (ami_config_t *self, const char *path,
                        int64_t default_ms, int64_t *out)
{
    assert (out);
    const char *value = s_value (self, path);
    if (!value) {
        *out = default_ms;
        return AMI_OK;
    }
    static const struct {
        const char *suffix;
        int64_t ms;
    } units [] = {
        { "",   1 },        //  a plain number is milliseconds
        { "ms", 1 },
        { "s",  1000 },
        { "m",  60 * 1000 },
        { "h",  60 * 60 * 1000 },
    };
    const char *p = value;
    while (isdigit ((unsigned char) *p))
        p++;
    if (p == value) {
        ami_log_error ("config %s: %s = '" LOGV "': not a duration "
                       "(e.g. 250ms, 5s, 2m, 1h)", self->origin, path, value);
        return AMI_E_CONFIG;
    }
    for (size_t i = 0; i < sizeof units / sizeof units [0]; i++) {
        if (strcmp (p, units [i].suffix) != 0)
            continue;
        errno = 0;
        long long n = strtoll (value, NULL, 10);
        if (errno == ERANGE || n > INT64_MAX / units [i].ms) {
            ami_log_error ("config %s: %s = '" LOGV "': duration too large",
                           self->origin, path, value);
            return AMI_E_CONFIG;
        }
        *out = (int64_t) n * units [i].ms;
        return AMI_OK;
    }
    ami_log_error ("config %s: %s = '" LOGV "': not a duration "
                   "(e.g. 250ms, 5s, 2m, 1h)", self->origin, path, value);
    return AMI_E_CONFIG;
}


//  --------------------------------------------------------------------------
//  Known-key check

static bool
s_is_known (const char *path, const char *const *known)
{
    size_t plen = strlen (path);
    for (const char *const *k = known; *k; k++) {
        const char *entry = *k;
        size_t elen = strlen (entry);
        if (strcmp (path, entry) == 0)
            return true;
        //  "prefix/*" matches anything below prefix; "*" matches all
        if (elen >= 1 && entry [elen - 1] == '*'
        && (elen == 1 || entry [elen - 2] == '/')
        &&  strncmp (path, entry, elen - 1) == 0)
            return true;
        //  path is a section above a known entry
        if (elen > plen && strncmp (entry, path, plen) == 0 && entry [plen] == '/')
            return true;
    }
    return false;
}

static int
s_check_children (ami_config_t *self, zconfig_t *node, char *path, size_t len,
                  const char *const *known)
{
    for (zconfig_t *child = zconfig_child (node); child; child = zconfig_next (child)) {
        const char *name = zconfig_name (child);
        size_t nlen = strlen (name);
        size_t sep = len ? 1 : 0;
        if (len + sep + nlen > AMI_CONFIG_MAX_PATH) {
            ami_log_error ("config %s: key path too long under '" LOGV "'",
                           self->origin, path);
            return AMI_E_CONFIG;
        }
        if (sep)
            path [len] = '/';
        memcpy (path + len + sep, name, nlen + 1);
        if (!s_is_known (path, known)) {
            ami_log_error ("config %s: unknown key '" LOGV "' (a typo?)",
                           self->origin, path);
            return AMI_E_CONFIG;
        }
        int rc = s_check_children (self, child, path, len + sep + nlen, known);
        if (rc)
            return rc;
        path [len] = 0;
    }
    return AMI_OK;
}

int
ami_config_check_known (ami_config_t *self, const char *const *known_paths)
{
    assert (self);
    assert (known_paths);
    char path [AMI_CONFIG_MAX_PATH + 1] = "";
    return s_check_children (self, self->root, path, 0, known_paths);
}

char *
ami_config_beside_exe (const char *relative)
{
    assert (relative);
    char exe [PATH_MAX];
    ssize_t n = readlink ("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe [n] = '\0';
    char *slash = strrchr (exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    char *path = zsys_sprintf ("%s/%s", exe, relative);
    if (path && access (path, F_OK) != 0)
        zstr_free (&path);
    return path;
}

int
ami_config_size (ami_config_t *config, const char *key, size_t default_value, size_t *out)
{
    const char *text = NULL;
    ami_config_str (config, key, NULL, &text);
    if (!text || !*text) {
        *out = default_value;
        return AMI_OK;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long value = strtoull (text, &end, 10);
    unsigned shift = 0;
    if (end && *end) {
        switch (toupper ((unsigned char) *end)) {
            case 'K': shift = 10; break;
            case 'M': shift = 20; break;
            case 'G': shift = 30; break;
            case 'T': shift = 40; break;
            default:  shift = 64; break;        //  junk
        }
        end++;
    }
    //  digits first, at most one suffix, no overflow, at least 1 MiB (a
    //  buffer or a database map: less is a typo)
    if (!isdigit ((unsigned char) *text) || errno || shift == 64 || (end && *end)
    ||  value > (SIZE_MAX >> shift) || (value << shift) < (1u << 20)) {
        ami_log_error ("%s: %s = '%s' is not a size of at least 1M (e.g. 512M, 1G)",
                       ami_config_origin (config), key, text);
        return AMI_E_CONFIG;
    }
    *out = (size_t) (value << shift);
    return AMI_OK;
}
