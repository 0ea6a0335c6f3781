import pytest

from marl_kstep import demo


def test_demo_table_shows_trap_and_escape(capsys, tmp_path):
    demo.main(["--k-max", "4", "--no-figures", "--out", str(tmp_path)])
    assert (tmp_path / "two_state" / "results.json").exists()
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("two_state")]
    finals = {int(r[1]): float(r[4]) for r in rows}  # columns: scenario k method estimator J greedy-J J_k J*
    assert finals == pytest.approx({1: 5.0, 2: 5.0, 3: 9.0, 4: 9.0}, abs=1e-9)
    assert all(float(r[7]) == pytest.approx(9.0) for r in rows)
