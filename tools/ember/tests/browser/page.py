#!/usr/bin/env python3
"""The chat page of `ember serve` in headless Chromium (run by tools/ember/tests/serve_page.rs).

    page.py URL MESSAGE   -> prints one JSON object: the reply as the page shows it, and how many
                             times the reply's text was seen to change while it streamed
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, message = sys.argv[1], sys.argv[2]
opts = Options()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
try:
    driver.get(url)
    driver.find_element(By.ID, "input").send_keys(message)
    driver.find_element(By.ID, "send").click()
    seen, last, deadline = 0, None, time.time() + 120
    # The reply streams into the last assistant bubble; Send comes back when it is done. Send is
    # looked at before the text: once it is back, the text read after it is the whole reply (the
    # other order could stop on the text from before the last chunk).
    while time.time() < deadline:
        done = driver.find_element(By.ID, "send").is_enabled()
        bubbles = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        text = bubbles[-1].text if bubbles else ""
        if text != last:
            seen += 1
            last = text
        if done and text:
            break
        time.sleep(0.01)
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error")]
    user = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".msg.user")]
    print(json.dumps({"reply": last, "changes": seen, "errors": errors, "user": user}))
finally:
    driver.quit()
