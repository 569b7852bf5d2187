/*
 * dmirror.h - the one contract between the C shims (FreeBSD GEOM class, DragonFly/NetBSD
 * device-mapper target, test programs) and the portable Rust core.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The core (crate `dmirror`) is sans-IO: the shim feeds it events through the entry points below
 * (a parent I/O, a leg I/O completed, a clock tick, control operations) and the core answers
 * through the table of callbacks the shim provides (struct dmirror_host_ops): issue this leg I/O,
 * complete this parent, report this event. The Rust side of this file is generated from it with
 * bindgen (shim-c/build.rs); shim-c/src/abi.rs pins every size and offset below with
 * static_assertions (and tests/ffi/ffi_test.c the C compiler's view with _Static_assert), so a
 * change here that moves anything breaks the build until the pins are updated on purpose.
 *
 * Conventions
 * - Every offset and length is 64-bit. Sector numbers and sector counts are in units of the
 *   mirror's sector_size; byte offsets (into a buffer) are in bytes.
 * - Every entry point validates its arguments and returns 0 or a positive errno value from the
 *   DMIRROR_E* list below. No entry point unwinds, panics or aborts on bad input.
 * - Enumerations are plain integers (#define), never C enums, so their size is fixed.
 * - Structures have explicit padding fields; shims zero them (memset the struct first).
 *
 * Concurrency (the shim's obligations)
 * - Calls on one mirror must be serialized. Either give lock/unlock callbacks (the glue then takes
 *   the lock around every call into the core: the shim may call entry points from any thread), or
 *   set them to NULL and call every entry point for that mirror from a single thread (one worker
 *   thread per mirror, as g_mirror does). Different mirrors are independent.
 * - The callbacks issue, complete and event are called from inside the entry points, with the
 *   lock held when there is one. They must not sleep and must not call any dmirror_* entry point
 *   for the same mirror. A leg I/O that completes synchronously (inside issue) must have its
 *   completion queued and delivered with dmirror_leg_done() after the entry point returned.
 *   The glue detects such a re-entrant call (when it gets that far) and refuses it with
 *   DMIRROR_EDEADLK; with a non-recursive lock the call deadlocks first, so do not rely on this.
 * - complete may be called from inside dmirror_submit() itself (an invalid parent is finished at
 *   once with DMIRROR_EINVAL), and from inside dmirror_leg_done() and dmirror_tick().
 * - dmirror_create() and dmirror_create_assembled() may sleep (they allocate with may_sleep=1;
 *   the latter reads bitmaps through meta_read); dmirror_destroy() calls free. Call them from a
 *   sleepable context. Every other entry point never sleeps and never calls a callback that may
 *   sleep (alloc is called only from the two creates, always with may_sleep=1).
 * - dmirror_destroy(): the shim guarantees that no other call on this mirror is running or will
 *   start; the handle is invalid afterwards.
 *
 * Kernel stack (x86_64 kernel build, measured by tests/kernel-stack-report.sh, the shim's own
 * callbacks not included): every entry point needs at most 8 KiB below the caller, and
 * tests/kernel-build.sh fails the build otherwise. Measured: dmirror_create_assembled about
 * 6.6 KiB, dmirror_assemble 6.1 KiB, dmirror_create 5.8 KiB, the I/O-path entry points
 * (submit, leg_done, tick, status, is_idle, the control operations, destroy) about 4.7 KiB,
 * dmirror_identify about 2 KiB. So a kernel thread with the platform's default stack (16 KiB:
 * FreeBSD KSTACK_PAGES 4, NetBSD USPACE, DragonFly LWKT_THREAD_STACK) can run all of them;
 * the sleeping ones (the creates) still need a sleepable context, never an interrupt.
 * What keeps it so: the core decodes one superblock at a time and builds its large values
 * (the assembly, the mirror, the init, the status) in place; dmirror_assemble() also uses
 * *out as working memory until it writes the answer there.
 */
#ifndef DMIRROR_H
#define DMIRROR_H

#if defined(_KERNEL)
#include <sys/types.h> /* uint8_t..uint64_t, size_t in every BSD kernel */
#else
#include <stddef.h>
#include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change of this file once released (until then, shims and core
 * are always built from one tree and it stays 1). struct dmirror_config carries it. */
#define DMIRROR_ABI_VERSION 1u

/* Most legs a mirror can have. */
#define DMIRROR_MAX_LEGS 32u

/*
 * Error codes. These are the errno numbers of FreeBSD, NetBSD, DragonFly and OpenBSD, which agree
 * on all of them (they differ from Linux for EAGAIN, EDEADLK, EOPNOTSUPP, ENOSYS and ESHUTDOWN).
 * A BSD shim can pass them to its kernel unchanged; a shim for another kernel translates.
 */
