"""The environment template.yaml gives the functions, for running them outside AWS: the Globals' variables plus a
function's own, with each ``!Ref`` resolved to the local resource or parameter it names.

Three things differ from AWS, on purpose: a variable naming a Secrets Manager secret is replaced by its local
stand-in holding the value itself (``UPSTREAM_API_KEY_SECRET_ID`` -> ``UPSTREAM_API_KEY``), X-Ray tracing is
off, and the upstream may be plain http (the simulator; in AWS the settings refuse anything but https). The
local stack, the tests and the benchmark all take the functions' environment from here, so a variable added to
the template reaches all three.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from local.resources import LocalResources

# A secret's id in AWS -> the variable that carries its value locally.
SECRET_STAND_INS = {
    "UPSTREAM_API_KEY_SECRET_ID": "UPSTREAM_API_KEY",
    "API_KEYS_SECRET_ID": "API_KEYS",
    "CLIENT_TOKEN_SIGNING_SECRET_ID": "CLIENT_TOKEN_SIGNING_KEY",
    "PROMPT_DIGEST_KEY_SECRET_ID": "PROMPT_DIGEST_KEY",
    "SIMULATOR_API_KEY_SECRET_ID": "SIMULATOR_API_KEY",
}
LOCAL_ONLY = {"POWERTOOLS_TRACE_DISABLED": "true", "ALLOW_HTTP_UPSTREAM": "true"}


def resource_refs(resources: LocalResources) -> dict[str, str]:
    """What ``!Ref`` of each of the template's resources is (name or URL), for the locally made ones."""
    return {
        "ImagesBucket": resources.bucket,
        "TasksTable": resources.tasks_table,
        "IdempotencyTable": resources.idempotency_table,
        "UsageTable": resources.usage_table,
        "TokenUsageTable": resources.token_usage_table,
        "ConversationsTable": resources.conversations_table,
        "JobsQueue": resources.jobs_queue_url,
        "JobsDeadLetterQueue": resources.dead_letter_queue_url,
        "ImageEventsBus": resources.event_bus_name,
        "WebhookSecretsTable": resources.webhook_secrets_table,
        "WebhookSecretsKey": resources.webhook_secrets_key_id,
        "WebhooksQueue": resources.webhooks_queue_url,
        "WebhooksDeadLetterQueue": resources.webhooks_dead_letter_queue_url,
    }


def function_environment(
    template: dict[str, Any],
    function: str | None = None,
    *,
    refs: Mapping[str, str],
    secrets: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``function`` (``None``: of all functions at once, as when one process hosts them all),
    resolved: the Globals' variables, then the function's own.

    ``refs``: logical id -> value, for resources and for parameters that should not keep their default.
    ``secrets``: the values of the stand-ins, by stand-in name (a stand-in without a value is left out).
    """
    secrets = secrets or {}
    environment = globals_environment(template, refs)
    functions = [function] if function else _functions(template)
    for name in functions:
        resource = template["Resources"][name]
        if function is None and "Condition" in resource and not _condition(resource["Condition"], template, refs):
            continue  # not deployed with these parameters
        for variable, value in _variables(resource["Properties"]).items():
            if variable in SECRET_STAND_INS:
                stand_in = SECRET_STAND_INS[variable]
                if stand_in in secrets:
                    environment[stand_in] = secrets[stand_in]
                continue
            environment[variable] = _resolve(variable, value, refs, template)
    return environment


def globals_environment(template: dict[str, Any], refs: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the template's Globals give every function (parameters at their defaults unless ``refs`` says)."""
    variables = _variables(template.get("Globals", {}).get("Function", {}))
    resolved = {name: _resolve(name, value, refs or {}, template) for name, value in variables.items()}
    return {**resolved, **LOCAL_ONLY}


def _resolve(name: str, value: Any, refs: Mapping[str, str], template: dict[str, Any]) -> str:
    """A variable's value: literals, ``!Ref``, ``!If`` on one of the template's conditions, and ``!Sub`` of
    ``${Name}`` / ``${Resource.Attribute}`` from ``refs`` (or a parameter's default)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return _ref(name, value["Ref"], refs, template)
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        condition, when_true, when_false = value["Fn::If"]
        chosen = when_true if _condition(condition, template, refs) else when_false
        return _resolve(name, chosen, refs, template)
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([\w.]+)\}", lambda m: _ref(name, m.group(1), refs, template), value["Fn::Sub"])
    if isinstance(value, dict):
        raise ValueError(f"{name}: only literals, !Ref, !If and !Sub are understood locally, not {value}")
    return _text(value)


def _ref(name: str, target: str, refs: Mapping[str, str], template: dict[str, Any]) -> str:
    parameters = template.get("Parameters", {})
    if target in refs:
        return str(refs[target])
    if "Default" in parameters.get(target, {}):
        return _text(parameters[target]["Default"])
    raise KeyError(f"{name}: nothing local for {target} (pass it in refs)")


def _condition(name: str, template: dict[str, Any], refs: Mapping[str, str]) -> bool:
    """One of the template's Conditions, with the parameters ``refs`` names (the others at their defaults)."""

    def truth(expression: Any) -> bool:
        if isinstance(expression, dict) and "Condition" in expression:
            return _condition(expression["Condition"], template, refs)
        (function, arguments), *_ = expression.items()
        if function == "Fn::Equals":
            left, right = (_resolve(name, argument, refs, template) for argument in arguments)
            return left == right
        if function == "Fn::Not":
            return not truth(arguments[0])
        if function == "Fn::And":
            return all(truth(argument) for argument in arguments)
        if function == "Fn::Or":
            return any(truth(argument) for argument in arguments)
        raise ValueError(f"condition {name}: {function} is not understood locally")

    return truth(template.get("Conditions", {})[name])


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _variables(properties: dict[str, Any]) -> dict[str, Any]:
    return (properties.get("Environment") or {}).get("Variables") or {}


def _functions(template: dict[str, Any]) -> list[str]:
    return [name for name, resource in template["Resources"].items() if resource["Type"] == "AWS::Serverless::Function"]
