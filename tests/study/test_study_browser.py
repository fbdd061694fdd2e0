"""Playwright + Debian's chromium against the real server: the answer buttons wait for both clips,
no Content-Security-Policy violation, skip and undo from the keyboard, answering with the keyboard
and the mouse, the next batch, SIGKILL of the server mid-batch (an answer sent while it is down is
stored once after the restart; a reload resumes at the same query), two annotators in parallel, and
the page screenshot for docs (slow). Pages play the clips at 16x (an init script) to keep this quick."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from policy_sampler.study.loadtest import StudyServer

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (no browser is downloaded)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
FAST = "document.addEventListener('play', (e) => { e.target.playbackRate = 16; }, true);"
CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "(e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def fast_page(browser_or_context):
    """A page whose clips play at 16x (the buttons wait for both clips to end once)."""
    page = browser_or_context.new_page()
    page.add_init_script(FAST)
    return page


@pytest.fixture(scope="module")
def server(tmp_path_factory, video_cache):
    server = StudyServer(tmp_path_factory.mktemp("browser_study"), [
        "study=loadtest", "annotators=5", f"cache_dir={video_cache}", "study.video.width=32",
        "study.video.height=32", "study.batches.batch_size=3", "study.batches.n_batches=2"]).start()
    yield server
    server.stop()


def _answers(server: StudyServer) -> list[dict]:
    admin = server.tokens["admin"]
    return httpx.get(server.url + "/api/admin/answers", headers={"Authorization": f"Bearer {admin}"}).json()


def _query_id(page) -> str:
    page.wait_for_selector("#query:not([hidden])")
    page.wait_for_function("() => document.querySelector('#choose-left').disabled === false")
    return page.get_attribute("#query", "data-query-id")


def _after(page, old: str) -> None:
    """Wait until the page shows another query than ``old`` (or the done message)."""
    page.wait_for_function(
        "(old) => !document.querySelector('#done').hidden || "
        "(document.querySelector('#query').dataset.queryId !== old && !document.querySelector('#choose-left').disabled)",
        arg=old)


def test_keyboard_and_mouse_answers_are_stored_and_the_next_batch_appears(browser, server):
    token = server.tokens["annotators"][0]
    page = fast_page(browser)
    page.goto(f"{server.url}/?token={token}")
    shown = []
    for action, choice in (("ArrowLeft", "left"), ("#choose-right", "right"), ("3", "equal")):
        qid = _query_id(page)
        shown.append((qid, choice))
        assert "Batch 1 of 2" in page.inner_text("#progress-text")
        page.click(action) if action.startswith("#") else page.keyboard.press(action)
        _after(page, qid)
    # the H.264 videos decode in this chromium
    page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2 && v.videoWidth === 32)")
    assert "Batch 2 of 2: query 1 / 3" in page.inner_text("#progress-text")
    mine = [(a["query_id"], a["choice"]) for a in _answers(server) if a["annotator"] == 1]
    assert mine == shown
    page.close()


def test_sigkill_mid_batch_nothing_lost_and_the_page_resumes(browser, server):
    token = server.tokens["annotators"][1]
    page = fast_page(browser)
    page.goto(f"{server.url}/?token={token}")
    first = _query_id(page)
    page.keyboard.press("ArrowRight")
    _after(page, first)
    pending = _query_id(page)
    server.kill()
    page.keyboard.press("ArrowLeft")  # sent while the server is down: the page keeps retrying
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('retrying')")
    server.start()
    _after(page, pending)
    current = _query_id(page)
    mine = [(a["query_id"], a["choice"]) for a in _answers(server) if a["annotator"] == 2]
    assert mine == [(first, "right"), (pending, "left")]
    page.reload()
    assert _query_id(page) == current  # a reload resumes at the same query
    page.close()


def test_two_annotators_in_parallel(browser, server):
    tokens = server.tokens["annotators"][2:4]
    contexts = [browser.new_context() for _ in tokens]
    pages = [fast_page(c) for c in contexts]
    for page, token in zip(pages, tokens):
        page.goto(f"{server.url}/?token={token}")
    keys = {0: "1", 1: "2"}
    for _ in range(6):  # both answer all 2 x 3 queries, interleaved
        for k, page in enumerate(pages):
            qid = _query_id(page)
            page.keyboard.press(keys[k])
            _after(page, qid)
    for page in pages:
        page.wait_for_selector("#done:not([hidden])")
    answers = _answers(server)
    for annotator, choice in ((3, "left"), (4, "right")):
        mine = [a for a in answers if a["annotator"] == annotator]
        assert len(mine) == 6 and {a["choice"] for a in mine} == {choice}
    for c in contexts:
        c.close()


def test_buttons_wait_for_both_clips_skip_undo_and_no_csp_violation(browser, server):
    token = server.tokens["annotators"][4]
    page = browser.new_page()
    page.add_init_script(CSP_WATCH)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(f"{server.url}/?token={token}")
    page.wait_for_selector("#query:not([hidden])")
    page.evaluate("document.querySelectorAll('video').forEach(v => v.pause())")
    page.wait_for_function("() => document.querySelectorAll('video')[1].readyState >= 1")
    assert page.is_disabled("#choose-left") and page.is_disabled("#choose-equal") and page.is_disabled("#choose-right")
    assert page.is_visible("#watch-hint") and page.is_enabled("#skip")
    page.keyboard.press("ArrowLeft")  # ignored: nothing watched yet
    page.evaluate("const v = document.querySelector('#video-left'); v.playbackRate = 16; v.play()")
    page.wait_for_function("() => document.querySelector('#video-left').dataset.played === 'yes'")
    page.keyboard.press("ArrowLeft")  # ignored: the right clip has not played through
    assert page.is_disabled("#choose-left")
    page.evaluate("const v = document.querySelector('#video-right'); v.playbackRate = 16; v.play()")
    page.wait_for_function("() => document.querySelector('#choose-left').disabled === false")
    assert [a for a in _answers(server) if a["annotator"] == 5] == []  # the early presses stored nothing
    first = page.get_attribute("#query", "data-query-id")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(old) => document.querySelector('#query').dataset.queryId !== old", arg=first)
    second = page.get_attribute("#query", "data-query-id")
    page.keyboard.press("s")  # skip: allowed before the clips end
    page.wait_for_function("(old) => document.querySelector('#query').dataset.queryId !== old", arg=second)
    page.keyboard.press("z")  # undo the skip: its query comes back
    page.wait_for_function("(q) => document.querySelector('#query').dataset.queryId === q", arg=second)
    assert "undone" in page.inner_text("#status")
    mine = [(a["query_id"], a["choice"], a["retracted_at"] is not None) for a in _answers(server) if a["annotator"] == 5]
    assert mine == [(first, "left", False), (second, "skip", True)]
    admin = browser.new_page()
    admin.add_init_script(CSP_WATCH)
    admin.on("console", lambda m: console.append(m.text))
    admin.goto(f"{server.url}/admin?token={server.tokens['admin']}")
    admin.wait_for_function("() => document.querySelectorAll('#progress tbody tr').length === 5")
    for p in (page, admin):
        assert p.evaluate("window.__csp") == []
    assert not [m for m in console if "Content Security Policy" in m], console
    page.close()
    admin.close()


@pytest.mark.slow
def test_screenshot_of_the_page(browser, tmp_path, video_cache):
    """Writes the page with 320x320 videos to $STUDY_SCREENSHOT (docs/images/study_page.png) if set."""
    server = StudyServer(tmp_path, ["study=loadtest", "annotators=1", f"cache_dir={video_cache}",
                                    "study.video.width=320", "study.video.height=320", "study.batches.batch_size=5", "study.instructions='Which puck reaches the "
                                    "green goal better? Prefer a safe margin around the red obstacle and a short, "
                                    "smooth path.'"]).start()
    try:
        page = browser.new_page(viewport={"width": 960, "height": 720})
        page.add_init_script(FAST)
        page.goto(f"{server.url}/?token={server.tokens['annotators'][0]}")
        qid = _query_id(page)
        page.keyboard.press("ArrowLeft")
        _after(page, qid)
        page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2)")
        page.evaluate("[...document.querySelectorAll('video')].forEach(v => { v.pause(); v.currentTime = 2.0; })")
        page.wait_for_timeout(500)
        path = page.screenshot(path=tmp_path / "study_page.png")
        assert path
        if os.environ.get("STUDY_SCREENSHOT"):
            shutil.copy(tmp_path / "study_page.png", os.environ["STUDY_SCREENSHOT"])
    finally:
        server.stop()
