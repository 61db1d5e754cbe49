"""End-to-end tests of the Live API: the real google-genai SDK (``client.aio.live.connect``, over TLS) and raw
WebSocket clients, through real gunicorn (gevent workers), to the fake Live upstream.

One relay serves the module (2 workers, TLS from gunicorn's --certfile/--keyfile, three upstream keys, a
static client key and two keys stored as the CLI stores them); the fake Live upstream is reset per test.
"""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import time
import warnings

import pytest
import websocket
from google import genai
from google.genai import errors, types

from relay.clients.auth import hash_key
from relay.store.sqlite import SqliteStore
from tests.fakeupstream.live import AUDIO_REPLY

from .harness import http, usage_rows, wait_until
from .live_harness import FakeLiveUpstream, TlsRelayServer, make_certificate

pytestmark = pytest.mark.timeout(240)

UPSTREAM_KEYS = ("up-key-live-e2e-AAAA1111", "up-key-live-e2e-BBBB2222", "up-key-live-e2e-CCCC3333")
STATIC_KEY = "client-key-live-static-Zz91"
ALICE_KEY = "sk-relay-alice-live-e2e-Qm3x"  # capped: 2 Live sessions, gemini-live-* only
BOB_KEY = "sk-relay-bob-live-e2e-Rt5y"  # no caps
ADMIN_TOKEN = "admin-token-live-e2e-Kp07"
MODEL = "gemini-live-2.5-flash-preview"
LIVE_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.{rpc}"
TEXT_CONFIG = {"response_modalities": ["TEXT"]}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def fake_live(tmp_path_factory):
    fake = FakeLiveUpstream(tmp_path_factory.mktemp("fake-live")).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory, fake_live, certificate):
    workdir = tmp_path_factory.mktemp("relay-live")
    db_path = workdir / "relay.db"
    store = SqliteStore(str(db_path))
    for name, key, extra in (("alice", ALICE_KEY, {"live_sessions": 2, "models": ["gemini-live-*"]}),
                             ("bob", BOB_KEY, {})):
        store.add_client_key({"name": name, "key_hash": hash_key(key), "created": time.time(), "revoked": False,
                              **extra})
    store.close()
    env = {"RELAY_UPSTREAM_KEYS": ",".join(UPSTREAM_KEYS), "RELAY_API_KEYS": STATIC_KEY, "RELAY_DB": str(db_path),
           "RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "RELAY_COOLDOWN_SECONDS": "1"}
    server = TlsRelayServer(workdir, fake_live.url, *certificate, env=env, workers=2).start()
    server.db_path = db_path
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def trust_relay(monkeypatch, certificate, fake_live):
    """The SDK reads SSL_CERT_FILE when a client is built; every test starts with an empty fake."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    fake_live.reset()
    warnings.filterwarnings("ignore", category=errors.ExperimentalWarning)


def sdk(relay, key, api_version=None, base_url=None):
    options = types.HttpOptions(base_url=base_url or relay.url, api_version=api_version, timeout=30_000)
    return genai.Client(api_key=key, http_options=options)


async def text_turn(session, text):
    """Send one user turn and collect the answer: (text, the usageMetadata of the turn)."""
    await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text=text)]),
                                      turn_complete=True)
    answer, usage = [], None
    async for message in session.receive():
        if message.server_content and message.server_content.model_turn:
            answer.extend(part.text or "" for part in message.server_content.model_turn.parts)
        usage = message.usage_metadata or usage
    return "".join(answer), usage


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def raw_socket(relay, certificate, path=None, headers=(), query=""):
    """A websocket-client connection to relay (frame types visible, nothing added by an SDK)."""
    path = path or LIVE_PATH.format(version="v1beta", rpc="BidiGenerateContent")
    return websocket.create_connection(f"wss://127.0.0.1:{relay.port}{path}{query}", header=list(headers), timeout=15,
                                       sslopt={"ca_certs": str(certificate[0])}, http_no_proxy=["*"])


def upgrade_status(relay, certificate, path, key):
    """The status code relay answers a bare upgrade request for ``path`` with (no redirect is followed)."""
    context = ssl.create_default_context(cafile=str(certificate[0]))
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                        f"x-goog-api-key: {key}\r\n\r\n".encode())
            return int(tls.recv(1024).split(b" ")[1])


def setup_message(model=MODEL):
    return json.dumps({"setup": {"model": f"models/{model}", "generationConfig": {"responseModalities": ["TEXT"]}}})


def close_of(ws):
    """(code, reason) of the close the peer sent, reading until it comes."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


def live_lines(relay, since, count=1):
    """The Live access-log lines written after the first ``since`` lines, once there are ``count`` of them."""
    def new_lines():
        lines = [line for line in relay.access_log()[since:] if line.get("live")]
        return lines if len(lines) >= count else None
    return wait_until(new_lines) or []


def no_secret_leaks(relay, fake_sessions):
    """No upstream key in relay's output or any upstream URL; no client key ever reaches the upstream."""
    output = relay.output_text()
    assert "Traceback" not in output
    for key in UPSTREAM_KEYS:
        assert key not in output
    for session in fake_sessions:
        assert session["key"] in UPSTREAM_KEYS
        for secret in (*UPSTREAM_KEYS, STATIC_KEY, ALICE_KEY, BOB_KEY, "auth_tokens/"):
            assert secret not in session["path"] + session["query"]
        for name, value in session["headers"]:
            for secret in (STATIC_KEY, ALICE_KEY, BOB_KEY, "auth_tokens/"):
                assert secret not in value, name


# -- sessions -------------------------------------------------------------------------------------


def test_text_session_relays_turns_and_writes_one_usage_row(relay, fake_live):
    logged = len(relay.access_log())
    async def converse():
        async with sdk(relay, BOB_KEY).aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            first = await text_turn(session, "hello there")
            second = await text_turn(session, "and again please")
            return first, second

    (first_text, first_usage), (second_text, second_usage) = run(converse())
    assert first_text == "echo: hello there" and second_text == "echo: and again please"
    assert (first_usage.prompt_token_count, second_usage.prompt_token_count) == (2, 5)  # re-counted context
    [upstream] = fake_live.wait_for_sessions(1, closed=True)
    assert upstream["path"] == LIVE_PATH.format(version="v1", rpc="BidiGenerateContent")
    assert upstream["setup"]["setup"]["model"] == f"models/{MODEL}"
    assert [message["kind"] for message in upstream["messages"]] == ["text", "text", "text"]
    [line] = live_lines(relay, logged)
    assert (line["status"], line["end"], line["established"], line["turns"]) == (200, "client", True, 2)
    assert line["frames"] == {"to_upstream": 2, "to_client": 5}
    row = usage_rows(relay.db_path, [line["request_id"]])[line["request_id"]]
    assert (row["client"], row["requested_model"], row["route"]) == ("bob", MODEL, "bidiGenerateContent")
    assert (row["prompt_tokens"], row["candidates_tokens"], row["total_tokens"]) == (7, 10, 17)
    assert row["key_id"] and row["latency_ms"] > 0
    no_secret_leaks(relay, [upstream])



def test_audio_session_streams_pcm_both_ways(relay, fake_live):
    logged = len(relay.access_log())
    chunk = bytes(range(256)) * 12  # 3 KB of 16 kHz PCM per message, as a microphone would send it

    async def converse():
        async with sdk(relay, BOB_KEY).aio.live.connect(model=MODEL, config={"response_modalities": ["AUDIO"]}) as session:
            for _ in range(5):
                await session.send_realtime_input(audio=types.Blob(data=chunk, mime_type="audio/pcm;rate=16000"))
            await session.send_realtime_input(audio_stream_end=True)
            audio, usage = b"", None
            async for message in session.receive():
                audio += message.data or b""
                usage = message.usage_metadata or usage
            return audio, usage

    audio, usage = run(converse())
    assert audio == AUDIO_REPLY * 2
    assert usage.prompt_tokens_details[0].modality == types.MediaModality.AUDIO
    [upstream] = fake_live.wait_for_sessions(1, closed=True)
    sent = [json.loads(message["text"]) for message in upstream["messages"][1:]]
    assert [base64.urlsafe_b64decode(message["realtime_input"]["audio"]["data"]) for message in sent[:5]] == [chunk] * 5
    assert sent[5] == {"realtime_input": {"audioStreamEnd": True}}  # passed on exactly as the SDK spelt it
    [line] = live_lines(relay, logged)
    assert line["turns"] == 1 and line["usage"]["candidatesTokenCount"] == 50
    assert line["frames"] == {"to_upstream": 6, "to_client": 4}


def test_frames_keep_their_type_both_ways(relay, fake_live, certificate):
    """Google's JSON comes in binary frames; a caller's binary frame stays binary; text stays text."""
    ws = raw_socket(relay, certificate, headers=[f"x-goog-api-key: {BOB_KEY}"])
    ws.send(setup_message())
    opcode, frame = ws.recv_data_frame()
    assert (opcode, json.loads(frame.data)) == (websocket.ABNF.OPCODE_BINARY, {"setupComplete": {}})
    blob = bytes(range(256)) * 40
    ws.send_binary(blob)
    assert ws.recv_data_frame()[0] == websocket.ABNF.OPCODE_BINARY
    ws.close()
    fake_live.script({"server_frames": "text", "times": 1})
    ws = raw_socket(relay, certificate, headers=[f"x-goog-api-key: {BOB_KEY}"])
    ws.send(setup_message())
    assert ws.recv_data_frame()[0] == websocket.ABNF.OPCODE_TEXT
    ws.close()
    sessions = fake_live.wait_for_sessions(2, closed=True)
    assert [(message["kind"], message["size"]) for message in sessions[0]["messages"]][1:] == [("binary", len(blob))]


def test_double_slash_path_v1_prefix_query_key_and_bearer(relay, fake_live, certificate):
    """Both SDKs ask for //ws/... (a base URL ending in /); clients with a /v1 base too; the JS SDK sends ?key=."""
    for base_url in (relay.url + "/", relay.url + "/v1/"):
        async def converse():
            async with sdk(relay, BOB_KEY, base_url=base_url).aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
                return await text_turn(session, "slashes")
        assert run(converse())[0] == "echo: slashes"
    for path in ("//ws/", "/v1//ws/"):  # served, not redirected: browsers do not follow a redirected upgrade
        assert upgrade_status(relay, certificate, path + LIVE_PATH.format(version="v1", rpc="BidiGenerateContent")[4:],
                              BOB_KEY) == 101
    ws = raw_socket(relay, certificate, path="/" + LIVE_PATH.format(version="v1alpha", rpc="BidiGenerateContent"),
                    query=f"?key={BOB_KEY}")
    ws.send(setup_message())
    assert json.loads(ws.recv()) == {"setupComplete": {}}
    ws.close()
    ws = raw_socket(relay, certificate, headers=[f"Authorization: Bearer {BOB_KEY}"])
    ws.send(setup_message())
    assert json.loads(ws.recv()) == {"setupComplete": {}}
    ws.close()
    sessions = fake_live.wait_for_sessions(4, closed=True)
    assert sessions[2]["path"].endswith("v1alpha.GenerativeService.BidiGenerateContent") and sessions[2]["query"] == ""
    assert not any(name.lower() == "authorization" for name, _ in sessions[3]["headers"])
    no_secret_leaks(relay, sessions)


def test_go_away_and_upstream_close_reach_the_caller(relay, fake_live):
    logged = len(relay.access_log())
    async def converse():
        async with sdk(relay, BOB_KEY).aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="goaway")]),
                                              turn_complete=True)
            messages = [message async for message in session.receive()]
            assert messages[0].go_away.time_left == "5s"
            await text_turn(session, "close:1011:Internal-error-occurred.")
            [message async for message in session.receive()]  # the close, as the SDK reports it

    with pytest.raises(errors.APIError) as raised:
        run(converse())
    assert (raised.value.code, raised.value.details) == (1011, "Internal-error-occurred.")
    [line] = live_lines(relay, logged)
    assert line["end"] == "upstream"
    assert (line["close_code"], line["status"]) == (1011, 500)


