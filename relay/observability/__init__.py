"""This package provides what tells an operator what relay is doing: JSON log lines, the access log and
Prometheus metrics."""
