"""infra/artifacts/promote-images.sh against stand-ins for `aws` and `skopeo` (fake_registry.py):
the copy by digest, the check of the digest after it, and what it does with a tag that is
already there or a reference that is missing."""

import subprocess
from pathlib import Path

import pytest
from fake_registry import FakeRegistry

SCRIPT = Path(__file__).resolve().parents[1] / "artifacts" / "promote-images.sh"
ACCOUNT, REGION = "111111111111", "eu-west-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
SOURCE = "ghcr.io/firepipe/firepipe"
DIGESTS = {"dagster": "sha256:" + "a" * 64, "agents-lambda": "sha256:" + "b" * 64}


@pytest.fixture
def fake(tmp_path):
    return FakeRegistry(tmp_path / "fake", account=ACCOUNT)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for image, digest in DIGESTS.items():
        (folder / image).write_text(f"{SOURCE}/{image}@{digest}\n")
    return folder


def _promote(fake, images, *expected, registry=REGISTRY, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), str(images), registry, "firepipe-dev", "abc123", *expected],
        env={**fake.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _tagged(fake, image):
    return fake.tagged(ACCOUNT, REGION, f"firepipe-dev/{image}", "abc123")


def _copies(fake):
    return [c for c in fake.calls("skopeo") if "docker://" in c]


def test_copies_each_image_by_digest_and_checks_what_ecr_holds(fake, images):
    done = _promote(fake, images, *DIGESTS)
    assert done.returncode == 0, done.stderr
    for image, digest in DIGESTS.items():
        assert _tagged(fake, image) == digest
        assert f"{image}: firepipe-dev/{image}:abc123 is {digest}" in done.stdout
    assert sorted(_copies(fake)) == sorted(
        f"skopeo copy --retry-times 3 --preserve-digests docker://{SOURCE}/{image}@{digest}"
        f" docker://{REGISTRY}/firepipe-dev/{image}:abc123"
        for image, digest in DIGESTS.items()
    )
    # Each image: described before the copy, and again after it.
    describes = fake.calls("aws")
    assert len(describes) == 2 * len(DIGESTS)
    assert all(f"--region {REGION} --registry-id {ACCOUNT}" in c for c in describes)


def test_a_copy_that_would_change_the_digest_is_refused_before_the_push(fake, images):
    done = _promote(fake, images, CONVERTED_DIGEST="sha256:" + "d" * 64)
    assert done.returncode == 1
    assert "preserve digests" in done.stderr
    assert _tagged(fake, "dagster") is None
    assert _tagged(fake, "agents-lambda") is None


def test_an_older_skopeo_copies_and_the_digest_after_it_is_checked(fake, images):
    done = _promote(fake, images, OLD_SKOPEO="1", CONVERTED_DIGEST="sha256:" + "d" * 64)
    assert done.returncode == 1
    assert "after the copy, not the built" in done.stderr
    assert all("--preserve-digests" not in c for c in _copies(fake))


def test_a_tag_already_naming_the_built_digest_is_left_as_it_is(fake, images):
    fake.tag(ACCOUNT, REGION, "firepipe-dev/dagster", "abc123", DIGESTS["dagster"])
    done = _promote(fake, images)
    assert done.returncode == 0, done.stderr
    assert f"dagster: firepipe-dev/dagster:abc123 is already {DIGESTS['dagster']}" in done.stdout
    assert [c.split()[-1] for c in _copies(fake)] == [
        f"docker://{REGISTRY}/firepipe-dev/agents-lambda:abc123"
    ]


def test_a_tag_naming_another_digest_stops_the_promotion(fake, images):
    other = "sha256:" + "c" * 64
    fake.tag(ACCOUNT, REGION, "firepipe-dev/dagster", "abc123", other)
    done = _promote(fake, images)
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"Error: firepipe-dev/dagster:abc123 is {other}")
    assert "not the built " + DIGESTS["dagster"] in done.stderr
    assert _tagged(fake, "dagster") == other
    assert not [c for c in _copies(fake) if "firepipe-dev/dagster" in c]


def test_a_warning_of_the_cli_is_not_read_as_a_digest(fake, images):
    for image, digest in DIGESTS.items():
        fake.tag(ACCOUNT, REGION, f"firepipe-dev/{image}", "abc123", digest)
    done = _promote(fake, images, DESCRIBE_WARNING="1")
    assert done.returncode == 0, done.stderr
    assert not _copies(fake)


def test_a_failing_describe_is_an_error_and_copies_nothing(fake, images):
    done = _promote(fake, images, FAIL_DESCRIBE="1")
    assert done.returncode == 1
    assert "AccessDeniedException" in done.stderr
    assert not _copies(fake)


def test_a_reference_without_a_digest_is_refused(fake, images):
    (images / "dagster").write_text(f"{SOURCE}/dagster:latest\n")
    done = _promote(fake, images)
    assert done.returncode == 1
    assert "is not <repository>@sha256:<digest>" in done.stderr
    assert not _copies(fake)  # agents-lambda's sound reference waits too


def test_a_missing_reference_stops_the_promotion_before_any_copy(fake, images):
    done = _promote(fake, images, "dagster", "agents-lambda", "generator")
    assert done.returncode == 1
    assert "holds references for: agents-lambda dagster; expected:" in done.stderr
    assert "expected: agents-lambda dagster generator" in done.stderr
    assert not _copies(fake)


@pytest.mark.parametrize(
    ("registry", "message"),
    [("ghcr.io", "is not an ECR registry"), (REGISTRY, "holds no image reference")],
)
def test_bad_arguments_are_one_error_line(fake, images, registry, message):
    if message.startswith("holds"):
        for file in images.iterdir():
            file.unlink()
    done = _promote(fake, images, registry=registry)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert not fake.calls()
