"""The MLflow UI in a real browser: headless Debian Chromium (driven over the DevTools pipe,
tests/browser.py) against ``mlflow ui`` on loopback, reading the ./mlflow.db a sweep logged
to by default.  What a new user sees after ``make run``: the runs table, the parent run's
description (the verdict and each claim's), and report.html with the verdict and the
comparison table on its first screen.

``python tests/test_ui.py WORKDIR OUTDIR`` takes the documentation's screenshots
(docs/img/) from the mlflow.db in WORKDIR (e.g. after ``make run``)."""
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from browser import CHROMIUM, Browser
from mlflow_server import mlflow_server
from results_data import real, write_sweep_dir
from sweep import analysis, report, tracking

pytestmark = [pytest.mark.browser, pytest.mark.mlflow_server]
REGISTRY = Path(__file__).resolve().parent.parent / "configs" / "claims.yaml"
EXPAND = "button[data-component-id*='runnamecellrenderer']"
COUNT = "(() => { const m = document.body.innerText.match(/(\\d+) matching runs/); return m ? +m[1] : 0; })()"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A sweep logged with the default URI in a folder, then ``mlflow ui`` in that folder."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `make system-deps` (apt-get install chromium)")
    workdir = tmp_path_factory.mktemp("ui")
    sweep_dir = write_sweep_dir(workdir / "sweep", real(reps=2), name="ui-sweep")
    shutil.copyfile(REGISTRY, sweep_dir / "claims.yaml")           # as the run copies it
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        report.build_report(sweep_dir)                      # as `python -m sweep log` does first
        parent_id = tracking.log_sweep(sweep_dir)
        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        experiment_id = client.get_experiment_by_name("kmemcg-sweep").experiment_id
        runs = list(client.search_runs([experiment_id], max_results=1000))
    children = {r.info.run_id: r.info.run_name for r in runs if r.info.run_id != parent_id}
    with mlflow_server(workdir, command="ui") as url:
        yield url, experiment_id, parent_id, children, sweep_dir


@pytest.fixture
def browser(tmp_path):
    with Browser(tmp_path / "profile", 1600, 1000) as b:
        yield b


def open_runs_table(b: Browser, url: str, experiment_id: str) -> None:
    b.open(tracking.ui_url(url, experiment_id))
    b.wait_for(COUNT, timeout=90)


def expand_parent(b: Browser) -> None:
    b.js(f"document.querySelector({json.dumps(EXPAND)}).click()")


def test_experiment_page_opens_on_the_runs_table(ui, browser, tmp_path):
    url, experiment_id, parent_id, children, _ = ui
    open_runs_table(browser, url, experiment_id)
    # the "N matching runs" count renders before the rows and the description: wait for them
    text = browser.wait_for("(t => t.includes('ui-sweep') && t.includes('Which memcg kmem-charging design') && t)"
                            "(document.body.innerText)", timeout=60)
    assert browser.js(COUNT) == 1 + len(children) == 25
    assert "Runs" in text and "Traces" in text and "ui-sweep" in text
    assert "Which memcg kmem-charging design" in text                  # the experiment's description
    expand_parent(browser)
    # child runs are named design first, so a cell's three designs tell apart in the table
    shown = browser.wait_for("Array.from(document.querySelectorAll('a')).map(a => a.innerText)"
                             ".filter(t => /^(v4\\.3|way1|way2) · /.test(t))")
    assert set(shown) <= set(children.values()) and {s.split(" · ")[0] for s in shown} == {"v4.3", "way1", "way2"}
    browser.screenshot(tmp_path / "runs.png")
    assert (tmp_path / "runs.png").stat().st_size > 10_000


def first_sentence(sweep_dir) -> str:
    """The verdict's first sentence as a browser shows it (Markdown bold rendered)."""
    return analysis.verdict_sentences(analysis.load(sweep_dir))[0].replace("**", "")


def test_parent_description_opens_with_the_verdict_and_gives_every_claim_its_verdict(ui, browser):
    url, experiment_id, parent_id, _, sweep_dir = ui
    browser.open(tracking.ui_url(url, experiment_id, parent_id))
    first = first_sentence(sweep_dir)
    text = browser.wait_for(f"document.body.innerText.includes({json.dumps(first[:60])}) && document.body.innerText",
                            timeout=90)
    browser.click_text("Show more")                  # the UI folds a long description
    time.sleep(1)
    text = browser.text()
    assert " ".join(first.split()) in " ".join(text.split())             # the verdict's first sentence
    for design in ("v4.3", "way1", "way2"):
        assert design in text
    claims = analysis.load(sweep_dir).summary()["claims"]
    assert len(claims) >= 5
    for claim in claims:
        assert f"{claim['id']}: {claim['verdict']}" in text, claim["id"]
    assert "0123abc" in text                                             # the sweep's git commit


