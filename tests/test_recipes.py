"""Typed recipes: sections, dotted and bare-name overrides checked against the task, refusals that write nothing,
the resume rules, and recipes and checkpoints in the flat format still loading."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from spinenet.cli import main
from spinenet.engine import Recipe, get_recipe, parse_overrides
from spinenet.engine.recipes import RECIPES

LEGACY = Path(__file__).parent / "data" / "legacy"
TINY = ["model.filter_size_scale=0.125", "model.endpoints_num_filters=16", "model.head_width=16"]
FLAGS = ["train", "--model", "retinanet_spinenet49s", "--data", "trees:osbs", "--recipe", "smoke", "--device", "cpu"]
SETTINGS = ["steps=2", "checkpoint_every=2", *TINY]


def _train(out: Path, *overrides: str, flags: list[str] = FLAGS) -> list[str]:
    return [*flags, "--out", str(out), *SETTINGS, *overrides]


def _spinenet(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys, out: Path, *overrides: str) -> str:
    """Run ``spinenet train`` expecting a one-line error (exit 2) and nothing written in ``out``."""
    code, _, err = _spinenet(capsys, *_train(out, *overrides))
    assert code == 2, err
    assert err.startswith("spinenet train: error: ") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    assert not out.exists(), f"a refused command left {sorted(p.name for p in out.iterdir())} in {out}"
    return err


# ------------------------------------------------------------------------------------------------ overrides
def test_dotted_paths_set_typed_fields_in_their_sections():
    r = parse_overrides(get_recipe("smoke"), ["optim.lr=0.05", "schedule.steps=3", "model.filter_size_scale=0.75",
                                              "data.vflip=0.5", "eval.image_size=384", "schedule.lr_steps=0.5,0.8",
                                              "model.bn_momentum=0.1", "optim.optimizer=adamw"])
    assert (r.optim.lr, r.schedule.steps, r.model.filter_size_scale) == (0.05, 3, 0.75)
    assert (r.data.vflip, r.eval.image_size, r.schedule.lr_steps) == (0.5, 384, (0.5, 0.8))
    assert r.optim.optimizer == "adamw" and isinstance(r.schedule.steps, int) and isinstance(r.optim.lr, float)
    overrides = r.model_overrides()  # what the builder receives
    assert overrides["filter_size_scale"] == 0.75 and overrides["bn_momentum"] == 0.1
    assert "head_width" not in overrides  # unset builder fields keep the model's own default
    assert parse_overrides(r, ["model.bn_momentum=none"]).model.bn_momentum is None


def test_bare_names_are_aliases_of_the_one_field_they_name():
    r = parse_overrides(get_recipe("smoke"), ["steps=3", "lr=0.5", "batch_size=8", "schedule=cosine",
                                              "eval_image_size=384", "tile_size=200", "head_width=8", "seed=4"])
    assert (r.schedule.steps, r.optim.lr, r.data.batch_size, r.schedule.decay) == (3, 0.5, 8, "cosine")
    assert (r.eval.image_size, r.data.tile_size, r.model.head_width, r.seed) == (384, 200, 8, 4)
    # image_size is data.image_size (the training crop); the evaluation size has its own names
    assert parse_overrides(r, ["image_size=64"]).data.image_size == 64
    c = parse_overrides(get_recipe("fashion-mnist-cpu"), ["hflip=0", "eval_hflip=false", "eval_crop=0.9"])
    assert (c.data.hflip, c.eval.hflip, c.eval.crop) == (0.0, False, 0.9)
    s = parse_overrides(get_recipe("nuclei-cpu"), ["window=0", "eval_overlap=0.25", "norm_high=none"])
    assert (s.eval.window, s.eval.overlap, s.data.norm_high) == (0, 0.25, None)
    with pytest.warns(DeprecationWarning, match="read recipe.optim.lr"):  # flat attributes, for one release
        assert r.lr == 0.5
    with pytest.raises(AttributeError, match="stpes"):
        r.stpes


def test_a_typo_is_refused_with_the_nearest_key():
    base = get_recipe("smoke")
    with pytest.raises(ValueError, match="unknown setting 'stpes'.*did you mean 'steps'"):
        parse_overrides(base, ["stpes=3"])
    with pytest.raises(ValueError, match="did you mean 'model.filter_size_scale'"):
        parse_overrides(base, ["model.fliter_size_scale=0.5"])
    with pytest.raises(ValueError, match="did you mean 'optim.lr'"):
        parse_overrides(base, ["optim.lrr=0.5"])
    with pytest.raises(ValueError, match="unknown setting 'xyzzy'.*model.\\*, data.\\*"):
        parse_overrides(base, ["xyzzy=1"])


def test_a_wrong_type_or_range_is_refused():
    base = get_recipe("smoke")
    for item, message in [("lr=fast", "lr='fast': expected a number"),
                          ("model.head_width=wide", "model.head_width='wide': expected an integer"),
                          ("steps=2.5", "steps='2.5': expected an integer"),
                          ("optimizer=adam", "optimizer='adam': expected one of sgd, adamw"),
                          ("model.matcher=best", "expected one of iou, atss"),
                          ("channels_last=maybe", "expected true or false"),
                          ("batch_size=0", "data.batch_size=0 must be >= 1"),
                          ("bn_freeze=2", r"bn_freeze=2.0.*\[0, 1\]")]:
        with pytest.raises(ValueError, match=message):
            parse_overrides(base, [item])


def test_a_setting_of_another_task_is_refused():
    with pytest.raises(ValueError, match="'eval_crop' is a setting of classification recipes; a detection recipe"):
        parse_overrides(get_recipe("smoke"), ["eval_crop=0.9"])
    with pytest.raises(ValueError, match="'rot90' is a setting of segmentation recipes"):
        parse_overrides(get_recipe("trees-cpu"), ["rot90=true"])
    with pytest.raises(ValueError, match="'model.matcher' is a setting of detection recipes"):
        parse_overrides(get_recipe("nuclei-cpu"), ["model.matcher=atss"])
    with pytest.raises(ValueError, match="'tile_size' is a setting of detection recipes"):
        parse_overrides(get_recipe("fashion-mnist-cpu"), ["tile_size=100"])


def test_no_untyped_catch_all_and_builder_fields_match_the_builders():
    """Every field is declared with a type; a task's model section declares exactly the builder's overrides."""
    from spinenet.engine.config import TASK_SECTIONS, ModelConfig
    from spinenet.models.detection import DETECTOR_OVERRIDES
    from spinenet.models.maskrcnn import MASKRCNN_OVERRIDES
    from spinenet.models.segmentation import HEAD_OVERRIDES as SEGMENTER_OVERRIDES
    from spinenet.registry import SCALING_FIELDS

    assert "extra" not in {f.name for f in dataclasses.fields(Recipe)}
    for sections in TASK_SECTIONS.values():
        for name in ("model", "data", "optim", "schedule", "eval"):
            for f in dataclasses.fields(getattr(sections, name)):
                assert "dict" not in str(f.type) and "Any" not in str(f.type), (name, f.name, f.type)
    backbone = {*SCALING_FIELDS, "flavor", "min_level", "max_level", "activation", "stochastic_depth_rate",
                "bn_eps", "bn_momentum", "block_specs"}
    base = {f.name for f in dataclasses.fields(ModelConfig)} - set(ModelConfig.TRAINING_ONLY)
    assert base == backbone
    own = {task: {f.name for f in dataclasses.fields(s.model)} - base - set(ModelConfig.TRAINING_ONLY)
           for task, s in TASK_SECTIONS.items()}
    assert own["detection"] == set(DETECTOR_OVERRIDES) | set(MASKRCNN_OVERRIDES)
    assert own["segmentation"] == set(SEGMENTER_OVERRIDES)
    assert own["classification"] == {"dropout", "label_smoothing", "normalize"}  # create_classifier's keywords


def test_a_recipe_of_shared_fields_serves_every_task():
    smoke = get_recipe("smoke")
    for task in ("classification", "segmentation"):
        other = smoke.for_task(task)
        assert other.task == task and type(other.data).__name__ != type(smoke.data).__name__
        shared = {k: v for k, v in smoke.settings().items() if k in other.settings() and k != "task"}
        assert shared == {k: other.settings()[k] for k in shared} and len(shared) > 30
    with pytest.raises(ValueError, match="model.matcher='atss'.*choose a segmentation recipe"):
        get_recipe("trees-cpu").for_task("segmentation")


def test_recipes_round_trip_through_json():
    for name in RECIPES:
        r = get_recipe(name)
        back = Recipe.from_dict(json.loads(json.dumps(r.to_dict())))
        assert back == r and not back.diff(r), name
    with pytest.raises(ValueError, match="recipe.json: unknown setting 'schedule.stpes'"):
        data = get_recipe("smoke").to_dict()
        data["schedule"]["stpes"] = 3
        Recipe.from_dict(data, source="recipe.json")


def test_search_reward_options_are_checked_before_the_search_starts(tmp_path):
    from spinenet.search.runner import Search, SearchConfig

    with pytest.raises(ValueError, match="did you mean 'steps'"):
        Search(tmp_path / "search", SearchConfig("spinenet49", "random", "proxy", {"stpes": 3}), trials=1)
    assert not (tmp_path / "search").exists()


# ------------------------------------------------------------------------------------------ the CLI refuses
def test_cli_refusals_write_nothing_and_the_corrected_command_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert "did you mean 'steps'" in _refused(capsys, out, "stpes=3")
    assert "did you mean 'model.filter_size_scale'" in _refused(capsys, out, "model.fliter_size_scale=0.25")
    assert "expected an integer" in _refused(capsys, out, "model.head_width=wide")
    assert "classification" in _refused(capsys, out, "eval_crop=0.9")
    # valid settings the model builder then refuses (a Mask R-CNN field on a RetinaNet): still nothing written
    assert "rpn_convs" in _refused(capsys, out, "model.rpn_convs=2")
    code, _, err = _spinenet(capsys, *_train(out, flags=[*FLAGS, "--task", "segmentation", "--recipe", "trees-cpu"]))
    assert code == 2 and "'trees-cpu' is a detection recipe; a segmentation recipe has no " in err, err
    assert "data.tile_size=320" in err and not out.exists()
    code, _, err = _spinenet(capsys, *_train(out, "steps=1"))  # corrected
    assert code == 0, err
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["format"] == "spinenet-recipe/2" and saved["schedule"]["steps"] == 1
    assert saved["model"]["filter_size_scale"] == 0.125 and "extra" not in saved


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step tiny detection run (checkpoint at step 2), copied by each test that resumes it."""
    out = tmp_path_factory.mktemp("recipes") / "run"
    assert main(_train(out)) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_may_extend_steps(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    code, _, err = _spinenet(capsys, *_train(run, "steps=3", flags=[*FLAGS, "--resume"]))
    assert code == 0, err
    assert json.loads((run / "recipe.json").read_text())["schedule"]["steps"] == 3
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=False)["step"] == 3
    code, _, err = _spinenet(capsys, *_train(run, "steps=1", flags=[*FLAGS, "--resume"]))
    assert code == 2 and "at step 3; steps=1 is behind it" in err


