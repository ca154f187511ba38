"""Stand-ins for the `aws`, `skopeo` and `docker` commands the delivery runs, keeping ECR's
tags in files (no registry runs here): `$ECR/<account>/<region>/<repository>/<tag>` holds the
digest a tag names. Every call is appended to `$CALLS`. Used by the tests of
infra/artifacts/promote-images.sh and of the pipeline's image build."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# aws ecr get-login-password | describe-images: the arguments are checked, so a wrong account or
# region finds nothing. Without --registry-id, the caller's own account ($AWS_ACCOUNT).
FAKE_AWS = r"""#!/bin/bash
set -euo pipefail
echo "aws $*" >> "$CALLS"
[ "$1 $2" = "ecr get-login-password" ] && { echo token; exit 0; }
[ "$1 $2" = "ecr describe-images" ] || { echo "unexpected: $*" >&2; exit 2; }
shift 2
account="$AWS_ACCOUNT"
query=""
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="$2"; shift 2 ;;
        --registry-id) account="$2"; shift 2 ;;
        --repository-name) repository="$2"; shift 2 ;;
        --image-ids) tag="${2#imageTag=}"; shift 2 ;;
        --query) query="$2"; shift 2 ;;
        --output) shift 2 ;;
        *) echo "unexpected argument $1" >&2; exit 2 ;;
    esac
done
[ -z "${FAIL_DESCRIBE:-}" ] || { echo "An error occurred (AccessDeniedException)" >&2; exit 254; }
if [ -n "${FAIL_DIGEST_QUERY:-}" ] && [ -n "$query" ]; then
    echo "An error occurred (ThrottlingException)" >&2
    exit 254
fi
file="$ECR/$account/$region/$repository/$tag"
if [ ! -f "$file" ]; then
    echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2
    exit 254
fi
[ -z "${DESCRIBE_WARNING:-}" ] || echo "a warning on stderr" >&2
if [ "$query" = "imageDetails[0].imageDigest" ]; then cat "$file"; else
    echo "{\"imageDetails\": [{\"imageDigest\": \"$(cat "$file")\"}]}"
fi
"""

# skopeo copy [options] docker://<source>@<digest> docker://<registry>/<repository>:<tag>: tags
# the source's digest there (CONVERTED_DIGEST: what a copy that rewrote the manifest would).
# `copy --help` lists --preserve-digests unless OLD_SKOPEO is set (Ubuntu 22.04's 1.4).
FAKE_SKOPEO = r"""#!/bin/bash
set -euo pipefail
echo "skopeo $*" >> "$CALLS"
[ "$1" = login ] && { cat > /dev/null; exit 0; }
[ "$1" = copy ] || exit 2
if [ "${2:-}" = --help ]; then
    echo "  --retry-times int"
    [ -n "${OLD_SKOPEO:-}" ] || echo "  --preserve-digests"
    # More help after the flag, as skopeo's own (a reader that stops early breaks the pipe).
    for i in $(seq 1 2000); do echo "  --option-$i string   what it does"; done
    exit 0
fi
if [ -n "${CONVERTED_DIGEST:-}" ] && [[ " $* " == *" --preserve-digests "* ]]; then
    echo "FATA[0000] Instructed to preserve digests, but the manifest must be converted" >&2
    exit 1
fi
source="${@: -2:1}"
destination="${@: -1}"
# A source in a fake ECR registry must hold the digest it names.
source_ref="${source#docker://}"
source_host="${source_ref%%/*}"
if [[ "$source_host" == *.dkr.ecr.* ]]; then
    source_path="${source_ref#*/}"
    held="$ECR/${source_host%%.*}/$(echo "$source_host" | cut -d. -f4)/${source_path%@*}"
    grep -qx "${source##*@}" "$held"/* 2> /dev/null || {
        echo "FATA[0000] reading manifest ${source##*@}: manifest unknown" >&2
        exit 1
    }
fi
digest="${CONVERTED_DIGEST:-${source##*@}}"
destination="${destination#docker://}"
host="${destination%%/*}"
path="${destination#*/}"
mkdir -p "$ECR/${host%%.*}/$(echo "$host" | cut -d. -f4)/${path%:*}"
echo "$digest" > "$ECR/${host%%.*}/$(echo "$host" | cut -d. -f4)/${path%:*}/${path##*:}"
"""

# docker login (reads the password), build (recorded), push <registry>/<repository>:<tag>
# (tags the digest sha256(<uri>) there, as if pushed).
FAKE_DOCKER = r"""#!/bin/bash
set -euo pipefail
echo "docker $*" >> "$CALLS"
case "$1" in
    login) cat > /dev/null ;;
    build) ;;
    push)
        uri="$2"
        host="${uri%%/*}"
        path="${uri#*/}"
        digest="sha256:$(printf '%s' "$uri" | sha256sum | cut -d' ' -f1)"
        mkdir -p "$ECR/${host%%.*}/$(echo "$host" | cut -d. -f4)/${path%:*}"
        echo "$digest" > "$ECR/${host%%.*}/$(echo "$host" | cut -d. -f4)/${path%:*}/${path##*:}"
        ;;
    *) exit 2 ;;
esac
"""


def pushed_digest(uri: str) -> str:
    """The digest the fake docker gives the image it pushes as `uri`."""
    return "sha256:" + hashlib.sha256(uri.encode()).hexdigest()


@dataclass
class FakeRegistry:
    root: Path
    account: str

    def __post_init__(self) -> None:
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True)
        for name, text in (("aws", FAKE_AWS), ("skopeo", FAKE_SKOPEO), ("docker", FAKE_DOCKER)):
            tool = bin_dir / name
            tool.write_text(text)
            tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "ECR": str(self.root / "ecr"),
            "CALLS": str(self.root / "calls"),
            "AWS_ACCOUNT": self.account,
        }

    def _tag_file(self, account: str, region: str, repository: str, tag: str) -> Path:
        return self.root / "ecr" / account / region / repository / tag

    def tagged(self, account: str, region: str, repository: str, tag: str) -> str | None:
        path = self._tag_file(account, region, repository, tag)
        return path.read_text().strip() if path.exists() else None

    def tag(self, account: str, region: str, repository: str, tag: str, digest: str) -> None:
        path = self._tag_file(account, region, repository, tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest + "\n")

    def calls(self, tool: str | None = None) -> list[str]:
        path = self.root / "calls"
        lines = path.read_text().splitlines() if path.exists() else []
        return [c for c in lines if tool is None or c.startswith(f"{tool} ")]
