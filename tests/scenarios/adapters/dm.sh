# adapters/dm.sh - drive dmirror's device-mapper "mirror" target (issue 6) in a DragonFly or
# NetBSD guest.
#
# Legs: leg I is the file sc_leg_file I, attached as a vn (DragonFly: vnconfig -c vnN FILE,
# /dev/vnN) or vnd (NetBSD: vnconfig vndN FILE, /dev/vndNd) disk, with a dm device "scleg.I" on
# top holding a linear table. The mirror's legs are /dev/mapper/scleg.I, so that a leg can fail:
#   dmsetup suspend scleg.I; dmsetup reload scleg.I --table "0 N error"; dmsetup resume scleg.I
# (and heal by reloading the linear table). The mirror is the dm device "scmirror":
#   0 SECTORS mirror dmirror 2 REGION sync K /dev/mapper/scleg.0 0 ... 1 handle_errors
# with dmirror's own log type (metadata at the end of every leg). The table lists only the legs
# that are present: the legs' metadata says which others belong to the mirror (missing).
# A crash: every leg is made to fail (nothing reaches a leg after that), the mirror is removed,
# and the legs are healed; a clean stop is `dmsetup remove scmirror`.
# State comes from `dmsetup status scmirror` in dm-mirror's format:
#   0 SECTORS mirror K MAJ:MIN... INSYNC/TOTAL 1 HEALTH LOGARGS...
# with one health character per leg in table order (A alive, D/R/F/S failed).
#
# Assumed beyond issue 6's text (each a variable below): the table length must be at most the
# smallest leg less DM_META_KIB of metadata (rounded down to a region); `dmsetup message
# scmirror 0 remove DEV` and `... read_policy NAME [DEV]` do what they say (DragonFly; NetBSD
# has no message support, so those steps fail there); DM_THROTTLE_ON/OFF, when set, are commands
# that slow the resync down and restore it.

DM_NAME=${DM_NAME:-scmirror}
DM_META_KIB=${DM_META_KIB:-1024}
DM_UNIT0=${DM_UNIT0:-4}
DM_WAIT=${DM_WAIT:-60}

_dm() {
	[ "${SC_VERBOSE:-0}" = 1 ] && echo "dm: $*" >&2
	return 0
}

_dm_get() { eval "echo \"\${$1:-}\""; }

_dm_run() {
	_dm "$*"
	"$@" >>"$SC_WORK/dm.log" 2>&1
}

_dm_dev() { echo "/dev/mapper/$DM_NAME"; }
_dm_leg() { echo "/dev/mapper/scleg.$1"; }

_dm_vn() { # I: the vn device node of leg I
	case $DM_OS in
	NetBSD) echo "/dev/vnd$((DM_UNIT0 + $1))d" ;;
	*) echo "/dev/vn$((DM_UNIT0 + $1))" ;;
	esac
}

ad_setup() {
	DM_OS=$(uname -s 2>/dev/null)
	for _dm_t in dmsetup vnconfig dd sed; do
		if ! command -v $_dm_t >/dev/null 2>&1; then
			echo "dm adapter: $_dm_t is missing"
			return 2
		fi
	done
	_dm_tg=$(dmsetup targets 2>/dev/null | sed -n 's/^\(mirror\)[^a-z].*/\1/p')
	if [ "$_dm_tg" != mirror ]; then
		echo "dm adapter: no mirror target (kldload dm_target_mirror / modload dm_target_mirror.kmod)"
		return 2
	fi
	DM_NLEGS=0
	DM_TABLE_LEGS=
	return 0
}

ad_cleanup() {
	dmsetup remove "$DM_NAME" >/dev/null 2>&1
	_dm_i=0
	while [ $_dm_i -lt "${DM_NLEGS:-0}" ]; do
		dmsetup remove "scleg.$_dm_i" >/dev/null 2>&1
		case $DM_OS in
		NetBSD) vnconfig -u "vnd$((DM_UNIT0 + _dm_i))" >/dev/null 2>&1 ;;
		*) vnconfig -u "vn$((DM_UNIT0 + _dm_i))" >/dev/null 2>&1 ;;
		esac
		_dm_i=$((_dm_i + 1))
	done
}

