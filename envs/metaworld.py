"""Meta-World's meta-learning benchmarks (Yu et al. 2019; v3 envs, ``metaworld`` 3.1.1) as metarl task families.

Families: ``metarl/ML1-<task>`` for each of the 50 v3 tasks (e.g. ``metarl/ML1-reach-v3``), ``metarl/ML10-v3``
and ``metarl/ML45-v3``. The splits are Meta-World's own: ``metaworld.ML1(name, seed)``,
``ML10(seed)`` and ``ML45(seed)`` build them, and this module only converts them to plain data.

## Observation
Meta-World's 39 numbers (hand position, gripper opening, object poses, the same of the previous
step, and the goal's three slots, zeroed: the ML benchmarks hide the goal). float64; rollouts cast to float32.

## Action
4 numbers: hand displacement (x, y, z) and gripper effort, in [-1, 1]. Raw policy actions go to
Meta-World's ``step`` unchanged, which clips the displacement (MuJoCo clamps the gripper control).

## Reward, termination, success
Meta-World's (its default reward version, ``v2``, unless ``reward_function_version`` says otherwise).
Episodes never terminate; they are truncated at 500 steps, Meta-World's ``max_path_length`` (a
longer ``horizon`` fails in Meta-World's ``step``). ``info["success"]`` is reported every step; an
episode succeeds if any of its steps does (the rollouts' ``success``).

## Task
``{"env_name": "reach-v3", "rand_vec": [...]}``: the class and Meta-World's goal/object-position
vector (6 to 9 numbers) of one of the benchmark's tasks. Meta-World's own ``Task`` holds a pickle
(``data``) that names the env class; metarl never ships or loads those bytes. They are unpickled
once, right after Meta-World made them in this process from the benchmark seed
(:func:`benchmark_tasks`), and rebuilt locally from the plain numbers wherever an env needs a task
(:func:`metaworld_task`). So tasks reach the rollout actors, run directories and checkpoints as JSON.

## Splits and sampling
``sample_tasks(n, rng)`` draws from the train split, ``sample_tasks(n, rng, split="test")`` from the
test split (ML1: 50 other goals of the same task, from seed + 1; ML10 / ML45: the 5 held-out
classes). A draw is class-balanced, as Meta-World's ML wrappers assign a meta-batch: each class gets
``n // classes`` tasks, ``n % classes`` random classes one more; goals within a class without
replacement (with replacement only if a class is asked for more than its 50).

Building the benchmark resets every class 50 times (about 19 s for ML10's 15 classes), so it is done
once per process and only where tasks are drawn (driver, evaluation); the rollout actors get tasks as data.
"""

from __future__ import annotations

import functools
import math
import pickle
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.task_env import Task

BENCHMARKS = ("ML1", "ML10", "ML45")
SPLITS = ("train", "test")
HORIZON = 500  # Meta-World's max_path_length
OBS_DIM, ACT_DIM = 39, 4
# Meta-World's 50 v3 tasks (metaworld.env_dict.ALL_V3_ENVIRONMENTS, in its order; a test checks the copy), listed
# here so that registering the 52 ids does not import MuJoCo.
V3_NAMES = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)


def family_ids() -> dict[str, dict[str, Any]]:
    """Gymnasium id -> registration kwargs: ``metarl/ML1-<task>`` per v3 task, ``metarl/ML10-v3``,
    ``metarl/ML45-v3``."""
    ids = {f"metarl/ML1-{name}": {"benchmark": "ML1", "env_name": name} for name in V3_NAMES}
    ids.update({f"metarl/{b}-v3": {"benchmark": b} for b in ("ML10", "ML45")})
    return ids


def _metaworld():
    import metaworld  # lazy: imports MuJoCo and registers Meta-World's own ids: only when a family is used

    return metaworld


def class_split(benchmark: str, env_name: str | None = None) -> tuple[list[str], list[str]]:
    """``(train classes, test classes)`` of a benchmark, from Meta-World's own tables."""
    env_dict = _metaworld().env_dict
    if benchmark == "ML1":
        if env_name not in env_dict.ALL_V3_ENVIRONMENTS:
            raise ValueError(
                f"ML1: env_name {env_name!r} is not a Meta-World v3 task; choose one of "
                f"{', '.join(env_dict.ALL_V3_ENVIRONMENTS)}"
            )
        return [env_name], [env_name]
    table = {"ML10": env_dict.ML10_V3, "ML45": env_dict.ML45_V3}.get(benchmark)
    if table is None:
        raise ValueError(f"benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    return list(table["train"]), list(table["test"])


@functools.lru_cache(maxsize=4)
def benchmark_tasks(benchmark: str, env_name: str | None, seed: int) -> dict[str, list[Task]]:
    """Meta-World's train and test tasks of a benchmark and seed, as plain data (built once per process).

    Each Meta-World ``Task`` is decoded right after Meta-World made it here; its data must be exactly
    the class, the goal vector and ``partially_observable=True`` (anything else would be dropped
    silently, so it is an error).
    """
    mw = _metaworld()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"benchmark_seed must be an integer, got {seed!r}")
    if benchmark == "ML1":
        class_split("ML1", env_name)  # a clear error for an unknown task name
        built = mw.ML1(env_name, seed=seed)
    elif benchmark in ("ML10", "ML45"):
        built = getattr(mw, benchmark)(seed=seed)
    else:
        raise ValueError(f"benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    return {
        "train": [_from_metaworld(t) for t in built.train_tasks],
        "test": [_from_metaworld(t) for t in built.test_tasks],
    }


