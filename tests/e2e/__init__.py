"""This package provides the end-to-end tests: the real relay (gunicorn + gevent) against a fake upstream."""