_dm_sectors() { echo $(($(_dm_get "DM_KIB$1") * 2)); }

_dm_linear() { echo "0 $(_dm_sectors "$1") linear $(_dm_vn "$1") 0"; }
_dm_error() { echo "0 $(_dm_sectors "$1") error"; }

_dm_reload() { # NAME TABLE
	_dm_run dmsetup suspend "$1" && _dm_run dmsetup reload "$1" --table "$2" &&
		_dm_run dmsetup resume "$1"
}

ad_mkleg() {
	lib_mkfile "$1" "$2" || return 1
	eval "DM_KIB$1=$2 DM_FAULT$1=ok DM_IN$1= DM_PRESENT$1=1"
	if [ "$1" -ge "$DM_NLEGS" ]; then DM_NLEGS=$(($1 + 1)); fi
	case $DM_OS in
	NetBSD) _dm_run vnconfig "vnd$((DM_UNIT0 + $1))" "$(sc_leg_file "$1")" || return 1 ;;
	*) _dm_run vnconfig -c "vn$((DM_UNIT0 + $1))" "$(sc_leg_file "$1")" || return 1 ;;
	esac
	_dm_run dmsetup create "scleg.$1" --table "$(_dm_linear "$1")"
}

# _dm_table LEG...: the mirror's table over these legs.
_dm_table() {
	_dm_min=
	_dm_devs=
	_dm_k=0
	for _dm_l in "$@"; do
		_dm_s=$(_dm_get "DM_KIB$_dm_l")
		if [ -z "$_dm_min" ] || [ "$_dm_s" -lt "$_dm_min" ]; then _dm_min=$_dm_s; fi
		_dm_devs="$_dm_devs $(_dm_leg "$_dm_l") 0"
		_dm_k=$((_dm_k + 1))
	done
	_dm_data=$((((_dm_min - DM_META_KIB) / SC_REGION_KIB) * SC_REGION_KIB))
	echo "0 $((_dm_data * 2)) mirror dmirror 2 $((SC_REGION_KIB * 2)) sync $_dm_k$_dm_devs 1 handle_errors"
}

_dm_present_members() {
	_dm_pm=
	_dm_i=0
	while [ $_dm_i -lt "$DM_NLEGS" ]; do
		[ "$(_dm_get "DM_IN$_dm_i")" = 1 ] && [ "$(_dm_get "DM_PRESENT$_dm_i")" = 1 ] && _dm_pm="$_dm_pm $_dm_i"
		_dm_i=$((_dm_i + 1))
	done
	echo "$_dm_pm"
}

# _dm_create LEG...: create the mirror over these legs.
_dm_create() {
	DM_TABLE_LEGS="$*"
	_dm_run dmsetup create "$DM_NAME" --table "$(_dm_table "$@")"
}

# _dm_retable: reload the mirror with the legs present now (a leg returns, is inserted, ...).
_dm_retable() {
	# shellcheck disable=SC2046
	set -- $(_dm_present_members)
	DM_TABLE_LEGS="$*"
	_dm_reload "$DM_NAME" "$(_dm_table "$@")"
}

_dm_need_up() {
	[ -n "$DM_TABLE_LEGS" ] && dmsetup info "$DM_NAME" >/dev/null 2>&1 && return 0
	echo "dm: the mirror is not running" >&2
	return 1
}

# --- data -----------------------------------------------------------------------------------

ad_write() {
	_dm_need_up || return 1
	_dm_pf=$(pat_file "$3" "$2") || return 1
	dd if="$_dm_pf" of="$(_dm_dev)" bs=1024 seek="$1" count="$2" conv=notrunc 2>"$SC_WORK/dd.err" || return 1
	_dm_rec=$(sed -n 's/^\([0-9]*\)+\([0-9]*\) records out.*/\1 \2/p' "$SC_WORK/dd.err")
	[ "$_dm_rec" = "$2 0" ]
}

