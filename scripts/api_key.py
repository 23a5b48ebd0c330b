"""Issue (or revoke) a bearer API key of the deployed service, put it on a usage plan, set its budgets, and
read its usage.

The key is printed once and never stored: the ApiKeysSecret keeps only its SHA-256 hash and a name, which is
what the logs show, with the key's settings: its usage plan (an API Gateway API key on the plan, whose value
the authorizer hands API Gateway) and its image/token budgets. What a key creates, and what it spends, belongs
to an owner id derived from its hash, so a name given again after a revocation reaches nothing of the old key's.

A change takes effect within 60 seconds (the authorizer caches the key list for 30 s and API Gateway its
answers for 30 s); this script also flushes API Gateway's authorizer cache, so a revocation usually bites at
once. The secret is written only if nobody else changed it since it was read: otherwise nothing is written,
the script says so and exits with status 1 (run it again).

    python scripts/api_key.py create ios-app --plan standard --images-per-day 500 --stack image-service
    python scripts/api_key.py set-plan ios-app --plan trial
    python scripts/api_key.py set-budget ios-app --images-per-day 100 --tokens-per-month 0   # 0: no budget
    python scripts/api_key.py usage ios-app --days 30
    python scripts/api_key.py revoke ios-app --stack image-service
    python scripts/api_key.py list --stack image-service
    python scripts/api_key.py revoke ios-app --secret-arn ARN --api-id ID --stage prod

It needs a deployed stack (AWS credentials and a region, as for the AWS CLI). The local stack (make run) keeps
no key store to change: it takes its keys, their plans and budgets from API_KEYS when it starts
(``API_KEYS='my-key@trial:images_per_day=5' make run``). Without AWS, the script says so in one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    from imagecore.accounts.auth import hash_key, new_api_key, owner_for_hash
    from imagecore.accounts.budgets import MAX_USAGE_DAYS, Budget
    from imagecore.accounts.ledger import UsageLedger
except ModuleNotFoundError as missing:
    sys.exit(
        f"scripts/api_key.py runs in the project's environment ({missing.name} is not installed here): "
        "run make install, then .venv/bin/python scripts/api_key.py ..."
    )

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The label the new version is written under until it is made current (so it is never current by accident).
PENDING_STAGE = "APIKEYS_PENDING"
REVOCATION_SECONDS = 60

ClientFactory = Callable[..., Any]


class VersionChanged(Exception):
    """The secret changed between our read and our write: nothing was written."""


@dataclass
class Target:
    secret_arn: str
    api_id: str | None
    stage: str | None


def stack_outputs(client: ClientFactory, stack: str, region: str | None) -> dict[str, str]:
    described = client("cloudformation", region_name=region).describe_stacks(StackName=stack)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])}


def target_of(args: argparse.Namespace, client: ClientFactory) -> Target:
    """The secret and the API: from the stack's outputs, unless the secret is given (then the API is too)."""
    outputs = {} if args.secret_arn else stack_outputs(client, args.stack, args.region)
    secret_arn = args.secret_arn or outputs.get("ApiKeysSecretArn")
    if not secret_arn:
        raise SystemExit(f"stack {args.stack} has no ApiKeysSecretArn output")
    return Target(secret_arn, args.api_id or outputs.get("ApiId"), args.stage or outputs.get("ApiStage"))


def read_keys(secrets: Any, arn: str) -> tuple[dict[str, Any], str]:
    """The key document and the version it was read at."""
    current = secrets.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")
    document = json.loads(current.get("SecretString") or '{"keys": []}')
    document.setdefault("keys", [])
    return document, current["VersionId"]


def write_keys(secrets: Any, arn: str, document: dict[str, Any], read_version: str) -> str:
    """Write ``document`` as the secret's new current version, only if the current one is still
    ``read_version``: the new version is put under a pending label, then AWSCURRENT is moved to it from
    ``read_version``, which Secrets Manager refuses if AWSCURRENT is no longer there."""
    version = str(uuid.uuid4())
    secrets.put_secret_value(
        SecretId=arn, ClientRequestToken=version, SecretString=json.dumps(document), VersionStages=[PENDING_STAGE]
    )
    try:
        secrets.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", RemoveFromVersionId=read_version, MoveToVersionId=version
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidParameterException":
            raise VersionChanged from None
        raise
    return version


