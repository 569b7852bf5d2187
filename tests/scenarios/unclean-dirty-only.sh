#!/bin/sh
# Story: after an unclean shutdown only the regions the write-intent log marked dirty are
# resynced. Region 10 was written long before the crash (its log bit cleared); region 3 was being
# written when the mirror crashed. While the mirror is down, both are changed on leg 1 directly
# (region 3 as if the last write never reached leg 1). After reassembly the legs agree on region
# 3 (old or new data, the write was never flushed), and region 10 on leg 1 is untouched: a full
# resync would have overwritten it.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 8

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of two legs, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
r3=$(sc_region_off 3)
r10=$(sc_region_off 10)
R=$SC_REGION_KIB
t_ok "write regions 10 and 3, flush, let the log go clean" \
	sh_all ad_write "$r10" "$R" 101 -- ad_write "$r3" "$R" 102 -- ad_flush -- ad_settle
t_ok "write region 3 again, and crash before any flush" sh_all ad_write "$r3" "$R" 103 -- ad_crash
ad_leg_poke 1 "$r3" "$R" 102
ad_leg_poke 1 "$r10" "$R" 109
t_ok "assemble both legs" ad_start 0 1
t_ok "both legs come in sync" ad_wait_sync
t_ok "the legs agree on the dirty region 3" ad_compare 0 1 "$r3" "$R"
either() { sc_verify "$r3" "$R" 103 || sc_verify "$r3" "$R" 102; }
t_ok "region 3 holds the old or the new data" either
t_ok "the clean region 10 was not resynced: leg 1 still holds what was put there" \
	sh_all sc_leg_has 1 "$r10" "$R" 109 -- sc_leg_has 0 "$r10" "$R" 101
sc_end
