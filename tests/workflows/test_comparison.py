"""``medseg compare`` end to end on tiny phantoms: one run folder per model on the one Trainer, resume,
one table, and one-line errors on bad input that leave nothing behind."""

import csv
import json
import shutil

import pytest
import torch
import yaml
from PIL import Image

from medseg.cli import main
from medseg.config import config_from_dict, load_config
from medseg.hardware import cpu_has_native_bf16
from medseg.models2d import ClassSpec, build_model_2d
from medseg.planning.rules import cpu_bf16
from medseg.workflows import comparison

MODELS = ["fcn", "unet2d", "maskrcnn", "panoptic"]
TINY = [
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "model.num_res_units=0",
    "data.spacing=[3.0,3.0,3.0]",
    "data.val_fraction=0.34",
    "compare.slice_size=[32,32]",
    "train.max_epochs=1",
    "train.iterations_per_epoch=1",
    "train.batch_size=2",
    "train.progress=false",
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
    assert main(["compare", config_file, "--data", str(phantom_dir), "--output", str(output), *TINY,
                 "train.max_epochs=2", "train.snapshot_steps=[1]"]) == 0
    return output


def test_compare_writes_one_table_over_every_model(compared):
    with open(compared / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["metric", *MODELS]
    table = {row[0]: dict(zip(MODELS, row[1:])) for row in rows[1:]}
    for metric in ("dice", "iou", "pixel_accuracy", "precision", "recall", "f1", "dice_kidney",
                   "steps", "samples_seen", "s_per_step", "train_seconds", "infer_ms_per_slice", "parameters"):
        assert all(table[metric][m] != "" for m in MODELS), metric
    assert all(table["steps"][m] == "2" and table["samples_seen"][m] == "4" for m in MODELS)
    # Instance metrics only where there are instances, panoptic ones only for the panoptic model.
    assert [m for m in MODELS if table["mask_AP"][m] != ""] == ["maskrcnn", "panoptic"]
    assert [m for m in MODELS if table["PQ"][m] != ""] == ["panoptic"]
    markdown = (compared / "results.md").read_text(encoding="utf-8")
    assert "| metric | fcn | unet2d | maskrcnn | panoptic |" in markdown and "![examples](examples.png)" in markdown


def test_compare_also_scores_every_model_at_an_equal_number_of_steps(compared):
    """Each model's weights at the largest snapshot step all of them reached (1 here, of 2 trained)."""
    with open(compared / "results_equal_steps.csv") as f:
        rows = list(csv.reader(f))
    table = {row[0]: dict(zip(MODELS, row[1:])) for row in rows[1:]}
    assert all(table["steps"][m] == "1" and table["samples_seen"][m] == "2" for m in MODELS)
    assert all(table["dice"][m] != "" and "infer_ms_per_slice" not in table for m in MODELS)
    for model in MODELS:
        snapshot = torch.load(compared / model / "snapshots" / "step_0000001.pt", weights_only=True)
        assert snapshot["global_step"] == 1 and "optimizer" not in snapshot
    markdown = (compared / "results.md").read_text(encoding="utf-8")
    assert "## At an equal number of steps (1 each)" in markdown
    assert "![Dice by steps](curves_steps.svg)" in markdown


def test_compare_draws_the_learning_curves_of_every_model(compared):
    import xml.etree.ElementTree as ElementTree

    for name in ("curves_steps.svg", "curves_minutes.svg"):
        svg = ElementTree.parse(compared / name).getroot()
        lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
        legend = [t.text for t in svg.findall("{http://www.w3.org/2000/svg}text")]
        assert len(lines) == len(MODELS) and set(MODELS) <= set(legend), name


def test_compare_draws_the_instances_and_panoptic_map_of_the_example_slices(compared):
    figure = Image.open(compared / "instances.png")
    # Two rows of 3x enlarged 32-pixel tiles, 4-pixel gaps: image, maskrcnn's instances, panoptic's segments.
    assert figure.mode == "RGB" and figure.size == (4 + 3 * (96 + 4), 4 + 2 * (96 + 4))
    assert "![instances](instances.png)" in (compared / "results.md").read_text(encoding="utf-8")


def test_instances_get_colours_of_their_own_and_stuff_its_class_colour():
    from medseg.engine.pictures import class_colour
    from medseg.models2d import Instances, PanopticResult, Prediction2D, Segment
    from medseg.models2d.report import INSTANCE_COLOURS, INSTANCE_ZOOM, _instance_tile

    image = torch.zeros(16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 6:10, 6:10] = True  # touching the first, same class
    instances = Instances(masks, torch.tensor([1, 1]), torch.tensor([[2, 2, 6, 6], [6, 6, 10, 10]]).float(),
                          torch.tensor([0.9, 0.8]))
    names = ("background", "kidney", "spine")
    tile = _instance_tile(image, Prediction2D(torch.zeros(3, 16, 16), instances), names)
    assert tile.shape == (3, 16 * INSTANCE_ZOOM, 16 * INSTANCE_ZOOM) and tile.any()
    # Detections under the score threshold are not drawn (the label map leaves them out too).
    assert not _instance_tile(image, Prediction2D(torch.zeros(3, 16, 16), instances), names, 0.95).any()
    ids = torch.zeros(16, 16, dtype=torch.int32)
    ids[masks[0]], ids[masks[1]], ids[12:, :] = 1, 2, 3
    panoptic = PanopticResult(ids, [Segment(1, 1, True, 16, 0.9), Segment(2, 1, True, 16, 0.8),
                                    Segment(3, 2, False, 64)])
    tile = _instance_tile(image, Prediction2D(torch.zeros(3, 16, 16), panoptic=panoptic), names)

    def colour_at(row: int, column: int) -> tuple[int, ...]:  # array [x, y] is drawn flipped and transposed
        return tuple(int(v) for v in tile[:, (15 - column) * INSTANCE_ZOOM + 1, (15 - row) * INSTANCE_ZOOM + 1])

    first, second, stuff = colour_at(4, 4), colour_at(8, 8), colour_at(14, 8)
    assert len({first, second, stuff, colour_at(0, 15)}) == 4  # two instances, stuff and background differ
    from PIL import ImageColor
    expected = [ImageColor.getrgb(INSTANCE_COLOURS[0]), ImageColor.getrgb(class_colour(2))]
    for seen, colour in zip((first, stuff), expected):  # 55% colour over black
        assert all(abs(v - round(0.55 * c)) <= 1 for v, c in zip(seen, colour)), (seen, colour)


def test_compare_writes_the_figure_checkpoints_and_config(compared):
    figure = Image.open(compared / "examples.png")
    # Two example rows (one per validation case) of 32-pixel tiles: image, ground truth and one column
    # per model, 2-pixel gaps.
    assert figure.mode == "RGB" and figure.size == (2 + (2 + len(MODELS)) * 34, 2 + 2 * 34)
    config = config_from_dict(yaml.safe_load((compared / "config.yaml").read_text(encoding="utf-8")))
    assert config.command == "compare" and config.data.class_names == ["background", "liver", "kidney", "spine"]
    assert "infer" not in yaml.safe_load((compared / "config.yaml").read_text(encoding="utf-8"))
    classes = ClassSpec.from_config(config.data.class_names, config.compare.groups, config.compare.stuff_classes)
    for name in MODELS:
        run = compared / name  # an ordinary run folder of the one Trainer
        for file in ("config.yaml", "split.json", "last.pt", "best.pt", "train_log.jsonl"):
            assert (run / file).is_file(), (name, file)
        assert any((run / "tensorboard").iterdir())
        checkpoint = torch.load(run / "last.pt", weights_only=True)
        assert checkpoint["global_step"] == 2 and checkpoint["config"]["compare"]["models"] == [name]
        build_model_2d(name, config, classes).load_state_dict(checkpoint["model"])


def test_the_detector_settings_are_planned_from_the_training_slices_and_recorded(compared):
    plan = yaml.safe_load((compared / "plan.yaml").read_text(encoding="utf-8"))["compare"]
    assert set(plan) == {"anchor_sizes", "aspect_ratios", "rpn_samples_per_image", "roi_samples_per_image"}
    assert "# instance scales" in (compared / "plan.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load((compared / "config.yaml").read_text(encoding="utf-8"))["compare"]
    assert all(config[key] == value for key, value in plan.items())  # what every model was built with


def test_the_precision_is_planned_for_this_cpu_and_recorded(compared):
    plan = yaml.safe_load((compared / "plan.yaml").read_text(encoding="utf-8"))["train"]
    config = yaml.safe_load((compared / "config.yaml").read_text(encoding="utf-8"))["train"]
    assert plan == {"cpu_bf16": cpu_has_native_bf16()} and config["cpu_bf16"] == plan["cpu_bf16"]
    line = f"cpu_bf16: {str(plan['cpu_bf16']).lower()}  # {cpu_bf16(cpu_has_native_bf16()).reason}"
    assert line in (compared / "plan.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_planned_where_the_cpu_computes_it_and_the_user_did_not_choose(native, monkeypatch):
    monkeypatch.setattr(comparison, "cpu_has_native_bf16", lambda: native)
    config = load_config(None, [], command="compare")
    planned_config, planned = comparison._planned_precision(config, set(), torch.device("cpu"))
    assert planned_config.train.cpu_bf16 is native and planned["train.cpu_bf16"].value is native
    chosen = load_config(None, ["train.cpu_bf16=false"], command="compare")
    assert comparison._planned_precision(chosen, {"train.cpu_bf16"}, torch.device("cpu")) == (chosen, {})
    assert comparison._planned_precision(config, set(), torch.device("cuda")) == (config, {})


@pytest.mark.parametrize("case, extra, words", [
    ("missing data", ["--data", "{tmp}/nowhere"], ["nowhere", "not found"]),
    ("unknown model", ["compare.models=[fcn,segformer]"], ["compare.models", "segformer"]),
    ("bad size", ["compare.slice_size=[48,48]"], ["compare.slice_size", "32"]),
    ("bad group", ["compare.groups=[[organs,liver,kidny]]"], ["compare.groups", "kidny"]),
    ("moved key", ["compare.max_steps=1"], ["compare.max_steps", "train.iterations_per_epoch"]),
    ("bad optimizer", ["train.optimizer=adamx"], ["train.optimizer", "adamw"]),
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


def test_an_interrupted_comparison_resumes_where_it_stopped(phantom_dir, config_file, tmp_path):
    """Finished models are kept, the interrupted one continues from its last checkpoint, the missing one
    starts; the table is written at the end."""
    output = tmp_path / "out"
    models = ["fcn", "unet2d"]
    args = ["--output", str(output), *TINY, f"compare.models=[{','.join(models)}]", "compare.examples=0"]
    assert main(["compare", config_file, "--data", str(phantom_dir), *args]) == 0
    first = {m: torch.load(output / m / "last.pt", weights_only=True)["model"] for m in models}
    # As if interrupted while the second model trained: its folder has no checkpoint yet, and no table exists.
    shutil.rmtree(output / "unet2d")
    (output / "results.csv").unlink()
    assert main(["compare", "--resume", "--output", str(output), "train.max_epochs=2"]) == 0
    logs = {m: [json.loads(line)["epoch"] for line in (output / m / "train_log.jsonl").open(encoding="utf-8")]
            for m in models}
    assert logs == {"fcn": [0, 1], "unet2d": [0, 1]}  # fcn resumed at epoch 1; unet2d ran from the start
    resumed = torch.load(output / "fcn" / "last.pt", weights_only=True)
    assert resumed["global_step"] == 2 and not torch.equal(next(iter(resumed["model"].values())),
                                                           next(iter(first["fcn"].values())))
    assert (output / "results.csv").is_file()


def test_resume_needs_a_comparison_folder(phantom_dir, tmp_path, capsys):
    assert main(["compare", "--resume", "--output", str(tmp_path / "nothing")]) == 2
    assert "config.yaml: not found" in capsys.readouterr().err
