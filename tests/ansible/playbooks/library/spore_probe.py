#!/usr/bin/python
# Reports the process state a module starts with.
import os
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(env=dict(type="list", elements="str", default=[])))
    mask = os.umask(0o022)
    os.umask(mask)
    module.exit_json(changed=False, cwd=os.getcwd(), umask="%04o" % mask, argv=len(sys.argv),
                     messy=os.environ.get("SPORE_MESSY"), home=os.environ.get("HOME"),
                     bogus_path="/nonexistent/spore" in sys.path,
                     env={k: os.environ.get(k) for k in module.params["env"]})


if __name__ == "__main__":
    main()
