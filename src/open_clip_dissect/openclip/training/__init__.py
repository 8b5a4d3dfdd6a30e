"""The training step: the selecting loader, the training loop's hooks, loss weights, timing and the per-sample selection record."""
