"""Take the README's screenshot of the web page (headless Chromium against a real `fcn serve`).

    python -m tests.e2e.screenshot docs/web_page.png            # "Try a sample", bundled models
    python -m tests.e2e.screenshot out.png --model roads=m.onnx --image photo.jpg

Without --image it presses the page's "Try a sample" button (the aerial photo shipped with the
page, segmented by the default model).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from service.http.launcher import fcn_serve
from tests.e2e.browser import start_chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", action="append", default=[], help="as for fcn serve")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--view", choices=("side", "overlay", "outline"), default="side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        serve_args = [a for spec in args.model for a in ("--model", spec)]
        with fcn_serve(serve_args, work / "serve.log") as server:
            driver = start_chromium(work / "profile", width=1100, height=980)
            try:
                driver.get(server.url + "/")
                wait = WebDriverWait(driver, 30)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option[value]"))
                wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
                if args.image is None:
                    driver.find_element(By.ID, "sample").click()
                else:
                    driver.find_element(By.ID, "file").send_keys(str(args.image.resolve()))
                result = driver.find_element(By.ID, "result")
                wait.until(lambda d: result.get_attribute("data-state") in ("ready", "error"))
                if args.view != "side":
                    selector = f'input[name="view"][value="{args.view}"]'
                    driver.find_element(By.CSS_SELECTOR, selector).click()
                height = driver.execute_script("return document.body.scrollHeight")
                driver.set_window_size(1100, height + 40)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
