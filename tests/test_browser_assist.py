"""The Annotate tab's assist panel in Chromium: a box clicked on the picture becomes a mask, which is saved."""

from __future__ import annotations

import numpy as np
import pytest
from apphelpers import ARTIFACTS, wait_for
from test_browser import open_tab, wait_images

from segdemo.data import shapes

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def click_pixel(page, selector: str, x: int, y: int, width: int) -> None:
    """Click pixel ``(x, y)`` of the ``width`` pixels wide image shown (perhaps enlarged) in the
    picture ``selector``, placed as gradio places it (contained, centred, never enlarged) when it
    reads a click back as a pixel."""
    page.locator(selector).scroll_into_view_if_needed()
    where = page.evaluate("""(selector) => {
        const img = document.querySelector(selector + ' img');
        const box = img.getBoundingClientRect();
        const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight, 1);
        return [box.left + (box.width - img.naturalWidth * scale) / 2,
                box.top + (box.height - img.naturalHeight * scale) / 2, scale, img.naturalWidth];
    }""", selector)
    left, top, scale, shown = where
    factor = shown / width   # picture pixels per image pixel
    page.mouse.click(left + (float(x) + 0.5) * factor * scale, top + (float(y) + 0.5) * factor * scale)


def open_shapes_in_new_dataset(page, dataset: str) -> None:
    """On the Annotate tab, a new shapes dataset ``dataset`` with the shapes image of seed 0 (192 px) open."""
    open_tab(page, "Annotate")
    page.fill("#annotate-new-name textarea, #annotate-new-name input", dataset)
    page.click("#annotate-create")
    wait_for(lambda: "Created" in page.inner_text("#annotate-message"))
    page.click("#annotate-open-shapes")
    wait_for(lambda: "Opened" in page.inner_text("#annotate-message"))


def test_a_box_clicked_on_the_picture_becomes_the_class_mask_and_is_saved(page, app):
    open_shapes_in_new_dataset(page, "assist-browser")
    wait_images(page, "#assist-picture")
    assert page.input_value("#assist-class input") == "filled square"
    masks = shapes.generate(1, 192, seed=0)[1]
    truth = masks[0, shapes.CLASSES.index("filled square")].astype(bool)
    rows, cols = np.nonzero(truth)
    x0, y0, x1, y1 = cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2   # a box a little loose
    click_pixel(page, "#assist-picture", x0, y0, 192)
    wait_for(lambda: "First corner" in page.inner_text("#annotate-message"))
    click_pixel(page, "#assist-picture", x1, y1, 192)
    wait_for(lambda: page.input_value("#assist-box-text textarea, #assist-box-text input") != "")
    marked = [int(v) for v in page.input_value("#assist-box-text textarea, #assist-box-text input").split(",")]
    assert marked == [x0, y0, x1 + 1, y1 + 1]
    marked_picture = page.get_attribute("#assist-picture img", "src")
    # The editor fetches its new background (the mask drawn in) when the box's answer comes.
    with page.expect_response(lambda response: "gradio_api/file=" in response.url, timeout=30_000):
        page.click("#assist-box")
    wait_for(lambda: "Box → mask" in page.inner_text("#annotate-message"), timeout=30)
    # The picture shows the new painting under the marks: the square in its class's colour.
    wait_for(lambda: page.get_attribute("#assist-picture img", "src") != marked_picture, timeout=30)
    wait_images(page, "#assist-picture")
    centre = page.evaluate("""([x, y]) => {
        const img = document.querySelector('#assist-picture img');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        const factor = img.naturalWidth / 192;
        return [...context.getImageData(Math.floor((x + 0.5) * factor), Math.floor((y + 0.5) * factor), 1, 1).data];
    }""", [int(cols.mean()), int(rows.mean())])
    assert centre[0] > centre[1] + 60 and centre[0] > centre[2] + 60, centre   # white tinted red (#c93a40)
    page.wait_for_timeout(500)
    page.fill("#annotate-item textarea, #annotate-item input", "boxed")
    page.click("#annotate-save")
    wait_for(lambda: "Saved" in page.inner_text("#annotate-message"), timeout=30)
    store = app.context.workspace().store
    labels = store.load("assist-browser", "boxed")[1]
    square = store.info("assist-browser").classes.index("filled square")
    found = labels == square
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) >= 0.9
    assert set(np.unique(labels).tolist()) == {0, square}
    wait_for(lambda: page.locator("#annotate-editor .progress-text, #annotate-editor .eta-bar").count() == 0)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#annotate-editor").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "assist-box-to-mask.png"))


