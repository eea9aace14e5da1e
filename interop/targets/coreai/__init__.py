"""The coreai target: one folder holding its export/convert, execute, bench, inspect, metadata and options."""
