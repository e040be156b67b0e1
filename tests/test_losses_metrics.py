import math

import numpy as np
import pytest
import torch

from segdemo.losses import (BCEDiceLoss, BoundaryLoss, CrossEntropyDiceLoss, DeepSupervision, build_loss,
                            signed_distance, soft_dice_loss)
from segdemo.files import json_safe
from segdemo.metrics import SegmentationMetrics
from segdemo.tasks import IGNORE_INDEX, MULTILABEL

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
        build_loss("binary", "focal")


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
