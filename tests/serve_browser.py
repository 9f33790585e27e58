"""The search page of `torchclip serve` in headless Chromium, driven by Selenium (Debian's
python3-selenium and chromium-driver; run with /usr/bin/python3, whose packages those are).

  serve_browser.py URL COLOUR_DIR DROP_IMAGE PICK_IMAGE

Types "a photo of a red square" and expects at least 8 of the top 10 thumbnails to come from
COLOUR_DIR/red/ and every thumbnail to load; drops DROP_IMAGE on the page (a DataTransfer drop
event carrying the file's bytes, as a user's drag delivers) and picks PICK_IMAGE with the file
input, and expects for each the grid the API gives for that image (/v1/search, asked directly),
with the file itself among it at score 1. Exit 0 when all pass; every wait is bounded. Prints
one JSON line of what it saw.
"""
import base64
import json
import os
import sys
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import Select, WebDriverWait

DROP_JS = """
const [b64, name, done] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const file = new File([bytes], name, {type: 'image/png'});
const dt = new DataTransfer();
dt.items.add(file);
for (const type of ['dragenter', 'dragover', 'drop'])
  document.body.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
done(true);
"""


def results(driver):
    figs = driver.find_elements(By.CSS_SELECTOR, "figure.hit")
    return [(f.get_attribute("data-path"), float(f.get_attribute("data-score"))) for f in figs]


def wait_for(driver, what, predicate, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: predicate(d))
    except Exception as e:  # a timeout: say what was on the page
        status = driver.find_element(By.ID, "status").text
        raise SystemExit(f"FAIL: {what} within {timeout} s; status line: {status!r}; results: {results(driver)[:5]} ({e!r})")


def api_paths(url, path):
    """The top 50 paths /v1/search gives for the image at `path` (24 images of each colour:
    the file is among its colour's, whose scores all round to 1 with this small model)."""
    with open(path, "rb") as f:
        body = json.dumps({"image": base64.b64encode(f.read()).decode(), "k": 50}).encode()
    req = urllib.request.Request(url + "v1/search", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return [h["path"] for h in json.load(r)["results"][0]["hits"]]


def expect_image_grid(driver, url, path, what):
    want = api_paths(url, path)
    if path not in want:
        raise SystemExit(f"FAIL: the API does not find {path} among its own top 50: {want}")
    wait_for(driver, f"the grid for the {what} image", lambda d: [p for p, _ in results(d)] == want)
    score = dict(results(driver))[path]
    if abs(score - 1.0) > 1e-3:
        raise SystemExit(f"FAIL: an indexed image should score 1.0 against itself, not {score}")
    return {"top": results(driver)[0], "own_score": score}


def all_thumbnails_loaded(driver):
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll('figure.hit img')];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);")


def main():
    url, colour_dir, drop_image, pick_image = sys.argv[1:5]
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    seen = {}
    try:
        driver.get(url)
        wait_for(driver, "the page to show the index size", lambda d: "images indexed" in d.find_element(By.ID, "status").text)
        Select(driver.find_element(By.ID, "k")).select_by_visible_text("10")
        box = driver.find_element(By.ID, "q")
        box.send_keys("a photo of a red square")
        box.send_keys(Keys.ENTER)
        wait_for(driver, "10 results", lambda d: len(results(d)) == 10)
        wait_for(driver, "every thumbnail to load", all_thumbnails_loaded)
        hits = results(driver)
        red = sum(1 for p, _ in hits if os.sep + "red" + os.sep in p)
        seen["text_query_red_of_10"] = red
        seen["thumbnails_loaded"] = driver.execute_script(
            "return [...document.querySelectorAll('figure.hit img')].filter(i => i.naturalWidth > 0).length")
        if red < 8:
            raise SystemExit(f"FAIL: only {red} of the top 10 are red: {hits}")

        Select(driver.find_element(By.ID, "k")).select_by_visible_text("50")
        with open(drop_image, "rb") as f:
            b64 = base64.b64encode(f.read()).decode()
        driver.execute_async_script(DROP_JS, b64, os.path.basename(drop_image))
        seen["drop"] = expect_image_grid(driver, url, drop_image, "dropped")

        driver.find_element(By.ID, "file").send_keys(pick_image)
        seen["pick"] = expect_image_grid(driver, url, pick_image, "picked")
        print(json.dumps(seen))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
