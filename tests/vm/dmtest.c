/*
 * dmtest.c - a freestanding FreeBSD/amd64 program, run as /sbin/init of a minimal guest, that
 * exercises geom_dmirror.ko in a real FreeBSD kernel without any FreeBSD userland: it talks to
 * the kernel with raw system calls (no libc) and drives GEOM through GEOM_CTL requests on
 * /dev/geom.ctl, the way geom(8) does.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Build (tests/vm/run does this with --dmtest):
 *   clang-19 --target=x86_64-unknown-freebsd15 -ffreestanding -fno-builtin -nostdlib -static \
 *     -fno-pic -fno-stack-protector -mno-red-zone -O1 -fuse-ld=lld -Wl,-e,_start \
 *     -o init tests/vm/dmtest.c
 *
 * The guest (see tests/vm/README.md): root on /dev/vtbd0 (a cd9660 image holding /sbin/init =
 * this program, /geom_dmirror.ko and an empty /dev), legs on /dev/vtbd1 and /dev/vtbd2.
 * Boot 1 (default): load the module, put gnop(4) providers on both disks, label a mirror on them
 * and write, read, fail a leg, heal and rebuild it, pull a leg out and bring it back (taste
 * rejoins it), remove and insert a leg, check both legs hold the same bytes after every step.
 * Boot 2 (kernel environment dmtest.phase=2, same disks): load the module, check the mirror
 * assembled itself by taste from its legs and holds every byte written in boot 1, stop it and
 * unload the module.
 *
 * Output, for tests/vm/run's report: one "DMIRROR: pass NAME" or "DMIRROR: FAIL NAME: why" line
 * per check, "DMIRROR-END 0|1" at the end of the last boot; then it reboots (qemu -no-reboot
 * exits). Every fact used below (system call numbers, ioctl numbers, struct gctl_req layout) is
 * FreeBSD's amd64 ABI: sys/kern/syscalls.master, sys/sys/disk.h, sys/geom/geom_ctl.h.
 */

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long uint64_t;
typedef unsigned int uint32_t;
typedef unsigned char uint8_t;

/* System call numbers (syscalls.master). */
#define SYS_exit 1
#define SYS_read 3
#define SYS_write 4
#define SYS_open 5
#define SYS_close 6
#define SYS_sync 36
#define SYS_ioctl 54
#define SYS_reboot 55
#define SYS_nanosleep 240
#define SYS_kldload 304
#define SYS_kldunload 305
#define SYS_kenv 390
#define SYS_pread 475
#define SYS_pwrite 476
#define SYS_sysctlbyname 570

#define O_RDONLY 0
#define O_RDWR 2
#define RB_AUTOBOOT 0
#define KENV_GET 0

/* ioctls: _IOR('d', 129, off_t), _IO('d', 135), _IOW('G', GCTL_VERSION, struct gctl_req). */
#define DIOCGMEDIASIZE 0x40086481UL
#define DIOCGFLUSH 0x20006487UL
#define GEOM_CTL 0x80404702UL
#define GCTL_VERSION 2
#define GCTL_PARAM_RD 1
#define GCTL_PARAM_ASCII 4

#define EBUSY 16
#define TIOCDRAIN 0x2000745eUL /* _IO('t', 94) */

struct gctl_req_arg {
	uint32_t nlen;
	char *name;
	long offset;
	int flag;
	int len;
	void *value;
	void *kvalue;
};

struct gctl_req {
	uint32_t version;
	uint32_t serial;
	uint32_t narg;
	struct gctl_req_arg *arg;
	uint32_t lerror;
	char *error;
	void *reqt;
	int nerror;
	void *serror;
};

_Static_assert(sizeof(struct gctl_req_arg) == 48, "gctl_req_arg layout");
_Static_assert(sizeof(struct gctl_req) == 64, "gctl_req layout");

struct timespec {
	long tv_sec;
	long tv_nsec;
};

/* --- system calls ---------------------------------------------------------------------------- */

/* Returns the result, or -errno (the kernel sets the carry flag on error). */
static long
sc6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	register long r9 __asm__("r9") = a6;
	long ret;
	unsigned char cf;

	__asm__ volatile("syscall; setc %1"
	    : "=a"(ret), "=r"(cf), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8), "+r"(r9)
	    : "a"(n)
	    : "rcx", "r11", "memory", "cc");
	return (cf ? -ret : ret);
}

#define sc1(n, a) sc6(n, (long)(a), 0, 0, 0, 0, 0)
#define sc2(n, a, b) sc6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sc3(n, a, b, c) sc6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sc4(n, a, b, c, d) sc6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

/* The compiler may call these for struct copies and initialisers. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

void *
memset(void *d, int c, size_t n)
{
	uint8_t *p = d;

	while (n-- > 0)
		*p++ = (uint8_t)c;
	return (d);
}

void *
memcpy(void *d, const void *s, size_t n)
{
	uint8_t *p = d;
	const uint8_t *q = s;

	while (n-- > 0)
		*p++ = *q++;
	return (d);
}

int
memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;

	for (; n > 0; n--, p++, q++)
		if (*p != *q)
			return (*p < *q ? -1 : 1);
	return (0);
}

static size_t
slen(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0')
		n++;
	return (n);
}

static int
seq(const char *a, const char *b)
{
	return (slen(a) == slen(b) && memcmp(a, b, slen(a)) == 0);
}

/* --- console ---------------------------------------------------------------------------------- */

static int con = -1;
static char obuf[512];
static size_t olen;

static void
flush_out(void)
{
	if (olen > 0 && con >= 0) {
		sc3(SYS_write, con, obuf, olen);
		/* Wait until the line is out: the kernel's printf does not queue behind it. */
		sc3(SYS_ioctl, con, TIOCDRAIN, 0);
	}
	olen = 0;
}

static void
puts_(const char *s)
{
	while (*s != '\0') {
		if (olen == sizeof(obuf))
			flush_out();
		obuf[olen++] = *s;
		if (*s == '\n')
			flush_out();
		s++;
	}
}

static void
putu(uint64_t v)
{
	char b[24];
	int i = 23;

	b[i] = '\0';
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	puts_(&b[i]);
}

static void
puti(long v)
{
	if (v < 0) {
		puts_("-");
		putu((uint64_t)-v);
	} else {
		putu((uint64_t)v);
	}
}

static int failures;
static int checks;

/*
 * The kernel prints GEOM's messages on the same console, possibly in the middle of a line
 * written here (the tty writes a line in pieces). Most come right after the request that
 * caused them: give them a moment before each result line.
 */
static void sleep_ms(long ms);

static void
line_start(void)
{
	sleep_ms(30);
}

static void
pass(const char *name)
{
	checks++;
	line_start();
	puts_("DMIRROR: pass ");
	puts_(name);
	puts_("\n");
}

/* FAIL line: name, then a reason and an optional number. */
static void
fail(const char *name, const char *why, long num)
{
	checks++;
	failures++;
	line_start();
	puts_("DMIRROR: FAIL ");
	puts_(name);
	puts_(": ");
	puts_(why);
	if (num != 0) {
		puts_(" (");
		puti(num);
		puts_(")");
	}
	puts_("\n");
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	sc2(SYS_nanosleep, &ts, 0);
}

/* --- GEOM_CTL ---------------------------------------------------------------------------------- */

#define MAXARGS 32
static struct gctl_req_arg gargs[MAXARGS];
static uint32_t gnarg;
static char gerr[512];
static int gints[MAXARGS];
static long gnums[MAXARGS];

