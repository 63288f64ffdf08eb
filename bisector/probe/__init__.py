"""Probes: measurements that run in isolated child processes."""
