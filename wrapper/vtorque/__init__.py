"""vTorque: Torque batch jobs inside per-job virtual machines."""

__version__ = "0.1.0"
