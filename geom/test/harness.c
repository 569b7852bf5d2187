/*
 * harness.c - run the GEOM class geom/g_dmirror.c, unmodified, against the host build of the
 * dmirror core and the userland model of GEOM in mock/: memory disks that complete bios
 * asynchronously and out of order, the control verbs as geom(8) would send them, parent bios
 * as g_down would hand them to start(), and the XML dumpconf writes for `geom dmirror list`.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * What this proves: the class's own logic (worker loop, child bios and their completion,
 * made-up completions and allocation-failure retries, control verbs, orphan handling, stop and
 * teardown with every allocation, bio and thread released). What it does not: that the class
 * behaves in a real FreeBSD kernel; mock/ is a model written here (no g_event thread: taste is
 * called directly, as GEOM's event thread would).
 *
 * Output: "ok N - ..." / "not ok N - ..." per check, then "N passed, N failed".
 */
#include "mock/mockdisk.h"

#include "dmirror.h"
#include "g_dmirror.h"

extern struct g_class g_dmirror_class;
extern struct g_class *mock_disk_classp;
struct g_class *mock_classes[3];

static int passed, failed;

static void
check(int cond, const char *fmt, ...)
{
	va_list ap;

	printf("%s %d - ", cond ? "ok" : "not ok", passed + failed + 1);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (cond)
		passed++;
	else
		failed++;
}

/* ---- control requests, as geom(8) builds them ---- */

struct ctl {
	struct gctl_req req;
	char names[32][16];
	intmax_t nums[8];
	int ints[8];
	int nnum, nint;
	uint32_t version;
	int nargs;
	char output[4096];
};

static void
ctl_param(struct ctl *c, const char *name, void *val, int len, int flag)
{
	struct gctl_req_arg *a = &c->req.arg[c->req.narg++];

	a->name = name;
	a->value = val;
	a->len = len;
	a->flag = flag;
}

static void
ctl_init(struct ctl *c, const char *verb)
{
	memset(c, 0, sizeof(*c));
	c->version = G_DMIRROR_VERSION;
	ctl_param(c, "class", (void *)(uintptr_t)"DMIRROR", 8, GCTL_PARAM_RD);
	ctl_param(c, "verb", (void *)(uintptr_t)verb, (int)strlen(verb) + 1, GCTL_PARAM_RD);
	ctl_param(c, "version", &c->version, sizeof(c->version), GCTL_PARAM_RD);
	ctl_param(c, "nargs", &c->nargs, sizeof(c->nargs), GCTL_PARAM_RD);
	ctl_param(c, "output", c->output, sizeof(c->output), GCTL_PARAM_RD | GCTL_PARAM_WR);
}

static void
ctl_arg(struct ctl *c, const char *val)
{
	snprintf(c->names[c->nargs], sizeof(c->names[0]), "arg%d", c->nargs);
	ctl_param(c, c->names[c->nargs], (void *)(uintptr_t)val, (int)strlen(val) + 1,
	    GCTL_PARAM_RD | GCTL_PARAM_ASCII);
	c->nargs++;
}

static void
ctl_num(struct ctl *c, const char *name, intmax_t v)
{
	c->nums[c->nnum] = v;
	ctl_param(c, name, &c->nums[c->nnum++], sizeof(intmax_t), GCTL_PARAM_RD);
}

static void
ctl_flag(struct ctl *c, const char *name, int v)
{
	c->ints[c->nint] = v;
	ctl_param(c, name, &c->ints[c->nint++], sizeof(int), GCTL_PARAM_RD);
}

static void
ctl_str(struct ctl *c, const char *name, const char *v)
{
	ctl_param(c, name, (void *)(uintptr_t)v, (int)strlen(v) + 1,
	    GCTL_PARAM_RD | GCTL_PARAM_ASCII);
}

/* Run it; returns the error text ("" if none). */
static const char *
ctl_run(struct ctl *c)
{
	const char *verb = c->req.arg[1].value;

	g_topology_lock();
	g_dmirror_class.ctlreq(&c->req, &g_dmirror_class, verb);
	/* What GEOM's event thread does next: retastes queued by closes, posted events. */
	mock_run_events();
	g_topology_unlock();
	return (c->req.nerror ? c->req.error : "");
}

static const char *
ctl_simple(const char *verb, const char *a0, const char *a1, const char *a2)
{
	static struct ctl c;

	ctl_init(&c, verb);
	if (a0 != NULL)
		ctl_arg(&c, a0);
	if (a1 != NULL)
		ctl_arg(&c, a1);
	if (a2 != NULL)
		ctl_arg(&c, a2);
	return (ctl_run(&c));
}

/* ---- the mirror as a consumer sees it ---- */

static struct g_provider *
mirror_provider(const char *name)
{
	struct g_geom *gp;
	struct g_provider *pp;
	char full[64];

	snprintf(full, sizeof(full), "dmirror/%s", name);
	g_topology_lock();
	LIST_FOREACH(gp, &g_dmirror_class.geom, geom) {
		LIST_FOREACH(pp, &gp->provider, provider) {
			if (strcmp(pp->name, full) == 0 && !(pp->flags & G_PF_WITHER)) {
				g_topology_unlock();
				return (pp);
			}
		}
	}
	g_topology_unlock();
	return (NULL);
}

