"""The running process: the bus that wires the stages together, the systemd service."""
