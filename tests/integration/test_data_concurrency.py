"""Many processes preparing one data dir at once (a parallel sweep, DDP ranks) never corrupt it.

Four processes (spawned: they share nothing but the file system) meet at a barrier, then call the
project's own ``ensure_dataset`` on the same data dir together, in five situations: the dir does
not exist; two files are damaged (a flipped byte, a truncated file); a killed writer left a
temporary file and its lock file; a data set with no md5 of its own files (``DatasetSpec.of``
KMNIST: the ``.gz`` md5s check the fetch, and the others check the files by the md5s the fetcher
recorded); and the fetcher itself is killed (SIGKILL) while the four wait.

The source is a local HTTP mirror that serves the official ``.gz`` files (compressed here from the
repo's verified ``data/MNIST/raw``), takes 0.5 s per file, so the others really queue up behind
the fetcher, and records every request. What shows that one fetched while the others waited:

- the mirror's own request log: each file that had to be fetched was served exactly once;
- each process's log records from ``mnist_lit.data``: exactly one says "got <file> from",
  every other one says it found the lock held ("waiting for it") and returned only after the
  fetcher's last write;
- afterwards every file has the official md5 and the dir holds nothing else but the lock file
  and the record of the md5s of the files stored.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torchvision.datasets
from torchvision.datasets.utils import calculate_md5 as md5sum

from mnist_lit.data import MNIST
from mnist_lit.data.download import LOCK_NAME, VERIFIED_NAME, DatasetSpec, ensure_dataset

# spawning 5 processes that import torch and Lightning, then 5 rounds of fetching: ~40 s on 2 cores
pytestmark = pytest.mark.slow

WORKERS = 4
DELAY_S = 0.5  # the mirror's time per file: the fetch outlasts the others' start by far
TIMEOUT_S = 180  # any single wait; a deadlock fails the test instead of hanging it
NAMES = tuple(MNIST.md5)
SCENARIOS = ("fresh", "corrupt", "leftover", "recorded", "killed")  # "killed": the last
#: the files each scenario has to fetch (``killed``: those the killed fetcher had not written)
TO_FETCH = {
    "fresh": NAMES,
    "corrupt": ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "leftover": ("train-labels-idx1-ubyte",),
    "recorded": NAMES,
    "killed": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: the killed fetcher's mirror hangs on this file (it wrote the two before it)
HANG_ON = "t10k-images-idx3-ubyte"
GOT, WAITING, BAD_MD5, REMOVED = "got ", "waiting for it", "fails its md5 check", "removing "


# ----------------------------------------------------------------------------- the processes


def _spec(scenario: str, mirror: str, gz_md5: dict[str, str]) -> DatasetSpec:
    """MNIST with the local mirror as its only source; for ``recorded``, a data set without
    md5s of its own files (KMNIST's spec), whose published ``.gz`` files are the mirror's."""
    if scenario == "recorded":
        new = DatasetSpec.of(torchvision.datasets.KMNIST, name="kmnist")
        assert new.md5 == {}
        return replace(new, gz_md5=gz_md5, mirrors=(mirror,))
    return replace(MNIST, mirrors=(mirror,), wheel=None, local_gz_dir=None)


class _Recorder(logging.Handler):
    """Keeps ``mnist_lit.data``'s records; touches a marker file when this one waits."""

    def __init__(self, marker: Path | None = None) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str]] = []
        self.marker = marker

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.getMessage()))
        if self.marker is not None and WAITING in record.getMessage():
            self.marker.touch()


def _worker(
    index: int, plan: list[tuple[str, str, DatasetSpec]], barriers: list, out_dir: str
) -> None:
    """One job of the sweep: for each scenario, start with the others, then prepare the data."""
    logger = logging.getLogger("mnist_lit.data")
    logger.setLevel(logging.INFO)
    for (scenario, raw_dir, spec), barrier in zip(plan, barriers, strict=True):
        recorder = _Recorder(Path(out_dir) / f"{scenario}-{index}.waiting")
        logger.addHandler(recorder)
        barrier.wait(timeout=TIMEOUT_S)
        started, error = time.time(), None
        try:
            ensure_dataset(spec, raw_dir, timeout_s=TIMEOUT_S)
        except Exception as err:  # reported by the test, with the others' results
            error = f"{type(err).__name__}: {err}"
        result = {"started": started, "ended": time.time(), "error": error}
        logger.removeHandler(recorder)
        result["records"] = recorder.records
        Path(out_dir, f"{scenario}-{index}.json").write_text(json.dumps(result))


def _doomed_fetcher(raw_dir: str, mirror: str) -> None:
    """Takes the lock and fetches from a mirror that hangs on the third file, until killed."""
    ensure_dataset(_spec("killed", mirror, {}), raw_dir, timeout_s=TIMEOUT_S)


# ----------------------------------------------------------------------------- the mirror


