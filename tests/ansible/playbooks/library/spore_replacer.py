#!/usr/bin/python
# A Module Replacer module: the line below becomes
# "from ansible.module_utils.basic import *".
#<<INCLUDE_ANSIBLE_MODULE_COMMON>>


def main():
    module = AnsibleModule(argument_spec=dict(value=dict(type="str")))  # noqa: F821
    module.exit_json(changed=False, echo=module.params["value"])


main()
