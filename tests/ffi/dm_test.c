/*
 * dm_test.c - exercises the device-mapper table entry points of shim-c/dmirror_dm.h from C, the
 * way the dm target (dragonfly/dm_target_mirror.c) uses them: parse good and malformed tables,
 * check devices, print tables and status lines, parse messages. Prints "ok N - ..." per passed
 * check, "not ok N - ..." per failed one, and exits 1 if any failed.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmirror_dm.h"

/* The layout the Rust side pins with static assertions (shim-c/src/dm.rs). */
_Static_assert(sizeof(struct dmirror_dm_leg) == 24, "dmirror_dm_leg size");
_Static_assert(sizeof(struct dmirror_dm_table) == 808, "dmirror_dm_table size");
_Static_assert(__builtin_offsetof(struct dmirror_dm_table, log_type) == 24, "log_type");
_Static_assert(__builtin_offsetof(struct dmirror_dm_table, nlegs) == 36, "nlegs");
_Static_assert(__builtin_offsetof(struct dmirror_dm_table, legs) == 40, "legs");
_Static_assert(sizeof(struct dmirror_dm_message) == 40, "dmirror_dm_message size");
_Static_assert(__builtin_offsetof(struct dmirror_dm_message, policy) == 24, "policy");
_Static_assert(__builtin_offsetof(struct dmirror_dm_message, incremental) == 32, "incremental");

static int checks, failures;

static void
check(int cond, const char *what, const char *detail)
{
	checks++;
	if (cond) {
		printf("ok %d - %s\n", checks, what);
	} else {
		failures++;
		printf("not ok %d - %s%s%s\n", checks, what, detail ? ": " : "", detail ? detail : "");
	}
}

static struct dmirror_dm_table table;
static char err[DMIRROR_DM_ERRMSG_BYTES];
static char out[1024];

static int
parse(const char *s)
{
	memset(err, 'X', sizeof(err));
	return dmirror_dm_parse(s, strlen(s), &table, err, sizeof(err));
}

static int
eqn(const char *p, uint64_t len, const char *want)
{
	return p != NULL && len == strlen(want) && memcmp(p, want, (size_t)len) == 0;
}

/* A good table: fields, pointers into the parameter string, canonical re-print. */
static void
good_tables(void)
{
	const char *lvm = "core 2 1024 nosync 2 /dev/vn0 0 /dev/vn1 16 1 handle_errors";
	const char *disk = "disk  3 253:9 2048 sync 2 253:1 0 253:2 0 2 handle_errors keep_log";
	const char *dm = "dmirror 1 0 3 /dev/da0 0 /dev/da1 0 /dev/da2 8";
	const char *names[3] = { "8:0", NULL, "8:32" };

	check(parse(lvm) == 0, "lvm2 core table parses", err);
	check(table.log_type == DMIRROR_DM_LOG_CORE && table.region_sectors == 1024 &&
	    table.sync == DMIRROR_DM_SYNC_NOSYNC && table.nlegs == 2 &&
	    table.features == DMIRROR_DM_FEATURE_HANDLE_ERRORS && table.log_dev == NULL,
	    "core table fields", NULL);
	check(eqn(table.legs[0].dev, table.legs[0].dev_len, "/dev/vn0") &&
	    table.legs[0].dev >= lvm && table.legs[0].dev < lvm + strlen(lvm) &&
	    eqn(table.legs[1].dev, table.legs[1].dev_len, "/dev/vn1") &&
	    table.legs[1].offset == 16 && table.legs[2].dev == NULL,
	    "leg strings point into the parameters", NULL);
	check(dmirror_dm_format_table(&table, NULL, 0, out, sizeof(out)) == 0 &&
	    strcmp(out, lvm) == 0, "core table prints back unchanged", out);
	check(dmirror_dm_format_table(&table, names, 2, out, sizeof(out)) == 0 &&
	    strcmp(out, "core 2 1024 nosync 2 8:0 0 /dev/vn1 16 1 handle_errors") == 0,
	    "table prints major:minor names, NULL keeps the table's", out);

	check(parse(disk) == 0, "lvm2 disk-log table parses", err);
	check(table.log_type == DMIRROR_DM_LOG_DISK && eqn(table.log_dev, table.log_dev_len,
	    "253:9") && table.region_sectors == 2048 && table.sync == DMIRROR_DM_SYNC_SYNC &&
	    table.features == (DMIRROR_DM_FEATURE_HANDLE_ERRORS | DMIRROR_DM_FEATURE_KEEP_LOG),
	    "disk table fields", NULL);
	check(dmirror_dm_format_table(&table, NULL, 0, out, sizeof(out)) == 0 &&
	    strcmp(out, "disk 3 253:9 2048 sync 2 253:1 0 253:2 0 2 handle_errors keep_log") == 0,
	    "disk table prints canonically (single spaces)", out);

	check(parse(dm) == 0, "dmirror-log table parses", err);
	{
		uint64_t r = 0;
		check(table.log_type == DMIRROR_DM_LOG_DMIRROR && table.region_sectors == 0 &&
		    dmirror_dm_region_sectors(&table, 1u << 20, &r) == 0 && r == 1024,
		    "dmirror log: region 0 means the core's default (1024 for 512 MiB)", NULL);
	}
	check(dmirror_dm_format_table(&table, names, 3, out, sizeof(out)) == 0 &&
	    strcmp(out, "dmirror 1 0 3 8:0 0 /dev/da1 0 8:32 8") == 0, "dmirror table prints",
	    out);
}

