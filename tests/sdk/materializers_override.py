"""A user materializer for `str`, imported only by the test that checks it wins over built-ins.

Importing this module registers it for every later `str` output, so no other test imports it;
the registry fixture removes it again after the test.
"""

from __future__ import annotations

from kstep import Materializer


class UpperStrings(Materializer):
    types = (str,)

    def save(self, value: str) -> None:
        with self.open("text.txt", "w") as file:
            file.write(value.upper())

    def load(self, data_type: type) -> str:
        with self.open("text.txt", "r") as file:
            return file.read()
