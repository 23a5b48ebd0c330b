"""What ships is what is tested: ``scripts/package.py`` builds sam build's layout, and every handler is imported
from it alone (its ``CodeUri`` copy, the layer's ``python/`` and a stand-in for the runtime's AWS SDK, nothing
else on ``sys.path``), so a module missing from the layer or a file outside ``CodeUri`` fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from local.gateway import load_template

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scripts" / "package.py"
SIMULATOR = "UpstreamSimulatorFunction"

# Runs in `python -I -S`: no site-packages, no PYTHONPATH, no current directory; only what Lambda would have.
PROBE = """
import json, os, sys
code_dir, layer_dir, event_path = sys.argv[1:4]
sys.path[:0] = [code_dir, layer_dir]
import app
assert callable(app.lambda_handler), "no lambda_handler"
answer = None
if event_path:
    class Context:
        function_name = "probe"; memory_limit_in_mb = 1024; aws_request_id = "probe-request"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:probe"
        function_version = "$LATEST"; log_group_name = "/aws/lambda/probe"; log_stream_name = "probe"
        def get_remaining_time_in_millis(self): return 30000
    with open(event_path) as source:
        answer = app.lambda_handler(json.load(source), Context())
outside = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
                  and "site-packages" in m.__file__})
print(json.dumps({"answer": answer, "outside": outside}))
"""

ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "image-service",
    "POWERTOOLS_METRICS_NAMESPACE": "ImageServicePackage",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "package-test",
    "AWS_SECRET_ACCESS_KEY": "package-test",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "IMAGES_BUCKET": "image-service-package",
    "S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
    "UPSTREAM_API_KEY": "package-test-upstream",
    "TASKS_TABLE": "image-service-tasks",
    # the second is the key of the sample events (events/*.json)
    "API_KEYS": "package-test-key,isk-example-not-a-real-key",
    "CLIENT_TOKEN_SIGNING_KEY": "package-test-signing-key-0123456789abcdef0123456789abcdef",
}


def functions_of(template_path: Path) -> dict[str, str]:
    resources = load_template(template_path)["Resources"]
    return {
        name: resource["Properties"]["CodeUri"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """This machine's Python with nothing but what a probe puts on ``sys.path``. The package is read-only in Lambda
    and another test checks it holds only Python 3.13's bytecode: the probes keep their own bytecode in a folder
    of this run (the first probe compiles what it imports, the others read it)."""
    bytecode = tmp_path_factory.mktemp("probe-bytecode")
    return [sys.executable, "-I", "-S", "-X", f"pycache_prefix={bytecode}"]


def probe(isolated: list[str], packaged: Path, function: str, event: Path | None) -> dict[str, Any]:
    command = [*isolated, "-c", PROBE, str(packaged / function)]
    command += [str(packaged / "CoreLayer" / "python"), str(event or "")]
    done = subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
    assert done.returncode == 0, f"{function}: {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_packaged_template_points_every_function_at_its_own_built_directory(packaged: Path) -> None:
    built = functions_of(packaged / "template.yaml")
    assert built == {name: name for name in functions_of(ROOT / "template.yaml")}
    # eleven functions (client tokens, usage and the two of webhooks among them), the two streamed image
    # functions, which share their buffered siblings' code, the streamed responses function and a test
    # deployment's upstream simulator
    assert len(built) == 15
    for name in built:
        if name == SIMULATOR:  # run.sh starts the simulator package behind the adapter
            assert (packaged / name / "simulator" / "__main__.py").is_file()
            assert os.access(packaged / name / "run.sh", os.X_OK)
            continue
        assert (packaged / name / "app.py").is_file()
        if name.endswith("StreamFunction"):  # the adapter starts run.sh, which must stay executable
            assert os.access(packaged / name / "run.sh", os.X_OK)
        assert not (packaged / name / "functions").exists()  # only what CodeUri holds
    layer = load_template(packaged / "template.yaml")["Resources"]["CoreLayer"]
    assert layer["Properties"]["ContentUri"] == "CoreLayer"


def test_the_layer_holds_imagecore_and_its_requirements_with_the_pinned_sdk(packaged: Path) -> None:
    layer = packaged / "CoreLayer" / "python"
    assert (layer / "imagecore" / "edge" / "openapi.json").is_file()
    for package in ("pydantic", "aws_lambda_powertools", "httpx", "PIL", "jwt", "boto3", "botocore", "s3transfer"):
        assert (layer / package).is_dir(), package
    # bytecode only of Python 3.13's (tests/package/test_bytecode.py), none of the Python that ran the build
    assert all(path.name.endswith(".cpython-313.pyc") for path in layer.rglob("*.pyc"))


@pytest.mark.parametrize("function", sorted(set(functions_of(ROOT / "template.yaml")) - {SIMULATOR}))
def test_every_handler_imports_from_the_packaged_layout_alone(
    isolated: list[str], packaged: Path, function: str
) -> None:
    result = probe(isolated, packaged, function, None)
    assert result["outside"] == [], f"{function} loaded modules from outside the package: {result['outside']}"


def test_the_packaged_simulator_draws_from_the_packaged_layout_alone(isolated: list[str], packaged: Path) -> None:
    """What ``python -m simulator`` imports and serves, from its CodeUri copy and the layer only."""
    script = """
