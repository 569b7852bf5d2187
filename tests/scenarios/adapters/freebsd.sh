# adapters/freebsd.sh - drive the GEOM class DMIRROR (issue 5) in a FreeBSD guest.
#
# Uses only what /rescue holds: sh, dd, sed, mdconfig, geom (gnop and dmirror through it),
# sysctl, sleep, and the class's geom(8) library (geom_dmirror.so, found through GEOM_LIBRARY_PATH
# when it is not installed).
#
# Legs: leg I is the file sc_leg_file I, attached as md(4) unit FB_UNIT0+I (vnode-backed, so its
# data outlives the device), with a gnop(4) provider mdN.nop on top that is 1 MiB shorter than
# the md device. The mirror's legs are the .nop providers: failing a leg is
#   gnop configure -r 100 -w 100 mdN.nop   (every read and write fails; -r 0 -w 0 heals it)
# and, because the .nop provider ends 1 MiB before the md device, dmirror's metadata (at the end
# of a leg) is found by taste on mdN.nop only, never on mdN as well.
# A leg vanishes when its gnop and md devices are destroyed, and returns when they are created
# again (the class tastes it). A crash: every leg's gnop is set to fail all I/O in one request
# (nothing reaches a leg after that instant), then every gnop and md device is destroyed (the
# files are kept); ad_start creates them again and the class assembles the mirror by taste.
#
# What this adapter assumes of the class beyond issue 5's text (to be checked against it; each
# is a variable below):
#   `geom dmirror status -s NAME` prints each leg as "PROVIDER (STATE[, N%])" with STATE one of
#               IN_SYNC, REBUILDING, FAILED, JOINING, STARTING (the class's dumpconf; a
#               missing leg has no consumer and is not listed)
#   a line "DirtyRegions: N" and one "MetaWrites: N" in `geom dmirror list NAME`
#   "checkpoint region N" in `geom dmirror dump PROVIDER` for a rebuilding leg
#   label takes -r REGION_SIZE (bytes); configure takes -b POLICY, with "-b prefer:PROVIDER"
#   a degraded mirror starts after kern.geom.dmirror.timeout seconds (set to FB_TIMEOUT here)
#   ad_throttle delays every write to the legs' gnops by FB_THROTTLE_MS (gnop -d/-x); or
#   FB_THROTTLE_ON/OFF, commands that slow the resync down and restore it

FB_UNIT0=${FB_UNIT0:-40}
FB_NAME=${FB_NAME:-scmirror}
FB_TIMEOUT=${FB_TIMEOUT:-3}
FB_WAIT=${FB_WAIT:-60}
FB_PAD_KIB=1024
FB_SPARE_SLOTS=${FB_SPARE_SLOTS:-1}

_fb() {
	[ "${SC_VERBOSE:-0}" = 1 ] && echo "freebsd: $*" >&2
	return 0
}

_fb_get() { eval "echo \"\${$1:-}\""; }

_fb_dev() { echo "/dev/dmirror/$FB_NAME"; }
_fb_prov() { echo "md$((FB_UNIT0 + $1)).nop"; }

_fb_run() {
	_fb "$*"
	"$@" >>"$SC_WORK/freebsd.log" 2>&1
}

ad_setup() {
	for _fb_t in mdconfig geom gnop sysctl dd sed; do
		if ! command -v $_fb_t >/dev/null 2>&1; then
			echo "freebsd adapter: $_fb_t is missing"
			return 2
		fi
	done
	if ! geom dmirror help >/dev/null 2>&1 && ! geom dmirror list >/dev/null 2>&1; then
		echo "freebsd adapter: geom dmirror does not work (geom_dmirror.ko loaded? geom_dmirror.so on GEOM_LIBRARY_PATH?)"
		return 2
	fi
	geom nop load >/dev/null 2>&1
	sysctl kern.geom.dmirror.timeout="$FB_TIMEOUT" >/dev/null 2>&1
	FB_NLEGS=0
	FB_UP=0
	return 0
}

ad_cleanup() {
	geom dmirror stop -f "$FB_NAME" >/dev/null 2>&1
	_fb_i=0
	while [ $_fb_i -lt "${FB_NLEGS:-0}" ]; do
		_fb_detach $_fb_i
		_fb_i=$((_fb_i + 1))
	done
}

