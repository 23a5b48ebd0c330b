"""scripts/api_key.py against Secrets Manager (moto): the secret keeps hashes only, and the authorizer's
keyring accepts exactly the keys it issued."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from imagecore.auth import Keyring

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "api_key.py"


def run(*args: str) -> None:
    sys.argv = ["api_key.py", *args]
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exited.value.code == 0


def test_create_and_revoke_keys(aws, capsys, monkeypatch):
    import boto3

    monkeypatch.setattr(sys, "argv", sys.argv)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="api-keys", SecretString='{"keys": []}')["ARN"]

    run("create", "ios-app", "--secret-arn", arn)
    ios_key = capsys.readouterr().out.strip()
    run("create", "web", "--secret-arn", arn)
    web_key = capsys.readouterr().out.strip()

    document = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])
    assert [entry["id"] for entry in document["keys"]] == ["ios-app", "web"]
    assert ios_key not in json.dumps(document)
    ring = Keyring.from_document(document)
    assert ring.identify(ios_key).id == "ios-app"
    assert ring.identify(web_key).id == "web"

    run("revoke", "ios-app", "--secret-arn", arn)
    ring = Keyring.from_document(json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"]))
    assert ring.identify(ios_key) is None
    assert ring.identify(web_key).id == "web"