#define DMIRROR_OK 0
#define DMIRROR_EPERM 1       /* the operation would leave no in-sync leg */
#define DMIRROR_ENOENT 2      /* no such leg slot */
#define DMIRROR_EIO 5         /* I/O error (leg or parent) */
#define DMIRROR_ENXIO 6       /* device gone (leg); no usable leg left (parent) */
#define DMIRROR_ENOMEM 12     /* the host's alloc callback failed */
#define DMIRROR_EDEADLK 11    /* an entry point was re-entered from a callback */
#define DMIRROR_EBUSY 16      /* parent pool full (submit) / not idle (destroy) / slot in use */
#define DMIRROR_ENODEV 19     /* leg completion: same as ENXIO (device gone) */
#define DMIRROR_EINVAL 22     /* invalid argument */
#define DMIRROR_ENOSPC 28     /* the leg's device is too small */
#define DMIRROR_EAGAIN 35     /* try again later */
#define DMIRROR_EOPNOTSUPP 45 /* the leg does not support the operation (not a failure: discard) */
#define DMIRROR_ESHUTDOWN 58  /* a clean shutdown is in progress */
#define DMIRROR_ENOSYS 78     /* not implemented by this build of the core */

/* Read policies (struct dmirror_read_policy.kind) and the meaning of .arg. */
#define DMIRROR_READ_ROUND_ROBIN 0u /* arg = batch: reads sent to one leg before the next */
#define DMIRROR_READ_LOAD 1u        /* arg unused (0): fewest outstanding leg I/Os */
#define DMIRROR_READ_PREFER 2u      /* arg = leg index preferred while it is a candidate */
#define DMIRROR_READ_SPLIT 3u       /* arg = min_sectors: larger reads are split across legs */

/* Region log kinds (struct dmirror_config.log). */
#define DMIRROR_REGION_LOG_CORE 0u    /* in memory only: a restart resyncs everything */
#define DMIRROR_REGION_LOG_ON_LEGS 1u /* superblocks and bitmaps at the end of every leg */

/* Leg states (dmirror_leg_init.state, dmirror_leg_status.state, dmirror_event.state).
 * 0 is EMPTY so that a zeroed dmirror_init describes no legs. */
#define DMIRROR_LEG_EMPTY 0u
#define DMIRROR_LEG_IN_SYNC 1u
#define DMIRROR_LEG_REBUILDING 2u
#define DMIRROR_LEG_FAILED 3u
#define DMIRROR_LEG_MISSING 4u

/* Parent and leg operations. 0 is invalid so that an unset field is caught. */
#define DMIRROR_OP_READ 1u
#define DMIRROR_OP_WRITE 2u
#define DMIRROR_OP_FLUSH 3u
#define DMIRROR_OP_DISCARD 4u

/* Where the bytes of a leg I/O live (struct dmirror_leg_io.buf_kind). */
#define DMIRROR_BUF_NONE 0u   /* flush, discard: no data */
#define DMIRROR_BUF_PARENT 1u /* the parent's buffer (parent_buf cookie), offset bytes in */
#define DMIRROR_BUF_RESYNC 2u /* host resync buffer number resync_slot, offset bytes in */
#define DMIRROR_BUF_META 3u   /* core-owned bytes meta[0..meta_len): writes only */

/* Event kinds (struct dmirror_event.kind). */
#define DMIRROR_EV_LEG_FAILED 1u      /* leg, state (FAILED or MISSING), error */
#define DMIRROR_EV_RESYNC_PROGRESS 2u /* leg, done, total (sectors) */
#define DMIRROR_EV_LEG_IN_SYNC 3u     /* leg */
#define DMIRROR_EV_RESYNC_STALLED 4u  /* leg, sector: no source could be read there */
#define DMIRROR_EV_REPAIRED 5u        /* leg, sector, count: a read error was rewritten */
#define DMIRROR_EV_READY 6u           /* a parent slot is free again after EBUSY */
#define DMIRROR_EV_SHUTDOWN_DONE 7u   /* the clean shutdown is complete */
#define DMIRROR_EV_AUTHORITATIVE 8u   /* leg is the new authoritative leg */

/* Log levels (syslog numbering). */
#define DMIRROR_LOG_ERR 3
#define DMIRROR_LOG_WARNING 4
#define DMIRROR_LOG_NOTICE 5
#define DMIRROR_LOG_INFO 6
#define DMIRROR_LOG_DEBUG 7

/* Why a configuration or initial state was refused (struct dmirror_why.code). */
#define DMIRROR_WHY_NONE 0u
#define DMIRROR_WHY_ABI_VERSION 1u   /* config.abi_version != DMIRROR_ABI_VERSION */
#define DMIRROR_WHY_LEG_COUNT 2u     /* legs not in 1..=32 */
#define DMIRROR_WHY_SECTOR_SIZE 3u   /* not a power of two in 512..=65536 */
#define DMIRROR_WHY_REGION_SIZE 4u   /* region_sectors not a power of two or out of range */
#define DMIRROR_WHY_DATA_SIZE 5u     /* data_sectors 0 or too large */
#define DMIRROR_WHY_READ_POLICY 6u   /* unknown kind, or arg out of range */
#define DMIRROR_WHY_POOL_SIZE 7u     /* max_parents / max_leg_ios */
#define DMIRROR_WHY_RESYNC 8u        /* resync_* fields */
#define DMIRROR_WHY_MEMORY 9u        /* memory size computation overflowed */
#define DMIRROR_WHY_LEG_TOO_SMALL 10u /* why.leg's device cannot hold data + metadata */
#define DMIRROR_WHY_INITIAL_STATE 11u /* init inconsistent with config (e.g. no usable leg) */
#define DMIRROR_WHY_LOG_KIND 12u     /* unknown config.log */
#define DMIRROR_WHY_LEG_STATE 13u    /* why.leg has an unknown state value */
#define DMIRROR_WHY_BITMAP 14u       /* a bitmap is inconsistent, too short, or unreadable */
/* dmirror_assemble(): why.leg is the index of the input (reads[]) concerned. */
#define DMIRROR_WHY_NO_METADATA 15u  /* neither slot holds a usable superblock */
#define DMIRROR_WHY_CONFLICT 16u     /* the leg belongs to another mirror */
#define DMIRROR_WHY_READ_SECTOR_SIZE 17u /* read with the wrong sector size: read it again with
					   * why.value-byte sectors */
