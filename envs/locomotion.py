"""MuJoCo locomotion task families of the MAML paper, on Gymnasium's ``HalfCheetah-v5`` / ``Ant-v5`` physics.

## Observation
Gymnasium's: HalfCheetah 17 numbers (joint positions without x, velocities), Ant 105 (positions
without x, y, velocities, clipped contact forces). float64; the rollout workers cast to float32.

## Action
HalfCheetah 6, Ant 8 joint torques in [-1, 1]. Raw policy actions are clipped to that box before
they are applied *and* before the control cost is computed, as the papers' code did (rllab's and
pytorch-maml-rl's action-normalising wrappers).

## Reward (per step; v_x is the torso's forward velocity over the step)
- HalfCheetahVel: −|v_x − v*| − 0.05·‖a‖²
- HalfCheetahDir: d·v_x − 0.05·‖a‖²
- AntDir: d·v_x − 0.005·‖a‖² − 0.0005·‖clip(F_contact, −1, 1)‖² + 0.05
- AntVel: −|v_x − v*| + 1 − 0.005·‖a‖² − 0.0005·‖clip(F_contact, −1, 1)‖² + 0.05

The Ant's control/contact costs and survival bonus are rllab's ``AntEnv`` values, which the MAML
code and pytorch-maml-rl use; Gymnasium's own reward weights are not used.

## Termination / truncation
HalfCheetah never terminates; the Ant terminates when unhealthy (torso z outside [0.2, 1.0] or a
non-finite state), as Gymnasium's and rllab's. Truncated at 200 steps (``max_episode_steps`` of
the registration, the MAML paper's horizon; the config's ``horizon`` overrides it).

## Conventions (``env_kwargs: {conventions: rllab}``)
``gymnasium`` (default) is Gymnasium's ``HalfCheetah-v5`` as above: 5 MuJoCo steps of 0.01 s per
action, so a 200-step episode is 10 s. ``rllab`` is the environment the MAML paper's numbers come
from (cbfinn/maml_rl ``rllab/envs/mujoco/half_cheetah_env_rand*.py`` on the same ``half_cheetah.xml``):
one MuJoCo step per action (rllab's ``MujocoEnv`` has ``frame_skip`` 1 unless the model names
one, and this model does not), so an episode is 2 s; the observation adds the whole body's centre
of mass (rllab's ``get_body_com("torso")``, 20 numbers, x included); v_x is that centre of mass's
velocity after the step (rllab's ``get_body_comvel("torso")``: MuJoCo's ``subtree_linvel``), not
the torso's displacement over the step; resets add N(0, 0.01²) to the joint positions and
N(0, 0.1²) to the velocities (rllab's ``reset_mujoco``; ``reset_noise_scale`` is Gymnasium's and
unused). Rewards keep the same rules and the same control cost.

The Ant under ``rllab`` is the MAML paper's Ant (``rllab/envs/mujoco/ant_env_rand*.py`` on rllab's
``ant.xml``), rebuilt on Gymnasium's ``ant.xml``: the same bodies, joints, masses and actuators (rllab's
motors take ±150 with gear 1, its action-normalising wrapper scales [−1, 1] to that; Gymnasium's
take ±1 with gear 150: the same torques), with rllab's model options set on the loaded model:
timestep 0.02 s (Gymnasium's file has 0.01) and every geom's contact impedance ``solimp`` 0.8 0.8 0.01
(Gymnasium's file leaves MuJoCo's default). One MuJoCo step per action, so a 200-step episode is 4 s
(Gymnasium: 5 steps of 0.01 s, 10 s). The episode starts from the model's ``init_qpos`` (torso at
z = 0.55, legs bent; rllab reads it, Gymnasium's env ignores it) plus rllab's Gaussian noise. After each
step the full forward dynamics of the new state are computed, with the contact forces (rllab's
``forward_dynamics`` calls ``model.forward()``, which in MuJoCo 1.31 included them). The observation is
rllab's 125 numbers: ``qpos`` (x, y included), ``qvel``, the clipped contact forces of every body,
the torso's orientation matrix and the whole body's centre of mass; v_x is that centre of mass's
velocity. Termination, costs and survival bonus are the same as above.

## Task
``{"velocity": v*}`` with v* ~ U[0, 2] (HalfCheetah) or U[0, 3] (Ant); ``{"direction": d}`` with
d = −1 or +1, each with probability 0.5.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.spaces import Box
from gymnasium.utils import EzPickle
from gymnasium.utils.seeding import np_random

from metarl.envs.task_env import Task, check_float_scalar, episode_seed

CHEETAH_CTRL_COST = 0.05
ANT_CTRL_COST, ANT_CONTACT_COST, ANT_SURVIVE = 0.005, 0.0005, 0.05
CHEETAH_MAX_VELOCITY, ANT_MAX_VELOCITY = 2.0, 3.0
CONVENTIONS = ("gymnasium", "rllab")
RLLAB_QPOS_NOISE, RLLAB_QVEL_NOISE = 0.01, 0.1  # rllab's MujocoEnv.reset_mujoco: Gaussian, these scales


def check_conventions(value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(
            f"conventions {value!r}: this family takes {' or '.join(map(repr, allowed))} "
            "('rllab' is the MAML paper's environment: 1 MuJoCo step per action, see metarl.envs.locomotion)"
        )
    return value


def rllab_cheetah_state(model: Any, data: Any) -> tuple[np.ndarray, float]:
    """rllab's HalfCheetah observation and v_x after a step: ``qpos[1:]``, ``qvel``, the body's centre of
    mass, and that centre of mass's x velocity. Computes only the kinematic quantities these need
    (positions, centres of mass, velocities), so the next step's dynamics are not touched."""
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    mujoco.mj_comVel(model, data)
    mujoco.mj_subtreeVel(model, data)
    torso = 1  # the model's first body after the world: rllab's get_body_com("torso") is its subtree
    obs = np.concatenate([data.qpos[1:], data.qvel, data.subtree_com[torso]])
    return obs, float(data.subtree_linvel[torso, 0])


