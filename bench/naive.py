"""The reference: what a user would write in ten minutes. It reads the whole upstream body, parses it with
``json.loads``, decodes each image with ``base64.b64decode``, PUTs it and presigns a URL. No checks."""

import base64
import json
import os
import uuid

import boto3
import httpx
from botocore.config import Config

UPSTREAM = os.environ["UPSTREAM_BASE_URL"].rstrip("/")
BUCKET = os.environ["IMAGES_BUCKET"]
s3 = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL"), config=Config(signature_version="s3v4"))
http = httpx.Client(timeout=300, headers={"Authorization": f"Bearer {os.environ['UPSTREAM_API_KEY']}"})


def lambda_handler(event, context):
    request = json.loads(event["body"])
    answer = json.loads(http.post(f"{UPSTREAM}/images/generations", json=request).read())
    urls = []
    for item in answer["data"]:
        key = f"images/{uuid.uuid4().hex}.png"
        s3.put_object(Bucket=BUCKET, Key=key, Body=base64.b64decode(item["b64_json"]), ContentType="image/png")
        urls.append(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600))
    body = {"created": answer["created"], "data": [{"url": url} for url in urls], "usage": answer.get("usage")}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
