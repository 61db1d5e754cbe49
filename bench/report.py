"""This module provides the benchmark's report: machine facts, verdicts against the targets, markdown.

Pure functions over the results dictionary that bench/run.py builds; nothing here measures.
"""

import glob
import os
import platform
import subprocess
import time
from collections import Counter

from bench import peers

IMAGE_MB = 20


def command_output(command):
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (finished.stdout + finished.stderr).strip()
    return text.splitlines()[0] if finished.returncode == 0 and text else None


def package_version(site_glob):
    found = sorted(glob.glob(site_glob))
    if not found:
        return None
    return os.path.basename(found[-1]).split("-")[1].replace(".dist", "")


def machine_meta(plan, options, fd_limit, has_wrk):
    with open("/proc/meminfo") as handle:
        memory_kb = int(handle.readline().split()[1])
    meta = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1), "kernel": platform.release(),
        "python": platform.python_version(), "fd_limit": fd_limit, "smoke": options.smoke,
        "load_tool_unary": "wrk (1 thread)" if has_wrk and not options.no_wrk else "asyncio driver",
        "plan": plan, "scenarios": options.scenarios,
        "versions": {
            "wrk": command_output(["wrk", "-v"]) if has_wrk else None,
            "nginx": command_output(["nginx", "-v"]),
            "gunicorn": command_output(["gunicorn", "--version"]),
            "litellm": package_version(f"{peers.LITELLM_VENV}/lib/python*/site-packages/litellm-*.dist-info"),
            "relay_commit": command_output(["git", "-C", peers.REPO, "rev-parse", "--short", "HEAD"]),
        },
    }
    return meta


