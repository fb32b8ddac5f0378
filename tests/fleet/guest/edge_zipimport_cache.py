"""Bytecode cache for modules imported from zip archives: fleet test guests only.

Ansible sends every task to its host as a fresh zip of the module and the
module_utils it needs (AnsiballZ), and Python's zipimport never caches bytecode, so
each task compiles about 600 KB of Python again. On an emulated (TCG) guest that is
about one second of every task. This module, imported at interpreter start by a .pth
file that tests/fleet/build-rootfs.sh installs, keeps each compiled source in
/var/cache/edge-zipimport, keyed by the interpreter's bytecode magic and the SHA-256
of the source bytes, and gives a cached code object the file name it is imported
under now. The same source gives the same code object, so what runs is unchanged;
an unreadable or unwritable cache falls back to compiling. The image build fills the
cache from the pinned ansible-core (tests/fleet/build-rootfs.sh), because the guests
boot with -snapshot and would otherwise start cold on every boot.
"""

import hashlib
import importlib.util
import marshal
import os
import types
import zipimport

CACHE_DIR = "/var/cache/edge-zipimport"
_compile_source = zipimport._compile_source


def _renamed(code, filename):
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) else c
        for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def cached_compile(pathname, source):
    """zipimport._compile_source with a cache: (pathname, source bytes) -> code."""
    digest = hashlib.sha256(importlib.util.MAGIC_NUMBER + source).hexdigest()
    path = os.path.join(CACHE_DIR, digest)
    try:
        with open(path, "rb") as f:
            code = marshal.load(f)
        if isinstance(code, types.CodeType):
            return _renamed(code, pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)
    if code is not None:
        try:
            os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
            tmp = "%s.%d" % (path, os.getpid())
            with open(tmp, "wb") as f:
                marshal.dump(code, f)
            os.replace(tmp, path)
        except OSError:
            pass
    return code


zipimport._compile_source = cached_compile
