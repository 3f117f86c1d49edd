"""Run as a script by test_remote.py: a function of __main__ runs remotely,
and this guard keeps the remote import from running the script again."""
import sys

import spore


def triple(x):
    return 3 * x


if __name__ == "__main__":
    with spore.Router() as router:
        ctx = router.local()
        print(ctx.call(triple, int(sys.argv[1])))
