"""The evaluation report in a real headless Chromium (Debian's ``chromium`` package).

Renders a report from small hand-built inputs (``tests/unit/test_evaluate_job.py``), then:

* loads a copy of the page with a probe script appended that, once the page has loaded, writes
  every image's decoded size into the DOM (``--dump-dom``): all plots must be decoded PNGs with
  a real size, and the page must have fetched nothing from the network;
* takes a full-width screenshot of the unmodified page and checks it is not blank;
* renders the report of an empty run and checks the sections say "Not available".
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lantern_batch.evaluate.job import run
from tests.unit.test_evaluate_job import eval_config, make_eval_inputs

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXPECTED_PLOTS = {"confusion", "calibration", "distributions", "rouge", "explanations", "throughput"}

PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map((img) => ({
    plot: img.dataset.plot || null,
    complete: img.complete,
    width: img.naturalWidth,
    height: img.naturalHeight,
    png: img.src.startsWith("data:image/png;base64,"),
  }));
  const resources = performance.getEntriesByType("resource").map((r) => r.name);
  const probe = document.createElement("pre");
  probe.id = "render-probe";
  probe.textContent = "PROBE" + JSON.stringify({images, resources}) + "EBORP";
  document.body.appendChild(probe);
});
</script>
"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make setup installs it where apt-get and root are available)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_inputs")
    make_eval_inputs(root)
    assert run(eval_config(root)) == 0
    return root / "report" / "index.html"


def test_plots_load_as_png_images_in_chromium(report, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    # The virtual time budget lets the load event (and the probe) run before the DOM is dumped.
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()).stdout
    found = re.search(r'<pre id="render-probe">PROBE(.*?)EBORP</pre>', dom, re.S)
    assert found, "the probe did not run: " + dom[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    images = probe["images"]
    assert {img["plot"] for img in images} == EXPECTED_PLOTS
    for img in images:
        assert img["png"] and img["complete"], img
        # matplotlib figures are 4.6-5.6 inches at 110 dpi: hundreds of pixels each way.
        assert img["width"] >= 300 and img["height"] >= 150, img
    assert probe["resources"] == [], "the report must not load external assets"


def test_screenshot_is_a_rendered_page(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2400, 1280, 3)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 200, "a page of plots has many colours, not a blank or single-colour page"
    # The header band is dark blue, the page background light: real layout, not an error page.
    assert image[20, 20].tolist() == [11, 61, 98]
    assert image[:, :].mean() > 180
    # Keep the screenshot where a person can look at it (tests/.. /runs is git-ignored).
    keep = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "report-screenshot.png")


def test_report_without_inputs_renders_not_available(tmp_path):
    assert run(eval_config(tmp_path / "empty")) == 0
    page = tmp_path / "empty" / "report" / "index.html"
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "<img" not in dom
    assert dom.count("Not available") >= 5
    for section in ("agreement", "calibration", "distributions", "explanations", "throughput", "training"):
        assert f'id="{section}"' in dom
    # The first screen's table of models: every row says why it is not available.
    assert 'id="models"' in dom and dom.count('data-model="') == 6
    assert dom.count("not available: ") >= 6
