"""The training engine: the Task protocol, one Trainer for every task, hooks, checkpoints, run folders
and loaders. Nothing here knows which strategy or model it trains."""
