# adapters/userland.sh - drive the userland `dmirror` tool (issue 4) on Debian.
#
# Legs are plain files (sc_leg_file I). The mirror is `dmirror serve --socket S --control C`
# running in the background; data I/O goes through NBD with qemu-io (writes, flush) and
# qemu-img convert (reads); leg states come from `dmirror status --json`. Failures use the
# tool's own fault legs: a failing leg is served as `error:PATH` (every I/O the mirror issues
# fails; assembly can still read its label); a crash is kill -9 of the server.
#
# Being on Debian, this adapter may use grep and python3 (for JSON); the scenarios do not.
#
# Environment:
#   DMIRROR          the dmirror binary (default: target/{debug,release}/dmirror of the workspace)
#   UL_TIMEOUT       seconds to wait for the server or a resync (default 60)
#   UL_THROTTLE_ARGS serve options that slow the resync down (default --resync-rate 1M; set it
#                    empty and ad_throttle answers "unsupported")
#   UL_POLICY_OPT    serve option that sets the read policy (default --read-policy; set it
#                    empty and ad_policy answers "unsupported")
#   UL_SMALLEST_OPT  label option that accepts legs of different sizes (default --use-smallest)
#
# Written against the cli branch as of its first commit (8e6850e): `status --json` gives
# {"legs": [{"index", "device" (the leg as named, fault prefix included), "state" (in-sync,
# rebuilding, failed, missing, empty), "resync_done_sectors", ...}], "dirty_regions", ...};
# `inspect --json LEG` gives [{"leg_index", "generation", "legs": [{"rebuild_checkpoint"}]}];
# `remove` takes a leg index; fault legs apply to the mirror's I/O, not to assembly's label reads.
# `serve --read-policy round-robin|load|prefer:SLOT|split` and `--resync-rate BYTES/S` (the
# cli branch from c1c8378) set the read policy and slow the resync down; both take effect by
# restarting the server cleanly.

_ul() {
	[ "${SC_VERBOSE:-0}" = 1 ] && echo "userland: $*" >&2
	return 0
}

_ul_find_dmirror() {
	if [ -n "${DMIRROR:-}" ]; then
		echo "$DMIRROR"
		return 0
	fi
	_ul_root=$(cd "$SC_DIR/../.." && pwd)
	_ul_tgt=${CARGO_TARGET_DIR:-$_ul_root/target}
	for _ul_b in "$_ul_tgt/release/dmirror" "$_ul_tgt/debug/dmirror"; do
		if [ -x "$_ul_b" ]; then
			echo "$_ul_b"
			return 0
		fi
	done
	return 1
}

ad_setup() {
	for _ul_t in qemu-io qemu-img python3; do
		if ! command -v $_ul_t >/dev/null 2>&1; then
			echo "userland adapter: $_ul_t is missing (apt-get install qemu-utils python3)"
			return 2
		fi
	done
	if ! UL_BIN=$(_ul_find_dmirror); then
		echo "userland adapter: no dmirror binary: build it (cargo build -p dmirror-cli) or set DMIRROR"
		return 2
	fi
	if ! "$UL_BIN" --help >/dev/null 2>&1; then
		echo "userland adapter: $UL_BIN does not run"
		return 2
	fi
	UL_SOCK=$SC_WORK/nbd.sock
	UL_CTL=$SC_WORK/control.sock
	UL_LOG=$SC_WORK/serve.log
	UL_PID=
	UL_NLEGS=0
	UL_THROTTLE=0
	UL_POLICY=
	return 0
}

ad_cleanup() {
	if [ -n "${UL_PID:-}" ]; then
		kill -9 "$UL_PID" 2>/dev/null
		wait "$UL_PID" 2>/dev/null
		UL_PID=
	fi
}

_ul_get() { eval "echo \"\${$1:-}\""; }

ad_mkleg() {
	lib_mkfile "$1" "$2" || return 1
	eval "UL_FAULT$1=ok UL_PRESENT$1=1 UL_SLOT$1=-1 UL_IN$1="
	if [ "$1" -ge "$UL_NLEGS" ]; then UL_NLEGS=$(($1 + 1)); fi
}

# _ul_leg_arg I: how leg I is named to dmirror: its path, behind error: while it is failing.
_ul_leg_arg() {
	_ul_f=$(sc_leg_file "$1")
	if [ "$(_ul_get "UL_FAULT$1")" = broken ]; then
		echo "error:$_ul_f"
	else
		echo "$_ul_f"
	fi
}

_ul_url() {
	echo "nbd+unix:///?socket=$UL_SOCK"
}

