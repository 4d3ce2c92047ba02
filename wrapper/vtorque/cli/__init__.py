"""Entry points only: vtorque (main), vtorque-hook (hook) and the vtorque subcommands."""
