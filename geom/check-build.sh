#!/bin/sh
# check-build.sh - compile the GEOM class (geom/g_dmirror.c) against a real FreeBSD kernel
# source tree's headers for amd64, link it with the Rust core's kernel object into one
# relocatable object (what geom_dmirror.ko is made of), and check that object the way
# FreeBSD's amd64 kernel linker will: its undefined symbols must exist in the kernel and its
# relocation types must be ones link_elf_obj.c / elf_machdep.c handle.
#
# SPDX-License-Identifier: BSD-2-Clause
#
# Usage: SYSDIR=/path/to/freebsd/sys sh geom/check-build.sh [RUST_OBJECT]
#
#   SYSDIR       a FreeBSD (15.x) source tree's sys/ directory. Required: without it the script
#                says so and exits 0 (CI runs it only when SYSDIR is set). Nothing of that tree
#                is copied into this repository; generated files go to a temporary directory.
#   RUST_OBJECT  the core + C ABI glue as one relocatable object, as tests/kernel-build.sh
#                leaves it (target/kernel/dmirror_kernel.o, the default). If it is missing the
#                script runs tests/kernel-build.sh first (needs rustc-web, see that script).
#   CC, LD       default clang-19 and ld.lld-19 (apt-get install clang-19 lld-19).
#
# What is checked, and how:
#   1. compile  g_dmirror.c with the flags sys/conf/kern.mk and kmod.mk use for an amd64 module
#               (-D_KERNEL -DKLD_MODULE -nostdinc -ffreestanding -mcmodel=kernel -mno-red-zone
#               -mno-mmx -mno-sse -msoft-float -fno-common -std=gnu17 -Werror and the kernel's
#               warning set), target x86_64-unknown-freebsd15, with `machine` and `x86` include
#               links to sys/amd64/include and sys/x86/include and an empty opt_global.h, as
#               bsd.kmod.mk makes them.
#   1b. analyze clang --analyze with the same flags; any finding fails.
#   2. link     ld.lld -r -d shim object + Rust object -> one ET_REL object.
#   3. symbols  every undefined symbol of that object must be a kernel symbol. This is a
#               grep-based check, not a real link against a kernel: a symbol counts as defined
#               by the kernel if a .c or .S file in the directories of the kernel proper
#               (kern geom libkern vm amd64 x86 security crypto netinet net dev/pci of SYSDIR;
#               not modules, not contrib) defines it: a function definition (`name(` at the
#               start of a line, FreeBSD style, or after its return type on one line), a data
#               definition, an assembler ENTRY or .global, an ifunc, MALLOC_DEFINE(name, or the SYSCTL_NODE
#               that generates a sysctl__* symbol. __start_set_*/__stop_set_* count if the set
#               is this module's own section (link_elf_obj.c resolves those) or a kernel set.
#               It can be fooled by a definition in a file GENERIC does not build; every symbol
#               is printed with the file it was found in so a reader can judge.
#   4. relocs   every relocation type in the object must be one FreeBSD's amd64 kernel linker
#               accepts for a module (sys/amd64/amd64/elf_machdep.c, elf_reloc_internal: the
#               types handled there; GOT/PLT and TLS types are rejected with "unexpected
#               relocation type"); the script reads the accepted list from that file of SYSDIR
#               and also requires each type to be one of R_X86_64_64, PC32, PLT32, 32S.
#   5. sections no .got/.plt/TLS sections and no .eh_frame (nothing in the kernel unwinds);
#               the shim object must not use SSE registers.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SYSDIR:-}" ]; then
	echo "check-build: SYSDIR is not set; skipped (set SYSDIR=/path/to/freebsd/sys to run)"
	exit 0
