# adapters/fake.sh - a model of a correct dmirror, written in sh, with plain files as legs.
#
# It exists so that the scenarios' own logic runs in CI before (and besides) the real thing: a
# scenario that passes against this model and fails against a broken variant of it (FAKE_BUG, see
# below) is a scenario that checks what it says. It is not dmirror and proves nothing about it.
#
# Model: each leg is the file sc_leg_file I; its "on-disk metadata" is the sourceable file
# $SC_WORK/fake/meta.I (what dmirror keeps at the end of the leg: generation, clean flag, every
# slot's state, the write-intent (dirty) regions, per-slot tracking bitmaps and rebuild
# checkpoints). The running mirror's state lives in shell variables (the scenario's shell), so a
# crash is simply forgetting them. The last 1 MiB of each leg stands for the metadata area.
#
# Device state per leg (independent of the mirror): ok, broken (every I/O fails) or gone.
# Resync runs "in the background": it completes whenever the adapter is entered, unless
# throttled (ad_throttle on), in which case only ad_wait_progress moves it.
#
# FAKE_BUG selects a deliberate defect, for the self-check that proves scenarios can fail:
#   skip_leg1     writes never reach leg 1
#   full_rejoin   a leg that merely vanished is resynced in full when it returns
#   trust_failed  a failed leg given back is trusted without a resync
#   no_dirty      dirty regions are not resynced after an unclean shutdown
#   ignore_split  split brain is not detected
#   no_ckpt       an interrupted rebuild starts again from region 0
#   oldest_wins   assembly takes the oldest metadata as authoritative
#   no_fallback   a read error is returned instead of retried on another leg

FK_META_KIB=1024

_fk() {
	[ "${SC_VERBOSE:-0}" = 1 ] && echo "fake: $*" >&2
	return 0
}

ad_setup() {
	mkdir -p "$SC_WORK/fake" || return 1
	_fk_up=0
	_fk_n=0
	_fk_id=
	_fk_throttle=0
	return 0
}

ad_cleanup() {
	_fk_up=0
}

_fk_get() { eval "echo \"\${$1:-}\""; }
_fk_set() { eval "$1=\$2"; }

ad_mkleg() {
	lib_mkfile "$1" "$2" || return 1
	_fk_set "_fk_kib$1" "$2"
	_fk_set "_fk_dev$1" ok
	rm -f "$SC_WORK/fake/meta.$1"
	if [ "$1" -ge "$_fk_n" ]; then _fk_n=$(($1 + 1)); fi
}

# --- metadata -----------------------------------------------------------------------------

# _fk_meta_clear: forget m_* variables.
_fk_meta_clear() {
	m_id='' m_gen=0 m_clean=0 m_self='' m_n=0 m_datakib=0 m_policy='' m_dirty=''
	_fk_mc=0
	while [ $_fk_mc -lt 32 ]; do
		eval "m_s$_fk_mc= m_track$_fk_mc= m_ckpt$_fk_mc=0 m_full$_fk_mc=1"
		_fk_mc=$((_fk_mc + 1))
	done
}

# _fk_meta_read I: load leg I's metadata into m_*; fails when the device cannot be read or
# holds none.
_fk_meta_read() {
	_fk_meta_clear
	[ "$(_fk_get "_fk_dev$1")" = ok ] || return 1
	[ -f "$SC_WORK/fake/meta.$1" ] || return 1
	# shellcheck disable=SC1090
	. "$SC_WORK/fake/meta.$1"
}

# _fk_meta_write I CLEAN: write the running state to leg I's metadata. Fails if its device
# does not take writes.
_fk_meta_write() {
	[ "$(_fk_get "_fk_dev$1")" = ok ] || return 1
	{
		echo "m_id='$_fk_id'"
		echo "m_gen=$r_gen"
		echo "m_clean=$2"
		echo "m_self=$1"
		echo "m_n=$r_n"
		echo "m_datakib=$r_datakib"
		echo "m_policy='$r_policy'"
		echo "m_dirty='$r_dirty'"
		_fk_mw=0
		while [ $_fk_mw -lt "$r_n" ]; do
			echo "m_s$_fk_mw=$(_fk_get "r_s$_fk_mw")"
			echo "m_track$_fk_mw='$(_fk_get "r_track$_fk_mw")'"
			echo "m_ckpt$_fk_mw=$(_fk_get "r_ckpt$_fk_mw")"
			echo "m_full$_fk_mw=$(_fk_get "r_full$_fk_mw")"
			_fk_mw=$((_fk_mw + 1))
		done
	} >"$SC_WORK/fake/meta.$1.new" && mv "$SC_WORK/fake/meta.$1.new" "$SC_WORK/fake/meta.$1"
}