def flush(client: ClientFactory, target: Target, region: str | None) -> str:
    """Empty API Gateway's authorizer cache, so cached answers for a revoked key go now."""
    if not target.api_id or not target.stage:
        return f"the authorizer cache was not flushed (give --api-id and --stage): allow up to {REVOCATION_SECONDS} s"
    try:
        client("apigateway", region_name=region).flush_stage_authorizers_cache(
            restApiId=target.api_id, stageName=target.stage
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        return f"the authorizer cache could not be flushed ({code}): allow up to {REVOCATION_SECONDS} s"
    return (
        f"authorizer cache of {target.api_id}/{target.stage} flushed: the change is live within {REVOCATION_SECONDS} s"
    )


# --- usage plans --------------------------------------------------------------------------------------------
def usage_plan_id(apigateway: Any, stack: str, plan: str) -> str:
    """The id of the stack's usage plan ``plan`` (named ``<stack>-<plan>`` by the template)."""
    names = []
    for page in apigateway.get_paginator("get_usage_plans").paginate():
        for item in page.get("items", []):
            names.append(item["name"])
            if item["name"] == f"{stack}-{plan}":
                return str(item["id"])
    plans = sorted(name.removeprefix(f"{stack}-") for name in names if name.startswith(f"{stack}-"))
    raise SystemExit(f"no usage plan '{plan}' in stack {stack}; its plans: {', '.join(plans) or 'none'}")


def put_on_plan(apigateway: Any, stack: str, entry: dict[str, Any], plan: str) -> None:
    """Give the key an API Gateway API key (once) and put that on ``plan``, off any plan it was on before. The
    API key's value is what the authorizer returns as usageIdentifierKey; clients never see or send it."""
    new_plan_id = usage_plan_id(apigateway, stack, plan)
    if not entry.get("api_key_id"):
        made = apigateway.create_api_key(
            name=f"{stack}-{entry['id']}",
            description=f"Usage plan key of the bearer key {entry['id']} (the authorizer supplies it)",
            enabled=True,
        )
        entry["api_key_id"], entry["usage_key"] = made["id"], made["value"]
    elif entry.get("plan") and entry["plan"] != plan:
        old_plan_id = usage_plan_id(apigateway, stack, entry["plan"])
        apigateway.delete_usage_plan_key(usagePlanId=old_plan_id, keyId=entry["api_key_id"])
    if entry.get("plan") != plan or not _on_plan(apigateway, new_plan_id, entry["api_key_id"]):
        apigateway.create_usage_plan_key(usagePlanId=new_plan_id, keyId=entry["api_key_id"], keyType="API_KEY")
    entry["plan"] = plan


def _on_plan(apigateway: Any, plan_id: str, api_key_id: str) -> bool:
    keys = apigateway.get_usage_plan_keys(usagePlanId=plan_id).get("items", [])
    return any(key["id"] == api_key_id for key in keys)


def set_budgets(entry: dict[str, Any], args: argparse.Namespace) -> None:
    """The budgets given on the command line (0 removes one), checked as the functions will read them."""
    budgets = dict(entry.get("budgets") or {})
    for name in Budget.FIELDS:
        value = getattr(args, name)
        if value is None:
            continue
        if value == 0:
            budgets.pop(name, None)
        else:
            budgets[name] = value
    Budget.from_mapping(budgets)
    if budgets:
        entry["budgets"] = budgets
    else:
        entry.pop("budgets", None)


def describe(entry: dict[str, Any]) -> str:
    """A key as ``list`` shows it: its name, its owner id, its plan and budgets."""
    budgets = ", ".join(f"{name}={value}" for name, value in sorted((entry.get("budgets") or {}).items()))
    owner = owner_for_hash(entry["sha256"])
    return f"{entry['id']}\t{owner}\tplan={entry.get('plan') or '-'}\t{budgets or 'no budgets'}"


def print_usage(args: argparse.Namespace, entry: dict[str, Any], client: ClientFactory) -> None:
    """What GET /v1/usage answers the key itself (its client tokens' usage included), from the usage table."""
    table = args.usage_table or stack_outputs(client, args.stack, args.region).get("UsageTableName")
    if not table:
        raise SystemExit(f"stack {args.stack} has no UsageTableName output")
    ledger = UsageLedger(table, region=args.region or "us-east-1", client=client("dynamodb", region_name=args.region))
    owner = owner_for_hash(entry["sha256"])
    print(json.dumps(ledger.usage(owner, Budget.from_mapping(entry.get("budgets")), args.days), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "revoke", "list", "set-plan", "set-budget", "usage"])
    parser.add_argument("key_id", nargs="?", help="a name for the key, e.g. ios-app (shown in logs)")
    parser.add_argument("--stack", default="image-service")
    parser.add_argument("--region", default=None)
    parser.add_argument("--secret-arn", default=None, help="the secret itself, instead of the stack's output")
    parser.add_argument("--plan", default=None, help="usage plan: free, trial or standard (create, set-plan)")
    for name in Budget.FIELDS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=None, metavar="N")
    parser.add_argument("--days", type=int, default=7, help="usage: how many UTC days, today included (<= 90)")
    parser.add_argument("--usage-table", default=None, help="usage: the table itself, instead of the stack's output")
    parser.add_argument("--api-id", default=None, help="the REST API whose authorizer cache to flush")
    parser.add_argument("--stage", default=None, help="its stage")
    parser.add_argument("--no-flush", action="store_true", help="do not flush the authorizer cache")
    return parser


