//! The Kubernetes manifests in `deploy/`: every kustomization renders with
//! `kustomize build`; every rendered object of a built-in kind passes the
//! Kubernetes JSON schemas in strict mode (unknown fields are errors), using
//! the schemas that `kubernetes-validate` ships, so nothing is fetched; every
//! doltgate configuration in a rendered ConfigMap passes the built binary's
//! `check-config`, and its ports, drain timings and password variables agree
//! with the pod that mounts it; Services, Ingresses, the autoscaler and the
//! monitoring objects point at things that exist.
//!
//! Custom resources (Traefik's IngressRoute, the Prometheus Operator's
//! ServiceMonitor) have no schema in kubernetes-validate: they are checked
//! structurally here instead (apiVersion, kind, metadata.name, and
//! spec.routes[].services / spec.endpoints + spec.selector), and each must
//! refer to a Service and port that the same rendering defines.
//!
//! Tools come from `$KUSTOMIZE` and `$KUBERNETES_VALIDATE` (set by
//! `scripts/test`, which installs them pinned), else from PATH. A missing tool
//! fails the test: it is never skipped. YAML is turned into JSON by the Python
//! that runs kubernetes-validate (PyYAML is one of its dependencies).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use doltgate::config::{Config, NoPrimary};
use serde_json::Value;

/// Kubernetes versions the built-in objects are validated against: an older
/// one still in wide use, and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Where the image's ENTRYPOINT reads its configuration (see the Dockerfile).
const CONFIG_DIR: &str = "/etc/doltgate";
const CONFIG_KEY: &str = "doltgate.toml";

fn kustomize() -> PathBuf {
    crate::support::find_peer("KUSTOMIZE", "kustomize")
}

fn kubernetes_validate() -> PathBuf {
    crate::support::find_peer("KUBERNETES_VALIDATE", "kubernetes-validate")
}

/// A Python that has PyYAML: the one kubernetes-validate runs with (beside
/// it in its venv, or named by its `#!` line), else `python3`.
fn python() -> PathBuf {
    let script = kubernetes_validate();
    let sibling = script.with_file_name("python3");
    if sibling.is_file() {
        return sibling;
    }
    let text = std::fs::read(&script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let first = String::from_utf8_lossy(&text).lines().next().unwrap_or_default().to_owned();
    let interpreter = first.strip_prefix("#!").and_then(|line| line.split_whitespace().next()).map(PathBuf::from);
    match interpreter {
        Some(path) if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python")) => path,
        _ => PathBuf::from("python3"),
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document in `text`, as JSON values (empty documents dropped).
fn yaml_documents(text: &str) -> Vec<Value> {
    const SCRIPT: &str = "import sys, json, yaml\n\
        docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
        json.dump(docs, sys.stdout, default=str)\n";
    let python = python();
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_owned();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "YAML did not parse: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// Directories under `deploy/` holding a kustomization, sorted.
fn kustomization_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml") {
                found.push(dir.to_owned());
            }
        }
    }
    let mut found = Vec::new();
    walk(&deploy_dir(), &mut found);
    found.sort();
    found
}

