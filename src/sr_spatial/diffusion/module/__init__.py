"""The model's state beyond the layers: the network, its condition, the fitted statistics and the sampler."""
