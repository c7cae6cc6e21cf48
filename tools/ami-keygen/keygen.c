/*  keygen.c - provisioning of an ami-bus deployment's keys (see keygen.h).

    Design: one pass that generates every key in memory-then-file order
    (nodes, operators, allow-lists from the in-memory certs, application
    keys, registry, topology.cfg last), and one independent pass (check)
    that trusts nothing init remembers: it re-reads topology.cfg and every
    file, so it also catches a deployment someone edited by hand. Files are
    written by ami_cert_save / ami_cert_save_public (atomic, exact modes) or
    by s_atomic_* below for the two text files.
*/
#include "keygen.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <ftw.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_config.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_meter_keys.h"

#define META_AMI_ROLE   "ami-role"
/* The MDMS signing key's files: one layout shared with the fleets
   (services/meter/ami_meter_keys.h). */
#define KEYGEN_SIGN_FILE        AMI_METER_KEYS_CURRENT
#define KEYGEN_SIGN_OLD_PREFIX  AMI_METER_KEYS_OLD_PREFIX
#define TOPOLOGY_FILE   "topology.cfg"
/* A problem list longer than this is noise: say how many more there were. */
#define MAX_REPORTED    50

static const char *const s_roles [] = { "VIEWER", "OPERATOR", "SECADM", "AUDITOR", NULL };

typedef struct {
    char id [AMI_MAX_ID + 1];
    char role [16];
} op_t;

/* A topology as validated (from the command line or topology.cfg). */
typedef struct {
    int headends, aggregators, fleets;
    uint32_t mpf;
    int op_count;
    op_t ops [KEYGEN_MAX_OPERATORS];
} topo_t;

/* One certificate holder: a node or an operator. */
typedef struct {
    char id [AMI_MAX_ID + 1];
    const char *role;           /* certificate role metadata */
    const char *ami_role;       /* operators only */
    bool operator;
    ami_cert_t *cert;           /* init: the generated cert */
    uint8_t pk [32];            /* check: the public key as found */
    bool pk_ok;
} holder_t;

typedef struct {
    holder_t *items;
    int count;
} holders_t;

/* ---------------------------------------------------------------------- */
/*  Small helpers                                                          */

static void
s_err (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fputs ("ami-keygen: ", stderr);
    vfprintf (stderr, fmt, args);
    fputc ('\n', stderr);
    va_end (args);
}

/* Heap-allocated printf; NULL only when out of memory. */
static char *
s_path (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    char *out = NULL;
    if (vasprintf (&out, fmt, args) < 0)
        out = NULL;
    va_end (args);
    return out;
}

static bool
s_ends_with (const char *text, const char *suffix)
{
    size_t tlen = strlen (text), slen = strlen (suffix);
    return tlen >= slen && strcmp (text + tlen - slen, suffix) == 0;
}

static zhashx_t *s_revoked_load (const char *dir);
static bool s_is_old_sign_name (const char *name);

static bool
s_exists (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0;
}

/* mkdir that accepts an existing directory (not a file, not a link). */
static int
s_mkdir (const char *path, mode_t mode)
{
    if (mkdir (path, mode) == 0) {
        //  mkdir honours the umask; the mode is the contract, so set it.
        if (chmod (path, mode) != 0) {
            s_err ("cannot set mode of %s: %s", path, strerror (errno));
            return -1;
        }
        return 0;
    }
    struct stat st;
    if (errno == EEXIST && lstat (path, &st) == 0 && S_ISDIR (st.st_mode))
        return 0;
    s_err ("cannot create directory %s: %s", path, strerror (errno));
    return -1;
}

/* mkdir -p for DIR itself (its parents get mode 0755, DIR gets mode). */
static int
s_mkdir_p (const char *path, mode_t mode)
{
    char *copy = strdup (path);
    if (!copy)
        return -1;
    int rc = 0;
    for (char *p = copy + 1; *p && rc == 0; p++)
        if (*p == '/') {
            *p = '\0';
            if (!s_exists (copy) && mkdir (copy, 0755) != 0 && errno != EEXIST) {
                s_err ("cannot create directory %s: %s", copy, strerror (errno));
                rc = -1;
            }
            *p = '/';
        }
    if (rc == 0)
        rc = s_mkdir (path, mode);
    free (copy);
    return rc;
}

static int
s_unlink_cb (const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void) st; (void) type; (void) ftw;
    if (remove (path) != 0) {
        s_err ("cannot remove %s: %s", path, strerror (errno));
        return -1;
    }
    return 0;
}