/* The XML `geom dmirror list` would show for the mirror (geom and its consumers). */
static void
mirror_xml(const char *name, char *out, size_t outlen)
{
	struct g_geom *gp;
	struct g_consumer *cp;
	struct sbuf *sb = sbuf_new_auto();

	g_topology_lock();
	LIST_FOREACH(gp, &g_dmirror_class.geom, geom) {
		if (gp->softc == NULL || strcmp(gp->name, name) != 0)
			continue;
		gp->dumpconf(sb, "", gp, NULL, NULL);
		LIST_FOREACH(cp, &gp->consumer, consumer) {
			sbuf_printf(sb, "<consumer %s>\n", cp->provider ? cp->provider->name : "?");
			gp->dumpconf(sb, "  ", gp, cp, NULL);
		}
	}
	g_topology_unlock();
	sbuf_finish(sb);
	snprintf(out, outlen, "%s", sbuf_data(sb));
	sbuf_delete(sb);
}

static int
wait_xml(const char *name, const char *needle, int ms)
{
	char xml[8192];

	for (int t = 0; t < ms; t += 10) {
		mirror_xml(name, xml, sizeof(xml));
		if (strstr(xml, needle) != NULL)
			return (1);
		usleep(10000);
	}
	fprintf(stderr, "# waited %d ms for \"%s\"; XML now:\n%s", ms, needle, xml);
	return (0);
}

struct pio {
	struct bio bio;
	pthread_mutex_t m;
	pthread_cond_t c;
	int done;
	int completions;
};

static void
pio_done(struct bio *bp)
{
	struct pio *p = (struct pio *)bp;

	pthread_mutex_lock(&p->m);
	p->done = 1;
	p->completions++;
	pthread_cond_broadcast(&p->c);
	pthread_mutex_unlock(&p->m);
}

static void
pio_start(struct pio *p, struct g_provider *pp, int cmd, off_t off, off_t len, void *data)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->m, NULL);
	pthread_cond_init(&p->c, NULL);
	p->bio.bio_cmd = (uint16_t)cmd;
	p->bio.bio_offset = off;
	p->bio.bio_length = len;
	p->bio.bio_data = data;
	p->bio.bio_done = pio_done;
	p->bio.bio_to = pp;
	pp->geom->start(&p->bio);
}

static int
pio_wait(struct pio *p)
{
	pthread_mutex_lock(&p->m);
	while (!p->done)
		pthread_cond_wait(&p->c, &p->m);
	pthread_mutex_unlock(&p->m);
	usleep(0);
	if (p->completions != 1)
		return (-1000);
	return (p->bio.bio_error);
}

static uint32_t rng = 1;
static uint32_t
rnd(void)
{
	rng = rng * 1664525u + 1013904223u;
	return (rng >> 8);
}

#define SS 512
#define DISK_BYTES (8 << 20)
#define QD 16

static uint8_t *model;
static off_t msize;

/* n random writes of 1..64 sectors, QD in flight; the model follows. Returns failures. */
static int
random_writes(struct g_provider *pp, int n)
{
	struct pio *ps = calloc(QD, sizeof(*ps));
	uint8_t *bufs = calloc(QD, 64 * SS);
	int bad = 0, inflight = 0, slot = 0;

	for (int i = 0; i < n || inflight > 0; i++) {
		if (inflight == QD || i >= n) {
			/* wait for the oldest */
			int s = (slot + QD - inflight) % QD;
			if (pio_wait(&ps[s]) != 0)
				bad++;
			inflight--;
			if (i >= n)
				continue;
		}
		off_t sectors = msize / SS;
		off_t cnt = 1 + rnd() % 64;
		off_t first = rnd() % (sectors - cnt);
		uint8_t *b = bufs + (size_t)slot * 64 * SS;
		for (off_t j = 0; j < cnt * SS; j++)
			b[j] = (uint8_t)rnd();
		/* Overlapping writes in flight may land in either order: keep them apart. */
		memcpy(model + first * SS, b, (size_t)(cnt * SS));
		pio_start(&ps[slot], pp, BIO_WRITE, first * SS, cnt * SS, b);
		inflight++;
		slot = (slot + 1) % QD;
		if (inflight == QD) {
			/* drain fully so that no two writes in flight overlap */
			while (inflight > 0) {
				int s = (slot + QD - inflight) % QD;
				if (pio_wait(&ps[s]) != 0)
					bad++;
				inflight--;
			}
		}
	}
	(free)(ps);
	(free)(bufs);
	return (bad);
}

