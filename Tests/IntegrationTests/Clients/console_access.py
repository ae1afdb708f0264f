"""An approver in the console, as a person uses it: headless Chromium (Selenium, Debian's
chromium and chromium-driver) logs in with the approver's token, finds two pending requests in
the inbox, approves one and denies the other with comments, and finds the denied one in the
history. Screenshots of each page (at 1280 px, and the history at a phone's 390 px) go to
SCREENSHOTS.

    console_access.py BASE TOKEN APPROVE_ID DENY_ID SCREENSHOTS

Prints "console: ..." lines and exits 1 at the first thing that is not as a person should see it.
"""

import os
import sys

from browser import checker, chromium, navigate
from selenium.webdriver.common.by import By

base, token, approve_id, deny_id, screenshots = sys.argv[1:6]
os.makedirs(screenshots, exist_ok=True)


check = checker("console")
driver = chromium()
try:
    driver.get(base + "/console")
    check(driver.current_url.endswith("/console/login"), "an unknown visitor is sent to the login page")
    label = driver.find_element(By.CSS_SELECTOR, "label[for=token]")
    check("token" in label.text.lower(), "the token field is labelled")
    driver.save_screenshot(os.path.join(screenshots, "1-login.png"))
    driver.find_element(By.ID, "token").send_keys(token)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]"))
    check(driver.current_url.endswith("/console/access"), "logged in, on the inbox")
    rows = {row.get_attribute("id") for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr")}
    check(f"request-{approve_id}" in rows and f"request-{deny_id}" in rows, f"both requests wait in the inbox: {rows}")
    driver.save_screenshot(os.path.join(screenshots, "2-inbox.png"))

    driver.find_element(By.ID, f"comment-{approve_id}").send_keys("ok, pairing on it")
    navigate(driver, driver.find_element(By.CSS_SELECTOR, f"#request-{approve_id} button[value=approve]"))
    notice = driver.find_element(By.CSS_SELECTOR, ".notice").text
    check(approve_id in notice and "approved" in notice, f"the approval is confirmed: {notice}")
    driver.find_element(By.ID, f"comment-{deny_id}").send_keys("use the <read> replica")
    navigate(driver, driver.find_element(By.CSS_SELECTOR, f"#request-{deny_id} button.deny"))
    notice = driver.find_element(By.CSS_SELECTOR, ".notice").text
    check(deny_id in notice and "denied" in notice, f"the denial is confirmed: {notice}")
    inbox = {row.get_attribute("id") for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr")}
    check(f"request-{deny_id}" not in inbox, "the denied request left the open lists")
    driver.save_screenshot(os.path.join(screenshots, "3-after-decisions.png"))

    navigate(driver, driver.find_element(By.LINK_TEXT, "History"))
    row = driver.find_element(By.ID, f"request-{deny_id}")
    check("denied" in row.text and "use the <read> replica" in row.text, f"the history shows the denial: {row.text}")
    driver.save_screenshot(os.path.join(screenshots, "4-history.png"))
    driver.set_window_size(390, 844)
    driver.save_screenshot(os.path.join(screenshots, "5-history-phone.png"))
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= 400, f"the history fits a phone's width ({width} px)")

    driver.set_window_size(1280, 1000)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "nav form.inline button"))
    check(driver.current_url.endswith("/console/login"), "logged out")
    driver.get(base + "/console/access")
    check(driver.current_url.endswith("/console/login"), "after logging out, the inbox asks for a login again")
finally:
    driver.quit()
print("console: all checks passed", flush=True)
