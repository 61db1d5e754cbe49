"""This module provides the "stack" benchmark target: the design card's framework with none of relay in it.

A Flask view that forwards the body with a plain ``requests.Session`` (stream=True) and streams the upstream
bytes back, served like relay: gunicorn, 2 gevent workers. No auth, validation, pool, logging or metrics.
It shows what the framework itself costs on this machine, so relay's own share can be read off:
relay − stack is relay's work, stack − floor is Flask + requests + gunicorn + one more hop.

Run by bench/peers.py: ``gunicorn -k gevent -w 2 bench.stack_app:app`` with ``BENCH_UPSTREAM`` set.
"""

import os

import requests
from flask import Flask, Response, request

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8081")
PASSED_ON = ("Content-Type",)

app = Flask(__name__)
session = requests.Session()
session.trust_env = False


@app.post("/<path:path>")
def forward(path):
    upstream = session.post(f"{UPSTREAM}/{path}", params=request.args, data=request.get_data(),
                            headers={"Content-Type": "application/json", "x-goog-api-key": "stack"}, stream=True)
    headers = {name: upstream.headers[name] for name in PASSED_ON if name in upstream.headers}
    return Response(upstream.raw.stream(None, decode_content=False), status=upstream.status_code, headers=headers)
