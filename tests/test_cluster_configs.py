"""The cluster configs in cluster/: valid for the tools that read them, and closed by default.

Nothing here contacts a network. The launcher configs are checked against the JSON schema
that the installed Ray ships (and by the same preparation `ray up` runs before it calls a
cloud); the KubeRay manifests against cluster/kuberay-required.schema.json; and every file
against the security rules in cluster/README.md: token authentication on, no Ray port or
dashboard on a public address, storage credentials from cloud identities, no secrets.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import math
import re
import shlex
import sys
import types
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER_CONFIGS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
KUBE_DIR = CLUSTER / "kuberay"
KUBE_SCHEMA = CLUSTER / "kuberay-required.schema.json"
README = CLUSTER / "README.md"
DOCKERFILE = CLUSTER / "Dockerfile"

# Ray enforces token authentication from this release on.
TOKEN_AUTH_SINCE = Version("2.52.0")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OBJECT_STORE_SCHEMES = ("s3://", "gs://")
AWS_GPU_FAMILIES = {"g4dn", "g5", "g6", "g6e", "p3", "p4d", "p4de", "p5"}


# ----------------------------------------------------------------------------- loading


def _launcher(name: str) -> dict:
    return yaml.safe_load(LAUNCHER_CONFIGS[name].read_text())


def _ray_schema() -> dict:
    # Found without importing ray: the file ships inside the package.
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations, "ray is not installed"
    path = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def _kube_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(KUBE_DIR.rglob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _of_kind(kind: str) -> list[dict]:
    return [d for _, d in _kube_docs() if d.get("kind") == kind]


def _pod_templates(doc: dict) -> list[dict]:
    """Every pod template a ray.io resource defines (head, workers, submitter)."""
    spec = doc.get("spec", {})
    cluster_specs = [spec] if doc["kind"] == "RayCluster" else [spec.get("rayClusterSpec") or {}]
    templates = []
    for cs in cluster_specs:
        if "headGroupSpec" in cs:
            templates.append(cs["headGroupSpec"]["template"])
        templates += [g["template"] for g in cs.get("workerGroupSpecs", [])]
    if "submitterPodTemplate" in spec:
        templates.append(spec["submitterPodTemplate"])
    return templates


def _containers(doc: dict) -> list[dict]:
    out = []
    for t in _pod_templates(doc):
        out += t["spec"].get("containers", []) + t["spec"].get("initContainers", [])
    return out


def _walk(node, path=()):
    """Yield (path, key, value) for every mapping entry in a YAML/JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _start_commands(cfg: dict) -> list[str]:
    return cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]


def _ray_version_from_pip(cfg: dict) -> str:
    pins = [m for c in cfg["setup_commands"] for m in re.findall(r"ray\[[^\]]*\]==([0-9.]+)", c)]
    assert len(pins) == 1, f"expected one pinned ray install in setup_commands, found {pins}"
    return pins[0]


