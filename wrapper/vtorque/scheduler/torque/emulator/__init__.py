"""pbs_mom played on one machine (vtorque run, the tests), with a local queue."""
