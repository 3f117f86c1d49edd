from .. import helpers  # noqa: F401 (relative import from a subpackage)
