"""The algorithms, usable without the command line: one subpackage per concept."""
