"""One exception family for everything vTorque reports to a person.

Each error says what was wrong (key, value), what is accepted and where it came from
(command line, `#PBS` line N of a script, a config file and key), so the message alone
lets a user or admin fix the input.
"""


class VTorqueError(Exception):
    """Base of every error vTorque reports; `str(err)` is the complete message."""

    exit_code = 1


class ConfigError(VTorqueError):
    """The site config (or a file it names) is invalid; carries every problem found."""

    def __init__(self, path, problems):
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"invalid site config {self.path}:\n{lines}")


class RequestError(VTorqueError):
    """A `-vm` request (or the request file) has a bad key or value."""

    def __init__(self, message, *, key=None, value=None, accepted=None, source=None):
        self.key, self.value, self.accepted, self.source = key, value, accepted, source
        parts = []
        if source:
            parts.append(f"{source}: ")
        if key is not None:
            parts.append(f"-vm {key}")
            if value is not None:
                parts.append(f"={value}")
            parts.append(": ")
        parts.append(message)
        if accepted:
            parts.append(f" (accepted: {accepted})")
        super().__init__("".join(parts))


class QsubArgsError(VTorqueError):
    """The batch system's part of a submit command line cannot be parsed (Torque: qsub's)."""


class CatalogError(VTorqueError):
    """The image catalog is invalid, or an image is unknown or untrusted."""


class UntrustedFileError(VTorqueError):
    """A file root would act on is a link, has the wrong owner or mode, or is too big."""


class SubmitError(VTorqueError):
    """Submitting, holding, releasing or deleting failed, or the spool could not be written;
    nothing stays queued."""


class InfrastructureError(VTorqueError):
    """libvirt, a node or a guest failed: not the user's fault, the job should run elsewhere."""


class JobCancelled(VTorqueError):
    """The job was deleted (or its epilogue began) while its VMs were starting."""