def first_screen_layout(b: Browser, page: Path) -> dict:
    """What report.html shows in a 1400x1000 window: the blocks above the comparison table's
    bottom edge, and where that edge is."""
    b.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
    b.open(page.resolve().as_uri())
    b.wait_for("document.readyState === 'complete' && document.querySelector('table') !== null")
    return b.js("""(() => {
        const table = document.querySelector('table');
        const above = Array.from(document.body.children).filter(e => e.getBoundingClientRect().top
                                                                     < table.getBoundingClientRect().top);
        return {bottom: table.getBoundingClientRect().bottom, rows: table.rows.length,
                above: above.map(e => e.tagName + (e.className ? '.' + e.className : '')),
                verdict: document.querySelector('p.verdict').innerText};
    })()""")


def test_report_first_screen_holds_the_verdict_and_the_comparison_table(ui, browser):
    _, _, _, _, sweep_dir = ui
    layout = first_screen_layout(browser, sweep_dir / "report" / "report.html")
    assert layout["above"] == ["H1", "P.verdict"]                         # nothing else above them
    assert layout["bottom"] <= 1000 and layout["rows"] >= 6              # the whole table on screen
    assert layout["verdict"].startswith(first_sentence(sweep_dir)[:60])


def test_report_html_in_the_artifact_viewer_shows_its_images(ui, browser, tmp_path):
    url, experiment_id, parent_id, _, sweep_dir = ui
    browser.open(tracking.ui_url(url, experiment_id, parent_id, artifact="report.html"))
    browser.wait_for("document.querySelector('iframe') !== null", timeout=90)
    images = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not images:
        for frame in browser.frame_sessions():            # the sandboxed frame holding report.html
            images = browser.js("document.readyState === 'complete' && document.title.startsWith('kmemcg') && "
                                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
                                "i.src.slice(0, 22)])", frame)
            if images:
                break
        time.sleep(0.5)
    pngs = list((sweep_dir / "report").glob("*.png"))
    assert images and len(images) == len(pngs) >= 2
    for complete, width, src in images:
        assert complete and width > 100, "a broken image"                # loaded and decoded
        assert src == "data:image/png;base64,"                           # embedded: nothing to fetch
    browser.screenshot(tmp_path / "report.png")


def test_parent_run_artifacts_put_the_report_at_the_root(ui, browser):
    url, experiment_id, parent_id, _, _ = ui
    browser.open(tracking.ui_url(url, experiment_id, parent_id, artifact="report.html"))
    text = browser.wait_for("document.body.innerText.includes('summary.png') && document.body.innerText",
                            timeout=90)
    for name in ("config.yaml", "sweep.json", "report.html", "summary.png", "report"):
        assert name in text, name


# ---------------------------------------------------------------- the documentation's screenshots

def close_assistant(b: Browser) -> None:
    """MLflow 3.17 opens an assistant panel on the right; screenshots want the room."""
    b.js("Array.from(document.querySelectorAll('button[aria-label]'))"
         ".filter(e => /close/i.test(e.getAttribute('aria-label'))).forEach(e => e.click())")
    time.sleep(1)


def take_screenshots(workdir: Path, outdir: Path) -> None:
    """docs/img/: the runs table (way2's child runs of the sweep), the parent run, and the
    report's first screen in the artifact viewer."""
    client = MlflowClient(f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    parent = next(iter(client.search_runs([experiment_id], "tags.`kmemcg.role` = 'parent'",
                                          order_by=["attributes.start_time DESC"], max_results=1)))
    outdir.mkdir(parents=True, exist_ok=True)
    with mlflow_server(Path(workdir), command="ui") as url, Browser(outdir / ".profile", 1500, 900) as b:
        open_runs_table(b, url, experiment_id)
        close_assistant(b)
        b.js("document.querySelector('[data-testid=search-box]').focus()")
        b.call("Input.insertText", text="tags.`kmemcg.design` = 'way2'")
        for kind in ("keyDown", "keyUp"):
            b.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
        time.sleep(3)
        b.wait_for(COUNT)
        expand_parent(b)
        time.sleep(3)
        b.screenshot(outdir / "mlflow-runs-table.png")
        b.call("Emulation.setDeviceMetricsOverride", width=1500, height=1100, deviceScaleFactor=1, mobile=False)
        b.open(tracking.ui_url(url, experiment_id, parent.info.run_id))
        opening = parent.data.tags["mlflow.note.content"].replace("**", "")[:40]
        b.wait_for(f"document.body.innerText.includes({json.dumps(opening)})", timeout=90)
        close_assistant(b)
        b.click_text("Show more")
        time.sleep(2)
        b.screenshot(outdir / "mlflow-parent-run.png")
        b.open(tracking.ui_url(url, experiment_id, parent.info.run_id, artifact="report.html"))
        b.wait_for("document.querySelector('iframe') !== null", timeout=90)
        close_assistant(b)
        time.sleep(4)
        b.screenshot(outdir / "report-first-screen.png")
    shutil.rmtree(outdir / ".profile", ignore_errors=True)


if __name__ == "__main__":
    take_screenshots(Path(sys.argv[1]), Path(sys.argv[2]))
