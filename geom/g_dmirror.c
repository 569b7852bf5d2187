/*
 * g_dmirror.c - the FreeBSD GEOM class DMIRROR (kernel module geom_dmirror.ko): a RAID1 mirror
 * whose policy lives entirely in the portable Rust core, reached only through shim-c/dmirror.h.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * What this file does, and what it leaves to the core
 *   This file finds legs (taste), keeps consumers and the provider /dev/dmirror/<name>, turns
 *   bios into dmirror_parent_io and the core's leg I/Os into child bios, runs the control verbs
 *   of geom(8) and shows the state in the GEOM XML. Which leg to read, write ordering, the write
 *   intent log, resync, repair and when a parent is finished are the core's: this file completes
 *   a parent only when the core calls complete(), which it does once every leg I/O of that parent
 *   has been reported.
 *
 * Threads: one worker per mirror owns the core
 *   The core must never be re-entered and some of its calls need a context that may sleep
 *   (dmirror_create() reads bitmaps through meta_read, dmirror_destroy() frees). So, as g_mirror
 *   does, every mirror has one kernel process (the worker) and only the worker calls dmirror_*
 *   for that mirror; the lock/unlock callbacks are NULL (dmirror.h allows that when a single
 *   thread makes every call). start() (g_down), the child done routine (g_up), the tick callout,
 *   taste/orphan/ctlreq (the event thread) never call the core: they put the bio, the request or
 *   the flag on the mirror's queues under sc_mtx and wake the worker. A mutex around the core
 *   would have let start() and done() call it directly, but then metadata reads at creation and
 *   the teardown would need a second, sleepable path, and a busy mirror would take the mutex
 *   from two GEOM threads at once. The worker costs one context switch per batch, not per bio.
 *
 * Allocation without sleeping
 *   start() and done() allocate nothing. The worker allocates child bios with g_clone_bio() /
 *   g_new_bio() (M_NOWAIT); when that fails, the leg I/O is copied into a ring allocated with
 *   the mirror and retried on the next completion or tick. Completions the shim must make up
 *   itself (a leg with no device: ENXIO; a discard on a leg that cannot delete: EOPNOTSUPP) are
 *   never delivered from inside the core's callback (dmirror.h forbids it): they travel as a
 *   bio on a worker-private queue (or the ring) and reach dmirror_leg_done() after the core
 *   returned. Only if both the allocation and the ring fail does the worker wait for memory
 *   (pause): it holds no lock then, so this only delays this mirror. The ring's size is an
 *   estimate (dmirror.h does not say how many leg I/Os the core can have outstanding; see the
 *   report that came with this file).
 *
 * Locks
 *   topology lock: the GEOM objects (geom, consumers, provider), the candidate list of a
 *     starting mirror, sc_state, leg->cp (the worker takes the topology lock to change them).
 *   sc_mtx: the queues between the GEOM threads and the worker, the flags below it, the status
 *     snapshot. Never held while taking the topology lock or calling the core.
 *   g_dmirror_reqmtx: the done flag of control requests (their owner sleeps on it).
 */
#include <sys/param.h>
#include <sys/systm.h>
#include <sys/bio.h>
#include <sys/callout.h>
#include <sys/kernel.h>
#include <sys/kthread.h>
#include <sys/limits.h>
#include <sys/lock.h>
#include <sys/malloc.h>
#include <sys/module.h>
#include <sys/mutex.h>
#include <sys/proc.h>
#include <sys/queue.h>
#include <sys/sbuf.h>
#include <sys/sched.h>
#include <sys/sx.h>
#include <sys/sysctl.h>

#include <geom/geom.h>
#include <geom/geom_ctl.h>

#include "dmirror.h"
#include "g_dmirror.h"

#if __SIZEOF_POINTER__ < 8
#error "geom_dmirror keeps a 64-bit dmirror token in a bio's pointer field: 64-bit kernels only"
#endif

/* The layout the core was built against (shim-c/src/abi.rs pins the same numbers). */
CTASSERT(sizeof(struct dmirror_config) == 72);
CTASSERT(sizeof(struct dmirror_leg_io) == 64);
CTASSERT(sizeof(struct dmirror_parent_io) == 40);
CTASSERT(sizeof(struct dmirror_status) == 2192);
CTASSERT(sizeof(struct dmirror_host_ops) == 88);
CTASSERT(sizeof(struct dmirror_assembly) == 3792);
CTASSERT(sizeof(struct dmirror_leg_read) == 64);
CTASSERT(sizeof(struct dmirror_why) == 16);

FEATURE(geom_dmirror, "GEOM dmirror (RAID1 with a Rust core) support");

static MALLOC_DEFINE(M_DMIRROR, "dmirror_data", "GEOM_DMIRROR data");

SYSCTL_DECL(_kern_geom);
static SYSCTL_NODE(_kern_geom, OID_AUTO, dmirror, CTLFLAG_RW | CTLFLAG_MPSAFE, 0,
    "GEOM_DMIRROR stuff");
static u_int g_dmirror_debug = 0;
SYSCTL_UINT(_kern_geom_dmirror, OID_AUTO, debug, CTLFLAG_RWTUN, &g_dmirror_debug, 0,
    "Debug level (1: resync progress and core debug messages)");
static u_int g_dmirror_timeout = 4;
SYSCTL_UINT(_kern_geom_dmirror, OID_AUTO, timeout, CTLFLAG_RWTUN, &g_dmirror_timeout, 0,
    "Seconds to wait for every leg of a mirror before assembling it without the missing ones");
static u_int g_dmirror_tick_ms = 100;
SYSCTL_UINT(_kern_geom_dmirror, OID_AUTO, tick_ms, CTLFLAG_RWTUN, &g_dmirror_tick_ms, 0,
    "Milliseconds between two clock ticks of the core (lazy bit clearing, resync rate)");
static u_int g_dmirror_stop_timeout = 30;
SYSCTL_UINT(_kern_geom_dmirror, OID_AUTO, stop_timeout, CTLFLAG_RWTUN,
    &g_dmirror_stop_timeout, 0,
    "Seconds a stop waits for the clean-shutdown metadata before giving up on it");

/* Most bytes of core memory a mirror may ask for (a tiny region size on a huge disk). */
#define DM_MAX_CORE_BYTES ((uint64_t)256 << 20)

#define DM_LOG(sc, fmt, ...) \
	printf("GEOM_DMIRROR: %s: " fmt "\n", (sc)->sc_name, ##__VA_ARGS__)
#define DM_DEBUG(sc, fmt, ...) do {			\
	if (g_dmirror_debug > 0)			\
		DM_LOG(sc, fmt, ##__VA_ARGS__);		\
} while (0)

static struct mtx g_dmirror_reqmtx;
MTX_SYSINIT(g_dmirror_req, &g_dmirror_reqmtx, "gdmirror req", MTX_DEF);

/* What cp->private points to starts with one of these. */
#define DM_KIND_LEG 1
#define DM_KIND_CAND 2

struct g_dmirror_softc;

/* One leg slot of a running mirror. */
struct g_dmirror_leg {
	int kind;                   /* DM_KIND_LEG */
	struct g_dmirror_softc *sc;
	u_int index;
	struct g_consumer *cp;      /* NULL: no device (topology lock + worker) */
	/* worker only: */
	int gone;                   /* orphaned: no new I/O, detach once drained */
	int candelete;
	u_int outstanding;          /* bios sent to cp and not yet reported to the core */
	int detach;                 /* detach once drained */
	int clear;                  /* and zero its superblock slots first */
	uint64_t sectors;           /* device size in mirror sectors */
	uint8_t uuid[16];           /* the leg UUID the mirror expects in this slot */
};

/* A device of a mirror that has not started yet (found by taste). */
struct g_dmirror_cand {
	int kind;                   /* DM_KIND_CAND */
	struct g_consumer *cp;
	uint8_t *slot0, *slot1;     /* superblock slots as read (NULL: unreadable) */
	uint64_t slot_bytes;
	uint64_t sectors;           /* in mirror sectors */
	uint32_t ss;                /* the mirror's sector size */
	u_int slot;                 /* the leg slot its superblock names */
	uint64_t generation;
	uint32_t members;           /* slots its superblock lists (bit k: slot k not EMPTY) */
	TAILQ_ENTRY(g_dmirror_cand) link;
};

/* A control request handed to the worker. Its owner frees it (async: the worker does). */
enum {
	DM_REQ_ATTACH = 1,  /* install cp in slot leg and dmirror_add_leg() */
	DM_REQ_REMOVE,      /* dmirror_remove_leg(), zero its superblocks, detach */
	DM_REQ_FORGET,      /* remove every slot that is MISSING or FAILED and has no device */
	DM_REQ_REBUILD,     /* fail the leg if active, then add it back for a full resync */
	DM_REQ_POLICY,      /* dmirror_set_read_policy() */
	DM_REQ_ORPHAN,      /* cp lost its provider */
	DM_REQ_STOP,        /* clean shutdown, then tear everything down */
	DM_REQ_START,       /* (label) the start finished; only ever completed, never queued */
};

struct g_dmirror_req {
	int op;
	int async;
	u_int leg;
	struct g_consumer *cp;
	uint8_t uuid[16];
	uint64_t sectors;
	int incremental;
	int clear;
	struct dmirror_read_policy policy;
	/* progress of a request retried across loops (sc_cur) */
	int stage;
	int retries;
	/* result */
	int done;                   /* g_dmirror_reqmtx */
	int error;
	int count;
	char msg[384];
	TAILQ_ENTRY(g_dmirror_req) link;
};

/* A leg I/O waiting for memory, or a made-up completion waiting for delivery. */
struct g_dmirror_defer {
	int kind;                   /* DM_D_ISSUE or DM_D_COMPLETE */
	int error;
	u_int leg;
	struct dmirror_leg_io io;
};
#define DM_D_ISSUE 1
#define DM_D_COMPLETE 2

/* bio_caller2 of a child: (leg << 8) | flags. */
#define DM_BF_FUA 0x01      /* a write the core wants durable: flush the leg after it */
#define DM_BF_FUAFLUSH 0x02 /* that flush */
#define DM_BF_SYNTH 0x04    /* made up by the shim: no I/O was sent */

enum { DM_STARTING = 0, DM_ASSEMBLING, DM_RUNNING, DM_STOPPING };

struct g_dmirror_softc {
	char sc_name[G_DMIRROR_NAME_MAX + 1];
	uint8_t sc_uuid[16];
	int sc_state;                       /* topology lock */
	int sc_label;                       /* created by label: no taste wait */
	struct g_geom *sc_geom;
	struct g_provider *sc_provider;     /* topology lock */
	struct proc *sc_worker;
	struct callout sc_callout;          /* runs with sc_mtx */

	struct mtx sc_mtx;
	/* under sc_mtx: */
	struct bio_queue_head sc_inq;       /* parents from start() */
	struct bio_queue_head sc_doneq;     /* children back from the legs */
	TAILQ_HEAD(, g_dmirror_req) sc_reqs;
	int sc_tick;
	int sc_go;                          /* assemble now */
	u_int sc_waitticks;                 /* ticks left before assembling anyway */
	int sc_dying;                       /* callout: do not re-arm */
	int sc_stopping;                    /* start(): refuse new parents */
	int sc_candelete;                   /* some leg can delete (GEOM::candelete) */
	struct dmirror_status *sc_snap;     /* for dumpconf */
	int sc_snap_valid;
	uint64_t sc_generation;             /* newest generation known (snapshot or assembly) */

	/* worker only: */
	struct dmirror *sc_m;
	struct dmirror_config sc_cfg;
	struct dmirror_host_ops sc_ops;
	struct dmirror_init *sc_init;       /* label: the fresh state */
	struct g_dmirror_req *sc_exitreq;   /* completed at teardown (stop, or a failed label) */
	struct g_dmirror_req *sc_startreq;  /* label: completed once the mirror runs */
	struct g_dmirror_req *sc_cur;       /* a request being retried */
	struct bio_queue_head sc_pending;   /* parents not yet accepted by the core */
	struct bio_queue_head sc_synthq;    /* made-up completions */
	int sc_busy;                        /* the core said EBUSY: wait for READY/completion */
	u_int sc_by_request;                /* leg + 1 while the class itself takes it out */
	/* Resync stalls are logged once until the leg's resync moves on (worker only): */
	uint32_t sc_stall_quiet;            /* legs whose next stall is not logged */
	uint64_t sc_stall_done[DMIRROR_MAX_LEGS]; /* resync progress last seen before it */
	int sc_shutdown_done;
	int sc_stop_deadline;               /* ticks */
	int sc_flush_wait;                  /* label: the first flush is in flight */
	int sc_flush_error;
	uint8_t sc_flush_marker;            /* its parent handle is this byte's address */
	uint8_t **sc_rbuf;
	uint32_t sc_nrbuf;
	size_t sc_rbuf_bytes;
	struct g_dmirror_defer *sc_defer;
	u_int sc_ndefer, sc_dhead, sc_dlen;
	struct dmirror_status *sc_work;

	/* topology lock: */
	TAILQ_HEAD(, g_dmirror_cand) sc_cands;
	u_int sc_ncands;
	struct dmirror_status *sc_dump;     /* dumpconf's copy of sc_snap */

	struct g_dmirror_leg sc_legs[DMIRROR_MAX_LEGS];
};

static g_taste_t g_dmirror_taste;
static g_ctl_req_t g_dmirror_ctlreq;
static g_init_t g_dmirror_init;
static g_fini_t g_dmirror_fini;
static g_ctl_destroy_geom_t g_dmirror_destroy_geom;
static g_start_t g_dmirror_start;
static g_orphan_t g_dmirror_orphan;
static g_access_t g_dmirror_access;
static g_dumpconf_t g_dmirror_dumpconf;

struct g_class g_dmirror_class = {
	.name = G_DMIRROR_CLASS_NAME,
	.version = G_VERSION,
	.taste = g_dmirror_taste,
	.ctlreq = g_dmirror_ctlreq,
	.init = g_dmirror_init,
	.fini = g_dmirror_fini,
	.destroy_geom = g_dmirror_destroy_geom,
	.start = g_dmirror_start,
	.orphan = g_dmirror_orphan,
	.access = g_dmirror_access,
	.dumpconf = g_dmirror_dumpconf,
};

static void g_dmirror_worker(void *arg);
static void g_dmirror_callout(void *arg);

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                              */

static const char *
g_dmirror_errstr(int error)
{
	switch (error) {
	case DMIRROR_EPERM:
		return ("it would leave no in-sync leg");
	case DMIRROR_ENOENT:
		return ("no such leg slot");
	case DMIRROR_EIO:
		return ("I/O error");
	case DMIRROR_ENXIO:
		return ("device gone or no usable leg");
	case DMIRROR_ENOMEM:
		return ("out of memory");
	case DMIRROR_EBUSY:
		return ("the slot is in the wrong state, or the mirror is busy");
	case DMIRROR_EINVAL:
		return ("invalid argument");
	case DMIRROR_ENOSPC:
		return ("the device is too small");
	case DMIRROR_EAGAIN:
		return ("the leg still has I/O in flight");
	case DMIRROR_ESHUTDOWN:
		return ("the mirror is shutting down");
	case DMIRROR_ENOSYS:
		return ("not implemented by this build of the core");
	default:
		return ("error");
	}
}

static const char *
g_dmirror_legstate(uint32_t state)
{
	switch (state) {
	case DMIRROR_LEG_EMPTY:
		return ("EMPTY");
	case DMIRROR_LEG_IN_SYNC:
		return ("IN_SYNC");
	case DMIRROR_LEG_REBUILDING:
		return ("REBUILDING");
	case DMIRROR_LEG_FAILED:
		return ("FAILED");
	case DMIRROR_LEG_MISSING:
		return ("MISSING");
	default:
		return ("UNKNOWN");
	}
}

static void
g_dmirror_sbuf_uuid(struct sbuf *sb, const uint8_t *u)
{
	int i;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			sbuf_putc(sb, '-');
		sbuf_printf(sb, "%02x", u[i]);
	}
}

/* The provider name without "/dev/". */
static const char *
g_dmirror_strip_dev(const char *name)
{

	if (strncmp(name, _PATH_DEV, sizeof(_PATH_DEV) - 1) == 0)
		name += sizeof(_PATH_DEV) - 1;
	return (name);
}

static int
g_dmirror_name_ok(const char *name)
{
	size_t i, n;

	n = strlen(name);
	if (n == 0 || n > G_DMIRROR_NAME_MAX)
		return (0);
	for (i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
			return (0);
	}
	return (1);
}

static struct g_dmirror_softc *
g_dmirror_find(struct g_class *mp, const char *name)
{
	struct g_geom *gp;
	struct g_dmirror_softc *sc;

	g_topology_assert();
	name = g_dmirror_strip_dev(name);
	if (strncmp(name, G_DMIRROR_PREFIX, sizeof(G_DMIRROR_PREFIX) - 1) == 0)
		name += sizeof(G_DMIRROR_PREFIX) - 1;
	LIST_FOREACH(gp, &mp->geom, geom) {
		sc = gp->softc;
		if (sc != NULL && (gp->flags & G_GEOM_WITHER) == 0 &&
		    strcmp(sc->sc_name, name) == 0)
			return (sc);
	}
	return (NULL);
}

