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
import json
import os
import re
import zipfile
from typing import List, Optional

_MARK = b"_ANSIBALLZ_WRAPPER = True"
_ZIP_START = b'ZIPDATA = """'
_PARAMS = re.compile(rb"^    ANSIBALLZ_PARAMS = (.*)$", re.M)
_FQN = re.compile(rb"runpy\.run_module\(mod_name='([A-Za-z0-9_.]+)', init_globals=dict\(")
_NAME = re.compile(rb"prefix='ansible_([A-Za-z0-9_.]+)_payload_'")
_RLIMIT = re.compile(rb"requested_soft = min\(existing_hard, (\d+)\)")
_SHEBANG = re.compile(rb"^#!\s*(.*)$", re.M)


class Payload:
    """A new-style module as the wrapper carried it. The zip is decoded
    only when asked for: its digest is that of its base64 text."""

    def __init__(self, zip_b64: bytes, fqn: str, name: str, params: str, interpreter: str, rlimit_nofile: int,
                 coverage: bool) -> None:
        self.zip_b64 = zip_b64
        self.digest = hashlib.sha256(zip_b64).hexdigest()
        self.fqn = fqn
        self.name = name
        self.params = params
        self.interpreter = interpreter
        self.rlimit_nofile = rlimit_nofile
        self.coverage = coverage
        self._zip: Optional[bytes] = None

    @property
    def zip_data(self) -> bytes:
        if self._zip is None:
            self._zip = base64.b64decode(self.zip_b64)
        return self._zip


def parse(data: Optional[bytes]) -> Optional[Payload]:
    """The module in an AnsiballZ wrapper, or None when `data` is not one
    this version of the parser understands (the caller then runs it as a
    script, as vanilla would)."""
    if not data or _MARK not in data[:4096]:
        return None
    start = data.find(_ZIP_START)
    end = data.find(b'"""', start + len(_ZIP_START)) if start >= 0 else -1
    if end < 0:
        return None
    zip_b64 = data[start + len(_ZIP_START):end]
    tail = data[end:]
    params_match = _PARAMS.search(tail)
    fqn_match = _FQN.search(tail)
    name_match = _NAME.search(tail)
    shebang = _SHEBANG.match(data)
    if not (params_match and fqn_match and name_match and shebang):
        return None
    try:
        params = ast.literal_eval(params_match.group(1).decode("utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError):
        return None
    if not isinstance(params, str):
        return None
    head = data[:start]
    rlimit = 0
    if b"resource.setrlimit" in head:
        found = _RLIMIT.search(head)
        if not found:
            return None
        rlimit = int(found.group(1))
    return Payload(
        zip_b64=zip_b64,
        fqn=fqn_match.group(1).decode("ascii"),
        name=name_match.group(1).decode("ascii"),
        params=params,
        interpreter=shebang.group(1).decode("utf-8", "replace").strip(),
        rlimit_nofile=rlimit,
        coverage=b"COVERAGE_FILE" in tail or b"import coverage" in tail,
    )


_CUSTOM: dict = {}


def custom_module_utils(payload: Payload, cache_dir: Optional[str] = None) -> List[str]:
    """The files under ansible/module_utils in the payload that this
    controller's Ansible does not have: custom module_utils, which run
    apart so they never stay loaded in the shared worker.

    Remembered per payload in this process and, with cache_dir (the run's
    private directory), for the run: each task is a new worker process,
    and reading the zip's directory is most of a small task's own cost."""
    found = _CUSTOM.get(payload.digest)
    if found is not None:
        return found
    cached = os.path.join(cache_dir, "module_utils-%s.json" % payload.digest) if cache_dir else None
    if cached:
        try:
            with open(cached, encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError):
            found = None
        if not (isinstance(found, list) and all(isinstance(n, str) for n in found)):
            found = None
    if found is None:
        import ansible
        root = os.path.dirname(os.path.dirname(os.path.abspath(ansible.__file__)))
        with zipfile.ZipFile(io.BytesIO(payload.zip_data)) as zf:
            names = zf.namelist()
        found = [n for n in names if n.startswith("ansible/module_utils/") and n.endswith(".py")
                 and not os.path.exists(os.path.join(root, n))]
        if cached:
            _write_new(cached, json.dumps(found).encode("utf-8"))
    _CUSTOM[payload.digest] = found
    return found


def _write_new(path: str, data: bytes) -> None:
    """Writes path whole or not at all (workers of one task race for it)."""
    temp = "%s.%d" % (path, os.getpid())
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