def test_client_disconnect_closes_the_upstream_within_a_second(relay, fake_live, certificate):
    async def converse():
        async with sdk(relay, BOB_KEY).aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            await text_turn(session, "short")
        return time.time()

    left = run(converse())
    [upstream] = fake_live.wait_for_sessions(1, closed=True)
    assert upstream["closed_at"] - left < 1.0 and upstream["close_code"] == 1000
    # Without a close frame: the caller's TCP connection just ends.
    ws = raw_socket(relay, certificate, headers=[f"x-goog-api-key: {BOB_KEY}"])
    ws.send(setup_message())
    ws.recv()
    ws.sock.close()
    left = time.time()
    upstream = fake_live.wait_for_sessions(2, closed=True)[1]
    assert upstream["closed_at"] - left < 1.0 and upstream["close_code"] == 1001


# -- ephemeral tokens -----------------------------------------------------------------------------


def mint(relay, key, **config):
    client = sdk(relay, key, api_version="v1alpha")
    return client.auth_tokens.create(config=types.CreateAuthTokenConfig(**config))


def test_a_token_minted_through_relay_opens_a_constrained_session_once(relay, fake_live):
    token = mint(relay, ALICE_KEY, uses=1, live_connect_constraints=types.LiveConnectConstraints(
        model=MODEL, config=types.LiveConnectConfig(response_modalities=["TEXT"], temperature=0.2)))
    assert token.name.startswith("auth_tokens/")
    logged = len(relay.access_log())

    async def converse():
        client = sdk(relay, token.name, api_version="v1alpha")
        # The browser's config differs: the token's locked setup wins.
        async with client.aio.live.connect(model="gemini-live-other", config={"temperature": 1.5}) as session:
            return await text_turn(session, "with a token")

    assert run(converse())[0] == "echo: with a token"
    [upstream] = fake_live.wait_for_sessions(1, closed=True)
    assert upstream["path"].endswith("v1alpha.GenerativeService.BidiGenerateContent")
    setup = upstream["setup"]["setup"]
    assert setup["model"] == f"models/{MODEL}" and setup["generationConfig"]["temperature"] == 0.2
    [line] = live_lines(relay, logged)
    assert line["token"] and line["established"]
    assert line["client"] == "alice"  # usage is charged to the key that minted the token
    row = usage_rows(relay.db_path, [line["request_id"]])[line["request_id"]]
    assert row["client"] == "alice" and row["total_tokens"] > 0
    with pytest.raises(errors.APIError) as raised:
        run(converse())
    assert raised.value.code == 1008 and "used up" in raised.value.details
    assert len(fake_live.sessions()) == 1  # the refused session never reached the upstream
    no_secret_leaks(relay, fake_live.sessions())
    assert token.name.removeprefix("auth_tokens/") not in relay.output_text()


