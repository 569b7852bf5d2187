#!/bin/sh
# Story: a leg whose every read fails is failed, and reads are served from the other leg without
# an error reaching the reader. The failed leg is not trusted again without a resync: once its
# device works again, and even after it disappears and reappears (a retaste), it is not taken back
# by itself; given back, it is rebuilt in full (a change made to it while it was failed is
# overwritten), and ends identical.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 11

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of two legs, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
t_ok "write 512 KiB at 0 and 512 KiB at 4 MiB, flush" sh_all ad_write 0 512 41 -- ad_write 4096 512 42 -- ad_flush
# Send reads to leg 1 first where the adapter can; round-robin reaches it otherwise.
ad_policy prefer 1 || ad_policy round-robin
ad_fail 1
t_ok "reads succeed while leg 1 fails every I/O" \
	sh_all sc_verify 0 512 41 -- sc_verify 4096 512 42 -- sc_verify 0 512 41 -- sc_verify 4096 512 42
t_ok "leg 1 is failed" sc_state_is 1 failed
t_ok "leg 0 is in sync" sc_state_is 0 insync
t_ok "a write while leg 1 is failed" sh_all ad_write 8192 128 43 -- ad_flush
ad_heal 1
ad_leg_poke 1 4096 512 49
t_ok "leg 1 stays failed once its device works again, until given back" sc_state_is 1 failed
ad_vanish 1
ad_return 1
not_back() { ! sc_state_is 1 insync && ! sc_state_is 1 rebuilding; }
t_ok "leg 1 is not taken back when its device disappears and reappears" not_back
t_ok "give leg 1 back" ad_insert 1
t_ok "leg 1 comes in sync" sh_all ad_wait_sync -- sc_state_is 1 insync
t_ok "leg 1 was rebuilt in full: identical to leg 0" ad_compare 0 1
sc_end
