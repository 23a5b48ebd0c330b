"""Each caller's webhook signing secret (Standard Webhooks, ``whsec_<base64>``), kept encrypted.

One item per owner (``imagecore.accounts.auth``: a client token's requests carry its parent key's owner, so a
token's tasks are signed with its parent's secret) in the webhook secrets table: the current secret and, after
a rotation, the one it replaced, each as KMS ciphertext bound to the owner (encryption context ``owner``), so
neither the table alone nor another owner's item reads it. The secret is made on first use; a rotation keeps
the previous one for ``ROTATION_GRACE_SECONDS``, during which deliveries carry both signatures. Secrets are
never logged and never part of an error.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.domain.errors import ImageServiceError
from imagecore.platform import aws

ROTATION_GRACE_SECONDS = 24 * 3600
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (the key HMAC-SHA256 signs with)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class WebhookSecretsUnavailable(ImageServiceError):
    status = 503
    type = "server_error"
    code = "webhook_secrets_unavailable"


@dataclass(frozen=True)
class SigningSecrets:
    current: str
    previous: str | None = None  # until the grace period after a rotation ends
    rotated_at: int | None = None

    @property
    def previous_valid_until(self) -> int | None:
        if self.previous is None or self.rotated_at is None:
            return None
        return self.rotated_at + ROTATION_GRACE_SECONDS

    @property
    def all(self) -> list[str]:
        return [self.current] if self.previous is None else [self.current, self.previous]


class WebhookSecrets:
    """The secrets table (partition key ``id`` = owner) and the KMS key that encrypts its secrets."""

    def __init__(
        self,
        table_name: str,
        kms_key_id: str,
        *,
        region: str,
        make_secret: Callable[[], str] = new_secret,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._key = kms_key_id
        self._region = region
        self._make = make_secret
        self._clock = clock

    @cached_property
    def dynamodb(self) -> Any:
        return aws.client("dynamodb", region_name=self._region)

    @cached_property
    def kms(self) -> Any:
        return aws.client("kms", region_name=self._region)

    def secret(self, owner: str) -> str:
        """The owner's current secret, made now if it has none."""
        found = self.signing_secrets(owner, create=True)
        assert found is not None
        return found.current

    def rotate(self, owner: str) -> str:
        """A new current secret; the one it replaces signs alongside it for the grace period."""
        fresh = self._make()
        now = int(self._clock())
        try:
            self.dynamodb.update_item(
                TableName=self._table,
                Key={"id": {"S": owner}},
                UpdateExpression="SET previous = current_secret, current_secret = :new, rotated_at = :now",
                ConditionExpression="attribute_exists(current_secret)",
                ExpressionAttributeValues={":new": {"B": self._encrypt(owner, fresh)}, ":now": {"N": str(now)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _unavailable() from None
            self._create(owner, fresh)  # no secret yet: the new one is the first
            return self.secret(owner)
        except BotoCoreError:
            raise _unavailable() from None
        return fresh

    def signing_secrets(self, owner: str, *, create: bool = False) -> SigningSecrets | None:
        """Every secret that signs now (the previous one too, within its grace period); None when the owner has
        none and ``create`` is off."""
        item = self._item(owner)
        if item is None:
            if not create:
                return None
            self._create(owner, self._make())
            item = self._item(owner)
            if item is None:
                raise _unavailable()
        current = self._decrypt(owner, item["current_secret"]["B"])
        rotated_at = int(item["rotated_at"]["N"]) if "rotated_at" in item else None
        previous = None
        if "previous" in item and rotated_at is not None and self._clock() - rotated_at < ROTATION_GRACE_SECONDS:
            previous = self._decrypt(owner, item["previous"]["B"])
        return SigningSecrets(current, previous, rotated_at)

    def _item(self, owner: str) -> dict[str, Any] | None:
        try:
            answer = self.dynamodb.get_item(TableName=self._table, Key={"id": {"S": owner}}, ConsistentRead=True)
        except (BotoCoreError, ClientError):
            raise _unavailable() from None
        item = answer.get("Item")
        return item if item and "current_secret" in item else None

    def _create(self, owner: str, secret: str) -> None:
        """The first secret; two first uses at once keep the one written first."""
        try:
            self.dynamodb.put_item(
                TableName=self._table,
                Item={"id": {"S": owner}, "current_secret": {"B": self._encrypt(owner, secret)}},
                ConditionExpression="attribute_not_exists(current_secret)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _unavailable() from None
        except BotoCoreError:
            raise _unavailable() from None

    def _encrypt(self, owner: str, secret: str) -> bytes:
        try:
            answer = self.kms.encrypt(
                KeyId=self._key, Plaintext=secret.encode("ascii"), EncryptionContext={"owner": owner}
            )
        except (BotoCoreError, ClientError):
            raise _unavailable() from None
        return bytes(answer["CiphertextBlob"])

    def _decrypt(self, owner: str, blob: bytes) -> str:
        try:
            answer = self.kms.decrypt(CiphertextBlob=blob, EncryptionContext={"owner": owner}, KeyId=self._key)
        except (BotoCoreError, ClientError):
            raise _unavailable() from None
        return bytes(answer["Plaintext"]).decode("ascii")


def _unavailable() -> WebhookSecretsUnavailable:
    return WebhookSecretsUnavailable("The webhook secrets cannot be read or written right now; try again.")
