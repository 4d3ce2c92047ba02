"""What vsub and vsbatch share: the bare-metal hand-over to the real submit command, the VM
request, and the race-free queueing of a VM job.

Queueing is one flow for every batch system: the job is submitted held (its id is unknown
before), the spool directory `<spool_dir>/<jobid>/` is published under that id, request.json
written, then the job released; if anything fails after the submission the job is deleted
again and its spool directory removed, so nothing half-made stays queued. Each batch system
brings its commands and how to read its submit command's output (`BatchSystem`).

Imported on the bare-metal path too: everything heavy is imported inside the functions.
"""

import os
import sys
from collections import namedtuple

# The `-vm` keys as both commands' --help lists them (vtorque.request.grammar.KEYS).
VM_KEYS_HELP = """\
  img=NAME            catalog image (`vtorque images list`); a path only if the site allows it
  distro=D            debian, ubuntu, redhat, centos, osv (must match the image)
  ram=SIZE            RAM per VM: MiB, or with K/M/G/T (binary), e.g. 15G
  vcpus=N             vCPUs per VM
  vms_per_node=N      VMs on each node
  arch=x86_64         guest architecture
  vcpu_pinning=BOOL   pin vCPUs (NUMA auto-placement)
  disk=SIZE           scratch disk for the rank-0 VM, mounted at /data
  fs_type=T           sharedfs or ramdisk
  vm_prologue=FILE    executable run in the rank-0 VM before the job script
  vm_epilogue=FILE    executable run in the rank-0 VM after the job script
  metadata=FILE       extra cloud-config (YAML mapping) for the guests
  iocm=BOOL  iocm_min_cores=N  iocm_max_cores=N   dedicated host cores for I/O and emulator threads
  hugepages=BOOL      guest memory on the node's huge pages
  unclot=BOOL  unclot_shmem=SIZE   a shared-memory region (ivshmem) for the job's VMs on a node
  vrdma=BOOL          a PCI device (RDMA, accelerator) of the node's pool for each VM (VFIO)
  fragments=A[+B...]  the site's own device fragments (vtorque config show)
BOOL is true/false, yes/no, on/off, enabled/disabled (0 and 1 are refused: ambiguous).
"""

BatchSystem = namedtuple(
    "BatchSystem", "tool submit_name release_name delete_name submit_argv script_args submitted check_job_id"
)
BatchSystem.__doc__ = """One batch system's side of `queue_job`. `tool` prefixes messages (vsub);
`*_name` name the commands in them (qsub, qrls, qdel); `submit_argv` is the held submission
before the wrapper's path, `script_args` follow it; `submitted(stdout)` reads the submit
command's output into a `Submitted` (it must not raise: a bad id is `check_job_id`'s to refuse,
after which the job is deleted again)."""

Submitted = namedtuple("Submitted", "job_id release delete output")
Submitted.__doc__ = """A held job: its id as printed, the argv that releases it (None keeps the
user's own hold), the argv that deletes it, and the bytes shown on stdout once it is queued."""


def command_path(command, name, section, source):
    """`<section>.<name>` of the site config (an absolute path, as the config requires),
    checked to be runnable, so a broken install says which key to fix."""
    from vtorque.errors import SubmitError
    from vtorque.site.config_file import command_problem

    problem = command_problem(command)
    if problem:
        raise SubmitError(f"{name} command {command!r} ({section}.{name} in {source}): {problem}")
    return command


def exec_bare_metal(program, argv, stdin_data, *, dry_run, key, tool):
    """Replace `tool` (vsub) by the real `program` with `argv`, so output and exit code are
    the batch system's own; a script already read from stdin is handed over on a memfd.
    With `dry_run`, print the call as JSON ({key: argv, "request": null}) instead."""
    if dry_run:
        import json

        print(json.dumps({key: [program, *argv], "request": None}))
        return 0
    if stdin_data is not None:
        fd = os.memfd_create(f"{tool}-stdin")
        remaining = memoryview(stdin_data)
        while remaining:
            remaining = remaining[os.write(fd, remaining) :]
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
    sys.stdout.flush()
    os.execv(program, [program, *argv])  # noqa: S606 - argv list, no shell


