/*
 * mockkern.c - the userland model of the kernel and GEOM behind mockkern.h / mockdisk.h.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <time.h>

#include "mockdisk.h"

int hz = 1000;
volatile int ticks;
u_long maxphys = 128 * 1024;
MALLOC_DEFINE(M_GEOM, "GEOM", "GEOM");
volatile int mock_new_bio_fail_every;
volatile long mock_bios;
volatile int mock_live_kprocs;

static pthread_mutex_t mock_lock = PTHREAD_MUTEX_INITIALIZER; /* counters, callouts, sleep */
static pthread_cond_t mock_cond = PTHREAD_COND_INITIALIZER;
static unsigned long mock_wake_gen;
static long mock_new_bio_calls;

/* ---- memory ---- */

static struct malloc_type *mock_types[16];

void
mock_register_type(struct malloc_type *type)
{
	for (int i = 0; i < 16; i++) {
		if (mock_types[i] == NULL) {
			mock_types[i] = type;
			return;
		}
	}
}

struct malloc_type *
mock_find_type(const char *name)
{
	for (int i = 0; i < 16 && mock_types[i] != NULL; i++) {
		if (strcmp(mock_types[i]->name, name) == 0)
			return (mock_types[i]);
	}
	return (NULL);
}

void *
mock_malloc(size_t size, struct malloc_type *type, int flags)
{
	void *p;

	p = (calloc)(1, size > 0 ? size : 1);
	if (p == NULL) {
		if (flags & M_WAITOK)
			mock_panic("malloc(%zu, M_WAITOK) failed", size);
		return (NULL);
	}
	if (!(flags & M_ZERO))
		memset(p, 0xa5, size); /* catch reliance on zeroed memory */
	__atomic_add_fetch(&type->allocs, 1, __ATOMIC_SEQ_CST);
	return (p);
}

void
mock_free(void *p, struct malloc_type *type)
{

	if (p == NULL)
		return;
	__atomic_sub_fetch(&type->allocs, 1, __ATOMIC_SEQ_CST);
	(free)(p);
}

size_t
mock_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size > 0) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return (n);
}

void
arc4random_buf(void *buf, size_t len)
{
	static uint64_t s = 0x9e3779b97f4a7c15ull;
	uint8_t *b = buf;
	size_t i;

	pthread_mutex_lock(&mock_lock);
	for (i = 0; i < len; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		b[i] = (uint8_t)s;
	}
	pthread_mutex_unlock(&mock_lock);
}

