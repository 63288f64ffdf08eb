"""Repair one model: fixers propose, probes re-measure, outputs are compared; what is kept."""
