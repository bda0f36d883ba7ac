"""A tiny service for the gate tests: one route both stacks serve the same, and a fault switch on modern."""