_fk_active() {
	case $(_fk_get "r_s$1") in insync | rebuilding) return 0 ;; esac
	return 1
}

# _fk_leg_lost I STATE: leg I leaves service (failed or missing), unless it is the last in-sync
# leg with a working device (the last copy is never failed). Status 1 when refused.
_fk_leg_lost() {
	if [ "$(_fk_get "r_s$1")" = insync ]; then
		_fk_others=0
		_fk_il=0
		while [ $_fk_il -lt "$r_n" ]; do
			if [ $_fk_il -ne "$1" ] && [ "$(_fk_get "r_s$_fk_il")" = insync ]; then
				_fk_others=1
			fi
			_fk_il=$((_fk_il + 1))
		done
		[ $_fk_others -eq 1 ] || return 1
	fi
	_fk "leg $1 -> $2"
	_fk_set "r_s$1" "$2"
	_fk_set "r_track$1" ""
	_fk_set "r_ckpt$1" 0
	if [ "$2" = failed ]; then _fk_set "r_full$1" 1; fi
	_fk_commit
	return 0
}

# _fk_commit: a leg state changed: bump the generation and write metadata to every active leg;
# a leg whose metadata write fails is failed in turn.
_fk_commit() {
	r_gen=$((r_gen + 1))
	_fk_cm=0
	while [ $_fk_cm -lt "$r_n" ]; do
		if _fk_active $_fk_cm && ! _fk_meta_write $_fk_cm 0; then
			_fk_cmleg=$_fk_cm
			if _fk_leg_lost "$_fk_cmleg" failed; then return 0; fi
		fi
		_fk_cm=$((_fk_cm + 1))
	done
}

# --- data ---------------------------------------------------------------------------------

_fk_regions_of() { # OFF LEN -> list of regions touched
	_fk_r=$(($1 / SC_REGION_KIB))
	_fk_rl=$((($1 + $2 - 1) / SC_REGION_KIB))
	_fk_out=
	while [ $_fk_r -le $_fk_rl ]; do
		_fk_out="$_fk_out $_fk_r"
		_fk_r=$((_fk_r + 1))
	done
	echo "$_fk_out"
}

_fk_in_list() { # WORD LIST
	for _fk_w in $2; do [ "$_fk_w" = "$1" ] && return 0; done
	return 1
}

_fk_add_list() { # VAR REGIONS: add regions to the space-separated set in VAR
	_fk_cur=$(_fk_get "$1")
	for _fk_a in $2; do
		_fk_in_list "$_fk_a" "$_fk_cur" || _fk_cur="$_fk_cur $_fk_a"
	done
	_fk_set "$1" "$_fk_cur"
}

_fk_copy_region() { # SRC DST REGION
	_fk_o=$(($3 * SC_REGION_KIB))
	dd if="$(sc_leg_file "$1")" of="$(sc_leg_file "$2")" bs=1024 skip=$_fk_o seek=$_fk_o \
		count="$SC_REGION_KIB" conv=notrunc 2>/dev/null
}

_fk_need_up() {
	if [ "$_fk_up" != 1 ]; then
		echo "fake: the mirror is not running" >&2
		return 1
	fi
}