def resolve_vm_request(config, values):
    """(asked options, resolved request) of the `-vm`/`--vm` `values` [(text, source)], the
    command line's last so it wins; refused on a host the site disabled vTorque on."""
    import re
    import socket

    from vtorque.errors import SubmitError
    from vtorque.request.grammar import parse_vm_values
    from vtorque.request.resolve import resolve_request

    host = socket.gethostname()
    if config.policy.disabled_hosts and re.fullmatch(config.policy.disabled_hosts, host):
        raise SubmitError(f"vTorque is disabled on this host ({host} matches policy.disabled_hosts)")
    options = parse_vm_values(values)
    return options, resolve_request(options, config, owner_uid=os.getuid(), cwd=os.getcwd())


def queue_job(config, *, content, wrapper_name, wrapper_body, request, asked, batch):
    """Submit the wrapper held, publish `<spool_dir>/<jobid>/` (job.sh = `content`, wrapper/,
    request.json), then release; returns the exit code for the user. A failed submission
    leaves nothing and passes its exit code on; a failure after it deletes the job again."""
    from vtorque.job import spool

    staging, wrapper = stage_job(config, content, wrapper_name, wrapper_body)
    argv, done = _submit_staged(staging, batch, wrapper)
    if done.returncode != 0:
        spool.remove(staging)
        sys.stdout.buffer.write(done.stdout)
        failed = f"{batch.submit_name} failed with exit code {done.returncode}"
        print(f"{batch.tool}: {failed}; nothing was submitted", file=sys.stderr)
        return done.returncode
    held = batch.submitted(done.stdout)
    publish_and_release(config, staging, batch, held, request=request, asked=asked, argv=argv)
    sys.stdout.buffer.write(held.output)
    return 0


def stage_job(config, content, wrapper_name, wrapper_body):
    """A staging directory in the spool with job.sh = `content` and wrapper/`wrapper_name`;
    (staging dir, the wrapper's path). Nothing is left when this fails."""
    from vtorque.errors import SubmitError
    from vtorque.job import spool

    staging = spool.create_staging(config.spool_dir)
    try:
        spool.write_new_file(os.path.join(staging, "job.sh"), content, 0o700)
        os.mkdir(os.path.join(staging, "wrapper"))
        os.chmod(os.path.join(staging, "wrapper"), 0o755)  # noqa: S103 - whatever the user's umask
        wrapper = os.path.join(staging, "wrapper", wrapper_name)
        spool.write_new_file(wrapper, wrapper_body, 0o755)
        return staging, wrapper
    except OSError as err:
        spool.remove(staging)
        raise SubmitError(f"cannot prepare the job in {staging}: {err}") from None
    except BaseException:
        spool.remove(staging)
        raise


def _submit_staged(staging, batch, wrapper):
    """Run the held submission of `wrapper`: (argv as run, completed process). A failure to
    run it removes `staging`."""
    import subprocess

    from vtorque.errors import SubmitError
    from vtorque.job import spool

    argv = [*batch.submit_argv, wrapper, *batch.script_args]
    try:
        return argv, subprocess.run(argv, stdout=subprocess.PIPE, check=False)
    except OSError as err:
        spool.remove(staging)
        raise SubmitError(f"cannot run {argv[0]}: {err.strerror}") from None
    except BaseException:
        spool.remove(staging)
        raise


def publish_and_release(config, staging, batch, held, *, request, asked, argv):
    """Rename `staging` to the job id, write request.json, release the job; on any failure
    delete the job (the user sees why) and remove its spool directory."""
    import subprocess

    from vtorque.errors import SubmitError
    from vtorque.job import spool
    from vtorque.request.document import request_document

    job_id, job_dir = held.job_id, staging
    try:
        job_dir = spool.publish(staging, config.spool_dir, batch.check_job_id(job_id))
        spool.write_request(job_dir, request_document(request, asked, argv, job_id, os.getuid()))
        if held.release is not None:
            released = subprocess.run(held.release, capture_output=True, check=False)
            if released.returncode != 0:
                why = released.stderr.decode(errors="replace").strip()
                raise SubmitError(f"{batch.release_name} {job_id} failed (exit {released.returncode}): {why}")
    except (OSError, SubmitError) as err:
        subprocess.run(held.delete, stdout=subprocess.DEVNULL, check=False)
        spool.remove(job_dir)
        reason = err.strerror if isinstance(err, OSError) else str(err)
        removed = f"was queued but then removed again ({batch.delete_name})"
        raise SubmitError(f"job {job_id or '(unknown id)'} {removed}: {reason}") from None