fn kustomization(dir: &Path) -> Value {
    let path = ["kustomization.yaml", "kustomization.yml"].iter().map(|n| dir.join(n)).find(|p| p.is_file()).unwrap();
    let mut docs = yaml_documents(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(docs.len(), 1, "{}: expected one document", path.display());
    docs.remove(0)
}

fn is_component(kustomization: &Value) -> bool {
    kustomization["kind"] == "Component"
}

fn relative(dir: &Path) -> String {
    dir.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(dir).display().to_string()
}

struct Rendering {
    /// e.g. `deploy/ingress`
    name: String,
    objects: Vec<Value>,
}

/// `kustomize build` of every kustomization that is not a Component
/// (components render as part of the overlays that use them).
fn render_all() -> Vec<Rendering> {
    let kustomize = kustomize();
    let mut renderings = Vec::new();
    for dir in kustomization_dirs() {
        if is_component(&kustomization(&dir)) {
            continue;
        }
        let out = Command::new(&kustomize)
            .arg("build")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", kustomize.display()));
        assert!(
            out.status.success(),
            "kustomize build {} failed: {}",
            relative(&dir),
            String::from_utf8_lossy(&out.stderr)
        );
        let objects = yaml_documents(&String::from_utf8(out.stdout).unwrap());
        assert!(!objects.is_empty(), "kustomize build {} rendered nothing", relative(&dir));
        renderings.push(Rendering { name: relative(&dir), objects });
    }
    assert!(renderings.len() >= 4, "expected the ingress, sidecar, overlay and grafana kustomizations");
    renderings
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn label(object: &Value) -> String {
    format!("{}/{}", kind(object), name(object))
}

/// Built-in API groups: the core group (`v1`), groups without a dot
/// (`apps`, `policy`, `autoscaling`, ...) and `*.k8s.io`.
fn is_builtin(object: &Value) -> bool {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

fn non_empty_str(value: &Value) -> bool {
    value.as_str().is_some_and(|s| !s.is_empty())
}

/// Structural checks for the custom resources kubernetes-validate has no schema for.
fn check_custom_resource(object: &Value, context: &str) {
    let what = format!("{context}: {}", label(object));
    assert!(non_empty_str(&object["apiVersion"]), "{what}: apiVersion");
    assert!(non_empty_str(&object["kind"]), "{what}: kind");
    assert!(non_empty_str(&object["metadata"]["name"]), "{what}: metadata.name");
    let api_version = object["apiVersion"].as_str().unwrap();
    match (api_version, kind(object)) {
        ("traefik.io/v1alpha1", "IngressRoute") => {
            let routes = object["spec"]["routes"].as_array().unwrap_or_else(|| panic!("{what}: spec.routes"));
            assert!(!routes.is_empty(), "{what}: spec.routes is empty");
            for route in routes {
                assert!(non_empty_str(&route["match"]), "{what}: a route without match");
                let services =
                    route["services"].as_array().unwrap_or_else(|| panic!("{what}: a route without services"));
                assert!(!services.is_empty(), "{what}: a route with no services");
                for service in services {
                    assert!(non_empty_str(&service["name"]), "{what}: a service without name");
                    assert!(!service["port"].is_null(), "{what}: a service without port");
                    assert_eq!(service["scheme"], "h2c", "{what}: gRPC needs an h2c backend");
                }
            }
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            let endpoints = object["spec"]["endpoints"].as_array().unwrap_or_else(|| panic!("{what}: spec.endpoints"));
            assert!(!endpoints.is_empty(), "{what}: spec.endpoints is empty");
            for endpoint in endpoints {
                assert!(non_empty_str(&endpoint["port"]), "{what}: an endpoint without a named port");
            }
            assert!(object["spec"]["selector"].is_object(), "{what}: spec.selector");
        }
        (api_version, kind) => panic!("{context}: no check for custom resource {api_version} {kind}"),
    }
}

#[test]
fn every_kustomization_renders_and_every_object_validates() {
    let validate = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    let mut kinds = BTreeSet::new();
    for rendering in render_all() {
        let mut builtin = String::new();
        for object in &rendering.objects {
            kinds.insert(kind(object).to_owned());
            if is_builtin(object) {
                builtin.push_str("---\n");
                builtin.push_str(&serde_json::to_string(object).unwrap());
                builtin.push('\n');
            } else {
                check_custom_resource(object, &rendering.name);
            }
        }
        let file = dir.path().join(format!("{}.yaml", rendering.name.replace('/', "_")));
        std::fs::write(&file, &builtin).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = Command::new(&validate)
                .args(["--strict", "--quiet", "--kubernetes-version", version])
                .arg(&file)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", validate.display()));
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{} against Kubernetes {version}:\n{text}", rendering.name);
            // A warning is how it says it has no schema: for a built-in kind, a typo.
            assert!(text.trim().is_empty(), "{} against Kubernetes {version}:\n{text}", rendering.name);
        }
    }
    for expected in [
        "Deployment",
        "StatefulSet",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "IngressRoute",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(expected), "no kustomization renders a {expected}; rendered: {kinds:?}");
    }
}

#[test]
fn every_component_is_rendered_by_some_overlay() {
    let dirs = kustomization_dirs();
    let mut components = BTreeSet::new();
    let mut used = BTreeSet::new();
    for dir in &dirs {
        let k = kustomization(dir);
        if is_component(&k) {
            components.insert(dir.canonicalize().unwrap());
            continue;
        }
        for component in k["components"].as_array().into_iter().flatten() {
            let path = dir.join(component.as_str().unwrap());
            used.insert(path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        }
    }
    assert!(!components.is_empty(), "expected optional components under deploy/components");
    for component in &components {
        assert!(
            used.contains(component),
            "{} is used by no kustomization, so it is never validated",
            relative(component)
        );
    }
}

/// The port a probe or targetPort names (a number or a container port's name).
fn resolve_port(port: &Value, container: &Value) -> Option<u64> {
    if let Some(number) = port.as_u64() {
        return Some(number);
    }
    let wanted = port.as_str()?;
    container["ports"].as_array()?.iter().find(|p| p["name"] == wanted).and_then(|p| p["containerPort"].as_u64())
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn workloads(objects: &[Value]) -> impl Iterator<Item = &Value> {
    objects.iter().filter(|o| matches!(kind(o), "Deployment" | "StatefulSet" | "DaemonSet"))
}

fn doltgate_containers(workload: &Value) -> Vec<&Value> {
    pod_spec(workload)["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["image"].as_str().is_some_and(|i| i.rsplit('/').next().unwrap().starts_with("doltgate")))
        .collect()
}

fn check_probe(container: &Value, probe: &str, path: &str, admin_port: u16, what: &str) -> Value {
    let probe_value = &container[probe];
    assert_eq!(probe_value["httpGet"]["path"], path, "{what}: {probe} must GET {path}");
    let port = resolve_port(&probe_value["httpGet"]["port"], container);
    assert_eq!(port, Some(u64::from(admin_port)), "{what}: {probe} must use the admin port {admin_port}");
    probe_value.clone()
}

/// Runs the built binary's `check-config` on one configuration text.
fn check_config(text: &str, scratch: &Path, what: &str) {
    let path = scratch.join("doltgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doltgate")).arg("check-config").arg(&path).output().unwrap();
    let verdict = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && verdict.contains("ok"), "{what}: check-config says: {verdict}");
}

/// Checks one doltgate container against the configuration it mounts, which
/// must first pass `check-config`.
fn check_doltgate_container(objects: &[Value], workload: &Value, container: &Value, scratch: &Path, what: &str) {
    // The image's ENTRYPOINT passes --config /etc/doltgate/doltgate.toml.
    assert!(container["command"].is_null(), "{what}: keep the image's ENTRYPOINT (it names the config file)");
    assert!(container["args"].is_null(), "{what}: keep the image's ENTRYPOINT (it names the config file)");
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == CONFIG_DIR)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {CONFIG_DIR}"));
    let volume = pod_spec(workload)["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]));
    let config_map_name = volume["configMap"]["name"].as_str().unwrap_or_else(|| panic!("{what}: not a ConfigMap"));
    let config_map = objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == config_map_name)
        .unwrap_or_else(|| panic!("{what}: ConfigMap {config_map_name} is not in the rendering"));
    let text = config_map["data"][CONFIG_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap {config_map_name} has no {CONFIG_KEY}"))
        .to_owned();
    check_config(&text, scratch, what);
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{what}: {e}"));

    // Ports: the listener and admin addresses are container ports, on every
    // interface (the Service and the kubelet come in over the pod's IP).
    let listen = config.listener.address;
    let admin = config.admin.address.unwrap_or_else(|| panic!("{what}: admin.address must be set for the probes"));
    for (key, address) in [("listener.address", listen), ("admin.address", admin)] {
        assert!(address.ip().is_unspecified(), "{what}: {key} {address} must listen on every interface");
        let declared =
            container["ports"].as_array().into_iter().flatten().any(|p| p["containerPort"] == address.port());
        assert!(declared, "{what}: {key} port {} is not a containerPort", address.port());
    }
    let readiness = check_probe(container, "readinessProbe", "/readyz", admin.port(), what);
    check_probe(container, "livenessProbe", "/healthz", admin.port(), what);

    // Drain: readiness must fail before the port closes, and the whole drain
    // must fit in the grace period.
    let period = readiness["periodSeconds"].as_u64().unwrap_or(10);
    let failures = readiness["failureThreshold"].as_u64().unwrap_or(3);
    let unready_after = Duration::from_secs(period * failures);
    assert!(
        config.listener.drain_delay > unready_after,
        "{what}: listener.drain_delay {:?} must outlast the readiness probe noticing ({unready_after:?})",
        config.listener.drain_delay
    );
    let grace = pod_spec(workload)["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: set terminationGracePeriodSeconds to cover the drain"));
    let drain = config.listener.drain_delay + config.listener.drain_timeout;
    assert!(
        Duration::from_secs(grace) > drain,
        "{what}: terminationGracePeriodSeconds {grace} must exceed drain_delay + drain_timeout ({drain:?})"
    );

    // Every secret variable the config names comes from a Secret.
    let from_secret = |variable: &str| {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == variable && e["valueFrom"]["secretKeyRef"]["name"].is_string())
    };
    if let Some(variable) = &config.file_urls.key_env {
        assert!(from_secret(variable), "{what}: file_urls.key_env {variable} is not set from a Secret");
    }
    // Replicas behind one Service must sign table-file URLs with one key.
    if kind(workload) == "Deployment" {
        let shared = config.file_urls.key_env.is_some() || config.file_urls.key_file.is_some();
        assert!(shared, "{what}: replicas need a shared file_urls key (key_env or key_file)");
    }
    for (cluster_name, cluster) in &config.clusters {
        if let Some(variable) = &cluster.sql_password_env {
            assert!(
                from_secret(variable),
                "{what}: clusters.{cluster_name}.sql_password_env {variable} is not set from a Secret"
            );
        }
        if cluster.no_primary == NoPrimary::Refuse {
            assert!(cluster.writes_url.is_some(), "{what}: a refusing sidecar should name writes_url");
            // A sidecar fronts a server in its own pod: the port is another container's.
            for endpoint in &cluster.endpoints {
                let port: u64 = endpoint.remotesapi.rsplit(':').next().unwrap().parse().unwrap();
                let local = pod_spec(workload)["containers"].as_array().into_iter().flatten().any(|c| {
                    c["name"] != container["name"]
                        && c["ports"].as_array().into_iter().flatten().any(|p| p["containerPort"] == port)
                });
                assert!(local, "{what}: endpoint {} is no port of another container in the pod", endpoint.name);
            }
        }
    }

    // Hardening.
    let pod_security = &pod_spec(workload)["securityContext"];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{what}: readOnlyRootFilesystem");
    // With a read-only root, uploads need a writable spool: the temporary directory,
    // where they go when uploads.spool_dir is unset.
    let spool = container["volumeMounts"].as_array().into_iter().flatten().find(|m| m["mountPath"] == "/tmp");
    let spool = spool.unwrap_or_else(|| panic!("{what}: no writable volume at /tmp for spooling uploads"));
    let volume = pod_spec(workload)["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == spool["name"]);
    let volume = volume.unwrap_or_else(|| panic!("{what}: no volume {}", spool["name"]));
    assert!(volume["emptyDir"]["sizeLimit"].is_string(), "{what}: the upload spool is an emptyDir with a sizeLimit");
    // An edge cache needs a writable volume of its own at cache.dir.
    if let Some(cache) = &config.cache {
        let dir = cache.dir.to_str().unwrap();
        let mount = container["volumeMounts"].as_array().into_iter().flatten().find(|m| m["mountPath"] == dir);
        let mount = mount.unwrap_or_else(|| panic!("{what}: no volume mounted at cache.dir {dir}"));
        assert_ne!(mount["readOnly"], true, "{what}: the cache volume must be writable");
        let volume =
            pod_spec(workload)["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == mount["name"]);
        let volume = volume.unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]));
        assert!(volume["emptyDir"]["sizeLimit"].is_string(), "{what}: the cache is an emptyDir with a sizeLimit");
    }
    assert_eq!(security["allowPrivilegeEscalation"], false, "{what}: allowPrivilegeEscalation");
    assert!(security["runAsNonRoot"] == true || pod_security["runAsNonRoot"] == true, "{what}: runAsNonRoot");
    for part in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(container["resources"][part][resource].is_string(), "{what}: resources.{part}.{resource}");
        }
    }
}

