"""MkDocs hooks of the course site (``mkdocs.yml``): the files outside ``docs/``, links, Colab badges.

The site's pages are the README (as ``index.md``), ``docs/*.md`` and the notebooks. The README,
the notebooks and ``images/`` stay where GitHub and Colab expect them; :func:`on_files` adds them to
the site under the same relative paths (``notebooks/``, ``images/``), the README as ``index.md``.
:func:`on_page_markdown` rewrites each Markdown link written for the repository (relative to the
file's place in it) into a link on the site, or, for a file that is not on the site (code, weights,
LICENSE), into its page on GitHub. :func:`on_page_content` puts an "Open in Colab" badge at the top
of each lesson page.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
from pathlib import Path
from types import ModuleType

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent
FOLDERS = ("notebooks", "images", "solutions")  # folders served under their own name
SITE_SUFFIXES = {".md", ".ipynb", ".png", ".jpg", ".svg"}
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _colab() -> ModuleType:
    """``cifar/colab.py`` loaded alone (standard library only), without importing the package and torch."""
    spec = importlib.util.spec_from_file_location("course_colab", ROOT / "cifar" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COLAB = _colab()
BLOB = f"{COLAB.REPO_URL}/blob/{COLAB.BRANCH}/"


def site_path(repo_path: str) -> str | None:
    """Where a repository file is on the site (a path relative to the site's root), or None if it is not."""
    if repo_path == "README.md":
        return "index.md"
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path.split("/", 1)[0] in FOLDERS and Path(repo_path).suffix in SITE_SUFFIXES:
        return repo_path
    return None


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the notebooks among them into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README as ``index.md`` and every file of :data:`FOLDERS` that exists."""
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).glob("*")) if (ROOT / folder).is_dir() else []:
            if path.is_file() and path.suffix in SITE_SUFFIXES:
                # src_dir is the repository: the file is read where it is, under the same relative path
                files.append(File(f"{folder}/{path.name}", str(ROOT), config.site_dir, config.use_directory_urls))
    return files


def repo_source(src_uri: str) -> str:
    """The repository path of a page's source file (the inverse of :func:`site_path`)."""
    if src_uri == "index.md":
        return "README.md"
    return src_uri if src_uri.split("/", 1)[0] in FOLDERS else f"docs/{src_uri}"


def rewrite_link(target: str, page_repo_path: str, page_src_uri: str) -> str:
    """A link as written in the repository file, as a link on the site (or on GitHub)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target  # absolute URL, anchor on the same page, or site-absolute path
    path, _, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), path))
    on_site = site_path(repo_path)
    if on_site is None:
        return BLOB + repo_path + (f"#{anchor}" if anchor else "")
    relative = posixpath.relpath(on_site, posixpath.dirname(page_src_uri) or ".")
    return relative + (f"#{anchor}" if anchor else "")


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Rewrite the links of a Markdown page (the README or a docs page) for the site."""
    src_uri = page.file.src_uri
    repo_path = repo_source(src_uri)
    return LINK.sub(lambda m: m.group(1) + rewrite_link(m.group(2), repo_path, src_uri) + m.group(3), markdown)


HEADING = re.compile(r'<h[1-6][^>]*\sid="([^"]+)"[^>]*>(.*?)</h[1-6]>', re.DOTALL)


def _toc_items(items) -> list:
    """A page's table-of-contents entries in document order."""
    return [entry for item in items for entry in (item, *_toc_items(item.children))]


def fix_notebook_toc(html: str, page: Page) -> None:
    """Make a notebook page's table of contents use the headings' ids and text as rendered.

    mkdocs-jupyter builds the table of contents from the Markdown source, where a heading with a code
    span (``x + F(x)``) gets another id than nbconvert gives the rendered heading, and loses the code's
    text: its links would lead nowhere. The headings are the same, in the same order.
    """
    headings = [(anchor, re.sub(r"<[^>]+>|¶", "", text).strip()) for anchor, text in HEADING.findall(html)]
    items = _toc_items(page.toc)
    if len(headings) != len(items):
        return
    for item, (anchor, text) in zip(items, headings):
        item.id, item.title = anchor, text


HREF = re.compile(r'(<a\s[^>]*?href=")([^"]+)(")')


def notebook_link(target: str, page: Page, files: Files) -> str:
    """A link of a notebook's Markdown cell (relative to the notebook in the repository) as a URL on the site.

    mkdocs rewrites the links of Markdown pages to the pages' URLs; a notebook's HTML comes from
    mkdocs-jupyter as it is, so a link to ``00_setup_check.ipynb`` would point into the page's own folder.
    """
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target
    path, _, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(repo_source(page.file.src_uri)), path))
    on_site = site_path(repo_path)
    file = files.get_file_from_path(on_site) if on_site else None
    if file is None:
        return BLOB + repo_path + (f"#{anchor}" if anchor else "")
    return file.url_relative_to(page.file) + (f"#{anchor}" if anchor else "")


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Put the "Open in Colab" badge of a lesson notebook at the top of its page; fix its contents' links."""
    src_uri = page.file.src_uri
    if not src_uri.endswith(".ipynb"):
        return html
    fix_notebook_toc(html, page)
    html = HREF.sub(lambda m: m.group(1) + notebook_link(m.group(2), page, files) + m.group(3), html)
    folder = src_uri.split("/", 1)[0]
    if folder not in ("notebooks", "solutions"):
        return html
    badge = COLAB.colab_badge(posixpath.basename(src_uri), folder)
    url = re.search(r"\]\((https://colab[^)]+)\)$", badge).group(1)
    img = "https://colab.research.google.com/assets/colab-badge.svg"
    return f'<p class="colab-badge"><a href="{url}"><img src="{img}" alt="Open In Colab"></a></p>\n' + html
