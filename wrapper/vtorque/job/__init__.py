"""One job on a node: its plan, port claims, keys, records, spool dir and state tree."""
