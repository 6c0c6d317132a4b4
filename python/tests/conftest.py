"""Fixtures: the real proxy binary started on a free port with a config
written by the test (killed on teardown), the KServe test server, and the
independent references (Pillow, OpenCV, the `tokenizers` package)."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("TENSORWIRE_BIN", REPO / "target/release/tensorwire"))
if not BIN.is_absolute():
    BIN = REPO / BIN
TESTDATA = REPO / "testdata"
MINILM_JSON = TESTDATA / "tokenizers/all-MiniLM-L6-v2/tokenizer.json"

# The main proxy's pipelines (echo upstream). Names say what they test.
MAIN_CONFIG = """
[limits]
reassembly_timeout_ms = 250

[[pipelines]]
id = 1
name = "resnet50"
kind = "image"
upstream = "echo"
[pipelines.image]
width = 224
height = 224
antialias = true
layout = "NCHW"
dtype = "FP32"
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

[[pipelines]]
id = 2
name = "minilm"
kind = "text"
upstream = "echo"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
max_length = 256
truncation = true
padding = "none"
outputs = ["input_ids", "attention_mask", "token_type_ids"]
dtype = "INT64"

[[pipelines]]
id = 3
name = "cv-nhwc"
kind = "image"
upstream = "echo"
[pipelines.image]
width = 96
height = 64
antialias = false
layout = "NHWC"
dtype = "FP32"
mean = [0.5, 0.4, 0.3]
std = [0.25, 0.2, 0.3]

[[pipelines]]
id = 4
name = "small-u8"
kind = "image"
upstream = "echo"
[pipelines.image]
width = 32
height = 24
antialias = true
dtype = "UINT8"

[[pipelines]]
id = 5
name = "minilm-16"
kind = "text"
upstream = "echo"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
max_length = 16
truncation = true
padding = "max_length"
outputs = ["input_ids", "attention_mask"]
dtype = "INT32"

[[pipelines]]
id = 6
name = "rgb-only"
kind = "image"
upstream = "echo"
[pipelines.image]
width = 8
height = 8
pixel_formats = ["RGB8"]

[[pipelines]]
id = 7
name = "cv-u8"
kind = "image"
upstream = "echo"
[pipelines.image]
width = 50
height = 70
antialias = false
dtype = "UINT8"
"""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def describe_raw(port: int, timeout: float = 0.2) -> Optional[dict]:
    """One DESCRIBE over a plain socket (no tensorwire code): the JSON,
    ``{"retry": True}`` when a revision-3 proxy answers RETRY (this address
    is not validated), or None if no answer / another ERROR."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(struct.pack(">HBBHHQII", 0x5457, 1, 4, 1, 0, 77, 0, 1), ("127.0.0.1", port))
        parts: Dict[int, bytes] = {}
        while True:
            d = s.recv(65536)
            kind, count = d[3], struct.unpack_from(">I", d, 20)[0]
            if kind == 0x82 and struct.unpack_from(">H", d, 24)[0] == 11:
                return {"retry": True}
            if kind != 0x81:
                return None
            _, _, total, off, _ = struct.unpack_from(">HHIII", d, 24)
            parts[off] = d[40:]
            if len(parts) == count:
                return json.loads(b"".join(parts[k] for k in sorted(parts)))
    except (socket.timeout, ConnectionRefusedError):
        return None
    finally:
        s.close()


