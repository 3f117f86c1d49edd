"""A module the C API tests serve from a router's module_path."""
from sporet_pkg import helpers
from sporet_pkg.sub import deep


def add(a, b):
    return a + b


def describe():
    return {"helpers": helpers.NAME, "deep": deep.value(), "file": __file__}


def blob(n):
    return b"\x00\xff" * (n // 2)


def fail():
    raise helpers.Refused("no, not that")


def chatty(n):
    import logging
    log = logging.getLogger("sporet")
    for i in range(n):
        print("line %d" % i)
        log.warning("record %d", i)
    return n
