"""The HTML report (issue 14), opened in a real headless Chromium: every chart loads, no errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tasklog import InterfaceError, MissingExtraError, TaskLog
from tasklog.views import report
from tasklog.views.report import busy_fraction, collect, write_report
from tests.support import child_env, run_cli

# Recorded in the page itself: what its images did and every error the page met, then read back
# from the DOM Chromium dumps once the page has loaded.
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
const _error = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _error(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-probe', JSON.stringify({images: imgs.length,
    widths: imgs.map(i => i.naturalWidth), errors: window.__errors}));
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium")
    assert found, "make test installs Debian's chromium; run the tests through `make test`"
    return found


def _open_in_chromium(page: Path, shot: Path) -> tuple[dict[str, object], str]:
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1100,2600", page.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    match = re.search(r"data-probe=\"([^\"]*)\"", dom.stdout)
    assert match, dom.stderr[-2000:]
    return json.loads(match.group(1).replace("&quot;", '"')), dom.stderr


def _cluster_like(path: str) -> None:
    from datetime import datetime, timedelta, timezone
    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    with TaskLog.open(path) as log:
        for i in range(60):
            m, start = f"t{i}", t0 + timedelta(seconds=i)
            log.submit(m, submitted=start - timedelta(seconds=0.5), label=f"job-{i % 4}")
            log.start(m, f"engine-{i % 3}")
            status = {"status": "error", "ename": "KeyError" if i % 2 else "ValueError"} if i % 10 == 3 else \
                {"status": "ok"}
            log.complete(m, result_content=status, engine_uuid=f"engine-{i % 3}", started=start,
                         completed=start + timedelta(seconds=0.2 + (i % 7) / 10))
        log.resubmit("t3", "t3b")
        log.submit("waiting")


def test_report_opens_in_chromium_with_every_chart_and_no_error(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _cluster_like(path)
    page = tmp_path / "report.html"
    done = run_cli("report", "--log", path, "-o", str(page), check=True)
    assert "report of 62 tasks" in done.stdout
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch: it opens offline
    probe, stderr = _open_in_chromium(page, tmp_path / "report.png")
    assert probe["images"] == 5 and all(w > 0 for w in probe["widths"]), probe  # type: ignore[attr-defined]
    assert probe["errors"] == [], probe
    assert "Uncaught" not in stderr
    assert (tmp_path / "report.png").stat().st_size > 20_000  # the screenshot, kept with the test
    for words in ("What the cluster did", "<h2>Failures</h2><img", "Slowest tasks", "<td>t3b</td>", "p99"):
        assert words in text


def test_report_rows_and_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "log")
    _cluster_like(path)
    with TaskLog.open(path, readonly=True) as log:
        rows = {r.msg_id: r for r in collect(log)}
        assert rows["t3"].resubmitted_as == "t3b" and rows["t3"].error == "KeyError"
        assert rows["waiting"].started is None and rows["t0"].run == pytest.approx(0.2)
        with monkeypatch.context() as patched, pytest.raises(MissingExtraError, match=r"tasklog\[report\]"):
            patched.setitem(sys.modules, "matplotlib", None)  # what a machine without the extra sees
            write_report(log, str(tmp_path / "x.html"))
    empty = str(tmp_path / "empty")
    TaskLog.open(empty).close()
    with TaskLog.open(empty, readonly=True) as log, pytest.raises(InterfaceError, match="no task"):
        write_report(log, str(tmp_path / "y.html"))
    bad = run_cli("report", "--log", empty, "-o", str(tmp_path / "z.html"))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and not (tmp_path / "z.html").exists()


def test_a_large_log_shows_each_engines_busy_fraction_over_time(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run_cli("demo", "--log", path, "--tasks", "4500", check=True)  # past the 4,000 bars a chart can show
    page = tmp_path / "report.html"
    run_cli("report", "--log", path, "-o", str(page), check=True)
    assert "alt='engines: busy fraction'" in page.read_text()
    probe, _ = _open_in_chromium(page, tmp_path / "report.png")
    assert probe["images"] == 5 and all(w > 0 for w in probe["widths"]) and probe["errors"] == [], probe  # type: ignore[attr-defined]


def test_busy_fraction_is_the_share_of_each_bin_an_engine_ran() -> None:
    from datetime import datetime, timedelta, timezone
    t0 = datetime(2026, 11, 27, tzinfo=timezone.utc)
    span = timedelta(seconds=240)  # one second per bin
    ran = [("a", t0, t0 + span / 2, False),                                    # busy the first half
           ("b", t0 + timedelta(seconds=10.5), t0 + timedelta(seconds=11), True),  # half of bin 10
           ("b", t0 + timedelta(seconds=10.75), t0 + timedelta(seconds=12), False)]  # overlaps: capped at 1
    busy = busy_fraction(ran, ["a", "b"], t0, t0 + span)
    assert busy[0] == [1.0] * 120 + [0.0] * 120
    assert busy[1][9] == 0 and busy[1][10] == 0.75 and busy[1][11] == 1.0 and busy[1][12] == 0
    assert sum(busy[1]) == 1.75


def _log_of(path: str, tasks: list[tuple[str, datetime, datetime, datetime, str, str | None, dict[str, str]]]) -> None:
    """A log of tasks given as (msg_id, submitted, started, completed, engine, label, reply content)."""
    with TaskLog.open(path) as log:
        for m, submitted, started, completed, engine, label, content in tasks:
            log.submit(m, submitted=submitted, label=label)
            log.start(m, engine, started)
            log.complete(m, result_content=content, engine_uuid=engine, started=started, completed=completed)


def _reported(path: str, page: Path, tasks: int) -> str:
    done = run_cli("report", "--log", path, "-o", str(page))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-3000:]  # no traceback, no warning
    assert done.stdout == f"report of {tasks:,} task{'' if tasks == 1 else 's'} -> {page}\n"
    text = page.read_text()
    charts = re.findall(r"base64,([^']*)'", text)
    assert len(charts) == text.count("<img ") >= 4 and all(len(png) > 1000 for png in charts), text[-2000:]
    return text


def test_report_draws_times_at_the_ends_of_the_calendar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 20 (item 12): a task completed at 9999-12-31 raised matplotlib's ValueError, a traceback:
    # its date axis pads the data and rounds its ticks past the years it can draw (1-9999).
    utc = timezone.utc
    t0 = datetime(2026, 11, 27, 9, tzinfo=utc)
    first, last = datetime.min.replace(tzinfo=utc), datetime.max.replace(tzinfo=utc)
    ok = {"status": "ok"}
    normal = [(f"t{i}", t0, t0 + timedelta(seconds=i), t0 + timedelta(seconds=i + 1), "e1", None, ok) for i in range(5)]
    cases = {"late": [*normal, ("x", t0, t0, datetime(9999, 12, 31, tzinfo=utc), "e2", None, ok)],
             "every year": [*normal, ("x", first, first, last, "e2", None, ok)],
             "one instant": [("x", last, last, last, "e1", None, ok)],
             "early": [("x", first, first, first + timedelta(microseconds=1), "e1", None, ok), *normal]}
    for i, (name, tasks) in enumerate(cases.items()):
        _log_of(str(tmp_path / f"log{i}"), tasks)
        text = _reported(str(tmp_path / f"log{i}"), tmp_path / f"r{i}.html", len(tasks))
        if name in ("late", "every year"):
            assert "<td>x</td>" in text.split("Slowest tasks")[1], name  # the tables show it as it is
    # The busy-fraction chart (past 4,000 tasks) draws the same axis: here past 2.
    monkeypatch.setattr(report, "_GANTT_MAX", 2)
    with TaskLog.open(str(tmp_path / "log1"), readonly=True) as log:
        write_report(log, str(tmp_path / "busy.html"))
    assert "alt='engines: busy fraction'" in (tmp_path / "busy.html").read_text()


def test_report_is_quiet_whatever_the_names_say(tmp_path: Path) -> None:
    # Issue 20 (item 14): matplotlib's warnings reached stderr (a layout too narrow for long error
    # names, glyphs missing for control characters), and a `$` in a name was parsed as mathematics
    # and raised.
    t0 = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    odd = ["$\\frac{a", "\x1b[2J\x07 $x^2$", "E" * 300, "$\\x$", "\t\x00tab"]
    tasks = [(f"t{i}", t0, t0 + timedelta(seconds=i), t0 + timedelta(seconds=i + 2), f"{odd[i % 5]}-{i}",
              odd[(i + 1) % 5], {"status": "error", "ename": f"{odd[(i + 2) % 5]}{i}"}) for i in range(40)]
    _log_of(str(tmp_path / "log"), tasks)
    _reported(str(tmp_path / "log"), tmp_path / "odd.html", 40)


def test_report_is_quiet_when_matplotlib_cannot_keep_its_cache(tmp_path: Path) -> None:
    """matplotlib warns on stderr when its config directory cannot be written (it makes a temporary one)."""
    path = str(tmp_path / "log")
    _cluster_like(path)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    env = {**child_env(), "MPLCONFIGDIR": str(blocked / "mpl"), "XDG_CACHE_HOME": str(blocked)}
    done = subprocess.run([sys.executable, "-m", "tasklog", "report", "--log", path, "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True, env=env)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
