"""scripts/api_key.py against Secrets Manager (moto): the secret keeps hashes only, and the authorizer's
keyring accepts exactly the keys it issued."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imagecore.accounts.auth import Keyring, hash_key, owner_for_hash

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


def _plans(stack: str) -> dict[str, str]:
    """The stack's usage plans as the template makes them (named <stack>-<plan>), in moto."""
    import boto3

    apigateway = boto3.client("apigateway", region_name="us-east-1")
    api = apigateway.create_rest_api(name=f"{stack}-api")["id"]
    return {
        plan: apigateway.create_usage_plan(name=f"{stack}-{plan}", apiStages=[{"apiId": api, "stage": "prod"}])["id"]
        for plan in ("free", "trial", "standard")
    }


def _plan_keys(plan_id: str) -> list[str]:
    import boto3

    return [
        key["id"]
        for key in boto3.client("apigateway", region_name="us-east-1").get_usage_plan_keys(usagePlanId=plan_id)["items"]
    ]


def test_a_key_is_created_on_a_plan_and_moved_to_another(aws, capsys, monkeypatch):
    import boto3

    monkeypatch.setattr(sys, "argv", sys.argv)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="api-keys-plans", SecretString='{"keys": []}')["ARN"]
    plans = _plans("plans-stack")
    stack = ("--stack", "plans-stack")

    run("create", "ios-app", "--plan", "trial", "--images-per-day", "20", "--secret-arn", arn, *stack)
    key = capsys.readouterr().out.strip()
    (entry,) = current(secrets, arn)["keys"]
    assert entry["plan"] == "trial"
    assert entry["budgets"] == {"images_per_day": 20}
    api_key = boto3.client("apigateway", region_name="us-east-1").get_api_key(
        apiKey=entry["api_key_id"], includeValue=True
    )
    assert api_key["value"] == entry["usage_key"] and api_key["enabled"] is True
    assert key not in json.dumps(entry)  # the usage key is not the bearer key
    assert _plan_keys(plans["trial"]) == [entry["api_key_id"]]
    # the authorizer reads the same settings
    record = Keyring.from_document({"keys": [entry]}).identify(key)
    assert (record.plan, record.usage_key, record.budget.images_per_day) == ("trial", entry["usage_key"], 20)

    run("set-plan", "ios-app", "--plan", "standard", "--tokens-per-month", "500000", "--secret-arn", arn, *stack)
    (moved,) = current(secrets, arn)["keys"]
    assert moved["plan"] == "standard"
    assert moved["api_key_id"] == entry["api_key_id"]  # the same usage key, on another plan
    assert _plan_keys(plans["trial"]) == []
    assert _plan_keys(plans["standard"]) == [entry["api_key_id"]]
    assert moved["budgets"] == {"images_per_day": 20, "tokens_per_month": 500000}

    run("set-budget", "ios-app", "--images-per-day", "0", "--secret-arn", arn)
    (changed,) = current(secrets, arn)["keys"]
    assert changed["budgets"] == {"tokens_per_month": 500000}
    capsys.readouterr()
    run("list", "--secret-arn", arn)
    assert capsys.readouterr().out.split() == [
        "ios-app",
        owner_for_hash(hash_key(key)),
        "plan=standard",
        "tokens_per_month=500000",
    ]

    run("revoke", "ios-app", "--secret-arn", arn, *stack)
    assert _plan_keys(plans["standard"]) == []
    with pytest.raises(Exception, match="NotFound"):
        boto3.client("apigateway", region_name="us-east-1").get_api_key(apiKey=entry["api_key_id"])


def test_an_unknown_plan_is_refused_and_nothing_is_written(aws, capsys, monkeypatch):
    import boto3

    monkeypatch.setattr(sys, "argv", sys.argv)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="api-keys-unknown-plan", SecretString='{"keys": []}')["ARN"]
    _plans("gold-stack")

    sys.argv = ["api_key.py", "create", "ios-app", "--plan", "gold", "--secret-arn", arn, "--stack", "gold-stack"]
    with pytest.raises(SystemExit, match=r"no usage plan 'gold'.*free, standard, trial"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert current(secrets, arn) == {"keys": []}


def test_usage_prints_what_the_key_itself_reads(aws_resources, capsys, monkeypatch):
    import boto3

    from imagecore.accounts.budgets import Cost, Spent
    from imagecore.accounts.ledger import UsageLedger

    monkeypatch.setattr(sys, "argv", sys.argv)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="api-keys-usage", SecretString='{"keys": []}')["ARN"]
    _plans("usage-stack")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    table = aws_resources.usage_table
    run("create", "ios-app", "--plan", "free", "--images-per-day", "10", "--secret-arn", arn, "--stack", "usage-stack")
    capsys.readouterr()
    ledger = UsageLedger(table, client=dynamodb)
    from imagecore.accounts.budgets import Budget

    (entry,) = current(secrets, arn)["keys"]
    # the key's usage is counted under its owner id, its client tokens' with it
    hold = ledger.reserve(owner_for_hash(entry["sha256"]), Budget(images_per_day=10), Cost(images=3, tokens=100))
    ledger.settle(hold, Spent(images=3, input_tokens=12, output_tokens=3000, upstream_ms=2500))

    run("usage", "ios-app", "--days", "3", "--usage-table", table, "--secret-arn", arn)
    report = json.loads(capsys.readouterr().out)
    assert len(report["days"]) == 3
    assert report["totals"] == {
        "requests": 1,
        "images": 3,
        "input_tokens": 12,
        "output_tokens": 3000,
        "upstream_seconds": 2.5,
        "failures": {},
    }
    assert report["budgets"]["images_per_day"]["remaining"] == 7


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

    from imagecore.accounts.auth import hash_key, owner_for_hash

    main = load_script()
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name=f"api-keys-{uuid.uuid4().hex[:8]}", SecretString='{"keys": []}')["ARN"]
    assert main(["create", "ios-app", "--secret-arn", arn, "--no-flush"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["list", "--secret-arn", arn]) == 0
    assert capsys.readouterr().out.strip() == f"ios-app\t{owner_for_hash(hash_key(key))}\tplan=-\tno budgets"


def _run_without_aws(*args: str, python_flags: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it on a machine with no AWS configuration at all (no profile, no region)."""
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent/config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }
    return subprocess.run(  # noqa: S603 - the test's own interpreter and script
        [sys.executable, *python_flags, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "reason"),
    [
        (("list",), {}, "no AWS region is set"),
        (("create", "my-app", "--plan", "trial"), {}, "no AWS region is set"),
        (("usage", "my-app"), {"AWS_DEFAULT_REGION": "us-east-1"}, "no AWS credentials are set"),
    ],
)
def test_without_a_deployed_stack_it_says_so_in_one_line(args, env, reason):
    done = _run_without_aws(*args, **env)

    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert reason in lines[0]
    assert "deployed stack" in lines[0] and "--stack" in lines[0] and "API_KEYS" in lines[0]


def test_outside_the_projects_environment_it_says_how_to_run_it():
    done = _run_without_aws("list", python_flags=("-S",))  # no site-packages: neither boto3 nor imagecore

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "scripts/api_key.py runs in the project's environment (boto3 is not installed here): run make install, "
        "then .venv/bin/python scripts/api_key.py ..."
    ]
