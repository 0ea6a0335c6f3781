"""Experiments: run specs and records, the results folder, executors, sweeps, the scenario registry, the
Dec-POMDP table."""

from .io import versions, write_json_atomic, write_text_atomic
from .records import format_aggregates, format_table, optimum_or_none, results_file, row_from_record
from .run import RunRecord, run_one
from .runner import run_specs
from .scenarios import SCENARIOS
from .spec import EstimatorSpec, RunSpec, Target
from .store import RunStore
from .sweep import run_scenario, scenario_report, scenario_specs

__all__ = ["SCENARIOS", "EstimatorSpec", "RunRecord", "RunSpec", "RunStore", "Target", "format_aggregates",
           "format_table", "optimum_or_none", "results_file", "row_from_record", "run_one", "run_scenario",
           "run_specs", "scenario_report", "scenario_specs", "versions", "write_json_atomic", "write_text_atomic"]
