"""The AWS calls each function's code makes, as IAM grants: (action, resource) pairs, the resource named by the
template's logical id (with an object-key pattern for S3), ``LOG_GROUP`` for the function's own log group and
``"*"`` only where the service has no resource-level permissions (X-Ray).

Kept beside the handlers so that a change to what a function calls and a change to what its role allows are made
together: tests/template derives every role's grants from the transformed template and compares them with this
table, both ways (an extra grant fails as much as a missing one). Nothing here runs in Lambda.
"""

from __future__ import annotations

LOG_GROUP = "LogGroup"  # the function's own log group (LoggingConfig.LogGroup)
IMAGES = "ImagesBucket/images/*"  # generated images, result.json and failure.json of tasks and events
UPLOADS = "ImagesBucket/uploads/*"  # uploaded edit inputs, and the inputs an async edit keeps for the worker

# Every function: its log lines (Powertools Logger and the EMF metrics lines) and its traces.
RUNTIME = {
    ("logs:CreateLogStream", LOG_GROUP),
    ("logs:PutLogEvents", LOG_GROUP),
    ("xray:PutTraceSegments", "*"),
    ("xray:PutTelemetryRecords", "*"),
}

# imagecore.storage.store.ImageStore: put_object, get_object (read_json; a missing key is 404 or 403 alike, so no
# s3:ListBucket), generate_presigned_url(get_object).
STORE_IMAGES = {("s3:PutObject", IMAGES), ("s3:GetObject", IMAGES)}
# imagecore.storage.store.ImageStore.list_folder (list_objects_v2): the bucket, only under an s3:prefix condition. The
# worker lists a job's folder on a redelivery, the synchronous routes an Idempotency-Key's folder on a retry, for
# the images a run that died had stored.
LIST_JOB_FOLDERS = {("s3:ListBucket", "ImagesBucket?prefix=images/*")}
LIST_KEYED_FOLDERS = {("s3:ListBucket", "ImagesBucket?prefix=images/keyed/*")}
# imagecore.usecases.idempotency.Idempotency (Powertools' DynamoDB persistence layer).
IDEMPOTENCY = {
    ("dynamodb:GetItem", "IdempotencyTable"),
    ("dynamodb:PutItem", "IdempotencyTable"),
    ("dynamodb:UpdateItem", "IdempotencyTable"),
    ("dynamodb:DeleteItem", "IdempotencyTable"),
}
# imagecore.jobs.submitter.TaskSubmitter: TaskStore.create (put_item), TaskStore.fail when the queue refuses
# (update_item), JobQueue.send (send_message).
SUBMIT_TASKS = {
    ("dynamodb:PutItem", "TasksTable"),
    ("dynamodb:UpdateItem", "TasksTable"),
    ("sqs:SendMessage", "JobsQueue"),
}
# imagecore.usecases.service.upstream_key_reader and imagecore.platform.settings.prompt_digest_key_reader
# (Powertools parameters.get_secret).
UPSTREAM_KEY = {("secretsmanager:GetSecretValue", "UpstreamApiKeySecret")}
PROMPT_DIGEST_KEY = {("secretsmanager:GetSecretValue", "PromptDigestKeySecret")}
# imagecore.accounts.token_usage.TokenImageCounter: reserve and give back a client token's images (update_item).
TOKEN_IMAGES = {("dynamodb:UpdateItem", "TokenUsageTable")}
# imagecore.accounts.client_tokens.signing_key_reader (Powertools parameters.get_secret).
SIGNING_KEY = {("secretsmanager:GetSecretValue", "ClientTokenSigningSecret")}

# imagecore.accounts.ledger.UsageLedger: reserve (transact_write_items of conditional updates), the refusal's read-back
# (get_item), settle (update_item), an async task's hold (put_item; delete_item when it could not be queued).
KEY_BUDGETS = {
    ("dynamodb:GetItem", "UsageTable"),
    ("dynamodb:PutItem", "UsageTable"),
    ("dynamodb:UpdateItem", "UsageTable"),
    ("dynamodb:DeleteItem", "UsageTable"),
}

# imagecore.accounts.webhook_secrets.WebhookSecrets: the owner's item (get_item, put_item when made, update_item
# when rotated), its secrets KMS-encrypted and decrypted.
WEBHOOK_SECRETS = {
    ("dynamodb:GetItem", "WebhookSecretsTable"),
    ("dynamodb:PutItem", "WebhookSecretsTable"),
    ("dynamodb:UpdateItem", "WebhookSecretsTable"),
    ("kms:Encrypt", "WebhookSecretsKey"),
    ("kms:Decrypt", "WebhookSecretsKey"),
}

