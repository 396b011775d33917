"""Every kind of report page opens in a real browser: headless Chromium from the distribution's packages
(``.ci/run`` installs it; elsewhere ``apt-get install chromium``). Missing Chromium is an error, not a skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_runs import build_runs

from netinvert.report.html import write_index


@pytest.fixture(scope="module")
def runs(tmp_path_factory, zoo, known_family) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("runs"), zoo, known_family)


def test_pages_render_in_chromium(runs, tmp_path):
    """Every kind of page, gathered into one index, opens in a real browser: every image decodes (a probe
    script appended for the test counts them), each run's key text is in the rendered DOM, and the
    screenshot is not blank."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is missing: install it (apt-get install chromium), as .ci/run does"
    index = write_index(list(runs.values()), tmp_path / "index.html")
    html = index.read_text()
    count = html.count("<img ")
    probe = ("<script>addEventListener('load',()=>{const i=[...document.images];"
             "document.title='loaded '+i.filter(x=>x.complete&&x.naturalWidth>0).length+' of '+i.length})</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", probe + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], check=False, capture_output=True, text=True,
                         timeout=180)
    assert count > 40 and f"<title>loaded {count} of {count}</title>" in dom.stdout, (dom.stdout[:300], dom.stderr[-500:])
    for text in ("contact sheet", "PSNR against depth", "counterexample", "none-exists", "unit patterns",
                 "pca variance kept", "node-link", "original beside reconstruction"):
        assert text in dom.stdout, text
    shot = tmp_path / "index.png"
    subprocess.run([*flags, "--window-size=1100,900", f"--screenshot={shot}", index.as_uri()], capture_output=True,
                   timeout=180, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (900, 1100) and pixels.std() > 10 and (pixels < 128).mean() > 0.005, "blank page"