#define DMIRROR_WHY_WRONG_SIZE 18u   /* the device is not the size recorded (why.value) */
#define DMIRROR_WHY_DUPLICATE 19u    /* the same leg given twice */
#define DMIRROR_WHY_NOT_MEMBER 20u   /* removed or replaced: not in the newest leg table */
#define DMIRROR_WHY_GEOMETRY 21u     /* disagrees with the newest metadata on the geometry */
#define DMIRROR_WHY_SPLIT_BRAIN 22u  /* two legs each ran without the other: assemble again
				      * with choose = the uuid of the LEG whose data wins */
#define DMIRROR_WHY_CHOSEN 23u       /* the leg named to win is absent or not in sync */
#define DMIRROR_WHY_NO_USABLE_LEG 24u /* no present leg holds a full copy */

struct dmirror; /* opaque: one mirror, created by dmirror_create(), freed by dmirror_destroy() */

struct dmirror_read_policy {
	uint32_t kind; /* DMIRROR_READ_* */
	uint32_t arg;  /* see DMIRROR_READ_* */
};

/*
 * A mirror's configuration. Start from dmirror_config_default() and change what you need.
 * The shim allocates resync_max_inflight resync buffers of resync_chunk_sectors * sector_size
 * bytes each (numbered 0..resync_max_inflight-1; see DMIRROR_BUF_RESYNC).
 */
struct dmirror_config {
	uint32_t abi_version;       /* DMIRROR_ABI_VERSION */
	uint32_t sector_size;       /* bytes, power of two, 512..=65536 */
	uint64_t data_sectors;      /* size of the mirror device */
	uint64_t region_sectors;    /* power of two: unit of write intent and resync */
	uint64_t resync_sectors_per_tick; /* copy rate limit per dmirror_tick(); 0 = unlimited */
	uint32_t max_parents;       /* parent I/Os in flight (pool); beyond: EBUSY from submit */
	uint32_t max_leg_ios;       /* leg I/Os in flight (pool); parents wait in order */
	uint32_t clear_delay_ticks; /* idle ticks before a dirty region's bit is cleared */
	uint32_t resync_max_inflight;       /* copies in flight = number of resync buffers */
	uint32_t resync_chunk_sectors;      /* sectors per copy = one resync buffer */
	uint32_t resync_checkpoint_regions; /* persist the rebuild checkpoint every N regions */
	struct dmirror_read_policy read_policy;
	uint8_t legs;               /* leg slots, 1..=32 */
	uint8_t log;                /* DMIRROR_REGION_LOG_* */
	uint8_t _pad[6];
};

/* One leg slot at creation. A zeroed struct is an EMPTY slot. */
struct dmirror_leg_init {
	uint64_t sectors;            /* size of the leg's device (its metadata area is at its end) */
	uint64_t rebuild_checkpoint; /* REBUILDING: regions below this index are already copied */
	uint8_t uuid[16];
	uint32_t state;              /* DMIRROR_LEG_* */
	uint8_t rebuild_full;        /* REBUILDING: 1 = every region needs copying, 0 = tracked only */
	uint8_t _pad[3];
};

/* A bitmap: bit r of byte r/8 (least significant bit first) is region r. bits == NULL: none. */
struct dmirror_bitmap {
	const uint8_t *bits;
	uint64_t len; /* bytes; at least ceil(regions / 8) when bits != NULL, else 0 */
};

/*
 * Everything a mirror starts from besides its configuration: fresh (label time, see
 * dmirror_init_fresh()) or assembled from the legs' metadata (dmirror_assemble()).
 * About 2 KiB: allocate it, don't put it on a kernel stack.
 */
struct dmirror_init {
	uint8_t mirror_uuid[16];
	uint8_t name[32];      /* NUL-padded */
	uint64_t generation;   /* generation of the newest metadata */
	uint64_t seq;          /* sequence number of the newest superblock written */
	uint8_t authoritative; /* the leg that is the source of truth for regions that may differ */
	uint8_t _pad[7];
	/* Union of the write-intent bitmaps found on disk (after an unclean shutdown). */
	struct dmirror_bitmap dirty;
	/* Slots 0..config.legs-1 are used; the rest must be zero (EMPTY, no bitmap). */
	struct dmirror_leg_init legs[DMIRROR_MAX_LEGS];
	/* Per leg: regions written while it was away. */
	struct dmirror_bitmap tracking[DMIRROR_MAX_LEGS];
};