def test_a_field_mask_locks_only_the_listed_fields(relay, fake_live):
    token = mint(relay, BOB_KEY, uses=0, lock_additional_fields=[], live_connect_constraints=types.LiveConnectConstraints(
        config=types.LiveConnectConfig(response_modalities=["TEXT"], temperature=0.3)))

    async def converse():
        client = sdk(relay, token.name, api_version="v1alpha")
        async with client.aio.live.connect(model=MODEL, config={"temperature": 1.5, "top_k": 7}) as session:
            return await text_turn(session, "masked")

    for _ in range(2):  # uses=0: unlimited
        assert run(converse())[0] == "echo: masked"
    setup = fake_live.wait_for_sessions(2)[1]["setup"]["setup"]
    assert setup["model"] == f"models/{MODEL}"
    assert (setup["generationConfig"]["temperature"], setup["generationConfig"]["topK"]) == (0.3, 7)


@pytest.mark.parametrize("how", ["header", "query", "forged", "plain-endpoint"])
def test_tokens_are_refused_where_they_do_not_belong(relay, fake_live, certificate, how):
    token = mint(relay, BOB_KEY, uses=5).name
    constrained = LIVE_PATH.format(version="v1alpha", rpc="BidiGenerateContentConstrained")
    headers, query, path = [], "", constrained
    if how == "header":
        headers = [f"Authorization: Token {token}"]
    elif how == "query":
        query = f"?access_token={token}"
    elif how == "forged":
        headers = [f"Authorization: Token auth_tokens/{'x' * 43}"]
    else:
        headers, path = [f"x-goog-api-key: {token}"], LIVE_PATH.format(version="v1alpha", rpc="BidiGenerateContent")
    ws = raw_socket(relay, certificate, path=path, headers=headers, query=query)
    ws.send(setup_message())
    if how in ("header", "query"):
        assert json.loads(ws.recv()) == {"setupComplete": {}}
        ws.close()
        assert fake_live.wait_for_sessions(1)[0]["key"] in UPSTREAM_KEYS
        return
    code, reason = close_of(ws)
    assert code == 1008 and ("not valid" in reason if how == "forged" else "Constrained" in reason)
    assert fake_live.sessions() == []


