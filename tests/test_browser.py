"""Click through the real page in Debian's Chromium, as a user would (screenshots in test-artifacts/)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from apphelpers import ARTIFACTS, save_image, wait_for
from segdemo.data import shapes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def images_loaded(page, selector: str, at_least: int = 1) -> bool:
    """True when at least ``at_least`` images under ``selector`` have really been decoded."""
    return page.evaluate(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector + ' img')];
            images.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });  // off-screen ones too
            return images.filter(i => i.complete && i.naturalWidth > 0).length >= count;
        }""", [selector, at_least])


def wait_images(page, selector: str, at_least: int = 1, timeout: float = 90) -> None:
    wait_for(lambda: images_loaded(page, selector, at_least), timeout=timeout)


def test_shapes_tab_generates_and_segments(page):
    page.click("#shapes-run")
    wait_images(page, "#shapes-gallery", 4)
    wait_images(page, "#shapes-channels", 6)
    wait_for(lambda: "ms per image" in page.inner_text("#shapes-info"))
    table = page.inner_text("#shapes-dice")
    means = [float(v) for v in re.findall(r"0\.\d{3}|1\.000", table)]
    assert len(means) >= 4 * 7 and min(means[-7:]) > 0.5


def test_shapes_example_button_is_one_click(page):
    page.get_by_role("button", name="8 images, seed 42").click()
    wait_images(page, "#shapes-gallery", 8)


def test_upload_tab_segments_an_image_with_its_ground_truth(page, tmp_path):
    images, masks = shapes.generate(1, 192, seed=99)
    image = save_image(tmp_path / "input.png", images[0])
    labels = np.zeros((192, 192), dtype=np.uint8)
    for index in range(6):
        labels[masks[0, index] == 1] = index + 1
    mask = save_image(tmp_path / "mask.png", labels)
    open_tab(page, "Upload")
    page.set_input_files("#upload-image input[type=file]", str(image))
    page.set_input_files("#upload-mask input[type=file]", str(mask))
    page.wait_for_timeout(500)
    page.click("#upload-run")
    wait_images(page, "#upload-overlay", 1)
    wait_images(page, "#upload-labels", 1)
    wait_images(page, "#upload-errors", 1)
    wait_for(lambda: "mean" in page.inner_text("#upload-metrics"))
    assert "192×192" in page.inner_text("#upload-info")


def test_models_tab_shows_the_card_and_compares(page):
    open_tab(page, "Models")
    wait_for(lambda: "Parameters" in page.inner_text("#models-card"))
    assert "encoder" in page.inner_text("#models-stages")
    page.click("#compare-run")
    wait_images(page, "#compare-gallery", 3)
    assert "ms" in page.inner_text("#compare-times")


def test_train_tab_lists_every_trainable_model(page):
    """The picker is filled when the page loads (listing the models imports torch, which the app
    loads only after serving the page)."""
    from segdemo.models import names

    open_tab(page, "Train")
    page.click("#train-model input")  # opens the list
    # an option's text is its name, after a check mark on the selected one
    listed = lambda: [option.inner_text().split("\n")[-1].strip() for option in page.get_by_role("option").all()]  # noqa: E731
    wait_for(lambda: listed() == names(trainable=True), timeout=30)
    page.keyboard.press("Escape")
    assert page.input_value("#train-model input") == "unet"


def test_train_tab_loss_picker_refuses_a_loss_that_does_not_suit_the_data_and_starts_with_one_that_does(page):
    open_tab(page, "Train")
    assert page.input_value("#train-loss-choice input").startswith("auto")
    page.get_by_label("time limit (seconds; 0 = none)").fill("3")

    def pick(label):
        page.click("#train-loss-choice input")
        page.get_by_role("option", name=label, exact=True).click()

    pick("cross-entropy")
    page.click("#train-start")
    toast = page.get_by_test_id("toast-body").filter(has_text="suits multiclass data")
    wait_for(lambda: toast.count() > 0, timeout=30)
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(1000)  # the toast fades in
    page.screenshot(path=str(ARTIFACTS / "train-loss-refused.png"), full_page=True)
    pick("Dice")
    page.click("#train-start")
    wait_for(lambda: "Dice loss" in page.inner_text("#train-message"), timeout=30)
    wait_for(lambda: page.locator("#train-progress").get_attribute("data-state") in ("stopped", "finished"),
             timeout=90)


