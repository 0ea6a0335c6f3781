import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long runs, skipped unless MARL_KSTEP_SLOW=1 (the release command in "
                                       "the README runs them)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MARL_KSTEP_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with MARL_KSTEP_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
