#!/bin/sh
# build-core.sh - build the dmirror core + C ABI glue (crate dmirror-ffi) as a static library for
# BSD kernels: target x86_64-unknown-none (no SSE, soft float, no red zone, kernel code model),
# static relocation model (no GOT), the `kernel` profile (panic = abort, LTO, one codegen unit).
#
# usage: dragonfly/build-core.sh            -> prints the path of libdmirror_ffi.a
#
# x86_64-unknown-none ships no prebuilt `core` for every toolchain, so core is rebuilt from
# source with -Z build-std (RUSTC_BOOTSTRAP=1): Debian's rustc-web + rust-web-src provide the
# matching library source (/usr/lib/rustlib/src/rust/library). Override with CARGO / RUSTC.
# compiler-builtins' mem feature is off on purpose: memcpy/memset/memcmp/memmove come from the
# kernel, not from a second copy in the module.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
: "${CARGO:=/usr/bin/cargo}"
: "${RUSTC:=/usr/bin/rustc}"
export RUSTC
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$top/target}"
# Static relocation model: calls/data references are PC32/PLT32/32S/64, never GOTPCREL(X), which
# neither kernel linker accepts. Kernel code model: the module may be loaded anywhere in the top
# 2 GiB, where the kernel lives. The target itself has no SSE/x87 (soft float): the kernels do not
# save FPU state for their own code.
# -Z plt=yes: rustc's default (plt=no) calls functions outside the crate (memset, memcmp, the
# compiler-builtins helpers) through the GOT (R_X86_64_GOTPCREL), even with the static model;
# with plt=yes they are plain calls (R_X86_64_PLT32, which NetBSD's build rewrites to PC32).
export RUSTFLAGS="${RUSTFLAGS:-} -C relocation-model=static -C code-model=kernel -C force-frame-pointers=yes -Z plt=yes"
"$CARGO" build --quiet -p dmirror-ffi --lib --profile kernel --target x86_64-unknown-none \
    -Z build-std=core,compiler_builtins --manifest-path "$top/Cargo.toml" >&2
echo "$CARGO_TARGET_DIR/x86_64-unknown-none/kernel/libdmirror_ffi.a"
