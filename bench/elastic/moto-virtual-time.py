"""
The EC2 emulator (moto_server) on a virtual clock, for bench/elastic-cost.ts: a day replayed in minutes
must leave a day's worth of LaunchTime and termination times in the emulator, so instance-hours are read
from the emulator itself. moto takes every timestamp from moto.core.utils.utcnow; its code object is
swapped for one that reads the time (ms since the epoch) from the file named by MARKCO_VIRTUAL_CLOCK_FILE,
which the bench rewrites before each EC2 call. Swapping the code (not the name) reaches every module that
imported utcnow, including those moto imports lazily on the first request. Arguments are moto_server's.
"""
import re
import sys

import moto.core.utils as moto_utils


def _virtual_utcnow():
    import datetime
    import os

    path = os.environ.get("MARKCO_VIRTUAL_CLOCK_FILE")
    if path:
        try:
            with open(path) as f:
                ms = int(f.read().strip())
            return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).replace(tzinfo=None)
        except (OSError, ValueError):
            pass
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


moto_utils.utcnow.__code__ = _virtual_utcnow.__code__

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\.pyw|\.exe)?$", "", sys.argv[0])
    sys.exit(main())
