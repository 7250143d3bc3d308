"""Configuration: the config file, YAML that keeps its line numbers, schemas, durations."""