static void
g_begin(const char *class, const char *verb, uint32_t version)
{
	static uint32_t ver;

	gnarg = 0;
	ver = version;
	memset(gargs, 0, sizeof(gargs));
	gargs[gnarg++] = (struct gctl_req_arg){ .name = "class", .flag = GCTL_PARAM_RD | GCTL_PARAM_ASCII,
		.value = (void *)class, .len = (int)slen(class) + 1 };
	gargs[gnarg++] = (struct gctl_req_arg){ .name = "verb", .flag = GCTL_PARAM_RD | GCTL_PARAM_ASCII,
		.value = (void *)verb, .len = (int)slen(verb) + 1 };
	gargs[gnarg++] = (struct gctl_req_arg){ .name = "version", .flag = GCTL_PARAM_RD,
		.value = &ver, .len = sizeof(ver) };
}

static void
g_str(const char *name, const char *v)
{
	if (gnarg < MAXARGS)
		gargs[gnarg++] = (struct gctl_req_arg){ .name = (char *)name,
			.flag = GCTL_PARAM_RD | GCTL_PARAM_ASCII, .value = (void *)v,
			.len = (int)slen(v) + 1 };
}

static void
g_int(const char *name, int v)
{
	if (gnarg < MAXARGS) {
		gints[gnarg] = v;
		gargs[gnarg] = (struct gctl_req_arg){ .name = (char *)name, .flag = GCTL_PARAM_RD,
			.value = &gints[gnarg], .len = sizeof(int) };
		gnarg++;
	}
}

static void
g_num(const char *name, long v)
{
	if (gnarg < MAXARGS) {
		gnums[gnarg] = v;
		gargs[gnarg] = (struct gctl_req_arg){ .name = (char *)name, .flag = GCTL_PARAM_RD,
			.value = &gnums[gnarg], .len = sizeof(long) };
		gnarg++;
	}
}

/* Positional arguments as geom(8) sends them: nargs, arg0..argN-1. */
static void
g_args(int n, const char *a0, const char *a1, const char *a2)
{
	static char names[3][8] = { "arg0", "arg1", "arg2" };
	const char *v[3] = { a0, a1, a2 };
	int i;

	g_int("nargs", n);
	for (i = 0; i < n && i < 3; i++)
		g_str(names[i], v[i]);
}

/* Issue the request; 0 when the kernel reported no error (its text is in gerr). */
static int
g_issue(void)
{
	struct gctl_req req;
	uint32_t i;
	long fd, r;

	for (i = 0; i < gnarg; i++)
		gargs[i].nlen = (uint32_t)slen(gargs[i].name) + 1;
	memset(&req, 0, sizeof(req));
	memset(gerr, 0, sizeof(gerr));
	req.version = GCTL_VERSION;
	req.narg = gnarg;
	req.arg = gargs;
	req.lerror = sizeof(gerr);
	req.error = gerr;
	fd = sc2(SYS_open, "/dev/geom.ctl", O_RDONLY);
	if (fd < 0) {
		memcpy(gerr, "cannot open /dev/geom.ctl", 26);
		return (-1);
	}
	r = sc3(SYS_ioctl, fd, GEOM_CTL, &req);
	sc1(SYS_close, fd);
	if (r < 0 && gerr[0] == '\0')
		memcpy(gerr, "ioctl GEOM_CTL failed", 22);
	return (r < 0 || gerr[0] != '\0' ? -1 : 0);
}

/* A request that must succeed: PASS/FAIL line named `what`. */
static int
g_must(const char *what)
{
	if (g_issue() != 0) {
		fail(what, gerr, 0);
		return (-1);
	}
	pass(what);
	return (0);
}

/* --- kern.geom.confxml ------------------------------------------------------------------------ */

static char xml[1 << 20];

static int
confxml(void)
{
	size_t len = sizeof(xml) - 1;
	long r;

	r = sc6(SYS_sysctlbyname, (long)"kern.geom.confxml", 17, (long)xml, (long)&len, 0, 0);
	if (r < 0)
		return (-1);
	xml[len < sizeof(xml) ? len : sizeof(xml) - 1] = '\0';
	return (0);
}

static const char *
find(const char *hay, const char *needle)
{
	size_t n = slen(needle);

	for (; *hay != '\0'; hay++)
		if (memcmp(hay, needle, n) == 0)
			return (hay);
	return (0);
}

/* Copy the text between `open` (searched from p) and the next '<' into out. */
static int
xml_value(const char *p, const char *open, char *out, size_t outlen)
{
	const char *s;
	size_t i = 0;

	s = find(p, open);
	if (s == 0)
		return (-1);
	s += slen(open);
	while (s[i] != '<' && s[i] != '\0' && i + 1 < outlen) {
		out[i] = s[i];
		i++;
	}
	out[i] = '\0';
	return (0);
}

static char mstate[64], slot0[96], slot1[96];
static long repairs;

/* State of mirror `name` and of its slots 0 and 1, from the class's dumpconf. */
static int
mirror_state(const char *name)
{
	char tag[64];
	const char *p;

	mstate[0] = slot0[0] = slot1[0] = '\0';
	if (confxml() != 0)
		return (-1);
	memcpy(tag, "<Name>", 6);
	memcpy(tag + 6, name, slen(name));
	memcpy(tag + 6 + slen(name), "</Name>", 8);
	p = find(xml, tag);
	if (p == 0)
		return (-1);
	xml_value(p, "<State>", mstate, sizeof(mstate));
	xml_value(p, "<Slot0>", slot0, sizeof(slot0));
	xml_value(p, "<Slot1>", slot1, sizeof(slot1));
	{
		char num[24];
		int i;

		repairs = 0;
		if (xml_value(p, "<Repairs>", num, sizeof(num)) == 0)
			for (i = 0; num[i] >= '0' && num[i] <= '9'; i++)
				repairs = repairs * 10 + (num[i] - '0');
	}
	return (0);
}

/* A number of the mirror's dumpconf (e.g. "<RegionSize>"), or -1. */
static long
mirror_num(const char *name, const char *open)
{
	char tag[64], num[24];
	const char *p;
	long v = 0;
	int i;

	if (confxml() != 0)
		return (-1);
	memcpy(tag, "<Name>", 6);
	memcpy(tag + 6, name, slen(name));
	memcpy(tag + 6 + slen(name), "</Name>", 8);
	p = find(xml, tag);
	if (p == 0 || xml_value(p, open, num, sizeof(num)) != 0 || num[0] < '0' || num[0] > '9')
		return (-1);
	for (i = 0; num[i] >= '0' && num[i] <= '9'; i++)
		v = v * 10 + (num[i] - '0');
	return (v);
}

static void
show_state(const char *name)
{
	if (mirror_state(name) != 0) {
		puts_("DMIRROR:     (no mirror in kern.geom.confxml)\n");
		return;
	}
	puts_("DMIRROR:     state ");
	puts_(mstate);
	puts_(", slot 0: ");
	puts_(slot0);
	puts_(", slot 1: ");
	puts_(slot1);
	puts_("\n");
}

static int
starts(const char *s, const char *prefix)
{
	return (memcmp(s, prefix, slen(prefix)) == 0);
}

/* Wait until the mirror's state is `want` (and, if given, slot 1 starts with `s1`). */
static int
wait_state(const char *name, const char *want, const char *s1, int secs)
{
	int i;

	for (i = 0; i < secs * 10; i++) {
		if (mirror_state(name) == 0 && seq(mstate, want) && (s1 == 0 || starts(slot1, s1)))
			return (0);
		sleep_ms(100);
	}
	return (-1);
}

/* --- data ------------------------------------------------------------------------------------ */

#define MIB (1024L * 1024L)
#define SECTOR 512
static uint8_t wbuf[MIB], rbuf[MIB];