static struct g_dmirror_softc *
g_dmirror_find_uuid(struct g_class *mp, const uint8_t *uuid)
{
	struct g_geom *gp;
	struct g_dmirror_softc *sc;

	g_topology_assert();
	LIST_FOREACH(gp, &mp->geom, geom) {
		sc = gp->softc;
		if (sc != NULL && (gp->flags & G_GEOM_WITHER) == 0 &&
		    memcmp(sc->sc_uuid, uuid, 16) == 0)
			return (sc);
	}
	return (NULL);
}

static int
g_dmirror_tick_hz(void)
{
	int t;

	t = (int)((uint64_t)g_dmirror_tick_ms * hz / 1000);
	return (t > 0 ? t : 1);
}

/* Requests: the owner waits, the worker completes. */
static void
g_dmirror_req_wait(struct g_dmirror_req *r)
{

	mtx_lock(&g_dmirror_reqmtx);
	while (!r->done)
		mtx_sleep(r, &g_dmirror_reqmtx, PRIBIO, "dm:req", 0);
	mtx_unlock(&g_dmirror_reqmtx);
}

static void
g_dmirror_req_finish(struct g_dmirror_req *r, int error)
{

	if (r->async) {
		if (error != 0 && r->msg[0] != '\0')
			printf("GEOM_DMIRROR: %s\n", r->msg);
		free(r, M_DMIRROR);
		return;
	}
	mtx_lock(&g_dmirror_reqmtx);
	r->error = error;
	r->done = 1;
	wakeup(r);
	mtx_unlock(&g_dmirror_reqmtx);
}

static void
g_dmirror_req_post(struct g_dmirror_softc *sc, struct g_dmirror_req *r)
{

	mtx_lock(&sc->sc_mtx);
	TAILQ_INSERT_TAIL(&sc->sc_reqs, r, link);
	wakeup(sc);
	mtx_unlock(&sc->sc_mtx);
}

static struct g_dmirror_req *
g_dmirror_req_new(int op)
{
	struct g_dmirror_req *r;

	r = malloc(sizeof(*r), M_DMIRROR, M_WAITOK | M_ZERO);
	r->op = op;
	return (r);
}

/* ---------------------------------------------------------------------------------------- */
/* Synchronous metadata I/O (sleepable context, topology lock not held)                      */

/* Read len bytes at byte offset off in chunks of at most maxphys. */
static int
g_dmirror_read_bytes(struct g_consumer *cp, off_t off, uint8_t *buf, uint64_t len)
{
	u_int ss = cp->provider->sectorsize;
	uint64_t chunk, done;
	uint8_t *p;
	int error;

	chunk = rounddown((uint64_t)maxphys, ss);
	if (chunk == 0 || len % ss != 0 || off % ss != 0)
		return (EINVAL);
	for (done = 0; done < len; done += chunk) {
		if (chunk > len - done)
			chunk = len - done;
		p = g_read_data(cp, off + (off_t)done, (off_t)chunk, &error);
		if (p == NULL)
			return (error != 0 ? error : EIO);
		memcpy(buf + done, p, chunk);
		g_free(p);
	}
	return (0);
}

static int
g_dmirror_write_bytes(struct g_consumer *cp, off_t off, const uint8_t *buf, uint64_t len)
{
	u_int ss = cp->provider->sectorsize;
	uint64_t chunk, done;
	int error;

	chunk = rounddown((uint64_t)maxphys, ss);
	if (chunk == 0 || len % ss != 0 || off % ss != 0)
		return (EINVAL);
	for (done = 0; done < len; done += chunk) {
		if (chunk > len - done)
			chunk = len - done;
		error = g_write_data(cp, off + (off_t)done, __DECONST(uint8_t *, buf) + done,
		    (off_t)chunk);
		if (error != 0)
			return (error);
	}
	return (0);
}

/*
 * The class's helper thread, and the stack of the mirror workers. Measured on the x86_64 kernel
 * object by tests/kernel-stack-report.sh (the limit tests/kernel-build.sh enforces is 8 KiB for
 * every entry point): dmirror_create_assembled() needs ~6.6 KiB, dmirror_assemble() ~6.1 KiB,
 * dmirror_create() ~5.8 KiB, the I/O entry points ~4.7 KiB, dmirror_identify() ~2 KiB, the
 * shim's own callbacks not included. Taste runs dmirror_identify() in the GEOM event thread;
 * dump hands dmirror_assemble() of one device to this thread and waits for it (one per class,
 * started by init, stopped by fini; jobs are serialized). 4 pages (16 KiB on amd64, FreeBSD's
 * default KSTACK_PAGES) leave ~9 KiB above the deepest entry point for the worker's own frames,
 * the callbacks (printf, g_read_data) and interrupts. It was 12 pages (48 KiB) when assembly
 * needed ~40 KiB.
 */
#define DM_KSTACK_PAGES 4 /* 16 KiB on amd64 */

struct g_dmirror_job {
	const struct dmirror_leg_read *reads;
	uint32_t nreads;
	struct dmirror_assembly *out;
	struct dmirror_why *why;
	char *msg;
	uint64_t msg_len;
	int rc;
	int done;
	TAILQ_ENTRY(g_dmirror_job) link;
};

static TAILQ_HEAD(, g_dmirror_job) g_dmirror_jobs = TAILQ_HEAD_INITIALIZER(g_dmirror_jobs);
static struct proc *g_dmirror_helper;
static int g_dmirror_helper_state; /* 0 none, 1 running, 2 asked to stop, 3 stopped */

static void
g_dmirror_helper_main(void *arg __unused)
{
	struct g_dmirror_job *j;

	mtx_lock(&g_dmirror_reqmtx);
	for (;;) {
		while ((j = TAILQ_FIRST(&g_dmirror_jobs)) == NULL && g_dmirror_helper_state == 1)
			mtx_sleep(&g_dmirror_jobs, &g_dmirror_reqmtx, PRIBIO, "dm:help", 0);
		if (j == NULL)
			break;
		TAILQ_REMOVE(&g_dmirror_jobs, j, link);
		mtx_unlock(&g_dmirror_reqmtx);
		j->rc = dmirror_assemble(j->reads, j->nreads, NULL, j->out, j->why, j->msg,
		    j->msg_len);
		mtx_lock(&g_dmirror_reqmtx);
		j->done = 1;
		wakeup(j);
	}
	g_dmirror_helper_state = 3;
	wakeup(&g_dmirror_helper_state);
	mtx_unlock(&g_dmirror_reqmtx);
	kproc_exit(0);
}

static void
g_dmirror_init(struct g_class *mp __unused)
{

	mtx_lock(&g_dmirror_reqmtx);
	g_dmirror_helper_state = 1;
	mtx_unlock(&g_dmirror_reqmtx);
	if (kproc_create(g_dmirror_helper_main, NULL, &g_dmirror_helper, 0, DM_KSTACK_PAGES,
	    "g_dmirror") != 0) {
		printf("GEOM_DMIRROR: cannot start the helper thread: no mirror will be found "
		    "by taste\n");
		mtx_lock(&g_dmirror_reqmtx);
		g_dmirror_helper_state = 0;
		mtx_unlock(&g_dmirror_reqmtx);
	}
}

static void
g_dmirror_fini(struct g_class *mp __unused)
{

	mtx_lock(&g_dmirror_reqmtx);
	if (g_dmirror_helper_state == 1) {
		g_dmirror_helper_state = 2;
		wakeup(&g_dmirror_jobs);
		while (g_dmirror_helper_state != 3)
			mtx_sleep(&g_dmirror_helper_state, &g_dmirror_reqmtx, PRIBIO, "dm:fini",
			    0);
	}
	g_dmirror_helper_state = 0;
	mtx_unlock(&g_dmirror_reqmtx);
}

/* dmirror_assemble() on the helper's stack (topology lock not held: this sleeps). */
static int
g_dmirror_assemble_on_helper(const struct dmirror_leg_read *reads, uint32_t nreads,
    struct dmirror_assembly *out, struct dmirror_why *why, char *msg, uint64_t msg_len)
{
	struct g_dmirror_job j;

	memset(&j, 0, sizeof(j));
	j.reads = reads;
	j.nreads = nreads;
	j.out = out;
	j.why = why;
	j.msg = msg;
	j.msg_len = msg_len;
	mtx_lock(&g_dmirror_reqmtx);
	if (g_dmirror_helper_state != 1) {
		mtx_unlock(&g_dmirror_reqmtx);
		return (ENXIO);
	}
	TAILQ_INSERT_TAIL(&g_dmirror_jobs, &j, link);
	wakeup(&g_dmirror_jobs);
	while (!j.done)
		mtx_sleep(&j, &g_dmirror_reqmtx, PRIBIO, "dm:asm", 0);
	mtx_unlock(&g_dmirror_reqmtx);
	return (j.rc);
}

/*
 * What one device says about itself: its superblock slots and the core's reading of them
 * (dmirror_identify(): no judgement, so a stale or rebuilding leg is recognised too; assembly
 * over all the legs found decides what each one is).
 */
struct g_dmirror_ident {
	uint8_t *slot0, *slot1;
	uint64_t slot_bytes;
	off_t off0, off1;           /* byte offsets of the two slots */
	uint32_t ss;                /* the mirror's sector size */
	uint64_t sectors;           /* device size in mirror sectors */
	u_int slot;                 /* which leg slot this device is */
	struct dmirror_identity idn;
	struct dmirror_why why;
};

static void
g_dmirror_ident_free(struct g_dmirror_ident *id)
{

	if (id == NULL)
		return;
	free(id->slot0, M_DMIRROR);
	free(id->slot1, M_DMIRROR);
	free(id, M_DMIRROR);
}

/*
 * Read the superblock slots of cp's provider (open for reading, topology lock dropped) and
 * identify the device. The slots' place depends on the mirror's sector size, known only after
 * decoding: read with the provider's sector size first; if the core answers
 * DMIRROR_WHY_READ_SECTOR_SIZE, read again with the size it names.
 */
static int
g_dmirror_read_ident(struct g_consumer *cp, struct g_dmirror_ident **out)
{
	struct g_provider *pp = cp->provider;
	struct g_dmirror_ident *id;
	struct dmirror_leg_read rd;
	uint64_t s0, s1, bytes;
	uint32_t ss;
	u_int k;
	int error, pass;

	*out = NULL;
	id = malloc(sizeof(*id), M_DMIRROR, M_WAITOK | M_ZERO);
	ss = pp->sectorsize;
	for (pass = 0;; pass++) {
		if (ss < pp->sectorsize || ss % pp->sectorsize != 0) {
			error = EINVAL;
			goto fail;
		}
		id->ss = ss;
		id->sectors = (uint64_t)pp->mediasize / ss;
		error = dmirror_sb_location(id->sectors, ss, &s0, &s1, &bytes);
		if (error != 0)
			goto fail;
		if (bytes == 0 || bytes > 1024 * 1024 || bytes % pp->sectorsize != 0) {
			error = EINVAL;
			goto fail;
		}
		free(id->slot0, M_DMIRROR);
		free(id->slot1, M_DMIRROR);
		id->slot0 = malloc(bytes, M_DMIRROR, M_WAITOK);
		id->slot1 = malloc(bytes, M_DMIRROR, M_WAITOK);
		id->slot_bytes = bytes;
		id->off0 = (off_t)(s0 * ss);
		id->off1 = (off_t)(s1 * ss);
		if (g_dmirror_read_bytes(cp, id->off0, id->slot0, bytes) != 0) {
			free(id->slot0, M_DMIRROR);
			id->slot0 = NULL;
		}
		if (g_dmirror_read_bytes(cp, id->off1, id->slot1, bytes) != 0) {
			free(id->slot1, M_DMIRROR);
			id->slot1 = NULL;
		}
		if (id->slot0 == NULL && id->slot1 == NULL) {
			error = EIO;
			goto fail;
		}
		memset(&rd, 0, sizeof(rd));
		rd.slot0 = id->slot0;
		rd.slot0_len = id->slot0 != NULL ? bytes : 0;
		rd.slot1 = id->slot1;
		rd.slot1_len = id->slot1 != NULL ? bytes : 0;
		rd.sectors = id->sectors;
		rd.label = 0;
		rd.name = pp->name;
		rd.sector_size = ss;
		memset(&id->why, 0, sizeof(id->why));
		/* Pure, ~2 KiB of stack: fine in the event thread. */
		error = dmirror_identify(&rd, &id->idn, &id->why);
		if (error == 0)
			break;
		if (g_dmirror_debug > 1)
			printf("GEOM_DMIRROR: %s: %s\n", pp->name, dmirror_why_str(id->why.code));
		if (pass > 0 || id->why.code != DMIRROR_WHY_READ_SECTOR_SIZE ||
		    id->why.value == 0 || id->why.value > 65536)
			goto fail;
		ss = (uint32_t)id->why.value;
	}
	k = id->idn.leg;
	if (k >= DMIRROR_MAX_LEGS || k >= id->idn.nlegs) {
		error = EINVAL;
		goto fail;
	}
	id->slot = k;
	*out = id;
	return (0);
fail:
	g_dmirror_ident_free(id);
	return (error);
}

/* Attach a temporary consumer of a private geom to pp. */
static struct g_consumer *
g_dmirror_tmp_consumer(struct g_class *mp, struct g_provider *pp, const char *what)
{
	struct g_geom *gp;
	struct g_consumer *cp;

	g_topology_assert();
	gp = g_new_geomf(mp, "dmirror:%s", what);
	gp->orphan = g_dmirror_orphan; /* softc NULL: nothing to do */
	gp->access = NULL;
	gp->start = NULL;
	gp->dumpconf = NULL;
	cp = g_new_consumer(gp);
	if (g_attach(cp, pp) != 0) {
		g_destroy_consumer(cp);
		g_destroy_geom(gp);
		return (NULL);
	}
	return (cp);
}

static void
g_dmirror_tmp_release(struct g_consumer *cp)
{
	struct g_geom *gp = cp->geom;

	g_topology_assert();
	if (cp->acr != 0 || cp->acw != 0 || cp->ace != 0)
		g_access(cp, -cp->acr, -cp->acw, -cp->ace);
	g_detach(cp);
	g_destroy_consumer(cp);
	g_destroy_geom(gp);
}

/* Zero both superblock slots of the device behind cp (open for writing). */
static int
g_dmirror_clear_slots(struct g_consumer *cp, uint32_t mirror_ss)
{
	struct g_provider *pp = cp->provider;
	uint64_t s0, s1, bytes;
	uint8_t *zero;
	int error, e2;

	if (mirror_ss == 0 || mirror_ss % pp->sectorsize != 0)
		return (EINVAL);
	error = dmirror_sb_location((uint64_t)pp->mediasize / mirror_ss, mirror_ss, &s0, &s1,
	    &bytes);
	if (error != 0)
		return (error);
	if (bytes == 0 || bytes > 1024 * 1024)
		return (EINVAL);
	zero = malloc(bytes, M_DMIRROR, M_WAITOK | M_ZERO);
	error = g_dmirror_write_bytes(cp, (off_t)(s0 * mirror_ss), zero, bytes);
	e2 = g_dmirror_write_bytes(cp, (off_t)(s1 * mirror_ss), zero, bytes);
	free(zero, M_DMIRROR);
	if (error == 0)
		error = e2;
	if (error == 0)
		error = g_io_flush(cp);
	if (error == EOPNOTSUPP)
		error = 0;
	return (error);
}

/* ---------------------------------------------------------------------------------------- */
/* The host callbacks (worker context: dmirror.h says they must not sleep)                   */

static void *
g_dmirror_cb_alloc(void *ctx __unused, size_t size, int may_sleep)
{

	return (malloc(size, M_DMIRROR, (may_sleep ? M_WAITOK : M_NOWAIT) | M_ZERO));
}

static void
g_dmirror_cb_free(void *ctx __unused, void *ptr, size_t size __unused)
{

	free(ptr, M_DMIRROR);
}

static int
g_dmirror_defer_push(struct g_dmirror_softc *sc, int kind, u_int leg,
    const struct dmirror_leg_io *io, uint64_t token, int error)
{
	struct g_dmirror_defer *d;

	if (sc->sc_defer == NULL || sc->sc_dlen >= sc->sc_ndefer)
		return (0);
	d = &sc->sc_defer[(sc->sc_dhead + sc->sc_dlen) % sc->sc_ndefer];
	memset(d, 0, sizeof(*d));
	d->kind = kind;
	d->error = error;
	d->leg = leg;
	if (io != NULL)
		d->io = *io;
	d->io.token = token;
	sc->sc_dlen++;
	return (1);
}

/*
 * A completion the shim makes up (no I/O sent). Queued, never delivered from inside the core:
 * a bio on sc_synthq if one can be had without sleeping, else the ring, else (both exhausted)
 * a bio allocated with sleeping allowed: the worker holds no lock here, see the top comment.
 */
static void
g_dmirror_synth(struct g_dmirror_softc *sc, uint64_t token, u_int leg, int error)
{
	struct bio *bp;

	bp = g_new_bio();
	if (bp == NULL) {
		if (g_dmirror_defer_push(sc, DM_D_COMPLETE, leg, NULL, token, error))
			return;
		bp = g_alloc_bio();
	}
	bp->bio_error = error;
	bp->bio_caller1 = (void *)(uintptr_t)token;
	bp->bio_caller2 = (void *)(uintptr_t)((leg << 8) | DM_BF_SYNTH);
	bioq_insert_tail(&sc->sc_synthq, bp);
}

