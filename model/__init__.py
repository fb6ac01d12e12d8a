"""The MLP, its NumPy oracle, data sources and the training loop. Knows nothing of Ray."""
