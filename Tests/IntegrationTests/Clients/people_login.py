"""A person logging in, as a person does it: headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) opens the login URL `rolegate login` printed, types the
person's name into the provider's login form, submits it, and follows the redirect back to
rolegate's loopback listener. Saves a screenshot of each page to SCREENSHOTS.

    people_login.py LOGIN_URL SUBJECT SCREENSHOTS

Prints "people login: <the page's answer>" and exits 0 when the loopback page says the login
worked; 1 otherwise.
"""

import os
import sys

from browser import chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

url, subject, screenshots = sys.argv[1:4]
os.makedirs(screenshots, exist_ok=True)

driver = chromium(height=900)
try:
    driver.set_page_load_timeout(30)
    driver.get(url)
    wait = WebDriverWait(driver, 20)
    field = wait.until(expected_conditions.presence_of_element_located((By.NAME, "sub")))
    driver.save_screenshot(os.path.join(screenshots, "1-provider-login-form.png"))
    field.send_keys(subject)
    field.submit()
    result = wait.until(expected_conditions.presence_of_element_located((By.ID, "result")))
    text = result.text
    driver.save_screenshot(os.path.join(screenshots, "2-back-at-rolegate.png"))
    print(f"people login: {text}")
    print(f"people login: landed on {driver.current_url.split('?')[0]}")
    sys.exit(0 if text.startswith("Logged in as") else 1)
finally:
    driver.quit()
