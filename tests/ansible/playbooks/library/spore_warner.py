#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(value=dict(type="str")))
    module.warn("spore warning %s" % module.params["value"])
    module.deprecate("spore deprecation", version="9.9")
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
