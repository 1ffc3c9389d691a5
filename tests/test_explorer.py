"""The latent explorer (minivae/explorer.py): the page's contents, and its JavaScript decoder run
in a real headless Chromium against minivae's decoder.

The browser tests need Debian's chromium and chromium-driver and the selenium package (the
"browser" extra); they skip without them, except in CI (CI=true), where they fail.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import need

from minivae import backend as B
from minivae.explorer import write_explorer
from minivae.nn import Conv2D, Dense, Flatten, Reshape, Sequential
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE

IMAGE_SHAPE = (28, 20)  # the Frey faces
PIXELS = 28 * 20
FREY = Path(__file__).resolve().parents[1] / "examples" / "frey.py"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The pages hold no network reference: no script/link/img source or url() outside the page itself
NETWORK = re.compile(
    r"""(src|href)\s*=\s*["']?(https?:|//)|url\(\s*["']?(https?:|//)|@import""", re.IGNORECASE
)


def frey_decoder(activation="relu", hidden=200, seed=0):
    """frey.py's decoder, with random weights and biases (zero biases would leave relu's kinks at
    the origin and the test weaker)."""
    decoder = Sequential([Dense(hidden, activation), Dense(2 * PIXELS)])
    decoder.build((2,))
    rng = np.random.default_rng(seed)
    for layer in decoder.layers:
        layer.bias.data = B.asarray(rng.normal(0, 0.5, layer.bias.shape).astype(np.float32))
    return decoder


def minivae_means(decoder, z):
    """What frey.py displays: the Gaussian likelihood's mean at z, (n, 28, 20) float32."""
    vae = VAE(Sequential([Flatten(), Dense(4)]), decoder, likelihood="gaussian")
    with no_grad():
        return vae.decode(
            Tensor(B.asarray(np.asarray(z, np.float32))), x_shape=IMAGE_SHAPE
        ).mean.numpy()


def page_data(path):
    html = Path(path).read_text()
    return json.loads(
        re.search(
            r'<script id="data" type="application/json">(.*?)</script>', html, re.DOTALL
        ).group(1)
    )


def unpack(b64, dtype):
    return np.frombuffer(base64.b64decode(b64), dtype=np.dtype(dtype).newbyteorder("<"))


def write_page(tmp_path, decoder, n=60, seed=1, **kw):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, (n, 2)).astype(np.float32)
    images = rng.uniform(0, 1, (n, *IMAGE_SHAPE)).astype(np.float32)
    path = tmp_path / "explorer.html"
    size = write_explorer(path, decoder, z, images, image_shape=IMAGE_SHAPE, **kw)
    return path, size, z, images


# --- the page's contents (no browser) -----------------------------------------------------------


@pytest.mark.backends("numpy", "strict")
def test_page_holds_the_decoder_the_points_and_no_network_reference(tmp_path):
    decoder = frey_decoder()
    path, size, z, images = write_page(tmp_path, decoder, color=np.arange(60), color_label="frame")
    assert size == path.stat().st_size
    html = path.read_text()
    assert not NETWORK.search(html)
    data = page_data(path)
    dense1, dense2 = decoder.layers
    assert [layer["activation"] for layer in data["layers"]] == ["relu", "linear"]
    np.testing.assert_array_equal(
        unpack(data["layers"][0]["kernel"], "f4").reshape(2, 200), dense1.kernel.numpy()
    )
    np.testing.assert_array_equal(
        unpack(data["layers"][1]["bias"], "f4"), dense2.bias.numpy()[:PIXELS]
    )  # mean half
    np.testing.assert_array_equal(
        unpack(data["layers"][1]["kernel"], "f4").reshape(200, PIXELS),
        dense2.kernel.numpy()[:, :PIXELS],
    )
    np.testing.assert_array_equal(unpack(data["z"], "f4").reshape(-1, 2), z)
    np.testing.assert_array_equal(
        unpack(data["images"], "u1").reshape(-1, *IMAGE_SHAPE),
        np.round(images * 255).astype(np.uint8),
    )