# _fb_attach I: md device and gnop provider for leg I.
_fb_attach() {
	_fb_u=$((FB_UNIT0 + $1))
	[ -c /dev/md$_fb_u ] || _fb_run mdconfig -a -t vnode -f "$(sc_leg_file "$1")" -u $_fb_u || return 1
	_fb_sz=$(($(_fb_get "FB_KIB$1") * 1024))
	[ -c "/dev/$(_fb_prov "$1")" ] || _fb_run gnop create -s $_fb_sz md$_fb_u || return 1
	if [ "$(_fb_get "FB_FAULT$1")" = broken ]; then
		_fb_run gnop configure -r 100 -w 100 "$(_fb_prov "$1")"
	fi
}

_fb_detach() {
	_fb_u=$((FB_UNIT0 + $1))
	[ -c "/dev/$(_fb_prov "$1")" ] && _fb_run gnop destroy -f "$(_fb_prov "$1")"
	[ -c /dev/md$_fb_u ] && _fb_run mdconfig -d -u $_fb_u -o force
	return 0
}

ad_mkleg() { # I KIB: the leg holds KIB KiB; the file has FB_PAD_KIB more for the gnop trick
	lib_mkfile "$1" $(($2 + FB_PAD_KIB)) || return 1
	eval "FB_KIB$1=$2 FB_FAULT$1=ok FB_IN$1="
	if [ "$1" -ge "$FB_NLEGS" ]; then FB_NLEGS=$(($1 + 1)); fi
	_fb_attach "$1"
}

_fb_wait_dev() { # appear|vanish SECS
	_fb_w=$2
	while :; do
		if [ "$1" = appear ]; then [ -c "$(_fb_dev)" ] && return 0; else [ -c "$(_fb_dev)" ] || return 0; fi
		[ "$_fb_w" -le 0 ] && return 1
		sleep 1
		_fb_w=$((_fb_w - 1))
	done
}

_fb_need_up() {
	[ -c "$(_fb_dev)" ] && return 0
	echo "freebsd: $(_fb_dev) is not there" >&2
	return 1
}

# --- data -----------------------------------------------------------------------------------

ad_write() {
	_fb_need_up || return 1
	_fb_pf=$(pat_file "$3" "$2") || return 1
	dd if="$_fb_pf" of="$(_fb_dev)" bs=1024 seek="$1" count="$2" conv=notrunc 2>"$SC_WORK/dd.err" || return 1
	# dd stops short without an error status at the end of a device: check what it wrote.
	_fb_rec=$(sed -n 's/^\([0-9]*\)+\([0-9]*\) records out.*/\1 \2/p' "$SC_WORK/dd.err")
	[ "$_fb_rec" = "$2 0" ]
}

ad_read() {
	_fb_need_up || return 1
	dd if="$(_fb_dev)" of="$3" bs=1024 skip="$1" count="$2" 2>"$SC_WORK/dd.err" || return 1
	_fb_rec=$(sed -n 's/^\([0-9]*\)+\([0-9]*\) records in.*/\1 \2/p' "$SC_WORK/dd.err")
	[ "$_fb_rec" = "$2 0" ]
}

# Writes through the raw device complete only when every leg has them; md's vnode legs keep them
# in the file system, which outlives the md device. sync(8) pushes them to the files.
ad_flush() {
	_fb_need_up || return 1
	sync
}

ad_size_kib() {
	_fb_ms=$(geom dmirror list "$FB_NAME" 2>/dev/null |
		sed -n '/Mediasize:/{s/.*Mediasize: *\([0-9][0-9]*\).*/\1/p;q;}')
	[ -n "$_fb_ms" ] || return 1
	echo $((_fb_ms / 1024))
}

# --- state ----------------------------------------------------------------------------------

ad_state() {
	_fb_need_up || return 1
	_fb_p=$(_fb_prov "$1")
	_fb_s=$(geom dmirror status -s "$FB_NAME" 2>/dev/null |
		sed -n "s/.*$(echo "$_fb_p" | sed 's/\./\\./g') (\([A-Za-z_-]*\).*/\1/p" | head -n 1)
	case $_fb_s in
	IN_SYNC | INSYNC | ACTIVE) echo insync ;;
	REBUILDING | SYNCHRONIZING | RESYNC*) echo rebuilding ;;
	FAILED | BROKEN) echo failed ;;
	MISSING) echo missing ;;
	"")
		# A leg the class lists no provider for: gone (missing) if it belongs to the mirror.
		if [ "$(_fb_get "FB_IN$1")" = 1 ]; then echo missing; else echo empty; fi
		;;
	*) echo "unknown:$_fb_s" ;;
	esac
}

_fb_progress() { # I: percent of leg I's rebuild
	_fb_p=$(_fb_prov "$1")
	geom dmirror status -s "$FB_NAME" 2>/dev/null |
		sed -n "s/.*$(echo "$_fb_p" | sed 's/\./\\./g') ([A-Za-z-]*, *\([0-9]*\)%.*/\1/p" | head -n 1
}

