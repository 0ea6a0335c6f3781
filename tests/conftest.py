import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    # A suite started in the background (``cmd &``, a CI runner) has SIGINT ignored, and every child
    # inherits that; the Ctrl-C tests send SIGINT as a terminal would, to commands that rightly leave an
    # ignored SIGINT alone. A Python handler here is reset to the default in each child at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "slow: long runs, skipped unless MARL_KSTEP_SLOW=1 (the release command in "
                                       "the README runs them)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MARL_KSTEP_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with MARL_KSTEP_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