/* A parent I/O: what the upper layer asked of the mirror device. */
struct dmirror_parent_io {
	uint64_t handle; /* opaque to the core (a struct bio *...), given back to complete() */
	uint64_t sector; /* first sector; ignored for flush */
	uint64_t count;  /* sectors, at most UINT32_MAX; ignored for flush */
	uint64_t buf;    /* opaque reference to the data buffer, given back in leg I/Os */
	uint32_t op;     /* DMIRROR_OP_* */
	uint8_t fua;     /* 1: durable when completed */
	uint8_t _pad[3];
};

/*
 * A leg I/O the core asks the shim to issue (host_ops.issue). The structure itself is valid only
 * during the callback: copy what you need. The buffer it references stays valid until the shim
 * reports the I/O with dmirror_leg_done(token, ...).
 */
struct dmirror_leg_io {
	uint64_t token;      /* give it back to dmirror_leg_done() */
	uint64_t sector;     /* absolute sector on the leg (data at 0.., metadata at the end) */
	uint64_t count;      /* sectors (0 for flush) */
	uint64_t parent_buf; /* BUF_PARENT: the dmirror_parent_io.buf of the parent */
	uint64_t offset;     /* BUF_PARENT / BUF_RESYNC: byte offset into that buffer */
	const uint8_t *meta; /* BUF_META: the bytes to write (core memory; never read into) */
	uint64_t meta_len;   /* BUF_META: bytes (count * sector_size) */
	uint32_t resync_slot; /* BUF_RESYNC: which resync buffer */
	uint8_t leg;         /* leg index */
	uint8_t op;          /* DMIRROR_OP_* */
	uint8_t fua;         /* write through to stable storage */
	uint8_t buf_kind;    /* DMIRROR_BUF_* */
};

/* Something the administrator or the shim may want to know (host_ops.event). */
struct dmirror_event {
	uint32_t kind;  /* DMIRROR_EV_* */
	uint32_t leg;
	uint32_t state; /* LEG_FAILED: DMIRROR_LEG_FAILED or DMIRROR_LEG_MISSING */
	int32_t error;  /* LEG_FAILED: DMIRROR_E* that caused it */
	uint64_t done;  /* RESYNC_PROGRESS */
	uint64_t total; /* RESYNC_PROGRESS */
	uint64_t sector; /* RESYNC_STALLED, REPAIRED */
	uint64_t count;  /* REPAIRED */
};

struct dmirror_leg_status {
	uint32_t state;    /* DMIRROR_LEG_* */
	uint32_t inflight; /* leg I/Os outstanding */
	uint64_t regions_out_of_sync;
	uint64_t resync_done;  /* sectors copied by the current resync */
	uint64_t resync_total; /* sectors it has to copy in all */
	uint64_t reads;
	uint64_t writes;
	uint64_t errors;
	uint64_t repairs;
};

struct dmirror_counters {
	uint64_t parent_reads;
	uint64_t parent_writes;
	uint64_t parent_flushes;
	uint64_t parent_discards;
	uint64_t parent_errors;
	uint64_t read_retries;
	uint64_t repairs;
	uint64_t resync_sectors;
	uint64_t meta_writes;
	uint64_t meta_flushes;
	uint64_t busy;
};

/* A snapshot of the whole mirror (about 2.3 KiB: allocate it, don't put it on a kernel stack). */
struct dmirror_status {
	uint64_t generation;
	uint64_t regions;
	uint64_t regions_in_sync; /* in sync on every active leg */
	uint64_t dirty_regions;   /* write-intent bit set */
	uint32_t inflight_parents;
	uint32_t inflight_leg_ios;
	uint8_t legs;
	uint8_t authoritative;
	uint8_t _pad[6];
	struct dmirror_read_policy read_policy;
	struct dmirror_counters counters;
	struct dmirror_leg_status leg[DMIRROR_MAX_LEGS]; /* 0..legs-1 meaningful */
};

/* Why something was refused, in more detail than the errno (optional out-parameter). */
struct dmirror_why {
	uint32_t code;  /* DMIRROR_WHY_* */
	uint32_t leg;   /* for the codes that name a leg (assemble: the input index) */
	uint64_t value; /* READ_SECTOR_SIZE: the recorded sector size; WRONG_SIZE: the recorded
			 * sectors; otherwise 0 */
};

/*
 * The callbacks the shim provides. ctx is the shim's pointer given to dmirror_create(), passed
 * back unchanged. The table must stay valid and unchanged until dmirror_destroy() returns.
 */