/* Every 8 bytes of a pattern say which tag and which byte offset of the device they are. */
static void
pattern(uint8_t *b, long off, long len, uint64_t tag)
{
	uint64_t *w = (uint64_t *)b;
	long i;

	for (i = 0; i < len / 8; i++)
		w[i] = (tag << 48) ^ (uint64_t)(off + i * 8) ^ 0x5a5a000000000000UL;
}

static int
dev_open(const char *path, int flags)
{
	return ((int)sc2(SYS_open, path, flags));
}

/* Write `len` bytes of pattern `tag` at `off` of `path` and flush; 0 or -errno. */
static long
write_pattern(const char *path, long off, long len, uint64_t tag)
{
	long fd, r, done;

	fd = dev_open(path, O_RDWR);
	if (fd < 0)
		return (fd);
	for (done = 0; done < len; done += MIB) {
		long n = len - done < MIB ? len - done : MIB;

		pattern(wbuf, off + done, n, tag);
		r = sc4(SYS_pwrite, fd, wbuf, n, off + done);
		if (r != n) {
			sc1(SYS_close, fd);
			return (r < 0 ? r : -5);
		}
	}
	r = sc3(SYS_ioctl, fd, DIOCGFLUSH, 0);
	sc1(SYS_close, fd);
	return (r < 0 ? r : 0);
}

/* 0 if `path` holds pattern `tag` at [off, off+len); -errno, or 1 on a mismatch. */
static long
check_pattern(const char *path, long off, long len, uint64_t tag)
{
	long fd, r, done;

	fd = dev_open(path, O_RDONLY);
	if (fd < 0)
		return (fd);
	for (done = 0; done < len; done += MIB) {
		long n = len - done < MIB ? len - done : MIB;

		r = sc4(SYS_pread, fd, rbuf, n, off + done);
		if (r != n) {
			sc1(SYS_close, fd);
			return (r < 0 ? r : -5);
		}
		pattern(wbuf, off + done, n, tag);
		if (memcmp(wbuf, rbuf, (size_t)n) != 0) {
			sc1(SYS_close, fd);
			return (1);
		}
	}
	sc1(SYS_close, fd);
	return (0);
}

static void
expect_data(const char *what, const char *path, long off, long len, uint64_t tag)
{
	long r = check_pattern(path, off, len, tag);

	if (r == 0)
		pass(what);
	else if (r == 1)
		fail(what, "the data read back differs from what was written", 0);
	else
		fail(what, "read error, errno", -r);
}

static long
mediasize(const char *path)
{
	long fd, sz = 0, r;

	fd = dev_open(path, O_RDONLY);
	if (fd < 0)
		return (fd);
	r = sc3(SYS_ioctl, fd, DIOCGMEDIASIZE, &sz);
	sc1(SYS_close, fd);
	return (r < 0 ? r : sz);
}

/* Wait for a device node to open. */
static int
wait_dev(const char *path, int secs)
{
	int i;
	long fd;

	for (i = 0; i < secs * 10; i++) {
		fd = dev_open(path, O_RDONLY);
		if (fd >= 0) {
			sc1(SYS_close, fd);
			return (0);
		}
		sleep_ms(100);
	}
	return (-1);
}

/*
 * Wait for a device to go away: its node, and its provider from GEOM's configuration (a
 * destroyed gnop lingers, withering, until its users let go; its node goes first).
 */
static int
wait_gone(const char *path, int secs)
{
	char tag[64];
	const char *name = path + 5; /* after "/dev/" */
	int i;
	long fd;

	memcpy(tag, "<name>", 6);
	memcpy(tag + 6, name, slen(name));
	memcpy(tag + 6 + slen(name), "</name>", 8);
	for (i = 0; i < secs * 10; i++) {
		fd = dev_open(path, O_RDONLY);
		if (fd >= 0)
			sc1(SYS_close, fd);
		else if (confxml() == 0 && find(xml, tag) == 0)
			return (0);
		sleep_ms(100);
	}
	return (-1);
}

/* --- the checks -------------------------------------------------------------------------------- */

#define NAME "t"
#define MDEV "/dev/dmirror/t"
#define DMVER 1  /* G_DMIRROR_VERSION (geom/g_dmirror.h) */
#define NOPVER 4 /* G_NOP_VERSION (sys/geom/nop/g_nop.h) */

/* Regions written in boot 1 and checked in both boots: offset, length, tag. */
#define A_OFF 0L
#define A_LEN MIB
#define B_OFF (4 * MIB)
#define B_LEN MIB
#define C_OFF (8 * MIB)
#define C_LEN (2 * MIB)
#define D_OFF (12 * MIB)
#define D_LEN MIB
#define R_OFF (20 * MIB)
#define R_LEN MIB
#define S0_OFF (24 * MIB) /* split brain: written with leg 0 alone */
#define S1_OFF (28 * MIB) /* split brain: written with leg 1 alone */
#define S_LEN MIB

static long mirror_size;

/* gnop verbs with every option geom(8)'s nop library sends (g_nop.c wants them all). */
static void
nop_opts(long failprob)
{
	g_num("count_until_fail", -1);
	g_num("delaymsec", -1);
	g_num("error", -1);
	g_num("rdelayprob", -1);
	g_num("rfailprob", failprob);
	g_num("wfailprob", failprob);
	g_num("wdelayprob", -1);
}

/*
 * The .nop providers end 1 MiB before their disk, so the mirror's metadata (at the end of a
 * leg) is found on vtbdN.nop only, never on the bare vtbdN: a destroyed .nop is a leg that is
 * really gone (as tests/scenarios/adapters/freebsd.sh arranges it with md and gnop).
 */
static void
nop_create(int n, const char *p0, const char *p1)
{
	long sz = mediasize("/dev/vtbd1");

	g_begin("NOP", "create", NOPVER);
	g_args(n, p0, p1, 0);
	nop_opts(-1);
	g_num("offset", 0);
	g_num("stripesize", 0);
	g_num("stripeoffset", 0);
	g_num("size", sz > MIB ? sz - MIB : 0);
	g_num("secsize", 0);
	g_str("physpath", "\255"); /* G_NOP_PHYSPATH_PASSTHROUGH */
}

static void
nop_config(const char *prov, long failprob)
{
	g_begin("NOP", "configure", NOPVER);
	g_args(1, prov, 0, 0);
	nop_opts(failprob);
}

/* Only reads fail (rfailprob), writes work. */
static void
nop_config_reads(const char *prov, long rfail)
{
	g_begin("NOP", "configure", NOPVER);
	g_args(1, prov, 0, 0);
	g_num("count_until_fail", -1);
	g_num("delaymsec", -1);
	g_num("error", -1);
	g_num("rdelayprob", -1);
	g_num("rfailprob", rfail);
	g_num("wfailprob", 0);
	g_num("wdelayprob", -1);
}

static void
nop_destroy(const char *prov)
{
	g_begin("NOP", "destroy", NOPVER);
	g_args(1, prov, 0, 0);
	g_int("force", 1);
}

static void
dm_simple(const char *verb, const char *a1)
{
	g_begin("DMIRROR", verb, DMVER);
	g_args(a1 != 0 ? 2 : 1, NAME, a1, 0);
	g_int("verbose", 0);
}

static int
set_timeout(uint32_t secs)
{
	return ((int)sc6(SYS_sysctlbyname, (long)"kern.geom.dmirror.timeout", 25, 0, 0,
	    (long)&secs, sizeof(secs)));
}

/* A digest of a whole device (FNV-1a over 64-bit words): "unchanged" checks. */
static uint64_t
digest(const char *path)
{
	uint64_t h = 14695981039346656037UL;
	long fd, r, off = 0, i;

	fd = dev_open(path, O_RDONLY);
	if (fd < 0)
		return (0);
	for (;;) {
		r = sc4(SYS_pread, fd, rbuf, MIB, off);
		if (r <= 0)
			break;
		for (i = 0; i < r / 8; i++)
			h = (h ^ ((uint64_t *)rbuf)[i]) * 1099511628211UL;
		off += r;
	}
	sc1(SYS_close, fd);
	return (h);
}

