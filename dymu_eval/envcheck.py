"""The project's own environment against its lock file (constraints.txt).

``make install`` installs every package at the version the lock names, and then runs this
check: a package that moved, one that is missing, or one the lock does not know about means
the environment is not the one the test suite passed in, so it fails loudly instead of
letting a moved dependency break the suite later. ``make lock`` uses ``--write`` to record
a freshly resolved environment.

    python -m dymu_eval.envcheck constraints.txt --assets DIR     # check
    python -m dymu_eval.envcheck --write constraints.txt --assets DIR
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import re
import sys
from pathlib import Path

PROJECT = "dymu-eval"  # installed editable from the work tree: never pinned


def normalize(name: str) -> str:
    """PEP 503 name, so 'PyYAML', 'pyyaml' and 'py_yaml' compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file (comments and blank lines skipped)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not match:
            raise ValueError(f"{path}:{number}: expected 'name==version', got {raw!r}")
        pins[normalize(match[1])] = match[2]
    return pins


def installed(paths: list[str] | None = None) -> dict[str, str]:
    """name -> version of the distributions on ``paths`` (default: the import path), first wins."""
    found: dict[str, str] = {}
    for dist in md.distributions(**({"path": paths} if paths is not None else {})):
        name = dist.metadata["Name"]
        if name and normalize(name) not in found:
            found[normalize(name)] = dist.version
    found.pop(PROJECT, None)
    return found


def differences(pins: dict[str, str], env: dict[str, str], assets: dict[str, str]) -> list[str]:
    """Every way the environment (plus the asset wheels) differs from the lock, one line each."""
    present = {**env, **assets}
    problems = []
    for name, version in sorted(pins.items()):
        if name not in present:
            problems.append(f"{name}=={version} is in the lock but not installed")
        elif present[name] != version:
            problems.append(f"{name} is {present[name]}, the lock says {version}")
    problems += [f"{name}=={present[name]} is installed but not in the lock"
                 for name in sorted(set(present) - set(pins))]
    return problems


def lock_text(env: dict[str, str], assets: dict[str, str]) -> str:
    """The lock file's contents for this environment."""
    header = [
        "# The tested environment of dymu-eval: every package at an exact version.",
        f"# Resolved with Python {platform.python_version()} on {sys.platform}-{platform.machine()}",
        "# from setup.cfg's ranges; regenerate with `make lock`, then `make test`.",
        "# `make install` applies it with `pip install -c`; users who add the plugin to their own",
        "# environment get setup.cfg's ranges instead.",
    ]
    body = [f"{name}=={version}" for name, version in sorted(env.items())]
    tail = ["", "# weight-carrying wheels, unpacked with --no-deps outside the environment"]
    tail += [f"{name}=={version}" for name, version in sorted(assets.items())]
    return "\n".join(header + body + tail) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dymu_eval.envcheck", description=__doc__.split("\n")[0])
    parser.add_argument("lock", type=Path, help="constraints file to check against (or to write with --write)")
    parser.add_argument("--assets", type=Path, required=True, help="folder holding the unpacked asset wheels")
    parser.add_argument("--write", action="store_true", help="write the lock from this environment instead")
    args = parser.parse_args(argv)
    env = installed()
    assets = installed([str(args.assets)]) if args.assets.is_dir() else {}
    if args.write:
        args.lock.write_text(lock_text(env, assets))
        print(f"wrote {args.lock}: {len(env)} packages and {len(assets)} asset wheels")
        return 0
    if not args.lock.is_file():
        print(f"error: lock file {args.lock} not found", file=sys.stderr)
        return 2
    try:
        problems = differences(read_lock(args.lock), env, assets)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"the environment differs from {args.lock} (rebuild it with `make clean install`):", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    print(f"environment matches {args.lock}: {len(env)} packages, {len(assets)} asset wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
