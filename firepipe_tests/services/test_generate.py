"""The generator's Pipes entry point: what it refuses (its Pipes channels and `main` are in
test_pipes_io.py)."""

import pytest

from firepipe.services import generate


class Extras:
    """Only what `generate.run` reads before it generates: the extras."""

    def __init__(self, extras: dict[str, object]) -> None:
        self.extras = extras


def test_extras_without_a_spec_or_directory_are_refused() -> None:
    with pytest.raises(generate.GenerateRequestError, match=r"lack \['spec'\]"):
        generate.run(Extras({"directory": "/tmp/x"}))  # type: ignore[arg-type]