static void
both_legs(const char *what, const char *l0, const char *l1, long off, long len, uint64_t tag)
{
	char name[96];
	size_t n = slen(what);

	memcpy(name, what, n);
	memcpy(name + n, " (leg 0)", 9);
	expect_data(name, l0, off, len, tag);
	memcpy(name + n, " (leg 1)", 9);
	expect_data(name, l1, off, len, tag);
}

/* The <Reads> counter of leg k (its consumer's dumpconf), or -1. */
static long
leg_reads(int k)
{
	char tag[16] = "<Leg>0</Leg>", num[24];
	const char *p;
	long v = 0;
	int i;

	tag[5] = (char)('0' + k);
	if (confxml() != 0 || (p = find(xml, tag)) == 0 ||
	    xml_value(p, "<Reads>", num, sizeof(num)) != 0)
		return (-1);
	for (i = 0; num[i] >= '0' && num[i] <= '9'; i++)
		v = v * 10 + (num[i] - '0');
	return (v);
}

/*
 * As tests/scenarios/read-policies.sh: with `prefer` every read goes to that leg, with
 * round-robin both legs serve reads. Counters come from the worker's status snapshot: wait
 * until they move (or 3 s).
 */
static void
read_policy(const char *balance, int want0, int want1)
{
	char what[96];
	long a0, a1, b0 = -1, b1 = -1;
	size_t n;
	int i;

	n = slen(balance);
	memcpy(what, "read policy ", 12);
	memcpy(what + 12, balance, n);
	what[12 + n] = '\0';
	g_begin("DMIRROR", "configure", DMVER);
	g_args(1, NAME, 0, 0);
	g_int("verbose", 0);
	g_str("balance", balance);
	if (g_issue() != 0) {
		fail(what, gerr, 0);
		return;
	}
	sleep_ms(500);
	a0 = leg_reads(0);
	a1 = leg_reads(1);
	for (i = 0; i < 8; i++)
		if (check_pattern(MDEV, A_OFF, A_LEN, 0xA) != 0) {
			fail(what, "a read returned wrong data", 0);
			return;
		}
	for (i = 0; i < 30; i++) {
		sleep_ms(100);
		b0 = leg_reads(0);
		b1 = leg_reads(1);
		if ((b0 - a0) + (b1 - a1) >= 8)
			break;
	}
	if (a0 < 0 || a1 < 0 || ((b0 > a0) != want0) || ((b1 > a1) != want1)) {
		fail(what, "reads went to the wrong legs (leg 1 reads)", b1 - a1);
		puts_("DMIRROR:     leg 0 reads ");
		puti(b0 - a0);
		puts_(", leg 1 reads ");
		puti(b1 - a1);
		puts_("\n");
	} else {
		pass(what);
	}
}

/* Compare leg 0 and leg 1 (raw disks) over [off, off+len). 0 if equal. */
static int
legs_equal(long off, long len)
{
	static uint8_t b0[MIB];
	long f0, f1, done, n;
	int bad = 0;

	f0 = dev_open("/dev/vtbd1.nop", O_RDONLY);
	f1 = dev_open("/dev/vtbd2.nop", O_RDONLY);
	if (f0 < 0 || f1 < 0)
		bad = 1;
	for (done = 0; !bad && done < len; done += n) {
		n = len - done < MIB ? len - done : MIB;
		if (sc4(SYS_pread, f0, b0, n, off + done) != n ||
		    sc4(SYS_pread, f1, rbuf, n, off + done) != n || memcmp(b0, rbuf, (size_t)n) != 0)
			bad = 1;
	}
	if (f0 >= 0)
		sc1(SYS_close, f0);
	if (f1 >= 0)
		sc1(SYS_close, f1);
	return (bad);
}

/*
 * As tests/scenarios/unclean-dirty-only.sh: after a crash only the regions the write-intent
 * log has dirty are resynced. The crash: one request makes both gnops fail every I/O (nothing
 * reaches a leg after that instant), the gnops are destroyed, the mirror is stopped.
 */
static void
crash_test(void)
{
	long rs, ra, rb, r;
	int i;

	rs = mirror_num(NAME, "<RegionSize>");
	if (rs <= 0 || rs > 4 * MIB) {
		fail("crash: region size", "unexpected", rs);
		return;
	}
	ra = (36 * MIB + rs - 1) / rs * rs;
	rb = (44 * MIB + rs - 1) / rs * rs;
	if (rb + rs > mirror_size) {
		fail("crash: regions fit", "mirror too small", mirror_size);
		return;
	}
	r = write_pattern(MDEV, rb, rs, 0x101);
	if (r == 0)
		r = write_pattern(MDEV, ra, rs, 0x102);
	for (i = 0; i < 100 && mirror_num(NAME, "<DirtyRegions>") != 0; i++)
		sleep_ms(100);
	/*
	 * DirtyRegions counts the log in memory: a region's clear reaches the disk with a later
	 * metadata write (seen: a crash right after "0" resynced the region). Wait for the
	 * metadata writes to stop as well.
	 */
	{
		long mw = -2, now;

		for (i = 0; i < 50; i++) {
			now = mirror_num(NAME, "<MetaWrites>");
			if (now == mw)
				break;
			mw = now;
			sleep_ms(500);
		}
	}
	if (r == 0 && mirror_num(NAME, "<DirtyRegions>") == 0)
		pass("crash: two regions written and flushed, the log goes clean");
	else
		fail("crash: two regions written and flushed, the log goes clean", "dirty",
		    mirror_num(NAME, "<DirtyRegions>"));
	{
		/* region A again, not flushed, and the crash right after it */
		long fd = dev_open(MDEV, O_RDWR);

		pattern(wbuf, ra, rs, 0x103);
		r = fd < 0 ? fd : sc4(SYS_pwrite, fd, wbuf, rs, ra);
		if (fd >= 0)
			sc1(SYS_close, fd);
	}
	g_begin("NOP", "configure", NOPVER);
	g_args(2, "vtbd1.nop", "vtbd2.nop", 0);
	nop_opts(100);
	if (r == rs)
		g_must("crash: region A written again, then both gnops fail every I/O (one request)");
	else
		fail("crash: region A written again", "errno", -r);
	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	g_begin("DMIRROR", "stop", DMVER);
	g_args(1, NAME, 0, 0);
	g_int("force", 1);
	(void)g_issue();
	if (wait_gone("/dev/vtbd1.nop", 20) == 0 && wait_gone("/dev/vtbd2.nop", 20) == 0 &&
	    wait_gone(MDEV, 20) == 0)
		pass("crash: legs gone, mirror stopped");
	else
		fail("crash: legs gone, mirror stopped", "something is left", 0);
	/* While it is down, leg 1 gets other data in both regions (nothing else writes there). */
	if (write_pattern("/dev/vtbd2", ra, rs, 0x102) != 0 ||
	    write_pattern("/dev/vtbd2", rb, rs, 0x109) != 0)
		fail("crash: poke leg 1", "write error", 0);
	nop_create(2, "vtbd1", "vtbd2");
	g_must("crash: the legs come back");
	if (wait_dev(MDEV, 20) == 0 && wait_state(NAME, "COMPLETE", 0, 60) == 0)
		pass("crash: assembled by taste, both legs in sync");
	else
		fail("crash: assembled by taste, both legs in sync", mstate, 0);
	show_state(NAME);
	if (legs_equal(ra, rs) == 0)
		pass("crash: the legs agree on the dirty region");
	else
		fail("crash: the legs agree on the dirty region", "they differ", 0);
	if (check_pattern(MDEV, ra, rs, 0x103) == 0 || check_pattern(MDEV, ra, rs, 0x102) == 0)
		pass("crash: the dirty region holds the old or the new data");
	else
		fail("crash: the dirty region holds the old or the new data", "neither", 0);
	{
		long c1 = check_pattern("/dev/vtbd2.nop", rb, rs, 0x109);
		long c0 = check_pattern("/dev/vtbd1.nop", rb, rs, 0x101);

		if (c0 == 0 && c1 == 0)
			pass("crash: the clean region was not resynced");
		else if (c0 != 0)
			fail("crash: the clean region was not resynced", "leg 0 changed there", c0);
		else if (check_pattern("/dev/vtbd2.nop", rb, rs, 0x101) == 0)
			fail("crash: the clean region was not resynced", "leg 1 was resynced there",
			    c1);
		else
			fail("crash: the clean region was not resynced", "leg 1 changed there", c1);
	}
	/* Make the legs agree again for what follows (boot 2 compares them). */
	r = write_pattern(MDEV, rb, rs, 0x101);
	if (r != 0)
		fail("crash: rewrite the clean region", "errno", -r);
}