# _ul_serve LEG...: start the server on these legs (indices); wait until it serves or exits.
# dmirror serve refuses a stale leg (one that missed changes) unless given --force, which
# resyncs it from the others: that is what a kernel does at assembly, so when the only
# complaint is a stale leg, serve again with --force. Any other refusal (split brain...) stands.
_ul_serve() {
	_ul_serve_once "" "$@" && return 0
	[ -n "$(tail -n 1 "$UL_LOG" | sed -n '/is stale.*pass --force/p')" ] || return 1
	_ul_serve_once --force "$@"
}

_ul_serve_once() {
	_ul_force=$1
	shift
	_ul_args=
	for _ul_l in "$@"; do
		_ul_args="$_ul_args $(_ul_leg_arg "$_ul_l")"
	done
	_ul_opts=
	[ "$UL_THROTTLE" = 1 ] && _ul_opts="$_ul_opts ${UL_THROTTLE_ARGS:-}"
	[ -n "$UL_POLICY" ] && _ul_opts="$_ul_opts ${UL_POLICY_OPT:-} $UL_POLICY"
	rm -f "$UL_SOCK" "$UL_CTL"
	_ul "serve $_ul_force$_ul_opts$_ul_args"
	# shellcheck disable=SC2086 # word lists built above (paths hold no blanks)
	"$UL_BIN" serve --socket "$UL_SOCK" --control "$UL_CTL" $_ul_force $_ul_opts $_ul_args >>"$UL_LOG" 2>&1 &
	UL_PID=$!
	_ul_w=0
	while [ $_ul_w -lt $((${UL_TIMEOUT:-60} * 10)) ]; do
		if ! kill -0 "$UL_PID" 2>/dev/null; then
			wait "$UL_PID" 2>/dev/null
			_ul "server exited: $(tail -n 3 "$UL_LOG")"
			UL_PID=
			return 1
		fi
		if [ -S "$UL_SOCK" ] && [ -S "$UL_CTL" ]; then
			return 0
		fi
		sleep 0.1
		_ul_w=$((_ul_w + 1))
	done
	echo "userland: the server did not come up in time" >&2
	ad_cleanup
	return 1
}

# _ul_present_legs [held]: member legs whose devices are present; with "held", also the legs
# held out (failed, device healed, not given back yet: an assembly takes them back, the
# adapter's own restarts do not).
_ul_present_legs() {
	_ul_pl=
	_ul_i=0
	while [ $_ul_i -lt "$UL_NLEGS" ]; do
		if [ "$(_ul_get "UL_PRESENT$_ul_i")" = 1 ] && [ -n "$(_ul_get "UL_IN$_ul_i")" ]; then
			if [ "${1:-}" = held ] || [ "$(_ul_get "UL_HELD$_ul_i")" != 1 ]; then
				_ul_pl="$_ul_pl $_ul_i"
			fi
		fi
		_ul_i=$((_ul_i + 1))
	done
	echo "$_ul_pl"
}

_ul_need_up() {
	if [ -z "${UL_PID:-}" ]; then
		echo "userland: the mirror is not running" >&2
		return 1
	fi
}

# --- data -----------------------------------------------------------------------------------

ad_write() { # OFF LEN SEED
	_ul_need_up || return 1
	_ul_pf=$(pat_file "$3" "$2") || return 1
	_ul_o=$(qemu-io -f raw -c "write -q -s $_ul_pf ${1}k ${2}k" "$(_ul_url)" 2>&1)
	_ul_rc=$?
	_ul "write $1k+$2k seed $3: rc $_ul_rc $_ul_o"
	[ $_ul_rc -eq 0 ] && [ -z "$_ul_o" ]
}

ad_read() { # OFF LEN FILE
	_ul_need_up || return 1
	rm -f "$3"
	qemu-img convert --image-opts \
		"driver=raw,offset=$(($1 * 1024)),size=$(($2 * 1024)),file.driver=nbd,file.path=$UL_SOCK" \
		-O raw "$3" >/dev/null 2>&1
}

ad_flush() {
	_ul_need_up || return 1
	_ul_o=$(qemu-io -f raw -c flush "$(_ul_url)" 2>&1) && [ -z "$_ul_o" ]
}

ad_size_kib() {
	_ul_need_up || return 1
	_ul_sz=$(qemu-img info --output=json "$(_ul_url)" 2>/dev/null |
		sed -n 's/.*"virtual-size": *\([0-9][0-9]*\).*/\1/p' | head -n 1)
	[ -n "$_ul_sz" ] || return 1
	echo $((_ul_sz / 1024))
}

