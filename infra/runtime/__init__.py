"""The runtime every process has: settings read once, logging, metrics, tracing, the health side door, CPUs.

The bottom layer: it imports nothing else of the project, so anything may import it.
"""