static void
phase1(void)
{
	long r, sz;

	/* Bad input is refused with a clear error and changes nothing. */
	g_begin("DMIRROR", "label", DMVER);
	g_args(3, NAME, "vtbd1", "vtbd1");
	if (g_issue() == 0)
		fail("label refuses a provider given twice", "accepted", 0);
	else {
		puts_("DMIRROR:     kernel said: ");
		puts_(gerr);
		puts_("\n");
		pass("label refuses a provider given twice");
	}
	g_begin("DMIRROR", "label", DMVER);
	g_args(3, NAME, "vtbd1", "nosuchdisk");
	if (g_issue() == 0)
		fail("label refuses a provider that does not exist", "accepted", 0);
	else
		pass("label refuses a provider that does not exist");
	if (mirror_state(NAME) == 0)
		fail("refused labels leave no mirror behind", mstate, 0);
	else
		pass("refused labels leave no mirror behind");

	/* gnop(4) between the disks and the mirror lets us fail and pull a leg. */
	nop_create(2, "vtbd1", "vtbd2");
	if (g_must("gnop create vtbd1.nop vtbd2.nop") != 0)
		return;

	g_begin("DMIRROR", "label", DMVER);
	g_args(3, NAME, "vtbd1.nop", "vtbd2.nop");
	/* As geom(8) sends it: every option, with its default. */
	g_int("verbose", 1);
	g_str("balance", "");
	g_int("nosync", 0);
	g_num("regionsize", 0);
	g_num("slots", 0);
	if (g_must("label t vtbd1.nop vtbd2.nop") != 0)
		return;
	if (wait_dev(MDEV, 10) != 0) {
		fail("/dev/dmirror/t appears", "no device after 10 s", 0);
		return;
	}
	pass("/dev/dmirror/t appears");
	if (wait_state(NAME, "COMPLETE", 0, 60) == 0)
		pass("initial synchronisation completes");
	else
		fail("initial synchronisation completes", mstate, 0);
	show_state(NAME);

	sz = mediasize(MDEV);
	mirror_size = sz;
	if (sz > 16 * MIB && sz < mediasize("/dev/vtbd1"))
		pass("mirror size: smaller than a leg (metadata at the end), room for the test");
	else
		fail("mirror size", "unexpected size", sz);

	r = write_pattern(MDEV, A_OFF, A_LEN, 0xA);
	if (r == 0)
		pass("write 1 MiB at 0 and flush");
	else
		fail("write 1 MiB at 0 and flush", "errno", -r);
	r = write_pattern(MDEV, sz - 64 * 1024, 64 * 1024, 0xE);
	if (r == 0)
		pass("write the last 64 KiB");
	else
		fail("write the last 64 KiB", "errno", -r);
	expect_data("read back through the mirror", MDEV, A_OFF, A_LEN, 0xA);
	expect_data("read back the last 64 KiB", MDEV, sz - 64 * 1024, 64 * 1024, 0xE);
	both_legs("same bytes on both legs", "/dev/vtbd1.nop", "/dev/vtbd2.nop", A_OFF, A_LEN, 0xA);
	both_legs("last 64 KiB on both legs", "/dev/vtbd1.nop", "/dev/vtbd2.nop", sz - 64 * 1024,
	    64 * 1024, 0xE);

	/* Leg failure: every I/O to leg 1 fails; writes still succeed on leg 0. */
	nop_config("vtbd2.nop", 100);
	if (g_must("gnop: fail every I/O of vtbd2.nop") != 0)
		return;
	r = write_pattern(MDEV, B_OFF, B_LEN, 0xB);
	if (r == 0)
		pass("write with a failing leg succeeds");
	else
		fail("write with a failing leg succeeds", "errno", -r);
	if (wait_state(NAME, "DEGRADED", "FAILED", 10) == 0)
		pass("the failing leg is marked FAILED, the mirror DEGRADED");
	else
		fail("the failing leg is marked FAILED, the mirror DEGRADED", mstate, 0);
	show_state(NAME);
	expect_data("read with a failed leg", MDEV, B_OFF, B_LEN, 0xB);
	expect_data("earlier data still readable", MDEV, A_OFF, A_LEN, 0xA);

	/* Heal the device and rebuild the leg. */
	nop_config("vtbd2.nop", 0);
	g_must("gnop: heal vtbd2.nop");
	g_begin("DMIRROR", "rebuild", DMVER);
	g_args(2, NAME, "vtbd2.nop", 0);
	g_must("rebuild t vtbd2.nop");
	if (wait_state(NAME, "COMPLETE", 0, 60) == 0)
		pass("rebuild completes");
	else
		fail("rebuild completes", mstate, 0);
	show_state(NAME);
	both_legs("data written while degraded is on both legs after rebuild", "/dev/vtbd1.nop",
	    "/dev/vtbd2.nop", B_OFF, B_LEN, 0xB);

	/* A leg vanishes (its provider is destroyed) and comes back: taste rejoins it. */
	g_begin("NOP", "destroy", NOPVER);
	g_args(1, "vtbd2.nop", 0, 0);
	g_int("force", 1);
	g_must("gnop destroy -f vtbd2.nop (the leg vanishes)");
	if (wait_gone("/dev/vtbd2.nop", 10) != 0)
		fail("the leg's provider goes away", "/dev/vtbd2.nop still there after 10 s", 0);
	if (wait_state(NAME, "DEGRADED", "MISSING", 10) == 0)
		pass("the vanished leg is MISSING");
	else
		fail("the vanished leg is MISSING", slot1, 0);
	show_state(NAME);
	r = write_pattern(MDEV, C_OFF, C_LEN, 0xC);
	if (r == 0)
		pass("write while a leg is missing");
	else
		fail("write while a leg is missing", "errno", -r);
	nop_create(1, "vtbd2", 0);
	g_must("gnop create vtbd2.nop (the leg returns)");
	if (wait_state(NAME, "COMPLETE", 0, 60) == 0)
		pass("the returning leg is tasted, rejoined and resynchronised");
	else
		fail("the returning leg is tasted, rejoined and resynchronised", slot1, 0);
	show_state(NAME);
	both_legs("data written while missing is on both legs", "/dev/vtbd1.nop", "/dev/vtbd2.nop",
	    C_OFF, C_LEN, 0xC);

	/* remove + insert. */
	g_begin("DMIRROR", "remove", DMVER);
	g_args(2, NAME, "vtbd2.nop", 0);
	g_must("remove t vtbd2.nop");
	show_state(NAME);
	r = write_pattern(MDEV, D_OFF, D_LEN, 0xD);
	if (r == 0)
		pass("write after remove");
	else
		fail("write after remove", "errno", -r);
	g_begin("DMIRROR", "insert", DMVER);
	g_args(2, NAME, "vtbd2.nop", 0);
	g_must("insert t vtbd2.nop");
	if (wait_state(NAME, "COMPLETE", 0, 60) != 0)
		fail("the inserted leg is rebuilt", mstate, 0);
	else if (find(slot0, "vtbd2.nop") == 0 && find(slot1, "vtbd2.nop") == 0)
		fail("the inserted leg is rebuilt", "vtbd2.nop is in no slot", 0);
	else
		pass("the inserted leg is rebuilt");
	show_state(NAME);
	both_legs("all data on both legs after insert", "/dev/vtbd1.nop", "/dev/vtbd2.nop", D_OFF,
	    D_LEN, 0xD);
	both_legs("first region on both legs after insert", "/dev/vtbd1.nop", "/dev/vtbd2.nop",
	    A_OFF, A_LEN, 0xA);

	/* Read errors: leg 1 (preferred for reads) fails every read, writes still work. */
	r = write_pattern(MDEV, R_OFF, R_LEN, 0x11);
	if (r != 0)
		fail("write region R", "errno", -r);
	g_begin("DMIRROR", "configure", DMVER);
	g_args(1, NAME, 0, 0);
	g_int("verbose", 0);
	g_str("balance", "prefer:vtbd2.nop");
	g_must("configure -b prefer:vtbd2.nop");
	nop_config_reads("vtbd2.nop", 100);
	g_must("gnop: every read of vtbd2.nop fails (writes work)");
	expect_data("reads succeed while the preferred leg fails every read", MDEV, R_OFF, R_LEN,
	    0x11);
	for (int i = 0; i < 30 && (mirror_state(NAME) != 0 || repairs == 0); i++)
		sleep_ms(100); /* the counters are a snapshot the worker refreshes */
	if (mirror_state(NAME) == 0 && starts(slot1, "IN_SYNC") && repairs > 0)
		pass("the read error is repaired by rewriting the leg, which stays IN_SYNC");
	else
		fail("the read error is repaired by rewriting the leg, which stays IN_SYNC", slot1,
		    repairs);
	/* As tests/scenarios/read-errors.sh: the preferred leg fails every read and write. */
	nop_config("vtbd2.nop", 100);
	g_must("gnop: every I/O of vtbd2.nop fails");
	expect_data("reads succeed while the preferred leg fails every I/O", MDEV, R_OFF, R_LEN,
	    0x11);
	expect_data("and again", MDEV, R_OFF, R_LEN, 0x11);
	if (wait_state(NAME, "DEGRADED", "FAILED", 10) == 0)
		pass("the leg whose I/O fails is FAILED");
	else
		fail("the leg whose I/O fails is FAILED", slot1, 0);
	show_state(NAME);
	nop_config("vtbd2.nop", 0);
	g_must("gnop: heal vtbd2.nop");
	sleep_ms(1500);
	if (mirror_state(NAME) == 0 && starts(slot1, "FAILED"))
		pass("the failed leg stays FAILED once its device works again");
	else
		fail("the failed leg stays FAILED once its device works again", slot1, 0);
	nop_destroy("vtbd2.nop");
	g_must("gnop destroy -f vtbd2.nop (the failed leg vanishes)");
	if (wait_gone("/dev/vtbd2.nop", 10) != 0)
		fail("the failed leg's provider goes away", "/dev/vtbd2.nop still there after 10 s", 0);
	nop_create(1, "vtbd2", 0);
	g_must("gnop create vtbd2.nop (and comes back)");
	sleep_ms(3000);
	if (mirror_state(NAME) == 0 && !starts(slot1, "IN_SYNC") && !starts(slot1, "REBUILDING"))
		pass("a failed leg that disappears and reappears is not taken back");
	else
		fail("a failed leg that disappears and reappears is not taken back", slot1, 0);
	show_state(NAME);
	dm_simple("insert", "vtbd2.nop");
	if (g_issue() == 0) {
		pass("give leg 1 back: insert t vtbd2.nop");
	} else {
		puts_("DMIRROR:     insert said: ");
		puts_(gerr);
		puts_("\n");
		dm_simple("rebuild", "vtbd2.nop");
		g_must("give leg 1 back: rebuild t vtbd2.nop");
	}
	if (wait_state(NAME, "COMPLETE", 0, 60) == 0 && find(slot1, "vtbd2.nop") != 0)
		pass("leg 1 comes back in sync");
	else
		fail("leg 1 comes back in sync", slot1, 0);
	show_state(NAME);
	both_legs("region R on both legs after the rebuild", "/dev/vtbd1.nop", "/dev/vtbd2.nop",
	    R_OFF, R_LEN, 0x11);
	read_policy("prefer:vtbd1.nop", 1, 0);
	read_policy("prefer:vtbd2.nop", 0, 1);
	read_policy("prefer:0", 1, 0);
	read_policy("round-robin", 1, 1);

	crash_test();

	/* The module must not unload while a mirror is open. */
	{
		long fd = dev_open(MDEV, O_RDONLY);

		r = sc1(SYS_kldunload, 2);
		if (r == -EBUSY || (r < 0 && fd >= 0))
			pass("kldunload is refused while a mirror is open");
		else
			fail("kldunload is refused while a mirror is open", "result", r);
		if (fd >= 0)
			sc1(SYS_close, fd);
	}
	sc1(SYS_sync, 0);
}

