#!/usr/bin/env python3
"""Offline checks of the deployment files (run by scripts/validate-deploy.sh, which installs the
tools): Kubernetes manifests rendered per overlay and validated against the Kubernetes JSON
schemas (kubernetes-validate) and the vendored prometheus-operator CRD schemas; the compose file
against the vendored compose-spec schema; the Dockerfile with hadolint; alert rules, their unit
tests and prometheus.yml with promtool; every PromQL expression of the alerts and the Grafana
dashboard parsed, and every metric and label it names checked against what the code exports; the
environment of every ruizhu container loaded by `ruizhu check-config`; and the operational
policies (non-root, read-only root, probes, drain time, migrations only from the Job, …).

    validate_deploy.py [--write-prometheusrule]
Environment: RUIZHU_BIN (the ruizhu binary), PROMTOOL, HADOLINT, KUBECTL (optional; `none` uses
only the built-in renderer).
"""

import base64
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = ["staging", "production"]
K8S_VERSION = "1.30.0"  # oldest Kubernetes the manifests must work on
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}

passed = 0
failures = []


def check(name, ok, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failures.append(name)
        print(f"FAIL {name}" + (f"\n     {detail}" if detail else ""))


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def load_all(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


# ---------------------------------------------------------------------------------------------
# Kustomize. `kubectl kustomize` when the machine has it; otherwise this small renderer of the
# subset the overlays use (resources, namespace, labels, images, replicas, JSON 6902 patches).
# When both exist their outputs must agree, so the fallback stays honest.


def _pointer(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json_patch(doc, ops):
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(idx, op["value"])
            elif op["op"] == "replace":
                parent[idx] = op["value"]
            elif op["op"] == "remove":
                del parent[idx]
            else:
                raise ValueError(f"unsupported patch op {op['op']}")
        else:
            if op["op"] in ("add", "replace"):
                if op["op"] == "replace" and last not in parent:
                    raise KeyError(op["path"])
                parent[last] = op["value"]
            elif op["op"] == "remove":
                del parent[last]
            else:
                raise ValueError(f"unsupported patch op {op['op']}")


def _pod_specs(doc):
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield spec["template"]["spec"]
    elif doc["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif doc["kind"] == "Pod":
        yield spec


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def mini_kustomize(directory):
    directory = Path(directory)
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
    unknown = set(k) - known
    if unknown:
        raise ValueError(f"{directory}: the fallback renderer does not know {sorted(unknown)}")
    docs = []
    for res in k.get("resources", []):
        path = directory / res
        docs.extend(mini_kustomize(path) if path.is_dir() else load_all(path))
    for patch in k.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load(patch["patch"])
        hits = [d for d in docs if d["kind"] == target.get("kind", d["kind"])
                and d["metadata"]["name"] == target.get("name", d["metadata"]["name"])]
        if not hits:
            raise ValueError(f"{directory}: patch target {target} matches nothing")
        for d in hits:
            _json_patch(d, ops)
    if "namespace" in k:
        for d in docs:
            if d["kind"] == "Namespace":
                d["metadata"]["name"] = k["namespace"]
            elif d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for d in docs:
            for spec in _pod_specs(d):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    name = re.split(r"[:@]", c["image"], maxsplit=1)[0]
                    if name == img["name"]:
                        c["image"] = f"{img.get('newName', name)}:{img['newTag']}"
    for rep in k.get("replicas", []):
        for d in docs:
            if d["metadata"]["name"] == rep["name"] and "replicas" in d.get("spec", {}):
                d["spec"]["replicas"] = rep["count"]
    for lab in k.get("labels", []):
        if lab.get("includeSelectors") or lab.get("includeTemplates"):
            raise ValueError("the fallback renderer only adds labels to metadata")
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    return docs


def _key(d):
    return (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])


def render(overlay):
    directory = K8S / "overlays" / overlay
    mine = sorted(mini_kustomize(directory), key=_key)
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl and kubectl != "none":
        out = run([kubectl, "kustomize", str(directory)])
        if out.returncode == 0:
            theirs = sorted([d for d in yaml.safe_load_all(out.stdout) if d], key=_key)
            same = json.dumps(theirs, sort_keys=True) == json.dumps(mine, sort_keys=True)
            diff = ""
            if not same:
                for a, b in zip(theirs, mine):
                    if a != b:
                        diff = f"kubectl: {json.dumps(a, sort_keys=True)[:600]}\nmine:    {json.dumps(b, sort_keys=True)[:600]}"
                        break
            check(f"k8s/{overlay}: kubectl kustomize and the fallback renderer agree", same, diff)
            return theirs, "kubectl kustomize"
        check(f"k8s/{overlay}: kubectl kustomize renders", False, out.stderr[-800:])
    return mine, "fallback renderer (no kubectl on this machine)"


# ---------------------------------------------------------------------------------------------
# Metrics the code exports: every `metrics::counter!/gauge!/histogram!("ruizhu_…", "label" => …)`.

MACRO = re.compile(r'metrics::(counter|gauge|histogram)!\(\s*"(ruizhu_[a-z0-9_]+)"(.*?)\)\s*\.', re.S)
LABEL = re.compile(r'"([a-z_]+)"\s*=>')


def exported_metrics():
    found = {}
    for base in ("src", "resolvers/src", "domain/src"):
        for path in (ROOT / base).rglob("*.rs"):
            for kind, name, rest in MACRO.findall(path.read_text()):
                entry = found.setdefault(name, {"kind": kind, "labels": set()})
                entry["labels"].update(LABEL.findall(rest))
    return found


SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}


def series_of(name, exported):
    """The exported metric and the extra labels a series name implies, or None."""
    if name in exported:
        return exported[name], set()
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in exported and exported[base]["kind"] == "histogram":
            return exported[base], extra
    return None


def walk_promql(node, selectors, groupings):
    import promql_parser as pp

    if isinstance(node, pp.VectorSelector):
        selectors.append(node)
    elif isinstance(node, pp.MatrixSelector):
        selectors.append(node.vector_selector)
    elif isinstance(node, pp.AggregateExpr):
        if node.modifier is not None:
            groupings.append((node, list(node.modifier.labels)))
        walk_promql(node.expr, selectors, groupings)
        if node.param is not None:
            walk_promql(node.param, selectors, groupings)
    elif isinstance(node, pp.BinaryExpr):
        walk_promql(node.lhs, selectors, groupings)
        walk_promql(node.rhs, selectors, groupings)
    elif isinstance(node, pp.Call):
        for a in node.args:
            walk_promql(a, selectors, groupings)
    elif isinstance(node, (pp.ParenExpr, pp.UnaryExpr)):
        walk_promql(node.expr, selectors, groupings)
    elif isinstance(node, pp.SubqueryExpr):
        walk_promql(node.expr, selectors, groupings)


def check_promql(where, expr, exported):
    """Parses `expr` and checks that every metric and label matcher it uses exists."""
    import promql_parser as pp

    try:
        ast = pp.parse(expr)
    except Exception as e:  # noqa: BLE001 - the parser raises plain errors
        return [f"{where}: does not parse: {e}"]
    selectors, groupings = [], []
    walk_promql(ast, selectors, groupings)
    problems = []
    used = set()
    for sel in selectors:
        name = sel.name
        if name == "up" or name is None:
            continue
        hit = series_of(name, exported)
        if hit is None:
            problems.append(f"{where}: metric {name} is not exported by the code")
            continue
        metric, extra = hit
        allowed = metric["labels"] | extra | SCRAPE_LABELS
        used |= allowed
        for m in sel.matchers.matchers:
            if m.name != "__name__" and m.name not in allowed:
                problems.append(f"{where}: {name} has no label {m.name!r} (it has {sorted(metric['labels'] | extra)})")
    for _node, labels in groupings:
        for label in labels:
            if used and label not in used:
                problems.append(f"{where}: grouping by {label!r}, which none of its metrics has")
    return problems


# ---------------------------------------------------------------------------------------------


def prometheusrule_from_alerts():
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ruizhu", "labels": {"app.kubernetes.io/component": "monitoring"}},
        "spec": {"groups": alerts["groups"]},
    }


def write_prometheusrule():
    header = (
        "# GENERATED from deploy/prometheus/alerts.yml by `scripts/validate_deploy.py\n"
        "# --write-prometheusrule`; edit alerts.yml, then regenerate (CI fails when they differ).\n"
    )
    body = yaml.safe_dump(prometheusrule_from_alerts(), sort_keys=False, allow_unicode=True, width=100)
    (K8S / "base/prometheusrule.yaml").write_text(header + body)


def secret_values():
    """Valid stand-ins for every key of the Secret template (the template's own values are
    refused by the application on purpose)."""
    b64_32 = lambda: base64.b64encode(secrets.token_bytes(32)).decode()  # noqa: E731
    values = {}
    for doc in load_all(K8S / "base/secret.example.yaml"):
        if doc["metadata"]["name"] != "ruizhu-secrets":
            continue
        for key in doc["stringData"]:
            if key.startswith("RUIZHU_CRYPTO__"):
                values[key] = b64_32()
            elif key == "RUIZHU_WECHATPAY__APIV3_KEY":
                values[key] = secrets.token_hex(16)
            elif key == "RUIZHU_DATABASE__URL":
                values[key] = "mysql://ruizhu:stand-in@ruizhu-mysql:3306/ruizhu"
            elif key == "RUIZHU_REDIS__URL":
                values[key] = "redis://:stand-in@ruizhu-redis:6379"
            else:
                values[key] = secrets.token_urlsafe(48)
    return values


def check_config(label, env, ruizhu):
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_BACKTRACE": "0"}
    clean.update({k: str(v) for k, v in env.items()})
    out = run([ruizhu, "check-config"], env=clean, cwd=tempfile.gettempdir())
    check(f"{label}: `ruizhu check-config` accepts its environment", out.returncode == 0,
          (out.stderr or out.stdout).strip()[-600:])
    return out.stdout


def k8s_checks(overlay, docs, ruizhu):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    name = f"k8s/{overlay}"
    need = {"Namespace", "ConfigMap", "Deployment", "Job", "Service", "Ingress",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule",
            "ServiceAccount"}
    check(f"{name}: has {', '.join(sorted(need))}", need <= set(by_kind), f"missing {sorted(need - set(by_kind))}")
    check(f"{name}: no Secret is rendered (real secrets are created out of band)", "Secret" not in by_kind)
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in CLUSTER_SCOPED}
    check(f"{name}: one namespace for everything", len(namespaces) == 1 and None not in namespaces
          and namespaces == {by_kind["Namespace"][0]["metadata"]["name"]}, str(namespaces))

    config = {}
    for cm in by_kind.get("ConfigMap", []):
        config.update(cm.get("data", {}))
    grace_ms = int(config.get("RUIZHU_HTTP__SHUTDOWN_GRACE_MS", "10000"))
    check(f"{name}: pods never migrate (RUIZHU_DATABASE__AUTO_MIGRATE=false)",
          config.get("RUIZHU_DATABASE__AUTO_MIGRATE") == "false")
    check(f"{name}: behind the Ingress, the caller's address comes from X-Forwarded-For (one trusted hop)",
          config.get("RUIZHU_HTTP__TRUSTED_PROXY_HOPS") == "1")

    workloads = by_kind.get("Deployment", []) + by_kind.get("Job", [])
    for w in workloads:
        wn = f"{name} {w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        check(f"{wn}: no Service links (they would add unknown RUIZHU_* keys)", pod.get("enableServiceLinks") is False)
        check(f"{wn}: no service account token", pod.get("automountServiceAccountToken") is False)
        check(f"{wn}: runs as non-root with the RuntimeDefault seccomp profile",
              psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0
              and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            check(f"{wn}/{c['name']}: read-only root, no privilege escalation, capabilities ALL dropped",
                  sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("capabilities", {}).get("drop") == ["ALL"])
            res = c.get("resources", {})
            check(f"{wn}/{c['name']}: resource requests and a memory limit",
                  "cpu" in res.get("requests", {}) and "memory" in res.get("requests", {})
                  and "memory" in res.get("limits", {}))
            tag = c["image"].rsplit(":", 1)[-1] if ":" in c["image"].rsplit("/", 1)[-1] else ""
            if overlay == "production":
                check(f"{wn}/{c['name']}: production pins an image tag (not latest)", tag not in ("", "latest"), c["image"])
            args = c.get("args", [])
            migrates = "migrate" in args
            check(f"{wn}/{c['name']}: only the migration Job runs `migrate`", migrates == (w["kind"] == "Job"), str(args))
            env = dict(config)
            env.update(secret_values())
            env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
            refs = [r.get("configMapRef", r.get("secretRef", {})).get("name") for r in c.get("envFrom", [])]
            check(f"{wn}/{c['name']}: environment from ruizhu-config and ruizhu-secrets", refs == ["ruizhu-config", "ruizhu-secrets"], str(refs))
            if ruizhu:
                summary = check_config(f"{wn}/{c['name']}", env, ruizhu)
                if w["kind"] == "Deployment" and summary:
                    s = json.loads(summary.split("configuration ok: ", 1)[1])
                    check(f"{wn}/{c['name']}: production mode with a merchant, Kafka and no development switches",
                          s["env"] == "production" and s["wechatpay_merchant"] and s["events"] == "kafka"
                          and not s["dev_login"] and not s["dev_payments"] and not s["demo_seed"], summary)
                    if "serve" in args:
                        check(f"{wn}: serve leaves the background work to the worker Deployment", s["workers_in_serve"] is False)

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    api = deployments.get("ruizhu-api")
    check(f"{name}: a serve Deployment ruizhu-api and a worker Deployment ruizhu-worker",
          api is not None and "ruizhu-worker" in deployments)
    if api:
        pod = api["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if overlay == "production":
            check(f"{name}: ruizhu-api runs 3 replicas", api["spec"]["replicas"] == 3)
        check(f"{name}: ruizhu-api has startup, liveness (/healthz) and readiness (/readyz) probes",
              c.get("startupProbe") and c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
              and c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep_s = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        check(f"{name}: ruizhu-api terminationGracePeriodSeconds ({tgps}s) > preStop sleep ({sleep_s}s) + drain ({grace_ms / 1000:g}s)",
              sleep_s > 0 and tgps * 1000 > sleep_s * 1000 + grace_ms)
        check(f"{name}: ruizhu-api rolls without losing capacity (maxUnavailable 0)",
              api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0)
    hpa = by_kind.get("HorizontalPodAutoscaler", [{}])[0]
    check(f"{name}: the HPA scales ruizhu-api", hpa.get("spec", {}).get("scaleTargetRef", {}).get("name") == "ruizhu-api")
    ingresses = by_kind.get("Ingress", [])
    paths = {p["path"]: ing for ing in ingresses for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    check(f"{name}: every Ingress has TLS", ingresses and all(i["spec"].get("tls") for i in ingresses))
    ws = paths.get("/graphql/ws")
    check(f"{name}: /graphql/ws is routed with long proxy timeouts for WebSockets",
          ws is not None and int(ws["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) >= 300)
    check(f"{name}: /metrics, /healthz and /readyz are not exposed by the Ingress",
          not any(p.startswith(("/metrics", "/healthz", "/readyz")) or p == "/" for p in paths), str(sorted(paths)))
    pr = by_kind.get("PrometheusRule", [{}])[0]
    check(f"{name}: the PrometheusRule carries exactly deploy/prometheus/alerts.yml",
          pr.get("spec") == prometheusrule_from_alerts()["spec"],
          "run scripts/validate_deploy.py --write-prometheusrule")


def schema_validate(overlay, docs, tmp):
    core, crds = [], {}
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        if key in CRD_SCHEMAS:
            crds.setdefault(key, []).append(d)
        else:
            core.append(d)
    core_file = tmp / f"{overlay}-core.yaml"
    core_file.write_text(yaml.safe_dump_all(core, sort_keys=False))
    out = run(["kubernetes-validate", "--strict", "-k", K8S_VERSION, "--no-warn", str(core_file)])
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    bad = [line for line in lines if not line.startswith("INFO")]
    check(f"k8s/{overlay}: {len(core)} Kubernetes objects valid against the Kubernetes {K8S_VERSION} schemas (strict)",
          out.returncode == 0 and not bad and len(core) > 0, (out.stdout + out.stderr)[-1500:])
    for (api_version, kind), objs in crds.items():
        schema = ROOT / "deploy/schemas" / CRD_SCHEMAS[(api_version, kind)]
        for i, obj in enumerate(objs):
            f = tmp / f"{overlay}-{kind}-{i}.json"
            f.write_text(json.dumps(obj))
            res = run(["check-jsonschema", "--schemafile", str(schema), str(f)])
            check(f"k8s/{overlay}: {kind}/{obj['metadata']['name']} valid against the prometheus-operator CRD schema",
                  res.returncode == 0, (res.stdout + res.stderr)[-800:])


def compose_checks(ruizhu, tmp):
    path = ROOT / "docker-compose.yml"
    res = run(["check-jsonschema", "--schemafile", str(ROOT / "deploy/schemas/compose-spec.json"), str(path)])
    check("docker-compose.yml: valid against the compose-spec schema", res.returncode == 0, (res.stdout + res.stderr)[-800:])
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    need = {"mysql", "redis", "kafka", "migrate", "serve", "worker", "prometheus", "grafana"}
    check("docker-compose.yml: MySQL, Redis, Kafka, migrate, serve, worker, Prometheus and Grafana",
          need <= set(services), f"missing {sorted(need - set(services))}")
    check("docker-compose.yml: MySQL 8, Redis 7, apache/kafka",
          services["mysql"]["image"].startswith("mysql:8") and services["redis"]["image"].startswith("redis:7")
          and services["kafka"]["image"].startswith("apache/kafka:"))
    for svc in ("mysql", "redis", "kafka", "serve", "worker"):
        check(f"docker-compose.yml: {svc} has a health check", "test" in services[svc].get("healthcheck", {}))
    for svc in ("serve", "worker"):
        deps = services[svc].get("depends_on", {})
        check(f"docker-compose.yml: {svc} starts after migrate finished and Redis and Kafka are healthy",
              deps.get("migrate", {}).get("condition") == "service_completed_successfully"
              and deps.get("redis", {}).get("condition") == "service_healthy"
              and deps.get("kafka", {}).get("condition") == "service_healthy", str(deps))
    check("docker-compose.yml: migrate waits for a healthy MySQL",
          services["migrate"]["depends_on"]["mysql"]["condition"] == "service_healthy")
    volumes = set(compose.get("volumes", {}))
    for svc, target in (("mysql", "/var/lib/mysql"), ("redis", "/data"), ("kafka", "/var/lib/kafka/data")):
        mounts = [v.split(":") for v in services[svc].get("volumes", [])]
        check(f"docker-compose.yml: {svc} keeps its data in a named volume",
              any(m[0] in volumes and m[1] == target for m in mounts))
    check("docker-compose.yml: the app is published on port 8080", "8080:8080" in services["serve"].get("ports", []))
    for rel in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml", "deploy/grafana/provisioning",
                "deploy/grafana/dashboards"):
        mounted = any(v.startswith(f"./{rel}:") for s in services.values() for v in s.get("volumes", []))
        check(f"docker-compose.yml: mounts {rel}", mounted and (ROOT / rel).exists())
    for svc in ("migrate", "serve", "worker", "ops-account"):
        # the whole environment: any RUIZHU_ variable, even one meant for something else
        # (a password variable, say), is read as configuration and must be a known key
        env = services[svc]["environment"]
        if ruizhu:
            summary = check_config(f"docker-compose.yml {svc}", env, ruizhu)
            if svc == "serve" and summary:
                s = json.loads(summary.split("configuration ok: ", 1)[1])
                check("docker-compose.yml serve: Kafka events, no in-process workers, no auto-migration",
                      s["events"] == "kafka" and not s["workers_in_serve"] and not s["auto_migrate"], summary)


def dockerfile_checks():
    hadolint = os.environ.get("HADOLINT", "hadolint")
    res = run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")])
    check("Dockerfile: hadolint finds nothing", res.returncode == 0, (res.stdout + res.stderr)[-800:])
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    final = text[text.lower().rfind("\nfrom "):]
    check("Dockerfile: multi-stage with a cargo-chef dependency layer", len(stages) >= 3 and "cargo chef cook" in text)
    check("Dockerfile: the runtime stage is Debian slim with only the binary copied in",
          stages[-1][0].startswith("debian:") and "slim" in stages[-1][0]
          and re.findall(r"^COPY", final, re.M) == ["COPY"] and "cargo" not in final.replace("# ", ""))
    check("Dockerfile: runs as a non-root user", re.search(r"^USER\s+(?!root|0\b)\S+", final, re.M) is not None)
    check("Dockerfile: has a HEALTHCHECK", "HEALTHCHECK" in final)
    ignore = (ROOT / ".dockerignore").read_text().split()
    check(".dockerignore: keeps target/, .git and key files out of the build context",
          {"**/target", ".git", "**/*.pem"} <= set(ignore))


def prometheus_checks(exported, tmp):
    promtool = os.environ.get("PROMTOOL", "promtool")
    d = ROOT / "deploy/prometheus"
    res = run([promtool, "check", "rules", str(d / "alerts.yml")])
    n = re.search(r"SUCCESS: (\d+) rules found", res.stdout)
    check(f"alerts.yml: promtool check rules ({n.group(1) if n else '?'} rules)", res.returncode == 0, res.stdout + res.stderr)
    res = run([promtool, "test", "rules", str(d / "tests.yml")], cwd=d)
    check("alerts.yml: promtool unit tests (tests.yml)", res.returncode == 0, (res.stdout + res.stderr)[-1500:])
    cfg = tmp / "prometheus.yml"
    shutil.copy(d / "alerts.yml", tmp / "alerts.yml")
    cfg.write_text((d / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml"))
    res = run([promtool, "check", "config", str(cfg)])
    check("prometheus.yml: promtool check config", res.returncode == 0, res.stdout + res.stderr)

    alerts = yaml.safe_load((d / "alerts.yml").read_text())
    problems = []
    count = 0
    required = {"RuizhuHighErrorRate", "RuizhuHighLatencyP99", "RuizhuOutboxStalled",
                "RuizhuPaymentNotificationFailures", "RuizhuRedisDown", "RuizhuKafkaDown"}
    names = set()
    for group in alerts["groups"]:
        for rule in group["rules"]:
            count += 1
            names.add(rule["alert"])
            problems += check_promql(f"alert {rule['alert']}", rule["expr"], exported)
            if not rule.get("annotations", {}).get("runbook", "").startswith("docs/operations.md#"):
                problems.append(f"alert {rule['alert']}: no runbook link")
    check(f"alerts.yml: error rate, p99, outbox age, payment notification failures, Redis down, Kafka down",
          required <= names, f"missing {sorted(required - names)}")
    check(f"alerts.yml: {count} expressions parse and use only exported metrics and labels; each links a runbook",
          not problems, "\n     ".join(problems))
    docs = ROOT / "docs/operations.md"
    headings = re.findall(r"^#+ (.+)$", docs.read_text(), re.M) if docs.exists() else []
    slugs = {re.sub(r"[^a-z0-9 _-]", "", h.lower()).strip().replace(" ", "-") for h in headings}
    runbooks = {r["annotations"]["runbook"].split("#", 1)[1] for g in alerts["groups"] for r in g["rules"]}
    check("alerts.yml: every runbook link has its heading in docs/operations.md", runbooks <= slugs,
          f"missing headings for {sorted(runbooks - slugs)}")


def dashboard_checks(exported):
    path = ROOT / "deploy/grafana/dashboards/ruizhu.json"
    dash = json.loads(path.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    check("grafana dashboard: unique panel ids, a uid, a Prometheus datasource variable",
          len(ids) == len(set(ids)) and dash.get("uid")
          and any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"]))
    problems = []
    exprs = 0
    for p in panels:
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p['title']}: not on the datasource variable")
        for t in p.get("targets", []):
            exprs += 1
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
            problems += check_promql(f"panel {p['title']!r}", expr, exported)
    check(f"grafana dashboard: {len(panels)} panels, {exprs} expressions parse and use only exported metrics and labels",
          not problems and exprs > 0, "\n     ".join(problems))
    text = json.dumps(dash)
    wanted = {
        "traffic per operation": "ruizhu_graphql_operations_total",
        "latency": "ruizhu_graphql_operation_duration_seconds_bucket",
        "error codes": "ruizhu_graphql_errors_total",
        "DB pool": "ruizhu_db_pool_connections",
        "cache": "ruizhu_cache_requests_total",
        "outbox backlog": "ruizhu_outbox_backlog",
        "consumer lag": "ruizhu_event_consumer_delay_seconds_bucket",
        "orders": "ruizhu_orders_placed_total",
        "payments": "ruizhu_payments_recorded_total",
        "WebSocket connections": "ruizhu_websocket_connections",
    }
    missing = [k for k, m in wanted.items() if m not in text]
    check("grafana dashboard: traffic, latency, error codes, DB pool, cache, outbox, consumer lag, orders, payments, WebSockets",
          not missing, f"missing {missing}")


def main():
    if "--write-prometheusrule" in sys.argv:
        write_prometheusrule()
        print("wrote k8s/base/prometheusrule.yaml")
        return 0
    ruizhu = os.environ.get("RUIZHU_BIN")
    exported = exported_metrics()
    check(f"code exports {len(exported)} ruizhu_* metrics (read from the source)", len(exported) > 20)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        dockerfile_checks()
        compose_checks(ruizhu, tmp)
        for overlay in OVERLAYS:
            docs, how = render(overlay)
            print(f"     k8s/{overlay}: {len(docs)} objects ({how})")
            schema_validate(overlay, docs, tmp)
            k8s_checks(overlay, docs, ruizhu)
        res = run(["kubernetes-validate", "--strict", "-k", K8S_VERSION, "--no-warn", str(K8S / "base/secret.example.yaml")])
        check("k8s/base/secret.example.yaml: valid Secrets", res.returncode == 0, res.stdout + res.stderr)
        prometheus_checks(exported, tmp)
        dashboard_checks(exported)
    print(f"validate-deploy: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
