"""Take the README's screenshot of the web page (headless Chromium against a real `fcn serve`).

    python -m tests.e2e.screenshot docs/web_page.png            # the bundled default model
    python -m tests.e2e.screenshot out.png --model roads=m.onnx --image photo.jpg

Without --image it segments a generated demo image (training.demo, seed 7).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from service.http.launcher import fcn_serve
from tests.e2e.browser import start_chromium


def demo_image(path: Path, size: int = 320) -> Path:
    from training.data.demo import render_sample

    image, _ = render_sample(3, size=size, seed=7)
    Image.fromarray(image).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", action="append", default=[], help="as for fcn serve")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--view", choices=("side", "overlay"), default="side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = args.image or demo_image(work / "demo.png")
        serve_args = [a for spec in args.model for a in ("--model", spec)]
        with fcn_serve(serve_args, work / "serve.log") as server:
            driver = start_chromium(work / "profile", width=1100, height=980)
            try:
                driver.get(server.url + "/")
                wait = WebDriverWait(driver, 30)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option[value]"))
                wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
                driver.find_element(By.ID, "file").send_keys(str(image.resolve()))
                result = driver.find_element(By.ID, "result")
                wait.until(lambda d: result.get_attribute("data-state") in ("ready", "error"))
                if args.view == "overlay":
                    selector = 'input[name="view"][value="overlay"]'
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
