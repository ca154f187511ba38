"""The environment variables the AWS deployment sets (the CDK app passes them to the ECS tasks),
named once for every resource factory that reads them through `dg.EnvVar`."""

AWS_REGION_VAR = "AWS_REGION"
LAKE_WAREHOUSE_VAR = "FIREPIPE_LAKE_WAREHOUSE"
BATCH_JOB_DEFINITION_VAR = "FIREPIPE_BATCH_JOB_DEFINITION"
BATCH_GPU_JOB_DEFINITION_VAR = "FIREPIPE_BATCH_GPU_JOB_DEFINITION"  # the CUDA image's (optional)
BATCH_CPU_QUEUE_VAR = "FIREPIPE_BATCH_CPU_QUEUE"
BATCH_GPU_QUEUE_VAR = "FIREPIPE_BATCH_GPU_QUEUE"
PIPES_BUCKET_VAR = "FIREPIPE_PIPES_BUCKET"
GENERATION_HISTORY_TABLE_VAR = "FIREPIPE_GENERATION_HISTORY_TABLE"
ATHENA_WORKGROUP_VAR = "FIREPIPE_ATHENA_WORKGROUP"
ATHENA_OUTPUT_LOCATION_VAR = "FIREPIPE_ATHENA_OUTPUT_LOCATION"  # s3://bucket/prefix/ for results
EMR_APPLICATION_ID_VAR = "FIREPIPE_EMR_APPLICATION_ID"
EMR_EXECUTION_ROLE_ARN_VAR = "FIREPIPE_EMR_EXECUTION_ROLE_ARN"
EMR_ENTRY_POINT_VAR = "FIREPIPE_EMR_ENTRY_POINT"  # s3:// URI of services/spark_features.py
EMR_PYTHON_VAR = "FIREPIPE_EMR_PYTHON"  # Python 3.11 with firepipe in the application's image

