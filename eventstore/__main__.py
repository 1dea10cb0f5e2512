"""``python -m eventstore`` and the ``eventstore`` command: the command line, Ctrl-C honoured from the start.

The command line imports SQLAlchemy, Alembic and the store, about a second's
work; a Ctrl-C meanwhile ends it as it ends any command, with one line
``interrupted`` and exit status 130 (``INTERRUPTED``), not a traceback. So
this launcher imports nothing heavy itself (nor does ``eventstore``'s
``__init__``) before it is ready to catch one.
"""

import sys


def run() -> None:
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)  # cli.INTERRUPTED, not imported: the interrupt may have cut that very import
    main()


if __name__ == "__main__":
    run()
