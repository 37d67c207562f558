"""What ``train`` and ``compare`` do before anything is written: resolve the config, find and check the
dataset, split it and plan the data-dependent values; or read back a run folder to resume. A helper of
the workflows, not a workflow: nothing here creates a file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config import Config, load_config, user_keys
from medseg.data.checks import check_headers
from medseg.data.datasets import Case, discover_dataset
from medseg.data.planning import plan
from medseg.data.splits import make_split
from medseg.engine.run_folder import new_run_dir, read_run_to_resume
from medseg.errors import MedsegError
from medseg.planning import plan_cases
from medseg.planning.planner import Device
from medseg.ssl.transfer import pretrained_window_size


@dataclass
class LabelledRun:
    """A resolved config, its split, the run folder it will write and the dataset's cases by id."""

    config: Config
    split: dict[str, list[str]]
    run_dir: Path
    cases: dict[str, Case]
    plan_text: str | None = None  # the plan made on the fly, with its reasons, to keep in the run folder
    # Planned values dropped because they go with one the user set (planner.COUPLED_KEYS), as
    # "key=value" with the value that applies instead: a hand-set width also drops the planned grid.
    coupled_unplanned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [i for i in self.split["train"] + self.split["validation"] if i not in self.cases]
        if missing:
            raise MedsegError(f"{self.config.data.root}: split names cases that are not in the dataset: "
                              f"{', '.join(missing[:5])}")

    def part(self, name: str) -> list[Case]:
        """The cases of ``split[name]`` (``train`` or ``validation``)."""
        return [self.cases[i] for i in self.split[name]]


def prepare_labelled_run(
    command: str, config_path: str | Path | None, data_dir: str | Path | None, output: str | Path | None,
    overrides: list[str], plan_for: Device | None = None,
) -> LabelledRun:
    """Config, dataset, header checks, split and resolved values of a new run. With ``plan_for`` (a
    device) the pipeline is planned from the training cases first; what CONFIG sets wins over the plan
    and the overrides win over both. Raises before anything is written."""
    config = load_config(config_path, overrides, command=command)
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(data_dir)))
    if not config.data.root:
        raise MedsegError("no dataset: pass --data DIR or set data.root in the config")
    run_dir = new_run_dir(output, config.name)
    dataset = discover_dataset(config.data.root)
    # Absolute, so the saved config still finds the data when resumed from another folder.
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(dataset.root.resolve())))
    cases = dataset.cases[: config.data.max_cases] if config.data.max_cases else dataset.cases
    check_headers(cases, len(dataset.class_names) if dataset.class_names else None)
    d = config.data
    split = make_split([c.case_id for c in cases], d.val_fraction, d.num_folds, d.fold, d.split_seed, d.train_fraction)
    by_id = {c.case_id: c for c in cases}
    train_cases = [by_id[i] for i in split["train"]]
    plan_text, coupled = None, []
    if plan_for is not None:
        planned = plan_cases(dataset, train_cases, config, plan_for)
        chosen = user_keys(config_path, overrides)
        kept = planned.plan.without(chosen)
        plan_text = planned.to_yaml(config.model.strategy, kept, str(config_path) if config_path else None)
        layer = kept.as_dict() if config_path is not None else {"name": planned.default_name, **kept.as_dict()}
        root = config.data.root
        config = load_config(config_path, overrides, command=command, planned=layer)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
        coupled = sorted(planned.plan.keys() - kept.keys() - chosen)
    config = plan(config, dataset, train_cases)
    coupled_unplanned = tuple(f"{key}={_value_at(config, key)}" for key in coupled)
    if config.model.pretrained:  # absolute, like data.root
        config.model.pretrained = str(Path(config.model.pretrained).resolve())
        if config.model.network == "swin_unetr" and config.model.window_size is None:
            config.model.window_size = pretrained_window_size(config.model.pretrained)
    return LabelledRun(config, split, run_dir, by_id, plan_text, coupled_unplanned)


def _value_at(config: Config, dotted_key: str) -> Any:
    """The resolved value of ``data.augment.flip_axes``-style keys."""
    node: Any = config
    for part in dotted_key.split("."):
        node = getattr(node, part)
    return node


def resume_labelled_run(command: str, output: str | Path | None, overrides: list[str],
                        required: tuple[str, ...] = ("config.yaml", "split.json", "last.pt")) -> LabelledRun:
    """The saved config (with ``overrides``), split and dataset of a run folder of ``command``."""
    config, split, run_dir = read_run_to_resume(output, overrides, command, required)
    return LabelledRun(config, split, run_dir, {c.case_id: c for c in discover_dataset(config.data.root or "").cases})
