"""python3 -m spore.ansible: prints the strategy plugin directory, or with
--config the ansible.cfg lines, or with --env the environment variables,
that enable spore for Ansible."""
import sys

from . import strategy_plugin_path

USAGE = """usage: python3 -m spore.ansible [--config | --env]
  (no option)  the directory for Ansible's strategy_plugins setting
  --config     the [defaults] lines of an ansible.cfg that enable spore
  --env        shell lines that enable spore through ANSIBLE_* variables
"""


def main(argv) -> int:
    path = strategy_plugin_path()
    if len(argv) == 1:
        print(path)
    elif argv[1:] == ["--config"]:
        print("[defaults]\nstrategy_plugins = %s\nstrategy = spore_linear" % path)
    elif argv[1:] == ["--env"]:
        print("export ANSIBLE_STRATEGY_PLUGINS=%s\nexport ANSIBLE_STRATEGY=spore_linear" % path)
    elif argv[1:] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
    else:
        sys.stderr.write(USAGE)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
