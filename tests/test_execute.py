"""The one executor: limits, failures, a bogus scheduler, children that die with their parent."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glacierflow.errors import InputError
from glacierflow.execute import Executor, available_cpus, start_worker_server

DATA = Path(__file__).resolve().parents[1] / "src" / "glacierflow" / "data" / "yahtse"
REF = DATA / "LC80630182016200LGN00_B8_yahtse.TIF"
SEC = DATA / "LC80630182016216LGN00_B8_yahtse.TIF"


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("task 3 failed")
    return x


def _pid(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def test_inline_runs_here_in_order() -> None:
    with Executor() as ex:
        assert ex.kind == "inline"
        assert list(ex.map_unordered(_pid, range(3))) == [os.getpid()] * 3
        assert ex.submit(_square, 7).result() == 49
        assert isinstance(ex.submit(_fail_on_three, 3).exception(), ValueError)


def test_local_workers_run_elsewhere_and_give_every_result() -> None:
    with Executor(2) as ex:
        assert ex.kind == "processes"
        assert sorted(ex.map_unordered(_square, range(20))) == [i * i for i in range(20)]
        pids = set(ex.map_unordered(_pid, range(4)))
    assert os.getpid() not in pids


def test_workers_are_capped_by_the_cpus_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="glacierflow"), Executor(100_000) as ex:
        assert ex.workers == available_cpus()
    assert "workers=100000" in caplog.text
    with pytest.raises(ValueError, match="workers"):
        Executor(0)


def test_a_failing_task_raises_and_stops_the_rest() -> None:
    with pytest.raises(ValueError, match="task 3 failed"), Executor(2) as ex:
        for _ in ex.map_unordered(_fail_on_three, range(50)):
            pass
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(_square, 2)


def _slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def test_meanwhile_runs_here_while_the_workers_run_tasks() -> None:
    import threading

    seen: list[tuple[str, int]] = []

    def note() -> None:
        seen.append((threading.current_thread().name, os.getpid()))

    def fails() -> None:
        raise RuntimeError("dropped")

    with Executor(2) as ex:
        ex.meanwhile(note)
        ex.meanwhile(fails)  # its exception is dropped: work done early changes nothing else
        assert not seen, "nothing runs before tasks are handed out"
        assert sorted(ex.map_unordered(_slow_square, range(8))) == [i * i for i in range(8)]
    assert seen == [("glacierflow-meanwhile", os.getpid())]
    with Executor(2) as ex:
        ex.start()
        ex.meanwhile(note)  # workers started: at once
        ex.shutdown()  # waits for it
        assert len(seen) == 2
    with Executor() as ex:  # inline: nothing is idle, nothing runs
        ex.meanwhile(note)
        list(ex.map_unordered(_square, range(3)))
    assert len(seen) == 2


def test_rowwise_on_workers_is_the_one_call_bit_for_bit() -> None:
    import pickle

    import numpy as np

    from glacierflow.filters import normalized_median_residual
    from glacierflow.uncertainty import displacement_gradient

    rng = np.random.default_rng(3)
    ny, nx = 157, 91
    yy, xx = np.mgrid[0:ny, 0:nx]
    dx = np.sin(xx / 9.0) * np.cos(yy / 13.0) * 4 + rng.normal(0, 0.1, (ny, nx))
    dy = np.hypot(xx - 40, yy - 70) / 30 + rng.normal(0, 0.1, (ny, nx))
    dx[rng.random((ny, nx)) < 0.1] = np.nan  # holes, some at band edges
    dy[60:64, :] = np.nan
    halo = 2  # its 5 x 5 window
    with Executor(2) as ex:
        g = ex.rowwise(displacement_gradient, (dx, dy), halo, step_px=4)
        r = ex.rowwise(normalized_median_residual, (dx,), 1)
    want = displacement_gradient(dx, dy, 4)
    assert pickle.dumps(g) == pickle.dumps(want)  # bit for bit, NaN where NaN
    assert pickle.dumps(r) == pickle.dumps(normalized_median_residual(dx))
    with Executor() as ex:  # inline: the one call
        assert pickle.dumps(ex.rowwise(displacement_gradient, (dx, dy), halo, step_px=4)) == (
            pickle.dumps(want)
        )


def test_the_error_model_on_workers_is_the_one_in_this_process_bit_for_bit() -> None:
    import pickle

    import numpy as np

    from glacierflow.uncertainty import node_errors

    rng = np.random.default_rng(5)
    ny, nx = 203, 117
    yy, xx = np.mgrid[0:ny, 0:nx]
    dx = np.where(xx > 60, 3.0 + yy / 50, 0.0) + rng.normal(0, 0.2, (ny, nx))
    dy = np.hypot(xx - 50, yy - 90) / 40 + rng.normal(0, 0.2, (ny, nx))
    dx[rng.random((ny, nx)) < 0.05] = np.nan
    corr = rng.uniform(0.3, 0.95, (ny, nx))
    stable = xx <= 60
    args = (corr, dx, dy, stable, 32, 4, 0.05, None, "test")
    want = node_errors(*args)
    with Executor(2) as ex:
        got = node_errors(*args, ex.rowwise)
        later = ex.alongside(node_errors, *args)
        assert pickle.dumps(later()) == pickle.dumps(want)
    assert pickle.dumps(got) == pickle.dumps(want)


def _faults_of_repeated_tasks(rounds: int = 12) -> int:
    """Minor page faults of rounds 2.. of a task-like pattern: many 3 MB temporaries, freed."""
    import resource

    import numpy as np

    def one_round() -> None:
        arrays = [np.ones(3 * 2**20 // 8) for _ in range(20)]
        del arrays

    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds - 1):
        one_round()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_workers_reuse_the_memory_their_tasks_free() -> None:
    # A fresh process maps and unmaps (or grows and trims) such temporaries every time, each
    # time faulting their pages in again; a worker keeps them (tens of thousands fewer faults).
    code = "from tests.test_execute import _faults_of_repeated_tasks as f; print(f())"
    root = Path(__file__).resolve().parents[1]
    plain = int(
        subprocess.run(
            [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
        ).stdout
    )
    with Executor(2) as ex:
        in_worker = ex.submit(_faults_of_repeated_tasks).result()
    assert plain > 20_000, "the pattern no longer faults in a plain process: test it otherwise"
    assert in_worker < plain / 10, (in_worker, plain)


_SERVER_SCRIPT = """
import sys
from glacierflow.execute import Executor, start_worker_server

