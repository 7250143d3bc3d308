"""The ``ccbus`` command line, its console output, the plugin scaffold and the demo data."""
