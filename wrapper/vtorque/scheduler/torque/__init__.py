"""Torque 6.1: its adapter, config section, submit side (vsub) and the pbs_mom emulator."""
