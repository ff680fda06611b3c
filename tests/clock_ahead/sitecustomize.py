"""The wall clock moved ahead, for a whole test run::

    QC_TAIL_CLOCK_AHEAD=365 PYTHONPATH=$PWD/tests/clock_ahead .venv/bin/pytest \
        -p no:time_machine -W ignore::pytest.PytestAssertRewriteWarning

runs the suite, and every qc-tail the suite starts (the conftest passes both variables on), a
year from now. (time-machine is imported here, before pytest: its own plugin is not needed,
and pytest warns that it cannot rewrite it.)

It proves no test depends on today's date. Only the wall clock moves (``time.time``,
``datetime.now``, what the emulator signs and dates with); the monotonic clock that timeouts
and waits use keeps its pace. (libfaketime moves that one too, and Python's timed waits then
never end.) Imported by Python at start-up, as every ``sitecustomize`` on the path is.
"""

from __future__ import annotations

import os

_days = os.environ.get("QC_TAIL_CLOCK_AHEAD")
if _days:
    from datetime import UTC, datetime, timedelta

    import time_machine

    time_machine.travel(datetime.now(UTC) + timedelta(days=float(_days)), tick=True).start()
