"""The manual: its reference pages are what the code gives now, its examples run, the
README's commands run as written, and the built site's search works without a network."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import REPO, SAMPLES, free_port, run

sys.path.insert(0, str(REPO / "scripts"))
import docs  # noqa: E402  (scripts/docs.py)


def test_the_reference_pages_are_what_the_code_gives_now():
    import difflib

    stale = docs.stale()
    changes = [line for path, text in docs.pages().items()
               if str(path.relative_to(REPO)) in stale
               for line in difflib.unified_diff(path.read_text().splitlines(),
                                                text.splitlines(), str(path), "the code",
                                                lineterm="", n=0)]
    assert stale == [], "run: python scripts/docs.py reference\n" + "\n".join(changes[:40])


def test_a_new_option_makes_the_command_reference_stale(monkeypatch):
    import click

    from camcli.cli import main

    option = click.Option(["--brand-new"], is_flag=True, help="Not in the docs yet.")
    monkeypatch.setattr(main.commands["batch"], "params",
                        [*main.commands["batch"].params, option])
    assert docs.stale() == ["docs/reference/cli.md"]


def test_a_new_record_field_and_a_new_method_make_their_pages_stale(monkeypatch):
    from camcli.compute import methods
    from camcli.records import manifest

    to_json = manifest.Record.to_json
    monkeypatch.setattr(manifest.Record, "to_json",
                        lambda self: to_json(self)[:-1] + ', "input_hash": null}')
    with pytest.raises(SystemExit, match=r"without a meaning in their docstring: \['input_hash'\]"):
        docs.records_page()
    monkeypatch.undo()
    monkeypatch.setattr(methods, "methods_table", lambda: "| a new method |")
    assert "docs/reference/methods.md" in docs.stale()


def test_every_bench_block_in_the_docs_is_written_by_its_script():
    """A ``<!-- bench/X.py: ... -->`` block is the output of ``python bench/X.py --docs``,
    which publishes into that very page (bench/published.py)."""
    found = 0
    for page in (REPO / "docs").rglob("*.md"):
        text = page.read_text()
        for script in re.findall(r"<!-- bench/([a-z_]+\.py): written by", text):
            found += 1
            assert f"<!-- /bench/{script} -->" in text, (page, script)
            source = (REPO / "bench" / script).read_text()
            assert f'published("{script}", "{page.relative_to(REPO).as_posix()}"' in source
    assert found >= 1


def test_the_methods_page_is_the_registry_and_camcli_methods():
    from camcli.compute.methods import methods_table

    page = (REPO / "docs" / "reference" / "methods.md").read_text()
    assert methods_table() in page
    assert run(["methods"]).stdout.strip() == methods_table()


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- readme-commands", 1)[1].split("<!-- /readme-commands -->")[0]
    return [line[2:] for line in block.splitlines() if line.startswith("$ camcli ")]


def test_the_readmes_commands_run_as_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMCLI_DEVICE", "cpu")
    shutil.copytree(SAMPLES, tmp_path / "sample_images")
    commands = _readme_commands()
    assert len(commands) == 5
    for command in commands:
        words = shlex.split(command)[1:]
        args = [match for word in words
                for match in (sorted(glob.glob(word, root_dir=tmp_path)) if "*" in word
                              else [word])]
        result = run(args, cwd=tmp_path)
        assert result.exit_code == 0, f"{command}\n{result.stderr[-2000:]}"
        if words[0] == "cam":
            assert result.stdout == "./cat_cam.jpg: Egyptian_cat (class 285) 81.3%\n"
    assert (tmp_path / "cat_cam.jpg").is_file() and (tmp_path / "heatmaps" / "index.html").is_file()
    scorecard = json.loads((tmp_path / "scorecard" / "evaluate.json").read_text())
    passed = {m["method"]: m["sanity"]["passed"] for m in scorecard["methods"]}
    assert passed == {"gradcam": True, "guidedbackprop": False}  # as the README says


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_python_example_of_the_readme_and_the_home_page_runs(page, monkeypatch):
    text = (REPO / page).read_text()
    [block] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("CAMCLI_DEVICE", "cpu")
    namespace: dict = {}
    exec(compile(block, page, "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert (result.class_name, result.map.shape) == ("Egyptian_cat", (7, 7))


def test_the_python_guides_examples_run(monkeypatch, capsys):
    """Each ```python block of docs/guides/python.md, in order, in one namespace, from the
    repository's root (where sample_images/ is)."""
    page = (REPO / "docs" / "guides" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/guides/python.md", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert printed.startswith("Egyptian_cat 0.81\n(7, 7) float32\n")
    assert "layer 'no_such_layer'" in printed or "no_such_layer" in printed


def _browser_query(url: str, expression: str, until, seconds: float = 20.0):
    """``expression``'s value in headless Chromium at ``url``, read through the DevTools
    protocol until ``until(value)`` holds or ``seconds`` pass."""
    import aiohttp

    port = free_port()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    # Chromium may still write its profile as it dies: the folder goes when it can.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                    f"--remote-debugging-port={port}",
                                    f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as answer:
                        tabs = json.load(answer)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            socket_url = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]

            async def query():
                async with aiohttp.ClientSession() as session, \
                        session.ws_connect(socket_url, max_msg_size=0) as ws:
                    counter = 0

                    async def call(method, **params):
                        nonlocal counter
                        counter += 1
                        await ws.send_json({"id": counter, "method": method, "params": params})
                        while True:
                            message = await ws.receive_json()
                            if message.get("id") == counter:
                                return message

                    await call("Page.navigate", url=url)
                    value, end = None, time.monotonic() + seconds
                    while time.monotonic() < end:
                        answer = await call("Runtime.evaluate", expression=expression,
                                            returnByValue=True)
                        value = answer["result"]["result"].get("value")
                        if until(value):
                            break
                        await asyncio.sleep(0.2)
                    return value

            return asyncio.run(query())
        finally:
            browser.kill()
            browser.wait()


@pytest.mark.chromium
def test_the_built_site_searches_without_a_network(tmp_path):
    """``mkdocs build --strict`` from the working tree, served from a folder on 127.0.0.1:
    the search finds the guide about resuming; nothing is fetched from elsewhere."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (make chromium)")
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                            "--site-dir", str(site)], cwd=REPO, capture_output=True,
                           text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert built.returncode == 0, built.stderr[-3000:]
    pages = [page.read_text() for page in site.rglob("*.html")]
    assert not any("fonts.googleapis.com" in page or "fonts.gstatic.com" in page
                   for page in pages)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?q=resume"
        found = _browser_query(
            url, "Array.from(document.querySelectorAll('.md-search-result__item a'))"
                 ".map(a => a.getAttribute('href')).join(' ')",
            lambda value: bool(value))
    finally:
        server.shutdown()
    assert "guides/dataset-tree.html" in found
