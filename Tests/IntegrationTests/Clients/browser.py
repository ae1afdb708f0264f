"""What the browser-driven clients share: Debian's headless Chromium under Selenium, and checks
that print what passed and stop at the first failure.

    from browser import chromium, checker
    driver = chromium()
    check = checker("console")        # prints "console: <message>", or "FAIL: <message>" and exits 1
    navigate(driver, button)          # click, and wait until the next page replaced this one
"""
import shutil
import sys

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def chromium(width=1280, height=1000):
    """Headless Chromium from Debian's packages (chromium, chromium-driver)."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"]:
        options.add_argument(argument)
    return webdriver.Chrome(options=options,
                            service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))


def checker(prefix, on_failure=lambda: None):
    """A check(condition, message) that prints "<prefix>: message" when it holds, and otherwise
    runs `on_failure`, prints "FAIL: message" and exits 1."""
    def check(condition, message):
        if not condition:
            print(f"FAIL: {message}", flush=True)
            on_failure()
            sys.exit(1)
        print(f"{prefix}: {message}", flush=True)
    return check


def navigate(driver, element):
    """Clicks something that loads a page, and waits until the new page replaced the old one
    (reading the page right after a click can read the old one)."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_):
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            # Asked mid-navigation, Chromium can answer that the node has left the document
            # rather than that it is stale (a CI run failed on it): the same fact.
            if "does not belong to the document" in str(error):
                return True
            raise

    WebDriverWait(driver, 15).until(replaced)
