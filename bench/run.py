"""This module provides the one benchmark command: relay beside the floor and its peers, in one run.

    python -m bench.run [--smoke] [--scenarios unary,sse,hold,transfer] [--out bench/results] [--profile]

It starts the fake upstream, nginx, relay (2 gevent workers) and LiteLLM (2 workers), then runs
each scenario in rounds, rotating the order of the targets every round so machine noise hits
all of them alike, samples the RSS of each target's worker processes, and writes
`<timestamp>.json`, `<timestamp>.md` and `latest.md` under --out. `--smoke` is the CI variant:
floor and relay only, tiny counts, a few seconds, results to a temp dir unless --out is given.
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from bench import driver, peers, report

MODEL = "gemini-2.5-flash"
IMAGE_MODEL = "gemini-2.5-flash-image"
UNARY_REQUEST = json.dumps({
    "contents": [{"role": "user", "parts": [{"text": "Tell me about lighthouses. " * 34}]}],
    "generationConfig": {"temperature": 0.2, "maxOutputTokens": 256},
}).encode()
# hold runs last: a peer that chokes on 2,000 streams must not spoil the other scenarios.
SCENARIOS = ("unary", "sse", "transfer", "hold")

FULL = {"rounds": 3, "unary_seconds": 4, "concurrency": (1, 64), "sse_events": 20, "sse_gap_ms": 20,
        "sse_connections": 4, "sse_streams_each": 4, "hold_streams": 2000, "hold_events": 15,
        "hold_gap_ms": 1000, "transfer_rounds": 2, "transfer_repeat": 3, "upload_mb": 30}
SMOKE = {"rounds": 1, "unary_seconds": 1, "concurrency": (1, 8), "sse_events": 5, "sse_gap_ms": 20,
         "sse_connections": 2, "sse_streams_each": 2, "hold_streams": 50, "hold_events": 3,
         "hold_gap_ms": 300, "transfer_rounds": 1, "transfer_repeat": 1, "upload_mb": 30}


class Target:
    """One way to reach the fake upstream: directly, or through a proxy."""

    scenarios = SCENARIOS
    extra_events = 0  # events a stream has beyond the upstream's

    def __init__(self, name, service, prefix="", headers=None):
        self.name, self.service, self.prefix = name, service, prefix
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def path(self, model, method):
        query = "?alt=sse" if method == "streamGenerateContent" else ""
        return f"{self.prefix}/v1beta/models/{model}:{method}{query}"

    def body(self, model, method):
        return UNARY_REQUEST

    @property
    def port(self):
        return self.service.port


class OpenAITarget(Target):
    """relay's OpenAI door: the same prompt as a chat completion; a stream ends with a closing chunk and [DONE]."""

    scenarios = ("unary", "sse")
    extra_events = 2

    def __init__(self, name, service):
        super().__init__(name, service, headers={"Authorization": f"Bearer {peers.CLIENT_KEY}"})

    def path(self, model, method):
        return "/v1/chat/completions"

    def body(self, model, method):
        return json.dumps({"model": model, "stream": method == "streamGenerateContent", "temperature": 0.2,
                           "max_completion_tokens": 256,
                           "messages": [{"role": "user", "content": "Tell me about lighthouses. " * 34}]}).encode()


class RssSampler:
    """Samples VmRSS of a fixed set of pids every 50 ms while a scenario runs."""

    def __init__(self, service, probe=None):
        self.pids = service.worker_pids()
        self.baseline = {pid: peers.rss_kb(pid) for pid in self.pids}
        self.peak = dict(self.baseline)
        self.probe = probe
        self.peak_total_probe = (sum(self.baseline.values()), None)
        self.task = None

    async def run(self):
        while True:
            sample = {pid: peers.rss_kb(pid) for pid in self.pids}
            for pid, value in sample.items():
                self.peak[pid] = max(self.peak[pid], value)
            total = sum(sample.values())
            if total > self.peak_total_probe[0]:
                self.peak_total_probe = (total, self.probe() if self.probe else None)
            await asyncio.sleep(0.05)

    def __enter__(self):
        self.task = asyncio.ensure_future(self.run())
        return self

    def __exit__(self, *exc_info):
        self.task.cancel()

    def summary(self):
        growth = {pid: self.peak[pid] - self.baseline[pid] for pid in self.pids}
        return {
            "workers": len(self.pids), "baseline_kb": sum(self.baseline.values()),
            "peak_kb": sum(self.peak.values()), "peak_growth_kb_per_worker_max": max(growth.values(), default=0),
            "peak_total_growth_kb": self.peak_total_probe[0] - sum(self.baseline.values()),
            "probe_at_peak": self.peak_total_probe[1],
        }