ad_write() { # OFF LEN SEED
	_fk_need_up || return 1
	_fk_pump
	if [ $(($1 + $2)) -gt "$r_datakib" ]; then echo "fake: write beyond the end" >&2; return 1; fi
	_fk_wregs=$(_fk_regions_of "$1" "$2")
	# Write intent first: the regions go dirty, and are tracked for every missing leg, in the
	# metadata of every active leg before any data moves.
	_fk_add_list r_dirty "$_fk_wregs"
	_fk_wi=0
	while [ $_fk_wi -lt "$r_n" ]; do
		[ "$(_fk_get "r_s$_fk_wi")" = missing ] && _fk_add_list "r_track$_fk_wi" "$_fk_wregs"
		_fk_wi=$((_fk_wi + 1))
	done
	_fk_commit
	_fk_pf=$(pat_file "$3" "$2") || return 1
	_fk_done=0
	_fk_wi=0
	while [ $_fk_wi -lt "$r_n" ]; do
		if _fk_active $_fk_wi; then
			if [ "${FAKE_BUG:-}" = skip_leg1 ] && [ $_fk_wi -eq 1 ]; then
				_fk_done=$((_fk_done + 1))
			elif [ "$(_fk_get "_fk_dev$_fk_wi")" = ok ]; then
				dd if="$_fk_pf" of="$(sc_leg_file $_fk_wi)" bs=1024 seek="$1" count="$2" \
					conv=notrunc 2>/dev/null || return 1
				_fk_done=$((_fk_done + 1))
			else
				_fk_wleg=$_fk_wi
				_fk_leg_lost "$_fk_wleg" failed
			fi
		fi
		_fk_wi=$((_fk_wi + 1))
	done
	[ $_fk_done -gt 0 ]
}

# _fk_read_order: set _fk_order to the candidate legs for a read, in the order the policy tries
# them. Runs in the caller's shell (it advances the round-robin counter).
_fk_read_order() {
	_fk_order=
	_fk_c=
	_fk_ri=0
	while [ $_fk_ri -lt "$r_n" ]; do
		[ "$(_fk_get "r_s$_fk_ri")" = insync ] && _fk_c="$_fk_c $_fk_ri"
		_fk_ri=$((_fk_ri + 1))
	done
	case $r_policy in
	round-robin)
		r_rr=$((r_rr + 1))
		_fk_k=0
		for _fk_x in $_fk_c; do _fk_k=$((_fk_k + 1)); done
		[ $_fk_k -eq 0 ] && return 0
		_fk_skip=$((r_rr % _fk_k))
		_fk_head='' _fk_tail='' _fk_j=0
		for _fk_x in $_fk_c; do
			if [ $_fk_j -lt $_fk_skip ]; then _fk_tail="$_fk_tail $_fk_x"; else _fk_head="$_fk_head $_fk_x"; fi
			_fk_j=$((_fk_j + 1))
		done
		_fk_order="$_fk_head $_fk_tail"
		;;
	prefer*)
		_fk_p=${r_policy#prefer }
		_fk_rest=
		_fk_first=
		for _fk_x in $_fk_c; do
			if [ "$_fk_x" = "$_fk_p" ]; then _fk_first=$_fk_x; else _fk_rest="$_fk_rest $_fk_x"; fi
		done
		_fk_order="$_fk_first $_fk_rest"
		;;
	*) _fk_order=$_fk_c ;;
	esac
}

ad_read() { # OFF LEN FILE
	_fk_need_up || return 1
	_fk_pump
	if [ $(($1 + $2)) -gt "$r_datakib" ]; then echo "fake: read beyond the end" >&2; return 1; fi
	_fk_read_order
	for _fk_rl in $_fk_order; do
		if [ "$(_fk_get "_fk_dev$_fk_rl")" = ok ]; then
			dd if="$(sc_leg_file "$_fk_rl")" of="$3" bs=1024 skip="$1" count="$2" 2>/dev/null
			return $?
		fi
		_fk_rleg=$_fk_rl
		_fk_leg_lost "$_fk_rleg" failed
		[ "${FAKE_BUG:-}" = no_fallback ] && return 1
	done
	echo "fake: read error: no leg could serve it" >&2
	return 1
}

ad_flush() {
	_fk_need_up || return 1
	_fk_pump
}

ad_settle() {
	_fk_need_up || return 1
	_fk_pump
	r_dirty=
	_fk_commit
}

# --- resync -------------------------------------------------------------------------------

