"""Training: the sampler (sampler.py), the loop (trainer.py), DDP setup (distributed.py),
checkpoints and the model loader (checkpoint.py: ``load_model``), the config (config.py).

Import from the submodules; this package imports nothing so ``mmiris --help`` stays fast.
"""