static void g_dmirror_done(struct bio *bp);

/*
 * Send one leg I/O as a child bio. 0: sent, or its completion made up; ENOMEM: no bio could be
 * had without sleeping (nothing was done: retry later).
 */
static int
g_dmirror_issue_one(struct g_dmirror_softc *sc, const struct dmirror_leg_io *io)
{
	struct g_dmirror_leg *leg;
	struct g_consumer *cp;
	struct bio *bp, *pbp;
	uint64_t ss, off, len;
	caddr_t data;
	uint8_t cmd;
	int flags;

	if (io->leg >= DMIRROR_MAX_LEGS) {
		DM_LOG(sc, "core issued an I/O to leg %u: refused", io->leg);
		g_dmirror_synth(sc, io->token, 0, EIO);
		return (0);
	}
	leg = &sc->sc_legs[io->leg];
	cp = leg->cp;
	if (cp == NULL || leg->gone) {
		g_dmirror_synth(sc, io->token, io->leg, ENXIO);
		return (0);
	}
	ss = sc->sc_cfg.sector_size;
	off = io->sector * ss;
	len = io->count * ss;
	if (io->sector > (uint64_t)OFF_MAX / ss || io->count > UINT32_MAX ||
	    len > (uint64_t)OFF_MAX - off) {
		g_dmirror_synth(sc, io->token, io->leg, EIO);
		return (0);
	}
	switch (io->op) {
	case DMIRROR_OP_READ:
		cmd = BIO_READ;
		break;
	case DMIRROR_OP_WRITE:
		cmd = BIO_WRITE;
		break;
	case DMIRROR_OP_FLUSH:
		cmd = BIO_FLUSH;
		off = (uint64_t)cp->provider->mediasize;
		len = 0;
		break;
	case DMIRROR_OP_DISCARD:
		if (!leg->candelete) {
			/* dmirror.h: EOPNOTSUPP is "not supported", not a failure. */
			g_dmirror_synth(sc, io->token, io->leg, EOPNOTSUPP);
			return (0);
		}
		cmd = BIO_DELETE;
		break;
	default:
		g_dmirror_synth(sc, io->token, io->leg, EIO);
		return (0);
	}
	data = NULL;
	pbp = NULL;
	if (io->buf_kind == DMIRROR_BUF_PARENT)
		pbp = (struct bio *)(uintptr_t)io->parent_buf;
	if (cmd == BIO_READ || cmd == BIO_WRITE) {
		/* Only these move data; a flush or delete ignores whatever buffer it names. */
		switch (io->buf_kind) {
		case DMIRROR_BUF_PARENT:
			if (pbp == NULL || pbp->bio_data == NULL ||
			    io->offset > (uint64_t)pbp->bio_length ||
			    len > (uint64_t)pbp->bio_length - io->offset) {
				DM_LOG(sc, "core issued an I/O outside its parent's buffer: "
				    "refused");
				g_dmirror_synth(sc, io->token, io->leg, EIO);
				return (0);
			}
			data = pbp->bio_data + io->offset;
			break;
		case DMIRROR_BUF_RESYNC:
			if (io->resync_slot >= sc->sc_nrbuf || io->offset > sc->sc_rbuf_bytes ||
			    len > sc->sc_rbuf_bytes - io->offset) {
				DM_LOG(sc, "core issued an I/O outside its resync buffer: refused");
				g_dmirror_synth(sc, io->token, io->leg, EIO);
				return (0);
			}
			data = (caddr_t)sc->sc_rbuf[io->resync_slot] + io->offset;
			break;
		case DMIRROR_BUF_META:
			if (cmd != BIO_WRITE || io->meta == NULL || io->meta_len != len) {
				DM_LOG(sc, "core issued a malformed metadata I/O: refused");
				g_dmirror_synth(sc, io->token, io->leg, EIO);
				return (0);
			}
			data = (caddr_t)(uintptr_t)io->meta;
			break;
		default:
			DM_LOG(sc, "core issued a data I/O without a buffer: refused");
			g_dmirror_synth(sc, io->token, io->leg, EIO);
			return (0);
		}
	}
	/* Children of a parent are its clones (GEOM accounting, tracing); the rest are new. */
	bp = pbp != NULL ? g_clone_bio(pbp) : g_new_bio();
	if (bp == NULL)
		return (ENOMEM);
	bp->bio_cmd = cmd;
	bp->bio_flags &= ~BIO_UNMAPPED;
	bp->bio_offset = (off_t)off;
	bp->bio_length = (off_t)len;
	bp->bio_data = data;
	bp->bio_done = g_dmirror_done;
	flags = (cmd == BIO_WRITE && io->fua) ? DM_BF_FUA : 0;
	bp->bio_caller1 = (void *)(uintptr_t)io->token;
	bp->bio_caller2 = (void *)(uintptr_t)((io->leg << 8) | flags);
	leg->outstanding++;
	g_io_request(bp, cp);
	return (0);
}

static void
g_dmirror_cb_issue(void *ctx, const struct dmirror_leg_io *io)
{
	struct g_dmirror_softc *sc = ctx;

	if (g_dmirror_issue_one(sc, io) != ENOMEM)
		return;
	if (g_dmirror_defer_push(sc, DM_D_ISSUE, io->leg, io, io->token, 0))
		return;
	/* No bio and no room to remember it: wait for memory (see the top comment). */
	while (g_dmirror_issue_one(sc, io) == ENOMEM)
		pause("dm:mem", 1);
}

static void
g_dmirror_cb_complete(void *ctx, uint64_t handle, int error)
{
	struct g_dmirror_softc *sc = ctx;
	struct bio *bp;

	/* A parent finished: a slot is free for the ones the core refused with EBUSY. */
	sc->sc_busy = 0;
	if (handle == (uint64_t)(uintptr_t)&sc->sc_flush_marker) {
		sc->sc_flush_wait = 0;
		sc->sc_flush_error = error;
		return;
	}
	bp = (struct bio *)(uintptr_t)handle;
	if (error == 0)
		bp->bio_completed = bp->bio_length;
	else
		bp->bio_completed = 0;
	g_io_deliver(bp, error);
}

static const char *
g_dmirror_legname(struct g_dmirror_softc *sc, u_int k)
{
	struct g_consumer *cp;

	if (k >= DMIRROR_MAX_LEGS)
		return ("?");
	cp = sc->sc_legs[k].cp;
	if (cp == NULL || cp->provider == NULL)
		return ("no device");
	return (cp->provider->name);
}

/* A leg's resync starts over (it left, or it is in sync): its next stall is news again. */
static void
g_dmirror_stall_reset(struct g_dmirror_softc *sc, uint32_t leg)
{
	if (leg < DMIRROR_MAX_LEGS) {
		sc->sc_stall_quiet &= ~(1u << leg);
		sc->sc_stall_done[leg] = 0;
	}
}

static void
g_dmirror_cb_event(void *ctx, const struct dmirror_event *ev)
{
	struct g_dmirror_softc *sc = ctx;

	switch (ev->kind) {
	case DMIRROR_EV_LEG_FAILED:
		g_dmirror_stall_reset(sc, ev->leg);
		if (ev->state == DMIRROR_LEG_MISSING)
			DM_LOG(sc, "leg %u (%s) is missing (error %d); writes are tracked for an "
			    "incremental rejoin", ev->leg, g_dmirror_legname(sc, ev->leg),
			    ev->error);
		else if (sc->sc_by_request == ev->leg + 1)
			DM_LOG(sc, "leg %u (%s) taken out for a rebuild, as requested",
			    ev->leg, g_dmirror_legname(sc, ev->leg));
		else
			DM_LOG(sc, "leg %u (%s) failed (error %d); it needs a full rebuild",
			    ev->leg, g_dmirror_legname(sc, ev->leg), ev->error);
		break;
	case DMIRROR_EV_RESYNC_PROGRESS:
		DM_DEBUG(sc, "leg %u: resync %ju/%ju sectors", ev->leg, (uintmax_t)ev->done,
		    (uintmax_t)ev->total);
		if (ev->leg < DMIRROR_MAX_LEGS) {
			/* A stalled chunk reports the same progress: only more copied sectors
			 * count as moving on. */
			if (ev->done > sc->sc_stall_done[ev->leg])
				sc->sc_stall_quiet &= ~(1u << ev->leg);
			if ((sc->sc_stall_quiet & (1u << ev->leg)) == 0)
				sc->sc_stall_done[ev->leg] = ev->done;
		}
		break;
	case DMIRROR_EV_LEG_IN_SYNC:
		DM_LOG(sc, "leg %u (%s) is in sync", ev->leg, g_dmirror_legname(sc, ev->leg));
		g_dmirror_stall_reset(sc, ev->leg);
		break;
	case DMIRROR_EV_RESYNC_STALLED:
		/* Once per chunk while no source can be read: say it once until the resync moves. */
		if (ev->leg >= DMIRROR_MAX_LEGS || (sc->sc_stall_quiet & (1u << ev->leg)) != 0)
			break;
		sc->sc_stall_quiet |= 1u << ev->leg;
		DM_LOG(sc, "resync of leg %u stalled at sector %ju: no leg could be read there "
		    "(retried; not logged again until it moves on)", ev->leg,
		    (uintmax_t)ev->sector);
		break;
	case DMIRROR_EV_REPAIRED:
		DM_LOG(sc, "leg %u: rewrote %ju sectors at %ju after a read error", ev->leg,
		    (uintmax_t)ev->count, (uintmax_t)ev->sector);
		break;
	case DMIRROR_EV_READY:
		sc->sc_busy = 0;
		break;
	case DMIRROR_EV_SHUTDOWN_DONE:
		sc->sc_shutdown_done = 1;
		break;
	case DMIRROR_EV_AUTHORITATIVE:
		DM_LOG(sc, "leg %u (%s) is now the authoritative leg", ev->leg,
		    g_dmirror_legname(sc, ev->leg));
		break;
	default:
		break;
	}
}

static int
g_dmirror_cb_meta_read(void *ctx, uint32_t k, uint64_t sector, uint8_t *buf, uint64_t len)
{
	struct g_dmirror_softc *sc = ctx;
	uint64_t ss = sc->sc_cfg.sector_size;
	struct g_consumer *cp;

	if (k >= DMIRROR_MAX_LEGS || ss == 0 || sector > (uint64_t)OFF_MAX / ss)
		return (EINVAL);
	cp = sc->sc_legs[k].cp;
	if (cp == NULL)
		return (ENXIO);
	return (g_dmirror_read_bytes(cp, (off_t)(sector * ss), buf, len));
}

static int
g_dmirror_cb_meta_write(void *ctx, uint32_t k, uint64_t sector, const uint8_t *buf,
    uint64_t len)
{
	struct g_dmirror_softc *sc = ctx;
	uint64_t ss = sc->sc_cfg.sector_size;
	struct g_consumer *cp;

	if (k >= DMIRROR_MAX_LEGS || ss == 0 || sector > (uint64_t)OFF_MAX / ss)
		return (EINVAL);
	cp = sc->sc_legs[k].cp;
	if (cp == NULL)
		return (ENXIO);
	return (g_dmirror_write_bytes(cp, (off_t)(sector * ss), buf, len));
}

static void
g_dmirror_cb_log(void *ctx, int level, const char *msg)
{
	struct g_dmirror_softc *sc = ctx;

	if (level >= DMIRROR_LOG_DEBUG && g_dmirror_debug == 0)
		return;
	DM_LOG(sc, "%s", msg);
}

/* The core's panic handler ends here (kernel builds of dmirror-ffi). */
void
dmirror_host_panic(const char *msg)
{

	panic("%s", msg);
}

/* ---------------------------------------------------------------------------------------- */
/* GEOM entry points that run outside the worker                                              */

static void
g_dmirror_start(struct bio *bp)
{
	struct g_dmirror_softc *sc = bp->bio_to->geom->softc;

	if (sc == NULL) {
		g_io_deliver(bp, ENXIO);
		return;
	}
	switch (bp->bio_cmd) {
	case BIO_READ:
	case BIO_WRITE:
	case BIO_DELETE:
	case BIO_FLUSH:
		break;
	case BIO_GETATTR:
		if (g_handleattr_int(bp, "GEOM::candelete", sc->sc_candelete))
			return;
		/* No kernel dumps onto a mirror: the core is not callable from a dump context. */
		g_io_deliver(bp, EOPNOTSUPP);
		return;
	default:
		g_io_deliver(bp, EOPNOTSUPP);
		return;
	}
	mtx_lock(&sc->sc_mtx);
	if (sc->sc_stopping) {
		mtx_unlock(&sc->sc_mtx);
		g_io_deliver(bp, ENXIO);
		return;
	}
	bioq_insert_tail(&sc->sc_inq, bp);
	wakeup(sc);
	mtx_unlock(&sc->sc_mtx);
}

/* A child bio is back (g_up thread: queue it for the worker, nothing else). */
static void
g_dmirror_done(struct bio *bp)
{
	struct g_dmirror_softc *sc = bp->bio_from->geom->softc;

	mtx_lock(&sc->sc_mtx);
	bioq_insert_tail(&sc->sc_doneq, bp);
	wakeup(sc);
	mtx_unlock(&sc->sc_mtx);
}

static void
g_dmirror_callout(void *arg)
{
	struct g_dmirror_softc *sc = arg;

	mtx_assert(&sc->sc_mtx, MA_OWNED);
	if (sc->sc_dying)
		return;
	sc->sc_tick = 1;
	if (sc->sc_waitticks > 0 && --sc->sc_waitticks == 0)
		sc->sc_go = 1;
	wakeup(sc);
	callout_schedule(&sc->sc_callout, g_dmirror_tick_hz());
}

static int
g_dmirror_access(struct g_provider *pp, int dr, int dw, int de)
{
	struct g_dmirror_softc *sc = pp->geom->softc;

	g_topology_assert();
	if (dr <= 0 && dw <= 0 && de <= 0)
		return (0);
	if (sc == NULL || sc->sc_state != DM_RUNNING)
		return (ENXIO);
	return (0);
}

static void
g_dmirror_orphan(struct g_consumer *cp)
{
	struct g_dmirror_softc *sc = cp->geom->softc;
	struct g_dmirror_cand *c;
	struct g_dmirror_req *r;
	int *kind = cp->private;

	g_topology_assert();
	if (sc == NULL || kind == NULL)
		return; /* a taste/clear/dump consumer: its owner releases it */
	if (*kind == DM_KIND_CAND) {
		c = cp->private;
		TAILQ_REMOVE(&sc->sc_cands, c, link);
		sc->sc_ncands--;
		cp->private = NULL;
		if (cp->acr != 0 || cp->acw != 0 || cp->ace != 0)
			g_access(cp, -cp->acr, -cp->acw, -cp->ace);
		g_detach(cp);
		g_destroy_consumer(cp);
		free(c->slot0, M_DMIRROR);
		free(c->slot1, M_DMIRROR);
		free(c, M_DMIRROR);
		return;
	}
	/* A leg: the worker stops using it and detaches it once its I/O is back. */
	r = g_dmirror_req_new(DM_REQ_ORPHAN);
	r->async = 1;
	r->cp = cp;
	r->leg = ((struct g_dmirror_leg *)cp->private)->index;
	g_dmirror_req_post(sc, r);
}

/* ---------------------------------------------------------------------------------------- */
/* The worker                                                                                 */

static void
g_dmirror_snapshot(struct g_dmirror_softc *sc)
{
	int k, cd;

	if (sc->sc_m == NULL || dmirror_status(sc->sc_m, sc->sc_work) != 0)
		return;
	cd = 0;
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		if (sc->sc_legs[k].cp != NULL && !sc->sc_legs[k].gone && sc->sc_legs[k].candelete)
			cd = 1;
	}
	mtx_lock(&sc->sc_mtx);
	memcpy(sc->sc_snap, sc->sc_work, sizeof(*sc->sc_snap));
	sc->sc_snap_valid = 1;
	sc->sc_generation = sc->sc_work->generation;
	sc->sc_candelete = cd;
	mtx_unlock(&sc->sc_mtx);
}

/* The core's state of slot k (worker; EMPTY if unknown). */
static uint32_t
g_dmirror_core_legstate(struct g_dmirror_softc *sc, u_int k)
{

	if (sc->sc_m == NULL || k >= DMIRROR_MAX_LEGS ||
	    dmirror_status(sc->sc_m, sc->sc_work) != 0 || k >= sc->sc_work->legs)
		return (DMIRROR_LEG_EMPTY);
	return (sc->sc_work->leg[k].state);
}

static void
g_dmirror_leg_candelete(struct g_dmirror_leg *leg)
{
	int val, error;

	val = 0;
	error = g_getattr("GEOM::candelete", leg->cp, &val);
	leg->candelete = (error == 0 && val != 0);
}