# _fk_source: an in-sync leg with a working device to copy from; empty when there is none.
# A broken in-sync leg found on the way is failed (unless it is the last copy).
_fk_source() {
	_fk_si=0
	while [ $_fk_si -lt "$r_n" ]; do
		if [ "$(_fk_get "r_s$_fk_si")" = insync ]; then
			if [ "$(_fk_get "_fk_dev$_fk_si")" = ok ]; then
				echo $_fk_si
				return 0
			fi
		fi
		_fk_si=$((_fk_si + 1))
	done
	return 1
}

_fk_fail_broken_sources() {
	_fk_bi=0
	while [ $_fk_bi -lt "$r_n" ]; do
		if [ "$(_fk_get "r_s$_fk_bi")" = insync ] && [ "$(_fk_get "_fk_dev$_fk_bi")" != ok ]; then
			_fk_bleg=$_fk_bi
			_fk_leg_lost "$_fk_bleg" failed || true
		fi
		_fk_bi=$((_fk_bi + 1))
	done
}

# _fk_resync_leg I LIMIT: copy up to LIMIT regions (0 = all) of leg I's rebuild.
_fk_resync_leg() {
	_fk_t=$1
	_fk_lim=$2
	_fk_moved=0
	# A source that errors is found out when the copy reads it.
	_fk_fail_broken_sources
	_fk_src=$(_fk_source) || return 1
	if [ "$(_fk_get "_fk_dev$_fk_t")" != ok ]; then
		_fk_leg_lost "$_fk_t" failed
		return 1
	fi
	if [ "$(_fk_get "r_full$_fk_t")" = 1 ]; then
		_fk_ck=$(_fk_get "r_ckpt$_fk_t")
		_fk_cnt=$((r_regions - _fk_ck))
		if [ "$_fk_lim" -gt 0 ] && [ "$_fk_lim" -lt $_fk_cnt ]; then _fk_cnt=$_fk_lim; fi
		if [ "$_fk_cnt" -gt 0 ]; then
			_fk_o=$((_fk_ck * SC_REGION_KIB))
			dd if="$(sc_leg_file "$_fk_src")" of="$(sc_leg_file "$_fk_t")" bs=1024 skip=$_fk_o \
				seek=$_fk_o count=$((_fk_cnt * SC_REGION_KIB)) conv=notrunc 2>/dev/null || return 1
		fi
		_fk_ck=$((_fk_ck + _fk_cnt))
		# The checkpoint is recorded once the copied regions are on the leg.
		_fk_set "r_ckpt$_fk_t" $_fk_ck
		_fk_commit
		[ "$_fk_ck" -lt "$r_regions" ] && return 0
	else
		for _fk_tr in $(_fk_get "r_track$_fk_t") $r_dirty; do
			_fk_copy_region "$_fk_src" "$_fk_t" "$_fk_tr" || return 1
		done
	fi
	_fk "leg $_fk_t in sync"
	_fk_set "r_s$_fk_t" insync
	_fk_set "r_track$_fk_t" ""
	_fk_set "r_ckpt$_fk_t" 0
	_fk_set "r_full$_fk_t" 0
	_fk_commit
}

# _fk_pump: the background resync catches up (unless throttled).
_fk_pump() {
	[ "$_fk_up" = 1 ] || return 0
	[ "$_fk_throttle" = 1 ] && return 0
	_fk_pi=0
	while [ $_fk_pi -lt "$r_n" ]; do
		if [ "$(_fk_get "r_s$_fk_pi")" = rebuilding ]; then
			_fk_pleg=$_fk_pi
			_fk_resync_leg "$_fk_pleg" 0 || true
		fi
		_fk_pi=$((_fk_pi + 1))
	done
}

ad_wait_sync() {
	_fk_need_up || return 1
	_fk_pump
	_fk_wsi=0
	while [ $_fk_wsi -lt "$r_n" ]; do
		[ "$(_fk_get "r_s$_fk_wsi")" = rebuilding ] && return 1
		_fk_wsi=$((_fk_wsi + 1))
	done
	return 0
}

ad_throttle() {
	case $1 in
	on) _fk_throttle=1 ;;
	off)
		_fk_throttle=0
		_fk_pump
		;;
	*) return 1 ;;
	esac
}

