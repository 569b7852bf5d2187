#!/bin/sh
# Story (gmirror's read error during synchronization, three legs): a third leg is inserted while
# one of the two sources fails every I/O. The failing source is failed, the rebuild goes on from
# the other one and completes, and the new leg is identical to the good source.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 8

sc_mklegs 3 || t_bail "cannot make legs"
t_ok "label a mirror of legs 0 and 1, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
t_ok "write 2 MiB at 0 and 256 KiB at 8 MiB, flush" sh_all ad_write 0 2048 91 -- ad_write 8192 256 92 -- ad_flush
ad_fail 0
t_ok "insert leg 2 while leg 0 fails every I/O" ad_insert 2
t_ok "the rebuild completes" ad_wait_sync 60
t_ok "leg 2 is in sync, leg 1 in sync" sh_all sc_state_is 2 insync -- sc_state_is 1 insync
t_ok "the data reads back" sh_all sc_verify 0 2048 91 -- sc_verify 8192 256 92
# A host may give the failed leg's slot to the new leg; then leg 0 is out of the mirror.
failed_or_out() { sc_state_is 0 failed || sc_state_is 0 empty; }
t_ok "leg 0 is failed (or out of the mirror, its slot reused)" failed_or_out
t_ok "leg 2 is identical to leg 1" ad_compare 1 2
sc_end
