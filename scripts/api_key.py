"""Issue (or revoke) a bearer API key of the deployed service.

The key is printed once and never stored: the ApiKeysSecret keeps only its SHA-256 hash and a name, which is
what the logs show. What a key creates belongs to an owner id derived from its hash, so a name given again
after a revocation reaches nothing of the old key's.

A change takes effect within 60 seconds (the authorizer caches the key list for 30 s and API Gateway its
answers for 30 s); this script also flushes API Gateway's authorizer cache, so a revocation usually bites at
once. The secret is written only if nobody else changed it since it was read: otherwise nothing is written,
the script says so and exits with status 1 (run it again).

    python scripts/api_key.py create ios-app --stack image-service
    python scripts/api_key.py revoke ios-app --stack image-service
    python scripts/api_key.py list --stack image-service
    python scripts/api_key.py revoke ios-app --secret-arn ARN --api-id ID --stage prod
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

import boto3
from botocore.exceptions import ClientError

from imagecore.auth import hash_key, new_api_key, owner_for_hash

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


def change(action: str, key_id: str, keys: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None, str]:
    """The new key list, the new key (create) and what to tell the operator."""
    if action == "create":
        if any(entry["id"] == key_id for entry in keys):
            raise ValueError(f"a key with id {key_id} exists; revoke it first")
        key = new_api_key()
        return [*keys, {"id": key_id, "sha256": hash_key(key)}], key, f"key {key_id} created; it is shown only now"
    remaining = [entry for entry in keys if entry["id"] != key_id]
    if len(remaining) == len(keys):
        raise ValueError(f"no key with id {key_id}")
    return remaining, None, f"key {key_id} revoked"


def main(argv: list[str] | None = None, client: ClientFactory = boto3.client) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "revoke", "list"])
    parser.add_argument("key_id", nargs="?", help="a name for the key, e.g. ios-app (shown in logs)")
    parser.add_argument("--stack", default="image-service")
    parser.add_argument("--region", default=None)
    parser.add_argument("--secret-arn", default=None, help="the secret itself, instead of the stack's output")
    parser.add_argument("--api-id", default=None, help="the REST API whose authorizer cache to flush")
    parser.add_argument("--stage", default=None, help="its stage")
    parser.add_argument("--no-flush", action="store_true", help="do not flush the authorizer cache")
    args = parser.parse_args(argv)

    target = target_of(args, client)
    secrets = client("secretsmanager", region_name=args.region)
    document, read_version = read_keys(secrets, target.secret_arn)

    if args.action == "list":
        for entry in document["keys"]:
            print(f"{entry['id']}\t{owner_for_hash(entry['sha256'])}")
        return 0
    if not args.key_id or not ID_RE.match(args.key_id):
        parser.error("key_id: 1-64 letters, digits, '.', '_' or '-'")
    try:
        document["keys"], key, message = change(args.action, args.key_id, document["keys"])
    except ValueError as exc:
        parser.error(str(exc))
    try:
        write_keys(secrets, target.secret_arn, document, read_version)
    except VersionChanged:
        print(
            "the key list changed while this ran (another create or revoke?); nothing was written: run it again",
            file=sys.stderr,
        )
        return 1
    if key is not None:
        print(key)
    print(message, file=sys.stderr)
    if not args.no_flush:
        print(flush(client, target, args.region), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
