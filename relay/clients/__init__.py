"""This package provides everything about client keys: who is calling (auth), how much they may use
(limits), what they used (usage accounting) and the ``flask --app app keys`` commands that manage them."""