ad_wait_progress() { # I REGIONS
	_fk_need_up || return 1
	[ "$(_fk_get "r_s$1")" = rebuilding ] || return 1
	_fk_want=$(($2 - $(_fk_get "r_ckpt$1")))
	[ $_fk_want -le 0 ] && return 0
	_fk_resync_leg "$1" $_fk_want
}

# ad_checkpoint I: regions of leg I's rebuild recorded as done, from its mirror's metadata
# (read from the newest leg's metadata; works while the mirror is down).
ad_checkpoint() {
	_fk_best=-1
	_fk_bv=0
	_fk_ci=0
	while [ $_fk_ci -lt "$_fk_n" ]; do
		if _fk_meta_read $_fk_ci && [ "$m_gen" -gt $_fk_best ]; then
			_fk_best=$m_gen
			_fk_bv=$(_fk_get "m_ckpt$1")
		fi
		_fk_ci=$((_fk_ci + 1))
	done
	[ $_fk_best -ge 0 ] || return 1
	echo "$_fk_bv"
}

# --- mirror life cycle --------------------------------------------------------------------

ad_label() { # LEG...
	[ "$_fk_up" = 1 ] && { echo "fake: already running" >&2; return 1; }
	_fk_min=
	for _fk_l in "$@"; do
		_fk_k=$(_fk_get "_fk_kib$_fk_l")
		if [ -z "$_fk_min" ] || [ "$_fk_k" -lt "$_fk_min" ]; then _fk_min=$_fk_k; fi
	done
	[ -n "$_fk_min" ] || return 1
	_fk_id=$$.$_fk_n
	r_n=$_fk_n
	r_datakib=$((((_fk_min - FK_META_KIB) / SC_REGION_KIB) * SC_REGION_KIB))
	r_regions=$((r_datakib / SC_REGION_KIB))
	r_gen=0
	r_policy=round-robin
	r_rr=0
	r_dirty=
	_fk_li=0
	while [ $_fk_li -lt 32 ]; do
		eval "r_s$_fk_li=empty r_track$_fk_li= r_ckpt$_fk_li=0 r_full$_fk_li=1"
		_fk_li=$((_fk_li + 1))
	done
	_fk_first=1
	for _fk_l in "$@"; do
		if [ $_fk_first = 1 ]; then
			_fk_set "r_s$_fk_l" insync
			_fk_set "r_full$_fk_l" 0
			_fk_first=0
		else
			_fk_set "r_s$_fk_l" rebuilding
		fi
	done
	_fk_up=1
	_fk_commit
	_fk_pump
}

ad_size_kib() {
	_fk_need_up || return 1
	echo "$r_datakib"
}

ad_state() {
	_fk_need_up || return 1
	_fk_get "r_s$1"
}

ad_policy() { # NAME [LEG]
	_fk_need_up || return 1
	case $1 in
	round-robin | load | split) r_policy=$1 ;;
	prefer) r_policy="prefer ${2:-0}" ;;
	*) return 2 ;;
	esac
	_fk_commit
}

ad_fail() {
	_fk_set "_fk_dev$1" broken
}

ad_heal() {
	_fk_set "_fk_dev$1" ok
}

ad_vanish() {
	_fk_set "_fk_dev$1" gone
	[ "$_fk_up" = 1 ] || return 0
	if _fk_active "$1"; then _fk_leg_lost "$1" missing; fi
	return 0
}

# ad_return I: the device is back; a running mirror takes back a leg it knows as missing
# (incremental resync of what was tracked while it was away).
ad_return() {
	_fk_set "_fk_dev$1" ok
	[ "$_fk_up" = 1 ] || return 0
	_fk_pump
	if [ "$(_fk_get "r_s$1")" = missing ]; then
		if [ "${FAKE_BUG:-}" = full_rejoin ]; then
			_fk_set "r_full$1" 1
			_fk_set "r_ckpt$1" 0
		fi
		_fk_set "r_s$1" rebuilding
		_fk_commit
	fi
	_fk_pump
}

