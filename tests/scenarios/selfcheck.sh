#!/bin/sh
# selfcheck.sh - checks of the scenario suite itself (runs on Debian, in CI).
#
#  1. every script parses with sh -n under each shell at hand (dash, posh, busybox ash, bash
#     --posix) and is clean under shellcheck -s sh;
#  2. lib.sh: the pattern generator is deterministic, has the right length and period, and
#     matches an independent implementation (python3); the TAP helpers count and fail right;
#  3. the whole suite passes through the fake adapter (a correct mirror modelled in sh) under
#     dash, with PATH cut down to the tools a FreeBSD /rescue has; a few scenarios also under
#     posh and busybox ash;
#  4. every deliberately broken fake (FAKE_BUG=...) is caught by the scenarios meant to catch it;
#  5. the adapters' parsers read the host output formats they expect (stubbed commands), and the
#     userland adapter's NBD data path works against qemu-nbd serving a file;
#  6. tests/vm/run: --dry-run commands, clear errors for missing pieces, --replay parsing, and
#     guest.sh end to end on this machine with the fake adapter.
# Prints TAP, then "N passed, M failed"; exit status 1 if anything failed.
# SC_QUICK=1 skips the slow parts (3 in full and 4).

case $0 in */*) D=${0%/*} ;; *) D=. ;; esac
D=$(cd "$D" && pwd) || exit 2
TOP=$(cd "$D/../.." && pwd) || exit 2
W=$(mktemp -d "${TMPDIR:-/tmp}/sc-selfcheck.XXXXXX") || exit 2
trap 'rm -rf "$W"' EXIT
N=0
F=0
ok() { N=$((N + 1)); echo "ok $N - $*"; }
nok() { N=$((N + 1)); F=$((F + 1)); echo "not ok $N - $*"; }
check() { # DESC CMD...: pass when CMD succeeds
	_d=$1
	shift
	if "$@" >"$W/out" 2>&1; then ok "$_d"; else nok "$_d"; sed 's/^/#   /' "$W/out" | head -n 40; fi
}
check_not() {
	_d=$1
	shift
	if "$@" >"$W/out" 2>&1; then nok "$_d"; sed 's/^/#   /' "$W/out" | head -n 40; else ok "$_d"; fi
}

SCRIPTS="$D/lib.sh $D/run.sh $D/selfcheck.sh $D/adapters/*.sh $TOP/tests/vm/run $TOP/tests/vm/guest.sh $TOP/tests/vm/linux-testguest.sh"
SCENARIOS=$(for f in "$D"/*.sh; do case ${f##*/} in (lib.sh | run.sh | selfcheck.sh) ;; (*) echo "$f" ;; esac; done)

# ---------------------------------------------------------------- 1. syntax and lint
SHELLS=
for s in dash posh "busybox sh" "bash --posix"; do
	# shellcheck disable=SC2086 # the shell's name and options
	set -- $s
	command -v "$1" >/dev/null 2>&1 && SHELLS="$SHELLS${SHELLS:+:}$s"
done
IFS_SAVE=$IFS
IFS=:
for s in $SHELLS; do
	IFS=$IFS_SAVE
	bad=
	for f in $SCRIPTS $SCENARIOS; do
		# shellcheck disable=SC2086 # the shell and its options are words
		$s -n "$f" 2>"$W/err" || bad="$bad ${f#"$TOP"/}"
	done
	if [ -z "$bad" ]; then ok "every script parses under $s -n"; else nok "$s -n fails on:$bad"; sed 's/^/#   /' "$W/err"; fi
	IFS=:
