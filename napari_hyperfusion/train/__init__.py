"""Training (``loop``: the DDP-ready training loop and its config; ``run``:
one training run from a cohort to a model file), k-fold evaluation against
the baselines (``evaluate``) and the metrics both use (``metrics``)."""
