#!/bin/sh
# Story: legs fail at different times (leg 0 first, then leg 1), each write after a failure
# reaching fewer legs; the mirror crashes; the devices are healed and all three come back. The
# leg with the newest metadata (leg 2, the last one standing) is the source of truth: every write
# reads back and the stale legs are rebuilt from it.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 11

sc_mklegs 3 || t_bail "cannot make legs"
t_ok "label a mirror of three legs, in sync" sh_all ad_label 0 1 2 -- ad_wait_sync || t_bail "label failed"
t_ok "write A (64 KiB at 0, 448 KiB after it)" sh_all ad_write 0 64 71 -- ad_write 64 448 75 -- ad_flush
ad_fail 0
t_ok "leg 0 breaks; write B (512 KiB at 2 MiB)" sh_all ad_write 2048 512 72 -- ad_flush
t_ok "leg 0 is failed" sc_state_is 0 failed
ad_fail 1
t_ok "leg 1 breaks; write C (512 KiB at 4 MiB) and over A's first 64 KiB" \
	sh_all ad_write 4096 512 73 -- ad_write 0 64 74 -- ad_flush
t_ok "leg 1 is failed, leg 2 in sync" sh_all sc_state_is 1 failed -- sc_state_is 2 insync
t_ok "crash" ad_crash
ad_heal 0
ad_heal 1
t_ok "assemble with all three legs" ad_start 0 1 2
t_ok "every leg comes in sync" sh_all ad_wait_sync -- sc_state_is 0 insync -- sc_state_is 1 insync -- sc_state_is 2 insync
t_ok "every write reads back" \
	sh_all sc_verify 0 64 74 -- sc_verify 2048 512 72 -- sc_verify 4096 512 73 -- sc_verify 64 448 75
t_ok "the stale legs were rebuilt from leg 2" sh_all ad_compare 2 0 -- ad_compare 2 1
sc_end
