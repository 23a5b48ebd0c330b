"""CloudFormation's intrinsic functions, as far as the local stack needs them to read template.yaml's values:
``Ref`` (parameters, and resources the caller names), ``Fn::If`` with the template's ``Conditions``
(``Fn::Not``, ``Fn::Equals``, ``Fn::And``, ``Fn::Or``, ``Condition``), ``Fn::Sub``, ``Fn::Select``,
``Fn::Split`` and ``Fn::Join``. ``AWS::NoValue`` is ``None``; anything else is refused with its name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SUB = re.compile(r"\$\{([A-Za-z0-9_:.]+)\}")
NO_VALUE = "AWS::NoValue"


class Intrinsics:
    """Resolve values of one template, with ``values``: parameter (and resource) name -> value."""

    def __init__(self, template: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        self.conditions: Mapping[str, Any] = template.get("Conditions") or {}
        self.values = dict(values)

    def resolve(self, value: Any) -> Any:
        if not isinstance(value, dict) or len(value) != 1:
            return value
        ((name, argument),) = value.items()
        if name == "Ref":
            return None if argument == NO_VALUE else self._ref(argument)
        if name == "Fn::If":
            condition, when_true, when_false = argument
            return self.resolve(when_true if self.condition(condition) else when_false)
        if name == "Fn::Sub":
            text, extra = (argument, {}) if isinstance(argument, str) else argument
            local = {key: self.resolve(item) for key, item in extra.items()}
            return _SUB.sub(lambda found: str(local[found[1]] if found[1] in local else self._ref(found[1])), text)
        if name == "Fn::Select":
            index, items = argument
            return self.resolve(items)[int(self.resolve(index))]
        if name == "Fn::Split":
            separator, text = argument
            return str(self.resolve(text)).split(separator)
        if name == "Fn::Join":
            separator, items = argument
            return separator.join(str(self.resolve(item)) for item in self.resolve(items))
        return value  # not an intrinsic (a plain mapping)

    def condition(self, name: str) -> bool:
        return self._true(self.conditions[name])

    def _true(self, expression: Any) -> bool:
        ((name, argument),) = expression.items()
        if name == "Condition":
            return self.condition(argument)
        if name == "Fn::Not":
            return not self._true(argument[0])
        if name == "Fn::And":
            return all(self._true(item) for item in argument)
        if name == "Fn::Or":
            return any(self._true(item) for item in argument)
        if name == "Fn::Equals":
            left, right = (str(self.resolve(item)) for item in argument)
            return left == right
        raise ValueError(f"condition function not emulated locally: {name}")

    def _ref(self, name: str) -> Any:
        if name not in self.values:
            raise KeyError(f"nothing local for !Ref {name}")
        return self.values[name]
