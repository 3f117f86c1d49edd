#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.spore_custom import answer


def main():
    module = AnsibleModule(argument_spec={})
    module.exit_json(changed=False, answer=answer())


if __name__ == "__main__":
    main()