struct dmirror_host_ops {
	/* Allocate size bytes aligned to at least 16 bytes; NULL on failure. may_sleep = 1 only
	 * from dmirror_create() (M_WAITOK is fine there); 0 elsewhere (M_NOWAIT). Required. */
	void *(*alloc)(void *ctx, size_t size, int may_sleep);
	/* Free what alloc returned; size is the size it was allocated with. Required. */
	void (*free)(void *ctx, void *ptr, size_t size);
	/* Serialize calls on this mirror (a non-sleeping mutex). Both NULL: the shim serializes. */
	void (*lock)(void *ctx);
	void (*unlock)(void *ctx);
	/* Issue this leg I/O; report it later with dmirror_leg_done(). Must not sleep. Required. */
	void (*issue)(void *ctx, const struct dmirror_leg_io *io);
	/* The parent I/O is finished (error: 0 or DMIRROR_E*); its buffer is the shim's again.
	 * Must not sleep. Required. */
	void (*complete)(void *ctx, uint64_t parent_handle, int error);
	/* Something happened (leg failed, resync progress...). Must not sleep. May be NULL. */
	void (*event)(void *ctx, const struct dmirror_event *ev);
	/* Run work on a sleepable thread. ABI v1: the core never asks for it and the glue never
	 * calls it; the slot is reserved so that a later core can without changing this table's
	 * layout. May be NULL. */
	int (*schedule)(void *ctx, uint64_t work);
	/* Read/write len bytes of metadata at sector of leg (a mirror slot), synchronously;
	 * called only from a sleepable context: meta_read by dmirror_create_assembled() for the
	 * bitmaps; meta_write by nothing in ABI v1 (reserved). Return 0 or an errno. meta_read may
	 * be NULL when dmirror_create_assembled() is never used. */
	int (*meta_read)(void *ctx, uint32_t leg, uint64_t sector, uint8_t *buf, uint64_t len);
	int (*meta_write)(void *ctx, uint32_t leg, uint64_t sector, const uint8_t *buf,
	    uint64_t len);
	/* A NUL-terminated message, valid only during the call. Must not sleep. May be NULL. */
	void (*log)(void *ctx, int level, const char *msg);
};

/* ---- Configuration helpers (no mirror needed, never sleep, no callbacks) ---- */

/* Fill cfg with the core's defaults for legs legs over data_sectors 512-byte sectors. */
int dmirror_config_default(struct dmirror_config *cfg, uint8_t legs, uint64_t data_sectors);

/* Bytes dmirror_create() will allocate for this configuration (why: optional). */
int dmirror_memory_needed(const struct dmirror_config *cfg, uint64_t *bytes,
    struct dmirror_why *why);

/* Fill init for a mirror with no history: legs 0..legs-1 present with leg_sectors sectors, leg 0
 * in sync and authoritative, the others in sync too if assume_clean, rebuilding otherwise. */
int dmirror_init_fresh(struct dmirror_init *init, uint8_t legs, uint64_t leg_sectors,
    int assume_clean);

/* A short static description of a DMIRROR_WHY_* code (never NULL). */
const char *dmirror_why_str(uint32_t code);

/* ---- Assembly from the legs' metadata ---- */

/* Where the two superblock slots of a leg of leg_sectors sectors of sector_size bytes are
 * (absolute sectors) and how many bytes each is (docs/FORMAT.md). They depend on these two
 * numbers only, so a shim can read them before knowing anything else. DMIRROR_EINVAL for an
 * invalid sector size, DMIRROR_ENOSPC if the leg cannot hold two slots. */
int dmirror_sb_location(uint64_t leg_sectors, uint32_t sector_size, uint64_t *slot0_sector,
    uint64_t *slot1_sector, uint64_t *slot_bytes);

/* The largest data_sectors a mirror may have on a leg of leg_sectors sectors of sector_size bytes
 * with regions of region_sectors sectors (the metadata at the end of the leg grows with the
 * number of regions); *out = 0 if the leg cannot hold even one sector and its metadata. What a
 * shim labelling devices needs to size the mirror. DMIRROR_EINVAL: sector_size not a power of
 * two in 512..=65536, region_sectors not a power of two, or out NULL. */
int dmirror_max_data_sectors(uint64_t leg_sectors, uint32_t sector_size, uint64_t region_sectors,
    uint64_t *out);

/* What the shim read from one candidate device. */
struct dmirror_leg_read {
	const uint8_t *slot0; /* superblock slot 0 bytes (slot_bytes), or NULL if unreadable */
	uint64_t slot0_len;
	const uint8_t *slot1; /* superblock slot 1 bytes (slot_bytes), or NULL if unreadable */
	uint64_t slot1_len;
	uint64_t sectors;     /* size of the device in sector_size units */
	uint64_t label;       /* the shim's tag for this device (a pointer, an index) */
	const char *name;     /* for messages (a device name), NUL-terminated; may be NULL */
	uint32_t sector_size; /* the sector size used for sectors and dmirror_sb_location() */
	uint32_t _pad;
};

/* One bitmap the shim must read for dmirror_create_assembled() (it does so through meta_read). */
struct dmirror_bitmap_read {
	uint64_t sector;  /* on the leg */
	uint64_t sectors; /* of the mirror's sector size */
	uint32_t leg;     /* mirror slot to read it from */
	uint32_t needed;  /* 0: nothing to read */
};

/* The result of dmirror_assemble(). About 3.7 KiB: allocate it, not on a kernel stack.
 * dmirror_assemble() also works in it (it is zeroed on failure). */
