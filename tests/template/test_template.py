"""template.yaml, checked offline: cfn-lint, `sam validate --lint`, the SAM transform (routes, timeouts,
authorizer, gateway responses, IAM, bucket, the async side: tables, jobs queue, worker, event bus and rule), the
environment each function gets against its settings model, and the layer's requirements.txt against uv.lock.

Nothing here needs AWS credentials or the network.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import inspect
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from imagecore.accounts.auth import Keyring
from imagecore.domain.models import EditUploadRequest, UploadRef
from imagecore.jobs.messages import REQUESTED, GenerationJob, parse_job
from imagecore.jobs.tasks import TASK_TTL_SECONDS, Task, task_folder
from imagecore.platform.route_settings import (
    REVOCATION_SECONDS,
    AuthorizerSettings,
    ClientTokenSettings,
    PublicPageSettings,
    TaskReadSettings,
    UploadSettings,
    UsageSettings,
    WebhookSecretSettings,
    WebhookSettings,
)
from imagecore.platform.settings import (
    MAX_INLINE_REQUEST_BYTES,
    EditSettings,
    EditTaskSettings,
    GenerationSettings,
    ImageSettings,
    ResponsesSettings,
    WorkerSettings,
)
from imagecore.storage.store import ImageStore, ImageToStore, UploadStore, owner_prefix
from imagecore.usecases.idempotency import Idempotency
from tests.template import sam_validate

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REQUIREMENTS = ROOT / "layers" / "imagecore" / "requirements.txt"

REGION = "us-east-1"
UPSTREAM_BASE_URL = "https://sub2api.example.com/v1"
# Stand-ins for what CloudFormation resolves at deploy time.
REF_VALUES = {
    "ImagesBucket": "image-service-imagesbucket-1a2b3c4d5e6f",
    "UpstreamApiKeySecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:UpstreamApiKeySecret-AbCdEf",
    "UpstreamSimulatorKeySecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:UpstreamSimulatorKey-StUvWx",
    "UpstreamSimulatorFunctionUrl.FunctionUrl": "https://abcdefghijklmnop.lambda-url.us-east-1.on.aws/",
    "ApiKeysSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ApiKeysSecret-GhIjKl",
    "PromptDigestKeySecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:PromptDigestKeySecret-MnOpQr",
    "TasksTable": "image-service-TasksTable-1A2B3C4D5E6F",
    "IdempotencyTable": "image-service-IdempotencyTable-6F5E4D3C2B1A",
    "JobsQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/image-service-JobsQueue-AbCdEfGhIjKl",
    "JobsDeadLetterQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/image-service-JobsDeadLetterQueue-MnOp",
    "ImageEventsBus": "image-service-images",
    "UsageTable": "image-service-UsageTable-0A1B2C3D4E5F",
    "TokenUsageTable": "image-service-TokenUsageTable-0A1B2C3D4E5F",
    "ConversationsTable": "image-service-ConversationsTable-0A1B2C3D4E5F",
    "ClientTokenSigningSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ClientTokenSigning-QrStUv",
}

GENERATIONS_ROUTE = ("POST", "/v1/images/generations")
EDITS_ROUTE = ("POST", "/v1/images/edits")
GENERATIONS_ASYNC_ROUTE = ("POST", "/v1/images/generations/async")
EDITS_ASYNC_ROUTE = ("POST", "/v1/images/edits/async")
TASK_ROUTE = ("GET", "/v1/images/tasks/{task_id}")
UPLOADS_ROUTE = ("POST", "/v1/uploads")
USAGE_ROUTE = ("GET", "/v1/usage")
CLIENT_TOKENS_ROUTE = ("POST", "/v1/client_tokens")
RESPONSES_ROUTE = ("POST", "/v1/responses")
WEBHOOK_SECRET_ROUTE = ("GET", "/v1/webhooks/secret")
WEBHOOK_ROTATE_ROUTE = ("POST", "/v1/webhooks/secret/rotate")
HEALTH_ROUTE = ("GET", "/v1/health")
ASSETS_ROUTE = ("GET", "/v1/assets/{name}")  # the pages' scripts and styles, not an API operation
PAGES = (("GET", "/v1/openapi.json"), ("GET", "/v1/docs"), ("GET", "/v1/playground"))
ROOT_ROUTE = ("GET", "/")  # the bare URL's index, /v1's twin (not an API operation)
INDEX_ROUTES = (ROOT_ROUTE, ("GET", "/v1"))
PUBLIC_ROUTES = (HEALTH_ROUTE, *PAGES, ASSETS_ROUTE, *INDEX_ROUTES)
PATH_PARAMETER = re.compile(r"\{(\w+)\}")  # {task_id}
# The routes behind the bearer-key authorizer, and the function each one reaches.
AUTHORIZED_ROUTES = {
    GENERATIONS_ROUTE: "GenerationsStreamFunction",
    EDITS_ROUTE: "EditsStreamFunction",
    GENERATIONS_ASYNC_ROUTE: "GenerationsFunction",
    EDITS_ASYNC_ROUTE: "EditsFunction",
    TASK_ROUTE: "TasksFunction",
    UPLOADS_ROUTE: "UploadsFunction",
    USAGE_ROUTE: "UsageFunction",
    CLIENT_TOKENS_ROUTE: "ClientTokensFunction",
    RESPONSES_ROUTE: "ResponsesFunction",
    WEBHOOK_SECRET_ROUTE: "WebhookSecretsFunction",
    WEBHOOK_ROTATE_ROUTE: "WebhookSecretsFunction",
    # keyed as at OpenAI, where listing the models is how a client checks its key
    ("GET", "/v1/models"): "HealthFunction",
    ("GET", "/v1/models/{model}"): "HealthFunction",
}
# A browser's CORS preflight of each keyed route, without the key, answered by the health function.
PREFLIGHT_ROUTES = {("OPTIONS", path): "HealthFunction" for _, path in AUTHORIZED_ROUTES}
# The routes that call the upstream: streamed integrations (no 29 s cut, no 6 MB limit) whose function runs the
# Lambda Web Adapter and outlives the upstream budget.
IMAGE_ROUTES = {
    GENERATIONS_ROUTE: "GenerationsStreamFunction",
    EDITS_ROUTE: "EditsStreamFunction",
    RESPONSES_ROUTE: "ResponsesFunction",
}
STREAMED_INTEGRATION_TIMEOUT_MS = 900_000  # the most a streamed integration may last (15 minutes)
ADAPTER_LAYER = "arn:aws:lambda:${AWS::Region}:753240598075:layer:LambdaAdapterLayer{arch}:${WebAdapterLayerVersion}"
ADAPTER_ARCHITECTURES = {"arm64": "Arm64", "x86_64": "X86"}
# What the adapter (1.x names) needs to stream: its wrapper, the invoke mode, the app's port and readiness check.
ADAPTER_VARIABLES = {
    "AWS_LAMBDA_EXEC_WRAPPER",
    "AWS_LWA_INVOKE_MODE",
    "AWS_LWA_PORT",
    "AWS_LWA_READINESS_CHECK_PATH",
    "AWS_LWA_READINESS_CHECK_HEALTHY_STATUS",
}
# The routes that answer at once (submit a task, read one, presign an upload): API Gateway's default timeout.
QUICK_ROUTES = sorted(set(AUTHORIZED_ROUTES) - set(IMAGE_ROUTES))
UPSTREAM_BUDGET_SECONDS = 300  # the longest upstream call (sizes over 2560x1440)
API_GATEWAY_DEFAULT_TIMEOUT_MS = 29000  # a route without TimeoutInMillis

# Which settings model each function reads; None: the function reads no settings of its own.
SETTINGS_OF = {
    "GenerationsFunction": ImageSettings,
    "EditsFunction": EditTaskSettings,
    "GenerationsStreamFunction": GenerationSettings,
    "EditsStreamFunction": EditSettings,
    "ResponsesFunction": ResponsesSettings,
    "UploadsFunction": UploadSettings,
    "TasksFunction": TaskReadSettings,
    "WorkerFunction": WorkerSettings,
    "AuthorizerFunction": AuthorizerSettings,
    "UsageFunction": UsageSettings,
    "ClientTokensFunction": ClientTokenSettings,
    "HealthFunction": PublicPageSettings,
    "WebhookFunction": WebhookSettings,
    "WebhookSecretsFunction": WebhookSecretSettings,
}

# The S3 object keys each function's role may act on: (action, resource) pairs, nothing else.
IMAGES_OBJECTS = "${ImagesBucket.Arn}/images/*"
UPLOADS_OBJECTS = "${ImagesBucket.Arn}/uploads/*"
S3_GRANTS = {
    "GenerationsFunction": {("s3:GetObject", IMAGES_OBJECTS), ("s3:PutObject", IMAGES_OBJECTS)},
    "GenerationsStreamFunction": {("s3:GetObject", IMAGES_OBJECTS), ("s3:PutObject", IMAGES_OBJECTS)},
    # writes and presigns its results (and previews) under images/, reads the caller's uploaded inputs
    "EditsStreamFunction": {
        ("s3:GetObject", IMAGES_OBJECTS),
        ("s3:PutObject", IMAGES_OBJECTS),
        ("s3:GetObject", UPLOADS_OBJECTS),
    },
    # stores and presigns its images (and previews, inputs kept with a conversation), reads the caller's uploads
    "ResponsesFunction": {
        ("s3:GetObject", IMAGES_OBJECTS),
        ("s3:PutObject", IMAGES_OBJECTS),
        ("s3:GetObject", UPLOADS_OBJECTS),
    },
    # writes and presigns its results under images/, reads the caller's uploaded inputs and keeps an async
    # task's checked inputs under the caller's uploads/ folder for the worker
    "EditsFunction": {
        ("s3:GetObject", IMAGES_OBJECTS),
        ("s3:PutObject", IMAGES_OBJECTS),
        ("s3:GetObject", UPLOADS_OBJECTS),
        ("s3:PutObject", UPLOADS_OBJECTS),
    },
    # a presigned POST carries the role's right to write, and only that
    "UploadsFunction": {("s3:PutObject", UPLOADS_OBJECTS)},
    # presigns a completed task's images, nothing else
    "TasksFunction": {("s3:GetObject", IMAGES_OBJECTS)},
    # stores (and finds again, on a redelivery) its images under images/, reads an edit task's kept inputs
    "WorkerFunction": {
        ("s3:GetObject", IMAGES_OBJECTS),
        ("s3:PutObject", IMAGES_OBJECTS),
        ("s3:GetObject", UPLOADS_OBJECTS),
    },
    "AuthorizerFunction": set(),
    "UsageFunction": set(),
    "ClientTokensFunction": set(),
    "HealthFunction": set(),
}
# s3:ListBucket, there only so that a missing object reads as 404 and not 403: on the bucket, and limited by an
# s3:prefix condition to these patterns (unconditioned, it would list every caller's keys).
LIST_PREFIXES = {
    "GenerationsFunction": set(),
    # a missing upload id is a 404 for the caller without it: S3's 403 for a missing key reads as missing too
    "EditsFunction": set(),
    # an Idempotency-Key's retry lists the key's folder for the images a run that died had stored
    "GenerationsStreamFunction": {"images/keyed/*"},
    "EditsStreamFunction": {"images/keyed/*"},
    "ResponsesFunction": set(),
    "UploadsFunction": set(),
    "TasksFunction": set(),
    # a first run finds no result.json (S3's 403 without s3:ListBucket reads as missing too); a redelivery lists
    # its job's folder for the images a run that died had stored
    "WorkerFunction": {"images/*"},
    "AuthorizerFunction": set(),
    "UsageFunction": set(),
    "ClientTokensFunction": set(),
    "HealthFunction": set(),
}
LISTABLE_PREFIXES = {"images/*", "uploads/*", "images/keyed/*"}

# The tables, queues and bus each role may use: (action, logical id of the resource whose Arn it is on).
TASK_SUBMISSION = {("dynamodb:PutItem", "TasksTable"), ("dynamodb:UpdateItem", "TasksTable")}
IDEMPOTENCY_RECORDS = {
    (f"dynamodb:{action}", "IdempotencyTable") for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")
}
# Budgets: reserve (conditional updates in one transaction), read back which budget refused, settle, and keep an
# async task's reservation (put) until the worker settles it (delete, then update).
KEY_BUDGETS = {(f"dynamodb:{action}", "UsageTable") for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")}
# a client token's image count: one conditional update reserves, another gives back
TOKEN_IMAGE_COUNTS = {("dynamodb:UpdateItem", "TokenUsageTable")}
DYNAMODB_GRANTS = {
    "GenerationsFunction": TASK_SUBMISSION | IDEMPOTENCY_RECORDS | KEY_BUDGETS | TOKEN_IMAGE_COUNTS,
    "EditsFunction": TASK_SUBMISSION | IDEMPOTENCY_RECORDS | KEY_BUDGETS | TOKEN_IMAGE_COUNTS,
    # the synchronous routes submit no task; they reserve and settle budgets like the buffered ones
    "GenerationsStreamFunction": IDEMPOTENCY_RECORDS | KEY_BUDGETS | TOKEN_IMAGE_COUNTS,
    "EditsStreamFunction": IDEMPOTENCY_RECORDS | KEY_BUDGETS | TOKEN_IMAGE_COUNTS,
    # and its conversations: read one (or an image by call id), keep one
    "ResponsesFunction": IDEMPOTENCY_RECORDS
    | KEY_BUDGETS
    | TOKEN_IMAGE_COUNTS
    | {("dynamodb:GetItem", "ConversationsTable"), ("dynamodb:PutItem", "ConversationsTable")},
    "UploadsFunction": IDEMPOTENCY_RECORDS,
    "TasksFunction": {("dynamodb:GetItem", "TasksTable")},  # reads; a task past its limit reads as failed
    "WorkerFunction": {
        ("dynamodb:GetItem", "TasksTable"),
        ("dynamodb:UpdateItem", "TasksTable"),
        ("dynamodb:UpdateItem", "UsageTable"),
        ("dynamodb:DeleteItem", "UsageTable"),
        # gives back the client token's images an ended task did not make
        ("dynamodb:UpdateItem", "TokenUsageTable"),
    },
    "AuthorizerFunction": set(),
    # the caller's own days (a query on its partition) and month
    "UsageFunction": {("dynamodb:Query", "UsageTable"), ("dynamodb:GetItem", "UsageTable")},
    "ClientTokensFunction": set(),
    "HealthFunction": set(),
    # a task's end from the tasks table's stream; each attempt claimed and recorded on the task; the owner's
    # signing secrets (made on a first delivery)
    "WebhookFunction": {
        ("dynamodb:DescribeStream", "TasksTable/stream"),
        ("dynamodb:GetRecords", "TasksTable/stream"),
        ("dynamodb:GetShardIterator", "TasksTable/stream"),
        ("dynamodb:ListStreams", "TasksTable/stream"),
        ("dynamodb:UpdateItem", "TasksTable"),
        ("dynamodb:GetItem", "WebhookSecretsTable"),
        ("dynamodb:PutItem", "WebhookSecretsTable"),
    },
    "WebhookSecretsFunction": {
        (f"dynamodb:{action}", "WebhookSecretsTable") for action in ("GetItem", "PutItem", "UpdateItem")
    },
}
SQS_GRANTS = {
    "GenerationsFunction": {("sqs:SendMessage", "JobsQueue")},
    "EditsFunction": {("sqs:SendMessage", "JobsQueue")},
    "GenerationsStreamFunction": set(),
    "EditsStreamFunction": set(),
    "ResponsesFunction": set(),
    "UploadsFunction": set(),
    "TasksFunction": set(),
    # sends only the jobs that can never run, with the reason; its event source mapping polls the jobs queue
    # with the worker's role
    "WorkerFunction": {
        ("sqs:SendMessage", "JobsDeadLetterQueue"),
        ("sqs:ReceiveMessage", "JobsQueue"),
        ("sqs:DeleteMessage", "JobsQueue"),
        ("sqs:GetQueueAttributes", "JobsQueue"),
    },
    "AuthorizerFunction": set(),
    "UsageFunction": set(),
    "ClientTokensFunction": set(),
    "HealthFunction": set(),
    # queues each next attempt, its event source mapping polls the queue; the stream's failed records go to the
    # dead-letter queue (the mapping's on-failure destination, with this role)
    "WebhookFunction": {
        ("sqs:SendMessage", "WebhooksQueue"),
        ("sqs:ReceiveMessage", "WebhooksQueue"),
        ("sqs:DeleteMessage", "WebhooksQueue"),
        ("sqs:GetQueueAttributes", "WebhooksQueue"),
        ("sqs:SendMessage", "WebhooksDeadLetterQueue"),
    },
    "WebhookSecretsFunction": set(),
}
EVENTS_GRANTS = {
    "GenerationsFunction": set(),
    "EditsFunction": set(),
    "GenerationsStreamFunction": set(),
    "EditsStreamFunction": set(),
    "ResponsesFunction": set(),
    "UploadsFunction": set(),
    "TasksFunction": set(),
    "WorkerFunction": {("events:PutEvents", "ImageEventsBus")},  # ImageGenerationCompleted / Failed
    "AuthorizerFunction": set(),
    "UsageFunction": set(),
    "ClientTokensFunction": set(),
    "HealthFunction": set(),
    "WebhookFunction": set(),
    "WebhookSecretsFunction": set(),
}
ARN_GRANTS = {"dynamodb": DYNAMODB_GRANTS, "sqs": SQS_GRANTS, "events": EVENTS_GRANTS}
# The variable that names each table, queue and bus to a function (a Ref: name or URL), by logical id.
RESOURCE_VARIABLES = {
    "TASKS_TABLE": "TasksTable",
    "IDEMPOTENCY_TABLE": "IdempotencyTable",
    "TOKEN_USAGE_TABLE": "TokenUsageTable",
    "JOBS_QUEUE_URL": "JobsQueue",
    "DEAD_LETTER_QUEUE_URL": "JobsDeadLetterQueue",
    "EVENT_BUS_NAME": "ImageEventsBus",
    "USAGE_TABLE": "UsageTable",
    "CONVERSATIONS_TABLE": "ConversationsTable",
    "WEBHOOK_QUEUE_URL": "WebhooksQueue",
    "WEBHOOK_SECRETS_TABLE": "WebhookSecretsTable",
}

LAMBDA_MAX_TIMEOUT_SECONDS = 900

# cfn-lint findings we accept, and why. Anything else (error, warning or informational) fails the test.
ACCEPTED_LINT_RULES = {
    # Experimental informational rule asking for a Metadata.com.aws.cloudformation.Context block (architecture
    # notes for tooling): documentation, not a defect; the design lives in README/DESIGN.md.
    "I4010",
}


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _offline_aws_env() -> Iterator[None]:
    """A region and fake credentials, so nothing reaches for a profile or the instance metadata service."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_REGION", REGION)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("SAM_CLI_TELEMETRY", "0")
        yield


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    """template.yaml as a plain dict (short-form intrinsics expanded)."""
    from cfnlint.decode import decode_str

    template, errors = decode_str(TEMPLATE.read_text())
    assert not errors, errors
    return json.loads(json.dumps(template))


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that the SAM transform makes of the template (default parameters)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.public.translator import Translator

    template = copy.deepcopy(sam)
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # `sam package` would upload these and write S3 URIs
            if isinstance(props.get(key), str):
                props[key] = f"s3://artifacts/{props[key].strip('/')}"
    translator = Translator({}, Parser(), boto_session=boto3.Session(region_name=REGION))
    return translator.translate(template, parameter_values={"UpstreamBaseUrl": UPSTREAM_BASE_URL})