ad_wait_sync() {
	_fb_need_up || return 1
	_fb_ws=${1:-$FB_WAIT}
	while :; do
		_fb_busy=0
		_fb_i=0
		while [ $_fb_i -lt "$FB_NLEGS" ]; do
			[ "$(ad_state $_fb_i)" = rebuilding ] && _fb_busy=1
			_fb_i=$((_fb_i + 1))
		done
		[ $_fb_busy = 0 ] && return 0
		[ "$_fb_ws" -le 0 ] && return 1
		sleep 1
		_fb_ws=$((_fb_ws - 1))
	done
}

# The log is clean on disk when no region is dirty in memory and the metadata writes have
# stopped: a region's clear reaches the disk with a later metadata write.
ad_settle() {
	_fb_need_up || return 1
	_fb_ws=${1:-$FB_WAIT}
	_fb_mw0=
	while :; do
		_fb_l=$(geom dmirror list "$FB_NAME" 2>/dev/null)
		_fb_d=$(echo "$_fb_l" | sed -n 's/^ *DirtyRegions: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
		_fb_mw=$(echo "$_fb_l" | sed -n 's/^ *MetaWrites: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
		[ "$_fb_d" = 0 ] && [ -n "$_fb_mw" ] && [ "$_fb_mw" = "$_fb_mw0" ] && return 0
		_fb_mw0=$_fb_mw
		[ "$_fb_ws" -le 0 ] && return 1
		sleep 1
		_fb_ws=$((_fb_ws - 1))
	done
}

ad_wait_progress() { # I REGIONS [SECS]
	_fb_need_up || return 1
	_fb_total=$(($(ad_size_kib) / SC_REGION_KIB))
	_fb_ws=${3:-$FB_WAIT}
	while :; do
		_fb_pc=$(_fb_progress "$1")
		[ -n "$_fb_pc" ] && [ $((_fb_pc * _fb_total / 100)) -ge "$2" ] && return 0
		[ "$_fb_ws" -le 0 ] && return 1
		sleep 1
		_fb_ws=$((_fb_ws - 1))
	done
}

ad_checkpoint() {
	_fb_attach "$1" || return 1
	_fb_c=$(geom dmirror dump "$(_fb_prov "$1")" 2>/dev/null |
		sed -n 's/.*checkpoint region *\([0-9][0-9]*\).*/\1/p' | head -n 1)
	[ -n "$_fb_c" ] || return 1
	echo "$_fb_c"
}

# Slowing the resync down: every write to a leg's gnop waits FB_THROTTLE_MS (gnop's write
# delay; the resync's writes go to the leg being rebuilt). A gnop created afterwards (ad_start,
# ad_return) has no delay. FB_THROTTLE_ON/OFF replace this with commands of your own.
FB_THROTTLE_MS=${FB_THROTTLE_MS:-200}

_fb_gnops() {
	_fb_provs=
	_fb_i=0
	while [ $_fb_i -lt "$FB_NLEGS" ]; do
		[ -c "/dev/$(_fb_prov $_fb_i)" ] && _fb_provs="$_fb_provs $(_fb_prov $_fb_i)"
		_fb_i=$((_fb_i + 1))
	done
	echo "$_fb_provs"
}

ad_throttle() {
	case $1 in
	on)
		if [ -n "${FB_THROTTLE_ON:-}" ]; then eval "$FB_THROTTLE_ON"; return; fi
		# shellcheck disable=SC2046 # a list of provider names
		_fb_run gnop configure -d "$FB_THROTTLE_MS" -x 100 $(_fb_gnops)
		;;
	off)
		if [ -n "${FB_THROTTLE_OFF:-}" ]; then eval "$FB_THROTTLE_OFF"; return; fi
		_fb_p=$(_fb_gnops)
		# shellcheck disable=SC2086 # a list of provider names
		[ -z "$_fb_p" ] || _fb_run gnop configure -x 0 $_fb_p
		;;
	*) return 1 ;;
	esac
}

# --- life cycle -----------------------------------------------------------------------------

