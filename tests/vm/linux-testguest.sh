#!/bin/sh
# linux-testguest.sh OUTDIR - build a tiny Linux guest for the runner's own self-test.
#
# There are no BSD guest images here, so this stands in for one: this machine's kernel (from a
# Debian linux-image package) and an initramfs holding busybox-static and the virtio modules.
# Its init gives the serial console a "login:" prompt and then a root shell with a "# " prompt,
# as a BSD VM image does, so `tests/vm/run --os linux --kernel OUTDIR/vmlinuz --initrd
# OUTDIR/initrd.img --machine pc` exercises the runner: qemu's direct kernel boot, the payload
# disk, the console login, guest.sh (with the fake adapter) and the report.
# It proves nothing about any BSD kernel. Needs: busybox-static, cpio, a kernel in /boot.
set -eu
out=${1:?usage: linux-testguest.sh OUTDIR}
kver=${KVER:-$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sed -n 's|^/boot/vmlinuz-||p' | sort | tail -n 1)}
if [ -z "$kver" ] || [ ! -f "/boot/vmlinuz-$kver" ]; then
	echo "linux-testguest: no kernel in /boot (apt-get install linux-image-cloud-amd64)" >&2
	exit 2
fi
bb=$(command -v busybox) || { echo "linux-testguest: no busybox (apt-get install busybox-static)" >&2; exit 2; }
case $(file -b "$bb" 2>/dev/null || echo static) in *dynamic*) echo "linux-testguest: $bb is not static (apt-get install busybox-static)" >&2; exit 2 ;; esac
command -v cpio >/dev/null || { echo "linux-testguest: no cpio" >&2; exit 2; }
mods=/lib/modules/$kver
root=$out/root
rm -rf "$root"
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/lib/modules" "$root/etc"
cp "$bb" "$root/bin/busybox"
for t in sh ash mount insmod sleep setsid cat cp mv rm mkdir dd sed head tail expr md5sum tar poweroff sync printf mknod ls; do
	ln -s busybox "$root/bin/$t"
done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_mmio virtio_blk; do
	f=$(sed -n "s|^\\(kernel/.*/$m\\.ko[^:]*\\):.*|\\1|p" "$mods/modules.dep" | head -n 1)
	if [ -n "$f" ]; then cp "$mods/$f" "$root/lib/modules/"; fi
done
cat >"$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_mmio virtio_blk; do
	for f in /lib/modules/$m.ko*; do [ -f "$f" ] && insmod "$f" 2>/dev/null; done
done
sleep 1
while :; do
	printf 'login: '
	read -r user || sleep 1
	[ "$user" = root ] && break
done
export PS1='# ' HOME=/tmp
exec sh -i
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null) | gzip -1 >"$out/initrd.img"
cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$out/vmlinuz $out/initrd.img"
