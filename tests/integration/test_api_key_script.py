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
    (entry,) = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])["keys"]
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
    (moved,) = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])["keys"]
    assert moved["plan"] == "standard"
    assert moved["api_key_id"] == entry["api_key_id"]  # the same usage key, on another plan
    assert _plan_keys(plans["trial"]) == []
    assert _plan_keys(plans["standard"]) == [entry["api_key_id"]]
    assert moved["budgets"] == {"images_per_day": 20, "tokens_per_month": 500000}

    run("set-budget", "ios-app", "--images-per-day", "0", "--secret-arn", arn)
    (changed,) = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])["keys"]
    assert changed["budgets"] == {"tokens_per_month": 500000}
    capsys.readouterr()
    run("list", "--secret-arn", arn)
    assert capsys.readouterr().out.split() == ["ios-app", "plan=standard", "tokens_per_month=500000"]

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
    assert json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"]) == {"keys": []}


def test_usage_prints_what_the_key_itself_reads(aws_resources, capsys, monkeypatch):
    import boto3

    from imagecore.budgets import Cost, Spent, UsageLedger

    monkeypatch.setattr(sys, "argv", sys.argv)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="api-keys-usage", SecretString='{"keys": []}')["ARN"]
    _plans("usage-stack")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    table = aws_resources.usage_table
    run("create", "ios-app", "--plan", "free", "--images-per-day", "10", "--secret-arn", arn, "--stack", "usage-stack")
    capsys.readouterr()
    ledger = UsageLedger(table, client=dynamodb)
    from imagecore.budgets import Budget

    hold = ledger.reserve("ios-app", Budget(images_per_day=10), Cost(images=3, tokens=100))
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