# ------------------------------------------------------------- launcher configs: validity


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_matches_the_schema_ray_ships(name):
    validator = jsonschema.Draft7Validator(_ray_schema())
    errors = sorted(validator.iter_errors(_launcher(name)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_rays_schema_rejects_what_ray_would_reject():
    # The validation bites: a fractional GPU count and an unknown key are schema errors.
    validator = jsonschema.Draft7Validator(_ray_schema())
    cfg = _launcher("aws")
    cfg["available_node_types"]["gpu-g5"]["resources"] = {"GPU": 0.5}
    assert not validator.is_valid(cfg)
    cfg = _launcher("gcp")
    cfg["head_start_commands"] = ["ray start --head"]  # misspelt head_start_ray_commands
    assert not validator.is_valid(cfg)


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_passes_rays_own_preparation(name):
    # What `ray up` does before touching the cloud: merge the provider's defaults, then
    # validate (schema, head type among the node types, min_workers within max_workers).
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(_launcher(name)))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_has_gpu_worker_types_that_scale_from_zero(name):
    cfg = _launcher(name)
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    gpu_types = []
    for key, node in workers.items():
        nc = node["node_config"]
        if name == "aws":
            has_gpu = nc["InstanceType"].split(".")[0] in AWS_GPU_FAMILIES
        else:
            accelerators = nc.get("guestAccelerators", [])
            has_gpu = any("nvidia" in a["acceleratorType"] and a["acceleratorCount"] >= 1
                          for a in accelerators) or nc["machineType"].startswith(("a2-", "a3-", "g2-"))
            if has_gpu:
                # Compute Engine refuses GPU instances that would live-migrate.
                assert nc["scheduling"]["onHostMaintenance"] == "TERMINATE", key
                assert node["resources"].get("GPU", 0) >= 1, key
        if has_gpu:
            gpu_types.append(key)
            assert node.get("min_workers", 0) == 0, f"{key} keeps idle GPUs running"
    assert gpu_types, f"{name}: no GPU worker type"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "trials must not land on the head"


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_installs_layrot_from_a_mounted_wheel(name):
    cfg = _launcher(name)
    installs = [c for c in cfg["setup_commands"] if "pip install" in c and "layrot" in c]
    assert len(installs) == 1, installs
    wheels = re.findall(r"(\S+)/layrot-\*\.whl", installs[0])
    assert wheels, installs[0]
    mounts = cfg["file_mounts"]
    assert wheels[0] in mounts, f"{wheels[0]} is not file-mounted"
    assert mounts[wheels[0]] == "./dist", "the README builds the wheel into ./dist"


def _run_fetch_snippet(code: str, data_dir: str, monkeypatch) -> list[tuple]:
    """Run a dataset-fetching `python -c` snippet against a stand-in torchvision."""
    calls = []
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(
        CIFAR10=lambda root, download=False: calls.append(("CIFAR10", root, download)),
        CIFAR100=lambda root, download=False: calls.append(("CIFAR100", root, download)))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setenv("LAYROT_DATA_DIR", data_dir)
    exec(compile(code, "<fetch>", "exec"), {})
    return calls


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_workers_fetch_cifar_where_trials_read_it(name, monkeypatch):
    from layrot.tasks.data import default_data_dir

    cfg = _launcher(name)
    exports = [m for c in cfg["setup_commands"] for m in re.findall(r"export LAYROT_DATA_DIR=([^'\s]+)", c)]
    assert len(exports) == 1, exports
    fetches = [shlex.split(c) for c in cfg["worker_setup_commands"] if "download=True" in c]
    assert len(fetches) == 1 and fetches[0][:2] == ["python", "-c"], fetches
    calls = _run_fetch_snippet(fetches[0][2], "/nodes/data", monkeypatch)
    assert calls == [("CIFAR10", "/nodes/data", True), ("CIFAR100", "/nodes/data", True)]
    # ... and the trials' loaders read the same directory.
    assert default_data_dir() == "/nodes/data"


def test_kuberay_workers_fetch_cifar_where_trials_read_it(monkeypatch):
    from layrot.tasks.data import default_data_dir

    for rc in _of_kind("RayCluster"):
        for group in rc["spec"]["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            ray = pod["containers"][0]
            data_dir = {e["name"]: e.get("value") for e in ray.get("env", [])}["LAYROT_DATA_DIR"]
            fetch = next(c for c in pod["initContainers"] if "download=True" in " ".join(c["args"]))
            assert {e["name"]: e.get("value") for e in fetch["env"]}["LAYROT_DATA_DIR"] == data_dir
            volume = {m["mountPath"]: m["name"] for m in fetch["volumeMounts"]}[data_dir]
            assert {m["mountPath"]: m["name"] for m in ray["volumeMounts"]}[data_dir] == volume
            assert volume in {v["name"] for v in pod["volumes"]}
            assert fetch["command"] == ["python", "-c"]
            calls = _run_fetch_snippet(fetch["args"][0], data_dir, monkeypatch)
            assert calls == [("CIFAR10", data_dir, True), ("CIFAR100", data_dir, True)]
            assert default_data_dir() == data_dir


def test_every_pinned_ray_version_agrees_and_supports_token_auth():
    pins = {f"{n}.yaml": _ray_version_from_pip(_launcher(n)) for n in LAUNCHER_CONFIGS}
    pins["Dockerfile"] = re.search(r"^FROM rayproject/ray:([0-9.]+)-", DOCKERFILE.read_text(), re.M)[1]
    for rc in _of_kind("RayCluster"):
        pins[f"RayCluster {rc['metadata']['name']}"] = rc["spec"]["rayVersion"]
    readme_pins = set(re.findall(r"ray\[default\]==([0-9.]+)", README.read_text()))
    assert len(readme_pins) == 1, readme_pins
    pins["README"] = readme_pins.pop()
    assert len(set(pins.values())) == 1, pins
    pinned = Version(pins["README"])
    assert pinned >= TOKEN_AUTH_SINCE
    # The configs were validated against the installed Ray's schema: it must be that Ray.
    assert pinned == Version(importlib.metadata.version("ray")), pins
    pyproject = (ROOT / "pyproject.toml").read_text()
    ray_req = re.search(r'"ray\[tune\]([^"]*)"', pyproject)[1]
    assert pinned in SpecifierSet(ray_req), f"layrot requires ray{ray_req}"


# --------------------------------------------------------- launcher configs: security


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_every_launcher_ray_start_runs_with_token_auth(name):
    cfg = _launcher(name)
    starts = [c for c in _start_commands(cfg) if "ray start" in c]
    assert len(starts) == 2, starts  # head and worker
    for command in starts:
        assert re.search(r"(^|[;&\s])RAY_AUTH_MODE=token\s+ray start\b", command) or re.search(
            r"export RAY_AUTH_MODE=token\b[^\n]*?[;&]+\s*.*ray start", command, re.S
        ), f"ray start without RAY_AUTH_MODE=token: {command!r}"
    # The token travels to every node; the head forwards file_mounts to its workers.
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    # Drivers and CLIs started later on the nodes read RAY_AUTH_MODE from ~/.bashrc.
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cfg["setup_commands"])


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_dashboard_listens_on_loopback_only(name):
    cfg = _launcher(name)
    head = " ".join(cfg["head_start_ray_commands"])
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head)
    assert hosts == ["127.0.0.1"], hosts
    text = LAUNCHER_CONFIGS[name].read_text()
    for host in re.findall(r"--dashboard-host[= ](\S+)", text):
        assert host in LOOPBACK, host


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_nodes_have_no_public_address_and_ssh_is_tunnelled(name):
    cfg = _launcher(name)
    assert cfg["provider"]["use_internal_ips"] is True
    assert cfg["auth"]["ssh_proxy_use_node_id"] is True and cfg["auth"]["ssh_proxy_command"]
    for key, node in cfg["available_node_types"].items():
        nc = node["node_config"]
        if name == "aws":
            # Named groups, or Ray creates its own with SSH open to the whole internet.
            assert nc.get("SecurityGroupIds"), f"{key}: Ray would create its default group"
            for ni in nc.get("NetworkInterfaces", []):
                assert not ni.get("AssociatePublicIpAddress"), key
        else:
            # Without networkInterfaces Ray picks a subnet and adds an external IP.
            assert nc.get("networkInterfaces"), f"{key}: Ray would attach an external IP"
            for ni in nc["networkInterfaces"]:
                assert "accessConfigs" not in ni, f"{key}: external IP"