struct bad {
	const char *table;
	const char *needle; /* a word the message must contain */
};

static const struct bad bad_tables[] = {
	{ "", "" },
	{ "mirror 1 1024 2 a 0 b 0", "mirror" },
	{ "core 1 1000 2 a 0 b 0", "1000" },
	{ "core 1 4 2 a 0 b 0", "4" },
	{ "core 3 1024 2 a 0 b 0", "arguments" },
	{ "core 1 1024 3 a 0 b 0", "" },
	{ "core 1 1024 0", "" },
	{ "core 1 1024 33", "33" },
	{ "core 1 1024 2 a 0 a 0", "a" },
	{ "core 1 1024 2 a x b 0", "x" },
	{ "core 1 1024 2 a 0 b 0 1 fast", "fast" },
	{ "core 1 1024 2 a 0 b 0 1 keep_log", "keep_log" },
	{ "core 1 1024 2 a 0 b 0 2 handle_errors handle_errors", "handle_errors" },
	{ "core 1 1024 2 a 0 b 0 1 handle_errors junk", "junk" },
	{ "core 2 1024 maybe 2 a 0 b 0", "maybe" },
	{ "disk 2 a 1024 2 a 0 b 0", "a" },
	{ "core 1 99999999999999999999999 2 a 0 b 0", "" },
};

