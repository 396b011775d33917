"""HiGHS instances that print nothing.

``highspy.Highs()`` registers its Python callbacks in its constructor, and HiGHS logs its banner
to stdout at that moment, before any option can be set: the first solver built in a process would
print it into netinvert's output. The core class ``highspy._Highs`` (exported by highspy, without
the callback layer netinvert does not use) is built instead, with ``output_flag`` and
``log_to_console`` off before anything else runs.
"""

from __future__ import annotations

import highspy


def quiet_highs(threads: int = 1) -> highspy._Highs:
    """A HiGHS solver with all logging off, running on ``threads`` threads."""
    h = highspy._Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("log_to_console", False)
    h.setOptionValue("threads", threads)
    return h
