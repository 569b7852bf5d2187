/*
 * dm_target_mirror.c - the device-mapper "mirror" target for DragonFly BSD and NetBSD, a thin
 * shim around the portable dmirror core (shim-c/dmirror.h) and its table parser
 * (shim-c/dmirror_dm.h).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * One source for both kernels: the #ifdef __DragonFly__ / __NetBSD__ blocks below hold only what
 * differs (the dm_target hooks, memory, locks, threads, struct buf). The shim holds no policy:
 * which leg to read, when a parent is finished, what to resync and when a leg fails are the
 * core's decisions; the shim moves bytes and reports completions.
 *
 * Threading. Each mirror has one worker kernel thread, and every dmirror_* call on that mirror
 * is made from it (dmirror.h's "single thread" model: no lock callbacks). dm's strategy hook
 * queues the parent buf and wakes the worker; a leg buf's completion (possibly in interrupt
 * context) queues (token, error) and wakes the worker. The core's issue callback only records the
 * leg I/O; the worker starts it after the entry point returned, so the callbacks never sleep and
 * never re-enter the core. The worker ticks the core every DMM_TICK (resync progress, region log
 * clearing), and is the only place that may sleep (buffer allocation, cache flushes on NetBSD).
 *
 * Activation. The mirror is created lazily by the worker, on the first I/O, status request or
 * message, and only once no other live instance uses the same devices: on a table reload dm
 * builds the new table while the old one is still active, then switches and destroys the old
 * one; the old instance's destroy flushes and persists its state (dmirror_shutdown, then the
 * ShutdownDone event) before the new instance reads the legs' metadata.
 */

#if !defined(__DragonFly__) && !defined(__NetBSD__)
#error "dm_target_mirror.c is for DragonFly BSD or NetBSD"
#endif

#ifdef __DragonFly__
#include <sys/param.h>
#include <sys/systm.h>
#include <sys/kernel.h>
#include <sys/malloc.h>
#include <sys/module.h>
#include <sys/buf.h>
#include <sys/buf2.h>
#include <sys/kthread.h>
#include <sys/proc.h>
#include <sys/thread.h>
#include <sys/spinlock.h>
#include <sys/spinlock2.h>
#include <sys/vnode.h>
#include <sys/device.h>
#include <dev/disk/dm/dm.h>
#else /* __NetBSD__ */
#include <sys/param.h>
#include <sys/systm.h>
#include <sys/kernel.h>
#include <sys/kmem.h>
#include <sys/module.h>
#include <sys/buf.h>
#include <sys/kthread.h>
#include <sys/mutex.h>
#include <sys/condvar.h>
#include <sys/vnode.h>
#include <sys/dkio.h>
#include <sys/fcntl.h>
#include <sys/kauth.h>
#include <sys/cprng.h>
#include <dev/dm/dm.h>
#endif

#include "dmirror.h"
#include "dmirror_dm.h"

#define DMM_NAME "mirror"
#define DMM_TICK_HZ 10          /* core ticks per second */
#define DMM_MAX_PARENTS 128     /* parents in flight in the core */
#define DMM_MAX_LEG_IOS 256     /* leg I/Os in flight in the core */
#define DMM_DEVNAME 32          /* "major:minor" */
#define DMM_MSG 192             /* error messages (DMIRROR_DM_ERRMSG_BYTES) */
#define DMM_INT_MAX 0x7fffffff  /* b_bcount is an int */
/* DragonFly worker stack. The deepest entry point needs ~6.6 KiB (dmirror.h, "Kernel stack");
 * 32 KiB leaves room for the shim, the callbacks and interrupts (it was 64 KiB when assembly
 * needed ~40 KiB). */
#define DMM_WORKER_STACK (32 * 1024)
/* NetBSD: kthread_create() has no stack size (USPACE: 16 KiB on amd64): see README.md. */
#define DMM_LOG_POS DMIRROR_MAX_LEGS /* struct dmm_lio.leg of the disk log device */

/* ------------------------------------------------------------------------------------------ */
/* What differs between the two kernels. */

#ifdef __DragonFly__
MALLOC_DEFINE(M_DMMIRROR, "dm_mirror", "device-mapper mirror target");

typedef struct spinlock dmm_lock_t;
typedef struct buf dmm_parent_t; /* the nested buf dm hands to the target */
/* Parents wait in a queue through their bio's driver link. */
TAILQ_HEAD(dmm_parent_q, bio);
#define DMM_PQ_ENTRY bio_act
#define DMM_PQ_ELEM(bp) (&(bp)->b_bio1)
#define DMM_PQ_BUF(e) ((e)->bio_buf)
#define dmm_log(...) kprintf(__VA_ARGS__)
#define dmm_snprintf ksnprintf

static void *
dmm_zalloc(size_t size, int may_sleep)
{
	return kmalloc(size, M_DMMIRROR, (may_sleep ? M_WAITOK : M_NOWAIT) | M_ZERO);
}

static void
dmm_free(void *p, size_t size)
{
	(void)size;
	kfree(p, M_DMMIRROR);
}
#else
typedef kmutex_t dmm_lock_t;
typedef struct buf dmm_parent_t;
TAILQ_HEAD(dmm_parent_q, buf);
#define DMM_PQ_ENTRY b_actq
#define DMM_PQ_ELEM(bp) (bp)
#define DMM_PQ_BUF(e) (e)
#define dmm_log(...) printf(__VA_ARGS__)
#define dmm_snprintf snprintf

static void *
dmm_zalloc(size_t size, int may_sleep)
{
	return kmem_zalloc(size, may_sleep ? KM_SLEEP : KM_NOSLEEP);
}