static void
malformed_tables(void)
{
	size_t i;
	char desc[160];

	for (i = 0; i < sizeof(bad_tables) / sizeof(bad_tables[0]); i++) {
		int r = parse(bad_tables[i].table);
		int one_line = strchr(err, '\n') == NULL && err[0] != '\0' &&
		    strlen(err) < sizeof(err);
		snprintf(desc, sizeof(desc), "refused with a one-line message: '%s'",
		    bad_tables[i].table);
		check(r == DMIRROR_EINVAL && one_line && strstr(err, bad_tables[i].needle) != NULL &&
		    table.nlegs == 0, desc, err);
	}
	/* Control characters, non-UTF-8, overlong. */
	{
		static const char ctl[] = "core 1 1024 2 a\0b 0 c 0";
		char big[DMIRROR_DM_MAX_TABLE_BYTES + 8];
		char longarg[400];

		check(dmirror_dm_parse(ctl, sizeof(ctl) - 1, &table, err, sizeof(err)) ==
		    DMIRROR_EINVAL && err[0] != '\0', "a NUL inside the parameters is refused", err);
		check(dmirror_dm_parse("core 1 1024 2 \xff 0 b 0", 22, &table, err, sizeof(err)) ==
		    DMIRROR_EINVAL && strstr(err, "UTF-8") != NULL, "non-UTF-8 is refused", err);
		memset(big, ' ', sizeof(big));
		memcpy(big, "core", 4);
		check(dmirror_dm_parse(big, sizeof(big), &table, err, sizeof(err)) ==
		    DMIRROR_EINVAL && err[0] != '\0', "a table over 4096 bytes is refused", err);
		memset(longarg, 'd', sizeof(longarg));
		memcpy(longarg, "core 1 1024 1 ", 14);
		longarg[sizeof(longarg) - 3] = ' ';
		longarg[sizeof(longarg) - 2] = '0';
		longarg[sizeof(longarg) - 1] = '\0';
		check(parse(longarg) == DMIRROR_EINVAL && err[0] != '\0',
		    "a 380-byte device name is refused", err);
	}
	/* Error buffers: NULL or tiny ones are fine and NUL-terminated. */
	check(dmirror_dm_parse("bogus", 5, &table, NULL, 0) == DMIRROR_EINVAL,
	    "NULL error buffer", NULL);
	{
		char tiny[8];
		memset(tiny, 'X', sizeof(tiny));
		check(dmirror_dm_parse("bogus", 5, &table, tiny, sizeof(tiny)) == DMIRROR_EINVAL &&
		    strlen(tiny) == 7, "a short error buffer gets a cut, terminated message", tiny);
	}
	check(dmirror_dm_parse("core 1 1024 1 a 0", 17, NULL, err, sizeof(err)) == DMIRROR_EINVAL,
	    "NULL table structure refused", err);
}

static void
devices(void)
{
	uint64_t sizes[2] = { 1u << 20, 1u << 20 };

	parse("core 1 1024 2 a 0 b 4096");
	check(dmirror_dm_check_devices(&table, (1u << 20) - 4096, sizes, 2, err, sizeof(err)) == 0,
	    "devices large enough", err);
	check(dmirror_dm_check_devices(&table, (1u << 20) - 4095, sizes, 2, err, sizeof(err)) ==
	    DMIRROR_EINVAL && strstr(err, "'b'") != NULL, "device too small names it", err);
	check(dmirror_dm_check_devices(&table, 100, sizes, 1, err, sizeof(err)) == DMIRROR_EINVAL &&
	    err[0] != '\0', "wrong device count refused", err);
	sizes[1] = 4096;
	check(dmirror_dm_check_devices(&table, 100, sizes, 2, err, sizeof(err)) == DMIRROR_EINVAL &&
	    strstr(err, "offset") != NULL, "offset beyond the device refused", err);
	/* The dmirror log needs room for its metadata after the data. */
	parse("dmirror 1 1024 2 a 0 b 0");
	sizes[0] = sizes[1] = 1u << 20;
	check(dmirror_dm_check_devices(&table, 1u << 20, sizes, 2, err, sizeof(err)) ==
	    DMIRROR_EINVAL && strstr(err, "'a'") != NULL,
	    "dmirror log: data filling the whole leg leaves no room for metadata", err);
	check(dmirror_dm_check_devices(&table, (1u << 20) - 1024, sizes, 2, err, sizeof(err)) == 0,
	    "dmirror log: data plus metadata fit", err);
}

