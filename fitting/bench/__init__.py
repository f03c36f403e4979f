"""Benchmarks that print tables: ``python -m fitting.bench {render,coarse,medium,fine,photos,e2e} ...``.

Speed and quality targets live here, not in timing assertions inside tests.
Each sub-command is a module of this package with ``add_arguments(parser)``
and ``run(args) -> int``.
"""
