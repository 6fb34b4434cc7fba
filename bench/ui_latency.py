"""How long the app takes to answer a click, in real Chromium, idle and while a run trains.

Starts the app the way the README does (``scripts/run-app.sh``, the repository's
``.streamlit/config.toml``, file watcher as configured) on a fresh workspace holding the
sample dataset and one finished run, opens it in Debian's headless Chromium and times a fixed
list of interactions: a switch to every page, ticking a thumbnail and switching class on Data,
a select and a slider on Model, a click on a confusion-matrix cell on Evaluate, a button on
Data. Then it starts a long run and times the same list again while it trains.

"Fully drawn" is measured in the page, on its own clock: from just before the click until the
first animation frame where Streamlit's script run that the click started has finished
(``stApp[data-test-script-state]`` went to ``running`` after the click and is back to
``notRunning``), no element is stale (``[data-stale=true]``) and no spinner or skeleton shows.
A click whose script run was too quick to show in that attribute is counted until the page's
last DOM change, once one second passed with nothing running.

Prints median and p95 per interaction, the first visit of each page, the server's CPU with a
tab open and nothing happening, and ends with ``PASS``/``FAIL`` lines against the goal:
median < 300 ms, p95 < 600 ms, first visit < 2 s, idle CPU < 5 % of one core. Exits 1 when a
target failed. ``--quick`` does one repeat and a short training phase (a smoke test only: on
a shared machine its numbers are noise).

    python bench/ui_latency.py            # on a quiet machine
    python bench/ui_latency.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
PAGES = ["Home", "Data", "Model", "Train", "Runs", "Evaluate", "Predict", "Export"]
HEADINGS = {"Home": "Transfer Studio"}  # page title -> its h1, where they differ
MEDIAN_MS, P95_MS, FIRST_VISIT_MS, IDLE_CPU_PERCENT = 300, 600, 2000, 5.0
LOST_CLICK_MS = 20_000  # a page switch not started by then was a click the app lost

# Records every change of Streamlit's script-run state with the page's own clock.
OBSERVER = """
window.__runs = [];
window.__lastChange = 0;
new MutationObserver((changes) => {
  for (const change of changes) {
    const state = change.target.getAttribute &&
      change.target.getAttribute('data-test-script-state');
    if (change.attributeName === 'data-test-script-state' && state)
      window.__runs.push([state, performance.now()]);
  }
  window.__lastChange = performance.now();
}).observe(document, {subtree: true, attributes: true, childList: true, characterData: true});
"""
# True (the time) on the first frame where the run started after t0 is done and drawn.
DRAWN = """
(t0) => {
  const now = performance.now();
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') === 'running') return false;
  if (app.getAttribute('data-test-connection-state') !== 'CONNECTED') return false;
  const started = (window.__runs || []).some(([s, t]) => s === 'running' && t >= t0);
  if (!started && now - t0 < 1000) return false;
  if (document.querySelector('[data-stale="true"], [data-testid="stSpinner"], '
      + '[data-testid="stSkeleton"]')) return false;
  // No run seen (too quick to show): the page was drawn at its last change.
  return started ? now : Math.max(t0, window.__lastChange || t0);
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_workspace(home: Path, *, quick: bool) -> str:
    """Ingests the sample dataset and trains one short run to completion; returns its id."""
    os.environ["TRANSFER_STUDIO_HOME"] = str(home)
    from core.config import ModelConfig, TrainConfig
    from core.data.ingest import ingest
    from core.data.sample import write_sample_images
    from core.runs.store import read_status, run_dir
    from core.training.jobs import start_run

    with tempfile.TemporaryDirectory() as folder:
        write_sample_images(folder, per_class=60)
        report = ingest(folder, name="Sample shapes")
    config = TrainConfig(
        dataset=report.dataset_id,
        model=ModelConfig(backbone="efficientnet_lite0", image_size=224),
        epochs=2 if quick else 5,
        name="finished run",
    )
    run_id = start_run(config)
    deadline = time.monotonic() + 900
    status = read_status(run_dir(run_id))
    while status.active and time.monotonic() < deadline:
        time.sleep(1)
        status = read_status(run_dir(run_id))
    if status.state != "completed":
        raise SystemExit(f"the preparation run ended {status.state}: {status.message}")
    return run_id


def start_long_run(run_id: str) -> str:
    """Starts a run that trains for a long while (augmentation on: no cached fast path)."""
    import dataclasses

    from core.config import AugmentConfig
    from core.runs.store import read_config, run_dir
    from core.training.jobs import start_run

    base = read_config(run_dir(run_id))
    model = dataclasses.replace(base.model, augment=AugmentConfig.standard())
    return start_run(dataclasses.replace(base, model=model, epochs=200, name="long run"))


def start_server(home: Path, port: int) -> tuple[subprocess.Popen, str]:
    """``scripts/run-app.sh`` on ``port`` with ``home`` as its workspace, once healthy."""
    env = dict(
        os.environ,
        TRANSFER_STUDIO_HOME=str(home),
        TRANSFER_STUDIO_VENV=sys.prefix,
        TRANSFER_STUDIO_NO_INSTALL="1",
        TRANSFER_STUDIO_ADDRESS="127.0.0.1",
    )
    command = ["bash", "scripts/run-app.sh", "--server.port", str(port)]
    command += ["--server.headless", "true"]
    log = open(home / "server.log", "wb")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                return server, url
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"the app did not start: see {home / 'server.log'}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Session:
    """One browser tab on the app, with the timing helpers."""

    def __init__(self, page, url: str) -> None:
        self.page, self.url = page, url
        self.lost_clicks: list[str] = []
        page.add_init_script(OBSERVER)

    def timed(self, action: Callable[[], None]) -> float:
        """Milliseconds from just before ``action`` until the page is fully drawn again."""
        t0 = self.page.evaluate("performance.now()")
        action()
        end = self.page.wait_for_function(DRAWN, arg=t0, polling="raf", timeout=120_000)
        return float(end.json_value()) - t0

    def open(self, address: str) -> float:
        """Milliseconds from the start of loading ``address`` until fully drawn."""
        self.page.goto(address)
        # A new document: its clock starts at the navigation, so t0 is 0.
        end = self.page.wait_for_function(DRAWN, arg=0, polling="raf", timeout=120_000)
        return float(end.json_value())

    def go(self, title: str) -> float:
        nav = self.page.locator('[data-testid="stSidebarNav"] a', has_text=title).first
        heading = self.page.get_by_role("heading", name=HEADINGS.get(title, title), exact=True)

        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        def switch() -> None:
            nav.click()
            try:
                heading.first.wait_for(timeout=LOST_CLICK_MS)  # the new page, not the old one
            except PlaywrightTimeout:
                # A click the app never answered: counted, reported, and clicked again (the
                # time of both counts).
                self.lost_clicks.append(title)
                print(f"  lost click: the switch to {title} did not happen; clicking again")
                nav.click()
                heading.first.wait_for(timeout=120_000)

        return self.timed(switch)

    def open_select(self, label: str) -> None:
        """Opens the option list of the visible selectbox labelled exactly ``label``."""
        box = self.page.get_by_role("combobox", name=label, exact=True).filter(visible=True)
        box.first.click()
        options = self.page.locator('[role="option"]')
        if not options.first.is_visible():
            box.first.press("ArrowDown")  # a click that only focused it: open the list
        options.first.wait_for()

    def pick(self, option_index: int) -> None:
        """Clicks an option of the open selectbox list (the click that changes something)."""
        options = self.page.locator('[role="option"]')
        options.nth(option_index % max(options.count(), 1)).click()


Action = Callable[[int], None]


def interactions(s: Session) -> dict[str, tuple[str, Action | None, Action]]:
    """name -> (page it happens on, untimed preparation or None, timed action).

    Both take the repeat index. A selectbox is opened untimed: what a user waits for is the
    page after they picked an option, and opening the list is drawn by the browser alone.
    """
    page = s.page

    def tick(_: int) -> None:
        page.locator('[data-testid="stMain"] [data-testid="stCheckbox"] label').first.click()

    def pick(i: int) -> None:
        s.pick(i + 1)

    def slider(i: int) -> None:
        thumb = page.locator('[data-testid="stSlider"]', has_text="Dropout").get_by_role("slider")
        thumb.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")

    def cell(i: int) -> None:
        # The matrix's cells, row by row (true label), left to right (predicted): the
        # bottom-left and top-right corners (empty on the sample), then two cells of the
        # diagonal, which show their images and a Grad-CAM.
        cells = page.locator('[data-testid="stVegaLiteChart"] [aria-roledescription="rect mark"]')
        side = max(1, round(cells.count() ** 0.5))
        row, col = [(side - 1, 0), (0, side - 1), (side // 2, side // 2), (0, 0)][i % 4]
        cells.nth(row * side + col).click()

    def button(_: int) -> None:
        page.get_by_role("button", name="Apply split").click()

    return {
        "tick a thumbnail": ("Data", None, tick),
        "switch class": ("Data", lambda _: s.open_select("Class"), pick),
        "press a button": ("Data", None, button),
        "change a select": ("Model", lambda _: s.open_select("Pooling"), pick),
        "move a slider": ("Model", None, slider),
        "click a confusion cell": ("Evaluate", None, cell),
    }


def measure_phase(s: Session, repeats: int, first_visits: dict[str, float] | None) -> dict:
    """Times every page switch and interaction ``repeats`` times; returns name -> [ms]."""
    times: dict[str, list[float]] = {}
    for _ in range(repeats + 1):  # the first lap records first visits (or warms up)
        for title in PAGES:
            ms = s.go(title)
            if first_visits is not None and title not in first_visits:
                first_visits[title] = ms
            elif _ > 0:
                times.setdefault("switch page", []).append(ms)
    for name, (where, prepare, action) in interactions(s).items():
        s.go(where)
        for i in range(repeats):
            if prepare is not None:
                prepare(i)
            times.setdefault(name, []).append(s.timed(lambda i=i, act=action: act(i)))
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def report(
    phases: dict[str, dict], first: dict[str, float], idle_cpu: float, lost: list[str]
) -> bool:
    """Prints the tables and the verdicts; returns True when every target passed."""
    verdicts = []
    print(f"\n{'interaction':<26}{'phase':<10}{'n':>3}{'median ms':>11}{'p95 ms':>9}")
    for phase, times in phases.items():
        for name, values in times.items():
            med, top = statistics.median(values), p95(values)
            print(f"{name:<26}{phase:<10}{len(values):>3}{med:>11.0f}{top:>9.0f}")
            verdicts.append((f"{name} ({phase}) median", med, MEDIAN_MS, "ms"))
            verdicts.append((f"{name} ({phase}) p95", top, P95_MS, "ms"))
    print(f"\n{'first visit':<26}{'ms':>8}")
    for title, ms in first.items():
        print(f"{title:<26}{ms:>8.0f}")
        verdicts.append((f"first visit {title}", ms, FIRST_VISIT_MS, "ms"))
    print(f"\nidle server CPU: {idle_cpu:.1f} % of one core")
    verdicts.append(("idle server CPU", idle_cpu, IDLE_CPU_PERCENT, "%"))
    print(f"page switches the app never answered: {len(lost)} {lost or ''}")
    verdicts.append(("lost page-switch clicks", len(lost), 1, ""))
    print()
    ok = True
    for name, value, target, unit in verdicts:
        passed = value < target
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} {name} {value:.0f}{unit} <{target}{unit}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat (smoke test)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per interaction")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=None, help="workspace (default: temp)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    idle_seconds = 5.0 if args.quick else args.idle_seconds
    home = args.workdir or Path(tempfile.mkdtemp(prefix="ui-latency-"))
    home.mkdir(parents=True, exist_ok=True)
    print(
        f"ui_latency: {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f} "
        f"cores {os.cpu_count()} workspace {home}"
    )
    finished = prepare_workspace(home, quick=args.quick)
    server, url = start_server(home, _free_port())
    from playwright.sync_api import sync_playwright

    from core.training.jobs import cancel_run

    long_run = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            s = Session(page, url)
            first: dict[str, float] = {}
            first["Home (open the app)"] = s.open(f"{url}/?run={finished}")
            try:
                phases = {"idle": measure_phase(s, repeats, first)}
            except Exception:
                page.screenshot(path=str(home / "failure.png"))
                print(f"screenshot of the failure: {home / 'failure.png'}")
                raise
            s.go("Home")
            time.sleep(2)
            before, start = cpu_seconds(server.pid), time.monotonic()
            time.sleep(idle_seconds)
            idle_cpu = 100 * (cpu_seconds(server.pid) - before) / (time.monotonic() - start)
            long_run = start_long_run(finished)
            s.open(f"{url}/train?run={long_run}")
            phases["training"] = measure_phase(s, repeats, None)
            browser.close()
    finally:
        if long_run:
            cancel_run(long_run, wait=False)
        server.terminate()
        server.wait(timeout=30)
    return 0 if report(phases, first, idle_cpu, s.lost_clicks) else 1


if __name__ == "__main__":
    sys.exit(main())