def _from_metaworld(task) -> Task:
    data = pickle.loads(task.data)  # made by metaworld in this process a moment ago, never read from outside
    if set(data) != {"rand_vec", "env_cls", "partially_observable"} or data["partially_observable"] is not True:
        raise RuntimeError(f"metaworld task {task.env_name}: unexpected task data keys {sorted(data)}")
    return {"env_name": str(task.env_name), "rand_vec": [float(x) for x in np.asarray(data["rand_vec"])]}


def validate_task(task: Task, classes: list[str] | None = None) -> Task:
    """The task as canonical plain data; ``ValueError`` naming the task and the rule."""
    if not isinstance(task, dict) or set(task) != {"env_name", "rand_vec"}:
        raise ValueError(
            f"invalid task {str(task)[:200]}: a Meta-World task is a dict with exactly the keys "
            "'env_name' and 'rand_vec'"
        )
    name = task["env_name"]
    allowed = classes if classes is not None else list(V3_NAMES)
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"invalid task: env_name {str(name)[:80]!r} must be one of {', '.join(allowed)}")
    raw = task["rand_vec"]
    if not isinstance(raw, (list, tuple)) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in raw
    ):
        raise ValueError(f"invalid task {name}: 'rand_vec' must be a list of finite numbers")
    if not 3 <= len(raw) <= 12:
        raise ValueError(f"invalid task {name}: 'rand_vec' has {len(raw)} numbers; Meta-World's have 3 to 12")
    return {"env_name": name, "rand_vec": [float(x) for x in raw]}


def metaworld_task(task: Task):
    """Meta-World's ``Task`` for a plain-data task, made here (its pickle holds only our numbers and the class)."""
    mw = _metaworld()
    name = task["env_name"]
    data = {
        "rand_vec": np.asarray(task["rand_vec"], dtype=np.float64),
        "env_cls": mw.env_dict.ALL_V3_ENVIRONMENTS[name],
        "partially_observable": True,
    }
    return mw.Task(env_name=name, data=pickle.dumps(data))


def set_env_task(env: Any, task: Task) -> None:
    """``env.set_task`` (Meta-World's own) for a validated plain-data task."""
    expected = env._random_reset_space.low.size
    if len(task["rand_vec"]) != expected:
        raise ValueError(
            f"invalid task {task['env_name']}: 'rand_vec' must have {expected} numbers, got {len(task['rand_vec'])}"
        )
    env.set_task(metaworld_task(task))


