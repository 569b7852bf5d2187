/*
 * dmirror_dm.h - C entry points for the device-mapper `mirror` target (DragonFly, NetBSD): parse
 * and check a table's parameter string, print `dmsetup table` and `dmsetup status` lines, and
 * parse `dmsetup message` commands. They wrap the core's dmirror::dmtable module (the one parser,
 * tested in CI) so the kernel shim holds no text parsing of its own.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Conventions (as in dmirror.h): fixed-size integers, #define constants, explicit padding; every
 * function validates its arguments, returns 0 or a DMIRROR_E* errno, never sleeps, never calls a
 * callback and never allocates. They are not light on stack: a status line builds a snapshot of
 * the mirror and the table there. Measured on the x86_64 kernel build with
 * tests/kernel-stack-report.sh (which fails the build past 8 KiB): format_status ~4.7 KiB,
 * parse ~3 KiB, check_devices, format_table and parse_message ~2.8 KiB. Call them from a thread
 * (the dm target calls them
 * from its worker), not from an interrupt handler. Error and output buffers are
 * always NUL-terminated when their length is not 0, and the text is cut at a character boundary
 * when it does not fit.
 *
 * Sizes and offsets in a table are in 512-byte sectors, as everywhere in device-mapper.
 */
#ifndef DMIRROR_DM_H
#define DMIRROR_DM_H

#include "dmirror.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Log types (struct dmirror_dm_table.log_type). */
#define DMIRROR_DM_LOG_CORE 0u    /* core <region_size> [sync|nosync] */
#define DMIRROR_DM_LOG_DISK 1u    /* disk <log_dev> <region_size> [sync|nosync] */
#define DMIRROR_DM_LOG_DMIRROR 2u /* dmirror <region_size|0> [sync|nosync] */

/* Initial synchronisation (struct dmirror_dm_table.sync). */
#define DMIRROR_DM_SYNC_DEFAULT 0u /* neither word: the log decides */
#define DMIRROR_DM_SYNC_SYNC 1u    /* sync: full resync at activation */
#define DMIRROR_DM_SYNC_NOSYNC 2u  /* nosync: the legs are declared identical */

/* Features (struct dmirror_dm_table.features, a bit set). */
#define DMIRROR_DM_FEATURE_HANDLE_ERRORS 0x1u
#define DMIRROR_DM_FEATURE_KEEP_LOG 0x2u

/* Health of a disk log device, for the status line. */
#define DMIRROR_DM_LOG_ALIVE 0u        /* A */
#define DMIRROR_DM_LOG_FAILED 1u       /* D: a log write failed */
#define DMIRROR_DM_LOG_FLUSH_FAILED 2u /* F: a log flush failed */

/* Limits of the parser. */
#define DMIRROR_DM_MAX_TABLE_BYTES 4096u /* longest parameter string */
#define DMIRROR_DM_MAX_ARG_BYTES 255u    /* longest single argument (e.g. a device path) */
/* An error buffer of this size holds every message whole. */
#define DMIRROR_DM_ERRMSG_BYTES 192u

/* One leg: the device string as the table wrote it (NOT NUL-terminated: dev points into the
 * parameter string given to dmirror_dm_parse, dev_len bytes) and its first sector. */
struct dmirror_dm_leg {
	const char *dev;
	uint64_t dev_len;
	uint64_t offset;
};

/*
 * A parsed table. The strings point into the parameter string passed to dmirror_dm_parse(): keep
 * that string alive and unchanged as long as the table is used (the shim keeps its own copy of the
 * parameters for the life of the target). About 800 bytes: allocate it, don't put it on a kernel
 * stack.
 */
struct dmirror_dm_table {
	uint64_t region_sectors; /* as written; 0 only for the dmirror log (= default size) */
	const char *log_dev;     /* DISK: the log device string (not NUL-terminated), else NULL */
	uint64_t log_dev_len;
	uint32_t log_type; /* DMIRROR_DM_LOG_* */
	uint32_t sync;     /* DMIRROR_DM_SYNC_* */
	uint32_t features; /* DMIRROR_DM_FEATURE_* bits */
	uint8_t nlegs;     /* 1..=32 */
	uint8_t _pad[3];
	struct dmirror_dm_leg legs[DMIRROR_MAX_LEGS]; /* 0..nlegs-1 used, the rest zero */
};

