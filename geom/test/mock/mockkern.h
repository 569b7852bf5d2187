/*
 * mockkern.h - just enough of the FreeBSD kernel and GEOM, in userland with pthreads, to run
 * geom/g_dmirror.c unmodified against the host build of the dmirror core (geom/test/).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * This is not FreeBSD: it is a model written here, for testing the GEOM class's own logic
 * (queues, worker loop, child bios, control verbs, teardown). Structure fields carry the names
 * g_dmirror.c uses; semantics follow the documented GEOM behaviour where the class depends on
 * it (asynchronous completion through bio_done, access counts and exclusive opens, orphaning,
 * g_read_data/g_write_data being synchronous). Locking rules are checked (topology lock and
 * mutex ownership asserts abort), allocations are counted so a test can find leaks, and
 * g_new_bio() can be made to fail. Compile-time and link-time correctness against the real
 * kernel is geom/check-build.sh's job, not this file's.
 */
#ifndef MOCKKERN_H
#define MOCKKERN_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <unistd.h>

/* BSD errno values (the core's DMIRROR_E* are these; Linux differs for several). */
#define EPERM 1
#define ENOENT 2
#define EIO 5
#define ENXIO 6
#define ENOMEM 12
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define ENODEV 19
#define EINVAL 22
#define ENOSPC 28
#define EAGAIN 35
#define EALREADY 37
#define EOPNOTSUPP 45
#define ETIMEDOUT 60
#define ECANCELED 85

typedef char *caddr_t;
typedef unsigned int u_int;
typedef unsigned long u_long;
typedef unsigned char u_char;

#define __unused __attribute__((__unused__))
#define __dead2 __attribute__((__noreturn__))
#define __printflike(a, b) __attribute__((__format__(__printf__, a, b)))
#define __DECONST(type, var) ((type)(uintptr_t)(const void *)(var))
#define CTASSERT(x) _Static_assert(x, #x)
#define powerof2(x) ((((x) - 1) & (x)) == 0)
#define rounddown(x, y) (((x) / (y)) * (y))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define OFF_MAX INT64_MAX
#define _PATH_DEV "/dev/"
#define PRIBIO 0

/* ---- time ---- */
extern int hz;
extern volatile int ticks;
extern u_long maxphys;

/* ---- memory ---- */
struct malloc_type {
	const char *name;
	long allocs;        /* outstanding */
};
void mock_register_type(struct malloc_type *type);
struct malloc_type *mock_find_type(const char *name);
#define MALLOC_DEFINE(type, shortdesc, longdesc)				\
	struct malloc_type type[1] = { { shortdesc, 0 } };			\
	static void __attribute__((constructor)) type##_mock_reg(void)		\
	{ mock_register_type(type); }						\
	struct mock_sysctl_unused
#define MALLOC_DECLARE(type) extern struct malloc_type type[1]
MALLOC_DECLARE(M_GEOM);
#define M_NOWAIT 0x0001
#define M_WAITOK 0x0002
#define M_ZERO 0x0100
void *mock_malloc(size_t size, struct malloc_type *type, int flags);
void mock_free(void *p, struct malloc_type *type);
#define malloc(s, t, f) mock_malloc((s), (t), (f))
#define free(p, t) mock_free((p), (t))
#define g_malloc(s, f) mock_malloc((s), M_GEOM, (f))
#define g_free(p) mock_free((p), M_GEOM)
size_t mock_strlcpy(char *dst, const char *src, size_t size);
#define strlcpy mock_strlcpy
void arc4random_buf(void *buf, size_t len);

void mock_panic(const char *fmt, ...) __printflike(1, 2) __dead2;
#define panic mock_panic

/* ---- locks, sleep ---- */
struct mtx {
	pthread_mutex_t m;
	pthread_t owner;
	int owned;
	const char *name;
};
#define MTX_DEF 0
#define MA_OWNED 1
void mtx_init(struct mtx *m, const char *name, const char *type, int opts);
void mtx_destroy(struct mtx *m);
void mtx_lock(struct mtx *m);
void mtx_unlock(struct mtx *m);
void mock_mtx_assert(struct mtx *m, int what, const char *file, int line);
#define mtx_assert(m, w) mock_mtx_assert((m), (w), __FILE__, __LINE__)
#define MTX_SYSINIT(name, mtx, desc, opts)					\
	static void __attribute__((constructor)) name##_mtx_sysinit(void)	\
	{ mtx_init((mtx), (desc), NULL, (opts)); }
int msleep(void *chan, struct mtx *m, int pri, const char *wmesg, int timo);
#define mtx_sleep msleep
void wakeup(void *chan);
void mock_pause(const char *wmesg, int timo);
#define pause mock_pause

