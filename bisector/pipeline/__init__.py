"""One model from what the user gave to a verdict and its patches: prepare, find, fix, apply."""