static int
read_all_matches(struct g_provider *pp)
{
	uint8_t *buf = (malloc)(64 * 1024);
	struct pio p;
	int ok = 1;

	for (off_t off = 0; off < msize; off += 64 * 1024) {
		off_t len = msize - off < 64 * 1024 ? msize - off : 64 * 1024;
		pio_start(&p, pp, BIO_READ, off, len, buf);
		if (pio_wait(&p) != 0 || memcmp(buf, model + off, (size_t)len) != 0) {
			ok = 0;
			break;
		}
	}
	(free)(buf);
	return (ok);
}

static int
disk_matches(struct mock_disk *d)
{
	return (memcmp(d->mem, model, (size_t)msize) == 0);
}

/* Whether either superblock slot of d holds anything. */
static int
has_sb(struct mock_disk *d)
{
	uint64_t s0, s1, bytes;
	int nz = 0;

	if (dmirror_sb_location((uint64_t)d->size / SS, SS, &s0, &s1, &bytes) != 0)
		return (0);
	for (uint64_t i = 0; i < bytes; i++)
		nz |= d->mem[s0 * SS + i] | d->mem[s1 * SS + i];
	return (nz != 0);
}

/* What d's own superblock says about it (dmirror_identify() on its memory). */
static int
identify_disk(struct mock_disk *d, struct dmirror_identity *id)
{
	struct dmirror_leg_read rd;
	struct dmirror_why why;
	uint64_t s0, s1, bytes;

	if (dmirror_sb_location((uint64_t)d->size / SS, SS, &s0, &s1, &bytes) != 0)
		return (-1);
	memset(&rd, 0, sizeof(rd));
	rd.slot0 = d->mem + s0 * SS;
	rd.slot0_len = bytes;
	rd.slot1 = d->mem + s1 * SS;
	rd.slot1_len = bytes;
	rd.sectors = (uint64_t)d->size / SS;
	rd.sector_size = SS;
	return (dmirror_identify(&rd, id, &why));
}

static long
allocs(const char *type)
{
	struct malloc_type *t = mock_find_type(type);

	return (t != NULL ? t->allocs : -1);
}

