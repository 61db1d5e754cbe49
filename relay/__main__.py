"""This module provides ``python -m relay [gunicorn options]``: check the settings, then serve relay with gunicorn.

It is ``gunicorn -c gunicorn.conf.py app:app`` with one difference: gunicorn reads ``WEB_CONCURRENCY``
while it loads, before gunicorn.conf.py runs, and a value that is not a number ends in gunicorn's
traceback.  Checked here first, every setting fails the same way: one JSON line naming it and the fix,
exit status 4.  Run it from the directory that holds app.py.
"""

import os
import sys
from pathlib import Path

from relay.config import ConfigError, load_settings
from relay.observability import logs

CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


def main(argv):
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip().replace("``", "`"))
        print("\nSettings: the README's table, or `python -m relay.config --markdown`; gunicorn's options: "
              "`python -m gunicorn --help`.")
        return
    try:
        load_settings()
    except ConfigError as error:
        logs.refuse(error)
    # exec, not a child process: the platform's SIGTERM reaches gunicorn's master directly.
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(CONF), *argv, "app:app"])


if __name__ == "__main__":
    main(sys.argv[1:])
