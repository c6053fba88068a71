"""Image session figures, each beside its baseline in the same run.

    python benchmarks/bench_image.py [--creates 40] [--concurrent 64]

- first use of a new image (import + verify + unpack), for an OCI layout and a
  `docker save` archive of a small busybox image built here with umoci/skopeo
- session create p50/p95 on a cached image vs a plain rootfs session, alternating;
  and the image's own part alone (resolve, id-mapped overlay + tmpfs, unmount)
- host memory per idle image session, and N concurrent sessions on one image
  (each with its own upper layer), with a call in each
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_state_dir, emit, summary_ms

from bastion import Session
from bastion.image import ImageCache
from bastion.image import sample as builders
from bastion.image.view import open_view


def meminfo_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=40)
    ap.add_argument("--concurrent", type=int, default=64)
    args = ap.parse_args()
    work = bench_state_dir()
    state = work / "state"
    try:
        rootfs = builders.busybox_rootfs(work / "rootfs")
        layout = builders.oci_layout(work / "layout", "v1", [rootfs], workdir="/opt")
        archive = builders.docker_archive(layout, "v1", work / "image.tar")
        results: dict = {}
        cache = ImageCache(work / "cache-probe")
        t = time.perf_counter()
        first = cache.resolve(f"{layout}:v1")
        results["first_use_layout_s"] = round(time.perf_counter() - t, 3)
        results["unpack_s"] = round(first.unpack_seconds, 3)
        t = time.perf_counter()
        cache.resolve(archive)
        results["first_use_docker_archive_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        cache.resolve(f"{layout}:v1")
        results["cached_resolve_ms"] = round((time.perf_counter() - t) * 1000, 3)

        ref = f"{layout}:v1"
        Session(state_dir=state, image=ref).close()  # warm: unpack into this state dir
        Session(state_dir=state).close()
        plain, image = [], []
        for _ in range(args.creates):
            t = time.perf_counter()
            s = Session(state_dir=state)
            plain.append(time.perf_counter() - t)
            s.close()
            t = time.perf_counter()
            s = Session(state_dir=state, image=ref)
            image.append(time.perf_counter() - t)
            s.close()
        results["create_plain"] = summary_ms(plain)
        results["create_image_cached"] = summary_ms(image)
        results["create_ratio_p50"] = round(results["create_image_cached"]["p50_ms"]
                                            / results["create_plain"]["p50_ms"], 2)

        # what an image adds to a session, alone: resolve (cached), id mapping, overlay
        # and tmpfs mounts, and their removal -- less noisy than two whole creates
        views = []
        sessions_dir = work / "views"
        sessions_dir.mkdir()
        for i in range(args.creates):
            sd = sessions_dir / f"s{i}"
            sd.mkdir()
            t = time.perf_counter()
            view = open_view(ref, state_root=state, session_dir=sd, host_uid=3_900_000 + i,
                             disk=64 << 20)
            view.close()
            views.append(time.perf_counter() - t)
        results["image_view_setup_and_teardown"] = summary_ms(views)

        before = meminfo_available()
        sessions = []
        t = time.perf_counter()
        try:
            for i in range(args.concurrent):
                sessions.append(Session(state_dir=state, image=ref))
            results["concurrent_sessions"] = len(sessions)
            results["concurrent_create_s"] = round(time.perf_counter() - t, 2)
            time.sleep(1.0)
            used = before - meminfo_available()
            results["host_mem_per_idle_image_session_mib"] = round(
                used / len(sessions) / 2**20, 2)
            ok = 0
            for i, s in enumerate(sessions):
                r = s.exec(f"echo {i} > /opt/mine && cat /opt/mine")
                ok += r.exit_code == 0 and r.stdout.strip() == str(i)
            results["concurrent_calls_ok"] = ok
        finally:
            for s in sessions:
                s.close()
        emit("image", results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
