"""From measurements to judgements: verdicts, owners of growth, the search, ceilings, the fail-on policy."""
