"""A run's settings and their checks: the sectioned run config, aggregation names, the preflight
that runs before anything starts, validated names and owner-only files, masked secrets."""