void
mock_panic(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "panic: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

/* ---- locks, sleep ---- */

void
mtx_init(struct mtx *m, const char *name, const char *type __unused, int opts __unused)
{

	pthread_mutex_init(&m->m, NULL);
	m->owned = 0;
	m->name = name;
}

void
mtx_destroy(struct mtx *m)
{

	if (m->owned)
		mock_panic("mtx_destroy(%s) while owned", m->name);
	pthread_mutex_destroy(&m->m);
}

void
mtx_lock(struct mtx *m)
{

	if (m->owned && pthread_equal(m->owner, pthread_self()))
		mock_panic("mtx_lock(%s): recursion", m->name);
	pthread_mutex_lock(&m->m);
	m->owner = pthread_self();
	m->owned = 1;
}

void
mtx_unlock(struct mtx *m)
{

	if (!m->owned || !pthread_equal(m->owner, pthread_self()))
		mock_panic("mtx_unlock(%s): not owner", m->name);
	m->owned = 0;
	pthread_mutex_unlock(&m->m);
}

void
mock_mtx_assert(struct mtx *m, int what __unused, const char *file, int line)
{

	if (!m->owned || !pthread_equal(m->owner, pthread_self()))
		mock_panic("%s:%d: mutex %s not owned", file, line, m->name);
}

int
msleep(void *chan __unused, struct mtx *m, int pri __unused, const char *wmesg __unused,
    int timo)
{
	struct timespec ts;
	unsigned long gen;

	pthread_mutex_lock(&mock_lock);
	gen = mock_wake_gen;
	mtx_unlock(m);
	clock_gettime(CLOCK_REALTIME, &ts);
	if (timo > 0) {
		ts.tv_nsec += (long)timo * 1000000L;
	} else {
		ts.tv_sec += 1; /* a lost wakeup would show as a slow test, not a hang */
	}
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	while (gen == mock_wake_gen) {
		if (pthread_cond_timedwait(&mock_cond, &mock_lock, &ts) != 0)
			break;
	}
	pthread_mutex_unlock(&mock_lock);
	mtx_lock(m);
	return (0);
}

void
wakeup(void *chan __unused)
{

	pthread_mutex_lock(&mock_lock);
	mock_wake_gen++;
	pthread_cond_broadcast(&mock_cond);
	pthread_mutex_unlock(&mock_lock);
}

void
mock_pause(const char *wmesg __unused, int timo)
{

	usleep((useconds_t)(timo > 0 ? timo : 1) * 1000);
}

/* ---- threads ---- */

struct kproc_start {
	void (*fn)(void *);
	void *arg;
};

static void *
kproc_trampoline(void *p)
{
	struct kproc_start ks = *(struct kproc_start *)p;

	(free)(p);
	ks.fn(ks.arg);
	mock_panic("kernel process returned instead of calling kproc_exit");
}

int
kproc_create(void (*fn)(void *), void *arg, struct proc **procp, int flags __unused,
    int pages __unused, const char *fmt __unused, ...)
{
	static struct proc dummy;
	struct kproc_start *ks;
	pthread_t t;

	ks = (calloc)(1, sizeof(*ks));
	ks->fn = fn;
	ks->arg = arg;
	__atomic_add_fetch(&mock_live_kprocs, 1, __ATOMIC_SEQ_CST);
	if (pthread_create(&t, NULL, kproc_trampoline, ks) != 0) {
		__atomic_sub_fetch(&mock_live_kprocs, 1, __ATOMIC_SEQ_CST);
		(free)(ks);
		return (EAGAIN);
	}
	pthread_detach(t);
	if (procp != NULL)
		*procp = &dummy;
	return (0);
}

void
kproc_exit(int code __unused)
{

	__atomic_sub_fetch(&mock_live_kprocs, 1, __ATOMIC_SEQ_CST);
	pthread_exit(NULL);
}

/* ---- callouts: one thread advances ticks (1 ms) and runs what is due ---- */

static struct callout *mock_callouts;

void
callout_init_mtx(struct callout *c, struct mtx *m, int flags __unused)
{

	memset(c, 0, sizeof(*c));
	c->mtx = m;
}

int
callout_reset(struct callout *c, int to_ticks, void (*fn)(void *), void *arg)
{

	if (c->mtx != NULL)
		mock_mtx_assert(c->mtx, MA_OWNED, __FILE__, __LINE__);
	pthread_mutex_lock(&mock_lock);
	c->fn = fn;
	c->arg = arg;
	c->due = ticks + (to_ticks > 0 ? to_ticks : 1);
	c->pending = 1;
	if (!c->registered) {
		c->registered = 1;
		c->next = mock_callouts;
		mock_callouts = c;
	}
	pthread_mutex_unlock(&mock_lock);
	return (0);
}

int
callout_schedule(struct callout *c, int to_ticks)
{

	return (callout_reset(c, to_ticks, c->fn, c->arg));
}

int
callout_drain(struct callout *c)
{
	struct callout **pp;

	for (;;) {
		pthread_mutex_lock(&mock_lock);
		c->pending = 0;
		if (!c->running) {
			for (pp = &mock_callouts; *pp != NULL; pp = &(*pp)->next) {
				if (*pp == c) {
					*pp = c->next;
					break;
				}
			}
			c->registered = 0;
			pthread_mutex_unlock(&mock_lock);
			return (0);
		}
		pthread_mutex_unlock(&mock_lock);
		usleep(100);
	}
}

static void *
mock_clock(void *arg __unused)
{
	struct callout *c;

	for (;;) {
		usleep(1000);
		pthread_mutex_lock(&mock_lock);
		ticks++;
again:
		for (c = mock_callouts; c != NULL; c = c->next) {
			if (c->pending && ticks - c->due >= 0) {
				c->pending = 0;
				c->running = 1;
				pthread_mutex_unlock(&mock_lock);
				if (c->mtx != NULL)
					mtx_lock(c->mtx);
				c->fn(c->arg);
				if (c->mtx != NULL)
					mtx_unlock(c->mtx);
				pthread_mutex_lock(&mock_lock);
				c->running = 0;
				goto again; /* the list may have changed */
			}
		}
		pthread_mutex_unlock(&mock_lock);
	}
	return (NULL);
}

void
mock_kern_start(void)
{
	pthread_t t;

	pthread_create(&t, NULL, mock_clock, NULL);
	pthread_detach(t);
}

/* ---- sbuf ---- */

struct sbuf *
sbuf_new_auto(void)
{
	struct sbuf *s = (calloc)(1, sizeof(*s));

	s->cap = 256;
	s->buf = (calloc)(1, s->cap);
	return (s);
}

static void
sbuf_grow(struct sbuf *s, size_t need)
{
	while (s->len + need + 1 > s->cap) {
		s->cap *= 2;
		s->buf = (realloc)(s->buf, s->cap);
	}
}

int
sbuf_printf(struct sbuf *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	sbuf_grow(s, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
	return (0);
}

int
sbuf_putc(struct sbuf *s, int c)
{
	sbuf_grow(s, 1);
	s->buf[s->len++] = (char)c;
	s->buf[s->len] = '\0';
	return (0);
}

int
sbuf_finish(struct sbuf *s)
{
	s->buf[s->len] = '\0';
	return (0);
}

char *
sbuf_data(struct sbuf *s)
{
	return (s->buf);
}

ssize_t
sbuf_len(struct sbuf *s)
{
	return ((ssize_t)s->len);
}

void
sbuf_delete(struct sbuf *s)
{
	(free)(s->buf);
	(free)(s);
}

/* ---- bio queues ---- */

void
bioq_init(struct bio_queue_head *h)
{
	TAILQ_INIT(&h->queue);
}

struct bio *
bioq_first(struct bio_queue_head *h)
{
	return (TAILQ_FIRST(&h->queue));
}

struct bio *
bioq_takefirst(struct bio_queue_head *h)
{
	struct bio *bp = TAILQ_FIRST(&h->queue);

	if (bp != NULL)
		TAILQ_REMOVE(&h->queue, bp, bio_queue);
	return (bp);
}

void
bioq_insert_head(struct bio_queue_head *h, struct bio *bp)
{
	TAILQ_INSERT_HEAD(&h->queue, bp, bio_queue);
}

void
bioq_insert_tail(struct bio_queue_head *h, struct bio *bp)
{
	TAILQ_INSERT_TAIL(&h->queue, bp, bio_queue);
}

/* ---- topology ---- */

static pthread_mutex_t topo = PTHREAD_MUTEX_INITIALIZER;
static pthread_t topo_owner;
static int topo_owned;

void
g_topology_lock(void)
{
	if (topo_owned && pthread_equal(topo_owner, pthread_self()))
		mock_panic("topology lock recursion");
	pthread_mutex_lock(&topo);
	topo_owner = pthread_self();
	topo_owned = 1;
}

void
g_topology_unlock(void)
{
	if (!topo_owned || !pthread_equal(topo_owner, pthread_self()))
		mock_panic("topology unlock by non-owner");
	topo_owned = 0;
	pthread_mutex_unlock(&topo);
}

void
mock_topology_assert(const char *file, int line)
{
	if (!topo_owned || !pthread_equal(topo_owner, pthread_self()))
		mock_panic("%s:%d: topology lock not held", file, line);
}

struct g_geom *
g_new_geomf(struct g_class *mp, const char *fmt, ...)
{
	struct g_geom *gp;
	va_list ap;
	char name[256];

	g_topology_assert();
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	gp = (calloc)(1, sizeof(*gp));
	gp->name = strdup(name);
	gp->class = mp;
	LIST_INIT(&gp->consumer);
	LIST_INIT(&gp->provider);
	gp->start = mp->start;
	gp->orphan = mp->orphan;
	gp->access = mp->access;
	gp->dumpconf = mp->dumpconf;
	LIST_INSERT_HEAD(&mp->geom, gp, geom);
	return (gp);
}

void
g_destroy_geom(struct g_geom *gp)
{
	g_topology_assert();
	if (!LIST_EMPTY(&gp->consumer) || !LIST_EMPTY(&gp->provider))
		mock_panic("g_destroy_geom(%s) with consumers or providers", gp->name);
	LIST_REMOVE(gp, geom);
	(free)(gp->name);
	(free)(gp);
}

struct g_consumer *
g_new_consumer(struct g_geom *gp)
{
	struct g_consumer *cp;

	g_topology_assert();
	if (gp->orphan == NULL)
		mock_panic("g_new_consumer on a geom without orphan method");
	cp = (calloc)(1, sizeof(*cp));
	cp->geom = gp;
	LIST_INSERT_HEAD(&gp->consumer, cp, consumer);
	return (cp);
}

void
g_destroy_consumer(struct g_consumer *cp)
{
	g_topology_assert();
	if (cp->provider != NULL)
		mock_panic("g_destroy_consumer: still attached");
	if (cp->acr || cp->acw || cp->ace)
		mock_panic("g_destroy_consumer: still open");
	LIST_REMOVE(cp, consumer);
	(free)(cp);
}

int
g_attach(struct g_consumer *cp, struct g_provider *pp)
{
	g_topology_assert();
	if (cp->provider != NULL)
		mock_panic("g_attach: already attached");
	cp->provider = pp;
	LIST_INSERT_HEAD(&pp->consumers, cp, consumers);
	return (0);
}

void
g_detach(struct g_consumer *cp)
{
	g_topology_assert();
	if (cp->provider == NULL)
		mock_panic("g_detach: not attached");
	if (cp->acr || cp->acw || cp->ace)
		mock_panic("g_detach: still open");
	if (cp->nstart != cp->nend)
		mock_panic("g_detach: I/O in flight (%u/%u)", cp->nstart, cp->nend);
	LIST_REMOVE(cp, consumers);
	cp->provider = NULL;
}

/* ---- the GEOM event queue (run by mock_run_events(), as the g_event thread would) ---- */
struct mock_event {
	g_event_t *fn; /* NULL: retaste pp */
	void *arg;
	struct mock_event *next;
};
static struct mock_event *mock_ev_head, **mock_ev_tail = &mock_ev_head;

static void
mock_post(g_event_t *fn, void *arg)
{
	struct mock_event *e = (calloc)(1, sizeof(*e));

	e->fn = fn;
	e->arg = arg;
	*mock_ev_tail = e;
	mock_ev_tail = &e->next;
}

int
g_post_event(g_event_t *fn, void *arg, int flag __unused, ...)
{
	mock_post(fn, arg);
	return (0);
}

extern struct g_class *mock_classes[];

/* GEOM's retaste of a provider: every class that has no (live) consumer on it tastes it. */
static void
mock_retaste(struct g_provider *pp)
{
	struct g_consumer *cp;

	if (pp->flags & G_PF_WITHER)
		return;
	for (int i = 0; mock_classes[i] != NULL; i++) {
		struct g_class *mp = mock_classes[i];

		if (mp->taste == NULL)
			continue;
		LIST_FOREACH(cp, &pp->consumers, consumers)
			if (cp->geom->class == mp && !(cp->flags & G_CF_ORPHAN))
				break;
		if (cp == NULL)
			mp->taste(mp, pp, 0);
	}
}

void
mock_run_events(void)
{
	struct mock_event *e;

	g_topology_assert();
	while ((e = mock_ev_head) != NULL) {
		mock_ev_head = e->next;
		if (mock_ev_head == NULL)
			mock_ev_tail = &mock_ev_head;
		if (e->fn != NULL)
			e->fn(e->arg, 0);
		else
			mock_retaste(e->arg);
		(free)(e);
	}
}

int
g_access(struct g_consumer *cp, int dcr, int dcw, int dce)
{
	struct g_provider *pp = cp->provider;
	struct g_consumer *o;

	g_topology_assert();
	if (pp == NULL)
		mock_panic("g_access: not attached");
	if (cp->acr + dcr < 0 || cp->acw + dcw < 0 || cp->ace + dce < 0)
		mock_panic("g_access: negative count");
	if (cp->acr + dcr == 0 && cp->acw + dcw == 0 && cp->ace + dce == 0 &&
	    cp->nstart != cp->nend)
		mock_panic("g_access: last close with active requests");
	if (dcr > 0 || dcw > 0 || dce > 0) {
		if (pp->error != 0 && (pp->flags & (G_PF_ORPHAN | G_PF_WITHER)))
			return (ENXIO);
		LIST_FOREACH(o, &pp->consumers, consumers) {
			if (o == cp)
				continue;
			if ((dcw > 0 && o->ace > 0) || (dce > 0 && o->acw > 0))
				return (EPERM);
		}
		if (pp->geom->access != NULL) {
			int e = pp->geom->access(pp, dcr, dcw, dce);
			if (e != 0)
				return (e);
		}
	} else if (pp->geom->access != NULL) {
		pp->geom->access(pp, dcr, dcw, dce);
	}
	/* As GEOM does: closing the last writer of a provider queues a retaste of it. */
	if (pp->acw != 0 && pp->acw == -dcw && pp->error == 0 &&
	    !(pp->geom->flags & G_GEOM_WITHER))
		mock_post(NULL, pp);
	pp->acr += dcr;
	pp->acw += dcw;
	pp->ace += dce;
	cp->acr += dcr;
	cp->acw += dcw;
	cp->ace += dce;
	return (0);
}

struct g_provider *
g_new_providerf(struct g_geom *gp, const char *fmt, ...)
{
	struct g_provider *pp;
	va_list ap;
	char name[256];

	g_topology_assert();
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	pp = (calloc)(1, sizeof(*pp));
	pp->name = strdup(name);
	pp->geom = gp;
	pp->error = ENXIO;
	LIST_INIT(&pp->consumers);
	LIST_INSERT_HEAD(&gp->provider, pp, provider);
	return (pp);
}

void
g_error_provider(struct g_provider *pp, int error)
{
	pp->error = error;
}

static void
mock_orphan_consumers(struct g_provider *pp)
{
	struct g_consumer *cp;

	LIST_FOREACH(cp, &pp->consumers, consumers) {
		if (cp->flags & G_CF_ORPHAN)
			continue;
		cp->flags |= G_CF_ORPHAN;
		cp->geom->orphan(cp);
		/* the orphan method may have detached it: restart */
		mock_orphan_consumers(pp);
		return;
	}
}

void
g_wither_provider(struct g_provider *pp, int error)
{
	g_topology_assert();
	pp->flags |= G_PF_WITHER;
	pp->error = error;
	mock_orphan_consumers(pp);
}

void
g_wither_geom(struct g_geom *gp, int error)
{
	struct g_provider *pp;

	g_topology_assert();
	gp->flags |= G_GEOM_WITHER;
	LIST_FOREACH(pp, &gp->provider, provider) {
		if (!(pp->flags & G_PF_WITHER))
			g_wither_provider(pp, error);
	}
}

void
mock_wash(void)
{
	struct g_geom *gp, *tgp;
	struct g_provider *pp, *tpp;
	struct g_class *mp;

	g_topology_assert();
	(void)mp;
	/* Only the geoms the harness can reach: it passes classes through this list. */
	extern struct g_class *mock_classes[];
	for (int i = 0; mock_classes[i] != NULL; i++) {
		for (gp = LIST_FIRST(&mock_classes[i]->geom); gp != NULL; gp = tgp) {
			tgp = LIST_NEXT(gp, geom);
			if (!(gp->flags & G_GEOM_WITHER))
				continue;
			for (pp = LIST_FIRST(&gp->provider); pp != NULL; pp = tpp) {
				tpp = LIST_NEXT(pp, provider);
				if (LIST_EMPTY(&pp->consumers) && !pp->acr && !pp->acw && !pp->ace) {
					LIST_REMOVE(pp, provider);
					(free)(pp->name);
					(free)(pp);
				}
			}
			if (LIST_EMPTY(&gp->provider) && LIST_EMPTY(&gp->consumer))
				g_destroy_geom(gp);
		}
	}
}

/* ---- bios ---- */

static struct bio *
mock_bio_alloc(int may_fail)
{
	struct bio *bp;
	long n;

	if (may_fail && mock_new_bio_fail_every > 0) {
		n = __atomic_add_fetch(&mock_new_bio_calls, 1, __ATOMIC_SEQ_CST);
		if (n % mock_new_bio_fail_every == 0)
			return (NULL);
	}
	bp = (calloc)(1, sizeof(*bp));
	__atomic_add_fetch(&mock_bios, 1, __ATOMIC_SEQ_CST);
	return (bp);
}

struct bio *
g_new_bio(void)
{
	return (mock_bio_alloc(1));
}

struct bio *
g_alloc_bio(void)
{
	return (mock_bio_alloc(0));
}

struct bio *
g_clone_bio(struct bio *bp)
{
	struct bio *b = mock_bio_alloc(1);

	if (b == NULL)
		return (NULL);
	b->bio_cmd = bp->bio_cmd;
	b->bio_flags = bp->bio_flags;
	b->bio_offset = bp->bio_offset;
	b->bio_length = bp->bio_length;
	b->bio_data = bp->bio_data;
	b->bio_attribute = bp->bio_attribute;
	b->bio_parent = bp;
	bp->bio_children++;
	return (b);
}

void
g_destroy_bio(struct bio *bp)
{
	__atomic_sub_fetch(&mock_bios, 1, __ATOMIC_SEQ_CST);
	memset(bp, 0x5a, sizeof(*bp));
	(free)(bp);
}

void
g_reset_bio(struct bio *bp)
{
	memset(bp, 0, sizeof(*bp));
}

void
g_io_request(struct bio *bp, struct g_consumer *cp)
{
	struct g_provider *pp = cp->provider;

	if (pp == NULL)
		mock_panic("g_io_request on a detached consumer");
	if (cp->acr == 0 && cp->acw == 0)
		mock_panic("g_io_request on a closed consumer (%s)", pp->name);
	if (bp->bio_cmd == BIO_WRITE && cp->acw == 0)
		mock_panic("write through a consumer not open for writing");
	bp->bio_from = cp;
	bp->bio_to = pp;
	bp->bio_error = 0;
	bp->bio_completed = 0;
	__atomic_add_fetch(&cp->nstart, 1, __ATOMIC_SEQ_CST);
	if (pp->error != 0 && bp->bio_cmd != BIO_GETATTR) {
		/* GEOM's g_io_check: the provider is gone. Still asynchronous, as in GEOM. */
		bp->bio_error = pp->error;
		bp->bio_flags |= 0x8000;
	}
	pp->geom->start(bp);
}

void
g_io_deliver(struct bio *bp, int error)
{
	bp->bio_error = error;
	if (bp->bio_from != NULL)
		__atomic_add_fetch(&bp->bio_from->nend, 1, __ATOMIC_SEQ_CST);
	if (bp->bio_done == NULL)
		mock_panic("g_io_deliver: no bio_done");
	bp->bio_done(bp);
}

struct mock_sync {
	pthread_mutex_t m;
	pthread_cond_t c;
	int done;
};

static void
mock_sync_done(struct bio *bp)
{
	struct mock_sync *s = bp->bio_caller1;

	pthread_mutex_lock(&s->m);
	s->done = 1;
	pthread_cond_broadcast(&s->c);
	pthread_mutex_unlock(&s->m);
}

static int
mock_sync_io(struct g_consumer *cp, int cmd, off_t off, void *data, off_t len)
{
	struct mock_sync s = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	struct bio *bp;
	int error;

	if (topo_owned && pthread_equal(topo_owner, pthread_self()))
		mock_panic("synchronous GEOM I/O with the topology lock held");
	bp = g_alloc_bio();
	bp->bio_cmd = (uint16_t)cmd;
	bp->bio_offset = off;
	bp->bio_length = len;
	bp->bio_data = data;
	bp->bio_done = mock_sync_done;
	bp->bio_caller1 = &s;
	g_io_request(bp, cp);
	pthread_mutex_lock(&s.m);
	while (!s.done)
		pthread_cond_wait(&s.c, &s.m);
	pthread_mutex_unlock(&s.m);
	error = bp->bio_error;
	g_destroy_bio(bp);
	return (error);
}

void *
g_read_data(struct g_consumer *cp, off_t offset, off_t length, int *error)
{
	void *p;

	if (length <= 0 || length % cp->provider->sectorsize || offset % cp->provider->sectorsize ||
	    (u_long)length > maxphys) {
		*error = EINVAL;
		return (NULL);
	}
	p = mock_malloc((size_t)length, M_GEOM, M_WAITOK);
	*error = mock_sync_io(cp, BIO_READ, offset, p, length);
	if (*error != 0) {
		mock_free(p, M_GEOM);
		return (NULL);
	}
	return (p);
}

int
g_write_data(struct g_consumer *cp, off_t offset, void *ptr, off_t length)
{
	if (length <= 0 || length % cp->provider->sectorsize || offset % cp->provider->sectorsize ||
	    (u_long)length > maxphys)
		return (EINVAL);
	return (mock_sync_io(cp, BIO_WRITE, offset, ptr, length));
}

int
g_io_flush(struct g_consumer *cp)
{
	return (mock_sync_io(cp, BIO_FLUSH, cp->provider->mediasize, NULL, 0));
}

int
g_getattr__(const char *attr, struct g_consumer *cp, void *var, int len)
{
	struct mock_sync s = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	struct bio *bp;
	int error;

	bp = g_alloc_bio();
	bp->bio_cmd = BIO_GETATTR;
	bp->bio_attribute = attr;
	bp->bio_length = len;
	bp->bio_data = var;
	bp->bio_done = mock_sync_done;
	bp->bio_caller1 = &s;
	g_io_request(bp, cp);
	pthread_mutex_lock(&s.m);
	while (!s.done)
		pthread_cond_wait(&s.c, &s.m);
	pthread_mutex_unlock(&s.m);
	error = bp->bio_error;
	g_destroy_bio(bp);
	return (error);
}

int
g_handleattr_int(struct bio *bp, const char *attribute, int val)
{
	if (strcmp(bp->bio_attribute, attribute) != 0)
		return (0);
	if (bp->bio_length != (off_t)sizeof(int)) {
		g_io_deliver(bp, EFAULT);
		return (1);
	}
	memcpy(bp->bio_data, &val, sizeof(int));
	bp->bio_completed = sizeof(int);
	g_io_deliver(bp, 0);
	return (1);
}

/* ---- gctl ---- */

void *
gctl_get_param_flags(struct gctl_req *req, const char *param, int flags, int *len)
{
	u_int i;

	for (i = 0; i < req->narg; i++) {
		if (strcmp(req->arg[i].name, param) != 0)
			continue;
		if ((req->arg[i].flag & flags) != flags)
			return (NULL);
		if (len != NULL)
			*len = req->arg[i].len;
		return (req->arg[i].value);
	}
	return (NULL);
}

void *
gctl_get_param(struct gctl_req *req, const char *param, int *len)
{
	return (gctl_get_param_flags(req, param, GCTL_PARAM_RD, len));
}

void *
gctl_get_paraml_opt(struct gctl_req *req, const char *param, int len)
{
	int l;
	void *p = gctl_get_param_flags(req, param, GCTL_PARAM_RD, &l);

	if (p == NULL)
		l = -1;
	/* As FreeBSD 15.0's: an absent parameter is reported as one of the wrong length. */
	if (p == NULL || l != len) {
		gctl_error(req, "Wrong length %s argument.", param);
		return (NULL);
	}
	return (p);
}

void *
gctl_get_paraml(struct gctl_req *req, const char *param, int len)
{
	void *p = gctl_get_paraml_opt(req, param, len);

	if (p == NULL)
		gctl_error(req, "Missing %s argument.", param);
	return (p);
}

const char *
gctl_get_asciiparam(struct gctl_req *req, const char *param)
{
	int len;
	char *p = gctl_get_param_flags(req, param, GCTL_PARAM_RD, &len);

	if (p == NULL || len < 1 || p[len - 1] != '\0')
		return (NULL);
	return (p);
}

int
gctl_set_param(struct gctl_req *req, const char *param, const void *ptr, int len)
{
	u_int i;

	for (i = 0; i < req->narg; i++) {
		if (strcmp(req->arg[i].name, param) != 0)
			continue;
		if (!(req->arg[i].flag & GCTL_PARAM_WR))
			return (EPERM);
		if (req->arg[i].len < len) {
			memcpy(req->arg[i].value, ptr, (size_t)req->arg[i].len);
			return (ENOSPC);
		}
		memcpy(req->arg[i].value, ptr, (size_t)len);
		return (0);
	}
	return (EINVAL);
}

int
gctl_error(struct gctl_req *req, const char *fmt, ...)
{
	va_list ap;

	if (req->nerror++ == 0) {
		va_start(ap, fmt);
		vsnprintf(req->error, sizeof(req->error), fmt, ap);
		va_end(ap);
	}
	return (0);
}

extern struct g_class *mock_classes[];

struct g_provider *
gctl_get_provider(struct gctl_req *req, const char *arg)
{
	const char *name;
	struct g_geom *gp;
	struct g_provider *pp;

	name = gctl_get_asciiparam(req, arg);
	if (name == NULL) {
		gctl_error(req, "Missing '%s' argument", arg);
		return (NULL);
	}
	if (strncmp(name, "/dev/", 5) == 0)
		name += 5;
	for (int i = 0; mock_classes[i] != NULL; i++) {
		LIST_FOREACH(gp, &mock_classes[i]->geom, geom) {
			LIST_FOREACH(pp, &gp->provider, provider) {
				if (strcmp(pp->name, name) == 0 && !(pp->flags & G_PF_WITHER))
					return (pp);
			}
		}
	}
	gctl_error(req, "Provider not found: \"%s\"", name);
	return (NULL);
}

/* ---- memory disks ---- */

static void mock_disk_start(struct bio *bp);
static void mock_disk_orphan_cb(struct g_consumer *cp __unused) { }

static struct g_class mock_disk_class = {
	.name = "MOCKDISK",
	.start = mock_disk_start,
	.orphan = mock_disk_orphan_cb,
};

struct g_class *mock_disk_classp = &mock_disk_class;

static void
mock_disk_start(struct bio *bp)
{
	struct mock_disk *d = bp->bio_to->private;

	mtx_lock(&d->mtx);
	bioq_insert_tail(&d->q, bp);
	d->qlen++;
	mtx_unlock(&d->mtx);
	wakeup(d);
}

static void
mock_disk_do(struct mock_disk *d, struct bio *bp)
{
	int error = 0;

	if (bp->bio_flags & 0x8000) {
		g_io_deliver(bp, bp->bio_error);
		return;
	}
	switch (bp->bio_cmd) {
	case BIO_GETATTR:
		if (strcmp(bp->bio_attribute, "GEOM::candelete") == 0 &&
		    bp->bio_length == (off_t)sizeof(int)) {
			int v = d->candelete;
			memcpy(bp->bio_data, &v, sizeof(int));
		} else {
			error = EOPNOTSUPP;
		}
		break;
	case BIO_READ:
	case BIO_WRITE:
	case BIO_DELETE:
		if (bp->bio_offset < 0 || bp->bio_length < 0 ||
		    bp->bio_offset + bp->bio_length > d->size ||
		    bp->bio_offset % d->pp->sectorsize || bp->bio_length % d->pp->sectorsize) {
			error = EIO;
			break;
		}
		if (d->fail_eio && bp->bio_cmd != BIO_DELETE) {
			error = EIO;
			break;
		}
		if (bp->bio_cmd == BIO_WRITE && d->write_delay_ms > 0)
			usleep((useconds_t)d->write_delay_ms * 1000);
		if (bp->bio_cmd == BIO_READ) {
			memcpy(bp->bio_data, d->mem + bp->bio_offset, (size_t)bp->bio_length);
			d->reads++;
		} else if (bp->bio_cmd == BIO_WRITE) {
			memcpy(d->mem + bp->bio_offset, bp->bio_data, (size_t)bp->bio_length);
			d->writes++;
		} else {
			if (!d->candelete) {
				error = EOPNOTSUPP;
				break;
			}
			memset(d->mem + bp->bio_offset, 0, (size_t)bp->bio_length);
			d->deletes++;
		}
		bp->bio_completed = bp->bio_length;
		break;
	case BIO_FLUSH:
		if (d->fail_eio)
			error = EIO;
		else
			d->flushes++;
		break;
	default:
		error = EOPNOTSUPP;
	}
	g_io_deliver(bp, error);
}

static void *
mock_disk_thread(void *arg)
{
	struct mock_disk *d = arg;
	struct bio *bp;
	int n, pick;

	mtx_lock(&d->mtx);
	for (;;) {
		while (d->qlen == 0 && !d->stop)
			msleep(d, &d->mtx, 0, "disk", 5);
		if (d->qlen == 0 && d->stop)
			break;
		/* Out of order: take one of the first four at random. */
		d->rng = d->rng * 1103515245u + 12345u;
		n = d->qlen < 4 ? d->qlen : 4;
		pick = (int)((d->rng >> 16) % (uint32_t)n);
		bp = bioq_first(&d->q);
		while (pick-- > 0)
			bp = TAILQ_NEXT(bp, bio_queue);
		TAILQ_REMOVE(&d->q.queue, bp, bio_queue);
		d->qlen--;
		mtx_unlock(&d->mtx);
		mock_disk_do(d, bp);
		mtx_lock(&d->mtx);
	}
	mtx_unlock(&d->mtx);
	return (NULL);
}

struct mock_disk *
mock_disk_create(const char *name, off_t size, u_int sectorsize)
{
	struct mock_disk *d;
	struct g_geom *gp;

	d = (calloc)(1, sizeof(*d));
	d->mem = (calloc)(1, (size_t)size);
	d->size = size;
	d->rng = 12345;
	mtx_init(&d->mtx, name, NULL, 0);
	bioq_init(&d->q);
	g_topology_lock();
	gp = g_new_geomf(&mock_disk_class, "%s", name);
	d->pp = g_new_providerf(gp, "%s", name);
	d->pp->mediasize = size;
	d->pp->sectorsize = sectorsize;
	d->pp->private = d;
	g_error_provider(d->pp, 0);
	g_topology_unlock();
	pthread_create(&d->thr, NULL, mock_disk_thread, d);
	return (d);
}

void
mock_disk_orphan(struct mock_disk *d)
{
	g_topology_lock();
	d->pp->flags |= G_PF_ORPHAN;
	d->pp->error = ENXIO;
	mock_orphan_consumers(d->pp);
	g_topology_unlock();
}

void
mock_disk_destroy(struct mock_disk *d)
{
	mtx_lock(&d->mtx);
	d->stop = 1;
	mtx_unlock(&d->mtx);
	wakeup(d);
	pthread_join(d->thr, NULL);
	(free)(d->mem);
}