static void
status_lines(void)
{
	struct dmirror_status *st = calloc(1, sizeof(*st));
	const char *names[3] = { "8:0", "8:16", "253:9" };

	if (st == NULL)
		exit(2);
	st->legs = 2;
	st->regions = 2048;
	st->regions_in_sync = 1000;
	st->leg[0].state = DMIRROR_LEG_IN_SYNC;
	st->leg[1].state = DMIRROR_LEG_REBUILDING;
	parse("core 2 1024 sync 2 /dev/a 0 /dev/b 0");
	check(dmirror_dm_format_status(st, &table, names, 2, DMIRROR_DM_LOG_ALIVE, out,
	    sizeof(out)) == 0 && strcmp(out, "2 8:0 8:16 1000/2048 1 AA 1 core") == 0,
	    "status during a resync (rebuilding leg is A, progress in the count)", out);
	st->leg[1].state = DMIRROR_LEG_FAILED;
	st->regions_in_sync = 2048;
	check(dmirror_dm_format_status(st, &table, names, 2, DMIRROR_DM_LOG_ALIVE, out,
	    sizeof(out)) == 0 && strcmp(out, "2 8:0 8:16 2048/2048 1 AD 1 core") == 0,
	    "status with a failed leg", out);
	parse("disk 2 /dev/log 1024 2 /dev/a 0 /dev/b 0");
	check(dmirror_dm_format_status(st, &table, names, 3, DMIRROR_DM_LOG_FLUSH_FAILED, out,
	    sizeof(out)) == 0 && strcmp(out, "2 8:0 8:16 2048/2048 1 AD 3 disk 253:9 F") == 0,
	    "disk log status names the log device and its health", out);
	parse("dmirror 1 1024 2 /dev/a 0 /dev/b 0");
	st->leg[1].state = DMIRROR_LEG_MISSING;
	check(dmirror_dm_format_status(st, &table, NULL, 0, DMIRROR_DM_LOG_ALIVE, out,
	    sizeof(out)) == 0 && strcmp(out, "2 /dev/a /dev/b 2048/2048 1 AD 1 dmirror") == 0,
	    "dmirror log status; missing leg is D", out);
	{
		char small[12];
		check(dmirror_dm_format_status(st, &table, NULL, 0, DMIRROR_DM_LOG_ALIVE, small,
		    sizeof(small)) == DMIRROR_ENOSPC && strlen(small) == 11,
		    "a short buffer gives ENOSPC and a cut, terminated line", small);
	}
	st->leg[1].state = 99;
	check(dmirror_dm_format_status(st, &table, NULL, 0, DMIRROR_DM_LOG_ALIVE, out,
	    sizeof(out)) == DMIRROR_EINVAL, "an unknown leg state is refused", NULL);
	st->leg[1].state = DMIRROR_LEG_IN_SYNC;
	check(dmirror_dm_format_status(st, &table, NULL, 0, 7, out, sizeof(out)) == DMIRROR_EINVAL,
	    "an unknown log health is refused", NULL);
	free(st);
}

/* A table structure changed on the C side is checked before it is printed. */
static void
tampered(void)
{
	struct dmirror_dm_table t;
	const char *bad_name[1] = { "has space" };

	parse("core 1 1024 2 /dev/a 0 /dev/b 0");
	t = table;
	t.nlegs = 0;
	check(dmirror_dm_format_table(&t, NULL, 0, out, sizeof(out)) == DMIRROR_EINVAL,
	    "nlegs 0 refused", NULL);
	t = table;
	t.region_sectors = 1000;
	check(dmirror_dm_format_table(&t, NULL, 0, out, sizeof(out)) == DMIRROR_EINVAL,
	    "non-power-of-two region refused", NULL);
	t = table;
	t.features = DMIRROR_DM_FEATURE_KEEP_LOG;
	check(dmirror_dm_format_table(&t, NULL, 0, out, sizeof(out)) == DMIRROR_EINVAL,
	    "keep_log without handle_errors refused", NULL);
	t = table;
	t.legs[1] = t.legs[0];
	check(dmirror_dm_format_table(&t, NULL, 0, out, sizeof(out)) == DMIRROR_EINVAL,
	    "duplicate device refused", NULL);
	check(dmirror_dm_format_table(&table, bad_name, 1, out, sizeof(out)) == DMIRROR_EINVAL,
	    "a name with a blank refused", NULL);
}

