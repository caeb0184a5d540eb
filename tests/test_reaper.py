"""The watchdog that ends a killed driver's Ray processes: the named family goes, nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests.conftest import alive, wait_gone
from wartune.tune import reaper

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the watchdog reads /proc (Linux)")

# A stand-in driver: starts a "ray" process with a grandchild (adopted by init once its parent
# goes, like Ray's agents), and an unrelated child; then, once the grandchild is there, the
# watchdog over the "ray" one only.
DRIVER = textwrap.dedent(
    """
    import subprocess, sys, time
    from wartune.tune.reaper import children, start_reaper
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    before = children(__import__("os").getpid())
    ray = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    deadline = time.monotonic() + 60
    while not children(ray.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    keeper = start_reaper(children(__import__("os").getpid()) - before - {other.pid})
    print(other.pid, ray.pid, flush=True)
    time.sleep(60)
    """
)


def test_killed_driver_takes_the_named_family_and_spares_the_rest():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True)
    other_pid, ray_pid = map(int, driver.stdout.readline().split())
    ray = psutil.Process(ray_pid)
    family = [ray, *ray.children(recursive=True)]
    assert len(family) == 2
    # No wait for the watchdog's first look: the kill ends the driver alone, so "ray" and its
    # child stay as they are until the watchdog ends them, whenever it first notes them.
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)
    wait_gone(family, timeout=10)
    other = psutil.Process(other_pid)
    assert alive(other)
    other.kill()


def test_family_follows_descendants_and_start_times():
    me = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = reaper.family({me})
        assert me in found and child.pid in found
        assert reaper.kill_remembered({child.pid: found[child.pid] + 1}) == 0  # a reused pid is left alone
        assert child.poll() is None
        assert reaper.kill_remembered({child.pid: found[child.pid]}) == 1
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
