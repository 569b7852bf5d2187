#!/bin/sh
# check-build.sh - compile the dm mirror target against DragonFly and/or NetBSD kernel headers on
# a Linux host, link it with the Rust core as a kernel module would be linked (ld.lld -r), and
# check what the kernel's module loader would see:
#   1. every undefined symbol is defined somewhere in that kernel's sources (grep-based: a C
#      function definition "name(" at the start of a line, an assembler ENTRY(name), or a
#      variable definition; this proves the name exists, not its prototype, which the compiler
#      already checked against the headers);
#   2. every relocation type is one that kernel's linker implements (lists below, read from
#      DragonFly sys/cpu/x86_64/misc/elf_machdep.c and NetBSD sys/arch/amd64/amd64/kobj_machdep.c).
#
# usage: SYSDIR=/path/to/sys dragonfly/check-build.sh   (a DragonFly or a NetBSD sys/ tree; any
#        other tree is reported and skipped), or DFLY_SYSDIR=... NETBSD_SYSDIR=... for both at once
#   DFLY_SYSDIR    a DragonFly sys/ tree (needs sys/, cpu/x86_64, platform/pc64, dev/disk/dm,
#                  libprop, and the kernel sources to grep: kern/, vm/, libkern/, ...)
#   NETBSD_SYSDIR  a NetBSD sys/ tree (sys/, arch/amd64, arch/x86, dev/dm, kern/, uvm/, lib/libkern,
#                  and common/include/prop if the tree has it, else the script says so)
# Either may be unset; the script checks the kernels it is given and fails if given none.
# Tools: clang-19, ld.lld-19, llvm-nm-19, llvm-readelf-19 (Debian: clang-19 lld-19 llvm-19), and
# what dragonfly/build-core.sh needs for the Rust static library.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
CC=${CC_KERNEL:-clang-19}
LD=${LD_KERNEL:-ld.lld-19}
NM=${NM:-llvm-nm-19}
READELF=${READELF:-llvm-readelf-19}
tmp=$(mktemp -d /tmp/dm-check-build.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
status=0

# tests/run-all.sh hands one SYSDIR to every shim's check-build.sh (the GEOM class wants a
# FreeBSD tree): look at what it is. DFLY_SYSDIR / NETBSD_SYSDIR name a tree explicitly.
DFLY=${DFLY_SYSDIR:-}
NB=${NETBSD_SYSDIR:-}
if [ -n "${SYSDIR:-}" ]; then
	if [ -f "$SYSDIR/dev/disk/dm/dm.h" ] && [ -d "$SYSDIR/platform/pc64" ]; then
		DFLY=${DFLY:-$SYSDIR}
	elif [ -f "$SYSDIR/dev/dm/dm.h" ] && [ -d "$SYSDIR/arch/amd64" ]; then
		NB=${NB:-$SYSDIR}
	elif [ -z "$DFLY" ] && [ -z "$NB" ]; then
		echo "check-build.sh: SYSDIR=$SYSDIR is neither a DragonFly nor a NetBSD sys/ tree" \
		    "(no dev/disk/dm/dm.h + platform/pc64, no dev/dm/dm.h + arch/amd64): nothing checked"
		exit 0
	fi
fi
if [ -z "$DFLY" ] && [ -z "$NB" ]; then
	echo "check-build.sh: set SYSDIR (a DragonFly or NetBSD sys/), DFLY_SYSDIR or NETBSD_SYSDIR" >&2
	exit 2
fi

echo "== Rust core (x86_64-unknown-none, kernel profile)"
lib=$("$here/build-core.sh")
echo "   $lib"

common_cflags="-D_KERNEL -DKLD_MODULE -nostdinc -ffreestanding -fno-builtin -fno-common \
 -fno-strict-aliasing -mcmodel=kernel -mno-red-zone -mno-mmx -mno-sse -mno-sse2 -msoft-float \
 -fno-asynchronous-unwind-tables -fno-pic -fno-stack-protector -O2 -std=gnu99 \
 -Wall -Wno-unused-function -Wno-address-of-packed-member -Wno-gnu-variable-sized-type-not-at-end \
 -Wno-format -Wno-pointer-sign -Wno-unknown-pragmas -Wno-int-to-void-pointer-cast -Werror \
 -isystem $(${CC} -print-resource-dir)/include -I$top/shim-c"

# relocation_types OBJECT -> one R_X86_64_* name per line, deduplicated
relocation_types() {
	"$READELF" -r "$1" | awk '$3 ~ /^R_X86_64_/ { print $3 }' | sort -u
}

# defined_in_tree SYMBOL DIR... -> 0 if some source in DIRs defines SYMBOL
defined_in_tree() {
	sym=$1
	shift
	grep -rqsE --include='*.c' --include='*.S' --include='*.s' --include='*.h' \
	    -e "^${sym}[[:space:]]*\\(" \
	    -e "^(ENTRY|NENTRY|ALTENTRY|WEAK_ALIAS|STRONG_ALIAS|ENTRY_NP)\\((_?${sym})[,)]" \
	    -e "^(static )?[a-z_][a-z_0-9 ]*[ *]${sym}[[:space:]]*(=|;|\\[)" \
	    -e "^[a-z_].*__strong_alias\\(${sym}," \
	    -e "^[a-z_A-Z].*[ *]${sym}\\(.*\\)[[:space:]]*$" "$@"
}

# check_kernel NAME OBJECT "ALLOWED RELOCATIONS" SOURCE-DIRS...
check_kernel() {
	name=$1 obj=$2 allowed=$3
	shift 3
	echo "-- $name: relocation types in $(basename "$obj")"
	bad=0
	for r in $(relocation_types "$obj"); do
		case " $allowed " in
		*" $r "*) echo "   $r ok" ;;
		*) echo "   $r NOT accepted by the $name kernel linker"; bad=1 ;;
		esac
	done
	echo "-- $name: undefined symbols (must be defined in the kernel sources)"
	missing=0
	for s in $("$NM" -u "$obj" | awk '{ print $2 }'); do
		case "$s" in
		__start_set_* | __stop_set_* | __start_link_set_* | __stop_link_set_*)
			# Linker-set bounds: the kernel's module linker makes them from the set's
			# section (DragonFly kern/link_elf_obj.c, NetBSD kern/subr_kobj.c).
			if grep -qs '"__start_"\|__start_link_set_' "$1/kern/link_elf_obj.c" \
			    "$1/kern/subr_kobj.c" "$1/kern/kern_module.c"; then
				echo "   $s ok (linker set, resolved by the module linker)"
				continue
			fi
			;;
		esac
		if defined_in_tree "$s" "$@"; then
			echo "   $s ok"
		elif grep -qsE "^SRCS\+?=.*[[:space:]]${s}\.c" "$1/lib/libkern/Makefile.libkern"; then
			# NetBSD builds parts of libkern from src/common, outside sys/.
			echo "   $s ok (built into libkern from src/common: lib/libkern/Makefile.libkern)"
		elif grep -qsE "[^a-z_]${s}[[:space:]]*\(" "$1"/dev/dm/dm_*.c; then
			# Defined outside a sys-only tree (e.g. libprop in src/common), but the dm
			# driver's own modules call it, so a kernel with dm(4) provides it.
			echo "   $s ok (not defined in this tree; dm(4) itself calls it: $(grep -lE "[^a-z_]${s}[[:space:]]*\(" "$1"/dev/dm/dm_*.c | head -1 | sed "s|$1/||"))"
		else
			echo "   $s NOT FOUND in $name sources"
			missing=1
		fi
	done
	if [ $bad -ne 0 ] || [ $missing -ne 0 ]; then
		status=1
		echo "-- $name: FAILED"
	else
		echo "-- $name: ok"
	fi
}

