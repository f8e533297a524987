"""Checks of the deploy files that need no container engine (tests/deploy-checks.sh runs it).

- the Kubernetes manifests validate against the Kubernetes JSON schemas (kubernetes-validate,
  strict: unknown fields are errors), and kustomization.yaml lists every manifest;
- deploy/compose.yaml validates against the Compose Specification's schema;
- every container of the manifests and every iib service of the compose file gets settings
  `iib config` accepts, each of them one iib knows (so a misspelt name fails), and the
  secret templates' placeholders stop iib from starting;
- commands, ports, probe paths, volumes and grace periods: each command is one `iib` has,
  probes name ports the container declares and those are the ports iib listens on, paths iib
  writes are on writable volumes under a read-only root, grace periods are longer than the
  drain; and each workload's container runs for real (the migration Job, then api, workers
  and relay at once on PostgreSQL, or SQLite without TEST_POSTGRES_URL) until every probe
  answers 200, then stops on SIGTERM within its grace period.

Environment: IIB_BIN (the binary), ROOT (the runtime root deploy/containerfile-steps.sh
made), VENV_BIN (kubernetes-validate and check-jsonschema), TEST_POSTGRES_URL (optional).
"""

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
IIB = os.environ["IIB_BIN"]
ROOT = Path(os.environ["ROOT"])
VENV_BIN = Path(os.environ["VENV_BIN"])
# Kubernetes versions validated against: the oldest still commonly run, and the newest.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# What the image's USER is (deploy/Containerfile) and where its HEALTHCHECK lives.
IMAGE_UID = 10001
PLACEHOLDER = "CHANGE-ME"

passed = 0


def ok(message):
    global passed
    passed += 1
    print(f"ok: {message}")


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def drain_seconds():
    """The longest a process takes to stop after SIGTERM, from the source: the API's graceful
    shutdown and the workers' wait for running requests to be handed back."""
    main = (REPO / "src/main.rs").read_text()
    workers = (REPO / "src/workers/mod.rs").read_text()
    api = re.search(r"graceful_shutdown\(Some\(Duration::from_secs\((\d+)\)\)\)", main)
    handback = re.search(r"hand back their claims[^\n]*\n[^\n]*from_secs\((\d+)\)", workers)
    expect(api and handback, "cannot find the drain times in src/main.rs (graceful_shutdown) and "
           "src/workers/mod.rs (hand back): update tests/deploy_checks.py")
    return max(int(api.group(1)), int(handback.group(1)))


def load_manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    expect(listed == present, f"kustomization.yaml lists {sorted(listed)}, the directory has {sorted(present)}")
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                docs.append((name, doc))
    ok(f"kustomization.yaml lists all {len(listed)} manifests ({len(docs)} objects)")
    return docs


def validate_kubernetes():
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    for version in KUBERNETES_VERSIONS:
        run = subprocess.run([VENV_BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, *files],
                             capture_output=True, text=True)
        expect(run.returncode == 0, f"Kubernetes {version} schemas:\n{run.stdout}{run.stderr}")
        ok(f"manifests validate against the Kubernetes {version} schemas (strict)")


def validate_compose():
    run = subprocess.run([VENV_BIN / "check-jsonschema", "--schemafile", DEPLOY / "schema/compose-spec.json",
                          DEPLOY / "compose.yaml"], capture_output=True, text=True)
    expect(run.returncode == 0, f"compose.yaml against the Compose schema:\n{run.stdout}{run.stderr}")
    ok("compose.yaml validates against the Compose Specification schema")


def iib(args, env, timeout=30):
    base = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run([IIB, *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout)


def commands_exist(commands):
    for command in sorted(commands):
        run = iib([command, "--help"], {})
        expect(run.returncode == 0, f"`iib {command}` is not a command iib has: {run.stderr}")
    ok(f"every command the deploy files run is one iib has: {', '.join(sorted(commands))}")


def known_settings(name, env):
    """`iib config` accepts the settings and knows every name (none is ignored)."""
    run = iib(["config", "--output", "json"], env)
    expect(run.returncode == 0, f"{name}: iib config refuses its settings: {run.stderr.strip()}")
    shown = json.loads(run.stdout)
    for key in env:
        if key.startswith("AWS_"):
            continue
        expect(key in shown, f"{name}: {key} is not a setting iib knows")
        expect(shown[key]["source"] == "environment", f"{name}: {key} is not read from the environment")
    return shown


# --- Kubernetes -------------------------------------------------------------------------

def by_kind(docs, kind):
    return {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == kind}


def secret_data(secret):
    data = dict(secret.get("stringData") or {})
    for key, value in (secret.get("data") or {}).items():
        data[key] = base64.b64decode(value).decode()
    return data


def container_env(name, container, config_maps, secrets_):
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]
            found = config_maps.get(ref["name"])
            values = found["data"] if found else None
        else:
            ref = source["secretRef"]
            found = secrets_.get(ref["name"])
            values = secret_data(found) if found else None
        if values is None:
            expect(ref.get("optional"), f"{name}: envFrom {ref['name']} is in no manifest and not optional")
            continue
        env.update(values)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            fail(f"{name}: env {item['name']}: only plain values are checked; extend tests/deploy_checks.py")
    return env