def loaded(_):
    return "glacierflow.plot" in sys.modules

if __name__ == "__main__":
    first = start_worker_server(["glacierflow.plot"])
    again = start_worker_server(["glacierflow.plot"])
    with Executor(2) as ex:
        in_workers = set(ex.map_unordered(loaded, range(4)))
    print(first, again, in_workers == {True}, "glacierflow.plot" in sys.modules)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="forkserver")
def test_a_worker_server_started_early_gives_workers_its_modules(tmp_path) -> None:
    script = tmp_path / "server.py"
    script.write_text(_SERVER_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    # Started once; the workers have the module, this process never imported it.
    assert out.stdout.split() == ["True", "False", "True", "False"], out.stderr


def test_no_worker_server_for_help_or_one_worker() -> None:
    from glacierflow.cli.main import WORKER_MODULES, start_workers_early
    from glacierflow.products import WORKER_MODULES as WRITING
    from glacierflow.track import MATCHING_MODULES

    assert WORKER_MODULES["track"] == WORKER_MODULES["demo"] == MATCHING_MODULES + WRITING
    for args in (
        ["track", "--help"],
        ["-v", "track", "a.tif", "b.tif", "-o", "out", "--workers", "1"],
        ["track", "a.tif", "b.tif", "--workers=1"],
        ["search", "--help"],
        ["demo", "--workers", "1"],
        ["--help"],
        [],
    ):
        assert start_workers_early(args) is False, args
    assert start_worker_server  # the function the command line calls


def test_a_bogus_scheduler_fails_fast_naming_the_address() -> None:
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"tcp://127\.0\.0\.1:9"):
        Executor(scheduler="tcp://127.0.0.1:9", connect_timeout_s=5)
    assert time.perf_counter() - t0 < 10


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of a session, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state not in ("Z", "X"):
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfds are Linux's")
def test_no_child_survives_sigkill_of_a_tiled_track(tmp_path) -> None:
    script = Path(sys.executable).with_name("glacierflow")  # the console script of this venv
    cmd = [
        str(script),
        "track",
        str(REF),
        str(SEC),
        "-o",
        str(tmp_path / "out"),
        "--tile-nodes",
        "256",
        "--workers",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # Wait until the workers run: the main process, the forkserver, the resource tracker
        # and at least one worker.
        deadline = time.monotonic() + 120
        while len(_session(proc.pid)) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.1)
        children = set(_session(proc.pid)) - {proc.pid}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = _session(proc.pid)
        assert not survivors, f"of children {sorted(children)}, {survivors} survived 5 s"
    finally:
        _kill_session(proc.pid)


# ---------------------------------------------------------------------------------------------
# Task windows in shared memory


def _segments(pid: int | None = None) -> list[str]:
    """Shared-memory segments of glacierflow (of the process ``pid``) in /dev/shm."""
    prefix = "glacierflow-" if pid is None else f"glacierflow-{pid}-"
    return sorted(f for f in os.listdir("/dev/shm") if f.startswith(prefix))