def change_key(
    args: argparse.Namespace, parser: argparse.ArgumentParser, entry: dict[str, Any], apigateway: Any
) -> None:
    """set-plan and set-budget: the key's settings in the secret document (written by the caller)."""
    if args.action == "set-plan":
        if not args.plan:
            parser.error("set-plan needs --plan")
        put_on_plan(apigateway, args.stack, entry, args.plan)
    try:
        set_budgets(entry, args)
    except ValueError as exc:
        parser.error(str(exc))
    print(describe(entry), file=sys.stderr)


def create_key(
    args: argparse.Namespace, parser: argparse.ArgumentParser, keys: list[dict[str, Any]], apigateway: Any
) -> tuple[str, dict[str, Any]]:
    if any(entry["id"] == args.key_id for entry in keys):
        parser.error(f"a key with id {args.key_id} exists; revoke it first")
    key = new_api_key()
    entry: dict[str, Any] = {"id": args.key_id, "sha256": hash_key(key)}
    try:
        set_budgets(entry, args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.plan:
        put_on_plan(apigateway, args.stack, entry, args.plan)
    else:
        print("warning: the key is on no usage plan, so API Gateway refuses it until set-plan", file=sys.stderr)
    keys.append(entry)
    return key, entry


def revoke_key(
    args: argparse.Namespace, parser: argparse.ArgumentParser, document: dict[str, Any]
) -> list[dict[str, Any]]:
    """Drop the key from the document; what it was, to take off its plan once the secret is written."""
    keys = document["keys"]
    gone = [entry for entry in keys if entry["id"] == args.key_id]
    if not gone:
        parser.error(f"no key with id {args.key_id}")
    document["keys"] = [entry for entry in keys if entry["id"] != args.key_id]
    return gone


def take_off_plan(apigateway: Any, stack: str, entry: dict[str, Any]) -> None:
    """Remove a revoked key's API Gateway API key from its plan, then delete it."""
    if not entry.get("api_key_id"):
        return
    if entry.get("plan"):
        plan_id = usage_plan_id(apigateway, stack, entry["plan"])
        if _on_plan(apigateway, plan_id, entry["api_key_id"]):
            apigateway.delete_usage_plan_key(usagePlanId=plan_id, keyId=entry["api_key_id"])
    apigateway.delete_api_key(apiKey=entry["api_key_id"])


def find_key(parser: argparse.ArgumentParser, keys: list[dict[str, Any]], key_id: str) -> dict[str, Any]:
    found = [entry for entry in keys if entry["id"] == key_id]
    if not found:
        parser.error(f"no key with id {key_id}")
    return found[0]


def apply_change(
    args: argparse.Namespace, parser: argparse.ArgumentParser, document: dict[str, Any], apigateway: Any
) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]], str]:
    """The action's change to the key document: the new key (create), the entries whose API Gateway key is to
    go once the secret is written (revoke), those to undo if it is not (create), and what to tell the operator."""
    if args.action == "create":
        key, entry = create_key(args, parser, document["keys"], apigateway)
        return key, [], [entry], f"key {args.key_id} created; it is shown only now"
    if args.action == "revoke":
        return None, revoke_key(args, parser, document), [], f"key {args.key_id} revoked"
    change_key(args, parser, find_key(parser, document["keys"], args.key_id), apigateway)
    return None, [], [], f"key {args.key_id} changed"