RLLAB_ANT_TIMESTEP = 0.02  # rllab's ant.xml: <option timestep="0.02" integrator="RK4"/>
RLLAB_ANT_SOLIMP = (0.8, 0.8, 0.01, 0.5, 2.0)  # its geom default solimp=".8 .8 .01" (MuJoCo's 0.5 2 after)


def rllab_ant_model(model: Any) -> np.ndarray:
    """Set rllab's Ant options on a loaded Gymnasium ``ant.xml``; returns rllab's initial ``qpos`` (the
    model's ``init_qpos`` numeric, which rllab's ``MujocoEnv`` reads and Gymnasium's ignores)."""
    model.opt.timestep = RLLAB_ANT_TIMESTEP
    model.geom_solimp[:] = RLLAB_ANT_SOLIMP
    return np.array(model.numeric("init_qpos").data, dtype=np.float64)


def rllab_ant_state(model: Any, data: Any) -> tuple[np.ndarray, float]:
    """rllab's Ant observation and v_x after a step or reset: the new state's full forward dynamics with
    contact forces (rllab's ``model.forward()``), then ``qpos``, ``qvel``, clip(contact forces, −1, 1) of
    every body, the torso's orientation matrix, the body's centre of mass, and its x velocity."""
    mujoco.mj_forward(model, data)
    mujoco.mj_rnePostConstraint(model, data)
    mujoco.mj_subtreeVel(model, data)
    torso = 1
    contact = np.clip(data.cfrc_ext, -1.0, 1.0).ravel()
    obs = np.concatenate([data.qpos, data.qvel, contact, data.xmat[torso], data.subtree_com[torso]])
    return obs, float(data.subtree_linvel[torso, 0])


