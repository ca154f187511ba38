"""object_exists: a missing key is False, a refused HEAD (no s3:ListBucket) is an error."""

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from firepipe.lib.s3 import object_exists


def test_object_exists_reads_the_head_and_raises_on_a_refusal() -> None:
    client = boto3.client(
        "s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    head = {"Bucket": "b", "Key": "k"}
    with Stubber(client) as stub:
        stub.add_response("head_object", {"ContentLength": 3}, head)
        stub.add_client_error("head_object", "404", http_status_code=404, expected_params=head)
        stub.add_client_error("head_object", "NoSuchKey", http_status_code=404)
        stub.add_client_error("head_object", "403", http_status_code=403)
        assert object_exists(client, "b", "k") is True
        assert object_exists(client, "b", "k") is False
        assert object_exists(client, "b", "k") is False
        with pytest.raises(ClientError, match="403"):
            object_exists(client, "b", "k")
        stub.assert_no_pending_responses()