def observation_space() -> gym.spaces.Box:
    """Meta-World's partially observable 39-d space (goal slots fixed at 0), without building an env."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv  # lazy: metaworld imports MuJoCo

    hand = SawyerXYZEnv._HAND_SPACE
    obj = np.full(14, np.inf)
    low = np.hstack((hand.low, -1.0, -obj, hand.low, -1.0, -obj, np.zeros(3)))
    high = np.hstack((hand.high, 1.0, obj, hand.high, 1.0, obj, np.zeros(3)))
    return gym.spaces.Box(low, high, dtype=np.float64)


def class_balanced(by_class: dict[str, list[Task]], n: int, rng: np.random.Generator) -> list[Task]:
    """``n`` tasks, ``n // C`` per class and one more for ``n % C`` random classes (see the module docstring)."""
    names = list(by_class)
    counts = np.full(len(names), n // len(names))
    counts[rng.choice(len(names), n % len(names), replace=False)] += 1
    out: list[Task] = []
    for name, k in zip(names, counts):
        pool = by_class[name]
        out += [dict(pool[i]) for i in rng.choice(len(pool), int(k), replace=int(k) > len(pool))]
    return out


# -- the single env (task API, rendering, the Gymnasium path) ------------------------------------------
class MetaWorldTaskEnv(gym.Env):
    """One Meta-World benchmark as a metarl task env: ``set_task`` switches class and goal.

    Holds one Meta-World env per class it has run (built on first use); the benchmark's task lists
    are built only when tasks are drawn. ``benchmark_seed`` is Meta-World's benchmark seed.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}
    SPLITS = SPLITS
    MAX_HORIZON = HORIZON  # Meta-World's step refuses to go past max_path_length
    renders_mujoco = True  # ``metarl render`` draws it offscreen, as the MuJoCo locomotion families

    def __init__(
        self,
        benchmark: str = "ML1",
        env_name: str | None = None,
        benchmark_seed: int = 0,
        reward_function_version: str | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str | None = None,
    ):
        if isinstance(benchmark_seed, bool) or not isinstance(benchmark_seed, int):
            raise ValueError(f"benchmark_seed must be an integer, got {benchmark_seed!r}")
        if reward_function_version not in (None, "v1", "v2"):
            raise ValueError(f"reward_function_version {reward_function_version!r}: choose v1 or v2 (default: v2)")
        self.benchmark, self.env_name, self.benchmark_seed = benchmark, env_name, benchmark_seed
        self.train_classes, self.test_classes = class_split(benchmark, env_name)
        self.classes = list(dict.fromkeys(self.train_classes + self.test_classes))
        if render_mode is not None and camera_name is None:
            camera_name = "corner"  # Meta-World's view of the table; MuJoCo's free camera starts inside the scene
        self.env_kwargs = _class_kwargs(reward_function_version, render_mode, width, height, camera_name)
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), dtype=np.float32)
        self._envs: dict[str, Any] = {}
        self._task: Task | None = None
        self._current: Any = None

    # -- tasks --------------------------------------------------------------------------------------
    def tasks(self, split: str = "train") -> list[Task]:
        """Every task of ``split`` (50 per class), in Meta-World's order."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
        return [dict(t) for t in benchmark_tasks(self.benchmark, self.env_name, self.benchmark_seed)[split]]

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None, split: str = "train") -> list[Task]:
        rng = self.np_random if rng is None else rng
        by_class: dict[str, list[Task]] = {}
        for task in self.tasks(split):
            by_class.setdefault(task["env_name"], []).append(task)
        return class_balanced(by_class, n, rng)

    def set_task(self, task: Task) -> None:
        task = validate_task(task, self.classes)
        env = self._class_env(task["env_name"])
        set_env_task(env, task)
        self._task, self._current = task, env

    def get_task(self) -> Task:
        if self._task is None:  # ValueError: the CLI shows it as one line (--goal has no meaning here)
            raise ValueError(
                f"{self.benchmark}: no task set (Meta-World has no default task); give one as JSON, e.g. "
                f'--task \'{{"env_name": "{self.train_classes[0]}", "rand_vec": [...]}}\' with '
                f"a goal vector of the benchmark"
            )
        return {"env_name": self._task["env_name"], "rand_vec": list(self._task["rand_vec"])}

    def _class_env(self, name: str) -> Any:
        if name not in self._envs:
            self._envs[name] = _metaworld().env_dict.ALL_V3_ENVIRONMENTS[name](**self.env_kwargs)
        return self._envs[name]

    # -- episodes ---------------------------------------------------------------------------------
    def _env(self) -> Any:
        if self._current is None:
            raise RuntimeError("no task set yet: call set_task first (Meta-World envs have no default task)")
        return self._current

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # Meta-World's resets are deterministic given the task
        return self._env().reset()

    def step(self, action):
        return self._env().step(np.asarray(action))

    def render(self):
        """The frame right side up: Meta-World's cameras (``corner`` and the others) come out of MuJoCo's
        offscreen renderer upside down (Metaworld #505, #516), so rows are flipped."""
        frame = self._env().render()
        return None if frame is None else np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs, self._current = {}, None

    @classmethod
    def make_vector(cls, tasks: list[Task], episodes_per_task: int, **env_kwargs: Any) -> MetaWorldVectorEnv:
        return MetaWorldVectorEnv(tasks, episodes_per_task, **env_kwargs)


def _class_kwargs(reward_function_version, render_mode, width, height, camera_name) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"render_mode": render_mode, "width": width, "height": height}
    if camera_name is not None:
        kwargs["camera_name"] = camera_name
    if reward_function_version is not None:
        kwargs["reward_function_version"] = reward_function_version
    return kwargs


# -- the native vector form ----------------------------------------------------------------------------
_NEXT_MODEL: list[Any] = [None]  # the MjModel the next env built by a _sharing_class uses (one thread per actor)