/* Detach the device of slot k (worker, its I/O drained). */
static void
g_dmirror_leg_detach(struct g_dmirror_softc *sc, struct g_dmirror_leg *leg)
{
	struct g_consumer *cp = leg->cp;
	int error;

	if (cp == NULL)
		return;
	if (leg->clear && !leg->gone) {
		error = g_dmirror_clear_slots(cp, sc->sc_cfg.sector_size);
		if (error != 0)
			DM_LOG(sc, "could not clear the metadata of %s (error %d)",
			    cp->provider->name, error);
	}
	g_topology_lock();
	leg->cp = NULL;
	cp->private = NULL;
	if (cp->acr != 0 || cp->acw != 0 || cp->ace != 0)
		g_access(cp, -cp->acr, -cp->acw, -cp->ace);
	g_detach(cp);
	g_destroy_consumer(cp);
	g_topology_unlock();
	leg->gone = 0;
	leg->detach = 0;
	leg->clear = 0;
	leg->candelete = 0;
}

static void
g_dmirror_detach_drained(struct g_dmirror_softc *sc)
{
	struct g_dmirror_leg *leg;
	int k;

	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		leg = &sc->sc_legs[k];
		if (leg->cp != NULL && (leg->gone || leg->detach) && leg->outstanding == 0)
			g_dmirror_leg_detach(sc, leg);
	}
}

/* A child is back: hand it to the core (or, for a durable write, flush the leg first). */
static void
g_dmirror_child_done(struct g_dmirror_softc *sc, struct bio *bp)
{
	uint64_t token = (uint64_t)(uintptr_t)bp->bio_caller1;
	uintptr_t c2 = (uintptr_t)bp->bio_caller2;
	u_int k = (c2 >> 8) & 0xff;
	int fl = c2 & 0xff;
	int error = bp->bio_error;
	struct g_dmirror_leg *leg = &sc->sc_legs[k % DMIRROR_MAX_LEGS];

	if ((fl & DM_BF_FUA) != 0 && error == 0 && leg->cp != NULL && !leg->gone) {
		/* GEOM has no FUA: the core asked for a durable write, so flush that leg. */
		g_reset_bio(bp);
		bp->bio_cmd = BIO_FLUSH;
		bp->bio_offset = leg->cp->provider->mediasize;
		bp->bio_length = 0;
		bp->bio_data = NULL;
		bp->bio_done = g_dmirror_done;
		bp->bio_caller1 = (void *)(uintptr_t)token;
		bp->bio_caller2 = (void *)(uintptr_t)((k << 8) | DM_BF_FUAFLUSH);
		g_io_request(bp, leg->cp);
		return;
	}
	if ((fl & DM_BF_FUAFLUSH) != 0 && error == EOPNOTSUPP)
		error = 0; /* no cache to flush: the write is as durable as it gets */
	if ((fl & DM_BF_SYNTH) == 0 && leg->outstanding > 0)
		leg->outstanding--;
	g_destroy_bio(bp);
	(void)dmirror_leg_done(sc->sc_m, token, error);
}

/* Made-up completions and leg I/Os that waited for memory. */
static void
g_dmirror_defer_run(struct g_dmirror_softc *sc)
{
	struct g_dmirror_defer d;
	struct bio *bp;
	int progress;

	do {
		progress = 0;
		while ((bp = bioq_takefirst(&sc->sc_synthq)) != NULL) {
			g_dmirror_child_done(sc, bp);
			progress = 1;
		}
		while (sc->sc_dlen > 0) {
			d = sc->sc_defer[sc->sc_dhead];
			if (d.kind == DM_D_ISSUE && g_dmirror_issue_one(sc, &d.io) == ENOMEM)
				break; /* still no memory: next completion or tick */
			sc->sc_dhead = (sc->sc_dhead + 1) % sc->sc_ndefer;
			sc->sc_dlen--;
			if (d.kind == DM_D_COMPLETE)
				(void)dmirror_leg_done(sc->sc_m, d.io.token, d.error);
			progress = 1;
		}
	} while (progress && bioq_first(&sc->sc_synthq) != NULL);
}

/* Give the core the parents that wait, in order, until it says EBUSY. */
static void
g_dmirror_submit_pending(struct g_dmirror_softc *sc)
{
	struct dmirror_parent_io pio;
	struct bio *bp;
	uint64_t ss = sc->sc_cfg.sector_size;
	int rc;

	while (!sc->sc_busy && (bp = bioq_takefirst(&sc->sc_pending)) != NULL) {
		if (sc->sc_exitreq != NULL) {
			g_io_deliver(bp, ENXIO);
			continue;
		}
		memset(&pio, 0, sizeof(pio));
		pio.handle = (uint64_t)(uintptr_t)bp;
		pio.buf = (uint64_t)(uintptr_t)bp;
		switch (bp->bio_cmd) {
		case BIO_READ:
			pio.op = DMIRROR_OP_READ;
			break;
		case BIO_WRITE:
			pio.op = DMIRROR_OP_WRITE;
			break;
		case BIO_DELETE:
			pio.op = DMIRROR_OP_DISCARD;
			break;
		default:
			pio.op = DMIRROR_OP_FLUSH;
			break;
		}
		if (pio.op != DMIRROR_OP_FLUSH) {
			/* g_io_check() made offset and length multiples of the sector size. */
			pio.sector = (uint64_t)bp->bio_offset / ss;
			pio.count = (uint64_t)bp->bio_length / ss;
		}
		/* The parent may complete inside dmirror_submit(): it is off our queue already. */
		rc = dmirror_submit(sc->sc_m, &pio);
		if (rc == DMIRROR_EBUSY) {
			bioq_insert_head(&sc->sc_pending, bp);
			sc->sc_busy = 1;
			break;
		}
		if (rc != 0)
			g_io_deliver(bp, rc == DMIRROR_EINVAL ? EINVAL : EIO);
		g_dmirror_defer_run(sc);
	}
}

/* ---- control requests, in the worker ---- */

static void g_dmirror_close_leg(struct g_consumer *cp);

/* Returns EAGAIN to be retried on the next loop (sc_cur), else the result. */
static int
g_dmirror_req_run(struct g_dmirror_softc *sc, struct g_dmirror_req *r)
{
	struct g_dmirror_leg *leg;
	uint32_t st;
	u_int k;
	int rc;

	leg = r->leg < DMIRROR_MAX_LEGS ? &sc->sc_legs[r->leg] : NULL;
	switch (r->op) {
	case DM_REQ_ATTACH:
		if (leg == NULL)
			return (EINVAL);
		if (r->stage == 0 && r->incremental &&
		    g_dmirror_core_legstate(sc, r->leg) == DMIRROR_LEG_FAILED) {
			/*
			 * Taste found the device of a leg that failed (I/O errors) and then went
			 * away: it is not taken back by itself, only by `rebuild` or `insert` (a
			 * failed leg never rejoins on its own; tests/scenarios/read-errors.sh). Seen
			 * in a real kernel: it rejoined at once.
			 */
			snprintf(r->msg, sizeof(r->msg), "%s: %s is leg %u, which failed: not taken "
			    "back (geom dmirror rebuild %s %s gives it back)", sc->sc_name,
			    r->cp->provider->name, r->leg, sc->sc_name, r->cp->provider->name);
			rc = EPERM;
			goto attach_undo;
		}
		if (r->stage == 0) {
			if (leg->cp != NULL && leg->cp != r->cp) {
				/* The old device of this slot went away and is being let go. */
				if ((leg->cp->flags & G_CF_ORPHAN) != 0 && r->retries++ < 100)
					return (EAGAIN);
				snprintf(r->msg, sizeof(r->msg), "%s: slot %u already has a device",
				    sc->sc_name, r->leg);
				rc = EEXIST;
				goto attach_undo;
			}
			g_topology_lock();
			leg->cp = r->cp;
			r->cp->private = leg;
			g_topology_unlock();
			leg->gone = 0;
			leg->detach = 0;
			g_dmirror_leg_candelete(leg);
			r->stage = 1;
		}
		rc = dmirror_add_leg(sc->sc_m, r->leg, r->uuid, r->sectors, r->incremental);
		if (rc == DMIRROR_EAGAIN && r->retries++ < 100)
			return (EAGAIN);
		if (rc == 0) {
			memcpy(leg->uuid, r->uuid, 16);
			leg->sectors = r->sectors;
			DM_LOG(sc, "%s joined as leg %u (%s resync)", r->cp->provider->name,
			    r->leg, r->incremental ? "incremental" : "full");
			return (0);
		}
		if (rc == DMIRROR_EBUSY) {
			st = g_dmirror_core_legstate(sc, r->leg);
			if (st == DMIRROR_LEG_IN_SYNC || st == DMIRROR_LEG_REBUILDING) {
				/* It came back before the core noticed it was away: still valid. */
				return (0);
			}
		}
		snprintf(r->msg, sizeof(r->msg), "%s: cannot add %s as leg %u: %s", sc->sc_name,
		    r->cp->provider->name, r->leg, g_dmirror_errstr(rc));
		leg->detach = 1;
		return (rc);
attach_undo:
		/* Not closed plainly: the retaste that follows would bring it right back here. */
		g_topology_lock();
		r->cp->private = NULL;
		g_dmirror_close_leg(r->cp);
		g_topology_unlock();
		return (rc);
	case DM_REQ_REMOVE:
		if (leg == NULL)
			return (EINVAL);
		if (r->stage == 0) {
			rc = dmirror_remove_leg(sc->sc_m, r->leg);
			if (rc == DMIRROR_EAGAIN && r->retries++ < 100)
				return (EAGAIN);
			if (rc != 0) {
				snprintf(r->msg, sizeof(r->msg), "%s: cannot remove leg %u: %s",
				    sc->sc_name, r->leg, g_dmirror_errstr(rc));
				return (rc);
			}
			memset(leg->uuid, 0, 16);
			leg->detach = 1;
			leg->clear = r->clear;
			r->stage = 1;
		}
		if (leg->cp != NULL && leg->outstanding > 0)
			return (EAGAIN);
		g_dmirror_leg_detach(sc, leg);
		return (0);
	case DM_REQ_FORGET:
		r->count = 0;
		for (k = 0; k < sc->sc_cfg.legs && k < DMIRROR_MAX_LEGS; k++) {
			st = g_dmirror_core_legstate(sc, k);
			if ((st == DMIRROR_LEG_MISSING || st == DMIRROR_LEG_FAILED) &&
			    sc->sc_legs[k].cp == NULL && dmirror_remove_leg(sc->sc_m, k) == 0) {
				memset(sc->sc_legs[k].uuid, 0, 16);
				r->count++;
			}
		}
		return (0);
	case DM_REQ_REBUILD:
		if (leg == NULL)
			return (EINVAL);
		if (leg->cp == NULL) {
			snprintf(r->msg, sizeof(r->msg), "%s: slot %u has no device", sc->sc_name,
			    r->leg);
			return (ENXIO);
		}
		if (r->stage == 0) {
			st = g_dmirror_core_legstate(sc, r->leg);
			if (st == DMIRROR_LEG_IN_SYNC || st == DMIRROR_LEG_REBUILDING) {
				/* Its LEG_FAILED event arrives inside this call: say why. */
				sc->sc_by_request = r->leg + 1;
				rc = dmirror_fail_leg(sc->sc_m, r->leg);
				sc->sc_by_request = 0;
				if (rc != 0) {
					snprintf(r->msg, sizeof(r->msg),
					    "%s: cannot rebuild leg %u: %s", sc->sc_name, r->leg,
					    g_dmirror_errstr(rc));
					return (rc);
				}
			}
			r->stage = 1;
		}
		rc = dmirror_add_leg(sc->sc_m, r->leg, leg->uuid, leg->sectors, 0);
		if (rc == DMIRROR_EAGAIN && r->retries++ < 100)
			return (EAGAIN);
		if (rc != 0)
			snprintf(r->msg, sizeof(r->msg), "%s: cannot rebuild leg %u: %s",
			    sc->sc_name, r->leg, g_dmirror_errstr(rc));
		return (rc);
	case DM_REQ_POLICY:
		rc = dmirror_set_read_policy(sc->sc_m, &r->policy);
		if (rc != 0)
			snprintf(r->msg, sizeof(r->msg), "%s: read policy refused: %s",
			    sc->sc_name, g_dmirror_errstr(rc));
		else
			sc->sc_cfg.read_policy = r->policy;
		return (rc);
	case DM_REQ_ORPHAN:
		if (leg != NULL && leg->cp == r->cp && r->cp != NULL) {
			DM_LOG(sc, "leg %u (%s) disappeared", r->leg, r->cp->provider->name);
			leg->gone = 1;
			/*
			 * Missing now, not at its next I/O: status is honest at once and writes from
			 * here on are tracked for its incremental return. The core keeps the last
			 * in-sync leg (EPERM); its I/O then fails with ENXIO as it comes back.
			 */
			if (sc->sc_m != NULL)
				(void)dmirror_leg_gone(sc->sc_m, r->leg);
		}
		return (0);
	default:
		return (EINVAL);
	}
}

/* ---- creating the core ---- */

/*
 * Create the core: from cfg + init (label), or from an assembly (as != NULL; the bitmaps it lists
 * are read through meta_read from the legs already in sc_legs). Worker only: this needs the
 * worker's large stack and may sleep. Whatever it allocated before failing is released by the
 * teardown.
 */
static int
g_dmirror_core_create(struct g_dmirror_softc *sc, const struct dmirror_config *cfg,
    const struct dmirror_init *init, const struct dmirror_assembly *as, char *msg,
    size_t msglen)
{
	struct dmirror_why why;
	uint64_t bytes;
	uint32_t i;
	int error, k;

	sc->sc_cfg = *cfg;
	memset(&why, 0, sizeof(why));
	error = dmirror_memory_needed(cfg, &bytes, &why);
	if (error != 0) {
		snprintf(msg, msglen, "%s: configuration refused: %s", sc->sc_name,
		    dmirror_why_str(why.code));
		return (error);
	}
	if (bytes > DM_MAX_CORE_BYTES) {
		snprintf(msg, msglen, "%s: the mirror would need %ju bytes of kernel memory "
		    "(at most %ju): use a larger region size", sc->sc_name, (uintmax_t)bytes,
		    (uintmax_t)DM_MAX_CORE_BYTES);
		return (ENOMEM);
	}
	if (cfg->resync_max_inflight == 0 || cfg->resync_max_inflight > 1024 ||
	    (uint64_t)cfg->resync_chunk_sectors * cfg->sector_size > 16 * 1024 * 1024) {
		snprintf(msg, msglen, "%s: resync buffers out of range", sc->sc_name);
		return (EINVAL);
	}
	sc->sc_ops.alloc = g_dmirror_cb_alloc;
	sc->sc_ops.free = g_dmirror_cb_free;
	sc->sc_ops.lock = NULL; /* one worker thread makes every call: see the top comment */
	sc->sc_ops.unlock = NULL;
	sc->sc_ops.issue = g_dmirror_cb_issue;
	sc->sc_ops.complete = g_dmirror_cb_complete;
	sc->sc_ops.event = g_dmirror_cb_event;
	sc->sc_ops.schedule = NULL;
	sc->sc_ops.meta_read = g_dmirror_cb_meta_read;
	sc->sc_ops.meta_write = g_dmirror_cb_meta_write;
	sc->sc_ops.log = g_dmirror_cb_log;

	sc->sc_rbuf_bytes = (size_t)cfg->resync_chunk_sectors * cfg->sector_size;
	sc->sc_rbuf = malloc(sizeof(uint8_t *) * cfg->resync_max_inflight, M_DMIRROR,
	    M_WAITOK | M_ZERO);
	sc->sc_nrbuf = cfg->resync_max_inflight;
	for (i = 0; i < sc->sc_nrbuf; i++)
		sc->sc_rbuf[i] = malloc(sc->sc_rbuf_bytes, M_DMIRROR, M_WAITOK);
	/* Estimated bound on leg I/Os outstanding at once (dmirror.h does not give one). */
	sc->sc_ndefer = cfg->max_leg_ios + cfg->resync_max_inflight + 64u * cfg->legs + 1024u;
	sc->sc_defer = malloc(sizeof(*sc->sc_defer) * sc->sc_ndefer, M_DMIRROR,
	    M_WAITOK | M_ZERO);
	sc->sc_work = malloc(sizeof(*sc->sc_work), M_DMIRROR, M_WAITOK | M_ZERO);

	memset(&why, 0, sizeof(why));
	if (as != NULL)
		error = dmirror_create_assembled(as, cfg, &sc->sc_ops, sc, &sc->sc_m, &why);
	else
		error = dmirror_create(cfg, init, &sc->sc_ops, sc, 0, &sc->sc_m, &why);
	if (error != 0) {
		sc->sc_m = NULL;
		snprintf(msg, msglen, "%s: cannot create the mirror: %s (%s, leg %u)", sc->sc_name,
		    g_dmirror_errstr(error), dmirror_why_str(why.code), why.leg);
		return (error);
	}
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		if (sc->sc_legs[k].cp != NULL)
			g_dmirror_leg_candelete(&sc->sc_legs[k]);
	}
	/* The first metadata round (unclean flag, bitmaps) and any resync start now. */
	(void)dmirror_tick(sc->sc_m);
	g_dmirror_defer_run(sc);
	g_dmirror_snapshot(sc);
	return (0);
}

