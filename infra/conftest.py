"""pytest loads this file first, which puts infra/ on sys.path (so the tests import
firepipe_infra) and, through firepipe_infra, silences jsii's Node.js end-of-life banner."""

import firepipe_infra  # noqa: F401
