"""Contract tests: property-based fuzzing of the services against their contracts."""