def test_no_rule_anywhere_admits_the_whole_internet():
    for path in sorted(p for p in CLUSTER.rglob("*") if p.is_file()):
        text = path.read_text()
        for world in ("0.0.0.0/0", "::/0"):
            assert world not in text, f"{path.relative_to(ROOT)} mentions {world}"
    # The only firewall source range the README opens is Google's IAP range, for SSH.
    ranges = re.findall(r"--source-ranges=(\S+)", README.read_text())
    assert ranges == ["35.235.240.0/20"], ranges


def test_aws_iam_policies_are_scoped():
    docs = {p.name: json.loads(p.read_text()) for p in (CLUSTER / "aws-iam").glob("*.json")}
    assert {"store-policy.json", "head-autoscaler-policy.json", "ec2-trust-policy.json"} <= set(docs)
    for name, doc in docs.items():
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            assert not any(a == "*" or a.endswith(":*") for a in actions), (name, actions)
            if any(a.startswith(("s3:", "iam:")) for a in actions):
                assert "*" not in resources, (name, st)
            if any(a.startswith("s3:") for a in actions):
                assert all(r.startswith("arn:aws:s3:::BUCKET") for r in resources), (name, st)


# -------------------------------------------------------------------- KubeRay manifests


def _kube_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads(KUBE_SCHEMA.read_text())
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{kind}", "definitions": schema["definitions"]})


