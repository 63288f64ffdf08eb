"""The lab: measure one model in one stage against a control, run probes through the caches."""
