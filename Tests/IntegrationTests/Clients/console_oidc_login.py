"""A person logs in to the console through their OpenID provider, as a person does: headless
Chromium opens the console's login page, clicks "Log in with PROVIDER", types the person's name
into the provider's form (oidc-provider-mock), and lands back in the console as themselves.
Writes the console's session cookie to COOKIE_FILE (mode 0600) for the test to use with curl, and
screenshots to SCREENSHOTS.

    console_oidc_login.py BASE PROVIDER SUBJECT COOKIE_FILE SCREENSHOTS

Prints "console login: ..." lines and exits 1 at the first thing that is not as a person should see it.
"""

import os
import sys

from browser import checker, chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

base, provider, subject, cookie_file, screenshots = sys.argv[1:6]
os.makedirs(screenshots, exist_ok=True)


check = checker("console login")
driver = chromium(height=900)
try:
    driver.set_page_load_timeout(30)
    wait = WebDriverWait(driver, 20)
    driver.get(base + "/console")
    check(driver.current_url.endswith("/console/login"), "the console asks for a login")
    button = driver.find_element(By.LINK_TEXT, f"Log in with {provider}")
    driver.save_screenshot(os.path.join(screenshots, "1-console-login.png"))
    button.click()
    field = wait.until(expected_conditions.presence_of_element_located((By.NAME, "sub")))
    check(not driver.current_url.startswith(base), "the browser is at the provider's login form")
    field.send_keys(subject)
    field.submit()
    wait.until(lambda d: d.current_url.startswith(base + "/console") and d.find_elements(By.CSS_SELECTOR, "nav .who"))
    who = driver.find_element(By.CSS_SELECTOR, "nav .who").text
    print(f"console login: logged in as {who} at {driver.current_url.split('?')[0]}", flush=True)
    driver.save_screenshot(os.path.join(screenshots, "2-console-after-login.png"))
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    check("rolegate_console" in cookies and "rolegate_oidc" not in cookies,
          "the console's session cookie is set and the login's cookie is gone")
    descriptor = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(cookies["rolegate_console"])
finally:
    driver.quit()