static void
messages(void)
{
	struct dmirror_dm_message m;
	const char *msg;

	parse("core 1 1024 3 /dev/a 0 /dev/b 0 /dev/c 0");
	msg = "fail 1";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.kind == DMIRROR_DM_MSG_FAIL && m.leg == 1, "fail by index", err);
	msg = "fail /dev/c";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.kind == DMIRROR_DM_MSG_FAIL && m.leg == 2, "fail by device", err);
	msg = "add 2 /dev/d";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.kind == DMIRROR_DM_MSG_ADD && m.leg == 2 && eqn(m.dev, m.dev_len, "/dev/d") &&
	    m.incremental == 1, "add (incremental)", err);
	msg = "add 0 /dev/d full";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.incremental == 0, "add full", err);
	msg = "policy prefer /dev/b";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.kind == DMIRROR_DM_MSG_POLICY && m.policy.kind == DMIRROR_READ_PREFER &&
	    m.policy.arg == 1, "policy prefer", err);
	msg = "policy round_robin 16";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.policy.kind == DMIRROR_READ_ROUND_ROBIN && m.policy.arg == 16, "policy rr", err);
	msg = "remove 0";
	check(dmirror_dm_parse_message(&table, msg, strlen(msg), &m, err, sizeof(err)) == 0 &&
	    m.kind == DMIRROR_DM_MSG_REMOVE && m.leg == 0, "remove", err);
	{
		static const char *bad[] = { "", "fail", "fail 3", "fail /dev/x", "explode 1",
			"policy fastest", "policy round_robin 0", "add 1", "add 1 /dev/d half",
			"fail 1 2", "policy load 3" };
		size_t i;
		char desc[96];

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			snprintf(desc, sizeof(desc), "message refused with a reason: '%s'", bad[i]);
			check(dmirror_dm_parse_message(&table, bad[i], strlen(bad[i]), &m, err,
			    sizeof(err)) == DMIRROR_EINVAL && err[0] != '\0' &&
			    strchr(err, '\n') == NULL, desc, err);
		}
	}
}

/* ---- The disk log: a mirror whose metadata is on a separate log device ----
 * A small host (two legs and a log device in memory, leg I/O queued and completed in order):
 * activation from a blank log (dmirror_assemble_log + dmirror_create_assembled), a write whose
 * mark reaches the log device before the legs, a clean shutdown, reload from the valid log, and
 * a corrupt log refused. */
#define DL_SS 512u
#define DL_DATA 256u    /* data sectors = leg size */
#define DL_REGION 16u
#define DL_LOGSEC 64u   /* log device sectors (19 needed) */
#define DL_MAXQ 256

static uint8_t dl_leg[2][DL_DATA * DL_SS];
static uint8_t dl_log[DL_LOGSEC * DL_SS];
static struct dmirror_leg_io dl_q[DL_MAXQ];
static int dl_nq, dl_bad, dl_log_flushes, dl_leg_data_before_log_flush, dl_done, dl_err;
static int dl_log_failed_events;
static struct dmirror *dl_m;

static void *
dl_alloc(void *ctx, size_t size, int may_sleep)
{
	(void)ctx;
	(void)may_sleep;
	return aligned_alloc(16, (size + 15) & ~(size_t)15);
}

static void
dl_free(void *ctx, void *p, size_t size)
{
	(void)ctx;
	(void)size;
	free(p);
}

static void
dl_issue(void *ctx, const struct dmirror_leg_io *io)
{
	(void)ctx;
	if (dl_nq >= DL_MAXQ) {
		dl_bad++;
		return;
	}
	if (io->leg != DMIRROR_LOGDEV_LEG && io->buf_kind == DMIRROR_BUF_PARENT &&
	    dl_log_flushes == 0)
		dl_leg_data_before_log_flush++;
	dl_q[dl_nq++] = *io;
}

static void
dl_complete(void *ctx, uint64_t handle, int error)
{
	(void)ctx;
	(void)handle;
	dl_done++;
	dl_err = error;
}

static void
dl_event(void *ctx, const struct dmirror_event *ev)
{
	(void)ctx;
	if (ev->kind == DMIRROR_EV_LOG_FAILED && ev->leg == DMIRROR_LOGDEV_LEG)
		dl_log_failed_events++;
}

