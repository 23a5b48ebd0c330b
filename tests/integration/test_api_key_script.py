"""scripts/api_key.py against Secrets Manager (moto): the secret keeps hashes only, and the authorizer's
keyring accepts exactly the keys it issued."""

from __future__ import annotations

import json
import runpy
import sys
import uuid
from pathlib import Path

import pytest

from imagecore.auth import Keyring

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "api_key.py"


def current(secrets, arn: str) -> dict:
    """The key document labelled AWSCURRENT (named explicitly: moto's unlabelled read does not follow a label
    moved by UpdateSecretVersionStage, which is how the script publishes a change)."""
    return json.loads(secrets.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])


def run(*args: str) -> None:
    sys.argv = ["api_key.py", *args]
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exited.value.code == 0


def test_create_and_revoke_keys(aws, capsys, monkeypatch):
    import boto3

    monkeypatch.setattr(sys, "argv", sys.argv)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"api-keys-{uuid.uuid4().hex[:8]}", SecretString='{"keys": []}')["ARN"]

    run("create", "ios-app", "--secret-arn", arn)
    ios_key = capsys.readouterr().out.strip()
    run("create", "web", "--secret-arn", arn)
    web_key = capsys.readouterr().out.strip()

    document = current(secrets, arn)
    assert [entry["id"] for entry in document["keys"]] == ["ios-app", "web"]
    assert ios_key not in json.dumps(document)
    ring = Keyring.from_document(document)
    assert ring.identify(ios_key).id == "ios-app"
    assert ring.identify(web_key).id == "web"

    run("revoke", "ios-app", "--secret-arn", arn)
    ring = Keyring.from_document(current(secrets, arn))
    assert ring.identify(ios_key) is None
    assert ring.identify(web_key).id == "web"


def load_script():
    namespace = runpy.run_path(str(SCRIPT), run_name="api_key")
    return namespace["main"]


class RacingSecrets:
    """A Secrets Manager client through which another operator's change lands between our read and our write."""

    def __init__(self, real, change) -> None:
        self._real = real
        self._change = change

    def get_secret_value(self, **kwargs):
        answer = self._real.get_secret_value(**kwargs)
        self._change()
        return answer

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_change_racing_ours_is_never_overwritten(aws, capsys):
    import boto3

    main = load_script()
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"api-keys-{uuid.uuid4().hex[:8]}", SecretString='{"keys": []}')["ARN"]
    assert main(["create", "ios-app", "--secret-arn", arn, "--no-flush"]) == 0
    ios_key = capsys.readouterr().out.strip()

    # A revoke of ios-app runs while our create of "web" is between its read and its write.
    def racing_revoke() -> None:
        assert main(["revoke", "ios-app", "--secret-arn", arn, "--no-flush"]) == 0

    def client(service, **options):
        real = boto3.client(service, **options)
        return RacingSecrets(real, racing_revoke) if service == "secretsmanager" else real

    assert main(["create", "web", "--secret-arn", arn, "--no-flush"], client=client) == 1
    captured = capsys.readouterr()
    assert "changed while this ran" in captured.err
    assert "nothing was written" in captured.err
    assert captured.out == ""  # no key was handed out for a write that did not happen
    # the revocation stands: the stale list (with ios-app) was not written back
    document = current(secrets, arn)
    assert document == {"keys": []}
    assert Keyring.from_document(document).identify(ios_key) is None


def test_a_change_flushes_the_stacks_authorizer_cache(aws, capsys):
    import boto3
    from botocore.stub import Stubber

    main = load_script()
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"api-keys-{uuid.uuid4().hex[:8]}", SecretString='{"keys": []}')["ARN"]
    outputs = {"ApiKeysSecretArn": arn, "ApiId": "a1b2c3d4e5", "ApiStage": "prod"}
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="image-service",
        TemplateBody=json.dumps(
            {
                "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {name: {"Value": value} for name, value in outputs.items()},
            }
        ),
    )
    # moto has no FlushStageAuthorizersCache: botocore's Stubber checks the call against the real API model.
    apigateway = boto3.client("apigateway", region_name="us-east-1")
    stubber = Stubber(apigateway)
    for _ in range(2):
        stubber.add_response("flush_stage_authorizers_cache", {}, {"restApiId": "a1b2c3d4e5", "stageName": "prod"})

    def client(service, **options):
        return apigateway if service == "apigateway" else boto3.client(service, **options)

    with stubber:
        assert main(["create", "ios-app", "--stack", "image-service"], client=client) == 0
        key = capsys.readouterr().out.strip()
        assert main(["revoke", "ios-app", "--stack", "image-service"], client=client) == 0
        stubber.assert_no_pending_responses()
    err = capsys.readouterr().err
    assert "key ios-app revoked" in err
    assert "authorizer cache of a1b2c3d4e5/prod flushed" in err
    assert "60 s" in err
    assert Keyring.from_document(current(secrets, arn)).identify(key) is None


def test_without_the_api_the_script_says_the_cache_was_not_flushed(aws, capsys):
    import boto3

    main = load_script()
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"api-keys-{uuid.uuid4().hex[:8]}", SecretString='{"keys": []}')["ARN"]
    assert main(["create", "ios-app", "--secret-arn", arn]) == 0
    err = capsys.readouterr().err
    assert "not flushed" in err and "60 s" in err


def test_list_shows_names_and_owner_ids(aws, capsys):
    import boto3

    from imagecore.auth import hash_key, owner_for_hash

    main = load_script()
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"api-keys-{uuid.uuid4().hex[:8]}", SecretString='{"keys": []}')["ARN"]
    assert main(["create", "ios-app", "--secret-arn", arn, "--no-flush"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["list", "--secret-arn", arn]) == 0
    assert capsys.readouterr().out.strip() == f"ios-app\t{owner_for_hash(hash_key(key))}"