/* ---- threads ---- */
struct proc {
	int unused;
};
struct thread;
#define curthread ((struct thread *)NULL)
#define thread_lock(td) do { } while (0)
#define thread_unlock(td) do { } while (0)
#define sched_prio(td, p) do { } while (0)
int kproc_create(void (*fn)(void *), void *arg, struct proc **procp, int flags, int pages,
    const char *fmt, ...) __printflike(6, 7);
void kproc_exit(int code) __dead2;
extern volatile int mock_live_kprocs;

/* ---- callouts ---- */
struct callout {
	struct mtx *mtx;
	void (*fn)(void *);
	void *arg;
	int due;            /* ticks */
	int pending;
	int running;
	int registered;
	struct callout *next;
};
void callout_init_mtx(struct callout *c, struct mtx *m, int flags);
int callout_reset(struct callout *c, int to_ticks, void (*fn)(void *), void *arg);
int callout_schedule(struct callout *c, int to_ticks);
int callout_drain(struct callout *c);

/* ---- sysctl / module glue: declarations only ---- */
#define SYSCTL_DECL(name) extern int mock_sysctl_decl_##name
#define SYSCTL_NODE(parent, nbr, name, access, handler, descr) \
	int mock_sysctl_##parent##_##name __attribute__((__unused__))
#define SYSCTL_UINT(parent, nbr, name, access, ptr, val, descr) \
	int mock_sysctl_##parent##_##name __attribute__((__unused__))
#define FEATURE(name, desc) int mock_feature_##name
#define MODULE_VERSION(name, ver) int mock_modver_##name
#define DECLARE_GEOM_CLASS(class, name) int mock_gclass_##name
#define CTLFLAG_RW 0
#define CTLFLAG_RWTUN 0
#define CTLFLAG_MPSAFE 0
#define OID_AUTO 0

/* ---- sbuf ---- */
struct sbuf {
	char *buf;
	size_t len, cap;
};
struct sbuf *sbuf_new_auto(void);
int sbuf_printf(struct sbuf *s, const char *fmt, ...) __printflike(2, 3);
int sbuf_putc(struct sbuf *s, int c);
int sbuf_finish(struct sbuf *s);
char *sbuf_data(struct sbuf *s);
ssize_t sbuf_len(struct sbuf *s);
void sbuf_delete(struct sbuf *s);

/* ---- bio ---- */
#define BIO_READ 0x01
#define BIO_WRITE 0x02
#define BIO_DELETE 0x03
#define BIO_GETATTR 0x04
#define BIO_FLUSH 0x05
#define BIO_UNMAPPED 0x10

struct g_consumer;
struct g_provider;
struct bio {
	uint16_t bio_cmd;
	uint16_t bio_flags;
	off_t bio_offset;
	off_t bio_length;
	off_t bio_completed;
	caddr_t bio_data;
	int bio_error;
	void (*bio_done)(struct bio *);
	void *bio_caller1;
	void *bio_caller2;
	const char *bio_attribute;
	struct bio *bio_parent;
	int bio_children;
	struct g_consumer *bio_from;
	struct g_provider *bio_to;
	TAILQ_ENTRY(bio) bio_queue;
	/* mock only */
	int mock_done;
	void *mock_test;
};
struct bio_queue_head {
	TAILQ_HEAD(, bio) queue;
};
void bioq_init(struct bio_queue_head *h);
struct bio *bioq_first(struct bio_queue_head *h);
struct bio *bioq_takefirst(struct bio_queue_head *h);
void bioq_insert_head(struct bio_queue_head *h, struct bio *bp);
void bioq_insert_tail(struct bio_queue_head *h, struct bio *bp);

/* ---- GEOM ---- */
#define G_VERSION 0x20041207
#define G_CF_ORPHAN 0x4
#define G_PF_WITHER 0x2
#define G_PF_ORPHAN 0x4
#define G_GEOM_WITHER 0x01
#define GCTL_PARAM_RD 1
#define GCTL_PARAM_WR 2
#define GCTL_PARAM_ASCII 4

struct g_class;
struct g_geom;
struct gctl_req;
struct sbuf;
typedef struct g_geom *g_taste_t(struct g_class *, struct g_provider *, int flags);
typedef void g_ctl_req_t(struct gctl_req *, struct g_class *cp, char const *verb);
typedef int g_ctl_destroy_geom_t(struct gctl_req *, struct g_class *cp, struct g_geom *gp);
typedef void g_init_t(struct g_class *);
typedef void g_fini_t(struct g_class *);
typedef void g_start_t(struct bio *);
typedef void g_orphan_t(struct g_consumer *);
typedef int g_access_t(struct g_provider *, int, int, int);
typedef void g_dumpconf_t(struct sbuf *, const char *indent, struct g_geom *,
    struct g_consumer *, struct g_provider *);

