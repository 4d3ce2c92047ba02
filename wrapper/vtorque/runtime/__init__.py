"""What runs for a job: the hooks as root (prologue, epilogue, sweep), the owner's cancel and job."""