# -- the reward rules as plain functions (tested on hand-computed cases) ------------------------
# They broadcast: one step (scalars, action (A,), contact forces (nbody, 6)) or many copies at once
# (arrays, actions (..., A), contact forces (..., nbody, 6)), so the Gymnasium env and the native
# vector env share them and get the same numbers.
def cheetah_vel_reward(x_velocity, action: np.ndarray, velocity):
    return -np.abs(x_velocity - velocity) - CHEETAH_CTRL_COST * np.sum(np.square(action), axis=-1)


def cheetah_dir_reward(x_velocity, action: np.ndarray, direction):
    return direction * x_velocity - CHEETAH_CTRL_COST * np.sum(np.square(action), axis=-1)


def _ant_costs(action: np.ndarray, contact_forces: np.ndarray):
    contact = np.clip(contact_forces, -1.0, 1.0)
    contact = contact.reshape(*contact.shape[:-2], -1)  # one sum per copy over its (nbody, 6) forces
    return ANT_CTRL_COST * np.sum(np.square(action), axis=-1) + ANT_CONTACT_COST * np.sum(np.square(contact), axis=-1)


def ant_dir_reward(x_velocity, action: np.ndarray, contact_forces: np.ndarray, direction):
    return direction * x_velocity - _ant_costs(action, contact_forces) + ANT_SURVIVE


def ant_vel_reward(x_velocity, action: np.ndarray, contact_forces: np.ndarray, velocity):
    return -np.abs(x_velocity - velocity) + 1.0 - _ant_costs(action, contact_forces) + ANT_SURVIVE


def check_direction(task: Task) -> int:
    if not isinstance(task, dict) or "direction" not in task:
        raise ValueError(f"invalid task {task!r}: must be a dict with key 'direction'")
    d = task["direction"]
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, float, np.integer, np.floating)) or d not in (-1, 1):
        raise ValueError(f"invalid task {task!r}: 'direction' must be -1 or 1")
    return int(d)


