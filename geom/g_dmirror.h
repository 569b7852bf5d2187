/*
 * g_dmirror.h - what the GEOM class DMIRROR (g_dmirror.c, the kernel module geom_dmirror.ko)
 * and its geom(8) library (lib/geom_dmirror.c, geom_dmirror.so) agree on: the class name, the
 * version of the control protocol, and the names of the verbs and their parameters.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Everything else is private to g_dmirror.c. The mirror itself (write ordering, the region log,
 * resync, which leg to read) is the Rust core's, reached only through shim-c/dmirror.h.
 */
#ifndef G_DMIRROR_H
#define G_DMIRROR_H

/* geom(8) finds the library by the lower-case name, the kernel class by this one. */
#define G_DMIRROR_CLASS_NAME "DMIRROR"

/*
 * Version of the control protocol (the verbs and parameters below). geom(8) sends the library's
 * `version` with every request; the kernel refuses a request from a library of another version.
 */
#define G_DMIRROR_VERSION 1

/* Providers are /dev/dmirror/<name>. */
#define G_DMIRROR_PREFIX "dmirror/"

/* Longest mirror name (the superblock keeps 32 bytes, NUL-padded). */
#define G_DMIRROR_NAME_MAX 31

/*
 * Parameters (besides geom(8)'s own "class", "verb", "version", "nargs", "arg0".."argN-1" and
 * "output"). Numbers are intmax_t, flags int, strings NUL-terminated.
 */
#define G_DMIRROR_P_VERBOSE "verbose"       /* int: -v */
#define G_DMIRROR_P_BALANCE "balance"       /* string: -b round-robin[:N]|load|prefer:PROV|split[:N] */
#define G_DMIRROR_P_REGIONSIZE "regionsize" /* intmax_t: -r bytes (0: the core's default) */
#define G_DMIRROR_P_NOSYNC "nosync"         /* int: -n: the legs are declared identical */
#define G_DMIRROR_P_SLOTS "slots"           /* intmax_t: -s leg slots (0: default) */
#define G_DMIRROR_P_FORCE "force"           /* int: -f */

#endif /* G_DMIRROR_H */
