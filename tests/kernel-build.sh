#!/bin/sh
# kernel-build.sh - build the dmirror core and its C ABI glue for a kernel (x86_64-unknown-none)
# with Debian's rustc-web, and audit the result with tests/kernel-object-audit.sh.
#
# SPDX-License-Identifier: BSD-2-Clause
#
# Installs nothing. Needs: rustc-web cargo-web rust-web-src (the toolchain with library source
# for -Zbuild-std: /usr/bin/rustc, /usr/bin/cargo), libclang-dev (bindgen, for dmirror-ffi's
# build script), lld-19 (ld.lld -r) or binutils' ld, binutils (readelf, objdump, nm, ar), and
# for the audit's self-test clang-19. -Zbuild-std fetches core's own dependencies from crates.io.
#
# Steps:
#   1. `dmirror` exactly as issue 2 states (--release, no RUSTFLAGS), in target/kernel-plain:
#      it must build and use no SSE/AVX register. Then the full audit of that same build must
#      FAIL on relocations (rustc emits GOTPCREL without the kernel RUSTFLAGS, which FreeBSD's
#      kernel linker rejects): this shows the audit catches a real violation.
#   2. the audit's self-test (one synthetic object per rule; skipped without clang).
#   3. `dmirror-ffi` as a staticlib with RUSTFLAGS="-C relocation-model=static -Z plt=yes" and
#      --profile kernel (panic abort, LTO, one codegen unit), in target/kernel. `cargo rustc
#      --crate-type staticlib` because the package also declares an rlib, and cargo does not
#      apply LTO to a library built as an rlib too.
#   4. the full audit of that staticlib; the object it links (what a module Makefile links) is
#      kept as target/kernel/dmirror_kernel.o.
#   5. the worst-case stack of each entry point (tests/kernel-stack-report.sh): every one, I/O
#      path and setup (create, create_assembled, assemble, identify) alike, must stay under
#      STACK_LIMIT (8192 bytes by default; IO_STACK_LIMIT is the old name). dmirror.h promises
#      shims this budget (NetBSD runs assembly on a 16 KiB kthread stack).
#
# Separate target directories (target/kernel-plain, target/kernel) keep these builds away from
# the rustup toolchain's target/debug and target/release and from each other (a RUSTFLAGS change
# would otherwise rebuild core every time); no --config is needed.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
AUDIT="sh $ROOT/tests/kernel-object-audit.sh"
TARGET=x86_64-unknown-none
RUSTC_DEB=${RUSTC_DEB:-/usr/bin/rustc}
CARGO_DEB=${CARGO_DEB:-/usr/bin/cargo}
BUILD_STD="-Zbuild-std=core,compiler_builtins -Zbuild-std-features=compiler-builtins-mem"
KFLAGS="-C relocation-model=static -Z plt=yes"

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nkernel-build: FAILED: %s\n' "$*" >&2; exit 1; }

[ -x "$RUSTC_DEB" ] || fail "$RUSTC_DEB missing (apt-get install rustc-web cargo-web rust-web-src)"
[ -x "$CARGO_DEB" ] || fail "$CARGO_DEB missing (apt-get install cargo-web)"
"$RUSTC_DEB" --version
[ -d "$("$RUSTC_DEB" --print sysroot)/lib/rustlib/src/rust/library/core" ] ||
	fail "no library source for -Zbuild-std (apt-get install rust-web-src)"

say "1. dmirror for $TARGET as issue 2 states (no RUSTFLAGS)"
env -u RUSTFLAGS RUSTC="$RUSTC_DEB" RUSTC_BOOTSTRAP=1 "$CARGO_DEB" build --locked -p dmirror \
	--release $BUILD_STD --target $TARGET --target-dir target/kernel-plain ||
	fail "the core does not build for $TARGET"
PLAIN=target/kernel-plain/$TARGET/release/libdmirror.rlib
DMIRROR_AUDIT_RULES=simd $AUDIT "$PLAIN" || fail "the core uses SSE/AVX registers"
say "1b. the full audit must reject that build (GOTPCREL without the kernel RUSTFLAGS)"
if out=$($AUDIT "$PLAIN" 2>&1); then
	echo "$out"
	fail "the audit accepted a build without the kernel RUSTFLAGS: either rustc stopped emitting GOT relocations there, or the audit is blind; look"
fi
echo "$out" | grep '^FAIL' || true
echo "ok: the audit rejects the build without the kernel RUSTFLAGS"

say "2. audit self-test"
if command -v clang-19 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1; then
	$AUDIT --self-test || fail "the audit's self-test"
else
	echo "skipped: no clang (apt-get install clang-19)"
fi

say "3. dmirror-ffi staticlib for $TARGET (RUSTFLAGS=\"$KFLAGS\", --profile kernel)"
RUSTFLAGS="$KFLAGS" RUSTC="$RUSTC_DEB" RUSTC_BOOTSTRAP=1 "$CARGO_DEB" rustc --locked \
	-p dmirror-ffi --lib --crate-type staticlib --profile kernel $BUILD_STD --target $TARGET \
	--target-dir target/kernel || fail "dmirror-ffi does not build for $TARGET"
LIB=target/kernel/$TARGET/kernel/libdmirror_ffi.a

say "4. audit $LIB"
$AUDIT -o target/kernel/dmirror_kernel.o "$LIB" || fail "$LIB breaks the kernel object rules"

say "4b. no reachable panic"
# The panic handler calls dmirror_host_panic; with LTO it survives only if some path can panic.
NMU=$(command -v llvm-nm-19 || command -v nm)
if $NMU -u target/kernel/dmirror_kernel.o | grep -q 'dmirror_host_panic'; then
	fail "the kernel object can panic (it references dmirror_host_panic): find the unwrap, index, division or slice that can fail"
fi
echo "ok: no panic path survives in the linked object"

STACK_LIMIT=${STACK_LIMIT:-${IO_STACK_LIMIT:-8192}}
say "5. stack use of the entry points (limit $STACK_LIMIT bytes for every entry point)"
if stack=$(sh "$ROOT/tests/kernel-stack-report.sh" target/kernel/dmirror_kernel.o "$STACK_LIMIT"); then
	echo "$stack" | grep -v '^         via'
else
	echo "$stack"
	fail "an entry point needs more than $STACK_LIMIT bytes of kernel stack (see OVER above)"
fi
echo
echo "kernel-build: OK ($LIB; linked object target/kernel/dmirror_kernel.o)"