/*
 * Parse a table's parameter string (everything after "<start> <length> mirror"), len bytes (no
 * NUL needed). 0: *out is filled. DMIRROR_EINVAL: the table is malformed; a one-line message naming
 * the problem is in err (if errlen > 0) and *out is zeroed. Nothing here touches a device.
 */
int dmirror_dm_parse(const char *params, size_t len, struct dmirror_dm_table *out, char *err,
    size_t errlen);

/*
 * The region size to run with for a target of target_sectors: the table's, or for a dmirror log
 * with region size 0 the core's default for that size.
 */
int dmirror_dm_region_sectors(const struct dmirror_dm_table *t, uint64_t target_sectors,
    uint64_t *out);

/*
 * Check the table against the devices the shim opened: dev_sectors[i] is the size of leg i's
 * device in 512-byte sectors (ndev must equal nlegs). Every leg must hold offset + target_sectors,
 * and for the dmirror log also the metadata area (superblocks and bitmaps) that follows the data
 * at the end of the leg. DMIRROR_EINVAL with a message in err otherwise.
 */
int dmirror_dm_check_devices(const struct dmirror_dm_table *t, uint64_t target_sectors,
    const uint64_t *dev_sectors, uint32_t ndev, char *err, size_t errlen);

/*
 * Print the table in canonical form into buf (what `dmsetup table` shows after the target
 * name). dev_names: NULL to print the devices as the table holds them, else an array of nnames
 * NUL-terminated strings (e.g. "major:minor") replacing leg i's device for i < nlegs and, for
 * the disk log, the log device at index nlegs; a NULL entry keeps the table's string.
 * 0, or DMIRROR_ENOSPC when buf was too small (it then holds a cut, NUL-terminated prefix),
 * DMIRROR_EINVAL for an invalid table or name.
 */
int dmirror_dm_format_table(const struct dmirror_dm_table *t, const char *const *dev_names,
    uint32_t nnames, char *buf, size_t buflen);

/*
 * Print `dmsetup status` (after the target name) in dm-mirror's format, which lvm2 reads:
 *   <#legs> <dev>... <in_sync>/<total> 1 <A|D per leg> <log status>
 * from a dmirror_status() snapshot and the table; dev_names as for dmirror_dm_format_table
 * (libdevmapper expects "major:minor"). log_health: DMIRROR_DM_LOG_* (disk log only).
 * Errors as for dmirror_dm_format_table.
 */
int dmirror_dm_format_status(const struct dmirror_status *st, const struct dmirror_dm_table *t,
    const char *const *dev_names, uint32_t nnames, uint32_t log_health, char *buf,
    size_t buflen);

/* `dmsetup message` commands (struct dmirror_dm_message.kind). <leg> is a leg index (0-based)
 * or a device string exactly as the table wrote it. */
#define DMIRROR_DM_MSG_FAIL 1u   /* fail <leg>: dmirror_fail_leg */
#define DMIRROR_DM_MSG_REMOVE 2u /* remove <leg>: dmirror_remove_leg */
#define DMIRROR_DM_MSG_ADD 3u    /* add <leg> <dev> [full]: open dev, dmirror_add_leg */
#define DMIRROR_DM_MSG_POLICY 4u /* policy round_robin [batch] | load | prefer <leg> | split [min] */

struct dmirror_dm_message {
	uint32_t kind; /* DMIRROR_DM_MSG_* */
	uint32_t leg;  /* FAIL, REMOVE, ADD: the leg index, < nlegs */
	const char *dev; /* ADD: the new device string (into the message, not NUL-terminated) */
	uint64_t dev_len;
	struct dmirror_read_policy policy; /* POLICY */
	uint8_t incremental; /* ADD: 1 unless "full" was given (a returning leg copies only what it missed) */
	uint8_t _pad[7];
};

/*
 * Parse a `dmsetup message` text (len bytes) for a target with table t. 0: *out is filled; the
 * shim carries it out with the dmirror_* control entry point named above. DMIRROR_EINVAL with a
 * one-line message in err otherwise.
 */
int dmirror_dm_parse_message(const struct dmirror_dm_table *t, const char *msg, size_t len,
    struct dmirror_dm_message *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* DMIRROR_DM_H */
