#!/bin/sh
# Story: whatever read policy is set (round-robin, load, prefer a leg, split large reads), the
# data read back is what was written and the legs stay identical. A policy an adapter cannot set
# is reported as skipped.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 22

sc_mklegs 3 || t_bail "cannot make legs"
t_ok "label a mirror of three legs" ad_label 0 1 2 || t_bail "label failed"
t_ok "write 1 MiB at 0, 192 KiB at 1 MiB + 4 KiB, 64 KiB at 5 MiB" \
	sh_all ad_write 0 1024 1 -- ad_write 1028 192 2 -- ad_write 5120 64 3
seed=10
for p in round-robin load "prefer 1" "prefer 2" split; do
	# shellcheck disable=SC2086 # the policy name and its argument are two words
	ad_policy $p
	rc=$?
	if [ $rc -eq 2 ]; then
		for c in 1 2 3 4; do t_skip "policy $p: check $c" "adapter cannot set it"; done
		continue
	fi
	t_eq "policy $p can be set" "$rc" 0
	t_ok "policy $p: the three areas read back, twice" \
		sh_all sc_verify 0 1024 1 -- sc_verify 1028 192 2 -- sc_verify 5120 64 3 -- \
		sc_verify 0 1024 1 -- sc_verify 1028 192 2 -- sc_verify 5120 64 3
	seed=$((seed + 1))
	t_ok "policy $p: a new write at 2 MiB reads back" sh_all ad_write 2048 256 $seed -- ad_flush -- \
		sc_verify 2048 256 $seed
	t_ok "policy $p: the legs are identical" sh_all ad_wait_sync -- ad_compare 0 1 -- ad_compare 0 2
done
sc_end
