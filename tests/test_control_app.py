"""Run controls through the real app: /train_pause, /train_resume, /train_step, /train_set_lr and
what /train_status says, for one user, in a classroom, and on the page in Chromium."""

from __future__ import annotations

import re
import time

import pytest
from gradio_client import Client

from apphelpers import ARTIFACTS, start_app, wait_for

pytestmark = pytest.mark.slow

LIVE_RUN = {"model": "unet", "unet_width": 4, "data": "synthetic shapes", "dataset_zip": None, "epochs": 1000,
            "batch_size": 4, "learning_rate": 0.003, "crop_size": 32, "time_limit_seconds": 120}


def status_of(client) -> dict:
    return client.predict(api_name="/train_status")


def start_and_wait_for_steps(client, steps: int = 3) -> dict:
    assert "Started run" in client.predict(**LIVE_RUN, api_name="/train_start")
    return wait_for(lambda: (s := status_of(client))["state"] == "running" and s["step"] >= steps and s, timeout=90)


def stop_and_wait(client) -> None:
    client.predict(api_name="/train_stop")
    wait_for(lambda: status_of(client)["state"] in ("stopped", "finished", "failed"), timeout=120)


def test_pause_holds_the_step_counter_one_step_moves_it_once_resume_moves_it_again(client):
    start_and_wait_for_steps(client)
    assert "Pausing" in client.predict(api_name="/train_pause")
    held = wait_for(lambda: (s := status_of(client))["paused"] and s, timeout=30)  # the step under way ends first
    assert held["state"] == "running" and held["message"] == f"paused at step {held['step']}"
    time.sleep(3.0)
    assert status_of(client)["step"] == held["step"], "the step counter moved while paused"

    assert "One step" in client.predict(api_name="/train_step")
    wait_for(lambda: status_of(client)["step"] == held["step"] + 1, timeout=30)
    time.sleep(1.0)
    assert status_of(client)["step"] == held["step"] + 1

    assert "Resumed" in client.predict(api_name="/train_resume")
    moving = wait_for(lambda: (s := status_of(client))["step"] >= held["step"] + 5 and s, timeout=30)
    assert not moving["paused"]
    stop_and_wait(client)


def test_a_learning_rate_set_mid_run_shows_in_the_status_and_absurd_ones_are_refused(client):
    before = start_and_wait_for_steps(client)
    assert before["lr_set_by"] == "schedule" and 0 < before["lr"] <= 0.003
    assert "0.0007" in client.predict(learning_rate=0.0007, api_name="/train_set_lr")
    after = status_of(client)
    assert after["lr"] == 0.0007 and after["lr_set_by"] == "visitor"
    trained_at = wait_for(lambda: [step for step in status_of(client)["steps"] if step["lr"] == 0.0007], timeout=30)
    assert trained_at, "no step trained at the chosen rate"
    for absurd, message in ((5, "far too large"), (0, "positive"), (-1, "positive")):
        with pytest.raises(Exception, match=message):
            client.predict(learning_rate=absurd, api_name="/train_set_lr")
    assert status_of(client)["lr"] == 0.0007
    stop_and_wait(client)
    with pytest.raises(Exception, match="no run is going"):
        client.predict(api_name="/train_pause")


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGDEMO_QUEUE_LENGTH", "2")
        patch.setenv("SEGDEMO_RUN_SECONDS", "120")
        running = start_app(tmp_path_factory.mktemp("classroom"), public=True)
    yield running
    running.close()


def visitor(app) -> Client:
    return Client(app.url, verbose=False, analytics_enabled=False, ssl_verify=False)


def test_in_a_classroom_only_the_runs_owner_may_pause_step_or_set_its_learning_rate(classroom):
    alice, bob = visitor(classroom), visitor(classroom)
    start_and_wait_for_steps(alice)
    for endpoint, arguments in (("/train_pause", {}), ("/train_resume", {}), ("/train_step", {}),
                                ("/train_set_lr", {"learning_rate": 0.001})):
        with pytest.raises(Exception, match="another visitor's"):
            bob.predict(**arguments, api_name=endpoint)
    seen_by_bob = status_of(bob)
    assert not seen_by_bob["paused"] and seen_by_bob["lr_set_by"] == "schedule"
    assert "time limit keeps running" in alice.predict(api_name="/train_pause")
    wait_for(lambda: status_of(bob)["paused"], timeout=30)  # everyone sees that the run going is paused
    alice.predict(learning_rate=0.001, api_name="/train_set_lr")
    assert status_of(bob)["lr"] == 0.001
    stop_and_wait(alice)


@pytest.mark.browser
def test_pause_on_the_page_stops_the_step_counter_and_resume_moves_it(app, browser):
    page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("time limit (seconds; 0 = none)").fill("120")
    page.click("#train-start")
    wait_for(lambda: "Started run" in page.inner_text("#train-message"), timeout=60)

    def counter() -> int | None:
        found = re.search(r"step (\d+)", page.inner_text("#train-status-line"))
        return int(found.group(1)) if found else None

    wait_for(lambda: (counter() or 0) >= 3, timeout=90)
    page.click("#train-pause")
    wait_for(lambda: page.inner_text("#train-status-line").startswith("paused"), timeout=30)
    held = counter()
    time.sleep(3.0)
    assert counter() == held, "the page's step counter moved while paused"
    page.fill("#train-new-lr input", "0.0005")
    page.click("#train-set-lr")
    wait_for(lambda: "learning rate 0.0005 (set by hand)" in page.inner_text("#train-status-line"), timeout=10)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "train-paused.png"), full_page=True)
    page.click("#train-step")
    wait_for(lambda: counter() == held + 1, timeout=20)
    page.click("#train-resume")
    wait_for(lambda: (counter() or 0) >= held + 5 and not page.inner_text("#train-status-line").startswith("paused"),
             timeout=30)
    page.click("#train-stop")
    wait_for(lambda: page.locator("#train-progress").get_attribute("data-state") in ("stopped", "finished"),
             timeout=120)
    page.context.close()
