"""Benchmarks, not tests: they print figures. ``python -m medseg.benchmark`` (training samples/s before and
after the speed settings, inference time and memory) and ``python -m medseg.benchmark.nnunet_peer`` (nnU-Net v2
on the same split and wall-clock budget)."""