def ensure_alive(targets, results):
    """A target whose process died (something else on the machine may signal it) is started again."""
    for target in targets:
        dead = target.service
        if dead.alive() or dead.restart is None:
            continue
        log(f"{dead.name} exited (code {dead.process.returncode}); restarting it")
        results.setdefault("restarts", []).append({"service": dead.name, "at": time.strftime("%H:%M:%S"),
                                                   "exit_code": dead.process.returncode})
        try:
            fresh = dead.restart()
        except peers.Unavailable as error:
            log(f"{dead.name} restart failed: {error}")
            continue
        for other in targets:
            if other.service is dead:
                other.service = fresh


def rotated(targets, round_index):
    shift = round_index % len(targets)
    return targets[shift:] + targets[:shift]


def median_of(rounds, key):
    values = [result[key] for result in rounds if result.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(rounds, keys):
    summary = {key: median_of(rounds, key) for key in keys}
    summary["errors"] = sum(result.get("errors", 0) for result in rounds)
    kinds = {}
    for result in rounds:
        for kind, number in result.get("error_kinds", {}).items():
            kinds[kind] = kinds.get(kind, 0) + number
    summary["error_kinds"] = kinds
    return summary


class Profiler:
    """py-spy record on every worker of a service, for `seconds`; collapsed stacks to `folder`."""

    def __init__(self, service, seconds, folder, label):
        self.processes = []
        for pid in service.worker_pids():
            output = os.path.join(folder, f"profile-{label}-{pid}.txt")
            command = ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
                       "--format", "raw", "--output", output, "--nonblocking"]
            self.processes.append((output, subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                            stderr=subprocess.DEVNULL)))

    def wait(self):
        outputs = []
        for output, process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            if os.path.exists(output):
                outputs.append(output)
        return outputs


async def scenario_unary(targets, plan, options, results):
    use_wrk = driver.wrk_available() and not options.no_wrk
    for concurrency in plan["concurrency"]:
        per_target = {target.name: [] for target in targets}
        for round_index in range(plan["rounds"]):
            for target in rotated(targets, round_index):
                ensure_alive(targets, results)
                path = target.path(MODEL, "generateContent")
                profiler = None
                if options.profile and target.name == "relay" and round_index == 0 and concurrency > 1:
                    profiler = Profiler(target.service, max(1, plan["unary_seconds"] - 1), options.workdir, "unary")
                if use_wrk:
                    try:
                        result = await asyncio.to_thread(driver.wrk_load, "127.0.0.1", target.port, path,
                                                         target.headers, target.body(MODEL, "generateContent"),
                                                         concurrency,
                                                         plan["unary_seconds"])
                    except RuntimeError as error:
                        result = {"tool": "wrk", "requests": 0, "rps": None, "p50_ms": None, "p99_ms": None,
                                  "errors": 1, "error_kinds": {str(error)[:120]: 1}}
                else:
                    result = await driver.unary_load("127.0.0.1", target.port, path, target.headers,
                                                     target.body(MODEL, "generateContent"), concurrency,
                                                     plan["unary_seconds"])
                if profiler:
                    results.setdefault("profiles", {})["unary"] = report.summarize_profiles(profiler.wait())
                per_target[target.name].append(result)
                log(f"unary c={concurrency} {target.name}: {result['rps']} req/s p50 {result['p50_ms']} ms "
                    f"p99 {result['p99_ms']} ms errors {result['errors']}")
        results["scenarios"][f"unary_c{concurrency}"] = {
            name: {"rounds": rounds, **summarize(rounds, ("rps", "p50_ms", "p99_ms"))}
            for name, rounds in per_target.items()}