ad_insert() {
	_fk_need_up || return 1
	_fk_pump
	case $(_fk_get "r_s$1") in
	empty | failed | missing) ;;
	*)
		echo "fake: leg $1 is in use" >&2
		return 1
		;;
	esac
	[ "$(_fk_get "_fk_dev$1")" = ok ] || return 1
	if [ $(($(_fk_get "_fk_kib$1") - FK_META_KIB)) -lt "$r_datakib" ]; then
		echo "fake: leg $1 is too small" >&2
		return 1
	fi
	if [ "${FAKE_BUG:-}" = trust_failed ]; then
		_fk_set "r_s$1" insync
		_fk_set "r_full$1" 0
	else
		_fk_set "r_s$1" rebuilding
		_fk_set "r_full$1" 1
		_fk_set "r_ckpt$1" 0
		_fk_set "r_track$1" ""
	fi
	_fk_commit
	_fk_pump
}

ad_remove() {
	_fk_need_up || return 1
	_fk_pump
	_fk_st=$(_fk_get "r_s$1")
	[ "$_fk_st" = empty ] && return 1
	if [ "$_fk_st" = insync ]; then
		_fk_others=0
		_fk_ri=0
		while [ $_fk_ri -lt "$r_n" ]; do
			[ $_fk_ri -ne "$1" ] && [ "$(_fk_get "r_s$_fk_ri")" = insync ] && _fk_others=1
			_fk_ri=$((_fk_ri + 1))
		done
		if [ $_fk_others -eq 0 ]; then
			echo "fake: refusing to remove the last in-sync leg" >&2
			return 1
		fi
	fi
	_fk_set "r_s$1" empty
	_fk_set "r_track$1" ""
	[ "$(_fk_get "_fk_dev$1")" = ok ] && rm -f "$SC_WORK/fake/meta.$1"
	_fk_commit
}

ad_stop() {
	_fk_need_up || return 1
	_fk_pump
	r_dirty=
	r_gen=$((r_gen + 1))
	_fk_si=0
	while [ $_fk_si -lt "$r_n" ]; do
		_fk_active $_fk_si && _fk_meta_write $_fk_si 1
		_fk_si=$((_fk_si + 1))
	done
	_fk_up=0
	return 0
}

ad_crash() {
	_fk_up=0
	return 0
}

