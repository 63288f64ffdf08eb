"""What a run shows its user: terminal lines, the HTML report and its charts, repro bundles."""
