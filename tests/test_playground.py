"""Watching a run learn, in the library: the probe schedule and frames, bounded frame history,
feature maps through the U, the animated GIF, the confusion matrix."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from segdemo import viz
from segdemo.animation import animated_gif, frame_caption, timeline_gif
from segdemo.engine import EventHistory, FeatureMaps, ProbeFrame, TrainConfig, Trainer
from segdemo.engine.events import thin_evenly
from segdemo.engine.probes import probe_due
from segdemo.features import FeaturesUnavailable, feature_maps, u_layout, u_picture
from segdemo.metrics import SegmentationMetrics
from segdemo.models import create

LIVE_RUN_STEPS = 1800   # a 3-minute live run at about 10 steps/s


def tiny(**changes) -> TrainConfig:
    base = TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data="shapes",
                       data_options={"size": 32, "val_length": 8}, epochs=1, steps_per_epoch=20,
                       batch_size=4, lr=1e-2, val_images=8, probe_images=4)
    return base.replace(**changes)


def test_the_schedule_keeps_enough_frames_of_a_live_run_and_is_denser_early():
    due = [step for step in range(1, LIVE_RUN_STEPS + 1) if probe_due(step)]
    assert 40 <= len(due) <= 100
    assert due[:16] == list(range(1, 17))                      # every one of the first steps
    early = sum(step <= 200 for step in due)
    late = sum(step > LIVE_RUN_STEPS - 200 for step in due)
    assert early > 4 * late
    gaps = np.diff(due)
    assert (np.diff(gaps) >= 0).all()                          # the spacing only grows


@pytest.mark.parametrize("count, limit", [(500, 50), (121, 61), (10, 20)])
def test_thinning_keeps_first_and_last_evenly(count, limit):
    items = list(range(count))
    kept = thin_evenly(items, limit)
    assert len(kept) == min(count, limit) and kept[0] == 0 and kept[-1] == count - 1
    assert kept == sorted(set(kept))
    if count > limit:
        gaps = np.diff(kept)
        assert gaps.max() - gaps.min() <= 1


def frame(step: int, dice: float = 0.5) -> ProbeFrame:
    return ProbeFrame(step=step, dice=dice, image=b"", probe_seconds=0.01, elapsed=step / 10)


def test_history_keeps_frames_bounded_with_the_first_and_latest():
    history = EventHistory(max_frames=40)
    for step in range(1, 1001):
        history(frame(step))
        assert len(history.frames()) <= 40
    frames = history.frames()
    assert frames[0].step == 1 and frames[-1].step == 1000 and len(frames) >= 20
    steps = [f.step for f in frames]
    assert steps == sorted(steps)


def test_a_run_emits_probe_frames_and_features_and_keeps_pictures_out_of_its_log(tmp_path):
    events = []
    model_modes = []
    Trainer(tiny(out=str(tmp_path)), [lambda e: (events.append(e), model_modes.append(None))]).run()
    frames = [e for e in events if isinstance(e, ProbeFrame)]
    steps = [f.step for f in frames]   # all the due ones, unless the cost budget skipped some on a busy machine
    assert steps[:3] == [1, 2, 3] and set(steps) <= {s for s in range(1, 21) if probe_due(s)}
    picture = np.asarray(Image.open(io.BytesIO(frames[-1].image)))
    assert picture.ndim == 3 and picture.shape[2] == 3 and max(picture.shape) <= 4 * 96
    assert all(f.dice is None or 0 <= f.dice <= 1 for f in frames)
    features = [e for e in events if isinstance(e, FeatureMaps)]
    assert features and features[0].step == 1 and len(features[0].pictures) == len(features[0].stages)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    probes = [r for r in records if r["type"] == "probe"]
    assert len(probes) == len(frames) and all("image" not in r for r in probes)
    assert all("pictures" not in r and "image" not in r for r in records if r["type"] == "features")


def test_probes_leave_batch_norm_in_train_mode_and_can_be_turned_off(tmp_path):
    from segdemo.engine.probes import Probes
    from segdemo.engine.setup import Progress, build_setup

    setup = build_setup(tiny(precision="fp32"))   # no precision trial: every frame counts
    setup.model.train()
    probes = Probes(setup, 4)
    made = probes.frame(Progress(step=3))
    assert made.step == 3 and setup.model.training
    assert all(m.training for m in setup.model.modules())
    emitted = []
    probes.after_step(Progress(step=16), emitted.append)
    assert type(emitted[0]) is ProbeFrame
    made = len(emitted)
    probes.spent = 1e6                                           # past its share of the run's time
    probes.after_step(Progress(step=15), emitted.append)
    assert len(emitted) == made
    events = []
    Trainer(tiny(probe_images=0), [events.append]).run()
    assert not any(isinstance(e, (ProbeFrame, FeatureMaps)) for e in events)


def test_the_probe_budget_is_a_share_of_the_time_so_far_at_least_a_minute():
    """Frames keep coming to the end of a run: the budget grows with the run's time (from a floor
    that fits the dense early frames), it is not spent in its first seconds."""
    from segdemo.engine.probes import COST_HORIZON, COST_SHARE, Probes
    from segdemo.engine.setup import Progress, build_setup

    probes = Probes(build_setup(tiny(precision="fp32")), 4)
    early, late = Progress(step=100, seconds_before_resume=10.0), Progress(step=3000, seconds_before_resume=300.0)
    probes.spent = COST_SHARE * COST_HORIZON * 0.99
    assert probes.within_budget(early)
    probes.spent = COST_SHARE * COST_HORIZON * 1.01
    assert not probes.within_budget(early) and probes.within_budget(late)
    probes.spent = COST_SHARE * 300 * 1.01
    assert not probes.within_budget(late)


def test_frames_during_the_precision_trial_are_made_and_not_counted():
    """The trial's first frame in each precision builds that precision's kernels (0.3-0.85 s on
    2 cores): a cost of the trial's, which must not use up a short run's budget for its frames."""
    from segdemo.engine.precision import PrecisionTrial
    from segdemo.engine.probes import Probes
    from segdemo.engine.setup import Progress, build_setup

    setup = build_setup(tiny(precision="fp32"))
    probes = Probes(setup, 4)
    probes.spent = 1e6                                    # past any budget
    setup.precision_trial = PrecisionTrial([None, None])  # still deciding
    emitted = []
    probes.after_step(Progress(step=2), emitted.append)
    assert [type(e) for e in emitted][:1] == [ProbeFrame] and probes.spent == 1e6
    setup.precision_trial = None                          # decided: frames count, and this run's budget is spent
    probes.after_step(Progress(step=3), emitted.append)
    assert [e.step for e in emitted if isinstance(e, ProbeFrame)] == [2]


def test_a_run_ends_its_timeline_with_the_weights_it_ends_with_whatever_the_budget(tmp_path):
    from segdemo.engine.probes import Probes
    from segdemo.engine.setup import Progress, build_setup

    probes = Probes(build_setup(tiny(precision="fp32")), 4)
    probes.spent = 1e6                                      # the budget ran out long ago
    emitted = []
    probes.after_step(Progress(step=32), emitted.append)    # a due step: skipped
    probes.at_end(Progress(step=37), emitted.append)        # the run's last step: shown
    probes.at_end(Progress(step=37), emitted.append)        # once
    assert [e.step for e in emitted if isinstance(e, ProbeFrame)] == [37]
    # In a run: its last frame is its last step, here a step no schedule names.
    events = []
    result = Trainer(tiny(epochs=1, steps_per_epoch=19, out=str(tmp_path)), [events.append]).run()
    frames = [e.step for e in events if isinstance(e, ProbeFrame)]
    assert result.steps == 19 and not probe_due(19) and frames[-1] == 19 and frames.count(19) == 1


def test_feature_maps_of_a_unet_give_one_picture_per_stage_with_its_shape():
    model = create("unet", 3, 6, base_channels=8, depth=3)
    model.train()
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    stages = feature_maps(model, image, None)
    assert [s.name for s in stages] == [name for name, _ in model.stages()]
    shapes = {s.name: s.shape for s in stages}
    assert shapes["encoder 0 (stem)"] == (8, 64, 80)
    assert shapes["encoder 3 (down)"] == (64, 8, 10)          # the bottleneck
    assert shapes["decoder 0 (up + skip)"] == (8, 64, 80)
    assert shapes["head (1×1 conv)"] == (6, 64, 80)
    assert all(s.picture.dtype == np.uint8 and s.picture.shape[2] == 3 for s in stages)
    assert all(len(s.channels) == min(4, s.shape[0]) for s in stages)
    assert model.training                                       # left as it was
    layout = u_layout([s.name for s in stages])
    assert layout["encoder 3 (down)"][1] == 3                   # the bottom of the U
    assert layout["encoder 1 (down)"][1] == layout["decoder 1 (up + skip)"][1] == 1
    picture = u_picture(stages, image)
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]


def test_feature_maps_of_a_model_without_stages_are_refused_clearly():
    with pytest.raises(FeaturesUnavailable, match="not available"):
        feature_maps(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1)), np.zeros((8, 8, 3), np.uint8), None)


def test_animated_gif_has_every_frame_readable_by_pil():
    pictures = [np.full((40, 60, 3), value, dtype=np.uint8) for value in (0, 120, 240)]
    data = animated_gif(pictures, [frame_caption(step, 0.1 * step) for step in (1, 2, 3)])
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.is_animated and gif.n_frames == 3
    assert gif.size == (60, 40 + 26)
    with pytest.raises(ValueError):
        animated_gif(pictures, ["one caption"])


def test_timeline_gif_of_probe_frames():
    frames = [ProbeFrame(step=s, dice=None if s == 1 else 0.2 * s, image=_png(np.full((20, 30, 3), 40 * s, np.uint8)),
                         probe_seconds=0.0, elapsed=s) for s in (1, 2, 3, 4)]
    gif = Image.open(io.BytesIO(timeline_gif(frames)))
    assert gif.n_frames == 4
    assert frame_caption(120, 0.613) == "step 120 · Dice 0.61"


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multiclass_metrics_carry_a_json_able_confusion_matrix_that_draws():
    metrics = SegmentationMetrics("multiclass", 3)
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, :] = 5    # predicts class 1 on the top row
    target = torch.tensor([[[1, 2], [0, 255]]])
    metrics.update(logits, target)
    result = metrics.compute()
    assert result["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    json.dumps(result["confusion"])
    picture = viz.confusion_picture(result["confusion"], ["background", "cat", "dog"])
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert "confusion" not in SegmentationMetrics("multilabel", 3).compute()


def test_probe_items_are_centred_crops_that_stack():
    from segdemo.engine.probes import probe_items

    items = [(torch.full((3, h, w), i, dtype=torch.uint8), torch.zeros((h, w), dtype=torch.uint8))
             for i, (h, w) in enumerate([(300, 400), (584, 565), (320, 320), (200, 260), (500, 375)])]
    images, targets = probe_items(items, 4, side=256)
    assert images.shape == (4, 3, 200, 256) and targets.shape == (4, 200, 256)
    assert images[:, 0, 0, 0].tolist() == [0, 1, 3, 4]   # spread over the set: the first and the last among them


@pytest.mark.parametrize("writer, spec", [("write_drive", "drive"), ("write_voc", "voc")])
def test_probes_and_features_on_binary_and_multiclass_files(tmp_path, writer, spec):
    import fakes

    root = getattr(fakes, writer)(tmp_path / spec)
    events = []
    Trainer(TrainConfig(model="unet", model_options={"base_channels": 4, "depth": 2}, data=f"{spec}:{root}",
                        epochs=1, steps_per_epoch=3, batch_size=2, crop_size=32, val_images=2, probe_images=4),
            [events.append]).run()
    frames = [e for e in events if isinstance(e, ProbeFrame)]
    assert [f.step for f in frames][:1] == [1] and any(isinstance(e, FeatureMaps) for e in events)
    val = [e for e in events if type(e).__name__ == "EpochDone"][-1].val
    if spec == "voc":   # multiclass: its confusion matrix, one row and column per class, draws
        assert len(val["confusion"]) == len(val["dice"]) == 21
        assert viz.confusion_picture(val["confusion"], [str(i) for i in range(21)]).ndim == 3
    else:
        assert "confusion" not in val