# --- state ----------------------------------------------------------------------------------

# _ul_json_leg WHAT I: from `status --json` (on stdin), leg I's state (WHAT=state) or resync
# progress in KiB (WHAT=progress) or slot index (WHAT=index). The leg is found by its path, or, for a leg the server has no
# path for (missing), by the slot it was given at label time (its place on the command line).
_ul_json_leg() {
	_ul_slotv=$(_ul_get "UL_SLOT$2")
	python3 -c '
import json, sys
what, leg, slot = sys.argv[1], sys.argv[2], int(sys.argv[3])
doc = json.load(sys.stdin)
def legs(d):
    if isinstance(d, dict):
        for k, v in d.items():
            if k.lower() in ("legs", "leg") and isinstance(v, list):
                return v
        for v in d.values():
            r = legs(v)
            if r is not None:
                return r
    return None
def mentions(d, name):
    if isinstance(d, str):
        return d.endswith(name) or (name + ":") in d
    if isinstance(d, dict):
        return any(mentions(v, name) for v in d.values())
    if isinstance(d, list):
        return any(mentions(v, name) for v in d)
    return False
all_legs = legs(doc) or []
chosen = [l for l in all_legs if mentions(l, "/leg%s.img" % leg)]
# A slot with no device (a missing leg) is taken to be the leg labelled into it, unless the
# slot has since been given to another device.
if not chosen and 0 <= slot < len(all_legs) and not str(all_legs[slot].get("device", "")).strip("-"):
    chosen = [all_legs[slot]]
for l in chosen:
    if what == "index":
        print(l.get("index", ""))
    elif what == "state":
        s = str(l.get("state", "")).lower().replace("-", "").replace("_", "").replace(" ", "")
        s = {"resyncing": "rebuilding", "syncing": "rebuilding", "removed": "empty",
             "absent": "missing"}.get(s, s)
        print(s)
    else:
        for k in ("resync_done", "resync_done_sectors", "done"):
            if k in l:
                print(int(l[k]) // 2)
                break
    sys.exit(0)
if what == "state":
    print("empty")
' "$1" "$2" "${_ul_slotv:--1}"
}

_ul_status() {
	"$UL_BIN" status --json --control "$UL_CTL" 2>/dev/null
}

ad_state() {
	_ul_need_up || return 1
	_ul_status | _ul_json_leg state "$1"
}

_ul_all_settled() { # no leg rebuilding
	_ul_sj=$(_ul_status) || return 1
	_ul_i=0
	while [ $_ul_i -lt "$UL_NLEGS" ]; do
		[ "$(echo "$_ul_sj" | _ul_json_leg state $_ul_i)" = rebuilding ] && return 1
		_ul_i=$((_ul_i + 1))
	done
	return 0
}

ad_wait_sync() {
	_ul_need_up || return 1
	_ul_w=${1:-${UL_TIMEOUT:-60}}
	while :; do
		_ul_all_settled && return 0
		[ "$_ul_w" -le 0 ] && return 1
		sleep 1
		_ul_w=$((_ul_w - 1))
	done
}

ad_settle() {
	_ul_need_up || return 1
	_ul_w=${1:-${UL_TIMEOUT:-60}}
	while :; do
		_ul_d=$(_ul_status | python3 -c '
import json, sys
def find(d):
    if isinstance(d, dict):
        for k, v in d.items():
            if k.lower() in ("dirty_regions", "dirty") and isinstance(v, int):
                return v
        for v in d.values():
            r = find(v)
            if r is not None:
                return r
    return None
print(find(json.load(sys.stdin)))')
		[ "$_ul_d" = 0 ] && return 0
		[ "$_ul_w" -le 0 ] && return 1
		sleep 1
		_ul_w=$((_ul_w - 1))
	done
}

# --- life cycle -----------------------------------------------------------------------------

ad_label() { # LEG...
	_ul_paths=
	_ul_min=
	_ul_max=
	_ul_slot=0
	for _ul_l in "$@"; do
		eval "UL_SLOT$_ul_l=$_ul_slot"
		_ul_slot=$((_ul_slot + 1))
		_ul_paths="$_ul_paths $(sc_leg_file "$_ul_l")"
		_ul_s=$(wc -c <"$(sc_leg_file "$_ul_l")")
		[ -z "$_ul_min" ] || [ "$_ul_s" -lt "$_ul_min" ] && _ul_min=$_ul_s
		[ -z "$_ul_max" ] || [ "$_ul_s" -gt "$_ul_max" ] && _ul_max=$_ul_s
		eval "UL_IN$_ul_l=1"
	done
	_ul_opt=
	[ "$_ul_min" != "$_ul_max" ] && _ul_opt=${UL_SMALLEST_OPT:---use-smallest}
	_ul "label --region-size ${SC_REGION_KIB}K $_ul_opt$_ul_paths"
	# shellcheck disable=SC2086
	"$UL_BIN" label --name sc --region-size "${SC_REGION_KIB}K" $_ul_opt $_ul_paths >>"$UL_LOG" 2>&1 ||
		return 1
	# The first leg named is the source: serve it first.
	_ul_serve "$@"
}

ad_stop() {
	_ul_need_up || return 1
	kill -TERM "$UL_PID" 2>/dev/null
	wait "$UL_PID"
	_ul_rc=$?
	UL_PID=
	return $_ul_rc
}

ad_crash() {
	_ul_need_up || return 1
	kill -9 "$UL_PID" 2>/dev/null
	wait "$UL_PID" 2>/dev/null
	UL_PID=
	return 0
}

ad_start() { # [LEG...]
	[ -n "${UL_PID:-}" ] && return 1
	if [ $# -eq 0 ]; then
		# shellcheck disable=SC2046
		set -- $(_ul_all_legs)
	fi
	_ul_i=0
	while [ $_ul_i -lt "$UL_NLEGS" ]; do
		eval "UL_PRESENT$_ul_i=0"
		_ul_i=$((_ul_i + 1))
	done
	for _ul_l in "$@"; do eval "UL_PRESENT$_ul_l=1 UL_HELD$_ul_l="; done
	# Only legs that belong to the mirror are named: a removed leg carries no metadata, and
	# dmirror serve (unlike a kernel's taste) refuses a leg without any.
	# shellcheck disable=SC2046
	_ul_serve $(_ul_present_legs held)
}

_ul_all_legs() {
	_ul_i=0
	while [ $_ul_i -lt "$UL_NLEGS" ]; do
		printf '%s ' $_ul_i
		_ul_i=$((_ul_i + 1))
	done
}

# _ul_restart: clean stop and serve again on the present legs (to change a leg's fault wrapper
# or the server's options).
_ul_restart() {
	ad_stop || return 1
	# shellcheck disable=SC2046 # a list of leg numbers
	_ul_serve $(_ul_present_legs)
}

ad_fail() {
	eval "UL_FAULT$1=broken"
	[ -n "${UL_PID:-}" ] || return 0
	_ul_restart || return 1
	# The restarted server writes a new generation to every leg at once; the broken leg fails
	# there. Wait for that (up to 10 s) so the next step sees the mirror as it settled, not the
	# instant between assembly and its first metadata write (an `add` then found no free slot).
	_ul_w=10
	while [ "$_ul_w" -gt 0 ]; do
		case $(ad_state "$1") in insync | rebuilding) ;; *) return 0 ;; esac
		sleep 1
		_ul_w=$((_ul_w - 1))
	done
	return 0
}

# ad_heal I: the device works again. A leg the mirror still uses is served by its plain path
# from now on (a clean restart). A failed leg stays failed until given back with ad_insert; the
# adapter's own restarts leave it out meanwhile (a served leg that is merely stale would be
# resynced at once); a later assembly (ad_start) takes it, by its plain path.
ad_heal() {
	eval "UL_FAULT$1=ok"
	[ -n "${UL_PID:-}" ] || { eval "UL_HELD$1=1"; return 0; }
	case $(ad_state "$1") in
	insync | rebuilding)
		# Still in use: the device works again for the mirror (serve it by its plain path).
		_ul_restart
		;;
	*) eval "UL_HELD$1=1" ;;
	esac
}

