//! Orchestrator manifests written into the image directory by `cargo xtask image`: a Nomad job
//! (QEMU task driver) and a Kubernetes manifest (KubeVirt kernel boot), each for N instances
//! sharing one Redis behind a load balancer, with the kernel command line filled in. Neither
//! orchestrator can be installed here: the files are checked to parse, not run.

/// What the manifests are made for.
pub struct Fleet<'a> {
    /// Instances behind the balancer.
    pub instances: u32,
    /// Guest port (the app's `port=`) and the balancer's port.
    pub port: u16,
    /// Guest RAM in MiB of each instance.
    pub memory_mib: u32,
    /// vCPUs of each instance.
    pub vcpus: u32,
    /// More app words for the kernel command line (`--append`).
    pub append: &'a str,
    /// File name of the loader in the image directory.
    pub loader: &'a str,
    /// File name of the application ELF (q35/pc, DHCP) in the image directory.
    pub app: &'a str,
}

/// File names of the manifests inside the image directory.
pub const NOMAD_FILE: &str = "fleet.nomad.hcl";
/// The Kubernetes manifest's file name.
pub const KUBERNETES_FILE: &str = "fleet.kubevirt.yaml";
/// The kernel-boot container image's build file (KubeVirt takes loader and app from it).
pub const CONTAINERFILE: &str = "Containerfile.kernel-boot";

/// Placeholder of the admin token in both manifests.
const TOKEN_PLACEHOLDER: &str = "CHANGE-ME-admin-token";
/// The fixed cluster IP the Kubernetes manifest gives Redis: the image has no DNS resolver, so
/// instances reach Redis by address (inside the default kubeadm service range 10.96.0.0/12).
const REDIS_CLUSTER_IP: &str = "10.96.100.10";

impl Fleet<'_> {
    /// The kernel command line of an instance reaching Redis at `redis` (`host:port`).
    fn kernel_line(&self, redis: &str, token: &str) -> String {
        crate::vm::kernel_command_line(
            format!(
                "port={} kv=redis://{redis} admin-token={token} {}",
                self.port, self.append
            )
            .trim(),
        )
    }
}

