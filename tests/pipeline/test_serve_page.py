"""The page of `pipeline serve` in a real headless browser: Debian's chromium driven by Selenium
through the system's chromedriver (browser downloads fail offline), against the server running on
127.0.0.1: choose a file, read the verdict, the UNTRAINED warning, the timeline and the levels.
``RVQ_SCREENSHOT=FILE`` also saves a screenshot of the page (the README's)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the serve extra is not installed (python3 install.py --extras serve)")
pytest.importorskip("selenium", reason="selenium is not installed (python3 install.py --extras serve)")
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
    pytest.skip("chromium and its driver are not installed (as root: apt-get install -y chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.serving import start_server, stop  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=900,1250"):
        options.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)


def test_the_page_uploads_a_file_and_shows_verdict_timeline_and_levels(scoring, tmp_path):
    import httpx

    data = np.concatenate([sf.read(p, dtype="float32")[0] for p in scoring.files("eval")[:3]])
    path = tmp_path / "recording.flac"
    sf.write(path, data, 16000)
    proc, url = start_server(scoring.run, "--segment-window", "1", "--segment-hop", "0.5")
    driver = None
    try:
        expected = httpx.post(f"{url}/score", files={"file": ("recording.flac", path.read_bytes())}, timeout=120).json()
        driver = browser()
        driver.get(url + "/")
        assert "Judge a recording" in driver.find_element(By.TAG_NAME, "h1").text
        driver.find_element(By.ID, "file").send_keys(str(path))
        WebDriverWait(driver, 180).until(ec.visibility_of_element_located((By.ID, "decision")))
        assert driver.find_element(By.ID, "decision").text == expected["decision"]
        assert driver.find_element(By.ID, "probability").text == f"{100 * expected['probability']:.1f} %"
        assert driver.find_element(By.ID, "prior").text == "0.5"
        warning = driver.find_element(By.ID, "warning")
        assert warning.is_displayed() and "UNTRAINED" in warning.text
        bars = driver.find_elements(By.CSS_SELECTOR, "#timeline rect.segment")
        assert len(bars) == len(expected["segments"]) >= 4
        shown = [float(b.get_attribute("data-probability")) for b in bars]
        assert shown == pytest.approx([s["probability"] for s in expected["segments"]], rel=1e-6)
        assert "windows of 1.00 s every 0.51 s" in driver.find_element(By.ID, "timeline-note").text  # 38 frames at 75 Hz
        levels = driver.find_elements(By.CSS_SELECTOR, "#levels rect.level")
        assert len(levels) == 8
        if os.environ.get("RVQ_SCREENSHOT"):
            driver.save_screenshot(os.environ["RVQ_SCREENSHOT"])
        broken = tmp_path / "broken.wav"
        broken.write_bytes(b"not audio" * 50)
        driver.find_element(By.ID, "file").send_keys(str(broken))
        WebDriverWait(driver, 60).until(ec.text_to_be_present_in_element((By.ID, "status"), "422"))
        assert "not a readable audio file" in driver.find_element(By.ID, "status").text
    finally:
        if driver is not None:
            driver.quit()
        stop(proc)
