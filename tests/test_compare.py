"""``medseg compare`` end to end on tiny phantoms, and its one-line errors on bad input."""

import csv

import pytest
import torch
import yaml
from PIL import Image

from medseg.cli import main
from medseg.config import config_from_dict
from medseg.models2d import ClassSpec, build_model_2d

MODELS = ["fcn", "unet2d", "maskrcnn", "panoptic"]
TINY = [
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "model.num_res_units=0",
    "data.spacing=[3.0,3.0,3.0]",
    "data.val_fraction=0.34",
    "compare.slice_size=[32,32]",
    "compare.max_steps=1",
    "compare.batch_size=2",
    "compare.val_slices_per_case=3",
    "compare.examples=2",
    "compare.stuff_classes=[spine]",
]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "compare.yaml"
    path.write_text(f"name: tiny_compare\ncompare:\n  models: [{', '.join(MODELS)}]\n")
    return str(path)


@pytest.fixture(scope="module")
def compared(phantom_dir, config_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("compare") / "out"
    assert main(["compare", config_file, "--data", str(phantom_dir), "--output", str(output), *TINY]) == 0
    return output


def test_compare_writes_one_table_over_every_model(compared):
    with open(compared / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["metric", *MODELS]
    table = {row[0]: dict(zip(MODELS, row[1:])) for row in rows[1:]}
    for metric in ("dice", "iou", "pixel_accuracy", "precision", "recall", "f1", "dice_kidney",
                   "steps", "train_seconds", "infer_ms_per_slice", "parameters"):
        assert all(table[metric][m] != "" for m in MODELS), metric
    assert all(table["steps"][m] == "1" for m in MODELS)
    # Instance metrics only where there are instances, panoptic ones only for the panoptic model.
    assert [m for m in MODELS if table["mask_AP"][m] != ""] == ["maskrcnn", "panoptic"]
    assert [m for m in MODELS if table["PQ"][m] != ""] == ["panoptic"]
    markdown = (compared / "results.md").read_text()
    assert "| metric | fcn | unet2d | maskrcnn | panoptic |" in markdown and "![examples](examples.png)" in markdown


def test_compare_writes_the_figure_checkpoints_and_config(compared):
    figure = Image.open(compared / "examples.png")
    # Two example rows (one per validation case) of 32-pixel tiles: image, ground truth and one column
    # per model, 2-pixel gaps.
    assert figure.mode == "RGB" and figure.size == (2 + (2 + len(MODELS)) * 34, 2 + 2 * 34)
    config = config_from_dict(yaml.safe_load((compared / "config.yaml").read_text()))
    assert config.data.class_names == ["background", "liver", "kidney", "spine"]
    classes = ClassSpec.from_config(config.data.class_names, config.compare.groups, config.compare.stuff_classes)
    for name in MODELS:
        checkpoint = torch.load(compared / "models" / f"{name}.pt", weights_only=True)
        assert checkpoint["classes"] == list(classes.names) and checkpoint["steps"] == 1
        build_model_2d(name, config, classes).load_state_dict(checkpoint["model"])


@pytest.mark.parametrize("case, extra, words", [
    ("missing data", ["--data", "{tmp}/nowhere"], ["nowhere", "not found"]),
    ("unknown model", ["compare.models=[fcn,segformer]"], ["compare.models", "segformer"]),
    ("bad size", ["compare.slice_size=[48,48]"], ["compare.slice_size", "32"]),
    ("bad group", ["compare.groups=[[organs,liver,kidny]]"], ["compare.groups", "kidny"]),
    ("no budget", ["compare.max_steps=null", "compare.max_minutes=null"], ["compare.max_minutes"]),
    ("bad anchors", ["compare.anchor_sizes=[8,16]"], ["compare.anchor_sizes", "5"]),
    ("all stuff", ["compare.stuff_classes=[liver,kidney,spine]"], ["compare.stuff_classes", "maskrcnn"]),
])
def test_bad_input_is_one_line_and_writes_nothing(phantom_dir, config_file, tmp_path, capsys, case, extra, words):
    output = tmp_path / "out"
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    data = [] if "--data" in extra else ["--data", str(phantom_dir)]
    assert main(["compare", config_file, *data, "--output", str(output), *TINY, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medseg compare: error:"), err
    assert all(w in err for w in words), err
    assert not output.exists()


def test_compare_refuses_a_non_empty_output_folder(phantom_dir, config_file, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["compare", config_file, "--data", str(phantom_dir), "--output", str(tmp_path), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
