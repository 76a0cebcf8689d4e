"""download_data.sh against a local HTTP server: gunzipped files, skip on rerun, fallback to the next
source (named in the log), corrupt or interrupted downloads never leave a file under its final name."""

import functools
import gzip
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "download_data.sh"
MSMARCO = [
    "msmarco-docs.tsv",
    "msmarco-doctrain-queries.tsv",
    "msmarco-doctrain-qrels.tsv",
    "msmarco-docdev-queries.tsv",
    "msmarco-docdev-qrels.tsv",
    "msmarco-test2019-queries.tsv",
    "msmarco-test2020-queries.tsv",
]
TREC = ["2019qrels-docs.txt", "2020qrels-docs.txt"]
DOWNLOADERS = [d for d in ("curl", "wget") if shutil.which(d)]

pytestmark = pytest.mark.skipif(
    not DOWNLOADERS or not shutil.which("bash"), reason="needs bash and curl or wget"
)


def content(name: str) -> bytes:
    # Incompressible and big enough (~200 kB) for an interrupted transfer to leave a partial .part behind.
    return f"{name}\n".encode() + b"".join(os.urandom(50).hex().encode() + b"\n" for _ in range(2000))


class Handler(SimpleHTTPRequestHandler):
    """Serves the folder; under /slow/ sends half of the file and then stalls."""

    stall = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.startswith("/slow/"):
            return super().do_GET()
        body = (Path(self.directory) / "good" / self.path[len("/slow/") :]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.stall.wait(20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    (root / "good").mkdir()
    (root / "corrupt").mkdir()
    files = {}
    for name in MSMARCO + TREC:
        files[name] = content(name)
        if name in MSMARCO:
            gz = gzip.compress(files[name])
            (root / "good" / f"{name}.gz").write_bytes(gz)
            (root / "corrupt" / f"{name}.gz").write_bytes(gz[: len(gz) // 2])
        else:
            (root / "good" / name).write_bytes(files[name])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    Handler.stall.set()
    httpd.shutdown()


def env_for(tmp_path, downloader, msmarco_bases, trec_bases):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        SEDR_DATA_DIR=str(tmp_path / "data"),
        SEDR_DOWNLOADER=downloader,
        SEDR_MSMARCO_BASES=msmarco_bases,
        SEDR_TREC_BASES=trec_bases,
    )
    return env


def run(tmp_path, downloader, msmarco_bases, trec_bases, *args):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(tmp_path, downloader, msmarco_bases, trec_bases),
    )


def leftovers(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if p.name.endswith((".part", ".tmp")))


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_fetches_gunzips_falls_back_and_skips(server, tmp_path, downloader):
    url, files = server
    res = run(tmp_path, downloader, f"{url}/missing {url}/good", f"{url}/good")
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    for name, body in files.items():
        assert (data / name).read_bytes() == body
        suffix = ".gz" if name in MSMARCO else ""
        assert f"done  {name} (source: {url}/good/{name}{suffix})" in res.stdout
        if name in MSMARCO:  # the original host was tried first
            assert f"fetch {name} <- {url}/missing/{name}.gz" in res.stdout
    assert leftovers(data) == [] and not list(data.glob("*.gz"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    again = run(tmp_path, downloader, f"{url}/missing", f"{url}/missing")  # sources dead: must not matter
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skip  ") == 9 and " <- " not in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == mtimes


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_corrupt_download_is_deleted_and_the_next_source_used(server, tmp_path, downloader):
    url, files = server
    res = run(tmp_path, downloader, f"{url}/corrupt {url}/good", f"{url}/good")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("download is corrupt; deleted") == len(MSMARCO)
    assert (tmp_path / "data" / "msmarco-docs.tsv").read_bytes() == files["msmarco-docs.tsv"]
    assert leftovers(tmp_path / "data") == []


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_no_working_source_fails_without_a_final_file(server, tmp_path, downloader):
    url, _ = server
    res = run(tmp_path, downloader, f"{url}/corrupt {url}/missing", f"{url}/good")
    assert res.returncode != 0
    assert (
        f"error: could not download msmarco-docs.tsv from any of: {url}/corrupt {url}/missing" in res.stderr
    )
    assert not (tmp_path / "data" / "msmarco-docs.tsv").exists()
    assert not (tmp_path / "data" / ".msmarco-docs.tsv.done").exists()


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_killed_download_leaves_no_final_file_and_the_rerun_completes(server, tmp_path, downloader):
    url, files = server
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env_for(tmp_path, downloader, f"{url}/slow", f"{url}/good"),
        start_new_session=True,
    )
    part = tmp_path / "data" / "msmarco-docs.tsv.gz.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started
    proc.wait()
    assert part.exists() and part.stat().st_size > 0
    assert not (tmp_path / "data" / "msmarco-docs.tsv").exists()
    res = run(tmp_path, downloader, f"{url}/good", f"{url}/good")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "data" / "msmarco-docs.tsv").read_bytes() == files["msmarco-docs.tsv"]
    assert leftovers(tmp_path / "data") == []


def test_dry_run_lists_sources_and_downloads_nothing(server, tmp_path):
    url, _ = server
    res = run(tmp_path, DOWNLOADERS[0], f"{url}/a {url}/b", f"{url}/t", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert (
        f"fetch msmarco-docs.tsv from: {url}/a/msmarco-docs.tsv.gz {url}/b/msmarco-docs.tsv.gz" in res.stdout
    )
    assert f"fetch 2020qrels-docs.txt from: {url}/t/2020qrels-docs.txt" in res.stdout
    assert list((tmp_path / "data").iterdir()) == []
