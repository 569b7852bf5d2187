/*
 * mockdisk.h - memory-backed GEOM providers for the harness (a class of their own, "MOCKDISK"),
 * serviced by one thread per disk that completes bios asynchronously and out of order, like a
 * real disk behind g_down/g_up.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef MOCKDISK_H
#define MOCKDISK_H

#include "mockkern.h"

struct mock_disk {
	struct g_provider *pp;
	uint8_t *mem;
	off_t size;
	volatile int fail_eio;      /* every read/write/flush answers EIO */
	volatile int candelete;
	volatile int write_delay_ms; /* every write waits this long before it is performed */
	volatile long reads, writes, flushes, deletes;
	struct mtx mtx;
	struct bio_queue_head q;
	int qlen;
	int stop;
	pthread_t thr;
	uint32_t rng;
};

struct mock_disk *mock_disk_create(const char *name, off_t size, u_int sectorsize);
/* The provider goes away: its consumers are orphaned (as GEOM does when a disk is detached). */
void mock_disk_orphan(struct mock_disk *d);
void mock_disk_destroy(struct mock_disk *d);
/* Start the ticks/callout thread. */
void mock_kern_start(void);
/* Destroy withered geoms and providers nobody uses any more (GEOM's washer). */
void mock_wash(void);

#endif /* MOCKDISK_H */
