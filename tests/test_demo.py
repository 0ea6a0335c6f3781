import pytest

from marl_kstep import demo


def test_demo_table_shows_trap_and_escape(capsys):
    demo.main(["--k-max", "4"])
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()[2:]]
    finals = {int(r[0]): float(r[1]) for r in lines}
    assert finals == pytest.approx({1: 5.0, 2: 5.0, 3: 9.0, 4: 9.0}, abs=1e-9)
    assert all(float(r[2]) == pytest.approx(9.0) for r in lines)
