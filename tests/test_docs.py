"""The docs: the site builds strictly, its tables come from the results files, links resolve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench import tables

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS_ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
ISSUE_REF = re.compile(r"(?i)\bissues?\s+#?\d+\b|(?<![\w&/])#\d+\b")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=MKDOCS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_site_builds_strictly_with_tables_from_the_results(tmp_path):
    start = time.monotonic()
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"mkdocs build --strict: {seconds:.1f} s")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    for page in pages(nav):
        html = tmp_path / "site" / Path(page).with_suffix("") / "index.html"
        if page == "index.md":
            html = tmp_path / "site" / "index.html"
        assert html.is_file(), page
        text = html.read_text()
        for marker in ("<!-- bench-table:", "<!-- cli-help:", "<!-- settings-table"):
            assert marker not in text, f"{page}: a marker was not rendered"
        assert "fonts.googleapis" not in text, f"{page}: the site would fetch web fonts"

    # A figure on the site is the one in its JSON: the U-Net's 512-pixel ORT FP32 median.
    engine = json.loads((ROOT / "bench/results/engine_bench.json").read_text())
    row = next(
        r
        for r in engine["latency"]
        if r["model"] == "unet" and r["size"] == 512 and r["contender"] == "ORT FP32"
    )
    bench_page = (tmp_path / "site/benchmarks/index.html").read_text()
    assert f"{row['median_ms']:.1f}" in bench_page
    # Each command's --help is its parser's.
    cli = (tmp_path / "site/cli/index.html").read_text()
    for command in ("data", "train", "evaluate", "export", "serve", "predict"):
        assert f"usage: fcn {command} " in cli, command
    assert "usage: fcn data demo " in cli
    # The settings table is the settings class's.
    from service.http.settings import Settings

    serving = (tmp_path / "site/serving/index.html").read_text()
    for name in Settings.model_fields:
        assert f"FCN_{name.upper()}" in serving, name


def test_the_strict_configuration_fails_on_a_broken_link_or_anchor(tmp_path, caplog):
    """The site's own validation settings, on a small site built in-process (one import)."""
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    trimmed = {k: v for k, v in config.items() if k not in ("hooks", "nav", "exclude_docs")}
    trimmed["nav"] = [{"Home": "index.md"}, {"Other": "other.md"}]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(trimmed))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.md").write_text("# Other\n\n## A section\n")
    (docs / "unlisted.md").write_text("# Not in the nav\n\n[home](index.md)\n")

    def build_with(index: str) -> None:
        (docs / "index.md").write_text(f"# Home\n\n{index}\n")
        build(load_config(str(tmp_path / "mkdocs.yml"), site_dir=str(tmp_path / "site")))

    build_with("[there](other.md#a-section)")  # a page outside the nav is no error
    for link, named in (("missing.md", "missing.md"), ("other.md#no-such-section", "no-such")):
        caplog.clear()
        with pytest.raises(Abort, match="strict mode"):
            build_with(f"[there]({link})")
        assert named in caplog.text


def test_every_relative_link_in_the_readme_and_docs_points_at_a_file():
    sources = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
    missing = []
    for source in sources:
        for target in LINK.findall(source.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # absolute URLs and same-page anchors
            path = (source.parent / target.split("#")[0]).resolve()
            if not path.exists():
                missing.append(f"{source.relative_to(ROOT)}: {target}")
    assert not missing, missing


def test_every_repository_path_the_docs_name_exists():
    """A file renamed in the code without its docs fails here, not in a reader's hands."""
    named = re.compile(r"`((?:fcn|training|service|bench|tests|docker|deploy|docs)/[\w./-]+)`")
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
        for path in named.findall(page.read_text())
        if not (ROOT / path).exists()
    ]
    assert not missing, missing


def test_readme_is_a_readme():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    text = "\n".join(lines)
    for command in ("make run", "make test", "fcn train", "fcn export", "fcn serve", "fcn predict"):
        assert command in text, command


def test_user_docs_name_no_issue_numbers():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    found = [
        f"{page.relative_to(ROOT)}: {m.group(0)!r}"
        for page in pages
        for m in ISSUE_REF.finditer(page.read_text())
    ]
    rendered = {name: tables.render(name) for name in tables.TABLES}
    found += [
        f"table {n}: {m.group(0)!r}" for n, t in rendered.items() for m in ISSUE_REF.finditer(t)
    ]
    assert not found, found


def test_a_table_shows_what_its_json_holds(tmp_path):
    data = json.loads((tables.RESULTS / "engine_bench.json").read_text())
    data["latency"][0]["median_ms"] = 12345.6
    data["date"] = "2031-01-02T03:04:05"
    data["machine"]["cpu"] = {"model": "Test CPU 9000", "flags": ["fma", "avx2", "avx512f"]}
    (tmp_path / "engine_bench.json").write_text(json.dumps(data))
    text = tables.render("engine-latency", tmp_path)
    assert "12345.6" in text
    assert "2031-01-02 03:04" in text
    assert "Test CPU 9000 (ISA: avx2, avx512f)" in text

    data["machine"] = {"cpu_model": "Other CPU", "isa_flags": {"avx2": True, "amx_bf16": False}}
    (tmp_path / "engine_bench.json").write_text(json.dumps(data))
    assert "Other CPU (ISA: avx2)" in tables.render("engine-latency", tmp_path)

    # The record bench/_cpu.py writes: a top-level "cpu" block, flags mapped to booleans.
    data["cpu"] = {
        "model": "AMD EPYC 7B13",
        "flags": {"avx2": True, "avx_vnni": True, "avx512f": False},
    }
    (tmp_path / "engine_bench.json").write_text(json.dumps(data))
    assert "AMD EPYC 7B13 (ISA: avx2, avx_vnni)" in tables.render("engine-latency", tmp_path)
    del data["cpu"]

    del data["machine"], data["date"]
    (tmp_path / "engine_bench.json").write_text(json.dumps(data))
    text = tables.render("engine-latency", tmp_path)
    assert "CPU not recorded" in text
    assert "date not recorded" in text  # not committed to git either


def test_markers_and_broken_results_fail_loudly(tmp_path):
    with pytest.raises(tables.TableError, match="no bench table 'nope'"):
        tables.expand("text\n<!-- bench-table: nope -->\n")
    (tmp_path / "http_bench.json").write_text(json.dumps({"results": {}}))
    with pytest.raises(tables.TableError, match="http_bench.json"):
        tables.render("http-targets", tmp_path)
    markers = {m for page in DOCS.glob("*.md") for m in tables.MARKER.findall(page.read_text())}
    assert markers <= set(tables.TABLES), markers - set(tables.TABLES)
