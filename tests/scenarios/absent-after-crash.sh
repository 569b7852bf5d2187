#!/bin/sh
# Story (gmirror's "modified while absent after a dirty shutdown"): the mirror crashes, comes back
# without leg 1 and is modified, crashes again, and comes back with both legs. Leg 1 is resynced
# to be identical to leg 0, and holds every write made while it was away.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 10

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of two legs, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
t_ok "write 512 KiB at 0 and flush" sh_all ad_write 0 512 21 -- ad_flush
t_ok "crash" ad_crash
t_ok "assemble with leg 0 alone" ad_start 0
t_ok "leg 1 is missing" sc_state_is 1 missing
t_ok "write while leg 1 is away: 256 KiB at 6 MiB, 128 KiB over the first area" \
	sh_all ad_write 6144 256 22 -- ad_write 128 128 23 -- ad_flush
t_ok "crash again, assemble with both legs" sh_all ad_crash -- ad_start 0 1
t_ok "leg 1 comes in sync" sh_all ad_wait_sync -- sc_state_is 1 insync
t_ok "legs 0 and 1 are identical" ad_compare 0 1
ad_fail 0
t_ok "with leg 0 failing, leg 1 serves what was written while it was away" \
	sh_all sc_verify 6144 256 22 -- sc_verify 128 128 23 -- sc_verify 0 128 21
sc_end
