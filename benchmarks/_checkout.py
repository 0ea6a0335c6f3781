"""Make a benchmark script measure the ``marl_kstep`` of its own checkout.

``python benchmarks/x.py`` puts ``benchmarks/`` first on ``sys.path``, not the checkout's root, so a
bare ``import marl_kstep`` loads whatever copy is installed (for example an editable install of
another worktree) and the script silently measures that. Every script here imports this module
before ``marl_kstep``. When the process was started as a script of this folder, it puts the
checkout's root first on ``sys.path``, and on ``PYTHONPATH`` for the child processes the scripts
start. Imported any other way (a test importing a script's helpers), it changes nothing.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _started_here() -> bool:
    try:
        return Path(sys.argv[0]).resolve().parent == ROOT / "benchmarks"
    except (IndexError, OSError):
        return False


if _started_here():
    sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(
        os.pathsep))])