ad_read() {
	_dm_need_up || return 1
	dd if="$(_dm_dev)" of="$3" bs=1024 skip="$1" count="$2" 2>"$SC_WORK/dd.err" || return 1
	_dm_rec=$(sed -n 's/^\([0-9]*\)+\([0-9]*\) records in.*/\1 \2/p' "$SC_WORK/dd.err")
	[ "$_dm_rec" = "$2 0" ]
}

ad_flush() {
	_dm_need_up || return 1
	sync
}

ad_size_kib() {
	_dm_need_up || return 1
	# "START LENGTH mirror ..."
	_dm_t=$(dmsetup table "$DM_NAME" 2>/dev/null) || return 1
	# shellcheck disable=SC2086
	set -- $_dm_t
	echo $(($2 / 2))
}

# --- state ----------------------------------------------------------------------------------

# _dm_status: set DM_INSYNC, DM_TOTAL and DM_HEALTH from `dmsetup status`.
_dm_status() {
	_dm_st=$(dmsetup status "$DM_NAME" 2>/dev/null) || return 1
	# shellcheck disable=SC2086
	set -- $_dm_st
	# START LENGTH mirror K DEV*K INSYNC/TOTAL 1 HEALTH ...
	_dm_k=$4
	shift 4
	shift "$_dm_k"
	DM_INSYNC=${1%/*}
	DM_TOTAL=${1#*/}
	DM_HEALTH=$3
}

ad_state() {
	_dm_need_up || return 1
	_dm_status || return 1
	_dm_pos=0
	for _dm_l in $DM_TABLE_LEGS; do
		if [ "$_dm_l" = "$1" ]; then
			_dm_h=$(echo "$DM_HEALTH" | sed "s/^.\{$_dm_pos\}\(.\).*/\1/")
			case $_dm_h in
			A) if [ "$DM_INSYNC" = "$DM_TOTAL" ]; then echo insync; else echo rebuilding; fi ;;
			D | R | F | S) echo failed ;;
			*) echo "unknown:$_dm_h" ;;
			esac
			return 0
		fi
		_dm_pos=$((_dm_pos + 1))
	done
	if [ "$(_dm_get "DM_IN$1")" != 1 ]; then
		echo empty
	elif [ "$(_dm_get "DM_LEFT$1")" = failed ]; then
		echo failed
	else
		echo missing
	fi
}

ad_wait_sync() {
	_dm_need_up || return 1
	_dm_ws=${1:-$DM_WAIT}
	while :; do
		_dm_status && [ "$DM_INSYNC" = "$DM_TOTAL" ] && return 0
		[ "$_dm_ws" -le 0 ] && return 1
		sleep 1
		_dm_ws=$((_dm_ws - 1))
	done
}

# dm-mirror's status has no dirty-region count: wait out the log's clear delay.
ad_settle() {
	_dm_need_up || return 1
	sleep "${DM_SETTLE_SECS:-5}"
}

ad_wait_progress() { # I REGIONS [SECS]
	_dm_need_up || return 1
	_dm_ws=${3:-$DM_WAIT}
	while :; do
		_dm_status && [ "$DM_INSYNC" -ge "$2" ] && return 0
		[ "$_dm_ws" -le 0 ] && return 1
		sleep 1
		_dm_ws=$((_dm_ws - 1))
	done
}

ad_checkpoint() {
	[ -n "${DM_CHECKPOINT_CMD:-}" ] || return 1
	eval "$DM_CHECKPOINT_CMD" "$(_dm_leg "$1")"
}

ad_throttle() {
	case $1 in
	on) [ -n "${DM_THROTTLE_ON:-}" ] || return 2; eval "$DM_THROTTLE_ON" ;;
	off) [ -n "${DM_THROTTLE_OFF:-}" ] || return 2; eval "$DM_THROTTLE_OFF" ;;
	*) return 1 ;;
	esac
}

# --- life cycle -----------------------------------------------------------------------------

