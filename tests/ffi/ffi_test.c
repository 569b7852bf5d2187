/*
 * ffi_test.c - drive a dmirror mirror only through shim-c/dmirror.h, as a kernel shim would,
 * with its legs emulated in memory. Built and run by shim-c/tests/c_abi.rs, linked against the
 * dmirror-ffi staticlib.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Scenario: a two-leg mirror; writes and reads (data checked on both legs); leg 1 starts failing
 * (its writes get EIO: the parent still succeeds, leg 1 goes FAILED, an event says so); reads stay
 * correct; leg 1 is replaced (a zeroed device added back) and resynced until IN_SYNC, then its
 * contents must equal leg 0's; leg 0 is failed by hand and every read must come from leg 1 and be
 * correct. Plus the ABI's own promises: argument checks, re-entry refused, memory balanced,
 * destroy refused while busy.
 *
 * Leg I/Os are never completed inside the issue callback: they are queued and completed later, in
 * a pseudo-random order, from the main loop (the header's rule for synchronous devices).
 *
 * Run as `ffi_test core` (in-memory region log) or `ffi_test onlegs` (superblocks and bitmaps on
 * the legs: the metadata leg I/Os go through the same emulated legs).
 *
 * Output: one "ok N - ..." or "not ok N - ..." line per check; exit status 1 if any failed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmirror.h"

/* The C compiler's view of the layout must match the numbers shim-c/src/abi.rs pins. */
_Static_assert(sizeof(struct dmirror_config) == 72, "dmirror_config");
_Static_assert(sizeof(struct dmirror_leg_init) == 40, "dmirror_leg_init");
_Static_assert(sizeof(struct dmirror_init) == 1880, "dmirror_init");
_Static_assert(sizeof(struct dmirror_parent_io) == 40, "dmirror_parent_io");
_Static_assert(sizeof(struct dmirror_leg_io) == 64, "dmirror_leg_io");
_Static_assert(offsetof(struct dmirror_leg_io, leg) == 60, "dmirror_leg_io.leg");
_Static_assert(sizeof(struct dmirror_event) == 48, "dmirror_event");
_Static_assert(sizeof(struct dmirror_status) == 2192, "dmirror_status");
_Static_assert(offsetof(struct dmirror_status, leg) == 144, "dmirror_status.leg");
_Static_assert(sizeof(struct dmirror_host_ops) == 88, "dmirror_host_ops");
_Static_assert(offsetof(struct dmirror_host_ops, log) == 80, "dmirror_host_ops.log");
_Static_assert(sizeof(struct dmirror_assembly) == 3792, "dmirror_assembly");
_Static_assert(offsetof(struct dmirror_assembly, dirty) == 2256, "dmirror_assembly.dirty");
_Static_assert(sizeof(struct dmirror_leg_read) == 64, "dmirror_leg_read");
_Static_assert(sizeof(struct dmirror_identity) == 128, "dmirror_identity");
_Static_assert(offsetof(struct dmirror_identity, sector_size) == 112, "dmirror_identity.sector_size");
_Static_assert(offsetof(struct dmirror_identity, leg) == 120, "dmirror_identity.leg");
_Static_assert(offsetof(struct dmirror_identity, members) == 124, "dmirror_identity.members");
_Static_assert(sizeof(struct dmirror_why) == 16, "dmirror_why");

#define SECTOR 512u
#define DATA_SECTORS 4096u  /* 2 MiB mirrored */
#define LEG_SECTORS 8192u   /* room for whatever metadata the core puts at the end */
#define REGION 64u
#define NLEGS 2
#define MAXQ 4096
#define MAXPARENTS 256

static int failures, checks;

static void
check(int cond, const char *what)
{
	checks++;
	if (cond) {
		printf("ok %d - %s\n", checks, what);
	} else {
		failures++;
		printf("not ok %d - %s\n", checks, what);
	}
	fflush(stdout);
}

/* ---- the emulated host ---- */

struct parent {
	int used;
	int done;
	int error;
	int completions; /* must end at exactly 1 */
	uint8_t *buf;
};

struct host {
	uint8_t *leg[NLEGS];
	int leg_eio[NLEGS];         /* inject: every I/O on this leg fails with EIO */
	struct dmirror_leg_io q[MAXQ];
	int nq;
	int qmax;                   /* high-water mark */
	uint8_t *resync;            /* resync buffers */
	uint64_t resync_bytes;      /* one buffer */
	uint32_t resync_slots;
	struct parent parents[MAXPARENTS];
	int64_t alloc_bytes;        /* outstanding */
	int allocs_sleeping;
	int allocs_nosleep;
	int lock_depth;
	int lock_recursion;         /* lock taken while held (only the re-entry check does this) */
	int lock_calls;
	int events[16];
	int failed_leg_event[NLEGS];
	int last_fail_state;
	int reenter;                /* next issue callback tries to re-enter */
	int reenter_rc;
	struct dmirror *m;
	int bad_io;                 /* leg I/O outside the leg or its buffer */
	uint32_t rng;
	uint64_t leg_reads[NLEGS];
	uint64_t leg_writes[NLEGS];
	uint64_t meta_writes;
	int slot_dev[NLEGS];        /* mirror slot -> emulated leg, from an assembly's labels */
	int meta_reads;
	int meta_read_fail;         /* inject: meta_read answers EIO */
	void *last_block;           /* the last may_sleep allocation (a mirror's block) */
	size_t last_block_size;
};

static struct host H;

static void *
h_alloc(void *ctx, size_t size, int may_sleep)
{
	struct host *h = ctx;
	void *p = aligned_alloc(16, (size + 15) & ~(size_t)15);
	if (p != NULL) {
		h->alloc_bytes += (int64_t)size;
		if (may_sleep) {
			h->allocs_sleeping++;
			h->last_block = p;
			h->last_block_size = size;
		}
		else
			h->allocs_nosleep++;
	}
	return p;
}

static void
h_free(void *ctx, void *ptr, size_t size)
{
	struct host *h = ctx;
	h->alloc_bytes -= (int64_t)size;
	free(ptr);
}

static void
h_lock(void *ctx)
{
	struct host *h = ctx;
	h->lock_calls++;
	if (h->lock_depth > 0)
		h->lock_recursion++;
	h->lock_depth++;
}

static void
h_unlock(void *ctx)
{
	struct host *h = ctx;
	h->lock_depth--;
}