# -- the task API, shared by the four families ------------------------------------------------------
class _LocomotionTasks:
    """Task API and task reward over a Gymnasium MuJoCo env (a mixin placed before it in the bases).

    A family defines ``KEY`` (the task's one entry), ``validate_task``, ``_draw`` and
    ``_reward``; ``reset`` never changes the task. Pickling (Gymnasium's ``EzPickle``) rebuilds
    the env on its current task, at the start of an episode.
    """

    KEY: str
    DEFAULT: float
    CONVENTIONS: tuple[str, ...] = CONVENTIONS
    RLLAB_STATE: Any = staticmethod(rllab_cheetah_state)  # (model, data) -> (observation, v_x)

    def __init__(
        self, task: Task | None = None, reset_noise_scale: float = 0.1, conventions: str = "gymnasium", **render: Any
    ):
        # ``render``: MuJoCo's render_mode / width / height / camera keywords (``metarl render``)
        self.conventions = check_conventions(conventions, self.CONVENTIONS)
        skip = {"frame_skip": 1} if self.conventions == "rllab" else {}
        super().__init__(reset_noise_scale=reset_noise_scale, **skip, **render)  # type: ignore[call-arg]
        if self.conventions == "rllab":
            self._rllab_model()
            size = self.RLLAB_STATE(self.model, mujoco.MjData(self.model))[0].size  # type: ignore[attr-defined]
            self.observation_space = Box(-np.inf, np.inf, (size,), np.float64)
        self._reset_noise = reset_noise_scale
        self._render_kwargs = render
        self._task: Task = {}
        self.set_task(task if task is not None else {self.KEY: self.DEFAULT})

    def _rllab_model(self) -> None:
        """rllab's options on the loaded model (the Ant's differ from Gymnasium's file; the cheetah's do not)."""

    @classmethod
    def validate_task(cls, task: Task) -> Task:
        raise NotImplementedError

    def _draw(self, rng: np.random.Generator, n: int) -> list[Any]:
        raise NotImplementedError

    def _reward(self, x_velocity: float, action: np.ndarray) -> float:
        raise NotImplementedError

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[Task]:
        rng = self.np_random if rng is None else rng  # type: ignore[attr-defined]
        return [{self.KEY: value} for value in self._draw(rng, n)]

    def set_task(self, task: Task) -> None:
        self._task = self.validate_task(task)
        # the MuJoCo base would rebuild with its own args
        EzPickle.__init__(self, self._task, self._reset_noise, self.conventions, **self._render_kwargs)

    def get_task(self) -> Task:
        return dict(self._task)

    def step(self, action):
        space = self.action_space  # type: ignore[attr-defined]
        action = np.clip(np.asarray(action, dtype=np.float64), space.low, space.high)
        obs, _, terminated, truncated, info = super().step(action)  # type: ignore[misc]
        if self.conventions == "rllab":  # rllab's v_x: the centre of mass's velocity (``_get_obs`` made it current)
            info["x_velocity"] = float(self.data.subtree_linvel[1, 0])  # type: ignore[attr-defined]
        return obs, self._reward(float(info["x_velocity"]), action), terminated, truncated, info

    def _get_obs(self):
        if self.conventions == "rllab":
            return self.RLLAB_STATE(self.model, self.data)[0]  # type: ignore[attr-defined]
        return super()._get_obs()  # type: ignore[misc]

    def reset_model(self):
        if self.conventions != "rllab":
            return super().reset_model()  # type: ignore[misc]
        rng, model = self.np_random, self.model  # type: ignore[attr-defined]
        qpos = self.init_qpos + RLLAB_QPOS_NOISE * rng.standard_normal(model.nq)  # type: ignore[attr-defined]
        qvel = self.init_qvel + RLLAB_QVEL_NOISE * rng.standard_normal(model.nv)  # type: ignore[attr-defined]
        self.set_state(qpos, qvel)  # type: ignore[attr-defined]
        return self._get_obs()


class _Velocity(_LocomotionTasks):
    KEY, DEFAULT = "velocity", 0.0
    MAX_VELOCITY: float

    @classmethod
    def validate_task(cls, task: Task) -> Task:
        return {"velocity": check_float_scalar(task, "velocity", 0.0, cls.MAX_VELOCITY)}

    def _draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return [float(v) for v in rng.uniform(0.0, self.MAX_VELOCITY, size=n)]


class _Direction(_LocomotionTasks):
    KEY, DEFAULT = "direction", 1

    @classmethod
    def validate_task(cls, task: Task) -> Task:
        return {"direction": check_direction(task)}

    def _draw(self, rng: np.random.Generator, n: int) -> list[int]:
        return [int(d) for d in 2 * rng.integers(0, 2, size=n) - 1]