class Proxy:
    """The real tensorwire binary on 127.0.0.1:<free port> (socket ingress,
    admin off) with ``config`` (TOML) written to ``dir``."""

    def __init__(self, config: str, dir: Path, name: str = "proxy"):
        if not BIN.exists():
            pytest.fail(f"proxy binary {BIN} not found: run `cargo build --release` "
                        "or set TENSORWIRE_BIN", pytrace=False)
        self.port = free_port()
        cfg = dir / f"{name}.toml"
        cfg.write_text(config)
        self.log = dir / f"{name}.log"
        env = dict(os.environ, TENSORWIRE__INGRESS__LISTEN=f"127.0.0.1:{self.port}",
                   TENSORWIRE__ADMIN__LISTEN="", TENSORWIRE__INGRESS__MODE="socket",
                   TENSORWIRE__STATS__LOG_INTERVAL_MS="0")
        self.proc = subprocess.Popen([str(BIN), "run", "--config", str(cfg)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            self.description = describe_raw(self.port)
            if self.description is not None:
                if self.description.get("retry"):  # rev 3: the client validates, then asks
                    import tensorwire
                    with tensorwire.Client("127.0.0.1", self.port, timeout=2.0) as c:
                        self.description = c.describe().raw
                break
            if self.proc.poll() is not None:
                pytest.fail(f"proxy exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() - t0 > 20:
                self.stop()
                pytest.fail("proxy did not answer DESCRIBE within 20 s")
            time.sleep(0.05)

    @property
    def rev3(self) -> bool:
        return "address_validation" in self.description

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def proxy(tmp_path_factory) -> Iterator[Proxy]:
    p = Proxy(MAIN_CONFIG, tmp_path_factory.mktemp("proxy"), "main")
    yield p
    p.stop()


@pytest.fixture
def make_proxy(tmp_path) -> Iterator:
    """Starts proxies with a test's own config; all stopped at teardown."""
    started = []

    def make(config: str, name: str = "proxy") -> Proxy:
        p = Proxy(config, tmp_path, name)
        started.append(p)
        return p
    yield make
    for p in started:
        p.stop()


class KServe:
    """testdata/kserve/models.py (PyPI's kserve, from this venv) on a free port."""

    def __init__(self, dir: Path):
        self.port = free_port(socket.SOCK_STREAM)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = dir / "kserve.log"
        self.proc = subprocess.Popen([sys.executable, str(TESTDATA / "kserve/models.py"), "--http_port",
                                      str(self.port)], cwd=TESTDATA, stdin=subprocess.DEVNULL,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"kserve exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() - t0 > 90:
                self.stop()
                pytest.fail("kserve not ready after 90 s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def kserve(tmp_path_factory) -> Iterator[KServe]:
    pytest.importorskip("kserve", reason="the KServe test server needs `make testenv` (.venv)")
    k = KServe(tmp_path_factory.mktemp("kserve"))
    yield k
    k.stop()


# ------------------------------------------------------------------ references

def pillow_resize(rgb_or_gray: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pillow 12.3 Image.resize(BILINEAR): (h, w, 3) or (h, w) uint8."""
    from PIL import Image
    mode = "L" if rgb_or_gray.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(rgb_or_gray, mode).resize((w, h), Image.BILINEAR))


def cv2_resize(rgb_or_gray: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2
    return cv2.resize(rgb_or_gray, (w, h), interpolation=cv2.INTER_LINEAR)


def as_rgb(img: np.ndarray, fmt: str) -> np.ndarray:
    """The RGB (or gray, 2-D) pixels the spec says the proxy sees."""
    if fmt == "GRAY8":
        return img if img.ndim == 2 else img[..., 0]
    if fmt in ("BGR8", "BGRA8"):
        return np.ascontiguousarray(img[..., 2::-1])
    return np.ascontiguousarray(img[..., :3])


def normalize(resized: np.ndarray, mean, std) -> np.ndarray:
    """(v / 255.0 - mean[c]) / std[c] in float32, in that order; resized is
    (h, w, 3) uint8 (gray replicated before). Returns (h, w, 3) float32."""
    v = resized.astype(np.float32)
    return ((v / np.float32(255.0)) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def image_reference(img: np.ndarray, fmt: str, w: int, h: int, antialias: bool) -> np.ndarray:
    """The resized uint8 (h, w, 3) RGB image, gray replicated."""
    src = as_rgb(img, fmt)
    r = pillow_resize(src, w, h) if antialias else cv2_resize(src, w, h)
    if r.ndim == 2:
        r = np.repeat(r[:, :, None], 3, axis=2)
    return r


def tokenizer(max_length: int, truncation: bool, pad: bool):
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(str(MINILM_JSON))
    t.no_truncation()
    t.no_padding()
    if truncation:
        t.enable_truncation(max_length)
    if pad:
        t.enable_padding(length=max_length)
    return t


def load_image(name: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(TESTDATA / "images" / name))
