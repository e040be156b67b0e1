"""Watching a run learn on the real page in Debian's Chromium: scrubbing the probe timeline, Play,
the feature maps refreshing as the run trains, and inside a finished model on the Models tab
(screenshots in test-artifacts/)."""

from __future__ import annotations

import re

import pytest
from apphelpers import ARTIFACTS, wait_for
from test_browser import images_loaded, open_tab, wait_images

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def slider_value(page) -> int:
    return int(float(page.input_value("#train-timeline-slider input[type=number]")))


def slider_maximum(page) -> int:
    return int(float(page.get_attribute("#train-timeline-slider input[type=range]", "max") or 0))


def frame_source(page) -> str:
    return page.get_attribute("#train-timeline-image img", "src") or ""


def features_label(page) -> str:
    return page.inner_text("#train-features-u")


def test_scrub_the_timeline_play_it_and_watch_the_features_refresh(page):
    page.set_viewport_size({"width": 1400, "height": 1200})   # the panel is long
    open_tab(page, "Train")
    page.get_by_label(re.compile("time limit")).fill("300")   # stopped below, once everything was seen
    page.click("#train-start")
    wait_for(lambda: "Started run" in page.inner_text("#train-message"), timeout=60)
    # No validation yet: the per-class plots wait for it (hidden, not another run's curves).
    wait_for(lambda: not page.locator("#train-class-dice").is_visible(), timeout=10)
    # The first feature maps come with the first frame; newer ones a few seconds of training later.
    wait_images(page, "#train-features-gallery", 8, timeout=180)
    wait_images(page, "#train-features-u", 1)
    first_features = re.search(r"after step (\d+)", features_label(page)).group(1)
    wait_for(lambda: slider_maximum(page) >= 3 and "step" in page.inner_text("#train-timeline-caption"), timeout=180)
    wait_images(page, "#train-timeline-image", 1)
    latest = frame_source(page)
    latest_caption = page.inner_text("#train-timeline-caption")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#train-playground").screenshot(path=str(ARTIFACTS / "playground-latest.png"))

    # One scrub, while frames keep coming: the slider stays where it was put (the browser decides
    # whether to follow a new frame against the slider's position when the frame's answer arrives).
    page.fill("#train-timeline-slider input[type=number]", "0")
    page.press("#train-timeline-slider input[type=number]", "Enter")
    wait_for(lambda: page.inner_text("#train-timeline-caption").startswith("step 1 ·"), timeout=30)
    wait_for(lambda: frame_source(page) not in ("", latest) and images_loaded(page, "#train-timeline-image"),
             timeout=30)
    assert page.inner_text("#train-timeline-caption") != latest_caption
    page.locator("#train-playground").screenshot(path=str(ARTIFACTS / "playground-scrubbed.png"))
    page.wait_for_timeout(1500)
    assert slider_value(page) == 0            # new frames do not pull a scrubbed-back slider along

    page.click("#train-timeline-play")
    wait_for(lambda: slider_value(page) >= 2, timeout=30)
    page.click("#train-timeline-play")        # Pause
    wait_for(lambda: page.inner_text("#train-timeline-play").strip() == "Play", timeout=10)

    wait_for(lambda: re.search(r"after step (\d+)", features_label(page)).group(1) != first_features, timeout=180)
    wait_images(page, "#train-features-u", 1)
    page.locator("#train-playground").screenshot(path=str(ARTIFACTS / "playground-features.png"))
    page.click("#train-stop")
    wait_for(lambda: page.locator("#train-progress").get_attribute("data-state") in ("stopped", "finished"),
             timeout=180)
    page.click("#train-export")
    wait_for(lambda: page.locator("#train-animation a, #train-animation [download]").count() > 0, timeout=60)
    # the per-class Dice plot, with the mesh square's ceiling among its series
    wait_for(lambda: "data ceiling" in page.inner_text("#train-class-dice"), timeout=60)
    page.locator("#train-playground").screenshot(path=str(ARTIFACTS / "playground-ended.png"))


def test_models_tab_looks_inside_a_finished_model(page):
    open_tab(page, "Models")
    page.click("#features-run")
    wait_images(page, "#models-features-gallery", 8, timeout=90)
    wait_images(page, "#models-features-u", 1)
    page.locator("#models-features-u").screenshot(path=str(ARTIFACTS / "models-inside-the-u.png"))
