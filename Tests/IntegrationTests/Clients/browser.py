"""What the browser-driven clients share: Debian's headless Chromium under Selenium, and checks
that print what passed and stop at the first failure.

    from browser import chromium, checker
    driver = chromium()
    check = checker("console")        # prints "console: <message>", or "FAIL: <message>" and exits 1
"""
import shutil
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


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
