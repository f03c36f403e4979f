"""Entry point: ``python -m fitting.bench NAME [options]``."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "render": "fitting.bench.render",
    "coarse": "fitting.bench.coarse",
    "medium": "fitting.bench.medium",
    "fine": "fitting.bench.fine",
    "photos": "fitting.bench.photos",
    "scan": "fitting.bench.scan",
    "e2e": "fitting.bench.e2e",
    "scale": "fitting.bench.scale",
    "align": "fitting.bench.align",
    "same-person": "fitting.bench.same_person",
    "expressions": "fitting.bench.expressions",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fitting.bench", description=__doc__)
    sub = ap.add_subparsers(dest="name", required=True)
    modules = {}
    for name, mod in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        p = sub.add_parser(name, help=(modules[name].__doc__ or "").strip().splitlines()[0])
        modules[name].add_arguments(p)
    args = ap.parse_args(argv)
    return modules[args.name].run(args)


if __name__ == "__main__":
    sys.exit(main())