def main(argv: list[str] | None = None, client: ClientFactory = boto3.client) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.days <= MAX_USAGE_DAYS:
        parser.error(f"--days: 1 to {MAX_USAGE_DAYS}")

    target = target_of(args, client)
    secrets = client("secretsmanager", region_name=args.region)
    document, read_version = read_keys(secrets, target.secret_arn)

    if args.action == "list":
        for entry in document["keys"]:
            print(describe(entry))
        return 0
    if not args.key_id or not ID_RE.match(args.key_id):
        parser.error("key_id: 1-64 letters, digits, '.', '_' or '-'")
    if args.action == "usage":
        print_usage(args, find_key(parser, document["keys"], args.key_id), client)
        return 0
    apigateway = client("apigateway", region_name=args.region)
    key, revoked, made, message = apply_change(args, parser, document, apigateway)
    try:
        write_keys(secrets, target.secret_arn, document, read_version)
    except VersionChanged:
        for entry in made:
            take_off_plan(apigateway, args.stack, entry)
        print(
            "the key list changed while this ran (another create or revoke?); nothing was written: run it again",
            file=sys.stderr,
        )
        return 1
    for entry in revoked:
        take_off_plan(apigateway, args.stack, entry)
    if key is not None:
        print(key)
    print(message, file=sys.stderr)
    if not args.no_flush:
        print(flush(client, target, args.region), file=sys.stderr)
    return 0


LOCAL_KEYS_HINT = (
    "the local stack (make run) takes its keys from API_KEYS instead, e.g. API_KEYS='my-key@trial:images_per_day=5'"
)


def needs_a_deployed_stack(reason: str) -> str:
    """The one line said when no deployed stack can be reached: why, how to point at one, what to do locally."""
    return (
        f"api_key.py manages the keys of a deployed stack and cannot reach one ({reason}): give it AWS credentials "
        f"and a region (AWS_PROFILE=... AWS_DEFAULT_REGION=...) and the stack's name (--stack NAME) or its keys secret "
        f"(--secret-arn ARN); {LOCAL_KEYS_HINT} make run"
    )


def run(argv: list[str] | None = None, client: ClientFactory | None = None) -> int:
    """``main``, with what AWS refuses said in one line (exit 2) instead of a traceback."""
    try:
        return main(argv, client or boto3.client)
    except NoRegionError:
        message = needs_a_deployed_stack("no AWS region is set")
    except NoCredentialsError:
        message = needs_a_deployed_stack("no AWS credentials are set")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message")):
            message = needs_a_deployed_stack(f"there is no stack named {argv_stack(argv)} in this account and region")
        else:
            message = f"AWS refused {exc.operation_name}: {error.get('Code')} ({error.get('Message')})"
    except BotoCoreError as exc:
        message = needs_a_deployed_stack(str(exc).rstrip("."))
    print(message, file=sys.stderr)
    return 2


def argv_stack(argv: list[str] | None) -> str:
    return build_parser().parse_args(argv).stack


if __name__ == "__main__":
    sys.exit(run())