ad_label() {
	_fb_provs=
	for _fb_l in "$@"; do
		_fb_provs="$_fb_provs $(_fb_prov "$_fb_l")"
		eval "FB_IN$_fb_l=1"
	done
	# Spare slots (FB_SPARE_SLOTS): the class gives a new leg an empty slot, or the slot of a
	# failed or missing leg it no longer holds open. A leg whose device fails but that it has
	# not failed yet (no I/O since) keeps its slot: without a spare one, inserting a leg then
	# (resync-read-error-3) finds "no free slot".
	_fb_slots=$(($# + FB_SPARE_SLOTS))
	[ $_fb_slots -lt 2 ] && _fb_slots=2
	# shellcheck disable=SC2086
	_fb_run geom dmirror label -v -r $((SC_REGION_KIB * 1024)) -s $_fb_slots "$FB_NAME" $_fb_provs || return 1
	_fb_wait_dev appear "$FB_WAIT"
}

ad_stop() {
	_fb_need_up || return 1
	_fb_run geom dmirror stop "$FB_NAME" || return 1
	_fb_wait_dev vanish "$FB_WAIT"
}

ad_crash() {
	_fb_provs=
	_fb_i=0
	while [ $_fb_i -lt "$FB_NLEGS" ]; do
		[ -c "/dev/$(_fb_prov $_fb_i)" ] && _fb_provs="$_fb_provs $(_fb_prov $_fb_i)"
		_fb_i=$((_fb_i + 1))
	done
	# One request: from here on nothing reaches any leg.
	# shellcheck disable=SC2086
	[ -n "$_fb_provs" ] && _fb_run gnop configure -r 100 -w 100 $_fb_provs
	_fb_i=0
	while [ $_fb_i -lt "$FB_NLEGS" ]; do
		_fb_detach $_fb_i
		_fb_i=$((_fb_i + 1))
	done
	# With every leg gone the class withers the mirror; make sure of it.
	_fb_wait_dev vanish 10 || geom dmirror stop -f "$FB_NAME" >/dev/null 2>&1
	_fb_wait_dev vanish 10
}

# ad_start [LEG...]: the listed legs' devices come (back), the others are gone; the class
# assembles the mirror by taste. Status 1 if it does not appear (refused).
ad_start() {
	if [ $# -eq 0 ]; then
		_fb_i=0
		while [ $_fb_i -lt "$FB_NLEGS" ]; do set -- "$@" $_fb_i; _fb_i=$((_fb_i + 1)); done
	fi
	_fb_i=0
	while [ $_fb_i -lt "$FB_NLEGS" ]; do
		_fb_detach $_fb_i
		_fb_i=$((_fb_i + 1))
	done
	for _fb_l in "$@"; do _fb_attach "$_fb_l" || return 1; done
	_fb_wait_dev appear $((FB_TIMEOUT + 15))
}

ad_fail() {
	eval "FB_FAULT$1=broken"
	[ -c "/dev/$(_fb_prov "$1")" ] || return 0
	_fb_run gnop configure -r 100 -w 100 "$(_fb_prov "$1")"
}

ad_heal() {
	eval "FB_FAULT$1=ok"
	[ -c "/dev/$(_fb_prov "$1")" ] || return 0
	_fb_run gnop configure -r 0 -w 0 "$(_fb_prov "$1")"
}

ad_vanish() {
	_fb_detach "$1"
}

ad_return() {
	_fb_attach "$1"
	# Taste and rejoin take a moment.
	sleep 1
}

# A leg the class holds as FAILED is still one of its legs: `insert` refuses it ("already a
# leg"), `rebuild` gives it back in full.
ad_insert() {
	_fb_need_up || return 1
	_fb_attach "$1" || return 1
	if [ "$(_fb_get "FB_IN$1")" = 1 ] && [ "$(ad_state "$1")" = failed ]; then
		_fb_run geom dmirror rebuild "$FB_NAME" "$(_fb_prov "$1")"
		return
	fi
	eval "FB_IN$1=1"
	_fb_run geom dmirror insert "$FB_NAME" "$(_fb_prov "$1")"
}

ad_remove() {
	_fb_need_up || return 1
	_fb_run geom dmirror remove "$FB_NAME" "$(_fb_prov "$1")" || return 1
	eval "FB_IN$1="
}

ad_policy() { # NAME [LEG]
	_fb_need_up || return 1
	case $1 in
	prefer) _fb_run geom dmirror configure -b "prefer:$(_fb_prov "${2:-0}")" "$FB_NAME" ;;
	round-robin | load | split) _fb_run geom dmirror configure -b "$1" "$FB_NAME" ;;
	*) return 2 ;;
	esac
}

# The leg's data is in its file: read it there (md's vnode I/O and dd share the file's cache).
ad_leg_digest() { lib_leg_digest "$@"; }
# Only while the leg is out of the mirror; write the file directly, as the scenarios intend.
ad_leg_poke() { lib_leg_poke "$@"; }
ad_compare() { lib_compare "$@"; }
