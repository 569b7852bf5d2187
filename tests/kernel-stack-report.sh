#!/bin/sh
# kernel-stack-report.sh - worst-case stack use of each C entry point (dmirror_*) of a linked
# kernel object, from its disassembly: each function's frame (pushes and `sub $N, %rsp` before its
# first call, plus the return address) plus the deepest chain of direct calls below it.
#
# SPDX-License-Identifier: BSD-2-Clause
#
# Usage: tests/kernel-stack-report.sh OBJ.o [LIMIT_BYTES]
#   With LIMIT_BYTES, exit 1 if ANY entry point needs more: the I/O-path ones ("io": submit,
#   leg_done, tick, status, is_idle, the control operations, what a shim calls from its I/O and
#   event threads) and the setup ones ("setup": create, create_assembled, assemble, assemble_log,
#   identify and the helpers) alike. Shims size kernel threads from this limit (NetBSD's kthreads have a fixed
#   16 KiB stack; dmirror.h states the budget), so setup entry points must not grow past it
#   either. Each line over the limit is marked OVER.
#
# Panic paths are left out (a panic stops the machine through dmirror_host_panic).
# Limits of the method: indirect calls (the shim's callbacks) are not followed (their stack is
# the shim's); recursion, if any, is reported and counted once; frames set up after the first
# call (rare) are missed. It is an estimate for choosing kernel stack sizes, not a proof.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OBJ.o [LIMIT_BYTES]" >&2; exit 2; }
OBJ=$1
LIMIT=${2:-0}
OBJDUMP=objdump
command -v $OBJDUMP >/dev/null 2>&1 || OBJDUMP=llvm-objdump-19

$OBJDUMP -dr --no-show-raw-insn "$OBJ" | awk -v limit="$LIMIT" '
function hex(s,   i, c, v) { v = 0; s = tolower(s); for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)) - 1; v = v * 16 + c } return v }
/^Disassembly of section / { sec = $4; sub(/:$/, "", sec); first_in_sec = 1; next }
/^[0-9a-f]+ <.*>:$/ {
	cur = $2; sub(/^</, "", cur); sub(/>:$/, "", cur)
	frame[cur] = 8; prologue = 1; nfn++; fns[nfn] = cur
	if (first_in_sec) { secfn[sec] = cur; first_in_sec = 0 }
	next
}
cur == "" { next }
prologue && /\tpush / { frame[cur] += 8; next }
prologue && /\tsub +\$0x[0-9a-f]+,%rsp/ { match($0, /\$0x[0-9a-f]+/); frame[cur] += hex(substr($0, RSTART + 3, RLENGTH - 3)); next }
/\t(call|jmp) / { pending = 1; if ($0 ~ /call/) prologue = 0; if ($0 ~ /call +\*/) indirect[cur]++; next }
/R_X86_64_PLT32|R_X86_64_PC32/ && pending {
	t = $NF; sub(/[-+]0x[0-9a-f]+$/, "", t)
	edges[cur] = edges[cur] " " t; pending = 0; next
}
{ pending = 0 }
function target(t) { return (t in frame) ? t : ((t in secfn) ? secfn[t] : "") }
function depth(f,   e, n, i, t, d, best, bestt) {
	if (f in memo) return memo[f]
	if (f in busy) { recursive[f] = 1; return 0 }
	busy[f] = 1; best = 0; bestt = ""
	n = split(edges[f], e, " ")
	for (i = 1; i <= n; i++) {
		t = target(e[i])
		if (t == "" || t == f) continue
		# A panic stops the machine (dmirror_host_panic): its path is not part of the budget.
		if (t ~ /panicking|rust_begin_unwind|dmirror_host_panic/) continue
		d = depth(t); if (d > best) { best = d; bestt = t }
	}
	delete busy[f]
	memo[f] = frame[f] + best; via[f] = bestt
	return memo[f]
}
END {
	bad = 0
	for (i = 1; i <= nfn; i++) {
		f = fns[i]
		if (f !~ /^dmirror_/ || f == "dmirror_host_panic") continue
		d = depth(f)
		chain = f; g = f; k = 0
		while (via[g] != "" && k < 6) { g = via[g]; chain = chain " > " (length(g) > 50 ? substr(g, 1, 50) "..." : g); k++ }
		io = (f !~ /^dmirror_(create|create_assembled|assemble|assemble_log|identify|init_fresh|config_default|memory_needed|sb_location|max_data_sectors|why_str)$/)
		flag = ""
		if (limit > 0 && d > limit) { flag = "  OVER " limit; bad = 1 }
		printf "%7d  %s%s%s\n", d, (io ? "io   " : "setup"), "  " f, flag
		printf "         via %s\n", chain
	}
	for (r in recursive) printf "note: recursion through %s (counted once)\n", r
	exit bad
}'
