"""Ansible's host_pinned strategy, with every ssh and local connection run
through spore (docs/ansible.md). Enable with strategy_plugins set to this
directory (`python3 -m spore.ansible` prints it) and strategy = spore_host_pinned."""
import os
import sys

try:
    import spore.ansible.strategy as _spore
except ImportError:  # this file used from a source or build tree
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..")))
    import spore.ansible.strategy as _spore

from ansible.plugins.strategy.host_pinned import StrategyModule as _Base

DOCUMENTATION = """
    name: spore_host_pinned
    short_description: Ansible's host_pinned strategy, run through spore
    description:
        - Runs tasks as the host_pinned strategy does, with ssh and local connections
          held open by spore and modules run in a warm Python worker per
          (host, account).
"""


class StrategyModule(_spore.StrategyMixin, _Base):
    pass
