/*  load_ingest.h - interval-data ingest load through the real services
    (ami-load ingest).

    Runs a PRIVATE deployment of the real binaries and measures what the
    whole interval-data chain (meter fleets -> aggregators -> head ends ->
    MDMS -> LMDB) does when every meter pushes its load profile as fast as
    the chain's credit allows:

    1.  provision: a run directory (a fresh temporary one, or --dir), keys
        for N meters in F fleets (bin/ami-keygen init), configuration from
        the deploy templates (deploy/render.sh) with the fleets in FLOOD
        mode (meter/profile/time-scale = 0), the MDMS's read rate limits
        off, a free port base;
    2.  start supervisord on it and wait (deadline) until the MDMS reports
        every node READY; find each service's process (/proc: the one
        started as ami-ROLE -c DIR/etc/NODE.cfg);
    3.  measure for `duration_ms`: readings committed per second = the
        MDMS's intervals_stored (API_STATUS, its own row) at the end minus
        at the start, over the time between the two answers; CPU time
        (/proc/PID/stat utime + stime) of each service over the same
        window, its RSS (VmRSS) at both ends and peak RSS (VmHWM); a live
        progress line on a terminal;
    4.  stop production: SIGUSR1 to every fleet process (ami-meter's main
        turns it into PROFILE-STOP), then wait (deadline `drain_ms`) until
        every fleet reports profile_done = 1 and the MDMS's
        intervals_stored equals the sum of the fleets' profile_readings;
    5.  account: open the MDMS's LMDB read-only (MDB_RDONLY) and count the
        stored readings directly (the presence bits of every record of the
        "intervals" database): lost = produced - counted when positive,
        stored twice = counted - produced when positive; also the bytes
        the "intervals" database and the whole data file take per reading;
    6.  stop everything (supervisorctl shutdown, then any process of the
        run directory still alive, by pid) and remove a temporary run
        directory, unless `keep`: then the deployment stays up for amictl
        (the integration test asks it for history and gaps).

    End-to-end latency (the meter sealing a block -> the block durable in
    LMDB) comes from the MDMS's own histogram (ingest_lat_p50_us, _p99_us,
    _max_us: since it started).

    The run succeeds (LOAD_INGEST_DONE with ok = true) only when the chain
    settled before the deadline, nothing is lost, nothing is stored twice,
    no block was rejected and no interval conflicted.
*/
#ifndef LOAD_INGEST_H_INCLUDED
#define LOAD_INGEST_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ami_msg.h"

/*  Most service processes a run follows (broker, MDMS, 16 head ends, 256
    aggregators, fleets: keygen's bounds make 1298; a load test that
    large is not what this tool is for). */
#define LOAD_INGEST_MAX_PROCS   256
/*  The name of the MDMS's interval database and the slots of one of its
    records (the storage contract: one record per meter and 96 intervals,
    a presence bitmap and 96 fixed-size slots, present or not). */
#define LOAD_INGEST_DB_NAME     "intervals"
#define LOAD_INGEST_SLOTS       96

typedef struct {
    const char *bin_dir;        /* the ami-* binaries (ami-load's own directory) */
    const char *deploy_dir;     /* deploy/: render.sh and the templates */
    const char *dir;            /* run directory; NULL = a fresh one under $TMPDIR */
    bool keep;                  /* leave the deployment running afterwards */
    uint32_t meters;            /* >= 1, a multiple of fleets */
    uint32_t fleets;            /* 1..1024 */
    uint32_t aggregators;       /* 1..fleets */
    uint32_t headends;          /* 1..16 */
    uint32_t interval_s;        /* the load profile's interval, divides a day */
    uint32_t block;             /* intervals per block, 1..96 */
    uint64_t start_s;           /* first interval's start, a multiple of interval_s */
    uint32_t limit;             /* intervals per meter, then stop (0 = none) */
    int port_base;              /* 0 = pick a free one */
    const char *log_level;      /* the services' log/level */
    const char *map_size;       /* the MDMS's mdms/map-size */
    int64_t duration_ms;        /* the measured window */
    int64_t ready_ms;           /* deadline: every service READY */
    int64_t drain_ms;           /* deadline: accounting settles after the stop */
    bool progress;              /* live progress line on stderr */
    bool verbose;               /* phase messages on stderr */
} load_ingest_config_t;