# --------------------------------------------------------------------------------------------
if [ -n "$DFLY" ]; then
	SYSDIR=$DFLY
	echo "== DragonFly: $SYSDIR"
	d=$tmp/dfly
	mkdir -p "$d/inc"
	# As the kernel build does: machine/ is the platform's headers, plus forwarding headers
	# (#include <cpu/x.h>) for the cpu architecture's headers the platform does not override.
	mkdir -p "$d/inc/machine"
	for f in "$SYSDIR"/platform/pc64/include/*.h; do ln -s "$f" "$d/inc/machine/"; done
	for f in "$SYSDIR"/cpu/x86_64/include/*.h; do
		b=$(basename "$f")
		[ -e "$d/inc/machine/$b" ] || echo "#include <cpu/$b>" >"$d/inc/machine/$b"
	done
	ln -s "$SYSDIR/cpu/x86_64/include" "$d/inc/cpu"
	ln -s "$SYSDIR/platform/pc64" "$d/inc/machine_base"
	ln -s "$SYSDIR/cpu/x86_64" "$d/inc/cpu_base"
	# Headers the kernel build generates (config(8) options, bus method tables): empty stubs
	# are enough for what dm.h and this file include.
	for h in opt_ddb.h opt_ktr.h opt_global.h use_isa.h; do : >"$d/inc/$h"; done
	# DragonFly's linker (sys/cpu/x86_64/misc/elf_machdep.c, 2020) implements these.
	dfly_relocs="R_X86_64_NONE R_X86_64_64 R_X86_64_PC32 R_X86_64_PLT32 R_X86_64_32 R_X86_64_32S R_X86_64_COPY R_X86_64_GLOB_DAT R_X86_64_JUMP_SLOT R_X86_64_RELATIVE"
	# shellcheck disable=SC2086
	$CC --target=x86_64-unknown-dragonfly $common_cflags -include "$d/inc/opt_global.h" \
	    -I"$d/inc" -I"$SYSDIR" -I"$SYSDIR/libprop" -D__DragonFly__ \
	    -c "$here/dm_target_mirror.c" -o "$d/shim.o"
	$LD -r -o "$d/dm_target_mirror.o" "$d/shim.o" "$lib"
	echo "   compiled and linked: $(wc -c <"$d/dm_target_mirror.o") bytes"
	check_kernel DragonFly "$d/dm_target_mirror.o" "$dfly_relocs" "$SYSDIR"
fi

# --------------------------------------------------------------------------------------------
if [ -n "$NB" ]; then
	NETBSD_SYSDIR=$NB
	echo "== NetBSD: $NETBSD_SYSDIR"
	n=$tmp/nbsd
	mkdir -p "$n/inc/prop"
	ln -s "$NETBSD_SYSDIR/arch/amd64/include" "$n/inc/machine"
	ln -s "$NETBSD_SYSDIR/arch/x86/include" "$n/inc/x86"
	ln -s "$NETBSD_SYSDIR/arch/amd64/include" "$n/inc/amd64"
	for h in opt_ddb.h opt_kstack.h opt_multiprocessor.h opt_lockdebug.h opt_diagnostic.h \
	    opt_xen.h opt_modular.h opt_dtrace.h opt_kasan.h opt_kcsan.h opt_kmsan.h \
	    opt_compat_netbsd.h opt_spldebug.h opt_pax.h opt_ptrace.h opt_sysv.h; do
		: >"$n/inc/$h"
	done
	prop=""
	if [ -d "$NETBSD_SYSDIR/../common/include/prop" ]; then
		prop="-I$NETBSD_SYSDIR/../common/include"
	else
		# sys-only trees lack src/common: dm.h needs only the prop_*_t type names and the
		# prototypes this file calls; declare them (checked against the symbol grep below).
		cat >"$n/inc/prop/proplib.h" <<'PROP'
#ifndef _DM_CHECK_PROPLIB_STUB_H
#define _DM_CHECK_PROPLIB_STUB_H
typedef struct _prop_object *prop_object_t;
typedef struct _prop_array *prop_array_t;
typedef struct _prop_dictionary *prop_dictionary_t;
typedef struct _prop_object_iterator *prop_object_iterator_t;
typedef struct _prop_string *prop_string_t;
typedef struct _prop_number *prop_number_t;
#include <sys/types.h>
bool prop_array_add_uint64(prop_array_t, uint64_t);
#endif
PROP
		cat >"$n/inc/prop/plistref.h" <<'PLIST'
#ifndef _DM_CHECK_PLISTREF_STUB_H
#define _DM_CHECK_PLISTREF_STUB_H
struct plistref {
	void *pref_plist;
	size_t pref_len;
};
#endif
PLIST
		echo "   note: no common/include/prop in this tree: a stub declaring the prop types is used"
	fi
	# NetBSD's module linker (kobj_machdep.c 2014-08 and rev 1.6 2017-11) implements these:
	# no R_X86_64_PLT32, no GOTPCREL(X).
	nb_relocs="R_X86_64_NONE R_X86_64_64 R_X86_64_PC32 R_X86_64_32 R_X86_64_32S R_X86_64_GLOB_DAT R_X86_64_JUMP_SLOT R_X86_64_RELATIVE"
	# shellcheck disable=SC2086
	$CC --target=x86_64-unknown-netbsd $common_cflags -I"$n/inc" -I"$NETBSD_SYSDIR" $prop \
	    -D__NetBSD__ -c "$here/dm_target_mirror.c" -o "$n/shim.o"
	$LD -r -o "$n/dm_target_mirror.kmod" "$n/shim.o" "$lib"
	echo "   compiled and linked: $(wc -c <"$n/dm_target_mirror.kmod") bytes"
	echo "   relocation types before the PLT32 rewrite: $(relocation_types "$n/dm_target_mirror.kmod" | tr '\n' ' ')"
	python3 "$here/elf-plt32-to-pc32.py" "$n/dm_target_mirror.kmod"
	check_kernel NetBSD "$n/dm_target_mirror.kmod" "$nb_relocs" "$NETBSD_SYSDIR"
fi

exit $status
