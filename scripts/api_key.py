"""Issue (or revoke) a bearer API key of the deployed service, put it on a usage plan, set its budgets, and
read its usage.

The key is printed once and never stored: the ApiKeysSecret keeps only its SHA-256 hash and an id, which is
what the logs show, with the key's settings: its usage plan (an API Gateway API key on the plan, whose value
the authorizer hands API Gateway) and its image/token budgets. The authorizer caches the key list for up to
5 minutes, so a change takes that long.

    python scripts/api_key.py create ios-app --plan standard --images-per-day 500 --stack image-service
    python scripts/api_key.py set-plan ios-app --plan trial
    python scripts/api_key.py set-budget ios-app --images-per-day 100 --tokens-per-month 0   # 0: no budget
    python scripts/api_key.py usage ios-app --days 30
    python scripts/api_key.py revoke ios-app
    python scripts/api_key.py list
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import boto3

from imagecore.auth import hash_key, new_api_key
from imagecore.budgets import MAX_USAGE_DAYS, Budget, UsageLedger

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def secret_arn(stack: str, region: str | None) -> str:
    return stack_output(stack, region, "ApiKeysSecretArn")


def stack_output(stack: str, region: str | None, name: str) -> str:
    outputs = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)["Stacks"][0]
    for output in outputs.get("Outputs", []):
        if output["OutputKey"] == name:
            return str(output["OutputValue"])
    raise SystemExit(f"stack {stack} has no {name} output")


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
    budgets = ", ".join(f"{name}={value}" for name, value in sorted((entry.get("budgets") or {}).items()))
    return f"{entry['id']}\tplan={entry.get('plan') or '-'}\t{budgets or 'no budgets'}"


def print_usage(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    """What GET /v1/usage answers the key itself, from the usage table."""
    table = args.usage_table or stack_output(args.stack, args.region, "UsageTableName")
    ledger = UsageLedger(
        table, region=args.region or "us-east-1", client=boto3.client("dynamodb", region_name=args.region)
    )
    print(json.dumps(ledger.usage(entry["id"], Budget.from_mapping(entry.get("budgets")), args.days), indent=2))


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
    return parser


def change_key(args: argparse.Namespace, parser: argparse.ArgumentParser, entry: dict[str, Any]) -> None:
    """set-plan and set-budget: the key's settings in the secret document (written by the caller)."""
    if args.action == "set-plan":
        if not args.plan:
            parser.error("set-plan needs --plan")
        put_on_plan(boto3.client("apigateway", region_name=args.region), args.stack, entry, args.plan)
    try:
        set_budgets(entry, args)
    except ValueError as exc:
        parser.error(str(exc))
    print(describe(entry), file=sys.stderr)


def create_key(args: argparse.Namespace, parser: argparse.ArgumentParser, keys: list[dict[str, Any]]) -> str:
    if any(entry["id"] == args.key_id for entry in keys):
        parser.error(f"a key with id {args.key_id} exists; revoke it first")
    key = new_api_key()
    entry: dict[str, Any] = {"id": args.key_id, "sha256": hash_key(key)}
    try:
        set_budgets(entry, args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.plan:
        put_on_plan(boto3.client("apigateway", region_name=args.region), args.stack, entry, args.plan)
    else:
        print("warning: the key is on no usage plan, so API Gateway refuses it until set-plan", file=sys.stderr)
    keys.append(entry)
    return key


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.days <= MAX_USAGE_DAYS:
        parser.error(f"--days: 1 to {MAX_USAGE_DAYS}")

    secrets = boto3.client("secretsmanager", region_name=args.region)
    arn = args.secret_arn or secret_arn(args.stack, args.region)
    document = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"] or '{"keys": []}')
    keys: list[dict[str, Any]] = document.setdefault("keys", [])

    if args.action == "list":
        for entry in keys:
            print(describe(entry))
        return 0
    if not args.key_id or not ID_RE.match(args.key_id):
        parser.error("key_id: 1-64 letters, digits, '.', '_' or '-'")
    if args.action == "create":
        key = create_key(args, parser, keys)
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(document))
        print(key)
        print(f"key {args.key_id} created; it is shown only now", file=sys.stderr)
        return 0
    if args.action == "revoke":
        revoked = revoke_key(args, parser, document)
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(document))
        for entry in revoked:
            take_off_plan(boto3.client("apigateway", region_name=args.region), args.stack, entry)
        print(f"key {args.key_id} revoked", file=sys.stderr)
        return 0
    found = [entry for entry in keys if entry["id"] == args.key_id]
    if not found:
        parser.error(f"no key with id {args.key_id}")
    entry = found[0]
    if args.action == "usage":
        print_usage(args, entry)
        return 0
    change_key(args, parser, entry)
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
