"""Something imported twisted.internet.reactor before bridge.install_reactor: the error must say what to do."""

from __future__ import annotations

import asyncio

from twisted.internet import reactor  # noqa: F401 - the mistake under test

import bridge


async def main() -> None:
    try:
        bridge.install_reactor()
    except bridge.ReactorInstallError as exc:
        print(exc)
    else:
        raise SystemExit("install_reactor accepted the default reactor")


if __name__ == "__main__":
    asyncio.run(main())
