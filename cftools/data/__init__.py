"""Data sources: the built-in demo sets (features and images) and image folders."""