async def scenario_sse(targets, plan, options, results):
    events, gap = plan["sse_events"], plan["sse_gap_ms"]
    model = f"{MODEL}-e{events}-g{gap}"
    pooled = {target.name: {"rounds": [], "ttfe": [], "delay": []} for target in targets}
    for round_index in range(plan["rounds"]):
        for target in rotated(targets, round_index):
            ensure_alive(targets, results)
            # The connections start one event gap apart, spread over it: simultaneous starts would time
            # how stream set-ups queue behind each other on 2 workers, not what a stream's first event waits.
            result = await driver.sse_load("127.0.0.1", target.port, target.path(model, "streamGenerateContent"),
                                           target.headers, target.body(model, "streamGenerateContent"),
                                           plan["sse_connections"], plan["sse_streams_each"],
                                           events + target.extra_events,
                                           stagger_s=gap / 1000 / plan["sse_connections"])
            samples = result.pop("samples")
            pooled[target.name]["ttfe"] += samples["ttfe_ns"]
            pooled[target.name]["delay"] += samples["delay_ns"]
            pooled[target.name]["rounds"].append(result)
            log(f"sse {target.name}: ttfe p50 {result['ttfe_p50_ms']} ms, event delay p50 "
                f"{result['event_delay_p50_ms']} ms p99 {result['event_delay_p99_ms']} ms, "
                f"coalesced {result['coalesced']}, errors {result['errors']}")
    scenario = {}
    for name, data in pooled.items():
        rounds = data["rounds"]
        scenario[name] = {
            "rounds": rounds, "events_per_stream": events, "gap_ms": gap,
            "streams": sum(r["streams"] for r in rounds), "events": sum(r["events"] for r in rounds),
            "coalesced": sum(r["coalesced"] for r in rounds),
            "ttfe_p50_ms": driver.ms(driver.percentile(data["ttfe"], 0.5)),
            "ttfe_p99_ms": driver.ms(driver.percentile(data["ttfe"], 0.99)),
            "event_delay_p50_ms": driver.ms(driver.percentile(data["delay"], 0.5)),
            "event_delay_p99_ms": driver.ms(driver.percentile(data["delay"], 0.99)),
            "gap_p50_ms": median_of(rounds, "gap_p50_ms"),
            **{key: value for key, value in summarize(rounds, ()).items()},
        }
    results["scenarios"]["sse"] = scenario


async def scenario_hold(targets, plan, options, results):
    streams, events, gap = plan["hold_streams"], plan["hold_events"], plan["hold_gap_ms"]
    model = f"{MODEL}-e{events}-g{gap}"
    deadline = events * gap / 1000 + 45
    scenario = {}
    for target in targets:
        ensure_alive(targets, results)
        progress = {}
        sampler = RssSampler(target.service, probe=lambda: progress.get("holding", 0))
        started = time.monotonic()
        with sampler:
            result = await driver.hold_streams("127.0.0.1", target.port, target.path(model, "streamGenerateContent"),
                                               target.headers, UNARY_REQUEST, streams, events, deadline, progress)
        memory = sampler.summary()
        held = memory["probe_at_peak"] or 0
        result.update(memory, seconds=round(time.monotonic() - started, 1), held_at_peak=held,
                      rss_kb_per_stream=round(memory["peak_total_growth_kb"] / streams, 2))
        scenario[target.name] = result
        log(f"hold {target.name}: {result['completed']}/{streams} completed, errors {result['errors']} "
            f"{result['error_kinds']}, RSS +{memory['peak_total_growth_kb']} KB "
            f"({result['rss_kb_per_stream']} KB/stream)")
        await asyncio.sleep(1)
    results["scenarios"]["hold"] = scenario