static void
h_issue(void *ctx, const struct dmirror_leg_io *io)
{
	struct host *h = ctx;
	if (h->reenter) {
		h->reenter = 0;
		h->reenter_rc = dmirror_tick(h->m);
	}
	if (h->nq >= MAXQ) {
		h->bad_io++;
		return;
	}
	h->q[h->nq++] = *io; /* the struct is only valid during the call: copy it */
	if (h->nq > h->qmax)
		h->qmax = h->nq;
}

static void
h_complete(void *ctx, uint64_t handle, int error)
{
	struct host *h = ctx;
	if (handle >= MAXPARENTS || !h->parents[handle].used) {
		h->bad_io++;
		return;
	}
	h->parents[handle].completions++;
	h->parents[handle].done = 1;
	h->parents[handle].error = error;
}

static void
h_event(void *ctx, const struct dmirror_event *ev)
{
	struct host *h = ctx;
	if (ev->kind < 16)
		h->events[ev->kind]++;
	if (ev->kind == DMIRROR_EV_LEG_FAILED && ev->leg < NLEGS) {
		h->failed_leg_event[ev->leg]++;
		h->last_fail_state = (int)ev->state;
	}
}

static int
h_meta_read(void *ctx, uint32_t leg, uint64_t sector, uint8_t *buf, uint64_t len)
{
	struct host *h = ctx;
	h->meta_reads++;
	if (h->meta_read_fail)
		return DMIRROR_EIO;
	if (leg >= NLEGS || len % SECTOR != 0 || sector > LEG_SECTORS ||
	    len / SECTOR > LEG_SECTORS - sector) {
		h->bad_io++;
		return DMIRROR_EIO;
	}
	memcpy(buf, h->leg[h->slot_dev[leg]] + sector * SECTOR, len);
	return 0;
}

static void
h_log(void *ctx, int level, const char *msg)
{
	(void)ctx;
	printf("# log(%d): %s\n", level, msg);
}

/* Carry out one queued leg I/O against the emulated legs; returns its errno. */
static int
perform(struct host *h, const struct dmirror_leg_io *io)
{
	uint8_t *data = NULL;
	uint64_t bytes = io->count * SECTOR;

	if (io->leg >= NLEGS) {
		h->bad_io++;
		return DMIRROR_EIO;
	}
	if (h->leg_eio[io->leg])
		return DMIRROR_EIO;
	if (io->op == DMIRROR_OP_FLUSH)
		return 0;
	if (io->count > LEG_SECTORS || io->sector > LEG_SECTORS - io->count) {
		h->bad_io++;
		return DMIRROR_EIO;
	}
	if (io->op == DMIRROR_OP_DISCARD)
		return 0; /* contents after a discard are unspecified: keep them */
	switch (io->buf_kind) {
	case DMIRROR_BUF_PARENT:
		data = (uint8_t *)(uintptr_t)io->parent_buf + io->offset;
		break;
	case DMIRROR_BUF_RESYNC:
		if (io->resync_slot >= h->resync_slots || io->offset + bytes > h->resync_bytes) {
			h->bad_io++;
			return DMIRROR_EIO;
		}
		data = h->resync + (uint64_t)io->resync_slot * h->resync_bytes + io->offset;
		break;
	case DMIRROR_BUF_META:
		if (io->op != DMIRROR_OP_WRITE || io->meta == NULL || io->meta_len != bytes) {
			h->bad_io++;
			return DMIRROR_EIO;
		}
		memcpy(h->leg[io->leg] + io->sector * SECTOR, io->meta, bytes);
		h->meta_writes++;
		return 0;
	default:
		h->bad_io++;
		return DMIRROR_EIO;
	}
	if (io->op == DMIRROR_OP_READ) {
		memcpy(data, h->leg[io->leg] + io->sector * SECTOR, bytes);
		h->leg_reads[io->leg]++;
	} else if (io->op == DMIRROR_OP_WRITE) {
		memcpy(h->leg[io->leg] + io->sector * SECTOR, data, bytes);
		h->leg_writes[io->leg]++;
	} else {
		h->bad_io++;
		return DMIRROR_EIO;
	}
	return 0;
}

static uint32_t
rnd(struct host *h)
{
	h->rng = h->rng * 1103515245u + 12345u;
	return h->rng >> 8;
}

/* Complete queued leg I/Os in a pseudo-random order until none is left (bounded). */
static int
drain(struct host *h)
{
	int rounds = 0;
	while (h->nq > 0 && rounds < 1000000) {
		int i = (int)(rnd(h) % (uint32_t)h->nq);
		struct dmirror_leg_io io = h->q[i];
		h->q[i] = h->q[--h->nq];
		int err = perform(h, &io);
		if (dmirror_leg_done(h->m, io.token, err) != 0)
			return -1;
		rounds++;
	}
	return h->nq == 0 ? 0 : -1;
}

/* Complete at most n queued leg I/Os (in a pseudo-random order). */
static int
step(struct host *h, int n)
{
	while (h->nq > 0 && n-- > 0) {
		int i = (int)(rnd(h) % (uint32_t)h->nq);
		struct dmirror_leg_io io = h->q[i];
		h->q[i] = h->q[--h->nq];
		if (dmirror_leg_done(h->m, io.token, perform(h, &io)) != 0)
			return -1;
	}
	return 0;
}

static int
new_parent(struct host *h)
{
	for (int i = 0; i < MAXPARENTS; i++) {
		if (!h->parents[i].used) {
			memset(&h->parents[i], 0, sizeof(h->parents[i]));
			h->parents[i].used = 1;
			return i;
		}
	}
	return -1;
}

static void
put_parent(struct host *h, int p)
{
	free(h->parents[p].buf);
	memset(&h->parents[p], 0, sizeof(h->parents[p]));
}

/* The byte every write generation `gen` puts at byte `off` of sector `s`. */
static uint8_t
pattern(uint32_t gen, uint64_t s, uint32_t off)
{
	return (uint8_t)(s * 131u + off * 7u + gen * 29u + (s >> 8));
}

/* Submit one parent I/O and run it to completion; returns its completion error, or -1 if the
 * ABI misbehaved (submit refused, no completion, several completions). */
