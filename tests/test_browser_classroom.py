"""Two visitors of a public app in Chromium, each in a browser context of their own: neither sees
the other's datasets, and a reload (or a restart of the app) keeps each one's workspace."""

from __future__ import annotations

import pytest

from apphelpers import ARTIFACTS, start_app, wait_for
from test_browser import open_tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    running = start_app(tmp_path_factory.mktemp("classroom-browser"), public=True)
    yield running
    running.close()


def open_page(browser, url, context=None):
    context = context or browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#shapes-run")
    return context, page


def workspace_key(page) -> str:
    """The key the page holds (in its hidden field; the page itself shows only its first characters)."""
    wait_for(lambda: "private workspace" in page.inner_text("#workspace-name"), timeout=30)
    if not page.locator("#workspace-key input").count():
        page.get_by_text("your workspace: private").click()  # the panel opens like any accordion
    key = page.input_value("#workspace-key input")
    assert key[:6] in page.inner_text("#workspace-name") and key not in page.inner_text("body")
    return key


def dataset_options(page) -> list[str]:
    page.click("#annotate-dataset input")
    options = [text.split("\n")[-1] for text in page.get_by_role("option").all_inner_texts()]  # "✓\nname" if chosen
    page.keyboard.press("Escape")
    return options


def test_two_visitors_keep_their_datasets_apart_and_a_reload_keeps_the_workspace(browser, classroom):
    alice_context, alice = open_page(browser, classroom.url)
    bob_context, bob = open_page(browser, classroom.url)
    try:
        alice_key, bob_key = workspace_key(alice), workspace_key(bob)
        assert alice_key != bob_key
        open_tab(alice, "Annotate")
        alice.fill("#annotate-new-name textarea, #annotate-new-name input", "alice-private")
        alice.click("#annotate-create")
        wait_for(lambda: "Created" in alice.inner_text("#annotate-message"))
        open_tab(bob, "Annotate")
        assert "alice-private" not in dataset_options(bob)

        alice.reload()
        alice.wait_for_selector("#shapes-run")
        assert workspace_key(alice) == alice_key, "the browser keeps its workspace across a reload"
        open_tab(alice, "Annotate")
        wait_for(lambda: "alice-private" in dataset_options(alice), timeout=30)

        # A restart of the app on the same address (a new process reads the same secret and folders)
        classroom.demo.close()
        restarted = start_app(classroom.context.data.root, port=int(classroom.url.rstrip("/").rsplit(":", 1)[1]),
                              public=True)
        try:
            _, again = open_page(browser, restarted.url, alice_context)
            assert workspace_key(again) == alice_key, "the key survives a restart of the app"
            open_tab(again, "Annotate")
            wait_for(lambda: "alice-private" in dataset_options(again), timeout=30)
            ARTIFACTS.mkdir(exist_ok=True)
            again.screenshot(path=str(ARTIFACTS / "classroom-after-restart.png"), full_page=True)
        finally:
            restarted.close()
    finally:
        alice_context.close()
        bob_context.close()
