"""k-coupled execution in PettingZoo environments: one episode loop, rollouts."""

from .execution import Episode, KCoupledAgent, k_coupled_episode, rollout

__all__ = ["Episode", "KCoupledAgent", "k_coupled_episode", "rollout"]