int
main(void)
{
	struct mock_disk *d0, *d1, *d2, *d3, *d4;
	struct g_provider *pp;
	struct g_geom *tgp;
	struct g_consumer *tcp;
	struct ctl c;
	const char *err;
	char xml[8192];
	struct pio p;
	int rc;

	mock_classes[0] = &g_dmirror_class;
	mock_classes[1] = mock_disk_classp;
	LIST_INIT(&g_dmirror_class.geom);
	LIST_INIT(&mock_disk_classp->geom);
	mock_kern_start();
	g_dmirror_class.init(&g_dmirror_class);
	d0 = mock_disk_create("md0", DISK_BYTES, SS);
	d1 = mock_disk_create("md1", DISK_BYTES, SS);
	d2 = mock_disk_create("md2", DISK_BYTES + 1024 * 1024, SS);
	d3 = mock_disk_create("md3", DISK_BYTES, SS);
	d4 = mock_disk_create("md4", DISK_BYTES, SS);
	d0->candelete = d1->candelete = 1;

	/* label */
	ctl_init(&c, "label");
	ctl_arg(&c, "m0");
	ctl_arg(&c, "md0");
	ctl_arg(&c, "/dev/md1");
	ctl_num(&c, G_DMIRROR_P_REGIONSIZE, 64 * 1024);
	err = ctl_run(&c);
	check(err[0] == '\0', "label m0 md0 /dev/md1 -r 64k: \"%s\"", err);
	pp = mirror_provider("m0");
	check(pp != NULL, "provider dmirror/m0 exists after label returned");
	check(has_sb(d0) && has_sb(d1), "label wrote superblocks to both legs before returning");
	if (pp == NULL)
		goto out;
	msize = pp->mediasize;
	check(msize > 0 && msize < DISK_BYTES && msize % SS == 0 && pp->sectorsize == SS,
	    "mediasize %jd leaves room for the metadata", (intmax_t)msize);
	model = calloc(1, (size_t)msize);
	memcpy(model, d0->mem, (size_t)msize); /* label keeps leg 0's data */
	err = ctl_simple("label", "m0", "md3", NULL);
	check(strstr(err, "already exists") != NULL, "label of an existing name refused: \"%s\"",
	    err);
	err = ctl_simple("label", "m9", "md0", NULL);
	check(err[0] != '\0', "label on a provider that is a running leg refused: \"%s\"", err);
	check(wait_xml("m0", "<State>COMPLETE</State>", 20000),
	    "initial resync of leg 1 finishes (State COMPLETE)");

	/* I/O */
	check(random_writes(pp, 300) == 0, "300 random writes complete without error");
	check(read_all_matches(pp), "every sector reads back what was written");
	check(disk_matches(d0) && disk_matches(d1), "both legs hold the same data as the model");
	long fl0 = d0->flushes, fl1 = d1->flushes;
	pio_start(&p, pp, BIO_FLUSH, 0, 0, NULL);
	rc = pio_wait(&p);
	check(rc == 0 && d0->flushes > fl0 && d1->flushes > fl1,
	    "BIO_FLUSH completes (%d) and reaches both legs", rc);
	{
		int cd = 0;
		struct pio g;
		memset(&g, 0, sizeof(g));
		pthread_mutex_init(&g.m, NULL);
		pthread_cond_init(&g.c, NULL);
		g.bio.bio_cmd = BIO_GETATTR;
		g.bio.bio_attribute = "GEOM::candelete";
		g.bio.bio_length = sizeof(int);
		g.bio.bio_data = (caddr_t)&cd;
		g.bio.bio_done = pio_done;
		g.bio.bio_to = pp;
		pp->geom->start(&g.bio);
		rc = pio_wait(&g);
		check(rc == 0 && cd == 1, "GEOM::candelete answers 1 when the legs can delete");
	}
	{
		long del0 = d0->deletes;
		pio_start(&p, pp, BIO_DELETE, 0, 8 * SS, NULL);
		rc = pio_wait(&p);
		memset(model, 0, 8 * SS);
		check(rc == 0 && d0->deletes > del0 && disk_matches(d0) && disk_matches(d1),
		    "BIO_DELETE completes (%d) and reaches the legs", rc);
	}
	pio_start(&p, pp, BIO_READ, msize, SS, model);
	rc = pio_wait(&p);
	check(rc != 0, "a read past the end fails (%d)", rc);

	/* a leg with I/O errors */
	d1->fail_eio = 1;
	check(random_writes(pp, 40) == 0, "writes still succeed while leg 1 returns EIO");
	check(wait_xml("m0", "<State>DEGRADED</State>", 10000), "mirror DEGRADED");
	mirror_xml("m0", xml, sizeof(xml));
	check(strstr(xml, "<Slot1>FAILED md1</Slot1>") != NULL, "leg 1 shown FAILED");
	check(read_all_matches(pp), "reads correct with leg 1 failed");
	d1->fail_eio = 0;
	long fl_before = d1->flushes;
	err = ctl_simple("rebuild", "m0", "md1", NULL);
	check(err[0] == '\0', "rebuild m0 md1: \"%s\"", err);
	check(wait_xml("m0", "<State>COMPLETE</State>", 20000), "rebuilt leg back IN_SYNC");
	check(disk_matches(d1), "the rebuilt leg holds the mirror's data");
	check(d1->flushes > fl_before + 1, "resync writes (FUA) were followed by flushes of the "
	    "target (%ld)", d1->flushes - fl_before);
	err = ctl_simple("rebuild", "m0", "md3", NULL);
	check(strstr(err, "not a leg") != NULL, "rebuild of a non-leg refused: \"%s\"", err);
	/* rebuild of a leg that is in sync: taken out by request, copied again in full */
	fl_before = d1->flushes;
	err = ctl_simple("rebuild", "m0", "md1", NULL);
	check(err[0] == '\0', "rebuild m0 md1 while it is in sync: \"%s\"", err);
	check(wait_xml("m0", "<State>COMPLETE</State>", 20000) && d1->flushes > fl_before + 1,
	    "the in-sync leg was copied again and is back IN_SYNC (%ld flushes)",
	    d1->flushes - fl_before);
	check(disk_matches(d1), "it still holds the mirror's data");

	/* allocation failures: every 3rd child bio cannot be had */
	mock_new_bio_fail_every = 3;
	check(random_writes(pp, 100) == 0, "100 writes while every 3rd g_new_bio fails");
	check(read_all_matches(pp), "reads correct under allocation failures");
	mock_new_bio_fail_every = 0;
	check(disk_matches(d0) && disk_matches(d1), "both legs correct after allocation failures");

	/* configure */
	ctl_init(&c, "configure");
	ctl_arg(&c, "m0");
	ctl_str(&c, G_DMIRROR_P_BALANCE, "load");
	err = ctl_run(&c);
	g_topology_lock();
	g_topology_unlock();
	check(err[0] == '\0' && wait_xml("m0", "<Balance>load</Balance>", 10000),
	    "configure -b load: \"%s\"", err);
	ctl_init(&c, "configure");
	ctl_arg(&c, "m0");
	ctl_str(&c, G_DMIRROR_P_BALANCE, "split:8");
	err = ctl_run(&c);
	{
		long r0 = d0->reads, r1 = d1->reads;
		check(err[0] == '\0' && read_all_matches(pp) && d0->reads > r0 && d1->reads > r1,
		    "configure -b split:8: large reads split across both legs read back right: "
		    "\"%s\"", err);
	}
	ctl_init(&c, "configure");
	ctl_arg(&c, "m0");
	ctl_str(&c, G_DMIRROR_P_BALANCE, "fastest");
	err = ctl_run(&c);
	check(strstr(err, "Unknown balance") != NULL, "configure -b fastest refused: \"%s\"", err);
	err = ctl_simple("insert", "m0", "md2", NULL);
	check(strstr(err, "no free slot") != NULL, "insert into a full mirror refused: \"%s\"", err);

	/* a leg that disappears */
	mock_disk_orphan(d1);
	check(random_writes(pp, 20) == 0, "writes succeed after leg 1's disk went away");
	check(wait_xml("m0", "<Slot1>MISSING -</Slot1>", 10000),
	    "leg 1 MISSING and its consumer detached");
	g_topology_lock();
	check(LIST_EMPTY(&d1->pp->consumers), "nothing of dmirror stays attached to the gone disk");
	g_topology_unlock();
	err = ctl_simple("forget", "m0", NULL, NULL);
	check(err[0] == '\0', "forget m0: \"%s\"", err);
	check(wait_xml("m0", "<Slot1>EMPTY -</Slot1>", 10000), "slot 1 EMPTY after forget");
	err = ctl_simple("insert", "m0", "md2", NULL);
	check(err[0] == '\0', "insert m0 md2: \"%s\"", err);
	check(wait_xml("m0", "<State>COMPLETE</State>", 20000), "inserted leg resynced");
	check(memcmp(d2->mem, model, (size_t)msize) == 0, "the inserted leg holds the data");
	check(read_all_matches(pp), "reads correct after the replacement");

	/* clear of a disk without metadata changes nothing */
	memset(d3->mem, 0x3c, DISK_BYTES);
	err = ctl_simple("clear", "md3", NULL, NULL);
	{
		int same = 1;
		for (off_t i = 0; i < DISK_BYTES; i++)
			if (d3->mem[i] != 0x3c) {
				same = 0;
				break;
			}
		check(err[0] != '\0' && same, "clear of a disk without metadata refused, disk "
		    "untouched: \"%s\"", err);
	}

	/* remove: the leg leaves, its superblocks are erased, its data stays a plain copy */
	{
		uint64_t s0, s1, bytes;
		int zero = 1;
		err = ctl_simple("remove", "m0", "md2", NULL);
		check(err[0] == '\0', "remove m0 md2: \"%s\"", err);
		check(wait_xml("m0", "<Slot1>EMPTY -</Slot1>", 10000), "slot 1 EMPTY after remove");
		dmirror_sb_location((DISK_BYTES + 1024 * 1024) / SS, SS, &s0, &s1, &bytes);
		for (uint64_t i = 0; i < bytes; i++)
			if (d2->mem[s0 * SS + i] | d2->mem[s1 * SS + i])
				zero = 0;
		check(zero && memcmp(d2->mem, model, (size_t)msize) == 0,
		    "the removed disk has no superblock and still holds the data");
		err = ctl_simple("remove", "m0", "md0", NULL);
		check(strstr(err, "no in-sync leg") != NULL,
		    "removing the last in-sync leg refused: \"%s\"", err);
		check(read_all_matches(pp), "reads correct on the remaining leg");
	}

	/* stop refused while open, then done */
	g_topology_lock();
	tgp = g_new_geomf(mock_disk_classp, "user");
	tcp = g_new_consumer(tgp);
	g_attach(tcp, pp);
	rc = g_access(tcp, 1, 0, 0);
	g_topology_unlock();
	check(rc == 0, "the mirror can be opened");
	err = ctl_simple("stop", "m0", NULL, NULL);
	check(strstr(err, "is open") != NULL, "stop of an open mirror refused: \"%s\"", err);
	g_topology_lock();
	g_access(tcp, -1, 0, 0);
	g_detach(tcp);
	g_destroy_consumer(tcp);
	g_destroy_geom(tgp);
	g_topology_unlock();
	check(has_sb(d0), "md0 has superblocks before stop");
	err = ctl_simple("stop", "m0", NULL, NULL);
	check(err[0] == '\0', "stop m0: \"%s\"", err);
	check(has_sb(d0), "stop leaves md0's superblocks in place");
	check(mirror_provider("m0") == NULL, "provider gone after stop");
	for (int i = 0; i < 1000 && mock_live_kprocs > 1; i++)
		usleep(10000);
	check(mock_live_kprocs == 1, "worker thread exited (the class helper remains)");

	/* label -n with reserved slots, then destroy clears the superblocks */
	ctl_init(&c, "label");
	ctl_arg(&c, "m1");
	ctl_arg(&c, "md3");
	ctl_arg(&c, "md4");
	ctl_flag(&c, G_DMIRROR_P_NOSYNC, 1);
	ctl_num(&c, G_DMIRROR_P_SLOTS, 3);
	ctl_str(&c, G_DMIRROR_P_BALANCE, "prefer:md4");
	err = ctl_run(&c);
	check(err[0] == '\0', "label -n -s 3 -b prefer:md4 m1 md3 md4: \"%s\"", err);
	check(wait_xml("m1", "<Slot2>EMPTY -</Slot2>", 10000) &&
	    wait_xml("m1", "<State>COMPLETE</State>", 10000) &&
	    wait_xml("m1", "<Balance>prefer:1</Balance>", 10000),
	    "m1: reserved slot 2 EMPTY, COMPLETE at once, prefer leg 1");
	{
		uint64_t s0, s1, bytes;
		int nonzero = 0, zero = 1;
		dmirror_sb_location(DISK_BYTES / SS, SS, &s0, &s1, &bytes);
		for (uint64_t i = 0; i < bytes; i++)
			nonzero |= d3->mem[s0 * SS + i] | d3->mem[s1 * SS + i];
		check(nonzero != 0, "label wrote superblocks to md3");
		err = ctl_simple("destroy", "m1", NULL, NULL);
		check(err[0] == '\0', "destroy m1: \"%s\"", err);
		for (uint64_t i = 0; i < bytes; i++)
			if (d3->mem[s0 * SS + i] | d3->mem[s1 * SS + i] |
			    d4->mem[s0 * SS + i] | d4->mem[s1 * SS + i])
				zero = 0;
		check(zero, "destroy erased both superblock slots of both legs");
	}
	{
		struct mock_disk *tiny = mock_disk_create("tiny", 8 * 1024, SS);
		err = ctl_simple("label", "m2", "tiny", NULL);
		check(strstr(err, "too small") != NULL, "label on an 8 KiB disk refused: \"%s\"",
		    err);
		g_topology_lock();
		check(LIST_EMPTY(&tiny->pp->consumers), "the refused label left nothing attached");
		g_topology_unlock();
	}
	/* stop -f of an open mirror: its users are orphaned, it stops */
	err = ctl_simple("label", "m3", "md3", "md4");
	check(err[0] == '\0' && wait_xml("m3", "<State>COMPLETE</State>", 20000),
	    "label m3 md3 md4, in sync: \"%s\"", err);
	pp = mirror_provider("m3");
	g_topology_lock();
	tgp = g_new_geomf(mock_disk_classp, "user2");
	tcp = g_new_consumer(tgp);
	g_attach(tcp, pp);
	rc = g_access(tcp, 1, 1, 0);
	g_topology_unlock();
	ctl_init(&c, "stop");
	ctl_arg(&c, "m3");
	ctl_flag(&c, G_DMIRROR_P_FORCE, 1);
	err = ctl_run(&c);
	check(rc == 0 && err[0] == '\0' && (tcp->flags & G_CF_ORPHAN),
	    "stop -f of an open mirror: \"%s\", its user orphaned", err);
	g_topology_lock();
	g_access(tcp, -1, -1, 0);
	g_detach(tcp);
	g_destroy_consumer(tcp);
	g_destroy_geom(tgp);
	g_topology_unlock();
	/*
	 * Taste: m3's legs still carry its metadata. md3 alone: the mirror waits for md4, then
	 * (kern.geom.dmirror.timeout, 4 s) starts without it; writes are made; md4 comes back and
	 * rejoins incrementally; the data is right on both.
	 */
	{
		struct g_geom *r;
		g_topology_lock();
		r = g_dmirror_class.taste(&g_dmirror_class, d3->pp, 0);
		g_topology_unlock();
		check(r != NULL, "taste of md3 recognizes a leg of m3");
		usleep(500000);
		check(mirror_provider("m3") == NULL && wait_xml("m3", "<State>STARTING</State>", 10000),
		    "m3 waits for its other leg");
		for (int i = 0; i < 2000 && mirror_provider("m3") == NULL; i++)
			usleep(10000);
		pp = mirror_provider("m3");
		check(pp != NULL, "m3 assembled without md4 after the timeout");
		if (pp != NULL) {
			check(wait_xml("m3", "<Slot1>MISSING -</Slot1>", 10000), "m3 slot 1 MISSING");
			msize = pp->mediasize;
			memcpy(model, d3->mem, (size_t)msize);
			check(read_all_matches(pp), "m3 reads back md3's data after assembly");
			{
				/* three writes into the first 64 KiB: one region changes */
				static uint8_t wb[3][8 * SS];
				int bad = 0;
				for (int i = 0; i < 3; i++) {
					memset(wb[i], 0x70 + i, sizeof(wb[i]));
					memcpy(model + i * 16 * SS, wb[i], sizeof(wb[i]));
					pio_start(&p, pp, BIO_WRITE, i * 16 * SS, sizeof(wb[i]), wb[i]);
					bad |= pio_wait(&p);
				}
				check(bad == 0, "writes to degraded m3");
			}
			long w4 = d4->writes;
			g_topology_lock();
			r = g_dmirror_class.taste(&g_dmirror_class, d4->pp, 0);
			g_topology_unlock();
			check(r != NULL, "taste of md4 while m3 runs: accepted as its returning leg");
			check(wait_xml("m3", "<State>COMPLETE</State>", 20000),
			    "md4 rejoined and is in sync again");
			check(disk_matches(d4) && disk_matches(d3), "both legs of m3 hold the data");
			check(d4->writes - w4 < msize / (128 * 1024),
			    "rejoin copied only what changed (%ld writes; a full copy takes %jd+)",
			    d4->writes - w4, (intmax_t)(msize / (128 * 1024)));
			err = ctl_simple("stop", "m3", NULL, NULL);
			check(err[0] == '\0', "stop m3: \"%s\"", err);
		}
		g_topology_lock();
		r = g_dmirror_class.taste(&g_dmirror_class, d0->pp, 0);
		g_topology_unlock();
		for (int i = 0; i < 1000 && mirror_provider("m0") == NULL; i++)
			usleep(10000);
		pp = mirror_provider("m0");
		check(r != NULL && pp != NULL, "taste of md0 brings m0 back at once (its only leg)");
		if (pp != NULL) {
			err = ctl_simple("stop", "m0", NULL, NULL);
			check(err[0] == '\0', "stop m0 again: \"%s\"", err);
		}
	}
	/* dump and clear of a stopped mirror's leg */
	ctl_init(&c, "dump");
	ctl_arg(&c, "md4");
	err = ctl_run(&c);
	check(err[0] == '\0' && strstr(c.output, "md4: mirror m3 uuid ") != NULL &&
	    strstr(c.output, "this device: slot 1 of 2") != NULL &&
	    strstr(c.output, "slot 1: IN_SYNC") != NULL,
	    "dump md4 describes m3's metadata: \"%s\"", err);
	err = ctl_simple("clear", "md4", NULL, NULL);
	check(err[0] == '\0' && !has_sb(d4) && has_sb(d3), "clear md4 erases its superblocks "
	    "only: \"%s\"", err);
	err = ctl_simple("stop", "nosuch", NULL, NULL);
	check(strstr(err, "No such mirror") != NULL, "stop of an unknown mirror: \"%s\"", err);
	{
		struct ctl v;
		ctl_init(&v, "stop");
		v.version = G_DMIRROR_VERSION + 1;
		ctl_arg(&v, "m0");
		err = ctl_run(&v);
		check(strstr(err, "out of sync") != NULL, "a request of another version refused");
	}

	/*
	 * Boot with a leg mid-rebuild: m4's second leg is being rebuilt (slow writes) when the
	 * mirror stops, so its own superblock says REBUILDING with a checkpoint. At "boot", taste
	 * sees that leg first: it must be recognised as a member of m4 (before dmirror_identify,
	 * taste assembled each device alone, which finds no usable leg in a rebuilding one, and
	 * ignored it); once the in-sync leg is tasted too, m4 assembles with both and the rebuild
	 * resumes from the checkpoint instead of starting over.
	 */
	{
		struct mock_disk *d5 = mock_disk_create("md5", DISK_BYTES, SS);
		struct mock_disk *d6 = mock_disk_create("md6", DISK_BYTES, SS);
		struct dmirror_identity idn;
		struct g_geom *r;
		uint64_t checkpoint = 0;
		long w6;
		int got = 0;

		for (off_t i = 0; i < DISK_BYTES; i++)
			d5->mem[i] = (uint8_t)(i * 7 + (i >> 12));
		d6->write_delay_ms = 3;
		ctl_init(&c, "label");
		ctl_arg(&c, "m4");
		ctl_arg(&c, "md5");
		ctl_arg(&c, "md6");
		ctl_num(&c, G_DMIRROR_P_REGIONSIZE, 16 * 1024);
		err = ctl_run(&c);
		check(err[0] == '\0', "label m4 md5 md6 -r 16k (md6 rebuilds from md5): \"%s\"",
		    err);
		/* until md6's own superblock records a checkpoint past a third of the regions */
		for (int i = 0; i < 3000 && !got; i++) {
			got = identify_disk(d6, &idn) == 0 &&
			    idn.state == DMIRROR_LEG_REBUILDING &&
			    idn.rebuild_checkpoint * 3 > idn.data_sectors / 32;
			if (!got)
				usleep(2000);
		}
		check(got, "md6's superblock records its rebuild checkpoint (region %ju)",
		    (uintmax_t)(got ? idn.rebuild_checkpoint : 0));
		err = ctl_simple("stop", "m4", NULL, NULL);
		check(err[0] == '\0', "stop m4 mid-rebuild: \"%s\"", err);
		rc = identify_disk(d6, &idn);
		checkpoint = idn.rebuild_checkpoint;
		check(rc == 0 && idn.state == DMIRROR_LEG_REBUILDING && idn.leg == 1 &&
		    checkpoint > 0 && checkpoint < idn.data_sectors / 32,
		    "after the stop md6 says REBUILDING at region %ju of %ju", (uintmax_t)checkpoint,
		    (uintmax_t)(idn.data_sectors / 32));
		d6->write_delay_ms = 0;
		w6 = d6->writes;
		long first = w6; /* writes of the first part: label's superblocks + regions
				  * 0..checkpoint */

		/* boot: the rebuilding leg is tasted first */
		g_topology_lock();
		r = g_dmirror_class.taste(&g_dmirror_class, d6->pp, 0);
		g_topology_unlock();
		check(r != NULL && wait_xml("m4", "<State>STARTING</State>", 10000) &&
		    mirror_provider("m4") == NULL,
		    "taste of the mid-rebuild md6 recognises m4, which waits for its other leg");
		g_topology_lock();
		r = g_dmirror_class.taste(&g_dmirror_class, d5->pp, 0);
		g_topology_unlock();
		for (int i = 0; i < 1000 && mirror_provider("m4") == NULL; i++)
			usleep(10000);
		pp = mirror_provider("m4");
		check(r != NULL && pp != NULL, "taste of md5 completes m4: assembled at once");
		if (pp != NULL) {
			mirror_xml("m4", xml, sizeof(xml));
			check(strstr(xml, "<Slot1>REBUILDING md6</Slot1>") != NULL ||
			    strstr(xml, "<Slot1>IN_SYNC md6</Slot1>") != NULL,
			    "md6 is m4's leg 1 again");
			check(wait_xml("m4", "<State>COMPLETE</State>", 20000),
			    "the rebuild of md6 finishes");
			msize = pp->mediasize;
			check(memcmp(d6->mem, d5->mem, (size_t)msize) == 0,
			    "md6 holds m4's data");
			/*
			 * Writes per copied region (data, and the bitmap and superblock writes
			 * that go with it) as measured in the first part: resuming from the
			 * checkpoint must cost about the regions left, far less than a full copy.
			 */
			long rest = d6->writes - w6, regions = (long)(idn.data_sectors / 32);
			long full = first * regions / (long)checkpoint;
			check(rest < full - first / 2,
			    "the rebuild resumed from region %ju: %ld writes to md6 (%ld before "
			    "the stop; a full copy is about %ld)", (uintmax_t)checkpoint, rest,
			    first, full);
			err = ctl_simple("stop", "m4", NULL, NULL);
			check(err[0] == '\0', "stop m4: \"%s\"", err);
		}
	}

	/*
	 * A leg that failed (I/O errors) and then went away is not taken back when its device is
	 * tasted again: only rebuild/insert give it back (found in a real FreeBSD kernel, where
	 * it rejoined at once).
	 */
	{
		struct mock_disk *d8 = mock_disk_create("md8", DISK_BYTES, SS);
		struct mock_disk *d9 = mock_disk_create("md9", DISK_BYTES, SS);
		struct mock_disk *d10;
		struct g_provider *p5;

		err = ctl_simple("label", "m5", "md8", "md9");
		check(err[0] == '\0' && wait_xml("m5", "<State>COMPLETE</State>", 20000),
		    "label m5 md8 md9, in sync: \"%s\"", err);
		p5 = mirror_provider("m5");
		if (p5 != NULL) {
			msize = p5->mediasize;
			memcpy(model, d8->mem, (size_t)msize);
			d9->fail_eio = 1;
			check(random_writes(p5, 10) == 0 &&
			    wait_xml("m5", "<Slot1>FAILED md9</Slot1>", 10000),
			    "writes succeed, md9 FAILED");
			d9->fail_eio = 0;
			mock_disk_orphan(d9);
			check(wait_xml("m5", "<Slot1>FAILED -</Slot1>", 10000),
			    "md9 gone: its slot stays FAILED");
			/* The same device back (its contents, under another name). */
			d10 = mock_disk_create("md10", DISK_BYTES, SS);
			memcpy(d10->mem, d9->mem, DISK_BYTES);
			g_topology_lock();
			(void)g_dmirror_class.taste(&g_dmirror_class, d10->pp, 0);
			mock_run_events();
			g_topology_unlock();
			usleep(500000);
			check(wait_xml("m5", "<Slot1>FAILED -</Slot1>", 2000),
			    "the failed leg's device tasted again: not taken back");
			g_topology_lock();
			mock_run_events();
			check(LIST_EMPTY(&d10->pp->consumers), "nothing of dmirror stays attached to it");
			g_topology_unlock();
			err = ctl_simple("insert", "m5", "md10", NULL);
			check(err[0] == '\0' && wait_xml("m5", "<State>COMPLETE</State>", 20000) &&
			    disk_matches(d10), "insert gives it back, rebuilt in full: \"%s\"", err);
			err = ctl_simple("stop", "m5", NULL, NULL);
			check(err[0] == '\0', "stop m5: \"%s\"", err);
		}
	}

	/* everything released */
	for (int i = 0; i < 1000 && mock_live_kprocs > 1; i++)
		usleep(10000);
	g_dmirror_class.fini(&g_dmirror_class);
	/* fini returns once the helper said it stops; its kproc_exit follows */
	for (int i = 0; i < 1000 && mock_live_kprocs > 0; i++)
		usleep(10000);
	g_topology_lock();
	mock_wash();
	check(LIST_EMPTY(&g_dmirror_class.geom), "no dmirror geom left");
	g_topology_unlock();
	check(mock_live_kprocs == 0, "no worker thread left (%d)", mock_live_kprocs);
	check(allocs("dmirror_data") == 0, "every dmirror allocation freed (%ld left)",
	    allocs("dmirror_data"));
	check(allocs("GEOM") == 0, "every g_read_data buffer freed (%ld left)", allocs("GEOM"));
	check(mock_bios == 0, "every bio destroyed (%ld left)", mock_bios);
out:
	printf("%d passed, %d failed\n", passed, failed);
	(void)d2;
	return (failed != 0 || passed == 0);
}