def test_resume_with_other_settings_is_refused_and_changes_nothing(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _snapshot(run)
    code, _, err = _spinenet(capsys, *_train(run, "lr=0.5", flags=[*FLAGS, "--resume"]))
    assert code == 2 and "optim.lr: 0.01 -> 0.5" in err and "only steps may change" in err, err
    code, _, err = _spinenet(capsys, *_train(run, "optimizer=adamw", "steps=4", "model.head_width=8",
                                             flags=[*FLAGS, "--resume"]))
    assert code == 2, err
    assert "optim.optimizer: 'sgd' -> 'adamw'" in err and "model.head_width: 16 -> 8" in err
    assert "schedule.steps" not in err  # the one setting that may change
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    # another model: refused by name, not with a list of the weights that do not fit
    other = [a if a != "retinanet_spinenet49s" else "retinanet_spinenet49" for a in FLAGS]
    code, _, err = _spinenet(capsys, *_train(run, flags=[*other, "--resume"]))
    assert code == 2 and "was trained with --model retinanet_spinenet49s, not retinanet_spinenet49" in err
    assert len(err) < 400, err
    assert _snapshot(run) == before, "a refused --resume changed the run folder"


# ------------------------------------------------------------------------------------------ vflip, one field
def test_vflip_override_reaches_the_segmentation_transform():
    """``vflip=0`` on a segmentation recipe that flips (nuclei-cpu: 0.5) means no vertical flip at all."""
    from spinenet.tasks import get_task

    plain = ["hflip=0", "rot90=false", "scale_min=1", "scale_max=1", "gain=1", "gamma=1", "norm_high=none",
             "image_size=32"]
    image = torch.linspace(0, 1, 64)[None, :, None].expand(3, 64, 64).contiguous()  # brighter downwards
    mask = torch.zeros(64, 64, dtype=torch.long)
    task = get_task("segmentation", model="spinenet_mobile49xs", data="nuclei:left")
    for vflip, expect_down in (("0", True), ("1", False)):
        transform = task.train_transform(parse_overrides(get_recipe("nuclei-cpu"), [*plain, f"vflip={vflip}"]))
        for seed in range(12):
            crop, _ = transform(image, mask, torch.Generator().manual_seed(seed))
            down = bool(crop[0, -1].mean() > crop[0, 0].mean())
            assert down == expect_down, f"vflip={vflip}, seed {seed}"


# ------------------------------------------------------------------------------------ the flat format loads
def test_every_named_recipe_in_the_flat_format_migrates_to_the_same_settings():
    legacy = json.loads((LEGACY / "recipes.json").read_text())
    from spinenet.search.proxy import PROXIES

    current = {name: fn() for name, fn in RECIPES.items()}
    current.update({p.recipe.name: p.recipe for p in PROXIES.values()})
    assert set(legacy) == set(current)
    for name, flat in legacy.items():
        assert "extra" in flat and "format" not in flat
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every flat field and extra has its place
            migrated = Recipe.from_dict(flat, source=name)
        # flat-format runs kept the running BatchNorm averages; named recipes may now recalibrate them
        assert migrated.eval.precise_bn_batches == 0, name
        if name in RECIPES:  # the search proxies' settings are the proxy's own, chosen apart from the format
            same_bn = current[name].replace(precise_bn_batches=0)
            assert migrated.diff(same_bn) == [], name
        else:
            assert migrated.task == current[name].task and migrated.name == name


def test_flat_recipe_json_and_checkpoint_load(tmp_path, capsys):
    det = Recipe.from_dict(json.loads((LEGACY / "trees-det-run" / "recipe.json").read_text()))
    assert (det.task, det.eval.image_size, det.schedule.steps, det.model.filter_size_scale) == ("detection", 256, 2,
                                                                                                0.125)
    ckpt = torch.load(LEGACY / "nuclei-seg-run" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["recipe"]["vflip"] == 0.0 and ckpt["recipe"]["extra"]["vflip"] == 0.5
    seg = Recipe.from_dict(ckpt["recipe"])
    assert seg.data.vflip == 0.5  # the value the segmentation run read (its extra), not the unused field
    assert (seg.data.rot90, seg.data.norm_low, seg.data.norm_high, seg.data.gain_grid) == (True, 1.0, 99.8, 4)
    assert (seg.model.min_level, seg.model.flavor, seg.model.head_width) == (2, "model_garden", 4)
    assert Recipe.from_dict(json.loads((LEGACY / "nuclei-seg-run" / "recipe.json").read_text())) == seg
    with pytest.warns(UserWarning, match="stpes=3"):  # a typo a flat recipe kept is shown, not carried over
        Recipe.from_dict({**ckpt["recipe"], "extra": {**ckpt["recipe"]["extra"], "stpes": 3}})

    # the checkpoint evaluates, and the run resumes with the command that made it (steps extended)
    code, out, err = _spinenet(capsys, "eval", "--checkpoint", str(LEGACY / "nuclei-seg-run" / "checkpoints" /
                                                                    "last.pt"), "--data", "nuclei:top")
    assert code == 0, err
    assert "fg_iou" in out
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "nuclei-seg-run", run)
    code, _, err = _spinenet(capsys, "train", "--task", "segmentation", "--model", "spinenet49s", "--data",
                             "nuclei:left", "--recipe", "nuclei-cpu", "--out", str(run), "--device", "cpu",
                             "--resume", "steps=3", "batch_size=2", "image_size=64", "checkpoint_every=2",
                             "eval_every=0", "num_workers=0", "model.filter_size_scale=0.03125",
                             "model.endpoints_num_filters=4", "model.head_width=4")
    assert code == 0, err
    resumed = torch.load(run / "checkpoints" / "final.pt", weights_only=False)
    assert resumed["step"] == 3 and resumed["recipe"]["data"]["vflip"] == 0.5
    assert json.loads((run / "recipe.json").read_text())["format"] == "spinenet-recipe/2"