static int
dl_meta_read(void *ctx, uint32_t leg, uint64_t sector, uint8_t *buf, uint64_t len)
{
	(void)ctx;
	if (leg != DMIRROR_LOGDEV_LEG || sector * DL_SS + len > sizeof(dl_log)) {
		dl_bad++;
		return DMIRROR_EIO;
	}
	memcpy(buf, dl_log + sector * DL_SS, len);
	return 0;
}

static int dl_log_eio;

/* Complete every queued I/O (oldest first), including those issued meanwhile. */
static void
dl_drain(void)
{
	int n = 0;
	while (dl_nq > 0 && n++ < 100000) {
		struct dmirror_leg_io io = dl_q[0];
		int err = 0;
		memmove(dl_q, dl_q + 1, sizeof(dl_q[0]) * (size_t)(--dl_nq));
		uint8_t *dev = io.leg == DMIRROR_LOGDEV_LEG ? dl_log :
		    io.leg < 2 ? dl_leg[io.leg] : NULL;
		uint64_t size = io.leg == DMIRROR_LOGDEV_LEG ? sizeof(dl_log) : sizeof(dl_leg[0]);
		if (dev == NULL || io.sector * DL_SS + io.count * DL_SS > size) {
			dl_bad++;
			err = DMIRROR_EIO;
		} else if (io.leg == DMIRROR_LOGDEV_LEG && dl_log_eio) {
			err = DMIRROR_EIO;
		} else if (io.op == DMIRROR_OP_FLUSH) {
			if (io.leg == DMIRROR_LOGDEV_LEG)
				dl_log_flushes++;
		} else if (io.op == DMIRROR_OP_WRITE && io.buf_kind == DMIRROR_BUF_META) {
			if (io.leg != DMIRROR_LOGDEV_LEG)
				dl_bad++; /* a disk-log mirror writes no metadata on its legs */
			memcpy(dev + io.sector * DL_SS, io.meta, io.meta_len);
		} else if (io.op == DMIRROR_OP_WRITE && io.buf_kind == DMIRROR_BUF_PARENT) {
			memcpy(dev + io.sector * DL_SS,
			    (const uint8_t *)(uintptr_t)io.parent_buf + io.offset, io.count * DL_SS);
		} else if (io.op == DMIRROR_OP_READ && io.buf_kind == DMIRROR_BUF_PARENT) {
			memcpy((uint8_t *)(uintptr_t)io.parent_buf + io.offset,
			    dev + io.sector * DL_SS, io.count * DL_SS);
		}
		dmirror_leg_done(dl_m, io.token, err);
	}
}

/* Activate from the log device as the dm target does; 0 or the errno, *fresh, err/why. */
static int
dl_activate(uint32_t sync, uint8_t *fresh, struct dmirror_why *why, struct dmirror_host_ops *ops)
{
	static struct dmirror_assembly a;
	struct dmirror_leg_read lr;
	struct dmirror_config cfg;
	uint64_t legs[2] = { DL_DATA, DL_DATA };
	const uint8_t uuid[16] = "dm-disk-log-test";
	int rc;

	memset(&lr, 0, sizeof(lr));
	lr.slot0 = dl_log;
	lr.slot0_len = 4096;
	lr.slot1 = dl_log + 4096;
	lr.slot1_len = 4096;
	lr.sectors = DL_LOGSEC;
	lr.sector_size = DL_SS;
	dmirror_config_default(&cfg, 2, DL_DATA);
	cfg.region_sectors = DL_REGION;
	cfg.resync_chunk_sectors = 8;
	rc = dmirror_assemble_log(&lr, NULL, &cfg, legs, sync, uuid, &a, fresh, why, err,
	    sizeof(err));
	if (rc != 0)
		return rc;
	dl_m = NULL;
	return dmirror_create_assembled(&a, NULL, ops, NULL, &dl_m, why);
}

static void
dl_write(uint64_t sector, uint32_t count, uint8_t byte, uint8_t *buf)
{
	struct dmirror_parent_io p;
	memset(buf, byte, count * DL_SS);
	memset(&p, 0, sizeof(p));
	p.handle = 1;
	p.op = DMIRROR_OP_WRITE;
	p.sector = sector;
	p.count = count;
	p.buf = (uint64_t)(uintptr_t)buf;
	dl_done = 0;
	dmirror_submit(dl_m, &p);
}

