"""firepipe's AWS CDK app: one typed configuration per environment, one construct per concern.

Node.js 20 is past its end of life for jsii, which says so on every start; the machines here run
it on purpose, so the warning is silenced before anything imports jsii (importing this package
first is enough).
"""

import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
