#!/bin/bash
# What the Spark engines run, into artifacts/ of an environment's lake bucket (the names
# infra/firepipe_infra/spark.py and emr_steps.py give the engines):
#   spark/spark_features.py                   the entry point, also the Glue job's script
#   spark/firepipe-<version>-py3-none-any.whl the wheel Glue installs and EMR's bootstrap action
#   emr/bootstrap.sh                          EMR on EC2's bootstrap action
# Usage (from the repository root, with the environment's AWS credentials, after its lake
# stack is deployed): infra/artifacts/upload-spark-artifacts.sh <env> [<out dir>]
# With a second argument it writes the files there and uploads nothing (what the tests read).
set -euo pipefail

env="${1:?usage: upload-spark-artifacts.sh <dev|staging|prod> [<out dir>]}"
out="${2:-$(mktemp -d)}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
uv="${UV:-$root/.tools/bin/uv}"

if [ -n "${2:-}" ]; then
    bucket="firepipe-$env-lake-bucket"  # a stand-in: nothing is uploaded
else
    bucket=$(aws cloudformation describe-stacks --stack-name "firepipe-$env-lake" \
        --query "Stacks[0].Outputs[?OutputKey=='FIREPIPELANDINGBUCKET'].OutputValue" \
        --output text)
fi
mkdir -p "$out/spark" "$out/emr"
"$uv" build --wheel --out-dir "$out/spark" "$root" > /dev/null
cp "$root/firepipe/services/spark_features.py" "$out/spark/"
sed "s|@ARTIFACTS@|s3://$bucket/artifacts|g" "$here/emr-bootstrap.sh" > "$out/emr/bootstrap.sh"
if [ -z "${2:-}" ]; then
    # The bucket's default encryption (the data key) applies; --delete drops old wheels.
    aws s3 sync "$out" "s3://$bucket/artifacts/" --delete --exclude "*.gitignore"
fi
echo "$out"