@functools.cache
def _sharing_class(cls: type) -> type:
    """``cls`` whose new instances take an existing ``MjModel`` instead of compiling the XML again."""

    def _initialize_simulation(self):
        model = _NEXT_MODEL[0]
        if model is None:
            return cls._initialize_simulation(self)
        import mujoco  # lazy: MuJoCo only when a Meta-World env is built

        return model, mujoco.MjData(model)

    return type(
        cls.__name__,
        (cls,),
        {
            "_initialize_simulation": _initialize_simulation,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )


class _Group:
    """The env copies of one task: they share one ``MjModel`` (≈ 20 MB, with textures), each has its own ``MjData``.

    Sharing is safe only among copies of the same task: some classes move bodies in the *model* at
    reset (``model.body_pos``), and copies of one task write the same values.
    """

    def __init__(self, name: str, env_kwargs: dict[str, Any]):
        self.name, self.env_kwargs = name, env_kwargs
        self.cls = _sharing_class(_metaworld().env_dict.ALL_V3_ENVIRONMENTS[name])
        self.envs = [self.cls(**env_kwargs)]

    def grow(self, n: int) -> None:
        _NEXT_MODEL[0] = self.envs[0].model
        try:
            while len(self.envs) < n:
                self.envs.append(self.cls(**self.env_kwargs))
        finally:
            _NEXT_MODEL[0] = None


class MetaWorldVectorEnv:
    """Many (task, episode) copies of Meta-World envs stepped as one array env (``(tasks, episodes, ...)``).

    Why: a Meta-World step is ~0.3–0.7 ms of MuJoCo and Python inside Meta-World; Gymnasium's wrappers and
    ``SyncVectorEnv``'s per-step info merging would add as much again. Copies are bare Meta-World envs,
    stepped with Meta-World's own ``step`` (so observations, rewards and success are Meta-World's:
    tests/test_metaworld.py), kept in a pool per class and reused phase after phase (``assign``): a
    phase with a new mix of tasks only builds the copies it lacks. Reset seeds are accepted and unused:
    Meta-World's resets are deterministic given the task.
    """

    any_size = True  # VectorEnvs keeps this one whatever the next phase's number of copies

    def __init__(
        self,
        tasks: list[Task],
        episodes_per_task: int,
        seeds: list[int] | None = None,
        benchmark: str | None = None,
        env_name: str | None = None,
        benchmark_seed: int = 0,
        reward_function_version: str | None = None,
        **_render: Any,
    ):
        # benchmark / env_name / benchmark_seed say which tasks the driver draws; the copies take any v3 task
        self.env_kwargs = _class_kwargs(reward_function_version, None, 480, 480, None)
        self.observation_shape = (OBS_DIM,)
        self.action_shape = (ACT_DIM,)
        self._pool: dict[str, list[_Group]] = {}
        self.assign(tasks, episodes_per_task, seeds)

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def assign(self, tasks: list[Task], episodes_per_task: int, seeds: list[int] | None = None) -> MetaWorldVectorEnv:
        """Copies ``i * E .. i * E + E - 1`` run task ``i``; takes effect at the next ``reset``."""
        tasks = [validate_task(t) for t in tasks]
        used: dict[str, int] = {}
        self.envs = []
        for task in tasks:
            name = task["env_name"]
            groups = self._pool.setdefault(name, [])
            k = used.get(name, 0)
            used[name] = k + 1
            if k == len(groups):
                groups.append(_Group(name, self.env_kwargs))
            group = groups[k]
            group.grow(episodes_per_task)
            for env in group.envs[:episodes_per_task]:
                set_env_task(env, task)
                self.envs.append(env)
        self.num_tasks, self.episodes_per_task = len(tasks), episodes_per_task
        n = len(self.envs)
        self._obs = np.zeros((n, OBS_DIM), dtype=np.float32)
        self._reward = np.zeros(n, dtype=np.float32)
        self._success = np.zeros(n, dtype=bool)
        self.last_success = self._success.reshape(self.num_tasks, episodes_per_task)
        return self

    def reset(self) -> np.ndarray:
        for i, env in enumerate(self.envs):
            self._obs[i] = env.reset()[0]
        self._success[:] = False
        return self._obs.reshape(self.num_tasks, self.episodes_per_task, OBS_DIM).copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(obs, reward, terminated)``; ``last_success`` holds this step's ``info["success"]`` per copy."""
        flat = np.asarray(actions, dtype=np.float32).reshape(len(self.envs), ACT_DIM)
        obs, reward, success = self._obs, self._reward, self._success
        for i, env in enumerate(self.envs):
            o, r, _, _, info = env.step(flat[i])
            obs[i], reward[i], success[i] = o, r, info["success"]
        shape = (self.num_tasks, self.episodes_per_task)
        return obs.reshape(*shape, OBS_DIM).copy(), reward.reshape(shape).copy(), np.zeros(shape, dtype=bool)

    def close(self) -> None:
        for groups in self._pool.values():
            for group in groups:
                for env in group.envs:
                    env.close()
        self._pool, self.envs = {}, []