#[test]
fn every_doltgate_config_passes_check_config_and_matches_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for rendering in render_all() {
        for workload in workloads(&rendering.objects) {
            for container in doltgate_containers(workload) {
                let what = format!("{}: {} container {}", rendering.name, label(workload), container["name"]);
                check_doltgate_container(&rendering.objects, workload, container, dir.path(), &what);
                checked.push(what);
            }
        }
    }
    let modes: BTreeSet<&str> = checked.iter().filter_map(|w| w.split(':').next()).collect();
    assert!(
        modes.contains("deploy/ingress") && modes.contains("deploy/sidecar"),
        "expected doltgate in ingress and sidecar mode; checked {checked:#?}"
    );
}

/// Labels set on running pods rather than in templates: Dolt's cluster tooling
/// labels the current primary `dolthub.com/cluster_role=primary`.
const RUNTIME_LABELS: &[&str] = &["dolthub.com/cluster_role"];

fn matches_labels(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object() else { return false };
    let fixed: Vec<_> = selector.iter().filter(|(k, _)| !RUNTIME_LABELS.contains(&k.as_str())).collect();
    !fixed.is_empty() && fixed.iter().all(|(k, v)| &labels[k.as_str()] == *v)
}

fn pod_templates(objects: &[Value]) -> impl Iterator<Item = &Value> {
    workloads(objects).map(|w| &w["spec"]["template"])
}

