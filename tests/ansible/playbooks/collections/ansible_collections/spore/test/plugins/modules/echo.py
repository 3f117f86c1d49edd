#!/usr/bin/python
# A collection's module using the collection's own module_utils.
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.spore.test.plugins.module_utils.shout import shout


def main():
    module = AnsibleModule(argument_spec=dict(value=dict(type="str", required=True)))
    module.exit_json(changed=False, echo=shout(module.params["value"]))


if __name__ == "__main__":
    main()