def test_token_requests_are_checked(relay):
    session = http()
    session.verify = str(relay.cert)
    url = relay.url + "/v1alpha/auth_tokens"
    bad = session.post(url, json={"uses": -1, "expireTime": "tomorrow"}, headers={"x-goog-api-key": BOB_KEY})
    assert bad.status_code == 400
    fields = {violation["field"] for violation in bad.json()["error"]["details"][0]["fieldViolations"]}
    assert fields == {"uses", "expireTime"}
    assert session.post(url, headers={"x-goog-api-key": "nope"}).status_code == 401
    outside = session.post(url, json={"bidiGenerateContentSetup": {"model": "models/gemini-2.5-pro"}},
                           headers={"x-goog-api-key": ALICE_KEY})
    assert outside.status_code == 403  # alice may not use that model, so may not mint tokens for it
    unlocked = session.post(url, json={"uses": 3}, headers={"x-goog-api-key": ALICE_KEY})
    assert unlocked.status_code == 200  # its sessions are held to alice's allowlist when they start
    ok = session.post(url, headers={"x-goog-api-key": BOB_KEY})  # no body: Google's defaults
    assert ok.status_code == 200 and ok.json()["uses"] == 1 and ok.json()["name"].startswith("auth_tokens/")


# -- refusals, failover, limits -------------------------------------------------------------------