struct dmirror_assembly {
	struct dmirror_config config;      /* from the newest superblock; tune the pools if wanted */
	struct dmirror_init init;          /* leg states and identity; bitmaps not loaded */
	uint64_t label[DMIRROR_MAX_LEGS];  /* slot i: label of the device found for it */
	uint8_t present[DMIRROR_MAX_LEGS]; /* slot i: 1 if a device was found for it */
	uint64_t bitmap_bytes;             /* bytes of one bitmap as read from a leg */
	uint8_t clean;                     /* shut down cleanly: no write-intent bitmap needed */
	uint8_t split_brain_resolved;      /* a split brain was resolved by the caller's choice */
	uint8_t _pad[6];
	/* Write-intent bitmaps to read and OR (dirty[i].leg == i), and tracking[k]: the tracking
	 * bitmap of slot k (read from another, in-sync leg). */
	struct dmirror_bitmap_read dirty[DMIRROR_MAX_LEGS];
	struct dmirror_bitmap_read tracking[DMIRROR_MAX_LEGS];
};

/*
 * Decide what mirror the devices in reads[0..nreads) form (any subset of its legs, any order)
 * and fill out; refuse, naming the input concerned (why->leg) and the reason, if they do not
 * form one (docs/FORMAT.md, "Assembly"). choose: NULL, or the 16-byte uuid of the LEG whose data
 * wins a split brain (consulted only then, but must name a present leg). Stale legs come out
 * REBUILDING, never trusted. msg (optional, msg_len bytes): a NUL-terminated explanation.
 * *out is zeroed on failure (it is this call's working memory until the answer is written).
 * Pure: never sleeps, no callbacks, writes nothing to any leg.
 */
int dmirror_assemble(const struct dmirror_leg_read *reads, uint32_t nreads, const uint8_t *choose,
    struct dmirror_assembly *out, struct dmirror_why *why, char *msg, uint64_t msg_len);

/* ---- Identify one device without assembling it ----
 * (Block added with the small-stack assembly work; keep it together.) */

/* What one device's newest valid superblock says about the device itself. */
struct dmirror_identity {
	uint8_t mirror_uuid[16];
	uint8_t name[32];            /* the mirror's name, NUL-padded */
	uint8_t leg_uuid[16];        /* this device's own leg uuid */
	uint64_t generation;         /* of this superblock */
	uint64_t seq;                /* of this superblock (its slot is seq & 1) */
	uint64_t data_sectors;       /* the mirror's size */
	uint64_t region_sectors;
	uint64_t leg_sectors;        /* this leg's size as recorded (== the device's: checked) */
	uint64_t rebuild_checkpoint; /* state REBUILDING: regions already copied */
	uint32_t sector_size;        /* the mirror's sector size */
	uint32_t state;              /* DMIRROR_LEG_*: what this superblock records for itself */
	uint8_t leg;                 /* this device's slot in the mirror's leg table */
	uint8_t nlegs;               /* leg slots of the mirror */
	uint8_t clean;               /* 1: this superblock records a clean shutdown */
	uint8_t rebuild_full;        /* state REBUILDING: 1 = a full copy */
	uint32_t members;            /* bit k: its leg table has a leg (any state) in slot k */
};

/*
 * Decode the superblock slots of one device (r: as for dmirror_assemble(); r->label is not used)
 * and say what it records about itself, without assembling or judging it: a stale, rebuilding or
 * failed leg is identified as such, never refused. A shim that finds devices one at a time (a
 * GEOM taste) recognises any member of a mirror by mirror_uuid / leg_uuid / leg, and leaves the
 * decision to dmirror_assemble() over all of them. Refused (DMIRROR_EINVAL, why->leg = 0) only
 * when the device cannot be read as a leg: no valid slot (DMIRROR_WHY_NO_METADATA), read with
 * another sector size than it records (DMIRROR_WHY_READ_SECTOR_SIZE, why->value = the recorded
 * one: read it again with that size), not the size it records (DMIRROR_WHY_WRONG_SIZE,
 * why->value = the recorded sectors). *out is zeroed on failure.
 * Pure: never sleeps, no callbacks, writes nothing to the device; about 2 KiB of stack.
 */
int dmirror_identify(const struct dmirror_leg_read *r, struct dmirror_identity *out,
    struct dmirror_why *why);

/* ---- One mirror ---- */

/*
 * Create a mirror. Allocates dmirror_memory_needed() bytes through ops->alloc(may_sleep = 1):
 * call from a sleepable context. On success *out is the handle; on failure nothing is left
 * allocated and *out is NULL. cfg, init and the bitmaps are only read during the call.
 * flags: 0 (no flag is defined yet). why: optional.
 */
int dmirror_create(const struct dmirror_config *cfg, const struct dmirror_init *init,
    const struct dmirror_host_ops *ops, void *ctx, uint32_t flags, struct dmirror **out,
    struct dmirror_why *why);

