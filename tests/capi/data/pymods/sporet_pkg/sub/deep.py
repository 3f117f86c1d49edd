from ..helpers import NAME
from . import __name__ as parent


def value():
    return "%s via %s" % (NAME, parent)
