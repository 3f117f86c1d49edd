"""Reading the AnsiballZ wrapper Ansible builds for a new-style module.

Ansible's own module building (`_configure_module`) runs unchanged, so the
module, its module_utils (custom and collections' included), Module
Replacer substitution and the interpreter are exactly vanilla's. For a
new-style Python module the result is a wrapper script with the zip and
the parameters inside; this takes them out again so the warm worker can
run the module without starting an interpreter.
"""
import ast
import base64
import hashlib
import io
import os
import re
import zipfile
from typing import NamedTuple, Optional

_MARK = b"_ANSIBALLZ_WRAPPER = True"
_ZIPDATA = re.compile(rb'ZIPDATA = """([A-Za-z0-9+/=\s]*)"""')
_PARAMS = re.compile(rb"^    ANSIBALLZ_PARAMS = (.*)$", re.M)
_FQN = re.compile(rb"runpy\.run_module\(mod_name='([A-Za-z0-9_.]+)', init_globals=dict\(")
_NAME = re.compile(rb"prefix='ansible_([A-Za-z0-9_.]+)_payload_'")
_RLIMIT = re.compile(rb"requested_soft = min\(existing_hard, (\d+)\)")
_SHEBANG = re.compile(rb"^#!\s*(.*)$", re.M)


class Payload(NamedTuple):
    """A new-style module as the wrapper carried it."""
    zip_data: bytes
    digest: str
    fqn: str
    name: str
    params: str
    interpreter: str
    rlimit_nofile: int
    coverage: bool


def parse(data: Optional[bytes]) -> Optional[Payload]:
    """The module in an AnsiballZ wrapper, or None when `data` is not one
    this version of the parser understands (the caller then runs it as a
    script, as vanilla would)."""
    if not data or _MARK not in data[:4096]:
        return None
    zip_match = _ZIPDATA.search(data)
    params_match = _PARAMS.search(data)
    fqn_match = _FQN.search(data)
    name_match = _NAME.search(data)
    shebang = _SHEBANG.match(data)
    if not (zip_match and params_match and fqn_match and name_match and shebang):
        return None
    try:
        params = ast.literal_eval(params_match.group(1).decode("utf-8"))
        zip_data = base64.b64decode(zip_match.group(1))
    except (ValueError, SyntaxError, UnicodeDecodeError):
        return None
    if not isinstance(params, str):
        return None
    rlimit = 0
    if b"resource.setrlimit" in data:
        found = _RLIMIT.search(data)
        if not found:
            return None
        rlimit = int(found.group(1))
    return Payload(
        zip_data=zip_data,
        digest=hashlib.sha256(zip_data).hexdigest(),
        fqn=fqn_match.group(1).decode("ascii"),
        name=name_match.group(1).decode("ascii"),
        params=params,
        interpreter=shebang.group(1).decode("utf-8", "replace").strip(),
        rlimit_nofile=rlimit,
        coverage=b"COVERAGE_FILE" in data or b"import coverage" in data,
    )


def custom_module_utils(zip_data: bytes) -> list:
    """The files under ansible/module_utils in the payload that this
    controller's Ansible does not have: custom module_utils, which run in
    a fork so they never stay loaded in the shared worker."""
    import ansible
    root = os.path.dirname(os.path.dirname(os.path.abspath(ansible.__file__)))
    with zipfile.ZipFile(io.BytesIO(zip_data)) as zf:
        names = zf.namelist()
    return [n for n in names if n.startswith("ansible/module_utils/") and n.endswith(".py")
            and not os.path.exists(os.path.join(root, n))]