/*
 * Create a mirror from dmirror_assemble()'s answer: reads the bitmaps it lists through
 * ops->meta_read (leg = mirror slot; the shim maps it to a device with a->label), checks them,
 * ORs the write-intent ones, then creates as dmirror_create() does. cfg: NULL for a->config, or
 * a tuned copy of it. Call from a sleepable context. DMIRROR_EIO (why: BITMAP, leg) if a read
 * failed; DMIRROR_EINVAL (why: BITMAP) if a bitmap is malformed; DMIRROR_EINVAL if meta_read is
 * NULL while a bitmap must be read.
 */
int dmirror_create_assembled(const struct dmirror_assembly *a, const struct dmirror_config *cfg,
    const struct dmirror_host_ops *ops, void *ctx, struct dmirror **out, struct dmirror_why *why);

/*
 * A new parent I/O. 0: accepted; complete() will be called exactly once for it (possibly before
 * this returns, e.g. with DMIRROR_EINVAL for a range beyond the end). DMIRROR_EBUSY: the parent
 * pool is full (or a shutdown is in progress); the shim keeps it, in order, and submits it again
 * after DMIRROR_EV_READY or any completion. Those arrive inside an entry point: note them there
 * and resubmit after that entry point has returned (never from the callback itself). DMIRROR_EINVAL: the arguments themselves are bad
 * (NULL, unknown op, count > UINT32_MAX); the core did not take it and complete() will not be
 * called: the shim fails it itself.
 */
int dmirror_submit(struct dmirror *m, const struct dmirror_parent_io *io);

/* A leg I/O the shim issued has finished. error: 0, or an errno: DMIRROR_ENXIO/DMIRROR_ENODEV
 * (device gone: the leg goes MISSING), DMIRROR_EOPNOTSUPP (not supported), anything else is an
 * I/O error (the leg is FAILED). A stale or unknown token is ignored by the core. */
int dmirror_leg_done(struct dmirror *m, uint64_t token, int error);

/* Time passes: call periodically (e.g. every 100 ms to 1 s from a callout or the worker). */
int dmirror_tick(struct dmirror *m);

/* Copy a snapshot of the mirror's state into *out. */
int dmirror_status(struct dmirror *m, struct dmirror_status *out);

/* 0 when nothing is in flight (no parent, no leg I/O, no metadata update), DMIRROR_EBUSY if
 * something is. */
int dmirror_is_idle(struct dmirror *m);

/*
 * Control operations. Errors: DMIRROR_ENOENT (no such slot), DMIRROR_EBUSY (slot in the wrong
 * state), DMIRROR_EPERM (would leave no in-sync leg), DMIRROR_ENOSPC (device too small),
 * DMIRROR_ESHUTDOWN (shutdown in progress), DMIRROR_EAGAIN (the leg still has I/O in flight
 * from before: complete it, then try again), DMIRROR_EINVAL (bad argument).
 */
/* Put a device of sectors sectors in an empty, failed or missing slot. incremental = 1: a
 * missing leg coming back resyncs only what was written while it was away. */
int dmirror_add_leg(struct dmirror *m, uint32_t leg, const uint8_t uuid[16], uint64_t sectors,
    int incremental);
/* Administratively fail a leg (it will need a full resync). */
int dmirror_fail_leg(struct dmirror *m, uint32_t leg);
/* Take a leg out of the mirror for good (its slot becomes empty). */
int dmirror_remove_leg(struct dmirror *m, uint32_t leg);
/* The leg's device went away (an orphaned consumer, a detached disk): mark it missing now so that
 * status is honest and writes are tracked for its incremental return. DMIRROR_EPERM for the last
 * in-sync leg (it stays in service), DMIRROR_EBUSY if it is not in service. */
int dmirror_leg_gone(struct dmirror *m, uint32_t leg);
int dmirror_set_read_policy(struct dmirror *m, const struct dmirror_read_policy *policy);
/* Begin a clean shutdown: new parents get DMIRROR_EBUSY, in-flight ones finish, legs are
 * flushed and marked clean; then DMIRROR_EV_SHUTDOWN_DONE. */
int dmirror_shutdown(struct dmirror *m);

/*
 * Free the mirror (through ops->free). DMIRROR_EBUSY (and nothing freed) unless it is idle: leg
 * I/Os in flight reference its memory. May sleep only if the shim's free does.
 */
int dmirror_destroy(struct dmirror *m);

/*
 * Kernel builds only (x86_64-unknown-none and the like): the shim defines this. The core is built
 * to have no panic path reachable from its entry points (panic = abort, no unwinding, clippy
 * denies unwrap/expect/indexing); should a compiler-inserted check fire anyway, the panic handler
 * calls it with a NUL-terminated description (file:line: message). It should not return (on
 * FreeBSD: panic("%s", msg)); if it does, the handler spins forever. It is not tied to a mirror:
 * a panic handler has no context, so it cannot reach any mirror's log callback soundly.
 */
void dmirror_host_panic(const char *msg);