# ad_start [LEG...]: assemble from the metadata of the legs whose devices are present (the
# listed legs; all known legs by default). Refuses split brain, writing nothing.
ad_start() {
	[ "$_fk_up" = 1 ] && { echo "fake: already running" >&2; return 1; }
	if [ $# -eq 0 ]; then
		_fk_all=
		_fk_i=0
		while [ $_fk_i -lt "$_fk_n" ]; do _fk_all="$_fk_all $_fk_i"; _fk_i=$((_fk_i + 1)); done
		# shellcheck disable=SC2086
		set -- $_fk_all
	fi
	_fk_i=0
	while [ $_fk_i -lt "$_fk_n" ]; do
		if _fk_in_list $_fk_i "$*"; then
			[ "$(_fk_get "_fk_dev$_fk_i")" = gone ] && _fk_set "_fk_dev$_fk_i" ok
		else
			_fk_set "_fk_dev$_fk_i" gone
		fi
		_fk_i=$((_fk_i + 1))
	done
	# Which legs answer, and what each says.
	_fk_present=
	_fk_win=
	_fk_wgen=-1
	for _fk_l in "$@"; do
		_fk_meta_read "$_fk_l" || continue
		[ -n "$_fk_id" ] && [ "$m_id" != "$_fk_id" ] && continue
		[ "$(_fk_get "m_s$_fk_l")" = empty ] && continue
		_fk_present="$_fk_present $_fk_l"
		_fk_set "_fk_g$_fk_l" "$m_gen"
		if [ "${FAKE_BUG:-}" = oldest_wins ]; then
			if [ $_fk_wgen -lt 0 ] || [ "$m_gen" -lt $_fk_wgen ]; then _fk_win=$_fk_l; _fk_wgen=$m_gen; fi
		elif [ "$m_gen" -gt $_fk_wgen ]; then
			_fk_win=$_fk_l
			_fk_wgen=$m_gen
		fi
	done
	if [ -z "$_fk_win" ]; then
		echo "fake: no leg with metadata of this mirror" >&2
		return 1
	fi
	# Split brain: two legs each in sync by their own metadata, each holding the other out.
	if [ "${FAKE_BUG:-}" != ignore_split ]; then
		for _fk_a in $_fk_present; do
			for _fk_b in $_fk_present; do
				[ "$_fk_b" = "$_fk_a" ] && continue
				_fk_meta_read "$_fk_a"
				_fk_aa=$(_fk_get "m_s$_fk_a")
				_fk_ab=$(_fk_get "m_s$_fk_b")
				_fk_meta_read "$_fk_b"
				_fk_bb=$(_fk_get "m_s$_fk_b")
				_fk_ba=$(_fk_get "m_s$_fk_a")
				if [ "$_fk_aa" != insync ] || [ "$_fk_bb" != insync ]; then continue; fi
				case "$_fk_ab.$_fk_ba" in
				missing.missing | missing.failed | failed.missing | failed.failed)
					echo "fake: split brain: legs $_fk_a and $_fk_b each hold the other out of date" >&2
					return 1
					;;
				esac
			done
		done
	fi
	# The newest metadata decides.
	_fk_meta_read "$_fk_win"
	r_n=$m_n
	r_gen=$m_gen
	r_datakib=$m_datakib
	r_regions=$((r_datakib / SC_REGION_KIB))
	r_policy=$m_policy
	r_rr=0
	r_dirty=$m_dirty
	_fk_clean=$m_clean
	_fk_i=0
	while [ $_fk_i -lt 32 ]; do
		eval "r_s$_fk_i=\${m_s$_fk_i:-empty} r_track$_fk_i=\${m_track$_fk_i:-} r_ckpt$_fk_i=\${m_ckpt$_fk_i:-0} r_full$_fk_i=\${m_full$_fk_i:-1}"
		_fk_i=$((_fk_i + 1))
	done
	_fk_i=0
	while [ $_fk_i -lt "$r_n" ]; do
		_fk_st=$(_fk_get "r_s$_fk_i")
		if ! _fk_in_list $_fk_i "$_fk_present"; then
			case $_fk_st in insync | rebuilding) _fk_set "r_s$_fk_i" missing ;; esac
			[ "$_fk_st" = insync ] && _fk_set "r_full$_fk_i" 0
		else
			case $_fk_st in
			missing)
				_fk_set "r_s$_fk_i" rebuilding
				[ "${FAKE_BUG:-}" = full_rejoin ] && _fk_set "r_full$_fk_i" 1
				;;
			failed)
				if [ "${FAKE_BUG:-}" = trust_failed ]; then
					_fk_set "r_s$_fk_i" insync
				else
					_fk_set "r_s$_fk_i" rebuilding
					_fk_set "r_full$_fk_i" 1
					_fk_set "r_ckpt$_fk_i" 0
				fi
				;;
			rebuilding)
				[ "${FAKE_BUG:-}" = no_ckpt ] && _fk_set "r_ckpt$_fk_i" 0
				;;
			esac
		fi
		_fk_i=$((_fk_i + 1))
	done
	_fk_up=1
	# After an unclean shutdown the dirty regions are copied from the authoritative leg to every
	# other in-sync leg before anything else.
	if [ "$_fk_clean" != 1 ] && [ "${FAKE_BUG:-}" != no_dirty ]; then
		_fk_i=0
		while [ $_fk_i -lt "$r_n" ]; do
			if [ $_fk_i -ne "$_fk_win" ] && [ "$(_fk_get "r_s$_fk_i")" = insync ]; then
				for _fk_d in $r_dirty; do _fk_copy_region "$_fk_win" $_fk_i "$_fk_d"; done
			fi
			_fk_i=$((_fk_i + 1))
		done
	fi
	r_dirty=
	_fk_commit
	_fk_pump
	return 0
}

ad_leg_digest() { lib_leg_digest "$@"; }
ad_leg_poke() { lib_leg_poke "$@"; }
ad_compare() { lib_compare "$@"; }
