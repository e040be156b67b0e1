"""Experiments and lessons on the real app: a lesson over the API in a classroom (its runs in order,
listed with their settings, overlaid, their probes side by side; another visitor sees none of them),
and in Chromium."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from apphelpers import ARTIFACTS, start_app, wait_for
from segdemo.engine.timeline import read_timeline

pytestmark = pytest.mark.slow

SECONDS = 5   # per run, counted from the run's setup: each also validates and saves; a lesson of three took ~50 s


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGDEMO_QUEUE_LENGTH", "5")   # Alice's two waiting runs and Bob's three
        running = start_app(tmp_path_factory.mktemp("lessons"), public=True)
    yield running
    running.close()


def visitor(app) -> Client:
    return Client(app.url, verbose=False, analytics_enabled=False, ssl_verify=False)


def lesson_done(client, count: int):
    runs = client.predict(api_name="/train_runs")
    return len(runs) == count and all(run["state"] == "finished" for run in runs) and runs


def test_a_lesson_runs_its_variants_in_order_and_lists_them_with_their_settings(classroom):
    alice, bob = visitor(classroom), visitor(classroom)
    message = alice.predict(lesson_name="How wide", seconds_per_run=SECONDS, api_name="/train_lesson")
    assert f"Started the lesson **How wide**: 3 runs of {SECONDS} s" in message
    assert alice.predict(api_name="/train_status")["series"] == {"name": "How wide", "index": 1, "total": 3}
    with pytest.raises(Exception, match="one run or lesson per workspace"):
        alice.predict(lesson_name="How wide", seconds_per_run=SECONDS, api_name="/train_lesson")
    # Bob's lesson waits behind Alice's runs; his Stop cancels all of it.
    queued = bob.predict(lesson_name="How wide", seconds_per_run=SECONDS, api_name="/train_lesson")
    assert "Queued the lesson **How wide**; you are number 3 in the queue" in queued   # behind Alice's 2 waiting
    assert [run["state"] for run in bob.predict(api_name="/train_runs")] == ["queued"] * 3
    assert "cancelled" in bob.predict(api_name="/train_stop")
    assert bob.predict(api_name="/train_runs") == []

    runs = wait_for(lambda: lesson_done(alice, 3), timeout=180)
    assert [run["title"] for run in runs] == ["How wide: width 4", "How wide: width 8", "How wide: width 16"]
    assert [run["width"] for run in runs] == [4, 8, 16]
    assert [run["run_id"] for run in runs] == sorted(run["run_id"] for run in runs)
    for run in runs:
        assert run["max_seconds"] == SECONDS and run["lr"] == 0.003 and run["batch_size"] == 12
        assert run["model"] == "unet" and run["steps"] >= 1 and run["best_dice"] is not None
        assert f"base_channels={run['width']}" in run["settings"]

    # Bob lists and overlays none of Alice's runs.
    assert bob.predict(api_name="/train_runs") == []
    with pytest.raises(Exception, match="no run .* in your workspace"):
        bob.predict(run_ids=[runs[0]["run_id"]], api_name="/train_compare")

    plot, pictures, curves = alice.predict(run_ids=[runs[0]["run_id"], runs[2]["run_id"]], api_name="/train_compare")
    assert plot["type"] == "matplotlib" and len(pictures) == 2
    assert list(curves) == ["How wide: width 4", "How wide: width 16"]
    assert all(curve["val_mean_dice"] and curve["loss"] for curve in curves.values())
    with pytest.raises(Exception, match="at most 4 runs"):
        alice.predict(run_ids=[run["run_id"] for run in runs] * 2, api_name="/train_compare")
    with pytest.raises(Exception, match="unknown lesson 'Why not'"):
        alice.predict(lesson_name="Why not", seconds_per_run=SECONDS, api_name="/train_lesson")
    # Their probes side by side: one picture per run; Bob sees none of them.
    assert len(alice.predict(run_ids=[run["run_id"] for run in runs], seconds=None,
                             api_name="/train_compare_probes")) == 3
    with pytest.raises(Exception, match="no run .* in your workspace"):
        bob.predict(run_ids=[runs[0]["run_id"]], seconds=None, api_name="/train_compare_probes")

    # A lesson's models join Alice's pickers when she asks (not by themselves), once; Bob keeps none of hers.
    assert not [name for name in alice.predict(api_name="/models") if "How wide" in name]
    with pytest.raises(Exception, match="no run .* in your workspace"):
        bob.predict(run_ids=[runs[0]["run_id"]], api_name="/train_keep_models")
    kept = alice.predict(run_ids=[runs[0]["run_id"], runs[2]["run_id"]], api_name="/train_keep_models")
    assert kept.count("added as") == 2, kept
    names = [name for name in alice.predict(api_name="/models") if "How wide" in name]
    assert len(names) == 2 and runs[0]["run_id"] in names[0] + names[1] and runs[2]["run_id"] in names[0] + names[1]
    assert "in your models already" in alice.predict(run_ids=[runs[0]["run_id"]], api_name="/train_keep_models")
    assert len([name for name in alice.predict(api_name="/models") if "How wide" in name]) == 2
    assert not [name for name in bob.predict(api_name="/models") if "How wide" in name]
    with pytest.raises(Exception, match="pick the runs"):
        alice.predict(run_ids=[], api_name="/train_keep_models")


def pixels(picture) -> np.ndarray:
    """A picture (a path, or PNG bytes) as an ``(H, W, 3)`` array."""
    return np.asarray(Image.open(io.BytesIO(picture) if isinstance(picture, bytes) else picture).convert("RGB"))


# One epoch of the live preset: 50 steps, however busy the machine (a lesson's runs are bounded by seconds).
ONE_EPOCH = {"model": "unet", "unet_width": 8, "data": "synthetic shapes", "dataset_zip": None, "epochs": 1,
             "batch_size": 12, "learning_rate": 0.003, "crop_size": 80, "time_limit_seconds": 0}


def test_two_runs_show_their_probes_side_by_side_the_first_from_its_folder(classroom):
    carol = visitor(classroom)
    run_ids = []
    for _ in range(2):
        assert "Started run" in carol.predict(**ONE_EPOCH, api_name="/train_start")
        run_ids.append(carol.predict(api_name="/train_status")["run_id"])
        wait_for(lambda: carol.predict(api_name="/train_status")["state"] == "finished", timeout=120)
    first, second = run_ids
    # The trainer holds Carol's second run now; the first's frames come from its folder.
    assert carol.predict(api_name="/train_status")["run_id"] == second
    [folder] = classroom.context.workspaces.root.glob(f"*/runs/{first}")
    kept = read_timeline(folder)
    assert len(kept) >= 3 and kept[0].step == 1   # later ones as the probes' share of the time allows

    end = carol.predict(run_ids=run_ids, seconds=None, api_name="/train_compare_probes")
    start = carol.predict(run_ids=run_ids, seconds=0, api_name="/train_compare_probes")
    assert len(end) == len(start) == 2
    assert all(re.search(r" · step \d+ · Dice \d\.\d\d · \d+ s$", item["caption"]) for item in end), end
    assert end[0]["caption"].startswith(f"{carol.predict(api_name='/train_runs')[0]['title']} ({first[-6:]}) · ")
    assert f" · step {kept[-1].step} · " in end[0]["caption"]
    assert all(" · step 1 · Dice " in item["caption"] for item in start)
    for early, late in zip(start, end):   # 50 steps change what the network sees
        assert not np.array_equal(pixels(early["image"]), pixels(late["image"]))
    assert np.array_equal(pixels(start[0]["image"]), pixels(kept[0].image))
    assert np.array_equal(pixels(end[0]["image"]), pixels(kept[-1].image))
    middle = kept[len(kept) // 2]
    [at_middle] = carol.predict(run_ids=[first], seconds=middle.elapsed, api_name="/train_compare_probes")
    assert f" · step {middle.step} · " in at_middle["caption"]
    assert np.array_equal(pixels(at_middle["image"]), pixels(middle.image))
    with pytest.raises(Exception, match="no run 20261130-000000-ffffff in your workspace"):
        carol.predict(run_ids=["20261130-000000-ffffff"], seconds=3, api_name="/train_compare_probes")


@pytest.mark.browser
def test_a_lesson_overlays_its_runs_curves_on_the_page(app, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    page.wait_for_selector("#shapes-run")
    page.get_by_role("tab", name="Train").click()
    seconds = page.locator("#lesson-seconds input")
    seconds.fill(str(SECONDS))
    seconds.press("Enter")
    page.get_by_role("button", name="How wide").click()
    wait_for(lambda: "Started the lesson" in page.inner_text("#lesson-message"), timeout=30)
    assert f"3 runs of {SECONDS} s" in page.inner_text("#lesson-message")
    wait_for(lambda: "How wide: lesson run" in page.inner_text("#train-status-line"), timeout=30)
    wait_for(lambda: page.inner_text("#runs-table").count("finished") == 3, timeout=180)

    def overlay_shown() -> bool:
        return page.evaluate("""() => {
            const loaded = (selector) => [...document.querySelectorAll(selector + ' img')]
                .filter(i => i.complete && i.naturalWidth > 0).length;
            return loaded('#runs-overlay') >= 1 && loaded('#runs-pictures') >= 3;
        }""")

    page.locator("#runs-pictures").scroll_into_view_if_needed()  # the gallery's pictures load lazily
    wait_for(overlay_shown, timeout=30)
    chosen = page.inner_text("#runs-chosen")
    assert all(f"How wide: width {width}" in chosen for width in (4, 8, 16))   # the overlay follows the lesson
    # Under the curves, each run's probes at the end of its run, captioned; the slider goes back to the start.
    captions = page.inner_text("#runs-pictures")
    assert all(f"How wide: width {width} · step " in captions for width in (4, 8, 16)), captions
    assert "input | truth | prediction" in page.inner_text("#experiments")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#experiments").screenshot(path=str(ARTIFACTS / "lesson-overlay.png"))
    page.locator("#runs-seconds input[type=range]").click(position={"x": 2, "y": 5})
    wait_for(lambda: page.inner_text("#runs-pictures").count(" · step 1 · ") == 3, timeout=15)
    # The three models join the model pickers on request.
    page.click("#runs-keep")
    wait_for(lambda: page.inner_text("#lesson-message").count("added as") == 3, timeout=30)
    page.locator("#experiments").screenshot(path=str(ARTIFACTS / "lesson-models-kept.png"))
    context.close()


def test_the_status_line_says_which_lesson_run_goes():
    from segdemo.ui.train_tab import progress_html

    status = {"state": "running", "step": 3, "run_id": "20261130-100000-aaaaaa", "yours": True, "your_position": 1,
              "your_wait_seconds": 30, "series": {"name": "How wide", "index": 2, "total": 3}}
    line = progress_html(status)
    assert "How wide: lesson run 2 of 3" in line and "in the queue" not in line   # its next run is no other's wait
    assert "number 1 in the queue" in progress_html({**status, "yours": False})    # another's lesson, yours waiting
