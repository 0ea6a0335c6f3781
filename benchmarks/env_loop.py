"""CPU time per env step of the env path's episode loop (``k_coupled_episode``: draws, encoding
and the checks of every env output, issue 22) beside the env's own ``reset``/``step`` time, on
a small user env and on ``mdp_parallel_env``. CPU time (``process_time``), so a busy machine
moves it less than wall time; minimum and median of 15 repetitions, load average stated.

    python benchmarks/env_loop.py            # about 20 seconds
"""

from __future__ import annotations

import os
import time

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

import marl_kstep as mk
from marl_kstep.envs import number_matching
from marl_kstep.envs.pz import mdp_parallel_env

EPISODES, HORIZON, REPS = 100, 60, 15


class Relay(ParallelEnv):
    """Two agents, Discrete and MultiDiscrete observations, one shared reward (as in tests/test_sampled.py)."""

    metadata = {"name": "relay_bench_v0"}

    def __init__(self, max_cycles=HORIZON):
        self.possible_agents, self.max_cycles = ["pusher", "walker"], max_cycles
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return spaces.Discrete(2) if agent == "pusher" else spaces.MultiDiscrete([3, 2])

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        return {"pusher": self.lamp, "walker": np.array([self.room, self.lamp])}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.room, self.lamp, self.t = 0, int(self.rng.random() < 0.25), 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        push, walk = actions["pusher"], actions["walker"]
        r = float(self.room == 2 and self.lamp == 1) - 0.1 * push
        if walk == 1:
            self.room = self.room + 1 if self.room < 2 else (0 if self.rng.random() < 0.5 else 2)
        self.lamp = 1 - self.lamp if push else self.lamp
        self.t += 1
        done = self.t >= self.max_cycles
        rew = {a: r for a in self.agents}
        out = (self._obs(), rew, {a: False for a in self.agents}, {a: done for a in self.agents},
               {a: {} for a in self.agents})
        if done:
            self.agents = []
        return out


def cpu_per_step(fn, steps):
    fn()
    ts = []
    for _ in range(REPS):
        t0 = time.process_time()
        fn()
        ts.append((time.process_time() - t0) / steps * 1e6)
    return min(ts), float(np.median(ts))


def env_only(env, rng):
    """The env's own cost: the same number of resets and steps with random actions."""
    for e in range(EPISODES):
        env.reset(seed=e)
        for _ in range(HORIZON):
            out = env.step({a: int(rng.integers(2)) for a in env.possible_agents})
            if not env.agents:
                break
        del out


def main():
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    cases = [("user env (Relay)", Relay(), 0.9),
             ("mdp_parallel_env (number matching)",
              mdp_parallel_env(mk.compile_env(number_matching.parallel_env()), max_cycles=HORIZON), None)]
    for label, env, gamma in cases:
        est = mk.SampledKStep(env, 2, gamma=gamma, episodes=EPISODES, horizon=HORIZON, seed=0)
        pol = mk.Policy.uniform(est)
        steps = EPISODES * HORIZON
        full = cpu_per_step(lambda est=est, pol=pol: est.estimate(pol), steps)
        own = cpu_per_step(lambda env=env: env_only(env, np.random.default_rng(0)), steps)
        print(f"{label}: estimate {full[0]:.1f} (median {full[1]:.1f}) us/step; the env's own reset/step "
              f"{own[0]:.1f} (median {own[1]:.1f}); the loop around it {full[0] - own[0]:.1f} us/step (minima)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
