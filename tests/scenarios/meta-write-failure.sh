#!/bin/sh
# Story: a leg's device breaks without any data I/O noticing, and then the mirror's membership
# changes (leg 1 is removed): the metadata update cannot be written to the broken leg. That leg
# must be failed, the mirror must go on with the others, and after a restart with the device
# healed the leg is not trusted: it is rebuilt in full (a change made to it while it was out is
# overwritten) and ends identical.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 11

sc_mklegs 3 || t_bail "cannot make legs"
t_ok "label a mirror of three legs, in sync" sh_all ad_label 0 1 2 -- ad_wait_sync || t_bail "label failed"
t_ok "write 1 MiB at 1 MiB and flush" sh_all ad_write 1024 1024 31 -- ad_flush
ad_fail 2
t_ok "remove leg 1 while leg 2's device is broken" ad_remove 1
t_ok "write 256 KiB at 8 MiB" sh_all ad_write 8192 256 32 -- ad_flush
t_ok "leg 2 is failed, leg 0 in sync, leg 1 empty" \
	sh_all sc_state_is 2 failed -- sc_state_is 0 insync -- sc_state_is 1 empty
t_ok "the data reads back" sh_all sc_verify 1024 1024 31 -- sc_verify 8192 256 32
t_ok "stop" ad_stop
ad_heal 2
# While leg 2 is out, something scribbles on it where the first area lives.
ad_leg_poke 2 1024 256 39
t_ok "start with legs 0 and 2" ad_start 0 2
t_ok "leg 2 comes in sync" sh_all ad_wait_sync -- sc_state_is 2 insync
t_ok "leg 2 was rebuilt in full: identical to leg 0" ad_compare 0 2
ad_fail 0
t_ok "with leg 0 failing, leg 2 serves all the data" sh_all sc_verify 1024 1024 31 -- sc_verify 8192 256 32
sc_end
