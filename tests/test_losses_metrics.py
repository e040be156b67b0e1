import math

import numpy as np
import pytest
import torch

from segdemo.errors import SettingsError
from segdemo.loss_names import LOSS_LABELS, LOSS_NAMES, check_loss, suited_tasks
from segdemo.losses import (BCEDiceLoss, BoundaryLoss, CrossEntropyDiceLoss, DeepSupervision, FocalLoss, build_loss,
                            set_progress, signed_distance, soft_dice_loss)
from segdemo.files import json_safe
from segdemo.metrics import SegmentationMetrics
from segdemo.tasks import BINARY, IGNORE_INDEX, MULTICLASS, MULTILABEL, TASKS

BIG = 30.0  # a logit that means "certain"


def test_bce_dice_is_near_zero_for_a_perfect_prediction_and_ignores_255():
    target = torch.tensor([[[[1, 0], [0, 255]]]], dtype=torch.uint8)
    logits = torch.tensor([[[[BIG, -BIG], [-BIG, 5.0]]]])
    loss = BCEDiceLoss(0.5)
    assert loss(logits, target) < 1e-3
    changed = logits.clone()
    changed[..., 1, 1] = -7.0  # the ignored pixel can be anything
    assert torch.isclose(loss(logits, target), loss(changed, target))


def test_soft_dice_known_answer():
    probabilities = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    valid = torch.ones_like(target)
    # Dice = (2·1.5 + 1) / (1.5 + 2 + 1) = 4 / 4.5
    assert math.isclose(float(soft_dice_loss(probabilities, target, valid)), 1 - 4 / 4.5, rel_tol=1e-6)


def test_cross_entropy_ignores_255_and_handles_all_ignored():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = BIG
    target = torch.tensor([[[1, 1], [255, 255]]])
    assert CrossEntropyDiceLoss()(logits, target) < 1e-6
    assert CrossEntropyDiceLoss(dice_weight=1.0)(logits, torch.full((1, 2, 2), 255)) == 0


def test_deep_supervision_sums_over_outputs():
    loss = DeepSupervision(BCEDiceLoss())
    target = torch.randint(0, 2, (2, 1, 8, 8), dtype=torch.uint8)
    logits = torch.randn(2, 1, 8, 8)
    assert torch.isclose(loss([logits, logits, logits], target), 3 * loss(logits, target))


def test_signed_distance_known_answer():
    mask = np.zeros((1, 7), dtype=np.uint8)
    mask[0, 2:5] = 1
    distance = signed_distance(mask)
    assert distance[0, 3] < 0 and distance[0, 0] > 0
    assert distance[0, 0] > distance[0, 1]  # farther outside costs more
    assert not signed_distance(np.zeros((3, 3))).any()


def test_boundary_loss_prefers_mass_inside():
    target = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    target[..., 4:12, 4:12] = 1
    loss = BoundaryLoss(BCEDiceLoss(), "binary", weight=1.0)
    good = torch.where(target.bool(), BIG, -BIG).float()
    bad = -good
    assert loss(good, target) < loss(bad, target)


def test_build_loss_by_name_and_task():
    assert isinstance(build_loss("multilabel").loss, BCEDiceLoss)
    assert isinstance(build_loss("multiclass").loss, CrossEntropyDiceLoss)
    assert isinstance(build_loss("binary", "bce_dice+boundary").loss, BoundaryLoss)
    with pytest.raises(ValueError, match="multiclass"):
        build_loss("multilabel", "ce")
    with pytest.raises(ValueError, match="expected one of"):
        build_loss("binary", "focus")


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("task", TASKS)
def test_every_loss_builds_for_the_tasks_it_suits_and_refuses_the_others(name, task):
    """Each name either builds a loss that trains (a finite value and a gradient) or is refused
    before a run starts with a message naming what suits the task."""
    if task not in suited_tasks(name):
        with pytest.raises(SettingsError, match=f"this data is {task}; pick .*auto"):
            build_loss(task, name)
        with pytest.raises(SettingsError, match=f"this data is {task}"):
            check_loss(name, task)
        return
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8)) if task == MULTICLASS else torch.randint(0, 2, (2, 3, 8, 8))
    value = build_loss(task, name)(logits, target)
    value.backward()
    assert torch.isfinite(value) and logits.grad.abs().sum() > 0
    assert LOSS_LABELS[name]


def test_bce_alone_known_answer():
    # p = 0.5 everywhere: BCE = ln 2 for either target; p = 0.75 on a positive: -ln 0.75; the 255 counts nothing
    target = torch.tensor([[[[1, 0], [1, 255]]]], dtype=torch.uint8)
    logits = torch.tensor([[[[0.0, 0.0], [math.log(3), 9.0]]]])
    expected = (2 * math.log(2) - math.log(0.75)) / 3
    assert math.isclose(float(build_loss(BINARY, "bce")(logits, target)), expected, rel_tol=1e-6)


