"""A plan as a pipeline YAML a person can read and edit: every planned value with its reason beside it."""

from __future__ import annotations

from typing import Any

import yaml

from medseg.planning.planner import Plan
from medseg.planning.rules import Planned

SECTION_ORDER = ("data", "data.augment", "model", "patch", "slice2d", "lowres", "train")


def _flow(value: Any) -> str:
    """One YAML value on one line (lists in brackets)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def render_plan(plan: Plan, header: list[str], fixed: dict[str, dict[str, tuple[Any, str]]]) -> str:
    """The YAML text: ``header`` comment lines, then ``fixed`` values (name, root, classes: with their
    own reasons) and the planned ones, section by section, each with a ``# reason`` comment."""
    lines = [f"# {line}" for line in header] + [f"# budget assumed: {plan.budget}"]
    lines += [f"# {line}" for line in plan.summary]
    for key, (value, reason) in fixed.get("", {}).items():
        lines.append(f"{key}: {_flow(value)}  # {reason}")
    sections = [s for s in SECTION_ORDER if s in plan.values or s in fixed]
    sections += [s for s in plan.values if s not in sections]
    for section in sections:
        if section == "data.augment":
            continue
        lines.append(f"{section}:")
        entries = {**{k: v for k, v in fixed.get(section, {}).items()},
                   **{k: (p.value, p.reason) for k, p in plan.values.get(section, {}).items()}}
        for key, (value, reason) in entries.items():
            lines.append(f"  {key}: {_flow(value)}  # {reason}")
        if section == "data" and "data.augment" in plan.values:
            lines.append("  augment:")
            for key, p in plan.values["data.augment"].items():
                lines.append(f"    {key}: {_flow(p.value)}  # {p.reason}")
    return "\n".join(lines) + "\n"


def render_planned(header: list[str], planned: dict[str, Planned]) -> str:
    """Planned values given by dotted key (``compare.anchor_sizes``) as YAML sections, each value with
    its ``# reason``, under ``header`` comment lines."""
    lines = [f"# {line}" for line in header]
    sections: dict[str, list[str]] = {}
    for key, p in planned.items():
        section, name = key.rsplit(".", 1)
        sections.setdefault(section, []).append(f"  {name}: {_flow(p.value)}  # {p.reason}")
    for section, entries in sections.items():
        lines += [f"{section}:", *entries]
    return "\n".join(lines) + "\n"
