"""Issue (or revoke) a bearer API key of the deployed service.

The key is printed once and never stored: the ApiKeysSecret keeps only its SHA-256 hash and an id, which is
what the logs show. The authorizer caches the key list for up to 5 minutes, so a change takes that long.

    python scripts/api_key.py create ios-app --stack image-service
    python scripts/api_key.py revoke ios-app --stack image-service
    python scripts/api_key.py list --stack image-service
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import boto3

from imagecore.auth import hash_key, new_api_key

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def secret_arn(stack: str, region: str | None) -> str:
    outputs = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)["Stacks"][0]
    for output in outputs.get("Outputs", []):
        if output["OutputKey"] == "ApiKeysSecretArn":
            return output["OutputValue"]
    raise SystemExit(f"stack {stack} has no ApiKeysSecretArn output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "revoke", "list"])
    parser.add_argument("key_id", nargs="?", help="a name for the key, e.g. ios-app (shown in logs)")
    parser.add_argument("--stack", default="image-service")
    parser.add_argument("--region", default=None)
    parser.add_argument("--secret-arn", default=None, help="the secret itself, instead of the stack's output")
    args = parser.parse_args(argv)

    secrets = boto3.client("secretsmanager", region_name=args.region)
    arn = args.secret_arn or secret_arn(args.stack, args.region)
    document = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"] or '{"keys": []}')
    keys: list[dict[str, str]] = document.setdefault("keys", [])

    if args.action == "list":
        for entry in keys:
            print(entry["id"])
        return 0
    if not args.key_id or not ID_RE.match(args.key_id):
        parser.error("key_id: 1-64 letters, digits, '.', '_' or '-'")
    if args.action == "create":
        if any(entry["id"] == args.key_id for entry in keys):
            parser.error(f"a key with id {args.key_id} exists; revoke it first")
        key = new_api_key()
        keys.append({"id": args.key_id, "sha256": hash_key(key)})
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(document))
        print(key)
        print(f"key {args.key_id} created; it is shown only now", file=sys.stderr)
    else:
        remaining = [entry for entry in keys if entry["id"] != args.key_id]
        if len(remaining) == len(keys):
            parser.error(f"no key with id {args.key_id}")
        document["keys"] = remaining
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(document))
        print(f"key {args.key_id} revoked", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
