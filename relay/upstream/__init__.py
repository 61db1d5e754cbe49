"""This package provides the upstream side: the pooled HTTP transport, the key pool (which upstream key to
try, in what order, what to remember), and verdicts on what an upstream error means for a key."""