@pytest.fixture(scope="module")
def api_body(cfn: dict[str, Any]) -> dict[str, Any]:
    (api,) = resources_of_type(cfn, "AWS::ApiGateway::RestApi").values()
    return api["Properties"]["Body"]


# --- helpers --------------------------------------------------------------------------------------------------


def resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == type_}


def parameter(sam: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in sam["Parameters"], f"template parameter {name} is missing"
    return sam["Parameters"][name]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def sub_string(value: Any) -> str:
    """The format string of an Fn::Sub (short or long form)."""
    assert isinstance(value, dict) and "Fn::Sub" in value, value
    sub = value["Fn::Sub"]
    return sub[0] if isinstance(sub, list) else sub


def integration_function(operation: dict[str, Any]) -> str:
    uri = sub_string(operation["x-amazon-apigateway-integration"]["uri"])
    match = re.search(r"\$\{(\w+)\.Arn\}", uri)
    assert match, uri
    return match.group(1)


def routes(api_body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, operations in api_body["paths"].items()
        for method, operation in operations.items()
    }


def security_schemes(api_body: dict[str, Any]) -> dict[str, Any]:
    if "components" in api_body:  # OpenAPI 3
        return api_body["components"]["securitySchemes"]
    return api_body["securityDefinitions"]


def role_statements(cfn: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role_name = cfn["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    role = cfn["Resources"][role_name]["Properties"]
    return [st for policy in role.get("Policies", []) for st in as_list(policy["PolicyDocument"]["Statement"])]


def is_list_bucket(statement: dict[str, Any]) -> bool:
    return "s3:ListBucket" in as_list(statement["Action"])


def s3_grants(cfn: dict[str, Any], function: str) -> set[tuple[str, str]]:
    """Every (S3 action, resource) pair a function's role is allowed on objects; resources as their Fn::Sub
    strings. s3:ListBucket statements are left to ``list_bucket_prefixes``."""
    grants = set()
    for statement in role_statements(cfn, function):
        assert statement["Effect"] == "Allow", statement
        if is_list_bucket(statement):
            continue
        assert "Condition" not in statement, statement  # would make the pairs below a loose upper bound
        actions = [str(a) for a in as_list(statement["Action"]) if str(a).startswith("s3:")]
        for action in actions:
            for resource in as_list(statement["Resource"]):
                grants.add((action, resource if isinstance(resource, str) else sub_string(resource)))
    return grants


def list_bucket_prefixes(cfn: dict[str, Any], function: str) -> set[str]:
    """The s3:prefix patterns a function's role may list the bucket under. Every s3:ListBucket grant must be a
    statement of its own, on the bucket, with exactly a StringLike condition on s3:prefix (no IfExists: a
    request without a prefix would then list everything)."""
    prefixes: set[str] = set()
    for statement in role_statements(cfn, function):
        if not is_list_bucket(statement):
            continue
        assert statement["Effect"] == "Allow", statement
        assert as_list(statement["Action"]) == ["s3:ListBucket"], statement
        assert as_list(statement["Resource"]) == [{"Fn::GetAtt": ["ImagesBucket", "Arn"]}], statement
        assert set(statement.get("Condition", {})) == {"StringLike"}, statement
        assert set(statement["Condition"]["StringLike"]) == {"s3:prefix"}, statement
        prefixes.update(as_list(statement["Condition"]["StringLike"]["s3:prefix"]))
    return prefixes


def arn_grants(cfn: dict[str, Any], function: str, service: str) -> set[tuple[str, str]]:
    """Every (action, resource) pair of one service a function's role is allowed, the resource as the logical
    id whose own Arn it is (no index ARNs, no wildcards, no conditions)."""
    grants = set()
    for statement in role_statements(cfn, function):
        actions = [str(a) for a in as_list(statement["Action"]) if str(a).startswith(f"{service}:")]
        if not actions:
            continue
        assert statement["Effect"] == "Allow", statement
        assert "Condition" not in statement, statement
        for resource in as_list(statement["Resource"]):
            assert isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}, resource
            name, attribute = resource["Fn::GetAtt"]
            assert attribute in ("Arn", "StreamArn"), resource
            if attribute == "StreamArn":  # a table's stream, which an event source mapping reads
                name += "/stream"
            grants.update((action, name) for action in actions)
    return grants


def invoked_routes(cfn: dict[str, Any], function: str) -> set[str]:
    """The "METHOD /path" source ARNs (stage and API wildcarded away) API Gateway may invoke a function for."""
    found = set()
    for permission in resources_of_type(cfn, "AWS::Lambda::Permission").values():
        props = permission["Properties"]
        if props["FunctionName"] != {"Ref": function}:
            continue
        assert props["Principal"] == "apigateway.amazonaws.com", props
        assert props["Action"] == "lambda:InvokeFunction", props
        source = sub_string(props["SourceArn"])
        prefix = "arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:${__ApiId__}/${__Stage__}/"
        assert source.startswith(prefix), source
        method, _, path = source.removeprefix(prefix).partition("/")
        found.add(f"{method} /{path}")
    return found


def role_managed_policies(cfn: dict[str, Any], function: str) -> set[str]:
    role_name = cfn["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    arns = cfn["Resources"][role_name]["Properties"].get("ManagedPolicyArns", [])
    return {str(arn).rsplit("/", 1)[-1] for arn in arns}


def resolve(value: Any, sam: dict[str, Any], overrides: dict[str, Any] | None = None) -> str:
    """What CloudFormation would put in an environment variable: parameters from their defaults (or
    ``overrides``), resources from REF_VALUES."""
    overrides = {"UpstreamBaseUrl": UPSTREAM_BASE_URL, **(overrides or {})}
    if isinstance(value, dict) and set(value) == {"Fn::If"}:  # the only condition an environment names
        condition, when_true, when_false = value["Fn::If"]
        assert condition == "UsesUpstreamSimulator", condition
        simulated = resolve({"Ref": "UpstreamSimulator"}, sam, overrides) == "true"
        return resolve(when_true if simulated else when_false, sam, overrides)
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return re.sub(
            r"\$\{([\w.]+)\}",
            lambda m: (
                REF_VALUES[m.group(1)] if m.group(1) in REF_VALUES else resolve({"Ref": m.group(1)}, sam, overrides)
            ),
            value["Fn::Sub"],
        )
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        if name in overrides:
            return str(overrides[name])
        if name in sam["Parameters"]:
            return str(sam["Parameters"][name]["Default"])
        return REF_VALUES[name]
    assert isinstance(value, str | int | float | bool), f"cannot resolve {value!r}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def env_names(model: type[BaseModel]) -> set[str]:
    """The environment variables a settings model reads: field names (case-insensitive) and aliases."""
    names = set()
    for field_name, field in model.model_fields.items():
        names.add(field_name.upper())
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias]) if alias is not None else []
        names.update(choice.upper() for choice in choices if isinstance(choice, str))
        if field.alias:
            names.add(field.alias.upper())
    return names


def exempt(variable: str, function: str) -> bool:
    """Read by Powertools or pydantic themselves, or the shared LOG_PROMPTS global that only the image functions
    use."""
    if variable.startswith(("POWERTOOLS_", "PYDANTIC_")):
        return True
    if variable in ADAPTER_VARIABLES:  # read by the Lambda Web Adapter and run.sh
        return function in IMAGE_ROUTES.values()
    model = SETTINGS_OF[function]
    return variable == "LOG_PROMPTS" and (model is None or "log_prompts" not in model.model_fields)


def bound(field: FieldInfo, constraint: str) -> Any:
    """A numeric constraint (``ge``, ``le``...) of a settings field, as pydantic keeps it in the metadata."""
    values = [getattr(m, constraint) for m in field.metadata if hasattr(m, constraint)]
    assert values, f"{field} has no {constraint} constraint"
    return values[0]


def function_env(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    return cfn["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})


def settings_from_env(
    monkeypatch: pytest.MonkeyPatch, model: type[BaseModel], environment: dict[str, str]
) -> BaseModel:
    for name in env_names(model):  # nothing from the developer's shell may fill a gap in the template
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return model()


def lifecycle_expirations(bucket: dict[str, Any]) -> list[tuple[str, Any]]:
    """(prefix, ExpirationInDays) of every enabled expiring lifecycle rule, sorted by prefix."""
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    return sorted(
        (
            (r.get("Prefix") or r.get("Filter", {}).get("Prefix"), r["ExpirationInDays"])
            for r in rules
            if r["Status"] == "Enabled" and "ExpirationInDays" in r
        ),
        key=lambda rule: str(rule[0]),
    )


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- 1. cfn-lint and sam validate -----------------------------------------------------------------------------


@pytest.mark.slow
def test_cfn_lint_finds_nothing_in_any_region() -> None:
    from cfnlint.api import lint_all

    findings = [m for m in lint_all(TEMPLATE.read_text()) if m.rule.id not in ACCEPTED_LINT_RULES]

    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in findings] == []


@pytest.mark.slow
def test_sam_validate_lint_passes() -> None:
    assert sam_validate.sam_cli().exists(), f"aws-sam-cli is not installed next to {sys.executable}"

    returncode, output = sam_validate.result(timeout=50)  # started when the session was collected

    assert returncode == 0, output
    assert "is a valid SAM Template" in output


def test_samconfig_deploys_this_template_with_known_parameters(sam: dict[str, Any]) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]

    assert config["version"] == 0.1
    assert config["default"]["global"]["parameters"]["stack_name"] == "image-service"
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert deploy["confirm_changeset"] is True
    assert config["default"]["validate"]["parameters"]["lint"] is True
    assert config["default"]["build"]["parameters"] == {"cached": True, "parallel": True}
    overrides = dict(re.findall(r'(\w+)="([^"]*)"', deploy["parameter_overrides"]))
    assert "UpstreamBaseUrl" in overrides
    assert set(overrides) <= set(sam["Parameters"]), "samconfig overrides a parameter the template lacks"


# --- 3. the transformed template: routes, integration timeout, authorizer -------------------------------------


def test_routes_are_exactly_the_image_task_upload_and_public_ones(api_body: dict[str, Any]) -> None:
    wired = {route: integration_function(op) for route, op in routes(api_body).items()}

    assert wired == {
        **AUTHORIZED_ROUTES,
        **{route: "HealthFunction" for route in PUBLIC_ROUTES},
        **PREFLIGHT_ROUTES,
    }
    for operation in routes(api_body).values():
        assert operation["x-amazon-apigateway-integration"]["type"] == "aws_proxy"


@pytest.mark.parametrize("route", sorted(IMAGE_ROUTES), ids=" ".join)
def test_image_route_is_a_streamed_integration(api_body: dict[str, Any], route: tuple[str, str]) -> None:
    integration = routes(api_body)[route]["x-amazon-apigateway-integration"]
    uri = sub_string(integration["uri"])

    # InvokeWithResponseStream: API Gateway relays the answer as it is written, no 29 s cut, no 6 MB limit.
    assert integration["responseTransferMode"] == "STREAM"
    assert uri.startswith("arn:aws:apigateway:${AWS::Region}:lambda:path/2021-11-15/functions/")
    assert uri.endswith("/response-streaming-invocations")
    assert integration["type"] == "aws_proxy"
    # A stream may last 15 minutes without any quota raise; the function ends before.
    assert integration["timeoutInMillis"] == STREAMED_INTEGRATION_TIMEOUT_MS


@pytest.mark.parametrize("route", QUICK_ROUTES, ids=" ".join)
def test_quick_route_stays_a_buffered_integration(api_body: dict[str, Any], route: tuple[str, str]) -> None:
    integration = routes(api_body)[route]["x-amazon-apigateway-integration"]

    assert integration.get("responseTransferMode", "BUFFERED") == "BUFFERED"
    assert sub_string(integration["uri"]).endswith("/invocations")


@pytest.mark.parametrize("route", QUICK_ROUTES, ids=" ".join)
def test_quick_route_answers_within_the_default_integration_timeout(
    api_body: dict[str, Any], cfn: dict[str, Any], route: tuple[str, str]
) -> None:
    integration = routes(api_body)[route]["x-amazon-apigateway-integration"]
    function = AUTHORIZED_ROUTES[route]

    # Presigning, submitting or reading a task takes milliseconds: the route keeps API Gateway's default and
    # needs no raised quota (an async route exists precisely so that the client need not wait).
    assert integration.get("timeoutInMillis", API_GATEWAY_DEFAULT_TIMEOUT_MS) <= API_GATEWAY_DEFAULT_TIMEOUT_MS
    if function not in ("GenerationsFunction", "EditsFunction"):  # these also hold the synchronous route's code
        assert cfn["Resources"][function]["Properties"]["Timeout"] * 1000 < API_GATEWAY_DEFAULT_TIMEOUT_MS


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
def test_image_function_is_told_its_integration_timeout(
    cfn: dict[str, Any], api_body: dict[str, Any], function: str
) -> None:
    env = function_env(cfn, function)
    (route,) = [route for route, name in IMAGE_ROUTES.items() if name == function]
    integration = routes(api_body)[route]["x-amazon-apigateway-integration"]

    assert int(env["INTEGRATION_TIMEOUT_MS"]) == integration["timeoutInMillis"]


@pytest.mark.parametrize("model", [GenerationSettings, EditSettings], ids=lambda m: m.__name__)
def test_integration_timeout_bounds_match_the_settings_model(model: type[BaseModel]) -> None:
    field = model.model_fields["integration_timeout_ms"]

    assert bound(field, "le") == STREAMED_INTEGRATION_TIMEOUT_MS
    assert field.default == API_GATEWAY_DEFAULT_TIMEOUT_MS  # a buffered route's, when nothing says otherwise


@pytest.mark.parametrize("route", sorted(AUTHORIZED_ROUTES), ids=" ".join)
def test_route_requires_the_bearer_key_authorizer(
    api_body: dict[str, Any], cfn: dict[str, Any], route: tuple[str, str]
) -> None:
    operation = routes(api_body)[route]
    scheme = security_schemes(api_body)["BearerKeyAuthorizer"]
    authorizer = scheme["x-amazon-apigateway-authorizer"]

    # The bearer key, and the usage plan's API key (which the authorizer supplies: ApiKeySourceType AUTHORIZER).
    assert operation["security"] == [{"BearerKeyAuthorizer": []}, {"api_key": []}]
    assert authorizer["type"] == "request"
    assert authorizer["identitySource"] == "method.request.header.Authorization"
    assert authorizer["authorizerResultTtlInSeconds"] == 30
    assert authorizer["authorizerUri"]["Fn::Sub"][1]["__FunctionArn__"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    invokers = [
        p["Properties"]
        for p in resources_of_type(cfn, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    ]
    assert [p["Principal"] for p in invokers] == ["apigateway.amazonaws.com"]


def test_task_route_takes_the_task_id_from_its_path(api_body: dict[str, Any], sam: dict[str, Any]) -> None:
    operation = routes(api_body)[TASK_ROUTE]
    event = sam["Resources"]["TasksFunction"]["Properties"]["Events"]["GetTask"]["Properties"]
    resolver_source = (ROOT / "functions" / "tasks" / "app.py").read_text()

    # The bearer key, and the usage plan's API key (which the authorizer supplies: ApiKeySourceType AUTHORIZER).
    assert operation["security"] == [
        {"BearerKeyAuthorizer": []},
        {"api_key": []},
    ]  # only the submitting key may read a task
    assert (event["Method"].upper(), event["Path"]) == TASK_ROUTE
    assert PATH_PARAMETER.findall(TASK_ROUTE[1]) == ["task_id"]
    # the function's resolver names the same parameter, so the id reaches it
    assert '"/v1/images/tasks/<task_id>"' in resolver_source


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_api_gateway_may_invoke_a_function_for_its_own_routes_only(
    api_body: dict[str, Any], cfn: dict[str, Any], function: str
) -> None:
    expected = {
        f"{method} {PATH_PARAMETER.sub('*', path)}"  # a path parameter is a wildcard in the source ARN
        for (method, path), op in routes(api_body).items()
        if integration_function(op) == function
    }

    assert invoked_routes(cfn, function) == expected
    if function in {"WorkerFunction", "AuthorizerFunction"}:
        assert expected == set()  # the worker is fed by its queue, the authorizer invoked as one


def test_public_routes_need_no_key(api_body: dict[str, Any]) -> None:
    for route in (*PUBLIC_ROUTES, *PREFLIGHT_ROUTES):
        # neither the bearer key nor a usage plan's API key
        assert routes(api_body)[route].get("security", []) in ([], [{"NONE": []}]), route


def test_deployed_routes_are_the_routes_the_code_serves(api_body: dict[str, Any]) -> None:
    from imagecore.edge.openapi import build_document

    documented = {
        (method.upper(), path) for path, operations in build_document()["paths"].items() for method in operations
    }
    assert set(routes(api_body)) - set(PREFLIGHT_ROUTES) - {ASSETS_ROUTE, ROOT_ROUTE} == documented


def test_api_is_regional_with_multipart_as_binary(cfn: dict[str, Any], api_body: dict[str, Any]) -> None:
    (api,) = resources_of_type(cfn, "AWS::ApiGateway::RestApi").values()
    props = api["Properties"]

    assert props["EndpointConfiguration"]["Types"] == ["REGIONAL"]
    assert "multipart/form-data" in api_body["x-amazon-apigateway-binary-media-types"]
    assert "multipart/form-data" in [t.replace("~1", "/") for t in props["BinaryMediaTypes"]]
    assert "application/json" not in api_body["x-amazon-apigateway-binary-media-types"]


def test_one_stage_named_by_parameter_with_tracing_and_throttling(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    stages = resources_of_type(cfn, "AWS::ApiGateway::Stage")

    assert len(stages) == 1, f"expected one stage, got {sorted(stages)}"
    (stage,) = stages.values()
    props = stage["Properties"]
    assert props["StageName"] == {"Ref": "StageName"}
    assert parameter(sam, "StageName")["Default"] == "prod"  # the routes carry /v1 themselves
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert settings["DataTraceEnabled"] is False  # bodies (prompts) never go to execution logs
    assert parameter(sam, "ApiLoggingLevel")["Default"] == "OFF"


# --- 3. gateway responses in the OpenAI error shape -----------------------------------------------------------

EXPECTED_GATEWAY_RESPONSES = {
    # type: (status or None to keep API Gateway's, error.type, error.code)
    "UNAUTHORIZED": ("401", "invalid_request_error", "invalid_api_key"),
    "ACCESS_DENIED": ("403", "invalid_request_error", "access_denied"),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "invalid_request_error", "unknown_route"),
    "THROTTLED": ("429", "rate_limit_error", "rate_limit_exceeded"),
    "QUOTA_EXCEEDED": ("429", "rate_limit_error", "quota_exceeded"),
    "INVALID_API_KEY": ("403", "invalid_request_error", "no_usage_plan"),
    "REQUEST_TOO_LARGE": ("413", "invalid_request_error", "payload_too_large"),
    "INTEGRATION_TIMEOUT": ("504", "upstream_error", "upstream_timeout"),
    "DEFAULT_4XX": (None, "invalid_request_error", None),
    "DEFAULT_5XX": (None, "server_error", None),
}


def test_over_limit_answers_say_when_to_retry(api_body: dict[str, Any]) -> None:
    responses = api_body["x-amazon-apigateway-gateway-responses"]

    for response_type in ("THROTTLED", "QUOTA_EXCEEDED"):
        retry_after = responses[response_type]["responseParameters"]["gatewayresponse.header.Retry-After"]
        assert re.fullmatch(r"'[1-9][0-9]*'", retry_after), (response_type, retry_after)


PLANS = ("Free", "Trial", "Standard")


def test_usage_identifiers_come_from_the_authorizer(cfn: dict[str, Any], api_body: dict[str, Any]) -> None:
    (api,) = resources_of_type(cfn, "AWS::ApiGateway::RestApi").values()

    # a client never sends an x-api-key header: the authorizer names the key's usage plan key
    assert api["Properties"]["ApiKeySourceType"] == "AUTHORIZER"
    assert security_schemes(api_body)["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}


def test_every_authorized_method_requires_an_api_key(api_body: dict[str, Any]) -> None:
    """So every request is throttled and counted on its key's usage plan before a function runs."""
    for route, operation in routes(api_body).items():
        if route in AUTHORIZED_ROUTES:
            assert {"api_key": []} in operation["security"], route
        else:
            assert {"api_key": []} not in operation.get("security", []), route


@pytest.mark.parametrize("plan", PLANS)
def test_usage_plan_is_parameterised_and_bound_to_the_stage(
    cfn: dict[str, Any], sam: dict[str, Any], plan: str
) -> None:
    plans = resources_of_type(cfn, "AWS::ApiGateway::UsagePlan")
    props = plans[f"{plan}UsagePlan"]["Properties"]

    assert sub_string(props["UsagePlanName"]) == "${AWS::StackName}-" + plan.lower()  # scripts/api_key.py finds it
    (stage,) = props["ApiStages"]
    assert stage["ApiId"] == {"Ref": "ImageApi"}
    (stage_resource,) = resources_of_type(cfn, "AWS::ApiGateway::Stage")
    assert stage["Stage"] == {"Ref": stage_resource}
    assert props["Throttle"] == {
        "RateLimit": {"Ref": f"{plan}PlanRateLimit"},
        "BurstLimit": {"Ref": f"{plan}PlanBurstLimit"},
    }
    assert props["Quota"] == {"Limit": {"Ref": f"{plan}PlanQuotaLimit"}, "Period": {"Ref": f"{plan}PlanQuotaPeriod"}}
    assert parameter(sam, f"{plan}PlanQuotaPeriod")["AllowedValues"] == ["DAY", "WEEK", "MONTH"]
    rate, burst = (parameter(sam, f"{plan}Plan{name}")["Default"] for name in ("RateLimit", "BurstLimit"))
    assert 1 <= rate <= burst
    # a plan never lets a key past the stage's own throttle
    assert rate <= parameter(sam, "ApiThrottlingRateLimit")["Default"]
    assert burst <= parameter(sam, "ApiThrottlingBurstLimit")["Default"]


def test_plans_are_exactly_the_named_ones(cfn: dict[str, Any]) -> None:
    assert set(resources_of_type(cfn, "AWS::ApiGateway::UsagePlan")) == {f"{plan}UsagePlan" for plan in PLANS}


def test_usage_table_counts_per_key_and_period(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["UsageTable"]["Properties"]

    assert props["KeySchema"] == [
        {"AttributeName": "account", "KeyType": "HASH"},
        {"AttributeName": "period", "KeyType": "RANGE"},
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert cfn["Resources"]["UsageTable"]["DeletionPolicy"] == "Retain"  # what was spent is not lost with the stack


def render_gateway_template(template: str) -> Any:
    """What API Gateway would send: $context.error.messageString is a quoted string, other $context
    variables are substituted raw (so they must sit inside a JSON string)."""
    rendered = template.replace("$context.error.messageString", json.dumps("Sample API Gateway message"))
    rendered = re.sub(r"\$context\.[A-Za-z.]+", "sample", rendered)
    return json.loads(rendered)


@pytest.mark.parametrize("response_type", sorted(EXPECTED_GATEWAY_RESPONSES))
def test_gateway_response_is_an_openai_error(api_body: dict[str, Any], response_type: str) -> None:
    status, error_type, code = EXPECTED_GATEWAY_RESPONSES[response_type]
    response = api_body["x-amazon-apigateway-gateway-responses"][response_type]

    assert response.get("statusCode") == status
    assert set(response["responseTemplates"]) == {"application/json"}
    body = render_gateway_template(response["responseTemplates"]["application/json"])
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"].strip()
    assert body["error"]["param"] is None
    assert (body["error"]["type"], body["error"]["code"]) == (error_type, code)


def test_unauthorized_tells_how_to_authenticate(api_body: dict[str, Any]) -> None:
    response = api_body["x-amazon-apigateway-gateway-responses"]["UNAUTHORIZED"]
    body = render_gateway_template(response["responseTemplates"]["application/json"])

    assert "Authorization: Bearer" in body["error"]["message"]
    assert response["responseParameters"]["gatewayresponse.header.WWW-Authenticate"] == "'Bearer'"


def test_default_responses_carry_api_gateways_message(api_body: dict[str, Any]) -> None:
    for response_type in ("DEFAULT_4XX", "DEFAULT_5XX"):
        template = api_body["x-amazon-apigateway-gateway-responses"][response_type]["responseTemplates"]
        assert render_gateway_template(template["application/json"])["error"]["message"] == (
            "Sample API Gateway message"
        )


def test_request_too_large_tells_how_to_upload_instead(api_body: dict[str, Any]) -> None:
    response = api_body["x-amazon-apigateway-gateway-responses"]["REQUEST_TOO_LARGE"]
    message = render_gateway_template(response["responseTemplates"]["application/json"])["error"]["message"]

    assert "POST /v1/uploads" in message
    assert "/v1/images/edits" in message
    assert UPLOADS_ROUTE in routes(api_body)
    assert EDITS_ROUTE in routes(api_body)
    # the JSON it shows is the body the edits function takes for uploaded inputs
    assert '{"images": [{"upload_id": ...}]' in message
    assert {"images", "prompt"} <= set(EditUploadRequest.model_fields)
    assert {"upload_id", "image_url"} == set(UploadRef.model_fields)  # an upload, or a small image inline
    # the limit it names is the one the edits function enforces
    assert f"about {MAX_INLINE_REQUEST_BYTES / 1e6:.1f} MB of multipart" in message
    assert EditSettings.model_fields["max_request_bytes"].default == MAX_INLINE_REQUEST_BYTES


# --- 3. functions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_function_runtime_architecture_tracing_and_layer(
    cfn: dict[str, Any], sam: dict[str, Any], function: str
) -> None:
    props = cfn["Resources"][function]["Properties"]
    (layer_name,) = resources_of_type(cfn, "AWS::Lambda::LayerVersion")
    layer = cfn["Resources"][layer_name]["Properties"]

    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert {"Ref": layer_name} in props["Layers"]
    assert props["Runtime"] in layer["CompatibleRuntimes"]
    assert props["Architectures"][0] in layer["CompatibleArchitectures"]
    code_dir = ROOT / sam["Resources"][function]["Properties"]["CodeUri"]
    module = ast.parse((code_dir / "app.py").read_text())
    functions = {n.name for n in module.body if isinstance(n, ast.FunctionDef)}
    assert "lambda_handler" in functions
    if function in IMAGE_ROUTES.values():  # the adapter starts run.sh, which serves app.streamed_app
        assert props["Handler"] == "run.sh"
        assert "streamed_app" in functions
    else:
        assert props["Handler"] == "app.lambda_handler"


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
def test_streamed_function_runs_the_web_adapter_of_its_architecture(cfn: dict[str, Any], function: str) -> None:
    props = cfn["Resources"][function]["Properties"]
    env = function_env(cfn, function)
    (architecture,) = props["Architectures"]
    adapter_layers = [sub_string(layer) for layer in props["Layers"] if isinstance(layer, dict) and "Fn::Sub" in layer]

    assert adapter_layers == [ADAPTER_LAYER.replace("{arch}", ADAPTER_ARCHITECTURES[architecture])]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/_ready"
    assert env["AWS_LWA_READINESS_CHECK_HEALTHY_STATUS"] == "200"
    assert int(env["AWS_LWA_PORT"]) > 1024


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
def test_run_script_serves_the_streamed_app_on_the_adapters_port(sam: dict[str, Any], function: str) -> None:
    from local.streaming import asgi_target

    run = ROOT / sam["Resources"][function]["Properties"]["CodeUri"] / "run.sh"
    text = run.read_text()

    assert run.stat().st_mode & 0o111, "run.sh must be executable"
    assert text.startswith("#!/bin/bash\n")
    assert asgi_target(run) == ("app:streamed_app", True)
    assert '--port "${AWS_LWA_PORT:-${PORT' in text and "--host 127.0.0.1" in text
    assert "/opt/python" in text  # the layer's packages


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
def test_image_function_outlives_the_upstream_budget(cfn: dict[str, Any], sam: dict[str, Any], function: str) -> None:
    props = cfn["Resources"][function]["Properties"]
    model = SETTINGS_OF[function]
    assert model is not None
    margin = model.model_fields["storage_margin_seconds"].default

    # the full upstream budget, then storing and the last events, well within the stream's 15 minutes
    assert props["Timeout"] > UPSTREAM_BUDGET_SECONDS + margin + 30
    assert props["Timeout"] * 1000 < STREAMED_INTEGRATION_TIMEOUT_MS
    # the idle limit the edge keeps under is API Gateway's for the template's Regional endpoint
    assert int(function_env(cfn, function)["STREAM_IDLE_LIMIT_SECONDS"]) == 300


# Memory sizes against the measured peaks: tests/template/test_capacity.py.


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
def test_image_functions_share_the_optional_reserved_concurrency(sam: dict[str, Any], function: str) -> None:
    props = sam["Resources"][function]["Properties"]

    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasGenerationsReservedConcurrency",
            {"Ref": "GenerationsReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    # reserved by default (how much room it leaves the account: tests/template/test_capacity.py)
    assert parameter(sam, "GenerationsReservedConcurrency")["Default"] > 0


@pytest.mark.parametrize("function", ["AuthorizerFunction", "UploadsFunction", "TasksFunction"])
def test_authorizer_uploads_and_tasks_are_small_and_quick(cfn: dict[str, Any], function: str) -> None:
    props = cfn["Resources"][function]["Properties"]

    assert props["MemorySize"] <= 256
    assert props["Timeout"] <= 10
    assert props["Timeout"] * 1000 < API_GATEWAY_DEFAULT_TIMEOUT_MS


def test_health_is_small_and_quick(cfn: dict[str, Any]) -> None:
    health = cfn["Resources"]["HealthFunction"]["Properties"]

    assert health["MemorySize"] <= 256
    assert health["Timeout"] <= 10


def test_worker_outlives_the_upstream_budget_and_storing(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["WorkerFunction"]["Properties"]
    # the worker stops the upstream call this long before its own end, to store the images and the result
    widest_margin = bound(WorkerSettings.model_fields["storage_margin_seconds"], "le")

    assert props["Timeout"] >= UPSTREAM_BUDGET_SECONDS + widest_margin  # the full 300 s even at the widest margin
    assert props["Timeout"] <= LAMBDA_MAX_TIMEOUT_SECONDS
    assert WorkerSettings.model_fields["upstream_large_timeout_seconds"].default == UPSTREAM_BUDGET_SECONDS
    assert "ReservedConcurrentExecutions" not in props  # its event source's maximum concurrency caps it


def test_worker_has_room_for_an_edit_task(cfn: dict[str, Any]) -> None:
    worker = cfn["Resources"]["WorkerFunction"]["Properties"]
    edits = cfn["Resources"]["EditsFunction"]["Properties"]

    # it runs edit tasks with up to sixteen inputs, like the edits function
    assert worker["MemorySize"] >= edits["MemorySize"]
    assert WorkerSettings.model_fields["max_input_image_bytes"].default == (
        EditSettings.model_fields["max_input_image_bytes"].default
    )


def test_layer_is_built_by_sam_for_the_runtime(sam: dict[str, Any]) -> None:
    layer = sam["Resources"]["CoreLayer"]

    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"].rstrip("/") == "layers/imagecore"
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert (ROOT / "layers" / "imagecore" / "imagecore" / "__init__.py").exists()
    assert REQUIREMENTS.exists()


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_every_function_has_a_log_group_with_retention(cfn: dict[str, Any], function: str) -> None:
    group = cfn["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]
    groups = [
        g["Properties"] for name, g in resources_of_type(cfn, "AWS::Logs::LogGroup").items() if {"Ref": name} == group
    ]

    assert [g["RetentionInDays"] for g in groups] == [30]


def test_globals_set_powertools_and_log_prompts(sam: dict[str, Any]) -> None:
    env = sam["Globals"]["Function"]["Environment"]["Variables"]

    assert env["POWERTOOLS_SERVICE_NAME"] == "image-service"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "ImageService"
    assert env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert parameter(sam, "LogLevel")["Default"] == "INFO"
    assert env["LOG_PROMPTS"] == {"Ref": "LogPrompts"}
    assert parameter(sam, "LogPrompts")["Default"] == "false"
    assert sorted(parameter(sam, "LogPrompts")["AllowedValues"]) == ["false", "true"]


# --- 3. least-privilege IAM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(S3_GRANTS))
def test_s3_access_is_exactly_what_the_function_needs(cfn: dict[str, Any], function: str) -> None:
    assert s3_grants(cfn, function) == S3_GRANTS[function]


def test_generations_may_only_put_and_get_objects_under_images(cfn: dict[str, Any]) -> None:
    statements = role_statements(cfn, "GenerationsFunction")
    s3 = [st for st in statements if any(str(a).startswith("s3:") for a in as_list(st["Action"]))]

    assert s3, "the generations function cannot write its images"
    for statement in s3:
        assert statement["Effect"] == "Allow"
        assert sorted(as_list(statement["Action"])) == ["s3:GetObject", "s3:PutObject"]
        for resource in as_list(statement["Resource"]):
            assert sub_string(resource) == IMAGES_OBJECTS


def test_edits_reads_and_keeps_inputs_under_uploads_and_writes_images(cfn: dict[str, Any]) -> None:
    grants = s3_grants(cfn, "EditsFunction")

    assert {resource for _, resource in grants} == {IMAGES_OBJECTS, UPLOADS_OBJECTS}, "nothing outside the two"
    # it writes under uploads/ only an async task's inputs, in the caller's folder under the task's id
    assert {action for action, resource in grants if resource == UPLOADS_OBJECTS} == {"s3:GetObject", "s3:PutObject"}
    assert {action for action, resource in grants if resource == IMAGES_OBJECTS} == {"s3:GetObject", "s3:PutObject"}


def test_worker_writes_only_images_and_reads_kept_inputs(cfn: dict[str, Any]) -> None:
    grants = s3_grants(cfn, "WorkerFunction")

    assert {action for action, resource in grants if resource == IMAGES_OBJECTS} == {"s3:GetObject", "s3:PutObject"}
    assert {action for action, resource in grants if resource == UPLOADS_OBJECTS} == {"s3:GetObject"}
    assert ("s3:PutObject", UPLOADS_OBJECTS) not in grants, "the worker must not write (or forge) an upload"


def test_tasks_function_only_presigns_images(cfn: dict[str, Any]) -> None:
    assert s3_grants(cfn, "TasksFunction") == {("s3:GetObject", IMAGES_OBJECTS)}
    assert list_bucket_prefixes(cfn, "TasksFunction") == set()


@pytest.mark.parametrize("function", sorted(LIST_PREFIXES))
def test_list_bucket_only_under_a_prefix_the_function_reads(cfn: dict[str, Any], function: str) -> None:
    prefixes = list_bucket_prefixes(cfn, function)
    readable = {resource for action, resource in s3_grants(cfn, function) if action == "s3:GetObject"}

    assert prefixes == LIST_PREFIXES[function]
    assert prefixes <= LISTABLE_PREFIXES
    # listing is there to make a missing object a 404 rather than a 403, or to find what a dead run stored: only
    # where the function reads objects
    for prefix in prefixes:
        assert any(fnmatch.fnmatchcase(f"${{ImagesBucket.Arn}}/{prefix}", pattern) for pattern in readable), prefix


def test_uploads_can_only_put_objects_under_uploads(cfn: dict[str, Any]) -> None:
    grants = s3_grants(cfn, "UploadsFunction")

    assert grants == {("s3:PutObject", UPLOADS_OBJECTS)}
    assert not any(action == "s3:GetObject" for action, _ in grants), "a presigned POST must not carry reads"
    assert not any(resource == IMAGES_OBJECTS for _, resource in grants), "callers must not upload over images"


class _RecordingS3:
    """Just enough of an S3 client to see where UploadStore.keep_inputs writes."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def put_object(self, **kwargs: Any) -> None:
        self.keys.append(kwargs["Key"])


def test_the_code_writes_under_the_granted_prefixes() -> None:
    images = _RecordingS3()
    ImageStore(images, "bucket").save([ImageToStore(b"png", "png")], created=datetime(2026, 1, 2, tzinfo=UTC))  # type: ignore[arg-type]
    assert images.keys and all(key.startswith("images/") for key in images.keys), images.keys
    for key_id in ("key_1", "../images/x", "*", ""):
        prefix = owner_prefix(key_id)
        assert prefix.startswith("uploads/"), prefix
        assert "/" not in prefix.removeprefix("uploads/").rstrip("/"), prefix  # one folder level, no escape
    # async tasks and event jobs store their images (and result.json) under images/
    assert task_folder("task_0123").startswith("images/")
    for output_prefix in (None, "team-a/batch.1"):
        job = GenerationJob("job-1", None, None, output_prefix, "eventbridge")
        assert job.folder.startswith("images/"), job.folder
    # an edit task's inputs are kept in the caller's own uploads/ folder
    s3 = _RecordingS3()
    image = SimpleNamespace(data=b"png", content_type="image/png", filename="a.png")
    UploadStore(s3, "bucket").keep_inputs("key_1", "task_0123", [("image", image), ("mask", image)])
    assert s3.keys and all(key.startswith(owner_prefix("key_1") + "task_0123/") for key in s3.keys), s3.keys


@pytest.mark.parametrize(
    ("function", "secret"),
    [
        ("GenerationsFunction", "PromptDigestKeySecret"),  # the async routes never call the upstream
        ("EditsFunction", "PromptDigestKeySecret"),
        ("UploadsFunction", None),
        ("TasksFunction", None),
        ("WorkerFunction", "UpstreamApiKeySecret"),
        ("UsageFunction", None),
        ("AuthorizerFunction", ("ApiKeysSecret", "ClientTokenSigningSecret")),
        ("ClientTokensFunction", "ClientTokenSigningSecret"),
        ("HealthFunction", None),
    ],
)
def test_roles_are_least_privilege(cfn: dict[str, Any], function: str, secret: str | tuple[str, ...] | None) -> None:
    statements = role_statements(cfn, function)

    for statement in statements:
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        actions = [str(a) for a in as_list(statement["Action"])]
        assert not any("*" in a for a in actions), actions  # neither "*", "s3:*" nor "s3:List*"
        if "*" in as_list(statement["Resource"]):  # X-Ray's write calls have no resource-level permissions
            assert set(actions) == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, statement
        # the only conditional grant would be a prefix-limited s3:ListBucket (list_bucket_prefixes checks it)
        assert "Condition" not in statement or actions == ["s3:ListBucket"], statement
    secret_statements = [
        st for st in statements if any(str(a).startswith("secretsmanager:") for a in as_list(st["Action"]))
    ]
    # the functions that log prompts also read the prompt digest's key
    digest_key = [(["secretsmanager:GetSecretValue"], [{"Ref": "PromptDigestKeySecret"}])]
    names = () if secret is None else (secret,) if isinstance(secret, str) else secret
    expected_secrets = [(["secretsmanager:GetSecretValue"], [{"Ref": name}]) for name in names]
    if secret == "UpstreamApiKeySecret":
        expected_secrets += digest_key
    assert [(as_list(st["Action"]), as_list(st["Resource"])) for st in secret_statements] == expected_secrets
    services = {str(a).split(":", 1)[0] for st in statements for a in as_list(st["Action"])}
    expected = (
        {"logs", "xray"}
        | ({"s3"} if S3_GRANTS[function] or LIST_PREFIXES[function] else set())
        | ({"secretsmanager"} if secret else set())
        | {service for service, grants in ARN_GRANTS.items() if grants[function]}
    )
    assert services == expected, f"{function} may use services it does not need"
    list_bucket_prefixes(cfn, function)  # every s3:ListBucket is prefix-limited
    # no managed policy: SAM's would grant logs on every group, and the SQS poller's every queue
    assert role_managed_policies(cfn, function) == set()


@pytest.mark.parametrize("service", sorted(ARN_GRANTS))
@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_tables_queues_and_bus_access_is_exactly_what_the_function_needs(
    cfn: dict[str, Any], function: str, service: str
) -> None:
    assert arn_grants(cfn, function, service) == ARN_GRANTS[service][function]


def test_only_the_submitting_functions_queue_jobs_and_only_the_worker_publishes(cfn: dict[str, Any]) -> None:
    senders = {
        function: {queue for action, queue in arn_grants(cfn, function, "sqs") if action == "sqs:SendMessage"}
        for function in SETTINGS_OF
    }

    assert {f for f, queues in senders.items() if "JobsQueue" in queues} == {"GenerationsFunction", "EditsFunction"}
    assert {f for f, queues in senders.items() if "JobsDeadLetterQueue" in queues} == {"WorkerFunction"}
    assert {f for f in SETTINGS_OF if arn_grants(cfn, f, "events")} == {"WorkerFunction"}


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_a_function_is_told_of_exactly_the_tables_queues_and_bus_it_may_use(cfn: dict[str, Any], function: str) -> None:
    env = function_env(cfn, function)
    told = {resource for variable, resource in RESOURCE_VARIABLES.items() if variable in env}
    allowed = {resource for service in ARN_GRANTS for _, resource in arn_grants(cfn, function, service)}
    if function == "WorkerFunction":  # its jobs queue reaches it through the event source mapping
        allowed.discard("JobsQueue")
    if function == "WebhookFunction":  # the stream and the dead-letter queue are the event source mappings'
        allowed -= {"TasksTable/stream", "WebhooksDeadLetterQueue"}

    for variable, resource in RESOURCE_VARIABLES.items():
        if variable in env:
            assert env[variable] == {"Ref": resource}, variable  # a table's name, a queue's URL, a bus's name
    assert told == allowed


# --- 3. the bucket and the secrets ----------------------------------------------------------------------------


def test_bucket_is_private_encrypted_and_expires_images_and_uploads(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    bucket = cfn["Resources"]["ImagesBucket"]
    props = bucket["Properties"]

    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    algorithm = encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert algorithm in {"AES256", "aws:kms"}
    if algorithm == "aws:kms":
        assert encryption["BucketKeyEnabled"] is True
    rules = props["LifecycleConfiguration"]["Rules"]
    # generated images after ImageRetentionDays, uploaded edit inputs after a day, nothing else
    assert lifecycle_expirations(bucket) == [("images/", {"Ref": "ImageRetentionDays"}), ("uploads/", 1)]
    assert parameter(sam, "ImageRetentionDays")["Default"] == 30
    # an upload ticket is used up long before its object expires
    assert bound(UploadSettings.model_fields["upload_expiry_seconds"], "le") < 24 * 3600
    assert any(r["Status"] == "Enabled" and "AbortIncompleteMultipartUpload" in r for r in rules)
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_bucket_policy_refuses_anything_but_tls(cfn: dict[str, Any]) -> None:
    policy = cfn["Resources"]["ImagesBucketPolicy"]
    statements = as_list(policy["Properties"]["PolicyDocument"]["Statement"])

    assert policy["Properties"]["Bucket"] == {"Ref": "ImagesBucket"}
    assert all(st["Effect"] == "Deny" for st in statements), "the bucket policy must not grant anything"
    (tls_only,) = [st for st in statements if "aws:SecureTransport" in st.get("Condition", {}).get("Bool", {})]
    assert tls_only["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    assert tls_only["Principal"] == "*"
    assert as_list(tls_only["Action"]) == ["s3:*"]
    assert as_list(tls_only["Resource"]) == [
        {"Fn::GetAtt": ["ImagesBucket", "Arn"]},
        {"Fn::Sub": "${ImagesBucket.Arn}/*"},
    ]


def test_secrets_hold_no_real_value(cfn: dict[str, Any]) -> None:
    upstream = cfn["Resources"]["UpstreamApiKeySecret"]["Properties"]
    api_keys = cfn["Resources"]["ApiKeysSecret"]["Properties"]

    assert "SecretString" not in upstream
    assert "GenerateSecretString" in upstream
    assert "put-secret-value" in upstream["Description"]
    document = json.loads(api_keys["SecretString"])
    assert document == {"keys": []}
    assert len(Keyring.from_document(document)) == 0
    # the client-token signing key: made by CloudFormation, long enough for HS256, seen by nobody
    signing = cfn["Resources"]["ClientTokenSigningSecret"]["Properties"]
    assert "SecretString" not in signing
    assert signing["GenerateSecretString"]["PasswordLength"] >= 64


def test_revocation_takes_effect_within_a_minute(cfn: dict[str, Any], api_body: dict[str, Any]) -> None:
    """A revoked key (and its client tokens) stops working once the authorizer's key cache and API Gateway's
    cache of the authorizer's answers have both expired: their sum is the documented minute."""
    scheme = security_schemes(api_body)["BearerKeyAuthorizer"]["x-amazon-apigateway-authorizer"]
    result_ttl = scheme["authorizerResultTtlInSeconds"]
    env = function_env(cfn, "AuthorizerFunction")
    keys_cache = int(env.get("KEYS_CACHE_SECONDS", AuthorizerSettings.model_fields["keys_cache_seconds"].default))

    assert result_ttl + keys_cache <= REVOCATION_SECONDS == 60
    # nothing can configure it longer: the setting itself is bounded by what is left of the minute
    assert bound(AuthorizerSettings.model_fields["keys_cache_seconds"], "le") <= REVOCATION_SECONDS
    assert AuthorizerSettings.model_fields["keys_cache_seconds"].default + result_ttl <= REVOCATION_SECONDS
    script = (ROOT / "scripts" / "api_key.py").read_text()
    assert "within 60 seconds" in script
    assert "flush_stage_authorizers_cache" in script


def test_token_usage_table_expires_its_counts(cfn: dict[str, Any]) -> None:
    table = cfn["Resources"]["TokenUsageTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"] == {"SSEEnabled": True}


def test_outputs(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]

    assert set(outputs) == {
        "ApiUrl",
        "ImagesBucketName",
        "UpstreamApiKeySecretArn",
        "ApiKeysSecretArn",
        "EventBusName",
        "JobsQueueUrl",
        "DeadLetterQueueUrl",
        "UsageTableName",
        "ApiId",
        "ApiStage",
        "TestDeployment",
        "UpstreamSimulatorUrl",
    }
    assert outputs["UsageTableName"]["Value"] == {"Ref": "UsageTable"}
    # scripts/api_key.py flushes this API stage's authorizer cache after a key change
    assert outputs["ApiId"]["Value"] == {"Ref": "ImageApi"}
    assert outputs["ApiStage"]["Value"] == {"Ref": "StageName"}
    assert sub_string(outputs["ApiUrl"]["Value"]) == (
        "https://${ImageApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}/v1"
    )
    assert outputs["ImagesBucketName"]["Value"] == {"Ref": "ImagesBucket"}
    assert outputs["UpstreamApiKeySecretArn"]["Value"] == {"Ref": "UpstreamApiKeySecret"}
    assert outputs["ApiKeysSecretArn"]["Value"] == {"Ref": "ApiKeysSecret"}
    # where a backend puts ImageGenerationRequested events (and reads the completions), sends jobs, and finds
    # the ones that could not run: the bus's name and the queues' URLs, as boto3 and the AWS CLI take them
    assert outputs["EventBusName"]["Value"] == {"Ref": "ImageEventsBus"}
    assert outputs["JobsQueueUrl"]["Value"] == {"Ref": "JobsQueue"}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "JobsDeadLetterQueue"}


# --- 3. the async side: worker event source, jobs queue, tables, event bus and rule ---------------------------


def test_worker_takes_one_job_at_a_time_from_the_jobs_queue_with_partial_failures(
    cfn: dict[str, Any], sam: dict[str, Any]
) -> None:
    (mapping,) = [
        found
        for found in resources_of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if found["Properties"]["FunctionName"] == {"Ref": "WorkerFunction"}
    ]
    props = mapping["Properties"]
    concurrency = parameter(sam, "WorkerMaximumConcurrency")
    handler = (ROOT / "functions" / "worker" / "app.py").read_text()

    assert props["FunctionName"] == {"Ref": "WorkerFunction"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}  # never the dead-letter queue
    assert props["BatchSize"] == 1  # a job may take 300 s: one per invocation, each with the full budget
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "process_partial_response" in handler  # the handler answers batchItemFailures (Powertools Batch)
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}
    # Lambda's range for an SQS event source's maximum concurrency is 2 to 1000
    assert (concurrency["Type"], concurrency["Default"], concurrency["MinValue"], concurrency["MaxValue"]) == (
        "Number",
        10,
        2,
        1000,
    )
    assert props.get("Enabled", True) is True


def test_jobs_queue_outwaits_the_worker_and_dead_letters_after_five_receives(cfn: dict[str, Any]) -> None:
    queue = cfn["Resources"]["JobsQueue"]
    dead_letters = cfn["Resources"]["JobsDeadLetterQueue"]["Properties"]
    props = queue["Properties"]
    worker_timeout = cfn["Resources"]["WorkerFunction"]["Properties"]["Timeout"]

    # A running job must never become visible to a second worker; AWS advises 6x the function's timeout for
    # an event source mapping (its retries of throttled invocations happen within the visibility timeout).
    assert props["VisibilityTimeout"] <= 12 * 3600  # SQS's longest
    assert props["VisibilityTimeout"] >= 5 * worker_timeout
    assert props["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    # every receive can happen before the message expires, and a dead letter outlives its source queue's
    # retention (a standard queue keeps the original enqueue time when it moves a message)
    assert props["MessageRetentionPeriod"] >= props["RedrivePolicy"]["maxReceiveCount"] * props["VisibilityTimeout"]
    assert dead_letters["MessageRetentionPeriod"] == 14 * 24 * 3600  # SQS's longest
    assert dead_letters["MessageRetentionPeriod"] > props["MessageRetentionPeriod"]
    assert "RedrivePolicy" not in dead_letters
    assert props["SqsManagedSseEnabled"] is True  # SSE-SQS: EventBridge can still send, no KMS grants needed
    assert dead_letters["SqsManagedSseEnabled"] is True
    assert "FifoQueue" not in props


def test_the_worker_knows_which_delivery_is_the_last(cfn: dict[str, Any]) -> None:
    """On the queue's last receive a job that still fails ends as failed instead of going silently to the
    dead-letter queue: the worker's count must be the queue's."""
    redrive = cfn["Resources"]["JobsQueue"]["Properties"]["RedrivePolicy"]
    configured = function_env(cfn, "WorkerFunction").get("JOB_MAX_RECEIVES")
    expected = int(configured) if configured is not None else WorkerSettings.model_fields["job_max_receives"].default
    assert expected == redrive["maxReceiveCount"]


@pytest.mark.parametrize("queue", ["JobsQueue", "JobsDeadLetterQueue"])
def test_only_the_rule_may_send_to_the_queue_from_eventbridge(cfn: dict[str, Any], queue: str) -> None:
    (policy,) = [
        p["Properties"]
        for p in resources_of_type(cfn, "AWS::SQS::QueuePolicy").values()
        if {"Ref": queue} in p["Properties"]["Queues"]
    ]
    (statement,) = as_list(policy["PolicyDocument"]["Statement"])

    assert policy["Queues"] == [{"Ref": queue}]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert as_list(statement["Action"]) == ["sqs:SendMessage"]
    assert as_list(statement["Resource"]) == [{"Fn::GetAtt": [queue, "Arn"]}]
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ImageGenerationRequestedRule", "Arn"]}}
    }


def test_requested_events_and_only_those_become_jobs(cfn: dict[str, Any]) -> None:
    rule = cfn["Resources"]["ImageGenerationRequestedRule"]["Properties"]
    bus = cfn["Resources"]["ImageEventsBus"]["Properties"]

    assert bus["Name"] == {"Fn::Sub": "${AWS::StackName}-images"}
    assert rule["EventBusName"] == {"Ref": "ImageEventsBus"}
    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"] == {"detail-type": [REQUESTED]}
    assert REQUESTED == "ImageGenerationRequested"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    # the whole event goes to the queue: the worker reads detail-type, id and detail from it
    assert not {"Input", "InputPath", "InputTransformer"} & set(target)
    # an event EventBridge cannot deliver is dead-lettered, never dropped
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}}
    retry = target["RetryPolicy"]
    assert retry["MaximumRetryAttempts"] >= 1
    assert 60 <= retry["MaximumEventAgeInSeconds"] <= 24 * 3600
    event = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": REQUESTED,
        "source": "my.backend",
        "detail": {"prompt": "a lighthouse at dawn", "correlation_id": "order-42"},
    }
    job = parse_job(json.dumps(event), "message-1")
    assert isinstance(job, GenerationJob)
    assert (job.job_id, job.correlation_id, job.source) == (event["id"], "order-42", "eventbridge")


@pytest.mark.parametrize("table", ["TasksTable", "IdempotencyTable"])
def test_table_is_on_demand_encrypted_and_keyed_by_a_string_id(cfn: dict[str, Any], table: str) -> None:
    resource = cfn["Resources"][table]
    props = resource["Properties"]

    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"]["Enabled"] is True
    assert not {"GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput"} & set(props)


def test_tasks_table_keys_and_ttl_are_what_the_task_records_carry(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["TasksTable"]["Properties"]
    (key,) = props["KeySchema"]
    task = Task(
        id="task_0123",
        owner="key_1",
        kind="generation",
        request={"prompt": "a cat"},
        folder="images/2026/01/02/task_0123",
        created_at=1_767_312_000,
        updated_at=1_767_312_060,
    )
    item = task.to_item()
    ttl = props["TimeToLiveSpecification"]["AttributeName"]

    assert item[key["AttributeName"]] == task.id
    assert isinstance(item[key["AttributeName"]], str)  # AttributeType S
    assert ttl == "expires_at"
    # DynamoDB TTL reads epoch seconds: 24 h after the task's last update
    assert item[ttl] == task.updated_at + TASK_TTL_SECONDS
    assert isinstance(item[ttl], int)
    assert TASK_TTL_SECONDS == 24 * 3600


def test_idempotency_table_is_what_powertools_reads_and_writes(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["IdempotencyTable"]["Properties"]
    defaults = inspect.signature(DynamoDBPersistenceLayer.__init__).parameters
    layer = Idempotency(REF_VALUES["IdempotencyTable"], region=REGION)._store  # what the functions build

    assert (defaults["key_attr"].default, defaults["expiry_attr"].default) == ("id", "expiration")
    assert (layer.key_attr, layer.expiry_attr, layer.sort_key_attr) == ("id", "expiration", None)
    assert props["KeySchema"] == [{"AttributeName": layer.key_attr, "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": layer.expiry_attr, "Enabled": True}


# --- 4. environment variables == settings fields --------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_every_environment_variable_is_a_settings_field(cfn: dict[str, Any], function: str) -> None:
    model = SETTINGS_OF[function]
    known = env_names(model) if model is not None else set()

    unknown = {name for name in function_env(cfn, function) if not exempt(name, function) and name not in known}

    assert unknown == set(), f"{function} gets variables its settings model does not read"


@pytest.mark.parametrize("function", sorted(f for f, model in SETTINGS_OF.items() if model is not None))
def test_every_required_settings_field_is_set(cfn: dict[str, Any], function: str) -> None:
    model = SETTINGS_OF[function]
    assert model is not None
    env = set(function_env(cfn, function))

    missing = [name for name, field in model.model_fields.items() if field.is_required() and name.upper() not in env]

    assert missing == []


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
def test_image_settings_load_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    model = SETTINGS_OF[function]
    assert model is not None
    env = {k: resolve(v, sam) for k, v in function_env(cfn, function).items()}

    settings = settings_from_env(monkeypatch, model, env)

    assert isinstance(settings, GenerationSettings)
    assert type(settings) is model
    assert settings.images_bucket == REF_VALUES["ImagesBucket"]
    assert settings.upstream_url == UPSTREAM_BASE_URL
    assert settings.upstream_api_key is None
    assert settings.upstream_api_key_secret_id == REF_VALUES["UpstreamApiKeySecret"]
    assert settings.integration_timeout_ms == STREAMED_INTEGRATION_TIMEOUT_MS
    assert settings.stream_idle_limit_seconds == 300
    # b64_json answers are streamed: up to Lambda's 200 MB stream, not the 6 MB buffered limit
    assert settings.max_inline_response_bytes > 200_000_000
    assert settings.presign_expiry_seconds == 3600
    assert settings.log_prompts is False
    assert settings.s3_endpoint_url is None
    # Idempotency-Key is on in AWS; the synchronous routes submit no task
    assert settings.idempotency_table == REF_VALUES["IdempotencyTable"]
    assert (settings.tasks_table, settings.jobs_queue_url) == (None, None)


@pytest.mark.parametrize("function", ["GenerationsFunction", "EditsFunction"])
def test_async_submission_settings_load_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    model = SETTINGS_OF[function]
    assert model is not None
    env = {k: resolve(v, sam) for k, v in function_env(cfn, function).items()}

    settings = settings_from_env(monkeypatch, model, env)

    # async submission and Idempotency-Key are on in AWS: both need all three set
    assert settings.tasks_table == REF_VALUES["TasksTable"]
    assert settings.jobs_queue_url == REF_VALUES["JobsQueue"]
    assert settings.idempotency_table == REF_VALUES["IdempotencyTable"]
    # the worker runs the task: neither the upstream's URL nor its key reaches this function
    assert not any(name.startswith("UPSTREAM_") for name in env)
    assert not any(name.startswith("upstream_") for name in model.model_fields)


@pytest.mark.parametrize(
    ("function", "model"), [("EditsStreamFunction", EditSettings), ("EditsFunction", EditTaskSettings)]
)
def test_edit_settings_load_their_input_limits_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch, function: str, model: type[BaseModel]
) -> None:
    env = {k: resolve(v, sam) for k, v in function_env(cfn, function).items()}

    settings = settings_from_env(monkeypatch, model, env)

    assert isinstance(settings, EditSettings | EditTaskSettings)
    assert settings.max_input_image_bytes == 50 * 1024 * 1024
    assert settings.max_request_bytes == MAX_INLINE_REQUEST_BYTES


def test_upload_settings_load_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: resolve(v, sam) for k, v in function_env(cfn, "UploadsFunction").items()}

    settings = settings_from_env(monkeypatch, UploadSettings, env)

    assert isinstance(settings, UploadSettings)
    assert settings.images_bucket == REF_VALUES["ImagesBucket"]
    assert settings.s3_endpoint_url is None
    assert settings.upload_expiry_seconds == 900
    # an upload may be as large as the edits function accepts, no larger
    assert settings.max_input_image_bytes == EditSettings.model_fields["max_input_image_bytes"].default
    assert settings.aws_region == REGION
    assert settings.idempotency_table == REF_VALUES["IdempotencyTable"]


def test_task_read_settings_load_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: resolve(v, sam) for k, v in function_env(cfn, "TasksFunction").items()}

    settings = settings_from_env(monkeypatch, TaskReadSettings, env)

    assert isinstance(settings, TaskReadSettings)
    assert settings.images_bucket == REF_VALUES["ImagesBucket"]
    assert settings.tasks_table == REF_VALUES["TasksTable"]
    assert settings.presign_expiry_seconds == 3600
    assert settings.s3_endpoint_url is None
    assert settings.aws_region == REGION


def test_worker_settings_load_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: resolve(v, sam) for k, v in function_env(cfn, "WorkerFunction").items()}

    settings = settings_from_env(monkeypatch, WorkerSettings, env)

    assert isinstance(settings, WorkerSettings)
    assert settings.images_bucket == REF_VALUES["ImagesBucket"]
    assert settings.upstream_url == UPSTREAM_BASE_URL
    assert settings.upstream_api_key is None
    assert settings.upstream_api_key_secret_id == REF_VALUES["UpstreamApiKeySecret"]
    assert settings.presign_expiry_seconds == 3600
    assert settings.tasks_table == REF_VALUES["TasksTable"]  # optional in the model, needed by the worker
    assert settings.event_bus_name == REF_VALUES["ImageEventsBus"]
    assert settings.dead_letter_queue_url == REF_VALUES["JobsDeadLetterQueue"]
    assert settings.jobs_queue_url is None  # it never queues jobs itself
    assert settings.idempotency_table is None
    assert settings.log_prompts is False
    assert settings.s3_endpoint_url is None
    assert "INTEGRATION_TIMEOUT_MS" not in env  # no API Gateway in front: its deadline is its own Timeout


@pytest.mark.parametrize("function", ["TasksFunction", "WorkerFunction"])
@pytest.mark.parametrize("expiry", [60, 3600])
def test_async_settings_accept_every_presign_expiry(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch, expiry: int, function: str
) -> None:
    model = SETTINGS_OF[function]
    assert model is not None
    env = {k: resolve(v, sam, {"PresignExpirySeconds": expiry}) for k, v in function_env(cfn, function).items()}

    settings = settings_from_env(monkeypatch, model, env)

    assert settings.presign_expiry_seconds == expiry


@pytest.mark.parametrize("function", sorted(IMAGE_ROUTES.values()))
@pytest.mark.parametrize(
    "overrides",
    [
        {"PresignExpirySeconds": 3600, "LogPrompts": "true"},
        {"PresignExpirySeconds": 60},
    ],
)
def test_image_settings_accept_every_parameter_extreme(
    cfn: dict[str, Any],
    sam: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, Any],
    function: str,
) -> None:
    model = SETTINGS_OF[function]
    assert model is not None
    env = {k: resolve(v, sam, overrides) for k, v in function_env(cfn, function).items()}

    settings = settings_from_env(monkeypatch, model, env)

    assert isinstance(settings, model)
    assert settings.presign_expiry_seconds == overrides["PresignExpirySeconds"]
    assert settings.log_prompts is (overrides.get("LogPrompts") == "true")


@pytest.mark.parametrize(
    "model", [GenerationSettings, EditSettings, TaskReadSettings, WorkerSettings], ids=lambda m: m.__name__
)
def test_presign_expiry_bounds_match_the_settings_model(sam: dict[str, Any], model: type[BaseModel]) -> None:
    expiry = parameter(sam, "PresignExpirySeconds")
    field = model.model_fields["presign_expiry_seconds"]

    assert (expiry["MinValue"], expiry["MaxValue"], expiry["Default"]) == (
        bound(field, "ge"),
        bound(field, "le"),
        field.default,
    )


def test_authorizer_settings_load_from_the_template_env(
    cfn: dict[str, Any], sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: resolve(v, sam) for k, v in function_env(cfn, "AuthorizerFunction").items()}

    settings = settings_from_env(monkeypatch, AuthorizerSettings, env)

    assert isinstance(settings, AuthorizerSettings)
    assert settings.api_keys is None  # plain keys are for the local stack only
    assert settings.api_keys_secret_id == REF_VALUES["ApiKeysSecret"]


# --- 5. the layer's requirements.txt == uv.lock ---------------------------------------------------------------


def locked_closure(lock: dict[str, Any], root: str) -> dict[str, set[str]]:
    """Every package ``root`` needs (extras followed), by normalised name, with its locked versions."""
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        packages.setdefault(normalise(package["name"]), []).append(package)
    found: dict[str, set[str]] = {}
    todo = [(normalise(root), ())]
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for package in packages[name]:
            if "version" in package:
                found.setdefault(name, set()).add(package["version"])
            deps = list(package.get("dependencies", []))
            for extra in extras:
                deps += package.get("optional-dependencies", {}).get(extra, [])
            todo.extend((normalise(d["name"]), tuple(d.get("extra", ()))) for d in deps)
    return found


def test_layer_requirements_are_the_locked_closure_of_imagecore() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    expected = locked_closure(lock, "imagecore")
    expected.pop("imagecore")
    lines = [line.strip() for line in REQUIREMENTS.read_text().splitlines()]
    pins = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(\s*;.*)?", line)
        assert match, f"not a pinned requirement: {line!r}"
        pins[normalise(match.group(1))] = match.group(2)

    assert set(pins) == set(expected), "regenerate it: make requirements"
    for name, version in pins.items():
        assert version in expected[name], f"{name}=={version} but uv.lock has {sorted(expected[name])}"
    assert {"aws-lambda-powertools", "httpx", "pydantic", "pillow"} <= set(pins)
    assert not {"imagecore", "moto"} & set(pins)
    assert "boto3" in pins  # matched to the botocore that aws-xray-sdk brings into the layer


def test_layer_requirements_keep_the_declared_pins() -> None:
    declared = tomllib.loads((ROOT / "layers" / "imagecore" / "pyproject.toml").read_text())["project"]
    pins = dict(
        line.split(";")[0].strip().split("==") for line in REQUIREMENTS.read_text().splitlines() if "==" in line
    )
    pins = {normalise(k): v for k, v in pins.items()}

    for requirement in declared["dependencies"]:
        name, _, version = requirement.partition("==")
        assert pins[normalise(name.split("[")[0])] == version, requirement


def test_request_too_large_sends_only_edit_callers_to_uploads(api_body: dict[str, Any]) -> None:
    """One gateway response serves every route: a generation's caller is not told to upload images."""
    response = api_body["x-amazon-apigateway-gateway-responses"]["REQUEST_TOO_LARGE"]
    message = render_gateway_template(response["responseTemplates"]["application/json"])["error"]["message"]

    assert message.startswith("The request body is too large")
    assert "Only edits take files: for POST /v1/images/edits, upload" in message


# --- CORS ----------------------------------------------------------------------------------------------------
def test_cors_origins_are_one_parameter_for_the_functions_and_the_bucket(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["CorsAllowOrigins"]
    pattern = re.compile(parameter["AllowedPattern"])
    bucket = sam["Resources"]["ImagesBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]

    assert sam["Globals"]["Function"]["Environment"]["Variables"]["CORS_ALLOW_ORIGINS"] == {"Ref": "CorsAllowOrigins"}
    assert parameter["Default"] == "*"
    assert pattern.fullmatch("https://app.example.com,http://localhost:5173")
    assert not pattern.fullmatch("https://app.example.com/path") and not pattern.fullmatch("")
    (rule,) = bucket
    assert rule["AllowedOrigins"] == {"Fn::Split": [",", {"Ref": "CorsAllowOrigins"}]}
    assert {"GET", "POST"} <= set(rule["AllowedMethods"])


def test_every_gateway_response_lets_a_page_read_it(api_body: dict[str, Any]) -> None:
    responses = api_body["x-amazon-apigateway-gateway-responses"]

    assert {"UNAUTHORIZED", "ACCESS_DENIED", "REQUEST_TOO_LARGE", "THROTTLED", "INTEGRATION_TIMEOUT"} <= set(responses)
    for kind, response in responses.items():
        parameters = response.get("responseParameters", {})
        # * when any origin may call, else the first allowed origin: never the caller's Origin echoed back
        assert parameters.get("gatewayresponse.header.Access-Control-Allow-Origin") == {
            "Fn::If": [
                "AllowsAnyOrigin",
                "'*'",
                {
                    "Fn::Sub": [
                        "'${Origin}'",
                        {"Origin": {"Fn::Select": [0, {"Fn::Split": [",", {"Ref": "CorsAllowOrigins"}]}]}},
                    ]
                },
            ]
        }, kind
        exposed = parameters["gatewayresponse.header.Access-Control-Expose-Headers"].strip("'").split(",")
        assert {"Retry-After", "Location", "x-amzn-RequestId"} <= set(exposed), kind


def test_every_keyed_route_has_a_keyless_preflight(api_body: dict[str, Any]) -> None:
    keyed_paths = {
        path
        for (method, path), op in routes(api_body).items()
        # a keyless route has no authorizer ([{"NONE": []}]) or, being also free of the usage plans' API key, none
        if method != "OPTIONS" and op.get("security") not in ([], [{"NONE": []}])
    }

    assert keyed_paths == {path for (method, path) in routes(api_body) if method == "OPTIONS"}


def test_pydantic_looks_for_no_plugins_in_any_function(sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer holds no pydantic plugin; without this, the first model built at each cold start reads the
    entry points of every installed package looking for one."""
    from pydantic.plugin import _loader

    value = sam["Globals"]["Function"]["Environment"]["Variables"]["PYDANTIC_DISABLE_PLUGINS"]
    scanned: list[bool] = []
    monkeypatch.setattr(_loader.importlib_metadata, "distributions", lambda: scanned.append(True) or [])
    monkeypatch.setattr(_loader, "_plugins", None)
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", value)
    assert list(_loader.get_plugins()) == []
    assert scanned == []  # the pinned pydantic reads the value as "no plugins": nothing is scanned
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    list(_loader.get_plugins())
    assert scanned == [True]  # (and scans without it)
