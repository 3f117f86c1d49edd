NAME = "helpers"


class Refused(Exception):
    pass