PERMISSIONS: dict[str, set[tuple[str, str]]] = {
    # The async routes never call the upstream: no upstream key.
    "GenerationsFunction": RUNTIME
    | STORE_IMAGES
    | IDEMPOTENCY
    | SUBMIT_TASKS
    | PROMPT_DIGEST_KEY
    | KEY_BUDGETS
    | TOKEN_IMAGES,
    "EditsFunction": RUNTIME
    | STORE_IMAGES
    | IDEMPOTENCY
    | KEY_BUDGETS
    | SUBMIT_TASKS
    | PROMPT_DIGEST_KEY
    | TOKEN_IMAGES
    # imagecore.storage.store.UploadStore: read (head_object, get_object) and keep_inputs (put_object)
    | {("s3:GetObject", UPLOADS), ("s3:PutObject", UPLOADS)},
    # UploadStore.presign: generate_presigned_post carries the role's right to put, under uploads/ only
    "UploadsFunction": RUNTIME | IDEMPOTENCY | {("s3:PutObject", UPLOADS)},
    # TaskStore.get (get_item) and ImageStore.presign / read_json of a large result
    "TasksFunction": RUNTIME | {("dynamodb:GetItem", "TasksTable"), ("s3:GetObject", IMAGES)},
    "WorkerFunction": RUNTIME
    | STORE_IMAGES
    | LIST_JOB_FOLDERS
    | UPSTREAM_KEY
    | PROMPT_DIGEST_KEY
    | {
        ("s3:GetObject", UPLOADS),  # an edit task's kept inputs
        ("dynamodb:GetItem", "TasksTable"),  # TaskStore.get, job claims
        ("dynamodb:UpdateItem", "TasksTable"),  # start, complete, fail, claims
        ("events:PutEvents", "ImageEventsBus"),  # ImageGenerationCompleted / Failed
        ("sqs:SendMessage", "JobsDeadLetterQueue"),  # jobs that can never run, with the reason
        # the SQS event source mapping, with this role
        ("sqs:ReceiveMessage", "JobsQueue"),
        ("sqs:DeleteMessage", "JobsQueue"),
        ("sqs:GetQueueAttributes", "JobsQueue"),
        # UsageLedger.settle_task: an async task's hold, removed as it is read, then settled
        ("dynamodb:DeleteItem", "UsageTable"),
        ("dynamodb:UpdateItem", "UsageTable"),
        # TokenImageCounter.release: the client token's images an ended task did not make
        ("dynamodb:UpdateItem", "TokenUsageTable"),
    },
    # the streamed image routes (the ASGI app behind the Lambda Web Adapter): generate or edit, store, presign,
    # once per Idempotency-Key; no tasks (the async routes stay with the buffered functions)
    "GenerationsStreamFunction": RUNTIME
    | STORE_IMAGES
    | LIST_KEYED_FOLDERS
    | IDEMPOTENCY
    | UPSTREAM_KEY
    | PROMPT_DIGEST_KEY
    | KEY_BUDGETS
    | TOKEN_IMAGES,
    "EditsStreamFunction": RUNTIME
    | STORE_IMAGES
    | LIST_KEYED_FOLDERS
    | IDEMPOTENCY
    | KEY_BUDGETS
    | UPSTREAM_KEY
    | PROMPT_DIGEST_KEY
    | TOKEN_IMAGES
    | {("s3:GetObject", UPLOADS)},  # UploadStore.read of the caller's uploaded inputs
    # POST /v1/responses (streamed like the image routes): store and presign its images, read the caller's uploads
    # (UploadStore.read), keep and read conversations (imagecore.storage.conversations: get_item, put_item)
    "ResponsesFunction": RUNTIME
    | STORE_IMAGES
    | IDEMPOTENCY
    | KEY_BUDGETS
    | UPSTREAM_KEY
    | PROMPT_DIGEST_KEY
    | TOKEN_IMAGES
    | {
        ("s3:GetObject", UPLOADS),
        ("dynamodb:GetItem", "ConversationsTable"),
        ("dynamodb:PutItem", "ConversationsTable"),
    },
    # imagecore.accounts.auth.keyring_loader: the hashed keys
    # and the client-token signing key (imagecore.accounts.client_tokens.signing_key_reader)
    "AuthorizerFunction": RUNTIME | {("secretsmanager:GetSecretValue", "ApiKeysSecret")} | SIGNING_KEY,
    # POST /v1/client_tokens signs with it
    "ClientTokensFunction": RUNTIME | SIGNING_KEY,
    # UsageLedger.usage: the caller's days (query on its partition) and month (get_item)
    "UsageFunction": RUNTIME | {("dynamodb:Query", "UsageTable"), ("dynamodb:GetItem", "UsageTable")},
    "HealthFunction": RUNTIME,
    # imagecore.usecases.webhooks: a task's end from the tasks table's stream (the event source mapping's reads),
    # each attempt claimed and recorded on the task (WebhookRecords: update_item), its images presigned (and a
    # large result's result.json read), the next attempt queued (WebhookQueue.send) and the queue polled, the
    # stream's failed records dead-lettered, the owner's secrets read (made on a first delivery) and decrypted
    "WebhookFunction": RUNTIME
    | {
        ("dynamodb:DescribeStream", "TasksTable/stream"),
        ("dynamodb:GetRecords", "TasksTable/stream"),
        ("dynamodb:GetShardIterator", "TasksTable/stream"),
        ("dynamodb:ListStreams", "TasksTable/stream"),
        ("dynamodb:UpdateItem", "TasksTable"),
        ("s3:GetObject", IMAGES),
        ("sqs:SendMessage", "WebhooksQueue"),
        ("sqs:ReceiveMessage", "WebhooksQueue"),
        ("sqs:DeleteMessage", "WebhooksQueue"),
        ("sqs:GetQueueAttributes", "WebhooksQueue"),
        ("sqs:SendMessage", "WebhooksDeadLetterQueue"),
    }
    | WEBHOOK_SECRETS - {("dynamodb:UpdateItem", "WebhookSecretsTable")},
    # GET /v1/webhooks/secret (made on first use) and POST /v1/webhooks/secret/rotate
    "WebhookSecretsFunction": RUNTIME | WEBHOOK_SECRETS,
}
