"""Entry points: the `agentia` command (cli.py), `agentia up` (up.py), the dev Redis launcher.

The top floor: may import every product package; see docs/architecture.md#layout.
"""