/// A Service port, by name or number, that exists in `service`.
fn service_has_port(service: &Value, port: &Value) -> bool {
    service["spec"]["ports"].as_array().into_iter().flatten().any(|p| match port {
        Value::String(name) => p["name"] == name.as_str(),
        number => &p["port"] == number,
    })
}

fn find<'a>(objects: &'a [Value], wanted_kind: &str, wanted_name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| kind(o) == wanted_kind && name(o) == wanted_name)
}

#[test]
fn references_between_objects_resolve() {
    for rendering in render_all() {
        let objects = &rendering.objects;
        for object in objects {
            let what = format!("{}: {}", rendering.name, label(object));
            match kind(object) {
                "Service" => {
                    let selector = &object["spec"]["selector"];
                    let templates: Vec<&Value> =
                        pod_templates(objects).filter(|t| matches_labels(selector, &t["metadata"]["labels"])).collect();
                    assert!(!templates.is_empty(), "{what}: selects no pod in the rendering");
                    for port in object["spec"]["ports"].as_array().into_iter().flatten() {
                        for template in &templates {
                            let found = template["spec"]["containers"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|c| resolve_port(&port["targetPort"], c).is_some());
                            assert!(found, "{what}: targetPort {} is no container port", port["targetPort"]);
                        }
                    }
                }
                "PodDisruptionBudget" => {
                    let selector = &object["spec"]["selector"]["matchLabels"];
                    let covered = pod_templates(objects).any(|t| matches_labels(selector, &t["metadata"]["labels"]));
                    assert!(covered, "{what}: selects no pod in the rendering");
                }
                "HorizontalPodAutoscaler" => {
                    let target = &object["spec"]["scaleTargetRef"];
                    let deployment = find(objects, target["kind"].as_str().unwrap(), target["name"].as_str().unwrap())
                        .unwrap_or_else(|| panic!("{what}: scales {target}, which is not in the rendering"));
                    assert!(object["spec"]["minReplicas"].as_u64() >= Some(2), "{what}: minReplicas below 2");
                    assert!(
                        deployment["spec"]["replicas"].is_null(),
                        "{what}: the Deployment's own replicas would fight the autoscaler"
                    );
                }
                "Deployment" if !doltgate_containers(object).is_empty() => {
                    let scaled = objects.iter().any(|o| {
                        kind(o) == "HorizontalPodAutoscaler" && o["spec"]["scaleTargetRef"]["name"] == name(object)
                    });
                    if !scaled {
                        assert!(object["spec"]["replicas"].as_u64() >= Some(2), "{what}: fewer than 2 replicas");
                    }
                    let anti = &object["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
                    assert!(anti.is_object(), "{what}: no pod anti-affinity");
                    let budget = objects.iter().any(|o| {
                        kind(o) == "PodDisruptionBudget"
                            && matches_labels(
                                &o["spec"]["selector"]["matchLabels"],
                                &object["spec"]["template"]["metadata"]["labels"],
                            )
                    });
                    assert!(budget, "{what}: no PodDisruptionBudget covers it");
                }
                "Ingress" => {
                    for rule in object["spec"]["rules"].as_array().into_iter().flatten() {
                        for path in rule["http"]["paths"].as_array().into_iter().flatten() {
                            let backend = &path["backend"]["service"];
                            let service = find(objects, "Service", backend["name"].as_str().unwrap())
                                .unwrap_or_else(|| panic!("{what}: no Service {}", backend["name"]));
                            let port = if backend["port"]["name"].is_string() {
                                &backend["port"]["name"]
                            } else {
                                &backend["port"]["number"]
                            };
                            assert!(service_has_port(service, port), "{what}: Service has no port {port}");
                        }
                    }
                }
                "IngressRoute" => {
                    for route in object["spec"]["routes"].as_array().into_iter().flatten() {
                        for backend in route["services"].as_array().into_iter().flatten() {
                            let service = find(objects, "Service", backend["name"].as_str().unwrap())
                                .unwrap_or_else(|| panic!("{what}: no Service {}", backend["name"]));
                            assert!(
                                service_has_port(service, &backend["port"]),
                                "{what}: Service has no port {}",
                                backend["port"]
                            );
                        }
                    }
                }
                "ServiceMonitor" => {
                    let selector = &object["spec"]["selector"]["matchLabels"];
                    let services: Vec<&Value> = objects
                        .iter()
                        .filter(|o| kind(o) == "Service" && matches_labels(selector, &o["metadata"]["labels"]))
                        .collect();
                    assert!(!services.is_empty(), "{what}: selects no Service");
                    for endpoint in object["spec"]["endpoints"].as_array().into_iter().flatten() {
                        for service in &services {
                            assert!(
                                service_has_port(service, &endpoint["port"]),
                                "{what}: {} has no port {}",
                                label(service),
                                endpoint["port"]
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[test]
fn grafana_dashboard_config_map_carries_the_dashboard() {
    let dashboard = std::fs::read_to_string(deploy_dir().join("grafana/doltgate-dashboard.json")).unwrap();
    let found = render_all()
        .into_iter()
        .flat_map(|r| r.objects)
        .filter(|o| kind(o) == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .any(|o| o["data"]["doltgate-dashboard.json"] == dashboard.as_str());
    assert!(found, "no ConfigMap labelled grafana_dashboard=1 carries deploy/grafana/doltgate-dashboard.json");
}

/// The image must ship what CI builds and exercises: the Dockerfile's build
/// command is the one benches/harness.py runs (its smoke run is in `.ci/run`), and
/// the runtime stage runs the binary as a numeric non-root user, reading the
/// configuration where the manifests mount it.
#[test]
fn the_image_builds_and_runs_what_ci_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let build = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("RUN cargo build"))
        .expect("a RUN cargo build line in the Dockerfile");
    let bench = std::fs::read_to_string(root.join("benches/harness.py")).unwrap();
    let words: Vec<&str> = build.split_whitespace().collect();
    let bench_build = format!(
        "build = [\"cargo\", \"build\", {}]",
        words.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", ")
    );
    assert!(
        bench.contains(&bench_build),
        "benches/harness.py must build with `cargo build{build}`, as the Dockerfile does"
    );
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim_start().starts_with("benches/harness.py --smoke")),
        ".ci/run runs the smoke benchmark"
    );

    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER in the runtime stage");
    assert!(
        user.split(':').all(|id| id.parse::<u32>().is_ok_and(|id| id != 0)),
        "USER {user} must be numeric, not root"
    );
    assert!(!runtime.contains("RUN "), "the runtime stage needs no shell");
    assert!(
        runtime.contains(&format!("\"--config\", \"{CONFIG_DIR}/{CONFIG_KEY}\"")),
        "the ENTRYPOINT reads {CONFIG_DIR}/{CONFIG_KEY}, where deploy/ mounts the ConfigMap"
    );
}