def _as_received(a):
    return a, a.flags.writeable, a.flags.c_contiguous


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory in /dev/shm")
def test_shared_arrays_travel_as_their_place_and_are_removed_however_the_block_ends() -> None:
    import pickle

    import numpy as np

    image = np.random.default_rng(1).normal(size=(600, 500)).astype(np.float32)
    valid = image > -1.5
    with Executor(2) as ex:
        with ex.shared([image, valid]) as (img, ok):
            assert _segments(os.getpid())
            window = img[100:300:1, 40:260]  # a task's window: a strided view
            assert len(pickle.dumps(window)) < 500 < window.nbytes
            assert len(pickle.dumps(img * 2)) > image.nbytes  # computed here: its bytes
            got, writable, contiguous = ex.submit(_as_received, window).result()
            # The worker's copy: the same pixels, contiguous and writable as a pickled copy.
            assert np.array_equal(got, image[100:300, 40:260]) and writable and contiguous
            got = ex.submit(_as_received, ok[::-1, ::3]).result()[0]
            assert np.array_equal(got, valid[::-1, ::3])
        assert not _segments(os.getpid())
        assert len(pickle.dumps(window)) > window.nbytes  # after the block: its bytes
        with pytest.raises(RuntimeError, match="stop"), ex.shared([image]):
            assert _segments(os.getpid())
            raise RuntimeError("stop")
        assert not _segments(os.getpid())
    with Executor() as ex, ex.shared([image]) as (same,):  # inline: nothing to share
        assert same is image


def _kill_a_worker_when_matching(pids: list[int]) -> None:
    time.sleep(0.5)
    os.kill(pids[0], signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm is Linux's")
def test_a_killed_worker_leaves_no_shared_memory() -> None:
    import threading
    from concurrent.futures.process import BrokenProcessPool

    import numpy as np

    from glacierflow.matching import MatchSettings, match

    rng = np.random.default_rng(2)
    ref = rng.normal(size=(700, 700)).astype(np.float32)
    with pytest.raises(BrokenProcessPool), Executor(2) as ex:
        pids = sorted(set(ex.map_unordered(_pid, range(4))))
        threading.Thread(target=_kill_a_worker_when_matching, args=(pids,)).start()
        match(ref, np.roll(ref, 3, axis=1), settings=MatchSettings(step_px=2), executor=ex)
    assert not _segments(os.getpid())


def _kill_session(pid: int) -> None:
    """SIGKILL every process left in the session of ``pid`` (a test's clean-up)."""
    for member in _session(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _track_and_stop(tmp_path: Path, how: signal.Signals) -> tuple[int, list[str], str]:
    """Start an in-memory ``glacierflow track`` on 2 workers, send it ``how`` once its task
    windows are in shared memory, wait for every process of it to end; its pid, the segments
    it left, and its stderr."""
    script = Path(sys.executable).with_name("glacierflow")
    cmd = [str(script), "track", str(REF), str(SEC), "-o", str(tmp_path / "out")]
    cmd += ["--step-px", "2", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not _segments(proc.pid):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the windows never went to shared memory"
            time.sleep(0.05)
        # The segment's name shows in /dev/shm a moment before the resource tracker is told of
        # it (SharedMemory registers it after creating it): stop once the windows are being
        # copied in, not inside those microseconds (a known, unclosed window; see the README).
        time.sleep(0.5)
        os.kill(proc.pid, how)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30  # the tracker unlinks once every process has ended
        while (_session(proc.pid) or _segments(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return proc.pid, _segments(proc.pid), proc.stderr.read().decode()
    finally:
        _kill_session(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm and /proc")
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_stopped_track_leaves_no_shared_memory(tmp_path, how) -> None:
    # Ctrl-C: the block around matching removes it; SIGKILL: the resource tracker does, once
    # the workers have died with their parent.
    pid, left, err = _track_and_stop(tmp_path, how)
    assert not left, f"{left} left in /dev/shm by {pid}: {err}"
    assert not _session(pid)
    if how == signal.SIGKILL:
        assert "leaked" not in err and "Traceback" not in err, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm and forkserver")
def test_a_track_on_workers_ends_at_once_with_all_its_output(tmp_path) -> None:
    # The program skips the interpreter's teardown (cli.main._exit_at_once): its output is
    # still whole and its products complete.
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "glacierflow.cli", "track", str(REF), str(SEC), "-o", str(out)]
    cmd += ["--step-px", "16", "--workers", "2", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1].split()[0] == "summary", proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "quicklook.png",
        "summary.json",
        "velocity.nc",
        "velocity.tif",
    ]
