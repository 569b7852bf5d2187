#!/bin/sh
# run.sh - build and run the userland harness of the GEOM class: geom/g_dmirror.c, unmodified,
# on the mock kernel/GEOM in mock/, linked with the host build of the dmirror-ffi staticlib.
#
# SPDX-License-Identifier: BSD-2-Clause
#
# Usage: sh geom/test/run.sh      (needs cargo and a C compiler: cc or $CC)
# Prints one line per check and "N passed, N failed"; exits non-zero if any check failed.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CC=${CC:-cc}
cd "$ROOT"
cargo build --quiet --locked -p dmirror-ffi
LIB="$ROOT/target/debug/libdmirror_ffi.a"
[ -f "$LIB" ] || { echo "run.sh: no $LIB" >&2; exit 2; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# -I mock first: its sys/*.h and geom/*.h stand in for the kernel's.
"$CC" -std=gnu17 -O1 -g -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -fsanitize=address,undefined -fno-omit-frame-pointer -pthread \
	-I"$ROOT/geom/test/mock" -I"$ROOT/shim-c" -I"$ROOT/geom" \
	-o "$OUT/harness" \
	"$ROOT/geom/test/harness.c" "$ROOT/geom/test/mock/mockkern.c" "$ROOT/geom/g_dmirror.c" \
	"$LIB" -ldl -lm
rc=0
ASAN_OPTIONS=detect_leaks=1 "$OUT/harness" >"$OUT/log" 2>&1 || rc=$?
cat "$OUT/log"
# The class's console messages, checked here (the harness's checks cannot see its printf).
if grep -q "m0: leg 1 (md1) taken out for a rebuild, as requested" "$OUT/log"; then
	echo "ok - console: a requested rebuild of an in-sync leg is not reported as an I/O error"
else
	echo "not ok - console: a requested rebuild of an in-sync leg is not reported as an I/O error"
	rc=1
fi
exit "$rc"
