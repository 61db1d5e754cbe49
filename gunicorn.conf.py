"""gunicorn settings for relay, laid out like gunicorn's example_config.py: a paragraph per setting.

Every value comes from relay's settings (relay/settings.py declares each once: variable, default, check),
so ``PORT=abc`` is refused like ``RELAY_MAX_ATTEMPTS=abc``: one JSON line naming the setting and the fix,
exit status 4, in the master before any port is bound, not once per worker.  This file imports only
relay_worker, which loads nothing gevent has to patch first.
"""

import relay_worker

settings, problem = relay_worker.read_settings()  # a problem is reported by on_starting, below

#
# Server socket
#
#   bind - where to listen.  A PaaS router gives the port in $PORT; relay listens on every interface.
#

bind = f"0.0.0.0:{settings.port}"

#
#   certfile, keyfile - PEM files ($RELAY_TLS_CERT, $RELAY_TLS_KEY): relay serves HTTPS and wss:// itself.
#       google-genai always dials wss:// for the Live API, so a single box without a TLS-terminating proxy
#       needs these; behind a platform's TLS they stay unset.
#

certfile = settings.tls_cert
keyfile = settings.tls_key

#
# Worker processes
#
#   workers - worker processes ($WEB_CONCURRENCY).  Each gevent worker holds thousands of concurrent
#       streams: one per core is plenty.
#
#   worker_class - relay_worker.RelayWorker: gunicorn's gevent worker that closes idle keep-alive
#       connections at SIGTERM, sends a response's headers with its first bytes, and answers malformed
#       HTTP with Google's error JSON instead of gunicorn's HTML page.
#
#   worker_connections - concurrent connections per worker ($RELAY_WORKER_CONNECTIONS); open streams count.
#
#   timeout - seconds a silent worker gets before the master restarts it ($RELAY_WORKER_TIMEOUT).  Long
#       streams are fine: a gevent worker reports in between greenlets.
#
#   graceful_timeout - seconds in-flight requests and streams get after SIGTERM ($RELAY_GRACEFUL_TIMEOUT);
#       then each worker writes its queued usage rows and exits.
#
#   keepalive - seconds an idle connection stays open: above the usual load balancer's 60, so that the
#       balancer never reuses a connection relay is closing.
#
#   preload_app - never: each worker builds its own app (and upstream connection pool) after gevent has
#       patched sockets.
#

workers = settings.workers
worker_class = relay_worker.RelayWorker
worker_connections = settings.worker_connections
timeout = settings.worker_timeout
graceful_timeout = settings.graceful_timeout
keepalive = 75
preload_app = False

#
# Requests
#
#   limit_request_field_size - bytes one header line may hold: twice gunicorn's default, for the long
#       tokens some SDK front ends send.  The request line keeps gunicorn's limit.
#
#   forwarder_headers - none.  gunicorn would take SCRIPT_NAME and PATH_INFO from request headers sent from
#       a trusted address (loopback by default): a caller could move relay's routes.  A mount prefix, if
#       ever wanted, comes from the SCRIPT_NAME environment variable instead.
#

limit_request_field_size = 16384
forwarder_headers = ""

#
# Logging
#
#   logger_class - relay_worker.RelayLogger: gunicorn's lines as relay's JSON lines, keys scrubbed.
#
#   errorlog, loglevel - stderr, at $RELAY_LOG_LEVEL (relay's own lines use the same level).
#
#   accesslog - none: relay writes its own JSON line per request; gunicorn's would repeat it (and show
#       URLs, which may carry ?key=).
#

logger_class = relay_worker.RelayLogger
errorlog = "-"
loglevel = settings.log_level
accesslog = None

#
# Server mechanics
#
#   control_socket_disable - gunicorn 27's control socket lives at one fixed path per user: several relays
#       on one machine would clash.
#

control_socket_disable = True

#
# Server hooks
#
#   on_starting - in the master, before it binds: a bad setting, a port in use or an open relay (upstream
#       keys but no client key) stops start-up with one line; then the file limit is raised and the
#       metrics directory made.
#
#   when_ready - the start-up line: mode, upstreams, store, admin views, where relay listens.
#
#   worker_exit - a worker writes its queued usage rows before it goes.
#
#   child_exit - a worker is gone: its live gauges (open streams) stop counting.
#
#   on_exit - the metrics directory relay made is removed.
#


def on_starting(server):
    relay_worker.start_up(server, settings, problem)


def when_ready(server):
    relay_worker.announce(server, settings)


def worker_exit(server, worker):
    shutdown = getattr(getattr(worker, "wsgi", None), "relay_shutdown", None)
    if shutdown is not None:
        shutdown()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    relay_worker.clean_up(server)
