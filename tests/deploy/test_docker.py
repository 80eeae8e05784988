"""The Dockerfiles, docker-compose.yml and docker/nginx.conf, read without a Docker engine."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import fcn_variables
from tests.deploy.dockerfiles import (
    dockerignore_excludes,
    env_values,
    parse_dockerfile,
    pip_installs,
    read_dockerignore,
)

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")

TORCH_PACKAGES = {"torch", "torchvision", "torchaudio", "segmentation-models-pytorch", "timm"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _extra_requirements(pyproject: dict, extra: str, seen: set[str] | None = None) -> set[str]:
    """Every requirement an extra pulls in, following ``fcnseg[...]`` self-references."""
    seen = seen if seen is not None else set()
    seen.add(extra)
    name = pyproject["project"]["name"]
    found: set[str] = set()
    for requirement in pyproject["project"]["optional-dependencies"][extra]:
        match = re.fullmatch(rf"{name}\[([\w,\s-]+)\]", requirement.strip())
        if match:
            for inner in match.group(1).split(","):
                if inner.strip() not in seen:
                    found |= _extra_requirements(pyproject, inner.strip(), seen)
        else:
            found.add(_requirement_name(requirement))
    return found


@pytest.fixture(scope="module")
def pyproject(root) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def serve_dockerfile(root):
    return parse_dockerfile(root / "docker" / "serve.Dockerfile")


@pytest.fixture(scope="module")
def train_dockerfile(root):
    return parse_dockerfile(root / "docker" / "train.Dockerfile")


def _final_stage(instructions) -> int:
    return max(ins.stage for ins in instructions)


def _last(instructions, keyword: str, stage: int):
    found = [i for i in instructions if i.keyword == keyword and i.stage == stage]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def test_serve_extra_pulls_no_torch(pyproject):
    requirements = _extra_requirements(pyproject, "serve")
    assert "onnxruntime" in requirements and "fastapi" in requirements
    assert not requirements & TORCH_PACKAGES, requirements & TORCH_PACKAGES
    # the check itself can see torch where it is
    assert "torch" in _extra_requirements(pyproject, "train")


def test_serve_image_installs_only_the_serve_extra(serve_dockerfile):
    installs = pip_installs(serve_dockerfile)
    assert installs == [[".[serve]"]], installs
    text = " ".join(i.args for i in serve_dockerfile if i.keyword in ("RUN", "ENV", "ARG"))
    # `import torch` may appear only as the check that it is NOT importable
    assert (
        re.findall(r"torch", text) == ["torch"]
        and '! /opt/fcn/bin/python -c "import torch"' in text
    )


def test_serve_image_is_slim_non_root_and_serves(serve_dockerfile):
    final = _final_stage(serve_dockerfile)
    bases = [i.args for i in serve_dockerfile if i.keyword in ("FROM", "ARG")]
    assert any("slim" in b for b in bases), bases
    user = _last(serve_dockerfile, "USER", final).args
    assert user not in ("root", "0") and not user.startswith("0:")
    assert _last(serve_dockerfile, "CMD", final).words() == ["fcn", "serve"]
    health = _last(serve_dockerfile, "HEALTHCHECK", final).args
    assert "/healthz" in health and "CMD" in health
    env = env_values(serve_dockerfile, final)
    assert env["FCN_HOST"] == "0.0.0.0"
    assert _last(serve_dockerfile, "EXPOSE", final).args == env["FCN_PORT"]
    # the runtime stage gets the built environment, not the sources
    copies = [i.args for i in serve_dockerfile if i.keyword == "COPY" and i.stage == final]
    assert copies == ["--from=build /opt/fcn /opt/fcn"]


def test_image_environment_names_real_settings(serve_dockerfile, settings_fields):
    env = fcn_variables(env_values(serve_dockerfile, _final_stage(serve_dockerfile)))
    assert env and set(env) <= settings_fields, set(env) - settings_fields


def test_build_context_holds_the_sources_and_the_default_model(root, serve_dockerfile):
    ignore = read_dockerignore(root / ".dockerignore")
    for ins in serve_dockerfile:
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            for source in ins.words()[:-1]:
                assert (root / source).exists(), source
                assert not dockerignore_excludes(ignore, source.rstrip("/")), source
    # Both bundled models are package data: `fcn serve --model demo` works in the image too.
    for bundled in ("service/assets/default.onnx", "service/assets/demo.onnx"):
        assert not dockerignore_excludes(ignore, bundled), bundled
    assert not dockerignore_excludes(ignore, "service/http/web/index.html")
    for heavy in (".venv/bin/python", ".git/HEAD", "demo/model.onnx", "runs/x/best.pt"):
        assert dockerignore_excludes(ignore, heavy), heavy


def test_train_image_installs_cpu_torch_then_the_train_extra(train_dockerfile):
    installs = pip_installs(train_dockerfile)
    assert installs[0][:3] == ["--no-compile", "--index-url", "${TORCH_INDEX_URL}"]
    assert installs[0][-1] == "${TORCH_REQUIREMENTS}"
    assert installs[-1] == ["--no-compile", ".[train]"]
    args = [i.args for i in train_dockerfile if i.keyword == "ARG"]
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in args
    assert 'TORCH_REQUIREMENTS="torch torchvision"' in args
    user = _last(train_dockerfile, "USER", _final_stage(train_dockerfile)).args
    assert user not in ("root", "0")


# ---- docker-compose.yml ---------------------------------------------------------------------


def _port_pairs(service: dict) -> list[tuple[str, str]]:
    pairs = []
    for port in service.get("ports", []):
        host, _, container = str(port).rpartition(":")
        pairs.append((host, container))
    return pairs


def test_compose_api_service(compose, root, settings_fields):
    api = compose["services"]["api"]
    assert "profiles" not in api, "api must start with a plain `docker compose up`"
    assert api["build"]["dockerfile"] == "docker/serve.Dockerfile"
    assert (root / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    env = fcn_variables(api["environment"])
    assert set(env) <= settings_fields, set(env) - settings_fields
    assert [c for _, c in _port_pairs(api)] == [env["FCN_PORT"]]
    assert "container_name" not in api, "a fixed name breaks --scale"
    mounts = {v.split(":")[1]: v for v in api["volumes"]}
    assert mounts[env["FCN_MODELS_DIR"]].split(":")[0] in compose["volumes"]
    # the image's HEALTHCHECK applies (one home for it), on the port compose sets
    assert "healthcheck" not in api and env["FCN_PORT"] == "8000"
    assert api["read_only"] is True and api["tmpfs"] == ["/tmp"]
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    limits = api["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    # compose's stop timeout outlasts the service's own drain
    grace = int(api["stop_grace_period"].rstrip("s"))
    assert grace > float(env["FCN_SHUTDOWN_GRACE_S"])


def test_compose_passes_the_torch_source_through_unset_by_default(compose, train_dockerfile):
    train_args = compose["services"]["train"]["build"]["args"]
    declared = {i.args.split("=")[0] for i in train_dockerfile if i.keyword == "ARG"}
    # bare names: compose passes them only when set, so the Dockerfile's defaults apply
    assert set(train_args) == {"TORCH_INDEX_URL", "TORCH_EXTRA_INDEX_URL", "TORCH_REQUIREMENTS"}
    assert set(train_args) <= declared


def test_compose_builds_take_an_optional_ca_bundle_secret(compose, root):
    secret = compose["secrets"]["ca_bundle"]["file"]
    default = (root / re.search(r":-(.+)\}", secret).group(1)).read_text()
    assert "BEGIN CERTIFICATE" not in default  # no extra CA unless FCN_CA_BUNDLE names one
    for name in ("api", "train"):
        assert compose["services"][name]["build"]["secrets"] == ["ca_bundle"]
    for dockerfile in ("serve", "train"):
        text = (root / "docker" / f"{dockerfile}.Dockerfile").read_text()
        assert (
            "--mount=type=secret,id=ca_bundle" in text and "PIP_CERT=/run/secrets/ca_bundle" in text
        )


def test_compose_train_profile_exports_into_the_models_volume(compose, root):
    train = compose["services"]["train"]
    assert train["profiles"] == ["train"]
    assert (root / train["build"]["dockerfile"]).is_file()
    api_models = next(v for v in compose["services"]["api"]["volumes"] if v.endswith(":ro"))
    volume = api_models.split(":")[0]
    assert f"{volume}:/models" in train["volumes"], "train writes where api reads"
    script = " ".join(train["command"])
    for step in ("fcn data demo", "fcn train", "fcn export"):
        assert step in script
    assert re.search(r"--out /models/\S+\.onnx", script)


def test_compose_scale_profile_puts_nginx_in_front_of_api(compose, root):
    nginx = compose["services"]["nginx"]
    assert nginx["profiles"] == ["scale"]
    source, target = nginx["volumes"][0].split(":")[:2]
    assert (root / source).resolve() == (root / "docker" / "nginx.conf").resolve()
    assert target == "/etc/nginx/nginx.conf"
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    # api publishes a port range so that N replicas do not collide on one host port
    host = _port_pairs(compose["services"]["api"])[0][0]
    assert re.fullmatch(r"\$\{\w+:-\d+-\d+\}", host), host


def test_nginx_conf_targets_the_api_service(root, compose):
    text = re.sub(r"#.*", "", (root / "docker" / "nginx.conf").read_text())
    port = fcn_variables(compose["services"]["api"]["environment"])["FCN_PORT"]
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)\b", text, flags=re.M)
    assert servers == [("api", port)]
    listen = re.search(r"^\s*listen\s+(\d+);", text, flags=re.M).group(1)
    assert f":{listen}" in compose["services"]["nginx"]["ports"][0]
    next_upstream = re.search(r"proxy_next_upstream\s+([^;]+);", text).group(1).split()
    assert {"error", "http_503", "non_idempotent"} <= set(next_upstream)
    # larger than the API's own cap, so clients get the API's JSON 413
    size = re.search(r"client_max_body_size\s+(\d+)m;", text).group(1)
    from service.http.settings import Settings

    assert compose["services"]["api"]["environment"]["FCN_MAX_BODY_BYTES"] is None  # the default
    default_body = Settings.model_fields["max_body_bytes"].default
    assert int(size) * 1024 * 1024 > default_body


# ---- every default once: the deployment files set only what differs -------------------------

# Variables a deployment file sets to the service's default on purpose: they are tied to
# something else in that file and must not follow a change of the default.
PINNED = {
    ("deploy/k8s/deployment.yaml", "FCN_CONCURRENCY"): "with FCN_INTRA_OP_THREADS, the CPU limit",
    ("docker/serve.Dockerfile", "FCN_PORT"): "EXPOSE and HEALTHCHECK use the same port",
    ("docker-compose.yml", "FCN_PORT"): "the published container port",
    ("deploy/k8s/deployment.yaml", "FCN_PORT"): "containerPort and the probes",
}


def _deployment_env(root, compose, serve_dockerfile) -> dict[str, dict[str, str | None]]:
    """FCN_* values per file; compose's ``${X:-v}`` is ``v``, a bare name (pass-through) None."""
    import yaml

    deployment = next(
        doc
        for doc in yaml.safe_load_all((root / "deploy" / "k8s" / "deployment.yaml").read_text())
        if doc["kind"] == "Deployment"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    compose_env = {}
    for key, value in fcn_variables(compose["services"]["api"]["environment"]).items():
        fallback = re.fullmatch(r"\$\{\w+:?-(.*)\}", str(value)) if value is not None else None
        compose_env[key] = fallback.group(1) if fallback else value
    return {
        "docker/serve.Dockerfile": fcn_variables(
            env_values(serve_dockerfile, _final_stage(serve_dockerfile))
        ),
        "docker-compose.yml": compose_env,
        "deploy/k8s/deployment.yaml": fcn_variables(
            {item["name"]: item.get("value") for item in container["env"]}
        ),
    }


def _same(value: str, default: object) -> bool:
    if isinstance(default, bool):
        return value.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(value) == float(default)
        except ValueError:
            return False
    return value == str(default)


def test_deployment_files_do_not_write_a_default_again(root, compose, serve_dockerfile):
    from service.http.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    copies = []
    for path, env in _deployment_env(root, compose, serve_dockerfile).items():
        assert env, path
        for key, value in env.items():
            name = key.removeprefix(prefix).lower()
            assert name in Settings.model_fields, f"{path}: {key} is not a setting"
            if value is None or (path, key) in PINNED:
                continue
            default = Settings.model_fields[name].default
            if default is not None and _same(value, default):
                copies.append(f"{path}: {key}={value}")
    assert not copies, (
        f"defaults written again (leave them unset, or pin them with a reason): {copies}"
    )


def test_the_copy_check_sees_a_copied_default():
    from service.http.settings import Settings

    assert _same("2", Settings.model_fields["concurrency"].default)
    assert _same("8", Settings.model_fields["max_queue"].default)
    assert _same("true", Settings.model_fields["access_log"].default)
    assert not _same("0.0.0.0", Settings.model_fields["host"].default)