static void
disk_log(void)
{
	static uint8_t buf[8 * DL_SS];
	struct dmirror_host_ops ops;
	struct dmirror_why why;
	uint8_t fresh = 9;
	uint64_t need = 0;
	struct dmirror_status st;
	int rc;

	memset(&ops, 0, sizeof(ops));
	ops.alloc = dl_alloc;
	ops.free = dl_free;
	ops.issue = dl_issue;
	ops.complete = dl_complete;
	ops.event = dl_event;
	ops.meta_read = dl_meta_read;

	check(dmirror_log_device_sectors(DL_SS, DL_REGION, DL_DATA, 2, &need) == 0 && need == 19,
	    "log device size: 2 slots of 8 sectors + 3 one-sector bitmaps (W, T0, T1)", NULL);
	check(dmirror_log_device_sectors(DL_SS, 3, DL_DATA, 2, &need) == DMIRROR_EINVAL,
	    "log device size: a region size not a power of two is refused", NULL);

	/* Blank log device: a new mirror (nosync: both legs in sync). */
	rc = dl_activate(DMIRROR_LOGDEV_NOSYNC, &fresh, &why, &ops);
	check(rc == 0 && fresh == 1 && dl_m != NULL, "blank log: a new mirror", err);
	if (rc != 0 || dl_m == NULL)
		return;
	dmirror_tick(dl_m);
	dl_drain();
	check(memcmp(dl_log, "DMIRROR\x01", 8) == 0 || memcmp(dl_log + 4096, "DMIRROR\x01", 8) == 0,
	    "the first round labelled the log device", NULL);
	dl_log_flushes = 0;
	dl_leg_data_before_log_flush = 0;
	dl_write(40, 4, 0xA5, buf);
	check(dl_nq > 0 && dl_leg_data_before_log_flush == 0,
	    "a write to a clean region: only log I/O until the log is flushed", NULL);
	dl_drain();
	check(dl_done == 1 && dl_err == 0 && dl_log_flushes >= 1 &&
	    dl_leg_data_before_log_flush == 0 && dl_leg[0][40 * DL_SS] == 0xA5 &&
	    dl_leg[1][43 * DL_SS + 511] == 0xA5, "the write reached both legs after the mark", NULL);
	check((dl_log[16 * DL_SS] & 0x04) != 0, "region 2 is marked in the log's bitmap", NULL);
	check(dmirror_log_failed(dl_m) == 0, "log healthy", NULL);
	check(dl_bad == 0, "no I/O outside the devices, no metadata on the legs", NULL);
	dmirror_shutdown(dl_m);
	dl_drain();
	check(dmirror_destroy(dl_m) == 0, "clean shutdown, destroyed", NULL);

	/* Reload: the valid log gives the recorded mirror, clean. */
	fresh = 9;
	rc = dl_activate(DMIRROR_LOGDEV_SYNC_DEFAULT, &fresh, &why, &ops);
	check(rc == 0 && fresh == 0, "reload from the valid log", err);
	if (rc != 0 || dl_m == NULL)
		return;
	dmirror_status(dl_m, &st);
	check(st.regions_in_sync == st.regions && st.leg[1].state == DMIRROR_LEG_IN_SYNC,
	    "after a clean shutdown: nothing to resync", NULL);
	dmirror_tick(dl_m); /* the activation's round (new generation) reaches the log */
	dl_drain();
	/* The log device fails: writes still reach both legs; the event says so once. */
	dl_log_eio = 1;
	dl_write(100, 2, 0x5A, buf);
	dl_drain();
	check(dl_done == 1 && dl_err == 0 && dmirror_log_failed(dl_m) == 1 &&
	    dl_log_failed_events == 1 && dl_leg[0][100 * DL_SS] == 0x5A &&
	    dl_leg[1][101 * DL_SS] == 0x5A,
	    "log failure: LOG_FAILED once, writes to every leg go on", NULL);
	dl_log_eio = 0;
	dmirror_shutdown(dl_m);
	dl_drain();
	check(dmirror_destroy(dl_m) == 0, "destroyed after the log failure", NULL);

	/* Corrupt: both slots carry the magic but a bad checksum. Nothing is written. */
	{
		static uint8_t saved[sizeof(dl_log)];
		memcpy(saved, dl_log, sizeof(dl_log));
		memcpy(dl_log, "DMIRROR\x01", 8);
		memcpy(dl_log + 4096, "DMIRROR\x01", 8);
		dl_log[8] = 1;
		dl_log[4096 + 8] = 1;
		dl_log[300] ^= 0xFF;
		dl_log[4096 + 300] ^= 0xFF;
		memcpy(saved, dl_log, sizeof(dl_log));
		dl_m = NULL;
		rc = dl_activate(DMIRROR_LOGDEV_SYNC_DEFAULT, &fresh, &why, &ops);
		check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_LOG_UNREADABLE &&
		    dl_m == NULL && strstr(err, "checksum") != NULL &&
		    memcmp(saved, dl_log, sizeof(dl_log)) == 0,
		    "a corrupt log is refused with a reason, nothing written", err);
	}
	/* Too small a log device. */
	{
		struct dmirror_leg_read lr;
		struct dmirror_config cfg;
		static struct dmirror_assembly a;
		uint64_t legs[2] = { DL_DATA, DL_DATA };
		memset(&lr, 0, sizeof(lr));
		memset(dl_log, 0, sizeof(dl_log));
		lr.slot0 = dl_log;
		lr.slot0_len = 4096;
		lr.slot1 = dl_log + 4096;
		lr.slot1_len = 4096;
		lr.sectors = 18;
		lr.sector_size = DL_SS;
		dmirror_config_default(&cfg, 2, DL_DATA);
		cfg.region_sectors = DL_REGION;
		rc = dmirror_assemble_log(&lr, NULL, &cfg, legs, 0,
		    (const uint8_t *)"dm-disk-log-test", &a, NULL, &why, err, sizeof(err));
		check(rc == DMIRROR_ENOSPC && why.code == DMIRROR_WHY_LOG_TOO_SMALL &&
		    why.value == 19, "a log device too small is refused, naming the size needed", err);

		/* A blank start but a dmirror leg's superblock slots at the end: a leg given as
		 * the log device by mistake, refused rather than overwritten. */
		{
			static uint8_t t0[4096], t1[4096];
			struct dmirror_leg_read tail;
			memset(&tail, 0, sizeof(tail));
			memcpy(t1, "DMIRROR\x01", 8);
			t1[8] = 1;
			t1[100] = 0x42;
			tail.slot0 = t0;
			tail.slot0_len = sizeof(t0);
			tail.slot1 = t1;
			tail.slot1_len = sizeof(t1);
			lr.sectors = DL_LOGSEC;
			rc = dmirror_assemble_log(&lr, &tail, &cfg, legs, 0,
			    (const uint8_t *)"dm-disk-log-test", &a, NULL, &why, err, sizeof(err));
			check(rc == DMIRROR_EINVAL && why.code == DMIRROR_WHY_LOG_IS_A_LEG &&
			    strstr(err, "leg") != NULL,
			    "a dmirror leg given as the log device is refused", err);
			memset(t1, 0, sizeof(t1));
			rc = dmirror_assemble_log(&lr, &tail, &cfg, legs, 0,
			    (const uint8_t *)"dm-disk-log-test", &a, NULL, &why, err, sizeof(err));
			check(rc == 0, "blank start and blank end: a new log", err);
		}
	}
}

int
main(void)
{
	good_tables();
	malformed_tables();
	devices();
	status_lines();
	tampered();
	messages();
	disk_log();
	printf("1..%d\n", checks);
	if (failures != 0) {
		printf("# %d of %d checks failed\n", failures, checks);
		return 1;
	}
	return 0;
}
