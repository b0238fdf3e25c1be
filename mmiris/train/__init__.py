"""Training: the sampler (sampler.py), the loop (trainer.py), DDP setup (distributed.py),
checkpoints (checkpoint.py), the config (config.py). Building and loading models:
``mmiris.models.build``.

Import from the submodules; this package imports nothing so ``mmiris --help`` stays fast.
"""
