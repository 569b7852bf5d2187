#!/bin/sh
# Story: a leg inserted into a running one-leg mirror is synchronized: it ends in sync, holds the
# same data as the first leg, and carries the mirror alone once the first leg fails.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 9

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of one leg" ad_label 0 || t_bail "label failed"
size=$(ad_size_kib)
last=$((size - 128))
t_ok "write 1 MiB at 1 MiB and 128 KiB at the end" sh_all ad_write 1024 1024 11 -- ad_write "$last" 128 12 -- ad_flush
t_ok "insert leg 1" ad_insert 1
t_ok "leg 1 comes in sync" ad_wait_sync
t_ok "leg 1 is in sync" sc_state_is 1 insync
t_ok "leg 1 holds the data at the same offsets" sh_all sc_leg_has 1 1024 1024 11 -- sc_leg_has 1 "$last" 128 12
t_ok "legs 0 and 1 are identical" ad_compare 0 1
ad_fail 0
t_ok "with leg 0 failing, the data reads back from leg 1" sh_all sc_verify 1024 1024 11 -- sc_verify "$last" 128 12
t_ok "leg 0 is failed, leg 1 still in sync" sh_all sc_state_is 0 failed -- sc_state_is 1 insync
sc_end
