"""Dataset discovery, splits, transform pipelines and synthetic phantoms."""
