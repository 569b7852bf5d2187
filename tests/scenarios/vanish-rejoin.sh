#!/bin/sh
# Story: a leg that merely vanishes (its device goes away, no I/O error) is missing, not failed;
# writes made while it is away are tracked, and when it returns only those regions are copied to
# it. The probe: while it is away, a region nobody writes is changed on the leg directly; an
# incremental rejoin leaves that change alone, a full resync would overwrite it.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 10

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of two legs, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
a=$(sc_region_off 4)
b=$(sc_region_off 40)
c=$(sc_region_off 80)
t_ok "write regions 4 and 40, flush, let the log go clean" \
	sh_all ad_write "$a" "$SC_REGION_KIB" 61 -- ad_write "$b" "$SC_REGION_KIB" 62 -- ad_flush -- ad_settle
t_ok "leg 1 vanishes" ad_vanish 1
t_ok "leg 1 is missing (not failed)" sc_state_is 1 missing
t_ok "write region 80 and over region 4 while it is away" \
	sh_all ad_write "$c" "$SC_REGION_KIB" 63 -- ad_write "$a" "$SC_REGION_KIB" 64 -- ad_flush
ad_leg_poke 1 "$b" "$SC_REGION_KIB" 69
t_ok "leg 1 returns" ad_return 1
t_ok "leg 1 comes in sync" sh_all ad_wait_sync -- sc_state_is 1 insync
t_ok "leg 1 got the writes made while it was away" \
	sh_all sc_leg_has 1 "$c" "$SC_REGION_KIB" 63 -- sc_leg_has 1 "$a" "$SC_REGION_KIB" 64
t_ok "only tracked regions were copied: region 40 on leg 1 is as it was left" \
	sc_leg_has 1 "$b" "$SC_REGION_KIB" 69
t_ok "leg 1 equals leg 0 outside region 40" \
	sh_all ad_compare 0 1 0 "$b" -- ad_compare 0 1 $((b + SC_REGION_KIB)) $(($(ad_size_kib) - b - SC_REGION_KIB))
sc_end
