"""Plain data about what is measured: the model spec, schedules, curves, the module tree, kinds."""
