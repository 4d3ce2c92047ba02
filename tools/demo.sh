#!/bin/bash
# The demo: set up this machine (root, Debian 12) and run a small batch job inside a real VM
# with `vtorque run`, which plays Torque's pbs_mom on this one machine (docs/job-lifecycle.md).
# `tools/demo.sh --slurm` instead starts a real one-node Slurm (slurmctld + slurmd from
# Debian, loopback only) whose Prolog/Epilog call vtorque-hook, and submits with `vsbatch`.
# A throw-away site (config, catalog with the `tiny` test guest, spool) and a demo user are
# created for the run and removed afterwards; the job's VM is gone when the script ends.
set -euo pipefail
MODE=${1:-torque}
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO_USER=vtdemo

tools/setup-host.sh >/dev/null
tools/venv.sh test
IMAGE=$(tools/build-test-images.sh tiny)

SITE=$(mktemp -d /var/tmp/vtorque-demo.XXXXXX)
CREATED_USER=0
cleanup() {
  if [ "$MODE" = --slurm ]; then "$ROOT/.venv/bin/python" "$ROOT/tests/slurm/slurm_cluster.py" stop "$SITE/slurm" || true; fi
  rm -rf "$SITE"
  if [ "$CREATED_USER" = 1 ]; then userdel -r "$DEMO_USER" 2>/dev/null || true; fi
}
trap cleanup EXIT
chmod 0755 "$SITE"
mkdir -m 1777 "$SITE/spool"
if ! id "$DEMO_USER" >/dev/null 2>&1; then useradd -m -s /bin/sh "$DEMO_USER"; CREATED_USER=1; fi
HOME_DIR=$(getent passwd "$DEMO_USER" | cut -d: -f6)

cat > "$SITE/images.yml" <<EOF2
images:
  tiny:
    path: $IMAGE/disk.qcow2
    format: qcow2
    distro: debian
    kernel: $IMAGE/vmlinux
    initrd: $IMAGE/initrd.img
    cmdline: "$(cat "$IMAGE/cmdline")"
    description: busybox test guest built from Debian packages (tools/build-test-images.sh)
EOF2
cat > "$SITE/vtorque.yml" <<EOF2
spool_dir: $SITE/spool
state_dir: $SITE/state
images: $SITE/images.yml
defaults: {img: tiny, vcpus: 1, ram: 256M}
host_reserve: {cores: 1, ram_mib: 64M}
libvirt: {virt_type: qemu}       # TCG: this machine has no usable KVM
network: {mode: user}            # the guest is reached through a 127.0.0.1 port forward
EOF2

WORK=$HOME_DIR/vtorque-demo
install -d -o "$DEMO_USER" -g "$(id -gn "$DEMO_USER")" "$WORK"
install -o "$DEMO_USER" -m 0755 /dev/stdin "$WORK/hello.sh" <<'EOF2'
#!/bin/sh
#PBS -N hello-vm
echo "Hello from $(hostname), kernel $(uname -r), as $(id -un) (uid $(id -u))"
echo "job $PBS_JOBID in $(pwd); VM node file: $(tr '\n' ' ' < "$PBS_NODEFILE")"
echo "written inside the VM" > from-the-vm.txt
EOF2

cd "$WORK"
set +e
if [ "$MODE" = --slurm ]; then
  # Slurm: the site says so, every node holds the key secret, the hooks are shims as deployed.
  (umask 077; head -c 32 /dev/urandom > "$SITE/job-key.secret")
  printf 'scheduler: slurm\nslurm: {key_secret: %s}\n' "$SITE/job-key.secret" >> "$SITE/vtorque.yml"
  for event in slurm-prolog slurm-epilog; do
    printf '#!/bin/sh\nVTORQUE_CONFIG=%s exec %s %s\n' "$SITE/vtorque.yml" "$ROOT/.venv/bin/vtorque-hook" "$event" > "$SITE/$event"
    chmod 0755 "$SITE/$event"
  done
  "$ROOT/.venv/bin/python" "$ROOT/tests/slurm/slurm_cluster.py" start "$SITE/slurm" --nodes vm \
    --prolog "$SITE/slurm-prolog" --epilog "$SITE/slurm-epilog"
  sed -i 's/^#PBS -N hello-vm/#SBATCH -J hello-vm/; s/PBS_JOBID/SLURM_JOB_ID/; s/PBS_NODEFILE/VTORQUE_HOSTFILE/' hello.sh
  export SLURM_CONF=$SITE/slurm/slurm.conf
  JOB=$(setpriv --reuid="$DEMO_USER" --regid="$(id -g "$DEMO_USER")" --init-groups env HOME="$HOME_DIR" \
    VTORQUE_CONFIG="$SITE/vtorque.yml" "$ROOT/.venv/bin/vsbatch" --parsable -o hello.out --vm img=tiny,vcpus=1,ram=256M hello.sh)
  echo "demo: submitted Slurm job $JOB with vsbatch; waiting for it"
  while squeue -h -j "$JOB" 2>/dev/null | grep -q .; do sleep 1; done
  scontrol show job "$JOB" | grep -E -o "JobState=\S+|ExitCode=\S+" | tr '\n' ' '; echo
  echo "demo: the job's output (hello.out):"; cat "$WORK/hello.out"
  CODE=$(scontrol show job "$JOB" | grep -E -o "ExitCode=[0-9]+" | cut -d= -f2)
else
  VTORQUE_CONFIG=$SITE/vtorque.yml "$ROOT/.venv/bin/vtorque" run --user "$DEMO_USER" -vm img=tiny,vcpus=1,ram=256M hello.sh
  CODE=$?
fi
set -e
[ -f "$WORK/from-the-vm.txt" ] && echo "demo: $WORK/from-the-vm.txt says: $(cat "$WORK/from-the-vm.txt")"
echo "demo: the job exited with $CODE; VMs left: $(virsh -c qemu:///system list --all --name | grep -c '^vt-' || true)"
exit $CODE