static void
g_dmirror_publish(struct g_dmirror_softc *sc)
{
	struct g_provider *pp;

	g_topology_lock();
	pp = g_new_providerf(sc->sc_geom, G_DMIRROR_PREFIX "%s", sc->sc_name);
	pp->sectorsize = sc->sc_cfg.sector_size;
	pp->mediasize = (off_t)(sc->sc_cfg.data_sectors * sc->sc_cfg.sector_size);
	pp->private = sc;
	sc->sc_provider = pp;
	sc->sc_state = DM_RUNNING;
	g_error_provider(pp, 0);
	g_topology_unlock();
	DM_LOG(sc, "provider %s is ready (%ju bytes)", pp->name, (uintmax_t)pp->mediasize);
}

/* Is a STOP queued? (A starting mirror can be stopped before it ever ran.) */
static struct g_dmirror_req *
g_dmirror_take_stop(struct g_dmirror_softc *sc)
{
	struct g_dmirror_req *r;

	mtx_assert(&sc->sc_mtx, MA_OWNED);
	TAILQ_FOREACH(r, &sc->sc_reqs, link) {
		if (r->op == DM_REQ_STOP) {
			TAILQ_REMOVE(&sc->sc_reqs, r, link);
			return (r);
		}
	}
	return (NULL);
}

/* Detach and destroy a leg's consumer from a GEOM event; see g_dmirror_close_leg(). */
static void
g_dmirror_destroy_consumer_ev(void *arg, int flag)
{
	struct g_consumer *cp = arg;

	g_topology_assert();
	if (flag == EV_CANCEL)
		return;
	g_detach(cp);
	g_destroy_consumer(cp);
}

/*
 * Close and destroy a consumer of a leg or candidate device the class lets go (the mirror
 * stops, a device is not used or not taken back). Closing the last writer of a
 * provider makes GEOM post a retaste of it (g_access()), and that retaste skips a class only
 * while the class still has a consumer attached to the provider. Destroyed at once, the
 * consumer is gone when the retaste runs: the class tastes its own legs and assembles the
 * mirror again right after `stop` (seen in a real FreeBSD 15 kernel, tests/vm/README.md). So a
 * consumer that held the provider's last write access is detached by an event queued behind
 * that retaste.
 */
static void
g_dmirror_close_leg(struct g_consumer *cp)
{
	struct g_provider *pp = cp->provider;
	int later;

	g_topology_assert();
	later = pp != NULL && cp->acw > 0 && pp->acw == cp->acw && pp->error == 0 &&
	    (pp->geom->flags & G_GEOM_WITHER) == 0;
	if (cp->acr != 0 || cp->acw != 0 || cp->ace != 0)
		g_access(cp, -cp->acr, -cp->acw, -cp->ace);
	if (later && g_post_event(g_dmirror_destroy_consumer_ev, cp, M_WAITOK, cp, NULL) == 0)
		return;
	g_detach(cp);
	g_destroy_consumer(cp);
}

/* Assemble from the candidates found by taste (worker). */
static int
g_dmirror_assemble(struct g_dmirror_softc *sc, char *msg, size_t msglen)
{
	struct dmirror_leg_read *reads;
	struct g_dmirror_cand **cv, *c;
	struct dmirror_assembly *as;
	struct g_dmirror_leg *leg;
	struct dmirror_why why;
	struct g_dmirror_req *stop = NULL;
	char amsg[256];
	u_int n, k;
	int error;

	mtx_lock(&sc->sc_mtx);
	while (!sc->sc_go && (stop = g_dmirror_take_stop(sc)) == NULL)
		msleep(sc, &sc->sc_mtx, PRIBIO, "dm:wait", 0);
	mtx_unlock(&sc->sc_mtx);
	if (!sc->sc_go || stop != NULL) {
		sc->sc_exitreq = stop;
		snprintf(msg, msglen, "%s: stopped before it was assembled", sc->sc_name);
		return (ECANCELED);
	}

	reads = malloc(sizeof(*reads) * 2 * DMIRROR_MAX_LEGS, M_DMIRROR, M_WAITOK | M_ZERO);
	cv = malloc(sizeof(*cv) * 2 * DMIRROR_MAX_LEGS, M_DMIRROR, M_WAITOK | M_ZERO);
	as = malloc(sizeof(*as), M_DMIRROR, M_WAITOK | M_ZERO);

	/*
	 * Under the topology lock: no candidate comes or goes while we choose. Every candidate is
	 * opened first; one that cannot be opened is left out of the assembly (the core then sees
	 * its leg as missing), so that the bitmaps the assembly asks for come from legs we hold.
	 */
	g_topology_lock();
	sc->sc_state = DM_ASSEMBLING;
	n = 0;
	TAILQ_FOREACH(c, &sc->sc_cands, link) {
		if (n == 2 * DMIRROR_MAX_LEGS || c->cp == NULL)
			continue;
		error = g_access(c->cp, 1, 1, 1);
		if (error != 0) {
			printf("GEOM_DMIRROR: %s: cannot open %s (error %d): left out\n",
			    sc->sc_name, c->cp->provider->name, error);
			continue;
		}
		reads[n].slot0 = c->slot0;
		reads[n].slot0_len = c->slot0 != NULL ? c->slot_bytes : 0;
		reads[n].slot1 = c->slot1;
		reads[n].slot1_len = c->slot1 != NULL ? c->slot_bytes : 0;
		reads[n].sectors = c->sectors;
		reads[n].label = n;
		reads[n].name = c->cp->provider->name;
		reads[n].sector_size = c->ss;
		cv[n] = c;
		n++;
	}
	memset(&why, 0, sizeof(why));
	amsg[0] = '\0';
	/* Pure and non-sleeping; the worker's stack is large enough (DM_KSTACK_PAGES). */
	error = n == 0 ? DMIRROR_ENXIO :
	    dmirror_assemble(reads, n, NULL, as, &why, amsg, sizeof(amsg));
	if (error != 0) {
		g_topology_unlock();
		/* The core's own text says it all when it gives no reason code (split brain). */
		if (why.code == DMIRROR_WHY_NONE && amsg[0] != '\0')
			snprintf(msg, msglen, "%s: cannot assemble from %u device(s): %s (%s)",
			    sc->sc_name, n, g_dmirror_errstr(error), amsg);
		else
			snprintf(msg, msglen, "%s: cannot assemble from %u device(s): %s (%s%s%s)",
			    sc->sc_name, n, g_dmirror_errstr(error), dmirror_why_str(why.code),
			    amsg[0] != '\0' ? ": " : "", amsg);
		goto out;
	}
	sc->sc_generation = as->init.generation;
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		leg = &sc->sc_legs[k];
		memcpy(leg->uuid, as->init.legs[k].uuid, 16);
		leg->sectors = as->init.legs[k].sectors;
		if (k >= as->config.legs || !as->present[k] || as->label[k] >= n)
			continue;
		c = cv[as->label[k]];
		if (c->cp == NULL)
			continue;
		leg->cp = c->cp;
		leg->cp->private = leg;
		leg->sectors = c->sectors;
		c->cp = NULL;
	}
	/* Devices not used (stale copies, duplicates, left out) are let go. */
	while ((c = TAILQ_FIRST(&sc->sc_cands)) != NULL) {
		TAILQ_REMOVE(&sc->sc_cands, c, link);
		if (c->cp != NULL) {
			printf("GEOM_DMIRROR: %s: %s is not used\n", sc->sc_name,
			    c->cp->provider->name);
			c->cp->private = NULL;
			g_dmirror_close_leg(c->cp);
		}
		free(c->slot0, M_DMIRROR);
		free(c->slot1, M_DMIRROR);
		free(c, M_DMIRROR);
	}
	sc->sc_ncands = 0;
	g_topology_unlock();
	if (amsg[0] != '\0')
		DM_LOG(sc, "%s", amsg);

	for (k = 0; k < as->config.legs && k < DMIRROR_MAX_LEGS; k++) {
		if (as->init.legs[k].state != DMIRROR_LEG_EMPTY)
			DM_LOG(sc, "leg %u: %s, %s", k, g_dmirror_legstate(as->init.legs[k].state),
			    g_dmirror_legname(sc, k));
	}
	error = g_dmirror_core_create(sc, &as->config, NULL, as, msg, msglen);
	if (error == 0)
		g_dmirror_publish(sc);
out:
	free(as, M_DMIRROR);
	free(cv, M_DMIRROR);
	free(reads, M_DMIRROR);
	return (error);
}

/* ---- teardown: the one place a mirror's resources are released ---- */

/* Parents still queued get ENXIO; start() refuses new ones from now on. */
static void
g_dmirror_fail_queued(struct g_dmirror_softc *sc)
{
	struct bio *bp;

	mtx_lock(&sc->sc_mtx);
	sc->sc_stopping = 1;
	while ((bp = bioq_takefirst(&sc->sc_inq)) != NULL)
		bioq_insert_tail(&sc->sc_pending, bp);
	mtx_unlock(&sc->sc_mtx);
	while ((bp = bioq_takefirst(&sc->sc_pending)) != NULL)
		g_io_deliver(bp, ENXIO);
}

/*
 * Requests still queued are answered ENXIO (topology lock held, gp->softc already NULL so no
 * new ones can be posted); a device taste or insert opened for an ATTACH is given back.
 */
static void
g_dmirror_drain_reqs(struct g_dmirror_softc *sc)
{
	struct g_dmirror_req *r;
	struct g_consumer *cp;

	g_topology_assert();
	for (;;) {
		mtx_lock(&sc->sc_mtx);
		r = TAILQ_FIRST(&sc->sc_reqs);
		if (r != NULL)
			TAILQ_REMOVE(&sc->sc_reqs, r, link);
		mtx_unlock(&sc->sc_mtx);
		if (r == NULL)
			break;
		cp = r->cp;
		if (r->op == DM_REQ_ATTACH && cp != NULL &&
		    cp != sc->sc_legs[r->leg % DMIRROR_MAX_LEGS].cp) {
			cp->private = NULL;
			if (cp->acr != 0 || cp->acw != 0 || cp->ace != 0)
				g_access(cp, -cp->acr, -cp->acw, -cp->ace);
			g_detach(cp);
			g_destroy_consumer(cp);
		}
		snprintf(r->msg, sizeof(r->msg), "%s: the mirror stopped", sc->sc_name);
		g_dmirror_req_finish(r, ENXIO);
	}
}

static void __dead2
g_dmirror_teardown(struct g_dmirror_softc *sc, int error, const char *msg)
{
	struct g_dmirror_req *exitreq = sc->sc_exitreq;
	struct g_dmirror_req *startreq = sc->sc_startreq;
	struct g_dmirror_cand *c;
	struct g_consumer *cp;
	struct g_geom *gp = sc->sc_geom;
	uint32_t i;
	int k, clear;

	clear = exitreq != NULL && exitreq->op == DM_REQ_STOP && exitreq->clear;
	g_dmirror_fail_queued(sc);
	if (sc->sc_m != NULL) {
		/* Idle by construction (the loop only leaves when it is); if not, leak it. */
		if (dmirror_destroy(sc->sc_m) != 0)
			DM_LOG(sc, "core not idle at teardown: its memory is leaked, not freed");
		sc->sc_m = NULL;
	}
	mtx_lock(&sc->sc_mtx);
	sc->sc_dying = 1;
	mtx_unlock(&sc->sc_mtx);
	callout_drain(&sc->sc_callout);

	if (clear) {
		for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
			cp = sc->sc_legs[k].cp;
			if (cp != NULL && !sc->sc_legs[k].gone &&
			    g_dmirror_clear_slots(cp, sc->sc_cfg.sector_size) != 0)
				DM_LOG(sc, "could not clear the metadata of %s",
				    cp->provider->name);
		}
	}
	for (i = 0; sc->sc_rbuf != NULL && i < sc->sc_nrbuf; i++)
		free(sc->sc_rbuf[i], M_DMIRROR);
	free(sc->sc_rbuf, M_DMIRROR);
	free(sc->sc_defer, M_DMIRROR);
	free(sc->sc_work, M_DMIRROR);
	free(sc->sc_init, M_DMIRROR);

	/* Wither first: closing the legs then does not make GEOM retaste them. */
	g_topology_lock();
	gp->softc = NULL;
	if (sc->sc_provider != NULL)
		sc->sc_provider->private = NULL;
	g_wither_geom(gp, ENXIO);
	g_dmirror_drain_reqs(sc);
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		cp = sc->sc_legs[k].cp;
		if (cp == NULL)
			continue;
		cp->private = NULL;
		g_dmirror_close_leg(cp);
		sc->sc_legs[k].cp = NULL;
	}
	while ((c = TAILQ_FIRST(&sc->sc_cands)) != NULL) {
		TAILQ_REMOVE(&sc->sc_cands, c, link);
		if (c->cp != NULL) {
			c->cp->private = NULL;
			g_dmirror_close_leg(c->cp);
		}
		free(c->slot0, M_DMIRROR);
		free(c->slot1, M_DMIRROR);
		free(c, M_DMIRROR);
	}
	free(sc->sc_dump, M_DMIRROR);
	free(sc->sc_snap, M_DMIRROR);
	g_topology_unlock();

	if (msg != NULL && msg[0] != '\0')
		printf("GEOM_DMIRROR: %s\n", msg);
	else
		printf("GEOM_DMIRROR: %s: stopped\n", sc->sc_name);
	mtx_destroy(&sc->sc_mtx);
	free(sc, M_DMIRROR);

	if (startreq != NULL) {
		if (msg != NULL)
			strlcpy(startreq->msg, msg, sizeof(startreq->msg));
		g_dmirror_req_finish(startreq, error != 0 ? error : ENXIO);
	}
	if (exitreq != NULL && exitreq != startreq)
		g_dmirror_req_finish(exitreq, 0);
	kproc_exit(0);
}

/* ---- the loop ---- */

