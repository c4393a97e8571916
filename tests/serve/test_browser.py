"""The dashboard in a real browser: Debian's Chromium, headless, through chromium-driver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tasklog import Start, Submit, TaskLog
from tasklog.fields import utcnow
from tasklog.views.jsonfmt import dumps, loads
from tests.support import run_cli
from tests.support.browser import chromium, console, wait_for
from tests.support.served import TOKEN, Served

pytestmark = pytest.mark.xdist_group("browser")

ROWS = "return [...document.querySelectorAll('#tasks tbody tr')].map(tr => [...tr.cells].map(c => c.textContent))"
HEADS = "return [...document.querySelectorAll('#tasks thead th')].map(th => th.textContent)"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    """A session that came in through the printed URL (the token now a cookie)."""
    with chromium() as session:
        session.get(served.printed)
        wait_for(lambda: session.current_url == served.base + "/")
        yield session


def _column(session: Any, name: str) -> list[str]:
    heads = session.execute_script(HEADS)
    return [row[heads.index(name)] for row in session.execute_script(ROWS)] if name in heads else []


def _ids(log: str, query: dict[str, Any]) -> list[str]:
    out = run_cli("query", dumps(query), "--log", log, "--keys", "msg_id", check=True).stdout
    return sorted(loads(line)["msg_id"] for line in out.splitlines())


PAGES = [("/", "#cards .card"), ("/tasks", "#tasks tbody tr"), ("/timeline", "#mode"), ("/hubs", "#fed")]


@pytest.mark.parametrize(("path", "shown"), PAGES, ids=[p for p, _ in PAGES])
def test_each_page_loads_live_without_console_errors(browser: Any, served: Served, path: str, shown: str) -> None:
    console(browser)
    browser.get(served.base + path)
    wait_for(lambda: browser.find_element(By.ID, "live").text.startswith("live: event"))
    wait_for(lambda: any(e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, shown)))
    assert browser.find_element(By.CSS_SELECTOR, "header nav a.here").get_attribute("href").endswith(path)
    assert console(browser) == []


def test_a_task_page_shows_its_story_and_lineage(browser: Any, served: Served, demo_log: str) -> None:
    out = run_cli("query", '{"resubmitted_from": {"$ne": null}}', "--log", demo_log, "--keys",
                  "msg_id,resubmitted_from", check=True).stdout
    task = loads(out.splitlines()[0])
    console(browser)
    browser.get(f"{served.base}/task/{task['msg_id']}")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#story tbody tr")) >= 3)
    chain = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#chain li")]
    assert chain[:2] == [task["resubmitted_from"], task["msg_id"]]
    assert "bytes" in browser.find_element(By.ID, "buffers").text
    assert console(browser) == []


def test_a_query_typed_in_the_box_is_what_tasklog_query_prints(browser: Any, served: Served, demo_log: str) -> None:
    browser.get(served.base + "/tasks")
    wait_for(lambda: browser.execute_script(ROWS))
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys('{"engine_uuid": {"$in": ["engine-1", "engine-2"]}, "completed": {"$ne": null}}')
    Select(browser.find_element(By.ID, "sort")).select_by_value("msg_id")
    Select(browser.find_element(By.ID, "limit")).select_by_visible_text("500")
    browser.find_element(By.ID, "run").click()
    want = _ids(demo_log, {"engine_uuid": {"$in": ["engine-1", "engine-2"]}, "completed": {"$ne": None}})
    assert 0 < len(want) < 500
    assert wait_for(lambda: (got := _column(browser, "msg_id")) == want and got) == want
    wait_for(lambda: browser.find_element(By.ID, "count").text == f"{len(want)} matches")
    href = browser.find_element(By.ID, "export-parquet").get_attribute("href")
    assert "/api/export?" in href and "format=parquet" in href and "engine-1" in href


def test_a_task_appended_shows_up_live_as_text(browser: Any, served: Served, demo_log: str) -> None:
    browser.get(served.base + "/tasks")
    wait_for(lambda: browser.execute_script(ROWS))
    console(browser)
    with TaskLog.open(demo_log) as log:
        now = utcnow() + timedelta(days=1)  # the newest submission: the first row of the default sort
        log.append(Submit("appended-live", {"msg_id": "appended-live"}, {}, {}, [], "client-z", "task", now, HOSTILE))
        log.append(Start("appended-live", "engine-z", now))
    wait_for(lambda: "appended-live" in _column(browser, "msg_id"))
    row = browser.execute_script(ROWS)[0]
    assert row[_column_index(browser, "label")] == HOSTILE  # shown as text
    assert not browser.find_elements(By.CSS_SELECTOR, "#tasks img") and browser.title == "tasklog: Tasks"
    assert console(browser) == []


def _column_index(session: Any, name: str) -> int:
    return int(session.execute_script(HEADS).index(name))


def test_a_wrong_token_is_refused(served: Served) -> None:
    with chromium() as fresh:
        fresh.get(f"{served.base}/?token=not-the-{TOKEN}")
        body = fresh.find_element(By.TAG_NAME, "body").text
        assert body.startswith("403") and "token" in body
        fresh.get(f"{served.base}/tasks")
        assert fresh.find_element(By.TAG_NAME, "body").text.startswith("403")
        assert fresh.execute_script("return document.body.dataset.page") is None
