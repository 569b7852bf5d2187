#!/bin/sh
# Story: split brain. The mirror runs on leg 0 alone (leg 1 absent) and is written; then on leg 1
# alone (leg 0 absent) and is written. Each leg now holds writes the other lacks, and each holds
# the other out of date. Assembling both must be refused, and the refusal must write nothing to
# either leg.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 9

sc_mklegs 2 || t_bail "cannot make legs"
t_ok "label a mirror of two legs, in sync" sh_all ad_label 0 1 -- ad_wait_sync || t_bail "label failed"
t_ok "write, stop" sh_all ad_write 0 256 121 -- ad_stop
t_ok "start with leg 0 alone, write, stop" sh_all ad_start 0 -- ad_write 1024 256 122 -- ad_stop
t_ok "start with leg 1 alone, write, stop" sh_all ad_start 1 -- ad_write 2048 256 123 -- ad_stop
whole() { dd if="$(sc_leg_file "$1")" bs=65536 2>/dev/null | sc_digest; }
d0=$(whole 0)
d1=$(whole 1)
t_not "assembling both legs is refused" ad_start 0 1
t_eq "leg 0 is unchanged, metadata included" "$(whole 0)" "$d0"
t_eq "leg 1 is unchanged, metadata included" "$(whole 1)" "$d1"
# A refused assembly may have left something running on some hosts: make sure it is down.
ad_stop >/dev/null 2>&1
t_ok "leg 0 alone still assembles and holds its writes" \
	sh_all ad_start 0 -- sc_verify 0 256 121 -- sc_verify 1024 256 122 -- ad_stop
t_ok "leg 1 alone still assembles and holds its writes" \
	sh_all ad_start 1 -- sc_verify 0 256 121 -- sc_verify 2048 256 123 -- ad_stop
sc_end
