"""Ways into autopeft from other tools (Ray Tune)."""
