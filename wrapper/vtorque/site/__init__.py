"""The site: its config (vtorque.yml) and its image catalog."""
