"""The operator console in a real browser: Debian's headless chromium, driven by Playwright.

The sim camera, lens_node with the embedded lens-tiny model and the console run as processes
(as ``console:=true`` starts them); the page is loaded in two tabs and used as an operator
would: type an instruction, watch the overlay, the rationale as it is written, the history;
then an instruction the node refuses. Skipped when chromium or playwright is missing
(``.ci/run`` installs chromium; Playwright's own browser downloads are never used).

``LENS_CONSOLE_SCREENSHOT=<path>`` also saves the answered page there (the README's picture).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from ros_fixtures import frozen_camera_parameters, node_specs
from std_msgs.msg import String

from lens_ros.launch_description import CONSOLE, LENS_NODE, SIM_CAMERA
from lens_ros.msg import Segmentation

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EMBEDDED = Path(__file__).resolve().parents[2] / "lens_ros" / "weights" / "lens-tiny"
SCENE = {"seed": 11, "t": 1.0, "width": 320, "height": 240}
NODE_LIMIT = 60  # the node refuses longer instructions; the console (1000) passes them on
SERVING = re.compile(r"\[lens-console\] serving (http://\S+?)/")

if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make setup`")
if not (EMBEDDED / "config.json").is_file():
    pytest.skip("embedded lens-tiny weights not built yet", allow_module_level=True)

# Records every text the rationale box shows, with whether it was final (runs in the page).
RECORD_RATIONALE = """() => {
  const box = document.getElementById("rationale");
  window.rationaleSeen = [];
  new MutationObserver(() => window.rationaleSeen.push([box.textContent, box.dataset.final]))
    .observe(box, {childList: true, characterData: true, subtree: true, attributes: true});
}"""
FRAMES_ABOVE = "(n) => Number(document.getElementById('overlay').dataset.frames) > n"


def start_nodes(launcher) -> str:
    """sim camera + lens_node (embedded model) + console; the console's URL."""
    specs = node_specs({"use_sim_camera": "true", "device": "cpu", "console": "true", "console_port": "0"})
    extra = {
        SIM_CAMERA: frozen_camera_parameters(SCENE),
        LENS_NODE: {"max_instruction_length": NODE_LIMIT, "rationale_stream_period_s": 0.005},
    }
    specs = [dataclasses.replace(s, parameters={**s.parameters, **extra.get(s.name, {})}) for s in specs]
    assert CONSOLE in {s.name for s in specs}
    launcher.start(specs)
    log = launcher.log_dir / "nodes_0.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = SERVING.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"the console did not start:\n{launcher.logs()}")


def test_console_page_drives_the_node_and_shows_its_answers(launcher, probe):
    url = start_nodes(launcher)
    rationale = probe.subscribe(String, f"/{LENS_NODE}/rationale", _latched())
    stream = probe.subscribe(String, f"/{LENS_NODE}/rationale_stream")
    segs = probe.subscribe(Segmentation, f"/{LENS_NODE}/segmentation")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 760})
            page, other = context.new_page(), context.new_page()
            for tab in (page, other):
                tab.goto(url + "/")
                sync_api.expect(tab.locator("#connection")).to_have_text("connected", timeout=20_000)
            page.evaluate(RECORD_RATIONALE)

            # An instruction typed on the page reaches the node, which answers it.
            instruction = "the red object"
            page.fill("#instruction", instruction)
            page.press("#instruction", "Enter")
            answered = probe.spin_until(
                lambda: [m for _, m in segs if m.instruction == instruction and not m.tracked], 120, "an answer"
            )[0]
            final = probe.spin_until(lambda: rationale, 20, "~/rationale")[-1][1].data
            assert final == answered.rationale

            # The rationale is written in front of the operator: partial texts, then the final one.
            page.wait_for_function(
                "() => document.getElementById('rationale').dataset.final === 'true'", timeout=20_000
            )
            seen = page.evaluate("window.rationaleSeen")
            partials = list(dict.fromkeys(t for t, is_final in seen if is_final == "false" and t))
            assert len(partials) > 1, f"the page showed {len(partials)} partial rationale(s): {partials}"
            assert all(final.startswith(p) for p in partials), f"partials {partials} do not lead to {final!r}"
            assert page.locator("#rationale").text_content() == final
            assert len(stream) >= len(partials), "the node published the partials the page showed"

            # The overlay shows the node's frames, and keeps updating while it tracks.
            page.wait_for_function(FRAMES_ABOVE, arg=0, timeout=20_000)
            frames = int(page.locator("#overlay").get_attribute("data-frames"))
            page.wait_for_function(FRAMES_ABOVE, arg=frames, timeout=20_000)
            assert page.locator("#overlay").evaluate("img => img.naturalWidth") == SCENE["width"]

            # History and status show the answer, in both tabs.
            status = {0: "ok", 1: "no object", 2: "parse fallback"}[answered.status]
            for tab in (page, other):
                entry = tab.locator("#history li").first
                sync_api.expect(entry).to_have_attribute("data-status", status, timeout=20_000)
                sync_api.expect(entry.locator("strong")).to_have_text(instruction)
                sync_api.expect(entry.locator(".answer")).to_have_text(answered.answer)
                sync_api.expect(tab.locator("#rationale")).to_have_text(final)
            sync_api.expect(other.locator("#current-instruction")).to_have_text(instruction)
            posed = probe.spin_until(
                lambda: [m for _, m in segs if m.objects and m.objects[0].has_pose], 20, "an answer with a pose"
            )[0]  # the sim camera's depth gives one (a frame whose depth came late has none)
            sync_api.expect(page.locator("#pose")).to_contain_text(f" m in {posed.header.frame_id}")
            screenshot = page.screenshot(type="png")
            assert screenshot.startswith(b"\x89PNG")
            if os.environ.get("LENS_CONSOLE_SCREENSHOT"):
                save_small_png(screenshot, Path(os.environ["LENS_CONSOLE_SCREENSHOT"]))

            # An instruction the node refuses: both tabs show the node's own words.
            too_long = "the small blue cube that stands left of the tall green cylinder, near the edge"
            assert NODE_LIMIT < len(too_long) < 1000
            time.sleep(0.3)  # the console's per-tab pace
            page.fill("#instruction", too_long)
            page.press("#instruction", "Enter")
            refused = probe.spin_until(
                lambda: [m for _, m in segs if m.status == Segmentation.STATUS_BAD_INPUT], 30, "the refusal"
            )[0]
            assert f"max_instruction_length {NODE_LIMIT}" in refused.status_text
            for tab in (page, other):  # kept while the frames after it are tracked for the instruction before
                sync_api.expect(tab.locator("#refusal")).to_have_text(refused.status_text, timeout=20_000)
                entry = tab.locator("#history li").first
                sync_api.expect(entry).to_have_attribute("data-status", "bad input")
                sync_api.expect(entry.locator(".answer")).to_have_text(refused.status_text)
        finally:
            browser.close()


def save_small_png(png: bytes, path: Path) -> None:
    """The screenshot with a 256-colour palette (a fraction of the size, for the README)."""
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)


def _latched():
    from lens_ros.messages import latched_qos

    return latched_qos()