/* rm -r of path (no symlinks followed); a missing path is fine. */
static int
s_remove_tree (const char *path)
{
    if (!s_exists (path))
        return 0;
    //  64 open directories at most: the tree is at most 3 levels deep.
    return nftw (path, s_unlink_cb, 64, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

/* Create a hidden temporary file next to path; *tmp_out gets its name. */
static FILE *
s_atomic_open (const char *path, char **tmp_out)
{
    const char *slash = strrchr (path, '/');
    int dirlen = slash ? (int) (slash - path + 1) : 0;
    char *tmp = s_path ("%.*s.%s.tmp-XXXXXX", dirlen, path, slash ? slash + 1 : path);
    if (!tmp)
        return NULL;
    int fd = mkostemp (tmp, O_CLOEXEC);
    if (fd < 0) {
        s_err ("cannot create a file next to %s: %s", path, strerror (errno));
        free (tmp);
        return NULL;
    }
    FILE *file = fdopen (fd, "w");
    if (!file) {
        close (fd);
        unlink (tmp);
        free (tmp);
        return NULL;
    }
    *tmp_out = tmp;
    return file;
}

/* Flush, set mode, fsync, close and rename over path. Frees tmp. */
static int
s_atomic_commit (FILE *file, char *tmp, const char *path, mode_t mode)
{
    int rc = 0;
    if (fflush (file) != 0 || ferror (file) || fchmod (fileno (file), mode) != 0
    ||  fsync (fileno (file)) != 0)
        rc = -1;
    if (fclose (file) != 0)
        rc = -1;
    if (rc == 0 && rename (tmp, path) != 0)
        rc = -1;
    if (rc != 0) {
        s_err ("cannot write %s: %s", path, strerror (errno));
        unlink (tmp);
    }
    free (tmp);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  Validation                                                             */

bool
keygen_role_valid (const char *role)
{
    for (int i = 0; role && s_roles [i]; i++)
        if (strcmp (role, s_roles [i]) == 0)
            return true;
    return false;
}

bool
keygen_operator_id_valid (const char *id)
{
    size_t len = id ? strlen (id) : 0;
    if (len < 1 || len > AMI_MAX_ID)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id [i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* Is id one of the topology's node ids? (operators must not pose as one) */
static bool
s_is_node_id (const char *id)
{
    if (strcmp (id, "mdms") == 0 || strcmp (id, "broker") == 0)
        return true;
    const char *prefixes [] = { "headend-", "agg-", "fleet-", NULL };
    for (int i = 0; prefixes [i]; i++) {
        size_t n = strlen (prefixes [i]);
        if (strncmp (id, prefixes [i], n) == 0 && id [n] >= '0' && id [n] <= '9')
            return true;
    }
    return false;
}

static void
s_upper (char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'z')
            *s = (char) (*s - 'a' + 'A');
}

/* Add one operator to t (id and role checked, role upper-cased). */
static int
s_topo_add_op (topo_t *t, const char *id, const char *role_in, bool replace)
{
    char role [16];
    if (!keygen_operator_id_valid (id)) {
        s_err ("operator id '%s' is not valid: 1..%d characters of [A-Za-z0-9._-], "
               "starting with a letter or digit", id, AMI_MAX_ID);
        return KEYGEN_USAGE;
    }
    if (s_is_node_id (id)) {
        s_err ("operator id '%s' looks like a node id; choose another", id);
        return KEYGEN_USAGE;
    }
    if (strlen (role_in) >= sizeof role) {
        s_err ("operator role '%s' is not one of VIEWER, OPERATOR, SECADM, AUDITOR", role_in);
        return KEYGEN_USAGE;
    }
    snprintf (role, sizeof role, "%s", role_in);
    s_upper (role);
    if (!keygen_role_valid (role)) {
        s_err ("operator role '%s' is not one of VIEWER, OPERATOR, SECADM, AUDITOR", role_in);
        return KEYGEN_USAGE;
    }
    for (int i = 0; i < t->op_count; i++)
        if (strcmp (t->ops [i].id, id) == 0) {
            if (!replace) {
                s_err ("operator '%s' is listed twice", id);
                return KEYGEN_USAGE;
            }
            snprintf (t->ops [i].role, sizeof t->ops [i].role, "%s", role);
            return KEYGEN_OK;
        }
    if (t->op_count >= KEYGEN_MAX_OPERATORS) {
        s_err ("too many operators (at most %d)", KEYGEN_MAX_OPERATORS);
        return KEYGEN_USAGE;
    }
    op_t *op = &t->ops [t->op_count++];
    snprintf (op->id, sizeof op->id, "%s", id);
    snprintf (op->role, sizeof op->role, "%s", role);
    return KEYGEN_OK;
}

/* Parse "id:ROLE,id:ROLE" into t. An empty list is allowed (no operator). */
static int
s_topo_parse_ops (topo_t *t, const char *list)
{
    char *copy = strdup (list);
    if (!copy)
        return KEYGEN_FAILED;
    int rc = KEYGEN_OK;
    char *save = NULL;
    for (char *item = strtok_r (copy, ",", &save); item && rc == KEYGEN_OK;
         item = strtok_r (NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        char *colon = strchr (item, ':');
        if (!colon) {
            s_err ("operator '%s' has no role: write id:ROLE, e.g. alice:OPERATOR", item);
            rc = KEYGEN_USAGE;
            break;
        }
        *colon = '\0';
        char *role = colon + 1;
        size_t n = strlen (role);
        while (n > 0 && role [n - 1] == ' ')
            role [--n] = '\0';
        rc = s_topo_add_op (t, item, role, false);
    }
    free (copy);
    return rc;
}

static int
s_topo_validate (const topo_t *t)
{
    if (t->headends < 1 || t->headends > KEYGEN_MAX_HEADENDS) {
        s_err ("--headends must be 1..%d", KEYGEN_MAX_HEADENDS);
        return KEYGEN_USAGE;
    }
    if (t->aggregators < 1 || t->aggregators > KEYGEN_MAX_AGGREGATORS) {
        s_err ("--aggregators must be 1..%d", KEYGEN_MAX_AGGREGATORS);
        return KEYGEN_USAGE;
    }
    if (t->fleets < t->aggregators || t->fleets > KEYGEN_MAX_FLEETS) {
        //  An aggregator without a fleet would have an empty allow-list,
        //  which ami_auth refuses at start (it would refuse every client).
        s_err ("--fleets must be %d..%d (at least one fleet per aggregator)",
               t->aggregators, KEYGEN_MAX_FLEETS);
        return KEYGEN_USAGE;
    }
    if (t->mpf < 1 || t->mpf > KEYGEN_MAX_METERS_PER
    ||  (uint64_t) t->mpf * (uint64_t) t->fleets > KEYGEN_MAX_METERS) {
        s_err ("--meters-per-fleet must be 1..%d, and at most %d meters in all",
               KEYGEN_MAX_METERS_PER, KEYGEN_MAX_METERS);
        return KEYGEN_USAGE;
    }
    return KEYGEN_OK;
}

void
keygen_topology_default (keygen_topology_t *topo)
{
    topo->headends = 2;
    topo->aggregators = 2;
    topo->fleets = 2;
    topo->meters_per_fleet = 100;
    topo->operators = KEYGEN_DEFAULT_OPERATORS;
}

/* ---------------------------------------------------------------------- */
/*  The topology's certificate holders and allow-lists                     */

static int
s_fleet_aggregator (const topo_t *t, int fleet)
{
    return ((fleet - 1) % t->aggregators) + 1;
}

static void
s_holders_destroy (holders_t *h)
{
    for (int i = 0; i < h->count; i++)
        ami_cert_destroy (&h->items [i].cert);
    free (h->items);
    h->items = NULL;
    h->count = 0;
}

/* Every node, then every operator. */
static int
s_holders_build (const topo_t *t, holders_t *h)
{
    int total = 2 + t->headends + t->aggregators + t->fleets + t->op_count;
    h->items = calloc ((size_t) total, sizeof *h->items);
    h->count = 0;
    if (!h->items)
        return KEYGEN_FAILED;
#define ADD(role_, ...) do { holder_t *x = &h->items [h->count++]; x->role = role_; \
        snprintf (x->id, sizeof x->id, __VA_ARGS__); } while (0)
    ADD ("mdms", "mdms");
    ADD ("broker", "broker");
    for (int i = 1; i <= t->headends; i++)
        ADD ("headend", "headend-%d", i);
    for (int i = 1; i <= t->aggregators; i++)
        ADD ("aggregator", "agg-%d", i);
    for (int i = 1; i <= t->fleets; i++)
        ADD ("meter", "fleet-%d", i);
    for (int i = 0; i < t->op_count; i++) {
        ADD ("operator", "%s", t->ops [i].id);
        h->items [h->count - 1].operator = true;
        h->items [h->count - 1].ami_role = t->ops [i].role;
    }
#undef ADD
    return KEYGEN_OK;
}

/* Does server's allow-list hold this holder? (the table in keygen.h) */
static bool
s_allowed (const topo_t *t, const char *server, const holder_t *peer)
{
    if (strcmp (server, "broker") == 0)
        return !peer->operator && (strcmp (peer->role, "mdms") == 0 || strcmp (peer->role, "headend") == 0);
    if (strcmp (server, "mdms") == 0)
        return peer->operator || strcmp (peer->role, "headend") == 0;
    if (strncmp (server, "headend-", 8) == 0)
        return !peer->operator && strcmp (peer->role, "aggregator") == 0;
    if (strncmp (server, "agg-", 4) == 0) {
        if (peer->operator || strcmp (peer->role, "meter") != 0)
            return false;
        int fleet = atoi (peer->id + 6);        //  "fleet-N"
        return s_fleet_aggregator (t, fleet) == atoi (server + 4);
    }
    return false;
}

static bool
s_is_server (const holder_t *x)
{
    return !x->operator && strcmp (x->role, "meter") != 0;
}

/* ---------------------------------------------------------------------- */
/*  topology.cfg                                                           */

static int
s_topo_write (const char *dir, const topo_t *t)
{
    char *path = s_path ("%s/%s", dir, TOPOLOGY_FILE), *tmp = NULL;
    if (!path)
        return KEYGEN_FAILED;
    FILE *file = s_atomic_open (path, &tmp);
    if (!file) {
        free (path);
        return KEYGEN_FAILED;
    }
    fprintf (file,
             "#   ami-keygen: what this key directory was provisioned for. Written by\n"
             "#   `ami-keygen init` and `ami-keygen operator`, read by `ami-keygen check`.\n"
             "#   Do not edit: re-run ami-keygen instead.\n"
             "topology\n"
             "    headends = %d\n"
             "    aggregators = %d\n"
             "    fleets = %d\n"
             "    meters-per-fleet = %u\n"
             "operators\n",
             t->headends, t->aggregators, t->fleets, t->mpf);
    for (int i = 0; i < t->op_count; i++)
        fprintf (file, "    %s = %s\n", t->ops [i].id, t->ops [i].role);
    int rc = s_atomic_commit (file, tmp, path, 0644) ? KEYGEN_FAILED : KEYGEN_OK;
    free (path);
    return rc;
}

static int
s_topo_read (const char *dir, topo_t *t)
{
    memset (t, 0, sizeof *t);
    char *path = s_path ("%s/%s", dir, TOPOLOGY_FILE);
    if (!path)
        return KEYGEN_FAILED;
    int err = 0, rc = KEYGEN_FAILED;
    ami_config_t *config = ami_config_load (path, &err);
    int64_t h = 0, a = 0, f = 0, m = 0;
    if (!config)
        s_err ("cannot read %s (%s)", path, ami_strerror (err));
    else
    if (ami_config_int (config, "topology/headends", 0, 1, KEYGEN_MAX_HEADENDS, &h)
    ||  ami_config_int (config, "topology/aggregators", 0, 1, KEYGEN_MAX_AGGREGATORS, &a)
    ||  ami_config_int (config, "topology/fleets", 0, 1, KEYGEN_MAX_FLEETS, &f)
    ||  ami_config_int (config, "topology/meters-per-fleet", 0, 1, KEYGEN_MAX_METERS_PER, &m))
        s_err ("%s: bad topology value", path);
    else {
        t->headends = (int) h;
        t->aggregators = (int) a;
        t->fleets = (int) f;
        t->mpf = (uint32_t) m;
        rc = s_topo_validate (t) == KEYGEN_OK ? KEYGEN_OK : KEYGEN_FAILED;
        zconfig_t *ops = zconfig_locate (ami_config_zconfig (config), "operators");
        for (zconfig_t *c = ops ? zconfig_child (ops) : NULL; c && rc == KEYGEN_OK; c = zconfig_next (c)) {
            const char *value = zconfig_value (c);
            if (s_topo_add_op (t, zconfig_name (c), value ? value : "", false) != KEYGEN_OK)
                rc = KEYGEN_FAILED;
        }
        if (rc != KEYGEN_OK)
            s_err ("%s: invalid topology", path);
    }
    ami_config_destroy (&config);
    free (path);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  Synthetic customers                                                    */

/*  Small invented lists: combinations, not people. Some names and places
    carry non-ASCII letters so the registry's UTF-8 path is exercised. None
    holds a TAB, '#', or a control character (meters.tsv syntax). */
static const char *const s_first_names [] = {
    "Anna", "Ben", "Clara", "David", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Karin", "Luca", "Maja", "Nils", "Olga", "Paul", "Renée", "Sami", "Tereza", "Uwe",
    "Vera", "Wim", "Yara", "Zoë", "Jörg", "Åsa", "Luís", "Chloé", "Mehmet", "Ingrid",
    "Tomasz", "Aino"
};
static const char *const s_surnames [] = {
    "Achterberg", "Brandt", "Castell", "Dahlke", "Engström", "Falk", "Gruber", "Hoffmann",
    "Iversen", "Jansen", "Kowalski", "Lindqvist", "Meier", "Novak", "Ortmann", "Petersen",
    "Quast", "Richter", "Schäfer", "Thalberg", "Unger", "Vogel", "Weber", "Yilmaz",
    "Zimmermann", "Bauer", "Krüger", "Lange", "Moreau", "Nyström", "Øster", "Pereira"
};
static const char *const s_streets [] = {
    "Lindenweg", "Am Mühlbach", "Birkenallee", "Gartenstraße", "Hafenstraße",
    "Kirchplatz", "Lerchenfeld", "Marktgasse", "Nordring", "Obstwiese", "Parkstraße",
    "Quellenweg", "Rosenhang", "Schulstraße", "Talblick", "Uferpromenade",
    "Weidenstieg", "Zum Sportplatz", "Ahornring", "Brunnenhof", "Drosselgang",
    "Eichenkamp", "Feldrain", "Heideweg"
};
/*  Invented towns, postcodes in a range no real town uses as a set. */
static const char *const s_towns [] = {
    "10001 Altenfeld", "10002 Birkenhain", "10003 Dornau", "10004 Elmshagen",
    "10005 Fischbeck am See", "10006 Grünwalde", "10007 Hollerbrück", "10008 Kranichtal"
};
#define S_COUNT(a) (sizeof (a) / sizeof (a) [0])

/*  MurmurHash3's 32-bit finaliser: spreads consecutive meter numbers over
    the lists, so neighbouring meters do not share names in order. */
static uint32_t
s_mix (uint32_t x)
{
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

void
keygen_customer (uint32_t number, char name [AMI_MAX_CUSTOMER_NAME + 1],
                 char address [AMI_MAX_TEXT + 1], char account [AMI_MAX_ID + 1])
{
    //  a distinct salt per field (the golden ratio's bits), so the fields
    //  vary independently of each other
    uint32_t h1 = s_mix (number), h2 = s_mix (number ^ 0x9e3779b9u),
             h3 = s_mix (number + 0x3c6ef372u), h4 = s_mix (number * 3u + 0xdaa66d2bu);
    snprintf (name, AMI_MAX_CUSTOMER_NAME + 1, "%s %s", s_first_names [h1 % S_COUNT (s_first_names)],
              s_surnames [h2 % S_COUNT (s_surnames)]);
    //  house numbers 1..199: a street, not a tower block
    snprintf (address, AMI_MAX_TEXT + 1, "%s %u, %s", s_streets [h3 % S_COUNT (s_streets)],
              1 + (h4 >> 8) % 199, s_towns [h4 % S_COUNT (s_towns)]);
    snprintf (account, AMI_MAX_ID + 1, "ACC-%08u", number);
}

/*  The meters.tsv line of meter `number` (with its newline) into out. */
static void
s_registry_line (char *out, size_t cap, uint32_t number, int fleet, int agg, const char *pk_hex)
{
    char name [AMI_MAX_CUSTOMER_NAME + 1], address [AMI_MAX_TEXT + 1], account [AMI_MAX_ID + 1];
    keygen_customer (number, name, address, account);
    snprintf (out, cap, "MTR-%06u\tfleet-%d\tagg-%d\t%s\t%s\t%s\t%s\n",
              number, fleet, agg, pk_hex, name, address, account);
}

/* ---------------------------------------------------------------------- */
/*  init                                                                   */

static int
s_write_registry (const char *dir, const topo_t *t)
{
    char *path = s_path ("%s/app/meters.tsv", dir), *tmp = NULL;
    if (!path)
        return KEYGEN_FAILED;
    FILE *file = s_atomic_open (path, &tmp);
    if (!file) {
        free (path);
        return KEYGEN_FAILED;
    }
    int rc = KEYGEN_OK;
    for (int fleet = 1; fleet <= t->fleets && rc == KEYGEN_OK; fleet++) {
        uint8_t seed [AMI_E2E_SEED_SIZE];
        char *fleet_path = s_path ("%s/app/fleet-%d.cert", dir, fleet);
        //  Read the secret back from disk rather than keep it: what the
        //  fleet will load is what the registry is derived from.
        int err = fleet_path ? ami_e2e_kdf_load (fleet_path, seed) : AMI_E_NOMEM;
        free (fleet_path);
        if (err) {
            s_err ("cannot load fleet-%d's secret (%s)", fleet, ami_strerror (err));
            rc = KEYGEN_FAILED;
            break;
        }
        int agg = s_fleet_aggregator (t, fleet);
        for (uint32_t k = 1; k <= t->mpf; k++) {
            uint32_t number = (uint32_t) (fleet - 1) * t->mpf + k;
            uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
            char hex [2 * AMI_E2E_SIGN_PK_SIZE + 1];
            char line [KEYGEN_REGISTRY_LINE_MAX];
            ami_e2e_meter_keypair (seed, number, pk, NULL);
            sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
            s_registry_line (line, sizeof line, number, fleet, agg, hex);
            fputs (line, file);
        }
        sodium_memzero (seed, sizeof seed);
    }
    //  0600: it holds customer names and addresses (SEC-CONF-2), and the
    //  MDMS refuses to import customer columns from a file others can read
    if (rc == KEYGEN_OK)
        rc = s_atomic_commit (file, tmp, path, 0600) ? KEYGEN_FAILED : KEYGEN_OK;
    else {
        fclose (file);
        unlink (tmp);
        free (tmp);
    }
    free (path);
    return rc;
}

/* Copy the MDMS application keys' public halves into app/mdms-pub. */
static int
s_copy_mdms_public (const char *dir)
{
    const char *names [] = { "mdms-sign.cert", "mdms-box.cert", NULL };
    for (int i = 0; names [i]; i++) {
        char *from = s_path ("%s/app/%s", dir, names [i]);
        char *to = s_path ("%s/app/mdms-pub/%s", dir, names [i]);
        int err = AMI_E_NOMEM;
        ami_cert_t *cert = from ? ami_cert_load_public (from, &err) : NULL;
        if (cert)
            err = to ? ami_cert_save_public (cert, to) : AMI_E_NOMEM;
        ami_cert_destroy (&cert);
        free (from);
        free (to);
        if (err) {
            s_err ("cannot install the MDMS public key %s (%s)", names [i], ami_strerror (err));
            return KEYGEN_FAILED;
        }
    }
    return KEYGEN_OK;
}

static int
s_wipe (const char *dir)
{
    const char *parts [] = { "nodes", "operators", "allow", "app", TOPOLOGY_FILE, NULL };
    for (int i = 0; parts [i]; i++) {
        char *path = s_path ("%s/%s", dir, parts [i]);
        int rc = path ? s_remove_tree (path) : -1;
        free (path);
        if (rc)
            return KEYGEN_FAILED;
    }
    return KEYGEN_OK;
}

/* Check one allow-list directory the way ami_auth_new will. */
static int
s_check_allow_dir (const char *path, size_t expected)
{
    size_t count = 0;
    int err = ami_auth_check_dir (path, &count);
    if (err) {
        s_err ("%s: not a valid allow-list (%s)", path, ami_strerror (err));
        return KEYGEN_FAILED;
    }
    if (count != expected) {
        s_err ("%s: holds %zu certificate(s), expected %zu", path, count, expected);
        return KEYGEN_FAILED;
    }
    return KEYGEN_OK;
}

static int
s_init_certs (const char *dir, const topo_t *t, holders_t *h)
{
    //  1. every node's and operator's transport keypair
    for (int i = 0; i < h->count; i++) {
        holder_t *x = &h->items [i];
        int err = 0;
        x->cert = ami_cert_new (x->role, x->id, &err);
        if (x->cert && x->operator)
            err = ami_cert_set_meta (x->cert, META_AMI_ROLE, x->ami_role);
        char *path = s_path ("%s/%s/%s.cert", dir, x->operator ? "operators" : "nodes", x->id);
        if (x->cert && !err)
            err = path ? ami_cert_save (x->cert, path) : AMI_E_NOMEM;
        free (path);
        if (!x->cert || err) {
            s_err ("cannot create the certificate of %s (%s)", x->id, ami_strerror (err));
            return KEYGEN_FAILED;
        }
    }
    //  2. every server's allow-list, from the certs just made
    for (int i = 0; i < h->count; i++) {
        holder_t *server = &h->items [i];
        if (!s_is_server (server))
            continue;
        char *sdir = s_path ("%s/allow/%s", dir, server->id);
        if (!sdir || s_mkdir (sdir, 0755)) {
            free (sdir);
            return KEYGEN_FAILED;
        }
        size_t expected = 0;
        int rc = KEYGEN_OK;
        for (int j = 0; j < h->count && rc == KEYGEN_OK; j++) {
            holder_t *peer = &h->items [j];
            if (!s_allowed (t, server->id, peer))
                continue;
            char *path = s_path ("%s/%s.cert", sdir, peer->id);
            int err = path ? ami_cert_save_public (peer->cert, path) : AMI_E_NOMEM;
            if (err) {
                s_err ("cannot install %s into %s (%s)", peer->id, sdir, ami_strerror (err));
                rc = KEYGEN_FAILED;
            }
            free (path);
            expected++;
        }
        if (rc == KEYGEN_OK)
            rc = s_check_allow_dir (sdir, expected);
        free (sdir);
        if (rc)
            return rc;
    }
    return KEYGEN_OK;
}

int
keygen_init (const char *dir, const keygen_topology_t *in, bool force)
{
    topo_t *t = calloc (1, sizeof *t);
    if (!t)
        return KEYGEN_FAILED;
    t->headends = in->headends;
    t->aggregators = in->aggregators;
    t->fleets = in->fleets;
    t->mpf = in->meters_per_fleet;
    int rc = s_topo_validate (t);
    if (rc == KEYGEN_OK)
        rc = s_topo_parse_ops (t, in->operators ? in->operators : KEYGEN_DEFAULT_OPERATORS);
    if (rc != KEYGEN_OK) {
        free (t);
        return rc;
    }
    if (sodium_init () < 0) {
        free (t);
        return KEYGEN_FAILED;
    }
    holders_t h = { 0 };
    char *nodes = s_path ("%s/nodes", dir);
    char *operators = s_path ("%s/operators", dir);
    char *app = s_path ("%s/app", dir);
    char *mdms_pub = s_path ("%s/app/mdms-pub", dir);
    char *allow = s_path ("%s/allow", dir);
    if (!nodes || !operators || !app || !mdms_pub || !allow)
        rc = KEYGEN_FAILED;
    else
    if (s_mkdir_p (dir, 0700))
        rc = KEYGEN_FAILED;
    else
    if (s_exists (nodes) && !force) {
        s_err ("%s already exists: this directory is provisioned "
               "(use --force to replace every key in it)", nodes);
        rc = KEYGEN_EXISTS;
    }
    else
    if (force && s_wipe (dir))
        rc = KEYGEN_FAILED;
    else
    if (s_mkdir (nodes, 0700) || s_mkdir (operators, 0700) || s_mkdir (app, 0700)
    ||  s_mkdir (mdms_pub, 0755) || s_mkdir (allow, 0755))
        rc = KEYGEN_FAILED;
    else
        rc = s_holders_build (t, &h);

    if (rc == KEYGEN_OK)
        rc = s_init_certs (dir, t, &h);
    if (rc == KEYGEN_OK) {
        int err = ami_e2e_mdms_generate (app, "mdms");
        if (err) {
            s_err ("cannot create the MDMS application keys (%s)", ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    if (rc == KEYGEN_OK)
        rc = s_copy_mdms_public (dir);
    if (rc == KEYGEN_OK) {
        //  The MDMS data key: a kdf secret like a fleet's (the MDMS derives
        //  its audit and customer-encryption keys from it); in app/, never
        //  in app/mdms-pub/.
        char *path = s_path ("%s/app/%s", dir, KEYGEN_DATA_KEY);
        int err = path ? ami_e2e_kdf_generate (path, "mdms", "mdms") : AMI_E_NOMEM;
        free (path);
        if (err) {
            s_err ("cannot create the MDMS data key (%s)", ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    for (int fleet = 1; fleet <= t->fleets && rc == KEYGEN_OK; fleet++) {
        char *path = s_path ("%s/app/fleet-%d.cert", dir, fleet);
        char id [AMI_MAX_ID + 1];
        snprintf (id, sizeof id, "fleet-%d", fleet);
        int err = path ? ami_e2e_kdf_generate (path, "meter", id) : AMI_E_NOMEM;
        free (path);
        if (err) {
            s_err ("cannot create the secret of %s (%s)", id, ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    if (rc == KEYGEN_OK)
        rc = s_write_registry (dir, t);
    //  Last: a directory with topology.cfg is a complete one.
    if (rc == KEYGEN_OK)
        rc = s_topo_write (dir, t);
    if (rc == KEYGEN_OK)
        printf ("ami-keygen: provisioned %s: %d nodes, %d operator(s), %u meters in %d fleets\n",
                dir, 2 + t->headends + t->aggregators + t->fleets, t->op_count,
                t->mpf * (uint32_t) t->fleets, t->fleets);
    else
    if (rc == KEYGEN_FAILED)
        s_err ("provisioning %s failed; fix the cause and re-run with --force", dir);
    s_holders_destroy (&h);
    free (nodes);
    free (operators);
    free (app);
    free (mdms_pub);
    free (allow);
    free (t);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  check                                                                  */

typedef struct {
    int problems;
} report_t;

static void
s_problem (report_t *r, const char *fmt, ...)
{
    if (r->problems++ >= MAX_REPORTED)
        return;
    va_list args;
    va_start (args, fmt);
    fputs ("ami-keygen: check: ", stderr);
    vfprintf (stderr, fmt, args);
    fputc ('\n', stderr);
    va_end (args);
}

/* A secret file: regular (not a link), mode exactly 0600. */
static void
s_check_secret_mode (report_t *r, const char *secret)
{
    struct stat st;
    if (lstat (secret, &st) != 0)
        s_problem (r, "%s: missing", secret);
    else
    if (!S_ISREG (st.st_mode))
        s_problem (r, "%s: not a regular file", secret);
    else
    if ((st.st_mode & 07777) != 0600)
        s_problem (r, "%s: mode %04o, expected 0600", secret, (unsigned) (st.st_mode & 07777));
}

/* A public file: present and not writable by group or others. */
static void
s_check_public_mode (report_t *r, const char *path)
{
    struct stat st;
    if (lstat (path, &st) != 0)
        s_problem (r, "%s: missing", path);
    else
    if (!S_ISREG (st.st_mode))
        s_problem (r, "%s: not a regular file", path);
    else
    if (st.st_mode & 022)
        s_problem (r, "%s: writable by group or others", path);
}

/* A transport cert pair of a node or operator: records its public key. */
static void
s_check_holder (report_t *r, const char *dir, holder_t *x)
{
    char *path = s_path ("%s/%s/%s.cert", dir, x->operator ? "operators" : "nodes", x->id);
    char *secret = s_path ("%s_secret", path ? path : "");
    if (!path || !secret) {
        s_problem (r, "out of memory");
        free (path);
        free (secret);
        return;
    }
    s_check_secret_mode (r, secret);
    s_check_public_mode (r, path);
    int err = 0;
    ami_cert_t *cert = ami_cert_load (path, &err);
    ami_cert_t *pub = cert ? ami_cert_load_public (path, &err) : NULL;
    if (!cert || !pub)
        s_problem (r, "%s: cannot be loaded (%s)", path, ami_strerror (err));
    else {
        const char *ami_role = ami_cert_meta (cert, META_AMI_ROLE);
        if (strcmp (ami_cert_role (cert), x->role) != 0)
            s_problem (r, "%s: role '%s', expected '%s'", path, ami_cert_role (cert), x->role);
        if (strcmp (ami_cert_node_id (cert), x->id) != 0)
            s_problem (r, "%s: node-id '%s', expected '%s'", path, ami_cert_node_id (cert), x->id);
        if (strcmp (ami_cert_key_type (cert), AMI_CERT_KEY_CURVE) != 0)
            s_problem (r, "%s: key-type '%s', expected curve", path, ami_cert_key_type (cert));
        if (x->operator && (!ami_role || strcmp (ami_role, x->ami_role) != 0))
            s_problem (r, "%s: ami-role '%s', expected '%s'", path, ami_role ? ami_role : "",
                       x->ami_role);
        if (memcmp (ami_cert_public_key (cert), ami_cert_public_key (pub), 32) != 0)
            s_problem (r, "%s: public key does not match its secret file", path);
        else {
            memcpy (x->pk, ami_cert_public_key (pub), 32);
            x->pk_ok = true;
        }
    }
    ami_cert_destroy (&cert);
    ami_cert_destroy (&pub);
    free (path);
    free (secret);
}

/*  Old keys kept by rotate (<id>.old-*.cert): each must carry a valid
    "expires" still in the future, belong to a peer this server allows, and
    not be revoked. Returns how many there are (they count as expected). */
static size_t
s_check_old_keys (report_t *r, const char *sdir, const topo_t *t, holders_t *h,
                  const holder_t *server, zhashx_t *revoked)
{
    DIR *d = opendir (sdir);
    size_t found = 0;
    struct dirent *e;
    int64_t now = (int64_t) time (NULL);
    while (d && (e = readdir (d))) {
        if (e->d_name [0] == '.' || !strstr (e->d_name, ".old-") || s_ends_with (e->d_name, "_secret"))
            continue;
        char *path = s_path ("%s/%s", sdir, e->d_name);
        int err = 0;
        ami_cert_t *cert = path ? ami_cert_load_public (path, &err) : NULL;
        if (cert) {
            found++;
            const char *text = ami_cert_meta (cert, AMI_AUTH_META_EXPIRES);
            int64_t expires = 0;
            bool known = false;
            for (int j = 0; j < h->count; j++)
                known = known || (s_allowed (t, server->id, &h->items [j])
                                  && strcmp (h->items [j].id, ami_cert_node_id (cert)) == 0);
            if (!text || !ami_auth_parse_expires (text, &expires))
                s_problem (r, "%s: an old key without a valid expires", path);
            else
            if (expires <= now)
                s_problem (r, "%s: expired (Unix %" PRId64 "): run ami-keygen prune", path, expires);
            if (!known)
                s_problem (r, "%s: key of '%s', which this allow-list must not hold", path,
                           ami_cert_node_id (cert));
            if (revoked && zhashx_lookup (revoked, ami_cert_public_txt (cert)))
                s_problem (r, "%s: a REVOKED key is still listed", path);
        }
        ami_cert_destroy (&cert);
        free (path);
    }
    if (d)
        closedir (d);
    return found;
}

static void
s_check_allow (report_t *r, const char *dir, const topo_t *t, holders_t *h, const holder_t *server,
               zhashx_t *revoked)
{
    char *sdir = s_path ("%s/allow/%s", dir, server->id);
    if (!sdir)
        return;
    size_t count = 0, expected = 0;
    int dir_err = ami_auth_check_dir (sdir, &count), err = 0;
    if (dir_err)
        s_problem (r, "%s: not a valid allow-list (%s)", sdir, ami_strerror (dir_err));
    expected += s_check_old_keys (r, sdir, t, h, server, revoked);
    for (int j = 0; j < h->count; j++) {
        holder_t *peer = &h->items [j];
        if (!s_allowed (t, server->id, peer))
            continue;
        char *path = s_path ("%s/%s.cert", sdir, peer->id);
        if (peer->pk_ok && revoked) {
            char z85 [AMI_CERT_KEY_TXT_LEN + 1];
            zmq_z85_encode (z85, peer->pk, 32);
            if (zhashx_lookup (revoked, z85)) {
                //  revoked: must be absent (revoke removed it)
                if (path && s_exists (path))
                    s_problem (r, "%s: %s's key is REVOKED (%s) but still listed", path,
                               peer->id, KEYGEN_REVOKED_FILE);
                free (path);
                continue;
            }
        }
        expected++;
        ami_cert_t *cert = path ? ami_cert_load_public (path, &err) : NULL;
        if (!cert)
            s_problem (r, "%s: missing or invalid", path ? path : sdir);
        else
        if (peer->pk_ok && memcmp (ami_cert_public_key (cert), peer->pk, 32) != 0)
            s_problem (r, "%s: key differs from %s's own certificate", path, peer->id);
        ami_cert_destroy (&cert);
        free (path);
    }
    if (!dir_err && count != expected)
        s_problem (r, "%s: holds %zu certificate(s), expected %zu", sdir, count, expected);
    free (sdir);
}

static void
s_check_app (report_t *r, const char *dir, const topo_t *t)
{
    char *app = s_path ("%s/app", dir);
    char *pubdir = s_path ("%s/app/mdms-pub", dir);
    if (!app || !pubdir) {
        free (app);
        free (pubdir);
        return;
    }
    const char *names [] = { "mdms-sign.cert_secret", "mdms-box.cert_secret", NULL };
    for (int i = 0; names [i]; i++) {
        char *p = s_path ("%s/%s", app, names [i]);
        if (p)
            s_check_secret_mode (r, p);
        free (p);
    }
    ami_e2e_mdms_t *keys = calloc (2, sizeof *keys);
    if (keys) {
        int err = ami_e2e_mdms_load (&keys [0], app, true);
        int err2 = ami_e2e_mdms_load (&keys [1], pubdir, false);
        if (err)
            s_problem (r, "%s: MDMS application keys cannot be loaded (%s)", app, ami_strerror (err));
        if (err2)
            s_problem (r, "%s: MDMS public keys cannot be loaded (%s)", pubdir, ami_strerror (err2));
        if (!err && !err2
        &&  (memcmp (keys [0].sign_pk, keys [1].sign_pk, sizeof keys [0].sign_pk) != 0
          || memcmp (keys [0].box_pk, keys [1].box_pk, sizeof keys [0].box_pk) != 0))
            s_problem (r, "%s: public keys do not match the MDMS's secret keys", pubdir);
        ami_e2e_mdms_wipe (&keys [0]);
        free (keys);
    }

    //  Old MDMS signing keys kept by rotate mdms-sign: each an ed25519
    //  key with a valid expires still in the future, not the current key,
    //  and no more than fleets accept
    DIR *d = opendir (pubdir);
    struct dirent *e;
    int olds = 0;
    int64_t now = (int64_t) time (NULL);
    while (d && (e = readdir (d))) {
        if (!s_is_old_sign_name (e->d_name))
            continue;
        olds++;
        char *path = s_path ("%s/%s", pubdir, e->d_name);
        int perr = 0;
        ami_cert_t *cert = path ? ami_cert_load_public (path, &perr) : NULL;
        const char *text = cert ? ami_cert_meta (cert, AMI_AUTH_META_EXPIRES) : NULL;
        int64_t expires = 0;
        if (!cert)
            s_problem (r, "%s: not a valid certificate", path ? path : pubdir);
        else
        if (strcmp (ami_cert_key_type (cert), AMI_CERT_KEY_ED25519) != 0)
            s_problem (r, "%s: key-type '%s', expected ed25519", path, ami_cert_key_type (cert));
        else
        if (!text || !ami_auth_parse_expires (text, &expires))
            s_problem (r, "%s: an old signing key without a valid expires", path);
        else
        if (expires <= now)
            s_problem (r, "%s: expired (Unix %" PRId64 "): run ami-keygen prune", path, expires);
        else {
            ami_e2e_mdms_t *current = calloc (1, sizeof *current);
            if (current && ami_e2e_mdms_load (current, pubdir, false) == AMI_OK
            &&  memcmp (current->sign_pk, ami_cert_public_key (cert), 32) == 0)
                s_problem (r, "%s: the current signing key kept as an old one", path);
            free (current);
        }
        ami_cert_destroy (&cert);
        free (path);
    }
    if (d)
        closedir (d);
    if (olds > AMI_METER_KEYS_MAX - 1)
        s_problem (r, "%s: %d old signing keys; fleets accept at most %d: run ami-keygen "
                   "prune", pubdir, olds, AMI_METER_KEYS_MAX - 1);

    //  The MDMS data key: a kdf secret of node-id mdms
    char *data = s_path ("%s/%s", app, KEYGEN_DATA_KEY);
    char *data_secret = s_path ("%s/%s_secret", app, KEYGEN_DATA_KEY);
    if (data && data_secret) {
        s_check_secret_mode (r, data_secret);
        s_check_public_mode (r, data);
        uint8_t key [AMI_E2E_SEED_SIZE], fingerprint [32];
        int err = ami_e2e_kdf_load (data, key);
        if (err)
            s_problem (r, "%s: MDMS data key cannot be loaded (%s)", data, ami_strerror (err));
        else {
            int perr = 0;
            ami_cert_t *pub = ami_cert_load_public (data, &perr);
            crypto_generichash (fingerprint, sizeof fingerprint, key, sizeof key, NULL, 0);
            if (!pub || memcmp (ami_cert_public_key (pub), fingerprint, 32) != 0)
                s_problem (r, "%s: public file does not match the secret", data);
            else
            if (strcmp (ami_cert_node_id (pub), "mdms") != 0)
                s_problem (r, "%s: node-id '%s', expected 'mdms'", data, ami_cert_node_id (pub));
            ami_cert_destroy (&pub);
        }
        sodium_memzero (key, sizeof key);
    }
    free (data);
    free (data_secret);

    //  Fleet secrets, then the registry derived from them.
    uint8_t (*seeds) [AMI_E2E_SEED_SIZE] = calloc ((size_t) t->fleets, AMI_E2E_SEED_SIZE);
    bool *seed_ok = calloc ((size_t) t->fleets, sizeof (bool));
    for (int f = 1; seeds && seed_ok && f <= t->fleets; f++) {
        char *path = s_path ("%s/fleet-%d.cert", app, f);
        char *secret = s_path ("%s/fleet-%d.cert_secret", app, f);
        if (path && secret) {
            s_check_secret_mode (r, secret);
            s_check_public_mode (r, path);
            int err = ami_e2e_kdf_load (path, seeds [f - 1]);
            if (err)
                s_problem (r, "%s: fleet secret cannot be loaded (%s)", path, ami_strerror (err));
            else {
                int perr = 0;
                uint8_t fingerprint [32];
                ami_cert_t *pub = ami_cert_load_public (path, &perr);
                crypto_generichash (fingerprint, sizeof fingerprint, seeds [f - 1],
                                    AMI_E2E_SEED_SIZE, NULL, 0);
                if (!pub || memcmp (ami_cert_public_key (pub), fingerprint, 32) != 0)
                    s_problem (r, "%s: public file does not match the secret", path);
                else
                    seed_ok [f - 1] = true;
                ami_cert_destroy (&pub);
            }
        }
        free (path);
        free (secret);
    }
    char *tsv = s_path ("%s/meters.tsv", app);
    //  Customer data (SEC-CONF-2): private like a secret, or the MDMS
    //  refuses it
    struct stat st;
    if (tsv && lstat (tsv, &st) == 0 && S_ISREG (st.st_mode) && (st.st_mode & 077))
        s_problem (r, "%s: mode %04o, expected 0600: it holds customer names and addresses "
                   "(the MDMS refuses to import it; chmod 600 %s)", tsv,
                   (unsigned) (st.st_mode & 07777), tsv);
    FILE *file = tsv ? fopen (tsv, "r") : NULL;
    if (!file)
        s_problem (r, "%s: cannot be read: %s", tsv ? tsv : "meters.tsv", strerror (errno));
    else
    if (seeds && seed_ok) {
        char *line = NULL;
        size_t cap = 0;
        uint64_t total = (uint64_t) t->mpf * (uint64_t) t->fleets, row = 0;
        int bad = 0;
        while (getline (&line, &cap, file) >= 0) {
            row++;
            if (row > total) {
                s_problem (r, "%s: more than the expected %" PRIu64 " lines", tsv, total);
                break;
            }
            uint32_t number = (uint32_t) row;
            int fleet = (int) ((number - 1) / t->mpf) + 1;
            char expect [KEYGEN_REGISTRY_LINE_MAX], hex [2 * AMI_E2E_SIGN_PK_SIZE + 1] = "?";
            if (seed_ok [fleet - 1]) {
                uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
                ami_e2e_meter_keypair (seeds [fleet - 1], number, pk, NULL);
                sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
            }
            s_registry_line (expect, sizeof expect, number, fleet,
                             s_fleet_aggregator (t, fleet), hex);
            if (seed_ok [fleet - 1] && strcmp (line, expect) != 0 && bad++ < 3)
                s_problem (r, "%s line %" PRIu64 ": expected MTR-%06u of fleet-%d with the key "
                           "its fleet secret derives and its customer columns", tsv, row,
                           number, fleet);
        }
        if (bad > 3)
            s_problem (r, "%s: %d lines in all do not match", tsv, bad);
        if (row < total)
            s_problem (r, "%s: %" PRIu64 " lines, expected %" PRIu64, tsv, row, total);
        free (line);
    }
    if (file)
        fclose (file);
    if (seeds)
        sodium_memzero (seeds, (size_t) t->fleets * AMI_E2E_SEED_SIZE);
    free (seeds);
    free (seed_ok);
    free (tsv);
    free (app);
    free (pubdir);
}

int
keygen_check (const char *dir, bool quiet)
{
    char *topology = s_path ("%s/%s", dir, TOPOLOGY_FILE);
    char *nodes = s_path ("%s/nodes", dir);
    if (!topology || !nodes) {
        free (topology);
        free (nodes);
        return KEYGEN_FAILED;
    }
    bool have_topology = s_exists (topology), have_nodes = s_exists (nodes);
    free (topology);
    free (nodes);
    if (!have_topology) {
        if (have_nodes) {
            s_err ("%s is incomplete (no %s: an interrupted init?); "
                   "re-run ami-keygen init --force", dir, TOPOLOGY_FILE);
            return KEYGEN_FAILED;
        }
        if (!quiet)
            s_err ("%s is not provisioned: run ami-keygen init %s", dir, dir);
        return KEYGEN_ABSENT;
    }
    if (sodium_init () < 0)
        return KEYGEN_FAILED;
    topo_t *t = calloc (1, sizeof *t);
    if (!t)
        return KEYGEN_FAILED;
    if (s_topo_read (dir, t)) {
        free (t);
        return KEYGEN_FAILED;
    }
    holders_t h = { 0 };
    report_t r = { 0 };
    if (s_holders_build (t, &h)) {
        free (t);
        return KEYGEN_FAILED;
    }
    for (int i = 0; i < h.count; i++)
        s_check_holder (&r, dir, &h.items [i]);
    zhashx_t *revoked = s_revoked_load (dir);
    for (int i = 0; i < h.count; i++)
        if (s_is_server (&h.items [i]))
            s_check_allow (&r, dir, t, &h, &h.items [i], revoked);
    zhashx_destroy (&revoked);
    s_check_app (&r, dir, t);

    if (r.problems > MAX_REPORTED)
        s_err ("check: ... and %d more problem(s)", r.problems - MAX_REPORTED);
    int rc = KEYGEN_OK;
    if (r.problems) {
        s_err ("%s: %d problem(s); re-provision with ami-keygen init --force", dir, r.problems);
        rc = KEYGEN_FAILED;
    }
    else
    if (!quiet)
        printf ("ami-keygen: %s is complete: %d nodes, %d operator(s), %u meters\n", dir,
                2 + t->headends + t->aggregators + t->fleets, t->op_count,
                t->mpf * (uint32_t) t->fleets);
    s_holders_destroy (&h);
    free (t);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  operator                                                               */

/*  A running MDMS's zauth re-reads its allow-list directory when the file
    count, the total size or the newest mtime changed, the mtime in whole
    seconds. Replacing a key (same count, same size) within the second of
    the directory's newest change would go unnoticed and the old key would
    stay valid. So, before replacing, wait until the clock has moved past
    the newest mtime in the directory (at most about a second). */
static void
s_wait_for_new_second (const char *dir)
{
    char *path = s_path ("%s/allow/mdms", dir);
    zdir_t *allow = path ? zdir_new (path, NULL) : NULL;
    time_t newest = allow ? zdir_modified (allow) : 0;
    zdir_destroy (&allow);
    free (path);
    //  bounded: 30 x 50 ms, in case the clock is odd
    for (int i = 0; i < 30 && time (NULL) <= newest; i++)
        zclock_sleep (50);
}

int
keygen_operator (const char *dir, const char *id, const char *role, bool force)
{
    topo_t *t = calloc (1, sizeof *t);
    if (!t)
        return KEYGEN_FAILED;
    char *topology = s_path ("%s/%s", dir, TOPOLOGY_FILE);
    bool provisioned = topology && s_exists (topology);
    free (topology);
    if (!provisioned) {
        s_err ("%s is not provisioned: run ami-keygen init %s first", dir, dir);
        free (t);
        return KEYGEN_ABSENT;
    }
    int rc = s_topo_read (dir, t);
    bool exists = false;
    for (int i = 0; rc == KEYGEN_OK && i < t->op_count; i++)
        exists = exists || strcmp (t->ops [i].id, id) == 0;
    char *path = s_path ("%s/operators/%s.cert", dir, id);
    char *allow = s_path ("%s/allow/mdms/%s.cert", dir, id);
    if (rc == KEYGEN_OK && (!path || !allow))
        rc = KEYGEN_FAILED;
    if (rc == KEYGEN_OK)
        rc = s_topo_add_op (t, id, role, true);
    if (rc == KEYGEN_OK && (exists || s_exists (path)) && !force) {
        s_err ("operator %s exists (use --force to replace its key)", id);
        rc = KEYGEN_EXISTS;
    }
    ami_cert_t *cert = NULL;
    if (rc == KEYGEN_OK && sodium_init () < 0)
        rc = KEYGEN_FAILED;
    if (rc == KEYGEN_OK && s_exists (allow))
        s_wait_for_new_second (dir);
    if (rc == KEYGEN_OK) {
        int err = 0;
        const char *ami_role = NULL;
        for (int i = 0; i < t->op_count; i++)
            if (strcmp (t->ops [i].id, id) == 0)
                ami_role = t->ops [i].role;
        cert = ami_cert_new ("operator", id, &err);
        if (cert)
            err = ami_cert_set_meta (cert, META_AMI_ROLE, ami_role);
        if (cert && !err)
            err = ami_cert_save (cert, path);
        if (cert && !err)
            err = ami_cert_save_public (cert, allow);
        if (!cert || err) {
            s_err ("cannot create operator %s (%s)", id, ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    if (rc == KEYGEN_OK)
        rc = s_topo_write (dir, t);
    if (rc == KEYGEN_OK) {
        char *mdms_allow = s_path ("%s/allow/mdms", dir);
        size_t count = 0;
        int err = mdms_allow ? ami_auth_check_dir (mdms_allow, &count) : AMI_E_NOMEM;
        if (err) {
            s_err ("%s is not a valid allow-list any more (%s)", mdms_allow, ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
        free (mdms_allow);
    }
    if (rc == KEYGEN_OK)
        printf ("ami-keygen: operator %s (%s): %s, public key installed as %s\n",
                id, ami_cert_meta (cert, META_AMI_ROLE), path, allow);
    ami_cert_destroy (&cert);
    free (path);
    free (allow);
    free (t);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  rotate, prune, revoke                                                  */

/*  One certificate file of an allow-list, as read by s_allow_walk. */
typedef struct {
    const char *server;         /* allow-list name (DIR/allow/<server>) */
    const char *sdir;           /* DIR/allow/<server> */
    const char *name;           /* file name inside sdir */
    const char *path;           /* sdir/name */
    ami_cert_t *cert;           /* its public certificate */
} allow_file_t;

typedef int (allow_fn_t) (allow_file_t *file, void *arg);

/*  Call fn for every certificate file directly in every DIR/allow/<server>
    (the files keygen writes; hidden and "_secret" names are skipped, as
    zauth does). Files that are not certificates are reported and skipped.
    The walk reads each directory's listing first, so fn may rename or
    remove the file it is given. Stops at the first non-zero return. */
static int
s_allow_walk (const char *dir, allow_fn_t *fn, void *arg)
{
    char *allow = s_path ("%s/allow", dir);
    DIR *top = allow ? opendir (allow) : NULL;
    if (!top) {
        s_err ("cannot read %s: %s", allow ? allow : "allow", strerror (errno));
        free (allow);
        return KEYGEN_FAILED;
    }
    int rc = KEYGEN_OK;
    struct dirent *server;
    while (rc == KEYGEN_OK && (server = readdir (top))) {
        if (server->d_name [0] == '.')
            continue;
        char *sdir = s_path ("%s/%s", allow, server->d_name);
        zlist_t *names = zlist_new ();
        DIR *d = sdir && names ? opendir (sdir) : NULL;
        if (!d) {
            //  not a directory (or unreadable): nothing of ours
            zlist_destroy (&names);
            free (sdir);
            continue;
        }
        zlist_autofree (names);
        struct dirent *e;
        while ((e = readdir (d)))
            if (e->d_name [0] != '.' && !s_ends_with (e->d_name, "_secret"))
                zlist_append (names, e->d_name);
        closedir (d);
        zlist_sort (names, (zlist_compare_fn *) strcmp);
        for (char *name = zlist_first (names); name && rc == KEYGEN_OK; name = zlist_next (names)) {
            char *path = s_path ("%s/%s", sdir, name);
            struct stat st;
            if (!path || lstat (path, &st) != 0 || !S_ISREG (st.st_mode)) {
                free (path);
                continue;
            }
            int err = 0;
            allow_file_t file = { server->d_name, sdir, name, path,
                                  ami_cert_load_public (path, &err) };
            if (!file.cert)
                s_err ("%s is not a public certificate: skipped (it has no business "
                       "in an allow-list)", path);
            else
                rc = fn (&file, arg);
            ami_cert_destroy (&file.cert);
            free (path);
        }
        zlist_destroy (&names);
        free (sdir);
    }
    closedir (top);
    free (allow);
    return rc;
}

/* Is id a valid holder name (so it cannot escape DIR), and where is it? */
static char *
s_holder_cert_path (const char *dir, const char *id, bool *operator)
{
    if (!keygen_operator_id_valid (id))
        return NULL;
    char *path = s_path ("%s/nodes/%s.cert", dir, id);
    *operator = false;
    if (path && !s_exists (path)) {
        free (path);
        path = s_path ("%s/operators/%s.cert", dir, id);
        *operator = true;
        if (path && !s_exists (path)) {
            free (path);
            path = NULL;
        }
    }
    return path;
}

/* Clients of a server node, for the restart advice. */
static const char *
s_clients_of (const char *id)
{
    if (strcmp (id, "broker") == 0)
        return "mdms and every head end (they read nodes/broker.cert)";
    if (strcmp (id, "mdms") == 0)
        return "every head end (nodes/mdms.cert: headend/mdms-cert), every operator's "
               "amictl (amictl/mdms-cert) and every fleet (only if app/mdms-pub changed: "
               "it does not, rotate changes transport keys only)";
    if (strncmp (id, "headend-", 8) == 0)
        return "every aggregator (aggregator/headends/<name>/cert)";
    if (strncmp (id, "agg-", 4) == 0)
        return "the fleets of this aggregator (meter/aggregator-cert)";
    return NULL;
}

/*  The name of a free old-key file for stamp in directory sdir:
    BASE.old-<stamp>.cert, or BASE.old-<stamp>-N.cert. NULL if none. */
static char *
s_old_name (const char *sdir, const char *base, int64_t stamp)
{
    char *old_path = NULL;
    for (int n = 1; n < 100 && !old_path; n++) {
        old_path = n == 1 ? s_path ("%s/%s.old-%" PRId64 ".cert", sdir, base, stamp)
                          : s_path ("%s/%s.old-%" PRId64 "-%d.cert", sdir, base, stamp, n);
        if (old_path && s_exists (old_path)) {
            free (old_path);
            old_path = NULL;
        }
    }
    return old_path;
}

typedef struct {
    const char *node;
    const char *old_key;
    ami_cert_t *fresh;
    int64_t expires;
    int64_t stamp;
    int done;
} rotate_t;

/*  One allow-list file holding the old key: keep the old key under
    NODE.old-<stamp>.cert with expires, and the new key under the file's
    own name. Order matters for a running zauth, which may re-read the
    directory between any two steps: (1) rename the file to the old-name
    (the key is in exactly one file throughout), (2) rewrite that file
    with "expires" (temp + rename over the same name: still one file),
    (3) write the new key under the original name. There is never a
    moment with the old key absent or present twice. */
static int
s_rotate_one (allow_file_t *file, void *arg)
{
    rotate_t *r = (rotate_t *) arg;
    if (strcmp (ami_cert_public_txt (file->cert), r->old_key) != 0)
        return KEYGEN_OK;
    if (ami_cert_meta (file->cert, AMI_AUTH_META_EXPIRES)) {
        s_err ("%s: the current key of %s already has an expiry: not rotated", file->path,
               r->node);
        return KEYGEN_FAILED;
    }
    char *old_path = s_old_name (file->sdir, r->node, r->stamp);
    if (!old_path)
        return KEYGEN_FAILED;
    char when [24];
    snprintf (when, sizeof when, "%" PRId64, r->expires);
    int err = AMI_OK;
    if (rename (file->path, old_path) != 0) {
        s_err ("cannot rename %s to %s: %s", file->path, old_path, strerror (errno));
        err = AMI_E_IO;
    }
    if (!err)
        err = ami_cert_set_meta (file->cert, AMI_AUTH_META_EXPIRES, when);
    if (!err)
        err = ami_cert_save_public (file->cert, old_path);
    if (!err)
        err = ami_cert_save_public (r->fresh, file->path);
    if (err) {
        s_err ("rotating %s in %s failed (%s): check that directory by hand",
               r->node, file->sdir, ami_strerror (err));
        free (old_path);
        return KEYGEN_FAILED;
    }
    size_t count = 0;
    if (ami_auth_check_dir (file->sdir, &count) != AMI_OK) {
        s_err ("%s is not a valid allow-list after rotating %s", file->sdir, r->node);
        free (old_path);
        return KEYGEN_FAILED;
    }
    printf ("ami-keygen: rotate: %s: new key in %s, old key kept as %s until %s (Unix %" PRId64 ")\n",
            r->node, file->path, old_path, when, r->expires);
    r->done++;
    free (old_path);
    return KEYGEN_OK;
}

/*  Old MDMS signing keys kept in app/mdms-pub (mdms-sign.old-*.cert). */
static bool
s_is_old_sign_name (const char *name)
{
    size_t n = strlen (KEYGEN_SIGN_OLD_PREFIX);
    return name [0] != '.' && strncmp (name, KEYGEN_SIGN_OLD_PREFIX, n) == 0
        && s_ends_with (name, ".cert") && !s_ends_with (name, "_secret");
}

/*  How many old signing keys app/mdms-pub holds now. */
static int
s_old_sign_count (const char *pubdir)
{
    DIR *d = opendir (pubdir);
    int count = 0;
    struct dirent *e;
    while (d && (e = readdir (d)))
        if (s_is_old_sign_name (e->d_name))
            count++;
    if (d)
        closedir (d);
    return count;
}

/*  rotate DIR mdms-sign: a new MDMS command-signing key (keygen.h).
    Order, for running fleets and a running MDMS: (1) the old public key
    is copied into app/mdms-pub as mdms-sign.old-<now>.cert with expires
    (fleets accept it under both names for a moment: harmless, the set
    removes duplicates); (2) the new public key replaces
    app/mdms-pub/mdms-sign.cert (atomic rename: a fleet always finds a
    current key); (3) the new secret replaces app/mdms-sign.cert(+_secret),
    which the MDMS reads at its next start. So whenever the MDMS starts
    signing with the new key, the fleets have had it since (2). */
static int
s_rotate_sign (const char *dir, int64_t window)
{
    char *app_path = s_path ("%s/app/%s", dir, KEYGEN_SIGN_FILE);
    char *pubdir = s_path ("%s/app/mdms-pub", dir);
    char *pub_path = s_path ("%s/app/mdms-pub/%s", dir, KEYGEN_SIGN_FILE);
    int rc = KEYGEN_OK, err = 0;
    ami_cert_t *old = NULL, *old_pub = NULL, *fresh = NULL;
    char *old_path = NULL;
    if (!app_path || !pubdir || !pub_path || sodium_init () < 0)
        rc = KEYGEN_FAILED;
    if (rc == KEYGEN_OK) {
        //  the secret too: rotating needs a provisioned, intact MDMS key
        old = ami_cert_load (app_path, &err);
        old_pub = old ? ami_cert_load_public (pub_path, &err) : NULL;
        if (!old || !old_pub) {
            s_err ("cannot rotate mdms-sign: %s or %s cannot be loaded (%s)", app_path,
                   pub_path, ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    if (rc == KEYGEN_OK
    &&  (strcmp (ami_cert_key_type (old), AMI_CERT_KEY_ED25519) != 0
      || memcmp (ami_cert_public_key (old), ami_cert_public_key (old_pub), 32) != 0)) {
        s_err ("cannot rotate mdms-sign: %s is not the ed25519 key whose public half is %s "
               "(run ami-keygen check)", app_path, pub_path);
        rc = KEYGEN_FAILED;
    }
    if (rc == KEYGEN_OK && ami_cert_meta (old_pub, AMI_AUTH_META_EXPIRES)) {
        s_err ("%s: the current signing key already has an expiry: not rotated", pub_path);
        rc = KEYGEN_FAILED;
    }
    if (rc == KEYGEN_OK && s_old_sign_count (pubdir) >= AMI_METER_KEYS_MAX - 1) {
        //  fleets accept at most AMI_METER_KEYS_MAX keys: one more old key
        //  would be ignored by them, and silently so
        s_err ("%s already holds %d old signing keys: end their windows first "
               "(ami-keygen rotate %s mdms-sign --finish, or prune)", pubdir,
               s_old_sign_count (pubdir), dir);
        rc = KEYGEN_FAILED;
    }
    if (rc == KEYGEN_OK) {
        uint8_t pk [crypto_sign_PUBLICKEYBYTES], sk [crypto_sign_SECRETKEYBYTES];
        uint8_t seed [crypto_sign_SEEDBYTES];
        randombytes_buf (seed, sizeof seed);
        crypto_sign_seed_keypair (pk, sk, seed);
        fresh = ami_cert_new_from_keys (ami_cert_role (old), ami_cert_node_id (old),
                                        AMI_CERT_KEY_ED25519, pk, seed, &err);
        sodium_memzero (seed, sizeof seed);
        sodium_memzero (sk, sizeof sk);
        if (!fresh) {
            s_err ("cannot make a new signing key (%s)", ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    int64_t now = (int64_t) time (NULL);
    char when [24];
    snprintf (when, sizeof when, "%" PRId64, now + window);
    if (rc == KEYGEN_OK) {
        old_path = s_old_name (pubdir, "mdms-sign", now);
        err = old_path ? ami_cert_set_meta (old_pub, AMI_AUTH_META_EXPIRES, when) : AMI_E_NOMEM;
        //  (1), (2), (3): see above
        if (!err)
            err = ami_cert_save_public (old_pub, old_path);
        if (!err)
            err = ami_cert_save_public (fresh, pub_path);
        if (err) {
            s_err ("rotating mdms-sign in %s failed (%s): the MDMS keeps its key; check "
                   "that directory by hand", pubdir, ami_strerror (err));
            rc = KEYGEN_FAILED;
        }
    }
    if (rc == KEYGEN_OK && ami_cert_save (fresh, app_path) != AMI_OK) {
        s_err ("%s could not be replaced: fleets accept both keys, the MDMS keeps signing "
               "with the old one; fix the cause and rotate again", app_path);
        rc = KEYGEN_FAILED;
    }
    if (rc == KEYGEN_OK) {
        printf ("ami-keygen: rotate: mdms-sign: new signing key in %s(_secret) and %s; the "
                "old public key is kept as %s, accepted by fleets until %s (Unix, %" PRId64
                " s)\n", app_path, pub_path, old_path, when, window);
        printf ("ami-keygen: rotate: mdms-sign: running fleets accept the new key within "
                "%d ms (they re-read meter/mdms-pub; SIGHUP at once; HEALTH stat mdms_keys "
                "2); then restart the MDMS (supervisorctl restart ami-mdms) so it signs "
                "with it; commands it signed before stay valid until the window ends\n",
                AMI_METER_KEYS_REFRESH_MS);
        printf ("ami-keygen: rotate: end the window once the MDMS runs with the new key: "
                "ami-keygen rotate %s mdms-sign --finish (expired keys: ami-keygen prune "
                "%s)\n", dir, dir);
    }
    ami_cert_destroy (&old);
    ami_cert_destroy (&old_pub);
    ami_cert_destroy (&fresh);
    free (old_path);
    free (app_path);
    free (pubdir);
    free (pub_path);
    return rc;
}

int
keygen_rotate (const char *dir, const char *node, int64_t window)
{
    if (window < 1 || window > KEYGEN_MAX_WINDOW) {
        s_err ("--window must be 1..%d seconds", KEYGEN_MAX_WINDOW);
        return KEYGEN_USAGE;
    }
    if (strcmp (node, KEYGEN_SIGN_ID) == 0)
        return s_rotate_sign (dir, window);
    bool operator = false;
    char *path = s_holder_cert_path (dir, node, &operator);
    if (!path) {
        s_err ("%s: no node or operator '%s' (DIR/nodes/%s.cert, DIR/operators/%s.cert)",
               dir, node, node, node);
        return KEYGEN_USAGE;
    }
    if (sodium_init () < 0) {
        free (path);
        return KEYGEN_FAILED;
    }
    int err = 0;
    ami_cert_t *old = ami_cert_load (path, &err);
    ami_cert_t *fresh = NULL;
    if (old) {
        fresh = ami_cert_new (ami_cert_role (old), ami_cert_node_id (old), &err);
        const char *ami_role = ami_cert_meta (old, META_AMI_ROLE);
        if (fresh && ami_role)
            err = ami_cert_set_meta (fresh, META_AMI_ROLE, ami_role);
    }
    if (!old || !fresh || err) {
        s_err ("cannot rotate %s (%s)", node, ami_strerror (err));
        ami_cert_destroy (&old);
        ami_cert_destroy (&fresh);
        free (path);
        return KEYGEN_FAILED;
    }
    int64_t now = (int64_t) time (NULL);
    rotate_t r = { node, ami_cert_public_txt (old), fresh, now + window, now, 0 };
    //  1. allow-lists: old and new both accepted during the window
    int rc = s_allow_walk (dir, s_rotate_one, &r);
    //  2. the node's own files, last: whenever it restarts from now on,
    //     every server already accepts its new key
    if (rc == KEYGEN_OK && ami_cert_save (fresh, path) != AMI_OK)
        rc = KEYGEN_FAILED;
    if (rc == KEYGEN_OK) {
        printf ("ami-keygen: rotate: %s: new keypair in %s(_secret); %d allow-list(s) updated, "
                "the old key is accepted until Unix %" PRId64 " (%" PRId64 " s)\n",
                node, path, r.done, r.expires, window);
        if (operator)
            printf ("ami-keygen: rotate: %s: hand the new %s(_secret) to the operator; the "
                    "old one works until the window ends\n", node, path);
        else
            printf ("ami-keygen: rotate: %s: restart it (supervisorctl restart <program>) "
                    "within the window so it uses the new key\n", node);
        const char *clients = operator ? NULL : s_clients_of (node);
        if (clients)
            printf ("ami-keygen: rotate: %s is a SERVER: a CURVE server has one key, so "
                    "after restarting it restart its clients too: %s. Between the two "
                    "restarts they cannot connect to it.\n", node, clients);
        printf ("ami-keygen: rotate: end the window early with: ami-keygen rotate %s %s "
                "--finish; expired keys are removed by: ami-keygen prune %s\n", dir, node, dir);
    }
    else
        s_err ("rotating %s failed: the node keeps its old key (%s unchanged)", node, path);
    ami_cert_destroy (&old);
    ami_cert_destroy (&fresh);
    free (path);
    return rc;
}

typedef struct {
    const char *node;           /* finish: this node's expiring certs; NULL: expired only */
    int64_t now;
    int removed;
} prune_t;

static int
s_prune_one (allow_file_t *file, void *arg)
{
    prune_t *p = (prune_t *) arg;
    const char *text = ami_cert_meta (file->cert, AMI_AUTH_META_EXPIRES);
    if (!text)
        return KEYGEN_OK;
    int64_t expires = 0;
    bool valid = ami_auth_parse_expires (text, &expires);
    bool go = p->node ? strcmp (ami_cert_node_id (file->cert), p->node) == 0
                      : (!valid || expires <= p->now);
    if (!go)
        return KEYGEN_OK;
    if (unlink (file->path) != 0) {
        s_err ("cannot remove %s: %s", file->path, strerror (errno));
        return KEYGEN_FAILED;
    }
    printf ("ami-keygen: prune: removed %s (%s, expires %s)\n", file->path,
            ami_cert_node_id (file->cert), text);
    p->removed++;
    return KEYGEN_OK;
}

/*  The old MDMS signing keys in app/mdms-pub: all of them (finish: rotate
    DIR mdms-sign --finish) or those expired or without a valid expires
    (prune). A running fleet stops accepting a removed key within
    AMI_METER_KEYS_REFRESH_MS. */
static int
s_prune_sign (const char *dir, bool finish, prune_t *p)
{
    char *pubdir = s_path ("%s/app/mdms-pub", dir);
    DIR *d = pubdir ? opendir (pubdir) : NULL;
    if (!d) {
        //  nothing provisioned there: nothing to prune
        free (pubdir);
        return KEYGEN_OK;
    }
    zlist_t *names = zlist_new ();
    struct dirent *e;
    while (names && (e = readdir (d)))
        if (s_is_old_sign_name (e->d_name))
            zlist_append (names, strdup (e->d_name));
    closedir (d);
    int rc = names ? KEYGEN_OK : KEYGEN_FAILED;
    for (char *name = names ? zlist_first (names) : NULL; name && rc == KEYGEN_OK;
         name = zlist_next (names)) {
        char *path = s_path ("%s/%s", pubdir, name);
        int err = 0;
        ami_cert_t *cert = path ? ami_cert_load_public (path, &err) : NULL;
        const char *text = cert ? ami_cert_meta (cert, AMI_AUTH_META_EXPIRES) : NULL;
        int64_t expires = 0;
        bool valid = text && ami_auth_parse_expires (text, &expires);
        if (path && (finish || !valid || expires <= p->now)) {
            if (unlink (path) != 0) {
                s_err ("cannot remove %s: %s", path, strerror (errno));
                rc = KEYGEN_FAILED;
            }
            else {
                printf ("ami-keygen: prune: removed %s (old MDMS signing key, expires %s)\n",
                        path, text ? text : "-");
                p->removed++;
            }
        }
        ami_cert_destroy (&cert);
        free (path);
    }
    for (char *name = names ? zlist_first (names) : NULL; name; name = zlist_next (names))
        free (name);
    zlist_destroy (&names);
    free (pubdir);
    return rc;
}

int
keygen_prune (const char *dir, const char *node)
{
    if (node && !keygen_operator_id_valid (node)) {
        s_err ("'%s' is not a node or operator id", node);
        return KEYGEN_USAGE;
    }
    prune_t p = { node, (int64_t) time (NULL), 0 };
    int rc = s_allow_walk (dir, s_prune_one, &p);
    //  the MDMS signing key's window lives in app/mdms-pub, not in an
    //  allow-list
    if (rc == KEYGEN_OK && (!node || strcmp (node, KEYGEN_SIGN_ID) == 0))
        rc = s_prune_sign (dir, node != NULL, &p);
    if (rc == KEYGEN_OK)
        printf ("ami-keygen: %s: removed %d %s certificate(s)\n",
                node ? "rotate --finish" : "prune", p.removed,
                node ? "old" : "expired");
    return rc;
}

/*  DIR/revoked.txt: "# comment" lines, then one line per revoked key:
    unix-seconds TAB node-id TAB z85-key. Returns key -> node-id. */
static zhashx_t *
s_revoked_load (const char *dir)
{
    zhashx_t *keys = zhashx_new ();
    char *path = s_path ("%s/%s", dir, KEYGEN_REVOKED_FILE);
    FILE *file = path ? fopen (path, "r") : NULL;
    free (path);
    if (!keys || !file) {
        if (file)
            fclose (file);
        return keys;
    }
    zhashx_set_destructor (keys, (zhashx_destructor_fn *) zstr_free);
    zhashx_set_duplicator (keys, (zhashx_duplicator_fn *) strdup);
    char line [256];
    while (fgets (line, sizeof line, file)) {
        if (line [0] == '#')
            continue;
        char *save = NULL;
        strtok_r (line, "\t\n", &save);
        char *id = strtok_r (NULL, "\t\n", &save);
        char *key = strtok_r (NULL, "\t\n", &save);
        if (id && key && strlen (key) == AMI_CERT_KEY_TXT_LEN)
            zhashx_update (keys, key, id);
    }
    fclose (file);
    return keys;
}

/* Append lines to revoked.txt (rewritten atomically). */
static int
s_revoked_append (const char *dir, const char *lines)
{
    char *path = s_path ("%s/%s", dir, KEYGEN_REVOKED_FILE), *tmp = NULL;
    if (!path)
        return KEYGEN_FAILED;
    FILE *in = fopen (path, "r");
    FILE *out = s_atomic_open (path, &tmp);
    if (!out) {
        if (in)
            fclose (in);
        free (path);
        return KEYGEN_FAILED;
    }
    if (in) {
        char buffer [4096];
        size_t n;
        while ((n = fread (buffer, 1, sizeof buffer, in)) > 0)
            fwrite (buffer, 1, n, out);
        fclose (in);
    }
    else
        fputs ("#   ami-keygen revoke: keys removed from every allow-list, never to be\n"
               "#   re-admitted. unix-seconds TAB node-id TAB public key (Z85)\n", out);
    fputs (lines, out);
    int rc = s_atomic_commit (out, tmp, path, 0644) ? KEYGEN_FAILED : KEYGEN_OK;
    free (path);
    return rc;
}

typedef struct {
    const char *node;
    const char *key;            /* the holder's current key, or NULL */
    zhashx_t *removed;          /* key -> "" */
    int files;
} revoke_t;

static int
s_revoke_one (allow_file_t *file, void *arg)
{
    revoke_t *r = (revoke_t *) arg;
    const char *key = ami_cert_public_txt (file->cert);
    if (strcmp (ami_cert_node_id (file->cert), r->node) != 0
    &&  !(r->key && strcmp (key, r->key) == 0))
        return KEYGEN_OK;
    if (unlink (file->path) != 0) {
        s_err ("cannot remove %s: %s", file->path, strerror (errno));
        return KEYGEN_FAILED;
    }
    printf ("ami-keygen: revoke: %s: removed %s from the allow-list of %s\n",
            r->node, file->path, file->server);
    zhashx_update (r->removed, key, (void *) "");
    r->files++;
    size_t count = 1;
    if (ami_auth_check_dir (file->sdir, &count) == AMI_OK && count == 0)
        printf ("ami-keygen: revoke: warning: %s is now empty: %s refuses every client "
                "and will not start again until a key is added\n", file->sdir, file->server);
    return KEYGEN_OK;
}

int
keygen_revoke (const char *dir, const char *node, bool force)
{
    if (!keygen_operator_id_valid (node)) {
        s_err ("'%s' is not a node or operator id", node);
        return KEYGEN_USAGE;
    }
    bool operator = false;
    char *path = s_holder_cert_path (dir, node, &operator);
    int err = 0;
    ami_cert_t *cert = path ? ami_cert_load_public (path, &err) : NULL;
    zhashx_t *revoked = s_revoked_load (dir);
    if (!revoked) {
        ami_cert_destroy (&cert);
        free (path);
        return KEYGEN_FAILED;
    }
    int rc = KEYGEN_OK;
    //  Decision: never revoke the last SECADM without --force. The security
    //  administrator is the role that manages the others; a deployment
    //  without one has lost its security administration (recoverable with
    //  `ami-keygen operator`, but that should be deliberate).
    const char *ami_role = cert ? ami_cert_meta (cert, META_AMI_ROLE) : NULL;
    if (operator && ami_role && strcmp (ami_role, "SECADM") == 0 && !force) {
        topo_t *t = calloc (1, sizeof *t);
        int others = 0;
        if (t && s_topo_read (dir, t) == KEYGEN_OK)
            for (int i = 0; i < t->op_count; i++) {
                if (strcmp (t->ops [i].id, node) == 0 || strcmp (t->ops [i].role, "SECADM") != 0)
                    continue;
                char *p = s_path ("%s/operators/%s.cert", dir, t->ops [i].id);
                ami_cert_t *c = p ? ami_cert_load_public (p, &err) : NULL;
                if (c && !zhashx_lookup (revoked, ami_cert_public_txt (c)))
                    others++;
                ami_cert_destroy (&c);
                free (p);
            }
        free (t);
        if (others == 0) {
            s_err ("revoke: %s is the last SECADM operator: add another first "
                   "(ami-keygen operator %s ID SECADM) or use --force", node, dir);
            rc = KEYGEN_REFUSED;
        }
    }
    revoke_t r = { node, cert ? ami_cert_public_txt (cert) : NULL, zhashx_new (), 0 };
    if (rc == KEYGEN_OK && !r.removed)
        rc = KEYGEN_FAILED;
    if (rc == KEYGEN_OK)
        rc = s_allow_walk (dir, s_revoke_one, &r);
    if (rc == KEYGEN_OK && r.files == 0) {
        if (r.key && zhashx_lookup (revoked, r.key))
            printf ("ami-keygen: revoke: %s is already revoked\n", node);
        else {
            s_err ("revoke: no allow-list holds a key of %s%s", node,
                   path ? " (a node that is only a server, like the broker, is trusted by "
                          "its clients' config: rotate its key instead)" : "");
            rc = KEYGEN_FAILED;
        }
    }
    if (rc == KEYGEN_OK && r.files > 0) {
        //  Record every key removed (its current key and old rotated ones)
        zchunk_t *lines = zchunk_new (NULL, 0);
        int64_t now = (int64_t) time (NULL);
        for (void *item = zhashx_first (r.removed); item && lines; item = zhashx_next (r.removed)) {
            char line [128];
            snprintf (line, sizeof line, "%" PRId64 "\t%s\t%s\n", now, node,
                      (const char *) zhashx_cursor (r.removed));
            zchunk_extend (lines, line, strlen (line));
        }
        if (lines)
            zchunk_extend (lines, "", 1);
        rc = lines ? s_revoked_append (dir, (const char *) zchunk_data (lines)) : KEYGEN_FAILED;
        zchunk_destroy (&lines);
        if (rc == KEYGEN_OK)
            printf ("ami-keygen: revoke: %s: %d file(s) removed, %zu key(s) recorded in %s/%s; "
                    "running servers refuse it at its next connection and drop what its "
                    "live sessions send within %d ms\n", node, r.files, zhashx_size (r.removed),
                    dir, KEYGEN_REVOKED_FILE, AMI_AUTH_REFRESH_MS);
    }
    zhashx_destroy (&r.removed);
    zhashx_destroy (&revoked);
    ami_cert_destroy (&cert);
    free (path);
    return rc;
}