fi
SYSDIR=$(cd "$SYSDIR" && pwd)
[ -f "$SYSDIR/geom/geom.h" ] || { echo "check-build: $SYSDIR is not a FreeBSD sys/ tree" >&2; exit 2; }
CC=${CC:-clang-19}
LD=${LD:-ld.lld-19}
READELF=${READELF:-$(command -v llvm-readelf-19 || command -v readelf)}
NM=${NM:-$(command -v llvm-nm-19 || command -v nm)}
OBJDUMP=${OBJDUMP:-$(command -v llvm-objdump-19 || command -v objdump)}
command -v "$CC" >/dev/null || { echo "check-build: no $CC (apt-get install clang-19)" >&2; exit 2; }
command -v "$LD" >/dev/null || { echo "check-build: no $LD (apt-get install lld-19)" >&2; exit 2; }
RUSTOBJ=${1:-$ROOT/target/kernel/dmirror_kernel.o}
if [ ! -f "$RUSTOBJ" ]; then
	echo "==> $RUSTOBJ missing: building it with tests/kernel-build.sh"
	sh "$ROOT/tests/kernel-build.sh"
fi
[ -f "$RUSTOBJ" ] || { echo "check-build: no Rust kernel object at $RUSTOBJ" >&2; exit 2; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/inc"
ln -s "$SYSDIR/amd64/include" "$TMP/inc/machine"
ln -s "$SYSDIR/x86/include" "$TMP/inc/x86"
: > "$TMP/inc/opt_global.h"

fail=0
bad() { echo "FAIL $*"; fail=1; }

version=$(sed -n 's/^#define[ 	]*__FreeBSD_version[ 	]*\([0-9]*\).*/\1/p' "$SYSDIR/sys/param.h")
echo "==> tree: $SYSDIR (__FreeBSD_version $version)"
echo "==> compiler: $("$CC" --version | head -1)"

echo "==> 1. compile geom/g_dmirror.c for x86_64-unknown-freebsd15"
CFLAGS="--target=x86_64-unknown-freebsd15 -O2 -pipe -fno-strict-aliasing -Werror
	-D_KERNEL -DKLD_MODULE -nostdinc -include $TMP/inc/opt_global.h
	-I$TMP/inc -I$SYSDIR -I$SYSDIR/contrib/ck/include -I$ROOT/shim-c -I$ROOT/geom
	-fno-common -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer
	-mno-aes -mno-avx -mcmodel=kernel -mno-red-zone -mno-mmx -mno-sse -msoft-float
	-fno-asynchronous-unwind-tables -ffreestanding -fwrapv -fstack-protector -fno-pic
	-Wall -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wcast-qual -Wundef
	-Wno-pointer-sign -D__printf__=__freebsd_kprintf__ -Wmissing-include-dirs
	-fdiagnostics-show-option -Wno-unknown-pragmas -Wswitch -Wno-error=tautological-compare
	-Wno-error=empty-body -Wno-error=parentheses-equality -Wno-error=unused-function
	-Wno-error=pointer-sign -Wno-error=shift-negative-value -Wno-address-of-packed-member
	-Wno-format-zero-length -std=gnu17"
# shellcheck disable=SC2086
"$CC" $CFLAGS -c "$ROOT/geom/g_dmirror.c" -o "$TMP/g_dmirror.o"
echo "ok: compiled ($(wc -c < "$TMP/g_dmirror.o") bytes)"

echo "==> 1b. clang static analyzer on geom/g_dmirror.c (any finding fails)"
# shellcheck disable=SC2086
"$CC" --analyze $CFLAGS "$ROOT/geom/g_dmirror.c" -o "$TMP/analyze.plist" 2> "$TMP/analyze.txt" || true
if grep -qE 'warning:|error:' "$TMP/analyze.txt"; then
	cat "$TMP/analyze.txt"
	bad "analyzer: findings in g_dmirror.c"
else
	echo "ok: no findings"
fi

echo "==> 2. link shim + Rust object with $LD -r -d"
"$LD" -r -d -o "$TMP/geom_dmirror.o" "$TMP/g_dmirror.o" "$RUSTOBJ"
etype=$("$READELF" -h "$TMP/geom_dmirror.o" | awk '/Type:/ { print $2 }')
[ "$etype" = "REL" ] || bad "link: object type $etype, expected REL"
echo "ok: $(wc -c < "$TMP/geom_dmirror.o") bytes, ELF type $etype"

echo "==> 3. undefined symbols must be kernel symbols (grep-based, see the header)"
"$NM" -u "$TMP/geom_dmirror.o" | awk '{ print $NF }' | sort -u > "$TMP/undef"
"$READELF" -SW "$TMP/geom_dmirror.o" | sed -n 's/^ *\[ *[0-9]*\] \([^ ]*\).*/\1/p' > "$TMP/sections"
# Where the amd64 kernel proper lives (modules, userland and contrib libraries excluded).
KDIRS="kern geom libkern vm amd64 x86 security crypto netinet net dev/pci"
: > "$TMP/ksrc"
for d in $KDIRS; do
	[ -d "$SYSDIR/$d" ] && find "$SYSDIR/$d" \( -name '*.c' -o -name '*.S' \) >> "$TMP/ksrc"
done
kgrep() { xargs grep -l -E "$1" < "$TMP/ksrc" 2>/dev/null | head -1 || true; }
found=0 missing=0
while read -r sym; do
	where=""
	case "$sym" in
	__start_set_* | __stop_set_*)
		set=${sym#__start_}
		set=${set#__stop_}
		if grep -qx "$set" "$TMP/sections"; then
			where="linker set of this module (link_elf_obj.c link_elf_fix_link_set)"
		else
			where=$(grep -rlE "\"$set\"|SET_DECLARE\(${set#set_}," "$SYSDIR/sys" | head -1)
			[ -n "$where" ] && where="kernel linker set $set, named in ${where#"$SYSDIR"/}"
		fi ;;
	sysctl__*)
		# SYSCTL_NODE(_parent, OID_AUTO, name, ...) defines sysctl__parent_name.
		path=${sym#sysctl__}
		rest=$path
		while [ -z "$where" ] && [ "${rest#*_}" != "$rest" ]; do
			name=${rest##*_}
			parent=${path%_"$name"}
			where=$(kgrep "SYSCTL_[A-Z_]*NODE\($parent, *OID_AUTO, *$name,")
			rest=${rest%_*}
			[ "$rest" = "" ] && break
		done ;;
	esac
	if [ -z "$where" ]; then
		# A function definition (FreeBSD style: `name(` or `(name)(` at column 0, or after
		# its return type on one line), a data definition, an assembler ENTRY or .global, an ifunc, or a
		# MALLOC_DEFINE.
		where=$(kgrep "^\(?${sym}\)?\(|^[A-Za-z_][A-Za-z0-9_ *]*[[:space:]*]\(?${sym}\)?\([^;]*$|^[A-Za-z_][^(;]*[[:space:]*]${sym}[[:space:]]*(=|;|\[)|^(ENTRY|ALTENTRY|WEAK_REFERENCE)\(${sym}[,)]|^[[:space:]]*\.glob(a)?l[[:space:]]+${sym}[[:space:]]*$|DEFINE_IFUNC\([^,]*, *[^,]*, *${sym},|MALLOC_DEFINE\(${sym},")
	fi
	if [ -n "$where" ]; then
		printf '  %-28s %s\n' "$sym" "${where#"$SYSDIR"/}"
		found=$((found + 1))
	else
		printf '  %-28s NOT FOUND\n' "$sym"
		missing=$((missing + 1))
		bad "symbols: $sym is undefined and not defined by the kernel sources in $SYSDIR ($KDIRS)"
	fi
done < "$TMP/undef"
echo "   $found found, $missing not found"
# And the shim must satisfy the Rust object's imports (dmirror_host_panic).
for sym in $("$NM" -u "$RUSTOBJ" | awk '{ print $NF }'); do
	if grep -qx "$sym" "$TMP/undef"; then
		case "$sym" in
		memcpy | memset | memmove | memcmp | bcmp) ;; # provided by the kernel
		*) bad "symbols: the Rust object imports $sym, which the shim does not define (the core may import only the host interface)" ;;
		esac
	fi
done

echo "==> 4. relocation types must be ones the amd64 kernel linker handles"
# The types elf_machdep.c handles for modules (case labels in elf_reloc_internal).
grep -o 'case R_X86_64_[A-Z0-9_]*' "$SYSDIR/amd64/amd64/elf_machdep.c" | awk '{ print $2 }' | sort -u > "$TMP/accepted"
echo "   elf_machdep.c handles: $(tr '\n' ' ' < "$TMP/accepted")"
"$READELF" -rW "$TMP/geom_dmirror.o" | awk '$3 ~ /^R_X86_64_/ { print $3 }' | sort | uniq -c > "$TMP/relocs"
sed 's/^/  /' "$TMP/relocs"
awk '{ print $2 }' "$TMP/relocs" > "$TMP/reloctypes"
while read -r t; do
	grep -qx "$t" "$TMP/accepted" || bad "relocs: $t is not handled by $SYSDIR/amd64/amd64/elf_machdep.c"
	case "$t" in
	R_X86_64_64 | R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32S) ;;
	*) bad "relocs: $t is not one of R_X86_64_64, PC32, PLT32, 32S" ;;
	esac
