"""What the user configures: the pyproject table, BISECTOR_* variables, the installed runtime."""
