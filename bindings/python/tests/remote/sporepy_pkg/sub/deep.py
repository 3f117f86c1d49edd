from ..tools import NAME
from . import __name__ as parent


def describe():
    return "%s in %s" % (NAME, parent)
