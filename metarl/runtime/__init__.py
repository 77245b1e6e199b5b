"""The distributed runtime around the core: rollout actors, the learner actor, the trainer's loop,
checkpoints, run directories, metrics, signals and evaluation. Ray lives here and above.
"""
