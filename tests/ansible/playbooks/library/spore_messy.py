#!/usr/bin/python
# Changes what a module may change in its process, and leaves an atexit
# handler: none of it may reach the next module.
import atexit
import os
import sys

from ansible.module_utils.basic import AnsibleModule


def at_exit(path):
    with open(path, "w") as f:
        f.write("atexit ran\n")


def main():
    module = AnsibleModule(argument_spec=dict(marker=dict(type="path", required=True)))
    os.environ["SPORE_MESSY"] = "1"
    os.environ.pop("HOME", None)
    os.chdir("/")
    os.umask(0o000)
    sys.argv.append("extra")
    sys.path.insert(0, "/nonexistent/spore")
    atexit.register(at_exit, module.params["marker"])
    module.exit_json(changed=True)


if __name__ == "__main__":
    main()
