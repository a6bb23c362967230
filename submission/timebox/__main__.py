"""``python -m timebox``: the command line (see :mod:`timebox.cli`).

The process ends as soon as ``main`` returns: every output is already written, closed and renamed
into place by then, and the interpreter's teardown (TensorFlow's threads and traced functions) once
took 42 s on the loaded 2-core machine after an online run had finished its outputs (bench/RESULTS.md,
"Deadline"), time a judge counts against the budget.
"""

import os
import sys

from .errors import exit_code
from .manifest import check_unpacked

# an unpacked submission's files checked before any other module of timebox is imported (an altered one never runs)
code = exit_code(lambda: check_unpacked() or 0)
if code == 0:
    from .cli import main

    code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
