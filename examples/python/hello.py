#!/usr/bin/python3
"""hello.py: the same small task as examples/go/hello and examples/ruby/hello.rb.

Opens a local context and a fork through it, prints sys.info of both, runs a
command, and shows the command's output arriving as forwarded log records in
`logging`. Then it runs one of its own functions in the fork: the fork's
Python worker imports this script's code from here.

    python3 examples/python/hello.py      (with python3-spore installed, or
                                          PYTHONPATH=build/python)
"""
import logging
import sys

import spore


def where_am_i(greeting):
    """Runs in the context: this module travels from the caller."""
    import os
    return "%s from pid %d, as uid %d" % (greeting, os.getpid(), os.getuid())


def say(text):
    # One write per line: the log thread prints to the same stdout.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(levelname)s %(name)s %(message)s")
    with spore.Router() as router:
        local = router.local(name="hello")
        child = router.fork(local)
        for ctx in (local, child):
            info = ctx.call("sys.info")
            say("%-12s pid %s, user %s, host %s" % (ctx.name, info["pid"], info["user"], info["hostname"]))

        # The output lines of a streamed command come back as log records.
        result = child.call("proc.run", argv=["sh", "-c", "echo hello from $(id -un); echo to stderr >&2"],
                            stream=True)
        say("command exit status: %s" % result["rc"])

        # Your own function, shipped on demand.
        say("own function: %s" % child.call(where_am_i, "hello"))

        # Each error code has its exception class under spore.Error.
        try:
            child.call("no.such.function")
        except spore.UnknownFunction as e:
            say("expected failure: %s (%s in %s)" % (e.code_name, e.function, e.context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