typedef struct {
    char node [AMI_MAX_ID + 1];
    char role [AMI_MAX_ROLE + 1];
    pid_t pid;
    double cpu_start_s, cpu_end_s;  /* utime + stime at the window's ends */
    uint64_t rss_start_kb, rss_end_kb, rss_max_kb;  /* VmRSS (max: sampled in the window) */
    uint64_t hwm_kb;                /* VmHWM at the window's end */
    /*  RssAnon: the process's own memory (heap, stacks), without the file
        pages it maps: the MDMS's RSS grows with its LMDB file, which it
        maps, while its own memory should stay flat. */
    uint64_t anon_start_kb, anon_end_kb, anon_max_kb;
    uint32_t stat_count;            /* its stats as the MDMS last saw them */
    ami_stat_t stats [AMI_MAX_STATS];
} load_ingest_proc_t;

typedef enum {
    LOAD_INGEST_DONE = 0,       /* measured and accounted (see ok) */
    LOAD_INGEST_SETUP,          /* could not provision or start the deployment */
    LOAD_INGEST_NOT_READY,      /* not every service READY by the deadline */
    LOAD_INGEST_INTERRUPTED     /* SIGINT/SIGTERM */
} load_ingest_outcome_t;

typedef struct {
    int outcome;
    char why [1024];
    bool ok;                    /* settled, lost 0, stored twice 0, no rejects/conflicts */
    char dir [256];             /* the run directory */
    bool kept;                  /* ... left running */
    int port_base;
    double ready_s;             /* start -> every service READY */
    //  the measured window
    double window_s;
    uint64_t stored_start, stored_end;
    double readings_per_s;
    uint64_t lat_p50_us, lat_p99_us, lat_max_us;
    //  accounting
    bool settled;               /* the chain drained before the deadline */
    double drain_s;             /* SIGUSR1 -> settled (or the deadline) */
    uint64_t produced;          /* sum of the fleets' profile_readings */
    uint64_t acked;             /* sum of the fleets' profile_acked */
    uint64_t stored;            /* the MDMS's intervals_stored */
    bool counted;               /* the LMDB count below is valid */
    uint64_t in_db;             /* readings in LMDB, counted directly */
    uint64_t db_records;        /* LMDB entries (meter, day-of-96 bucket) */
    uint64_t db_meters;         /* distinct meters with data */
    uint64_t per_meter_min, per_meter_max;
    uint64_t lost, stored_twice;
    uint64_t dup, conflict, rejected;   /* MDMS intervals_dup, _conflict, blocks_rejected */
    //  storage
    uint64_t page_size;
    uint64_t db_bytes;          /* the intervals database's pages x page size */
    uint64_t file_bytes;        /* the environment's used pages x page size */
    double db_bytes_per_reading, file_bytes_per_reading;
    /*  The intervals database per reading if every record's 96 slots were
        filled (a meter's whole history at steady state: a short run leaves
        its last record of each meter partly empty, and a record costs the
        same full or not), and the share of slots filled now. */
    double full_bytes_per_reading, slot_fill;
    //  services
    load_ingest_proc_t procs [LOAD_INGEST_MAX_PROCS];
    uint32_t proc_count;
} load_ingest_result_t;

/*  Run as described above. Fills *result (zero it first). Returns
    result->outcome. Never leaves a process behind unless config->keep. */
int
    load_ingest_run (const load_ingest_config_t *config, load_ingest_result_t *result);

/*  A stat of a service row by name; false if absent. */
bool
    load_ingest_stat (const ami_stat_t *stats, uint32_t count, const char *name,
                      uint64_t *value);

#endif
