#!/bin/sh
# Story: legs of different sizes make a mirror as big as the smallest leg (less its metadata).
# The last bytes of the mirror can be written and read back, writes past the end are refused,
# and every leg holds the same data at the same offsets.
case $0 in */*) SC_DIR=${SC_DIR:-${0%/*}} ;; *) SC_DIR=${SC_DIR:-.} ;; esac
. "$SC_DIR/lib.sh"
sc_begin 9

sh_all ad_mkleg 0 16384 -- ad_mkleg 1 20480 -- ad_mkleg 2 24576 || t_bail "cannot make legs"
# The largest leg is the source, so nothing depends on leg 0 coming first.
t_ok "label a mirror over legs of 24, 16 and 20 MiB" ad_label 2 0 1 || t_bail "label failed"
size=$(ad_size_kib)
t_diag "mirror size: $size KiB"
size_ok() {
	[ -n "$size" ] && [ "$size" -le 16384 ] && [ "$size" -ge $((16384 - 2048)) ]
}
t_ok "the mirror is the size of the smallest leg, less at most 2 MiB of metadata" size_ok
last=$((size - 64))
t_ok "the last 64 KiB of the mirror can be written" ad_write "$last" 64 7
t_ok "the first 64 KiB too" ad_write 0 64 8
t_not "a write past the end is refused" ad_write "$size" 64 9
t_ok "the legs come in sync" ad_wait_sync
t_ok "the last 64 KiB read back" sc_verify "$last" 64 7
t_ok "the smallest leg holds them at the same offset" sc_leg_has 0 "$last" 64 7
both_equal() { ad_compare 2 0 && ad_compare 2 1; }
t_ok "all three legs hold the same data over the mirror's size" both_equal
sc_end
