"""template.yaml as data: CloudFormation's short-form tags (!Ref, !Sub, !GetAtt ...) are kept as the long form
({"Ref": ...}, {"Fn::Sub": ...}), so the local stack and the tests read routes, resources and environments from
the very file that is deployed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"


# libyaml's parser where PyYAML was built with it (its wheels are): the template's 3,600 lines parse in ~40 ms
# instead of ~300 ms, in every process that reads it (the local stack, each test worker, the scripts).
try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # a PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _CfnLoader(_SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, !GetAtt ...) kept as {"Ref": ...} etc."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


@lru_cache(maxsize=1)
def project_template() -> dict[str, Any]:
    """The project's template.yaml, read once (callers must not change it)."""
    return load_template(TEMPLATE_PATH)
