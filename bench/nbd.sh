#!/bin/bash
# NBD benchmark (not a test): qemu-img bench through NBD, legs in tmpfs, for
#   dmirror  - `dmirror serve` with 2 legs
#   raw      - qemu-nbd on one raw file (the limit for writes)
#   quorum   - qemu-nbd serving a quorum of 2 raw files (vote-threshold=1, read-pattern=fifo:
#              writes to both, reads from the first: the RAID1-like configuration)
# Workloads: 4 KiB "random" (a stride of 7919 blocks, wrapping at the end of the image, so no two
# neighbouring requests touch neighbouring blocks; qemu-img bench has no random mode) and 1 MiB
# sequential, read and write, queue depth 1 and 16. Prints a table: MB/s per server and the
# ratios dmirror/raw and dmirror/quorum.
#
# All three are reached over a unix socket by default (BENCH_TRANSPORT=tcp for 127.0.0.1: qemu-nbd
# 7.2 is pathologically slow at depth 16 over TCP, so TCP numbers mostly measure that).
#
# Usage: bench/nbd.sh   (env: BENCH_DIR=/dev/shm/dmirror-bench BENCH_SIZE_MB=1024 BENCH_SECONDS=3
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
SECS=${BENCH_SECONDS:-3}
TRANSPORT=${BENCH_TRANSPORT:-unix}
PORT=$((20000 + RANDOM % 20000))
SOCK=$DIR/nbd.sock
if [ "$TRANSPORT" = tcp ]; then
    URL=nbd://127.0.0.1:$PORT
else
    URL="nbd+unix:///?socket=$SOCK"
fi
SERVER_PID=

cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

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

wait_up() {
    for _ in $(seq 1 100); do
        if qemu-img info -f raw "$URL" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "bench/nbd.sh: server did not come up on $URL" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

start_server() {
    local dm_at=(--socket "$SOCK") qn_at=(-k "$SOCK")
    if [ "$TRANSPORT" = tcp ]; then
        dm_at=(--listen "127.0.0.1:$PORT")
        qn_at=(-b 127.0.0.1 -p "$PORT")
    fi
    rm -f "$SOCK"
    case $1 in
    dmirror)
        "$DM" serve "${dm_at[@]}" --control "$DIR/control.sock" \
            "$DIR/dm0.img" "$DIR/dm1.img" >"$DIR/dmirror.log" 2>&1 &
        ;;
    raw)
        qemu-nbd -f raw "${qn_at[@]}" -t --cache=writeback --aio=threads \
            "$DIR/raw.img" >"$DIR/raw.log" 2>&1 &
        ;;
    quorum)
        local c0="children.0.driver=raw,children.0.file.driver=file,children.0.file.filename=$DIR/q0.img"
        local c1="children.1.driver=raw,children.1.file.driver=file,children.1.file.filename=$DIR/q1.img"
        qemu-nbd "${qn_at[@]}" -t --cache=writeback --aio=threads --image-opts \
            "driver=quorum,vote-threshold=1,read-pattern=fifo,$c0,$c1" >"$DIR/quorum.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    wait_up
}

# name size step depth rw count
WORKLOADS=(
    "4k-rand-write-qd1  4096 32436224 1  w 20000"
    "4k-rand-write-qd16 4096 32436224 16 w 60000"
    "1M-seq-write-qd1   1048576 1048576 1  w 1500"
    "1M-seq-write-qd16  1048576 1048576 16 w 3000"
    "4k-rand-read-qd1   4096 32436224 1  r 20000"
    "4k-rand-read-qd16  4096 32436224 16 r 60000"
    "1M-seq-read-qd1    1048576 1048576 1  r 1500"
    "1M-seq-read-qd16   1048576 1048576 16 r 3000"
)

declare -A MBS

# One calibration run per workload on the raw server sets the request count so that a run takes
# about BENCH_SECONDS there; the other servers run the same count.
declare -A COUNT

run_one() { # server name size step depth rw count -> MB/s
    local size=$3 step=$4 depth=$5 rw=$6 count=$7 wflag=
    [ "$rw" = w ] && wflag=-w
    local out secs
    out=$(qemu-img bench -f raw -c "$count" -d "$depth" -s "$size" -S "$step" $wflag \
        "$URL" 2>&1) || { echo "bench/nbd.sh: qemu-img bench failed on $1: $out" >&2; exit 1; }
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<<"$out")
    awk -v c="$count" -v s="$size" -v t="$secs" 'BEGIN { printf "%.1f", c * s / t / 1e6 }'
}

for server in raw dmirror quorum; do
    start_server "$server"
    for w in "${WORKLOADS[@]}"; do
        read -r name size step depth rw count <<<"$w"
        if [ "$server" = raw ]; then
            # calibrate: scale the count so the run lasts about SECS seconds
            probe=$(run_one "$server" "$name" "$size" "$step" "$depth" "$rw" "$count")
            count=$(awk -v m="$probe" -v s="$size" -v t="$SECS" -v c="$count" \
                'BEGIN { n = int(m * 1e6 * t / s); if (n < 100) n = 100; print n }')
        else
            count=${COUNT[$name]}
        fi
        COUNT[$name]=$count
        MBS[$server,$name]=$(run_one "$server" "$name" "$size" "$step" "$depth" "$rw" "$count")
        echo "  $server $name: ${MBS[$server,$name]} MB/s ($count requests)" >&2
    done
    stop_server
done

echo
echo "qemu-img bench through NBD ($TRANSPORT), legs in $DIR (tmpfs), $(nproc) CPUs, MB/s (1 MB = 10^6 bytes)"
printf "%-20s %10s %10s %10s %12s %12s\n" workload dmirror raw quorum dmirror/raw dmirror/quorum
for w in "${WORKLOADS[@]}"; do
    read -r name _ <<<"$w"
    d=${MBS[dmirror,$name]} r=${MBS[raw,$name]} q=${MBS[quorum,$name]}
    awk -v n="$name" -v d="$d" -v r="$r" -v q="$q" \
        'BEGIN { printf "%-20s %10.1f %10.1f %10.1f %11.0f%% %11.0f%%\n", n, d, r, q, 100*d/r, 100*d/q }'
done
