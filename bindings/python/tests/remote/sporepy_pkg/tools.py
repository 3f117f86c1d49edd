NAME = "tools"


class Refused(Exception):
    """A custom exception whose class name travels back."""
