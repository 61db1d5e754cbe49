"""This package provides what tells an operator what relay is doing: the JSON access log and Prometheus metrics."""