def stroke(page, editor: str, points: list[tuple[float, float]], side: int) -> None:
    """A brush stroke through ``points`` (pixels of the ``side``-pixel image) on the editor's canvas,
    where the editor shows the image: centred, at the zoom it reads out (``240%``)."""
    canvas = page.locator(f"{editor} canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    zoom = float(page.locator(f"{editor} span", has_text="%").first.inner_text().strip().rstrip("%")) / 100

    def at(x, y):
        return (box["x"] + box["width"] / 2 + (x + 0.5 - side / 2) * zoom,
                box["y"] + box["height"] / 2 + (y + 0.5 - side / 2) * zoom)

    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(*point), steps=6)
    page.mouse.up()


def test_strokes_paint_over_a_prefill_the_background_colour_clears_and_the_lock_holds(page, app):
    """Gradio's editor does not draw the layers it is sent, and sends back only the strokes made
    since: the pre-fill is shown in the editor's background and the strokes are painted over it."""
    open_shapes_in_new_dataset(page, "strokes")
    with page.expect_response(lambda response: "gradio_api/file=" in response.url, timeout=60_000):
        page.click("#annotate-prefill")
    wait_for(lambda: "Pre-filled" in page.inner_text("#annotate-message"), timeout=60)
    page.wait_for_timeout(1000)   # the editor draws its new background
    editor = page.locator("#annotate-editor")
    editor.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "annotate-prefilled.png"))
    store = app.context.workspace().store
    classes = store.info("strokes").classes
    ring, disk, triangle, plus = (classes.index(name) for name in ("ring", "disk", "triangle", "plus"))
    swatches = page.locator("#annotate-editor button.color")

    def pick(index):
        if not swatches.first.is_visible():
            page.click('#annotate-editor button[aria-label="Color"]')
        swatches.nth(index).click()
        page.mouse.move(0, 0)

    pick(ring)
    stroke(page, "#annotate-editor", [(20, 70), (90, 70)], 192)       # over the background
    pick(0)
    stroke(page, "#annotate-editor", [(128, 28), (160, 28)], 192)     # the background's colour over the disk's foot
    page.check("#assist-lock input")
    pick(triangle)
    stroke(page, "#annotate-editor", [(118, 45), (166, 45)], 192)     # across the plus, lock on
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "annotate-strokes.png"))
    page.fill("#annotate-item textarea, #annotate-item input", "stroked")
    page.click("#annotate-save")
    wait_for(lambda: "Saved" in page.inner_text("#annotate-message"), timeout=30)
    labels = store.load("strokes", "stroked")[1]
    truth = shapes.generate(1, 192, seed=0)[1][0].astype(bool)
    mesh = classes.index("mesh square")
    found = labels == mesh
    assert 2 * (found & truth[mesh - 1]).sum() / (found.sum() + truth[mesh - 1].sum()) >= 0.9   # the pre-fill kept
    assert (labels[68:73, 30:80] == ring).all()                        # the stroke over the background
    assert (labels[24:32, 134:155] == 0).all()                         # the background's colour cleared
    assert (labels[11:18][truth[disk - 1][11:18]] == disk).mean() > 0.9   # the rest of the disk kept
    bar = truth[plus - 1][43:48, 141:161]
    assert (labels[43:48, 141:161][bar] == plus).all() and bar.any()   # locked: the plus kept its pixels
    assert (labels[43:48, 122:136] == triangle).all()                  # the stroke took the background
    page.wait_for_timeout(2000)   # the editor shows the labels saved
    editor.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "annotate-stroked-saved.png"))
