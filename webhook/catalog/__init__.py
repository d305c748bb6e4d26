"""Loading and checking what platform teams write: PatternTemplate entries (the built-ins ship here) and the policy file.

Builds the core's data types from YAML, with file and line for every problem; imports only the core.
"""