ad_vanish() {
	eval "UL_PRESENT$1=0"
	[ -n "${UL_PID:-}" ] || return 0
	_ul_restart
}

# ad_return I: the device is back. A kernel's taste takes back a member it knows as missing,
# and only that (a failed leg must be given back by hand): `add` it only when it is missing.
ad_return() {
	eval "UL_PRESENT$1=1"
	[ -n "${UL_PID:-}" ] || return 0
	[ "$(ad_state "$1")" = missing ] || return 0
	"$UL_BIN" add --control "$UL_CTL" "$(_ul_leg_arg "$1")" >>"$UL_LOG" 2>&1
}

# ad_insert I: give leg I to the mirror for a full rebuild. The tool refuses a leg that carries
# this mirror's metadata from before (a removed leg) unless told --force, which means exactly
# that (add it as a new leg, full resync): retry with it on that refusal only.
ad_insert() {
	_ul_need_up || return 1
	eval "UL_IN$1=1 UL_PRESENT$1=1 UL_HELD$1="
	"$UL_BIN" add --control "$UL_CTL" "$(_ul_leg_arg "$1")" >>"$UL_LOG" 2>&1 && return 0
	[ -n "$(tail -n 1 "$UL_LOG" | sed -n '/no longer a member; pass --force/p')" ] || return 1
	"$UL_BIN" add --force --control "$UL_CTL" "$(_ul_leg_arg "$1")" >>"$UL_LOG" 2>&1
}