def workloads(docs):
    for _, doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield f"{doc['kind']} {doc['metadata']['name']}", doc, pod, container


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def under(path, mounts):
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def check_kubernetes_static(docs, drain):
    config_maps = by_kind(docs, "ConfigMap")
    secrets_ = by_kind(docs, "Secret")
    commands = set()
    envs = {}
    for name, doc, pod, container in workloads(docs):
        command = container["args"][0]
        commands.add(command)
        env = container_env(name, container, config_maps, secrets_)
        envs[name] = env
        # Non-root, as the image's user; read-only root with writable volumes where iib writes.
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        expect(security.get("runAsNonRoot") is True, f"{name}: runAsNonRoot is not set")
        expect(security.get("runAsUser") == IMAGE_UID, f"{name}: runAsUser is not the image's uid {IMAGE_UID}")
        expect(security.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation is not false")
        expect(security.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities are not all dropped")
        expect(security.get("readOnlyRootFilesystem") is True, f"{name}: the root file system is writable")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        writable = []
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            expect(volume is not None, f"{name}: volumeMount {mount['name']} has no volume")
            if "emptyDir" in volume and not mount.get("readOnly"):
                writable.append(mount["mountPath"])
            if "secret" in volume:
                secret = secrets_.get(volume["secret"]["secretName"])
                expect(secret is not None, f"{name}: volume {mount['name']} names a secret in no manifest")
                for item in volume["secret"].get("items", []):
                    expect(item["key"] in secret_data(secret), f"{name}: secret item {item['key']} is missing")
        written = ["/tmp"]
        if command in ("serve", "api", "worker"):
            written += [env[k] for k in ("IIB_DATA_DIR", "IIB_REQUEST_LOGS_DIR", "IIB_REQUEST_RELATED_BUNDLES_DIR",
                                          "IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR") if env.get(k)]
        for path in written:
            expect(under(path, writable), f"{name}: iib writes {path}, which is on no writable volume")
        if command in ("serve", "worker"):
            docker_config = env.get("IIB_DOCKER_CONFIG_TEMPLATE")
            expect(docker_config, f"{name}: IIB_DOCKER_CONFIG_TEMPLATE is not set")
            mounted = [
                f"{m['mountPath'].rstrip('/')}/{item['path']}"
                for m in container.get("volumeMounts", [])
                if "secret" in volumes[m["name"]]
                for item in volumes[m["name"]]["secret"].get("items", [])
            ]
            expect(docker_config in mounted, f"{name}: IIB_DOCKER_CONFIG_TEMPLATE {docker_config} is no mounted secret item")
        # Probes: on ports the container declares, which are the ports iib listens on.
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        listens = env.get("IIB_LISTEN_ADDR") if command in ("serve", "api") else env.get("IIB_METRICS_ADDR")
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if doc["kind"] == "Job":
                continue
            expect(probe, f"{name}: no {kind}")
            port = probe["httpGet"]["port"]
            port = ports.get(port) if isinstance(port, str) else port
            expect(port is not None, f"{name}: {kind} names a port the container does not declare")
            expect(listens and port == port_of(listens), f"{name}: {kind} is on port {port}, iib listens on {listens}")
        if doc["kind"] == "Deployment":
            grace = pod.get("terminationGracePeriodSeconds", 30)
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
            expect(grace > drain + sleep, f"{name}: terminationGracePeriodSeconds {grace} is not longer than "
                   f"the drain ({drain} s) plus preStop ({sleep} s)")
    ok(f"workloads run as uid {IMAGE_UID} on a read-only root, with writable volumes where iib writes")
    ok(f"probes are on the ports iib listens on; grace periods exceed the {drain} s drain")
    # Services and disruption budgets select pods that exist, on ports they declare.
    templates = [doc["spec"]["template"] for _, doc in docs if doc["kind"] == "Deployment"]
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in by_kind(docs, kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            chosen = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
            expect(chosen, f"{kind} {name} selects no pods")
            if kind == "Service":
                for port in doc["spec"]["ports"]:
                    for template in chosen:
                        names = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
                        expect(port["targetPort"] in names, f"Service {name}: targetPort {port['targetPort']} is not declared")
    ok("Services and PodDisruptionBudgets select existing pods and ports")
    return commands, envs


def check_placeholders(envs):
    name, env = next(iter(envs.items()))
    with_placeholders = {k: v for k, v in env.items() if PLACEHOLDER in v}
    expect(with_placeholders, "the secret templates hold no CHANGE-ME placeholder")
    run = iib(["config"], env)
    expect(run.returncode != 0 and "IIB_SECRET_KEY" in run.stderr,
           f"iib does not refuse the secret template's IIB_SECRET_KEY placeholder: {run.stdout}{run.stderr}")
    ok("iib refuses the secret template's placeholder IIB_SECRET_KEY")


def filled(env, key):
    """The environment with the secret template filled in as an operator would."""
    env = dict(env)
    if PLACEHOLDER in env.get("IIB_SECRET_KEY", ""):
        env["IIB_SECRET_KEY"] = key
    return env


# --- running the workloads ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def database():
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        return f"sqlite://{tempfile.mkdtemp(prefix='iib-deploy-db.')}/iib.db", None
    name = f"iib_test_deploy_{os.getpid()}"
    subprocess.run(["psql", url, "-qc", f'CREATE DATABASE "{name}"'], check=True)
    return url.rsplit("/", 1)[0] + "/" + name, (url, name)


def run_workloads(docs, envs, key):
    """The Job, then every Deployment's container at once, each on free loopback ports, with
    the manifests' settings except where they point outside this machine."""
    work = Path(tempfile.mkdtemp(prefix="iib-deploy-run."))
    url, created = database()
    docker_config = work / "docker-config.json"
    docker_config.write_text(json.dumps({"auths": {"127.0.0.1:1": {"auth": base64.b64encode(b"u:t").decode()}}}))
    # The template's Docker config is JSON of the right shape.
    template = json.loads(secret_data(by_kind(docs, "Secret")["iib-registry-auth"])[".dockerconfigjson"])
    expect("auths" in template, "the registry secret template is no Docker config")

    def environment(name, env):
        env = filled(env, key)
        env["IIB_DATABASE_URL"] = url
        for setting in ("IIB_DATA_DIR", "IIB_REQUEST_LOGS_DIR", "IIB_REQUEST_RELATED_BUNDLES_DIR",
                        "IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR"):
            if env.get(setting):
                env[setting] = str(work / name.replace(" ", "-") / setting.lower())
        if env.get("IIB_DOCKER_CONFIG_TEMPLATE"):
            env["IIB_DOCKER_CONFIG_TEMPLATE"] = str(docker_config)
        if env.get("IIB_KAFKA_BROKERS"):
            env["IIB_KAFKA_BROKERS"] = f"127.0.0.1:{free_port()}"  # nothing listens: no traffic leaves
        env["IIB_REGISTRY"] = "127.0.0.1:1"
        return env

    processes = []
    try:
        for name, doc, pod, container in workloads(docs):
            if doc["kind"] != "Job":
                continue
            run = iib(container["args"], environment(name, envs[name]), timeout=120)
            expect(run.returncode == 0, f"{name}: {' '.join(container['args'])} failed: {run.stderr}")
            ok(f"{name}: `iib {' '.join(container['args'])}` applied the migrations ({run.stdout.strip()})")
        for name, doc, pod, container in workloads(docs):
            if doc["kind"] != "Deployment":
                continue
            env = environment(name, envs[name])
            ports = {}
            for setting in ("IIB_LISTEN_ADDR", "IIB_METRICS_ADDR"):
                if env.get(setting):
                    port = free_port()
                    ports[port_of(env[setting])] = port
                    env[setting] = f"127.0.0.1:{port}"
            log = open(work / f"{doc['metadata']['name']}.log", "w")
            process = subprocess.Popen([IIB, *container["args"]], env={"PATH": "/usr/bin:/bin", **env},
                                       stdout=log, stderr=subprocess.STDOUT)
            processes.append((name, doc, pod, container, process, ports, log))
        for name, doc, pod, container, process, ports, log in processes:
            declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container[kind]["httpGet"]
                port = ports[declared.get(probe["port"], probe["port"])]
                deadline = time.monotonic() + 30
                status = None
                while time.monotonic() < deadline and process.poll() is None:
                    status = get(port, probe["path"])
                    if status == 200:
                        break
                    time.sleep(0.2)
                expect(status == 200, f"{name}: {kind} GET {probe['path']} answered {status}; "
                       f"log: {(work / (doc['metadata']['name'] + '.log')).read_text()[-2000:]}")
            ok(f"{name}: `iib {' '.join(container['args'])}` answers 200 on its startup, liveness and readiness probes")
        for name, doc, pod, container, process, ports, log in processes:
            process.send_signal(signal.SIGTERM)
        for name, doc, pod, container, process, ports, log in processes:
            grace = pod.get("terminationGracePeriodSeconds", 30)
            started = time.monotonic()
            try:
                code = process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                fail(f"{name}: still running {grace} s after SIGTERM (terminationGracePeriodSeconds)")
            expect(code == 0, f"{name}: exited with {code} after SIGTERM")
            ok(f"{name}: stopped on SIGTERM in {time.monotonic() - started:.1f} s (grace {grace} s)")
    finally:
        for *_, process, _, log in processes:
            if process.poll() is None:
                process.kill()
            log.close()
        if created:
            admin, name = created
            subprocess.run(["psql", admin, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                           capture_output=True)


# --- compose -----------------------------------------------------------------------------

def interpolate(value):
    """Compose's ${VAR:-default} with the variable unset (as in a fresh shell)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def check_compose(drain, key):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = {n: s for n, s in compose["services"].items() if "iib" in s.get("image", "")}
    expect({"migrate", "api", "worker", "relay"} <= services.keys(), f"compose.yaml lacks iib services: {services.keys()}")
    for other in ("postgres", "registry", "kafka"):
        expect(other in compose["services"], f"compose.yaml has no {other}")
    commands = set()
    for name, service in services.items():
        command = service["command"][0]
        commands.add(command)
        env = {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}
        shown = known_settings(f"compose service {name}", filled(env, key))
        expect(service.get("read_only") is True, f"compose service {name}: the root file system is writable")
        tmpfs = [t.split(":", 1)[0] for t in service.get("tmpfs", [])]
        for path in ["/tmp", env.get("IIB_DATA_DIR", "/var/lib/iib"), env.get("IIB_REQUEST_LOGS_DIR")]:
            expect(not path or under(path, tmpfs), f"compose service {name}: iib writes {path}, which is on no tmpfs")
        grace = service.get("stop_grace_period", "10s")
        expect(int(grace.rstrip("s")) > drain, f"compose service {name}: stop_grace_period {grace} is not longer than {drain} s")
        if command == "api":
            published = [int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])]
            expect(port_of(env["IIB_LISTEN_ADDR"]) in published, f"compose service {name}: the API's port is not published")
        if command == "worker":
            expect(not shown["IIB_KAFKA_BROKERS"]["value"], "compose workers relay to Kafka; the relay service does")
        if command == "relay":
            expect(shown["IIB_KAFKA_BROKERS"]["value"], "compose relay has no IIB_KAFKA_BROKERS")
        test = service.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD"]:
            expect((ROOT / test[1].lstrip("/")).exists(), f"compose service {name}: {test[1]} is not in the image")
    ok(f"compose services {', '.join(sorted(services))}: settings iib knows, read-only root with tmpfs, "
       f"grace over the drain, healthchecks in the image")
    return commands


def main():
    drain = drain_seconds()
    docs = load_manifests()
    validate_kubernetes()
    validate_compose()
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    commands, envs = check_kubernetes_static(docs, drain)
    for name, env in envs.items():
        shown = known_settings(name, filled(env, key))
        if name.startswith("Deployment iib-worker"):
            expect(not shown["IIB_KAFKA_BROKERS"]["value"], f"{name} relays to Kafka; iib-relay does")
    ok(f"iib config accepts the settings of all {len(envs)} containers and knows every name")
    check_placeholders(envs)
    commands |= check_compose(drain, key)
    commands_exist(commands)
    run_workloads(docs, envs, key)
    print(f"deploy checks: all {passed} passed")


if __name__ == "__main__":
    main()
