"""Benchmark scripts measure the package of their own checkout (``benchmarks/_checkout.py``), not an
installed copy: ``python benchmarks/x.py`` from another worktree measured the editable install."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def test_every_script_that_imports_the_package_imports_the_checkout_first():
    checked = 0
    for path in sorted(BENCH.glob("*.py")):
        lines = path.read_text().splitlines()
        # module-level imports of the package, or of a tests/ module that imports it
        uses = [i for i, line in enumerate(lines)
                if re.match(r"(import|from) (marl_kstep|test_\w+)\b", line) and not _in_string(lines, i)]
        if not uses:
            continue
        checkout = [i for i, line in enumerate(lines) if line.startswith("import _checkout")]
        assert checkout and checkout[0] < uses[0], f"{path.name}: import _checkout before line {uses[0] + 1}"
        checked += 1
    assert checked >= 10


def _in_string(lines, i):
    """Whether line ``i`` sits inside a triple-quoted string (a child process's code)."""
    return sum(line.count('"""') for line in lines[:i]) % 2 == 1


def test_a_script_and_its_children_import_the_checkout_beside_it(tmp_path):
    fake = tmp_path / "other-worktree"
    (fake / "marl_kstep").mkdir(parents=True)
    (fake / "marl_kstep" / "__init__.py").write_text("WHERE = 'the checkout'\n")
    (fake / "benchmarks").mkdir()
    shutil.copy(BENCH / "_checkout.py", fake / "benchmarks" / "_checkout.py")
    probe = fake / "benchmarks" / "probe.py"
    probe.write_text(
        "import subprocess, sys\n"
        "import _checkout  # noqa: F401\n"
        "import marl_kstep\n"
        "print(marl_kstep.__file__)\n"
        "print(subprocess.run([sys.executable, '-c', 'import marl_kstep; print(marl_kstep.__file__)'],\n"
        "                     capture_output=True, text=True, check=True, cwd='/').stdout.strip())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, env=env, check=True, cwd="/")
    parent, child = out.stdout.split()
    want = str((fake / "marl_kstep" / "__init__.py").resolve())
    assert parent == want and child == want
    # without the import, the script would load the installed package instead
    probe.write_text("import marl_kstep\nprint(marl_kstep.__file__)\n")
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, env=env, cwd="/")
    assert out.stdout.strip() != want  # the installed copy, or none


def test_importing_it_from_the_tests_changes_nothing():
    """tests/test_walk_k3_pass2.py imports benchmarks/walk_limit.py: the suite's path and environment stay."""
    import importlib.util

    before = (list(sys.path), os.environ.get("PYTHONPATH"))
    spec = importlib.util.spec_from_file_location("_checkout_fresh", BENCH / "_checkout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a fresh execution, whatever imported it before
    assert module.ROOT == ROOT and not module._started_here()
    assert sys.path == before[0] and os.environ.get("PYTHONPATH") == before[1]