@dataclass
class Mirror:
    """A slow local HTTP mirror: ``/<scenario>/<name>.gz`` serves the official file's gzip."""

    port: int
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/"

    def served(self, scenario: str) -> list[str]:
        """Names requested under ``/<scenario>/``, sorted (repeats kept)."""
        prefix = f"/{scenario}/"
        return sorted(p[len(prefix) : -3] for p in self.requests if p.startswith(prefix))

    def wait_for(self, path: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while path not in self.requests:
            assert time.monotonic() < deadline, f"the mirror never got {path}: {self.requests}"
            time.sleep(0.05)


@contextmanager
def _serve(gz_dir: Path) -> Iterator[Mirror]:
    mirror = Mirror(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scenario, _, file = self.path.strip("/").partition("/")
            if self.headers.get("Method") == "HEAD":  # download_url's redirect probe
                self.send_response(200)
                self.end_headers()
                return
            mirror.requests.append(self.path)
            if scenario == "hang" and file == f"{HANG_ON}.gz":
                mirror.release.wait(TIMEOUT_S)  # until the client is killed and the test ends
                return
            time.sleep(DELAY_S)
            body = (gz_dir / file).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # the killed client's broken pipe
    mirror.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        mirror.release.set()
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- the runs


@dataclass
class Run:
    """What one process reported for one scenario."""

    index: int
    started: float
    ended: float
    error: str | None
    records: list[tuple[float, str]]

    def times(self, text: str) -> list[float]:
        return [created for created, message in self.records if text in message]

    def messages(self, text: str) -> list[str]:
        return [message for _, message in self.records if text in message]


@dataclass
class Sweep:
    mirror: Mirror
    dirs: dict[str, Path]
    runs: dict[str, list[Run]]
    doomed_exitcode: int | None


def _arrange(root: Path, official: Path) -> dict[str, Path]:
    """Each scenario's raw dir, in the state the scenario starts from."""
    dirs = {scenario: root / scenario / "MNIST" / "raw" for scenario in SCENARIOS}
    dirs["recorded"] = root / "recorded" / "KMNIST" / "raw"
    # fresh, recorded, killed: not there at all (nor their parents)
    corrupt = dirs["corrupt"]
    corrupt.mkdir(parents=True)
    for name in NAMES:
        shutil.copyfile(official / name, corrupt / name)
    flipped = bytearray((corrupt / "train-images-idx3-ubyte").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # one byte changed: same size, wrong md5
    (corrupt / "train-images-idx3-ubyte").write_bytes(flipped)
    labels = (corrupt / "t10k-labels-idx1-ubyte").read_bytes()
    (corrupt / "t10k-labels-idx1-ubyte").write_bytes(labels[: len(labels) // 2])
    leftover = dirs["leftover"]
    leftover.mkdir(parents=True)
    for name in NAMES:
        if name != "train-labels-idx1-ubyte":
            shutil.copyfile(official / name, leftover / name)
    # what a writer killed before its rename leaves: half a temporary file, and the lock file
    half = (official / "train-labels-idx1-ubyte").read_bytes()[:30_000]
    (leftover / ".train-labels-idx1-ubyte.k1ll3d.tmp").write_bytes(half)
    (leftover / LOCK_NAME).write_text("")
    return dirs


@pytest.fixture(scope="module")
def official_gz(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official files gzipped, as a mirror serves them (from the verified repo copy)."""
    gz_dir = tmp_path_factory.mktemp("mirror")
    for name in NAMES:
        data = (mnist_data_dir / "MNIST" / "raw" / name).read_bytes()
        (gz_dir / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    return gz_dir


@pytest.fixture(scope="module")
def sweep(
    official_gz: Path, mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sweep]:
    """Runs the four scenarios with four processes each (and the killed fetcher) once."""
    root = tmp_path_factory.mktemp("concurrent")
    dirs = _arrange(root, mnist_data_dir / "MNIST" / "raw")
    out_dir = root / "results"
    out_dir.mkdir()
    gz_md5 = {name: md5sum(official_gz / f"{name}.gz") for name in NAMES}
    ctx = multiprocessing.get_context("spawn")
    together = ctx.Barrier(WORKERS)  # reused by all scenarios but the last
    go = ctx.Barrier(WORKERS + 1)  # the last one: the test says when, once the fetcher hangs
    with _serve(official_gz) as mirror:
        plan = [(s, str(dirs[s]), _spec(s, mirror.url(s), gz_md5)) for s in SCENARIOS]
        barriers = [*[together] * (len(SCENARIOS) - 1), go]
        workers = [
            ctx.Process(target=_worker, args=(i, plan, barriers, str(out_dir)))
            for i in range(WORKERS)
        ]
        doomed = ctx.Process(target=_doomed_fetcher, args=(str(dirs["killed"]), mirror.url("hang")))
        processes = [*workers, doomed]
        try:
            for process in processes:
                process.start()
            mirror.wait_for(f"/hang/{HANG_ON}.gz")  # it holds the lock and wrote two files
            go.wait(timeout=TIMEOUT_S)
            _wait_for_files(out_dir, [f"killed-{i}.waiting" for i in range(WORKERS)])
            doomed.kill()  # SIGKILL: no cleanup of any kind runs in it
            doomed.join(TIMEOUT_S)
            for worker in workers:
                worker.join(TIMEOUT_S)
                assert worker.exitcode == 0, f"worker {worker.name} ended with {worker.exitcode}"
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
        runs = {
            s: [Run(i, **_read_json(out_dir / f"{s}-{i}.json")) for i in range(WORKERS)]
            for s in SCENARIOS
        }
        yield Sweep(mirror, dirs, runs, doomed.exitcode)


def _wait_for_files(folder: Path, names: list[str]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not all((folder / name).exists() for name in names):
        assert time.monotonic() < deadline, f"not all of {names} appeared in {folder}"
        time.sleep(0.05)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_process_ends_with_the_official_files(sweep: Sweep, scenario: str) -> None:
    runs = sweep.runs[scenario]
    assert [run.error for run in runs] == [None] * WORKERS
    raw_dir = sweep.dirs[scenario]
    assert {name: md5sum(raw_dir / name) for name in NAMES} == MNIST.md5
    # no temporary file left
    assert sorted(os.listdir(raw_dir)) == sorted([*NAMES, LOCK_NAME, VERIFIED_NAME])
    # the md5 of each file stored is recorded (all four where the fetch began with none)
    recorded = json.loads((raw_dir / VERIFIED_NAME).read_text())
    assert set(TO_FETCH[scenario]) <= set(recorded) <= set(NAMES)
    assert recorded == {name: MNIST.md5[name] for name in recorded}
    if scenario in ("fresh", "recorded", "killed"):
        assert set(recorded) == set(NAMES)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_process_fetches_while_the_others_wait(sweep: Sweep, scenario: str) -> None:
    runs = sweep.runs[scenario]
    expected = sorted(TO_FETCH[scenario])
    # the source's own record: what had to be fetched was fetched once, by whoever
    assert sweep.mirror.served(scenario) == expected
    fetchers = [run for run in runs if run.times(GOT)]
    assert len(fetchers) == 1, [run.messages(GOT) for run in runs]
    fetcher = fetchers[0]
    assert sorted(m.split()[1] for m in fetcher.messages(GOT)) == expected
    last_write = max(fetcher.times(GOT))
    for waiter in (run for run in runs if run is not fetcher):
        waited = waiter.times(WAITING)
        assert waited, f"process {waiter.index} never found the lock held: {waiter.records}"
        # it was blocked while the fetch went on, and returned only after the last file was in
        assert waited[0] < last_write <= waiter.ended
        assert not waiter.messages(BAD_MD5), "a waiter saw a damaged file after the fetch"


def test_damaged_files_are_found_by_md5_and_replaced(sweep: Sweep) -> None:
    (fetcher,) = (run for run in sweep.runs["corrupt"] if run.times(GOT))
    damaged = sorted(Path(m.split()[0]).name for m in fetcher.messages(BAD_MD5))
    assert damaged == sorted(TO_FETCH["corrupt"])


def test_a_killed_writers_leftovers_are_cleared(sweep: Sweep) -> None:
    removed = [m for run in sweep.runs["leftover"] for m in run.messages(REMOVED)]
    assert len(removed) == 1 and ".train-labels-idx1-ubyte.k1ll3d.tmp" in removed[0]


def test_a_killed_fetcher_leaves_no_lock_behind(sweep: Sweep) -> None:
    """The fetcher died holding the lock, after two of its files: the others took over."""
    assert sweep.doomed_exitcode == -9  # SIGKILL
    assert sweep.mirror.served("hang") == sorted([*NAMES[:2], HANG_ON])
    # every survivor found the lock held by the doomed one, before any of them fetched
    assert all(run.times(WAITING) for run in sweep.runs["killed"])
    # the folder its third download was going to was removed once, by the survivor that fetched
    removed = [m for run in sweep.runs["killed"] for m in run.messages(REMOVED)]
    assert len(removed) == 1 and f"{sweep.dirs['killed']}/.download-" in removed[0]


def test_a_new_data_sets_waiters_check_the_files_by_the_recorded_md5s(sweep: Sweep) -> None:
    """No md5 of its own: the waiters took the fetcher's files as verified by its record (a
    waiter that did not see it would have found them unverified and fetched them again)."""
    runs = sweep.runs["recorded"]
    assert sweep.mirror.served("recorded") == sorted(NAMES)
    assert not [m for run in runs for m in run.messages(BAD_MD5)]
    raw_dir = sweep.dirs["recorded"]
    assert json.loads((raw_dir / VERIFIED_NAME).read_text()) == MNIST.md5
