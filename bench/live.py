"""This module provides the Live API benchmark: added latency per frame and memory per session through relay.

    python -m bench.live [--sessions 200] [--frames 40] [--gap-ms 100] [--frame-bytes 3200] [--out bench/results]

It starts the fake Live upstream (tests/fakeupstream/live.py, which echoes a binary frame straight back)
and relay (2 gevent workers, plain ws://), then opens ``--sessions`` sessions at once, first straight to
the fake (the floor), then through relay.  Every session sends ``--frames`` binary frames of
``--frame-bytes`` (100 ms of 16 kHz PCM by default) ``--gap-ms`` apart and times each echo; the added
latency is relay's round trip minus the floor's, at the same percentile.  Memory per session is the growth
of relay's workers' RSS with every session open, over the number of sessions.  The client runs in this
process (asyncio + websockets) on the same cores, so both runs carry the same load besides relay's.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

from websockets.asyncio.client import connect

from bench import peers

SETUP = json.dumps({"setup": {"model": "models/gemini-live-2.5-flash-preview",
                              "generationConfig": {"responseModalities": ["AUDIO"]}}})
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def start_fake(workdir):
    port_file = os.path.join(workdir, "fake-live.port")
    command = [sys.executable, "-m", "tests.fakeupstream.live", "--port", "0", "--port-file", port_file]
    process, log_path = peers.launch("fake-live", command, workdir, cwd=peers.REPO)
    deadline = time.monotonic() + 15
    while not os.path.exists(port_file):
        if time.monotonic() > deadline or process.poll() is not None:
            raise peers.Unavailable("the fake Live upstream did not start")
        time.sleep(0.1)
    with open(port_file) as handle:
        return peers.Service("fake-live", process, int(handle.read()), log_path, workers_are_children=False)


async def one_session(url, key, options, opened, release, timings):
    frame = bytes(range(256)) * (options.frame_bytes // 256) + b"\x00" * (options.frame_bytes % 256)
    async with connect(url, additional_headers={"x-goog-api-key": key}, compression=None, max_size=None) as ws:
        await ws.send(SETUP)
        await ws.recv()
        opened.release()
        await release.wait()
        for _ in range(options.frames):
            sent = time.perf_counter()
            await ws.send(frame)
            await ws.recv()
            timings.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(options.gap_ms / 1000)


async def run_sessions(base_url, key, options, sample_rss):
    """Open every session, sample memory while all are open, then exchange frames; the echo times (ms)."""
    opened, release, timings = asyncio.Semaphore(0), asyncio.Event(), []
    url = base_url.replace("http://", "ws://") + LIVE_PATH
    tasks = [asyncio.create_task(one_session(url, key, options, opened, release, timings))
             for _ in range(options.sessions)]
    for _ in range(options.sessions):
        await asyncio.wait_for(opened.acquire(), 60)
    await asyncio.sleep(1.0)
    rss_open = sample_rss()
    release.set()
    await asyncio.gather(*tasks)
    return timings, rss_open


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(options, workdir):
    fake = start_fake(workdir)
    relay = None
    try:
        floor, _ = asyncio.run(run_sessions(f"http://127.0.0.1:{fake.port}", peers.UPSTREAM_KEY, options, dict))
        relay = peers.start_relay(workdir, fake.port)
        time.sleep(1.0)
        idle = sum(relay.rss_kb().values())
        through, rss_open = asyncio.run(run_sessions(f"http://127.0.0.1:{relay.port}", peers.CLIENT_KEY, options,
                                                     lambda: sum(relay.rss_kb().values())))
    finally:
        for service in (relay, fake):
            if service is not None:
                service.stop()
    result = {"sessions": options.sessions, "frames_per_session": options.frames, "frame_bytes": options.frame_bytes,
              "gap_ms": options.gap_ms, "relay_rss_idle_kb": idle, "relay_rss_open_kb": rss_open,
              "kb_per_session": round((rss_open - idle) / options.sessions, 1)}
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        result[f"floor_{name}_ms"] = round(percentile(floor, fraction), 3)
        result[f"relay_{name}_ms"] = round(percentile(through, fraction), 3)
        result[f"added_{name}_ms"] = round(percentile(through, fraction) - percentile(floor, fraction), 3)
    result["floor_mean_ms"] = round(statistics.fmean(floor), 3)
    result["relay_mean_ms"] = round(statistics.fmean(through), 3)
    return result


def report(result):
    lines = [f"# Live API through relay: {result['sessions']} concurrent sessions, {result['frames_per_session']} "
             f"binary frames of {result['frame_bytes']} B each way per session, {result['gap_ms']} ms apart", "",
             "| echo round trip | floor (fake direct) | through relay | added by relay |", "|---|---|---|---|"]
    for name in ("p50", "p90", "p99"):
        lines.append(f"| {name} | {result[f'floor_{name}_ms']} ms | {result[f'relay_{name}_ms']} ms | "
                     f"{result[f'added_{name}_ms']} ms |")
    lines += ["", f"relay's workers: {result['relay_rss_idle_kb'] / 1024:.1f} MB idle, "
                  f"{result['relay_rss_open_kb'] / 1024:.1f} MB with every session open: "
                  f"**{result['kb_per_session']} KB per session**.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--gap-ms", type=float, default=100.0)
    parser.add_argument("--frame-bytes", type=int, default=3200)
    parser.add_argument("--out", help="write live-<time>.json and .md here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as workdir:
        result = measure(options, workdir)
    text = report(result)
    print(text)
    if options.out:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        with open(os.path.join(options.out, f"live-{stamp}.json"), "w") as handle:
            json.dump(result, handle, indent=2)
        with open(os.path.join(options.out, f"live-{stamp}.md"), "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
