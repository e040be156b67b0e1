"""Experiments and lessons on the real app: a lesson over the API in a classroom (its runs in order,
listed with their settings, overlaid; another visitor sees none of them), and in Chromium."""

from __future__ import annotations

import pytest
from gradio_client import Client

from apphelpers import ARTIFACTS, start_app, wait_for

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
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#experiments").screenshot(path=str(ARTIFACTS / "lesson-overlay.png"))
    context.close()


def test_the_status_line_says_which_lesson_run_goes():
    from segdemo.ui.train_tab import progress_html

    status = {"state": "running", "step": 3, "run_id": "20261130-100000-aaaaaa", "yours": True, "your_position": 1,
              "your_wait_seconds": 30, "series": {"name": "How wide", "index": 2, "total": 3}}
    line = progress_html(status)
    assert "How wide: lesson run 2 of 3" in line and "in the queue" not in line   # its next run is no other's wait
    assert "number 1 in the queue" in progress_html({**status, "yours": False})    # another's lesson, yours waiting
