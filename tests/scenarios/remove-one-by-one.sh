#!/bin/sh
# Story: data survives taking legs out of a three-leg mirror one by one; the last leg cannot be
# removed; and the one leg left carries the mirror on its own after a restart.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 12

sc_mklegs 3 || t_bail "cannot make legs"
t_ok "label a mirror of three legs" ad_label 0 1 2 || t_bail "label failed"
t_ok "write two areas and flush" sh_all ad_write 0 512 1 -- ad_write 4096 1024 2 -- ad_flush
t_ok "the legs come in sync" ad_wait_sync
t_ok "remove leg 0" ad_remove 0
t_ok "leg 0's slot is empty" sc_state_is 0 empty
t_ok "the data reads back from legs 1 and 2" sh_all sc_verify 0 512 1 -- sc_verify 4096 1024 2
t_ok "remove leg 1" ad_remove 1
t_ok "the data reads back from leg 2 alone" sh_all sc_verify 0 512 1 -- sc_verify 4096 1024 2
t_not "removing the last leg is refused" ad_remove 2
t_ok "the data still reads back" sh_all sc_verify 0 512 1 -- sc_verify 4096 1024 2
t_ok "stop, and start again with every device present" sh_all ad_stop -- ad_start 0 1 2
two_empty() { sc_state_is 2 insync && sc_state_is 0 empty && sc_state_is 1 empty; }
t_ok "leg 2 alone is in the mirror, and the data reads back" sh_all two_empty -- \
	sc_verify 0 512 1 -- sc_verify 4096 1024 2
sc_end