# -- the native vector forms ------------------------------------------------------------------------
class _MujocoVectorEnv:
    """Many (task, episode) copies of a MuJoCo family as one array env, without Gymnasium's per-copy overhead.

    Why: sampling is most of a locomotion iteration, and much of a ``SyncVectorEnv`` step is Python
    around MuJoCo (wrappers, observation and info building). Each copy is a bare ``MjData`` of the
    family's model, reset and stepped as Gymnasium's ``MujocoEnv`` does it (same per-episode seeds
    and noise, controls clipped to [-1, 1], ``frame_skip`` substeps), so observations, rewards and
    terminations equal the Gymnasium path's (tests/test_locomotion_vector.py). Subclasses build the
    family's observation and step.
    """

    def __init__(
        self,
        env_cls: type,
        tasks: list[Task],
        episodes_per_task: int,
        seeds: list[int] | None = None,
        reset_noise_scale: float = 0.1,
        conventions: str = "gymnasium",
        **_render: Any,
    ):
        template = env_cls(reset_noise_scale=reset_noise_scale, conventions=conventions)
        self.conventions = template.conventions
        self.model, self.frame_skip, self.dt = template.model, template.frame_skip, template.dt
        self.init_qpos, self.init_qvel = template.init_qpos.copy(), template.init_qvel.copy()
        self._configure(template)
        template.close()
        self.noise = reset_noise_scale
        self.env_cls, self.reward = env_cls, env_cls.REWARD
        self.datas = [mujoco.MjData(self.model) for _ in range(len(tasks) * episodes_per_task)]  # ~2 ms each
        self.action_shape = (self.model.nu,)
        self.assign(tasks, episodes_per_task, seeds)

    def _configure(self, template: Any) -> None:
        """Read the family's constants (``observation_shape``, termination) off a Gymnasium env."""
        raise NotImplementedError

    @property
    def num_envs(self) -> int:
        return len(self.datas)

    def assign(self, tasks: list[Task], episodes_per_task: int, seeds: list[int] | None = None) -> _MujocoVectorEnv:
        """New tasks and reset seeds for the same number of copies (building the copies costs far more);
        takes effect at the next ``reset``."""
        if len(tasks) * episodes_per_task != self.num_envs:
            raise ValueError(f"{len(tasks)} tasks x {episodes_per_task} episodes != {self.num_envs} copies")
        self.num_tasks, self.episodes_per_task = len(tasks), episodes_per_task
        self.task_value = np.repeat(self.env_cls.task_values(tasks), episodes_per_task)  # one per copy
        task_seeds = seeds if seeds is not None else list(range(len(tasks)))
        self._seeds = [episode_seed(s, e) for s in task_seeds for e in range(episodes_per_task)]
        return self

    def _reset_copies(self) -> None:
        """``MujocoEnv.reset(seed=...)``: the same generator and noise draws as ``reset_model``, then ``set_state``."""
        rllab = self.conventions == "rllab"
        for data, seed in zip(self.datas, self._seeds):
            rng, _ = np_random(seed)
            mujoco.mj_resetData(self.model, data)
            if rllab:  # _LocomotionTasks.reset_model's draws
                data.qpos[:] = self.init_qpos + RLLAB_QPOS_NOISE * rng.standard_normal(self.model.nq)
                data.qvel[:] = self.init_qvel + RLLAB_QVEL_NOISE * rng.standard_normal(self.model.nv)
            else:
                data.qpos[:] = self.init_qpos + rng.uniform(low=-self.noise, high=self.noise, size=self.model.nq)
                data.qvel[:] = self.init_qvel + self.noise * rng.standard_normal(self.model.nv)
            mujoco.mj_forward(self.model, data)

    def _controls(self, actions: np.ndarray) -> np.ndarray:
        """Per-copy controls ``(n, nu)``: raw actions clipped to [-1, 1], as ``_LocomotionTasks.step`` does."""
        flat = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        return np.clip(flat, -1.0, 1.0).astype(np.float64)

    def _grid(self, values: np.ndarray) -> np.ndarray:
        """Per-copy values ``(n, ...)`` as ``(tasks, episodes, ...)``."""
        return values.reshape(self.num_tasks, self.episodes_per_task, *values.shape[1:])


