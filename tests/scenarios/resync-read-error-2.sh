#!/bin/sh
# Story (gmirror's read error during synchronization, two legs): a one-leg mirror gets a second
# leg, but the only source fails every read. The rebuild cannot finish and the new leg must not
# be declared in sync (it holds no copy); the source, the last copy there is, is not failed. Once
# the source works again and the new leg is given back, it is synchronized.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 9

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of one leg" ad_label 0 || t_bail "label failed"
t_ok "write 2 MiB at 0 and 256 KiB at 8 MiB, flush, let the log go clean" \
	sh_all ad_write 0 2048 81 -- ad_write 8192 256 82 -- ad_flush -- ad_settle
ad_fail 0
ad_insert 1
t_diag "insert of leg 1 with leg 0 failing returned $?"
t_not "the rebuild does not complete while its only source fails" ad_wait_sync 5
t_not "leg 1 is not in sync" sc_state_is 1 insync
t_ok "leg 0, the last copy, is not failed" sc_state_is 0 insync
ad_heal 0
t_ok "once leg 0 works again, leg 1 is given back" sh_all ad_remove 1 -- ad_insert 1
t_ok "leg 1 comes in sync" sh_all ad_wait_sync -- sc_state_is 1 insync
t_ok "legs 0 and 1 are identical" ad_compare 0 1
ad_fail 0
t_ok "with leg 0 failing, leg 1 serves the data" sh_all sc_verify 0 2048 81 -- sc_verify 8192 256 82
sc_end
