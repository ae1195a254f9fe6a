"""Checks the deployment files in deploy/ beyond their schemas (kubernetes-validate checks those):
that they wire up what docs/operations.md promises, and that every MOETUNE_* setting they name is one
a moetune binary reads (a typo there is silently ignored at runtime). Prints one line per problem and
exits 1 if there are any."""

import glob
import os
import re
import sys
import tomllib

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
problems = []


def known_settings():
    """MOETUNE_<KEY> and MOETUNE_<SECTION>__<KEY> for every key of the defaults files."""
    names = {"MOETUNE_LOG_FORMAT"}  # read by the logging setup of every binary
    for path in ["api/config.default.toml", "scheduler/config.default.toml", "gpu-runner/config.default.toml"]:
        with open(os.path.join(ROOT, path), "rb") as f:
            config = tomllib.load(f)
        for key, value in config.items():
            if isinstance(value, dict):
                names.update(f"MOETUNE_{key}__{sub}".upper() for sub in value)
                if not value:  # an open map such as [labels]
                    names.add(f"MOETUNE_{key}__*".upper())
            else:
                names.add(f"MOETUNE_{key}".upper())
    return names


def check_setting_names(files, known):
    for path in files:
        text = open(path).read()
        for name in sorted(set(re.findall(r"MOETUNE_[A-Z0-9_]+", text))):
            open_map = re.sub(r"__.*", "__*", name)
            if name not in known and open_map not in known and not name.startswith(("MOETUNE_S3_KEY_ID", "MOETUNE_S3_SECRET")):
                problems.append(f"{os.path.relpath(path, ROOT)}: {name} is not a setting any moetune binary reads")


def containers(doc):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def check_kubernetes():
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml"))):
        docs += [d for d in yaml.safe_load_all(open(path)) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for kind, name in [("Deployment", "moetune-api"), ("Deployment", "moetune-scheduler"), ("StatefulSet", "runner-cuda"), ("StatefulSet", "runner-cpu"),
                       ("ConfigMap", "moetune-config"), ("Secret", "moetune-secrets"), ("Service", "moetune-api"), ("Ingress", "moetune-api")]:
        if (kind, name) not in by_name:
            problems.append(f"deploy/k8s: no {kind} {name}")
    for (kind, name), doc in by_name.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        for container in containers(doc):
            if "livenessProbe" not in container:
                problems.append(f"deploy/k8s: {kind} {name} container {container['name']} has no liveness probe")
    api = containers(by_name.get(("Deployment", "moetune-api"), {}))
    for container in api:
        paths = (container.get("livenessProbe", {}).get("httpGet", {}).get("path"), container.get("readinessProbe", {}).get("httpGet", {}).get("path"))
        if paths != ("/healthz", "/readyz"):
            problems.append(f"deploy/k8s: the api probes {paths}, not /healthz and /readyz")
    for container in containers(by_name.get(("StatefulSet", "runner-cuda"), {})):
        resources = container.get("resources", {})
        if resources.get("limits", {}).get("nvidia.com/gpu") != "1":
            problems.append("deploy/k8s: the CUDA runner does not request nvidia.com/gpu")
    ingress = by_name.get(("Ingress", "moetune-api"), {})
    routed = [p["path"] for rule in ingress.get("spec", {}).get("rules", []) for p in rule["http"]["paths"]]
    if "/metrics" in routed or "/" in routed:
        problems.append(f"deploy/k8s: the ingress exposes more than the public API: {routed}")


def check_compose():
    compose = yaml.safe_load(open(os.path.join(ROOT, "deploy/docker-compose.yml")))
    services = compose["services"]
    for name in ["api", "scheduler", "runner-cpu", "runner-cuda", "postgres", "redis", "seaweedfs"]:
        if name not in services:
            problems.append(f"deploy/docker-compose.yml: no service {name}")
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            if dependency not in services:
                problems.append(f"deploy/docker-compose.yml: {name} depends on unknown service {dependency}")
        build = service.get("build")
        if build:
            dockerfile = os.path.join(ROOT, "deploy", build["context"], build["dockerfile"])
            targets = re.findall(r"^FROM .* AS (\S+)", open(dockerfile).read(), re.M)
            if build.get("target") not in targets:
                problems.append(f"deploy/docker-compose.yml: {name} builds target {build.get('target')} that {build['dockerfile']} lacks")
    devices = services.get("runner-cuda", {}).get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if not any("gpu" in d.get("capabilities", []) for d in devices):
        problems.append("deploy/docker-compose.yml: runner-cuda reserves no GPU")


known = known_settings()
check_setting_names(
    glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml")) + [os.path.join(ROOT, "deploy/docker-compose.yml")] + glob.glob(os.path.join(ROOT, "deploy/systemd/*")),
    known,
)
check_kubernetes()
check_compose()
for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