class CheetahVectorEnv(_MujocoVectorEnv):
    """The HalfCheetah families' copies. They never terminate (HalfCheetah has no terminal state); the
    rollout's horizon cuts them."""

    def _configure(self, template: Any) -> None:
        self.observation_shape = template.observation_space.shape

    def _obs(self) -> np.ndarray:
        if self.conventions == "rllab":
            return self._grid(
                np.stack([self.env_cls.RLLAB_STATE(self.model, d)[0] for d in self.datas]).astype(np.float32)
            )
        qpos = np.stack([d.qpos for d in self.datas])
        qvel = np.stack([d.qvel for d in self.datas])
        return self._grid(np.concatenate([qpos[:, 1:], qvel], axis=-1).astype(np.float32))

    def reset(self) -> np.ndarray:
        self._reset_copies()
        return self._obs()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ctrl = self._controls(actions)
        x_before = np.array([d.qpos[0] for d in self.datas])
        for data, c in zip(self.datas, ctrl):
            data.ctrl[:] = c
            mujoco.mj_step(self.model, data, nstep=self.frame_skip)
        obs = self._obs()
        if self.conventions == "rllab":  # the centre of mass's velocity, made current by _obs
            x_velocity = np.array([d.subtree_linvel[1, 0] for d in self.datas])
        else:
            x_velocity = (np.array([d.qpos[0] for d in self.datas]) - x_before) / self.dt
        reward = self.reward(x_velocity, ctrl, self.task_value)
        return obs, self._grid(reward.astype(np.float32)), self._grid(np.zeros(self.num_envs, dtype=bool))


class AntVectorEnv(_MujocoVectorEnv):
    """The Ant families' copies: ``Ant-v5``'s observation (positions without x, y, velocities, clipped
    contact forces) and termination when unhealthy.

    A terminated copy is no longer stepped until the next ``reset`` (it returns its last observation,
    reward 0 and terminated): the rollout masks its later steps anyway, and fallen ants would
    otherwise cost a full MuJoCo step each.
    """

    def _configure(self, template: Any) -> None:
        self.main_body = self.model.body(template._main_body).id  # Ant-v5's v_x: this body's xpos over the step
        self.healthy_z_range = template._healthy_z_range
        self.contact_force_range = template._contact_force_range
        self.terminate_when_unhealthy = bool(template._terminate_when_unhealthy)
        self.observation_shape = template.observation_space.shape

    def reset(self) -> np.ndarray:
        self._reset_copies()
        n, m = self.num_envs, self.model  # per-copy state, gathered from the MjData after each reset / step
        self._qpos, self._qvel = np.empty((n, m.nq)), np.empty((n, m.nv))
        self._cfrc, self._x = np.empty((n, m.nbody, 6)), np.empty(n)
        self._obs = np.empty((n, *self.observation_shape), dtype=np.float32)
        self._terminated = np.zeros(n, dtype=bool)
        everyone = np.arange(n)
        for i in everyone:
            self._record(i)
        self._observe(everyone)
        return self._grid(self._obs.copy())

    def _record(self, i: int) -> None:
        """Copy ``i``'s state after a reset or step into the per-copy arrays (MjData lives in separate C buffers).

        Under rllab's conventions the copy's observation and v_x come from :func:`rllab_ant_state` here
        (the new state's forward dynamics, as the Gymnasium path's ``_get_obs``), ``_x`` holding v_x."""
        data = self.datas[i]
        if self.conventions == "rllab":
            self._obs[i], self._x[i] = self.env_cls.RLLAB_STATE(self.model, data)
        else:
            self._x[i] = data.xpos[self.main_body, 0]
        self._qpos[i], self._qvel[i], self._cfrc[i] = data.qpos, data.qvel, data.cfrc_ext

    def _observe(self, idx: np.ndarray) -> None:
        """``AntEnv._get_obs`` for copies ``idx`` at once: qpos[2:], qvel, clip(cfrc_ext)[1:] (rllab's: made
        by ``_record``)."""
        if self.conventions == "rllab":
            return
        low, high = self.contact_force_range
        contact = np.clip(self._cfrc[idx, 1:], low, high).reshape(len(idx), -1)
        self._obs[idx] = np.concatenate([self._qpos[idx, 2:], self._qvel[idx], contact], axis=-1)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ctrl = self._controls(actions)
        live = np.flatnonzero(~self._terminated)
        x_before = self._x[live]
        for i in live:  # ``MujocoEnv.do_simulation``: frame_skip steps, then the contact forces
            data = self.datas[i]
            data.ctrl[:] = ctrl[i]
            mujoco.mj_step(self.model, data, nstep=self.frame_skip)
            mujoco.mj_rnePostConstraint(self.model, data)
            self._record(i)
        self._observe(live)
        reward = np.zeros(self.num_envs)
        if self.conventions == "rllab":  # the centre of mass's velocity, recorded after the step
            x_velocity = self._x[live]
        else:
            x_velocity = (self._x[live] - x_before) / self.dt
        reward[live] = self.reward(x_velocity, ctrl[live], self._cfrc[live], self.task_value[live])
        if self.terminate_when_unhealthy:
            self._terminated[live] = ~self._healthy(live)
        return self._grid(self._obs.copy()), self._grid(reward.astype(np.float32)), self._grid(self._terminated.copy())

    def _healthy(self, idx: np.ndarray) -> np.ndarray:
        """``AntEnv.is_healthy``: a finite state and the torso's z within ``healthy_z_range``."""
        qpos, qvel = self._qpos[idx], self._qvel[idx]
        low, high = self.healthy_z_range
        finite = np.isfinite(qpos).all(axis=-1) & np.isfinite(qvel).all(axis=-1)
        return finite & (low <= qpos[:, 2]) & (qpos[:, 2] <= high)


