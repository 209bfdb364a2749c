#!/usr/bin/env python3
"""Renders a cleanroom report in headless Chromium, offline, and checks it.

usage: render.py REPORT.html OUTDIR

Writes OUTDIR/dom.html (the DOM after parsing), OUTDIR/report.png (1280x900)
and OUTDIR/report.pdf (printed, A4 by the page's @page rule). Every Chromium
run has name resolution disabled (--host-resolver-rules) and a net log; the
script fails if any net log shows a request made for the page (Chromium's
own background requests, which carry no page origin, are not the page's).
Exit 0 when all three files are produced and no request was seen; 1
otherwise, with the reason on stderr. Chromium missing: exit 1, saying to
run scripts/install-deps.sh (a test that cannot render must not pass).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

CHROMIUM = os.environ.get("CR_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def run(args, outdir, name, timeout=45):
    profile = tempfile.mkdtemp(prefix="cr-chromium-")
    netlog = os.path.join(outdir, name + ".netlog.json")
    cmd = [CHROMIUM] + FLAGS + ["--user-data-dir=" + profile, "--log-net-log=" + netlog,
                                "--net-log-capture-mode=Everything"] + args
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    with open(os.path.join(outdir, name + ".stderr"), "wb") as f:
        f.write(p.stderr)
    return p, netlog


def requests_in(netlog):
    """URLs the page asked for, from the net log: URL_REQUEST_START_JOB events
    whose initiator is an origin (a page's request; Chromium's own background
    requests, e.g. its component updater, say "not an origin") or whose
    network isolation key names a file:// top frame. The page itself
    (file:, data:, about:) does not count."""
    try:
        with open(netlog, encoding="utf-8", errors="replace") as f:
            text = f.read()
        # Chromium may be killed before it closes the JSON: close it.
        try:
            log = json.loads(text)
        except ValueError:
            log = json.loads(text.rstrip().rstrip(",") + "]}")
        types = log["constants"]["logEventTypes"]
    except (OSError, ValueError, KeyError) as e:
        return [f"(net log {netlog} unreadable: {e}: cannot tell)"]
    start_job = types.get("URL_REQUEST_START_JOB")
    if start_job is None:
        return ["(net log has no URL_REQUEST_START_JOB type: cannot tell)"]
    page = []
    for ev in log.get("events", []):
        if ev.get("type") != start_job:
            continue
        p = ev.get("params", {})
        url = p.get("url", "")
        if url.startswith(("file:", "data:", "about:", "chrome:", "blob:")):
            continue
        initiator = p.get("initiator", "not an origin")
        nik = p.get("network_isolation_key", "")
        if initiator != "not an origin" or "file://" in nik:
            page.append(url)
    return sorted(set(page))


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    html, outdir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not os.access(CHROMIUM, os.X_OK):
        print(f"render.py: {CHROMIUM} not found: run scripts/install-deps.sh "
              "(it installs chromium, used by the tests only)", file=sys.stderr)
        return 1
    os.makedirs(outdir, exist_ok=True)
    url = "file://" + html
    failures = []

    p, nl_dom = run(["--dump-dom", url], outdir, "dom")
    with open(os.path.join(outdir, "dom.html"), "wb") as f:
        f.write(p.stdout)
    if p.returncode != 0 or b"</html>" not in p.stdout:
        failures.append(f"--dump-dom failed (exit {p.returncode})")

    png = os.path.join(outdir, "report.png")
    p, nl_png = run(["--screenshot=" + png, "--window-size=1280,900",
                     "--hide-scrollbars", url], outdir, "png")
    if not (os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"):
        failures.append(f"no PNG screenshot (exit {p.returncode})")

    pdf = os.path.join(outdir, "report.pdf")
    p, nl_pdf = run(["--print-to-pdf=" + pdf, "--no-pdf-header-footer", url], outdir, "pdf")
    if not (os.path.exists(pdf) and open(pdf, "rb").read(5) == b"%PDF-"):
        failures.append(f"no PDF (exit {p.returncode})")

    for nl in (nl_dom, nl_png, nl_pdf):
        for u in requests_in(nl):
            failures.append(f"network request in {os.path.basename(nl)}: {u}")

    for f in failures:
        print("render.py: " + f, file=sys.stderr)
    if not failures:
        print(f"render.py: {html}: DOM, PNG and PDF produced, no network request")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
