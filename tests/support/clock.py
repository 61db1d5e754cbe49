"""This module provides a clock tests set by hand, for code that takes ``clock=time.time``."""


class FakeClock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
