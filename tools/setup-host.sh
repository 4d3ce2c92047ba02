#!/bin/bash
# Prepare a Debian 12 host (root, no systemd as PID 1) for vTorque development and tests:
# Debian packages, libvirt configured for this machine kind, virtlogd + libvirtd running,
# and munged, which the throw-away Slurm clusters of tests/slurm authenticate with.
#
#   tools/setup-host.sh          install + configure + start daemons that are not running
#   tools/setup-host.sh stop     stop only the daemons an earlier run of this script started
#
# Idempotent: a second run installs nothing, edits nothing and starts nothing.
set -euo pipefail

STATE_DIR=/run/vtorque-dev
STARTED=$STATE_DIR/started-daemons
QEMU_CONF=/etc/libvirt/qemu.conf

PACKAGES=(
  qemu-system-x86 qemu-utils              # hypervisor (TCG here, KVM in production) and qemu-img
  libvirt-daemon-system libvirt-clients   # libvirtd, virtlogd, virsh, the qemu.conf and users
  libvirt-dev pkg-config gcc              # build libvirt-python in the venv
  python3-venv python3-dev                # the venv uses Debian's Python: job owners must run it
  python3-pip-whl                         # pip wheel that .ci/sanity.sh's get-pip stand-in runs
  dnsmasq-base iproute2                   # libvirt networks; namespaces and bridges in tests
  openssh-server openssh-client           # guests are reached over SSH with pinned host keys
  genisoimage                             # NoCloud seed images (cidata ISO)
  debootstrap e2fsprogs                   # the `debian` test guest
  cloud-init                              # `cloud-init schema` validates every seed vTorque writes
  busybox-static cpio                     # the `tiny` test guest (its own tools come as debs)
  slurmctld slurmd slurm-client munge     # real Slurm for tests/slurm (daemons started per test)
)

log() { printf 'setup-host: %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "packages: all present"; return; fi
  log "packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure_libvirt() {
  # No udev here: /dev/kvm stays root 0600 and libvirt re-probes QEMU (~44 s) on every start
  # unless QEMU runs as root. Production sites use KVM with the packaged defaults instead.
  if ! grep -q '^user = "root"' "$QEMU_CONF"; then
    log "libvirt: QEMU runs as root ($QEMU_CONF)"
    printf '\n# vtorque dev host: see tools/setup-host.sh\nuser = "root"\ngroup = "root"\n' >> "$QEMU_CONF"
    RESTART_LIBVIRTD=1
  fi
}

# munged keeps its pid file in its own dir (it runs as munge and cannot write /run itself).
pidfile() { case $1 in munged) echo /run/munge/munged.pid ;; *) echo "/var/run/$1.pid" ;; esac; }

running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

launch() {
  case $1 in
    munged)
      install -d -o munge -g munge -m 0755 /run/munge
      runuser -u munge -- /usr/sbin/munged ;;  # daemonizes once its socket is ready
    libvirtd)
      # reaped the moment they exit, as on a node (see tools/subreaper): a destroy then costs
      # what it costs on a node, not up to 2 s more
      mkdir -p /var/run/libvirt
      setsid "$(dirname "$0")/subreaper" libvirtd -d </dev/null >/dev/null 2>&1 & ;;
    *)
      mkdir -p /var/run/libvirt
      "$1" -d ;;
  esac
}

start_daemon() {
  local name=$1
  if running "$name"; then
    [ "$name" = libvirtd ] && [ "${RESTART_LIBVIRTD:-0}" = 1 ] || { log "$name: already running"; return; }
    log "$name: restarting for the new configuration"
    kill "$(cat "$(pidfile "$name")")"; while running "$name"; do sleep 0.1; done
  fi
  mkdir -p "$STATE_DIR"
  launch "$name"
  grep -qx "$name" "$STARTED" 2>/dev/null || echo "$name" >> "$STARTED"
  log "$name: started"
}

wait_for_libvirt() {
  for _ in $(seq 100); do
    virsh -c qemu:///system version >/dev/null 2>&1 && return
    sleep 0.1
  done
  log "libvirtd did not answer on qemu:///system within 10 s"; exit 1
}

stop_started() {
  [ -f "$STARTED" ] || { log "nothing was started by this script"; return; }
  tac "$STARTED" | while read -r name; do
    if running "$name"; then kill "$(cat "$(pidfile "$name")")"; log "$name: stopped"; fi
  done
  rm -f "$STARTED"
}

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
case "${1:-start}" in
  start)
    install_packages
    configure_libvirt
    start_daemon virtlogd
    start_daemon libvirtd
    wait_for_libvirt
    start_daemon munged
    log "ready on qemu:///system: $(virsh -c qemu:///system version | awk -F': ' '/Using library|Running hypervisor/{printf "%s%s", sep, $2; sep=", "}')"
    ;;
  stop) stop_started ;;
  *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