def summarize_profiles(paths, top=15):
    """Self and inclusive sample shares per frame from py-spy's collapsed (`raw`) output."""
    self_counts, inclusive, total = Counter(), Counter(), 0
    for path in paths:
        with open(path, errors="replace") as handle:
            for line in handle:
                stack, _, number = line.rstrip("\n").rpartition(" ")
                if not stack or not number.isdigit():
                    continue
                samples = int(number)
                frames = [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
                if not frames:
                    continue
                total += samples
                self_counts[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
    share = lambda counter: [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]
    own = Counter({frame: n for frame, n in inclusive.items() if "(relay/" in frame})
    return {"samples": total, "files": paths, "self_pct": share(self_counts) if total else [],
            "inclusive_pct": share(inclusive) if total else [], "relay_inclusive_pct": share(own) if total else []}


def scenario(results, name):
    return results["scenarios"].get(name, {})


def added(value, floor_value):
    if value is None or floor_value is None:
        return None
    return round(value - floor_value, 3)


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def best_litellm(data, key, higher_is_better=True):
    values = [data[name][key] for name in ("litellm", "litellm-passthrough")
              if name in data and data[name].get(key) is not None]
    if not values:
        return None
    return max(values) if higher_is_better else min(values)


def verdict(goal, measured, passed):
    return {"goal": goal, "measured": measured, "pass": passed}


def verdicts(results, plan):
    """The issue's targets, each checked against numbers from this same run."""
    found = []
    unary_high = scenario(results, f"unary_c{max(plan['concurrency'])}")
    if "relay" in unary_high:
        litellm_rps = best_litellm(unary_high, "rps")
        times = ratio(unary_high["relay"]["rps"], litellm_rps)
        found.append(verdict(f"unary c={max(plan['concurrency'])}: relay req/s >= 10x LiteLLM's best route",
                             f"{times}x" if times else "LiteLLM unavailable", None if times is None else times >= 10))
    unary_one = scenario(results, "unary_c1")
    if "relay" in unary_one:
        extra = added(unary_one["relay"]["p50_ms"], unary_one["floor"]["p50_ms"])
        found.append(verdict("unary c=1: relay added p50 <= 1 ms", f"{extra} ms", extra is not None and extra <= 1))
    sse = scenario(results, "sse")
    if "relay" in sse:
        extra = added(sse["relay"]["ttfe_p50_ms"], sse["floor"]["ttfe_p50_ms"])
        found.append(verdict("SSE: added time-to-first-event <= 1 ms", f"{extra} ms", extra is not None and extra <= 1))
        delay = added(sse["relay"]["event_delay_p50_ms"], sse["floor"]["event_delay_p50_ms"])
        clean = sse["relay"]["coalesced"] == 0 and sse["relay"]["errors"] == 0 and delay is not None and delay <= 1
        found.append(verdict("SSE: events never coalesced or delayed (0 coalesced, added delay p50 <= 1 ms)",
                             f"{sse['relay']['coalesced']} coalesced, +{delay} ms", clean))
    hold = scenario(results, "hold")
    if "relay" in hold:
        relay = hold["relay"]
        found.append(verdict(f"{relay['streams']} concurrent streams: zero errors", f"{relay['errors']} errors",
                             relay["errors"] == 0))
        found.append(verdict("... at <= 50 KB RSS per stream", f"{relay['rss_kb_per_stream']} KB",
                             relay["rss_kb_per_stream"] <= 50))
    image = scenario(results, "image_20mb")
    if "relay" in image:
        growth = image["relay"]["peak_growth_mb"]
        found.append(verdict(f"20 MB image: peak worker RSS growth <= 3x ({3 * IMAGE_MB} MB)", f"{growth} MB",
                             growth <= 3 * IMAGE_MB))
    return found


def framework_rows(results, plan):
    """The missed-or-met latency and throughput goals, measured for the bare framework (the "stack" target)
    beside relay: what the design card's Flask + requests + gunicorn cost before relay adds anything."""
    rows = []
    unary_high = scenario(results, f"unary_c{max(plan['concurrency'])}")
    if "stack" in unary_high and "relay" in unary_high:
        litellm_rps = best_litellm(unary_high, "rps")
        rows.append([f"unary c={max(plan['concurrency'])} req/s (× LiteLLM's best route)",
                     f"{unary_high['stack']['rps']} ({ratio(unary_high['stack']['rps'], litellm_rps)}x)",
                     f"{unary_high['relay']['rps']} ({ratio(unary_high['relay']['rps'], litellm_rps)}x)"])
    unary_one = scenario(results, "unary_c1")
    if "stack" in unary_one and "relay" in unary_one:
        rows.append(["unary c=1 added p50 ms", added(unary_one["stack"]["p50_ms"], unary_one["floor"]["p50_ms"]),
                     added(unary_one["relay"]["p50_ms"], unary_one["floor"]["p50_ms"])])
    sse = scenario(results, "sse")
    if "stack" in sse and "relay" in sse:
        rows.append(["SSE added time-to-first-event p50 ms", added(sse["stack"]["ttfe_p50_ms"], sse["floor"]["ttfe_p50_ms"]),
                     added(sse["relay"]["ttfe_p50_ms"], sse["floor"]["ttfe_p50_ms"])])
    return rows


def cell(value, suffix=""):
    return "–" if value is None else f"{value}{suffix}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def render_unary(results, name):
    data = scenario(results, name)
    floor, relay = data.get("floor", {}), data.get("relay", {})
    rows = []
    for target, row in data.items():
        rows.append([f"**{target}**" if target == "relay" else target, row["rps"], row["p50_ms"], row["p99_ms"],
                     added(row["p50_ms"], floor.get("p50_ms")), added(row["p99_ms"], floor.get("p99_ms")),
                     ratio(row["rps"], floor.get("rps")), ratio(relay.get("rps"), row["rps"]), row["errors"]])
    return table(["target", "req/s", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms", "req/s ÷ floor",
                  "relay ÷ target (req/s)", "errors"], rows)


def render_sse(results):
    data = scenario(results, "sse")
    floor = data.get("floor", {})
    rows = []
    for target, row in data.items():
        rows.append([f"**{target}**" if target == "relay" else target, row["streams"], row["ttfe_p50_ms"],
                     row["ttfe_p99_ms"], added(row["ttfe_p50_ms"], floor.get("ttfe_p50_ms")),
                     row["event_delay_p50_ms"], row["event_delay_p99_ms"],
                     added(row["event_delay_p50_ms"], floor.get("event_delay_p50_ms")),
                     row["gap_p50_ms"], row["coalesced"], row["errors"]])
    return table(["target", "streams", "TTFE p50 ms", "TTFE p99 ms", "added TTFE p50 ms", "event delay p50 ms",
                  "event delay p99 ms", "added event delay p50 ms", "gap p50 ms", "coalesced events", "errors"], rows)


def render_hold(results):
    data = scenario(results, "hold")
    relay = data.get("relay", {})
    rows = []
    for target, row in data.items():
        rows.append([f"**{target}**" if target == "relay" else target, row["streams"], row["completed"],
                     row["errors"], row["workers"], round(row["baseline_kb"] / 1024, 1),
                     round(row["peak_total_growth_kb"] / 1024, 1), row["rss_kb_per_stream"],
                     ratio(relay.get("rss_kb_per_stream"), row["rss_kb_per_stream"]), row["seconds"]])
    return table(["target", "streams", "completed", "errors", "processes sampled", "RSS before MB", "RSS growth MB",
                  "KB per stream", "relay ÷ target (KB/stream)", "seconds"], rows)


def render_transfer(results, name):
    data = scenario(results, name)
    floor, relay = data.get("floor", {}), data.get("relay", {})
    rows = []
    for target, row in data.items():
        rows.append([f"**{target}**" if target == "relay" else target, round(row["bytes"] / 1e6, 1), row["mb_per_s"],
                     row["seconds_p50"], ratio(row["mb_per_s"], floor.get("mb_per_s")),
                     ratio(relay.get("mb_per_s"), row["mb_per_s"]), row["peak_growth_mb"],
                     ratio(row["peak_growth_mb"], row["bytes"] / 2 ** 20), row["errors"]])
    return table(["target", "payload MB", "MB/s", "s per call", "MB/s ÷ floor", "relay ÷ target (MB/s)",
                  "peak RSS growth per worker MB", "growth ÷ payload", "errors"], rows)


def render_profiles(results):
    parts = []
    for label, profile in results.get("profiles", {}).items():
        parts.append(f"### py-spy: relay workers during {label} ({profile['samples']} samples)\n")
        parts.append(table(["self %", "frame"], [[pct, f"`{frame}`"] for frame, pct in profile["self_pct"]]))
        parts.append("")
        parts.append(table(["inclusive %", "frame"],
                           [[pct, f"`{frame}`"] for frame, pct in profile["inclusive_pct"]]))
        parts.append("")
        parts.append(table(["inclusive %", "relay's own frame"],
                           [[pct, f"`{frame}`"] for frame, pct in profile.get("relay_inclusive_pct", [])]))
        parts.append("")
    return "\n".join(parts)


def render(results):
    meta, plan = results["meta"], results["meta"]["plan"]
    out = [f"# relay benchmark — {meta['timestamp']}{' (smoke)' if meta['smoke'] else ''}", "",
           f"{meta['cores']} cores, {meta['memory_gb']} GB, Linux {meta['kernel']}, Python {meta['python']}; "
           f"unary load by {meta['load_tool_unary']}; {plan['rounds']} rounds, target order rotated each round; "
           f"whole run {meta.get('seconds', '?')} s. Versions: "
           + ", ".join(f"{name} {value}" for name, value in meta["versions"].items() if value), "",
           "Targets: " + "; ".join(f"{name}: {state}" for name, state in results["targets"].items()), ""]
    if results.get("restarts"):
        out += ["Restarted during the run (killed from outside): "
                + ", ".join(f"{r['service']} at {r['at']} (exit {r['exit_code']})" for r in results["restarts"]), ""]
    found = results.get("verdicts", [])
    if found:
        out += ["## Targets", "", table(["goal", "measured", "result"],
                                        [[v["goal"], v["measured"], {True: "PASS", False: "**MISS**", None: "n/a"}[v["pass"]]]
                                         for v in found]), ""]
    beside = framework_rows(results, plan)
    if beside:
        out += ["### Relay beside the bare framework", "",
                "`stack` is Flask + a plain requests Session + gunicorn's gevent worker forwarding bytes, with "
                "none of relay (bench/stack_app.py): the design card's framework on its own, in this same run.", "",
                table(["measure", "stack (framework only)", "relay"], beside), ""]
    for concurrency in plan["concurrency"]:
        if f"unary_c{concurrency}" in results["scenarios"]:
            out += [f"## 1. Unary generateContent (~1 KB each way), concurrency {concurrency}", "",
                    render_unary(results, f"unary_c{concurrency}"), ""]
    if "sse" in results["scenarios"]:
        out += [f"## 2. SSE stream, {plan['sse_events']} events {plan['sse_gap_ms']} ms apart "
                f"({plan['sse_connections']} connections)", "",
                "Event delay = arrival time minus the upstream's send stamp inside the event (same clock).", "",
                render_sse(results), ""]
    if "hold" in results["scenarios"]:
        out += [f"## 3. {plan['hold_streams']} concurrent open streams ({plan['hold_events']} events, "
                f"{plan['hold_gap_ms']} ms apart)", "",
                "RSS = sum over the target's worker processes (the process itself for floor); growth is the peak "
                "during the hold minus the value just before it, divided by the streams for KB per stream.", "",
                render_hold(results), ""]
    for name, title in (("image_20mb", "20 MB image response"), ("upload_30mb", "30 MB request body")):
        if name in results["scenarios"]:
            out += [f"## 4. {title}", "", render_transfer(results, name), ""]
    if results.get("profiles"):
        out += ["## Profiles", "", render_profiles(results)]
    return "\n".join(out) + "\n"