import base64, io, json, sys
sys.path[:0] = sys.argv[1:4]
import simulator.__main__
from simulator import SimulatorOptions, UpstreamSimulator
from werkzeug.test import Client
client = Client(UpstreamSimulator(SimulatorOptions(api_key="k", control=False)))
answer = client.post("/v1/images/generations", json={"model": "gpt-image-2", "prompt": "p", "size": "1024x1024"},
                     headers={"Authorization": "Bearer k"})
from PIL import Image
image = Image.open(io.BytesIO(base64.b64decode(answer.get_json()["data"][0]["b64_json"])))
outside = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
                  and "site-packages" in m.__file__})
print(json.dumps({"status": answer.status_code, "size": image.size, "outside": outside}))
"""
    command = [*isolated, "-c", script, str(packaged / SIMULATOR)]
    command += [str(packaged / "CoreLayer" / "python"), str(packaged / "runtime")]
    done = subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"status": 200, "size": [1024, 1024], "outside": []}


def test_the_packaged_health_function_answers(isolated: list[str], packaged: Path) -> None:
    answer = probe(isolated, packaged, "HealthFunction", ROOT / "events" / "health.json")["answer"]
    assert answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert body == {"status": "ok", "version": body["version"], "upstream": "sub2api"}
    assert json.loads(answer["body"])["version"]


def test_the_packaged_generations_function_validates_a_request(
    isolated: list[str], packaged: Path, tmp_path: Path
) -> None:
    """GenerationsFunction serves POST /v1/images/generations/async (the synchronous route is streamed)."""
    event = json.loads((ROOT / "events" / "generations.json").read_text())
    route = "/v1/images/generations/async"
    event.update(path=route, resource=route)
    event["requestContext"].update(path=f"/prod{route}", resourcePath=route)
    event["body"] = json.dumps({"model": "gpt-image-2", "prompt": "a lighthouse", "size": "100x100"})
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    answer = probe(isolated, packaged, "GenerationsFunction", path)["answer"]
    assert answer["statusCode"] == 400
    error = json.loads(answer["body"])["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "size"


def test_a_packaged_client_token_passes_the_packaged_authorizer(
    isolated: list[str], packaged: Path, tmp_path: Path
) -> None:
    event = json.loads((ROOT / "events" / "generations.json").read_text())
    event.update(path="/v1/client_tokens", resource="/v1/client_tokens", body=json.dumps({"scope": ["tasks"]}))
    event["requestContext"].update(path="/prod/v1/client_tokens", resourcePath="/v1/client_tokens")
    (tmp_path / "mint.json").write_text(json.dumps(event))
    minted = probe(isolated, packaged, "ClientTokensFunction", tmp_path / "mint.json")["answer"]
    assert minted["statusCode"] == 200, minted["body"]
    token = json.loads(minted["body"])["token"]

    authorizer_event = json.loads((ROOT / "events" / "authorizer.json").read_text())
    authorizer_event["headers"]["Authorization"] = f"Bearer {token}"
    authorizer_event["multiValueHeaders"]["Authorization"] = [f"Bearer {token}"]
    (tmp_path / "authorize.json").write_text(json.dumps(authorizer_event))
    policy = probe(isolated, packaged, "AuthorizerFunction", tmp_path / "authorize.json")["answer"]
    assert policy["context"]["credential"] == "client_token"
    (statement,) = policy["policyDocument"]["Statement"]
    # the tasks scope it asked for, and the model routes every token may call (SDKs list the models first)
    assert [resource.rsplit("/prod/", 1)[1] for resource in statement["Resource"]] == [
        "GET/v1/images/tasks/*",
        "GET/v1/models",
        "GET/v1/models/*",
    ]


def test_the_zips_hold_what_the_directories_hold(packaged: Path) -> None:
    sizes = json.loads((packaged / "sizes.json").read_text())
    with zipfile.ZipFile(packaged / "zips" / "GenerationsFunction.zip") as archive:
        assert "app.py" in archive.namelist()
    with zipfile.ZipFile(packaged / "zips" / "CoreLayer.zip") as archive:
        assert "python/imagecore/usecases/service.py" in archive.namelist()
    assert sizes["GenerationsFunction"]["with_layers"] < 250 * 1024 * 1024


def test_the_arm64_layer_carries_only_linux_aarch64_cp313_extensions(tmp_path: Path) -> None:
    out = tmp_path / "arm64"
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(PACKAGE), "--out", str(out)], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    extensions = [path.name for path in (out / "CoreLayer" / "python").rglob("*.so")]
    assert any("pydantic_core" in name for name in extensions)
    modules = [name for name in extensions if ".cpython-" in name]
    assert modules and all(name.endswith(".cpython-313-aarch64-linux-gnu.so") for name in modules), modules
    # the pinned SDK included (botocore alone is some 30 MB), well inside Lambda's 250 MB and the 120 MB aimed at
    assert json.loads((out / "sizes.json").read_text())["CoreLayer"]["unzipped"] <= 120 * 1024 * 1024