@pytest.mark.backends("numpy")
@pytest.mark.parametrize(
    "decoder, match",
    [
        (Sequential([Dense(8, "relu"), Dense(2 * PIXELS)]), "unbuilt Dense"),
        (Sequential([Dense(3 * 8 * 8), Reshape((8, 8, 3)), Conv2D(1, 3)]), "layer 1 is Reshape"),
        (Dense(2 * PIXELS), "Sequential"),
    ],
)
def test_refuses_what_the_page_cannot_run(tmp_path, decoder, match):
    if isinstance(decoder, Sequential) and match != "unbuilt Dense":
        decoder.build((2,))
    with pytest.raises(ValueError, match=match):
        write_page(tmp_path, decoder)


@pytest.mark.backends("numpy")
def test_refuses_a_latent_that_is_not_2d_and_a_wrong_output_size(tmp_path):
    decoder = Sequential([Dense(8, "relu"), Dense(2 * PIXELS)])
    decoder.build((3,))
    with pytest.raises(ValueError, match="2-d latent; the decoder takes 3 inputs"):
        write_page(tmp_path, decoder)
    decoder = Sequential([Dense(8, "relu"), Dense(PIXELS)])
    decoder.build((2,))
    with pytest.raises(ValueError, match="must end in a linear Dense of 1120 units, got 560"):
        write_page(tmp_path, decoder)
    with pytest.raises(
        ValueError, match=r"encodings \(N, 2\) and images \(N, \*\(28, 20\)\), got \(3, 2\)"
    ):
        write_explorer(
            tmp_path / "e.html",
            frey_decoder(),
            np.zeros((3, 2)),
            np.zeros((4, *IMAGE_SHAPE)),
            image_shape=IMAGE_SHAPE,
        )
    with pytest.raises(ValueError, match="NaN"):
        write_explorer(
            tmp_path / "e.html",
            frey_decoder(),
            np.full((3, 2), np.nan),
            np.zeros((3, *IMAGE_SHAPE)),
            image_shape=IMAGE_SHAPE,
        )


@pytest.mark.backends("numpy")
def test_frey_writes_the_page_with_its_trained_decoder(data_dir, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(FREY),
            "--limit",
            "100",
            "--epochs",
            "1",
            "--log-px-samples",
            "5",
            "--quiet",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MINIVAE_DATA": data_dir, "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, done.stderr
    data = page_data(tmp_path / "explorer.html")
    saved = np.load(tmp_path / "checkpoint.npz")
    np.testing.assert_array_equal(
        unpack(data["layers"][0]["kernel"], "f4"), saved["model/decoder.layers.0.kernel"].ravel()
    )
    assert len(unpack(data["z"], "f4")) == 2 * 10  # the 10 validation faces of 100
    assert data["colorLabel"] == "video frame" and not NETWORK.search(
        (tmp_path / "explorer.html").read_text()
    )


# --- the page in a headless Chromium -----------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium via the system chromedriver: no download, no network, a fresh profile."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        need("chromium", "apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need("selenium", 'pip install -e ".[browser]"')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(driver, path):
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return typeof window.explorer") == "object"


def console_errors(driver):
    logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return logged + driver.execute_script("return window.explorerErrors")


def canvas_pixels(driver, name):
    """The grey levels drawn on one of the page's image canvases, (28, 20) uint8."""
    grey = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return Array.from({length: d.length / 4}, (_, i) => d[4 * i]);",
        name,
    )
    return np.array(grey, dtype=np.uint8).reshape(IMAGE_SHAPE)


def shown(pixels):
    return np.round(255 * np.asarray(pixels, np.float64)).astype(np.uint8)


