"""Drives the live dashboard of a running session in headless Chromium (Playwright from PyPI
with Debian's chromium) the way an operator would, and checks what it shows.

usage: dashboard.py CHROMIUM MEGATEST SESSION_DIR SCREENSHOT_DIR

Signs in with the token of SESSION_DIR/api.token, waits for the numbers to change while the
session runs, reads an agent's log tail, takes a checkpoint, answers an escalation (the session
must raise one), cancels a stop, pauses (and compares the figures with `megatest status --json`
then), continues, stops, and compares the final figures with `megatest status --json` after the
daemon exited. Exits non-zero with the
reason on the first failed expectation; prints one JSON line of what it saw.
"""

import json
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM, MEGATEST, SESSION, SHOTS = sys.argv[1:5]
SESSION = pathlib.Path(SESSION)
SHOTS = pathlib.Path(SHOTS)
TOKEN = (SESSION / "api.token").read_text().strip()
ADDR = (SESSION / "api.addr").read_text().strip()
BASE = f"http://{ADDR}"
FIGURES = ["total_tokens", "model_calls", "tool_calls", "tasks_done", "tasks_total", "checkpoints"]


def fail(message):
    print(f"dashboard probe: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def wait(condition, seconds, message):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    fail(f"timed out after {seconds} s: {message}")


def status():
    out = subprocess.run(
        [MEGATEST, "status", str(SESSION), "--json"], capture_output=True, text=True, timeout=30
    )
    expect(out.returncode == 0, f"megatest status failed: {out.stderr}")
    return json.loads(out.stdout)


def status_figures(doc):
    m = doc["metrics"]
    return {
        "total_tokens": m["total_tokens"],
        "model_calls": m["model_calls"],
        "tool_calls": m["tool_calls"],
        "tasks_done": m["tasks"]["done"],
        "tasks_total": m["tasks"]["total"],
        "checkpoints": m["checkpoints"],
    }


def http_status(path, method="GET", body=None, headers=None):
    request = urllib.request.Request(BASE + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


# Without signing in: the sign-in page, and no data.
code, page_text = http_status("/")
expect(code == 200 and 'id="login"' in page_text, f"GET / without a cookie: {code}")
expect(TOKEN not in page_text, "the sign-in page carries the token")
for path in ["/api/dashboard", "/api/status", "/api/events", "/api/agents/agent-1/log"]:
    code, _ = http_status(path)
    expect(code == 401, f"{path} without sign-in answered {code}")
code, _ = http_status(
    "/api/login", "POST", json.dumps({"token": "0" * 64}).encode(), {"content-type": "application/json"}
)
expect(code == 403, f"a wrong token signed in ({code})")
code, _ = http_status(
    "/api/login",
    "POST",
    json.dumps({"token": TOKEN}).encode(),
    {"content-type": "application/json", "origin": "http://evil.example"},
)
expect(code == 403, f"a sign-in from another origin was taken ({code})")

console = []
seen = {}
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    urls = []
    page.on("request", lambda r: urls.append(r.url))

    page.goto(BASE + "/")
    page.fill("#token", TOKEN)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#dashboard")
    expect(page.url.rstrip("/") == BASE, f"signed in at {page.url}")

    cookies = context.cookies(BASE)
    expect(len(cookies) == 1, f"cookies: {cookies}")
    cookie = cookies[0]
    expect(cookie["httpOnly"] and cookie["sameSite"] == "Strict", f"cookie flags: {cookie}")
    expect(cookie["value"] != TOKEN and TOKEN not in cookie["value"], "the cookie holds the token")
    expect(page.evaluate("document.cookie") == "", "the cookie is readable by script")

    def figures():
        return {
            name: page.get_attribute(f'[data-figure="{name}"]', "data-value") for name in FIGURES
        }

    def numeric(values):
        return {k: int(v) for k, v in values.items() if v not in (None, "")}

    wait(lambda: numeric(figures()).get("total_tokens") is not None, 30, "the figures appear")
    first = numeric(figures())
    seen["first"] = first
    # The numbers change while the session runs (driven by the event stream).
    later = wait(
        lambda: (lambda f: f if f.get("total_tokens", 0) > first["total_tokens"] else None)(numeric(figures())),
        60,
        f"the token figure never moved from {first}",
    )
    seen["later"] = later
    live = ("running", "escalated")
    expect(page.get_attribute("#state", "data-state") in live, "the state is not running")
    for view in ["#view-timeline svg", "#view-tokens svg", "#view-agents table", "#view-budget table", "#event-feed tr"]:
        page.wait_for_selector(view, timeout=20000)

    # The live log tail of the first agent.
    wait(lambda: len(page.inner_text("#log")) > 0, 30, "the agent log tail stays empty")
    page.screenshot(path=str(SHOTS / "dashboard-running.png"), full_page=True)

    # A checkpoint, confirmed.
    before = int(figures()["checkpoints"])
    page.click('[data-action="checkpoint"]')
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    wait(lambda: "Checkpoint #" in page.inner_text("#notice"), 60, "no checkpoint notice")
    wait(lambda: int(figures()["checkpoints"]) > before, 30, "the checkpoint count did not grow")

    # An escalation, answered from its row.
    button = page.wait_for_selector('[data-escalation][data-decision="continue"]', timeout=60000)
    escalation = int(button.get_attribute("data-escalation"))
    page.click(f'[data-escalation="{escalation}"][data-decision="continue"]')
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    wait(lambda: f"Escalation #{escalation}: continue" in page.inner_text("#notice"), 30, "no decision notice")
    decided = [e["recovery_id"] for e in status()["escalations"]]
    expect(escalation not in decided, f"escalation {escalation} is still open")
    seen["escalation"] = escalation

    # A stop, cancelled: the session runs on.
    page.click('[data-action="stop"]')
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-cancel")
    time.sleep(1)
    expect(status()["status"] in live, "a cancelled stop stopped the session")

    # Pause: then the figures hold still and are what `megatest status` says.
    page.click('[data-action="pause"]')
    page.click("#confirm-ok")
    wait(lambda: page.get_attribute("#state", "data-state") == "paused", 30, "the dashboard never showed paused")
    expect(status()["status"] == "paused", "megatest status does not say paused")

    def paused_match():
        on_page = numeric(figures())
        by_status = status_figures(status())
        return on_page if on_page == by_status else None

    seen["paused"] = wait(paused_match, 20, "paused figures differ from megatest status")
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(SHOTS / "dashboard-paused-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")

    page.click('[data-action="continue"]')
    page.click("#confirm-ok")
    wait(lambda: page.get_attribute("#state", "data-state") in live, 30, "continue did not show running")

    # Stop: the page follows the end through the event stream.
    page.click('[data-action="stop"]')
    page.click("#confirm-ok")
    page.wait_for_selector("#ended", timeout=120000)
    final = numeric(figures())
    seen["final"] = final
    page.screenshot(path=str(SHOTS / "dashboard-ended.png"), full_page=True)
    browser.close()

expect(not any(TOKEN in url for url in urls), "the token went into a URL")
# After the daemon exited, `megatest status` reads the files: the same figures.
wait(lambda: status().get("running") is False, 60, "the daemon did not exit")
after = status_figures(status())
expect(final == after, f"the dashboard ended on {final}, megatest status says {after}")
expect(not console, f"console messages: {console}")
print(json.dumps(seen))
