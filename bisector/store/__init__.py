"""What bisector keeps on disk: probe caches, output folders, and cleaning them up."""
