"""infra/artifacts/promote-images.sh, against stand-ins for `aws ecr describe-images` and
`skopeo copy` that keep an ECR repository's tags in files (no registry runs here): the copy by
digest, the check of the digest after it, and what it does with a tag that is already there."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "artifacts" / "promote-images.sh"
REGISTRY = "111111111111.dkr.ecr.eu-west-1.amazonaws.com"
SOURCE = "ghcr.io/firepipe/firepipe"
DIGESTS = {"dagster": "sha256:" + "a" * 64, "agents-lambda": "sha256:" + "b" * 64}

# describe-images: the digest tagged in $ECR/<account>/<region>/<repository>/<tag>, else ECR's
# error. The arguments it is given are checked, so a wrong account or region finds nothing.
FAKE_AWS = r"""#!/bin/bash
set -euo pipefail
echo "aws $*" >> "$CALLS"
[ "$1 $2" = "ecr describe-images" ] || { echo "unexpected: $*" >&2; exit 2; }
shift 2
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="$2"; shift 2 ;;
        --registry-id) account="$2"; shift 2 ;;
        --repository-name) repository="$2"; shift 2 ;;
        --image-ids) tag="${2#imageTag=}"; shift 2 ;;
        --query|--output) shift 2 ;;
        *) echo "unexpected argument $1" >&2; exit 2 ;;
    esac
done
[ -z "${FAIL_DESCRIBE:-}" ] || { echo "An error occurred (AccessDeniedException)" >&2; exit 254; }
file="$ECR/$account/$region/$repository/$tag"
if [ -f "$file" ]; then cat "$file"; else
    echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2
    exit 254
fi
"""

# skopeo copy docker://<source>@<digest> docker://<account>.dkr.ecr.<region>.../<repo>:<tag>:
# tags the source's digest there (or CONVERTED_DIGEST, as a copy that rewrote the manifest would).
FAKE_SKOPEO = r"""#!/bin/bash
set -euo pipefail
echo "skopeo $*" >> "$CALLS"
[ "$1" = copy ] || exit 2
source="${@: -2:1}"
destination="${@: -1}"
digest="${CONVERTED_DIGEST:-${source##*@}}"
destination="${destination#docker://}"
host="${destination%%/*}"
account="${host%%.*}"
region="$(echo "$host" | cut -d. -f4)"
path="${destination#*/}"
mkdir -p "$ECR/$account/$region/${path%:*}"
echo "$digest" > "$ECR/$account/$region/${path%:*}/${path##*:}"
"""


@pytest.fixture
def world(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("aws", FAKE_AWS), ("skopeo", FAKE_SKOPEO)):
        tool = bin_dir / name
        tool.write_text(text)
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    images = tmp_path / "images"
    images.mkdir()
    for image, digest in DIGESTS.items():
        (images / image).write_text(f"{SOURCE}/{image}@{digest}\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ECR": str(tmp_path / "ecr"),
        "CALLS": str(tmp_path / "calls"),
    }
    return tmp_path, images, env


def _promote(world, *, registry=REGISTRY, **env):
    _, images, base = world
    return subprocess.run(
        ["bash", str(SCRIPT), str(images), registry, "firepipe-dev", "abc123"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _tagged(world, image):
    path = world[0] / "ecr/111111111111/eu-west-1/firepipe-dev" / image / "abc123"
    return path.read_text().strip() if path.exists() else None


def _calls(world):
    path = world[0] / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _tag(world, image, digest):
    path = world[0] / "ecr/111111111111/eu-west-1/firepipe-dev" / image / "abc123"
    path.parent.mkdir(parents=True)
    path.write_text(digest + "\n")


def test_copies_each_image_by_digest_and_checks_what_ecr_holds(world):
    done = _promote(world)
    assert done.returncode == 0, done.stderr
    for image, digest in DIGESTS.items():
        assert _tagged(world, image) == digest
        assert f"{image}: firepipe-dev/{image}:abc123 is {digest}" in done.stdout
    copies = [c for c in _calls(world) if c.startswith("skopeo")]
    assert sorted(copies) == sorted(
        f"skopeo copy --retry-times 3 docker://{SOURCE}/{image}@{digest}"
        f" docker://{REGISTRY}/firepipe-dev/{image}:abc123"
        for image, digest in DIGESTS.items()
    )
    # Each image: described before the copy, and again after it.
    describes = [c for c in _calls(world) if c.startswith("aws ecr describe-images")]
    assert len(describes) == 2 * len(DIGESTS)
    assert all("--region eu-west-1 --registry-id 111111111111" in c for c in describes)


def test_a_tag_already_naming_the_built_digest_is_left_as_it_is(world):
    _tag(world, "dagster", DIGESTS["dagster"])
    done = _promote(world)
    assert done.returncode == 0, done.stderr
    assert f"dagster: firepipe-dev/dagster:abc123 is already {DIGESTS['dagster']}" in done.stdout
    copies = [c for c in _calls(world) if c.startswith("skopeo")]
    assert [c.split()[4].split("/")[-1].split("@")[0] for c in copies] == ["agents-lambda"]


def test_a_tag_naming_another_digest_stops_the_promotion(world):
    other = "sha256:" + "c" * 64
    _tag(world, "dagster", other)
    done = _promote(world)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("Error: firepipe-dev/dagster:abc123 is " + other)
    assert "not the built " + DIGESTS["dagster"] in done.stderr
    assert _tagged(world, "dagster") == other
    assert not [c for c in _calls(world) if "firepipe-dev/dagster" in c and "skopeo" in c]


def test_a_copy_that_changed_the_digest_is_an_error(world):
    done = _promote(world, CONVERTED_DIGEST="sha256:" + "d" * 64)
    assert done.returncode == 1
    assert "after the copy, not the built" in done.stderr


def test_a_failing_describe_is_an_error_and_copies_nothing(world):
    done = _promote(world, FAIL_DESCRIBE="1")
    assert done.returncode == 1
    assert "AccessDeniedException" in done.stderr
    assert not [c for c in _calls(world) if c.startswith("skopeo")]


def test_a_reference_without_a_digest_is_refused(world):
    (world[1] / "dagster").write_text(f"{SOURCE}/dagster:latest\n")
    done = _promote(world)
    assert done.returncode == 1
    assert "is not <repository>@sha256:<digest>" in done.stderr
    assert _tagged(world, "dagster") is None


@pytest.mark.parametrize(
    ("registry", "message"),
    [("ghcr.io", "is not an ECR registry"), (REGISTRY, "holds no image reference")],
)
def test_bad_arguments_are_one_error_line(world, registry, message):
    if message.startswith("holds"):
        for file in world[1].iterdir():
            file.unlink()
    done = _promote(world, registry=registry)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert not _calls(world)