ad_label() {
	for _dm_l in "$@"; do eval "DM_IN$_dm_l=1 DM_PRESENT$_dm_l=1"; done
	_dm_create "$@"
}

ad_stop() {
	_dm_need_up || return 1
	_dm_run dmsetup remove "$DM_NAME" || return 1
	DM_TABLE_LEGS=
}

ad_crash() {
	for _dm_l in $DM_TABLE_LEGS; do
		_dm_run dmsetup suspend "scleg.$_dm_l"
	done
	for _dm_l in $DM_TABLE_LEGS; do
		_dm_run dmsetup reload "scleg.$_dm_l" --table "$(_dm_error "$_dm_l")"
	done
	for _dm_l in $DM_TABLE_LEGS; do
		_dm_run dmsetup resume "scleg.$_dm_l"
	done
	_dm_run dmsetup remove "$DM_NAME"
	for _dm_l in $DM_TABLE_LEGS; do
		[ "$(_dm_get "DM_FAULT$_dm_l")" = ok ] && _dm_reload "scleg.$_dm_l" "$(_dm_linear "$_dm_l")"
	done
	DM_TABLE_LEGS=
	return 0
}

ad_start() {
	[ -n "$DM_TABLE_LEGS" ] && return 1
	if [ $# -eq 0 ]; then
		_dm_i=0
		while [ $_dm_i -lt "$DM_NLEGS" ]; do set -- "$@" $_dm_i; _dm_i=$((_dm_i + 1)); done
	fi
	_dm_i=0
	while [ $_dm_i -lt "$DM_NLEGS" ]; do
		eval "DM_PRESENT$_dm_i=0"
		_dm_i=$((_dm_i + 1))
	done
	for _dm_l in "$@"; do eval "DM_PRESENT$_dm_l=1"; done
	# shellcheck disable=SC2046
	set -- $(_dm_present_members)
	[ $# -gt 0 ] || return 1
	_dm_create "$@" || {
		DM_TABLE_LEGS=
		return 1
	}
}

ad_fail() {
	eval "DM_FAULT$1=broken"
	_dm_reload "scleg.$1" "$(_dm_error "$1")"
}

ad_heal() {
	eval "DM_FAULT$1=ok"
	_dm_reload "scleg.$1" "$(_dm_linear "$1")"
}

ad_vanish() {
	# A leg out of the table has no status: remember whether it left failed.
	_dm_was=
	[ -n "$DM_TABLE_LEGS" ] && _dm_was=$(ad_state "$1")
	eval "DM_PRESENT$1=0 DM_LEFT$1=\$_dm_was"
	[ -n "$DM_TABLE_LEGS" ] || return 0
	_dm_retable
}

# ad_return I: the leg's device is back; a member the mirror knows as missing is put back in
# the table (it rejoins incrementally). A failed leg is not: only ad_insert gives it back.
ad_return() {
	eval "DM_PRESENT$1=1"
	[ -n "$DM_TABLE_LEGS" ] || return 0
	[ "$(ad_state "$1")" = missing ] || return 0
	_dm_retable
}

ad_insert() {
	_dm_need_up || return 1
	eval "DM_IN$1=1 DM_PRESENT$1=1 DM_LEFT$1="
	_dm_retable
}

ad_remove() {
	_dm_need_up || return 1
	_dm_run dmsetup message "$DM_NAME" 0 remove "$(_dm_leg "$1")" || return 1
	eval "DM_IN$1="
	_dm_retable
}

ad_policy() {
	_dm_need_up || return 1
	case $1 in
	prefer) _dm_run dmsetup message "$DM_NAME" 0 read_policy prefer "$(_dm_leg "${2:-0}")" ;;
	round-robin | load | split) _dm_run dmsetup message "$DM_NAME" 0 read_policy "$1" ;;
	*) return 2 ;;
	esac
}

ad_leg_digest() { lib_leg_digest "$@"; }
ad_leg_poke() { lib_leg_poke "$@"; }
ad_compare() { lib_compare "$@"; }