static void
dmm_free(void *p, size_t size)
{
	kmem_free(p, size);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* State. */

/* One leg I/O the core asked for, from issue until it is reported with dmirror_leg_done(). */
struct dmm_lio {
	struct dmm_lio *next;    /* free list, issue queue or done queue */
	struct dmm_softc *sc;
	uint64_t token;
	uint64_t sector;         /* on the leg, relative to its table offset */
	uint64_t count;
	uint8_t *data;           /* where the bytes are (parent, resync buffer or core metadata) */
	uint32_t leg;
	uint8_t op;
	uint8_t fua;
	uint8_t flushing;        /* the write is done; its FUA cache flush is in flight */
	uint8_t pooled;          /* from the preallocated pool (else allocated on demand) */
	int error;
};

struct dmm_leg {
	dm_pdev_t *pdev;
	uint64_t offset;         /* 512-byte sectors */
	uint64_t dev_sectors;    /* size of the device, 512-byte sectors */
	char name[DMM_DEVNAME];  /* major:minor, for table and status */
};

struct dmm_softc {
	dmm_lock_t lock;
#ifdef __NetBSD__
	kcondvar_t cv;           /* the worker's and the waiters' wakeup */
	struct lwp *worker;
#else
	struct thread *worker;
	int wchan;               /* the worker's and the waiters' wakeup channel */
#endif
	/* Configuration (set at init, read-only afterwards). */
	char *params;            /* our copy of the parameter string; the table points into it */
	size_t params_size;
	struct dmirror_dm_table *table;
	int nlegs;
	struct dmm_leg legs[DMIRROR_MAX_LEGS];
	/* The disk log device (table "disk <log_dev> ..."): the core's DMIRROR_LOGDEV_LEG. */
	struct dmm_leg logdev;
	int has_log;
	uint64_t length;         /* target sectors (DragonFly: at init; NetBSD: first strategy) */

	/* Protected by lock. */
	struct dmm_parent_q parents;   /* waiting to be submitted, in order */
	struct dmm_lio *done_head;     /* completed leg I/Os, to report */
	struct dmm_lio **done_tail;
	int stop;                      /* destroy: shut down and exit */
	int exited;
	int want_activate;
	int busy_cmd;                  /* a status/message/sync request is being served */
	uint32_t cmd_gen;              /* bumped when the worker finished a request */
	int (*cmd_fn)(struct dmm_softc *, void *);
	void *cmd_arg;
	int cmd_result;
	uint64_t parents_inflight;     /* submitted, not completed */
	uint64_t flush_waiters;

	/* Worker-only state. */
	struct dmirror *m;
	int state;                     /* DMM_ST_* */
	char why[DMM_MSG];             /* why activation failed */
	struct dmirror_config cfg;
	struct dmm_lio *issue_head;    /* recorded by the issue callback, started by the worker */
	struct dmm_lio **issue_tail;
	struct dmm_lio *free_lio;
	struct dmm_lio *pool;
	size_t pool_count;
	uint8_t **resync_buf;
	size_t resync_bytes;
	int shutdown_started;
	int shutdown_done;
	/* Leg I/Os the issue callback could not record (no memory): failed by the worker. */
	uint64_t spill[32];
	int nspill;
	int parent_busy;               /* the core said EBUSY: wait for READY or a completion */
	uint64_t last_progress;        /* percent reported, per 10 */
	struct dmirror_status *status; /* worker-owned snapshot buffer */
	uint32_t log_health;
	int last_tick;
	/*
	 * The core numbers legs by mirror slot; the table by position. For the core log they are
	 * the same; for the dmirror log the legs' metadata say which slot each device holds.
	 * slot_leg[slot] = table position or -1 (no device); leg_slot[position] = slot.
	 */
	int slot_leg[DMIRROR_MAX_LEGS];
	int leg_slot[DMIRROR_MAX_LEGS];
	uint8_t leg_out[DMIRROR_MAX_LEGS]; /* by table position: the core took it out */
	/* Devices replaced by `add` messages, released at destroy (dm's deps still name them). */
	dm_pdev_t *old_pdev[DMIRROR_MAX_LEGS];
	int nold;
};

#define DMM_ST_INACTIVE 0
#define DMM_ST_ACTIVE 1
#define DMM_ST_FAILED 2  /* activation refused: why[] says why; I/O fails with EIO */
#define DMM_ST_DOWN 3    /* shut down */

/* Live instances, to serialize a reload's handover between the old and the new table. */
static dmm_lock_t dmm_reg_lock;
static struct dmm_softc *dmm_live[64];

/* ------------------------------------------------------------------------------------------ */
/* Locks and sleeping, per kernel. */

#ifdef __DragonFly__
static void dmm_lock_init(dmm_lock_t *l) { spin_init(l, "dmmirror"); }
static void dmm_lock_destroy(dmm_lock_t *l) { spin_uninit(l); }
static void dmm_lock(dmm_lock_t *l) { spin_lock(l); }
static void dmm_unlock(dmm_lock_t *l) { spin_unlock(l); }
static void dmm_sc_init_wait(struct dmm_softc *sc) { (void)sc; }
static void dmm_sc_fini_wait(struct dmm_softc *sc) { (void)sc; }
/* Called with sc->lock held; returns with it held. */
static void
dmm_wait(struct dmm_softc *sc, int ticks)
{
	ssleep(&sc->wchan, &sc->lock, 0, "dmmirror", ticks);
}
static void dmm_wakeup(struct dmm_softc *sc) { wakeup(&sc->wchan); }
static int dmm_hz(void) { return hz; }
static int dmm_ticks(void) { return ticks; }
#else
static void dmm_lock_init(dmm_lock_t *l) { mutex_init(l, MUTEX_DEFAULT, IPL_BIO); }
static void dmm_lock_destroy(dmm_lock_t *l) { mutex_destroy(l); }
static void dmm_lock(dmm_lock_t *l) { mutex_enter(l); }
static void dmm_unlock(dmm_lock_t *l) { mutex_exit(l); }
static void dmm_sc_init_wait(struct dmm_softc *sc) { cv_init(&sc->cv, "dmmirror"); }
static void dmm_sc_fini_wait(struct dmm_softc *sc) { cv_destroy(&sc->cv); }
static void
dmm_wait(struct dmm_softc *sc, int ticks)
{
	(void)cv_timedwait(&sc->cv, &sc->lock, ticks);
}
static void dmm_wakeup(struct dmm_softc *sc) { cv_broadcast(&sc->cv); }
static int dmm_hz(void) { return hz; }
/* hardclock_ticks: NetBSD up to 9; later releases spell it getticks(). */
static int dmm_ticks(void) { return hardclock_ticks; }
#endif

void
dmirror_host_panic(const char *msg)
{
	panic("%s", msg);
}

/* ------------------------------------------------------------------------------------------ */
/* Leg I/O records. */

static struct dmm_lio *
dmm_lio_get(struct dmm_softc *sc)
{
	struct dmm_lio *l = sc->free_lio;

	if (l != NULL) {
		sc->free_lio = l->next;
		memset(l, 0, sizeof(*l));
		l->pooled = 1;
		return l;
	}
	/* The pool covers what the core can have in flight; this is a safety net only. */
	l = dmm_zalloc(sizeof(*l), 0);
	return l;
}

static void
dmm_lio_put(struct dmm_softc *sc, struct dmm_lio *l)
{
	if (l->pooled) {
		l->next = sc->free_lio;
		sc->free_lio = l;
	} else {
		dmm_free(l, sizeof(*l));
	}
}

/* The device of a leg I/O record: a table leg, or the disk log device (DMM_LOG_POS). */
static struct dmm_leg *
dmm_dev(struct dmm_softc *sc, uint32_t pos)
{
	return pos == DMM_LOG_POS ? &sc->logdev : &sc->legs[pos];
}

/* Leg I/O completion: any context, even an interrupt. Queue it for the worker. */
static void
dmm_lio_finished(struct dmm_lio *l, int error)
{
	struct dmm_softc *sc = l->sc;

	l->error = error;
	l->next = NULL;
	dmm_lock(&sc->lock);
	*sc->done_tail = l;
	sc->done_tail = &l->next;
	dmm_wakeup(sc);
	dmm_unlock(&sc->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* Starting leg I/O, per kernel. The worker calls these; they may sleep for a buffer header. */

#ifdef __DragonFly__
static void
dmm_biodone(struct bio *bio)
{
	struct buf *bp = bio->bio_buf;
	struct dmm_lio *l = bio->bio_caller_info1.ptr;
	int error = 0;

	if (bp->b_flags & B_ERROR)
		error = bp->b_error != 0 ? bp->b_error : EIO;
	else if (bp->b_resid != 0)
		error = EIO;
	relpbuf(bp, NULL);
	dmm_lio_finished(l, error);
}

/* cmd: BUF_CMD_*; bytes at byte offset off of the leg's device. */
static void
dmm_start(struct dmm_softc *sc, struct dmm_lio *l, buf_cmd_t cmd, uint64_t off, size_t bytes)
{
	struct dmm_leg *leg = dmm_dev(sc, l->leg);
	struct buf *bp;

	bp = getpbuf(NULL);
	bp->b_cmd = cmd;
	bp->b_data = (caddr_t)l->data;
	bp->b_bcount = (int)bytes;
	bp->b_resid = (int)bytes;
	bp->b_flags &= ~B_ERROR;
	bp->b_error = 0;
	bp->b_bio1.bio_offset = (off_t)off;
	bp->b_bio1.bio_done = dmm_biodone;
	bp->b_bio1.bio_caller_info1.ptr = l;
	vn_strategy(leg->pdev->pdev_vnode, &bp->b_bio1);
}

static void
dmm_issue_one(struct dmm_softc *sc, struct dmm_lio *l)
{
	struct dmm_leg *leg = dmm_dev(sc, l->leg);
	uint64_t off = (leg->offset + l->sector) * DEV_BSIZE;
	uint64_t bytes = l->count * DEV_BSIZE;

	switch (l->op) {
	case DMIRROR_OP_READ:
	case DMIRROR_OP_WRITE:
		if (bytes == 0 || bytes > DMM_INT_MAX) {
			dmm_lio_finished(l, EIO);
			return;
		}
		dmm_start(sc, l, l->op == DMIRROR_OP_READ ? BUF_CMD_READ : BUF_CMD_WRITE, off,
		    (size_t)bytes);
		return;
	case DMIRROR_OP_FLUSH:
		l->data = NULL;
		dmm_start(sc, l, BUF_CMD_FLUSH, 0, 0);
		return;
	case DMIRROR_OP_DISCARD:
		if (bytes == 0 || bytes > DMM_INT_MAX) {
			dmm_lio_finished(l, EOPNOTSUPP);
			return;
		}
		l->data = NULL;
		dmm_start(sc, l, BUF_CMD_FREEBLKS, off, (size_t)bytes);
		return;
	default:
		dmm_lio_finished(l, EIO);
	}
}

/* The FUA write is done: now its cache flush. */
static void
dmm_issue_fua_flush(struct dmm_softc *sc, struct dmm_lio *l)
{
	l->flushing = 1;
	l->data = NULL;
	dmm_start(sc, l, BUF_CMD_FLUSH, 0, 0);
}
#else /* __NetBSD__ */
static void
dmm_iodone(struct buf *bp)
{
	struct dmm_lio *l = bp->b_private;
	int error = bp->b_error;

	if (error == 0 && bp->b_resid != 0)
		error = EIO;
	putiobuf(bp);
	dmm_lio_finished(l, error);
}

/* A cache flush of the leg's device: synchronous (the worker may sleep). */
static int
dmm_cache_sync(struct dmm_leg *leg)
{
	int force = 1;

	return VOP_IOCTL(leg->pdev->pdev_vnode, DIOCCACHESYNC, &force, FREAD | FWRITE,
	    kauth_cred_get());
}

static void
dmm_issue_one(struct dmm_softc *sc, struct dmm_lio *l)
{
	struct dmm_leg *leg = dmm_dev(sc, l->leg);
	struct vnode *vp = leg->pdev->pdev_vnode;
	uint64_t bytes = l->count * DEV_BSIZE;
	struct buf *bp;
	int error;

	switch (l->op) {
	case DMIRROR_OP_READ:
	case DMIRROR_OP_WRITE:
		break;
	case DMIRROR_OP_FLUSH:
		error = dmm_cache_sync(leg);
		/* A device without a write cache (ENOTTY/ENODEV) has nothing to flush. */
		if (error == ENOTTY || error == ENODEV || error == EOPNOTSUPP)
			error = 0;
		dmm_lio_finished(l, error);
		return;
	case DMIRROR_OP_DISCARD:
		/* Not a failure: the core leaves the leg alone. */
		dmm_lio_finished(l, EOPNOTSUPP);
		return;
	default:
		dmm_lio_finished(l, EIO);
		return;
	}
	if (bytes == 0 || bytes > DMM_INT_MAX) {
		dmm_lio_finished(l, EIO);
		return;
	}
	/*
	 * A plain iobuf rather than nestiobuf_setup(): a nested buf completes its master through
	 * nestiobuf_iodone, and here only the core decides when the parent is finished (and a
	 * repair writes from a read parent's buffer, against the master's direction).
	 */
	bp = getiobuf(NULL, true);
	bp->b_cflags = BC_BUSY;
	bp->b_flags = B_ASYNC | (l->op == DMIRROR_OP_READ ? B_READ : B_WRITE);
	bp->b_iodone = dmm_iodone;
	bp->b_private = l;
	bp->b_data = l->data;
	bp->b_bcount = bp->b_bufsize = bp->b_resid = (int)bytes;
	bp->b_blkno = (daddr_t)(leg->offset + l->sector); /* DEV_BSIZE units */
	bp->b_dev = vp->v_rdev;
	bp->b_proc = NULL;
	VOP_STRATEGY(vp, bp);
}

static void
dmm_issue_fua_flush(struct dmm_softc *sc, struct dmm_lio *l)
{
	int error;

	l->flushing = 1;
	error = dmm_cache_sync(dmm_dev(sc, l->leg));
	if (error == ENOTTY || error == ENODEV || error == EOPNOTSUPP)
		error = 0;
	dmm_lio_finished(l, error);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* The core's callbacks. Called only from the worker, inside dmirror_* calls: never sleep. */

static void *
dmm_cb_alloc(void *ctx, size_t size, int may_sleep)
{
	(void)ctx;
	return dmm_zalloc(size, may_sleep);
}

static void
dmm_cb_free(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	dmm_free(ptr, size);
}

static void
dmm_cb_issue(void *ctx, const struct dmirror_leg_io *io)
{
	struct dmm_softc *sc = ctx;
	struct dmm_lio *l = dmm_lio_get(sc);

	if (l == NULL) {
		/* Cannot happen with the pool sized to the core's limits; fail the leg I/O
		 * rather than lose it (the core then fails that leg, visibly). */
		dmm_log("dm_mirror: out of leg I/O records; leg %u I/O failed\n", io->leg);
		if (sc->nspill < (int)(sizeof(sc->spill) / sizeof(sc->spill[0])))
			sc->spill[sc->nspill++] = io->token;
		else
			panic("dm_mirror: leg I/O lost (no memory)");
		return;
	}
	l->sc = sc;
	l->token = io->token;
	l->sector = io->sector;
	l->count = io->count;
	/* Mirror slot -> table leg; a slot without a device gets an error, not a wild I/O. */
	if (io->leg == DMIRROR_LOGDEV_LEG && sc->has_log) {
		l->leg = DMM_LOG_POS;
	} else if (io->leg < DMIRROR_MAX_LEGS && sc->slot_leg[io->leg] >= 0) {
		l->leg = (uint32_t)sc->slot_leg[io->leg];
	} else {
		l->leg = 0;
		l->op = 0;
		l->next = NULL;
		*sc->issue_tail = l;
		sc->issue_tail = &l->next;
		return;
	}
	l->op = io->op;
	l->fua = io->fua;
	switch (io->buf_kind) {
	case DMIRROR_BUF_PARENT:
		l->data = (uint8_t *)(uintptr_t)io->parent_buf + io->offset;
		break;
	case DMIRROR_BUF_RESYNC:
		l->data = io->resync_slot < sc->cfg.resync_max_inflight ?
		    sc->resync_buf[io->resync_slot] + io->offset : NULL;
		break;
	case DMIRROR_BUF_META:
		/* Core memory, unchanged until the completion; the kernel only reads it. */
		l->data = (uint8_t *)(uintptr_t)io->meta;
		break;
	default:
		l->data = NULL;
	}
	if (l->data == NULL && (io->op == DMIRROR_OP_READ || io->op == DMIRROR_OP_WRITE))
		l->op = 0; /* started as an error by the worker (ENXIO below) */
	l->next = NULL;
	*sc->issue_tail = l;
	sc->issue_tail = &l->next;
}

static void
dmm_complete_parent(struct dmm_softc *sc, dmm_parent_t *bp, int error)
{
	if (error != 0) {
		bp->b_error = error;
#ifdef __DragonFly__
		bp->b_flags |= B_ERROR;
#endif
		bp->b_resid = bp->b_bcount;
	} else {
		bp->b_resid = 0;
	}
	dmm_lock(&sc->lock);
	sc->parents_inflight--;
	sc->parent_busy = 0;
	dmm_wakeup(sc);
	dmm_unlock(&sc->lock);
#ifdef __DragonFly__
	biodone(&bp->b_bio1);
#else
	biodone(bp);
#endif
}

static void
dmm_cb_complete(void *ctx, uint64_t handle, int error)
{
	/* biodone() does not sleep; it may run the upper layer's completion. */
	dmm_complete_parent(ctx, (dmm_parent_t *)(uintptr_t)handle, error);
}

static void
dmm_cb_event(void *ctx, const struct dmirror_event *ev)
{
	struct dmm_softc *sc = ctx;
	int pos = ev->leg < DMIRROR_MAX_LEGS ? sc->slot_leg[ev->leg] : -1;
	const char *leg = pos >= 0 ? sc->legs[pos].name : "(no device)";
	uint64_t pct;

	switch (ev->kind) {
	case DMIRROR_EV_LEG_FAILED:
		if (pos >= 0)
			sc->leg_out[pos] = 1;
		dmm_log("dm_mirror: leg %u (%s) %s (error %d)\n", ev->leg, leg,
		    ev->state == DMIRROR_LEG_MISSING ? "missing" : "failed", ev->error);
		break;
	case DMIRROR_EV_RESYNC_PROGRESS:
		pct = ev->total != 0 ? ev->done * 100 / ev->total : 100;
		if (pct / 10 != sc->last_progress / 10) {
			sc->last_progress = pct;
			dmm_log("dm_mirror: leg %u (%s) resync %ju%%\n", ev->leg, leg,
			    (uintmax_t)pct);
		}
		break;
	case DMIRROR_EV_LEG_IN_SYNC:
		if (pos >= 0)
			sc->leg_out[pos] = 0;
		sc->last_progress = 0;
		dmm_log("dm_mirror: leg %u (%s) in sync\n", ev->leg, leg);
		break;
	case DMIRROR_EV_RESYNC_STALLED:
		dmm_log("dm_mirror: leg %u (%s) resync stalled at sector %ju: no readable source\n",
		    ev->leg, leg, (uintmax_t)ev->sector);
		break;
	case DMIRROR_EV_REPAIRED:
		dmm_log("dm_mirror: leg %u (%s) read error repaired at sector %ju (+%ju)\n",
		    ev->leg, leg, (uintmax_t)ev->sector, (uintmax_t)ev->count);
		break;
	case DMIRROR_EV_READY:
		sc->parent_busy = 0;
		break;
	case DMIRROR_EV_SHUTDOWN_DONE:
		sc->shutdown_done = 1;
		break;
	case DMIRROR_EV_AUTHORITATIVE:
		dmm_log("dm_mirror: leg %u (%s) is now authoritative\n", ev->leg, leg);
		break;
	case DMIRROR_EV_LOG_FAILED:
		sc->log_health = DMIRROR_DM_LOG_FAILED;
		dmm_log("dm_mirror: log device %s failed (error %d): nothing more is written to it; "
		    "writes that depend on a leg state it cannot record fail. Reload the mirror "
		    "with a new log device (full resync)\n", sc->logdev.name, ev->error);
		break;
	default:
		break;
	}
}

static void
dmm_cb_log(void *ctx, int level, const char *msg)
{
	(void)ctx;
	if (level <= DMIRROR_LOG_NOTICE)
		dmm_log("dm_mirror: %s\n", msg);
}

/* Synchronous metadata I/O for dmirror_create_assembled() (bitmaps), worker context. */
struct dmm_sync_io {
	int done;
	int error;
};

static int dmm_rw_sync(struct dmm_softc *sc, uint32_t leg, int write, uint64_t sector,
    uint8_t *buf, uint64_t len);

static int
dmm_cb_meta_read(void *ctx, uint32_t slot, uint64_t sector, uint8_t *buf, uint64_t len)
{
	struct dmm_softc *sc = ctx;

	if (slot == DMIRROR_LOGDEV_LEG && sc->has_log)
		return dmm_rw_sync(sc, DMM_LOG_POS, 0, sector, buf, len);
	if (slot >= DMIRROR_MAX_LEGS || sc->slot_leg[slot] < 0)
		return ENXIO;
	return dmm_rw_sync(sc, (uint32_t)sc->slot_leg[slot], 0, sector, buf, len);
}

static int
dmm_cb_meta_write(void *ctx, uint32_t slot, uint64_t sector, const uint8_t *buf, uint64_t len)
{
	struct dmm_softc *sc = ctx;

	if (slot >= DMIRROR_MAX_LEGS || sc->slot_leg[slot] < 0)
		return ENXIO;
	return dmm_rw_sync(sc, (uint32_t)sc->slot_leg[slot], 1, sector,
	    (uint8_t *)(uintptr_t)buf, len);
}

static const struct dmirror_host_ops dmm_ops = {
	.alloc = dmm_cb_alloc,
	.free = dmm_cb_free,
	.lock = NULL,
	.unlock = NULL,
	.issue = dmm_cb_issue,
	.complete = dmm_cb_complete,
	.event = dmm_cb_event,
	.schedule = NULL,
	.meta_read = dmm_cb_meta_read,
	.meta_write = dmm_cb_meta_write,
	.log = dmm_cb_log,
};

/*
 * Read or write len bytes at sector of a leg and wait (worker only, before the mirror exists or
 * from inside dmirror_create). Goes through the same record/start/finish path as every leg I/O.
 */
static int
dmm_rw_sync(struct dmm_softc *sc, uint32_t leg, int write, uint64_t sector, uint8_t *buf,
    uint64_t len)
{
	struct dmm_lio *l, *d, **pp;
	int error;

	if ((leg >= (uint32_t)sc->nlegs && !(leg == DMM_LOG_POS && sc->has_log)) || len == 0 ||
	    len % DEV_BSIZE != 0)
		return EINVAL;
	l = dmm_zalloc(sizeof(*l), 1);
	if (l == NULL)
		return ENOMEM;
	l->sc = sc;
	l->token = UINT64_MAX;
	l->leg = leg;
	l->sector = sector;
	l->count = len / DEV_BSIZE;
	l->data = buf;
	l->op = write ? DMIRROR_OP_WRITE : DMIRROR_OP_READ;
	dmm_issue_one(sc, l);
	/* Wait for exactly this record on the done queue. */
	dmm_lock(&sc->lock);
	for (;;) {
		for (pp = &sc->done_head; (d = *pp) != NULL; pp = &d->next)
			if (d == l)
				break;
		if (d != NULL) {
			*pp = d->next;
			if (sc->done_tail == &d->next)
				sc->done_tail = pp;
			break;
		}
		dmm_wait(sc, dmm_hz());
	}
	dmm_unlock(&sc->lock);
	error = l->error;
	dmm_free(l, sizeof(*l));
	return error;
}

/* ------------------------------------------------------------------------------------------ */
/* Activation (worker). */

static int
dmm_legs_busy_elsewhere(struct dmm_softc *sc)
{
	size_t i;
	int j, k, busy = 0;

	dmm_lock(&dmm_reg_lock);
	for (i = 0; i < sizeof(dmm_live) / sizeof(dmm_live[0]) && !busy; i++) {
		struct dmm_softc *o = dmm_live[i];
		if (o == NULL || o == sc)
			continue;
		for (j = 0; j < sc->nlegs && !busy; j++)
			for (k = 0; k < o->nlegs; k++)
				if (o->legs[k].pdev == sc->legs[j].pdev)
					busy = 1;
		/* The disk log device, too: the old table marks it clean first. */
		if (sc->has_log && o->has_log && o->logdev.pdev == sc->logdev.pdev)
			busy = 1;
	}
	dmm_unlock(&dmm_reg_lock);
	return busy;
}

static void
dmm_refuse(struct dmm_softc *sc, const char *why)
{
	strlcpy(sc->why, why, sizeof(sc->why));
	sc->state = DMM_ST_FAILED;
	dmm_log("dm_mirror: not activated: %s\n", sc->why);
}

/* Read the two superblock slots of every leg and let the core assemble the mirror. */
static int
dmm_assemble(struct dmm_softc *sc, struct dmirror_assembly *as)
{
	struct dmirror_leg_read *reads;
	struct dmirror_why why;
	uint8_t *slots;
	uint64_t s0, s1, slot_bytes = 0;
	char msg[DMM_MSG];
	int i, j, error;

	reads = dmm_zalloc(sizeof(*reads) * DMIRROR_MAX_LEGS, 1);
	if (reads == NULL)
		return ENOMEM;
	/* The slot size depends on the sector size only (512 here), not on the leg. */
	(void)dmirror_sb_location(sc->legs[0].dev_sectors - sc->legs[0].offset, DEV_BSIZE, &s0,
	    &s1, &slot_bytes);
	slots = slot_bytes != 0 ? dmm_zalloc(2 * slot_bytes * (size_t)sc->nlegs, 1) : NULL;
	if (slots == NULL) {
		dmm_free(reads, sizeof(*reads) * DMIRROR_MAX_LEGS);
		strlcpy(sc->why, slot_bytes == 0 ? "leg 0 cannot hold dmirror metadata" :
		    "out of memory", sizeof(sc->why));
		return slot_bytes == 0 ? EINVAL : ENOMEM;
	}
	for (i = 0; i < sc->nlegs; i++) {
		uint64_t leg_sectors = sc->legs[i].dev_sectors - sc->legs[i].offset;
		uint8_t *b0 = slots + (size_t)(2 * i) * slot_bytes;
		uint8_t *b1 = b0 + slot_bytes;
		uint64_t bytes;

		reads[i].sectors = leg_sectors;
		reads[i].sector_size = DEV_BSIZE;
		reads[i].label = (uint64_t)i;
		reads[i].name = sc->legs[i].name;
		if (dmirror_sb_location(leg_sectors, DEV_BSIZE, &s0, &s1, &bytes) != 0 ||
		    bytes != slot_bytes)
			continue; /* too small: both slots NULL, the core says so */
		if (dmm_rw_sync(sc, (uint32_t)i, 0, s0, b0, slot_bytes) == 0) {
			reads[i].slot0 = b0;
			reads[i].slot0_len = slot_bytes;
		}
		if (dmm_rw_sync(sc, (uint32_t)i, 0, s1, b1, slot_bytes) == 0) {
			reads[i].slot1 = b1;
			reads[i].slot1_len = slot_bytes;
		}
	}
	memset(&why, 0, sizeof(why));
	msg[0] = '\0';
	error = dmirror_assemble(reads, (uint32_t)sc->nlegs, NULL, as, &why, msg, sizeof(msg));
	if (error != 0) {
		dmm_snprintf(sc->why, sizeof(sc->why), "the legs' dmirror metadata: %s",
		    msg[0] != '\0' ? msg : dmirror_why_str(why.code));
	} else {
		/* Which table leg holds which mirror slot (labels are table positions). */
		for (j = 0; j < DMIRROR_MAX_LEGS; j++)
			sc->slot_leg[j] = -1;
		for (i = 0; i < sc->nlegs; i++)
			sc->leg_slot[i] = -1;
		for (j = 0; j < DMIRROR_MAX_LEGS; j++) {
			if (!as->present[j] || as->label[j] >= (uint64_t)sc->nlegs)
				continue;
			sc->slot_leg[j] = (int)as->label[j];
			sc->leg_slot[as->label[j]] = j;
		}
		for (i = 0; i < sc->nlegs; i++)
			if (sc->leg_slot[i] < 0) {
				dmm_snprintf(sc->why, sizeof(sc->why),
				    "device %s (leg %d) is not a member of the mirror on the others",
				    sc->legs[i].name, i);
				error = EINVAL;
			}
	}
	dmm_free(slots, 2 * slot_bytes * (size_t)sc->nlegs);
	dmm_free(reads, sizeof(*reads) * DMIRROR_MAX_LEGS);
	return error;
}

/* 16 random bytes naming a new mirror (its disk log's identity). */
static void
dmm_random_uuid(uint8_t *u)
{
#ifdef __DragonFly__
	karc4rand(u, 16);
#else
	(void)cprng_fast(u, 16); /* an identity, not a secret */
#endif
	u[0] |= 1; /* never all zero */
}

/*
 * Disk log: read the log device's two superblock slots (at its start) and let the core decide:
 * a blank or unlabelled log is a new mirror, a valid one the recorded mirror, anything else is
 * refused (sc->why) with nothing written.
 */
static int
dmm_assemble_log(struct dmm_softc *sc, uint64_t region, struct dmirror_assembly *as)
{
	struct dmirror_leg_read lr, tail;
	struct dmirror_config cfg;
	struct dmirror_why why;
	uint64_t sizes[DMIRROR_MAX_LEGS];
	uint64_t t0, t1, tbytes = 0;
	uint8_t uuid[16];
	uint8_t fresh = 0;
	uint8_t *slots;
	uint32_t sync;
	char msg[DMM_MSG];
	int i, error;

	/* 512-byte sectors: a slot is 4096 bytes (8 sectors), slot 0 at 0, slot 1 at 8; then the
	 * two slots a dmirror leg of this size would have at its end (a leg given as the log by
	 * mistake is refused, not overwritten). */
	slots = dmm_zalloc(4 * 4096, 1);
	if (slots == NULL) {
		strlcpy(sc->why, "out of memory", sizeof(sc->why));
		return ENOMEM;
	}
	memset(&lr, 0, sizeof(lr));
	lr.sectors = sc->logdev.dev_sectors;
	lr.sector_size = DEV_BSIZE;
	lr.name = sc->logdev.name;
	if (lr.sectors >= 16) {
		if (dmm_rw_sync(sc, DMM_LOG_POS, 0, 0, slots, 4096) != 0 ||
		    dmm_rw_sync(sc, DMM_LOG_POS, 0, 8, slots + 4096, 4096) != 0) {
			dmm_snprintf(sc->why, sizeof(sc->why), "cannot read the log device %s",
			    sc->logdev.name);
			dmm_free(slots, 4 * 4096);
			return EIO;
		}
		lr.slot0 = slots;
		lr.slot0_len = 4096;
		lr.slot1 = slots + 4096;
		lr.slot1_len = 4096;
	}
	memset(&tail, 0, sizeof(tail));
	if (dmirror_sb_location(lr.sectors, DEV_BSIZE, &t0, &t1, &tbytes) == 0 && tbytes == 4096 &&
	    dmm_rw_sync(sc, DMM_LOG_POS, 0, t0, slots + 2 * 4096, 4096) == 0 &&
	    dmm_rw_sync(sc, DMM_LOG_POS, 0, t1, slots + 3 * 4096, 4096) == 0) {
		tail.slot0 = slots + 2 * 4096;
		tail.slot0_len = 4096;
		tail.slot1 = slots + 3 * 4096;
		tail.slot1_len = 4096;
	}
	(void)dmirror_config_default(&cfg, (uint8_t)sc->nlegs, sc->length);
	cfg.region_sectors = region;
	for (i = 0; i < sc->nlegs; i++)
		sizes[i] = sc->legs[i].dev_sectors - sc->legs[i].offset;
	switch (sc->table->sync) {
	case DMIRROR_DM_SYNC_SYNC: sync = DMIRROR_LOGDEV_SYNC_FORCE; break;
	case DMIRROR_DM_SYNC_NOSYNC: sync = DMIRROR_LOGDEV_NOSYNC; break;
	default: sync = DMIRROR_LOGDEV_SYNC_DEFAULT; break;
	}
	dmm_random_uuid(uuid);
	memset(&why, 0, sizeof(why));
	msg[0] = '\0';
	error = dmirror_assemble_log(&lr, tail.slot0 != NULL ? &tail : NULL, &cfg, sizes, sync,
	    uuid, as, &fresh, &why, msg, sizeof(msg));
	dmm_free(slots, 4 * 4096);
	if (error != 0) {
		dmm_snprintf(sc->why, sizeof(sc->why), "log device %s: %s", sc->logdev.name,
		    msg[0] != '\0' ? msg : dmirror_why_str(why.code));
		return error;
	}
	/* Legs are table positions: the log's leg table is in table order. */
	for (i = 0; i < DMIRROR_MAX_LEGS; i++) {
		sc->slot_leg[i] = i < sc->nlegs ? i : -1;
		sc->leg_slot[i] = i < sc->nlegs ? i : -1;
	}
	if (fresh)
		dmm_log("dm_mirror: new disk log on %s%s\n", sc->logdev.name,
		    sync == DMIRROR_LOGDEV_NOSYNC ? " (nosync: legs taken as identical)" :
		    " (legs after the first resync in full)");
	return 0;
}

static void
dmm_activate(struct dmm_softc *sc)
{
	struct dmirror_assembly *as = NULL;
	struct dmirror_init *init = NULL;
	struct dmirror_why why;
	uint64_t region = 0, leg_sectors, min_leg = UINT64_MAX;
	int i, error;

	uint64_t sizes[DMIRROR_MAX_LEGS];
	char err[DMM_MSG];

	if (sc->length == 0)
		return; /* NetBSD: not known before the first strategy call */
	for (i = 0; i < sc->nlegs; i++)
		sizes[i] = sc->legs[i].dev_sectors;
	/* Again here for NetBSD, whose init does not know the length. */
	if (dmirror_dm_check_devices(sc->table, sc->length, sizes, (uint32_t)sc->nlegs, err,
	    sizeof(err)) != 0) {
		dmm_refuse(sc, err);
		return;
	}
	switch (sc->table->log_type) {
	case DMIRROR_DM_LOG_DISK:
		/* dmirror_assemble_log needs ~3 KiB of stack: a default kernel thread will do. */
		if (!sc->has_log) {
			dmm_refuse(sc, "disk log: no log device open");
			return;
		}
		break;
	case DMIRROR_DM_LOG_DMIRROR:
		/*
		 * Also on NetBSD, whose kthreads have a fixed stack (amd64 UPAGES 5, one page a
		 * redzone: 16 KiB; 12 KiB in the 2015 tree check-build.sh reads). This was refused
		 * while dmirror_assemble() needed ~40 KiB; measured now on the linked x86_64 object
		 * (tests/kernel-stack-report.sh, which fails the kernel build past 8 KiB):
		 * dmirror_assemble() ~6.1 KiB, dmirror_create_assembled() ~6.6 KiB, plus this
		 * shim's worker frame (dmm_worker with dmm_activate and dmm_assemble inlined:
		 * 920 bytes, clang -fstack-usage): ~7.5 KiB, the worker's deepest path (a status
		 * line, dmm_do_text > dmirror_dm_format_status: ~6 KiB).
		 */
	case DMIRROR_DM_LOG_CORE:
		break;
	default:
		dmm_refuse(sc, "unknown log type");
		return;
	}
	if (dmirror_dm_region_sectors(sc->table, sc->length, &region) != 0) {
		dmm_refuse(sc, "invalid region size");
		return;
	}
	for (i = 0; i < sc->nlegs; i++) {
		leg_sectors = sc->legs[i].dev_sectors - sc->legs[i].offset;
		if (leg_sectors < min_leg)
			min_leg = leg_sectors;
	}
	memset(&why, 0, sizeof(why));
	if (sc->table->log_type == DMIRROR_DM_LOG_DISK) {
		as = dmm_zalloc(sizeof(*as), 1);
		if (as == NULL) {
			dmm_refuse(sc, "out of memory");
			return;
		}
		if (dmm_assemble_log(sc, region, as) != 0) {
			sc->state = DMM_ST_FAILED;
			dmm_log("dm_mirror: not activated: %s\n", sc->why);
			goto out;
		}
		sc->cfg = as->config;
		sc->log_health = DMIRROR_DM_LOG_ALIVE;
	} else if (sc->table->log_type == DMIRROR_DM_LOG_DMIRROR) {
		as = dmm_zalloc(sizeof(*as), 1);
		if (as == NULL) {
			dmm_refuse(sc, "out of memory");
			return;
		}
		if (dmm_assemble(sc, as) != 0) {
			sc->state = DMM_ST_FAILED;
			dmm_log("dm_mirror: not activated: %s\n", sc->why);
			goto out;
		}
		if (as->config.data_sectors != sc->length) {
			dmm_snprintf(sc->why, sizeof(sc->why),
			    "the legs' metadata describe %ju sectors of data, the table %ju",
			    (uintmax_t)as->config.data_sectors, (uintmax_t)sc->length);
			sc->state = DMM_ST_FAILED;
			dmm_log("dm_mirror: not activated: %s\n", sc->why);
			goto out;
		}
		sc->cfg = as->config;
		/* sync / nosync for a self-describing mirror: the metadata decide; sync asks for
		 * a full resync of the non-authoritative legs, which the admin does with
		 * `dmsetup message <dev> 0 fail <leg>` + `add`, not silently here. */
	} else {
		error = dmirror_config_default(&sc->cfg, (uint8_t)sc->nlegs, sc->length);
		if (error != 0) {
			dmm_refuse(sc, "the core refused the configuration");
			return;
		}
		sc->cfg.region_sectors = region;
		sc->cfg.log = DMIRROR_REGION_LOG_CORE;
		init = dmm_zalloc(sizeof(*init), 1);
		if (init == NULL) {
			dmm_refuse(sc, "out of memory");
			return;
		}
		/* The core log remembers nothing: every leg but the first is rebuilt unless the
		 * table says nosync. Slots are table positions. */
		for (i = 0; i < DMIRROR_MAX_LEGS; i++) {
			sc->slot_leg[i] = i < sc->nlegs ? i : -1;
			sc->leg_slot[i] = i < sc->nlegs ? i : -1;
		}
		(void)dmirror_init_fresh(init, (uint8_t)sc->nlegs, min_leg,
		    sc->table->sync == DMIRROR_DM_SYNC_NOSYNC);
	}
	sc->cfg.max_parents = DMM_MAX_PARENTS;
	sc->cfg.max_leg_ios = DMM_MAX_LEG_IOS;

	/* Leg I/O records and resync buffers, before the core can ask for them. */
	sc->pool_count = (size_t)sc->cfg.max_leg_ios + sc->cfg.resync_max_inflight +
	    (size_t)sc->nlegs * 64;
	sc->pool = dmm_zalloc(sizeof(struct dmm_lio) * sc->pool_count, 1);
	sc->resync_bytes = (size_t)sc->cfg.resync_chunk_sectors * sc->cfg.sector_size;
	sc->resync_buf = dmm_zalloc(sizeof(uint8_t *) * sc->cfg.resync_max_inflight, 1);
	if (sc->pool == NULL || sc->resync_buf == NULL) {
		dmm_refuse(sc, "out of memory");
		goto out;
	}
	for (i = 0; i < (int)sc->cfg.resync_max_inflight; i++) {
		sc->resync_buf[i] = dmm_zalloc(sc->resync_bytes, 1);
		if (sc->resync_buf[i] == NULL) {
			dmm_refuse(sc, "out of memory for resync buffers");
			goto out;
		}
	}
	for (i = 0; i < (int)sc->pool_count; i++) {
		sc->pool[i].next = sc->free_lio;
		sc->free_lio = &sc->pool[i];
	}
	if (as != NULL)
		error = dmirror_create_assembled(as, &sc->cfg, &dmm_ops, sc, &sc->m, &why);
	else
		error = dmirror_create(&sc->cfg, init, &dmm_ops, sc, 0, &sc->m, &why);
	if (error != 0) {
		dmm_snprintf(sc->why, sizeof(sc->why), "the core refused the mirror: %s (leg %u)",
		    dmirror_why_str(why.code), why.leg);
		sc->state = DMM_ST_FAILED;
		dmm_log("dm_mirror: not activated: %s\n", sc->why);
		goto out;
	}
	sc->state = DMM_ST_ACTIVE;
out:
	if (as != NULL)
		dmm_free(as, sizeof(*as));
	else if (init != NULL)
		dmm_free(init, sizeof(*init));
	/* On failure the pool and buffers are released by dmm_release_buffers() at destroy. */
}

static void
dmm_release_buffers(struct dmm_softc *sc)
{
	uint32_t i;

	if (sc->resync_buf != NULL) {
		for (i = 0; i < sc->cfg.resync_max_inflight; i++)
			if (sc->resync_buf[i] != NULL)
				dmm_free(sc->resync_buf[i], sc->resync_bytes);
		dmm_free(sc->resync_buf, sizeof(uint8_t *) * sc->cfg.resync_max_inflight);
		sc->resync_buf = NULL;
	}
	if (sc->pool != NULL) {
		dmm_free(sc->pool, sizeof(struct dmm_lio) * sc->pool_count);
		sc->pool = NULL;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* The worker. */

/* Start what the core asked for during the last entry point. */
static void
dmm_start_issued(struct dmm_softc *sc)
{
	struct dmm_lio *l;

	while ((l = sc->issue_head) != NULL) {
		sc->issue_head = l->next;
		if (sc->issue_head == NULL)
			sc->issue_tail = &sc->issue_head;
		l->next = NULL;
		dmm_issue_one(sc, l);
	}
}

/* Report finished leg I/Os to the core. Returns whether there were any. */
static int
dmm_report_done(struct dmm_softc *sc)
{
	struct dmm_lio *list, *l;

	while (sc->nspill > 0) {
		uint64_t tok = sc->spill[--sc->nspill];
		(void)dmirror_leg_done(sc->m, tok, DMIRROR_EIO);
		dmm_start_issued(sc);
	}
	dmm_lock(&sc->lock);
	list = sc->done_head;
	sc->done_head = NULL;
	sc->done_tail = &sc->done_head;
	dmm_unlock(&sc->lock);
	if (list == NULL)
		return 0;
	while ((l = list) != NULL) {
		list = l->next;
		if (l->error == 0 && l->fua && !l->flushing && l->op == DMIRROR_OP_WRITE) {
			/* Durable before it is reported: the device's cache flush next. */
			dmm_issue_fua_flush(sc, l);
			continue;
		}
		(void)dmirror_leg_done(sc->m, l->token, l->error);
		dmm_lio_put(sc, l);
		dmm_start_issued(sc);
	}
	return 1;
}

/* Hand queued parents to the core, in order, until it says EBUSY. */
static void
dmm_submit_parents(struct dmm_softc *sc)
{
	struct dmirror_parent_io pio;
	dmm_parent_t *bp;
	int error;

	for (;;) {
		dmm_lock(&sc->lock);
		bp = NULL;
		if (!sc->parent_busy && !TAILQ_EMPTY(&sc->parents)) {
			bp = DMM_PQ_BUF(TAILQ_FIRST(&sc->parents));
			TAILQ_REMOVE(&sc->parents, DMM_PQ_ELEM(bp), DMM_PQ_ENTRY);
		}
		dmm_unlock(&sc->lock);
		if (bp == NULL)
			return;
		if (sc->state == DMM_ST_INACTIVE) {
			/* Waiting for activation: keep it, in order. */
			dmm_lock(&sc->lock);
			TAILQ_INSERT_HEAD(&sc->parents, DMM_PQ_ELEM(bp), DMM_PQ_ENTRY);
			dmm_unlock(&sc->lock);
			return;
		}
		if (sc->state != DMM_ST_ACTIVE) {
			dmm_lock(&sc->lock);
			sc->parents_inflight++;
			dmm_unlock(&sc->lock);
			dmm_complete_parent(sc, bp, EIO);
			continue;
		}
		memset(&pio, 0, sizeof(pio));
		pio.handle = (uint64_t)(uintptr_t)bp;
		pio.buf = (uint64_t)(uintptr_t)bp->b_data;
#ifdef __DragonFly__
		pio.sector = (uint64_t)bp->b_bio1.bio_offset / DEV_BSIZE;
		pio.count = (uint64_t)bp->b_bcount / DEV_BSIZE;
		switch (bp->b_cmd) {
		case BUF_CMD_READ: pio.op = DMIRROR_OP_READ; break;
		case BUF_CMD_WRITE: pio.op = DMIRROR_OP_WRITE; break;
		case BUF_CMD_FLUSH: pio.op = DMIRROR_OP_FLUSH; break;
		case BUF_CMD_FREEBLKS: pio.op = DMIRROR_OP_DISCARD; break;
		default: pio.op = 0; break;
		}
		if ((bp->b_bio1.bio_offset % DEV_BSIZE) != 0 || (bp->b_bcount % DEV_BSIZE) != 0)
			pio.op = 0;
#else
		/* A flush parent is made by dmm_nb_sync and marked by b_private == sc; dm's
		 * nested bufs carry their master buf there, never sc. */
		pio.sector = (uint64_t)bp->b_blkno;
		pio.count = (uint64_t)bp->b_bcount / DEV_BSIZE;
		if (bp->b_private == sc)
			pio.op = DMIRROR_OP_FLUSH;
		else
			pio.op = (bp->b_flags & B_READ) ? DMIRROR_OP_READ : DMIRROR_OP_WRITE;
		if ((bp->b_bcount % DEV_BSIZE) != 0)
			pio.op = 0;
#endif
		dmm_lock(&sc->lock);
		sc->parents_inflight++;
		dmm_unlock(&sc->lock);
		if (pio.op == 0) {
			dmm_complete_parent(sc, bp, EINVAL);
			continue;
		}
		error = dmirror_submit(sc->m, &pio);
		dmm_start_issued(sc);
		if (error == DMIRROR_EBUSY) {
			/* Keep it first in line; resubmit after READY or a completion. */
			dmm_lock(&sc->lock);
			sc->parents_inflight--;
			sc->parent_busy = 1;
			TAILQ_INSERT_HEAD(&sc->parents, DMM_PQ_ELEM(bp), DMM_PQ_ENTRY);
			dmm_unlock(&sc->lock);
			return;
		}
		if (error != 0)
			dmm_complete_parent(sc, bp, error);
	}
}

static void
dmm_serve_cmd(struct dmm_softc *sc)
{
	int (*fn)(struct dmm_softc *, void *);
	void *arg;
	int r;

	dmm_lock(&sc->lock);
	fn = sc->cmd_fn;
	arg = sc->cmd_arg;
	sc->cmd_fn = NULL;
	dmm_unlock(&sc->lock);
	if (fn == NULL)
		return;
	r = fn(sc, arg);
	dmm_start_issued(sc);
	dmm_lock(&sc->lock);
	sc->cmd_result = r;
	sc->cmd_gen++;
	dmm_wakeup(sc);
	dmm_unlock(&sc->lock);
}

static void
dmm_worker(void *arg)
{
	struct dmm_softc *sc = arg;
	int ticks_per = dmm_hz() / DMM_TICK_HZ > 0 ? dmm_hz() / DMM_TICK_HZ : 1;
	int stopping = 0;

	for (;;) {
		dmm_lock(&sc->lock);
		if (sc->stop)
			stopping = 1;
		dmm_unlock(&sc->lock);

		if (sc->state == DMM_ST_INACTIVE && !stopping) {
			int wanted;
			dmm_lock(&sc->lock);
			wanted = sc->want_activate || !TAILQ_EMPTY(&sc->parents) ||
			    sc->cmd_fn != NULL;
			dmm_unlock(&sc->lock);
			if (wanted && !dmm_legs_busy_elsewhere(sc))
				dmm_activate(sc);
		}
		if (sc->state == DMM_ST_ACTIVE) {
			(void)dmm_report_done(sc);
			if (stopping && !sc->shutdown_started) {
				/* Flush the legs and persist the state (dmirror log: marked
				 * clean) once; then wait for ShutdownDone and idleness. */
				sc->shutdown_started = 1;
				if (dmirror_shutdown(sc->m) != 0)
					sc->shutdown_done = 1;
				dmm_start_issued(sc);
			}
			dmm_submit_parents(sc);
			if (dmm_ticks() - sc->last_tick >= ticks_per) {
				/* The core's clock: DMM_TICK_HZ ticks per second, however often
				 * the worker wakes up. */
				sc->last_tick = dmm_ticks();
				(void)dmirror_tick(sc->m);
				dmm_start_issued(sc);
			}
			if (stopping && sc->shutdown_done && dmirror_is_idle(sc->m) == 0)
				break;
		} else {
			/* Not active: fail what arrives (inactive: keep it), serve requests. */
			dmm_submit_parents(sc);
			if (stopping)
				break;
		}
		dmm_serve_cmd(sc);

		dmm_lock(&sc->lock);
		/* Sleep until a completion, a parent, a request, destroy, or the next tick;
		 * while stopping too (waiting for the shutdown and in-flight I/O). */
		if (sc->done_head == NULL && sc->cmd_fn == NULL && (sc->stop == stopping) &&
		    (TAILQ_EMPTY(&sc->parents) || sc->parent_busy ||
		    sc->state == DMM_ST_INACTIVE))
			dmm_wait(sc, ticks_per);
		dmm_unlock(&sc->lock);
	}

	if (sc->m != NULL) {
		(void)dmirror_destroy(sc->m);
		sc->m = NULL;
	}
	/* dm does not destroy a table with I/O in flight; should a parent still be queued (a
	 * shutdown refuses new parents), it fails rather than hangs. */
	sc->state = DMM_ST_DOWN;
	sc->parent_busy = 0;
	dmm_submit_parents(sc);
	dmm_lock(&sc->lock);
	sc->exited = 1;
	dmm_wakeup(sc);
	dmm_unlock(&sc->lock);
#ifdef __DragonFly__
	kthread_exit();
#else
	kthread_exit(0);
#endif
}

/* Run fn in the worker and wait for its result (sleepable ioctl context only). */
static int
dmm_call(struct dmm_softc *sc, int (*fn)(struct dmm_softc *, void *), void *arg)
{
	uint32_t gen;
	int r;

	dmm_lock(&sc->lock);
	while (sc->busy_cmd)
		dmm_wait(sc, dmm_hz());
	sc->busy_cmd = 1;
	sc->want_activate = 1;
	gen = sc->cmd_gen;
	sc->cmd_fn = fn;
	sc->cmd_arg = arg;
	dmm_wakeup(sc);
	while (sc->cmd_gen == gen && !sc->exited)
		dmm_wait(sc, dmm_hz());
	r = sc->cmd_gen != gen ? sc->cmd_result : ENXIO;
	sc->busy_cmd = 0;
	dmm_wakeup(sc);
	dmm_unlock(&sc->lock);
	return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Table load (init) and destroy: shared between the kernels. */

static void dmm_put_legs(struct dmm_softc *sc);

/* Size of a leg device in 512-byte sectors, and its major:minor name. */
static void
dmm_leg_identify(struct dmm_leg *leg)
{
#ifdef __DragonFly__
	struct partinfo *pi = &leg->pdev->pdev_pinfo;

	leg->dev_sectors = pi->media_blksize != 0 ?
	    pi->media_blocks * (pi->media_blksize / DEV_BSIZE) : pi->media_size / DEV_BSIZE;
	strlcpy(leg->name, leg->pdev->udev_name, sizeof(leg->name));
#else
	dev_t dev = leg->pdev->pdev_vnode->v_rdev;

	leg->dev_sectors = leg->pdev->pdev_numsec * (leg->pdev->pdev_secsize / DEV_BSIZE);
	dmm_snprintf(leg->name, sizeof(leg->name), "%llu:%llu",
	    (unsigned long long)major(dev), (unsigned long long)minor(dev));
#endif
}

/*
 * Parse and check a table, open the legs. params: the whole parameter string; length: the
 * target's sectors, 0 if the kernel does not tell yet (NetBSD). On failure nothing stays open or
 * allocated and nothing was written to any device.
 */
static int
dmm_create(const char *params, uint64_t length, struct dmm_softc **out)
{
	struct dmm_softc *sc;
	char err[DMM_MSG];
	char name[DMIRROR_DM_MAX_ARG_BYTES + 1];
	uint64_t sizes[DMIRROR_MAX_LEGS];
	size_t plen = strlen(params);
	size_t i;
	int error, j;

	if (plen > DMIRROR_DM_MAX_TABLE_BYTES) {
		dmm_log("dm_mirror: table longer than %u bytes\n", DMIRROR_DM_MAX_TABLE_BYTES);
		return EINVAL;
	}
	sc = dmm_zalloc(sizeof(*sc), 1);
	if (sc == NULL)
		return ENOMEM;
	sc->params_size = plen + 1;
	sc->params = dmm_zalloc(sc->params_size, 1);
	sc->table = dmm_zalloc(sizeof(*sc->table), 1);
	sc->status = dmm_zalloc(sizeof(*sc->status), 1);
	if (sc->params == NULL || sc->table == NULL || sc->status == NULL) {
		error = ENOMEM;
		goto fail;
	}
	memcpy(sc->params, params, plen);
	error = dmirror_dm_parse(sc->params, plen, sc->table, err, sizeof(err));
	if (error != 0) {
		dmm_log("dm_mirror: invalid table: %s\n", err);
		error = EINVAL;
		goto fail;
	}
	for (j = 0; j < sc->table->nlegs; j++) {
		const struct dmirror_dm_leg *tl = &sc->table->legs[j];

		memcpy(name, tl->dev, (size_t)tl->dev_len);
		name[tl->dev_len] = '\0';
		sc->legs[j].pdev = dm_pdev_insert(name);
		if (sc->legs[j].pdev == NULL) {
			dmm_log("dm_mirror: cannot open device '%s' of leg %d\n", name, j);
			error = ENOENT;
			goto fail;
		}
		sc->nlegs = j + 1;
		sc->legs[j].offset = tl->offset;
		dmm_leg_identify(&sc->legs[j]);
		sizes[j] = sc->legs[j].dev_sectors;
	}
	/* Two strings naming one device (a path and its major:minor) open the same pdev. */
	for (j = 0; j < sc->nlegs; j++)
		for (i = 0; i < (size_t)j; i++)
			if (sc->legs[i].pdev == sc->legs[j].pdev) {
				dmm_log("dm_mirror: legs %zu and %d are the same device (%s)\n", i,
				    j, sc->legs[j].name);
				error = EINVAL;
				goto fail;
			}
	if (length != 0) {
		error = dmirror_dm_check_devices(sc->table, length, sizes, (uint32_t)sc->nlegs,
		    err, sizeof(err));
		if (error != 0) {
			dmm_log("dm_mirror: invalid table: %s\n", err);
			error = EINVAL;
			goto fail;
		}
	}
	if (sc->table->log_type == DMIRROR_DM_LOG_DISK) {
		uint64_t need = 0, region = 0;

		memcpy(name, sc->table->log_dev, (size_t)sc->table->log_dev_len);
		name[sc->table->log_dev_len] = '\0';
		sc->logdev.pdev = dm_pdev_insert(name);
		if (sc->logdev.pdev == NULL) {
			dmm_log("dm_mirror: cannot open log device '%s'\n", name);
			error = ENOENT;
			goto fail;
		}
		sc->has_log = 1;
		sc->logdev.offset = 0;
		dmm_leg_identify(&sc->logdev);
		for (j = 0; j < sc->nlegs; j++)
			if (sc->legs[j].pdev == sc->logdev.pdev) {
				dmm_log("dm_mirror: leg %d and the log are the same device (%s)\n",
				    j, sc->logdev.name);
				error = EINVAL;
				goto fail;
			}
		/* The log device must hold this mirror's log (known once the length is). */
		if (length != 0 && (dmirror_dm_region_sectors(sc->table, length, &region) != 0 ||
		    dmirror_log_device_sectors(DEV_BSIZE, region, length, (uint32_t)sc->nlegs,
		    &need) != 0 ||
		    sc->logdev.dev_sectors < need)) {
			dmm_log("dm_mirror: invalid table: log device %s has %ju sectors, the log "
			    "needs %ju\n", sc->logdev.name, (uintmax_t)sc->logdev.dev_sectors,
			    (uintmax_t)need);
			error = EINVAL;
			goto fail;
		}
	}
	sc->length = length;
	dmm_lock_init(&sc->lock);
	dmm_sc_init_wait(sc);
	TAILQ_INIT(&sc->parents);
	for (j = 0; j < DMIRROR_MAX_LEGS; j++)
		sc->slot_leg[j] = sc->leg_slot[j] = -1;
	sc->done_tail = &sc->done_head;
	sc->issue_tail = &sc->issue_head;

	/* Register before the worker exists, so a successor sees us. */
	dmm_lock(&dmm_reg_lock);
	for (i = 0; i < sizeof(dmm_live) / sizeof(dmm_live[0]); i++)
		if (dmm_live[i] == NULL) {
			dmm_live[i] = sc;
			break;
		}
	dmm_unlock(&dmm_reg_lock);
	if (i == sizeof(dmm_live) / sizeof(dmm_live[0])) {
		dmm_log("dm_mirror: too many mirror targets\n");
		error = EBUSY;
		goto fail_locks;
	}
#ifdef __DragonFly__
	/*
	 * A stack of our own size (DMM_WORKER_STACK) rather than kthread_create()'s
	 * (LWKT_THREAD_STACK). kthread_create_stk() is compiled out (#if 0) in the 2020 tree, so
	 * the thread is made from the LWKT primitives it would use: a thread with that stack,
	 * started at dmm_worker, returning into kthread_exit.
	 */
	sc->worker = lwkt_alloc_thread(NULL, DMM_WORKER_STACK, -1, 0);
	cpu_set_thread_handler(sc->worker, kthread_exit, dmm_worker, sc);
	strlcpy(sc->worker->td_comm, "dm_mirror", sizeof(sc->worker->td_comm));
	lwkt_schedule(sc->worker);
	error = 0;
#else
	error = kthread_create(PRI_NONE, KTHREAD_MPSAFE, NULL, dmm_worker, sc, &sc->worker,
	    "dm_mirror");
#endif
	if (error != 0)
		goto fail_reg;
	*out = sc;
	return 0;

fail_reg:
	dmm_lock(&dmm_reg_lock);
	dmm_live[i] = NULL;
	dmm_unlock(&dmm_reg_lock);
fail_locks:
	dmm_sc_fini_wait(sc);
	dmm_lock_destroy(&sc->lock);
fail:
	dmm_put_legs(sc);
	if (sc->status != NULL)
		dmm_free(sc->status, sizeof(*sc->status));
	if (sc->table != NULL)
		dmm_free(sc->table, sizeof(*sc->table));
	if (sc->params != NULL)
		dmm_free(sc->params, sc->params_size);
	dmm_free(sc, sizeof(*sc));
	return error;
}

static void
dmm_put_legs(struct dmm_softc *sc)
{
	int j;

	for (j = 0; j < sc->nlegs; j++) {
		if (sc->legs[j].pdev == NULL)
			continue;
		dm_pdev_decr(sc->legs[j].pdev);
		sc->legs[j].pdev = NULL;
	}
	sc->nlegs = 0;
	if (sc->has_log && sc->logdev.pdev != NULL)
		dm_pdev_decr(sc->logdev.pdev);
	sc->logdev.pdev = NULL;
	sc->has_log = 0;
	for (j = 0; j < sc->nold; j++)
		dm_pdev_decr(sc->old_pdev[j]);
	sc->nold = 0;
}

/* Table unload: flush, persist (dmirror log: the legs are marked clean), stop the worker. */
static void
dmm_destroy(struct dmm_softc *sc)
{
	size_t i;

	dmm_lock(&sc->lock);
	sc->stop = 1;
	dmm_wakeup(sc);
	while (!sc->exited)
		dmm_wait(sc, dmm_hz());
	dmm_unlock(&sc->lock);

	dmm_lock(&dmm_reg_lock);
	for (i = 0; i < sizeof(dmm_live) / sizeof(dmm_live[0]); i++)
		if (dmm_live[i] == sc)
			dmm_live[i] = NULL;
	dmm_unlock(&dmm_reg_lock);

	dmm_release_buffers(sc);
	dmm_put_legs(sc);
	dmm_sc_fini_wait(sc);
	dmm_lock_destroy(&sc->lock);
	dmm_free(sc->status, sizeof(*sc->status));
	dmm_free(sc->table, sizeof(*sc->table));
	dmm_free(sc->params, sc->params_size);
	dmm_free(sc, sizeof(*sc));
}

/* Queue a parent buf for the worker (strategy: never sleeps). */
static void
dmm_queue_parent(struct dmm_softc *sc, dmm_parent_t *bp)
{
	dmm_lock(&sc->lock);
	TAILQ_INSERT_TAIL(&sc->parents, DMM_PQ_ELEM(bp), DMM_PQ_ENTRY);
	dmm_wakeup(sc);
	dmm_unlock(&sc->lock);
}

/* Worker side of `dmsetup table` / `dmsetup status`. */
struct dmm_text_req {
	char *buf;
	size_t len;
	int status; /* 0: table, 1: status */
};

static int
dmm_do_text(struct dmm_softc *sc, void *arg)
{
	struct dmm_text_req *rq = arg;
	const char *names[DMIRROR_MAX_LEGS + 1];
	uint32_t nnames = (uint32_t)sc->nlegs;
	uint32_t health = DMIRROR_DM_LOG_ALIVE;
	int j;

	for (j = 0; j < sc->nlegs; j++)
		names[j] = sc->legs[j].name;
	if (sc->has_log)
		names[nnames++] = sc->logdev.name; /* the disk log device, after the legs */
	if (!rq->status)
		return dmirror_dm_format_table(sc->table, names, nnames, rq->buf, rq->len);
	memset(sc->status, 0, sizeof(*sc->status));
	if (sc->state == DMM_ST_ACTIVE) {
		uint32_t st[DMIRROR_MAX_LEGS];

		(void)dmirror_status(sc->m, sc->status);
		/* The status line lists the table's legs, in table order; the core's are slots. */
		for (j = 0; j < sc->nlegs; j++)
			st[j] = sc->leg_slot[j] >= 0 ?
			    sc->status->leg[sc->leg_slot[j]].state : DMIRROR_LEG_MISSING;
		for (j = 0; j < sc->nlegs; j++)
			sc->status->leg[j].state = st[j];
		if (sc->has_log && (dmirror_log_failed(sc->m) == 1 ||
		    sc->log_health != DMIRROR_DM_LOG_ALIVE))
			health = DMIRROR_DM_LOG_FAILED;
	} else {
		/* Not (yet) active: every leg shows D and nothing in sync, so lvm2 does not
		 * mistake an inactive mirror for a healthy one. */
		sc->status->legs = (uint8_t)sc->nlegs;
		for (j = 0; j < sc->nlegs; j++)
			sc->status->leg[j].state = DMIRROR_LEG_MISSING;
		if (sc->has_log && sc->state == DMM_ST_FAILED)
			health = DMIRROR_DM_LOG_FAILED; /* refused (e.g. a corrupt log): not in use */
	}
	return dmirror_dm_format_status(sc->status, sc->table, names, nnames, health, rq->buf,
	    rq->len);
}

static char *
dmm_text(struct dmm_softc *sc, int status, size_t len)
{
	struct dmm_text_req rq;
#ifdef __DragonFly__
	char *buf = dm_alloc_string((int)len);
#else
	char *buf = kmem_zalloc(len, KM_SLEEP);
#endif
	if (buf == NULL)
		return NULL;
	rq.buf = buf;
	rq.len = len;
	rq.status = status;
	(void)dmm_call(sc, dmm_do_text, &rq); /* ENOSPC leaves a cut, NUL-terminated line */
	return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* DragonFly's dm_target_t. */

#ifdef __DragonFly__
static int
dmm_df_init(dm_table_entry_t *te, int argc, char **argv)
{
	struct dmm_softc *sc;
	char *params;
	size_t len = 0, at = 0;
	int i, error;

	/* dm split the parameters at blanks; join them back for the one parser. */
	for (i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	if (len == 0 || len > DMIRROR_DM_MAX_TABLE_BYTES + 1) {
		kprintf("dm_mirror: invalid table: %s\n", len == 0 ? "no arguments" :
		    "table too long");
		return EINVAL;
	}
	params = kmalloc(len, M_DMMIRROR, M_WAITOK | M_ZERO);
	for (i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]);
		memcpy(params + at, argv[i], n);
		at += n;
		params[at++] = i + 1 < argc ? ' ' : '\0';
	}
	error = dmm_create(params, te->length, &sc);
	kfree(params, M_DMMIRROR);
	if (error != 0)
		return error;
	for (i = 0; i < sc->nlegs; i++)
		dm_table_add_deps(te, sc->legs[i].pdev);
	dm_table_init_target(te, sc);
	return 0;
}

static int
dmm_df_destroy(dm_table_entry_t *te)
{
	if (te->target_config != NULL)
		dmm_destroy(te->target_config);
	te->target_config = NULL;
	return 0;
}

static int
dmm_df_strategy(dm_table_entry_t *te, struct buf *bp)
{
	dmm_queue_parent(te->target_config, bp);
	return 0;
}

static char *
dmm_df_table(void *cfg)
{
	return dmm_text(cfg, 0, DM_MAX_PARAMS_SIZE);
}

static char *
dmm_df_info(void *cfg)
{
	return dmm_text(cfg, 1, DM_MAX_PARAMS_SIZE);
}

/* `dmsetup message`: parsed by the core's parser, carried out by the core. */
struct dmm_msg_req {
	const char *text;
	size_t len;
};

static int
dmm_do_message(struct dmm_softc *sc, void *arg)
{
	struct dmm_msg_req *rq = arg;
	struct dmirror_dm_message msg;
	char err[DMM_MSG], name[DMIRROR_DM_MAX_ARG_BYTES + 1];
	dm_pdev_t *pdev;
	struct dmm_leg nl;
	uint8_t uuid[16];
	int error, slot;

	if (dmirror_dm_parse_message(sc->table, rq->text, rq->len, &msg, err, sizeof(err)) != 0) {
		kprintf("dm_mirror: message refused: %s\n", err);
		return EINVAL;
	}
	if (sc->state != DMM_ST_ACTIVE) {
		kprintf("dm_mirror: message refused: the mirror is not active%s%s\n",
		    sc->why[0] ? ": " : "", sc->why);
		return ENXIO;
	}
	slot = msg.kind == DMIRROR_DM_MSG_POLICY ? 0 : sc->leg_slot[msg.leg];
	if (slot < 0) {
		kprintf("dm_mirror: message refused: leg %u has no slot in the mirror\n", msg.leg);
		return ENOENT;
	}
	if (msg.kind == DMIRROR_DM_MSG_POLICY && msg.policy.kind == DMIRROR_READ_PREFER) {
		if (sc->leg_slot[msg.policy.arg] < 0)
			return ENOENT;
		msg.policy.arg = (uint32_t)sc->leg_slot[msg.policy.arg];
	}
	switch (msg.kind) {
	case DMIRROR_DM_MSG_FAIL:
		error = dmirror_fail_leg(sc->m, (uint32_t)slot);
		break;
	case DMIRROR_DM_MSG_REMOVE:
		error = dmirror_remove_leg(sc->m, (uint32_t)slot);
		break;
	case DMIRROR_DM_MSG_POLICY:
		error = dmirror_set_read_policy(sc->m, &msg.policy);
		break;
	case DMIRROR_DM_MSG_ADD:
		/* Replacing a leg's device: the slot must be failed/missing/empty (the core
		 * checks); the new device replaces the old one in this table's legs. */
		memcpy(name, msg.dev, (size_t)msg.dev_len);
		name[msg.dev_len] = '\0';
		pdev = dm_pdev_insert(name);
		if (pdev == NULL) {
			kprintf("dm_mirror: add: cannot open '%s'\n", name);
			return ENOENT;
		}
		memset(&nl, 0, sizeof(nl));
		nl.pdev = pdev;
		nl.offset = sc->legs[msg.leg].offset;
		dmm_leg_identify(&nl);
		if (nl.dev_sectors <= nl.offset) {
			dm_pdev_decr(pdev);
			return ENOSPC;
		}
		memset(uuid, 0, sizeof(uuid));
		memcpy(uuid, nl.name, strlen(nl.name) < 16 ? strlen(nl.name) : 16);
		if (pdev == sc->legs[msg.leg].pdev) {
			/* The same device coming back: keep the pdev reference we hold. */
			dm_pdev_decr(pdev);
			error = dmirror_add_leg(sc->m, (uint32_t)slot, uuid,
			    nl.dev_sectors - nl.offset, msg.incremental);
			break;
		}
		if (sc->nold >= DMIRROR_MAX_LEGS) {
			kprintf("dm_mirror: add: too many replaced devices; reload the table\n");
			dm_pdev_decr(pdev);
			return ENOSPC;
		}
		error = dmirror_add_leg(sc->m, (uint32_t)slot, uuid, nl.dev_sectors - nl.offset,
		    msg.incremental);
		if (error != 0) {
			dm_pdev_decr(pdev);
			break;
		}
		/* The old leg's device is no longer read or written (the slot was out of
		 * service), but dm's dependency list still names it: keep it open until
		 * destroy. The table line keeps the device string it was loaded with. */
		sc->old_pdev[sc->nold++] = sc->legs[msg.leg].pdev;
		sc->legs[msg.leg] = nl;
		sc->leg_out[msg.leg] = 0;
		break;
	default:
		return EINVAL;
	}
	if (error != 0)
		kprintf("dm_mirror: message refused by the mirror (error %d)\n", error);
	return error;
}

static int
dmm_df_message(dm_table_entry_t *te, char *text)
{
	struct dmm_msg_req rq;

	rq.text = text;
	rq.len = strlen(text);
	return dmm_call(te->target_config, dmm_do_message, &rq);
}

/* Kernel crash dumps: the core is not running in a dump; write every leg the core has not
 * taken out of service, so they stay identical, and succeed if one of them took it. */
static int
dmm_df_dump(dm_table_entry_t *te, void *data, size_t length, off_t offset)
{
	struct dmm_softc *sc = te->target_config;
	int j, ok = 0, tried = 0;

	for (j = 0; j < sc->nlegs; j++) {
		struct dmm_leg *leg = &sc->legs[j];
		off_t off;

		if (sc->state != DMM_ST_ACTIVE || sc->leg_out[j])
			continue;
		if (leg->pdev->pdev_vnode->v_rdev == NULL)
			continue;
		tried++;
		off = dm_pdev_correct_dump_offset(leg->pdev, offset +
		    (off_t)(leg->offset * DEV_BSIZE));
		if (dev_ddump(leg->pdev->pdev_vnode->v_rdev, data, 0, off, length) == 0)
			ok++;
	}
	return tried == 0 ? ENXIO : ok > 0 ? 0 : EIO;
}

static int
dmm_df_modevent(module_t mod, int type, void *unused)
{
	dm_target_t *dmt;
	int error = 0;

	(void)mod;
	(void)unused;
	switch (type) {
	case MOD_LOAD:
		dmm_lock_init(&dmm_reg_lock);
		if ((dmt = dm_target_lookup(DMM_NAME)) != NULL) {
			dm_target_unbusy(dmt);
			return EEXIST;
		}
		dmt = dm_target_alloc(DMM_NAME);
		dmt->version[0] = 1;
		dmt->version[1] = 12;
		dmt->version[2] = 0;
		dmt->init = dmm_df_init;
		dmt->destroy = dmm_df_destroy;
		dmt->strategy = dmm_df_strategy;
		dmt->table = dmm_df_table;
		dmt->info = dmm_df_info;
		dmt->message = dmm_df_message;
		dmt->dump = dmm_df_dump;
		/* 32 legs take 64 arguments, plus log and features. */
		dmt->max_argc = 2 * DMIRROR_MAX_LEGS + 12;
		error = dm_target_insert(dmt);
		if (error == 0)
			kprintf("dm_target_mirror: loaded\n");
		break;
	case MOD_UNLOAD:
		error = dm_target_remove(DMM_NAME);
		if (error == 0)
			kprintf("dm_target_mirror: unloaded\n");
		break;
	default:
		break;
	}
	return error;
}

DM_TARGET_MODULE(dm_target_mirror, dmm_df_modevent);
#endif /* __DragonFly__ */

/* ------------------------------------------------------------------------------------------ */
/* NetBSD's dm_target_t. */

#ifdef __NetBSD__
static int
dmm_nb_init(dm_dev_t *dmv, void **target_config, char *params)
{
	struct dmm_softc *sc;
	int error;

	if (params == NULL)
		return EINVAL;
	/* NetBSD does not give the target's length to init: the worker learns it from the
	 * first strategy call, and the device sizes are checked then. */
	error = dmm_create(params, 0, &sc);
	if (error != 0)
		return error;
	(void)dmv;
	*target_config = sc;
	return 0;
}

static int
dmm_nb_destroy(dm_table_entry_t *te)
{
	if (te->target_config != NULL)
		dmm_destroy(te->target_config);
	te->target_config = NULL;
	/* The target can be unloaded again. */
	dm_target_unbusy(te->target);
	return 0;
}

static int
dmm_nb_deps(dm_table_entry_t *te, prop_array_t deps)
{
	struct dmm_softc *sc = te->target_config;
	int j;

	if (sc == NULL)
		return ENOENT;
	for (j = 0; j < sc->nlegs; j++)
		prop_array_add_uint64(deps, (uint64_t)sc->legs[j].pdev->pdev_vnode->v_rdev);
	return 0;
}

static int
dmm_nb_strategy(dm_table_entry_t *te, struct buf *bp)
{
	struct dmm_softc *sc = te->target_config;

	/* The worker checks the devices against the length before activating. */
	dmm_lock(&sc->lock);
	if (sc->length == 0)
		sc->length = te->length;
	dmm_unlock(&sc->lock);
	/* b_private is dm's (nestiobuf: the master buf); never touch it. */
	dmm_queue_parent(sc, bp);
	return 0;
}

/* The sync hook (DIOCCACHESYNC on the dm device): a flush parent through the core. */
static int
dmm_nb_sync(dm_table_entry_t *te)
{
	struct dmm_softc *sc = te->target_config;
	struct buf *bp;
	int error;

	bp = getiobuf(NULL, true);
	bp->b_cflags = BC_BUSY;
	bp->b_flags = 0;
	bp->b_bcount = 0;
	bp->b_private = sc; /* marks a flush parent for dmm_submit_parents */
	bp->b_iodone = NULL;
	dmm_queue_parent(sc, bp);
	error = biowait(bp);
	putiobuf(bp);
	return error;
}

static int
dmm_nb_secsize(dm_table_entry_t *te, unsigned *secsize)
{
	(void)te;
	/* The mirror works in DEV_BSIZE units, whatever its legs' sectors. */
	*secsize = DEV_BSIZE;
	return 0;
}

static int
dmm_nb_upcall(dm_table_entry_t *te, struct buf *bp)
{
	(void)te;
	(void)bp;
	return 0;
}

static char *
dmm_nb_status(void *cfg)
{
	/* NetBSD's dm asks the target only for its table line (DM_STATUS_TABLE_FLAG); the
	 * caller frees it with kmem_free(DM_MAX_PARAMS_SIZE). */
	return dmm_text(cfg, 0, DM_MAX_PARAMS_SIZE);
}

MODULE(MODULE_CLASS_MISC, dm_target_mirror, "dm");

static int
dm_target_mirror_modcmd(modcmd_t cmd, void *arg)
{
	dm_target_t *dmt;
	int r;

	(void)arg;
	switch (cmd) {
	case MODULE_CMD_INIT:
		dmm_lock_init(&dmm_reg_lock);
		if ((dmt = dm_target_lookup(DMM_NAME)) != NULL) {
			dm_target_unbusy(dmt);
			return EEXIST;
		}
		dmt = dm_target_alloc(DMM_NAME);
		dmt->version[0] = 1;
		dmt->version[1] = 12;
		dmt->version[2] = 0;
		strlcpy(dmt->name, DMM_NAME, DM_MAX_TYPE_NAME);
		dmt->init = dmm_nb_init;
		dmt->destroy = dmm_nb_destroy;
		dmt->deps = dmm_nb_deps;
		dmt->status = dmm_nb_status;
		dmt->strategy = dmm_nb_strategy;
		dmt->sync = dmm_nb_sync;
		dmt->upcall = dmm_nb_upcall;
		dmt->secsize = dmm_nb_secsize;
		r = dm_target_insert(dmt);
		break;
	case MODULE_CMD_FINI:
		r = dm_target_rem(__UNCONST(DMM_NAME));
		if (r == 0)
			dmm_lock_destroy(&dmm_reg_lock);
		break;
	default:
		r = ENOTTY;
		break;
	}
	return r;
}
#endif /* __NetBSD__ */