@pytest.mark.parametrize("first, key, expected", [
    ("hello", BOB_KEY, (1007, "must be JSON")),
    (json.dumps({"clientContent": {"turns": []}}), BOB_KEY, (1007, "must be a setup message")),
    (json.dumps({"setup": {"generationConfig": {}}}), BOB_KEY, (1007, "setup.model is required")),
    (setup_message("gemini-2.5-pro"), ALICE_KEY, (1008, "may not use model")),
    (setup_message(), "sk-relay-forged-key", (1008, "API key not valid")),
])
def test_a_bad_start_is_closed_with_a_reason_and_nothing_goes_upstream(relay, fake_live, certificate, first, key,
                                                                       expected):
    ws = raw_socket(relay, certificate, headers=[f"x-goog-api-key: {key}"])
    ws.send(first)
    code, reason = close_of(ws)
    assert code == expected[0] and expected[1] in reason, reason
    time.sleep(0.2)
    assert fake_live.sessions() == []


def test_the_sdk_sees_a_refusal_as_an_api_error(relay, fake_live):
    async def connect():
        async with sdk(relay, "sk-relay-forged-key").aio.live.connect(model=MODEL, config=TEXT_CONFIG):
            pass

    with pytest.raises(errors.APIError) as raised:
        run(connect())
    assert raised.value.code == 1008 and "UNAUTHENTICATED" in raised.value.details


@pytest.mark.parametrize("rule", [
    {"handshake_status": 429, "times": 1},
    {"handshake_status": 503, "times": 1},
    {"close_before_setup": [1011, "Internal error occurred."], "times": 1},
    {"drop_before_setup": True, "times": 1},
])
def test_failover_to_another_key_before_setup_complete(relay, fake_live, rule):
    fake_live.script(rule)
    logged = len(relay.access_log())

    async def converse():
        async with sdk(relay, BOB_KEY).aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            return await text_turn(session, "after failover")

    assert run(converse())[0] == "echo: after failover"
    first, second = fake_live.wait_for_sessions(2)
    assert first["rule"] and not second["rule"] and first["key"] != second["key"]
    [line] = live_lines(relay, logged)
    assert line["established"] and line["attempts"] == 2
    time.sleep(1.1)  # a 429 rests its key for RELAY_COOLDOWN_SECONDS