static void
g_dmirror_worker(void *arg)
{
	struct g_dmirror_softc *sc = arg;
	struct bio_queue_head done;
	struct g_dmirror_req *r;
	struct bio *bp;
	char msg[384]; /* room for the core's longest explanation (a split brain's) */
	int error, tick, rc;

	thread_lock(curthread);
	sched_prio(curthread, PRIBIO);
	thread_unlock(curthread);

	msg[0] = '\0';
	if (sc->sc_label) {
		error = g_dmirror_core_create(sc, &sc->sc_cfg, sc->sc_init, NULL, msg,
		    sizeof(msg));
		if (error == 0) {
			/*
			 * label returns once a flush through the mirror completed: the core
			 * orders it after the first metadata round (superblocks, bitmaps).
			 */
			struct dmirror_parent_io pio;

			memset(&pio, 0, sizeof(pio));
			pio.handle = (uint64_t)(uintptr_t)&sc->sc_flush_marker;
			pio.op = DMIRROR_OP_FLUSH;
			sc->sc_flush_wait = 1;
			error = dmirror_submit(sc->sc_m, &pio);
			if (error != 0) {
				sc->sc_flush_wait = 0;
				snprintf(msg, sizeof(msg), "%s: first flush refused: %s",
				    sc->sc_name, g_dmirror_errstr(error));
			}
			g_dmirror_defer_run(sc);
		}
	} else {
		error = g_dmirror_assemble(sc, msg, sizeof(msg));
	}
	if (error != 0) {
		/* Nothing ran on this core yet, but legs may have I/O in flight. */
		if (sc->sc_m != NULL) {
			(void)dmirror_shutdown(sc->sc_m);
			sc->sc_stop_deadline = ticks + (int)g_dmirror_stop_timeout * hz;
			/* fall into the loop to drain, then teardown with this error */
		} else {
			g_dmirror_teardown(sc, error, msg);
		}
	}

	for (;;) {
		bioq_init(&done);
		r = NULL;
		mtx_lock(&sc->sc_mtx);
		for (;;) {
			while ((bp = bioq_takefirst(&sc->sc_doneq)) != NULL)
				bioq_insert_tail(&done, bp);
			while ((bp = bioq_takefirst(&sc->sc_inq)) != NULL)
				bioq_insert_tail(&sc->sc_pending, bp);
			if (sc->sc_cur == NULL && sc->sc_exitreq == NULL && error == 0 &&
			    (r = TAILQ_FIRST(&sc->sc_reqs)) != NULL)
				TAILQ_REMOVE(&sc->sc_reqs, r, link);
			tick = sc->sc_tick;
			sc->sc_tick = 0;
			if (bioq_first(&done) != NULL || r != NULL || tick ||
			    bioq_first(&sc->sc_synthq) != NULL ||
			    (bioq_first(&sc->sc_pending) != NULL && !sc->sc_busy))
				break;
			msleep(sc, &sc->sc_mtx, PRIBIO, "dm:idle", 0);
		}
		mtx_unlock(&sc->sc_mtx);

		while ((bp = bioq_takefirst(&done)) != NULL) {
			g_dmirror_child_done(sc, bp);
			g_dmirror_defer_run(sc);
		}
		g_dmirror_defer_run(sc);
		if (tick) {
			(void)dmirror_tick(sc->sc_m);
			g_dmirror_defer_run(sc);
			g_dmirror_snapshot(sc);
		}
		if (r != NULL) {
			if (r->op == DM_REQ_STOP) {
				sc->sc_exitreq = r;
				mtx_lock(&sc->sc_mtx);
				sc->sc_stopping = 1;
				mtx_unlock(&sc->sc_mtx);
				(void)dmirror_shutdown(sc->sc_m);
				g_dmirror_defer_run(sc);
				sc->sc_stop_deadline = ticks + (int)g_dmirror_stop_timeout * hz;
			} else {
				sc->sc_cur = r;
			}
		}
		if (sc->sc_cur != NULL && (r != NULL || tick)) {
			r = sc->sc_cur;
			rc = g_dmirror_req_run(sc, r);
			g_dmirror_defer_run(sc);
			/* Before the requester wakes: `status` right after a verb shows its effect. */
			g_dmirror_snapshot(sc);
			if (rc != EAGAIN) {
				sc->sc_cur = NULL;
				g_dmirror_req_finish(r, rc);
			}
		}
		g_dmirror_submit_pending(sc);
		g_dmirror_detach_drained(sc);

		/* label: publish once the first flush is back */
		if (sc->sc_label && sc->sc_startreq != NULL && !sc->sc_flush_wait && error == 0 &&
		    sc->sc_exitreq == NULL) {
			if (sc->sc_flush_error != 0) {
				snprintf(msg, sizeof(msg), "%s: metadata could not be written to "
				    "any leg (error %d)", sc->sc_name, sc->sc_flush_error);
				error = sc->sc_flush_error;
				(void)dmirror_shutdown(sc->sc_m);
				sc->sc_stop_deadline = ticks + (int)g_dmirror_stop_timeout * hz;
			} else {
				g_dmirror_publish(sc);
				g_dmirror_snapshot(sc);
				g_dmirror_req_finish(sc->sc_startreq, 0);
				sc->sc_startreq = NULL;
			}
		}

		/* stopping (or a failed start draining): leave once the core is idle */
		if (sc->sc_exitreq != NULL || error != 0) {
			mtx_lock(&sc->sc_mtx);
			sc->sc_stopping = 1;
			mtx_unlock(&sc->sc_mtx);
			while ((bp = bioq_takefirst(&sc->sc_pending)) != NULL)
				g_io_deliver(bp, ENXIO);
			if ((sc->sc_shutdown_done || ticks - sc->sc_stop_deadline >= 0) &&
			    dmirror_is_idle(sc->sc_m) == 0 && sc->sc_dlen == 0 &&
			    bioq_first(&sc->sc_synthq) == NULL && sc->sc_cur == NULL) {
				if (!sc->sc_shutdown_done)
					DM_LOG(sc, "clean shutdown did not finish in time: dirty "
					    "regions will be resynced at the next assembly");
				g_dmirror_detach_drained(sc);
				g_dmirror_teardown(sc, error, error != 0 ? msg : NULL);
			}
		}
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Creating a softc (event thread, topology lock held)                                        */

static struct g_dmirror_softc *
g_dmirror_softc_new(struct g_class *mp, const char *name, const uint8_t *uuid)
{
	struct g_dmirror_softc *sc;
	struct g_geom *gp;
	int k;

	g_topology_assert();
	sc = malloc(sizeof(*sc), M_DMIRROR, M_WAITOK | M_ZERO);
	strlcpy(sc->sc_name, name, sizeof(sc->sc_name));
	memcpy(sc->sc_uuid, uuid, 16);
	sc->sc_state = DM_STARTING;
	mtx_init(&sc->sc_mtx, "gdmirror", NULL, MTX_DEF);
	bioq_init(&sc->sc_inq);
	bioq_init(&sc->sc_doneq);
	bioq_init(&sc->sc_pending);
	bioq_init(&sc->sc_synthq);
	TAILQ_INIT(&sc->sc_reqs);
	TAILQ_INIT(&sc->sc_cands);
	callout_init_mtx(&sc->sc_callout, &sc->sc_mtx, 0);
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		sc->sc_legs[k].kind = DM_KIND_LEG;
		sc->sc_legs[k].sc = sc;
		sc->sc_legs[k].index = k;
	}
	sc->sc_snap = malloc(sizeof(*sc->sc_snap), M_DMIRROR, M_WAITOK | M_ZERO);
	sc->sc_dump = malloc(sizeof(*sc->sc_dump), M_DMIRROR, M_WAITOK | M_ZERO);
	gp = g_new_geomf(mp, "%s", name);
	gp->softc = sc;
	sc->sc_geom = gp;
	return (sc);
}

/* Undo g_dmirror_softc_new() for a mirror whose worker never started. */
static void
g_dmirror_softc_abort(struct g_dmirror_softc *sc)
{
	struct g_dmirror_cand *c;
	struct g_consumer *cp;
	int k;

	g_topology_assert();
	sc->sc_geom->softc = NULL;
	g_wither_geom(sc->sc_geom, ENXIO);
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		cp = sc->sc_legs[k].cp;
		if (cp == NULL)
			continue;
		cp->private = NULL;
		if (cp->acr != 0 || cp->acw != 0 || cp->ace != 0)
			g_access(cp, -cp->acr, -cp->acw, -cp->ace);
		g_detach(cp);
		g_destroy_consumer(cp);
	}
	while ((c = TAILQ_FIRST(&sc->sc_cands)) != NULL) {
		TAILQ_REMOVE(&sc->sc_cands, c, link);
		if (c->cp != NULL) {
			g_detach(c->cp);
			g_destroy_consumer(c->cp);
		}
		free(c->slot0, M_DMIRROR);
		free(c->slot1, M_DMIRROR);
		free(c, M_DMIRROR);
	}
	free(sc->sc_init, M_DMIRROR);
	free(sc->sc_snap, M_DMIRROR);
	free(sc->sc_dump, M_DMIRROR);
	mtx_destroy(&sc->sc_mtx);
	free(sc, M_DMIRROR);
}

static int
g_dmirror_softc_launch(struct g_dmirror_softc *sc)
{
	int error;

	g_topology_assert();
	error = kproc_create(g_dmirror_worker, sc, &sc->sc_worker, 0, DM_KSTACK_PAGES,
	    "g_dmirror %s",
	    sc->sc_name);
	if (error != 0)
		return (error);
	mtx_lock(&sc->sc_mtx);
	callout_reset(&sc->sc_callout, g_dmirror_tick_hz(), g_dmirror_callout, sc);
	mtx_unlock(&sc->sc_mtx);
	return (0);
}

/* ---------------------------------------------------------------------------------------- */
/* Taste: find legs by their metadata                                                         */

static void
g_dmirror_check_complete(struct g_dmirror_softc *sc)
{
	struct g_dmirror_cand *c, *newest;
	uint32_t have;

	g_topology_assert();
	newest = NULL;
	have = 0;
	TAILQ_FOREACH(c, &sc->sc_cands, link) {
		have |= 1u << c->slot;
		if (newest == NULL || c->generation > newest->generation)
			newest = c;
	}
	if (newest != NULL && (newest->members & ~have) == 0) {
		mtx_lock(&sc->sc_mtx);
		sc->sc_go = 1;
		wakeup(sc);
		mtx_unlock(&sc->sc_mtx);
	}
}

