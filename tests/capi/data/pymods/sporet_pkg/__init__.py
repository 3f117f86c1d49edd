"""A package with submodules and relative imports, served by the C API tests."""