static int
run_io(struct host *h, uint32_t op, uint64_t sector, uint64_t count, uint8_t *buf, int *slot)
{
	int p = new_parent(h);
	if (p < 0)
		return -1;
	h->parents[p].buf = buf;
	struct dmirror_parent_io io;
	memset(&io, 0, sizeof(io));
	io.handle = (uint64_t)p;
	io.op = op;
	io.sector = sector;
	io.count = count;
	io.buf = (uint64_t)(uintptr_t)buf;
	int rc = dmirror_submit(h->m, &io);
	if (rc != 0) {
		printf("# submit rc %d\n", rc);
		h->parents[p].buf = NULL;
		put_parent(h, p);
		return -1;
	}
	if (drain(h) != 0 || !h->parents[p].done || h->parents[p].completions != 1) {
		printf("# parent %d: done %d completions %d queue %d\n", p, h->parents[p].done,
		    h->parents[p].completions, h->nq);
		h->parents[p].buf = NULL;
		put_parent(h, p);
		return -1;
	}
	int err = h->parents[p].error;
	h->parents[p].buf = NULL; /* the caller owns buf */
	put_parent(h, p);
	if (slot != NULL)
		*slot = p;
	return err;
}

static int
write_gen(struct host *h, uint32_t gen, uint64_t sector, uint64_t count)
{
	uint8_t *buf = malloc(count * SECTOR);
	if (buf == NULL)
		return -1;
	for (uint64_t s = 0; s < count; s++)
		for (uint32_t o = 0; o < SECTOR; o++)
			buf[s * SECTOR + o] = pattern(gen, sector + s, o);
	int rc = run_io(h, DMIRROR_OP_WRITE, sector, count, buf, NULL);
	free(buf);
	return rc;
}

/* Expected generation per sector, as the test wrote them (0 = never written: zeroes). */
static uint32_t expect_gen[DATA_SECTORS];

static int
sector_ok(const uint8_t *p, uint64_t s)
{
	uint32_t gen = expect_gen[s];
	for (uint32_t o = 0; o < SECTOR; o++) {
		uint8_t want = gen == 0 ? 0 : pattern(gen, s, o);
		if (p[o] != want)
			return 0;
	}
	return 1;
}

/* Read [sector, sector+count) through the mirror and compare with expect_gen. */
static int
read_check(struct host *h, uint64_t sector, uint64_t count)
{
	uint8_t *buf = malloc(count * SECTOR);
	if (buf == NULL)
		return 0;
	memset(buf, 0xa5, count * SECTOR);
	int rc = run_io(h, DMIRROR_OP_READ, sector, count, buf, NULL);
	int good = rc == 0;
	for (uint64_t s = 0; good && s < count; s++) {
		if (!sector_ok(buf + s * SECTOR, sector + s)) {
			printf("# read mismatch at sector %llu\n", (unsigned long long)(sector + s));
			good = 0;
		}
	}
	if (rc != 0)
		printf("# read rc %d\n", rc);
	free(buf);
	return good;
}

/* Does leg `leg`'s data area hold what the test wrote? */
static int
leg_matches(struct host *h, int leg)
{
	for (uint64_t s = 0; s < DATA_SECTORS; s++) {
		if (!sector_ok(h->leg[leg] + s * SECTOR, s)) {
			printf("# leg %d differs at sector %llu\n", leg, (unsigned long long)s);
			return 0;
		}
	}
	return 1;
}

static void
record(uint32_t gen, uint64_t sector, uint64_t count)
{
	for (uint64_t s = sector; s < sector + count && s < DATA_SECTORS; s++)
		expect_gen[s] = gen;
}

static struct dmirror_status st;

static uint32_t
leg_state(struct host *h, int leg)
{
	if (dmirror_status(h->m, &st) != 0)
		return 999;
	return st.leg[leg].state;
}

/* What a shim's taste does: read both superblock slots of every device, in the order given. */
static int
assemble_from(struct host *h, const int *devs, int n, const uint64_t *sectors,
    struct dmirror_assembly *a, struct dmirror_why *why, char *msg, size_t msg_len)
{
	struct dmirror_leg_read r[NLEGS * 2];
	static const char *names[] = { "leg0", "leg1" };
	memset(r, 0, sizeof(r));
	for (int i = 0; i < n; i++) {
		uint64_t s0, s1, bytes;
		if (dmirror_sb_location(LEG_SECTORS, SECTOR, &s0, &s1, &bytes) != 0)
			return -1;
		r[i].slot0 = h->leg[devs[i]] + s0 * SECTOR;
		r[i].slot0_len = bytes;
		r[i].slot1 = h->leg[devs[i]] + s1 * SECTOR;
		r[i].slot1_len = bytes;
		r[i].sectors = sectors != NULL ? sectors[i] : LEG_SECTORS;
		r[i].sector_size = SECTOR;
		r[i].label = (uint64_t)devs[i];
		r[i].name = names[devs[i]];
	}
	return dmirror_assemble(r, (uint32_t)n, NULL, a, why, msg, msg_len);
}

/* What a GEOM taste does with one device: identify it, without assembling it. */
static int
identify_dev(struct host *h, int dev, uint64_t sectors, uint32_t ss,
    struct dmirror_identity *id, struct dmirror_why *why)
{
	static const char *names[] = { "leg0", "leg1" };
	struct dmirror_leg_read r;
	uint64_t s0, s1, bytes;

	if (dmirror_sb_location(LEG_SECTORS, SECTOR, &s0, &s1, &bytes) != 0)
		return -1;
	memset(&r, 0, sizeof(r));
	r.slot0 = h->leg[dev] + s0 * SECTOR;
	r.slot0_len = bytes;
	r.slot1 = h->leg[dev] + s1 * SECTOR;
	r.slot1_len = bytes;
	r.sectors = sectors;
	r.sector_size = ss;
	r.name = names[dev];
	return dmirror_identify(&r, id, why);
}

/* Bring the mirror back from its legs' metadata, as at boot: after a clean shutdown, then after
 * a "crash" (destroyed while idle, without a shutdown: write-intent bits still set on disk). */
