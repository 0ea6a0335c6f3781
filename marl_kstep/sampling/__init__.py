"""Sampling: k-coupled execution in PettingZoo environments and the sampled k-step estimator (SPEC §8)."""

from .encoders import BoxDiscretiser, ObservationIndexer, space_encoder
from .execution import Episode, KCoupledAgent, NonCooperativeRewardWarning, as_parallel_env, k_coupled_episode, rollout
from .sampled import SampledKStep, horizon_for

__all__ = ["BoxDiscretiser", "Episode", "KCoupledAgent", "NonCooperativeRewardWarning", "ObservationIndexer",
           "SampledKStep", "as_parallel_env", "horizon_for", "k_coupled_episode", "rollout", "space_encoder"]