ad_remove() {
	_ul_need_up || return 1
	_ul_ix=$(_ul_status | _ul_json_leg index "$1")
	[ -n "$_ul_ix" ] || return 1
	"$UL_BIN" remove --control "$UL_CTL" "$_ul_ix" >>"$UL_LOG" 2>&1 || return 1
	eval "UL_IN$1="
}

ad_policy() { # NAME [LEG]
	[ -n "${UL_POLICY_OPT-"--read-policy"}" ] || return 2
	UL_POLICY_OPT=${UL_POLICY_OPT-"--read-policy"}
	case $1 in
	prefer)
		# The tool names the preferred leg by its slot.
		_ul_need_up || return 1
		_ul_ix=$(_ul_status | _ul_json_leg index "${2:-0}")
		[ -n "$_ul_ix" ] || return 1
		UL_POLICY="prefer:$_ul_ix"
		;;
	round-robin | load | split) UL_POLICY=$1 ;;
	*) return 2 ;;
	esac
	[ -n "${UL_PID:-}" ] || return 0
	_ul_restart
}

# ad_throttle on|off: serve with (or without) a resync rate limit, restarting a running server.
ad_throttle() {
	[ -n "${UL_THROTTLE_ARGS-"--resync-rate 1M"}" ] || return 2
	UL_THROTTLE_ARGS=${UL_THROTTLE_ARGS-"--resync-rate 1M"}
	case $1 in
	on) UL_THROTTLE=1 ;;
	off) UL_THROTTLE=0 ;;
	*) return 1 ;;
	esac
	[ -n "${UL_PID:-}" ] || return 0
	_ul_restart
}

ad_wait_progress() { # I REGIONS [SECS]
	_ul_need_up || return 1
	_ul_w=${3:-${UL_TIMEOUT:-60}}
	while :; do
		_ul_k=$(_ul_status | _ul_json_leg progress "$1")
		[ -n "$_ul_k" ] && [ $((_ul_k / SC_REGION_KIB)) -ge "$2" ] && return 0
		[ "$_ul_w" -le 0 ] && return 1
		sleep 1
		_ul_w=$((_ul_w - 1))
	done
}

# ad_checkpoint I: leg I's rebuild checkpoint (regions) as the newest metadata on any leg
# records it; leg I's slot is the one its own label names (or the one it was labelled into).
ad_checkpoint() { # I (mirror stopped)
	: >"$SC_WORK/inspect.json"
	_ul_i=0
	while [ $_ul_i -lt "$UL_NLEGS" ]; do
		"$UL_BIN" inspect --json "$(sc_leg_file $_ul_i)" >"$SC_WORK/inspect.$_ul_i.json" 2>/dev/null ||
			rm -f "$SC_WORK/inspect.$_ul_i.json"
		_ul_i=$((_ul_i + 1))
	done
	python3 -c '
import glob, json, sys
work, leg, slot = sys.argv[1], sys.argv[2], int(sys.argv[3])
metas = {}
for f in glob.glob(work + "/inspect.*.json"):
    try:
        d = json.load(open(f))
    except ValueError:
        continue
    if isinstance(d, list) and d:
        metas[f.split(".")[-2]] = d[0]
own = metas.get(leg)
if own is not None and "leg_index" in own:
    slot = int(own["leg_index"])
if slot < 0 or not metas:
    sys.exit(1)
newest = max(metas.values(), key=lambda m: m.get("generation", 0))
legs = newest.get("legs", [])
if slot >= len(legs) or "rebuild_checkpoint" not in legs[slot]:
    sys.exit(1)
print(legs[slot]["rebuild_checkpoint"])
' "$SC_WORK" "$1" "$(_ul_get "UL_SLOT$1")"
}

ad_leg_digest() { lib_leg_digest "$@"; }
ad_leg_poke() { lib_leg_poke "$@"; }
ad_compare() { lib_compare "$@"; }