struct g_class {
	const char *name;
	u_int version;
	g_taste_t *taste;
	g_ctl_req_t *ctlreq;
	g_init_t *init;
	g_fini_t *fini;
	g_ctl_destroy_geom_t *destroy_geom;
	g_start_t *start;
	g_orphan_t *orphan;
	g_access_t *access;
	g_dumpconf_t *dumpconf;
	LIST_ENTRY(g_class) class;
	LIST_HEAD(, g_geom) geom;
};
struct g_geom {
	char *name;
	struct g_class *class;
	LIST_ENTRY(g_geom) geom;
	LIST_HEAD(, g_consumer) consumer;
	LIST_HEAD(, g_provider) provider;
	g_start_t *start;
	g_orphan_t *orphan;
	g_access_t *access;
	g_dumpconf_t *dumpconf;
	void *softc;
	unsigned flags;
};
struct g_consumer {
	struct g_geom *geom;
	LIST_ENTRY(g_consumer) consumer;
	struct g_provider *provider;
	LIST_ENTRY(g_consumer) consumers;
	int acr, acw, ace;
	int flags;
	u_int nstart, nend;
	void *private;
	u_int index;
};
struct g_provider {
	char *name;
	LIST_ENTRY(g_provider) provider;
	struct g_geom *geom;
	LIST_HEAD(, g_consumer) consumers;
	int acr, acw, ace;
	int error;
	off_t mediasize;
	u_int sectorsize;
	u_int flags;
	void *private;
	u_int index;
};

void g_topology_lock(void);
void g_topology_unlock(void);
void mock_topology_assert(const char *file, int line);
#define g_topology_assert() mock_topology_assert(__FILE__, __LINE__)

struct g_geom *g_new_geomf(struct g_class *mp, const char *fmt, ...) __printflike(2, 3);
void g_destroy_geom(struct g_geom *gp);
struct g_consumer *g_new_consumer(struct g_geom *gp);
void g_destroy_consumer(struct g_consumer *cp);
int g_attach(struct g_consumer *cp, struct g_provider *pp);
void g_detach(struct g_consumer *cp);
int g_access(struct g_consumer *cp, int dcr, int dcw, int dce);
struct g_provider *g_new_providerf(struct g_geom *gp, const char *fmt, ...) __printflike(2, 3);
void g_error_provider(struct g_provider *pp, int error);
void g_wither_geom(struct g_geom *gp, int error);
void g_wither_provider(struct g_provider *pp, int error);

struct bio *g_new_bio(void);
struct bio *g_alloc_bio(void);
struct bio *g_clone_bio(struct bio *bp);
void g_destroy_bio(struct bio *bp);
void g_reset_bio(struct bio *bp);
void g_io_request(struct bio *bp, struct g_consumer *cp);
void g_io_deliver(struct bio *bp, int error);
int g_io_flush(struct g_consumer *cp);
void *g_read_data(struct g_consumer *cp, off_t offset, off_t length, int *error);
int g_write_data(struct g_consumer *cp, off_t offset, void *ptr, off_t length);
int g_getattr__(const char *attr, struct g_consumer *cp, void *var, int len);
#define g_getattr(a, c, v) g_getattr__((a), (c), (v), sizeof(*(v)))
int g_handleattr_int(struct bio *bp, const char *attribute, int val);

/* gctl */
struct gctl_req_arg {
	const char *name;
	void *value;
	int len;
	int flag;
};
struct gctl_req {
	struct gctl_req_arg arg[32];
	u_int narg;
	char error[512];
	int nerror;
};
void *gctl_get_param_flags(struct gctl_req *req, const char *param, int flags, int *len);
void *gctl_get_param(struct gctl_req *req, const char *param, int *len);
typedef void g_event_t(void *, int);
#define EV_CANCEL 1
int g_post_event(g_event_t *fn, void *arg, int flag, ...);
void mock_run_events(void); /* run queued GEOM events (retastes, g_post_event) now */
void *gctl_get_paraml(struct gctl_req *req, const char *param, int len);
void *gctl_get_paraml_opt(struct gctl_req *req, const char *param, int len);
const char *gctl_get_asciiparam(struct gctl_req *req, const char *param);
int gctl_set_param(struct gctl_req *req, const char *param, const void *ptr, int len);
int gctl_error(struct gctl_req *req, const char *fmt, ...) __printflike(2, 3);
struct g_provider *gctl_get_provider(struct gctl_req *req, const char *arg);

/* ---- knobs and counters for the harness ---- */
extern volatile int mock_new_bio_fail_every;  /* g_new_bio/g_clone_bio: every Nth fails (0: never) */
extern volatile long mock_bios;               /* bios allocated and not destroyed */

#endif /* MOCKKERN_H */
