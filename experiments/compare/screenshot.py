"""Screenshot of a comparison's TensorBoard HPARAMS tab, scatter view of eval/kl against eval/reward.

    python experiments/compare/screenshot.py [--logdir outputs/compare/tb] [--out experiments/compare/tensorboard_hparams.png]

Starts ``tensorboard`` on this machine (127.0.0.1, a free port), opens the HPARAMS tab in headless
Chromium, shows only the eval/kl and eval/reward columns, switches to the scatter
plot matrix view and saves the window as a PNG: what a user sees after the steps in
experiments/compare/README.md. Needs Chromium and its driver (Debian: ``apt-get install chromium
chromium-driver``) and ``pip install selenium``; none of them is a dependency of lit_align.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # run as a script from anywhere

from lit_align.callbacks.hparams import FINAL_METRICS  # noqa: E402

# Depth-first search through the page and every shadow root (TensorBoard's hparams plugin is built
# of Polymer elements, whose contents a plain querySelector does not reach).
DEEP_FIND = """
const [pred, text] = [arguments[0], arguments[1]];
const found = [];
const stack = [document];
while (stack.length) {
  const node = stack.pop();
  if (node.shadowRoot) stack.push(node.shadowRoot);
  for (const child of node.children || []) stack.push(child);
  if (node.nodeType !== 1) continue;
  const own = Array.from(node.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
  if (pred === 'text' && own.toLowerCase() === text.toLowerCase()) found.push(node);
  if (pred === 'tag' && node.tagName.toLowerCase() === text) found.push(node);
}
return found;
"""

# The column a scale control belongs to: the first enclosing element (across shadow roots) whose text names an eval/ tag.
COLUMN_OF = """
let node = arguments[0];
while (node) {
  const text = node.textContent || '';
  const tags = text.match(/eval\\/[a-z_]+/g);
  if (tags) return tags[0];
  node = node.parentNode || (node.getRootNode && node.getRootNode().host) || null;
}
return null;
"""

# The query pane lists session groups 100 to a page, and the scatter view plots only that page: a
# larger size goes into its "Max # of session groups per page" field (its value-changed event queries again).
PAGE_SIZE_LABEL, PAGE_SIZE = "Max # of session groups", 10000

# Columns of the comparison's experiment summary (run.py writes it): the scatter matrix plots every
# column checked, so only the two of the frontier stay.
SHOW = ("eval/kl", "eval/reward")
HIDE = ("method", "strength", "seed") + tuple(tag for tag in FINAL_METRICS if tag not in SHOW)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1.0)
    raise SystemExit(f"screenshot: timed out waiting for {what}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="outputs/compare/tb")
    parser.add_argument("--out", default="experiments/compare/tensorboard_hparams.png")
    parser.add_argument("--size", default="1600,1000", help="window width,height in pixels")
    args = parser.parse_args(argv)
    try:
        from selenium import webdriver
    except ImportError:
        raise SystemExit("screenshot: needs selenium (pip install selenium) and Chromium with its driver (apt-get install chromium chromium-driver)") from None

    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={args.size}"):
        options.add_argument(flag)
    # The system's Chromium and driver, named outright: selenium's own lookup would try the internet.
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    try:
        url = f"http://127.0.0.1:{port}/#hparams"
        wait_for(lambda: _loads(driver, url), "TensorBoard to answer")
        find = lambda how, what: driver.execute_script(DEEP_FIND, how, what)  # noqa: E731
        # The left panel: a checkbox per column (and per value of a string column, left as they are).
        boxes = wait_for(lambda: find("tag", "paper-checkbox"), "the HPARAMS column checkboxes")
        time.sleep(2.0)  # the list fills in as the runs' summaries load
        for box in find("tag", "paper-checkbox"):
            label, checked = box.text.strip(), box.get_attribute("aria-checked") == "true"
            if (label in SHOW and not checked) or (label in HIDE and checked):
                driver.execute_script("arguments[0].click()", box)
        fields = [f for f in find("tag", "paper-input") if (f.get_attribute("label") or "").startswith(PAGE_SIZE_LABEL)]
        for field in fields:
            driver.execute_script("arguments[0].value = arguments[1]", field, str(PAGE_SIZE))
        time.sleep(2.0)
        print(f"screenshot: {len(boxes)} checkboxes; showing {', '.join(SHOW)}, hiding {', '.join(HIDE)}; page size {PAGE_SIZE} ({len(fields)} field(s) set)")
        (tab,) = wait_for(lambda: find("text", "scatter plot matrix view")[:1], "the scatter plot matrix tab")
        driver.execute_script("arguments[0].click()", tab)
        time.sleep(2.0)
        # eval/kl on a log scale: the runaways (KL 30-60) would otherwise squeeze every other run into one column.
        for radio in find("tag", "paper-radio-button"):
            if radio.text.strip() == "Logarithmic" and driver.execute_script(COLUMN_OF, radio) == "eval/kl":
                driver.execute_script("arguments[0].click()", radio)
        time.sleep(float(os.environ.get("SCREENSHOT_WAIT", "15")))  # the plots render
        driver.save_screenshot(args.out)
        print(f"screenshot: {args.out}")
    finally:
        driver.quit()
        board.terminate()


def _loads(driver, url: str) -> bool:
    try:
        driver.get(url)
    except Exception:  # TensorBoard still starting: connection refused
        return False
    return "TensorBoard" in driver.title


if __name__ == "__main__":
    main()
