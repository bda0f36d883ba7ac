"""``python -m modern``: the modern service alone, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path

from .app import serve
from .settings import ModernSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modern", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--var", type=Path, default=None, help="state folder (default: $CUTOVER_VAR or var/)")
    args = parser.parse_args(argv)
    settings = ModernSettings(host=args.host, port=args.port)
    if args.var is not None:
        settings = dataclasses.replace(settings, var_dir=args.var)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
