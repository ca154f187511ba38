"""One synthesis of every environment (with cdk-nag) for the whole session: it takes seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_cdk import cx_api
from aws_cdk.assertions import Template
from firepipe_infra.stacks import EnvironmentStacks, build_app


@dataclass(frozen=True)
class Synthesised:
    outdir: Path
    assembly: cx_api.CloudAssembly
    stacks: dict[str, EnvironmentStacks]

    def template(self, stack_id: str) -> Template:
        return Template.from_json(self.assembly.get_stack_by_name(stack_id).template)


@pytest.fixture(scope="session")
def synthesised(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stacks = build_app(outdir)
    return Synthesised(outdir, app.synth(), stacks)
