#!/usr/bin/env python3
"""Look at the console as a user would: start it on a workspace, open pages in
headless Chromium (Debian's /usr/bin/chromium via Playwright), save PNGs.

    .venv/bin/python scripts/screenshot.py --workspace local:///tmp/ws --port 8610 \
        --out screenshots/ / datasets runs models

Prints each page's file and any exception text Streamlit rendered.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]


def start_console(workspace: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "TOLLGATE_WORKSPACE": workspace}
    proc = subprocess.Popen([sys.executable, "-m", "ui.serve", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the console did not start")


def wait_rendered(page, timeout_ms: int = 30000) -> None:
    """Until the page's script has run: a title is on screen and Streamlit is idle."""
    page.wait_for_selector("[data-testid='stMain'] h1", timeout=timeout_ms)
    for _ in range(3):  # idle for a moment: no "running" indicator, no skeletons
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
            " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
            " && !document.querySelector('[data-testid=\"stSpinner\"]')", timeout=timeout_ms)
        page.wait_for_timeout(400)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--port", type=int, default=8610)
    ap.add_argument("--out", type=Path, default=ROOT / "screenshots")
    ap.add_argument("--width", type=int, default=1440)
    ap.add_argument("pages", nargs="*", default=["/", "datasets", "runs", "models"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    proc = start_console(args.workspace, args.port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            for name in args.pages:
                path = "" if name.strip("/") == "overview" else name.strip("/")  # the default page is /
                page.goto(f"http://127.0.0.1:{args.port}/{path}")
                wait_rendered(page)
                file = args.out / f"{path or 'overview'}.png"
                page.screenshot(path=str(file), full_page=True)
                errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").all_inner_texts()
                print(file, "errors:" if errors else "ok", *errors)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