/// A string literal in HCL or YAML (JSON's escapes are valid in both).
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The Nomad job: Redis (Docker), N unikernels (QEMU driver, user network, `/healthz`
/// checked, registered as a Nomad service) and HAProxy (Docker) whose backends come from that
/// service.
pub fn nomad_job(fleet: &Fleet) -> String {
    let Fleet {
        instances,
        port,
        memory_mib,
        vcpus,
        loader,
        app,
        ..
    } = *fleet;
    // Nomad interpolates the variables into the command line when it runs the job.
    let line = quoted(&fleet.kernel_line("${var.redis_address}", "${var.admin_token}"));
    format!(
        r#"# Written by `cargo xtask image`: {instances} instances of the unikernel sharing one Redis behind
# HAProxy. Not tested (Nomad cannot be installed where this project is built). See BOOTING.md.

variable "image_url" {{
  description = "Where the image directory's files are served (http/https/s3/...)"
  type        = string
  default     = "https://images.example.invalid/wasm-unikernel"
}}

variable "redis_address" {{
  description = "host:port of Redis as the guests reach it (an IP address: the image has no DNS)"
  type        = string
  default     = "10.0.2.2:6379"
}}

variable "admin_token" {{
  description = "Bearer token of the admin API"
  type        = string
  default     = "{TOKEN_PLACEHOLDER}"
}}

job "wasm-unikernel" {{
  datacenters = ["dc1"]
  type        = "service"

  group "redis" {{
    network {{
      port "redis" {{
        static = 6379
      }}
    }}

    task "redis" {{
      driver = "docker"

      config {{
        image = "redis:7"
        ports = ["redis"]
        args  = ["--appendonly", "yes"]
      }}
    }}
  }}

  group "instances" {{
    count = {instances}

    network {{
      port "http" {{}}
    }}

    service {{
      name     = "wasm-unikernel"
      port     = "http"
      provider = "nomad"

      check {{
        type     = "http"
        path     = "/healthz"
        interval = "2s"
        timeout  = "1s"
      }}
    }}

    task "unikernel" {{
      driver = "qemu"

      artifact {{
        source      = "${{var.image_url}}/{loader}"
        destination = "local/"
      }}

      artifact {{
        source      = "${{var.image_url}}/{app}"
        destination = "local/"
      }}

      config {{
        # The driver attaches image_path as a disk; the kernel ignores it and boots from -kernel.
        image_path        = "local/{app}"
        accelerator       = "kvm"
        graceful_shutdown = false
        port_map {{
          http = {port}
        }}
        args = [
          "-kernel", "local/{loader}",
          "-initrd", "local/{app}",
          "-append", {line},
          "-smp", "{vcpus}",
          "-cpu", "host",
        ]
      }}

      resources {{
        cpu    = 1000
        memory = {memory_mib}
      }}
    }}
  }}

  group "balancer" {{
    network {{
      port "http" {{
        static = {port}
      }}
    }}

    task "haproxy" {{
      driver = "docker"

      config {{
        image   = "haproxy:2.6"
        ports   = ["http"]
        volumes = ["local/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg"]
      }}

      template {{
        destination   = "local/haproxy.cfg"
        change_mode   = "signal"
        change_signal = "SIGUSR2"
        data          = <<EOT
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
frontend fleet
    bind :{port}
    default_backend instances
backend instances
    balance roundrobin
    option httpchk GET /healthz
{{{{- range nomadService "wasm-unikernel" }}}}
    server {{{{ .ID }}}} {{{{ .Address }}}}:{{{{ .Port }}}} check inter 1s
{{{{- end }}}}
EOT
      }}
    }}
  }}
}}
"#
    )
}

/// The Kubernetes manifest: Redis (a Deployment and a Service at a fixed cluster IP), N
/// KubeVirt VMIs booting loader and app from a container image (kernel boot), and a Service of
/// type LoadBalancer in front of them.
pub fn kubernetes_manifest(fleet: &Fleet) -> String {
    let Fleet {
        instances,
        port,
        memory_mib,
        vcpus,
        loader,
        app,
        ..
    } = *fleet;
    let redis = format!("{REDIS_CLUSTER_IP}:6379");
    let line = quoted(&fleet.kernel_line(&redis, TOKEN_PLACEHOLDER));
    format!(
        r#"# Written by `cargo xtask image`: {instances} instances of the unikernel (KubeVirt, kernel boot)
# sharing one Redis behind a LoadBalancer Service. Not tested (neither Kubernetes nor KubeVirt can
# be installed where this project is built). See BOOTING.md.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
spec:
  replicas: 1
  selector:
    matchLabels:
      app: wasm-unikernel-redis
  template:
    metadata:
      labels:
        app: wasm-unikernel-redis
    spec:
      containers:
        - name: redis
          image: redis:7
          args: ["--appendonly", "yes"]
          ports:
            - containerPort: 6379
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  # The image has no DNS resolver: the instances reach Redis at this address.
  clusterIP: {REDIS_CLUSTER_IP}
  selector:
    app: wasm-unikernel-redis
  ports:
    - port: 6379
      targetPort: 6379
---
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstanceReplicaSet
metadata:
  name: wasm-unikernel
spec:
  replicas: {instances}
  selector:
    matchLabels:
      app: wasm-unikernel
  template:
    metadata:
      labels:
        app: wasm-unikernel
    spec:
      domain:
        cpu:
          cores: {vcpus}
        resources:
          requests:
            memory: {memory_mib}Mi
        firmware:
          kernelBoot:
            kernelArgs: {line}
            container:
              image: registry.example.invalid/wasm-unikernel-kernel-boot:latest
              kernelPath: /boot/{loader}
              initrdPath: /boot/{app}
        devices:
          interfaces:
            - name: default
              model: virtio
              masquerade: {{}}
              ports:
                - port: {port}
      networks:
        - name: default
          pod: {{}}
      readinessProbe:
        httpGet:
          path: /healthz
          port: {port}
        periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: wasm-unikernel
spec:
  type: LoadBalancer
  selector:
    app: wasm-unikernel
  ports:
    - port: {port}
      targetPort: {port}
"#
    )
}

/// The container image KubeVirt boots from: loader and app under `/boot`.
pub fn containerfile(fleet: &Fleet) -> String {
    format!(
        "# The kernel-boot image of {KUBERNETES_FILE}: podman build -f {CONTAINERFILE} -t IMAGE .\n\
         FROM scratch\n\
         COPY {loader} {app} /boot/\n",
        loader = fleet.loader,
        app = fleet.app
    )
}

/// BOOTING.md's section on the manifests.
pub fn booting_section(fleet: &Fleet) -> String {
    let instances = fleet.instances;
    let port = fleet.port;
    format!(
        r#"## A fleet on an orchestrator (not tested)

`{NOMAD_FILE}` (Nomad, QEMU task driver) and `{KUBERNETES_FILE}` (Kubernetes with KubeVirt) run
{instances} instances sharing one Redis (`kv=redis://...` on the kernel command line, filled in)
behind a load balancer on port {port}. **Neither is tested**: Nomad, Kubernetes and KubeVirt cannot
be installed on the machines this project is built on; `cargo test -p xtask` only checks that both
files parse (HCL, YAML) and carry the command line. What the fleet does (a deploy through any
instance reaches all, an instance booting later serves everything) is tested with redis-server,
HAProxy and QEMU on one host (`crates/e2e/tests/e2e/fleet.rs`).

Before use, replace `{TOKEN_PLACEHOLDER}` with a secret token.

- Nomad: serve this directory's files over HTTP, then `nomad job run -var image_url=URL
  -var redis_address=IP:6379 -var admin_token=TOKEN {NOMAD_FILE}`. `redis_address` must be an IP
  address the guests reach (from QEMU's user network the VM's host is 10.0.2.2: the default
  works when Redis runs on every client node, e.g. with `count` and `distinct_hosts` set for the
  redis group). Under TCG set `accelerator = "tcg"` and drop `-cpu host`. HAProxy's backends are
  the instances registered as the Nomad service `wasm-unikernel`.
- Kubernetes: build and push the kernel-boot image (`{CONTAINERFILE}`: loader and app under
  `/boot`), put its name into the manifest, check that Redis' fixed `clusterIP` lies in your
  cluster's service range (the image has no DNS resolver), then `kubectl apply -f
  {KUBERNETES_FILE}`. KubeVirt's masquerade network hands the VM its address by DHCP, which the
  q35 app uses.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet<'static> {
        Fleet {
            instances: 3,
            port: 8080,
            memory_mib: 64,
            vcpus: 1,
            append: "log=warn",
            loader: "hermit-loader",
            app: "kernel-app",
        }
    }

    #[test]
    fn nomad_job_parses_as_hcl_with_the_fleet_filled_in() {
        let body: hcl::Body = hcl::from_str(&nomad_job(&fleet())).expect("valid HCL");
        let job = body
            .blocks()
            .find(|b| b.identifier() == "job")
            .expect("a job block");
        let groups: Vec<_> = job
            .body()
            .blocks()
            .filter(|b| b.identifier() == "group")
            .collect();
        assert_eq!(groups.len(), 3, "redis, instances, balancer");
        let instances = groups
            .iter()
            .find(|g| g.labels().first().map(|l| l.as_str()) == Some("instances"))
            .expect("instances group");
        let count = instances
            .body()
            .attributes()
            .find(|a| a.key() == "count")
            .expect("count");
        assert_eq!(count.expr(), &hcl::Expression::from(3u64));
        let task = instances
            .body()
            .blocks()
            .find(|b| b.identifier() == "task")
            .expect("task");
        let driver = task
            .body()
            .attributes()
            .find(|a| a.key() == "driver")
            .expect("driver");
        assert_eq!(driver.expr(), &hcl::Expression::from("qemu"));
        let text = nomad_job(&fleet());
        assert!(
            text.contains("-- port=8080 kv=redis://${var.redis_address} admin-token=${var.admin_token} log=warn"),
            "{text}"
        );
    }

    #[test]
    fn kubernetes_manifest_parses_as_yaml_with_the_fleet_filled_in() {
        let text = kubernetes_manifest(&fleet());
        let documents: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
            .collect();
        let kinds: Vec<&str> = documents
            .iter()
            .filter_map(|d| d["kind"].as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "Deployment",
                "Service",
                "VirtualMachineInstanceReplicaSet",
                "Service"
            ]
        );
        let vms = &documents[2];
        assert_eq!(vms["spec"]["replicas"].as_u64(), Some(3));
        let boot = &vms["spec"]["template"]["spec"]["domain"]["firmware"]["kernelBoot"];
        let args = boot["kernelArgs"].as_str().expect("kernelArgs");
        assert!(
            args.ends_with(&format!(
                "-- port=8080 kv=redis://{REDIS_CLUSTER_IP}:6379 admin-token={TOKEN_PLACEHOLDER} log=warn"
            )),
            "{args}"
        );
        assert_eq!(
            boot["container"]["initrdPath"].as_str(),
            Some("/boot/kernel-app")
        );
        assert_eq!(documents[3]["spec"]["type"].as_str(), Some("LoadBalancer"));
        assert_eq!(
            documents[1]["spec"]["clusterIP"].as_str(),
            Some(REDIS_CLUSTER_IP)
        );
    }
}