# -- the families ------------------------------------------------------------------------------------
class _Vectorised:
    """``make_vector``: the family's native vectorised form (``VECTOR_ENV``); ``REWARD`` is the family's
    rule, applied to one step here or to all copies there."""

    VECTOR_ENV: type[_MujocoVectorEnv]
    REWARD: Any

    @classmethod
    def make_vector(
        cls, tasks: list[Task], episodes_per_task: int, seeds: list[int] | None = None, **env_kwargs: Any
    ) -> _MujocoVectorEnv:
        return cls.VECTOR_ENV(cls, tasks, episodes_per_task, seeds, **env_kwargs)

    @classmethod
    def task_values(cls, tasks: list[Task]) -> np.ndarray:
        return np.array([cls.validate_task(t)[cls.KEY] for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]


class _CheetahVector(_Vectorised):
    VECTOR_ENV = CheetahVectorEnv

    def _reward(self, x_velocity: float, action: np.ndarray) -> float:
        return float(self.REWARD(x_velocity, action, self._task[self.KEY]))  # type: ignore[attr-defined]


class _AntVector(_Vectorised):
    VECTOR_ENV = AntVectorEnv
    RLLAB_STATE = staticmethod(rllab_ant_state)

    def _rllab_model(self) -> None:
        self.init_qpos = rllab_ant_model(self.model)  # type: ignore[attr-defined]
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}  # type: ignore[attr-defined]

    def _reward(self, x_velocity: float, action: np.ndarray) -> float:
        forces = self.data.cfrc_ext  # type: ignore[attr-defined]
        return float(self.REWARD(x_velocity, action, forces, self._task[self.KEY]))  # type: ignore[attr-defined]


class HalfCheetahVelEnv(_CheetahVector, _Velocity, HalfCheetahEnv):
    """HalfCheetah running at a target forward velocity v* ~ U[0, 2]."""

    MAX_VELOCITY = CHEETAH_MAX_VELOCITY
    REWARD = staticmethod(cheetah_vel_reward)


class HalfCheetahDirEnv(_CheetahVector, _Direction, HalfCheetahEnv):
    """HalfCheetah running forward (d = +1) or backward (d = −1)."""

    REWARD = staticmethod(cheetah_dir_reward)


class AntDirEnv(_AntVector, _Direction, AntEnv):
    """Ant running forward (d = +1) or backward (d = −1) along x."""

    REWARD = staticmethod(ant_dir_reward)


class AntVelEnv(_AntVector, _Velocity, AntEnv):
    """Ant running along x at a target velocity v* ~ U[0, 3]."""

    MAX_VELOCITY = ANT_MAX_VELOCITY
    REWARD = staticmethod(ant_vel_reward)
