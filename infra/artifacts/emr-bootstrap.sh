#!/bin/bash
# EMR on EC2's bootstrap action (FIREPIPE_EMR_BOOTSTRAP_SCRIPT): Python 3.11 with firepipe on
# every node before Spark starts. EMR 7 runs Amazon Linux 2023 with Python 3.9; the Spark
# steps run FIREPIPE_EMR_PYTHON, /usr/local/bin/python3.11 (infra/firepipe_infra/spark.py).
# The compute stack deploys it (spark_code.py) with the artifacts' s3:// location written in.
set -euo pipefail

sudo dnf install -y python3.11 python3.11-pip
sudo ln -sf /usr/bin/python3.11 /usr/local/bin/python3.11
wheels=$(mktemp -d)
aws s3 cp "@ARTIFACTS@/spark/" "$wheels/" --recursive --exclude "*" --include "firepipe-*.whl"
sudo /usr/local/bin/python3.11 -m pip install --no-cache-dir "$wheels"/firepipe-*.whl