static struct g_geom *
g_dmirror_taste(struct g_class *mp, struct g_provider *pp, int flags __unused)
{
	struct g_dmirror_ident *id;
	struct g_dmirror_softc *sc;
	struct g_dmirror_cand *c;
	struct g_dmirror_req *r;
	struct g_consumer *cp;
	char name[G_DMIRROR_NAME_MAX + 1];
	uint32_t members;
	u_int k;
	int error;

	g_topology_assert();
	if (pp->geom->class == mp)
		return (NULL); /* never a leg out of one of our own providers */
	LIST_FOREACH(cp, &pp->consumers, consumers) {
		if (cp->geom->class == mp && cp->geom->softc != NULL)
			return (NULL); /* already ours */
	}
	if (pp->sectorsize == 0 || pp->mediasize < 16 * 4096)
		return (NULL);

	cp = g_dmirror_tmp_consumer(mp, pp, "taste");
	if (cp == NULL)
		return (NULL);
	id = NULL;
	error = g_access(cp, 1, 0, 0);
	if (error == 0) {
		g_topology_unlock();
		error = g_dmirror_read_ident(cp, &id);
		g_topology_lock();
	}
	g_dmirror_tmp_release(cp);
	if (error != 0 || id == NULL) {
		if (g_dmirror_debug > 0 && error != DMIRROR_EINVAL)
			printf("GEOM_DMIRROR: %s: not a leg (error %d)\n", pp->name, error);
		return (NULL);
	}

	/*
	 * Whatever state the device records for itself (in sync, stale, REBUILDING, ...), it is a
	 * member of the mirror its uuid names: assembly over all the members found decides what
	 * each one is (a rebuilding leg resumes from its checkpoint).
	 */
	memcpy(name, id->idn.name, G_DMIRROR_NAME_MAX);
	name[G_DMIRROR_NAME_MAX] = '\0';
	members = id->idn.members;
	if (!g_dmirror_name_ok(name)) {
		printf("GEOM_DMIRROR: %s: mirror metadata with an invalid name, ignored\n",
		    pp->name);
		goto out;
	}
	sc = g_dmirror_find_uuid(mp, id->idn.mirror_uuid);
	if (sc == NULL) {
		if (g_dmirror_find(mp, name) != NULL) {
			printf("GEOM_DMIRROR: %s: belongs to another mirror also named %s, ignored\n",
			    pp->name, name);
			goto out;
		}
		sc = g_dmirror_softc_new(mp, name, id->idn.mirror_uuid);
		sc->sc_waitticks = (u_int)((uint64_t)g_dmirror_timeout * 1000 /
		    (g_dmirror_tick_ms > 0 ? g_dmirror_tick_ms : 1));
		if (sc->sc_waitticks == 0)
			sc->sc_waitticks = 1;
		if (g_dmirror_softc_launch(sc) != 0) {
			printf("GEOM_DMIRROR: %s: cannot start a worker thread\n", name);
			g_dmirror_softc_abort(sc);
			goto out;
		}
		printf("GEOM_DMIRROR: %s: found on %s, waiting for its other legs\n", name,
		    pp->name);
	}

	switch (sc->sc_state) {
	case DM_STARTING:
		if (sc->sc_ncands >= 2 * DMIRROR_MAX_LEGS)
			goto out;
		c = malloc(sizeof(*c), M_DMIRROR, M_WAITOK | M_ZERO);
		c->kind = DM_KIND_CAND;
		c->slot0 = id->slot0;
		c->slot1 = id->slot1;
		id->slot0 = id->slot1 = NULL;
		c->slot_bytes = id->slot_bytes;
		c->sectors = id->sectors;
		c->ss = id->ss;
		c->slot = id->slot;
		c->generation = id->idn.generation;
		c->members = members;
		c->cp = g_new_consumer(sc->sc_geom);
		if (g_attach(c->cp, pp) != 0) {
			g_destroy_consumer(c->cp);
			free(c->slot0, M_DMIRROR);
			free(c->slot1, M_DMIRROR);
			free(c, M_DMIRROR);
			goto out;
		}
		c->cp->private = c;
		TAILQ_INSERT_TAIL(&sc->sc_cands, c, link);
		sc->sc_ncands++;
		g_dmirror_check_complete(sc);
		break;
	case DM_ASSEMBLING:
	case DM_RUNNING:
		/* A leg coming back (hot-plug, or slower than the assembly timeout). */
		k = id->slot;
		if (sc->sc_legs[k].cp != NULL &&
		    (sc->sc_legs[k].cp->flags & G_CF_ORPHAN) == 0) {
			printf("GEOM_DMIRROR: %s: %s claims leg %u, which has a device: ignored\n",
			    sc->sc_name, pp->name, k);
			goto out;
		}
		if (memcmp(sc->sc_legs[k].uuid, id->idn.leg_uuid, 16) != 0) {
			printf("GEOM_DMIRROR: %s: %s is not the device leg %u expects "
			    "(removed or replaced): ignored\n", sc->sc_name, pp->name, k);
			goto out;
		}
		mtx_lock(&sc->sc_mtx);
		if (id->idn.generation > sc->sc_generation) {
			mtx_unlock(&sc->sc_mtx);
			printf("GEOM_DMIRROR: %s: %s has newer metadata (generation %ju) than the "
			    "running mirror (%ju): split brain, refused; clear one side\n",
			    sc->sc_name, pp->name, (uintmax_t)id->idn.generation,
			    (uintmax_t)sc->sc_generation);
			goto out;
		}
		mtx_unlock(&sc->sc_mtx);
		cp = g_new_consumer(sc->sc_geom);
		if (g_attach(cp, pp) != 0) {
			g_destroy_consumer(cp);
			goto out;
		}
		if ((error = g_access(cp, 1, 1, 1)) != 0) {
			printf("GEOM_DMIRROR: %s: cannot open %s (error %d)\n", sc->sc_name,
			    pp->name, error);
			g_detach(cp);
			g_destroy_consumer(cp);
			goto out;
		}
		cp->private = &sc->sc_legs[k];
		r = g_dmirror_req_new(DM_REQ_ATTACH);
		r->async = 1;
		r->leg = k;
		r->cp = cp;
		memcpy(r->uuid, id->idn.leg_uuid, 16);
		r->sectors = id->sectors;
		r->incremental = 1;
		g_dmirror_req_post(sc, r);
		break;
	default:
		goto out;
	}
	g_dmirror_ident_free(id);
	return (sc->sc_geom);
out:
	g_dmirror_ident_free(id);
	return (NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Control requests (geom(8) verbs; event thread, topology lock held)                         */

static int
g_dmirror_nargs(struct gctl_req *req)
{
	int *nargs;

	nargs = gctl_get_paraml(req, "nargs", sizeof(*nargs));
	if (nargs == NULL) {
		gctl_error(req, "No '%s' argument.", "nargs");
		return (-1);
	}
	return (*nargs);
}

static const char *
g_dmirror_arg(struct gctl_req *req, int i)
{
	char param[16];
	const char *s;

	snprintf(param, sizeof(param), "arg%d", i);
	s = gctl_get_asciiparam(req, param);
	if (s == NULL)
		gctl_error(req, "No 'arg%d' argument.", i);
	return (s);
}

/* The provider named by positional argument i (gctl_get_provider takes a parameter name). */
static struct g_provider *
g_dmirror_arg_provider(struct gctl_req *req, int i)
{
	char param[16];

	snprintf(param, sizeof(param), "arg%d", i);
	return (gctl_get_provider(req, param));
}

/*
 * Optional parameters. geom(8) sends every option of a verb with its default, other callers
 * (a program using libgeom's gctl_* directly) need not. gctl_get_paraml_opt() cannot serve
 * here: on FreeBSD 15.0 it reports "Wrong length" for an absent parameter (it compares an
 * uninitialized length; found when a caller that sends only what it sets ran against a real
 * kernel, tests/vm/dmtest.c). So: absent means the default, present with the wrong size is an
 * error. 0, or -1 with the error in req.
 */
static int
g_dmirror_opt(struct gctl_req *req, const char *name, void *out, int size)
{
	void *v;
	int len;

	len = 0;
	v = gctl_get_param(req, name, &len);
	if (v == NULL)
		return (0);
	if (len != size) {
		gctl_error(req, "Wrong length %s argument (%d bytes, expected %d).", name, len,
		    size);
		return (-1);
	}
	memcpy(out, v, size);
	return (0);
}

static int
g_dmirror_flag(struct gctl_req *req, const char *name, int *out)
{
	int v;

	v = 0;
	if (g_dmirror_opt(req, name, &v, sizeof(v)) != 0)
		return (-1);
	*out = v != 0;
	return (0);
}

static int
g_dmirror_number(struct gctl_req *req, const char *name, intmax_t *out)
{
	*out = 0;
	return (g_dmirror_opt(req, name, out, sizeof(*out)));
}

/* Wait for a request with the topology lock dropped (the worker may need it). */
static int
g_dmirror_ctl_wait(struct gctl_req *req, struct g_dmirror_req *r)
{
	int error;

	g_topology_unlock();
	g_dmirror_req_wait(r);
	g_topology_lock();
	error = r->error;
	if (error != 0)
		gctl_error(req, "%s", r->msg[0] != '\0' ? r->msg : "Operation failed.");
	return (error);
}

/* The slot of a running mirror whose device is provider name (-1 if none). */
static int
g_dmirror_slot_of(struct g_dmirror_softc *sc, const char *name)
{
	int k;

	g_topology_assert();
	name = g_dmirror_strip_dev(name);
	for (k = 0; k < DMIRROR_MAX_LEGS; k++) {
		if (sc->sc_legs[k].cp != NULL && sc->sc_legs[k].cp->provider != NULL &&
		    strcmp(sc->sc_legs[k].cp->provider->name, name) == 0)
			return (k);
	}
	return (-1);
}

/*
 * Parse -b: round-robin[:batch] | load | prefer:<provider or slot> | split[:min_sectors].
 * provs/nprov (label) or sc (configure) resolve a provider name to its slot.
 */
static int
g_dmirror_parse_balance(struct gctl_req *req, const char *s, struct dmirror_read_policy *p,
    const char *const *provs, int nprov, struct g_dmirror_softc *sc)
{
	const char *arg;
	char *end;
	u_long v;
	int k;

	arg = strchr(s, ':');
	if (arg != NULL)
		arg++;
	memset(p, 0, sizeof(*p));
	if (strncmp(s, "round-robin", 11) == 0 && (s[11] == '\0' || s[11] == ':')) {
		p->kind = DMIRROR_READ_ROUND_ROBIN;
		p->arg = 8;
	} else if (strcmp(s, "load") == 0) {
		p->kind = DMIRROR_READ_LOAD;
		return (0);
	} else if (strncmp(s, "split", 5) == 0 && (s[5] == '\0' || s[5] == ':')) {
		p->kind = DMIRROR_READ_SPLIT;
		p->arg = 256;
	} else if (strncmp(s, "prefer:", 7) == 0) {
		p->kind = DMIRROR_READ_PREFER;
		arg = g_dmirror_strip_dev(s + 7);
		for (k = 0; provs != NULL && k < nprov; k++) {
			if (strcmp(g_dmirror_strip_dev(provs[k]), arg) == 0) {
				p->arg = k;
				return (0);
			}
		}
		if (sc != NULL && (k = g_dmirror_slot_of(sc, arg)) >= 0) {
			p->arg = k;
			return (0);
		}
		v = strtoul(arg, &end, 10);
		if (*arg != '\0' && *end == '\0' && v < DMIRROR_MAX_LEGS) {
			p->arg = (uint32_t)v;
			return (0);
		}
		gctl_error(req, "Balance prefer: '%s' is neither a leg of this mirror nor a slot "
		    "number.", arg);
		return (EINVAL);
	} else {
		gctl_error(req, "Unknown balance algorithm '%s' (round-robin[:N], load, "
		    "prefer:PROV, split[:N]).", s);
		return (EINVAL);
	}
	if (arg != NULL) {
		v = strtoul(arg, &end, 10);
		if (*arg == '\0' || *end != '\0' || v == 0 || v > UINT32_MAX) {
			gctl_error(req, "Invalid number '%s' in balance '%s'.", arg, s);
			return (EINVAL);
		}
		p->arg = (uint32_t)v;
	}
	if (p->kind == DMIRROR_READ_SPLIT && p->arg < 2) {
		gctl_error(req, "split needs at least 2 sectors.");
		return (EINVAL);
	}
	return (0);
}

static void
g_dmirror_ctl_label(struct gctl_req *req, struct g_class *mp)
{
	struct g_provider *pps[DMIRROR_MAX_LEGS];
	const char *provs[DMIRROR_MAX_LEGS];
	uint64_t legsz[DMIRROR_MAX_LEGS];
	struct dmirror_config cfg, tmp;
	struct dmirror_init *init;
	struct dmirror_why why;
	struct g_dmirror_softc *sc;
	struct g_dmirror_req *r;
	struct g_consumer *cp;
	const char *name, *balance;
	uint64_t minsz, data, region, bytes;
	intmax_t slots, regionsize;
	uint32_t ss;
	int nargs, nprov, i, j, error, iter, nosync;

	g_topology_assert();
	nargs = g_dmirror_nargs(req);
	if (nargs < 0)
		return;
	if (nargs < 2) {
		gctl_error(req, "Too few arguments (name and at least one provider).");
		return;
	}
	nprov = nargs - 1;
	if (nprov > (int)DMIRROR_MAX_LEGS) {
		gctl_error(req, "Too many providers (at most %u).", DMIRROR_MAX_LEGS);
		return;
	}
	name = g_dmirror_arg(req, 0);
	if (name == NULL)
		return;
	if (!g_dmirror_name_ok(name)) {
		gctl_error(req, "Invalid mirror name '%s' (1 to %d of A-Z a-z 0-9 . _ -).", name,
		    G_DMIRROR_NAME_MAX);
		return;
	}
	if (g_dmirror_find(mp, name) != NULL) {
		gctl_error(req, "Mirror %s already exists.", name);
		return;
	}
	if (g_dmirror_number(req, G_DMIRROR_P_SLOTS, &slots) != 0 ||
	    g_dmirror_number(req, G_DMIRROR_P_REGIONSIZE, &regionsize) != 0 ||
	    g_dmirror_flag(req, G_DMIRROR_P_NOSYNC, &nosync) != 0)
		return;
	if (slots == 0)
		slots = nprov < 2 ? 2 : nprov;
	if (slots < nprov || slots > (intmax_t)DMIRROR_MAX_LEGS) {
		gctl_error(req, "Invalid number of slots %jd (%d to %u).", slots, nprov,
		    DMIRROR_MAX_LEGS);
		return;
	}
	ss = 0;
	for (i = 0; i < nprov; i++) {
		provs[i] = g_dmirror_arg(req, i + 1);
		if (provs[i] == NULL)
			return;
		pps[i] = g_dmirror_arg_provider(req, i + 1);
		if (pps[i] == NULL)
			return;
		if (pps[i]->geom->class == mp) {
			gctl_error(req, "%s is a dmirror provider; it cannot be a leg.",
			    pps[i]->name);
			return;
		}
		for (j = 0; j < i; j++) {
			if (pps[j] == pps[i]) {
				gctl_error(req, "Provider %s given twice.", pps[i]->name);
				return;
			}
		}
		if (pps[i]->sectorsize == 0 || pps[i]->mediasize <= 0) {
			gctl_error(req, "Provider %s has no media.", pps[i]->name);
			return;
		}
		if (pps[i]->sectorsize > ss)
			ss = pps[i]->sectorsize;
	}
	if (ss < 512 || ss > 65536 || !powerof2(ss)) {
		gctl_error(req, "Unsupported sector size %u.", ss);
		return;
	}
	minsz = UINT64_MAX;
	for (i = 0; i < nprov; i++) {
		if (ss % pps[i]->sectorsize != 0) {
			gctl_error(req, "Sector size of %s (%u) does not divide %u.", pps[i]->name,
			    pps[i]->sectorsize, ss);
			return;
		}
		legsz[i] = (uint64_t)pps[i]->mediasize / ss;
		if (legsz[i] < minsz)
			minsz = legsz[i];
	}

	/* Size: the largest data that leaves room for the metadata on the smallest leg. */
	if (dmirror_config_default(&cfg, (uint8_t)slots, minsz) != 0) {
		gctl_error(req, "The core refused a default configuration.");
		return;
	}
	cfg.sector_size = ss;
	cfg.log = DMIRROR_REGION_LOG_ON_LEGS;
	if (regionsize != 0) {
		if (regionsize < (intmax_t)ss || regionsize % ss != 0 ||
		    !powerof2(regionsize / ss)) {
			gctl_error(req, "Invalid region size %jd: a power of two multiple of the "
			    "sector size (%u).", regionsize, ss);
			return;
		}
		region = (uint64_t)regionsize / ss;
	} else {
		region = cfg.region_sectors;
	}
	data = 0;
	for (iter = 0; iter < 8; iter++) {
		if (dmirror_max_data_sectors(minsz, ss, region, &data) != 0) {
			gctl_error(req, "Invalid region size.");
			return;
		}
		if (regionsize != 0 || data == 0)
			break;
		/* The default region size depends on the data size: settle both. */
		if (dmirror_config_default(&tmp, (uint8_t)slots, data) != 0 ||
		    tmp.region_sectors >= region)
			break;
		region = tmp.region_sectors;
	}
	if (data == 0) {
		gctl_error(req, "The providers are too small for a mirror and its metadata.");
		return;
	}
	cfg.region_sectors = region;
	cfg.data_sectors = data;
	balance = gctl_get_asciiparam(req, G_DMIRROR_P_BALANCE);
	if (balance != NULL && balance[0] != '\0' &&
	    g_dmirror_parse_balance(req, balance, &cfg.read_policy, provs, nprov, NULL) != 0)
		return;
	memset(&why, 0, sizeof(why));
	error = dmirror_memory_needed(&cfg, &bytes, &why);
	if (error != 0) {
		gctl_error(req, "Configuration refused: %s.", dmirror_why_str(why.code));
		return;
	}
	if (bytes > DM_MAX_CORE_BYTES) {
		gctl_error(req, "The mirror would need %ju bytes of kernel memory; use a larger "
		    "region size (-r).", (uintmax_t)bytes);
		return;
	}

	init = malloc(sizeof(*init), M_DMIRROR, M_WAITOK | M_ZERO);
	if (dmirror_init_fresh(init, (uint8_t)slots, minsz, nosync) != 0) {
		free(init, M_DMIRROR);
		gctl_error(req, "The core refused a fresh initial state.");
		return;
	}
	arc4random_buf(init->mirror_uuid, sizeof(init->mirror_uuid));
	memset(init->name, 0, sizeof(init->name));
	memcpy(init->name, name, strlen(name));
	for (i = 0; i < (int)DMIRROR_MAX_LEGS; i++) {
		if (i >= nprov) {
			/* Reserved slots (-s) start empty; insert fills them. */
			memset(&init->legs[i], 0, sizeof(init->legs[i]));
			continue;
		}
		init->legs[i].sectors = legsz[i];
		arc4random_buf(init->legs[i].uuid, sizeof(init->legs[i].uuid));
	}

	sc = g_dmirror_softc_new(mp, name, init->mirror_uuid);
	sc->sc_label = 1;
	sc->sc_init = init;
	sc->sc_cfg = cfg;
	for (i = 0; i < nprov; i++) {
		cp = g_new_consumer(sc->sc_geom);
		error = g_attach(cp, pps[i]);
		if (error == 0) {
			error = g_access(cp, 1, 1, 1);
			if (error != 0)
				g_detach(cp);
		}
		if (error != 0) {
			g_destroy_consumer(cp);
			gctl_error(req, "Cannot open %s (error %d).", pps[i]->name, error);
			g_dmirror_softc_abort(sc);
			return;
		}
		sc->sc_legs[i].cp = cp;
		sc->sc_legs[i].sectors = legsz[i];
		memcpy(sc->sc_legs[i].uuid, init->legs[i].uuid, 16);
		cp->private = &sc->sc_legs[i];
	}
	r = g_dmirror_req_new(DM_REQ_START);
	sc->sc_startreq = r;
	error = g_dmirror_softc_launch(sc);
	if (error != 0) {
		free(r, M_DMIRROR);
		gctl_error(req, "Cannot start a worker thread (error %d).", error);
		g_dmirror_softc_abort(sc);
		return;
	}
	/* sc belongs to the worker from here on; only r is ours. */
	(void)g_dmirror_ctl_wait(req, r);
	free(r, M_DMIRROR);
}

/* Look up arg0 as a mirror; errors go to req. */
static struct g_dmirror_softc *
g_dmirror_ctl_mirror(struct gctl_req *req, struct g_class *mp, int running)
{
	struct g_dmirror_softc *sc;
	const char *name;

	name = g_dmirror_arg(req, 0);
	if (name == NULL)
		return (NULL);
	sc = g_dmirror_find(mp, name);
	if (sc == NULL) {
		gctl_error(req, "No such mirror: %s.", name);
		return (NULL);
	}
	if (running && sc->sc_state != DM_RUNNING) {
		gctl_error(req, "Mirror %s is not running (starting or stopping).", name);
		return (NULL);
	}
	return (sc);
}

static void
g_dmirror_ctl_insert(struct gctl_req *req, struct g_class *mp)
{
	struct g_dmirror_softc *sc;
	struct g_provider *pp;
	struct g_consumer *cp;
	struct g_dmirror_req *r;
	uint32_t st, ss;
	int nargs, i, k, pick, error;

	nargs = g_dmirror_nargs(req);
	if (nargs < 2) {
		if (nargs >= 0)
			gctl_error(req, "Too few arguments (name and provider).");
		return;
	}
	for (i = 1; i < nargs; i++) {
		sc = g_dmirror_ctl_mirror(req, mp, 1);
		if (sc == NULL)
			return;
		pp = g_dmirror_arg_provider(req, i);
		if (pp == NULL)
			return;
		ss = sc->sc_cfg.sector_size;
		if (pp->geom->class == mp || pp->sectorsize == 0 || ss % pp->sectorsize != 0) {
			gctl_error(req, "%s cannot be a leg of %s (sector size %u, mirror %u).",
			    pp->name, sc->sc_name, pp->sectorsize, ss);
			return;
		}
		if (g_dmirror_slot_of(sc, pp->name) >= 0) {
			gctl_error(req, "%s is already a leg of %s.", pp->name, sc->sc_name);
			return;
		}
		/* An empty slot first; else one whose leg is failed or missing and detached. */
		pick = -1;
		mtx_lock(&sc->sc_mtx);
		for (k = 0; sc->sc_snap_valid && k < sc->sc_snap->legs && pick < 0; k++) {
			if (sc->sc_snap->leg[k].state == DMIRROR_LEG_EMPTY &&
			    sc->sc_legs[k].cp == NULL)
				pick = k;
		}
		for (k = 0; sc->sc_snap_valid && k < sc->sc_snap->legs && pick < 0; k++) {
			st = sc->sc_snap->leg[k].state;
			if ((st == DMIRROR_LEG_FAILED || st == DMIRROR_LEG_MISSING) &&
			    sc->sc_legs[k].cp == NULL)
				pick = k;
		}
		mtx_unlock(&sc->sc_mtx);
		if (pick < 0) {
			gctl_error(req, "Mirror %s has no free slot (forget a missing leg, or "
			    "label with -s to reserve slots).", sc->sc_name);
			return;
		}
		cp = g_new_consumer(sc->sc_geom);
		error = g_attach(cp, pp);
		if (error == 0) {
			error = g_access(cp, 1, 1, 1);
			if (error != 0)
				g_detach(cp);
		}
		if (error != 0) {
			g_destroy_consumer(cp);
			gctl_error(req, "Cannot open %s (error %d).", pp->name, error);
			return;
		}
		cp->private = &sc->sc_legs[pick];
		r = g_dmirror_req_new(DM_REQ_ATTACH);
		r->leg = pick;
		r->cp = cp;
		arc4random_buf(r->uuid, sizeof(r->uuid));
		r->sectors = (uint64_t)pp->mediasize / ss;
		r->incremental = 0;
		g_dmirror_req_post(sc, r);
		error = g_dmirror_ctl_wait(req, r);
		free(r, M_DMIRROR);
		if (error != 0)
			return;
	}
}

/* remove and rebuild: arg0 the mirror, then providers that are its legs. */
static void
g_dmirror_ctl_legs(struct gctl_req *req, struct g_class *mp, int op)
{
	struct g_dmirror_softc *sc;
	struct g_dmirror_req *r;
	const char *prov;
	int nargs, i, k, error;

	nargs = g_dmirror_nargs(req);
	if (nargs < 2) {
		if (nargs >= 0)
			gctl_error(req, "Too few arguments (name and provider).");
		return;
	}
	for (i = 1; i < nargs; i++) {
		sc = g_dmirror_ctl_mirror(req, mp, 1);
		if (sc == NULL)
			return;
		prov = g_dmirror_arg(req, i);
		if (prov == NULL)
			return;
		k = g_dmirror_slot_of(sc, prov);
		if (k < 0) {
			gctl_error(req, "%s is not a leg of %s.", prov, sc->sc_name);
			return;
		}
		r = g_dmirror_req_new(op);
		r->leg = k;
		r->clear = 1;
		g_dmirror_req_post(sc, r);
		error = g_dmirror_ctl_wait(req, r);
		free(r, M_DMIRROR);
		if (error != 0)
			return;
	}
}

static void
g_dmirror_ctl_simple(struct gctl_req *req, struct g_class *mp, int op)
{
	struct g_dmirror_softc *sc;
	struct g_dmirror_req *r;
	struct dmirror_read_policy pol;
	const char *balance;
	int nargs;

	nargs = g_dmirror_nargs(req);
	if (nargs != 1) {
		if (nargs >= 0)
			gctl_error(req, "Exactly one mirror name expected.");
		return;
	}
	sc = g_dmirror_ctl_mirror(req, mp, 1);
	if (sc == NULL)
		return;
	r = g_dmirror_req_new(op);
	if (op == DM_REQ_POLICY) {
		balance = gctl_get_asciiparam(req, G_DMIRROR_P_BALANCE);
		if (balance == NULL || balance[0] == '\0') {
			gctl_error(req, "Nothing to configure (-b balance).");
			free(r, M_DMIRROR);
			return;
		}
		if (g_dmirror_parse_balance(req, balance, &pol, NULL, 0, sc) != 0) {
			free(r, M_DMIRROR);
			return;
		}
		r->policy = pol;
	}
	g_dmirror_req_post(sc, r);
	if (g_dmirror_ctl_wait(req, r) == 0 && op == DM_REQ_FORGET && r->count == 0)
		gctl_error(req, "warning: no missing or failed leg without a device.");
	free(r, M_DMIRROR);
}

/* stop / destroy (and unload): the worker does the rest and frees sc. */
static int
g_dmirror_stop(struct gctl_req *req, struct g_dmirror_softc *sc, int force, int clear)
{
	struct g_dmirror_req *r;
	struct g_provider *pp;
	int error;

	g_topology_assert();
	pp = sc->sc_provider;
	if (pp != NULL && (pp->acr != 0 || pp->acw != 0 || pp->ace != 0) && !force) {
		if (req != NULL)
			gctl_error(req, "Device %s is open (use -f to stop it anyway).",
			    pp->name);
		return (EBUSY);
	}
	if (sc->sc_state == DM_STOPPING) {
		if (req != NULL)
			gctl_error(req, "Mirror %s is already stopping.", sc->sc_name);
		return (EALREADY);
	}
	sc->sc_state = DM_STOPPING;
	if (pp != NULL) {
		g_wither_provider(pp, ENXIO);
		sc->sc_provider = NULL;
	}
	r = g_dmirror_req_new(DM_REQ_STOP);
	r->clear = clear;
	g_dmirror_req_post(sc, r);
	g_topology_unlock();
	g_dmirror_req_wait(r);
	g_topology_lock();
	error = r->error;
	free(r, M_DMIRROR);
	return (error);
}

static void
g_dmirror_ctl_stop(struct gctl_req *req, struct g_class *mp, int clear)
{
	struct g_dmirror_softc *sc;
	int nargs, i, force;

	nargs = g_dmirror_nargs(req);
	if (nargs < 1) {
		if (nargs >= 0)
			gctl_error(req, "Missing mirror name.");
		return;
	}
	if (g_dmirror_flag(req, G_DMIRROR_P_FORCE, &force) != 0)
		return;
	for (i = 0; i < nargs; i++) {
		const char *name = g_dmirror_arg(req, i);

		if (name == NULL)
			return;
		sc = g_dmirror_find(mp, name);
		if (sc == NULL) {
			gctl_error(req, "No such mirror: %s.", name);
			return;
		}
		if (g_dmirror_stop(req, sc, force, clear) != 0)
			return;
	}
}

static int
g_dmirror_destroy_geom(struct gctl_req *req __unused, struct g_class *mp __unused,
    struct g_geom *gp)
{
	struct g_dmirror_softc *sc = gp->softc;

	g_topology_assert();
	if (sc == NULL)
		return (ENXIO);
	/* Refused while the mirror is open: this is what keeps the module from unloading. */
	return (g_dmirror_stop(NULL, sc, 0, 0));
}

/*
 * dump: what the device says about itself (dmirror_identify()), then its leg table as an
 * assembly from this device alone gives it (other legs show as missing; a device that is not
 * in sync by its own account does not assemble alone: then only the reason is shown).
 */
static void
g_dmirror_dump_ident(struct sbuf *sb, struct g_provider *pp, struct g_dmirror_ident *id)
{
	struct dmirror_identity *idn = &id->idn;
	struct dmirror_assembly *as;
	struct dmirror_leg_read rd;
	struct dmirror_why why;
	char msg[128];
	int k, error;

	sbuf_printf(sb, "%s: mirror %.32s uuid ", pp->name, (const char *)idn->name);
	g_dmirror_sbuf_uuid(sb, idn->mirror_uuid);
	sbuf_printf(sb, "\n  this device: slot %u of %u, leg uuid ", id->slot, idn->nlegs);
	g_dmirror_sbuf_uuid(sb, idn->leg_uuid);
	sbuf_printf(sb, ", %s", g_dmirror_legstate(idn->state));
	if (idn->state == DMIRROR_LEG_REBUILDING)
		sbuf_printf(sb, " (%s, checkpoint region %ju)",
		    idn->rebuild_full ? "full" : "incremental",
		    (uintmax_t)idn->rebuild_checkpoint);
	sbuf_printf(sb, "\n  generation %ju, sequence %ju, %s\n", (uintmax_t)idn->generation,
	    (uintmax_t)idn->seq, idn->clean ? "clean" : "not clean");
	sbuf_printf(sb, "  sector size %u, data %ju sectors, region %ju sectors\n",
	    idn->sector_size, (uintmax_t)idn->data_sectors, (uintmax_t)idn->region_sectors);

	as = malloc(sizeof(*as), M_DMIRROR, M_WAITOK | M_ZERO);
	memset(&rd, 0, sizeof(rd));
	rd.slot0 = id->slot0;
	rd.slot0_len = id->slot0 != NULL ? id->slot_bytes : 0;
	rd.slot1 = id->slot1;
	rd.slot1_len = id->slot1 != NULL ? id->slot_bytes : 0;
	rd.sectors = id->sectors;
	rd.name = pp->name;
	rd.sector_size = id->ss;
	memset(&why, 0, sizeof(why));
	msg[0] = '\0';
	error = g_dmirror_assemble_on_helper(&rd, 1, as, &why, msg, sizeof(msg));
	if (error != 0) {
		sbuf_printf(sb, "  this device alone does not assemble: %s\n",
		    msg[0] != '\0' ? msg : dmirror_why_str(why.code));
	} else {
		sbuf_printf(sb, "  authoritative slot %u; slots, as this device alone would "
		    "assemble:\n", as->init.authoritative);
		for (k = 0; k < as->config.legs && k < (int)DMIRROR_MAX_LEGS; k++) {
			sbuf_printf(sb, "  slot %d: %s", k,
			    g_dmirror_legstate(as->init.legs[k].state));
			if (as->init.legs[k].state == DMIRROR_LEG_REBUILDING)
				sbuf_printf(sb, " (%s, checkpoint region %ju)",
				    as->init.legs[k].rebuild_full ? "full" : "incremental",
				    (uintmax_t)as->init.legs[k].rebuild_checkpoint);
			sbuf_printf(sb, "\n");
		}
	}
	free(as, M_DMIRROR);
}

/* clear and dump: devices that are not (or no longer) legs of a running mirror. */
static void
g_dmirror_ctl_devices(struct gctl_req *req, struct g_class *mp, int clear)
{
	struct g_dmirror_ident *id = NULL;
	struct g_provider *pp;
	struct g_consumer *cp;
	struct sbuf *sb;
	const char *prov;
	char *obuf;
	int nargs, i, error, olen;

	nargs = g_dmirror_nargs(req);
	if (nargs < 1) {
		if (nargs >= 0)
			gctl_error(req, "Missing provider name.");
		return;
	}
	olen = 0;
	obuf = clear ? NULL : gctl_get_param_flags(req, "output", GCTL_PARAM_WR, &olen);
	sb = sbuf_new_auto();
	for (i = 0; i < nargs; i++) {
		prov = g_dmirror_arg(req, i);
		if (prov == NULL)
			break;
		pp = g_dmirror_arg_provider(req, i);
		if (pp == NULL)
			break;
		cp = g_dmirror_tmp_consumer(mp, pp, clear ? "clear" : "dump");
		if (cp == NULL) {
			gctl_error(req, "Cannot attach to %s.", pp->name);
			break;
		}
		error = g_access(cp, 1, clear ? 1 : 0, 0);
		if (error != 0) {
			g_dmirror_tmp_release(cp);
			gctl_error(req, "Cannot open %s (error %d)%s.", pp->name, error,
			    error == EPERM ? ": is it a leg of a running mirror?" : "");
			break;
		}
		g_topology_unlock();
		error = g_dmirror_read_ident(cp, &id);
		if (error == 0 && clear)
			error = g_dmirror_clear_slots(cp, id->idn.sector_size);
		else if (error == 0)
			g_dmirror_dump_ident(sb, pp, id); /* sleeps: topology lock not held */
		g_topology_lock();
		g_dmirror_tmp_release(cp);
		if (error != 0) {
			if (id == NULL)
				gctl_error(req, "%s has no dmirror metadata (error %d); nothing "
				    "changed.", pp->name, error);
			else
				gctl_error(req, "Cannot clear %s (error %d).", pp->name, error);
			g_dmirror_ident_free(id);
			break;
		}
		g_dmirror_ident_free(id);
	}
	sbuf_finish(sb);
	if (obuf != NULL && olen > 0 && sbuf_len(sb) > 0) {
		if (sbuf_len(sb) + 1 > olen)
			gctl_error(req, "warning: output truncated to %d bytes", olen - 1);
		strlcpy(obuf, sbuf_data(sb), olen);
		gctl_set_param(req, "output", obuf, (int)strlen(obuf) + 1);
	}
	sbuf_delete(sb);
}

static void
g_dmirror_ctlreq(struct gctl_req *req, struct g_class *mp, const char *verb)
{
	uint32_t *version;

	g_topology_assert();
	version = gctl_get_paraml(req, "version", sizeof(*version));
	if (version == NULL) {
		gctl_error(req, "No '%s' argument.", "version");
		return;
	}
	if (*version != G_DMIRROR_VERSION) {
		gctl_error(req, "Userland and kernel parts are out of sync (%u, kernel %u).",
		    *version, G_DMIRROR_VERSION);
		return;
	}
	if (strcmp(verb, "label") == 0)
		g_dmirror_ctl_label(req, mp);
	else if (strcmp(verb, "clear") == 0)
		g_dmirror_ctl_devices(req, mp, 1);
	else if (strcmp(verb, "dump") == 0)
		g_dmirror_ctl_devices(req, mp, 0);
	else if (strcmp(verb, "insert") == 0)
		g_dmirror_ctl_insert(req, mp);
	else if (strcmp(verb, "remove") == 0)
		g_dmirror_ctl_legs(req, mp, DM_REQ_REMOVE);
	else if (strcmp(verb, "rebuild") == 0)
		g_dmirror_ctl_legs(req, mp, DM_REQ_REBUILD);
	else if (strcmp(verb, "forget") == 0)
		g_dmirror_ctl_simple(req, mp, DM_REQ_FORGET);
	else if (strcmp(verb, "configure") == 0)
		g_dmirror_ctl_simple(req, mp, DM_REQ_POLICY);
	else if (strcmp(verb, "stop") == 0)
		g_dmirror_ctl_stop(req, mp, 0);
	else if (strcmp(verb, "destroy") == 0)
		g_dmirror_ctl_stop(req, mp, 1);
	else
		gctl_error(req, "Unknown verb '%s'.", verb);
}

/* ---------------------------------------------------------------------------------------- */
/* geom dmirror list / status                                                                 */

static void
g_dmirror_dumpconf(struct sbuf *sb, const char *indent, struct g_geom *gp,
    struct g_consumer *cp, struct g_provider *pp)
{
	struct g_dmirror_softc *sc = gp->softc;
	struct dmirror_status *st;
	struct dmirror_leg_status *ls;
	struct g_dmirror_leg *leg;
	const char *state;
	int *kind, valid, k, insync, active;

	g_topology_assert();
	if (sc == NULL || pp != NULL)
		return;
	mtx_lock(&sc->sc_mtx);
	valid = sc->sc_snap_valid;
	if (valid)
		memcpy(sc->sc_dump, sc->sc_snap, sizeof(*sc->sc_dump));
	mtx_unlock(&sc->sc_mtx);
	st = sc->sc_dump;

	if (cp != NULL) {
		kind = cp->private;
		if (kind == NULL)
			return;
		if (*kind == DM_KIND_CAND) {
			sbuf_printf(sb, "%s<State>WAITING</State>\n", indent);
			return;
		}
		leg = cp->private;
		k = leg->index;
		sbuf_printf(sb, "%s<Leg>%d</Leg>\n", indent, k);
		sbuf_printf(sb, "%s<UUID>", indent);
		g_dmirror_sbuf_uuid(sb, leg->uuid);
		sbuf_printf(sb, "</UUID>\n");
		if (!valid || k >= st->legs) {
			sbuf_printf(sb, "%s<State>%s</State>\n", indent,
			    leg->cp == cp ? "STARTING" : "JOINING");
			return;
		}
		ls = &st->leg[k];
		state = leg->cp != cp ? "JOINING" : g_dmirror_legstate(ls->state);
		sbuf_printf(sb, "%s<State>%s</State>\n", indent, state);
		if (ls->state == DMIRROR_LEG_REBUILDING && ls->resync_total > 0)
			sbuf_printf(sb, "%s<Synchronized>%ju%%</Synchronized>\n", indent,
			    (uintmax_t)(ls->resync_done >= ls->resync_total ? 100 :
			    ls->resync_done * 100 / ls->resync_total));
		sbuf_printf(sb, "%s<ResyncDone>%ju</ResyncDone>\n", indent,
		    (uintmax_t)ls->resync_done);
		sbuf_printf(sb, "%s<ResyncTotal>%ju</ResyncTotal>\n", indent,
		    (uintmax_t)ls->resync_total);
		sbuf_printf(sb, "%s<RegionsOutOfSync>%ju</RegionsOutOfSync>\n", indent,
		    (uintmax_t)ls->regions_out_of_sync);
		sbuf_printf(sb, "%s<Inflight>%u</Inflight>\n", indent, ls->inflight);
		sbuf_printf(sb, "%s<Reads>%ju</Reads>\n", indent, (uintmax_t)ls->reads);
		sbuf_printf(sb, "%s<Writes>%ju</Writes>\n", indent, (uintmax_t)ls->writes);
		sbuf_printf(sb, "%s<Errors>%ju</Errors>\n", indent, (uintmax_t)ls->errors);
		sbuf_printf(sb, "%s<Repairs>%ju</Repairs>\n", indent, (uintmax_t)ls->repairs);
		return;
	}

	/* The geom. */
	sbuf_printf(sb, "%s<Name>%s</Name>\n", indent, sc->sc_name);
	sbuf_printf(sb, "%s<UUID>", indent);
	g_dmirror_sbuf_uuid(sb, sc->sc_uuid);
	sbuf_printf(sb, "</UUID>\n");
	if (sc->sc_state == DM_STARTING || sc->sc_state == DM_ASSEMBLING || !valid) {
		sbuf_printf(sb, "%s<State>STARTING</State>\n", indent);
		sbuf_printf(sb, "%s<DevicesFound>%u</DevicesFound>\n", indent, sc->sc_ncands);
		return;
	}
	insync = active = 0;
	for (k = 0; k < st->legs && k < (int)DMIRROR_MAX_LEGS; k++) {
		if (st->leg[k].state != DMIRROR_LEG_EMPTY)
			active++;
		if (st->leg[k].state == DMIRROR_LEG_IN_SYNC)
			insync++;
	}
	if (sc->sc_state == DM_STOPPING)
		state = "STOPPING";
	else if (insync == active)
		state = "COMPLETE";
	else
		state = "DEGRADED";
	sbuf_printf(sb, "%s<State>%s</State>\n", indent, state);
	sbuf_printf(sb, "%s<Generation>%ju</Generation>\n", indent,
	    (uintmax_t)st->generation);
	sbuf_printf(sb, "%s<Slots>%u</Slots>\n", indent, st->legs);
	sbuf_printf(sb, "%s<LegsInSync>%d</LegsInSync>\n", indent, insync);
	sbuf_printf(sb, "%s<Authoritative>%u</Authoritative>\n", indent, st->authoritative);
	switch (st->read_policy.kind) {
	case DMIRROR_READ_ROUND_ROBIN:
		sbuf_printf(sb, "%s<Balance>round-robin:%u</Balance>\n", indent,
		    st->read_policy.arg);
		break;
	case DMIRROR_READ_LOAD:
		sbuf_printf(sb, "%s<Balance>load</Balance>\n", indent);
		break;
	case DMIRROR_READ_PREFER:
		sbuf_printf(sb, "%s<Balance>prefer:%u</Balance>\n", indent, st->read_policy.arg);
		break;
	case DMIRROR_READ_SPLIT:
		sbuf_printf(sb, "%s<Balance>split:%u</Balance>\n", indent, st->read_policy.arg);
		break;
	}
	sbuf_printf(sb, "%s<SectorSize>%u</SectorSize>\n", indent, sc->sc_cfg.sector_size);
	sbuf_printf(sb, "%s<RegionSize>%ju</RegionSize>\n", indent,
	    (uintmax_t)(sc->sc_cfg.region_sectors * sc->sc_cfg.sector_size));
	sbuf_printf(sb, "%s<Regions>%ju</Regions>\n", indent, (uintmax_t)st->regions);
	sbuf_printf(sb, "%s<RegionsInSync>%ju</RegionsInSync>\n", indent,
	    (uintmax_t)st->regions_in_sync);
	sbuf_printf(sb, "%s<DirtyRegions>%ju</DirtyRegions>\n", indent,
	    (uintmax_t)st->dirty_regions);
	sbuf_printf(sb, "%s<InflightParents>%u</InflightParents>\n", indent,
	    st->inflight_parents);
	sbuf_printf(sb, "%s<InflightLegIOs>%u</InflightLegIOs>\n", indent,
	    st->inflight_leg_ios);
	sbuf_printf(sb, "%s<ParentErrors>%ju</ParentErrors>\n", indent,
	    (uintmax_t)st->counters.parent_errors);
	sbuf_printf(sb, "%s<ReadRetries>%ju</ReadRetries>\n", indent,
	    (uintmax_t)st->counters.read_retries);
	sbuf_printf(sb, "%s<Repairs>%ju</Repairs>\n", indent,
	    (uintmax_t)st->counters.repairs);
	sbuf_printf(sb, "%s<ResyncSectors>%ju</ResyncSectors>\n", indent,
	    (uintmax_t)st->counters.resync_sectors);
	sbuf_printf(sb, "%s<MetaWrites>%ju</MetaWrites>\n", indent,
	    (uintmax_t)st->counters.meta_writes);
	/* Every slot, also those without a device (no consumer shows them). */
	for (k = 0; k < st->legs && k < (int)DMIRROR_MAX_LEGS; k++) {
		leg = &sc->sc_legs[k];
		sbuf_printf(sb, "%s<Slot%d>%s %s</Slot%d>\n", indent, k,
		    g_dmirror_legstate(st->leg[k].state),
		    leg->cp != NULL && leg->cp->provider != NULL ? leg->cp->provider->name : "-",
		    k);
	}
}

DECLARE_GEOM_CLASS(g_dmirror_class, g_dmirror);
MODULE_VERSION(geom_dmirror, 0);