done
IFS=$IFS_SAVE
# Constructs some of the target shells lack, and tools a minimal guest lacks (the userland
# adapter runs on Debian and may use grep and python3; this file and the runner run on hosts).
portable() {
	# shellcheck disable=SC2086 # the scenario list
	bad=$(grep -nE '(^|[^_[:alnum:]])local[[:space:]]|\[\[|\$'"'"'|^[[:space:]]*function[[:space:]]|declare[[:space:]]|[[:alnum:]_]+=\(' \
		"$D/lib.sh" "$D/run.sh" "$D"/adapters/*.sh "$TOP/tests/vm/guest.sh" $SCENARIOS)
	[ -z "$bad" ] || { echo "$bad"; return 1; }
}
check "no local, [[, \$'..', function, declare or arrays in suite code" portable
minimal_tools() {
	# shellcheck disable=SC2086 # the scenario list
	bad=$(grep -nE '(^|[;&|(`]|\$\()[[:space:]]*(grep|egrep|awk|gawk|cmp|od|python3?|perl|xxd|hexdump)([[:space:]]|$)' \
		"$D/lib.sh" "$D/run.sh" "$D/adapters/fake.sh" "$D/adapters/freebsd.sh" "$D/adapters/dm.sh" \
		"$TOP/tests/vm/guest.sh" $SCENARIOS)
	[ -z "$bad" ] || { echo "$bad"; return 1; }
}
check "scenarios, lib, guest-side adapters and guest.sh call no grep, awk, cmp, od, python" minimal_tools
if command -v shellcheck >/dev/null 2>&1; then
	# SC1090/SC1091: sourced files named at run time; SC2034: variables set for other files;
	# SC3043: `local` is not used, but dash/FreeBSD/NetBSD sh would have it; SC2317: functions
	# that scenarios hand to t_ok look unreachable to shellcheck.
	# shellcheck disable=SC2086
	check "shellcheck -s sh is clean on every script" \
		shellcheck -s sh -x -e SC1090,SC1091,SC2034,SC3043,SC2317 $SCRIPTS $SCENARIOS
elif [ "${CI:-}" = true ]; then
	nok "shellcheck is not installed (apt-get install shellcheck)"
else
	ok "shellcheck # SKIP not installed (apt-get install shellcheck)"
fi

# ---------------------------------------------------------------- 2. lib.sh under dash
LIBT=$W/libt.sh
cat >"$LIBT" <<EOF
SC_DIR=$D
. "$D/lib.sh"
SC_WORK=\$1
mkdir -p "\$SC_WORK"
EOF
libsh() { # SHELL WORKDIR CODE
	printf '%s\n' "$3" >"$W/code.sh"
	cat "$LIBT" "$W/code.sh" >"$W/run.sh"
	$1 "$W/run.sh" "$2"
}
d1=$(libsh dash "$W/p1" 'pat_digest 7 100')
d2=$(libsh dash "$W/p2" 'pat_digest 7 100')
d3=$(libsh dash "$W/p3" 'pat_digest 8 100')
check "the pattern for a seed is the same in two fresh work directories" test -n "$d1" -a "$d1" = "$d2"
check "different seeds give different patterns" test -n "$d3" -a "$d1" != "$d3"
# shellcheck disable=SC2016 # code for the inner shell
sz=$(libsh dash "$W/p4" 'wc -c <"$(pat_file 3 77)"')
check "pat_file makes exactly KIB KiB" test "$sz" -eq $((77 * 1024))
period() {
	f=$(libsh dash "$W/p5" 'pat_file 5 16')
	# Bytes 0..4087 repeat at 4088, and are not the same as the stream shifted by 512.
	a=$(dd if="$f" bs=4088 count=1 2>/dev/null | md5sum)
	b=$(dd if="$f" bs=4088 skip=1 count=1 2>/dev/null | md5sum)
	c=$(dd if="$f" bs=512 skip=1 count=7 2>/dev/null | md5sum)
	e=$(dd if="$f" bs=512 count=7 2>/dev/null | md5sum)
	[ "$a" = "$b" ] && [ "$c" != "$e" ]
}
check "the pattern repeats every 4088 bytes, and a 512-byte shift does not match" period
if command -v python3 >/dev/null 2>&1; then
	ref=$(python3 -c '
import hashlib
x = (1 * 2654435761 + 12345) % 2147483648
b = ""
for i in range(511):
    x = (x * 1103515245 + 12345) % 2147483648
    b += "%08x" % x
b = b.encode()
print(hashlib.md5((b * 5)[:16384]).hexdigest())')
	got=$(libsh dash "$W/p6" 'pat_digest 1 16')
	check "the pattern matches an independent implementation (python3)" test -n "$ref" -a "$ref" = "$got"
fi
for s in posh "busybox sh"; do
	# shellcheck disable=SC2086 # the shell's name and options
	set -- $s
	command -v "$1" >/dev/null 2>&1 || continue
	# shellcheck disable=SC2086
	d4=$(libsh "$s" "$W/p7$1" 'pat_digest 7 100')
	check "$s generates the same pattern as dash" test "$d4" = "$d1"
done
tapt() {
	libsh dash "$W/t1" 'T_PLAN=3; t_plan 3; t_ok one true; t_ok two false; t_not three false; t_summary' >"$W/tap" 2>&1
	rc=$?
	[ $rc -ne 0 ] &&
		[ "$(sed -n 1p "$W/tap")" = "1..3" ] &&
		[ "$(sed -n 2p "$W/tap")" = "ok 1 - one" ] &&
		[ "$(sed -n 3p "$W/tap")" = "not ok 2 - two" ] &&
		[ "$(sed -n 4p "$W/tap")" = "ok 3 - three" ]
}
check "TAP helpers number checks, report a failure and fail the summary" tapt
tapplan() {
	libsh dash "$W/t2" 't_plan 3; t_ok one true; t_summary'
}
check_not "a scenario that runs fewer checks than planned fails" tapplan
tapall() {
	libsh dash "$W/t3" 't_plan 2; t_ok a sh_all true -- true; t_ok b sh_all true -- false -- true; t_summary' >"$W/tap" 2>&1
	[ "$(sed -n 2p "$W/tap")" = "ok 1 - a" ] && [ -n "$(sed -n '/^not ok 2 - b$/p' "$W/tap")" ] &&
		[ -n "$(sed -n "/^#   failed: 'false'$/p" "$W/tap")" ]
}
check "sh_all fails when any of its commands fails" tapall
taskip() {
	libsh dash "$W/t4" 't_plan 1; t_skip x "no y"; t_summary' >"$W/tap" 2>&1 &&
		[ "$(sed -n 2p "$W/tap")" = "ok 1 - x # SKIP no y" ]
}
check "t_skip counts a check as run and skipped" taskip

# ---------------------------------------------------------------- 3. the suite on the fake
# A PATH holding only tools a FreeBSD /rescue has (md5sum standing in for md5).
RB=$W/rescue-bin
mkdir -p "$RB"
for t in cat cp dd expr head mkdir mv rm sed sleep tail md5sum; do
	p=$(command -v $t) && ln -s "$p" "$RB/$t"
done
ln -s "$(command -v dash)" "$RB/sh"
restricted() { # run.sh ADAPTER [SCENARIO...] with PATH=$RB
	env PATH="$RB" SC_TMP="$W" "$RB/sh" "$D/run.sh" "$@"
}
if [ "${SC_QUICK:-0}" = 1 ]; then
	check "sizes and split-brain pass on the fake adapter (dash, /rescue tools only)" \
		restricted fake sizes split-brain
else
	check "every scenario passes on the fake adapter (dash, /rescue tools only)" restricted fake
fi
for s in posh "busybox sh"; do
	# shellcheck disable=SC2086 # the shell's name and options
	set -- $s
	command -v "$1" >/dev/null 2>&1 || continue
	if [ "${SC_QUICK:-0}" = 1 ]; then
		check "vanish-rejoin and newest-wins pass on the fake adapter under $s" \
			env SC_SHELL="$s" SC_TMP="$W" sh "$D/run.sh" fake vanish-rejoin newest-wins
	else
		check "every scenario passes on the fake adapter under $s" \
			env SC_SHELL="$s" SC_TMP="$W" sh "$D/run.sh" fake
	fi
done
notool() {
	# A scenario that used grep would fail with grep out of PATH: prove that PATH is honoured.
	env PATH="$RB" "$RB/sh" -c 'command -v grep' && return 1
	env PATH="$RB" "$RB/sh" -c 'command -v awk' && return 1
	return 0
}
check "the restricted PATH holds no grep and no awk" notool

# ---------------------------------------------------------------- 4. broken fakes are caught
if [ "${SC_QUICK:-0}" != 1 ]; then
	for pair in skip_leg1:sizes full_rejoin:vanish-rejoin trust_failed:write-errors \
		no_dirty:unclean-dirty-only ignore_split:split-brain no_ckpt:rebuild-resume \
		oldest_wins:newest-wins no_fallback:read-errors; do
		bug=${pair%%:*}
		scen=${pair#*:}
		check_not "FAKE_BUG=$bug is caught by $scen" env FAKE_BUG="$bug" SC_TMP="$W" sh "$D/run.sh" fake "$scen"
	done
fi

# ---------------------------------------------------------------- 5. adapters' parsers
# dm: dm-mirror's status line; legs in table order, one health character each.
dmparse() {
	cat >"$W/dmt.sh" <<EOF
SC_DIR=$D
. "$D/lib.sh"
. "$D/adapters/dm.sh"
SC_WORK=$W/dmt
mkdir -p "\$SC_WORK"
dmsetup() {
	case \$1 in
	status) echo "0 30720 mirror 3 253:1 253:2 253:3 \$STATUS 1 \$HEALTH 3 dmirror 253:1 A" ;;
	info) return 0 ;;
	table) echo "0 30720 mirror dmirror 2 128 sync 3 /dev/mapper/scleg.2 0 /dev/mapper/scleg.0 0 /dev/mapper/scleg.1 0 1 handle_errors" ;;
	esac
}
DM_TABLE_LEGS="2 0 1"
DM_IN0=1 DM_IN1=1 DM_IN2=1 DM_IN3=1
STATUS=240/240 HEALTH=AAD
echo "\$(ad_state 2) \$(ad_state 0) \$(ad_state 1) \$(ad_state 3) \$(ad_size_kib)"
STATUS=100/240 HEALTH=AAA
echo "\$(ad_state 0)"
EOF
	dash "$W/dmt.sh" >"$W/dmo"
	[ "$(sed -n 1p "$W/dmo")" = "insync insync failed missing 15360" ] &&
		[ "$(sed -n 2p "$W/dmo")" = "rebuilding" ]
}
check "dm adapter: reads leg states and the size from dmsetup status and table" dmparse
fbparse() {
	cat >"$W/fbt.sh" <<EOF
SC_DIR=$D
. "$D/lib.sh"
. "$D/adapters/freebsd.sh"
SC_WORK=$W/fbt
mkdir -p "\$SC_WORK"
geom() {
	case \$2 in
	status) printf '%s\n' "dmirror/scmirror  DEGRADED  md40.nop (INSYNC)" "                            md41.nop (REBUILDING, 42%)" "                            md42.nop (FAILED)" ;;
	list) printf '%s\n' "Geom name: scmirror" "Providers:" "1. Name: dmirror/scmirror" "   Mediasize: 15728640 (15M)" "Consumers:" "1. Name: md40.nop" "   Mediasize: 16777216 (16M)" ;;
	esac
}
_fb_need_up() { return 0; }
FB_IN3=1
echo "\$(ad_state 0) \$(ad_state 1) \$(ad_state 2) \$(ad_state 3) \$(ad_state 4) \$(ad_size_kib) \$(_fb_progress 1)"
EOF
	dash "$W/fbt.sh" >"$W/fbo"
	[ "$(cat "$W/fbo")" = "insync rebuilding failed missing empty 15360 42" ]
}
check "freebsd adapter: reads leg states, progress and the size from geom dmirror output" fbparse
ulparse() {
	command -v python3 >/dev/null 2>&1 || return 0
	# The shapes of the cli branch's status --json and inspect --json (see adapters/userland.sh).
	cat >"$W/ult.sh" <<EOF
SC_DIR=$D
. "$D/lib.sh"
. "$D/adapters/userland.sh"
SC_WORK=$W/ult
mkdir -p "\$SC_WORK"
UL_SLOT1=1 UL_SLOT0=0 UL_SLOT2=2 UL_NLEGS=3
echo '{"legs":[{"index":0,"device":"/w/leg0.img","state":"in-sync"},{"index":1,"device":"","state":"missing"},{"index":2,"device":"error:/w/leg2.img","state":"rebuilding","resync_done_sectors":2048}],"dirty_regions":0}' >$W/ul.json
echo "\$(_ul_json_leg state 0 <$W/ul.json) \$(_ul_json_leg state 1 <$W/ul.json) \$(_ul_json_leg state 2 <$W/ul.json) \$(_ul_json_leg progress 2 <$W/ul.json) \$(_ul_json_leg state 3 <$W/ul.json) \$(_ul_json_leg index 2 <$W/ul.json)"
# inspect: leg 2's own label is older; the newest (leg 0's) says slot 2 is at region 37.
UL_BIN=$W/fake-dmirror
echo "\$(ad_checkpoint 2)"
EOF
	cat >"$W/fake-dmirror" <<'EOF'
#!/bin/sh
case $3 in
*leg0.img) echo '[{"leg_index":0,"generation":9,"legs":[{"rebuild_checkpoint":0},{"rebuild_checkpoint":0},{"rebuild_checkpoint":37}]}]' ;;
*leg2.img) echo '[{"leg_index":2,"generation":7,"legs":[{"rebuild_checkpoint":0},{"rebuild_checkpoint":0},{"rebuild_checkpoint":5}]}]' ;;
*) exit 1 ;;
esac
EOF
	chmod +x "$W/fake-dmirror"
	dash "$W/ult.sh" >"$W/ulo" || return 1
	[ "$(sed -n 1p "$W/ulo")" = "insync missing rebuilding 1024 empty 2" ] &&
		[ "$(sed -n 2p "$W/ulo")" = "37" ]
}
check "userland adapter: reads states, progress, index and checkpoint from the CLI's JSON" ulparse
if command -v qemu-nbd >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1; then
	nbdpath() {
		cat >"$W/nbt.sh" <<EOF
SC_DIR=$D
. "$D/lib.sh"
. "$D/adapters/userland.sh"
SC_WORK=$W/nbt
mkdir -p "\$SC_WORK"
UL_SOCK=\$SC_WORK/nbd.sock
dd if=/dev/zero of=\$SC_WORK/disk bs=1024 count=4096 2>/dev/null
qemu-nbd -f raw -k "\$UL_SOCK" -t "\$SC_WORK/disk" >/dev/null 2>&1 &
UL_PID=\$!
i=0; while [ ! -S "\$UL_SOCK" ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i + 1)); done
r=0
ad_write 1024 256 5 || r=1
ad_flush || r=2
sc_verify 1024 256 5 || r=3
sc_verify 1024 256 6 && r=4
[ "\$(ad_size_kib)" = 4096 ] || r=5
ad_write 4032 128 5 && r=6
# The bytes landed where they were meant to, in the served file.
[ "\$(dd if=\$SC_WORK/disk bs=1024 skip=1024 count=256 2>/dev/null | sc_digest)" = "\$(pat_digest 5 256)" ] || r=7
kill \$UL_PID
exit \$r
EOF
		dash "$W/nbt.sh"
	}
	check "userland adapter: writes, flushes, reads and sizes through NBD (qemu-nbd on a file)" nbdpath
fi

# ---------------------------------------------------------------- 6. the VM runner
touch "$W/FreeBSD-15.0-RELEASE-amd64.raw" "$W/root.iso" "$W/geom_dmirror.ko" "$W/kernel" "$W/NetBSD-10.1-amd64.img" "$W/dm_target_mirror.kmod"
RUN=$TOP/tests/vm/run
dry_qemu() {
	TMPDIR=$W sh "$RUN" --hypervisor qemu --image "$W/FreeBSD-15.0-RELEASE-amd64.raw" --module "$W/geom_dmirror.ko" --dry-run >"$W/dry" 2>&1 || return 1
	[ -n "$(sed -n '/^boot: qemu-system-x86_64 .*-drive file=.*FreeBSD-15.0-RELEASE-amd64.raw,format=raw,if=virtio,snapshot=on -drive file=.*payload.tar,format=raw,if=virtio,readonly=on/p' "$W/dry")" ] || return 1
	[ -n "$(sed -n '/^  modules\/geom_dmirror.ko$/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/^  tests\/vm\/guest.sh$/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/^  tests\/scenarios\/lib.sh$/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/^console: login root; .*tar -xf \$d .*sh tests\/vm\/guest.sh/p' "$W/dry")" ]
}
check "vm/run --dry-run: qemu boots the image with the payload tar as a second virtio disk" dry_qemu
dry_pvh() {
	TMPDIR=$W sh "$RUN" --kernel "$W/kernel" --image "$W/FreeBSD-15.0-RELEASE-amd64.raw" --module "$W/geom_dmirror.ko" --dry-run >"$W/dry" 2>&1 || return 1
	[ -n "$(sed -n '/^boot: qemu-system-x86_64 -M microvm.* -kernel .*kernel.*virtio-blk-device,drive=root.*virtio-blk-device,drive=payload/p' "$W/dry")" ]
}
check "vm/run --dry-run --kernel: a PVH boot with qemu -M microvm -kernel" dry_pvh
dry_pvh_iso() {
	TMPDIR=$W sh "$RUN" --kernel "$W/kernel" --image "$W/root.iso" --os freebsd --module "$W/geom_dmirror.ko" --no-kvm --autorun --scenarios "sizes split-brain" --dry-run >"$W/dry" 2>&1 || return 1
	[ -n "$(sed -n "/^boot: qemu-system-x86_64 -M microvm,rtc=on,acpi=off .*-cpu 'qemu64,vendor=GenuineIntel,model-id=Intel(R) CPU @ 2.00GHz' .*-kernel .*kernel -append 'vfs.root.mountfrom=cd9660:\/dev\/vtbd0 debug.debugger_on_panic=0 .*drive=root.*drive=payload/p" "$W/dry")" ] &&
		[ -n "$(sed -n '/^  scenarios$/p' "$W/dry")" ] &&
		[ -n "$(sed -n "/^console: (the guest's rc runs guest.sh)/p" "$W/dry")" ]
}
check "vm/run --dry-run --kernel --image ROOT.iso --autorun: cd9660 root, no ACPI, scenarios in the payload" dry_pvh_iso
dry_dmtest() {
	TMPDIR=$W sh "$RUN" --kernel "$W/kernel" --dmtest --module "$W/geom_dmirror.ko" --no-kvm --dry-run >"$W/dry" 2>&1 || return 1
	[ -n "$(sed -n '/^init: .* --target=x86_64-unknown-freebsd15 .*tests\/vm\/dmtest.c$/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/^boot: qemu-system-x86_64 -M microvm,rtc=on,acpi=off .*-kernel .*kernel .*dmtest.phase=1.*drive=root.*drive=leg1.*drive=leg2$/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/^boot: the same with dmtest.phase=2/p' "$W/dry")" ]
}
check "vm/run --dry-run --dmtest: dmtest.c as init, two boots over two leg disks" dry_dmtest
dry_bhyve() {
	TMPDIR=$W sh "$RUN" --hypervisor bhyve --os netbsd --uefi /fw/BHYVE_UEFI.fd --image "$W/NetBSD-10.1-amd64.img" --module "$W/dm_target_mirror.kmod" --dry-run >"$W/dry" 2>&1 || return 1
	[ -n "$(sed -n '/^boot: bhyve .*-l bootrom,\/fw\/BHYVE_UEFI.fd .*virtio-blk,.*payload.tar,ro .*-l com1,\/dev\/nmdm/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/^  modules\/dm_target_mirror.kmod$/p' "$W/dry")" ] &&
		[ -n "$(sed -n '/rld1d/p' "$W/dry")" ]
}
check "vm/run --dry-run --hypervisor bhyve: UEFI boot of a NetBSD image, its module and disk names" dry_bhyve
missing() { # ARGS... -> must fail with a message naming the missing piece ($MISSING)
	TMPDIR=$W sh "$RUN" "$@" >"$W/miss" 2>&1 && return 1
	[ -n "$(sed -n "/$MISSING/p" "$W/miss")" ]
}
MISSING="missing image: .*nonexistent.img does not exist"
check "vm/run names a missing image" missing --image "$W/nonexistent.img" --module "$W/geom_dmirror.ko"
MISSING="missing module: no geom_dmirror.ko found"
check "vm/run names a missing module" missing --image "$W/FreeBSD-15.0-RELEASE-amd64.raw"
MISSING="bhyve boots netbsd through UEFI only"
check "vm/run says bhyve needs UEFI for a NetBSD guest" missing --hypervisor bhyve --image "$W/NetBSD-10.1-amd64.img" --module "$W/dm_target_mirror.kmod" --dry-run
guest_e2e() {
	g=$W/guest
	mkdir -p "$g/tests/vm" && cp -r "$D" "$g/tests/" && cp "$TOP/tests/vm/guest.sh" "$g/tests/vm/" &&
		echo x >"$g/dmirror-payload" || return 1
	# What a console shows: CRs, noise, the guest's lines.
	SC_TMP=$W sh "$g/tests/vm/guest.sh" --adapter fake --no-poweroff --scenarios "sizes insert-later" |
		sed 's/$/\r/' >"$W/console.log"
	sh "$RUN" --replay "$W/console.log" >"$W/rep" || return 1
	[ "$(cat "$W/rep")" = "pass sizes
pass insert-later
2 passed, 0 failed" ]
}
check "guest.sh runs the suite and vm/run --replay reports it (fake adapter, this machine)" guest_e2e
guest_list() {
	g=$W/guest
	# An rc runs guest.sh with no arguments: the payload's scenarios file picks the scenarios.
	echo "split-brain" >"$g/scenarios" || return 1
	SC_TMP=$W sh "$g/tests/vm/guest.sh" --adapter fake --no-poweroff | sed 's/$/\r/' >"$W/console.log"
	rm -f "$g/scenarios"
	sh "$RUN" --replay "$W/console.log" >"$W/rep" || return 1
	[ "$(cat "$W/rep")" = "pass split-brain
1 passed, 0 failed" ]
}
check "guest.sh without --scenarios runs the payload's scenarios list" guest_list
replay_bad() {
	printf 'boot noise\r\nDMIRROR-BEGIN os=FreeBSD\r\nDMIRROR: pass a\r\nDMIRROR: FAIL b (exit 1)\r\nDMIRROR:     not ok 3 - x\r\nDMIRROR: 1 passed, 1 failed\r\nDMIRROR-END 1\r\n' >"$W/bad.log"
	sh "$RUN" --replay "$W/bad.log" >"$W/rep" && return 1
	[ "$(cat "$W/rep")" = "pass a
FAIL b (exit 1)
1 passed, 1 failed" ]
}
check "vm/run --replay: a failed scenario fails the run" replay_bad
replay_cut() {
	printf 'DMIRROR-BEGIN os=FreeBSD\r\nDMIRROR: pass a\r\npanic: oops\r\n' >"$W/cut.log"
	sh "$RUN" --replay "$W/cut.log" >"$W/rep" && return 1
	# the panic and the missing end, each a failure
	grep -qx 'FAIL guest: kernel panic: oops' "$W/rep" &&
		[ "$(tail -n 1 "$W/rep")" = "1 passed, 2 failed" ]
}
check "vm/run --replay: a guest that never finishes fails the run" replay_cut
replay_err() {
	printf 'DMIRROR-BEGIN os=FreeBSD\r\nDMIRROR-ERROR missing module: modules/geom_dmirror.ko is not in the payload\r\nDMIRROR-END 1\r\n' >"$W/err.log"
	sh "$RUN" --replay "$W/err.log" >"$W/rep" && return 1
	[ "$(sed -n 1p "$W/rep")" = "FAIL guest: missing module: modules/geom_dmirror.ko is not in the payload" ]
}
check "vm/run --replay: the guest's error is shown and fails the run" replay_err

# A real boot, where this machine can: a tiny Linux guest (linux-testguest.sh) stands in for a
# BSD one so that qemu, the payload disk, the console login, guest.sh and the report run for
# real. Slow under TCG (about 2 minutes), so not in quick mode.
vm_boot() {
	sh "$TOP/tests/vm/linux-testguest.sh" "$W/ltg" >/dev/null || return 1
	TMPDIR=$W timeout 900 sh "$RUN" --os linux --kernel "$W/ltg/vmlinuz" --initrd "$W/ltg/initrd.img" \
		--machine pc --no-kvm --scenarios "sizes split-brain" --timeout 600 >"$W/boot" 2>&1
	rc=$?
	cat "$W/boot"
	[ $rc -eq 0 ] && [ "$(tail -n 1 "$W/boot")" = "2 passed, 0 failed" ]
}
if [ "${SC_QUICK:-0}" = 1 ]; then
	:
elif command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v cpio >/dev/null 2>&1 &&
	[ -n "$(find /boot -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null)" ] && command -v busybox >/dev/null 2>&1; then
	check "vm/run boots a Linux stand-in guest with qemu and reports its scenarios" vm_boot
else
	ok "vm/run real boot # SKIP needs qemu-system-x86, cpio, busybox-static and a kernel in /boot"
fi

echo "1..$N"
echo "$((N - F)) passed, $F failed"
[ $F -eq 0 ]
