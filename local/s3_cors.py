"""S3's CORS for the images bucket, in front of moto's server for the local stack: the bucket's
``CorsConfiguration`` read from the template, and a WSGI middleware that applies it the way S3 does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Response

from local.s3 import S3Error


@dataclass(frozen=True)
class CorsRule:
    """One of the bucket's ``CorsConfiguration.CorsRules``, as S3 applies it."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    exposed: tuple[str, ...] = ()
    max_age: int | None = None

    def allows(self, origin: str, method: str, request_headers: list[str]) -> bool:
        return (
            ("*" in self.origins or origin in self.origins)
            and method in self.methods
            and all("*" in self.headers or h.lower() in {a.lower() for a in self.headers} for h in request_headers)
        )


def bucket_cors_rules(template: dict[str, Any], parameters: dict[str, Any] | None = None) -> list[CorsRule]:
    """The images bucket's CORS rules in the template, with ``parameters`` replacing parameter defaults
    (literals, ``!Ref`` and ``!Split`` of a ``!Ref``: what the template uses)."""
    values = {name: spec.get("Default") for name, spec in (template.get("Parameters") or {}).items()}
    values.update(parameters or {})

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and "Ref" in value:
            return values[value["Ref"]]
        if isinstance(value, dict) and "Fn::Split" in value:
            separator, source = value["Fn::Split"]
            return str(resolve(source)).split(separator)
        return value

    bucket = template["Resources"]["ImagesBucket"]["Properties"]
    rules = (bucket.get("CorsConfiguration") or {}).get("CorsRules") or []
    return [
        CorsRule(
            origins=tuple(o.strip() for o in resolve(rule["AllowedOrigins"])),
            methods=tuple(resolve(rule["AllowedMethods"])),
            headers=tuple(resolve(rule.get("AllowedHeaders") or [])),
            exposed=tuple(resolve(rule.get("ExposedHeaders") or [])),
            max_age=int(resolve(rule["MaxAge"])) if "MaxAge" in rule else None,
        )
        for rule in rules
    ]


class BucketCors:
    """WSGI middleware: S3's CORS for browsers, from the bucket's rules (moto's server would allow any origin).

    A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here: 200 with the first
    matching rule's headers, else S3's 403 ``AccessForbidden``. Any other request goes to ``app``; its answer
    keeps only the CORS headers of the first rule matching its origin and method (none when no rule does, and the
    browser then keeps the answer from the page)."""

    def __init__(self, app: Any, rules: list[CorsRule]) -> None:
        self.app = app
        self.rules = rules

    def _rule(self, origin: str, method: str, request_headers: list[str]) -> CorsRule | None:
        return next((r for r in self.rules if r.allows(origin, method, request_headers)), None)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        origin = environ.get("HTTP_ORIGIN")
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        if environ.get("REQUEST_METHOD") == "OPTIONS" and origin and requested:
            asked = [h.strip() for h in (environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS") or "").split(",")]
            rule = self._rule(origin, requested.upper(), [h for h in asked if h])
            if rule is None:
                message = "CORSResponse: This CORS request is not allowed."
                return S3Error(403, "AccessForbidden", message).response(environ.get("PATH_INFO", "/"))(
                    environ, start_response
                )
            headers = self._headers(rule, origin)
            headers["Access-Control-Allow-Methods"] = ", ".join(rule.methods)
            if asked and asked != [""]:
                headers["Access-Control-Allow-Headers"] = ", ".join(asked)
            if rule.max_age is not None:
                headers["Access-Control-Max-Age"] = str(rule.max_age)
            return Response("", status=200, headers=headers)(environ, start_response)
        rule = self._rule(origin, str(environ.get("REQUEST_METHOD")), []) if origin else None

        def cors_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            if rule is not None and origin:
                kept += list(self._headers(rule, origin).items())
            return start_response(status, kept, exc_info)

        return self.app(environ, cors_start_response)

    @staticmethod
    def _headers(rule: CorsRule, origin: str) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": "*" if "*" in rule.origins else origin, "Vary": "Origin"}
        if rule.exposed:
            headers["Access-Control-Expose-Headers"] = ", ".join(rule.exposed)
        return headers