static void
assembly_phase(struct host *h, struct dmirror_host_ops *ops)
{
	static struct dmirror_assembly a;
	struct dmirror_why why;
	char msg[256];
	int rc;

	/* refusals first: they name the input and say why */
	int one[] = { 1 }, twice[] = { 1, 1 };
	uint64_t wrong[] = { LEG_SECTORS - 8 };
	uint8_t *blank = calloc(LEG_SECTORS, SECTOR);
	if (blank == NULL)
		return;
	uint8_t *saved = h->leg[0];
	h->leg[0] = blank;
	int zero[] = { 0 };
	rc = assemble_from(h, zero, 1, NULL, &a, &why, msg, sizeof(msg));
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_NO_METADATA && why.leg == 0 &&
	    strstr(msg, "leg0") != NULL, "assemble refuses a blank device, naming it");
	printf("# %s\n", msg);
	h->leg[0] = saved;
	free(blank);
	rc = assemble_from(h, twice, 2, NULL, &a, &why, msg, sizeof(msg));
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_DUPLICATE, "assemble refuses a leg given twice");
	printf("# %s\n", msg);
	rc = assemble_from(h, one, 1, wrong, &a, &why, msg, sizeof(msg));
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_WRONG_SIZE && why.value == LEG_SECTORS,
	    "assemble refuses a device of the wrong size, with the recorded size");
	printf("# %s\n", msg);

	/* identify: what each device says about itself, refused only when unreadable as a leg */
	struct dmirror_identity id0, id1;
	memset(&why, 0xff, sizeof(why));
	rc = identify_dev(h, 1, LEG_SECTORS, SECTOR, &id1, &why);
	check(rc == 0 && why.code == DMIRROR_WHY_NONE && id1.leg == 1 && id1.nlegs == NLEGS &&
	    id1.state == DMIRROR_LEG_IN_SYNC && id1.sector_size == SECTOR &&
	    id1.data_sectors == DATA_SECTORS && id1.region_sectors == REGION &&
	    id1.leg_sectors == LEG_SECTORS && id1.clean == 1 && id1.members == 3,
	    "identify reads leg 1's own view: slot 1, in sync, the mirror's geometry, clean");
	rc = identify_dev(h, 0, LEG_SECTORS, SECTOR, &id0, &why);
	check(rc == 0 && id0.leg == 0 && memcmp(id0.mirror_uuid, id1.mirror_uuid, 16) == 0 &&
	    memcmp(id0.leg_uuid, id1.leg_uuid, 16) != 0 && id0.generation < id1.generation,
	    "identify reads the failed leg 0 too (same mirror, its own uuid, an older generation): "
	    "no judgement");
	rc = identify_dev(h, 1, LEG_SECTORS / 8, 4096, &id1, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_READ_SECTOR_SIZE &&
	    why.value == SECTOR && why.leg == 0 && id1.nlegs == 0,
	    "identify with the wrong sector size names the recorded one (and zeroes out)");
	rc = identify_dev(h, 1, LEG_SECTORS - 8, SECTOR, &id1, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_WRONG_SIZE && why.value == LEG_SECTORS,
	    "identify refuses a device that is not the size it records");
	blank = calloc(LEG_SECTORS, SECTOR);
	if (blank == NULL)
		return;
	saved = h->leg[0];
	h->leg[0] = blank;
	rc = identify_dev(h, 0, LEG_SECTORS, SECTOR, &id0, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_NO_METADATA && why.leg == 0,
	    "identify refuses a blank device: no metadata");
	h->leg[0] = saved;
	free(blank);
	check(dmirror_identify(NULL, &id0, &why) == DMIRROR_EINVAL, "identify: NULL read is EINVAL");

	/* clean: legs given in reverse order */
	int rev[] = { 1, 0 };
	rc = assemble_from(h, rev, 2, NULL, &a, &why, msg, sizeof(msg));
	check(rc == 0, "assemble the shut-down mirror from its legs (reverse order)");
	if (rc != 0) {
		printf("# assemble: rc %d why %u leg %u: %s\n", rc, why.code, why.leg, msg);
		return;
	}
	check(a.config.legs == NLEGS && a.config.data_sectors == DATA_SECTORS &&
	    a.config.region_sectors == REGION && a.config.log == DMIRROR_REGION_LOG_ON_LEGS,
	    "the assembly has the mirror's geometry");
	check(a.clean == 1, "the assembly saw the clean shutdown");
	check(a.present[0] && a.present[1] && a.label[0] == 0 && a.label[1] == 1,
	    "each slot is matched to its device");
	/* leg 0 was failed by hand before the shutdown: it must not be trusted */
	check(a.init.legs[1].state == DMIRROR_LEG_IN_SYNC &&
	    a.init.legs[0].state == DMIRROR_LEG_REBUILDING && a.init.legs[0].rebuild_full == 1,
	    "leg 1 comes back in sync, the failed leg 0 comes back to be rebuilt in full");
	for (int i = 0; i < NLEGS; i++)
		h->slot_dev[i] = (int)a.label[i];

	struct dmirror *m = NULL;
	h->meta_reads = 0;
	rc = dmirror_create_assembled(&a, NULL, ops, h, &m, &why);
	check(rc == 0 && m != NULL, "create the mirror from the assembly");
	if (rc != 0) {
		printf("# create_assembled: rc %d why %u (%s) leg %u\n", rc, why.code,
		    dmirror_why_str(why.code), why.leg);
		return;
	}
	h->m = m;
	/* Complete only metadata writes and flushes (resync copies stay queued): the first
	 * metadata round must then record leg 0 as REBUILDING on leg 0 itself. */
	rc = -1;
	for (int round = 0; round < 100; round++) {
		if (dmirror_tick(m) != 0)
			break;
		for (int j = 0; j < h->nq;) {
			struct dmirror_leg_io io = h->q[j];
			if (io.buf_kind != DMIRROR_BUF_META && io.op != DMIRROR_OP_FLUSH) {
				j++;
				continue;
			}
			h->q[j] = h->q[--h->nq];
			if (dmirror_leg_done(m, io.token, perform(h, &io)) != 0)
				break;
		}
		rc = identify_dev(h, 0, LEG_SECTORS, SECTOR, &id0, &why);
		if (rc == 0 && id0.state == DMIRROR_LEG_REBUILDING)
			break;
	}
	/* Alone, that device assembles into nothing usable (what kept a GEOM taste from
	 * attaching it); identify reads what it says. */
	check(rc == 0 && id0.state == DMIRROR_LEG_REBUILDING && id0.rebuild_full == 1 &&
	    id0.leg == 0 && memcmp(id0.mirror_uuid, a.init.mirror_uuid, 16) == 0 &&
	    id0.generation > a.init.generation,
	    "identify: the device being rebuilt says REBUILDING (full) about itself");
	{
		static struct dmirror_assembly alone;
		int only0[] = { 0 };
		rc = assemble_from(h, only0, 1, NULL, &alone, &why, msg, sizeof(msg));
		check(rc == DMIRROR_ENXIO && why.code == DMIRROR_WHY_NO_USABLE_LEG,
		    "assembling the rebuilding device alone finds no usable leg");
	}
	check(read_check(h, 0, 512) && read_check(h, 2900, 300) && read_check(h, 4000, 96),
	    "the assembled mirror returns the data written before");
	void *block = h->last_block;
	size_t block_size = h->last_block_size;
	rc = write_gen(h, 6, 700, 64);
	if (rc == 0)
		record(6, 700, 64);
	check(rc == 0, "write to the assembled mirror");

	/* leg 0 resyncs by itself; wait until both legs are in sync again */
	uint8_t uuid0[16] = { 0xb, 0xa, 0xc, 0xc };
	/* it came back REBUILDING, so its slot is in use: adding it again is refused */
	check(dmirror_add_leg(m, 0, uuid0, LEG_SECTORS, 0) == DMIRROR_EBUSY,
	    "adding a device to the rebuilding slot 0 is EBUSY");
	for (int i = 0; i < 1000 && leg_state(h, 0) != DMIRROR_LEG_IN_SYNC; i++)
		if (dmirror_tick(m) != 0 || drain(h) != 0)
			break;
	check(leg_state(h, 0) == DMIRROR_LEG_IN_SYNC && leg_matches(h, 0),
	    "leg 0 is resynced and holds the data");

	/* A write reaches leg 1 but never leg 0, then the machine "crashes": its data write to
	 * leg 0 is dropped, nothing is acknowledged, the mirror is abandoned without destroy. */
	uint8_t *wb = malloc(16 * SECTOR);
	int pw = new_parent(h);
	if (wb == NULL || pw < 0)
		return;
	for (uint64_t s = 0; s < 16; s++)
		for (uint32_t o = 0; o < SECTOR; o++)
			wb[s * SECTOR + o] = pattern(7, 1500 + s, o);
	struct dmirror_parent_io wio = { .handle = (uint64_t)pw, .op = DMIRROR_OP_WRITE,
		.sector = 1500, .count = 16, .buf = (uint64_t)(uintptr_t)wb };
	check(dmirror_submit(m, &wio) == 0, "submit the write that the crash will tear");
	int held = 0, guard = 0;
	while (h->nq > 0 && guard++ < 100000) {
		struct dmirror_leg_io io = h->q[--h->nq];
		if (io.buf_kind == DMIRROR_BUF_PARENT && io.op == DMIRROR_OP_WRITE && io.leg == 0 &&
		    io.parent_buf == (uint64_t)(uintptr_t)wb) {
			held++; /* never performed, never completed: lost in the crash */
			continue;
		}
		dmirror_leg_done(m, io.token, perform(h, &io));
	}
	check(held == 1 && !h->parents[pw].done, "the write reached leg 1 only and was not acknowledged");
	int torn = memcmp(h->leg[0] + 1500 * SECTOR, h->leg[1] + 1500 * SECTOR, 16 * SECTOR) != 0;
	check(torn, "the legs differ where the write was torn");
	put_parent(h, pw);
	free(wb);
	h_free(h, block, block_size); /* the abandoned mirror's memory, as a reboot would */
	h->m = NULL;

	/* unclean: the write-intent bitmaps must be read and used */
	rc = assemble_from(h, rev, 2, NULL, &a, &why, msg, sizeof(msg));
	check(rc == 0 && a.clean == 0, "after the crash the assembly is not clean");
	int need = 0;
	for (int i = 0; i < (int)DMIRROR_MAX_LEGS; i++)
		need += a.dirty[i].needed != 0;
	check(need >= 1 && a.bitmap_bytes >= (DATA_SECTORS / REGION + 7) / 8,
	    "it lists the write-intent bitmaps to read");
	struct dmirror_host_ops noread = *ops;
	noread.meta_read = NULL;
	rc = dmirror_create_assembled(&a, NULL, &noread, h, &m, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_BITMAP && m == NULL &&
	    h->alloc_bytes == 0, "bitmaps to read but no meta_read: EINVAL, nothing left allocated");
	h->meta_read_fail = 1;
	rc = dmirror_create_assembled(&a, NULL, ops, h, &m, &why);
	check(rc == DMIRROR_EIO && why.code == DMIRROR_WHY_BITMAP && m == NULL &&
	    h->alloc_bytes == 0, "a failed bitmap read fails the create (EIO), nothing left allocated");
	h->meta_read_fail = 0;
	h->meta_reads = 0;
	rc = dmirror_create_assembled(&a, NULL, ops, h, &m, &why);
	check(rc == 0 && h->meta_reads >= need, "create from the unclean assembly reads the bitmaps");
	if (rc != 0)
		return;
	h->m = m;
	check(read_check(h, 0, 1024) && read_check(h, 2900, 300),
	    "after the crash the mirror returns the acknowledged data");
	/* the torn region is dirty on disk: the core must bring the legs back together */
	for (int i = 0; i < 1000; i++)
		if (dmirror_tick(m) != 0 || drain(h) != 0)
			break;
	check(memcmp(h->leg[0], h->leg[1], (size_t)DATA_SECTORS * SECTOR) == 0,
	    "after recovery both legs hold the same data (the torn write was resynced)");
	int either = 1;
	for (uint64_t s = 1500; s < 1516; s++) {
		uint32_t was = expect_gen[s];
		int old = sector_ok(h->leg[1] + s * SECTOR, s);
		expect_gen[s] = 7;
		int new = sector_ok(h->leg[1] + s * SECTOR, s);
		expect_gen[s] = new && !old ? 7 : was;
		either &= old || new;
	}
	check(either, "the torn range holds the old or the new data, whole sectors");
	check(dmirror_shutdown(m) == 0, "shutdown");
	for (int i = 0; i < 1000 && dmirror_is_idle(m) != 0; i++)
		if (dmirror_tick(m) != 0 || drain(h) != 0)
			break;
	check(dmirror_destroy(m) == 0, "destroy");
	h->m = NULL;
}

