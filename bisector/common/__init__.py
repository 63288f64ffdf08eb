"""Leaves every layer uses: errors, units, signals, source text, the marks on folders bisector made."""