def test_a_close_about_the_request_is_relayed_not_retried(relay, fake_live):
    reason = f"models/{MODEL} is not found for API version v1, or is not supported for bidiGenerateContent"
    fake_live.script({"close_before_setup": [1008, reason], "times": 3})

    async def connect():
        async with sdk(relay, BOB_KEY).aio.live.connect(model=MODEL, config=TEXT_CONFIG):
            pass

    with pytest.raises(errors.APIError) as raised:
        run(connect())
    assert (raised.value.code, raised.value.details) == (1008, reason)
    assert len(fake_live.sessions()) == 1


def test_concurrent_sessions_per_key_are_capped(relay, fake_live, certificate):
    def open_session():
        ws = raw_socket(relay, certificate, headers=[f"x-goog-api-key: {ALICE_KEY}"])
        ws.send(setup_message())
        return ws, ws.recv_data_frame()

    held = [open_session() for _ in range(2)]
    assert all(frame.data == b'{"setupComplete": {}}' for _, (_, frame) in held)
    ws, (opcode, frame) = open_session()
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 1013
    assert b"2 Live sessions open" in frame.data
    held[0][0].close()
    time.sleep(0.3)
    ws, (opcode, frame) = open_session()
    assert opcode == websocket.ABNF.OPCODE_BINARY
    for socket_ in (ws, held[1][0]):
        socket_.close()
    assert len(fake_live.sessions()) == 3


def test_metrics_count_sessions_frames_and_bytes(relay):
    session = http()
    session.verify = str(relay.cert)
    text = session.get(relay.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
    assert "relay_live_sessions_open 0.0" in text
    assert 'relay_live_frames_total{direction="to_client",kind="binary"}' in text
    assert 'relay_live_bytes_total{direction="to_upstream"}' in text
    assert 'relay_live_sessions_total{end="refused"}' in text


# -- at scale -------------------------------------------------------------------------------------


def test_200_concurrent_sessions_on_two_workers(relay, fake_live):
    started = time.monotonic()

    async def one(index, client):
        async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            await asyncio.sleep(0.5)  # all 200 are open at once
            return await text_turn(session, f"session {index}")

    async def all_of_them():
        client = sdk(relay, STATIC_KEY)
        return await asyncio.gather(*(one(index, client) for index in range(200)), return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(all_of_them(), 120))
    failures = [result for result in results if isinstance(result, BaseException)]
    assert not failures, failures[:3]
    assert [text for text, _ in results] == [f"echo: session {index}" for index in range(200)]
    assert time.monotonic() - started < 60
    sessions = fake_live.wait_for_sessions(200, closed=True, timeout=30)
    assert len(sessions) == 200
    no_secret_leaks(relay, sessions)


def test_sigterm_closes_open_sessions_with_1001_and_writes_their_usage(tmp_path, fake_live, certificate):
    env = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEYS[0], "RELAY_API_KEYS": STATIC_KEY, "RELAY_DB": str(tmp_path / "r.db"),
           "RELAY_GRACEFUL_TIMEOUT": "6"}
    server = TlsRelayServer(tmp_path, fake_live.url, *certificate, env=env, workers=1, name="relay-term").start()
    try:
        ws = raw_socket(server, certificate, headers=[f"x-goog-api-key: {STATIC_KEY}"])
        ws.send(setup_message())
        ws.recv()
        ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "before"}]}],
                                              "turnComplete": True}}))
        assert json.loads(ws.recv())["serverContent"]["modelTurn"]["parts"][0]["text"] == "echo: before"
        ws.recv()
        server.process.send_signal(15)
        signalled = time.monotonic()
        code, reason = close_of(ws)
        assert code == 1001 and "resume" in reason
        assert time.monotonic() - signalled < 6
        server.process.wait(10)
        [line] = [line for line in server.access_log() if line.get("live")]
        assert (line["end"], line["close_code"], line["turns"]) == ("shutdown", 1001, 1)
        row = usage_rows(tmp_path / "r.db", [line["request_id"]])[line["request_id"]]
        assert row["aborted"] and row["total_tokens"] == 6
        assert fake_live.wait_for_sessions(1, closed=True)[0]["close_code"] == 1001
    finally:
        server.stop()


