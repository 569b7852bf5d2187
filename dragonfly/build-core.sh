#!/bin/sh
# build-core.sh - build the dmirror core + C ABI glue (crate dmirror-ffi) as the static library a
# kernel module links, exactly as tests/kernel-build.sh (step 3) does, and print its path.
#
# usage: dragonfly/build-core.sh     (CARGO_DEB / RUSTC_DEB override /usr/bin/cargo, /usr/bin/rustc)
#
# - target x86_64-unknown-none: no SSE/x87 (soft float), no red zone: the kernels do not save
#   FPU state for their own code; core is rebuilt from source (-Z build-std, RUSTC_BOOTSTRAP=1)
#   with Debian's rustc-web + rust-web-src, which carry the library source.
# - -C relocation-model=static: no GOT-relative relocations, which no BSD module linker accepts;
#   -Z plt=yes: rustc's default calls functions outside the crate (memset, the compiler-builtins
#   helpers) through the GOT (R_X86_64_GOTPCREL) even with the static model; with plt=yes they
#   are plain calls (R_X86_64_PLT32; NetBSD's build then rewrites those to PC32, see
#   elf-plt32-to-pc32.py).
# - --profile kernel (panic = abort, LTO, one codegen unit); `cargo rustc --crate-type staticlib`
#   because the package also declares an rlib and cargo does not apply LTO to a library built as
#   an rlib too. compiler-builtins-mem: memcpy & co. are weak definitions in the library, so the
#   object needs nothing from the kernel for them (a kernel's own definitions win).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
RUSTC_DEB=${RUSTC_DEB:-/usr/bin/rustc}
CARGO_DEB=${CARGO_DEB:-/usr/bin/cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$top/target/kernel}
cd "$top"
RUSTFLAGS="-C relocation-model=static -Z plt=yes" RUSTC="$RUSTC_DEB" RUSTC_BOOTSTRAP=1 \
	"$CARGO_DEB" rustc --quiet -p dmirror-ffi --lib --crate-type staticlib --profile kernel \
	-Zbuild-std=core,compiler_builtins -Zbuild-std-features=compiler-builtins-mem \
	--target x86_64-unknown-none --target-dir "$TARGET_DIR" >&2
echo "$TARGET_DIR/x86_64-unknown-none/kernel/libdmirror_ffi.a"
