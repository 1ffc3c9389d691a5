"""A screenshot of the latent explorer (docs/explorer.png), taken in headless Chromium.

    python examples/frey.py --out runs/frey   # the lecture's run writes runs/frey/explorer.html
    python docs/screenshot_explorer.py runs/frey/explorer.html docs/explorer.png

The pointer is put at a latent point and a validation point is clicked, as a learner would.
Needs Debian's chromium and chromium-driver and selenium (pip install -e ".[browser]").
"""

import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def main(page, png, pointer=(1.6, 1.3), point=40):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, "--window-size=960,800", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(
            service=Service(executable_path="/usr/bin/chromedriver"), options=options
        )
        try:
            driver.get(Path(page).resolve().as_uri())
            plane = driver.find_element(By.ID, "plane")
            driver.execute_script("explorer.select(arguments[0])", point)
            # the canvas pixel of the latent point; selenium's offsets are from the element's centre
            px, py = driver.execute_script(
                "return explorer.toPixel(arguments[0], arguments[1])", *pointer
            )
            half = plane.size["width"] / 2
            x, y = round(px - half), round(py - half)
            ActionChains(driver).move_to_element_with_offset(plane, x, y).perform()
            driver.save_screenshot(str(png))
        finally:
            driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3])
