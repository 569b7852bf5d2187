#!/bin/bash
# NBD benchmark (not a test): qemu-img bench through NBD, legs in tmpfs, for
#   dmirror  - `dmirror serve` with 2 legs
#   raw      - qemu-nbd on one raw file (the limit for writes)
#   quorum   - qemu-nbd serving a quorum of 2 raw files (vote-threshold=1, read-pattern=fifo:
#              writes to both, reads from the first: the RAID1-like configuration)
# Workloads: 4 KiB "random" (a stride of 7919 blocks, wrapping at the end of the image, so no two
# neighbouring requests touch neighbouring blocks; qemu-img bench has no random mode) and 1 MiB
# sequential, read and write, queue depth 1 and 16. Writes run first, so reads read written data.
# Prints a table: MB/s per server (best of BENCH_REPEAT turns, the servers taking turns) and the
# ratios dmirror/raw and dmirror/quorum.
#
# All three are reached over a unix socket by default (BENCH_TRANSPORT=tcp for 127.0.0.1: qemu-nbd
# 7.2 is pathologically slow at depth 16 over TCP, so TCP numbers mostly measure that).
#
# With legs in tmpfs dmirror does small leg reads, writes and flushes on the mirror's thread
# (no worker hand-off; see UHost::inline_max in cli/src/engine.rs); DMIRROR_INLINE_IO=0 in the
# environment measures the worker path instead (what disk files and block devices mostly take).
#
# Usage: bench/nbd.sh   (env: BENCH_DIR=/dev/shm/dmirror-bench BENCH_SIZE_MB=1024
#                             BENCH_SCALE=1 (request count factor) BENCH_REPEAT=3
#                             BENCH_TRANSPORT=unix|tcp)
set -euo pipefail
cd "$(dirname "$0")/.."

for t in qemu-img qemu-nbd; do
    command -v "$t" >/dev/null || { echo "bench/nbd.sh: $t not found (apt-get install qemu-utils)" >&2; exit 2; }
done

cargo build --release -q -p dmirror-cli
DM=$PWD/target/release/dmirror
DIR=${BENCH_DIR:-/dev/shm/dmirror-bench}
SIZE_MB=${BENCH_SIZE_MB:-1024}
SCALE=${BENCH_SCALE:-1}
REPEAT=${BENCH_REPEAT:-3}
TRANSPORT=${BENCH_TRANSPORT:-unix}
PORT=$((20000 + RANDOM % 20000))
trap 'rm -rf "$DIR"' EXIT

rm -rf "$DIR"
mkdir -p "$DIR"
for f in raw q0 q1; do
    fallocate -l "${SIZE_MB}M" "$DIR/$f.img"
done
# dmirror's legs carry their metadata at the end: give them room so that the mirror exports
# exactly the same size as the others (qemu-img bench wraps at the end of the image).
for f in dm0 dm1; do
    fallocate -l "$((SIZE_MB + 16))M" "$DIR/$f.img"
done
"$DM" label --name bench --size "${SIZE_MB}M" "$DIR/dm0.img" "$DIR/dm1.img" >/dev/null

wait_up() { # url
    for _ in $(seq 1 100); do
        if qemu-img info -f raw "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "bench/nbd.sh: server did not come up on $1" >&2
    exit 1
}

declare -A URL PID
SERVERS=(raw dmirror quorum)

start_server() { # name index
    local at url
    if [ "$TRANSPORT" = tcp ]; then
        local port=$((PORT + $2))
        url=nbd://127.0.0.1:$port
        at=(-b 127.0.0.1 -p "$port")
        dm_at=(--listen "127.0.0.1:$port")
    else
        local sock=$DIR/$1.sock
        url="nbd+unix:///?socket=$sock"
        at=(-k "$sock")
        dm_at=(--socket "$sock")
    fi
    case $1 in
    dmirror)
        "$DM" serve "${dm_at[@]}" --control "$DIR/control.sock" \
            "$DIR/dm0.img" "$DIR/dm1.img" >"$DIR/dmirror.log" 2>&1 &
        ;;
    raw)
        qemu-nbd -f raw "${at[@]}" -t --cache=writeback --aio=threads \
            "$DIR/raw.img" >"$DIR/raw.log" 2>&1 &
        ;;
    quorum)
        local c0="children.0.driver=raw,children.0.file.driver=file,children.0.file.filename=$DIR/q0.img"
        local c1="children.1.driver=raw,children.1.file.driver=file,children.1.file.filename=$DIR/q1.img"
        qemu-nbd "${at[@]}" -t --cache=writeback --aio=threads --image-opts \
            "driver=quorum,vote-threshold=1,read-pattern=fifo,$c0,$c1" >"$DIR/quorum.log" 2>&1 &
        ;;
    esac
    PID[$1]=$!
    URL[$1]=$url
    wait_up "$url"
}

