#!/bin/bash
# Promote images, built once, into an environment's ECR repositories by digest: what runs in
# staging and prod is, byte for byte, what dev ran. The GitHub workflow (from GHCR) and the CDK
# pipeline (from the tooling account's ECR) both call it after the registry stack deploys.
#
# Usage: promote-images.sh <images dir> <ECR registry> <repository prefix> <tag> [<image>...]
#   <images dir>: one file per image, named after it (registry.py's IMAGES), holding the
#     reference it was built as: <registry>/<repository>@sha256:<64 hex digits>
#   <ECR registry>: <account>.dkr.ecr.<region>.amazonaws.com (logged in to, as is the source)
#   <repository prefix>: firepipe-<env>; each image goes to <prefix>/<image>:<tag>
#   <image>...: the images expected; the folder must hold exactly these (a build that left
#     no reference stops the promotion before anything is copied)
#
# skopeo copies a manifest it need not convert as it is (ECR takes both Docker and OCI ones).
# Where it knows --preserve-digests (1.6 and later) it refuses, before pushing, a copy that
# would change the digest; either way the digest ECR then reports for the tag must be the
# built one. ECR's tags are immutable: a tag already naming the built digest is left as it is
# (a retried deploy), and a tag naming another digest is an error, since the environment would
# not run what was built.
set -euo pipefail

usage="usage: promote-images.sh <images dir> <ECR registry> <repository prefix> <tag> [<image>...]"
images="${1:?$usage}"
registry="${2:?$usage}"
prefix="${3:?$usage}"
tag="${4:?$usage}"
shift 4
expected=("$@")
fail() {
    echo "Error: $*" >&2
    exit 1
}

if ! [[ "$registry" =~ ^([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$ ]]; then
    fail "$registry is not an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com)"
fi
account="${BASH_REMATCH[1]}"
region="${BASH_REMATCH[2]}"
[ -d "$images" ] || fail "no folder $images of image references"
shopt -s nullglob
files=("$images"/*)
[ ${#files[@]} -gt 0 ] || fail "$images holds no image reference"
if [ ${#expected[@]} -gt 0 ]; then
    held="$(for f in "${files[@]}"; do basename "$f"; done | sort | tr '\n' ' ')"
    wanted="$(printf '%s\n' "${expected[@]}" | sort | tr '\n' ' ')"
    [ "$held" = "$wanted" ] || fail "$images holds references for: ${held% }; expected: ${wanted% }"
fi
copy=(skopeo copy --retry-times 3)
# Read whole, not piped to `grep -q`: grep leaving early would kill skopeo mid-help (SIGPIPE,
# a failed pipeline under pipefail) and silently drop the flag.
help="$(skopeo copy --help 2>&1 || true)"
if [[ "$help" == *--preserve-digests* ]]; then
    copy+=(--preserve-digests)
fi

errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
# The digest the tag names in <repository>, or nothing when the tag is not there yet.
tagged() {
    local out
    if out=$(aws ecr describe-images --region "$region" --registry-id "$account" \
        --repository-name "$1" --image-ids imageTag="$tag" \
        --query 'imageDetails[0].imageDigest' --output text 2> "$errors"); then
        echo "$out"
    elif grep -q ImageNotFoundException "$errors"; then
        echo ""
    else
        fail "describing $1:$tag: $(cat "$errors")"
    fi
}

# Every reference is checked before the first copy.
for file in "${files[@]}"; do
    source="$(tr -d '[:space:]' < "$file")"
    if [[ "$source" != *@* ]] || ! [[ "${source##*@}" =~ ^sha256:[0-9a-f]{64}$ ]]; then
        fail "$file: '$source' is not <repository>@sha256:<digest>"
    fi
done

for file in "${files[@]}"; do
    image="$(basename "$file")"
    source="$(tr -d '[:space:]' < "$file")"
    digest="${source##*@}"
    repository="$prefix/$image"
    current="$(tagged "$repository")"
    if [ "$current" = "$digest" ]; then
        echo "$image: $repository:$tag is already $digest"
        continue
    elif [ -n "$current" ]; then
        fail "$repository:$tag is $current, not the built $digest (tags are immutable: build under a new tag)"
    fi
    "${copy[@]}" "docker://$source" "docker://$registry/$repository:$tag"
    copied="$(tagged "$repository")"
    [ "$copied" = "$digest" ] || fail "$repository:$tag is ${copied:-missing} after the copy, not the built $digest"
    echo "$image: $repository:$tag is $digest"
done
