"""The results page (``docs/results.md``) and the README's short table, written from the run folders they
report on, so that no figure is typed by hand and none can drift from its run.

    python -m medseg.report.results keep RUN_FOLDER docs/runs/NAME   # the run's small files, no weights
    python -m medseg.report.results write docs/results.yaml          # docs/results.md and the README table

``docs/results.yaml`` lists the sections: a title, the command that made the runs, the machine, the
budget in minutes and where the runs' files are kept. Every section must say its budget, machine and
command; the budget is checked against each run's own config. Equal-budget comparisons get steps,
samples seen and seconds per step beside every figure, and each method's validation Dice at the
largest step count all of them reached. A method whose mean Dice stays under ``LEARNED_NOTHING`` is
reported as having learned nothing at that budget, with its steps per second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.report.results_sections import RENDERERS, REQUIRED, Section, anchor, table
from medseg.report.run_files import keep_run, read_json

README_START = "<!-- results: written by python -m medseg.report.results; do not edit -->"
README_END = "<!-- end of results -->"


def _recorded_provenance(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """The section with the command, machine and date its benchmark recorded in ``results.json`` (see
    ``medseg.benchmark.machine.provenance``) wherever the section does not say them itself."""
    recorded = root / spec.get("folder", "") / "results.json" if spec.get("folder") else None
    if recorded is None or not recorded.is_file():
        return spec
    result = read_json(recorded)
    filled = dict(spec)
    if not filled.get("command") and result.get("command"):
        filled["command"] = result["command"]
    if not filled.get("machine") and result.get("machine"):
        filled["machine"] = f"{result['machine']}; {result['date']}" if result.get("date") else result["machine"]
    return filled


def render_section(spec: dict[str, Any], root: Path) -> Section:
    """One section; refused unless it says, or its run recorded, its budget, machine and command."""
    spec = _recorded_provenance(spec, root)
    missing = [key for key in REQUIRED if not spec.get(key)]
    if missing:
        raise MedsegError(f"results section '{spec.get('title', '?')}': no {', '.join(missing)}")
    if spec["kind"] not in RENDERERS:
        raise MedsegError(f"results section '{spec['title']}': unknown kind '{spec['kind']}' "
                          f"(one of {', '.join(RENDERERS)})")
    body, headline = RENDERERS[spec["kind"]](spec, root)
    parts = [f"## {spec['title']}",
             f"**Budget:** {spec['budget']}  \n**Machine:** {spec['machine']}",
             "```\n" + spec["command"].strip() + "\n```",
             spec["about"].strip() if spec.get("about") else "", body,
             spec["conclusion"].strip() if spec.get("conclusion") else ""]
    return Section(spec["title"], "\n\n".join(p for p in parts if p), headline,
                   spec.get("short_title") or spec["title"], spec.get("short_budget") or spec["budget"])


def results_page(manifest: dict[str, Any], root: Path) -> tuple[str, str]:
    """The results page and the README's short table (with links into the page)."""
    sections = [render_section(spec, root) for spec in manifest["sections"]]
    contents = "\n".join(f"- [{s.title}](#{anchor(s.title)})" for s in sections)
    page = "\n\n".join([f"# {manifest['title']}", manifest["intro"].strip(), contents]
                       + [s.body for s in sections]) + "\n"
    link = manifest.get("page_link", "docs/results.md")
    rows = [[f"[{s.short_title}]({link}#{anchor(s.title)})", "; ".join(s.headline), s.short_budget]
            for s in sections]
    short = table(["result", "figure", "budget"], rows)
    return page, short


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MedsegError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError:
        raise MedsegError(f"{path}: not valid YAML") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sections"), list):
        raise MedsegError(f"{path}: not a results manifest (a mapping with a 'sections' list)")
    return manifest


def replace_readme_table(readme: str, short: str) -> str:
    """The README with the text between its results markers replaced by ``short``."""
    if README_START not in readme or README_END not in readme:
        raise MedsegError(f"README: no results markers ({README_START} ... {README_END})")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{short}\n{README_END}{tail}"


def write_results(manifest_path: Path) -> tuple[Path, Path]:
    """Write the page and the README table named in the manifest; nothing is written if a run is unreadable."""
    manifest = read_manifest(manifest_path)
    root = manifest_path.parent
    page, short = results_page(manifest, root)
    page_path = root / manifest.get("page", "results.md")
    readme_path = root / manifest.get("readme", "../README.md")
    readme = replace_readme_table(readme_path.read_text(encoding="utf-8"), short)
    for path, text in ((page_path, page), (readme_path, readme)):
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return page_path, readme_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.report.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    keep = commands.add_parser("keep", help="copy a run folder's small files (no weights) for the results page")
    keep.add_argument("source", type=Path)
    keep.add_argument("target", type=Path)
    write = commands.add_parser("write", help="write the results page and the README table from the manifest")
    write.add_argument("manifest", type=Path, nargs="?", default=Path("docs/results.yaml"))
    args = parser.parse_args(argv)
    try:
        if args.command == "keep":
            print(f"kept {len(keep_run(args.source, args.target))} files in {args.target}")
        else:
            page, readme = write_results(args.manifest)
            print(f"wrote {page} and the results table of {readme}")
    except MedsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError) as error:  # a run file without a value the page needs
        print(f"error: a run file of {args.manifest if args.command == 'write' else args.source} lacks "
              f"or garbles {error}; was it written by medseg?", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
