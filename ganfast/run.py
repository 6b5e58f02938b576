"""``python -m ganfast.run SCRIPT [ARGS...]`` (or ``ganfast run SCRIPT [ARGS...]``): runs a script of a rosinality
-family code base with ``ganfast.patch_rosinality()`` installed first, with no edit to its files. The script runs
as ``__main__`` with ``sys.argv == [SCRIPT, *ARGS]`` and its folder first on ``sys.path``, as ``python SCRIPT``
would run it; its exit status and tracebacks (which point into its own files) are its own.
``-m MODULE [ARGS...]`` runs a module instead, as ``python -m MODULE`` would.
"""
from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m ganfast.run SCRIPT [ARGS...]   or   python -m ganfast.run -m MODULE [ARGS...]"


def run(target: str, args: list[str], module: bool = False) -> None:
    """Installs the rosinality patch, then runs ``target`` (a script path, or a module name when ``module``) as
    ``__main__`` with ``args``."""
    from .patch import patch_rosinality
    patch_rosinality()
    sys.argv = [target, *args]
    if module:
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    module = argv[:1] == ["-m"]
    target, args = (argv[1:2], argv[2:]) if module else (argv[:1], argv[1:])
    if not target:
        print(USAGE, file=sys.stderr)
        return 2
    if not module and not os.path.isfile(target[0]):
        print(f"ganfast run: error: no such script: {target[0]}", file=sys.stderr)
        return 2
    run(target[0], args, module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
