#!/bin/bash
# Build a vTorque test guest from Debian packages only, cached by package versions.
#
#   tools/build-test-images.sh tiny      kernel + busybox initramfs, dropbear (+ dbclient), qemu-ga, jq (~4 s boot, TCG)
#   tools/build-test-images.sh debian    debootstrap rootfs with cloud-init (NoCloud), sshd, python3, qemu-ga
#
# Prints the image directory: vmlinux, initrd.img, disk.qcow2, cmdline, image.json
# (docs/test-guests.md). The cache key hashes the exact Debian package versions and this
# script's files, so a second run with the same key only prints the directory. Root only.
set -euo pipefail

KIND=${1:?usage: build-test-images.sh tiny|debian}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VTORQUE_TEST_IMAGES:-/var/cache/vtorque-test/images}
DEBS=$(dirname "$CACHE")/debs
KERNEL_MODULES="virtio_pci virtio_console virtio_net virtio_blk virtio-rng 9pnet_virtio 9p virtiofs isofs ext4 crc32c_generic button evdev"

log() { printf 'build-test-images: %s\n' "$*" >&2; }

# "name=version" of each package's candidate, from one apt-cache call (a call per package costs
# most of a cached run); the package lists are refreshed once if one is unknown.
pinned_versions() {
  local out
  out=$(candidates "$@")
  if [ "$(printf '%s\n' "$out" | grep -c .)" != $# ]; then apt-get update -qq; out=$(candidates "$@"); fi
  [ "$(printf '%s\n' "$out" | grep -c .)" = $# ] || { log "no Debian package among: $*"; exit 1; }
  printf '%s\n' "$out"
}

candidates() {
  apt-cache policy "$@" 2>/dev/null |
    awk '/^[^ ].*:$/ {name = substr($0, 1, length($0) - 1)} /^  Candidate:/ && $2 != "(none)" {print name "=" $2}'
}

kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
}

cache_key() {  # $1 = the pinned package list; the hash also covers every build file
  { printf '%s\n' "$1"; cat "$HERE/build-test-images.sh" "$HERE"/guest/*; } | sha256sum | cut -c1-16
}

download() {  # apt-get download into the shared deb cache, once per exact version
  mkdir -p "$DEBS"
  local spec
  for spec in "$@"; do
    local name=${spec%%=*} version=${spec#*=}
    ls "$DEBS/${name}_${version//:/%3a}_"*.deb >/dev/null 2>&1 && continue
    (cd "$DEBS" && apt-get download -q "$spec" 2>&1 | grep -v -e unsandboxed -e '^Get:' >&2 || true)
    ls "$DEBS/${name}_${version//:/%3a}_"*.deb >/dev/null 2>&1 || { log "download of $spec failed"; exit 1; }
  done
}

deb_file() { local name=${1%%=*} version=${1#*=}; ls "$DEBS/${name}_${version//:/%3a}_"*.deb; }

# Uncompressed ELF vmlinux from the bzImage: QEMU boots it by its PVH note, twice as fast under TCG.
extract_vmlinux() {
  python3 - "$1" "$2" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
open(sys.argv[2], "wb").write(lzma.LZMADecompressor().decompress(data[start:]))
PY
}

copy_with_libraries() {  # copy_with_libraries ROOT LIBDIR binary...: binaries + their shared libraries
  local root=$1 libdir=$2 bin lib; shift 2
  for bin in "$@"; do cp "$bin" "$root/usr/sbin/"; done
  for bin in "$@"; do
    LD_LIBRARY_PATH=$libdir ldd "$bin" | awk '/=> \// {print $3} $1 ~ /^\/lib64/ {print $1}'
  done | sort -u | while read -r lib; do
    case $lib in */ld-linux*) cp -L "$lib" "$root/lib64/" ;; *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;; esac
  done
}

scratch_disk() {  # a small ext4 data disk, so every test image has a base disk to overlay
  local work=$1 out=$2
  mkdir -p "$work/scratch"
  echo "vTorque test guest scratch disk" > "$work/scratch/README"
  truncate -s 64M "$work/scratch.raw"
  mke2fs -q -t ext4 -L scratch -d "$work/scratch" "$work/scratch.raw"
  qemu-img convert -q -f raw -O qcow2 "$work/scratch.raw" "$out"
}

write_image_json() {  # DIR KIND KEY SECONDS PACKAGES...
  local dir=$1 kind=$2 key=$3 seconds=$4; shift 4
  python3 - "$dir/image.json" "$kind" "$key" "$seconds" "$@" <<'PY'
import json, sys, time
path, kind, key, seconds, *packages = sys.argv[1:]
doc = {"kind": kind, "key": key, "build_seconds": int(seconds),
       "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "packages": dict(p.split("=", 1) for p in packages)}
open(path, "w").write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
PY
}

build_tiny() {  # OUT PACKAGES...
  local out=$1; shift
  local work=$out/.work x root kpkg kver spec
  x=$work/x root=$work/root
  mkdir -p "$x"
  for spec in "$@"; do dpkg-deb -x "$(deb_file "$spec")" "$x"; done
  kpkg=$(printf '%s\n' "$@" | awk -F= '/^linux-image-/ {print $1}')
  kver=${kpkg#linux-image-}
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/dropbear,proc,sys,dev,tmp,run,var/log,root,home,lib64,lib/x86_64-linux-gnu,lib/modules/$kver}
  ln -s /run "$root/var/run"
  cp "$x/bin/busybox" "$root/bin/busybox"
  extract_vmlinux "$x/boot/vmlinuz-$kver" "$out/vmlinux"
  "$x/bin/busybox" depmod -b "$x" "$kver"
  local m f
  for m in $KERNEL_MODULES; do
    grep -E "/$m\.ko:" "$x/lib/modules/$kver/modules.dep" | tr -d ':' | tr ' ' '\n'
  done | sort -u | while read -r f; do
    [ -n "$f" ] || continue
    mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
    cp "$x/lib/modules/$kver/$f" "$root/lib/modules/$kver/$f"
  done
  "$x/bin/busybox" depmod -b "$root" "$kver"
  copy_with_libraries "$root" "$x/usr/lib/x86_64-linux-gnu" \
    "$x/usr/sbin/dropbear" "$x/usr/bin/dropbearconvert" "$x/usr/bin/dbclient" "$x/usr/sbin/qemu-ga" "$x/usr/bin/jq"
  mv "$root/usr/sbin/jq" "$root/usr/sbin/dropbearconvert" "$root/usr/sbin/dbclient" "$root/usr/bin/"
  install -m 0755 "$HERE/guest/init" "$root/init"
  install -m 0755 "$HERE/guest/apply-seed" "$HERE/guest/shutdown" "$HERE/guest/vtorque-reidentify" "$root/sbin/"
  install -m 0755 "$HERE/guest/groupadd" "$root/usr/sbin/groupadd"
  install -m 0755 "$HERE/guest/udhcpc.sh" "$root/etc/udhcpc.sh"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\n' > "$root/etc/group"
  printf '/bin/sh\n' > "$root/etc/shells"
  (cd "$root" && find . | "$x/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$out/initrd.img")
  scratch_disk "$work" "$out/disk.qcow2"
  echo "console=ttyS0 quiet panic=-1" > "$out/cmdline"
  rm -rf "$work"
}

DEBIAN_INCLUDE=(systemd-sysv udev cloud-init python3-cffi-backend openssh-server python3 qemu-guest-agent
  iproute2 linux-image-amd64 initramfs-tools netbase sudo dbus)

debian_packages() {  # the packages named to debootstrap (it resolves their dependencies itself)
  local kpkg
  kpkg=$(kernel_package)
  pinned_versions "${DEBIAN_INCLUDE[@]}" "$kpkg"
}

# The tuned recipe of docs/test-guests.md ("The debian guest"): NoCloud only, the cloud-init modules vTorque's seeds use,
# units and drivers that cost seconds under TCG masked, a small initramfs, dbus for ACPI shutdown.
build_debian() {  # OUT PACKAGES...
  local out=$1 root=$1/.work/rootfs mirror kver
  mkdir -p "$out/.work"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mkdir -p "$DEBS/debootstrap" "$root"
  debootstrap --cache-dir="$DEBS/debootstrap" --variant=minbase \
    --include="$(IFS=,; echo "${DEBIAN_INCLUDE[*]}")" bookworm "$root" "${mirror:-http://deb.debian.org/debian}" \
    > "$out/.work/debootstrap.log" 2>&1 || { tail -20 "$out/.work/debootstrap.log" >&2; exit 1; }
  rm -f "$root"/etc/ssh/ssh_host_*
  echo localhost > "$root/etc/hostname"
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
  : > "$root/etc/machine-id"; rm -f "$root/var/lib/dbus/machine-id"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' > "$root/etc/fstab"
  chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
  cat > "$root/etc/cloud/cloud.cfg.d/90_vtorque_test_guest.cfg" <<'CFG'
# vTorque test guest: NoCloud only, and the modules vTorque's seeds use.
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
manage_etc_hosts: true
cloud_init_modules: [seed_random, bootcmd, write-files, set_hostname, update_hostname, update_etc_hosts, users-groups, ssh]
cloud_config_modules: [mounts, runcmd]
cloud_final_modules: [scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user, final-message, power-state-change]
CFG
  sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
  printf '%s\n' virtio_pci virtio_blk virtio_net ext4 crc32c_generic isofs >> "$root/etc/initramfs-tools/modules"
  chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-pstore.service \
    cloud-init-hotplugd.socket systemd-networkd-wait-online.service >/dev/null 2>&1
  printf 'blacklist %s\n' floppy pcspkr kvm kvm_amd kvm_intel ccp psmouse serio_raw joydev \
    drm bochs cirrus_qemu qxl virtio_gpu cfg80211 rfkill > "$root/etc/modprobe.d/vtorque-test-guest.conf"
  chroot "$root" update-initramfs -u -k all >/dev/null 2>&1
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  kver=$(basename "$root"/boot/vmlinuz-* | sed 's/^vmlinuz-//')
  cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
  extract_vmlinux "$root/boot/vmlinuz-$kver" "$out/vmlinux"
  mkfs.ext4 -q -L rootfs -E lazy_itable_init=0,lazy_journal_init=0 -d "$root" "$out/.work/root.raw" 4G
  qemu-img convert -q -f raw -O qcow2 "$out/.work/root.raw" "$out/disk.qcow2"
  echo "root=/dev/vda rw console=ttyS0" > "$out/cmdline"
  rm -rf "$out/.work"
}

main() {
  [ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
  local packages kpkg key dir tmp start
  case $KIND in
    tiny)
      kpkg=$(kernel_package)
      [ -n "$kpkg" ] || { apt-get update -qq; kpkg=$(kernel_package); }
      packages=$(pinned_versions "$kpkg" busybox-static dropbear-bin libtomcrypt1 libtommath1 \
        qemu-guest-agent liburing2 jq libjq1 libonig5) ;;
    debian) packages=$(debian_packages) ;;
    *) log "unknown kind $KIND (tiny or debian)"; exit 2 ;;
  esac
  key=$(cache_key "$packages")
  dir=$CACHE/$KIND-$key
  if [ -f "$dir/image.json" ]; then echo "$dir"; return; fi
  start=$SECONDS
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.$KIND-$key.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # shellcheck disable=SC2086
  [ "$KIND" != tiny ] || download $packages   # debootstrap fetches the debian image's own debs
  log "building $KIND image $key"
  # shellcheck disable=SC2086
  "build_$KIND" "$tmp" $packages
  # shellcheck disable=SC2086
  write_image_json "$tmp" "$KIND" "$key" $((SECONDS - start)) $packages
  chmod 0755 "$tmp"
  mv -T "$tmp" "$dir"
  trap - EXIT
  for old in "$CACHE/$KIND"-*; do [ "$old" = "$dir" ] || rm -rf "$old"; done   # superseded builds
  log "$KIND image built in $((SECONDS - start)) s"
  echo "$dir"
}

main
