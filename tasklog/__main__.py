"""``python -m tasklog``: the same as the ``tasklog`` command."""

import sys


def run() -> int:
    """Import the command line and run it; an interrupt while importing is one line, exit 130."""
    try:
        from tasklog.cli import main
    except KeyboardInterrupt:
        # SIGINT in the first moments of a command (Python still importing) printed a
        # KeyboardInterrupt traceback (issue 20); main() itself handles interrupts once running.
        print("tasklog: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
