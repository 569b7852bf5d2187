#!/bin/sh
# guest.sh - what a guest runs: load dmirror's module, run the scenario suite with the adapter for
# this kernel, print the results on the console, power off.
#
# It lives in the payload tests/vm/run hands the guest (a plain tar archive on a second disk):
#   payload/tests/scenarios/...      the suite
#   payload/tests/vm/guest.sh        this file
#   payload/modules/                 geom_dmirror.ko (FreeBSD), dm_target_mirror.ko (DragonFly),
#                                    dm_target_mirror.kmod (NetBSD)
#   payload/lib/geom_dmirror.so      geom(8)'s class library (FreeBSD)
#   payload/dmirror-payload          marker
#   payload/scenarios                the scenarios to run when no --scenarios is given (optional)
# A guest's rc (or the runner, typing at the console) unpacks it and runs this:
#   mkdir -p /tmp/dmirror-vm && cd /tmp/dmirror-vm && tar -xf /dev/vtbd1 && sh tests/vm/guest.sh
#
# Every line meant for the host starts with "DMIRROR" so the runner can pick it out of the
# console's noise: "DMIRROR-BEGIN ...", "DMIRROR: <run.sh line>", "DMIRROR-ERROR what is wrong",
# "DMIRROR-END <status>". Nothing is downloaded; a missing piece is named and the run fails.
#
# Options: --adapter NAME (default by kernel: freebsd, dm), --scenarios "A B" (default: all),
# --no-poweroff, --no-load (the module is loaded already).

case $0 in */*) here=${0%/*} ;; *) here=. ;; esac
root=$(cd "$here/../.." && pwd) || exit 1
adapter=
scenarios=
poweroff=1
load=1
while [ $# -gt 0 ]; do
	case $1 in
	--adapter) adapter=$2; shift 2 ;;
	--scenarios) scenarios=$2; shift 2 ;;
	--no-poweroff) poweroff=0; shift ;;
	--no-load) load=0; shift ;;
	*) echo "DMIRROR-ERROR guest.sh: unknown argument $1"; exit 2 ;;
	esac
done

os=$(uname -s 2>/dev/null)
# A FreeBSD derivative may name itself otherwise (kern.ostype; "Irid" for one FreeBSD 15 fork):
# GEOM's control device makes it a FreeBSD kernel for what this script and the adapter need.
case $os in
FreeBSD | DragonFly | NetBSD) ;;
*) [ -c /dev/geom.ctl ] && os=FreeBSD ;;
esac
status=1

finish() {
	echo "DMIRROR-END $status"
	if [ $poweroff = 1 ]; then
		sync
		case $os in
		FreeBSD | DragonFly | NetBSD) shutdown -p now >/dev/null 2>&1 || poweroff ;;
		*) poweroff -f 2>/dev/null || poweroff ;;
		esac
	fi
	exit $status
}

error() {
	echo "DMIRROR-ERROR $*"
	finish
}

echo "DMIRROR-BEGIN os=$os payload=$root"
[ -f "$root/dmirror-payload" ] || error "no payload marker in $root: was the archive unpacked here?"
[ -f "$root/tests/scenarios/run.sh" ] || error "the payload holds no tests/scenarios/run.sh"
# Without --scenarios (an image's rc runs this with no arguments): the payload's list, if any.
if [ -z "$scenarios" ] && [ -f "$root/scenarios" ]; then
	scenarios=$(cat "$root/scenarios")
fi

# Load the module the kernel needs, from the payload (a module already loaded is fine).
case $os in
FreeBSD)
	: "${adapter:=freebsd}"
	if [ $load = 1 ]; then
		ko=$root/modules/geom_dmirror.ko
		if ! kldstat -q -n geom_dmirror 2>/dev/null; then
			[ -f "$ko" ] || error "missing module: modules/geom_dmirror.ko is not in the payload"
			kldload "$ko" || error "kldload $ko failed"
		fi
		kldstat -q -n geom_nop 2>/dev/null || kldload geom_nop 2>/dev/null
	fi
	if [ -f "$root/lib/geom_dmirror.so" ]; then
		GEOM_LIBRARY_PATH=$root/lib:${GEOM_LIBRARY_PATH:-/lib/geom}
		export GEOM_LIBRARY_PATH
	fi
	;;
DragonFly)
	: "${adapter:=dm}"
	if [ $load = 1 ]; then
		kldload dm >/dev/null 2>&1
		ko=$root/modules/dm_target_mirror.ko
		[ -f "$ko" ] || error "missing module: modules/dm_target_mirror.ko is not in the payload"
		kldload "$ko" || error "kldload $ko failed"
	fi
	;;
NetBSD)
	: "${adapter:=dm}"
	if [ $load = 1 ]; then
		modload dm >/dev/null 2>&1
		ko=$root/modules/dm_target_mirror.kmod
		[ -f "$ko" ] || error "missing module: modules/dm_target_mirror.kmod is not in the payload"
		modload "$ko" || error "modload $ko failed"
	fi
	;;
*)
	[ -n "$adapter" ] || error "unknown kernel '$os': name an adapter with --adapter"
	;;
esac

# Work space: the legs are files; put them on a tmpfs if /tmp cannot take them.
SC_TMP=${SC_TMP:-/tmp}
if ! (: >"$SC_TMP/.dmirror-probe") 2>/dev/null; then
	SC_TMP=$root/work
	mkdir -p "$SC_TMP"
	mount -t tmpfs tmpfs "$SC_TMP" 2>/dev/null || true
	(: >"$SC_TMP/.dmirror-probe") 2>/dev/null || error "no writable place for the legs (tried /tmp and $SC_TMP)"
fi
rm -f "$SC_TMP/.dmirror-probe"
export SC_TMP

echo "DMIRROR-BEGIN adapter=$adapter"
out=$SC_TMP/dmirror-results.$$
# shellcheck disable=SC2086 # the scenario list is a word list
sh "$root/tests/scenarios/run.sh" "$adapter" $scenarios >"$out" 2>&1
status=$?
sed 's/^/DMIRROR: /' "$out"
rm -f "$out"
finish
