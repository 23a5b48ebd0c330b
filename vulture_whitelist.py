"""Names vulture cannot see being used: our code writes them, a framework or a serializer reads them."""

# pydantic: the class configuration, and fields that reach the client, the upstream or the OpenAPI document
# only through model_dump() and the schema
model_config
_.output_compression, _.background, _.moderation, _.partial_images, _.user
_.input_tokens, _.total_tokens, _.b64_json, _.image_url, _.version

# the request log line: RequestRecord fields are written by asdict()
_.prompt_chars, _.prompt_hmac, _.images_in, _.dropped_params, _.idempotent_replay, _.error_code
_.sizes_returned, _.formats_returned, _.bytes_returned, _.upstream_request_id, _.attempt_errors, _.images_recovered
_.client_token_id

# a task record's fields are stored by name (Task.to_item)
_.claimed_until

# the upstream reader's limit on an error body
MAX_ERROR_BODY_BYTES

# the LambdaContext interface the local stack and the benchmark implement
_.memory_limit_in_mb, _.invoked_function_arn, _.function_version, _.log_group_name, _.log_stream_name

# Pillow reads its module-level limits (set explicitly: a truncated image is an error, never padded; its own
# bomb guard follows the input pixel limit)
_.LOAD_TRUNCATED_IMAGES, _.MAX_IMAGE_PIXELS

# the local Lambda runtime gives shared Powertools objects a per-invocation subclass (read by Python itself)
_.__class__

# a key's budgets are read by name (Budget.limit, Budget.as_dict); GET /v1/usage fields reach the client through
# the model's schema and dump
_.images_per_day, _.images_per_month, _.tokens_per_day, _.tokens_per_month
_.upstream_seconds, _.resets_in_seconds, _.totals

# the IAM grants each function's code needs, read by tests/template against the template's roles
PERMISSIONS

# the streamed edge's fields of the request log line (asdict), the ASGI factory run.sh names, and uvicorn's stop flag
_.events_relayed, _.keepalives_sent, _.client_disconnected, _.partial_images_stored
streamed_app
_.should_exit

# POST /v1/responses: the text model's options reach the upstream through model_dump(include=PASSED_THROUGH)
_.tool_choice, _.instructions, _.temperature, _.top_p, _.max_output_tokens, _.max_tool_calls
_.parallel_tool_calls, _.reasoning, _.truncation, _.include, _.safety_identifier, _.prompt_cache_key
_.service_tier, _.stream_options

# the index's links (GET / and /v1) reach the client through the model's dump
_.docs, _.playground, _.openapi

# how many concurrency leases a subject holds now: read by the tests and by an operator's console session
_.in_flight
