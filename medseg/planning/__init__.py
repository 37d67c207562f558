"""Planning: a dataset's fingerprint -> a plan (spacing, normalisation, sampling, mirroring, patch,
topology, batch, bf16 on a CPU that has it) for a strategy, a device and a time budget, each value with its
reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config import Config, load_config
from medseg.data.checks import check_headers
from medseg.data.datasets import Case, Dataset, discover_dataset
from medseg.data.planning import plan as resolve
from medseg.data.splits import make_split
from medseg.hardware import cpu_has_native_bf16
from medseg.planning.fingerprint import Fingerprint, measure_dataset
from medseg.planning.plan_file import render_plan
from medseg.planning.planner import Device, Plan, Strategy, make_plan


@dataclass
class DatasetPlan:
    """The plan of a dataset and what it was made from."""

    plan: Plan
    fingerprint: Fingerprint
    dataset: Dataset
    resolved: Config

    @property
    def default_name(self) -> str:
        """The run folder's name when no config names it."""
        return f"{self.dataset.root.name}_{self.resolved.model.strategy}"

    def to_yaml(self, strategy: str, plan: Plan | None = None, config_source: str | None = None) -> str:
        """``plan`` (by default the whole plan) as a pipeline YAML with a reason beside every value; with
        ``config_source``, the part of a plan that ``medseg train`` layered under that CONFIG."""
        data = self.resolved.data
        found = f"{self.dataset.layout} layout, {len(self.dataset.cases)} cases"
        fixed: dict[str, dict[str, tuple[Any, str]]] = {
            "": {} if config_source else {"name": (self.default_name, "the run folder's name")},
            "data": {
                "root": (str(self.dataset.root.resolve()), found),
                "modality": (data.modality, "from dataset.json" if self.dataset.modality else "no CT declared"),
                "class_names": (data.class_names, "from dataset.json" if self.dataset.class_names
                                else "label values found in the training cases"),
            },
            "model": {"strategy": (strategy, "medseg plan --strategy")},
        }
        header = [f"medseg plan {self.dataset.root} --strategy {strategy}: edit freely, then",
                  "medseg train THIS_FILE  (KEY=VALUE overrides win over the values here)"]
        if config_source:
            header = [f"planned by medseg train from {self.dataset.root} under {config_source}: the values of",
                      "that CONFIG and the KEY=VALUE overrides win over these (config.yaml holds the result)"]
        return render_plan(plan or self.plan, header, fixed)


def plan_dataset(root: str | Path, strategy: Strategy = "patch", device: Device = "cpu",
                 minutes: float | None = None, overrides: list[str] | None = None) -> DatasetPlan:
    """Discover and check ``root``, split it as ``medseg train`` would, fingerprint the training cases
    and plan; nothing is written."""
    budget = f"train.max_minutes={'null' if minutes is None else minutes}"
    config = load_config(None, [f"data.root={root}", f"model.strategy={strategy}", budget, *(overrides or [])])
    dataset = discover_dataset(root)
    cases = dataset.cases[: config.data.max_cases] if config.data.max_cases else dataset.cases
    check_headers(cases, len(dataset.class_names) if dataset.class_names else None)
    d = config.data
    split = make_split([c.case_id for c in cases], d.val_fraction, d.num_folds, d.fold, d.split_seed, d.train_fraction)
    by_id = {c.case_id: c for c in cases}
    return plan_cases(dataset, [by_id[i] for i in split["train"]], config, device)


def plan_cases(dataset: Dataset, train_cases: list[Case], config: Config, device: Device) -> DatasetPlan:
    """The plan for ``config.model.strategy`` and ``config.train.max_minutes`` from ``train_cases``."""
    resolved = resolve(config, dataset, train_cases)
    names = resolved.data.class_names or []
    fingerprint = measure_dataset(train_cases, resolved.data.modality == "ct", len(names))
    plan = make_plan(fingerprint, names, resolved.data.modality, config.model.strategy, device,
                     config.train.max_minutes, config.data.spacing, native_bf16=cpu_has_native_bf16())
    return DatasetPlan(plan, fingerprint, dataset, resolved)


__all__ = ["DatasetPlan", "Fingerprint", "Plan", "plan_cases", "plan_dataset"]