done < "$TMP/reloctypes"

echo "==> 5. sections and registers"
secs=$("$READELF" -SW "$TMP/geom_dmirror.o" | sed -n 's/^ *\[ *[0-9]*\] \([^ ]*\).*/\1/p')
for s in $secs; do
	case "$s" in
	.got | .got.* | .plt | .plt.* | .tdata* | .tbss* | .eh_frame | .rela.eh_frame)
		bad "sections: $s" ;;
	esac
done
if "$OBJDUMP" -d "$TMP/g_dmirror.o" | grep -qE '%[xyz]mm[0-9]'; then
	bad "registers: the shim uses SSE/AVX registers"
fi
echo "   $(echo "$secs" | wc -w) sections checked"

echo "==> 6. the geom(8) library (lib/geom_dmirror.c) against the userland headers"
# Needs the rest of the source tree: SRCTOP (default: SYSDIR's parent) with include/,
# lib/libgeom/libgeom.h and sbin/geom/core/geom.h. Compiled only (-fsyntax-only): linking a
# FreeBSD shared library needs FreeBSD's libc.
SRCTOP=${SRCTOP:-$(dirname "$SYSDIR")}
if [ -f "$SRCTOP/include/stdio.h" ] && [ -f "$SRCTOP/lib/libgeom/libgeom.h" ] &&
    [ -f "$SRCTOP/sbin/geom/core/geom.h" ]; then
	mkdir -p "$TMP/uinc"
	ln -s "$SYSDIR/sys" "$TMP/uinc/sys"
	ln -s "$SYSDIR/amd64/include" "$TMP/uinc/machine"
	ln -s "$SYSDIR/x86/include" "$TMP/uinc/x86"
	ln -s "$SYSDIR/geom" "$TMP/uinc/geom"
	ln -s "$SRCTOP/lib/libgeom/libgeom.h" "$TMP/uinc/libgeom.h"
	clangdir=$("$CC" -print-resource-dir)/include
	if "$CC" --target=x86_64-unknown-freebsd15 -nostdinc -isystem "$TMP/uinc" \
	    -isystem "$SRCTOP/include" -isystem "$clangdir" -I"$SRCTOP/sbin/geom" \
	    -I"$ROOT/geom" -std=gnu17 -Wall -Wextra -Werror -Wmissing-variable-declarations \
	    -fsyntax-only "$ROOT/geom/lib/geom_dmirror.c"; then
		echo "ok: lib/geom_dmirror.c compiles against $SRCTOP"
	else
		bad "lib: lib/geom_dmirror.c does not compile against $SRCTOP"
	fi
else
	echo "skipped: no userland headers under $SRCTOP (set SRCTOP to a full source tree)"
fi

if [ "$fail" -ne 0 ]; then
	echo "check-build: FAILED"
	exit 1
fi
echo "check-build: OK (g_dmirror.c compiled against $SYSDIR, linked with $(basename "$RUSTOBJ"))"