def test_dice_alone_known_answers_with_sigmoid_and_softmax():
    # sigmoid: p = 0.5 on 4 pixels, 2 of them positive: Dice = (2·1 + 1) / (2 + 2 + 1) = 3/5
    target = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.uint8)
    assert math.isclose(float(build_loss(BINARY, "dice")(torch.zeros(1, 1, 2, 2), target)), 1 - 3 / 5, rel_tol=1e-6)
    # softmax over 2 classes: certain and right on pixel 0 (class 0) and pixel 1 (class 1), 50/50 on pixel 2
    # (class 1), pixel 3 ignored. Class 0: intersection 1, sums 1.5 + 1 -> (2 + 1) / (2.5 + 1) = 6/7;
    # class 1: intersection 1.5, sums 1.5 + 2 -> (3 + 1) / (3.5 + 1) = 8/9.
    logits = torch.tensor([[[[BIG, 0.0], [0.0, 0.0]], [[0.0, BIG], [0.0, 0.0]]]])
    classes = torch.tensor([[[0, 1], [1, IGNORE_INDEX]]])
    expected = 1 - (6 / 7 + 8 / 9) / 2
    assert math.isclose(float(build_loss(MULTICLASS, "dice")(logits, classes)), expected, rel_tol=1e-5)


def test_cross_entropy_known_answer():
    # softmax of (ln 2, 0, 0) is (1/2, 1/4, 1/4): -ln 1/2 for class 0, -ln 1/4 for class 1
    logits = torch.tensor([math.log(2), 0.0, 0.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    target = torch.tensor([[[0, 1]]])
    expected = (math.log(2) + math.log(4)) / 2
    assert math.isclose(float(build_loss(MULTICLASS, "ce")(logits, target)), expected, rel_tol=1e-6)


def test_focal_known_answers():
    # sigmoid: p = 0.5 → p_t = 0.5 for either target: (1 - 0.5)² · ln 2; p = 0.75 on a positive: 0.25² · -ln 0.75
    target = torch.tensor([[[[1, 0, 1, 255]]]], dtype=torch.uint8)
    logits = torch.tensor([[[[0.0, 0.0, math.log(3), 0.0]]]])
    terms = [0.25 * math.log(2), 0.25 * math.log(2), 0.0625 * -math.log(0.75)]
    assert math.isclose(float(build_loss(BINARY, "focal")(logits, target)), sum(terms) / 3, rel_tol=1e-6)
    # alpha 0.25 weighs the two positives by 0.25, the negative by 0.75
    weighted = FocalLoss(BINARY, alpha=0.25)(logits, target)
    assert math.isclose(float(weighted), (0.25 * terms[0] + 0.75 * terms[1] + 0.25 * terms[2]) / 3, rel_tol=1e-6)
    # softmax of (ln 2, 0, 0) is (1/2, 1/4, 1/4): class 0 → (1/2)² · ln 2, class 1 → (3/4)² · ln 4
    logits = torch.tensor([math.log(2), 0.0, 0.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 3)
    classes = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    expected = (0.25 * math.log(2) + 0.5625 * math.log(4)) / 2
    assert math.isclose(float(build_loss(MULTICLASS, "focal")(logits, classes)), expected, rel_tol=1e-6)
    # gamma 0 is cross-entropy
    assert math.isclose(float(FocalLoss(MULTICLASS, gamma=0)(logits, classes)), (math.log(2) + math.log(4)) / 2,
                        rel_tol=1e-6)


def test_boundary_term_known_answer_and_its_weight_rises_over_the_run():
    # mask 1 1 0 0: signed distances -2 -1 1 2, divided by the side 4; probabilities 1/2 1/2 3/4 3/4:
    # mean(p · d) = (-1/4 - 1/8 + 3/16 + 3/8) / 4 = 3/64
    target = torch.tensor([[[[1, 1, 0, 0]]]], dtype=torch.uint8)
    logits = torch.tensor([[[[0.0, 0.0, math.log(3), math.log(3)]]]])
    region = BCEDiceLoss()
    loss = BoundaryLoss(region, BINARY, weight=0.5, start_weight=0.1)
    term = 3 / 64
    weights = []
    for progress in (0.0, 0.5, 1.0):
        set_progress(loss, progress)
        weights.append(loss.current_weight)
        assert math.isclose(float(loss(logits, target) - region(logits, target)), weights[-1] * term, rel_tol=1e-5)
    assert weights == pytest.approx([0.1, 0.3, 0.5])


def test_progress_reaches_the_losses_inside_wrappers():
    loss = build_loss(MULTICLASS, "ce_dice+boundary")
    boundary = loss.loss
    start = boundary.current_weight
    loss.set_progress(0.75)
    assert boundary.progress == 0.75 and boundary.region_loss.progress == 0.75
    assert boundary.current_weight > start
    set_progress(loss, 7)  # clamped
    assert boundary.current_weight == boundary.weight


def logits_of(probabilities):
    p = torch.as_tensor(probabilities, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def test_multilabel_dice_and_iou_known_answers():
    # class 0: prediction {a, b}, truth {a, c} → TP 1, FP 1, FN 1: Dice 2/4, IoU 1/3
    # class 1: prediction {}, truth {} → undefined (NaN), left out of the means
    predicted = torch.tensor([[[[1, 1], [0, 0]], [[0, 0], [0, 0]]]], dtype=torch.float32)
    target = torch.tensor([[[[1, 0], [1, 0]], [[0, 0], [0, 0]]]], dtype=torch.uint8)
    metrics = SegmentationMetrics("multilabel", 2)
    metrics.update(logits_of(predicted), target)
    result = metrics.compute()
    assert result["dice"][0] == pytest.approx(0.5) and result["iou"][0] == pytest.approx(1 / 3)
    assert math.isnan(result["dice"][1])
    assert result["mean_dice"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)
    assert json_safe(result)["dice"][1] is None


def test_multiclass_confusion_skips_255():
    target = torch.tensor([[[0, 1, 2], [2, 255, 1]]])
    prediction = torch.tensor([[[0, 1, 1], [2, 0, 0]]])
    logits = torch.nn.functional.one_hot(prediction, 3).permute(0, 3, 1, 2).float()
    metrics = SegmentationMetrics("multiclass", 3)
    metrics.update(logits, target)
    result = metrics.compute()
    # class 0: TP 1, FP 1 (a 1 predicted as 0), FN 0 → Dice 2/3
    # class 1: TP 1, FP 1 (a 2 predicted 1), FN 1 → Dice 2/4
    # class 2: TP 1, FP 0, FN 1 → Dice 2/3
    assert result["dice"] == pytest.approx([2 / 3, 0.5, 2 / 3])
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)


def test_binary_sensitivity_specificity_auc_inside_the_field_of_view():
    probabilities = torch.tensor([[[[0.9, 0.6, 0.7, 0.1, 0.95]]]])
    target = torch.tensor([[[[1, 1, 0, 0, 255]]]], dtype=torch.uint8)  # last pixel outside the FOV
    metrics = SegmentationMetrics("binary", 1)
    metrics.update(probabilities, target, from_probabilities=True)
    result = metrics.compute()
    # positives score 0.9, 0.6; negatives 0.7, 0.1: 3 of 4 pairs ordered right
    assert result["auc"] == pytest.approx(0.75)
    # threshold 0.5: TP 2, FP 1 (0.7), FN 0, TN 1
    assert result["sensitivity"] == pytest.approx(1.0)
    assert result["specificity"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(4 / 5)


def test_counts_add_up_across_batches_and_processes():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 10, 10, generator=generator)
    target = torch.randint(0, 2, (6, 3, 10, 10), generator=generator, dtype=torch.uint8)
    whole = SegmentationMetrics("multilabel", 3)
    whole.update(logits, target)
    first, second = SegmentationMetrics("multilabel", 3), SegmentationMetrics("multilabel", 3)
    first.update(logits[:2], target[:2])
    second.update(logits[2:], target[2:])
    merged = SegmentationMetrics("multilabel", 3)
    merged.load_state(first.state() + second.state())
    assert merged.compute() == whole.compute()


def test_batch_metrics_from_logits_count_as_from_probabilities():
    """The training loop's batch Dice compares logits with the threshold's logit (no sigmoid over the
    batch) and sums in the target's layout: the counts must be those of the probabilities path."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 17, 19, generator=generator).to(memory_format=torch.channels_last)
    target = (torch.rand(4, 3, 17, 19, generator=generator) > 0.7).to(torch.uint8)
    target[0, :, :3] = IGNORE_INDEX
    for threshold in (0.5, 0.3):
        fast = SegmentationMetrics(MULTILABEL, 3, threshold=threshold, roc=False)
        fast.update(logits, target)
        fast.update(logits.bfloat16(), target)
        exact = SegmentationMetrics(MULTILABEL, 3, threshold=threshold, roc=False)
        exact.update(logits.sigmoid(), target, from_probabilities=True)
        exact.update(logits.bfloat16().float().sigmoid(), target, from_probabilities=True)
        assert torch.equal(fast.counts, exact.counts)
