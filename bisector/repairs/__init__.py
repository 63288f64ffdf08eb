"""Scripted repair of many models: the manifest, one model at a time or on a fleet, the summary."""