/* Start the mirror from the .nop of one disk only (the others destroyed); degraded start. */
static int
start_alone(const char *disk, const char *what)
{
	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	(void)wait_gone("/dev/vtbd1.nop", 10);
	(void)wait_gone("/dev/vtbd2.nop", 10);
	nop_create(1, disk, 0);
	if (g_issue() != 0) {
		fail(what, gerr, 0);
		return (-1);
	}
	if (wait_dev(MDEV, 30) != 0) {
		fail(what, "the mirror did not start degraded", 0);
		return (-1);
	}
	pass(what);
	show_state(NAME);
	return (0);
}

static void
stop_mirror(const char *what)
{
	g_begin("DMIRROR", "stop", DMVER);
	g_args(1, NAME, 0, 0);
	if (g_issue() != 0)
		fail(what, gerr, 0);
	else if (wait_dev(MDEV, 0) == 0)
		fail(what, "still there", 0);
	else
		pass(what);
}

static void
split_brain(void)
{
	uint64_t d0, d1;
	long r;

	if (set_timeout(2) != 0)
		fail("sysctl kern.geom.dmirror.timeout=2", "refused", 0);
	if (start_alone("vtbd1", "split brain: leg 0 alone starts (degraded) after the timeout") != 0)
		return;
	r = write_pattern(MDEV, S0_OFF, S_LEN, 0x50);
	if (r != 0)
		fail("split brain: write with leg 0 alone", "errno", -r);
	stop_mirror("split brain: stop");
	if (start_alone("vtbd2", "split brain: leg 1 alone starts (degraded)") != 0)
		return;
	r = write_pattern(MDEV, S1_OFF, S_LEN, 0x51);
	if (r != 0)
		fail("split brain: write with leg 1 alone", "errno", -r);
	stop_mirror("split brain: stop again");
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	(void)wait_gone("/dev/vtbd2.nop", 10);
	d0 = digest("/dev/vtbd1");
	d1 = digest("/dev/vtbd2");
	nop_create(2, "vtbd1", "vtbd2");
	g_must("split brain: both legs come back");
	if (wait_dev(MDEV, 8) != 0)
		pass("split brain: assembling both legs is refused");
	else {
		fail("split brain: assembling both legs is refused", "the mirror started", 0);
		show_state(NAME);
		stop_mirror("split brain: stop the wrongly assembled mirror");
	}
	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	(void)wait_gone("/dev/vtbd1.nop", 10);
	(void)wait_gone("/dev/vtbd2.nop", 10);
	if (digest("/dev/vtbd1") == d0 && digest("/dev/vtbd2") == d1)
		pass("split brain: both legs unchanged, metadata included");
	else
		fail("split brain: both legs unchanged, metadata included", "a leg changed", 0);
	if (start_alone("vtbd1", "split brain: leg 0 alone still assembles") == 0) {
		expect_data("split brain: leg 0 holds its write", MDEV, S0_OFF, S_LEN, 0x50);
		expect_data("split brain: leg 0 holds the common data", MDEV, A_OFF, A_LEN, 0xA);
		stop_mirror("split brain: stop leg 0");
	}
	if (start_alone("vtbd2", "split brain: leg 1 alone still assembles") == 0) {
		expect_data("split brain: leg 1 holds its write", MDEV, S1_OFF, S_LEN, 0x51);
		stop_mirror("split brain: stop leg 1");
	}
}