@pytest.mark.backends("numpy")
@pytest.mark.parametrize("activation", ["relu", "softplus", "tanh"])
def test_the_pages_decoder_computes_what_minivae_computes(browser, tmp_path, activation):
    decoder = frey_decoder(activation)
    path, size, _, _ = write_page(tmp_path, decoder)
    open_page(browser, path)
    z = np.array(
        [[0, 0], [1.5, -0.5], [-2.25, 3.0], [0.1, 0.2], [6.0, -7.5], [-0.75, -1.25]], np.float32
    )
    page = np.array(
        [
            browser.execute_script("return explorer.decode(arguments[0])", [float(a), float(b)])
            for a, b in z
        ]
    ).reshape(len(z), *IMAGE_SHAPE)
    ours = minivae_means(decoder, z)
    diff = float(np.max(np.abs(page - ours)))
    ms = browser.execute_script("return explorer.timeDecode(500)")
    print(
        f"\nexplorer ({activation}): max |page - minivae| = {diff:.3g} over {z.size // 2} points; "
        f"page {size / 1e6:.3f} MB; one decode {ms:.3f} ms"
    )
    assert diff <= 1e-5
    assert 0 < ms < 1000
    assert console_errors(browser) == []


@pytest.mark.backends("numpy")
def test_the_pointer_decodes_live_and_a_click_shows_image_and_reconstruction(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    decoder = frey_decoder()
    path, _, z, images = write_page(tmp_path, decoder, color=np.arange(60), color_label="frame")
    open_page(browser, path)
    plane = browser.find_element(By.ID, "plane")
    half = plane.size["width"] / 2  # selenium's offsets are from the element's centre
    before = canvas_pixels(browser, "decoded")
    ActionChains(browser).move_to_element_with_offset(
        plane, int(0.5 * half), int(-0.3 * half)
    ).perform()
    time.sleep(0.05)
    pointer = browser.execute_script("return explorer.pointer")
    after = canvas_pixels(browser, "decoded")
    # the pointer's z, mapped back to the canvas, is where the mouse went (CSS size = canvas size)
    width = browser.execute_script("return arguments[0].width", plane)
    at = browser.execute_script("return explorer.toPixel(arguments[0], arguments[1])", *pointer)
    np.testing.assert_allclose(at, [0.75 * width, 0.35 * width], atol=2)  # within 2 canvas pixels
    assert np.any(after != before)  # the image changed as the pointer moved
    expect = shown(minivae_means(decoder, np.array([pointer], np.float32))[0])
    assert np.max(np.abs(after.astype(int) - expect)) <= 1  # the drawn image is the decoded one

    i = 7  # click on point i: its image beside its reconstruction
    px, py = browser.execute_script(
        "return explorer.toPixel(arguments[0], arguments[1])", float(z[i, 0]), float(z[i, 1])
    )
    scale = plane.size["width"] / browser.execute_script("return arguments[0].width", plane)
    ActionChains(browser).move_to_element_with_offset(
        plane, round(px * scale - half), round(py * scale - half)
    ).click().perform()
    assert browser.execute_script("return explorer.selected") == i
    np.testing.assert_array_equal(canvas_pixels(browser, "original"), shown(images[i]))
    recon = shown(minivae_means(decoder, z[i : i + 1])[0])
    assert np.max(np.abs(canvas_pixels(browser, "reconstruction").astype(int) - recon)) <= 1
    assert console_errors(browser) == []


@pytest.mark.backends("numpy")
def test_a_bernoulli_decoder_keeps_every_logit_and_an_unknown_activation_is_refused(tmp_path):
    decoder = Sequential([Dense(16, "softplus"), Dense(PIXELS)])
    decoder.build((2,))
    path, _, _, _ = write_page(
        tmp_path, decoder, likelihood="bernoulli", labels=[0, 1] * 30, class_names=["even", "odd"]
    )
    data = page_data(path)
    np.testing.assert_array_equal(
        unpack(data["layers"][1]["kernel"], "f4").reshape(16, PIXELS),
        decoder.layers[1].kernel.numpy(),
    )
    assert data["classNames"] == ["even", "odd"] and data["labels"][:3] == [0, 1, 0]
    odd = Sequential([Dense(16, lambda x: x * 2), Dense(2 * PIXELS)])
    odd.build((2,))
    with pytest.raises(ValueError, match="decoder layer 0 has activation"):
        write_page(tmp_path, odd)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        write_page(tmp_path, decoder, likelihood="poisson")
