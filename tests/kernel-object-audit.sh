#!/bin/sh
# kernel-object-audit.sh - check that an object meant for a BSD kernel module (the dmirror
# staticlib built for x86_64-unknown-none) only contains what a kernel linker accepts.
#
# SPDX-License-Identifier: BSD-2-Clause
#
# Usage:
#   tests/kernel-object-audit.sh [-o OUT.o] FILE.a      staticlib: members linked with ld -r
#   tests/kernel-object-audit.sh [-o OUT.o] FILE.rlib   Rust rlib (objects only, see below)
#   tests/kernel-object-audit.sh FILE.o                 one relocatable object, as is
#   tests/kernel-object-audit.sh --self-test            prove each rule fires (needs clang)
#
# A staticlib is reduced to what a kernel module would link: its objects are combined with
# `ld.lld -r --gc-sections --strip-debug`, rooted at the C entry points it defines (global
# functions named dmirror_*; DMIRROR_AUDIT_ROOTS=regex changes that). -o keeps that object: it
# is what a module Makefile can link directly.
#
# Rules (each failure names its rule; exit status 1 if any rule broke, 2 on usage/tool errors):
#   reloc      relocation types only R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32S
#              (FreeBSD's kernel linker rejects GOTPCREL and friends: "unexpected relocation type")
#   sections   no GOT/PLT sections (.got .got.plt .plt .plt.got .plt.sec), no TLS (.tdata .tbss,
#              STT_TLS symbols), no .eh_frame (nothing in a kernel unwinds)
#   simd       no SSE/AVX register (xmm/ymm/zmm) in the disassembly: kernel code must not touch
#              the FPU/vector state it does not save
#   undefined  undefined symbols only those of the host interface (dmirror_host_panic) and the
#              memory builtins every BSD kernel provides (memcpy memset memmove memcmp bcmp).
#              Skipped for an .rlib: its references to Rust's core are resolved at the final link
#              (audit the staticlib for that).
set -u