static void
nop_create_sized(const char *disk, long bytes)
{
	g_begin("NOP", "create", NOPVER);
	g_args(1, disk, 0, 0);
	nop_opts(-1);
	g_num("offset", 0);
	g_num("stripesize", 0);
	g_num("stripeoffset", 0);
	g_num("size", bytes);
	g_num("secsize", 0);
	g_str("physpath", "\255");
}

/*
 * As tests/scenarios/sizes.sh, then destroy: legs of 40 and 48 MiB (gnops over the disks);
 * the mirror is the smaller less its metadata; `destroy` clears the metadata, so the same
 * devices coming back make no mirror.
 */
static void
sizes_and_destroy(void)
{
	long sz, r;

	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	(void)wait_gone("/dev/vtbd1.nop", 10);
	(void)wait_gone("/dev/vtbd2.nop", 10);
	nop_create_sized("vtbd1", 40 * MIB);
	g_must("sizes: a 40 MiB leg");
	nop_create_sized("vtbd2", 48 * MIB);
	g_must("sizes: a 48 MiB leg");
	g_begin("DMIRROR", "label", DMVER);
	g_args(3, NAME, "vtbd2.nop", "vtbd1.nop");
	g_int("verbose", 1);
	g_str("balance", "");
	g_int("nosync", 0);
	g_num("regionsize", 0);
	g_num("slots", 0);
	if (g_must("sizes: label t vtbd2.nop vtbd1.nop") != 0 || wait_dev(MDEV, 10) != 0)
		return;
	sz = mediasize(MDEV);
	if (sz <= 40 * MIB && sz >= 38 * MIB)
		pass("sizes: the mirror is the smaller leg less at most 2 MiB of metadata");
	else
		fail("sizes: the mirror is the smaller leg less at most 2 MiB of metadata", "size",
		    sz);
	r = write_pattern(MDEV, sz - 64 * 1024, 64 * 1024, 0x7);
	if (r == 0)
		r = write_pattern(MDEV, 0, 64 * 1024, 0x8);
	if (r == 0)
		pass("sizes: the first and the last 64 KiB written");
	else
		fail("sizes: the first and the last 64 KiB written", "errno", -r);
	if (wait_state(NAME, "COMPLETE", 0, 60) == 0)
		pass("sizes: the legs come in sync");
	else
		fail("sizes: the legs come in sync", mstate, 0);
	expect_data("sizes: the last 64 KiB read back", MDEV, sz - 64 * 1024, 64 * 1024, 0x7);
	expect_data("sizes: the smaller leg holds them at the same offset", "/dev/vtbd1.nop",
	    sz - 64 * 1024, 64 * 1024, 0x7);
	if (legs_equal(0, sz) == 0)
		pass("sizes: both legs hold the same data over the mirror's size");
	else
		fail("sizes: both legs hold the same data over the mirror's size", "they differ", 0);
	g_begin("DMIRROR", "destroy", DMVER);
	g_args(1, NAME, 0, 0);
	g_int("force", 0);
	g_must("destroy t");
	if (wait_gone(MDEV, 10) == 0)
		pass("destroy: the mirror is gone");
	else
		fail("destroy: the mirror is gone", "still there", 0);
	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	(void)wait_gone("/dev/vtbd1.nop", 10);
	(void)wait_gone("/dev/vtbd2.nop", 10);
	nop_create_sized("vtbd1", 40 * MIB);
	(void)g_issue();
	nop_create_sized("vtbd2", 48 * MIB);
	(void)g_issue();
	if (wait_dev(MDEV, 6) != 0 && mirror_state(NAME) != 0)
		pass("destroy: its legs carry no metadata any more (nothing assembles)");
	else
		fail("destroy: its legs carry no metadata any more (nothing assembles)",
		    "a mirror came up", 0);
}

/* A number in leg k's consumer dumpconf (e.g. "<ResyncDone>"), or -1. */
static long
leg_num(int k, const char *open)
{
	char tag[16] = "<Leg>0</Leg>", num[24];
	const char *p;
	long v = 0;
	int i;

	tag[5] = (char)('0' + k);
	if (confxml() != 0 || (p = find(xml, tag)) == 0 || xml_value(p, open, num, sizeof(num)) != 0)
		return (-1);
	for (i = 0; num[i] >= '0' && num[i] <= '9'; i++)
		v = v * 10 + (num[i] - '0');
	return (v);
}

/*
 * As tests/scenarios/rebuild-resume.sh: a rebuild slowed down (gnop delays every write to the
 * leg) is cut by a crash past two thirds; when the legs return it resumes from its recorded
 * checkpoint: region 1 (below it) is not copied again, the last region (past it) is.
 */
