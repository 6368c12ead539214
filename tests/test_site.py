"""The course site in a real browser (issue 30; docs/testing.md, "The site in a browser").

The site is built with the documented command (``mkdocs build``, strict, notebooks not re-executed)
into the test's temporary folder, served on 127.0.0.1 and opened in Debian's ``chromium``, headless,
through selenium and ``chromium-driver``. Every lesson notebook must have its page with its title,
its code cells and its figures (the images of its committed outputs, each loaded with a non-zero
size); every image the site serves must load; every link into the site must reach a built page and,
with a ``#fragment``, an element of it. Screenshots of the home page and of one lesson are saved.

``SITE_DIR=DIR`` tests a site already built in ``DIR`` instead of building one;
``SITE_SCREENSHOTS=DIR`` saves the screenshots there. Without ``chromium`` the test is skipped,
unless ``SITE_TEST_REQUIRED=1`` (CI), where it fails; so is it without the packages of
``requirements-site.txt``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSON_FOLDERS = ("notebooks", "solutions")  # folders whose notebooks are pages of the site
FIGURE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
SCREENSHOT_LESSON = "03_s10_custom_resnet"


def lesson_notebooks() -> list[Path]:
    """Every notebook that must have a lesson page."""
    return sorted(path for folder in LESSON_FOLDERS for path in (ROOT / folder).glob("*.ipynb"))


def notebook_facts(path: Path) -> dict:
    """What a lesson page must show: the notebook's first heading, its code cells, its output figures."""
    cells = json.loads(path.read_text())["cells"]
    title = next(
        re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())  # a link in the title shows as its text
        for cell in cells
        if cell["cell_type"] == "markdown"
        for line in "".join(cell["source"]).splitlines()
        if line.startswith("# ")
    )
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    figures = sum(
        1
        for cell in code
        for output in cell.get("outputs", [])
        if any(kind in output.get("data", {}) for kind in FIGURE_TYPES)
    )
    return {"title": title, "code_cells": len(code), "figures": figures}


def build_site(out: Path) -> Path:
    """The documented build (``mkdocs build``, strict by ``mkdocs.yml``) into ``out``."""
    command = [sys.executable, "-m", "mkdocs", "build", "--quiet", "--strict", "--site-dir", str(out)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"mkdocs build failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    packages = all(importlib.util.find_spec(name) for name in ("selenium", "mkdocs", "mkdocs_jupyter", "material"))
    if not (chromium and driver_path and packages):
        if os.environ.get("SITE_TEST_REQUIRED") == "1":
            pytest.fail("the site test needs chromium, chromium-driver (apt-get) and requirements-site.txt (pip)")
        pytest.skip("no chromium, chromium-driver or requirements-site.txt here (CI installs them: .ci/run)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[str]:
    """The site's base URL, served from a fresh build (or from ``SITE_DIR``)."""
    folder = Path(os.environ["SITE_DIR"]) if os.environ.get("SITE_DIR") else None
    if folder is None:
        folder = build_site(tmp_path_factory.mktemp("site") / "site")
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass


PAGE_FACTS = """
// nbconvert nests a code cell's div in another of the same classes: count the outer ones
const cells = [...document.querySelectorAll('.jp-CodeCell')].filter(c => !c.parentElement.closest('.jp-CodeCell'));
const images = [...document.images].map(i => ({src: i.currentSrc || i.src, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight, output: !!i.closest('.jp-OutputArea')}));
return {
  title: (document.querySelector('h1') || {textContent: ''}).textContent.replace('¶', '').trim(),
  codeCells: cells.length,
  highlighted: cells.filter(c => c.querySelector('.jp-InputArea [class*="highlight"] pre span')).length,
  images: images,
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.getAttribute('name')),
};
"""


def open_page(driver, url: str) -> dict:
    """Load a page, wait for its images, and read what the checks need from its DOM."""
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? null : i.decode().catch(() => null)))"
        ".then(() => done());"
    )
    return driver.execute_script(PAGE_FACTS)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_site_in_a_browser(browser, site, tmp_path):
    failures: list[str] = []
    pages: dict[str, dict] = {}
    missing: set[str] = set()
    todo = [site]
    while todo:  # every page reachable from the home page
        url = todo.pop()
        if url in pages or url in missing:
            continue
        if http_status(url) != 200:
            missing.add(url)  # reported below with the links to it
            continue
        pages[url] = open_page(browser, url)
        for link in pages[url]["links"]:
            target = urldefrag(link).url
            if target.startswith(site) and target.endswith("/") and target not in pages and target not in missing:
                todo.append(target)

    # every lesson notebook: its page, title, code cells and figures
    for notebook in lesson_notebooks():
        url = urljoin(site, f"{notebook.parent.name}/{notebook.stem}/")
        expected = notebook_facts(notebook)
        facts = pages.get(url)
        if facts is None:
            if http_status(url) != 200:
                failures.append(f"{notebook.name}: no lesson page at {url}")
                continue
            facts = pages[url] = open_page(browser, url)
            failures.append(f"{notebook.name}: its page is not linked from the site's navigation")
        if expected["title"] not in facts["title"]:
            failures.append(f"{notebook.name}: page title {facts['title']!r}, expected {expected['title']!r}")
        if facts["codeCells"] != expected["code_cells"] or facts["highlighted"] != expected["code_cells"]:
            failures.append(
                f"{notebook.name}: {facts['codeCells']} code cells ({facts['highlighted']} highlighted) on the page, "
                f"{expected['code_cells']} in the notebook"
            )
        figures = [image for image in facts["images"] if image["output"]]
        if len(figures) != expected["figures"]:
            failures.append(
                f"{notebook.name}: {len(figures)} figures on the page, {expected['figures']} in its outputs"
            )

    # every image the site serves (and every figure) loads with a non-zero size; every internal link resolves
    status: dict[str, int] = {}
    for url, facts in pages.items():
        for image in facts["images"]:
            if image["src"].startswith((site, "data:")) and not (
                image["complete"] and image["width"] > 0 and image["height"] > 0
            ):
                failures.append(f"{url}: image did not load: {image['src'][:100]}")
        for link in facts["links"]:
            target, fragment = urldefrag(link)
            if not target.startswith(site):
                continue
            if target not in pages and target not in status:
                status[target] = http_status(target)
            if target not in pages and status[target] != 200:
                failures.append(f"{url}: broken link {link} (HTTP {status[target]})")
            elif fragment and target in pages and fragment not in pages[target]["ids"]:
                failures.append(f"{url}: link {link} names no element of its page")

    shots = Path(os.environ.get("SITE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    for name, url in (("home", site), ("lesson", urljoin(site, f"notebooks/{SCREENSHOT_LESSON}/"))):
        browser.get(url)
        assert browser.save_screenshot(str(shots / f"{name}.png"))
        assert (shots / f"{name}.png").stat().st_size > 0
    print(f"site: {len(pages)} pages checked; screenshots in {shots}")

    assert not failures, "the course site in a browser:\n" + "\n".join(failures)
    assert len(pages) >= len(lesson_notebooks()) + 5  # home, the lessons, the four docs pages
