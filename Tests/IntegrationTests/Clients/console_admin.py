"""The console as an admin and a viewer use it: headless Chromium (Selenium, Debian's chromium and
chromium-driver) against a real gateway. The admin runs a plan, reads a service's privileges,
issues a token and sees it once, watches psql's session appear live and ends it, revokes the token
after a confirmation that lists the session it ends, filters the audit log to a session and exports
it, and has "verify" name an event edited in the store. A viewer sees no button to act with, and
their forged POSTs get 403. A cross-site POST (no CSRF value) gets 403. Every page is photographed
at 1280 px and 390 px into SCREENSHOTS (the token field is masked first) and must fit the phone.

    console_admin.py BASE STORE_PATH PSQL WIRE_PORT SERVE_LOG SCREENSHOTS

The tokens come in CONSOLE_ADMIN_TOKEN and CONSOLE_VIEWER_TOKEN. Prints "console: ..." lines (never
a token) and exits 1 at the first thing that is not as a person should see it.
"""

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from browser import checker, chromium
from browser import navigate as browser_navigate
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

base, store_path, psql, wire_port, serve_log, screenshots = sys.argv[1:7]
admin_token = os.environ["CONSOLE_ADMIN_TOKEN"]
viewer_token = os.environ["CONSOLE_VIEWER_TOKEN"]
os.makedirs(screenshots, exist_ok=True)
for old in os.listdir(screenshots):
    if old.endswith(".png"):
        os.remove(os.path.join(screenshots, old))
clients = []


def kill_clients():
    for client in clients:
        client.kill()


check = checker("console", on_failure=kill_clients)
driver = chromium()
shots = 0


MARKUP_AS_TEXT = ["<td", "<br", "<span", "<code", "<a href", "<small", "<strong", "<input", "<form", "<li",
                  "<time", "&lt;", "&gt;", "&quot;", "&amp;", "&#39;"]


def shoot(name):
    """The page at desktop and phone width; it must fit the phone without sideways scrolling, and
    none of its markup may show as text (escaped twice)."""
    global shots
    visible = driver.find_element(By.TAG_NAME, "body").text
    shown = [m for m in MARKUP_AS_TEXT if m in visible]
    check(not shown, f"{name} shows no markup as text {shown}")
    shots += 1
    driver.set_window_size(1280, 1300)
    driver.save_screenshot(os.path.join(screenshots, f"{shots:02d}-{name}-desktop.png"))
    driver.set_window_size(390, 844)
    driver.save_screenshot(os.path.join(screenshots, f"{shots:02d}-{name}-phone.png"))
    width = driver.execute_script("return document.documentElement.scrollWidth")
    driver.set_window_size(1280, 1000)
    check(width <= 400, f"{name} fits a phone's width ({width} px)")


