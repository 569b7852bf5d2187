# lib.sh - common library of the dmirror scenario suite.
#
# Sourced by every scenario (never run on its own). POSIX sh only: it must work with dash,
# FreeBSD's, DragonFly's and NetBSD's /bin/sh and busybox ash. Tools used: dd, cat, mv, rm,
# mkdir, sleep, expr-free shell arithmetic, and one digest command (md5sum, md5 or sha256),
# which is what a FreeBSD /rescue holds. No grep, cmp, od or awk.
#
# Environment:
#   SC_DIR      directory holding lib.sh and adapters/ (run.sh sets it)
#   SC_ADAPTER  adapter name (adapters/NAME.sh) or a path to an adapter file; default "fake"
#   SC_TMP      where scenarios make their work directory (default /tmp)
#   SC_KEEP     if set to 1, the work directory is kept after the scenario
#   SC_VERBOSE  if set to 1, adapters print what they run on stderr
#
# TAP: sc_begin prints the plan "1..N"; each check prints "ok N - desc" or "not ok N - desc";
# sc_end prints a summary comment and exits 0 only when every planned check ran and passed.

# Sizes used by the scenarios, in KiB. Legs are 16 MiB; regions 64 KiB, so a leg holds about
# 250 regions after its metadata, enough for a rebuild checkpoint to be recorded mid-way.
SC_LEG_KIB=${SC_LEG_KIB:-16384}
SC_REGION_KIB=${SC_REGION_KIB:-64}

T_PLAN=0
T_N=0
T_FAIL=0
T_SKIP=0

# ---------------------------------------------------------------- TAP

t_plan() {
	T_PLAN=$1
	echo "1..$1"
}

