"""Ctrl-C while a command is still importing numpy/scipy/numba exits cleanly (interrupt.py)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import error_lines

ROOT = Path(__file__).resolve().parents[1]


def _sigint_default():
    """In the child before exec: SIGINT as at a terminal (a suite started in the background, ``cmd &``,
    has it ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_library(pid: int, name: str, timeout: float = 60.0) -> bool:
    """Wait until process ``pid`` has mapped a shared library whose path contains ``name``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if name in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:
            return False
        time.sleep(0.005)
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see how far the import got")
@pytest.mark.parametrize("library", ["_multiarray_umath", "_helperlib"])  # numpy's core, then numba's
def test_ctrl_c_while_a_command_loads(tmp_path, library):
    """SIGINT once the command is importing numpy (or numba): the package's first import (interrupt.py)
    has run by then, whatever the machine's load; before it, Python itself is still starting."""
    proc = subprocess.Popen([sys.executable, "-m", "marl_kstep.cli", "run", "two_state", "--k", "1", "--iters",
                             "100000000", "--tol", "0", "--out", str(tmp_path / "run"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_sigint_default)
    try:
        assert _wait_for_library(proc.pid, library)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a 10^8-iteration run behind
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(error_lines(stderr)) == 1, stderr
    assert "interrupted" in stderr


def test_a_library_import_keeps_pythons_handler():
    code = ("import signal, marl_kstep, marl_kstep.interrupt as i; "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, i._startup_guard)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         preexec_fn=_sigint_default)
    assert out.stdout.split() == ["True", "False"]


def test_a_command_hands_sigint_back_once_loaded():
    code = ("import sys; sys.argv[0] = '-m'; import signal, marl_kstep.interrupt as i; "
            "a = signal.getsignal(signal.SIGINT) is i._interrupted_while_loading; i.release_startup(); "
            "print(a, signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         preexec_fn=_sigint_default)
    assert out.stdout.split() == ["True", "True"]


def test_an_ignored_sigint_stays_ignored_in_a_run(tmp_path):
    """Started with SIGINT ignored (``nohup cmd &``), a run is not stopped by a stray SIGINT."""
    proc = subprocess.Popen([sys.executable, "-m", "marl_kstep.cli", "run", "two_state", "--k", "1", "--iters",
                             "3000", "--tol", "0", "--out", str(tmp_path / "run"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert _wait_for_library(proc.pid, "_helperlib")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "interrupted" not in stderr, stderr
    assert (tmp_path / "run" / "runs.jsonl").read_text().count("\n") == 2  # both methods ran to the end