/*
 * ---- Disk log (dm-mirror's "disk <log_dev> <region_size> [sync|nosync]") ----
 *
 * The legs carry only data; the superblock (leg table: each leg's uuid, size, state), the
 * write-intent bitmap and the per-leg tracking bitmaps live on a separate log device, laid out
 * from its start (docs/FORMAT.md, section 9). The core addresses the log device as leg
 * DMIRROR_LOGDEV_LEG: issue() gets metadata writes (DMIRROR_BUF_META) and flushes for it, and its
 * completions come back through dmirror_leg_done() as for any leg. meta_read() is called with
 * leg = DMIRROR_LOGDEV_LEG for the bitmaps dmirror_create_assembled() reads from the log device.
 * If the log device fails a write or flush, DMIRROR_EV_LOG_FAILED is raised once and nothing
 * more is written to it; writes go on while every leg takes them, and a write that depends on a
 * leg-state change the log could not record fails with DMIRROR_EIO. Recovery: reload with a new
 * log device (full resync).
 */
#define DMIRROR_REGION_LOG_DEVICE 2u /* struct dmirror_config.log: a separate log device */
#define DMIRROR_LOGDEV_LEG 255u      /* dmirror_leg_io.leg / meta_read leg: the log device */
#define DMIRROR_EV_LOG_FAILED 9u     /* error: the log device failed; nothing more goes to it */

/* dmirror_assemble_log() sync argument (the table's sync/nosync). */
#define DMIRROR_LOGDEV_SYNC_DEFAULT 0u /* new log: full resync of legs 1..; valid log: as recorded */
#define DMIRROR_LOGDEV_SYNC_FORCE 1u   /* "sync": every leg but the authoritative one in full */
#define DMIRROR_LOGDEV_NOSYNC 2u       /* "nosync": a new log starts with every leg in sync */

/* dmirror_assemble_log() refusals (struct dmirror_why.code; .value as noted). */
#define DMIRROR_WHY_LOG_TOO_SMALL 25u /* the log device is smaller than .value sectors */
#define DMIRROR_WHY_LOG_UNREADABLE 26u /* dmirror metadata there, but unusable (damaged both
				        * slots, a leg's superblock, a newer format) */
#define DMIRROR_WHY_LOG_FOREIGN 27u   /* another mirror's log (legs, data or region size differ:
				       * .value is what the log records) */
#define DMIRROR_WHY_LOG_IS_A_LEG 28u  /* no log, but a dmirror leg's metadata at the device's end:
				       * a leg given as the log device (not overwritten) */
/* Also used: DMIRROR_WHY_READ_SECTOR_SIZE (.value = the recorded size), DMIRROR_WHY_WRONG_SIZE
 * (.leg = the leg, .value = its recorded size), DMIRROR_WHY_NO_USABLE_LEG, DMIRROR_WHY_LEG_COUNT,
 * DMIRROR_WHY_SECTOR_SIZE / REGION_SIZE / DATA_SIZE (bad table geometry). */

/* Sectors (of sector_size) a log device must have for this geometry and legs legs: two
 * superblock slots, the write-intent bitmap and one tracking bitmap per leg. DMIRROR_EINVAL for
 * a bad geometry or leg count. */
int dmirror_log_device_sectors(uint32_t sector_size, uint64_t region_sectors,
    uint64_t data_sectors, uint32_t legs, uint64_t *out);

/*
 * Decide how a disk-log mirror starts, from the log device's two superblock slots (log->slot0 at
 * sector 0, log->slot1 at sector max(4096, sector_size) / sector_size; log->sectors its size,
 * log->sector_size the table's), optionally tail (NULL, or the two slots a dmirror leg of the
 * log device's size would have at its end, from dmirror_sb_location(): a blank log that holds
 * a leg's metadata there is refused, DMIRROR_WHY_LOG_IS_A_LEG) and the table: cfg (legs, data_sectors, sector_size,
 * region_sectors, pools; cfg->log is ignored), leg_sectors[0..cfg->legs) the size of every leg's
 * device from its table offset, sync a DMIRROR_LOGDEV_* value, uuid 16 random bytes (not all zero)
 * naming a new mirror. A log without dmirror magic in either slot (all zeros, or what another
 * program left) is a new mirror; a valid one gives its recorded state; anything else is refused
 * with why and msg (optional, msg_len bytes) saying why. On success out is filled as for
 * dmirror_assemble(): config (log = DMIRROR_REGION_LOG_DEVICE), init, present[] = 1 for every leg
 * (label[i] = i), clean = 0, dirty[0] and tracking[k] with leg = DMIRROR_LOGDEV_LEG (the log
 * device's bitmaps to read; none for a new mirror); then call dmirror_create_assembled().
 * *fresh (optional) is set to 1 for a new mirror. Pure: no callbacks, nothing written. Kernel
 * stack: about 3 KiB (it uses *out as working memory until it writes the answer there).
 */
int dmirror_assemble_log(const struct dmirror_leg_read *log, const struct dmirror_leg_read *tail,
    const struct dmirror_config *cfg,
    const uint64_t *leg_sectors, uint32_t sync, const uint8_t *uuid,
    struct dmirror_assembly *out, uint8_t *fresh, struct dmirror_why *why, char *msg,
    uint64_t msg_len);

/* 1 if the mirror's log device failed (dm status 'D'), 0 if not (or no disk log). */
int dmirror_log_failed(struct dmirror *m);

/* ---- end of the disk log block ---- */

#ifdef __cplusplus
}
#endif

#endif /* DMIRROR_H */