ALLOWED_RELOCS="R_X86_64_64 R_X86_64_PC32 R_X86_64_PLT32 R_X86_64_32S"
ALLOWED_UNDEF="dmirror_host_panic memcpy memset memmove memcmp bcmp"
ROOTS_RE=${DMIRROR_AUDIT_ROOTS:-'^dmirror_'}
# Which rules to apply (all by default); e.g. DMIRROR_AUDIT_RULES=simd for a build that is only
# required to be free of SSE/AVX.
RULES=${DMIRROR_AUDIT_RULES:-reloc sections simd undefined}
want() { case " $RULES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

die() { echo "kernel-object-audit: $*" >&2; exit 2; }

# Pick a tool: the first of the candidates that exists.
pick() {
	for t in "$@"; do
		if command -v "$t" >/dev/null 2>&1; then echo "$t"; return 0; fi
	done
	return 1
}
LD=$(pick ld.lld-19 ld.lld ld.lld-18 ld.lld-17 ld.lld-16 ld.lld-15 ld.lld-14 ld) || die "no linker (install lld-19 or binutils)"
NM=$(pick llvm-nm-19 llvm-nm nm) || die "no nm (install binutils)"
READELF=$(pick llvm-readelf-19 llvm-readelf readelf) || die "no readelf (install binutils)"
OBJDUMP=$(pick objdump llvm-objdump-19 llvm-objdump) || die "no objdump (install binutils)"
AR=$(pick llvm-ar-19 llvm-ar ar) || die "no ar (install binutils)"

# audit OBJ SKIP_UNDEF: print findings, return 1 if a rule broke.
audit() {
	obj=$1
	skip_undef=$2
	bad=0

	# reloc: every relocation entry's type.
	relocs=$($READELF -rW "$obj" | awk '$3 ~ /^R_/ { print $3 }' | sort | uniq -c)
	for t in $(want reloc && echo "$relocs" | awk '{ print $2 }'); do
		case " $ALLOWED_RELOCS " in
		*" $t "*) ;;
		*)
			n=$(echo "$relocs" | awk -v t="$t" '$2 == t { print $1 }')
			echo "FAIL reloc: $n relocation(s) of type $t, e.g.:"
			$READELF -rW "$obj" | awk -v t="$t" '$3 == t' | head -3 | sed 's/^/    /'
			bad=1
			;;
		esac
	done

	# sections: names of all sections, and TLS symbols.
	secs=$(want sections && $READELF -SW "$obj" | sed -n 's/^ *\[ *[0-9]*\] \([^ ]*\).*/\1/p')
	for s in $secs; do
		case "$s" in
		.got | .got.* | .plt | .plt.* | .rela.got* | .rela.plt*)
			echo "FAIL sections: GOT/PLT section $s"; bad=1 ;;
		.tdata | .tdata.* | .tbss | .tbss.* | .rela.tdata*)
			echo "FAIL sections: TLS section $s"; bad=1 ;;
		.eh_frame | .rela.eh_frame | .eh_frame_hdr)
			echo "FAIL sections: unwind section $s"; bad=1 ;;
		esac
	done
	tls=$(want sections && $READELF -sW "$obj" | awk '$4 == "TLS" { print $8 }' | head -5)
	if [ -n "$tls" ]; then
		echo "FAIL sections: TLS symbol(s): $(echo $tls)"
		bad=1
	fi

	# simd: any xmm/ymm/zmm register operand, with the function it is in.
	simd=$(want simd && $OBJDUMP -d --no-show-raw-insn "$obj" | awk '
		/^[0-9a-f]+ <.*>:$/ { fn = $2 }
		/%[xyz]mm[0-9]/ { n++; if (n <= 5) print "    " fn " " $0 }
		END { if (n) print "    (" n " instructions in all)" }')
	if [ -n "$simd" ]; then
		echo "FAIL simd: SSE/AVX registers used:"
		echo "$simd"
		bad=1
	fi

	# undefined: symbols the object needs from its environment.
	if ! want undefined; then
		:
	elif [ "$skip_undef" = 1 ]; then
		echo "note undefined: not checked for an rlib (resolved at the final link)"
	else
		for u in $($NM -u "$obj" | awk '{ print $NF }' | sort -u); do
			case " $ALLOWED_UNDEF " in
			*" $u "*) echo "info undefined: $u (allowed)" ;;
			*) echo "FAIL undefined: $u is not part of the host interface"; bad=1 ;;
			esac
		done
	fi

	nrel=$(echo "$relocs" | awk '{ s += $1 } END { print s + 0 }')
	echo "info: $nrel relocations: $(echo "$relocs" | awk '{ printf "%s %s; ", $2, $1 }')"
	return $bad
}

# prepare FILE OUT: turn FILE into one relocatable object OUT; sets SKIP_UNDEF.
prepare() {
	file=$1
	out=$2
	SKIP_UNDEF=0
	case "$file" in
	*.o)
		cp "$file" "$out" || die "cannot copy $file"
		return 0
		;;
	*.a | *.rlib) ;;
	*) die "$file: expected a .a, .rlib or .o" ;;
	esac
	x=$WORK/members
	rm -rf "$x" && mkdir -p "$x" || die "cannot create $x"
	# Extract under unique names (members of different crates may share a name).
	i=0
	for m in $($AR t "$file"); do
		case "$m" in *.o) ;; *) continue ;; esac
		i=$((i + 1))
		(cd "$x" && $AR p "$file" "$m" >"m$i.o") || die "cannot extract $m from $file"
	done
	[ "$i" -gt 0 ] || die "$file has no object members"
	case "$file" in
	*.rlib)
		SKIP_UNDEF=1
		$LD -r --strip-debug -o "$out" "$x"/m*.o || die "ld -r failed for $file"
		;;
	*.a)
		roots=$($NM -g --defined-only "$x"/m*.o 2>/dev/null |
			awk '$2 == "T" { print $3 }' | grep -E "$ROOTS_RE" | sort -u)
		if [ -z "$roots" ]; then
			echo "note: no entry point matches $ROOTS_RE: linking every member, no gc"
			$LD -r --strip-debug -o "$out" "$x"/m*.o || die "ld -r failed for $file"
		else
			args=""
			for r in $roots; do args="$args -u $r"; done
			echo "info: roots: $(echo $roots | wc -w) entry points ($ROOTS_RE)"
			# shellcheck disable=SC2086
			$LD -r --gc-sections --strip-debug $args -o "$out" "$x"/m*.o ||
				die "ld -r failed for $file"
		fi
		;;
	esac
}