int
main(int argc, char **argv)
{
	struct host *h = &H;
	struct dmirror_config cfg;
	static struct dmirror_init init;
	struct dmirror_host_ops ops;
	struct dmirror_why why;
	int rc;

	h->rng = 12345;
	for (int i = 0; i < NLEGS; i++) {
		h->leg[i] = calloc(LEG_SECTORS, SECTOR);
		if (h->leg[i] == NULL)
			return 2;
	}

	memset(&ops, 0, sizeof(ops));
	ops.alloc = h_alloc;
	ops.free = h_free;
	ops.lock = h_lock;
	ops.unlock = h_unlock;
	ops.issue = h_issue;
	ops.complete = h_complete;
	ops.event = h_event;
	ops.log = h_log;

	/* ---- configuration helpers and argument checks ---- */
	check(dmirror_config_default(NULL, 2, DATA_SECTORS) == DMIRROR_EINVAL,
	    "config_default(NULL) is EINVAL");
	check(dmirror_config_default(&cfg, 33, DATA_SECTORS) == DMIRROR_EINVAL,
	    "config_default with 33 legs is EINVAL");
	rc = dmirror_config_default(&cfg, NLEGS, DATA_SECTORS);
	check(rc == 0 && cfg.abi_version == DMIRROR_ABI_VERSION && cfg.legs == NLEGS &&
	    cfg.data_sectors == DATA_SECTORS && cfg.sector_size == SECTOR,
	    "config_default fills the configuration");
	cfg.region_sectors = REGION;
	cfg.resync_chunk_sectors = REGION;
	cfg.resync_max_inflight = 4;
	cfg.max_parents = 64;
	cfg.max_leg_ios = 256;
	cfg.resync_sectors_per_tick = 512; /* the resync spans several ticks */
	/* "core": in-memory region log; "onlegs": superblocks and bitmaps on the legs (META I/O). */
	int onlegs = argc > 1 && strcmp(argv[1], "onlegs") == 0;
	if (argc > 1 && !onlegs && strcmp(argv[1], "core") != 0) {
		fprintf(stderr, "usage: %s [core|onlegs]\n", argv[0]);
		return 2;
	}
	printf("# region log: %s\n", onlegs ? "on the legs" : "in memory");
	cfg.log = onlegs ? DMIRROR_REGION_LOG_ON_LEGS : DMIRROR_REGION_LOG_CORE;

	h->resync_slots = cfg.resync_max_inflight;
	h->resync_bytes = (uint64_t)cfg.resync_chunk_sectors * SECTOR;
	h->resync = calloc(h->resync_slots, h->resync_bytes);
	if (h->resync == NULL)
		return 2;

	rc = dmirror_init_fresh(&init, NLEGS, LEG_SECTORS, 1);
	check(rc == 0 && init.legs[0].state == DMIRROR_LEG_IN_SYNC &&
	    init.legs[1].state == DMIRROR_LEG_IN_SYNC && init.legs[2].state == DMIRROR_LEG_EMPTY &&
	    init.legs[1].sectors == LEG_SECTORS,
	    "init_fresh: two clean legs, the rest empty");

	uint64_t sb0 = 0, sb1 = 0, sbb = 0;
	rc = dmirror_sb_location(LEG_SECTORS, SECTOR, &sb0, &sb1, &sbb);
	check(rc == 0 && sbb >= 4096 && sb1 == sb0 + sbb / SECTOR && sb1 + sbb / SECTOR <= LEG_SECTORS &&
	    sb0 >= DATA_SECTORS, "sb_location: two adjacent slots at the end of the leg");
	check(dmirror_sb_location(LEG_SECTORS, 1000, &sb0, &sb1, &sbb) == DMIRROR_EINVAL,
	    "sb_location refuses sector size 1000");
	check(dmirror_sb_location(4, SECTOR, &sb0, &sb1, &sbb) == DMIRROR_ENOSPC,
	    "sb_location: a 4-sector leg is too small");
	check(dmirror_sb_location(LEG_SECTORS, SECTOR, NULL, &sb1, &sbb) == DMIRROR_EINVAL,
	    "sb_location(NULL) is EINVAL");

	uint64_t need = 0;
	rc = dmirror_memory_needed(&cfg, &need, &why);
	check(rc == 0 && need > 0, "memory_needed answers a size");

	struct dmirror *m = (struct dmirror *)(uintptr_t)1;
	struct dmirror_config bad = cfg;
	bad.abi_version = 999;
	rc = dmirror_create(&bad, &init, &ops, h, 0, &m, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_ABI_VERSION && m == NULL,
	    "create refuses a wrong ABI version, says why, leaves *out NULL");
	bad = cfg;
	bad.read_policy.kind = 77;
	rc = dmirror_create(&bad, &init, &ops, h, 0, &m, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_READ_POLICY,
	    "create refuses an unknown read policy");
	bad = cfg;
	bad.sector_size = 1000;
	rc = dmirror_create(&bad, &init, &ops, h, 0, &m, &why);
	check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_SECTOR_SIZE,
	    "create refuses sector size 1000 (core validation)");
	if (rc == 0 && m != NULL) /* wrongly accepted: don't leak it into the next checks */
		dmirror_destroy(m);
	struct dmirror_host_ops noissue = ops;
	noissue.issue = NULL;
	check(dmirror_create(&cfg, &init, &noissue, h, 0, &m, &why) == DMIRROR_EINVAL,
	    "create refuses a callback table without issue");
	check(dmirror_create(&cfg, &init, &ops, h, 0x80, &m, &why) == DMIRROR_EINVAL,
	    "create refuses unknown flags");
	check(h->alloc_bytes == 0, "refused creates leave nothing allocated");
	check(dmirror_submit(NULL, NULL) == DMIRROR_EINVAL, "submit(NULL) is EINVAL");
	check(dmirror_tick(NULL) == DMIRROR_EINVAL, "tick(NULL) is EINVAL");
	check(dmirror_destroy(NULL) == DMIRROR_EINVAL, "destroy(NULL) is EINVAL");
	check(dmirror_why_str(DMIRROR_WHY_SECTOR_SIZE) != NULL && dmirror_why_str(12345) != NULL,
	    "why_str never returns NULL");

	/* ---- create ---- */
	rc = dmirror_create(&cfg, &init, &ops, h, 0, &m, &why);
	check(rc == 0 && m != NULL, "create a two-leg mirror");
	if (rc != 0 || m == NULL) {
		printf("# create failed (rc %d, why %u: %s); cannot go on\n", rc, why.code,
		    dmirror_why_str(why.code));
		printf("# %d of %d checks failed\n", failures + 1, checks + 1);
		return 1;
	}
	h->m = m;
	check(h->allocs_sleeping >= 1 && h->alloc_bytes > 0, "create allocated with may_sleep=1");
	check(leg_state(h, 0) == DMIRROR_LEG_IN_SYNC && leg_state(h, 1) == DMIRROR_LEG_IN_SYNC &&
	    st.legs == NLEGS, "status: both legs in sync");

	struct dmirror_parent_io pio;
	memset(&pio, 0, sizeof(pio));
	pio.op = 99;
	check(dmirror_submit(m, &pio) == DMIRROR_EINVAL, "submit with an unknown op is EINVAL");
	pio.op = DMIRROR_OP_READ;
	pio.count = (uint64_t)1 << 33;
	check(dmirror_submit(m, &pio) == DMIRROR_EINVAL, "submit with count > UINT32_MAX is EINVAL");

	/* ---- writes and reads ---- */
	int wok = 1;
	static const struct { uint64_t s, n; } w1[] = {
		{ 0, 8 }, { 8, 120 }, { 1000, 64 }, { 63, 2 }, { 4000, 96 }, { 2048, 256 },
	};
	for (size_t i = 0; i < sizeof(w1) / sizeof(w1[0]); i++) {
		if (write_gen(h, 1, w1[i].s, w1[i].n) != 0)
			wok = 0;
		else
			record(1, w1[i].s, w1[i].n);
	}
	check(wok, "six writes complete successfully");
	check(leg_matches(h, 0) && leg_matches(h, 1), "both legs hold the written data");
	check(read_check(h, 0, 128) && read_check(h, 990, 100) && read_check(h, 2040, 300) &&
	    read_check(h, 4000, 96), "reads return the written data (and zeroes elsewhere)");
	check(run_io(h, DMIRROR_OP_FLUSH, 0, 0, NULL, NULL) == 0, "a flush completes");
	uint8_t *over = malloc(8 * SECTOR);
	check(over != NULL && run_io(h, DMIRROR_OP_READ, DATA_SECTORS - 4, 8, over, NULL) ==
	    DMIRROR_EINVAL, "a read beyond the end completes with EINVAL");
	free(over);

	int meta_ok = 1;
	for (int l = 0; l < NLEGS; l++) {
		/* the newest superblock is in one of the two slots: look for the magic */
		const uint8_t *a = h->leg[l] + sb0 * SECTOR, *b = h->leg[l] + sb1 * SECTOR;
		if (memcmp(a, "DMIRROR\x01", 8) != 0 && memcmp(b, "DMIRROR\x01", 8) != 0)
			meta_ok = 0;
	}
	if (onlegs)
		check(meta_ok && h->meta_writes > 0,
		    "superblocks were written to both legs (META I/O)");
	else
		check(h->meta_writes == 0, "no metadata written with the in-memory log");

	/* ---- re-entry from a callback is refused ---- */
	h->reenter = 1;
	h->lock_recursion = 0;
	rc = write_gen(h, 2, 100, 4);
	if (rc == 0)
		record(2, 100, 4);
	check(h->reenter_rc == DMIRROR_EDEADLK, "an entry point called from issue() gets EDEADLK");
	check(rc == 0, "the outer write still completes");
	check(h->lock_depth == 0, "lock and unlock are balanced");

	/* ---- leg 1 fails ---- */
	h->leg_eio[1] = 1;
	rc = write_gen(h, 3, 500, 32);
	if (rc == 0)
		record(3, 500, 32);
	check(rc == 0, "a write with leg 1 failing still succeeds (leg 0 has it)");
	check(leg_state(h, 1) == DMIRROR_LEG_FAILED, "leg 1 is FAILED");
	check(h->failed_leg_event[1] >= 1 && h->last_fail_state == DMIRROR_LEG_FAILED,
	    "a LEG_FAILED event named leg 1");
	rc = write_gen(h, 4, 3000, 50);
	if (rc == 0)
		record(4, 3000, 50);
	check(rc == 0, "writes go on with one leg");
	uint64_t r1 = h->leg_reads[1];
	check(read_check(h, 480, 80) && read_check(h, 2990, 70) && read_check(h, 0, 256),
	    "reads stay correct with leg 1 failed");
	check(h->leg_reads[1] == r1, "no read went to the failed leg");
	check(dmirror_fail_leg(m, 0) == DMIRROR_EPERM, "failing the last in-sync leg is EPERM");
	check(dmirror_fail_leg(m, 40) == DMIRROR_ENOENT, "failing leg 40 is ENOENT");
	check(dmirror_fail_leg(m, 4000) == DMIRROR_ENOENT, "failing leg 4000 is ENOENT");
	check(dmirror_leg_gone(m, 0) == DMIRROR_EPERM, "the last in-sync leg cannot be reported gone");
	check(dmirror_leg_gone(m, 40) == DMIRROR_ENOENT, "reporting leg 40 gone is ENOENT");

	/* ---- resync: a replacement device in slot 1 ---- */
	h->leg_eio[1] = 0;
	memset(h->leg[1], 0, (size_t)LEG_SECTORS * SECTOR);
	uint8_t uuid[16] = { 0xd, 0xe, 0xa, 0xd, 1 };
	rc = dmirror_add_leg(m, 1, uuid, LEG_SECTORS, 0);
	check(rc == 0, "add a replacement leg 1 (full resync)");
	/* Start the copy, let part of it complete, then write and read over the regions being
	 * copied while copies are still in flight. */
	check(dmirror_tick(m) == 0 && h->nq > 0, "the resync issues copies on a tick");
	step(h, 3);
	uint8_t *wbuf = malloc(40 * SECTOR), *rbuf = malloc(160 * SECTOR);
	if (wbuf == NULL || rbuf == NULL)
		return 2;
	for (uint64_t s = 0; s < 40; s++)
		for (uint32_t o = 0; o < SECTOR; o++)
			wbuf[s * SECTOR + o] = pattern(5, 20 + s, o);
	int pw = new_parent(h), pr = new_parent(h);
	struct dmirror_parent_io wio = { .handle = (uint64_t)pw, .op = DMIRROR_OP_WRITE,
		.sector = 20, .count = 40, .buf = (uint64_t)(uintptr_t)wbuf };
	struct dmirror_parent_io rio = { .handle = (uint64_t)pr, .op = DMIRROR_OP_READ,
		.sector = 0, .count = 160, .buf = (uint64_t)(uintptr_t)rbuf };
	int rw = dmirror_submit(m, &wio);
	int rr = dmirror_submit(m, &rio);
	check(rw == 0 && rr == 0, "a write and a read are accepted while copies are in flight");
	drain(h);
	check(h->parents[pw].completions == 1 && h->parents[pw].error == 0,
	    "the write during the resync succeeds");
	int rok = h->parents[pr].completions == 1 && h->parents[pr].error == 0;
	for (uint64_t s = 0; rok && s < 160; s++) {
		/* overlapping an in-flight write: each sector old or new, nothing else */
		uint32_t was = expect_gen[s];
		int old = sector_ok(rbuf + s * SECTOR, s);
		if (s >= 20 && s < 60)
			expect_gen[s] = 5;
		int new = sector_ok(rbuf + s * SECTOR, s);
		expect_gen[s] = was;
		if (!old && !new) {
			printf("# sector %llu is neither old nor new data\n", (unsigned long long)s);
			rok = 0;
		}
	}
	record(5, 20, 40);
	check(rok, "the read during the resync sees old or new data, never a stale leg");
	put_parent(h, pw);
	put_parent(h, pr);
	free(wbuf);
	free(rbuf);

	int ticks = 1;
	while (leg_state(h, 1) != DMIRROR_LEG_IN_SYNC && ticks < 10000) {
		if (dmirror_tick(m) != 0 || drain(h) != 0)
			break;
		ticks++;
	}
	check(leg_state(h, 1) == DMIRROR_LEG_IN_SYNC, "leg 1 reaches IN_SYNC");
	printf("# resync took %d ticks; leg 1: state %u done %llu/%llu out-of-sync regions %llu; "
	    "in sync %llu of %llu regions, dirty %llu, queue %d\n", ticks, st.leg[1].state,
	    (unsigned long long)st.leg[1].resync_done, (unsigned long long)st.leg[1].resync_total,
	    (unsigned long long)st.leg[1].regions_out_of_sync,
	    (unsigned long long)st.regions_in_sync, (unsigned long long)st.regions,
	    (unsigned long long)st.dirty_regions, h->nq);
	check(ticks > 2, "the rate limit spread the resync over several ticks");
	check(h->events[DMIRROR_EV_LEG_IN_SYNC] >= 1, "a LEG_IN_SYNC event was reported");
	check(leg_matches(h, 1), "leg 1's data equals what was written");
	check(st.counters.resync_sectors > 0, "status counts resynced sectors");

	/* ---- split reads: pieces land at byte offsets inside the parent buffer ---- */
	struct dmirror_read_policy split = { DMIRROR_READ_SPLIT, 16 };
	check(dmirror_set_read_policy(m, &split) == 0, "set read policy SPLIT");
	uint64_t s0 = h->leg_reads[0], s1 = h->leg_reads[1];
	check(read_check(h, 0, 512) && read_check(h, 2990, 200),
	    "split reads return the written data");
	check(h->leg_reads[0] > s0 && h->leg_reads[1] > s1, "split reads used both legs");

	/* ---- leg 0 out by hand: reads must come from leg 1 ---- */
	check(dmirror_fail_leg(m, 0) == 0, "fail leg 0 administratively");
	uint64_t r0 = h->leg_reads[0];
	check(read_check(h, 0, 512) && read_check(h, 2900, 300),
	    "reads from the resynced leg alone are correct");
	check(h->leg_reads[0] == r0, "no read went to leg 0");

	/* ---- control operations ---- */
	struct dmirror_read_policy pol = { DMIRROR_READ_LOAD, 0 };
	check(dmirror_set_read_policy(m, &pol) == 0, "set read policy LOAD");
	check(dmirror_status(m, &st) == 0 && st.read_policy.kind == DMIRROR_READ_LOAD,
	    "status shows the new read policy");
	pol.kind = 42;
	check(dmirror_set_read_policy(m, &pol) == DMIRROR_EINVAL, "unknown read policy is EINVAL");

	/* ---- destroy refused while busy, then clean shutdown ---- */
	uint8_t *buf = malloc(8 * SECTOR);
	int p = new_parent(h);
	memset(&pio, 0, sizeof(pio));
	pio.handle = (uint64_t)p;
	pio.op = DMIRROR_OP_READ;
	pio.sector = 16;
	pio.count = 8;
	pio.buf = (uint64_t)(uintptr_t)buf;
	h->parents[p].buf = buf;
	rc = dmirror_submit(m, &pio);
	check(rc == 0 && h->nq > 0 && dmirror_is_idle(m) == DMIRROR_EBUSY &&
	    dmirror_destroy(m) == DMIRROR_EBUSY, "destroy is refused while a read is in flight");
	drain(h);
	check(h->parents[p].done && h->parents[p].error == 0 && sector_ok(buf, 16),
	    "that read then completes correctly");
	put_parent(h, p);

	check(dmirror_shutdown(m) == 0, "shutdown starts");
	for (int i = 0; i < 1000 && h->events[DMIRROR_EV_SHUTDOWN_DONE] == 0; i++) {
		if (dmirror_tick(m) != 0 || drain(h) != 0)
			break;
	}
	check(h->events[DMIRROR_EV_SHUTDOWN_DONE] == 1, "SHUTDOWN_DONE reported once");
	memset(&pio, 0, sizeof(pio));
	pio.op = DMIRROR_OP_FLUSH;
	pio.handle = (uint64_t)new_parent(h);
	check(dmirror_submit(m, &pio) == DMIRROR_EBUSY, "submit after shutdown is EBUSY");
	put_parent(h, (int)pio.handle);
	check(dmirror_is_idle(m) == 0, "idle after shutdown");
	check(h->bad_io == 0, "every leg I/O was in range and well formed");
	check(h->allocs_nosleep == 0, "no allocation after create");
	check(dmirror_destroy(m) == 0, "destroy");
	check(h->alloc_bytes == 0, "every byte allocated was freed with its size");
	check(h->lock_depth == 0 && h->lock_calls > 0, "the lock was used and is released");

	if (onlegs) {
		ops.meta_read = h_meta_read;
		assembly_phase(h, &ops);
		check(h->alloc_bytes == 0, "after the assemblies every byte allocated was freed");
		check(h->bad_io == 0, "every leg and metadata I/O was well formed");
	}

	for (int i = 0; i < NLEGS; i++)
		free(h->leg[i]);
	free(h->resync);
	printf("# %d of %d checks failed\n", failures, checks);
	return failures == 0 ? 0 : 1;
}
