"""spore for Ansible: playbooks run through spore contexts.

Set `strategy_plugins` to `strategy_plugin_path()` (printed by
`python3 -m spore.ansible`) and `strategy = spore_linear` (or spore_free,
spore_host_pinned). See docs/ansible.md.
"""
import os


def strategy_plugin_path() -> str:
    """The directory to give Ansible's strategy_plugins setting."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "strategy")