# The Snowflake names are the ones the dbt project's aws target reads (dbt/profiles.yml), so one
# set of secrets serves both.
SNOWFLAKE_ACCOUNT_VAR = "SNOWFLAKE_ACCOUNT"
SNOWFLAKE_USER_VAR = "SNOWFLAKE_USER"
SNOWFLAKE_PASSWORD_VAR = "SNOWFLAKE_PASSWORD"
SNOWFLAKE_PRIVATE_KEY_VAR = "SNOWFLAKE_PRIVATE_KEY"
SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_VAR = "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
SNOWFLAKE_ROLE_VAR = "SNOWFLAKE_ROLE"
SNOWFLAKE_WAREHOUSE_VAR = "SNOWFLAKE_WAREHOUSE"
SNOWFLAKE_DATABASE_VAR = "SNOWFLAKE_DATABASE"
FIELD_TABLE_VAR = "FIREPIPE_FIELD_TABLE"  # [schema.]table of field readings in Snowflake
WATERMARKS_TABLE_VAR = "FIREPIPE_WATERMARKS_TABLE"
LANDING_BUCKET_VAR = "FIREPIPE_LANDING_BUCKET"
LANDING_PREFIX_VAR = "FIREPIPE_LANDING_PREFIX"
SAGEMAKER_ROLE_ARN_VAR = "FIREPIPE_SAGEMAKER_ROLE_ARN"  # execution role of training jobs
TRAINING_IMAGE_URI_VAR = "FIREPIPE_TRAINING_IMAGE_URI"  # the firepipe training image in ECR
TRAINING_BUCKET_VAR = "FIREPIPE_TRAINING_BUCKET"  # data channels and model artifacts
MLFLOW_TRACKING_SERVER_ARN_VAR = "FIREPIPE_MLFLOW_TRACKING_SERVER_ARN"
NOTIFICATIONS_TOPIC_ARN_VAR = "FIREPIPE_NOTIFICATIONS_TOPIC_ARN"  # SNS topic (.fifo for dedup)
DAGSTER_UI_URL_VAR = "FIREPIPE_DAGSTER_UI_URL"  # base URL of links to runs in notifications
# Spark features on a transient EMR-on-EC2 cluster (FIREPIPE_SPARK_ENGINE=emr); the entry point
# and Python are FIREPIPE_EMR_ENTRY_POINT and FIREPIPE_EMR_PYTHON, as on EMR Serverless.
EMR_SERVICE_ROLE_VAR = "FIREPIPE_EMR_SERVICE_ROLE"
EMR_INSTANCE_PROFILE_VAR = "FIREPIPE_EMR_INSTANCE_PROFILE"  # the nodes' EC2 instance profile
EMR_SUBNET_ID_VAR = "FIREPIPE_EMR_SUBNET_ID"
EMR_LOG_URI_VAR = "FIREPIPE_EMR_LOG_URI"  # s3:// prefix of cluster and step logs
EMR_SECURITY_CONFIGURATION_VAR = "FIREPIPE_EMR_SECURITY_CONFIGURATION"
EMR_BOOTSTRAP_SCRIPT_VAR = "FIREPIPE_EMR_BOOTSTRAP_SCRIPT"  # s3:// script: Python 3.11 + firepipe
# Spark features as runs of a Glue 5 job (FIREPIPE_SPARK_ENGINE=glue) that the CDK app defines.
GLUE_JOB_NAME_VAR = "FIREPIPE_GLUE_JOB_NAME"
# The inference service's API keys on ECS: a Secrets Manager secret's ARN or name.
API_KEYS_SECRET_VAR = "FIREPIPE_API_KEYS_SECRET"
# Serving (firepipe.resources.endpoint): the inference image in ECR, the execution role of the
# SageMaker models (reads the model archives, pulls the image, runs batch transform jobs) and
# the bucket of model archives and transform input/output.
SERVING_IMAGE_URI_VAR = "FIREPIPE_SERVING_IMAGE_URI"
SERVING_ROLE_ARN_VAR = "FIREPIPE_SERVING_ROLE_ARN"
SERVING_BUCKET_VAR = "FIREPIPE_SERVING_BUCKET"
# Set by the endpoint resource in the inference container's environment: the registered version
# it serves ("firepipe-fire-detector/7"), its predictions' model_version.
MODEL_VERSION_VAR = "FIREPIPE_MODEL_VERSION"
# The feature store (firepipe.resources.feature_store): the role Feature Store writes the
# offline store with, and the s3:// prefix of the offline store's Iceberg table.
FEATURE_STORE_ROLE_ARN_VAR = "FIREPIPE_FEATURE_STORE_ROLE_ARN"
FEATURE_STORE_OFFLINE_URI_VAR = "FIREPIPE_FEATURE_STORE_OFFLINE_URI"
# The agents' state store (firepipe.resources.state_store): the table of each key's current
# state and the table of its history (the CDK app creates both, with point-in-time recovery).
STATE_TABLE_VAR = "FIREPIPE_STATE_TABLE"
STATE_HISTORY_TABLE_VAR = "FIREPIPE_STATE_HISTORY_TABLE"
# The agents' messaging (firepipe.resources.queue, .topic): the SQS queues are named
# <prefix><name> with dead-letter queues <prefix><name>-dlq (prefix e.g. "firepipe-"); the SNS
# topic of agent events fans out to them.
QUEUE_PREFIX_VAR = "FIREPIPE_QUEUE_PREFIX"
EVENTS_TOPIC_ARN_VAR = "FIREPIPE_EVENTS_TOPIC_ARN"
# "true" when the agents' queues (and the events topic) are FIFO: names ending .fifo, each
# message group kept in order (a worker's crash cannot let later readings overtake earlier).
QUEUE_FIFO_VAR = "FIREPIPE_QUEUE_FIFO"
# The escalation state machine (firepipe.resources.escalation; the CDK app creates it from
# firepipe.core.agents.escalation.state_machine_definition): one execution per alert.
ESCALATION_STATE_MACHINE_ARN_VAR = "FIREPIPE_ESCALATION_STATE_MACHINE_ARN"
# Powertools idempotency records of the agents' handlers (firepipe.lib.idempotency): a table
# with partition key `id` and TTL on `expiration` (the CDK app creates it).
IDEMPOTENCY_TABLE_VAR = "FIREPIPE_IDEMPOTENCY_TABLE"
# The local notifier's optional webhook (read where the local outbox is built, unset: none):
# each new notification is POSTed there as JSON.
ALERT_WEBHOOK_URL_VAR = "FIREPIPE_ALERT_WEBHOOK_URL"
# The Bedrock Knowledge Base (firepipe.resources.knowledge_base): its id, its S3 data source's
# id, and the bucket and key prefix that data source reads the documents from.
KB_ID_VAR = "FIREPIPE_KB_ID"
KB_DATA_SOURCE_ID_VAR = "FIREPIPE_KB_DATA_SOURCE_ID"
KB_BUCKET_VAR = "FIREPIPE_KB_BUCKET"
KB_PREFIX_VAR = "FIREPIPE_KB_PREFIX"
# The Bedrock agent that `firepipe agent ask` talks to (firepipe.resources.agent_runtime): its
# id and the alias to invoke (e.g. TSTALIASID for the working draft).
AGENT_ID_VAR = "FIREPIPE_AGENT_ID"
AGENT_ALIAS_ID_VAR = "FIREPIPE_AGENT_ALIAS_ID"
