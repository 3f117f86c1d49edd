"""A package served to workers: submodules and relative imports."""