async def scenario_transfer(targets, plan, options, results):
    upload = (b'{"contents": [{"role": "user", "parts": [{"text": "Describe this image."}, '
              b'{"inlineData": {"mimeType": "image/png", "data": "'
              + b"iVBORw0KGgo" * (plan["upload_mb"] * 1024 * 1024 // 11) + b'"}}]}]}')
    cases = (("image_20mb", IMAGE_MODEL, UNARY_REQUEST), ("upload_30mb", MODEL, upload))
    for label, model, body in cases:
        per_target = {target.name: [] for target in targets}
        for round_index in range(plan["transfer_rounds"]):
            for target in rotated(targets, round_index):
                ensure_alive(targets, results)
                sampler = RssSampler(target.service)
                profiler = None
                if options.profile and target.name == "relay" and round_index == 0:
                    profiler = Profiler(target.service, 3, options.workdir, label)
                with sampler:
                    result = await driver.transfer("127.0.0.1", target.port, target.path(model, "generateContent"),
                                                   target.headers, body, plan["transfer_repeat"], timeout=30.0)
                    await asyncio.sleep(0.1)
                if profiler:
                    results.setdefault("profiles", {})[label] = report.summarize_profiles(profiler.wait())
                result.update(sampler.summary())
                per_target[target.name].append(result)
                log(f"{label} {target.name}: {result['mb_per_s']} MB/s, peak worker growth "
                    f"{result['peak_growth_kb_per_worker_max'] / 1024:.1f} MB, errors {result['errors']}")
        scenario = {}
        for name, rounds in per_target.items():
            scenario[name] = {"rounds": rounds, "bytes": rounds[0]["bytes"],
                              **summarize(rounds, ("mb_per_s", "seconds_p50")),
                              "peak_growth_mb": round(max(r["peak_growth_kb_per_worker_max"] for r in rounds) / 1024, 1)}
        results["scenarios"][label] = scenario


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_targets(plan, options, workdir, results):
    """Starts every service; a peer that fails is recorded as unavailable and the run goes on."""
    services = []
    upstream = peers.start_upstream(workdir, plan["sse_events"], plan["sse_gap_ms"])
    services.append(upstream)
    targets = [Target("floor", upstream)]
    models = [MODEL, IMAGE_MODEL, f"{MODEL}-e{plan['sse_events']}-g{plan['sse_gap_ms']}",
              f"{MODEL}-e{plan['hold_events']}-g{plan['hold_gap_ms']}"]
    wanted = ["relay"] if options.smoke else options.targets
    for name in wanted:
        try:
            if name == "nginx":
                service = peers.start_nginx(workdir, upstream.port)
                targets.append(Target("nginx", service))
            elif name == "stack":
                service = peers.start_stack(workdir, upstream.port)
                targets.append(Target("stack", service))
            elif name == "relay":
                service = peers.start_relay(workdir, upstream.port)
                targets.append(Target("relay", service, headers={"x-goog-api-key": peers.CLIENT_KEY}))
                targets.append(OpenAITarget("relay-openai", service))
            else:
                log("starting LiteLLM (about 30 s with 2 workers)")
                service = peers.start_litellm(workdir, upstream.port, models)
                master = {"x-goog-api-key": peers.LITELLM_MASTER_KEY}
                targets.append(Target("litellm", service, headers=master))
                targets.append(Target("litellm-passthrough", service, prefix="/gemini", headers=master))
            services.append(service)
            results["targets"][name] = "ok"
        except peers.Unavailable as error:
            results["targets"][name] = f"unavailable: {error}"
            log(f"{name} unavailable: {error}")
    return services, targets


async def warm_up(targets):
    for target in targets:
        await driver.unary_load("127.0.0.1", target.port, target.path(MODEL, "generateContent"),
                                target.headers, target.body(MODEL, "generateContent"), 4, 0.5)


async def run_scenarios(targets, plan, options, results):
    await warm_up(targets)
    steps = {"unary": scenario_unary, "sse": scenario_sse, "hold": scenario_hold, "transfer": scenario_transfer}
    for name in sorted(options.scenarios, key=SCENARIOS.index):
        log(f"scenario {name}")
        await steps[name]([target for target in targets if name in target.scenarios], plan, options, results)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, floor and relay only (for CI)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--out", default=None, help="results folder (default bench/results; smoke: a temp dir)")
    parser.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    parser.add_argument("--profile", action="store_true", help="py-spy record relay's workers during unary c=64 "
                                                               "and the transfers")
    parser.add_argument("--targets", default="nginx,stack,relay,litellm",
                        help="comma-separated peers besides the floor (relay includes its OpenAI door, relay-openai)")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio driver even when wrk is installed")
    options = parser.parse_args(argv)
    options.scenarios = [name.strip() for name in options.scenarios.split(",") if name.strip()]
    options.targets = [name.strip() for name in options.targets.split(",") if name.strip()]
    unknown = set(options.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return options


def main(argv=None):
    options = parse_args(argv)
    plan = dict(SMOKE if options.smoke else FULL)
    if options.rounds:
        plan["rounds"] = options.rounds
    out = options.out or (tempfile.mkdtemp(prefix="relay-bench-smoke-") if options.smoke
                          else os.path.join(peers.REPO, "bench", "results"))
    os.makedirs(out, exist_ok=True)
    workdir = peers.make_workdir()
    options.workdir = workdir
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = {"meta": report.machine_meta(plan, options, raise_fd_limit(), driver.wrk_available()),
               "targets": {"floor": "ok"}, "scenarios": {}}
    services = []
    started = time.monotonic()
    try:
        services, targets = start_targets(plan, options, workdir, results)
        asyncio.run(run_scenarios(targets, plan, options, results))
    finally:
        for service in reversed(services):
            service.stop()
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["verdicts"] = report.verdicts(results, plan)
    markdown = report.render(results)
    prefix = ("smoke-" if options.smoke else "") + stamp
    with open(os.path.join(out, f"{prefix}.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.join(out, f"{prefix}.md"), "w") as handle:
        handle.write(markdown)
    if not options.smoke:
        with open(os.path.join(out, "latest.md"), "w") as handle:
            handle.write(markdown)
    print(markdown)
    log(f"results: {os.path.join(out, prefix)}.{{json,md}}; workdir with logs: {workdir}")
    if options.smoke:
        return smoke_status(results)
    return 0


def smoke_status(results):
    """CI's check: relay started and answered every smoke call without an error."""
    if results["targets"].get("relay") != "ok":
        print(f"smoke: relay {results['targets'].get('relay')}", file=sys.stderr)
        return 1
    failures = [name for name, scenario in results["scenarios"].items()
                if isinstance(scenario, dict) and scenario.get("relay", {}).get("errors")]
    if failures:
        print(f"smoke: relay had errors in {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
