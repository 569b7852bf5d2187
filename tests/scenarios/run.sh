#!/bin/sh
# run.sh ADAPTER [SCENARIO...] - run scenarios through an adapter.
#
# ADAPTER is a name from adapters/ (fake, userland, freebsd, dm) or a path to an adapter file.
# SCENARIO is a scenario's name (sizes, split-brain...) or file; default: every *.sh here but
# lib.sh, run.sh and selfcheck.sh. Prints one line per scenario ("pass NAME", "pass NAME (K
# checks skipped)", "FAIL NAME (exit N)", "skip NAME: why") and ends with the line
# "N passed, M failed". Exit status 1 if any failed.
# A failed scenario's TAP output is printed, indented, under its line; SC_SHOW=1 prints all.
# SC_SHELL picks the shell that runs each scenario (default: sh).
usage() {
	echo "usage: run.sh ADAPTER [SCENARIO...]" >&2
	exit 2
}
[ $# -ge 1 ] || usage
case $0 in */*) SC_DIR=${0%/*} ;; *) SC_DIR=. ;; esac
SC_DIR=$(cd "$SC_DIR" && pwd) || exit 2
export SC_DIR
SC_ADAPTER=$1
shift
case $SC_ADAPTER in
*/*) [ -f "$SC_ADAPTER" ] || { echo "run.sh: no adapter file $SC_ADAPTER" >&2; exit 2; } ;;
*) [ -f "$SC_DIR/adapters/$SC_ADAPTER.sh" ] || { echo "run.sh: no adapter $SC_ADAPTER in $SC_DIR/adapters" >&2; exit 2; } ;;
esac
export SC_ADAPTER
if [ $# -eq 0 ]; then
	for f in "$SC_DIR"/*.sh; do
		case ${f##*/} in lib.sh | run.sh | selfcheck.sh) continue ;; esac
		set -- "$@" "$f"
	done
fi
passed=0
failed=0
skipped=0
out=${SC_TMP:-/tmp}/dmirror-run.$$
for s in "$@"; do
	case $s in
	*/*) f=$s ;;
	*.sh) f=$SC_DIR/$s ;;
	*) f=$SC_DIR/$s.sh ;;
	esac
	name=${f##*/}
	name=${name%.sh}
	if [ ! -f "$f" ]; then
		echo "FAIL $name: no such scenario ($f)"
		failed=$((failed + 1))
		continue
	fi
	${SC_SHELL:-sh} "$f" >"$out" 2>&1
	rc=$?
	# A scenario skipped whole prints "1..0 # SKIP why".
	first=$(head -n 1 "$out")
	case $first in
	"1..0 # SKIP"*)
		echo "skip $name: ${first#1..0 # SKIP }"
		skipped=$((skipped + 1))
		;;
	*)
		# Checks the adapter could not perform are named on the scenario's line.
		nskip=$(sed -n '/^ok [0-9]* - .* # SKIP/p' "$out" | sed -n '$=')
		if [ $rc -eq 0 ]; then
			if [ -n "$nskip" ]; then echo "pass $name ($nskip checks skipped)"; else echo "pass $name"; fi
			passed=$((passed + 1))
		else
			echo "FAIL $name (exit $rc)"
			failed=$((failed + 1))
		fi
		if [ $rc -ne 0 ] || [ "${SC_SHOW:-0}" = 1 ]; then
			sed 's/^/    /' "$out"
		fi
		;;
	esac
done
rm -f "$out"
[ $skipped -gt 0 ] && echo "# $skipped skipped"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
