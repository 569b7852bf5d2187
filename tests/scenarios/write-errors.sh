#!/bin/sh
# Story: a leg whose every write fails is failed; writes go on to the other leg and succeed. The
# failed leg is not trusted again without a resync, even across a restart: with its device
# working again, the next assembly rebuilds it in full (a change made to it while it was out is
# overwritten).
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 12

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of two legs, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
t_ok "write 512 KiB at 0" sh_all ad_write 0 512 51 -- ad_flush
ad_fail 1
t_ok "a write succeeds while leg 1 fails every I/O" sh_all ad_write 2048 512 52 -- ad_flush
t_ok "leg 1 is failed" sc_state_is 1 failed
t_ok "leg 0 is in sync" sc_state_is 0 insync
t_ok "the data reads back" sh_all sc_verify 0 512 51 -- sc_verify 2048 512 52
t_ok "stop" ad_stop
ad_heal 1
ad_leg_poke 1 0 512 59
t_ok "start with both legs" ad_start 0 1
not_trusted() { ! sc_state_is 1 insync || ad_compare 0 1; }
t_ok "leg 1 is not in sync right away, unless already rebuilt" not_trusted
t_ok "leg 1 comes in sync" sh_all ad_wait_sync -- sc_state_is 1 insync
t_ok "leg 1 was rebuilt in full: identical to leg 0" ad_compare 0 1
ad_fail 0
t_ok "with leg 0 failing, leg 1 serves all the data" sh_all sc_verify 0 512 51 -- sc_verify 2048 512 52
sc_end