def text(selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


def navigate(element):
    browser_navigate(driver, element)


def login(token):
    driver.get(base + "/console/login")
    driver.find_element(By.ID, "token").send_keys(token)
    navigate(driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]"))


def logout():
    navigate(driver.find_element(By.CSS_SELECTOR, "nav form.inline button"))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(NoRedirect)


def http(method, path, form=None):
    """The browser's session cookie on a request made outside the browser (a forged POST, an export)."""
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
    data = None if form is None else urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Cookie": cookie})
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


HOSTILE_SQL = "SELECT pg_sleep(120) /* <img src=x onerror=alert(1)> */"
HOSTILE_NOTE = "console test <script>alert(2)</script>"


def no_alert():
    try:
        driver.switch_to.alert
        return False
    except NoAlertPresentException:
        return True


def psql_session(token, sql="SELECT pg_sleep(120)"):
    env = dict(os.environ, PGPASSWORD=token, PGCONNECT_TIMEOUT="10")
    client = subprocess.Popen(
        [psql, "-X", "-q", "-h", "127.0.0.1", "-p", wire_port, "-U", "batch", "-d", "app", "-c", sql],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients.append(client)
    return client


def session_rows(service):
    return [row for row in driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr") if service in row.text]


def wait_for_session(service, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        driver.get(base + "/console/sessions")
        rows = session_rows(service)
        if rows and "pg_sleep" in rows[0].text:
            return rows[0]
        time.sleep(0.5)
    return None


def ended_within(client, seconds):
    try:
        client.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


try:
    # The overview, and a plan that never applies.
    login(admin_token)
    check(driver.current_url.rstrip("/").endswith("/console"), "the admin lands on the overview")
    check(text("h1") == "Overview", "the overview's heading")
    check("app" in text("#databases"), "the database is listed with its drift status")
    shoot("overview")
    # Keyboard: the first Tab stops reach the brand, then the navigation, in order.
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    stops = []
    for _ in range(3):
        stops.append(driver.switch_to.active_element.text)
        driver.switch_to.active_element.send_keys(Keys.TAB)
    check(stops == ["Rolegate", "Overview", "Services"], f"Tab walks the navigation in order: {stops}")
    navigate(driver.find_element(By.XPATH, "//button[normalize-space()='Run a plan']"))
    check(text("h1") == "Plan" and "Every database matches the policy" in text("main"), "the plan finds no drift")
    shoot("plan")
    driver.get(base + "/console")
    check("in sync" in text("#databases"), f"the overview shows the check just run: {text('#databases')}")

    # What each service's role holds, as the database reports it.
    driver.get(base + "/console/services")
    invoicing = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#services tbody tr") if "invoicing" in row.text]
    check(invoicing and "SELECT, INSERT, UPDATE on billing.invoices" in invoicing[0]
          and "SELECT (email, id) on billing.customers" in invoicing[0],
          "the invoicing role's privileges read as the database reports them")
    shoot("services")
    driver.get(base + "/console/identity")
    check("No identity provider" in text("main") and "service:notes" in text("#console-roles"),
          "the identity page lists providers (none) and the console roles")
    shoot("identity")

    # Issue a token: shown once, with a copy button; a reload shows it no more.
    driver.get(base + "/console/tokens")
    Select(driver.find_element(By.CSS_SELECTOR, "form[aria-label='Issue a token'] select[name=service]")).select_by_value("batch")
    driver.find_element(By.CSS_SELECTOR, "form[aria-label='Issue a token'] input[name=note]").send_keys(HOSTILE_NOTE)
    navigate(driver.find_element(By.CSS_SELECTOR, "form[aria-label='Issue a token'] button[type=submit]"))
    check(driver.current_url.endswith("/console/tokens/issued"), "issuing leads to the page that shows the token")
    token = driver.find_element(By.ID, "new-token").get_attribute("value")
    check(len(token) > 20, "the new token is shown")
    copy = driver.find_element(By.CSS_SELECTOR, "button[data-copy=new-token]")
    check(copy.is_displayed(), "the copy button is there")
    copy.click()
    for _ in range(40):
        if copy.text == "Copied":
            break
        time.sleep(0.05)
    check(copy.text == "Copied", "the copy button copies")
    driver.execute_script("document.getElementById('new-token').value = '(masked for the screenshot)'")
    shoot("token-issued")
    driver.refresh()
    check(not driver.find_elements(By.ID, "new-token") and "shown once" in text("main"),
          "a reload does not show the token again")
    shoot("token-shown-once")

    # psql's session appears live; ending it from the page ends psql's session.
    first = psql_session(token)
    row = wait_for_session("batch")
    check(row is not None, "psql's session appears on the sessions page")
    check("running for" in row.text, "its statement shows as running, with its duration")
    session_id = row.find_element(By.CSS_SELECTOR, "td code").text
    token_id = row.find_element(By.CSS_SELECTOR, "td[data-label=Token] code").text
    shoot("sessions")
    navigate(row.find_element(By.XPATH, ".//button[normalize-space()='End']"))
    check(f"ended session {session_id}" in text(".notice"), "ending it is confirmed")
    check(ended_within(first, 10), "psql's session ended")
    told = first.stderr.read()
    check(first.returncode != 0 and "ended by an administrator" in told, f"psql was told: {told.strip()}")

    # Revoking the token asks first, listing the session it will end; then ends it.
    second = psql_session(token, HOSTILE_SQL)
    row = wait_for_session("batch")
    check(row is not None and "<img src=x onerror=alert(1)>" in row.text and no_alert(),
          "a second session appears; its statement's markup shows as text and runs nothing")
    driver.get(base + "/console/tokens?service=batch")
    navigate(driver.find_element(By.CSS_SELECTOR, f"a[href='/console/tokens/{token_id}/revoke']"))
    listed = text("#sessions-to-end")
    check("batch" in driver.find_element(By.CSS_SELECTOR, "main").text and "pg_sleep" in listed,
          "the confirmation lists the session the revocation ends")
    shoot("revoke-confirmation")
    driver.find_element(By.ID, "reason").send_keys("console test: leaked")
    navigate(driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    check(f"revoked {token_id}" in text(".notice"), "the revocation is confirmed")
    check(ended_within(second, 10), "the revoked token's session ended")
    states = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#tokens tbody tr") if token_id in r.text]
    check(states and "revoked" in states[0] and "console test: leaked" in states[0],
          "the token shows as revoked, with the reason")
    check(HOSTILE_NOTE in states[0] and no_alert(), "the token's note shows its markup as text")
    shoot("tokens")

    # The first session's events, in order, and their export.
    driver.get(base + f"/console/audit?token={token_id}&session={session_id}")
    events = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
    order = [next((i for i, e in enumerate(events) if marker in e), -1)
             for marker in ("auth allowed", "session start", "pg_sleep", "session end")]
    check(-1 not in order and order == sorted(order), f"the session's events in order: {order} of {len(events)}")
    shoot("audit-session")
    status, headers, body = http("GET", f"/console/audit/export?format=csv&token={token_id}&session={session_id}")
    rows = list(csv.DictReader(io.StringIO(body)))
    check(status == 200 and "attachment" in headers.get("Content-Disposition", "")
          and len(rows) == len(events) and all(r["session_id"] == session_id for r in rows)
          and any("pg_sleep" in r["sql"] for r in rows), f"the CSV export holds the session's {len(rows)} events")
    status, headers, body = http("GET", f"/console/audit/export?format=jsonl&token={token_id}&session={session_id}")
    lines = [json.loads(line) for line in body.splitlines()]
    check(status == 200 and len(lines) == len(events) and all(e["session_id"] == session_id for e in lines),
          "the JSON lines export holds the same events")

    # An event edited in the store: one byte of the statement's text in its block. "verify" names it.
    statement = next(e for e in lines if e["kind"] == "statement")
    instance, sequence, sql = statement["instance"], statement["sequence"], statement["sql"].encode()
    with sqlite3.connect(store_path, timeout=10) as db:
        block, payload = db.execute(
            "SELECT id, payload FROM rolegate_audit_blocks WHERE instance = ? AND first_sequence <= ? AND last_sequence >= ?",
            (instance, sequence, sequence)).fetchone()
        check(sql in payload, "the statement's text is in its block as it was sent")
        edited = payload.replace(sql, sql.lower(), 1)
        db.execute("UPDATE rolegate_audit_blocks SET payload = ? WHERE id = ?", (edited, block))
    driver.get(base + "/console/audit")
    navigate(driver.find_element(By.XPATH, "//button[normalize-space()='Verify the chain']"))
    chains = text("#chains")
    check("BROKEN" in chains and f"event #{sequence}" in chains, f"verify names the edited event #{sequence}: {chains}")
    shoot("verify")

    # A cross-site POST carries the cookie but not the form's CSRF value.
    status, _, _ = http("POST", f"/console/tokens/{token_id}/revoke", {"reason": "cross-site"})
    check(status == 403, f"a POST without the CSRF value gets 403 ({status})")
    driver.get(base + "/console/access")
    shoot("access")

    # Refused logins are counted on the overview (from the audit blocks' summaries, exactly).
    def refusals_shown():
        driver.get(base + "/console")
        for item in driver.find_elements(By.CSS_SELECTOR, ".counts li"):
            if "refusals in 24 h" in item.text:
                return int(item.text.split()[0])
        return None

    before = refusals_shown()
    check(before is not None, "the overview counts refusals")
    for _ in range(3):
        wrong = psql_session("rg_wrongtoken_not_a_real_one", "SELECT 1")
        check(ended_within(wrong, 20) and wrong.returncode != 0, "a wrong token is refused")
    deadline = time.time() + 10  # the audit writer's group commit
    after = refusals_shown()
    while after is not None and after < before + 3 and time.time() < deadline:
        time.sleep(0.3)
        after = refusals_shown()
    check(after is not None and after >= before + 3, f"three refused logins are counted ({before} -> {after})")
    check(len(driver.find_elements(By.CSS_SELECTOR, "#activity svg")) == 1, "the activity chart is drawn (SVG)")
    check("sessions in all" in text("#activity"), f"the chart says what it counts: {text('#activity')}")
    shoot("overview-with-activity")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    check(background == "rgb(13, 17, 23)", f"dark mode follows the system ({background})")
    shoot("overview-dark")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    logout()

    # A viewer: every page, no button to act with, and forged POSTs refused.
    login(viewer_token)
    check(driver.current_url.rstrip("/").endswith("/console"), f"the viewer lands on the overview ({driver.current_url}: {text('main')[:200]})")
    check(not driver.find_elements(By.XPATH, "//button[normalize-space()='Run a plan']"), "a viewer has no plan button")
    driver.get(base + "/console/tokens")
    check(not driver.find_elements(By.PARTIAL_LINK_TEXT, "Revoke"), "a viewer sees no revoke link")
    check(not driver.find_elements(By.CSS_SELECTOR, "form[aria-label='Issue a token']"), "a viewer sees no issue form")
    live = [r for r in driver.find_elements(By.CSS_SELECTOR, "#tokens tbody tr") if "invoicing" in r.text and "live" in r.text]
    check(live, "the viewer sees the invoicing token live")
    invoicing_id = live[0].find_element(By.CSS_SELECTOR, "td code").text
    shoot("viewer-tokens")
    csrf = driver.find_element(By.CSS_SELECTOR, "nav input[name=csrf]").get_attribute("value")
    status, _, _ = http("POST", f"/console/tokens/{invoicing_id}/revoke", {"csrf": csrf, "reason": "forged"})
    check(status == 403, f"the viewer's forged revoke gets 403 ({status})")
    status, _, _ = http("POST", "/console/sessions/end", {"csrf": csrf, "service": "invoicing"})
    check(status == 403, f"the viewer's forged end-sessions gets 403 ({status})")
    status, _, _ = http("POST", "/console/tokens", {"csrf": csrf, "service": "batch"})
    check(status == 403, f"the viewer's forged issue gets 403 ({status})")
    driver.get(base + "/console/tokens?service=invoicing")
    check(any("live" in r.text for r in driver.find_elements(By.CSS_SELECTOR, "#tokens tbody tr")),
          "the invoicing token is still live")
    driver.get(base + "/console/sessions")
    check(not driver.find_elements(By.XPATH, "//button[normalize-space()='End']"), "a viewer has no End button")
    logout()

    # The token was shown once and written nowhere.
    with open(serve_log, encoding="utf-8", errors="replace") as log:
        check(token not in log.read(), "the token is not in the gateway's log")
    with open(store_path, "rb") as db:
        check(token.encode() not in db.read(), "the token is not in the store")
finally:
    for client in clients:
        client.kill()
    driver.quit()
print(f"console: all checks passed; {shots * 2} screenshots in {screenshots}", flush=True)