# t_result STATUS DESC: record a check whose outcome is already known (0 = passed).
t_result() {
	T_N=$((T_N + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $T_N - $2"
	else
		T_FAIL=$((T_FAIL + 1))
		echo "not ok $T_N - $2"
	fi
	return "$1"
}

# t_ok DESC CMD [ARG...]: run CMD; the check passes when it exits 0.
t_ok() {
	_t_desc=$1
	shift
	if "$@"; then t_result 0 "$_t_desc"; else t_result 1 "$_t_desc"; fi
}

# t_not DESC CMD [ARG...]: the check passes when CMD fails.
t_not() {
	_t_desc=$1
	shift
	if "$@"; then t_result 1 "$_t_desc"; else t_result 0 "$_t_desc"; fi
}

# t_eq DESC GOT WANT
t_eq() {
	if [ "$2" = "$3" ]; then
		t_result 0 "$1"
	else
		t_result 1 "$1"
		echo "#   got:  '$2'"
		echo "#   want: '$3'"
		return 1
	fi
}

# t_skip DESC REASON: a check this adapter cannot perform (counts as run, not failed).
t_skip() {
	T_N=$((T_N + 1))
	T_SKIP=$((T_SKIP + 1))
	echo "ok $T_N - $1 # SKIP $2"
}

t_diag() {
	echo "# $*"
}

# t_bail REASON: the story cannot go on (a step it depends on failed).
t_bail() {
	echo "Bail out! $*"
	exit 1
}

# t_summary: print the summary comment; status 0 when every planned check ran and passed.
t_summary() {
	echo "# $T_N of $T_PLAN checks run, $T_FAIL failed, $T_SKIP skipped"
	if [ "$T_N" -ne "$T_PLAN" ]; then
		echo "# plan mismatch: planned $T_PLAN, ran $T_N"
		return 1
	fi
	[ "$T_FAIL" -eq 0 ]
}

# sh_all CMD [ARG...] [-- CMD [ARG...]]...: run each command in turn (in this shell); status 0
# when all succeed; stops at the first failure and names it. Arguments must not hold a quote.
sh_all() {
	while [ $# -gt 0 ]; do
		_seg=
		while [ $# -gt 0 ] && [ "$1" != -- ]; do
			case $1 in *"'"*)
				echo "sh_all: an argument holds a quote: $1" >&2
				return 1
				;;
			esac
			_seg="$_seg '$1'"
			shift
		done
		[ $# -gt 0 ] && shift
		if ! eval "$_seg"; then
			echo "#   failed:$_seg"
			return 1
		fi
	done
	return 0
}

# ---------------------------------------------------------------- digests and patterns

# sc_digest_cmd: pick the digest command once. Prints nothing; sets SC_DIGEST.
sc_digest_cmd() {
	if [ -n "${SC_DIGEST:-}" ]; then return 0; fi
	for _c in md5sum md5 sha256sum sha256; do
		if command -v "$_c" >/dev/null 2>&1; then
			SC_DIGEST=$_c
			return 0
		fi
	done
	echo "lib.sh: no digest command (md5sum, md5, sha256sum or sha256) found" >&2
	return 1
}

# sc_digest: digest of standard input, as one hex word on standard output.
sc_digest() {
	sc_digest_cmd || return 1
	# md5sum prints "HEX  -", FreeBSD/DragonFly/NetBSD md5 reading stdin prints "HEX".
	_d=$("$SC_DIGEST") || return 1
	# shellcheck disable=SC2086 # split the digest line into words on purpose
	set -- $_d
	echo "$1"
}

# pat_block SEED FILE: write the pattern's period to FILE: 511 words of 8 hex digits (4088
# bytes) from a linear congruential generator seeded by SEED. The period is not a power of two,
# so data shifted by any multiple of a sector (short of 511 sectors) does not match.
pat_block() {
	_x=$(( ($1 * 2654435761 + 12345) % 2147483648 ))
	_i=0
	_line=
	: >"$2" || return 1
	while [ $_i -lt 511 ]; do
		_x=$(( (_x * 1103515245 + 12345) % 2147483648 ))
		_line=$_line$(printf '%08x' "$_x")
		_i=$((_i + 1))
		# Emit every 64 words, so the shell never holds a long string.
		if [ $((_i % 64)) -eq 0 ] || [ $_i -eq 511 ]; then
			printf '%s' "$_line" >>"$2" || return 1
			_line=
		fi
	done
}

# pat_file SEED KIB: print the path of a file holding KIB KiB of pattern SEED (made once, kept
# in the work directory).
pat_file() {
	_pd=$SC_WORK/pat
	_pf=$_pd/$1.$2
	if [ -f "$_pf" ]; then
		echo "$_pf"
		return 0
	fi
	mkdir -p "$_pd" || return 1
	pat_block "$1" "$_pd/blk.$1" || return 1
	# Double the block until it covers KIB KiB, then cut it to size with dd.
	_have=4088
	cp "$_pd/blk.$1" "$_pd/dbl.$1" || return 1
	while [ $_have -lt $(($2 * 1024)) ]; do
		cat "$_pd/dbl.$1" "$_pd/dbl.$1" >"$_pd/tmp.$1" || return 1
		mv "$_pd/tmp.$1" "$_pd/dbl.$1" || return 1
		_have=$((_have * 2))
	done
	dd if="$_pd/dbl.$1" of="$_pf.tmp" bs=1024 count="$2" 2>/dev/null || return 1
	mv "$_pf.tmp" "$_pf" || return 1
	rm -f "$_pd/dbl.$1" "$_pd/blk.$1"
	echo "$_pf"
}

# pat_digest SEED KIB: digest of KIB KiB of pattern SEED.
pat_digest() {
	_pdg=$SC_WORK/pat/$1.$2.digest
	if [ -f "$_pdg" ]; then
		cat "$_pdg"
		return 0
	fi
	_pf=$(pat_file "$1" "$2") || return 1
	sc_digest <"$_pf" >"$_pdg" || return 1
	cat "$_pdg"
}

# zero_digest KIB: digest of KIB KiB of zeros.
zero_digest() {
	dd if=/dev/zero bs=1024 count="$1" 2>/dev/null | sc_digest
}

# ---------------------------------------------------------------- leg backing storage
# Every adapter keeps leg I's data in a plain file, sc_leg_file I, so that scenarios can look at
# (and, while the leg is out of the mirror, change) a leg directly. Data starts at offset 0 of
# the leg; dmirror's metadata sits at its end.

sc_leg_file() {
	echo "$SC_WORK/leg$1.img"
}

# lib_mkfile I KIB: a zero-filled backing file for leg I.
lib_mkfile() {
	dd if=/dev/zero of="$(sc_leg_file "$1")" bs=1024 count="$2" 2>/dev/null
}

# lib_leg_digest I OFF_KIB LEN_KIB: digest of a range of leg I's backing file.
lib_leg_digest() {
	dd if="$(sc_leg_file "$1")" bs=1024 skip="$2" count="$3" 2>/dev/null | sc_digest
}

# lib_leg_poke I OFF_KIB LEN_KIB SEED: write pattern SEED straight into leg I's backing file.
lib_leg_poke() {
	_pf=$(pat_file "$4" "$3") || return 1
	dd if="$_pf" of="$(sc_leg_file "$1")" bs=1024 seek="$2" count="$3" conv=notrunc 2>/dev/null
}

# lib_compare I J [OFF_KIB LEN_KIB]: legs I and J hold the same data (default: the whole data
# area of the mirror).
lib_compare() {
	_co=${3:-0}
	_cl=${4:-}
	if [ -z "$_cl" ]; then _cl=$(ad_size_kib) || return 1; fi
	_a=$(ad_leg_digest "$1" "$_co" "$_cl") || return 1
	_b=$(ad_leg_digest "$2" "$_co" "$_cl") || return 1
	[ -n "$_a" ] && [ "$_a" = "$_b" ]
}

# ---------------------------------------------------------------- scenario helpers

# sc_verify OFF_KIB LEN_KIB SEED: reading the mirror there gives pattern SEED. ad_read runs in
# this shell, not in a command substitution, so an adapter may change its state on a read.
sc_verify() {
	_want=$(pat_digest "$3" "$2") || return 1
	rm -f "$SC_WORK/read.out"
	ad_read "$1" "$2" "$SC_WORK/read.out" || return 1
	_got=$(sc_digest <"$SC_WORK/read.out") || return 1
	[ -n "$_got" ] && [ "$_got" = "$_want" ]
}

# sc_leg_has I OFF_KIB LEN_KIB SEED: leg I's backing storage holds pattern SEED there.
sc_leg_has() {
	_want=$(pat_digest "$4" "$3") || return 1
	_got=$(ad_leg_digest "$1" "$2" "$3") || return 1
	[ "$_got" = "$_want" ]
}

# sc_state_is I STATE: the mirror reports leg I in STATE.
sc_state_is() {
	_st=$(ad_state "$1") || return 1
	[ "$_st" = "$2" ]
}

# sc_wait_state I STATE [SECS]: poll until leg I is in STATE.
sc_wait_state() {
	_ws=${3:-30}
	while :; do
		if sc_state_is "$1" "$2"; then return 0; fi
		[ "$_ws" -le 0 ] && return 1
		sleep 1
		_ws=$((_ws - 1))
	done
}

# sc_region_off R: offset in KiB of region R.
sc_region_off() {
	echo $(($1 * SC_REGION_KIB))
}

# sc_mklegs N [KIB]: make legs 0..N-1 of KIB KiB (default SC_LEG_KIB).
sc_mklegs() {
	_mi=0
	while [ $_mi -lt "$1" ]; do
		ad_mkleg $_mi "${2:-$SC_LEG_KIB}" || return 1
		_mi=$((_mi + 1))
	done
}

# sc_load_adapter: source the adapter named by SC_ADAPTER.
sc_load_adapter() {
	case ${SC_ADAPTER:-fake} in
	*/*) _af=$SC_ADAPTER ;;
	*) _af=$SC_DIR/adapters/${SC_ADAPTER:-fake}.sh ;;
	esac
	if [ ! -f "$_af" ]; then
		echo "lib.sh: no adapter file $_af" >&2
		return 1
	fi
	# shellcheck disable=SC1090
	. "$_af"
}

sc_cleanup() {
	ad_cleanup >/dev/null 2>&1
	if [ "${SC_KEEP:-0}" = 1 ]; then
		echo "# work directory kept: $SC_WORK"
	else
		rm -rf "$SC_WORK"
	fi
}

# sc_begin PLAN: set up the work directory and the adapter, print the plan.
# A scenario whose adapter lacks a tool it needs is skipped whole ("1..0 # SKIP").
sc_begin() {
	: "${SC_DIR:=${0%/*}}"
	sc_digest_cmd || exit 1
	sc_load_adapter || exit 1
	SC_WORK=${SC_TMP:-/tmp}/dmirror-sc.$$
	rm -rf "$SC_WORK"
	mkdir -p "$SC_WORK" || exit 1
	trap 'sc_cleanup' EXIT
	trap 'exit 130' INT TERM
	ad_setup >"$SC_WORK/setup.out" 2>&1
	_rc=$?
	if [ $_rc -eq 2 ]; then
		echo "1..0 # SKIP $(cat "$SC_WORK/setup.out")"
		exit 0
	elif [ $_rc -ne 0 ]; then
		echo "Bail out! adapter setup failed: $(cat "$SC_WORK/setup.out")"
		exit 1
	fi
	t_plan "$1"
}

sc_end() {
	t_summary
	exit $?
}
