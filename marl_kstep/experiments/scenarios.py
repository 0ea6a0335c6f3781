"""The registry of built-in scenarios used by the command line, the demo and the figures."""

from __future__ import annotations

import inspect

from ..envs import aggregated_chain, grid_coordination, number_matching, two_state

__all__ = ["SCENARIOS", "config_keys"]

#: name -> (module, default config, default start policy)
SCENARIOS = {
    "number_matching": (number_matching, dict(start="far"), number_matching.trap_start),
    "grid_coordination": (grid_coordination, dict(grid_coordination.TRAP_CONFIG), grid_coordination.near_stay_start),
    "two_state": (two_state, {}, two_state.trap_start),
    "aggregated_chain": (aggregated_chain, {}, aggregated_chain.trap_start),
}


def config_keys(module) -> list[str]:
    """The configuration keywords of a scenario's ``parallel_env``."""
    return [p for p in inspect.signature(module.parallel_env).parameters if p != "render_mode"]
