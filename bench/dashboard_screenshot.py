"""Headless-browser screenshot of optuna-dashboard's Pareto view for a study (Debian's chromium).

    python -m bench.dashboard_screenshot --study all-MiniLM-L6-v2-sst2-lora --storage sqlite:///studies/x.db -o docs/dashboard_pareto.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True)
    ap.add_argument("--storage", required=True)
    ap.add_argument("-o", "--output", default="docs/dashboard_pareto.png")
    a = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        sys.exit("no chromium found: apt-get install chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dash = subprocess.Popen([sys.executable, "-m", "autopeft.cli", "dashboard", "--study", a.study, "--storage", a.storage,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sid = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    sid = next(s["study_id"] for s in json.loads(r.read())["study_summaries"] if s["study_name"] == a.study)
                break
            except OSError:
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/dashboard/studies/{sid}"
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1100", "--virtual-time-budget=15000", f"--screenshot={a.output}", url],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        print(f"wrote {a.output} ({url})")
    finally:
        dash.terminate()
        dash.wait(10)


if __name__ == "__main__":
    main()
