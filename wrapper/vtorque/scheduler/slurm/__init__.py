"""Slurm behind vTorque's seam: vsbatch, the slurmd Prolog/Epilog hooks, drain, live jobs."""
