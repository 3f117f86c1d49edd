from .tools import NAME

VALUE = "lazy+" + NAME
