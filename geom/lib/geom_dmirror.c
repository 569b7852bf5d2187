/*
 * geom_dmirror.c - the geom(8) library for the DMIRROR class: `geom dmirror <verb> ...`.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * geom(8) loads this file as /lib/geom/geom_dmirror.so and reads three symbols from it:
 * lib_version (the geom(8) plug-in interface it was built for), version (the DMIRROR control
 * protocol, checked by the kernel on every request) and class_commands (the verbs, their
 * options and usage lines). Every verb here has no function of its own: geom(8) parses the
 * options into gctl parameters (named after each option's long name; the positional arguments
 * become arg0..argN-1 and nargs) and sends the request to the kernel class, which does the work
 * and may fill the "output" parameter that geom(8) prints (dump does). Metadata is encoded and
 * decoded only by the kernel (through the Rust core), so this library never writes to a disk
 * itself.
 *
 * `geom dmirror list`, `status`, `load`, `unload` and `help` are geom(8)'s standard commands:
 * list prints the XML configuration the kernel's dumpconf writes (per-leg State, Synchronized,
 * resync counters), status its summary (geom State, each leg's State and Synchronized).
 */
#include <sys/param.h>

#include <stdint.h>
#include <stdio.h>

#include <libgeom.h>
#include <core/geom.h>

#include "g_dmirror.h"

/* What geom(8) looks up with dlsym(). */
extern uint32_t lib_version;
extern uint32_t version;
extern struct g_command class_commands[];

uint32_t lib_version = G_LIB_VERSION;
uint32_t version = G_DMIRROR_VERSION;

struct g_command class_commands[] = {
	{ "label", G_FLAG_VERBOSE | G_FLAG_LOADKLD, NULL,
	    {
		{ 'b', G_DMIRROR_P_BALANCE, "", G_TYPE_STRING },
		{ 'n', G_DMIRROR_P_NOSYNC, NULL, G_TYPE_BOOL },
		{ 'r', G_DMIRROR_P_REGIONSIZE, "0", G_TYPE_NUMBER },
		{ 's', G_DMIRROR_P_SLOTS, "0", G_TYPE_NUMBER },
		G_OPT_SENTINEL
	    },
	    "[-nv] [-b balance] [-r regionsize] [-s slots] name prov ..."
	},
	{ "clear", G_FLAG_VERBOSE, NULL, G_NULL_OPTS,
	    "[-v] prov ..."
	},
	{ "insert", G_FLAG_VERBOSE, NULL, G_NULL_OPTS,
	    "[-v] name prov ..."
	},
	{ "remove", G_FLAG_VERBOSE, NULL, G_NULL_OPTS,
	    "[-v] name prov ..."
	},
	{ "forget", G_FLAG_VERBOSE, NULL, G_NULL_OPTS,
	    "[-v] name"
	},
	{ "rebuild", G_FLAG_VERBOSE, NULL, G_NULL_OPTS,
	    "[-v] name prov ..."
	},
	{ "configure", G_FLAG_VERBOSE, NULL,
	    {
		{ 'b', G_DMIRROR_P_BALANCE, "", G_TYPE_STRING },
		G_OPT_SENTINEL
	    },
	    "[-v] -b balance name"
	},
	{ "stop", G_FLAG_VERBOSE, NULL,
	    {
		{ 'f', G_DMIRROR_P_FORCE, NULL, G_TYPE_BOOL },
		G_OPT_SENTINEL
	    },
	    "[-fv] name ..."
	},
	{ "destroy", G_FLAG_VERBOSE, NULL,
	    {
		{ 'f', G_DMIRROR_P_FORCE, NULL, G_TYPE_BOOL },
		G_OPT_SENTINEL
	    },
	    "[-fv] name ..."
	},
	{ "dump", 0, NULL, G_NULL_OPTS,
	    "prov ..."
	},
	G_CMD_SENTINEL
};