def test_train_tab_curves_grow_and_the_model_appears_in_the_picker(page, app):
    # A second visitor watches the same run from their own page.
    watcher = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    watcher.set_default_timeout(60_000)
    watcher.goto(app.url)
    open_tab(watcher, "Train")
    open_tab(page, "Train")
    page.get_by_label("time limit (seconds; 0 = none)").fill("40")
    page.click("#train-start")
    wait_for(lambda: "Started run" in page.inner_text("#train-message"))
    wait_for(lambda: page.locator("#train-progress").get_attribute("data-state") == "running", timeout=60)

    def drawn(plot):
        """The series named in ``plot``'s legend and the length of its longest line path."""
        return page.evaluate("""(plot) => [
            [...document.querySelectorAll(plot + ' .role-legend-label text')].map(t => t.textContent),
            Math.max(0, ...[...document.querySelectorAll(plot + ' g.mark-line path')]
                              .map(path => (path.getAttribute('d') || '').length))]""", plot)

    # Real lines with every series in the legend, not just axes: gradio's plot keeps the axis types
    # and legend of the first frame it draws (an empty first frame left it with categories, no lines).
    for plot, series in (("#train-loss", {"train loss (batch)", "train loss (epoch mean)"}),
                         ("#train-dice", {"train Dice (batch)", "validation Dice (epoch)"})):
        wait_for(lambda: series <= set(drawn(plot)[0]) and drawn(plot)[1] > 50, timeout=60)
    first = page.inner_text("#train-status-line")
    wait_for(lambda: page.inner_text("#train-status-line") != first, timeout=30)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "train-running.png"), full_page=True)
    page.click("#train-stop")
    for viewer in (page, watcher):
        wait_for(lambda: viewer.locator("#train-progress").get_attribute("data-state") in ("stopped", "finished"),
                 timeout=120)
        wait_images(viewer, "#train-snapshot", 1)
        wait_for(lambda: viewer.locator("#train-download a, #train-download [download]").count() > 0, timeout=30)
    # Both pages end on the same run: the same final status line.
    wait_for(lambda: page.inner_text("#train-status-line") == watcher.inner_text("#train-status-line"), timeout=10)
    watcher.screenshot(path=str(ARTIFACTS / "train-second-watcher.png"), full_page=True)
    watcher.context.close()
    open_tab(page, "Shapes")
    page.click("#shapes-model input")  # opens the list
    wait_for(lambda: page.get_by_role("option", name=re.compile("trained: ")).count() > 0, timeout=30)


def test_annotate_paint_save_reopen_round_trips(page, app):
    open_tab(page, "Annotate")
    page.fill("#annotate-new-name textarea, #annotate-new-name input", "browser-set")
    page.click("#annotate-create")
    wait_for(lambda: "Created" in page.inner_text("#annotate-message"))
    page.click("#annotate-open-shapes")
    wait_for(lambda: "Opened" in page.inner_text("#annotate-message"))
    page.click("#annotate-prefill")
    wait_for(lambda: "Pre-filled" in page.inner_text("#annotate-message"), timeout=60)
    canvas = page.locator("#annotate-editor canvas").first
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.12, steps=4)
    page.mouse.up()
    page.fill("#annotate-item textarea, #annotate-item input", "painted")
    page.click("#annotate-save")
    wait_for(lambda: "Saved" in page.inner_text("#annotate-message"), timeout=60)
    wait_images(page, "#annotate-gallery", 1)
    store = app.context.workspace().store
    image, labels = store.load("browser-set", "painted")
    info = store.info("browser-set")
    assert set(np.unique(labels).tolist()) <= set(range(len(info.classes)))
    # reopening shows the same labels; saving again without changes keeps them exactly
    page.locator("#annotate-gallery img").first.click()
    wait_for(lambda: "Opened **painted**" in page.inner_text("#annotate-message") or
             "Opened painted" in page.inner_text("#annotate-message"))
    page.click("#annotate-save")
    wait_for(lambda: "previous version" in page.inner_text("#annotate-message"), timeout=60)
    _, again = store.load("browser-set", "painted")
    assert np.array_equal(again, labels)


def test_a_page_polls_the_trainer_often_only_while_the_train_tab_shows(page, app):
    """The timer's period follows the tab in the browser: every 0.8 s on Train, every 5 s
    elsewhere (a class of pages on other tabs costs the server little)."""
    from segdemo.ui.train_tab import AWAY_SECONDS, REFRESH_SECONDS

    # Only the timers' ticks count: a run that goes or finishes (one an earlier test started, on a
    # slower machine) also sends the .change events of the snapshot, checkpoint and picker keys.
    ticks = {function._id for function in app.demo.fns.values()
             if any(event == "tick" for _, event in function.targets)}
    events: list[float] = []

    def count(request):
        if "queue/join" in request.url and (request.post_data_json or {}).get("fn_index") in ticks:
            events.append(time.monotonic())

    page.on("request", count)

    def events_in(seconds: float) -> int:
        events.clear()
        page.wait_for_timeout(1000 * seconds)  # (Playwright delivers the page's events while it waits)
        return len(events)

    assert AWAY_SECONDS >= 4 * REFRESH_SECONDS
    open_tab(page, "Shapes")
    page.wait_for_timeout(1000 * AWAY_SECONDS)  # a tick set to the old period may still be due
    away = events_in(AWAY_SECONDS)          # one tick due, two at most
    open_tab(page, "Train")
    on_train = events_in(AWAY_SECONDS)      # six due
    assert away <= 2 and on_train >= AWAY_SECONDS / REFRESH_SECONDS - 2, (away, on_train)
