"""Observing the bus: logs, metrics, traces, health, the live view and the HTTP listener.

Each module here reads a narrow view of what it shows; none imports the bus.
"""