self_test() {
	CC=$(pick clang-19 clang) || die "--self-test needs clang (clang-19)"
	# Flags of a kernel object: the rules must pass for the clean case and each bad case must
	# break exactly its rule.
	kflags="--target=x86_64-unknown-none-elf -ffreestanding -fno-pic -mcmodel=kernel -mno-red-zone -mno-sse -msoft-float -fno-asynchronous-unwind-tables -fno-unwind-tables -O2 -c"
	fails=0
	t() { # name expect-rule extra-flags source
		name=$1; rule=$2; extra=$3; src=$4
		printf '%s\n' "$src" >"$WORK/$name.c"
		# shellcheck disable=SC2086
		$CC $kflags $extra -o "$WORK/$name.o" "$WORK/$name.c" || die "self-test: cannot compile $name"
		res=$(audit "$WORK/$name.o" 0)
		st=$?
		if [ "$rule" = none ]; then
			if [ $st -eq 0 ]; then echo "ok - clean object passes"; else
				echo "not ok - clean object was rejected:"; echo "$res"; fails=$((fails + 1)); fi
		elif [ $st -ne 0 ] && echo "$res" | grep -q "^FAIL $rule:"; then
			echo "ok - $name breaks rule $rule: $(echo "$res" | grep "^FAIL $rule:" | head -1)"
		else
			echo "not ok - $name should break rule $rule:"; echo "$res"; fails=$((fails + 1))
		fi
	}
	t clean none "" 'extern void *memcpy(void *, const void *, unsigned long);
void dmirror_host_panic(const char *);
int f(char *a, const char *b) { memcpy(a, b, 64); if (!a[0]) dmirror_host_panic("x"); return a[1]; }'
	t got reloc "-fPIC -fno-plt" 'extern int ext; int g(void) { return ext; }'
	# ld -r never creates a GOT, so plant one: the rule is about the section's presence.
	t got_section sections "" '__asm__(".section .got,\"aw\"\n.quad 0\n.previous");
int f(int x) { return x + 1; }'
	t tls sections "" '_Thread_local int tv; int f(void) { return tv; }'
	t eh_frame sections "-funwind-tables -fasynchronous-unwind-tables" 'int f(int x) { return x * 3; }'
	t sse simd "-msse2 -mno-soft-float" 'void f(long *a, long *b) { for (int i = 0; i < 64; i++) a[i] = b[i]; }'
	t undef undefined "" 'extern int kernel_thing(int); int f(int x) { return kernel_thing(x); }'
	[ $fails -eq 0 ] || { echo "self-test: $fails case(s) wrong"; return 1; }
	echo "self-test: every rule fires on its violation, and a clean object passes"
	return 0
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kaudit.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$WORK"' EXIT INT TERM

KEEP=""
if [ "${1:-}" = "-o" ]; then
	[ $# -ge 3 ] || die "usage: $0 [-o OUT.o] FILE"
	KEEP=$2
	shift 2
fi
[ $# -eq 1 ] || die "usage: $0 [-o OUT.o] FILE.a|FILE.rlib|FILE.o  |  $0 --self-test"

if [ "$1" = "--self-test" ]; then
	self_test
	exit $?
fi

[ -f "$1" ] || die "$1: no such file"
case "$1" in /*) FILE=$1 ;; *) FILE=$(pwd)/$1 ;; esac
prepare "$FILE" "$WORK/audit.o"
echo "auditing $1 (rules: $RULES; tools: $LD, $READELF, $OBJDUMP, $NM)"
if audit "$WORK/audit.o" "$SKIP_UNDEF"; then
	status=0
	echo "PASS: $1 (rules: $RULES)"
else
	status=1
	echo "FAILED: $1 breaks the kernel object rules above" >&2
fi
if [ -n "$KEEP" ]; then
	cp "$WORK/audit.o" "$KEEP" || die "cannot write $KEEP"
	echo "kept the linked object as $KEEP"
fi
exit $status
