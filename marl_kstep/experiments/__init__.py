"""Experiments: run records and result files, sweeps, the scenario registry, the Dec-POMDP table."""

from .io import versions, write_json_atomic, write_text_atomic
from .records import format_aggregates, format_table, optimum_or_none, results_file, row_from_record, run_record
from .runner import RunSpec, RunStore, run_one, run_specs
from .scenarios import SCENARIOS
from .sweep import run_scenario, run_sweep, scenario_report, scenario_specs

__all__ = ["SCENARIOS", "RunSpec", "RunStore", "format_aggregates", "format_table", "optimum_or_none", "results_file",
           "row_from_record", "run_one", "run_record", "run_scenario", "run_specs", "run_sweep", "scenario_report",
           "scenario_specs", "versions", "write_json_atomic", "write_text_atomic"]