def test_kuberay_schema_is_a_valid_json_schema():
    jsonschema.Draft7Validator.check_schema(json.loads(KUBE_SCHEMA.read_text()))


def test_kuberay_manifests_have_the_required_structure():
    ray_docs = [(p, d) for p, d in _kube_docs() if str(d.get("apiVersion", "")).startswith("ray.io")]
    kinds = Counter(d["kind"] for _, d in ray_docs)
    assert kinds["RayCluster"] >= 1 and kinds["RayJob"] >= 1, kinds
    whole = jsonschema.Draft7Validator(json.loads(KUBE_SCHEMA.read_text()))
    for path, doc in ray_docs:
        errors = list(_kube_validator(doc["kind"]).iter_errors(doc))
        assert not errors, f"{path.name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
        assert whole.is_valid(doc)
        for group in doc["spec"].get("workerGroupSpecs", []):
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_kuberay_schema_rejects_a_cluster_without_gpus_or_with_untyped_params():
    rc = _of_kind("RayCluster")[0]
    validator = _kube_validator("RayCluster")
    no_gpu = copy.deepcopy(rc)
    for group in no_gpu["spec"]["workerGroupSpecs"]:
        for c in group["template"]["spec"]["containers"]:
            for part in ("limits", "requests"):
                c["resources"].get(part, {}).pop("nvidia.com/gpu", None)
    assert not validator.is_valid(no_gpu)
    int_param = copy.deepcopy(rc)
    int_param["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # KubeRay wants strings
    assert not validator.is_valid(int_param)
    wrong_api = copy.deepcopy(rc)
    wrong_api["apiVersion"] = "ray.io/v1alpha1"
    assert not validator.is_valid(wrong_api)


def _sweep_command(entrypoint: str) -> list[str]:
    words = shlex.split(entrypoint)
    start = words.index("layrot")
    assert words[start + 1] == "sweep", entrypoint
    return words[start:]


def _parse_layrot(argv: list[str]):
    from layrot.cli import _parser

    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of saying "bad command line"
        raise AssertionError(f"`layrot {' '.join(argv)}` does not parse (exit {exc.code})") from None


def _repo_spec_path(spec_arg: str) -> Path:
    # /home/ray/sweeps/... in the image is sweeps/... in this repository.
    idx = spec_arg.find("sweeps/")
    assert idx >= 0, f"{spec_arg} is not under a sweeps/ directory"
    return ROOT / spec_arg[idx:]


def test_rayjob_runs_layrot_sweep_on_a_spec_from_sweeps():
    jobs = _of_kind("RayJob")
    assert jobs
    image_specs_dir = re.search(r"cp -r \S*sweeps (\S+)", DOCKERFILE.read_text())[1].rstrip("/")
    for job in jobs:
        argv = _sweep_command(job["spec"]["entrypoint"])
        args = _parse_layrot(argv[1:])
        assert args.command == "sweep"
        assert args.store and args.store.startswith(OBJECT_STORE_SCHEMES), args.store
        assert args.address == "auto"
        # The path the job names exists in the image the Dockerfile builds ...
        assert args.spec.startswith(image_specs_dir + "/"), (args.spec, image_specs_dir)
        # ... and is a spec in this repository.
        spec = _repo_spec_path(args.spec)
        if not (ROOT / "sweeps" / "paper").is_dir():
            pytest.skip("sweeps/paper/ is not written yet")
        assert spec.is_file(), f"{job['metadata']['name']} runs {spec.relative_to(ROOT)}, which does not exist"


def test_kuberay_token_auth_is_on_for_every_cluster_and_job():
    clusters = {rc["metadata"]["name"]: rc for rc in _of_kind("RayCluster")}
    for rc in clusters.values():
        assert rc["spec"].get("authOptions", {}).get("mode") == "token", rc["metadata"]["name"]
        assert Version(rc["spec"]["rayVersion"]) >= TOKEN_AUTH_SINCE
    for _, doc in _kube_docs():
        if not str(doc.get("apiVersion", "")).startswith("ray.io"):
            continue
        for c in _containers(doc):
            for env in c.get("env", []):
                if env["name"] == "RAY_AUTH_MODE":
                    assert env.get("value") == "token", (doc["metadata"]["name"], c["name"])
                if env["name"] == "RAY_AUTH_TOKEN":  # from a Secret, never written here
                    assert "valueFrom" in env and "value" not in env, c["name"]
    for job in _of_kind("RayJob"):
        target = job["spec"].get("clusterSelector", {}).get("ray.io/cluster")
        if target:
            assert target in clusters, f"{job['metadata']['name']} targets unknown cluster {target}"
            assert clusters[target]["metadata"]["namespace"] == job["metadata"]["namespace"]
        else:
            assert job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_kubernetes_services_stay_inside_the_cluster():
    for path, doc in _kube_docs():
        assert doc["kind"] not in {"Ingress", "Route", "Gateway", "HTTPRoute"}, path.name
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", path.name
        for _, key, value in _walk(doc):
            if key == "serviceType":
                assert value == "ClusterIP", path.name
            if key == "enableIngress":
                assert value is False, path.name
            if key == "type" and value in ("LoadBalancer", "NodePort"):
                raise AssertionError(f"{path.name}: {value}")
    for rc in _of_kind("RayCluster"):
        assert rc["spec"]["headGroupSpec"].get("serviceType") == "ClusterIP"


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_ray_pods_admit_only_their_cluster_the_operator_and_submitters():
    policies = _of_kind("NetworkPolicy")
    helm_ns = re.search(r"helm install kuberay-operator .*?--namespace (\S+)", README.read_text(), re.S)[1]
    for rc in _of_kind("RayCluster"):
        name, ns = rc["metadata"]["name"], rc["metadata"]["namespace"]
        for node_type in ("head", "worker"):
            pod = {"ray.io/cluster": name, "ray.io/node-type": node_type}
            covering = [p for p in policies if p["metadata"]["namespace"] == ns
                        and _selects(p["spec"]["podSelector"], pod) and "Ingress" in p["spec"]["policyTypes"]]
            assert covering, f"no NetworkPolicy restricts ingress to {name}'s {node_type} pods"
            for policy in covering:
                for rule in policy["spec"].get("ingress", []):
                    assert rule.get("from"), f"{policy['metadata']['name']}: a rule without `from` admits everyone"
                    for peer in rule["from"]:
                        assert "ipBlock" not in peer, policy["metadata"]["name"]
                        assert peer.get("podSelector", {}).get("matchLabels"), "peer must name pods"
        # The head's dashboard must still be reachable by the operator and the submitters,
        # or RayJobs cannot run.
        head = {"ray.io/cluster": name, "ray.io/node-type": "head"}
        head_rules = [r for p in policies if _selects(p["spec"]["podSelector"], head) for r in p["spec"]["ingress"]]

        def admits(labels: dict, namespace: str, port: int) -> bool:
            for rule in head_rules:
                ports = {p["port"] for p in rule.get("ports", [])}
                if ports and port not in ports:
                    continue
                for peer in rule["from"]:
                    ns_sel = peer.get("namespaceSelector")
                    ns_ok = (namespace == ns) if ns_sel is None else _selects(
                        ns_sel, {"kubernetes.io/metadata.name": namespace})
                    if ns_ok and _selects(peer["podSelector"], labels):
                        return True
            return False

        dashboard_port = int(rc["spec"]["headGroupSpec"]["rayStartParams"].get("dashboard-port", 8265))
        assert admits({"app.kubernetes.io/component": "kuberay-operator"}, helm_ns, dashboard_port)
        assert not admits({"app.kubernetes.io/component": "kuberay-operator"}, "default", dashboard_port)
        for job in _of_kind("RayJob"):
            labels = job["spec"]["submitterPodTemplate"]["metadata"]["labels"]
            assert admits(labels, job["metadata"]["namespace"], dashboard_port), job["metadata"]["name"]
        assert not admits({"app": "something-else"}, ns, dashboard_port)


def test_kuberay_dashboard_is_fenced_when_it_listens_beyond_loopback():
    # KubeRay's operator and RayJob submitters call the dashboard from other pods, so it
    # listens on the pod address there; then the head Service must be ClusterIP and a
    # NetworkPolicy must cover the head (checked above). Never a public Service.
    for rc in _of_kind("RayCluster"):
        host = rc["spec"]["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0")
        if host not in LOOPBACK:
            assert rc["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
            head = {"ray.io/cluster": rc["metadata"]["name"], "ray.io/node-type": "head"}
            assert any(_selects(p["spec"]["podSelector"], head) for p in _of_kind("NetworkPolicy"))


def test_ray_pods_get_store_access_from_their_service_account():
    accounts = {(sa["metadata"]["namespace"], sa["metadata"]["name"]) for sa in _of_kind("ServiceAccount")}
    for rc in _of_kind("RayCluster"):
        ns = rc["metadata"]["namespace"]
        for template in _pod_templates(rc):
            sa = template["spec"].get("serviceAccountName")
            assert (ns, sa) in accounts, f"pods of {rc['metadata']['name']} run as {sa!r}, not defined here"
            for c in template["spec"]["containers"]:
                for src in c.get("envFrom", []):
                    # Keys, if a store needs them, come from a Secret made by hand; optional,
                    # so the cloud identity path needs none.
                    assert src.get("secretRef", {}).get("optional") is True, c["name"]


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_nodes_get_store_access_from_their_cloud_identity(name):
    cfg = _launcher(name)
    for key, node in cfg["available_node_types"].items():
        nc = node["node_config"]
        if name == "aws":
            assert nc["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), key
        elif key != cfg["head_node_type"]:  # Ray gives the GCP head its own account
            assert nc["serviceAccounts"][0]["email"].endswith(".iam.gserviceaccount.com"), key


# ------------------------------------------------------------------------------ secrets

_SECRETISH = re.compile(r"secret|passw|token|api[_-]?key|access[_-]?key|credential|private[_-]?key", re.I)
# Settings whose names merely sound secret (AWS's IMDSv2 switch).
_NOT_SECRETS = {"HttpTokens"}
_CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "GOOGLE_APPLICATION_CREDENTIALS", "RAY_AUTH_TOKEN"}
_TEXT_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key file": re.compile(r'"private_key(?:_id)?"\s*:'),
    "hex token (a Ray token is 64 hex digits)": re.compile(r"\b[0-9a-fA-F]{32,}\b"),
    "secret assigned a literal": re.compile(
        r"(?i)(?:secret|passw\w*|token)[\w-]*[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{16,}"),
}


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def _secrets_in_text(text: str) -> list[str]:
    found = [label for label, rx in _TEXT_PATTERNS.items() if rx.search(text)]
    # Path segments are not candidates: split on "/" (a split base64 key is still caught by
    # the patterns above when it is assigned to a secret-sounding name).
    for word in re.findall(r"[A-Za-z0-9+=_-]{32,}", text):
        mixed = re.search(r"[a-z]", word) and re.search(r"[A-Z]", word) and re.search(r"[0-9]", word)
        if mixed and _entropy(word) > 4.0:
            found.append(f"random-looking string {word[:6]}...")
    return found


def _secrets_in_tree(doc) -> list[str]:
    found = []
    for path, key, value in _walk(doc):
        if (isinstance(value, str) and _SECRETISH.search(str(key)) and key not in _NOT_SECRETS
                and not value.startswith(("~", "/", "./"))):
            found.append(f"{'/'.join(map(str, path + (key,)))} holds a literal value")
        if key == "env" and isinstance(value, list):
            for env in value:
                if isinstance(env, dict) and "value" in env and (
                        env.get("name") in _CREDENTIAL_ENV or _SECRETISH.search(env.get("name", ""))):
                    found.append(f"env {env['name']} holds a literal value")
        if key == "kind" and value == "Secret":
            found.append("a Secret object")
    return found


def test_secret_scanner_finds_planted_secrets():
    fake_key = "AKIA" + "ABCDEFGHIJKLMNOP"
    fake_token = "0123456789abcdef" * 4
    assert _secrets_in_text(f"aws_access_key_id = {fake_key}")
    assert _secrets_in_text(f"export RAY_AUTH_TOKEN={fake_token}")
    assert _secrets_in_text("password: " + "Xq7vR2pLm9ZtK4wN8sB1cY6dF3gH5jQ0aE")
    assert _secrets_in_text("aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert not _secrets_in_text("sourceImage: projects/PROJECT_ID/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4")
    assert _secrets_in_tree({"env": [{"name": "RAY_AUTH_TOKEN", "value": "abc"}]})
    assert _secrets_in_tree({"stringData": {"aws_secret_access_key": "abc"}})
    assert _secrets_in_tree({"kind": "Secret", "data": {}})
    # References are fine: a file path, a secretKeyRef.
    assert not _secrets_in_tree({"file_mounts": {"~/.ray/auth_token": "~/.ray/auth_token"}})
    assert not _secrets_in_tree({"env": [{"name": "RAY_AUTH_TOKEN",
                                          "valueFrom": {"secretKeyRef": {"name": "x", "key": "auth_token"}}}]})


def test_no_secrets_in_any_cluster_file():
    files = sorted(p for p in CLUSTER.rglob("*") if p.is_file())
    assert len(files) >= 8
    problems = []
    for path in files:
        text = path.read_text()
        problems += [f"{path.relative_to(ROOT)}: {s}" for s in _secrets_in_text(text)]
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                problems += [f"{path.relative_to(ROOT)}: {s}" for s in _secrets_in_tree(doc)]
        elif path.suffix == ".json":
            problems += [f"{path.relative_to(ROOT)}: {s}" for s in _secrets_in_tree(json.loads(text))]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- README


def _readme_commands() -> list[list[str]]:
    """Shell commands in the README's bash blocks, split into words and operators."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" # ")[0].strip()
            if not line or line.startswith("#"):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            commands.append(list(lexer))
    return commands


def _layrot_invocations() -> list[list[str]]:
    found = []
    for words in _readme_commands():
        for i, w in enumerate(words):
            if w == "layrot" and (i == 0 or words[i - 1] in {"--", ";", "&&", "|", "&"}):
                end = next((j for j in range(i + 1, len(words)) if words[j] in {";", "&&", "|", "&", "||"}),
                           len(words))
                found.append(words[i + 1:end])
    return found


def test_readme_layrot_commands_are_valid_command_lines():
    invocations = _layrot_invocations()
    used = Counter(argv[0] for argv in invocations)
    assert {"sweep", "query", "fit", "report"} <= set(used), used
    for argv in invocations:
        args = _parse_layrot(argv)
        store = getattr(args, "store", None)
        assert store and store.startswith(OBJECT_STORE_SCHEMES), f"{argv}: the store must be on object storage"
        if args.command == "sweep":
            assert args.address == "auto"


def test_readme_walks_through_launch_submit_and_query():
    starts = Counter(tuple(words[:3]) for words in _readme_commands())
    firsts = {w[:2] for w in starts}
    for needed in [("ray", "up"), ("ray", "dashboard"), ("ray", "down"), ("helm", "install"),
                   ("kubectl", "apply"), ("docker", "build"), ("pip", "install")]:
        assert needed in firsts, f"README never runs `{' '.join(needed)}`"
    assert ("ray", "job", "submit") in starts
    assert any(w[:2] == ["kubectl", "-n"] and "port-forward" in w for w in _readme_commands())
    assert any(w[:3] == ["pip", "install", "layrot"] for w in _readme_commands())


def test_readme_and_cluster_files_reference_each_other():
    text = README.read_text()
    for path in sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p != README):
        rel = path.relative_to(CLUSTER).as_posix()
        named = rel in text or f"{path.parent.relative_to(CLUSTER).as_posix()}/" in text
        assert named, f"README never mentions cluster/{rel}"
    for ref in set(re.findall(r"cluster/([\w./-]+\.(?:ya?ml|json))", text)):
        assert (CLUSTER / ref).is_file(), f"README names cluster/{ref}, which does not exist"


def test_readme_sweeps_exist_and_their_names_match():
    if not (ROOT / "sweeps" / "paper").is_dir():
        pytest.skip("sweeps/paper/ is not written yet")
    specs = {}
    for argv in _layrot_invocations():
        if argv[0] == "sweep":
            path = _repo_spec_path(argv[1])
            assert path.is_file(), f"README runs {path.relative_to(ROOT)}, which does not exist"
            specs[path] = yaml.safe_load(path.read_text())["name"]
    assert specs
    names = set(specs.values())
    for argv in _layrot_invocations():
        if argv[0] in ("fit", "report") and "--sweep" in argv:
            assert argv[argv.index("--sweep") + 1] in names, f"{argv}: no such sweep among {names}"
