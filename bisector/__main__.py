"""`python -m bisector` and the `bisector` console script.

The signal handlers go in first, before typer, rich and the rest are imported (~0.1 s): from then
on a SIGINT, SIGTERM or SIGHUP ends bisector with 128+N whatever it lands in (bisector/common/interrupts.py).
"""

from __future__ import annotations

import sys

from bisector.common import interrupts


def main() -> None:
    try:
        # Inside the try: a signal can land once the handlers are in, while the forwarder thread
        # starts (seen under load), and its KeyboardInterrupt is an exit with 128+N like any other.
        interrupts.install_handlers()
        from bisector.cli import main as cli_main  # noqa: PLC0415 - only once the handlers are in
    except BaseException:  # noqa: BLE001 - a signal cut the start short (KeyboardInterrupt, ImportError)
        if interrupts.received() is None:
            raise
        interrupts.quiet()
        sys.exit(interrupts.finish(1))
    try:
        cli_main()
    finally:
        interrupts.quiet()


if __name__ == "__main__":
    main()
