"""Fix one model: fixers propose, probes re-measure, outputs are compared; what is kept (the fix
engine, engine.py). `bisector repair` runs it over many models (bisector/repairs/)."""