def test_passthrough_mode_forwards_the_callers_own_key_or_token(tmp_path, fake_live, certificate):
    """No upstream keys: each caller's Google key (or Google-minted token) goes upstream, in a header."""
    env = {"RELAY_DB": str(tmp_path / "r.db"), "RELAY_UPSTREAM_KEYS": None}
    server = TlsRelayServer(tmp_path, fake_live.url, *certificate, env=env, workers=1, name="relay-pass").start()
    try:
        google_key, google_token = "AIza-callers-own-key-Pp99", "auth_tokens/googles-own-token-Tt77"
        for path, headers in ((LIVE_PATH.format(version="v1beta", rpc="BidiGenerateContent"),
                               [f"x-goog-api-key: {google_key}"]),
                              (LIVE_PATH.format(version="v1alpha", rpc="BidiGenerateContentConstrained"),
                               [f"Authorization: Token {google_token}"])):
            ws = raw_socket(server, certificate, path=path, headers=headers)
            ws.send(setup_message())
            assert json.loads(ws.recv()) == {"setupComplete": {}}
            ws.close()
        plain, constrained = fake_live.wait_for_sessions(2, closed=True)
        assert plain["key"] == google_key and plain["path"].endswith(".BidiGenerateContent")
        assert constrained["key"] == google_token and constrained["path"].endswith(".BidiGenerateContentConstrained")
        assert google_key not in server.output_text() and google_token not in server.output_text()
    finally:
        server.stop()


def test_a_tokens_session_ends_when_the_token_expires(relay, fake_live, certificate):
    expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    token = mint(relay, BOB_KEY, uses=1, expire_time=expire).name
    ws = raw_socket(relay, certificate, path=LIVE_PATH.format(version="v1alpha", rpc="BidiGenerateContentConstrained"),
                    headers=[f"Authorization: Token {token}"])
    ws.send(setup_message())
    assert json.loads(ws.recv()) == {"setupComplete": {}}
    code, reason = close_of(ws)
    assert code == 1008 and "expired" in reason
    assert fake_live.wait_for_sessions(1, closed=True)[0]["close_code"] == 1001


def test_a_malformed_upgrade_gets_a_plain_400(relay, certificate):
    context = ssl.create_default_context(cafile=str(certificate[0]))
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(f"GET {LIVE_PATH.format(version='v1', rpc='BidiGenerateContent')} HTTP/1.1\r\nHost: x\r\n"
                        f"Upgrade: websocket\r\nConnection: Upgrade\r\nx-goog-api-key: {BOB_KEY}\r\n\r\n".encode())
            answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400") and b"Not a valid WebSocket upgrade" in answer


def test_thinking_suffixes_resolve_on_the_setup_model(relay, fake_live, certificate):
    ws = raw_socket(relay, certificate, headers=[f"x-goog-api-key: {BOB_KEY}"])
    ws.send(json.dumps({"setup": {"model": f"models/{MODEL}-thinking-1024",
                                  "generation_config": {"response_modalities": ["TEXT"]}}}))
    assert json.loads(ws.recv()) == {"setupComplete": {}}
    ws.close()
    setup = fake_live.wait_for_sessions(1)[0]["setup"]["setup"]
    assert setup["model"] == f"models/{MODEL}"
    assert setup["generation_config"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}


def test_every_key_rate_limited_is_a_1013(tmp_path, fake_live, certificate):
    env = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEYS[0], "RELAY_API_KEYS": STATIC_KEY, "RELAY_DB": str(tmp_path / "r.db"),
           "RELAY_COOLDOWN_SECONDS": "30"}
    server = TlsRelayServer(tmp_path, fake_live.url, *certificate, env=env, workers=1, name="relay-429").start()
    try:
        fake_live.script({"handshake_status": 429, "times": 1})
        for expected_sessions in (1, 1):  # the second attempt finds the only key resting: Google is not asked
            ws = raw_socket(server, certificate, headers=[f"x-goog-api-key: {STATIC_KEY}"])
            ws.send(setup_message())
            code, reason = close_of(ws)
            assert code == 1013 and reason.startswith("RESOURCE_EXHAUSTED"), reason
            assert len(fake_live.sessions()) == expected_sessions
        assert "Traceback" not in server.output_text()
    finally:
        server.stop()