static void
rebuild_resume(void)
{
	long rs, sz, last, r, done, total;
	int i;

	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	(void)wait_gone("/dev/vtbd1.nop", 10);
	(void)wait_gone("/dev/vtbd2.nop", 10);
	nop_create_sized("vtbd1", 40 * MIB);
	(void)g_issue();
	nop_create_sized("vtbd2", 40 * MIB);
	(void)g_issue();
	g_begin("DMIRROR", "label", DMVER);
	g_args(3, NAME, "vtbd1.nop", "vtbd2.nop");
	g_int("verbose", 1);
	g_str("balance", "");
	g_int("nosync", 0);
	g_num("regionsize", 64 * 1024); /* as the scenarios: many regions, checkpoints every 64 */
	g_num("slots", 0);
	if (g_must("resume: label t on two 40 MiB legs, 64 KiB regions") != 0 ||
	    wait_dev(MDEV, 10) != 0 ||
	    wait_state(NAME, "COMPLETE", 0, 60) != 0)
		return;
	rs = mirror_num(NAME, "<RegionSize>");
	sz = mediasize(MDEV);
	last = (sz / rs - 1) * rs;
	r = write_pattern(MDEV, rs, rs, 0x111);
	nop_config("vtbd2.nop", 100);
	(void)g_issue();
	if (r == 0)
		r = write_pattern(MDEV, last, rs, 0x112);
	if (r == 0 && wait_state(NAME, "DEGRADED", "FAILED", 10) == 0)
		pass("resume: region 1 written, leg 1 failed, the last region written");
	else
		fail("resume: region 1 written, leg 1 failed, the last region written", slot1, r);
	for (i = 0; i < 100 && mirror_num(NAME, "<DirtyRegions>") != 0; i++)
		sleep_ms(100);
	/* heal, but every write to leg 1 waits 40 ms: the rebuild crawls */
	g_begin("NOP", "configure", NOPVER);
	g_args(1, "vtbd2.nop", 0, 0);
	g_num("count_until_fail", -1);
	g_num("delaymsec", 40);
	g_num("error", -1);
	g_num("rdelayprob", 0);
	g_num("rfailprob", 0);
	g_num("wfailprob", 0);
	g_num("wdelayprob", 100);
	g_must("resume: heal leg 1, slow its writes down");
	dm_simple("rebuild", "vtbd2.nop");
	g_must("resume: rebuild t vtbd2.nop");
	done = total = -1;
	for (i = 0; i < 1200; i++) {
		done = leg_num(1, "<ResyncDone>");
		total = leg_num(1, "<ResyncTotal>");
		if (total > 0 && done * 3 >= total * 2)
			break;
		sleep_ms(100);
	}
	if (total > 0 && done * 3 >= total * 2 && done < total)
		pass("resume: the rebuild passes two thirds");
	else {
		fail("resume: the rebuild passes two thirds", "done", done);
		return;
	}
	/* the crash */
	g_begin("NOP", "configure", NOPVER);
	g_args(2, "vtbd1.nop", "vtbd2.nop", 0);
	nop_opts(100);
	(void)g_issue();
	nop_destroy("vtbd1.nop");
	(void)g_issue();
	nop_destroy("vtbd2.nop");
	(void)g_issue();
	g_begin("DMIRROR", "stop", DMVER);
	g_args(1, NAME, 0, 0);
	g_int("force", 1);
	(void)g_issue();
	if (wait_gone("/dev/vtbd1.nop", 30) == 0 && wait_gone("/dev/vtbd2.nop", 30) == 0 &&
	    wait_gone(MDEV, 30) == 0)
		pass("resume: crash mid-rebuild");
	else {
		fail("resume: crash mid-rebuild", "something is left", 0);
		return;
	}
	if (write_pattern("/dev/vtbd2", rs, rs, 0x119) != 0)
		fail("resume: poke leg 1's region 1", "write error", 0);
	nop_create_sized("vtbd1", 40 * MIB);
	(void)g_issue();
	nop_create_sized("vtbd2", 40 * MIB);
	(void)g_issue();
	if (wait_dev(MDEV, 20) == 0 && wait_state(NAME, "COMPLETE", 0, 120) == 0) {
		pass("resume: assembled, the rebuild completes");
		show_state(NAME);
		expect_data("resume: region 1, below the checkpoint, was not copied again",
		    "/dev/vtbd2.nop", rs, rs, 0x119);
		expect_data("resume: the last region, past the checkpoint, was copied",
		    "/dev/vtbd2.nop", last, rs, 0x112);
	} else {
		fail("resume: assembled, the rebuild completes", mstate, 0);
		show_state(NAME);
	}
	g_begin("DMIRROR", "destroy", DMVER);
	g_args(1, NAME, 0, 0);
	g_int("force", 0);
	g_must("resume: destroy t");
}

static void
phase2(void)
{
	long r;

	if (wait_dev(MDEV, 2) == 0)
		fail("boot 2: no mirror on the bare disks", "found one before the .nop providers", 0);
	else
		pass("boot 2: no mirror on the bare disks");
	nop_create(2, "vtbd1", "vtbd2");
	g_must("boot 2: gnop create vtbd1.nop vtbd2.nop");
	if (wait_dev(MDEV, 20) == 0)
		pass("boot 2: the mirror assembled itself by taste");
	else {
		fail("boot 2: the mirror assembled itself by taste", "no /dev/dmirror/t", 0);
		return;
	}
	if (wait_state(NAME, "COMPLETE", 0, 60) == 0)
		pass("boot 2: both legs IN_SYNC");
	else
		fail("boot 2: both legs IN_SYNC", mstate, 0);
	show_state(NAME);
	expect_data("boot 2: region A", MDEV, A_OFF, A_LEN, 0xA);
	expect_data("boot 2: region B (written while a leg failed)", MDEV, B_OFF, B_LEN, 0xB);
	expect_data("boot 2: region C (written while a leg was missing)", MDEV, C_OFF, C_LEN, 0xC);
	expect_data("boot 2: region D (written before insert)", MDEV, D_OFF, D_LEN, 0xD);
	mirror_size = mediasize(MDEV);
	if (mirror_size > 0)
		expect_data("boot 2: last 64 KiB", MDEV, mirror_size - 64 * 1024, 64 * 1024, 0xE);
	both_legs("boot 2: legs agree", "/dev/vtbd1.nop", "/dev/vtbd2.nop", C_OFF, C_LEN, 0xC);

	expect_data("boot 2: region R (read errors)", MDEV, R_OFF, R_LEN, 0x11);

	g_begin("DMIRROR", "stop", DMVER);
	g_args(1, NAME, 0, 0);
	g_must("stop t");
	if (wait_dev(MDEV, 0) != 0 && mirror_state(NAME) != 0)
		pass("the stopped mirror is gone");
	else
		fail("the stopped mirror is gone", "still there", 0);
	sleep_ms(1000);
	if (wait_dev(MDEV, 0) != 0 && mirror_state(NAME) != 0)
		pass("and stays gone (no retaste of its legs)");
	else
		fail("and stays gone (no retaste of its legs)", "it came back", 0);

	/* Split brain: each leg started alone and written; both together must be refused. */
	split_brain();
	sizes_and_destroy();
	rebuild_resume();
	r = sc1(SYS_kldunload, 2);
	if (r == 0)
		pass("kldunload geom_dmirror.ko");
	else
		fail("kldunload geom_dmirror.ko", "errno", -r);
}

void start_c(void);

void
start_c(void)
{
	char phase[16];
	long r, fileid;

	con = dev_open("/dev/console", O_RDWR);
	memset(phase, 0, sizeof(phase));
	r = sc4(SYS_kenv, KENV_GET, "dmtest.phase", phase, sizeof(phase));
	puts_("DMIRROR-BEGIN dmtest boot ");
	puts_(r > 0 ? phase : "1");
	puts_("\n");

	fileid = sc1(SYS_kldload, "/geom_dmirror.ko");
	if (fileid > 0) {
		pass(r > 0 && seq(phase, "2") ? "boot 2: kldload /geom_dmirror.ko" :
		    "kldload /geom_dmirror.ko");
		if (fileid != 2) {
			puts_("DMIRROR:     note: file id ");
			puti(fileid);
			puts_("\n");
		}
		if (r > 0 && seq(phase, "2"))
			phase2();
		else
			phase1();
	} else {
		fail("kldload /geom_dmirror.ko", "errno", -fileid);
	}
	if (r > 0 && seq(phase, "2")) {
		puts_("DMIRROR: ");
		putu((uint64_t)checks);
		puts_(" checks, ");
		putu((uint64_t)failures);
		puts_(" failed (boot 2)\n");
	}
	puts_(failures == 0 ? "DMIRROR-BOOT-OK\n" : "DMIRROR-BOOT-FAILED\n");
	if (r > 0 && seq(phase, "2")) {
		line_start();
		puts_(failures == 0 ? "DMIRROR-END 0\n" : "DMIRROR-END 1\n");
	}
	flush_out();
	sc1(SYS_sync, 0);
	sleep_ms(500);
	sc1(SYS_reboot, RB_AUTOBOOT);
	for (;;)
		sleep_ms(1000);
}

/* The kernel enters with %rsp at argc; align it and call into C. */
__asm__(".text\n.globl _start\n_start:\n\tandq $-16, %rsp\n\tcall start_c\n\thlt\n");

/* The ABI note that brands the binary as FreeBSD's (NT_FREEBSD_ABI_TAG, __FreeBSD_version). */
__asm__(".section .note.tag,\"a\",@note\n.p2align 2\n"
	".long 8\n.long 4\n.long 1\n.asciz \"FreeBSD\"\n.long 1500068\n.text\n");
