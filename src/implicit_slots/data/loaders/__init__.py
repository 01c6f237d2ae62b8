"""Loaders of real datasets from local folders (never downloaded); each module registers its names."""