# name size step depth rw count
WORKLOADS=(
    "4k-rand-write-qd1  4096 32436224 1  w 20000"
    "4k-rand-write-qd16 4096 32436224 16 w 50000"
    "1M-seq-write-qd1   1048576 1048576 1  w 1000"
    "1M-seq-write-qd16  1048576 1048576 16 w 2000"
    "4k-rand-read-qd1   4096 32436224 1  r 20000"
    "4k-rand-read-qd16  4096 32436224 16 r 50000"
    "1M-seq-read-qd1    1048576 1048576 1  r 1000"
    "1M-seq-read-qd16   1048576 1048576 16 r 2000"
)

run_one() { # server size step depth rw count -> MB/s
    local size=$2 step=$3 depth=$4 rw=$5 count=$6 wflag=
    [ "$rw" = w ] && wflag=-w
    local out secs
    out=$(qemu-img bench -f raw -c "$count" -d "$depth" -s "$size" -S "$step" $wflag \
        "${URL[$1]}" 2>&1) || { echo "bench/nbd.sh: qemu-img bench failed on $1: $out" >&2; exit 1; }
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<<"$out")
    awk -v c="$count" -v s="$size" -v t="$secs" 'BEGIN { printf "%.1f", c * s / t / 1e6 }'
}

i=0
for s in "${SERVERS[@]}"; do
    start_server "$s" "$i"
    i=$((i + 1))
done
cleanup_servers() {
    for s in "${SERVERS[@]}"; do
        [ -n "${PID[$s]:-}" ] && { kill "${PID[$s]}" 2>/dev/null || true; wait "${PID[$s]}" 2>/dev/null || true; }
    done
    rm -rf "$DIR"
}
trap cleanup_servers EXIT

# The servers take turns on every workload, REPEAT times; the best run of each counts (on a
# shared machine the best run is the one least disturbed by others).
declare -A MBS
for w in "${WORKLOADS[@]}"; do
    read -r name size step depth rw count <<<"$w"
    count=$(awk -v c="$count" -v f="$SCALE" 'BEGIN { n = int(c * f); if (n < 10) n = 10; print n }')
    for rep in $(seq 1 "$REPEAT"); do
        for s in "${SERVERS[@]}"; do
            m=$(run_one "$s" "$size" "$step" "$depth" "$rw" "$count")
            best=${MBS[$s,$name]:-0}
            MBS[$s,$name]=$(awk -v a="$m" -v b="$best" 'BEGIN { print (a > b) ? a : b }')
            echo "  $name $s run $rep: $m MB/s" >&2
        done
    done
done

echo
echo "qemu-img bench through NBD ($TRANSPORT), legs in $DIR (tmpfs), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "MB/s (10^6 bytes), best of $REPEAT runs"
printf "%-20s %10s %10s %10s %12s %14s\n" workload dmirror raw quorum dmirror/raw dmirror/quorum
for w in "${WORKLOADS[@]}"; do
    read -r name _ <<<"$w"
    d=${MBS[dmirror,$name]} r=${MBS[raw,$name]} q=${MBS[quorum,$name]}
    awk -v n="$name" -v d="$d" -v r="$r" -v q="$q" \
        'BEGIN { printf "%-20s %10.1f %10.1f %10.1f %11.0f%% %13.0f%%\n", n, d, r, q, 100*d/r, 100*d/q }'
done
