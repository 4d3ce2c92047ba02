"""Into and out of a guest: seeds, SSH with pinned keys, readiness, the serial console."""
