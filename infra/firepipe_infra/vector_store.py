"""The knowledge base's vector store: an OpenSearch Serverless VECTORSEARCH collection, its
encryption, network and data access policies, and the vector index Bedrock writes into.

Network: the collection's API is reachable from the internet, every request signed (SigV4) by
a principal its data access policy names: the knowledge base's role and CloudFormation's
execution role (which creates the index). No firepipe code talks to the collection (searches
go through Bedrock's Retrieve), so a VPC endpoint would serve nothing in the VPC, and a
private-only policy admitting Bedrock as a source service would refuse CloudFormation's index
handler, which calls the collection from outside any VPC. Dashboards are not opened at all.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_opensearchserverless as aoss
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig

# Titan Text Embeddings v2 writes 256, 512 or 1024 dimensions: its largest, Bedrock's default.
EMBEDDING_DIMENSIONS = 1024
INDEX_NAME = "firepipe-kb"
# Bedrock's own field names: the chunk's text and its metadata (the sidecars' `source`).
VECTOR_FIELD = "embedding"
TEXT_FIELD = "AMAZON_BEDROCK_TEXT_CHUNK"
METADATA_FIELD = "AMAZON_BEDROCK_METADATA"
# Standby replicas double the collection's search units: kept for prod, where a zone's loss
# must not stop the agent's searches.
STANDBY_ENVIRONMENTS = frozenset({"prod"})
# What each principal may do in the collection: Bedrock reads and writes documents, the
# deployment creates and updates the index.
KB_PERMISSIONS = {
    "collection": ["aoss:DescribeCollectionItems"],
    "index": ["aoss:DescribeIndex", "aoss:ReadDocument", "aoss:WriteDocument", "aoss:UpdateIndex"],
}
DEPLOYER_PERMISSIONS = {
    "collection": [
        "aoss:DescribeCollectionItems",
        "aoss:CreateCollectionItems",
        "aoss:UpdateCollectionItems",
    ],
    "index": ["aoss:CreateIndex", "aoss:DescribeIndex", "aoss:UpdateIndex", "aoss:DeleteIndex"],
}


class VectorStore(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        data_key: kms.IKey,
        reader: iam.IRole,
    ) -> None:
        """`reader`: the knowledge base's role, named in the data access policy."""
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.collection_name = name = f"{config.prefix}-kb"
        collection_rule = {"ResourceType": "collection", "Resource": [f"collection/{name}"]}
        self.encryption_policy = aoss.CfnSecurityPolicy(
            self,
            "EncryptionPolicy",
            name=name,
            type="encryption",
            description="The knowledge base's vectors, encrypted with the data key",
            policy=stack.to_json_string(
                {"Rules": [collection_rule], "AWSOwnedKey": False, "KmsARN": data_key.key_arn}
            ),
        )
        self.network_policy = aoss.CfnSecurityPolicy(
            self,
            "NetworkPolicy",
            name=name,
            type="network",
            description="The collection API, signed requests only; no dashboards",
            policy=stack.to_json_string([{"Rules": [collection_rule], "AllowFromPublic": True}]),
        )
        self.collection = aoss.CfnCollection(
            self,
            "Collection",
            name=name,
            type="VECTORSEARCH",
            description="firepipe's knowledge base (Bedrock)",
            standby_replicas="ENABLED" if config.name in STANDBY_ENVIRONMENTS else "DISABLED",
        )
        self.collection.add_resource_dependency(self.encryption_policy)
        self.collection.add_resource_dependency(self.network_policy)
        self.deployer_arn = _deployer_arn(stack)
        self.access_policy = aoss.CfnAccessPolicy(
            self,
            "AccessPolicy",
            name=name,
            type="data",
            description="The knowledge base's role and the deployment",
            policy=stack.to_json_string(
                [
                    _grant(name, reader.role_arn, KB_PERMISSIONS, "the knowledge base"),
                    _grant(name, self.deployer_arn, DEPLOYER_PERMISSIONS, "the deployment"),
                ]
            ),
        )
        self.index = aoss.CfnIndex(
            self,
            "Index",
            collection_endpoint=self.collection.attr_collection_endpoint,
            index_name=INDEX_NAME,
            settings=aoss.CfnIndex.IndexSettingsProperty(
                index=aoss.CfnIndex.IndexProperty(knn=True, knn_algo_param_ef_search=512)
            ),
            mappings=aoss.CfnIndex.MappingsProperty(
                properties={
                    VECTOR_FIELD: aoss.CfnIndex.PropertyMappingProperty(
                        type="knn_vector",
                        dimension=EMBEDDING_DIMENSIONS,
                        # Bedrock's knowledge bases on OpenSearch Serverless: HNSW in faiss,
                        # Euclidean distance.
                        method=aoss.CfnIndex.MethodProperty(
                            name="hnsw", engine="faiss", space_type="l2"
                        ),
                    ),
                    TEXT_FIELD: aoss.CfnIndex.PropertyMappingProperty(type="text", index=True),
                    METADATA_FIELD: aoss.CfnIndex.PropertyMappingProperty(type="text", index=False),
                }
            ),
        )
        # The index is created through the collection's API: the deployment needs its access.
        self.index.add_resource_dependency(self.access_policy)
        for resource in (
            self.encryption_policy,
            self.network_policy,
            self.collection,
            self.access_policy,
            self.index,
        ):
            resource.apply_removal_policy(config.removal_policy)

    def grant_api_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """aoss:APIAccessAll on the collection: the IAM half of data access (the data access
        policy is the other)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["aoss:APIAccessAll"],
            resource_arns=[self.collection.attr_arn],
        )


def _grant(
    collection: str, principal: str, permissions: dict[str, list[str]], who: str
) -> dict[str, Any]:
    return {
        "Description": who,
        "Rules": [
            {
                "ResourceType": "collection",
                "Resource": [f"collection/{collection}"],
                "Permission": permissions["collection"],
            },
            {
                "ResourceType": "index",
                "Resource": [f"index/{collection}/*"],
                "Permission": permissions["index"],
            },
        ],
        "Principal": [principal],
    }


def _deployer_arn(stack: Stack) -> str:
    """The role CloudFormation deploys this stack with (the CDK bootstrap's execution role)."""
    arn = getattr(stack.synthesizer, "cloud_formation_execution_role_arn", None)
    if not isinstance(arn, str):
        raise TypeError(
            f"{stack.stack_name}: the stack's synthesizer names no CloudFormation execution "
            "role, which the collection's data access policy must admit to create the index"
        )
    return Fn.sub(arn)  # the synthesizer writes ${AWS::Partition} in it
