"""A doas become plugin for ansible-core, which has none of its own (the
community.general collection has one). The spore strategies add this
directory to Ansible's become plugins, so `become_method: doas` works
with ansible-core alone; spore itself opens doas as a context and never
builds this command. Under another strategy it works as any become plugin:
`ANSIBLE_BECOME_PLUGINS` set to this directory."""
import re

from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.become import BecomeBase

DOCUMENTATION = """
    name: doas
    short_description: Do As user (OpenBSD's doas, Debian's opendoas)
    description:
        - Runs commands as another user with doas.
    options:
        become_user:
            description: The user to become
            default: root
            ini:
              - section: privilege_escalation
                key: become_user
            vars:
              - name: ansible_become_user
              - name: ansible_doas_user
            env:
              - name: ANSIBLE_BECOME_USER
              - name: ANSIBLE_DOAS_USER
            keyword:
              - name: become_user
        become_exe:
            description: The doas executable
            default: doas
            ini:
              - section: privilege_escalation
                key: become_exe
            vars:
              - name: ansible_become_exe
              - name: ansible_doas_exe
            env:
              - name: ANSIBLE_BECOME_EXE
              - name: ANSIBLE_DOAS_EXE
            keyword:
              - name: become_exe
        become_flags:
            description: Options for doas
            default: ''
            ini:
              - section: privilege_escalation
                key: become_flags
            vars:
              - name: ansible_become_flags
              - name: ansible_doas_flags
            env:
              - name: ANSIBLE_BECOME_FLAGS
              - name: ANSIBLE_DOAS_FLAGS
            keyword:
              - name: become_flags
        become_pass:
            description: The password doas asks for
            required: false
            vars:
              - name: ansible_become_password
              - name: ansible_become_pass
              - name: ansible_doas_pass
            env:
              - name: ANSIBLE_BECOME_PASS
              - name: ANSIBLE_DOAS_PASS
"""

# doas asks "doas (user@host) password: "; opendoas on Linux may say "Password:".
_PROMPT = re.compile(br"^\s*(doas \(\S+@\S+\) password:|Password:)", re.M)


class BecomeModule(BecomeBase):

    name = "doas"
    fail = ("Permission denied",)
    missing = ("Authorization required", "Authentication required")

    def check_password_prompt(self, b_output):
        return bool(_PROMPT.search(to_bytes(b_output)))

    def build_become_command(self, cmd, shell):
        super(BecomeModule, self).build_become_command(cmd, shell)
        if not cmd:
            return cmd
        self.prompt = True
        flags = (self.get_option("become_flags") or "").split()
        if not self.get_option("become_pass") and "-n" not in flags:
            flags.append("-n")
        user = self.get_option("become_user")
        words = [self.get_option("become_exe") or "doas"] + flags
        if user:
            words += ["-u", user]
        executable = getattr(shell, "executable", None) or "/bin/sh"
        return "%s %s -c %s" % (" ".join(words), executable, self._build_success_command(cmd, shell, noexe=True))
